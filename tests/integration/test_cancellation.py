"""A client that disconnects cancels its batch: running fetches abort, queued items are dropped."""

import json
import re
import socket
import struct
import subprocess
import sys
import time
import unittest

from harness import DaemonCase, new_tag, stays, wait_for


class CancellationTest(DaemonCase):
    CONFIG = {"workers": 2, "default_timeout_ms": 20000, "batch_timeout_ms": 30000}

    def start_and_abandon(self, rst):
        tag, key = new_tag(), new_tag()
        items = [self.url("/drip", ms=100, chunks=80, tag=tag, i=i) for i in range(2)]
        items += [self.url("/count", key=key, i=i) for i in range(4)]
        body = json.dumps(items).encode()
        s = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=10)
        s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: len(self.up.requests(tag)) == 2, 5, "the two drips never started")
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        closed = time.monotonic()
        wait_for(lambda: self.up.aborted(tag) == 2, 5, "running fetches were not aborted after the "
                 "client went away (the drips would run 8 s)")
        self.assertLess(time.monotonic() - closed, 4)
        self.assertTrue(stays(lambda: self.up.count(key) == 0, 0.8), "queued items were fetched")
        start = time.monotonic()
        doc = self.batch([self.url("/json", v="a"), self.url("/json", v="b")], total=2, timeout=10)
        self.assertEqual(doc["summary"]["ok"], 2)
        self.assertLess(time.monotonic() - start, 3.0, "workers were not freed by the cancellation (8 s drips)")
        self.assertEqual(self.up.count(key), 0)

    def test_disconnect_cancels_batch(self):
        self.start_and_abandon(rst=False)

    def test_reset_cancels_batch(self):
        self.start_and_abandon(rst=True)

    def test_disconnect_while_only_queued(self):
        """Both workers busy with another client's batch; a second client's batch is only queued
        when it disconnects: none of its items is ever fetched, the first batch is unharmed."""
        busy, key = new_tag(), new_tag()
        from harness import Background
        first = Background(lambda: self.batch([self.url("/delay", ms=2000, tag=busy, i=i) for i in range(2)],
                                              total=2, timeout=10))
        wait_for(lambda: len(self.up.requests(busy)) == 2, 5, "the first batch never started")
        body = json.dumps([self.url("/count", key=key, i=i) for i in range(3)]).encode()
        s = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=10)
        s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: re.search(r"^fanoutd_queue_depth 3$", self.get("/metrics").body.decode(), re.M),
                 5, "the second batch to be queued")
        s.close()
        self.assertEqual(first.result(10)["summary"]["ok"], 2)
        self.assertTrue(stays(lambda: self.up.count(key) == 0, 1.0), "a cancelled batch's queued items ran")


# Holds N connections, each with one POSTed batch; on a line "close I J K ..." from stdin it
# closes every connection except I J K (in order), then those, and prints "closed".
HOLDER = r"""
import json, socket, sys
port, n, url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for i in range(n):
    body = json.dumps([url.replace("IDX", str(i))]).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    socks.append(s)
print("sent", flush=True)
last = [int(x) for x in sys.stdin.readline().split()[1:]]
for i in [i for i in range(n) if i not in last] + last:
    socks[i].close()
print("closed", flush=True)
sys.stdin.readline()
"""


class BurstCancellationTest(DaemonCase):
    """Issue 10 input 3: many clients, each with one slow item, all go away at once. Every
    queued item must be dropped: only the items already running reach the upstream. The
    clients of the running items close last, so every other client is gone by the time a
    worker is freed: a worker must then start none of their items (neither by taking the
    next waiting item before the watcher has seen its client go, nor because a cancellation
    was missed)."""

    CLIENTS = 300
    CONFIG = {"workers": 4, "default_timeout_ms": 20000, "batch_timeout_ms": 30000,
              "max_connections": 1024, "queue_capacity": 10000}

    def metric(self, name, labels=""):
        m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", self.get("/metrics").body.decode(), re.M)
        return float(m.group(1)) if m else None

    def test_burst_of_departures_drops_every_queued_item(self):
        n, workers = self.CLIENTS, self.CONFIG["workers"]
        tag = new_tag()
        cancelled0 = self.metric("fanoutd_batches_total", '{outcome="cancelled"}') or 0
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(self.daemon.port), str(n),
                                   self.url("/delay", ms=3000, tag=tag, i="IDX")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: holder.poll() is None and (holder.kill(), holder.wait()))
        self.assertEqual(holder.stdout.readline().strip(), "sent")
        wait_for(lambda: self.metric("fanoutd_batches_in_flight") == n
                 and len(self.up.requests(tag)) == workers, 20,
                 f"all {n} batches in flight and {workers} items running")
        running = sorted(int(r.query["i"]) for r in self.up.requests(tag))
        holder.stdin.write("close " + " ".join(map(str, running)) + "\n")
        holder.stdin.flush()
        self.assertEqual(holder.stdout.readline().strip(), "closed")
        wait_for(lambda: self.metric("fanoutd_batches_in_flight") == 0, 20,
                 "every batch to be cancelled")
        self.assertEqual((self.metric("fanoutd_batches_total", '{outcome="cancelled"}') or 0)
                         - cancelled0, n)
        self.assertEqual(self.metric("fanoutd_queue_depth"), 0)
        self.assertTrue(stays(lambda: len(self.up.requests(tag)) == workers, 1.0),
                        f"{len(self.up.requests(tag)) - workers} queued items of departed clients "
                        f"reached the upstream")
        holder.stdin.close()
        holder.wait(10)


if __name__ == "__main__":
    unittest.main()
