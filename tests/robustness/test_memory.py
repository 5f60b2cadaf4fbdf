"""Memory one request can make fanoutd hold, and memory given back after a large answer.

Peak RSS (VmHWM) for a request that would hold about 2 GB without max_answer_bytes stays
under the bound the README states; RSS a few seconds after a 400+ MiB answer comes back
near the idle figure. Sanitizer builds keep shadow memory and quarantines: their RSS says
nothing of fanoutd's, so the RSS checks are skipped there (the answers are still checked).
"""

import os
import unittest

from common import RobustCase, new_tag, proc_status, wait_for

MIB = 1048576
# The daemon's environment: as its systemd unit sets it, and glibc's defaults.
UNIT_ENV = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.tcache_count=0")
PLAIN_ENV = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
# Escaping hundreds of MiB takes a sanitizer build longer than the default deadline.
SLOW_BUILDS = {"batch_timeout_ms": 180000, "max_timeout_ms": 180000, "default_timeout_ms": 180000}


def rss_checked():
    return not os.environ.get("SANITIZER") and "valgrind" not in os.environ.get("FANOUTD", "")


class MemoryTest(RobustCase):

    def big(self, n, byte, ct="text/plain"):
        return self.url("/big", bytes=n, byte=byte, ct=ct, tag=new_tag())

    def answer(self, items, timeout=200):
        resp = self.post(items, timeout=timeout)
        self.assertEqual(resp.status, 200, resp)
        return resp

    def test_peak_for_one_request_is_bounded(self):
        """40 items of 8 MiB of byte 0x01 (each 48 MiB as written) and 20 of 1 MiB of text:
        about 1.9 GB of answer without a cap. With max_answer_bytes 16 MiB and 4 workers the
        README's bound is 2 x 16 + 4 x (8 + min(6 x 8, 16)) = 128 MiB over idle, plus the
        batch's own few MiB (16 MiB allowed here)."""
        workers, resp_cap, answer_cap = 4, 8 * MIB, 16 * MIB
        d = self.start_daemon(env=UNIT_ENV, workers=workers, max_response_bytes=resp_cap,
                              max_answer_bytes=answer_cap, **SLOW_BUILDS)
        self.answer([self.url("/json", v=i) for i in range(workers)])   # warm the workers up
        hwm0 = proc_status(d.pid, "VmHWM")
        self.assertIsNotNone(hwm0, "cannot read /proc/PID/status")
        items = [self.big(8 * MIB, 1) for _ in range(40)] + [self.big(MIB, 97) for _ in range(20)]
        resp = self.answer(items)
        res = resp.json()["results"]
        refused = [r for r in res if not r["ok"]]
        kept = [r for r in res if r["ok"]]
        self.assertTrue(all(r["error"]["code"] == "too_large" and r["status"] == 200 for r in refused))
        self.assertTrue(all(r["ok"] is False for r in res[:40]), "48 MiB as written > 16 MiB cap")
        self.assertEqual(len(kept), 15, "15 x (1 MiB + 2) fit in 16 MiB, the 16th does not")
        self.assertLess(len(resp.body), answer_cap + MIB)
        hwm1 = proc_status(d.pid, "VmHWM")
        grew = (hwm1 - hwm0) / 1024
        bound = (2 * answer_cap + workers * (resp_cap + min(6 * resp_cap, answer_cap))) / MIB + 16
        if rss_checked():
            self.assertLess(grew, bound, f"peak RSS grew {grew:.0f} MiB (VmHWM {hwm0} -> {hwm1} kB); "
                                         f"the README's bound is {bound:.0f} MiB")

    def test_memory_given_back_after_a_large_answer(self):
        """A 450 MiB answer (25 text and 25 binary bodies of 8 MiB): 5 s after it was read,
        RSS is back under idle + 64 MiB, in the unit's environment and in glibc's default."""
        for name, env in (("unit", UNIT_ENV), ("plain", PLAIN_ENV)):
            with self.subTest(env=name):
                d = self.start_daemon(env=env, workers=8, max_answer_bytes=1024 * MIB, **SLOW_BUILDS)
                self.answer([self.url("/json", v=i) for i in range(8)])
                idle = proc_status(d.pid, "VmRSS")
                items = [self.big(8 * MIB, 97) for _ in range(25)] + \
                        [self.big(8 * MIB, 255, "application/octet-stream") for _ in range(25)]
                resp = self.answer(items)
                doc = resp.json()
                self.assertEqual(doc["summary"]["ok"], 50, "every body fits in 1 GiB")
                size = len(resp.body) / MIB
                del doc, resp
                hwm = proc_status(d.pid, "VmHWM")
                if not rss_checked():
                    continue
                self.assertGreater(hwm - idle, 300 * 1024, "the answer was held at once")
                bound = idle + 64 * 1024
                try:
                    wait_for(lambda: proc_status(d.pid, "VmRSS") < bound, 5,
                             "RSS to come back near idle")
                except AssertionError:
                    self.fail(f"RSS {proc_status(d.pid, 'VmRSS')} kB 5 s after a {size:.0f} MiB "
                              f"answer; idle {idle} kB, peak {hwm} kB")
                d.stop()

    def test_memory_given_back_after_each_of_several_batches(self):
        """Three batches one after another, each of 7 bodies of 8 MiB (56 MiB answers):
        RSS came back to 90, then 184, then 185 MiB, and stayed there (freed bodies kept in
        the worker threads' arenas, whose top malloc_trim leaves alone). After each batch
        RSS must come back under idle + 24 MiB, in the unit's environment and in glibc's."""
        for name, env in (("unit", UNIT_ENV), ("plain", PLAIN_ENV)):
            with self.subTest(env=name):
                d = self.start_daemon(env=env, **SLOW_BUILDS)
                self.answer([self.url("/json", v=i) for i in range(8)])
                idle = proc_status(d.pid, "VmRSS")
                for round_ in range(3):
                    resp = self.answer([self.big(8 * MIB, 97) for _ in range(7)])
                    self.assertEqual(resp.json()["summary"]["ok"], 7)
                    del resp
                    if not rss_checked():
                        continue
                    bound = idle + 24 * 1024
                    try:
                        wait_for(lambda: proc_status(d.pid, "VmRSS") < bound, 6,
                                 "RSS to come back near idle")
                    except AssertionError:
                        self.fail(f"batch {round_ + 1}: RSS {proc_status(d.pid, 'VmRSS')} kB 6 s "
                                  f"after a 56 MiB answer; idle {idle} kB")
                d.stop()


    def test_dependants_hold_only_the_bodies_being_sent(self):
        """200 dependants each put a 2 MiB dependency body into their own JSON body: the
        substituted bodies of the items that ran are dropped as each attempt ends, so the peak
        grows with the workers running (4 x a few copies of 2 MiB), not with the 200 dependants
        (400 MiB held at once before)."""
        d = self.start_daemon(env=UNIT_ENV, workers=4, **SLOW_BUILDS)
        self.answer([self.url("/json", v=i) for i in range(4)])   # warm the workers up
        hwm0 = proc_status(d.pid, "VmHWM")
        items = [{"id": "h", "url": self.big(2 * MIB, 97)}]
        items += [{"id": f"d{i}", "url": self.url("/json", v=i), "method": "POST",
                   "depends_on": ["h"], "body": {"v": "${h.body}"}} for i in range(200)]
        resp = self.answer({"requests": items})
        res = resp.json()["results"]
        self.assertEqual(sum(1 for r in res if r["ok"]), 201, [r for r in res if not r["ok"]][:2])
        grew = (proc_status(d.pid, "VmHWM") - hwm0) / 1024
        if rss_checked():
            self.assertLess(grew, 120, f"peak RSS grew {grew:.0f} MiB for 200 dependants")


if __name__ == "__main__":
    unittest.main()
