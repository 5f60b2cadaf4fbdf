#!/usr/bin/env bash
# tests/fuzz/run.sh - runs the libFuzzer targets (called by tests/fuzz/fuzz.mk).
#
#   run.sh fuzz    TARGET...   fuzz each for FUZZ_SECONDS on a scratch copy of
#                              its corpus, then replay its regressions
#   run.sh replay  TARGET...   replay tests/fuzz/regressions/<target>/* only
#   run.sh pending TARGET...   replay tests/fuzz/crashes-pending/<target>/*
#                              (known failures; reports, never fails)
#
# The repository's corpora are never written: new inputs and artifacts go to
# a scratch folder (FUZZ_SCRATCH, default a fresh mktemp -d), which is kept
# when something failed so the artifacts can be inspected.
set -u

mode=${1:?mode}
shift
here=$(cd "$(dirname "$0")" && pwd)
FUZZ_DIR=${FUZZ_DIR:-build/fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
NICE=${FUZZ_NICE:-nice -n 10}
COMMON=(-timeout=10 -rss_limit_mb=2048)
passed=0
failed=0

scratch=${FUZZ_SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/fanoutd-fuzz.XXXXXX")}
mkdir -p "$scratch"

hexdump_file() {
    if command -v xxd >/dev/null 2>&1; then
        xxd "$1" | head -n 64
    else
        od -A x -t x1z -v "$1" | head -n 64
    fi
}

# The lines of a sanitizer or libFuzzer report worth reading: what broke and
# the stack frames in fanoutd's code and the targets.
summary() {
    grep -E 'ERROR: |invariant broken|jansson refuses|SUMMARY: |#[0-9]+ 0x[0-9a-f]+ in .*/(src|tests/fuzz)/' \
        "$1" | head -n 16
}

# Runs every file in a folder through the target once; prints each failure.
# Returns the number of failing files.
replay_dir() {
    local bin=$1 dir=$2 quiet=${3:-0} bad=0 f log
    [ -d "$dir" ] || return 0
    for f in "$dir"/*; do
        [ -f "$f" ] || continue
        log="$scratch/replay.log"
        if $NICE "$bin" "${COMMON[@]}" -runs=1 "$f" >"$log" 2>&1; then
            [ "$quiet" = 1 ] || echo "    ok   $f"
        else
            bad=$((bad + 1))
            echo "    FAIL $f"
            summary "$log" | sed 's/^/        /'
        fi
    done
    [ "$bad" -eq 0 ]
}

fuzz_one() {
    local t=$1 bin="$FUZZ_DIR/$1" corpus="$scratch/corpus/$1" art="$scratch/artifacts/$1/"
    local log="$scratch/$1.log" rc=0 a
    mkdir -p "$corpus" "$art"
    if [ -d "$here/corpus/$t" ]; then
        cp -R "$here/corpus/$t/." "$corpus/"
    fi
    local dict=()
    [ -f "$here/dict/$t.dict" ] && dict=(-dict="$here/dict/$t.dict")
    echo "== $t: fuzzing ${FUZZ_SECONDS}s"
    $NICE "$bin" "${COMMON[@]}" "${dict[@]}" -max_total_time="$FUZZ_SECONDS" \
        -print_final_stats=1 -artifact_prefix="$art" "$corpus" >"$log" 2>&1 || rc=$?
    grep -E '^#[0-9]+.*(DONE|INITED)' "$log" | tail -n 2 | sed 's/^/   /'
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" |
        tr '\n' ' ' | sed 's/^/   /; s/$/\n/'
    if [ "$rc" -ne 0 ] || ls "$art" | grep -q .; then
        echo "   FAILED (exit $rc); log: $log"
        summary "$log" | sed 's/^/   /'
        for a in "$art"*; do
            [ -f "$a" ] || continue
            echo "   artifact: $a"
            hexdump_file "$a" | sed 's/^/     /'
        done
        return 1
    fi
    return 0
}

for t in "$@"; do
    bin="$FUZZ_DIR/$t"
    ok=1
    if [ ! -x "$bin" ]; then
        echo "== $t: $bin not built"
        failed=$((failed + 1))
        continue
    fi
    case $mode in
    fuzz)
        fuzz_one "$t" || ok=0
        echo "== $t: regressions"
        replay_dir "$bin" "$here/regressions/$t" || ok=0
        ;;
    replay)
        echo "== $t: regressions"
        replay_dir "$bin" "$here/regressions/$t" || ok=0
        ;;
    pending)
        echo "== $t: crashes-pending (expected to fail until fixed)"
        replay_dir "$bin" "$here/crashes-pending/$t" || true
        ;;
    *)
        echo "unknown mode $mode" >&2
        exit 2
        ;;
    esac
    if [ "$ok" = 1 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done

if [ "$failed" -eq 0 ] && [ -z "${FUZZ_SCRATCH:-}" ]; then
    rm -rf "$scratch"
else
    echo "scratch folder kept: $scratch"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
