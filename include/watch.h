/*
 * watch.h - the watcher: batch deadlines and clients that go away.
 *
 * While a batch runs, its client connection is suspended in libmicrohttpd,
 * which then neither times it out nor notices a disconnect. The watcher
 * thread covers both: it waits in epoll on every suspended client's socket
 * (EPOLLRDHUP) with a timeout set by the earliest batch deadline, and
 * finishes a job with FINISH_CLIENT or FINISH_DEADLINE. It never builds a
 * document: a deadline's is built on a finisher thread (job.h), so one
 * batch's merge cannot delay another batch's deadline or disconnect.
 *
 * A client that half-closes its sending side after the request counts as
 * gone (its read side cannot be told apart from a full close without
 * writing to it).
 */
#ifndef FO_WATCH_H
#define FO_WATCH_H

#include <stddef.h>

#include "err.h"
#include "fanoutd.h"
#include "job.h"

fo_err watch_start(void) FO_MUST_CHECK;
void watch_stop(void);

/* Watches job (takes a reference) and the client socket fd. */
fo_err watch_add(struct job *job, int fd) FO_MUST_CHECK;
/* Stops watching job; a no-op if it is not watched. Must be called before
 * the client connection is resumed (the fd then belongs to libmicrohttpd). */
void watch_remove(struct job *job);
/* Finishes every watched job with reason (shutdown); returns how many. */
size_t watch_finish_all(enum finish_reason reason);

#endif
