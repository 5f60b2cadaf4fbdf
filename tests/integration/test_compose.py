"""Composition (issue 12): depends_on and run_if, references between items, select, group,
merge_arrays and response_headers, against a real upstream."""

import base64
import json
import time
from urllib.parse import quote

from harness import DaemonCase, new_tag


class ComposeCase(DaemonCase):
    CONFIG = {"workers": 8, "deny": ["127.0.0.2/32"], "default_timeout_ms": 4000}

    def doc_url(self, doc, **q):
        return self.url("/doc", doc=json.dumps(doc) if not isinstance(doc, str) else doc, **q)

    def hdr_url(self, doc, headers, **q):
        return self.url("/hdrs", doc=json.dumps(doc), h=json.dumps(headers), **q)

    def echo_of(self, r):
        self.assertTrue(r["ok"], r)
        return r["body"]

    def echo_header(self, r, name):
        return [v for k, v in self.echo_of(r)["headers"] if k.lower() == name.lower()]

    def echo_body(self, r):
        return base64.b64decode(self.echo_of(r)["body_b64"]).decode()

    def refused(self, payload, *names):
        resp = self.post(payload)
        err = self.assert_error(resp, 400, "bad_request")["error"]
        for n in names:
            self.assertIn(n, err["message"])
        return err["message"]


class DependencyTest(ComposeCase):
    def test_chain_overlaps_independent_items(self):
        """Two 300 ms items and a dependant on both finish in about 600 ms, not 900; an
        independent 300 ms item runs alongside the first two; the dependant starts only after
        both have finished."""
        tag = new_tag()
        items = [{"id": "a", "url": self.url("/delay", ms=300, tag=tag, i="a")},
                 {"id": "b", "url": self.url("/delay", ms=300, tag=tag, i="b")},
                 {"id": "c", "url": self.url("/delay", ms=300, tag=tag, i="c"), "depends_on": ["a", "b"]},
                 {"id": "d", "url": self.url("/delay", ms=300, tag=tag, i="d")}]
        t0 = time.monotonic()
        doc = self.batch({"requests": items}, total=4)
        elapsed = time.monotonic() - t0
        self.assertEqual(doc["summary"]["ok"], 4)
        seen = {r.query["i"]: r for r in self.up.requests(tag=tag)}
        self.assertEqual(set(seen), {"a", "b", "c", "d"})
        self.assertLess(max(seen[k].when for k in "abd") - min(seen[k].when for k in "abd"), 0.25,
                        "independent items did not start together")
        self.assertGreaterEqual(seen["c"].when, max(seen["a"].when, seen["b"].when) + 0.28,
                                "the dependant started before its dependencies finished")
        self.assertGreaterEqual(elapsed, 0.58)
        self.assertLess(elapsed, 0.88, "the chain took as long as running everything in turn")

    def test_failed_dependency_run_if_and_transitive(self):
        tag = new_tag()
        items = [{"id": "bad", "url": self.url("/status", code=503)},
                 {"id": "skip", "url": self.url("/json", tag=tag, v="skip"), "depends_on": ["bad"]},
                 {"id": "then", "url": self.url("/json", tag=tag, v="then"), "depends_on": ["skip"]},
                 {"id": "always", "url": self.url("/json", tag=tag, v="always"), "depends_on": ["bad"],
                  "run_if": "always"},
                 {"id": "ok", "url": self.url("/json", tag=tag, v="ok"), "depends_on": ["always"],
                  "run_if": "success"}]
        doc = self.batch({"requests": items}, total=5)
        skip, then = self.item(doc, "skip"), self.item(doc, "then")
        self.assert_item_error(skip, "failed_dependency", status=None)
        self.assertIn('"bad"', skip["error"]["message"])
        self.assert_item_error(then, "failed_dependency", status=None)
        self.assertIn('"skip"', then["error"]["message"])
        self.assertEqual(self.item(doc, "always")["body"], {"v": "always"})
        self.assertEqual(self.item(doc, "ok")["body"], {"v": "ok"})
        self.assertEqual(sorted(r.query["v"] for r in self.up.requests(tag=tag)), ["always", "ok"])

    def test_graph_errors_are_400_and_fetch_nothing(self):
        tag = new_tag()
        u = self.url("/json", tag=tag)
        cases = [
            ([{"id": "x", "url": u, "depends_on": ["nope"]}], ["x", "nope"]),
            ([{"id": "x", "url": u, "depends_on": ["x"]}], ["x", "itself"]),
            ([{"id": "x", "url": u, "depends_on": ["y"]}, {"id": "y", "url": u, "depends_on": ["x"]}],
             ["cycle"]),
            ([{"id": "a", "url": u}, {"id": "b", "url": u},
              {"id": "c", "url": u + "&q=${b.status}", "depends_on": ["a"]}], ['"c"', "depends_on"]),
            ([{"id": "a", "url": u}, {"id": "c", "url": u, "depends_on": ["a"], "body": "${a.bogus}"}],
             ['"c"', "malformed"]),
            ([{"id": "a", "url": u}, {"id": "c", "url": u, "depends_on": ["a"],
                                      "headers": {"X": "${a.status"}}], ['"c"']),
            ([{"id": "a.b", "url": u}, {"id": "c", "url": u + "&x=${a.b.status}", "depends_on": ["a.b"]}],
             ['"c"', "'.'"]),
            ([{"id": "a}", "url": u}, {"id": "c", "url": u + "&x=${a}.status}", "depends_on": ["a}"]}],
             ['"c"']),
            ([{"id": "a", "url": u, "run_if": "maybe"}], ["run_if"]),
        ]
        for items, names in cases:
            with self.subTest(items=items):
                self.refused({"requests": items}, *names)
        self.assertEqual(self.up.requests(tag=tag), [])

    def test_dollar_brace_is_plain_text_without_depends_on(self):
        tag = new_tag()
        url = self.url("/json", tag=tag, v="x") + "&q=$${a.status}"
        doc = self.batch([{"url": url, "id": "a"}], total=1)
        self.assertTrue(doc["results"][0]["ok"], doc)
        self.assertEqual(doc["results"][0]["url"], url)
        seen = self.up.requests(tag=tag)
        self.assertEqual(seen[0].query.get("q"), "$${a.status}")

    def test_dependant_own_timeout_and_batch_deadline(self):
        items = [{"id": "a", "url": self.url("/delay", ms=500)},
                 {"id": "b", "url": self.url("/delay", ms=200), "depends_on": ["a"], "timeout_ms": 400}]
        doc = self.batch({"requests": items}, total=2)
        self.assertEqual(doc["summary"]["ok"], 2, doc)
        items = [{"id": "a", "url": self.url("/delay", ms=500)},
                 {"id": "b", "url": self.url("/delay", ms=2000), "depends_on": ["a"]},
                 {"id": "c", "url": self.url("/json"), "depends_on": ["b"]}]
        t0 = time.monotonic()
        doc = self.batch({"requests": items, "timeout_ms": 900}, total=3)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertTrue(self.item(doc, "a")["ok"])
        self.assert_item_error(self.item(doc, "b"), "deadline_exceeded", status=None)
        self.assert_item_error(self.item(doc, "c"), "deadline_exceeded", status=None)


class ReferenceTest(ComposeCase):
    def test_login_then_token(self):
        """Log in (POST), then send the token the login returned, its session header and status."""
        login = self.hdr_url({"token": "tok-123", "user": {"id": 7}}, [["X-Session", "s-9"]])
        items = [{"id": "login", "url": login, "method": "POST", "body": {"user": "u", "pw": "p"}},
                 {"id": "me", "url": self.url("/echo") + "?user=${login.body#/user/id}",
                  "depends_on": ["login"],
                  "headers": {"Authorization": "Bearer ${login.body#/token}",
                              "X-Session": "${login.headers.x-session}", "X-S": "${login.status}"}}]
        doc = self.batch({"requests": items}, total=2)
        me = self.item(doc, "me")
        self.assertEqual(me["url"], items[1]["url"], "a RESULT's url is the template as written")
        self.assertEqual(self.echo_header(me, "Authorization"), ["Bearer tok-123"])
        self.assertEqual(self.echo_header(me, "X-Session"), ["s-9"])
        self.assertEqual(self.echo_header(me, "X-S"), ["200"])
        self.assertTrue(self.echo_of(me)["path"].endswith("?user=7"), self.echo_of(me)["path"])
        self.assertNotIn("headers", self.item(doc, "login"), "headers read by a reference are not listed")

    def test_search_then_first_hit(self):
        tag = new_tag()
        hits = {"hits": [{"url": self.url("/json", v="first", tag=tag)},
                         {"url": self.url("/json", v="second", tag=tag)}]}
        items = [{"id": "search", "url": self.doc_url(hits)},
                 {"id": "first", "url": "${search.body#/hits/0/url}", "depends_on": ["search"],
                  "select": "/v"}]
        doc = self.batch({"requests": items, "merge": "bodies"}, total=2)
        self.assertEqual(doc["data"]["first"], "first")
        self.assertEqual([r.query["v"] for r in self.up.requests(tag=tag)], ["first"])

    def test_url_percent_encoding_and_whole_url_checks(self):
        tag = new_tag()
        value = "a b/c&d=\u00e9?#%+~x_y.z-"
        a_text = json.dumps({"q": value, "n": 0, "not": "ftp://x/"}).replace('"n": 0', '"n": 1.50')
        items = [{"id": "a", "url": self.doc_url(a_text)},
                 {"id": "b", "url": self.url("/json", tag=tag, v="b") + "&q=${a.body#/q}&n=${a.body#/n}",
                  "depends_on": ["a"]},
                 {"id": "c", "url": "${a.body#/not}", "depends_on": ["a"]}]
        doc = self.batch({"requests": items}, total=3)
        seen = self.up.requests(tag=tag)
        self.assertEqual(len(seen), 1)
        raw = seen[0].target.split("&q=", 1)[1]
        self.assertEqual(raw, quote(value, safe="-._~") + "&n=1.50")
        self.assert_item_error(self.item(doc, "c"), "invalid_url", status=None)

    def test_substituted_url_is_policed(self):
        """A dependant whose substituted URL points at a denied address gets blocked_destination,
        whether the reference is the whole url or the host inside it."""
        denied = self.url("/json", host="127.0.0.2", tag="never")
        items = [{"id": "a", "url": self.doc_url({"next": denied, "host": "127.0.0.2"})},
                 {"id": "whole", "url": "${a.body#/next}", "depends_on": ["a"]},
                 {"id": "host", "url": "http://${a.body#/host}:%d/json" % self.up.port, "depends_on": ["a"]}]
        doc = self.batch({"requests": items}, total=3)
        for item_id in ("whole", "host"):
            self.assert_item_error(self.item(doc, item_id), "blocked_destination", status=None)

    def test_bodies_typed_and_text(self):
        a = {"count": 5, "big": 123456789012345678901234567890, "tags": ["x", "y"], "s": "q\"uote"}
        a_text = json.dumps(a).replace("5,", "5.0e0,")
        items = [{"id": "a", "url": self.doc_url(a_text)},
                 {"id": "json", "url": self.url("/echo"), "method": "POST", "depends_on": ["a"],
                  "body": {"n": "${a.body#/count}", "big": "${a.body#/big}", "t": "${a.body#/tags}",
                           "msg": "n=${a.body#/count} s=${a.body#/s}", "lit": "$${a.status}", "keep": 1E+2}},
                 {"id": "text", "url": self.url("/echo"), "method": "POST", "depends_on": ["a"],
                  "body": "${a.body}|${a.body#/tags}|${a.status}"}]
        doc = self.batch({"requests": items}, total=3)
        sent = self.echo_body(self.item(doc, "json"))
        self.assertIn('"n": 5.0e0', sent)
        self.assertIn('"big": 123456789012345678901234567890', sent)
        self.assertEqual(json.loads(sent), {"n": 5.0, "big": 123456789012345678901234567890, "t": ["x", "y"],
                                            "msg": 'n=5.0e0 s=q"uote', "lit": "${a.status}", "keep": 100.0})
        self.assertEqual(self.echo_body(self.item(doc, "text")), a_text + '|["x","y"]|200')

    def test_unresolvable_and_crlf_fail_without_fetching(self):
        tag = new_tag()
        items = [{"id": "a", "url": self.doc_url({"v": "line\r\nX-Evil: 1"})},
                 {"id": "t", "url": self.url("/raw", body="plain", ct="text/plain")},
                 {"id": "crlf", "url": self.url("/json", tag=tag), "depends_on": ["a"],
                  "headers": {"X-V": "${a.body#/v}"}},
                 {"id": "ptr", "url": self.url("/json", tag=tag), "depends_on": ["a"], "body": "${a.body#/zz}",
                  "method": "POST"},
                 {"id": "notjson", "url": self.url("/json", tag=tag) + "&x=${t.body#/v}", "depends_on": ["t"]},
                 {"id": "hdr", "url": self.url("/json", tag=tag), "depends_on": ["a"],
                  "headers": {"X": "${a.headers.x-none}"}}]
        doc = self.batch({"requests": items}, total=6)
        for item_id, name in (("crlf", "${a.body#/v}"), ("ptr", "${a.body#/zz}"),
                              ("notjson", "${t.body#/v}"), ("hdr", "${a.headers.x-none}")):
            r = self.item(doc, item_id)
            self.assert_item_error(r, "failed_dependency", status=None)
            self.assertIn(name, r["error"]["message"])
        self.assertEqual(self.up.requests(tag=tag), [])

    def test_run_if_always_with_no_response_and_plain_dollar_brace(self):
        """run_if "always" after a dependency that got no response: a reference to its status
        cannot be resolved (failed_dependency); a header of an item without depends_on keeps a
        ${ that names no item of the batch as text."""
        items = [{"id": "down", "url": "http://127.0.0.1:1/"},
                 {"id": "after", "url": self.url("/echo"), "depends_on": ["down"], "run_if": "always",
                  "headers": {"X-S": "${down.status}"}},
                 {"id": "bare", "url": self.url("/echo"), "run_if": "always", "depends_on": ["down"]},
                 {"id": "plain", "url": self.url("/echo"), "headers": {"X-T": "${up.status}"}}]
        doc = self.batch({"requests": items}, total=4)
        after = self.item(doc, "after")
        self.assert_item_error(after, "failed_dependency", status=None)
        self.assertIn("${down.status}", after["error"]["message"])
        self.assertTrue(self.item(doc, "bare")["ok"])
        self.assertEqual(self.echo_header(self.item(doc, "plain"), "X-T"), ["${up.status}"])

    def test_reference_without_depends_on_is_refused(self):
        """${ID. naming another item of the batch, in an item without depends_on (url, header
        or body), is a 400 naming both items and depends_on; nothing is fetched. ${ naming no
        item stays text, and an item may hold its own id."""
        tag = new_tag()
        src = {"id": "src", "url": self.url("/json", v="x", tag=tag)}
        for where, item in (
                ("url", {"id": "user", "url": self.url("/json", tag=tag) + "&v=${src.body#/v}"}),
                ("header", {"id": "user", "url": self.url("/echo", tag=tag),
                            "headers": {"X-V": "${src.status}"}}),
                ("body", {"id": "user", "url": self.url("/echo", tag=tag), "method": "POST",
                          "body": {"v": "${src.body}"}})):
            with self.subTest(where):
                resp = self.post({"requests": [src, item]})
                self.assert_error(resp, 400, "bad_request")
                msg = json.loads(resp.body)["error"]["message"]
                for word in ('"src"', '"user"', "depends_on"):
                    self.assertIn(word, msg)
        self.assertEqual(self.up.requests(tag=tag), [], "a refused batch fetched something")
        doc = self.batch({"requests": [src, {"id": "self", "url": self.url("/echo"),
                                             "headers": {"X-A": "${self.status}",
                                                         "X-B": "${nobody.body}",
                                                         "X-C": "$${src.status}"}}]}, total=2)
        self.assertEqual(self.echo_header(self.item(doc, "self"), "X-A"), ["${self.status}"])
        self.assertEqual(self.echo_header(self.item(doc, "self"), "X-B"), ["${nobody.body}"])
        # "$${" is no reference (and, without depends_on, no escape either: sent as written)
        self.assertEqual(self.echo_header(self.item(doc, "self"), "X-C"), ["$${src.status}"])

    def test_effective_url(self):
        """effective_url is the URL of the final request sent, present only when it is not the
        url as written: after a redirect, or when the url had references (url stays the
        template); in the document and in stream lines."""
        final = self.url("/json", v="final")
        items = [{"url": self.url("/redirect", n=2, to=final), "id": "moved"},
                 {"url": self.url("/json", v="word"), "id": "a"},
                 {"url": self.url("/json", v="plain") + "&got=${a.body#/v}", "id": "ref",
                  "depends_on": ["a"]},
                 {"url": self.url("/redirect", to="/json?v=x") + "&w=${a.body#/v}",
                  "id": "both", "depends_on": ["a"]}]
        doc = self.batch({"requests": items}, total=4)
        self.assertEqual(self.item(doc, "moved")["effective_url"], final)
        self.assertEqual(self.item(doc, "ref")["effective_url"], self.url("/json", v="plain") + "&got=word")
        self.assertEqual(self.item(doc, "ref")["url"], items[2]["url"])
        self.assertEqual(self.item(doc, "both")["effective_url"], self.url("/json", v="x"))
        self.assertNotIn("effective_url", self.item(doc, "a"))
        resp = self.post({"requests": items}, headers={"Accept": "application/x-ndjson"})
        self.assertEqual(resp.status, 200, resp)
        lines = [json.loads(line) for line in resp.body.decode().splitlines() if line.strip()]
        by_id = {line["id"]: line for line in lines if "id" in line}
        self.assertEqual(by_id["moved"]["effective_url"], final)
        self.assertNotIn("effective_url", by_id["a"])

    def test_body_references_in_a_stream(self):
        """Streamed (NDJSON), a dependency's body stays readable for its dependants after its
        own line is written: whole body, a pointer into it, and a header, as in a document."""
        items = [{"id": "a", "url": self.url("/json", v="tok")},
                 {"id": "b", "url": self.url("/echo") + "?t=${a.body#/v}", "depends_on": ["a"]},
                 {"id": "c", "url": self.url("/echo"), "method": "POST", "depends_on": ["a"],
                  "body": {"whole": "${a.body}"}}]
        resp = self.post({"requests": items}, headers={"Accept": "application/x-ndjson"})
        self.assertEqual(resp.status, 200, resp)
        lines = [json.loads(line) for line in resp.body.decode().splitlines() if line.strip()]
        by_id = {line["id"]: line for line in lines if "id" in line}
        for k in ("a", "b", "c"):
            self.assertTrue(by_id[k]["ok"], by_id[k])
        self.assertIn("t=tok", by_id["b"]["body"]["path"])
        sent = base64.b64decode(by_id["c"]["body"]["body_b64"])
        self.assertEqual(json.loads(sent), {"whole": {"v": "tok"}})

    def test_many_dependants_compete_fairly(self):
        """A fan of 12 dependants on one item all become runnable together when it finishes and
        run at the same time (8 workers: in two waves, not twelve)."""
        tag = new_tag()
        items = [{"id": "root", "url": self.url("/delay", ms=200)}]
        items += [{"id": f"d{i}", "url": self.url("/delay", ms=300, tag=tag), "depends_on": ["root"]}
                  for i in range(12)]
        t0 = time.monotonic()
        doc = self.batch({"requests": items}, total=13)
        self.assertEqual(doc["summary"]["ok"], 13)
        self.assertLess(time.monotonic() - t0, 1.6)
        self.assertGreaterEqual(self.up.max_inflight(tag), 6)

    def test_item_json_body_sent_as_written(self):
        """An item's JSON body keeps every number's spelling (1E+2, 0.1, 1e400) on its way upstream."""
        body = '{"a": 1E+2, "b": 0.1, "c": 1e400, "d": [1.0, -0, 123456789012345678901234567890]}'
        payload = '{"requests": [{"url": "%s", "method": "POST", "body": %s}]}' % (self.url("/echo"), body)
        doc = self.batch(payload, total=1)
        self.assertEqual(self.echo_body(doc["results"][0]), body)


class ShapeTest(ComposeCase):
    DOC = {"data": {"items": [{"name": "a"}, {"name": "b"}], "total": 2, "n": 1.0E+2}, "x~y": {"a/b": 3}}

    def test_select_forms_in_every_mode(self):
        u = self.doc_url(json.dumps(self.DOC).replace("100.0", "1.0E+2"))
        items = [{"id": "one", "url": u, "select": "/data/items/1/name"},
                 {"id": "esc", "url": u, "select": "/x~0y/a~1b"},
                 {"id": "num", "url": u, "select": "/data/n"},
                 {"id": "proj", "url": u, "select": {"t": "/data/total", "none": "/nope"}},
                 {"id": "miss", "url": u, "select": "/data/items/9"},
                 {"id": "text", "url": self.url("/raw", body="x", ct="text/plain"), "select": ""},
                 {"id": "empty", "url": self.url("/status", code=204), "select": {"a": "/a"}}]
        doc = self.batch({"requests": items}, total=7)
        self.assertEqual(self.item(doc, "one")["body"], "b")
        self.assertEqual(self.item(doc, "esc")["body"], 3)
        self.assertEqual(self.item(doc, "proj")["body"], {"t": 2, "none": None})
        for item_id in ("miss", "text", "empty"):
            r = self.item(doc, item_id)
            self.assert_item_error(r, "select_failed")
            self.assertNotIn("body", r)
        self.assertEqual(self.item(doc, "miss")["status"], 200)
        resp = self.post({"requests": items[2:3]})
        self.assertIn(b'"body":1.0E+2', resp.body)
        deep = self.batch({"merge": "deep", "requests": [items[3], {"url": u, "select": "/data/items",
                                                                     "group": "items"}]}, total=2)
        self.assertEqual(deep["data"], {"t": 2, "none": None, "items": [{"name": "a"}, {"name": "b"}]})

    def test_group_and_merge_arrays(self):
        items = [{"url": self.doc_url({"l": [1], "m": {"t": ["a"]}})},
                 {"url": self.doc_url({"l": [2, 3], "m": {"t": "s"}})},
                 {"url": self.doc_url([4]), "group": "l"},
                 {"url": self.doc_url("txt"), "group": "g"},
                 {"url": self.url("/raw", body="plain", ct="text/plain"), "group": "p"},
                 {"url": self.url("/status", code=500), "group": "bad"}]
        concat = self.batch({"merge": "deep", "merge_arrays": "concat", "requests": items}, total=6)
        self.assertEqual(concat["data"], {"l": [1, 2, 3, 4], "m": {"t": "s"}, "g": "txt", "p": "plain"})
        replace = self.batch({"merge": "deep", "requests": items}, total=6)
        self.assertEqual(replace["data"]["l"], [4])
        # group and merge_arrays act only in deep mode; elsewhere they are a mistake (400)
        self.refused({"requests": items[2:4]}, "group")
        self.refused({"merge": "bodies", "requests": items[2:4]}, "group")
        self.refused({"merge": "bodies", "merge_arrays": "concat", "requests": items[:2]},
                     "merge_arrays")
        self.refused({"merge_arrays": "concat", "requests": items[:2]}, "merge_arrays")
        self.refused({"merge": "deep", "merge_arrays": "zip", "requests": items}, "merge_arrays")

    def test_response_headers(self):
        u = self.hdr_url({"v": 1}, [["X-One", "1"], ["X-Multi", "a"], ["X-Multi", "b"], ["X-Ref", "r"]])
        items = [{"id": "h", "url": u, "response_headers": ["x-one", "X-MULTI", "X-Absent", "x-one"]},
                 {"id": "no", "url": "http://127.0.0.1:1/", "response_headers": ["x-one"]},
                 {"id": "dep", "url": self.url("/echo"), "depends_on": ["h"],
                  "headers": {"X-R": "${h.headers.x-ref}"}}]
        doc = self.batch({"requests": items}, total=3)
        self.assertEqual(self.item(doc, "h")["headers"], {"x-one": "1", "x-multi": "a, b"})
        self.assertEqual(self.item(doc, "no")["headers"], {})
        self.assertEqual(self.echo_header(self.item(doc, "dep"), "X-R"), ["r"])
        self.assertNotIn("headers", self.item(doc, "dep"))
        # The merged documents have no place for headers: asking for them there is a 400.
        for merge in ("bodies", "deep"):
            self.refused({"merge": merge, "requests": items[1:2]}, "response_headers")

    def test_response_headers_of_final_response_only(self):
        final = self.hdr_url({"v": "end"}, [["X-Final", "yes"]])
        url = self.url("/redirect", to=final[final.index("/hdrs"):])
        doc = self.batch([{"url": url, "response_headers": ["x-final", "location"]}], total=1)
        self.assertEqual(doc["results"][0]["headers"], {"x-final": "yes"})
