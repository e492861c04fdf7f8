#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fault suite: the source changes under a live mount.

    python3 tests/fault/test_source.py --stfs build/fs/stfs --gen tools/gen_model.py

- A shard truncated in place: reads of the lost range (tensor files, their
  .npy, a D.part.safetensors view and /.stfs/model.safetensors spanning it, a
  host prefetch of it) fail with EIO, never zeros; every other tensor keeps
  reading right; the daemon stays up, logs exactly one line naming the
  shard, and exits 0 at unmount.
- A shard overwritten in place (same size): every read of it (tensors,
  their .npy, views over it) fails with EIO, cached or not; one log line
  names the shard.
- A shard replaced (a new file renamed over it): the mount keeps serving the
  bytes it was mounted with.
- A whole shard file (.stfs/shards) after a cut: the source as it is when
  the kernel serves it (passthrough), EIO when the daemon does.

Exits 77 (SKIP) without /dev/fuse or fusermount3.
"""

import errno
import mmap
import os
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from faultlib import (DONE, FAILED, PAGE, FaultCase,  # noqa: E402
                      dir_of, errname, read_model, run_gen)

WATCH_DELAY = 0.5   # time for the daemon's inotify watcher to see a change


def parse_subset(raw):
    """(header, data_start) of a .safetensors file's bytes."""
    import json
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    return hdr, 8 + n


class TruncatedSourceTest(FaultCase):
    """A shard truncated in place while mounted."""

    @classmethod
    def prepare(cls):
        cls.orig = os.path.join(cls.tmp, "orig")
        run_gen("llama", cls.orig, "--shards", 3, "--layers", 4, "--hidden", 256)

    def fresh_model(self):
        d = os.path.join(self.tmp, "model-%s" % self._testMethodName)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(self.orig, d)
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        return (d,) + read_model(d)

    def check_one_log_line(self, m, shard, others):
        lines = self.stderr_lines(m)
        self.assertEqual(len(lines), 1, "want exactly one stderr line, got:\n" + m.stderr())
        self.assertIn(os.path.basename(shard), lines[0], "the line names the shard")
        self.assertIn("truncated", lines[0])
        for o in others:
            self.assertNotIn(os.path.basename(o), lines[0], "the line names an intact shard")

    def check_intact(self, m, tensors):
        bad = []
        for t in tensors:
            got, err = self.read_errno(m.p(t.path))
            if err is not None:
                bad.append("%s: %s" % (t.name, errname(err)))
            elif got != t.data:
                bad.append("%s: %d bytes differ from the source" % (t.name, len(got)))
        self.assertEqual(bad, [], "intact tensors after the truncation")

    def check_eio(self, m, rels):
        bad = []
        for rel in rels:
            got, err = self.read_errno(m.p(rel))
            if err != errno.EIO:
                bad.append("%s: %s" % (rel, "read %d bytes (%s)" % (
                    len(got), "all zero" if not got.strip(b"\0") else "data")
                    if err is None else errname(err)))
        self.assertEqual(bad, [], "reads of the lost range must fail with EIO")

    def test_truncated_in_place(self):
        model, tensors, shards = self.fresh_model()
        shard = shards[0]
        mine = [t for t in tensors if t.shard == shard]
        # Cut where a small tensor begins inside a page that ends after it:
        # the mapping reads the rest of that page as zeros, so only the
        # daemon's size check stands between a reader and wrong bytes.
        cands = [t for t in mine if t.begin % PAGE and t.data
                 and t.end <= (t.begin // PAGE + 1) * PAGE]
        self.assertTrue(cands, "no tensor inside a partial page in %s" % shard)
        size = os.path.getsize(shard)
        victim = min(cands, key=lambda t: abs(t.begin - size // 2))
        cut = victim.begin
        lost = [t for t in mine if t.end > cut and t.data]
        intact = [t for t in tensors if t not in lost]
        self.assertIn(victim, lost)
        self.assertTrue(any(t.shard == shard for t in intact), "nothing intact before the cut")

        m = self.mount(model)
        # one view that will span the cut, one that stays whole
        span_dir = dir_of(victim)
        whole_dir = next(d for d in (dir_of(t) for t in reversed(tensors))
                         if all(t in intact for t in tensors if dir_of(t) == d))

        os.truncate(shard, cut)
        time.sleep(WATCH_DELAY)

        self.check_eio(m, [t.path for t in lost])
        self.check_eio(m, [victim.path + ".npy", lost[-1].path + ".npy",
                           span_dir + ".part.safetensors", ".stfs/model.safetensors"])
        self.check_intact(m, intact)

        # views that do not touch the lost range keep working
        t = intact[-1]
        raw, err = self.read_errno(m.p(t.path + ".npy"))
        self.assertIsNone(err, "%s.npy: %s" % (t.path, err and errname(err)))
        self.assertBytes(raw[-len(t.data):], t.data, t.path + ".npy data")
        raw, err = self.read_errno(m.p(whole_dir + ".part.safetensors"))
        self.assertIsNone(err, "%s.part.safetensors: %s" % (whole_dir, err and errname(err)))
        hdr, start = parse_subset(raw)
        under = {t.name: t for t in intact if dir_of(t) == whole_dir}
        self.assertEqual(len(hdr), len(under), "tensors in %s.part.safetensors" % whole_dir)
        for name, e in hdr.items():
            full = whole_dir.replace("/", ".") + "." + name
            b, end = e["data_offsets"]
            self.assertBytes(raw[start + b:start + end], under[full].data, "subset " + full)

        # an mmap of a lost tensor: the reader gets SIGBUS, never zeros
        code = ("import mmap,sys\n"
                "f=open(sys.argv[1],'rb')\n"
                "m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\n"
                "sys.stdout.write('zeros' if not m[:].strip(b'\\0') else 'data')\n")
        r = subprocess.run([sys.executable, "-c", code, m.p(lost[-1].path)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
        self.assertEqual(r.returncode, -signal.SIGBUS,
                         "mmap reader of a lost tensor: exit %d, saw %r"
                         % (r.returncode, r.stdout))

        # a host prefetch of the lost range fails (EIO, the shard named) and
        # puts nothing in the page cache: the tensor still gives EIO
        c = self.control(m)
        job = c.prefetch(victim.name + "\n" + lost[-1].name, threads=1)
        st = self.wait_job(c, job)
        self.assertEqual(st["state"], FAILED, "prefetch of lost tensors: %r" % st)
        self.assertEqual(st["error"], errno.EIO, "prefetch error: %r" % st)
        self.assertIn(os.path.basename(shard), st["message"])
        job = c.prefetch("\n".join(t.name for t in intact[:3]), threads=1)
        st = self.wait_job(c, job)
        self.assertEqual(st["state"], DONE, "prefetch of intact tensors: %r" % st)
        c.close()
        self.check_eio(m, [victim.path, lost[-1].path])
        self.check_intact(m, intact)

        self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
        self.assertTrue(faultlib.mounted(m.path))
        self.unmount(m)
        self.check_one_log_line(m, shard, [s for s in shards if s != shard])

    def test_whole_file_truncated(self):
        """A shard file under .stfs/shards after its shard was cut: served
        by the kernel (passthrough) it is the source as it is now, cut short
        (README: Whole files); served by the daemon (-o passthrough=off) the
        lost range fails with EIO like any file over it."""
        model, tensors, shards = self.fresh_model()
        shard = shards[0]
        rel = os.path.join(".stfs", "shards", os.path.basename(shard))
        with open(shard, "rb") as f:
            orig = f.read()
        cut = len(orig) // 2
        pt = self.mount(model)
        off = self.mount(model, "passthrough=off")
        os.truncate(shard, cut)
        time.sleep(WATCH_DELAY)
        self.check_eio(off, [rel])
        got, err = self.read_errno(pt.p(rel))
        if "passthrough on" not in pt.stderr():
            self.skipTest("no passthrough here: " + pt.stderr().strip())
        self.assertIsNone(err, "%s through passthrough: %s" % (rel, err and errname(err)))
        self.assertBytes(got, orig[:cut], rel + " through passthrough, after the cut")
        for m in (pt, off):
            self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
            self.unmount(m)

    def test_truncated_after_reads_both_cache_modes(self):
        """-o cache=single and double: tensors read before a truncation
        (single mode let go of their source pages), then the mount's pages
        evicted: they are read again right, the lost ones still get EIO."""
        for mode in ("single", "double"):
            with self.subTest(cache=mode):
                model, tensors, shards = self.fresh_model()
                shard = shards[0]
                mine = [t for t in tensors if t.shard == shard and t.data]
                cut = mine[len(mine) // 2].begin
                lost = [t for t in mine if t.end > cut]
                intact = [t for t in tensors if t not in lost]
                m = self.mount(model, "cache=" + mode)
                self.check_intact(m, intact)
                os.truncate(shard, cut)
                time.sleep(WATCH_DELAY)
                for t in intact:
                    fd = os.open(m.p(t.path), os.O_RDONLY)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
                self.check_intact(m, intact)
                self.check_eio(m, [t.path for t in lost])
                self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
                self.unmount(m)
                self.check_one_log_line(m, shard, [s for s in shards if s != shard])

    def test_truncated_to_zero_view_across_shards(self):
        """A shard cut to nothing: views spanning it and an intact shard
        fail; the log names the cut shard only (not the intact one that the
        same read touched)."""
        model, tensors, shards = self.fresh_model()
        shard = shards[1]
        lost = [t for t in tensors if t.shard == shard and t.data]
        intact = [t for t in tensors if t.shard != shard]
        # the deepest directory with tensors in shards[0] and shards[1]
        def under(d):
            return [t for t in tensors if t.path.startswith(d + "/")]
        dirs = {"/".join(t.path.split("/")[:k]) for t in lost
                for k in range(1, t.path.count("/") + 1)}
        span = max((d for d in dirs if {t.shard for t in under(d)} >= {shards[0], shard}),
                   key=lambda d: d.count("/"))
        m = self.mount(model)
        os.truncate(shard, 0)
        time.sleep(WATCH_DELAY)
        # whole-file reads cross from intact bytes into the lost shard
        self.assertTrue(os.path.isdir(m.p(span)), span)
        self.check_eio(m, [".stfs/model.safetensors", span + ".part.safetensors"])
        self.check_eio(m, [t.path for t in lost])
        self.check_intact(m, intact)
        self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
        self.unmount(m)
        self.check_one_log_line(m, shard, [s for s in shards if s != shard])

    def test_overwritten_in_place(self):
        """A shard written to in place, same size: every read of its
        tensors and of views over it fails with EIO (what the mount's page
        cache held of them is dropped: a read that raced the write may have
        cached new bytes); other shards keep working; one log line names
        the shard. Before, cached pages gave the old bytes and uncached ones
        the new, silently."""
        model, tensors, shards = self.fresh_model()
        shard = shards[0]
        mine = [t for t in tensors if t.shard == shard and len(t.data) >= 16]
        others = [t for t in tensors if t.shard != shard]
        cached, victim = mine[0], mine[-1]
        m = self.mount(model)
        got, err = self.read_errno(m.p(cached.path))
        self.assertEqual((got, err), (cached.data, None))
        with open(shard, "r+b") as f:
            for t in (cached, victim):
                f.seek(t.begin)
                f.write(bytes(b ^ 0xFF for b in t.data[:16]))
        self.assertEqual(os.path.getsize(shard), os.path.getsize(self.orig + "/"
                                                                   + os.path.basename(shard)))
        deadline = time.monotonic() + 5
        while self.read_errno(m.p(victim.path))[1] != errno.EIO:
            self.assertLess(time.monotonic(), deadline,
                            "an overwritten tensor still reads after 5 s (%s); stderr:\n%s"
                            % ("the mounted bytes" if self.read_errno(m.p(victim.path))[0]
                               == victim.data else "new bytes", m.stderr()))
            time.sleep(0.02)
        # the page cache of the shard's files was dropped: the tensor read
        # before the write fails too, like every other file over the shard
        self.check_eio(m, [p for t in mine for p in (t.path, t.path + ".npy")])
        self.check_eio(m, [".stfs/model.safetensors", dir_of(cached) + ".part.safetensors"])
        self.check_intact(m, others)
        self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
        self.unmount(m)
        lines = self.stderr_lines(m)
        self.assertEqual(len(lines), 1, "want exactly one stderr line, got:\n" + m.stderr())
        self.assertIn(os.path.basename(shard), lines[0])
        self.assertIn("written to while mounted", lines[0])


class ReplacedSourceTest(FaultCase):
    """A shard replaced by rename while mounted: the mount keeps its bytes."""

    @classmethod
    def prepare(cls):
        cls.orig = os.path.join(cls.tmp, "orig")
        run_gen("llama", cls.orig, "--shards", 3, "--layers", 4, "--hidden", 256)
        # same names and layout, other bytes
        cls.other = os.path.join(cls.tmp, "other")
        run_gen("llama", cls.other, "--shards", 3, "--layers", 4, "--hidden", 256, "--seed", 7)

    def test_replaced_by_rename(self):
        model = os.path.join(self.tmp, "model")
        shutil.copytree(self.orig, model)
        self.addCleanup(shutil.rmtree, model, ignore_errors=True)
        tensors, shards = read_model(model)
        # the copy of the original each read is compared with
        saved = {}
        for s in shards:
            with open(s, "rb") as f:
                saved[s] = f.read()
        m = self.mount(model)
        with open(m.p(".stfs", "header.json"), "rb") as f:
            header_before = f.read()

        # shards[0]: a valid model with other bytes; shards[1]: a short
        # garbage file; both written beside and renamed over the shard
        name0 = os.path.basename(shards[0])
        new0 = shards[0] + ".new"
        shutil.copyfile(os.path.join(self.other, name0), new0)
        with open(new0, "rb") as f:
            self.assertNotEqual(f.read(), saved[shards[0]], "the replacement differs")
        os.rename(new0, shards[0])
        new1 = shards[1] + ".new"
        with open(new1, "wb") as f:
            f.write(b"not a safetensors file\n")
        os.rename(new1, shards[1])
        time.sleep(WATCH_DELAY)

        bad = []
        for t in tensors:
            got, err = self.read_errno(m.p(t.path))
            if err is not None:
                bad.append("%s: %s" % (t.name, errname(err)))
            elif got != saved[t.shard][t.begin:t.end]:
                bad.append("%s: not the bytes it was mounted with" % t.name)
            else:
                st = os.stat(m.p(t.path))
                if st.st_size != t.end - t.begin:
                    bad.append("%s: st_size %d" % (t.name, st.st_size))
        self.assertEqual(bad, [])
        # views too, and mmaps
        raw, err = self.read_errno(m.p(".stfs", "model.safetensors"))
        self.assertIsNone(err, err and errname(err))
        hdr, start = parse_subset(raw)
        by_name = {t.name: t for t in tensors}
        for name, e in hdr.items():
            t = by_name[name]
            b, end = e["data_offsets"]
            self.assertBytes(raw[start + b:start + end], saved[t.shard][t.begin:t.end],
                             "model.safetensors: " + name)
        for t in tensors[::5]:
            with open(m.p(t.path), "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                try:
                    self.assertBytes(mm[:], saved[t.shard][t.begin:t.end], "mmap " + t.name)
                finally:
                    mm.close()
            raw, err = self.read_errno(m.p(t.path + ".npy"))
            self.assertIsNone(err)
            self.assertBytes(raw[len(raw) - (t.end - t.begin):], saved[t.shard][t.begin:t.end],
                             t.name + ".npy data")
        with open(m.p(".stfs", "header.json"), "rb") as f:
            self.assertEqual(f.read(), header_before, "header.json changed")
        self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
        self.unmount(m)
        self.assertEqual(m.stderr(), "", "a replaced source is not an error")


if __name__ == "__main__":
    sys.exit(faultlib.main())
