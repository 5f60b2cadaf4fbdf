"""Front-end abuse on 127.0.0.1: slow clients (slowhttptest), more connections than
max_connections, idle connections, and ambiguous request framing."""

import shutil
import socket
import subprocess
import time

from common import (RobustCase, Background, request, raw_read_all, raw_status, json_body,
                    client_conn_count, wait_for, new_tag)

SLOW_CONNS = 300
SLOW_SECONDS = 10


class SlowClients(RobustCase):
    """slowhttptest holds a few hundred slow connections for ~10 s while a probe keeps
    asking /healthz and batches are sent: the daemon must keep serving everyone else."""

    def setUp(self):
        super().setUp()
        if shutil.which("slowhttptest") is None:
            self.skipTest("slowhttptest is not installed (Debian package slowhttptest: "
                          "apt-get install -y slowhttptest)")

    def attack(self, mode_args, path):
        d = self.start_daemon(max_connections=1024, client_timeout_ms=2000, workers=8)
        self.batch({"requests": self.siblings(new_tag(), 2)})  # warm up
        conns = lambda: client_conn_count(d.pid, d.port)  # noqa: E731
        baseline = conns()
        url = f"http://127.0.0.1:{d.port}{path}"
        argv = ["slowhttptest", *mode_args, "-c", str(SLOW_CONNS), "-r", "150",
                "-l", str(SLOW_SECONDS), "-p", "3", "-u", url]
        probes = {"ok": 0, "bad": [], "on": True}

        def probe():
            while probes["on"]:
                t = time.monotonic()
                try:
                    r = request(d.port, "GET", "/healthz", timeout=3)
                    if r.status == 200:
                        probes["ok"] += 1
                    else:
                        probes["bad"].append(f"{r.status} after {r.elapsed:.2f}s")
                except OSError as e:
                    probes["bad"].append(f"{type(e).__name__}: {e} after {time.monotonic() - t:.2f}s")
                time.sleep(0.1)

        tool = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        prober = Background(probe)
        try:
            held = wait_for(lambda: conns() >= baseline + SLOW_CONNS // 3, 8,
                            f"slowhttptest to hold connections ({SLOW_CONNS} asked)")
            self.assertTrue(held)
            peak = conns()
            # a small batch goes through while the slow clients are there
            tag = new_tag()
            doc = self.batch({"requests": self.siblings(tag, 5)}, timeout=10)
            self.check_siblings(doc, tag, 5)
            self.assertLess(doc["_resp"].elapsed, 5, "a batch was slowed down by slow clients")
            try:
                out, _ = tool.communicate(timeout=SLOW_SECONDS + 20)
            except subprocess.TimeoutExpired:
                tool.kill()
                out, _ = tool.communicate()
                self.fail("slowhttptest did not stop by itself")
        finally:
            probes["on"] = False
            if tool.poll() is None:
                tool.kill()
                tool.wait()
            prober.result(10)
        self.assertEqual(probes["bad"], [], f"/healthz probes failed during the attack "
                                            f"({probes['ok']} succeeded)")
        self.assertGreaterEqual(probes["ok"], 10, "too few /healthz probes ran")
        self.assert_healthy()
        tag = new_tag()
        self.check_siblings(self.batch({"requests": self.siblings(tag, 3)}), tag, 3)
        # the slow connections are gone again (closed by the tool or reaped)
        wait_for(lambda: conns() <= baseline + 10, 6,
                 f"the daemon to drop the slow connections (peak {peak}, baseline {baseline})")
        text = out.decode("utf-8", "replace")
        self.assertRegex(text, r"(?i)connected", f"slowhttptest output:\n{text[-2000:]}")
        return text

    def test_slow_headers(self):
        self.attack(["-H", "-i", "1", "-x", "24"], "/healthz")

    def test_slow_body(self):
        self.attack(["-B", "-i", "1", "-x", "24", "-s", "65536", "-t", "POST",
                     "-f", "text/plain"], "/batch")

    def test_slow_read(self):
        self.attack(["-X", "-k", "10", "-n", "1", "-w", "1", "-y", "64", "-z", "16"], "/metrics")


class ConnectionLimit(RobustCase):
    LIMIT = 10

    def hold(self, port):
        """A keep-alive connection that has been served once."""
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return s, raw_status(data)

    def test_excess_connections_refused_then_served_again(self):
        d = self.start_daemon(max_connections=self.LIMIT, client_timeout_ms=30000)
        # The start-up health probe's connection counts until the daemon has seen it close.
        wait_for(lambda: client_conn_count(d.pid, d.port) == 0, 10,
                 "the start-up probe's connection to close")
        for round_ in (1, 2):  # twice: the count must come back down when connections close
            held = []
            try:
                for i in range(self.LIMIT):
                    s, status = self.hold(d.port)
                    held.append(s)
                    self.assertEqual(status, 200, f"round {round_}: connection {i + 1} of "
                                                  f"{self.LIMIT} not served")
                excess = []
                for _ in range(self.LIMIT):
                    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
                    try:
                        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    except OSError:
                        pass
                    excess.append(s)
                outcomes = []
                for s in excess:
                    data, how = raw_read_all(s, 4)
                    outcomes.append((raw_status(data), how))
                    s.close()
                served = [o for o in outcomes if o[0] is not None]
                self.assertEqual(served, [], f"round {round_}: connections beyond "
                                             f"max_connections={self.LIMIT} were served: {outcomes}")
                self.assertTrue(all(how in ("eof", "reset") for _, how in outcomes),
                                f"round {round_}: excess connections must be closed, not left "
                                f"hanging: {outcomes}")
                self.assert_alive()
            finally:
                for s in held:
                    s.close()

            def served():
                try:
                    return request(d.port, "GET", "/healthz", timeout=2).status == 200
                except OSError:
                    return False
            # Served once proves one free place; the next round needs all of them, so wait
            # until the daemon has closed every connection of this round too.
            wait_for(lambda: served() and client_conn_count(d.pid, d.port) == 0, 10,
                     "the daemon to close this round's connections and serve again")
        tag = new_tag()
        self.check_siblings(self.batch({"requests": self.siblings(tag, 3)}), tag, 3)


class IdleConnections(RobustCase):
    def close_time(self, s, start, bound=6):
        data, how = raw_read_all(s, bound)
        return time.monotonic() - start, how, data

    def test_idle_connections_reaped(self):
        d = self.start_daemon(client_timeout_ms=1000)
        silent = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        t_silent = time.monotonic()
        partial = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t_partial = time.monotonic()
        kept = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while not data.rstrip().endswith(b"}"):
            chunk = kept.recv(4096)
            self.assertTrue(chunk, "keep-alive connection closed right after the answer")
            data += chunk
        t_kept = time.monotonic()
        self.assertEqual(raw_status(data), 200)
        results = {}
        bgs = {name: Background(lambda s=s, t=t: self.close_time(s, t))
               for name, s, t in (("silent", silent, t_silent), ("partial", partial, t_partial),
                                  ("idle keep-alive", kept, t_kept))}
        for name, bg in bgs.items():
            results[name] = bg.result(10)
        for s in (silent, partial, kept):
            s.close()
        for name, (elapsed, how, extra) in results.items():
            self.assertIn(how, ("eof", "reset"), f"{name} connection not closed within 6 s "
                                                 f"with client_timeout_ms=1000")
            self.assertGreaterEqual(elapsed, 0.5, f"{name} connection closed too early "
                                                  f"({elapsed:.2f} s)")
            self.assertLessEqual(elapsed, 3.5, f"{name} connection closed after {elapsed:.2f} s "
                                               f"with client_timeout_ms=1000")
        self.assert_healthy()


class AmbiguousFraming(RobustCase):
    """Both Content-Length and Transfer-Encoding, or two Content-Length headers: 400
    bad_request, the connection closed, nothing fetched, nothing after it answered."""

    def send(self, port, framing_headers, body):
        head = ("POST /batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in framing_headers) + "\r\n").encode()
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            s.sendall(head + body + smuggled)
            return raw_read_all(s, 4)
        finally:
            s.close()

    def test_conflicting_framing(self):
        d = self.start_daemon(client_timeout_ms=30000)
        for name, make in (
            ("CL then TE", lambda b: ([("Content-Length", str(len(b))),
                                       ("Transfer-Encoding", "chunked")], True)),
            ("TE then CL", lambda b: ([("Transfer-Encoding", "chunked"),
                                       ("Content-Length", str(len(b)))], True)),
            ("CL 0 and TE", lambda b: ([("Content-Length", "0"),
                                        ("Transfer-Encoding", "chunked")], True)),
            ("two equal CL", lambda b: ([("Content-Length", str(len(b))),
                                         ("Content-Length", str(len(b)))], False)),
            ("two different CL", lambda b: ([("Content-Length", str(len(b))),
                                             ("Content-Length", str(len(b) + 7))], False)),
        ):
            with self.subTest(name):
                tag = new_tag()
                plain = self.up.url("/json", v="x", tag=tag).encode() + b"\n"
                headers, chunked = make(plain)
                body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(plain), plain)) if chunked else plain
                data, how = self.send(d.port, headers, body)
                self.assertEqual(raw_status(data), 400, f"{name}: {data[:300]!r}")
                doc = json_body(data[:data.find(b"HTTP/1.1", 5)] if data.count(b"HTTP/1.1 ") > 1
                                else data)
                self.assertIsInstance(doc, dict, f"{name}: the 400 body is not JSON: {data[:400]!r}")
                self.assertEqual((doc.get("error") or {}).get("code"), "bad_request", doc)
                self.assertEqual(data.count(b"HTTP/1."), 1,
                                 f"{name}: more than one answer on the connection "
                                 f"(smuggled request served): {data[:600]!r}")
                self.assertIn(how, ("eof", "reset"),
                              f"{name}: the connection was not closed after the 400")
                self.assertEqual(self.up.requests(tag), [], f"{name}: the batch was fetched")
                self.assert_healthy()
