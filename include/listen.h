/*
 * listen.h - the listening socket fanoutd opens itself: `listen = unix:/path`.
 *
 * A TCP `listen` is bound by libmicrohttpd (with SO_REUSEPORT when
 * reuse_port is on); a socket passed by systemd is used as it is. For a unix
 * socket fanoutd makes the file itself, because a path outlives a process:
 *
 *   path missing             bind
 *   a socket nobody accepts  stale (a crashed run): removed, then bind
 *   a socket someone accepts live: refused, exit 2 (never taken over)
 *   anything else            refused, exit 2 (never removed)
 *
 * The file is made with no permissions and then given listen_mode, so there
 * is no moment where it is more open than asked. It is removed on a clean
 * exit, if it is still the file this process made.
 */
#ifndef FO_LISTEN_H
#define FO_LISTEN_H

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include "config.h"
#include "err.h"

struct listener {
    int fd; /* listening, non-blocking; -1: none */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* the file made, or "" */
    dev_t dev;                                              /* of that file, so that only ours */
    ino_t ino;                                              /* is removed at exit */
};

/*
 * Opens cfg's unix socket (cfg->listen_addr is AF_UNIX) with mode
 * cfg->listen_mode. On error returns FO_EINVAL (a live socket, or a path
 * that is not a socket) or FO_ESYS, and msg says what and where; nothing is
 * left behind. The caller owns l->fd and hands it to server_start.
 */
fo_err listener_open_unix(const struct config *cfg, struct listener *l,
                          struct fo_msg *msg) FO_MUST_CHECK;

/* Removes the socket file if it is still the one this process made (a
 * later instance may have replaced it). The descriptor itself is closed by
 * whoever owns it by then (libmicrohttpd). */
void listener_remove_file(struct listener *l);

#endif
