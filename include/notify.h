/*
 * notify.h - systemd's service notification protocol (sd_notify), and
 * socket activation (sd_listen_fds).
 *
 * The documented datagram protocol: "KEY=value" lines sent to the
 * AF_UNIX socket named by $NOTIFY_SOCKET ('@' for the abstract namespace).
 * Without NOTIFY_SOCKET every call is a no-op, so fanoutd runs the same
 * under systemd and anywhere else. Written here rather than linking
 * libsystemd: the protocol is a few lines and stable.
 */
#ifndef FO_NOTIFY_H
#define FO_NOTIFY_H

#include <stdint.h>

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC (and WATCHDOG_PID) once, at start. */
void notify_init(void);

/* Sends one message ("READY=1", "STATUS=..."); 0 on success or no-op. */
int notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog interval systemd asked for, in microseconds; 0: none. */
int64_t notify_watchdog_usec(void);

/* With socket activation for this process (LISTEN_PID, LISTEN_FDS), the
 * first passed descriptor (3); else -1. Clears the variables. */
int notify_listen_fd(void);

#endif
