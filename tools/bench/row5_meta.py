#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 5: metadata at scale: mount time, find, ls -lR, daemon memory.

Model: tools/gen_model.py big (100,000 tiny BF16 tensors in 160 shards by
default; --tensors / --big-shards to change).

  mount       exec of `stfs -f` until os.path.ismount (median; headers in
              the page cache, plus one cold mount). Baseline: the least any
              loader must do, safetensors.safe_open(shard).keys() for every
              shard in one Python process (warm). Target: < 1 s (absolute).
  find, ls    `find MP` and `ls -lR MP` (output to /dev/null), entries per
              second. cold = first walk after a fresh mount (once by
              default: --cold-walks); repeated = the walk run again
              (--reps times, median). Baseline: the same walk of a plain directory
              tree on the source's file system with the same paths (empty
              sparse files of the tensors' sizes, the .stfs files too),
              cold after drop_caches, warm repeated. Ratio = stfs rate /
              plain rate.
  RSS         ps -o rss of the daemon after the mount, after a stat of
              every .stfs file (their sizes make the daemon build them),
              and after the walks (which stat them too); per tensor (target < 1 KiB/tensor). Baseline: the bytes of
              the shards' JSON headers (ratio = RSS / header bytes).
"""

import os
import shutil
import subprocess
import sys
import time

import common as C


def plain_tree(mp, dest):
    """A plain copy of MP's tree under DEST: directories, sparse files."""
    stamp = dest + ".complete"
    if os.path.exists(stamp):
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    n = 0
    for root, dirs, files in os.walk(mp):
        rel = os.path.relpath(root, mp)
        d = os.path.join(dest, rel) if rel != "." else dest
        for x in dirs:
            os.mkdir(os.path.join(d, x))
        for x in files:
            size = os.stat(os.path.join(root, x)).st_size
            fd = os.open(os.path.join(d, x), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            os.ftruncate(fd, size)
            os.close(fd)
            n += 1
    open(stamp, "w").close()
    return dest


def walk(cmd, top):
    t0 = time.perf_counter()
    subprocess.run(cmd + [top], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def count_entries(top):
    out = subprocess.run(["find", top], capture_output=True, check=True).stdout
    return out.count(b"\n")


def safe_open_all(shards):
    from safetensors import safe_open
    n = 0
    for s in shards:
        with safe_open(s, framework="np") as f:
            n += len(f.keys())
    return n


def header_bytes(shards):
    total = 0
    for s in shards:
        with open(s, "rb") as f:
            total += int.from_bytes(f.read(8), "little")
    return total


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap, model=False)
    ap.add_argument("--tensors", type=int, help="tensors of the generated model (default 100000)")
    ap.add_argument("--big-shards", type=int, help="shards of the generated model (default 160)")
    ap.add_argument("--big-model", help="existing directory of a gen_model.py big model")
    ap.add_argument("--cold-walks", type=int, help="cold walks per command (default 1; each "
                    "repeated walk is run --reps times after it)")
    args = ap.parse_args(argv)
    n = C.reps(args, 3)
    cold_walks = args.cold_walks or 1
    cold = C.is_root()
    with C.Workdir(args) as work:
        if args.big_model:
            model = os.path.abspath(args.big_model)
        else:
            nt = args.tensors or (2000 if args.quick else 100000)
            ns = args.big_shards or (4 if args.quick else 160)
            model = C.gen("big", os.path.join(work.path, "big-t%d-s%d" % (nt, ns)), tensors=nt, shards=ns)
        shards = sorted(os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors"))
        hbytes = header_bytes(shards)
        safe_open_all(shards)
        t_base = []
        t_mount = []
        t_mount_cold = None
        rss_mount = []
        rss_stfs = []
        for i in range(C.reps(args, 5)):
            t_base.append(C.timed(safe_open_all, shards)[0])
            with C.Mount(args.stfs, model) as m:
                t_mount.append(m.seconds)
                rss_mount.append(C.ps_rss(m.pid))
                for x in os.listdir(os.path.join(m.mp, ".stfs")):
                    os.stat(os.path.join(m.mp, ".stfs", x))
                rss_stfs.append(C.ps_rss(m.pid))
        ntensors = safe_open_all(shards)
        if cold:
            C.drop_caches()
            with C.Mount(args.stfs, model) as m:
                t_mount_cold = m.seconds
            C.drop_caches()
            t_base_cold = C.timed(safe_open_all, shards)[0]

        res_walk = {}
        rss_after = []
        with C.Mount(args.stfs, model) as m:
            tree = plain_tree(m.mp, os.path.join(work.path, os.path.basename(model) + "-plain"))
            entries = count_entries(m.mp)
        pentries = count_entries(tree)
        for name, cmd in (("find", ["find"]), ("ls -lR", ["ls", "-lR"])):
            sc, sw, bc, bw = [], [], [], []
            for i in range(cold_walks):
                C.log("row 5: %s, run %d/%d" % (name, i + 1, cold_walks))
                with C.Mount(args.stfs, model) as m:
                    sc.append(walk(cmd, m.mp))
                    for j in range(n):
                        sw.append(walk(cmd, m.mp))
                    rss_after.append(C.ps_rss(m.pid))
                if cold:
                    C.drop_caches()
                    bc.append(walk(cmd, tree))
                for j in range(n):
                    bw.append(walk(cmd, tree))
            res_walk[name] = (sc, sw, bc, bw)

        env = C.environment(model, args.stfs) + [
            "model: %d tensors in %d shards, %s of JSON headers; %d entries in the mount, "
            "%d in the plain tree (%s); median of %d (cold walks: %d)"
            % (ntensors, len(shards), C.fmt_bytes(hbytes), entries, pentries, tree, n, cold_walks)]
        res = C.Results(args, "Row 5: metadata, %d tensors" % ntensors, env)
        mt, bt = C.median(t_mount), C.median(t_base)
        res.add("5", "mount time, headers cached", C.fmt_time(mt),
                "%s (safe_open all shards)" % C.fmt_time(bt), mt / bt, "< 1 s", mt < 1.0)
        if t_mount_cold is not None:
            res.add("5", "mount time, cold", C.fmt_time(t_mount_cold),
                    "%s (safe_open all shards)" % C.fmt_time(t_base_cold), t_mount_cold / t_base_cold,
                    "< 1 s", t_mount_cold < 1.0)
        for name, (sc, sw, bc, bw) in res_walk.items():
            for state, s, b in (("first walk, cold", sc, bc), ("repeated", sw, bw)):
                if not b:
                    res.add("5", "`%s`, %s" % (name, state), "n/a (not root)", "", None)
                    continue
                ms, bs = C.median(s), C.median(b)
                res.add("5", "`%s`, %s" % (name, state), "%.0f entries/s (%s)" % (entries / ms, C.fmt_time(ms)),
                        "%.0f entries/s (%s)" % (pentries / bs, C.fmt_time(bs)),
                        (entries / ms) / (pentries / bs))
        r0 = C.median(rss_mount)
        r2 = C.median(rss_stfs)
        r1 = max(rss_after)
        res.add("5", "daemon RSS after mount", "%s (%.0f B/tensor)" % (C.fmt_bytes(r0), r0 / ntensors),
                "%s (JSON headers)" % C.fmt_bytes(hbytes), r0 / hbytes, "< 1 KiB/tensor",
                r0 / ntensors < 1024)
        res.add("5", "daemon RSS after stat of .stfs/*", "%s (%.0f B/tensor)" % (C.fmt_bytes(r2), r2 / ntensors),
                "%s (JSON headers)" % C.fmt_bytes(hbytes), r2 / hbytes, "< 1 KiB/tensor",
                r2 / ntensors < 1024)
        res.add("5", "daemon RSS after find + ls -lR", "%s (%.0f B/tensor)" % (C.fmt_bytes(r1), r1 / ntensors),
                "%s (JSON headers)" % C.fmt_bytes(hbytes), r1 / hbytes, "< 1 KiB/tensor",
                r1 / ntensors < 1024)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
