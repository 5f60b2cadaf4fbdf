"""A client that disconnects cancels its batch: running fetches abort, queued items are dropped."""

import json
import re
import socket
import struct
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


if __name__ == "__main__":
    unittest.main()
