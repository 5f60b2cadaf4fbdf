/*
 * queue.h - the one bounded work queue over all batches, and the workers.
 *
 * Batches with items waiting form a ring; a worker takes one item from
 * the batch at the head and moves that batch to the tail, so batches are
 * served round-robin: 1000 slow items do not starve a batch of 2.
 * A batch is admitted whole or not at all (queue_capacity counts waiting
 * items, parked ones included). With per_host_limit, an item whose
 * destination (host_key) already has that many fetches running is parked
 * on that destination's wait list until one ends; the batches waiting on
 * one destination are served round-robin too, and picking work never
 * scans parked items.
 *
 * The queue is a process-wide singleton (one daemon, one queue); all of
 * its state is guarded by its one mutex, and no lock is held during a fetch.
 */
#ifndef FO_QUEUE_H
#define FO_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fanoutd.h"

struct job;
struct fetch_env;

/*
 * The per_host_limit key of a URL's "host:port" (as url_check writes it):
 * a numeric host as the address it is (every inet_aton spelling of IPv4,
 * such as 127.1, 0x7f000001, 2130706433, 0177.0.0.1; IPv6 as inet_ntop
 * writes it, in brackets; IPv4-mapped IPv6 as the IPv4 address), localhost
 * and *.localhost as 127.0.0.1, any other name lower-cased without a
 * trailing dot; then ":port". Writes a NUL-terminated key into out[size];
 * returns its length, 0 if hostport has no ":port" or the key does not fit.
 */
size_t host_key(const char *hostport, char *out, size_t size);

/* Starts `workers` threads, each with its own fetcher. */
fo_err queue_start(long workers, struct fetch_env *env) FO_MUST_CHECK;

/* Admits every item of job, or none: FO_EFULL when they do not fit in
 * capacity, FO_ESTOPPED after queue_close(). Takes a reference on success. */
fo_err queue_push(struct job *job, long capacity) FO_MUST_CHECK;

/* Removes the job's waiting items (it finished). */
void queue_drop(struct job *job);

/* Refuses new batches from now on (draining). */
void queue_close(void);

/* Stops and joins the workers; the queue must be empty of live jobs. */
void queue_stop(void);

/* Items waiting now. */
long queue_depth(void);

/* 1 if work arrived more than stall_us ago and no worker has asked for
 * work since: the pool is wedged (the systemd watchdog is then not fed). */
int queue_stalled(int64_t now_us, int64_t stall_us);

#endif
