/*
 * fuzz_select.c - compose_select (select) and jt_pointer over any body.
 *
 * Input: a JSON Pointer up to the first '\n' (at most 255 bytes; none: ""),
 * then the upstream body (a JSON body as the worker would keep it: used
 * only when json_valid accepts it, else the item's body is "text").
 *
 * Checks: an ok JSON item with a string select either keeps status 200 and
 * gets exactly the span jt_pointer names (and that span is valid JSON), or
 * fails select_failed with no body exactly when jt_pointer names nothing
 * (or the pointer is not one); the object form {"p": POINTER, "w": ""} is
 * always valid JSON whose "w" is the whole body; a text body is always
 * select_failed; a non-2xx result is left as it was.
 */
#include <string.h>

#include "compose.h"
#include "encode.h"
#include "fuzz_common.h"
#include "jtree.h"

static struct result json_result(const char *body, size_t len, int status)
{
    struct result r = { .status = status, .enc = BODY_JSON, .body = malloc(len + 1), .body_len = len };

    FUZZ_ASSERT(r.body != NULL);
    memcpy(r.body, body, len);
    r.body[len] = '\0';
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data, *nl = memchr(in, '\n', size < 256 ? size : 256);
    char ptr[257];
    const char *body;
    size_t plen, blen;

    if (size > 65536)
        return 0;
    plen = nl != NULL ? (size_t)(nl - in) : 0;
    memcpy(ptr, in, plen);
    ptr[plen] = '\0';
    body = nl != NULL ? nl + 1 : in;
    blen = size - (size_t)(body - in);
    if (memchr(ptr, '\0', plen) != NULL)
        return 0;

    int is_json = json_valid(body, blen, FO_MAX_JSON_DEPTH, NULL, NULL);
    struct compose_item c = { .select = SELECT_POINTER, .select_ptr = ptr };
    struct item_req it = { .compose = &c };
    struct result r;

    if (!is_json) {
        r = (struct result){ .status = 200, .enc = BODY_TEXT, .body = strdup("\"t\""), .body_len = 3 };
        compose_select(&it, &r);
        FUZZ_ASSERT(r.error == ERR_SELECT_FAILED && r.body == NULL && r.status == 200);
        result_clear(&r);
        return 0;
    }
    /* what jt_pointer names */
    struct jt_arena a;
    struct jt_value root, v;
    jt_arena_init(&a);
    FUZZ_ASSERT(jt_parse(&a, body, blen, FO_MAX_JSON_DEPTH, &root) == FO_OK);
    fo_err perr = jt_pointer(&a, &root, ptr, plen, FO_MAX_JSON_DEPTH, &v);
    FUZZ_ASSERT(perr == FO_OK || perr == FO_ENOTFOUND || perr == FO_EINVAL);
    if (perr == FO_OK)
        FUZZ_ASSERT(json_valid(v.raw, v.len, FO_MAX_JSON_DEPTH, NULL, NULL));

    r = json_result(body, blen, 200);
    compose_select(&it, &r);
    if (perr == FO_OK) {
        FUZZ_ASSERT(r.error == ERR_NONE && r.status == 200 && r.enc == BODY_JSON);
        struct buf w;
        buf_init(&w, 0);
        FUZZ_ASSERT(jt_write(&w, &v) == FO_OK);
        FUZZ_ASSERT(r.body_len == w.len && memcmp(r.body, w.data, w.len) == 0);
        buf_free(&w);
    } else {
        FUZZ_ASSERT(r.error == ERR_SELECT_FAILED && r.body == NULL && r.status == 200);
    }
    result_clear(&r);

    /* object form */
    char *names[] = { "p", "w" }, *ptrs[] = { ptr, "" };
    struct compose_item co = { .select = SELECT_OBJECT, .sel_names = names, .sel_ptrs = ptrs, .nsel = 2 };
    struct item_req ito = { .compose = &co };
    r = json_result(body, blen, 201);
    compose_select(&ito, &r);
    FUZZ_ASSERT(r.error == ERR_NONE);
    FUZZ_ASSERT(json_valid(r.body, r.body_len, FO_MAX_JSON_DEPTH + 1, NULL, NULL));
    struct jt_value sel, *wv;
    FUZZ_ASSERT(jt_parse(&a, r.body, r.body_len, FO_MAX_JSON_DEPTH + 1, &sel) == FO_OK);
    wv = jt_get(&sel, "w", 1);
    FUZZ_ASSERT(wv != NULL && wv->kind == root.kind);
    result_clear(&r);

    /* not ok: untouched */
    r = json_result(body, blen, 404);
    compose_select(&it, &r);
    FUZZ_ASSERT(r.error == ERR_NONE && r.body_len == blen && memcmp(r.body, body, blen) == 0);
    result_clear(&r);
    jt_arena_free(&a);
    return 0;
}
