"""per_host_rate (v2 "Retries, circuit breaker, rate"): a token bucket per host:port,
bursts of one second's worth from a full bucket, then `rate` a second; items over the
rate wait in the scheduler (holding no worker), and their wait counts against the batch
deadline. Each test uses an upstream of its own (a bucket of its own)."""

import time
import unittest

from harness import DaemonCase, new_tag
from upstream import Upstream


class RateCase(DaemonCase):
    def fresh(self):
        up = Upstream().start()
        self.addCleanup(up.stop)
        return up

    def times(self, up, tag):
        return sorted(r.when for r in up.requests(tag=tag))


class RateTest(RateCase):
    CONFIG = {"workers": 16, "per_host_rate": 4}

    def test_items_spread_over_n_over_r_seconds(self):
        up, tag = self.fresh(), new_tag()
        doc = self.batch([up.url("/json", v=str(i), tag=tag) for i in range(12)], total=12, timeout=30)
        self.assertEqual(doc["summary"]["ok"], 12)
        t = self.times(up, tag)
        # a burst of 4, then 4 a second: the 12th about 2 s after the first
        self.assertGreaterEqual(t[-1] - t[0], 1.6, "the rate was not applied")
        self.assertLess(t[-1] - t[0], 6.0)
        self.assertLessEqual(sum(1 for x in t if x - t[0] < 0.45), 6, "more than the burst at once")
        self.assertGreaterEqual(sum(1 for x in t if x - t[0] < 0.2), 4, "the bucket did not start full")

    def test_rate_wait_counts_against_the_deadline(self):
        up = self.fresh()
        start = time.monotonic()
        doc = self.batch({"timeout_ms": 1200, "requests": [up.url("/json", v=str(i)) for i in range(16)]},
                         total=16)
        self.assertLess(time.monotonic() - start, 2.5)
        ok = [r for r in doc["results"] if r["ok"]]
        self.assertTrue(4 <= len(ok) <= 10, f"{len(ok)} items ok")
        for r in doc["results"]:
            if not r["ok"]:
                self.assert_item_error(r, "deadline_exceeded", status=None)

    def test_each_host_port_has_its_own_bucket(self):
        a, b, tag = self.fresh(), self.fresh(), new_tag()
        start = time.monotonic()
        items = [a.url("/json", v=str(i), tag=tag) for i in range(8)] + [b.url("/json", v=str(i), tag=tag) for i in range(8)]
        doc = self.batch(items, total=16, timeout=30)
        self.assertEqual(doc["summary"]["ok"], 16)
        # 8 at rate 4 from a full bucket: about 1 s each, side by side (one shared bucket: 3 s)
        self.assertLess(time.monotonic() - start, 2.4)
        ta, tb = self.times(a, tag), self.times(b, tag)
        self.assertGreaterEqual(ta[-1] - ta[0], 0.7)
        self.assertGreaterEqual(tb[-1] - tb[0], 0.7)

    def test_bucket_refills_across_batches(self):
        up, tag = self.fresh(), new_tag()
        self.batch([up.url("/json", v=str(i), tag=tag) for i in range(4)], total=4)
        start = time.monotonic()
        self.batch([up.url("/json", v=str(i), tag=tag) for i in range(2)], total=2)
        self.assertGreaterEqual(time.monotonic() - start, 0.2, "an empty bucket gave tokens at once")
        time.sleep(1.2)
        start = time.monotonic()
        self.batch([up.url("/json", v=str(i), tag=tag) for i in range(4)], total=4)
        self.assertLess(time.monotonic() - start, 0.8, "the bucket did not refill to a burst")


class RateWorkerTest(RateCase):
    """Two workers: items waiting for a token must not hold them."""
    CONFIG = {"workers": 2, "per_host_rate": 1}

    def test_waiting_items_hold_no_worker(self):
        a, b, tag = self.fresh(), self.fresh(), new_tag()
        doc = self.batch([a.url("/json", v=str(i), tag=tag) for i in range(3)] + [b.url("/json", tag=tag)],
                         total=4, timeout=30)
        self.assertEqual(doc["summary"]["ok"], 4)
        ta, (tb,) = self.times(a, tag), self.times(b, tag)
        self.assertGreaterEqual(ta[-1] - ta[0], 1.6, "rate 1: the third item about 2 s after the first")
        self.assertLess(tb - ta[0], 0.7, "the other host's item waited behind rate-limited ones")


class RateOffTest(RateCase):
    CONFIG = {"workers": 16}

    def test_off_by_default(self):
        up, tag = self.fresh(), new_tag()
        start = time.monotonic()
        self.batch([up.url("/json", v=str(i), tag=tag) for i in range(12)], total=12)
        self.assertLess(time.monotonic() - start, 1.5)


if __name__ == "__main__":
    unittest.main()
