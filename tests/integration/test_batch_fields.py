"""v2 batch object fields: defaults, max_concurrency, timings, the unknown-field rule, and
traceparent propagation (contract "Batch object: new fields", "Timings", "Other headers")."""

import json
import re
import time
import unittest

from harness import DaemonCase, closed_port, new_tag

TIMING_KEYS = {"queue_ms", "dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "total_ms", "start_ms", "end_ms"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def echoed(result):
    """The request headers the /echo upstream saw, as {lower name: [values]}."""
    h = {}
    for k, v in result["body"]["headers"]:
        h.setdefault(k.lower(), []).append(v)
    return h


class BatchFieldsBase(DaemonCase):
    CONFIG = {"workers": 8, "default_timeout_ms": 20000, "batch_timeout_ms": 30000}

    def assert_400(self, payload, *words, headers=()):
        resp = self.post(payload, headers=headers)
        self.assertEqual(resp.status, 400, resp)
        err = resp.json()["error"]
        self.assertEqual(err["code"], "bad_request")
        for w in words:
            self.assertIn(w, err["message"])
        return err["message"]


class DefaultsTest(BatchFieldsBase):
    def test_default_headers_merge_case_insensitively_item_wins(self):
        payload = {"defaults": {"headers": {"X-Team": "blue", "X-Env": "prod"}},
                   "requests": [{"url": self.url("/echo"), "id": "plain"},
                                {"url": self.url("/echo"), "id": "own", "headers": {"x-team": "red"}},
                                self.url("/echo")]}
        doc = self.batch(payload, total=3)
        plain, own, string = (echoed(r) for r in doc["results"])
        self.assertEqual((plain.get("x-team"), plain.get("x-env")), (["blue"], ["prod"]))
        self.assertEqual((own.get("x-team"), own.get("x-env")), (["red"], ["prod"]),
                         "the item's header replaces the default of the same name")
        self.assertEqual((string.get("x-team"), string.get("x-env")), (["blue"], ["prod"]),
                         "a plain URL string item gets the defaults too")
        self.assertEqual(doc["results"][2]["id"], "2")

    def test_default_timeout_applies_unless_the_item_gives_one(self):
        payload = {"defaults": {"timeout_ms": 500},
                   "requests": [{"url": self.url("/delay", ms=3000), "id": "slow"},
                                self.url("/delay", ms=3000),
                                {"url": self.url("/delay", ms=900), "id": "patient", "timeout_ms": 5000}]}
        start = time.monotonic()
        doc = self.batch(payload, total=3)
        self.assertLess(time.monotonic() - start, 2.5)
        self.assertEqual(doc["results"][0]["error"]["code"], "timeout")
        self.assertEqual(doc["results"][1]["error"]["code"], "timeout")
        self.assertTrue(doc["results"][2]["ok"], doc["results"][2])

    def test_empty_defaults_change_nothing(self):
        doc = self.batch({"defaults": {}, "requests": [self.url("/json", v="x")]}, total=1)
        self.assertTrue(doc["results"][0]["ok"])

    def test_bad_defaults_are_400_naming_them(self):
        tag = new_tag()
        urls = [self.url("/json", tag=tag, i=i) for i in range(2)]
        cases = [("x", ("defaults",)), ([], ("defaults",)),
                 ({"method": "POST"}, ("defaults", "method")),
                 ({"timout_ms": 5}, ("defaults", "timout_ms")),
                 ({"timeout_ms": 0}, ("defaults", "timeout_ms")),
                 ({"timeout_ms": 1.5}, ("defaults", "timeout_ms")),
                 ({"headers": {"X-A": 1}}, ("defaults", "X-A")),
                 ({"headers": "X-A: 1"}, ("defaults", "headers")),
                 ({"headers": {"Bad Name": "1"}}, ("defaults",)),
                 ({"headers": {"Content-Length": "1"}}, ("defaults",)),
                 ({"response_headers": "X-A"}, ("defaults", "response_headers")),
                 ({"response_headers": [1]}, ("defaults", "response_headers")),
                 ({"retry": 3}, ("defaults", "retry")),
                 ({"retry": {"max": 1, "backof_ms": 10}}, ("defaults", "retry", "backof_ms")),
                 ({"retry": {"max": -1}}, ("defaults", "retry", "max"))]
        for value, words in cases:
            with self.subTest(defaults=value):
                self.assert_400({"requests": urls, "defaults": value}, *words)
        self.assertEqual(self.up.requests(tag), [], "a refused batch fetched something")

    def test_unknown_fields_are_400_naming_them(self):
        tag = new_tag()
        u = self.url("/json", tag=tag)
        self.assert_400({"requests": [u], "timout_ms": 100}, "timout_ms")
        self.assert_400({"requests": [u], "Policy": "fail_fast"}, "Policy")
        self.assert_400({"requests": [{"url": u, "timout_ms": 100}]}, "timout_ms", "item 0")
        self.assert_400({"requests": [u], "defaults": {"header": {}}}, "header")
        self.assertEqual(self.up.requests(tag), [])


class MaxConcurrencyTest(BatchFieldsBase):
    def test_bounds_parallel_fetches(self):
        tag = new_tag()
        start = time.monotonic()
        doc = self.batch({"max_concurrency": 2,
                          "requests": [self.url("/delay", ms=300, tag=tag, i=i) for i in range(6)]}, total=6)
        self.assertEqual(doc["summary"]["ok"], 6)
        self.assertEqual(self.up.max_inflight(tag), 2, "at most 2 at once, and 2 did run together")
        self.assertGreaterEqual(time.monotonic() - start, 0.85)

    def test_one_runs_in_request_order(self):
        tag = new_tag()
        self.batch({"max_concurrency": 1,
                    "requests": [self.url("/delay", ms=100, tag=tag, i=i) for i in range(5)]}, total=5)
        reqs = sorted(self.up.requests(tag), key=lambda r: r.when)
        self.assertEqual([r.query["i"] for r in reqs], ["0", "1", "2", "3", "4"])
        self.assertEqual(self.up.max_inflight(tag), 1)
        for before, after in zip(reqs, reqs[1:]):
            self.assertGreaterEqual(after.when - before.when, 0.09, "two items overlapped")

    def test_larger_than_the_batch_is_no_cap(self):
        tag = new_tag()
        self.batch({"max_concurrency": 100,
                    "requests": [self.url("/delay", ms=300, tag=tag, i=i) for i in range(4)]}, total=4)
        self.assertEqual(self.up.max_inflight(tag), 4)

    def test_bad_values_are_400(self):
        u = self.url("/json")
        for value in (0, -2, 1.5, "2", None, True, [1]):
            with self.subTest(value=value):
                self.assert_400({"requests": [u], "max_concurrency": value}, "max_concurrency")


class TimingsTest(BatchFieldsBase):
    def test_absent_unless_asked(self):
        for payload in ({"requests": [self.url("/json")]},
                        {"requests": [self.url("/json")], "timings": False}):
            doc = self.batch(payload, total=1)
            self.assertNotIn("timings", doc["results"][0])
        doc = self.batch({"requests": [self.url("/json"), self.url("/status", code=500)],
                          "merge": "bodies", "timings": True}, total=2)
        self.assertEqual(set(doc["errors"]["1"]["timings"]), TIMING_KEYS,
                         "a merged document's errors carry timings too")

    def test_plausible(self):
        items = [{"url": self.url("/delay", ms=200), "id": "slow"}, {"url": self.url("/json"), "id": "fast"},
                 {"url": f"http://127.0.0.1:{closed_port()}/", "id": "closed"}]
        doc = self.batch({"timings": True, "requests": items}, total=3)
        r = {x["id"]: x for x in doc["results"]}
        for x in doc["results"]:
            t = x["timings"]
            self.assertEqual(set(t), TIMING_KEYS)
            for k in TIMING_KEYS:
                self.assertIn(type(t[k]), (int, float))
                self.assertGreaterEqual(t[k], 0)
            self.assertEqual(t["total_ms"], x["duration_ms"])
            self.assertLessEqual(t["dns_ms"] + t["connect_ms"] + t["tls_ms"], t["total_ms"] + 1)
            self.assertLessEqual(t["ttfb_ms"], t["total_ms"] + 1)
            self.assertLess(t["queue_ms"], 1000)
            self.assertEqual(t["tls_ms"], 0, "plain http")
        self.assertGreaterEqual(r["slow"]["timings"]["ttfb_ms"], 190)
        self.assertLess(r["fast"]["timings"]["ttfb_ms"], 190)
        self.assertEqual(r["closed"]["timings"]["ttfb_ms"], 0, "no byte came")

    def test_ttfb_of_a_redirect_counts_from_the_fetch_start(self):
        """Hops: the first byte is the final response's, timed from the start of the whole fetch."""
        target = self.url("/delay", ms=200)
        doc = self.batch({"timings": True, "requests": [self.url("/redirect", to=target)]}, total=1)
        r = doc["results"][0]
        self.assertTrue(r["ok"], r)
        self.assertGreaterEqual(r["timings"]["ttfb_ms"], 190)
        self.assertLessEqual(r["timings"]["ttfb_ms"], r["timings"]["total_ms"] + 1)

    def test_queue_ms_with_max_concurrency_one(self):
        items = [self.url("/delay", ms=300, i=i) for i in range(3)]
        doc = self.batch({"timings": True, "max_concurrency": 1, "requests": items}, total=3)
        q = [r["timings"]["queue_ms"] for r in doc["results"]]
        self.assertLess(q[0], 250, q)
        self.assertGreaterEqual(q[1], 280, q)
        self.assertGreaterEqual(q[2], 580, q)
        for r in doc["results"]:
            self.assertGreaterEqual(r["timings"]["ttfb_ms"], 280, r)
            self.assertLess(r["timings"]["total_ms"], 600, f"queueing counted in total_ms: {r}")

    def test_waterfall_start_and_end(self):
        """start_ms and end_ms, from the batch's arrival: with max_concurrency 1 three 300 ms
        items follow one another, each spans about its total_ms, and the last ends within the
        batch's duration."""
        items = [self.url("/delay", ms=300, i=i) for i in range(3)]
        doc = self.batch({"timings": True, "max_concurrency": 1, "requests": items}, total=3)
        t = [r["timings"] for r in doc["results"]]
        self.assertLess(t[0]["start_ms"], 250, t)
        for k in range(3):
            self.assertGreaterEqual(t[k]["end_ms"] - t[k]["start_ms"], 290, t)
            self.assertLess(abs(t[k]["end_ms"] - t[k]["start_ms"] - t[k]["total_ms"]), 100, t)
        for before, after in zip(t, t[1:]):
            self.assertGreaterEqual(after["start_ms"], before["end_ms"] - 5, t)
        self.assertLessEqual(t[2]["end_ms"], doc["summary"]["duration_ms"] + 5)

    def test_retries_are_not_queueing(self):
        """An item that is retried: queue_ms is the wait before its first attempt; the
        attempts and their backoff lie between start_ms and end_ms."""
        doc = self.batch({"timings": True, "requests": [
            {"url": self.url("/status", code=503, ms=150), "retry": {"max": 2, "backoff_ms": 0}}]},
            total=1)
        r = doc["results"][0]
        t = r["timings"]
        self.assertEqual(r["attempts"], 3, r)
        self.assertLess(t["queue_ms"], 100, t)
        self.assertGreaterEqual(t["end_ms"] - t["start_ms"], 440, t)

    def test_items_that_never_started(self):
        """Cancelled while queued (fail_fast, max_concurrency 1): zeros but queue_ms, which runs
        to the batch's end."""
        doc = self.batch({"timings": True, "policy": "fail_fast", "max_concurrency": 1,
                          "requests": [self.url("/delay", ms=200), self.url("/status", code=500),
                                       self.url("/json")]}, total=3)
        t = doc["results"][2]["timings"]
        self.assertEqual({k: t[k] for k in TIMING_KEYS - {"queue_ms"}},
                         {k: 0 for k in TIMING_KEYS - {"queue_ms"}}, t)
        self.assertGreaterEqual(t["queue_ms"], 190, t)
        self.assertGreater(doc["results"][0]["timings"]["total_ms"], 0)

    def test_bad_values_are_400(self):
        for value in ("yes", 1, None, {}):
            with self.subTest(value=value):
                self.assert_400({"requests": [self.url("/json")], "timings": value}, "timings")


class TraceparentTest(BatchFieldsBase):
    CONFIG = dict(BatchFieldsBase.CONFIG, forward_headers="traceparent, tracestate, x-keep")

    def trace_headers(self, headers, n=3):
        tag = new_tag()
        self.batch([self.url("/json", tag=tag, i=i) for i in range(n)], total=n, headers=headers)
        reqs = self.up.requests(tag)
        self.assertEqual(len(reqs), n)
        return [(r.header("traceparent"), r.header("tracestate")) for r in reqs]

    def test_propagated_with_a_new_span_per_item(self):
        state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        sent = self.trace_headers({"traceparent": f"00-{TRACE_ID}-{PARENT}-01", "tracestate": state}, n=4)
        spans = []
        for parents, states in sent:
            self.assertEqual(len(parents), 1, parents)
            m = re.fullmatch(rf"00-{TRACE_ID}-([0-9a-f]{{16}})-01", parents[0])
            self.assertIsNotNone(m, parents[0])
            spans.append(m.group(1))
            self.assertEqual(states, [state])
        self.assertEqual(len(set(spans)), 4, spans)
        self.assertNotIn("0" * 16, spans)
        self.assertNotIn(PARENT, spans)

    def test_flags_kept_and_no_tracestate_without_one(self):
        sent = self.trace_headers({"traceparent": f"00-{TRACE_ID}-{PARENT}-00"}, n=1)
        (parents, states), = sent
        self.assertRegex(parents[0], rf"^00-{TRACE_ID}-[0-9a-f]{{16}}-00$")
        self.assertEqual(states, [])

    def test_malformed_traceparent_is_ignored(self):
        """Nothing is sent upstream, tracestate neither (also with both named in forward_headers)."""
        bad = [f"ff-{TRACE_ID}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE_ID}-{'0' * 16}-01",
               f"00-{TRACE_ID.upper()}-{PARENT}-01", f"00-{TRACE_ID}-{PARENT}-1",
               f"00-{TRACE_ID}-{PARENT}-01-extra", f"00-{TRACE_ID}{PARENT}-01", "garbage"]
        for value in bad:
            with self.subTest(traceparent=value):
                (parents, states), = self.trace_headers({"traceparent": value, "tracestate": "a=b"}, n=1)
                self.assertEqual((parents, states), ([], []))

    def test_no_traceparent_sends_none(self):
        (parents, states), = self.trace_headers({"x-keep": "1"}, n=1)
        self.assertEqual((parents, states), ([], []))

    def test_an_items_own_traceparent_wins(self):
        tag = new_tag()
        own = f"00-{'1' * 32}-{'2' * 16}-00"
        self.batch([{"url": self.url("/json", tag=tag), "headers": {"traceparent": own}}], total=1,
                   headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01", "tracestate": "a=b"})
        (req,) = self.up.requests(tag)
        self.assertEqual((req.header("traceparent"), req.header("tracestate")), ([own], []))

    def test_follows_redirects(self):
        tag = new_tag()
        target = self.url("/json", tag=tag)
        self.batch([self.url("/redirect", to=target)], total=1,
                   headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})
        (req,) = self.up.requests(tag)
        self.assertEqual(len(req.header("traceparent")), 1)
        self.assertTrue(req.header("traceparent")[0].startswith(f"00-{TRACE_ID}-"))


if __name__ == "__main__":
    unittest.main()
