/*
 * fuzz_jtree.c - jtree: jt_parse, jt_write, jt_merge and jt_pointer on any bytes.
 *
 * Input: byte 0 is the depth limit (0-255). Then a JSON Pointer up to the
 * first '\n' (at most 255 bytes; none: the pointer is ""), then the text.
 *
 * Checks (jtree.h): a text json_valid accepts (strict, no duplicate keys)
 * parses, and one jansson accepts within the depth limit parses too; a
 * parsed tree writes back exactly the text without its surrounding white
 * space when it has no duplicate keys, and in any case as JSON that
 * jansson reads as the same value as the text (last duplicate wins);
 * merging an object tree twice into an empty object gives the same value
 * again; jt_pointer finds exactly what a pointer walk over jansson's value
 * finds, and the span it returns parses on its own.
 */
#include <string.h>

#include "encode.h"
#include "json_check.h"
#include "jtree.h"

/* Nesting depth of a text, counting brackets outside strings (an upper bound). */
static size_t nesting(const char *s, size_t len)
{
    size_t d = 0, max = 0;
    int in_str = 0;

    for (size_t i = 0; i < len; i++) {
        if (in_str) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_str = 0;
        } else if (s[i] == '"') {
            in_str = 1;
        } else if (s[i] == '[' || s[i] == '{') {
            if (++d > max)
                max = d;
        } else if ((s[i] == ']' || s[i] == '}') && d > 0) {
            d--;
        }
    }
    return max;
}

/* jansson value of jtree output (NULL when a number is beyond jansson). */
static json_t *load(const char *s, size_t len)
{
    int limit;

    return load_or_die(s, len, JSON_DECODE_ANY, &limit);
}

/* RFC 6901 over a jansson value: 1 found (*out borrowed), 0 not found, -1 bad pointer. */
static int jansson_pointer(json_t *v, const char *p, size_t n, json_t **out)
{
    size_t i = 0;

    if (n > 0 && p[0] != '/')
        return -1;
    while (i < n) {
        char tok[256];
        size_t k = 0, j = i + 1;
        for (; j < n && p[j] != '/'; j++) {
            if (p[j] == '~') {
                if (j + 1 >= n || (p[j + 1] != '0' && p[j + 1] != '1'))
                    return -1;
                tok[k++] = p[j + 1] == '0' ? '~' : '/';
                j++;
            } else {
                tok[k++] = p[j];
            }
        }
        i = j;
        if (json_is_object(v)) {
            v = json_object_getn(v, tok, k);
        } else if (json_is_array(v)) {
            size_t idx = 0;
            int ok = k > 0 && k <= 18 && !(k > 1 && tok[0] == '0');
            for (size_t q = 0; ok && q < k; q++) {
                ok = tok[q] >= '0' && tok[q] <= '9';
                idx = idx * 10 + (size_t)(tok[q] - '0');
            }
            v = ok ? json_array_get(v, idx) : NULL;
        } else {
            v = NULL;
        }
        if (v == NULL) {
            /* A later bad escape still makes the pointer bad. */
            for (; i < n; i++) {
                if (p[i] == '~' && (i + 1 >= n || (p[i + 1] != '0' && p[i + 1] != '1')))
                    return -1;
            }
            return 0;
        }
    }
    *out = v;
    return 1;
}

static void check_pointer(struct jt_arena *a, const struct jt_value *root, json_t *doc,
                          const char *ptr, size_t plen, size_t depth, const char *text, size_t len)
{
    struct jt_value v;
    json_t *want = NULL;
    fo_err err = jt_pointer(a, root, ptr, plen, depth, &v);

    FUZZ_ASSERT(err == FO_OK || err == FO_ENOTFOUND || err == FO_EINVAL);
    if (err == FO_OK) {
        struct jt_value again;
        FUZZ_ASSERT(v.raw >= text && v.raw + v.len <= text + len && v.len > 0);
        FUZZ_ASSERT(jt_parse(a, v.raw, v.len, depth, &again) == FO_OK);
        FUZZ_ASSERT(again.kind == v.kind && again.len == v.len);
    }
    if (doc == NULL)
        return;
    int found = jansson_pointer(doc, ptr, plen, &want);
    FUZZ_ASSERTF((found == 1) == (err == FO_OK) && (found == -1) == (err == FO_EINVAL),
                 "jt_pointer %d, jansson walk %d", (int)err, found);
    if (found == 1) {
        json_t *got = load(v.raw, v.len);
        FUZZ_ASSERT(got == NULL || json_equal(got, want));
        json_decref(got);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jt_arena a;
    struct jt_value root, second, acc;
    struct buf out;
    const char *ptr, *text;
    size_t plen, len, depth;
    json_error_t e;

    if (size == 0)
        return 0;
    depth = data[0];
    ptr = (const char *)data + 1;
    const uint8_t *nl = memchr(data + 1, '\n', size - 1 < 256 ? size - 1 : 256);
    plen = nl ? (size_t)(nl - (data + 1)) : 0;
    text = nl ? (const char *)nl + 1 : (const char *)data + 1;
    len = size - (size_t)(text - (const char *)data);

    jt_arena_init(&a);
    buf_init(&out, 0);
    fo_err err = jt_parse(&a, text, len, depth, &root);
    FUZZ_ASSERT(err == FO_OK || err == FO_EINVAL);
    int strict = json_valid(text, len, depth, NULL, NULL);
    json_t *doc = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (strict)
        FUZZ_ASSERTF(err == FO_OK, "json_valid accepts, jt_parse refuses");
    if (doc != NULL && nesting(text, len) <= depth && memchr(text, '\0', len) == NULL)
        FUZZ_ASSERTF(err == FO_OK, "jansson accepts, jt_parse refuses");
    if (err != FO_OK)
        goto out;

    /* Written back: the text itself, or (duplicates) the same value. */
    FUZZ_ASSERT(jt_write(&out, &root) == FO_OK);
    FUZZ_ASSERT(utf8_valid(out.data, out.len));
    if (strict)
        FUZZ_ASSERT(out.len == root.len && memcmp(out.data, root.raw, root.len) == 0);
    /* (Compared only where jansson takes the text: it refuses "\u0000" in keys.) */
    json_t *w = doc != NULL ? load(out.data, out.len) : NULL;
    FUZZ_ASSERT(w == NULL || json_equal(w, doc));
    json_decref(w);

    /* Merged twice into nothing: the same value. */
    if (root.kind == JT_OBJECT) {
        FUZZ_ASSERT(jt_parse(&a, text, len, depth, &second) == FO_OK);
        FUZZ_ASSERT(jt_new_object(&a, &acc) == FO_OK);
        FUZZ_ASSERT(jt_merge(&a, &acc, &root) == FO_OK);
        FUZZ_ASSERT(jt_merge(&a, &acc, &second) == FO_OK);
        buf_reset(&out);
        FUZZ_ASSERT(jt_write(&out, &acc) == FO_OK);
        FUZZ_ASSERT(json_valid(out.data, out.len, depth + 1, NULL, NULL) || !strict);
        w = doc != NULL ? load(out.data, out.len) : NULL;
        FUZZ_ASSERT(w == NULL || json_equal(w, doc));
        json_decref(w);
    }
    check_pointer(&a, &root, doc, ptr, plen, depth, text, len);
out:
    json_decref(doc);
    buf_free(&out);
    jt_arena_free(&a);
    return 0;
}
