"""A local HTTP/1.1 upstream for fanoutd's integration tests (Python stdlib only).

Upstream() runs a keep-alive ThreadingHTTPServer on an ephemeral loopback port in
daemon threads of the test process, so a test can look at what fanoutd sent it.
Every endpoint takes an optional `tag` query parameter; the bookkeeping is kept
per tag so that tests sharing one upstream never see each other's traffic.

Endpoints (query parameters):
  /json      v, ms, ct          {"v": V} after ms milliseconds, Content-Type ct
                                (default application/json)
  /doc       doc, ct, ms        the text `doc` verbatim (default application/json)
  /delay     ms                 {"delayed_ms": ms} after ms milliseconds
  /status    code, ms           status `code` with {"status": code} (no body on 204/304),
                                after ms ms
  /big       bytes, chunked=1, status   `bytes` x "a", Content-Length or chunked
                                (byte=B, ct: `bytes` copies of byte value B instead,
                                Content-Type ct, default text/plain)
                                framing (framing=close: neither, the body ends at
                                close), status `status` (default 200)
  /drip      ms, chunks, cl=0   headers at once, then one byte every ms ms; notes an
                                abort when the client goes away before the end
  /short     bytes, send        announces `bytes`, sends `send` bytes, closes
  /reset                        closes the connection without any response
  /redirect  n, to, code, ms    a chain of n redirects ending at `to`
                                (default /json?v=end); `to` may be any URL;
                                loop=1 redirects to itself; each after ms ms;
                                Location in UTF-8 (latin1=1: ISO-8859-1 bytes);
                                again=KEY: a second request with that KEY is
                                answered as /echo (a Location back to itself)
  /info      code, then, ct     a 1xx status line (default 100) with its empty
                                line, then: close (default), reset, or final (a
                                200 {"final": true} with Content-Type ct)
  /flaky     key                the first request for key is read whole and the
                                connection closed without an answer; later ones
                                get {"count": n}
  /failing   key, fail, status, mode, retry_after, ra_date, ms
                                (after ms milliseconds) hits 1..fail (default 1) of key fail: status
                                (default 503) with {"attempt": n, "status": s} and
                                Retry-After retry_after (or an HTTP date ra_date
                                seconds ahead), or with mode=reset a close without
                                an answer; later hits get 200 {"attempt": n}
  /echo                         {"method", "path", "headers", "body_b64"}
  /lengths   lens, body         `body` with one Content-Length header per
                                `;`-separated entry of lens (each sent as it is)
  /count     key                {"count": hits of key so far}
  /raw       status, ct, body | b64   arbitrary bytes; no Content-Type unless ct
  /gzip      doc, pad           gzip-encoded body (Content-Encoding: gzip) of the
                                JSON `doc`, or of `pad` zero bytes when pad is given
  /cacheable key, cc, cookie, status, ms, pad
                                {"n": hits of key so far, "pad": "aaa..."} after
                                ms ms, status `status` (default 200), with
                                `Cache-Control: cc` when cc is given, `Set-Cookie: cookie`
                                when cookie is (pad: that many "a")
  /numarray  bytes, key         application/json {"KEY":[1,1,...,1]} (and a newline when
                                that evens the count) of exactly `bytes` bytes (key
                                default "a"; bytes at least the length of {"KEY":[1]})

Bookkeeping: requests(tag), max_inflight(tag), connections(tag) (distinct client
connections that carried requests with that tag), aborted(tag), count(key),
raw_lines() (every request line, also unparseable ones) and handshakes() (TLS
handshakes attempted, TLS mode only). Upstream(record=False) keeps no
requests() or raw_lines() history, for long runs (the soak).

TLS mode: Upstream(tls=True) serves https with a self-signed certificate made at
start-up with the openssl command; tls_available() says whether that can work.
"""

import base64
import gzip
import itertools
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


def tls_available():
    """(True, "") when a self-signed certificate can be made, else (False, reason)."""
    if shutil.which("openssl") is None:
        return False, "the openssl command is not installed (needed to make a test certificate)"
    return True, ""


def make_self_signed(directory, cn="127.0.0.1"):
    """Writes cert.pem and key.pem (self-signed, 1 day) into directory; returns their paths."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={cn}", "-keyout", key, "-out", cert],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return cert, key


class Seen:
    """One request as the upstream received it."""

    def __init__(self, method, target, headers, conn_id):
        parts = urlsplit(target)
        self.method = method
        self.target = target
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.headers = headers  # [(name, value)] in received order
        self.conn_id = conn_id
        self.body = b""
        self.when = time.monotonic()
        self.done = False   # no longer counted as in flight (Upstream._done)

    @property
    def tag(self):
        return self.query.get("tag")

    def header(self, name):
        """Values of header `name` (case-insensitive), in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Upstream:
    def __init__(self, host="127.0.0.1", tls=False, record=True):
        """record=False: requests() and raw_lines() stay empty (no history kept, for
        long runs such as the soak); counts and in-flight figures are still kept."""
        self.host = host
        self.tls = tls
        self.record = record
        self._lock = threading.Lock()
        self._seen = []
        self._raw = []
        self._counts = {}
        self._inflight = {}
        self._max_inflight = {}
        self._aborted = {}
        self._handshakes = 0
        self._conn_ids = itertools.count(1)
        self._server = None
        self._tmp = None
        self.context = None

    # -- lifecycle ----------------------------------------------------------
    def start(self):
        if self.tls:
            ok, why = tls_available()
            if not ok:
                raise RuntimeError(why)
            self._tmp = tempfile.mkdtemp(prefix="fanoutd-it-tls-")
            cert, key = make_self_signed(self._tmp, self.host)
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(cert, key)
        cls = _Server6 if ":" in self.host else _Server
        self._server = cls((self.host, 0), _Handler)
        self._server.upstream = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"upstream-{self.host}", daemon=True).start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def port(self):
        return self._server.server_address[1]

    def url(self, path, host=None, scheme=None, port=None, **query):
        """Absolute URL of path on this upstream; query values are urlencoded."""
        if host is None:
            host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = scheme or ("https" if self.tls else "http")
        q = ("?" + urlencode(query)) if query else ""
        return f"{scheme}://{host}:{port or self.port}{path}{q}"

    # -- bookkeeping --------------------------------------------------------
    def requests(self, tag=None, path=None):
        with self._lock:
            seen = list(self._seen)
        return [r for r in seen if (tag is None or r.tag == tag) and (path is None or r.path == path)]

    def max_inflight(self, tag):
        with self._lock:
            return self._max_inflight.get(tag, 0)

    def connections(self, tag):
        """Distinct client connections that carried requests with this tag."""
        return len({r.conn_id for r in self.requests(tag)})

    def aborted(self, tag):
        with self._lock:
            return self._aborted.get(tag, 0)

    def count(self, key):
        with self._lock:
            return self._counts.get(key, 0)

    def raw_lines(self):
        with self._lock:
            return list(self._raw)

    def handshakes(self):
        with self._lock:
            return self._handshakes

    # -- called by the handler ----------------------------------------------
    def _record(self, seen):
        with self._lock:
            if self.record:
                self._seen.append(seen)
            n = self._inflight.get(seen.tag, 0) + 1
            self._inflight[seen.tag] = n
            self._max_inflight[seen.tag] = max(n, self._max_inflight.get(seen.tag, 0))

    def _done(self, seen):
        """The request stops counting as in flight (once): called just before its
        complete response is written, so that a client that starts its next request
        as soon as it has the answer is never counted twice."""
        with self._lock:
            if not seen.done:
                seen.done = True
                self._inflight[seen.tag] -= 1

    def _hit(self, key):
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]

    def _abort(self, tag):
        with self._lock:
            self._aborted[tag] = self._aborted.get(tag, 0) + 1

    def _raw_line(self, line):
        with self._lock:
            if self.record:
                self._raw.append(line)

    def _handshake(self):
        with self._lock:
            self._handshakes += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 512

    def finish_request(self, request, client_address):
        up = self.upstream
        request.settimeout(30)
        if up.context is not None:
            up._handshake()
            try:
                request = up.context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return  # the client refused our certificate: the point of the TLS tests
        handler = self.RequestHandlerClass.__new__(self.RequestHandlerClass)
        handler.conn_id = next(up._conn_ids)
        handler.__init__(request, client_address, self)

    def handle_error(self, request, client_address):
        pass  # clients that go away are part of the tests


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as nginx, Go and Node set on their connections: http.server writes the
    # headers and the body separately, and with Nagle on, the body of an answer on a
    # reused connection waits for the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True
    server_version = "fanoutd-it-upstream/1"

    def log_message(self, format, *args):
        pass

    def parse_request(self):
        self.server.upstream._raw_line(self.raw_requestline)
        return super().parse_request()

    def _route(self):
        up = self.server.upstream
        seen = Seen(self.command, self.path, list(self.headers.items()), self.conn_id)
        seen.body = self._read_body()
        up._record(seen)
        self._seen = seen
        try:
            handler = ROUTES.get(seen.path)
            if handler is None:
                self._reply(404, {"error": "no such route", "path": seen.path})
            else:
                handler(self, seen.query, seen)
        except OSError:
            self.close_connection = True
        finally:
            up._done(seen)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _route

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _reply(self, status, payload=b"", ctype="application/json", extra=()):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
        elif isinstance(payload, str):
            payload = payload.encode()
        bodyless = status in (204, 304) or status < 200
        if getattr(self, "_seen", None) is not None:
            self.server.upstream._done(self._seen)
        self.send_response(status)
        if ctype is not None and not bodyless:
            self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        if not bodyless:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and not bodyless:
            self.wfile.write(payload)

    @staticmethod
    def _wait(q):
        ms = int(q.get("ms") or 0)
        if ms > 0:
            time.sleep(ms / 1000.0)
        return ms

    # -- endpoints ----------------------------------------------------------
    def ep_json(self, q, seen):
        self._wait(q)
        self._reply(200, {"v": q.get("v", "")}, q.get("ct", "application/json"))

    def ep_doc(self, q, seen):
        self._wait(q)
        self._reply(200, q.get("doc", "{}"), q.get("ct", "application/json"))

    def ep_delay(self, q, seen):
        self._reply(200, {"delayed_ms": self._wait(q)})

    def ep_status(self, q, seen):
        self._wait(q)
        code = int(q.get("code") or 200)
        self._reply(code, {"status": code})

    def ep_big(self, q, seen):
        n, status = int(q.get("bytes") or 0), int(q.get("status") or 200)
        if q.get("byte") is not None:  # a body of n copies of one byte, Content-Type ct
            fill = bytes([int(q["byte"])]) * n
            self._reply(status, fill, q.get("ct", "text/plain"))
            return
        if q.get("framing") == "close":  # no Content-Length, no chunking: the body ends at close
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"a" * n)
            self.close_connection = True
            return
        if q.get("chunked") != "1":
            self._reply(status, b"a" * n, "text/plain")
            return
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        while n > 0:
            size = min(n, 8192)
            self.wfile.write(b"%x\r\n%s\r\n" % (size, b"a" * size))
            n -= size
        self.wfile.write(b"0\r\n\r\n")

    def ep_drip(self, q, seen):
        ms, chunks = int(q.get("ms") or 100), int(q.get("chunks") or 20)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if q.get("cl") == "0":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(chunks))
        self.end_headers()
        self.wfile.flush()
        try:
            for _ in range(chunks):
                time.sleep(ms / 1000.0)
                self.wfile.write(b"1\r\nd\r\n" if q.get("cl") == "0" else b"d")
                self.wfile.flush()
            if q.get("cl") == "0":
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            self.server.upstream._abort(seen.tag)
            self.close_connection = True

    def ep_short(self, q, seen):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(int(q.get("bytes") or 100)))
        self.end_headers()
        self.wfile.write(b"s" * int(q.get("send") or 10))
        self.wfile.flush()
        self.close_connection = True

    def ep_reset(self, q, seen):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def ep_redirect(self, q, seen):
        if q.get("again") and self.server.upstream._hit("again:" + q["again"]) > 1:
            self.ep_echo(q, seen)
            return
        self._wait(q)
        n, code = int(q.get("n") or 1), int(q.get("code") or 302)
        to = q.get("to", "/json?v=end")
        if q.get("loop") == "1":
            location = self.path  # redirects to itself forever
        elif n > 1:
            rest = {"n": n - 1, "to": to, "code": code}
            if q.get("ms"):
                rest["ms"] = q["ms"]
            if seen.tag:
                rest["tag"] = seen.tag
            location = "/redirect?" + urlencode(rest)
        else:
            location = to
        # Sent as UTF-8 bytes, as servers do (latin1=1: as ISO-8859-1 bytes).
        raw = location.encode("latin-1" if q.get("latin1") == "1" else "utf-8", "replace")
        self._reply(code, {"location": location}, extra=[("Location", raw.decode("latin-1"))])

    def ep_info(self, q, seen):
        code = int(q.get("code") or 100)
        self.server.upstream._done(seen)
        hint = b"Content-Type: text/html\r\nLink: </x.css>; rel=preload\r\n" if code == 103 else b""
        self.wfile.write(b"HTTP/1.1 %d Info\r\n%s\r\n" % (code, hint))
        self.wfile.flush()
        then = q.get("then", "close")
        if then == "final":
            self._reply(200, {"final": True}, q.get("ct"))
            return
        self.close_connection = True
        if then == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def ep_flaky(self, q, seen):
        n = self.server.upstream._hit("flaky:" + q.get("key", ""))
        if n > 1:
            self._reply(200, {"count": n})
            return
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def ep_failing(self, q, seen):
        self._wait(q)
        n = self.server.upstream._hit("failing:" + q.get("key", ""))
        if n > int(q.get("fail") or 1):
            self._reply(200, {"attempt": n})
            return
        if q.get("mode") == "reset":
            self.ep_reset(q, seen)
            return
        extra = []
        if "retry_after" in q:
            extra.append(("Retry-After", q["retry_after"]))
        if "ra_date" in q:
            extra.append(("Retry-After", formatdate(time.time() + float(q["ra_date"]), usegmt=True)))
        status = int(q.get("status") or 503)
        self._reply(status, {"attempt": n, "status": status}, extra=extra)

    def ep_echo(self, q, seen):
        self._reply(200, {"method": self.command, "path": self.path,
                          "headers": [[k, v] for k, v in seen.headers],
                          "body_b64": base64.b64encode(seen.body).decode()})

    def ep_lengths(self, q, seen):
        body = q.get("body", "").encode()
        self.server.upstream._done(seen)
        self.close_connection = True
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        for value in q.get("lens", "").split(";"):
            head += b"Content-Length: %s\r\n" % value.encode()
        self.wfile.write(head + b"Connection: close\r\n\r\n" + body)
        self.wfile.flush()

    def ep_count(self, q, seen):
        self._reply(200, {"count": self.server.upstream._hit(q.get("key", ""))})

    def ep_cacheable(self, q, seen):
        self._wait(q)
        n = self.server.upstream._hit("cacheable:" + q.get("key", ""))
        extra = [("Cache-Control", q["cc"])] if "cc" in q else []
        if "cookie" in q:
            extra.append(("Set-Cookie", q["cookie"]))
        self._reply(int(q.get("status") or 200), {"n": n, "pad": "a" * int(q.get("pad") or 0)},
                    extra=extra)

    def ep_raw(self, q, seen):
        body = base64.b64decode(q["b64"]) if "b64" in q else q.get("body", "").encode()
        self._reply(int(q.get("status") or 200), body, q.get("ct"))

    def ep_gzip(self, q, seen):
        if "pad" in q:
            plain, ctype = b"\0" * int(q["pad"]), "application/octet-stream"
        else:
            plain, ctype = q.get("doc", '{"gz": true}').encode(), "application/json"
        self._reply(200, gzip.compress(plain, mtime=0), ctype, extra=[("Content-Encoding", "gzip")])

    def ep_numarray(self, q, seen):
        key, n = q.get("key", "a"), int(q.get("bytes") or 9)
        head = ('{"%s":[1' % key).encode()
        tail = b"]}" if (n - len(head)) % 2 == 0 else b"]}\n"   # parity: exact length
        count = max(1, (n - len(head) - len(tail)) // 2 + 1)      # "1" then ",1" each
        body = _NUMARRAYS.get((key, n))
        if body is None:
            body = head + b",1" * (count - 1) + tail
            _NUMARRAYS[(key, n)] = body
        self._reply(200, body, "application/json")

    def ep_hdrs(self, q, seen):
        """doc as the body (ct), with extra response headers: h is a JSON list of [name, value]."""
        self._wait(q)
        extra = [tuple(p) for p in json.loads(q.get("h", "[]"))]
        self._reply(int(q.get("status") or 200), q.get("doc", "{}"), q.get("ct", "application/json"),
                    extra)


_NUMARRAYS = {}   # (key, bytes) -> body: made once, the tests ask for the same big bodies

ROUTES = {"/" + name[3:]: fn for name, fn in vars(_Handler).items() if name.startswith("ep_")}
