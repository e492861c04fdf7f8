#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What the single-copy drops (-o cache=single) cost the daemon and the reader.

    tools/bench/drops_ab.py --model DIR [--stfs build/fs/stfs] [--reps 3]
                            [--modes single,double] [--what 1b,4]
                            [--daemons A,B]

Mounts DIR (a generated Llama-style model, e.g. the bench's
/var/tmp/.../llama-h2048-l16-s3) once per measurement with each -o cache
mode in turn and reports, per mode, the median wall time and the daemon's
CPU time (utime + stime of /proc/PID/stat, all its threads, over the
measured reads only) per GiB read:

  1b  row 1b: the source in the page cache, a fresh mount, every tensor
      read in 1 MiB read()s; the source read warm the same way is the
      baseline (ratio = source time / mount time, higher is better)
  4   row 4 cold: page cache dropped, a fresh mount, every tensor loaded
      with numpy.load(T.npy), numpy.fromfile(T), load_file of
      .stfs/model.safetensors; baseline safetensors load_file of the
      shards, cold (ratio = mount time / baseline time, lower is better)

Modes (and with --daemons, each daemon binary: before/after a change, in
every mode) are taken in turn within each repetition, so a shared
machine's load does not favour one. The load average is printed with every line. Run as
root (drop_caches).
"""

import os
import sys

import common as C
import row1_seq as R1
import row4_numpy as R4

def load():
    return os.getloadavg()[0]


def measured(m, fn, *a):
    """(wall s, daemon CPU s, reader CPU s) of fn(*a) against mount @m.

    The daemon's CPU is read after a read of .stfs/status: a daemon that
    drops pages off the reply path would have to be done with them by then
    for their CPU to count (not their time)."""
    c0, r0 = C.proc_cpu(m.pid), os.times()
    dt, _ = C.timed(fn, *a)
    r1 = os.times()
    with open(os.path.join(m.mp, ".stfs", "status")) as f:
        f.read()
    c1 = C.proc_cpu(m.pid)
    return dt, c1 - c0, (r1.user + r1.system) - (r0.user + r0.system)


def warm_source(shards):
    for s in shards:
        with open(s, "rb") as f:
            while f.read(1 << 24):
                pass


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--modes", default="single,double")
    ap.add_argument("--what", default="1b,4")
    ap.add_argument("--daemons", help="daemon binaries to compare (default: --stfs); "
                    "PATH@MODE runs PATH in MODE only")
    args = ap.parse_args(argv)
    n = C.reps(args, 3)
    daemons = (args.daemons or args.stfs).split(",")
    # PATH@MODE: that daemon in that mode only
    modes = [tuple(d.split("@", 1)) if "@" in d else (d, mo)
             for d in daemons for mo in args.modes.split(",")]
    modes = sorted(set(modes), key=modes.index)
    daemons = sorted({d for d, _ in modes}, key=[d for d, _ in modes].index)
    what = args.what.split(",")
    buf = bytearray(1 << 20)
    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        with C.Mount(args.stfs, model) as m:
            tensors = C.tensors_of(m.mp, model)
        shards = sorted({t["src"] for t in tensors})
        size = sum(t["size"] for t in tensors)
        gib = size / C.GiB
        print("model %s: %d tensors, %s; daemons %s; load %.1f"
              % (model, len(tensors), C.fmt_bytes(size), " ".join(daemons), load()))
        got = {}

        def label(mode):
            d, mo = mode
            return mo if len(daemons) == 1 else "%s:%s" % (os.path.basename(d), mo)

        def note(key, mode, wall, dcpu, rcpu, base):
            mode = label(mode)
            got.setdefault((key, mode), []).append((wall, dcpu, rcpu, base))
            print("%-10s %-16s wall %.3f s  daemon %.3f CPU-s (%.3f /GiB)  reader %.3f CPU-s  "
                  "baseline %.3f s  load %.1f" % (key, mode, wall, dcpu, dcpu / gib, rcpu, base,
                                                  load()), flush=True)

        for i in range(n):
            order = modes if i % 2 == 0 else modes[::-1]
            if "1b" in what:
                for mode in order:
                    with C.Mount(mode[0], model, ["-o", "cache=" + mode[1]]) as m:
                        mt = C.tensors_of(m.mp, model)
                        warm_source(shards)
                        base, _ = C.timed(R1.read_source, tensors, buf)
                        wall, dcpu, rcpu = measured(m, R1.read_mount, mt, buf)
                        note("1b", mode, wall, dcpu, rcpu, base)
            if "4" in what:
                C.drop_caches()
                base, _ = C.timed(R4.load_st, shards)
                for w, fn in (("npy", R4.load_npy), ("fromfile", R4.load_fromfile),
                              ("st-view", R4.load_st)):
                    for mode in order:
                        with C.Mount(mode[0], model, ["-o", "cache=" + mode[1]]) as m:
                            mt = C.tensors_of(m.mp, model)
                            arg = [os.path.join(m.mp, ".stfs", "model.safetensors")] \
                                if w == "st-view" else mt
                            C.drop_caches()
                            wall, dcpu, rcpu = measured(m, fn, arg)
                            note("4-" + w, mode, wall, dcpu, rcpu, base)
        print("medians (load %.1f):" % load())
        for (key, mode), v in sorted(got.items()):
            wall = C.median([x[0] for x in v])
            dcpu = C.median([x[1] for x in v])
            base = C.median([x[3] for x in v])
            ratio = base / wall if key == "1b" else wall / base
            print("  %-10s %-16s wall %.3f s  ratio %.2f  daemon %.3f CPU-s/GiB  reader %.3f CPU-s"
                  % (key, mode, wall, ratio, dcpu / gib, C.median([x[2] for x in v])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
