/*
 * queue.h - the worker pool that runs the items of accepted batches.
 *
 * A batch's items are registered with the scheduler (scheduler.h) as one
 * batch of tasks: admitted whole or not at all (queue_capacity counts
 * waiting items, parked ones included), served round-robin between
 * batches, with per_host_limit counted per destination. Each worker owns
 * one fetcher and runs one item at a time: job_begin_item, job_request,
 * fetch_run, job_complete_item. The job stops its work through the hooks
 * queue_push registers (struct job_hooks): no module calls back into this
 * one.
 *
 * The pool is a process-wide singleton (one daemon, one pool).
 */
#ifndef FO_QUEUE_H
#define FO_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fanoutd.h"

struct job;
struct fetch_env;

/* Starts the scheduler and `workers` threads, each with its own fetcher. */
fo_err queue_start(long workers, struct fetch_env *env) FO_MUST_CHECK;

/* Admits every item of job, or none: FO_EFULL when they do not fit in
 * capacity, FO_ESTOPPED after queue_close(), FO_ENOMEM. On success the
 * scheduler holds a reference until the job has finished and none of its
 * items runs, and the job's hooks are registered. */
fo_err queue_push(struct job *job, long capacity) FO_MUST_CHECK;

/* Refuses new batches from now on (draining). */
void queue_close(void);

/* Stops and joins the workers; no job may be left unfinished. */
void queue_stop(void);

/* Items waiting now. */
long queue_depth(void);

/* 1 if work arrived more than stall_us ago and no worker has asked for
 * work since: the pool is wedged (the systemd watchdog is then not fed). */
int queue_stalled(int64_t now_us, int64_t stall_us);

#endif
