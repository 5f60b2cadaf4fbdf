/*
 * test_trace.c - W3C traceparent checking and child lines (trace.c).
 */
#include <string.h>

#include "harness.h"
#include "trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static void test_parse(void)
{
    static const struct {
        const char *value;
        const char *want; /* NULL: invalid */
    } cases[] = {
        { "00-" TID "-" PID "-01", "00-" TID "-" PID "-01" },
        { "00-" TID "-" PID "-00", "00-" TID "-" PID "-00" },
        { "00-" TID "-" PID "-ff", "00-" TID "-" PID "-ff" },
        /* a higher version: parsed as far as 00 goes, sent as 00 */
        { "01-" TID "-" PID "-01", "00-" TID "-" PID "-01" },
        { "cc-" TID "-" PID "-01-what-the-future-holds", "00-" TID "-" PID "-01" },
        { "cc-" TID "-" PID "-01x", NULL },
        { "ff-" TID "-" PID "-01", NULL },  /* version ff */
        { "00-" TID "-" PID "-01-", NULL }, /* 00 is exactly 55 */
        { "00-" TID "-" PID "-0", NULL },
        { "00-00000000000000000000000000000000-" PID "-01", NULL }, /* zero trace-id */
        { "00-" TID "-0000000000000000-01", NULL },                 /* zero parent-id */
        { "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", NULL }, /* uppercase */
        { "00-" TID "-" PID "-0A", NULL },
        { "0x-" TID "-" PID "-01", NULL },
        { "00_" TID "-" PID "-01", NULL },
        { "00-" TID "-" PID "_01", NULL },
        { "00-" TID "g" PID "-01", NULL },
        { "00-4bf92f3577b34da6a3ce929d0e0e473-" PID "0-01", NULL }, /* dash misplaced */
        { " 00-" TID "-" PID "-01", NULL },
        /* optional white space after a field value is not part of it (RFC 9110 5.5) */
        { "00-" TID "-" PID "-01 \t", "00-" TID "-" PID "-01" },
        { "00-" TID "-" PID "-01 x", NULL },
        { "", NULL },
    };
    char out[TRACE_PARENT_LEN + 1];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int ok = trace_parse(cases[i].value, out);
        CHECK_CASE(ok == (cases[i].want != NULL), cases[i].value);
        if (ok && cases[i].want != NULL)
            CHECK_CASE(strcmp(out, cases[i].want) == 0, cases[i].value);
    }
    CHECK(!trace_parse(NULL, out));
}

static void test_child_line(void)
{
    char parent[TRACE_PARENT_LEN + 1], a[TRACE_LINE_SIZE], b[TRACE_LINE_SIZE];
    char back[TRACE_PARENT_LEN + 1];

    CHECK(trace_parse("00-" TID "-" PID "-01", parent));
    trace_child_line(parent, a);
    trace_child_line(parent, b);
    CHECK_EQ_INT(strlen(a), 13 + TRACE_PARENT_LEN);
    CHECK(strncmp(a, "traceparent: 00-" TID "-", 13 + 36) == 0);
    CHECK(strcmp(a + 13 + 52, "-01") == 0);
    CHECK(strncmp(a + 13 + 36, PID, 16) != 0); /* not the client's span */
    CHECK(strcmp(a, b) != 0);                  /* a new span id each time */
    CHECK(trace_parse(a + 13, back));          /* itself valid (non-zero, hex) */
}

static const struct unit_test tests[] = {
    { "traceparent_parse", test_parse },
    { "traceparent_child_line", test_child_line },
};

UNIT_SUITE(trace_suite, "trace", tests);
