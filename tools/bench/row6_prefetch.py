#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 6: prefetch of every tensor into the mount's page cache (--to host).

stfs: a PREFETCH ioctl on MOUNT/.stfs/control (target host, --threads
workers, default 2; what `stfsctl prefetch MNT --to host --threads N --wait`
does), timed from the ioctl until STATUS says the job is done (polled every
millisecond; --via-stfsctl times the stfsctl command itself, which polls
every 100 ms). Baseline: `dd` of the same byte ranges of the shards to
/dev/null (a cat of each shard's tensor bytes, header skipped: one reader,
one range after another). Ratio = stfs throughput / baseline throughput.

  6a  source cold: page cache dropped (root: echo 3 > drop_caches) after a
      fresh mount; the baseline reads cold too
  6b  source warm (in the page cache), fresh mount; baseline warm.
      The note gives the time of a second prefetch of everything, which
      finds every tensor pushed and does nothing
  6c  reads of the prefetched tensors through the mount (every tensor file
      to its end, --read-chunk reads, as row 1) vs pread() of the same byte
      ranges of the warm source           target >= 0.95
  6d  READ requests the daemon got during 6c (the read_requests counter of
      MOUNT/.stfs/status before and after): prefetched tensors are served
      by the kernel's page cache of the mount, so this must be 0

Before 6c's first timing, every prefetched tensor is compared with its
source bytes (inside 6d's window: those reads must not reach the daemon
either). Without root, 6a is n/a.
"""

import os
import subprocess
import sys

import common as C
import ctl
from row1_seq import read_mount, read_source


def source_ranges(tensors):
    """The tensors' byte ranges of each shard, adjacent ones merged: [(src, off, len)]."""
    out = []
    for t in sorted(tensors, key=lambda t: (t["src"], t["offset"])):
        if t["size"] == 0:
            continue
        if out and out[-1][0] == t["src"] and t["offset"] <= out[-1][1] + out[-1][2]:
            src, off, n = out[-1]
            out[-1] = (src, off, max(n, t["offset"] + t["size"] - off))
        else:
            out.append((t["src"], t["offset"], t["size"]))
    return out


def cat_ranges(ranges):
    """dd each range to /dev/null, one after another; bytes copied (checked)."""
    total = 0
    for src, off, n in ranges:
        r = subprocess.run(["dd", "if=" + src, "of=/dev/null", "bs=1M", "iflag=skip_bytes,count_bytes",
                            "skip=%d" % off, "count=%d" % n], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("dd %s: %s" % (src, r.stderr.strip()))
        # last line: "N bytes (...) copied, S s, R"
        total += int(r.stderr.strip().splitlines()[-1].split()[0])
    return total


def _pread_full(fd, mv, off):
    got = 0
    while got < len(mv):
        n = os.preadv(fd, [mv[got:]], off + got)
        if n <= 0:
            break
        got += n
    return got


def compare(tensors, buf):
    """First tensor whose bytes through the mount differ from the source, or None."""
    other = bytearray(len(buf))
    for t in tensors:
        a = os.open(t["path"], os.O_RDONLY)
        b = os.open(t["src"], os.O_RDONLY)
        try:
            if os.fstat(a).st_size != t["size"]:
                return t["name"] + " (size)"
            pos = 0
            while pos < t["size"]:
                k = min(len(buf), t["size"] - pos)
                mv, ov = memoryview(buf)[:k], memoryview(other)[:k]
                if _pread_full(a, mv, pos) != k or _pread_full(b, ov, t["offset"] + pos) != k or mv != ov:
                    return t["name"]
                pos += k
        finally:
            os.close(a)
            os.close(b)
    return None


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--threads", type=int, default=2, help="prefetch workers (default 2)")
    ap.add_argument("--chunk", type=int, default=0,
                    help="prefetch chunk in bytes (default 0: the daemon's, 4 MiB)")
    ap.add_argument("--read-chunk", type=int, default=1 << 20,
                    help="read size of 6c in bytes, both sides (default 1 MiB)")
    ap.add_argument("--via-stfsctl", action="store_true",
                    help="time `stfsctl prefetch MNT --to host --threads N --wait` instead of the "
                    "ioctls (adds a process start and up to 100 ms of polling)")
    ap.add_argument("--stfsctl", help="stfsctl for --via-stfsctl (default: $STFSCTL or "
                    "tools/stfsctl next to the daemon's build directory)")
    ap.add_argument("--no-cold", action="store_true", help="skip 6a")
    args = ap.parse_args(argv)
    n = C.reps(args, 5)
    do_cold = C.is_root() and not args.no_cold
    buf = bytearray(args.read_chunk)
    stfsctl = args.stfsctl or ctl.default_stfsctl(args.stfs)
    if args.via_stfsctl and not os.access(stfsctl, os.X_OK):
        raise SystemExit("row 6: no stfsctl at %s (--stfsctl)" % stfsctl)

    def prefetch(mp):
        if args.via_stfsctl:
            return ctl.run_stfsctl(stfsctl, mp, "host", args.threads, args.chunk)
        with ctl.Control(mp) as c:
            return c.run((), "host", args.threads, args.chunk)

    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        with C.Mount(args.stfs, model) as m:
            tensors = C.tensors_of(m.mp, model)
        size = sum(t["size"] for t in tensors)
        ranges = source_ranges(tensors)
        ranged = sum(r[2] for r in ranges)
        env = C.environment(model, args.stfs) + [
            "model: %d tensors, %s in %d source ranges; prefetch --to host, --threads %d, chunk %s, "
            "timed %s; 6c read size %s; median of %d"
            % (len(tensors), C.fmt_bytes(size), len(ranges), args.threads,
               C.fmt_bytes(args.chunk) if args.chunk else "daemon default",
               "with stfsctl --wait" if args.via_stfsctl else "with the ioctls (1 ms poll)",
               C.fmt_bytes(args.read_chunk), n)]
        if do_cold:
            env.append("cold runs drop the page cache as root: sync; echo 3 > /proc/sys/vm/drop_caches")
        t = {k: [] for k in ("cat_cold", "pf_cold", "cat_warm", "pf_warm", "src_read", "mnt_read")}
        daemon_s = {"pf_cold": [], "pf_warm": []}
        disk = {"cat_cold": [], "pf_cold": []}
        notes = {}
        reads = []  # (read_requests, read_bytes) added during 6c, per run

        def check_job(st):
            if st["bytes_total"] != size:
                raise RuntimeError("prefetch moved %d bytes, the tensors have %d" % (st["bytes_total"], size))

        def check_cat(got):
            if got != ranged:
                raise RuntimeError("dd copied %d bytes, expected %d" % (got, ranged))

        for i in range(n):
            C.log("row 6: run %d/%d" % (i + 1, n))
            if do_cold:
                C.drop_caches()
                d0 = C.disk_read_bytes(model)
                dt, got = C.timed(cat_ranges, ranges)
                d1 = C.disk_read_bytes(model)
                check_cat(got)
                t["cat_cold"].append(dt)
                if d0 is not None:
                    disk["cat_cold"].append(d1 - d0)
                with C.Mount(args.stfs, model) as m:
                    C.drop_caches()  # the fresh daemon has mapped nothing yet
                    d0 = C.disk_read_bytes(model)
                    dt, st = prefetch(m.mp)
                    d1 = C.disk_read_bytes(model)
                    check_job(st)
                    t["pf_cold"].append(dt)
                    daemon_s["pf_cold"].append(st["seconds"])
                    if d0 is not None:
                        disk["pf_cold"].append(d1 - d0)
            read_source(tensors, buf)  # source warm
            with C.Mount(args.stfs, model) as m:
                mt = C.tensors_of(m.mp, model)
                # 6b: which side goes first alternates (drift on a busy machine)
                for side in (("cat", "pf") if i % 2 == 0 else ("pf", "cat")):
                    if side == "cat":
                        # a prefetch first let go of the source (-o cache=single)
                        read_source(tensors, buf)
                        dt, got = C.timed(cat_ranges, ranges)
                        check_cat(got)
                        t["cat_warm"].append(dt)
                    else:
                        dt, st = prefetch(m.mp)
                        check_job(st)
                        t["pf_warm"].append(dt)
                        daemon_s["pf_warm"].append(st["seconds"])
                pushed = ctl.counters(m.mp)["pushed_bytes"]
                if pushed < size:
                    raise RuntimeError("pushed_bytes %d after prefetching %d bytes" % (pushed, size))
                if i == 0:
                    dt, st = prefetch(m.mp)
                    again = ctl.counters(m.mp)["pushed_bytes"] - pushed
                    notes["6b"] = "a second prefetch of everything: %s, pushed %s more" % (
                        C.fmt_time(dt), C.fmt_bytes(again))
                    if pushed > size:
                        notes["6b"] += "; pushed_bytes %s (%s over the tensors: widened to whole pages)" % (
                            C.fmt_bytes(pushed), C.fmt_bytes(pushed - size))
                # 6c, inside 6d's window
                c0 = ctl.counters(m.mp)
                if i == 0:
                    bad = compare(mt, buf)
                    if bad:
                        raise RuntimeError("%s: bytes through the mount differ from the source" % bad)
                read_source(tensors, buf)  # warm again: the prefetch let go of it
                pair = [("src_read", read_source, tensors), ("mnt_read", read_mount, mt)]
                for key, fn, ts in (pair if i % 2 == 0 else pair[::-1]):
                    dt, got = C.timed(fn, ts, buf)
                    if got != size:
                        raise RuntimeError("read %d bytes, expected %d" % (got, size))
                    t[key].append(dt)
                c1 = ctl.counters(m.mp)
                reads.append((c1["read_requests"] - c0["read_requests"], c1["read_bytes"] - c0["read_bytes"]))
                print("row 6: run %d: reads of the prefetched tensors added %d read_requests (%d bytes)"
                      % (i + 1, reads[-1][0], reads[-1][1]))

        res = C.Results(args, "Row 6: prefetch to the host page cache (%s)" % C.fmt_bytes(size), env)

        def rate(key):
            s = C.median(t[key])
            return s, "%s (%s)" % (C.fmt_rate(size / s), C.fmt_time(s))

        def add(row, what, mkey, bkey, target=None, limit=None, note=""):
            if not t[mkey]:
                res.add(row, what, "n/a (not root)" if not C.is_root() else "n/a (--no-cold)", "", None)
                return
            (ms, mcell), (bs, bcell) = rate(mkey), rate(bkey)
            ratio = bs / ms
            res.add(row, what, mcell, bcell + (" (dd)" if bkey.startswith("cat") else ""), ratio,
                    target, None if limit is None else ratio >= limit, note=note)

        def daemon_note(key):
            if not daemon_s[key]:
                return ""
            return "the daemon's own job time %s (median)" % C.fmt_time(C.median(daemon_s[key]))

        note = daemon_note("pf_cold")
        if disk["pf_cold"]:
            note += "; read from the disk (median): stfs %s, baseline %s" % (
                C.fmt_bytes(C.median(disk["pf_cold"])), C.fmt_bytes(C.median(disk["cat_cold"])))
        thr = "%d thread%s" % (args.threads, "" if args.threads == 1 else "s")
        add("6a", "host prefetch, %s, source cold" % thr, "pf_cold", "cat_cold", note=note)
        note = "; ".join(x for x in (daemon_note("pf_warm"), notes.get("6b", "")) if x)
        add("6b", "host prefetch, %s, source warm" % thr, "pf_warm", "cat_warm", note=note)
        add("6c", "read prefetched tensors (warm)", "mnt_read", "src_read", ">= 0.95", 0.95,
            note="compared with the source bytes: equal")
        worst = max(reads)
        res.add("6d", "READs to the daemon during 6c", "%d (%s), worst of %d runs" % (
            worst[0], C.fmt_bytes(worst[1]), len(reads)), "—", None, "= 0", worst[0] == 0)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
