#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 1: sequential read of every tensor, through the mount vs the source.

stfs: open each tensor file of the mount and read it to the end in --chunk
sized read()s. Baseline: the same byte ranges [offset, offset+size) read
from the shard files with pread() of the same chunk size (one fd per shard,
tensors in source order on both sides). Ratio = stfs throughput / baseline.

  1a  both cold: page cache dropped, fresh daemon         target >= 0.90
  1b  source in the page cache, mount cold (fresh mount);
      baseline = the source read warm                      target >= 0.60
  1c  mount warm (second read of the mount) vs source warm target >= 0.95
  1d  read again after the mount's pages were evicted (posix_fadvise
      DONTNEED of every tensor file, then drop_caches): with -o cache=single
      (the default) the daemon let go of the source's copy, so this reads
      the disk; baseline = the source read cold (1a's)
"""

import os
import sys

import common as C


def read_mount(tensors, buf):
    mv = memoryview(buf)
    total = 0
    for t in tensors:
        fd = os.open(t["path"], os.O_RDONLY)
        try:
            while True:
                n = os.readv(fd, [mv])
                if n == 0:
                    break
                total += n
        finally:
            os.close(fd)
    return total


def read_source(tensors, buf):
    mv = memoryview(buf)
    chunk = len(buf)
    fds = {}
    total = 0
    try:
        for t in tensors:
            fd = fds.get(t["src"])
            if fd is None:
                fd = fds[t["src"]] = os.open(t["src"], os.O_RDONLY)
            pos, end = t["offset"], t["offset"] + t["size"]
            while pos < end:
                n = os.preadv(fd, [mv[:min(chunk, end - pos)]], pos)
                if n <= 0:
                    raise IOError("%s: short read at %d" % (t["src"], pos))
                pos += n
                total += n
    finally:
        for fd in fds.values():
            os.close(fd)
    return total


def evict_mount(tensors):
    """Drop the mount's page cache of every tensor file (not the source's)."""
    for t in tensors:
        fd = os.open(t["path"], os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--chunk", type=int, default=1 << 20, help="read size in bytes (default 1 MiB)")
    args = ap.parse_args(argv)
    n = C.reps(args, 5)
    buf = bytearray(args.chunk)
    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        with C.Mount(args.stfs, model) as m:
            tensors = C.tensors_of(m.mp, model)
            ra = m.bdi_read_ahead_kb()
        size = sum(t["size"] for t in tensors)
        env = C.environment(model, args.stfs) + [
            "model: %d tensors, %s; mount read_ahead_kb=%s; read size %s; median of %d"
            % (len(tensors), C.fmt_bytes(size), ra, C.fmt_bytes(args.chunk), n)]
        cold = C.is_root()
        t = {k: [] for k in ("src_cold", "mnt_cold", "src_warm_b", "mnt_b", "src_warm_c", "mnt_warm",
                             "mnt_evicted")}
        disk = {"src_cold": [], "mnt_cold": [], "mnt_evicted": []}  # bytes read from the device

        def disk_timed(key, fn, *a):
            d0 = C.disk_read_bytes(model)
            dt, got = C.timed(fn, *a)
            d1 = C.disk_read_bytes(model)
            if d0 is not None:
                disk[key].append(d1 - d0)
            check(got)
            t[key].append(dt)

        def check(got):
            if got != size:
                raise RuntimeError("read %d bytes, expected %d" % (got, size))

        for i in range(n):
            C.log("row 1: run %d/%d" % (i + 1, n))
            if cold:
                C.drop_caches()
                disk_timed("src_cold", read_source, tensors, buf)
            with C.Mount(args.stfs, model) as m:
                mt = C.tensors_of(m.mp, model)
                if cold:
                    C.drop_caches()  # the fresh daemon has mapped nothing yet
                    disk_timed("mnt_cold", read_mount, mt, buf)
                else:
                    read_mount(mt, buf)
                # 1c: mount warm vs source warm, back to back
                # (alternating which goes first, against drift on a busy machine)
                read_source(tensors, buf)
                pair = [("src_warm_c", read_source, tensors), ("mnt_warm", read_mount, mt)]
                for key, fn, ts in (pair if i % 2 == 0 else pair[::-1]):
                    dt, got = C.timed(fn, ts, buf)
                    check(got)
                    t[key].append(dt)
            # 1b: a fresh mount has an empty page cache; the source is warm
            with C.Mount(args.stfs, model) as m:
                mt = C.tensors_of(m.mp, model)
                dt, got = C.timed(read_source, tensors, buf)
                check(got)
                t["src_warm_b"].append(dt)
                dt, got = C.timed(read_mount, mt, buf)
                check(got)
                t["mnt_b"].append(dt)
                if cold:
                    evict_mount(mt)
                    C.drop_caches()
                    disk_timed("mnt_evicted", read_mount, mt, buf)

        res = C.Results(args, "Row 1: sequential read of all tensors (%s)" % C.fmt_bytes(size), env)

        def add(*a, **kw):
            C.add_rate(res, t, size, *a, **kw)

        note = ""
        if disk["mnt_cold"]:
            note = "read from the disk (median): stfs %s, baseline %s" % (
                C.fmt_bytes(C.median(disk["mnt_cold"])), C.fmt_bytes(C.median(disk["src_cold"])))
        add("1a", "seq read, both cold", "mnt_cold", "src_cold", ">= 0.90", 0.90, note)
        add("1b", "seq read, source cached, mount cold", "mnt_b", "src_warm_b", ">= 0.60", 0.60)
        add("1c", "seq read, mount warm", "mnt_warm", "src_warm_c", ">= 0.95", 0.95)
        note = ""
        if disk["mnt_evicted"]:
            note = "read from the disk (median): stfs %s, baseline %s" % (
                C.fmt_bytes(C.median(disk["mnt_evicted"])), C.fmt_bytes(C.median(disk["src_cold"])))
        add("1d", "seq read again, mount pages evicted", "mnt_evicted", "src_cold", "", 0, note)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
