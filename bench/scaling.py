#!/usr/bin/python3
"""make bench-scaling: how fanoutd's batch latency and memory grow with batch
size (1 to 1000) and with workers (8 to 1024). Writes bench/SCALING.md.

Upstream: the nginx of ../shared/bench (/fast: 1 KiB of JSON at once;
/delay?ms=N: a small JSON after N ms). Each configuration gets a fresh daemon;
each point is the median of a few sequential batches, and the peak RSS
(VmHWM) of the daemon after them. The daemon runs in the environment its
systemd unit gives it, as in make bench and make soak. Loopback only; bounded
in count and time.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
BENCH = os.path.join(ROOT, os.pardir, "shared", "bench")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from soak import unit_environment  # noqa: E402 (the daemon runs as its unit runs it)
DELAY_MS = 50
REPEAT = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def batch_ms(port, urls):
    body = json.dumps({"timeout_ms": 60000, "requests": urls})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    conn.request("POST", "/batch", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    ms = (time.perf_counter() - t0) * 1000
    if resp.status != 200 or doc["summary"]["failed"]:
        raise RuntimeError(f"bad batch: {resp.status} {str(doc)[:200]}")
    return ms


def measure(up, workers, n, path):
    port = free_port()
    proc = subprocess.Popen([os.path.join(ROOT, "fanoutd"), "--listen", f"127.0.0.1:{port}",
                             "--workers", str(workers), "--log-level", "warn",
                             "--max-timeout-ms", "120000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=unit_environment())
    try:
        wait_port(port)
        time.sleep(0.3)
        idle = status_kib(proc.pid, "VmRSS")
        urls = [f"{up}{path}{'&' if '?' in path else '?'}i={i}" for i in range(n)]
        batch_ms(port, urls)                               # warm-up: connections
        times = [batch_ms(port, urls) for _ in range(REPEAT)]
        return statistics.median(times), idle / 1024, status_kib(proc.pid, "VmHWM") / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main():
    tmp = tempfile.mkdtemp(prefix="fanoutd-scaling.")
    port = free_port()
    nginx = subprocess.Popen(["sh", os.path.join(BENCH, "nginx-run.sh"),
                              os.path.join(BENCH, "upstream", "nginx.conf.tmpl"), str(port), tmp],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    rows_size, rows_workers = [], []
    try:
        wait_port(port)
        up = f"http://127.0.0.1:{port}"
        for n in (1, 10, 100, 1000):
            fast = measure(up, 128, n, "/fast")
            slow = measure(up, 128, n, f"/delay?ms={DELAY_MS}")
            rows_size.append((n, fast, slow))
            print(f"batch {n}: fast {fast[0]:.1f} ms, delay {slow[0]:.1f} ms, peak {slow[2]:.1f} MiB",
                  file=sys.stderr)
        for w in (8, 64, 256, 1024):
            slow = measure(up, w, 1000, f"/delay?ms={DELAY_MS}")
            rows_workers.append((w, slow))
            print(f"workers {w}: {slow[0]:.1f} ms, idle {slow[1]:.1f} MiB, peak {slow[2]:.1f} MiB",
                  file=sys.stderr)
    finally:
        os.killpg(nginx.pid, signal.SIGTERM)
        nginx.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    out = ["# fanoutd scaling", "",
           f"Written by `make bench-scaling` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
           f"({os.cpu_count()} shared cores). Each point: the median of {REPEAT} sequential batches "
           "(after one warm-up batch) on a fresh daemon in its systemd unit's environment, and "
           "its peak RSS (VmHWM) after them. "
           f"`/fast` answers 1 KiB of JSON at once; `/delay` answers after {DELAY_MS} ms. "
           "Ratios within one run are what count: the machine is shared.", "",
           "## Batch size (128 workers)", "",
           f"| items | /fast: batch ms | /fast: ms per item | /delay {DELAY_MS} ms: batch ms "
           f"| ideal ceil(items/128) x {DELAY_MS} ms | peak RSS MiB |",
           "|---:|---:|---:|---:|---:|---:|"]
    for n, fast, slow in rows_size:
        ideal = -(-n // 128) * DELAY_MS
        out.append(f"| {n} | {fast[0]:.1f} | {fast[0] / n:.3f} | {slow[0]:.1f} | {ideal} | {slow[2]:.1f} |")
    out += ["", f"## Workers (batches of 1000 x /delay {DELAY_MS} ms)", "",
            f"| workers | batch ms | ideal ceil(1000/workers) x {DELAY_MS} ms | idle RSS MiB | peak RSS MiB |",
            "|---:|---:|---:|---:|---:|"]
    for w, slow in rows_workers:
        out.append(f"| {w} | {slow[0]:.1f} | {-(-1000 // w) * DELAY_MS} | {slow[1]:.1f} | {slow[2]:.1f} |")
    out += ["", "Streaming, dependencies, coalescing and the cache: `make bench-v2` (bench/V2.md)."]
    out.append("")
    with open(os.path.join(ROOT, "bench", "SCALING.md"), "w") as f:
        f.write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
