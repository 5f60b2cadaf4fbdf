/*
 * fetch_req.h - one upstream request as the fetcher sees it: self-contained,
 * with everything the front end and the batch decided already resolved
 * (forwarded headers, CDN-Loop, time limits, caps, destination policy).
 *
 * The fetcher (fetch.c) knows nothing of batches or jobs: whoever runs an
 * item fills a struct fetch_req (job_request() in job.c) and hands it to
 * fetch_run(), which fills one struct result. No curl type appears here, so
 * a module may build a request without including curl.h.
 *
 * Ownership: the strings are borrowed from whoever built the request (they
 * live as long as it does); `headers` (the array, not its strings) and
 * `cdn_loop` are owned by the request and freed by fetch_req_free().
 */
#ifndef FO_FETCH_REQ_H
#define FO_FETCH_REQ_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "http.h"
#include "policy.h"
#include "trace.h"

/* What the fetch measures (v2 "timings"); a bit set per phase wanted. */
enum fetch_timing {
    FETCH_TIME_DNS = 1u << 0,
    FETCH_TIME_CONNECT = 1u << 1,
    FETCH_TIME_TLS = 1u << 2,
    FETCH_TIME_FIRST_BYTE = 1u << 3,
    FETCH_TIME_TOTAL = 1u << 4,
};

/* How one hop went, for the circuit breaker: a failure is connect_failed,
 * timeout, tls_error, upstream_error or a 5xx; a hop aborted by the batch
 * deadline, the destination policy or a stop counts neither way. */
enum fetch_hop_outcome { FETCH_HOP_OK = 0, FETCH_HOP_FAILED, FETCH_HOP_NEUTRAL };

/* How a failed attempt is tried again (v2 "retry"); attempts 0: never. */
struct fetch_retry {
    long attempts;   /* further attempts after the first */
    long backoff_ms; /* before the first retry; doubles each time */
    long max_backoff_ms;
    unsigned on; /* which failures are retried (bits chosen by the retry issue) */
};

struct fetch_req {
    /* The request. */
    const char *url; /* absolute http(s) URL as given; the fetcher checks it again */
    enum http_method method;
    int url_templated;    /* url was built from references: the RESULT names it
                          (effective_url) even without a redirect */
    const char **headers; /* "Name: value" lines sent as they are (subject to the
                             redirect rules): forwarded client headers the item
                             does not set itself, then the item's own; never
                             CDN-Loop. Owned array, borrowed strings */
    size_t nheaders;
    int has_content_type; /* the item sets Content-Type itself */
    char *cdn_loop;       /* the whole "CDN-Loop: ..." line (client's and item's
                             values, then loop_token), owned; NULL: none */
    const char *body;     /* NULL: none */
    size_t body_len;
    int body_is_json; /* a non-string JSON body: sent as application/json */

    /* Limits, resolved once when the batch was accepted. */
    long timeout_ms;     /* the item's own limit for all hops together (> 0) */
    int timeout_counts;  /* a timeout counts against the breaker: the item allowed at
                            least default_timeout_ms (a client's short timeouts must
                            not open a host's breaker for every other client) */
    int64_t deadline_us; /* monotonic: the batch's deadline, 0: none. The fetch
                            ends by it (deadline_exceeded) if it comes first */
    long max_redirects;
    long max_response_bytes;
    long max_answer_bytes; /* named in the too_large message */
    /* Bytes of encoded body the answer can still take, asked once the body
     * is in (the answer may have filled meanwhile); NULL: no limit. */
    size_t (*answer_left)(void *ctx);
    void *answer_ctx;
    const struct cidr_list *allow, *deny; /* the destination policy */
    unsigned long generation;             /* of the configuration: a newer one than the
                                 fetcher's drops its cached connections */
    /* per_host_limit's pin: connect to pin_addr ("1.2.3.4:80") whenever a
     * hop goes to pin_hostport (the item's "host:port"); NULL: no pin. */
    const char *pin_hostport, *pin_addr;

    /* Stopping: the fetch polls *stop (nonzero: no longer wanted) and whoever
     * sets it wakes the fetcher with fetch_wake(). */
    const _Atomic int *stop;

    /* Room for v2; zero means "as v1" and the v1 fetcher ignores them. */
    const char *const *keep_headers; /* response headers to keep ("response_headers") */
    size_t nkeep_headers;
    unsigned timings;         /* enum fetch_timing bits wanted */
    struct fetch_retry retry; /* the scheduler re-queues a retried item */

    /* Circuit breaker: called after each hop with the hop's
     * "host:port" (as in the URL, default port filled in) and how it went;
     * NULL: nobody counts. Called on the fetching thread, no lock held. */
    void (*hop_done)(void *ctx, const char *hostport, enum fetch_hop_outcome outcome);
    void *hop_ctx;
    /* v2 traceparent: this item's own "traceparent: ..." line (a child of
     * the client's, sent on every hop), "" for none; the client's whole
     * "tracestate: ..." line (borrowed), NULL for none. */
    char traceparent[TRACE_LINE_SIZE];
    const char *tracestate;
    /* share: headers the gateway injects (config inject_header; the rule
     * matching each hop's URL is applied there, and a rule matching the
     * first URL replaces the item's header of its name on every hop), and
     * more names never sent across origins (config sensitive_headers).
     * Borrowed from the configuration; NULL / 0: none. */
    const struct inject_rule *inject;
    size_t ninject;
    char *const *sensitive;
    size_t nsensitive;
};

/* Frees what the request owns (the header array, the CDN-Loop line). */
static inline void fetch_req_free(struct fetch_req *r)
{
    free(r->headers);
    free(r->cdn_loop);
    r->headers = NULL;
    r->cdn_loop = NULL;
    r->nheaders = 0;
}

#endif
