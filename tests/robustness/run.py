#!/usr/bin/env python3
"""Runs fanoutd's robustness tests.

    tests/robustness/run.py [-q] [MODULE | MODULE.Class | MODULE.Class.test ...]

Without arguments every tests/robustness/test_*.py module runs ("frontend" names
test_frontend). The daemon is $FANOUTD (split with shlex, arguments such as a valgrind
prefix allowed), default <repo>/fanoutd. Before the run, the binary <repo>/fanoutd
(where the command names it) is copied to a private temporary path, so that a rebuild
during the run does not change the daemon under test. Everything talks to 127.0.0.1 only.

The last line of output is exactly "N passed, N failed, N skipped" (each test method
counted once however many of its subtests fail); the exit status is 0 only when nothing
failed and at least one test ran.
"""

import glob
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True


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
        else:
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
        else:
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


def load(names):
    loader = unittest.TestLoader()
    if not names:
        names = sorted(os.path.splitext(os.path.basename(p))[0]
                       for p in glob.glob(os.path.join(HERE, "test_*.py")))
    suite = unittest.TestSuite()
    for name in names:
        if name.endswith(".py"):
            name = os.path.splitext(os.path.basename(name))[0]
        if not name.startswith("test_") and not os.path.exists(os.path.join(HERE, name.split(".")[0] + ".py")):
            name = "test_" + name
        suite.addTests(loader.loadTestsFromName(name))
    return suite


def private_binary(workdir):
    """Sets $FANOUTD to the same command with <repo>/fanoutd replaced by a private copy."""
    repo_bin = os.path.realpath(os.path.join(REPO, "fanoutd"))
    spec = os.environ.get("FANOUTD", "").strip()
    argv = shlex.split(spec) if spec else [repo_bin]
    copy = os.path.join(workdir, "fanoutd")
    out = []
    for a in argv:
        cand = a if os.path.isabs(a) else os.path.join(REPO, a)
        if (a == argv[-1] or os.sep in a or a == "fanoutd") and os.path.realpath(cand) == repo_bin:
            if not os.path.exists(copy):
                shutil.copy2(repo_bin, copy)
            a = copy
        out.append(a)
    os.environ["FANOUTD"] = shlex.join(out)
    return out


def main(argv):
    verbosity = 2
    args = []
    for a in argv:
        if a in ("-q", "--quiet"):
            verbosity = 1
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            args.append(a)
    workdir = tempfile.mkdtemp(prefix="fanoutd-robust-bin-")
    try:
        try:
            cmd = private_binary(workdir)
            sys.stderr.write(f"fanoutd under test: {shlex.join(cmd)}\n")
            suite = load(args)
        except Exception as e:  # a missing binary, a bad name or an import error
            print(f"cannot set up the tests: {e}", file=sys.stderr)
            print("0 passed, 1 failed, 0 skipped")
            return 1
        all_ids = [t.id() for t in iter_tests(suite)]
        runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=verbosity,
                                         resultclass=CountingResult)
        start = time.monotonic()
        try:
            result = runner.run(suite)
        finally:
            import common  # noqa: F401  (puts tests/integration on sys.path)
            import harness
            harness.cleanup_tmpdirs()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    outcome = dict(result.outcome)
    for tid in all_ids:
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
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
