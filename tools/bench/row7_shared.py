#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 7: K processes mmapping and reading the whole model through one mount.

For K = 1, 2, 4, 8 (--procs): drop the page cache, mount afresh, start K
Python processes; each maps every tensor file of the mount (MAP_SHARED,
read-only), reads one byte of every page, and holds its mappings until all
K are done. Then

  memory = delta of Cached in /proc/meminfo (page cache, both the mount's
           and the source's; the daemon's mapping of the source is in it)
         + delta of PageTables (the K processes' page tables)
         + sum over the K readers of their RssAnon growth while reading
         + the daemon's RssAnon growth

File pages are counted once, in Cached: summing the readers' full RSS would
count the shared pages K times (that sum is printed for reference). The
figure is memory / model size (target <= 1.1 with -o cache=single, the
default: the daemon lets go of the source's copy of every page the mount
has cached; -o cache=double keeps both, 2.0). As a check immune to other processes' page
cache traffic, the resident bytes of the shard files and of the mount's
tensor files (fincore(1)) are printed too; and the same K readers mapping
the source files directly are measured for reference (expected ~1.0).

Needs root (drop_caches); the machine must be otherwise idle-ish for the
Cached delta to mean much: other processes' page cache traffic lands in it.
"""

import subprocess
import sys
import time

import common as C

CHILD = r"""
import mmap, os, sys
import numpy as np
def rss_anon():
    with open("/proc/self/status") as f:
        for l in f:
            if l.startswith("RssAnon:"):
                return int(l.split()[1]) * 1024
print("ready", flush=True)
ranges = [l.split("\t") for l in sys.stdin.readline().rstrip("\n").split("\x1e") if l]
before = rss_anon()
maps = []
s = 0
for path, off, size in ranges:
    off, size = int(off), int(size)
    if size == 0:
        continue
    base = off - off % mmap.ALLOCATIONGRANULARITY
    fd = os.open(path, os.O_RDONLY)
    mm = mmap.mmap(fd, off - base + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=base)
    os.close(fd)
    a = np.frombuffer(mm, dtype=np.uint8)[off - base:]
    s += int(a[::mmap.PAGESIZE].sum(dtype=np.uint64))
    maps.append((mm, a))
print(rss_anon() - before, flush=True)
sys.stdin.readline()  # hold the mappings until told
"""


def run_k(k, ranges, extra_pids=(), files=()):
    """K readers of RANGES; returns dict of the memory figures."""
    payload = "\x1e".join("%s\t%d\t%d" % r for r in ranges) + "\n"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(k)]
    try:
        for p in procs:  # numpy imported: its memory is not the model's
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("reader failed to start")
        d_anon0 = {p: C.proc_status(p, "RssAnon") for p in extra_pids}
        m0 = C.meminfo()
        t0 = time.perf_counter()
        for p in procs:
            p.stdin.write(payload)
            p.stdin.flush()
        growth = [int(p.stdout.readline()) for p in procs]
        dt = time.perf_counter() - t0
        m1 = C.meminfo()
        rss_sum = sum(C.proc_status(p.pid, "VmRSS") for p in procs)
        d_anon = sum(C.proc_status(p, "RssAnon") - d_anon0[p] for p in extra_pids)
        resident = C.resident_bytes(files) if files else None
    finally:
        for p in procs:
            try:
                p.stdin.write("\n")
                p.stdin.flush()
            except OSError:
                pass
        for p in procs:
            p.wait()
    cached = m1["Cached"] - m0["Cached"]
    pt = m1["PageTables"] - m0["PageTables"]
    return dict(cached=cached, pagetables=pt, anon=sum(growth) + d_anon, rss_sum=rss_sum,
                total=cached + pt + sum(growth) + d_anon, seconds=dt, resident=resident)


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--procs", default=None, help="comma-separated K values (default 1,2,4,8)")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct-source reference runs")
    args = ap.parse_args(argv)
    ks = [int(x) for x in (args.procs or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    if not C.is_root():
        print("row 7: n/a (needs root to drop the page cache)")
        return 0
    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        with C.Mount(args.stfs, model) as m:
            tensors = C.tensors_of(m.mp, model)
        size = sum(t["size"] for t in tensors)
        env = C.environment(model, args.stfs) + [
            "model: %d tensors, %s; one run per K (each needs an empty page cache)"
            % (len(tensors), C.fmt_bytes(size))]
        res = C.Results(args, "Row 7: K processes sharing the mount (mmap, read every page)", env)
        for k in ks:
            C.log("row 7: K=%d" % k)
            direct = None
            if not args.no_direct:
                C.drop_caches()
                direct = run_k(k, [(t["src"], t["offset"], t["size"]) for t in tensors])
            with C.Mount(args.stfs, model) as m:
                mt = C.tensors_of(m.mp, model)
                C.drop_caches()
                files = sorted({t["src"] for t in mt}) + [t["path"] for t in mt]
                r = run_k(k, [(t["path"], 0, t["size"]) for t in mt], extra_pids=(m.pid,), files=files)
            note = ("resident pages of the shards + tensor files (fincore): %s (%.2fx); "
                    "page cache %s, page tables %s, anon %s; summed reader RSS %s; %s"
                    % (C.fmt_bytes(r["resident"]), r["resident"] / size, C.fmt_bytes(r["cached"]), C.fmt_bytes(r["pagetables"]), C.fmt_bytes(r["anon"]),
                       C.fmt_bytes(r["rss_sum"]), C.fmt_time(r["seconds"])))
            if direct:
                note += "; readers of the source directly: %s (%.2fx), %s" % (
                    C.fmt_bytes(direct["total"]), direct["total"] / size, C.fmt_time(direct["seconds"]))
            res.add("7", "%d process%s mmap + read all" % (k, "es" if k > 1 else ""),
                    C.fmt_bytes(r["total"]), "%s (model size)" % C.fmt_bytes(size),
                    r["total"] / size, "<= 1.1x model size", r["total"] / size <= 1.1, note=note)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
