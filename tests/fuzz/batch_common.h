/*
 * batch_common.h - the body of fuzz_batch_json and fuzz_batch_plain: one
 * batch_parse call under a fixed configuration, then every invariant of a
 * parsed batch (or of a refusal) is checked.
 *
 * The configuration is built once (LLVMFuzzerInitialize) with a small
 * max_batch, so the 413 path is reachable with small inputs.
 */
#ifndef FUZZ_BATCH_COMMON_H
#define FUZZ_BATCH_COMMON_H

#include <curl/curl.h>
#include <string.h>
#include <strings.h>

#include "batch.h"
#include "url.h"
#include "compose.h"
#include "fuzz_common.h"

#define FUZZ_MAX_BATCH "16"

static struct config *fuzz_cfg;
/* Outcomes, printed at exit when FUZZ_STATS is set (is the corpus reaching the accept path?). */
static unsigned long n_ok, n_einval, n_etoobig;

static void print_stats(void)
{
    if (getenv("FUZZ_STATS") != NULL)
        fprintf(stderr, "batch_parse: %lu accepted, %lu 400, %lu 413\n", n_ok, n_einval,
                n_etoobig);
}

static void fuzz_cfg_free(void)
{
    config_unref(fuzz_cfg);
    fuzz_cfg = NULL;
    curl_global_cleanup();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const struct config_override ov[] = {
        { "max_batch", FUZZ_MAX_BATCH },
    };
    struct fo_msg msg = { "" };

    (void)argc;
    (void)argv;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        abort();
    if (config_build(NULL, ov, FO_ARRAY_LEN(ov), &fuzz_cfg, &msg) != FO_OK) {
        fprintf(stderr, "config_build: %s\n", msg.text);
        abort();
    }
    atexit(fuzz_cfg_free);
    atexit(print_stats);
    return 0;
}

/* Invariants of one parsed item. */
static void check_item(const struct item_req *it, int is_json)
{
    struct fo_msg msg = { "" };
    char *hostkey = NULL;

    FUZZ_ASSERT(it->id != NULL && it->url != NULL);
    FUZZ_ASSERT(strlen(it->id) <= FO_MAX_ID_LEN);
    /* composition: a url template is checked once substituted */
    if (it->compose != NULL && it->compose->has_deps && strstr(it->url, "${") != NULL)
        return;
    FUZZ_ASSERT(it->hostkey != NULL);
    /* The URL is accepted again, with the same host key. */
    FUZZ_ASSERTF(url_check(it->url, &hostkey, &msg) == FO_OK, "url '%s': %s", it->url,
                 msg.text);
    FUZZ_ASSERTF(strcmp(hostkey, it->hostkey) == 0, "hostkey %s vs %s", hostkey, it->hostkey);
    free(hostkey);
    FUZZ_ASSERT(strlen(it->url) <= FO_MAX_URL_LEN);
    FUZZ_ASSERT(strncasecmp(it->url, "http", 4) == 0);
    FUZZ_ASSERT(strchr(it->hostkey, ':') != NULL);
    FUZZ_ASSERT(it->method >= M_GET && it->method <= M_OPTIONS);
    FUZZ_ASSERT(it->timeout_ms >= 0);
    FUZZ_ASSERT(it->nheaders <= FO_MAX_ITEM_HEADERS);
    for (size_t h = 0; h < it->nheaders; h++) {
        const char *line = it->headers[h];
        FUZZ_ASSERT(line != NULL);
        /* No header can smuggle a second header line or framing. */
        FUZZ_ASSERTF(strpbrk(line, "\r\n") == NULL, "header '%s'", line);
        FUZZ_ASSERT(strncasecmp(line, "content-length", 14) != 0 ||
                    (line[14] != ':' && line[14] != ';'));
        FUZZ_ASSERT(strncasecmp(line, "transfer-encoding", 17) != 0 ||
                    (line[17] != ':' && line[17] != ';'));
        FUZZ_ASSERT(line[0] != ':' && line[0] != ';' && line[0] != ' ');
    }
    if (it->body != NULL) {
        FUZZ_ASSERT(it->method != M_HEAD);
        FUZZ_ASSERT(it->body[it->body_len] == '\0');
    } else {
        FUZZ_ASSERT(it->body_len == 0 && !it->body_is_json);
    }
    if (!is_json) {
        /* A plain list carries URLs only. */
        FUZZ_ASSERT(it->method == M_GET && it->nheaders == 0 && it->body == NULL &&
                    it->timeout_ms == 0);
    }
}

/* batch_parse reads a body whose first byte after a byte order mark and
 * white space is '[' or '{' as JSON whatever the Content-Type said: the
 * invariants are then a JSON batch's. */
static int read_as_json(const uint8_t *d, size_t n)
{
    size_t i = n >= 3 && memcmp(d, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;

    while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'))
        i++;
    return i < n && (d[i] == '[' || d[i] == '{');
}

static void fuzz_batch(const uint8_t *data, size_t size, int json_type)
{
    struct batch_req b;
    struct fo_msg msg = { "" };
    int is_json = json_type || read_as_json(data, size);
    fo_err err;

    memset(&b, 0xa5, sizeof(b));   /* batch_parse must fill it whatever happens */
    err = batch_parse((const char *)data, size, json_type, fuzz_cfg, &b, &msg);
    n_ok += err == FO_OK;
    n_einval += err == FO_EINVAL;
    n_etoobig += err == FO_ETOOBIG;
    if (err != FO_OK) {
        FUZZ_ASSERTF(err == FO_EINVAL || err == FO_ETOOBIG, "%s", fo_strerror(err));
        FUZZ_ASSERT(msg.text[0] != '\0');
        FUZZ_ASSERT(b.n == 0 && b.items == NULL);
        batch_req_free(&b);
        return;
    }
    FUZZ_ASSERT(b.n >= 1 && b.n <= (size_t)fuzz_cfg->max_batch);
    FUZZ_ASSERT(b.items != NULL);
    FUZZ_ASSERT(b.merge == MERGE_NONE || b.merge == MERGE_BODIES || b.merge == MERGE_DEEP);
    FUZZ_ASSERT(b.timeout_ms >= 0);
    if (!is_json)
        FUZZ_ASSERT(b.merge == MERGE_NONE && b.timeout_ms == 0);
    for (size_t i = 0; i < b.n; i++) {
        check_item(&b.items[i], is_json);
        if (!is_json) {
            /* Plain-list items are named by their index. */
            char want[32];
            (void)snprintf(want, sizeof(want), "%zu", i);
            FUZZ_ASSERT(strcmp(b.items[i].id, want) == 0);
        }
        for (size_t j = 0; j < i; j++)
            FUZZ_ASSERTF(strcmp(b.items[i].id, b.items[j].id) != 0, "duplicate id '%s'",
                         b.items[i].id);
    }
    batch_req_free(&b);
    FUZZ_ASSERT(b.n == 0 && b.items == NULL);
}

#endif
