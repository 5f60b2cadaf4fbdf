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
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "integration"))
from harness import BIND_ATTEMPTS, free_port, lost_port  # noqa: E402 (ports picked one way)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
BINARY = os.environ.get("FAILMALLOC", os.path.join(ROOT, "build", "fanoutd-failmalloc"))


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"path": self.path, "nested": {"k": [1, 2, 3]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FailingAllocationsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=cls.up.serve_forever, daemon=True).start()
        cls.base = f"http://127.0.0.1:{cls.up.server_address[1]}"

    @classmethod
    def tearDownClass(cls):
        cls.up.shutdown()
        cls.up.server_close()

    def start(self, every, attempts=BIND_ATTEMPTS):
        env = dict(os.environ, FO_FAIL_EVERY=str(every), FO_FAIL_AFTER_MS="400")
        for attempt in range(1, attempts + 1):
            port = free_port()
            log = tempfile.NamedTemporaryFile(prefix="fanoutd-failmalloc-", delete=False)
            self.addCleanup(os.unlink, log.name)
            proc = subprocess.Popen([BINARY, "--listen", f"127.0.0.1:{port}", "--workers", "8",
                                     "--log-level", "warn"], env=env, stdout=log, stderr=log)
            self.addCleanup(lambda p=proc: p.poll() is None and (p.kill(), p.wait()))
            end = time.monotonic() + 10
            while time.monotonic() < end and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.02)
            time.sleep(0.5)   # past FO_FAIL_AFTER_MS: failures are on from here
            # Still running, so it listens on port (a connection alone may have reached
            # another process that took the port). If that process made fanoutd exit
            # ("cannot listen"), start again on a fresh port; any other exit fails here.
            if proc.poll() is None:
                return proc, port, log.name
            with open(log.name, errors="replace") as f:
                output = f.read()
            if attempt == attempts or not lost_port(output):
                self.fail(f"fanoutd exited with {proc.returncode} on start: {output[-800:]}")

    def payloads(self):
        urls = [f"{self.base}/item/{i}" for i in range(6)]
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
                proc, port, log = self.start(every)
                seen = {}
                for _ in range(8):
                    for body, ctype, n in self.payloads():
                        outcome = self.check_answer(port, body, ctype, n)
                        seen[outcome] = seen.get(outcome, 0) + 1
                        self.assertIsNone(proc.poll(), f"fanoutd died: {open(log).read()[-800:]}")
                proc.send_signal(signal.SIGTERM)
                rc = proc.wait(20)
                self.assertEqual(rc, 0, f"exit status {rc}: {open(log).read()[-800:]}")
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
