/*
 * alloc_shim.c - the failing allocator (see alloc_shim.h).
 *
 * State is a handful of atomics: the daemon build calls in from every thread.
 */
#include "alloc_shim.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static _Atomic long countdown;      /* unit mode: fail when it reaches 0 */
static _Atomic int injected;
static long every;                  /* daemon mode: set once by the constructor */
static long after_ms;
static _Atomic long seen;
static _Atomic long long start_ms;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int should_fail(void)
{
    if (every > 0) {
        long long t0 = atomic_load(&start_ms);
        if (t0 == 0) {
            long long zero = 0;
            atomic_compare_exchange_strong(&start_ms, &zero, now_ms());
            return 0;
        }
        if (now_ms() - t0 < after_ms)
            return 0;
        return atomic_fetch_add(&seen, 1) % every == every - 1;
    }
    if (atomic_load(&countdown) <= 0)
        return 0;
    if (atomic_fetch_sub(&countdown, 1) == 1) {
        atomic_store(&injected, 1);
        return 1;
    }
    return 0;
}

void alloc_fail_at(long n)
{
    atomic_store(&injected, 0);
    atomic_store(&countdown, n);
}

int alloc_failed(void)
{
    return atomic_load(&injected);
}

void *__wrap_malloc(size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strndup(s, n);
}

__attribute__((constructor)) static void alloc_shim_init(void)
{
    const char *e = getenv("FO_FAIL_EVERY"), *a = getenv("FO_FAIL_AFTER_MS");

    every = e ? strtol(e, NULL, 10) : 0;
    after_ms = a ? strtol(a, NULL, 10) : 0;
}
