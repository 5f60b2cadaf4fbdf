/*
 * test_result.c - result.h: result_ok and the response documents of
 * merge_build for "none", "bodies" and "deep".
 *
 * Items and results are built by hand (a result's body is the already
 * encoded JSON value text, as a worker leaves it); every document is parsed
 * back with jansson, duplicate keys refused, and checked field by field.
 */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "encode.h"
#include "harness.h"
#include "result.h"

/* One row of a hand-made batch: the item and what its fetch gave. */
struct row {
    const char *id;
    const char *url;
    int status;        /* 0: no response */
    const char *ctype; /* NULL: none */
    const char *body;  /* encoded JSON value text, NULL: none */
    enum body_encoding enc;
    enum item_error error; /* ERR_NONE: fetched */
    const char *message;
    double ms;
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Fills req and res (n entries, freed with free_batch) from rows. */
static void make_batch(const struct row *rows, size_t n, struct batch_req *req, struct result *res)
{
    memset(req, 0, sizeof(*req));
    req->items = calloc(n, sizeof(*req->items));
    req->n = req->items ? n : 0;
    for (size_t i = 0; i < req->n; i++) {
        req->items[i].id = strdup(rows[i].id);
        req->items[i].url = strdup(rows[i].url);
        memset(&res[i], 0, sizeof(res[i]));
        res[i].status = rows[i].status;
        res[i].content_type = dup_or_null(rows[i].ctype);
        res[i].body = dup_or_null(rows[i].body);
        res[i].body_len = rows[i].body ? strlen(rows[i].body) : 0;
        res[i].enc = rows[i].enc;
        res[i].duration_ms = rows[i].ms;
        if (rows[i].error != ERR_NONE)
            result_fail(&res[i], rows[i].error, "%s", rows[i].message);
    }
}

static void free_batch(struct batch_req *req, struct result *res)
{
    for (size_t i = 0; i < req->n; i++)
        result_clear(&res[i]);
    batch_req_free(req);
}

/* merge_build, then the document parsed strictly (NULL and a failed check if not JSON). */
static json_t *build(const struct row *rows, size_t n, enum merge_mode mode, int *complete)
{
    struct batch_req req;
    struct result res[16];
    struct buf out;
    json_error_t jerr;
    json_t *doc = NULL;

    if (n > FO_ARRAY_LEN(res))
        return NULL;
    make_batch(rows, n, &req, res);
    buf_init(&out, 0);
    *complete = -1;
    CHECK_EQ_INT(merge_build(&req, res, mode, 42.5, &out, complete), FO_OK);
    CHECK(utf8_valid(out.data, out.len));
    doc = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL)
        CHECK_FAIL_("merge_build wrote invalid JSON (%s): %s", jerr.text, buf_cstr(&out));
    buf_free(&out);
    free_batch(&req, res);
    return doc;
}

static int near(double a, double b)
{
    return fabs(a - b) < 1e-6;
}

/* Checks summary {"total","ok","failed","duration_ms"}. */
static void check_summary(json_t *doc, int total, int ok)
{
    json_t *s = json_object_get(doc, "summary");

    CHECK(json_is_object(s));
    CHECK_EQ_INT(json_object_size(s), 4);
    CHECK_EQ_INT(json_integer_value(json_object_get(s, "total")), total);
    CHECK_EQ_INT(json_integer_value(json_object_get(s, "ok")), ok);
    CHECK_EQ_INT(json_integer_value(json_object_get(s, "failed")), total - ok);
    CHECK(json_is_number(json_object_get(s, "duration_ms")));
    CHECK(near(json_number_value(json_object_get(s, "duration_ms")), 42.5));
}

/* 1 if v equals the JSON text want. */
static int json_is(json_t *v, const char *want)
{
    json_t *w = json_loads(want, JSON_DECODE_ANY, NULL);
    int eq = w != NULL && v != NULL && json_equal(v, w);

    json_decref(w);
    return eq;
}

static const struct row mixed[] = {
    { "a", "http://a/1", 200, "application/json", "{\"x\":1}", BODY_JSON, ERR_NONE, NULL, 12.5 },
    { "b", "http://b/2", 404, "text/plain", "\"not found\"", BODY_TEXT, ERR_NONE, NULL, 3 },
    { "c", "http://c/3", 0, NULL, NULL, BODY_NONE, ERR_DNS, "no such host", 1 },
    { "d", "http://d/4", 200, "text/plain", NULL, BODY_NONE, ERR_NONE, NULL, 2 },
    { "e", "http://e/5", 200, "text/plain", NULL, BODY_NONE, ERR_TOO_LARGE, "over the cap", 9 },
    { "f", "http://f/6", 204, NULL, "null", BODY_NONE, ERR_NONE, NULL, 1 },
    { "g", "http://g/7", 200, "application/octet-stream", "\"AAE=\"", BODY_BASE64, ERR_NONE, NULL,
      1 },
    { "h\"q\xc3\xa9", "http://h/8?a=\"b\"", 500, "application/json", "[1]", BODY_JSON, ERR_NONE,
      NULL, 1 },
};

static void test_result_ok(void)
{
    static const struct {
        int status;
        enum item_error e;
        int want;
    } cases[] = {
        { 200, ERR_NONE, 1 }, { 204, ERR_NONE, 1 },      { 299, ERR_NONE, 1 },
        { 199, ERR_NONE, 0 }, { 300, ERR_NONE, 0 },      { 404, ERR_NONE, 0 },
        { 0, ERR_NONE, 0 },   { 200, ERR_TOO_LARGE, 0 }, { 0, ERR_TIMEOUT, 0 },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct result r = { .status = cases[i].status, .error = cases[i].e };
        CHECK_EQ_INT(result_ok(&r), cases[i].want);
    }
}

static void test_error_codes(void)
{
    static const char *const codes[] = {
        "invalid_url",       "blocked_destination", "dns_failure", "connect_failed",
        "timeout",           "deadline_exceeded",   "too_large",   "too_many_redirects",
        "tls_error",         "upstream_error",      "cancelled",   "circuit_open",
        "failed_dependency", "select_failed",
    };

    CHECK_EQ_INT(ERR_COUNT - 1, FO_ARRAY_LEN(codes));
    for (int e = ERR_NONE + 1; e < ERR_COUNT; e++)
        CHECK_STR(item_error_code((enum item_error)e), codes[e - 1]);
}

static void test_merge_none(void)
{
    int complete;
    json_t *doc = build(mixed, FO_ARRAY_LEN(mixed), MERGE_NONE, &complete);
    json_t *results = json_object_get(doc, "results"), *r;

    if (doc == NULL)
        return;
    CHECK_EQ_INT(complete, 0);
    CHECK_EQ_INT(json_object_size(doc), 2); /* results, summary */
    CHECK_EQ_INT(json_array_size(results), FO_ARRAY_LEN(mixed));
    for (size_t i = 0; i < json_array_size(results) && i < FO_ARRAY_LEN(mixed); i++) {
        r = json_array_get(results, i);
        CHECK_STR(json_string_value(json_object_get(r, "id")), mixed[i].id); /* in order */
        CHECK_STR(json_string_value(json_object_get(r, "url")), mixed[i].url);
        CHECK(near(json_number_value(json_object_get(r, "duration_ms")), mixed[i].ms));
        /* content_type exactly when a response arrived */
        CHECK_EQ_INT(json_object_get(r, "content_type") != NULL, mixed[i].status != 0);
        /* error exactly when the fetch failed */
        CHECK_EQ_INT(json_object_get(r, "error") != NULL, mixed[i].error != ERR_NONE);
        /* body and body_encoding exactly when a response arrived and nothing failed */
        int has_body = mixed[i].status != 0 && mixed[i].error == ERR_NONE;
        CHECK_EQ_INT(json_object_get(r, "body") != NULL, has_body);
        CHECK_EQ_INT(json_object_get(r, "body_encoding") != NULL, has_body);
    }

    /* a: ok JSON body embedded as a value */
    r = json_array_get(results, 0);
    CHECK(json_is_true(json_object_get(r, "ok")));
    CHECK_EQ_INT(json_integer_value(json_object_get(r, "status")), 200);
    CHECK_STR(json_string_value(json_object_get(r, "content_type")), "application/json");
    CHECK(json_is(json_object_get(r, "body"), "{\"x\":1}"));
    CHECK_STR(json_string_value(json_object_get(r, "body_encoding")), "json");
    /* b: a 404 is not an error: status, body, ok false */
    r = json_array_get(results, 1);
    CHECK(json_is_false(json_object_get(r, "ok")));
    CHECK_EQ_INT(json_integer_value(json_object_get(r, "status")), 404);
    CHECK_STR(json_string_value(json_object_get(r, "body")), "not found");
    CHECK_STR(json_string_value(json_object_get(r, "body_encoding")), "text");
    /* c: no response: status null, error object */
    r = json_array_get(results, 2);
    CHECK(json_is_false(json_object_get(r, "ok")));
    CHECK(json_is_null(json_object_get(r, "status")));
    json_t *err = json_object_get(r, "error");
    CHECK_EQ_INT(json_object_size(err), 2);
    CHECK_STR(json_string_value(json_object_get(err, "code")), "dns_failure");
    CHECK_STR(json_string_value(json_object_get(err, "message")), "no such host");
    /* d: empty body: body null, body_encoding null */
    r = json_array_get(results, 3);
    CHECK(json_is_true(json_object_get(r, "ok")));
    CHECK(json_is_null(json_object_get(r, "body")));
    CHECK(json_is_null(json_object_get(r, "body_encoding")));
    /* e: failed after the headers: status kept, no body */
    r = json_array_get(results, 4);
    CHECK(json_is_false(json_object_get(r, "ok")));
    CHECK_EQ_INT(json_integer_value(json_object_get(r, "status")), 200);
    CHECK_STR(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
              "too_large");
    /* f: 204 with the encoder's null body; no content type */
    r = json_array_get(results, 5);
    CHECK(json_is_null(json_object_get(r, "content_type")));
    CHECK(json_is_null(json_object_get(r, "body")));
    CHECK(json_is_null(json_object_get(r, "body_encoding")));
    /* g: base64 */
    r = json_array_get(results, 6);
    CHECK_STR(json_string_value(json_object_get(r, "body")), "AAE=");
    CHECK_STR(json_string_value(json_object_get(r, "body_encoding")), "base64");
    /* h: an id and url needing escapes; a 500 with a JSON body */
    r = json_array_get(results, 7);
    CHECK(json_is_false(json_object_get(r, "ok")));
    CHECK(json_is(json_object_get(r, "body"), "[1]"));
    check_summary(doc, 8, 4);
    json_decref(doc);
}

static void test_merge_complete(void)
{
    static const struct row ok[] = {
        { "0", "http://a/", 200, "application/json", "{\"a\":1}", BODY_JSON, ERR_NONE, NULL, 1 },
        { "1", "http://b/", 201, "text/plain", "\"t\"", BODY_TEXT, ERR_NONE, NULL, 1 },
    };
    static const enum merge_mode modes[] = { MERGE_NONE, MERGE_BODIES, MERGE_DEEP };

    for (size_t m = 0; m < FO_ARRAY_LEN(modes); m++) {
        int complete;
        json_t *doc = build(ok, FO_ARRAY_LEN(ok), modes[m], &complete);
        CHECK_EQ_INT(complete, 1);
        check_summary(doc, 2, 2);
        if (modes[m] != MERGE_NONE)
            CHECK_EQ_INT(json_object_size(json_object_get(doc, "errors")), 0);
        json_decref(doc);
        doc = build(mixed, FO_ARRAY_LEN(mixed), modes[m], &complete);
        CHECK_EQ_INT(complete, 0);
        json_decref(doc);
    }
}

static void test_merge_bodies(void)
{
    int complete;
    json_t *doc = build(mixed, FO_ARRAY_LEN(mixed), MERGE_BODIES, &complete);
    json_t *data = json_object_get(doc, "data"), *errors = json_object_get(doc, "errors");
    static const char *const failed[] = { "b", "c", "e", "h\"q\xc3\xa9" };

    if (doc == NULL)
        return;
    CHECK_EQ_INT(complete, 0);
    CHECK_EQ_INT(json_object_size(doc), 3); /* data, errors, summary */
    CHECK(json_object_get(doc, "results") == NULL);
    /* data: the ok items only, each body as in RESULT */
    CHECK_EQ_INT(json_object_size(data), 4);
    CHECK(json_is(json_object_get(data, "a"), "{\"x\":1}"));
    CHECK(json_is_null(json_object_get(data, "d")));
    CHECK(json_object_get(data, "d") != NULL);
    CHECK(json_is_null(json_object_get(data, "f")));
    CHECK_STR(json_string_value(json_object_get(data, "g")), "AAE=");
    /* errors: the failed items by id, RESULT without body */
    CHECK_EQ_INT(json_object_size(errors), FO_ARRAY_LEN(failed));
    for (size_t i = 0; i < FO_ARRAY_LEN(failed); i++) {
        json_t *r = json_object_get(errors, failed[i]);
        CHECK_CASE(json_is_object(r), failed[i]);
        CHECK_CASE(json_object_get(r, "body") == NULL, failed[i]);
        CHECK_CASE(json_object_get(r, "body_encoding") == NULL, failed[i]);
        CHECK_CASE(json_is_false(json_object_get(r, "ok")), failed[i]);
        CHECK_CASE(json_object_get(r, "status") != NULL, failed[i]);
        CHECK_STR(json_string_value(json_object_get(r, "id")), failed[i]);
    }
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(errors, "b"), "status")), 404);
    CHECK(json_object_get(json_object_get(errors, "b"), "error") == NULL);
    CHECK_STR(json_string_value(json_object_get(
                  json_object_get(json_object_get(errors, "c"), "error"), "code")),
              "dns_failure");
    CHECK_STR(json_string_value(json_object_get(json_object_get(errors, "c"), "url")),
              "http://c/3");
    check_summary(doc, 8, 4);
    json_decref(doc);
}

static void test_merge_deep(void)
{
    static const struct row rows[] = {
        { "0", "http://a/", 200, "application/json",
          "{\"a\":1,\"n\":{\"x\":1,\"y\":[1,2]},\"s\":\"first\",\"k\":{\"old\":true}}", BODY_JSON,
          ERR_NONE, NULL, 1 },
        { "1", "http://b/", 200, "application/json",
          "{\"n\":{\"y\":[3],\"z\":true},\"s\":\"second\",\"b\":null,\"k\":5}", BODY_JSON,
          ERR_NONE, NULL, 1 },
        { "2", "http://c/", 200, "application/json", "[1,2]", BODY_JSON, ERR_NONE, NULL, 1 },
        { "3", "http://d/", 200, "text/plain", "\"{\\\"t\\\":1}\"", BODY_TEXT, ERR_NONE, NULL, 1 },
        { "4", "http://e/", 500, "application/json", "{\"a\":999}", BODY_JSON, ERR_NONE, NULL, 1 },
        { "5", "http://f/", 0, NULL, NULL, BODY_NONE, ERR_TIMEOUT, "slow", 1 },
        { "6", "http://g/", 200, "application/json",
          "{\"n\":{\"x\":{\"deep\":1}},\"k\":{\"new\":1}}", BODY_JSON, ERR_NONE, NULL, 1 },
        { "7", "http://h/", 200, "application/json", "\"scalar\"", BODY_JSON, ERR_NONE, NULL, 1 },
        { "8", "http://i/", 204, NULL, "null", BODY_NONE, ERR_NONE, NULL, 1 },
        { "9", "http://j/", 200, "application/json", "{\"u\":\"\xc3\xa9\\u00e9\",\"e\":{}}",
          BODY_JSON, ERR_NONE, NULL, 1 },
    };
    int complete;
    json_t *doc = build(rows, FO_ARRAY_LEN(rows), MERGE_DEEP, &complete);
    json_t *errors = json_object_get(doc, "errors");

    if (doc == NULL)
        return;
    CHECK_EQ_INT(complete, 0);
    CHECK_EQ_INT(json_object_size(doc), 3);
    /* Objects merge recursively, later keys win, arrays and scalars are replaced,
     * an object replacing a scalar does not bring the older object back. */
    if (!json_is(json_object_get(doc, "data"),
                 "{\"a\":1,\"n\":{\"x\":{\"deep\":1},\"y\":[3],\"z\":true},\"s\":\"second\","
                 "\"b\":null,\"k\":{\"new\":1},\"u\":\"\xc3\xa9\xc3\xa9\",\"e\":{}}")) {
        char *got = json_dumps(json_object_get(doc, "data"), JSON_SORT_KEYS);
        CHECK_FAIL_("deep data is %s", got ? got : "(null)");
        free(got);
    }
    /* Only the failed items are in errors. */
    CHECK_EQ_INT(json_object_size(errors), 2);
    CHECK(json_object_get(errors, "4") != NULL && json_object_get(errors, "5") != NULL);
    CHECK(json_object_get(json_object_get(errors, "4"), "body") == NULL);
    CHECK_STR(json_string_value(json_object_get(
                  json_object_get(json_object_get(errors, "5"), "error"), "code")),
              "timeout");
    check_summary(doc, 10, 8);
    json_decref(doc);
}

static void test_merge_deep_nothing_to_merge(void)
{
    static const struct row rows[] = {
        { "x", "http://a/", 200, "text/plain", "\"hi\"", BODY_TEXT, ERR_NONE, NULL, 1 },
        { "y", "http://b/", 0, NULL, NULL, BODY_NONE, ERR_CONNECT, "refused", 1 },
    };
    int complete;
    json_t *doc = build(rows, FO_ARRAY_LEN(rows), MERGE_DEEP, &complete);

    CHECK(json_is(json_object_get(doc, "data"), "{}"));
    CHECK_EQ_INT(json_object_size(json_object_get(doc, "errors")), 1);
    check_summary(doc, 2, 1);
    json_decref(doc);
}

/* merge_build's raw document (owned by the caller), for what jansson cannot hold. */
static char *build_raw(const struct row *rows, size_t n, enum merge_mode mode)
{
    struct batch_req req;
    struct result res[16];
    struct buf out;
    int complete;

    if (n > FO_ARRAY_LEN(res))
        return NULL;
    make_batch(rows, n, &req, res);
    buf_init(&out, 0);
    CHECK_EQ_INT(merge_build(&req, res, mode, 1.0, &out, &complete), FO_OK);
    free_batch(&req, res);
    return buf_steal(&out, &n);
}

/* Deep merge keeps every number as the upstream wrote it (issue 9, inputs 4 and 5). */
static void test_merge_deep_numbers(void)
{
    static const struct row rows[] = {
        { "0", "http://a/", 200, "application/json",
          "{\"big\":123456789012345678901234567890,\"n\":1,\"id\":9007199254740993}", BODY_JSON,
          ERR_NONE, NULL, 1 },
        { "1", "http://b/", 200, "application/json", "{\"keep\":1,\"f\":1e400}", BODY_JSON,
          ERR_NONE, NULL, 1 },
        { "2", "http://c/", 200, "application/json",
          "{\"z\":-0,\"r\":1.0,\"neg\":-98765432109876543210,\"e\":1E-400,\"n\":2}", BODY_JSON,
          ERR_NONE, NULL, 1 },
    };
    char *doc = build_raw(rows, FO_ARRAY_LEN(rows), MERGE_DEEP);
    const char *want =
        "{\"data\":{\"big\":123456789012345678901234567890,\"n\":2,"
        "\"id\":9007199254740993,\"keep\":1,\"f\":1e400,\"z\":-0,\"r\":1.0,"
        "\"neg\":-98765432109876543210,\"e\":1E-400},\"errors\":{},";

    CHECK(doc != NULL && strncmp(doc, want, strlen(want)) == 0);
    if (doc != NULL && strncmp(doc, want, strlen(want)) != 0)
        CHECK_FAIL_("got %s", doc);
    free(doc);
}

/* Nested objects, a key changing type, escaped keys, first-appearance order. */
static void test_merge_deep_keys(void)
{
    static const struct row rows[] = {
        { "0", "http://a/", 200, "application/json",
          "{\"\\u0061\":{\"x\":1},\"t\":{\"o\":1},\"l\":[1,2]}", BODY_JSON, ERR_NONE, NULL, 1 },
        { "1", "http://b/", 200, "application/json",
          "{\"t\":7,\"a\":{\"y\":{\"deep\":[]}},\"l\":{\"now\":\"object\"}}", BODY_JSON, ERR_NONE,
          NULL, 1 },
        { "2", "http://c/", 200, "application/json",
          "{\"t\":{\"again\":true},\"a\":{\"x\":1.50}}", BODY_JSON, ERR_NONE, NULL, 1 },
    };
    char *doc = build_raw(rows, FO_ARRAY_LEN(rows), MERGE_DEEP);
    const char *want =
        "{\"data\":{\"\\u0061\":{\"x\":1.50,\"y\":{\"deep\":[]}},"
        "\"t\":{\"again\":true},\"l\":{\"now\":\"object\"}},";

    CHECK(doc != NULL && strncmp(doc, want, strlen(want)) == 0);
    if (doc != NULL && strncmp(doc, want, strlen(want)) != 0)
        CHECK_FAIL_("got %s", doc);
    free(doc);
}

static const struct unit_test tests[] = {
    { "result_ok", test_result_ok },
    { "error_codes", test_error_codes },
    { "merge_none", test_merge_none },
    { "merge_complete", test_merge_complete },
    { "merge_bodies", test_merge_bodies },
    { "merge_deep", test_merge_deep },
    { "merge_deep_nothing_to_merge", test_merge_deep_nothing_to_merge },
    { "merge_deep_numbers", test_merge_deep_numbers },
    { "merge_deep_keys", test_merge_deep_keys },
};

UNIT_SUITE(result_suite, "result", tests);
