/*
 * fuzz_template.c - template.h: tpl_parse / tpl_parse_json and tpl_render on
 * any bytes.
 *
 * Input: byte 0 bit 0 chooses the form (0: text - url, header value, string
 * body; 1: a JSON body, used only when the rest is one JSON value); the rest
 * is the template.
 *
 * Checks: parsing never fails but with FO_EINVAL (malformed) and leaves
 * nothing allocated; a text without "${" parses to itself; rendering with a
 * lookup that resolves every reference to its own text (a JSON string)
 * gives back the source with each "$${" read as "${" (text form, headers,
 * and urls when the template holds no reference), and the nrefs count
 * matches the references rendered; a JSON body renders to one valid JSON
 * value whatever the references hold; a url's references are written with
 * RFC 3986 unreserved bytes and %XX only.
 */
#include <string.h>

#include "encode.h"
#include "fuzz_common.h"
#include "template.h"

struct ctx {
    size_t calls;
    struct buf scratch;
};

/* Every reference resolves to its own text, as a JSON string. */
static fo_err self_lookup(void *c, struct jt_arena *a, const struct tpl_ref *ref,
                          struct tpl_value *out, struct fo_msg *why)
{
    struct ctx *ctx = c;
    (void)a;
    (void)why;
    ctx->calls++;
    buf_reset(&ctx->scratch);
    if (json_put_cstr(&ctx->scratch, ref->text) != FO_OK)
        return FO_ENOMEM;
    *out = (struct tpl_value){ JT_STRING, ctx->scratch.data, ctx->scratch.len, 0 };
    return FO_OK;
}

/* src with each "$${" read as "${", scanning as the parser does (a
 * reference "${...}" runs to the first '}' and is copied whole). */
static size_t unescape(const char *s, size_t len, char *out)
{
    size_t n = 0;

    for (size_t i = 0; i < len;) {
        if (s[i] == '$' && i + 1 < len && s[i + 1] == '{') {
            const char *end = memchr(s + i, '}', len - i);
            size_t k = end != NULL ? (size_t)(end - s) + 1 - i : len - i;
            memcpy(out + n, s + i, k);
            n += k;
            i += k;
        } else if (s[i] == '$' && i + 2 < len && s[i + 1] == '$' && s[i + 2] == '{') {
            memcpy(out + n, "${", 2);
            n += 2;
            i += 3;
        } else {
            out[n++] = s[i++];
        }
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tpl t;
    struct fo_msg why;
    struct ctx ctx = { 0 };
    struct buf out;
    const char *s;
    size_t len;
    fo_err err;
    int json;

    if (size < 1 || size > 4096)
        return 0;
    json = data[0] & 1;
    s = (const char *)data + 1;
    len = size - 1;
    if (json && !json_valid(s, len, 64, NULL, NULL))
        return 0;
    err = json ? tpl_parse_json(s, len, &t, &why) : tpl_parse(s, len, &t, &why);
    FUZZ_ASSERTF(err == FO_OK || err == FO_EINVAL, "err %d", (int)err);
    if (err != FO_OK) {
        FUZZ_ASSERT(t.parts == NULL && t.n == 0);
        FUZZ_ASSERT(why.text[0] != '\0');
        return 0;
    }
    buf_init(&ctx.scratch, 0);
    buf_init(&out, 0);
    if (!json) {
        if (memmem(s, len, "${", 2) == NULL)
            FUZZ_ASSERT(t.nrefs == 0 && (len == 0 ? t.n == 0 : t.n == 1 && t.parts[0].lit_len == len &&
                                                             memcmp(t.parts[0].lit, s, len) == 0));
        char *want = malloc(len + 1);
        FUZZ_ASSERT(want != NULL);
        size_t wlen = unescape(s, len, want);
        err = tpl_render(&t, TPL_PLACE_TEXT, self_lookup, &ctx, &out, &why);
        FUZZ_ASSERT(err == FO_OK || err == FO_ENOMEM);
        if (err == FO_OK) {
            FUZZ_ASSERT(ctx.calls == t.nrefs);
            FUZZ_ASSERTF(out.len == wlen && memcmp(out.data ? out.data : "", want, wlen) == 0,
                         "render of %.*s", (int)len, s);
        }
        buf_reset(&out);
        err = tpl_render(&t, TPL_PLACE_URL, self_lookup, &ctx, &out, &why);
        FUZZ_ASSERT(err == FO_OK || err == FO_ENOMEM);
        if (err == FO_OK && t.nrefs == 0)
            FUZZ_ASSERT(out.len == wlen && memcmp(out.data ? out.data : "", want, wlen) == 0);
        buf_reset(&out);
        err = tpl_render(&t, TPL_PLACE_HEADER, self_lookup, &ctx, &out, &why);
        FUZZ_ASSERT(err == FO_OK || err == FO_EINVAL || err == FO_ENOMEM);
        if (err == FO_OK)
            FUZZ_ASSERT(out.len == wlen && memcmp(out.data ? out.data : "", want, wlen) == 0);
        free(want);
    } else {
        err = tpl_render(&t, TPL_PLACE_JSON, self_lookup, &ctx, &out, &why);
        FUZZ_ASSERT(err == FO_OK || err == FO_ENOMEM);
        if (err == FO_OK) {
            FUZZ_ASSERT(ctx.calls == t.nrefs);
            FUZZ_ASSERTF(json_valid(out.data ? out.data : "", out.len, 64, NULL, NULL),
                         "not JSON: %.*s", (int)out.len, out.data ? out.data : "");
            if (t.nrefs == 0 && !t.escapes)
                FUZZ_ASSERT(out.len == len && memcmp(out.data, s, len) == 0);
        }
    }
    buf_free(&out);
    buf_free(&ctx.scratch);
    tpl_free(&t);
    return 0;
}
