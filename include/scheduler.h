/*
 * scheduler.h - the scheduler: which waiting task runs next, over all batches.
 *
 * A batch registers N tasks (0 .. N-1) with a small set of ops and an
 * opaque context; the scheduler never sees what a task is (for fanoutd, an
 * item of a job: queue.c glues the two). It is where every "not yet" lives:
 *
 *   - dependencies: a task waits until every task it depends on is done
 *     (sched_done); a completion makes its dependents runnable at once,
 *     without a scan of the waiting tasks;
 *   - a not-before time: given at registration, asked of ops->not_before
 *     when a task reaches the front (a per-host rate, a half-open breaker),
 *     or set by sched_retry (backoff). Such tasks wait on one timer heap;
 *     sched_next sleeps until the earliest of them;
 *   - per_host_limit: a task whose destination (ops->dest, keyed by
 *     host_key) has that many tasks running waits on that destination's
 *     wait list; the batches waiting on one destination are served
 *     round-robin, and picking work never scans parked tasks;
 *   - max_concurrency: at most that many tasks of one batch run at once.
 *
 * Fairness: batches with runnable tasks form a ring; each task taken moves
 * its batch to the back (1000 slow items do not starve a batch of 2).
 * Capacity: sched_submit admits a whole batch or nothing; `capacity` counts
 * waiting tasks (not handed out, not cancelled), over all batches.
 *
 * Life of a batch: sched_submit (the scheduler holds ctx from then on) ->
 * tasks handed out by sched_next / sched_try, each ended by sched_done (or
 * the next sched_next) or
 * sched_retry -> sched_cancel, exactly once, by the owner (when the batch
 * has finished, or to withdraw its waiting tasks). Once cancelled and with
 * no task running, the batch is freed and ops->release(ctx) is called,
 * without the scheduler's lock.
 *
 * Locking: one mutex per scheduler guards all of its state; the ops are
 * called with it held (dest, not_before: they must not block nor call the
 * scheduler) except release and run. No lock is held while a task runs.
 */
#ifndef FO_SCHEDULER_H
#define FO_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fanoutd.h"

struct sched;
struct sched_batch;
struct sched_task;
struct host_slot;

struct sched_ops {
    /* The destination "host:port" of task i (for per_host_limit), NULL:
     * none. The string lives as long as the batch; callable from any
     * thread (the data it reads does not change). */
    const char *(*dest)(void *ctx, size_t i);
    /* Optional: the earliest time (monotonic us) task i may start, asked
     * each time it reaches the front; a time <= now_us: now. */
    int64_t (*not_before)(void *ctx, size_t i, int64_t now_us);
    /* Runs task t on a worker (its own thread data in `worker`), with no
     * lock held. Returns 0 when the task is done (the worker then calls
     * sched_done), or the monotonic time (us) before which it must not run
     * again (a retry: the worker calls sched_retry). */
    int64_t (*run)(void *ctx, const struct sched_task *t, void *worker);
    /* The scheduler lets go of ctx (the batch was cancelled and nothing of
     * it runs). Called with no lock held. */
    void (*release)(void *ctx);
};

struct sched_batch_desc {
    const struct sched_ops *ops;
    void *ctx;            /* handed to the ops; held until ops->release */
    size_t n;             /* tasks 0 .. n-1 (at most UINT32_MAX) */
    long per_host_limit;  /* tasks running per destination, 0: no limit */
    long max_concurrency; /* tasks of this batch running at once, 0: no cap */
    /* Optional dependencies: task i waits for the tasks
     * dep_list[dep_start[i] .. dep_start[i + 1]) (dep_start has n + 1
     * entries). Indices must be < n and the graph acyclic (else FO_EINVAL). */
    const uint32_t *dep_start, *dep_list;
    /* Optional: the first not-before time of each task (monotonic us). */
    const int64_t *not_before_us;
};

/* A task handed to a worker. */
struct sched_task {
    struct sched_batch *batch;
    void *ctx; /* the batch's ctx */
    size_t index;
    const char *dest;       /* ops->dest's answer, or NULL */
    const char *pin;        /* the address a named dest resolved to ("1.2.3.4:80"):
                             connect there; NULL: none. Valid while it runs */
    int resolve;            /* dest is a name not yet resolved: sched_resolve first */
    struct host_slot *host; /* private: counted there against per_host_limit */
    int64_t runnable_us;    /* v2 timings: when it became runnable (admitted, or
                               its dependencies done), monotonic us */
};

/* A scheduler (the daemon has one; unit tests make their own). */
fo_err sched_new(struct sched **out) FO_MUST_CHECK;
/* Frees s; no batch may be left in it (every one cancelled, none running). */
void sched_free(struct sched *s);

/* Registers a batch: every task admitted, or none. FO_EFULL when its n
 * tasks do not fit in capacity, FO_ESTOPPED after sched_close, FO_EINVAL
 * for a dependency out of range or a cycle, FO_ENOMEM. On success *out is
 * the batch (for sched_cancel) and ctx is held. */
fo_err sched_submit(struct sched *s, const struct sched_batch_desc *d, long capacity,
                    struct sched_batch **out) FO_MUST_CHECK;

/* The next task that may run at now_us, without waiting: 1 and *t filled,
 * else 0 and *wake_us set to the earliest not-before time still waiting
 * (0: none). For tests and for sched_next. */
int sched_try(struct sched *s, int64_t now_us, struct sched_task *t, int64_t *wake_us);

/* Ends done (as sched_done; NULL: none) and waits for the next task: 1 and
 * *t filled, 0 when the scheduler stops, -1 when idle_us (> 0; 0: no
 * limit) passed with nothing to do. The worker asking takes a task that is
 * takeable at once itself; else it sleeps on the idle stack, the most
 * recently idle first to be woken, and is woken with a task already taken
 * for it (no lock hand-off). One idle worker sleeps until the earliest
 * not-before time and then looks again (it is never let go for idling). */
int sched_next(struct sched *s, struct sched_task *done, struct sched_task *t, int64_t idle_us);

/* Registers the pool's grow hook: when tasks became runnable and no worker
 * is idle, each task that can run now (below its destination's and batch's
 * limits, its time come) is taken, up to `spare` of them, and grow(ctx,
 * task) is called for it with no lock held: the pool starts a worker whose
 * first task it is (the task is handed out: it must be run and ended like
 * any, or given back with sched_retry). A task that cannot run starts no
 * worker. Set before any worker starts. */
void sched_set_grow(struct sched *s, void (*grow)(void *ctx, struct sched_task *first), void *ctx,
                    long spare);

/* The pool may start n more workers (a worker left: n = 1). */
void sched_spare(struct sched *s, long n);

/* A task handed out with t->resolve: resolves its destination's name
 * (blocking, no lock held), remembers the address for FO_NAME_TTL_MS and
 * counts the task there. 1: run it (t->pin set); 0: it waits again behind
 * its destination's limit (the caller forgets t). */
int sched_resolve(struct sched *s, struct sched_task *t);

/* Runs t with the batch's run op: 0, done; else a retry's not-before time. */
int64_t sched_run(const struct sched_task *t, void *worker);

/* The task ended (ran, failed or was refused): its destination and batch
 * slots free up, and the tasks that depended on it and now wait for
 * nothing become runnable. */
void sched_done(struct sched *s, struct sched_task *t);

/* The task is to run again, not before not_before_us (a retry): it waits
 * on the timer heap, counted as waiting again (no capacity check). */
void sched_retry(struct sched *s, struct sched_task *t, int64_t not_before_us);

/* Ends the batch's registration (exactly once per admitted batch): its
 * waiting tasks leave, none is handed out any more; running ones end with
 * sched_done as usual. */
void sched_cancel(struct sched *s, struct sched_batch *b);

/* Refuses new batches from now on (draining). */
void sched_close(struct sched *s);
/* sched_next returns 0 from now on, in every thread waiting in it. */
void sched_stop(struct sched *s);

/* Tasks waiting now, over all batches. */
long sched_depth(struct sched *s);

/* 1 if work has waited for more than stall_us with no worker asking for
 * work since (sched_next, sched_try): the pool is wedged. */
int sched_stalled(struct sched *s, int64_t now_us, int64_t stall_us);

/*
 * The per_host_limit key of a URL's "host:port" (as url_check writes it):
 * a numeric host as the address it is (every inet_aton spelling of IPv4,
 * such as 127.1, 0x7f000001, 2130706433, 0177.0.0.1; IPv6 as inet_ntop
 * writes it, in brackets; IPv4-mapped IPv6 as the IPv4 address), localhost
 * and *.localhost as 127.0.0.1, any other name lower-cased without a
 * trailing dot; then ":port". Writes a NUL-terminated key into out[size];
 * returns its length, 0 if hostport has no ":port" or the key does not fit.
 */
size_t host_key(const char *hostport, char *out, size_t size);

#endif
