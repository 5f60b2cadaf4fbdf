"""GET /healthz and GET /metrics (Prometheus text exposition 0.0.4)."""

import re
import unittest

from harness import DaemonCase, strict_json

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\]|\\.)*\",?)*\})?"
                    r" (-?[0-9.eE+-]+|NaN|[+-]Inf)( -?[0-9]+)?$")


def parse(text, test):
    samples, types, order = {}, {}, []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$", line)
            if m and m.group(1) == "TYPE":
                test.assertIn(m.group(3), ("counter", "gauge", "histogram", "summary", "untyped"), line)
                test.assertNotIn(m.group(2), types, f"two TYPE lines for {m.group(2)}")
                test.assertFalse([s for s in order if s == m.group(2)], f"TYPE after samples: {line}")
                types[m.group(2)] = m.group(3)
            continue
        m = SAMPLE.match(line)
        test.assertIsNotNone(m, f"malformed sample line: {line!r}")
        key = m.group(1) + (m.group(2) or "")
        test.assertNotIn(key, samples, f"series repeated: {key}")
        samples[key] = float(m.group(3))
        order.append(m.group(1))
    return samples, types


def family(name, types):
    for suffix in ("", "_total", "_count", "_sum", "_bucket", "_created"):
        if suffix and name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return name if name in types else None


class MetricsHealthzTest(DaemonCase):
    CONFIG = {"workers": 4}

    def scrape(self):
        resp = self.get("/metrics")
        self.assertEqual(resp.status, 200)
        return resp, parse(resp.body.decode("utf-8"), self)

    def test_healthz(self):
        resp = self.get("/healthz")
        self.assertEqual(resp.status, 200)
        self.assertEqual(strict_json(resp.body), {"status": "ok"})
        self.assertTrue((resp.header("Content-Type") or "").startswith("application/json"))

    def test_healthz_and_metrics_answer_while_workers_are_busy(self):
        from harness import Background, new_tag, wait_for
        tag = new_tag()
        busy = Background(lambda: self.batch([self.url("/delay", ms=1500, tag=tag, i=i) for i in range(4)],
                                             total=4, timeout=10))
        wait_for(lambda: len(self.up.requests(tag)) == 4, 5, "the busy batch never started")
        for path in ("/healthz", "/metrics"):
            resp = self.get(path)
            self.assertEqual(resp.status, 200)
            self.assertLess(resp.elapsed, 1.0, f"{path} waited for the upstream work (1.5 s)")
        self.assertEqual(busy.result(10)["summary"]["ok"], 4)

    def test_exposition_format(self):
        resp, (samples, types) = self.scrape()
        ctype = resp.header("Content-Type") or ""
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        self.assertIn("version=0.0.4", ctype.replace(" ", ""))
        self.assertTrue(samples, "no samples")
        self.assertTrue(resp.body.endswith(b"\n"), "the exposition ends with a newline")
        for key, value in samples.items():
            name = key.split("{")[0]
            self.assertIsNotNone(family(name, types), f"{name} has no TYPE line")
            if types[family(name, types)] == "counter":
                self.assertGreaterEqual(value, 0, key)

    def test_counters_grow_with_work(self):
        _, (before, types) = self.scrape()
        self.batch([self.url("/json", v="a"), self.url("/json", v="b"), "http://127.0.0.1:1/"], total=3)
        self.batch([self.url("/json", v="c")], total=1)
        _, (after, _) = self.scrape()
        counters = {k for k in after if types.get(family(k.split("{")[0], types) or "") == "counter"}
        self.assertTrue(counters, "no counters exposed")
        for k in counters & set(before):
            self.assertGreaterEqual(after[k], before[k], f"counter {k} went down")
        deltas = {k: after[k] - before.get(k, 0) for k in counters}
        self.assertTrue(any(d >= 4 for d in deltas.values()), f"no counter counted the 4 items: {deltas}")
        self.assertTrue(any(d >= 2 for d in deltas.values()), f"no counter counted the 2 batches: {deltas}")


if __name__ == "__main__":
    unittest.main()
