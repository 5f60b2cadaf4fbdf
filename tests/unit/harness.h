/*
 * harness.h - the unit tests' tiny assert harness (in the spirit of redis
 * testhelp.h and memcached testapp.c's {name, fn} table).
 *
 * A check that fails prints "file:line: what" and the test goes on, so one
 * run shows every broken expectation. main.c runs each suite's table and
 * counts a test function as failed if any of its checks failed.
 */
#ifndef UNIT_HARNESS_H
#define UNIT_HARNESS_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The harness's only mutable globals, owned by main.c and reset before each
 * test: failed checks in the running test, and its name for the messages. */
extern int unit_check_failures;
extern const char *unit_current_test;

#define CHECK_FAIL_(...)                                            \
    do {                                                            \
        fprintf(stdout, "  %s: %s:%d: ", unit_current_test,         \
                __FILE__, __LINE__);                                \
        fprintf(stdout, __VA_ARGS__);                               \
        fputc('\n', stdout);                                        \
        unit_check_failures++;                                      \
    } while (0)

#define CHECK(cond)                                                 \
    do {                                                            \
        if (!(cond))                                                \
            CHECK_FAIL_("CHECK(%s)", #cond);                        \
    } while (0)

#define CHECK_EQ_INT(got, want)                                     \
    do {                                                            \
        long long g_ = (long long)(got), w_ = (long long)(want);    \
        if (g_ != w_)                                               \
            CHECK_FAIL_("%s == %lld, want %s == %lld", #got, g_,    \
                        #want, w_);                                 \
    } while (0)

/* NULL-safe; NULL equals only NULL. */
#define CHECK_STR(got, want)                                        \
    do {                                                            \
        const char *g_ = (got), *w_ = (want);                       \
        if ((g_ == NULL) != (w_ == NULL) ||                         \
            (g_ != NULL && strcmp(g_, w_) != 0))                    \
            CHECK_FAIL_("%s == \"%s\", want \"%s\"", #got,          \
                        g_ ? g_ : "(null)", w_ ? w_ : "(null)");    \
    } while (0)

/* A failed check that names the table row it came from. */
#define CHECK_CASE(cond, casename)                                  \
    do {                                                            \
        if (!(cond))                                                \
            CHECK_FAIL_("case '%s': CHECK(%s)", (casename), #cond); \
    } while (0)

struct unit_test {
    const char *name;
    void (*fn)(void);
};

struct unit_suite {
    const char *name;
    const struct unit_test *tests;
    size_t n;
};

#define UNIT_SUITE(var, label, table) \
    const struct unit_suite var = { label, table, sizeof(table) / sizeof((table)[0]) }

/* One per file; main.c lists them. */
extern const struct unit_suite encode_suite, policy_suite, config_suite, batch_suite,
    result_suite, jtree_suite, queue_suite, sched_suite, job_suite, util_suite;
extern const struct unit_suite resil_suite; /* retries, breaker, rate (issue 13) */
/* v2 traceparent, batch fields */
extern const struct unit_suite trace_suite, batch_fields_suite;
extern const struct unit_suite share_suite; /* share */
/* v2 streaming */
extern const struct unit_suite stream_suite;
/* composition (issue 12) */
extern const struct unit_suite compose_suite;

#endif
