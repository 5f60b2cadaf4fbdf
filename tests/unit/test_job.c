/*
 * test_job.c - the job's finish-once logic (job.h) with no daemon, no
 * worker and no network: items are begun and completed by hand, and the
 * hooks count what the job asks of its runner.
 */
#include "answer.h"
#include "harness.h"
#include "job.h"

struct counts {
    int cancel, wake, finish;
    void *woken;
    enum finish_reason reason;
};

static void on_cancel(void *ctx)
{
    ((struct counts *)ctx)->cancel++;
}

static struct counts *wake_counts; /* the wake hook gets only the runner */

static void on_wake(void *runner)
{
    wake_counts->wake++;
    wake_counts->woken = runner;
}

static void on_finish(struct job *job, void *ctx)
{
    struct counts *c = ctx;

    c->finish++;
    c->reason = job_reason(job);
}

/* A job of n items (http://127.0.0.1:1/i) with hooks that count into c. */
static struct job *make_job(struct config *cfg, size_t n, struct counts *c)
{
    char body[256] = "[";
    struct batch_req req;
    struct fo_msg msg;
    struct job *job = NULL;
    struct job_hooks hooks = { .cancel = on_cancel, .wake = on_wake, .ctx = c };

    for (size_t i = 0; i < n; i++)
        snprintf(body + strlen(body), sizeof(body) - strlen(body), "%s\"http://127.0.0.1:1/%zu\"",
                 i ? "," : "", i);
    strcat(body, "]");
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

static struct config *make_config(void)
{
    struct config *cfg = NULL;
    struct fo_msg msg;

    if (config_build(NULL, NULL, 0, &cfg, &msg) != FO_OK)
        CHECK_FAIL_("config_build: %s", msg.text);
    return cfg;
}

static void test_finish_once_cancel(void)
{
    struct config *cfg = make_config();
    struct counts c;
    struct job *job;
    int runner;
    struct result res = { 0 };
    struct job_hooks hooks = { .cancel = on_cancel, .wake = on_wake, .ctx = &c };

    if (cfg == NULL || (job = make_job(cfg, 2, &c)) == NULL)
        return;
    CHECK_EQ_INT(job_begin_item(job, 0, &runner), 1);
    CHECK_EQ_INT(job_finish(job, FINISH_CLIENT), 1);
    CHECK_EQ_INT(c.finish, 1);
    CHECK_EQ_INT(c.reason, FINISH_CLIENT);
    CHECK_EQ_INT(c.wake, 1); /* the running item's runner */
    CHECK(c.woken == &runner);
    CHECK_EQ_INT(c.cancel, 1);
    CHECK_EQ_INT(job_stopped(job), 1);
    /* Everything after the first finish is a no-op. */
    CHECK_EQ_INT(job_finish(job, FINISH_DEADLINE), 0);
    job_withdraw(job);
    CHECK_EQ_INT(c.finish, 1);
    CHECK_EQ_INT(c.cancel, 1);
    CHECK_EQ_INT(job_begin_item(job, 1, &runner), 0);
    result_fail(&res, ERR_UPSTREAM, "late");
    job_complete_item(job, 0, &res); /* a late result is dropped */
    CHECK(res.message == NULL);
    CHECK_EQ_INT(job_outcome(job), OUT_CANCELLED);
    CHECK(job_answer_sink(job) == NULL); /* the client went away: no answer */
    CHECK_EQ_INT(job_items_ok(job), 0);
    CHECK_EQ_INT(job_set_hooks(job, &hooks), 0); /* finished: not registered */
    job_unref(job);
    config_unref(cfg);
}

static void test_finish_by_last_item(void)
{
    struct config *cfg = make_config();
    struct counts c;
    struct job *job;
    int runner;
    struct result res = { 0 };
    struct answer_sink *sink;
    char head[2];

    if (cfg == NULL || (job = make_job(cfg, 2, &c)) == NULL)
        return;
    for (size_t i = 0; i < 2; i++) {
        CHECK_EQ_INT(job_begin_item(job, i, &runner), 1);
        result_fail(&res, ERR_CONNECT, "refused");
        job_complete_item(job, i, &res);
        CHECK_EQ_INT(c.finish, i == 1); /* only the last item finishes it */
    }
    CHECK_EQ_INT(c.reason, FINISH_DONE);
    CHECK_EQ_INT(c.wake, 0);     /* nothing was running any more */
    CHECK_EQ_INT(c.cancel, 1);   /* its registration ends all the same */
    sink = job_answer_sink(job); /* the whole document, read through the sink */
    CHECK(sink != NULL);
    if (sink != NULL) {
        CHECK_EQ_INT(sink->ops->failed(sink), 0);
        CHECK(sink->ops->size(sink) > 2 && sink->ops->size(sink) != ANSWER_SIZE_UNKNOWN);
        CHECK_EQ_INT(sink->ops->read(sink, 0, head, 1), 1);
        CHECK_EQ_INT(head[0], '{');
        CHECK_EQ_INT(sink->ops->read(sink, sink->ops->size(sink), head, 1), ANSWER_END);
    }
    CHECK_EQ_INT(job_outcome(job), OUT_PARTIAL);
    CHECK_EQ_INT(job_finish(job, FINISH_SHUTDOWN), 0);
    CHECK_EQ_INT(c.finish, 1);
    job_unref(job);
    config_unref(cfg);
}

static void test_withdraw_then_finish(void)
{
    struct config *cfg = make_config();
    struct counts c;
    struct job *job;

    if (cfg == NULL || (job = make_job(cfg, 3, &c)) == NULL)
        return;
    job_withdraw(job);
    CHECK_EQ_INT(c.cancel, 1);
    CHECK_EQ_INT(c.finish, 0);
    CHECK_EQ_INT(job_finish(job, FINISH_DEADLINE), 1);
    CHECK_EQ_INT(c.cancel, 1);
    CHECK_EQ_INT(c.finish, 1);
    CHECK_EQ_INT(job_outcome(job), OUT_DEADLINE);
    job_unref(job);
    config_unref(cfg);
}

/* Forwarded client headers never include hop-by-hop or framing ones, even
 * if they reach the job (the configuration refuses their names). */
static void test_request_drops_framing_headers(void)
{
    static const char *const lines[] = { "CDN-Loop: a",       "Content-Length: 27",
                                         "X-Ok: 1",           "host: h",
                                         "Connection: close", "Transfer-Encoding;",
                                         "TE: trailers",      "X-Host: 2" };
    struct config *cfg = make_config();
    const char *body = "[\"http://127.0.0.1:1/\"]";
    struct batch_req req;
    struct fetch_req fr;
    struct fo_msg msg;
    struct job *job = NULL;
    struct counts c = { 0 };
    size_t n = FO_ARRAY_LEN(lines);
    char **fwd = calloc(n, sizeof(*fwd));

    if (cfg == NULL || fwd == NULL ||
        batch_parse(body, strlen(body), 1, cfg, &req, &msg) != FO_OK) {
        CHECK_FAIL_("set-up");
        free(fwd);
        config_unref(cfg);
        return;
    }
    for (size_t i = 0; i < n; i++)
        fwd[i] = strdup(lines[i]);
    if (job_new(cfg, &req, fwd, n, fo_now_us(), on_finish, &c, &job) != FO_OK) {
        CHECK_FAIL_("job_new failed");
        config_unref(cfg);
        return;
    }
    if (job_request(job, 0, &fr) == FO_OK) {
        CHECK_EQ_INT(fr.nheaders, 2);
        if (fr.nheaders == 2) {
            CHECK_STR(fr.headers[0], "X-Ok: 1");
            CHECK_STR(fr.headers[1], "X-Host: 2");
        }
        fetch_req_free(&fr);
    } else {
        CHECK_FAIL_("job_request failed");
    }
    job_finish(job, FINISH_CLIENT);
    job_unref(job);
    config_unref(cfg);
}

static const struct unit_test tests[] = {
    { "finish_once_cancel", test_finish_once_cancel },
    { "finish_by_last_item", test_finish_by_last_item },
    { "withdraw_then_finish", test_withdraw_then_finish },
    { "request_drops_framing_headers", test_request_drops_framing_headers },
};

UNIT_SUITE(job_suite, "job", tests);
