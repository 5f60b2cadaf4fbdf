"""Shared by tests/integration/run.py and tests/robustness/run.py: loads test
modules by name and runs them, counting each test method once (failed beats
skipped beats passed, however many of its subtests fail), and prints the
closing line "N passed, N failed, N skipped".
"""

import glob
import os
import re
import sys
import time
import unittest


class CountingResult(unittest.TextTestResult):
    """Remembers the outcome of each test id once: failed beats skipped beats passed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcome = {}
        self.fixture_failures = 0
        self.skipped_prefixes = []

    def _mark(self, test, state):
        tid = test.id()
        if self.outcome.get(tid) != "failed":
            self.outcome[tid] = state

    def startTest(self, test):
        super().startTest(test)
        self.outcome.setdefault(test.id(), "passed")

    def addError(self, test, err):
        super().addError(test, err)
        if isinstance(test, unittest.case._SubTest):
            test = test.test_case
        if test.id() in self.outcome or hasattr(test, "_testMethodName"):
            self._mark(test, "failed")
        else:  # setUpClass / setUpModule / tearDown... of a class or module
            self.fixture_failures += 1

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark(test, "failed")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._mark(test, "failed")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if hasattr(test, "_testMethodName"):
            self._mark(test, "skipped")
        else:  # a class or module skipped in setUpClass / setUpModule: "setUpClass (mod.Class)"
            m = re.search(r"\((.*)\)", str(test))
            if m:
                self.skipped_prefixes.append(m.group(1) + ".")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._mark(test, "passed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._mark(test, "failed")


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def load(names, here):
    loader = unittest.TestLoader()
    if not names:
        names = sorted(os.path.splitext(os.path.basename(p))[0]
                       for p in glob.glob(os.path.join(here, "test_*.py")))
    suite = unittest.TestSuite()
    for name in names:
        if name.endswith(".py"):
            name = os.path.splitext(os.path.basename(name))[0]
        if not name.startswith("test_") and not os.path.exists(os.path.join(here, name.split(".")[0] + ".py")):
            name = "test_" + name
        suite.addTests(loader.loadTestsFromName(name))
    return suite


def parse_args(argv, doc):
    """(verbosity, names) from [-q] [NAME ...]; None after printing --help."""
    verbosity, names = 2, []
    for a in argv:
        if a in ("-q", "--quiet"):
            verbosity = 1
        elif a in ("-h", "--help"):
            print(doc)
            return None
        else:
            names.append(a)
    return verbosity, names


def run(suite, verbosity, cleanup=None):
    """Runs suite, prints the closing line, returns the exit status."""
    all_ids = [t.id() for t in iter_tests(suite)]
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=verbosity,
                                     resultclass=CountingResult)
    start = time.monotonic()
    try:
        result = runner.run(suite)
    finally:
        if cleanup is not None:
            cleanup()
    outcome = dict(result.outcome)
    for tid in all_ids:  # tests that never started (their class was skipped or failed to set up)
        if tid not in outcome:
            skipped = any(tid.startswith(p) for p in result.skipped_prefixes)
            outcome[tid] = "skipped" if skipped else "failed"
    passed = sum(v == "passed" for v in outcome.values())
    failed = sum(v == "failed" for v in outcome.values())
    skipped = sum(v == "skipped" for v in outcome.values())
    if result.fixture_failures and failed == 0:
        failed = result.fixture_failures
    sys.stderr.write(f"\n(ran in {time.monotonic() - start:.1f} s)\n")
    sys.stderr.flush()
    # On a line of its own, whatever a test left unterminated on stdout.
    print(f"\n{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if failed == 0 and passed > 0 else 1
