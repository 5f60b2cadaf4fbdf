/*
 * share.c - coalescing of identical in-flight fetches and the answer cache
 * (see share.h). One mutex guards both tables.
 *
 *   in flight: key -> struct share_entry (leader runs the fetch; riders
 *              wait on the entry's condition variable for a copy)
 *   cache:     key -> struct cache_entry, on one LRU list (most recent
 *              first), counted in bytes against cache_max_bytes
 */
#include "share.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "fanoutd.h"
#include "hash.h"
#include "metrics.h"

#define SHARE_BUCKETS 256
#define CACHE_BUCKETS 4096

struct share_entry {
    struct share_entry *next; /* hash chain, while in the table */
    char *key;                /* owned */
    uint64_t hash;
    int in_table;         /* new items may join it */
    int leading;          /* a worker runs its fetch now */
    int leader_gone;      /* that worker's batch has finished */
    int handover;         /* the leader's time ran out: a rider leads next */
    int done;             /* res is published */
    size_t riders;        /* riders waiting */
    size_t refs;          /* the leader and the riders */
    struct result res;    /* the shared result, once done */
    _Atomic int stop;     /* the fetch polls it: nobody waits any more */
    void (*wake)(void *); /* wakes the leader's fetch */
    void *wake_arg;
    pthread_cond_t cond; /* riders wait here (CLOCK_MONOTONIC) */
};

struct cache_entry {
    struct cache_entry *next;          /* hash chain */
    struct cache_entry *newer, *older; /* the LRU list */
    char *key;
    uint64_t hash;
    struct result res;
    int64_t expires_us;
    size_t bytes;
};

static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;
static struct share_entry *inflight[SHARE_BUCKETS];
static struct cache_entry *cached[CACHE_BUCKETS];
static struct cache_entry *lru_newest, *lru_oldest;
static size_t cache_bytes;

/* ---- the key ----------------------------------------------------------- */

static int header_named(const char *line, const char *name)
{
    size_t n = strlen(name);

    return strncasecmp(line, name, n) == 0 && (line[n] == ':' || line[n] == ';');
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

fo_err share_key(const struct fetch_req *req, unsigned long generation, char **out)
{
    const char **lines = NULL;
    size_t n = 0;
    struct buf key;
    fo_err err = FO_OK;

    *out = NULL;
    if ((req->method != M_GET && req->method != M_HEAD) || req->body != NULL)
        return FO_OK;
    if ((lines = malloc((req->nheaders + 1) * sizeof(*lines))) == NULL)
        return FO_ENOMEM;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (header_named(req->headers[i], "traceparent") ||
            header_named(req->headers[i], "tracestate"))
            continue;
        lines[n++] = req->headers[i];
    }
    /* Identical sets of headers in another order are the same request. */
    qsort(lines, n, sizeof(*lines), cmp_lines);
    buf_init(&key, 0);
    err = buf_printf(&key, "%lu\n%s\n%s\n", generation, http_method_name(req->method), req->url);
    for (size_t i = 0; i < n && err == FO_OK; i++)
        err = buf_printf(&key, "%s\n", lines[i]);
    if (err == FO_OK && req->cdn_loop != NULL)
        err = buf_printf(&key, "%s\n", req->cdn_loop);
    /* What the result keeps of the response is part of what is shared. */
    for (size_t i = 0; i < req->nkeep_headers && err == FO_OK; i++)
        err = buf_printf(&key, "K:%s\n", req->keep_headers[i]);
    free(lines);
    if (err != FO_OK) {
        buf_free(&key);
        return err;
    }
    *out = buf_steal(&key, NULL);
    return FO_OK;
}

fo_err share_result_copy(const struct result *in, struct result *out)
{
    *out = *in;
    out->content_type = NULL;
    out->message = NULL;
    out->body = NULL;
    out->hdr_names = NULL; /* the kept response headers: a copy of its own */
    out->hdr_values = NULL;
    out->nhdr = 0;
    out->effective_url = NULL;
    if ((in->content_type != NULL && (out->content_type = strdup(in->content_type)) == NULL) ||
        (in->message != NULL && (out->message = strdup(in->message)) == NULL) ||
        (in->effective_url != NULL && (out->effective_url = strdup(in->effective_url)) == NULL))
        goto fail;
    if (in->body != NULL) {
        if ((out->body = malloc(in->body_len + 1)) == NULL)
            goto fail;
        memcpy(out->body, in->body, in->body_len);
        out->body[in->body_len] = '\0';
    }
    if (in->nhdr > 0) {
        if ((out->hdr_names = calloc(in->nhdr, sizeof(*out->hdr_names))) == NULL ||
            (out->hdr_values = calloc(in->nhdr, sizeof(*out->hdr_values))) == NULL)
            goto fail;
        out->nhdr = in->nhdr; /* result_clear frees what was copied so far */
        for (size_t i = 0; i < in->nhdr; i++) {
            if ((out->hdr_names[i] = strdup(in->hdr_names[i])) == NULL ||
                (out->hdr_values[i] = strdup(in->hdr_values[i])) == NULL)
                goto fail;
        }
    }
    return FO_OK;
fail:
    result_clear(out);
    return FO_ENOMEM;
}

/* ---- cache (share_lock held) --------------------------------------------- */

static struct cache_entry *cache_find(const char *key, uint64_t h)
{
    for (struct cache_entry *c = cached[h % CACHE_BUCKETS]; c != NULL; c = c->next) {
        if (c->hash == h && strcmp(c->key, key) == 0)
            return c;
    }
    return NULL;
}

static void lru_unlink(struct cache_entry *c)
{
    if (c->newer != NULL)
        c->newer->older = c->older;
    else
        lru_newest = c->older;
    if (c->older != NULL)
        c->older->newer = c->newer;
    else
        lru_oldest = c->newer;
    c->newer = c->older = NULL;
}

static void lru_push(struct cache_entry *c)
{
    c->older = lru_newest;
    c->newer = NULL;
    if (lru_newest != NULL)
        lru_newest->newer = c;
    lru_newest = c;
    if (lru_oldest == NULL)
        lru_oldest = c;
}

static void cache_remove(struct cache_entry *c)
{
    struct cache_entry **pp = &cached[c->hash % CACHE_BUCKETS];

    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    lru_unlink(c);
    cache_bytes -= c->bytes;
    METRIC_SET(cache_bytes, (int64_t)cache_bytes);
    METRIC_ADD(cache_entries, -1);
    result_clear(&c->res);
    free(c->key);
    free(c);
}

int share_cache_get(const char *key, int64_t now_us, struct result *out)
{
    uint64_t h = fo_hash_str(key);
    struct cache_entry *c;
    int hit = 0;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&share_lock);
    c = cache_find(key, h);
    if (c != NULL && c->expires_us <= now_us) {
        cache_remove(c);
        c = NULL;
    }
    if (c != NULL && share_result_copy(&c->res, out) == FO_OK) {
        lru_unlink(c);
        lru_push(c);
        hit = 1;
    }
    pthread_mutex_unlock(&share_lock);
    return hit;
}

int share_cache_fresh(const char *key, int64_t now_us)
{
    uint64_t h = fo_hash_str(key);
    struct cache_entry *c;
    int fresh;

    pthread_mutex_lock(&share_lock);
    c = cache_find(key, h);
    fresh = c != NULL && c->expires_us > now_us;
    pthread_mutex_unlock(&share_lock);
    return fresh;
}

void share_cache_put(const char *key, const struct result *res, int64_t now_us, long ttl_ms,
                     long max_bytes)
{
    struct cache_entry *c, *old;
    uint64_t h = fo_hash_str(key);

    if (res->status != 200 || res->error != ERR_NONE || res->cc_no_store || ttl_ms <= 0)
        return;
    if (res->cc_max_age >= 0 && res->cc_max_age * 1000 < ttl_ms)
        ttl_ms = res->cc_max_age * 1000;
    if (ttl_ms <= 0)
        return;
    size_t bytes = sizeof(*c) + strlen(key) + 1 + res->body_len +
                   (res->content_type != NULL ? strlen(res->content_type) + 1 : 0);
    if (bytes > (size_t)max_bytes)
        return;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return;
    if ((c->key = strdup(key)) == NULL || share_result_copy(res, &c->res) != FO_OK) {
        free(c->key);
        free(c);
        return;
    }
    c->res.cache = NULL;
    c->res.duration_ms = 0;
    c->hash = h;
    c->bytes = bytes;
    c->expires_us = now_us + (int64_t)ttl_ms * 1000;
    pthread_mutex_lock(&share_lock);
    if ((old = cache_find(key, h)) != NULL)
        cache_remove(old);
    while (lru_oldest != NULL && cache_bytes + bytes > (size_t)max_bytes) {
        cache_remove(lru_oldest);
        METRIC_ADD(cache_evictions, 1);
    }
    c->next = cached[h % CACHE_BUCKETS];
    cached[h % CACHE_BUCKETS] = c;
    lru_push(c);
    cache_bytes += bytes;
    METRIC_SET(cache_bytes, (int64_t)cache_bytes);
    METRIC_ADD(cache_entries, 1);
    pthread_mutex_unlock(&share_lock);
}

void share_cache_clear(void)
{
    pthread_mutex_lock(&share_lock);
    while (lru_oldest != NULL)
        cache_remove(lru_oldest);
    pthread_mutex_unlock(&share_lock);
}

/* ---- in flight (share_lock held) ------------------------------------------ */

static void entry_unlink(struct share_entry *e)
{
    struct share_entry **pp = &inflight[e->hash % SHARE_BUCKETS];

    if (!e->in_table)
        return;
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    e->in_table = 0;
}

static void entry_put(struct share_entry *e)
{
    if (--e->refs > 0)
        return;
    entry_unlink(e);
    pthread_cond_destroy(&e->cond);
    result_clear(&e->res);
    free(e->key);
    free(e);
}

/* Nobody waits for e's fetch any more: it stops, and leaves the table so
 * that no new item joins a fetch that is ending. */
static void entry_abandon(struct share_entry *e)
{
    entry_unlink(e);
    atomic_store(&e->stop, 1);
    if (e->wake != NULL)
        e->wake(e->wake_arg);
}

fo_err share_join(char *key, struct share_slot *slot, void (*wake)(void *), void *wake_arg,
                  const _Atomic int **stop, enum share_role *role)
{
    uint64_t h = fo_hash_str(key);
    struct share_entry *e;
    pthread_condattr_t attr;

    pthread_mutex_lock(&share_lock);
    for (e = inflight[h % SHARE_BUCKETS]; e != NULL; e = e->next) {
        if (e->hash == h && strcmp(e->key, key) == 0)
            break;
    }
    if (e != NULL) {
        e->riders++;
        e->refs++;
        slot->ride = e;
        *role = SHARE_RIDE;
        pthread_mutex_unlock(&share_lock);
        free(key);
        return FO_OK;
    }
    pthread_mutex_unlock(&share_lock);

    if ((e = calloc(1, sizeof(*e))) == NULL) {
        free(key);
        return FO_ENOMEM;
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (pthread_cond_init(&e->cond, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        free(e);
        free(key);
        return FO_ENOMEM;
    }
    pthread_condattr_destroy(&attr);
    e->key = key;
    e->hash = h;
    e->refs = 1;
    e->leading = 1;
    e->wake = wake;
    e->wake_arg = wake_arg;
    atomic_init(&e->stop, 0);

    pthread_mutex_lock(&share_lock);
    /* Another worker may have started the same fetch meanwhile: ride on it. */
    struct share_entry *other;
    for (other = inflight[h % SHARE_BUCKETS]; other != NULL; other = other->next) {
        if (other->hash == h && strcmp(other->key, key) == 0)
            break;
    }
    if (other != NULL) {
        other->riders++;
        other->refs++;
        slot->ride = other;
        *role = SHARE_RIDE;
        pthread_mutex_unlock(&share_lock);
        pthread_cond_destroy(&e->cond);
        free(e->key);
        free(e);
        return FO_OK;
    }
    e->next = inflight[h % SHARE_BUCKETS];
    inflight[h % SHARE_BUCKETS] = e;
    e->in_table = 1;
    slot->lead = e;
    *stop = &e->stop;
    *role = SHARE_LEAD;
    pthread_mutex_unlock(&share_lock);
    return FO_OK;
}

void share_lead_done(struct share_slot *slot, const struct result *res, int timed_out)
{
    struct result copy;
    int have_copy = share_result_copy(res, &copy) == FO_OK;

    if (!have_copy)
        result_fail(&copy, ERR_UPSTREAM, "out of memory copying a shared result");
    pthread_mutex_lock(&share_lock);
    struct share_entry *e = slot->lead;
    slot->lead = NULL;
    e->leading = 0;
    e->wake = NULL;
    if (timed_out && e->riders > 0 && !atomic_load(&e->stop)) {
        /* Handed over: the first rider to wake leads a new fetch. */
        e->handover = 1;
        pthread_cond_broadcast(&e->cond);
        entry_put(e);
        pthread_mutex_unlock(&share_lock);
        result_clear(&copy);
        return;
    }
    entry_unlink(e);
    e->res = copy;
    e->res.cache = NULL;
    e->done = 1;
    pthread_cond_broadcast(&e->cond);
    entry_put(e);
    pthread_mutex_unlock(&share_lock);
}

int share_ride(struct share_slot *slot, int64_t limit_us, const _Atomic int *job_stop,
               void (*wake)(void *), void *wake_arg, const _Atomic int **stop, struct result *out)
{
    struct share_entry *e;
    int got = 0;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&share_lock);
    e = slot->ride;
    for (;;) {
        if (e->done) {
            if (share_result_copy(&e->res, out) != FO_OK)
                result_fail(out, ERR_UPSTREAM, "out of memory copying a shared result");
            got = 1;
            break;
        }
        if (e->handover && !e->leading && fo_now_us() < limit_us && !atomic_load(job_stop)) {
            /* The leader's time ran out: this rider fetches now. */
            e->handover = 0;
            e->leading = 1;
            e->leader_gone = 0;
            e->riders--;
            e->wake = wake;
            e->wake_arg = wake_arg;
            slot->ride = NULL;
            slot->lead = e;
            *stop = &e->stop;
            pthread_mutex_unlock(&share_lock);
            return 2;
        }
        if (atomic_load(job_stop))
            break;
        int64_t now = fo_now_us();
        if (now >= limit_us)
            break;
        struct timespec ts = { .tv_sec = (time_t)(limit_us / 1000000),
                               .tv_nsec = (long)(limit_us % 1000000) * 1000 };
        /* fo_now_us is CLOCK_MONOTONIC, as the condition variable's clock. */
        pthread_cond_timedwait(&e->cond, &share_lock, &ts);
    }
    slot->ride = NULL;
    e->riders--;
    if (!e->done && e->riders == 0) {
        if (e->leading && e->leader_gone)
            entry_abandon(e);
        else if (!e->leading)
            entry_unlink(e); /* handed over, and nobody is left to take it */
    }
    entry_put(e);
    pthread_mutex_unlock(&share_lock);
    return got;
}

void share_wake(struct share_slot *slot)
{
    pthread_mutex_lock(&share_lock);
    if (slot->ride != NULL)
        pthread_cond_broadcast(&slot->ride->cond);
    if (slot->lead != NULL) {
        slot->lead->leader_gone = 1;
        if (slot->lead->riders == 0)
            entry_abandon(slot->lead);
    }
    pthread_mutex_unlock(&share_lock);
}
