/*
 * outcome.h - the one table of how a request that is not answered with a
 * batch document ends: HTTP status, error code, extra headers, the access
 * log's word and the metric's label (fanoutd_batches_total{outcome=...}),
 * one row each. The front end answers a refusal with respond_refusal(),
 * which reads everything from here; nothing else pairs a metric with a
 * status or compares error code strings.
 *
 * The outcomes of batches that ran (complete, partial, deadline,
 * cancelled, shutdown) are enum batch_outcome's (metrics.h), decided by the
 * job (job_outcome); their log word is their metric label.
 */
#ifndef FO_OUTCOME_H
#define FO_OUTCOME_H

#include "fanoutd.h"
#include "metrics.h"

/* Extra header sets, as name/value pairs ending in NULL. */
#define OUTCOME_HDR_NONE NULL
extern const char *const outcome_hdr_retry[]; /* Retry-After: FO_RETRY_AFTER */
extern const char *const outcome_hdr_close[]; /* Connection: close */
extern const char *const outcome_hdr_auth[];  /* WWW-Authenticate: Bearer */

/* refusal, HTTP status, error code, extra headers, log word, metric label
 * (-1: not a batch outcome, not counted) */
#define REFUSALS(X)                                                                             \
    X(REFUSE_MALFORMED, 400, "bad_request", outcome_hdr_close, "refused", OUT_BAD_REQUEST)      \
    X(REFUSE_URI_TOO_LONG, 414, "uri_too_long", outcome_hdr_close, "refused", OUT_URI_TOO_LONG) \
    X(REFUSE_HEADERS_TOO_LARGE, 431, "headers_too_large", outcome_hdr_close, "refused",         \
      OUT_HEADERS_TOO_LARGE)                                                                    \
    X(REFUSE_NOT_IMPLEMENTED, 501, "not_implemented", outcome_hdr_close, "refused",             \
      OUT_NOT_IMPLEMENTED)                                                                      \
    X(REFUSE_BAD_VERSION, 505, "http_version_not_supported", outcome_hdr_close, "refused",      \
      OUT_BAD_VERSION)                                                                          \
    X(REFUSE_BAD_BATCH, 400, "bad_request", OUTCOME_HDR_NONE, "refused", OUT_BAD_REQUEST)       \
    X(REFUSE_BODY_TOO_LARGE, 413, "too_large", outcome_hdr_close, "refused", OUT_TOO_LARGE)     \
    X(REFUSE_BATCH_TOO_LARGE, 413, "too_large", OUTCOME_HDR_NONE, "refused", OUT_TOO_LARGE)     \
    X(REFUSE_LOOP, 508, "loop_detected", OUTCOME_HDR_NONE, "refused", OUT_LOOP)                 \
    X(REFUSE_DRAINING, 503, "draining", outcome_hdr_retry, "refused", OUT_DRAINING)             \
    X(REFUSE_UNAUTHORIZED, 401, "unauthorized", outcome_hdr_auth, "refused", OUT_UNAUTHORIZED)  \
    X(REFUSE_OVERLOADED, 503, "overloaded", outcome_hdr_retry, "refused", OUT_OVERLOADED)       \
    X(REFUSE_ANSWER_FAILED, 500, "internal_error", OUTCOME_HDR_NONE, NULL, -1)                  \
    X(REFUSE_INTERNAL, 500, "internal", OUTCOME_HDR_NONE, NULL, -1)                             \
    X(REFUSE_NOT_FOUND, 404, "not_found", OUTCOME_HDR_NONE, NULL, -1)                           \
    X(REFUSE_METHOD, 405, "method_not_allowed", OUTCOME_HDR_NONE, NULL, -1)

#define REFUSAL_ENUM(e, status, code, hdrs, word, metric) e,
enum refusal { REFUSALS(REFUSAL_ENUM) REFUSE_COUNT };
#undef REFUSAL_ENUM

struct refusal_row {
    unsigned status;
    const char *code;           /* the JSON error's "code" */
    const char *const *headers; /* extra headers, or NULL */
    const char *log_word;       /* the access log's outcome; NULL: the batch's own */
    int metric;                 /* enum batch_outcome, -1: not counted */
};

/* The row of a refusal (r < REFUSE_COUNT). */
const struct refusal_row *refusal_row(enum refusal r);

/* The refusal of a status refuse_malformed found (400, 414, 431, 501, 505). */
enum refusal refusal_of_malformed(unsigned status);

#endif
