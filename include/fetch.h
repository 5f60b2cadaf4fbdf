/*
 * fetch.h - one upstream fetch with libcurl (the fetcher).
 *
 * Each worker owns a struct fetcher: one easy handle reused from fetch to
 * fetch, so its keep-alive connections survive, and one body buffer. The
 * handles share DNS and TLS session caches through one share handle
 * (struct fetch_env) with a lock per cache; the connection cache is not
 * shared (libcurl documents that as unsafe across concurrent threads).
 *
 * Every connection is opened through a callback that applies the
 * destination policy to the resolved address (redirects included); only
 * http and https are ever spoken; the body is capped while it streams in;
 * a fetch aborts as soon as its job stops (deadline, client gone,
 * shutdown): job_finish() calls fetch_wake() on the item's fetcher.
 *
 * What goes upstream is fanoutd's choice, hop by hop: redirects are
 * followed by the fetcher itself (method and body by RFC 9110's rules,
 * credentials kept to the item's origin, one time limit for all hops), a
 * POST or PATCH is never sent twice, an internationalised host is asked
 * for by its A-label, and every request carries CDN-Loop with the
 * configured loop_token. The result describes the final response only.
 */
#ifndef FO_FETCH_H
#define FO_FETCH_H

#include <curl/curl.h>
#include <pthread.h>

#include "config.h"
#include "policy.h"
#include "result.h"

struct job;

struct fetch_env {
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];  /* one per shared curl cache */
    struct self_addr self;                       /* fanoutd's own listen address */
};

/* curl_global_init must have run. Reads the bound listen address. */
fo_err fetch_env_init(struct fetch_env *env, const struct sockaddr *listen, socklen_t len) FO_MUST_CHECK;
void fetch_env_free(struct fetch_env *env);

struct fetcher;
struct fetcher *fetcher_new(struct fetch_env *env);
void fetcher_free(struct fetcher *f);

/* Wakes f's transfer so that it sees its job has stopped; any thread. A
 * spurious wake (f has moved on to another job) is harmless. */
void fetch_wake(struct fetcher *f);

/* Readies f for a fetch under cfg: makes its curl handles on first use
 * (fetch_run fails the item if that ran out of memory); after a reload,
 * drops its cached connections. Call before the fetcher is registered with job_begin_item
 * (fetch_wake may then be called on it from other threads). */
void fetch_prepare(struct fetcher *f, const struct config *cfg);

/* Makes f's next fetch connect to addrport ("1.2.3.4:80", "[::1]:80")
 * whenever it connects to hostport (the item's "host:port"), as
 * CURLOPT_CONNECT_TO: per_host_limit keys a named host by the address it
 * resolved to, and this makes the fetch go there. Redirects elsewhere are
 * not affected; the destination policy still judges the address. */
void fetch_pin(struct fetcher *f, const char *hostport, const char *addrport);

/* Fetches item i of job into *res (which the caller then owns). */
void fetch_run(struct fetcher *f, struct job *job, size_t i, struct result *res);

#endif
