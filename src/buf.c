/* buf.c - capped growable buffer and JSON writers (see buf.h). */
#include "buf.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void buf_init(struct buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

void buf_free(struct buf *b)
{
    FO_FREE(b->data);
    b->len = 0;
    b->alloc = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

fo_err buf_reserve(struct buf *b, size_t more)
{
    size_t need, alloc;
    char *p;

    if (more > SIZE_MAX - b->len - 1)
        return FO_ETOOBIG;
    need = b->len + more + 1; /* room for a terminating NUL */
    if (b->cap != 0 && b->len + more > b->cap)
        return FO_ETOOBIG;
    if (need <= b->alloc)
        return FO_OK;
    alloc = b->alloc ? b->alloc : 256;
    while (alloc < need)
        alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
    p = realloc(b->data, alloc);
    if (p == NULL)
        return FO_ENOMEM;
    p[b->len] = '\0'; /* a fresh allocation is terminated too (see buf.h) */
    b->data = p;
    b->alloc = alloc;
    return FO_OK;
}

fo_err buf_append(struct buf *b, const void *data, size_t len)
{
    fo_err err = buf_reserve(b, len);

    if (err != FO_OK)
        return err;
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return FO_OK;
}

fo_err buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

fo_err buf_putc(struct buf *b, char c)
{
    return buf_append(b, &c, 1);
}

fo_err buf_printf(struct buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    int n;
    fo_err err;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return FO_EINVAL;
    if ((size_t)n < sizeof(small))
        return buf_append(b, small, (size_t)n);
    err = buf_reserve(b, (size_t)n);
    if (err != FO_OK)
        return err;
    va_start(ap, fmt);
    (void)vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return FO_OK;
}

const char *buf_cstr(struct buf *b)
{
    return b->data != NULL ? b->data : "";
}

char *buf_steal(struct buf *b, size_t *len)
{
    char *p = b->data;

    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    return p;
}

/* The escape of each control byte (RFC 8259 section 7): the short forms
 * where JSON has one, else \u00XX. A constant table, so that any thread may
 * read it without a lock. */
static const char ctrl_escapes[0x20][7] = {
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
    "\\b",     "\\t",     "\\n",     "\\u000b", "\\f",     "\\r",     "\\u000e", "\\u000f",
    "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
    "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
};

/* Escape for bytes that need one; NULL for bytes copied as they are. */
static const char *json_escape(unsigned char c)
{
    if (c < 0x20)
        return ctrl_escapes[c];
    if (c == '"')
        return "\\\"";
    if (c == '\\')
        return "\\\\";
    return NULL;
}

fo_err json_put_str(struct buf *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i, run = 0;
    fo_err err;

    /* Worst case 6 output bytes per input byte; reserve once for the common case. */
    err = buf_reserve(b, len + 2);
    if (err != FO_OK)
        return err;
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
    for (i = 0; i < len; i++) {
        const char *esc = json_escape(p[i]);
        int sep = p[i] == 0xe2 && i + 2 < len && p[i + 1] == 0x80 &&
                  (p[i + 2] == 0xa8 || p[i + 2] == 0xa9);

        if (esc == NULL && !sep)
            continue;
        if ((err = buf_append(b, s + run, i - run)) != FO_OK)
            return err;
        if (sep) {
            /* U+2028/U+2029 are valid JSON but break JavaScript consumers. */
            err = buf_puts(b, p[i + 2] == 0xa8 ? "\\u2028" : "\\u2029");
            i += 2;
        } else {
            err = buf_puts(b, esc);
        }
        if (err != FO_OK)
            return err;
        run = i + 1;
    }
    if ((err = buf_append(b, s + run, len - run)) != FO_OK)
        return err;
    return buf_putc(b, '"');
}

fo_err json_put_cstr(struct buf *b, const char *s)
{
    return json_put_str(b, s, strlen(s));
}

fo_err json_put_key(struct buf *b, const char *key, int first)
{
    fo_err err;

    if (!first && (err = buf_putc(b, ',')) != FO_OK)
        return err;
    if ((err = json_put_cstr(b, key)) != FO_OK)
        return err;
    return buf_putc(b, ':');
}

fo_err json_put_int(struct buf *b, int64_t v)
{
    return buf_printf(b, "%" PRId64, v);
}

fo_err json_put_ms(struct buf *b, double ms)
{
    if (!isfinite(ms) || ms < 0)
        ms = 0;
    return buf_printf(b, "%.3f", ms);
}
