"""Shared plumbing for fanoutd's integration tests: the daemon process, HTTP calls,
strict JSON, polling, and the DaemonCase base class.

The daemon command comes from $FANOUTD (split with shlex, arguments allowed), by
default <repo>/fanoutd where <repo> is two directories above this file. Each daemon
gets its own temp directory with its config file and its output log (stdout and
stderr), listens on 127.0.0.1:<free port>, is waited for with GET /healthz and is
stopped with SIGTERM (SIGKILL after a bound).
"""

import atexit
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from upstream import Upstream  # noqa: E402

ERROR_CODES = {"invalid_url", "blocked_destination", "dns_failure", "connect_failed", "timeout",
               "deadline_exceeded", "too_large", "too_many_redirects", "tls_error",
               "upstream_error", "cancelled",
               "circuit_open"}
ERROR_CODES |= {"failed_dependency", "select_failed"}  # composition (issue 12)
CONFIG_KEYS = ["listen", "workers", "queue_capacity", "max_batch", "max_body_bytes",
               "max_response_bytes", "max_answer_bytes", "default_timeout_ms", "max_timeout_ms",
               "batch_timeout_ms",
               "max_redirects", "allow", "deny", "forward_headers", "auth_token", "per_host_limit",
               "shutdown_grace_ms", "max_connections", "client_timeout_ms", "log_level",
               "loop_token", "listen_mode", "reuse_port",
               "coalesce", "cache_ttl_ms", "cache_max_bytes", "inject_header", "sensitive_headers",
               "retries", "max_retries", "retry_backoff_ms", "retry_backoff_max_ms",
               "breaker_failures", "breaker_open_ms", "per_host_rate",
               "stream_heartbeat_ms"]

_tmpdirs = []
_shared = {}
_shared_lock = threading.Lock()


def daemon_argv():
    spec = os.environ.get("FANOUTD", "").strip()
    if spec:
        argv = shlex.split(spec)
    else:
        argv = [os.path.join(REPO, "fanoutd")]
    if not os.path.isabs(argv[0]) and os.sep in argv[0]:
        argv[0] = os.path.join(REPO, argv[0])
    return argv


def tmpdir():
    path = tempfile.mkdtemp(prefix="fanoutd-it-")
    _tmpdirs.append(path)
    return path


def cleanup_tmpdirs():
    """Stops the shared upstreams and removes every temp directory made so far."""
    with _shared_lock:
        while _shared:
            _shared.popitem()[1].stop()
    while _tmpdirs:
        shutil.rmtree(_tmpdirs.pop(), ignore_errors=True)


atexit.register(cleanup_tmpdirs)


def shared_upstream(host="127.0.0.1", tls=False):
    """One upstream per (host, tls) for the whole process, started on first use."""
    with _shared_lock:
        key = (host, tls)
        if key not in _shared:
            _shared[key] = Upstream(host, tls=tls).start()
        return _shared[key]


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago. Another process can take it before a daemon
    binds it: start such a daemon again on a fresh port when lost_port() says so."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


BIND_ATTEMPTS = 3   # starts on a fresh free_port() before a lost port is a failure


def lost_port(output):
    """True if fanoutd's output says it could not bind its listen address (then it exits
    at once): with a port from free_port(), another process took it in between."""
    return "cannot listen on" in output


def closed_port():
    """A loopback port with (very probably) nothing listening."""
    return free_port()


def new_tag():
    return uuid.uuid4().hex[:10]


# -- strict JSON -------------------------------------------------------------

def _pairs(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys {keys}")
    return dict(pairs)


def _constant(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(data):
    """bytes -> value; UTF-8 only, no duplicate keys, no NaN/Infinity."""
    return json.loads(data.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_constant)


# -- polling -------------------------------------------------------------------

def wait_for(cond, timeout, what, interval=0.02):
    """Polls cond() until it is truthy (returns its value) or fails after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(interval)


def stays(cond, duration, interval=0.05):
    """True if cond() holds at every poll for `duration` seconds."""
    end = time.monotonic() + duration
    while time.monotonic() < end:
        if not cond():
            return False
        time.sleep(interval)
    return bool(cond())


# -- HTTP --------------------------------------------------------------------------

class Reply:
    def __init__(self, status, headers, body, elapsed):
        self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed

    def header(self, name):
        return self.headers.get(name)

    def json(self):
        return strict_json(self.body)

    def __repr__(self):
        return f"<HTTP {self.status} after {self.elapsed:.2f}s: {self.body[:400]!r}>"


def request(port, method, path, body=None, headers=(), timeout=30, host="127.0.0.1", conn=None):
    """One HTTP request; on a fresh connection unless conn (an HTTPConnection) is given."""
    headers = list(headers.items() if isinstance(headers, dict) else headers)
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    start = time.monotonic()
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # an early 413/401 may close before reading everything
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.headers, data, time.monotonic() - start)
    finally:
        if own:
            conn.close()


def raw_exchange(port, data, timeout=5, host="127.0.0.1"):
    """Sends raw bytes, returns everything read until the peer closes or goes quiet
    for `timeout` seconds after the first byte (or timeout with nothing)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if _complete_response(out):
                break
        return out


def _complete_response(data):
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        return len(rest) >= int(m.group(1))
    if b"chunked" in head.lower():
        return rest.endswith(b"0\r\n\r\n")
    return False


def raw_status(data):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


def raw_body(data):
    return data.partition(b"\r\n\r\n")[2]


class Background(threading.Thread):
    """fn() in a thread; result(timeout) returns its value or raises its exception."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.value, self.exc = fn, None, None
        self.start()

    def run(self):
        try:
            self.value = self.fn()
        except BaseException as e:
            self.exc = e

    def result(self, timeout):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"background call still running after {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self.value


# -- the daemon -------------------------------------------------------------------

def config_text(config):
    lines = ["# written by fanoutd integration tests"]
    for k, v in config.items():
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


class Daemon:
    """fanoutd in its own temp directory: the one launcher of the tests.

    config: dict written as the config file passed with --config (None: no file, no
    --config). extra_args: more command-line arguments. env: its environment (None:
    ours). prefix: argv put before the daemon's command (a wrapper). listen=False: no
    --listen HOST:PORT (the config or the arguments say where it listens); then the
    subclass says what healthy() means. binary: a command other than $FANOUTD's.
    popen: more keyword arguments for subprocess.Popen (preexec_fn, close_fds: socket
    activation hands a listening socket over as fd 3).
    Its stdin is /dev/null; stdout and stderr both go to log_path, appended over restarts.
    """

    def __init__(self, config, extra_args=(), env=None, host="127.0.0.1", prefix=(),
                 listen=True, binary=None, popen=None):
        self.host = host
        self.dir = tmpdir()
        self.config_path = os.path.join(self.dir, "fanoutd.conf")
        self.log_path = os.path.join(self.dir, "fanoutd.log")
        self.has_config = config is not None
        if self.has_config:
            self.write_config(config)
        self.extra_args = list(extra_args)
        self.env = env
        self.prefix = list(prefix)
        self.listen = listen
        self.binary = binary
        self.popen = dict(popen or {})
        self.port = free_port(host)
        self.proc = None
        self._log = None

    def write_config(self, config):
        self.write_raw(config_text(config))

    def write_raw(self, text):
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    @property
    def argv(self):
        argv = list(self.binary) if self.binary else daemon_argv()
        if self.has_config:
            argv += ["--config", self.config_path]
        if self.listen:
            argv += ["--listen", f"{self.listen_host}:{self.port}"]
        return self.prefix + argv + self.extra_args

    @property
    def listen_host(self):
        return f"[{self.host}]" if ":" in self.host else self.host

    def spawn(self):
        """Starts the process and returns at once (no health check): for tests that
        watch the start itself. start() is the usual way."""
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=self.env, **self.popen)
        return self

    def healthy(self):
        """True if it answers GET /healthz with 200 now."""
        try:
            return request(self.port, "GET", "/healthz", timeout=1, host=self.host).status == 200
        except OSError:
            return False

    def start(self, timeout=10):
        # self.port comes from free_port(): if another process took it meanwhile, fanoutd
        # exits saying so, and it is started again on a fresh port (BIND_ATTEMPTS tries in
        # all). Any other early exit fails at once.
        attempts = BIND_ATTEMPTS if self.listen else 1
        for attempt in range(1, attempts + 1):
            logged = len(self.log())
            if self._attempt(timeout):
                return self
            if attempt == attempts or not lost_port(self.log()[logged:]):
                raise RuntimeError(f"fanoutd exited with {self.proc.returncode} before it was "
                                   f"healthy: {shlex.join(self.argv)}\n{self.tail()}")
            self.port = free_port(self.host)

    def _attempt(self, timeout):
        """Starts fanoutd; True once it is healthy, False if it exits first."""
        self.spawn()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fanoutd not healthy within {timeout} s\n{self.tail()}")

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, bound=8):
        """SIGTERM, SIGKILL after `bound` seconds; returns the exit status (None if never run)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(bound) is None:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc is not None else None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=30):
        return "\n".join(self.log().splitlines()[-n:]) or "(no output)"


def run_cli(*args, timeout=15, env=None):
    return subprocess.run(daemon_argv() + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, errors="replace", timeout=timeout, env=env)


# -- base class ------------------------------------------------------------------------

class DaemonCase(unittest.TestCase):
    """One daemon per class, built from CONFIG, started lazily by the first test's setUp
    (so a daemon that does not start fails each test with the reason). PER_TEST = True:
    no class daemon; tests call start_daemon()."""

    CONFIG = {}
    PER_TEST = False
    EXTRA_ARGS = ()
    daemon = None
    _class_daemon = None
    _class_error = None

    @classmethod
    def setUpClass(cls):
        cls.up = shared_upstream()
        cls._class_daemon, cls._class_error = None, None

    @classmethod
    def tearDownClass(cls):
        if cls._class_daemon is not None:
            cls._class_daemon.stop()
            cls._class_daemon = None

    def setUp(self):
        cls = type(self)
        self.daemon = None
        if cls.PER_TEST:
            return
        if cls._class_error is not None:
            raise RuntimeError(f"the class daemon did not start: {cls._class_error}")
        if cls._class_daemon is None or not cls._class_daemon.alive:
            try:
                cls._class_daemon = Daemon(self.config(), cls.EXTRA_ARGS).start()
            except Exception as e:
                cls._class_error = e
                raise
        self.daemon = cls._class_daemon

    def config(self, **overrides):
        base = {"shutdown_grace_ms": 1000}
        base.update(self.CONFIG)
        base.update(overrides)
        return base

    def start_daemon(self, extra_args=(), env=None, host="127.0.0.1", **overrides):
        d = Daemon(self.config(**overrides), extra_args, env, host)
        self.daemon = d
        self.addCleanup(d.stop)
        return d.start()

    def run(self, result=None):
        before = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            d = self.daemon or type(self)._class_daemon
            if d is not None:
                sys.stderr.write(f"\n--- fanoutd output tail for {self.id()} ---\n{d.tail()}\n"
                                 f"--- end ---\n")
        return out

    # -- requests --------------------------------------------------------------
    def url(self, path, **q):
        return self.up.url(path, **q)

    def post(self, payload, ctype="application/json", headers=(), timeout=30, path="/batch",
             port=None, conn=None):
        if isinstance(payload, (bytes, bytearray)):
            body = bytes(payload)
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            body = json.dumps(payload).encode()  # lists, objects, and JSON scalars too
        headers = list(headers.items() if isinstance(headers, dict) else headers)
        if ctype is not None:
            headers.append(("Content-Type", ctype))
        return request(port or self.daemon.port, "POST", path, body, headers, timeout, conn=conn,
                       host=self.daemon.host)

    def get(self, path, headers=(), timeout=10):
        return request(self.daemon.port, "GET", path, None, headers, timeout, host=self.daemon.host)

    def batch(self, payload, total=None, merge=None, **kw):
        """POSTs a batch that must be answered 200 with a consistent document; returns it."""
        resp = self.post(payload, **kw)
        self.assertEqual(resp.status, 200, f"batch refused: {resp!r}")
        try:
            doc = resp.json()
        except (ValueError, UnicodeDecodeError) as e:
            self.fail(f"reply is not strict UTF-8 JSON ({e}): {resp.body[:300]!r}")
        if merge is None and isinstance(payload, dict):
            merge = payload.get("merge", "none")
        self.check_doc(doc, resp, total, merge or "none")
        doc["_resp"] = resp
        return doc

    def check_doc(self, doc, resp, total, merge):
        self.assertIsInstance(doc, dict)
        s = doc.get("summary")
        self.assertIsInstance(s, dict, f"no summary: {doc}")
        for k in ("total", "ok", "failed"):
            self.assertIs(type(s.get(k)), int, f"summary.{k} must be an integer: {s}")
        self.assertIn(type(s.get("duration_ms")), (int, float), f"summary.duration_ms: {s}")
        self.assertGreaterEqual(s["duration_ms"], 0)
        self.assertEqual(s["ok"] + s["failed"], s["total"])
        if total is not None:
            self.assertEqual(s["total"], total)
        self.assertEqual((resp.header("X-Batch-Complete") or "").strip(),
                         "true" if s["failed"] == 0 else "false",
                         f"X-Batch-Complete with summary {s}")
        if merge == "none":
            self.assertEqual(set(doc) - {"_resp"}, {"results", "summary"}, "top-level keys")
            self.assertEqual(len(doc["results"]), s["total"])
            self.assertEqual(sum(r.get("ok") is True for r in doc["results"]), s["ok"])
            for r in doc["results"]:
                self.check_result(r)
        else:
            self.assertEqual(set(doc) - {"_resp"}, {"data", "errors", "summary"}, "top-level keys")
            self.assertIsInstance(doc["data"], dict)
            self.assertIsInstance(doc["errors"], dict)
            self.assertEqual(len(doc["errors"]), s["failed"])
            for k, r in doc["errors"].items():
                self.assertEqual(r.get("id"), k, "errors are keyed by id")
                self.assertNotIn("body", r, "errors entries have no body")
                self.assertIs(r.get("ok"), False)
                self.check_result(r)
            if merge == "bodies":
                self.assertEqual(len(doc["data"]), s["ok"])

    def check_result(self, r):
        for k in ("id", "url", "ok", "status", "duration_ms"):
            self.assertIn(k, r, f"result lacks {k}: {r}")
        self.assertIs(type(r["id"]), str)
        self.assertIs(type(r["url"]), str)
        self.assertIs(type(r["ok"]), bool)
        self.assertIn(type(r["duration_ms"]), (int, float))
        self.assertGreaterEqual(r["duration_ms"], 0)
        self.assertIn(type(r["status"]), (int, type(None)))
        if "error" in r:
            e = r["error"]
            self.assertIsInstance(e, dict, f"error must be an object: {r}")
            self.assertIn(e.get("code"), ERROR_CODES, f"unknown error code: {r}")
            self.assertIs(type(e.get("message")), str)
            self.assertTrue(e["message"].strip(), "error message is empty")
            self.assertFalse(r["ok"])
            self.assertNotIn("body", r, f"a failed fetch has no body: {r}")
        else:
            self.assertIsNotNone(r["status"], f"no status and no error: {r}")
            self.assertIn("content_type", r, f"a response arrived: content_type expected: {r}")
            self.assertIn(type(r["content_type"]), (str, type(None)))
            if "body" in r or "body_encoding" in r:
                self.assertIn(r.get("body_encoding"), ("json", "text", "base64", None))
                if r.get("body_encoding") in ("text", "base64"):
                    self.assertIs(type(r["body"]), str)
                if r.get("body_encoding") is None:
                    self.assertIsNone(r.get("body"), f"body without body_encoding: {r}")
        if r["ok"]:
            self.assertTrue(200 <= r["status"] < 300, f"ok needs 2xx: {r}")
            self.assertNotIn("error", r)
        elif r["status"] is not None and "error" not in r:
            self.assertFalse(200 <= r["status"] < 300, f"a 2xx without error must be ok: {r}")

    def assert_error(self, resp, status, code=None):
        self.assertEqual(resp.status, status, f"expected {status}: {resp!r}")
        try:
            doc = resp.json()
        except (ValueError, UnicodeDecodeError):
            self.fail(f"error reply is not JSON: {resp!r}")
        self.assertIsInstance(doc.get("error"), dict, f"error shape: {doc}")
        self.assertIs(type(doc["error"].get("message")), str, f"error.message: {doc}")
        if code is not None:
            self.assertEqual(doc["error"].get("code"), code, f"error code: {doc}")
        return doc

    def item(self, doc, item_id):
        for r in doc["results"]:
            if r["id"] == item_id:
                return r
        self.fail(f"no result {item_id!r} in {doc['results']}")

    def assert_item_error(self, r, code, status="any"):
        self.assertFalse(r["ok"], r)
        self.assertIn("error", r, f"expected error {code}: {r}")
        if isinstance(code, (set, tuple, list)):
            self.assertIn(r["error"]["code"], code, r)
        else:
            self.assertEqual(r["error"]["code"], code, r)
        if status != "any":
            self.assertEqual(r["status"], status, r)
