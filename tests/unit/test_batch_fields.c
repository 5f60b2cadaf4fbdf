/*
 * test_batch_fields.c - v2 batch object fields: parsing of policy,
 * max_concurrency, timings and defaults (batch.c), and the policy's
 * decision at item completion (job.c), with items completed by hand.
 */
#include "answer.h"
#include "harness.h"
#include "job.h"
#include "scheduler.h"

static struct config *make_config(void)
{
    struct config *cfg = NULL;
    struct fo_msg msg;

    if (config_build(NULL, NULL, 0, &cfg, &msg) != FO_OK)
        CHECK_FAIL_("config_build: %s", msg.text);
    return cfg;
}

static int has_header(const struct item_req *it, const char *line)
{
    for (size_t i = 0; i < it->nheaders; i++) {
        if (strcmp(it->headers[i], line) == 0)
            return 1;
    }
    return 0;
}

static void test_parse_fields(void)
{
    struct config *cfg = make_config();
    struct batch_req b;
    struct fo_msg msg;
    const char *body =
        "{\"policy\":{\"min_success\":2},\"max_concurrency\":3,\"timings\":true,"
        "\"defaults\":{\"headers\":{\"X-Team\":\"blue\",\"X-Env\":\"prod\"},\"timeout_ms\":700},"
        "\"requests\":[\"http://a.example/\","
        "{\"url\":\"http://b.example/\",\"headers\":{\"x-team\":\"red\"},\"timeout_ms\":50}]}";

    if (cfg == NULL)
        return;
    if (batch_parse(body, strlen(body), 1, cfg, &b, &msg) != FO_OK) {
        CHECK_FAIL_("batch_parse: %s", msg.text);
        config_unref(cfg);
        return;
    }
    CHECK_EQ_INT(b.policy, POLICY_MIN_SUCCESS);
    CHECK_EQ_INT(b.min_success, 2);
    CHECK_EQ_INT(b.max_concurrency, 3);
    CHECK_EQ_INT(b.timings, 1);
    CHECK_EQ_INT(b.n, 2);
    /* the string item: every default, its default id */
    CHECK_STR(b.items[0].id, "0");
    CHECK_EQ_INT(b.items[0].nheaders, 2);
    CHECK(has_header(&b.items[0], "X-Team: blue"));
    CHECK(has_header(&b.items[0], "X-Env: prod"));
    CHECK_EQ_INT(b.items[0].timeout_ms, 700);
    /* the object item: its own header and timeout win */
    CHECK_EQ_INT(b.items[1].nheaders, 2);
    CHECK(has_header(&b.items[1], "x-team: red"));
    CHECK(has_header(&b.items[1], "X-Env: prod"));
    CHECK_EQ_INT(b.items[1].timeout_ms, 50);
    batch_req_free(&b);

    /* v1 forms: the defaults of every new field */
    body = "[\"http://a.example/\"]";
    CHECK(batch_parse(body, strlen(body), 1, cfg, &b, &msg) == FO_OK);
    CHECK_EQ_INT(b.policy, POLICY_BEST_EFFORT);
    CHECK_EQ_INT(b.max_concurrency, 0);
    CHECK_EQ_INT(b.timings, 0);
    CHECK(b.tracestate == NULL && b.traceparent[0] == '\0');
    batch_req_free(&b);
    config_unref(cfg);
}

static void test_parse_refusals(void)
{
    static const struct {
        const char *fields; /* spliced into {"requests":[2 URLs], ...} */
        const char *word;   /* the message names it */
    } cases[] = {
        { "\"policy\":\"sometimes\"", "policy" },
        { "\"policy\":{\"min_success\":0}", "min_success" },
        { "\"policy\":{\"min_success\":3}", "min_success" },
        { "\"policy\":{\"min_success\":1.5}", "min_success" },
        { "\"policy\":{\"max_failures\":1}", "max_failures" },
        { "\"max_concurrency\":0", "max_concurrency" },
        { "\"max_concurrency\":\"2\"", "max_concurrency" },
        { "\"timings\":1", "timings" },
        { "\"defaults\":{\"method\":\"POST\"}", "method" },
        { "\"defaults\":{\"timeout_ms\":0}", "timeout_ms" },
        { "\"defaults\":{\"headers\":{\"X-A\":1}}", "X-A" },
        { "\"defaults\":[]", "defaults" },
        { "\"timout_ms\":5", "timout_ms" },
    };
    struct config *cfg = make_config();
    struct batch_req b;
    struct fo_msg msg;
    char body[512];

    if (cfg == NULL)
        return;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"requests\":[\"http://a.example/\",\"http://b.example/\"],%s}",
                 cases[i].fields);
        fo_err err = batch_parse(body, strlen(body), 1, cfg, &b, &msg);
        CHECK_CASE(err == FO_EINVAL, cases[i].fields);
        if (err == FO_EINVAL)
            CHECK_CASE(strstr(msg.text, cases[i].word) != NULL, cases[i].fields);
        if (err == FO_OK)
            batch_req_free(&b);
    }
    config_unref(cfg);
}

/* ---- the policy at item completion ------------------------------------------ */

struct counts {
    int cancel, wake, finish;
    enum finish_reason reason;
};

static struct counts *wake_counts;

static void on_cancel(void *ctx)
{
    ((struct counts *)ctx)->cancel++;
}

static void on_wake(void *runner)
{
    (void)runner;
    wake_counts->wake++;
}

static void on_finish(struct job *job, void *ctx)
{
    struct counts *c = ctx;

    c->finish++;
    c->reason = job_reason(job);
}

/* A job of 4 items with the policy given as JSON (`policy` field text). */
static struct job *policy_job(struct config *cfg, const char *policy, struct counts *c)
{
    char body[512];
    struct batch_req req;
    struct fo_msg msg;
    struct job *job = NULL;
    struct job_hooks hooks = { .cancel = on_cancel, .wake = on_wake, .ctx = c };

    snprintf(body, sizeof(body),
             "{\"policy\":%s,\"requests\":[\"http://127.0.0.1:1/0\",\"http://127.0.0.1:1/1\","
             "\"http://127.0.0.1:1/2\",\"http://127.0.0.1:1/3\"]}",
             policy);
    if (batch_parse(body, strlen(body), 1, cfg, &req, &msg) != FO_OK) {
        CHECK_FAIL_("batch_parse: %s", msg.text);
        return NULL;
    }
    if (job_new(cfg, &req, NULL, 0, fo_now_us(), on_finish, c, &job) != FO_OK) {
        CHECK_FAIL_("job_new failed");
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    wake_counts = c;
    CHECK_EQ_INT(job_set_hooks(job, &hooks), 1);
    return job;
}

static void complete(struct job *job, size_t i, int status)
{
    struct result res = { 0 };

    if (status == 0)
        result_fail(&res, ERR_CONNECT, "refused");
    else
        res.status = status;
    job_complete_item(job, i, &res);
}

/* Whether the finished job's document contains text. */
static int doc_has(struct job *job, const char *text)
{
    struct answer_sink *sink = job_answer_sink(job);
    static char doc[8192];
    ssize_t n;

    if (sink == NULL)
        return 0;
    n = sink->ops->read(sink, 0, doc, sizeof(doc) - 1);
    if (n <= 0)
        return 0;
    doc[n] = '\0';
    return strstr(doc, text) != NULL;
}

static void test_fail_fast(void)
{
    struct config *cfg = make_config();
    struct counts c;
    struct job *job;
    int runner;

    if (cfg == NULL || (job = policy_job(cfg, "\"fail_fast\"", &c)) == NULL)
        return;
    CHECK_EQ_INT(job_begin_item(job, 0, &runner), 1);
    CHECK_EQ_INT(job_begin_item(job, 1, &runner), 1);
    CHECK_EQ_INT(job_begin_item(job, 2, &runner), 1);
    complete(job, 2, 200); /* ok: goes on */
    CHECK_EQ_INT(c.finish, 0);
    complete(job, 1, 500); /* not ok: ends it */
    CHECK_EQ_INT(c.finish, 1);
    CHECK_EQ_INT(c.reason, FINISH_POLICY);
    CHECK_EQ_INT(c.wake, 1);   /* item 0 was still running */
    CHECK_EQ_INT(c.cancel, 1); /* item 3 leaves the queue */
    CHECK_EQ_INT(job_complete(job), 0);
    CHECK_EQ_INT(job_items_ok(job), 1);
    CHECK(doc_has(job, "cancelled by the fail_fast policy: item 1 (id \\\"1\\\") failed"));
    CHECK_EQ_INT(job_outcome(job), OUT_PARTIAL);
    job_unref(job);
    config_unref(cfg);
}

static void test_min_success(void)
{
    struct config *cfg = make_config();
    struct counts c;
    struct job *job;

    if (cfg == NULL)
        return;
    /* reached: 2 ok of 4 */
    if ((job = policy_job(cfg, "{\"min_success\":2}", &c)) == NULL)
        return;
    complete(job, 0, 0);
    complete(job, 1, 204);
    CHECK_EQ_INT(c.finish, 0);
    complete(job, 3, 200);
    CHECK_EQ_INT(c.finish, 1);
    CHECK_EQ_INT(c.reason, FINISH_POLICY);
    CHECK_EQ_INT(job_items_ok(job), 2);
    CHECK(doc_has(job, "min_success"));
    job_unref(job);

    /* out of reach: 3 of 4 wanted, 2 failed */
    if ((job = policy_job(cfg, "{\"min_success\":3}", &c)) == NULL)
        return;
    complete(job, 0, 0);
    CHECK_EQ_INT(c.finish, 0);
    complete(job, 2, 404);
    CHECK_EQ_INT(c.finish, 1);
    CHECK_EQ_INT(c.reason, FINISH_POLICY);
    CHECK(doc_has(job, "could no longer be reached once item 2"));
    job_unref(job);

    /* every item wanted: only the last one ends it, as usual */
    if ((job = policy_job(cfg, "{\"min_success\":4}", &c)) == NULL)
        return;
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ_INT(c.finish, 0);
        complete(job, i, 200);
    }
    CHECK_EQ_INT(c.reason, FINISH_DONE);
    CHECK_EQ_INT(job_complete(job), 1);
    job_unref(job);
    config_unref(cfg);
}

/* ---- timings: when a task became runnable (scheduler.c) ---------------------- */

static void no_release(void *ctx)
{
    (void)ctx;
}

static void test_runnable_since(void)
{
    static const struct sched_ops ops = { .release = no_release };
    /* task 1 depends on task 0 */
    static const uint32_t dep_start[] = { 0, 0, 1 }, dep_list[] = { 0 };
    struct sched_batch_desc d = {
        .ops = &ops, .n = 2, .dep_start = dep_start, .dep_list = dep_list
    };
    struct sched *s = NULL;
    struct sched_batch *b = NULL;
    struct sched_task t0, t1;
    int64_t wake, before, after, done_at;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    if (s == NULL)
        return;
    before = fo_now_us();
    CHECK_EQ_INT(sched_submit(s, &d, 100, &b), FO_OK);
    after = fo_now_us();
    if (b == NULL) {
        sched_free(s);
        return;
    }
    CHECK_EQ_INT(sched_try(s, after, &t0, &wake), 1);
    CHECK_EQ_INT(t0.index, 0);
    CHECK(t0.runnable_us >= before && t0.runnable_us <= after); /* admitted */
    CHECK_EQ_INT(sched_try(s, after, &t1, &wake), 0);           /* waits for task 0 */
    done_at = fo_now_us();
    sched_done(s, &t0);
    CHECK_EQ_INT(sched_try(s, fo_now_us(), &t1, &wake), 1);
    CHECK_EQ_INT(t1.index, 1);
    CHECK(t1.runnable_us >= done_at); /* from its dependency's end, not admission */
    sched_done(s, &t1);
    sched_cancel(s, b);
    sched_free(s);
}

static const struct unit_test tests[] = {
    { "parse_fields", test_parse_fields },           { "parse_refusals", test_parse_refusals },
    { "policy_fail_fast", test_fail_fast },          { "policy_min_success", test_min_success },
    { "sched_runnable_since", test_runnable_since },
};

UNIT_SUITE(batch_fields_suite, "batch_fields", tests);
