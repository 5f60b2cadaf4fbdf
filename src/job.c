/*
 * job.c - the in-flight batch (see job.h for ownership and locking), and
 * the finisher threads that build the documents of batches finished by
 * their deadline or by shutdown.
 *
 * Lock order: a job's lock, then nothing (queue and finisher locks are
 * taken with no job lock held). fin.lock is a leaf lock.
 */
#include "job.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "answer.h"
#include "compose.h"
#include "fanoutd.h"
#include "log.h"
#include "metrics.h"
#include "trace.h"

struct job {
    _Atomic long refs;
    uint64_t serial; /* unique, for the watcher's lookups */

    /* Read-only after job_new. */
    struct config *cfg; /* a reference: the config the batch started with */
    struct batch_req req;
    char **forward; /* client headers to forward ("Name: value"), owned */
    size_t nforward;
    int64_t arrival_us;  /* monotonic */
    int64_t deadline_us; /* monotonic */
    job_finish_fn on_finish;
    void *finish_ctx;
    /* The suspended client's socket, -1 if not watched. Set once by
     * watch_add before the job is queued; open while the job runs (the
     * connection stays suspended until the job finishes). */
    int client_fd;
    /* When a worker last polled client_fd (job_begin_item), monotonic us;
     * guarded by lock. */
    int64_t client_polled_us;

    /* Set once when the job finishes; running fetches poll it to abort. */
    _Atomic int stop;

    pthread_mutex_t lock; /* guards the fields below */
    enum finish_reason finished;
    size_t remaining;     /* items not yet done */
    unsigned char *state; /* enum item_state per item */
    int64_t *started_us;  /* when a worker took each item */
    void **runner;        /* the runner of each running item, or NULL */
    struct result *results;
    size_t answer_bytes; /* body bytes kept for the answer (max_answer_bytes) */
    size_t bytes_seen;   /* body bytes handed in, kept or refused (memory release) */

    /* Written only by whoever builds the document, read by the front end
     * after on_finish. */
    struct answer_doc doc; /* the answer's sink: the whole document */
    int complete;
    double duration_ms;   /* arrival to the document's completion */
    struct job *fin_next; /* finisher queue link (finisher lock) */

    /* The runner's hooks (job_set_hooks), guarded by lock. */
    struct job_hooks hooks;
    int has_hooks;
    int cancelled; /* the cancel hook has run (or is running) */

    /* Retries, guarded by lock: attempts started per item, and
     * when its first attempt started (its timeout covers all of them). */
    long *attempts;
    int64_t *first_us;
    /* v2 policy and timings, guarded by lock. */
    size_t nok;                  /* items done and ok */
    char policy_why[FO_MSG_LEN]; /* the cancelled items' message (FINISH_POLICY) */
    int64_t *runnable_us;        /* when each item could run (job_item_runnable) */
    /* Streaming (job_set_stream): the answer is NDJSON lines, each item's
     * written under lock as it finishes; its body is dropped once written. */
    struct answer_stream stream;
    int streaming;
    int stream_broken; /* a line was refused (cap, memory): the client is dropped */
    /* composition: item i's request with its references resolved
     * (job_prepare_item), written only by the worker running item i. */
    struct compose_run *runs;
};

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
    for (size_t i = 0; job->runs != NULL && i < job->req.n; i++)
        compose_run_free(&job->runs[i]);
    free(job->runs);
    batch_req_free(&job->req);
    job_forward_free(job->forward, job->nforward);
    free(job->state);
    free(job->started_us);
    free(job->runner);
    free(job->runnable_us);
    free(job->results);
    free(job->attempts);
    free(job->first_us);
    job->doc.sink.ops->release(&job->doc.sink);
    if (job->streaming)
        job->stream.sink.ops->release(&job->stream.sink);
    config_unref(job->cfg);
    pthread_mutex_destroy(&job->lock);
    free(job);
    /* glibc keeps freed heap in its arenas: after a large answer, give
     * their free pages back to the kernel. (Blocks of FO_MMAP_THRESHOLD
     * and more are mappings, unmapped when freed: main.c fixes it.) */
    if (trim)
        malloc_trim(0);
}

/* A time limit as given (0: not given, then dflt), at most max_timeout_ms. */
static long clamp_timeout(long given, long dflt, const struct config *cfg)
{
    long ms = given > 0 ? given : dflt;

    return ms > cfg->max_timeout_ms ? cfg->max_timeout_ms : ms;
}

static void resolve_retry(struct item_req *it, const struct config *cfg);
static void show_attempts(const struct job *job, size_t i, struct result *r);

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
    answer_doc_init(&job->doc);
    job->state = calloc(n, sizeof(*job->state));
    job->started_us = calloc(n, sizeof(*job->started_us));
    job->runner = calloc(n, sizeof(*job->runner));
    job->results = calloc(n, sizeof(*job->results));
    job->attempts = calloc(n, sizeof(*job->attempts));
    job->first_us = calloc(n, sizeof(*job->first_us));
    job->runnable_us = calloc(n, sizeof(*job->runnable_us));
    if (job->state == NULL || job->started_us == NULL || job->runner == NULL ||
        job->results == NULL || job->runnable_us == NULL || job->attempts == NULL ||
        job->first_us == NULL) {
        job_free(job);
        return FO_ENOMEM;
    }
    for (size_t i = 0; i < n && job->runs == NULL; i++) {
        const struct compose_item *c = job->req.items[i].compose;
        if (c != NULL && c->has_deps && (job->runs = calloc(n, sizeof(*job->runs))) == NULL) {
            job_free(job);
            return FO_ENOMEM;
        }
    }
    atomic_init(&job->refs, 1);
    atomic_init(&job->stop, 0);
    job->serial = atomic_fetch_add(&next_serial, 1);
    job->arrival_us = arrival_us;
    /* Every time limit resolved here, once: nothing downstream clamps. */
    timeout_ms = clamp_timeout(job->req.timeout_ms, cfg->batch_timeout_ms, cfg);
    job->req.timeout_ms = timeout_ms;
    for (size_t i = 0; i < n; i++) {
        struct item_req *it = &job->req.items[i];
        it->timeout_ms = clamp_timeout(it->timeout_ms, cfg->default_timeout_ms, cfg);
        resolve_retry(it, cfg);
    }
    job->deadline_us = arrival_us + (int64_t)timeout_ms * 1000;
    job->on_finish = on_finish;
    job->finish_ctx = ctx;
    job->client_fd = -1;
    job->remaining = n;
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

/* 1 if the client's socket shows that it went away (closed, reset, or
 * its sending side shut): the watcher is about to cancel the job. */
static int client_left(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };

    return fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

int job_begin_item(struct job *job, size_t i, void *runner)
{
    int64_t now = fo_now_us();
    int run;

    pthread_mutex_lock(&job->lock);
    /* Unfinished, so the connection is still suspended and its fd open.
     * The watcher cancels the job when its client goes; the poll here
     * only closes the gap until it has, so it is made at most once per
     * FO_CLIENT_POLL_US for a job (not once for each of a batch's items,
     * which start within that time of each other). */
    run = job->finished == FINISH_NONE;
    if (run && now - job->client_polled_us >= FO_CLIENT_POLL_US) {
        job->client_polled_us = now;
        run = !client_left(job->client_fd);
    }
    if (run) {
        job->state[i] = ITEM_RUNNING;
        job->started_us[i] = now;
        job->runner[i] = runner;
    }
    pthread_mutex_unlock(&job->lock);
    return run;
}

/* 1 if an item was failed by the batch deadline: the batch then ended by its
 * deadline, even when a worker's fetch (bounded by that deadline) noticed it
 * before the watcher did. Lock held. */
static int deadline_hit(const struct job *job)
{
    for (size_t i = 0; i < job->req.n; i++) {
        if (job->results[i].error == ERR_DEADLINE)
            return 1;
    }
    return 0;
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
    /* A stream holds no body once its line is written: each body alone is
     * capped (the unread lines are capped by the stream sink). */
    if (job->streaming && res->body_len <= cap)
        return NULL;
    if (!job->streaming && job->answer_bytes <= cap && res->body_len <= cap - job->answer_bytes) {
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
    left = job->streaming ? cap : job->answer_bytes < cap ? cap - job->answer_bytes : 0;
    pthread_mutex_unlock(&job->lock);
    return left;
}

/* Streaming: writes item i's line (its result is final) and drops its
 * body. Job lock held; a refused line marks the stream broken. */
static void stream_item(struct job *job, size_t i)
{
    struct result *r = &job->results[i];
    struct buf line;
    fo_err err;

    if (!job->streaming || job->stream_broken)
        return;
    buf_init(&line, 0);
    err = result_put_line(&line, &job->req.items[i], r, i);
    if (err == FO_OK)
        err = job->stream.sink.ops->write(&job->stream.sink, line.data, line.len);
    buf_free(&line);
    if (err != FO_OK) {
        job->stream_broken = 1;
        log_info("batch %llu: stream line of item %zu refused (%s); dropping the client",
                 (unsigned long long)job->serial, i, fo_strerror(err));
    }
    /* Written: the body is needed no more, unless a dependant's references
     * are still to read it. */
    if (!job->req.items[i].has_dependants) {
        FO_FREE(r->body);
        r->body_len = 0;
    }
}

/* "item 3 (id \"x\")" for the policy's messages. */
static void item_label(const struct job *job, size_t i, char *out, size_t size)
{
    (void)snprintf(out, size, "item %zu (id \"%.100s\")", i, job->req.items[i].id);
}

/*
 * v2 policy: whether item i's result, just stored, ends the batch early
 * (FINISH_POLICY, with the message the unfinished items get), with items
 * still unfinished. fail_fast: the first item not ok; min_success N: N
 * items ok, or too few left for N. Job lock held.
 */
static enum finish_reason policy_ends(struct job *job, size_t i)
{
    char name[160];
    long need = job->req.min_success;

    item_label(job, i, name, sizeof(name));
    switch (job->req.policy) {
    case POLICY_FAIL_FAST:
        if (result_ok(&job->results[i]))
            return FINISH_NONE;
        (void)snprintf(job->policy_why, sizeof(job->policy_why),
                       "cancelled by the fail_fast policy: %s failed", name);
        return FINISH_POLICY;
    case POLICY_MIN_SUCCESS:
        if (job->nok >= (size_t)need) {
            (void)snprintf(job->policy_why, sizeof(job->policy_why),
                           "cancelled by the min_success policy: %ld items were already ok",
                           need);
            return FINISH_POLICY;
        }
        if (job->nok + job->remaining < (size_t)need) {
            (void)snprintf(job->policy_why, sizeof(job->policy_why),
                           "cancelled by the min_success policy: %ld ok items could no longer "
                           "be reached once %s failed",
                           need, name);
            return FINISH_POLICY;
        }
        return FINISH_NONE;
    default:
        return FINISH_NONE;
    }
}

/* The waterfall of item i: its first attempt's start and its last one's
 * end (now_us), from the batch's arrival, 0 and 0 if it never started;
 * and queue_ms, the wait before that first attempt (retries and their
 * backoff come after it). Lock held. */
static void waterfall(const struct job *job, size_t i, struct result *r, int64_t now_us)
{
    int64_t first = job->first_us[i];
    int64_t from = job->runnable_us[i] > 0 ? job->runnable_us[i] : job->arrival_us;

    if (first == 0 || first < job->arrival_us) {
        r->start_ms = r->end_ms = 0;
        return;
    }
    r->queue_ms = first > from ? (double)(first - from) / 1000.0 : 0;
    r->start_ms = (double)(first - job->arrival_us) / 1000.0;
    r->end_ms = now_us > first ? (double)(now_us - job->arrival_us) / 1000.0 : r->start_ms;
}

void job_complete_item(struct job *job, size_t i, struct result *res)
{
    enum finish_reason reason = FINISH_NONE;
    char *drop = NULL;
    int broken = 0;

    compose_select(&job->req.items[i], res); /* before anything keeps or sends it */
    pthread_mutex_lock(&job->lock);
    job->runner[i] = NULL;
    if (job->finished == FINISH_NONE && job->state[i] != ITEM_DONE) {
        drop = answer_admit(job, res);
        show_attempts(job, i, res);
        result_clear(&job->results[i]);
        res->timed = job->req.timings;
        waterfall(job, i, res, fo_now_us());
        job->results[i] = *res;
        memset(res, 0, sizeof(*res));
        job->state[i] = ITEM_DONE;
        job->nok += result_ok(&job->results[i]) != 0;
        stream_item(job, i);
        broken = job->stream_broken;
        if (--job->remaining == 0)
            reason = deadline_hit(job) ? FINISH_DEADLINE : FINISH_DONE;
        else
            reason = policy_ends(job, i);
    }
    pthread_mutex_unlock(&job->lock);
    free(drop);        /* a body refused by max_answer_bytes */
    result_clear(res); /* a late result (the job had finished) is dropped */
    /* A stream that cannot take a line: as if its client had gone away. */
    if (broken)
        reason = FINISH_CLIENT;
    if (reason != FINISH_NONE)
        job_finish(job, reason);
}

/* ---- the fetch request of an item ------------------------------------------ */

/* Whether a "Name: value" (or "Name;") line is a header called name (n bytes). */
static int header_named(const char *line, const char *name, size_t n)
{
    return strncasecmp(line, name, n) == 0 && (line[n] == ':' || line[n] == ';');
}

static int item_has_header(const struct item_req *it, const char *line)
{
    size_t n = strcspn(line, ":;");

    for (size_t i = 0; i < it->nheaders; i++) {
        if (header_named(it->headers[i], line, n))
            return 1;
    }
    return 0;
}

/* "CDN-Loop: <client's value>, <item's value>, <loop_token>" (RFC 8586): the
 * client's and the item's CDN-Loop, if any, then this deployment's token,
 * so that a batch that comes back to fanoutd is recognised (server.c).
 * NULL when out of memory. */
static char *cdn_loop_line(const struct job *job, const struct item_req *it)
{
    struct buf b;
    fo_err err;
    size_t n = strlen("CDN-Loop");

    buf_init(&b, 0);
    err = buf_puts(&b, "CDN-Loop: ");
    for (size_t i = 0; i < job->nforward + it->nheaders && err == FO_OK; i++) {
        const char *line = i < job->nforward ? job->forward[i] : it->headers[i - job->nforward];
        if (!header_named(line, "CDN-Loop", n) || line[n] != ':')
            continue; /* "CDN-Loop;" is an empty value */
        const char *v = line + n + 1;
        v += strspn(v, " \t");
        if (*v == '\0')
            continue;
        err = buf_puts(&b, v);
        if (err == FO_OK)
            err = buf_puts(&b, ", ");
    }
    if (err == FO_OK)
        err = buf_puts(&b, job->cfg->loop_token);
    if (err == FO_OK)
        err = buf_append(&b, "", 1); /* the terminating NUL */
    if (err != FO_OK) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

static size_t answer_left_cb(void *ctx)
{
    return job_answer_left(ctx);
}

static long item_time_left(struct job *job, size_t i);
/* v2 traceparent: whether the item's requests carry fanoutd's own
 * traceparent (the client sent a valid one, the item sets none itself). */
static int item_traced(const struct job *job, const struct item_req *it)
{
    return job->req.traceparent[0] != '\0' && !item_has_header(it, "traceparent:") &&
           !item_has_header(it, "tracestate:");
}

/* Whether a forwarded client header is traceparent or tracestate: never
 * forwarded as they came, even when forward_headers names them (each item
 * is a span of its own, and a malformed traceparent sends nothing). */
static int trace_header(const char *line)
{
    return header_named(line, "traceparent", 11) || header_named(line, "tracestate", 10);
}

/* The v2 parts of an item's request: timings wanted, its traceparent (a
 * new span id per item) and the client's tracestate. */
static void job_request_v2(const struct job *job, const struct item_req *it, struct fetch_req *out)
{
    if (job->req.timings)
        out->timings = FETCH_TIME_DNS | FETCH_TIME_CONNECT | FETCH_TIME_TLS |
                       FETCH_TIME_FIRST_BYTE | FETCH_TIME_TOTAL;
    if (item_traced(job, it)) {
        trace_child_line(job->req.traceparent, out->traceparent);
        out->tracestate = job->req.tracestate;
    }
}
/* composition, at the end of this file */
static const struct item_req *job_item_resolved(const struct job *job, size_t i,
                                                struct item_req *copy);
static void job_request_compose(const struct job *job, size_t i, struct fetch_req *out);

fo_err job_request(struct job *job, size_t i, struct fetch_req *out)
{
    const struct item_req *it = &job->req.items[i];
    struct item_req resolved;
    const struct config *cfg = job->cfg;
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    if (job->runs != NULL && job->runs[i].headers != NULL)
        it = job_item_resolved(job, i, &resolved); /* references substituted */
    out->headers = malloc((job->nforward + it->nheaders + 1) * sizeof(*out->headers));
    out->cdn_loop = cdn_loop_line(job, it);
    if (out->headers == NULL || out->cdn_loop == NULL) {
        FO_FREE(out->headers);
        FO_FREE(out->cdn_loop);
        return FO_ENOMEM;
    }
    /* Client headers named in forward_headers, unless the item gives the
     * same header (its own value wins); CDN-Loop only in cdn_loop; never a
     * hop-by-hop or framing one (config refuses those names too). */
    for (size_t k = 0; k < job->nforward; k++) {
        if (!item_has_header(it, job->forward[k]) &&
            !fo_header_not_forwardable(job->forward[k]) && !trace_header(job->forward[k]))
            out->headers[n++] = job->forward[k];
    }
    for (size_t k = 0; k < it->nheaders; k++) {
        if (!header_named(it->headers[k], "CDN-Loop", 8))
            out->headers[n++] = it->headers[k];
    }
    out->nheaders = n;
    out->url = it->url;
    out->method = it->method;
    out->has_content_type = it->has_content_type;
    out->body = it->body;
    out->body_len = it->body_len;
    job_request_compose(job, i, out);
    out->body_is_json = it->body_is_json;
    out->timeout_ms = item_time_left(job, i);
    out->timeout_counts = it->timeout_ms >= cfg->default_timeout_ms;
    out->deadline_us = job->deadline_us;
    out->retry.attempts = it->retry_max;
    out->retry.backoff_ms = it->retry_backoff_ms;
    out->retry.max_backoff_ms = cfg->retry_backoff_max_ms;
    out->max_redirects = cfg->max_redirects;
    out->max_response_bytes = cfg->max_response_bytes;
    out->max_answer_bytes = cfg->max_answer_bytes;
    out->answer_left = answer_left_cb;
    out->answer_ctx = job;
    out->allow = &cfg->allow;
    out->deny = &cfg->deny;
    out->generation = cfg->generation;
    out->stop = &job->stop;
    job_request_v2(job, it, out);
    return FO_OK;
}

/* v2 timings of an item that did not finish: queue_ms from when it could
 * run (the batch's arrival if the scheduler never said) to its start, or
 * to now if it never started; the fetch's own phases 0. Lock held. */
static void unfinished_timings(const struct job *job, size_t i, struct result *r, int64_t now_us)
{
    int64_t from = job->runnable_us[i] > 0 ? job->runnable_us[i] : job->arrival_us;
    int64_t to = job->state[i] == ITEM_RUNNING ? job->started_us[i] : now_us;

    r->timed = job->req.timings;
    r->queue_ms = to > from ? (double)(to - from) / 1000.0 : 0;
    waterfall(job, i, r, now_us);
}

/* Gives every item that did not finish its error; called with the lock held. */
static void fail_unfinished(struct job *job, enum finish_reason reason, int64_t now_us)
{
    enum item_error e = reason == FINISH_DEADLINE ? ERR_DEADLINE : ERR_CANCELLED;
    const char *why = reason == FINISH_DEADLINE
                          ? "the batch deadline passed before the item finished"
                      : reason == FINISH_CLIENT   ? "the client went away"
                      : reason == FINISH_REJECTED ? "the batch was not admitted"
                      : reason == FINISH_POLICY   ? job->policy_why
                                                  : "fanoutd shut down before the item finished";

    for (size_t i = 0; i < job->req.n; i++) {
        if (job->state[i] == ITEM_DONE)
            continue;
        struct result *r = &job->results[i];
        result_clear(r);
        result_fail(r, e, "%s", why);
        show_attempts(job, i, r);
        if (job->state[i] == ITEM_RUNNING)
            r->duration_ms = (double)(now_us - job->started_us[i]) / 1000.0;
        unfinished_timings(job, i, r, now_us);
        job->state[i] = ITEM_DONE;
        if (reason != FINISH_CLIENT && reason != FINISH_REJECTED)
            stream_item(job, i); /* nobody reads the stream of those */
    }
    job->remaining = 0;
}

long job_max_concurrency(const struct job *job)
{
    return job->req.max_concurrency;
}

void job_item_runnable(struct job *job, size_t i, int64_t runnable_us)
{
    pthread_mutex_lock(&job->lock);
    if (job->first_us[i] == 0) /* the first attempt's: queue_ms ends where it starts */
        job->runnable_us[i] = runnable_us;
    pthread_mutex_unlock(&job->lock);
}

uint64_t job_serial(const struct job *job)
{
    return job->serial;
}

size_t job_items(const struct job *job)
{
    return job->req.n;
}

int64_t job_deadline_us(const struct job *job)
{
    return job->deadline_us;
}

const struct config *job_config(const struct job *job)
{
    return job->cfg;
}

const char *job_item_dest(const struct job *job, size_t i)
{
    return job->req.items[i].hostkey;
}

int job_stopped(const struct job *job)
{
    return atomic_load(&job->stop) != 0;
}

void job_set_client_fd(struct job *job, int fd)
{
    job->client_fd = fd;
}

enum finish_reason job_reason(const struct job *job)
{
    return job->finished;
}

struct answer_sink *job_answer_sink(struct job *job)
{
    if (job->streaming)
        return job->finished == FINISH_REJECTED ? NULL : &job->stream.sink;
    if (job->finished == FINISH_CLIENT || job->finished == FINISH_REJECTED)
        return NULL;
    return &job->doc.sink;
}

int job_complete(const struct job *job)
{
    return job->complete;
}

size_t job_items_ok(const struct job *job)
{
    size_t ok = 0;

    for (size_t i = 0; i < job->req.n; i++)
        ok += result_ok(&job->results[i]) != 0;
    return ok;
}

enum batch_outcome job_outcome(const struct job *job)
{
    switch (job->finished) {
    case FINISH_DEADLINE:
        return OUT_DEADLINE;
    case FINISH_CLIENT:
        return OUT_CANCELLED;
    case FINISH_SHUTDOWN:
        return OUT_SHUTDOWN;
    default:
        return job->complete ? OUT_COMPLETE : OUT_PARTIAL;
    }
}

/* ---- building the document -------------------------------------------- */

/* The finishers. fin.lock guards every field but test_delay_ms (read-only
 * after job_finisher_start). */
static struct finisher_state {
    pthread_mutex_t lock;
    pthread_cond_t work;     /* signalled when a job is queued or on stop */
    struct job *head, *tail; /* jobs waiting for a finisher, each a reference */
    size_t queued;
    pthread_t tids[FO_FINISHERS_MAX];
    int nthreads, idle;
    int running;        /* between start and stop: hand-offs allowed */
    long test_delay_ms; /* testing aid, see job_finisher_start */
} fin = { .lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER };

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * The summary is the document's last member and duration_ms its last
 * field ("...,"duration_ms":12.345}}"). It is written again once the rest of
 * the document is complete, so that it covers the building too (contract:
 * from arrival to the moment the document is complete). A document whose
 * end has another shape is left as it is.
 */
static fo_err stamp_duration(struct buf *doc, int64_t arrival_us)
{
    static const char key[] = "\"duration_ms\":";
    const size_t klen = sizeof(key) - 1, window = 64;
    size_t at = doc->len;

    if (doc->len < klen + 3 || memcmp(doc->data + doc->len - 2, "}}", 2) != 0)
        return FO_OK;
    while (at >= klen && doc->len - at < window && memcmp(doc->data + at - klen, key, klen) != 0)
        at--;
    if (at < klen || doc->len - at >= window)
        return FO_OK;
    if (strspn(doc->data + at, "0123456789.") != doc->len - at - 2)
        return FO_OK;
    doc->len = at;
    fo_err err = json_put_ms(doc, (double)(fo_now_us() - arrival_us) / 1000.0);
    return err != FO_OK ? err : buf_puts(doc, "}}");
}

/* Builds the document of a finished job (none for a client gone or a
 * rejected batch), counts the batch and calls on_finish. Runs on the thread
 * that finished the job or on a finisher; nothing else touches the
 * document meanwhile. */
/* Streaming: the summary line, then the stream's end (cut short, with no
 * summary, when nobody reads it or a line was refused). */
static void stream_answer(struct job *job, enum finish_reason reason)
{
    struct answer_sink *sink = &job->stream.sink;
    int failed = reason == FINISH_CLIENT || reason == FINISH_REJECTED || job->stream_broken;

    if (!failed) {
        size_t ok = job_items_ok(job);
        struct buf line;
        buf_init(&line, 0);
        job->complete = ok == job->req.n;
        failed = summary_put_line(&line, job->req.n, ok,
                                  (double)(fo_now_us() - job->arrival_us) / 1000.0) != FO_OK ||
                 sink->ops->write(sink, line.data, line.len) != FO_OK;
        buf_free(&line);
    }
    sink->ops->finish(sink, failed);
}

static void job_answer(struct job *job)
{
    enum finish_reason reason = job->finished;

    if (job->streaming) {
        stream_answer(job, reason);
    } else if (reason != FINISH_CLIENT && reason != FINISH_REJECTED) {
        log_debug("batch %llu: building its answer (%zu items)", (unsigned long long)job->serial,
                  job->req.n);
        if (fin.test_delay_ms > 0 && job->req.merge == MERGE_DEEP)
            sleep_ms(fin.test_delay_ms);
        /* The duration so far, made exact once the document is complete. */
        double ms = (double)(fo_now_us() - job->arrival_us) / 1000.0;
        struct buf *doc = answer_doc_buf(&job->doc);
        int failed = merge_build(&job->req, job->results, job->req.merge, ms, doc,
                                 &job->complete) != FO_OK ||
                     stamp_duration(doc, job->arrival_us) != FO_OK;
        if (failed)
            log_error("cannot build the answer of a batch of %zu items (out of memory)",
                      job->req.n);
        job->doc.sink.ops->finish(&job->doc.sink, failed);
    }
    job->duration_ms = (double)(fo_now_us() - job->arrival_us) / 1000.0;
    if (reason != FINISH_REJECTED)
        metrics_batch(job_outcome(job), job->duration_ms / 1000.0);
    log_debug("batch %llu finished (%d), answer ready after %.1f ms",
              (unsigned long long)job->serial, (int)reason, job->duration_ms);
    if (job->on_finish != NULL)
        job->on_finish(job, job->finish_ctx);
}

static void *finisher_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&fin.lock);
        while (fin.head == NULL && fin.running) {
            fin.idle++;
            pthread_cond_wait(&fin.work, &fin.lock);
            fin.idle--;
        }
        struct job *job = fin.head;
        if (job != NULL) {
            fin.head = job->fin_next;
            if (fin.head == NULL)
                fin.tail = NULL;
            fin.queued--;
        }
        pthread_mutex_unlock(&fin.lock);
        if (job == NULL)
            return NULL; /* stopping, and nothing left to build */
        job->fin_next = NULL;
        job_answer(job);
        job_unref(job);
    }
}

/* Queues job for a finisher, starting one more when every finisher is busy
 * (up to FO_FINISHERS_MAX); 0 when no finisher can take it (not started,
 * stopped, no thread): the caller then builds it itself. */
static int hand_off(struct job *job)
{
    int taken = 0;

    pthread_mutex_lock(&fin.lock);
    if (fin.running) {
        job->fin_next = NULL;
        if (fin.tail != NULL)
            fin.tail->fin_next = job;
        else
            fin.head = job;
        fin.tail = job_ref(job);
        fin.queued++;
        taken = 1;
        if (fin.queued > (size_t)fin.idle && fin.nthreads < FO_FINISHERS_MAX &&
            pthread_create(&fin.tids[fin.nthreads], NULL, finisher_main, NULL) == 0)
            fin.nthreads++;
        else
            pthread_cond_signal(&fin.work);
        if (fin.nthreads == 0) {
            /* Not even one thread: take it back (it is the only one queued). */
            fin.head = fin.tail = NULL;
            fin.queued = 0;
            job_unref(job);
            taken = 0;
        }
    }
    pthread_mutex_unlock(&fin.lock);
    return taken;
}

fo_err job_finisher_start(void)
{
    const char *delay = getenv("FANOUTD_TEST_DEEP_BUILD_DELAY_MS");
    char *end = NULL;

    fin.test_delay_ms = 0;
    if (delay != NULL) {
        long ms = strtol(delay, &end, 10);
        if (end != delay && *end == '\0' && ms > 0 && ms <= 60000) {
            fin.test_delay_ms = ms;
            log_warn(
                "FANOUTD_TEST_DEEP_BUILD_DELAY_MS is set: every deep merge takes %ld ms "
                "longer (testing aid)",
                ms);
        }
    }
    pthread_mutex_lock(&fin.lock);
    fin.running = 1;
    pthread_mutex_unlock(&fin.lock);
    return FO_OK;
}

void job_finisher_stop(void)
{
    pthread_mutex_lock(&fin.lock);
    fin.running = 0;
    pthread_cond_broadcast(&fin.work);
    pthread_mutex_unlock(&fin.lock);
    /* No thread is started once running is 0; the finishers build what is
     * queued before they return. */
    for (int i = 0; i < fin.nthreads; i++)
        pthread_join(fin.tids[i], NULL);
    fin.nthreads = 0;
}

/* ---- finishing ------------------------------------------------------------ */

int job_set_hooks(struct job *job, const struct job_hooks *hooks)
{
    int set;

    pthread_mutex_lock(&job->lock);
    set = job->finished == FINISH_NONE;
    if (set) {
        job->hooks = *hooks;
        job->has_hooks = 1;
    }
    pthread_mutex_unlock(&job->lock);
    return set;
}

/* Runs the cancel hook if it has not run yet: once per job. */
static void cancel_once(struct job *job)
{
    struct job_hooks h;
    int run;

    pthread_mutex_lock(&job->lock);
    run = job->has_hooks && !job->cancelled && job->hooks.cancel != NULL;
    job->cancelled = 1;
    h = job->hooks;
    pthread_mutex_unlock(&job->lock);
    if (run)
        h.cancel(h.ctx);
}

void job_withdraw(struct job *job)
{
    cancel_once(job);
}

int job_finish(struct job *job, enum finish_reason reason)
{
    int64_t now = fo_now_us();

    pthread_mutex_lock(&job->lock);
    if (job->finished != FINISH_NONE) {
        pthread_mutex_unlock(&job->lock);
        return 0;
    }
    job->finished = reason;
    atomic_store(&job->stop, 1);
    if (reason != FINISH_DONE)
        fail_unfinished(job, reason, now);
    /* Running fetches stop now rather than at their next timer. Runners
     * live until the workers are joined, so waking one is always safe. */
    for (size_t i = 0; i < job->req.n && job->has_hooks && job->hooks.wake != NULL; i++) {
        if (job->runner[i] != NULL)
            job->hooks.wake(job->runner[i]);
    }
    pthread_mutex_unlock(&job->lock);

    /* No worker writes results any more; items still waiting are dropped. */
    cancel_once(job);
    for (size_t i = 0; i < job->req.n; i++)
        metrics_item(&job->results[i], job->results[i].duration_ms / 1000.0);
    /* The watcher (deadlines) and the shutdown path hand the building over;
     * a worker that ran the last item builds the document itself. */
    if ((reason == FINISH_DEADLINE || reason == FINISH_SHUTDOWN) && hand_off(job))
        return 1;
    job_answer(job);
    return 1;
}

/* ---- share: accessors for coalescing and the cache ---------------------- */

const struct item_req *job_item(const struct job *job, size_t i)
{
    return &job->req.items[i];
}

const _Atomic int *job_stop_flag(const struct job *job)
{
    return &job->stop;
}

/* ---- retries ---------------------------------------------------- */

/* The item's retry policy: its own "retry" members, else the config's. */
static void resolve_retry(struct item_req *it, const struct config *cfg)
{
    if (!(it->retry_given & ITEM_RETRY_MAX))
        it->retry_max = cfg->retries;
    if (!(it->retry_given & ITEM_RETRY_BACKOFF))
        it->retry_backoff_ms = cfg->retry_backoff_ms;
    it->retry_given = ITEM_RETRY_MAX | ITEM_RETRY_BACKOFF;
}

/* "attempts" goes in the item's RESULT whenever it allowed retries. Lock held. */
static void show_attempts(const struct job *job, size_t i, struct result *r)
{
    r->show_attempts = job->req.items[i].retry_max > 0;
    r->attempts = job->attempts[i];
}

/* What is left of item i's own timeout, which started with its first
 * attempt (all of it before that); at least 1 ms. */
static long item_time_left(struct job *job, size_t i)
{
    long timeout_ms = job->req.items[i].timeout_ms, left;
    int64_t first;

    pthread_mutex_lock(&job->lock);
    first = job->first_us[i];
    pthread_mutex_unlock(&job->lock);
    if (first == 0)
        return timeout_ms;
    left = timeout_ms - (long)((fo_now_us() - first) / 1000);
    return left > 0 ? left : 1;
}

void job_item_attempt(struct job *job, size_t i, struct job_attempt *out)
{
    int64_t now = fo_now_us();

    pthread_mutex_lock(&job->lock);
    if (job->attempts[i]++ == 0)
        job->first_us[i] = now;
    out->number = job->attempts[i];
    out->first_us = job->first_us[i];
    out->end_us = job->first_us[i] + (int64_t)job->req.items[i].timeout_ms * 1000;
    pthread_mutex_unlock(&job->lock);
}

int job_retry_item(struct job *job, size_t i, struct result *res)
{
    int kept;

    pthread_mutex_lock(&job->lock);
    job->runner[i] = NULL;
    kept = job->finished == FINISH_NONE && job->state[i] == ITEM_RUNNING;
    if (kept) {
        result_clear(&job->results[i]);
        job->results[i] = *res;
        memset(res, 0, sizeof(*res));
        job->state[i] = ITEM_QUEUED;
    }
    pthread_mutex_unlock(&job->lock);
    result_clear(res); /* the job has finished: dropped */
    return kept;
}

int job_take_last(struct job *job, size_t i, struct result *out)
{
    int had;

    pthread_mutex_lock(&job->lock);
    had = job->finished == FINISH_NONE && job->state[i] != ITEM_DONE && job->attempts[i] > 0;
    if (had) {
        *out = job->results[i];
        memset(&job->results[i], 0, sizeof(job->results[i]));
    }
    pthread_mutex_unlock(&job->lock);
    return had;
}

/* ---- streaming ------------------------------------------------------------ */

fo_err job_set_stream(struct job *job, int gzip, struct answer_stream **out)
{
    fo_err err = answer_stream_init(&job->stream, job->req.n, job->arrival_us,
                                    (size_t)job->cfg->max_answer_bytes,
                                    job->cfg->stream_heartbeat_ms, gzip);

    *out = NULL;
    if (err != FO_OK)
        return err;
    job->streaming = 1;
    *out = &job->stream;
    return FO_OK;
}

/* ---- composition ------------------------------------------------ */

int job_prepare_item(struct job *job, size_t i, struct result *res)
{
    const struct compose_item *c = job->req.items[i].compose;
    struct compose_run run;
    int r;

    if (c == NULL || !c->has_deps)
        return 1;
    if (fo_now_us() >= job->deadline_us) {
        /* as fetch_run says for any item that starts too late */
        result_fail(res, ERR_DEADLINE, "the batch deadline passed before the item started");
        return 0;
    }
    if (job->runs == NULL) { /* made by job_new */
        result_fail(res, ERR_UPSTREAM, "out of memory");
        return 0;
    }
    /* The dependencies are done: their results are no longer written. */
    /* A substituted body: at most what a batch and one upstream body can hold. */
    r = compose_prepare(&job->req, i, job->results,
                        (size_t)job->cfg->max_body_bytes + (size_t)job->cfg->max_response_bytes,
                        &run, res);
    if (r < 0) {
        result_fail(res, ERR_UPSTREAM, "out of memory");
        return 0;
    }
    compose_run_free(&job->runs[i]);
    if (r > 0)
        job->runs[i] = run;
    return r;
}

void job_release_item(struct job *job, size_t i)
{
    if (job->runs != NULL)
        compose_run_free(&job->runs[i]);
}

void job_deps(const struct job *job, const uint32_t **start, const uint32_t **list)
{
    *start = job->req.dep_start;
    *list = job->req.dep_list;
}

/* Item i with its resolved header lines (a shallow copy in *copy). */
static const struct item_req *job_item_resolved(const struct job *job, size_t i,
                                                struct item_req *copy)
{
    *copy = job->req.items[i];
    copy->headers = job->runs[i].headers;
    copy->nheaders = job->runs[i].nheaders;
    return copy;
}

/* The resolved url and body, and the response headers to keep. */
static void job_request_compose(const struct job *job, size_t i, struct fetch_req *out)
{
    const struct compose_item *c = job->req.items[i].compose;
    const struct compose_run *run = job->runs != NULL ? &job->runs[i] : NULL;

    if (c == NULL)
        return;
    if (run != NULL && run->url != NULL) {
        out->url = run->url;
        out->url_templated = 1;
    }
    if (run != NULL && run->body != NULL) {
        out->body = run->body;
        out->body_len = run->body_len;
    }
    out->keep_headers = (const char *const *)c->keep;
    out->nkeep_headers = c->nkeep;
}
