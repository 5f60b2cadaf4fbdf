/*
 * hash.c - the seeded hash of hash.h.
 */
#include "hash.h"

#include <pthread.h>
#include <sys/random.h>

#include "fanoutd.h"

#define FNV_OFFSET 1469598103934665603ULL /* FNV-1a 64-bit offset basis */

/* Set once under seed_once, then only read. */
static uint64_t seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_init(void)
{
    uint64_t s = 0;

    /* Without entropy yet (early boot), the clock and an address: weaker,
     * but still not known to a client in advance. */
    if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s))
        s = (uint64_t)fo_now_us() ^ (uint64_t)(uintptr_t)&s;
    seed = s;
}

uint64_t fo_hash_start(void)
{
    (void)pthread_once(&seed_once, seed_init);
    return FNV_OFFSET ^ seed;
}

uint64_t fo_hash_end(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

uint64_t fo_hash(const void *s, size_t n)
{
    const unsigned char *p = s;
    uint64_t h = fo_hash_start();

    for (size_t i = 0; i < n; i++)
        h = fo_hash_byte(h, p[i]);
    return fo_hash_end(h);
}

uint64_t fo_hash_str(const char *s)
{
    uint64_t h = fo_hash_start();

    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        h = fo_hash_byte(h, *p);
    return fo_hash_end(h);
}
