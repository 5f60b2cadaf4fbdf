#!/usr/bin/env python3
"""The module graph of src/ and include/, and the rules every source keeps, checked.

A module is a name with src/NAME.c and/or include/NAME.h; module A uses
module B when A's .c or .h includes "B.h". Checks, each one test:

  no_cycles            no module uses itself through others
  fetch_no_job         fetch.c/fetch.h do not include job.h
  scheduler_no_job     scheduler.c/.h include neither job.h nor fetch.h,
                       and touch no struct job field (no "job->")
  job_calls_no_one     job.c calls no queue_, sched_ or fetch_ function
                       and includes neither queue.h, scheduler.h nor fetch.h
  job_private          "struct job {" is defined in src/job.c only
  front_end_http_only  server.c includes neither curl/curl.h nor fetch.h
  fetch_no_batch       fetch.c, fetch.h and fetch_req.h do not include batch.h
                       (the fetcher sees one request, never a batch)
  batch_no_curl        batch.c/.h and config.c/.h do not include curl/curl.h
                       (URL knowledge is url.c's)
  banned_functions     no sprintf, vsprintf, strcpy, strcat, gets or atoi in
                       src/ or include/ (unbounded writes, unchecked numbers)
  one_hash             the FNV-1a constants appear only in src/hash.c and
                       include/hash.h (one seeded hash, hash.h)
  strict_http_one_room libmicrohttpd's discipline option and the header
                       block's size (read for the 0.9.75 checks) only in
                       src/http_strict.c

Prints "N passed, N failed" (tests/summary.sh reads it); exit 1 on a failure.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INC = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def files():
    out = {}
    for d, ext in (("src", ".c"), ("include", ".h")):
        for name in sorted(os.listdir(os.path.join(ROOT, d))):
            if name.endswith(ext):
                out[f"{d}/{name}"] = read(f"{d}/{name}")
    return out


def includes(text):
    return INC.findall(text)


def module_graph(fs):
    mods = {os.path.splitext(os.path.basename(p))[0] for p in fs}
    graph = {m: set() for m in mods}
    for path, text in fs.items():
        m = os.path.splitext(os.path.basename(path))[0]
        for inc in includes(text):
            dep = os.path.splitext(os.path.basename(inc))[0]
            if inc.endswith(".h") and "/" not in inc and dep in mods and dep != m:
                graph[m].add(dep)
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def main():
    fs = files()
    failures = []
    checks = 0

    def check(name, problems):
        nonlocal checks
        checks += 1
        if problems:
            failures.append(name)
            print(f"FAIL: {name}")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"ok   {name}")

    graph = module_graph(fs)
    cycle = find_cycle(graph)
    check("no_cycles", [" -> ".join(cycle)] if cycle else [])

    def includes_of(paths, banned):
        probs = []
        for p in paths:
            if p in fs:
                for inc in includes(fs[p]):
                    if inc in banned:
                        probs.append(f"{p} includes {inc}")
        return probs

    check("fetch_no_job", includes_of(["src/fetch.c", "include/fetch.h",
                                       "include/fetch_req.h"], {"job.h"}))
    probs = includes_of(["src/scheduler.c", "include/scheduler.h"], {"job.h", "fetch.h"})
    for p in ("src/scheduler.c", "include/scheduler.h"):
        if p in fs and "job->" in strip_comments(fs[p]):
            probs.append(f"{p} touches a struct job field (job->)")
    check("scheduler_no_job", probs)

    probs = includes_of(["src/job.c", "include/job.h"], {"queue.h", "scheduler.h", "fetch.h"})
    body = strip_comments(fs.get("src/job.c", ""))
    for call in sorted(set(re.findall(r"\b((?:queue|sched|fetch)_\w+)\s*\(", body))):
        probs.append(f"src/job.c calls {call}()")
    check("job_calls_no_one", probs)

    probs = [f"{p} defines struct job" for p, t in fs.items()
             if p != "src/job.c" and re.search(r"^struct job\s*\{", t, re.M)]
    check("job_private", probs)

    check("front_end_http_only", includes_of(["src/server.c", "include/server.h"],
                                              {"curl/curl.h", "fetch.h"}))

    check("fetch_no_batch", includes_of(["src/fetch.c", "include/fetch.h",
                                         "include/fetch_req.h"], {"batch.h"}))
    check("batch_no_curl", includes_of(["src/batch.c", "include/batch.h", "src/config.c",
                                        "include/config.h"], {"curl/curl.h"}))

    banned = re.compile(r"(?<![\w.>])(sprintf|vsprintf|strcpy|strcat|gets|atoi)\s*\(")
    probs = []
    for p, t in fs.items():
        for n, line in enumerate(strip_comments(t).splitlines(), 1):
            for m in banned.finditer(line):
                probs.append(f"{p}: {m.group(1)}() (about line {n})")
    check("banned_functions", probs)

    fnv = re.compile(r"1099511628211|16777619|1469598103934665603|2166136261")
    check("one_hash", [f"{p} has an FNV-1a constant of its own (use hash.h)"
                       for p, t in fs.items()
                       if p not in ("src/hash.c", "include/hash.h") and fnv.search(t)])

    strict = re.compile(r"MHD_OPTION_CLIENT_DISCIPLINE_LVL|MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE")
    check("strict_http_one_room", [f"{p} reaches into strict HTTP parsing (http_strict.c's)"
                                   for p, t in fs.items()
                                   if p != "src/http_strict.c" and strict.search(strip_comments(t))])

    print(f"{checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
