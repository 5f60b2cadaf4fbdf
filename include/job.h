/*
 * job.h - one accepted batch while it runs (the in-flight batch). struct
 * job is private to job.c; other modules use the functions below.
 *
 * Ownership: a job is reference counted. The front end holds one reference
 * until its answer has been sent; the scheduler holds one from admission
 * until its registration ends (queue.c); the watcher holds one while it
 * watches the job's client and deadline.
 *
 * Per item, the job lock guards the state (queued, running, done) and the
 * result slot. A worker fills its own struct result and hands it over with
 * job_complete_item(); after the job has finished, nothing more is
 * written into it and late results are dropped. Whoever finishes the job
 * (last item, deadline, client gone, shutdown) does so exactly once, in
 * job_finish(): unfinished items get their error, running fetches are
 * woken and waiting items leave the queue, both through the hooks that
 * the runner registered (struct job_hooks). Then the document is built and the
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
    FINISH_DONE,     /* every item finished */
    FINISH_DEADLINE, /* the batch deadline passed */
    FINISH_CLIENT,   /* the client went away: nobody to answer */
    FINISH_SHUTDOWN, /* shutdown grace ended */
    FINISH_REJECTED, /* the queue refused it (overloaded, draining) */
    FINISH_POLICY,   /* v2: the batch's policy (fail_fast, min_success) ended it */
};

enum item_state { ITEM_QUEUED = 0, ITEM_RUNNING, ITEM_DONE };

struct job;
typedef void (*job_finish_fn)(struct job *job, void *ctx);

/*
 * How a job stops the work it handed out, registered by whoever runs its
 * items (queue.c), so that job.c calls neither the scheduler nor the
 * fetcher by name. When the job finishes (or withdraws), `wake` is called,
 * with the job's lock held, on the runner of each item that is running (as
 * given to job_begin_item); then `cancel(ctx)` once, with no lock held, to
 * take its waiting items out. Neither may call back into the job.
 */
struct job_hooks {
    void (*cancel)(void *ctx);
    void (*wake)(void *runner);
    void *ctx;
};

/*
 * A new job for a parsed batch: takes ownership of req's contents and of
 * forward[] (also when it fails: they are freed then); takes a reference on
 * cfg. The caller holds the one reference.
 */
fo_err job_new(struct config *cfg, struct batch_req *req, char **forward, size_t nforward,
               int64_t arrival_us, job_finish_fn on_finish, void *ctx,
               struct job **out) FO_MUST_CHECK;

/* Frees a list of forwarded headers ("Name: value" strings) and the list. */
void job_forward_free(char **forward, size_t n);

struct job *job_ref(struct job *job);
void job_unref(struct job *job);

/* Registers the hooks (copied) before the job's items can run. 0 if the
 * job has already finished: nothing was registered and the caller takes
 * the items back itself. 1 otherwise. */
int job_set_hooks(struct job *job, const struct job_hooks *hooks);

/* A worker takes item i: 1 if it should run it (runner is handed to the
 * wake hook if the job finishes meanwhile), 0 if the job has already
 * finished or its client's socket already shows it went away (the watcher
 * finishes the job then; a burst of departures must not have their
 * waiting items started in the meantime). */
int job_begin_item(struct job *job, size_t i, void *runner);

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

/* Takes the job's waiting items out now (the cancel hook), so that no
 * worker starts one; the first step when many jobs are about to be
 * finished at once (a burst of clients gone), before job_finish wakes their
 * fetches. The cancel hook runs once over withdraw and finish together. */
void job_withdraw(struct job *job);

/* Retries. An attempt of item i starts now (the worker is about
 * to fetch it): counted, and its first attempt's start noted (the item's
 * own timeout covers every attempt: job_request gives what is left of it). */
struct job_attempt {
    long number;      /* this attempt, 1 for the first */
    int64_t first_us; /* when the first attempt started (monotonic) */
    int64_t end_us;   /* when the item's own timeout ends */
};
void job_item_attempt(struct job *job, size_t i, struct job_attempt *out);
/* Item i is to be tried again: res (taken, cleared after) is kept as its
 * last answer and the item waits again, no longer running. 0 if the job
 * has finished meanwhile (res dropped): nothing is to run again. */
int job_retry_item(struct job *job, size_t i, struct result *res);
/* The last answer kept by job_retry_item, handed back into *out (the
 * retry will not run, so that answer is the result); 0: none. */
int job_take_last(struct job *job, size_t i, struct result *out);

/* Read-only facts of a job (any thread, no lock). */
uint64_t job_serial(const struct job *job);             /* unique, for lookups */
size_t job_items(const struct job *job);                /* items in the batch */
int64_t job_deadline_us(const struct job *job);         /* monotonic */
const struct config *job_config(const struct job *job); /* the config it started with */
const char *job_item_dest(const struct job *job,
                          size_t i); /* item i's "host:port", NULL: none yet */
/* 1 once the job has finished (running fetches are told to stop). */
int job_stopped(const struct job *job);
/* The suspended client's socket, set once by the watcher before the job's
 * items are queued (-1: not watched). */
void job_set_client_fd(struct job *job, int fd);

/* The answer, for the front end once on_finish has been called: why it
 * ended; the sink to read the answer from (answer.h; NULL: none, the client
 * went away or the batch was rejected; its failed op says whether it could
 * not be built); X-Batch-Complete. The sink lives as long as the job. A
 * streamed job's sink is its stream (job_set_stream), readable at any time
 * (NULL only once rejected). */
enum finish_reason job_reason(const struct job *job);
struct answer_sink *job_answer_sink(struct job *job);
int job_complete(const struct job *job);
/* Items whose fetch worked (after on_finish). */
size_t job_items_ok(const struct job *job);

/* How the batch ended, for the metrics and the access log (valid after
 * on_finish): OUT_COMPLETE, OUT_PARTIAL, OUT_DEADLINE, OUT_CANCELLED or
 * OUT_SHUTDOWN. */
enum batch_outcome job_outcome(const struct job *job);

/* v2 max_concurrency: items of the batch fetching at once, 0: no cap. */
long job_max_concurrency(const struct job *job);

/* v2 timings: item i could run from runnable_us (monotonic; the batch's
 * arrival, or when its dependencies finished), as the scheduler saw it;
 * called by the worker before job_begin_item, so that queue_ms is known
 * however the item ends. */
void job_item_runnable(struct job *job, size_t i, int64_t runnable_us);
/* share: item i as parsed (read-only, lives as long as the job), for the
 * item's "coalesce" and "cache" choices. */
const struct item_req *job_item(const struct job *job, size_t i);
/* share: the job's stop flag (set once it has finished). */
const _Atomic int *job_stop_flag(const struct job *job);

/*
 * Streaming (contract v2): the answer becomes a stream of NDJSON lines
 * (answer.h, struct answer_stream, owned by the job): each item's RESULT
 * line with "index" is written the moment the item finishes (by
 * job_complete_item, or job_finish for the items it fails), then the
 * summary line, then the stream ends (cut short, no summary, for a client
 * gone). Bodies are not kept once written; the unread lines are capped by
 * max_answer_bytes: past it the job finishes as FINISH_CLIENT. Call before
 * the items are queued; FO_ENOMEM. *out: the stream, for the consumer's
 * waker (answer_stream_set_waker); it lives as long as the job.
 */
struct answer_stream;
fo_err job_set_stream(struct job *job, int gzip, struct answer_stream **out) FO_MUST_CHECK;

/* The finisher threads: started before any job can finish by deadline or
 * shutdown; job_finisher_stop() builds what is still queued, then joins
 * them. Start fails with FO_ESYS (no thread could be made). */
fo_err job_finisher_start(void) FO_MUST_CHECK;
void job_finisher_stop(void);

/* composition */

/* Before item i's request is built (its worker, after job_begin_item):
 * run_if and the references of an item with depends_on, resolved against
 * its finished dependencies (compose_prepare). 1: fetch it (job_request
 * then uses the resolved url, headers and body); 0: it is not fetched and
 * *res holds its failure (failed_dependency, invalid_url). */
int job_prepare_item(struct job *job, size_t i, struct result *res);

/* After an attempt of item i (its worker, once the request built from it is
 * freed): drops what job_prepare_item resolved, so that a batch holds the
 * substituted bodies of its running items only, not of every item that ran
 * (a retry resolves them again). */
void job_release_item(struct job *job, size_t i);

/* The batch's dependency lists for sched_submit (both NULL: none). */
void job_deps(const struct job *job, const uint32_t **start, const uint32_t **list);

#endif
