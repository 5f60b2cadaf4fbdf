/*
 * queue.c - the worker pool, and the glue between jobs, the scheduler and
 * the fetcher (see queue.h).
 *
 *   front end --queue_push--> sched_submit(job's items as tasks, item_ops)
 *                                  |
 *   worker: sched_next --> item_run: job_begin_item -> job_request ->
 *           fetch_run -> job_complete_item --> (the next) sched_next
 *
 * This is the one module that knows jobs, the scheduler and the fetcher
 * together: job.c stops the work through the hooks registered here
 * (struct job_hooks), the scheduler sees a job only as an opaque context
 * with ops (struct sched_ops), and the fetcher sees one struct fetch_req.
 */
#include "queue.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "breaker.h"
#include "fetch.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "rate.h"
#include "retry.h"
#include "scheduler.h"
#include "share.h"

/* A worker slot: its thread, its fetcher, and what it leads or rides of a
 * shared fetch (share.h). The job's runner for its items is the worker. */
struct worker {
    pthread_t tid;
    enum { SLOT_FREE, SLOT_RUNNING, SLOT_EXITED } state; /* EXITED: to be joined */
    void *stack; /* its stack and guard page (FO_WORKER_STACK + one page), mmapped
                    here and unmapped when the thread is joined: glibc would keep
                    the stacks of exited threads (up to 40 MiB) for reuse */
    struct fetcher *fetcher;
    struct share_slot share;
    struct sched_task first; /* the task it was started for (has_first) */
    int has_first;
};

/*
 * The pool is elastic: it starts FO_WORKERS_FLOOR threads (or `workers`,
 * if fewer), starts another for each item that can run now when no worker
 * is idle (the scheduler's grow hook hands it that item), up to `workers`,
 * and lets a worker go when it has had nothing to do for FO_WORKER_IDLE_MS
 * while more than the floor run (the scheduler may then start one more).
 * So a large `workers` costs nothing at idle; a burst after a quiet spell
 * pays for the threads it starts (about 30 us each).
 */
static struct pool {
    struct sched *sched; /* set by queue_start before any worker starts */
    struct fetch_env *env;
    pthread_mutex_t lock;   /* guards the fields below and every slot's state */
    struct worker *workers; /* `max` slots */
    long max, floor;
    long nthreads;   /* slots RUNNING (threads not yet retired) */
    int64_t idle_us; /* FO_WORKER_IDLE_MS, or the testing aid's value */
    int grow_failed; /* a worker could not be started (logged once) */
    int stopping;
    /* Testing aid (FANOUTD_TEST_WEDGE_WORKERS set at start): workers never
     * take work, so the watchdog's stall detection can be shown. */
    int wedge;
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- a job's items as the scheduler's tasks ------------------------------ */

static const char *item_dest(void *ctx, size_t i)
{
    return job_item_dest(ctx, i);
}

/* ---- share: the cache and coalescing around one fetch ------------------- */

static void wake_fetcher(void *f)
{
    fetch_wake(f);
}

/* The fetch of a rider whose own limit passed, or whose batch stopped,
 * before the shared result came. */
static void ride_failed(struct job *job, const struct fetch_req *fr, struct result *res)
{
    if (job_stopped(job))
        result_fail(res, ERR_CANCELLED, "the batch finished while waiting for an identical fetch");
    else if (fr->deadline_us != 0 && fo_now_us() >= fr->deadline_us)
        result_fail(res, ERR_DEADLINE,
                    "the batch deadline passed while waiting for an "
                    "identical fetch");
    else
        result_fail(res, ERR_TIMEOUT,
                    "no complete response within %ld ms (waiting for an "
                    "identical fetch)",
                    fr->timeout_ms);
}

/*
 * Fetches item i's request fr into res, through the cache and coalescing
 * when they are on for the item (share.h): a fresh kept answer is a "hit"
 * at once, with no connection; an identical fetch in flight is ridden
 * ("coalesced"); else the item fetches ("miss"), as the leader of a shared
 * fetch when coalescing is on, and a 200 GET answer is kept when the cache
 * is on. With both off this is fetch_run.
 */
static void item_fetch(struct job *job, size_t i, struct worker *w, const struct fetch_req *fr,
                       struct result *res)
{
    const struct config *cfg = job_config(job);
    const struct item_req *it = job_item(job, i);
    int coalesce = cfg->coalesce && !it->no_coalesce;
    int cache_on = cfg->cache_ttl_ms > 0 && !it->no_cache; /* the item gets "cache" */
    int cache = cache_on && fr->method == M_GET;           /* only GET answers are kept */
    int64_t start = fo_now_us();
    int64_t own_limit = start + (int64_t)fr->timeout_ms * 1000;
    int64_t limit = fr->deadline_us != 0 && fr->deadline_us < own_limit ? fr->deadline_us
                                                                        : own_limit;
    const _Atomic int *stop = NULL;
    enum share_role role = SHARE_LEAD;
    char *key = NULL, *cache_key = NULL;

    if (!coalesce && !cache) {
        fetch_run(w->fetcher, fr, res);
        if (cache_on)
            goto miss;
        return;
    }
    if (share_key(fr, cfg->generation, &key) != FO_OK)
        key = NULL; /* out of memory: fetched alone */
    if (key != NULL && cache && share_cache_get(key, start, res)) {
        free(key);
        res->cache = "hit";
        res->duration_ms = (double)(fo_now_us() - start) / 1000.0;
        METRIC_ADD(cache_hits, 1);
        return;
    }
    if (key != NULL && cache && (cache_key = strdup(key)) == NULL) {
        free(key);
        key = NULL;
    }
    if (key == NULL || !coalesce) {
        free(key);
        fetch_run(w->fetcher, fr, res);
        goto miss;
    }
    /* share_join takes the key, also when it fails */
    if (share_join(key, &w->share, wake_fetcher, w->fetcher, &stop, &role) != FO_OK) {
        fetch_run(w->fetcher, fr, res);
        goto miss;
    }
    if (role == SHARE_RIDE) {
        int got = share_ride(&w->share, limit, job_stop_flag(job), wake_fetcher, w->fetcher,
                             &stop, res);
        if (got != 2) {
            if (got == 0)
                ride_failed(job, fr, res);
            res->cache = "coalesced";
            res->duration_ms = (double)(fo_now_us() - start) / 1000.0;
            METRIC_ADD(coalesced, 1);
            free(cache_key);
            return;
        }
        /* handed over: this item now leads */
    }
    /* The leader's fetch is the shared one: its own batch stopping (client
     * gone, deadline, policy) does not end it while riders wait (share.c
     * sets *stop once nobody does), and it runs under the leader's own
     * timeout only (the job answers its batch deadline). */
    struct fetch_req shared = *fr;
    shared.stop = stop;
    shared.deadline_us = 0;
    shared.answer_left = NULL; /* each item's answer cap is checked on completion */
    shared.timeout_ms = (long)((own_limit - fo_now_us()) / 1000);
    if (shared.timeout_ms <= 0)
        shared.timeout_ms = 1;
    fetch_run(w->fetcher, &shared, res);
    /* Into the cache before the fetch leaves the in-flight table: an
     * identical item arriving in between would otherwise find neither. */
    if (cache_key != NULL)
        share_cache_put(cache_key, res, fo_now_us(), cfg->cache_ttl_ms, cfg->cache_max_bytes);
    FO_FREE(cache_key);
    share_lead_done(&w->share, res, res->error == ERR_TIMEOUT);
miss:
    if (cache_key != NULL)
        share_cache_put(cache_key, res, fo_now_us(), cfg->cache_ttl_ms, cfg->cache_max_bytes);
    free(cache_key);
    res->cache = "miss";
    METRIC_ADD(cache_misses, 1);
}

/* A shared answer (a cache hit, a ridden fetch) carries the effective_url
 * of the item that fetched it: this item's own is the fetched URL only when
 * it was redirected, else its own substituted url, or none. */
static void own_effective_url(const struct fetch_req *fr, struct result *res)
{
    if (res->redirected || (res->effective_url == NULL && !fr->url_templated))
        return;
    FO_FREE(res->effective_url);
    if (fr->url_templated)
        res->effective_url = strdup(fr->url); /* left out for want of memory */
}

static int64_t attempt(struct job *job, const struct sched_task *t, struct worker *w,
                       struct fetch_req *fr, struct result *res);

/* Runs item t->index of the job on this worker: 0 when it is done, or the
 * time before which its retry must not start (it then waits in the
 * scheduler, holding no worker). */
static int64_t item_run(void *ctx, const struct sched_task *t, void *worker)
{
    struct job *job = ctx;
    struct worker *w = worker;
    struct fetcher *f = w->fetcher;
    const struct config *cfg = job_config(job);
    struct result res = { 0 };
    struct fetch_req fr;
    int64_t again = 0;

    fetch_prepare(f, cfg->generation);
    job_item_runnable(job, t->index, t->runnable_us);
    int64_t begin = fo_now_us();
    if (!job_begin_item(job, t->index, w))
        return 0; /* finished, or its client has gone */
    METRIC_ADD(workers_busy, 1);
    if (!job_prepare_item(job, t->index, &res)) {
        /* not fetched: failed_dependency or an invalid substituted url */
    } else if (job_request(job, t->index, &fr) != FO_OK) {
        result_fail(&res, ERR_UPSTREAM, "out of memory");
    } else {
        if (t->pin != NULL) {
            fr.pin_hostport = t->dest;
            fr.pin_addr = t->pin;
        }
        /* share: injected headers and sensitive_headers (hop_headers) */
        fr.inject = cfg->inject;
        fr.ninject = cfg->ninject;
        fr.sensitive = cfg->sensitive_headers.v;
        fr.nsensitive = cfg->sensitive_headers.n;
        again = attempt(job, t, w, &fr, &res);
        fetch_req_free(&fr);
    }
    job_release_item(job, t->index); /* its substituted url, headers and body */
    /* v2 timings: the wait from runnable to this worker (written when asked). */
    res.queue_ms = begin > t->runnable_us ? (double)(begin - t->runnable_us) / 1000.0 : 0;
    METRIC_ADD(workers_busy, -1);
    if (again == 0)
        job_complete_item(job, t->index, &res);
    return again;
}

/* ---- retries, circuit breaker, rate ------------------------------ */

/* per_host_rate: asked (scheduler lock held) when item i reaches the front:
 * a token of its host:port's bucket, or the time to ask again; it waits on
 * the scheduler's timer meanwhile, holding no worker. */
/* Whether the cache would answer item i now: a GET with the cache on for
 * it, whose key (share_key of the request job_request builds) is fresh. */
static int item_cache_fresh(struct job *job, size_t i, int64_t now_us)
{
    const struct config *cfg = job_config(job);
    const struct item_req *it = job_item(job, i);
    struct fetch_req fr;
    char *key = NULL;
    int fresh = 0;

    if (cfg->cache_ttl_ms <= 0 || it->no_cache || it->method != M_GET)
        return 0;
    if (job_request(job, i, &fr) != FO_OK)
        return 0; /* out of memory: rate-limited like any item */
    if (share_key(&fr, cfg->generation, &key) == FO_OK && key != NULL)
        fresh = share_cache_fresh(key, now_us);
    free(key);
    fetch_req_free(&fr);
    return fresh;
}

static int64_t item_not_before(void *ctx, size_t i, int64_t now_us)
{
    struct job *job = ctx;
    const struct config *cfg = job_config(job);
    const char *dest = job_item_dest(job, i);

    if (cfg->per_host_rate <= 0 || dest == NULL)
        return 0;
    if (item_cache_fresh(job, i, now_us))
        return 0; /* a cache hit is never rate-limited: it makes no request */
    if (cfg->breaker_failures > 0 && breaker_refuses(dest, now_us))
        return 0; /* refused at once by its breaker: no token */
    return rate_take(dest, cfg->per_host_rate, now_us);
}

/* fetch_req.hop_done: every hop of every attempt counts against the
 * breaker of its own host:port. ctx: the job's config. */
static void hop_done(void *ctx, const char *hostport, enum fetch_hop_outcome o)
{
    const struct config *cfg = ctx;

    breaker_hop(hostport, o, cfg->breaker_failures, cfg->breaker_open_ms, fo_now_us());
}

/* When the attempt that ended as res may be tried again: 0 for never (it
 * may not be retried, none is left, or the wait would pass the item's own
 * timeout or the batch deadline: res is the result). */
static int64_t retry_at(const struct fetch_req *fr, const struct result *res,
                        const struct job_attempt *a)
{
    int64_t wait_ms, when;

    if (a->number > fr->retry.attempts || !retry_wanted(fr->method, res))
        return 0;
    if (res->has_retry_after)
        wait_ms = res->retry_after_ms; /* as given, not capped */
    else
        wait_ms = retry_backoff_ms(a->number, fr->retry.backoff_ms, fr->retry.max_backoff_ms,
                                   retry_random());
    when = fo_now_us() + wait_ms * 1000;
    if (when >= a->end_us || (fr->deadline_us != 0 && when >= fr->deadline_us))
        return 0;
    return when > 0 ? when : 1;
}

/* One attempt of the item: its breaker asked first (an item refused makes
 * no connection), then the fetch. Returns 0 with res the item's result, or
 * the time its retry may start (res then kept by the job). */
static int64_t attempt(struct job *job, const struct sched_task *t, struct worker *w,
                       struct fetch_req *fr, struct result *res)
{
    const struct config *cfg = job_config(job);
    const char *dest = job_item_dest(job, t->index);
    enum breaker_verdict v = BREAKER_PASS;
    struct job_attempt a;
    int64_t when;

    if (cfg->breaker_failures > 0 && dest != NULL) {
        v = breaker_check(dest, fo_now_us());
        if (v == BREAKER_REFUSE) {
            /* A retry refused: the last answer stays the result. */
            if (!job_take_last(job, t->index, res))
                result_fail(
                    res, ERR_CIRCUIT_OPEN,
                    "the circuit breaker of %.200s is open (or half-open with its one trial "
                    "running) after %ld consecutive failures; not fetched",
                    dest, cfg->breaker_failures);
            return 0;
        }
        fr->hop_done = hop_done;
        fr->hop_ctx = (void *)cfg;
    }
    if (fr->deadline_us != 0 && fr->deadline_us - fo_now_us() < 1000) { /* as fetch_run */
        /* Not started: the item keeps "attempts" as they were. */
        result_fail(res, ERR_DEADLINE, "the batch deadline passed before the item started");
        return 0;
    }
    job_item_attempt(job, t->index, &a);
    item_fetch(job, t->index, w, fr, res);
    own_effective_url(fr, res);
    for (long k = 0; k < res->resent; k++)
        job_item_attempt(job, t->index, &a); /* libcurl's own re-sends count too */
    if (v == BREAKER_TRIAL)
        breaker_trial_done(dest);
    if (a.number > 1)
        res->duration_ms = (double)(fo_now_us() - a.first_us) / 1000.0;
    when = retry_at(fr, res, &a);
    if (when == 0 || job_stopped(job))
        return 0;
    if (!job_retry_item(job, t->index, res))
        return 0; /* finished meanwhile: res was dropped, nothing more runs */
    return when;
}

static void item_release(void *ctx)
{
    job_unref(ctx); /* the reference queue_push gave the scheduler */
}

static const struct sched_ops item_ops = {
    .dest = item_dest,
    .not_before = item_not_before,
    .run = item_run,
    .release = item_release,
};

/* The job's hooks: its waiting items leave the scheduler; a running item's
 * fetcher is woken to see the job's stop flag. */
static void job_cancel_hook(void *ctx)
{
    sched_cancel(pool.sched, ctx);
}

static void job_wake_hook(void *runner)
{
    struct worker *w = runner;

    share_wake(&w->share); /* a rider stops waiting; a leader's fetch goes on for riders */
    fetch_wake(w->fetcher);
}

/* ---- the workers ------------------------------------------------------------ */

#define STACK_GUARD 4096
/* Under ThreadSanitizer a thread's static TLS (its per-thread state) does
 * not fit beside a FO_WORKER_STACK stack: glibc then allocates the stacks. */
#if defined(__SANITIZE_THREAD__)
#define POOL_STACKS 0
#else
#define POOL_STACKS 1
#endif

/* Joins the thread of an EXITED slot (it has left sched_next, so at once)
 * and unmaps its stack. pool.lock held. */
static void slot_reap(struct worker *w)
{
    pthread_join(w->tid, NULL);
    if (w->stack != NULL)
        munmap(w->stack, FO_WORKER_STACK + STACK_GUARD);
    w->stack = NULL;
    w->state = SLOT_FREE;
}

/* A worker leaves: idle too long with more than the floor running. 1 when
 * it may go (its slot is then EXITED: the next worker to leave, the next
 * start or queue_stop joins it). The last to leave, at the floor, gives
 * the heap's free pages back to the kernel. */
static int worker_retire(struct worker *w, int *last)
{
    int go;

    pthread_mutex_lock(&pool.lock);
    go = pool.nthreads > pool.floor && !pool.stopping;
    if (go) {
        for (long i = 0; i < pool.max; i++) {
            if (pool.workers[i].state == SLOT_EXITED)
                slot_reap(&pool.workers[i]);
        }
        pool.nthreads--;
        w->state = SLOT_EXITED;
        *last = pool.nthreads == pool.floor;
        METRIC_SET(workers, pool.nthreads);
    }
    pthread_mutex_unlock(&pool.lock);
    if (go)
        sched_spare(pool.sched, 1);
    return go;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct sched_task t, done;
    int have_done = 0, got, last = 0;

    /* Named for ps -L and top -H: a worker started by the pool's growth
     * would otherwise carry the name of the front-end thread that started it. */
    (void)pthread_setname_np(pthread_self(), "fanoutd-worker");
    /* The task just run is ended by the next sched_next, in the same hold
     * of the scheduler's lock that takes the next one. */
    for (;;) {
        if (w->has_first) {
            t = w->first; /* the task the worker was started for */
            w->has_first = 0;
            got = 1;
        } else {
            got = sched_next(pool.sched, have_done ? &done : NULL, &t, pool.idle_us);
        }
        have_done = 0;
        if (got == 0)
            break;
        if (got < 0) {
            if (worker_retire(w, &last))
                break;
            continue;
        }
        if (t.resolve && !sched_resolve(pool.sched, &t))
            continue; /* waits behind its destination's limit */
        int64_t again = sched_run(&t, w);
        if (again != 0) {
            sched_retry(pool.sched, &t, again);
        } else {
            done = t;
            have_done = 1;
        }
    }
    /* Its keep-alive connections close with it; a retired worker's fetcher
     * goes now, a stopped one's at queue_stop. */
    if (got < 0) {
        fetcher_free(w->fetcher);
        w->fetcher = NULL;
        if (last)
            malloc_trim(0); /* the leavers' connection buffers, in every arena */
    }
    return NULL;
}

/* The wedged workers' wait: they hold no task and leave at queue_stop. */
static pthread_mutex_t wedge_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wedge_cond = PTHREAD_COND_INITIALIZER;
static int wedge_stop;

static void *wedged_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&wedge_lock);
    while (!wedge_stop)
        pthread_cond_wait(&wedge_cond, &wedge_lock);
    pthread_mutex_unlock(&wedge_lock);
    return NULL;
}

/* Starts one worker in a free slot, with first as its first task (or
 * none). pool.lock held. */
static fo_err worker_start(const struct sched_task *first)
{
    struct worker *w = NULL;
    pthread_attr_t attr;
    int rc;

    for (long i = 0; i < pool.max && w == NULL; i++) {
        if (pool.workers[i].state != SLOT_RUNNING)
            w = &pool.workers[i];
    }
    if (w == NULL)
        return FO_EFULL;
    if (w->state == SLOT_EXITED)
        slot_reap(w);
    if ((w->fetcher = fetcher_new(pool.env)) == NULL)
        return FO_ENOMEM;
    memset(&w->share, 0, sizeof(w->share));
    w->has_first = first != NULL;
    if (first != NULL)
        w->first = *first;
    pthread_attr_init(&attr);
    w->stack = POOL_STACKS ? mmap(NULL, FO_WORKER_STACK + STACK_GUARD, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0)
                           : MAP_FAILED;
    if (w->stack != MAP_FAILED) {
        (void)mprotect(w->stack, STACK_GUARD, PROT_NONE); /* stacks grow down */
        pthread_attr_setstack(&attr, (char *)w->stack + STACK_GUARD, FO_WORKER_STACK);
    } else {
        w->stack = NULL; /* glibc's own, of the same size */
        pthread_attr_setstacksize(&attr, FO_WORKER_STACK);
    }
    rc = pthread_create(&w->tid, &attr, pool.wedge ? wedged_main : worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        fetcher_free(w->fetcher);
        w->fetcher = NULL;
        if (w->stack != NULL)
            munmap(w->stack, FO_WORKER_STACK + STACK_GUARD);
        w->stack = NULL;
        return FO_ESYS;
    }
    w->state = SLOT_RUNNING;
    pool.nthreads++;
    METRIC_SET(workers, pool.nthreads);
    return FO_OK;
}

/* The scheduler's grow hook: a worker for first, a task taken for it. One
 * that cannot start gives the task back (to run on a worker that frees up)
 * and its place in the pool is not asked for again. */
static void pool_grow(void *ctx, struct sched_task *first)
{
    fo_err err = FO_ESTOPPED;

    (void)ctx;
    pthread_mutex_lock(&pool.lock);
    if (!pool.stopping && pool.nthreads < pool.max)
        err = worker_start(first);
    if (err != FO_OK && !pool.grow_failed) {
        pool.grow_failed = 1;
        if (err != FO_ESTOPPED)
            log_warn("cannot start worker %ld of %ld (%s); the %ld running take the work",
                     pool.nthreads + 1, pool.max, fo_strerror(err), pool.nthreads);
    }
    pthread_mutex_unlock(&pool.lock);
    if (err != FO_OK)
        sched_retry(pool.sched, first, 0);
}

fo_err queue_start(long workers, struct fetch_env *env)
{
    fo_err err = FO_OK;

    pool.wedge = getenv("FANOUTD_TEST_WEDGE_WORKERS") != NULL;
    if (pool.wedge)
        log_warn("FANOUTD_TEST_WEDGE_WORKERS is set: workers will take no work (testing aid)");
    if ((err = sched_new(&pool.sched)) != FO_OK)
        return err;
    pool.workers = calloc((size_t)workers, sizeof(*pool.workers));
    if (pool.workers == NULL) {
        queue_stop();
        return FO_ENOMEM;
    }
    pool.env = env;
    pool.max = workers;
    /* Testing aid: FANOUTD_TEST_WORKER_IDLE_MS, so that a test need not
     * wait FO_WORKER_IDLE_MS to see the pool shrink. */
    const char *idle = getenv("FANOUTD_TEST_WORKER_IDLE_MS");
    long long idle_ms = FO_WORKER_IDLE_MS;
    if (idle != NULL && fo_parse_num(idle, 1, FO_WORKER_IDLE_MS, &idle_ms) != FO_OK) {
        log_warn("FANOUTD_TEST_WORKER_IDLE_MS='%.40s' is not 1-%d; workers idle %d ms", idle,
                 FO_WORKER_IDLE_MS, FO_WORKER_IDLE_MS);
        idle_ms = FO_WORKER_IDLE_MS;
    }
    pool.idle_us = (int64_t)idle_ms * 1000;
    /* Wedged (a testing aid), all of them, as none will ever be idle. */
    pool.floor = pool.wedge || workers < FO_WORKERS_FLOOR ? workers : FO_WORKERS_FLOOR;
    if (!pool.wedge) /* before any worker starts: read without a lock */
        sched_set_grow(pool.sched, pool_grow, NULL, pool.max - pool.floor);
    pthread_mutex_lock(&pool.lock);
    while (pool.nthreads < pool.floor && (err = worker_start(NULL)) == FO_OK)
        ;
    pthread_mutex_unlock(&pool.lock);
    if (err != FO_OK) {
        log_error("cannot start worker %ld of %ld", pool.nthreads + 1, pool.floor);
        queue_stop();
    }
    return err;
}

fo_err queue_push(struct job *job, long capacity)
{
    const struct config *cfg = job_config(job);
    struct sched_batch_desc d = {
        .ops = &item_ops,
        .ctx = job,
        .n = job_items(job),
        .per_host_limit = cfg->per_host_limit,
        .max_concurrency = job_max_concurrency(job),
    };
    struct job_hooks hooks = { .cancel = job_cancel_hook, .wake = job_wake_hook };
    struct sched_batch *b;
    fo_err err;

    job_deps(job, &d.dep_start, &d.dep_list);
    job_ref(job);
    if ((err = sched_submit(pool.sched, &d, capacity, &b)) != FO_OK) {
        job_unref(job);
        return err == FO_EINVAL ? FO_ENOMEM : err;
    }
    hooks.ctx = b;
    if (!job_set_hooks(job, &hooks))
        sched_cancel(pool.sched, b); /* it finished meanwhile */
    return FO_OK;
}

void queue_close(void)
{
    if (pool.sched != NULL)
        sched_close(pool.sched);
}

void queue_stop(void)
{
    if (pool.sched != NULL)
        sched_stop(pool.sched);
    pthread_mutex_lock(&wedge_lock);
    wedge_stop = 1;
    pthread_cond_broadcast(&wedge_cond);
    pthread_mutex_unlock(&wedge_lock);
    /* No worker starts from now on; those running leave sched_next. */
    pthread_mutex_lock(&pool.lock);
    pool.stopping = 1;
    pthread_mutex_unlock(&pool.lock);
    for (long i = 0; i < pool.max; i++) {
        struct worker *w = &pool.workers[i];
        if (w->state == SLOT_FREE)
            continue;
        w->state = SLOT_EXITED; /* sched_stop has sent it out of sched_next */
        slot_reap(w);
        fetcher_free(w->fetcher); /* NULL for a retired worker */
        w->fetcher = NULL;
    }
    FO_FREE(pool.workers);
    pool.max = pool.nthreads = 0;
    share_cache_clear();
    /* The scheduler stays: the front end may still offer a batch until it
     * stops (refused: FO_ESTOPPED), and a job may still end its
     * registration. It lives as long as the process. */
}

long queue_depth(void)
{
    return pool.sched != NULL ? sched_depth(pool.sched) : 0;
}

int queue_stalled(int64_t now_us, int64_t stall_us)
{
    return pool.sched != NULL && sched_stalled(pool.sched, now_us, stall_us);
}
