"""Limits on what one batch may make fanoutd hold or do: max_answer_bytes (the bodies of
one answer, counted as written) and per_host_limit counted per destination, however
the host is spelled."""

import json
import os
import socket
import time
import unittest

from harness import Background, DaemonCase, new_tag, wait_for

CAP = 1000000


class AnswerCapTest(DaemonCase):
    """One worker, so items finish in request order and which one passes the cap is known."""

    CONFIG = {"workers": 1, "max_answer_bytes": CAP}

    def fill(self, n, byte, ct="text/plain", tag=None):
        return self.url("/big", bytes=n, byte=byte, ct=ct, tag=tag or new_tag())

    def assert_refused(self, r):
        self.assertIs(r["ok"], False, r)
        self.assertEqual(r["error"]["code"], "too_large", r)
        self.assertIn(f"max_answer_bytes ({CAP})", r["error"]["message"])
        self.assertEqual(r["status"], 200, "the status of the response is kept")
        self.assertNotIn("body", r, "a refused item has no body")

    def test_escaped_text_counts_as_written(self):
        """150,000 control bytes are written as 900,002 bytes (\\u0001 and quotes): the
        first fits in 1,000,000, the next two do not, though their raw bytes would."""
        doc = self.batch([self.fill(150000, 1) for _ in range(3)], total=3)
        first, *rest = doc["results"]
        self.assertIs(first["ok"], True, first)
        self.assertEqual(first["body"], "\u0001" * 150000)
        for r in rest:
            self.assert_refused(r)

    def test_base64_counts_as_written(self):
        """300,000 bytes of 0xff are 400,002 bytes of base64 and quotes: two fit."""
        doc = self.batch([self.fill(300000, 255, "application/octet-stream") for _ in range(3)],
                         total=3)
        for r in doc["results"][:2]:
            self.assertEqual((r["ok"], r["body_encoding"]), (True, "base64"), r)
        self.assert_refused(doc["results"][2])

    def test_json_counts_its_length_up_to_the_cap_exactly(self):
        """JSON numbers of 400,000 + 400,000 + 200,000 digits fill the cap exactly; one
        more byte (the number 1) is over it, and so is every body after it."""
        sizes = [400000, 400000, 200000, 1]
        resp = self.post([self.fill(n, ord("1"), "application/json") for n in sizes])
        self.assertEqual(resp.status, 200)
        # Numbers this long are read as their digit counts (Python's int() is quadratic).
        res = json.loads(resp.body, parse_int=lambda t: int(t) if len(t) < 100 else len(t))["results"]
        for r, n in zip(res[:3], sizes):
            self.assertEqual((r["ok"], r["body_encoding"], r["body"]), (True, "json", n), r.get("error"))
        self.assert_refused(res[3])

    def test_merge_bodies_and_the_cap(self):
        doc = self.batch({"merge": "bodies", "requests": [
            {"id": "a", "url": self.fill(150000, 1)}, {"id": "b", "url": self.fill(150000, 1)},
            {"id": "c", "url": self.url("/json", v="small")}]})
        self.assertEqual(doc["data"]["a"], "\u0001" * 150000)
        self.assertEqual(doc["errors"]["b"]["error"]["code"], "too_large")
        self.assertEqual(doc["data"]["c"], {"v": "small"}, "a small body still fits")

    def test_empty_and_failed_items_take_nothing(self):
        doc = self.batch([self.fill(150000, 1), self.url("/status", code=204),
                          self.url("/reset"), self.fill(99990, ord("a"))], total=4)
        res = doc["results"]
        self.assertTrue(res[0]["ok"])
        self.assertEqual((res[1]["status"], res[1]["body"]), (204, None))
        self.assertEqual(res[2]["error"]["code"], "upstream_error")
        self.assertTrue(res[3]["ok"], "99,992 written bytes fit in the 99,998 left")


# Spellings of 127.0.0.1, where the shared upstream listens.
SPELLINGS = ["127.0.0.1", "127.1", "localhost", "LOCALHOST", "[::ffff:127.0.0.1]", "0x7f000001",
             "2130706433", "0177.0.0.1", "127.0.1", "0x7f.1", "LocalHost", "a.localhost"]


def loopback_names():
    """Names (besides localhost) whose first address is 127.0.0.1 here: the machine's own
    name and /etc/hosts entries, each also in upper case."""
    names = {socket.gethostname()}
    try:
        with open("/etc/hosts") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if fields and fields[0] == "127.0.0.1":
                    names.update(fields[1:])
    except OSError:
        pass
    out = []
    for n in sorted(names):
        if not n or "localhost" in n.lower():
            continue
        try:
            first = socket.getaddrinfo(n, 80, type=socket.SOCK_STREAM)[0][4][0]
        except OSError:
            continue
        if first == "127.0.0.1":
            out += [n, n.upper()]
    return out


def cpu_seconds(pid):
    """utime + stime of process pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_batch(port, payload):
    """Sends a JSON batch on a raw socket and returns the socket (the reply is not read)."""
    body = json.dumps(payload).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return s


class PerHostSpellingTest(DaemonCase):
    CONFIG = {"workers": 16, "per_host_limit": 2, "max_batch": 10000, "max_body_bytes": 4 << 20}

    def test_spellings_of_one_address_are_one_host(self):
        """12 items of 500 ms, each spelling 127.0.0.1 differently: 2 at a time, not 12."""
        tag = new_tag()
        items = [self.url("/delay", host=h, ms=500, tag=tag, i=i) for i, h in enumerate(SPELLINGS)]
        start = time.monotonic()
        doc = self.batch(items, total=len(items), timeout=30)
        elapsed = time.monotonic() - start
        failed = [(r["url"], r.get("error")) for r in doc["results"] if not r["ok"]]
        self.assertEqual(failed, [], "every spelling reaches the upstream")
        self.assertEqual(self.up.max_inflight(tag), 2, "one destination, per_host_limit 2")
        self.assertGreater(elapsed, 2.9, "12 x 500 ms, 2 at a time: at least 3 s")

    def test_names_count_as_the_address_they_resolve_to(self):
        """Names that resolve to 127.0.0.1 (the machine's name, /etc/hosts) and numeric
        spellings of it share per_host_limit's 2 slots; the fetches go to that address."""
        names = loopback_names()
        if not names:
            self.skipTest("no name other than localhost resolves to 127.0.0.1 here")
        tag = new_tag()
        hosts = (names * 4)[:8] + ["127.1", "0x7f000001", "localhost", "127.0.0.1"]
        items = [self.url("/delay", host=h, ms=500, tag=tag, i=i) for i, h in enumerate(hosts)]
        doc = self.batch(items, total=len(items), timeout=30)
        failed = [(r["url"], r.get("error")) for r in doc["results"] if not r["ok"]]
        self.assertEqual(failed, [], "every name reaches the upstream")
        self.assertEqual(self.up.max_inflight(tag), 2, f"one destination for {sorted(set(hosts))}")
        # a second batch finds the names' addresses remembered: the same holds
        tag = new_tag()
        doc = self.batch([self.url("/delay", host=h, ms=300, tag=tag, i=i) for i, h in enumerate(hosts)],
                         total=len(hosts), timeout=30)
        self.assertEqual(doc["summary"]["ok"], len(hosts))
        self.assertEqual(self.up.max_inflight(tag), 2)

    def test_batches_share_a_busy_host_round_robin(self):
        """A batch of 40 x 200 ms holds the host's 2 slots for 4 s; a batch of 2 arriving
        after it gets the next free slots, not the ones after all 40."""
        big, small = new_tag(), new_tag()
        sock = open_batch(self.daemon.port, [self.url("/delay", ms=200, tag=big, i=i)
                                             for i in range(40)])
        try:
            wait_for(lambda: len(self.up.requests(big)) >= 2, 5, "the big batch never started")
            start = time.monotonic()
            doc = self.batch([self.url("/delay", host="127.1", ms=200, tag=small, i=i)
                              for i in range(2)], total=2, timeout=20)
            elapsed = time.monotonic() - start
            self.assertEqual(doc["summary"]["ok"], 2)
            self.assertLess(elapsed, 2.0, f"the small batch waited {elapsed:.2f} s behind 40 x 200 ms "
                                          f"at 2 at a time (round-robin expected)")
            self.assertLess(len(self.up.requests(big)), 30, "the small batch ran after most of the big one")
            self.assertLessEqual(self.up.max_inflight(big) + self.up.max_inflight(small), 4)
        finally:
            sock.close()


class ParkedCostTest(DaemonCase):
    CONFIG = {"workers": 64, "per_host_limit": 2, "max_batch": 10000, "max_body_bytes": 4 << 20}

    def test_parked_items_cost_nothing_to_skip(self):
        """10,000 items parked behind per_host_limit 2 while fetches run at about 80 a second:
        picking the next item does not scan them (the daemon's CPU stays small), and a client
        that leaves drops them all."""
        tag = new_tag()
        sock = open_batch(self.daemon.port, [self.url("/delay", ms=25, tag=tag, i=i) for i in range(10000)])
        try:
            wait_for(lambda: len(self.up.requests(tag)) >= 20, 10, "the parked batch to make progress")
            pid = self.daemon.proc.pid
            c0, t0, n0 = cpu_seconds(pid), time.monotonic(), len(self.up.requests(tag))
            wait_for(lambda: time.monotonic() - t0 >= 2, 5, "two seconds")
            cpu, wall, n = cpu_seconds(pid) - c0, time.monotonic() - t0, len(self.up.requests(tag)) - n0
            self.assertGreater(n, 10, "fetches went on")
            if not os.environ.get("SANITIZER") and "valgrind" not in os.environ.get("FANOUTD", ""):
                self.assertLess(cpu / wall, 0.05, f"{cpu:.2f} s of CPU in {wall:.1f} s for {n} fetches "
                                                  f"with 10,000 items parked")
        finally:
            sock.close()
        seen = len(self.up.requests(tag))
        wait_for(lambda: "\nfanoutd_queue_depth 0\n" in self.get("/metrics").body.decode(), 10,
                 "the parked items to be dropped")
        self.assertLess(len(self.up.requests(tag)), seen + 10, "dropped items were fetched")


if __name__ == "__main__":
    unittest.main()
