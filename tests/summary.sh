# Sourced by tests/run-all.sh and .ci/run: runs a test command and adds up
# its closing "N passed, N failed[, N skipped]" line into the caller's
# $passed, $failed and $skipped. A command with no such line, or that exits
# non-zero while reporting no failure, counts as one failure. Each failing
# test's report (unittest's FAIL:/ERROR: blocks) is also kept, and
# print_failures shows them all again at the end, where a reader of a long
# log looks first.

failure_reports=$(mktemp)
trap 'rm -f "$failure_reports"' EXIT

# Copies unittest's "FAIL: ..."/"ERROR: ..." blocks, up to the next ==== or
# ---- rule that follows the traceback, from a log into $failure_reports.
keep_failures() {
    awk -v suite="$1" '
        /^(FAIL|ERROR): / { keep = 1; print "-- " suite ": " $0; next }
        keep && /^(=+|-+)$/ { if (++rules > 1) { keep = 0; rules = 0 } ; next }
        keep { print }
    ' "$2" >>"$failure_reports"
}

print_failures() {
    [ -s "$failure_reports" ] || return 0
    echo "== failing tests, again:"
    cat "$failure_reports"
}

# Adds the counts of a runner's closing "N passed, N failed[, N skipped]" line.
tally() {
    local name=$1 log=$2 status=$3 line p f s
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        echo "== $name: no summary line (exit $status): counted as 1 failure"
        failed=$((failed + 1))
        return
    fi
    p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")
    s=$(sed -nE 's/.*, ([0-9]+) skipped.*/\1/p' <<<"$line")
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
    if [ "$status" != 0 ] && [ "$f" = 0 ]; then failed=$((failed + 1)); fi
    echo "== $name: $line"
}

run() {
    local name=$1; shift
    local log; log=$(mktemp)
    echo "== $name: $*"
    "$@" 2>&1 | tee "$log"
    tally "$name" "$log" "${PIPESTATUS[0]}"
    keep_failures "$name" "$log"
    rm -f "$log"
}
