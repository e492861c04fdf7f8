#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 9: whole source files through the mount (.stfs/shards) vs the shards.

stfs: every shard file read through MOUNT/.stfs/shards/NAME, where the kernel
serves it from the source by FUSE passthrough (fs/passthrough.h; as root on
a kernel that offers it). Baseline: the shard files themselves, the same way,
in the same run. Ratio = stfs throughput / baseline.

  9a  read() of 1 MiB (--chunk) of every shard to its end, both warm   >= 0.95
  9b  mmap every shard, read one byte per 4 KiB page, both warm        >= 0.95
  9c  9a with the page cache dropped, fresh daemon (root only)         >= 0.95
  9d  9a on a mount with -o passthrough=off (the daemon serves the
      READs): what passthrough saves, for reference                    none

The notes give the READ requests that reached the daemon during 9a-9b (from
.stfs/status; 0 when passthrough is on), the daemon's passthrough line, and
what 9b's opens cost alone (each open of a mount file is a round trip to the
daemon; the pages themselves come from the source's page cache).
"""

import json
import mmap
import os
import resource
import sys

import common as C
from row1_seq import read_mount
from row3_mmap import touch


def read_files(paths, buf):
    """Read every file of @paths to its end, len(@buf) at a time (as row 1)."""
    return read_mount([{"path": p} for p in paths], buf)


def open_map_close(paths):
    """What 9b pays per file besides the pages: open, mmap, munmap, close
    (through the mount: an OPEN round trip to the daemon, a RELEASE)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ).close()
        finally:
            os.close(fd)
    return 0


def reads_served(mp):
    with open(os.path.join(mp, ".stfs", "status"), "rb") as f:
        return json.loads(f.read())["counters"]["read_requests"]


def daemon_line(m):
    m.err.seek(0)
    lines = [ln for ln in m.err.read().decode(errors="replace").splitlines()
             if "passthrough" in ln]
    return lines[0].replace("stfs: ", "") if lines else "no passthrough line"


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--chunk", type=int, default=1 << 20, help="read size in bytes (default 1 MiB)")
    ap.add_argument("--no-cold", action="store_true", help="leave out 9c")
    args = ap.parse_args(argv)
    n = C.reps(args, 5)
    buf = bytearray(args.chunk)
    do_cold = C.is_root() and not args.no_cold
    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        names = sorted(f for f in os.listdir(model) if f.endswith(".safetensors"))
        src = [os.path.join(model, f) for f in names]
        size = sum(os.path.getsize(p) for p in src)
        t = {k: [] for k in ("src_read", "mnt_read", "src_mmap", "mnt_mmap", "src_cold",
                             "mnt_cold", "src_off", "mnt_off", "src_omc", "mnt_omc")}

        cpu = {}  # the reader's CPU seconds per pass: immune to waiting for a CPU

        def cpu_note(mkey, bkey):
            if not cpu.get(mkey):
                return ""
            m, b = C.median(cpu[mkey]), C.median(cpu[bkey])
            return "reader CPU per pass: stfs %s, source %s (ratio %.2f)" % (
                C.fmt_time(m), C.fmt_time(b), b / m if m else 0)

        def check(got):
            if got != size:
                raise RuntimeError("read %d bytes, expected %d" % (got, size))

        def pair(mkey, bkey, fn, mnt_arg, src_arg, i):
            """Both sides, alternating which goes first (drift on a busy machine)."""
            sides = [(bkey, src_arg), (mkey, mnt_arg)]
            for key, a in (sides if i % 2 == 0 else sides[::-1]):
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                dt, got = C.timed(fn, *a)
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                if fn is read_files:
                    check(got)
                t[key].append(dt)
                cpu.setdefault(key, []).append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)

        with C.Mount(args.stfs, model) as m:
            mnt = [os.path.join(m.mp, ".stfs", "shards", f) for f in names]
            line = daemon_line(m)
            read_files(src, buf)
            read_files(mnt, buf)
            line = daemon_line(m)
            r0 = reads_served(m.mp)
            for i in range(3 * n):
                C.log("row 9: warm run %d/%d" % (i + 1, 3 * n))
                pair("mnt_read", "src_read", read_files, (mnt, buf), (src, buf), i)
                pair("mnt_mmap", "src_mmap", touch, ([(p, 0, os.path.getsize(p)) for p in mnt],),
                     ([(p, 0, os.path.getsize(p)) for p in src],), i)
                pair("mnt_omc", "src_omc", open_map_close, (mnt,), (src,), i)
            served = reads_served(m.mp) - r0
        for i in range(n if do_cold else 0):
            C.log("row 9: cold run %d/%d" % (i + 1, n))
            C.drop_caches()
            dt, got = C.timed(read_files, src, buf)
            check(got)
            t["src_cold"].append(dt)
            with C.Mount(args.stfs, model) as m:
                mnt = [os.path.join(m.mp, ".stfs", "shards", f) for f in names]
                C.drop_caches()
                dt, got = C.timed(read_files, mnt, buf)
                check(got)
                t["mnt_cold"].append(dt)
        with C.Mount(args.stfs, model, ["-o", "passthrough=off"]) as m:
            mnt = [os.path.join(m.mp, ".stfs", "shards", f) for f in names]
            read_files(src, buf)
            read_files(mnt, buf)
            off_served = reads_served(m.mp)
            for i in range(n):
                C.log("row 9: passthrough=off run %d/%d" % (i + 1, n))
                pair("mnt_off", "src_off", read_files, (mnt, buf), (src, buf), i)

        env = C.environment(model, args.stfs) + [
            "shards: %d files, %s; read size %s; median of %d (warm: %d)"
            % (len(src), C.fmt_bytes(size), C.fmt_bytes(args.chunk), n, 3 * n),
            "daemon: %s" % line]
        res = C.Results(args, "Row 9: whole files, .stfs/shards (%s)" % C.fmt_bytes(size), env)

        def add(*a, **kw):
            C.add_rate(res, t, size, *a, **kw)

        add("9a", "whole-file seq read, warm", "mnt_read", "src_read", ">= 0.95", 0.95,
            "READs at the daemon during 9a-9b: %d; %s" % (served, cpu_note("mnt_read", "src_read")))
        add("9b", "whole-file mmap, every page, warm", "mnt_mmap", "src_mmap", ">= 0.95", 0.95,
            "%s; open + mmap + munmap + close of the %d files alone: stfs %s, source %s"
            % (cpu_note("mnt_mmap", "src_mmap"), len(src), C.fmt_time(C.median(t["mnt_omc"])),
               C.fmt_time(C.median(t["src_omc"]))))
        add("9c", "whole-file seq read, both cold", "mnt_cold", "src_cold", ">= 0.95", 0.95)
        add("9d", "9a with -o passthrough=off", "mnt_off", "src_off", None, None,
            "the daemon served %d READs on the first pass; %s"
            % (off_served, cpu_note("mnt_off", "src_off")))
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
