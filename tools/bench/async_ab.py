#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What the async read path (-o async_reads=on) costs on a local source.

    tools/bench/async_ab.py --model DIR [--stfs build/fs/stfs] [--reps 5]

Mounts DIR (a generated Llama-style model, e.g. the bench's
/var/tmp/.../llama-h2048-l16-s3) with the default (zero-copy replies on a
local source) and with -o async_reads=on, in turn, REPS times each, and
times through each fresh mount (the source in the page cache, the mount
cold): sequential 1 MiB reads of every tensor, and 20,000 random 4 KiB
reads. Taking the two kinds in turn keeps a shared machine's load from
favouring one. Prints each run, the medians and forced/default; nothing is
pass/fail. Run as root (the mount's readahead is raised as in the rows).
"""

import argparse
import os
import random
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tensor_files(mp):
    out = []
    for r, _, fs in os.walk(mp):
        out += [os.path.join(r, f) for f in fs if not r.startswith(os.path.join(mp, ".stfs"))]
    return sorted(out)


def seq(files):
    n, t0 = 0, time.monotonic()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            n += len(b)
        os.close(fd)
    return n / (time.monotonic() - t0) / 2**30


def rand(files):
    rng = random.Random(7)
    fds = [(os.open(f, os.O_RDONLY), os.path.getsize(f)) for f in files]
    fds = [x for x in fds if x[1] >= 4096]
    picks = []
    for _ in range(20000):
        fd, size = rng.choice(fds)
        picks.append((fd, rng.randrange(0, size // 4096) * 4096))
    t0 = time.monotonic()
    for fd, off in picks:
        os.pread(fd, 4096, off)
    dt = time.monotonic() - t0
    for fd, _ in fds:
        os.close(fd)
    return len(picks) / dt


def once(stfs, model, opts, measure):
    mp = tempfile.mkdtemp(prefix="stfs-async-ab-")
    p = subprocess.Popen([stfs, "-f"] + opts + [model, mp], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mp):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stfs did not mount %s" % model)
            time.sleep(0.01)
        return measure(tensor_files(mp))
    finally:
        subprocess.run(["fusermount3", "-u", mp], check=False)
        p.wait()
        os.rmdir(mp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--stfs", default=os.environ.get("STFS", os.path.join(ROOT, "build", "fs", "stfs")))
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    for r, _, fs in os.walk(a.model):      # the source in the page cache
        for f in fs:
            with open(os.path.join(r, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass
    print("load average %.1f" % os.getloadavg()[0])
    for name, measure, unit in (("sequential 1 MiB", seq, "GiB/s"),
                                ("random 4 KiB", rand, "reads/s")):
        got = {"default": [], "forced": []}
        for _ in range(a.reps):
            got["default"].append(once(a.stfs, a.model, [], measure))
            got["forced"].append(once(a.stfs, a.model, ["-o", "async_reads=on"], measure))
        d, f = statistics.median(got["default"]), statistics.median(got["forced"])
        for k in got:
            print("%-16s %-7s %s: %s (median %.4g)" % (name, k, unit,
                  " ".join("%.4g" % x for x in got[k]), d if k == "default" else f))
        print("%-16s forced/default %.2f" % (name, f / d))
    print("load average %.1f" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
