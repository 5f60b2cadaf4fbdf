"""Listening: `listen = unix:/path` (listen_mode, stale and live socket files, removal on
exit, file permissions) and `reuse_port` (two daemons on one port both serve; one that
drains leaves the port to the other and nothing is lost).

Every daemon is real, every upstream is on 127.0.0.1, every loop is bounded.
"""

import errno
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import threading

from harness import Daemon, DaemonCase, new_tag, request, run_cli, tmpdir, wait_for


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def unix_request(path, method, url, body=None, headers=None, timeout=10):
    """(status, headers, body bytes) of one request over the unix socket at path."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request(method, url, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def healthy_unix(path):
    try:
        return unix_request(path, "GET", "/healthz", timeout=1)[0] == 200
    except OSError:
        return False


def connect_errno(path, as_user):
    """The errno of connect() to path from a child process (0: connected). With as_user
    the child first drops to that uid/gid (as root only), else it keeps ours."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test runner
        code = 0
        try:
            os.close(r)
            if as_user is not None:
                os.setgroups([])
                os.setgid(as_user[1])
                os.setuid(as_user[0])
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
            except OSError as e:
                code = e.errno or 255
            os.write(w, str(code).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return int(out) if out else None


class UnixDaemon(Daemon):
    """fanoutd on `listen = unix:PATH` (from its config, no --listen), healthy once it
    answers /healthz on that socket."""

    def __init__(self, path, **config):
        self.path = path
        base = {"workers": 4, "shutdown_grace_ms": 2000, "listen": f"unix:{path}"}
        base.update(config)
        super().__init__(base, listen=False)

    def healthy(self):
        return healthy_unix(self.path)


def nobody():
    """(uid, gid) of an unprivileged user, or None."""
    try:
        import pwd
        p = pwd.getpwnam("nobody")
        return p.pw_uid, p.pw_gid
    except (ImportError, KeyError):
        return None


class UnixSocketTest(DaemonCase):
    PER_TEST = True

    def sock_path(self):
        """A path in a fresh directory that anyone may enter (mkdtemp makes it 0700), so
        that only the socket's own mode decides who may connect."""
        d = tmpdir()
        os.chmod(d, 0o755)
        return os.path.join(d, "fanoutd.sock")

    def start_unix(self, path, **config):
        d = UnixDaemon(path, **config)
        self.addCleanup(d.stop)
        return d.start()

    def test_batch_over_unix_socket(self):
        path = self.sock_path()
        d = self.start_unix(path)
        tag = new_tag()
        urls = [self.url("/json", v=i, tag=tag) for i in range(3)]
        status, headers, body = unix_request(path, "POST", "/batch", json.dumps(urls),
                                             {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body[:300])
        doc = json.loads(body)
        self.assertEqual(doc["summary"], {**doc["summary"], "total": 3, "ok": 3, "failed": 0})
        self.assertEqual([r["body"] for r in doc["results"]], [{"v": str(i)} for i in range(3)])
        self.assertEqual(headers.get("X-Batch-Complete"), "true")
        self.assertEqual(len(self.up.requests(tag)), 3)
        # default listen_mode 0660, a socket file
        st = os.lstat(path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        # the access line names the unix client; /metrics over the socket too
        wait_for(lambda: "client=unix " in d.log(), 5, "an access line with client=unix")
        status, _, body = unix_request(path, "GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b"fanoutd_batches_total", body)
        # a clean exit removes the socket file
        self.assertEqual(d.stop(), 0, d.log())
        self.assertFalse(os.path.exists(path), "the socket file outlived a clean exit")

    def test_listen_mode_and_refused_by_file_permissions(self):
        path = self.sock_path()
        d = self.start_unix(path, listen_mode="0600")
        self.assertEqual(stat.S_IMODE(os.lstat(path).st_mode), 0o600)
        self.assertEqual(os.lstat(path).st_uid, os.geteuid())
        if os.geteuid() == 0:
            user = nobody()
            if user is None:
                self.skipTest("no user 'nobody' to connect as")
            # the owner (root) may connect; nobody may not
            self.assertEqual(connect_errno(path, None), 0)
            self.assertEqual(connect_errno(path, user), errno.EACCES,
                             "an unprivileged user connected to a 0600 socket")
            # and the same user may once the mode lets others in
            d.stop()
            path2 = self.sock_path()
            self.start_unix(path2, listen_mode="0666")
            self.assertEqual(connect_errno(path2, user), 0)
        else:
            # not root: a socket with no permission bits refuses even its owner
            d.stop()
            path2 = self.sock_path()
            self.start_unix(path2, listen_mode="0000")
            self.assertEqual(connect_errno(path2, None), errno.EACCES)

    def test_stale_socket_file_is_replaced(self):
        path = self.sock_path()
        # what a crashed run leaves: a socket file nobody accepts on
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
        with self.assertRaises(ConnectionRefusedError):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(path)
        d = self.start_unix(path)
        self.assertIn("removed the stale socket file", d.log())
        self.batch_over(path)
        # a crash (SIGKILL) leaves the file; the next start replaces it again
        d.proc.kill()
        d.proc.wait()
        self.assertTrue(os.path.exists(path))
        self.start_unix(path)
        self.batch_over(path)

    def batch_over(self, path):
        status, _, body = unix_request(path, "POST", "/batch", self.url("/json", v=1))
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(json.loads(body)["summary"]["ok"], 1)

    def test_live_socket_is_not_taken_over(self):
        path = self.sock_path()
        first = self.start_unix(path)
        second = UnixDaemon(path)
        second.spawn()
        self.addCleanup(second.stop)
        try:
            rc = second.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.fail("a second fanoutd on a live socket did not exit")
        self.assertEqual(rc, 2, second.log())
        self.assertIn("another process is listening on it", second.log())
        self.assertIn(path, second.log())
        # the first one still owns the file and serves
        self.assertTrue(os.path.exists(path))
        self.batch_over(path)
        self.assertTrue(first.proc.poll() is None)

    def test_live_foreign_socket_is_not_taken_over(self):
        path = self.sock_path()
        owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(owner.close)
        owner.bind(path)
        owner.listen(4)
        d = UnixDaemon(path).spawn()
        self.addCleanup(d.stop)
        self.assertEqual(d.proc.wait(10), 2, d.log())
        ino = os.lstat(path).st_ino
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(path)     # still the other program's socket
        self.assertEqual(os.lstat(path).st_ino, ino)

    def test_path_that_is_not_a_socket_is_left_alone(self):
        path = self.sock_path()
        with open(path, "w") as f:
            f.write("precious\n")
        d = UnixDaemon(path).spawn()
        self.addCleanup(d.stop)
        self.assertEqual(d.proc.wait(10), 2, d.log())
        self.assertIn("is not a socket", d.log())
        with open(path) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_check_config_prints_both_keys(self):
        done = run_cli("--check-config", "--listen", "unix:/run/fanoutd/fanoutd.sock",
                       "--listen-mode", "0640", "--reuse-port", "on")
        self.assertEqual(done.returncode, 0, done.stderr)
        lines = done.stdout.splitlines()
        self.assertIn("listen = unix:/run/fanoutd/fanoutd.sock", lines)
        self.assertIn("listen_mode = 0640", lines)
        self.assertIn("reuse_port = on", lines)
        done = run_cli("--check-config")
        self.assertIn("listen_mode = 0660", done.stdout.splitlines())
        self.assertIn("reuse_port = off", done.stdout.splitlines())
        for bad in (["--listen", "unix:relative.sock"], ["--listen-mode", "0888"],
                    ["--listen-mode", "u+rw"], ["--reuse-port", "sometimes"]):
            done = run_cli("--check-config", *bad)
            self.assertEqual(done.returncode, 2, bad)
            self.assertIn(bad[1], done.stderr)


def served(d):
    """Batches d answered, from its access log."""
    return d.log().count(" access request_id=")


class ReusePortTest(DaemonCase):
    PER_TEST = True
    CONFIG = {"workers": 8, "reuse_port": "on", "shutdown_grace_ms": 8000}

    def second_on(self, port, **overrides):
        """A second daemon on the port of the first: started, and (since the first answers
        /healthz on that port anyway) known to be up only when its own log says it listens,
        or known to have failed when it exits."""
        b = Daemon(self.config(**overrides))
        b.port = port
        self.addCleanup(b.stop)
        b.spawn()
        wait_for(lambda: "listening on" in b.log() or b.proc.poll() is not None, 10,
                 "the second daemon to listen or exit")
        return b

    def pair(self, **overrides):
        a = self.start_daemon(**overrides)
        b = self.second_on(a.port, **overrides)
        self.assertTrue(b.alive, f"a second daemon with reuse_port did not start:\n{b.tail()}")
        return a, b

    def test_two_daemons_on_one_port_both_serve(self):
        a, b = self.pair()
        tag = new_tag()
        for i in range(200):
            doc = self.batch([self.url("/json", v=i, tag=tag)], total=1)
            self.assertEqual(doc["summary"]["ok"], 1)
            if served(a) > 0 and served(b) > 0:
                break
        self.assertGreater(served(a), 0, "the first daemon never served a batch")
        self.assertGreater(served(b), 0, "the second daemon never served a batch")

    def test_without_reuse_port_the_second_cannot_bind(self):
        a = self.start_daemon(reuse_port="off")
        b = self.second_on(a.port, reuse_port="off")
        self.assertEqual(b.wait(10), 1, b.tail())
        self.assertIn("cannot listen on", b.log())
        # with reuse_port on one side only, neither shares
        b = self.second_on(a.port, reuse_port="on")
        self.assertEqual(b.wait(10), 1, b.tail())

    def test_one_draining_loses_nothing(self):
        a, b = self.pair()
        tag = new_tag()
        # one slow batch in flight on whichever answers it...
        slow = [self.url("/delay", ms=1500, tag=tag, i=i) for i in range(3)]
        results, errors, lock = [], [], threading.Lock()
        stop = threading.Event()

        def client(n):
            for i in range(60):
                if stop.is_set():
                    return
                try:
                    body = json.dumps([self.url("/delay", ms=20, tag=tag, c=n, i=i)]).encode()
                    r = request(a.port, "POST", "/batch", body,
                                {"Content-Type": "application/json"}, timeout=20)
                    with lock:
                        results.append(r)
                except OSError as e:
                    with lock:
                        errors.append(repr(e))

        inflight = [threading.Thread(target=lambda: results.append(
            request(a.port, "POST", "/batch", json.dumps(slow).encode(),
                    {"Content-Type": "application/json"}, timeout=20)))]
        inflight[0].start()
        wait_for(lambda: len(self.up.requests(tag)) >= 3, 5, "the slow batch to start")
        threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: served(a) > 0 and served(b) > 0 and len(results) >= 30, 20,
                 "both daemons to serve, and a sixth of the batches to be answered")
        victim = a
        victim.signal(signal.SIGTERM)
        wait_for(lambda: "left the listening socket" in victim.log(), 5,
                 "the draining daemon to leave the port")
        for t in threads + inflight:
            t.join(40)
        stop.set()
        self.assertEqual(victim.wait(15), 0, victim.tail())
        self.assertEqual(errors, [], "connections refused or reset while one daemon drained")
        self.assertEqual(len(results), 3 * 60 + 1)
        bad = [r for r in results if r.status != 200]
        self.assertEqual(bad, [], "batches not answered 200 while one daemon drained")
        for r in results:
            doc = r.json()
            self.assertEqual(doc["summary"]["failed"], 0, doc)
        # the survivor keeps serving on the port
        self.batch([self.url("/json", v=1)], total=1)
