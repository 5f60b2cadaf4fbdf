"""v2 batch policies: best_effort, fail_fast, {"min_success": N} (contract "Policy: finishing early")."""

import time
import unittest

from harness import DaemonCase, new_tag, stays, wait_for

SLOW_S = 6.0  # the slow items' own length: 60 chunks of 100 ms


class PolicyTest(DaemonCase):
    CONFIG = {"workers": 8, "default_timeout_ms": 20000, "batch_timeout_ms": 30000}

    def slow(self, tag, i):
        """An item that runs SLOW_S at the upstream, which records it if aborted."""
        return self.url("/drip", ms=100, chunks=60, tag=tag, i=i)

    def failing(self, ms=400):
        """An item that fails (timeout, ok false) after about ms."""
        return {"url": self.url("/delay", ms=5000), "timeout_ms": ms}

    def assert_cancelled(self, r, *names):
        self.assertFalse(r["ok"], r)
        self.assertIsNone(r["status"], r)
        self.assertEqual(r["error"]["code"], "cancelled", r)
        for name in names:
            self.assertIn(name, r["error"]["message"], r)

    def assert_aborted(self, tag, n):
        """n fetches with tag reached the upstream and every one was aborted well before its end."""
        wait_for(lambda: len(self.up.requests(tag)) == n, 5, f"{n} slow fetches to have started")
        wait_for(lambda: self.up.aborted(tag) == n, 3,
                 f"the running fetches were not aborted ({self.up.aborted(tag)} of {n})")

    # -- fail_fast ----------------------------------------------------------------
    def test_fail_fast_aborts_running_fetches(self):
        """The first item not ok ends the batch at once: the running ones are cancelled, naming
        it, and their connections closed well before their own 6 s end."""
        tag = new_tag()
        bad = dict(self.failing(400), id="the-bad-one")
        items = [{"url": self.slow(tag, 0), "id": "s0"}, bad, {"url": self.slow(tag, 1), "id": "s1"}]
        start = time.monotonic()
        doc = self.batch({"policy": "fail_fast", "requests": items}, total=3)
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, 3.0, "the batch waited for the slow items")
        self.assertGreaterEqual(elapsed, 0.35)
        r = {x["id"]: x for x in doc["results"]}
        self.assertEqual(r["the-bad-one"]["error"]["code"], "timeout")
        for i in ("s0", "s1"):
            self.assert_cancelled(r[i], "fail_fast", "the-bad-one", "item 1")
        self.assertEqual(doc["_resp"].header("X-Batch-Complete"), "false")
        self.assertEqual((doc["summary"]["ok"], doc["summary"]["failed"]), (0, 3))
        self.assert_aborted(tag, 2)
        self.assertLess(time.monotonic() - start, SLOW_S - 1)

    def test_fail_fast_on_a_non_2xx_status(self):
        """A response that is not 2xx is ok false: it ends a fail_fast batch (status kept, no error)."""
        tag = new_tag()
        # the 503 after 300 ms: the slow item has surely reached the upstream by then
        items = [self.slow(tag, 0), self.url("/status", code=503, ms=300)]
        start = time.monotonic()
        doc = self.batch({"policy": "fail_fast", "requests": items}, total=2)
        self.assertLess(time.monotonic() - start, 3.0)
        self.assertEqual(doc["results"][1]["status"], 503)
        self.assertNotIn("error", doc["results"][1])
        self.assert_cancelled(doc["results"][0], "item 1")
        self.assert_aborted(tag, 1)

    def test_fail_fast_queued_items_never_start(self):
        """With max_concurrency 1 the items behind the failed one are cancelled while queued and
        never reach the upstream."""
        tag, key = new_tag(), new_tag()
        items = [self.url("/json", v="first", tag=tag), self.url("/status", code=500, tag=tag),
                 self.url("/count", key=key, i=2), self.url("/count", key=key, i=3)]
        doc = self.batch({"policy": "fail_fast", "max_concurrency": 1, "requests": items}, total=4)
        self.assertTrue(doc["results"][0]["ok"])
        self.assertEqual(doc["results"][1]["status"], 500)
        for r in doc["results"][2:]:
            self.assert_cancelled(r, "item 1")
        self.assertTrue(stays(lambda: self.up.count(key) == 0, 0.5), "a queued item was fetched")
        self.assertEqual(len(self.up.requests(tag)), 2)

    def test_fail_fast_all_ok_is_complete(self):
        doc = self.batch({"policy": "fail_fast", "requests": [self.url("/json", v=i) for i in range(4)]},
                         total=4)
        self.assertEqual(doc["summary"]["ok"], 4)
        self.assertEqual(doc["_resp"].header("X-Batch-Complete"), "true")

    # -- min_success -----------------------------------------------------------------
    def test_min_success_reached_early(self):
        """{"min_success": 2}: the batch ends once 2 items are ok; the slow ones are cancelled and
        aborted; 200 with X-Batch-Complete false."""
        tag = new_tag()
        items = [self.url("/json", v="a"), self.url("/delay", ms=200), self.slow(tag, 0), self.slow(tag, 1)]
        start = time.monotonic()
        doc = self.batch({"policy": {"min_success": 2}, "requests": items}, total=4)
        self.assertLess(time.monotonic() - start, 3.0)
        self.assertEqual([r["ok"] for r in doc["results"][:2]], [True, True])
        for r in doc["results"][2:]:
            self.assert_cancelled(r, "min_success")
        self.assertEqual((doc["summary"]["ok"], doc["summary"]["failed"]), (2, 2))
        self.assertEqual(doc["_resp"].header("X-Batch-Complete"), "false")
        self.assert_aborted(tag, 2)

    def test_min_success_unreachable(self):
        """{"min_success": 3} of 4: once 2 have failed, 3 can no longer be reached."""
        tag = new_tag()
        items = [self.url("/status", code=500), self.failing(300), self.slow(tag, 0), self.slow(tag, 1)]
        start = time.monotonic()
        doc = self.batch({"policy": {"min_success": 3}, "requests": items}, total=4)
        self.assertLess(time.monotonic() - start, 3.0)
        self.assertEqual(doc["results"][0]["status"], 500)
        self.assertEqual(doc["results"][1]["error"]["code"], "timeout")
        for r in doc["results"][2:]:
            self.assert_cancelled(r, "min_success", "item 1")
        self.assert_aborted(tag, 2)

    def test_min_success_of_every_item_waits_for_all(self):
        """min_success equal to the item count: every item runs to its end (all ok: complete)."""
        items = [self.url("/delay", ms=ms) for ms in (50, 300)]
        doc = self.batch({"policy": {"min_success": 2}, "requests": items}, total=2)
        self.assertEqual(doc["summary"]["ok"], 2)
        self.assertEqual(doc["_resp"].header("X-Batch-Complete"), "true")

    def test_min_success_one_ends_at_the_first_ok(self):
        tag = new_tag()
        # The ok item takes 300 ms, so that the slow one has surely reached the upstream
        # (and so has a fetch to abort) when the policy ends the batch.
        doc = self.batch({"policy": {"min_success": 1.0},
                          "requests": [self.slow(tag, 0), self.url("/delay", ms=300, v="x")]},
                         total=2)
        self.assertTrue(doc["results"][1]["ok"])
        self.assert_cancelled(doc["results"][0], "min_success")
        self.assert_aborted(tag, 1)

    def test_best_effort_runs_everything(self):
        """best_effort (also the default): failures do not end the batch."""
        for policy in ("best_effort", None):
            with self.subTest(policy=policy):
                payload = {"requests": [self.url("/status", code=500), self.url("/delay", ms=300)]}
                if policy is not None:
                    payload["policy"] = policy
                doc = self.batch(payload, total=2)
                self.assertTrue(doc["results"][1]["ok"], doc["results"][1])

    # -- validation ----------------------------------------------------------------
    def test_invalid_policies_are_400_naming_it(self):
        tag = new_tag()
        urls = [self.url("/json", tag=tag, i=i) for i in range(2)]
        for policy in ("sometimes", "FAIL_FAST", 1, None, [], {}, {"min_success": 0},
                       {"min_success": 3}, {"min_success": -1}, {"min_success": "1"},
                       {"min_success": 1.5}, {"min_success": True}, {"max_failures": 1},
                       {"min_success": 1, "extra": 2}):
            with self.subTest(policy=policy):
                resp = self.post({"requests": urls, "policy": policy})
                self.assertEqual(resp.status, 400, resp)
                err = resp.json()["error"]
                self.assertEqual(err["code"], "bad_request")
                self.assertIn("policy", err["message"])
        self.assertEqual(self.up.requests(tag), [], "a refused batch fetched something")


if __name__ == "__main__":
    unittest.main()
