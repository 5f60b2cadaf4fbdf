"""Upstreams that break the exchange: each fault stays in its own item, its siblings in the
same batch come back ok with their bodies, every item is accounted for, and the daemon stays
healthy (and never dies of a signal)."""

import os
import time

from common import RobustCase, proc_status, metric, Background, wait_for, new_tag
from faulty import FaultyUpstream, BOMB_SIZE, gzip_bomb


class UpstreamFaults(RobustCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bad = FaultyUpstream().start()
        gzip_bomb()  # made once, before any timing

    @classmethod
    def tearDownClass(cls):
        cls.bad.stop()
        super().tearDownClass()

    def fault_batch(self, fault_items, n_siblings=3, timeout=30, **kw):
        """Posts siblings around the fault items; checks siblings, accounting, health.
        Returns (doc, {id: result of each fault item}, elapsed seconds)."""
        tag = new_tag()
        sib = self.siblings(tag, n_siblings)
        items = sib[:1] + fault_items + sib[1:]
        start = time.monotonic()
        doc = self.batch({"requests": items}, total=len(items), timeout=timeout, **kw)
        elapsed = time.monotonic() - start
        self.check_accounted(doc, items)
        self.check_siblings(doc, tag, n_siblings)
        self.assert_healthy()
        return doc, {it["id"]: self.item(doc, it["id"]) for it in fault_items}, elapsed

    def assert_broken(self, r, code="upstream_error"):
        self.assertFalse(r["ok"], r)
        self.assertIn("error", r, f"a broken exchange must be an error: {r}")
        self.assertEqual(r["error"]["code"], code, r)
        self.assertNotIn("body", r, f"a failed fetch has no body: {r}")

    def test_reset_mid_headers(self):
        self.start_daemon()
        _, res, _ = self.fault_batch([{"id": "f", "url": self.bad.url("/reset-headers")}])
        self.assert_broken(res["f"])
        # README: status is that of "the last response whose headers arrived", else null;
        # here only a status line and half a header line arrived
        self.assertIsNone(res["f"]["status"], f"headers never completed: status must be null: "
                                              f"{res['f']}")

    def test_reset_mid_body(self):
        self.start_daemon()
        _, res, _ = self.fault_batch([{"id": "f", "url": self.bad.url("/reset-body")}])
        self.assert_broken(res["f"])
        self.assertEqual(res["f"]["status"], 200, "headers arrived: status is kept")

    def test_body_shorter_than_content_length(self):
        self.start_daemon()
        _, res, _ = self.fault_batch([{"id": "f", "url": self.bad.url("/short")}])
        self.assert_broken(res["f"])
        self.assertEqual(res["f"]["status"], 200, "headers arrived: status is kept")

    def test_bad_chunked_encoding(self):
        self.start_daemon()
        _, res, _ = self.fault_batch([{"id": "f", "url": self.bad.url("/bad-chunked")}])
        self.assert_broken(res["f"])

    def test_all_faults_in_one_batch(self):
        self.start_daemon(max_response_bytes=1048576)
        faults = [{"id": p.strip("/"), "url": self.bad.url(p, n=i)}
                  for i, p in enumerate(["/reset-headers", "/reset-body", "/short", "/bad-chunked",
                                         "/endless", "/gzip-bomb"])]
        _, res, _ = self.fault_batch(faults, n_siblings=4)
        for k in ("reset-headers", "reset-body", "short", "bad-chunked"):
            self.assert_broken(res[k])
        self.assert_broken(res["endless"], "too_large")
        self.assert_broken(res["gzip-bomb"], "too_large")

    def test_endless_body_capped(self):
        cap = 1048576
        self.start_daemon(max_response_bytes=cap)
        for path in ("/endless", "/endless-close"):
            with self.subTest(path=path):
                before = self.bad.finished(path)
                _, res, elapsed = self.fault_batch(
                    [{"id": "f", "url": self.bad.url(path), "timeout_ms": 20000}])
                self.assert_broken(res["f"], "too_large")
                self.assertEqual(res["f"]["status"], 200, "headers arrived: status is kept")
                self.assertLess(elapsed, 5, "the cap must end an endless body quickly, "
                                            "not the 20 s item timeout")
                # the daemon hangs up on the endless sender instead of draining it
                wait_for(lambda: self.bad.finished(path) > before, 5,
                         f"fanoutd to close the {path} connection")
                self.assertLess(self.bad.sent(path), 64 * cap,
                                "fanoutd kept reading far past the cap")

    def test_gzip_bomb(self):
        cap = 8388608
        d = self.start_daemon(max_response_bytes=cap)
        self.batch({"requests": self.siblings(new_tag(), 3)})  # warm up the workers
        hwm0 = proc_status(d.pid, "VmHWM")
        self.assertIsNotNone(hwm0, "cannot read /proc/PID/status")
        peak = {"rss": 0}
        sampling = {"on": True}

        def sample():
            while sampling["on"]:
                rss = proc_status(d.pid, "VmRSS")
                if rss:
                    peak["rss"] = max(peak["rss"], rss)
                time.sleep(0.01)
        sampler = Background(sample)
        try:
            _, res, elapsed = self.fault_batch([{"id": "bomb", "url": self.bad.url("/gzip-bomb")}])
        finally:
            sampling["on"] = False
            sampler.result(5)
        for r in res.values():
            self.assert_broken(r, "too_large")
            self.assertEqual(r["status"], 200, r)
        self.assertLess(elapsed, 10)
        hwm1 = proc_status(d.pid, "VmHWM")
        grew_mb = (hwm1 - hwm0) / 1024
        decoded_mb = BOMB_SIZE / 1048576
        # holding up to the cap (8 MiB) is fair; anything near the decoded size is not
        # (natively about 8 MB; under valgrind about 19 MB)
        # Sanitizer builds keep shadow memory: their RSS says nothing of fanoutd's.
        if not os.environ.get("SANITIZER"):
            self.assertLess(grew_mb, decoded_mb / 2,
                        f"peak RSS grew by {grew_mb:.1f} MB for bodies of {len(gzip_bomb())} bytes "
                        f"that decode to {decoded_mb:.0f} MB each (cap {cap >> 20} MiB): "
                        f"VmHWM {hwm0} -> {hwm1} kB, sampled VmRSS peak {peak['rss']} kB")
        m = metric(self.metrics(), "fanoutd_item_errors_total", {"code": "too_large"})
        self.assertEqual(m, 1, "one too_large item in /metrics")

    def test_upstream_closes_during_post_body(self):
        self.start_daemon(max_body_bytes=16 * 1048576)
        for how, size in (("reset", 1 << 20), ("close", 4 << 20), ("respond", 2 << 20)):
            with self.subTest(how=how):
                hits = self.bad.hits("/post-close")
                item = {"id": "f", "url": self.bad.url("/post-close", how=how), "method": "POST",
                        "body": "p" * size, "headers": {"Content-Type": "text/plain"},
                        "timeout_ms": 15000}
                _, res, elapsed = self.fault_batch([item])
                self.assertGreater(self.bad.hits("/post-close"), hits, "the upstream was not reached")
                r = res["f"]
                self.assertFalse(r["ok"], r)
                if how == "respond" and "error" not in r:
                    self.assertEqual(r["status"], 413, r)  # the early answer was read: fine
                else:
                    self.assert_broken(r)
                self.assertLess(elapsed, 10, "an upstream that hung up must not cost the item timeout")
                self.assert_alive()
