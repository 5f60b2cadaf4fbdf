#!/usr/bin/env python3
"""clients/python (fanoutd_client) against the real daemon and a real upstream on 127.0.0.1:
batch in every form, batch fields, merge modes, streaming with its summary and heartbeats,
leaving a stream early, the bearer token, and refusals as FanoutdError with the JSON error.

    python3 tests/client/test_client.py

Ends with one line "N passed, N failed, N skipped"."""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.dont_write_bytecode = True

import runner  # noqa: E402
from harness import DaemonCase, new_tag  # noqa: E402

import fanoutd_client  # noqa: E402
from fanoutd_client import Client, FanoutdError  # noqa: E402

TOKEN = "client-t0ken"


class ClientCase(DaemonCase):
    CONFIG = {"workers": 8, "stream_heartbeat_ms": 100}

    def client(self, **kw):
        return Client(f"http://127.0.0.1:{self.daemon.port}", **kw)


class BatchTest(ClientCase):
    def test_list_of_urls_and_items(self):
        doc = self.client().batch([self.url("/json", v="a"), {"url": self.url("/json", v="b"), "id": "bee"}])
        self.assertEqual([(r["id"], r["body"]) for r in doc["results"]], [("0", {"v": "a"}), ("bee", {"v": "b"})])
        self.assertEqual(doc["summary"]["ok"], 2)

    def test_fields_become_the_object_form(self):
        doc = self.client().batch([self.url("/json", v="a"), self.url("/status", code=500)],
                                  merge="bodies", timings=True)
        self.assertEqual(doc["data"]["0"], {"v": "a"})
        self.assertIn("1", doc["errors"])
        self.assertIn("timings", doc["errors"]["1"])

    def test_module_level_helpers(self):
        url = f"http://127.0.0.1:{self.daemon.port}"
        doc = fanoutd_client.batch([self.url("/json", v="m")], url=url, timeout_ms=5000)
        self.assertEqual(doc["results"][0]["body"], {"v": "m"})
        with fanoutd_client.stream([self.url("/json", v="s")], url=url) as lines:
            self.assertEqual([r["body"] for r in lines], [{"v": "s"}])
        self.assertEqual(lines.summary["total"], 1)

    def test_refusal_is_an_exception_with_the_json_error(self):
        with self.assertRaises(FanoutdError) as cm:
            self.client().batch([self.url("/json"), "ftp://127.0.0.1/x"])
        e = cm.exception
        self.assertEqual((e.status, e.code), (400, "bad_request"))
        self.assertIn("item 1", e.message)
        self.assertTrue(e.request_id)
        with self.assertRaises(FanoutdError) as cm:
            self.client().batch([self.url("/json")], timout_ms=5)
        self.assertIn("timout_ms", cm.exception.message)
        with self.assertRaises(TypeError):
            self.client().batch(self.url("/json"))  # one URL is not a list

    def test_healthz(self):
        self.assertEqual(self.client().healthz(), {"status": "ok"})

    def test_large_bodies_sent_after_100_continue(self):
        """A body over 64 KiB waits for fanoutd's 100 Continue: accepted, it is sent whole."""
        tag = new_tag()
        body = "x" * 300_000
        doc = self.client().batch([{"url": self.url("/echo", tag=tag), "method": "POST", "body": body}])
        self.assertTrue(doc["results"][0]["ok"], doc["results"][0]["error"] if "error" in doc["results"][0] else "")
        (seen,) = self.up.requests(tag)
        self.assertEqual(len(seen.body), len(body))

    def test_proxy_variables_not_used(self):
        """The client talks to fanoutd itself, as fanoutd ignores proxy variables upstream."""
        saved = {k: os.environ.get(k) for k in ("http_proxy", "HTTP_PROXY", "no_proxy")}
        os.environ.update(http_proxy="http://127.0.0.1:9/", HTTP_PROXY="http://127.0.0.1:9/")
        os.environ.pop("no_proxy", None)
        try:
            doc = self.client().batch([self.url("/json", v="direct")])
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.assertEqual(doc["results"][0]["body"], {"v": "direct"})

    def test_request_id_and_local_errors(self):
        fo = self.client()
        fo.batch([self.url("/json")])
        self.assertRegex(fo.last_request_id or "", r"^[0-9a-f]{16,}$")
        with self.assertRaises(ValueError):
            fo.batch([{"url": self.url("/echo"), "method": "POST", "body": {"n": float("nan")}}])


class StreamTest(ClientCase):
    def test_lines_as_they_land_then_the_summary(self):
        items = [{"url": self.url("/delay", ms=400), "id": "slow"}, {"url": self.url("/json", v="f"), "id": "fast"}]
        start = time.monotonic()
        seen = []
        with self.client().stream(items) as lines:
            for r in lines:
                seen.append((r["id"], r["index"], round(time.monotonic() - start, 2)))
        self.assertEqual([s[0] for s in seen], ["fast", "slow"])
        self.assertLess(seen[0][2], 0.3, "the fast line waited for the slow item")
        self.assertEqual(lines.summary, {**lines.summary, "total": 2, "ok": 2, "complete": True})
        self.assertGreaterEqual(lines.heartbeats, 1, "a 400 ms item with 100 ms heartbeats")

    def test_leaving_early_cancels_the_rest(self):
        tag = new_tag()
        items = [self.url("/json", v="first")]
        items += [self.url("/drip", ms=100, chunks=80, tag=tag, i=i) for i in range(3)]
        with self.client(timeout=10).stream(items) as lines:
            first = next(iter(lines))
            self.wait_for_requests(tag, 3)
        self.assertEqual(first["body"], {"v": "first"})
        self.wait_aborted(tag, 3)

    def wait_for_requests(self, tag, n):
        end = time.monotonic() + 5
        while len(self.up.requests(tag)) < n and time.monotonic() < end:
            time.sleep(0.02)

    def wait_aborted(self, tag, n):
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if self.up.aborted(tag) >= n:
                return
            time.sleep(0.05)
        self.fail(f"the running fetches were not aborted: {self.up.aborted(tag)}")

    def test_iterating_again_and_closing(self):
        """A stream read to its end is closed, and iterating it again yields nothing; one left
        after a break goes on where it stopped; a closed one stops at once (no
        StreamCutShort: the client ended it)."""
        s = self.client().stream([self.url("/json", v=i) for i in range(3)])
        first = next(s)
        rest = list(s)
        self.assertEqual(len([first] + rest), 3)
        self.assertEqual(list(s), [])
        self.assertEqual(s.summary["total"], 3)
        s = self.client().stream([self.url("/json", v=i) for i in range(3)])
        s.close()
        self.assertEqual(list(s), [])

    def test_merge_cannot_stream(self):
        with self.assertRaises(ValueError):
            self.client().stream([self.url("/json")], merge="deep")


class CutShortTest(ClientCase):
    CONFIG = {"workers": 8, "max_answer_bytes": 1_500_000}

    def test_a_stream_cut_mid_line(self):
        """A client that stops reading is dropped once its unread lines pass max_answer_bytes:
        the stream ends, wherever the cut falls, as StreamCutShort naming what is missing."""
        items = [self.url("/big", bytes=1_000_000, i=i) for i in range(20)]
        with self.client(timeout=20).stream(items) as lines:
            time.sleep(2)  # nothing read: the lines pile up past the cap
            with self.assertRaises(fanoutd_client.StreamCutShort) as cm:
                for _ in lines:
                    pass
        e = cm.exception
        self.assertEqual((e.status, e.code), (None, "stream_cut_short"))
        self.assertTrue(e.missing, "every item had its line")
        self.assertEqual(len(e.results) + len(e.missing), 20)


class TokenTest(ClientCase):
    CONFIG = {"workers": 4, "auth_token": TOKEN, "max_body_bytes": 100_000}

    def test_token(self):
        with self.assertRaises(FanoutdError) as cm:
            self.client().batch([self.url("/json")])
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "unauthorized"))
        doc = self.client(token=TOKEN).batch([self.url("/json", v="t")])
        self.assertEqual(doc["results"][0]["body"], {"v": "t"})

    def test_refused_from_the_headers_alone(self):
        """fanoutd refuses a large batch from its headers (no token: 401; over max_body_bytes:
        413) before reading the body: the client gets that answer, not a reset connection."""
        item = {"url": self.url("/echo"), "method": "POST", "body": "x" * 3_000_000}
        for token, status, code in ((None, 401, "unauthorized"), (TOKEN, 413, "too_large")):
            with self.subTest(code=code):
                with self.assertRaises(FanoutdError) as cm:
                    self.client(token=token, timeout=10).batch([item])
                self.assertEqual((cm.exception.status, cm.exception.code), (status, code))


if __name__ == "__main__":
    import unittest
    import harness
    parsed = runner.parse_args(sys.argv[1:], __doc__)
    if parsed is not None:
        verbosity, names = parsed
        loader = unittest.defaultTestLoader
        suite = (loader.loadTestsFromNames(names, sys.modules[__name__]) if names
                 else loader.loadTestsFromModule(sys.modules[__name__]))
        sys.exit(runner.run(suite, verbosity, harness.cleanup_tmpdirs))
