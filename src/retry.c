/*
 * retry.c - the retry policy (see retry.h).
 */
#include "retry.h"

#include <pthread.h>
#include <time.h>

int retry_wanted(enum http_method m, const struct result *r)
{
    if (r->error == ERR_CONNECT)
        return 1;
    if (m == M_POST || m == M_PATCH)
        return 0; /* something was sent: never twice */
    if (r->error == ERR_UPSTREAM)
        return 1;
    if (r->error != ERR_NONE)
        return 0;
    return r->status == 429 || r->status == 502 || r->status == 503 || r->status == 504;
}

long retry_backoff_ms(long k, long base_ms, long cap_ms, uint64_t rnd)
{
    long top = base_ms;

    if (base_ms <= 0 || cap_ms <= 0)
        return 0;
    for (long i = 1; i < k && top < cap_ms; i++)
        top = top > cap_ms / 2 ? cap_ms : top * 2;
    if (top > cap_ms)
        top = cap_ms;
    return (long)(rnd % ((uint64_t)top + 1));
}

uint64_t retry_random(void)
{
    static _Thread_local uint64_t state;

    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&state ^
                0x9e3779b97f4a7c15ULL;
    }
    /* xorshift64* */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}
