/*
 * test_encode.c - encode.h (UTF-8 check, strict JSON validator, JSON media
 * types, base64, body_encode) and buf.h's JSON string writer.
 *
 * Most tests are tables: one row per input with the expected answer, so a
 * new edge case is one line. Inputs are byte strings with explicit lengths
 * (B("...")) because several hold NUL or invalid UTF-8.
 */
#include <jansson.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "encode.h"
#include "harness.h"

/* A byte-string literal and its length, NULs included. */
#define B(s) s, sizeof(s) - 1

struct bytes_case {
    const char *s;
    size_t len;
    int want;
};

static void test_utf8_valid(void)
{
    static const struct bytes_case cases[] = {
        { B(""), 1 },
        { B("plain ascii"), 1 },
        { B("a\0b"), 1 },             /* NUL is a valid code point */
        { B("h\xc3\xa9llo"), 1 },     /* U+00E9 */
        { B("\xe2\x82\xac"), 1 },     /* U+20AC */
        { B("\xf0\x9f\x98\x80"), 1 }, /* U+1F600, 4 bytes */
        { B("\xf4\x8f\xbf\xbf"), 1 }, /* U+10FFFF, the last */
        { B("\xed\x9f\xbf"), 1 },     /* U+D7FF, before the surrogates */
        { B("\xee\x80\x80"), 1 },     /* U+E000, after them */
        { B("abcdefgh\xc3\xa9"
            "abcdefgh\xf0\x9f\x98\x80"),
          1 },
        { B("\xc0\xaf"), 0 },                 /* overlong '/' */
        { B("\xc1\xbf"), 0 },                 /* overlong U+007F */
        { B("\xe0\x80\xaf"), 0 },             /* overlong 3-byte '/' */
        { B("\xe0\x9f\xbf"), 0 },             /* overlong U+07FF */
        { B("\xf0\x80\x80\xaf"), 0 },         /* overlong 4-byte '/' */
        { B("\xf0\x8f\xbf\xbf"), 0 },         /* overlong U+FFFF */
        { B("\xed\xa0\x80"), 0 },             /* U+D800 */
        { B("\xed\xbf\xbf"), 0 },             /* U+DFFF */
        { B("\xed\xa0\xbd\xed\xb8\x80"), 0 }, /* CESU-8 surrogate pair */
        { B("\xf4\x90\x80\x80"), 0 },         /* U+110000 */
        { B("\xf5\x80\x80\x80"), 0 },
        { B("\xf8\x88\x80\x80\x80"), 0 }, /* 5-byte form */
        { B("\xfe"), 0 },
        { B("\xff"), 0 },
        { B("\x80"), 0 },                    /* lone continuation */
        { B("\xc3"), 0 },                    /* truncated 2-byte */
        { B("\xe2\x82"), 0 },                /* truncated 3-byte */
        { B("\xf0\x9f\x98"), 0 },            /* truncated 4-byte */
        { B("ok ok ok \xf0\x9f\x98"), 0 },   /* truncated at the end */
        { B("\xe2\x28\xa1"), 0 },            /* bad continuation */
        { B("\xc3\xa9\xa9"), 0 },            /* one continuation too many */
        { B("abcdefghijklmnop\x80xyz"), 0 }, /* after the 8-byte fast path */
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        if (utf8_valid(cases[i].s, cases[i].len) != cases[i].want)
            CHECK_FAIL_("utf8_valid case %zu: want %d", i, cases[i].want);
    }
}

static int jv(const char *s, size_t len, size_t depth)
{
    return json_valid(s, len, depth, NULL, NULL);
}

static void test_json_valid_accepts(void)
{
    static const char *const valid[] = {
        "0",
        "-0",
        "1",
        "-1",
        "12345678901234567890123",
        "-12345678901234567890123",
        "1e300",
        "1E+2",
        "1e-2",
        "-0.5e-3",
        "3.14",
        "0.0",
        "true",
        "false",
        "null",
        "\"\"",
        "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"",
        "\"\\u00e9\\u00E9\"",
        "\"\\uD83D\\uDE00\"",
        "\"\\ud83d\\ude00\"",
        "\"h\xc3\xa9 \xf0\x9f\x98\x80\"",
        "\"\x7f\"",
        "{}",
        "[]",
        "[[]]",
        "[{}]",
        "{\"a\":{}}",
        "[ ]",
        "{ }",
        " \t\r\n[1, {\"a\": [null, true]}, \"x\"] \n",
        "{\"a\":{\"b\":{\"c\":[1,2,{\"d\":null}]}}}",
        "{\"a\":1,\"b\":{\"a\":2}}", /* same key in different objects */
        "[{\"a\":1},{\"a\":2}]",
        "{\"a\":1,\"A\":2,\"a \":3}",
        "{\"\":1}",
        "{\"x\":{\"k\":1},\"y\":{\"k\":2}}",
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(valid); i++)
        CHECK_CASE(jv(valid[i], strlen(valid[i]), 64) == 1, valid[i]);
}

static void test_json_valid_rejects(void)
{
    static const struct bytes_case invalid[] = {
        { B(""), 0 },
        { B("   "), 0 },
        { B("[1,]"), 0 },
        { B("{\"a\":1,}"), 0 },
        { B("[,1]"), 0 },
        { B("[1,,2]"), 0 },
        { B("01"), 0 },
        { B("-01"), 0 },
        { B("[01]"), 0 },
        { B("00"), 0 },
        { B("1."), 0 },
        { B(".5"), 0 },
        { B("+1"), 0 },
        { B("1e"), 0 },
        { B("1e+"), 0 },
        { B("-"), 0 },
        { B("0x10"), 0 },
        { B("1.5.2"), 0 },
        { B("1.e5"), 0 },
        { B("-.5"), 0 },
        { B("1e5.0"), 0 },
        { B("- 1"), 0 },
        { B("NaN"), 0 },
        { B("Infinity"), 0 },
        { B("-Infinity"), 0 },
        { B("[NaN]"), 0 },
        { B("'a'"), 0 },
        { B("{'a':1}"), 0 },
        { B("{a:1}"), 0 },
        { B("\"a\tb\""), 0 },
        { B("\"a\nb\""), 0 },
        { B("\"\x01\""), 0 },
        { B("\"a\0b\""), 0 },
        { B("\"\\x\""), 0 },
        { B("\"\\'\""), 0 },
        { B("\"\\u12\""), 0 },
        { B("\"\\u12G4\""), 0 },
        { B("\"\\"), 0 },
        { B("\"abc"), 0 },
        { B("\"\xc3\""), 0 },
        { B("\"\xed\xa0\x80\""), 0 },
        { B("\"\xc0\xaf\""), 0 },
        { B("{\"\xff\":1}"), 0 }, /* bad UTF-8 in a key */
        { B("1 2"), 0 },
        { B("[] []"), 0 },
        { B("{}{}"), 0 },
        { B("{\"a\":1}x"), 0 },
        { B("[1 2]"), 0 },
        { B("{\"a\":1 \"b\":2}"), 0 },
        { B("["), 0 },
        { B("{"), 0 },
        { B("]"), 0 },
        { B("[}"), 0 },
        { B("{]"), 0 },
        { B("{\"a\"}"), 0 },
        { B("{\"a\" 1}"), 0 },
        { B("{1:2}"), 0 },
        { B("{\"a\":}"), 0 },
        { B("tru"), 0 },
        { B("nul"), 0 },
        { B("True"), 0 },
        { B("nulll"), 0 },
        { B("{\"a\":1,\"a\":2}"), 0 },
        { B("{\"a\":1,\"\\u0061\":2}"), 0 }, /* same key, escaped */
        { B("{\"\\/\":1,\"/\":2}"), 0 },
        { B("{\"x\":{\"b\":1,\"b\":1}}"), 0 }, /* duplicate one level down */
        { B("[{\"a\":1,\"b\":2,\"a\":3}]"), 0 },
        { B("{\"\xc3\xa9\":1,\"\\u00e9\":2}"), 0 },
        { B("{\"\\u00E9\":1,\"\\u00e9\":2}"), 0 }, /* hex digit case */
        { B("{\"\\ud83d\\ude00\":1,\"\\uD83D\\uDE00\":2}"), 0 },
        /* U+1F600 raw and as an escaped surrogate pair: the same key. */
        { B("{\"\xf0\x9f\x98\x80\":1,\"\\ud83d\\ude00\":2}"), 0 },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(invalid); i++) {
        if (jv(invalid[i].s, invalid[i].len, 64) != 0)
            CHECK_FAIL_("json_valid accepted invalid case %zu: '%.*s'", i, (int)invalid[i].len,
                        invalid[i].s);
    }
}

static void test_json_valid_depth_and_bounds(void)
{
    static const struct {
        const char *s;
        size_t depth;
        int want;
    } cases[] = {
        { "1", 0, 1 },
        { "\"s\"", 0, 1 },
        { "[]", 0, 0 },
        { "{}", 0, 0 },
        { "[1]", 1, 1 },
        { "[[1]]", 1, 0 },
        { "[[1]]", 2, 1 },
        { "[[[1]]]", 2, 0 },
        { "[[]]", 2, 1 },
        { "[[[]]]", 2, 0 },
        { "{\"a\":{\"b\":1}}", 2, 1 },
        { "{\"a\":{\"b\":{}}}", 2, 0 },
        { "[{\"a\":[1]}]", 3, 1 },
        { "[{\"a\":[1]}]", 2, 0 },
        { "[[1],[2],[3]]", 2, 1 }, /* siblings do not add up */
    };
    char deep[2 * 1000 + 1];
    size_t vs = 99, ve = 99;

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++)
        CHECK_CASE(jv(cases[i].s, strlen(cases[i].s), cases[i].depth) == cases[i].want,
                   cases[i].s);

    /* FO_MAX_JSON_DEPTH exactly is fine, one more is not; 1000 is refused, no crash. */
    for (size_t n = FO_MAX_JSON_DEPTH; n <= FO_MAX_JSON_DEPTH + 1; n++) {
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        CHECK_EQ_INT(jv(deep, 2 * n, FO_MAX_JSON_DEPTH), n == FO_MAX_JSON_DEPTH);
    }
    memset(deep, '[', 1000);
    memset(deep + 1000, ']', 1000);
    CHECK_EQ_INT(jv(deep, 2000, FO_MAX_JSON_DEPTH), 0);
    CHECK_EQ_INT(jv(deep, 1000, FO_MAX_JSON_DEPTH), 0); /* unclosed */

    /* The bounds of the value exclude the white space around it. */
    CHECK_EQ_INT(json_valid(" \n [1, 2]\t ", 11, 8, &vs, &ve), 1);
    CHECK_EQ_INT(vs, 3);
    CHECK_EQ_INT(ve, 9);
    /* Only len bytes count: a valid prefix of a longer buffer. */
    CHECK_EQ_INT(jv("[1]garbage", 3, 8), 1);
    CHECK_EQ_INT(jv("\"abc\"", 4, 8), 0);
}

static void test_content_type_is_json(void)
{
    static const struct {
        const char *ct;
        int want;
    } cases[] = {
        { "application/json", 1 },
        { "application/json; charset=utf-8", 1 },
        { "application/json;charset=UTF-8", 1 },
        { "APPLICATION/JSON", 1 },
        { "Application/Json ; charset=utf-8", 1 },
        { "application/problem+json", 1 },
        { "application/vnd.api+json; charset=utf-8", 1 },
        { "application/ld+JSON", 1 },
        { "text/json", 0 },
        { "application/jsonx", 0 },
        { "application/json-seq", 0 },
        { "application/x-json-stream", 0 },
        { "application/jsonp", 0 },
        { "text/plain", 0 },
        { "text/plain; note=application/json", 0 },
        { "application/json+xml", 0 },
        { "json", 0 },
        { "+json", 0 },
        { "", 0 },
        { NULL, 0 },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++)
        CHECK_CASE(content_type_is_json(cases[i].ct) == cases[i].want,
                   cases[i].ct ? cases[i].ct : "(null)");
}

static void test_base64_vectors(void)
{
    /* RFC 4648 section 10, plus bytes that use '+' and '/'. */
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        { B(""), "" },
        { B("f"), "Zg==" },
        { B("fo"), "Zm8=" },
        { B("foo"), "Zm9v" },
        { B("foob"), "Zm9vYg==" },
        { B("fooba"), "Zm9vYmE=" },
        { B("foobar"), "Zm9vYmFy" },
        { B("\xff\xfe\x00"), "//4A" },
        { B("\xfb\xef\xbe"), "++++" },
        { B("\x00"), "AA==" },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct buf b;
        buf_init(&b, 0);
        CHECK_EQ_INT(base64_put(&b, cases[i].in, cases[i].len), FO_OK);
        CHECK_STR(buf_cstr(&b), cases[i].out);
        CHECK_EQ_INT(b.len, strlen(cases[i].out));
        buf_free(&b);
    }

    /* It appends; it does not overwrite. */
    struct buf b;
    buf_init(&b, 0);
    CHECK_EQ_INT(buf_puts(&b, "x="), FO_OK);
    CHECK_EQ_INT(base64_put(&b, "foob", 4), FO_OK);
    CHECK_STR(buf_cstr(&b), "x=Zm9vYg==");
    buf_free(&b);
}

/* Decodes standard padded base64; returns the length or -1. */
static long base64_decode(const char *in, size_t len, unsigned char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    long n = 0;

    if (len % 4 != 0)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (size_t k = 0; k < 4; k++) {
            const char *p = in[i + k] == '=' ? NULL : strchr(tab, in[i + k]);
            if (in[i + k] == '=')
                pad++;
            else if (p == NULL || in[i + k] == '\0' || pad)
                return -1;
            v = v << 6 | (p ? (unsigned)(p - tab) : 0);
        }
        out[n++] = (unsigned char)(v >> 16);
        if (pad < 2)
            out[n++] = (unsigned char)(v >> 8);
        if (pad < 1)
            out[n++] = (unsigned char)v;
    }
    return n;
}

/* Runs body_encode and parses what it wrote with jansson. */
static json_t *encode_and_parse(const char *ctype, const char *body, size_t len,
                                enum body_encoding *enc, struct buf *out)
{
    buf_init(out, 0);
    *enc = (enum body_encoding) - 1;
    if (body_encode(out, ctype, body, len, enc) != FO_OK)
        return NULL;
    /* Integers beyond 64 bits are valid JSON; jansson reads them only as reals. */
    json_t *v = json_loadb(out->data, out->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (v == NULL)
        v = json_loadb(out->data, out->len,
                       JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    return v;
}

static void test_body_encode(void)
{
    static const struct {
        const char *name;
        const char *ctype;
        const char *body;
        size_t len;
        enum body_encoding enc;
        const char *out; /* exact bytes written */
    } cases[] = {
        { "json verbatim, big number kept", "application/json",
          B("{\"n\": 12345678901234567890123}"), BODY_JSON, "{\"n\": 12345678901234567890123}" },
        { "json spelling kept", "application/json; charset=utf-8", B("[1e300, -0.5e-3, 1.0]"),
          BODY_JSON, "[1e300, -0.5e-3, 1.0]" },
        { "json white space trimmed", "application/json", B(" \r\n[1]\n\n"), BODY_JSON, "[1]" },
        { "+json type", "application/problem+json", B("{\"title\":\"x\"}"), BODY_JSON,
          "{\"title\":\"x\"}" },
        { "json scalar", "application/json", B("\"hi\""), BODY_JSON, "\"hi\"" },
        { "invalid json with json type", "application/json", B("{bad"), BODY_TEXT, "\"{bad\"" },
        { "duplicate keys with json type", "application/json", B("{\"a\":1,\"a\":2}"), BODY_TEXT,
          "\"{\\\"a\\\":1,\\\"a\\\":2}\"" },
        { "json under a text type", "text/plain", B("[1]"), BODY_TEXT, "\"[1]\"" },
        { "no type", NULL, B("hello"), BODY_TEXT, "\"hello\"" },
        { "text with newline and NUL", "text/plain", B("a\nb\0c"), BODY_TEXT,
          "\"a\\nb\\u0000c\"" },
        { "invalid UTF-8", "text/plain", B("\xff\xfe\x00\x01"), BODY_BASE64, "\"//4AAQ==\"" },
        { "invalid UTF-8 with json type", "application/json", B("\"\xff\""), BODY_BASE64,
          "\"Iv8i\"" },
        { "empty", "text/plain", B(""), BODY_NONE, "null" },
        { "empty json", "application/json", B(""), BODY_NONE, "null" },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        enum body_encoding enc;
        struct buf out;
        json_t *v = encode_and_parse(cases[i].ctype, cases[i].body, cases[i].len, &enc, &out);
        CHECK_CASE(v != NULL, cases[i].name);
        CHECK_CASE(enc == cases[i].enc, cases[i].name);
        CHECK_CASE(strcmp(buf_cstr(&out), cases[i].out) == 0, cases[i].name);
        if (enc == BODY_TEXT) {
            /* A text body round-trips to the same bytes. */
            CHECK_CASE(json_is_string(v) && json_string_length(v) == cases[i].len &&
                           memcmp(json_string_value(v), cases[i].body, cases[i].len) == 0,
                       cases[i].name);
        }
        json_decref(v);
        buf_free(&out);
    }
    CHECK_STR(body_encoding_name(BODY_JSON), "json");
    CHECK_STR(body_encoding_name(BODY_TEXT), "text");
    CHECK_STR(body_encoding_name(BODY_BASE64), "base64");
    CHECK_STR(body_encoding_name(BODY_NONE), NULL);
}

static void test_body_encode_base64_round_trip(void)
{
    unsigned char bytes[256 * 3 + 1], back[sizeof(bytes)];
    enum body_encoding enc;
    struct buf out;

    for (size_t i = 0; i < sizeof(bytes); i++)
        bytes[i] = (unsigned char)(255 - i % 256);
    for (size_t len = sizeof(bytes) - 3; len <= sizeof(bytes); len++) {
        json_t *v =
            encode_and_parse("application/octet-stream", (const char *)bytes, len, &enc, &out);
        CHECK_EQ_INT(enc, BODY_BASE64);
        CHECK(json_is_string(v));
        if (json_is_string(v)) {
            long n = base64_decode(json_string_value(v), json_string_length(v), back);
            CHECK_EQ_INT(n, (long)len);
            CHECK(n == (long)len && memcmp(back, bytes, len) == 0);
        }
        json_decref(v);
        buf_free(&out);
    }
}

/*
 * Whatever an upstream sends under a JSON type, what body_encode writes is
 * JSON a strict parser (jansson) takes: the contract's merged document must
 * be valid JSON, and merge "deep" parses these bodies with jansson.
 */
static void test_body_encode_output_parses(void)
{
    static const struct bytes_case bodies[] = {
        { B("{\"s\":\"\\ud83d\\ude00\"}"), 0 },
        { B("{\"s\":\"\\ud800\"}"), 0 }, /* lone high surrogate escape */
        { B("[\"\\udc00x\"]"), 0 },      /* lone low surrogate escape */
        { B("\"\\ude00\\ud83d\""), 0 },  /* pair in the wrong order */
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(bodies); i++) {
        enum body_encoding enc;
        struct buf out;
        json_t *v = encode_and_parse("application/json", bodies[i].s, bodies[i].len, &enc, &out);
        if (v == NULL)
            CHECK_FAIL_("body_encode wrote %s that jansson refuses: %s",
                        body_encoding_name(enc) ? body_encoding_name(enc) : "?", buf_cstr(&out));
        json_decref(v);
        buf_free(&out);
    }
}

static void test_json_put_str(void)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        { B("plain"), "\"plain\"" },
        { B(""), "\"\"" },
        { B("a\"b\\c/d"), "\"a\\\"b\\\\c/d\"" },
        { B("\n\r\t\b\f"), "\"\\n\\r\\t\\b\\f\"" },
        { B("\x01\x1f"), "\"\\u0001\\u001f\"" },
        { B("a\0b"), "\"a\\u0000b\"" },
        { B("\x7f"), "\"\x7f\"" },
        { B("\xe2\x80\xa8"), "\"\\u2028\"" },
        { B("x\xe2\x80\xa9y"), "\"x\\u2029y\"" },
        { B("\xe2\x80\xa8\xe2\x80\xa9"), "\"\\u2028\\u2029\"" },
        { B("\xe2\x80\xa7\xe2\x80\xaa"), "\"\xe2\x80\xa7\xe2\x80\xaa\"" }, /* neighbours kept */
        { B("h\xc3\xa9 \xf0\x9f\x98\x80"), "\"h\xc3\xa9 \xf0\x9f\x98\x80\"" },
        { B("</script>"), "\"</script>\"" },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct buf b;
        json_t *v;

        buf_init(&b, 0);
        CHECK_EQ_INT(json_put_str(&b, cases[i].in, cases[i].len), FO_OK);
        /* \u escapes may use either case of hex digit. */
        if (strcasecmp(buf_cstr(&b), cases[i].out) != 0)
            CHECK_FAIL_("json_put_str case %zu wrote %s, want %s", i, buf_cstr(&b), cases[i].out);
        CHECK(utf8_valid(b.data, b.len));
        v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        CHECK(json_is_string(v));
        if (json_is_string(v)) {
            CHECK_EQ_INT(json_string_length(v), cases[i].len);
            CHECK(memcmp(json_string_value(v), cases[i].in, cases[i].len) == 0);
        }
        json_decref(v);
        buf_free(&b);
    }
}

/* Every byte 0x00-0x7f in one string: escaped as needed and parsed back the same. */
static void test_json_put_str_all_ascii(void)
{
    char in[128];
    struct buf b;
    json_t *v;

    for (int i = 0; i < 128; i++)
        in[i] = (char)i;
    buf_init(&b, 0);
    CHECK_EQ_INT(json_put_str(&b, in, sizeof(in)), FO_OK);
    for (size_t i = 1; i + 1 < b.len; i++)
        CHECK((unsigned char)b.data[i] >= 0x20);
    CHECK(json_valid(b.data, b.len, 1, NULL, NULL));
    v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    CHECK(json_is_string(v) && json_string_length(v) == sizeof(in) &&
          memcmp(json_string_value(v), in, sizeof(in)) == 0);
    json_decref(v);
    buf_free(&b);
}

static void test_buf_cap(void)
{
    struct buf b;

    buf_init(&b, 8);
    CHECK_EQ_INT(buf_puts(&b, "12345"), FO_OK);
    CHECK_EQ_INT(buf_puts(&b, "6789"), FO_ETOOBIG); /* would pass the cap */
    CHECK_STR(buf_cstr(&b), "12345");               /* unchanged */
    CHECK_EQ_INT(b.len, 5);
    CHECK_EQ_INT(buf_puts(&b, "678"), FO_OK); /* exactly the cap */
    CHECK_STR(buf_cstr(&b), "12345678");
    CHECK_EQ_INT(buf_putc(&b, '9'), FO_ETOOBIG);
    CHECK_EQ_INT(buf_printf(&b, "%d", 1), FO_ETOOBIG);
    CHECK_EQ_INT(b.len, 8);
    buf_free(&b);
}

/* Byte order marks and declared charsets (issue 9, inputs 8 and 9): exact output. */
static void test_body_encode_bom_and_charsets(void)
{
    static const struct {
        const char *name;
        const char *ctype;
        const char *body;
        size_t len;
        enum body_encoding enc;
        const char *out;
    } cases[] = {
        { "bom json", "application/json", B("\xef\xbb\xbf{\"a\":1}"), BODY_JSON, "{\"a\":1}" },
        { "bom json ws", "application/json", B("\xef\xbb\xbf \n[1e400]"), BODY_JSON, "[1e400]" },
        { "bom text", "text/plain", B("\xef\xbb\xbfhi"), BODY_TEXT, "\"hi\"" },
        { "bom only: an empty body", "text/plain", B("\xef\xbb\xbf"), BODY_NONE, "null" },
        { "bom only, json", "application/json", B("\xef\xbb\xbf"), BODY_NONE, "null" },
        { "bom only, no type", NULL, B("\xef\xbb\xbf"), BODY_NONE, "null" },
        { "utf-16 bom only", "text/plain; charset=utf-16", B("\xff\xfe"), BODY_NONE, "null" },
        { "bom no type", NULL, B("\xef\xbb\xbf{\"a\":1}"), BODY_TEXT, "\"{\\\"a\\\":1}\"" },
        { "second bom kept", "text/plain", B("\xef\xbb\xbf\xef\xbb\xbfx"), BODY_TEXT,
          "\"\xef\xbb\xbfx\"" },
        { "bom then bad utf-8: base64 of all the bytes", "text/plain", B("\xef\xbb\xbf\xff"),
          BODY_BASE64, "\"77u//w==\"" },
        { "latin-1", "text/plain; charset=iso-8859-1", B("caf\xe9 cr\xe8me"), BODY_TEXT,
          "\"caf\xc3\xa9 cr\xc3\xa8me\"" },
        { "latin-1 upper case, quoted", "text/plain;CHARSET=\"ISO-8859-1\"", B("\xe9"), BODY_TEXT,
          "\"\xc3\xa9\"" },
        { "latin-1 after another parameter", "text/plain; format=flowed; charset=latin1",
          B("\xe9"), BODY_TEXT, "\"\xc3\xa9\"" },
        { "quoted parameter holding ;charset=", "text/plain; x=\";charset=latin1\"", B("\xe9"),
          BODY_BASE64, "\"6Q==\"" },
        { "windows-1252 euro", "text/plain; charset=windows-1252", B("\x80 5"), BODY_TEXT,
          "\"\xe2\x82\xac 5\"" },
        { "windows-1252 undefined byte", "text/plain; charset=windows-1252", B("\x81"),
          BODY_BASE64, "\"gQ==\"" },
        { "utf-16 with LE bom", "text/plain; charset=utf-16", B("\xff\xfeh\0\xe9\0"), BODY_TEXT,
          "\"h\xc3\xa9\"" },
        { "utf-16 with BE bom", "text/plain; charset=UTF-16", B("\xfe\xff\0h\0\xe9"), BODY_TEXT,
          "\"h\xc3\xa9\"" },
        { "utf-16 without bom is big-endian", "text/plain; charset=utf-16", B("\0h\0i"),
          BODY_TEXT, "\"hi\"" },
        { "utf-16le without bom", "text/plain; charset=utf-16le", B("h\0i\0"), BODY_TEXT,
          "\"hi\"" },
        { "utf-16le with bom: bom dropped", "text/plain; charset=utf-16le", B("\xff\xfeh\0"),
          BODY_TEXT, "\"h\"" },
        { "utf-16 odd length", "text/plain; charset=utf-16le", B("h\0i"), BODY_BASE64,
          "\"aABp\"" },
        { "utf-16 lone surrogate", "text/plain; charset=utf-16le", B("\x00\xd8"), BODY_BASE64,
          "\"ANg=\"" },
        { "json in latin-1", "application/json; charset=iso-8859-1",
          B("{\"caf\xe9\":123456789012345678901234567890}"), BODY_JSON,
          "{\"caf\xc3\xa9\":123456789012345678901234567890}" },
        { "json in utf-16", "application/json; charset=utf-16",
          B("\xff\xfe[\0"
            "1\0]\0"),
          BODY_JSON, "[1]" },
        { "bad json in latin-1 is text", "application/json; charset=latin1", B("{\xe9"),
          BODY_TEXT, "\"{\xc3\xa9\"" },
        { "unknown charset", "text/plain; charset=x-no-such-set", B("abc"), BODY_BASE64,
          "\"YWJj\"" },
        { "iconv suffix refused", "text/plain; charset=latin1//IGNORE", B("abc"), BODY_BASE64,
          "\"YWJj\"" },
        { "empty charset", "text/plain; charset=", B("abc"), BODY_BASE64, "\"YWJj\"" },
        { "utf-8 declared", "text/plain; charset=\"UTF-8\"", B("\xc3\xa9"), BODY_TEXT,
          "\"\xc3\xa9\"" },
        { "us-ascii declared", "text/plain; charset=us-ascii", B("abc"), BODY_TEXT, "\"abc\"" },
        { "empty body with charset", "text/plain; charset=utf-16", B(""), BODY_NONE, "null" },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        enum body_encoding enc = BODY_NONE;
        struct buf out;
        buf_init(&out, 0);
        CHECK_CASE(body_encode(&out, cases[i].ctype, cases[i].body, cases[i].len, &enc) == FO_OK,
                   cases[i].name);
        CHECK_CASE(enc == cases[i].enc, cases[i].name);
        CHECK_CASE(strcmp(buf_cstr(&out), cases[i].out) == 0, cases[i].name);
        if (strcmp(buf_cstr(&out), cases[i].out) != 0)
            printf("    got %s\n", buf_cstr(&out));
        buf_free(&out);
    }
}

static void test_charset_bounds(void)
{
    char name[CHARSET_NAME_MAX], big[3000];
    struct buf out;

    CHECK_EQ_INT(content_charset(NULL, name, sizeof(name)), 0);
    CHECK_EQ_INT(content_charset("text/plain", name, sizeof(name)), 0);
    CHECK_EQ_INT(content_charset("text/plain; charset=utf8", name, sizeof(name)), 0);
    CHECK_EQ_INT(content_charset("text/plain ; Charset = \"Latin1\" ", name, sizeof(name)), 1);
    CHECK_STR(name, "Latin1");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "text/plain;charset=", 19);
    CHECK_EQ_INT(content_charset(big, name, sizeof(name)), 1);
    CHECK_STR(name, ""); /* too long: no charset name */
    /* Growth: ISO-8859-1 at most 2x, UTF-16 1.5x; both inside the 3x cap. */
    memset(big, '\xe9', sizeof(big));
    CHECK_EQ_INT(charset_to_utf8("ISO-8859-1", big, sizeof(big), &out), FO_OK);
    CHECK_EQ_INT(out.len, 2 * sizeof(big));
    CHECK(out.cap <= 3 * sizeof(big) + 16);
    buf_free(&out);
    for (size_t i = 0; i < sizeof(big); i += 2) {
        big[i] = '\x20'; /* U+20AC, 3 bytes in UTF-8 */
        big[i + 1] = '\xac';
    }
    CHECK_EQ_INT(charset_to_utf8("UTF-16BE", big, sizeof(big), &out), FO_OK);
    CHECK_EQ_INT(out.len, 3 * sizeof(big) / 2);
    buf_free(&out);
    CHECK_EQ_INT(charset_to_utf8("UTF-16BE", big, 1, &out), FO_EINVAL);
    CHECK(out.data == NULL && out.len == 0);
    CHECK_EQ_INT(charset_to_utf8("NO-SUCH-CHARSET", "a", 1, &out), FO_EINVAL);
    CHECK_EQ_INT(charset_to_utf8("UTF-8//IGNORE", "a", 1, &out), FO_EINVAL);
}

static const struct unit_test tests[] = {
    { "utf8_valid", test_utf8_valid },
    { "json_valid_accepts", test_json_valid_accepts },
    { "json_valid_rejects", test_json_valid_rejects },
    { "json_valid_depth_and_bounds", test_json_valid_depth_and_bounds },
    { "content_type_is_json", test_content_type_is_json },
    { "base64_vectors", test_base64_vectors },
    { "body_encode", test_body_encode },
    { "body_encode_base64_round_trip", test_body_encode_base64_round_trip },
    { "body_encode_output_parses", test_body_encode_output_parses },
    { "body_encode_bom_and_charsets", test_body_encode_bom_and_charsets },
    { "charset_bounds", test_charset_bounds },
    { "json_put_str", test_json_put_str },
    { "json_put_str_all_ascii", test_json_put_str_all_ascii },
    { "buf_cap", test_buf_cap },
};

UNIT_SUITE(encode_suite, "encode", tests);
