/*
 * rate.h - per_host_rate: a token bucket per host:port (v2, "Retries,
 * circuit breaker, rate").
 *
 * A bucket holds up to `rate` tokens (one second's worth: the burst) and
 * gains `rate` tokens a second; a request takes one. A host's bucket starts
 * full. The scheduler asks rate_take() when an item reaches the front
 * (sched_ops.not_before): no token yet, and the item waits on the
 * scheduler's timer until the time one will be there, holding no worker.
 *
 * struct bucket is pure (the time is an argument), unit-tested alone; the
 * table keeps one bucket per host_key() of "host:port" for the process,
 * guarded by one mutex (a leaf lock). Buckets that have refilled are
 * dropped when the table is full (FO_RATE_MAX): a full bucket is the same
 * as a new one.
 */
#ifndef FO_RATE_H
#define FO_RATE_H

#include <stdint.h>

#define RATE_UNIT 1000000LL /* a token, in micro-tokens */

struct bucket {
    int64_t micro; /* tokens held, in micro-tokens (RATE_UNIT each) */
    int64_t last_us;
};

/* A full bucket for `rate` requests a second, at now_us. */
void bucket_init(struct bucket *b, long rate, int64_t now_us);
/* Takes a token at now_us: 0 when taken, else the earliest time (us,
 * > now_us) at which one will be there (nothing taken). rate > 0. */
int64_t bucket_take(struct bucket *b, long rate, int64_t now_us);
/* 1 if the bucket has refilled to its burst at now_us. */
int bucket_full(struct bucket *b, long rate, int64_t now_us);

/* The process-wide table: takes a token of hostport's bucket ("host:port";
 * rate > 0): 0, or the time to ask again. Any thread. */
int64_t rate_take(const char *hostport, long rate, int64_t now_us);
/* Forgets every bucket (tests). */
void rate_reset(void);

#endif
