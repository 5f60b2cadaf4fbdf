#!/usr/bin/env bash
# Runs every test suite (each even if an earlier one failed) and ends with
# one line "N passed, N failed, N skipped" over all of them; exit 0 only if
# nothing failed.
#
#   unit         build/unit_tests (C, pure modules)
#   includes     tests/check_includes.py: the module graph of src/ (no cycles,
#                the seams between front end, job, scheduler and fetcher)
#   alloc        allocation failure injection (tests/alloc)
#   clang        the whole build under clang with -Werror (one test)
#   format       make format-check: the sources in the .clang-format style
#   integration  tests/integration/run.py against ./fanoutd
#   client       tests/client/test_client.py: the Python client (clients/python)
#                against the daemon
#   robustness   tests/robustness/run.py: slow clients, connection limits,
#                upstream faults, shutdown and reload edge cases
#   service      tests/service/test_service.py: units, install, .deb, man pages,
#                promtool, sd_notify, socket activation, request ids, access log
#   fuzz         replay of every input the fuzzers found (tests/fuzz/regressions)
#   acceptance   ../shared/acceptance/run.sh, when it is there: the modules in
#                $ACCEPTANCE_MODULES (default test_contract and test_v2, the
#                parts of the contract that are built; test_v3 joins as v3 does:
#                `make check-acceptance` runs all three)
#
# FANOUTD and UNIT_TESTS name the binaries (make check-asan and check-tsan
# point them at sanitizer builds); SKIP lists suites to leave out.
set -u
cd "$(dirname "$0")/.."
export FANOUTD="${FANOUTD:-./fanoutd}"
UNIT_TESTS="${UNIT_TESTS:-build/unit_tests}"
ALLOC_TESTS="${ALLOC_TESTS:-build/alloc_tests}"
export FAILMALLOC="${FAILMALLOC:-build/fanoutd-failmalloc}"
SKIP="${SKIP:-}"
passed=0 failed=0 skipped=0

# Under a sanitizer every process writes its report to a file in one folder;
# any report there at the end is a failure, whichever test started the process.
if [ -n "${SANITIZER:-}" ]; then
    reports=$(mktemp -d /tmp/fanoutd-san.XXXXXX)
    for v in ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS; do
        export "$v=${!v:-}:log_path=$reports/report"
    done
fi

skip() { case " $SKIP " in *" $1 "*) echo "== $1: skipped (SKIP)"; skipped=$((skipped + 1)); return 0 ;; esac; return 1; }

# shellcheck source=tests/summary.sh
source tests/summary.sh

skip unit || run unit "$UNIT_TESTS"

skip includes || run includes python3 tests/check_includes.py

# Allocation failure injection: every operation with each allocation failing
# in turn, then the daemon under traffic with every Nth allocation failing.
if skip alloc || [ -n "${SKIP_ALLOC:-}" ]; then
    :
else
    run alloc "$ALLOC_TESTS"
    run alloc-daemon python3 tests/alloc/test_daemon.py
fi

if skip clang; then
    :
elif command -v clang >/dev/null; then
    log=$(mktemp)
    if make -s CC=clang BUILD=build/clang BIN=build/clang/fanoutd build/clang/fanoutd >"$log" 2>&1; then
        echo "1 passed, 0 failed" >"$log"
    else
        cat "$log"; echo "0 passed, 1 failed" >>"$log"
    fi
    tally "clang -Werror build" "$log" 0
    rm -f "$log"
else
    echo "== clang build: clang not installed, skipped"; skipped=$((skipped + 1))
fi

# Formatting: the sources in the .clang-format style (make format rewrites them).
if skip format; then
    :
elif command -v clang-format >/dev/null; then
    log=$(mktemp)
    if make -s format-check >"$log" 2>&1; then
        echo "1 passed, 0 failed" >"$log"
    else
        head -n 40 "$log"; echo "0 passed, 1 failed" >>"$log"
    fi
    tally "format-check" "$log" 0
    keep_failures "format-check" "$log"
    rm -f "$log"
else
    echo "== format-check: clang-format not installed, skipped"; skipped=$((skipped + 1))
fi

skip integration || run integration python3 tests/integration/run.py
skip client || run client python3 tests/client/test_client.py

skip robustness || run robustness python3 tests/robustness/run.py

skip service || run service python3 tests/service/test_service.py

# Every crash the fuzzers ever found, replayed (needs clang's libFuzzer).
if skip fuzz; then
    :
elif command -v clang >/dev/null && [ -f tests/fuzz/fuzz.mk ]; then
    run fuzz-regressions make -s check-fuzz-regressions
fi

if skip acceptance; then
    :
elif [ -x ../shared/acceptance/run.sh ]; then
    # shellcheck disable=SC2086 # a list of module names
    run acceptance ../shared/acceptance/run.sh ${ACCEPTANCE_MODULES:-test_contract test_v2}
else
    echo "== acceptance: ../shared/acceptance not found, skipped"; skipped=$((skipped + 1))
fi

if [ -n "${SANITIZER:-}" ]; then
    found=$(ls "$reports" | wc -l)
    if [ "$found" -gt 0 ]; then
        echo "== $SANITIZER: $found sanitizer reports:"
        head -n 60 "$reports"/*
        failed=$((failed + found))
    else
        echo "== $SANITIZER: no sanitizer reports"
        passed=$((passed + 1))
    fi
    rm -rf "$reports"
fi

print_failures
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
