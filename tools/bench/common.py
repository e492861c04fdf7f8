# SPDX-License-Identifier: Apache-2.0
"""Shared helpers of the stfs benchmark scripts (tools/bench/*.py).

Every script measures stfs and a baseline on the same bytes in the same run
and reports the ratio; absolute times are printed for context only and are
never a pass/fail criterion (the machines these run on are shared and
noisy: every figure is the median of --reps runs).

Mounts use a fresh mkdtemp() mount point, run the daemon in the foreground
(-f, so its pid is ours), wait for the mount by polling os.path.ismount, and
are always unmounted with fusermount3 -u (try/finally), even on Ctrl-C.

Cold runs drop the page cache with `echo 3 > /proc/sys/vm/drop_caches`
(root only). Note: pages of the source that a daemon has mapped and touched
are not dropped by drop_caches (mapped pages are skipped), so every cold
stfs run starts a fresh daemon first.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GEN = os.path.join(ROOT, "tools", "gen_model.py")

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10

# Default model of the I/O rows: Llama-style, 16 layers, hidden 2048, three
# shards, about 1.13 GiB. --quick: about 10 MiB.
LLAMA = dict(hidden=2048, layers=16, shards=3)
LLAMA_QUICK = dict(hidden=512, layers=2, shards=2)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- options

def common_args(ap, model=True):
    """Options every script takes."""
    ap.add_argument("--stfs", default=os.environ.get("STFS", os.path.join(ROOT, "build", "fs", "stfs")),
                    help="the daemon (default: $STFS or build/fs/stfs)")
    ap.add_argument("--workdir", help="where to generate models (default: a new directory "
                    "in /var/tmp, removed at exit); must be on a real disk for cold runs")
    ap.add_argument("--reps", type=int, help="runs per figure; the median is reported")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes and one run: a smoke test, not a measurement")
    ap.add_argument("--json", help="append the results to this JSON-lines file (run.sh's summary)")
    if model:
        ap.add_argument("--model", help="existing Llama-style model directory to use instead of "
                        "generating one (it is not modified)")
        ap.add_argument("--hidden", type=int, help="--hidden of the generated model (default %d)"
                        % LLAMA["hidden"])
        ap.add_argument("--layers", type=int, help="--layers of the generated model (default %d)"
                        % LLAMA["layers"])
        ap.add_argument("--shards", type=int, help="--shards of the generated model (default %d)"
                        % LLAMA["shards"])


def reps(args, default):
    if args.reps:
        return args.reps
    return 1 if args.quick else default


class Workdir:
    """--workdir, or a temporary directory on disk removed at exit."""

    def __init__(self, args):
        self.own = not args.workdir
        if self.own:
            base = "/var/tmp" if os.path.isdir("/var/tmp") else None
            self.path = tempfile.mkdtemp(prefix="stfs-bench-", dir=base)
        else:
            self.path = os.path.abspath(args.workdir)
            os.makedirs(self.path, exist_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.own:
            shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------- models

def gen(preset, outdir, **opt):
    """Run tools/gen_model.py unless OUTDIR already holds that model."""
    stamp = os.path.join(outdir, ".bench-stamp")
    want = json.dumps([preset, sorted(opt.items())])
    try:
        with open(stamp) as f:
            if f.read() == want:
                return outdir
    except OSError:
        pass
    shutil.rmtree(outdir, ignore_errors=True)
    cmd = [sys.executable, GEN, preset, outdir]
    for k, v in sorted(opt.items()):
        cmd += ["--" + k, str(v)]
    log("generating: " + " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    if preset == "llama":
        bf16_to_f16(outdir)
    with open(stamp, "w") as f:
        f.write(want)
    return outdir


def bf16_to_f16(outdir):
    """Relabel BF16 tensors as F16 in every shard header, in place.

    Same sizes and offsets, so the data bytes and the layout stay the same;
    the header keeps its length (padded with spaces, which the format allows).
    Row 4 needs this: NumPy and safetensors.numpy have no bfloat16.
    """
    for name in sorted(os.listdir(outdir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(outdir, name), "r+b") as f:
            n = int.from_bytes(f.read(8), "little")
            head = f.read(n)
            new = head.replace(b'"dtype":"BF16"', b'"dtype":"F16"')
            new = new.rstrip(b" ") + b" " * (n - len(new.rstrip(b" ")))
            assert len(new) == n
            f.seek(8)
            f.write(new)


def llama_model(args, work):
    """The model directory of the I/O rows: --model, or a generated one."""
    if args.model:
        return os.path.abspath(args.model)
    opt = dict(LLAMA_QUICK if args.quick else LLAMA)
    for k in ("hidden", "layers", "shards"):
        if getattr(args, k, None):
            opt[k] = getattr(args, k)
    name = "llama-h%d-l%d-s%d" % (opt["hidden"], opt["layers"], opt["shards"])
    return gen("llama", os.path.join(work.path, name), **opt)


# ---------------------------------------------------------------- system

def is_root():
    return os.geteuid() == 0


_dropped_note = [False]


def drop_caches():
    """sync; echo 3 > /proc/sys/vm/drop_caches. Returns False if not root."""
    if not is_root():
        return False
    if not _dropped_note[0]:
        log("note: cold runs drop the page cache (echo 3 > /proc/sys/vm/drop_caches)")
        _dropped_note[0] = True
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    return True


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


def proc_status(pid, key):
    """A /proc/PID/status field in bytes (VmRSS, RssAnon, RssFile, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def resident_bytes(paths):
    """Sum of the page-cache bytes of PATHS that are resident (fincore(1))."""
    total = 0
    paths = list(paths)
    for i in range(0, len(paths), 500):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES"] + paths[i:i + 500],
                             capture_output=True, text=True)
        total += sum(int(x) for x in out.stdout.split())
    return total


def proc_cpu(pid):
    """CPU seconds (user + system) process @pid has used, all its threads."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ps_rss(pid):
    """RSS in bytes as ps -o rss reports it."""
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) * 1024


def disk_read_bytes(path):
    """Bytes read so far from the block device holding PATH (None if unknown).

    From /sys/dev/block/MAJ:MIN/stat (sectors read, 512-byte units); a
    partition's own stat file is used when PATH is on a partition.
    """
    st = os.stat(path)
    try:
        with open("/sys/dev/block/%d:%d/stat" % (os.major(st.st_dev), os.minor(st.st_dev))) as f:
            return int(f.read().split()[2]) * 512
    except (OSError, IndexError, ValueError):
        return None


def dev_of_path(path):
    """(fstype, device read_ahead_kb or None) of the file system holding PATH."""
    st = os.stat(path)
    maj, mnr = os.major(st.st_dev), os.minor(st.st_dev)
    ra = None
    try:
        with open("/sys/class/bdi/%d:%d/read_ahead_kb" % (maj, mnr)) as f:
            ra = int(f.read())
    except OSError:
        pass
    fstype = "?"
    best = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a = line.split()
            mp = a[4].encode().decode("unicode_escape")
            sep = a.index("-")
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, fstype = mp, a[sep + 1]
    return fstype, ra


def environment(model=None, stfs=None):
    """Lines describing the machine, for the head of every table."""
    mi = meminfo()
    lines = ["kernel %s, %d CPUs, %.1f GiB RAM, python %s, load average %.1f (1 min)"
             % (platform.release(), os.cpu_count(), mi["MemTotal"] / GiB, platform.python_version(),
                os.getloadavg()[0])]
    if stfs:
        try:
            v = subprocess.run([stfs, "-V"], capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError as e:
            v = str(e)
        lines.append("daemon %s (%s)" % (stfs, v))
    if model:
        fstype, ra = dev_of_path(model)
        lines.append("source %s on %s, device read_ahead_kb=%s" % (model, fstype, ra))
        if fstype in ("tmpfs", "ramfs"):
            lines.append("WARNING: the source is in memory; cold runs are not cold")
    if not is_root():
        lines.append("not root: cold runs (drop_caches) are skipped")
    return lines


# ---------------------------------------------------------------- mounts

class Mount:
    """stfs -f [OPTS] SOURCE MP on a fresh mkdtemp() mount point.

    .mp, .pid, .seconds (from exec to os.path.ismount), .daemon (Popen).
    SOURCE None: DAEMON -f [OPTS] MP (nullfs, which has no source).
    """

    def __init__(self, stfs, source, opts=(), timeout=120.0):
        self.stfs, self.source, self.opts, self.timeout = stfs, source, list(opts), timeout
        self.mp = None
        self.daemon = None

    def __enter__(self):
        self.mp = tempfile.mkdtemp(prefix="stfs-bench-mnt-")
        self.err = tempfile.TemporaryFile()
        try:
            t0 = time.perf_counter()
            argv = [self.stfs, "-f"] + self.opts + ([self.source] if self.source else []) + [self.mp]
            self.daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.err)
            while not os.path.ismount(self.mp):
                if self.daemon.poll() is not None:
                    self.err.seek(0)
                    raise RuntimeError("stfs exited with %d before mounting: %s"
                                       % (self.daemon.returncode,
                                          self.err.read().decode(errors="replace").strip()))
                if time.perf_counter() - t0 > self.timeout:
                    raise RuntimeError("no mount after %.0f s" % self.timeout)
                time.sleep(0.001)
            self.seconds = time.perf_counter() - t0
        except BaseException:
            self.__exit__()
            raise
        self.pid = self.daemon.pid
        return self

    def bdi_path(self):
        st = os.stat(self.mp)
        return "/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(st.st_dev), os.minor(st.st_dev))

    def bdi_read_ahead_kb(self):
        try:
            with open(self.bdi_path()) as f:
                return int(f.read())
        except OSError:
            return None

    def set_bdi_read_ahead_kb(self, kb):
        """Set the mount's readahead (root); False where it cannot."""
        try:
            with open(self.bdi_path(), "w") as f:
                f.write("%d\n" % kb)
            return True
        except OSError:
            return False

    def __exit__(self, *exc):
        if self.mp is None:
            return
        if self.daemon is not None and os.path.ismount(self.mp):
            t0 = time.perf_counter()
            while True:
                r = subprocess.run(["fusermount3", "-u", self.mp], capture_output=True)
                if r.returncode == 0 or not os.path.ismount(self.mp):
                    break
                if time.perf_counter() - t0 > 10:
                    subprocess.run(["fusermount3", "-u", "-z", self.mp], capture_output=True)
                    break
                time.sleep(0.05)
        if self.daemon is not None:
            try:
                self.daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        try:
            os.rmdir(self.mp)
        except OSError:
            pass
        self.err.close()
        self.mp = None


def tensors_of(mp, model_dir):
    """Tensors from MP/.stfs/header.json, in source order (shard, offset).

    Each: dict(name, path (absolute, in the mount), src (absolute shard
    path), offset, size, dtype, shape).
    """
    with open(os.path.join(mp, ".stfs", "header.json")) as f:
        h = json.load(f)
    out = []
    for t in h["tensors"]:
        src = os.path.join(model_dir, t.get("component") or "", t["shard"])
        if not os.path.exists(src):
            raise RuntimeError("%s: shard not found (multi-component sources are not supported)" % src)
        out.append(dict(name=t["name"], path=os.path.join(mp, t["path"]), src=src,
                        offset=t["offset"], size=t["size"], dtype=t["dtype"], shape=t["shape"],
                        rel=t["path"]))
    out.sort(key=lambda t: (t["src"], t["offset"]))
    return out


# ---------------------------------------------------------------- figures

def median(xs):
    return statistics.median(xs)


def timed(fn, *a):
    t0 = time.perf_counter()
    r = fn(*a)
    return time.perf_counter() - t0, r


def fmt_bytes(n):
    for unit, s in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if abs(n) >= unit:
            return "%.2f %s" % (n / unit, s)
    return "%d B" % n


def fmt_rate(bps):
    return "%.2f GiB/s" % (bps / GiB) if bps >= 0.1 * GiB else "%.1f MiB/s" % (bps / MiB)


def fmt_time(s):
    return "%.3f s" % s if s >= 0.1 else "%.1f ms" % (s * 1000)


class Results:
    """Rows of one script: printed as a Markdown table, appended to --json.

    ratio is stfs/baseline for rates and for times alike (the kind says
    which is better); target is a predicate on the ratio or None.
    """

    def __init__(self, args, title, env):
        self.args, self.title, self.env, self.rows = args, title, env, []

    def add(self, row, what, stfs, baseline, ratio, target=None, met=None, note=""):
        if self.args.quick:
            met = None  # tiny sizes measure nothing
        r = dict(row=row, what=what, stfs=stfs, baseline=baseline,
                 ratio=None if ratio is None else round(ratio, 3), target=target or "",
                 met=met, note=note, quick=bool(self.args.quick))
        self.rows.append(r)
        return r

    def print(self):
        print()
        print("### " + self.title)
        print()
        for line in self.env:
            print("    " + line)
        print()
        print("| row | measure | stfs | baseline | ratio | target |")
        print("|---|---|---|---|---|---|")
        for r in self.rows:
            print("| %s | %s | %s | %s | %s | %s |" % (
                r["row"], r["what"], r["stfs"], r["baseline"],
                "—" if r["ratio"] is None else "%.2f" % r["ratio"],
                target_cell(r)))
        notes = [r for r in self.rows if r["note"]]
        if notes:
            print()
            for r in notes:
                print("- %s %s: %s" % (r["row"], r["what"], r["note"]))
        sys.stdout.flush()
        if self.args.json:
            with open(self.args.json, "a") as f:
                for r in self.rows:
                    f.write(json.dumps(r) + "\n")


def add_rate(res, times, size, row, what, mkey, bkey, target, limit, note=""):
    """A throughput row of @res: the medians of times[@mkey] (stfs) and
    times[@bkey] (baseline) for @size bytes; met when the ratio reaches
    @limit (None: no target). No stfs times: "n/a (not root)"."""
    if not times[mkey]:
        res.add(row, what, "n/a (not root)", "", None)
        return
    ms, bs = median(times[mkey]), median(times[bkey])
    ratio = bs / ms
    res.add(row, what, "%s (%s)" % (fmt_rate(size / ms), fmt_time(ms)),
            "%s (%s)" % (fmt_rate(size / bs), fmt_time(bs)), ratio, target,
            None if limit is None else ratio >= limit, note=note)


def target_cell(r):
    if not r["target"]:
        return ""
    if r["met"] is None:
        return r["target"]
    return "%s %s" % (r["target"], "(met)" if r["met"] else "(**missed**)")


def parser(desc):
    return argparse.ArgumentParser(description=desc, formatter_class=argparse.RawDescriptionHelpFormatter)
