/*
 * listen.c - the unix listening socket (see listen.h for the rules about
 * stale and live socket files).
 */
#include "listen.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fanoutd.h"
#include "log.h"

/* Makes room at the path: FO_OK when nothing is there or a stale socket was
 * removed; an error for a live socket or anything that is not a socket. */
static fo_err clear_stale(const struct sockaddr_un *un, socklen_t len, struct fo_msg *msg)
{
    struct stat st;
    int fd, rc, saved;

    if (lstat(un->sun_path, &st) != 0) {
        if (errno == ENOENT)
            return FO_OK;
        fo_msg_set(msg, "cannot use unix:%s: %s", un->sun_path, strerror(errno));
        return FO_ESYS;
    }
    if (!S_ISSOCK(st.st_mode)) {
        fo_msg_set(msg,
                   "cannot listen on unix:%s: the path exists and is not a socket "
                   "(not removed)",
                   un->sun_path);
        return FO_EINVAL;
    }
    /* Non-blocking: a live listener with a full backlog says EAGAIN at once
     * instead of keeping start-up waiting. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fo_msg_set(msg, "cannot make a unix socket: %s", strerror(errno));
        return FO_ESYS;
    }
    rc = connect(fd, (const struct sockaddr *)un, len);
    saved = errno;
    close(fd);
    if (rc == 0 || saved == EAGAIN) {
        fo_msg_set(msg,
                   "cannot listen on unix:%s: another process is listening on it "
                   "(another fanoutd?); not taking it over",
                   un->sun_path);
        return FO_EINVAL;
    }
    if (saved != ECONNREFUSED) {
        fo_msg_set(msg, "cannot tell whether unix:%s is in use: %s", un->sun_path,
                   strerror(saved));
        return FO_ESYS;
    }
    /* Nobody accepts on it: left behind by a run that did not exit cleanly. */
    if (unlink(un->sun_path) != 0 && errno != ENOENT) {
        fo_msg_set(msg, "cannot remove the stale socket unix:%s: %s", un->sun_path,
                   strerror(errno));
        return FO_ESYS;
    }
    log_info("removed the stale socket file %s (no process was listening on it)", un->sun_path);
    return FO_OK;
}

fo_err listener_open_unix(const struct config *cfg, struct listener *l, struct fo_msg *msg)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)&cfg->listen_addr;
    struct stat st;
    mode_t old_mask;
    fo_err err;
    int fd = -1, rc;

    memset(l, 0, sizeof(*l));
    l->fd = -1;
    if ((err = clear_stale(un, cfg->listen_len, msg)) != FO_OK)
        return err;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fo_msg_set(msg, "cannot make a unix socket: %s", strerror(errno));
        return FO_ESYS;
    }
    /* The file appears with no permission bits at all; chmod opens it to
     * listen_mode once it exists (umask is per process, but no other thread
     * makes files now). */
    old_mask = umask(0777);
    rc = bind(fd, (const struct sockaddr *)un, cfg->listen_len);
    umask(old_mask);
    if (rc != 0) {
        fo_msg_set(msg, "cannot listen on unix:%s: %s%s", un->sun_path, strerror(errno),
                   errno == EADDRINUSE ? " (another process just made it?)" : "");
        err = errno == EADDRINUSE ? FO_EINVAL : FO_ESYS;
        close(fd);
        return err;
    }
    if (chmod(un->sun_path, (mode_t)cfg->listen_mode) != 0 || lstat(un->sun_path, &st) != 0 ||
        listen(fd, FO_LISTEN_BACKLOG) != 0) {
        fo_msg_set(msg, "cannot listen on unix:%s: %s", un->sun_path, strerror(errno));
        unlink(un->sun_path);
        close(fd);
        return FO_ESYS;
    }
    (void)snprintf(l->path, sizeof(l->path), "%s", un->sun_path);
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    l->fd = fd;
    return FO_OK;
}

void listener_remove_file(struct listener *l)
{
    struct stat st;

    if (l->path[0] == '\0')
        return;
    if (lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino &&
        unlink(l->path) != 0)
        log_warn("cannot remove the socket file %s: %s", l->path, strerror(errno));
    l->path[0] = '\0';
}
