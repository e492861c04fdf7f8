#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Mount tests: real mounts of generated models, checked with plain system
calls and real clients (coreutils, numpy, mmap).

    python3 tests/mount/test_mount.py --stfs build/fs/stfs --gen tools/gen_model.py [unittest args]

(or STFS_EXE / STFS_GEN in the environment). Exits 77 (meson: SKIP) when
/dev/fuse or fusermount3 is missing. Every test mounts at its own temporary
mount point, starts the daemon in the foreground, and always unmounts.

The reference reader is the safetensors library (Rust parser):
safetensors.deserialize() gives every tensor's bytes independently of stfs.
The path rule of core/tree.h is implemented again here, on purpose without
looking at the C code.
"""

import argparse
import errno
import hashlib
import json
import mmap
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import stfstest  # noqa: E402
from stfstest import evict, fusermount, mapped_rss, mounted, resident_pages  # noqa: E402,F401


def run_gen(preset, outdir, *args):
    stfstest.run_gen(GEN, preset, outdir, *args)

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None
try:
    import safetensors
except ImportError:  # pragma: no cover
    safetensors = None

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))

STFS = os.environ.get("STFS_EXE", os.path.join(TOP, "build", "fs", "stfs"))
GEN = os.environ.get("STFS_GEN", os.path.join(TOP, "tools", "gen_model.py"))

MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0
XATTRS = ("user.safetensors.name", "user.safetensors.dtype", "user.safetensors.shape",
          "user.safetensors.shard", "user.safetensors.offset")


# ---------------------------------------------------------------- helpers


class Tensor:
    __slots__ = ("comp", "name", "dtype", "shape", "data", "shard", "offset")

    def __init__(self, comp, name, dtype, shape, data, shard, offset):
        self.comp = comp
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.data = data
        self.shard = shard      # path of the shard file
        self.offset = offset    # absolute offset of the data in the shard

    def __repr__(self):
        return "Tensor(%r/%r %s%s)" % (self.comp, self.name, self.dtype, self.shape)


def read_reference(shard, comp=""):
    """Every tensor of one .safetensors file, read by the safetensors library
    (data) and by a plain JSON parse of the header (offsets)."""
    with open(shard, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    meta = hdr.pop("__metadata__", None)
    out = []
    for name, info in safetensors.deserialize(raw):
        begin = hdr[name]["data_offsets"][0]
        out.append(Tensor(comp, name, info["dtype"], list(info["shape"]), bytes(info["data"]),
                          shard, 8 + n + begin))
    return out, meta


# ------------------------------------------------- the escaping rule (tree.h)

CUT = 223
MAXC = 238    # 255 less ".part.safetensors": view names fit in NAME_MAX


def esc_part(part):
    """Rules 1-3 for one part; bytes."""
    if part == "":
        return b"%"
    e = part.replace("%", "%25").replace("/", "%2F")
    if e.startswith("."):
        e = "%2E" + e[1:]
    return e.encode("utf-8")


def cut_prefix(b):
    """Rule 5: first 223 bytes, backed off to a character boundary and off a
    "%XX" token."""
    k = CUT
    while k > 0 and (b[k] & 0xC0) == 0x80:
        k -= 1
    if b[k - 1:k] == b"%":
        k -= 1
    elif b[k - 2:k - 1] == b"%":
        k -= 2
    return b[:k]


class _Node:
    __slots__ = ("children", "key")

    def __init__(self):
        self.children = {}  # raw part -> _Node
        self.key = None     # (comp, name) of the tensor ending here


def expected_tree(entries, flat=False):
    """entries: iterable of (comp, name). Returns (paths, dirs): paths maps
    (comp, name) to the relative path (str) of its file; dirs maps every
    directory's relative path ("" = root) to the set of its entries."""
    root = _Node()
    for comp, name in entries:
        node = root
        parts = (comp.split("/") if comp else []) + ([name] if flat else name.split("."))
        for p in parts:
            node = node.children.setdefault(p, _Node())
        assert node.key is None, "duplicate name %r" % name
        node.key = (comp, name)

    paths = {}
    dirs = {}

    def walk(node, rel):
        comps = {}
        longs = {}
        for raw in node.children:
            e = esc_part(raw)
            if len(e) > MAXC:
                longs.setdefault(cut_prefix(e), []).append(raw)
            else:
                comps[raw] = e
        for pre, raws in longs.items():
            for i, raw in enumerate(sorted(raws, key=lambda s: s.encode("utf-8"))):
                comps[raw] = pre + b"%~" + str(i).encode()
        listing = dirs.setdefault(rel, set())
        if node.key is not None and node.children:
            listing.add("%t")
            paths[node.key] = os.path.join(rel, "%t")
        for raw, child in node.children.items():
            c = comps[raw].decode("utf-8")
            assert len(comps[raw]) <= MAXC
            listing.add(c)
            crel = os.path.join(rel, c) if rel else c
            if child.children:
                walk(child, crel)
            else:
                paths[child.key] = crel

    walk(root, "")
    return paths, dirs


def natural_cmp(a, b):
    """Listing order of tree.h: digit runs compared as numbers, then bytes."""
    i = j = 0
    while i < len(a) and j < len(b):
        if 48 <= a[i] <= 57 and 48 <= b[j] <= 57:
            i2, j2 = i, j
            while i2 < len(a) and 48 <= a[i2] <= 57:
                i2 += 1
            while j2 < len(b) and 48 <= b[j2] <= 57:
                j2 += 1
            na, nb = int(a[i:i2]), int(b[j:j2])
            if na != nb:
                return -1 if na < nb else 1
            i, j = i2, j2
        else:
            if a[i] != b[j]:
                return -1 if a[i] < b[j] else 1
            i += 1
            j += 1
    if i < len(a):
        return 1
    if j < len(b):
        return -1
    return (a > b) - (a < b)


def natural_sorted(names):
    import functools
    return sorted(names, key=functools.cmp_to_key(
        lambda x, y: natural_cmp(os.fsencode(x), os.fsencode(y))))


def header_entries(doc):
    """.stfs/header.json -> {name: entry}; a list of objects with "name", or
    an object keyed by name, possibly under "tensors"."""
    if isinstance(doc, dict) and "tensors" in doc:
        doc = doc["tensors"]
    if isinstance(doc, list):
        return {e["name"]: e for e in doc}
    return {k: v for k, v in doc.items() if isinstance(v, dict) and "dtype" in v}


# ---------------------------------------------------------------- base class


Mount = stfstest.Mount


class MountCase(unittest.TestCase):
    PRESET = None       # gen_model.py preset, generated once per class
    GEN_ARGS = ()
    COMPANIONS = set()  # companion files the root lists beside the tensors
    maxDiff = 2000

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="stfs-test-%s-" % cls.__name__)
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.model = os.path.join(cls.tmp, "model")
        if cls.PRESET:
            run_gen(cls.PRESET, cls.model, *cls.GEN_ARGS)
        cls.prepare()

    @classmethod
    def prepare(cls):
        pass

    # -- mounting

    def start(self, source, *opts, mnt=None):
        """Start the daemon in the foreground; returns (Mount) without waiting.
        The mount is always cleaned up."""
        if mnt is None:
            mnt = tempfile.mkdtemp(prefix="stfs-mnt-")
            self.addCleanup(self._rmdir, mnt)
        fd, log = tempfile.mkstemp(prefix="stfs-log-")
        self.addCleanup(os.unlink, log)
        args = [STFS, "-f"]
        for o in opts:
            args += ["-o", o]
        args += [source, mnt]
        with os.fdopen(fd, "wb") as logf:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        m = Mount(mnt, proc, log)
        self.addCleanup(self._cleanup, m)
        return m

    def mount(self, source=None, *opts):
        m = self.start(source or self.model, *opts)
        self.wait_mounted(m)
        return m

    def wait_mounted(self, m):
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while True:
            rc = m.proc.poll()
            if rc is not None:
                self.fail("stfs exited with status %d before mounting %s; stderr:\n%s"
                          % (rc, m.path, m.stderr()))
            # mountinfo first: os.path.ismount stats the mount point, which
            # waits on the daemon.
            if mounted(m.path) and os.path.ismount(m.path):
                return
            if time.monotonic() > deadline:
                self.fail("%s not mounted after %.0fs; stderr:\n%s"
                          % (m.path, MOUNT_TIMEOUT, m.stderr()))
            time.sleep(0.02)

    def unmount(self, m):
        """Unmount with fusermount3 -u; the daemon must exit 0."""
        r = fusermount("-u", m.path)
        self.assertEqual(r.returncode, 0, "fusermount3 -u: %s" % r.stdout.decode())
        try:
            rc = m.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("stfs did not exit after fusermount3 -u")
        m.done = True
        self.assertEqual(rc, 0, "stfs exit status after unmount; stderr:\n" + m.stderr())
        self.assertFalse(mounted(m.path))

    @staticmethod
    def _cleanup(m):
        if m.done and not mounted(m.path):
            return
        if mounted(m.path):
            fusermount("-u", m.path)
        try:
            m.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait()
        if mounted(m.path):
            fusermount("-uz", m.path)
        m.done = True

    @staticmethod
    def _rmdir(path):
        try:
            os.rmdir(path)
        except OSError:
            pass

    # -- reference

    @classmethod
    def reference(cls, shards, comp=""):
        out = []
        meta = None
        for s in shards:
            t, meta = read_reference(s, comp)
            out += t
        return out, meta

    # -- checks

    def assertBytes(self, got, want, what):
        if got == want:
            return
        n = min(len(got), len(want))
        first = next((i for i in range(n) if got[i] != want[i]), n)
        self.fail("%s: %d bytes read, %d expected, first difference at byte %d "
                  "(got %r, want %r)" % (what, len(got), len(want), first,
                                          got[first:first + 8], want[first:first + 8]))

    def check_contents(self, m, tensors, flat=False):
        """Every tensor's bytes, size and name xattr through the mount, at the
        path of the escaping rule; every directory lists exactly the expected
        entries."""
        paths, dirs = expected_tree(((t.comp, t.name) for t in tensors), flat)
        bad = []
        for t in tensors:
            rel = paths[(t.comp, t.name)]
            p = m.p(rel)
            try:
                with open(p, "rb") as f:
                    got = f.read()
                name = os.getxattr(p, "user.safetensors.name")
                size = os.stat(p).st_size
            except OSError as e:
                bad.append("%r at %r: %s" % (t.name, rel, e))
                continue
            if got != t.data:
                bad.append("%r at %r: content differs (%d bytes read, %d expected)"
                           % (t.name, rel, len(got), len(t.data)))
            if size != len(t.data):
                bad.append("%r at %r: st_size %d, expected %d" % (t.name, rel, size, len(t.data)))
            if name != t.name.encode("utf-8"):
                bad.append("%r at %r: user.safetensors.name is %r" % (t.name, rel, name))
        for rel, want in sorted(dirs.items()):
            try:
                got = set(os.listdir(m.p(rel) if rel else m.path))
            except OSError as e:
                bad.append("listing %r: %s" % (rel, e))
                continue
            if rel == "":
                got.discard(".stfs")
                got -= self.COMPANIONS
            if got != want:
                bad.append("listing %r: missing %s, unexpected %s"
                           % (rel, sorted(want - got)[:5], sorted(got - want)[:5]))
        if bad:
            self.fail("%d problems of %d tensors:\n  %s" % (len(bad), len(tensors),
                                                            "\n  ".join(bad[:15])))

    def check_whole_model(self, m, tensors, meta):
        """.stfs/model.safetensors: the whole model as one valid file."""
        p = m.p(".stfs", "model.safetensors")
        if not os.path.exists(p):
            self.skipTest(".stfs/model.safetensors not provided by this build")
        with open(p, "rb") as f:
            raw = f.read()
        self.assertEqual(os.stat(p).st_size, len(raw), "st_size vs bytes read")
        got = {name: info for name, info in safetensors.deserialize(raw)}
        self.assertEqual(set(got), {t.name for t in tensors}, "tensor names")
        bad = [t.name for t in tensors
               if (got[t.name]["dtype"], list(got[t.name]["shape"]), bytes(got[t.name]["data"]))
               != (t.dtype, t.shape, t.data)]
        self.assertEqual(bad, [], "tensors that differ in .stfs/model.safetensors")
        n = int.from_bytes(raw[:8], "little")
        doc = json.loads(raw[8:8 + n])
        self.assertEqual(doc.get("__metadata__"), meta, "__metadata__")
        a = np.memmap(p, dtype=np.uint8, mode="r")
        self.assertBytes(a.tobytes(), raw, "memmap of .stfs/model.safetensors")
        del a

    def check_header_json(self, m, tensors):
        p = m.p(".stfs", "header.json")
        with open(p, "rb") as f:
            raw = f.read()
        self.assertEqual(os.stat(p).st_size, len(raw), "header.json st_size vs bytes read")
        doc = json.loads(raw)
        entries = header_entries(doc)
        self.assertEqual(set(entries), {t.name for t in tensors}, "names in header.json")
        paths, _ = expected_tree((t.comp, t.name) for t in tensors)
        bad = []
        for t in tensors:
            e = entries[t.name]
            got = (e.get("dtype"), e.get("shape"), e.get("shard"), e.get("offset"))
            want = (t.dtype, t.shape, os.path.basename(t.shard), t.offset)
            if got != want:
                bad.append("%r: (dtype, shape, shard, offset) = %r, expected %r"
                           % (t.name, got, want))
            # not in the contract, but where given it must be the file's path
            if "path" in e and e["path"] != paths[(t.comp, t.name)]:
                bad.append("%r: path %r, expected %r" % (t.name, e["path"],
                                                       paths[(t.comp, t.name)]))
        if bad:
            self.fail("header.json: %d wrong entries:\n  %s" % (len(bad), "\n  ".join(bad[:10])))


def sh(cmd):
    r = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------- tiny


class TinyTest(MountCase):
    """The built-in example: one file, F16/BF16/F32."""
    PRESET = "tiny"

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.model, "model.safetensors")
        cls.tensors, cls.meta = cls.reference([cls.src])
        cls.paths, cls.dirs = expected_tree((t.comp, t.name) for t in cls.tensors)
        cls.by_name = {t.name: t for t in cls.tensors}

    def path(self, m, name):
        return m.p(self.paths[("", name)])

    def test_contents_file_source(self):
        m = self.mount(self.src)
        self.check_contents(m, self.tensors)

    def test_contents_dir_source(self):
        m = self.mount(self.model)
        self.check_contents(m, self.tensors)

    def test_layout(self):
        m = self.mount(self.src)
        for rel in ("model/embed_tokens/weight", "model/layers/0/self_attn/q_proj/weight",
                    "model/layers/3/mlp/down_proj/weight", "model/norm/weight",
                    "lm_head/weight", ".stfs/header.json", ".stfs/metadata.json"):
            self.assertTrue(os.path.isfile(m.p(rel)), rel)
        self.assertIn(".stfs", os.listdir(m.path))
        self.assertTrue(os.path.isdir(m.p(".stfs")))
        self.assertEqual(os.listdir(m.p("model", "layers")), ["0", "1", "2", "3"])

    def test_stat(self):
        m = self.mount(self.src)
        mtime = os.stat(self.src).st_mtime_ns
        for t in self.tensors:
            st = os.stat(self.path(m, t.name))
            self.assertEqual(st.st_mode, 0o100444, t.name)
            self.assertEqual(st.st_size, len(t.data), t.name)
            self.assertEqual(st.st_mtime_ns, mtime, t.name)
        for rel in self.dirs:
            st = os.stat(m.p(rel) if rel else m.path)
            self.assertTrue(stat.S_ISDIR(st.st_mode), rel)
            self.assertEqual(st.st_mode & 0o222, 0, "directory %r is writable: %o"
                             % (rel, st.st_mode))
        self.assertTrue(stat.S_ISDIR(os.stat(m.p(".stfs")).st_mode))
        for f in ("header.json", "metadata.json"):
            st = os.stat(m.p(".stfs", f))
            self.assertTrue(stat.S_ISREG(st.st_mode), f)

    def test_inodes_stable(self):
        m = self.mount(self.src)
        rels = sorted(set(self.paths.values()) | set(self.dirs) | {".stfs"})
        first = {r: os.stat(m.p(r) if r else m.path).st_ino for r in rels}
        again = {r: os.lstat(m.p(r) if r else m.path).st_ino for r in rels}
        self.assertEqual(first, again)
        self.assertEqual(len(set(first.values())), len(first), "inode numbers not unique")
        self.assertEqual(first[""], 1, "root inode")
        self.unmount(m)
        m2 = self.mount(self.src)
        # other order of lookups in the second mount
        second = {r: os.stat(m2.p(r) if r else m2.path).st_ino for r in reversed(rels)}
        self.assertEqual(first, second, "inode numbers differ across a remount")

    def test_xattrs(self):
        m = self.mount(self.src)
        for t in self.tensors:
            p = self.path(m, t.name)
            self.assertEqual(sorted(os.listxattr(p)), sorted(XATTRS), t.name)
            self.assertEqual(os.getxattr(p, "user.safetensors.name"), t.name.encode())
            self.assertEqual(os.getxattr(p, "user.safetensors.dtype"), t.dtype.encode())
            self.assertEqual(json.loads(os.getxattr(p, "user.safetensors.shape")), t.shape)
            self.assertEqual(os.getxattr(p, "user.safetensors.shard"),
                             os.path.basename(t.shard).encode())
            off = int(os.getxattr(p, "user.safetensors.offset"))
            self.assertEqual(off, t.offset, t.name)
            with open(t.shard, "rb") as f:
                f.seek(off)
                self.assertBytes(f.read(len(t.data)), t.data, "shard bytes at offset xattr")
        p = self.path(m, "lm_head.weight")
        with self.assertRaises(OSError) as cm:
            os.getxattr(p, "user.nonexistent")
        self.assertEqual(cm.exception.errno, errno.ENODATA)

    def test_whole_model_file(self):
        m = self.mount(self.src)
        self.check_whole_model(m, self.tensors, self.meta)

    def test_header_json(self):
        m = self.mount(self.src)
        self.check_header_json(m, self.tensors)

    def test_metadata_json(self):
        m = self.mount(self.src)
        p = m.p(".stfs", "metadata.json")
        with open(p, "rb") as f:
            raw = f.read()
        self.assertEqual(os.stat(p).st_size, len(raw))
        doc = json.loads(raw)
        self.assertEqual(doc.get("__metadata__"), self.meta)

    def test_partial_reads(self):
        m = self.mount(self.src)
        t = max(self.tensors, key=lambda t: len(t.data))
        n = len(t.data)
        fd = os.open(self.path(m, t.name), os.O_RDONLY)
        try:
            for off, ln in ((0, 1), (1, 7), (4095, 2), (4096, 4096), (n - 3, 100), (n, 10),
                            (n + 4096, 10), (12345, 54321)):
                self.assertBytes(os.pread(fd, ln, off), t.data[off:off + ln],
                                 "pread(%d, %d)" % (ln, off))
        finally:
            os.close(fd)

    def test_mmap(self):
        m = self.mount(self.src)
        for name in ("lm_head.weight", "model.norm.weight", "model.layers.1.self_attn.k_proj.weight"):
            t = self.by_name[name]
            p = self.path(m, name)
            a = np.memmap(p, dtype=np.uint8, mode="r")
            self.assertBytes(a.tobytes(), t.data, "numpy.memmap " + name)
            del a
            npdt = {"F16": "<f2", "BF16": "<u2", "F32": "<f4"}[t.dtype]
            a = np.memmap(p, dtype=npdt, mode="r", shape=tuple(t.shape))
            self.assertBytes(a.tobytes(), np.frombuffer(t.data, npdt).reshape(t.shape).tobytes(),
                             "typed memmap " + name)
            del a
            with open(p, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
                mm2 = mmap.mmap(f.fileno(), len(t.data), flags=mmap.MAP_SHARED,
                                prot=mmap.PROT_READ)
                try:
                    self.assertBytes(mm[:], t.data, "mmap " + name)
                    self.assertBytes(mm2[:], t.data, "second mmap " + name)
                finally:
                    mm.close()
                    mm2.close()

    def test_read_only(self):
        self.check_read_only(self.mount(self.src))

    def test_read_only_with_o_rw(self):
        """mount(8) passes "-o rw" to its helper: still read-only."""
        self.check_read_only(self.mount(self.src, "rw"))

    def check_read_only(self, m):
        f = self.path(m, "lm_head.weight")
        f2 = self.path(m, "model.norm.weight")
        d = m.p("model")
        ops = [
            ("open O_WRONLY", lambda: os.open(f, os.O_WRONLY)),
            ("open O_RDWR", lambda: os.open(f, os.O_RDWR)),
            ("open O_WRONLY|O_APPEND", lambda: os.open(f, os.O_WRONLY | os.O_APPEND)),
            ("open O_RDONLY|O_TRUNC", lambda: os.open(f, os.O_RDONLY | os.O_TRUNC)),
            ("create", lambda: os.open(m.p("new"), os.O_CREAT | os.O_WRONLY, 0o644)),
            ("create in subdir", lambda: os.open(m.p("model", "new"), os.O_CREAT | os.O_RDWR, 0o644)),
            ("mkdir", lambda: os.mkdir(m.p("newdir"))),
            ("rmdir", lambda: os.rmdir(m.p("model", "norm"))),
            ("unlink", lambda: os.unlink(f)),
            ("rename", lambda: os.rename(f, m.p("renamed"))),
            ("rename over", lambda: os.rename(f, f2)),
            ("chmod", lambda: os.chmod(f, 0o644)),
            ("chmod dir", lambda: os.chmod(d, 0o755)),
            ("chown", lambda: os.chown(f, 0, 0)),
            ("utime", lambda: os.utime(f, (0, 0))),
            ("truncate", lambda: os.truncate(f, 0)),
            ("setxattr", lambda: os.setxattr(f, "user.x", b"1")),
            ("setxattr existing", lambda: os.setxattr(f, "user.safetensors.name", b"x")),
            ("removexattr", lambda: os.removexattr(f, "user.safetensors.name")),
            ("symlink", lambda: os.symlink("lm_head", m.p("link"))),
            ("link", lambda: os.link(f, m.p("hard"))),
            ("mknod fifo", lambda: os.mkfifo(m.p("fifo"))),
        ]
        bad = []
        for what, op in ops:
            try:
                r = op()
            except OSError as e:
                if e.errno != errno.EROFS:
                    bad.append("%s: %s, expected EROFS" % (what, errno.errorcode.get(e.errno, e.errno)))
            else:
                if isinstance(r, int):
                    os.close(r)
                bad.append("%s: succeeded, expected EROFS" % what)
        with open(f, "rb") as fh:
            self.assertBytes(fh.read(), self.by_name["lm_head.weight"].data, "after write attempts")
        self.assertEqual(os.stat(f).st_mode, 0o100444)
        if bad:
            self.fail("read-only violations:\n  " + "\n  ".join(bad))

    def test_errno(self):
        m = self.mount(self.src)
        cases = [
            ("stat missing", errno.ENOENT, lambda: os.stat(m.p("nope"))),
            ("stat missing in subdir", errno.ENOENT, lambda: os.stat(m.p("model", "layers", "99"))),
            ("open missing", errno.ENOENT, lambda: open(m.p("model", "nope"), "rb")),
            ("missing twice (negative cache)", errno.ENOENT, lambda: os.stat(m.p("nope"))),
            ("listdir missing", errno.ENOENT, lambda: os.listdir(m.p("nope", "x"))),
            ("path through a file", errno.ENOTDIR, lambda: os.stat(m.p("lm_head", "weight", "x"))),
            ("listdir of a file", errno.ENOTDIR, lambda: os.listdir(m.p("lm_head", "weight"))),
            ("missing .stfs file", errno.ENOENT, lambda: os.stat(m.p(".stfs", "nope"))),
        ]
        bad = []
        for what, want, op in cases:
            try:
                op()
            except OSError as e:
                if e.errno != want:
                    bad.append("%s: %s, expected %s" % (what, errno.errorcode.get(e.errno),
                                                        errno.errorcode[want]))
            else:
                bad.append("%s: succeeded, expected %s" % (what, errno.errorcode[want]))
        fd = os.open(m.p("model"), os.O_RDONLY)
        try:
            os.read(fd, 10)
        except OSError as e:
            if e.errno != errno.EISDIR:
                bad.append("read of a directory: %s, expected EISDIR" % errno.errorcode.get(e.errno))
        else:
            bad.append("read of a directory: succeeded, expected EISDIR")
        finally:
            os.close(fd)
        if bad:
            self.fail("\n  ".join(bad))

    def test_coreutils(self):
        m = self.mount(self.src)
        q = shlex.quote(m.path)
        n = len(self.tensors)
        nspecial = len(os.listdir(m.p(".stfs")))
        self.assertGreaterEqual(nspecial, 2)

        rc, out, err = sh("ls -lR %s" % q)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len([l for l in out.splitlines() if l.startswith("-r--r--r--")]), n,
                         "ls -lR: regular files listed")

        rc, out, err = sh("find %s -type f | wc -l" % q)
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(int(out), n + nspecial, "find -type f | wc -l")
        rc, out, err = sh("find %s -path %s/.stfs -prune -o -type f -print | wc -l" % (q, q))
        self.assertEqual(int(out), n, "find without .stfs")

        rc, out, err = sh("du -sb %s" % q)
        self.assertEqual(rc, 0, err)
        total = 0
        for root, dnames, fnames in os.walk(m.path):
            total += os.lstat(root).st_size
            total += sum(os.lstat(os.path.join(root, x)).st_size for x in fnames)
        self.assertEqual(int(out.split()[0]), total, "du -sb vs sum of st_size")
        self.assertGreaterEqual(total, sum(len(t.data) for t in self.tensors))

        for name in ("lm_head.weight", "model.norm.weight", "model.layers.2.mlp.up_proj.weight"):
            t = self.by_name[name]
            p = shlex.quote(self.path(m, name))
            rc, out, err = sh("cat %s | sha256sum" % p)
            self.assertEqual(out.split()[0], hashlib.sha256(t.data).hexdigest(), "sha256 " + name)
            rc, out, err = sh("cmp -n %d %s %s 0 %d" % (len(t.data), p, shlex.quote(t.shard), t.offset))
            self.assertEqual(rc, 0, "cmp with the shard: %s%s" % (out, err))
            ref = os.path.join(self.tmp, "ref.bin")
            with open(ref, "wb") as f:
                f.write(t.data)
            rc, out, err = sh("cmp %s %s" % (p, ref))
            self.assertEqual(rc, 0, "cmp: %s%s" % (out, err))
            rc, out, err = sh("dd if=%s bs=1000 skip=1 status=none | sha256sum" % p)
            self.assertEqual(out.split()[0], hashlib.sha256(t.data[1000:]).hexdigest(), "dd " + name)

    def test_statfs_getfattr_cp(self):
        m = self.mount(self.src)
        vfs = os.statvfs(m.path)
        self.assertTrue(vfs.f_bsize > 0)
        rc, out, err = sh("df %s" % shlex.quote(m.path))
        self.assertEqual(rc, 0, "df: " + err)
        p = self.path(m, "model.layers.0.mlp.gate_proj.weight")
        t = self.by_name["model.layers.0.mlp.gate_proj.weight"]
        if shutil.which("getfattr"):
            rc, out, err = sh("getfattr -d -m - --absolute-names %s" % shlex.quote(p))
            self.assertEqual(rc, 0, err)
            got = dict(re.findall(r'^(user\.safetensors\.\w+)="(.*)"$', out, re.M))
            self.assertEqual(got, {
                "user.safetensors.name": t.name, "user.safetensors.dtype": t.dtype,
                "user.safetensors.shape": json.dumps(t.shape, separators=(",", ":")),
                "user.safetensors.shard": "model.safetensors",
                "user.safetensors.offset": str(t.offset)}, out)
        dst = os.path.join(self.tmp, "copy")
        shutil.rmtree(dst, ignore_errors=True)
        rc, out, err = sh("cp -r %s %s" % (shlex.quote(m.path), shlex.quote(dst)))
        self.assertEqual(rc, 0, "cp -r: " + err)
        for tn in self.tensors:
            with open(os.path.join(dst, self.paths[("", tn.name)]), "rb") as f:
                self.assertBytes(f.read(), tn.data, "copied " + tn.name)

    def test_special_file_partial_reads(self):
        m = self.mount(self.src)
        for f in os.listdir(m.p(".stfs")):
            p = m.p(".stfs", f)
            if not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                whole = fh.read()
            fd = os.open(p, os.O_RDONLY)
            try:
                pieces = []
                off = 0
                while True:
                    b = os.pread(fd, 333, off)
                    if not b:
                        break
                    pieces.append(b)
                    off += len(b)
                self.assertBytes(b"".join(pieces), whole, "pread in 333-byte pieces of " + f)
                self.assertEqual(os.pread(fd, 10, len(whole) + 5), b"", f)
            finally:
                os.close(fd)

    def test_tar(self):
        m = self.mount(self.src)
        tarpath = os.path.join(self.tmp, "tree.tar")
        rc, out, err = sh("tar -C %s -cf %s ." % (shlex.quote(m.path), shlex.quote(tarpath)))
        self.assertEqual(rc, 0, "tar: " + err)
        with tarfile.open(tarpath) as tf:
            for t in self.tensors:
                member = tf.extractfile("./" + self.paths[("", t.name)])
                self.assertBytes(member.read(), t.data, "tar member " + t.name)

    def test_flat(self):
        m = self.mount(self.src, "flat")
        self.check_contents(m, self.tensors, flat=True)
        self.assertTrue(os.path.isfile(m.p("model.layers.0.self_attn.q_proj.weight")))
        self.assertTrue(os.path.isfile(m.p(".stfs", "header.json")))

    def test_concurrent_readers(self):
        m = self.mount(self.src)
        errors = []

        def worker(k):
            try:
                for t in self.tensors[k::4]:
                    with open(self.path(m, t.name), "rb") as f:
                        if f.read() != t.data:
                            errors.append(t.name)
            except OSError as e:
                errors.append(str(e))

        threads = [threading.Thread(target=worker, args=(k % 4,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])


# ---------------------------------------------------------------- llama


class LlamaShardedTest(MountCase):
    """A 3-shard Llama set with 12 layers (numeric listing order)."""
    PRESET = "llama"
    GEN_ARGS = ("--shards", 3, "--layers", 12)

    @classmethod
    def prepare(cls):
        cls.index = os.path.join(cls.model, "model.safetensors.index.json")
        with open(cls.index) as f:
            cls.index_doc = json.load(f)
        cls.shards = sorted(set(cls.index_doc["weight_map"].values()))
        assert len(cls.shards) == 3
        # distinct mtimes with nanoseconds, one per shard
        for k, s in enumerate(cls.shards):
            ns = 1600000000123456789 + k * 1000000007
            os.utime(os.path.join(cls.model, s), ns=(ns, ns))
        cls.tensors, cls.meta = cls.reference([os.path.join(cls.model, s) for s in cls.shards])
        cls.paths, cls.dirs = expected_tree((t.comp, t.name) for t in cls.tensors)

    def test_contents_index_source(self):
        m = self.mount(self.index)
        self.check_contents(m, self.tensors)

    def test_contents_dir_source(self):
        m = self.mount(self.model)
        self.check_contents(m, self.tensors)

    def test_tree(self):
        m = self.mount(self.index)
        for rel in ("model/embed_tokens/weight", "model/layers/0/self_attn/q_proj/weight",
                    "model/layers/11/mlp/gate_proj/weight", "lm_head/weight",
                    ".stfs/header.json", ".stfs/metadata.json"):
            self.assertTrue(os.path.isfile(m.p(rel)), rel)
        self.assertIn(".stfs", os.listdir(m.path))
        self.assertEqual(os.listdir(m.p("model", "layers")), [str(i) for i in range(12)])

    def test_listing_order(self):
        m = self.mount(self.index)
        bad = []
        for rel in sorted(self.dirs):
            got = [x for x in os.listdir(m.p(rel) if rel else m.path) if x != ".stfs"]
            if got != natural_sorted(got):
                bad.append("%r: %s" % (rel, got))
        self.assertEqual(bad, [], "directories not in name order (digit runs as numbers)")

    def test_stat_mtime_per_shard(self):
        m = self.mount(self.index)
        bad = []
        for t in self.tensors:
            st = os.stat(m.p(self.paths[("", t.name)]))
            want = (0o100444, len(t.data), os.stat(t.shard).st_mtime_ns)
            got = (st.st_mode, st.st_size, st.st_mtime_ns)
            if got != want:
                bad.append("%s: (mode, size, mtime_ns) = %r, expected %r" % (t.name, got, want))
        self.assertEqual(bad, [])

    def test_xattrs(self):
        m = self.mount(self.index)
        shard_bytes = {}
        for s in self.shards:
            with open(os.path.join(self.model, s), "rb") as f:
                shard_bytes[s] = f.read()
        bad = []
        for t in self.tensors:
            p = m.p(self.paths[("", t.name)])
            x = {k: os.getxattr(p, k) for k in XATTRS}
            shard = x["user.safetensors.shard"].decode()
            off = int(x["user.safetensors.offset"])
            if sorted(os.listxattr(p)) != sorted(XATTRS):
                bad.append("%s: listxattr %r" % (t.name, os.listxattr(p)))
            if shard != os.path.basename(t.shard):
                bad.append("%s: shard %r, expected %r" % (t.name, shard, t.shard))
            elif shard_bytes[shard][off:off + len(t.data)] != t.data:
                bad.append("%s: shard bytes at offset %d differ" % (t.name, off))
            if x["user.safetensors.name"] != t.name.encode():
                bad.append("%s: name %r" % (t.name, x["user.safetensors.name"]))
            if x["user.safetensors.dtype"] != t.dtype.encode():
                bad.append("%s: dtype %r" % (t.name, x["user.safetensors.dtype"]))
            if json.loads(x["user.safetensors.shape"]) != t.shape:
                bad.append("%s: shape %r" % (t.name, x["user.safetensors.shape"]))
        self.assertEqual(bad, [])

    def test_whole_model_file(self):
        m = self.mount(self.index)
        self.check_whole_model(m, self.tensors, self.meta)

    def test_header_json(self):
        m = self.mount(self.index)
        self.check_header_json(m, self.tensors)

    def test_metadata_json(self):
        m = self.mount(self.index)
        with open(m.p(".stfs", "metadata.json"), "rb") as f:
            doc = json.load(f)
        self.assertEqual(doc.get("__metadata__"), self.meta)
        self.assertEqual(doc.get("index_metadata"), self.index_doc["metadata"])

    def test_inodes_across_remount(self):
        m = self.mount(self.index)
        rels = sorted(set(self.paths.values()) | set(self.dirs))
        first = {r: os.stat(m.p(r) if r else m.path).st_ino for r in rels}
        self.assertEqual(len(set(first.values())), len(first), "inode numbers not unique")
        self.unmount(m)
        m2 = self.mount(self.model)     # same model through its directory
        second = {r: os.stat(m2.p(r) if r else m2.path).st_ino for r in reversed(rels)}
        self.assertEqual(first, second)

    def test_find_count(self):
        m = self.mount(self.index)
        q = shlex.quote(m.path)
        rc, out, err = sh("find %s -path %s/.stfs -prune -o -type f -print | wc -l" % (q, q))
        self.assertEqual(int(out), len(self.tensors))
        rc, out, err = sh("find %s -type f | wc -l" % q)
        self.assertEqual(int(out), len(self.tensors) + len(os.listdir(m.p(".stfs"))))

    def test_mmap_numpy(self):
        m = self.mount(self.index)
        for t in self.tensors[::7]:
            a = np.memmap(m.p(self.paths[("", t.name)]), dtype=np.uint8, mode="r")
            self.assertBytes(a.tobytes(), t.data, "memmap " + t.name)
            del a


# ---------------------------------------------------------------- others


class MoeTest(MountCase):
    """Thousands of tensors over 4 shards."""
    PRESET = "moe"

    @classmethod
    def prepare(cls):
        cls.index = os.path.join(cls.model, "model.safetensors.index.json")
        with open(cls.index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        cls.tensors, cls.meta = cls.reference([os.path.join(cls.model, s) for s in shards])
        cls.paths, cls.dirs = expected_tree((t.comp, t.name) for t in cls.tensors)

    def test_contents(self):
        m = self.mount(self.model)
        self.check_contents(m, self.tensors)

    def test_find_count_and_order(self):
        m = self.mount(self.model)
        q = shlex.quote(m.path)
        rc, out, err = sh("find %s -path %s/.stfs -prune -o -type f -print | wc -l" % (q, q))
        self.assertEqual(int(out), len(self.tensors))
        experts = os.listdir(m.p("model", "layers", "0", "mlp", "experts"))
        self.assertEqual(experts, [str(i) for i in range(256)])

    def test_header_json(self):
        m = self.mount(self.model)
        self.check_header_json(m, self.tensors)

    def test_parallel_readers(self):
        m = self.mount(self.model)
        errors = []

        def worker(k):
            try:
                for t in self.tensors[k::8]:
                    with open(m.p(self.paths[("", t.name)]), "rb") as f:
                        if f.read() != t.data:
                            errors.append(t.name)
            except OSError as e:
                errors.append(str(e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])


class LargeTest(MountCase):
    """Tensors of several MiB: reads across request and page boundaries."""
    PRESET = "tiny"
    GEN_ARGS = ("--hidden", 1024, "--layers", 1)

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.model, "model.safetensors")
        cls.tensors, cls.meta = cls.reference([cls.src])
        cls.paths, cls.dirs = expected_tree((t.comp, t.name) for t in cls.tensors)
        cls.big = max(cls.tensors, key=lambda t: len(t.data))
        assert len(cls.big.data) >= 4 << 20

    def test_contents(self):
        m = self.mount(self.src)
        self.check_contents(m, self.tensors)

    def test_read_sizes_and_offsets(self):
        m = self.mount(self.src)
        t = self.big
        n = len(t.data)
        p = m.p(self.paths[("", t.name)])
        fd = os.open(p, os.O_RDONLY)
        try:
            self.assertBytes(os.pread(fd, n + 100, 0), t.data, "one read of all")
            for bs in (1 << 20, (1 << 20) + 1, 128 << 10, 4097):
                off = 0
                parts = []
                while off < n:
                    parts.append(os.pread(fd, bs, off))
                    off += len(parts[-1])
                    if not parts[-1]:
                        break
                self.assertBytes(b"".join(parts), t.data, "reads of %d bytes" % bs)
            rng = np.random.default_rng(1)
            for _ in range(200):
                off = int(rng.integers(0, n))
                ln = int(rng.integers(1, 3 << 20))
                self.assertBytes(os.pread(fd, ln, off), t.data[off:off + ln],
                                 "pread(%d, %d)" % (ln, off))
        finally:
            os.close(fd)
        rc, out, err = sh("dd if=%s bs=1M status=none | sha256sum" % shlex.quote(p))
        self.assertEqual(out.split()[0], hashlib.sha256(t.data).hexdigest(), "dd bs=1M")

    def test_mmap_random_access(self):
        m = self.mount(self.src)
        t = self.big
        with open(m.p(self.paths[("", t.name)]), "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            try:
                rng = np.random.default_rng(2)
                for _ in range(300):
                    off = int(rng.integers(0, len(t.data)))
                    self.assertEqual(mm[off:off + 64], t.data[off:off + 64], off)
                self.assertBytes(mm[:], t.data, "whole mmap")
            finally:
                mm.close()

    def test_parallel_mmap_and_read(self):
        m = self.mount(self.src)
        errors = []

        def worker(k):
            try:
                for t in self.tensors:
                    p = m.p(self.paths[("", t.name)])
                    if k % 2:
                        with open(p, "rb") as f:
                            got = f.read()
                    elif t.data:
                        a = np.memmap(p, dtype=np.uint8, mode="r")
                        got = a.tobytes()
                        del a
                    else:
                        got = b""
                    if got != t.data:
                        errors.append("%d: %s" % (k, t.name))
            except OSError as e:
                errors.append(str(e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])


class CacheModeTest(MountCase):
    """-o cache=single (default) and double: the bytes stay right whatever
    page cache was dropped; single lets go of the source's copy of what the
    mount has cached, double keeps it."""
    PRESET = "llama"
    GEN_ARGS = ("--shards", 2, "--layers", 2, "--hidden", 512)

    @classmethod
    def prepare(cls):
        cls.shards = sorted(os.path.join(cls.model, f) for f in os.listdir(cls.model)
                            if f.endswith(".safetensors"))
        cls.tensors, cls.meta = cls.reference(cls.shards)
        cls.paths, cls.dirs = expected_tree((t.comp, t.name) for t in cls.tensors)

    def path(self, m, t):
        return m.p(self.paths[(t.comp, t.name)])

    def read_all(self, m, how="read"):
        bad = []
        for t in self.tensors:
            p = self.path(m, t)
            if how == "mmap" and t.data:
                with open(p, "rb") as f:
                    mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
                    got = mm[:]
                    mm.close()
            else:
                with open(p, "rb") as f:
                    got = f.read()
            if got != t.data:
                bad.append(t.name)
        self.assertEqual(bad, [], "tensors read (%s) unlike the source" % how)

    def big(self):
        return [t for t in self.tensors if len(t.data) >= 64 << 10]

    def check_modes(self, body):
        for mode in ("single", "double"):
            with self.subTest(cache=mode):
                m = self.mount(self.model, "cache=" + mode)
                body(m, mode)
                self.unmount(m)

    def test_bytes_after_mount_pages_evicted(self):
        def body(m, mode):
            self.read_all(m)
            for t in self.big():
                evict(self.path(m, t))
                res, pages = resident_pages(self.path(m, t))
                self.assertLess(res, pages, "%s: the mount's pages were not evicted" % t.name)
            self.read_all(m)
            for t in self.tensors:
                evict(self.path(m, t))
            self.read_all(m, "mmap")
        self.check_modes(body)

    def test_bytes_after_source_pages_dropped(self):
        def body(m, mode):
            self.read_all(m, "mmap")
            for s in self.shards:
                evict(s)
            for t in self.tensors:
                evict(self.path(m, t))
            self.read_all(m)
        self.check_modes(body)

    def test_single_lets_go_of_the_source(self):
        """Reading every tensor: in single mode the daemon's mapping of the
        shards and their page cache fall to a block each (the 2 MiB holding
        the header: a large folio of a local shard; pages shared with bytes no
        tensor file holds); in double mode they
        hold every byte read. A host prefetch lets go the same way."""
        data = sum(len(t.data) for t in self.tensors)
        for mode in ("single", "double"):
            with self.subTest(cache=mode):
                for s in self.shards:
                    evict(s)
                m = self.mount(self.model, "cache=" + mode)
                self.read_all(m)
                rss = sum(mapped_rss(m.proc.pid, s) for s in self.shards)
                cached = sum(resident_pages(s)[0] for s in self.shards) * mmap.PAGESIZE
                if mode == "single":
                    # each shard's first 2 MiB block stays (a large folio
                    # that holds the header, which no tensor file serves)
                    kept = data // 10 + len(self.shards) * (2 << 20)
                    self.assertLess(rss, kept, "daemon's mapped source bytes")
                    self.assertLess(cached, kept, "source page cache")
                else:
                    self.assertGreater(rss, data * 9 // 10, "daemon's mapped source bytes")
                    self.assertGreater(cached, data * 9 // 10, "source page cache")
                self.unmount(m)

    def test_bad_mode(self):
        m = self.start(self.model, "cache=triple")
        self.assertEqual(m.proc.wait(timeout=EXIT_TIMEOUT), 1)
        self.assertIn("cache=triple", m.stderr())
        self.assertFalse(mounted(m.path))


class DtypesTest(MountCase):
    """All 22 dtypes, a scalar, zero-size tensors."""
    PRESET = "dtypes"

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.model, "model.safetensors")
        cls.tensors, cls.meta = cls.reference([cls.src])
        cls.paths, cls.dirs = expected_tree((t.comp, t.name) for t in cls.tensors)

    def test_all_dtypes_present(self):
        self.assertEqual(len({t.dtype for t in self.tensors}), 22)

    def test_contents(self):
        m = self.mount(self.src)
        self.check_contents(m, self.tensors)

    def test_xattrs_and_sizes(self):
        m = self.mount(self.src)
        for t in self.tensors:
            p = m.p(self.paths[("", t.name)])
            self.assertEqual(os.getxattr(p, "user.safetensors.dtype"), t.dtype.encode(), t.name)
            self.assertEqual(json.loads(os.getxattr(p, "user.safetensors.shape")), t.shape, t.name)
            self.assertEqual(int(os.getxattr(p, "user.safetensors.offset")), t.offset, t.name)
            st = os.stat(p)
            self.assertEqual((st.st_mode, st.st_size), (0o100444, len(t.data)), t.name)

    def test_zero_size_and_scalar(self):
        m = self.mount(self.src)
        for name, shape, size in (("empty.f32", [0], 0), ("empty.bf16_3x0", [3, 0], 0),
                                  ("scalar.f32", [], 4), ("scalar.bf16", [], 2)):
            p = m.p(self.paths[("", name)])
            self.assertEqual(os.stat(p).st_size, size, name)
            self.assertEqual(json.loads(os.getxattr(p, "user.safetensors.shape")), shape)
            with open(p, "rb") as f:
                self.assertEqual(len(f.read()), size, name)
        rc, out, err = sh("cat %s | sha256sum" % shlex.quote(m.p("empty", "f32")))
        self.assertEqual(out.split()[0], hashlib.sha256(b"").hexdigest())

    def test_whole_model_file(self):
        m = self.mount(self.src)
        self.check_whole_model(m, self.tensors, self.meta)

    def test_header_json(self):
        m = self.mount(self.src)
        self.check_header_json(m, self.tensors)

    def test_flat(self):
        m = self.mount(self.src, "flat")
        self.check_contents(m, self.tensors, flat=True)


class OddTest(MountCase):
    """Awkward names: the escaping rule of core/tree.h."""
    PRESET = "odd"

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.model, "model.safetensors")
        cls.tensors, cls.meta = cls.reference([cls.src])
        cls.paths, cls.dirs = expected_tree((t.comp, t.name) for t in cls.tensors)

    def test_rule_table(self):
        """The independent implementation of the rule, against hand-written
        expectations (no mount)."""
        p = self.paths
        want = {
            "a..b": "a/%/b", ".lead": "%/lead", "trail.": "trail/%", ".stfs.x": "%/stfs/x",
            "x.stfs": "x/stfs", "a.b": "a/b/%t", "a.b.c": "a/b/c", "p/q.r": "p%2Fq/r",
            "100%.s": "100%25/s", "": "%/%t", ".": "%/%/%t", "..": "%/%/%",
            "layers.2": "layers/2", "layers.10": "layers/10",
            "long." + "x" * 300: "long/" + "x" * 223 + "%~0",
            "long." + "s" * 250 + "a" * 50: "long/" + "s" * 223 + "%~0",
            "long." + "s" * 250 + "b" * 50: "long/" + "s" * 223 + "%~1",
            "cut.u" + "\u6a21" * 100: "cut/u" + "\u6a21" * 74 + "%~0",
            "cut." + "z" * 238 + "%" * 30: "cut/" + "z" * 223 + "%~0",
            "tok.%t": "tok/%25t", "tok.%~0": "tok/%25~0", "tok.%2E": "tok/%252E",
            "tok.%": "tok/%25",
            "edge." + "e" * 238: "edge/" + "e" * 238,
            "edge." + "f" * 239: "edge/" + "f" * 223 + "%~0",
            "edge." + "g" * 236 + "%": "edge/" + "g" * 223 + "%~0",
            "lp." + "L" * 300: "lp/" + "L" * 223 + "%~0/%t",
            "lp." + "L" * 300 + ".c": "lp/" + "L" * 223 + "%~0/c",
            "\u6a21\u578b.\u5c42.0": "\u6a21\u578b/\u5c42/0",
        }
        for i in range(12):
            want["many." + "m" * 260 + "%02d" % i] = "many/" + "m" * 223 + "%%~%d" % i
        for name, path in want.items():
            self.assertEqual(p[("", name)], path, name)
        flat, _ = expected_tree((("", t.name) for t in self.tensors), flat=True)
        fwant = {".lead": "%2Elead", ".stfs.x": "%2Estfs.x", "p/q.r": "p%2Fq.r",
                 "100%.s": "100%25.s", "": "%", ".": "%2E", "..": "%2E.", "a..b": "a..b",
                 "trail.": "trail."}
        for name, path in fwant.items():
            self.assertEqual(flat[("", name)], path, name)

    def test_contents(self):
        m = self.mount(self.src)
        self.check_contents(m, self.tensors)

    def test_root_and_order(self):
        m = self.mount(self.src)
        root = os.listdir(m.path)
        self.assertEqual(root.count(".stfs"), 1, root)
        self.assertTrue(os.path.isfile(m.p(".stfs", "header.json")))
        self.assertEqual(os.listdir(m.p("layers")), ["1", "2", "10"])
        self.assertEqual(os.listdir(m.p("many")), ["m" * 223 + "%%~%d" % i for i in range(12)],
                         "digit runs of %~N compared as numbers")
        self.assertTrue(os.path.isfile(m.p("%", "stfs", "x")))
        self.assertTrue(os.path.isdir(m.p("%", "%")))

    def test_xattrs(self):
        m = self.mount(self.src)
        for t in self.tensors:
            p = m.p(self.paths[("", t.name)])
            self.assertEqual(os.getxattr(p, "user.safetensors.name"), t.name.encode(), t.name)
            self.assertEqual(int(os.getxattr(p, "user.safetensors.offset")), t.offset, t.name)

    def test_whole_model_file(self):
        m = self.mount(self.src)
        self.check_whole_model(m, self.tensors, self.meta)

    def test_header_json(self):
        m = self.mount(self.src)
        self.check_header_json(m, self.tensors)

    def test_flat(self):
        m = self.mount(self.src, "flat")
        self.check_contents(m, self.tensors, flat=True)
        self.assertEqual(os.listdir(m.path).count(".stfs"), 1)


class DiffusersTest(MountCase):
    """A multi-component folder: unet/, vae/, text_encoder/."""
    PRESET = "diffusers"
    COMPANIONS = {"model_index.json"}  # passed through (issue 14)
    COMPS = {"unet": "unet/diffusion_pytorch_model.safetensors",
             "vae": "vae/diffusion_pytorch_model.safetensors",
             "text_encoder": "text_encoder/model.safetensors"}

    @classmethod
    def prepare(cls):
        cls.tensors = []
        for comp, rel in cls.COMPS.items():
            t, _ = cls.reference([os.path.join(cls.model, rel)], comp)
            cls.tensors += t

    def test_contents(self):
        m = self.mount(self.model)
        self.check_contents(m, self.tensors)
        self.assertEqual(set(os.listdir(m.path)) - {".stfs"}, set(self.COMPS) | self.COMPANIONS)

    def test_layout_and_xattrs(self):
        m = self.mount(self.model)
        for rel in ("unet/conv_in/weight", "unet/down_blocks/1/resnets/0/conv2/weight",
                    "vae/decoder/conv_out/weight",
                    "text_encoder/text_model/encoder/layers/1/mlp/fc1/weight"):
            self.assertTrue(os.path.isfile(m.p(rel)), rel)
        p = m.p("vae", "decoder", "conv_out", "weight")
        self.assertEqual(os.getxattr(p, "user.safetensors.name"), b"decoder.conv_out.weight")
        self.assertEqual(os.getxattr(p, "user.safetensors.shard"),
                         b"vae/diffusion_pytorch_model.safetensors")
        t = next(t for t in self.tensors if t.comp == "vae" and t.name == "decoder.conv_out.weight")
        self.assertEqual(int(os.getxattr(p, "user.safetensors.offset")), t.offset)
        self.assertTrue(os.path.isfile(m.p(".stfs", "header.json")))
        with open(m.p(".stfs", "header.json"), "rb") as f:
            json.load(f)


class MultiSetTest(MountCase):
    """A directory of several sets (core/model.h): each is mounted under its
    own name; a sub-directory with one set under the sub-directory's name,
    with several under "SUBDIR/FILE"."""

    LAYOUT = {  # component -> (preset, args, where the files go, file to keep)
        "first": ("tiny", ("--seed", 1), "", "first.safetensors"),
        "second": ("dtypes", (), "", "second.safetensors"),
        "sub/x": ("odd", (), "sub", "x.safetensors"),
        "sub/y": ("tiny", ("--seed", 2, "--layers", 1), "sub", "y.safetensors"),
        "sharded": ("llama", ("--shards", 2, "--layers", 2), "sharded", None),
        "pct%dir": ("tiny", ("--seed", 3, "--layers", 1), "pct%dir", None),
    }

    @classmethod
    def prepare(cls):
        os.makedirs(cls.model)
        cls.tensors = []
        for comp, (preset, args, where, fname) in cls.LAYOUT.items():
            out = os.path.join(cls.tmp, "gen-" + comp.replace("/", "-"))
            run_gen(preset, out, *args)
            dst = os.path.join(cls.model, where)
            os.makedirs(dst, exist_ok=True)
            if fname:
                shutil.move(os.path.join(out, "model.safetensors"), os.path.join(dst, fname))
                shards = [os.path.join(dst, fname)]
            else:
                shards = []
                for f in sorted(os.listdir(out)):
                    shutil.move(os.path.join(out, f), os.path.join(dst, f))
                    if f.endswith(".safetensors"):
                        shards.append(os.path.join(dst, f))
            t, _ = cls.reference(shards, comp)
            cls.tensors += t

    def test_contents(self):
        m = self.mount(self.model)
        self.check_contents(m, self.tensors)
        self.assertEqual(set(os.listdir(m.path)),
                         {"first", "second", "sub", "sharded", "pct%25dir", ".stfs"})
        self.assertEqual(set(os.listdir(m.p("sub"))), {"x", "y"})

    def test_xattrs(self):
        m = self.mount(self.model)
        paths, _ = expected_tree((t.comp, t.name) for t in self.tensors)
        bad = []
        for t in self.tensors:
            p = m.p(paths[(t.comp, t.name)])
            got = (os.getxattr(p, "user.safetensors.name").decode(),
                   os.getxattr(p, "user.safetensors.shard").decode(),
                   int(os.getxattr(p, "user.safetensors.offset")),
                   os.stat(p).st_mtime_ns)
            # the shard relative to SOURCE (issue 14: two components may
            # both have diffusion_pytorch_model.safetensors)
            want = (t.name, os.path.relpath(t.shard, self.model), t.offset,
                    os.stat(t.shard).st_mtime_ns)
            if got != want:
                bad.append("%s/%s: %r, expected %r" % (t.comp, t.name, got, want))
        self.assertEqual(bad, [])


class BigTest(MountCase):
    """100,000 tensors over 160 shards."""
    PRESET = "big"

    @classmethod
    def prepare(cls):
        with open(os.path.join(cls.model, "model.safetensors.index.json")) as f:
            cls.weight_map = json.load(f)["weight_map"]
        shards = sorted(set(cls.weight_map.values()))
        cls.tensors, _ = cls.reference([os.path.join(cls.model, s) for s in shards])
        cls.paths, cls.dirs = expected_tree((t.comp, t.name) for t in cls.tensors)

    def test_count_and_sample(self):
        m = self.mount(self.model)
        self.assertEqual(len(self.tensors), 100000)
        n = 0
        for root, dnames, fnames in os.walk(m.path):
            if root == m.path:
                dnames.remove(".stfs")
            n += len(fnames)
        self.assertEqual(n, len(self.tensors), "files in the tree")
        sample = self.tensors[::97]
        self.check_contents_sample(m, sample)
        with open(m.p(".stfs", "header.json"), "rb") as f:
            self.assertEqual(len(header_entries(json.load(f))), 100000)

    def test_flat_listing(self):
        """100,000 entries in one directory: readdir continues correctly."""
        m = self.mount(self.model, "flat")
        paths, dirs = expected_tree((("", t.name) for t in self.tensors), flat=True)
        got = os.listdir(m.path)
        self.assertEqual(len(got), len(set(got)), "duplicate entries in the listing")
        got = set(got)
        got.discard(".stfs")
        self.assertEqual(len(got), len(dirs[""]))
        self.assertEqual(got, dirs[""])
        self.check_contents_sample(m, self.tensors[::997], paths)

    def check_contents_sample(self, m, sample, paths=None):
        paths = paths or self.paths
        bad = []
        for t in sample:
            p = m.p(paths[("", t.name)])
            with open(p, "rb") as f:
                if f.read() != t.data:
                    bad.append(t.name)
            if os.getxattr(p, "user.safetensors.shard").decode() != self.weight_map[t.name]:
                bad.append(t.name + " (shard xattr)")
        self.assertEqual(bad, [])


# ---------------------------------------------------------------- refusals


def st_file(path, header, data=b"", raw_header=None, hlen=None):
    """Write a safetensors file; header: dict (or raw_header bytes)."""
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    h += b" " * (-len(h) % 8) if raw_header is None else b""
    with open(path, "wb") as f:
        f.write((len(h) if hlen is None else hlen).to_bytes(8, "little"))
        f.write(h)
        f.write(data)


def ok_header(names, dtype="F32", shape=(2,)):
    hdr = {"__metadata__": {"format": "pt"}}
    off = 0
    size = 4 * shape[0]
    for n in names:
        hdr[n] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    return hdr, bytes(range(off))


class BadFileTest(MountCase):
    """A bad file is refused: non-zero exit, one stderr line naming the
    file, nothing mounted."""

    @classmethod
    def prepare(cls):
        d = cls.bad = os.path.join(cls.tmp, "bad")
        os.makedirs(d)
        run_gen("tiny", os.path.join(cls.tmp, "tiny"))
        with open(os.path.join(cls.tmp, "tiny", "model.safetensors"), "rb") as f:
            good = f.read()
        cls.cases = {}

        def case(key, src, *names):
            cls.cases[key] = (src, names)

        p = os.path.join(d, "truncated.safetensors")
        with open(p, "wb") as f:
            f.write(good[:len(good) - 100])
        case("truncated", p, "truncated.safetensors")

        p = os.path.join(d, "truncated-header.safetensors")
        with open(p, "wb") as f:
            f.write(good[:40])
        case("truncated_header", p, "truncated-header.safetensors")

        p = os.path.join(d, "huge-header.safetensors")
        st_file(p, None, raw_header=b"{}      ", hlen=1 << 40)
        case("header_length_huge", p, "huge-header.safetensors")

        p = os.path.join(d, "header-past-end.safetensors")
        st_file(p, None, raw_header=b"{}      ", hlen=4096)
        case("header_length_past_end", p, "header-past-end.safetensors")

        p = os.path.join(d, "bad-json.safetensors")
        st_file(p, None, raw_header=b'{"a": {"dtype": "F32",, }       ')
        case("bad_json", p, "bad-json.safetensors")

        p = os.path.join(d, "overlap.safetensors")
        st_file(p, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12))
        case("offsets_overlapping", p, "overlap.safetensors")

        p = os.path.join(d, "hole.safetensors")
        st_file(p, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, bytes(20))
        case("offsets_hole", p, "hole.safetensors")

        p = os.path.join(d, "size-mismatch.safetensors")
        st_file(p, {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8))
        case("size_mismatch", p, "size-mismatch.safetensors")

        p = os.path.join(d, "bad-dtype.safetensors")
        st_file(p, {"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16))
        case("unknown_dtype", p, "bad-dtype.safetensors")

        p = os.path.join(d, "f4-odd.safetensors")
        st_file(p, {"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, bytes(1))
        case("sub_byte_bits", p, "f4-odd.safetensors")

        p = os.path.join(d, "dup-key.safetensors")
        st_file(p, None, raw_header=(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                     b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'),
                data=b"\x01")
        case("duplicate_key", p, "dup-key.safetensors")

        p = os.path.join(d, "nul-pad.safetensors")
        h = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
        st_file(p, None, raw_header=h + b"\0" * (-len(h) % 8 or 8), data=b"\x01")
        case("nul_padding", p, "nul-pad.safetensors")

        p = os.path.join(d, "meta-not-string.safetensors")
        st_file(p, {"__metadata__": {"n": 1},
                    "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\x01")
        case("metadata_not_string", p, "meta-not-string.safetensors")

        p = os.path.join(d, "not-object.safetensors")
        st_file(p, None, raw_header=b"[]      ")
        case("header_not_object", p, "not-object.safetensors")

        # index naming a missing shard
        sd = os.path.join(d, "missing-shard")
        os.makedirs(sd)
        hdr, data = ok_header(["a", "b"])
        st_file(os.path.join(sd, "model-00001-of-00002.safetensors"), hdr, data)
        with open(os.path.join(sd, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 24},
                       "weight_map": {"a": "model-00001-of-00002.safetensors",
                                      "b": "model-00001-of-00002.safetensors",
                                      "c": "model-00002-of-00002.safetensors"}}, f)
        case("index_missing_shard", os.path.join(sd, "model.safetensors.index.json"),
             "model.safetensors.index.json", "model-00002-of-00002.safetensors")

        # index escaping its directory; the target exists and is valid
        td = os.path.join(d, "traversal", "sub")
        os.makedirs(td)
        hdr, data = ok_header(["a"])
        st_file(os.path.join(d, "traversal", "x.safetensors"), hdr, data)
        with open(os.path.join(td, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 8}, "weight_map": {"a": "../x.safetensors"}}, f)
        case("index_path_traversal", os.path.join(td, "model.safetensors.index.json"),
             "model.safetensors.index.json", "../x.safetensors")

        ad = os.path.join(d, "absolute")
        os.makedirs(ad)
        with open(os.path.join(ad, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {
                "a": os.path.join(d, "traversal", "x.safetensors")}}, f)
        case("index_absolute_path", os.path.join(ad, "model.safetensors.index.json"),
             "model.safetensors.index.json", "x.safetensors")

        # index listing a tensor its shard lacks / a shard tensor not listed
        ud = os.path.join(d, "unlisted")
        os.makedirs(ud)
        hdr, data = ok_header(["a", "b"])
        st_file(os.path.join(ud, "model-00001-of-00001.safetensors"), hdr, data)
        with open(os.path.join(ud, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {"a": "model-00001-of-00001.safetensors"}}, f)
        case("index_unlisted_tensor", os.path.join(ud, "model.safetensors.index.json"),
             "model.safetensors.index.json", "model-00001-of-00001.safetensors")

        xd = os.path.join(d, "extra")
        os.makedirs(xd)
        hdr, data = ok_header(["a"])
        st_file(os.path.join(xd, "model-00001-of-00001.safetensors"), hdr, data)
        with open(os.path.join(xd, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {
                "a": "model-00001-of-00001.safetensors",
                "zz": "model-00001-of-00001.safetensors"}}, f)
        case("index_tensor_not_in_shard", os.path.join(xd, "model.safetensors.index.json"),
             "model.safetensors.index.json", "model-00001-of-00001.safetensors")

        # the same tensor in two shards, the index naming one of them
        dd = os.path.join(d, "dup-across-shards")
        os.makedirs(dd)
        hdr, data = ok_header(["a"])
        st_file(os.path.join(dd, "s1.safetensors"), hdr, data)
        hdr, data = ok_header(["a", "b"])
        st_file(os.path.join(dd, "s2.safetensors"), hdr, data)
        with open(os.path.join(dd, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {"a": "s1.safetensors",
                                                      "b": "s2.safetensors"}}, f)
        case("index_duplicate_across_shards", os.path.join(dd, "model.safetensors.index.json"),
             "model.safetensors.index.json", "s2.safetensors")

        vd = os.path.join(d, "value-not-string")
        os.makedirs(vd)
        hdr, data = ok_header(["a"])
        st_file(os.path.join(vd, "s1.safetensors"), hdr, data)
        with open(os.path.join(vd, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {"a": 1}}, f)
        case("index_value_not_string", os.path.join(vd, "model.safetensors.index.json"),
             "model.safetensors.index.json")

        p = os.path.join(d, "bad-index.safetensors.index.json")
        with open(p, "w") as f:
            f.write('{"weight_map": ')
        case("index_bad_json", p, "bad-index.safetensors.index.json")

        case("missing_source", os.path.join(d, "does-not-exist.safetensors"),
             "does-not-exist.safetensors")
        ed = os.path.join(d, "empty-dir")
        os.makedirs(ed)
        case("empty_directory", ed, "empty-dir")

    def refuse(self, key, foreground=True):
        src, names = self.cases[key]
        mnt = tempfile.mkdtemp(prefix="stfs-mnt-")
        self.addCleanup(self._rmdir, mnt)
        fd, log = tempfile.mkstemp(prefix="stfs-log-")
        self.addCleanup(os.unlink, log)
        args = [STFS] + (["-f"] if foreground else []) + [src, mnt]
        with os.fdopen(fd, "wb") as logf:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=logf)
        m = Mount(mnt, proc, log)
        self.addCleanup(self._cleanup, m)
        try:
            rc = proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = None
        err = m.stderr()
        now_mounted = mounted(mnt)
        self.assertFalse(now_mounted, "%s was mounted; stderr: %r" % (key, err))
        self.assertIsNotNone(rc, "stfs did not exit for %s; stderr: %r" % (key, err))
        self.assertNotEqual(rc, 0, "exit status for %s; stderr: %r" % (key, err))
        m.done = True
        lines = [ln for ln in err.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, "want exactly one stderr line, got %r" % err)
        self.assertTrue(any(n in lines[0] for n in names),
                        "stderr line %r names none of %r" % (lines[0], names))
        self.assertEqual(os.listdir(mnt), [])
        return lines[0]

    def test_refuse_in_background_mode(self):
        """Without -f the refusal comes before daemonizing."""
        self.refuse("truncated", foreground=False)


def _make_refusal(key):
    def t(self):
        self.refuse(key)
    t.__name__ = "test_refuse_" + key
    t.__doc__ = None
    return t


for _key in ("truncated", "truncated_header", "header_length_huge", "header_length_past_end",
             "bad_json", "offsets_overlapping", "offsets_hole", "size_mismatch",
             "unknown_dtype", "sub_byte_bits", "duplicate_key", "nul_padding",
             "metadata_not_string", "header_not_object", "index_missing_shard",
             "index_path_traversal", "index_absolute_path", "index_unlisted_tensor",
             "index_tensor_not_in_shard", "index_duplicate_across_shards",
             "index_value_not_string", "index_bad_json", "missing_source",
             "empty_directory"):
    setattr(BadFileTest, "test_refuse_" + _key, _make_refusal(_key))


# ---------------------------------------------------------------- lifecycle


class LifecycleTest(MountCase):
    """Unmounting: fusermount3 -u, SIGTERM (also with an open file), and
    mount -t fuse.stfs."""
    PRESET = "tiny"

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.model, "model.safetensors")
        cls.tensors, _ = cls.reference([cls.src])
        cls.by_name = {t.name: t for t in cls.tensors}

    def test_fusermount_u(self):
        m = self.mount(self.src)
        self.unmount(m)
        self.assertFalse(os.path.ismount(m.path))

    def test_quiet_run(self):
        """A clean mount and unmount print nothing on stderr."""
        m = self.mount(self.src)
        with open(m.p("lm_head", "weight"), "rb") as f:
            f.read()
        self.unmount(m)
        self.assertEqual(m.stderr(), "")

    def _signal(self, sig, open_file):
        m = self.mount(self.src)
        if open_file:
            fd = os.open(m.p("lm_head", "weight"), os.O_RDONLY)
            self.addCleanup(self._close_quietly, fd)
            self.assertBytes(os.read(fd, 64), self.by_name["lm_head.weight"].data[:64], "read")
        m.proc.send_signal(sig)
        try:
            rc = m.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("stfs did not exit on signal %d" % sig)
        still = mounted(m.path)
        if not still:
            m.done = True
        self.assertFalse(still, "still mounted after signal %d" % sig)
        self.assertFalse(os.path.ismount(m.path))
        self.assertEqual(rc, 0, "exit status on signal %d (unmounted: yes); stderr: %r"
                         % (sig, m.stderr()))

    @staticmethod
    def _close_quietly(fd):
        try:
            os.close(fd)
        except OSError:
            pass  # ENOTCONN: the connection of the fd is gone

    def test_sigterm(self):
        self._signal(signal.SIGTERM, False)

    def test_sigterm_with_open_file(self):
        self._signal(signal.SIGTERM, True)

    def test_sigint(self):
        self._signal(signal.SIGINT, False)

    # mount(8) runs its helpers without PATH (util-linux 2.38 here), so
    # mount.fuse3's "/bin/sh -c 'stfs SOURCE MNT -o ...'" searches the
    # shell's default path, which starts with /usr/local/sbin and
    # /usr/local/bin. Inside a private mount namespace a temporary folder
    # holding the "stfs" symlink is bound over those two, so the real
    # "mount -t fuse.stfs SOURCE MNT" runs unchanged without touching the
    # system; the daemon and its mount live and die in that namespace.
    HELPER_SCRIPT = r"""
set -u
for d in /usr/local/sbin /usr/local/bin; do
    if [ -d "$d" ]; then $MOUNT --bind "$BINDIR" "$d" || exit 90; fi
done
$MOUNT -t fuse.stfs "$SRC" "$MNT" 2>&1 || { echo "MOUNT-FAILED $?"; exit 91; }
if grep -q " $MNT " /proc/self/mountinfo; then echo MOUNTED; fi
grep " $MNT " /proc/self/mountinfo | sed 's/^/MOUNTINFO /'
if cmp "$MNT/lm_head/weight" "$REF"; then echo CONTENT-OK; fi
if (: >> "$MNT/lm_head/weight") 2>/dev/null; then echo WRITE-OPEN-SUCCEEDED; fi
if (: > "$MNT/new-file") 2>/dev/null; then echo CREATE-SUCCEEDED; fi
$FUSERMOUNT -u "$MNT" 2>&1 && echo UNMOUNTED
"""

    def test_mount_t_fuse_stfs(self):
        helper = shutil.which("mount.fuse3", path="/sbin:/usr/sbin:/bin:/usr/bin")
        if helper is None:
            self.skipTest("mount.fuse3 not installed")
        if os.geteuid() != 0:
            self.skipTest("mount(8) needs root")
        mount_cmd = shutil.which("mount")
        unshare = shutil.which("unshare")
        if mount_cmd is None or unshare is None:
            self.skipTest("mount(8) or unshare(1) not installed")
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir, exist_ok=True)
        link = os.path.join(bindir, "stfs")
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(STFS), link)
        ref = os.path.join(self.tmp, "lm_head.bin")
        with open(ref, "wb") as f:
            f.write(self.by_name["lm_head.weight"].data)
        mnt = tempfile.mkdtemp(prefix="stfs-mnt-")
        self.addCleanup(self._rmdir, mnt)
        self.addCleanup(self._cleanup_helper_mount, mnt)
        env = dict(os.environ, BINDIR=bindir, SRC=self.src, MNT=os.path.realpath(mnt), REF=ref,
                   MOUNT=mount_cmd, FUSERMOUNT=shutil.which("fusermount3"))
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        r = subprocess.run([unshare, "--mount", "--propagation", "private", "/bin/sh", "-c",
                            self.HELPER_SCRIPT], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        out = r.stdout.decode("utf-8", "replace")
        if r.returncode == 90:
            self.skipTest("cannot bind-mount in a private namespace: " + out)
        lines = out.splitlines()
        self.assertNotIn("MOUNT-FAILED", out, "mount -t fuse.stfs failed:\n" + out)
        for marker in ("MOUNTED", "CONTENT-OK", "UNMOUNTED"):
            self.assertIn(marker, lines, out)
        self.assertIn("fuse.stfs", out, "mount type in mountinfo:\n" + out)
        self.assertNotIn("WRITE-OPEN-SUCCEEDED", lines, out)
        self.assertNotIn("CREATE-SUCCEEDED", lines, out)
        deadline = time.monotonic() + EXIT_TIMEOUT
        while self._daemons_of(mnt):
            self.assertLess(time.monotonic(), deadline, "daemon still running after unmount")
            time.sleep(0.05)

    @staticmethod
    def _daemons_of(mnt):
        """Pids of the stfs processes whose command line names @mnt (the
        daemon that mount.fuse3 started in the background)."""
        want = os.fsencode(os.path.realpath(mnt))
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    argv = f.read().split(b"\0")
                with open("/proc/%s/stat" % d, "rb") as f:
                    zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
            except (OSError, IndexError):
                continue
            if want in argv and argv[0].endswith(b"stfs") and not zombie:
                pids.append(int(d))
        return pids

    def _cleanup_helper_mount(self, mnt):
        """Ends the daemon that mount(8) started (it holds its namespace)."""
        pids = self._daemons_of(mnt)
        for p in pids:
            os.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + EXIT_TIMEOUT
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [p for p in self._daemons_of(mnt) if p in pids]
        for p in pids:
            os.kill(p, signal.SIGKILL)
        if mounted(mnt):
            fusermount("-uz", mnt)


# ---------------------------------------------------------------- main


def main():
    global STFS, GEN
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--stfs")
    ap.add_argument("--gen")
    args, rest = ap.parse_known_args()
    STFS = os.path.abspath(args.stfs or STFS)
    GEN = os.path.abspath(args.gen or GEN)

    missing = None
    if np is None or safetensors is None:
        missing = "python3 modules numpy and safetensors are needed"
    return stfstest.run_tests(rest, missing, (("stfs daemon", STFS), ("generator", GEN)))


if __name__ == "__main__":
    sys.exit(main())
