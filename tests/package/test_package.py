#!/usr/bin/env python3
"""The Debian package, installed and run as a user would: built with dpkg-buildpackage
(scripts/mkdeb, lintian with no error), installed with apt, the installed
/usr/bin/fanoutd --check-config, the service started by the package's own maintainer
scripts, a batch answered, an upgrade over itself that restarts the running service and
keeps an edited configuration, and a removal that stops it.

This installs a system package, so it runs only in a throwaway tree (.ci/debian13 runs
it in the debootstrap tree): FANOUTD_PACKAGE_TEST=1, as root, on a machine where systemd
is not running. There the maintainer scripts find tests/package/systemctl, a stand-in that
runs the unit's own ExecStart, as dpkg would have them find systemctl on a booted machine.

The last line is "N passed, N failed" (one per check)."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STATE = "/run/fanoutd-package-test"
CONF = "/etc/fanoutd/fanoutd.conf"

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {name}")
    else:
        failed += 1
        print(f"FAIL: {name}{': ' + str(detail) if detail else ''}")
    return ok


def run(*argv, env=None, timeout=600):
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def get(port, path, data=None, timeout=5):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_healthy(port, bound=10):
    end = time.monotonic() + bound
    while time.monotonic() < end:
        try:
            if get(port, "/healthz", timeout=1)[0] == 200:
                return True
        except OSError:
            time.sleep(0.1)
    return False


def service_pid():
    try:
        with open(os.path.join(STATE, "pid")) as f:
            pid = int(f.read())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def batch_answered(port, up_port):
    urls = "".join(f"http://127.0.0.1:{up_port}/item{i}\n" for i in range(3)).encode()
    try:
        status, body = get(port, "/batch", data=urls)
        doc = json.loads(body)
    except (OSError, ValueError) as e:
        return False, e
    ok = status == 200 and [r["body"]["path"] for r in doc["results"]] == ["/item0", "/item1", "/item2"]
    return ok, body[:300]


def main():
    if os.environ.get("FANOUTD_PACKAGE_TEST") != "1" or os.geteuid() != 0 \
            or os.path.isdir("/run/systemd/system"):
        print("package test: runs only in a throwaway tree (FANOUTD_PACKAGE_TEST=1, root, "
              "no running systemd); .ci/debian13 runs it")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    out = tempfile.mkdtemp(prefix="fanoutd-pkg-")
    up = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    up_port = up.server_address[1]
    shutil.rmtree(STATE, ignore_errors=True)
    env = dict(os.environ, PATH=HERE + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               DEBIAN_FRONTEND="noninteractive")
    try:
        steps(out, env, up_port)
    finally:
        run(os.path.join(HERE, "systemctl"), "stop", "fanoutd.service", env=env)
        run("dpkg", "--purge", "fanoutd", env=env)
        if os.path.isdir("/run/systemd/system"):
            os.rmdir("/run/systemd/system")
        shutil.rmtree(out, ignore_errors=True)
        up.shutdown()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def steps(out, env, up_port):
    built = run(os.path.join(REPO, "scripts/mkdeb"), os.path.join(out, "build"), out)
    if not check("the package builds with dpkg-buildpackage and lintian reports no error",
                 built.returncode == 0, built.stderr[-2000:]):
        return
    deb = built.stdout.strip().splitlines()[-1]
    lint = run("lintian", "--fail-on", "error", deb)
    check("lintian: no error on the .deb", lint.returncode == 0, lint.stdout + lint.stderr)
    info = run("dpkg-deb", "-f", deb, "Depends").stdout
    check("Depends names the runtime libraries", "libmicrohttpd" in info and "libcurl" in info, info)

    inst = run("apt-get", "install", "-y", "-qq", "--no-install-recommends", os.path.abspath(deb),
               env=env)
    if not check("apt installs the package", inst.returncode == 0, inst.stdout[-1500:] + inst.stderr[-1500:]):
        return
    with open("/usr/bin/fanoutd", "rb") as f:
        check("the installed binary is stripped (no .symtab)", b".symtab" not in f.read())
    cc = run("/usr/bin/fanoutd", "--check-config", "--config", CONF)
    check("/usr/bin/fanoutd --check-config exits 0", cc.returncode == 0, cc.stderr)
    check("--check-config prints every key", "listen = 127.0.0.1:8080" in cc.stdout, cc.stdout[:300])

    # The machine "boots": from here the maintainer scripts see /run/systemd/system (where
    # they act on systemd) and find the stand-in first on their PATH. The service is
    # started as systemd would, from the installed unit's ExecStart, on a free port set in
    # the configuration file as an operator would.
    os.makedirs("/run/systemd/system")
    port = free_port()
    with open(CONF) as f:
        conf = f.read()
    edited = re.sub(r"(?m)^listen = .*$", f"listen = 127.0.0.1:{port}", conf)
    check("the configuration names listen", edited != conf)
    with open(CONF, "w") as f:
        f.write(edited)
    calls = os.path.join(STATE, "calls")
    run(os.path.join(HERE, "systemctl"), "start", "fanoutd.service", env=env)
    check("the service starts from the installed unit and answers /healthz", wait_healthy(port),
          open(os.path.join(STATE, "daemon.log")).read()[-1000:] if os.path.exists(STATE) else "")
    ok, detail = batch_answered(port, up_port)
    check("the installed service answers a plain-list batch", ok, detail)
    before = service_pid()

    # Upgrade over itself: dpkg runs prerm upgrade, then postinst configure OLD-VERSION, whose
    # dh_installsystemd part restarts a running service.
    open(calls, "w").close()
    again = run("dpkg", "-i", deb, env=env)
    check("dpkg -i over the installed package succeeds", again.returncode == 0, again.stderr[-1500:])
    log = open(calls).read()
    check("the postinst restarts the service on upgrade", "restart fanoutd.service" in log, log)
    check("after the upgrade a new process serves", wait_healthy(port) and service_pid() not in (None, before),
          f"{before} -> {service_pid()}")
    with open(CONF) as f:
        check("the edited configuration is kept on upgrade", f"listen = 127.0.0.1:{port}" in f.read())
    ok, detail = batch_answered(port, up_port)
    check("the upgraded service answers a batch", ok, detail)

    # Removal: the prerm stops the service; the configuration stays until purge.
    open(calls, "w").close()
    gone = run("dpkg", "-r", "fanoutd", env=env)
    check("dpkg -r succeeds", gone.returncode == 0, gone.stderr[-1500:])
    log = open(calls).read()
    check("the prerm stops the service on removal", "stop fanoutd.service" in log, log)
    check("no fanoutd process is left", service_pid() is None)
    check("the binary is removed, the configuration kept",
          not os.path.exists("/usr/bin/fanoutd") and os.path.exists(CONF))
    purge = run("dpkg", "--purge", "fanoutd", env=env)
    check("dpkg --purge removes the configuration", purge.returncode == 0 and not os.path.exists(CONF),
          purge.stderr[-800:])


if __name__ == "__main__":
    sys.exit(main())
