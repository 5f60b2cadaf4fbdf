/*
 * alloc_shim.h - allocation failure injection for tests.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,
 * --wrap=strndup, so every allocation made by fanoutd's own objects goes
 * through here; so do jansson's, which fanoutd routes through its own
 * malloc (batch_json_init). Allocations inside libcurl and libmicrohttpd are not
 * failed: their own error handling is theirs to test.
 *
 * In a unit test: alloc_fail_at(n) fails the n-th allocation from now.
 * In the daemon build: FO_FAIL_EVERY=N fails every N-th allocation once
 * FO_FAIL_AFTER_MS milliseconds have passed since the first allocation.
 */
#ifndef FO_ALLOC_SHIM_H
#define FO_ALLOC_SHIM_H

/* Fails the n-th allocation from now (1: the next one); 0: never. */
void alloc_fail_at(long n);
/* 1 if a failure was injected since the last alloc_fail_at(). */
int alloc_failed(void);

#endif
