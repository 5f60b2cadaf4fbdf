/*
 * metrics.c - the metric storage and its Prometheus rendering.
 */
#include "metrics.h"

#include <stdatomic.h>

struct metrics metrics;

#define METRIC_NAME(e, s) [e] = s,
static const char *const outcome_names[OUT_COUNT] = { BATCH_OUTCOMES(METRIC_NAME) };
#undef METRIC_NAME

/* Histogram buckets in seconds (upper bounds; +Inf is implied). */
static const double buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

struct histogram {
    _Atomic int64_t count[NBUCKETS + 1]; /* non-cumulative; last is +Inf */
    _Atomic int64_t sum_us;
    _Atomic int64_t total;
};

/* Labelled families; atomics, so no lock. */
static _Atomic int64_t batches_by_outcome[OUT_COUNT];
static _Atomic int64_t items_ok, items_http_error, items_error;
static _Atomic int64_t item_errors[ERR_COUNT];
static struct histogram batch_hist, upstream_hist;
/* Circuit breaker transitions by the state entered (breaker.h's order). */
static const char *const breaker_states[] = { "closed", "open", "half_open" };
static _Atomic int64_t breaker_moves[FO_ARRAY_LEN(breaker_states)];

void metrics_breaker_transition(int to_state)
{
    if (to_state >= 0 && (size_t)to_state < FO_ARRAY_LEN(breaker_states))
        atomic_fetch_add_explicit(&breaker_moves[to_state], 1, memory_order_relaxed);
}

static void observe(struct histogram *h, double seconds)
{
    size_t i = 0;

    while (i < NBUCKETS && seconds > buckets[i])
        i++;
    atomic_fetch_add_explicit(&h->count[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (int64_t)(seconds * 1e6), memory_order_relaxed);
    atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
}

void metrics_batch(enum batch_outcome outcome, double seconds)
{
    atomic_fetch_add_explicit(&batches_by_outcome[outcome], 1, memory_order_relaxed);
    if (outcome <= OUT_SHUTDOWN)
        observe(&batch_hist, seconds);
}

void metrics_item(const struct result *r, double seconds)
{
    if (result_ok(r))
        atomic_fetch_add_explicit(&items_ok, 1, memory_order_relaxed);
    else if (r->error == ERR_NONE)
        atomic_fetch_add_explicit(&items_http_error, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&items_error, 1, memory_order_relaxed);
    if (r->error != ERR_NONE && r->error < ERR_COUNT)
        atomic_fetch_add_explicit(&item_errors[r->error], 1, memory_order_relaxed);
    if (r->status > 0)
        observe(&upstream_hist, seconds);
}

static int64_t get(_Atomic int64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static fo_err render_histogram(struct buf *out, const char *name, const char *help,
                               struct histogram *h)
{
    int64_t cum = 0;
    fo_err err = buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);

    for (size_t i = 0; i < NBUCKETS && err == FO_OK; i++) {
        cum += get(&h->count[i]);
        err = buf_printf(out, "%s_bucket{le=\"%g\"} %lld\n", name, buckets[i], (long long)cum);
    }
    cum += get(&h->count[NBUCKETS]);
    if (err == FO_OK)
        err = buf_printf(out, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", name,
                         (long long)cum, name, (double)get(&h->sum_us) / 1e6, name,
                         (long long)get(&h->total));
    return err;
}

fo_err metrics_render(struct buf *out)
{
    fo_err err = FO_OK;

#define TRY(x)                    \
    do {                          \
        if ((err = (x)) != FO_OK) \
            return err;           \
    } while (0)
#define RENDER(field, name, type, help)                                                        \
    TRY(buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type, name, \
                   (long long)get(&metrics.field)));
    METRICS(RENDER)
#undef RENDER
    TRY(buf_printf(out,
                   "# HELP fanoutd_build_info Build information.\n"
                   "# TYPE fanoutd_build_info gauge\n"
                   "fanoutd_build_info{version=\"%s\"} 1\n",
                   FANOUTD_VERSION));
    TRY(buf_puts(out,
                 "# HELP fanoutd_batches_total Batches by how they ended (rejections "
                 "by their error code).\n# TYPE fanoutd_batches_total counter\n"));
    for (int i = 0; i < OUT_COUNT; i++)
        TRY(buf_printf(out, "fanoutd_batches_total{outcome=\"%s\"} %lld\n", outcome_names[i],
                       (long long)get(&batches_by_outcome[i])));
    TRY(buf_printf(out,
                   "# HELP fanoutd_items_total Items by outcome: ok, a non-2xx response, "
                   "or a failed fetch.\n# TYPE fanoutd_items_total counter\n"
                   "fanoutd_items_total{outcome=\"ok\"} %lld\n"
                   "fanoutd_items_total{outcome=\"http_error\"} %lld\n"
                   "fanoutd_items_total{outcome=\"error\"} %lld\n",
                   (long long)get(&items_ok), (long long)get(&items_http_error),
                   (long long)get(&items_error)));
    TRY(buf_puts(out,
                 "# HELP fanoutd_item_errors_total Failed items by error code.\n"
                 "# TYPE fanoutd_item_errors_total counter\n"));
    for (int i = ERR_NONE + 1; i < ERR_COUNT; i++)
        TRY(buf_printf(out, "fanoutd_item_errors_total{code=\"%s\"} %lld\n",
                       item_error_code((enum item_error)i), (long long)get(&item_errors[i])));
    TRY(buf_puts(out,
                 "# HELP fanoutd_breaker_transitions_total Circuit breaker state "
                 "changes, by the state entered.\n"
                 "# TYPE fanoutd_breaker_transitions_total counter\n"));
    for (size_t i = 0; i < FO_ARRAY_LEN(breaker_states); i++)
        TRY(buf_printf(out, "fanoutd_breaker_transitions_total{to=\"%s\"} %lld\n",
                       breaker_states[i], (long long)get(&breaker_moves[i])));
    TRY(render_histogram(out, "fanoutd_batch_duration_seconds",
                         "Time from a batch's arrival to its answer.", &batch_hist));
    TRY(render_histogram(out, "fanoutd_upstream_duration_seconds",
                         "Duration of upstream fetches that got a response.", &upstream_hist));
#undef TRY
    return FO_OK;
}
