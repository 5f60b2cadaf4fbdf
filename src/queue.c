/*
 * queue.c - the work queue and the worker threads (see queue.h).
 *
 *   front end --queue_push--> [ring of jobs with waiting items] --take--> worker
 *                                                                  |
 *                       job_complete_item(job, i, result) <--fetch-+
 *
 * Locking: q.lock guards everything in struct queue_state and the queue
 * fields of every job (pending, npending, ring links). It is never held
 * while a job's own lock is taken, nor during a fetch.
 */
#include "queue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "fetch.h"
#include "job.h"
#include "log.h"
#include "metrics.h"

struct host_count {
    char *key;     /* "host:port", owned */
    long running;
};

struct worker {
    pthread_t tid;
    struct fetcher *fetcher;
};

/* One task handed to a worker. */
struct task {
    struct job *job;       /* a reference owned by the worker */
    size_t index;
    int counted;           /* counted against per_host_limit */
};

static struct queue_state {
    pthread_mutex_t lock;      /* guards every field below */
    pthread_cond_t work;       /* signalled when an item may be taken */
    struct job *head;          /* the ring; head is served next */
    long depth;                /* items waiting, over all jobs */
    int closed;                /* no new jobs (draining) */
    int stopping;              /* workers exit */
    struct host_count *hosts;  /* running fetches per host, with per_host_limit */
    size_t nhosts;
    struct worker *workers;
    long nworkers;
    /* Liveness: since when work has waited with no worker coming for it
     * (0: a worker was free or took work since). Set by push, cleared or
     * restarted whenever a worker asks for work. */
    int64_t waiting_since_us;
} q = { .lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER };

/* Testing aid (FANOUTD_TEST_WEDGE_WORKERS set at start): workers never take
 * work, so the watchdog's stall detection can be shown. Read-only after
 * queue_start. */
static int wedge_workers;

static void ring_unlink(struct job *job)
{
    if (job->rr_next == job) {
        q.head = NULL;
    } else {
        job->rr_prev->rr_next = job->rr_next;
        job->rr_next->rr_prev = job->rr_prev;
        if (q.head == job)
            q.head = job->rr_next;
    }
    job->rr_next = job->rr_prev = NULL;
    job->in_ring = 0;
}

static void ring_append(struct job *job)
{
    if (q.head == NULL) {
        job->rr_next = job->rr_prev = job;
        q.head = job;
    } else {
        job->rr_prev = q.head->rr_prev;
        job->rr_next = q.head;
        q.head->rr_prev->rr_next = job;
        q.head->rr_prev = job;
    }
    job->in_ring = 1;
}

static struct host_count *host_find(const char *key, int create)
{
    for (size_t i = 0; i < q.nhosts; i++) {
        if (strcmp(q.hosts[i].key, key) == 0)
            return &q.hosts[i];
    }
    if (!create)
        return NULL;
    struct host_count *h = realloc(q.hosts, (q.nhosts + 1) * sizeof(*h));
    if (h == NULL)
        return NULL;
    q.hosts = h;
    h = &q.hosts[q.nhosts];
    if ((h->key = strdup(key)) == NULL)
        return NULL;
    h->running = 0;
    q.nhosts++;
    return h;
}

/* The position in job->pending of the next item a worker may run, or -1. */
static long pick(struct job *job)
{
    long limit = job->cfg->per_host_limit;

    if (limit <= 0)
        return 0;
    for (size_t k = 0; k < job->npending; k++) {
        struct host_count *h = host_find(job->req.items[job->pending[job->phead + k]].hostkey, 0);
        if (h == NULL || h->running < limit)
            return (long)k;
    }
    return -1;
}

/* Takes the next task; 0 when the workers are stopping. Called with the lock. */
static int take(struct task *t)
{
    for (;;) {
        if (q.stopping)
            return 0;
        /* A worker asking for work is progress: whatever waits now, waits
         * from now; nothing waiting means the pool is free. */
        q.waiting_since_us = q.depth > 0 ? fo_now_us() : 0;
        struct job *job = q.head;
        long k = -1;
        if (job != NULL) {
            do {
                if ((k = pick(job)) >= 0)
                    break;
                job = job->rr_next;
            } while (job != q.head);
        }
        if (k >= 0) {
            uint32_t *p = job->pending + job->phead;
            t->index = p[k];
            /* Keep request order: the taken slot is filled from the front. */
            memmove(p + 1, p, (size_t)k * sizeof(*p));
            job->phead++;
            job->npending--;
            q.depth--;
            t->counted = 0;
            if (job->cfg->per_host_limit > 0) {
                struct host_count *h = host_find(job->req.items[t->index].hostkey, 1);
                if (h != NULL) {
                    h->running++;
                    t->counted = 1;
                }
            }
            if (job->npending == 0) {
                ring_unlink(job);         /* the ring's reference passes to the worker */
            } else {
                job_ref(job);
                q.head = job->rr_next;    /* round-robin: this job goes to the back */
            }
            t->job = job;
            METRIC_SET(queue_depth, q.depth);
            return 1;
        }
        pthread_cond_wait(&q.work, &q.lock);
    }
}

static void task_done(struct task *t)
{
    if (!t->counted)
        return;
    pthread_mutex_lock(&q.lock);
    /* hosts[] may have moved (realloc): find the entry again by key. */
    struct host_count *h = host_find(t->job->req.items[t->index].hostkey, 0);
    if (h != NULL && --h->running == 0) {
        free(h->key);
        *h = q.hosts[--q.nhosts];    /* idle hosts are forgotten */
    }
    pthread_cond_broadcast(&q.work);
    pthread_mutex_unlock(&q.lock);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct task t;

    if (wedge_workers) {
        pthread_mutex_lock(&q.lock);
        while (!q.stopping)
            pthread_cond_wait(&q.work, &q.lock);
        pthread_mutex_unlock(&q.lock);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&q.lock);
        int got = take(&t);
        pthread_mutex_unlock(&q.lock);
        if (!got)
            break;
        fetch_prepare(w->fetcher, t.job->cfg);
        if (job_begin_item(t.job, t.index, w->fetcher)) {
            struct result res = { 0 };
            METRIC_ADD(workers_busy, 1);
            fetch_run(w->fetcher, t.job, t.index, &res);
            METRIC_ADD(workers_busy, -1);
            job_complete_item(t.job, t.index, &res);
        }
        task_done(&t);
        job_unref(t.job);
    }
    return NULL;
}

fo_err queue_start(long workers, struct fetch_env *env)
{
    pthread_attr_t attr;
    fo_err err = FO_OK;

    wedge_workers = getenv("FANOUTD_TEST_WEDGE_WORKERS") != NULL;
    if (wedge_workers)
        log_warn("FANOUTD_TEST_WEDGE_WORKERS is set: workers will take no work (testing aid)");
    q.workers = calloc((size_t)workers, sizeof(*q.workers));
    if (q.workers == NULL)
        return FO_ENOMEM;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, FO_WORKER_STACK);
    for (long i = 0; i < workers; i++) {
        struct worker *w = &q.workers[i];
        if ((w->fetcher = fetcher_new(env)) == NULL) {
            err = FO_ENOMEM;
            break;
        }
        if (pthread_create(&w->tid, &attr, worker_main, w) != 0) {
            fetcher_free(w->fetcher);
            log_error("cannot start worker %ld of %ld", i + 1, workers);
            err = FO_ESYS;
            break;
        }
        q.nworkers++;
    }
    pthread_attr_destroy(&attr);
    METRIC_SET(workers, q.nworkers);
    if (err != FO_OK)
        queue_stop();
    return err;
}

fo_err queue_push(struct job *job, long capacity)
{
    long n = (long)job->npending;

    pthread_mutex_lock(&q.lock);
    if (q.closed || q.stopping) {
        pthread_mutex_unlock(&q.lock);
        return FO_ESTOPPED;
    }
    if (q.depth + n > capacity) {
        pthread_mutex_unlock(&q.lock);
        return FO_EFULL;
    }
    ring_append(job_ref(job));
    q.depth += n;
    if (q.waiting_since_us == 0)
        q.waiting_since_us = fo_now_us();
    METRIC_SET(queue_depth, q.depth);
    if (n >= q.nworkers)
        pthread_cond_broadcast(&q.work);
    else
        for (long i = 0; i < n; i++)
            pthread_cond_signal(&q.work);
    pthread_mutex_unlock(&q.lock);
    return FO_OK;
}

void queue_drop(struct job *job)
{
    int unref = 0;

    pthread_mutex_lock(&q.lock);
    if (job->in_ring) {
        q.depth -= (long)job->npending;
        job->npending = 0;
        ring_unlink(job);
        unref = 1;
        METRIC_SET(queue_depth, q.depth);
    }
    pthread_mutex_unlock(&q.lock);
    if (unref)
        job_unref(job);   /* the caller holds its own reference */
}

void queue_close(void)
{
    pthread_mutex_lock(&q.lock);
    q.closed = 1;
    pthread_mutex_unlock(&q.lock);
}

void queue_stop(void)
{
    pthread_mutex_lock(&q.lock);
    q.stopping = 1;
    pthread_cond_broadcast(&q.work);
    pthread_mutex_unlock(&q.lock);
    for (long i = 0; i < q.nworkers; i++) {
        pthread_join(q.workers[i].tid, NULL);
        fetcher_free(q.workers[i].fetcher);
    }
    FO_FREE(q.workers);
    q.nworkers = 0;
    for (size_t i = 0; i < q.nhosts; i++)
        free(q.hosts[i].key);
    FO_FREE(q.hosts);
    q.nhosts = 0;
}

long queue_depth(void)
{
    long depth;

    pthread_mutex_lock(&q.lock);
    depth = q.depth;
    pthread_mutex_unlock(&q.lock);
    return depth;
}

int queue_stalled(int64_t now_us, int64_t stall_us)
{
    int64_t since;

    /* Work arrived and no worker has asked for more for longer than any
     * fetch may last: every worker is stuck, the pool is wedged. (Waiting
     * items may meanwhile have been dropped by their deadline.) */
    pthread_mutex_lock(&q.lock);
    since = q.waiting_since_us;
    pthread_mutex_unlock(&q.lock);
    return since != 0 && now_us - since > stall_us;
}
