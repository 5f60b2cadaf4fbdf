/*
 * result.h - the outcome of one item, and building the batch document
 * from all of them (results and merge).
 *
 * A worker fills a struct result for its item (body already encoded as a
 * JSON value, in the worker's thread); merge_build() then writes the whole
 * response document for a merge mode into one buffer (the job's answer
 * sink, answer.h), which the front end copies out in blocks as it is sent.
 */
#ifndef FO_RESULT_H
#define FO_RESULT_H

#include <stdint.h>

#include "batch.h"
#include "buf.h"
#include "encode.h"

/* The item error codes of the contract. */
#define ITEM_ERRORS(ACTION)                     \
    ACTION(ERR_INVALID_URL, "invalid_url")      \
    ACTION(ERR_BLOCKED, "blocked_destination")  \
    ACTION(ERR_DNS, "dns_failure")              \
    ACTION(ERR_CONNECT, "connect_failed")       \
    ACTION(ERR_TIMEOUT, "timeout")              \
    ACTION(ERR_DEADLINE, "deadline_exceeded")   \
    ACTION(ERR_TOO_LARGE, "too_large")          \
    ACTION(ERR_REDIRECTS, "too_many_redirects") \
    ACTION(ERR_TLS, "tls_error")                \
    ACTION(ERR_UPSTREAM, "upstream_error")      \
    ACTION(ERR_CANCELLED, "cancelled")          \
    ACTION(ERR_CIRCUIT_OPEN, "circuit_open")    \
    ACTION(ERR_FAILED_DEP, "failed_dependency") \
    ACTION(ERR_SELECT_FAILED, "select_failed")

#define ITEM_ERROR_ENUM(e, s) e,
enum item_error { ERR_NONE = 0, ITEM_ERRORS(ITEM_ERROR_ENUM) ERR_COUNT };
#undef ITEM_ERROR_ENUM

const char *item_error_code(enum item_error e);

struct result {
    int status;            /* final HTTP status, 0: no response arrived */
    char *content_type;    /* owned, valid UTF-8, NULL: none */
    enum item_error error; /* ERR_NONE: the fetch worked */
    char *message;         /* owned human text when error != ERR_NONE */
    char *body;            /* owned JSON value text when error == ERR_NONE */
    size_t body_len;
    enum body_encoding enc;
    double duration_ms;
    /* Retries. */
    int has_retry_after; /* the final response had a usable Retry-After */
    long retry_after_ms; /* its wait from when the response came (>= 0) */
    int show_attempts;   /* the item allowed retries: "attempts" is written */
    long attempts;       /* attempts started */
    long resent;         /* requests libcurl re-sent by itself in this fetch (a
                            reused connection found dead): attempts too */

    /* v2 timings (milliseconds): written into the RESULT when `timed` (the
     * batch asked for them). The fetcher fills dns .. ttfb (summed over the
     * hops; ttfb from the fetch's start to the final response's first
     * byte); queue_ms is the wait from runnable to a worker. total_ms is
     * duration_ms. */
    int timed;
    double queue_ms, dns_ms, connect_ms, tls_ms, ttfb_ms;
    /* v3 waterfall: from the batch's arrival to the start of the item's
     * first attempt, and to the end of its last (0 and 0: never started). */
    double start_ms, end_ms;
    /* share: the final response's Cache-Control as the cache reads it, and
     * the RESULT's "cache" field ("miss", "hit", "coalesced"; NULL: none). */
    int cc_no_store; /* no-store, no-cache, private, or a Set-Cookie */
    long cc_max_age; /* the shared cache's lifetime: s-maxage=N, else max-age=N, in s; -1: none */
    const char *cache;

    /* composition: the final response's headers that were kept
     * (fetch_req keep_headers): lower-case names, repeats joined with ", ";
     * owned. */
    char **hdr_names, **hdr_values;
    size_t nhdr;
    /* The URL of the final request sent, when it is not the item's url as
     * written: after a redirect (redirected), or when the url was built
     * from references; owned, NULL: none (the RESULT's "effective_url"). */
    char *effective_url;
    int redirected;
};

void result_clear(struct result *r);
/* Sets an error with a formatted message (replacing any body). */
void result_fail(struct result *r, enum item_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* ok: transport success and 2xx. */
int result_ok(const struct result *r);

/*
 * Writes the response document for `mode` into out: results (none),
 * data/errors (bodies, deep) and the summary. *complete is set to 1 when
 * every item is ok (X-Batch-Complete).
 */
fo_err merge_build(const struct batch_req *req, const struct result *res, enum merge_mode mode,
                   double duration_ms, struct buf *out, int *complete) FO_MUST_CHECK;

/* Streaming: one NDJSON line for item index (it, r): the RESULT object of
 * the document with "index" added, and "\n". FO_ENOMEM. */
fo_err result_put_line(struct buf *out, const struct item_req *it, const struct result *r,
                       size_t index) FO_MUST_CHECK;

/* Streaming: the last line, {"summary":{"total":..,"ok":..,"failed":..,
 * "duration_ms":..,"complete":BOOL}} and "\n". FO_ENOMEM. */
fo_err summary_put_line(struct buf *out, size_t total, size_t ok,
                        double duration_ms) FO_MUST_CHECK;

#endif
