/*
 * job.h - one accepted batch while it runs (the in-flight batch).
 *
 * Ownership: a job is reference counted. The front end holds one reference
 * until its answer has been sent; the queue holds one while any of the
 * job's items wait in it; a worker holds one while it runs an item; the
 * watcher holds one while it watches the job's client and deadline.
 *
 * Per item, the job lock guards the state (queued, running, done) and the
 * result slot. A worker fills its own struct result and hands it over with
 * job_complete_item(); after the job has finished, nothing more is
 * written into it and late results are dropped. Whoever finishes the job
 * (last item, deadline, client gone, shutdown) does so exactly once, in
 * job_finish(): unfinished items get their error, running fetches are
 * woken, waiting items leave the queue. Then the document is built and the
 * on_finish callback (the front end's) is called with no lock held:
 *
 *   last item done        -> built on that worker's thread;
 *   deadline, shutdown    -> handed to a finisher thread (job_finisher_*),
 *                            so the watcher, which finishes every batch's
 *                            deadline, never waits for one batch's merge;
 *   client gone, rejected -> no document; on_finish at once.
 *
 * The finishers are a small pool that grows on demand (up to
 * FO_FINISHERS_MAX) so that one large merge does not hold up the document
 * of another batch.
 */
#ifndef FO_JOB_H
#define FO_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "batch.h"
#include "buf.h"
#include "config.h"
#include "fetch_req.h"
#include "metrics.h"
#include "result.h"

enum finish_reason {
    FINISH_NONE = 0,
    FINISH_DONE,       /* every item finished */
    FINISH_DEADLINE,   /* the batch deadline passed */
    FINISH_CLIENT,     /* the client went away: nobody to answer */
    FINISH_SHUTDOWN,   /* shutdown grace ended */
    FINISH_REJECTED,   /* the queue refused it (overloaded, draining) */
};

enum item_state { ITEM_QUEUED = 0, ITEM_RUNNING, ITEM_DONE };

struct job;
typedef void (*job_finish_fn)(struct job *job, void *ctx);

struct job {
    _Atomic long refs;
    uint64_t serial;             /* unique, for the watcher's lookups */

    /* Read-only after job_new. */
    struct config *cfg;          /* a reference: the config the batch started with */
    struct batch_req req;
    char **forward;              /* client headers to forward ("Name: value"), owned */
    size_t nforward;
    int64_t arrival_us;          /* monotonic */
    int64_t deadline_us;         /* monotonic */
    job_finish_fn on_finish;
    void *finish_ctx;
    /* The suspended client's socket, -1 if not watched. Set once by
     * watch_add before the job is queued; open while the job runs (the
     * connection stays suspended until the job finishes). */
    int client_fd;

    /* Set once when the job finishes; running fetches poll it to abort. */
    _Atomic int stop;

    pthread_mutex_t lock;        /* guards the fields below */
    enum finish_reason finished;
    size_t remaining;            /* items not yet done */
    unsigned char *state;        /* enum item_state per item */
    int64_t *started_us;         /* when a worker took each item */
    struct fetcher **runner;     /* the fetcher running each item, or NULL */
    struct result *results;
    size_t answer_bytes;         /* body bytes kept for the answer (max_answer_bytes) */
    size_t bytes_seen;           /* body bytes handed in, kept or refused (memory release) */

    /* Written only by whoever builds the document, read by the front end
     * after on_finish. */
    struct buf doc;
    int complete;
    int doc_failed;              /* the document could not be built */
    double duration_ms;          /* arrival to the document's completion */
    struct job *fin_next;        /* finisher queue link (finisher lock) */

    /* Queue bookkeeping, guarded by the queue lock (queue.c). */
    uint32_t *pending;           /* item indices; the queued ones are */
    size_t phead, npending;      /* pending[phead .. phead + npending) */
    struct job *rr_prev, *rr_next;
    int in_ring;                 /* in the ring of jobs (npending > 0) */
    int in_queue;                /* the queue holds a reference (items pending or parked) */
    struct queue_lane *lanes;    /* items parked behind per_host_limit, one lane per host */
    size_t nparked;
};

/*
 * A new job for a parsed batch: takes ownership of req's contents and of
 * forward[] (also when it fails: they are freed then); takes a reference on
 * cfg. The caller holds the one reference.
 */
fo_err job_new(struct config *cfg, struct batch_req *req, char **forward, size_t nforward,
               int64_t arrival_us, job_finish_fn on_finish, void *ctx, struct job **out) FO_MUST_CHECK;

/* Frees a list of forwarded headers ("Name: value" strings) and the list. */
void job_forward_free(char **forward, size_t n);

struct job *job_ref(struct job *job);
void job_unref(struct job *job);

struct fetcher;

/* A worker takes item i: 1 if it should run it (with fetcher f, which
 * job_finish wakes), 0 if the job has already finished or its client's
 * socket already shows it went away (the watcher finishes the job then; a
 * burst of departures must not have their waiting items started in the
 * meantime). */
int job_begin_item(struct job *job, size_t i, struct fetcher *f);

/* The fetch request of item i (which must stay valid as long as the job
 * lives): forwarded and item headers resolved, the CDN-Loop line, the
 * item's resolved timeout and the batch deadline, the caps and policy of
 * the job's configuration, the job's stop flag. FO_ENOMEM: nothing to
 * free; else the caller frees it with fetch_req_free(). */
fo_err job_request(struct job *job, size_t i, struct fetch_req *out) FO_MUST_CHECK;

/* A worker's result for item i; takes ownership of *res (cleared after).
 * A body that would take the answer's bodies past max_answer_bytes (as
 * written in the answer: res->body_len) is dropped and the item fails
 * too_large, its status kept. */
void job_complete_item(struct job *job, size_t i, struct result *res);

/* Bytes of body the answer may still take (max_answer_bytes less what the
 * finished items hold), for a worker to refuse a body while encoding it. */
size_t job_answer_left(struct job *job);

/* Finishes the job if it is still running; returns 1 if this call did.
 * The document may still be in the making when it returns (deadline,
 * shutdown: a finisher builds it); on_finish says when it is done. */
int job_finish(struct job *job, enum finish_reason reason);

/* Takes the job's waiting items out of the queue now, so that no worker
 * starts one; the first step when many jobs are about to be finished at
 * once (a burst of clients gone), before job_finish wakes their fetches. */
void job_withdraw(struct job *job);

/* How the batch ended, for the metrics and the access log (valid after
 * on_finish): OUT_COMPLETE, OUT_PARTIAL, OUT_DEADLINE, OUT_CANCELLED or
 * OUT_SHUTDOWN. */
enum batch_outcome job_outcome(const struct job *job);

/* The finisher threads: started before any job can finish by deadline or
 * shutdown; job_finisher_stop() builds what is still queued, then joins
 * them. Start fails with FO_ESYS (no thread could be made). */
fo_err job_finisher_start(void) FO_MUST_CHECK;
void job_finisher_stop(void);

#endif
