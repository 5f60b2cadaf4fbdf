/*
 * main.c - runs every unit test of every suite and prints one summary line,
 * "N passed, N failed" (N counts test functions); exit 0 only if none
 * failed. `--print-sample-config` writes config/fanoutd.conf's text instead
 * (make sample-config).
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "harness.h"

int unit_check_failures; /* see harness.h */
const char *unit_current_test = "";

static const struct unit_suite *const suites[] = {
    &encode_suite,  &policy_suite, &config_suite,       &batch_suite, &result_suite,
    &jtree_suite,   &queue_suite,  &sched_suite,        &job_suite,   &util_suite,
    &resil_suite,   &trace_suite,  &batch_fields_suite, /* v2 traceparent, batch fields */
    &share_suite,                                       /* share */
    &stream_suite,                                      /* v2 streaming */
    &compose_suite,
};

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;

    if (argc == 2 && strcmp(argv[1], "--print-sample-config") == 0) {
        config_print_sample(stdout);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: %s [--print-sample-config]\n", argv[0]);
        return 2;
    }
    for (size_t s = 0; s < sizeof(suites) / sizeof(suites[0]); s++) {
        for (size_t t = 0; t < suites[s]->n; t++) {
            const struct unit_test *test = &suites[s]->tests[t];
            unit_check_failures = 0;
            unit_current_test = test->name;
            test->fn();
            fflush(stdout);
            if (unit_check_failures == 0) {
                passed++;
            } else {
                failed++;
                printf("FAIL %s/%s (%d checks)\n", suites[s]->name, test->name,
                       unit_check_failures);
            }
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
