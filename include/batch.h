/*
 * batch.h - a batch request as parsed from POST /batch (batch parsing).
 *
 * batch_parse() turns the request body into a validated list of items, or
 * refuses the whole batch with an HTTP status (400 or 413) and a message
 * that names the offending item. It is pure: no I/O, no global state; it
 * reads only the limits in the configuration it is given.
 *
 * Body forms (docs/API.md, "Request forms"): with a JSON Content-Type, an
 * array of URL strings and/or item objects, or {"requests": [...],
 * "timeout_ms": N, "merge": M}; with any other Content-Type a plain list of
 * URLs separated by white space, lines starting with '#' ignored.
 */
#ifndef FO_BATCH_H
#define FO_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "fanoutd.h"
#include "http.h"

struct compose_item;

enum merge_mode { MERGE_NONE = 0, MERGE_BODIES, MERGE_DEEP };
/* When a batch may finish early (v2 "policy"). */
enum batch_policy { POLICY_BEST_EFFORT = 0, POLICY_FAIL_FAST, POLICY_MIN_SUCCESS };

enum { ITEM_RETRY_MAX = 1u << 0, ITEM_RETRY_BACKOFF = 1u << 1 };

/* One item to fetch. Every pointer is owned by the item. */
struct item_req {
    char *id;
    char *url;     /* as requested */
    char *hostkey; /* "host:port" of the URL, for per_host_limit; NULL for a
                             url template (composition: known once substituted) */
    enum http_method method;
    char **headers; /* "Name: value" lines */
    size_t nheaders;
    int has_content_type; /* one of headers is Content-Type */
    char *body;           /* request body, or NULL for none */
    size_t body_len;
    int body_is_json; /* a non-string JSON body: send as application/json */
    long timeout_ms;  /* 0: not given */
    /* Some item lists it in depends_on: its result's body is kept until the
     * batch ends, for the references that read it (even once streamed). */
    int has_dependants;
    /* share: "coalesce": false and "cache": false */
    int no_coalesce; /* never leads nor rides a shared fetch */
    int no_cache;    /* neither reads nor fills the cache */
    /* Retries: the item's "retry" members, each used only when
     * its bit in retry_given is set (else the config's retries and
     * retry_backoff_ms); job_new resolves both and sets both bits. */
    unsigned retry_given; /* ITEM_RETRY_MAX | ITEM_RETRY_BACKOFF */
    long retry_max;
    long retry_backoff_ms;

    /* composition: depends_on, run_if, references, select, group,
     * response_headers (compose.h); NULL: none of them. Owned. */
    struct compose_item *compose;
};

struct batch_req {
    struct item_req *items; /* owned array */
    size_t n;
    enum merge_mode merge;
    long timeout_ms; /* 0: not given */

    /* v2 batch policy, max_concurrency, timings, traceparent (batch_fields). */
    enum batch_policy policy;
    long min_success;     /* POLICY_MIN_SUCCESS: 1 .. n */
    long max_concurrency; /* items fetching at once, 0: no cap */
    int timings;          /* every RESULT gets "timings" */
    char traceparent[56]; /* the client's valid traceparent value, "": none
                                 (set by the front end, not by batch_parse) */
    char *tracestate;     /* the whole "tracestate: ..." line, owned, or NULL */
    /* composition */
    int merge_concat;               /* merge_arrays "concat" */
    uint32_t *dep_start, *dep_list; /* the scheduler's dependency lists, NULL: none */
    const char *raw_text;           /* while parsing: the JSON body's text */
    size_t *raw_span;               /* while parsing: item i's JSON body at
                                      raw_span[2i] (offset), raw_span[2i+1] (length, 0: none) */
    size_t nraw_span;
};

/* Routes jansson's allocations through fanoutd's allocator, so that an
 * allocation failure during parsing is reported as such. Call once,
 * before any thread. */
void batch_json_init(void);

/* Whether a Content-Type means the JSON forms (application/json, params ok). */
int batch_is_json_type(const char *content_type);

/*
 * Parses and validates a whole batch. On success fills *out (caller frees
 * with batch_req_free). On failure returns FO_EINVAL (status 400) or
 * FO_ETOOBIG (status 413) and msg says what is wrong, naming the item.
 */
fo_err batch_parse(const char *body, size_t len, int is_json, const struct config *cfg,
                   struct batch_req *out, struct fo_msg *msg) FO_MUST_CHECK;

void batch_req_free(struct batch_req *b);

#endif
