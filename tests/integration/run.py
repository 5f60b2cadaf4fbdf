#!/usr/bin/env python3
"""Runs fanoutd's integration tests.

    tests/integration/run.py [-q] [MODULE | MODULE.Class | MODULE.Class.test ...]

Without arguments every tests/integration/test_*.py module runs. Names may leave
out the "test_" prefix of a module ("security" is test_security). The daemon is
$FANOUTD (split with shlex), default <repo>/fanoutd, <repo> being two directories
above this file. The last line of output is exactly "N passed, N failed, N skipped"
(each test method counted once however many of its subtests fail); the exit status
is 0 only when nothing failed and at least one test ran.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import runner  # noqa: E402


def main(argv):
    parsed = runner.parse_args(argv, __doc__)
    if parsed is None:
        return 0
    verbosity, names = parsed
    try:
        suite = runner.load(names, HERE)
    except Exception as e:  # a bad name or an import error
        print(f"cannot load tests: {e}", file=sys.stderr)
        print("0 passed, 1 failed, 0 skipped")
        return 1
    import harness
    return runner.run(suite, verbosity, harness.cleanup_tmpdirs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
