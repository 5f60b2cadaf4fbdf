"""The daemon with failing allocations: build/fanoutd-failmalloc fails every Nth
allocation of fanoutd's own code and of jansson (tests/alloc/alloc_shim.c) once
it has started. Under traffic it must never crash: every answer is a 200 whose
document accounts for every item (items may fail), a JSON 503 `overloaded`
("out of memory", with Retry-After) when memory ran out before the batch was
accepted, a JSON 500 `internal_error` without Retry-After when it ran out while
building the answer of an accepted batch (its items were fetched: a retry would
fetch them again), or at worst a closed connection; afterwards it still stops
with exit status 0 on SIGTERM. Ends with "N passed, N failed, N skipped".

    python3 tests/alloc/test_daemon.py          (FAILMALLOC names the binary)
"""

import http.client
import json
import os
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "integration"))
from harness import Daemon, Upstream  # noqa: E402 (the tests' one launcher and upstream)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
BINARY = os.environ.get("FAILMALLOC", os.path.join(ROOT, "build", "fanoutd-failmalloc"))
FAIL_AFTER_MS = 400


class FailmallocDaemon(Daemon):
    """The failing-allocator daemon. Up means: it accepts a connection (no /healthz: its
    answer may already fail) and is still running past FAIL_AFTER_MS, when failures
    are on (a connection alone may have reached another process that took the port:
    then fanoutd exits "cannot listen" and Daemon.start() tries a fresh port)."""

    def __init__(self, every):
        super().__init__(None, ["--workers", "8", "--log-level", "warn"], binary=[BINARY],
                         env=dict(os.environ, FO_FAIL_EVERY=str(every),
                                  FO_FAIL_AFTER_MS=str(FAIL_AFTER_MS)))

    def healthy(self):
        try:
            socket.create_connection((self.host, self.port), timeout=0.5).close()
        except OSError:
            return False
        time.sleep(FAIL_AFTER_MS / 1000 + 0.1)   # failures are on from here
        return self.proc.poll() is None


class FailingAllocationsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream().start()

    @classmethod
    def tearDownClass(cls):
        cls.up.stop()

    def start(self, every):
        d = FailmallocDaemon(every)
        self.addCleanup(d.stop)
        try:
            return d.start()
        except RuntimeError as e:
            self.fail(f"fanoutd did not start: {e}")

    def payloads(self):
        urls = [self.up.url("/doc", doc=json.dumps({"path": f"/item/{i}",
                                                    "nested": {"k": [1, 2, 3]}}))
                for i in range(6)]
        yield json.dumps(urls), "application/json", 6
        yield "\n".join(urls), "text/plain", 6
        for merge in ("none", "bodies", "deep"):
            yield json.dumps({"merge": merge, "requests": [{"url": u, "id": f"i{k}"}
                                                            for k, u in enumerate(urls)]}), \
                "application/json", 6

    def check_answer(self, port, body, ctype, n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/batch", body, {"Content-Type": ctype})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            return "closed"
        finally:
            conn.close()
        doc = json.loads(data)   # any answer that arrives is JSON
        if resp.status == 200:
            self.assertEqual(doc["summary"]["total"], n, data[:300])
            self.assertEqual(doc["summary"]["ok"] + doc["summary"]["failed"], n)
            return "200"
        if resp.status == 500:
            self.assertEqual(doc["error"]["code"], "internal_error", data[:300])
            self.assertIsNone(resp.getheader("Retry-After"),
                              "an accepted batch's failed answer must not ask for a retry")
            return "500"
        self.assertEqual((resp.status, doc["error"]["code"]), (503, "overloaded"), data[:300])
        self.assertIsNotNone(resp.getheader("Retry-After"), "503 overloaded without Retry-After")
        return "503"

    def test_no_crash_under_failing_allocations(self):
        if not os.access(BINARY, os.X_OK):
            self.skipTest(f"{BINARY} not built (make {os.path.relpath(BINARY, ROOT)})")
        for every in (5, 23, 101):
            with self.subTest(fail_every=every):
                d = self.start(every)
                seen = {}
                for _ in range(8):
                    for body, ctype, n in self.payloads():
                        outcome = self.check_answer(d.port, body, ctype, n)
                        seen[outcome] = seen.get(outcome, 0) + 1
                        self.assertIsNone(d.proc.poll(), f"fanoutd died: {d.log()[-800:]}")
                d.signal(signal.SIGTERM)
                rc = d.wait(20)
                self.assertEqual(rc, 0, f"exit status {rc}: {d.log()[-800:]}")
                print(f"  every {every}th allocation failing: {seen}", file=sys.stderr)
                if every >= 100:   # a batch needs over 100 allocations
                    self.assertGreater(seen.get("200", 0), 0, "no batch got through at all")


if __name__ == "__main__":
    result = unittest.TextTestRunner(verbosity=2).run(
        unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__]))
    failed = len({t.id() for t, _ in result.failures + result.errors})
    skipped = len(result.skipped)
    print(f"{result.testsRun - failed - skipped} passed, {failed} failed, {skipped} skipped")
    sys.exit(0 if failed == 0 and result.testsRun > 0 else 1)
