/*
 * server.h - the HTTP front end (libmicrohttpd) and the daemon's lifecycle.
 *
 * Owns the listening daemon, the current configuration (swapped on reload;
 * each batch keeps the one it started with), the fetch environment, the
 * queue's workers and the watcher. Requests:
 *
 *   POST /batch  headers checked (framing, auth, draining, size) -> body read
 *                under max_body_bytes -> whole batch parsed and validated ->
 *                connection suspended -> job watched and queued -> ... ->
 *                the job's answer is ready (built by the last worker or a
 *                finisher) -> the connection is resumed -> the document is
 *                read out of the job as it is sent. server_stop resumes
 *                every suspended connection before libmicrohttpd stops.
 *   GET /healthz, GET /metrics; anything else 404, a wrong method 405.
 */
#ifndef FO_SERVER_H
#define FO_SERVER_H

#include <stdint.h>

#include "config.h"
#include "err.h"

/* Starts everything from cfg (a reference is taken). listen_fd >= 0 is a
 * listening socket to serve on instead of binding `listen`: one passed by
 * systemd (socket activation) or a unix socket from listen.c; libmicrohttpd
 * owns it from here. Else `listen` is bound, with SO_REUSEPORT when
 * reuse_port is on. */
fo_err server_start(struct config *cfg, int listen_fd) FO_MUST_CHECK;

/* Closes the listening socket; connections already open go on being served.
 * take_backlog: first accept what the kernel holds for us, so that nothing
 * waiting is reset (used when another process on the same port takes over:
 * reuse_port). Does nothing the second time. */
void server_stop_listening(int take_backlog);

/* Installs a configuration for new batches (takes a reference); also the
 * first one, from server_start. */
void server_reload(struct config *cfg);

/* A reference to the current configuration (config_unref it). */
struct config *server_config(void);

/* Draining: /healthz says so, new batches get 503 draining. */
void server_drain(void);

/* Waits until no batch is in flight or timeout_ms passes; 1 if none is. */
int server_wait_idle(int64_t timeout_ms);

/* Finishes every in-flight batch (unfinished items: cancelled). */
void server_cancel_all(void);

/* Waits (bounded) for the answers to be sent, then stops everything. */
void server_stop(void);

/* Closes the connections whose request has not arrived whole within
 * client_timeout_ms (see server.c); called a few times a second. */
void server_reap(void);

/* Batches in flight and queue depth, for status lines. */
long server_batches_in_flight(void);

#endif
