#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Hostile sources and names, as a new user or an attacker would try them
(issue 11): what stfs and stfsctl do with what the parser accepted.

    python3 tests/fault/test_hostile.py --stfs build/fs/stfs \\
        --stfsctl build/tools/stfsctl --gen tools/gen_model.py

- View names: every name in a mount, views included, fits in NAME_MAX (255)
  and `cp` of every view works, for tensor and directory names at the
  component limit and past it.
- FIFOs as SOURCE, as a shard, as an index or a .safetensors in a
  directory: stfs, stfsctl inspect and stfsctl verify end at once with one
  line naming the FIFO ("not a regular file"); nothing is mounted.
- A mount point that is a regular file is refused before anything is
  mounted.
- 5,000 shards under a soft RLIMIT_NOFILE of 1024 (where the hard limit
  allows 5,000): stfs raises its soft limit and mounts; stfsctl inspects.
- A link `self -> .` (and a directory alias) in a source directory: each
  set is mounted once.
- A sub-directory whose name is not UTF-8 that would name a component:
  refused, the name escaped in the message.
- C1 controls (U+009B) and bidi overrides (U+202E) in tensor names and
  metadata: none reaches the terminal raw from stfsctl inspect (text and
  --json) or verify --scan, nor the mount's header.json or metadata.json;
  the JSON documents still give the exact names back.

The same classes at the parser level (stf_model_open, stf_model_check) are
in the regression suite's built cases (tests/fuzz/cases.c).

Exits 77 (SKIP) without /dev/fuse or fusermount3.
"""

import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from faultlib import FaultCase  # noqa: E402

STFSCTL = None
NAME_MAX = 255


def write_st(path, names, metadata=None):
    """A sound .safetensors file: one U8 tensor of 2 bytes per name."""
    hdr, data = {}, b""
    if metadata:
        hdr["__metadata__"] = metadata
    for i, n in enumerate(names):
        hdr[n] = {"dtype": "U8", "shape": [2], "data_offsets": [2 * i, 2 * i + 2]}
        data += bytes([i & 0xFF, 0x5A])
    h = json.dumps(hdr, ensure_ascii=False).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


class ViewNames(FaultCase):
    """Names at the 238-byte component limit and past it: every view's
    name fits in NAME_MAX, so `cp` of it works. Before rule 5 moved from 255
    to 238, a 252-byte tensor name gave a 256-byte T.npy and a 250-byte
    directory a 262-byte view: listed with -o listviews, opened by the mount
    (FUSE takes names up to 1024), but not copyable anywhere."""

    NAMES = ["e" * 252, "d" * 250 + ".w", "k" * 238, "j" * 238 + ".w", "x" * 300,
             "m" * 244 + ".a", "m" * 244 + ".b"]

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.tmp, "long.safetensors")
        write_st(cls.src, cls.NAMES)

    def test_every_name_fits_and_copies(self):
        m = self.mount(self.src, "listviews")
        out = tempfile.mkdtemp(prefix="stfs-cp-")
        self.addCleanup(shutil.rmtree, out, ignore_errors=True)
        too_long, views = [], []
        for d, dirs, files in os.walk(m.path):
            for n in dirs + files:
                if len(os.fsencode(n)) > NAME_MAX:
                    too_long.append((len(os.fsencode(n)), os.path.join(d, n)))
                elif n.endswith(".npy") or n.endswith(".safetensors"):
                    views.append(os.path.join(d, n))
        self.assertEqual(too_long, [], "names over NAME_MAX")
        # a .npy of each tensor, a .part.safetensors of each of the 3
        # directories (and the whole-set files)
        self.assertEqual(len([v for v in views if v.endswith(".npy")]), len(self.NAMES))
        self.assertEqual(len([v for v in views if v.endswith(".part.safetensors")]), 3)
        for v in views:
            dst = os.path.join(out, os.path.basename(v))
            shutil.copyfile(v, dst)
            with open(v, "rb") as a, open(dst, "rb") as b:
                self.assertEqual(a.read(), b.read(), v)
        self.unmount(m)


# C0/DEL, C1 as UTF-8, bidi controls, or a byte that is not UTF-8: none may
# reach a terminal. (Decoded with surrogateescape so bad bytes show up.)
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                    "\udc80-\udcff]")


def unsafe_in(b):
    return UNSAFE.findall(b.decode("utf-8", "surrogateescape"))


def stfsctl(*args, timeout=30, preexec_fn=None):
    return subprocess.run([STFSCTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, preexec_fn=preexec_fn)


class Refusals(FaultCase):
    """Sources stfs must refuse at once, with one line, mounting nothing."""

    def refused(self, source, want, mnt=None):
        """stfs -f SOURCE MNT exits 1 within 10 s, nothing mounted, and its
        one stderr line holds @want; returns that line."""
        m = self.start(source, mnt=mnt)
        try:
            rc = m.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("stfs still running after 10 s (blocked?) on %r" % source)
        m.done = True
        lines = self.stderr_lines(m)
        self.assertEqual(rc, 1, m.stderr())
        self.assertFalse(faultlib.mounted(m.path))
        self.assertEqual(len(lines), 1, m.stderr())
        self.assertIn(want, lines[0])
        return lines[0]

    def ctl_refused(self, source, want):
        for cmd in ("inspect", "verify"):
            try:
                p = stfsctl(cmd, source, timeout=10)
            except subprocess.TimeoutExpired:
                self.fail("stfsctl %s still running after 10 s (blocked?)" % cmd)
            self.assertEqual(p.returncode, 1, p.stderr)
            out = p.stderr if cmd == "inspect" else p.stdout
            self.assertIn(want.encode(), out, cmd)

    def fifo_case(self, files, fifo, source=None):
        d = tempfile.mkdtemp(dir=self.tmp)
        for name, data in files.items():
            if isinstance(data, list):
                write_st(os.path.join(d, name), data)
            else:
                with open(os.path.join(d, name), "w") as f:
                    f.write(data)
        os.mkfifo(os.path.join(d, fifo))
        src = os.path.join(d, source) if source else d
        line = self.refused(src, "not a regular file")
        self.assertIn(fifo, line)
        self.ctl_refused(src, "not a regular file")

    def test_fifo_source(self):
        self.fifo_case({}, "x.safetensors", "x.safetensors")

    def test_fifo_safetensors_in_dir(self):
        self.fifo_case({"a.safetensors": ["w"]}, "b.safetensors")

    def test_fifo_shard(self):
        wm = {"weight_map": {"a.w": "s-1.safetensors", "b.w": "s-2.safetensors"}}
        self.fifo_case({"model.safetensors.index.json": json.dumps(wm),
                        "s-1.safetensors": ["a.w"]}, "s-2.safetensors",
                       "model.safetensors.index.json")

    def test_fifo_index_in_dir(self):
        self.fifo_case({"a.safetensors": ["w"]}, "model.safetensors.index.json")

    def test_mountpoint_is_a_file(self):
        src = os.path.join(self.tmp, "one.safetensors")
        write_st(src, ["w"])
        fd, mnt = tempfile.mkstemp(prefix="stfs-file-")
        os.close(fd)
        self.addCleanup(os.unlink, mnt)
        self.refused(src, "not a directory", mnt=mnt)

    def test_component_name_not_utf8(self):
        d = tempfile.mkdtemp(dir=self.tmp)
        for sub in (b"\xff\xfe", b"b"):
            os.mkdir(os.path.join(os.fsencode(d), sub))
            write_st(os.path.join(os.fsencode(d), sub, b"m.safetensors"), ["w"])
        line = self.refused(d, "is not valid UTF-8")
        self.assertIn("\\xff\\xfe", line)
        self.assertEqual(unsafe_in(line.encode("utf-8", "surrogateescape")), [])


class Links(FaultCase):
    """self -> . and an alias of a component: every set mounted once."""

    def test_self_link(self):
        d = os.path.join(self.tmp, "selfdir")
        os.mkdir(d)
        write_st(os.path.join(d, "model.safetensors"), ["a.w", "b.w"])
        os.symlink(".", os.path.join(d, "self"))
        m = self.mount(d)
        self.assertEqual(sorted(os.listdir(m.path)), [".stfs", "a", "b"])
        with open(m.p(".stfs", "header.json")) as f:
            self.assertEqual(len(json.load(f)["tensors"]), 2)
        self.unmount(m)
        p = stfsctl("inspect", "--json", d)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(json.loads(p.stdout)["components"]), 1)

    def test_alias_link(self):
        d = os.path.join(self.tmp, "aliasdir")
        for sub in ("unet", "vae"):
            os.makedirs(os.path.join(d, sub))
            write_st(os.path.join(d, sub, "m.safetensors"), ["w"])
        os.symlink("unet", os.path.join(d, "alias"))
        os.symlink("m.safetensors", os.path.join(d, "vae", "n.safetensors"))
        m = self.mount(d)
        self.assertEqual(sorted(os.listdir(m.path)), [".stfs", "unet", "vae"])
        self.unmount(m)


class ManyShards(FaultCase):
    """5,000 shards with a soft RLIMIT_NOFILE of 1024: stfs and stfsctl
    raise the soft limit toward the hard one. Before, both failed with "Too
    many open files" although the system allowed them."""

    N = 5000

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.tmp, "shards")
        os.mkdir(cls.src)
        wm = {}
        for i in range(cls.N):
            name = "s-%05d.safetensors" % i
            write_st(os.path.join(cls.src, name), ["t%05d" % i])
            wm["t%05d" % i] = name
        with open(os.path.join(cls.src, "model.safetensors.index.json"), "w") as f:
            json.dump({"weight_map": wm}, f)

    def setUp(self):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < self.N + 200:
            self.skipTest("hard RLIMIT_NOFILE %d is below %d" % (hard, self.N + 200))

    @staticmethod
    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    def test_mount_5000_shards(self):
        mnt = tempfile.mkdtemp(prefix="stfs-mnt-")
        self.addCleanup(self._rmdir, mnt)
        fd, log = tempfile.mkstemp(prefix="stfs-log-")
        self.addCleanup(os.unlink, log)
        with os.fdopen(fd, "wb") as logf:
            proc = subprocess.Popen([faultlib.STFS, "-f", self.src, mnt],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    preexec_fn=self.low_soft_limit)
        m = faultlib.Mount(mnt, proc, log)
        self.addCleanup(self._cleanup, m)
        self.wait_mounted(m)
        with open(m.p("t%05d" % (self.N - 1)), "rb") as f:
            self.assertEqual(f.read(), bytes([0, 0x5A]))
        self.unmount(m)

    def test_inspect_5000_shards(self):
        p = stfsctl("inspect", "--json", self.src, timeout=120, preexec_fn=self.low_soft_limit)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(json.loads(p.stdout)["shards"]), self.N)


class TerminalOutput(FaultCase):
    """Names and metadata with C1 and bidi controls: escaped on a terminal,
    exact in JSON."""

    NAMES = ["csi\u009b[31m.w", "rlo\u202egnp.exe", "ok.\u00e9t\u00e9", "del\u007f.w",
             "lri\u2066x\u2069.w"]
    META = {"k\u009bey": "v\u202eal\u0085ue", "fine": "caf\u00e9"}

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.tmp, "ctl.safetensors")
        write_st(cls.src, cls.NAMES, cls.META)

    def test_stfsctl(self):
        for args in (("inspect",), ("inspect", "--json"), ("verify", "--scan"),
                     ("verify", "--json")):
            p = stfsctl(*args, self.src)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(unsafe_in(p.stdout.replace(b"\n", b"")), [], args)
            self.assertEqual(unsafe_in(p.stderr.replace(b"\n", b"")), [], args)
        d = json.loads(stfsctl("inspect", "--json", self.src).stdout)
        self.assertEqual(sorted(t["name"] for t in d["largest"]), sorted(self.NAMES))
        self.assertEqual(d["metadata"]["__metadata__"], self.META)

    def test_mount_documents(self):
        m = self.mount(self.src)
        for doc in ("header.json", "metadata.json"):
            with open(m.p(".stfs", doc), "rb") as f:
                raw = f.read()
            self.assertEqual(unsafe_in(raw.replace(b"\n", b"")), [], doc)
        with open(m.p(".stfs", "header.json")) as f:
            self.assertEqual(sorted(t["name"] for t in json.load(f)["tensors"]),
                             sorted(self.NAMES))
        with open(m.p(".stfs", "metadata.json")) as f:
            self.assertEqual(json.load(f)["__metadata__"], self.META)
        self.unmount(m)


def main():
    global STFSCTL
    args = sys.argv[1:]
    if "--stfsctl" in args:
        i = args.index("--stfsctl")
        STFSCTL = os.path.abspath(args[i + 1])
        del args[i:i + 2]
    sys.argv[1:] = args
    return faultlib.main()


if __name__ == "__main__":
    sys.exit(main())
