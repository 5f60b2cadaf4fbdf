#!/usr/bin/python3
"""make bench-v2: what the v2 features cost and save, each against its ideal. Writes bench/V2.md.

1. Streaming: time to the first result line for one 10 ms item among 99 of 1000 ms, and to the
   summary line, against the buffered document's time.
2. Dependencies: a chain of 5 items of 20 ms, each depending on the one before and using its status
   in its url (${ID.status}), against 5 independent items and one item.
3. Coalescing and the cache: 16 concurrent clients, each on its own connection, posting the same
   batch of 10 overlapping /delay 20 ms URLs for a fixed time, on four daemons (both off, coalesce,
   cache, both on): batches/s, upstream requests per batch, p50 batch latency.

Upstream: the nginx of ../shared/bench, started as bench/scaling.py starts it (/fast: 1 KiB of JSON
at once; /delay?ms=N: a small JSON after N ms; every URL its own query string). Its template has
`access_log off`, so upstream requests are counted from the daemon's /metrics (see count_fetches).
Each configuration gets a fresh daemon (128 workers) in the environment its systemd unit gives it,
as in make bench-scaling. Loopback only; bounded in count and time.
"""
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
BENCH = os.path.join(ROOT, os.pardir, "shared", "bench")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from soak import unit_environment  # noqa: E402 (the daemon runs as its unit runs it)
from scaling import free_port, wait_port  # noqa: E402 (bench/, this script's folder)
WORKERS = 128
STREAM_REPEAT = 5
CHAIN_LEN = 5
HOP_MS = 20
CHAIN_REPEAT = 10
SHARE_CLIENTS = 16
SHARE_URLS = 10
SHARE_DELAY_MS = 20
SHARE_SECONDS = 5.0
SHARE_MAX_BATCHES = 20000          # per client: a bound on the loop besides the time
CACHE_TTL_MS = 1000
SHARE_CONFIGS = (("both off", False, 0), ("coalesce on", True, 0),
                 ("cache on (ttl 1000 ms)", False, CACHE_TTL_MS),
                 ("both on", True, CACHE_TTL_MS))


class Daemon:
    """A fanoutd on a free loopback port, from a config file in tmp (or flags), stopped by stop()."""

    def __init__(self, tmp, name, settings):
        self.port = free_port()
        conf = os.path.join(tmp, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(f"listen = 127.0.0.1:{self.port}\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        self.proc = subprocess.Popen([os.path.join(ROOT, "fanoutd"), "--config", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=unit_environment())
        try:
            wait_port(self.port)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def post(conn, doc, headers=None):
    """One POST /batch on conn; the parsed answer (raises unless 200 with nothing failed)."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request("POST", "/batch", json.dumps(doc), h)
    resp = conn.getresponse()
    raw = resp.read()
    ans = json.loads(raw)
    if resp.status != 200 or ans["summary"]["failed"]:
        raise RuntimeError(f"bad batch: {resp.status} {raw[:300]!r}")
    return ans


def batch_ms(port, requests):
    """A buffered batch on a new connection: (ms, answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        t0 = time.perf_counter()
        ans = post(conn, {"timeout_ms": 60000, "requests": requests})
        return (time.perf_counter() - t0) * 1000, ans
    finally:
        conn.close()


def first_line_ms(port, urls):
    """A streamed batch (Accept: application/x-ndjson): ms to its first result line, and to
    its summary line."""
    body = json.dumps({"timeout_ms": 60000, "requests": urls})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        t0 = time.perf_counter()
        conn.request("POST", "/batch", body, {"Content-Type": "application/json",
                                              "Accept": "application/x-ndjson"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"stream refused: {resp.status} {resp.read()[:300]!r}")
        first = None
        first_index = None
        for _ in range(len(urls) * 100 + 10):
            line = resp.readline()
            if not line:
                raise RuntimeError("stream ended without its summary line")
            if first is None and b'"index"' in line:
                first = (time.perf_counter() - t0) * 1000
                first_index = json.loads(line)["index"]
            if line.startswith(b'{"summary"'):
                break
        last = (time.perf_counter() - t0) * 1000
        if first_index != 0:
            raise RuntimeError(f"first streamed line is item {first_index}, not the 10 ms item 0")
        return first, last
    finally:
        conn.close()


def measure_stream(tmp, up):
    """Time to the first line of a stream against the buffered answer's time, for one 10 ms
    item among 99 of 1 s (128 workers, so every item runs at once)."""
    d = Daemon(tmp, "stream", {"workers": WORKERS, "log_level": "warn"})
    try:
        urls = [f"{up}/delay?ms=10"] + [f"{up}/delay?ms=1000&i={i}" for i in range(99)]
        batch_ms(d.port, urls)                             # warm-up: workers, connections
        firsts, ends, buffered = [], [], []
        for _ in range(STREAM_REPEAT):
            first, last = first_line_ms(d.port, urls)
            firsts.append(first)
            ends.append(last)
            buffered.append(batch_ms(d.port, urls)[0])
        return statistics.median(firsts), statistics.median(ends), statistics.median(buffered)
    finally:
        d.stop()


def chain(up, n):
    """n items of HOP_MS, s(k) depending on s(k-1) and putting its status into its url."""
    items = [{"id": "s0", "url": f"{up}/delay?ms={HOP_MS}&i=0"}]
    for k in range(1, n):
        items.append({"id": f"s{k}", "depends_on": [f"s{k - 1}"],
                      "url": f"{up}/delay?ms={HOP_MS}&i={k}&prev=${{s{k - 1}.status}}"})
    return items


def measure_deps(tmp, up):
    """Median batch ms (and median sum of the items' duration_ms) of a chain, of as many
    independent items, and of one item."""
    d = Daemon(tmp, "deps", {"workers": WORKERS, "log_level": "warn"})
    try:
        shapes = {"chain": chain(up, CHAIN_LEN),
                  "independent": [f"{up}/delay?ms={HOP_MS}&i={k}" for k in range(CHAIN_LEN)],
                  "one": [f"{up}/delay?ms={HOP_MS}&i=0"]}
        out = {}
        for name, reqs in shapes.items():
            batch_ms(d.port, reqs)                         # warm-up
            times, sums = [], []
            for _ in range(CHAIN_REPEAT):
                ms, ans = batch_ms(d.port, reqs)
                times.append(ms)
                sums.append(sum(r["duration_ms"] for r in ans["results"]))
                if name == "chain" and [r["id"] for r in ans["results"]] != [f"s{k}" for k in
                                                                             range(CHAIN_LEN)]:
                    raise RuntimeError(f"chain answered in another order: {str(ans)[:300]}")
            out[name] = (statistics.median(times), statistics.median(sums), min(times), max(times))
            print(f"deps {name}: median {out[name][0]:.1f} ms (min {out[name][2]:.1f}, "
                  f"max {out[name][3]:.1f}), items' duration_ms sum {out[name][1]:.1f}",
                  file=sys.stderr)
        return out
    finally:
        d.stop()


def metrics(port):
    """The daemon's /metrics as {name: value} (unlabelled series only)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    vals = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            vals[name] = float(value)
    return vals


def cpu_s(pid):
    """CPU seconds (user + system) process pid has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delay_body_len(up, ms):
    """Bytes of the body /delay?ms=ms answers (always the same for one ms)."""
    conn = http.client.HTTPConnection(up.split("//")[1].split(":")[0], int(up.rsplit(":", 1)[1]),
                                      timeout=10)
    try:
        conn.request("GET", f"/delay?ms={ms}&i=probe")
        resp = conn.getresponse()
        return len(resp.read())
    finally:
        conn.close()


def share_client(port, doc, end, out, errors):
    """Posts doc again and again on one connection until end; appends each batch's ms to out."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(SHARE_MAX_BATCHES):
            if time.monotonic() >= end:
                break
            t0 = time.perf_counter()
            post(conn, doc)
            out.append((time.perf_counter() - t0) * 1000)
    except Exception as e:                                 # noqa: BLE001 (reported by the caller)
        errors.append(repr(e))
    finally:
        conn.close()


def measure_share(tmp, up, name, coalesce, ttl, body_len):
    """SHARE_CLIENTS clients posting the same batch for SHARE_SECONDS on a daemon with this
    coalesce and cache_ttl_ms."""
    slug = name.split()[0] + ("-c" if coalesce else "") + ("-t" if ttl else "")
    d = Daemon(tmp, f"share-{slug}", {"workers": WORKERS, "log_level": "warn",
                                      "coalesce": "on" if coalesce else "off",
                                      "cache_ttl_ms": ttl})
    try:
        # warm-up on URLs the measured batch does not use: workers started, connections open
        batch_ms(d.port, [f"{up}/delay?ms={SHARE_DELAY_MS}&w={i}" for i in range(WORKERS)])
        doc = {"timeout_ms": 10000,
               "requests": [f"{up}/delay?ms={SHARE_DELAY_MS}&i={k}" for k in range(SHARE_URLS)]}
        before = metrics(d.port)
        cpu0, own0 = cpu_s(d.proc.pid), os.times()
        lat = [[] for _ in range(SHARE_CLIENTS)]
        errors = []
        t0 = time.monotonic()
        end = t0 + SHARE_SECONDS
        threads = [threading.Thread(target=share_client, args=(d.port, doc, end, lat[c], errors),
                                    daemon=True) for c in range(SHARE_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, end + 30 - time.monotonic()))
        elapsed = time.monotonic() - t0
        cpu1, own1 = cpu_s(d.proc.pid), os.times()
        if any(t.is_alive() for t in threads):
            raise RuntimeError(f"{name}: a client is still running 30 s after the end")
        if errors:
            raise RuntimeError(f"{name}: {len(errors)} clients failed, first: {errors[0]}")
        after = metrics(d.port)
        times = [ms for c in lat for ms in c]
        batches = len(times)

        def delta(key):
            return after.get(key, 0) - before.get(key, 0)
        fetched_bytes = delta("fanoutd_upstream_response_bytes_total")
        row = {"name": name, "batches": batches, "elapsed": elapsed,
               "bps": batches / elapsed, "sps": batches * SHARE_URLS / elapsed,
               "fetches": fetched_bytes / body_len, "misses": delta("fanoutd_cache_misses_total"),
               "hits": delta("fanoutd_cache_hits_total"),
               "coalesced": delta("fanoutd_coalesced_items_total"),
               "p50": statistics.median(times),
               "p90": statistics.quantiles(times, n=10)[-1] if batches > 1 else times[0],
               "odd_bytes": fetched_bytes % body_len,
               "cpu": (cpu1 - cpu0) / elapsed * 100,
               "client_cpu": (own1.user + own1.system - own0.user - own0.system) / elapsed * 100}
        row["per_batch"] = row["fetches"] / batches
        print(f"{name}: {row['bps']:.1f} batches/s, {row['per_batch']:.3f} upstream requests per "
              f"batch, p50 {row['p50']:.1f} ms (misses {row['misses']:.0f}, hits {row['hits']:.0f}, "
              f"coalesced {row['coalesced']:.0f}, fetches {row['fetches']:.1f})", file=sys.stderr)
        return row
    finally:
        d.stop()


def main():
    # SIGTERM (e.g. from make's caller) runs the finally clauses like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="fanoutd-v2.")
    port = free_port()
    nginx = subprocess.Popen(["sh", os.path.join(BENCH, "nginx-run.sh"),
                              os.path.join(BENCH, "upstream", "nginx.conf.tmpl"), str(port), tmp],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    started = time.monotonic()
    try:
        wait_port(port)
        up = f"http://127.0.0.1:{port}"
        stream = measure_stream(tmp, up)
        print(f"stream: first line {stream[0]:.1f} ms, summary {stream[1]:.1f} ms, "
              f"buffered {stream[2]:.1f} ms", file=sys.stderr)
        deps = measure_deps(tmp, up)
        body_len = delay_body_len(up, SHARE_DELAY_MS)
        share = [measure_share(tmp, up, name, c, ttl, body_len) for name, c, ttl in SHARE_CONFIGS]
    finally:
        os.killpg(nginx.pid, signal.SIGTERM)
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(nginx.pid, signal.SIGKILL)
            nginx.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s", file=sys.stderr)

    chain_ideal = CHAIN_LEN * HOP_MS
    ch, ind, one = deps["chain"], deps["independent"], deps["one"]
    out = ["# fanoutd v2 features", "",
           f"Written by `make bench-v2` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
           f"({os.cpu_count()} shared cores). Each section runs on a fresh daemon ({WORKERS} "
           "workers) in its systemd unit's environment, against the nginx upstream of "
           "../shared/bench (`/delay?ms=N` answers after N ms; every URL its own query string). "
           "Ratios within one run are what count: the machine is shared.", "",
           "## Streaming (one /delay 10 ms item and 99 of 1000 ms)", "",
           f"Median of {STREAM_REPEAT} batches each way (after one warm-up batch). Ideal: the first "
           "line at about 10 ms, the summary and the buffered document at about 1000 ms.", "",
           "| first result line ms (stream) | summary line ms (stream) | whole document ms (buffered) |",
           "|---:|---:|---:|",
           f"| {stream[0]:.1f} | {stream[1]:.1f} | {stream[2]:.1f} |", "",
           f"## Dependencies (/delay {HOP_MS} ms items)", "",
           f"Median of {CHAIN_REPEAT} sequential batches (after one warm-up batch), each on a new "
           f"connection. The chain: items `s0`..`s{CHAIN_LEN - 1}`, `s(k)` with "
           f"`\"depends_on\": [\"s(k-1)\"]` and `&prev=${{s(k-1).status}}` in its url (a "
           "reference substituted before it runs). Overhead per hop = (chain median - "
           f"{chain_ideal}) / {CHAIN_LEN}. \"items' duration_ms sum\": the median over batches of "
           "the sum of the items' own `duration_ms` (the fetches alone).", "",
           "| batch | ideal ms | median ms | min ms | max ms | items' duration_ms sum |",
           "|---|---:|---:|---:|---:|---:|",
           f"| chain of {CHAIN_LEN} | {chain_ideal} | {ch[0]:.1f} | {ch[2]:.1f} | {ch[3]:.1f} | {ch[1]:.1f} |",
           f"| {CHAIN_LEN} independent | {HOP_MS} | {ind[0]:.1f} | {ind[2]:.1f} | {ind[3]:.1f} | {ind[1]:.1f} |",
           f"| one item | {HOP_MS} | {one[0]:.1f} | {one[2]:.1f} | {one[3]:.1f} | {one[1]:.1f} |", "",
           f"Overhead per hop: ({ch[0]:.1f} - {chain_ideal}) / {CHAIN_LEN} = "
           f"**{(ch[0] - chain_ideal) / CHAIN_LEN:.1f} ms** (one item alone is {one[0] - HOP_MS:.1f} ms "
           f"over its {HOP_MS} ms).", "",
           "## Coalescing and the cache", "",
           f"{SHARE_CLIENTS} client threads, each on its own kept-alive connection, each posting the "
           f"same batch of {SHARE_URLS} URLs (`/delay?ms={SHARE_DELAY_MS}&i=K`, K = 0..{SHARE_URLS - 1}) "
           f"again and again for {SHARE_SECONDS:.0f} s; one fresh daemon per configuration "
           f"(config file: `coalesce`, `cache_ttl_ms`), warmed up on other URLs. Ideal with both "
           f"off: {SHARE_URLS} upstream requests per batch at about {SHARE_DELAY_MS} ms each; "
           f"with the cache, about {SHARE_URLS} per {CACHE_TTL_MS} ms in all.", "",
           "Upstream requests are counted from the daemon's `/metrics`, not by the upstream: "
           "the shared upstream template has `access_log off`. The count is "
           "`fanoutd_upstream_response_bytes_total` (incremented by every fetch the daemon makes, "
           f"in fetch.c) divided by the {body_len} bytes one `/delay?ms={SHARE_DELAY_MS}` answer "
           "has; `fanoutd_cache_misses_total` (items that fetched themselves, counted only when "
           "coalescing or the cache is on), hits and coalesced items are shown beside it. CPU %: of one core, over the "
           f"{SHARE_SECONDS:.0f} s, for the daemon and for this script's client threads (both on the "
           f"same {os.cpu_count()} cores).", "",
           "| configuration | batches | batches/s | sub-requests/s | upstream requests per batch "
           "| p50 batch ms | p90 batch ms | misses | hits | coalesced | daemon CPU % | client CPU % |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in share:
        out.append(f"| {r['name']} | {r['batches']} | {r['bps']:.1f} | {r['sps']:.0f} | "
                   f"{r['per_batch']:.3f} | {r['p50']:.1f} | {r['p90']:.1f} | {r['misses']:.0f} | "
                   f"{r['hits']:.0f} | {r['coalesced']:.0f} | {r['cpu']:.0f} | {r['client_cpu']:.0f} |")
    odd = [r["name"] for r in share if r["odd_bytes"]]
    if odd:
        out += ["", "Note: the upstream byte count was not a whole number of answers in: "
                + ", ".join(odd) + " (some fetch received a partial or different body)."]
    out.append("")
    with open(os.path.join(ROOT, "bench", "V2.md"), "w") as f:
        f.write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
