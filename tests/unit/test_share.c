/*
 * test_share.c - the share module (coalescing table and cache) and the
 * share configuration keys (inject_header, sensitive_headers). No time is
 * waited for: the cache is given its "now" explicitly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"
#include "share.h"

static struct result answer(int status, const char *body)
{
    struct result r = { 0 };

    r.status = status;
    r.content_type = strdup("application/json");
    r.body = strdup(body);
    r.body_len = strlen(body);
    r.enc = BODY_JSON;
    r.cc_max_age = -1;
    return r;
}

static void test_key(void)
{
    const char *h1[] = { "X-B: 2", "X-A: 1", "traceparent: 00-aa-bb-01" };
    const char *h2[] = { "X-A: 1", "X-B: 2" };
    struct fetch_req a = { .url = "http://x/y", .method = M_GET, .headers = h1, .nheaders = 3 };
    struct fetch_req b = { .url = "http://x/y", .method = M_GET, .headers = h2, .nheaders = 2 };
    char *ka = NULL, *kb = NULL, *kc = NULL;

    CHECK_EQ_INT(share_key(&a, 1, &ka), FO_OK);
    CHECK_EQ_INT(share_key(&b, 1, &kb), FO_OK);
    CHECK(ka != NULL && kb != NULL && strcmp(ka, kb) == 0); /* order and traceparent ignored */
    b.method = M_HEAD;
    CHECK_EQ_INT(share_key(&b, 1, &kc), FO_OK);
    CHECK(kc != NULL && strcmp(ka, kc) != 0);
    free(kc);
    kc = NULL;
    CHECK_EQ_INT(share_key(&a, 2, &kc), FO_OK); /* another configuration */
    CHECK(kc != NULL && strcmp(ka, kc) != 0);
    free(kc);
    kc = (char *)1;
    b.method = M_POST;
    CHECK_EQ_INT(share_key(&b, 1, &kc), FO_OK);
    CHECK(kc == NULL); /* never shared */
    b.method = M_GET;
    b.body = "x";
    kc = (char *)1;
    CHECK_EQ_INT(share_key(&b, 1, &kc), FO_OK);
    CHECK(kc == NULL);
    free(ka);
    free(kb);
}

static void test_cache_ttl_and_control(void)
{
    struct result r = answer(200, "{\"a\":1}"), got;

    share_cache_clear();
    share_cache_put("k1", &r, 1000, 500, 1 << 20);
    CHECK(share_cache_get("k1", 1000 + 499999, &got));
    CHECK_STR(got.body, "{\"a\":1}");
    CHECK_EQ_INT(got.status, 200);
    result_clear(&got);
    CHECK(!share_cache_get("k1", 1000 + 500000, &got)); /* expired */
    /* max-age shortens; no-store is not kept; only 200 */
    r.cc_max_age = 1;
    share_cache_put("k2", &r, 0, 30000, 1 << 20);
    CHECK(share_cache_fresh("k2", 999999));
    CHECK(!share_cache_fresh("k2", 1000000));
    r.cc_max_age = -1;
    r.cc_no_store = 1;
    share_cache_put("k3", &r, 0, 30000, 1 << 20);
    CHECK(!share_cache_fresh("k3", 1));
    r.cc_no_store = 0;
    r.status = 201;
    share_cache_put("k4", &r, 0, 30000, 1 << 20);
    CHECK(!share_cache_fresh("k4", 1));
    result_clear(&r);
    share_cache_clear();
}

static void test_cache_lru(void)
{
    char body[1000];
    struct result r, got;

    memset(body, 'a', sizeof(body) - 1);
    body[0] = '"';
    body[sizeof(body) - 2] = '"';
    body[sizeof(body) - 1] = '\0';
    r = answer(200, body);
    share_cache_clear();
    /* room for 3 entries of ~1.2 KB (body and bookkeeping), not 4 */
    share_cache_put("a", &r, 0, 60000, 4300);
    share_cache_put("b", &r, 0, 60000, 4300);
    share_cache_put("c", &r, 0, 60000, 4300);
    CHECK(share_cache_fresh("a", 1));
    CHECK(share_cache_get("a", 1, &got)); /* a is now the most recent */
    result_clear(&got);
    share_cache_put("d", &r, 0, 60000, 4300);
    CHECK(share_cache_fresh("a", 1));
    CHECK(!share_cache_fresh("b", 1)); /* the least recently used left */
    CHECK(share_cache_fresh("d", 1));
    share_cache_put("huge", &r, 0, 60000, 500); /* larger than the bound: not kept */
    CHECK(!share_cache_fresh("huge", 1));
    result_clear(&r);
    share_cache_clear();
}

static void no_wake(void *arg)
{
    (void)arg;
}

static void test_coalesce_roles(void)
{
    struct share_slot lead = { 0 }, ride = { 0 }, other = { 0 };
    const _Atomic int *stop = NULL, *stop2 = NULL;
    enum share_role role;
    _Atomic int job_stop = 0;
    struct result r = answer(200, "1"), got;

    CHECK_EQ_INT(share_join(strdup("K"), &lead, no_wake, NULL, &stop, &role), FO_OK);
    CHECK_EQ_INT(role, SHARE_LEAD);
    CHECK_EQ_INT(share_join(strdup("K"), &ride, no_wake, NULL, &stop2, &role), FO_OK);
    CHECK_EQ_INT(role, SHARE_RIDE);
    /* the leader's batch goes away: the fetch goes on for the rider */
    share_wake(&lead);
    CHECK(stop != NULL && atomic_load(stop) == 0);
    share_lead_done(&lead, &r, 0);
    CHECK_EQ_INT(share_ride(&ride, INT64_MAX, &job_stop, no_wake, NULL, &stop2, &got), 1);
    CHECK_STR(got.body, "1");
    result_clear(&got);
    /* a finished fetch is no longer joined */
    CHECK_EQ_INT(share_join(strdup("K"), &other, no_wake, NULL, &stop, &role), FO_OK);
    CHECK_EQ_INT(role, SHARE_LEAD);
    /* its batch gone and nobody riding: the fetch is told to stop */
    share_wake(&other);
    CHECK(atomic_load(stop) == 1);
    share_lead_done(&other, &r, 0);
    /* handover: the leader timed out with a rider waiting */
    CHECK_EQ_INT(share_join(strdup("H"), &lead, no_wake, NULL, &stop, &role), FO_OK);
    CHECK_EQ_INT(share_join(strdup("H"), &ride, no_wake, NULL, &stop2, &role), FO_OK);
    share_lead_done(&lead, &r, 1);
    CHECK_EQ_INT(share_ride(&ride, INT64_MAX, &job_stop, no_wake, NULL, &stop2, &got), 2);
    CHECK(ride.lead != NULL);
    share_lead_done(&ride, &r, 0);
    result_clear(&r);
}

static void test_inject_config(void)
{
    char path[] = "/tmp/fo-share-test-XXXXXX", fpath[] = "/tmp/fo-share-tok-XXXXXX";
    int fd = mkstemp(fpath);
    FILE *f;
    struct config *cfg = NULL;
    struct fo_msg msg = { "" };
    const struct inject_rule *r;

    CHECK(fd >= 0 && write(fd, "Bearer abc\n", 11) == 11);
    close(fd);
    fd = mkstemp(path);
    CHECK(fd >= 0 && (f = fdopen(fd, "w")) != NULL);
    fprintf(f,
            "inject_header = HTTP://Api.Example.COM:80/v1/ X-Key: k1\n"
            "inject_header = http://api.example.com/v1/deep/ X-Key: k2\n"
            "inject_header = https://b.example Authorization: @%s\n"
            "sensitive_headers = X-One, X-Two\n",
            fpath);
    fclose(f);
    CHECK_EQ_INT(config_build(path, NULL, 0, &cfg, &msg), FO_OK);
    if (cfg != NULL) {
        CHECK_EQ_INT(cfg->ninject, 3);
        r = config_inject_match(cfg->inject, cfg->ninject, "http://api.example.com:80", "/v1/x");
        CHECK(r != NULL && strcmp(r->line, "X-Key: k1") == 0);
        r = config_inject_match(cfg->inject, cfg->ninject, "http://api.example.com:80",
                                "/v1/deep/x");
        CHECK(r != NULL && strcmp(r->line, "X-Key: k2") == 0); /* longest wins */
        CHECK(config_inject_match(cfg->inject, cfg->ninject, "http://api.example.com:80",
                                  "/v2") == NULL);
        CHECK(config_inject_match(cfg->inject, cfg->ninject, "http://api.example.com:8080",
                                  "/v1/x") == NULL);
        r = config_inject_match(cfg->inject, cfg->ninject, "https://b.example:443", "/any");
        CHECK(r != NULL && strcmp(r->line, "Authorization: Bearer abc") == 0);
        CHECK_EQ_INT(cfg->sensitive_headers.n, 2);
        config_unref(cfg);
    }
    /* an unreadable file is a configuration error */
    unlink(fpath);
    cfg = NULL;
    CHECK(config_build(path, NULL, 0, &cfg, &msg) == FO_EINVAL);
    CHECK(strstr(msg.text, "inject_header") != NULL);
    unlink(path);
    /* malformed rules */
    static const char *const bad[] = { "nospace", "ftp://x/ X: y", "http://x/ X y",
                                       "http://x/ Bad Name: y", "http://x/ X:" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config_override ov = { "inject_header", bad[i] };
        cfg = NULL;
        CHECK_CASE(config_build(NULL, &ov, 1, &cfg, &msg) == FO_EINVAL, bad[i]);
        config_unref(cfg);
    }
}

static const struct unit_test tests[] = {
    { "key", test_key },
    { "cache_ttl_and_control", test_cache_ttl_and_control },
    { "cache_lru", test_cache_lru },
    { "coalesce_roles", test_coalesce_roles },
    { "inject_config", test_inject_config },
};

UNIT_SUITE(share_suite, "share", tests);
