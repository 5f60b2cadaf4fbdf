/*
 * test_alloc.c - every operation of the pure modules, with the 1st, 2nd,
 * 3rd ... allocation failing in turn, until one run needs no failure.
 *
 * Each run must end in a clean result (success, or FO_ENOMEM / an error
 * whose message says so) and, under AddressSanitizer (make check-asan),
 * leak nothing and touch no freed memory. Ends with "N passed, N failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc_shim.h"
#include "answer.h"
#include "batch.h"
#include "compose.h"
#include "config.h"
#include "encode.h"
#include "job.h"
#include "policy.h"
#include "result.h"

#define MAX_RUNS 20000
#define THREE "[\"http://a/1\", \"http://a/2\", \"http://a/3\"]"

static struct config *cfg;        /* built once, before any failure is injected */
static int failures;              /* operations that misbehaved */

/* Each operation returns 0 when it worked, 1 when it failed cleanly,
 * -1 when it misbehaved (a wrong error: not out-of-memory). */

static int op_batch(const char *body, int json)
{
    struct batch_req b;
    struct fo_msg msg;
    fo_err err = batch_parse(body, strlen(body), json, cfg, &b, &msg);

    if (err == FO_OK) {
        batch_req_free(&b);
        return 0;
    }
    if (err == FO_ENOMEM || strstr(msg.text, "memory"))
        return 1;
    printf("    batch_parse: %s\n", msg.text);
    return -1;
}

static int op_batch_json(void)
{
    return op_batch("{\"timeout_ms\": 5000, \"merge\": \"deep\", \"requests\": ["
                    "\"http://127.0.0.1:1/a\", {\"url\": \"http://127.0.0.1:1/b\", \"id\": \"x\","
                    " \"method\": \"POST\", \"headers\": {\"X-A\": \"1\", \"X-B\": \"\"},"
                    " \"body\": {\"k\": [1, 2, {\"z\": null}]}, \"timeout_ms\": 100},"
                    " {\"url\": \"https://[::1]:8443/c?q=1\", \"body\": \"text\"}]}", 1);
}

/* composition: depends_on, references, select, group (response_headers:
 * op_batch_headers, since it has no place in a deep merge) */
static int op_batch_compose(void)
{
    return op_batch("{\"merge\": \"deep\", \"merge_arrays\": \"concat\", \"requests\": ["
                    "{\"url\": \"http://127.0.0.1:1/a\", \"id\": \"a\","
                    " \"select\": {\"p\": \"/x\", \"q\": \"/y/0\"}, \"group\": \"g\"},"
                    " {\"url\": \"${a.body#/next}\", \"id\": \"b\", \"depends_on\": [\"a\"],"
                    " \"headers\": {\"X\": \"t=${a.headers.x-t} $${l}\"}, \"method\": \"POST\","
                    " \"body\": {\"n\": \"${a.status}\", \"m\": \"x${a.body#/m}\", \"k\": 1E+2}},"
                    " {\"url\": \"http://127.0.0.1:1/c?q=${b.body}\", \"depends_on\": [\"b\", \"a\"],"
                    " \"run_if\": \"always\", \"body\": \"${b.status}\", \"method\": \"PUT\","
                    " \"select\": \"/z\"}]}", 1);
}

/* response_headers, and a reference to another item's header */
static int op_batch_headers(void)
{
    return op_batch("{\"requests\": ["
                    "{\"url\": \"http://127.0.0.1:1/a\", \"id\": \"a\", \"response_headers\": [\"X-T\"]},"
                    " {\"url\": \"http://127.0.0.1:1/b\", \"depends_on\": [\"a\"],"
                    " \"headers\": {\"X\": \"t=${a.headers.x-t}\"}}]}", 1);
}

/* compose_prepare (references resolved) and compose_select on finished results */
static int op_compose_run(void)
{
    static const char body[] =
        "[{\"url\": \"http://127.0.0.1:1/a\", \"id\": \"a\", \"select\": {\"p\": \"/next\"}},"
        " {\"url\": \"${a.body#/next}\", \"id\": \"b\", \"depends_on\": [\"a\"],"
        " \"headers\": {\"X\": \"t=${a.body#/n}\"}, \"method\": \"POST\","
        " \"body\": {\"n\": \"${a.status}\", \"m\": \"x${a.body#/n}\"}}]";
    static const char doc[] = "{\"next\": \"http://127.0.0.1:1/n\", \"n\": [1, 2]}";
    struct batch_req b;
    struct fo_msg msg;
    struct result res[2] = { 0 }, out = { 0 };
    struct compose_run run;
    int rc = 0, r;

    if (batch_parse(body, strlen(body), 1, cfg, &b, &msg) != FO_OK)
        return 1;
    res[0].status = 200;
    res[0].enc = BODY_JSON;
    if ((res[0].body = strdup(doc)) == NULL) {
        batch_req_free(&b);
        return 1;
    }
    res[0].body_len = strlen(doc);
    r = compose_prepare(&b, 1, res, 1 << 20, &run, &out);
    if (r > 0)
        compose_run_free(&run);
    else if (r == 0 && (out.error != ERR_UPSTREAM || out.message == NULL ||
                        strstr(out.message, "memory") == NULL))
        rc = -1; /* only running out of memory may stop it */
    else
        rc = 1;
    result_clear(&out);
    compose_select(&b.items[0], &res[0]);
    if (res[0].error == ERR_UPSTREAM)
        rc = rc < 0 ? rc : 1;
    else if (res[0].error != ERR_NONE)
        rc = -1;
    result_clear(&res[0]);
    batch_req_free(&b);
    return rc;
}

static int op_batch_plain(void)
{
    return op_batch("# list\nhttp://127.0.0.1:1/a\r\n  http://127.0.0.1:1/b\thttp://h/c\n", 0);
}

static int op_config(void)
{
    static const char text[] = "workers = 8\nallow = 127.0.0.1/32, ::1/128\n"
                               "deny = 10.0.0.0/8 # private\nforward_headers = X-A, X-B\n"
                               "auth_token = t0k\nlisten = 127.0.0.1:9\n";
    static const struct config_override ov[] = { { "max_batch", "7" }, { "deny", "::/128" } };
    char path[] = "/tmp/fanoutd-alloc-XXXXXX";
    struct config *c = NULL;
    struct fo_msg msg;
    int fd = mkstemp(path), rc;

    if (fd < 0 || write(fd, text, sizeof(text) - 1) != (ssize_t)(sizeof(text) - 1))
        return -1;
    close(fd);
    fo_err err = config_build(path, ov, 2, &c, &msg);
    unlink(path);
    if (err == FO_OK) {
        config_unref(c);
        return 0;
    }
    rc = (err == FO_ENOMEM || strstr(msg.text, "memory")) ? 1 : -1;
    if (rc < 0)
        printf("    config: %s\n", msg.text);
    return rc;
}

/* Results for a 3-item batch, bodies encoded as a worker would. */
static int fill_results(struct result *r)
{
    static const char *const bodies[] = { "{\"a\": {\"b\": 1}, \"big\": 123456789012345678901234}",
                                          "plain text \xc3\xa9", "\xff\xfe binary" };
    static const char *const types[] = { "application/json", "text/plain", NULL };

    for (int i = 0; i < 3; i++) {
        struct buf b;
        buf_init(&b, 0);
        r[i].status = 200;
        if (body_encode(&b, types[i], bodies[i], strlen(bodies[i]), &r[i].enc) != FO_OK) {
            buf_free(&b);
            return 1;
        }
        r[i].body = buf_steal(&b, &r[i].body_len);
    }
    return 0;
}

static int op_merge(enum merge_mode mode)
{
    struct result r[3] = { { 0 } };
    struct batch_req req;
    struct fo_msg msg;
    struct buf out;
    int complete, rc = 0;

    if (batch_parse(THREE, strlen(THREE), 1, cfg, &req, &msg) != FO_OK)
        return 1;
    buf_init(&out, 0);
    if (fill_results(r) != 0 || merge_build(&req, r, mode, 1.5, &out, &complete) != FO_OK)
        rc = 1;
    for (int i = 0; i < 3; i++)
        result_clear(&r[i]);
    buf_free(&out);
    batch_req_free(&req);
    return rc;
}

static int op_merge_none(void) { return op_merge(MERGE_NONE); }
static int op_merge_bodies(void) { return op_merge(MERGE_BODIES); }
static int op_merge_deep(void) { return op_merge(MERGE_DEEP); }

/* A job from parse to finished document, items completed as workers would. */
static int op_job(void)
{
    struct batch_req req;
    struct result r[3] = { { 0 } };
    struct fo_msg msg;
    struct job *job;
    int rc;

    if (batch_parse(THREE, strlen(THREE), 1, cfg, &req, &msg) != FO_OK)
        return 1;
    if (job_new(cfg, &req, NULL, 0, fo_now_us(), NULL, NULL, &job) != FO_OK)
        return 1;   /* job_new freed req */
    rc = fill_results(r);
    for (size_t i = 0; i < 3; i++) {
        if (job_begin_item(job, i, NULL))
            job_complete_item(job, i, &r[i]);   /* the last one finishes the job */
        result_clear(&r[i]);
    }
    struct answer_sink *sink = job_answer_sink(job);
    if (sink == NULL || sink->ops->failed(sink) || sink->ops->size(sink) == 0)
        rc = 1;
    job_unref(job);
    return rc;
}

/* The same job answered as an NDJSON stream (plain and gzip): every line
 * written as its item completes, then read out to its end. A stream that
 * cannot take a line ends broken, which is a clean failure. */
static int op_job_stream(int gzip)
{
    struct batch_req req;
    struct result r[3] = { { 0 } };
    struct answer_stream *st;
    struct fo_msg msg;
    struct job *job;
    char out[4096];
    ssize_t n;
    int rc;

    if (batch_parse(THREE, strlen(THREE), 1, cfg, &req, &msg) != FO_OK)
        return 1;
    if (job_new(cfg, &req, NULL, 0, fo_now_us(), NULL, NULL, &job) != FO_OK)
        return 1;
    if (job_set_stream(job, gzip, &st) != FO_OK) {
        job_unref(job);
        return 1;
    }
    rc = fill_results(r);
    for (size_t i = 0; i < 3; i++) {
        if (job_begin_item(job, i, NULL))
            job_complete_item(job, i, &r[i]);
        result_clear(&r[i]);
    }
    struct answer_sink *sink = job_answer_sink(job);
    for (int k = 0; k < 1000 && (n = sink->ops->read(sink, 0, out, sizeof(out))) > 0; k++)
        ;
    if (n != ANSWER_END)
        rc = 1;
    job_unref(job);
    return rc;
}

static int op_job_stream_plain(void) { return op_job_stream(0); }
static int op_job_stream_gzip(void) { return op_job_stream(1); }

static int op_policy(void)
{
    struct cidr_list l = { 0 };
    struct cidr c;
    int rc = 0;

    for (int i = 0; i < 40 && rc == 0; i++) {
        char text[32];
        (void)snprintf(text, sizeof(text), "10.%d.0.0/16", i);
        if (cidr_parse(text, &c, NULL) != FO_OK)
            return -1;
        fo_err err = cidr_list_add(&l, &c);
        rc = err == FO_OK ? 0 : err == FO_ENOMEM ? 1 : -1;
    }
    cidr_list_free(&l);
    return rc;
}

/* Runs op with the 1st, 2nd, ... allocation failing until a run injects
 * no failure; that run must succeed. */
static void exhaust(const char *name, int (*op)(void))
{
    long n;
    int bad = 0;

    for (n = 1; n < MAX_RUNS; n++) {
        alloc_fail_at(n);
        int rc = op();
        int failed = alloc_failed();
        alloc_fail_at(0);
        if (rc < 0) {
            printf("  %s: failing allocation %ld gave a wrong error\n", name, n);
            bad = 1;
        }
        if (!failed) {
            if (rc != 0) {
                printf("  %s: failed with no allocation failing\n", name);
                bad = 1;
            }
            break;
        }
    }
    if (n == MAX_RUNS) {
        printf("  %s: still injecting after %d runs\n", name, MAX_RUNS);
        bad = 1;
    }
    printf("%s %s (%ld allocations tried)\n", bad ? "FAIL" : "ok  ", name, n - 1);
    failures += bad;
}

int main(void)
{
    static const struct {
        const char *name;
        int (*op)(void);
    } ops[] = {
        { "batch_parse json", op_batch_json }, { "batch_parse plain", op_batch_plain },
        { "config_build", op_config },         { "merge none", op_merge_none },
        { "merge bodies", op_merge_bodies },   { "merge deep", op_merge_deep },
        { "job lifecycle", op_job },           { "cidr lists", op_policy },
        { "job stream", op_job_stream_plain }, { "job stream gzip", op_job_stream_gzip },
        { "batch_parse compose", op_batch_compose }, { "compose run", op_compose_run },
        { "batch_parse headers", op_batch_headers },
    };
    struct fo_msg msg;

    batch_json_init();
    if (config_build(NULL, NULL, 0, &cfg, &msg) != FO_OK)
        return 1;
    cfg->stream_heartbeat_ms = 0; /* no heartbeat thread in this single-threaded test */
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        exhaust(ops[i].name, ops[i].op);
    config_unref(cfg);
    printf("%zu passed, %d failed\n", sizeof(ops) / sizeof(ops[0]) - (size_t)failures, failures);
    return failures ? 1 : 0;
}
