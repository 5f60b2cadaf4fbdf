/*
 * json_check.h - helpers shared by fuzz_encode and fuzz_merge: loading
 * fanoutd's output with jansson, and base64 decoding.
 */
#ifndef FUZZ_JSON_CHECK_H
#define FUZZ_JSON_CHECK_H

#include <jansson.h>
#include <string.h>

#include "fuzz_common.h"

/* jansson cannot hold numbers that fanoutd embeds as they are (integers
 * beyond 64 bits, reals beyond double): its refusals for those are not a
 * fanoutd bug. */
static inline int jansson_number_limit(const json_error_t *e)
{
    return strstr(e->text, "too big integer") != NULL ||
           strstr(e->text, "too big negative integer") != NULL ||
           strstr(e->text, "real number overflow") != NULL;
}

/*
 * Loads s with jansson (flags plus JSON_ALLOW_NUL); if jansson refuses only
 * a number's size, tries again with integers as reals. Returns NULL (and
 * sets *number_limit) when jansson cannot hold a number at all; aborts on
 * any other refusal, printing the text.
 */
static inline json_t *load_or_die(const char *s, size_t len, size_t flags, int *number_limit)
{
    json_error_t e;
    json_t *v = json_loadb(s, len, flags | JSON_ALLOW_NUL, &e);

    *number_limit = 0;
    if (v != NULL)
        return v;
    if (jansson_number_limit(&e)) {
        v = json_loadb(s, len, flags | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
        if (v == NULL && !jansson_number_limit(&e))
            goto die;
        *number_limit = v == NULL;
        return v;
    }
die:
    fprintf(stderr, "jansson refuses fanoutd's output (%s at %d:%d):\n%.*s\n", e.text, e.line,
            e.column, (int)(len > 4000 ? 4000 : len), s);
    abort();
}

static inline int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict standard base64 with padding; returns a malloc'd buffer or NULL. */
static inline unsigned char *b64_decode(const char *s, size_t len, size_t *out_len)
{
    unsigned char *out;
    size_t o = 0;

    if (len % 4 != 0)
        return NULL;
    out = malloc(len / 4 * 3 + 1);
    if (out == NULL)
        abort();
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad > 0 || (v[k] = b64_val((unsigned char)s[i + k])) < 0) {
                free(out);
                return NULL;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        out[o++] = (unsigned char)(w >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(w >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)w;
    }
    *out_len = o;
    return out;
}

#endif
