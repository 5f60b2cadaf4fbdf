/*
 * test_resil.c - the pure parts of retries, the circuit breaker and
 * per_host_rate: the retry policy (retry.h), the breaker's state machine
 * and the token bucket (breaker.h, rate.h). Times are arguments: nothing
 * here waits or reads the clock. Also the process-wide tables through
 * their functions, with made-up times.
 */
#include <string.h>

#include "breaker.h"
#include "harness.h"
#include "rate.h"
#include "retry.h"

#define S 1000000LL /* a second in us */

static void test_retry_wanted(void)
{
    struct result r = { 0 };

    r.error = ERR_CONNECT;
    CHECK(retry_wanted(M_GET, &r));
    CHECK(retry_wanted(M_POST, &r));
    CHECK(retry_wanted(M_PATCH, &r));
    r.error = ERR_UPSTREAM;
    CHECK(retry_wanted(M_GET, &r));
    CHECK(retry_wanted(M_PUT, &r));
    CHECK(!retry_wanted(M_POST, &r));
    CHECK(!retry_wanted(M_PATCH, &r));
    r.error = ERR_NONE;
    static const int yes[] = { 429, 502, 503, 504 };
    static const int no[] = { 200, 204, 301, 400, 404, 408, 500, 501, 505 };
    for (size_t i = 0; i < FO_ARRAY_LEN(yes); i++) {
        r.status = yes[i];
        CHECK(retry_wanted(M_GET, &r));
        CHECK(retry_wanted(M_DELETE, &r));
        CHECK(!retry_wanted(M_POST, &r));
    }
    for (size_t i = 0; i < FO_ARRAY_LEN(no); i++) {
        r.status = no[i];
        CHECK(!retry_wanted(M_GET, &r));
    }
    static const enum item_error other[] = { ERR_TIMEOUT,   ERR_DEADLINE,    ERR_TLS,
                                             ERR_BLOCKED,   ERR_DNS,         ERR_TOO_LARGE,
                                             ERR_CANCELLED, ERR_CIRCUIT_OPEN };
    r.status = 503; /* a status kept with another error does not make it retried */
    for (size_t i = 0; i < FO_ARRAY_LEN(other); i++) {
        r.error = other[i];
        CHECK(!retry_wanted(M_GET, &r));
    }
}

static void test_backoff_bounds(void)
{
    /* Full jitter: rnd spread over [0, base * 2^(k-1)], capped. */
    CHECK_EQ_INT(retry_backoff_ms(1, 100, 5000, 0), 0);
    CHECK_EQ_INT(retry_backoff_ms(1, 100, 5000, 100), 100);
    CHECK_EQ_INT(retry_backoff_ms(1, 100, 5000, 101), 0);
    CHECK_EQ_INT(retry_backoff_ms(2, 100, 5000, 200), 200);
    CHECK_EQ_INT(retry_backoff_ms(3, 100, 5000, 400), 400);
    CHECK_EQ_INT(retry_backoff_ms(3, 100, 5000, 401), 0);
    CHECK_EQ_INT(retry_backoff_ms(7, 100, 5000, 5000), 5000); /* 6400 capped */
    CHECK_EQ_INT(retry_backoff_ms(7, 100, 5000, 5001), 0);
    CHECK_EQ_INT(retry_backoff_ms(100, 86400000, 86400000, 86400000), 86400000); /* no overflow */
    CHECK_EQ_INT(retry_backoff_ms(1, 0, 5000, 12345), 0);
    CHECK_EQ_INT(retry_backoff_ms(3, 100, 0, 12345), 0);
    for (int i = 0; i < 1000; i++) {
        long ms = retry_backoff_ms(4, 50, 300, retry_random());
        CHECK(ms >= 0 && ms <= 300);
    }
}

static void test_breaker_machine(void)
{
    struct breaker b = { 0 };
    enum breaker_verdict v;

    /* closed: failures count, a success resets, neutral changes nothing */
    CHECK_EQ_INT(breaker_admit(&b, 0, &v), -1);
    CHECK_EQ_INT(v, BREAKER_PASS);
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_FAILED, 3, 1000, 0), -1);
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_FAILED, 3, 1000, 0), -1);
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_OK, 3, 1000, 0), -1);
    CHECK_EQ_INT(b.failures, 0);
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_FAILED, 3, 1000, 0), -1);
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_NEUTRAL, 3, 1000, 0), -1);
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_FAILED, 3, 1000, 0), -1);
    CHECK_EQ_INT(b.failures, 2);
    /* the third consecutive failure opens it for 1000 ms */
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_FAILED, 3, 1000, 5 * S), BREAKER_OPEN);
    CHECK_EQ_INT(breaker_admit(&b, 5 * S, &v), -1);
    CHECK_EQ_INT(v, BREAKER_REFUSE);
    CHECK_EQ_INT(breaker_admit(&b, 6 * S - 1, &v), -1);
    CHECK_EQ_INT(v, BREAKER_REFUSE);
    /* reports while open (fetches started before) change nothing */
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_OK, 3, 1000, 5 * S), -1);
    CHECK_EQ_INT(b.state, BREAKER_OPEN);
    /* then half-open: one trial, the others refused */
    CHECK_EQ_INT(breaker_admit(&b, 6 * S, &v), BREAKER_HALF_OPEN);
    CHECK_EQ_INT(v, BREAKER_TRIAL);
    CHECK_EQ_INT(breaker_admit(&b, 6 * S, &v), -1);
    CHECK_EQ_INT(v, BREAKER_REFUSE);
    /* a trial that ended without a report frees the trial slot */
    breaker_end_trial(&b);
    CHECK_EQ_INT(breaker_admit(&b, 6 * S, &v), -1);
    CHECK_EQ_INT(v, BREAKER_TRIAL);
    /* a neutral trial frees it too */
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_NEUTRAL, 3, 1000, 6 * S), -1);
    CHECK_EQ_INT(breaker_admit(&b, 6 * S, &v), -1);
    CHECK_EQ_INT(v, BREAKER_TRIAL);
    /* the trial fails: open again, from then */
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_FAILED, 3, 1000, 7 * S), BREAKER_OPEN);
    CHECK_EQ_INT(breaker_admit(&b, 8 * S - 1, &v), -1);
    CHECK_EQ_INT(v, BREAKER_REFUSE);
    CHECK_EQ_INT(breaker_admit(&b, 8 * S, &v), BREAKER_HALF_OPEN);
    CHECK_EQ_INT(v, BREAKER_TRIAL);
    /* the trial succeeds: closed, count from zero */
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_OK, 3, 1000, 8 * S), BREAKER_CLOSED);
    CHECK_EQ_INT(b.failures, 0);
    CHECK_EQ_INT(breaker_admit(&b, 8 * S, &v), -1);
    CHECK_EQ_INT(v, BREAKER_PASS);
    CHECK_EQ_INT(breaker_admit(&b, 8 * S, &v), -1);
    CHECK_EQ_INT(v, BREAKER_PASS);
    breaker_end_trial(&b); /* closed: nothing */
    CHECK_EQ_INT(b.state, BREAKER_CLOSED);
    /* threshold 1: one failure opens */
    CHECK_EQ_INT(breaker_report(&b, FETCH_HOP_FAILED, 1, 1000, 9 * S), BREAKER_OPEN);
}

static void test_breaker_table(void)
{
    breaker_reset();
    /* keys are host_key()s: localhost and 127.0.0.1 are one host */
    CHECK_EQ_INT(breaker_check("localhost:81", 0), BREAKER_PASS);
    breaker_hop("127.0.0.1:81", FETCH_HOP_FAILED, 2, 1000, 0);
    CHECK(!breaker_refuses("localhost:81", 0));
    breaker_hop("LOCALHOST:81", FETCH_HOP_FAILED, 2, 1000, 0);
    CHECK(breaker_refuses("127.1:81", 0));
    CHECK_EQ_INT(breaker_check("127.0.0.1:81", 0), BREAKER_REFUSE);
    /* another port is another breaker */
    CHECK_EQ_INT(breaker_check("127.0.0.1:82", 0), BREAKER_PASS);
    CHECK(!breaker_refuses("127.0.0.1:81", S));
    CHECK_EQ_INT(breaker_check("127.0.0.1:81", S), BREAKER_TRIAL);
    CHECK(breaker_refuses("127.0.0.1:81", S));
    CHECK_EQ_INT(breaker_check("127.0.0.1:81", S), BREAKER_REFUSE);
    breaker_trial_done("127.0.0.1:81");
    CHECK_EQ_INT(breaker_check("127.0.0.1:81", S), BREAKER_TRIAL);
    breaker_hop("127.0.0.1:81", FETCH_HOP_OK, 2, 1000, S);
    CHECK_EQ_INT(breaker_check("127.0.0.1:81", S), BREAKER_PASS);
    /* threshold 0: off, nothing is counted */
    breaker_hop("127.0.0.1:83", FETCH_HOP_FAILED, 0, 1000, 0);
    breaker_hop("127.0.0.1:83", FETCH_HOP_FAILED, 0, 1000, 0);
    CHECK_EQ_INT(breaker_check("127.0.0.1:83", 0), BREAKER_PASS);
    /* no port: not tracked */
    CHECK_EQ_INT(breaker_check("nohost", 0), BREAKER_PASS);
    breaker_reset();
}

static void test_bucket(void)
{
    struct bucket b;

    /* starts full: a burst of `rate`, then one every 1/rate s */
    bucket_init(&b, 4, 10 * S);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(bucket_take(&b, 4, 10 * S), 0);
    CHECK_EQ_INT(bucket_take(&b, 4, 10 * S), 10 * S + S / 4);
    CHECK_EQ_INT(bucket_take(&b, 4, 10 * S + S / 8), 10 * S + S / 4);
    CHECK_EQ_INT(bucket_take(&b, 4, 10 * S + S / 4), 0);
    CHECK_EQ_INT(bucket_take(&b, 4, 10 * S + S / 4), 10 * S + S / 2);
    /* refills up to the burst only */
    CHECK(bucket_full(&b, 4, 20 * S));
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(bucket_take(&b, 4, 20 * S), 0);
    CHECK(bucket_take(&b, 4, 20 * S) > 20 * S);
    /* rate 1: a token a second; a lowered rate caps what is held */
    bucket_init(&b, 10, 0);
    CHECK_EQ_INT(bucket_take(&b, 1, 0), 0);
    CHECK(bucket_take(&b, 1, 0) > 0);
    bucket_init(&b, 1, 0);
    CHECK_EQ_INT(bucket_take(&b, 1, 0), 0);
    CHECK_EQ_INT(bucket_take(&b, 1, 0), S);
    CHECK_EQ_INT(bucket_take(&b, 1, S), 0);
    /* a large rate and a long idle time do not overflow */
    bucket_init(&b, 1000000, 0);
    CHECK_EQ_INT(bucket_take(&b, 1000000, 1000000 * S), 0);
    CHECK(bucket_full(&b, 1000000, 2000000 * S));
    /* time going backwards (never, on the monotonic clock) takes nothing away */
    bucket_init(&b, 2, 5 * S);
    CHECK_EQ_INT(bucket_take(&b, 2, 4 * S), 0);
}

static void test_rate_table(void)
{
    rate_reset();
    CHECK_EQ_INT(rate_take("127.0.0.1:81", 2, 0), 0);
    CHECK_EQ_INT(rate_take("localhost:81", 2, 0), 0); /* the same bucket */
    CHECK_EQ_INT(rate_take("127.1:81", 2, 0), S / 2);
    CHECK_EQ_INT(rate_take("127.0.0.1:82", 2, 0), 0); /* another host:port */
    CHECK_EQ_INT(rate_take("127.0.0.1:81", 0, 0), 0); /* off */
    CHECK_EQ_INT(rate_take("nohost", 2, 0), 0);       /* no port: not limited */
    rate_reset();
}

/* An item's "retry": parsed, checked against max_retries (4 here), any
 * other member refused by name. */
static void test_retry_parsing(void)
{
    static const struct config_override ov[] = { { "max_retries", "4" } };
    static const struct {
        const char *body;
        int ok;
        const char *word; /* in the message of a refusal */
    } cases[] = {
        { "[{\"url\":\"http://a/\",\"retry\":{\"max\":4,\"backoff_ms\":0}}]", 1, NULL },
        { "[{\"url\":\"http://a/\",\"retry\":{\"max\":2.0}}]", 1, NULL },
        { "[{\"url\":\"http://a/\",\"retry\":{}}]", 1, NULL },
        { "[{\"url\":\"http://a/\",\"id\":\"g\",\"retry\":{\"max\":5}}]", 0, "max_retries" },
        { "[{\"url\":\"http://a/\",\"retry\":{\"max\":1,\"tries\":2}}]", 0, "tries" },
        { "[{\"url\":\"http://a/\",\"retry\":{\"max\":-1}}]", 0, "retry.max" },
        { "[{\"url\":\"http://a/\",\"retry\":{\"max\":1.5}}]", 0, "retry.max" },
        { "[{\"url\":\"http://a/\",\"retry\":{\"backoff_ms\":\"9\"}}]", 0, "backoff_ms" },
        { "[{\"url\":\"http://a/\",\"retry\":3}]", 0, "retry" },
    };
    struct config *cfg = NULL;
    struct fo_msg msg = { "" };

    CHECK_EQ_INT(config_build(NULL, ov, FO_ARRAY_LEN(ov), &cfg, &msg), FO_OK);
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct batch_req b;
        fo_err err = batch_parse(cases[i].body, strlen(cases[i].body), 1, cfg, &b, &msg);
        CHECK_CASE((err == FO_OK) == cases[i].ok, cases[i].body);
        if (err == FO_OK)
            batch_req_free(&b);
        else
            CHECK_CASE(strstr(msg.text, cases[i].word) != NULL, cases[i].body);
    }
    /* the given members are marked; the rest is left to the config */
    struct batch_req b;
    const char *body = "[{\"url\":\"http://a/\",\"retry\":{\"backoff_ms\":7}},\"http://b/\"]";
    CHECK_EQ_INT(batch_parse(body, strlen(body), 1, cfg, &b, &msg), FO_OK);
    if (b.n == 2) {
        CHECK_EQ_INT(b.items[0].retry_given, ITEM_RETRY_BACKOFF);
        CHECK_EQ_INT(b.items[0].retry_backoff_ms, 7);
        CHECK_EQ_INT(b.items[1].retry_given, 0);
    }
    batch_req_free(&b);
    /* retries above max_retries in the config itself is an error */
    static const struct config_override bad[] = { { "retries", "6" } };
    struct config *cfg2 = NULL;
    CHECK_EQ_INT(config_build(NULL, bad, FO_ARRAY_LEN(bad), &cfg2, &msg), FO_EINVAL);
    CHECK(strstr(msg.text, "max_retries") != NULL);
    config_unref(cfg);
}

static const struct unit_test tests[] = {
    { "retry_wanted", test_retry_wanted },
    { "backoff_bounds", test_backoff_bounds },
    { "breaker_machine", test_breaker_machine },
    { "breaker_table", test_breaker_table },
    { "bucket", test_bucket },
    { "rate_table", test_rate_table },
    { "retry_parsing", test_retry_parsing },
};

UNIT_SUITE(resil_suite, "resil", tests);
