/*
 * daemon.c - the daemon's lifecycle (see daemon.h): the one module that
 * starts and stops the front end, the watcher, the finishers, the workers
 * and the fetch environment, in order. The front end (server.c) does HTTP
 * only and includes neither curl.h nor fetch.h.
 */
#include "daemon.h"

#include "answer.h"
#include "fetch.h"
#include "job.h"
#include "log.h"
#include "queue.h"
#include "server.h"
#include "watch.h"

/* Main thread only. */
static struct daemon_state {
    struct fetch_env env;
    int env_ready, finishers_ready, watch_ready, queue_ready, server_ready;
} d;

fo_err daemon_start(struct config *cfg, int listen_fd)
{
    struct sockaddr_storage bound;
    socklen_t bound_len;
    fo_err err;

    if ((err = server_listen_address(cfg, listen_fd, &bound, &bound_len)) != FO_OK)
        return err;
    if ((err = fetch_env_init(&d.env, (struct sockaddr *)&bound, bound_len)) != FO_OK) {
        log_error("cannot set up libcurl: %s", fo_strerror(err));
        return err;
    }
    d.env_ready = 1;
    if ((err = job_finisher_start()) != FO_OK)
        return err;
    d.finishers_ready = 1;
    if ((err = watch_start()) != FO_OK)
        return err;
    d.watch_ready = 1;
    if ((err = queue_start(cfg->workers, &d.env)) != FO_OK) {
        log_error("cannot start %ld workers: %s", cfg->workers, fo_strerror(err));
        return err;
    }
    d.queue_ready = 1;
    d.server_ready = 1; /* server_stop is safe after a failed start too */
    return server_start(cfg, listen_fd);
}

void daemon_drain(void)
{
    server_drain();
    queue_close();
}

void daemon_cancel_all(void)
{
    server_cut_grace();
    size_t n = watch_finish_all(FINISH_SHUTDOWN);
    if (n > 0)
        log_warn("shutdown grace over: %zu batches answered with cancelled items", n);
}

void daemon_stop(void)
{
    if (d.server_ready)
        server_flush();
    if (d.queue_ready)
        queue_stop();
    d.queue_ready = 0;
    job_finisher_stop();
    answer_stream_shutdown(); /* no heartbeat resumes a connection past here */
    server_stop();
    d.server_ready = 0;
    if (d.watch_ready)
        watch_stop();
    d.watch_ready = 0;
    if (d.env_ready)
        fetch_env_free(&d.env);
    d.env_ready = 0;
}

int daemon_stalled(int64_t now_us, int64_t stall_us)
{
    return queue_stalled(now_us, stall_us);
}

long daemon_queue_depth(void)
{
    return queue_depth();
}
