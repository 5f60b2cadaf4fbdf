/*
 * test_sched.c - the pure scheduler (scheduler.h) with no thread, no
 * daemon and no network: tasks are taken with sched_try at chosen times,
 * so nothing here waits or depends on the clock's speed. Destinations are
 * numeric ("127.0.0.1:80"), so no name is ever resolved.
 */
#include "harness.h"
#include "scheduler.h"

/* A batch's context: its destinations and whether it was released. */
struct tb {
    const char *dests[8];
    int released;
    int64_t nb[8]; /* not_before answers, 0: now */
};

static const char *tb_dest(void *ctx, size_t i)
{
    return ((struct tb *)ctx)->dests[i];
}

static int64_t tb_not_before(void *ctx, size_t i, int64_t now_us)
{
    (void)now_us;
    return ((struct tb *)ctx)->nb[i];
}

static void tb_release(void *ctx)
{
    ((struct tb *)ctx)->released++;
}

static const struct sched_ops ops = { .dest = tb_dest, .release = tb_release };
static const struct sched_ops ops_nb = { .dest = tb_dest,
                                         .not_before = tb_not_before,
                                         .release = tb_release };

static struct sched_batch *submit(struct sched *s, struct tb *ctx, size_t n, long per_host,
                                  long cap)
{
    struct sched_batch_desc d = {
        .ops = &ops, .ctx = ctx, .n = n, .per_host_limit = per_host, .max_concurrency = cap
    };
    struct sched_batch *b = NULL;

    if (sched_submit(s, &d, 1000, &b) != FO_OK)
        CHECK_FAIL_("sched_submit of %zu tasks failed", n);
    return b;
}

/* Takes one task at now_us: its ctx and index, or ctx NULL for none. */
static int take(struct sched *s, int64_t now_us, struct sched_task *t)
{
    int64_t wake;

    return sched_try(s, now_us, t, &wake);
}

static void test_round_robin(void)
{
    struct sched *s;
    struct tb a = { { 0 }, 0, { 0 } }, b = { { 0 }, 0, { 0 } };
    struct sched_batch *ba, *bb;
    struct sched_task t[7];
    /* A has 5 tasks, B 2: after A0, B gets its turn. */
    static const char want[] = "A0B0A1B1A2A3A4";
    char got[32] = "";

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    ba = submit(s, &a, 5, 0, 0);
    bb = submit(s, &b, 2, 0, 0);
    CHECK_EQ_INT(sched_depth(s), 7);
    for (int k = 0; k < 7; k++) {
        CHECK_EQ_INT(take(s, 0, &t[k]), 1);
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%c%zu",
                 t[k].ctx == &a ? 'A' : 'B', t[k].index);
    }
    CHECK_STR(got, want);
    CHECK_EQ_INT(take(s, 0, &t[0]), 0);
    CHECK_EQ_INT(sched_depth(s), 0);
    for (int k = 0; k < 7; k++)
        sched_done(s, &t[k]);
    CHECK_EQ_INT(a.released, 0); /* not until the owner ends it */
    sched_cancel(s, ba);
    sched_cancel(s, bb);
    CHECK_EQ_INT(a.released, 1);
    CHECK_EQ_INT(b.released, 1);
    sched_free(s);
}

static void test_capacity_whole_or_nothing(void)
{
    struct sched *s;
    struct tb a = { { 0 }, 0, { 0 } }, b = { { 0 }, 0, { 0 } };
    struct sched_batch_desc d = { .ops = &ops, .ctx = &b, .n = 3 };
    struct sched_batch *ba = NULL, *bb = NULL, *bc = NULL;
    struct sched_task t;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    d.ctx = &a;
    CHECK_EQ_INT(sched_submit(s, &d, 4, &ba), FO_OK);
    d.ctx = &b;
    CHECK_EQ_INT(sched_submit(s, &d, 4, &bb), FO_EFULL); /* 3 + 3 > 4: none admitted */
    CHECK(bb == NULL);
    CHECK_EQ_INT(sched_depth(s), 3);
    CHECK_EQ_INT(take(s, 0, &t), 1); /* one leaves the waiting: 2 + 3 > 4 still */
    CHECK_EQ_INT(sched_submit(s, &d, 4, &bb), FO_EFULL);
    sched_done(s, &t);
    CHECK_EQ_INT(sched_submit(s, &d, 5, &bb), FO_OK);
    CHECK_EQ_INT(sched_depth(s), 5);
    sched_close(s);
    CHECK_EQ_INT(sched_submit(s, &d, 100, &bc), FO_ESTOPPED);
    CHECK(bc == NULL);
    sched_cancel(s, ba);
    CHECK_EQ_INT(sched_depth(s), 3);
    sched_cancel(s, bb);
    CHECK_EQ_INT(sched_depth(s), 0);
    CHECK_EQ_INT(a.released + b.released, 2);
    sched_free(s);
}

static void test_per_host_limit(void)
{
    struct sched *s;
    struct tb a = { { "127.0.0.1:80", "127.1:80", "127.0.0.1:80", "10.0.0.1:80" }, 0, { 0 } };
    struct sched_batch *ba;
    struct sched_task t1, t2, t3;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    ba = submit(s, &a, 4, 1, 0);
    CHECK_EQ_INT(take(s, 0, &t1), 1);
    CHECK_EQ_INT(t1.index, 0);
    /* 1 and 2 are the same destination (127.1 is 127.0.0.1): parked; 3 runs. */
    CHECK_EQ_INT(take(s, 0, &t2), 1);
    CHECK_EQ_INT(t2.index, 3);
    CHECK_EQ_INT(take(s, 0, &t3), 0);
    CHECK_EQ_INT(sched_depth(s), 2);
    sched_done(s, &t1); /* a slot frees: the first parked task goes */
    CHECK_EQ_INT(take(s, 0, &t1), 1);
    CHECK_EQ_INT(t1.index, 1);
    CHECK_EQ_INT(take(s, 0, &t3), 0);
    sched_done(s, &t1);
    CHECK_EQ_INT(take(s, 0, &t1), 1);
    CHECK_EQ_INT(t1.index, 2);
    sched_done(s, &t1);
    sched_done(s, &t2);
    sched_cancel(s, ba);
    CHECK_EQ_INT(a.released, 1);
    sched_free(s);
}

static void test_max_concurrency(void)
{
    struct sched *s;
    struct tb a = { { 0 }, 0, { 0 } }, b = { { 0 }, 0, { 0 } };
    struct sched_batch *ba, *bb;
    struct sched_task t1, t2, t3, t4;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    ba = submit(s, &a, 4, 0, 2);
    bb = submit(s, &b, 1, 0, 0);
    CHECK_EQ_INT(take(s, 0, &t1), 1);
    CHECK_EQ_INT(take(s, 0, &t2), 1);
    CHECK_EQ_INT(take(s, 0, &t3), 1);
    CHECK(t1.ctx == &a && t2.ctx == &b && t3.ctx == &a);
    CHECK_EQ_INT(take(s, 0, &t4), 0); /* A has 2 running: its cap */
    sched_done(s, &t1);
    CHECK_EQ_INT(take(s, 0, &t4), 1);
    CHECK(t4.ctx == &a && t4.index == 2);
    CHECK_EQ_INT(take(s, 0, &t1), 0);
    sched_done(s, &t2);
    sched_done(s, &t3);
    sched_done(s, &t4);
    CHECK_EQ_INT(take(s, 0, &t1), 1);
    CHECK_EQ_INT(t1.index, 3);
    sched_done(s, &t1);
    sched_cancel(s, ba);
    sched_cancel(s, bb);
    sched_free(s);
}

static void test_cancel(void)
{
    struct sched *s;
    struct tb a = { { "127.0.0.1:80", "127.0.0.1:80", "127.0.0.1:80" }, 0, { 0 } };
    struct sched_batch *ba;
    struct sched_task t1, t2;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    ba = submit(s, &a, 3, 1, 0);
    CHECK_EQ_INT(take(s, 0, &t1), 1);
    CHECK_EQ_INT(take(s, 0, &t2), 0); /* the others parked behind the limit */
    CHECK_EQ_INT(sched_depth(s), 2);
    sched_cancel(s, ba);
    CHECK_EQ_INT(sched_depth(s), 0);
    CHECK_EQ_INT(a.released, 0); /* one still runs */
    sched_done(s, &t1);
    CHECK_EQ_INT(a.released, 1);
    CHECK_EQ_INT(take(s, 0, &t2), 0); /* nothing of it is handed out any more */
    sched_free(s);
}

static void test_not_before(void)
{
    struct sched *s;
    struct tb a = { { 0 }, 0, { 0 } };
    int64_t nb[2] = { INT64_MAX / 2, 0 }, wake = -1;
    struct sched_batch_desc d = { .ops = &ops, .ctx = &a, .n = 2, .not_before_us = nb };
    struct sched_batch *ba;
    struct sched_task t1, t2;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    /* sched_try is given its "now": task 0 wants a time far ahead of any. */
    CHECK_EQ_INT(sched_submit(s, &d, 10, &ba), FO_OK);
    CHECK_EQ_INT(sched_try(s, 1000, &t1, &wake), 1);
    CHECK_EQ_INT(t1.index, 1);
    CHECK_EQ_INT(sched_try(s, 1000, &t2, &wake), 0); /* task 0 is not yet runnable */
    CHECK_EQ_INT(wake, INT64_MAX / 2);
    CHECK_EQ_INT(sched_depth(s), 1);
    CHECK_EQ_INT(sched_try(s, INT64_MAX / 2, &t2, &wake), 1); /* its time came */
    CHECK_EQ_INT(t2.index, 0);
    /* A retry waits again until its own time. */
    sched_retry(s, &t2, INT64_MAX / 2 + 10);
    CHECK_EQ_INT(sched_depth(s), 1);
    CHECK_EQ_INT(sched_try(s, INT64_MAX / 2 + 9, &t2, &wake), 0);
    CHECK_EQ_INT(wake, INT64_MAX / 2 + 10);
    CHECK_EQ_INT(sched_try(s, INT64_MAX / 2 + 10, &t2, &wake), 1);
    sched_done(s, &t1);
    sched_done(s, &t2);
    sched_cancel(s, ba);
    CHECK_EQ_INT(a.released, 1);
    sched_free(s);
}

static void test_not_before_op(void)
{
    struct sched *s;
    struct tb a = { { 0 }, 0, { INT64_MAX / 2, 0 } };
    struct sched_batch_desc d = { .ops = &ops_nb, .ctx = &a, .n = 2 };
    struct sched_batch *ba;
    struct sched_task t1, t2;
    int64_t wake;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    CHECK_EQ_INT(sched_submit(s, &d, 10, &ba), FO_OK);
    CHECK_EQ_INT(sched_try(s, 1, &t1, &wake), 1); /* task 0 asked, put off; task 1 runs */
    CHECK_EQ_INT(t1.index, 1);
    CHECK_EQ_INT(sched_try(s, 1, &t2, &wake), 0);
    CHECK_EQ_INT(wake, INT64_MAX / 2);
    a.nb[0] = 0; /* e.g. the rate allows it now */
    CHECK_EQ_INT(sched_try(s, INT64_MAX / 2, &t2, &wake), 1);
    CHECK_EQ_INT(t2.index, 0);
    sched_done(s, &t1);
    sched_done(s, &t2);
    /* A cancelled batch's timers go with it. */
    a.nb[0] = INT64_MAX / 2;
    sched_cancel(s, ba);
    CHECK_EQ_INT(a.released, 1);
    sched_free(s);
}

static void test_dependencies(void)
{
    struct sched *s;
    struct tb a = { { 0 }, 0, { 0 } };
    /* 0 <- 1 <- 2, and 3 needs 0 and 1 */
    static const uint32_t start[] = { 0, 0, 1, 2, 4 }, list[] = { 0, 1, 0, 1 };
    struct sched_batch_desc d = {
        .ops = &ops, .ctx = &a, .n = 4, .dep_start = start, .dep_list = list
    };
    struct sched_batch *ba;
    struct sched_task t, u, v;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    CHECK_EQ_INT(sched_submit(s, &d, 10, &ba), FO_OK);
    CHECK_EQ_INT(sched_depth(s), 4); /* waiting tasks count, runnable or not */
    CHECK_EQ_INT(take(s, 0, &t), 1);
    CHECK_EQ_INT(t.index, 0);
    CHECK_EQ_INT(take(s, 0, &u), 0); /* the rest wait for 0 */
    sched_done(s, &t);
    CHECK_EQ_INT(take(s, 0, &t), 1); /* 0 done: 1 is runnable, 3 still needs 1 */
    CHECK_EQ_INT(t.index, 1);
    CHECK_EQ_INT(take(s, 0, &u), 0);
    sched_done(s, &t);
    CHECK_EQ_INT(take(s, 0, &u), 1);
    CHECK_EQ_INT(take(s, 0, &v), 1);
    CHECK_EQ_INT(u.index + v.index, 5); /* 2 and 3 */
    CHECK_EQ_INT(sched_depth(s), 0);
    sched_done(s, &u);
    sched_done(s, &v);
    sched_cancel(s, ba);
    CHECK_EQ_INT(a.released, 1);
    sched_free(s);
}

static void test_dependencies_refused(void)
{
    struct sched *s;
    struct tb a = { { 0 }, 0, { 0 } };
    static const uint32_t cyc_start[] = { 0, 1, 2 }, cyc_list[] = { 1, 0 };
    static const uint32_t bad_start[] = { 0, 1, 1 }, bad_list[] = { 7 };
    static const uint32_t self_start[] = { 0, 1 }, self_list[] = { 0 };
    struct sched_batch_desc d = { .ops = &ops, .ctx = &a, .n = 2 };
    struct sched_batch *ba;

    CHECK_EQ_INT(sched_new(&s), FO_OK);
    d.dep_start = cyc_start;
    d.dep_list = cyc_list;
    CHECK_EQ_INT(sched_submit(s, &d, 10, &ba), FO_EINVAL);
    d.dep_start = bad_start;
    d.dep_list = bad_list;
    CHECK_EQ_INT(sched_submit(s, &d, 10, &ba), FO_EINVAL);
    d.n = 1;
    d.dep_start = self_start;
    d.dep_list = self_list;
    CHECK_EQ_INT(sched_submit(s, &d, 10, &ba), FO_EINVAL);
    CHECK_EQ_INT(sched_depth(s), 0);
    CHECK_EQ_INT(a.released, 0);
    sched_free(s);
}

/* A run op that asks for one retry, far ahead, then is done. */
static int runs;

static int64_t tb_run(void *ctx, const struct sched_task *t, void *worker)
{
    (void)ctx;
    (void)t;
    (void)worker;
    return runs++ == 0 ? INT64_MAX / 2 : 0;
}

static void test_run_and_retry(void)
{
    static const struct sched_ops run_ops = { .run = tb_run, .release = tb_release };
    struct sched *s;
    struct tb a = { { 0 }, 0, { 0 } };
    struct sched_batch_desc d = { .ops = &run_ops, .ctx = &a, .n = 1 };
    struct sched_batch *ba;
    struct sched_task t;
    int64_t wake, again;

    runs = 0;
    CHECK_EQ_INT(sched_new(&s), FO_OK);
    CHECK_EQ_INT(sched_submit(s, &d, 10, &ba), FO_OK);
    /* The worker's loop: run, then retry or done. */
    CHECK_EQ_INT(sched_try(s, 1, &t, &wake), 1);
    again = sched_run(&t, NULL);
    CHECK_EQ_INT(again, INT64_MAX / 2);
    sched_retry(s, &t, again);
    CHECK_EQ_INT(sched_depth(s), 1);
    CHECK_EQ_INT(sched_try(s, 2, &t, &wake), 0);
    CHECK_EQ_INT(sched_try(s, INT64_MAX / 2, &t, &wake), 1);
    CHECK_EQ_INT(sched_run(&t, NULL), 0);
    sched_done(s, &t);
    CHECK_EQ_INT(runs, 2);
    sched_cancel(s, ba);
    CHECK_EQ_INT(a.released, 1);
    sched_free(s);
}

static const struct unit_test tests[] = {
    { "run_and_retry", test_run_and_retry },
    { "round_robin", test_round_robin },
    { "capacity_whole_or_nothing", test_capacity_whole_or_nothing },
    { "per_host_limit", test_per_host_limit },
    { "max_concurrency", test_max_concurrency },
    { "cancel", test_cancel },
    { "not_before", test_not_before },
    { "not_before_op", test_not_before_op },
    { "dependencies", test_dependencies },
    { "dependencies_refused", test_dependencies_refused },
};

UNIT_SUITE(sched_suite, "sched", tests);
