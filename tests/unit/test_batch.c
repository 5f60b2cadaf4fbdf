/*
 * test_batch.c - batch.h: the request forms of POST /batch, every 400 and
 * 413 the contract lists, plain lists, and url_check.
 *
 * Each test builds its configuration with config_build (defaults plus
 * overrides) and frees it; the refusal cases are one table row each.
 */
#include <jansson.h>
#include <string.h>
#include <strings.h>

#include "batch.h"
#include "harness.h"
#include "url.h"

/* The default configuration, or max_batch set to `max_batch` when > 0. */
static struct config *batch_config(const char *max_batch)
{
    struct config_override ov = { "max_batch", max_batch };
    struct config *cfg = NULL;
    struct fo_msg msg;

    if (config_build(NULL, &ov, max_batch ? 1 : 0, &cfg, &msg) != FO_OK)
        CHECK_FAIL_("config_build: %s", msg.text);
    return cfg;
}

/* Parses a NUL-terminated body under the default configuration. */
static fo_err parse(const char *body, int is_json, struct batch_req *b, struct fo_msg *msg)
{
    struct config *cfg = batch_config(NULL);
    fo_err err;

    msg->text[0] = '\0';
    if (cfg == NULL)
        return FO_ENOMEM;
    err = batch_parse(body, strlen(body), is_json, cfg, b, msg);
    config_unref(cfg);
    return err;
}

/* 1 if the item has the header line exactly. */
static int has_header(const struct item_req *it, const char *line)
{
    for (size_t i = 0; i < it->nheaders; i++) {
        if (strcmp(it->headers[i], line) == 0)
            return 1;
    }
    return 0;
}

static void test_array_of_strings(void)
{
    struct batch_req b;
    struct fo_msg msg;

    CHECK_EQ_INT(parse("[\"http://a.example/x\", \"https://b.example:8443/y?q=1\"]", 1, &b, &msg),
                 FO_OK);
    CHECK_EQ_INT(b.n, 2);
    if (b.n == 2) {
        CHECK_STR(b.items[0].id, "0");
        CHECK_STR(b.items[1].id, "1");
        CHECK_STR(b.items[0].url, "http://a.example/x");
        CHECK_STR(b.items[1].url, "https://b.example:8443/y?q=1");
        CHECK_STR(b.items[0].hostkey, "a.example:80");
        CHECK_STR(b.items[1].hostkey, "b.example:8443");
        CHECK_EQ_INT(b.items[0].method, M_GET);
        CHECK(b.items[0].body == NULL);
        CHECK_EQ_INT(b.items[0].nheaders, 0);
        CHECK_EQ_INT(b.items[0].timeout_ms, 0);
    }
    CHECK_EQ_INT(b.merge, MERGE_NONE);
    CHECK_EQ_INT(b.timeout_ms, 0);
    batch_req_free(&b);
}

static void test_mixed_array(void)
{
    struct batch_req b;
    struct fo_msg msg;

    CHECK_EQ_INT(parse("[\"http://a/x\", {\"url\": \"http://b/y\", \"id\": \"bee\"},"
                       " {\"url\": \"http://c/z\"}, \"https://d/\"]",
                       1, &b, &msg),
                 FO_OK);
    CHECK_EQ_INT(b.n, 4);
    if (b.n == 4) {
        CHECK_STR(b.items[0].id, "0");
        CHECK_STR(b.items[1].id, "bee");
        CHECK_STR(b.items[2].id, "2");
        CHECK_STR(b.items[3].id, "3");
        CHECK_STR(b.items[2].url, "http://c/z");
        CHECK_STR(b.items[3].hostkey, "d:443");
    }
    batch_req_free(&b);
}

static void test_object_form(void)
{
    static const struct {
        const char *body;
        enum merge_mode merge;
        long timeout;
    } cases[] = {
        { "{\"requests\": [\"http://a/\"]}", MERGE_NONE, 0 },
        { "{\"requests\": [\"http://a/\"], \"merge\": \"none\"}", MERGE_NONE, 0 },
        { "{\"requests\": [\"http://a/\"], \"merge\": \"bodies\"}", MERGE_BODIES, 0 },
        { "{\"merge\": \"deep\", \"timeout_ms\": 2500, \"requests\": [\"http://a/\"]}",
          MERGE_DEEP, 2500 },
        { "{\"requests\": [{\"url\": \"http://a/\"}], \"timeout_ms\": 1}", MERGE_NONE, 1 },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct batch_req b;
        struct fo_msg msg;
        CHECK_CASE(parse(cases[i].body, 1, &b, &msg) == FO_OK, cases[i].body);
        CHECK_CASE(b.n == 1 && b.merge == cases[i].merge, cases[i].body);
        CHECK_CASE(b.timeout_ms == cases[i].timeout, cases[i].body);
        batch_req_free(&b);
    }
}

static void test_item_every_field(void)
{
    static const char body[] =
        "[{\"id\": \"x1\", \"url\": \"http://a/p\", \"method\": \"post\","
        "  \"headers\": {\"X-A\": \"1\", \"Accept\": \"application/json\"},"
        "  \"body\": \"raw text\", \"timeout_ms\": 1500},"
        " {\"url\": \"http://a/q\", \"method\": \"PUT\", \"body\": {\"k\": [1, 2], \"s\": \"v\"},"
        "  \"headers\": {\"content-type\": \"application/merge-patch+json\"}},"
        " {\"url\": \"http://a/r\", \"method\": \"DELETE\", \"body\": null},"
        " {\"url\": \"http://a/s\", \"method\": \"PATCH\", \"body\": 5}]";
    struct batch_req b;
    struct fo_msg msg;
    json_t *want, *got;

    CHECK_EQ_INT(parse(body, 1, &b, &msg), FO_OK);
    CHECK_EQ_INT(b.n, 4);
    if (b.n != 4) {
        batch_req_free(&b);
        return;
    }
    const struct item_req *a = &b.items[0], *q = &b.items[1];
    CHECK_STR(a->id, "x1");
    CHECK_EQ_INT(a->method, M_POST);
    CHECK_EQ_INT(a->nheaders, 2);
    CHECK(has_header(a, "X-A: 1"));
    CHECK(has_header(a, "Accept: application/json"));
    CHECK_EQ_INT(a->has_content_type, 0);
    CHECK_STR(a->body, "raw text");
    CHECK_EQ_INT(a->body_len, 8);
    CHECK_EQ_INT(a->body_is_json, 0);
    CHECK_EQ_INT(a->timeout_ms, 1500);

    CHECK_EQ_INT(q->method, M_PUT);
    CHECK_EQ_INT(q->body_is_json, 1);
    CHECK_EQ_INT(q->has_content_type, 1);
    CHECK(has_header(q, "content-type: application/merge-patch+json"));
    CHECK_EQ_INT(q->timeout_ms, 0);
    CHECK(q->body != NULL && q->body_len == strlen(q->body));
    want = json_loads("{\"k\": [1, 2], \"s\": \"v\"}", 0, NULL);
    got = q->body ? json_loadb(q->body, q->body_len, 0, NULL) : NULL;
    CHECK(got != NULL && json_equal(want, got));
    json_decref(want);
    json_decref(got);

    CHECK_EQ_INT(b.items[2].method, M_DELETE);
    CHECK(b.items[2].body == NULL); /* null: no body */
    CHECK_EQ_INT(b.items[3].method, M_PATCH);
    CHECK_STR(b.items[3].body, "5");
    CHECK_EQ_INT(b.items[3].body_is_json, 1);
    batch_req_free(&b);
}

static void test_methods(void)
{
    static const struct {
        const char *name;
        enum http_method m;
    } cases[] = {
        { "GET", M_GET },         { "HEAD", M_HEAD },   { "POST", M_POST },
        { "PUT", M_PUT },         { "PATCH", M_PATCH }, { "DELETE", M_DELETE },
        { "OPTIONS", M_OPTIONS }, { "get", M_GET },     { "Delete", M_DELETE },
        { "options", M_OPTIONS },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        char body[128];
        struct batch_req b;
        struct fo_msg msg;

        (void)snprintf(body, sizeof(body), "[{\"url\":\"http://a/\",\"method\":\"%s\"}]",
                       cases[i].name);
        CHECK_CASE(parse(body, 1, &b, &msg) == FO_OK, cases[i].name);
        CHECK_CASE(b.n == 1 && b.items[0].method == cases[i].m, cases[i].name);
        CHECK_CASE(strcasecmp(http_method_name(cases[i].m), cases[i].name) == 0, cases[i].name);
        batch_req_free(&b);
    }
}

static void test_ids(void)
{
    static const struct {
        const char *body;
        fo_err want;
        const char *in_msg; /* must appear in the message on error */
    } cases[] = {
        /* An explicit id equal to another item's default id is a duplicate. */
        { "[{\"url\":\"http://a/\",\"id\":\"1\"}, \"http://b/\"]", FO_EINVAL, "\"1\"" },
        { "[\"http://b/\", {\"url\":\"http://a/\",\"id\":\"0\"}]", FO_EINVAL, "\"0\"" },
        { "[{\"url\":\"http://a/\",\"id\":\"dup\"}, {\"url\":\"http://b/\",\"id\":\"dup\"}]",
          FO_EINVAL, "dup" },
        /* Its own default is no clash. */
        { "[{\"url\":\"http://a/\",\"id\":\"0\"}, \"http://b/\"]", FO_OK, NULL },
        { "[{\"url\":\"http://a/\",\"id\":\"\"}]", FO_OK, NULL },
        { "[{\"url\":\"http://a/\",\"id\":\"Dup\"}, {\"url\":\"http://b/\",\"id\":\"dup\"}]",
          FO_OK, NULL },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct batch_req b;
        struct fo_msg msg;
        CHECK_CASE(parse(cases[i].body, 1, &b, &msg) == cases[i].want, cases[i].body);
        if (cases[i].in_msg != NULL)
            CHECK_CASE(strstr(msg.text, cases[i].in_msg) != NULL, cases[i].body);
        batch_req_free(&b);
    }
}

/* Every JSON body here is a 400 (FO_EINVAL) and fetches nothing. */
static void test_json_bad_requests(void)
{
    static const char *const bodies[] = {
        /* malformed JSON */
        "",
        "[",
        "[\"http://a/\",]",
        "{\"requests\": [\"http://a/\"],}",
        "['http://a/']",
        "[\"http://a/\"] [\"http://b/\"]",
        "[\"http://a/\"]x",
        "\xff",
        "{\"requests\":[\"http://a/\"],\"requests\":[\"http://b/\"]}",
        /* wrong types and shapes */
        "\"http://a/\"",
        "42",
        "null",
        "true",
        "{}",
        "{\"requests\": \"http://a/\"}",
        "{\"requests\": {\"url\": \"http://a/\"}}",
        "{\"requests\": null}",
        "[42]",
        "[\"http://a/\", null]",
        "[[\"http://a/\"]]",
        "[true]",
        "[{\"url\": 5}]",
        "[{}]",
        "[{\"url\": null}]",
        "[{\"id\": \"x\"}]",
        "[{\"url\":\"http://a/\",\"id\":null}]",
        "[{\"url\":\"http://a/\",\"id\":7}]",
        "[{\"url\":\"http://a/\",\"id\":[\"x\"]}]",
        "[{\"url\":\"http://a/\",\"headers\":[\"X: y\"]}]",
        "[{\"url\":\"http://a/\",\"headers\":\"X: y\"}]",
        "[{\"url\":\"http://a/\",\"headers\":null}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\":1}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\":null}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\":[\"a\"]}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\":\"a\\rb\"}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\":\"a\\nb\"}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\":\"a\\u0000b\"}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\":\"v\\r\\nEvil: 1\"}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\\r\\nEvil\":\"v\"}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"X\\n\":\"v\"}}]",
        "[{\"url\":\"http://a/\",\"headers\":{\"\":\"v\"}}]",
        "[{\"url\":\"http://a/\",\"method\":\"FETCH\"}]",
        "[{\"url\":\"http://a/\",\"method\":\"CONNECT\"}]",
        "[{\"url\":\"http://a/\",\"method\":\"TRACE\"}]",
        "[{\"url\":\"http://a/\",\"method\":\"\"}]",
        "[{\"url\":\"http://a/\",\"method\":1}]",
        "[{\"url\":\"http://a/\",\"method\":null}]",
        "[{\"url\":\"http://a/\",\"method\":\"GET \"}]",
        /* unknown merge */
        "{\"requests\":[\"http://a/\"],\"merge\":\"shallow\"}",
        "{\"requests\":[\"http://a/\"],\"merge\":\"\"}",
        "{\"requests\":[\"http://a/\"],\"merge\":1}",
        "{\"requests\":[\"http://a/\"],\"merge\":null}",
        "{\"requests\":[\"http://a/\"],\"merge\":[\"deep\"]}",
        /* batch and item timeouts: positive integers only */
        "{\"requests\":[\"http://a/\"],\"timeout_ms\":0}",
        "{\"requests\":[\"http://a/\"],\"timeout_ms\":-1}",
        "{\"requests\":[\"http://a/\"],\"timeout_ms\":1.5}",
        "{\"requests\":[\"http://a/\"],\"timeout_ms\":0.5}",
        "{\"requests\":[\"http://a/\"],\"timeout_ms\":\"5\"}",
        "{\"requests\":[\"http://a/\"],\"timeout_ms\":true}",
        "{\"requests\":[\"http://a/\"],\"timeout_ms\":null}",
        "[{\"url\":\"http://a/\",\"timeout_ms\":0}]",
        "[{\"url\":\"http://a/\",\"timeout_ms\":-1}]",
        "[{\"url\":\"http://a/\",\"timeout_ms\":1.5}]",
        "[{\"url\":\"http://a/\",\"timeout_ms\":\"5\"}]",
        "[{\"url\":\"http://a/\",\"timeout_ms\":true}]",
        "[{\"url\":\"http://a/\",\"timeout_ms\":[]}]",
        /* empty batches */
        "[]",
        "{\"requests\": []}",
        /* URLs that are not absolute http(s) */
        "[\"file:///etc/passwd\"]",
        "[\"ftp://a.example/x\"]",
        "[\"mailto:a@b.example\"]",
        "[\"/relative/path\"]",
        "[\"relative\"]",
        "[\"//a.example/x\"]",
        "[\"http:///nohost\"]",
        "[\"http://[::1/\"]",
        "[\"http://\"]",
        "[\"https://\"]",
        "[\"\"]",
        "[\"gopher://a/\"]",
        "[\"ws://a/\"]",
        "[\"http:a.example/x\"]",
        "[\"javascript:alert(1)\"]",
        "[\"http://a b/\"]",
        "[\"http://a/\\n\"]",
        "[\"http://a.example:99999/\"]",
        "[\"dict://a:11211/\"]",
        "[{\"url\":\"file:///etc/passwd\"}]",
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(bodies); i++) {
        struct batch_req b;
        struct fo_msg msg;
        fo_err err = parse(bodies[i], 1, &b, &msg);
        if (err != FO_EINVAL)
            CHECK_FAIL_("body %s: %s, want 400", bodies[i], fo_strerror(err));
        CHECK_CASE(msg.text[0] != '\0', bodies[i]);
        CHECK_CASE(b.n == 0 && b.items == NULL, bodies[i]);
        batch_req_free(&b);
    }
}

/* The message of a refused item names it by index or id. */
static void test_messages_name_the_item(void)
{
    static const struct {
        const char *body;
        const char *needle;
    } cases[] = {
        { "[\"http://a/\", \"http://b/\", \"ftp://c/\"]", "2" },
        { "[\"http://a/\", {\"url\": \"ftp://c/\", \"id\": \"myitem\"}]", "myitem" },
        { "[\"http://a/\", {\"url\": \"http://c/\", \"method\": \"BREW\"}]", "1" },
        { "[\"http://a/\", \"http://b/\", {\"url\": \"http://c/\", \"timeout_ms\": 0}]", "2" },
        { "[\"http://a/\", {\"url\": \"http://c/\", \"headers\": {\"X\": 1}, \"id\": \"hid\"}]",
          "hid" },
        { "[\"http://a/\", \"http://b/\", \"http://c/\", 7]", "3" },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct batch_req b;
        struct fo_msg msg;
        CHECK_CASE(parse(cases[i].body, 1, &b, &msg) == FO_EINVAL, cases[i].body);
        if (strstr(msg.text, cases[i].needle) == NULL)
            CHECK_FAIL_("message '%s' does not name '%s'", msg.text, cases[i].needle);
        batch_req_free(&b);
    }
}

static void test_too_many_items(void)
{
    static const struct {
        const char *body;
        int is_json;
        fo_err want;
    } cases[] = {
        { "[\"http://a/\", \"http://b/\"]", 1, FO_OK },
        { "[\"http://a/\", \"http://b/\", \"http://c/\"]", 1, FO_ETOOBIG },
        { "{\"requests\": [\"http://a/\", \"http://b/\", {\"url\": \"http://c/\"}]}", 1,
          FO_ETOOBIG },
        { "http://a/\nhttp://b/\n", 0, FO_OK },
        { "http://a/\nhttp://b/\n# http://c/\n", 0, FO_OK },
        { "http://a/\nhttp://b/\nhttp://c/\n", 0, FO_ETOOBIG },
        { "http://a/ http://b/ http://c/ http://d/", 0, FO_ETOOBIG },
    };
    struct config *cfg = batch_config("2");

    if (cfg == NULL)
        return;
    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct batch_req b;
        struct fo_msg msg = { "" };
        fo_err err =
            batch_parse(cases[i].body, strlen(cases[i].body), cases[i].is_json, cfg, &b, &msg);
        if (err != cases[i].want)
            CHECK_FAIL_("max_batch 2, %s: %s, want %s", cases[i].body, fo_strerror(err),
                        fo_strerror(cases[i].want));
        if (err == FO_ETOOBIG)
            CHECK_CASE(msg.text[0] != '\0', cases[i].body);
        batch_req_free(&b);
    }
    config_unref(cfg);
}

static void test_plain_lists(void)
{
    static const struct {
        const char *body;
        const char *urls[4]; /* NULL-terminated */
    } cases[] = {
        { "http://a/x\r\nhttp://b/y\r\n", { "http://a/x", "http://b/y" } },
        { "\thttp://a/\t http://b/ \n\n\nhttp://c/", { "http://a/", "http://b/", "http://c/" } },
        { "# comment\nhttp://a/\n   # indented comment http://evil/\n\t#tab http://evil2/\n"
          "http://b/\n#last",
          { "http://a/", "http://b/" } },
        { "\r\n# c\r\n\r\nhttps://a.example/p?q=1#frag\r\n", { "https://a.example/p?q=1#frag" } },
        { "http://a/#x", { "http://a/#x" } },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct batch_req b;
        struct fo_msg msg;
        size_t n = 0;

        while (n < 4 && cases[i].urls[n] != NULL)
            n++;
        CHECK_CASE(parse(cases[i].body, 0, &b, &msg) == FO_OK, cases[i].body);
        CHECK_CASE(b.n == n, cases[i].body);
        for (size_t k = 0; k < n && k < b.n; k++) {
            char id[24];
            (void)snprintf(id, sizeof(id), "%zu", k);
            CHECK_STR(b.items[k].url, cases[i].urls[k]);
            CHECK_STR(b.items[k].id, id);
            CHECK_EQ_INT(b.items[k].method, M_GET);
        }
        batch_req_free(&b);
    }
}

/* A byte-string literal and its length, NULs included. */
#define B(s) s, sizeof(s) - 1

static void test_plain_bad(void)
{
    static const struct {
        const char *body;
        size_t len;
    } cases[] = {
        { B("") },
        { B("# only a comment\n\n") },
        { B("   \r\n\t\n") },
        { B("http://a/\xff\n") }, /* invalid UTF-8 */
        { B("http://a/\n\xc0\xaf\n") },
        { B("http://a/\0http://b/") }, /* NUL */
        { B("http://a/\nftp://b/\n") },
        { B("http://a/\nnot-a-url\n") },
    };
    struct config *cfg = batch_config(NULL);

    if (cfg == NULL)
        return;
    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct batch_req b;
        struct fo_msg msg = { "" };
        fo_err err = batch_parse(cases[i].body, cases[i].len, 0, cfg, &b, &msg);
        if (err != FO_EINVAL)
            CHECK_FAIL_("plain case %zu: %s, want 400", i, fo_strerror(err));
        CHECK_EQ_INT(b.n, 0);
        batch_req_free(&b);
    }
    config_unref(cfg);
}

static void test_is_json_type(void)
{
    static const struct {
        const char *ct;
        int want;
    } cases[] = {
        { "application/json", 1 },
        { "application/json; charset=utf-8", 1 },
        { "application/json;charset=UTF-8", 1 },
        { "APPLICATION/JSON", 1 },
        { " application/json ; charset=utf-8", 1 },
        { "application/jsonx", 0 },
        { "application/json-seq", 0 },
        { "text/json", 0 },
        { "text/plain", 0 },
        { "application/x-www-form-urlencoded", 0 },
        { "", 0 },
        { NULL, 0 },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++)
        CHECK_CASE(batch_is_json_type(cases[i].ct) == cases[i].want,
                   cases[i].ct ? cases[i].ct : "(null)");
}

static void test_url_check(void)
{
    static const struct {
        const char *url;
        int ok;
        const char *hostkey; /* NULL: not checked */
    } cases[] = {
        { "http://a.example/", 1, "a.example:80" },
        { "https://a.example/", 1, "a.example:443" },
        { "HTTP://a.example:8080/x", 1, "a.example:8080" },
        { "http://user:pw@h.example:81/p", 1, "h.example:81" },
        { "http://127.0.0.1:9/", 1, "127.0.0.1:9" },
        { "http://[::1]:8080/", 1, NULL },
        { "http://b\xc3\xbc"
          "cher.test:81/\xc3\xa4?q=\xc3\xa9",
          1, "xn--bcher-kva.test:81" },
        { "file:///etc/passwd", 0, NULL },
        { "ftp://a/", 0, NULL },
        { "mailto:x@y", 0, NULL },
        { "//a/x", 0, NULL },
        { "/x", 0, NULL },
        { "http:///x", 0, NULL },
        { "http://[::1/", 0, NULL },
        { "http://a/\x01", 0, NULL },
        { "", 0, NULL },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        char *hostkey = NULL;
        struct fo_msg msg;
        fo_err err = url_check(cases[i].url, &hostkey, &msg);

        CHECK_CASE(err == (cases[i].ok ? FO_OK : FO_EINVAL), cases[i].url);
        if (cases[i].ok && cases[i].hostkey != NULL)
            CHECK_STR(hostkey, cases[i].hostkey);
        free(hostkey);
    }
}

/* Internationalised host names become their IDNA A-label without the
 * process locale (libcurl's own conversion needs a UTF-8 locale). */
static void test_host_to_ascii(void)
{
    static const struct {
        const char *host;
        fo_err err;
        const char *ace; /* NULL: the host is used as written */
    } cases[] = {
        { "b\xc3\xbc"
          "cher.test",
          FO_OK, "xn--bcher-kva.test" },
        { "B\xc3\x9c"
          "CHER.Test",
          FO_OK, "xn--bcher-kva.test" },              /* mapped to lower case */
        { "fa\xc3\x9f.de", FO_OK, "xn--fa-hia.de" },  /* IDNA2008: sharp s kept */
        { "\xe2\x98\x83.net", FO_OK, "xn--n3h.net" }, /* IDNA2003 fallback */
        { "\xe4\xb8\xad\xe6\x96\x87.example", FO_OK, "xn--fiq228c.example" },
        { "example.com", FO_OK, NULL },
        { "Example.COM", FO_OK, NULL }, /* ASCII: untouched */
        { "xn--bcher-kva.test", FO_OK, NULL },
        { "127.0.0.1", FO_OK, NULL },
        { "[::1]", FO_OK, NULL },
        { "b\xfc"
          "cher.test",
          FO_EINVAL, NULL }, /* Latin-1, not UTF-8 */
        { "a\xe2\x92\x88"
          "b.test",
          FO_EINVAL, NULL },                        /* U+2488 disallowed */
        { "XN--BCHER-KVA.localhost", FO_OK, NULL }, /* a valid A-label */
        { "www.xn--fa-hia.de", FO_OK, NULL },
        { "xn--zz.localhost", FO_EINVAL, NULL }, /* invalid A-labels */
        { "xn--a.", FO_EINVAL, NULL },
        { "xn--.", FO_EINVAL, NULL },
        { "a.XN--ZZ", FO_EINVAL, NULL },
        { "xn--abc-.test", FO_EINVAL, NULL }, /* decodes to ASCII */
        { "xn--a\xc3\xbc"
          ".test",
          FO_EINVAL, NULL }, /* "xn--" and a U-label */
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        char *ace = (char *)"unset";
        fo_err err = url_host_to_ascii(cases[i].host, &ace);

        CHECK_CASE(err == cases[i].err, cases[i].host);
        if (err == FO_OK && cases[i].ace != NULL)
            CHECK_STR(ace, cases[i].ace);
        else
            CHECK_CASE(ace == NULL, cases[i].host);
        if (err == FO_OK)
            free(ace);
    }
}

/* A body that starts with '[' or '{' (after white space) is read as JSON
 * whatever the Content-Type said; a plain list never starts that way. */
static void test_json_without_json_type(void)
{
    static const char *const bodies[] = {
        "[\"http://a/\", \"http://b/\"]",
        " \r\n\t{\"requests\": [\"http://a/\", {\"url\": \"http://b/\", \"id\": \"x\"}]}",
        "\xef\xbb\xbf[\"http://a/\",\"http://b/\"]",
    };
    struct config *cfg = batch_config(NULL);

    if (cfg == NULL)
        return;
    for (size_t i = 0; i < FO_ARRAY_LEN(bodies); i++) {
        struct batch_req b;
        struct fo_msg msg = { "" };
        fo_err err = batch_parse(bodies[i], strlen(bodies[i]), 0, cfg, &b, &msg);
        CHECK_CASE(err == FO_OK, bodies[i]);
        if (err == FO_OK) {
            CHECK_EQ_INT(b.n, 2);
            CHECK_STR(b.items[0].url, "http://a/");
        }
        batch_req_free(&b);
    }
    config_unref(cfg);
}

/* inject_header prefixes: the origin and path the fetched URLs under them
 * are matched by (url_origin_path), or FO_EINVAL. */
static void test_url_prefix(void)
{
    static const struct {
        const char *prefix;
        fo_err err;
        const char *origin, *path;
    } cases[] = {
        { "https://api.example.com/v1/", FO_OK, "https://api.example.com:443", "/v1/" },
        { "http://API.Example.com", FO_OK, "http://api.example.com:80", "/" },
        { "HTTP://h:8080/p?x=1", FO_OK, "http://h:8080", "/p?x=1" },
        { "http://[::1]:9/a", FO_OK, "http://[::1]:9", "/a" },
        { "http://b\xc3\xbc"
          "cher.example/",
          FO_OK, "http://xn--bcher-kva.example:80", "/" },
        { "ftp://h/", FO_EINVAL, NULL, NULL },
        { "h/path", FO_EINVAL, NULL, NULL },
        { "http:///x", FO_EINVAL, NULL, NULL },
        { "http://u:p@h/", FO_EINVAL, NULL, NULL },
        { "http://h/#f", FO_EINVAL, NULL, NULL },
        { "http://h:99999/", FO_EINVAL, NULL, NULL },
        { "http://h /", FO_EINVAL, NULL, NULL },
        { "http://xn--zz/", FO_EINVAL, NULL, NULL },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        char *origin = NULL, *path = NULL;
        struct fo_msg msg = { 0 };
        fo_err err = url_prefix(cases[i].prefix, &origin, &path, &msg);

        CHECK_CASE(err == cases[i].err, cases[i].prefix);
        if (err == FO_OK && cases[i].err == FO_OK) {
            CHECK_STR(origin, cases[i].origin);
            CHECK_STR(path, cases[i].path);
        } else {
            CHECK_CASE(origin == NULL && path == NULL, cases[i].prefix);
            CHECK_CASE(err != FO_EINVAL || strstr(msg.text, "is not a prefix") != NULL,
                       cases[i].prefix);
        }
        free(origin);
        free(path);
    }
}

static const struct unit_test tests[] = {
    { "array_of_strings", test_array_of_strings },
    { "mixed_array", test_mixed_array },
    { "object_form", test_object_form },
    { "item_every_field", test_item_every_field },
    { "methods", test_methods },
    { "ids", test_ids },
    { "json_bad_requests", test_json_bad_requests },
    { "messages_name_the_item", test_messages_name_the_item },
    { "too_many_items", test_too_many_items },
    { "plain_lists", test_plain_lists },
    { "plain_bad", test_plain_bad },
    { "is_json_type", test_is_json_type },
    { "url_check", test_url_check },
    { "host_to_ascii", test_host_to_ascii },
    { "url_prefix", test_url_prefix },
    { "json_without_json_type", test_json_without_json_type },
};

UNIT_SUITE(batch_suite, "batch", tests);
