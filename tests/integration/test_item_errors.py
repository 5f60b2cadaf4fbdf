"""Per-item fetch errors: connect_failed, upstream_error, too_large,
too_many_redirects, redirects to other schemes, tls_error.
(dns_failure is left to the public suite: resolving a name that does not exist may send a
DNS query off this host, and these tests only ever talk to loopback addresses.)"""

import base64
import unittest

from harness import DaemonCase, closed_port, new_tag, shared_upstream
from upstream import tls_available


class ItemErrorsTest(DaemonCase):
    CONFIG = {"workers": 16, "max_response_bytes": 10000, "max_redirects": 2,
              "default_timeout_ms": 5000}

    def one(self, url, **item):
        return self.batch([dict(url=url, **item)], total=1)["results"][0]

    def test_connect_failed(self):
        r = self.one(f"http://127.0.0.1:{closed_port()}/x")
        self.assert_item_error(r, "connect_failed", status=None)

    def test_reset_and_truncated_are_upstream_error(self):
        doc = self.batch([self.url("/reset"), self.url("/short", bytes=1000, send=10)], total=2)
        self.assert_item_error(doc["results"][0], "upstream_error", status=None)
        r = doc["results"][1]
        self.assert_item_error(r, "upstream_error")
        self.assertIn(r["status"], (200, None))

    def test_too_large_boundary_and_framing(self):
        doc = self.batch({"requests": [
            {"id": "cl-at", "url": self.url("/big", bytes=10000)},
            {"id": "ch-at", "url": self.url("/big", bytes=10000, chunked=1)},
            {"id": "cl-over", "url": self.url("/big", bytes=10001)},
            {"id": "ch-over", "url": self.url("/big", bytes=10001, chunked=1)},
            {"id": "ch-huge", "url": self.url("/big", bytes=3000000, chunked=1)},
            {"id": "close-at", "url": self.url("/big", bytes=10000, framing="close")},
            {"id": "close-over", "url": self.url("/big", bytes=10001, framing="close")},
            {"id": "404-over", "url": self.url("/big", bytes=20000, status=404)},
        ]}, total=8)
        for item_id in ("cl-at", "ch-at", "close-at"):
            r = self.item(doc, item_id)
            self.assertTrue(r["ok"], f"a body of exactly max_response_bytes is allowed: {r}")
            self.assertEqual(len(r["body"]), 10000)
        for item_id, status in (("cl-over", 200), ("ch-over", 200), ("ch-huge", 200), ("close-over", 200),
                                ("404-over", 404)):
            r = self.item(doc, item_id)
            self.assert_item_error(r, "too_large", status=status)
            self.assertNotIn("body", r)

    def test_head_of_huge_resource_is_fine(self):
        r = self.one(self.url("/big", bytes=50000), method="HEAD")
        self.assertTrue(r["ok"], r)
        self.assertIsNone(r["body"])

    def test_gzip_bomb_respects_cap(self):
        """1 MB of zeros gzip-compressed to ~1 KB: if fanoutd decodes it, the decoded size counts
        against max_response_bytes (too_large); if not, the compressed bytes come back exactly."""
        r = self.one(self.url("/gzip", pad=1000000))
        if "error" in r:
            self.assert_item_error(r, "too_large", status=200)
        else:
            self.assertEqual(r["body_encoding"], "base64", r)
            self.assertLessEqual(len(base64.b64decode(r["body"])), 10000)

    def test_redirects_within_limit(self):
        tag = new_tag()
        url = self.url("/redirect", n=2, tag=tag, to=self.url("/json", v="landed", tag=tag))
        r = self.one(url)
        self.assertTrue(r["ok"], r)
        self.assertEqual((r["status"], r["body"], r["url"]), (200, {"v": "landed"}, url))
        self.assertEqual([q.path for q in self.up.requests(tag)], ["/redirect", "/redirect", "/json"])

    def test_redirect_codes_and_relative_location(self):
        for code in (301, 302, 303, 307, 308):
            with self.subTest(code=code):
                r = self.one(self.url("/redirect", n=1, code=code, to="/json?v=rel"))
                self.assertEqual((r["status"], r["body"]), (200, {"v": "rel"}), r)

    def test_too_many_redirects(self):
        tag = new_tag()
        r = self.one(self.url("/redirect", n=3, tag=tag))
        self.assert_item_error(r, "too_many_redirects")
        self.assertNotIn("body", r)
        self.assertEqual(len(self.up.requests(tag)), 3, "initial request + 2 redirects followed, no more")

    def test_redirect_loop(self):
        tag = new_tag()
        r = self.one(self.url("/redirect", loop=1, tag=tag))
        self.assert_item_error(r, "too_many_redirects")
        self.assertEqual(len(self.up.requests(tag)), 3)

    def test_redirect_to_other_schemes_not_followed(self):
        up = self.up
        tag = new_tag()
        targets = ["file:///etc/passwd", "file:///etc/hostname", f"gopher://127.0.0.1:{up.port}/_{tag}",
                   f"dict://127.0.0.1:{up.port}/{tag}", f"ftp://127.0.0.1:{up.port}/{tag}",
                   f"ldap://127.0.0.1:{up.port}/{tag}"]
        doc = self.batch([self.url("/redirect", n=1, to=t) for t in targets], total=len(targets))
        for r, t in zip(doc["results"], targets):
            with self.subTest(to=t):
                self.assert_item_error(r, ("invalid_url", "blocked_destination"))
                self.assertNotIn("body", r)
        raw = doc["_resp"].body
        self.assertNotIn(b"root:", raw, "file content leaked")
        self.assertFalse([line for line in up.raw_lines()
                          if tag.encode() in line and not line.startswith(b"GET /redirect?")],
                         "a non-http redirect target reached the upstream port")


class ZeroRedirectsTest(DaemonCase):
    CONFIG = {"workers": 2, "max_redirects": 0}

    def test_no_redirect_followed(self):
        tag = new_tag()
        r = self.batch([self.url("/redirect", n=1, tag=tag, to=self.url("/json", tag=tag))],
                       total=1)["results"][0]
        self.assertFalse(r["ok"])
        self.assertEqual([q.path for q in self.up.requests(tag)], ["/redirect"],
                         "max_redirects = 0: the redirect is not followed")


class TlsTest(DaemonCase):
    CONFIG = {"workers": 4, "default_timeout_ms": 5000}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ok, why = tls_available()
        if not ok:
            raise unittest.SkipTest(why)
        cls.tls_up = shared_upstream(tls=True)

    def test_self_signed_certificate_rejected(self):
        tag = new_tag()
        r = self.batch([self.tls_up.url("/json", tag=tag)], total=1)["results"][0]
        self.assert_item_error(r, "tls_error", status=None)
        self.assertGreaterEqual(self.tls_up.handshakes(), 1, "no TLS handshake was attempted")
        self.assertEqual(self.tls_up.requests(tag), [], "a request was sent over an unverified TLS link")

    def test_https_to_plain_http_port(self):
        r = self.batch([self.url("/json", scheme="https")], total=1)["results"][0]
        self.assert_item_error(r, "tls_error", status=None)

    def test_redirect_to_self_signed_https(self):
        tag = new_tag()
        r = self.batch([self.url("/redirect", n=1, to=self.tls_up.url("/json", tag=tag))],
                       total=1)["results"][0]
        self.assert_item_error(r, "tls_error")
        self.assertEqual(self.tls_up.requests(tag), [])


if __name__ == "__main__":
    unittest.main()
