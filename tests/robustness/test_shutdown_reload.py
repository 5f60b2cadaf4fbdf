"""SIGTERM while batches wait on slow upstreams, a second SIGTERM, SIGTERM during start-up,
and SIGHUP with a broken configuration file. The daemon must never die of a signal."""

import os
import re
import signal
import subprocess
import time

from common import harness  # noqa: E402 (common puts tests/integration on sys.path)
from common import (RobustCase, Background, request, describe_rc, metric, proc_status,
                    wait_for, new_tag)


def healthz_status(port):
    try:
        return request(port, "GET", "/healthz", timeout=2).status
    except OSError:
        return None


class Shutdown(RobustCase):
    def slow(self, tag, n, ms=8000, prefix="slow"):
        return [{"id": f"{prefix}{i}", "url": self.up.url("/delay", ms=ms, tag=tag, i=i),
                 "timeout_ms": 20000} for i in range(n)]

    def in_background(self, items, timeout=30):
        return Background(lambda: (self.post({"requests": items}, timeout=timeout),
                                   time.monotonic()))

    def check_answer(self, bg, items, tag, n_siblings, t0, bound):
        resp, done = bg.result(bound + 5)
        self.assertEqual(resp.status, 200, f"an in-flight batch must be answered 200: {resp!r}")
        doc = resp.json()
        self.check_doc(doc, resp, len(items), "none")
        self.check_accounted(doc, items)
        self.check_siblings(doc, tag, n_siblings)
        for it in items:
            if it["id"].startswith("slow"):
                r = self.item(doc, it["id"])
                self.assert_item_error(r, "cancelled")
        return done - t0

    def test_sigterm_answers_suspended_batches(self):
        grace = 1000
        d = self.start_daemon(shutdown_grace_ms=grace, workers=4)
        # A first, then B once A's siblings are answered: every sibling runs before the
        # four workers fill up with slow items, and two of B's slow items stay queued.
        tag_a, tag_b = new_tag(), new_tag()
        a = self.siblings(tag_a, 2) + self.slow(tag_a, 2, prefix="slowA")
        b = self.siblings(tag_b, 1) + self.slow(tag_b, 5, prefix="slowB")  # 7 slow > 4 workers
        started = lambda tag, path: len(self.up.requests(tag, path))  # noqa: E731
        bg_a = self.in_background(a)
        wait_for(lambda: started(tag_a, "/json") == 2 and started(tag_a, "/delay") == 2, 10,
                 "batch A's siblings answered and its slow items started")
        bg_b = self.in_background(b)
        wait_for(lambda: started(tag_b, "/json") == 1 and started(tag_b, "/delay") >= 2, 10,
                 "batch B's sibling answered and every worker busy with a slow item")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        wait_for(lambda: healthz_status(d.port) in (503, None), grace / 1000,
                 "/healthz to say draining (or the listener to close)")
        late = None
        try:
            late = self.post({"requests": self.siblings(new_tag(), 1)}, timeout=3)
        except OSError:
            pass  # not accepting any more is fine too
        if late is not None:
            self.assert_error(late, 503, "draining")
        for bg, items, tag, n in ((bg_a, a, tag_a, 2), (bg_b, b, tag_b, 1)):
            took = self.check_answer(bg, items, tag, n, t0, grace / 1000 + 2)
            self.assertGreaterEqual(took, 0.8 * grace / 1000,
                                    f"in-flight batch cut before the grace time ({took:.2f} s)")
            self.assertLessEqual(took, grace / 1000 + 2, f"answered only after {took:.2f} s")
        rc = d.wait(grace / 1000 + 2 - (time.monotonic() - t0))
        self.assertIsNotNone(rc, f"fanoutd still running {grace / 1000 + 2:.0f} s after SIGTERM "
                                 f"with shutdown_grace_ms={grace}")
        self.assertEqual(rc, 0, f"fanoutd {describe_rc(rc)}\n{d.tail()}")
        self.assertLess(started(tag_a, "/delay") + started(tag_b, "/delay"), 7,
                        "queued items of a draining daemon should not start after the grace")

    def test_sigterm_lets_short_batches_finish(self):
        d = self.start_daemon(shutdown_grace_ms=5000)
        tag = new_tag()
        items = self.siblings(tag, 2) + [{"id": "short", "url": self.up.url("/delay", ms=500, tag=tag)}]
        bg = self.in_background(items)
        wait_for(lambda: self.up.requests(tag, "/delay"), 5, "the 500 ms item to start")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        resp, done = bg.result(8)
        self.assertEqual(resp.status, 200, resp)
        doc = resp.json()
        self.check_accounted(doc, items)
        self.check_siblings(doc, tag, 2)
        self.assertTrue(self.item(doc, "short")["ok"],
                        f"an item finishing within the grace must complete: {doc}")
        rc = d.wait(3 - (time.monotonic() - t0))
        self.assertEqual(rc, 0, f"fanoutd should exit soon after its last batch: "
                                f"{describe_rc(rc)} (grace 5 s)\n{d.tail()}")

    def test_second_sigterm_cuts_grace_short(self):
        d = self.start_daemon(shutdown_grace_ms=20000)
        tag = new_tag()
        items = self.siblings(tag, 2) + self.slow(tag, 2, ms=15000)
        bg = self.in_background(items)
        # The siblings must be answered before the second SIGTERM cancels what still runs.
        wait_for(lambda: len(self.up.requests(tag, "/json")) == 2
                 and len(self.up.requests(tag, "/delay")) == 2
                 and metric(self.metrics(), "fanoutd_workers_busy") == 2,
                 10, "the siblings answered and only the slow items running")
        d.signal(signal.SIGTERM)
        wait_for(lambda: healthz_status(d.port) in (503, None), 5, "the daemon to start draining")
        self.assertIsNone(d.proc.poll(), "exited before the grace time with work in flight")
        t1 = time.monotonic()
        d.signal(signal.SIGTERM)
        took = self.check_answer(bg, items, tag, 2, t1, 2)
        self.assertLess(took, 2, f"second SIGTERM: batch answered only after {took:.2f} s")
        rc = d.wait(2.5 - (time.monotonic() - t1))
        self.assertIsNotNone(rc, "a second SIGTERM did not cut the 20 s grace short")
        self.assertEqual(rc, 0, f"fanoutd {describe_rc(rc)}\n{d.tail()}")


class StartupSignals(RobustCase):
    """SIGTERM while the daemon is still starting: it must exit, never hang. Once it has
    blocked SIGTERM (the first thing main() does) it must exit 0. Before that, in the
    dynamic loader and library constructors, no program's code runs yet: the default
    action (terminated by SIGTERM, nothing started) is the only possible outcome there."""

    def spawn(self):
        """A fresh daemon (own directory, log, free port), started without waiting."""
        d = harness.Daemon({"shutdown_grace_ms": 1000, "workers": 32})
        self.addCleanup(d.stop)
        return d.spawn()

    def run_all(self, wait_first):
        delays = [0, 0, 0, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05]
        outcomes = []
        for delay in delays:
            for attempt in range(1, harness.BIND_ATTEMPTS + 1):
                d = self.spawn()
                p = d.proc
                if wait_first is not None:
                    wait_first(p)
                if delay:
                    time.sleep(delay)  # deliberately varied: the point is the moment, not a sync
                blocked = self.sigterm_handled(p)
                p.send_signal(signal.SIGTERM)
                try:
                    rc = p.wait(5)
                except subprocess.TimeoutExpired:
                    rc = None
                output = d.log()
                # spawn() picks its port with free_port(): if another process took it, fanoutd
                # exited saying so, and this moment is tried again on a fresh port.
                if rc in (None, 0) or attempt == harness.BIND_ATTEMPTS \
                        or not harness.lost_port(output):
                    break
            tail = output[-300:]
            outcomes.append((delay, rc, blocked, tail))
        bad = [(delay, describe_rc(rc), "SIGTERM blocked/caught when sent" if blocked else
                "SIGTERM not yet blocked or caught when sent (dynamic loader, library "
                "constructors, or main() before its sigprocmask)", tail)
               for delay, rc, blocked, tail in outcomes
               if rc is None or (rc != 0 and (blocked or rc != -signal.SIGTERM))]
        self.assertEqual(bad, [], "SIGTERM during start-up (delay after spawn, outcome, state, log); "
                                  f"all outcomes: {[(d, describe_rc(r)) for d, r, _, _ in outcomes]}")

    @staticmethod
    def sigterm_handled(p):
        bit = 1 << (signal.SIGTERM - 1)
        for key in ("SigBlk", "SigCgt"):
            v = proc_status(p.pid, key)
            if isinstance(v, str) and int(v, 16) & bit:
                return True
        return False

    def test_sigterm_right_after_spawn(self):
        self.run_all(None)

    def test_sigterm_once_signals_are_set_up(self):
        """The same, each SIGTERM sent once the daemon blocks or catches SIGTERM (so past
        the dynamic loader), while it still starts its threads and listener."""
        def handles_sigterm(p):
            end = time.monotonic() + 5  # polled; if never seen (odd wrappers), send anyway
            while time.monotonic() < end and p.poll() is None and not self.sigterm_handled(p):
                time.sleep(0.0005)
        self.run_all(handles_sigterm)


class Reload(RobustCase):
    TOKEN1, TOKEN2 = "tok-one-1234", "tok-two-5678"

    def call(self, n, token):
        tag = new_tag()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.post({"requests": self.siblings(tag, n)}, headers=headers, timeout=10)

    def expect(self, max_batch, token, other_token, when):
        with self.subTest(when=when):
            r = self.call(1, None)
            self.assert_error(r, 401, "unauthorized")
            r = self.call(1, other_token)
            self.assert_error(r, 401, "unauthorized")
            r = self.call(max_batch, token)
            self.assertEqual(r.status, 200, f"{when}: {max_batch} items with the right token: {r!r}")
            r = self.call(max_batch + 1, token)
            self.assert_error(r, 413, "too_large")

    def reload_counts(self):
        text = self.metrics()
        return (metric(text, "fanoutd_config_reloads_total") or 0,
                metric(text, "fanoutd_config_reload_failures_total") or 0)

    def test_sighup_with_broken_file_keeps_old_config(self):
        d = self.start_daemon(auth_token=self.TOKEN1, max_batch=3, log_level="info")
        self.expect(3, self.TOKEN1, self.TOKEN2, "at start")
        good = {"shutdown_grace_ms": 1000, "auth_token": self.TOKEN2, "max_batch": 6}
        broken_files = [
            ("unknown key", 4, ["# broken on purpose", f"auth_token = {self.TOKEN2}",
                                "max_batch = 6", "max_batchh = 7"]),
            ("bad value", 3, ["# broken on purpose", f"auth_token = {self.TOKEN2}",
                              "max_batch = six"]),
            ("no equals sign", 2, [f"auth_token = {self.TOKEN2}", "max_batch 6"]),
        ]
        for what, line, lines in broken_files:
            with self.subTest(broken=what):
                ok0, fail0 = self.reload_counts()
                log0 = len(d.log())
                d.write_raw("\n".join(lines) + "\n")
                d.signal(signal.SIGHUP)
                wait_for(lambda: self.reload_counts()[1] > fail0, 5,
                         "fanoutd_config_reload_failures_total to go up")
                self.assertEqual(self.reload_counts()[0], ok0, "a broken file counted as reloaded")
                why = d.log()[log0:]
                self.assertRegex(why, re.escape(d.config_path) + rf"\D{{1,8}}{line}\b",
                                 f"the log must name the file and line {line} ({what}):\n{why}")
                self.assert_alive()
                self.expect(3, self.TOKEN1, self.TOKEN2, f"after a SIGHUP with a file with {what}")
        ok0, fail0 = self.reload_counts()
        d.write_config(good)
        d.signal(signal.SIGHUP)
        wait_for(lambda: self.reload_counts()[0] > ok0, 5, "fanoutd_config_reloads_total to go up")
        self.assertEqual(self.reload_counts()[1], fail0)
        self.expect(6, self.TOKEN2, self.TOKEN1, "after the fixed file")
        self.assert_healthy()


class ReloadHardening(RobustCase):
    """Issue 10, inputs 10 and 20: a truncated (empty) file does not turn auth off; a
    reload that changes who may use fanoutd or where it may fetch says so (never the
    token); auth_token @FILE is read again on each reload."""
    TOKEN1, TOKEN2 = Reload.TOKEN1, Reload.TOKEN2
    call, expect, reload_counts = Reload.call, Reload.expect, Reload.reload_counts

    def reload(self, d, ok):
        ok0, fail0 = self.reload_counts()
        log0 = len(d.log())
        d.signal(signal.SIGHUP)
        which = 0 if ok else 1
        wait_for(lambda: self.reload_counts()[which] > (ok0, fail0)[which], 5,
                 "the reload to be counted " + ("done" if ok else "failed"))
        self.assertEqual(self.reload_counts()[1 - which], (ok0, fail0)[1 - which])
        return d.log()[log0:]

    def test_empty_file_refused(self):
        d = self.start_daemon(auth_token=self.TOKEN1, max_batch=3, log_level="info")
        self.expect(3, self.TOKEN1, self.TOKEN2, "at start")
        d.write_raw("")
        why = self.reload(d, ok=False)
        self.assertRegex(why, re.escape(d.config_path) + r" is empty", why)
        self.assert_alive()
        self.expect(3, self.TOKEN1, self.TOKEN2, "after a SIGHUP with an empty file")
        # No setting at all (blank lines, comments) would also be the defaults: auth off.
        for text in ("\n", "   \n\n", "# only a comment\n", "# a\n\n   # b\n"):
            with self.subTest(text=text):
                d.write_raw(text)
                why = self.reload(d, ok=False)
                self.assertRegex(why, re.escape(d.config_path) + r" has no settings", why)
                self.expect(3, self.TOKEN1, self.TOKEN2, f"after a SIGHUP with {text!r}")
        d.write_raw("# a comment\nmax_batch = 3\n")  # one setting: a real file (auth off)
        self.reload(d, ok=True)
        self.assertEqual(self.call(1, None).status, 200)

    def test_guarded_keys_logged_without_the_token(self):
        base = {"shutdown_grace_ms": 1000, "log_level": "info", "max_batch": 3}
        d = self.start_daemon(auth_token=self.TOKEN1, **base)
        d.write_config(dict(base, auth_token=self.TOKEN1, max_batch=4))
        log = self.reload(d, ok=True)
        self.assertNotRegex(log, r"reload changes", "nothing guarded changed")
        d.write_config(dict(base, auth_token=self.TOKEN2, allow="10.9.0.0/16", deny="10.8.0.0/16"))
        log = self.reload(d, ok=True)
        for key in ("auth_token", "allow", "deny"):
            self.assertRegex(log, rf"(?m)^\S+ warn .*reload changes {key}\b", log)
        d.write_config(base)
        log = self.reload(d, ok=True)
        self.assertRegex(log, r"(?m)^\S+ warn .*reload changes auth_token.*needs no token", log)
        self.assertEqual(self.call(1, None).status, 200)
        text = d.log()
        for token in (self.TOKEN1, self.TOKEN2):
            self.assertNotIn(token, text, "a token was written to the log")

    def test_token_file_read_again_on_reload(self):
        tok = os.path.join(harness.tmpdir(), "token")
        with open(tok, "w") as f:
            f.write(self.TOKEN1 + "\n")
        d = self.start_daemon(auth_token="@" + tok, max_batch=3, log_level="info")
        self.expect(3, self.TOKEN1, self.TOKEN2, "token from the file at start")
        with open(tok, "w") as f:
            f.write(self.TOKEN2)
        log = self.reload(d, ok=True)
        self.assertRegex(log, r"reload changes auth_token", log)
        self.expect(3, self.TOKEN2, self.TOKEN1, "token file rewritten, then SIGHUP")
        for what, action in (("emptied", lambda: open(tok, "w").close()),
                             ("removed", lambda: os.unlink(tok))):
            with self.subTest(token_file=what):
                action()
                why = self.reload(d, ok=False)
                self.assertIn(tok, why, f"the log must name the token file ({what})")
                self.expect(3, self.TOKEN2, self.TOKEN1, f"token file {what}, then SIGHUP")
        self.assertNotIn(self.TOKEN2, d.log())

    def test_token_file_not_regular(self):
        """auth_token = @FIFO (or a directory): refused naming it, at once; it used to
        block the reload in open() for a writer, and SIGTERM with it."""
        tok = os.path.join(harness.tmpdir(), "token")
        with open(tok, "w") as f:
            f.write(self.TOKEN1 + "\n")
        d = self.start_daemon(auth_token="@" + tok, max_batch=3, log_level="info",
                              shutdown_grace_ms=1000)
        fifo = os.path.join(harness.tmpdir(), "token-fifo")
        os.mkfifo(fifo)
        for what, path in (("a FIFO", fifo), ("a directory", harness.tmpdir())):
            with self.subTest(token_file=what):
                d.write_config(dict(auth_token="@" + path, max_batch=3, log_level="info",
                                    shutdown_grace_ms=1000))
                why = self.reload(d, ok=False)
                self.assertRegex(why, re.escape(path) + r".*not a regular file", why)
                self.expect(3, self.TOKEN1, self.TOKEN2, f"token file is {what}")
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait(10), 0, "SIGTERM after the refused reloads")
