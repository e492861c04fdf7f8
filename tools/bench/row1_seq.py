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
  1e  the ceiling: the first read of nullfs (tools/bench/nullfs.c, a FUSE
      daemon that replies from memory with stfs's INIT settings, no source
      at all) on a fresh mount, one file of the model's size, read the same
      way; baseline = the source read warm (1b's). What any daemon that
      fills the FUSE page cache can reach on this kernel
  1f  stfs's 1b against 1e: how close stfs is to that ceiling

--first-only runs 1b, 1e and 1f alone (no cold or warm-mount runs): a quick
A/B of first reads, e.g. with --opts clone_fd,max_idle_threads=4 (given to
both daemons as -o) or --read-ahead-kb N (written to both mounts' bdi).
"""

import os
import resource
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


CEILING = "first read, nullfs (replies from memory): the ceiling"
VS_CEILING = "1b against the ceiling (stfs / nullfs first read)"


def cpu_self():
    """CPU seconds (user + system) this process has used."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_timed(cpu, key, fn, *a):
    """C.timed(fn, *a), adding the reader's CPU seconds to cpu[key]."""
    c0 = cpu_self()
    r = C.timed(fn, *a)
    cpu.setdefault(key, []).append(cpu_self() - c0)
    return r


def default_nullfs(stfs):
    """nullfs of the daemon's build directory (BUILD/fs/stfs -> BUILD/tools/bench/nullfs)."""
    build = os.path.dirname(os.path.dirname(os.path.abspath(stfs)))
    return os.environ.get("NULLFS", os.path.join(build, "tools", "bench", "nullfs"))


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
    ap.add_argument("--nullfs", help="the ceiling daemon of 1e (default: $NULLFS or "
                    "tools/bench/nullfs of the daemon's build directory)")
    ap.add_argument("--opts", help="extra -o options for both stfs and nullfs (e.g. clone_fd)")
    ap.add_argument("--read-ahead-kb", type=int, help="write this to both mounts' bdi read_ahead_kb "
                    "(root; default: stfs's own, copied to nullfs)")
    ap.add_argument("--first-only", action="store_true", help="only 1b, 1e and 1f")
    args = ap.parse_args(argv)
    nullfs = args.nullfs or default_nullfs(args.stfs)
    if not os.access(nullfs, os.X_OK):
        C.log("row 1: no nullfs at %s (meson builds it): 1e and 1f print n/a" % nullfs)
        nullfs = None
    mopts = ["-o", args.opts] if args.opts else []
    n = C.reps(args, 5)
    buf = bytearray(args.chunk)
    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        with C.Mount(args.stfs, model, mopts) as m:
            tensors = C.tensors_of(m.mp, model)
            if args.read_ahead_kb:
                m.set_bdi_read_ahead_kb(args.read_ahead_kb)
            ra = m.bdi_read_ahead_kb()
        size = sum(t["size"] for t in tensors)
        env = C.environment(model, args.stfs) + [
            "model: %d tensors, %s; mount read_ahead_kb=%s; read size %s; -o %s; median of %d"
            % (len(tensors), C.fmt_bytes(size), ra, C.fmt_bytes(args.chunk), args.opts or "(none)", n)]
        cold = C.is_root() and not args.first_only
        t = {k: [] for k in ("src_cold", "mnt_cold", "src_warm_b", "mnt_b", "src_warm_c", "mnt_warm",
                             "mnt_evicted", "null_first", "null_warm")}
        cpu = {}  # CPU seconds per pass: the reader's (key) and the daemon's (key + "_d")
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

        def first_read(key, m, fn, *a):
            """A timed read on the fresh mount @m: its time, reader and daemon CPU."""
            if args.read_ahead_kb:
                m.set_bdi_read_ahead_kb(args.read_ahead_kb)
            d0 = C.proc_cpu(m.pid)
            dt, got = cpu_timed(cpu, key, fn, *a)
            cpu.setdefault(key + "_d", []).append(C.proc_cpu(m.pid) - d0)
            check(got)
            t[key].append(dt)

        def ceiling():
            """1e: the first and second read of nullfs' one file of @size bytes."""
            with C.Mount(nullfs, None, mopts + ["-o", "size=%d" % size]) as m:
                m.set_bdi_read_ahead_kb(args.read_ahead_kb or ra)
                data = [{"path": os.path.join(m.mp, "data")}]
                first_read("null_first", m, read_mount, data, buf)
                dt, got = cpu_timed(cpu, "null_warm", read_mount, data, buf)
                check(got)
                t["null_warm"].append(dt)

        def warm_mount(i):
            """1a (cold, as root) and 1c on one fresh mount."""
            with C.Mount(args.stfs, model, mopts) as m:
                mt = C.tensors_of(m.mp, model)
                if args.read_ahead_kb:
                    m.set_bdi_read_ahead_kb(args.read_ahead_kb)
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

        def source_cached():
            """1b on a fresh mount (an empty page cache; the source warm), then 1d."""
            with C.Mount(args.stfs, model, mopts) as m:
                mt = C.tensors_of(m.mp, model)
                read_source(tensors, buf)  # -o cache=single dropped what the last mount read
                dt, got = cpu_timed(cpu, "src_warm_b", read_source, tensors, buf)
                check(got)
                t["src_warm_b"].append(dt)
                first_read("mnt_b", m, read_mount, mt, buf)
                if cold:
                    evict_mount(mt)
                    C.drop_caches()
                    disk_timed("mnt_evicted", read_mount, mt, buf)

        for i in range(n):
            C.log("row 1: run %d/%d" % (i + 1, n))
            if cold:
                C.drop_caches()
                disk_timed("src_cold", read_source, tensors, buf)
            if not args.first_only:
                warm_mount(i)
            source_cached()
            if nullfs:
                ceiling()

        res = C.Results(args, "Row 1: sequential read of all tensors (%s)" % C.fmt_bytes(size), env)

        def add(*a, **kw):
            C.add_rate(res, t, size, *a, **kw)

        def per_pass(key):
            return "%.3f" % C.median(cpu[key]) if cpu.get(key) else "n/a"

        if not args.first_only:
            note = ""
            if disk["mnt_cold"]:
                note = "read from the disk (median): stfs %s, baseline %s" % (
                    C.fmt_bytes(C.median(disk["mnt_cold"])), C.fmt_bytes(C.median(disk["src_cold"])))
            add("1a", "seq read, both cold", "mnt_cold", "src_cold", ">= 0.90", 0.90, note)
        note = "CPU-s per pass (median): reader %s (source %s), daemon %s" % (
            per_pass("mnt_b"), per_pass("src_warm_b"), per_pass("mnt_b_d"))
        add("1b", "seq read, source cached, mount cold", "mnt_b", "src_warm_b", ">= 0.60", 0.60, note)
        if not args.first_only:
            add("1c", "seq read, mount warm", "mnt_warm", "src_warm_c", ">= 0.95", 0.95)
            note = ""
            if disk["mnt_evicted"]:
                note = "read from the disk (median): stfs %s, baseline %s" % (
                    C.fmt_bytes(C.median(disk["mnt_evicted"])), C.fmt_bytes(C.median(disk["src_cold"])))
            add("1d", "seq read again, mount pages evicted", "mnt_evicted", "src_cold", "", None, note)
        if not nullfs:
            for row, what in (("1e", CEILING), ("1f", VS_CEILING)):
                res.add(row, what, "n/a (no nullfs)", "", None)
        else:
            note = ("CPU-s per pass (median): reader %s, daemon %s; nullfs read again (warm) %s: "
                    "%.2f of the source" % (per_pass("null_first"), per_pass("null_first_d"),
                                            C.fmt_rate(size / C.median(t["null_warm"])),
                                            C.median(t["src_warm_b"]) / C.median(t["null_warm"])))
            add("1e", CEILING, "null_first", "src_warm_b", "", None, note)
            add("1f", VS_CEILING, "mnt_b", "null_first", "", None)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
