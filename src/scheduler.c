/*
 * scheduler.c - the scheduler (see scheduler.h).
 *
 *   sched_submit --> task i: deps left? --yes--> waits for them (deps_left[i])
 *                        | no                      | sched_done of the last one
 *                        v                         v
 *                   not before a time? --yes--> [timer heap] --time passes--+
 *                        | no                                               |
 *                        v                                                  v
 *                   [the batch's ready list] <------------------------------+
 *                        | batches with ready tasks form a ring (round-robin;
 *                        | a batch at max_concurrency leaves it until a task ends)
 *                        v
 *                   destination at per_host_limit? --yes--> [its wait list]
 *                        | no                                    | a slot frees
 *                        v                                       v
 *                      worker  <-------------------------------------+
 *
 * A destination is host_key() of ops->dest; for a named host, the address
 * the name resolved to (the worker that takes the first task of a name
 * resolves it in sched_resolve, and the fetch is pinned there).
 *
 * Every task is in exactly one place at a time: waiting for dependencies,
 * on the timer heap, on its batch's ready list, parked on a destination's
 * wait list, or handed out; so each list has room for n tasks and nothing
 * is ever scanned to find what became runnable.
 */
#include "scheduler.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hash.h"
#include "metrics.h"

#define HOST_BUCKETS 1024
#define NAME_BUCKETS 256
#define KEY_SIZE     (FO_MAX_URL_LEN + 16)

/* A named destination's resolved key, kept for FO_NAME_TTL_MS so that only
 * the first task of a name in that time is resolved by fanoutd itself. */
struct name_entry {
    struct name_entry *next;
    int64_t expires_us;
    char *addr; /* the destination key it resolved to, owned */
    char key[]; /* the name's key */
};

/* A batch's parked tasks on one destination. */
struct sched_lane {
    struct sched_lane *prev, *next; /* ring of the host's lanes */
    struct sched_lane *bnext;       /* the batch's lanes */
    struct sched_batch *batch;
    struct host_slot *host;
    uint32_t *items; /* parked task indices, items[head .. head + n) */
    size_t head, n, alloc;
};

struct host_slot {
    struct host_slot *hnext; /* hash chain */
    struct host_slot *rnext; /* ready list */
    int in_ready;
    long running;             /* tasks running now */
    struct sched_lane *lanes; /* ring of lanes with parked tasks; next served first */
    char key[];               /* host_key() */
};

struct sched_batch {
    struct sched_batch *rr_prev, *rr_next; /* the ring of batches with ready tasks */
    int in_ring;
    int cancelled;
    const struct sched_ops *ops;
    void *ctx;
    size_t n;
    long per_host_limit, max_concurrency;
    uint32_t *ready; /* a ring buffer of n: ready[(rhead + k) % n], k < nready */
    size_t rhead, nready;
    size_t waiting;                   /* tasks not handed out (any list, deps included) */
    long running;                     /* handed out and not yet done */
    size_t ntimed;                    /* on the timer heap */
    uint32_t *deps_left;              /* per task, NULL: no dependencies */
    uint32_t *rdep_start, *rdep_list; /* who depends on each task */
    int64_t *not_before;              /* first not-before times, or NULL */
    struct sched_lane *lanes;
    /* v2 timings: when each task became runnable (admitted, or its last
     * dependency done), monotonic us; handed out as runnable_us. */
    int64_t *since;
};

struct timer {
    int64_t at_us;
    struct sched_batch *batch;
    uint32_t index;
};

/*
 * A worker asleep in sched_next. It lives on that worker's stack and is on
 * the scheduler's idle stack until a waker pops it: the waker takes a task
 * for it (try_locked, under the lock), stores it in `task` and posts `sem`,
 * so the worker wakes with its task in hand and does not take the lock
 * again. Popped without a task, it looks again (a new earliest timer, or
 * the scheduler stopping).
 */
struct sched_waiter {
    struct sched_waiter *next; /* the idle stack */
    sem_t sem;                 /* posted once per pop, after the lock is let go */
    int pending;               /* has_task to be, set by waiter_pop */
    _Atomic int has_task;      /* stored (release) by the poster as its last touch of
                                  the waiter, before the post: the woken worker loads it
                                  (acquire) before it reads task or reuses its stack,
                                  whichever wait woke it */
    int timed_out;             /* idle_wait: its time passed, not popped */
    struct sched_task task;
};

struct sched {
    pthread_mutex_t lock; /* guards every field below and every batch, lane, host */
    /* Idle workers, the most recently idle on top: work goes to the top
     * one (unlock_wake), so under light load a few warm workers do it and
     * the others sleep on. */
    struct sched_waiter *idle;
    struct sched_waiter *timer_watch; /* the idle worker that sleeps until the
                                         earliest timer, or NULL */
    int kick;                         /* a task may have become takeable since the lock
                                         was taken: hand out at unlock_wake */
    int timer_kick;                   /* the earliest timer moved earlier */
    /* Asked, without the lock, to start a worker for a task taken for it
     * when no worker was idle (sched_set_grow; set before any worker
     * starts); spare: how many more workers it may start. */
    void (*grow)(void *ctx, struct sched_task *first);
    void *grow_ctx;
    long spare;
    struct sched_batch *head; /* the ring; head is served next */
    long depth;               /* tasks waiting, over all batches */
    int closed, stopping;
    struct host_slot *hosts[HOST_BUCKETS];
    struct host_slot *ready; /* hosts with a free slot and parked tasks */
    struct name_entry *names[NAME_BUCKETS];
    long nnames;
    struct timer *timers; /* a binary min-heap on at_us */
    size_t ntimers, timers_alloc;
    /* Liveness: since when work has waited with no worker coming for it. */
    int64_t waiting_since_us;
};

/* ---- destination keys (pure) ------------------------------------------- */

/* ---- destination keys (pure) ------------------------------------------- */

/* Writes host (len bytes) lower-cased, without one trailing dot. */
static size_t name_key(const char *host, size_t len, char *out, size_t size)
{
    if (len > 1 && host[len - 1] == '.')
        len--;
    if (len + 1 > size)
        return 0;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)host[i]);
    out[len] = '\0';
    return len;
}

/* A numeric host as the address it is: IPv4 as dotted quad, IPv6 as
 * inet_ntop writes it in brackets, IPv4-mapped IPv6 as the IPv4 address.
 * 0 when host is not numeric. */
static size_t addr_key(const char *host, char *out, size_t size)
{
    char text[INET6_ADDRSTRLEN + 2];
    struct in6_addr a6;
    struct in_addr a4;

    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || n - 2 >= sizeof(text) || host[n - 1] != ']')
            return 0;
        memcpy(text, host + 1, n - 2);
        text[n - 2] = '\0';
        if (inet_pton(AF_INET6, text, &a6) != 1)
            return 0;
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            memcpy(&a4, &a6.s6_addr[12], 4);
            if (inet_ntop(AF_INET, &a4, text, sizeof(text)) == NULL)
                return 0;
        } else if (inet_ntop(AF_INET6, &a6, text + 1, sizeof(text) - 2) != NULL) {
            size_t w = strlen(text + 1);
            text[0] = '[';
            text[w + 1] = ']';
            text[w + 2] = '\0';
        } else {
            return 0;
        }
    } else {
        /* inet_aton takes every historical form: 127.1, 0x7f000001,
         * 2130706433, 0177.0.0.1; a name never parses as one. */
        if (strspn(host, "0123456789abcdefABCDEFxX.") != strlen(host) || inet_aton(host, &a4) == 0)
            return 0;
        if (inet_ntop(AF_INET, &a4, text, sizeof(text)) == NULL)
            return 0;
    }
    return name_key(text, strlen(text), out, size);
}

/* host_key(); *named says whether the host is a name that needs resolving
 * to know its destination (not an address, not localhost). */
static size_t key_of(const char *hostport, char *out, size_t size, int *named)
{
    const char *colon = strrchr(hostport, ':');
    char host[FO_MAX_URL_LEN + 1];
    size_t hlen, n;

    *named = 0;
    if (colon == NULL || (hlen = (size_t)(colon - hostport)) == 0 || hlen >= sizeof(host))
        return 0;
    if (hlen > 1 && hostport[hlen - 1] == '.')
        hlen--; /* "127.1." and "name." are "127.1" and "name" */
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if ((n = addr_key(host, out, size)) == 0) {
        if ((n = name_key(host, hlen, out, size)) == 0)
            return 0;
        /* localhost and names under it are loopback (RFC 6761); libcurl
         * answers them itself, without asking DNS. */
        if (strcmp(out, "localhost") == 0 || (n > 10 && strcmp(out + n - 10, ".localhost") == 0))
            n = name_key("127.0.0.1", 9, out, size);
        else
            *named = 1;
    }
    if (n == 0 || n + strlen(colon) + 1 > size)
        return 0;
    memcpy(out + n, colon, strlen(colon) + 1);
    return n + strlen(colon);
}

size_t host_key(const char *hostport, char *out, size_t size)
{
    int named;

    return key_of(hostport, out, size, &named);
}

/* The destination key of a resolved address and a port. 0 if it does not fit. */
static size_t sockaddr_key(const struct sockaddr *sa, const char *port, char *out, size_t size)
{
    char text[INET6_ADDRSTRLEN + 2];
    int n;

    if (sa->sa_family == AF_INET) {
        if (inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, text,
                      sizeof(text)) == NULL)
            return 0;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        text[0] = '[';
        if (inet_ntop(AF_INET6, a6, text + 1, sizeof(text) - 2) == NULL)
            return 0;
        size_t w = strlen(text);
        text[w] = ']';
        text[w + 1] = '\0';
        if (IN6_IS_ADDR_V4MAPPED(a6) && addr_key(text, text, sizeof(text)) == 0)
            return 0;
    } else {
        return 0;
    }
    n = snprintf(out, size, "%s:%s", text, port);
    return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

/* ---- destinations and their wait lists (queue lock held) ----------------- */

/* ---- destinations, names and wait lists (lock held) ------------------- */

static struct host_slot **host_bucket(struct sched *s, const char *key)
{
    return &s->hosts[fo_hash_str(key) % HOST_BUCKETS];
}

/* The destination key of a dest string (KEY_SIZE bytes); *named as in
 * key_of. A dest without the "host:port" shape is its own key. */
static void dest_key(const char *dest, char *key, int *named)
{
    if (key_of(dest, key, KEY_SIZE, named) == 0) {
        (void)snprintf(key, KEY_SIZE, "%s", dest);
        *named = 0;
    }
}

/* The slot of a destination, made if needed; NULL on allocation failure
 * (the task then runs uncounted). */
static struct host_slot *host_get(struct sched *s, const char *key)
{
    struct host_slot **b = host_bucket(s, key), *h;
    size_t n = strlen(key);

    for (h = *b; h != NULL; h = h->hnext) {
        if (strcmp(h->key, key) == 0)
            return h;
    }
    if ((h = calloc(1, sizeof(*h) + n + 1)) == NULL)
        return NULL;
    memcpy(h->key, key, n + 1);
    h->hnext = *b;
    *b = h;
    return h;
}

/* Forgets a destination with nothing running or parked. */
static void host_release(struct sched *s, struct host_slot *h)
{
    if (h->running > 0 || h->lanes != NULL || h->in_ready)
        return;
    for (struct host_slot **p = host_bucket(s, h->key); *p != NULL; p = &(*p)->hnext) {
        if (*p == h) {
            *p = h->hnext;
            break;
        }
    }
    free(h);
}

/* The fresh destination key a name resolved to, or NULL. */
static const char *name_lookup(struct sched *s, const char *key, int64_t now_us)
{
    for (struct name_entry *e = s->names[fo_hash_str(key) % NAME_BUCKETS]; e != NULL;
         e = e->next) {
        if (strcmp(e->key, key) == 0)
            return e->expires_us > now_us ? e->addr : NULL;
    }
    return NULL;
}

/* Drops expired names, or every name with all. */
static void names_purge(struct sched *s, int64_t now_us, int all)
{
    for (size_t b = 0; b < NAME_BUCKETS; b++) {
        for (struct name_entry **p = &s->names[b]; *p != NULL;) {
            struct name_entry *e = *p;
            if (!all && e->expires_us > now_us) {
                p = &e->next;
                continue;
            }
            *p = e->next;
            free(e->addr);
            free(e);
            s->nnames--;
        }
    }
}

/* Remembers that name key resolved to addr (best effort: nothing on
 * allocation failure or when the cache is full of fresh names). */
static void name_store(struct sched *s, const char *key, const char *addr, int64_t now_us)
{
    struct name_entry **b = &s->names[fo_hash_str(key) % NAME_BUCKETS], *e;
    char *copy = strdup(addr);

    if (copy == NULL)
        return;
    for (e = *b; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0)
            break;
    }
    if (e == NULL) {
        if (s->nnames >= FO_NAME_CACHE_MAX)
            names_purge(s, now_us, 0);
        if (s->nnames >= FO_NAME_CACHE_MAX ||
            (e = calloc(1, sizeof(*e) + strlen(key) + 1)) == NULL) {
            free(copy);
            return;
        }
        memcpy(e->key, key, strlen(key) + 1);
        e->next = *b;
        *b = e;
        s->nnames++;
    }
    free(e->addr);
    e->addr = copy;
    e->expires_us = now_us + (int64_t)FO_NAME_TTL_MS * 1000;
}

static void lane_free(struct sched_lane *l)
{
    struct host_slot *h = l->host;

    if (l->next == l) {
        h->lanes = NULL;
    } else {
        l->prev->next = l->next;
        l->next->prev = l->prev;
        if (h->lanes == l)
            h->lanes = l->next;
    }
    for (struct sched_lane **p = &l->batch->lanes; *p != NULL; p = &(*p)->bnext) {
        if (*p == l) {
            *p = l->bnext;
            break;
        }
    }
    free(l->items);
    free(l);
}

/* Parks task i of b on h's wait list; -1 on allocation failure. */
static int park(struct sched_batch *b, size_t i, struct host_slot *h)
{
    struct sched_lane *l;

    for (l = b->lanes; l != NULL && l->host != h; l = l->bnext)
        ;
    if (l == NULL) {
        if ((l = calloc(1, sizeof(*l))) == NULL)
            return -1;
        l->batch = b;
        l->host = h;
        l->bnext = b->lanes;
        b->lanes = l;
        if (h->lanes == NULL) {
            l->prev = l->next = l;
            h->lanes = l;
        } else { /* at the back of the host's round */
            l->next = h->lanes;
            l->prev = h->lanes->prev;
            h->lanes->prev->next = l;
            h->lanes->prev = l;
        }
    }
    if (l->head + l->n == l->alloc) {
        if (l->head > 0) {
            memmove(l->items, l->items + l->head, l->n * sizeof(*l->items));
            l->head = 0;
        } else {
            size_t alloc = l->alloc ? 2 * l->alloc : 8;
            uint32_t *p = realloc(l->items, alloc * sizeof(*p));
            if (p == NULL) {
                if (l->n == 0)
                    lane_free(l);
                return -1;
            }
            l->items = p;
            l->alloc = alloc;
        }
    }
    l->items[l->head + l->n++] = (uint32_t)i;
    return 0;
}

static void host_make_ready(struct sched *s, struct host_slot *h)
{
    if (h->lanes != NULL && !h->in_ready) {
        h->rnext = s->ready;
        s->ready = h;
        h->in_ready = 1;
        s->kick = 1;
    }
}

/* ---- the ring of batches and their ready lists (lock held) --------------- */

static int below_cap(const struct sched_batch *b)
{
    return b->max_concurrency <= 0 || b->running < b->max_concurrency;
}

static void ring_unlink(struct sched *s, struct sched_batch *b)
{
    if (!b->in_ring)
        return;
    if (b->rr_next == b) {
        s->head = NULL;
    } else {
        b->rr_prev->rr_next = b->rr_next;
        b->rr_next->rr_prev = b->rr_prev;
        if (s->head == b)
            s->head = b->rr_next;
    }
    b->rr_next = b->rr_prev = NULL;
    b->in_ring = 0;
}

static void ring_append(struct sched *s, struct sched_batch *b)
{
    if (b->in_ring)
        return;
    if (s->head == NULL) {
        b->rr_next = b->rr_prev = b;
        s->head = b;
    } else {
        b->rr_prev = s->head->rr_prev;
        b->rr_next = s->head;
        s->head->rr_prev->rr_next = b;
        s->head->rr_prev = b;
    }
    b->in_ring = 1;
}

/* Keeps the ring's rule: a batch is in it iff it has ready tasks and is
 * below its max_concurrency. */
static void ring_update(struct sched *s, struct sched_batch *b)
{
    if (b->nready > 0 && below_cap(b) && !b->cancelled)
        ring_append(s, b);
    else
        ring_unlink(s, b);
}

static void ready_push(struct sched *s, struct sched_batch *b, uint32_t i)
{
    b->ready[(b->rhead + b->nready) % b->n] = i;
    b->nready++;
    ring_update(s, b);
    s->kick = 1;
}

static uint32_t ready_pop(struct sched_batch *b)
{
    uint32_t i = b->ready[b->rhead];

    b->rhead = (b->rhead + 1) % b->n;
    b->nready--;
    return i;
}

/* ---- the timer heap (lock held) ---------------------------------------- */

static void heap_swap(struct timer *a, struct timer *b)
{
    struct timer t = *a;

    *a = *b;
    *b = t;
}

static void heap_down(struct sched *s, size_t k)
{
    for (;;) {
        size_t l = 2 * k + 1, m = k;
        if (l < s->ntimers && s->timers[l].at_us < s->timers[m].at_us)
            m = l;
        if (l + 1 < s->ntimers && s->timers[l + 1].at_us < s->timers[m].at_us)
            m = l + 1;
        if (m == k)
            return;
        heap_swap(&s->timers[k], &s->timers[m]);
        k = m;
    }
}

static void heap_up(struct sched *s, size_t k)
{
    while (k > 0 && s->timers[(k - 1) / 2].at_us > s->timers[k].at_us) {
        heap_swap(&s->timers[k], &s->timers[(k - 1) / 2]);
        k = (k - 1) / 2;
    }
}

/* Puts task i of b on the timer heap; -1 on allocation failure (the
 * caller then makes it ready now). */
static int timer_push(struct sched *s, struct sched_batch *b, uint32_t i, int64_t at_us)
{
    if (s->ntimers == s->timers_alloc) {
        size_t alloc = s->timers_alloc ? 2 * s->timers_alloc : 64;
        struct timer *t = realloc(s->timers, alloc * sizeof(*t));
        if (t == NULL)
            return -1;
        s->timers = t;
        s->timers_alloc = alloc;
    }
    s->timers[s->ntimers] = (struct timer){ at_us, b, i };
    heap_up(s, s->ntimers++);
    b->ntimed++;
    /* The worker watching the timers may have to wake earlier now. */
    if (s->timers[0].batch == b && s->timers[0].index == i && s->timers[0].at_us == at_us)
        s->timer_kick = 1;
    return 0;
}

/* Task i of b may be wanted now or later: onto the timer heap or ready. */
static void make_runnable(struct sched *s, struct sched_batch *b, uint32_t i, int64_t at_us,
                          int64_t now_us)
{
    if (at_us > now_us && timer_push(s, b, i, at_us) == 0)
        return;
    ready_push(s, b, i);
}

/* Moves every timer that is due to its batch's ready list. */
static void timers_due(struct sched *s, int64_t now_us)
{
    while (s->ntimers > 0 && s->timers[0].at_us <= now_us) {
        struct timer t = s->timers[0];
        s->timers[0] = s->timers[--s->ntimers];
        heap_down(s, 0);
        t.batch->ntimed--;
        ready_push(s, t.batch, t.index);
    }
}

/* Takes every timer of b off the heap (b is cancelled): O(heap), and only
 * for a batch that has timers. */
static void timers_drop(struct sched *s, struct sched_batch *b)
{
    size_t j = 0;

    if (b->ntimed == 0)
        return;
    for (size_t k = 0; k < s->ntimers; k++) {
        if (s->timers[k].batch != b)
            s->timers[j++] = s->timers[k];
    }
    s->ntimers = j;
    for (size_t k = s->ntimers / 2 + 1; k-- > 0;)
        heap_down(s, k);
    b->ntimed = 0;
}

/* ---- waking idle workers (lock held) ---------------------------------- */

static int try_locked(struct sched *s, int64_t now_us, struct sched_task *t, int64_t *wake_us);

/* Takes w off the idle stack: 1, or 0 when it was not on it (a waker
 * popped it). */
static int idle_pop(struct sched *s, struct sched_waiter *w)
{
    struct sched_waiter **p = &s->idle;

    while (*p != NULL && *p != w)
        p = &(*p)->next; /* w is almost always the top */
    if (*p == NULL)
        return 0;
    *p = w->next;
    if (s->timer_watch == w)
        s->timer_watch = NULL;
    return 1;
}

/* Pops w with has_task as set, onto *wake: the waiters to post once the
 * lock is let go (a post wakes a thread; made under the lock, it would
 * keep the lock held through a system call per worker). */
static void waiter_pop(struct sched *s, struct sched_waiter *w, int has_task,
                       struct sched_waiter **wake)
{
    (void)idle_pop(s, w);
    w->pending = has_task;
    w->next = *wake;
    *wake = w;
}

/* Posts the waiters waiter_pop gathered; no lock held. */
static void waiters_post(struct sched_waiter *wake)
{
    while (wake != NULL) {
        struct sched_waiter *w = wake;
        wake = w->next; /* before the post: w lives on its thread's stack */
        atomic_store_explicit(&w->has_task, w->pending, memory_order_release);
        sem_post(&w->sem);
    }
}

/*
 * Releases the lock after handing out what became takeable meanwhile: each
 * idle worker, top first, is given a task while there are tasks to take
 * (one futex wake each, and the worker never waits for this lock). One idle
 * worker watches the timers: it is woken when the earliest timer moves
 * earlier, and one is chosen when none watches.
 */
/* A task taken for a worker yet to be started. */
struct grow_task {
    struct grow_task *next;
    struct sched_task task;
};

static void unlock_wake(struct sched *s)
{
    struct sched_waiter *posts = NULL;
    struct grow_task *grow = NULL;

    if (s->kick && s->idle != NULL) {
        int64_t now = fo_now_us(), wake;
        while (s->idle != NULL && try_locked(s, now, &s->idle->task, &wake))
            waiter_pop(s, s->idle, 1, &posts);
    }
    if (s->idle != NULL && s->ntimers > 0 && (s->timer_watch == NULL || s->timer_kick))
        waiter_pop(s, s->timer_watch != NULL ? s->timer_watch : s->idle, 0, &posts);
    /* No worker is idle: a task that can run now (its destination and
     * batch below their limits, its time come) is taken for a new worker,
     * while the pool may start one. A task that cannot run starts none. */
    if (s->kick && s->idle == NULL && s->grow != NULL && s->spare > 0) {
        int64_t now = fo_now_us(), wake;
        while (s->spare > 0) {
            struct grow_task *g = malloc(sizeof(*g));
            if (g == NULL || !try_locked(s, now, &g->task, &wake)) {
                free(g);
                break;
            }
            s->spare--;
            g->next = grow;
            grow = g;
        }
    }
    s->kick = s->timer_kick = 0;
    pthread_mutex_unlock(&s->lock);
    waiters_post(posts);
    while (grow != NULL) {
        struct grow_task *g = grow;
        grow = g->next;
        s->grow(s->grow_ctx, &g->task);
        free(g);
    }
}

/* ---- batches --------------------------------------------------------------- */

static void batch_free(struct sched_batch *b)
{
    free(b->ready);
    free(b->deps_left);
    free(b->rdep_start);
    free(b->rdep_list);
    free(b->not_before);
    free(b->since);
    free(b);
}

/* b is done with when cancelled and nothing of it runs; returns its ctx to
 * release (after unlocking), else NULL. */
static void *batch_end(struct sched_batch *b)
{
    void *ctx = b->ctx;

    if (!b->cancelled || b->running > 0)
        return NULL;
    batch_free(b);
    return ctx;
}

/* The dependency graph of d: deps_left and the reverse lists; FO_EINVAL for
 * an index out of range or a cycle (Kahn's algorithm). */
static fo_err deps_build(struct sched_batch *b, const struct sched_batch_desc *d)
{
    size_t n = d->n, edges = d->dep_start[n], seen = 0;
    uint32_t *fill = NULL, *queue = NULL, *left = NULL;
    fo_err err = FO_ENOMEM;

    b->deps_left = calloc(n, sizeof(*b->deps_left));
    b->rdep_start = calloc(n + 1, sizeof(*b->rdep_start));
    b->rdep_list = malloc((edges ? edges : 1) * sizeof(*b->rdep_list));
    fill = calloc(n, sizeof(*fill));
    queue = malloc(n * sizeof(*queue));
    left = malloc(n * sizeof(*left));
    if (b->deps_left == NULL || b->rdep_start == NULL || b->rdep_list == NULL || fill == NULL ||
        queue == NULL || left == NULL)
        goto out;
    err = FO_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (d->dep_start[i] > d->dep_start[i + 1] || d->dep_start[i + 1] > edges)
            goto out;
        for (uint32_t k = d->dep_start[i]; k < d->dep_start[i + 1]; k++) {
            if (d->dep_list[k] >= n || d->dep_list[k] == i)
                goto out;
            b->rdep_start[d->dep_list[k] + 1]++;
        }
        b->deps_left[i] = d->dep_start[i + 1] - d->dep_start[i];
    }
    for (size_t i = 0; i < n; i++)
        b->rdep_start[i + 1] += b->rdep_start[i];
    for (size_t i = 0; i < n; i++) {
        for (uint32_t k = d->dep_start[i]; k < d->dep_start[i + 1]; k++) {
            uint32_t on = d->dep_list[k];
            b->rdep_list[b->rdep_start[on] + fill[on]++] = (uint32_t)i;
        }
    }
    /* Acyclic iff every task can be ordered. */
    size_t qh = 0, qt = 0;
    memcpy(left, b->deps_left, n * sizeof(*left));
    for (size_t i = 0; i < n; i++) {
        if (left[i] == 0)
            queue[qt++] = (uint32_t)i;
    }
    while (qh < qt) {
        uint32_t i = queue[qh++];
        seen++;
        for (uint32_t k = b->rdep_start[i]; k < b->rdep_start[i + 1]; k++) {
            if (--left[b->rdep_list[k]] == 0)
                queue[qt++] = b->rdep_list[k];
        }
    }
    err = seen == n ? FO_OK : FO_EINVAL;
out:
    free(fill);
    free(queue);
    free(left);
    return err;
}

fo_err sched_new(struct sched **out)
{
    struct sched *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL)
        return FO_ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    *out = s;
    return FO_OK;
}

void sched_free(struct sched *s)
{
    if (s == NULL)
        return;
    /* No batch is left; only destinations could be. */
    for (size_t i = 0; i < HOST_BUCKETS; i++) {
        while (s->hosts[i] != NULL) {
            struct host_slot *h = s->hosts[i];
            s->hosts[i] = h->hnext;
            free(h);
        }
    }
    names_purge(s, 0, 1);
    free(s->timers);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

fo_err sched_submit(struct sched *s, const struct sched_batch_desc *d, long capacity,
                    struct sched_batch **out)
{
    struct sched_batch *b;
    int64_t now = fo_now_us();
    fo_err err = FO_OK;

    *out = NULL;
    if (d->n == 0 || d->n > UINT32_MAX)
        return FO_EINVAL;
    if ((b = calloc(1, sizeof(*b))) == NULL)
        return FO_ENOMEM;
    b->ops = d->ops;
    b->ctx = d->ctx;
    b->n = d->n;
    b->per_host_limit = d->per_host_limit;
    b->max_concurrency = d->max_concurrency;
    b->ready = malloc(d->n * sizeof(*b->ready));
    b->since = malloc(d->n * sizeof(*b->since));
    if (b->ready == NULL || b->since == NULL)
        err = FO_ENOMEM;
    if (err == FO_OK && d->dep_start != NULL)
        err = deps_build(b, d);
    if (err == FO_OK && d->not_before_us != NULL) {
        if ((b->not_before = malloc(d->n * sizeof(*b->not_before))) == NULL)
            err = FO_ENOMEM;
        else
            memcpy(b->not_before, d->not_before_us, d->n * sizeof(*b->not_before));
    }
    if (err != FO_OK) {
        batch_free(b);
        return err;
    }

    pthread_mutex_lock(&s->lock);
    if (s->closed || s->stopping)
        err = FO_ESTOPPED;
    else if (s->depth + (long)d->n > capacity)
        err = FO_EFULL;
    if (err != FO_OK) {
        pthread_mutex_unlock(&s->lock);
        batch_free(b);
        return err;
    }
    b->waiting = d->n;
    s->depth += (long)d->n;
    for (size_t i = 0; i < d->n; i++)
        b->since[i] = now;
    for (size_t i = 0; i < d->n; i++) {
        if (b->deps_left != NULL && b->deps_left[i] > 0)
            continue; /* runnable when its dependencies are done */
        if (b->not_before != NULL && b->not_before[i] > now &&
            timer_push(s, b, (uint32_t)i, b->not_before[i]) == 0)
            continue;
        b->ready[b->nready++] = (uint32_t)i;
    }
    ring_update(s, b);
    if (s->waiting_since_us == 0)
        s->waiting_since_us = now;
    METRIC_SET(queue_depth, s->depth);
    s->kick = 1; /* as many idle workers as there are tasks take one each */
    unlock_wake(s);
    *out = b;
    return FO_OK;
}

/* ---- taking work ----------------------------------------------------------- */

/* Task i of b leaves the waiting tasks for a worker. */
static void hand_out(struct sched *s, struct sched_task *t, struct sched_batch *b, size_t i,
                     struct host_slot *h)
{
    s->depth--;
    b->waiting--;
    b->running++;
    if (h != NULL)
        h->running++;
    ring_update(s, b);
    if (b->in_ring && s->head == b)
        s->head = b->rr_next; /* round-robin: this batch goes to the back */
    memset(t, 0, sizeof(*t));
    t->batch = b;
    t->ctx = b->ctx;
    t->index = i;
    t->host = h;
    t->dest = b->ops->dest != NULL ? b->ops->dest(b->ctx, i) : NULL;
    t->runnable_us = b->since[i];
    METRIC_SET(queue_depth, s->depth);
}

/* 1 if task i's dest is a name and h, where it waited, is the address it
 * resolved to: the task must then connect to that address. */
static int pin_to(const char *dest, const struct host_slot *h)
{
    char key[KEY_SIZE];
    int named, addr_named;

    dest_key(dest, key, &named);
    return named && key_of(h->key, key, sizeof(key), &addr_named) > 0 && !addr_named;
}

/* A parked task whose destination has a free slot: 1 and *t filled. */
static int take_parked(struct sched *s, struct sched_task *t)
{
    while (s->ready != NULL) {
        struct host_slot *h = s->ready;
        struct sched_lane *l = h->lanes;

        /* The first lane (round-robin order) whose batch may run one more;
         * none when every batch waiting here is at its max_concurrency. */
        while (l != NULL && !below_cap(l->batch)) {
            l = l->next;
            if (l == h->lanes)
                l = NULL;
        }
        if (l == NULL || h->running >= l->batch->per_host_limit) {
            s->ready = h->rnext;
            h->in_ready = 0;
            host_release(s, h);
            continue;
        }
        struct sched_batch *b = l->batch;
        size_t i = l->items[l->head++];
        l->n--;
        h->lanes = l->next; /* round-robin between the batches waiting here */
        if (l->n == 0)
            lane_free(l);
        if (h->lanes == NULL || h->running + 1 >= h->lanes->batch->per_host_limit) {
            s->ready = h->rnext;
            h->in_ready = 0;
        }
        hand_out(s, t, b, i, h);
        t->pin = t->dest != NULL && pin_to(t->dest, h) ? h->key : NULL;
        return 1;
    }
    return 0;
}

/* The next ready task of the ring whose destination has a free slot; tasks
 * of busy destinations met on the way are parked, tasks that want a later
 * time go to the timer heap. */
static int take_fresh(struct sched *s, struct sched_task *t, int64_t now_us)
{
    while (s->head != NULL) {
        struct sched_batch *b = s->head;
        uint32_t i = ready_pop(b);
        struct host_slot *h = NULL;
        const char *addr = NULL, *dest;
        char key[KEY_SIZE];
        int named = 0;

        if (b->ops->not_before != NULL) {
            int64_t at = b->ops->not_before(b->ctx, i, now_us);
            if (at > now_us && timer_push(s, b, i, at) == 0) {
                ring_update(s, b);
                continue;
            }
        }
        dest = b->per_host_limit > 0 && b->ops->dest != NULL ? b->ops->dest(b->ctx, i) : NULL;
        if (dest != NULL) {
            dest_key(dest, key, &named);
            if (named && (addr = name_lookup(s, key, now_us)) == NULL) {
                hand_out(s, t, b, i, NULL); /* the worker resolves the name first */
                t->resolve = 1;
                return 1;
            }
            h = host_get(s, addr != NULL ? addr : key);
        }
        if (h != NULL && h->running >= b->per_host_limit && park(b, i, h) == 0) {
            ring_update(s, b);
            continue;
        }
        hand_out(s, t, b, i, h);
        t->pin = addr != NULL && h != NULL ? h->key : NULL;
        return 1;
    }
    return 0;
}

static int try_locked(struct sched *s, int64_t now_us, struct sched_task *t, int64_t *wake_us)
{
    /* A worker asking for work is progress: whatever waits now, waits from
     * now; nothing waiting means the pool is free. */
    s->waiting_since_us = s->depth > 0 ? now_us : 0;
    timers_due(s, now_us);
    /* A parked task was at the front of its batch when it was parked. */
    if (take_parked(s, t) || take_fresh(s, t, now_us))
        return 1;
    *wake_us = s->ntimers > 0 ? s->timers[0].at_us : 0;
    return 0;
}

int sched_try(struct sched *s, int64_t now_us, struct sched_task *t, int64_t *wake_us)
{
    int got;

    pthread_mutex_lock(&s->lock);
    got = try_locked(s, now_us, t, wake_us);
    unlock_wake(s);
    return got;
}

int sched_resolve(struct sched *s, struct sched_task *t)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    char name[KEY_SIZE], key[KEY_SIZE], addr[INET6_ADDRSTRLEN + 16];
    struct sched_batch *b = t->batch;
    const char *port;
    int named, found = 0, run = 1;
    struct host_slot *h;

    t->resolve = 0;
    dest_key(t->dest, key, &named);
    port = strrchr(key, ':') + 1; /* the key of a named dest always has ":port" */
    (void)snprintf(name, sizeof(name), "%.*s", (int)(port - 1 - key), key);
    if (getaddrinfo(name, port, &hints, &ai) == 0 && ai != NULL)
        found = sockaddr_key(ai->ai_addr, port, addr, sizeof(addr)) > 0;
    if (ai != NULL)
        freeaddrinfo(ai);

    pthread_mutex_lock(&s->lock);
    if (found)
        name_store(s, key, addr, fo_now_us());
    /* Not found: counted by name; the fetch then reports the DNS failure. */
    h = host_get(s, found ? addr : key);
    if (h != NULL && h->running >= b->per_host_limit && !b->cancelled &&
        park(b, t->index, h) == 0) {
        /* Waiting again (a cancelled batch's task runs: it is refused there). */
        s->depth++;
        b->waiting++;
        b->running--;
        ring_update(s, b);
        METRIC_SET(queue_depth, s->depth);
        run = 0;
    } else if (h != NULL) {
        h->running++;
        t->host = h;
        t->pin = found ? h->key : NULL;
    }
    unlock_wake(s);
    return run;
}

int64_t sched_run(const struct sched_task *t, void *worker)
{
    return t->batch->ops->run(t->ctx, t, worker);
}

/* The task leaves the running ones: its destination's and batch's slots
 * free up. Lock held. */
static void task_leaves(struct sched *s, struct sched_task *t)
{
    struct sched_batch *b = t->batch;
    struct host_slot *h = t->host;

    if (h != NULL) {
        h->running--;
        host_make_ready(s, h);
        host_release(s, h);
        t->host = NULL;
    }
    b->running--;
    if (b->max_concurrency > 0 && b->running == b->max_concurrency - 1) {
        /* Below its cap again: its ready and parked tasks may go. */
        ring_update(s, b);
        for (struct sched_lane *l = b->lanes; l != NULL; l = l->bnext) {
            if (l->host->running < b->per_host_limit)
                host_make_ready(s, l->host);
        }
        s->kick = 1;
    }
}

/* sched_done with the lock held: the batch's ctx to release once the lock
 * is let go (the batch is gone then), or NULL. */
static void *done_locked(struct sched *s, struct sched_task *t, int64_t now)
{
    struct sched_batch *b = t->batch;

    task_leaves(s, t);
    if (b->rdep_start != NULL && !b->cancelled) {
        for (uint32_t k = b->rdep_start[t->index]; k < b->rdep_start[t->index + 1]; k++) {
            uint32_t j = b->rdep_list[k];
            if (--b->deps_left[j] == 0) {
                b->since[j] = now;
                make_runnable(s, b, j, b->not_before != NULL ? b->not_before[j] : 0, now);
            }
        }
    }
    return batch_end(b);
}

void sched_done(struct sched *s, struct sched_task *t)
{
    const struct sched_ops *ops = t->batch->ops;
    void *release;

    pthread_mutex_lock(&s->lock);
    release = done_locked(s, t, fo_now_us());
    unlock_wake(s);
    if (release != NULL && ops->release != NULL)
        ops->release(release); /* the batch is gone */
}

void sched_retry(struct sched *s, struct sched_task *t, int64_t not_before_us)
{
    struct sched_batch *b = t->batch;
    void *release = NULL;
    const struct sched_ops *ops = b->ops;

    pthread_mutex_lock(&s->lock);
    task_leaves(s, t);
    if (!b->cancelled) {
        s->depth++;
        b->waiting++;
        make_runnable(s, b, (uint32_t)t->index, not_before_us, fo_now_us());
        METRIC_SET(queue_depth, s->depth);
    } else {
        release = batch_end(b);
    }
    unlock_wake(s);
    if (release != NULL && ops->release != NULL)
        ops->release(release);
}

/* Sleeps on the idle stack until popped (with a task, or to look again) or,
 * when w watches the timers, until wake_us. Called with the lock held and
 * w pushed; returns with the lock let go. 1: popped with w->task. */
static int idle_wait(struct sched *s, struct sched_waiter *w, int64_t wake_us,
                     const struct sched_ops *ops, void *release)
{
    int rc;

    w->timed_out = 0;
    unlock_wake(s); /* may pop w at once */
    if (release != NULL && ops->release != NULL)
        ops->release(release); /* before sleeping: the batch is gone */
    if (wake_us == 0) {
        while ((rc = sem_wait(&w->sem)) != 0 && errno == EINTR)
            ;
    } else {
        struct timespec ts = { (time_t)(wake_us / 1000000), (long)(wake_us % 1000000) * 1000 };
        while ((rc = sem_clockwait(&w->sem, CLOCK_MONOTONIC, &ts)) != 0 && errno == EINTR)
            ;
    }
    if (rc == 0)
        return atomic_load_explicit(&w->has_task, memory_order_acquire);
    /* The earliest timer is due, or the idle time is up: off the stack, unless a waker popped w
     * meanwhile (its post then comes once the waker lets the lock go). */
    pthread_mutex_lock(&s->lock);
    int popped = !idle_pop(s, w);
    pthread_mutex_unlock(&s->lock);
    if (popped) {
        while (sem_wait(&w->sem) != 0)
            ;
        return atomic_load_explicit(&w->has_task, memory_order_acquire);
    }
    w->timed_out = 1;
    return 0;
}

int sched_next(struct sched *s, struct sched_task *done, struct sched_task *t, int64_t idle_us)
{
    const struct sched_ops *ops = done != NULL ? done->batch->ops : NULL;
    struct sched_waiter w;
    void *release = NULL;
    int64_t wake, idle_end = idle_us > 0 ? fo_now_us() + idle_us : 0;
    int got = 0;

    sem_init(&w.sem, 0, 0);
    pthread_mutex_lock(&s->lock);
    if (done != NULL)
        release = done_locked(s, done, fo_now_us());
    for (;;) {
        if (s->stopping)
            break;
        if (try_locked(s, fo_now_us(), t, &wake)) {
            got = 1;
            break;
        }
        w.next = s->idle;
        atomic_store_explicit(&w.has_task, 0, memory_order_relaxed);
        s->idle = &w;
        if (wake != 0 && s->timer_watch == NULL)
            s->timer_watch = &w; /* the watcher waits for the timer only */
        else
            wake = idle_end;
        int watching = s->timer_watch == &w;
        if (idle_wait(s, &w, wake, ops, release)) {
            *t = w.task;
            sem_destroy(&w.sem);
            return 1;
        }
        release = NULL;
        if (w.timed_out && !watching && idle_end != 0 && fo_now_us() >= idle_end) {
            got = -1; /* idle for idle_us: the pool may let this worker go */
            pthread_mutex_lock(&s->lock);
            break;
        }
        pthread_mutex_lock(&s->lock);
    }
    unlock_wake(s);
    if (release != NULL && ops->release != NULL)
        ops->release(release);
    sem_destroy(&w.sem);
    return got;
}

void sched_cancel(struct sched *s, struct sched_batch *b)
{
    const struct sched_ops *ops = b->ops;
    void *release;

    pthread_mutex_lock(&s->lock);
    b->cancelled = 1;
    ring_unlink(s, b);
    b->nready = 0;
    timers_drop(s, b);
    while (b->lanes != NULL) {
        struct host_slot *h = b->lanes->host;
        lane_free(b->lanes);
        host_release(s, h);
    }
    /* Ready, parked, timed and dependent tasks alike leave the waiting. */
    s->depth -= (long)b->waiting;
    b->waiting = 0;
    METRIC_SET(queue_depth, s->depth);
    release = batch_end(b);
    unlock_wake(s);
    if (release != NULL && ops->release != NULL)
        ops->release(release);
}

void sched_set_grow(struct sched *s, void (*grow)(void *ctx, struct sched_task *first), void *ctx,
                    long spare)
{
    s->grow = grow;
    s->grow_ctx = ctx;
    s->spare = spare;
}

void sched_spare(struct sched *s, long n)
{
    pthread_mutex_lock(&s->lock);
    s->spare += n;
    s->kick = 1; /* a slot came free: what waits may get a worker now */
    unlock_wake(s);
}

void sched_close(struct sched *s)
{
    pthread_mutex_lock(&s->lock);
    s->closed = 1;
    pthread_mutex_unlock(&s->lock);
}

void sched_stop(struct sched *s)
{
    struct sched_waiter *posts = NULL;

    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    while (s->idle != NULL)
        waiter_pop(s, s->idle, 0, &posts);
    pthread_mutex_unlock(&s->lock);
    waiters_post(posts);
}

long sched_depth(struct sched *s)
{
    long depth;

    pthread_mutex_lock(&s->lock);
    depth = s->depth;
    pthread_mutex_unlock(&s->lock);
    return depth;
}

int sched_stalled(struct sched *s, int64_t now_us, int64_t stall_us)
{
    int64_t since;

    /* Work arrived and no worker has asked for more for longer than any
     * task may last: every worker is stuck, the pool is wedged. (Waiting
     * tasks may meanwhile have been dropped by their deadline.) */
    pthread_mutex_lock(&s->lock);
    since = s->waiting_since_us;
    pthread_mutex_unlock(&s->lock);
    return since != 0 && now_us - since > stall_us;
}
