/*
 * encode.c - upstream body -> JSON value (see encode.h).
 *
 * The JSON validator is iterative (an explicit stack), so a hostile upstream
 * cannot exhaust the worker's small stack, and it checks UTF-8 inside
 * strings itself. Duplicate keys are found by hashing each decoded key:
 * the hashes of the open objects live in one array, each object owning the
 * slice from its start; on '}' the slice is sorted and scanned.
 */
#include "encode.h"
#include "hash.h"

#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *body_encoding_name(enum body_encoding enc)
{
    switch (enc) {
    case BODY_JSON:
        return "json";
    case BODY_TEXT:
        return "text";
    case BODY_BASE64:
        return "base64";
    case BODY_NONE:
        break;
    }
    return NULL;
}

/* Decodes one UTF-8 sequence at s[i]; returns its length, 0 if invalid. */
static size_t utf8_next(const unsigned char *s, size_t len, size_t i, uint32_t *cp)
{
    unsigned char c = s[i];
    size_t n;
    uint32_t v, min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        v = c & 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        v = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        v = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len - i < n)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[i + k] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i + k] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return n;
}

int utf8_clip(const char *s, size_t max)
{
    size_t n = strnlen(s, max);

    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--; /* s[n] continues the character that s[n - 1] is in */
    return (int)n;
}

int utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    uint32_t cp;

    while (i < len) {
        /* Fast path over ASCII, 8 bytes at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        size_t n = utf8_next(p, len, i, &cp);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

/* ---- JSON validation -------------------------------------------------- */

#define JV_INLINE_KEYS 64

struct jv {
    const unsigned char *s;
    size_t len;
    size_t pos;
    uint64_t *keys;      /* hashes of the keys of every open object: */
    size_t nkeys, akeys; /* `inline_keys` until they outgrow it, then heap */
    uint64_t inline_keys[JV_INLINE_KEYS];
};

/* Keys are hashed with hash.h's seeded hash (an upstream picks them); the
 * state is compared without its final mix, which changes no equality. */
static uint64_t hash_byte(uint64_t h, unsigned char c)
{
    return fo_hash_byte(h, c);
}

/* Hashes a code point as its UTF-8 bytes, so that a key spelled with
 * escapes ("\u0061") hashes like the same key written plainly ("a"). */
static uint64_t hash_cp(uint64_t h, uint32_t cp)
{
    if (cp < 0x80)
        return hash_byte(h, (unsigned char)cp);
    if (cp < 0x800) {
        h = hash_byte(h, (unsigned char)(0xc0 | (cp >> 6)));
    } else if (cp < 0x10000) {
        h = hash_byte(h, (unsigned char)(0xe0 | (cp >> 12)));
        h = hash_byte(h, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
    } else {
        h = hash_byte(h, (unsigned char)(0xf0 | (cp >> 18)));
        h = hash_byte(h, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
        h = hash_byte(h, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
    }
    return hash_byte(h, (unsigned char)(0x80 | (cp & 0x3f)));
}

/* Bytes that stand for themselves inside a JSON string: ASCII from 0x20 on,
 * but the quote and the backslash. Control characters must be escaped;
 * bytes from 0x80 on are UTF-8, checked apart. A table: the validator looks
 * up every byte of every string. */
#define JV_16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char plain_table[256] = {
    JV_16(0), JV_16(0), /* 0x00-0x1f */
    1,        1,        0,        1,        1, 1, 1, 1,
    1,        1,        1,        1,        1, 1, 1, 1, /* 0x20-0x2f: '"' */
    JV_16(1), JV_16(1),                                 /* 0x30-0x4f */
    1,        1,        1,        1,        1, 1, 1, 1,
    1,        1,        1,        1,        0, 1, 1, 1, /* 0x50-0x5f: '\\' */
    JV_16(1), JV_16(1),                                 /* 0x60-0x7f */
    JV_16(0), JV_16(0), JV_16(0), JV_16(0),             /* 0x80-0xff */
    JV_16(0), JV_16(0), JV_16(0), JV_16(0),
};
#undef JV_16

static int plain_byte(unsigned char c)
{
    return plain_table[c];
}

static void skip_ws_slow(struct jv *v)
{
    while (v->pos < v->len) {
        unsigned char c = v->s[v->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        v->pos++;
    }
}

/* Most tokens follow one another with no white space between them. */
static inline void skip_ws(struct jv *v)
{
    if (v->pos < v->len && v->s[v->pos] > ' ')
        return;
    skip_ws_slow(v);
}

int json_hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;

    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

/* One \uXXXX escape at v->pos, or a surrogate pair of them, as a code
 * point. Lone surrogates are refused: strict parsers reject them, and the
 * answer must parse anywhere (RFC 7493). */
static int scan_u_escape(struct jv *v, uint32_t *cp)
{
    uint32_t lo;

    if (v->len - v->pos < 6 || !json_hex4(v->s + v->pos + 2, cp))
        return 0;
    v->pos += 6;
    if (*cp >= 0xdc00 && *cp <= 0xdfff)
        return 0;
    if (*cp < 0xd800 || *cp > 0xdbff)
        return 1;
    if (v->len - v->pos < 6 || v->s[v->pos] != '\\' || v->s[v->pos + 1] != 'u' ||
        !json_hex4(v->s + v->pos + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
        return 0;
    v->pos += 6;
    *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
    return 1;
}

/* A string at v->pos (which is '"'). For a key (is_key) *hash gets the
 * hash of its decoded text, and U+0000 is refused (jansson cannot load it
 * in a key); a value is only checked, over a fast path for plain ASCII. */
static int scan_string(struct jv *v, uint64_t *hash, int is_key)
{
    const unsigned char *s = v->s;
    uint64_t h = fo_hash_start();
    uint32_t cp;

    v->pos++;
    for (;;) {
        size_t p = v->pos;
        if (is_key) {
            while (p < v->len && plain_byte(s[p]))
                h = hash_byte(h, s[p++]);
        } else {
            while (p < v->len && plain_byte(s[p]))
                p++;
        }
        v->pos = p;
        if (p >= v->len)
            return 0;
        unsigned char c = s[p];
        if (c == '"') {
            v->pos++;
            *hash = h;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (p + 1 >= v->len)
                return 0;
            c = s[p + 1];
            if (c == 'u') {
                if (!scan_u_escape(v, &cp) || (is_key && cp == 0))
                    return 0;
            } else {
                if (c == '\0' || strchr("\"\\/bfnrt", c) == NULL)
                    return 0;
                /* The character the escape stands for, so that "\n" and "\u000a"
                 * in keys hash alike. */
                cp = c == 'b'   ? '\b'
                     : c == 'f' ? '\f'
                     : c == 'n' ? '\n'
                     : c == 'r' ? '\r'
                     : c == 't' ? '\t'
                                : c;
                v->pos += 2;
            }
            if (is_key)
                h = hash_cp(h, cp);
            continue;
        }
        size_t n = utf8_next(s, v->len, p, &cp);
        if (n == 0)
            return 0;
        if (is_key) {
            for (size_t k = 0; k < n; k++)
                h = hash_byte(h, s[p + k]);
        }
        v->pos += n;
    }
}

static size_t digits(const unsigned char *s, size_t len, size_t pos)
{
    size_t start = pos;

    while (pos < len && s[pos] >= '0' && s[pos] <= '9')
        pos++;
    return pos - start;
}

size_t json_number_len(const unsigned char *s, size_t len)
{
    size_t pos = 0, n;

    if (pos < len && s[pos] == '-')
        pos++;
    if (pos >= len)
        return 0;
    if (s[pos] == '0')
        pos++;
    else if ((n = digits(s, len, pos)) == 0)
        return 0;
    else
        pos += n;
    if (pos < len && s[pos] == '.') {
        if ((n = digits(s, len, pos + 1)) == 0)
            return 0;
        pos += 1 + n;
    }
    if (pos < len && (s[pos] == 'e' || s[pos] == 'E')) {
        pos++;
        if (pos < len && (s[pos] == '+' || s[pos] == '-'))
            pos++;
        if ((n = digits(s, len, pos)) == 0)
            return 0;
        pos += n;
    }
    return pos;
}

static int scan_number(struct jv *v)
{
    size_t n = json_number_len(v->s + v->pos, v->len - v->pos);

    v->pos += n;
    return n > 0;
}

static int scan_literal(struct jv *v, const char *word)
{
    size_t n = strlen(word);

    if (v->len - v->pos < n || memcmp(v->s + v->pos, word, n) != 0)
        return 0;
    v->pos += n;
    return 1;
}

static int key_push(struct jv *v, uint64_t h)
{
    if (v->nkeys == v->akeys) {
        size_t n = v->akeys * 2;
        uint64_t *p = v->keys == v->inline_keys ? malloc(n * sizeof(*p))
                                                : realloc(v->keys, n * sizeof(*p));
        if (p == NULL)
            return 0;
        if (v->keys == v->inline_keys)
            memcpy(p, v->inline_keys, sizeof(v->inline_keys));
        v->keys = p;
        v->akeys = n;
    }
    v->keys[v->nkeys++] = h;
    return 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Checks the keys from `from` on for duplicates and drops them. Small
 * objects (most of them) are compared pairwise; big ones sorted. */
static int keys_close(struct jv *v, size_t from)
{
    size_t n = v->nkeys - from;
    uint64_t *k = v->keys + from;
    int ok = 1;

    if (n > 1 && n <= 16) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                ok &= k[i] != k[j];
    } else if (n > 16) {
        qsort(k, n, sizeof(uint64_t), cmp_u64);
        for (size_t i = 1; i < n; i++)
            ok &= k[i] != k[i - 1];
    }
    v->nkeys = from;
    return ok;
}

/* One frame per open container: its kind and where its keys start. */
struct frame {
    char kind; /* '{' or '[' */
    size_t keys_from;
};

/* Scans one scalar at v->pos (not a container). */
static int scan_scalar(struct jv *v)
{
    uint64_t h;

    switch (v->s[v->pos]) {
    case '"':
        return scan_string(v, &h, 0);
    case 't':
        return scan_literal(v, "true");
    case 'f':
        return scan_literal(v, "false");
    case 'n':
        return scan_literal(v, "null");
    default:
        return scan_number(v);
    }
}

/*
 * The state machine: after a value, expect ',' or the closer of the open
 * container (or the end); after '{' or ',' in an object, a key.
 */
static int scan_value(struct jv *v, struct frame *stack, size_t max_depth)
{
    size_t depth = 0;
    uint64_t h;

    for (;;) {
        /* A value starts here. */
        skip_ws(v);
        if (v->pos >= v->len)
            return 0;
        unsigned char c = v->s[v->pos];
        if (c == '{' || c == '[') {
            if (depth == max_depth)
                return 0;
            stack[depth].kind = (char)c;
            stack[depth].keys_from = v->nkeys;
            depth++;
            v->pos++;
            skip_ws(v);
            if (v->pos < v->len && v->s[v->pos] == (c == '{' ? '}' : ']')) {
                v->pos++;
                depth--;
                goto after_value;
            }
            if (c == '[')
                continue;
            goto key;
        }
        if (!scan_scalar(v))
            return 0;
after_value:
        for (;;) {
            if (depth == 0)
                return 1;
            skip_ws(v);
            if (v->pos >= v->len)
                return 0;
            c = v->s[v->pos++];
            struct frame *top = &stack[depth - 1];
            if (c == ',') {
                if (top->kind == '[')
                    break; /* next array element */
                goto key;
            }
            if (c != (top->kind == '{' ? '}' : ']'))
                return 0;
            if (top->kind == '{' && !keys_close(v, top->keys_from))
                return 0;
            depth--;
        }
        continue;
key:
        skip_ws(v);
        if (v->pos >= v->len || v->s[v->pos] != '"' || !scan_string(v, &h, 1))
            return 0;
        if (!key_push(v, h))
            return 0;
        skip_ws(v);
        if (v->pos >= v->len || v->s[v->pos] != ':')
            return 0;
        v->pos++;
    }
}

#define JV_INLINE_DEPTH (FO_MAX_JSON_DEPTH + 1) /* 8 KiB of frames on the stack */

int json_valid(const char *s, size_t len, size_t max_depth, size_t *vstart, size_t *vend)
{
    struct jv v = { .s = (const unsigned char *)s, .len = len, .akeys = JV_INLINE_KEYS };
    struct frame inline_stack[JV_INLINE_DEPTH], *stack = inline_stack;
    size_t start;
    int ok;

    v.keys = v.inline_keys;
    if (max_depth + 1 > JV_INLINE_DEPTH &&
        (stack = malloc((max_depth + 1) * sizeof(*stack))) == NULL)
        return 0;
    skip_ws(&v);
    start = v.pos;
    ok = scan_value(&v, stack, max_depth);
    if (ok) {
        size_t end = v.pos;
        skip_ws(&v);
        ok = v.pos == v.len;
        if (ok && vstart != NULL)
            *vstart = start;
        if (ok && vend != NULL)
            *vend = end;
    }
    if (stack != inline_stack)
        free(stack);
    if (v.keys != v.inline_keys)
        free(v.keys);
    return ok;
}

size_t media_type(const char *ctype, const char **start)
{
    size_t n;

    *start = "";
    if (ctype == NULL)
        return 0;
    while (*ctype == ' ' || *ctype == '\t')
        ctype++;
    n = strcspn(ctype, ";");
    while (n > 0 && (ctype[n - 1] == ' ' || ctype[n - 1] == '\t'))
        n--;
    *start = ctype;
    return n;
}

int media_type_is(const char *ctype, const char *type)
{
    const char *m;
    size_t n = media_type(ctype, &m);

    return n == strlen(type) && strncasecmp(m, type, n) == 0;
}

int content_type_is_json(const char *ctype)
{
    const char *m;
    size_t n = media_type(ctype, &m);

    if (n == 16 && strncasecmp(m, "application/json", 16) == 0)
        return 1;
    /* A structured syntax suffix: type/subtype+json. */
    return n > 5 && memchr(m, '/', n) != NULL && strncasecmp(m + n - 5, "+json", 5) == 0;
}

fo_err base64_put(struct buf *out, const void *data, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    size_t i, n = (len + 2) / 3 * 4;
    char *o;
    fo_err err;

    if (len > (SIZE_MAX / 4) * 3 - 3)
        return FO_ETOOBIG;
    if ((err = buf_reserve(out, n)) != FO_OK)
        return err;
    o = out->data + out->len;
    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    out->len += n;
    out->data[out->len] = '\0';
    return FO_OK;
}

/* ---- charsets ------------------------------------------------------------ */

/* Reads one parameter value at *p (a token, or a quoted string with
 * backslash escapes) into v (size bytes, NUL-terminated; too long: ""). */
static void param_value(const char **p, char *v, size_t size)
{
    const char *s = *p;
    size_t n = 0;
    int over = 0;

    if (*s == '"') {
        for (s++; *s != '\0' && *s != '"'; s++) {
            if (*s == '\\' && s[1] != '\0')
                s++;
            if (n + 1 < size)
                v[n++] = *s;
            else
                over = 1;
        }
        if (*s == '"')
            s++;
    } else {
        for (; *s != '\0' && *s != ';'; s++) {
            if (n + 1 < size)
                v[n++] = *s;
            else
                over = 1;
        }
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
    }
    v[over ? 0 : n] = '\0';
    *p = s;
}

/* 1 if name is safe to hand to iconv_open: letters, digits and ._:+()-
 * only (no "//" suffixes such as //IGNORE, no "," error handlers). */
static int charset_name_ok(const char *name)
{
    if (*name == '\0')
        return 0;
    for (const char *c = name; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("._:+()-", *c) != NULL))
            return 0;
    }
    return 1;
}

int content_charset(const char *ctype, char *name, size_t size)
{
    const char *p;
    char key[16];

    if (size == 0)
        return 0;
    name[0] = '\0';
    if (ctype == NULL || (p = strchr(ctype, ';')) == NULL)
        return 0;
    while (*p == ';') {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t k = strcspn(p, "=;");
        if (p[k] != '=') { /* a parameter without a value */
            p += k;
            continue;
        }
        size_t kn = k;
        while (kn > 0 && (p[kn - 1] == ' ' || p[kn - 1] == '\t'))
            kn--;
        (void)snprintf(key, sizeof(key), "%.*s", (int)(kn < sizeof(key) ? kn : 0), p);
        p += k + 1;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strcasecmp(key, "charset") == 0) {
            param_value(&p, name, size);
            if (strcasecmp(name, "utf-8") == 0 || strcasecmp(name, "utf8") == 0 ||
                strcasecmp(name, "us-ascii") == 0 || strcasecmp(name, "ascii") == 0) {
                name[0] = '\0';
                return 0;
            }
            if (!charset_name_ok(name))
                name[0] = '\0';
            return 1;
        }
        char skip[2];
        param_value(&p, skip, sizeof(skip));
        p += strcspn(p, ";");
    }
    return 0;
}

/* More output than this many bytes per input byte is not a text conversion
 * we trust (see encode.h): the conversion fails and the body is base64. */
#define CHARSET_GROWTH_MAX 3

fo_err charset_to_utf8(const char *charset, const char *in, size_t len, struct buf *out)
{
    char *ip = (char *)in, *op;
    size_t il = len, ol;
    iconv_t cd;
    fo_err err = FO_OK;

    buf_init(out, 0);
    if (!charset_name_ok(charset) || len > (SIZE_MAX - 64) / CHARSET_GROWTH_MAX)
        return FO_EINVAL;
    /* Without a byte order mark UTF-16 and UTF-32 are big-endian (RFC 2781 4.3);
     * glibc would read them in the machine's order. */
    if (strcasecmp(charset, "UTF-16") == 0 &&
        !(len >= 2 && (memcmp(in, "\xff\xfe", 2) == 0 || memcmp(in, "\xfe\xff", 2) == 0)))
        charset = "UTF-16BE";
    else if (strcasecmp(charset, "UTF-32") == 0 &&
             !(len >= 4 &&
               (memcmp(in, "\xff\xfe\0\0", 4) == 0 || memcmp(in, "\0\0\xfe\xff", 4) == 0)))
        charset = "UTF-32BE";
    cd = iconv_open("UTF-8", charset);
    if (cd == (iconv_t)-1)
        return FO_EINVAL;
    buf_init(out, len * CHARSET_GROWTH_MAX + 16);
    /* UTF-16 and mostly ASCII texts fit at once; others grow as needed. */
    if ((err = buf_reserve(out, len + len / 2 + 16)) != FO_OK)
        goto out;
    /* The input, then a flush (a stateful charset may hold a character back). */
    for (int input_done = 0;;) {
        op = out->data + out->len;
        ol = out->alloc - out->len - 1;
        size_t r = input_done ? iconv(cd, NULL, NULL, &op, &ol) : iconv(cd, &ip, &il, &op, &ol);
        out->len = (size_t)(op - out->data);
        if (r != (size_t)-1) {
            if (input_done)
                break;
            input_done = 1;
            continue;
        }
        if (errno != E2BIG) {
            err = FO_EINVAL; /* EILSEQ: a byte that is no character; EINVAL: cut short */
            goto out;
        }
        size_t room = out->cap - out->len;
        if (room == 0) {
            err = FO_EINVAL; /* past CHARSET_GROWTH_MAX */
            goto out;
        }
        if ((err = buf_reserve(out, out->alloc < room ? out->alloc : room)) != FO_OK) {
            err = err == FO_ETOOBIG ? FO_EINVAL : err;
            goto out;
        }
    }
    out->data[out->len] = '\0';
out:
    iconv_close(cd);
    if (err != FO_OK)
        buf_free(out);
    return err;
}

fo_err body_encode(struct buf *out, const char *ctype, const char *body, size_t len,
                   enum body_encoding *enc)
{
    char charset[CHARSET_NAME_MAX];
    struct buf conv;
    const char *text = body;
    size_t tlen = len, vs, ve;
    fo_err err;

    if (len == 0) {
        *enc = BODY_NONE;
        return buf_puts(out, "null");
    }
    buf_init(&conv, 0);
    if (content_charset(ctype, charset, sizeof(charset))) {
        err = charset_to_utf8(charset, body, len, &conv);
        if (err == FO_ENOMEM)
            return err;
        if (err != FO_OK)
            goto base64; /* unknown charset, or bytes that do not convert */
        text = conv.data;
        tlen = conv.len;
    }
    /* A UTF-8 byte order mark is no part of the text. */
    if (tlen >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        text += 3;
        tlen -= 3;
    }
    if (tlen == 0) { /* only a byte order mark: an empty body, as above */
        *enc = BODY_NONE;
        err = buf_puts(out, "null");
        goto out;
    }
    if (content_type_is_json(ctype) && json_valid(text, tlen, FO_MAX_JSON_DEPTH, &vs, &ve)) {
        *enc = BODY_JSON;
        err = buf_append(out, text + vs, ve - vs);
        goto out;
    }
    if (utf8_valid(text, tlen)) {
        *enc = BODY_TEXT;
        err = json_put_str(out, text, tlen);
        goto out;
    }
base64:
    /* The upstream's bytes as they came (byte order mark and all). */
    *enc = BODY_BASE64;
    if ((err = buf_putc(out, '"')) == FO_OK && (err = base64_put(out, body, len)) == FO_OK)
        err = buf_putc(out, '"');
out:
    buf_free(&conv);
    return err;
}
