"""Faithful fetching (CONTRACT "Faithful fetching", "Hardening", "Behaviour"): how redirects
are followed (method, body, headers, the final response's metadata), at-most-once POST and
PATCH, 1xx responses, internationalised host names, CDN-Loop and the 508 loop refusal, and
the exact request headers fanoutd adds. A real upstream on 127.0.0.1 sees every request."""

import json
import socket
import threading
import time
import unittest

from harness import DaemonCase, Upstream, new_tag, request, strict_json

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def expected_after(code, method):
    """(method, body kept) of the request after a redirect with this status (RFC 9110 15.4)."""
    if code == 303:
        return ("HEAD", False) if method == "HEAD" else ("GET", False)
    if code in (301, 302) and method == "POST":
        return "GET", False
    return method, method != "HEAD"


class RedirectTest(DaemonCase):
    CONFIG = {"workers": 8, "max_redirects": 3}

    def echo_hops(self, tag):
        return [q for q in self.up.requests(tag) if q.path == "/echo"]

    def test_method_and_body_per_status(self):
        """Issue 9 input 1: PUT/PATCH/DELETE keep their body on 301/302/307/308; 303 is a bodiless GET."""
        for code in (301, 302, 303, 307, 308):
            for method in METHODS:
                with self.subTest(code=code, method=method):
                    tag = new_tag()
                    item = {"url": self.url("/redirect", code=code, tag=tag,
                                            to=self.url("/echo", tag=tag)),
                            "method": method}
                    if method != "HEAD":
                        item["body"] = "payload"
                    r = self.batch([item], total=1)["results"][0]
                    self.assertTrue(r["ok"], r)
                    hops = self.up.requests(tag)
                    self.assertEqual([q.path for q in hops], ["/redirect", "/echo"])
                    self.assertEqual(hops[0].method, method)
                    want_method, keeps = expected_after(code, method)
                    final = hops[1]
                    self.assertEqual(final.method, want_method)
                    if keeps:
                        self.assertEqual(final.body, b"payload")
                        self.assertEqual(final.header("Content-Length"), ["7"])
                    else:
                        self.assertEqual(final.body, b"")
                        self.assertEqual(final.header("Content-Length"), [])
                        self.assertEqual(final.header("Content-Type"), [])

    def test_json_body_kept_with_its_type_on_307(self):
        tag = new_tag()
        self.batch([{"url": self.url("/redirect", code=307, tag=tag, to=self.url("/echo", tag=tag)),
                     "method": "POST", "body": {"k": [1, 2]}}], total=1)
        final = self.echo_hops(tag)[0]
        self.assertEqual((final.method, json.loads(final.body)), ("POST", {"k": [1, 2]}))
        self.assertEqual(final.header("Content-Type"), ["application/json"])

    def test_body_headers_dropped_with_the_body(self):
        """A 303 that makes a PUT a GET drops the item's Content-Type (and Content-Encoding...)."""
        tag = new_tag()
        self.batch([{"url": self.url("/redirect", code=303, tag=tag, to=self.url("/echo", tag=tag)),
                     "method": "PUT", "body": "x=1",
                     "headers": {"Content-Type": "text/plain", "Content-Language": "en",
                                 "X-Other": "kept"}}], total=1)
        final = self.echo_hops(tag)[0]
        self.assertEqual(final.method, "GET")
        self.assertEqual(final.header("Content-Type"), [])
        self.assertEqual(final.header("Content-Language"), [])
        self.assertEqual(final.header("X-Other"), ["kept"])

    def test_final_content_type_is_the_final_responses(self):
        """Issue 9 input 3: a 302 (application/json) to a 200 without Content-Type: null / text."""
        doc = json.dumps({"a": 1})
        direct = self.url("/raw", body=doc)
        via = self.url("/redirect", code=302, to=direct)
        a, b = self.batch([direct, via], total=2)["results"]
        for r in (a, b):
            self.assertTrue(r["ok"], r)
            self.assertIsNone(r["content_type"], r)
            self.assertEqual((r["body_encoding"], r["body"]), ("text", doc), r)

    def test_final_content_type_after_chain(self):
        r = self.batch([self.url("/redirect", n=2, to=self.url("/raw", body="hi", ct="text/x-final"))],
                       total=1)["results"][0]
        self.assertEqual((r["status"], r["content_type"], r["body"]), (200, "text/x-final", "hi"))

    def test_other_3xx_not_followed(self):
        """Only 301 302 303 307 308 are followed; 300 and 305 with a Location are the response."""
        for code in (300, 305):
            with self.subTest(code=code):
                tag = new_tag()
                r = self.batch([self.url("/redirect", code=code, tag=tag,
                                         to=self.url("/echo", tag=tag))], total=1)["results"][0]
                self.assertEqual(r["status"], code, r)
                self.assertNotIn("error", r)
                self.assertEqual(r["body"], {"location": self.url("/echo", tag=tag)})
                self.assertEqual([q.path for q in self.up.requests(tag)], ["/redirect"])

    def test_redirect_without_location_is_the_response(self):
        r = self.batch([self.url("/status", code=302)], total=1)["results"][0]
        self.assertEqual((r["status"], r["ok"], r["body"]), (302, False, {"status": 302}), r)
        self.assertNotIn("error", r)

    def test_relative_locations(self):
        tag = new_tag()
        cases = {"/echo?tag=" + tag + "&k=abs": "abs",
                 "echo?tag=" + tag + "&k=rel": "rel",
                 "../echo?tag=" + tag + "&k=dots": "dots",
                 f"//127.0.0.1:{self.up.port}/echo?tag={tag}&k=scheme-relative": "scheme-relative"}
        items = [self.url("/redirect", to=loc) for loc in cases]
        doc = self.batch(items, total=len(items))
        for r, k in zip(doc["results"], cases.values()):
            with self.subTest(k=k):
                self.assertTrue(r["ok"], r)
                self.assertIn(f"k={k}", r["body"]["path"])

    def test_credentials_not_sent_to_another_origin(self):
        """Authorization, Cookie, Proxy-Authorization stay with the item's origin; once a redirect
        left it they are not sent again, not even back on the first origin."""
        other = Upstream().start()
        self.addCleanup(other.stop)
        secret = {"Authorization": "Bearer s3cret", "Cookie": "sid=1",
                  "Proxy-Authorization": "Basic eA==", "X-Plain": "p"}
        tag = new_tag()
        same = self.url("/redirect", tag=tag, to=self.url("/echo", tag=tag, k="same"))
        away = self.url("/redirect", tag=tag, to=other.url("/echo", tag=tag, k="away"))
        back = self.url("/redirect", tag=tag,
                        to=other.url("/redirect", tag=tag, to=self.url("/echo", tag=tag, k="back")))
        self.batch([{"url": u, "headers": secret} for u in (same, away, back)], total=3)
        seen = {q.query["k"]: q for q in self.up.requests(tag) + other.requests(tag)
                if q.path == "/echo"}
        for name in secret:
            self.assertEqual(seen["same"].header(name), [secret[name]], name)
            self.assertEqual(seen["away"].header("X-Plain"), ["p"])
            if name != "X-Plain":
                self.assertEqual(seen["away"].header(name), [], f"{name} sent to another origin")
                self.assertEqual(seen["back"].header(name), [], f"{name} sent after leaving")
        for q in self.up.requests(tag):
            if q.path == "/redirect":
                self.assertEqual(q.header("Authorization"), ["Bearer s3cret"])

    def test_item_timeout_covers_all_hops(self):
        """Three hops of 400 ms each: a 1000 ms item timeout is over before the end."""
        tag = new_tag()
        r = self.batch([{"url": self.url("/redirect", n=3, ms=400, tag=tag,
                                         to=self.url("/json", tag=tag)),
                         "timeout_ms": 1000}], total=1)["results"][0]
        self.assert_item_error(r, "timeout")
        self.assertLess(r["duration_ms"], 3000, r)
        self.assertEqual([q.path for q in self.up.requests(tag)][-1:], ["/redirect"])

    def test_non_ascii_location_percent_encoded(self):
        tag = new_tag()
        r = self.batch([self.url("/redirect", to=f"/echo?tag={tag}&w=b\u00fccher")],
                       total=1)["results"][0]
        self.assertTrue(r["ok"], r)
        self.assertIn("w=b%c3%bccher", r["body"]["path"].lower())

    def test_latin1_location_bytes(self):
        """A Location in ISO-8859-1 bytes: the path byte is sent percent-encoded as it is;
        a host that is not UTF-8 fails invalid_url; the answer stays UTF-8 JSON."""
        tag = new_tag()
        a, b = self.batch([self.url("/redirect", latin1=1, to=f"/echo?tag={tag}&w=b\u00fccher"),
                           self.url("/redirect", latin1=1,
                                    to=f"http://b\u00fccher.test:{self.up.port}/echo")],
                          total=2)["results"]
        self.assertTrue(a["ok"], a)
        self.assertIn("w=b%fccher", a["body"]["path"].lower())
        self.assert_item_error(b, "invalid_url", status=302)

    def test_fragment_only_location(self):
        """Location "#frag" (or "#") is the same path and query (RFC 3986 5.2.2)."""
        for loc in ("#frag", "#"):
            with self.subTest(location=loc):
                tag, key = new_tag(), new_tag()
                first = self.url("/redirect", to=loc, again=key, tag=tag)
                r = self.batch([first], total=1)["results"][0]
                self.assertTrue(r["ok"], r)
                paths = [q.target for q in self.up.requests(tag)]
                self.assertEqual(len(paths), 2, paths)
                self.assertEqual(paths[1], paths[0], "the redirect must ask the same path and query")
                self.assertEqual(r["body"]["path"], paths[0])

    def test_failed_hop_keeps_the_redirects_status(self):
        """A hop after a 302 that fails (blocked, refused, timed out) reports the 302 and
        its Content-Type: the last response whose headers arrived."""
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
        closed.close()
        cases = {"blocked_destination": "http://169.254.1.1/x",
                 "connect_failed": f"http://127.0.0.1:{dead}/x",
                 "timeout": self.url("/delay", ms=3000)}
        items = [{"id": k, "url": self.url("/redirect", to=to), "timeout_ms": 1500}
                 for k, to in cases.items()]
        doc = self.batch(items, total=len(items))
        for r in doc["results"]:
            with self.subTest(error=r["id"]):
                self.assert_item_error(r, r["id"], status=302)
                self.assertEqual(r["content_type"], "application/json", r)

    def test_too_many_redirects_keeps_the_content_type(self):
        r = self.batch([self.url("/redirect", loop=1)], total=1)["results"][0]
        self.assert_item_error(r, "too_many_redirects", status=302)
        self.assertEqual(r["content_type"], "application/json", r)

    def test_location_to_other_scheme_fails_invalid_url(self):
        r = self.batch([self.url("/redirect", to="ftp://127.0.0.1/x")], total=1)["results"][0]
        self.assert_item_error(r, "invalid_url", status=302)
        self.assertIn("ftp://127.0.0.1/x", r["error"]["message"])


class ZeroRedirectTest(DaemonCase):
    CONFIG = {"workers": 2, "max_redirects": 0}

    def test_3xx_is_the_response(self):
        """max_redirects = 0: the 3xx is the item's response: status, body, ok false, no error."""
        for code in (301, 302, 303, 307, 308):
            with self.subTest(code=code):
                tag = new_tag()
                to = self.url("/json", tag=tag)
                r = self.batch([self.url("/redirect", code=code, tag=tag, to=to)],
                               total=1)["results"][0]
                self.assertEqual((r["status"], r["ok"]), (code, False), r)
                self.assertNotIn("error", r)
                self.assertEqual((r["content_type"], r["body"]), ("application/json", {"location": to}))
                self.assertEqual([q.path for q in self.up.requests(tag)], ["/redirect"])


class AtMostOnceTest(DaemonCase):
    """Issue 9 input 2: one worker, [GET /a, POST /b]: the POST is read on the kept-alive
    connection and the connection closed without an answer. libcurl would send it again."""
    CONFIG = {"workers": 1}

    def run_pair(self, method, body="pay once"):
        key = new_tag()
        item = {"url": self.url("/flaky", key=key, tag=key), "method": method}
        if body is not None:
            item["body"] = body
        doc = self.batch({"requests": [self.url("/json", tag=key), item]}, total=2)
        return key, doc["results"][1]

    def test_post_and_patch_sent_once(self):
        for method in ("POST", "PATCH"):
            with self.subTest(method=method):
                key, r = self.run_pair(method)
                self.assertEqual(len(self.up.requests(key, path="/flaky")), 1,
                                 f"the {method} reached the upstream more than once")
                self.assert_item_error(r, "upstream_error", status=None)

    def test_post_without_body_sent_once(self):
        key, r = self.run_pair("POST", body=None)
        self.assertEqual(len(self.up.requests(key, path="/flaky")), 1)
        self.assert_item_error(r, "upstream_error", status=None)

    def test_post_after_post_on_a_kept_connection(self):
        """A POST following a POST on the same worker is sent once too."""
        key = new_tag()
        doc = self.batch([{"url": self.url("/echo", tag=key), "method": "POST", "body": "1"},
                          {"url": self.url("/flaky", key=key, tag=key), "method": "POST",
                           "body": "2"}], total=2)
        self.assertEqual(len(self.up.requests(key, path="/flaky")), 1)
        self.assert_item_error(doc["results"][1], "upstream_error")

    def test_get_may_be_sent_again(self):
        """Idempotent methods may be re-sent on a fresh connection: the GET then succeeds."""
        key, r = self.run_pair("GET", body=None)
        hits = len(self.up.requests(key, path="/flaky"))
        self.assertIn(hits, (1, 2))
        if hits == 2:
            self.assertTrue(r["ok"], r)


class InformationalTest(DaemonCase):
    CONFIG = {"workers": 4}

    def test_only_1xx_then_close(self):
        """Issue 10 input 9: 100 (or 103) and a close: status null, upstream_error."""
        cases = [dict(code=100), dict(code=103), dict(code=100, then="reset"),
                 dict(code=102), dict(code=103, then="reset")]
        doc = self.batch([self.url("/info", **c) for c in cases], total=len(cases))
        for r, c in zip(doc["results"], cases):
            with self.subTest(**c):
                self.assert_item_error(r, "upstream_error", status=None)
                self.assertNotIn("content_type", r)

    def test_1xx_then_final(self):
        """A 103 with its own Content-Type, then a 200: the 200's status and (absent) type."""
        a, b = self.batch([self.url("/info", code=103, then="final"),
                           self.url("/info", code=100, then="final", ct="application/json")],
                          total=2)["results"]
        self.assertEqual((a["status"], a["content_type"], a["body_encoding"]), (200, None, "text"), a)
        self.assertEqual((b["status"], b["content_type"], b["body"]),
                         (200, "application/json", {"final": True}), b)


class ResponseFramingTest(DaemonCase):
    CONFIG = {"workers": 4}

    def test_conflicting_content_lengths(self):
        """Two different Content-Length values (or a list of them) cannot frame the
        response (RFC 9112 6.3): upstream_error, no body; equal ones are one length."""
        body = "x" * 50
        bad = ["7;50", "50;7", "7, 50", "50;abc", "50;-50"]
        good = ["50", "50;50", "50, 50"]
        doc = self.batch([self.url("/lengths", lens=v, body=body) for v in bad + good],
                         total=len(bad) + len(good))
        for r, v in zip(doc["results"], bad + good):
            with self.subTest(lens=v):
                if v in bad:
                    self.assert_item_error(r, "upstream_error")
                    self.assertNotIn("body", r)
                else:
                    self.assertTrue(r["ok"], r)
                    self.assertEqual(r["body"], body)


class IdnTest(DaemonCase):
    CONFIG = {"workers": 4, "default_timeout_ms": 8000}

    def test_idn_host_asked_by_its_a_label(self):
        """Issue 9 input 7: bücher.test is looked up as xn--bcher-kva.test (no DNS here:
        dns_failure naming the A-label, not invalid_url)."""
        urls = [f"http://b\u00fccher.test:{self.up.port}/echo",
                f"http://B\u00dcCHER.test:{self.up.port}/echo",
                self.url("/redirect", to=f"http://b\u00fccher.test:{self.up.port}/echo")]
        doc = self.batch(urls, total=len(urls))
        for r, u in zip(doc["results"], urls):
            with self.subTest(url=u):
                self.assert_item_error(r, "dns_failure")
                self.assertIn("xn--bcher-kva.test", r["error"]["message"])
                self.assertEqual(r["url"], u, "url stays as requested")

    def test_plain_list_idn(self):
        resp = self.post(f"http://b\u00fccher.test:{self.up.port}/x\n".encode(), ctype="text/plain")
        r = strict_json(resp.body)["results"][0]
        self.assert_item_error(r, "dns_failure")
        self.assertIn("xn--bcher-kva.test", r["error"]["message"])

    def test_invalid_idn_is_invalid_url(self):
        r = self.batch([f"http://a\u2488b.test:{self.up.port}/"], total=1)["results"][0]
        self.assertIn(r["error"]["code"], ("invalid_url", "dns_failure"), r)

    def test_invalid_a_label_is_invalid_url(self):
        """A label starting xn-- must be a valid A-label; it is refused before any lookup."""
        hosts = ["xn--zz.localhost", "XN--ZZ.localhost", "xn--a.", "xn--.", "a.xn--abc-.localhost"]
        urls = [f"http://{h}:{self.up.port}/echo" for h in hosts]
        urls.append(self.url("/redirect", to=f"http://xn--zz.localhost:{self.up.port}/echo"))
        doc = self.batch(urls, total=len(urls))
        for r, u in zip(doc["results"], urls):
            with self.subTest(url=u):
                self.assert_item_error(r, "invalid_url")
                self.assertIn("internationalised", r["error"]["message"])

    def test_non_ascii_path_and_query_percent_encoded(self):
        tag = new_tag()
        r = self.batch([f"http://127.0.0.1:{self.up.port}/echo?tag={tag}&q=caf\u00e9&s=\u20ac"],
                       total=1)["results"][0]
        self.assertTrue(r["ok"], r)
        target = r["body"]["path"]
        self.assertTrue(all(ord(c) < 128 for c in target), target)
        self.assertIn("q=caf%c3%a9", target.lower())
        self.assertIn("s=%e2%82%ac", target.lower())
        tag2 = new_tag()
        self.batch([f"http://127.0.0.1:{self.up.port}/b\u00fccher/\u00e4?tag={tag2}"], total=1)
        lines = [ln for ln in self.up.raw_lines() if tag2.encode() in ln]
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].lower().startswith(b"get /b%c3%bccher/%c3%a4?"), lines[0])


class _Forwarder:
    """A TCP forwarder on its own loopback port to target_port (a path back to fanoutd that
    its own-address check does not see)."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        src.settimeout(30)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.stopped.set()
        self.sock.close()


class CdnLoopTest(DaemonCase):
    CONFIG = {"workers": 4, "default_timeout_ms": 10000}

    def seen_loop(self, client=(), **item):
        tag = new_tag()
        self.batch([dict({"url": self.url("/echo", tag=tag)}, **item)], total=1, headers=client)
        (q,) = self.up.requests(tag)
        return q.header("CDN-Loop")

    def test_every_request_carries_the_token(self):
        self.assertEqual(self.seen_loop(), ["fanoutd"])
        self.assertEqual(self.seen_loop(method="POST", body="x"), ["fanoutd"])

    def test_client_value_comes_first(self):
        self.assertEqual(self.seen_loop(client={"CDN-Loop": "edge-a, edge-b; v=2"}),
                         ["edge-a, edge-b; v=2, fanoutd"])
        self.assertEqual(self.seen_loop(client=[("CDN-Loop", "a"), ("CDN-Loop", "b")]),
                         ["a, b, fanoutd"])

    def test_item_cannot_remove_the_token(self):
        self.assertEqual(self.seen_loop(client={"CDN-Loop": "c"}, headers={"CDN-Loop": "mine"}),
                         ["c, mine, fanoutd"])
        self.assertEqual(self.seen_loop(headers={"cdn-loop": ""}), ["fanoutd"])

    def test_on_every_redirect_hop(self):
        tag = new_tag()
        self.batch([self.url("/redirect", tag=tag, to=self.url("/echo", tag=tag))], total=1)
        self.assertEqual([q.header("CDN-Loop") for q in self.up.requests(tag)],
                         [["fanoutd"], ["fanoutd"]])

    def test_batch_naming_the_token_refused(self):
        key = new_tag()
        body = [self.url("/count", key=key)]
        for value in ("fanoutd", "FanoutD", "a, fanoutd", "x,fanoutd;v=1", " b , fanoutd ; p=q ,c"):
            with self.subTest(value=value):
                resp = self.post(body, headers={"CDN-Loop": value})
                doc = self.assert_error(resp, 508, "loop_detected")
                self.assertIn("fanoutd", doc["error"]["message"])
        resp = self.post(body, headers=[("CDN-Loop", "other"), ("CDN-Loop", "fanoutd")])
        self.assert_error(resp, 508, "loop_detected")
        self.assertEqual(self.up.count(key), 0, "a refused batch fetched something")
        metrics = self.get("/metrics").body.decode()
        self.assertRegex(metrics, r'fanoutd_batches_total\{outcome="loop_detected"\} [1-9]')
        for value in ("fanoutdx", "xfanoutd", "fanout", "a=fanoutd", ""):
            with self.subTest(not_a_loop=value):
                self.batch(body, total=1, headers={"CDN-Loop": value})

    def test_batch_back_through_a_forwarder(self):
        """Issue 10 input 8: items POSTing batches to fanoutd through a forwarder get the inner
        508 at once; an unrelated batch meanwhile is not delayed."""
        fwd = _Forwarder(self.daemon.port)
        self.addCleanup(fwd.stop)
        key = new_tag()
        inner = [f"http://127.0.0.1:{self.up.port}/count?key={key}"]
        items = [{"url": f"http://127.0.0.1:{fwd.port}/batch", "method": "POST", "body": inner}
                 for _ in range(16)]
        start = time.monotonic()
        doc = self.batch(items, total=16, timeout=60)
        for r in doc["results"]:
            self.assertEqual(r["status"], 508, r)
            self.assertEqual(r["body"]["error"]["code"], "loop_detected", r)
        self.assertLess(time.monotonic() - start, 20)
        self.assertEqual(self.up.count(key), 0)
        t = time.monotonic()
        self.batch([self.url("/json")], total=1)
        self.assertLess(time.monotonic() - t, 5, "an unrelated batch was delayed")


class CdnLoopTokenTest(DaemonCase):
    CONFIG = {"workers": 2, "loop_token": "edge-7.example:8080"}

    def test_configured_token(self):
        tag = new_tag()
        self.batch([self.url("/echo", tag=tag)], total=1, headers={"CDN-Loop": "fanoutd"})
        self.assertEqual(self.up.requests(tag)[0].header("CDN-Loop"),
                         ["fanoutd, edge-7.example:8080"])
        resp = self.post([self.url("/json")], headers={"CDN-Loop": "EDGE-7.example:8080; x=1"})
        self.assert_error(resp, 508, "loop_detected")


class RequestHeadersTest(DaemonCase):
    """CONTRACT: no request header beyond Host, User-Agent, Accept, Accept-Encoding,
    Content-Length/Transfer-Encoding for a body, X-Request-Id and the v2 ones (CDN-Loop)."""
    CONFIG = {"workers": 4}
    ALLOWED = {"host", "user-agent", "accept", "accept-encoding", "cdn-loop"}

    def one(self, **item):
        tag = new_tag()
        self.batch([dict({"url": self.url("/echo", tag=tag)}, **item)], total=1)
        (q,) = self.up.requests(tag)
        return q

    def names(self, q):
        return {k.lower() for k, _ in q.headers}

    def test_bodiless_methods_add_nothing(self):
        for method in ("GET", "HEAD", "DELETE", "OPTIONS", "PATCH"):
            for body in ({}, {"body": None}):
                with self.subTest(method=method, body=body):
                    q = self.one(method=method, **body)
                    self.assertEqual(self.names(q) - self.ALLOWED, set(), q.headers)
                    self.assertEqual(q.body, b"")

    def test_post_and_put_without_body(self):
        """null body: no Content-Type, no body; Content-Length: 0 as HTTP asks of POST and PUT."""
        for method in ("POST", "PUT"):
            for body in ({}, {"body": None}):
                with self.subTest(method=method, body=body):
                    q = self.one(method=method, **body)
                    self.assertEqual(self.names(q) - self.ALLOWED - {"content-length"}, set(),
                                     q.headers)
                    self.assertIn(q.header("Content-Length"), ([], ["0"]))
                    self.assertEqual(q.body, b"")

    def test_string_body_no_type_no_expect(self):
        for size in (10, 2 * 1024 * 1024 // 3):   # a large one: libcurl would add Expect
            with self.subTest(size=size):
                q = self.one(method="POST", body="x" * size)
                self.assertEqual(self.names(q) - self.ALLOWED, {"content-length"}, q.headers)
                self.assertEqual(q.header("Content-Length"), [str(size)])
                self.assertEqual(len(q.body), size)

    def test_json_body_type(self):
        q = self.one(method="PATCH", body=[1, {"a": None}])
        self.assertEqual(q.header("Content-Type"), ["application/json"])
        self.assertEqual(json.loads(q.body), [1, {"a": None}])

    def test_items_own_type_only(self):
        q = self.one(method="POST", body={"a": 1}, headers={"content-type": "application/x-mine"})
        self.assertEqual(q.header("Content-Type"), ["application/x-mine"])


if __name__ == "__main__":
    unittest.main()
