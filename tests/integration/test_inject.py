"""Credentials injected by the gateway (CONTRACT v2 "Credentials injected by the gateway"):
inject_header by prefix (longest wins, scheme/host case and default port normalised), replacing
the item's and forwarded headers, values from files re-read on SIGHUP, never shown anywhere,
not carried by a redirect out of the prefix; and the item's Authorization, Cookie,
Proxy-Authorization and sensitive_headers dropped on a cross-origin redirect. Two real
upstreams on 127.0.0.1 (two ports: two origins) record what reached them."""

import json
import os
import re
import signal
import uuid

from harness import (Daemon, DaemonCase, Upstream, config_text, new_tag, run_cli, tmpdir,
                     wait_for)


def metrics_text(case):
    return case.get("/metrics").body.decode()


def reloads(case):
    m = re.search(r"^fanoutd_config_reloads_total ([0-9]+)", metrics_text(case), re.M)
    return int(m.group(1)) if m else 0


class InjectCase(DaemonCase):
    PER_TEST = True
    SECRET = "lit-" + uuid.uuid4().hex
    FILE_SECRET = "file-" + uuid.uuid4().hex

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.up2 = Upstream().start()

    @classmethod
    def tearDownClass(cls):
        cls.up2.stop()
        super().tearDownClass()

    def start_with(self, rules, **cfg):
        """A daemon whose config file has these inject_header lines (and cfg)."""
        base = self.config(workers=8, log_level="debug", **cfg)
        d = Daemon(base)
        d.write_raw(config_text(base) + "".join(f"inject_header = {r}\n" for r in rules))
        self.daemon = d
        self.addCleanup(d.stop)
        return d.start()

    def token_file(self, text):
        path = os.path.join(tmpdir(), "token")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def sent(self, tag, name):
        """{i: values of header `name`} of what both upstreams received with tag."""
        out = {}
        for r in self.up.requests(tag=tag) + self.up2.requests(tag=tag):
            out[r.query.get("i")] = r.header(name)
        return out


class InjectHeaderTest(InjectCase):
    def test_prefix_match_path_port_and_longest(self):
        port = self.up.port
        self.start_with([f"HTTP://127.0.0.1:{port}/s/secure/ X-Api-Key: {self.SECRET}",
                         f"http://127.0.0.1:{port}/s/secure/deep/ X-Api-Key: deep-{self.SECRET}"])
        tag = new_tag()
        items = [self.up.url("/s/secure/json", tag=tag, i="in"),
                 self.up.url("/s/public/json", tag=tag, i="out"),
                 self.up.url("/s/securex/json", tag=tag, i="near"),
                 self.up.url("/s/secure/deep/json", tag=tag, i="deep"),
                 self.up2.url("/s/secure/json", tag=tag, i="port")]
        doc = self.batch(items, total=5)
        # the upstream answers 404 on these paths; what matters is what it received
        self.assertEqual(len(doc["results"]), 5)
        self.assertEqual(self.sent(tag, "X-Api-Key"),
                         {"in": [self.SECRET], "out": [], "near": [], "deep": [f"deep-{self.SECRET}"],
                          "port": []})

    def test_prefix_without_path_means_root_and_default_port(self):
        port = self.up.port
        self.start_with([f"http://127.0.0.1:{port} X-Root: {self.SECRET}",
                         f"http://localhost X-Default-Port: {self.SECRET}"])
        tag = new_tag()
        self.batch([self.up.url("/json", tag=tag, i="a"), self.up.url("/x/y", tag=tag, i="b")],
                   total=2)
        self.assertEqual(self.sent(tag, "X-Root"), {"a": [self.SECRET], "b": [self.SECRET]})
        # port 80 is not the upstream's: that rule matches neither
        self.assertEqual(self.sent(tag, "X-Default-Port"), {"a": [], "b": []})

    def test_replaces_item_and_forwarded_headers(self):
        self.start_with([f"{self.up.url('/s/secure/')} X-Api-Key: {self.SECRET}"],
                        forward_headers="X-Api-Key")
        tag = new_tag()
        self.batch([{"url": self.up.url("/s/secure/a", tag=tag, i="item"),
                     "headers": {"x-api-key": "from-item"}},
                    {"url": self.up.url("/s/public/a", tag=tag, i="item-out"),
                     "headers": {"X-Api-Key": "from-item"}}], total=2)
        self.batch([self.up.url("/s/secure/a", tag=tag, i="fwd"),
                    self.up.url("/s/public/a", tag=tag, i="fwd-out")], total=2,
                   headers={"X-Api-Key": "from-client"})
        self.assertEqual(self.sent(tag, "X-Api-Key"),
                         {"item": [self.SECRET], "item-out": ["from-item"],
                          "fwd": [self.SECRET], "fwd-out": ["from-client"]})

    def test_value_from_file_and_reread_on_sighup(self):
        path = self.token_file(f"Bearer {self.FILE_SECRET}\n")
        d = self.start_with([f"{self.up.url('/s/filed/')} Authorization: @{path}"])
        tag = new_tag()
        self.batch([self.up.url("/s/filed/a", tag=tag, i="one")], total=1)
        self.assertEqual(self.sent(tag, "Authorization"), {"one": [f"Bearer {self.FILE_SECRET}"]})
        with open(path, "w", encoding="utf-8") as f:
            f.write("Bearer rotated-" + self.FILE_SECRET + "\n")
        before = reloads(self)
        d.signal(signal.SIGHUP)
        wait_for(lambda: reloads(self) > before, 10, "the reload never happened")
        self.batch([self.up.url("/s/filed/a", tag=tag, i="two")], total=1)
        self.assertEqual(self.sent(tag, "Authorization")["two"], [f"Bearer rotated-{self.FILE_SECRET}"])
        # a file that can no longer be read: the reload is refused, the old value stays
        os.unlink(path)
        d.signal(signal.SIGHUP)
        wait_for(lambda: re.search(r"^fanoutd_config_reload_failures_total [1-9]",
                                   metrics_text(self), re.M), 10, "the bad reload was not refused")
        self.batch([self.up.url("/s/filed/a", tag=tag, i="three")], total=1)
        self.assertEqual(self.sent(tag, "Authorization")["three"],
                         [f"Bearer rotated-{self.FILE_SECRET}"])

    def test_unreadable_file_is_a_configuration_error(self):
        base = self.config()
        d = Daemon(base)
        d.write_raw(config_text(base) + "inject_header = http://x/ X-K: @/nonexistent/token\n")
        done = run_cli("--config", d.config_path, "--check-config")
        self.assertEqual(done.returncode, 2, done.stdout)
        self.assertIn("inject_header", done.stderr)
        self.assertIn(":", done.stderr)

    def test_control_bytes_in_a_value_file_are_a_configuration_error(self):
        """The same rule as a value written inline: no control byte but HTAB goes upstream."""
        path = self.token_file("ab\x01cd\n")
        done = run_cli("--inject-header", f"http://x/ X-K: @{path}", "--check-config")
        self.assertEqual(done.returncode, 2, done.stdout)
        self.assertIn("control characters", done.stderr)
        self.assertNotIn("ab\x01cd", done.stderr)

    def test_a_fifo_as_value_file_is_refused_at_once(self):
        """Opening a FIFO must not wait for a writer (it would hang start-up and reload)."""
        path = os.path.join(tmpdir(), "fifo")
        os.mkfifo(path)
        done = run_cli("--inject-header", f"http://x/ X-K: @{path}", "--check-config")
        self.assertEqual(done.returncode, 2, done.stdout)
        self.assertIn("not a regular file", done.stderr)

    def test_bad_rules_are_configuration_errors(self):
        for rule in ("nospace", "ftp://x/ X-K: v", "http://x/ X-K v", "http://x/ Bad Name: v",
                     "http://x/ X-K:"):
            with self.subTest(rule=rule):
                done = run_cli("--inject-header", rule, "--check-config")
                self.assertEqual(done.returncode, 2, done.stdout)

    def test_values_never_shown(self):
        path = self.token_file(f"Bearer {self.FILE_SECRET}\n")
        d = self.start_with([f"{self.up.url('/s/secure/')} X-Api-Key: {self.SECRET}",
                             f"{self.up.url('/s/filed/')} Authorization: @{path}"])
        tag = new_tag()
        resp = self.post([self.up.url("/s/secure/json", tag=tag, i="a"),
                          self.up.url("/s/filed/json", tag=tag, i="b"),
                          {"url": self.up.url("/s/secure/x", tag=tag, i="c"), "timeout_ms": 1}])
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.sent(tag, "X-Api-Key")["a"], [self.SECRET])
        done = run_cli("--config", d.config_path, "--check-config")
        self.assertEqual(done.returncode, 0, done.stderr)
        places = {"the reply": resp.body.decode(), "/metrics": metrics_text(self),
                  "the log": d.log(), "--check-config": done.stdout + done.stderr}
        for secret in (self.SECRET, self.FILE_SECRET):
            for place, text in places.items():
                self.assertNotIn(secret, text, f"an injected value shows in {place}")
        lines = [l for l in done.stdout.splitlines() if l.startswith("inject_header")]
        self.assertEqual(lines, [f"inject_header = {self.up.url('/s/secure/')} X-Api-Key: ***",
                                 f"inject_header = {self.up.url('/s/filed/')} Authorization: ***"])


class InjectRedirectTest(InjectCase):
    def test_prefix_hop_then_redirect_elsewhere(self):
        """The first URL under the prefix gets the key; a redirect to another path of the same
        origin or to another port does not; one staying under the prefix does."""
        port = self.up.port
        # the prefix covers /redirect on this upstream, so the first hop is under it
        self.start_with([f"http://127.0.0.1:{port}/redirect X-Api-Key: {self.SECRET}"],
                        forward_headers="X-Api-Key")
        tag = new_tag()
        items = [self.up.url("/redirect", to=self.up.url("/json", tag=tag, i="path"), tag=tag,
                             i="first-path"),
                 self.up.url("/redirect", to=self.up2.url("/json", tag=tag, i="port"), tag=tag,
                             i="first-port"),
                 self.up.url("/redirect", to=self.up.url("/redirect", tag=tag, i="again",
                                                         to=self.up.url("/json", tag=tag, i="end")),
                             tag=tag, i="first-in")]
        self.batch(items, total=3, headers={"X-Api-Key": "from-client"})
        got = self.sent(tag, "X-Api-Key")
        self.assertEqual(got["first-path"], [self.SECRET])
        self.assertEqual(got["first-port"], [self.SECRET])
        self.assertEqual(got["first-in"], [self.SECRET])
        self.assertEqual(got["again"], [self.SECRET])
        # outside the prefix neither the injected value nor the item's/forwarded one it replaced
        self.assertEqual(got["path"], [])
        self.assertEqual(got["port"], [])
        self.assertEqual(got["end"], [])


class SensitiveHeadersTest(InjectCase):
    CREDENTIALS = {"Authorization": "Bearer item-token", "Cookie": "session=1",
                   "Proxy-Authorization": "Basic eDp5", "X-Custom-Secret": "s3", "x-other-secret": "o"}

    def follow(self, final_up, **cfg):
        tag = new_tag()
        item = {"url": self.up.url("/redirect", to=final_up.url("/echo", tag=tag, i="final"),
                                   tag=tag, i="first"),
                "headers": {**self.CREDENTIALS, "X-Plain": "p"}}
        r = self.batch([item], total=1)["results"][0]
        self.assertTrue(r["ok"], r)
        return {k.lower(): v for k, v in
                ((name, self.sent(tag, name)["final"]) for name in list(self.CREDENTIALS) + ["X-Plain"])}

    def test_cross_origin_drops_credentials_and_sensitive_headers(self):
        self.start_with([], sensitive_headers="X-Custom-Secret, X-Other-Secret")
        got = self.follow(self.up2)
        self.assertEqual(got["x-plain"], ["p"])
        for name in self.CREDENTIALS:
            self.assertEqual(got[name.lower()], [], f"{name} crossed to another origin")

    def test_same_origin_keeps_them(self):
        self.start_with([], sensitive_headers="X-Custom-Secret, X-Other-Secret")
        got = self.follow(self.up)
        for name, value in self.CREDENTIALS.items():
            self.assertEqual(got[name.lower()], [value], f"{name} lost on a same-origin redirect")

    def test_without_sensitive_headers_other_names_go_on(self):
        self.start_with([])
        got = self.follow(self.up2)
        self.assertEqual(got["x-custom-secret"], ["s3"])
        self.assertEqual(got["authorization"], [])
