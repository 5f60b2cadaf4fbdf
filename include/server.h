/*
 * server.h - the HTTP front end (libmicrohttpd): HTTP only. The daemon's
 * lifecycle (what starts and stops around it) is daemon.h's.
 *
 * Owns the listening daemon and the current configuration (swapped on
 * reload; each batch keeps the one it started with). Requests:
 *
 *   POST /batch  headers checked (framing, auth, draining, size) -> body read
 *                under max_body_bytes -> whole batch parsed and validated ->
 *                connection suspended -> job watched and queued -> ... ->
 *                the job's answer is ready (built by the last worker or a
 *                finisher) -> the connection is resumed -> the answer is
 *                written through its sink (struct answer_sink, answer.h):
 *                today the whole document, copied out in blocks as it is
 *                sent. server_flush resumes every connection still
 *                suspended before libmicrohttpd stops.
 *   GET /healthz, GET /metrics; anything else 404, a wrong method 405.
 *
 * Batches in flight: accepted batches whose answer is not ready yet (their
 * connection is suspended); a batch leaves the count when its job calls
 * on_finish, before its answer is sent.
 */
#ifndef FO_SERVER_H
#define FO_SERVER_H

#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "err.h"

/* The address the front end listens on: cfg's `listen`, or the address of
 * listen_fd (a socket passed by systemd, or a unix socket from listen.c)
 * when it is >= 0; fanoutd's own address for the destination policy.
 * FO_ESYS: listen_fd is not usable. */
fo_err server_listen_address(const struct config *cfg, int listen_fd,
                             struct sockaddr_storage *bound, socklen_t *bound_len) FO_MUST_CHECK;

/* Starts listening with cfg (a reference is taken); the workers must be
 * running. listen_fd >= 0 is a listening socket to serve on instead of
 * binding `listen`: one passed by systemd (socket activation) or a unix
 * socket from listen.c; libmicrohttpd owns it from here. Else `listen` is
 * bound, with SO_REUSEPORT when reuse_port is on. */
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

/* Draining: /healthz says so, new batches get 503 draining; the grace
 * (shutdown_grace_ms) starts now. */
void server_drain(void);

/* Waits until no batch is in flight or timeout_ms passes; 1 if none is. */
int server_wait_idle(int64_t timeout_ms);

/* A second stop signal: answers get only the final flush, not what was
 * left of the grace. */
void server_cut_grace(void);

/* Waits (bounded: what is left of the grace, at least FO_DRAIN_FLUSH_MS)
 * for the answers to be built and sent; connections whose answer is still
 * being built are closed unanswered. */
void server_flush(void);

/* Stops libmicrohttpd and drops the configuration (after server_flush). */
void server_stop(void);

/* Closes the connections whose request has not arrived whole within
 * client_timeout_ms (see server.c); called a few times a second. */
void server_reap(void);

/* Batches in flight, for status lines. */
long server_batches_in_flight(void);

#endif
