/*
 * result.c - item results and the batch document (see result.h).
 *
 * "none" and "bodies" only concatenate: every body is already a JSON value
 * (encoded by the worker), so no upstream body is parsed here. "deep" has
 * to look inside the bodies: it parses the JSON objects with jtree (which
 * keeps every value's own text), merges them in request order and writes
 * the merged tree, copying the untouched values byte for byte.
 */
#include "result.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "compose_item.h"
#include "jtree.h"

#define ITEM_ERROR_NAME(e, s) [e] = s,
static const char *const error_codes[ERR_COUNT] = { [ERR_NONE] = NULL,
                                                    ITEM_ERRORS(ITEM_ERROR_NAME) };
#undef ITEM_ERROR_NAME

const char *item_error_code(enum item_error e)
{
    return (e > ERR_NONE && e < ERR_COUNT) ? error_codes[e] : "upstream_error";
}

void result_clear(struct result *r)
{
    FO_FREE(r->content_type);
    FO_FREE(r->message);
    FO_FREE(r->body);
    for (size_t i = 0; i < r->nhdr; i++) {
        free(r->hdr_names[i]);
        free(r->hdr_values[i]);
    }
    free(r->hdr_names);
    free(r->hdr_values);
    free(r->effective_url);
    memset(r, 0, sizeof(*r));
}

void result_fail(struct result *r, enum item_error e, const char *fmt, ...)
{
    char text[FO_MSG_LEN];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    FO_FREE(r->body);
    FO_FREE(r->message);
    r->body_len = 0;
    r->enc = BODY_NONE;
    r->error = e;
    r->message = strdup(text); /* NULL on ENOMEM: written as a fixed text */
}

int result_ok(const struct result *r)
{
    return r->error == ERR_NONE && r->status >= 200 && r->status <= 299;
}

/* ,"timings":{"queue_ms":..,"dns_ms":..,"connect_ms":..,"tls_ms":..,"ttfb_ms":..,"total_ms":..,
 * "start_ms":..,"end_ms":..} */
static fo_err put_timings(struct buf *out, const struct result *r)
{
    const double v[] = { r->queue_ms, r->dns_ms,      r->connect_ms, r->tls_ms,
                         r->ttfb_ms,  r->duration_ms, r->start_ms,   r->end_ms };
    static const char *const names[] = { "queue_ms", "dns_ms",   "connect_ms", "tls_ms",
                                         "ttfb_ms",  "total_ms", "start_ms",   "end_ms" };
    fo_err err = buf_puts(out, ",\"timings\":{");

    for (size_t i = 0; i < FO_ARRAY_LEN(v) && err == FO_OK; i++) {
        err = buf_printf(out, "%s\"%s\":", i > 0 ? "," : "", names[i]);
        if (err == FO_OK)
            err = json_put_ms(out, v[i] > 0 ? v[i] : 0);
    }
    return err != FO_OK ? err : buf_putc(out, '}');
}

/* ---- composition: group and response headers ------------------- */

static const char *result_header(const struct result *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++) {
        if (strcmp(r->hdr_names[i], name) == 0)
            return r->hdr_values[i];
    }
    return NULL;
}

static const char *compose_merge_body(const struct item_req *it, const struct result *r,
                                      struct buf *tmp, size_t *len)
{
    const struct compose_item *c = it->compose;

    if (c == NULL || c->group == NULL) {
        if (r->enc != BODY_JSON || r->body_len == 0 || r->body[0] != '{')
            return NULL;
        *len = r->body_len;
        return r->body;
    }
    buf_reset(tmp);
    if (buf_putc(tmp, '{') != FO_OK || json_put_cstr(tmp, c->group) != FO_OK ||
        buf_putc(tmp, ':') != FO_OK ||
        (r->body != NULL ? buf_append(tmp, r->body, r->body_len) : buf_puts(tmp, "null")) !=
            FO_OK ||
        buf_putc(tmp, '}') != FO_OK)
        return NULL;
    *len = tmp->len;
    return tmp->data;
}

static fo_err compose_put_headers(struct buf *out, const struct item_req *it,
                                  const struct result *r)
{
    const struct compose_item *c = it->compose;
    int first = 1;
    fo_err err;

    if (c == NULL || !c->has_resp)
        return FO_OK;
    if ((err = buf_puts(out, ",\"headers\":{")) != FO_OK)
        return err;
    for (size_t k = 0; k < c->nresp && err == FO_OK; k++) {
        const char *v = result_header(r, c->resp_headers[k]);
        if (v == NULL)
            continue;
        if ((err = json_put_key(out, c->resp_headers[k], first)) == FO_OK)
            err = json_put_cstr(out, v);
        first = 0;
    }
    return err != FO_OK ? err : buf_putc(out, '}');
}

/* {"id":..,"url":..,"ok":..,"status":..,"duration_ms":..[,content_type][,body..][,error][,timings]} */
static fo_err put_result(struct buf *out, const struct item_req *it, const struct result *r,
                         int with_body)
{
    fo_err err = FO_OK;

#define TRY(x)                    \
    do {                          \
        if ((err = (x)) != FO_OK) \
            return err;           \
    } while (0)
    TRY(buf_puts(out, "{\"id\":"));
    TRY(json_put_cstr(out, it->id));
    TRY(buf_puts(out, ",\"url\":"));
    TRY(json_put_cstr(out, it->url));
    if (r->effective_url != NULL) {
        TRY(buf_puts(out, ",\"effective_url\":"));
        TRY(json_put_cstr(out, r->effective_url));
    }
    TRY(buf_puts(out, result_ok(r) ? ",\"ok\":true,\"status\":" : ",\"ok\":false,\"status\":"));
    TRY(r->status > 0 ? json_put_int(out, r->status) : buf_puts(out, "null"));
    TRY(buf_puts(out, ",\"duration_ms\":"));
    TRY(json_put_ms(out, r->duration_ms));
    if (r->status > 0) {
        TRY(buf_puts(out, ",\"content_type\":"));
        TRY(r->content_type ? json_put_cstr(out, r->content_type) : buf_puts(out, "null"));
    }
    if (r->error == ERR_NONE && with_body) {
        TRY(buf_puts(out, ",\"body\":"));
        TRY(r->body ? buf_append(out, r->body, r->body_len) : buf_puts(out, "null"));
        TRY(buf_puts(out, ",\"body_encoding\":"));
        const char *enc = body_encoding_name(r->enc);
        TRY(enc && r->body ? json_put_cstr(out, enc) : buf_puts(out, "null"));
    }
    TRY(compose_put_headers(out, it, r));
    if (r->error != ERR_NONE) {
        TRY(buf_puts(out, ",\"error\":{\"code\":"));
        TRY(json_put_cstr(out, item_error_code(r->error)));
        TRY(buf_puts(out, ",\"message\":"));
        TRY(json_put_cstr(out, r->message ? r->message : item_error_code(r->error)));
        TRY(buf_putc(out, '}'));
    }
    if (r->show_attempts) { /* retries */
        TRY(buf_puts(out, ",\"attempts\":"));
        TRY(json_put_int(out, r->attempts));
    }
    if (r->timed)
        TRY(put_timings(out, r));
    if (r->cache != NULL) { /* share: only when coalescing or the cache is on */
        TRY(buf_puts(out, ",\"cache\":"));
        TRY(json_put_cstr(out, r->cache));
    }
    return buf_putc(out, '}');
#undef TRY
}

static fo_err put_summary(struct buf *out, size_t total, size_t ok, double duration_ms)
{
    fo_err err = buf_printf(out,
                            "\"summary\":{\"total\":%zu,\"ok\":%zu,\"failed\":%zu,"
                            "\"duration_ms\":",
                            total, ok, total - ok);
    if (err == FO_OK)
        err = json_put_ms(out, duration_ms);
    if (err == FO_OK)
        err = buf_puts(out, "}}");
    return err;
}

/* "errors":{ID: result-without-body, ...} */
static fo_err put_errors(struct buf *out, const struct batch_req *req, const struct result *res)
{
    int first = 1;
    fo_err err = buf_puts(out, "\"errors\":{");

    for (size_t i = 0; i < req->n && err == FO_OK; i++) {
        if (result_ok(&res[i]))
            continue;
        if ((err = json_put_key(out, req->items[i].id, first)) == FO_OK)
            err = put_result(out, &req->items[i], &res[i], 0);
        first = 0;
    }
    return err != FO_OK ? err : buf_puts(out, "},");
}

/*
 * The deep merge, over jtree (no re-serialising: every number, string and
 * array keeps its upstream spelling). Each JSON-object body is parsed into
 * one arena and merged into an empty object in request order; the trees
 * borrow the bodies' text, which lives until the document is written.
 */
static fo_err put_deep_data(struct buf *out, const struct batch_req *req, const struct result *res)
{
    struct jt_arena arena;
    struct jt_value acc, doc;
    char **grouped = NULL; /* {GROUP: body} texts, alive until written */
    struct buf tmp;
    fo_err err;

    jt_arena_init(&arena);
    buf_init(&tmp, 0);
    if ((err = jt_new_object(&arena, &acc)) != FO_OK)
        goto out;
    for (size_t i = 0; i < req->n; i++) {
        const struct result *r = &res[i];
        const char *body;
        size_t len;
        if (!result_ok(r))
            continue;
        /* A JSON object body, or any body under its group ({GROUP: body}). */
        if ((body = compose_merge_body(&req->items[i], r, &tmp, &len)) == NULL) {
            if (req->items[i].compose != NULL && req->items[i].compose->group != NULL) {
                err = FO_ENOMEM;
                goto out;
            }
            continue;
        }
        if (body == tmp.data) {
            if (grouped == NULL && (grouped = calloc(req->n, sizeof(*grouped))) == NULL) {
                err = FO_ENOMEM;
                goto out;
            }
            body = grouped[i] = buf_steal(&tmp, &len);
        }
        /* encode.c checked the body; should the tree still refuse it, it is left out. */
        err = jt_parse(&arena, body, len, FO_MAX_JSON_DEPTH, &doc);
        if (err == FO_EINVAL)
            continue;
        if (err == FO_OK)
            err = req->merge_concat ? jt_merge_concat(&arena, &acc, &doc)
                                    : jt_merge(&arena, &acc, &doc);
        if (err != FO_OK)
            goto out;
    }
    err = jt_write(out, &acc);
out:
    for (size_t i = 0; grouped != NULL && i < req->n; i++)
        free(grouped[i]);
    free(grouped);
    buf_free(&tmp);
    jt_arena_free(&arena);
    return err;
}

fo_err merge_build(const struct batch_req *req, const struct result *res, enum merge_mode mode,
                   double duration_ms, struct buf *out, int *complete)
{
    size_t ok = 0;
    int first = 1;
    fo_err err = FO_OK;

    size_t need = 128;
    for (size_t i = 0; i < req->n; i++) {
        ok += result_ok(&res[i]) != 0;
        /* The fields around each body, and their escapes, rarely pass 256 bytes. */
        need += res[i].body_len + strlen(req->items[i].url) + strlen(req->items[i].id) + 256;
    }
    *complete = ok == req->n;
    /* One allocation; should it fail, the buffer grows (or fails) as it goes. */
    if (buf_reserve(out, need) != FO_OK)
        need = 0;
    if (mode == MERGE_NONE) {
        err = buf_puts(out, "{\"results\":[");
        for (size_t i = 0; i < req->n && err == FO_OK; i++) {
            if (i > 0)
                err = buf_putc(out, ',');
            if (err == FO_OK)
                err = put_result(out, &req->items[i], &res[i], 1);
        }
        if (err == FO_OK)
            err = buf_puts(out, "],");
    } else {
        err = buf_puts(out, "{\"data\":");
        if (err == FO_OK && mode == MERGE_DEEP) {
            err = put_deep_data(out, req, res);
        } else if (err == FO_OK) {
            err = buf_putc(out, '{');
            for (size_t i = 0; i < req->n && err == FO_OK; i++) {
                if (!result_ok(&res[i]))
                    continue;
                err = json_put_key(out, req->items[i].id, first);
                if (err == FO_OK)
                    err = res[i].body ? buf_append(out, res[i].body, res[i].body_len)
                                      : buf_puts(out, "null");
                first = 0;
            }
            if (err == FO_OK)
                err = buf_putc(out, '}');
        }
        if (err == FO_OK)
            err = buf_putc(out, ',');
        if (err == FO_OK)
            err = put_errors(out, req, res);
    }
    if (err == FO_OK)
        err = put_summary(out, req->n, ok, duration_ms);
    return err;
}

/* ---- streaming (NDJSON lines) ---------------------------------------------- */

fo_err result_put_line(struct buf *out, const struct item_req *it, const struct result *r,
                       size_t index)
{
    size_t start = out->len;
    fo_err err = put_result(out, it, r, 1);

    /* put_result ends with the object's '}': "index" goes in before it. */
    if (err == FO_OK) {
        out->len--;
        err = buf_printf(out, ",\"index\":%zu}\n", index);
    }
    if (err != FO_OK && out->data != NULL) {
        out->len = start;
        out->data[start] = '\0';
    }
    return err;
}

fo_err summary_put_line(struct buf *out, size_t total, size_t ok, double duration_ms)
{
    fo_err err = buf_printf(out,
                            "{\"summary\":{\"total\":%zu,\"ok\":%zu,\"failed\":%zu,"
                            "\"duration_ms\":",
                            total, ok, total - ok);
    if (err == FO_OK)
        err = json_put_ms(out, duration_ms);
    if (err == FO_OK)
        err = buf_printf(out, ",\"complete\":%s}}\n", ok == total ? "true" : "false");
    return err;
}
