"""A raw-socket upstream that misbehaves on purpose, one behaviour per path.

    /reset-headers   part of the status line and headers, then a TCP reset
    /reset-body      full headers (Content-Length 200000), 1000 bytes, then a reset
    /short           Content-Length 1000, 10 bytes, then a clean close (FIN)
    /bad-chunked     Transfer-Encoding: chunked with a chunk size that is not hex
    /endless         chunked body that never ends (until the peer goes away)
    /endless-close   no framing (body ends at close), never ends
    /gzip-bomb       Content-Encoding: gzip of BOMB_SIZE zero bytes (Content-Length set)
    /post-close      reads the request head and at most 64 KiB of the body, then closes
                     without answering (?how=reset: a TCP reset at once; how=respond:
                     an early 413 answer, then close; else a plain close, which the
                     kernel turns into a reset as the rest of the body arrives)

Every connection is handled on its own thread; the listener is 127.0.0.1 only.
Bookkeeping per path: hits(path), and for the endless paths sent(path) (bytes written)
and finished(path) (writers that stopped because the peer went away).
"""

import socket
import struct
import threading
import time
import zlib
from urllib.parse import parse_qs, urlsplit

BOMB_SIZE = 50 * 1024 * 1024

_bomb = None
_bomb_lock = threading.Lock()


def gzip_bomb():
    """BOMB_SIZE zero bytes, gzip-compressed (about 50 KB); made once."""
    global _bomb
    with _bomb_lock:
        if _bomb is None:
            c = zlib.compressobj(9, zlib.DEFLATED, 31)
            block = b"\0" * (1 << 20)
            parts = [c.compress(block) for _ in range(BOMB_SIZE >> 20)]
            parts.append(c.flush())
            _bomb = b"".join(parts)
        return _bomb


def _reset(sock):
    """Closes with a TCP RST (SO_LINGER 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultyUpstream:
    def __init__(self):
        self._lock = threading.Lock()
        self._hits = {}
        self._sent = {}
        self._finished = {}
        self._sock = None
        self._stop = False

    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.1)
        threading.Thread(target=self._accept_loop, daemon=True, name="faulty-upstream").start()
        return self

    def stop(self):
        self._stop = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def port(self):
        return self._sock.getsockname()[1]

    def url(self, path, **query):
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{q}" if q else "")

    # -- bookkeeping ----------------------------------------------------------
    def _count(self, table, key, n=1):
        with self._lock:
            table[key] = table.get(key, 0) + n

    def hits(self, path):
        with self._lock:
            return self._hits.get(path, 0)

    def sent(self, path):
        with self._lock:
            return self._sent.get(path, 0)

    def finished(self, path):
        with self._lock:
            return self._finished.get(path, 0)

    # -- serving ----------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    conn.close()
                    return
                head += chunk
                if len(head) > 1 << 20:
                    conn.close()
                    return
            head, _, rest = head.partition(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = urlsplit(line.split(" ")[1] if " " in line else "/")
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            self._count(self._hits, parts.path)
            handler = getattr(self, "ep_" + parts.path.strip("/").replace("-", "_"), None)
            if handler is None:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
                return
            handler(conn, parts.path, query, head, rest)
        except OSError:
            try:
                conn.close()
            except OSError:
                pass

    def ep_reset_headers(self, conn, path, q, head, rest):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl")
        time.sleep(0.05)
        _reset(conn)

    def ep_reset_body(self, conn, path, q, head, rest):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 200000\r\n\r\n" + b"b" * 1000)
        time.sleep(0.05)
        _reset(conn)

    def ep_short(self, conn, path, q, head, rest):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b"s" * 10)
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
        conn.close()

    def ep_bad_chunked(self, conn, path, q, head, rest):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\nzz-not-hex\r\nworld\r\n0\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
        conn.close()

    def _endless(self, conn, path, chunked):
        hdr = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" +
               (b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Connection: close\r\n\r\n"))
        block = b"e" * 65536
        piece = (b"%x\r\n" % len(block)) + block + b"\r\n" if chunked else block
        try:
            conn.sendall(hdr)
            conn.settimeout(10)
            while not self._stop:
                conn.sendall(piece)
                self._count(self._sent, path, len(block))
        except OSError:
            self._count(self._finished, path)
        finally:
            conn.close()

    def ep_endless(self, conn, path, q, head, rest):
        self._endless(conn, path, True)

    def ep_endless_close(self, conn, path, q, head, rest):
        self._endless(conn, path, False)

    def ep_gzip_bomb(self, conn, path, q, head, rest):
        body = gzip_bomb()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        conn.shutdown(socket.SHUT_WR)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        conn.close()

    def ep_post_close(self, conn, path, q, head, rest):
        got = len(rest)
        conn.settimeout(5)
        while got < 65536:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        if q.get("how") == "reset":
            _reset(conn)
        elif q.get("how") == "respond":
            conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 4\r\nConnection: close\r\n\r\nnope")
            conn.close()
        else:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
