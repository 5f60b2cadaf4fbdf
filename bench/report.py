#!/usr/bin/python3
"""Turns the fan-out benchmark's results.json into bench/RESULTS.md and the
data for bench/chart.svg (make bench). Standard library only.

    bench/report.py RESULTS_JSON TABLE_TXT COMMAND OUT_MD OUT_DAT
"""
import json
import os
import sys
import time

res_path, table_path, command, out_md, out_dat = sys.argv[1:6]
res = json.load(open(res_path))
table = open(table_path).read().strip()
aggs = res["aggregators"]
sut = res.get("sut") or "fanoutd"


def value(name, scen, key):
    a = aggs.get(name, {})
    if a.get("status") != "ok":
        return None
    return a.get(key) if scen is None else a.get("scenarios", {}).get(scen, {}).get(key)


def fmt(v, unit=""):
    return "-" if v is None else (f"{v:.0f}{unit}" if abs(v) >= 100 else f"{v:.1f}{unit}")


peers = [n for n in aggs if n != sut and aggs[n].get("status") == "ok"]
direct = (res.get("direct") or {}).get("requests_per_s")
s = {k: value(sut, *k) for k in [("S1", "p50_ms"), ("S2", "subreq_per_s"),
                                  ("S2", "cpu_us_per_subreq"), ("S3", "subreq_per_s"),
                                  ("S4", "p50_ms"), (None, "peak_rss_mib")]}
nginx = "nginx_lua"
targets = []


def target(what, ok, measured):
    targets.append((what, "met" if ok else "not met", measured))


# Issue 14's targets, each against nginx+Lua within this run.
for scen, name in (("S2", "throughput-10"), ("S3", "throughput-100")):
    mine, theirs = value(sut, scen, "subreq_per_s"), value(nginx, scen, "subreq_per_s")
    if mine and theirs:
        target(f"{name}: sub-requests/s >= 1.1x nginx+Lua's", mine >= 1.1 * theirs,
               f"{fmt(mine)} vs {fmt(theirs)} ({mine / theirs:.2f}x)")
    mine, theirs = value(sut, scen, "p99_ms"), value(nginx, scen, "p99_ms")
    if mine and theirs:
        target(f"{name}: p99 <= nginx+Lua's", mine <= theirs, f"{mine:.1f} ms vs {theirs:.1f} ms")
    mine, theirs = value(sut, scen, "cpu_us_per_subreq"), value(nginx, scen, "cpu_us_per_subreq")
    if mine and theirs:
        target(f"{name}: CPU per sub-request <= 0.8x nginx+Lua's", mine <= 0.8 * theirs,
               f"{mine:.1f} us vs {theirs:.1f} us ({mine / theirs:.2f}x)")
if s[("S1", "p50_ms")]:
    target("fanout-latency 100 x 100 ms: median <= 105 ms", s[("S1", "p50_ms")] <= 105,
           f"{s[('S1', 'p50_ms')]:.1f} ms")
if s[("S4", "p50_ms")]:
    best = min((value(p, "S4", "p50_ms") for p in peers if value(p, "S4", "p50_ms")), default=None)
    target("big-batch 1000 x /fast: median below every peer's",
           best is not None and s[("S4", "p50_ms")] < best,
           f"{s[('S4', 'p50_ms')]:.1f} ms vs best peer {fmt(best, ' ms')}")
if s[(None, "peak_rss_mib")]:
    best = min((value(p, None, "peak_rss_mib") for p in peers if value(p, None, "peak_rss_mib")),
               default=None)
    target("peak RSS below every peer's", best is not None and s[(None, "peak_rss_mib")] < best,
           f"{s[(None, 'peak_rss_mib')]:.1f} MiB vs lowest peer {fmt(best, ' MiB')}")
idle = res.get("idle_rss_mib")
if idle is not None:
    target("idle RSS (reported)", True, f"{idle:.1f} MiB")
for workers, kib in sorted((res.get("idle_anon_kib") or {}).items(), key=lambda kv: int(kv[0])):
    target(f"idle private (anonymous) memory, {workers} workers (reported)", True,
           f"{kib / 1024:.1f} MiB")

env = res.get("env", {})
lines = [
    "# fanoutd benchmark results",
    "",
    f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: one "
    f"interleaved run of ../shared/bench with fanoutd as the system under test, on "
    f"{env.get('cpus')} cores (kernel {env.get('kernel')}; {env.get('nginx')}, node "
    f"{env.get('node')}, {env.get('python')}). Only ratios within this one run mean anything: "
    "the machine is shared, and the upstream, wrk, the client and every aggregator share its "
    "two cores (see the `other load` row).",
    "",
    "Command:",
    "",
    "```",
    command,
    "```",
    "",
    "## Targets",
    "",
    "| target | result | measured |",
    "|---|---|---|",
] + [f"| {w} | {r} | {m} |" for w, r, m in targets] + [
    "",
    "## Table",
    "",
    table,
    "",
    "![sub-requests per second and CPU per sub-request](chart.svg)",
    "",
]
# The v2 figures (streaming, dependencies, coalescing and cache) come from
# `make bench-v2`, which writes bench/V2.md: its last run is carried here.
v2 = os.path.join(os.path.dirname(os.path.abspath(out_md)), "V2.md")
if os.path.exists(v2):
    body = open(v2).read().split("\n", 1)[1].strip()
    lines += ["## v2 features (bench/V2.md, `make bench-v2`)", "", body.replace("\n## ", "\n### "), ""]
open(out_md, "w").write("\n".join(lines))

with open(out_dat, "w") as f:
    f.write("# aggregator S2_subreq_per_s S3_subreq_per_s S2_cpu_us S3_cpu_us\n")
    for name in [sut] + peers:
        vals = [value(name, "S2", "subreq_per_s"), value(name, "S3", "subreq_per_s"),
                value(name, "S2", "cpu_us_per_subreq"), value(name, "S3", "cpu_us_per_subreq")]
        f.write(name + " " + " ".join("0" if v is None else f"{v:.1f}" for v in vals) + "\n")
    if direct:
        f.write(f"wrk-direct {direct:.1f} {direct:.1f} 0 0\n")
print("\n".join(f"{w}: {r} ({m})" for w, r, m in targets))
