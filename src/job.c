/*
 * job.c - the in-flight batch (see job.h for ownership and locking).
 */
#include "job.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "fanoutd.h"
#include "fetch.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"

/* Serial numbers for jobs; atomic, so no lock. */
static _Atomic uint64_t next_serial = 1;

void job_forward_free(char **forward, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(forward[i]);
    free(forward);
}

/* Frees a job and everything it owns: its last reference is gone, or
 * job_new could not finish it. */
static void job_free(struct job *job)
{
    int trim = job->bytes_seen >= FO_TRIM_AFTER_BYTES;

    for (size_t i = 0; job->results != NULL && i < job->req.n; i++)
        result_clear(&job->results[i]);
    batch_req_free(&job->req);
    job_forward_free(job->forward, job->nforward);
    free(job->state);
    free(job->started_us);
    free(job->runner);
    free(job->results);
    free(job->pending);
    buf_free(&job->doc);
    config_unref(job->cfg);
    pthread_mutex_destroy(&job->lock);
    free(job);
    /* glibc keeps freed heap in its arenas (and after the first big free
     * it serves big blocks from them rather than mmap): after a large
     * answer, give the free pages of every arena back to the kernel. */
    if (trim)
        malloc_trim(0);
}

fo_err job_new(struct config *cfg, struct batch_req *req, char **forward, size_t nforward,
               int64_t arrival_us, job_finish_fn on_finish, void *ctx, struct job **out)
{
    struct job *job = calloc(1, sizeof(*job));
    size_t n = req->n;
    long timeout_ms;

    *out = NULL;
    if (job == NULL) {
        batch_req_free(req);
        job_forward_free(forward, nforward);
        return FO_ENOMEM;
    }
    /* From here on the job owns what it was given, and job_free releases it. */
    job->req = *req;
    memset(req, 0, sizeof(*req));
    job->forward = forward;
    job->nforward = nforward;
    job->cfg = config_ref(cfg);
    pthread_mutex_init(&job->lock, NULL);
    buf_init(&job->doc, 0);
    job->state = calloc(n, sizeof(*job->state));
    job->started_us = calloc(n, sizeof(*job->started_us));
    job->runner = calloc(n, sizeof(*job->runner));
    job->results = calloc(n, sizeof(*job->results));
    job->pending = malloc(n * sizeof(*job->pending));
    if (job->state == NULL || job->started_us == NULL || job->runner == NULL ||
        job->results == NULL || job->pending == NULL) {
        job_free(job);
        return FO_ENOMEM;
    }
    atomic_init(&job->refs, 1);
    atomic_init(&job->stop, 0);
    job->serial = atomic_fetch_add(&next_serial, 1);
    job->arrival_us = arrival_us;
    timeout_ms = job->req.timeout_ms ? job->req.timeout_ms : cfg->batch_timeout_ms;
    if (timeout_ms > cfg->max_timeout_ms)
        timeout_ms = cfg->max_timeout_ms;
    job->deadline_us = arrival_us + (int64_t)timeout_ms * 1000;
    job->on_finish = on_finish;
    job->finish_ctx = ctx;
    job->remaining = n;
    for (size_t i = 0; i < n; i++)
        job->pending[i] = (uint32_t)i;
    job->npending = n;
    *out = job;
    return FO_OK;
}

struct job *job_ref(struct job *job)
{
    atomic_fetch_add(&job->refs, 1);
    return job;
}

void job_unref(struct job *job)
{
    if (job == NULL || atomic_fetch_sub(&job->refs, 1) != 1)
        return;
    job_free(job);
}

int job_begin_item(struct job *job, size_t i, struct fetcher *f)
{
    int run;

    pthread_mutex_lock(&job->lock);
    run = job->finished == FINISH_NONE;
    if (run) {
        job->state[i] = ITEM_RUNNING;
        job->started_us[i] = fo_now_us();
        job->runner[i] = f;
    }
    pthread_mutex_unlock(&job->lock);
    return run;
}

/* Keeps res's body in the answer if it fits in what is left of
 * max_answer_bytes, else fails the item too_large (status kept) and
 * returns the body for the caller to free after unlocking. Job lock held. */
static char *answer_admit(struct job *job, struct result *res)
{
    size_t cap = (size_t)job->cfg->max_answer_bytes;
    char *drop;

    if (res->error != ERR_NONE || res->body == NULL || res->enc == BODY_NONE)
        return NULL;
    job->bytes_seen += res->body_len;
    if (job->answer_bytes <= cap && res->body_len <= cap - job->answer_bytes) {
        job->answer_bytes += res->body_len;
        return NULL;
    }
    drop = res->body;
    res->body = NULL;
    result_fail(res, ERR_TOO_LARGE, FO_ANSWER_CAP_MSG, job->cfg->max_answer_bytes);
    return drop;
}

size_t job_answer_left(struct job *job)
{
    size_t cap = (size_t)job->cfg->max_answer_bytes, left;

    pthread_mutex_lock(&job->lock);
    left = job->answer_bytes < cap ? cap - job->answer_bytes : 0;
    pthread_mutex_unlock(&job->lock);
    return left;
}

void job_complete_item(struct job *job, size_t i, struct result *res)
{
    char *drop = NULL;
    int last = 0;

    pthread_mutex_lock(&job->lock);
    job->runner[i] = NULL;
    if (job->finished == FINISH_NONE && job->state[i] != ITEM_DONE) {
        drop = answer_admit(job, res);
        result_clear(&job->results[i]);
        job->results[i] = *res;
        memset(res, 0, sizeof(*res));
        job->state[i] = ITEM_DONE;
        last = --job->remaining == 0;
    }
    pthread_mutex_unlock(&job->lock);
    free(drop);          /* a body refused by max_answer_bytes */
    result_clear(res);   /* a late result (the job had finished) is dropped */
    if (last)
        job_finish(job, FINISH_DONE);
}

/* Gives every item that did not finish its error; called with the lock held. */
static void fail_unfinished(struct job *job, enum finish_reason reason, int64_t now_us)
{
    enum item_error e = reason == FINISH_DEADLINE ? ERR_DEADLINE : ERR_CANCELLED;
    const char *why = reason == FINISH_DEADLINE ? "the batch deadline passed before the item finished"
                    : reason == FINISH_CLIENT ? "the client went away"
                    : reason == FINISH_REJECTED ? "the batch was not admitted"
                    : "fanoutd shut down before the item finished";

    for (size_t i = 0; i < job->req.n; i++) {
        if (job->state[i] == ITEM_DONE)
            continue;
        struct result *r = &job->results[i];
        result_clear(r);
        result_fail(r, e, "%s", why);
        if (job->state[i] == ITEM_RUNNING)
            r->duration_ms = (double)(now_us - job->started_us[i]) / 1000.0;
        job->state[i] = ITEM_DONE;
    }
    job->remaining = 0;
}

static enum batch_outcome outcome_of(enum finish_reason reason, int complete)
{
    switch (reason) {
    case FINISH_DEADLINE: return OUT_DEADLINE;
    case FINISH_CLIENT:   return OUT_CANCELLED;
    case FINISH_SHUTDOWN: return OUT_SHUTDOWN;
    default:              return complete ? OUT_COMPLETE : OUT_PARTIAL;
    }
}

int job_finish(struct job *job, enum finish_reason reason)
{
    int64_t now = fo_now_us();
    double ms = (double)(now - job->arrival_us) / 1000.0;

    pthread_mutex_lock(&job->lock);
    if (job->finished != FINISH_NONE) {
        pthread_mutex_unlock(&job->lock);
        return 0;
    }
    job->finished = reason;
    atomic_store(&job->stop, 1);
    if (reason != FINISH_DONE)
        fail_unfinished(job, reason, now);
    /* Running fetches stop now rather than at their next timer. Fetchers
     * live until the workers are joined, so waking one is always safe. */
    for (size_t i = 0; i < job->req.n; i++) {
        if (job->runner[i] != NULL)
            fetch_wake(job->runner[i]);
    }
    pthread_mutex_unlock(&job->lock);

    /* No worker writes results any more; items still queued are dropped. */
    queue_drop(job);
    for (size_t i = 0; i < job->req.n; i++)
        metrics_item(&job->results[i], job->results[i].duration_ms / 1000.0);
    if (reason == FINISH_REJECTED) {
        if (job->on_finish != NULL)
            job->on_finish(job, job->finish_ctx);
        return 1;
    }
    if (reason != FINISH_CLIENT &&
        merge_build(&job->req, job->results, job->req.merge, ms, &job->doc, &job->complete) != FO_OK) {
        log_error("cannot build the answer of a batch of %zu items (out of memory)", job->req.n);
        job->doc_failed = 1;
    }
    metrics_batch(outcome_of(reason, job->complete), ms / 1000.0);
    log_debug("batch %llu finished (%d) after %.1f ms", (unsigned long long)job->serial,
              (int)reason, ms);
    if (job->on_finish != NULL)
        job->on_finish(job, job->finish_ctx);
    return 1;
}
