#!/usr/bin/python3
"""make soak (not in CI): SOAK_SECONDS (default 600) of mixed good and faulty
batches at about 70% of the capacity measured first on the same mix, against
./fanoutd ($FANOUTD overrides; in the environment systemd/fanoutd.service gives
it) and a local upstream (tests/integration/harness.py's Daemon and upstream.py). Every few seconds the daemon's RSS, open file
descriptors and threads are sampled. Passes only if they stay flat (the last
minute against the first minute after warm-up) and every response accounts for
every item. Loopback only; bounded in time. Ends with "N passed, N failed".
"""
import http.client
import json
import os
import random
import signal
import statistics
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import Daemon, Upstream  # noqa: E402 (the tests' one launcher and upstream)

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE_EVERY = 5
CLIENTS = 8
MAX_RESPONSE_BYTES = 100000

# The mix, on integration/upstream.py's endpoints: (path, query) by weight.
KINDS = [("/json", {"v": "ok"})] * 6 + [("/delay", None)] * 2 + [
    ("/status", {"code": 500}),
    ("/big", {"bytes": 2 * MAX_RESPONSE_BYTES}),   # over the cap: too_large
    ("/reset", {}),
    ("/short", {"bytes": 1000, "send": 10}),
]


def proc_sample(pid):
    """(RSS MiB, open fds, threads, anonymous RSS MiB, file-backed RSS MiB)"""
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f)
    kib = lambda k: int(st[k].split()[0]) / 1024   # noqa: E731
    return (kib("VmRSS"), len(os.listdir(f"/proc/{pid}/fd")), int(st["Threads"]),
            kib("RssAnon"), kib("RssFile"))


class Load:
    def __init__(self, port, up):
        self.port, self.up = port, up
        self.done = self.bad = 0
        self.problems = []
        self.lock = threading.Lock()

    def batch(self, rnd):
        n = rnd.randint(1, 20)
        items = []
        for k in range(n):
            path, query = rnd.choice(KINDS)
            if query is None:
                query = {"ms": rnd.randint(20, 80)}     # /delay: a slow answer, 20-80 ms
            items.append({"url": self.up.url(path, r=rnd.random(), **query), "id": f"i{k}"})
        merge = rnd.choice(["none", "none", "bodies", "deep"])
        body = json.dumps({"merge": merge, "timeout_ms": 5000, "requests": items})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/batch", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            doc = json.loads(resp.read())
        finally:
            conn.close()
        if resp.status != 200:
            return f"status {resp.status}: {str(doc)[:200]}"
        s = doc["summary"]
        if s["total"] != n or s["ok"] + s["failed"] != n:
            return f"summary does not account for {n} items: {s}"
        if merge == "none" and len(doc["results"]) != n:
            return f"{len(doc['results'])} results for {n} items"
        if merge != "none" and len(doc["errors"]) != s["failed"]:
            return "errors do not match failed"
        return None

    def run(self, seconds, rate=None):
        """CLIENTS threads, closed loop (rate None) or paced to `rate` batches/s."""
        end = time.monotonic() + seconds
        interval = CLIENTS / rate if rate else 0

        def client(seed):
            rnd = random.Random(seed)
            next_t = time.monotonic()
            while time.monotonic() < end:
                try:
                    problem = self.batch(rnd)
                except Exception as e:                         # noqa: BLE001 - counted
                    problem = f"{type(e).__name__}: {e}"
                with self.lock:
                    self.done += 1
                    if problem:
                        self.bad += 1
                        if len(self.problems) < 10:
                            self.problems.append(problem)
                if interval:
                    next_t += interval
                    time.sleep(max(0.0, next_t - time.monotonic()))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def unit_environment():
    """The Environment= settings of systemd/fanoutd.service: the soak runs the daemon in
    the environment the unit gives it (glibc's malloc tunables, see the unit)."""
    env = dict(os.environ)
    with open(os.path.join(ROOT, "systemd", "fanoutd.service")) as f:
        for line in f:
            if line.startswith("Environment="):
                key, _, value = line[len("Environment="):].strip().partition("=")
                env[key] = value
    return env


def main():
    up = Upstream(record=False).start()
    daemon = Daemon({"workers": 64, "max_response_bytes": MAX_RESPONSE_BYTES, "log_level": "warn"},
                    env=unit_environment())
    results = []
    try:
        daemon.start()
        port = daemon.port
        probe = Load(port, up)
        t0 = time.monotonic()
        probe.run(10)
        capacity = probe.done / (time.monotonic() - t0)
        rate = 0.7 * capacity
        print("daemon environment from the unit: " +
              (", ".join(f"{k}={v}" for k, v in unit_environment().items()
                         if os.environ.get(k) != v) or "nothing"))
        print(f"capacity {capacity:.1f} batches/s on this mix; soaking at {rate:.1f} for {SECONDS} s",
              flush=True)
        load = Load(port, up)
        samples = []
        runner = threading.Thread(target=load.run, args=(SECONDS, rate))
        start = time.monotonic()
        runner.start()
        while runner.is_alive():
            time.sleep(SAMPLE_EVERY)
            rss, fds, threads, anon, file_ = proc_sample(daemon.proc.pid)
            samples.append((time.monotonic() - start, rss, fds, threads, anon))
            print(f"  t={samples[-1][0]:5.0f} s  rss {rss:6.1f} MiB (anon {anon:5.1f}, files {file_:4.1f})"
                  f"  fds {fds:4d}  threads {threads:3d}  batches {load.done}", flush=True)
        runner.join()
        elapsed = time.monotonic() - start

        early = [s for s in samples if 60 <= s[0] < 120] or samples[: max(1, len(samples) // 4)]
        late = [s for s in samples if s[0] >= samples[-1][0] - 60] or samples[-max(1, len(samples) // 4):]
        rss0, rss1 = statistics.median(s[1] for s in early), statistics.median(s[1] for s in late)
        fd0, fd1 = max(s[2] for s in early), max(s[2] for s in late)
        th0, th1 = max(s[3] for s in early), max(s[3] for s in late)
        print(f"\nbatches {load.done} in {elapsed:.0f} s ({load.done / elapsed:.1f}/s), "
              f"bad answers {load.bad}")
        print(f"RSS median {rss0:.1f} MiB (minute 2) -> {rss1:.1f} MiB (last minute); "
              f"FDs max {fd0} -> {fd1}; threads max {th0} -> {th1}")
        for p in load.problems:
            print("  problem:", p)
        results = [
            ("every answer accounts for every item", load.bad == 0 and load.done > 0),
            ("RSS flat (last minute within 10% or 2 MiB of minute 2)",
             rss1 <= max(rss0 * 1.10, rss0 + 2)),
            ("file descriptors flat", fd1 <= fd0 + 8),
            ("threads flat", th1 <= th0),
            ("daemon alive", daemon.alive),
        ]
    finally:
        if daemon.alive:
            daemon.signal(signal.SIGTERM)
        rc = daemon.wait(30) if daemon.proc is not None else None
        daemon.stop()   # SIGKILL if it did not exit
        results.append(("clean exit on SIGTERM", rc == 0))
        up.stop()
    for what, ok in results:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    failed = sum(1 for _, ok in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
