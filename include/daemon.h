/*
 * daemon.h - the daemon's lifecycle around the front end: what starts and
 * stops in which order, draining, cancelling, and the watchdog's view.
 *
 *   daemon_start:  fetch environment (libcurl share, fanoutd's own address)
 *                  -> finisher threads -> watcher -> scheduler and workers
 *                  -> the front end listens (server_start)
 *   daemon_drain:  the front end refuses new batches, the queue closes
 *   daemon_cancel_all: every batch still in flight is finished (shutdown)
 *   daemon_stop:   answers flushed (server_flush) -> workers joined ->
 *                  finishers joined -> front end stopped -> watcher
 *                  stopped -> fetch environment freed
 *
 * Reload is the front end's configuration swap (server_reload): each batch
 * keeps the configuration it started with. Called from the main thread only.
 */
#ifndef FO_DAEMON_H
#define FO_DAEMON_H

#include <stdint.h>

#include "config.h"
#include "err.h"

/* Starts everything from cfg (a reference is taken). listen_fd >= 0 is a
 * socket passed by systemd. On failure, daemon_stop undoes what started. */
fo_err daemon_start(struct config *cfg, int listen_fd) FO_MUST_CHECK;

/* Draining: /healthz says so, new batches get 503 draining. */
void daemon_drain(void);

/* Finishes every in-flight batch (unfinished items: cancelled); a second
 * stop signal cut the grace short when batches are still in flight. */
void daemon_cancel_all(void);

/* Waits (bounded) for the answers to be sent, then stops everything. */
void daemon_stop(void);

/* The watchdog's question: 1 if work has waited more than stall_us with no
 * worker taking any (the pool is wedged). */
int daemon_stalled(int64_t now_us, int64_t stall_us);

/* Items waiting in the scheduler, for status lines. */
long daemon_queue_depth(void);

#endif
