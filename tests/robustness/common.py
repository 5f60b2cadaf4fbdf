"""Shared plumbing for fanoutd's robustness tests.

Builds on tests/integration/harness.py (the real daemon, a real upstream on loopback,
HTTP helpers, polling) without changing it: RobustCase is a DaemonCase whose daemons
are always started per test and whose every daemon is checked, when the test ends,
never to have died of a signal (and to stop within a bound).
"""

import json
import os
import signal
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(os.path.dirname(HERE), "integration")
for _p in (HERE, INTEGRATION):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import harness  # noqa: E402
from harness import (Background, Daemon, DaemonCase, request, raw_status, raw_body,  # noqa: E402,F401
                     strict_json, wait_for, new_tag, closed_port)

SIGNAMES = {s.value: s.name for s in signal.Signals}


def mhd_version():
    """The libmicrohttpd the daemon runs on, as a tuple ((0, 9, 75) on Debian 12, (1, 0, 1)
    on Debian 13), asked of the shared library itself."""
    import ctypes
    lib = ctypes.CDLL("libmicrohttpd.so.12")
    lib.MHD_get_version.restype = ctypes.c_char_p
    return tuple(int(x) for x in lib.MHD_get_version().decode().split(".")[:3])


# 1.0 parses strictly itself (client discipline level 1, see src/http_strict.c) and answers
# what it refuses with its own HTML 400 before fanoutd sees the request.
MHD_STRICT = mhd_version() >= (0, 9, 77)


def describe_rc(rc):
    if rc is None:
        return "still running"
    if rc < 0:
        return f"killed by signal {SIGNAMES.get(-rc, -rc)} ({rc})"
    return f"exit status {rc}"


def proc_status(pid, key):
    """A /proc/PID/status value in kB (VmRSS, VmHWM...) or the raw text; None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    v = line.split(":", 1)[1].strip()
                    return int(v.split()[0]) if v.endswith("kB") else v
    except OSError:
        return None
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def client_conn_count(pid, port):
    """Client connections process pid holds on its listening port: its sockets that
    /proc/net/tcp{,6} shows with local port `port` in any state but LISTEN: not moved by
    the workers' own sockets (upstream connections, curl's wake-up pairs), which come and
    go with fetches."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if local_port == port and fields[3] != "0A" and fields[9] in inodes:
                        n += 1
        except OSError:
            pass
    return n


def metric(text, name, labels=None):
    """The value of one sample in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        base, _, lab = key.partition("{")
        if base != name:
            continue
        if labels is not None:
            want = ",".join(f'{k}="{v}"' for k, v in labels.items())
            if lab.rstrip("}") != want:
                continue
        try:
            return float(value)
        except ValueError:
            return None
    return None


class RobustDaemon(Daemon):
    """A Daemon that remembers how its process ended and can be checked for it."""

    def stop(self, bound=8):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(bound) is None:
                self.hung_on_stop = True
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    hung_on_stop = False

    @property
    def pid(self):
        return self.proc.pid


class RobustCase(DaemonCase):
    PER_TEST = True

    def start_daemon(self, extra_args=(), env=None, host="127.0.0.1", **overrides):
        d = RobustDaemon(self.config(**overrides), extra_args, env, host)
        self.daemon = d
        # cleanups run last-in first-out: stop first, then check how it ended
        self.addCleanup(self._check_ended_cleanly, d)
        self.addCleanup(d.stop)
        return d.start()

    def _check_ended_cleanly(self, d):
        if d.proc is None:
            return
        rc = d.proc.returncode
        self.assertFalse(d.hung_on_stop, f"fanoutd did not exit within 8 s of SIGTERM "
                                         f"(killed): {d.tail()}")
        self.assertIsNotNone(rc)
        self.assertGreaterEqual(rc, 0, f"fanoutd {describe_rc(rc)}:\n{d.tail()}")
        self.assertEqual(rc, 0, f"fanoutd {describe_rc(rc)} after SIGTERM:\n{d.tail()}")

    def assert_alive(self, d=None):
        d = d or self.daemon
        rc = d.proc.poll()
        self.assertIsNone(rc, f"fanoutd is gone: {describe_rc(rc)}\n{d.tail()}")

    def assert_healthy(self, d=None):
        d = d or self.daemon
        self.assert_alive(d)
        r = request(d.port, "GET", "/healthz", timeout=5)
        self.assertEqual(r.status, 200, f"/healthz: {r!r}")
        self.assertEqual(r.json(), {"status": "ok"})

    def metrics(self):
        r = request(self.daemon.port, "GET", "/metrics", timeout=5)
        self.assertEqual(r.status, 200)
        return r.body.decode()

    # -- batches with sibling items ------------------------------------------------
    def siblings(self, tag, n=3):
        """n items on the good upstream, ids s0..s{n-1}, each answering {"v": "sN-tag"}."""
        return [{"id": f"s{i}", "url": self.up.url("/json", v=f"s{i}-{tag}", tag=tag)}
                for i in range(n)]

    def check_siblings(self, doc, tag, n=3):
        for i in range(n):
            r = self.item(doc, f"s{i}")
            self.assertTrue(r["ok"], f"sibling s{i} not ok: {r}")
            self.assertEqual(r["status"], 200, r)
            self.assertEqual(r.get("body"), {"v": f"s{i}-{tag}"}, f"sibling s{i} body: {r}")
            self.assertEqual(r.get("body_encoding"), "json", r)

    def check_accounted(self, doc, items):
        """Every requested item has exactly one result, in request order."""
        ids = [r["id"] for r in doc["results"]]
        self.assertEqual(ids, [it["id"] for it in items], "every item accounted for, in order")
        self.assertEqual(doc["summary"]["total"], len(items))
        for r, it in zip(doc["results"], items):
            self.assertEqual(r["url"], it["url"])


def raw_read_all(sock, timeout):
    """Reads until EOF or reset; returns (data, how) with how in eof/reset/timeout."""
    sock.settimeout(0.2)
    end = time.monotonic() + timeout
    data = b""
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk
    return data, "timeout"


def json_body(data):
    try:
        return json.loads(raw_body(data).decode())
    except (ValueError, UnicodeDecodeError):
        return None
