"""Item timeouts and batch deadlines."""

import time
import unittest

from harness import DaemonCase, new_tag, stays


class TimeoutTest(DaemonCase):
    CONFIG = {"workers": 8, "default_timeout_ms": 5000}

    def timed(self, payload, total):
        start = time.monotonic()
        doc = self.batch(payload, total=total, timeout=20)
        return doc, time.monotonic() - start

    def test_batch_deadline_accounts_for_every_item(self):
        items = [{"id": "fast", "url": self.url("/json", v="f")}] + \
                [{"id": f"slow{i}", "url": self.url("/delay", ms=4000, i=i)} for i in range(3)] + \
                [{"id": "drip", "url": self.url("/drip", ms=200, chunks=30)}]
        doc, elapsed = self.timed({"requests": items, "timeout_ms": 800}, 5)
        self.assertLess(elapsed, 3.0, "the batch deadline (800 ms) bounds the whole response (4 s without)")
        self.assertGreater(elapsed, 0.6)
        self.assertEqual([r["id"] for r in doc["results"]], ["fast", "slow0", "slow1", "slow2", "drip"])
        self.assertTrue(self.item(doc, "fast")["ok"])
        for item_id in ("slow0", "slow1", "slow2", "drip"):
            self.assert_item_error(self.item(doc, item_id), "deadline_exceeded")
        for item_id in ("slow0", "slow1", "slow2"):
            self.assertIsNone(self.item(doc, item_id)["status"])
        self.assertEqual(doc["summary"], {**doc["summary"], "ok": 1, "failed": 4})
        self.assertEqual(doc["_resp"].header("X-Batch-Complete"), "false")

    def test_deadline_in_merge_mode(self):
        items = [{"id": "a", "url": self.url("/json", v="a")},
                 {"id": "z", "url": self.url("/delay", ms=4000)}]
        start = time.monotonic()
        doc = self.batch({"requests": items, "timeout_ms": 700, "merge": "bodies"}, total=2)
        self.assertLess(time.monotonic() - start, 3.0)
        self.assertEqual(doc["data"], {"a": {"v": "a"}})
        self.assertEqual(doc["errors"]["z"]["error"]["code"], "deadline_exceeded")

    def test_item_timeout_covers_slow_body(self):
        items = [{"id": "cl", "url": self.url("/drip", ms=150, chunks=40), "timeout_ms": 700},
                 {"id": "chunked", "url": self.url("/drip", ms=150, chunks=40, cl=0), "timeout_ms": 700}]
        doc, elapsed = self.timed({"requests": items, "timeout_ms": 10000}, 2)
        self.assertLess(elapsed, 3.5, "700 ms timeouts; the bodies would take 6 s")
        for item_id in ("cl", "chunked"):
            r = self.item(doc, item_id)
            self.assert_item_error(r, "timeout", status=200)
            self.assertNotIn("body", r)
            self.assertGreater(r["duration_ms"], 500)

    def test_item_timeout_vs_batch(self):
        items = [{"id": "t", "url": self.url("/delay", ms=3000), "timeout_ms": 400},
                 {"id": "ok", "url": self.url("/delay", ms=600)}]
        doc, elapsed = self.timed({"requests": items, "timeout_ms": 5000}, 2)
        self.assert_item_error(self.item(doc, "t"), "timeout", status=None)
        self.assertTrue(self.item(doc, "ok")["ok"])
        self.assertLess(elapsed, 2.5, "the reply waits for the 600 ms item only, not 3 s")
        self.assertLess(self.item(doc, "t")["duration_ms"], 1500)

    def test_fast_items_unaffected_by_large_timeouts(self):
        doc, elapsed = self.timed({"requests": [{"url": self.url("/json", v="x"), "timeout_ms": 59000}],
                                   "timeout_ms": 59000}, 1)
        self.assertTrue(doc["results"][0]["ok"])
        self.assertLess(elapsed, 1.5)


class ItemTimeoutStartsAtWorkerTest(DaemonCase):
    CONFIG = {"workers": 1}

    def test_item_timeout_counts_from_worker_start(self):
        """workers=1: the second item waits ~1.5 s in the queue, then needs 100 ms; its own 1.2 s
        timeout counts from when the worker starts it, so it is ok."""
        items = [{"id": "first", "url": self.url("/delay", ms=1500)},
                 {"id": "second", "url": self.url("/delay", ms=100), "timeout_ms": 1200}]
        doc = self.batch({"requests": items, "timeout_ms": 5000}, total=2)
        self.assertTrue(self.item(doc, "first")["ok"])
        self.assertTrue(self.item(doc, "second")["ok"], self.item(doc, "second"))

    def test_queued_items_get_deadline_exceeded(self):
        tag = new_tag()
        items = [{"id": f"i{i}", "url": self.url("/delay", ms=1500, tag=tag, i=i)} for i in range(4)]
        start = time.monotonic()
        doc = self.batch({"requests": items, "timeout_ms": 600}, total=4)
        self.assertLess(time.monotonic() - start, 1.8)
        for r in doc["results"]:
            self.assert_item_error(r, "deadline_exceeded")
        # the never-started items must not be fetched later either
        self.assertTrue(stays(lambda: len(self.up.requests(tag)) <= 1, 0.6),
                        "items queued behind the deadline were fetched anyway")


class BatchTimeoutConfigTest(DaemonCase):
    CONFIG = {"workers": 4, "batch_timeout_ms": 700, "default_timeout_ms": 5000}

    def test_configured_batch_timeout_applies(self):
        start = time.monotonic()
        doc = self.batch([self.url("/json", v="a"), self.url("/delay", ms=4000)], total=2)
        self.assertLess(time.monotonic() - start, 3.0)
        self.assertTrue(doc["results"][0]["ok"])
        self.assert_item_error(doc["results"][1], "deadline_exceeded")

    def test_batch_timeout_can_be_raised_per_batch(self):
        doc = self.batch({"requests": [{"url": self.url("/delay", ms=1000)}], "timeout_ms": 4000}, total=1)
        self.assertTrue(doc["results"][0]["ok"], doc["results"][0])


class MaxTimeoutCapTest(DaemonCase):
    CONFIG = {"workers": 4, "max_timeout_ms": 800, "default_timeout_ms": 500,
              "batch_timeout_ms": 800}

    def test_item_timeout_capped(self):
        start = time.monotonic()
        doc = self.batch({"requests": [{"url": self.url("/delay", ms=4000), "timeout_ms": 50000}],
                          "timeout_ms": 50000}, total=1)
        self.assertLess(time.monotonic() - start, 3.0, "max_timeout_ms caps item and batch timeouts")
        self.assert_item_error(doc["results"][0], ("timeout", "deadline_exceeded"))


if __name__ == "__main__":
    unittest.main()
