/*
 * fetch.h - one upstream fetch with libcurl (the fetcher).
 *
 * Each worker owns a struct fetcher: one easy handle and one private multi
 * handle reused from fetch to fetch (the multi handle's connection cache is
 * what keeps keep-alive connections between fetches), and one body buffer.
 * The handles share DNS and TLS session caches through one share handle
 * (struct fetch_env) with a lock per cache; the connection cache is not
 * shared (libcurl documents that as unsafe across concurrent threads).
 *
 * A fetch is described by one self-contained struct fetch_req (fetch_req.h)
 * and fills one struct result: the fetcher knows nothing of batches.
 * Every connection is opened through a callback that applies the request's
 * destination policy to the resolved address (redirects included); only
 * http and https are ever spoken; the body is capped while it streams in;
 * a fetch aborts as soon as the request's stop flag is set and the fetcher
 * is woken (fetch_wake).
 *
 * What goes upstream is fanoutd's choice, hop by hop: redirects are
 * followed by the fetcher itself (method and body by RFC 9110's rules,
 * credentials kept to the item's origin, one time limit for all hops), a
 * POST or PATCH is never sent twice, an internationalised host is asked
 * for by its A-label, and every request carries the CDN-Loop line it was
 * given. The result describes the final response only.
 */
#ifndef FO_FETCH_H
#define FO_FETCH_H

#include <curl/curl.h>
#include <pthread.h>

#include "fetch_req.h"
#include "policy.h"
#include "result.h"

struct fetch_env {
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST]; /* one per shared curl cache */
    struct self_addr self;                      /* fanoutd's own listen address */
};

/* curl_global_init must have run. Reads the bound listen address. */
fo_err fetch_env_init(struct fetch_env *env, const struct sockaddr *listen,
                      socklen_t len) FO_MUST_CHECK;
void fetch_env_free(struct fetch_env *env);

struct fetcher;
struct fetcher *fetcher_new(struct fetch_env *env);
void fetcher_free(struct fetcher *f);

/* Wakes f's transfer so that it sees its request's stop flag; any thread.
 * A spurious wake (f has moved on to another request) is harmless. */
void fetch_wake(struct fetcher *f);

/* Readies f for a fetch under the configuration of this generation: makes
 * its curl handles on first use (fetch_run fails the item if that ran out
 * of memory); after a reload (a newer generation), drops its cached
 * connections. Call before f may be woken from other threads. */
void fetch_prepare(struct fetcher *f, unsigned long generation);

/* Fetches req into *res (which the caller then owns; cleared first). req and
 * what it points to must stay valid until it returns. */
void fetch_run(struct fetcher *f, const struct fetch_req *req, struct result *res);

#endif
