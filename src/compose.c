/*
 * compose.c - dependencies' references resolved, select applied, group
 * and response headers written (see compose.h).
 */
#include "compose.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "fanoutd.h"
#include "jtree.h"
#include "url.h"

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

void compose_run_free(struct compose_run *r)
{
    free(r->url);
    strv_free(r->headers, r->nheaders);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* ---- resolving references ---------------------------------------------- */

struct lookup_ctx {
    const struct batch_req *req;
    const struct compose_item *c;
    const struct result *res_of;
    struct buf scratch; /* a header value or status as JSON text */
    /* Each dependency's JSON body parsed once for all of the item's
     * references (url, headers, body): roots[k] for deps[k]. */
    struct jt_arena arena;
    struct jt_value *roots;
    signed char *parsed; /* 0: not yet, 1: roots[k] holds it, -1: not JSON */
    int too_long;        /* the last render passed its cap */
};

/* The dependency named id: its index in deps, or -1. */
static long dep_index(const struct lookup_ctx *lc, const char *id)
{
    for (size_t k = 0; k < lc->c->ndeps; k++) {
        if (strcmp(lc->req->items[lc->c->deps[k]].id, id) == 0)
            return (long)k;
    }
    return -1;
}

/* Dependency k's body as a tree, parsed on first use. */
static fo_err dep_tree(struct lookup_ctx *lc, size_t k, const struct result *r,
                       struct jt_value **out)
{
    fo_err err;

    if (lc->parsed[k] == 0) {
        err = jt_parse(&lc->arena, r->body, r->body_len, FO_MAX_JSON_DEPTH, &lc->roots[k]);
        if (err == FO_ENOMEM)
            return err;
        lc->parsed[k] = err == FO_OK ? 1 : -1;
    }
    *out = &lc->roots[k];
    return lc->parsed[k] > 0 ? FO_OK : FO_EINVAL;
}

static const char *result_header(const struct result *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++) {
        if (strcmp(r->hdr_names[i], name) == 0)
            return r->hdr_values[i];
    }
    return NULL;
}

static fo_err lookup(void *ctx, struct jt_arena *a, const struct tpl_ref *ref,
                     struct tpl_value *out, struct fo_msg *why)
{
    struct lookup_ctx *lc = ctx;
    long k = dep_index(lc, ref->id);
    const struct result *r = k >= 0 ? &lc->res_of[lc->c->deps[k]] : NULL;
    struct jt_value *root, v;
    const char *h;
    fo_err err;

    memset(out, 0, sizeof(*out));
    if (r == NULL)
        goto unresolved;
    switch (ref->field) {
    case TPL_STATUS:
        if (r->status <= 0)
            goto unresolved;
        buf_reset(&lc->scratch);
        if ((err = buf_printf(&lc->scratch, "%d", r->status)) != FO_OK)
            return err;
        out->kind = JT_NUMBER;
        break;
    case TPL_HEADER:
        if ((h = result_header(r, ref->arg)) == NULL)
            goto unresolved;
        buf_reset(&lc->scratch);
        if ((err = json_put_cstr(&lc->scratch, h)) != FO_OK)
            return err;
        out->kind = JT_STRING;
        break;
    case TPL_BODY:
    case TPL_BODY_PTR:
        if (r->error != ERR_NONE || r->body == NULL || r->enc == BODY_NONE)
            goto unresolved;
        if (ref->field == TPL_BODY) {
            if ((err = dep_tree(lc, (size_t)k, r, &root)) == FO_ENOMEM)
                return err;
            if (err != FO_OK)
                goto unresolved;
            *out = (struct tpl_value){ root->kind, root->raw, root->len, 1 };
            return FO_OK;
        }
        if (r->enc != BODY_JSON)
            goto unresolved;
        err = dep_tree(lc, (size_t)k, r, &root);
        if (err == FO_OK)
            err = jt_pointer(a, root, ref->arg, strlen(ref->arg), FO_MAX_JSON_DEPTH, &v);
        if (err == FO_ENOMEM)
            return err;
        if (err != FO_OK)
            goto unresolved;
        *out = (struct tpl_value){ v.kind, v.raw, v.len, 0 };
        return FO_OK;
    }
    out->raw = lc->scratch.data;
    out->len = lc->scratch.len;
    return FO_OK;
unresolved:
    fo_msg_set(why, "reference %.200s cannot be resolved (%s)", ref->text,
               r == NULL                  ? "no such dependency"
               : ref->field == TPL_STATUS ? "no response arrived"
               : ref->field == TPL_HEADER ? "the header is absent"
               : ref->field == TPL_BODY   ? "there is no body"
               : r->enc != BODY_JSON      ? "the body is not JSON"
                                          : "the pointer names nothing");
    return FO_ENOTFOUND;
}

/* Renders t into a new string (*len bytes, NUL-terminated) of at most cap
 * bytes: past it FO_EINVAL, why saying that `what` is too long. */
static fo_err render(const struct tpl *t, enum tpl_place place, struct lookup_ctx *lc, size_t cap,
                     const char *what, char **out, size_t *len, struct fo_msg *why)
{
    struct buf b;
    fo_err err;

    buf_init(&b, cap);
    err = tpl_render(t, place, lookup, lc, &b, why);
    if (err == FO_OK && b.data == NULL)
        err = buf_puts(&b, "");
    if (err == FO_ETOOBIG) {
        lc->too_long = 1;
        fo_msg_set(why, "the %s after substitution is longer than %zu bytes", what, cap);
        err = FO_EINVAL;
    }
    if (err != FO_OK) {
        buf_free(&b);
        return err;
    }
    *out = buf_steal(&b, len);
    return FO_OK;
}

/* "Name: value" (or "Name;" for an empty value) with value rendered. */
static fo_err render_header(const char *line, const struct tpl *t, struct lookup_ctx *lc,
                            char **out, struct fo_msg *why)
{
    size_t n = strcspn(line, ":;"), vlen;
    char *value;
    fo_err err;

    if ((err = render(t, TPL_PLACE_HEADER, lc, FO_MAX_HEADER_LEN, "header value", &value, &vlen,
                      why)) != FO_OK)
        return err;
    if ((*out = malloc(n + vlen + 3)) == NULL) {
        free(value);
        return FO_ENOMEM;
    }
    if (vlen == 0)
        (void)snprintf(*out, n + 3, "%.*s;", (int)n, line);
    else
        (void)snprintf(*out, n + vlen + 3, "%.*s: %s", (int)n, line, value);
    free(value);
    return FO_OK;
}

static void lookup_ctx_free(struct lookup_ctx *lc)
{
    buf_free(&lc->scratch);
    jt_arena_free(&lc->arena);
    free(lc->roots);
    free(lc->parsed);
}

int compose_prepare(const struct batch_req *req, size_t i, const struct result *res_of,
                    size_t max_body, struct compose_run *run, struct result *res)
{
    const struct item_req *it = &req->items[i];
    const struct compose_item *c = it->compose;
    struct lookup_ctx lc = { .req = req, .c = c, .res_of = res_of };
    struct fo_msg why;
    size_t len;
    fo_err err = FO_OK;

    memset(run, 0, sizeof(*run));
    if (c == NULL || !c->has_deps)
        return 1;
    /* A dependency ended by the batch deadline: so did the batch (its
     * fetch may notice the deadline a moment before the watcher does). */
    for (size_t k = 0; k < c->ndeps; k++) {
        if (res_of[c->deps[k]].error == ERR_DEADLINE) {
            result_fail(res, ERR_DEADLINE, "the batch deadline passed before the item started");
            return 0;
        }
    }
    if (!c->run_always) {
        for (size_t k = 0; k < c->ndeps; k++) {
            if (!result_ok(&res_of[c->deps[k]])) {
                result_fail(res, ERR_FAILED_DEP, "not fetched: dependency \"%.200s\" is not ok",
                            req->items[c->deps[k]].id);
                return 0;
            }
        }
    }
    buf_init(&lc.scratch, 0);
    jt_arena_init(&lc.arena);
    lc.roots = calloc(c->ndeps + 1, sizeof(*lc.roots));
    lc.parsed = calloc(c->ndeps + 1, sizeof(*lc.parsed));
    if (lc.roots == NULL || lc.parsed == NULL)
        err = FO_ENOMEM;
    if (err == FO_OK && (c->url.nrefs > 0 || c->url.escapes)) {
        err = render(&c->url, TPL_PLACE_URL, &lc, FO_MAX_URL_LEN, "url", &run->url, &len, &why);
        if (err == FO_EINVAL && lc.too_long) {
            result_fail(res, ERR_INVALID_URL, "not fetched: %s", why.text);
            goto failed;
        }
        if (err == FO_OK && url_check(run->url, NULL, &why) == FO_EINVAL) {
            result_fail(res, ERR_INVALID_URL, "not fetched: the url after substitution: %s",
                        why.text);
            goto failed;
        }
    }
    for (size_t k = 0; err == FO_OK && k < c->nhdr; k++) {
        if (c->hdr[k].nrefs == 0 && !c->hdr[k].escapes)
            continue;
        if (run->headers == NULL) {
            run->headers = calloc(it->nheaders, sizeof(*run->headers));
            if (run->headers == NULL) {
                err = FO_ENOMEM;
                break;
            }
            run->nheaders = it->nheaders;
            for (size_t m = 0; m < it->nheaders && err == FO_OK; m++)
                if ((run->headers[m] = strdup(it->headers[m])) == NULL)
                    err = FO_ENOMEM;
            if (err != FO_OK)
                break;
        }
        free(run->headers[k]);
        run->headers[k] = NULL;
        err = render_header(it->headers[k], &c->hdr[k], &lc, &run->headers[k], &why);
    }
    if (err == FO_OK && it->body != NULL && (c->body.nrefs > 0 || c->body.escapes))
        err = render(&c->body, it->body_is_json ? TPL_PLACE_JSON : TPL_PLACE_TEXT, &lc, max_body,
                     "body", &run->body, &run->body_len, &why);
    if (err == FO_OK) {
        lookup_ctx_free(&lc);
        return 1;
    }
    if (err == FO_ENOMEM) {
        lookup_ctx_free(&lc);
        compose_run_free(run);
        return -1;
    }
    result_fail(res, ERR_FAILED_DEP, "not fetched: %s", why.text);
failed:
    lookup_ctx_free(&lc);
    compose_run_free(run);
    return 0;
}

/* ---- select ---------------------------------------------------------------- */

void compose_select(const struct item_req *it, struct result *res)
{
    const struct compose_item *c = it->compose;
    struct jt_arena a;
    struct jt_value root, v;
    struct buf out;
    fo_err err;

    if (c == NULL || c->select == SELECT_NONE || !result_ok(res))
        return;
    if (res->body == NULL || res->enc != BODY_JSON) {
        result_fail(res, ERR_SELECT_FAILED, "select: the body is not JSON");
        return;
    }
    jt_arena_init(&a);
    buf_init(&out, 0);
    err = jt_parse(&a, res->body, res->body_len, FO_MAX_JSON_DEPTH, &root);
    if (err == FO_EINVAL) {
        result_fail(res, ERR_SELECT_FAILED, "select: the body is not JSON");
        goto out;
    }
    if (err == FO_OK && c->select == SELECT_POINTER) {
        err = jt_pointer(&a, &root, c->select_ptr, strlen(c->select_ptr), FO_MAX_JSON_DEPTH, &v);
        if (err == FO_ENOTFOUND || err == FO_EINVAL) {
            result_fail(res, ERR_SELECT_FAILED, "select: '%.200s' names nothing in the body",
                        c->select_ptr);
            goto out;
        }
        if (err == FO_OK)
            err = jt_write(&out, &v);
    } else if (err == FO_OK) {
        err = buf_putc(&out, '{');
        for (size_t k = 0; k < c->nsel && err == FO_OK; k++) {
            err = json_put_key(&out, c->sel_names[k], k == 0);
            if (err != FO_OK)
                break;
            err = jt_pointer(&a, &root, c->sel_ptrs[k], strlen(c->sel_ptrs[k]), FO_MAX_JSON_DEPTH,
                             &v);
            if (err == FO_OK)
                err = jt_write(&out, &v);
            else if (err == FO_ENOTFOUND || err == FO_EINVAL)
                err = buf_puts(&out, "null");
        }
        if (err == FO_OK)
            err = buf_putc(&out, '}');
    }
    if (err != FO_OK) {
        result_fail(res, ERR_UPSTREAM, "out of memory applying select");
        goto out;
    }
    free(res->body);
    res->body = buf_steal(&out, &res->body_len);
out:
    buf_free(&out);
    jt_arena_free(&a);
}
