"""The circuit breaker per host:port (v2 "Retries, circuit breaker, rate"): opening after
breaker_failures consecutive failed fetches, refusing with circuit_open without a
connection, the half-open trial, what counts as a failure (and what counts neither way),
each redirect hop and each retry counting against its own host:port, and the metrics.

Each test uses an upstream of its own (a host:port of its own, so a breaker of its own);
the daemon runs one worker, so the items of a batch are fetched one after another."""

import re
import time
import unittest

from harness import DaemonCase, closed_port, new_tag
from upstream import Upstream

OPEN_S = 1.5


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


class BreakerCase(DaemonCase):
    CONFIG = {"workers": 1, "breaker_failures": 3, "breaker_open_ms": int(OPEN_S * 1000)}

    def fresh(self):
        up = Upstream().start()
        self.addCleanup(up.stop)
        return up

    def results(self, items):
        return self.batch(items, total=len(items))["results"]

    def open_breaker(self, up, tag):
        rs = self.results([up.url("/status", code=503, tag=tag, i=i) for i in range(3)])
        self.assertEqual([r["status"] for r in rs], [503] * 3)

    def assert_refused(self, r):
        self.assert_item_error(r, "circuit_open", status=None)

    def let_through(self, url, limit=8.0):
        """Single-item batches until one is not refused: (seconds waited, result)."""
        start = time.monotonic()
        while time.monotonic() - start < limit:
            r = self.results([url])[0]
            if (r.get("error") or {}).get("code") != "circuit_open":
                return time.monotonic() - start, r
            time.sleep(0.05)
        self.fail(f"the breaker let nothing through within {limit} s")

    def metrics(self):
        return self.get("/metrics").body.decode()


class BreakerTest(BreakerCase):
    def test_opens_and_refuses_without_a_connection(self):
        up, tag = self.fresh(), new_tag()
        before = self.metrics()
        rs = self.results([up.url("/status", code=503, tag=tag, i=i) for i in range(3)] +
                          [up.url("/json", tag=tag, i=i) for i in range(3, 5)])
        self.assertEqual([r["status"] for r in rs[:3]], [503] * 3)
        for r in rs[3:]:
            self.assert_refused(r)
            self.assertIn(up.url("/")[len("http://"):-1], r["error"]["message"])
        start = time.monotonic()
        self.assert_refused(self.results([up.url("/json", tag=tag)])[0])
        self.assertLess(time.monotonic() - start, 0.5, "a refusal is immediate")
        self.assertEqual(len(up.requests(tag=tag)), 3, "a refused item reached the upstream")
        self.assertEqual(len(up.requests()), 3)
        # another host:port is not affected
        self.assertTrue(self.results([self.url("/json", v=1)])[0]["ok"])
        after = self.metrics()
        self.assertGreaterEqual(metric(after, "fanoutd_breakers_open"), 1)
        name = 'fanoutd_breaker_transitions_total{to="open"}'
        self.assertGreaterEqual(metric(after, name) - metric(before, name), 1)
        name = 'fanoutd_item_errors_total{code="circuit_open"}'
        self.assertGreaterEqual(metric(after, name) - metric(before, name), 3)

    def test_half_open_trial_success_closes(self):
        up, tag = self.fresh(), new_tag()
        before = self.metrics()
        self.open_breaker(up, tag)
        waited, trial = self.let_through(up.url("/json", v="trial", tag=tag))
        self.assertTrue(trial["ok"], trial)
        self.assertGreaterEqual(waited, OPEN_S * 0.8, "the breaker did not stay open breaker_open_ms")
        rs = self.results([up.url("/json", v="after", tag=tag, i=i) for i in range(3)])
        self.assertTrue(all(r["ok"] for r in rs), rs)
        self.assertEqual(len(up.requests(tag=tag)), 3 + 1 + 3)
        after = self.metrics()
        for to in ("open", "half_open", "closed"):
            name = f'fanoutd_breaker_transitions_total{{to="{to}"}}'
            self.assertGreaterEqual(metric(after, name) - metric(before, name), 1, to)

    def test_half_open_trial_failure_reopens(self):
        up, tag = self.fresh(), new_tag()
        self.open_breaker(up, tag)
        _, trial = self.let_through(up.url("/status", code=503, tag=tag))
        self.assertEqual(trial["status"], 503)
        self.assert_refused(self.results([up.url("/json", tag=tag)])[0])
        self.assertEqual(len(up.requests(tag=tag)), 4)
        # open again for breaker_open_ms, then a good trial closes it
        waited, trial = self.let_through(up.url("/json", tag=tag))
        self.assertTrue(trial["ok"], trial)
        self.assertGreaterEqual(waited, OPEN_S * 0.8)

    def test_connect_failed_counts_as_a_failure(self):
        url = f"http://127.0.0.1:{closed_port()}/x"
        rs = self.results([url] * 4)
        for r in rs[:3]:
            self.assert_item_error(r, "connect_failed", status=None)
        self.assert_refused(rs[3])

    def test_short_timeouts_do_not_open_the_breaker(self):
        """A client that asks for timeouts shorter than default_timeout_ms cannot open a host's
        breaker for everyone else: those timeouts count neither way; a real failure still does."""
        up, tag = self.fresh(), new_tag()
        rs = self.results([{"url": up.url("/delay", ms=2000, tag=tag, i=i), "timeout_ms": 100}
                           for i in range(5)])
        for r in rs:
            self.assert_item_error(r, "timeout")
        other = self.results([up.url("/json", v="other client", tag=tag)])[0]
        self.assertTrue(other["ok"], other)
        # ... and they do not break a run of real failures either (neither way).
        rs = self.results([up.url("/status", code=503, tag=tag, i=0),
                           {"url": up.url("/delay", ms=2000, tag=tag), "timeout_ms": 100},
                           up.url("/status", code=503, tag=tag, i=1),
                           up.url("/status", code=503, tag=tag, i=2),
                           up.url("/json", tag=tag)])
        self.assert_item_error(rs[1], "timeout")
        self.assert_refused(rs[4])

    def test_4xx_and_success_do_not_open_and_reset_the_count(self):
        up, tag = self.fresh(), new_tag()
        items = [up.url("/status", code=404, tag=tag, i=i) for i in range(4)]
        items += [up.url("/status", code=503, tag=tag, i=i) for i in range(2)]
        items += [up.url("/json", tag=tag)]
        items += [up.url("/status", code=500, tag=tag, i=i) for i in range(2)]
        items += [up.url("/json", tag=tag, v="still")]
        rs = self.results(items)
        self.assertFalse(any((r.get("error") or {}).get("code") == "circuit_open" for r in rs), rs)
        self.assertTrue(rs[-1]["ok"])

    def test_deadline_abort_counts_neither_way(self):
        up, tag = self.fresh(), new_tag()
        # 2 failures, then a fetch cut by the batch deadline (neither way), then 1 failure: 3 consecutive.
        self.results([up.url("/status", code=503, tag=tag, i=i) for i in range(2)])
        doc = self.batch({"timeout_ms": 300, "requests": [up.url("/delay", ms=2000, tag=tag)]}, total=1)
        self.assert_item_error(doc["results"][0], "deadline_exceeded")
        rs = self.results([up.url("/status", code=503, tag=tag, v="third"), up.url("/json", tag=tag)])
        self.assertEqual(rs[0]["status"], 503)
        self.assert_refused(rs[1])
        # and three deadline aborts alone do not open another host:port's breaker
        up2, tag2 = self.fresh(), new_tag()
        for i in range(3):
            doc = self.batch({"timeout_ms": 250, "requests": [up2.url("/delay", ms=2000, tag=tag2, i=i)]}, total=1)
            self.assert_item_error(doc["results"][0], "deadline_exceeded")
        self.assertTrue(self.results([up2.url("/json", tag=tag2)])[0]["ok"])

    def test_each_redirect_hop_counts_against_its_own_host(self):
        a, b, tag = self.fresh(), self.fresh(), new_tag()
        target = b.url("/status", code=503, tag=tag)
        rs = self.results([a.url("/redirect", to=target, tag=tag, i=i) for i in range(3)])
        self.assertEqual([r["status"] for r in rs], [503] * 3)
        rs = self.results([b.url("/json", tag=tag), a.url("/json", tag=tag)])
        self.assert_refused(rs[0])
        self.assertTrue(rs[1]["ok"], "the redirecting host's hops were answers, not failures")

    def test_retry_counts_against_the_breaker(self):
        up, tag = self.fresh(), new_tag()
        # A flaky item retried up to 4 times: its 3rd failed attempt opens the breaker, the
        # 4th attempt is refused, and the last answer (503) stays the result.
        r = self.results([{"url": up.url("/failing", key=tag, fail=9, tag=tag),
                           "retry": {"max": 4, "backoff_ms": 1}}])[0]
        self.assertEqual((r["status"], r["attempts"]), (503, 3), r)
        self.assertNotIn("error", r)
        self.assertEqual(len(up.requests(tag=tag)), 3)
        self.assert_refused(self.results([up.url("/json", tag=tag)])[0])
        # an item refused before any attempt: attempts 0
        r = self.results([{"url": up.url("/json", tag=tag), "retry": {"max": 1}}])[0]
        self.assert_refused(r)
        self.assertEqual(r["attempts"], 0)


class BreakerTrialTest(BreakerCase):
    CONFIG = dict(BreakerCase.CONFIG, workers=4)

    def test_only_one_trial_in_half_open(self):
        up, tag = self.fresh(), new_tag()
        doc = self.batch({"requests": [up.url("/status", code=503, tag=tag, i=i) for i in range(3)]}, total=3)
        self.assertEqual([r["status"] for r in doc["results"]], [503] * 3)
        self.assert_refused(self.results([up.url("/json", tag=tag)])[0])
        time.sleep(OPEN_S + 0.2)
        # Four slow items at once: the first to start is the trial, the others come while
        # it runs and are refused.
        rs = self.results([up.url("/json", ms=800, tag=tag, v=f"x{i}") for i in range(4)])
        self.assertEqual(sum(r["ok"] for r in rs), 1, f"not exactly one trial: {rs}")
        self.assertEqual(sum((r.get("error") or {}).get("code") == "circuit_open" for r in rs), 3, rs)
        self.assertEqual(len(up.requests(tag=tag)), 4)


class BreakerOffTest(BreakerCase):
    CONFIG = {"workers": 1}

    def test_off_by_default(self):
        up, tag = self.fresh(), new_tag()
        rs = self.results([up.url("/status", code=503, tag=tag, i=i) for i in range(6)] + [up.url("/json", tag=tag)])
        self.assertTrue(rs[-1]["ok"], rs[-1])
        self.assertEqual(len(up.requests(tag=tag)), 7)


if __name__ == "__main__":
    unittest.main()


class BreakerTimeoutTest(BreakerCase):
    """A timeout counts against the breaker only when the item allowed at least
    default_timeout_ms (300 ms here), as its own default or more."""
    CONFIG = dict(BreakerCase.CONFIG, default_timeout_ms=300)

    def test_timeouts_at_or_above_the_default_count(self):
        for name, extra in (("the default", {}), ("above it", {"timeout_ms": 400})):
            with self.subTest(name):
                up, tag = self.fresh(), new_tag()
                rs = self.results([dict({"url": up.url("/delay", ms=2000, tag=tag, i=i)}, **extra)
                                   for i in range(3)] + [up.url("/json", tag=tag)])
                for r in rs[:3]:
                    self.assert_item_error(r, "timeout")
                self.assert_refused(rs[3])

    def test_timeouts_below_the_default_do_not(self):
        up, tag = self.fresh(), new_tag()
        rs = self.results([{"url": up.url("/delay", ms=2000, tag=tag, i=i), "timeout_ms": 299}
                           for i in range(4)] + [up.url("/json", tag=tag)])
        for r in rs[:4]:
            self.assert_item_error(r, "timeout")
        self.assertTrue(rs[4]["ok"], rs[4])
