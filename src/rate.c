/*
 * rate.c - per_host_rate's token buckets (see rate.h): the pure bucket,
 * then the process-wide table.
 */
#include "rate.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fanoutd.h"
#include "hash.h"
#include "log.h"
#include "scheduler.h"

/* ---- one bucket ------------------------------------------------------------ */

void bucket_init(struct bucket *b, long rate, int64_t now_us)
{
    b->micro = (int64_t)rate * RATE_UNIT;
    b->last_us = now_us;
}

/* Adds what was earned since last_us, up to the burst (rate tokens). */
static void refill(struct bucket *b, long rate, int64_t now_us)
{
    int64_t cap = (int64_t)rate * RATE_UNIT;

    if (now_us > b->last_us) {
        int64_t dt = now_us - b->last_us;
        /* rate <= 1e6 and a capped dt keep the product in range. */
        b->micro += (dt > 3600 * RATE_UNIT ? 3600 * RATE_UNIT : dt) * rate;
        b->last_us = now_us;
    }
    if (b->micro > cap)
        b->micro = cap; /* also when the rate was lowered by a reload */
}

int64_t bucket_take(struct bucket *b, long rate, int64_t now_us)
{
    refill(b, rate, now_us);
    if (b->micro >= RATE_UNIT) {
        b->micro -= RATE_UNIT;
        return 0;
    }
    /* Micro-tokens come at `rate` a microsecond: the rest, rounded up. */
    return now_us + (RATE_UNIT - b->micro + rate - 1) / rate;
}

int bucket_full(struct bucket *b, long rate, int64_t now_us)
{
    refill(b, rate, now_us);
    return b->micro >= (int64_t)rate * RATE_UNIT;
}

/* ---- the table ------------------------------------------------------------- */

#define SLOTS   1024
#define KEY_MAX (FO_MAX_URL_LEN + 16)

struct entry {
    struct entry *next;
    struct bucket b;
    char key[];
};

/* Every field guarded by lock; a leaf lock. */
static struct {
    pthread_mutex_t lock;
    struct entry *slots[SLOTS];
    size_t n;
    int warned;
} table = { .lock = PTHREAD_MUTEX_INITIALIZER };

static size_t slot_of(const char *key)
{
    return (size_t)(fo_hash_str(key) % SLOTS);
}

/* Drops every bucket that has refilled (the same as a new one). */
static void sweep(long rate, int64_t now_us)
{
    for (size_t s = 0; s < SLOTS; s++) {
        for (struct entry **p = &table.slots[s]; *p != NULL;) {
            struct entry *e = *p;
            if (bucket_full(&e->b, rate, now_us)) {
                *p = e->next;
                free(e);
                table.n--;
            } else {
                p = &e->next;
            }
        }
    }
}

int64_t rate_take(const char *hostport, long rate, int64_t now_us)
{
    char key[KEY_MAX];
    struct entry *e;
    size_t s, len;
    int64_t at = 0;

    if (rate <= 0 || hostport == NULL || (len = host_key(hostport, key, sizeof(key))) == 0)
        return 0;
    s = slot_of(key);
    pthread_mutex_lock(&table.lock);
    for (e = table.slots[s]; e != NULL && strcmp(e->key, key) != 0; e = e->next)
        ;
    if (e == NULL) {
        if (table.n >= FO_RATE_MAX)
            sweep(rate, now_us);
        if (table.n < FO_RATE_MAX && (e = malloc(sizeof(*e) + len + 1)) != NULL) {
            memcpy(e->key, key, len + 1);
            bucket_init(&e->b, rate, now_us);
            e->next = table.slots[s];
            table.slots[s] = e;
            table.n++;
        } else if (!table.warned) {
            table.warned = 1; /* not limited rather than stuck */
            log_warn("per_host_rate: no room for another host:port's bucket; it is not limited");
        }
    }
    if (e != NULL)
        at = bucket_take(&e->b, rate, now_us);
    pthread_mutex_unlock(&table.lock);
    return at;
}

void rate_reset(void)
{
    pthread_mutex_lock(&table.lock);
    for (size_t s = 0; s < SLOTS; s++) {
        while (table.slots[s] != NULL) {
            struct entry *e = table.slots[s];
            table.slots[s] = e->next;
            free(e);
        }
    }
    table.n = 0;
    table.warned = 0;
    pthread_mutex_unlock(&table.lock);
}
