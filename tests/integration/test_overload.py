"""503 overloaded: a batch is admitted whole or not at all, with Retry-After."""

import threading
import unittest

from harness import Background, DaemonCase, new_tag, wait_for


class OverloadTest(DaemonCase):
    CONFIG = {"workers": 1, "queue_capacity": 4}

    def holding(self, tag, n):
        """n items for the one worker: a 3 s one that it runs, then n-1 fast ones that wait
        in the queue until it ends."""
        return [self.url("/delay", ms=3000, tag=tag)] + \
               [self.url("/json", tag=tag, i=i) for i in range(n - 1)]

    def test_exactly_one_of_two_competing_batches_fits(self):
        """1 running + 2 queued leaves 2 places: a batch of 2 and a batch of 1 race for them;
        whichever comes second does not fit (the 2 needs both places, the 1 finds none)."""
        hold, two, one = new_tag(), new_tag(), new_tag()
        # Only the running item is slow: the race below has its 3 s to happen in, however
        # slowly the machine gets the two batches to the daemon.
        held = Background(lambda: self.batch(self.holding(hold, 3), total=3, timeout=20))
        wait_for(lambda: self.up.requests(hold), 5, "the holding batch never reached the upstream")
        go = threading.Event()

        def send(tag, n):
            go.wait(5)
            return self.post([self.url("/json", tag=tag, i=i) for i in range(n)], timeout=20)

        b2 = Background(lambda: send(two, 2))
        b1 = Background(lambda: send(one, 1))
        go.set()
        replies = {two: b2.result(20), one: b1.result(20)}
        statuses = sorted(r.status for r in replies.values())
        self.assertEqual(statuses, [200, 503], f"replies: {replies}")
        for tag, resp in replies.items():
            if resp.status == 503:
                self.assert_error(resp, 503, "overloaded")
                retry = (resp.header("Retry-After") or "").strip()
                self.assertRegex(retry, r"^[0-9]+$", "Retry-After must be whole seconds")
                self.assertGreaterEqual(int(retry), 1)
                self.assertEqual(self.up.requests(tag), [], "a rejected batch fetched something")
            else:
                self.assertEqual(resp.json()["summary"]["ok"], len(self.up.requests(tag)))
        self.assertEqual(held.result(15)["summary"]["ok"], 3, "the admitted batch was harmed")

    def test_capacity_frees_after_work(self):
        hold = new_tag()
        held = Background(lambda: self.batch(self.holding(hold, 4), total=4, timeout=20))
        wait_for(lambda: self.up.requests(hold), 5, "the holding batch never started")
        tag = new_tag()
        resp = self.post([self.url("/json", tag=tag, i=i) for i in range(2)])
        self.assert_error(resp, 503, "overloaded")
        self.assertEqual(held.result(15)["summary"]["ok"], 4)
        doc = self.batch([self.url("/json", tag=tag, i=i) for i in range(4)], total=4)
        self.assertEqual(doc["summary"]["ok"], 4, "a full-capacity batch fits once the queue is empty")


if __name__ == "__main__":
    unittest.main()
