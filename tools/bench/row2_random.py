#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 2: random reads, through the mount vs pread of the source.

A fixed list of (tensor, offset) pairs is drawn at random (seeded; offsets
4 KiB aligned inside the tensor, only tensors at least one read long); the
stfs side preads each from the tensor file of the mount, the baseline preads
the same bytes from the shard (offset + tensor offset). Every thread opens
its own fds beforehand and takes an equal share of the list; the figure is
reads per second over the wall time. Ratio = stfs rate / baseline rate.

  warm: both the mount and the source fully in the page cache
  cold: page cache dropped and a fresh daemon for each measurement (fewer
        reads: a cold 4 KiB read costs a disk round trip)

Python's per-call cost (~1 us) is in both figures, so for 4 KiB warm reads
the ratio understates the difference of the kernel paths.
"""

import os
import random
import sys
import threading

import common as C


def draw(tensors, size, count, seed):
    rng = random.Random(seed)
    cand = [t for t in tensors if t["size"] >= size]
    if not cand:
        raise SystemExit("row 2: no tensor of %d bytes or more in the model" % size)
    weights = [t["size"] for t in cand]
    picks = rng.choices(range(len(cand)), weights=weights, k=count)
    out = []
    for i in picks:
        t = cand[i]
        rel = rng.randrange(0, (t["size"] - size) // 4096 + 1) * 4096
        out.append((t, rel))
    return out


def run(ops, size, threads, stfs_side):
    """Wall time of reading OPS on THREADS threads; fds opened before timing."""
    share = [ops[i::threads] for i in range(threads)]
    jobs = []
    for part in share:
        fds = {}
        job = []
        for t, rel in part:
            key = t["path"] if stfs_side else t["src"]
            if key not in fds:
                fds[key] = os.open(key, os.O_RDONLY)
            job.append((fds[key], rel if stfs_side else t["offset"] + rel))
        jobs.append((fds, job))
    barrier = threading.Barrier(threads + 1)
    errors = []

    def worker(job):
        buf = bytearray(size)
        mv = [memoryview(buf)]
        barrier.wait()
        try:
            for fd, off in job:
                if os.preadv(fd, mv, off) != size:
                    raise IOError("short read")
        except Exception as e:  # reported below
            errors.append(e)
        barrier.wait()

    th = [threading.Thread(target=worker, args=(j,)) for _, j in jobs]
    for x in th:
        x.start()
    barrier.wait()
    dt, _ = C.timed(barrier.wait)
    for x in th:
        x.join()
    for fds, _ in jobs:
        for fd in fds.values():
            os.close(fd)
    if errors:
        raise errors[0]
    return dt


def warm_all(tensors, mp_side):
    buf = bytearray(1 << 20)
    srcs = set()
    for t in tensors:
        if mp_side:
            with open(t["path"], "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
        srcs.add(t["src"])
    if not mp_side:
        for s in srcs:
            with open(s, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--ops-4k", type=int, help="warm 4 KiB reads per figure (default 40000)")
    ap.add_argument("--ops-1m", type=int, help="warm 1 MiB reads per figure (default 1500)")
    ap.add_argument("--cold-ops-4k", type=int, help="cold 4 KiB reads (default 400)")
    ap.add_argument("--cold-ops-1m", type=int, help="cold 1 MiB reads (default 100)")
    ap.add_argument("--no-cold", action="store_true", help="only the warm figures")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    q = args.quick
    n = C.reps(args, 3)
    nwarm = {4096: args.ops_4k or (500 if q else 40000), 1 << 20: args.ops_1m or (20 if q else 1500)}
    ncold = {4096: args.cold_ops_4k or (50 if q else 400), 1 << 20: args.cold_ops_1m or (5 if q else 100)}
    do_cold = C.is_root() and not args.no_cold

    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        res_rows = []
        with C.Mount(args.stfs, model) as m:
            tensors = C.tensors_of(m.mp, model)
            ra = m.bdi_read_ahead_kb()
            warm_all(tensors, True)
            warm_all(tensors, False)
            for size in (4096, 1 << 20):
                for threads in (1, 4):
                    ops = draw(tensors, size, nwarm[size], args.seed + size + threads)
                    ms, bs = [], []
                    for i in range(n):  # alternating which side goes first
                        for side in ((False, True) if i % 2 == 0 else (True, False)):
                            (ms if side else bs).append(run(ops, size, threads, side))
                    res_rows.append(("warm", size, threads, len(ops), C.median(ms), C.median(bs), ""))
        if do_cold:
            for size in (4096, 1 << 20):
                for threads in (1, 4):
                    ms, bs, md, bd = [], [], [], []
                    for i in range(n):
                        C.log("row 2: cold %s x%d, run %d/%d" % (C.fmt_bytes(size), threads, i + 1, n))
                        ops = draw(tensors, size, ncold[size], args.seed + 7 * i + size + threads)
                        C.drop_caches()
                        d0 = C.disk_read_bytes(model)
                        bs.append(run(ops, size, threads, False))
                        d1 = C.disk_read_bytes(model)
                        with C.Mount(args.stfs, model) as m:
                            mt = {t["rel"]: t for t in C.tensors_of(m.mp, model)}
                            ops_m = [(mt[t["rel"]], rel) for t, rel in ops]
                            C.drop_caches()
                            d2 = C.disk_read_bytes(model)
                            ms.append(run(ops_m, size, threads, True))
                            d3 = C.disk_read_bytes(model)
                        if d0 is not None:
                            bd.append(d1 - d0)
                            md.append(d3 - d2)
                    note = ""
                    if md:
                        note = ("disk read per read (median): stfs %s, baseline %s"
                                % (C.fmt_bytes(C.median(md) / len(ops)), C.fmt_bytes(C.median(bd) / len(ops))))
                    res_rows.append(("cold", size, threads, len(ops), C.median(ms), C.median(bs), note))

        env = C.environment(model, args.stfs) + [
            "model: %d tensors, %s; mount read_ahead_kb=%s; median of %d"
            % (len(tensors), C.fmt_bytes(sum(t["size"] for t in tensors)), ra, n)]
        res = C.Results(args, "Row 2: random reads vs pread of the source", env)
        for state, size, threads, count, ms, bs, note in res_rows:
            res.add("2", "%s %s random reads, %d thread%s (%d reads)"
                    % (state, C.fmt_bytes(size).replace(".00", ""), threads, "s" if threads > 1 else "", count),
                    "%.0f reads/s" % (count / ms), "%.0f reads/s" % (count / bs), bs / ms, note=note)
        if not do_cold:
            res.add("2", "cold random reads", "n/a (%s)" % ("--no-cold" if args.no_cold else "not root"), "", None)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
