/*
 * metrics.h - counters, gauges and histograms, rendered as Prometheus text.
 *
 * Plain counters and gauges are one line each in METRICS below
 * (twemproxy nc_stats.h style). Labelled families are fixed arrays indexed
 * by an enum. Everything is a relaxed atomic: no lock, any thread.
 */
#ifndef FO_METRICS_H
#define FO_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "buf.h"
#include "result.h"

/* ACTION(field, prometheus name, type, help) */
#define METRICS(ACTION)                                                                        \
    ACTION(batches_in_flight, "fanoutd_batches_in_flight", "gauge",                            \
           "Batches accepted and not yet answered.")                                           \
    ACTION(queue_depth, "fanoutd_queue_depth", "gauge",                                        \
           "Items waiting for a worker, over all batches.")                                    \
    ACTION(workers_busy, "fanoutd_workers_busy", "gauge", "Workers running a fetch now.")      \
    ACTION(workers, "fanoutd_workers", "gauge",                                                \
           "Worker threads running now (up to workers; 4 kept at idle).")                      \
    ACTION(upstream_bytes, "fanoutd_upstream_response_bytes_total", "counter",                 \
           "Upstream response body bytes received (decoded).")                                 \
    ACTION(reloads, "fanoutd_config_reloads_total", "counter",                                 \
           "Successful configuration reloads.")                                                \
    ACTION(reload_failures, "fanoutd_config_reload_failures_total", "counter",                 \
           "Reloads refused (a file that did not parse or had no settings).")                  \
    ACTION(cache_hits, "fanoutd_cache_hits_total", "counter",                                  \
           "Items answered from the cache (share).")                                           \
    ACTION(cache_misses, "fanoutd_cache_misses_total", "counter",                              \
           "Items with coalescing or the cache on that fetched themselves (share).")           \
    ACTION(coalesced, "fanoutd_coalesced_items_total", "counter",                              \
           "Items that got a copy of an identical in-flight fetch (share).")                   \
    ACTION(cache_bytes, "fanoutd_cache_bytes", "gauge", "Bytes the cache holds now (share).")  \
    ACTION(cache_entries, "fanoutd_cache_entries", "gauge",                                    \
           "Answers the cache holds now (share).")                                             \
    ACTION(cache_evictions, "fanoutd_cache_evictions_total", "counter",                        \
           "Answers dropped to keep the cache within cache_max_bytes (share).")                \
    ACTION(breakers_open, "fanoutd_breakers_open", "gauge",                                    \
           "Circuit breakers not closed (open or half-open), over all host:ports.")            \
    ACTION(streams, "fanoutd_streams_total", "counter", "Batches answered as NDJSON streams.") \
    ACTION(stream_drops, "fanoutd_stream_clients_dropped_total", "counter",                    \
           "Stream clients dropped: their unread lines passed max_answer_bytes.")

/* How a batch ended (fanoutd_batches_total{outcome}). */
#define BATCH_OUTCOMES(ACTION)                            \
    ACTION(OUT_COMPLETE, "complete")                      \
    ACTION(OUT_PARTIAL, "partial")                        \
    ACTION(OUT_DEADLINE, "deadline")                      \
    ACTION(OUT_CANCELLED, "cancelled")                    \
    ACTION(OUT_SHUTDOWN, "shutdown")                      \
    ACTION(OUT_BAD_REQUEST, "bad_request")                \
    ACTION(OUT_UNAUTHORIZED, "unauthorized")              \
    ACTION(OUT_LOOP, "loop_detected")                     \
    ACTION(OUT_TOO_LARGE, "too_large")                    \
    ACTION(OUT_URI_TOO_LONG, "uri_too_long")              \
    ACTION(OUT_HEADERS_TOO_LARGE, "headers_too_large")    \
    ACTION(OUT_NOT_IMPLEMENTED, "not_implemented")        \
    ACTION(OUT_BAD_VERSION, "http_version_not_supported") \
    ACTION(OUT_OVERLOADED, "overloaded")                  \
    ACTION(OUT_DRAINING, "draining")

#define METRIC_ENUM(e, s) e,
enum batch_outcome { BATCH_OUTCOMES(METRIC_ENUM) OUT_COUNT };
#undef METRIC_ENUM

#define METRIC_FIELD(field, name, type, help) _Atomic int64_t field;
struct metrics {
    METRICS(METRIC_FIELD)
};
#undef METRIC_FIELD

/* The process-wide metrics; every field atomic, so no lock. */
extern struct metrics metrics;

#define METRIC_ADD(field, n) atomic_fetch_add_explicit(&metrics.field, (n), memory_order_relaxed)
#define METRIC_SET(field, n) atomic_store_explicit(&metrics.field, (n), memory_order_relaxed)

void metrics_batch(enum batch_outcome outcome, double seconds);
/* One finished item: ok, non-2xx response, or an error code. */
void metrics_item(const struct result *r, double seconds);

/* A circuit breaker moved to a state (enum breaker_state: 0 closed, 1 open,
 * 2 half-open): fanoutd_breaker_transitions_total{to}. */
void metrics_breaker_transition(int to_state);

/* Appends the Prometheus text exposition (0.0.4) to out. */
fo_err metrics_render(struct buf *out) FO_MUST_CHECK;

#endif
