"""Several fanoutd instances behind HAProxy, with the repository's config/haproxy.cfg as it
is (only its three 127.0.0.1 addresses are replaced by free ports).

- A rolling restart under load: 4 client threads send 200 batches through haproxy while
  each instance in turn is sent SIGTERM, drains, exits 0 and is started again; every
  batch is answered 200 with every item accounted for, and the restarted instances
  serve again.
- An instance that gets SIGTERM with a batch in flight is taken out of the rotation by
  haproxy's check (its /healthz says 503) while it still runs: new batches go to the
  other one, and the batch in flight is answered 200.
- A batch refused with 503 overloaded by one instance is answered by the other.
- A batch that an instance accepted is never sent again: the instance dies (SIGKILL)
  while its item is at the upstream; the client gets an error from haproxy, and the
  upstream saw the item once.

Skipped only when haproxy is not installed (scripts/setup installs it).
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import unittest

from common import RobustCase, RobustDaemon, new_tag, request, wait_for
from harness import REPO, free_port, tmpdir

HAPROXY = shutil.which("haproxy")
RECIPE = os.path.join(REPO, "config", "haproxy.cfg")


def served(d):
    """Batches answered 200 by daemon d, from its access log."""
    return sum(" status=200 " in line for line in d.log().splitlines() if " access " in line)


class Haproxy:
    def __init__(self, backends):
        self.port = free_port()
        self.dir = tmpdir()
        with open(RECIPE) as f:
            text = f.read()
        for fixed, port in (("127.0.0.1:8080", self.port), ("127.0.0.1:8081", backends[0]),
                            ("127.0.0.1:8082", backends[1])):
            if fixed not in text:
                raise AssertionError(f"{RECIPE} no longer has {fixed}; update this test")
            text = text.replace(fixed, f"127.0.0.1:{port}")
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(text)
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.proc = None

    def start(self):
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", self.cfg], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            raise AssertionError(f"haproxy -c refused the recipe: {check.stdout}{check.stderr}")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.cfg], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log)
        wait_for(lambda: self.healthz_ok() or self.proc.poll() is not None, 10,
                 "haproxy to answer")
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited: {self.log()}")
        return self

    def healthz_ok(self):
        try:
            return request(self.port, "GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


@unittest.skipIf(HAPROXY is None, "haproxy is not installed (scripts/setup deps installs it)")
class ClusterTest(RobustCase):
    CONFIG = {"workers": 16, "shutdown_grace_ms": 8000}

    def cluster(self, a_config=None, b_config=None):
        a = self.start_daemon(**(a_config or {}))
        b = self.start_daemon(**(b_config or {}))
        h = Haproxy([a.port, b.port]).start()
        self.addCleanup(h.stop)
        self.haproxy = h
        return [a, b], h

    def restart(self, old):
        """A new daemon on old's port and configuration, once old has exited."""
        d = RobustDaemon(self.config(), old.extra_args, old.env, old.host)
        d.write_raw(open(old.config_path).read())
        d.port = old.port
        self.addCleanup(self._check_ended_cleanly, d)
        self.addCleanup(d.stop)
        self.assertTrue(d._attempt(10), f"the restarted instance did not start:\n{d.tail()}")
        return d

    def run(self, result=None):
        before = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        h = getattr(self, "haproxy", None)
        if result is not None and len(result.failures) + len(result.errors) > before and h:
            print(f"\n--- haproxy log ---\n{h.log()[-3000:]}\n--- end ---")
        return out

    def post(self, port, items, timeout=30):
        return request(port, "POST", "/batch", json.dumps(items).encode(),
                       {"Content-Type": "application/json"}, timeout=timeout)

    def test_rolling_restart_under_load_loses_nothing(self):
        (a, b), h = self.cluster()
        tag = new_tag()
        answers, lock = [], threading.Lock()
        enough = threading.Event()       # both restarts done and seen serving again
        least, most, threads_n = 50, 100, 4  # batches per client thread: 200 to 400

        def client(n):
            for i in range(most):
                if i >= least and enough.is_set():
                    return
                items = [{"id": f"c{n}-{i}-{k}",
                          "url": self.up.url("/delay", ms=120, tag=tag, c=n, i=i, k=k)}
                         for k in range(3)]
                try:
                    r = self.post(h.port, items)
                except Exception as e:  # noqa: BLE001 - any failure is reported below
                    r = e
                with lock:
                    answers.append((items, r))

        threads = [threading.Thread(target=client, args=(n,), daemon=True)
                   for n in range(threads_n)]
        for t in threads:
            t.start()
        restarted = []
        try:
            for i, victim in enumerate((a, b)):
                # each instance serves some, then is stopped mid-stream and started again
                wait_for(lambda: served(victim) > 0 and len(answers) >= 40 * (i + 1), 30,
                         "batches flowing through haproxy to the instance about to restart")
                victim.signal(signal.SIGTERM)
                self.assertEqual(victim.wait(15), 0, f"a draining instance: {victim.tail()}")
                restarted.append(self.restart(victim))
                wait_for(lambda: served(restarted[-1]) > 0, 30,
                         "the restarted instance back in rotation")
        finally:
            enough.set()
            for t in threads:
                t.join(120)
        self.assertFalse(any(t.is_alive() for t in threads), "a client thread did not finish")
        total = len(answers)
        self.assertGreaterEqual(total, least * threads_n)
        bad = [(items[0]["id"], r) for items, r in answers
               if isinstance(r, Exception) or r.status != 200]
        self.assertEqual(bad, [], f"batches of {total} not answered 200 during the rolling "
                                  f"restart")
        for items, r in answers:
            doc = r.json()
            self.assertEqual([x["id"] for x in doc["results"]], [x["id"] for x in items],
                             "every item accounted for, in order")
            self.assertTrue(all(x["ok"] for x in doc["results"]), doc)
        # each item reached the upstream exactly once: nothing was sent twice
        self.assertEqual(len(self.up.requests(tag)), total * 3)

    def test_draining_instance_leaves_rotation_before_it_stops(self):
        (a, b), h = self.cluster(a_config={"loop_token": "fanoutd-a"},
                                 b_config={"loop_token": "fanoutd-b"})
        tag = new_tag()
        slow = [{"id": f"s{k}", "url": self.up.url("/delay", ms=3000, tag=tag, k=k)}
                for k in range(2)]
        pending = []
        t = threading.Thread(target=lambda: pending.append(self._try_post(h.port, slow)),
                             daemon=True)
        t.start()
        seen = wait_for(lambda: len(self.up.requests(tag)) == 2 and self.up.requests(tag), 10,
                        "the slow batch to reach the upstream")
        loop = ",".join(seen[0].header("CDN-Loop"))
        victim, name = (a, "fanoutd1") if "fanoutd-a" in loop else (b, "fanoutd2")
        victim.signal(signal.SIGTERM)
        wait_for(lambda: f"fanoutd/{name} is DOWN" in h.log(), 5,
                 "haproxy to take the draining instance out (its /healthz says 503)")
        self.assertIn("code: 503", h.log())
        self.assertIsNone(victim.proc.poll(), "the instance stopped before it left the rotation")
        refused_before = victim.log().count(" status=503 ")
        for i in range(10):
            r = self.post(h.port, [self.up.url("/json", v=i)])
            self.assertEqual(r.status, 200, r)
        self.assertEqual(victim.log().count(" status=503 "), refused_before,
                         "haproxy still sent batches to the instance it took out")
        t.join(30)
        r = pending[0]
        self.assertFalse(isinstance(r, Exception), r)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["summary"]["ok"], 2, "the in-flight batch was finished")
        self.assertEqual(victim.wait(10), 0, victim.tail())

    def test_overloaded_batch_is_answered_by_the_other(self):
        # a: one worker and room for one waiting item, so a batch of 4 slow items is refused
        (a, b), h = self.cluster(a_config={"workers": 1, "queue_capacity": 1})
        tag = new_tag()
        for i in range(12):
            items = [self.up.url("/delay", ms=50, tag=tag, i=i, k=k) for k in range(4)]
            r = self.post(h.port, items)
            self.assertEqual(r.status, 200, f"batch {i}: {r!r}")
            self.assertEqual(r.json()["summary"]["ok"], 4)
        self.assertEqual(served(a), 0)
        self.assertEqual(served(b), 12)
        refused = [ln for ln in a.log().splitlines() if " access " in ln and " status=503 " in ln]
        self.assertGreater(len(refused), 0, "haproxy never tried the overloaded instance")
        self.assertEqual(len(self.up.requests(tag)), 12 * 4, "a refused batch fetched nothing")

    def test_accepted_batch_is_never_sent_again(self):
        (a, b), h = self.cluster(a_config={"loop_token": "fanoutd-a"},
                                 b_config={"loop_token": "fanoutd-b"})
        tag = new_tag()
        item = {"id": "pay", "method": "POST", "body": {"amount": 1},
                "url": self.up.url("/delay", ms=3000, tag=tag)}
        pending = []
        t = threading.Thread(target=lambda: pending.append(self._try_post(h.port, [item])),
                             daemon=True)
        t.start()
        seen = wait_for(lambda: self.up.requests(tag), 10, "the item to reach the upstream")
        loop = ",".join(seen[0].header("CDN-Loop"))
        victim = a if "fanoutd-a" in loop else b
        proc, victim.proc = victim.proc, None   # killed on purpose: no clean exit to check
        proc.kill()            # dies with the batch accepted and its POST sent
        proc.wait()
        t.join(30)
        self.assertFalse(t.is_alive())
        r = pending[0]
        self.assertFalse(not isinstance(r, Exception) and r.status == 200,
                         f"a batch whose instance died was answered 200: {r!r}")
        self.assertEqual(len(self.up.requests(tag)), 1, "the accepted batch was sent again")

    def _try_post(self, port, items):
        try:
            return self.post(port, items)
        except OSError as e:
            return e
