/*
 * test_util.c - the one checked number parser (fo_parse_num, err.h) and
 * the outcome table (outcome.h).
 */
#include <limits.h>

#include "harness.h"
#include "outcome.h"

static void test_parse_num(void)
{
    static const struct {
        const char *in;
        long long min, max;
        fo_err want;
        long long out;
    } cases[] = {
        { "0", 0, 10, FO_OK, 0 },
        { "10", 0, 10, FO_OK, 10 },
        { "11", 0, 10, FO_ETOOBIG, 10 },
        { "-1", 0, 10, FO_ETOOBIG, 0 },
        { "-5", -10, 10, FO_OK, -5 },
        { "99999999999999999999999", 0, LLONG_MAX, FO_ETOOBIG, LLONG_MAX },
        { "-99999999999999999999999", LLONG_MIN, 0, FO_ETOOBIG, LLONG_MIN },
        { "", 0, 10, FO_EINVAL, 0 },
        { "-", 0, 10, FO_EINVAL, 0 },
        { "+1", 0, 10, FO_EINVAL, 0 },
        { " 1", 0, 10, FO_EINVAL, 0 },
        { "1 ", 0, 10, FO_EINVAL, 0 },
        { "1x", 0, 10, FO_EINVAL, 0 },
        { "0x10", 0, 100, FO_EINVAL, 0 },
    };
    long long out;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fo_err err = fo_parse_num(cases[i].in, cases[i].min, cases[i].max, &out);
        CHECK_CASE(err == cases[i].want, cases[i].in);
        CHECK_CASE(out == cases[i].out, cases[i].in);
    }
    CHECK_EQ_INT(fo_parse_num(NULL, 0, 1, &out), FO_EINVAL);
}

static void test_refusal_table(void)
{
    /* Every refusal has a status and a code; a counted one has a log word. */
    for (int r = 0; r < REFUSE_COUNT; r++) {
        const struct refusal_row *row = refusal_row((enum refusal)r);
        CHECK(row->status >= 400 && row->status < 600);
        CHECK(row->code != NULL && row->code[0] != '\0');
        CHECK(row->metric < 0 || row->log_word != NULL);
    }
    CHECK_EQ_INT(refusal_row(REFUSE_OVERLOADED)->status, 503);
    CHECK(refusal_row(REFUSE_OVERLOADED)->headers == outcome_hdr_retry);
    CHECK_EQ_INT(refusal_row(REFUSE_UNAUTHORIZED)->metric, OUT_UNAUTHORIZED);
    CHECK_EQ_INT(refusal_of_malformed(414), REFUSE_URI_TOO_LONG);
    CHECK_EQ_INT(refusal_of_malformed(400), REFUSE_MALFORMED);
}

static const struct unit_test tests[] = {
    { "parse_num", test_parse_num },
    { "refusal_table", test_refusal_table },
};

UNIT_SUITE(util_suite, "util", tests);
