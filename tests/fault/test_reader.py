#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fault suite: what any reader of an -o allow_other mount can make the
daemon do with a hostile (but valid) model.

    python3 tests/fault/test_reader.py --stfs build/fs/stfs --gen tools/gen_model.py

The mount-level half of the generated hostile corpus (tests/fuzz/README.md):
each case below writes its model at run time (too big to commit), root
mounts it with -o allow_other, and a probe running as nobody (setpriv)
does what a reader can: stat, open, read, walk. Each case states its
expected result and a time and memory bound; the daemon must survive,
answer correctly, stay within the bound of anonymous memory it may add
(RssAnon of the daemon, read from /proc by the probe), and unmount
cleanly.

| case | model | reader | bound |
|---|---|---|---|
| deep name | one tensor 300,000 dotted parts deep | stat/read D.part.safetensors, .stfs/model.safetensors, header.json | no crash; 60 s |
| metadata x dirs | 4 MB __metadata__, 32 directories | stat and read every D.part.safetensors | view_cache + 2 views |
| header.json opens | 40,000 tensors | 60 opens of header.json held at once | one copy + 16 MiB |
| listviews depth | one tensor 12,000 parts deep, -o listviews | a walk that stats every entry | view_cache + 24 MiB; 120 s |
| path > PATH_MAX | a tensor whose path is 9,000 bytes | host prefetch of everything (root) | job done; 60 s |

Needs root and setpriv (skips otherwise); exits 77 (SKIP) without
/dev/fuse or fusermount3.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from faultlib import FaultCase  # noqa: E402

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
VIEW_CACHE = 16 * MiB

# Runs as nobody; standard library only. argv[1]: JSON arguments; prints a
# JSON report. Each step's outcome is "ok", a value, or an errno name.
PROBE = r'''
import errno, json, os, struct, sys, time
a = json.loads(sys.argv[1])
mnt = a["mnt"]
def anon():
    with open("/proc/%d/status" % a["pid"]) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
def err(e):
    return errno.errorcode.get(e.errno, str(e.errno))
def safetensors_names(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        size = 8 + n + max([v["data_offsets"][1] for k, v in hdr.items()
                            if k != "__metadata__"] or [0])
        f.seek(0, 2)
        if f.tell() != size:
            raise ValueError("size %d, header says %d" % (f.tell(), size))
    return sorted(k for k in hdr if k != "__metadata__")
out = {"ids": [os.getuid(), os.geteuid()], "anon0": anon(), "steps": {}}
t0 = time.monotonic()
peak = out["anon0"]
for step in a["steps"]:
    kind, rel = step[0], step[1]
    try:
        if kind == "stat":
            r = os.stat(os.path.join(mnt, rel)).st_size
        elif kind == "names":
            r = safetensors_names(os.path.join(mnt, rel))
        elif kind == "read":
            with open(os.path.join(mnt, rel), "rb") as f:
                r = len(f.read())
        elif kind == "hold":
            fds = [os.open(os.path.join(mnt, rel), os.O_RDONLY) for _ in range(step[2])]
            for fd in fds[:2]:
                os.read(fd, 1 << 16)
            peak = max(peak, anon())
            for fd in fds:
                os.close(fd)
            r = len(fds)
        elif kind == "walk":
            # every entry, directory fds all the way down (the paths are
            # longer than PATH_MAX), a stat of each like find -ls
            n = 0
            stack = [os.open(os.path.join(mnt, rel), os.O_RDONLY | os.O_DIRECTORY)]
            while stack:
                fd = stack.pop()
                for name in os.listdir(fd):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    n += 1
                    if (st.st_mode & 0o170000) == 0o040000:
                        stack.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd))
                os.close(fd)
                peak = max(peak, anon())
            r = n
    except OSError as e:
        r = err(e)
    except ValueError as e:
        r = "bad: %s" % e
    out["steps"]["%s %s" % (kind, rel[:60])] = r
    peak = max(peak, anon())
out["peak"] = peak
out["seconds"] = time.monotonic() - t0
print(json.dumps(out))
'''


def write_st(path, tensors, metadata=None):
    """A sound safetensors file of U8 tensors [(name, nbytes)]."""
    hdr, off = {}, 0
    if metadata is not None:
        hdr["__metadata__"] = metadata
    for name, n in tensors:
        hdr[name] = {"dtype": "U8", "shape": [n], "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes(i & 0xFF for i in range(off)))


class ReaderTest(FaultCase):
    @classmethod
    def prepare(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root: mounts with allow_other and switches to nobody")
        setpriv = shutil.which("setpriv")
        if not setpriv:
            raise unittest.SkipTest("setpriv is missing")
        cls.runner = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                      "/usr/bin/python3" if os.path.isfile("/usr/bin/python3")
                      else sys.executable]

    def probe(self, m, steps, timeout):
        args = {"mnt": m.path, "pid": m.proc.pid, "steps": steps}
        t0 = time.monotonic()
        r = subprocess.run(self.runner + ["-I", "-c", PROBE, json.dumps(args)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
                           timeout=timeout)
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, "probe as nobody: %s" % r.stderr.decode())
        rep = json.loads(r.stdout)
        self.assertNotEqual(rep["ids"], [0, 0], "the probe runs as another user")
        self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
        rep["took"] = took
        sys.stderr.write("  %s: %.1f s, daemon RssAnon %.1f -> peak %.1f MiB\n"
                         % (self.id().rsplit(".", 1)[-1], took, rep["anon0"] / MiB,
                            rep["peak"] / MiB))
        return rep

    def assert_added_below(self, rep, bound, what):
        """The daemon's anonymous memory grew by less than @bound during the
        probe. Not under ASan, whose quarantine keeps freed blocks (the
        plain build asserts it; ASan checks the leaks)."""
        added = rep["peak"] - rep["anon0"]
        if "ASAN_OPTIONS" in os.environ:
            return
        self.assertLess(added, bound, "%s added %.1f MiB (bound %.1f)"
                        % (what, added / MiB, bound / MiB))

    def model(self, name, tensors, metadata=None):
        path = os.path.join(self.tmp, name + ".safetensors")
        write_st(path, tensors, metadata)
        return path

    def test_deep_name(self):
        """A name of 300,000 parts: views and documents of it as another
        user; the daemon used to die of a stack overflow (SIGSEGV)."""
        parts = 300000
        deep = ".".join(["d"] * parts) + ".w"
        src = self.model("deep", [(deep, 4), ("top", 2)])
        m = self.mount(src, "allow_other")
        rep = self.probe(m, [["stat", "d.part.safetensors"], ["stat", ".stfs/model.safetensors"],
                             ["names", ".stfs/model.safetensors"], ["names", "d.part.safetensors"],
                             ["read", ".stfs/header.json"]], timeout=60)
        s = rep["steps"]
        self.assertEqual(s["names .stfs/model.safetensors"], sorted([deep, "top"]))
        self.assertEqual(s["names d.part.safetensors"], [".".join(["d"] * (parts - 1)) + ".w"])
        self.assertIsInstance(s["stat d.part.safetensors"], int)
        self.assertGreater(s["read .stfs/header.json"], 4 * parts)
        self.unmount(m)

    def test_metadata_times_dirs(self):
        """Every D.part.safetensors embeds __metadata__: 32 directories of a 4 MB
        string were 128 MB kept until unmount; now the view cache bound."""
        meta = {"big": "x" * (4 * MiB)}
        src = self.model("meta", [("d%02d.w" % i, 4) for i in range(32)], meta)
        m = self.mount(src, "allow_other", "view_cache=%d" % VIEW_CACHE)
        steps = [["stat", "d%02d.part.safetensors" % i] for i in range(32)]
        steps += [["names", "d%02d.part.safetensors" % i] for i in range(0, 32, 7)]
        rep = self.probe(m, steps, timeout=120)
        self.assertEqual(rep["steps"]["names d07.part.safetensors"], ["w"])
        self.assert_added_below(rep, VIEW_CACHE + 2 * 5 * MiB + 8 * MiB, "32 subset views")
        self.unmount(m)

    def test_header_json_opens(self):
        """60 opens of header.json held at once share one copy (each open
        used to build its own: +930 MB for a 100k-tensor model)."""
        n = 40000
        src = self.model("many", [("layers.%d.mlp.w%d" % (i // 8, i % 8), 1) for i in range(n)])
        m = self.mount(src, "allow_other")
        size = os.stat(m.p(".stfs", "header.json")).st_size
        self.assertGreater(size, 3 * MiB)
        rep = self.probe(m, [["hold", ".stfs/header.json", 60]], timeout=120)
        self.assertEqual(rep["steps"]["hold .stfs/header.json"], 60)
        self.assert_added_below(rep, size + 16 * MiB,
                                "60 opens of a %.1f MiB header.json" % (size / MiB))
        self.unmount(m)

    def test_listviews_deep_walk(self):
        """With -o listviews a walk of a deep tree stats the view of every
        directory; their total size is quadratic in the depth (12,000 levels:
        ~150 MB), the cache holds its budget."""
        depth = 12000
        src = self.model("deepviews", [(".".join(["d"] * depth) + ".w", 4)])
        m = self.mount(src, "allow_other", "listviews", "view_cache=%d" % VIEW_CACHE)
        rep = self.probe(m, [["walk", ""]], timeout=300)
        # the root: d, its view, .stfs and the whole-set file; each level
        # below: d and its view; the last: w and w.npy; .stfs: 5, and
        # shards/ with the one shard file
        self.assertEqual(rep["steps"]["walk "], 4 + 2 * (depth - 1) + 2 + 5 + 2)
        self.assertLess(rep["took"], 120)
        self.assert_added_below(rep, VIEW_CACHE + 24 * MiB, "a walk")
        self.unmount(m)

    def test_prefetch_path_past_path_max(self):
        """Host prefetch of a selection holding a tensor whose mount path is
        longer than PATH_MAX (the daemon used to make it known by a stat of
        that path: the whole job failed, "No such file or directory")."""
        deep = ".".join(["dd"] * 3000) + ".w"    # a 9,000-byte path
        src = self.model("longpath", [(deep, 3 * PAGE), ("top", PAGE)])
        m = self.mount(src)
        c = self.control(m)
        job = c.prefetch("", threads=2)
        deadline = time.monotonic() + 60
        while c.status(job)["state"] in (faultlib.QUEUED, faultlib.RUNNING):
            self.assertLess(time.monotonic(), deadline, "the prefetch did not end")
            time.sleep(0.01)
        st = c.status(job)
        self.assertEqual((faultlib.STATE_NAMES[st["state"]], st["error"], st["message"]),
                         ("done", 0, ""), "prefetch of a deep tensor: %r" % st)
        self.assertEqual(st["tensors"], 2)
        c.close()
        self.unmount(m)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("SKIP: needs root (mounts with allow_other, switches to nobody)")
        sys.exit(77)
    sys.exit(faultlib.main())
