"""The path from a finished batch to the answer sent: documents built off the watcher thread,
shutdown while a document is still being built or an answer still being sent, the duration
the summary reports, and what the access log says about answers cut short.

FANOUTD_TEST_DEEP_BUILD_DELAY_MS (a testing aid of the daemon, like
FANOUTD_TEST_WEDGE_WORKERS) makes every `merge: "deep"` document take that much longer to
build: it stands for the merge of large bodies (issue 10 used ten 8 MiB JSON bodies, seconds
of building) without the memory such bodies take on a shared test machine.
"""

import json
import os
import re
import signal
import socket
import time

from common import (RobustCase, Background, describe_rc, metric, request, wait_for, new_tag)

MIB = 1 << 20


def env_with(**kv):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in kv.items()})
    return env


def send_batch(port, payload):
    """A raw POST /batch on a fresh connection; returns the socket."""
    body = json.dumps(payload).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return s


def read_head(s):
    """Reads up to the end of the response headers; returns (status, headers, rest)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the headers: {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return int(lines[0].split()[1]), headers, rest


def access_lines(d):
    return [line for line in d.log().splitlines() if " access " in line or "access:" in line
            or "access request_id=" in line]


def access_field(line, name):
    m = re.search(rf"\b{name}=(\S+)", line)
    return m.group(1) if m else None


class FinishPath(RobustCase):
    def slow_item(self, tag, ms=20000, item_id="slow"):
        return {"id": item_id, "url": self.up.url("/delay", ms=ms, tag=tag)}

    def building(self, d, n_before=0):
        return len(re.findall(r"building its answer", d.log())) > n_before

    def occupy_the_worker(self, tag):
        """With workers = 1: a batch whose one slow item holds the only worker, so that the
        items of later batches stay queued and only the watcher can end those batches at
        their deadline (as per_host_limit did in issue 10)."""
        c = {"timeout_ms": 30000, "requests": [self.slow_item(tag, ms=20000, item_id="c")]}
        bg = Background(lambda: self.post(c, timeout=40))
        wait_for(lambda: self.up.requests(tag, "/delay"), 10, "the blocking item to start")
        return bg

    def deep_batch_ending_by_deadline(self, tag):
        return {"merge": "deep", "timeout_ms": 300, "requests": self.siblings(tag, 2)}

    def test_deadline_not_delayed_by_another_batchs_merge(self):
        """Batch A (deep merge, slow to build) ends by its deadline; while its document is
        being built, batch B (timeout_ms 500) must be answered at its own deadline, not after
        A's merge (issue 10 input 2: built on the one watcher thread, B waited 9 s)."""
        d = self.start_daemon(env=env_with(FANOUTD_TEST_DEEP_BUILD_DELAY_MS=4000),
                              log_level="debug", workers=1)
        tag = new_tag()
        self.occupy_the_worker(tag)
        a = self.deep_batch_ending_by_deadline(tag)
        bg_a = Background(lambda: (self.post(a, timeout=30), time.monotonic()))
        wait_for(lambda: self.building(d), 10, "batch A's document to be in the making")
        t0 = time.monotonic()
        b = {"timeout_ms": 500, "requests": [self.slow_item(tag, item_id="b")]}
        rb = self.post(b, timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(rb.status, 200, rb)
        self.assert_item_error(self.item(rb.json(), "b"), "deadline_exceeded")
        self.assertLess(took, 2.0, f"batch B (timeout_ms 500) answered after {took:.2f} s while "
                                   f"another batch's document was being built")
        ra, done_a = bg_a.result(20)
        self.assertEqual(ra.status, 200, ra)
        self.assertGreater(done_a - t0, took, "A's slow build should end after B's answer")
        doc = ra.json()
        self.assertEqual(doc["data"], {}, doc)
        for i in range(2):
            self.assertEqual(doc["errors"][f"s{i}"]["error"]["code"], "deadline_exceeded", doc)

    def test_duration_counts_the_building(self):
        """summary.duration_ms runs from arrival to the moment the document is complete
        (issue 9 input 6: 1.37 s to answer, duration_ms said 60)."""
        delay = 1500
        self.start_daemon(env=env_with(FANOUTD_TEST_DEEP_BUILD_DELAY_MS=delay))
        tag = new_tag()
        for timeout_ms in (None, 300):
            with self.subTest(timeout_ms=timeout_ms):
                payload = {"merge": "deep", "requests": self.siblings(tag, 2)}
                if timeout_ms:
                    payload["timeout_ms"] = timeout_ms
                    payload["requests"].append(self.slow_item(tag))
                t0 = time.monotonic()
                r = self.post(payload, timeout=30)
                took_ms = (time.monotonic() - t0) * 1000
                self.assertEqual(r.status, 200, r)
                ms = r.json()["summary"]["duration_ms"]
                self.assertGreaterEqual(ms, delay, f"duration_ms {ms} leaves out the building "
                                                   f"({delay} ms); answered after {took_ms:.0f} ms")
                self.assertLessEqual(ms, took_ms + 50, "duration_ms longer than the exchange")

    def test_deadline_outcome_when_a_worker_sees_it_first(self):
        """A batch whose only item is failed by the batch deadline inside its fetch (the
        worker's timeout is bounded by the deadline, so the worker often finishes the batch
        before the watcher does) is counted `deadline`, not `partial` (issue 10 input 20)."""
        d = self.start_daemon(log_level="info")
        tag = new_tag()
        n = 4
        before = self.metrics()
        for i in range(n):
            r = self.post({"timeout_ms": 300, "requests": [self.slow_item(tag, ms=5000)]}, timeout=10)
            self.assertEqual(r.status, 200, r)
            self.assert_item_error(self.item(r.json(), "slow"), "deadline_exceeded")
        after = self.metrics()
        count = lambda text, o: metric(text, "fanoutd_batches_total", {"outcome": o}) or 0  # noqa
        self.assertEqual(count(after, "deadline") - count(before, "deadline"), n,
                         f"partial: {count(after, 'partial') - count(before, 'partial')}")
        self.assertEqual(count(after, "partial"), count(before, "partial"))
        wait_for(lambda: len([x for x in access_lines(d) if "outcome=deadline" in x]) == n, 5,
                 "every access line to say outcome=deadline")

    def test_sigterm_while_a_document_is_built(self):
        """SIGTERM while a deadline-finished batch's document is still being built: the daemon
        waits for it (within the shutdown bound), answers it and exits 0 (issue 10 input 1:
        libmicrohttpd aborted, 'MHD_stop_daemon() called while we have suspended
        connections', exit 134)."""
        d = self.start_daemon(env=env_with(FANOUTD_TEST_DEEP_BUILD_DELAY_MS=1500),
                              log_level="debug", shutdown_grace_ms=1000, workers=1)
        tag = new_tag()
        self.occupy_the_worker(tag)
        a = self.deep_batch_ending_by_deadline(tag)
        bg = Background(lambda: self.post(a, timeout=30))
        wait_for(lambda: self.building(d), 10, "the document to be in the making")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        r = bg.result(15)
        self.assertEqual(r.status, 200, f"the batch must be answered: {r!r}\n{d.tail()}")
        self.assertEqual(r.json()["summary"]["total"], 2)
        rc = d.wait(10 - (time.monotonic() - t0))
        self.assertEqual(rc, 0, f"fanoutd {describe_rc(rc)}\n{d.tail()}")

    def test_sigterm_when_a_document_outlasts_the_bound(self):
        """A document still being built when the shutdown bound (grace, then 2 s to flush)
        ends: its connection is resumed and closed unanswered (never left suspended when the
        front end stops), and the daemon exits 0 once the building ends."""
        d = self.start_daemon(env=env_with(FANOUTD_TEST_DEEP_BUILD_DELAY_MS=5000),
                              log_level="debug", shutdown_grace_ms=200, workers=1)
        tag = new_tag()
        self.occupy_the_worker(tag)
        a = self.deep_batch_ending_by_deadline(tag)
        s = send_batch(d.port, a)
        self.addCleanup(s.close)
        wait_for(lambda: self.building(d), 10, "the document to be in the making")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        s.settimeout(10)
        try:
            got = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            got = b""
        closed_after = time.monotonic() - t0
        self.assertEqual(got, b"", f"expected the connection closed unanswered: {got[:200]!r}")
        self.assertLess(closed_after, 4.5, f"connection closed only after {closed_after:.1f} s")
        rc = d.wait(12 - (time.monotonic() - t0))
        self.assertEqual(rc, 0, f"fanoutd {describe_rc(rc)}\n{d.tail()}")
        self.assertIn("still being built", d.log())

    def big_batch(self, tag, n=4, size=6 * MIB):
        return [{"id": f"big{i}", "url": self.up.url("/big", bytes=size, tag=tag, i=i)}
                for i in range(n)]

    def test_client_gone_mid_answer_is_logged(self):
        """A client that reads part of a large answer and closes: the access line says
        outcome=client_gone with fewer bytes than the answer (issue 10 input 17). A client
        that reads it all: outcome=complete and every byte."""
        d = self.start_daemon(log_level="info")
        tag = new_tag()
        s = send_batch(d.port, self.big_batch(tag))
        status, headers, rest = read_head(s)
        self.assertEqual(status, 200)
        total = int(headers["content-length"])
        self.assertGreater(total, 20 * MIB)
        got = len(rest)
        while got < MIB:
            got += len(s.recv(65536))
        s.close()
        wait_for(lambda: access_lines(d), 10, "the access line")
        line = access_lines(d)[-1]
        self.assertEqual(access_field(line, "outcome"), "client_gone", line)
        sent = int(access_field(line, "bytes"))
        self.assertLess(sent, total, line)
        self.assertGreaterEqual(sent, MIB // 2, f"bytes should count what was sent: {line}")

        r = self.post({"requests": self.big_batch(new_tag(), n=2)}, timeout=30)
        self.assertEqual(r.status, 200)
        wait_for(lambda: len(access_lines(d)) == 2, 10, "the second access line")
        line = access_lines(d)[-1]
        self.assertEqual(access_field(line, "outcome"), "complete", line)
        self.assertEqual(int(access_field(line, "bytes")), len(r.body), line)

    def test_answer_being_sent_gets_the_rest_of_the_grace(self):
        """SIGTERM while a large finished answer is read slowly: it gets what is left of
        shutdown_grace_ms, not a fixed 2 s flush (issue 10 input 7), and the daemon exits 0
        once it is sent."""
        d = self.start_daemon(log_level="info", shutdown_grace_ms=15000)
        tag = new_tag()
        s = send_batch(d.port, self.big_batch(tag))
        status, headers, rest = read_head(s)
        self.assertEqual(status, 200)
        total = int(headers["content-length"])
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        got = len(rest)
        s.settimeout(10)
        # Slowly for 3.5 s (past the old fixed flush), then as fast as it comes.
        while time.monotonic() - t0 < 3.5:
            chunk = s.recv(64 * 1024)
            if not chunk:
                break
            got += len(chunk)
            time.sleep(0.05)
        while got < total:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        s.close()
        self.assertEqual(got, total, f"the answer was cut at {got} of {total} bytes\n{d.tail()}")
        rc = d.wait(10)
        self.assertEqual(rc, 0, f"fanoutd {describe_rc(rc)}\n{d.tail()}")
        line = access_lines(d)[-1]
        self.assertEqual(access_field(line, "outcome"), "complete", line)
        self.assertEqual(int(access_field(line, "bytes")), total, line)

    def test_second_sigterm_cuts_a_slow_answer_short(self):
        """A second SIGTERM while an answer is still being read slowly: the daemon stops
        waiting for it and exits 0 at once; the access line says shutdown, with the bytes
        sent so far."""
        d = self.start_daemon(log_level="info", shutdown_grace_ms=15000)
        s = send_batch(d.port, self.big_batch(new_tag()))
        status, headers, _ = read_head(s)
        self.assertEqual(status, 200)
        total = int(headers["content-length"])
        d.signal(signal.SIGTERM)
        wait_for(lambda: "draining:" in d.log(), 5, "the daemon to take the first SIGTERM")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait(5)
        took = time.monotonic() - t0
        s.close()
        self.assertEqual(rc, 0, f"fanoutd {describe_rc(rc)}\n{d.tail()}")
        self.assertLess(took, 3, f"exited {took:.1f} s after the second SIGTERM")
        line = access_lines(d)[-1]
        self.assertEqual(access_field(line, "outcome"), "shutdown", line)
        self.assertLess(int(access_field(line, "bytes")), total, line)
