/*
 * retry.h - which attempts are tried again, and how long to wait first
 * (v2, "Retries, circuit breaker, rate"). Pure: no lock, no clock.
 */
#ifndef FO_RETRY_H
#define FO_RETRY_H

#include <stdint.h>

#include "batch.h"
#include "result.h"

/* 1 if an attempt of this method that ended as r may be tried again: it
 * ended connect_failed (nothing was sent: any method), or, for a method
 * other than POST and PATCH, upstream_error (reset, empty reply) or status
 * 429, 502, 503 or 504. */
int retry_wanted(enum http_method m, const struct result *r);

/* The backoff before retry k (k >= 1) in ms: rnd spread over
 * [0, min(base * 2^(k-1), cap)] (full jitter); rnd is any random number. */
long retry_backoff_ms(long k, long base_ms, long cap_ms, uint64_t rnd);

/* A random number for retry_backoff_ms (per thread, no lock). */
uint64_t retry_random(void);

#endif
