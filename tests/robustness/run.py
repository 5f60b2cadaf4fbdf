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

import os
import shlex
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.dont_write_bytecode = True

import runner  # noqa: E402


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
    parsed = runner.parse_args(argv, __doc__)
    if parsed is None:
        return 0
    verbosity, names = parsed
    workdir = tempfile.mkdtemp(prefix="fanoutd-robust-bin-")
    try:
        try:
            cmd = private_binary(workdir)
            sys.stderr.write(f"fanoutd under test: {shlex.join(cmd)}\n")
            suite = runner.load(names, HERE)
        except Exception as e:  # a missing binary, a bad name or an import error
            print(f"cannot set up the tests: {e}", file=sys.stderr)
            print("0 passed, 1 failed, 0 skipped")
            return 1
        import common  # noqa: F401  (puts tests/integration on sys.path)
        import harness
        return runner.run(suite, verbosity, harness.cleanup_tmpdirs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
