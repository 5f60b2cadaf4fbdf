/*
 * hash.h - the one hash for every table whose keys come from outside
 * (hosts, cache keys, JSON object keys, breaker and rate slots): FNV-1a
 * over the bytes, started from a per-process random seed and finished with
 * murmur3's 64-bit mixer, so that nobody who picks keys (a client, an
 * upstream) can make them all land in one bucket (hash flooding). Not a
 * cryptographic hash; values differ from one process to the next.
 *
 * Owns the seed: drawn once (getrandom) on first use, then only read.
 */
#ifndef FO_HASH_H
#define FO_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FO_HASH_PRIME 1099511628211ULL /* FNV-1a 64-bit prime */

/* The state to start a hash from: the FNV-1a offset basis, seeded. */
uint64_t fo_hash_start(void);

/* Adds one byte to a hash state. */
static inline uint64_t fo_hash_byte(uint64_t h, unsigned char c)
{
    return (h ^ c) * FO_HASH_PRIME;
}

/* The final value of a state: every bit of it reaches the low bits a
 * table's index uses (murmur3's fmix64). */
uint64_t fo_hash_end(uint64_t h);

/* The hash of n bytes at s, and of a NUL-terminated string. */
uint64_t fo_hash(const void *s, size_t n);
uint64_t fo_hash_str(const char *s);

#endif
