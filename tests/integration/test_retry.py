"""Retries (v2 "Retries, circuit breaker, rate"): what is retried, the backoff and
Retry-After, the item's timeout and the batch deadline over all attempts, "attempts" in
the result, the retry policy's validation, and waiting retries holding no worker.

The upstream's /failing endpoint fails its first `fail` hits of a key, then answers 200
{"attempt": n}; every test uses a key (and tag) of its own."""

import time
import unittest

from harness import DaemonCase, closed_port, new_tag


class RetryCase(DaemonCase):
    def failing(self, **q):
        """A /failing URL with a key (and tag) of its own: (url, tag)."""
        tag = new_tag()
        return self.url("/failing", key=tag, tag=tag, **q), tag

    def hits(self, tag):
        return len(self.up.requests(tag=tag))

    def arrivals(self, tag):
        return sorted(r.when for r in self.up.requests(tag=tag))

    def one(self, item, **kw):
        return self.batch([item], total=1, **kw)["results"][0]


class RetryTest(RetryCase):
    CONFIG = {"workers": 8, "max_retries": 4, "retry_backoff_max_ms": 100}
    QUICK = {"max": 3, "backoff_ms": 20}

    def test_retries_until_success_with_attempts(self):
        url, tag = self.failing(fail=2, status=503)
        r = self.one({"url": url, "retry": self.QUICK})
        self.assertTrue(r["ok"], r)
        self.assertEqual((r["status"], r["body"], r["attempts"]), (200, {"attempt": 3}, 3))
        self.assertEqual(self.hits(tag), 3)

    def test_exhausted_keeps_last_answer(self):
        url, tag = self.failing(fail=5, status=503)
        r = self.one({"url": url, "retry": {"max": 2, "backoff_ms": 10}})
        self.assertEqual((r["ok"], r["status"], r["body"]), (False, 503, {"attempt": 3, "status": 503}))
        self.assertNotIn("error", r)
        self.assertEqual(r["attempts"], 3)
        self.assertEqual(self.hits(tag), 3)

    def test_retry_after_seconds_honoured(self):
        url, tag = self.failing(fail=1, status=503, retry_after="1")
        r = self.one({"url": url, "retry": {"max": 2, "backoff_ms": 10}})
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["attempts"], 2)
        first, second = self.arrivals(tag)
        self.assertGreaterEqual(second - first, 0.9, "Retry-After: 1 was not honoured")
        self.assertLess(second - first, 3.0)

    def test_retry_after_http_date_honoured_and_not_capped(self):
        # retry_backoff_max_ms is 100 here: a Retry-After is used as given.
        url, tag = self.failing(fail=1, status=429, ra_date=2)
        r = self.one({"url": url, "retry": {"max": 2, "backoff_ms": 10}})
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["attempts"], 2)
        first, second = self.arrivals(tag)
        # An HTTP date has whole seconds: 2 s ahead is 1 to 2 s away when read.
        self.assertGreaterEqual(second - first, 0.9, "the HTTP-date Retry-After was not honoured")
        self.assertLess(second - first, 3.5)

    def test_backoff_capped_by_retry_backoff_max_ms(self):
        # base 5000 ms, but retry_backoff_max_ms = 100: no wait is longer than 100 ms.
        url, tag = self.failing(fail=3, status=503)
        start = time.monotonic()
        r = self.one({"url": url, "retry": {"max": 3, "backoff_ms": 5000}})
        self.assertEqual((r["ok"], r["attempts"]), (True, 4), r)
        times = self.arrivals(tag)
        for a, b in zip(times, times[1:]):
            self.assertLess(b - a, 0.8, f"a backoff wait passed the cap: {b - a:.3f} s")
        self.assertLess(time.monotonic() - start, 3.0)

    def test_retry_after_longer_than_what_is_left_is_not_waited_for(self):
        for name, payload in (
                ("item timeout", lambda u: [{"url": u, "retry": self.QUICK, "timeout_ms": 2500}]),
                ("deadline", lambda u: {"timeout_ms": 2500, "requests": [{"url": u, "retry": self.QUICK}]})):
            with self.subTest(bound=name):
                url, tag = self.failing(fail=9, status=503, retry_after="4")
                start = time.monotonic()
                r = self.batch(payload(url), total=1)["results"][0]
                self.assertLess(time.monotonic() - start, 1.5, "waited for a retry that could not happen")
                self.assertEqual((r["status"], r["attempts"]), (503, 1), r)
                self.assertNotIn("error", r)
                self.assertEqual(self.hits(tag), 1)

    def test_item_timeout_covers_all_attempts(self):
        # Each attempt takes 400 ms and fails; a 1000 ms item timeout ends the third.
        url, tag = self.failing(fail=9, status=503, ms=400)
        start = time.monotonic()
        r = self.one({"url": url, "retry": {"max": 4, "backoff_ms": 1}, "timeout_ms": 1000})
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, 1.9, f"attempts ran past the item's timeout: {elapsed:.2f} s, {r}")
        self.assertLessEqual(r["attempts"], 3, r)
        self.assertGreaterEqual(r["attempts"], 2, r)
        self.assertEqual(self.hits(tag), r["attempts"])
        if r["attempts"] == 3:
            self.assert_item_error(r, "timeout")
        self.assertGreaterEqual(r["duration_ms"], 750, "duration_ms covers every attempt")

    def test_batch_deadline_ends_waiting_retry_chain(self):
        url, tag = self.failing(fail=99, status=503, ms=300)
        start = time.monotonic()
        r = self.batch({"timeout_ms": 1000, "requests": [{"url": url, "retry": {"max": 4, "backoff_ms": 1}}]},
                       total=1)["results"][0]
        self.assertLess(time.monotonic() - start, 2.0)
        self.assertLessEqual(r["attempts"], 4, r)
        self.assertEqual(self.hits(tag), r["attempts"])

    def test_post_and_patch_not_retried_after_503_put_is(self):
        for method in ("POST", "PATCH"):
            with self.subTest(method=method):
                url, tag = self.failing(fail=1, status=503)
                r = self.one({"url": url, "method": method, "body": "x", "retry": self.QUICK})
                self.assertEqual((r["status"], r["attempts"]), (503, 1), r)
                self.assertEqual(self.hits(tag), 1)
        url, tag = self.failing(fail=1, status=503)
        r = self.one({"url": url, "method": "PUT", "body": "x", "retry": self.QUICK})
        self.assertTrue(r["ok"], r)
        self.assertEqual((r["attempts"], self.hits(tag)), (2, 2))

    def test_post_and_patch_not_retried_after_reset(self):
        url, tag = self.failing(fail=1, mode="reset")
        r = self.one({"url": url, "method": "POST", "body": "x", "retry": self.QUICK})
        self.assert_item_error(r, "upstream_error")
        self.assertEqual((r["attempts"], self.hits(tag)), (1, 1))

    def test_post_retried_after_connect_failed(self):
        for method in ("POST", "PATCH"):
            with self.subTest(method=method):
                r = self.one({"url": f"http://127.0.0.1:{closed_port()}/x", "method": method, "body": "x",
                              "retry": {"max": 2, "backoff_ms": 10}})
                self.assert_item_error(r, "connect_failed", status=None)
                self.assertEqual(r["attempts"], 3, r)

    def test_which_answers_are_retried(self):
        cases = [({"status": 429}, 2), ({"status": 502}, 2), ({"status": 503}, 2), ({"status": 504}, 2),
                 ({"mode": "reset"}, 2), ({"status": 500}, 1), ({"status": 501}, 1), ({"status": 404}, 1),
                 ({"status": 408}, 1)]
        items, tags = [], []
        for i, (q, _) in enumerate(cases):
            url, tag = self.failing(fail=1, **q)
            items.append({"id": f"c{i}", "url": url, "retry": {"max": 1, "backoff_ms": 10}})
            tags.append(tag)
        items.append({"id": "closed", "url": f"http://127.0.0.1:{closed_port()}/",
                      "retry": {"max": 1, "backoff_ms": 10}})
        doc = self.batch(items, total=len(items))
        for i, ((q, attempts), tag) in enumerate(zip(cases, tags)):
            with self.subTest(case=q):
                r = self.item(doc, f"c{i}")
                self.assertEqual((r["attempts"], self.hits(tag)), (attempts, attempts), r)
                self.assertEqual(r["ok"], attempts == 2, r)
        self.assertEqual(self.item(doc, "closed")["attempts"], 2)

    def test_other_errors_not_retried(self):
        r = self.one({"url": self.url("/big", bytes=20000000), "retry": self.QUICK})
        self.assert_item_error(r, "too_large")
        self.assertEqual(r["attempts"], 1)
        r = self.one({"url": "http://169.254.1.1/", "retry": self.QUICK})
        self.assert_item_error(r, "blocked_destination")
        self.assertEqual(r["attempts"], 1)

    def test_no_attempts_field_without_retries(self):
        url, tag = self.failing(fail=1, status=503)
        r = self.one({"url": url})
        self.assertEqual(r["status"], 503)
        self.assertNotIn("attempts", r)
        r = self.one({"url": self.url("/json", v=1), "retry": {"max": 0}})
        self.assertNotIn("attempts", r)
        r = self.one({"url": self.url("/json", v=1), "retry": {"max": 1}})
        self.assertEqual(r["attempts"], 1)

    def test_max_over_max_retries_is_400(self):
        tag = new_tag()
        u = self.url("/json", tag=tag)
        resp = self.post([{"url": u, "id": "greedy", "retry": {"max": 5, "backoff_ms": 10}}])
        doc = self.assert_error(resp, 400)
        for word in ("greedy", "retry", "max_retries"):
            self.assertIn(word, doc["error"]["message"])
        self.assertEqual(self.up.requests(tag=tag), [], "a refused batch fetched something")
        r = self.one({"url": u, "retry": {"max": 4, "backoff_ms": 10}})
        self.assertTrue(r["ok"], r)

    def test_retry_shape_errors_are_400_naming_the_field(self):
        u = self.url("/json")
        for retry, word in (({"max": 1, "backof_ms": 10}, "backof_ms"), ({"max": -1}, "retry.max"),
                            ({"max": 1.5}, "retry.max"), ({"backoff_ms": "10"}, "retry.backoff_ms"),
                            ([1], "retry"), (3, "retry")):
            with self.subTest(retry=retry):
                doc = self.assert_error(self.post([{"url": u, "id": "x", "retry": retry}]), 400)
                self.assertIn(word, doc["error"]["message"])
                self.assertIn("x", doc["error"]["message"])


class RetryWorkerTest(RetryCase):
    """One worker: a waiting retry must not hold it."""
    CONFIG = {"workers": 1, "max_retries": 3}

    def test_waiting_retry_holds_no_worker(self):
        url, tag = self.failing(fail=1, status=503, retry_after="1")
        other = new_tag()
        doc = self.batch([{"id": "flaky", "url": url, "retry": {"max": 1}},
                          {"id": "other", "url": self.url("/json", v=1, tag=other)}], total=2)
        self.assertTrue(self.item(doc, "flaky")["ok"])
        self.assertEqual(self.item(doc, "flaky")["attempts"], 2)
        first, second = self.arrivals(tag)
        (o,) = self.arrivals(other)
        self.assertLess(o, second, "the other item waited for the retry's wait: a worker was held")
        self.assertLess(o - first, 0.7)

    def test_item_that_never_started_has_attempts_0(self):
        doc = self.batch({"timeout_ms": 600, "requests": [
            {"id": "slow", "url": self.url("/delay", ms=3000)},
            {"id": "late", "url": self.url("/json", v=1), "retry": {"max": 2}}]}, total=2)
        late = self.item(doc, "late")
        self.assert_item_error(late, "deadline_exceeded")
        self.assertEqual(late["attempts"], 0, doc)
        self.assertNotIn("attempts", self.item(doc, "slow"))


class RetryConfigTest(RetryCase):
    CONFIG = {"workers": 8, "retries": 2, "retry_backoff_ms": 50, "retry_backoff_max_ms": 100}

    def test_config_retries_apply_and_item_turns_them_off(self):
        url, tag = self.failing(fail=2)
        r = self.one(url)
        self.assertTrue(r["ok"], r)
        self.assertEqual((r["attempts"], self.hits(tag)), (3, 3))
        url, tag = self.failing(fail=1)
        r = self.one({"url": url, "retry": {"max": 0, "backoff_ms": 10}})
        self.assertEqual((r["status"], self.hits(tag)), (503, 1))
        self.assertNotIn("attempts", r)

    def test_item_backoff_only_keeps_config_max(self):
        url, tag = self.failing(fail=2)
        r = self.one({"url": url, "retry": {"backoff_ms": 5}})
        self.assertEqual((r["ok"], r["attempts"]), (True, 3), r)

    def test_plain_text_batch_gets_config_retries(self):
        url, tag = self.failing(fail=1)
        r = self.batch(url + "\n", total=1, ctype="text/plain")["results"][0]
        self.assertEqual((r["ok"], r["attempts"]), (True, 2), r)


if __name__ == "__main__":
    unittest.main()
