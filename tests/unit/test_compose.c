/*
 * test_compose.c - composition (issue 12): the dependency graph's checks
 * (batch_parse), item JSON bodies kept as written, template parsing and
 * substitution (template.h), JSON Pointer with ~0/~1, select, run_if and
 * references resolved against finished results (compose.h), and the
 * concatenating deep merge (jtree.h).
 */
#include <string.h>

#include "batch.h"
#include "compose.h"
#include "harness.h"
#include "jtree.h"
#include "template.h"

static fo_err parse(const char *body, struct batch_req *b, struct fo_msg *msg)
{
    struct config *cfg = NULL;
    fo_err err;

    msg->text[0] = '\0';
    if (config_build(NULL, NULL, 0, &cfg, msg) != FO_OK) {
        CHECK_FAIL_("config_build: %s", msg->text);
        return FO_ENOMEM;
    }
    err = batch_parse(body, strlen(body), 1, cfg, b, msg);
    config_unref(cfg);
    return err;
}

static void test_graph_refusals(void)
{
    static const struct {
        const char *name, *body, *in_msg;
    } cases[] = {
        { "unknown id", "[{\"url\":\"http://h/\",\"id\":\"x\",\"depends_on\":[\"nope\"]}]",
          "\"x\"" },
        { "itself", "[{\"url\":\"http://h/\",\"id\":\"x\",\"depends_on\":[\"x\"]}]", "itself" },
        { "cycle of two",
          "[{\"url\":\"http://h/\",\"id\":\"a\",\"depends_on\":[\"b\"]},"
          "{\"url\":\"http://h/\",\"id\":\"b\",\"depends_on\":[\"a\"]}]",
          "cycle" },
        { "cycle of three behind a dependant",
          "[{\"url\":\"http://h/\",\"id\":\"z\",\"depends_on\":[\"a\"]},"
          "{\"url\":\"http://h/\",\"id\":\"a\",\"depends_on\":[\"c\"]},"
          "{\"url\":\"http://h/\",\"id\":\"b\",\"depends_on\":[\"a\"]},"
          "{\"url\":\"http://h/\",\"id\":\"c\",\"depends_on\":[\"b\"]}]",
          "cycle" },
        { "reference not in depends_on",
          "[{\"url\":\"http://h/\",\"id\":\"a\"},{\"url\":\"http://h/\",\"id\":\"b\"},"
          "{\"url\":\"http://h/${b.status}\",\"id\":\"c\",\"depends_on\":[\"a\"]}]",
          "depends_on" },
        { "malformed reference",
          "[{\"url\":\"http://h/\",\"id\":\"a\"},"
          "{\"url\":\"http://h/"
          "\",\"id\":\"c\",\"depends_on\":[\"a\"],\"headers\":{\"X\":\"${a.nope}\"}}]",
          "malformed" },
        { "unterminated reference",
          "[{\"url\":\"http://h/\",\"id\":\"a\"},"
          "{\"url\":\"http://h/\",\"id\":\"c\",\"depends_on\":[\"a\"],\"body\":\"${a.status\"}]",
          "'}'" },
        { "id with a dot",
          "[{\"url\":\"http://h/\",\"id\":\"a.b\"},"
          "{\"url\":\"http://h/${a.b.status}\",\"id\":\"c\",\"depends_on\":[\"a.b\"]}]",
          "'.'" },
        { "bad pointer",
          "[{\"url\":\"http://h/\",\"id\":\"a\"},"
          "{\"url\":\"http://h/${a.body#x}\",\"id\":\"c\",\"depends_on\":[\"a\"]}]",
          "malformed" },
        { "run_if", "[{\"url\":\"http://h/\",\"run_if\":\"sometimes\"}]", "run_if" },
        { "depends_on type", "[{\"url\":\"http://h/\",\"depends_on\":\"a\"}]", "depends_on" },
        { "select pointer", "[{\"url\":\"http://h/\",\"select\":\"a/b\"}]", "select" },
        { "select object", "[{\"url\":\"http://h/\",\"select\":{\"x\":1}}]", "select" },
        { "group", "[{\"url\":\"http://h/\",\"group\":7}]", "group" },
        { "response_headers", "[{\"url\":\"http://h/\",\"response_headers\":[\"a b\"]}]",
          "response_headers" },
        { "merge_arrays", "{\"merge_arrays\":\"append\",\"requests\":[\"http://h/\"]}",
          "merge_arrays" },
        { "merge_arrays without deep",
          "{\"merge\":\"bodies\",\"merge_arrays\":\"concat\",\"requests\":[\"http://h/\"]}",
          "merge_arrays" },
        { "group without deep", "[{\"url\":\"http://h/\",\"group\":\"g\"}]", "group" },
        { "response_headers with bodies",
          "{\"merge\":\"bodies\",\"requests\":[{\"url\":\"http://h/\","
          "\"response_headers\":[\"X-A\"]}]}",
          "response_headers" },
        { "reference in the url without depends_on",
          "[{\"url\":\"http://h/\",\"id\":\"src\"},"
          "{\"url\":\"http://h/?v=${src.body#/v}\",\"id\":\"user\"}]",
          "depends_on" },
        { "reference in a header without depends_on",
          "[{\"url\":\"http://h/\",\"id\":\"src\"},"
          "{\"url\":\"http://h/\",\"headers\":{\"X\":\"${src.status}\"}}]",
          "depends_on" },
        { "reference in the body without depends_on",
          "[{\"url\":\"http://h/\"},"
          "{\"url\":\"http://h/\",\"method\":\"POST\",\"body\":{\"k\":\"${0.body}\"}}]",
          "depends_on" },
        { "response_headers from defaults with merge deep",
          "{\"merge\":\"deep\",\"defaults\":{\"response_headers\":[\"X-A\"]},"
          "\"requests\":[\"http://h/\"]}",
          "defaults: response_headers" },
        { "reference to an id with a dot",
          "[{\"url\":\"http://h/\",\"id\":\"a.b\"},"
          "{\"url\":\"http://h/?v=${a.b.status}\"}]",
          "depends_on" },
        { "template url not http",
          "[{\"url\":\"http://h/\",\"id\":\"a\"},"
          "{\"url\":\"ftp://h/${a.status}\",\"id\":\"c\",\"depends_on\":[\"a\"]}]",
          "http" },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct batch_req b;
        struct fo_msg msg;
        fo_err err = parse(cases[i].body, &b, &msg);
        CHECK_CASE(err == FO_EINVAL, cases[i].name);
        CHECK_CASE(strstr(msg.text, cases[i].in_msg) != NULL, cases[i].name);
        CHECK_CASE(strstr(msg.text, "item ") != NULL || strstr(cases[i].name, "merge") != NULL,
                   cases[i].name);
        if (err == FO_OK)
            batch_req_free(&b);
    }
}

static void test_graph_accepted(void)
{
    struct batch_req b;
    struct fo_msg msg;
    const char *body =
        "{\"merge\":\"deep\",\"merge_arrays\":\"concat\",\"requests\":["
        "{\"url\":\"http://h/a\",\"id\":\"a\"},"
        "{\"url\":\"http://h/b?x=${z.status}\",\"id\":\"b\"},"
        "{\"url\":\"${a.body#/next}\",\"id\":\"c\",\"depends_on\":[\"a\",\"b\",\"a\"],"
        "\"headers\":{\"X-T\":\"${a.headers.X-Token}\"},\"run_if\":\"always\"}]}";

    if (parse(body, &b, &msg) != FO_OK) {
        CHECK_FAIL_("parse: %s", msg.text);
        return;
    }
    CHECK_EQ_INT(b.merge_concat, 1);
    /* ${ in an item without depends_on, naming no item of the batch, is plain text */
    CHECK_STR(b.items[1].url, "http://h/b?x=${z.status}");
    CHECK(b.items[1].compose == NULL);
    CHECK(b.dep_start != NULL && b.dep_list != NULL);
    if (b.dep_start != NULL) {
        CHECK_EQ_INT(b.dep_start[2], 0);
        CHECK_EQ_INT(b.dep_start[3], 2); /* a repeated dependency counts once */
        CHECK_EQ_INT(b.dep_list[0], 0);
        CHECK_EQ_INT(b.dep_list[1], 1);
    }
    CHECK(b.items[2].hostkey == NULL); /* known once substituted */
    CHECK_EQ_INT(b.items[2].compose->run_always, 1);
    /* a's fetch keeps the header c's reference reads, in lower case */
    CHECK(b.items[0].compose != NULL && b.items[0].compose->nkeep == 1);
    if (b.items[0].compose != NULL && b.items[0].compose->nkeep == 1)
        CHECK_STR(b.items[0].compose->keep[0], "x-token");
    CHECK_EQ_INT(b.items[0].compose->has_resp, 0);
    batch_req_free(&b);
}

static void test_item_body_as_written(void)
{
    struct batch_req b;
    struct fo_msg msg;
    const char *body =
        "{\"requests\":[{\"url\":\"http://h/\",\"method\":\"POST\","
        "\"body\":{\"a\": 1E+2, \"b\":0.1,\"c\":1e400,\"d\":[1.0, -0]}},"
        "{\"url\":\"http://h/\",\"method\":\"POST\",\"body\":\"1e400\"},"
        "{\"url\":\"http://h/\",\"method\":\"POST\",\"body\":123456789012345678901234567890}]}";

    if (parse(body, &b, &msg) != FO_OK) {
        CHECK_FAIL_("parse: %s", msg.text);
        return;
    }
    CHECK_STR(b.items[0].body, "{\"a\": 1E+2, \"b\":0.1,\"c\":1e400,\"d\":[1.0, -0]}");
    CHECK_EQ_INT(b.items[0].body_is_json, 1);
    CHECK_STR(b.items[1].body, "1e400");
    CHECK_EQ_INT(b.items[1].body_is_json, 0);
    CHECK_STR(b.items[2].body, "123456789012345678901234567890");
    batch_req_free(&b);
    /* many items, JSON bodies far apart */
    {
        char big[8192];
        size_t at = 0;
        at += (size_t)snprintf(big + at, sizeof(big) - at, "[");
        for (int k = 0; k < 40; k++)
            at += (size_t)snprintf(big + at, sizeof(big) - at,
                                   k == 1 || k == 39
                                       ? "%s{\"url\":\"http://h/\",\"method\":\"PUT\","
                                         "\"body\":[%d.0e0]}"
                                       : "%s\"http://h/%d\"",
                                   k ? "," : "", k);
        (void)snprintf(big + at, sizeof(big) - at, "]");
        if (parse(big, &b, &msg) != FO_OK) {
            CHECK_FAIL_("parse: %s", msg.text);
        } else {
            CHECK_STR(b.items[1].body, "[1.0e0]");
            CHECK_STR(b.items[39].body, "[39.0e0]");
            batch_req_free(&b);
        }
    }
    /* a malformed batch is still refused with jansson's message */
    CHECK_EQ_INT(parse("[{\"url\":\"http://h/\",\"body\":{1}}]", &b, &msg), FO_EINVAL);
    CHECK(strstr(msg.text, "malformed JSON") != NULL);
}

static void test_template_parse(void)
{
    struct tpl t;
    struct fo_msg why;

    static const char src[] = "a${x.status}b$${y}c${x.body}${x.body#/a~1b/~0}${x.headers.X-Y}$x$";
    CHECK_EQ_INT(tpl_parse(src, strlen(src), &t, &why), FO_OK);
    CHECK_EQ_INT(t.nrefs, 4);
    CHECK_EQ_INT(t.escapes, 1);
    if (t.n == 7) {
        CHECK_STR(t.parts[0].lit, "a");
        CHECK_EQ_INT(t.parts[1].ref.field, TPL_STATUS);
        CHECK_STR(t.parts[1].ref.id, "x");
        CHECK_STR(t.parts[2].lit, "b${y}c");
        CHECK_EQ_INT(t.parts[3].ref.field, TPL_BODY);
        CHECK_EQ_INT(t.parts[4].ref.field, TPL_BODY_PTR);
        CHECK_STR(t.parts[4].ref.arg, "/a~1b/~0");
        CHECK_EQ_INT(t.parts[5].ref.field, TPL_HEADER);
        CHECK_STR(t.parts[5].ref.arg, "x-y");
        CHECK_STR(t.parts[5].ref.text, "${x.headers.X-Y}");
        CHECK_STR(t.parts[6].lit, "$x$");
    } else {
        CHECK_FAIL_("%zu parts", t.n);
    }
    tpl_free(&t);
    static const char *const bad[] = {
        "${x}",          "${.status}",       "${x.stat}",  "${x.body#a}", "${x.body#/~2}",
        "${x.headers.}", "${x.headers.a b}", "${x.status", "x${"
    };
    for (size_t i = 0; i < FO_ARRAY_LEN(bad); i++) {
        CHECK_CASE(tpl_parse(bad[i], strlen(bad[i]), &t, &why) == FO_EINVAL, bad[i]);
    }
    CHECK_EQ_INT(tpl_parse("${x.body#}", 10, &t, &why), FO_OK); /* "" is the whole body */
    CHECK_EQ_INT(tpl_is_one_ref(&t), 1);
    tpl_free(&t);
}

/* A lookup over a fixed JSON document for ${d.body#...}, status 200, header x-h. */
static fo_err fixed_lookup(void *ctx, struct jt_arena *a, const struct tpl_ref *ref,
                           struct tpl_value *out, struct fo_msg *why)
{
    const char *doc = ctx;
    struct jt_value root, v;

    if (ref->field == TPL_STATUS) {
        *out = (struct tpl_value){ JT_NUMBER, "200", 3, 0 };
        return FO_OK;
    }
    if (ref->field == TPL_HEADER) {
        *out = (struct tpl_value){ JT_STRING, "\"v\\r\\n\"", 7, 0 };
        return FO_OK;
    }
    if (jt_parse(a, doc, strlen(doc), 64, &root) != FO_OK)
        return FO_EINVAL;
    if (ref->field == TPL_BODY) {
        *out = (struct tpl_value){ root.kind, root.raw, root.len, 1 };
        return FO_OK;
    }
    if (jt_pointer(a, &root, ref->arg, strlen(ref->arg), 64, &v) != FO_OK) {
        fo_msg_set(why, "%s names nothing", ref->text);
        return FO_ENOTFOUND;
    }
    *out = (struct tpl_value){ v.kind, v.raw, v.len, 0 };
    return FO_OK;
}

static void render_case(const char *src, int json, enum tpl_place place, const char *want,
                        fo_err want_err)
{
    static const char doc[] =
        "{\"s\": \"a b/\\u00e9\", \"n\": 1E+2, \"l\": [1, \"x\"], "
        "\"u\": \"http://h/p\", \"a/b\": 1, \"m~n\": 2, \"q\": \"\\\"\"}";
    struct tpl t;
    struct fo_msg why;
    struct buf out;
    fo_err err;

    buf_init(&out, 0);
    err = json ? tpl_parse_json(src, strlen(src), &t, &why)
               : tpl_parse(src, strlen(src), &t, &why);
    if (err != FO_OK) {
        CHECK_FAIL_("parse %s: %s", src, why.text);
        return;
    }
    err = tpl_render(&t, place, fixed_lookup, (void *)doc, &out, &why);
    CHECK_CASE(err == want_err, src);
    if (err == FO_OK && want != NULL)
        CHECK_CASE(out.data != NULL && strcmp(out.data, want) == 0, src);
    if (err == FO_OK && want != NULL && (out.data == NULL || strcmp(out.data, want) != 0))
        CHECK_FAIL_("got %s", out.data ? out.data : "(null)");
    buf_free(&out);
    tpl_free(&t);
}

static void test_template_render(void)
{
    /* url: inside, percent-encoded text; whole, as is */
    render_case("http://h/?q=${d.body#/s}&n=${d.body#/n}&l=${d.body#/l}&s=${d.status}", 0,
                TPL_PLACE_URL, "http://h/?q=a%20b%2F%C3%A9&n=1E%2B2&l=%5B1%2C%22x%22%5D&s=200",
                FO_OK);
    render_case("${d.body#/u}", 0, TPL_PLACE_URL, "http://h/p", FO_OK);
    /* pointer escapes ~1 and ~0 */
    render_case("${d.body#/a~1b}-${d.body#/m~0n}", 0, TPL_PLACE_TEXT, "1-2", FO_OK);
    /* header: text; CR/LF refused */
    render_case("Bearer ${d.body#/s} $${d.status}", 0, TPL_PLACE_HEADER,
                "Bearer a b/\xc3\xa9 ${d.status}", FO_OK);
    render_case("${d.headers.x-h}", 0, TPL_PLACE_HEADER, NULL, FO_EINVAL);
    /* string body: the whole body as received */
    render_case("${d.body}", 0, TPL_PLACE_TEXT,
                "{\"s\": \"a b/\\u00e9\", \"n\": 1E+2, \"l\": [1, \"x\"], \"u\": \"http://h/p\", "
                "\"a/b\": 1, \"m~n\": 2, \"q\": \"\\\"\"}",
                FO_OK);
    render_case("x${d.body#/missing}", 0, TPL_PLACE_TEXT, NULL, FO_ENOTFOUND);
    /* JSON body: typed values, text in longer strings, keys and escapes */
    render_case(
        "{\"n\": \"${d.body#/n}\", \"l\":[\"${d.body#/l}\", 2], \"m\": \"n=${d.body#/n} "
        "l=${d.body#/l} q=${d.body#/q}\", \"${d.status}\": \"$${x}\", \"e\": "
        "\"\\u0024{d.status}\"}",
        1, TPL_PLACE_JSON,
        "{\"n\": 1E+2, \"l\":[[1, \"x\"], 2], \"m\": \"n=1E+2 l=[1,\\\"x\\\"] q=\\\"\", "
        "\"${d.status}\": \"${x}\", \"e\": 200}",
        FO_OK);
}

static void test_select(void)
{
    static const char body[] =
        "{\"a\": {\"b\": [10, {\"c\": 1.50}]}, \"x/y\": true, \"t~\": null}";
    static const struct {
        const char *select; /* a pointer, or "{" + name=pointer pairs */
        const char *want;   /* NULL: select_failed */
    } cases[] = {
        { "/a/b/1", "{\"c\": 1.50}" },
        { "/a/b/0", "10" },
        { "/x~1y", "true" },
        { "/t~0", "null" },
        { "", NULL /* whole: see below */ },
        { "/a/b/2", NULL },
        { "/a/b/-", NULL },
        { "/zz", NULL },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct compose_item c = { .select = SELECT_POINTER,
                                  .select_ptr = (char *)cases[i].select };
        struct item_req it = { .compose = &c };
        struct result r = {
            .status = 200, .enc = BODY_JSON, .body = strdup(body), .body_len = strlen(body)
        };
        compose_select(&it, &r);
        if (cases[i].select[0] == '\0') {
            CHECK_STR(r.body, body);
        } else if (cases[i].want == NULL) {
            CHECK_CASE(r.error == ERR_SELECT_FAILED && r.body == NULL && r.status == 200,
                       cases[i].select);
        } else {
            CHECK_CASE(r.error == ERR_NONE, cases[i].select);
            CHECK_STR(r.body, cases[i].want);
        }
        result_clear(&r);
    }
    /* object form: null where the pointer names nothing */
    char *names[] = { "first", "gone" }, *ptrs[] = { "/a/b/1/c", "/a/q" };
    struct compose_item c = {
        .select = SELECT_OBJECT, .sel_names = names, .sel_ptrs = ptrs, .nsel = 2
    };
    struct item_req it = { .compose = &c };
    struct result r = {
        .status = 200, .enc = BODY_JSON, .body = strdup(body), .body_len = strlen(body)
    };
    compose_select(&it, &r);
    CHECK_STR(r.body, "{\"first\":1.50,\"gone\":null}");
    result_clear(&r);
    /* a text body: select_failed; a 404: untouched */
    r = (struct result){ .status = 200, .enc = BODY_TEXT, .body = strdup("\"x\""), .body_len = 3 };
    compose_select(&it, &r);
    CHECK_EQ_INT(r.error, ERR_SELECT_FAILED);
    result_clear(&r);
    r = (struct result){ .status = 200, .enc = BODY_NONE };
    compose_select(&it, &r);
    CHECK_EQ_INT(r.error, ERR_SELECT_FAILED);
    result_clear(&r);
    r = (struct result){ .status = 404, .enc = BODY_JSON, .body = strdup("{}"), .body_len = 2 };
    compose_select(&it, &r);
    CHECK_EQ_INT(r.error, ERR_NONE);
    CHECK_STR(r.body, "{}");
    result_clear(&r);
}

static void test_prepare(void)
{
    struct batch_req b;
    struct fo_msg msg;
    struct result res[3] = { 0 }, out = { 0 };
    struct compose_run run;
    const char *body =
        "[{\"url\":\"http://h/a\",\"id\":\"a\"},{\"url\":\"http://h/b\",\"id\":\"b\"},"
        "{\"url\":\"${a.body#/next}\",\"id\":\"c\",\"depends_on\":[\"a\",\"b\"],"
        "\"headers\":{\"X-T\":\"${b.headers.x-t}\"}}]";

    if (parse(body, &b, &msg) != FO_OK) {
        CHECK_FAIL_("parse: %s", msg.text);
        return;
    }
    res[0] = (struct result){ .status = 200,
                              .enc = BODY_JSON,
                              .body = strdup("{\"next\": \"http://n/x?y=1\"}"),
                              .body_len = 26 };
    res[1] = (struct result){ .status = 500 };
    /* run_if success: b is not ok */
    CHECK_EQ_INT(compose_prepare(&b, 2, res, 1 << 20, &run, &out), 0);
    CHECK_EQ_INT(out.error, ERR_FAILED_DEP);
    CHECK(out.message != NULL && strstr(out.message, "\"b\"") != NULL);
    result_clear(&out);
    b.items[2].compose->run_always = 1;
    /* the header is absent */
    CHECK_EQ_INT(compose_prepare(&b, 2, res, 1 << 20, &run, &out), 0);
    CHECK(out.message != NULL && strstr(out.message, "${b.headers.x-t}") != NULL);
    if (out.message != NULL && strstr(out.message, "${b.headers.x-t}") == NULL)
        CHECK_FAIL_("message: %s", out.message);
    result_clear(&out);
    res[1].hdr_names = calloc(1, sizeof(char *));
    res[1].hdr_values = calloc(1, sizeof(char *));
    res[1].hdr_names[0] = strdup("x-t");
    res[1].hdr_values[0] = strdup("tok");
    res[1].nhdr = 1;
    CHECK_EQ_INT(compose_prepare(&b, 2, res, 1 << 20, &run, &out), 1);
    CHECK_STR(run.url, "http://n/x?y=1");
    CHECK(run.headers != NULL && run.nheaders == 1);
    if (run.headers != NULL)
        CHECK_STR(run.headers[0], "X-T: tok");
    compose_run_free(&run);
    /* a dependency ended by the batch deadline: so does the dependant */
    res[1].error = ERR_DEADLINE;
    CHECK_EQ_INT(compose_prepare(&b, 2, res, 1 << 20, &run, &out), 0);
    CHECK_EQ_INT(out.error, ERR_DEADLINE);
    result_clear(&out);
    res[1].error = ERR_NONE;
    /* a whole-url reference that is not an http(s) URL */
    free(res[0].body);
    res[0].body = strdup("{\"next\": \"file:///etc/passwd\"}");
    res[0].body_len = strlen(res[0].body);
    CHECK_EQ_INT(compose_prepare(&b, 2, res, 1 << 20, &run, &out), 0);
    CHECK_EQ_INT(out.error, ERR_INVALID_URL);
    result_clear(&out);
    for (size_t i = 0; i < 3; i++)
        result_clear(&res[i]);
    batch_req_free(&b);

    /* a substituted body over its cap fails the item, naming the cap */
    const char *capped =
        "[{\"url\":\"http://h/a\",\"id\":\"a\"},{\"url\":\"http://h/b\","
        "\"id\":\"b\",\"depends_on\":[\"a\"],\"method\":\"POST\","
        "\"body\":\"${a.body}${a.body}\"}]";
    if (parse(capped, &b, &msg) != FO_OK) {
        CHECK_FAIL_("parse: %s", msg.text);
        return;
    }
    res[0] = (struct result){ .status = 200,
                              .enc = BODY_JSON,
                              .body = strdup("[1, 2, 3, 4, 5, 6, 7, 8]"),
                              .body_len = 24 };
    CHECK_EQ_INT(compose_prepare(&b, 1, res, 30, &run, &out), 0);
    CHECK_EQ_INT(out.error, ERR_FAILED_DEP);
    CHECK(out.message != NULL && strstr(out.message, "longer than 30 bytes") != NULL);
    result_clear(&out);
    CHECK_EQ_INT(compose_prepare(&b, 1, res, 48, &run, &out), 1);
    CHECK_STR(run.body, "[1, 2, 3, 4, 5, 6, 7, 8][1, 2, 3, 4, 5, 6, 7, 8]");
    compose_run_free(&run);
    result_clear(&res[0]);
    batch_req_free(&b);
}

static void test_merge_concat(void)
{
    static const char a[] = "{\"items\": [1, 2], \"m\": {\"t\": [\"a\"], \"e\": []}, \"s\": [0]}";
    static const char b[] = "{\"items\": [ 3 ], \"m\": {\"t\": [\"b\"], \"e\": [9]}, \"s\": 5}";
    static const char c[] = "{\"items\": [], \"m\": {\"t\": [\"c\"]}}";
    struct jt_arena ar;
    struct jt_value acc, v;
    struct buf out;

    jt_arena_init(&ar);
    buf_init(&out, 0);
    CHECK_EQ_INT(jt_new_object(&ar, &acc), FO_OK);
    CHECK_EQ_INT(jt_parse(&ar, a, strlen(a), 16, &v), FO_OK);
    CHECK_EQ_INT(jt_merge_concat(&ar, &acc, &v), FO_OK);
    CHECK_EQ_INT(jt_parse(&ar, b, strlen(b), 16, &v), FO_OK);
    CHECK_EQ_INT(jt_merge_concat(&ar, &acc, &v), FO_OK);
    CHECK_EQ_INT(jt_parse(&ar, c, strlen(c), 16, &v), FO_OK);
    CHECK_EQ_INT(jt_merge_concat(&ar, &acc, &v), FO_OK);
    CHECK_EQ_INT(jt_write(&out, &acc), FO_OK);
    CHECK_STR(out.data,
              "{\"items\":[1, 2,3],\"m\":{\"t\":[\"a\",\"b\",\"c\"],\"e\":[9]},\"s\":5}");
    buf_free(&out);
    jt_arena_free(&ar);
}

static void test_array_next(void)
{
    static const char text[] = "[ {\"a\": 1}, 2 , \"x\" ]";
    struct jt_arena ar;
    struct jt_value arr, el;
    size_t pos = 0, n = 0;

    jt_arena_init(&ar);
    CHECK_EQ_INT(jt_parse(&ar, text, strlen(text), 8, &arr), FO_OK);
    while (jt_array_next(&ar, &arr, &pos, 8, &el) == FO_OK)
        n++;
    CHECK_EQ_INT(n, 3);
    pos = 0;
    CHECK_EQ_INT(jt_array_next(&ar, &arr, &pos, 8, &el), FO_OK);
    CHECK(jt_get(&el, "a", 1) != NULL);
    CHECK_EQ_INT(jt_parse(&ar, "[]", 2, 8, &arr), FO_OK);
    pos = 0;
    CHECK_EQ_INT(jt_array_next(&ar, &arr, &pos, 8, &el), FO_ENOTFOUND);
    jt_arena_free(&ar);
}

static const struct unit_test tests[] = {
    { "graph_refusals", test_graph_refusals },
    { "graph_accepted", test_graph_accepted },
    { "item_body_as_written", test_item_body_as_written },
    { "template_parse", test_template_parse },
    { "template_render", test_template_render },
    { "select", test_select },
    { "prepare", test_prepare },
    { "merge_concat", test_merge_concat },
    { "array_next", test_array_next },
};

UNIT_SUITE(compose_suite, "compose", tests);
