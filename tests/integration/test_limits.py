"""Limits on what one batch may make fanoutd hold or do: max_answer_bytes (the bodies of
one answer, counted as written) and per_host_limit counted per destination, however
the host is spelled."""

import json
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


if __name__ == "__main__":
    unittest.main()
