#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Mount tests of the views: T.npy beside each tensor T, D.part.safetensors
beside each directory D, /.stfs/model.safetensors.

    python3 tests/views/test_views.py --stfs build/fs/stfs --gen tools/gen_model.py [unittest args]

(or STFS_EXE / STFS_GEN in the environment). Exits 77 (meson: SKIP) when
/dev/fuse or fusermount3 is missing. Every test mounts at its own temporary
mount point, runs the daemon in the foreground, and always unmounts.

Every expected byte comes from an independent reader: the tensors of the
source files from safetensors.deserialize (the library's Rust parser), the
.npy headers from numpy.lib.format, the subset files assembled here from
those tensors in shard-then-offset order. Only the tensor -> path mapping
is taken from the mount's /.stfs/header.json (the escaping rule has its
own tests in tests/mount).
"""

import argparse
import io
import json
import mmap
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import stfstest  # noqa: E402
from stfstest import fusermount, mounted  # noqa: E402,F401


def run_gen(preset, outdir, *args):
    stfstest.run_gen(GEN, preset, outdir, *args)

try:
    import numpy as np
    from numpy.lib import format as npformat
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
VIEW_XATTRS = {"user.stfs.view", "user.stfs.of"}

BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64,
    "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
# The .npy view's descr: NumPy's own type where it has one, else an
# unsigned integer of the same width (BF16, F8_*) or packed bytes (F4, F6_*).
# bytes a tensor's data is aligned to in a subset view: its element size
ALIGN = {dt: 8 if b >= 64 else b // 8 if b >= 8 else 1 for dt, b in BITS.items()}

NPY_EXACT = {
    "BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
    "I32": "<i4", "U32": "<u4", "F32": "<f4", "F64": "<f8", "I64": "<i8", "U64": "<u8",
    "C64": "<c8",
}
NPY_STANDIN = {
    "BF16": "<u2", "F8_E5M2": "|u1", "F8_E4M3": "|u1", "F8_E8M0": "|u1",
    "F8_E4M3FNUZ": "|u1", "F8_E5M2FNUZ": "|u1", "F4": "|u1", "F6_E2M3": "|u1",
    "F6_E3M2": "|u1",
}
# dtypes safetensors' numpy framework can hand out without ml_dtypes
SAFE_OPEN_NUMPY = set(NPY_EXACT)


# ---------------------------------------------------------------- helpers


def prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


def npy_descr(dtype):
    return NPY_EXACT.get(dtype) or NPY_STANDIN[dtype]


def npy_shape(dtype, shape):
    """The shape of the .npy view: packed sub-byte types in bytes, the last
    dimension when whole, else flat."""
    bits = BITS[dtype]
    if bits % 8 == 0 or not shape:
        return tuple(shape)
    if shape[-1] * bits % 8 == 0:
        return tuple(shape[:-1]) + (shape[-1] * bits // 8,)
    return (prod(shape) * bits // 8,)


def numpy_header(descr, shape):
    """The .npy header NumPy itself writes (1.0, or 2.0 when it must)."""
    d = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    f = io.BytesIO()
    try:
        npformat.write_array_header_1_0(f, d)
    except ValueError:
        f = io.BytesIO()
        npformat.write_array_header_2_0(f, d)
    return f.getvalue()


class Tensor:
    __slots__ = ("comp", "name", "dtype", "shape", "data", "shard", "offset", "path")

    def __init__(self, comp, name, dtype, shape, data, shard, offset):
        self.comp = comp        # component ("" for a single one)
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.data = data        # bytes, from safetensors.deserialize
        self.shard = shard      # index of the shard in the model's shard order
        self.offset = offset    # offset of the data in the shard's data buffer
        self.path = None        # path in the mount (from header.json)

    def __repr__(self):
        return "Tensor(%r/%r %s%s)" % (self.comp, self.name, self.dtype, self.shape)

    def parts(self):
        """Path parts of the tensor's directory chain: component parts, then
        the name's '.'-separated parts."""
        return (self.comp.split("/") if self.comp else []) + self.name.split(".")


class Source:
    """A generated model read without stfs: its components, shards (in
    component then file-name order), tensors and __metadata__."""

    def __init__(self, model_dir):
        self.shards = []        # (comp, path)
        top = sorted(os.listdir(model_dir))
        index = [f for f in top if f.endswith(".safetensors.index.json")]
        files = [f for f in top if f.endswith(".safetensors")]
        # the whole-set file of each component's directory (README: the
        # name a loader opens for the set)
        self.wholes = {}
        if index:
            with open(os.path.join(model_dir, index[0])) as f:
                wm = json.load(f)["weight_map"]
            self.shards = [("", os.path.join(model_dir, s)) for s in sorted(set(wm.values()))]
            self.wholes[""] = index[0].replace(".safetensors.index.json", ".safetensors")
        elif files:
            self.shards = [("", os.path.join(model_dir, f)) for f in files]
            self.wholes[""] = files[0]
        else:
            for d in top:
                sub = os.path.join(model_dir, d)
                if os.path.isdir(sub):
                    for f in sorted(os.listdir(sub)):
                        if f.endswith(".safetensors"):
                            self.shards.append((d, os.path.join(sub, f)))
                            self.wholes[d] = f
        self.tensors = []
        self.meta = []          # per shard
        for k, (comp, path) in enumerate(self.shards):
            with open(path, "rb") as f:
                raw = f.read()
            n = int.from_bytes(raw[:8], "little")
            hdr = json.loads(raw[8:8 + n])
            self.meta.append(hdr.pop("__metadata__", None) or {})
            for name, info in safetensors.deserialize(raw):
                begin = hdr[name]["data_offsets"][0]
                self.tensors.append(Tensor(comp, name, info["dtype"], list(info["shape"]),
                                           bytes(info["data"]), k, begin))
        self.by_key = {(t.comp, t.name): t for t in self.tensors}

    def attach_paths(self, header_json):
        """Paths of the tensors in a mount, from its /.stfs/header.json."""
        doc = json.loads(header_json)
        for e in doc["tensors"]:
            self.by_key[(e.get("component") or "", e["name"])].path = e["path"]
        missing = [t for t in self.tensors if t.path is None]
        if missing:
            raise AssertionError("not in header.json: %r" % missing[:5])
        # every directory -> the tensors under it
        self.dirs = {}
        for t in self.tensors:
            parts = t.path.split("/")
            for k in range(len(parts)):
                self.dirs.setdefault("/".join(parts[:k]), []).append(t)

    def children(self, d):
        """Entries of directory @d: {name: 'dir' or 'tensor'}."""
        out = {}
        depth = len(d.split("/")) if d else 0
        for t in self.dirs[d]:
            parts = t.path.split("/")
            out[parts[depth]] = "tensor" if depth == len(parts) - 1 else "dir"
        return out

    def subset(self, d, full=False):
        """The expected content of D.safetensors: [(name, tensor)] by
        element size (8, 4, 2, 1 bytes), each in shard-then-offset order, and
        the __metadata__."""
        ts = sorted(self.dirs[d], key=lambda t: (-ALIGN[t.dtype], t.shard, t.offset,
                                                  len(t.data)))
        depth = 0 if full or not d else len(d.split("/"))
        names = [".".join(t.parts()[depth:]) for t in ts]
        if len(set(names)) < len(names):
            # two relative names equal ("a.b" as a/b/%t beside "a.b."): full names
            names = [".".join(t.parts()) for t in ts]
        meta = {}
        comps = {t.comp for t in ts}
        for k, (comp, _) in enumerate(self.shards):
            if comp in comps:
                for key, val in self.meta[k].items():
                    meta.setdefault(key, val)
        return list(zip(names, ts)), meta


class Mount(stfstest.Mount):
    def p(self, *rel):
        return os.path.join(self.path, *[r for r in rel if r])


def has_odirect(path):
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
        return True
    except OSError:
        return False


# ------------------------------------------------------------- test base


class ViewsCase(unittest.TestCase):
    PRESET = None
    GEN_ARGS = ()
    maxDiff = 2000

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="stfs-views-%s-" % cls.__name__)
        cls.model = os.path.join(cls.tmp, "model")
        run_gen(cls.PRESET, cls.model, *cls.GEN_ARGS)
        cls.src = Source(cls.model)
        cls.rng = random.Random(cls.__name__)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- mounting

    def root_view(self, m):
        """The view of the whole model: .stfs/model.safetensors, but for a
        one-file model (there it is the file as it is) the whole-set file."""
        if len(self.src.shards) == 1:
            return m.p(self.src.wholes[""])
        return m.p(".stfs", "model.safetensors")

    def mount(self, *opts, source=None):
        """Mount @source (the class's model) with -o @opts; always unmounted.
        The first mount of the class fills in the tensor paths."""
        mnt = tempfile.mkdtemp(prefix="stfs-views-mnt-")
        self.addCleanup(self._rmdir, mnt)
        fd, log = tempfile.mkstemp(prefix="stfs-views-log-")
        self.addCleanup(os.unlink, log)
        args = [STFS, "-f"]
        for o in opts:
            args += ["-o", o]
        args += [source or self.model, mnt]
        with os.fdopen(fd, "wb") as logf:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        m = Mount(mnt, proc, log)
        self.addCleanup(self._cleanup, m)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not (mounted(mnt) and os.path.ismount(mnt)):
            rc = proc.poll()
            if rc is not None:
                self.fail("stfs exited with status %d before mounting; stderr:\n%s"
                          % (rc, m.stderr()))
            if time.monotonic() > deadline:
                self.fail("not mounted after %.0fs; stderr:\n%s" % (MOUNT_TIMEOUT, m.stderr()))
            time.sleep(0.02)
        if source is None and not hasattr(self.src, "dirs"):
            with open(m.p(".stfs", "header.json"), "rb") as f:
                self.src.attach_paths(f.read())
        return m

    @staticmethod
    def _cleanup(m):
        if mounted(m.path):
            fusermount("-u", m.path)
        try:
            m.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait()
        if mounted(m.path):
            fusermount("-uz", m.path)

    @staticmethod
    def _rmdir(path):
        try:
            os.rmdir(path)
        except OSError:
            pass

    # -- checks

    def assertBytes(self, got, want, what):
        if got == want:
            return
        n = min(len(got), len(want))
        first = next((i for i in range(n) if got[i] != want[i]), n)
        self.fail("%s: %d bytes, %d expected, first difference at byte %d (got %r, want %r)"
                  % (what, len(got), len(want), first, got[first:first + 8],
                     want[first:first + 8]))

    def check_npy(self, m, t):
        """T.npy of @t: header (NumPy's own, or equivalent), data, numpy.load
        with and without mmap. Returns (expected file bytes, header length)."""
        p = m.p(t.path + ".npy")
        descr, shape = npy_descr(t.dtype), npy_shape(t.dtype, t.shape)
        with open(p, "rb") as f:
            raw = f.read()
            f.seek(0)
            version = npformat.read_magic(f)
            if version == (1, 0):
                hshape, fortran, hdtype = npformat.read_array_header_1_0(f)
            else:
                hshape, fortran, hdtype = npformat.read_array_header_2_0(f)
            hlen = f.tell()
        what = "%s (%s %s)" % (p, t.dtype, t.shape)
        self.assertEqual(os.stat(p).st_size, len(raw), what + ": st_size")
        self.assertEqual(hlen % 64, 0, what + ": data not 64-byte aligned")
        self.assertEqual((hshape, fortran, hdtype), (shape, False, np.dtype(descr)), what)
        want_hdr = numpy_header(descr, shape)
        if raw[:hlen] != want_hdr:
            # NumPy pads an already aligned header by 64 more bytes; the dict
            # text must still be NumPy's
            text = raw[8 + (2 if version == (1, 0) else 4):hlen].rstrip(b" \n")
            pre = 10 if want_hdr[6] == 1 else 12
            self.assertEqual(text, want_hdr[pre:].rstrip(b" \n"), what + ": header text")
        self.assertBytes(raw[hlen:], t.data, what + ": data")
        for mode in (None, "r"):
            a = np.load(p, mmap_mode=mode, allow_pickle=False)
            self.assertEqual((a.dtype, a.shape), (np.dtype(descr), shape),
                             "%s mmap_mode=%s" % (what, mode))
            self.assertBytes(a.tobytes(), t.data, "%s mmap_mode=%s" % (what, mode))
            if t.dtype in NPY_EXACT:
                # the library's tensor, as NumPy holds it: same type and shape
                b = np.frombuffer(t.data, dtype=descr).reshape(t.shape)
                self.assertEqual((a.dtype, a.shape), (b.dtype, b.shape), what)
            del a
        return raw, hlen

    def check_subset(self, p, d, full=False):
        """D.safetensors at @p for directory @d: names, dtypes, shapes,
        offsets, order, __metadata__, data; parsed by the safetensors
        library. Returns (expected file bytes, extent boundaries)."""
        want, meta = self.src.subset(d, full)
        with open(p, "rb") as f:
            raw = f.read()
        what = "%s (directory %r)" % (p, d)
        self.assertEqual(os.stat(p).st_size, len(raw), what + ": st_size")
        n = int.from_bytes(raw[:8], "little")
        self.assertEqual(n % 8, 0, what + ": header length")
        text = raw[8:8 + n]
        self.assertTrue(text.rstrip(b" ").endswith(b"}"), what + ": padding")
        pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
        keys = [k for k, _ in pairs]
        self.assertEqual(len(keys), len(set(keys)), what + ": duplicate names")
        doc = dict(pairs)
        got_meta = dict(doc.pop("__metadata__", []))
        self.assertEqual(got_meta, meta, what + ": __metadata__")
        got = [(k, v["dtype"], v["shape"], v["data_offsets"])
               for k, v in ((k, dict(v)) for k, v in pairs if k != "__metadata__")]
        # in the file's order, offsets never go back
        begins = [g[3][0] for g in got]
        self.assertEqual(begins, sorted(begins), what + ": not in offset order")
        exp, off, bounds = [], 0, [0, 8, 8 + n]
        for name, t in want:
            exp.append((name, t.dtype, t.shape, [off, off + len(t.data)]))
            off += len(t.data)
            bounds.append(8 + n + off)
        key = lambda e: (e[3], e[0])
        self.assertEqual(sorted(got, key=key), sorted(exp, key=key), what)
        data = b"".join(t.data for _, t in want)
        self.assertBytes(raw[8 + n:], data, what + ": data")
        # an independent reader accepts it and finds the same tensors
        lib = {k: (i["dtype"], list(i["shape"]), bytes(i["data"]))
               for k, i in safetensors.deserialize(raw)}
        self.assertEqual(lib, {name: (t.dtype, t.shape, t.data) for name, t in want}, what)
        return raw, bounds

    def check_safe_open(self, p, d, full=False):
        want, meta = self.src.subset(d, full)
        with safetensors.safe_open(p, framework="numpy") as f:
            self.assertEqual(f.metadata() or {}, meta, p)
            self.assertEqual(set(f.keys()), {name for name, _ in want}, p)
            for name, t in want:
                if t.dtype in SAFE_OPEN_NUMPY:
                    a = f.get_tensor(name)
                    self.assertEqual(list(a.shape), t.shape, name)
                    self.assertBytes(a.tobytes(), t.data, "%s: %s" % (p, name))

    def check_reads(self, p, want, bounds, count=60):
        """Random and edge preads of @p against @want: through the page cache
        and with O_DIRECT (the daemon then sees these very offsets)."""
        size = len(want)
        rng = self.rng
        self.assertEqual(os.stat(p).st_size, size, p)
        cases = []
        for b in bounds:
            for k in (1, 3, 8, 4096):
                cases.append((max(b - k, 0), 2 * k))
            cases += [(b, 1), (b, rng.randrange(1, size + 2)), (max(b - 1, 0), 1)]
        for b1, b2 in zip(bounds, bounds[2:]):
            cases.append((max(b1 - 1, 0), b2 - b1 + 2))  # across two edges
        for _ in range(count):
            off = rng.randrange(0, size + 16)
            cases.append((off, rng.choice((1, 7, 64, 4096, rng.randrange(0, 2 * size + 2)))))
        cases += [(0, size), (0, size + 100), (size, 10), (size + 1, 10), (size + 65536, 1),
                  (size - 1, 100), (0, 0)]
        fds = [os.open(p, os.O_RDONLY)]
        if has_odirect(p):
            fds.append(os.open(p, os.O_RDONLY | os.O_DIRECT))
        try:
            for fd in fds:
                for off, ln in cases:
                    got = os.pread(fd, ln, off)
                    if got != want[off:off + ln]:
                        self.assertBytes(got, want[off:off + ln], "%s: pread(%d, %d)%s"
                                         % (p, ln, off, " O_DIRECT" if fd != fds[0] else ""))
        finally:
            for fd in fds:
                os.close(fd)

    def check_mmap(self, p, want):
        with open(p, "rb") as f:
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                self.assertBytes(mm[:], want, "mmap of " + p)

    def check_all_npy(self, m, reads=0):
        for t in self.src.tensors:
            raw, hlen = self.check_npy(m, t)
            if reads:
                self.check_reads(m.p(t.path + ".npy"), raw, [hlen], count=reads)

    def all_dirs(self):
        return sorted(self.src.dirs)


# ---------------------------------------------------------------- models


class DtypesViews(ViewsCase):
    """Every dtype, scalars, zero-size tensors (F4 [0, 7] among them)."""
    PRESET = "dtypes"

    def test_npy_every_tensor(self):
        m = self.mount()
        self.check_all_npy(m, reads=10)

    def test_npy_standins(self):
        m = self.mount()
        cases = {"dtype.BF16": ("<u2", (4, 3)), "dtype.F8_E4M3": ("|u1", (3, 5)),
                 "dtype.F4": ("|u1", (2, 4)), "dtype.F6_E2M3": ("|u1", (4, 3)),
                 "empty.f4": ("|u1", (0,)), "scalar.bf16": ("<u2", ())}
        for name, (descr, shape) in cases.items():
            t = self.src.by_key[("", name)]
            a = np.load(m.p(t.path + ".npy"))
            self.assertEqual((a.dtype.str, a.shape), (descr, shape), name)
            self.assertBytes(a.tobytes(), t.data, name)
        # the README's recipe: the stand-in viewed as the real type
        try:
            import ml_dtypes
        except ImportError:
            return
        t = self.src.by_key[("", "dtype.BF16")]
        a = np.load(m.p(t.path + ".npy")).view(ml_dtypes.bfloat16)
        self.assertEqual(a.shape, (4, 3))
        self.assertBytes(a.tobytes(), t.data, "BF16 as ml_dtypes.bfloat16")

    def test_subsets_every_directory(self):
        m = self.mount()
        for d in self.all_dirs():
            p = self.root_view(m) if d == "" else m.p(d + ".part.safetensors")
            raw, bounds = self.check_subset(p, d)
            self.check_reads(p, raw, bounds, count=20)
            self.check_safe_open(p, d)

    def test_whole_file_is_the_source(self):
        """One file: .stfs/model.safetensors is that file, byte for byte."""
        m = self.mount()
        with open(self.src.shards[0][1], "rb") as f:
            want = f.read()
        p = m.p(".stfs", "model.safetensors")
        self.assertEqual(os.stat(p).st_size, len(want))
        # buffered preads (O_DIRECT follows the source file system's rules
        # where the kernel serves the file: aligned offsets on ext4)
        with open(p, "rb", buffering=0) as f:
            for _ in range(50):
                off = self.rng.randrange(len(want))
                n = self.rng.randrange(1, len(want) + 2)
                self.assertBytes(os.pread(f.fileno(), n, off), want[off:off + n], "pread")
        self.check_mmap(p, want)

    def test_listviews(self):
        self.check_listing(self.mount(), False)
        self.check_listing(self.mount("listviews"), True)

    def check_listing(self, m, views):
        for d in self.all_dirs():
            kids = self.src.children(d)
            want = set(kids)
            if views:
                want |= {k + (".npy" if v == "tensor" else ".part.safetensors")
                         for k, v in kids.items()}
                if d in self.src.wholes:
                    want.add(self.src.wholes[d])
            got = set(os.listdir(m.p(d) if d else m.path))
            if d == "":
                self.assertIn(".stfs", got)
                got.discard(".stfs")
                self.assertNotIn(".stfs.safetensors", got)
                # the whole-model view is listed only with -o listviews
                self.assertEqual("model.safetensors" in os.listdir(m.p(".stfs")), views)
                self.assertTrue(os.path.isfile(m.p(".stfs", "model.safetensors")))
            self.assertEqual(got, want, "listing of %r with%s -o listviews"
                             % (d, "" if views else "out"))
            # views are there to look up either way
            for k, v in kids.items():
                self.assertTrue(os.path.isfile(os.path.join(m.p(d) if d else m.path,
                                k + (".npy" if v == "tensor" else ".part.safetensors"))))
        # no view of .stfs, none of the wrong kind
        for bad in (".stfs.safetensors", ".stfs.npy", "dtype.npy", "empty.npy"):
            self.assertFalse(os.path.exists(m.p(bad)), bad)
        t = self.src.tensors[0]
        self.assertFalse(os.path.exists(m.p(t.path + ".part.safetensors")))
        self.assertFalse(os.path.exists(m.p(t.path + ".npy.npy")))

    def test_xattrs(self):
        m = self.mount()
        for t in self.src.tensors[:8]:
            p = m.p(t.path + ".npy")
            self.assertEqual(set(os.listxattr(p)), VIEW_XATTRS, p)
            self.assertEqual(os.getxattr(p, "user.stfs.view"), b"npy")
            self.assertEqual(os.getxattr(p, "user.stfs.of"), t.path.encode())
        for d in self.all_dirs():
            if not d:
                continue
            p = m.p(d + ".part.safetensors")
            self.assertEqual(set(os.listxattr(p)), VIEW_XATTRS, p)
            self.assertEqual(os.getxattr(p, "user.stfs.view"), b"safetensors")
            self.assertEqual(os.getxattr(p, "user.stfs.of"), d.encode())
        p = m.p(".stfs", "model.safetensors")
        self.assertEqual(os.getxattr(p, "user.stfs.view"), b"safetensors")
        self.assertIn(os.getxattr(p, "user.stfs.of"), (b"", b".", b"/"))
        # the raw tensor keeps its own attributes, not the view's
        t = self.src.tensors[0]
        self.assertNotIn("user.stfs.view", os.listxattr(m.p(t.path)))


class LlamaViews(ViewsCase):
    """A 3-shard Llama-style set: views across shards."""
    PRESET = "llama"
    GEN_ARGS = ("--shards", "3")

    def test_npy_every_tensor(self):
        m = self.mount()
        self.assertEqual(len(self.src.shards), 3)
        self.check_all_npy(m, reads=4)

    def test_subsets_every_directory(self):
        m = self.mount()
        for d in self.all_dirs():
            if d:
                p = m.p(d + ".part.safetensors")
                self.check_subset(p, d)
                self.check_safe_open(p, d)

    def test_whole_model(self):
        m = self.mount()
        p = m.p(".stfs", "model.safetensors")
        raw, bounds = self.check_subset(p, "")
        self.check_safe_open(p, "")
        # exactly the source: every tensor, full names, the source __metadata__
        with safetensors.safe_open(p, framework="numpy") as f:
            self.assertEqual(set(f.keys()), {t.name for t in self.src.tensors})
            self.assertEqual(f.metadata(), self.src.meta[0])
        # the shards' data follow each other: reads across shard edges
        shard_edges = []
        want, _ = self.src.subset("")
        off = 8 + int.from_bytes(raw[:8], "little")
        for (_, a), (_, b) in zip(want, want[1:]):
            off += len(a.data)
            if a.shard != b.shard:
                shard_edges.append(off)
        # 3 shards, ordered by element size (F32, then F16/BF16): the
        # shards' data follow each other within each size
        self.assertGreaterEqual(len(shard_edges), 2)
        self.check_reads(p, raw, bounds, count=200)
        for e in shard_edges:
            for k in (1, 2, 100, 65536, 1 << 20):
                start = max(e - k, 0)
                with open(p, "rb") as f:
                    f.seek(start)
                    self.assertBytes(f.read(2 * k), raw[start:start + 2 * k], "shard edge")
        self.check_mmap(p, raw)

    def test_random_reads_and_mmap(self):
        m = self.mount()
        for d in ("model", "model/layers", "model/layers/3", "model/layers/0/mlp", "lm_head"):
            p = m.p(d + ".part.safetensors")
            raw, bounds = self.check_subset(p, d)
            self.check_reads(p, raw, bounds, count=100)
            self.check_mmap(p, raw)
        for t in self.src.tensors[::7]:
            raw, hlen = self.check_npy(m, t)
            self.check_mmap(m.p(t.path + ".npy"), raw)

    def test_fullnames(self):
        m = self.mount("fullnames")
        for d in ("model/layers/2", "model/layers/2/self_attn", "lm_head"):
            p = m.p(d + ".part.safetensors")
            self.check_subset(p, d, full=True)
            with safetensors.safe_open(p, framework="numpy") as f:
                self.assertTrue(all(k.startswith(d.replace("/", ".") + ".") for k in f.keys()))
        self.check_subset(m.p(".stfs", "model.safetensors"), "")

    def test_relative_names(self):
        m = self.mount()
        with safetensors.safe_open(m.p("model/layers/2.part.safetensors"), framework="numpy") as f:
            keys = set(f.keys())
        self.assertIn("self_attn.q_proj.weight", keys)
        self.assertIn("mlp.down_proj.weight", keys)
        self.assertEqual(len(keys), 9)

    def test_cp_merge_and_remount(self):
        """cp of the whole model merges the shards into one valid file; a
        mount of the copy shows the same tensors."""
        m = self.mount()
        out = tempfile.mkdtemp(prefix="stfs-views-cp-", dir=self.tmp)
        merged = os.path.join(out, "merged.safetensors")
        r = subprocess.run(["cp", m.p(".stfs", "model.safetensors"), merged],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 0, r.stdout)
        layer = os.path.join(out, "layer1.safetensors")
        r = subprocess.run(["cp", m.p("model/layers/1.part.safetensors"), layer],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 0, r.stdout)

        c = self.mount(source=merged)
        with open(c.p(".stfs", "header.json"), "rb") as f:
            doc = json.loads(f.read())
        got = {e["name"]: e for e in doc["tensors"]}
        self.assertEqual(set(got), {t.name for t in self.src.tensors})
        for t in self.src.tensors:
            e = got[t.name]
            self.assertEqual((e["dtype"], e["shape"]), (t.dtype, t.shape), t.name)
            with open(c.p(e["path"]), "rb") as f:
                self.assertBytes(f.read(), t.data, "copy: " + t.name)
        with open(c.p(".stfs", "metadata.json"), "rb") as f:
            self.assertEqual(json.loads(f.read())["__metadata__"], self.src.meta[0])

        c = self.mount(source=layer)
        want, _ = self.src.subset("model/layers/1")
        with open(c.p(".stfs", "header.json"), "rb") as f:
            got = {e["name"]: e for e in json.loads(f.read())["tensors"]}
        self.assertEqual(set(got), {name for name, _ in want})
        for name, t in want:
            with open(c.p(got[name]["path"]), "rb") as f:
                self.assertBytes(f.read(), t.data, "copy of layer 1: " + name)

    def test_stat_sizes(self):
        m = self.mount()
        for t in self.src.tensors:
            hdr = numpy_header(npy_descr(t.dtype), npy_shape(t.dtype, t.shape))
            size = os.stat(m.p(t.path + ".npy")).st_size
            # NumPy's header, or 64 bytes shorter where NumPy pads an aligned one
            self.assertIn(size - len(t.data), (len(hdr), len(hdr) - 64), t.path)
        for d in self.all_dirs():
            if d:
                st = os.stat(m.p(d + ".part.safetensors"))
                with open(m.p(d + ".part.safetensors"), "rb") as f:
                    n = int.from_bytes(f.read(8), "little")
                want = 8 + n + sum(len(t.data) for t in self.src.dirs[d])
                self.assertEqual(st.st_size, want, d)
                self.assertEqual(st.st_mode & 0o7777, 0o444, d)


class OddViews(ViewsCase):
    """Names that need the escaping rule: quotes, '%', empty parts, long
    parts, "a.b" beside "a.b.c"; directories whose relative names clash."""
    PRESET = "odd"

    def test_npy_every_tensor(self):
        self.check_all_npy(self.mount(), reads=3)

    def test_subsets_every_directory(self):
        m = self.mount()
        fallback = []
        for d in self.all_dirs():
            p = self.root_view(m) if d == "" else m.p(d + ".part.safetensors")
            raw, bounds = self.check_subset(p, d)
            self.check_reads(p, raw, bounds, count=10)
            want, _ = self.src.subset(d)
            if d and want and want[0][0] == want[0][1].name:
                fallback.append(d)
        # "" and "." are both "" relative to the directory "%"
        self.assertIn("%", fallback)

    def test_listviews(self):
        m = self.mount("listviews")
        for d in self.all_dirs():
            kids = self.src.children(d)
            got = set(os.listdir(m.p(d) if d else m.path)) - {".stfs"}
            want = set(kids) | {k + (".npy" if v == "tensor" else ".part.safetensors")
                                for k, v in kids.items()}
            if d in self.src.wholes:
                want.add(self.src.wholes[d])
            self.assertEqual(got, want, d)


class MoeViews(ViewsCase):
    """256 experts: directories of hundreds of tiny tensors."""
    PRESET = "moe"

    def test_npy_every_tensor(self):
        self.check_all_npy(self.mount())

    def test_gather_over_256_extents(self):
        """One 1 MiB read of a subset file of 768 tensors of 256 bytes: more
        extents than one reply's iovec array, so the daemon gathers."""
        m = self.mount()
        d = "model/layers/1/mlp/experts"
        self.assertGreater(len(self.src.dirs[d]), 256)
        self.assertLessEqual(max(len(t.data) for t in self.src.dirs[d]), 256)
        p = m.p(d + ".part.safetensors")
        # cold, in one request of the daemon (O_DIRECT), then through the cache
        if has_odirect(p):
            fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
            try:
                got = os.pread(fd, 1 << 20, 0)
                mid = os.pread(fd, 1 << 20, 4097)
            finally:
                os.close(fd)
        else:
            got = mid = None
        raw, bounds = self.check_subset(p, d)
        self.assertGreater(len(raw), 1 << 16)
        if got is not None:
            self.assertBytes(got, raw[:1 << 20], "O_DIRECT read of 1 MiB")
            self.assertBytes(mid, raw[4097:4097 + (1 << 20)], "O_DIRECT read from 4097")
        with open(p, "rb", buffering=0) as f:
            self.assertBytes(f.read(1 << 20), raw[:1 << 20], "read of 1 MiB")
        self.check_reads(p, raw, bounds[::7], count=50)
        self.check_mmap(p, raw)

    def test_subsets(self):
        m = self.mount()
        dirs = ["model/layers/0", "model/layers/3/mlp", "model/layers/2/mlp/experts/255",
                "model/embed_tokens", "model"]
        dirs += self.rng.sample([d for d in self.all_dirs() if d], 20)
        for d in dirs:
            p = m.p(d + ".part.safetensors")
            self.check_subset(p, d)
        p = m.p(".stfs", "model.safetensors")
        raw, bounds = self.check_subset(p, "")
        self.check_reads(p, raw, bounds[::50], count=50)


class DiffusersViews(ViewsCase):
    """Several components: names relative to the component or directory;
    COMPONENT.NAME in the whole model."""
    PRESET = "diffusers"

    def test_subsets(self):
        m = self.mount()
        self.assertEqual(sorted({t.comp for t in self.src.tensors}),
                         ["text_encoder", "unet", "vae"])
        for d in self.all_dirs():
            p = self.root_view(m) if d == "" else m.p(d + ".part.safetensors")
            self.check_subset(p, d)
        with safetensors.safe_open(m.p(".stfs", "model.safetensors"), framework="numpy") as f:
            keys = set(f.keys())
        self.assertIn("unet.conv_in.weight", keys)
        self.assertIn("vae.encoder.conv_in.weight", keys)
        with safetensors.safe_open(m.p("unet.part.safetensors"), framework="numpy") as f:
            self.assertIn("conv_in.weight", set(f.keys()))

    def test_fullnames(self):
        m = self.mount("fullnames")
        for d in ("unet", "unet/down_blocks/0", "vae/encoder"):
            self.check_subset(m.p(d + ".part.safetensors"), d, full=True)

    def test_npy(self):
        self.check_all_npy(self.mount())


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
