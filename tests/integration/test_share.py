"""Sharing fetches (CONTRACT v2 "Sharing fetches: coalescing and cache"): identical in-flight
GET/HEAD fetches coalesced across batches, a leader whose batch goes away or whose time runs
out, riders' own deadlines, the cache of 200 GET answers (TTL, Cache-Control, `cache: false`,
LRU within cache_max_bytes), the RESULT `cache` field and the metrics. A real upstream on
127.0.0.1 counts what reaches it (/cacheable counts per key)."""

import json
import os
import re
import socket
import sys
import time

from harness import Background, DaemonCase, new_tag, wait_for


def metrics(case):
    """{name: value} of the daemon's unlabelled metrics."""
    out = {}
    for line in case.get("/metrics").body.decode().splitlines():
        m = re.match(r"^([a-z_]+) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class ShareCase(DaemonCase):
    def hits(self, key):
        """Requests for key the upstream has answered (counted after its wait)."""
        return self.up.count("cacheable:" + key)

    def arrived(self, key):
        """Requests for key that reached the upstream (counted on arrival)."""
        return len(self.up.requests(tag=key))

    def cacheable(self, key, **q):
        return self.url("/cacheable", key=key, tag=key, **q)

    def results(self, items, **kw):
        return self.batch(items, total=len(items), **kw)["results"]

    def post_and_leave(self, items):
        """Sends a batch on a raw socket and returns it (close it to go away)."""
        body = json.dumps(items).encode()
        s = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=10)
        s.sendall(b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return s


class CoalesceTest(ShareCase):
    CONFIG = {"workers": 16, "coalesce": "on"}

    def test_identical_items_of_two_batches_reach_the_upstream_once(self):
        key = new_tag()
        url = self.cacheable(key, ms=1000)
        first = Background(lambda: self.results([url, url, url], timeout=20))
        wait_for(lambda: self.arrived(key) >= 1, 10, "the first batch never reached the upstream")
        second = self.results([{"url": url, "id": "a"}, {"url": url, "id": "b"}])
        results = first.result(15) + second
        self.assertEqual([r["id"] for r in results], ["0", "1", "2", "a", "b"])
        for r in results:
            self.assertTrue(r["ok"], r)
            self.assertEqual(r["url"], url)
            self.assertEqual(r["body"]["n"], 1)
        self.assertEqual(sorted(r["cache"] for r in results), ["coalesced"] * 4 + ["miss"])
        self.assertEqual(self.hits(key), 1, "identical in-flight GETs were fetched more than once")
        # a rider's duration is its own (it joined late), not the leader's
        self.assertLess(min(r["duration_ms"] for r in second), 1000,
                        [(r["id"], r["cache"], r["duration_ms"]) for r in results])

    def test_coalesce_false_neither_leads_nor_rides(self):
        key = new_tag()
        url = self.cacheable(key, ms=600)
        results = self.results([url, {"url": url, "coalesce": False}, url,
                                {"url": url, "coalesce": False}])
        self.assertEqual(self.hits(key), 3)
        self.assertEqual([results[1].get("cache"), results[3].get("cache")], [None, None],
                         "neither feature is on for a coalesce: false item here")
        self.assertEqual(sorted(results[i]["cache"] for i in (0, 2)), ["coalesced", "miss"])

    def test_coalesce_field_must_be_boolean(self):
        resp = self.post([{"url": self.url("/json"), "coalesce": "no"}])
        self.assertEqual(resp.status, 400)
        self.assertIn("coalesce", resp.json()["error"]["message"])

    def test_different_requests_are_not_shared(self):
        key = new_tag()
        url = self.cacheable(key, ms=600)
        items = [url, {"url": url, "headers": {"X-Variant": "b"}}, {"url": url, "method": "POST"},
                 {"url": url, "method": "POST"}, {"url": url, "method": "HEAD"},
                 {"url": url, "method": "GET", "body": "x"}, self.cacheable(key, ms=600, other=1)]
        results = self.results(items)
        self.assertEqual(self.hits(key), 7)
        self.assertTrue(all(r["cache"] == "miss" for r in results), results)

    def test_header_order_and_traceparent_do_not_matter(self):
        key = new_tag()
        url = self.cacheable(key, ms=600)
        items = [{"url": url, "headers": {"X-A": "1", "X-B": "2"}},
                 {"url": url, "headers": {"X-B": "2", "X-A": "1"}}]
        results = self.results(items)
        self.assertEqual(self.hits(key), 1)
        self.assertEqual(sorted(r["cache"] for r in results), ["coalesced", "miss"])

    def test_leader_gone_riders_still_get_the_result(self):
        key = new_tag()
        url = self.cacheable(key, ms=1200)
        leader = self.post_and_leave([url])
        try:
            wait_for(lambda: self.arrived(key) >= 1, 10, "the leader never reached the upstream")
            rider = Background(lambda: self.results([url, url], timeout=20))
            wait_for(lambda: metrics(self).get("fanoutd_workers_busy", 0) >= 3, 5,
                     "the riders never joined")
        finally:
            leader.close()  # the leader's client goes away: its batch is cancelled
        results = rider.result(15)
        for r in results:
            self.assertTrue(r["ok"], r)
            self.assertEqual((r["body"]["n"], r["cache"]), (1, "coalesced"))
        self.assertEqual(self.hits(key), 1, "the shared fetch was cut short and done again")

    def test_leader_deadline_does_not_cut_riders_short(self):
        key = new_tag()
        url = self.cacheable(key, ms=1200)
        leader = Background(lambda: self.batch({"requests": [url], "timeout_ms": 300}, total=1))
        wait_for(lambda: self.arrived(key) >= 1, 10, "the leader never reached the upstream")
        rider = self.results([url])[0]
        self.assertEqual(leader.result(10)["results"][0]["error"]["code"], "deadline_exceeded")
        self.assertTrue(rider["ok"], rider)
        self.assertEqual((rider["body"]["n"], rider["cache"]), (1, "coalesced"))
        self.assertEqual(self.hits(key), 1)

    def test_rider_deadline_holds_for_it(self):
        key = new_tag()
        url = self.cacheable(key, ms=1500)
        leader = Background(lambda: self.results([url], timeout=20))
        wait_for(lambda: self.arrived(key) >= 1, 10, "the leader never reached the upstream")
        start = time.monotonic()
        doc = self.batch({"requests": [{"url": url, "timeout_ms": 250}]}, total=1)
        self.assertLess(time.monotonic() - start, 1.2, "the rider waited past its own timeout")
        self.assertEqual(doc["results"][0]["error"]["code"], "timeout")
        self.assertEqual(doc["results"][0]["cache"], "coalesced")
        r = leader.result(10)[0]
        self.assertTrue(r["ok"], r)
        self.assertEqual(self.hits(key), 1)

    def test_leader_timeout_hands_the_fetch_over(self):
        """The leader's own timeout ends its fetch; the rider, with time left, fetches again."""
        key = new_tag()
        url = self.cacheable(key, ms=900)
        leader = Background(lambda: self.results([{"url": url, "timeout_ms": 300}], timeout=20))
        wait_for(lambda: self.arrived(key) >= 1, 10, "the leader never reached the upstream")
        rider = self.results([{"url": url, "timeout_ms": 5000}])[0]
        self.assertEqual(leader.result(10)[0]["error"]["code"], "timeout")
        self.assertTrue(rider["ok"], rider)
        self.assertEqual(rider["body"]["n"], 2)
        self.assertEqual(self.hits(key), 2)

    def test_metrics_count_coalesced_and_missed(self):
        before = metrics(self)
        key = new_tag()
        url = self.cacheable(key, ms=500)
        self.results([url, url, url])
        after = metrics(self)
        self.assertEqual(after["fanoutd_coalesced_items_total"]
                         - before["fanoutd_coalesced_items_total"], 2)
        self.assertEqual(after["fanoutd_cache_misses_total"] - before["fanoutd_cache_misses_total"], 1)


class CoalesceChurnTest(ShareCase):
    CONFIG = {"workers": 16, "coalesce": "on", "cache_ttl_ms": 200}

    def test_many_batches_leaders_and_riders_leaving(self):
        """24 concurrent batches over 4 keys, every other client leaving at once: the ones that
        stay get every item ok with the right body, and the daemon stays healthy (under TSan
        this is the race test of the shared table and the cache)."""
        tag = new_tag()
        keys = [f"{tag}-{k}" for k in range(4)]
        urls = [self.cacheable(k, ms=300) for k in keys]
        leavers, stayers = [], []
        for n in range(24):
            items = [urls[(n + j) % 4] for j in range(5)]
            if n % 2:
                leavers.append(self.post_and_leave(items))
            else:
                stayers.append(Background(lambda items=items: self.results(items, timeout=30)))
            if n == 12:
                for s in leavers:
                    s.close()
        for s in leavers:
            s.close()
        for b in stayers:
            for r in b.result(30):
                self.assertTrue(r["ok"], r)
                self.assertIn(r["cache"], ("miss", "hit", "coalesced"))
                self.assertGreaterEqual(r["body"]["n"], 1)
        self.assertEqual(self.get("/healthz").status, 200)
        wait_for(lambda: metrics(self)["fanoutd_workers_busy"] == 0, 10, "workers left busy")


class ShareOffTest(ShareCase):
    CONFIG = {"workers": 4}

    def test_no_cache_field_and_no_sharing_by_default(self):
        key = new_tag()
        url = self.cacheable(key, ms=300)
        results = self.results([url, url])
        self.assertEqual(self.hits(key), 2)
        for r in results:
            self.assertNotIn("cache", r)


class CacheTest(ShareCase):
    CONFIG = {"workers": 8, "cache_ttl_ms": 30000}

    def one(self, item):
        return self.results([item])[0]

    def test_hit_within_ttl(self):
        key = new_tag()
        url = self.cacheable(key)
        first, second = self.one(url), self.one(url)
        self.assertEqual((first["cache"], first["body"]["n"]), ("miss", 1))
        self.assertEqual((second["cache"], second["body"]["n"]), ("hit", 1))
        for k in ("ok", "status", "content_type", "body", "body_encoding"):
            self.assertEqual(first[k], second[k])
        self.assertEqual(self.hits(key), 1)

    def assert_kept(self, kept, **q):
        """Two single-item batches of /cacheable with query q: the second is a hit and the
        upstream saw one request when the answer is kept, else two misses and two requests."""
        key = new_tag()
        url = self.cacheable(key, **q)
        self.assertEqual(self.one(url)["cache"], "miss")
        self.assertEqual(self.one(url)["cache"], "hit" if kept else "miss")
        self.assertEqual(self.hits(key), 1 if kept else 2)

    def test_cache_control_no_store_no_cache_private_not_kept(self):
        for cc, kept in (("no-store", False), ("no-cache", False), ("private", False),
                         ("public, no-cache=\"x\"", False), ("Private, max-age=60", False),
                         ("max-age=0", False), ("public, max-age=60", True), ("public", True)):
            with self.subTest(cc=cc):
                self.assert_kept(kept, cc=cc)

    def test_set_cookie_answer_not_kept(self):
        """An answer that sets a cookie is one client's: the shared cache never hands it to
        the next (whatever its Cache-Control says)."""
        for cc in (None, "public, max-age=60", "s-maxage=60"):
            with self.subTest(cc=cc):
                q = {"cookie": "sid=1; Path=/"} if cc is None else {"cookie": "sid=1", "cc": cc}
                self.assert_kept(False, **q)

    def test_s_maxage_governs_the_shared_cache(self):
        """RFC 9111 5.2.2.10: s-maxage overrides max-age in a shared cache; 0 keeps nothing."""
        for cc, kept in (("s-maxage=0", False), ("max-age=60, s-maxage=0", False),
                         ("max-age=0, s-maxage=60", True), ("S-MAXAGE=60", True),
                         ('s-maxage="60"', True), ("s-maxage=x", False), ("s-maxage=1x", False),
                         ("s-maxage=1.5", False), ("s-maxage=", False), ("s-maxage", False),
                         ("max-age=60, s-maxage=-1", False), ("max-age=1x", False)):
            with self.subTest(cc=cc):
                self.assert_kept(kept, cc=cc)

    def test_max_age_and_s_maxage_shorten_the_ttl(self):
        for cc in ("max-age=1", "max-age=60, s-maxage=1"):
            with self.subTest(cc=cc):
                key = new_tag()
                url = self.cacheable(key, cc=cc)
                self.assertEqual(self.one(url)["cache"], "miss")
                kept = time.monotonic()
                self.assertEqual(self.one(url)["cache"], "hit")
                wait_for(lambda: self.one(url)["cache"] == "miss", 5,
                         f"the answer outlived {cc}", interval=0.1)
                self.assertGreaterEqual(time.monotonic() - kept, 0.8)
                self.assertEqual(self.hits(key), 2)

    def test_cache_false_neither_reads_nor_fills(self):
        key = new_tag()
        url = self.cacheable(key)
        self.assertEqual(self.one({"url": url, "cache": False})["body"]["n"], 1)
        self.assertEqual(self.one(url)["cache"], "miss")
        bypass = self.one({"url": url, "cache": False})
        self.assertEqual(bypass["body"]["n"], 3)
        self.assertNotIn("cache", bypass, "the cache is off for this item (and coalescing too)")
        self.assertEqual(self.one(url)["cache"], "hit")

    def test_only_200_answers_to_get_are_kept(self):
        for name, item in (("404", {"status": 404}), ("201", {"status": 201}),
                           ("POST", {"method": "POST"}), ("HEAD", {"method": "HEAD"})):
            with self.subTest(case=name):
                key = new_tag()
                q = {"status": item["status"]} if "status" in item else {}
                req = {"url": self.cacheable(key, **q), "method": item.get("method", "GET")}
                for _ in range(2):
                    self.assertEqual(self.one(req)["cache"], "miss")
                self.assertEqual(self.hits(key), 2)

    def test_a_hit_answers_at_once(self):
        key = new_tag()
        url = self.cacheable(key, ms=800)
        self.one(url)
        start = time.monotonic()
        r = self.one(url)
        self.assertEqual(r["cache"], "hit")
        self.assertLess(time.monotonic() - start, 0.7, "a hit waited for the upstream")

    def test_metrics_count_hits_misses_and_bytes(self):
        before = metrics(self)
        key = new_tag()
        url = self.cacheable(key, pad=1000)
        self.one(url)
        self.one(url)
        self.one(url)
        after = metrics(self)
        self.assertEqual(after["fanoutd_cache_hits_total"] - before["fanoutd_cache_hits_total"], 2)
        self.assertEqual(after["fanoutd_cache_misses_total"] - before["fanoutd_cache_misses_total"], 1)
        self.assertGreaterEqual(after["fanoutd_cache_bytes"] - before["fanoutd_cache_bytes"], 1000)


class CacheBoundTest(ShareCase):
    PER_TEST = True

    def test_lru_eviction_within_cache_max_bytes(self):
        self.start_daemon(workers=4, cache_ttl_ms=60000, cache_max_bytes=8000)
        a, b, c = new_tag(), new_tag(), new_tag()
        one = lambda key: self.results([self.cacheable(key, pad=2000)])[0]["cache"]  # noqa: E731
        self.assertEqual([one(a), one(b), one(c)], ["miss"] * 3)
        self.assertEqual(one(a), "hit")           # a is now the most recently used
        d = new_tag()
        self.assertEqual(one(d), "miss")          # makes room: b, the least recently used, leaves
        self.assertEqual(one(a), "hit")
        self.assertEqual(one(b), "miss")
        m = metrics(self)
        self.assertLessEqual(m["fanoutd_cache_bytes"], 8000)
        self.assertGreaterEqual(m["fanoutd_cache_evictions_total"], 1)

    def test_ttl_expiry(self):
        self.start_daemon(workers=4, cache_ttl_ms=400)
        key = new_tag()
        url = self.cacheable(key)
        self.assertEqual(self.results([url])[0]["cache"], "miss")
        self.assertEqual(self.results([url])[0]["cache"], "hit")
        wait_for(lambda: self.results([url])[0]["cache"] == "miss", 5, "the answer outlived its TTL",
                 interval=0.1)

    def test_soak_keeps_rss_within_the_cache_bound(self):
        """Many distinct 20 KB answers through a 1 MiB cache with coalescing on: the cache
        stays within its bound and the daemon's memory does not grow with what passed."""
        bound = 1 << 20
        self.start_daemon(workers=8, cache_ttl_ms=600000, cache_max_bytes=bound, coalesce="on")
        tag = new_tag()

        def round_(name):
            urls = [self.cacheable(f"{tag}-{name}-{i}", pad=20000) for i in range(40)]
            results = self.results(urls + urls[:10])   # some coalesce or hit
            self.assertTrue(all(r["ok"] for r in results))
            self.assertLessEqual(metrics(self)["fanoutd_cache_bytes"], bound)

        for n in range(8):          # warm up: the cache fills, the allocator's arenas grow
            round_(f"w{n}")
        base = rss_kib(self.daemon.proc.pid)
        deadline = time.monotonic() + 90
        for n in range(25):         # then 20 MB more pass through a 1 MiB cache
            if time.monotonic() > deadline:
                break
            round_(n)
        grown = rss_kib(self.daemon.proc.pid) - base
        if os.environ.get("SANITIZER") or "valgrind" in os.environ.get("FANOUTD", ""):
            return  # a sanitizer's quarantine holds freed memory: RSS says nothing here
        print(f"soak: RSS grew by {grown} KiB", file=sys.stderr)
        # 1000 answers of 20 KB (20 MB) went through after the warm-up: a cache that ignored
        # its bound, or a leak of the answers, would grow by about that much; the allocator's
        # own churn stays within a few MiB
        self.assertLess(grown, 10 * 1024, f"RSS grew by {grown} KiB")


class ShareKeptHeadersTest(ShareCase):
    """A shared or cached result carries the kept response headers (response_headers and the
    ones a reference reads) as a copy of its own: the daemon once crashed on both."""
    CONFIG = {"workers": 8, "coalesce": "on", "cache_ttl_ms": 30000}

    def hdrs_url(self, tag):
        return self.url("/hdrs", tag=tag, doc='{"a":1}', h=json.dumps([["X-Tok", tag]]))

    def test_response_headers_through_coalescing_and_the_cache(self):
        tag = new_tag()
        item = {"url": self.hdrs_url(tag), "response_headers": ["X-Tok"]}
        for want in ("miss", "hit", "hit"):
            r = self.results([item])[0]
            self.assertEqual(r.get("cache"), want)
            self.assertEqual(r["headers"], {"x-tok": tag})
        doc = self.batch({"requests": [dict(item, id=f"i{k}") for k in range(6)]}, total=6)
        self.assertEqual([r["headers"] for r in doc["results"]], [{"x-tok": tag}] * 6)
        self.assertEqual(self.get("/healthz").status, 200)

    def test_header_reference_through_coalescing_and_the_cache(self):
        tag = new_tag()
        for k in range(2):   # a: a miss, then a hit; b: a new URL each time
            doc = self.batch({"requests": [
                {"id": "a", "url": self.hdrs_url(tag)},
                {"id": "b", "url": self.url("/echo", tag=tag, k=str(k)), "depends_on": ["a"],
                 "headers": {"X-Got": "${a.headers.x-tok}"}}]}, total=2)
            self.assertTrue(doc["results"][1]["ok"], doc["results"][1])
        got = [r.header("X-Got") for r in self.up.requests(tag=tag) if r.path == "/echo"]
        self.assertEqual(got, [[tag], [tag]])
