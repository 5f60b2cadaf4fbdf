"""NDJSON streaming (Accept: application/x-ndjson) and gzip answers (Accept-Encoding: gzip),
against the real daemon and the real local upstream.

The stream is read off a raw socket, chunk by chunk, so that each line's arrival time is
seen as the client sees it (and a client that stops reading can be played).
"""

import json
import os
import re
import signal
import socket
import time
import zlib

from harness import DaemonCase, new_tag, stays, wait_for

NDJSON = "application/x-ndjson"


class Stream:
    """A POST /batch over a raw socket; the answer is read incrementally. Lines (decoded
    from gzip when the answer says so) are kept with the monotonic time they arrived."""

    def __init__(self, port, payload, headers=(), ctype="application/json", rcvbuf=None,
                 timeout=30):
        if isinstance(payload, (bytes, str)):
            body = payload.encode() if isinstance(payload, str) else payload
        else:
            body = json.dumps(payload).encode()
        hdrs = {"Accept": NDJSON}
        hdrs.update(dict(headers))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        head = "POST /batch HTTP/1.1\r\nHost: t\r\n"
        if ctype is not None:
            head += f"Content-Type: {ctype}\r\n"
        for k, v in hdrs.items():
            if v is not None:
                head += f"{k}: {v}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.start = time.monotonic()
        self.sock.sendall(head.encode() + body)
        self.buf = b""
        self.ended = False      # the final (empty) chunk arrived
        self.eof = False        # the connection closed
        self.pending = b""      # decoded bytes not yet a whole line
        self.lines = []         # (time, bytes)
        self.raw_bytes = 0
        self._read_head()
        self.gzip = (self.headers.get("content-encoding") or "").lower() == "gzip"
        self.z = zlib.decompressobj(wbits=31) if self.gzip else None

    def _recv(self):
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
        self.raw_bytes += len(data)
        self.buf += data
        return data

    def _read_head(self):
        while b"\r\n\r\n" not in self.buf:
            if not self._recv():
                raise AssertionError(f"connection closed before the headers: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.head_time = time.monotonic()
        self.chunked = (self.headers.get("transfer-encoding") or "").lower() == "chunked"

    def body(self):
        """The whole body of a non-chunked answer (a refusal)."""
        n = int(self.headers.get("content-length", "0"))
        while len(self.buf) < n and not self.eof:
            self._recv()
        return self.buf[:n]

    def _take_chunks(self):
        """Moves whole chunks from buf to the decoded data; False when more bytes are needed."""
        while not self.ended:
            if b"\r\n" not in self.buf:
                return
            size_line, rest = self.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                if b"\r\n" in rest:
                    self.ended = True
                    self.buf = b""
                return
            if len(rest) < size + 2:
                return
            data, self.buf = rest[:size], rest[size + 2:]
            if self.z is not None:
                data = self.z.decompress(data)
            now = time.monotonic()
            self.pending += data
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                self.lines.append((now, line))

    def next_line(self, timeout=20):
        """The next whole line as parsed JSON (None at the end of the stream)."""
        end = time.monotonic() + timeout
        seen = getattr(self, "_given", 0)
        while len(self.lines) <= seen:
            self._take_chunks()
            if len(self.lines) > seen:
                break
            if self.ended or self.eof:
                return None
            if time.monotonic() > end:
                raise AssertionError(f"no line within {timeout} s")
            self._recv()
        self._given = seen + 1
        return json.loads(self.lines[seen][1])

    def line_time(self, k):
        return self.lines[k][0] - self.start

    def all_lines(self, timeout=30):
        out = []
        end = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.1, end - time.monotonic()))
            if line is None:
                return out
            out.append(line)

    def close(self):
        self.sock.close()


class StreamCase(DaemonCase):
    def stream(self, payload, **kw):
        s = Stream(self.daemon.port, payload, **kw)
        self.addCleanup(s.close)
        return s

    def check_stream(self, s, n, items=None):
        """Every line of a whole stream: n item lines, each index once, then one summary,
        then the end of the chunked body. Returns (results by index, summary)."""
        self.assertEqual(s.status, 200)
        self.assertEqual(s.headers.get("content-type"), NDJSON)
        self.assertTrue(s.chunked, f"not chunked: {s.headers}")
        s.all_lines()
        lines = [json.loads(raw) for _, raw in s.lines]   # those read before too
        self.assertTrue(s.ended, "the stream did not end with its final chunk")
        self.assertGreaterEqual(len(lines), n + 1)
        summary = lines[-1]
        self.assertEqual(set(summary), {"summary"}, f"last line: {summary}")
        by_index = {}
        for line in lines[:-1]:
            self.assertNotIn("summary", line, "a summary before the last line")
            if "heartbeat" in line:
                continue
            self.assertIn("index", line, line)
            self.assertNotIn(line["index"], by_index, f"index {line['index']} twice")
            self.check_result(line)
            by_index[line["index"]] = line
        self.assertEqual(sorted(by_index), list(range(n)), "not every item had exactly one line")
        sm = summary["summary"]
        ok = sum(r["ok"] for r in by_index.values())
        self.assertEqual((sm["total"], sm["ok"], sm["failed"]), (n, ok, n - ok))
        self.assertIs(sm["complete"], ok == n)
        self.assertIn(type(sm["duration_ms"]), (int, float))
        if items is not None:
            for i, it in enumerate(items):
                url = it if isinstance(it, str) else it["url"]
                self.assertEqual(by_index[i]["url"], url)
        return by_index, sm


class StreamTest(StreamCase):
    CONFIG = {"workers": 8, "default_timeout_ms": 20000, "batch_timeout_ms": 30000,
              "stream_heartbeat_ms": 0}

    def test_first_line_while_slow_item_runs(self):
        """The fast item's line arrives while the slow item is still being fetched."""
        tag = new_tag()
        items = [{"url": self.url("/drip", ms=100, chunks=30, tag=tag), "id": "slow"},
                 {"url": self.url("/json", v="fast", ms=10), "id": "fast"}]
        s = self.stream({"requests": items})
        first = s.next_line()
        self.assertEqual((first["id"], first["index"], first["ok"]), ("fast", 1, True))
        self.assertEqual(first["body"], {"v": "fast"})
        # The slow fetch is running now (it started, and dribbles for 3 s more).
        self.assertEqual(len(self.up.requests(tag)), 1)
        self.assertLess(s.line_time(0), 2.0, "the first line waited for the slow item")
        rest = s.all_lines()
        self.assertEqual(rest[0]["id"], "slow")
        self.assertGreaterEqual(s.line_time(1) - s.line_time(0), 1.5,
                                "the first line was not sent before the slow item ended")
        self.assertEqual(rest[-1]["summary"]["complete"], True)

    def test_every_item_once_and_summary_last(self):
        items = [self.url("/json", v=str(i), ms=(i * 37) % 200) for i in range(12)]
        items += [self.url("/status", code=404), "http://127.0.0.1:1/closed",
                  {"url": self.url("/big", bytes=300000), "id": "big"}]
        s = self.stream({"requests": items})
        by_index, sm = self.check_stream(s, len(items), items)
        self.assertIs(sm["complete"], False)
        self.assertEqual(by_index[12]["status"], 404)
        self.assertNotIn("error", by_index[12])
        self.assertEqual(by_index[13]["error"]["code"], "connect_failed")
        self.assertEqual(by_index[14]["id"], "big")
        self.assertEqual(len(by_index[14]["body"]), 300000)
        # Same RESULT fields as the document, plus "index".
        doc = self.batch({"requests": items[:3]})
        self.assertEqual(set(doc["results"][0]) | {"index"}, set(by_index[0]))

    def test_request_forms(self):
        urls = [self.url("/json", v="a"), self.url("/json", v="b")]
        for name, payload, ctype in (("plain", "\n".join(urls) + "\n", "text/plain"),
                                     ("array", urls, "application/json"),
                                     ("object", {"requests": urls}, "application/json")):
            with self.subTest(form=name):
                s = self.stream(payload, ctype=ctype)
                self.check_stream(s, 2, urls)

    def test_deadline_gives_every_line(self):
        items = [self.url("/delay", ms=8000), self.url("/json", v="f")]
        s = self.stream({"requests": items, "timeout_ms": 600})
        by_index, sm = self.check_stream(s, 2, items)
        self.assertEqual(by_index[0]["error"]["code"], "deadline_exceeded")
        self.assertTrue(by_index[1]["ok"])
        self.assertLess(s.lines[-1][0] - s.start, 4.0, "the deadline did not end the stream")

    def test_fail_fast_lines_before_summary(self):
        """A policy that ends the batch early: the failing item's line, then a cancelled line
        for every other item (the running fetches aborted), then the summary."""
        tag = new_tag()
        items = [self.url("/drip", ms=100, chunks=60, tag=tag, i=i) for i in range(2)]
        items.append(self.url("/status", code=500))
        s = self.stream({"requests": items, "policy": "fail_fast"})
        by_index, sm = self.check_stream(s, 3, items)
        self.assertEqual(by_index[2]["status"], 500)
        for i in (0, 1):
            self.assertEqual(by_index[i]["error"]["code"], "cancelled")
        self.assertIs(sm["complete"], False)
        self.assertLess(s.lines[-1][0] - s.start, 4.0, "the policy did not end the stream early")
        wait_for(lambda: self.up.aborted(tag) == 2, 5, "the running fetches were not aborted")

    def test_merge_with_stream_is_400(self):
        tag = new_tag()
        urls = [self.url("/json", v="a", tag=tag)]
        for merge in ("bodies", "deep"):
            with self.subTest(merge=merge):
                resp = self.post({"requests": urls, "merge": merge}, headers={"Accept": NDJSON})
                self.assertEqual(resp.status, 400)
                self.assertEqual(resp.json()["error"]["code"], "bad_request")
                self.assertIn("merge", resp.json()["error"]["message"])
                self.assertNotIn(NDJSON, resp.header("Content-Type") or "")
        self.assertEqual(self.up.requests(tag), [], "a refused batch fetched something")
        self.check_stream(self.stream({"requests": urls, "merge": "none"}), 1)

    def test_accept_first_type_only(self):
        urls = [self.url("/json", v="a")]
        resp = self.post(urls, headers={"Accept": "application/json, application/x-ndjson"})
        self.assertEqual(resp.header("Content-Type"), "application/json")
        self.assertIn("results", resp.json())
        s = self.stream(urls, headers={"Accept": "Application/X-NDJSON ;q=0.1, application/json"})
        self.check_stream(s, 1)

    def test_disconnect_mid_stream_aborts_fetches(self):
        tag = new_tag()
        items = [self.url("/drip", ms=100, chunks=80, tag=tag, i=i) for i in range(2)]
        items.append(self.url("/json", v="fast"))
        s = self.stream(items)
        self.assertEqual(s.next_line()["index"], 2)
        wait_for(lambda: len(self.up.requests(tag)) == 2, 5, "the drips never started")
        s.close()
        closed = time.monotonic()
        wait_for(lambda: self.up.aborted(tag) == 2, 5,
                 "the running fetches were not aborted when the stream's client left")
        self.assertLess(time.monotonic() - closed, 4)
        doc = self.batch([self.url("/json", v="after")], total=1)
        self.assertEqual(doc["summary"]["ok"], 1)

    def test_refusal_not_compressed_nor_streamed(self):
        resp = self.post(b"[\"http://", headers={"Accept": NDJSON, "Accept-Encoding": "gzip"})
        self.assertEqual(resp.status, 400)
        self.assertIsNone(resp.header("Content-Encoding"))
        self.assertEqual(resp.json()["error"]["code"], "bad_request")


class StreamLoadTest(StreamCase):
    CONFIG = {"workers": 16, "stream_heartbeat_ms": 50, "default_timeout_ms": 30000}

    def test_slow_steady_reader_gets_every_byte(self):
        """A reader with an 8 KiB receive buffer that pauses after each line: every line whole, in
        one piece, plain and gzip (the stream is parked and resumed many times)."""
        items = [self.url("/big", bytes=20000 + 997 * i, i=i) for i in range(60)]
        for ae in (None, "gzip"):
            with self.subTest(accept_encoding=ae):
                s = self.stream(items, headers={"Accept-Encoding": ae} if ae else {},
                                rcvbuf=8192)
                got = []
                end = time.monotonic() + 60
                while time.monotonic() < end:
                    line = s.next_line()
                    if line is None:
                        break
                    got.append(line)
                    time.sleep(0.005)
                self.assertTrue(s.ended)
                results = [x for x in got if "index" in x]
                self.assertEqual(sorted(x["index"] for x in results), list(range(60)))
                for x in results:
                    self.assertEqual(x["body"], "a" * (20000 + 997 * x["index"]))
                self.assertIn("summary", got[-1])

    def test_many_streams_at_once(self):
        """40 concurrent streams of 10 items each, with heartbeats: each gets all its lines
        and its summary."""
        streams = [self.stream([self.url("/json", v=f"{k}-{i}", ms=(i * 13 + k) % 120)
                                for i in range(10)]) for k in range(40)]
        for k, s in enumerate(streams):
            by_index, sm = self.check_stream(s, 10)
            self.assertEqual(by_index[3]["body"], {"v": f"{k}-3"})
            self.assertIs(sm["complete"], True)


class StreamRefusedTest(StreamCase):
    CONFIG = {"workers": 2, "max_batch": 2, "auth_token": "tok", "queue_capacity": 2}

    def test_refused_batches_answered_as_v1(self):
        tag = new_tag()
        urls = [self.url("/json", v=str(i), tag=tag) for i in range(3)]
        auth = {"Authorization": "Bearer tok"}
        cases = [("token", urls[:1], {}, 401), ("too many", urls, auth, 413),
                 ("malformed", b"{", auth, 400)]
        for name, payload, hdrs, status in cases:
            with self.subTest(case=name):
                s = self.stream(payload, headers=hdrs)
                self.assertEqual(s.status, status)
                self.assertFalse(s.chunked)
                self.assertEqual(s.headers.get("content-type"), "application/json")
                self.assertIn("error", json.loads(s.body()))
        self.assertEqual(self.up.requests(tag), [])

    def test_overloaded_answered_503(self):
        tag = new_tag()
        auth = {"Authorization": "Bearer tok"}
        # Two workers busy with the first batch, the second one's two items fill the queue.
        hold = [self.stream([self.url("/delay", ms=2500, tag=tag, i=i) for i in range(2)],
                            headers=auth)]
        wait_for(lambda: len(self.up.requests(tag)) == 2, 10, "the first batch never started")
        hold.append(self.stream([self.url("/delay", ms=100, tag=tag, i=i) for i in range(2)],
                                headers=auth))
        s = self.stream([self.url("/json", v="x", tag=tag), self.url("/json", v="y", tag=tag)],
                        headers=auth)
        self.assertEqual(s.status, 503)
        self.assertFalse(s.chunked)
        self.assertEqual(json.loads(s.body())["error"]["code"], "overloaded")
        for h in hold:
            self.check_stream(h, 2)


class StreamHeartbeatTest(StreamCase):
    CONFIG = {"workers": 4, "stream_heartbeat_ms": 200}

    def test_heartbeats_in_a_quiet_stream(self):
        items = [self.url("/delay", ms=1200), self.url("/json", v="f")]
        s = self.stream(items)
        lines = s.all_lines()
        beats = [line["heartbeat"] for line in lines if "heartbeat" in line]
        self.assertGreaterEqual(len(beats), 3, lines)
        for b in beats:
            self.assertEqual(set(b), {"elapsed_ms", "pending"})
            self.assertIn(b["pending"], (1, 2))
        self.assertEqual(beats[-1]["pending"], 1)
        elapsed = [b["elapsed_ms"] for b in beats]
        self.assertEqual(elapsed, sorted(elapsed))
        gaps = [b - a for a, b in zip(elapsed, elapsed[1:])]
        self.assertTrue(all(g >= 150 for g in gaps), f"heartbeats too close: {elapsed}")
        self.assertIn("summary", lines[-1])
        self.assertFalse(any("heartbeat" in x for x in lines[lines.index(lines[-1]):]))

    def test_no_heartbeat_when_lines_flow(self):
        items = [self.url("/json", v=str(i), ms=40 * i) for i in range(6)]
        s = self.stream(items)
        lines = s.all_lines()
        self.assertFalse([x for x in lines if "heartbeat" in x], lines)


class StreamNoHeartbeatTest(StreamCase):
    CONFIG = {"workers": 2, "stream_heartbeat_ms": 0, "client_timeout_ms": 1000}

    def test_zero_means_never_and_quiet_stream_outlives_client_timeout(self):
        """0: no heartbeat. A stream quiet for longer than client_timeout_ms is not closed
        as idle: the client is reading; nothing was there to send."""
        s = self.stream([self.url("/delay", ms=2500)])
        by_index, sm = self.check_stream(s, 1)
        self.assertTrue(by_index[0]["ok"])
        self.assertEqual(len(s.lines), 2)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class StreamSlowReaderTest(StreamCase):
    CAP = 2 * 1048576
    CONFIG = {"workers": 4, "max_answer_bytes": CAP, "client_timeout_ms": 30000,
              "stream_heartbeat_ms": 0, "default_timeout_ms": 30000}

    def test_non_reading_client_bounded_and_dropped(self):
        """A client that stops reading: what waits for it is capped by max_answer_bytes; past
        it the client is dropped and the rest of the batch cancelled (queued items never
        start), long before client_timeout_ms."""
        tag = new_tag()
        n = 40
        items = [self.url("/big", bytes=1048576, tag=tag, i=i) for i in range(n)]
        pid = self.daemon.proc.pid
        before = rss_kib(pid)
        s = self.stream(items, rcvbuf=4096)
        started = time.monotonic()
        self.assertEqual(s.status, 200)
        # The client reads nothing more. The daemon drops it once the unread lines pass the cap.
        peak = before
        end = time.monotonic() + 20
        while time.monotonic() < end and "dropping the client" not in self.daemon.log():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.02)
        self.assertIn("dropping the client", self.daemon.log(), "the non-reading client was kept")
        # The metric is counted when the cancelled batch finishes, just after the log line.
        wait_end = time.monotonic() + 10
        while True:
            metrics = self.get("/metrics").body.decode()
            if re.search(r"(?m)^fanoutd_stream_clients_dropped_total 1$", metrics) or \
                    time.monotonic() > wait_end:
                break
            time.sleep(0.05)
        self.assertRegex(metrics, r"(?m)^fanoutd_stream_clients_dropped_total 1$")
        self.assertRegex(metrics, r"(?m)^fanoutd_streams_total [1-9]")
        self.assertLess(time.monotonic() - started, 15, "dropped only at client_timeout_ms")
        peak = max(peak, rss_kib(pid))
        growth_mib = (peak - before) / 1024
        if os.environ.get("FO_SHOW"):
            print(f"\nnon-reading client: RSS grew {growth_mib:.1f} MiB", flush=True)
        # Unread lines <= 2 MiB, each worker's body in flight (4 x 1 MiB, plus its encoding
        # and the line being made), libmicrohttpd's 16 KiB block: far below 40 MiB of bodies.
        if not os.environ.get("SANITIZER") and "valgrind" not in os.environ.get("FANOUTD", ""):
            self.assertLess(growth_mib, 24, f"daemon memory grew {growth_mib:.1f} MiB")
        self.assertLess(len(self.up.requests(tag)), n, "queued items still ran after the drop")
        # The client sees the stream cut short: no summary, connection closed.
        s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        lines = s.all_lines(timeout=20)
        self.assertTrue(s.eof or not s.ended)
        self.assertFalse(s.ended, "a dropped stream ended as if whole")
        self.assertFalse([x for x in lines if "summary" in x])
        doc = self.batch([self.url("/json", v="after")], total=1)
        self.assertEqual(doc["summary"]["ok"], 1)


class StreamIdleClientTest(StreamCase):
    CONFIG = {"workers": 4, "client_timeout_ms": 2000, "stream_heartbeat_ms": 0,
              "default_timeout_ms": 30000}

    def test_stalled_client_dropped_at_client_timeout(self):
        """Lines that do fit under max_answer_bytes but that the client does not take: the
        socket stops moving, and the client is dropped at client_timeout_ms; its running
        fetch is aborted."""
        tag = new_tag()
        items = [self.url("/big", bytes=1048576, i=i) for i in range(12)]
        items.append(self.url("/drip", ms=100, chunks=300, tag=tag))
        s = self.stream(items, rcvbuf=4096)
        wait_for(lambda: len(self.up.requests(tag)) == 1, 10, "the drip never started")
        t0 = time.monotonic()
        wait_for(lambda: self.up.aborted(tag) == 1, 15,
                 "the stalled client was never dropped (the drip would run 30 s)")
        self.assertLess(time.monotonic() - t0, 10)
        s.close()


class StreamShutdownTest(StreamCase):
    PER_TEST = True

    def test_sigterm_with_non_reading_client(self):
        """A stream client that reads nothing does not hold shutdown past its bound."""
        self.start_daemon(workers=4, shutdown_grace_ms=300, stream_heartbeat_ms=0)
        items = [self.url("/big", bytes=1048576, i=i) for i in range(12)]
        s = self.stream(items, rcvbuf=4096)
        self.assertEqual(s.status, 200)
        time.sleep(0.5)
        t0 = time.monotonic()
        self.daemon.signal(signal.SIGTERM)
        self.assertEqual(self.daemon.wait(15), 0)
        self.assertLess(time.monotonic() - t0, 10)

    def test_sigterm_mid_stream(self):
        self.start_daemon(workers=4, shutdown_grace_ms=500, stream_heartbeat_ms=0)
        items = [self.url("/json", v="f"), self.url("/delay", ms=8000), self.url("/delay", ms=8000)]
        s = self.stream(items)
        self.assertEqual(s.next_line()["index"], 0)
        self.daemon.signal(signal.SIGTERM)
        by_index, sm = self.check_stream(s, 3, items)
        for i in (1, 2):
            self.assertEqual(by_index[i]["error"]["code"], "cancelled")
        self.assertIs(sm["complete"], False)
        self.assertEqual(self.daemon.wait(10), 0)


class GzipTest(StreamCase):
    CONFIG = {"workers": 4, "stream_heartbeat_ms": 0}

    def test_gzip_document(self):
        items = [self.url("/json", v=str(i)) for i in range(5)]
        for ae in ("gzip", "deflate, gzip;q=0.5", "br;q=1.0, *"):
            with self.subTest(accept_encoding=ae):
                resp = self.post(items, headers={"Accept-Encoding": ae})
                self.assertEqual(resp.status, 200)
                self.assertEqual(resp.header("Content-Encoding"), "gzip")
                self.assertIn("Accept-Encoding", resp.header("Vary") or "")
                doc = json.loads(zlib.decompress(resp.body, wbits=31))
                self.assertEqual([r["body"] for r in doc["results"]],
                                 [{"v": str(i)} for i in range(5)])
                self.assertEqual(resp.header("X-Batch-Complete"), "true")

    def test_gzip_large_document(self):
        """A 24 MiB document is compressed as it is sent (chunked) and decompresses whole."""
        items = [self.url("/big", bytes=1048576, i=i) for i in range(24)]
        resp = self.post(items, headers={"Accept-Encoding": "gzip"}, timeout=60)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Content-Encoding"), "gzip")
        self.assertEqual((resp.header("Transfer-Encoding") or "").lower(), "chunked")
        self.assertLess(len(resp.body), 1048576, "24 MiB of 'a' should compress far below 1 MiB")
        doc = json.loads(zlib.decompress(resp.body, wbits=31))
        self.assertEqual(doc["summary"]["ok"], 24)
        self.assertTrue(all(r["body"] == "a" * 1048576 for r in doc["results"]))

    def test_gzip_refused_or_absent_is_plain(self):
        items = [self.url("/json", v="a")]
        # a q-value that is not one (RFC 9110 12.4.2: at most 1, three decimals) is no "yes"
        for ae in (None, "gzip;q=0", "identity", "gzip;q=0.000, deflate", "*;q=0", "gzip; q=0",
                   "gzip;q=1.5", "gzip;q=2", "gzip;q=0.5x"):
            with self.subTest(accept_encoding=ae):
                resp = self.post(items, headers={"Accept-Encoding": ae} if ae else {})
                self.assertIsNone(resp.header("Content-Encoding"))
                self.assertEqual(resp.json()["results"][0]["body"], {"v": "a"})

    def test_gzip_stream_decompressed_line_by_line(self):
        items = [{"url": self.url("/delay", ms=1500), "id": "slow"},
                 {"url": self.url("/json", v="f"), "id": "fast"}]
        s = self.stream({"requests": items}, headers={"Accept-Encoding": "gzip"})
        self.assertEqual(s.headers.get("content-encoding"), "gzip")
        self.assertIn("Accept-Encoding", s.headers.get("vary", ""))
        first = s.next_line()
        self.assertEqual(first["id"], "fast")
        t_first = s.line_time(0)
        by_index, sm = self.check_stream(s, 2)
        self.assertGreaterEqual(s.line_time(1) - t_first, 1.0,
                                "the first line could not be decompressed before the end")
        self.assertEqual(s.z.unused_data, b"")
        self.assertTrue(s.z.eof, "the gzip stream was not finished")
        self.assertIs(sm["complete"], True)
