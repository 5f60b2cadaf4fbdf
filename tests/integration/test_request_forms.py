"""Request forms of POST /batch: JSON arrays, mixed arrays, the object form, plain lists."""

import json
import unittest

from harness import DaemonCase, new_tag, request


class RequestFormsTest(DaemonCase):
    CONFIG = {"workers": 8}

    def test_string_array_default_ids_and_url_echo(self):
        tag = new_tag()
        urls = [self.url("/json", v=f"s{i}", tag=tag) for i in range(4)]
        # the URL is echoed exactly as requested, odd spelling included
        urls.append(self.up.url("/json", v="a b", tag=tag).replace("v=a+b", "v=a%20b"))
        doc = self.batch(urls, total=5)
        self.assertEqual([r["id"] for r in doc["results"]], ["0", "1", "2", "3", "4"])
        self.assertEqual([r["url"] for r in doc["results"]], urls)
        self.assertEqual([r["body"] for r in doc["results"]],
                         [{"v": f"s{i}"} for i in range(4)] + [{"v": "a b"}])

    def test_mixed_array_ids(self):
        tag = new_tag()
        doc = self.batch([self.url("/json", v="a", tag=tag),
                          {"url": self.url("/json", v="b", tag=tag), "id": "named"},
                          {"url": self.url("/json", v="c", tag=tag)},
                          self.url("/json", v="d", tag=tag)], total=4)
        self.assertEqual([r["id"] for r in doc["results"]], ["0", "named", "2", "3"])
        self.assertEqual([r["body"]["v"] for r in doc["results"]], ["a", "b", "c", "d"])

    def test_object_form_items_and_batch_fields(self):
        tag = new_tag()
        doc = self.batch({"requests": [
            {"url": self.url("/echo", tag=tag), "id": "p", "method": "POST",
             "headers": {"X-Item": "yes"}, "body": "raw-bytes", "timeout_ms": 5000},
            {"url": self.url("/json", v="q", tag=tag)}],
            "timeout_ms": 8000, "merge": "none"}, total=2)
        p = self.item(doc, "p")
        self.assertEqual(p["body"]["method"], "POST")
        self.assertIn(["X-Item", "yes"], p["body"]["headers"])
        self.assertEqual(self.item(doc, "1")["body"], {"v": "q"})

    def test_json_charset_parameter_and_spacing(self):
        for ctype in ("application/json;charset=utf-8", "application/json; charset=\"UTF-8\""):
            with self.subTest(ctype=ctype):
                doc = self.batch([self.url("/json", v="cs")], total=1, ctype=ctype)
                self.assertTrue(doc["results"][0]["ok"])

    def test_plain_list_separators_and_comments(self):
        tag = new_tag()
        u = [self.url("/json", v=str(i), tag=tag) for i in range(6)]
        text = (f"# leading comment\r\n{u[0]}\r\n\r\n   # indented comment {self.url('/count', key=tag)}\n"
                f"\t{u[1]}\t{u[2]}\n{u[3]}   {u[4]}\n\t# tab then comment\n   \n{u[5]}")
        doc = self.batch(text, total=6, ctype="text/plain")
        self.assertEqual([r["url"] for r in doc["results"]], u)
        self.assertEqual([r["id"] for r in doc["results"]], [str(i) for i in range(6)])
        self.assertEqual(self.up.count(tag), 0, "a commented-out URL was fetched")

    def test_plain_list_other_content_types(self):
        for ctype in (None, "text/uri-list", "application/octet-stream",
                      "application/x-www-form-urlencoded"):
            with self.subTest(ctype=ctype):
                doc = self.batch(self.url("/json", v="p") + "\n", total=1, ctype=ctype)
                self.assertEqual(doc["results"][0]["body"], {"v": "p"})

    def test_plain_list_hash_mid_line_is_not_a_comment(self):
        """Only a line whose first non-blank char is # is a comment; a trailing '# x' is two
        more tokens that are not URLs (400), and nothing is fetched."""
        tag = new_tag()
        resp = self.post(f"{self.url('/count', key=tag)} # trailing words\n", ctype="text/plain")
        self.assert_error(resp, 400, "bad_request")
        self.assertEqual(self.up.count(tag), 0)

    def test_json_whatever_the_content_type(self):
        """A body whose first character after white space is [ or { is JSON, whatever the
        Content-Type says (curl -d sends form data, urllib and fetch text/plain): no plain
        list can start that way."""
        for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
            with self.subTest(ctype=ctype):
                doc = self.batch_raw(json.dumps([self.url("/json", v="a")]), ctype)
                self.assertEqual(doc["results"][0]["body"], {"v": "a"})
                obj = {"requests": [{"url": self.url("/json", v="b"), "id": "b"}]}
                doc = self.batch_raw("\n  " + json.dumps(obj), ctype)
                self.assertEqual([r["id"] for r in doc["results"]], ["b"])
        # malformed JSON is then a JSON error, not a plain-list one
        resp = self.post("[" + json.dumps(self.url("/json")), ctype="text/plain")
        self.assert_error(resp, 400, "bad_request")
        self.assertIn("JSON", json.loads(resp.body)["error"]["message"])

    def batch_raw(self, text, ctype):
        resp = self.post(text, ctype=ctype)
        self.assertEqual(resp.status, 200, resp)
        return json.loads(resp.body)

    def test_item_body_forms(self):
        tag = new_tag()
        doc = self.batch({"requests": [
            {"id": "str", "url": self.url("/echo", tag=tag), "method": "POST", "body": "h\u00e9 {x}"},
            {"id": "num", "url": self.url("/echo", tag=tag), "method": "PUT", "body": 42},
            {"id": "arr", "url": self.url("/echo", tag=tag), "method": "POST", "body": [1, {"a": None}]},
            {"id": "bool", "url": self.url("/echo", tag=tag), "method": "PATCH", "body": False},
            {"id": "null", "url": self.url("/echo", tag=tag), "method": "POST", "body": None},
            {"id": "none", "url": self.url("/echo", tag=tag), "method": "POST"},
            {"id": "typed", "url": self.url("/echo", tag=tag), "method": "POST",
             "headers": {"content-type": "application/vnd.x+json"}, "body": {"k": 1}},
        ]}, total=7)
        import base64

        def sent(item_id):
            b = self.item(doc, item_id)["body"]
            hdrs = {k.lower(): v for k, v in b["headers"]}
            return base64.b64decode(b["body_b64"]), hdrs, b["headers"]

        body, hdrs, _ = sent("str")
        self.assertEqual(body, "h\u00e9 {x}".encode())
        for item_id, value in (("num", 42), ("arr", [1, {"a": None}]), ("bool", False)):
            body, hdrs, _ = sent(item_id)
            self.assertEqual(json.loads(body), value, item_id)
            self.assertEqual(hdrs.get("content-type", "").split(";")[0].strip(), "application/json",
                             f"{item_id}: JSON body without Content-Type: application/json")
        for item_id in ("null", "none"):
            body, hdrs, _ = sent(item_id)
            self.assertEqual(body, b"", f"{item_id}: no body expected")
            self.assertIn(hdrs.get("content-length", "0"), ("0",), f"{item_id}: {hdrs}")
        body, _, raw = sent("typed")
        self.assertEqual(json.loads(body), {"k": 1})
        ctypes = [v for k, v in raw if k.lower() == "content-type"]
        self.assertEqual(ctypes, ["application/vnd.x+json"], "item Content-Type replaced or doubled")

    def test_front_end_keep_alive(self):
        """Two batches on one client connection (HTTP/1.1 keep-alive) both succeed."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.daemon.port, timeout=10)
        try:
            for v in ("k1", "k2"):
                r = self.post([self.url("/json", v=v)], conn=conn)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["results"][0]["body"], {"v": v})
        finally:
            conn.close()

    def test_http10_client(self):
        from harness import raw_exchange, raw_status, raw_body, strict_json
        body = json.dumps([self.url("/json", v="old")]).encode()
        out = raw_exchange(self.daemon.port, b"POST /batch HTTP/1.0\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body), timeout=10)
        self.assertEqual(raw_status(out), 200, out[:300])
        self.assertEqual(strict_json(raw_body(out))["results"][0]["body"], {"v": "old"})

    def test_chunked_request_body_accepted(self):
        """A POST /batch body in chunked transfer coding (no Content-Length) is read."""
        from harness import raw_exchange, raw_status, raw_body, strict_json
        body = json.dumps([self.url("/json", v="chunked")]).encode()
        half = len(body) // 2
        data = (b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]))
        out = raw_exchange(self.daemon.port, data, timeout=10)
        self.assertEqual(raw_status(out), 200, out[:300])
        payload = raw_body(out)
        if b"chunked" in out.partition(b"\r\n\r\n")[0].lower():
            payload = _dechunk(payload)
        self.assertEqual(strict_json(payload)["results"][0]["body"], {"v": "chunked"})

    def test_expect_100_continue(self):
        """curl sends Expect: 100-continue for bigger bodies; the batch is still answered 200."""
        import socket
        import time
        urls = "\n".join(self.url("/json", v=str(i), pad="x" * 40) for i in range(30)).encode()
        with socket.create_connection(("127.0.0.1", self.daemon.port), timeout=10) as s:
            s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                      b"Expect: 100-continue\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(urls))
            s.settimeout(1.5)
            first = b""
            try:
                first = s.recv(65536)
            except socket.timeout:
                pass  # no interim reply: send the body anyway, as curl does
            if first and not first.startswith(b"HTTP/1.1 100"):
                self.fail(f"final answer before the body was sent: {first[:200]!r}")
            s.sendall(urls)
            s.settimeout(10)
            out, end = b"", time.monotonic() + 10
            while time.monotonic() < end:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        out = out[out.find(b"HTTP/1.1 2"):] if b"HTTP/1.1 2" in out else out
        from harness import raw_status
        self.assertEqual(raw_status(out), 200, out[:300])


def _dechunk(data):
    out = b""
    while data:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


if __name__ == "__main__":
    unittest.main()
