"""Command line and configuration file: --check-config, --version, --help, overrides, errors."""

import os
import re
import socket
import subprocess
import unittest

from harness import CONFIG_KEYS, DaemonCase, daemon_argv, free_port, new_tag, run_cli, tmpdir

DEFAULTS = {
    "listen": "127.0.0.1:8080", "workers": "64", "queue_capacity": "10000", "max_batch": "1000",
    "max_body_bytes": "1048576", "max_response_bytes": "8388608", "max_answer_bytes": "67108864",
    "default_timeout_ms": "10000",
    "max_timeout_ms": "60000", "batch_timeout_ms": "30000", "max_redirects": "5", "allow": "",
    "deny": "169.254.0.0/16, fe80::/10, 0.0.0.0/8, 224.0.0.0/4, ff00::/8, 255.255.255.255/32",
    "forward_headers": "", "auth_token": "", "per_host_limit": "0", "shutdown_grace_ms": "10000",
    "max_connections": "1024", "client_timeout_ms": "30000", "log_level": "info",
}
LISTS = {"allow", "deny", "forward_headers"}


def as_list(value):
    return [p.strip() for p in value.split(",") if p.strip()]


def write(text, name="fanoutd.conf"):
    path = os.path.join(tmpdir(), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def names_line(stderr, path, line):
    base = re.escape(os.path.basename(path))
    return re.search(rf"{base}\s*(?::|,?\s*line\s*){line}\b", stderr) is not None


class CliConfigTest(unittest.TestCase):

    def dump(self, *args):
        done = run_cli(*args, "--check-config")
        self.assertEqual(done.returncode, 0, f"--check-config failed: {done.stderr}")
        values = {}
        for line in done.stdout.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = re.fullmatch(r"([a-z_]+) =(?: (.*))?", line.rstrip())
            self.assertIsNotNone(m, f"not a `key = value` line: {line!r}")
            self.assertNotIn(m.group(1), values, f"{m.group(1)} printed twice")
            values[m.group(1)] = m.group(2) or ""
        self.assertEqual(sorted(values), sorted(CONFIG_KEYS), f"keys printed:\n{done.stdout}")
        return values

    def assert_values(self, got, expected):
        for key, value in expected.items():
            with self.subTest(key=key):
                if key in LISTS:
                    self.assertEqual([x.lower() for x in as_list(got[key])],
                                     [x.lower() for x in as_list(value)], key)
                else:
                    self.assertEqual(got[key], value, key)

    def test_defaults_without_config(self):
        got = self.dump()
        expected = dict(DEFAULTS)
        deny = expected.pop("deny")
        self.assert_values(got, expected)
        self.assertEqual(sorted(as_list(got["deny"])), sorted(as_list(deny)))
        for key in ("allow", "forward_headers", "auth_token"):
            self.assertEqual(got[key], "", f"an empty {key} prints as `{key} =`")

    def test_every_key_from_file(self):
        values = {"listen": "127.0.0.1:18081", "workers": "7", "queue_capacity": "77", "max_batch": "70",
                  "max_body_bytes": "70000", "max_response_bytes": "700000", "max_answer_bytes": "7000000",
                  "default_timeout_ms": "1700",
                  "max_timeout_ms": "17000", "batch_timeout_ms": "7000", "max_redirects": "0",
                  "allow": "127.0.0.5/32, ::1/128", "deny": "10.0.0.0/8, fd00::/8",
                  "forward_headers": "X-Request-Id, Accept-Language", "auth_token": "tok-7",
                  "per_host_limit": "3", "shutdown_grace_ms": "700", "max_connections": "70",
                  "client_timeout_ms": "7700", "log_level": "debug"}
        path = write("\n".join(f"{k} = {v}" for k, v in values.items()) + "\n")
        got = self.dump("--config", path)
        expected = dict(values, auth_token="***")  # a literal token is never printed
        deny = expected.pop("deny")
        self.assert_values(got, expected)
        self.assertTrue(set(as_list(deny)) <= set(as_list(got["deny"])), got["deny"])

    def test_file_syntax(self):
        path = write("# comment\n\n   # indented comment\nworkers = 5 # trailing comment\n"
                     "max_batch=9\n  log_level   =   warn  \nforward_headers = X-A,X-B ,  X-C\n"
                     "auth_token = abc#def\n")
        got = self.dump("--config", path)
        self.assertEqual(got["workers"], "5")
        self.assertEqual(got["log_level"], "warn")
        self.assertEqual(as_list(got["forward_headers"]), ["X-A", "X-B", "X-C"])
        self.assertEqual(got["auth_token"], "***")

    def test_cli_overrides_every_kind(self):
        path = write("max_response_bytes = 100\nforward_headers = X-File\nlog_level = error\n"
                     "per_host_limit = 1\n")
        got = self.dump("--config", path, "--max-response-bytes", "4321", "--forward-headers", "X-Cli, X-Two",
                        "--log-level", "debug", "--per-host-limit", "0", "--client-timeout-ms", "1234",
                        "--auth-token", "cli-token", "--deny", "10.1.0.0/16")
        self.assertEqual(got["max_response_bytes"], "4321")
        self.assertEqual(as_list(got["forward_headers"]), ["X-Cli", "X-Two"])
        self.assertEqual(got["log_level"], "debug")
        self.assertEqual(got["per_host_limit"], "0")
        self.assertEqual(got["client_timeout_ms"], "1234")
        self.assertEqual(got["auth_token"], "***")
        self.assertIn("10.1.0.0/16", as_list(got["deny"]))

    def test_auth_token_from_file(self):
        """auth_token = @/path: the token is read from the file (one trailing newline
        dropped) and never printed; --check-config shows where it comes from."""
        tok = write("file-token-42\n", name="token")
        for args in (("--auth-token", "@" + tok), ("--config", write(f"auth_token = @{tok}\n"))):
            with self.subTest(args=args):
                done = run_cli(*args, "--check-config", timeout=10)
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertIn(f"auth_token = @{tok}\n", done.stdout)
                self.assertNotIn("file-token-42", done.stdout + done.stderr)
        done = run_cli("--auth-token", "literal-token-7", "--check-config", timeout=10)
        self.assertNotIn("literal-token-7", done.stdout + done.stderr)

    def test_check_config_reads_back(self):
        """--check-config's output is a configuration file: with the token read from a file
        (printed as its @/path) it loads back to the same configuration; a secret printed as
        *** (a token given itself, every inject_header value) is refused when loaded back,
        with the reason, never taken for the secret."""
        tok = write("file-token-42\n", name="token")
        key = write("key-from-file\n", name="key")
        done = run_cli("--config", write(f"workers = 7\nauth_token = @{tok}\n"), "--check-config",
                       timeout=10)
        self.assertEqual(done.returncode, 0, done.stderr)
        again = run_cli("--config", write(done.stdout, name="dump.conf"), "--check-config", timeout=10)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(again.stdout, done.stdout, "the dump did not load back to itself")
        self.assertNotIn("file-token-42", done.stdout + again.stdout)
        for line in ("auth_token = literal-7",
                     "inject_header = http://127.0.0.1:9/v1/ X-Api-Key: literal-8",
                     f"inject_header = http://127.0.0.1:9/v1/ X-Api-Key: @{key}"):
            with self.subTest(line=line):
                done = run_cli("--config", write(line + "\n"), "--check-config", timeout=10)
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertIn(": ***" if "inject" in line else "auth_token = ***", done.stdout)
                self.assertNotIn("key-from-file", done.stdout)
                back = run_cli("--config", write(done.stdout, name="masked.conf"), "--check-config",
                               timeout=10)
                self.assertEqual(back.returncode, 2, back.stdout)
                self.assertIn("masked.conf", back.stderr)
                self.assertIn("in place of a secret", back.stderr)
        done = run_cli("--auth-token", "***", "--check-config", timeout=10)
        self.assertEqual(done.returncode, 2, done.stdout)
        self.assertIn("in place of a secret", done.stderr)

    def test_auth_token_file_errors(self):
        missing = os.path.join(tmpdir(), "no-token")
        empty = write("", name="empty-token")
        newline = write("\n", name="newline-token")
        spaced = write("two words\n", name="spaced-token")
        big = write("x" * 5000, name="big-token")
        for what, path in (("missing", missing), ("empty", empty), ("only a newline", newline),
                           ("with a space", spaced), ("too long", big)):
            for args in (("--auth-token", "@" + path),
                         ("--config", write(f"workers = 4\nauth_token = @{path}\n"))):
                with self.subTest(what=what, args=args[0]):
                    done = run_cli(*args, "--check-config", timeout=10)
                    self.assertEqual(done.returncode, 2, f"{what}: {done.stdout!r}")
                    self.assertIn(path, done.stderr, f"{what}: the error must name the file")
                    if args[0] == "--config":
                        self.assertTrue(names_line(done.stderr, args[1], 2), done.stderr)

    def test_file_errors_name_file_and_line(self):
        bad = ["no_such_key = 1", "workers = abc", "workers = -1", "max_batch = 12abc",
               "max_body_bytes = 99999999999999999999999999", "deny = 10.0.0.0/33", "allow = 10.0.0.256/8",
               "deny = nonsense", "listen = 127.0.0.1:70000", "listen = 127.0.0.1", "log_level = loud",
               "default_timeout_ms = 1.5", "this line has no equals sign", "max_redirects = five",
               "per_host_limit = -2"]
        for line in bad:
            with self.subTest(line=line):
                path = write(f"# line 1\nworkers = 4\n{line}\nmax_batch = 10\n")
                done = run_cli("--config", path, "--check-config")
                self.assertEqual(done.returncode, 2, f"stdout={done.stdout!r} stderr={done.stderr!r}")
                self.assertTrue(names_line(done.stderr, path, 3), f"stderr: {done.stderr!r}")

    def test_forward_headers_refuses_hop_by_hop_and_framing(self):
        """A client's Content-Length forwarded on a GET without a body made the upstream
        wait for 27 bytes: hop-by-hop and framing names (RFC 9110 7.6.1) are refused."""
        for name in ("Content-Length", "transfer-encoding", "Host", "Connection", "Expect", "TE",
                     "Upgrade", "Keep-Alive", "Proxy-Connection", "CDN-Loop", "Trailer"):
            with self.subTest(name=name):
                done = run_cli("--forward-headers", f"X-Ok, {name}", "--check-config", timeout=10)
                self.assertEqual(done.returncode, 2, done.stdout)
                self.assertIn(f"'{name}'", done.stderr, "the error must name the header")
                path = write(f"workers = 4\nforward_headers = X-Ok,{name}\n")
                done = run_cli("--config", path, "--check-config", timeout=10)
                self.assertEqual(done.returncode, 2, done.stdout)
                self.assertTrue(names_line(done.stderr, path, 2), done.stderr)
        for ok in ("X-TE", "Content-Type", "X-Host", "Hostname"):
            with self.subTest(ok=ok):
                self.assertEqual(run_cli("--forward-headers", ok, "--check-config",
                                         timeout=10).returncode, 0)

    def test_bad_file_prevents_start(self):
        path = write("workers = 4\nmax_batch = many\n")
        port = free_port()
        done = subprocess.run(daemon_argv() + ["--config", path, "--listen", f"127.0.0.1:{port}"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        self.assertEqual(done.returncode, 2)
        self.assertTrue(names_line(done.stderr, path, 2), done.stderr)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def test_missing_config_file(self):
        path = os.path.join(tmpdir(), "does-not-exist.conf")
        for extra in ((), ("--check-config",)):
            with self.subTest(extra=extra):
                done = run_cli("--config", path, "--listen", f"127.0.0.1:{free_port()}", *extra, timeout=10)
                self.assertEqual(done.returncode, 2)
                self.assertIn("does-not-exist.conf", done.stderr)

    def test_bad_command_lines(self):
        for args in (["--no-such-flag"], ["--no-such-flag", "1"], ["--workers", "abc"], ["--workers"],
                     ["--listen", "nowhere"], ["--log-level", "chatty"], ["--deny", "1.2.3.4/99"]):
            with self.subTest(args=args):
                done = run_cli(*args, "--check-config", timeout=10)
                self.assertEqual(done.returncode, 2, f"{args}: stdout={done.stdout!r}")
                self.assertTrue(done.stderr.strip(), "exit 2 needs a message")

    def test_errors_spell_flags_as_flags(self):
        """An error about a flag names it as it is typed: --listen-mode, not --listen_mode."""
        for args, flag in ((["--listen-mode", "999"], "--listen-mode"),
                           (["--auth-token", "a b"], "--auth-token"),
                           (["--max-batch", "x"], "--max-batch")):
            with self.subTest(flag=flag):
                done = run_cli(*args, "--check-config", timeout=10)
                self.assertEqual(done.returncode, 2)
                self.assertIn(flag + ":", done.stderr)
                self.assertNotIn(flag.replace("-", "_")[2:], done.stderr)

    def test_version(self):
        done = run_cli("--version")
        self.assertEqual(done.returncode, 0)
        self.assertRegex(done.stdout, r"\d+\.\d+")
        self.assertEqual(len(done.stdout.strip().splitlines()), 1, done.stdout)

    def test_help(self):
        done = run_cli("--help")
        self.assertEqual(done.returncode, 0)
        for word in ("--config", "--check-config", "--version"):
            self.assertIn(word, done.stdout)


class CliOverrideRuntimeTest(DaemonCase):
    PER_TEST = True

    def test_ipv6_listen(self):
        """listen = [::1]:PORT serves on IPv6 loopback; a batch aimed back at it is blocked."""
        d = self.start_daemon(host="::1")
        self.assertEqual(self.get("/healthz").status, 200)
        doc = self.batch([self.url("/json", v="v6"), f"http://[::1]:{d.port}/healthz"], total=2)
        self.assertTrue(doc["results"][0]["ok"])
        self.assert_item_error(doc["results"][1], "blocked_destination")

    def test_cli_values_used_at_runtime(self):
        self.start_daemon(extra_args=["--max-batch", "2", "--forward-headers", "X-Cli"], max_batch=10,
                          forward_headers="X-File")
        self.assert_error(self.post([self.url("/json")] * 3), 413, "too_large")
        tag = new_tag()
        self.batch([self.url("/echo", tag=tag)], total=1, headers={"X-Cli": "1", "X-File": "2"})
        (req,) = self.up.requests(tag)
        self.assertEqual((req.header("X-Cli"), req.header("X-File")), (["1"], []))


if __name__ == "__main__":
    unittest.main()
