/*
 * queue.c - the worker pool, and the glue between jobs, the scheduler and
 * the fetcher (see queue.h).
 *
 *   front end --queue_push--> sched_submit(job's items as tasks, item_ops)
 *                                  |
 *   worker: sched_next --> item_run: job_begin_item -> job_request ->
 *           fetch_run -> job_complete_item --> sched_done
 *
 * This is the one module that knows jobs, the scheduler and the fetcher
 * together: job.c stops the work through the hooks registered here
 * (struct job_hooks), the scheduler sees a job only as an opaque context
 * with ops (struct sched_ops), and the fetcher sees one struct fetch_req.
 */
#include "queue.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "fetch.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "scheduler.h"

struct worker {
    pthread_t tid;
    struct fetcher *fetcher;
};

/* Set by queue_start on the main thread before any worker starts, and
 * read-only after (queue_stop joins the workers, then frees their array). */
static struct pool {
    struct sched *sched;
    struct worker *workers;
    long nworkers;
    /* Testing aid (FANOUTD_TEST_WEDGE_WORKERS set at start): workers never
     * take work, so the watchdog's stall detection can be shown. */
    int wedge;
} pool;

/* ---- a job's items as the scheduler's tasks ------------------------------ */

static const char *item_dest(void *ctx, size_t i)
{
    return job_item_dest(ctx, i);
}

/* Runs item t->index of the job on this worker's fetcher. Always done in
 * v1 (0); a retried attempt (v2) returns when it may run again. */
static int64_t item_run(void *ctx, const struct sched_task *t, void *worker)
{
    struct job *job = ctx;
    struct fetcher *f = worker;
    struct result res = { 0 };
    struct fetch_req fr;

    fetch_prepare(f, job_config(job)->generation);
    if (!job_begin_item(job, t->index, f))
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
        fetch_run(f, &fr, &res);
        fetch_req_free(&fr);
    }
    METRIC_ADD(workers_busy, -1);
    job_complete_item(job, t->index, &res);
    return 0;
}

static void item_release(void *ctx)
{
    job_unref(ctx); /* the reference queue_push gave the scheduler */
}

static const struct sched_ops item_ops = {
    .dest = item_dest,
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
    fetch_wake(runner);
}

/* ---- the workers ------------------------------------------------------------ */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct sched_task t;

    while (sched_next(pool.sched, &t)) {
        if (t.resolve && !sched_resolve(pool.sched, &t))
            continue; /* waits behind its destination's limit */
        int64_t again = sched_run(&t, w->fetcher);
        if (again != 0)
            sched_retry(pool.sched, &t, again);
        else
            sched_done(pool.sched, &t);
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

fo_err queue_start(long workers, struct fetch_env *env)
{
    pthread_attr_t attr;
    fo_err err;

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
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, FO_WORKER_STACK);
    for (long i = 0; i < workers; i++) {
        struct worker *w = &pool.workers[i];
        if ((w->fetcher = fetcher_new(env)) == NULL) {
            err = FO_ENOMEM;
            break;
        }
        if (pthread_create(&w->tid, &attr, pool.wedge ? wedged_main : worker_main, w) != 0) {
            fetcher_free(w->fetcher);
            log_error("cannot start worker %ld of %ld", i + 1, workers);
            err = FO_ESYS;
            break;
        }
        pool.nworkers++;
    }
    pthread_attr_destroy(&attr);
    METRIC_SET(workers, pool.nworkers);
    if (err != FO_OK)
        queue_stop();
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
    for (long i = 0; i < pool.nworkers; i++) {
        pthread_join(pool.workers[i].tid, NULL);
        fetcher_free(pool.workers[i].fetcher);
    }
    FO_FREE(pool.workers);
    pool.nworkers = 0;
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
