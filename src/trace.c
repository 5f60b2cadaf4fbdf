/*
 * trace.c - W3C Trace Context traceparent checking and child span ids
 * (see trace.h).
 */
#include "trace.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>

#include "fanoutd.h"

/* n lowercase hex digits at s; *nonzero set if any is not '0'. */
static int lower_hex(const char *s, size_t n, int *nonzero)
{
    *nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
        *nonzero |= s[i] != '0';
    }
    return 1;
}

int trace_parse(const char *value, char *out)
{
    size_t len;
    int nz;

    if (value == NULL)
        return 0;
    len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--; /* optional white space around a field value (RFC 9110 5.5) */
    /* version(2) - trace-id(32) - parent-id(16) - flags(2) */
    if (len < TRACE_PARENT_LEN || value[2] != '-' || value[35] != '-' || value[52] != '-')
        return 0;
    if (!lower_hex(value, 2, &nz) || strncmp(value, "ff", 2) == 0)
        return 0;
    if (strncmp(value, "00", 2) == 0 ? len != TRACE_PARENT_LEN
                                     : len > TRACE_PARENT_LEN && value[TRACE_PARENT_LEN] != '-')
        return 0;
    if (!lower_hex(value + 3, 32, &nz) || !nz)
        return 0; /* all-zero trace-id */
    if (!lower_hex(value + 36, 16, &nz) || !nz)
        return 0; /* all-zero parent-id */
    if (!lower_hex(value + 53, 2, &nz))
        return 0;
    memcpy(out, "00", 2);
    memcpy(out + 2, value + 2, TRACE_PARENT_LEN - 2);
    out[TRACE_PARENT_LEN] = '\0';
    return 1;
}

/* 8 random bytes, not all zero. getrandom(2) does not fail for 8 bytes
 * once the pool is up; should it, a clock-and-counter mix stands in. */
static uint64_t random_span(void)
{
    static _Atomic uint64_t counter;
    uint64_t v = 0;

    for (int tries = 0; tries < 4 && v == 0; tries++) {
        if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
            v = 0;
    }
    while (v == 0) {
        v = (uint64_t)fo_now_us() * 0x9E3779B97F4A7C15ull ^ ++counter * 0xBF58476D1CE4E5B9ull;
    }
    return v;
}

void trace_child_line(const char *parent, char *line)
{
    /* "traceparent: " 00-TRACEID- SPAN -FLAGS */
    (void)snprintf(line, TRACE_LINE_SIZE, "traceparent: %.36s%016llx%.3s", parent,
                   (unsigned long long)random_span(), parent + 52);
}
