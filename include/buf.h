/*
 * buf.h - a growable byte buffer with a cap, and JSON writing on top of it.
 *
 * A struct buf owns its data (heap). Every buffer that grows from outside
 * input gets a cap at creation (curl's dynbuf "toobig"): an append that would
 * pass it fails with FO_ETOOBIG and leaves the buffer as it was.
 * The response documents are written straight into a buf with the json_*
 * helpers. A batch's document stays in its buf (the job's answer sink,
 * answer.h) and is copied out to the socket in blocks of FO_ANSWER_BLOCK as
 * it is sent; small answers (errors, /metrics) are taken out with
 * buf_steal and handed to libmicrohttpd to free.
 */
#ifndef FO_BUF_H
#define FO_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fanoutd.h"

struct buf {
    char *data; /* owned; NULL while nothing is allocated (after buf_init,
                       buf_free, buf_steal), else data[len] == '\0' after every
                       call, failed ones included (the NUL is not in len) */
    size_t len;
    size_t alloc;
    size_t cap; /* most bytes ever held; 0: no cap */
};

void buf_init(struct buf *b, size_t cap);
void buf_free(struct buf *b);
void buf_reset(struct buf *b); /* len = 0, memory kept */

fo_err buf_reserve(struct buf *b, size_t more) FO_MUST_CHECK;
fo_err buf_append(struct buf *b, const void *data, size_t len) FO_MUST_CHECK;
fo_err buf_puts(struct buf *b, const char *s) FO_MUST_CHECK;
fo_err buf_putc(struct buf *b, char c) FO_MUST_CHECK;
fo_err buf_printf(struct buf *b, const char *fmt, ...) FO_MUST_CHECK
    __attribute__((format(printf, 2, 3)));

/* The contents as a NUL-terminated string (borrowed; "" when nothing was
 * ever allocated). Contents holding a NUL byte read as shorter: use len. */
const char *buf_cstr(struct buf *b);
/* Takes the data out; the caller owns it (free()); the buffer is empty after. */
char *buf_steal(struct buf *b, size_t *len);

/* JSON writing. Strings are escaped so that the output is valid UTF-8 JSON:
 * the input must be valid UTF-8 (see encode.h); control characters, quotes,
 * backslashes and U+2028/U+2029 are escaped. */
fo_err json_put_str(struct buf *b, const char *s, size_t len) FO_MUST_CHECK;
fo_err json_put_cstr(struct buf *b, const char *s) FO_MUST_CHECK;
/* "key": with a comma before it unless first. */
fo_err json_put_key(struct buf *b, const char *key, int first) FO_MUST_CHECK;
fo_err json_put_int(struct buf *b, int64_t v) FO_MUST_CHECK;
/* A finite double with 3 decimals (durations in ms); non-finite as 0. */
fo_err json_put_ms(struct buf *b, double ms) FO_MUST_CHECK;

#endif
