/*
 * batch.c - parsing and validating a POST /batch body (see batch.h).
 *
 * JSON bodies go through jansson (duplicate keys refused: a request with
 * "requests" twice has no single meaning); plain lists are split here.
 * Either way every item is checked before anything is accepted, and the
 * first problem found is reported with the item's index and id.
 */
#include "batch.h"

#include <ctype.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "compose_item.h"
#include "encode.h"
#include "jtree.h"
#include "url.h"

/* Request headers an item may not set: they would change the framing of
 * the upstream request, which fanoutd owns. */
static const char *const forbidden_headers[] = { "content-length", "transfer-encoding" };

/* Set by jansson_malloc when an allocation fails in this thread, so that a
 * parse that failed for want of memory is not reported as bad JSON
 * (jansson's lexer reports some of those as syntax errors). Thread-local:
 * no lock. */
static _Thread_local int jansson_out_of_memory;

static void *jansson_malloc(size_t n)
{
    void *p = malloc(n);

    if (p == NULL)
        jansson_out_of_memory = 1;
    return p;
}

void batch_json_init(void)
{
    json_set_alloc_funcs(jansson_malloc, free);
}

int batch_is_json_type(const char *ct)
{
    return media_type_is(ct, "application/json");
}

static void item_free(struct item_req *it)
{
    free(it->id);
    free(it->url);
    free(it->hostkey);
    for (size_t i = 0; i < it->nheaders; i++)
        free(it->headers[i]);
    free(it->headers);
    free(it->body);
    compose_item_free(it->compose);
    memset(it, 0, sizeof(*it));
}

void batch_req_free(struct batch_req *b)
{
    for (size_t i = 0; i < b->n; i++)
        item_free(&b->items[i]);
    FO_FREE(b->items);
    FO_FREE(b->tracestate);
    b->n = 0;
    FO_FREE(b->dep_start);
    FO_FREE(b->dep_list);
    FO_FREE(b->raw_span);
}

#define CLIP(s, max) utf8_clip((s), (max)), (s)

/* composition, at the end of this file */
static int compose_url_deferred(json_t *obj, const char *url);
static fo_err compose_set_url(struct item_req *it, const char *url);
static fo_err compose_item_fields(struct batch_req *b, size_t i, json_t *obj, struct fo_msg *msg);
static fo_err compose_graph(struct batch_req *b, struct fo_msg *msg);
static fo_err compose_batch_fields(struct batch_req *b, json_t *root, struct fo_msg *msg);
static fo_err compose_raw_bodies(struct batch_req *b, const char *text, size_t len,
                                 const struct config *cfg, char **masked);

/* "item 3" or "item 3 (id \"x\")" for messages. */
static void item_name(char *out, size_t size, size_t index, const char *id)
{
    if (id != NULL)
        (void)snprintf(out, size, "item %zu (id \"%.*s\")", index, CLIP(id, 100));
    else
        (void)snprintf(out, size, "item %zu", index);
}

static fo_err set_url(struct item_req *it, const char *url, size_t index, struct fo_msg *msg)
{
    struct fo_msg why;
    char name[160];
    fo_err err = url_check(url, &it->hostkey, &why);

    if (err == FO_EINVAL) {
        item_name(name, sizeof(name), index, it->id);
        fo_msg_set(msg, "%s: %s", name, why.text);
    }
    if (err != FO_OK)
        return err;
    return (it->url = strdup(url)) ? FO_OK : FO_ENOMEM;
}

/* The string value of v if it is a string without NUL, else NULL. */
static const char *plain_string(const json_t *v)
{
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return NULL;
    return json_string_value(v);
}

/* A positive whole number of milliseconds (1000 and 1000.0 alike). */
static int parse_timeout(const json_t *v, long *out)
{
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        json_int_t t = json_integer_value(v);
        *out = t > 86400000 * 365L ? 86400000 * 365L : (long)t;
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= 1 && d == floor(d) && d < 1e12) {
            *out = (long)d;
            return 1;
        }
    }
    return 0;
}

static int header_name_ok(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return 0;
    }
    return 1;
}

static fo_err set_headers(struct item_req *it, json_t *headers, const char *name,
                          struct fo_msg *msg)
{
    const char *key;
    json_t *val;

    if (!json_is_object(headers)) {
        fo_msg_set(msg, "%s: headers must be an object of strings", name);
        return FO_EINVAL;
    }
    if (json_object_size(headers) > FO_MAX_ITEM_HEADERS) {
        fo_msg_set(msg, "%s: more than %d headers", name, FO_MAX_ITEM_HEADERS);
        return FO_EINVAL;
    }
    it->headers = calloc(json_object_size(headers) + 1, sizeof(char *));
    if (it->headers == NULL)
        return FO_ENOMEM;
    json_object_foreach (headers, key, val) {
        size_t klen = strlen(key);
        if (!json_is_string(val)) {
            fo_msg_set(msg, "%s: header '%.*s' must have a string value", name, CLIP(key, 100));
            return FO_EINVAL;
        }
        const char *v = json_string_value(val);
        size_t vlen = json_string_length(val);
        if (!header_name_ok(key)) {
            fo_msg_set(msg, "%s: '%.*s' is not a valid header name", name, CLIP(key, 100));
            return FO_EINVAL;
        }
        if (strlen(v) != vlen || strpbrk(v, "\r\n") != NULL) {
            fo_msg_set(msg, "%s: header '%.*s' has CR, LF or NUL in its value", name,
                       CLIP(key, 100));
            return FO_EINVAL;
        }
        if (klen + vlen > FO_MAX_HEADER_LEN) {
            fo_msg_set(msg, "%s: header '%.*s' is longer than %d bytes", name, CLIP(key, 100),
                       FO_MAX_HEADER_LEN);
            return FO_EINVAL;
        }
        for (size_t i = 0; i < FO_ARRAY_LEN(forbidden_headers); i++) {
            if (strcasecmp(key, forbidden_headers[i]) == 0) {
                fo_msg_set(msg, "%s: header '%s' cannot be set (fanoutd frames the request)",
                           name, key);
                return FO_EINVAL;
            }
        }
        if (strcasecmp(key, "content-type") == 0)
            it->has_content_type = 1;
        size_t n = klen + vlen + 3;
        char *line = malloc(n);
        if (line == NULL)
            return FO_ENOMEM;
        /* curl sends "Name;" as a header with an empty value ("Name:" would remove it). */
        if (vlen == 0)
            (void)snprintf(line, n, "%s;", key);
        else
            (void)snprintf(line, n, "%s: %s", key, v);
        it->headers[it->nheaders++] = line;
    }
    return FO_OK;
}

static fo_err set_body(struct item_req *it, json_t *body, const char *name, struct fo_msg *msg)
{
    if (json_is_null(body))
        return FO_OK;
    if (it->method == M_HEAD) {
        fo_msg_set(msg, "%s: a HEAD request cannot have a body", name);
        return FO_EINVAL;
    }
    if (json_is_string(body)) {
        it->body_len = json_string_length(body);
        it->body = malloc(it->body_len + 1);
        if (it->body == NULL)
            return FO_ENOMEM;
        memcpy(it->body, json_string_value(body), it->body_len + 1);
        return FO_OK;
    }
    it->body = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (it->body == NULL)
        return FO_ENOMEM;
    it->body_len = strlen(it->body);
    it->body_is_json = 1;
    return FO_OK;
}

static fo_err parse_method(struct item_req *it, json_t *m, const char *name, struct fo_msg *msg)
{
    const char *text = plain_string(m);

    if (text == NULL) {
        fo_msg_set(msg, "%s: method must be a string", name);
        return FO_EINVAL;
    }
    if (http_method_parse(text, &it->method))
        return FO_OK;
    fo_msg_set(msg, "%s: method '%.*s' is not one of GET HEAD POST PUT PATCH DELETE OPTIONS",
               name, CLIP(text, 20));
    return FO_EINVAL;
}

static fo_err parse_item_share(struct item_req *it, json_t *obj, const char *name,
                               struct fo_msg *msg) FO_MUST_CHECK;
static fo_err parse_retry(struct item_req *it, json_t *v, const char *name, struct fo_msg *msg);
static fo_err check_retry(const struct item_req *it, size_t index, const struct config *cfg,
                          struct fo_msg *msg);

static fo_err parse_item_object(struct item_req *it, json_t *obj, size_t index, struct fo_msg *msg)
{
    static const char *const known[] = {
        "url",   "id",         "method", "headers", "body",  "timeout_ms",       "coalesce",
        "cache",                                                                 /* share */
        "retry", "depends_on", "run_if", "select",  "group", "response_headers", /* composition */
    };
    json_t *url = json_object_get(obj, "url"), *id = json_object_get(obj, "id"), *v;
    const char *key;
    char name[160];
    fo_err err;

    item_name(name, sizeof(name), index, id && json_is_string(id) ? json_string_value(id) : NULL);
    json_object_foreach (obj, key, v) {
        size_t i;
        for (i = 0; i < FO_ARRAY_LEN(known) && strcmp(key, known[i]) != 0; i++)
            ;
        if (i == FO_ARRAY_LEN(known)) {
            fo_msg_set(msg, "%s: unknown field '%.*s'", name, CLIP(key, 60));
            return FO_EINVAL;
        }
    }
    if (id != NULL) {
        if (!json_is_string(id)) {
            fo_msg_set(msg, "%s: id must be a string", name);
            return FO_EINVAL;
        }
        if (json_string_length(id) > FO_MAX_ID_LEN ||
            strlen(json_string_value(id)) != json_string_length(id)) {
            fo_msg_set(msg, "%s: id is longer than %d bytes or contains NUL", name, FO_MAX_ID_LEN);
            return FO_EINVAL;
        }
        if ((it->id = strdup(json_string_value(id))) == NULL)
            return FO_ENOMEM;
    }
    if (url == NULL || plain_string(url) == NULL) {
        fo_msg_set(msg, "%s: url is required and must be a string without NUL", name);
        return FO_EINVAL;
    }
    if ((v = json_object_get(obj, "method")) != NULL &&
        (err = parse_method(it, v, name, msg)) != FO_OK)
        return err;
    if ((v = json_object_get(obj, "headers")) != NULL &&
        (err = set_headers(it, v, name, msg)) != FO_OK)
        return err;
    if ((v = json_object_get(obj, "body")) != NULL && (err = set_body(it, v, name, msg)) != FO_OK)
        return err;
    if ((v = json_object_get(obj, "timeout_ms")) != NULL && !parse_timeout(v, &it->timeout_ms)) {
        fo_msg_set(msg, "%s: timeout_ms must be a positive whole number of milliseconds", name);
        return FO_EINVAL;
    }
    if ((err = parse_item_share(it, obj, name, msg)) != FO_OK)
        return err;
    if ((v = json_object_get(obj, "retry")) != NULL &&
        (err = parse_retry(it, v, name, msg)) != FO_OK)
        return err;
    if (compose_url_deferred(obj, json_string_value(url)))
        return compose_set_url(it, json_string_value(url));
    return set_url(it, json_string_value(url), index, msg);
}

/* Gives every item without an id its index, then refuses duplicates. */
static fo_err assign_ids(struct batch_req *b, struct fo_msg *msg)
{
    json_t *seen = json_object();
    fo_err err = FO_OK;
    char def[32];

    if (seen == NULL)
        return FO_ENOMEM;
    for (size_t i = 0; i < b->n && err == FO_OK; i++) {
        if (b->items[i].id == NULL) {
            (void)snprintf(def, sizeof(def), "%zu", i);
            if ((b->items[i].id = strdup(def)) == NULL)
                err = FO_ENOMEM;
        }
    }
    for (size_t i = 0; i < b->n && err == FO_OK; i++) {
        json_t *prev = json_object_get(seen, b->items[i].id);
        if (prev != NULL) {
            fo_msg_set(msg, "item %zu: duplicate id \"%.*s\" (item %lld has it too)", i,
                       CLIP(b->items[i].id, 100), (long long)json_integer_value(prev));
            err = FO_EINVAL;
        } else if (json_object_set_new(seen, b->items[i].id, json_integer((json_int_t)i)) != 0) {
            err = FO_ENOMEM;
        }
    }
    json_decref(seen);
    return err;
}

/* An item's id, for bsearch over the batch's ids sorted by strcmp. */
struct id_index {
    const char *id;
    size_t index;
};

static int cmp_id_index(const void *a, const void *b)
{
    return strcmp(((const struct id_index *)a)->id, ((const struct id_index *)b)->id);
}

/* The item whose id is the n bytes at s, or -1. */
static long id_lookup(const struct id_index *ids, size_t count, const char *s, size_t n)
{
    size_t lo = 0, hi = count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strncmp(ids[mid].id, s, n);
        if (c == 0 && ids[mid].id[n] != '\0')
            c = 1;
        if (c == 0)
            return (long)ids[mid].index;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* In text, a "${ID." naming another item than self; its item, or -1. An
 * id may hold dots: every '.' before the closing '}' ends a candidate. */
static long undeclared_ref(const char *text, const struct id_index *ids, size_t count, size_t self)
{
    for (const char *p = strstr(text, "${"); p != NULL; p = strstr(p + 2, "${")) {
        if (p > text && p[-1] == '$')
            continue; /* "$${": the escape of a literal "${" */
        for (const char *q = p + 2; *q != '\0' && *q != '}' && q - p < 2 + 512; q++) {
            if (*q != '.')
                continue;
            long j = id_lookup(ids, count, p + 2, (size_t)(q - p - 2));
            if (j >= 0 && (size_t)j != self)
                return j;
        }
    }
    return -1;
}

/* Whether any item's url, headers or body holds "${". */
static int any_marks(const struct batch_req *b)
{
    for (size_t i = 0; i < b->n; i++) {
        const struct item_req *it = &b->items[i];
        if (strstr(it->url, "${") != NULL || (it->body != NULL && strstr(it->body, "${")))
            return 1;
        for (size_t k = 0; k < it->nheaders; k++) {
            if (strstr(it->headers[k], "${") != NULL)
                return 1;
        }
    }
    return 0;
}

/*
 * An item without depends_on whose url, header values or body hold
 * "${ID." with ID another item of the batch: that reference would be sent
 * as literal text (a '#' in it even cut the URL), so it is refused, naming
 * both items and depends_on. FO_EINVAL, FO_ENOMEM.
 */
static fo_err check_undeclared_refs(struct batch_req *b, struct fo_msg *msg)
{
    struct id_index *ids = NULL;
    char name[160], other[160];
    fo_err err = FO_OK;

    if (!any_marks(b))
        return FO_OK; /* no "${" anywhere: the common case */
    if ((ids = malloc(b->n * sizeof(*ids))) == NULL)
        return FO_ENOMEM;
    for (size_t i = 0; i < b->n; i++)
        ids[i] = (struct id_index){ b->items[i].id, i };
    qsort(ids, b->n, sizeof(*ids), cmp_id_index);
    for (size_t i = 0; i < b->n && err == FO_OK; i++) {
        const struct item_req *it = &b->items[i];
        long j = -1;
        if (it->compose != NULL && it->compose->has_deps)
            continue;
        j = undeclared_ref(it->url, ids, b->n, i);
        for (size_t k = 0; k < it->nheaders && j < 0; k++)
            j = undeclared_ref(it->headers[k], ids, b->n, i);
        if (j < 0 && it->body != NULL)
            j = undeclared_ref(it->body, ids, b->n, i);
        if (j < 0)
            continue;
        const char *id = b->items[j].id;
        item_name(name, sizeof(name), i, it->id);
        item_name(other, sizeof(other), (size_t)j, id);
        if (id[0] == '\0' || strpbrk(id, ".}") != NULL)
            fo_msg_set(msg,
                       "%s: '${%.*s.' names %s, but a reference cannot use an id that is "
                       "empty or holds '.' or '}': give that item another id (to send '${' as "
                       "text, add \"depends_on\": [] and write '$${')",
                       name, CLIP(id, 60), other);
        else
            fo_msg_set(msg,
                       "%s: a reference '${%.*s.' to %s needs that item in depends_on "
                       "(\"depends_on\": [\"%.*s\"]); without it the text is sent as "
                       "written (to send '${' as text, add \"depends_on\": [] and write '$${')",
                       name, CLIP(id, 60), other, CLIP(id, 60));
        err = FO_EINVAL;
    }
    free(ids);
    return err;
}

/* Refuses an empty batch (400) or one over max_batch (413), else allocates. */
static fo_err alloc_items(struct batch_req *b, size_t n, const struct config *cfg,
                          struct fo_msg *msg)
{
    if (n == 0) {
        fo_msg_set(msg, "the batch is empty");
        return FO_EINVAL;
    }
    if (n > (size_t)cfg->max_batch) {
        fo_msg_set(msg, "the batch has %zu items; at most %ld are allowed", n, cfg->max_batch);
        return FO_ETOOBIG;
    }
    b->items = calloc(n, sizeof(*b->items));
    return b->items != NULL ? FO_OK : FO_ENOMEM;
}

static fo_err parse_items(struct batch_req *b, json_t *arr, const struct config *cfg,
                          struct fo_msg *msg)
{
    size_t n = json_array_size(arr);
    fo_err err;

    if ((err = alloc_items(b, n, cfg, msg)) != FO_OK)
        return err;
    for (size_t i = 0; i < n; i++) {
        json_t *el = json_array_get(arr, i);
        const char *url = plain_string(el);
        b->n = i + 1;
        if (url != NULL) {
            err = set_url(&b->items[i], url, i, msg);
        } else if (json_is_object(el)) {
            err = parse_item_object(&b->items[i], el, i, msg);
            if (err == FO_OK)
                err = check_retry(&b->items[i], i, cfg, msg);
            if (err == FO_OK)
                err = compose_item_fields(b, i, el, msg);
        } else {
            fo_msg_set(msg, "item %zu must be a URL string or an item object", i);
            err = FO_EINVAL;
        }
        if (err != FO_OK)
            return err;
    }
    if ((err = assign_ids(b, msg)) != FO_OK)
        return err;
    if ((err = check_undeclared_refs(b, msg)) != FO_OK)
        return err;
    return compose_graph(b, msg);
}

/* The fields a batch object may have (each on a line of its own). */
static const char *const batch_fields[] = {
    "requests", "timeout_ms",      "merge",   "policy",
    "defaults", "max_concurrency", "timings", "merge_arrays",
};

static fo_err parse_batch_fields(struct batch_req *b, json_t *root, size_t nitems,
                                 struct fo_msg *msg) FO_MUST_CHECK;
static fo_err apply_defaults(json_t *root, json_t *requests, struct fo_msg *msg) FO_MUST_CHECK;

static fo_err parse_object_form(struct batch_req *b, json_t *root, const struct config *cfg,
                                struct fo_msg *msg)
{
    json_t *requests = json_object_get(root, "requests"), *v;
    const char *key;
    fo_err err;

    json_object_foreach (root, key, v) {
        size_t i;
        for (i = 0; i < FO_ARRAY_LEN(batch_fields) && strcmp(key, batch_fields[i]) != 0; i++)
            ;
        if (i == FO_ARRAY_LEN(batch_fields)) {
            fo_msg_set(msg, "unknown field '%.*s' in the batch object", CLIP(key, 60));
            return FO_EINVAL;
        }
    }
    if (!json_is_array(requests)) {
        fo_msg_set(msg, "'requests' is required and must be an array");
        return FO_EINVAL;
    }
    if ((err = parse_batch_fields(b, root, json_array_size(requests), msg)) != FO_OK)
        return err;
    if ((err = apply_defaults(root, requests, msg)) != FO_OK)
        return err;
    if ((v = json_object_get(root, "timeout_ms")) != NULL && !parse_timeout(v, &b->timeout_ms)) {
        fo_msg_set(msg, "timeout_ms must be a positive whole number of milliseconds");
        return FO_EINVAL;
    }
    if ((v = json_object_get(root, "merge")) != NULL) {
        const char *m = plain_string(v);
        if (m == NULL)
            m = "";
        if (strcmp(m, "none") == 0) {
            b->merge = MERGE_NONE;
        } else if (strcmp(m, "bodies") == 0) {
            b->merge = MERGE_BODIES;
        } else if (strcmp(m, "deep") == 0) {
            b->merge = MERGE_DEEP;
        } else {
            fo_msg_set(msg, "merge must be \"none\", \"bodies\" or \"deep\"");
            return FO_EINVAL;
        }
    }
    if (b->merge != MERGE_NONE &&
        json_object_get(json_object_get(root, "defaults"), "response_headers") != NULL) {
        fo_msg_set(msg,
                   "defaults: response_headers has no effect with merge \"%s\" (the merged "
                   "document has no place for headers)",
                   b->merge == MERGE_DEEP ? "deep" : "bodies");
        return FO_EINVAL;
    }
    if ((err = compose_batch_fields(b, root, msg)) != FO_OK)
        return err;
    return parse_items(b, requests, cfg, msg);
}

static fo_err parse_json(struct batch_req *b, const char *body, size_t len,
                         const struct config *cfg, struct fo_msg *msg)
{
    json_error_t jerr;
    json_t *root;
    fo_err err;

    char *masked = NULL; /* the text with item JSON bodies masked (taken raw) */
    if (compose_raw_bodies(b, body, len, cfg, &masked) != FO_OK)
        return FO_ENOMEM;
    root = json_loadb(masked != NULL ? masked : body, len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    free(masked);
    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return FO_ENOMEM; /* batch_parse also reads jansson_out_of_memory */
        if (len == 0)
            fo_msg_set(msg, "the body is empty");
        else
            fo_msg_set(msg, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
                       jerr.text);
        return FO_EINVAL;
    }
    if (json_is_array(root)) {
        err = parse_items(b, root, cfg, msg);
    } else if (json_is_object(root)) {
        err = parse_object_form(b, root, cfg, msg);
    } else {
        fo_msg_set(msg, "the body must be a JSON array of items or an object with 'requests'");
        err = FO_EINVAL;
    }
    json_decref(root);
    return err;
}

/* The plain list's tokenizer, the one place that reads its shape: the next
 * URL at or after *p (white space separates; a line whose first
 * non-blank is '#' is a comment). Returns 1 with [*s, *e) set, 0 at end. */
struct plain_scan {
    const char *p, *end;
    int line_start, comment;
};

static int plain_next(struct plain_scan *sc, const char **s, const char **e)
{
    while (sc->p < sc->end) {
        if (*sc->p == '\n') {
            sc->line_start = 1;
            sc->comment = 0;
            sc->p++;
            continue;
        }
        if (isspace((unsigned char)*sc->p)) {
            sc->p++;
            continue;
        }
        if (sc->line_start && *sc->p == '#')
            sc->comment = 1;
        sc->line_start = 0;
        *s = sc->p;
        while (sc->p < sc->end && !isspace((unsigned char)*sc->p))
            sc->p++;
        *e = sc->p;
        if (!sc->comment)
            return 1;
    }
    return 0;
}

static fo_err parse_plain(struct batch_req *b, const char *body, size_t len,
                          const struct config *cfg, struct fo_msg *msg)
{
    struct plain_scan sc = { body, body + len, 1, 0 };
    const char *s, *e;
    size_t n = 0, i = 0;
    fo_err err;

    if (!utf8_valid(body, len) || memchr(body, '\0', len) != NULL) {
        fo_msg_set(msg, "the plain list is not valid UTF-8 text");
        return FO_EINVAL;
    }
    /* Counted first, to refuse 413 before allocating. */
    while (plain_next(&sc, &s, &e))
        n++;
    if ((err = alloc_items(b, n, cfg, msg)) != FO_OK)
        return err;
    sc = (struct plain_scan){ body, body + len, 1, 0 };
    while (plain_next(&sc, &s, &e)) {
        char *url = strndup(s, (size_t)(e - s));
        if (url == NULL)
            return FO_ENOMEM;
        b->n = i + 1;
        err = set_url(&b->items[i], url, i, msg);
        free(url);
        if (err != FO_OK)
            return err;
        i++;
    }
    return assign_ids(b, msg);
}

/* A body whose first byte after white space is '[' or '{' is JSON whatever
 * its Content-Type said (curl -d, urllib and fetch send JSON as form data or
 * text/plain): no plain list can start that way, since no URL does. */
static int looks_like_json(const char *body, size_t len)
{
    size_t i = 0;

    /* JSON's own white space (RFC 8259 section 2): what a JSON parser skips */
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    return i < len && (body[i] == '[' || body[i] == '{');
}

fo_err batch_parse(const char *body, size_t len, int is_json, const struct config *cfg,
                   struct batch_req *out, struct fo_msg *msg)
{
    fo_err err;

    memset(out, 0, sizeof(*out));
    jansson_out_of_memory = 0;
    /* A UTF-8 byte order mark is no part of the batch: skipped, in every form. */
    if (len >= 3 && memcmp(body, "\xef\xbb\xbf", 3) == 0) {
        body += 3;
        len -= 3;
    }
    if (is_json || looks_like_json(body, len))
        err = parse_json(out, body, len, cfg, msg);
    else
        err = parse_plain(out, body, len, cfg, msg);
    if (err == FO_ENOMEM || (err != FO_OK && jansson_out_of_memory)) {
        err = FO_ENOMEM;
        fo_msg_set(msg, "out of memory");
    }
    if (err != FO_OK)
        batch_req_free(out);
    return err;
}

/* ---- v2 batch fields: policy, max_concurrency, timings, defaults ------------ */

/* A JSON whole number (2 and 2.0 alike, not 1.5 nor "2") into *out. */
static int whole_number(const json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = (long long)json_integer_value(v);
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d > -1e15 && d < 1e15) {
            *out = (long long)d;
            return 1;
        }
    }
    return 0;
}

/* "policy": "best_effort" | "fail_fast" | {"min_success": N}, 1 <= N <= nitems. */
static fo_err parse_policy(struct batch_req *b, const json_t *v, size_t nitems, struct fo_msg *msg)
{
    const char *name = plain_string(v);
    const char *key;
    json_t *val;
    long long n;

    if (name != NULL && strcmp(name, "best_effort") == 0) {
        b->policy = POLICY_BEST_EFFORT;
        return FO_OK;
    }
    if (name != NULL && strcmp(name, "fail_fast") == 0) {
        b->policy = POLICY_FAIL_FAST;
        return FO_OK;
    }
    if (!json_is_object(v)) {
        fo_msg_set(msg, "policy must be \"best_effort\", \"fail_fast\" or {\"min_success\": N}");
        return FO_EINVAL;
    }
    json_object_foreach ((json_t *)v, key, val) {
        if (strcmp(key, "min_success") != 0) {
            fo_msg_set(msg, "policy: unknown field '%.*s' (expected min_success)", CLIP(key, 60));
            return FO_EINVAL;
        }
    }
    val = json_object_get(v, "min_success");
    if (val == NULL || !whole_number(val, &n) || n < 1 || (unsigned long long)n > nitems) {
        fo_msg_set(msg,
                   "policy: min_success must be a whole number from 1 to the number of "
                   "items (%zu)",
                   nitems);
        return FO_EINVAL;
    }
    b->policy = POLICY_MIN_SUCCESS;
    b->min_success = (long)n;
    return FO_OK;
}

/* The batch object's v2 fields other than defaults (nitems: the length of
 * its requests array). */
static fo_err parse_batch_fields(struct batch_req *b, json_t *root, size_t nitems,
                                 struct fo_msg *msg)
{
    json_t *v;
    long long n;
    fo_err err;

    if ((v = json_object_get(root, "policy")) != NULL &&
        (err = parse_policy(b, v, nitems, msg)) != FO_OK)
        return err;
    if ((v = json_object_get(root, "max_concurrency")) != NULL) {
        if (!whole_number(v, &n) || n < 1) {
            fo_msg_set(msg, "max_concurrency must be a positive whole number");
            return FO_EINVAL;
        }
        b->max_concurrency = n > LONG_MAX ? LONG_MAX : (long)n;
    }
    if ((v = json_object_get(root, "timings")) != NULL) {
        if (!json_is_boolean(v)) {
            fo_msg_set(msg, "timings must be true or false");
            return FO_EINVAL;
        }
        b->timings = json_is_true(v);
    }
    return FO_OK;
}

/* The fields `defaults` may give (each on a line of its own). */
static const char *const default_fields[] = {
    "headers",
    "timeout_ms",
    "retry",
    "response_headers",
};

/* Checks the values of `defaults` as far as the batch object can (the item
 * parser checks them again on each item). */
static fo_err check_defaults(json_t *defs, struct fo_msg *msg)
{
    const char *key;
    json_t *v;
    long ms;
    fo_err err = FO_OK;

    if (!json_is_object(defs)) {
        fo_msg_set(msg,
                   "defaults must be an object (of headers, timeout_ms, retry, "
                   "response_headers)");
        return FO_EINVAL;
    }
    json_object_foreach (defs, key, v) {
        size_t i;
        for (i = 0; i < FO_ARRAY_LEN(default_fields) && strcmp(key, default_fields[i]) != 0; i++)
            ;
        if (i == FO_ARRAY_LEN(default_fields)) {
            fo_msg_set(msg,
                       "defaults: unknown field '%.*s' (expected headers, timeout_ms, "
                       "retry, response_headers)",
                       CLIP(key, 60));
            return FO_EINVAL;
        }
    }
    if ((v = json_object_get(defs, "headers")) != NULL) {
        struct item_req scratch = { 0 };
        err = set_headers(&scratch, v, "defaults", msg);
        item_free(&scratch);
        if (err != FO_OK)
            return err;
    }
    if ((v = json_object_get(defs, "timeout_ms")) != NULL && !parse_timeout(v, &ms)) {
        fo_msg_set(msg, "defaults: timeout_ms must be a positive whole number of milliseconds");
        return FO_EINVAL;
    }
    if ((v = json_object_get(defs, "response_headers")) != NULL) {
        size_t i;
        json_t *name;
        int ok = json_is_array(v);
        json_array_foreach (v, i, name) {
            ok = ok && plain_string(name) != NULL && header_name_ok(json_string_value(name));
        }
        if (!ok) {
            fo_msg_set(msg, "defaults: response_headers must be an array of header names");
            return FO_EINVAL;
        }
    }
    if ((v = json_object_get(defs, "retry")) != NULL) {
        json_t *r;
        long long n;
        if (!json_is_object(v)) {
            fo_msg_set(msg, "defaults: retry must be an object {\"max\": N, \"backoff_ms\": B}");
            return FO_EINVAL;
        }
        json_object_foreach (v, key, r) {
            if (strcmp(key, "max") != 0 && strcmp(key, "backoff_ms") != 0) {
                fo_msg_set(msg,
                           "defaults: retry: unknown field '%.*s' (expected max, "
                           "backoff_ms)",
                           CLIP(key, 60));
                return FO_EINVAL;
            }
            if (!whole_number(r, &n) || n < 0) {
                fo_msg_set(msg, "defaults: retry: %s must be a whole number >= 0", key);
                return FO_EINVAL;
            }
        }
    }
    return FO_OK;
}

/* Adds to an item's headers object each default header whose name
 * (case-insensitive) the item does not set itself. */
static fo_err merge_headers(json_t *item_headers, json_t *defs)
{
    const char *dkey, *ikey;
    json_t *dval, *ival;

    json_object_foreach (defs, dkey, dval) {
        int own = 0;
        json_object_foreach (item_headers, ikey, ival) {
            own = own || strcasecmp(ikey, dkey) == 0;
        }
        if (!own && json_object_set(item_headers, dkey, dval) != 0)
            return FO_ENOMEM;
    }
    return FO_OK;
}

/* ---- composition: depends_on, run_if, references, select, group,
 * response_headers, merge_arrays; item JSON bodies taken as written ------- */

/* An item with depends_on whose url holds "${": a template, checked in
 * compose_graph (and again once substituted), not here. */
static int compose_url_deferred(json_t *obj, const char *url)
{
    return json_object_get(obj, "depends_on") != NULL && strstr(url, "${") != NULL;
}

static fo_err compose_set_url(struct item_req *it, const char *url)
{
    return (it->url = strdup(url)) ? FO_OK : FO_ENOMEM;
}

static fo_err compose_batch_fields(struct batch_req *b, json_t *root, struct fo_msg *msg)
{
    json_t *v = json_object_get(root, "merge_arrays");
    const char *m;

    if (v == NULL)
        return FO_OK;
    if (b->merge != MERGE_DEEP) {
        fo_msg_set(msg, "merge_arrays has no effect unless merge is \"deep\"");
        return FO_EINVAL;
    }
    m = plain_string(v);
    if (m != NULL && strcmp(m, "concat") == 0) {
        b->merge_concat = 1;
    } else if (m == NULL || strcmp(m, "replace") != 0) {
        fo_msg_set(msg, "merge_arrays must be \"replace\" or \"concat\"");
        return FO_EINVAL;
    }
    return FO_OK;
}

/*
 * Applies the batch's `defaults` to each item, on the JSON itself, before
 * the items are parsed (so every item field's parser sees them as the
 * item's own): a field the item does not give is copied from defaults;
 * headers merge by name, case-insensitively, the item's value winning. A
 * plain URL string item becomes {"url": URL} with the defaults.
 */
static fo_err apply_defaults(json_t *root, json_t *requests, struct fo_msg *msg)
{
    json_t *defs = json_object_get(root, "defaults"), *el, *v;
    const char *key;
    size_t i;
    fo_err err;

    if (defs == NULL)
        return FO_OK;
    if ((err = check_defaults(defs, msg)) != FO_OK)
        return err;
    if (json_object_size(defs) == 0)
        return FO_OK;
    json_array_foreach (requests, i, el) {
        if (json_is_string(el)) {
            json_t *obj = json_object();
            if (obj == NULL || json_object_set(obj, "url", el) != 0 ||
                json_array_set_new(requests, i, obj) != 0)
                return FO_ENOMEM;
            el = obj;
        }
        if (!json_is_object(el))
            continue; /* the item parser says what is wrong */
        json_object_foreach (defs, key, v) {
            json_t *own = json_object_get(el, key);
            if (strcmp(key, "headers") == 0 && json_is_object(own)) {
                if ((err = merge_headers(own, v)) != FO_OK)
                    return err;
            } else if (own == NULL) {
                /* A copy: the item's own headers may be merged into later. */
                json_t *copy = json_deep_copy(v);
                if (copy == NULL || json_object_set_new(el, key, copy) != 0)
                    return FO_ENOMEM;
            }
        }
    }
    return FO_OK;
}

/*
 * Item JSON bodies are sent as written (numbers keep their spelling:
 * 1E+2, 0.1, 1e400): the body is read once with jtree, each item's
 * non-string JSON body span is remembered, and jansson reads a copy in
 * which those spans are masked as `0` (same length, so its error
 * positions stay true). A body jtree does not take (too deep, not JSON)
 * leaves the text as it is (jansson then says what is wrong).
 */
static fo_err compose_raw_bodies(struct batch_req *b, const char *text, size_t len,
                                 const struct config *cfg, char **masked)
{
    struct jt_arena a;
    struct jt_value root, items, el, *body;
    const struct jt_value *arr = NULL;
    size_t pos = 0, n = 0;
    fo_err err;

    *masked = NULL;
    jt_arena_init(&a);
    err = jt_parse(&a, text, len, FO_MAX_JSON_DEPTH, &root);
    if (err != FO_OK)
        goto out;
    if (root.kind == JT_ARRAY) {
        arr = &root;
    } else if (root.kind == JT_OBJECT && (body = jt_get(&root, "requests", 8)) != NULL &&
               body->kind == JT_ARRAY) {
        items = *body;
        arr = &items;
    }
    if (arr == NULL)
        goto out;
    while ((err = jt_array_next(&a, arr, &pos, FO_MAX_JSON_DEPTH, &el)) == FO_OK) {
        if (n >= (size_t)cfg->max_batch)
            break;
        body = jt_get(&el, "body", 4);
        if (body != NULL && body->kind != JT_NULL && body->kind != JT_STRING) {
            if (*masked == NULL && (*masked = malloc(len + 1)) == NULL) {
                err = FO_ENOMEM;
                goto out;
            }
            if (b->raw_span == NULL) {
                memcpy(*masked, text, len);
                (*masked)[len] = '\0';
                b->raw_text = text;
            }
            if (n >= b->nraw_span) {
                /* grows to cover item n; items without a span stay 0 */
                size_t cap = n < 8 ? 16 : 2 * n;
                size_t *sp = realloc(b->raw_span, 2 * cap * sizeof(*sp));
                if (sp == NULL) {
                    err = FO_ENOMEM;
                    goto out;
                }
                memset(sp + 2 * b->nraw_span, 0, 2 * (cap - b->nraw_span) * sizeof(*sp));
                b->raw_span = sp;
                b->nraw_span = cap;
            }
            size_t off = (size_t)(body->raw - text);
            b->raw_span[2 * n] = off;
            b->raw_span[2 * n + 1] = body->len;
            (*masked)[off] = '0';
            memset(*masked + off + 1, ' ', body->len - 1);
        }
        n++;
    }
    err = FO_OK;
out:
    jt_arena_free(&a);
    if (err == FO_ENOMEM) {
        FO_FREE(*masked);
        return FO_ENOMEM;
    }
    return FO_OK;
}

/* ---- share: "coalesce" and "cache" of an item ------------------------------ */

/* Each may only be a boolean; false opts the item out (true is the
 * default: what the configuration says). */
static fo_err parse_item_share(struct item_req *it, json_t *obj, const char *name,
                               struct fo_msg *msg)
{
    static const char *const fields[] = { "coalesce", "cache" };
    int *flags[] = { &it->no_coalesce, &it->no_cache };

    for (size_t i = 0; i < FO_ARRAY_LEN(fields); i++) {
        json_t *v = json_object_get(obj, fields[i]);
        if (v == NULL)
            continue;
        if (!json_is_boolean(v)) {
            fo_msg_set(msg, "%s: %s must be true or false", name, fields[i]);
            return FO_EINVAL;
        }
        *flags[i] = json_is_false(v);
    }
    return FO_OK;
}

/* ---- retries ---------------------------------------------------- */

/* A whole number >= 0 (5 and 5.0 alike), at most max; 0 if not one. */
static int whole_at_most(const json_t *v, long max, long *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= max) {
        *out = (long)json_integer_value(v);
        return 1;
    }
    if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) <= (double)max &&
        json_real_value(v) == floor(json_real_value(v))) {
        *out = (long)json_real_value(v);
        return 1;
    }
    return 0;
}

/* The item's "retry": {"max": N, "backoff_ms": B}, both optional; any
 * other member is a 400 naming it. The item (or defaults, copied into the
 * item before it is parsed) may leave either to the config. */
static fo_err parse_retry(struct item_req *it, json_t *v, const char *name, struct fo_msg *msg)
{
    const char *key;
    json_t *m;

    if (!json_is_object(v)) {
        fo_msg_set(msg, "%s: retry must be an object {\"max\": N, \"backoff_ms\": B}", name);
        return FO_EINVAL;
    }
    json_object_foreach (v, key, m) {
        if (strcmp(key, "max") == 0) {
            if (!whole_at_most(m, 1000000, &it->retry_max)) {
                fo_msg_set(msg, "%s: retry.max must be a whole number >= 0", name);
                return FO_EINVAL;
            }
            it->retry_given |= ITEM_RETRY_MAX;
        } else if (strcmp(key, "backoff_ms") == 0) {
            if (!whole_at_most(m, FO_RETRY_BACKOFF_MAX_MS, &it->retry_backoff_ms)) {
                fo_msg_set(msg, "%s: retry.backoff_ms must be whole milliseconds, 0 to %ld", name,
                           (long)FO_RETRY_BACKOFF_MAX_MS);
                return FO_EINVAL;
            }
            it->retry_given |= ITEM_RETRY_BACKOFF;
        } else {
            fo_msg_set(msg, "%s: unknown field '%.*s' in retry (expected max, backoff_ms)", name,
                       CLIP(key, 60));
            return FO_EINVAL;
        }
    }
    return FO_OK;
}

/* A string array's strings (without NUL), or NULL with msg set. */
static char **string_array(json_t *v, size_t *n, const char *name, const char *field,
                           struct fo_msg *msg, fo_err *err)
{
    char **out;
    size_t k;
    json_t *el;

    *n = 0;
    *err = FO_EINVAL;
    if (!json_is_array(v)) {
        fo_msg_set(msg, "%s: %s must be an array of strings", name, field);
        return NULL;
    }
    if ((out = calloc(json_array_size(v) + 1, sizeof(*out))) == NULL) {
        *err = FO_ENOMEM;
        return NULL;
    }
    json_array_foreach (v, k, el) {
        const char *s = plain_string(el);
        if (s == NULL) {
            fo_msg_set(msg, "%s: %s must be an array of strings", name, field);
            goto fail;
        }
        if ((out[k] = strdup(s)) == NULL) {
            *err = FO_ENOMEM;
            goto fail;
        }
        *n = k + 1;
    }
    *err = FO_OK;
    return out;
fail:
    for (size_t i = 0; i < *n; i++)
        free(out[i]);
    free(out);
    *n = 0;
    return NULL;
}

static fo_err compose_select_field(struct compose_item *c, json_t *v, const char *name,
                                   struct fo_msg *msg)
{
    const char *key;
    json_t *p;

    if (json_is_string(v)) {
        const char *s = plain_string(v);
        if (s == NULL || !tpl_pointer_ok(s, strlen(s))) {
            fo_msg_set(msg, "%s: select '%.*s' is not a JSON Pointer (\"\" or \"/...\")", name,
                       CLIP(s ? s : "", 100));
            return FO_EINVAL;
        }
        c->select = SELECT_POINTER;
        return (c->select_ptr = strdup(s)) ? FO_OK : FO_ENOMEM;
    }
    if (!json_is_object(v) || json_object_size(v) == 0) {
        fo_msg_set(msg,
                   "%s: select must be a JSON Pointer string or a non-empty object of "
                   "name to JSON Pointer",
                   name);
        return FO_EINVAL;
    }
    c->select = SELECT_OBJECT;
    c->sel_names = calloc(json_object_size(v), sizeof(char *));
    c->sel_ptrs = calloc(json_object_size(v), sizeof(char *));
    if (c->sel_names == NULL || c->sel_ptrs == NULL)
        return FO_ENOMEM;
    json_object_foreach (v, key, p) {
        const char *s = plain_string(p);
        if (s == NULL || !tpl_pointer_ok(s, strlen(s))) {
            fo_msg_set(msg, "%s: select '%.*s' must map to a JSON Pointer (\"\" or \"/...\")",
                       name, CLIP(key, 100));
            return FO_EINVAL;
        }
        c->sel_names[c->nsel] = strdup(key);
        c->sel_ptrs[c->nsel] = strdup(s);
        c->nsel++;
        if (c->sel_names[c->nsel - 1] == NULL || c->sel_ptrs[c->nsel - 1] == NULL)
            return FO_ENOMEM;
    }
    return FO_OK;
}

static fo_err compose_item_fields(struct batch_req *b, size_t i, json_t *obj, struct fo_msg *msg)
{
    struct item_req *it = &b->items[i];
    struct compose_item *c;
    char name[160];
    json_t *v;
    fo_err err = FO_OK;

    /* The body as written (see compose_raw_bodies). */
    if (it->body_is_json && b->raw_span != NULL && i < b->nraw_span &&
        b->raw_span[2 * i + 1] > 0) {
        char *raw = strndup(b->raw_text + b->raw_span[2 * i], b->raw_span[2 * i + 1]);
        if (raw == NULL)
            return FO_ENOMEM;
        free(it->body);
        it->body = raw;
        it->body_len = b->raw_span[2 * i + 1];
    }
    if (json_object_get(obj, "depends_on") == NULL && json_object_get(obj, "run_if") == NULL &&
        json_object_get(obj, "select") == NULL && json_object_get(obj, "group") == NULL &&
        json_object_get(obj, "response_headers") == NULL)
        return FO_OK;
    item_name(name, sizeof(name), i, it->id);
    if ((c = it->compose = calloc(1, sizeof(*c))) == NULL)
        return FO_ENOMEM;
    if ((v = json_object_get(obj, "depends_on")) != NULL) {
        c->dep_names = string_array(v, &c->ndep_names, name, "depends_on", msg, &err);
        c->has_deps = 1;
        if (err != FO_OK)
            return err;
    }
    if ((v = json_object_get(obj, "run_if")) != NULL) {
        const char *r = plain_string(v);
        if (r != NULL && strcmp(r, "always") == 0) {
            c->run_always = 1;
        } else if (r == NULL || strcmp(r, "success") != 0) {
            fo_msg_set(msg, "%s: run_if must be \"success\" or \"always\"", name);
            return FO_EINVAL;
        }
    }
    if ((v = json_object_get(obj, "select")) != NULL &&
        (err = compose_select_field(c, v, name, msg)) != FO_OK)
        return err;
    if ((v = json_object_get(obj, "group")) != NULL) {
        if (plain_string(v) == NULL) {
            fo_msg_set(msg, "%s: group must be a string", name);
            return FO_EINVAL;
        }
        if (b->merge != MERGE_DEEP) {
            fo_msg_set(msg, "%s: group has no effect unless the batch's merge is \"deep\"", name);
            return FO_EINVAL;
        }
        if ((c->group = strdup(json_string_value(v))) == NULL)
            return FO_ENOMEM;
    }
    if ((v = json_object_get(obj, "response_headers")) != NULL) {
        size_t n;
        if (b->merge != MERGE_NONE) {
            fo_msg_set(msg,
                       "%s: response_headers has no effect with merge \"%s\" (the merged "
                       "document has no place for headers)",
                       name, b->merge == MERGE_DEEP ? "deep" : "bodies");
            return FO_EINVAL;
        }
        char **names = string_array(v, &n, name, "response_headers", msg, &err);
        if (err != FO_OK)
            return err;
        c->has_resp = 1;
        for (size_t k = 0; k < n; k++) {
            if (err == FO_OK && !header_name_ok(names[k])) {
                fo_msg_set(msg, "%s: response_headers: '%.*s' is not a header name", name,
                           CLIP(names[k], 100));
                err = FO_EINVAL;
            }
            if (err == FO_OK)
                err = compose_response_header(c, names[k]);
            free(names[k]);
        }
        free(names);
    }
    return err;
}

static size_t item_by_id(const struct batch_req *b, const char *id)
{
    for (size_t k = 0; k < b->n; k++) {
        if (strcmp(b->items[k].id, id) == 0)
            return k;
    }
    return SIZE_MAX;
}

/* Checks each reference of t: its id among item i's dependencies; a header
 * it reads is kept by that dependency's fetch. */
static fo_err check_refs(struct batch_req *b, size_t i, const struct tpl *t, const char *name,
                         struct fo_msg *msg)
{
    const struct compose_item *c = b->items[i].compose;

    for (size_t p = 0; p < t->n; p++) {
        const struct tpl_ref *r = &t->parts[p].ref;
        size_t d = SIZE_MAX;
        if (t->parts[p].kind == TPL_LIT)
            continue;
        for (size_t k = 0; k < c->ndeps && d == SIZE_MAX; k++) {
            if (strcmp(b->items[c->deps[k]].id, r->id) == 0)
                d = c->deps[k];
        }
        if (d == SIZE_MAX) {
            for (size_t k = 0; k < c->ndeps; k++) {
                const char *id = b->items[c->deps[k]].id;
                if (strpbrk(id, ".}") != NULL && strncmp(r->text + 2, id, strlen(id)) == 0) {
                    fo_msg_set(msg,
                               "%s: reference %.100s: an id used in a reference cannot hold "
                               "'.' or '}' (\"%.*s\")",
                               name, r->text, CLIP(id, 100));
                    return FO_EINVAL;
                }
            }
            fo_msg_set(msg, "%s: reference %.100s names \"%.*s\", which is not in its depends_on",
                       name, r->text, CLIP(r->id, 100));
            return FO_EINVAL;
        }
        if (r->field == TPL_HEADER) {
            struct compose_item *dc = b->items[d].compose;
            if (dc == NULL && (dc = b->items[d].compose = calloc(1, sizeof(*dc))) == NULL)
                return FO_ENOMEM;
            fo_err err = compose_keep_header(dc, r->arg);
            if (err != FO_OK)
                return err;
        }
    }
    return FO_OK;
}

/* retry.max above the config's max_retries is a 400 naming the item. */
static fo_err check_retry(const struct item_req *it, size_t index, const struct config *cfg,
                          struct fo_msg *msg)
{
    char name[160];

    if (!(it->retry_given & ITEM_RETRY_MAX) || it->retry_max <= cfg->max_retries)
        return FO_OK;
    item_name(name, sizeof(name), index, it->id);
    fo_msg_set(msg,
               "%s: retry max %ld (given on the item or in defaults) is above max_retries (%ld)",
               name, it->retry_max, cfg->max_retries);
    return FO_EINVAL;
}

/* The url template with each reference as "0", checked as a url (a whole-
 * url reference is checked once substituted). */
static fo_err check_url_template(struct item_req *it, const struct tpl *t, const char *name,
                                 struct fo_msg *msg)
{
    struct buf u;
    struct fo_msg why;
    fo_err err = FO_OK;

    if (tpl_is_one_ref(t))
        return FO_OK;
    buf_init(&u, 0);
    for (size_t p = 0; p < t->n && err == FO_OK; p++)
        err = t->parts[p].kind == TPL_LIT ? buf_append(&u, t->parts[p].lit, t->parts[p].lit_len)
                                          : buf_putc(&u, '0');
    if (err == FO_OK && u.data != NULL) {
        err = url_check(u.data, t->nrefs == 0 && it->hostkey == NULL ? &it->hostkey : NULL, &why);
        if (err == FO_EINVAL)
            fo_msg_set(msg, "%s: %s", name, why.text);
    }
    buf_free(&u);
    return err;
}

/* Parses item i's templates and resolves its depends_on names. */
static fo_err compose_item_graph(struct batch_req *b, size_t i, struct fo_msg *msg)
{
    struct item_req *it = &b->items[i];
    struct compose_item *c = it->compose;
    struct fo_msg why;
    char name[160];
    fo_err err = FO_OK;

    item_name(name, sizeof(name), i, it->id);
    c->deps = calloc(c->ndep_names + 1, sizeof(*c->deps));
    for (size_t k = 0; c->deps != NULL && k < c->ndep_names && err == FO_OK; k++) {
        size_t d = item_by_id(b, c->dep_names[k]), m;
        if (d == SIZE_MAX) {
            fo_msg_set(msg, "%s: depends_on names \"%.*s\", which is not an item of the batch",
                       name, CLIP(c->dep_names[k], 100));
            err = FO_EINVAL;
        } else if (d == i) {
            fo_msg_set(msg, "%s: depends on itself", name);
            err = FO_EINVAL;
        } else {
            for (m = 0; m < c->ndeps && c->deps[m] != d; m++)
                ;
            if (m == c->ndeps)
                c->deps[c->ndeps++] = d;
        }
    }
    if (c->deps == NULL)
        return FO_ENOMEM;
    if (err != FO_OK)
        return err;
    /* The templates: url, header values, body. */
    if ((err = tpl_parse(it->url, strlen(it->url), &c->url, &why)) != FO_OK)
        goto bad;
    if ((err = check_refs(b, i, &c->url, name, msg)) != FO_OK ||
        (err = check_url_template(it, &c->url, name, msg)) != FO_OK)
        return err;
    if (it->nheaders > 0 && (c->hdr = calloc(it->nheaders, sizeof(*c->hdr))) == NULL)
        return FO_ENOMEM;
    for (size_t k = 0; k < it->nheaders; k++) {
        const char *line = it->headers[k], *val = line + strcspn(line, ":;");
        val += *val == ':' ? 2 : strlen(val);
        c->nhdr = k + 1;
        if ((err = tpl_parse(val, strlen(val), &c->hdr[k], &why)) != FO_OK)
            goto bad;
        if ((err = check_refs(b, i, &c->hdr[k], name, msg)) != FO_OK)
            return err;
    }
    if (it->body != NULL) {
        err = it->body_is_json ? tpl_parse_json(it->body, it->body_len, &c->body, &why)
                               : tpl_parse(it->body, it->body_len, &c->body, &why);
        if (err != FO_OK)
            goto bad;
        if ((err = check_refs(b, i, &c->body, name, msg)) != FO_OK)
            return err;
    }
    return FO_OK;
bad:
    if (err == FO_EINVAL) {
        fo_msg_set(msg, "%s: %s", name, why.text);
        for (size_t k = 0; k < c->ndeps; k++) {
            const char *id = b->items[c->deps[k]].id;
            if (strpbrk(id, ".}") != NULL)
                fo_msg_set(msg,
                           "%s: %s; an id used in a reference cannot hold '.' or '}' "
                           "(\"%.*s\")",
                           name, why.text, CLIP(id, 100));
        }
    }
    return err;
}

/* A cycle among the items not yet ordered: walk dependencies from one of
 * them until an item repeats; that item is on a cycle. */
static size_t cycle_member(const struct batch_req *b, const size_t *indeg, size_t start)
{
    size_t cur = start;

    for (size_t step = 0; step < b->n; step++) {
        const struct compose_item *c = b->items[cur].compose;
        for (size_t k = 0; k < c->ndeps; k++) {
            if (indeg[c->deps[k]] > 0) {
                cur = c->deps[k];
                break;
            }
        }
    }
    return cur;
}

static fo_err compose_graph(struct batch_req *b, struct fo_msg *msg)
{
    size_t ndeps = 0, done = 0, *left = NULL, *order = NULL, head = 0;
    char name[160];
    fo_err err = FO_OK;

    FO_FREE(b->raw_span);
    b->nraw_span = 0;
    b->raw_text = NULL;
    for (size_t i = 0; i < b->n && err == FO_OK; i++) {
        struct compose_item *c = b->items[i].compose;
        if (c != NULL && c->has_deps)
            err = compose_item_graph(b, i, msg);
    }
    for (size_t i = 0; i < b->n && err == FO_OK; i++)
        ndeps += b->items[i].compose != NULL ? b->items[i].compose->ndeps : 0;
    if (err != FO_OK || ndeps == 0)
        return err;
    /* Cycles: Kahn's order over "i waits for deps"; what stays is cyclic. */
    left = calloc(b->n, sizeof(*left));
    order = calloc(b->n, sizeof(*order));
    b->dep_start = calloc(b->n + 1, sizeof(*b->dep_start));
    b->dep_list = calloc(ndeps, sizeof(*b->dep_list));
    if (left == NULL || order == NULL || b->dep_start == NULL || b->dep_list == NULL) {
        err = FO_ENOMEM;
        goto out;
    }
    for (size_t i = 0, at = 0; i < b->n; i++) {
        const struct compose_item *c = b->items[i].compose;
        b->dep_start[i] = (uint32_t)at;
        for (size_t k = 0; c != NULL && k < c->ndeps; k++) {
            b->dep_list[at++] = (uint32_t)c->deps[k];
            b->items[c->deps[k]].has_dependants = 1;
        }
        left[i] = c != NULL ? c->ndeps : 0;
        if (left[i] == 0)
            order[done++] = i;
        b->dep_start[i + 1] = (uint32_t)at;
    }
    while (head < done) {
        size_t d = order[head++];
        for (size_t i = 0; i < b->n; i++) {
            const struct compose_item *c = b->items[i].compose;
            for (size_t k = 0; c != NULL && left[i] > 0 && k < c->ndeps; k++) {
                if (c->deps[k] == d && --left[i] == 0)
                    order[done++] = i;
            }
        }
    }
    if (done < b->n) {
        size_t i = 0;
        while (left[i] == 0)
            i++;
        i = cycle_member(b, left, i);
        item_name(name, sizeof(name), i, b->items[i].id);
        fo_msg_set(msg, "%s: its depends_on makes a cycle", name);
        err = FO_EINVAL;
    }
out:
    free(left);
    free(order);
    return err;
}
