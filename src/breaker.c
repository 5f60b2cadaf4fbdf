/*
 * breaker.c - the circuit breaker per host:port (see breaker.h): the pure
 * state machine, then the process-wide table.
 */
#include "breaker.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fanoutd.h"
#include "hash.h"
#include "log.h"
#include "metrics.h"
#include "scheduler.h"

/* ---- the state machine ----------------------------------------------------- */

static int move(struct breaker *b, enum breaker_state to, int64_t until_us)
{
    b->state = to;
    b->failures = 0;
    b->trial = 0;
    b->open_until_us = until_us;
    return (int)to;
}

int breaker_admit(struct breaker *b, int64_t now_us, enum breaker_verdict *verdict)
{
    int moved = -1;

    *verdict = BREAKER_PASS;
    if (b->state == BREAKER_OPEN) {
        if (now_us < b->open_until_us) {
            *verdict = BREAKER_REFUSE;
            return -1;
        }
        moved = move(b, BREAKER_HALF_OPEN, 0);
    }
    if (b->state == BREAKER_HALF_OPEN) {
        *verdict = b->trial ? BREAKER_REFUSE : BREAKER_TRIAL;
        b->trial = 1;
    }
    return moved;
}

int breaker_report(struct breaker *b, enum fetch_hop_outcome o, long threshold, long open_ms,
                   int64_t now_us)
{
    int64_t until = now_us + (int64_t)open_ms * 1000;

    switch (b->state) {
    case BREAKER_CLOSED:
        if (o == FETCH_HOP_OK)
            b->failures = 0;
        else if (o == FETCH_HOP_FAILED && ++b->failures >= threshold)
            return move(b, BREAKER_OPEN, until);
        return -1;
    case BREAKER_HALF_OPEN:
        if (o == FETCH_HOP_OK)
            return move(b, BREAKER_CLOSED, 0);
        if (o == FETCH_HOP_FAILED)
            return move(b, BREAKER_OPEN, until);
        b->trial = 0;
        return -1;
    default:
        return -1; /* open: a fetch that started before it opened */
    }
}

void breaker_end_trial(struct breaker *b)
{
    if (b->state == BREAKER_HALF_OPEN)
        b->trial = 0;
}

/* ---- the table ------------------------------------------------------------- */

#define BUCKETS 1024
#define KEY_MAX (FO_MAX_URL_LEN + 16)

struct entry {
    struct entry *next;
    struct breaker b;
    char key[];
};

/* Every field guarded by lock; a leaf lock. */
static struct {
    pthread_mutex_t lock;
    struct entry *slots[BUCKETS];
    size_t n;
} table = { .lock = PTHREAD_MUTEX_INITIALIZER };

static size_t slot_of(const char *key)
{
    return (size_t)(fo_hash_str(key) % BUCKETS);
}

/* The entry of key; a new closed one when create is set (NULL when the
 * table is full or out of memory: that host:port is then not tracked). */
static struct entry *lookup(const char *key, int create)
{
    size_t s = slot_of(key), len;
    struct entry *e;

    for (e = table.slots[s]; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0)
            return e;
    }
    if (!create || table.n >= FO_BREAKER_MAX)
        return NULL;
    len = strlen(key);
    if ((e = calloc(1, sizeof(*e) + len + 1)) == NULL)
        return NULL;
    memcpy(e->key, key, len + 1);
    e->next = table.slots[s];
    table.slots[s] = e;
    table.n++;
    return e;
}

/* A closed breaker without failures is the same as none: dropped. */
static void forget_if_idle(struct entry *e)
{
    struct entry **p;

    if (e->b.state != BREAKER_CLOSED || e->b.failures != 0)
        return;
    for (p = &table.slots[slot_of(e->key)]; *p != NULL; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            free(e);
            table.n--;
            return;
        }
    }
}

/* Counts a transition (lock held: the metrics are atomics). */
static void count_move(int from, int to, const char *key)
{
    if (to < 0)
        return;
    metrics_breaker_transition(to);
    if (from == BREAKER_CLOSED)
        METRIC_ADD(breakers_open, 1);
    else if (to == BREAKER_CLOSED)
        METRIC_ADD(breakers_open, -1);
    log_debug("circuit breaker of %s: %s", key,
              to == BREAKER_OPEN     ? "open"
              : to == BREAKER_CLOSED ? "closed"
                                     : "half-open");
}

static int make_key(const char *hostport, char *key)
{
    return hostport != NULL && host_key(hostport, key, KEY_MAX) > 0;
}

enum breaker_verdict breaker_check(const char *hostport, int64_t now_us)
{
    enum breaker_verdict v = BREAKER_PASS;
    char key[KEY_MAX];
    struct entry *e;

    if (!make_key(hostport, key))
        return BREAKER_PASS;
    pthread_mutex_lock(&table.lock);
    if ((e = lookup(key, 0)) != NULL) {
        int from = (int)e->b.state;
        count_move(from, breaker_admit(&e->b, now_us, &v), key);
    }
    pthread_mutex_unlock(&table.lock);
    return v;
}

int breaker_refuses(const char *hostport, int64_t now_us)
{
    char key[KEY_MAX];
    struct entry *e;
    int refuses = 0;

    if (!make_key(hostport, key))
        return 0;
    pthread_mutex_lock(&table.lock);
    if ((e = lookup(key, 0)) != NULL)
        refuses = (e->b.state == BREAKER_OPEN && now_us < e->b.open_until_us) ||
                  (e->b.state == BREAKER_HALF_OPEN && e->b.trial);
    pthread_mutex_unlock(&table.lock);
    return refuses;
}

void breaker_hop(const char *hostport, enum fetch_hop_outcome o, long threshold, long open_ms,
                 int64_t now_us)
{
    char key[KEY_MAX];
    struct entry *e;

    if (threshold <= 0 || !make_key(hostport, key))
        return;
    pthread_mutex_lock(&table.lock);
    if ((e = lookup(key, o == FETCH_HOP_FAILED)) != NULL) {
        int from = (int)e->b.state;
        count_move(from, breaker_report(&e->b, o, threshold, open_ms, now_us), key);
        forget_if_idle(e);
    }
    pthread_mutex_unlock(&table.lock);
}

void breaker_trial_done(const char *hostport)
{
    char key[KEY_MAX];
    struct entry *e;

    if (!make_key(hostport, key))
        return;
    pthread_mutex_lock(&table.lock);
    if ((e = lookup(key, 0)) != NULL)
        breaker_end_trial(&e->b);
    pthread_mutex_unlock(&table.lock);
}

void breaker_reset(void)
{
    pthread_mutex_lock(&table.lock);
    for (size_t s = 0; s < BUCKETS; s++) {
        while (table.slots[s] != NULL) {
            struct entry *e = table.slots[s];
            table.slots[s] = e->next;
            if (e->b.state != BREAKER_CLOSED)
                METRIC_ADD(breakers_open, -1);
            free(e);
        }
    }
    table.n = 0;
    pthread_mutex_unlock(&table.lock);
}
