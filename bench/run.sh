#!/usr/bin/env bash
# make bench: fanoutd against the peers of ../shared/bench in one interleaved
# run; writes bench/RESULTS.md, bench/results.json and bench/chart.svg.
# fanoutd runs with its systemd unit's Environment= settings.
#
#   BENCH_ARGS   extra arguments for the harness (default: --retries 2)
#   WORKERS      fanoutd workers (default 128: the 100-URL fan-out scenario
#                needs more than 100 fetches at once)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared/bench
[ -d "$shared" ] || { echo "bench: $shared not found" >&2; exit 1; }
bash "$shared/setup.sh"
command -v gnuplot >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null; } || true
make -s fanoutd
workers=${WORKERS:-128}
# fanoutd runs in the environment its systemd unit gives it (glibc malloc
# tunables; see systemd/fanoutd.service), as `make soak` does.
unit_env=$(sed -n 's/^Environment=//p' systemd/fanoutd.service | tr '\n' ' ')
sut="env $unit_env$PWD/fanoutd --listen 127.0.0.1:{port} --workers $workers --log-level warn"
args=${BENCH_ARGS:---retries 2}
cmd="bash $shared/run.sh --sut '$sut' --sut-name fanoutd $args"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Idle memory: fanoutd started with the same flags, nothing sent, after 1 s:
# RSS with the benchmark's workers, and private (anonymous) memory with the
# default workers (64), the benchmark's and 1024.
idle_kib=0
anon_json="{"
for w in 64 "$workers" 1024; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # shellcheck disable=SC2086 # $unit_env holds several words
    env $unit_env ./fanoutd --listen 127.0.0.1:$port --workers "$w" --log-level warn &
    pid=$!
    sleep 1
    [ "$w" = "$workers" ] && idle_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
    anon_json="$anon_json\"$w\": $(awk '/RssAnon/ {print $2}' /proc/$pid/status),"
    kill $pid; wait $pid || true
done
anon_json="${anon_json%,}}"

# shellcheck disable=SC2086 # $args holds several arguments
bash "$shared/run.sh" --sut "$sut" --sut-name fanoutd $args --out "$tmp/results.json" \
    | tee "$tmp/table.txt"
python3 - "$tmp/results.json" "$idle_kib" "$anon_json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
res["idle_rss_mib"] = int(sys.argv[2]) / 1024
res["idle_anon_kib"] = json.loads(sys.argv[3])
json.dump(res, open(sys.argv[1], "w"), indent=1)
PY
sed -i '/^(.*details in .*)$/d' "$tmp/table.txt"
cp "$tmp/results.json" bench/results.json
python3 bench/report.py bench/results.json "$tmp/table.txt" "$cmd" bench/RESULTS.md bench/chart.dat
if command -v gnuplot >/dev/null; then
    gnuplot bench/chart.gp && echo "bench: wrote bench/RESULTS.md and bench/chart.svg"
else
    echo "bench: gnuplot not installed; bench/RESULTS.md written without a new chart" >&2
fi
