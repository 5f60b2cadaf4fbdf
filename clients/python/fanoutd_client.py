"""A client for fanoutd's POST /batch, with Python's standard library only (http.client, json).

    from fanoutd_client import Client, FanoutdError

    fo = Client("http://127.0.0.1:8080")
    doc = fo.batch(["http://api.example/a", {"url": "http://api.example/b", "id": "bee"}],
                   timeout_ms=2000)
    for r in doc["results"]:
        print(r["id"], r["status"], r.get("body"))

    with fo.stream(urls) as lines:     # results as they land (NDJSON)
        for r in lines:
            print(r["id"], r["ok"])
    print(lines.summary)

Every batch field of docs/API.md (timeout_ms, merge, policy, defaults, max_concurrency, timings,
merge_arrays, ...) is a keyword argument. A batch that fanoutd refuses (400, 401, 413, 503, 508
...) raises FanoutdError, which carries the JSON error; a stream that ends without its summary
raises StreamCutShort; failures to connect raise OSError (ConnectionRefusedError,
TimeoutError, ...). Proxy environment variables are not used: the client talks to fanoutd
itself. Python 3.9 or later.
"""

import http.client
import json
import select
import socket
import urllib.parse

__all__ = ["Client", "FanoutdError", "StreamCutShort", "Stream", "batch", "stream"]
__version__ = "2.1.0"

NDJSON = "application/x-ndjson"
# A body larger than this is sent after "Expect: 100-continue": fanoutd may refuse the batch
# from its headers alone (401, 413 by Content-Length, 503), and a client that kept sending
# would see its connection reset instead of the answer.
EXPECT_CONTINUE_BYTES = 64 * 1024
CONTINUE_WAIT_S = 1.0  # how long to wait for "100 Continue" before sending anyway (RFC 9110 10.1.1)


class FanoutdError(Exception):
    """fanoutd refused the request: `status` (the HTTP status), `code` and `message` (its JSON
    error, docs/API.md section 5), `retry_after` (seconds, from Retry-After, or None) and
    `request_id` (X-Request-Id, to find the batch in fanoutd's access log)."""

    def __init__(self, status, code, message, retry_after=None, request_id=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id


class StreamCutShort(FanoutdError):
    """A stream ended without its summary line (a FanoutdError with status None and code
    "stream_cut_short"): the lines received (`results`) are final for their items; the items
    without a line (`missing`, their indexes) are in an unknown state and may have been fetched
    (docs/API.md section 21). The network error that cut it, if any, is its __cause__."""

    def __init__(self, results, total, request_id=None):
        seen = {r.get("index") for r in results}
        self.results = results
        self.missing = [i for i in range(total) if i not in seen]
        super().__init__(None, "stream_cut_short",
                         f"the stream ended without its summary; {len(self.missing)} of "
                         f"{total} items have no line", request_id=request_id)


def _retry_after(value):
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fanoutd sends seconds


def _error_from(resp):
    """A FanoutdError from a non-200 answer (its body is fanoutd's JSON error)."""
    try:
        doc = json.loads(resp.read().decode("utf-8"))
        code, message = doc["error"]["code"], doc["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError, http.client.HTTPException):
        code, message = "http_error", resp.reason or "no JSON error in the answer"
    return FanoutdError(resp.status, code, message, _retry_after(resp.getheader("Retry-After")),
                        resp.getheader("X-Request-Id"))


class Stream:
    """The lines of a streamed batch, as they arrive. Iterate for the RESULT objects (each has
    "index", the item's position), in finishing order; iterating again goes on where it
    stopped. `summary` is the summary once the stream has ended, `heartbeats` counts the
    heartbeat lines skipped, `request_id` is the batch's X-Request-Id. close() (or leaving a
    `with` block) ends it early: fanoutd then cancels the rest of the batch, and iterating a
    closed stream stops at once."""

    def __init__(self, conn, response, total):
        self._conn = conn
        self._resp = response
        self._total = total
        self._results = []
        self._closed = False
        self.summary = None
        self.heartbeats = 0
        self.request_id = response.getheader("X-Request-Id")

    def __iter__(self):
        return self

    def __next__(self):
        while not self._closed:
            try:
                raw = self._resp.readline()
            except (OSError, http.client.HTTPException) as e:
                if self._closed:  # closed while reading, by another thread
                    break
                self.close()
                raise StreamCutShort(self._results, self._total, self.request_id) from e
            if not raw.endswith(b"\n"):  # the end of the stream, without a summary (or mid-line)
                self.close()
                raise StreamCutShort(self._results, self._total, self.request_id)
            if not raw.strip():
                continue
            line = json.loads(raw.decode("utf-8"))
            if "summary" in line and len(line) == 1:
                self.summary = line["summary"]
                self.close()
                break
            if "heartbeat" in line and len(line) == 1:
                self.heartbeats += 1
                continue
            self._results.append(line)
            return line
        raise StopIteration

    def close(self):
        """Ends the stream and closes its connection (fanoutd cancels what has not finished)."""
        self._closed = True
        self._resp.close()
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Client:
    """fanoutd at `url` ("http://host:port", or https behind a TLS proxy). `token`: the
    auth_token, sent as a bearer token. `timeout`: seconds a socket operation may wait (None:
    no bound but the batch's own deadline, and socket.setdefaulttimeout's if set). `headers`:
    more request headers for every batch (those in fanoutd's forward_headers reach the
    upstreams). `last_request_id` is the X-Request-Id of the last batch this client sent."""

    def __init__(self, url="http://127.0.0.1:8080", token=None, timeout=None, headers=None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL of fanoutd: {url!r}")
        self.url = url.rstrip("/")
        self._parts = parts
        self.token = token
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.last_request_id = None

    def _connect(self):
        timeout = self.timeout if self.timeout is not None else socket.getdefaulttimeout()
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        return cls(self._parts.hostname, self._parts.port, timeout=timeout)

    def _path(self, endpoint):
        return self._parts.path.rstrip("/") + endpoint

    @staticmethod
    def _continue_or_answer(conn):
        """After headers with "Expect: 100-continue": True to send the body (a 100 came, or
        none within CONTINUE_WAIT_S); False when fanoutd answered at once (a refusal)."""
        head = b""
        while len(head) < 12:  # "HTTP/1.1 100"
            ready, _, _ = select.select([conn.sock], [], [], CONTINUE_WAIT_S)
            if not ready:
                return True
            more = conn.sock.recv(12, socket.MSG_PEEK)
            if len(more) == len(head):  # the connection closed: read what was answered
                return False
            head = more
        if head[9:12] != b"100":
            return False
        seen = b""
        while not seen.endswith(b"\r\n\r\n"):  # the 100's own head, byte by byte: nothing else is read
            b = conn.sock.recv(1)
            if not b:
                return False
            seen += b
        return True

    def _post(self, requests, fields, accept):
        if isinstance(requests, (str, bytes, dict)) or requests is None:
            raise TypeError("requests must be a list of URLs and item objects")
        requests = list(requests)
        payload = dict(fields, requests=requests) if fields else requests
        body = json.dumps(payload, allow_nan=False).encode("utf-8")  # NaN is no JSON
        headers = dict(self.headers)
        headers.update({"Content-Type": "application/json", "Accept": accept,
                        "Content-Length": str(len(body))})
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        expect = len(body) > EXPECT_CONTINUE_BYTES
        if expect:
            headers["Expect"] = "100-continue"
        conn = self._connect()
        try:
            conn.putrequest("POST", self._path("/batch"), skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            if not expect or self._continue_or_answer(conn):
                try:
                    conn.send(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # answered before the body was read: that answer follows
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        self.last_request_id = resp.getheader("X-Request-Id")
        if resp.status != 200:
            try:
                raise _error_from(resp)
            finally:
                conn.close()
        return conn, resp, len(requests)

    def batch(self, requests, **fields):
        """Runs a batch and returns fanoutd's answer as a dict: {"results": [...], "summary": ...}
        or, with merge="bodies"/"deep", {"data": ..., "errors": ..., "summary": ...}."""
        conn, resp, _ = self._post(requests, fields, "application/json")
        try:
            return json.loads(resp.read().decode("utf-8"))
        finally:
            conn.close()

    def stream(self, requests, **fields):
        """Runs a batch as a stream: a Stream that yields each item's RESULT as it finishes.
        ValueError for a merge mode other than "none" (a merged document needs the whole
        batch)."""
        if fields.get("merge", "none") != "none":
            raise ValueError("a merged document needs the whole batch: stream with merge none")
        conn, resp, total = self._post(requests, fields, NDJSON)
        return Stream(conn, resp, total)

    def healthz(self):
        """fanoutd's GET /healthz as a dict: {"status": "ok"}, or {"status": "draining"} while
        it shuts down (a 503, reported rather than raised)."""
        conn = self._connect()
        try:
            conn.request("GET", self._path("/healthz"))
            resp = conn.getresponse()
            if resp.status not in (200, 503):
                raise _error_from(resp)
            return json.loads(resp.read().decode("utf-8"))
        finally:
            conn.close()


def batch(requests, url="http://127.0.0.1:8080", token=None, timeout=None, headers=None,
          **fields):
    """Client(url, token, timeout, headers).batch(requests, **fields)."""
    return Client(url, token, timeout, headers).batch(requests, **fields)


def stream(requests, url="http://127.0.0.1:8080", token=None, timeout=None, headers=None,
           **fields):
    """Client(url, token, timeout, headers).stream(requests, **fields)."""
    return Client(url, token, timeout, headers).stream(requests, **fields)
