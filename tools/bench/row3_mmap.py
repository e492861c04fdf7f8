#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 3: mmap every tensor and touch every page, through the mount vs the source.

stfs: mmap(PROT_READ, MAP_SHARED) each tensor file of the mount and read
one byte of every 4 KiB page (a NumPy strided sum), then munmap. Baseline:
the same for the byte range of each tensor in its shard (one mapping per
tensor, offset rounded down to a page). Ratio = baseline time / stfs time
(= stfs pages per second / baseline's).

  3 warm: both in the page cache (the figure with a target, >= 0.90)
  3 cold: page cache dropped, fresh daemon (for context)
"""

import mmap
import os
import sys

import numpy as np

import common as C

PAGE = mmap.PAGESIZE


def touch(ranges):
    """ranges: (path, offset, size). Returns the number of pages touched."""
    pages = 0
    s = 0
    for path, off, size in ranges:
        if size == 0:
            continue
        base = off - off % mmap.ALLOCATIONGRANULARITY
        fd = os.open(path, os.O_RDONLY)
        try:
            mm = mmap.mmap(fd, off - base + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=base)
        finally:
            os.close(fd)
        a = np.frombuffer(mm, dtype=np.uint8)
        v = a[off - base:][::PAGE]
        s += int(v.sum(dtype=np.uint64))
        pages += len(v)
        del a, v
        mm.close()
    return pages


def ranges(tensors, stfs_side):
    if stfs_side:
        return [(t["path"], 0, t["size"]) for t in tensors]
    return [(t["src"], t["offset"], t["size"]) for t in tensors]


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--no-cold", action="store_true", help="only the warm figure")
    args = ap.parse_args(argv)
    n = C.reps(args, 5)
    do_cold = C.is_root() and not args.no_cold
    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        tm, tb, cm, cb = [], [], [], []
        with C.Mount(args.stfs, model) as m:
            tensors = C.tensors_of(m.mp, model)
            size = sum(t["size"] for t in tensors)
            touch(ranges(tensors, True))
            touch(ranges(tensors, False))
            # warm runs are short: three times as many, alternating which side
            # goes first (against drift on a busy machine)
            for i in range(3 * n):
                for side in ((False, True) if i % 2 == 0 else (True, False)):
                    dt, pages = C.timed(touch, ranges(tensors, side))
                    if side:
                        tm.append(dt)
                        pm = pages
                    else:
                        tb.append(dt)
                        pb = pages
        if do_cold:
            for i in range(n):
                C.log("row 3: cold run %d/%d" % (i + 1, n))
                C.drop_caches()
                cb.append(C.timed(touch, ranges(tensors, False))[0])
                with C.Mount(args.stfs, model) as m:
                    mt = C.tensors_of(m.mp, model)
                    C.drop_caches()
                    cm.append(C.timed(touch, ranges(mt, True))[0])
        env = C.environment(model, args.stfs) + [
            "model: %d tensors, %s; %d pages touched through the mount, %d in the source; "
            "median of %d (warm) and %d (cold)" % (len(tensors), C.fmt_bytes(size), pm, pb, 3 * n, n)]
        res = C.Results(args, "Row 3: mmap, touch every page", env)
        ms, bs = C.median(tm), C.median(tb)
        res.add("3", "mmap touch all pages, warm", "%s (%s)" % (C.fmt_rate(size / ms), C.fmt_time(ms)),
                "%s (%s)" % (C.fmt_rate(size / bs), C.fmt_time(bs)), bs / ms, ">= 0.90", bs / ms >= 0.90)
        if do_cold:
            ms, bs = C.median(cm), C.median(cb)
            res.add("3", "mmap touch all pages, cold", "%s (%s)" % (C.fmt_rate(size / ms), C.fmt_time(ms)),
                    "%s (%s)" % (C.fmt_rate(size / bs), C.fmt_time(bs)), bs / ms)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
