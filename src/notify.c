/*
 * notify.c - sd_notify and sd_listen_fds, written to the documented
 * protocol (see notify.h).
 */
#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "err.h"
#include "fanoutd.h"
#include "log.h"

#define LISTEN_FDS_START 3 /* SD_LISTEN_FDS_START */

/* Set once by notify_init before any thread starts; read-only after. */
static struct sockaddr_un notify_addr;
static socklen_t notify_len;
static int64_t watchdog_usec;

/* 1 if text is this process's id, as a checked number (LISTEN_PID,
 * WATCHDOG_PID). */
static int is_our_pid(const char *text)
{
    long long pid;

    return fo_parse_num(text, 1, INT32_MAX, &pid) == FO_OK && pid == (long long)getpid();
}

void notify_init(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    const char *wd = getenv("WATCHDOG_USEC"), *wd_pid = getenv("WATCHDOG_PID");
    size_t n;

    if (path != NULL && (path[0] == '/' || path[0] == '@') &&
        (n = strlen(path)) < sizeof(notify_addr.sun_path)) {
        memset(&notify_addr, 0, sizeof(notify_addr));
        notify_addr.sun_family = AF_UNIX;
        memcpy(notify_addr.sun_path, path, n);
        if (path[0] == '@')
            notify_addr.sun_path[0] = '\0'; /* abstract namespace */
        notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    }
    if (wd != NULL && (wd_pid == NULL || is_our_pid(wd_pid))) {
        long long v;
        if (fo_parse_num(wd, 1, INT64_MAX, &v) == FO_OK)
            watchdog_usec = v;
    }
}

int notify_send(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int fd, n;

    if (notify_len == 0)
        return 0;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -1;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&notify_addr, notify_len) <
        0) {
        log_debug("cannot notify systemd: %s", strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int64_t notify_watchdog_usec(void)
{
    return watchdog_usec;
}

int notify_listen_fd(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    int fd = -1;

    long long nfds;

    if (pid != NULL && fds != NULL && is_our_pid(pid) &&
        fo_parse_num(fds, 1, INT32_MAX, &nfds) == FO_OK) {
        fd = LISTEN_FDS_START;
        if (nfds > 1)
            log_warn("socket activation passed %s sockets; only the first is used", fds);
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return fd;
}
