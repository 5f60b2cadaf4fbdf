/*
 * fuzz_encode.c - body_encode: upstream bytes + Content-Type -> JSON value.
 *
 * Input: byte 0 picks the Content-Type: 0 none, 1 application/json,
 * 2 "application/problem+json; charset=utf-8", 3 text/plain, 4 and up: the
 * bytes after it up to the first '\n' (at most 255). The rest is the body.
 *
 * Checks (CONTRACT.md, encode.h): the output is valid UTF-8 and exactly one
 * valid JSON value (json_valid, and jansson loads it); an empty body is
 * null. The text is the body converted from a declared charset
 * (charset_to_utf8) without a leading UTF-8 byte order mark: "text" decodes
 * to it exactly; "base64" decodes back to the body's own bytes and is used
 * only when the charset did not convert or the text is not UTF-8; "json"
 * only for a JSON Content-Type, and it is the text without its surrounding
 * white space. Also json_valid against jansson on the body itself: a document
 * jansson accepts strictly (duplicates refused) is valid for fanoutd too.
 */
#include <string.h>

#include "encode.h"
#include "json_check.h"

static const char *const fixed_types[] = {
    NULL, "application/json", "application/problem+json; charset=utf-8", "text/plain",
};

/* 1 if the bytes hold at most max '[' and '{' (so nesting is at most max). */
static int shallow(const char *s, size_t len, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++)
        n += s[i] == '[' || s[i] == '{';
    return n <= max;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* json_valid against jansson on the raw body. */
static void differential(const char *body, size_t len)
{
    json_error_t e;
    json_t *v = json_loadb(body, len,
                           JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &e);
    int ours = json_valid(body, len, FO_MAX_JSON_DEPTH, NULL, NULL);

    /* jansson takes a raw NUL byte after a top-level number as the end
     * ("4\0" loads): a jansson quirk, not a valid document. */
    if (v != NULL && shallow(body, len, FO_MAX_JSON_DEPTH) && memchr(body, '\0', len) == NULL)
        FUZZ_ASSERTF(ours, "jansson accepts the body, json_valid refuses it");
    if (v == NULL && ours)
        FUZZ_ASSERTF(jansson_number_limit(&e),
                     "json_valid accepts the body, jansson refuses it: %s (line %d col %d)",
                     e.text, e.line, e.column);
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char ctype_buf[256];
    const char *ctype, *body;
    size_t len;
    struct buf out;
    enum body_encoding enc = (enum body_encoding)-1;
    int limit;

    if (size == 0)
        return 0;
    if (data[0] < FO_ARRAY_LEN(fixed_types)) {
        ctype = fixed_types[data[0]];
        body = (const char *)data + 1;
        len = size - 1;
    } else {
        size_t avail = size - 1;
        const uint8_t *nl = memchr(data + 1, '\n', avail);
        size_t n = nl ? (size_t)(nl - (data + 1)) : avail, skip = nl ? 1 : 0;
        if (n >= sizeof(ctype_buf)) {
            n = sizeof(ctype_buf) - 1;
            skip = 0;
        }
        memcpy(ctype_buf, data + 1, n);
        ctype_buf[n] = '\0';
        ctype = ctype_buf;
        body = (const char *)data + 1 + n + skip;
        len = avail - n - skip;
    }

    /* The text the rules apply to: converted, byte order mark dropped. */
    char charset[CHARSET_NAME_MAX];
    struct buf conv;
    const char *text = body;
    size_t tlen = len;
    int unconverted = 0;
    buf_init(&conv, 0);
    if (len > 0 && content_charset(ctype, charset, sizeof(charset))) {
        fo_err cerr = charset_to_utf8(charset, body, len, &conv);
        FUZZ_ASSERT(cerr == FO_OK || cerr == FO_EINVAL);
        if (cerr == FO_OK) {
            FUZZ_ASSERT(conv.len <= 3 * len + 16);
            text = conv.data;
            tlen = conv.len;
        } else {
            FUZZ_ASSERT(conv.data == NULL && conv.len == 0);
            unconverted = 1;
        }
    }
    if (!unconverted && tlen >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        text += 3;
        tlen -= 3;
    }

    buf_init(&out, 0);
    FUZZ_ASSERT(body_encode(&out, ctype, body, len, &enc) == FO_OK);
    FUZZ_ASSERT(out.len > 0 && out.data != NULL && out.data[out.len] == '\0');
    FUZZ_ASSERT(utf8_valid(out.data, out.len));
    FUZZ_ASSERTF(json_valid(out.data, out.len, FO_MAX_JSON_DEPTH, NULL, NULL),
                 "not one JSON value: %s", out.data);
    FUZZ_ASSERT(!is_ws(out.data[0]) && !is_ws(out.data[out.len - 1]));

    json_t *v = load_or_die(out.data, out.len, JSON_DECODE_ANY, &limit);
    switch (enc) {
    case BODY_NONE:
        /* No bytes, or only a UTF-8 byte order mark (which is not part of the body). */
        FUZZ_ASSERT(len == 0 || (!unconverted && tlen == 0));
        FUZZ_ASSERT(out.len == 4 && memcmp(out.data, "null", 4) == 0);
        break;
    case BODY_JSON:
        FUZZ_ASSERT(len > 0 && !unconverted && content_type_is_json(ctype));
        FUZZ_ASSERT(json_valid(text, tlen, FO_MAX_JSON_DEPTH, NULL, NULL));
        {
            /* The value as written, white space around it cut. */
            size_t s = 0, e = tlen;
            while (s < e && is_ws(text[s]))
                s++;
            while (e > s && is_ws(text[e - 1]))
                e--;
            FUZZ_ASSERT(out.len == e - s && memcmp(out.data, text + s, e - s) == 0);
        }
        FUZZ_ASSERT(limit || v != NULL);
        break;
    case BODY_TEXT:
        FUZZ_ASSERT(len > 0 && !unconverted && utf8_valid(text, tlen));
        FUZZ_ASSERT(!content_type_is_json(ctype) ||
                    !json_valid(text, tlen, FO_MAX_JSON_DEPTH, NULL, NULL));
        FUZZ_ASSERT(json_is_string(v));
        FUZZ_ASSERTF(json_string_length(v) == tlen &&
                         memcmp(json_string_value(v), text, tlen) == 0,
                     "text does not decode to the body (%zu vs %zu bytes)",
                     json_string_length(v), tlen);
        /* U+2028/U+2029 travel escaped (JavaScript consumers). */
        FUZZ_ASSERT(memmem(out.data, out.len, "\xe2\x80\xa8", 3) == NULL &&
                    memmem(out.data, out.len, "\xe2\x80\xa9", 3) == NULL);
        break;
    case BODY_BASE64: {
        size_t n = 0;
        unsigned char *raw;
        FUZZ_ASSERT(len > 0 && (unconverted || !utf8_valid(text, tlen)));
        FUZZ_ASSERT(json_is_string(v));
        raw = b64_decode(json_string_value(v), json_string_length(v), &n);
        FUZZ_ASSERT(raw != NULL);
        FUZZ_ASSERT(n == len && memcmp(raw, body, len) == 0);
        free(raw);
        break;
    }
    default:
        FUZZ_ASSERTF(0, "unknown encoding %d", (int)enc);
    }
    FUZZ_ASSERT((enc == BODY_NONE) == (body_encoding_name(enc) == NULL));
    json_decref(v);
    buf_free(&out);
    buf_free(&conv);

    differential(body, len);
    return 0;
}
