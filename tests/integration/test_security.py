"""Destination policy (deny/allow, numeric spellings, userinfo, IPv4-mapped, redirects),
self-calls, proxy variables, URL validation and injection."""

import os
import re
import unittest

from harness import DaemonCase, closed_port, new_tag, shared_upstream


def spellings(port, path):
    """127.0.0.2:port spelled in ways that all resolve to 127.0.0.2."""
    return {
        "dotted": f"http://127.0.0.2:{port}{path}",
        "decimal": f"http://2130706434:{port}{path}",
        "hex": f"http://0x7f000002:{port}{path}",
        "octal": f"http://0177.0.0.2:{port}{path}",
        "hex-dotted": f"http://0x7f.0.0.2:{port}{path}",
        "short": f"http://127.2:{port}{path}",
        "mapped": f"http://[::ffff:127.0.0.2]:{port}{path}",
        "mapped-hex": f"http://[::ffff:7f00:2]:{port}{path}",
        "userinfo": f"http://127.0.0.1@127.0.0.2:{port}{path}",
        "userinfo-port": f"http://127.0.0.1:{port}@127.0.0.2:{port}{path}",
        "user-pass": f"http://user:pass@127.0.0.2:{port}{path}",
    }


class DenyPolicyTest(DaemonCase):
    CONFIG = {"workers": 16, "deny": ["127.0.0.2/32", "::1/128"], "default_timeout_ms": 4000}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.denied = shared_upstream("127.0.0.2")
        cls.denied6 = shared_upstream("::1")

    def assert_blocked(self, doc, key, upstream):
        for r in doc["results"]:
            with self.subTest(url=r["url"]):
                self.assert_item_error(r, "blocked_destination", status=None)
        self.assertEqual(upstream.count(key), 0, "a denied address was reached")

    def test_denied_address_in_every_spelling(self):
        key = new_tag()
        urls = spellings(self.denied.port, f"/count?key={key}")
        doc = self.batch({"requests": [{"id": k, "url": u} for k, u in urls.items()]}, total=len(urls))
        self.assert_blocked(doc, key, self.denied)

    def test_denied_ipv6_loopback(self):
        key = new_tag()
        doc = self.batch([self.denied6.url("/count", key=key)], total=1)
        self.assert_blocked(doc, key, self.denied6)

    def test_userinfo_host_is_the_one_after_at(self):
        """http://127.0.0.2:P@127.0.0.1:Q/ targets 127.0.0.1 (allowed), not the denied address."""
        key = new_tag()
        url = f"http://127.0.0.2:{self.denied.port}@127.0.0.1:{self.up.port}/count?key={key}"
        r = self.batch([url], total=1)["results"][0]
        self.assertTrue(r["ok"], r)
        self.assertEqual(self.up.count(key), 1)
        self.assertEqual(self.denied.count(key), 0)

    def test_redirect_to_denied_address_blocked(self):
        key = new_tag()
        targets = spellings(self.denied.port, f"/count?key={key}")
        targets["v6"] = self.denied6.url("/count", key=key)
        doc = self.batch({"requests": [{"id": k, "url": self.url("/redirect", n=1, to=t)}
                                       for k, t in targets.items()]}, total=len(targets))
        for r in doc["results"]:
            with self.subTest(id=r["id"]):
                self.assert_item_error(r, "blocked_destination")
                self.assertNotIn("body", r)
        self.assertEqual(self.denied.count(key) + self.denied6.count(key), 0)

    def test_redirect_chain_then_denied(self):
        key = new_tag()
        url = self.url("/redirect", n=2, to=f"http://2130706434:{self.denied.port}/count?key={key}")
        r = self.batch([url], total=1)["results"][0]
        self.assert_item_error(r, "blocked_destination")
        self.assertEqual(self.denied.count(key), 0)

    def test_default_deny_still_applies(self):
        """deny in the config adds to the defaults: 0.0.0.0/8 stays denied (0.0.0.0 would reach this host)."""
        key = new_tag()
        urls = [f"http://0.0.0.0:{self.up.port}/count?key={key}", f"http://0:{self.up.port}/count?key={key}",
                f"http://0x0:{self.up.port}/count?key={key}"]
        doc = self.batch(urls, total=len(urls))
        self.assert_blocked(doc, key, self.up)
        r = self.batch([self.url("/redirect", n=1, to=f"http://0.0.0.0:{self.up.port}/count?key={key}")],
                       total=1)["results"][0]
        self.assert_item_error(r, "blocked_destination")
        self.assertEqual(self.up.count(key), 0)

    def test_allowed_neighbour_still_fetched(self):
        r = self.batch([self.url("/json", v="fine")], total=1)["results"][0]
        self.assertTrue(r["ok"], r)

    def test_self_calls_blocked(self):
        port = self.daemon.port
        urls = [f"http://127.0.0.1:{port}/healthz", f"http://localhost:{port}/metrics",
                f"http://2130706433:{port}/healthz", f"http://[::ffff:127.0.0.1]:{port}/healthz",
                f"http://x@127.0.0.1:{port}/healthz",
                self.url("/redirect", n=1, to=f"http://127.0.0.1:{port}/healthz")]
        doc = self.batch(urls, total=len(urls))
        for r in doc["results"]:
            with self.subTest(url=r["url"]):
                self.assert_item_error(r, "blocked_destination")
        post = {"url": f"http://127.0.0.1:{port}/batch", "method": "POST",
                "body": [self.url("/count", key="recursion")]}
        r = self.batch([post], total=1)["results"][0]
        self.assert_item_error(r, "blocked_destination", status=None)
        self.assertEqual(self.up.count("recursion"), 0)

    def test_injection_in_url(self):
        tag = new_tag()
        bad = [self.url("/echo", tag=tag) + "\r\nX-Injected: 1",
               self.url("/echo", tag=tag) + " HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /echo",
               self.url("/echo", tag=tag) + "\u0000x"]
        for url in bad:
            with self.subTest(url=url):
                resp = self.post([url])
                if resp.status == 200:
                    r = resp.json()["results"][0]
                    self.assertIn("error", r, f"a URL with control characters was fetched: {r}")
                else:
                    self.assert_error(resp, 400, "bad_request")
        self.assertFalse([r for r in self.up.requests() if r.header("X-Injected")])
        self.assertFalse([line for line in self.up.raw_lines() if b"X-Injected" in line])

    def test_non_http_urls_rejected_at_submission(self):
        key = new_tag()
        for url in ("file:///etc/passwd", "FILE:///etc/passwd", f"gopher://127.0.0.1:{self.up.port}/_x",
                    f"ftp://127.0.0.1:{self.up.port}/", "javascript:alert(1)", "http:///127.0.0.1/json", "http://",
                    f"http:127.0.0.1:{self.up.port}/json", f"//127.0.0.1:{self.up.port}/json", "/json", "", " ",
                    f"ws://127.0.0.1:{self.up.port}/"):
            with self.subTest(url=url):
                resp = self.post([self.url("/count", key=key), {"url": url, "id": "bad-one"}])
                doc = self.assert_error(resp, 400, "bad_request")
                msg = doc["error"]["message"]
                self.assertTrue("bad-one" in msg or re.search(r"(?<![\w.:/])1(?![\w.:/])", msg)
                                or (url.strip() and url in msg),
                                f"the message does not name the item: {msg!r}")
        self.assertEqual(self.up.count(key), 0, "part of a rejected batch was fetched")


class AllowPolicyTest(DaemonCase):
    CONFIG = {"workers": 8, "deny": ["127.0.0.0/8"], "allow": ["127.0.0.2/32"]}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.allowed = shared_upstream("127.0.0.2")

    def test_allow_overrides_deny(self):
        key = new_tag()
        doc = self.batch([self.allowed.url("/count", key=key), self.url("/count", key=key)], total=2)
        self.assertTrue(doc["results"][0]["ok"], doc["results"][0])
        self.assert_item_error(doc["results"][1], "blocked_destination", status=None)
        self.assertEqual((self.allowed.count(key), self.up.count(key)), (1, 0))

    def test_allowed_address_in_numeric_spellings(self):
        """Numeric spellings and the IPv4-mapped form are judged by the address: allowed here."""
        key = new_tag()
        urls = spellings(self.allowed.port, f"/count?key={key}")
        doc = self.batch({"requests": [{"id": k, "url": u} for k, u in urls.items()]}, total=len(urls))
        for r in doc["results"]:
            with self.subTest(id=r["id"]):
                self.assertTrue(r["ok"], r)
        self.assertEqual(self.allowed.count(key), len(urls))

    def test_policy_applies_to_resolved_hostnames(self):
        """localhost resolves to 127.0.0.1, inside the denied 127.0.0.0/8: blocked by its address."""
        key = new_tag()
        r = self.batch([f"http://localhost:{self.up.port}/count?key={key}"], total=1)["results"][0]
        self.assert_item_error(r, "blocked_destination", status=None)
        self.assertEqual(self.up.count(key), 0)

    def test_redirect_from_allowed_to_denied(self):
        key = new_tag()
        url = self.allowed.url("/redirect", n=1, to=self.url("/count", key=key))
        r = self.batch([url], total=1)["results"][0]
        self.assert_item_error(r, "blocked_destination")
        self.assertEqual(self.up.count(key), 0)


class ProxyEnvTest(DaemonCase):
    PER_TEST = True
    CONFIG = {"workers": 4, "default_timeout_ms": 4000}

    def test_proxy_variables_ignored(self):
        proxy = f"http://127.0.0.1:{closed_port()}"
        env = dict(os.environ)
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            env[name] = proxy
        env["no_proxy"] = env["NO_PROXY"] = ""
        self.start_daemon(env=env)
        key = new_tag()
        doc = self.batch([self.url("/count", key=key), self.url("/json", v="direct")], total=2)
        for r in doc["results"]:
            self.assertTrue(r["ok"], f"proxy variables were used: {r}")
        self.assertEqual(self.up.count(key), 1)
        self.assertFalse([r for r in self.up.requests() if r.target.startswith("http://")],
                         "a request line in proxy form reached the upstream")


if __name__ == "__main__":
    unittest.main()
