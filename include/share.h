/*
 * share.h - sharing fetches: coalescing identical in-flight GET/HEAD
 * fetches across batches, and a cache of 200 answers to GET.
 *
 * Both are keyed by share_key(): the method, the URL and every request
 * header fanoutd would send (forwarded and item headers, CDN-Loop) except
 * traceparent and tracestate, plus the configuration generation (so a
 * reload, which may change the policy, the caps or an injected header,
 * never answers from what was fetched under another configuration).
 *
 * Coalescing (config coalesce): the first item with a key leads: its
 * worker runs the one fetch, under a copy of its request whose stop flag
 * is the shared fetch's own and without its batch deadline, so that its
 * batch going away (client gone, deadline, policy) does not end the fetch
 * for the others. Items with the same key that arrive while it runs ride:
 * each waits on its worker, blocked on the table's condition variable (no
 * connection, no transfer, no CPU) until the result is published, its own
 * limit passes (its timeout from when it started, or its batch deadline)
 * or its batch stops; it then gets a copy of the result. The shared fetch
 * is stopped as soon as nobody waits for it any more. A leader whose own
 * timeout ends the fetch while riders still have time hands it over: the
 * first rider starts it again under its own limits, the others ride on.
 *
 * The cache (config cache_ttl_ms > 0): answers kept up to their TTL within
 * cache_max_bytes in all, least recently used out first.
 *
 * Locking: one mutex guards the in-flight table and the cache; it is a
 * leaf (nothing else is locked or called while it is held, save the wake
 * callback a leader gave, which must not block). Clean under TSan.
 */
#ifndef FO_SHARE_H
#define FO_SHARE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fetch_req.h"
#include "result.h"

struct share_entry;

/* What a worker is doing for sharing, read by the job's wake hook (any
 * thread) under the share lock: the entry it leads or rides, or NULL. */
struct share_slot {
    struct share_entry *lead;
    struct share_entry *ride;
};

/* The key of req (see above) as a new string in *out; NULL in *out (and
 * FO_OK) when req cannot be shared (a method other than GET and HEAD, or a
 * body). FO_ENOMEM. */
fo_err share_key(const struct fetch_req *req, unsigned long generation, char **out) FO_MUST_CHECK;

/* ---- cache ---------------------------------------------------------------- */

/* 1 and a copy of the kept answer in *out (the caller owns it) if key is
 * kept and fresh at now_us; 0 otherwise (an expired answer leaves). */
int share_cache_get(const char *key, int64_t now_us, struct result *out);

/* 1 if share_cache_get would answer key now (for a scheduler's not_before:
 * a cache hit is never rate-limited). */
int share_cache_fresh(const char *key, int64_t now_us);

/* Keeps res (a 200 answer to a GET, without an error) under key for
 * ttl_ms, shortened by its Cache-Control max-age; not kept when
 * Cache-Control says no-store, no-cache or private, or when it alone is
 * larger than max_bytes. Older answers leave, least recently used first,
 * until everything kept fits in max_bytes. */
void share_cache_put(const char *key, const struct result *res, int64_t now_us, long ttl_ms,
                     long max_bytes);

/* Drops every kept answer (at exit). */
void share_cache_clear(void);

/* ---- coalescing ----------------------------------------------------------- */

enum share_role { SHARE_LEAD, SHARE_RIDE };

/*
 * Joins the in-flight fetch of key (ownership of key passes to the table
 * in every case), or starts one. SHARE_LEAD: the caller runs the fetch,
 * then calls share_lead_done; *stop is the flag its request must poll, and
 * wake(wake_arg) is how the table wakes that fetch to see it. SHARE_RIDE:
 * the caller calls share_ride. slot is the worker's (see struct
 * share_slot). FO_ENOMEM: neither; the caller fetches alone.
 */
fo_err share_join(char *key, struct share_slot *slot, void (*wake)(void *), void *wake_arg,
                  const _Atomic int **stop, enum share_role *role) FO_MUST_CHECK;

/*
 * The leader's fetch ended with res. If it ended by the leader's own
 * timeout (timed_out) while riders still wait, it is handed over (one of
 * them leads again) and res stays the leader's; else a copy of res is
 * published to every rider. The slot lets go of the entry.
 */
void share_lead_done(struct share_slot *slot, const struct result *res, int timed_out);

/*
 * Waits as a rider until the shared result arrives (1, a copy in *out),
 * until limit_us (monotonic; 0 in *out, nothing filled), or until
 * *job_stop is set and share_wake has been called for the slot (0). 2:
 * the fetch was handed to this rider: it now leads (as SHARE_LEAD from
 * share_join, with *stop and the wake given here).
 */
int share_ride(struct share_slot *slot, int64_t limit_us, const _Atomic int *job_stop,
               void (*wake)(void *), void *wake_arg, const _Atomic int **stop,
               struct result *out);

/* The job of whatever slot's worker is running has finished (the job's
 * wake hook, any thread): a rider stops waiting; a leader's fetch goes on
 * only while riders still wait for it. */
void share_wake(struct share_slot *slot);

/* Copies a result (owned strings duplicated). FO_ENOMEM: out cleared. */
fo_err share_result_copy(const struct result *in, struct result *out) FO_MUST_CHECK;

#endif
