"""A client for fanoutd's POST /batch, with Python's standard library only (urllib).

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
...) raises FanoutdError, which carries the JSON error; network failures raise urllib's own
errors (URLError, OSError, TimeoutError). Python 3.9 or later.
"""

import json
import urllib.error
import urllib.request

__all__ = ["Client", "FanoutdError", "StreamCutShort", "Stream", "batch", "stream"]
__version__ = "2.1.0"

NDJSON = "application/x-ndjson"


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
    """A stream ended without its summary line: the lines received (`results`) are final for
    their items; the items without a line (`missing`, their indexes) are in an unknown state
    and may have been fetched (docs/API.md section 21)."""

    def __init__(self, results, total, request_id=None):
        seen = {r.get("index") for r in results}
        self.results = results
        self.missing = [i for i in range(total) if i not in seen]
        super().__init__(None, "stream_cut_short",
                         f"the stream ended without its summary; {len(self.missing)} of "
                         f"{total} items have no line", request_id=request_id)


def _error_from(err):
    """A FanoutdError from urllib's HTTPError (its body is fanoutd's JSON error)."""
    try:
        doc = json.loads(err.read().decode("utf-8"))
        code, message = doc["error"]["code"], doc["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        code, message = "http_error", err.reason or "no JSON error in the answer"
    retry_after = err.headers.get("Retry-After")
    try:
        retry_after = int(retry_after) if retry_after is not None else None
    except ValueError:
        retry_after = None
    return FanoutdError(err.code, code, message, retry_after, err.headers.get("X-Request-Id"))


class Stream:
    """The lines of a streamed batch, as they arrive: iterate for the RESULT objects (each has
    "index", the item's position); `summary` is the summary once the stream has ended, and
    `heartbeats` counts the heartbeat lines skipped. Close it (or use `with`) to leave early:
    fanoutd then cancels the rest of the batch."""

    def __init__(self, response, total):
        self._resp = response
        self._total = total
        self.summary = None
        self.heartbeats = 0
        self.request_id = response.headers.get("X-Request-Id")
        self._results = []

    def __iter__(self):
        try:
            for raw in self._resp:
                if not raw.strip():
                    continue
                line = json.loads(raw.decode("utf-8"))
                if "summary" in line and len(line) == 1:
                    self.summary = line["summary"]
                    return
                if "heartbeat" in line and len(line) == 1:
                    self.heartbeats += 1
                    continue
                self._results.append(line)
                yield line
        finally:
            if self.summary is None and not self._resp.closed:
                self._resp.close()
        raise StreamCutShort(self._results, self._total, self.request_id)

    def close(self):
        self._resp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Client:
    """fanoutd at `url` ("http://host:port"). `token`: the auth_token, sent as a bearer token.
    `timeout`: seconds a socket operation may wait (None: the batch's own deadline bounds the
    answer). `headers`: more request headers for every batch (those in fanoutd's
    forward_headers reach the upstreams)."""

    def __init__(self, url="http://127.0.0.1:8080", token=None, timeout=None, headers=None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.headers = dict(headers or {})

    def _post(self, requests, fields, accept):
        if isinstance(requests, (str, bytes, dict)):
            raise TypeError("requests must be a list of URLs and item objects")
        requests = list(requests)
        payload = dict(fields, requests=requests) if fields else requests
        headers = dict(self.headers)
        headers["Content-Type"] = "application/json"
        headers["Accept"] = accept
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + "/batch", data=json.dumps(payload).encode("utf-8"),
                                     headers=headers, method="POST")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout), len(requests)
        except urllib.error.HTTPError as err:
            raise _error_from(err) from None

    def batch(self, requests, **fields):
        """Runs a batch and returns fanoutd's answer as a dict: {"results": [...], "summary": ...}
        or, with merge="bodies"/"deep", {"data": ..., "errors": ..., "summary": ...}."""
        resp, _ = self._post(requests, fields, "application/json")
        with resp:
            return json.loads(resp.read().decode("utf-8"))

    def stream(self, requests, **fields):
        """Runs a batch as a stream: a Stream that yields each item's RESULT as it finishes."""
        if fields.get("merge", "none") != "none":
            raise ValueError("a merged document needs the whole batch: stream with merge none")
        resp, total = self._post(requests, fields, NDJSON)
        return Stream(resp, total)

    def healthz(self):
        """fanoutd's GET /healthz: {"status": "ok"} (or a FanoutdError while draining)."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            raise _error_from(err) from None


def batch(requests, url="http://127.0.0.1:8080", token=None, timeout=None, **fields):
    """Client(url, token, timeout).batch(requests, **fields)."""
    return Client(url, token, timeout).batch(requests, **fields)


def stream(requests, url="http://127.0.0.1:8080", token=None, timeout=None, **fields):
    """Client(url, token, timeout).stream(requests, **fields)."""
    return Client(url, token, timeout).stream(requests, **fields)
