#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fault suite: many concurrent readers, every byte checked.

    python3 tests/fault/test_stress.py --stfs build/fs/stfs --gen tools/gen_model.py
    STFS_STRESS_SECONDS=60 python3 tests/fault/test_stress.py ...

32 threads in 4 processes (multiprocessing, 8 threads each) read for
STFS_STRESS_SECONDS (default 20) at random offsets and lengths: every
tensor file, every T.npy, D.part.safetensors of several directories and
/.stfs/model.safetensors, through pread (also O_DIRECT where the kernel
takes it), whole-file reads, fresh opens and mmaps; now and then a file's
cached pages are dropped (POSIX_FADV_DONTNEED) so reads keep reaching the
daemon. Every byte is compared with content built here from the source
files: a tensor's bytes; a .npy is its header (read from the mount, checked
field by field with numpy.lib.format) and then the tensor's bytes; a subset
.safetensors is its header (read from the mount and checked: names, dtypes,
shapes, offsets that tile the data) and then the source bytes at those
offsets. No error may occur, the daemon's resident memory must stay within
200 MiB of where it started, and it must exit 0 at unmount.

Exits 77 (SKIP) without /dev/fuse or fusermount3.
"""

import io
import json
import mmap
import multiprocessing
import os
import random
import sys
import threading
import time
import traceback

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from faultlib import FaultCase, fmt_status, proc_status, read_model, run_gen, status_doc  # noqa: E402

SECONDS = float(os.environ.get("STFS_STRESS_SECONDS", "20"))
PROCESSES = 4
THREADS = 8
RSS_BOUND_KIB = 200 * 1024
NPY_DESCR = {"F16": "<f2", "F32": "<f4", "BF16": "<u2"}   # BF16: a stand-in of its width
SUBSET_DIRS = ("model/layers/0", "model/layers/1/mlp", "model/layers/2/self_attn/q_proj",
               "model/layers", "model", "lm_head", "model/norm")

# path (relative to the mount) -> expected bytes; set before the fork
FILES = []


def has_odirect(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    try:
        os.pread(fd, 10, 1)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class Checker:
    """One reader thread: random operations until @deadline."""

    def __init__(self, mnt, seed, deadline, odirect):
        self.mnt = mnt
        self.rnd = random.Random(seed)
        self.deadline = deadline
        self.odirect = odirect
        self.fds = {}
        self.ops = 0
        self.bytes = 0
        self.errors = []
        self.nerrors = 0

    def error(self, msg):
        self.nerrors += 1
        if len(self.errors) < 10:
            self.errors.append(msg)

    def check(self, rel, what, off, got, want):
        self.bytes += len(got)
        if got != want:
            n = min(len(got), len(want))
            first = next((i for i in range(n) if got[i] != want[i]), n)
            self.error("%s %s at %d: %d bytes, %d expected, first difference at +%d"
                       % (rel, what, off, len(got), len(want), first))

    def length(self, size):
        r = self.rnd.random()
        if r < 0.4:
            return self.rnd.randint(1, 4096)
        if r < 0.8:
            return self.rnd.randint(1, 256 << 10)
        return self.rnd.randint(1, max(2 << 20, size))

    def offset(self, size):
        r = self.rnd.random()
        if r < 0.05:
            return size + self.rnd.randint(0, 4096)     # at or past the end
        if r < 0.25:
            return self.rnd.randrange(0, size + 1, 4096) if size >= 4096 else 0
        return self.rnd.randint(0, size)

    def fd(self, rel):
        fd = self.fds.get(rel)
        if fd is None:
            fd = self.fds[rel] = os.open(os.path.join(self.mnt, rel), os.O_RDONLY)
        return fd

    def op(self):
        rel, want = FILES[self.rnd.randrange(len(FILES))]
        size = len(want)
        mv = memoryview(want)
        r = self.rnd.random()
        if r < 0.55:
            off, n = self.offset(size), self.length(size)
            self.check(rel, "pread(%d)" % n, off, os.pread(self.fd(rel), n, off), mv[off:off + n])
        elif r < 0.65:
            with open(os.path.join(self.mnt, rel), "rb", buffering=0) as f:
                parts = []
                while True:
                    b = f.read(self.rnd.choice((4096, 65536, 1 << 20, 3 << 20)))
                    if not b:
                        break
                    parts.append(b)
            self.check(rel, "whole read", 0, b"".join(parts), want)
        elif r < 0.80:
            if size == 0:
                return
            with open(os.path.join(self.mnt, rel), "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            try:
                if len(mm) != size:
                    self.error("%s: mmap of %d bytes, expected %d" % (rel, len(mm), size))
                    return
                for _ in range(self.rnd.randint(1, 8)):
                    off = self.rnd.randrange(size)
                    n = min(self.length(size), size - off)
                    self.check(rel, "mmap[%d]" % n, off, mm[off:off + n], mv[off:off + n])
            finally:
                mm.close()
        elif r < 0.88 and self.odirect:
            fd = os.open(os.path.join(self.mnt, rel), os.O_RDONLY | os.O_DIRECT)
            try:
                off, n = self.offset(size), self.length(size)
                self.check(rel, "O_DIRECT pread(%d)" % n, off, os.pread(fd, n, off),
                           mv[off:off + n])
            finally:
                os.close(fd)
        elif r < 0.95:
            os.posix_fadvise(self.fd(rel), 0, 0, os.POSIX_FADV_DONTNEED)
        else:
            st = os.stat(os.path.join(self.mnt, rel))
            if st.st_size != size:
                self.error("%s: st_size %d, expected %d" % (rel, st.st_size, size))
        self.ops += 1

    def run(self):
        try:
            while time.monotonic() < self.deadline:
                try:
                    self.op()
                except OSError as e:
                    self.error("%s" % e)
        except Exception:   # a bug in the checker itself is an error too
            self.error(traceback.format_exc())
        finally:
            for fd in self.fds.values():
                try:
                    os.close(fd)
                except OSError as e:
                    self.error("close: %s" % e)


def process_main(k, mnt, deadline, odirect, queue):
    checkers = [Checker(mnt, 1000 * k + i, deadline, odirect) for i in range(THREADS)]
    threads = [threading.Thread(target=c.run) for c in checkers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put({"process": k, "ops": sum(c.ops for c in checkers),
               "bytes": sum(c.bytes for c in checkers),
               "nerrors": sum(c.nerrors for c in checkers),
               "errors": [e for c in checkers for e in c.errors][:20]})


class StressTest(FaultCase):
    @classmethod
    def prepare(cls):
        cls.model = os.path.join(cls.tmp, "model")
        run_gen("llama", cls.model, "--shards", 3, "--layers", 6, "--hidden", 384)
        cls.tensors, cls.shards = read_model(cls.model)

    # -- expected content of the views

    def expect_npy(self, m, t):
        import numpy as np
        from numpy.lib import format as npformat
        p = m.p(t.path + ".npy")
        with open(p, "rb") as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = npformat.read_array_header_2_0(f)
            start = f.tell()
            f.seek(0)
            header = f.read(start)
        self.assertEqual(shape, tuple(t.shape), p)
        self.assertFalse(fortran, p)
        self.assertEqual(dtype, np.dtype(NPY_DESCR[t.dtype]), p)
        self.assertEqual(start % 64, 0, "%s: data at %d, not 64-byte aligned" % (p, start))
        self.assertEqual(os.stat(p).st_size, start + len(t.data), p)
        return header + t.data

    def expect_subset(self, m, rel, prefix):
        """@rel: the view's path; @prefix: what the names in it leave out."""
        p = m.p(rel)
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            raw_header = f.read(n)
        self.assertEqual(n % 8, 0, p)
        hdr = json.loads(raw_header)
        hdr.pop("__metadata__", None)
        want = {t.name[len(prefix):]: t for t in self.tensors if t.name.startswith(prefix)}
        self.assertEqual(sorted(hdr), sorted(want), "tensor names in " + rel)
        spans = []
        for name, e in hdr.items():
            t = want[name]
            self.assertEqual((e["dtype"], e["shape"]), (t.dtype, t.shape), "%s: %s" % (rel, name))
            b, end = e["data_offsets"]
            self.assertEqual(end - b, len(t.data), "%s: %s" % (rel, name))
            spans.append((b, end, t))
        spans.sort(key=lambda s: s[0])
        body = io.BytesIO()
        for b, end, t in spans:
            self.assertEqual(b, body.tell(), "%s: offsets do not tile the data" % rel)
            body.write(t.data)
        self.assertEqual(os.stat(p).st_size, 8 + n + body.tell(), rel)
        return n.to_bytes(8, "little") + raw_header + body.getvalue()

    def build_expected(self, m):
        files = [(t.path, t.data) for t in self.tensors]
        files += [(t.path + ".npy", self.expect_npy(m, t)) for t in self.tensors]
        for d in SUBSET_DIRS:
            files.append((d + ".part.safetensors", self.expect_subset(m, d + ".part.safetensors",
                                                                 d.replace("/", ".") + ".")))
        files.append((".stfs/model.safetensors",
                      self.expect_subset(m, ".stfs/model.safetensors", "")))
        return files

    def test_stress(self):
        global FILES
        m = self.mount(self.model)
        FILES = self.build_expected(m)
        odirect = has_odirect(m.p(self.tensors[0].path))
        # drop what building the expectations cached
        for rel, _ in FILES:
            with open(m.p(rel), "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        before = proc_status(m.proc.pid)
        reads_before = status_doc(m.path)["counters"]["read_requests"]
        total = sum(len(w) for _, w in FILES)
        print("\n  %d files (%.1f MiB), %d processes x %d threads, %.0fs, O_DIRECT %s"
              % (len(FILES), total / 2**20, PROCESSES, THREADS, SECONDS,
                 "yes" if odirect else "no"), file=sys.stderr)
        print("  daemon before: " + fmt_status(before), file=sys.stderr)

        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        deadline = time.monotonic() + SECONDS
        procs = [ctx.Process(target=process_main, args=(k, m.path, deadline, odirect, queue))
                 for k in range(PROCESSES)]
        for p in procs:
            p.start()
            self.kill_child(p)
        results = []
        try:
            for _ in procs:
                results.append(queue.get(timeout=SECONDS + 120))
        except Exception:
            self.fail("a reader process did not finish within %.0fs of the deadline "
                      "(hang); results so far: %r" % (120, results))
        for p in procs:
            p.join(timeout=30)
            self.assertEqual(p.exitcode, 0, "reader process exit status")

        after = proc_status(m.proc.pid)
        reads = status_doc(m.path)["counters"]["read_requests"] - reads_before
        ops = sum(r["ops"] for r in results)
        nbytes = sum(r["bytes"] for r in results)
        print("  %d operations, %.1f MiB verified, %d reads reached the daemon"
              % (ops, nbytes / 2**20, reads), file=sys.stderr)
        print("  daemon after:  " + fmt_status(after), file=sys.stderr)
        errors = [e for r in results for e in r["errors"]]
        nerrors = sum(r["nerrors"] for r in results)
        self.assertEqual(nerrors, 0, "%d errors, first ones:\n  %s"
                         % (nerrors, "\n  ".join(errors[:20])))
        self.assertGreater(ops, 100 * PROCESSES, "too little was done")
        self.assertGreater(reads, 100, "the readers hardly reached the daemon")
        self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
        self.assertLess(after["VmRSS"] - before["VmRSS"], RSS_BOUND_KIB,
                        "daemon RSS grew by %.0f MiB" % ((after["VmRSS"] - before["VmRSS"]) / 1024))
        self.unmount(m)
        self.assertEqual(m.stderr(), "")


if __name__ == "__main__":
    sys.exit(faultlib.main())
