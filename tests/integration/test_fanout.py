"""Fan-out and scheduling: concurrency, per_host_limit, fairness across batches, keep-alive."""

import json
import os
import re
import socket
import time
import unittest

from harness import Background, DaemonCase, new_tag, wait_for
from upstream import Upstream


def open_batch(port, payload):
    """Sends a JSON batch on a raw socket and returns the socket (the reply is not read)."""
    body = json.dumps(payload).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return s


class ElasticPoolTest(DaemonCase):
    """The pool starts a few workers, grows up to `workers` when items wait and no worker
    is idle, and lets idle workers go again (FANOUTD_TEST_WORKER_IDLE_MS stands in for
    the 30 s a worker idles before it leaves)."""

    PER_TEST = True
    CONFIG = {"workers": 64}

    def workers(self):
        m = re.search(r"^fanoutd_workers (\d+)$", self.get("/metrics").body.decode(), re.M)
        return int(m.group(1))

    def threads(self):
        return len(os.listdir(f"/proc/{self.daemon.proc.pid}/task"))

    def test_grows_under_load_and_shrinks_when_idle(self):
        self.start_daemon(env=dict(os.environ, FANOUTD_TEST_WORKER_IDLE_MS="400"))
        self.assertEqual(self.workers(), 4, "at idle only the floor of 4 workers runs")
        idle_threads = self.threads()
        for round_ in range(2):
            tag = new_tag()
            start = time.monotonic()
            doc = self.batch([self.url("/delay", ms=400, tag=tag, i=i) for i in range(50)],
                             total=50)
            elapsed = time.monotonic() - start
            self.assertEqual(doc["summary"]["ok"], 50)
            self.assertLess(elapsed, 2.5, f"round {round_}: 50 x 400 ms took {elapsed:.2f} s: "
                                          "the pool did not grow to run them at once")
            self.assertGreaterEqual(self.up.max_inflight(tag), 40)
            self.assertGreaterEqual(self.workers(), 50)
            self.assertLessEqual(self.workers(), 64)
            wait_for(lambda: self.workers() == 4, 10, "idle workers to leave, down to 4")
            wait_for(lambda: self.threads() == idle_threads, 10, "their threads to end")

    def test_items_that_cannot_run_start_no_worker(self):
        # per_host_limit 4: the 4 workers kept at idle are all the items may use at once,
        # so the 26 waiting ones must not start threads (they would idle for 30 s).
        self.start_daemon(per_host_limit=4)
        tag = new_tag()
        doc = self.batch([self.url("/delay", ms=100, tag=tag, i=i) for i in range(30)], total=30)
        self.assertEqual(doc["summary"]["ok"], 30)
        self.assertEqual(self.up.max_inflight(tag), 4)
        self.assertEqual(self.workers(), 4, "workers were started for items held back by "
                                            "per_host_limit")

    def test_never_more_than_workers(self):
        self.start_daemon(workers=8)
        tag = new_tag()
        start = time.monotonic()
        doc = self.batch([self.url("/delay", ms=300, tag=tag, i=i) for i in range(24)], total=24)
        self.assertEqual(doc["summary"]["ok"], 24)
        self.assertEqual(self.up.max_inflight(tag), 8)
        self.assertGreaterEqual(time.monotonic() - start, 0.85, "24 x 300 ms on 8 workers")
        self.assertEqual(self.workers(), 8)


class FanoutTest(DaemonCase):
    CONFIG = {"workers": 64}

    def test_fifty_slow_items_run_concurrently(self):
        tag = new_tag()
        start = time.monotonic()
        doc = self.batch([self.url("/delay", ms=300, tag=tag, i=i) for i in range(50)], total=50)
        elapsed = time.monotonic() - start
        self.assertEqual(doc["summary"]["ok"], 50)
        self.assertLess(elapsed, 3.0, "50 x 300 ms should take about 300 ms with 64 workers, not 15 s")
        self.assertGreaterEqual(self.up.max_inflight(tag), 20, "items did not overlap at the upstream")

    def test_concurrent_batches(self):
        tags = [new_tag() for _ in range(4)]
        start = time.monotonic()
        runs = [Background(lambda t=t: self.batch([self.url("/delay", ms=400, tag=t, i=i)
                                                   for i in range(10)], total=10)) for t in tags]
        docs = [b.result(10) for b in runs]
        self.assertLess(time.monotonic() - start, 4.0, "4 batches x 10 x 400 ms with 64 workers: not 16 s")
        self.assertTrue(all(d["summary"]["ok"] == 10 for d in docs))


class PerHostLimitTest(DaemonCase):
    CONFIG = {"workers": 16, "per_host_limit": 2}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.other = Upstream("127.0.0.1").start()  # same address, other port: another host:port

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.other.stop()

    def test_at_most_two_in_flight_per_host(self):
        tag = new_tag()
        start = time.monotonic()
        doc = self.batch([self.url("/delay", ms=300, tag=tag, i=i) for i in range(8)], total=8)
        elapsed = time.monotonic() - start
        self.assertEqual(doc["summary"]["ok"], 8)
        self.assertEqual(self.up.max_inflight(tag), 2, "per_host_limit=2 is the cap, and it is used")
        self.assertGreater(elapsed, 1.1, "8 x 300 ms at 2 at a time needs >= 1.2 s")

    def test_limit_is_per_host_port(self):
        t1, t2 = new_tag(), new_tag()
        items = []
        for i in range(4):
            items.append(self.url("/delay", ms=1000, tag=t1, i=i))
            items.append(self.other.url("/delay", ms=1000, tag=t2, i=i))
        start = time.monotonic()
        doc = self.batch(items, total=8)
        elapsed = time.monotonic() - start
        self.assertEqual(doc["summary"]["ok"], 8)
        self.assertEqual(self.up.max_inflight(t1), 2)
        self.assertEqual(self.other.max_inflight(t2), 2)
        self.assertLess(elapsed, 3.2, "two hosts x 2 slots: about 2 s, not 4 s")


class FairnessTest(DaemonCase):
    CONFIG = {"workers": 2}

    def test_small_batch_not_stuck_behind_big_one(self):
        big = new_tag()
        sock = open_batch(self.daemon.port, [self.url("/delay", ms=200, tag=big, i=i) for i in range(40)])
        try:
            wait_for(lambda: len(self.up.requests(big)) >= 2, 5, "the big batch never started")
            start = time.monotonic()
            doc = self.batch([self.url("/json", v="a"), self.url("/json", v="b")], total=2, timeout=15)
            elapsed = time.monotonic() - start
            self.assertEqual(doc["summary"]["ok"], 2)
            started_big = len(self.up.requests(big))
            self.assertLess(elapsed, 3.0, f"the small batch waited {elapsed:.2f} s behind 40 x 200 ms "
                                          f"on 2 workers (round-robin expected)")
            self.assertLess(started_big, 30, "the small batch ran only after most of the big one")
        finally:
            sock.close()


class KeepAliveTest(DaemonCase):
    CONFIG = {"workers": 2}

    def test_sequential_batches_reuse_connections(self):
        tag = new_tag()
        for i in range(30):
            doc = self.batch([self.url("/json", v=str(i), tag=tag)], total=1)
            self.assertTrue(doc["results"][0]["ok"])
        self.assertEqual(len(self.up.requests(tag)), 30)
        conns = self.up.connections(tag)
        self.assertLessEqual(conns, 4, f"30 sequential fetches used {conns} upstream connections")

    def test_batch_reuses_connections(self):
        tag = new_tag()
        self.batch([self.url("/json", v=str(i), tag=tag) for i in range(20)], total=20)
        self.assertLessEqual(self.up.connections(tag), 4)


if __name__ == "__main__":
    unittest.main()
