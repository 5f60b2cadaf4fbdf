/*
 * fuzz_merge.c - merge_build: the response document for merge modes none,
 * bodies and deep, from 1-4 results with arbitrary upstream answers.
 *
 * Input: byte 0 (low 2 bits + 1) is the item count. Then per item:
 *   2 bytes status (big-endian; 0: no response), 1 byte error (values past
 *   the item error codes mean none), 1 byte content-type length (255: no
 *   Content-Type) and its bytes, 2 bytes body length and its bytes, 1 byte
 *   duration. Missing bytes read as zero. Ids are "0".."3", URLs fixed.
 * Each body goes through body_encode, as a worker would do it.
 *
 * Checks (CONTRACT.md "Response"): every document is valid UTF-8 JSON that
 * jansson loads as an object with no duplicate keys; the summary counts
 * match the results; X-Batch-Complete (complete) is set iff every item is
 * ok. none: one result per item in order, with id, url, ok, status,
 * content_type when a response arrived, body and body_encoding iff no
 * error, error with the right code iff one. bodies/deep: data holds the ok
 * items (deep: every key of their JSON-object bodies, the last non-object
 * value winning), errors the others without a body.
 */
#include <string.h>

#include "json_check.h"
#include "result.h"

#define MAX_ITEMS 4

struct reader {
    const uint8_t *p;
    size_t left;
};

static unsigned rd_byte(struct reader *r)
{
    if (r->left == 0)
        return 0;
    r->left--;
    return *r->p++;
}

static const uint8_t *rd_bytes(struct reader *r, size_t *n)
{
    const uint8_t *p = r->p;

    if (*n > r->left)
        *n = r->left;
    r->p += *n;
    r->left -= *n;
    return p;
}

static const char *const urls[MAX_ITEMS] = {
    "http://a.example/0", "https://b.example:8443/1?q=\"x\"", "http://[::1]:9/2",
    "http://c.example/\xc3\xa9",
};

/* Items, their results and the encoded bodies (NULL body: none). */
struct fixture {
    struct batch_req req;
    struct result res[MAX_ITEMS];
    size_t n, nok;
};

static void build_fixture(struct fixture *fx, const uint8_t *data, size_t size)
{
    struct reader r = { data, size };

    memset(fx, 0, sizeof(*fx));
    fx->n = 1 + (rd_byte(&r) & 3);
    fx->req.items = calloc(fx->n, sizeof(*fx->req.items));
    if (fx->req.items == NULL)
        abort();
    fx->req.n = fx->n;
    for (size_t i = 0; i < fx->n; i++) {
        struct item_req *it = &fx->req.items[i];
        struct result *res = &fx->res[i];
        char id[8];
        size_t clen, blen;
        const uint8_t *p;

        (void)snprintf(id, sizeof(id), "%zu", i);
        it->id = strdup(id);
        it->url = strdup(urls[i]);
        it->hostkey = strdup("a.example:80");
        if (it->id == NULL || it->url == NULL || it->hostkey == NULL)
            abort();

        res->status = (int)(rd_byte(&r) << 8);
        res->status |= (int)rd_byte(&r);
        unsigned e = rd_byte(&r);
        clen = rd_byte(&r);
        if (clen != 255) {
            p = rd_bytes(&r, &clen);
            /* The fetcher keeps only a valid UTF-8 Content-Type. */
            if (utf8_valid((const char *)p, clen) && memchr(p, '\0', clen) == NULL) {
                res->content_type = strndup((const char *)p, clen);
                if (res->content_type == NULL)
                    abort();
            }
        }
        blen = rd_byte(&r) << 8;
        blen |= rd_byte(&r);
        p = rd_bytes(&r, &blen);
        res->duration_ms = rd_byte(&r) * 1.25;
        if (res->status > 0) {
            struct buf b;
            buf_init(&b, 0);
            FUZZ_ASSERT(body_encode(&b, res->content_type, (const char *)p, blen, &res->enc) ==
                        FO_OK);
            res->body = buf_steal(&b, &res->body_len);
            FUZZ_ASSERT(res->body != NULL);
        }
        if (e > ERR_NONE && e < ERR_COUNT)
            result_fail(res, (enum item_error)e, "failure %u of item %zu", e, i);
        fx->nok += result_ok(res) != 0;
    }
}

static void free_fixture(struct fixture *fx)
{
    for (size_t i = 0; i < fx->n; i++)
        result_clear(&fx->res[i]);
    batch_req_free(&fx->req);
}

/* v is the number x (loaded as an integer, or as a real when the document
 * needed JSON_DECODE_INT_AS_REAL for a big number in a body). */
static int num_is(json_t *v, double x)
{
    return json_is_number(v) && json_number_value(v) == x;
}

static void check_summary(json_t *doc, const struct fixture *fx)
{
    json_t *s = json_object_get(doc, "summary");

    FUZZ_ASSERT(json_is_object(s) && json_object_size(s) == 4);
    FUZZ_ASSERT(num_is(json_object_get(s, "total"), (double)fx->n));
    FUZZ_ASSERT(num_is(json_object_get(s, "ok"), (double)fx->nok));
    FUZZ_ASSERT(num_is(json_object_get(s, "failed"), (double)(fx->n - fx->nok)));
    FUZZ_ASSERT(json_is_number(json_object_get(s, "duration_ms")));
}

/* 1 if v is the JSON text of an encoded body (jansson may not hold big
 * numbers; when the document needed integers as reals, so does the body). */
static int same_value(json_t *v, const struct result *res)
{
    int limit;
    json_t *want = load_or_die(res->body, res->body_len, JSON_DECODE_ANY, &limit);
    int eq = limit || json_equal(v, want);

    json_decref(want);
    if (!eq) {
        want = json_loadb(res->body, res->body_len,
                          JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
        eq = want != NULL && json_equal(v, want);
        json_decref(want);
    }
    return eq;
}

static void check_result(json_t *r, const struct fixture *fx, size_t i, int with_body)
{
    const struct result *res = &fx->res[i];
    json_t *status = json_object_get(r, "status");

    FUZZ_ASSERT(json_is_object(r));
    FUZZ_ASSERT(json_is_string(json_object_get(r, "id")) &&
                strcmp(json_string_value(json_object_get(r, "id")), fx->req.items[i].id) == 0);
    FUZZ_ASSERT(json_is_string(json_object_get(r, "url")) &&
                strcmp(json_string_value(json_object_get(r, "url")), urls[i]) == 0);
    FUZZ_ASSERT(json_is_boolean(json_object_get(r, "ok")) &&
                json_boolean_value(json_object_get(r, "ok")) == result_ok(res));
    FUZZ_ASSERT(json_is_number(json_object_get(r, "duration_ms")));
    if (res->status > 0)
        FUZZ_ASSERT(num_is(status, res->status));
    else
        FUZZ_ASSERT(json_is_null(status));
    FUZZ_ASSERT((json_object_get(r, "content_type") != NULL) == (res->status > 0));
    if (res->status > 0 && res->content_type != NULL) {
        json_t *ct = json_object_get(r, "content_type");
        FUZZ_ASSERT(json_is_string(ct) && strcmp(json_string_value(ct), res->content_type) == 0);
    }
    json_t *err = json_object_get(r, "error");
    if (res->error != ERR_NONE) {
        FUZZ_ASSERT(json_is_object(err));
        FUZZ_ASSERT(json_is_string(json_object_get(err, "code")) &&
                    strcmp(json_string_value(json_object_get(err, "code")),
                           item_error_code(res->error)) == 0);
        FUZZ_ASSERT(json_is_string(json_object_get(err, "message")));
        FUZZ_ASSERT(json_object_get(r, "body") == NULL);
    } else {
        FUZZ_ASSERT(err == NULL);
    }
    if (!with_body || res->error != ERR_NONE) {
        FUZZ_ASSERT(json_object_get(r, "body") == NULL &&
                    json_object_get(r, "body_encoding") == NULL);
        return;
    }
    json_t *body = json_object_get(r, "body"), *enc = json_object_get(r, "body_encoding");
    FUZZ_ASSERT(body != NULL && enc != NULL);
    if (res->body == NULL || res->enc == BODY_NONE) {
        FUZZ_ASSERT(json_is_null(body) && json_is_null(enc));
    } else {
        FUZZ_ASSERT(json_is_string(enc) &&
                    strcmp(json_string_value(enc), body_encoding_name(res->enc)) == 0);
        FUZZ_ASSERT(same_value(body, res));
    }
}

/* errors: exactly the items that are not ok, without bodies. */
static void check_errors(json_t *doc, const struct fixture *fx)
{
    json_t *errors = json_object_get(doc, "errors");

    FUZZ_ASSERT(json_is_object(errors));
    FUZZ_ASSERT(json_object_size(errors) == fx->n - fx->nok);
    for (size_t i = 0; i < fx->n; i++) {
        json_t *e = json_object_get(errors, fx->req.items[i].id);
        FUZZ_ASSERT((e != NULL) == !result_ok(&fx->res[i]));
        if (e != NULL)
            check_result(e, fx, i, 0);
    }
}

/* deep: each key of each mergeable body is in data; a last non-object value wins.
 * as_real: the document itself had to be loaded with integers as reals (a big
 * number anywhere in it), so the bodies are loaded the same way to compare. */
static void check_deep(json_t *data, const struct fixture *fx, int as_real)
{
    json_t *bodies[MAX_ITEMS] = { NULL };
    const char *key;
    json_t *val;

    for (size_t i = 0; i < fx->n; i++) {
        const struct result *r = &fx->res[i];
        if (!result_ok(r) || r->enc != BODY_JSON || r->body[0] != '{')
            continue;
        bodies[i] = json_loadb(r->body, r->body_len,
                               JSON_ALLOW_NUL | (as_real ? JSON_DECODE_INT_AS_REAL : 0), NULL);
        if (bodies[i] == NULL)
            bodies[i] = json_loadb(r->body, r->body_len,
                                   JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    }
    for (size_t i = 0; i < fx->n; i++) {
        if (bodies[i] == NULL)
            continue;
        json_object_foreach(bodies[i], key, val) {
            json_t *got = json_object_get(data, key);
            FUZZ_ASSERTF(got != NULL, "deep: key '%s' of item %zu missing", key, i);
            size_t last = i;
            for (size_t j = i + 1; j < fx->n; j++) {
                if (bodies[j] != NULL && json_object_get(bodies[j], key) != NULL)
                    last = j;
            }
            json_t *lv = json_object_get(bodies[last], key);
            if (!json_is_object(lv))
                FUZZ_ASSERTF(json_equal(got, lv), "deep: key '%s': item %zu's value lost", key,
                             last);
            else
                FUZZ_ASSERT(json_is_object(got));
        }
    }
    for (size_t i = 0; i < fx->n; i++)
        json_decref(bodies[i]);
}

static void check_mode(const struct fixture *fx, enum merge_mode mode)
{
    struct buf out;
    int complete = -1, limit;

    buf_init(&out, 0);
    FUZZ_ASSERT(merge_build(&fx->req, fx->res, mode, 12.25, &out, &complete) == FO_OK);
    FUZZ_ASSERT(complete == (fx->nok == fx->n));
    FUZZ_ASSERT(out.len > 0 && utf8_valid(out.data, out.len));
    FUZZ_ASSERTF(json_valid(out.data, out.len, FO_MAX_JSON_DEPTH + 4, NULL, NULL),
                 "mode %d: not valid JSON: %s", (int)mode, out.data);
    json_t *doc = load_or_die(out.data, out.len, JSON_REJECT_DUPLICATES, &limit);
    json_t *as_int = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    int as_real = as_int == NULL;

    json_decref(as_int);
    if (doc == NULL) {          /* a number jansson cannot hold: structure seen by json_valid */
        buf_free(&out);
        return;
    }
    FUZZ_ASSERT(json_is_object(doc) && json_object_size(doc) == (mode == MERGE_NONE ? 2 : 3));
    check_summary(doc, fx);
    if (mode == MERGE_NONE) {
        json_t *results = json_object_get(doc, "results");
        FUZZ_ASSERT(json_is_array(results) && json_array_size(results) == fx->n);
        for (size_t i = 0; i < fx->n; i++)
            check_result(json_array_get(results, i), fx, i, 1);
    } else {
        json_t *data = json_object_get(doc, "data");
        FUZZ_ASSERT(json_is_object(data));
        check_errors(doc, fx);
        if (mode == MERGE_BODIES) {
            FUZZ_ASSERT(json_object_size(data) == fx->nok);
            for (size_t i = 0; i < fx->n; i++) {
                const struct result *r = &fx->res[i];
                json_t *d = json_object_get(data, fx->req.items[i].id);
                FUZZ_ASSERT((d != NULL) == result_ok(r));
                if (d != NULL && r->body != NULL)
                    FUZZ_ASSERT(same_value(d, r));
                else if (d != NULL)
                    FUZZ_ASSERT(json_is_null(d));
            }
        } else {
            check_deep(data, fx, as_real);
        }
    }
    json_decref(doc);
    buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fixture fx;

    build_fixture(&fx, data, size);
    check_mode(&fx, MERGE_NONE);
    check_mode(&fx, MERGE_BODIES);
    check_mode(&fx, MERGE_DEEP);
    free_fixture(&fx);
    return 0;
}
