"""Methods, item headers, bodies and client-header forwarding (forward_headers)."""

import unittest

from harness import DaemonCase, new_tag


class MethodsHeadersTest(DaemonCase):
    CONFIG = {"workers": 8, "forward_headers": ["X-Trace-Id", "accept-language"]}

    def seen(self, tag):
        reqs = self.up.requests(tag)
        self.assertEqual(len(reqs), 1, f"expected exactly one upstream request for {tag}")
        return reqs[0]

    def test_every_method_reaches_upstream(self):
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            with self.subTest(method=method):
                tag = new_tag()
                doc = self.batch([{"url": self.url("/echo", tag=tag), "method": method}], total=1)
                self.assertEqual(self.seen(tag).method, method)
                r = doc["results"][0]
                self.assertTrue(r["ok"], r)
                if method == "HEAD":
                    self.assertIsNone(r["body"])
                else:
                    self.assertEqual(r["body"]["method"], method)

    def test_unknown_methods_rejected(self):
        tag = new_tag()
        for method in ("TRACE", "CONNECT", "FETCH", "", "GET ", "G\nET", 5, None):
            with self.subTest(method=method):
                resp = self.post([{"url": self.url("/count", key=tag), "method": method}])
                self.assert_error(resp, 400, "bad_request")
        self.assertEqual(self.up.count(tag), 0)

    def test_item_headers_sent_exactly(self):
        tag = new_tag()
        self.batch([{"url": self.url("/echo", tag=tag),
                     "headers": {"X-A": "1", "X-Spaces": "a  b", "X-Unicode": "caf\u00e9",
                                 "Accept": "application/x-test", "X-Empty": ""}}], total=1)
        req = self.seen(tag)
        self.assertEqual(req.header("X-A"), ["1"])
        self.assertEqual(req.header("X-Spaces"), ["a  b"])
        self.assertEqual(req.header("Accept"), ["application/x-test"], "item header replaces a default")
        self.assertEqual(len(req.header("X-Unicode")), 1)

    def test_header_injection_rejected(self):
        tag = new_tag()
        bad = [{"X-Bad": "a\r\nX-Injected: 1"}, {"X-Bad": "a\nX-Injected: 1"}, {"X-Bad": "a\rb"},
               {"X-Bad": "nul\u0000here"}, {"X-Bad\r\nX-Injected": "v"}, {"X-B\nad": "v"},
               {"X-B\u0000ad": "v"}]
        for headers in bad:
            with self.subTest(headers=headers):
                resp = self.post([{"url": self.url("/count", key=tag), "headers": headers}])
                self.assert_error(resp, 400, "bad_request")
        self.assertEqual(self.up.count(tag), 0)
        self.assertFalse(any(r.header("X-Injected") for r in self.up.requests()))

    def test_header_value_types(self):
        tag = new_tag()
        for headers in ({"X-N": 1}, {"X-N": None}, {"X-N": ["a"]}, {"X-N": True}, ["X-N: 1"], "X-N: 1"):
            with self.subTest(headers=headers):
                resp = self.post([{"url": self.url("/count", key=tag), "headers": headers}])
                self.assert_error(resp, 400, "bad_request")
        self.assertEqual(self.up.count(tag), 0)

    def test_client_headers_forwarded_only_when_listed(self):
        tag = new_tag()
        self.batch([self.url("/echo", tag=tag)], total=1,
                   headers={"X-Trace-Id": "trace-1", "Accept-Language": "fr", "X-Secret": "s3cret",
                            "Cookie": "session=abc", "Authorization": "Basic dXNlcjpwYXNz",
                            "X-Forwarded-For": "10.1.2.3"})
        req = self.seen(tag)
        self.assertEqual(req.header("x-trace-id"), ["trace-1"], "listed header (other case) lost")
        self.assertEqual(req.header("Accept-Language"), ["fr"])
        for name in ("X-Secret", "Cookie", "Authorization", "X-Forwarded-For"):
            self.assertEqual(req.header(name), [], f"unlisted client header {name} forwarded")

    def test_forwarded_to_every_item(self):
        tag = new_tag()
        self.batch([self.url("/echo", tag=tag, i=i) for i in range(3)], total=3,
                   headers={"X-Trace-Id": "all"})
        reqs = self.up.requests(tag)
        self.assertEqual(len(reqs), 3)
        self.assertEqual([r.header("X-Trace-Id") for r in reqs], [["all"]] * 3)

    def test_body_bytes_exact(self):
        tag = new_tag()
        payload = "line1\r\nline2\t\"q\" \\ \u00e9\U0001F600"
        self.batch([{"url": self.url("/echo", tag=tag), "method": "PUT", "body": payload}], total=1)
        req = self.seen(tag)
        self.assertEqual(req.body, payload.encode())
        self.assertEqual(req.header("Content-Length"), [str(len(payload.encode()))])

    def test_body_with_nul_character(self):
        """A JSON string may hold U+0000 (written \\u0000); such a body is valid and sent as is."""
        tag = new_tag()
        payload = "before\x00after"
        self.batch([{"url": self.url("/echo", tag=tag), "method": "POST", "body": payload}], total=1)
        self.assertEqual(self.seen(tag).body, payload.encode())


if __name__ == "__main__":
    unittest.main()
