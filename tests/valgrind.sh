#!/usr/bin/env bash
# make check-valgrind: the integration and robustness modules that do not
# measure time, with every daemon run under valgrind's memcheck; then every
# valgrind log must say "definitely lost: 0" (or that no leaks are possible)
# and report no errors. (Timing tests - fan-out speed, timeouts, deadlines,
# overload, cancellation - are left out: valgrind slows fanoutd 20-50x.)
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
logs=$(mktemp -d /tmp/fanoutd-valgrind.XXXXXX)
export FANOUTD="valgrind --quiet --leak-check=full --show-leak-kinds=definite \
--errors-for-leak-kinds=definite --track-origins=no --log-file=$logs/vg.%p $PWD/fanoutd"
status=0

python3 tests/integration/run.py request_forms results merge methods_headers item_errors \
    security auth bad_input cli_config metrics_healthz || status=1
# (StartupSignals is left out: under valgrind it would time valgrind's own start.)
python3 tests/robustness/run.py upstream_faults shutdown_reload.Shutdown shutdown_reload.Reload || status=1

bad=0 total=0
for f in "$logs"/vg.*; do
    [ -e "$f" ] || continue
    total=$((total + 1))
    # --quiet logs only problems: any "definitely lost" with bytes, or an error.
    if grep -qE "definitely lost: [1-9]|Invalid (read|write|free)|uninitialised|Mismatched free|ERROR SUMMARY: [1-9]" "$f"; then
        echo "== valgrind found a problem in $f:"; head -n 40 "$f"
        bad=$((bad + 1))
    fi
done
echo "== valgrind: $total daemon runs checked, $bad with leaks or errors"
rm -rf "$logs"
[ "$total" -gt 0 ] || { echo "no valgrind logs: nothing was checked"; bad=1; }
[ "$bad" = 0 ] && [ "$status" = 0 ] && { echo "1 passed, 0 failed"; exit 0; }
echo "0 passed, 1 failed"
exit 1
