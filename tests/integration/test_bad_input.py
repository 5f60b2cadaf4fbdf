"""Errors of the batch itself (400/404/405/413), HTTP framing on the front end,
and client_timeout_ms."""

import json
import socket
import time
import unittest

from harness import DaemonCase, new_tag, raw_exchange, raw_status, request, strict_json, wait_for


class BadInputTest(DaemonCase):
    CONFIG = {"workers": 4, "max_batch": 5, "max_body_bytes": 4096}

    def rejected(self, payload, status=400, code="bad_request", ctype="application/json", key=None):
        resp = self.post(payload, ctype=ctype)
        self.assert_error(resp, status, code)
        if key is not None:
            self.assertEqual(self.up.count(key), 0, "a rejected batch fetched something")
        return resp

    def test_malformed_json(self):
        key = new_tag()
        u = self.url("/count", key=key)
        for body in ("[", "{", f'["{u}",]', f'["{u}"] trailing', f'["{u}"', "nul", f"['{u}']",
                     f'{{"requests": ["{u}"]}} {{}}', f'["{u}", NaN]'):
            with self.subTest(body=body):
                self.rejected(body, key=key)
        for body in (b'["' + u.encode() + b'\xff"]', b'\x00["' + u.encode() + b'"]'):
            with self.subTest(body=body):
                self.rejected(body, key=key)

    def test_deep_nesting_survives(self):
        self.rejected("[" * 200000 + "]" * 200000, status=413, code="too_large")
        self.rejected("[" * 2000 + "]" * 2000)  # fits in max_body_bytes: a 400, not a crash
        self.rejected('{"requests": ' + "[" * 2000 + "]" * 2000 + "}")
        self.assertEqual(self.get("/healthz").status, 200)

    def test_wrong_types(self):
        key = new_tag()
        u = self.url("/count", key=key)
        cases = [42, "str", None, True, {}, {"requests": {}}, {"requests": u}, {"requests": None},
                 [1], [None], [[u]], [{"url": 1}], [{}], [{"id": "x"}], [{"url": u, "id": 1}],
                 [{"url": u, "id": None}], [{"url": u, "id": ["a"]}], [{"url": u, "headers": []}],
                 {"requests": [u], "timeout_ms": "100"}, {"requests": [u], "timeout_ms": True},
                 [{"url": u, "timeout_ms": "5"}], [{"url": u, "timeout_ms": [5]}],
                 {"urls": [u]}]
        for payload in cases:
            with self.subTest(payload=payload):
                self.rejected(payload, key=key)

    def test_timeouts_positive_integers(self):
        key = new_tag()
        u = self.url("/count", key=key)
        for value in (0, -1, -1000, 1.5, 0.5, -0.0, 1e-3):
            with self.subTest(value=value):
                self.rejected({"requests": [u], "timeout_ms": value}, key=key)
                self.rejected([{"url": u, "timeout_ms": value}], key=key)

    def test_duplicate_ids(self):
        key = new_tag()
        u = self.url("/count", key=key)
        for payload in ([{"url": u, "id": "a"}, {"url": u, "id": "a"}],
                        [{"url": u, "id": "1"}, u],                 # explicit "1" vs default "1"
                        [u, {"url": u, "id": "0"}],                 # explicit "0" vs default "0"
                        [u, u, {"url": u, "id": "1"}],
                        {"requests": [{"url": u}, {"url": u, "id": "0"}]}):
            with self.subTest(payload=payload):
                self.rejected(payload, key=key)

    def test_messages_cut_on_a_character_boundary(self):
        """Issue 10, input 16: quoted input is cut to a bound in messages; cut inside a
        UTF-8 character, the message became the bare code and no longer named the item."""
        key = new_tag()
        u = self.url("/count", key=key)
        for chars in ("\u20ac", "\u00e9", "\U0001f600", "a\u20ac"):  # 3, 2, 4 and mixed bytes
            long_text = chars * 120
            long_id = chars * (121 // len(chars.encode()))  # 120 bytes: under the id cap
            cases = [
                ([{"url": "ftp://x/", "id": long_id}], ["item 0 (id \"", "ftp://x/"]),
                ([u, {"url": "ftp://x/", "id": long_id}, u], ["item 1 (id \"", "ftp://x/"]),
                ([{"url": "http://x/" + long_text + " y"}], ["item 0", "white space"]),
                ([{"url": u, "headers": {long_text: "v"}}], ["item 0", "not a valid header name"]),
                ([{"url": u, "method": long_text}], ["item 0", "method"]),
                ([{"url": u, long_text: 1}], ["item 0", "unknown field"]),
                ({"requests": [u], long_text: 1}, ["unknown field"]),
                ([{"url": u, "id": long_id}, {"url": u, "id": long_id}], ["duplicate id"]),
            ]
            for payload, words in cases:
                with self.subTest(chars=chars, words=words):
                    doc = self.assert_error(self.post(payload), 400, "bad_request")
                    message = doc["error"]["message"]
                    for word in words:
                        self.assertIn(word, message)
                    self.assertIn(chars * 3, message, "the quoted text is shown, cut")
                    self.assertLess(len(message.encode()), 512)
        self.assertEqual(self.up.count(key), 0)

    def test_own_default_id_is_not_a_duplicate(self):
        doc = self.batch([{"url": self.url("/json"), "id": "0"}, self.url("/json"),
                          {"url": self.url("/json"), "id": "x"}], total=3)
        self.assertEqual([r["id"] for r in doc["results"]], ["0", "1", "x"])

    def test_empty_batches(self):
        for payload, ctype in (("[]", "application/json"), ('{"requests": []}', "application/json"),
                               ("", "application/json"), ("", "text/plain"), ("\n  \n\t\n", "text/plain"),
                               ("# only\n   # comments\n", "text/plain")):
            with self.subTest(payload=payload, ctype=ctype):
                self.rejected(payload, ctype=ctype)

    def test_max_batch(self):
        key = new_tag()
        five = [self.url("/json", v=str(i)) for i in range(5)]
        self.batch(five, total=5)
        six = [self.url("/count", key=key) for _ in range(6)]
        self.rejected(six, status=413, code="too_large", key=key)
        self.rejected("\n".join(six), status=413, code="too_large", ctype="text/plain", key=key)
        self.rejected({"requests": [{"url": x} for x in six], "merge": "deep"}, status=413,
                      code="too_large", key=key)

    def test_max_body_bytes(self):
        key = new_tag()
        long_url = self.url("/count", key=key, pad="p" * 4200)
        self.rejected([long_url], status=413, code="too_large", key=key)
        self.rejected(long_url, status=413, code="too_large", ctype="text/plain", key=key)
        # just under the cap is fine
        ok_url = self.url("/json", pad="p" * 3800)
        self.assertLess(len(json.dumps([ok_url])), 4096)
        self.batch([ok_url], total=1)

    def test_chunked_body_over_max_body_bytes(self):
        key = new_tag()
        body = json.dumps([self.url("/count", key=key, pad="p" * 6000)]).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                          for i in range(0, len(body), 1000))
        out = raw_exchange(self.daemon.port,
                           b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
        self.assertEqual(raw_status(out), 413, out[:300])
        self.assertEqual(self.up.count(key), 0)

    def test_not_found(self):
        for method, path in (("GET", "/"), ("GET", "/batchx"), ("POST", "/batch/"), ("GET", "/healthz/x"),
                             ("POST", "/BATCH"), ("GET", "/metrics/")):
            with self.subTest(method=method, path=path):
                resp = request(self.daemon.port, method, path, b"[]" if method == "POST" else None,
                               {"Content-Type": "application/json"})
                self.assert_error(resp, 404, "not_found")

    def test_method_not_allowed(self):
        for method, path, allowed in (("GET", "/batch", "POST"), ("PUT", "/batch", "POST"),
                                      ("DELETE", "/batch", "POST"), ("POST", "/healthz", "GET"),
                                      ("DELETE", "/metrics", "GET"), ("PATCH", "/healthz", "GET")):
            with self.subTest(method=method, path=path):
                resp = request(self.daemon.port, method, path, b"{}" if method != "GET" else None)
                self.assert_error(resp, 405, "method_not_allowed")
                allow = [m.strip().upper() for m in (resp.header("Allow") or "").split(",")]
                self.assertIn(allowed, allow, f"Allow: {resp.header('Allow')!r}")
                self.assertNotIn(method, allow)

    def framing(self, headers, body):
        return raw_exchange(self.daemon.port, b"POST /batch HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\n" + headers + b"\r\n" + body, timeout=5)

    def test_content_length_and_transfer_encoding(self):
        key = new_tag()
        body = json.dumps([self.url("/count", key=key)]).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        out = self.framing(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(chunked), chunked)
        self.assertEqual(raw_status(out), 400, f"CL + TE must be a 400: {out[:300]!r}")
        out = self.framing(b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(body), chunked)
        self.assertEqual(raw_status(out), 400, f"TE + CL must be a 400: {out[:300]!r}")
        self.assertEqual(self.up.count(key), 0)

    def test_two_content_lengths(self):
        key = new_tag()
        body = json.dumps([self.url("/count", key=key)]).encode()
        out = self.framing(b"Content-Length: %d\r\nContent-Length: %d\r\n" % (len(body), len(body) + 5),
                           body + b"     ")
        self.assertEqual(raw_status(out), 400, f"two Content-Length headers: {out[:300]!r}")
        self.assertEqual(self.up.count(key), 0)

    def test_bad_content_length(self):
        key = new_tag()
        body = json.dumps([self.url("/count", key=key)]).encode()
        for value in (b"abc", b"-5", b"1x"):
            with self.subTest(value=value):
                out = self.framing(b"Content-Length: " + value + b"\r\n", body)
                self.assertIn(raw_status(out), (400, 413, None), out[:300])
        self.assertEqual(self.up.count(key), 0)

    def test_error_replies_are_json(self):
        resp = self.post("[")
        self.assertTrue((resp.header("Content-Type") or "").startswith("application/json"))
        doc = strict_json(resp.body)
        self.assertEqual(set(doc), {"error"})
        self.assertEqual(set(doc["error"]), {"code", "message"})

    def test_still_healthy_after_abuse(self):
        for data in (b"GARBAGE\r\n\r\n", b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n[",
                     b"\x16\x03\x01\x00\x05hello", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
            try:
                raw_exchange(self.daemon.port, data, timeout=2)
            except OSError:
                pass
        self.assertEqual(self.get("/healthz").status, 200)
        self.assertTrue(self.daemon.alive)


class MaxConnectionsTest(DaemonCase):
    CONFIG = {"workers": 2, "max_connections": 3}

    def hold(self):
        """A connection served once and held open (keep-alive), or None if it was refused."""
        s = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(3)
            if raw_status(s.recv(65536)) == 200:
                return s
        except OSError:
            pass
        s.close()
        return None

    def test_connections_beyond_the_cap_are_not_served(self):
        holders = []
        try:
            for _ in range(3):
                # A connection that closed a moment ago (the harness's health probe, or an
                # earlier test's) counts until the daemon has seen it close: slow under
                # valgrind or ASan. Until then a new one is refused, so try again.
                holders.append(wait_for(self.hold, 10, "a connection within max_connections "
                                                       "to be served", interval=0.1))
            extra = None
            try:
                extra = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=2)
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                extra.settimeout(1.0)
                got = extra.recv(65536)
            except (socket.timeout, OSError):
                got = b""
            finally:
                if extra is not None:
                    extra.close()
            self.assertNotEqual(raw_status(got), 200, "a 4th connection was served with max_connections=3")
        finally:
            for s in holders:
                s.close()
        wait_for(lambda: self._healthy(), 5, "service did not resume after connections closed",
                 interval=0.1)

    def _healthy(self):
        try:
            return self.get("/healthz", timeout=2).status == 200
        except OSError:
            return False


class ClientTimeoutTest(DaemonCase):
    CONFIG = {"workers": 4, "client_timeout_ms": 600}

    def closed_within(self, sock, seconds):
        sock.settimeout(seconds)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                data = sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False

    def test_idle_connection_closed(self):
        with socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5) as s:
            start = time.monotonic()
            self.assertTrue(self.closed_within(s, 4), "an idle connection was kept past client_timeout_ms")
            self.assertGreater(time.monotonic() - start, 0.3)

    def test_partial_request_closed(self):
        with socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5) as s:
            s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n[\"http://")
            self.assertTrue(self.closed_within(s, 4), "a stalled request body was kept open")

    def test_idle_after_keep_alive_request_closed(self):
        with socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(3)
            first = s.recv(65536)
            self.assertEqual(raw_status(first), 200)
            self.assertTrue(self.closed_within(s, 4))

    def test_long_batch_not_cut_by_client_timeout(self):
        start = time.monotonic()
        doc = self.batch([self.url("/delay", ms=1500)], total=1, timeout=10)
        self.assertTrue(doc["results"][0]["ok"], "a batch still working is not an idle connection")
        self.assertGreater(time.monotonic() - start, 1.3)


if __name__ == "__main__":
    unittest.main()
