/*
 * watch.c - the deadline and disconnect watcher (see watch.h).
 *
 * Entries are looked up by the job's serial number, never by pointer, so
 * an event that arrives for a job that has just been removed finds nothing
 * instead of freed memory. Locking: w.lock guards the entry table; it is
 * never held while a job is finished (job_finish calls back into
 * watch_remove through the front end). Lock order: w.lock, then the
 * scheduler's lock (job_withdraw's cancel hook).
 *
 * Many jobs that end at once (a burst of clients gone, deadlines due
 * together, shutdown) are finished in two passes: first every one of them
 * withdraws its waiting items from the queue, then each is finished. Were
 * they finished one by one, the workers freed by the first ones would start
 * the waiting items of the next ones before those are seen to be over.
 * Finishing never builds a document here: a deadline's is built on a
 * finisher thread (job.h), so one batch's merge never delays another
 * batch's deadline.
 */
#include "watch.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"

#define WATCH_EVENTS 1024 /* events taken from epoll at once */
#define WATCH_DUE    256  /* deadlines finished in one pass */
#define WAKE_TAG     0    /* epoll tag of the eventfd; job serials start at 1 */

struct entry {
    struct job *job; /* a reference */
    uint64_t serial;
    int fd; /* client socket in the epoll set, or -1 */
};

static struct watch_state {
    pthread_mutex_t lock; /* guards entries, n, alloc, next_wake_us, stopping */
    struct entry *entries;
    size_t n, alloc;
    int64_t next_wake_us; /* when the thread will wake on its own; 0: never */
    int stopping;
    int epfd, wakefd;
    pthread_t tid;
    int started;
} w = { .lock = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .wakefd = -1 };

static void wake(void)
{
    uint64_t one = 1;
    (void)!write(w.wakefd, &one, sizeof(one));
}

static struct entry *find(uint64_t serial)
{
    for (size_t i = 0; i < w.n; i++) {
        if (w.entries[i].serial == serial)
            return &w.entries[i];
    }
    return NULL;
}

/* Takes out the entry of job; returns its reference (or NULL). Lock held. */
static struct job *take_entry(uint64_t serial)
{
    struct entry *e = find(serial);
    struct job *job;

    if (e == NULL)
        return NULL;
    job = e->job;
    if (e->fd >= 0)
        (void)epoll_ctl(w.epfd, EPOLL_CTL_DEL, e->fd, NULL);
    *e = w.entries[--w.n];
    return job;
}

fo_err watch_add(struct job *job, int fd)
{
    struct epoll_event ev = { .events = EPOLLRDHUP, .data.u64 = job_serial(job) };
    int need_wake;

    pthread_mutex_lock(&w.lock);
    if (w.n == w.alloc) {
        size_t alloc = w.alloc ? w.alloc * 2 : 64;
        struct entry *p = realloc(w.entries, alloc * sizeof(*p));
        if (p == NULL) {
            pthread_mutex_unlock(&w.lock);
            return FO_ENOMEM;
        }
        w.entries = p;
        w.alloc = alloc;
    }
    if (fd >= 0 && epoll_ctl(w.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        log_warn("cannot watch client socket %d: %s", fd, strerror(errno));
        fd = -1; /* the deadline is still watched */
    }
    job_set_client_fd(job, fd); /* before the job is queued: workers look at it too */
    w.entries[w.n++] = (struct entry){ job_ref(job), job_serial(job), fd };
    need_wake = w.next_wake_us == 0 || job_deadline_us(job) < w.next_wake_us;
    pthread_mutex_unlock(&w.lock);
    if (need_wake)
        wake();
    return FO_OK;
}

void watch_remove(struct job *job)
{
    struct job *ref;

    pthread_mutex_lock(&w.lock);
    ref = take_entry(job_serial(job));
    pthread_mutex_unlock(&w.lock);
    job_unref(ref);
}

size_t watch_finish_all(enum finish_reason reason)
{
    size_t done = 0;

    pthread_mutex_lock(&w.lock);
    for (size_t i = 0; i < w.n; i++) {
        if (!job_stopped(w.entries[i].job))
            job_withdraw(w.entries[i].job);
    }
    pthread_mutex_unlock(&w.lock);
    for (;;) {
        struct job *job = NULL;
        pthread_mutex_lock(&w.lock);
        /* Finishing removes the entry (through the front end's callback). */
        for (size_t i = 0; i < w.n && job == NULL; i++) {
            if (!job_stopped(w.entries[i].job))
                job = job_ref(w.entries[i].job);
        }
        pthread_mutex_unlock(&w.lock);
        if (job == NULL)
            return done;
        done += (size_t)job_finish(job, reason);
        job_unref(job);
    }
}

/* Finishes the jobs whose deadline has passed; returns the next deadline. */
static int64_t expire(int64_t now)
{
    struct job *due[WATCH_DUE];

    for (;;) {
        size_t ndue = 0;
        int64_t next = 0;

        pthread_mutex_lock(&w.lock);
        for (size_t i = 0; i < w.n; i++) {
            struct job *job = w.entries[i].job;
            if (job_stopped(job))
                continue;
            if (job_deadline_us(job) <= now && ndue < WATCH_DUE) {
                job_withdraw(job);
                due[ndue++] = job_ref(job);
            } else if (next == 0 || job_deadline_us(job) < next) {
                next = job_deadline_us(job);
            }
        }
        w.next_wake_us = next;
        pthread_mutex_unlock(&w.lock);
        if (ndue == 0)
            return next;
        for (size_t i = 0; i < ndue; i++) {
            job_finish(due[i], FINISH_DEADLINE);
            job_unref(due[i]);
        }
    }
}

/* The clients of the events' jobs went away: every such job first leaves
 * the queue, then each is finished. */
static void clients_gone(const struct epoll_event *evs, int n)
{
    struct job *gone[WATCH_EVENTS];
    size_t ngone = 0;

    pthread_mutex_lock(&w.lock);
    for (int i = 0; i < n; i++) {
        struct entry *e = evs[i].data.u64 == WAKE_TAG ? NULL : find(evs[i].data.u64);
        if (e == NULL)
            continue;
        if (e->fd >= 0)
            (void)epoll_ctl(w.epfd, EPOLL_CTL_DEL, e->fd, NULL);
        e->fd = -1;
        job_withdraw(e->job);
        gone[ngone++] = job_ref(e->job);
    }
    pthread_mutex_unlock(&w.lock);
    for (size_t i = 0; i < ngone; i++) {
        log_debug("client of batch %llu went away; cancelling it",
                  (unsigned long long)job_serial(gone[i]));
        job_finish(gone[i], FINISH_CLIENT);
        job_unref(gone[i]);
    }
}

static void *watch_main(void *arg)
{
    static struct epoll_event evs[WATCH_EVENTS]; /* only this thread uses it */
    (void)arg;

    for (;;) {
        int64_t now = fo_now_us(), next = expire(now);
        int timeout = -1;

        pthread_mutex_lock(&w.lock);
        int stopping = w.stopping;
        pthread_mutex_unlock(&w.lock);
        if (stopping)
            break;
        if (next != 0)
            timeout = (int)((next - now + 999) / 1000);
        int n = epoll_wait(w.epfd, evs, WATCH_EVENTS, timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == WAKE_TAG) {
                uint64_t v;
                (void)!read(w.wakefd, &v, sizeof(v));
            }
        }
        if (n > 0)
            clients_gone(evs, n);
    }
    return NULL;
}

fo_err watch_start(void)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = WAKE_TAG };

    w.epfd = epoll_create1(EPOLL_CLOEXEC);
    w.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w.epfd < 0 || w.wakefd < 0 || epoll_ctl(w.epfd, EPOLL_CTL_ADD, w.wakefd, &ev) != 0) {
        log_error("cannot set up the watcher: %s", strerror(errno));
        return FO_ESYS;
    }
    if (pthread_create(&w.tid, NULL, watch_main, NULL) != 0)
        return FO_ESYS;
    w.started = 1;
    return FO_OK;
}

void watch_stop(void)
{
    if (w.started) {
        pthread_mutex_lock(&w.lock);
        w.stopping = 1;
        pthread_mutex_unlock(&w.lock);
        wake();
        pthread_join(w.tid, NULL);
        w.started = 0;
    }
    for (size_t i = 0; i < w.n; i++)
        job_unref(w.entries[i].job);
    FO_FREE(w.entries);
    w.n = w.alloc = 0;
    if (w.epfd >= 0)
        close(w.epfd);
    if (w.wakefd >= 0)
        close(w.wakefd);
    w.epfd = w.wakefd = -1;
}
