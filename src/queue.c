/*
 * queue.c - the work queue and the worker threads (see queue.h).
 *
 *   front end --queue_push--> [ring of jobs with waiting items] --take--> worker
 *                                 | destination at its limit       ^      |
 *                                 v                                |      |
 *                      [that destination's wait list] --a slot frees      |
 *                       job_complete_item(job, i, result) <--fetch--------+
 *
 * With per_host_limit, an item's destination is its host_key(); for a
 * named host, the address the name resolved to (the worker that takes the
 * first item of a name resolves it, and the fetch is pinned there).
 *
 * Locking: q.lock guards everything in struct queue_state and the queue
 * fields of every job (pending, npending, ring links, lanes). It is never
 * held while a job's own lock is taken, during a fetch or while resolving.
 */
#include "queue.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "fetch.h"
#include "job.h"
#include "log.h"
#include "metrics.h"

/*
 * per_host_limit: a destination (struct host_slot, keyed by host_key())
 * counts its running fetches. An item whose destination is at its limit
 * is parked on that destination's wait list, in a lane of its job; the
 * lanes of one destination form a ring served round-robin, so batches
 * share a busy destination fairly too. When a fetch ends, its destination
 * goes on the ready list if it has parked items, and the next worker takes
 * one from there. Picking work never scans parked items.
 */
#define HOST_BUCKETS 1024
#define NAME_BUCKETS 256

/* A named destination's resolved key, kept for FO_NAME_TTL_MS so that only
 * the first item of a name in that time is resolved by fanoutd itself. */
struct name_entry {
    struct name_entry *next;
    int64_t expires_us;
    char *addr; /* the destination key it resolved to, owned */
    char key[]; /* the name's key */
};

struct queue_lane {
    struct queue_lane *prev, *next; /* ring of the host's lanes */
    struct queue_lane *jnext;       /* the job's lanes */
    struct job *job;                /* borrowed: the job's queue reference covers it */
    struct host_slot *host;
    uint32_t *items; /* parked item indices, items[head .. head + n) */
    size_t head, n, alloc;
};

struct host_slot {
    struct host_slot *hnext; /* hash chain */
    struct host_slot *rnext; /* ready list */
    int in_ready;
    long running;             /* fetches running now */
    struct queue_lane *lanes; /* ring of lanes with parked items; next served first */
    char key[];               /* host_key() */
};

struct worker {
    pthread_t tid;
    struct fetcher *fetcher;
};

/* One task handed to a worker. */
struct task {
    struct job *job; /* a reference owned by the worker */
    size_t index;
    struct host_slot *host; /* counted against per_host_limit there, or NULL */
    int resolve;            /* a named host: the worker resolves it first */
    int pin;                /* connect to host->key (a resolved address) */
};

static struct queue_state {
    pthread_mutex_t lock;                   /* guards every field below */
    pthread_cond_t work;                    /* signalled when an item may be taken */
    struct job *head;                       /* the ring; head is served next */
    long depth;                             /* items waiting, over all jobs */
    int closed;                             /* no new jobs (draining) */
    int stopping;                           /* workers exit */
    struct host_slot *hosts[HOST_BUCKETS];  /* destinations with running or parked items */
    struct host_slot *ready;                /* hosts with a free slot and parked items */
    struct name_entry *names[NAME_BUCKETS]; /* resolved names (per_host_limit) */
    long nnames;
    struct worker *workers;
    long nworkers;
    /* Liveness: since when work has waited with no worker coming for it
     * (0: a worker was free or took work since). Set by push, cleared or
     * restarted whenever a worker asks for work. */
    int64_t waiting_since_us;
} q = { .lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER };

/* Testing aid (FANOUTD_TEST_WEDGE_WORKERS set at start): workers never take
 * work, so the watchdog's stall detection can be shown. Read-only after
 * queue_start. */
static int wedge_workers;

static void ring_unlink(struct job *job)
{
    if (job->rr_next == job) {
        q.head = NULL;
    } else {
        job->rr_prev->rr_next = job->rr_next;
        job->rr_next->rr_prev = job->rr_prev;
        if (q.head == job)
            q.head = job->rr_next;
    }
    job->rr_next = job->rr_prev = NULL;
    job->in_ring = 0;
}

static void ring_append(struct job *job)
{
    if (q.head == NULL) {
        job->rr_next = job->rr_prev = job;
        q.head = job;
    } else {
        job->rr_prev = q.head->rr_prev;
        job->rr_next = q.head;
        q.head->rr_prev->rr_next = job;
        q.head->rr_prev = job;
    }
    job->in_ring = 1;
}

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

static uint32_t fnv(const char *key);

static struct host_slot **host_bucket(const char *key)
{
    return &q.hosts[fnv(key) % HOST_BUCKETS];
}

/* The destination key of item i (KEY_SIZE bytes); *named as in key_of. */
#define KEY_SIZE (FO_MAX_URL_LEN + 16)
static void item_key(const struct job *job, size_t i, char *key, int *named)
{
    if (key_of(job->req.items[i].hostkey, key, KEY_SIZE, named) == 0) {
        /* no "host:port" shape: the spelling is the key */
        (void)snprintf(key, KEY_SIZE, "%s", job->req.items[i].hostkey);
        *named = 0;
    }
}

/* The slot of a destination, made if needed; NULL on allocation failure
 * (the item then runs uncounted). */
static struct host_slot *host_get(const char *key)
{
    struct host_slot **b, *h;
    size_t n = strlen(key);

    b = host_bucket(key);
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
static void host_release(struct host_slot *h)
{
    if (h->running > 0 || h->lanes != NULL || h->in_ready)
        return;
    for (struct host_slot **p = host_bucket(h->key); *p != NULL; p = &(*p)->hnext) {
        if (*p == h) {
            *p = h->hnext;
            break;
        }
    }
    free(h);
}

static uint32_t fnv(const char *key)
{
    uint32_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

/* The fresh destination key a name resolved to, or NULL. */
static const char *name_lookup(const char *key, int64_t now_us)
{
    for (struct name_entry *e = q.names[fnv(key) % NAME_BUCKETS]; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0)
            return e->expires_us > now_us ? e->addr : NULL;
    }
    return NULL;
}

/* Drops expired names, or every name with all. */
static void names_purge(int64_t now_us, int all)
{
    for (size_t b = 0; b < NAME_BUCKETS; b++) {
        for (struct name_entry **p = &q.names[b]; *p != NULL;) {
            struct name_entry *e = *p;
            if (!all && e->expires_us > now_us) {
                p = &e->next;
                continue;
            }
            *p = e->next;
            free(e->addr);
            free(e);
            q.nnames--;
        }
    }
}

/* Remembers that name key resolved to addr (best effort: nothing on
 * allocation failure or when the cache is full of fresh names). */
static void name_store(const char *key, const char *addr, int64_t now_us)
{
    struct name_entry **b = &q.names[fnv(key) % NAME_BUCKETS], *e;
    char *copy = strdup(addr);

    if (copy == NULL)
        return;
    for (e = *b; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0)
            break;
    }
    if (e == NULL) {
        if (q.nnames >= FO_NAME_CACHE_MAX)
            names_purge(now_us, 0);
        if (q.nnames >= FO_NAME_CACHE_MAX ||
            (e = calloc(1, sizeof(*e) + strlen(key) + 1)) == NULL) {
            free(copy);
            return;
        }
        memcpy(e->key, key, strlen(key) + 1);
        e->next = *b;
        *b = e;
        q.nnames++;
    }
    free(e->addr);
    e->addr = copy;
    e->expires_us = now_us + (int64_t)FO_NAME_TTL_MS * 1000;
}

static long limit_of(const struct job *job)
{
    return job->cfg->per_host_limit;
}

static void lane_free(struct queue_lane *l)
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
    for (struct queue_lane **p = &l->job->lanes; *p != NULL; p = &(*p)->jnext) {
        if (*p == l) {
            *p = l->jnext;
            break;
        }
    }
    free(l->items);
    free(l);
}

/* Parks item i of job on h's wait list; -1 on allocation failure. */
static int park(struct job *job, size_t i, struct host_slot *h)
{
    struct queue_lane *l;

    for (l = job->lanes; l != NULL && l->host != h; l = l->jnext)
        ;
    if (l == NULL) {
        if ((l = calloc(1, sizeof(*l))) == NULL)
            return -1;
        l->job = job;
        l->host = h;
        l->jnext = job->lanes;
        job->lanes = l;
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
    job->nparked++;
    return 0;
}

/* ---- taking work ----------------------------------------------------------- */

/* 1 if item i's host is a name and h, where it waited, is the address it
 * resolved to: the fetch must then go to that address. */
static int pin_to(const struct job *job, size_t i, const struct host_slot *h)
{
    char key[KEY_SIZE];
    int named, addr_named;

    item_key(job, i, key, &named);
    return named && key_of(h->key, key, sizeof(key), &addr_named) > 0 && !addr_named;
}

/* The task for item i of job, taken out of the queue: the queue's
 * reference passes to the worker when nothing of the job waits any more. */
static void hand_out(struct task *t, struct job *job, size_t i, struct host_slot *h)
{
    q.depth--;
    if (job->npending == 0 && job->in_ring)
        ring_unlink(job);
    if (job->npending == 0 && job->nparked == 0) {
        job->in_queue = 0;
    } else {
        job_ref(job);
        if (job->in_ring && q.head == job)
            q.head = job->rr_next; /* round-robin: this job goes to the back */
    }
    if (h != NULL)
        h->running++;
    t->job = job;
    t->index = i;
    t->host = h;
    t->resolve = 0;
    t->pin = 0;
    METRIC_SET(queue_depth, q.depth);
}

/* A parked item whose destination has a free slot: 1 and *t filled, else 0. */
static int take_parked(struct task *t)
{
    while (q.ready != NULL) {
        struct host_slot *h = q.ready;
        struct queue_lane *l = h->lanes;
        if (l == NULL || h->running >= limit_of(l->job)) {
            q.ready = h->rnext;
            h->in_ready = 0;
            host_release(h);
            continue;
        }
        struct job *job = l->job;
        size_t i = l->items[l->head++];
        l->n--;
        job->nparked--;
        h->lanes = l->next; /* round-robin between the batches waiting here */
        if (l->n == 0)
            lane_free(l);
        if (h->lanes == NULL || h->running + 1 >= limit_of(h->lanes->job)) {
            q.ready = h->rnext;
            h->in_ready = 0;
        }
        hand_out(t, job, i, h);
        t->pin = pin_to(job, i, h);
        return 1;
    }
    return 0;
}

/* The next item of the ring of jobs whose destination has a free slot;
 * items of busy destinations met on the way are parked. */
static int take_fresh(struct task *t)
{
    while (q.head != NULL) {
        struct job *job = q.head;
        size_t i = job->pending[job->phead];
        struct host_slot *h = NULL;
        const char *addr = NULL;
        char key[KEY_SIZE];
        int named = 0;

        job->phead++;
        job->npending--;
        if (limit_of(job) > 0) {
            item_key(job, i, key, &named);
            if (named && (addr = name_lookup(key, fo_now_us())) == NULL) {
                hand_out(t, job, i, NULL); /* the worker resolves the name first */
                t->resolve = 1;
                return 1;
            }
            h = host_get(addr != NULL ? addr : key);
        }
        if (h != NULL && h->running >= limit_of(job) && park(job, i, h) == 0) {
            if (job->npending == 0)
                ring_unlink(job); /* its queue reference stays: items are parked */
            continue;
        }
        hand_out(t, job, i, h);
        t->pin = addr != NULL && h != NULL;
        return 1;
    }
    return 0;
}

/* Takes the next task; 0 when the workers are stopping. Called with the lock. */
static int take(struct task *t)
{
    for (;;) {
        if (q.stopping)
            return 0;
        /* A worker asking for work is progress: whatever waits now, waits
         * from now; nothing waiting means the pool is free. */
        q.waiting_since_us = q.depth > 0 ? fo_now_us() : 0;
        /* A parked item was at the front of its batch when it was parked. */
        if (take_parked(t) || take_fresh(t))
            return 1;
        pthread_cond_wait(&q.work, &q.lock);
    }
}

/*
 * A named item's destination, found by the worker that took it: resolves
 * the host (blocking, without the lock), remembers the address for
 * FO_NAME_TTL_MS, and counts the item against that address. Returns 1 if
 * the worker should run it (t->host and t->pin set), 0 if it was parked
 * behind its destination's limit (then the worker's reference on the job
 * has gone to the queue or been dropped).
 */
static int resolve_task(struct task *t)
{
    const struct job *job = t->job;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    char name[KEY_SIZE], key[KEY_SIZE], addr[INET6_ADDRSTRLEN + 16];
    const char *port;
    int named, found = 0, run = 1, keep_ref = 0;
    struct host_slot *h;

    item_key(job, t->index, key, &named);
    port = strrchr(key, ':') + 1; /* item_key of a named host always has ":port" */
    (void)snprintf(name, sizeof(name), "%.*s", (int)(port - 1 - key), key);
    if (getaddrinfo(name, port, &hints, &ai) == 0 && ai != NULL)
        found = sockaddr_key(ai->ai_addr, port, addr, sizeof(addr)) > 0;
    if (ai != NULL)
        freeaddrinfo(ai);

    pthread_mutex_lock(&q.lock);
    if (found)
        name_store(key, addr, fo_now_us());
    /* Not found: counted by name; the fetch then reports the DNS failure. */
    h = host_get(found ? addr : key);
    if (h != NULL && h->running >= limit_of(job) && !atomic_load(&job->stop) &&
        park(t->job, t->index, h) == 0) {
        /* Waiting again. A finished job's queue_drop has not run yet (stop
         * is set before it, and it takes this lock), so it will drop it. */
        q.depth++;
        METRIC_SET(queue_depth, q.depth);
        if (!t->job->in_queue)
            t->job->in_queue = keep_ref = 1; /* the worker's reference goes to the queue */
        run = 0;
    } else if (h != NULL) {
        h->running++;
        t->host = h;
        t->pin = found;
    }
    pthread_mutex_unlock(&q.lock);
    if (!run && !keep_ref)
        job_unref(t->job);
    return run;
}

static void task_done(struct task *t)
{
    struct host_slot *h = t->host;

    if (h == NULL)
        return;
    pthread_mutex_lock(&q.lock);
    h->running--;
    if (h->lanes != NULL && !h->in_ready) {
        h->rnext = q.ready;
        q.ready = h;
        h->in_ready = 1;
        pthread_cond_signal(&q.work);
    }
    host_release(h);
    pthread_mutex_unlock(&q.lock);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct task t;

    if (wedge_workers) {
        pthread_mutex_lock(&q.lock);
        while (!q.stopping)
            pthread_cond_wait(&q.work, &q.lock);
        pthread_mutex_unlock(&q.lock);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&q.lock);
        int got = take(&t);
        pthread_mutex_unlock(&q.lock);
        if (!got)
            break;
        if (t.resolve && !resolve_task(&t))
            continue; /* parked behind its destination's limit */
        fetch_prepare(w->fetcher, t.job->cfg->generation);
        if (job_begin_item(t.job, t.index, w->fetcher)) {
            struct result res = { 0 };
            struct fetch_req fr;
            METRIC_ADD(workers_busy, 1);
            if (job_request(t.job, t.index, &fr) != FO_OK) {
                result_fail(&res, ERR_UPSTREAM, "out of memory");
            } else {
                if (t.pin) {
                    fr.pin_hostport = t.job->req.items[t.index].hostkey;
                    fr.pin_addr = t.host->key;
                }
                fetch_run(w->fetcher, &fr, &res);
                fetch_req_free(&fr);
            }
            METRIC_ADD(workers_busy, -1);
            job_complete_item(t.job, t.index, &res);
        }
        task_done(&t);
        job_unref(t.job);
    }
    return NULL;
}

fo_err queue_start(long workers, struct fetch_env *env)
{
    pthread_attr_t attr;
    fo_err err = FO_OK;

    wedge_workers = getenv("FANOUTD_TEST_WEDGE_WORKERS") != NULL;
    if (wedge_workers)
        log_warn("FANOUTD_TEST_WEDGE_WORKERS is set: workers will take no work (testing aid)");
    q.workers = calloc((size_t)workers, sizeof(*q.workers));
    if (q.workers == NULL)
        return FO_ENOMEM;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, FO_WORKER_STACK);
    for (long i = 0; i < workers; i++) {
        struct worker *w = &q.workers[i];
        if ((w->fetcher = fetcher_new(env)) == NULL) {
            err = FO_ENOMEM;
            break;
        }
        if (pthread_create(&w->tid, &attr, worker_main, w) != 0) {
            fetcher_free(w->fetcher);
            log_error("cannot start worker %ld of %ld", i + 1, workers);
            err = FO_ESYS;
            break;
        }
        q.nworkers++;
    }
    pthread_attr_destroy(&attr);
    METRIC_SET(workers, q.nworkers);
    if (err != FO_OK)
        queue_stop();
    return err;
}

fo_err queue_push(struct job *job, long capacity)
{
    long n = (long)job->npending;

    pthread_mutex_lock(&q.lock);
    if (q.closed || q.stopping) {
        pthread_mutex_unlock(&q.lock);
        return FO_ESTOPPED;
    }
    if (q.depth + n > capacity) {
        pthread_mutex_unlock(&q.lock);
        return FO_EFULL;
    }
    ring_append(job_ref(job));
    job->in_queue = 1;
    q.depth += n;
    if (q.waiting_since_us == 0)
        q.waiting_since_us = fo_now_us();
    METRIC_SET(queue_depth, q.depth);
    if (n >= q.nworkers)
        pthread_cond_broadcast(&q.work);
    else
        for (long i = 0; i < n; i++)
            pthread_cond_signal(&q.work);
    pthread_mutex_unlock(&q.lock);
    return FO_OK;
}

void queue_drop(struct job *job)
{
    int unref = 0;

    pthread_mutex_lock(&q.lock);
    if (job->in_ring) {
        q.depth -= (long)job->npending;
        job->npending = 0;
        ring_unlink(job);
    }
    while (job->lanes != NULL) {
        struct host_slot *h = job->lanes->host;
        q.depth -= (long)job->lanes->n;
        lane_free(job->lanes);
        host_release(h);
    }
    job->nparked = 0;
    if (job->in_queue) {
        job->in_queue = 0;
        unref = 1;
    }
    METRIC_SET(queue_depth, q.depth);
    pthread_mutex_unlock(&q.lock);
    if (unref)
        job_unref(job); /* the caller holds its own reference */
}

void queue_close(void)
{
    pthread_mutex_lock(&q.lock);
    q.closed = 1;
    pthread_mutex_unlock(&q.lock);
}

void queue_stop(void)
{
    pthread_mutex_lock(&q.lock);
    q.stopping = 1;
    pthread_cond_broadcast(&q.work);
    pthread_mutex_unlock(&q.lock);
    for (long i = 0; i < q.nworkers; i++) {
        pthread_join(q.workers[i].tid, NULL);
        fetcher_free(q.workers[i].fetcher);
    }
    FO_FREE(q.workers);
    q.nworkers = 0;
    /* No job is left; only destinations could be. */
    for (size_t i = 0; i < HOST_BUCKETS; i++) {
        while (q.hosts[i] != NULL) {
            struct host_slot *h = q.hosts[i];
            q.hosts[i] = h->hnext;
            free(h);
        }
    }
    q.ready = NULL;
    names_purge(0, 1);
}

long queue_depth(void)
{
    long depth;

    pthread_mutex_lock(&q.lock);
    depth = q.depth;
    pthread_mutex_unlock(&q.lock);
    return depth;
}

int queue_stalled(int64_t now_us, int64_t stall_us)
{
    int64_t since;

    /* Work arrived and no worker has asked for more for longer than any
     * fetch may last: every worker is stuck, the pool is wedged. (Waiting
     * items may meanwhile have been dropped by their deadline.) */
    pthread_mutex_lock(&q.lock);
    since = q.waiting_since_us;
    pthread_mutex_unlock(&q.lock);
    return since != 0 && now_us - since > stall_us;
}
