"""RESULT fields and body encodings (json / text / base64 / null), content_type, status."""

import base64
import json
import re
import unittest

from harness import DaemonCase, new_tag, strict_json


def b64(data):
    return base64.b64encode(data).decode()


class ResultFieldsTest(DaemonCase):
    CONFIG = {"workers": 16}

    def raw(self, data, ct=None, status=200):
        q = {"b64": b64(data), "status": status}
        if ct is not None:
            q["ct"] = ct
        return self.url("/raw", **q)

    def one(self, url, **item):
        doc = self.batch([dict(url=url, **item)], total=1)
        return doc["results"][0]

    def test_every_field_of_an_ok_result(self):
        url = self.url("/json", v="f")
        r = self.one(url, id="x")
        self.assertEqual(set(r), {"id", "url", "ok", "status", "duration_ms", "content_type",
                                  "body", "body_encoding"})
        self.assertEqual((r["id"], r["url"], r["ok"], r["status"]), ("x", url, True, 200))
        self.assertEqual(r["content_type"], "application/json")
        self.assertEqual((r["body"], r["body_encoding"]), ({"v": "f"}, "json"))

    def test_every_field_of_a_failed_result(self):
        r = self.one("http://127.0.0.1:1/x")
        self.assertEqual(r["status"], None)
        self.assertIs(r["ok"], False)
        self.assertEqual(set(r["error"]), {"code", "message"})
        self.assertEqual(r["error"]["code"], "connect_failed")
        for k in ("body", "body_encoding"):
            self.assertNotIn(k, r)

    def test_json_media_types(self):
        for ct in ("application/json", "application/json; charset=utf-8", "application/problem+json",
                   "application/vnd.api+json; charset=utf-8", "APPLICATION/JSON"):
            with self.subTest(ct=ct):
                r = self.one(self.raw(b'{"a": [1, 2, {"b": null}]}', ct))
                self.assertEqual(r["body_encoding"], "json", r)
                self.assertEqual(r["body"], {"a": [1, 2, {"b": None}]})
                self.assertEqual(r["content_type"], ct, "content_type is the upstream header as sent")

    def test_json_scalars_and_containers(self):
        for text, value in ((b"42", 42), (b'"s"', "s"), (b"true", True), (b"[]", []), (b"{}", {}),
                            (b' \n {"w": 1} \n', {"w": 1}), (b"-0.5e-3", -0.0005)):
            with self.subTest(body=text):
                r = self.one(self.raw(text, "application/json"))
                self.assertEqual((r["body_encoding"], r["body"]), ("json", value))

    def test_big_integers_embedded_exactly(self):
        text = (b'{"big": 123456789012345678901234567890, "neg": -98765432109876543210987654321, '
                b'"p53": 9007199254740993, "u64": 18446744073709551616, "f": 0.1, "e": 1.5e300}')
        resp_doc = self.batch([self.raw(text, "application/json")], total=1)
        raw_reply = resp_doc["_resp"].body
        r = resp_doc["results"][0]
        self.assertEqual(r["body_encoding"], "json", f"big integers made the body not JSON: {r}")
        body = r["body"]
        self.assertEqual(body["big"], 123456789012345678901234567890)
        self.assertEqual(body["neg"], -98765432109876543210987654321)
        self.assertEqual(body["p53"], 9007199254740993, "2^53+1 lost precision")
        self.assertEqual(body["u64"], 18446744073709551616)
        self.assertEqual(body["f"], 0.1)
        self.assertEqual(body["e"], 1.5e300)
        self.assertIn(b"123456789012345678901234567890", raw_reply)

    def test_duplicate_keys_come_back_as_text(self):
        text = '{"a": 1, "a": 2}'
        doc = self.batch([self.raw(text.encode(), "application/json")], total=1)  # strict parse
        r = doc["results"][0]
        self.assertEqual((r["body_encoding"], r["body"]), ("text", text))

    def test_unparseable_json_is_text(self):
        for text in ('{"a": 1', "NaN", "[1,]", "{'a': 1}", '{"a": 1} trailing', "  "):
            with self.subTest(body=text):
                r = self.one(self.raw(text.encode(), "application/json"))
                self.assertEqual((r["body_encoding"], r["body"]), ("text", text))

    def test_json_under_non_json_type_is_text(self):
        for ct in ("text/plain", "application/javascript", "text/json-ish", "application/jsonx"):
            with self.subTest(ct=ct):
                r = self.one(self.raw(b'{"a": 1}', ct))
                self.assertEqual((r["body_encoding"], r["body"]), ("text", '{"a": 1}'))

    def test_text_exact(self):
        text = "caf\u00e9 \u2603 \U0001F600 \"q\" \\ \t\r\n\u2028\x01 end\x00nul"
        r = self.one(self.raw(text.encode(), "text/plain; charset=utf-8"))
        self.assertEqual((r["body_encoding"], r["body"]), ("text", text))
        self.assertEqual(r["content_type"], "text/plain; charset=utf-8")

    def test_invalid_utf8_is_base64(self):
        cases = {"overlong": b"ab\xc0\xafcd", "surrogate": b"x\xed\xa0\x80y",
                 "truncated": b"abc\xe2\x82", "latin1": b"caf\xe9", "too_big": b"\xf4\x90\x80\x80",
                 "binary": bytes(range(256))}
        for name, data in cases.items():
            for ct in ("text/plain", "application/json", None):
                with self.subTest(case=name, ct=ct):
                    r = self.one(self.raw(data, ct))
                    self.assertEqual(r["body_encoding"], "base64", r)
                    self.assertEqual(base64.b64decode(r["body"], validate=True), data)

    def test_json_with_invalid_utf8_inside_string_is_base64(self):
        data = b'{"s": "\xff\xfe"}'
        r = self.one(self.raw(data, "application/json"))
        self.assertEqual(r["body_encoding"], "base64", r)
        self.assertEqual(base64.b64decode(r["body"]), data)

    def test_null_body_cases(self):
        tag = new_tag()
        doc = self.batch({"requests": [
            {"id": "head", "url": self.url("/json", v="h", tag=tag), "method": "HEAD"},
            {"id": "204", "url": self.url("/status", code=204, tag=tag)},
            {"id": "empty-json", "url": self.raw(b"", "application/json")},
            {"id": "empty-none", "url": self.raw(b"")},
            {"id": "empty-404", "url": self.raw(b"", "text/plain", 404)},
        ]}, total=5)
        for item_id in ("head", "204", "empty-json", "empty-none", "empty-404"):
            r = self.item(doc, item_id)
            self.assertIn("body", r, r)
            self.assertIsNone(r["body"], r)
            self.assertIsNone(r["body_encoding"], r)
            self.assertNotIn("error", r)
        self.assertEqual(self.item(doc, "head")["content_type"], "application/json")
        self.assertEqual(self.item(doc, "head")["status"], 200)
        self.assertTrue(self.item(doc, "head")["ok"])
        self.assertTrue(self.item(doc, "204")["ok"])
        self.assertFalse(self.item(doc, "empty-404")["ok"])
        self.assertIsNone(self.item(doc, "empty-none")["content_type"])

    def test_content_type_null_when_absent(self):
        r = self.one(self.raw(b"plain words"))
        self.assertIn("content_type", r)
        self.assertIsNone(r["content_type"])
        self.assertEqual((r["body_encoding"], r["body"]), ("text", "plain words"))
        r = self.one(self.raw(b'{"j": 1}'))
        self.assertIsNone(r["content_type"])
        self.assertEqual(r["body_encoding"], "text", "no Content-Type: not a JSON type")

    def test_status_and_ok(self):
        cases = [(200, True), (201, True), (202, True), (299, True), (300, False), (400, False),
                 (404, False), (418, False), (500, False), (503, False), (599, False)]
        doc = self.batch([self.url("/status", code=c) for c, _ in cases], total=len(cases))
        for r, (code, ok) in zip(doc["results"], cases):
            with self.subTest(code=code):
                self.assertEqual((r["status"], r["ok"]), (code, ok), r)
                self.assertNotIn("error", r, "a non-2xx answer is not an error")
                self.assertEqual(r["body"], {"status": code})
        s = doc["summary"]
        self.assertEqual((s["ok"], s["failed"]), (4, 7))
        self.assertEqual(doc["_resp"].header("X-Batch-Complete"), "false")

    def test_batch_complete_header_and_summary(self):
        doc = self.batch([self.url("/json", v=str(i)) for i in range(3)], total=3)
        self.assertEqual(doc["_resp"].header("X-Batch-Complete"), "true")
        self.assertEqual(doc["summary"], {**doc["summary"], "total": 3, "ok": 3, "failed": 0})
        self.assertTrue((doc["_resp"].header("Content-Type") or "").startswith("application/json"))

    def test_durations_are_plausible(self):
        doc = self.batch([self.url("/delay", ms=300), self.url("/json", v="fast")], total=2)
        slow, fast = doc["results"]
        self.assertGreaterEqual(slow["duration_ms"], 250, slow)
        self.assertLess(slow["duration_ms"], 5000, slow)
        self.assertGreaterEqual(doc["summary"]["duration_ms"], 250)
        self.assertLess(fast["duration_ms"], slow["duration_ms"])

    def test_base64_is_standard_padded(self):
        data = b"\xff\xfe\xfd"  # 3 bytes -> "//79", no padding; 4 bytes -> padding
        for d in (data, data + b"\xfc", data + b"\xfc\xfb"):
            r = self.one(self.raw(d, "application/octet-stream"))
            self.assertEqual(r["body"], base64.b64encode(d).decode(), "standard alphabet with padding")

    def test_gzip_encoded_body(self):
        """A gzip-encoded response is either decoded (required if fanoutd asked for gzip) or
        returned as the exact compressed bytes; never corrupted."""
        import gzip
        tag = new_tag()
        doc_text = '{"gz": [1, 2, 3]}'
        r = self.one(self.url("/gzip", doc=doc_text, tag=tag))
        asked = any("gzip" in v.lower() for req in self.up.requests(tag)
                    for v in req.header("Accept-Encoding"))
        if asked or r["body_encoding"] == "json":
            self.assertEqual((r["body_encoding"], r["body"]), ("json", json.loads(doc_text)), r)
        else:
            self.assertEqual(r["body_encoding"], "base64", r)
            self.assertEqual(gzip.decompress(base64.b64decode(r["body"])).decode(), doc_text)

    def test_reply_is_valid_json_for_hostile_bodies(self):
        bodies = [b"\x00\x01\x02", b'"\\u0000"', b"\xef\xbb\xbf{\"bom\": 1}", b"\\", b"\xed\xbf\xbf",
                  "\u2028\u2029".encode(), b'{"a":"\\ud800"}', b"[" * 600 + b"]" * 600]
        doc = self.batch([self.raw(b, "application/json") for b in bodies], total=len(bodies))
        self.assertTrue(strict_json(doc["_resp"].body))
        for r, data in zip(doc["results"], bodies):
            if r["body_encoding"] == "base64":
                self.assertEqual(base64.b64decode(r["body"]), data)
            elif r["body_encoding"] == "text":
                self.assertEqual(r["body"].encode(), data)


class ByteOrderMarkAndCharsetTest(DaemonCase):
    """CONTRACT.md "Faithful fetching": a UTF-8 byte order mark is ignored (upstream bodies and
    request bodies); a declared charset other than UTF-8/US-ASCII is converted to UTF-8; what
    does not convert is base64 of the bytes as they came."""
    CONFIG = {"workers": 8}

    def raw(self, data, ct=None):
        q = {"b64": b64(data)}
        if ct is not None:
            q["ct"] = ct
        return self.url("/raw", **q)

    def one(self, data, ct):
        return self.batch([self.raw(data, ct)], total=1)["results"][0]

    def check(self, data, ct, encoding, body):
        r = self.one(data, ct)
        self.assertEqual((r["body_encoding"], r["body"]), (encoding, body), f"{ct}: {data!r}")
        self.assertEqual(r["content_type"], ct, "content_type stays as the upstream sent it")
        return r

    def test_bom_json_is_json(self):
        # issue 9, input 8
        self.check(b'\xef\xbb\xbf{"a":1}', "application/json", "json", {"a": 1})
        self.check(b'\xef\xbb\xbf [123456789012345678901234567890]', "application/json; charset=utf-8",
                   "json", [123456789012345678901234567890])

    def test_bom_text_is_text_without_it(self):
        self.check(b"\xef\xbb\xbfhello", "text/plain", "text", "hello")
        for ct in ("text/plain", "application/json", "text/plain; charset=utf-16"):
            with self.subTest(ct=ct):   # only a byte order mark: an empty body
                self.check(b"\xef\xbb\xbf" if "16" not in ct else b"\xff\xfe", ct, None, None)
        self.check(b"\xef\xbb\xbf\xef\xbb\xbfx", "text/plain", "text", "\ufeffx")  # only one is a mark
        self.check(b"\xef\xbb\xbfbad \xff", "text/plain", "base64",
                   b64(b"\xef\xbb\xbfbad \xff"))

    def test_latin1_text(self):
        # issue 9, input 9
        data = "caf\u00e9 cr\u00e8me".encode("iso-8859-1")
        for ct in ("text/plain; charset=iso-8859-1", "text/plain;charset=ISO-8859-1",
                   'text/plain; charset="latin1"', "text/html; format=x; Charset=Latin1"):
            with self.subTest(ct=ct):
                self.check(data, ct, "text", "caf\u00e9 cr\u00e8me")

    def test_other_charsets(self):
        text = "\u20ac 5 caf\u00e9 \U0001F600"
        cases = [
            ("text/plain; charset=windows-1252", "\u20ac 5 caf\u00e9".encode("cp1252"), "\u20ac 5 caf\u00e9"),
            ("text/plain; charset=utf-16", b"\xff\xfe" + text.encode("utf-16-le"), text),
            ("text/plain; charset=UTF-16", b"\xfe\xff" + text.encode("utf-16-be"), text),
            ("text/plain; charset=utf-16", text.encode("utf-16-be"), text),       # no BOM: big-endian
            ("text/plain; charset=utf-16le", text.encode("utf-16-le"), text),
            ("text/plain; charset=utf-16be", text.encode("utf-16-be"), text),
            ("text/plain; charset=koi8-r", "\u043f\u0440\u0438\u0432\u0435\u0442".encode("koi8-r"),
             "\u043f\u0440\u0438\u0432\u0435\u0442"),
            ("text/plain; charset=shift_jis", "\u65e5\u672c".encode("shift_jis"), "\u65e5\u672c"),
            ("text/plain; charset=us-ascii", b"plain", "plain"),
        ]
        for ct, data, want in cases:
            with self.subTest(ct=ct, data=data):
                self.check(data, ct, "text", want)

    def test_json_in_a_declared_charset(self):
        self.check('{"caf\u00e9": 123456789012345678901234567890}'.encode("iso-8859-1"),
                   "application/json; charset=iso-8859-1", "json",
                   {"caf\u00e9": 123456789012345678901234567890})
        self.check('{"u": [1.0, "\u20ac"]}'.encode("utf-16"), "application/json; charset=utf-16",
                   "json", {"u": [1.0, "\u20ac"]})
        r = self.one('{"n": 1e400}'.encode("utf-16-le"), "application/json; charset=utf-16le")
        self.assertEqual(r["body_encoding"], "json")
        self.check("not json \u00e9".encode("latin1"), "application/json; charset=latin1", "text",
                   "not json \u00e9")

    def test_what_does_not_convert_is_base64(self):
        for ct, data in (("text/plain; charset=x-no-such-charset", b"abc"),
                         ("text/plain; charset=windows-1252", b"\x81\x8d"),     # undefined bytes
                         ("text/plain; charset=utf-16le", b"h\x00i"),            # odd length
                         ("text/plain; charset=utf-16le", b"\x00\xd8"),          # lone surrogate
                         ("text/plain; charset=latin1//IGNORE", b"abc"),         # no iconv options
                         ("application/json; charset=bogus", b'{"a":1}')):
            with self.subTest(ct=ct, data=data):
                self.check(data, ct, "base64", b64(data))

    def test_request_body_bom(self):
        url = self.url("/json", v="bom")
        doc = self.batch(b"\xef\xbb\xbf" + json.dumps([url]).encode(), total=1)
        self.assertEqual(doc["results"][0]["body"], {"v": "bom"})
        doc = self.batch(b'\xef\xbb\xbf{"merge":"bodies","requests":["' + url.encode() + b'"]}',
                         total=1, merge="bodies")
        self.assertEqual(doc["data"], {"0": {"v": "bom"}})
        doc = self.batch(b"\xef\xbb\xbf" + url.encode() + b"\n" + url.encode() + b"\n",
                         ctype="text/plain", total=2)
        self.assertEqual([r["body"] for r in doc["results"]], [{"v": "bom"}] * 2)
        self.assertEqual([r["url"] for r in doc["results"]], [url, url])
        # only one mark is ignored: a second one is not JSON
        self.assert_error(self.post(b"\xef\xbb\xbf\xef\xbb\xbf[]"), 400, "bad_request")


class LargeBodyResultTest(DaemonCase):
    CONFIG = {"workers": 4, "max_response_bytes": 3 * 1024 * 1024}

    def test_large_bodies_intact(self):
        n = 2 * 1024 * 1024 + 3
        doc = self.batch([self.url("/big", bytes=n), self.url("/big", bytes=n, chunked=1)], total=2)
        for r in doc["results"]:
            self.assertEqual(r["body_encoding"], "text")
            self.assertEqual(len(r["body"]), n)
            self.assertIsNone(re.search(r"[^a]", r["body"]))


if __name__ == "__main__":
    unittest.main()
