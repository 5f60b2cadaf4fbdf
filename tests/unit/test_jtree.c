/*
 * test_jtree.c - jtree.h: parsing (what is accepted, spans, duplicate
 * keys, escaped keys), writing back byte for byte, deep merge, and RFC
 * 6901 JSON Pointer lookups.
 */
#include <string.h>

#include "harness.h"
#include "jtree.h"

/* Parses text, writes the tree back; returns the text written (static), or NULL. */
static const char *round_trip(const char *text)
{
    static char got[4096];
    struct jt_arena a;
    struct jt_value v;
    struct buf out;
    const char *ret = NULL;

    jt_arena_init(&a);
    buf_init(&out, 0);
    if (jt_parse(&a, text, strlen(text), 512, &v) == FO_OK && jt_write(&out, &v) == FO_OK) {
        (void)snprintf(got, sizeof(got), "%s", buf_cstr(&out));
        ret = got;
    }
    buf_free(&out);
    jt_arena_free(&a);
    return ret;
}

static void test_parse_accepts(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "{\"big\":123456789012345678901234567890,\"n\":1,\"id\":9007199254740993}",
          "{\"big\":123456789012345678901234567890,\"n\":1,\"id\":9007199254740993}" },
        { "{\"keep\":1,\"f\":1e400}", "{\"keep\":1,\"f\":1e400}" },
        { "{\"z\":-0,\"one\":1.0,\"e\":1E+2,\"m\":-0.0e-0}",
          "{\"z\":-0,\"one\":1.0,\"e\":1E+2,\"m\":-0.0e-0}" },
        { " \n\t{ \"a\" : [ 1 , 2 ] }\r\n", "{ \"a\" : [ 1 , 2 ] }" },
        { "[1,{\"x\":[]},\"s\"]", "[1,{\"x\":[]},\"s\"]" },
        { "\"\\u00e9\\ud83d\\ude00\xc3\xa9\"", "\"\\u00e9\\ud83d\\ude00\xc3\xa9\"" },
        { "true", "true" },
        { "false", "false" },
        { "null", "null" },
        { "0", "0" },
        { "{}", "{}" },
        { "[]", "[]" },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++)
        CHECK_STR(round_trip(cases[i].in), cases[i].out);
}

static void test_parse_rejects(void)
{
    static const char *const bad[] = {
        "",          " ",           "{",           "}",        "[1,]",         "{\"a\":1,}",
        "{\"a\" 1}", "{a:1}",       "01",          "1.",       ".5",           "-",
        "1e",        "+1",          "tru",         "nul",      "\"abc",        "\"\\x\"",
        "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\xff\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"",
        "\"a\x01\"", "1 2",         "{} x",        "[1]]",     "{\"a\":1}}",   "NaN",
        "Infinity",  "{\"a\"}",     "[\"a\":1]",
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(bad); i++) {
        struct jt_arena a;
        struct jt_value v;
        jt_arena_init(&a);
        CHECK_CASE(jt_parse(&a, bad[i], strlen(bad[i]), 512, &v) == FO_EINVAL, bad[i]);
        jt_arena_free(&a);
    }
}

static void test_parse_depth(void)
{
    char deep[2 * 600 + 1];
    struct jt_arena a;
    struct jt_value v;

    for (size_t d = 510; d <= 514; d++) {
        memset(deep, '[', d);
        memset(deep + d, ']', d);
        jt_arena_init(&a);
        CHECK_EQ_INT(jt_parse(&a, deep, 2 * d, 512, &v), d <= 512 ? FO_OK : FO_EINVAL);
        jt_arena_free(&a);
    }
    /* Objects in objects are built at every level. */
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < 512; i++)
        CHECK_EQ_INT(buf_puts(&b, "{\"k\":"), FO_OK);
    CHECK_EQ_INT(buf_puts(&b, "1"), FO_OK);
    for (int i = 0; i < 512; i++)
        CHECK_EQ_INT(buf_putc(&b, '}'), FO_OK);
    jt_arena_init(&a);
    CHECK_EQ_INT(jt_parse(&a, b.data, b.len, 512, &v), FO_OK);
    CHECK_EQ_INT(jt_parse(&a, b.data, b.len, 511, &v), FO_EINVAL);
    jt_arena_free(&a);
    buf_free(&b);
}

static void test_spans_and_kinds(void)
{
    const char *text =
        "{\"a\":[1, 2],\"s\":\"x\",\"o\":{\"n\":-1.5e3},\"t\":true,\"f\":false,\"z\":null}";
    struct jt_arena a;
    struct jt_value v, *x;

    jt_arena_init(&a);
    CHECK_EQ_INT(jt_parse(&a, text, strlen(text), 512, &v), FO_OK);
    CHECK_EQ_INT(v.kind, JT_OBJECT);
    CHECK(v.raw == text && v.len == strlen(text));
    CHECK_EQ_INT(v.obj->n, 6);
    x = jt_get(&v, "a", 1);
    CHECK(x != NULL && x->kind == JT_ARRAY && x->len == 6 && memcmp(x->raw, "[1, 2]", 6) == 0);
    CHECK(x != NULL && x->obj == NULL); /* arrays stay spans */
    x = jt_get(&v, "o", 1);
    CHECK(x != NULL && x->kind == JT_OBJECT);
    x = jt_get(x, "n", 1);
    CHECK(x != NULL && x->kind == JT_NUMBER && x->len == 6 && memcmp(x->raw, "-1.5e3", 6) == 0);
    CHECK(jt_get(&v, "s", 1)->kind == JT_STRING);
    CHECK(jt_get(&v, "t", 1)->kind == JT_TRUE);
    CHECK(jt_get(&v, "f", 1)->kind == JT_FALSE);
    CHECK(jt_get(&v, "z", 1)->kind == JT_NULL);
    CHECK(jt_get(&v, "q", 1) == NULL);
    CHECK(jt_get(jt_get(&v, "s", 1), "q", 1) == NULL);
    /* Key order: as in the text. */
    CHECK(v.obj->m[0].name_len == 1 && v.obj->m[0].name[0] == 'a');
    CHECK(v.obj->m[5].name_len == 1 && v.obj->m[5].name[0] == 'z');
    jt_arena_free(&a);
}

static void test_escaped_keys(void)
{
    const char *text =
        "{\"\\u0061\":1,\"a\":2,\"\\/\\n\":3,\"\\ud83d\\ude00\":4,\"\xc3\xa9\":5,"
        "\"\\u00E9\":6}";
    struct jt_arena a;
    struct jt_value v;

    jt_arena_init(&a);
    CHECK_EQ_INT(jt_parse(&a, text, strlen(text), 512, &v), FO_OK);
    /* "\u0061" and "a" are one key: last wins, first spelling kept. */
    CHECK_EQ_INT(v.obj->n, 4);
    CHECK(jt_get(&v, "a", 1) != NULL && jt_get(&v, "a", 1)->raw[0] == '2');
    CHECK(jt_get(&v, "/\n", 2) != NULL && jt_get(&v, "/\n", 2)->raw[0] == '3');
    CHECK(jt_get(&v, "\xf0\x9f\x98\x80", 4) != NULL);
    CHECK(jt_get(&v, "\xc3\xa9", 2) != NULL && jt_get(&v, "\xc3\xa9", 2)->raw[0] == '6');
    jt_arena_free(&a);
    CHECK_STR(round_trip(text),
              "{\"\\u0061\":2,\"\\/\\n\":3,\"\\ud83d\\ude00\":4,\"\xc3\xa9\":6}");
}

static void test_duplicate_keys(void)
{
    /* The last value wins whole, at the first key's place; an enclosing object is rewritten too. */
    CHECK_STR(round_trip("{\"a\":1,\"b\":2,\"a\":3}"), "{\"a\":3,\"b\":2}");
    CHECK_STR(round_trip("{\"a\":{\"x\":1},\"a\":{\"y\":2}}"), "{\"a\":{\"y\":2}}");
    CHECK_STR(round_trip("{\"o\":{\"k\":1, \"k\":[2]}, \"p\":0}"), "{\"o\":{\"k\":[2]},\"p\":0}");
    /* Many members: found through the index. */
    struct buf b;
    buf_init(&b, 0);
    CHECK_EQ_INT(buf_putc(&b, '{'), FO_OK);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ_INT(buf_printf(&b, "\"k%d\":%d,", i % 500, i), FO_OK);
    CHECK_EQ_INT(buf_puts(&b, "\"end\":1}"), FO_OK);
    struct jt_arena a;
    struct jt_value v;
    jt_arena_init(&a);
    CHECK_EQ_INT(jt_parse(&a, b.data, b.len, 512, &v), FO_OK);
    CHECK_EQ_INT(v.obj->n, 501);
    for (int i = 0; i < 500; i++) {
        char k[16], want[16];
        int n = snprintf(k, sizeof(k), "k%d", i);
        struct jt_value *x = jt_get(&v, k, (size_t)n);
        (void)snprintf(want, sizeof(want), "%d", i + 500);
        CHECK_CASE(x != NULL && x->len == strlen(want) && memcmp(x->raw, want, x->len) == 0, k);
    }
    jt_arena_free(&a);
    buf_free(&b);
}

/* Merges the texts in order into an empty object; returns the written result (static). */
static const char *merge(const char *const *texts, size_t n)
{
    static char got[4096];
    struct jt_arena a;
    struct jt_value acc, v;
    struct buf out;
    const char *ret = got;

    jt_arena_init(&a);
    buf_init(&out, 0);
    CHECK_EQ_INT(jt_new_object(&a, &acc), FO_OK);
    for (size_t i = 0; i < n; i++) {
        if (jt_parse(&a, texts[i], strlen(texts[i]), 512, &v) != FO_OK ||
            jt_merge(&a, &acc, &v) != FO_OK)
            ret = NULL;
    }
    if (ret != NULL && jt_write(&out, &acc) == FO_OK)
        (void)snprintf(got, sizeof(got), "%s", buf_cstr(&out));
    else
        ret = NULL;
    buf_free(&out);
    jt_arena_free(&a);
    return ret;
}

static void test_merge(void)
{
    static const char *const numbers[] = {
        "{\"big\":123456789012345678901234567890,\"n\":1,\"id\":9007199254740993}",
        "{\"keep\":1,\"f\":1e400,\"z\":-0,\"r\":1.0}",
    };
    CHECK_STR(merge(numbers, 2),
              "{\"big\":123456789012345678901234567890,\"n\":1,"
              "\"id\":9007199254740993,\"keep\":1,\"f\":1e400,\"z\":-0,\"r\":1.0}");

    static const char *const nested[] = {
        "{\"a\":{\"x\":1,\"arr\":[1,2,3],\"o\":{\"p\":1,\"q\":1}},\"s\":\"first\",\"objnow\":5,"
        "\"scalnow\":{\"was\":\"object\"}}",
        "{\"a\":{\"y\":2,\"arr\":[9],\"o\":{\"q\":2,\"r\":3}},\"s\":\"second\","
        "\"objnow\":{\"is\":\"object\"},\"scalnow\":\"scalar\"}",
        "{\"a\":{\"o\":{\"r\":30}},\"objnow\":{\"more\":[]}}",
    };
    CHECK_STR(merge(nested, 3),
              "{\"a\":{\"x\":1,\"arr\":[9],\"o\":{\"p\":1,\"q\":2,\"r\":30},"
              "\"y\":2},\"s\":\"second\",\"objnow\":{\"is\":\"object\","
              "\"more\":[]},\"scalnow\":\"scalar\"}");

    /* A key whose value changes type, back and forth. */
    static const char *const types[] = {
        "{\"k\":{\"old\":true}}", "{\"k\":5}",
        "{\"k\":{\"new\":1}}",    "{\"k\":[1]}",
        "{\"k\":\"s\"}",          "{\"k\":{\"last\":null}}",
    };
    CHECK_STR(merge(types, 6), "{\"k\":{\"last\":null}}");
    CHECK_STR(merge(types, 3), "{\"k\":{\"new\":1}}");

    /* Keys compare decoded; the first spelling is kept. */
    static const char *const keys[] = {
        "{\"\\u0061\":{\"x\":1},\"\xc3\xa9\":1}",
        "{\"a\":{\"y\":2},\"\\u00e9\":2}",
    };
    CHECK_STR(merge(keys, 2), "{\"\\u0061\":{\"x\":1,\"y\":2},\"\xc3\xa9\":2}");

    /* Untouched objects are copied as the upstream wrote them (white space too). */
    static const char *const ws[] = { "{ \"a\" : { \"b\" : 1 } }", "{\"c\":{ }}" };
    CHECK_STR(merge(ws, 2), "{\"a\":{ \"b\" : 1 },\"c\":{ }}");
    CHECK_STR(merge(ws, 0), "{}");

    /* Duplicates inside one body: last wins before the merge. */
    static const char *const dup[] = { "{\"d\":1,\"d\":{\"x\":1}}", "{\"d\":{\"y\":2}}" };
    CHECK_STR(merge(dup, 2), "{\"d\":{\"x\":1,\"y\":2}}");

    /* Only objects merge. */
    struct jt_arena a;
    struct jt_value acc, arr;
    jt_arena_init(&a);
    CHECK_EQ_INT(jt_new_object(&a, &acc), FO_OK);
    CHECK_EQ_INT(jt_parse(&a, "[1]", 3, 512, &arr), FO_OK);
    CHECK_EQ_INT(jt_merge(&a, &acc, &arr), FO_EINVAL);
    jt_arena_free(&a);
}

/* jt_pointer on text; returns the named value's raw text (static) or NULL, and the error. */
static const char *pointer(const char *text, const char *ptr, fo_err *err)
{
    static char got[256];
    struct jt_arena a;
    struct jt_value root, v;
    const char *ret = NULL;

    jt_arena_init(&a);
    *err = jt_parse(&a, text, strlen(text), 512, &root);
    if (*err == FO_OK)
        *err = jt_pointer(&a, &root, ptr, strlen(ptr), 512, &v);
    if (*err == FO_OK) {
        (void)snprintf(got, sizeof(got), "%.*s", (int)v.len, v.raw);
        ret = got;
    }
    jt_arena_free(&a);
    return ret;
}

static void test_pointer(void)
{
    /* RFC 6901 section 5's document and examples. */
    const char *doc =
        "{\"foo\": [\"bar\", \"baz\"], \"\": 0, \"a/b\": 1, \"c%d\": 2, \"e^f\": 3,"
        " \"g|h\": 4, \"i\\\\j\": 5, \"k\\\"l\": 6, \" \": 7, \"m~n\": 8}";
    static const struct {
        const char *ptr, *want;
        fo_err err;
    } cases[] = {
        { "", NULL, FO_OK },
        { "/foo", "[\"bar\", \"baz\"]", FO_OK },
        { "/foo/0", "\"bar\"", FO_OK },
        { "/", "0", FO_OK },
        { "/a~1b", "1", FO_OK },
        { "/c%d", "2", FO_OK },
        { "/e^f", "3", FO_OK },
        { "/g|h", "4", FO_OK },
        { "/i\\j", "5", FO_OK },
        { "/k\"l", "6", FO_OK },
        { "/ ", "7", FO_OK },
        { "/m~0n", "8", FO_OK },
        { "/foo/1", "\"baz\"", FO_OK },
        /* what names nothing */
        { "/foo/2", NULL, FO_ENOTFOUND },
        { "/foo/-", NULL, FO_ENOTFOUND },
        { "/foo/01", NULL, FO_ENOTFOUND },
        { "/foo/+1", NULL, FO_ENOTFOUND },
        { "/foo/ 1", NULL, FO_ENOTFOUND },
        { "/nope", NULL, FO_ENOTFOUND },
        { "/foo/0/x", NULL, FO_ENOTFOUND },
        { "/a~1b/x", NULL, FO_ENOTFOUND },
        { "/m~n", NULL, FO_EINVAL },
        { "/m~2n", NULL, FO_EINVAL },
        { "/m~", NULL, FO_EINVAL },
        { "foo", NULL, FO_EINVAL },
    };
    fo_err err;

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        const char *got = pointer(doc, cases[i].ptr, &err);
        CHECK_CASE(err == cases[i].err, cases[i].ptr);
        if (cases[i].want != NULL)
            CHECK_STR(got, cases[i].want);
    }
    CHECK(pointer(doc, "", &err) != NULL && strlen(pointer(doc, "", &err)) == strlen(doc));

    /* Into arrays and the objects inside them; escaped keys; numbers as written. */
    const char *d2 =
        "{\"a\":[{\"b\":[10,{\"\\u0063\":123456789012345678901234567890}]},[[],1e400]],"
        "\"x\":{\"y\":{\"z\":-0}},\"x\":{\"w\":1}}";
    CHECK_STR(pointer(d2, "/a/0/b/1/c", &err), "123456789012345678901234567890");
    CHECK_STR(pointer(d2, "/a/1/1", &err), "1e400");
    CHECK_STR(pointer(d2, "/a/1/0", &err), "[]");
    CHECK(pointer(d2, "/a/1/0/0", &err) == NULL && err == FO_ENOTFOUND);
    CHECK(pointer(d2, "/a/0/b/1/c/0", &err) == NULL && err == FO_ENOTFOUND);
    CHECK_STR(pointer(d2, "/x/w", &err), "1"); /* duplicate: last wins */
    CHECK(pointer(d2, "/x/y", &err) == NULL && err == FO_ENOTFOUND);
    CHECK_STR(pointer("[0,1,2,3,4,5,6,7,8,9,10,11]", "/11", &err), "11");
    CHECK(pointer("[0,1]", "/99999999999999999999", &err) == NULL && err == FO_ENOTFOUND);
    CHECK_STR(pointer("\"s\"", "", &err), "\"s\"");
    CHECK(pointer("\"s\"", "/0", &err) == NULL && err == FO_ENOTFOUND);
}

static const struct unit_test tests[] = {
    { "parse_accepts", test_parse_accepts },
    { "parse_rejects", test_parse_rejects },
    { "parse_depth", test_parse_depth },
    { "spans_and_kinds", test_spans_and_kinds },
    { "escaped_keys", test_escaped_keys },
    { "duplicate_keys", test_duplicate_keys },
    { "merge", test_merge },
    { "pointer", test_pointer },
};

UNIT_SUITE(jtree_suite, "jtree", tests);
