"""Service tests: fanoutd as a systemd service, installed and observed.

    python3 tests/service/test_service.py [unittest args]

Runs from the repository root against ./fanoutd (FANOUTD overrides). Covers the
unit files (systemd-analyze verify and security), make install / the .deb, the
man pages and the sample config against the configuration keys, /metrics under
promtool, the sd_notify protocol (READY, STATUS, RELOADING, STOPPING and a
watchdog that stops when the worker pool is wedged), socket activation,
X-Request-Id and the access log. Everything listens on 127.0.0.1. Ends with
one line "N passed, N failed, N skipped".
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "integration"))
from harness import Daemon, Upstream, daemon_argv, free_port, wait_for  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
KEYS = ("listen", "workers", "queue_capacity", "max_batch", "max_body_bytes",
        "max_response_bytes", "max_answer_bytes", "default_timeout_ms", "max_timeout_ms",
        "batch_timeout_ms",
        "max_redirects", "allow", "deny", "forward_headers", "auth_token", "per_host_limit",
        "shutdown_grace_ms", "max_connections", "client_timeout_ms", "log_level", "loop_token",
        "listen_mode", "reuse_port",
        "coalesce", "cache_ttl_ms", "cache_max_bytes", "inject_header", "sensitive_headers",
        "stream_heartbeat_ms",
        "retries", "max_retries", "retry_backoff_ms", "retry_backoff_max_ms",
        "breaker_failures", "breaker_open_ms", "per_host_rate")


UNITS = ("fanoutd.service", "fanoutd.socket", "fanoutd-unix.socket")


def call(port, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def start_daemon(test, *args, env=None):
    """fanoutd with these command-line arguments (no config file) on a free port, healthy;
    stopped when the test ends."""
    d = Daemon(None, args, env=env)
    test.addCleanup(d.stop)
    return d.start()


# sh sets LISTEN_PID to its own pid, which exec hands to fanoutd, as systemd does.
ACTIVATE = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh"]


class ActivatedDaemon(Daemon):
    """fanoutd started as systemd starts a socket-activated service: the listening socket
    `sock` becomes its fd 3 with LISTEN_FDS=1 and LISTEN_PID set. Its --listen names a
    port nobody uses (self.unused): it must be ignored. Healthy: /healthz answered on
    the passed socket (TCP or unix)."""

    def __init__(self, sock):
        fd = sock.fileno()

        def to_fd3():
            os.dup2(fd, 3)              # a no-op when fd is 3 already,
            os.set_inheritable(3, True)  # so clear close-on-exec explicitly

        super().__init__(None, prefix=ACTIVATE,
                         popen={"preexec_fn": to_fd3, "close_fds": False})
        self.unused = self.port
        self.family, self.address = sock.family, sock.getsockname()

    def request(self, method, target, body=None, timeout=10):
        """(status, body bytes) of one request over the passed socket."""
        if self.family != socket.AF_UNIX:
            status, _, data = call(self.address[1], method, target, body, timeout=timeout)
            return status, data
        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(timeout)
        conn.sock.connect(self.address)
        try:
            conn.request(method, target, body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def healthy(self):
        try:
            return self.request("GET", "/healthz", timeout=1)[0] == 200
        except OSError:
            return False


def make(*args, timeout=120):
    return subprocess.run(["make", "-s", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# --------------------------------------------------------------------------
# unit files, install, package, documentation
# --------------------------------------------------------------------------

class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fanoutd-install-")
        cls.dest = os.path.join(cls.tmp, "root")
        done = make("install", f"DESTDIR={cls.dest}", "PREFIX=/usr",
                    "UNITDIR=/lib/systemd/system")  # the default follows the release
        if done.returncode != 0:
            raise AssertionError(f"make install failed: {done.stdout}{done.stderr}")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, rel):
        return os.path.join(self.dest, rel.lstrip("/"))

    def test_install_puts_every_file_in_place(self):
        for rel in ("/usr/bin/fanoutd", "/lib/systemd/system/fanoutd.service",
                    "/lib/systemd/system/fanoutd.socket",
                    "/lib/systemd/system/fanoutd-unix.socket", "/etc/fanoutd/fanoutd.conf",
                    "/usr/share/man/man8/fanoutd.8", "/usr/share/man/man5/fanoutd.conf.5",
                    "/usr/share/doc/fanoutd/README.md", "/usr/share/doc/fanoutd/API.md"):
            self.assertTrue(os.path.isfile(self.path(rel)), rel)
        self.assertTrue(os.access(self.path("/usr/bin/fanoutd"), os.X_OK))
        with open(self.path("/lib/systemd/system/fanoutd.service")) as f:
            self.assertIn("ExecStart=/usr/bin/fanoutd --config /etc/fanoutd/fanoutd.conf", f.read(),
                          "PREFIX is honoured in the unit")

    def test_install_keeps_existing_config_and_uninstall_leaves_it(self):
        conf = self.path("/etc/fanoutd/fanoutd.conf")
        with open(conf, "a") as f:
            f.write("# local change\n")
        self.assertEqual(make("install", f"DESTDIR={self.dest}", "PREFIX=/usr",
                              "UNITDIR=/lib/systemd/system").returncode, 0)
        with open(conf) as f:
            self.assertIn("# local change", f.read(), "make install overwrote the configuration")
        dest2 = os.path.join(self.tmp, "root2")
        self.assertEqual(make("install", f"DESTDIR={dest2}", "PREFIX=/usr",
                              "UNITDIR=/lib/systemd/system").returncode, 0)
        self.assertEqual(make("uninstall", f"DESTDIR={dest2}", "PREFIX=/usr",
                              "UNITDIR=/lib/systemd/system").returncode, 0)
        self.assertFalse(os.path.exists(os.path.join(dest2, "usr/bin/fanoutd")))
        self.assertFalse(os.path.exists(os.path.join(dest2, "lib/systemd/system/fanoutd.service")))
        self.assertFalse(os.path.exists(os.path.join(dest2,
                                                     "lib/systemd/system/fanoutd-unix.socket")))
        self.assertTrue(os.path.exists(os.path.join(dest2, "etc/fanoutd/fanoutd.conf")))

    def unit_copy(self):
        """The installed units with ExecStart aimed at the installed binary."""
        units = os.path.join(self.tmp, "units")
        os.makedirs(units, exist_ok=True)
        for name in UNITS:
            with open(self.path(f"/lib/systemd/system/{name}")) as f:
                text = f.read().replace("/usr/bin/fanoutd", self.path("/usr/bin/fanoutd"))
            with open(os.path.join(units, name), "w") as f:
                f.write(text)
        return units

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
    def test_units_verify_clean(self):
        units = self.unit_copy()
        env = dict(os.environ, MANPATH=self.path("/usr/share/man"))
        done = subprocess.run(["systemd-analyze", "verify"] +
                              [os.path.join(units, name) for name in UNITS],
                              capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertEqual(done.stdout.strip() + done.stderr.strip(), "", "verify printed warnings")

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
    def test_security_exposure_at_most_2(self):
        done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                               os.path.join(self.unit_copy(), "fanoutd.service")],
                              capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for fanoutd.service: ([0-9.]+)", done.stdout)
        self.assertIsNotNone(m, done.stdout[-500:] + done.stderr)
        self.assertLessEqual(float(m.group(1)), 2.0)

    def test_unit_essentials(self):
        with open(os.path.join(ROOT, "systemd/fanoutd.service")) as f:
            unit = f.read()
        for line in ("Type=notify", "ExecReload=", "Restart=on-failure", "WatchdogSec=",
                     "DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
                     "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                     "SystemCallFilter=@system-service", "SystemCallArchitectures=native",
                     "MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=\n", "UMask=0077",
                     "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "LimitNOFILE="):
            self.assertIn(line, unit)
        stop = int(re.search(r"TimeoutStopSec=(\d+)", unit).group(1))
        self.assertGreater(stop * 1000, 10000, "TimeoutStopSec must exceed shutdown_grace_ms")
        nofile = int(re.search(r"LimitNOFILE=(\d+)", unit).group(1))
        self.assertGreater(nofile, 1024 + 64, "room for max_connections plus workers")
        with open(os.path.join(ROOT, "systemd/fanoutd-unix.socket")) as f:
            sock = f.read()
        for line in ("ListenStream=/run/", "SocketMode=0660\n", "Service=fanoutd.service\n",
                     "Conflicts=fanoutd.socket\n", "RemoveOnStop=yes\n"):
            self.assertIn(line, sock)


class DebTest(unittest.TestCase):
    @unittest.skipUnless(shutil.which("dpkg-buildpackage") and shutil.which("dh"),
                         "dpkg-dev or debhelper not installed (scripts/setup deps installs them)")
    def test_deb_installs_every_file(self):
        tmp = tempfile.mkdtemp(prefix="fanoutd-deb-")
        self.addCleanup(shutil.rmtree, tmp, True)
        done = subprocess.run([os.path.join(ROOT, "scripts/mkdeb"), os.path.join(tmp, "build"), tmp],
                              cwd=ROOT, capture_output=True, text=True, timeout=180)
        self.assertEqual(done.returncode, 0, done.stderr)
        deb = done.stdout.strip().splitlines()[-1]
        depends = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True,
                                 text=True).stdout
        for pkg in ("libmicrohttpd12", "libcurl4", "libjansson4"):
            self.assertIn(pkg, depends, "Depends names the Debian runtime packages")
        self.assertNotIn("-dev", depends)
        scratch = os.path.join(tmp, "scratch")
        self.assertEqual(subprocess.run(["dpkg", "-x", deb, scratch]).returncode, 0)
        # Units where systemd's pkg-config file says: /lib on Debian 12, /usr/lib on 13.
        units = "usr/lib/systemd/system"
        if not os.path.isdir(os.path.join(scratch, units)):
            units = "lib/systemd/system"
        for rel in ("usr/bin/fanoutd", units + "/fanoutd.service", units + "/fanoutd.socket",
                    units + "/fanoutd-unix.socket", "etc/fanoutd/fanoutd.conf",
                    "usr/share/doc/fanoutd/copyright", "usr/share/doc/fanoutd/changelog.gz",
                    "usr/share/man/man8/fanoutd.8.gz", "usr/share/man/man5/fanoutd.conf.5.gz"):
            self.assertTrue(os.path.isfile(os.path.join(scratch, rel)), rel)
        with open(os.path.join(scratch, units, "fanoutd.service")) as f:
            self.assertIn("ExecStart=/usr/bin/fanoutd ", f.read())
        with open(os.path.join(scratch, "usr/bin/fanoutd"), "rb") as f:
            self.assertNotIn(b".symtab", f.read(), "the packaged binary is stripped")
        scripts = os.path.join(tmp, "control")
        self.assertEqual(subprocess.run(["dpkg-deb", "-e", deb, scripts]).returncode, 0)
        with open(os.path.join(scripts, "postinst")) as f:
            self.assertRegex(f.read(), r"_dh_action=restart", "the postinst restarts on upgrade")
        with open(os.path.join(scripts, "prerm")) as f:
            self.assertIn("stop 'fanoutd.service'", f.read(), "the prerm stops on removal")
        maint = subprocess.run(["dpkg-deb", "-f", deb, "Maintainer"], capture_output=True,
                               text=True).stdout
        self.assertNotIn("localhost", maint)
        conffiles = subprocess.run(["dpkg-deb", "--info", deb, "conffiles"], capture_output=True,
                                   text=True).stdout
        self.assertIn("/etc/fanoutd/fanoutd.conf", conffiles)
        ver = subprocess.run([os.path.join(scratch, "usr/bin/fanoutd"), "--version"],
                             capture_output=True, text=True)
        self.assertEqual(ver.returncode, 0)


class SetupRunTest(unittest.TestCase):
    """The README's first command, `scripts/setup run [ARGS...]`: it builds (installing
    nothing that is already there) and starts fanoutd with config/fanoutd.conf and the
    arguments given, which serves /healthz and a plain-list batch."""

    def test_setup_run_passes_its_arguments(self):
        up = Upstream().start()
        self.addCleanup(up.stop)
        port = free_port()
        proc = subprocess.Popen([os.path.join(ROOT, "scripts/setup"), "run", "--listen",
                                 f"127.0.0.1:{port}", "--workers", "8"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)

        def stop():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
        self.addCleanup(stop)

        def healthy():
            try:
                return call(port, "GET", "/healthz", timeout=1)[0] == 200
            except OSError:
                return proc.poll() is not None
        wait_for(healthy, 120, "scripts/setup run to serve /healthz")
        self.assertIsNone(proc.poll(), "scripts/setup run exited")
        urls = f"{up.url('/json', v='a')}\n{up.url('/json', v='b')}\n"
        status, _, body = call(port, "POST", "/batch", urls)
        self.assertEqual(status, 200, body[:300])
        doc = json.loads(body)
        self.assertEqual([r["body"] for r in doc["results"]], [{"v": "a"}, {"v": "b"}])
        os.killpg(proc.pid, signal.SIGTERM)
        log = proc.communicate(timeout=15)[0].decode(errors="replace")
        self.assertEqual(proc.returncode, 0, log[-2000:])
        self.assertIn(f"listening on 127.0.0.1:{port} with 8 workers", log)


class DocsTest(unittest.TestCase):
    def test_every_key_in_man_page_and_sample_config(self):
        dump = subprocess.run(daemon_argv() + ["--check-config"], capture_output=True, text=True)
        keys = [line.split("=")[0].strip() for line in dump.stdout.splitlines() if "=" in line]
        self.assertEqual(sorted(keys), sorted(KEYS))
        with open(os.path.join(ROOT, "man/fanoutd.conf.5")) as f:
            man5 = f.read()
        with open(os.path.join(ROOT, "man/fanoutd.8")) as f:
            man8 = f.read().replace("\\-", "-")
        with open(os.path.join(ROOT, "config/fanoutd.conf")) as f:
            sample = f.read()
        for key in keys:
            self.assertRegex(man5, rf"\.B {key}\n", f"{key} missing from fanoutd.conf(5)")
            self.assertRegex(sample, rf"(?m)^{key} =", f"{key} missing from config/fanoutd.conf")
            self.assertIn("--" + key.replace("_", "-"), man8, f"--{key} missing from fanoutd(8)")
        for flag in ("--config", "--check-config", "--help", "--version"):
            self.assertIn(flag, man8)

    # The batch error codes of the v1 contract; codes written as literals in
    # the sources' answers are added to these, so a new one cannot go undocumented.
    BATCH_CODES = ("bad_request", "unauthorized", "not_found", "method_not_allowed",
                   "too_large", "overloaded", "draining")

    def test_api_reference_names_every_error_code(self):
        with open(os.path.join(ROOT, "docs/API.md")) as f:
            api = f.read()
        with open(os.path.join(ROOT, "include/result.h")) as f:
            item_codes = re.findall(r'ACTION\(ERR_\w+,\s*"([a-z_]+)"\)', f.read())
        self.assertGreaterEqual(len(item_codes), 11, "ITEM_ERRORS not found in include/result.h")
        batch_codes = set(self.BATCH_CODES)
        for name in os.listdir(os.path.join(ROOT, "src")):
            if name.endswith(".c"):
                with open(os.path.join(ROOT, "src", name)) as f:
                    batch_codes.update(re.findall(r'MHD_HTTP_(?!HEADER_)[A-Z_]+,\s*"([a-z_]+)"',
                                                  f.read()))
        for code in item_codes + sorted(batch_codes):
            self.assertTrue(f"`{code}`" in api, f"error code {code} missing from docs/API.md")
        for doc in ("README.md", "man/fanoutd.8", "man/fanoutd.conf.5"):
            with open(os.path.join(ROOT, doc)) as f:
                self.assertTrue("API.md" in f.read(), f"{doc} does not point to docs/API.md")


# --------------------------------------------------------------------------
# the running service
# --------------------------------------------------------------------------

class MetricsTest(unittest.TestCase):
    def test_metrics_names_and_promtool(self):
        d = start_daemon(self)
        call(d.port, "POST", "/batch", b'["http://127.0.0.1:1/"]', {"Content-Type": "application/json"})
        status, headers, body = call(d.port, "GET", "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        for name, kind in types.items():
            self.assertTrue(name.startswith("fanoutd_"), name)
            if kind == "counter":
                self.assertTrue(name.endswith("_total"), name)
            if kind == "histogram":
                self.assertTrue(name.endswith("_seconds"), name)
        for name in ("fanoutd_batch_duration_seconds", "fanoutd_upstream_duration_seconds"):
            self.assertEqual(types.get(name), "histogram")
        for name in ("fanoutd_batches_in_flight", "fanoutd_workers_busy", "fanoutd_queue_depth",
                     "fanoutd_build_info"):
            self.assertEqual(types.get(name), "gauge")
        self.assertRegex(text, r'fanoutd_build_info\{version="\d+\.\d+\.\d+"\} 1')
        self.assertRegex(text, r'fanoutd_item_errors_total\{code="connect_failed"\} 1\b')
        if not shutil.which("promtool"):
            self.skipTest("promtool (Debian prometheus) not installed")
        done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        self.assertEqual(done.returncode, 0, (done.stdout + done.stderr).decode())


class NotifyTest(unittest.TestCase):
    def notify_socket(self):
        tmp = tempfile.mkdtemp(prefix="fanoutd-notify-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.05)
        self.addCleanup(sock.close)
        self.messages = []   # (time, text)
        self.sock = sock
        return path

    def pump(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except socket.timeout:
                pass

    def wait_message(self, pred, timeout, what, since=None):
        """Time of the first message matching pred that arrived after `since`
        (default: now), waiting up to timeout for it."""
        since = time.monotonic() if since is None else since
        end = time.monotonic() + timeout
        while True:
            for t, m in self.messages:
                if t >= since and pred(m):
                    return t
            if time.monotonic() >= end:
                break
            self.pump(0.05)
        raise AssertionError(f"no {what} in {[m for _, m in self.messages][-10:]}")

    def watchdogs(self, since, until):
        return [t for t, m in self.messages if "WATCHDOG=1" in m.split("\n") and since <= t <= until]

    def test_ready_status_reload_watchdog_stopping(self):
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_socket(), WATCHDOG_USEC="200000")
        d = start_daemon(self, "--workers", "4", env=env)
        self.wait_message(lambda m: "READY=1" in m.split("\n"), 10, "READY=1", since=0)
        self.assertTrue(d.healthy(), "READY=1 is sent once fanoutd listens")
        self.wait_message(lambda m: m.startswith("STATUS=") and "in flight" in m and "queued" in m,
                          5, "STATUS= with in-flight batches and queue depth", since=0)
        t0 = time.monotonic()
        self.pump(1.0)
        self.assertGreaterEqual(len(self.watchdogs(t0, time.monotonic())), 3,
                                "WATCHDOG=1 about every WATCHDOG_USEC/2 while idle")
        sent = time.monotonic()
        d.proc.send_signal(signal.SIGHUP)
        t_reload = self.wait_message(lambda m: "RELOADING=1" in m.split("\n"), 5, "RELOADING=1",
                                     since=sent)
        reload_msg = [m for t, m in self.messages if t == t_reload][0]
        self.assertRegex(reload_msg, r"MONOTONIC_USEC=\d+")
        t_ready = self.wait_message(lambda m: "READY=1" in m.split("\n"), 5,
                                    "READY=1 after the reload", since=t_reload)
        self.assertGreaterEqual(t_ready, t_reload)
        sent = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        self.wait_message(lambda m: "STOPPING=1" in m.split("\n"), 5, "STOPPING=1", since=sent)
        self.assertEqual(d.proc.wait(10), 0)

    def test_no_watchdog_while_the_pool_is_wedged(self):
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_socket(), WATCHDOG_USEC="200000",
                   FANOUTD_TEST_WEDGE_WORKERS="1")
        d = start_daemon(self, "--workers", "2", "--max-timeout-ms", "300", env=env)
        self.wait_message(lambda m: "READY=1" in m.split("\n"), 10, "READY=1", since=0)
        t0 = time.monotonic()
        self.pump(0.8)
        self.assertGreaterEqual(len(self.watchdogs(t0, time.monotonic())), 2,
                                "fed while no work waits")
        closed = free_port()
        status, _, body = call(d.port, "POST", "/batch", json.dumps([f"http://127.0.0.1:{closed}/"]),
                               {"Content-Type": "application/json"})
        self.assertEqual(status, 200, "the wedged batch still ends at its deadline")
        self.assertEqual(json.loads(body)["results"][0]["error"]["code"], "deadline_exceeded")
        # max_timeout_ms (300) + 2 s without a worker asking for work: wedged.
        self.pump(4.5)  # a second more than needed: messages are stamped when read
        now = time.monotonic()
        self.assertEqual(self.watchdogs(now - 1.0, now), [], "WATCHDOG=1 while the pool is wedged")
        self.assertIn("no longer feeding the systemd watchdog", d.log())

    def test_no_notify_socket_is_a_no_op(self):
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        d = start_daemon(self, env=env)
        d.proc.send_signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(5), 0)


class SocketActivationTest(unittest.TestCase):
    def test_serves_on_the_passed_socket(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        d = ActivatedDaemon(sock)
        self.addCleanup(d.stop)
        try:
            d.start()
        finally:
            sock.close()
        # `listen` names a port nobody uses: it must be ignored.
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", d.unused), timeout=1).close()
        # Its own (passed) address is still refused as a destination.
        status, _, body = call(port, "POST", "/batch", f"http://127.0.0.1:{port}/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["results"][0]["error"]["code"], "blocked_destination")


class UnixSocketActivationTest(unittest.TestCase):
    def test_serves_on_a_passed_unix_socket_and_leaves_its_file(self):
        tmp = tempfile.mkdtemp(prefix="fanoutd-svc-unix-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "fanoutd.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(64)
        d = ActivatedDaemon(sock)
        self.addCleanup(d.stop)
        try:
            d.start()
        finally:
            sock.close()
        self.assertIsNone(d.proc.poll(), d.log())
        status, body = d.request("POST", "/batch", "http://127.0.0.1:1/")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["results"][0]["error"]["code"], "connect_failed")
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait(10), 0)
        # the file belongs to whoever passed the socket (systemd): fanoutd leaves it
        self.assertTrue(os.path.exists(path))


class RequestIdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream().start()
        cls.url = cls.up.url("/echo")

    @classmethod
    def tearDownClass(cls):
        cls.up.stop()

    def start(self, *args):
        return start_daemon(self, *args)

    @staticmethod
    def sent(body):
        """The request headers the upstream's /echo got for the first item, by lower-case name."""
        return {k.lower(): v for k, v in json.loads(body)["results"][0]["body"]["headers"]}

    def test_client_id_echoed_and_forwarded_when_listed(self):
        d = self.start("--forward-headers", "X-Request-Id")
        status, headers, body = call(d.port, "POST", "/batch", self.url,
                                     {"X-Request-Id": "abc-123"})
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("X-Request-Id"), "abc-123")
        self.assertEqual(self.sent(body).get("x-request-id"), "abc-123")

    def test_generated_when_absent_or_unsafe_and_forwarded(self):
        d = self.start("--forward-headers", "x-request-id")
        for sent in ({}, {"X-Request-Id": "bad id with spaces"}, {"X-Request-Id": "x" * 300}):
            status, headers, body = call(d.port, "POST", "/batch", self.url, sent)
            rid = headers.get("X-Request-Id", "")
            self.assertRegex(rid, r"^[0-9a-f]{32}$", f"generated id for {sent}")
            self.assertEqual(self.sent(body).get("x-request-id"), rid)

    def test_not_forwarded_unless_listed_and_echoed_on_errors(self):
        d = self.start()
        status, headers, body = call(d.port, "POST", "/batch", self.url, {"X-Request-Id": "r-1"})
        self.assertEqual(headers.get("X-Request-Id"), "r-1")
        self.assertNotIn("x-request-id", self.sent(body))
        status, headers, _ = call(d.port, "POST", "/batch", b"[", {"Content-Type": "application/json",
                                                                    "X-Request-Id": "r-2"})
        self.assertEqual((status, headers.get("X-Request-Id")), (400, "r-2"))

    def test_access_log_line_per_batch(self):
        d = self.start()
        closed = free_port()
        body = json.dumps([self.url, f"http://127.0.0.1:{closed}/"])
        status, _, resp = call(d.port, "POST", "/batch", body,
                               {"Content-Type": "application/json", "X-Request-Id": "log-me"})
        self.assertEqual(status, 200)
        call(d.port, "POST", "/batch", b"[]", {"Content-Type": "application/json",
                                                "X-Request-Id": "refused-one"})
        wait_for(lambda: "request_id=refused-one" in d.log(), 5, "access line of the 400")
        line = [l for l in d.log().splitlines() if "request_id=log-me" in l][0]
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        self.assertTrue(fields["client"].startswith("127.0.0.1:"), line)
        self.assertEqual((fields["status"], fields["items"], fields["ok"], fields["failed"]),
                         ("200", "2", "1", "1"), line)
        self.assertEqual(int(fields["bytes"]), len(resp), line)
        self.assertGreaterEqual(float(fields["duration_ms"]), 0)
        refused = [l for l in d.log().splitlines() if "request_id=refused-one" in l][0]
        self.assertIn("status=400", refused)


# --------------------------------------------------------------------------

def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    if len(sys.argv) > 1:
        suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:], sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors)
    skipped = len(result.skipped)
    print(f"{result.testsRun - failed - skipped} passed, {failed} failed, {skipped} skipped")
    sys.exit(0 if failed == 0 and result.testsRun > 0 else 1)


if __name__ == "__main__":
    main()
