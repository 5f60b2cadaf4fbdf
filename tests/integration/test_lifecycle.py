"""SIGTERM (drain, grace, cancelled) and SIGHUP (reload, broken file, restart-only keys)."""

import http.client
import json
import os
import signal
import socket
import time
import unittest

from harness import Background, DaemonCase, new_tag, request, wait_for


def try_request(conn_or_port, method, path, body=None):
    """The reply, or None when the connection is refused/closed (no longer accepting)."""
    headers = {"Content-Type": "application/json"}
    try:
        if isinstance(conn_or_port, int):
            return request(conn_or_port, method, path, body, headers, timeout=5)
        return request(None, method, path, body, headers, timeout=5, conn=conn_or_port)
    except (OSError, http.client.HTTPException):
        return None


class ShutdownTest(DaemonCase):
    PER_TEST = True
    CONFIG = {"workers": 8}

    def test_sigterm_drains_inflight_batch(self):
        d = self.start_daemon(shutdown_grace_ms=6000)
        tag, late = new_tag(), new_tag()
        k1 = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
        k2 = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
        self.addCleanup(k1.close)
        self.addCleanup(k2.close)
        self.assertEqual(try_request(k1, "GET", "/healthz").status, 200)
        self.assertEqual(try_request(k2, "GET", "/healthz").status, 200)
        # 4 s items: the checks below must all happen while the batch is still in flight.
        inflight = Background(lambda: self.batch([self.url("/delay", ms=4000, tag=tag, i=i)
                                                  for i in range(4)], total=4, timeout=20))
        wait_for(lambda: len(self.up.requests(tag)) == 4, 5, "the batch never started")
        sent = time.monotonic()
        d.signal(signal.SIGTERM)
        # healthz while draining, on an open connection and on a new one
        answers = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and not answers:
            for conn in (k1, d.port):
                resp = try_request(conn, "GET", "/healthz")
                if resp is not None and resp.status == 503:
                    answers.append(resp)
            time.sleep(0.05)
        self.assertTrue(answers, "GET /healthz never answered 503 draining after SIGTERM")
        for resp in answers:
            self.assertEqual(resp.json(), {"status": "draining"})
        body = json.dumps([self.url("/count", key=late)]).encode()
        for conn in (k2, d.port):
            resp = try_request(conn, "POST", "/batch", body)
            if resp is not None:
                self.assert_error(resp, 503, "draining")
        doc = inflight.result(15)
        self.assertEqual(doc["summary"]["ok"], 4, "the in-flight batch must finish")
        self.assertEqual(d.wait(6 - (time.monotonic() - sent) + 1), 0, "exit status 0 expected")
        self.assertEqual(self.up.count(late), 0, "work accepted while draining")

    def test_grace_expiry_cancels_unfinished_items(self):
        d = self.start_daemon(workers=2, shutdown_grace_ms=800)
        tag = new_tag()
        items = [{"id": "fast", "url": self.url("/json", v="f")}] + \
                [{"id": f"slow{i}", "url": self.url("/delay", ms=6000, tag=tag, i=i)} for i in range(4)]
        inflight = Background(lambda: self.batch({"requests": items}, total=5, timeout=15))
        wait_for(lambda: len(self.up.requests(tag)) >= 1, 5, "the slow items never started")
        sent = time.monotonic()
        d.signal(signal.SIGTERM)
        doc = inflight.result(8)
        answered = time.monotonic() - sent
        self.assertLess(answered, 3.0, "the batch must be answered when the grace period ends")
        self.assertTrue(self.item(doc, "fast")["ok"])
        for i in range(4):
            self.assert_item_error(self.item(doc, f"slow{i}"), "cancelled")
        self.assertEqual(doc["summary"]["failed"], 4)
        self.assertEqual(d.wait(4), 0, "exit status 0 after the grace period")

    def test_sigterm_idle_exits_zero(self):
        d = self.start_daemon()
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait(3), 0)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", d.port), timeout=1).close()


class ReloadTest(DaemonCase):
    PER_TEST = True
    CONFIG = {"workers": 8, "max_batch": 3}

    def post_n(self, n, **kw):
        return self.post([self.url("/json", v=str(i), **kw) for i in range(n)])

    def test_sighup_applies_to_new_batches(self):
        d = self.start_daemon()
        self.assert_error(self.post_n(5), 413, "too_large")
        tag = new_tag()
        inflight = Background(lambda: self.batch([self.url("/delay", ms=1200, tag=tag, i=i)
                                                  for i in range(3)], total=3, timeout=15))
        wait_for(lambda: len(self.up.requests(tag)) == 3, 5, "the batch never started")
        d.write_config(self.config(max_batch=5, deny=["127.0.0.2/32"]))
        d.signal(signal.SIGHUP)
        wait_for(lambda: self.post_n(5).status == 200, 5, "max_batch 5 never applied", interval=0.1)
        self.assert_error(self.post_n(6), 413, "too_large")
        r = self.batch(["http://127.0.0.2:9/"], total=1)["results"][0]
        self.assert_item_error(r, "blocked_destination")
        doc = inflight.result(10)
        self.assertEqual(doc["summary"]["ok"], 3, "in-flight work must survive a reload")
        self.assertTrue(d.alive)

    def test_broken_file_keeps_old_config(self):
        d = self.start_daemon()
        for broken in ("max_batch = 5\nno_such_key = 1\n", "max_batch = lots\n", "max_batch = 5\nworkers\n"):
            with self.subTest(broken=broken):
                size = len(d.log())
                d.write_raw(broken)
                d.signal(signal.SIGHUP)
                wait_for(lambda: len(d.log()) > size, 5, "nothing logged about the failed reload")
                text = d.log()[size:]
                wait_for(lambda: os.path.basename(d.config_path) in d.log()[size:], 3,
                         f"the log does not say which file failed: {text!r}")
                self.assertTrue(d.alive, "a broken file must not stop the daemon")
                self.assert_error(self.post_n(4), 413, "too_large")  # old max_batch 3 still in force
                self.assertEqual(self.post_n(3).status, 200)
        d.write_config(self.config(max_batch=5))
        d.signal(signal.SIGHUP)
        wait_for(lambda: self.post_n(5).status == 200, 5, "a good file after a broken one never applied",
                 interval=0.1)

    def test_restart_only_keys_warn_and_keep_running(self):
        d = self.start_daemon()
        other = d.port + 1 if d.port < 65535 else d.port - 1
        size = len(d.log())
        d.write_config(self.config(workers=1, listen=f"127.0.0.1:{other}"))
        d.signal(signal.SIGHUP)
        wait_for(lambda: "restart" in d.log()[size:].lower(), 5,
                 "no warning that listen/workers need a restart")
        self.assertEqual(self.get("/healthz").status, 200, "still serving on the old address")
        tag = new_tag()
        doc = self.batch([self.url("/delay", ms=600, tag=tag, i=i) for i in range(3)], total=3)
        self.assertEqual(doc["summary"]["ok"], 3)
        self.assertEqual(self.up.max_inflight(tag), 3, "workers changed without a restart")


if __name__ == "__main__":
    unittest.main()
