#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fault suite: another user on an -o allow_other mount.

    python3 tests/fault/test_access.py --stfs build/fs/stfs --gen tools/gen_model.py

Root mounts with -o allow_other; a probe runs as nobody (setpriv --reuid
nobody --regid nogroup --clear-groups; a fork that drops its ids where
setpriv or a python it may run is missing) and reports what each call did:
reads of tensors and views work; every mutating call gets EROFS; opening
/.stfs/control gets EACCES, and so does an ioctl on a control file that
root opened and handed over; xattr values and /.stfs/status stay bounded.
Without allow_other the same user is refused the mount itself.

Needs root (skips otherwise); exits 77 (SKIP) without /dev/fuse or
fusermount3.
"""

import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from faultlib import IOC_STATUS, ST, FaultCase, read_model, run_gen  # noqa: E402

XATTRS = ("user.safetensors.name", "user.safetensors.dtype", "user.safetensors.shape",
          "user.safetensors.shard", "user.safetensors.offset")
XATTR_BOUND = 4096          # no single xattr value or list may exceed this
STATUS_BOUND = 64 << 10     # /.stfs/status with a few small jobs

# Runs as nobody; standard library only. argv[1]: JSON arguments; prints a
# JSON report. Outcomes are errno names, or "ok".
PROBE = r'''
import errno, fcntl, hashlib, json, os, struct, sys
a = json.loads(sys.argv[1])
mnt = a["mnt"]
P = lambda rel: os.path.join(mnt, rel)
def outcome(fn, *args):
    try:
        r = fn(*args)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    if fn is os.open:
        os.close(r)
    return "ok"
def sha(rel):
    h = hashlib.sha256()
    with open(P(rel), "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)
out = {"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]}
if a.get("only_stat"):
    out["stat_root"] = outcome(os.stat, mnt)
    out["read"] = outcome(sha, a["files"][0][0])
    print(json.dumps(out))
    sys.exit(0)
out["reads"] = {}
for rel, want in a["files"]:
    try:
        out["reads"][rel] = "ok" if sha(rel) == want else "content differs"
    except OSError as e:
        out["reads"][rel] = errno.errorcode.get(e.errno, str(e.errno))
f, f2, d = P(a["file"]), P(a["file2"]), P(a["dir"])
ops = [
    ("open O_WRONLY", os.open, f, os.O_WRONLY),
    ("open O_RDWR", os.open, f, os.O_RDWR),
    ("open O_WRONLY|O_TRUNC", os.open, f, os.O_WRONLY | os.O_TRUNC),
    ("open O_WRONLY|O_APPEND", os.open, f, os.O_WRONLY | os.O_APPEND),
    ("create in root", os.open, P("new-file"), os.O_CREAT | os.O_WRONLY, 0o644),
    ("create in a directory", os.open, os.path.join(d, "new-file"), os.O_CREAT | os.O_RDWR, 0o644),
    ("open status O_WRONLY", os.open, P(".stfs/status"), os.O_WRONLY),
    ("open control O_WRONLY", os.open, P(".stfs/control"), os.O_WRONLY),
    ("mkdir", os.mkdir, P("new-dir")),
    ("mkdir in a directory", os.mkdir, os.path.join(d, "new-dir")),
    ("rmdir", os.rmdir, d),
    ("unlink", os.unlink, f),
    ("unlink a view", os.unlink, f + ".npy"),
    ("rename", os.rename, f, P("renamed")),
    ("rename over", os.rename, f, f2),
    ("rename a directory", os.rename, d, P("renamed-dir")),
    ("chmod", os.chmod, f, 0o666),
    ("chmod a directory", os.chmod, d, 0o777),
    ("chown", os.chown, f, os.getuid(), os.getgid()),
    ("utime", os.utime, f, (0, 0)),
    ("truncate", os.truncate, f, 0),
    ("truncate a view", os.truncate, f + ".npy", 0),
    ("setxattr", os.setxattr, f, "user.x", b"1"),
    ("setxattr existing", os.setxattr, f, "user.safetensors.name", b"x"),
    ("removexattr", os.removexattr, f, "user.safetensors.name"),
    ("symlink", os.symlink, a["file"], P("new-link")),
    ("link", os.link, f, P("new-hardlink")),
    ("mkfifo", os.mkfifo, P("new-fifo")),
]
out["mutations"] = {op[0]: outcome(*op[1:]) for op in ops}
out["control_open"] = outcome(os.open, P(".stfs/control"), os.O_RDONLY)
if a.get("control_fd") is not None:
    buf = bytearray(struct.pack(a["st"], 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, b""))
    out["control_ioctl"] = outcome(fcntl.ioctl, a["control_fd"], a["ioc_status"], buf, True)
out["xattrs"] = {}
for rel in a["xattr_files"]:
    names = os.listxattr(P(rel))
    vals = {n: os.getxattr(P(rel), n).decode("utf-8", "replace") for n in names}
    out["xattrs"][rel] = {"list_bytes": sum(len(n.encode()) + 1 for n in names),
                          "values": vals,
                          "missing": outcome(os.getxattr, P(rel), "user.nonexistent")}
out["dir_xattrs"] = os.listxattr(d)
out["status_st_size"] = os.stat(P(".stfs/status")).st_size
with open(P(".stfs/status"), "rb") as fh:
    raw = fh.read()
out["status_len"] = len(raw)
out["status"] = json.loads(raw)
out["listing"] = sorted(os.listdir(mnt))
print(json.dumps(out))
'''


def nobody_ids():
    pw = pwd.getpwnam("nobody")
    try:
        gid = grp.getgrnam("nogroup").gr_gid
        gname = "nogroup"
    except KeyError:
        gid = pw.pw_gid
        gname = grp.getgrgid(gid).gr_name
    return pw.pw_uid, gid, gname


class AccessTest(FaultCase):
    @classmethod
    def prepare(cls):
        if os.geteuid() != 0:
            raise unittest_skip("needs root: mounts with allow_other and switches to nobody")
        try:
            cls.uid, cls.gid, cls.gname = nobody_ids()
        except KeyError:
            raise unittest_skip("no user nobody")
        cls.model = os.path.join(cls.tmp, "model")
        run_gen("llama", cls.model, "--shards", 2, "--layers", 2, "--hidden", 128)
        cls.tensors, cls.shards = read_model(cls.model)
        cls.runner = cls.find_runner()

    @classmethod
    def find_runner(cls):
        """setpriv with a python3 that nobody may run, or None (then a fork
        that drops its ids runs the probe)."""
        setpriv = shutil.which("setpriv")
        if not setpriv:
            return None
        for py in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3",
                   sys.executable):
            if not os.path.isfile(py):
                continue
            cmd = [setpriv, "--reuid=nobody", "--regid=%s" % cls.gname, "--clear-groups",
                   py, "-I", "-c", "print('ok')"]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               cwd="/", timeout=60)
            if r.returncode == 0 and r.stdout.strip() == b"ok":
                return cmd[:5]
        return None

    def probe(self, args, pass_fds=()):
        """Run PROBE as nobody; its report."""
        if self.runner:
            r = subprocess.run(self.runner + ["-I", "-c", PROBE, json.dumps(args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
                               pass_fds=pass_fds, timeout=120)
            out, err, rc = r.stdout, r.stderr, r.returncode
        else:
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(rfd)
                    os.dup2(wfd, 1)
                    os.chdir("/")
                    os.setgroups([])
                    os.setresgid(self.gid, self.gid, self.gid)
                    os.setresuid(self.uid, self.uid, self.uid)
                    sys.argv = ["probe", json.dumps(args)]
                    exec(compile(PROBE, "probe", "exec"), {"__name__": "__probe__"})
                    sys.stdout.flush()
                    os._exit(0)
                except SystemExit as e:
                    sys.stdout.flush()
                    os._exit(e.code or 0)
                except BaseException:
                    import traceback
                    traceback.print_exc()
                    os._exit(1)
            os.close(wfd)
            with os.fdopen(rfd, "rb") as f:
                out = f.read()
            rc = os.waitpid(pid, 0)[1]
            err = b""
        self.assertEqual(rc, 0, "probe as nobody failed: %s" % err.decode("utf-8", "replace"))
        rep = json.loads(out)
        self.assertEqual(rep["ids"], [self.uid, self.uid, self.gid, self.gid, []],
                         "the probe runs as nobody, no supplementary groups")
        return rep

    def test_nobody_on_allow_other_mount(self):
        m = self.mount(self.model, "allow_other")
        # a few jobs, so that the status document has something to show
        c = self.control(m)
        jobs = [c.prefetch(t.name, threads=1) for t in self.tensors[:3]]
        deadline = time.monotonic() + 30
        while any(c.status(j)["state"] in (0, 1) for j in jobs):
            self.assertLess(time.monotonic(), deadline, "prefetch jobs did not end")
            time.sleep(0.01)

        t, t2 = self.tensors[1], self.tensors[2]
        d = t.path.rsplit("/", 1)[0]
        files = [(x.path, x.sha256) for x in self.tensors]
        npy_any = self.tensors[-1]
        with open(m.p(npy_any.path + ".npy"), "rb") as f:
            files.append((npy_any.path + ".npy", hashlib.sha256(f.read()).hexdigest()))
        with open(m.p(d + ".part.safetensors"), "rb") as f:
            files.append((d + ".part.safetensors", hashlib.sha256(f.read()).hexdigest()))
        for rel in (".stfs/header.json", ".stfs/metadata.json", ".stfs/model.safetensors"):
            with open(m.p(rel), "rb") as f:
                files.append((rel, hashlib.sha256(f.read()).hexdigest()))
        rep = self.probe({"mnt": m.path, "files": files, "file": t.path, "file2": t2.path,
                          "dir": d, "xattr_files": [x.path for x in self.tensors]
                          + [npy_any.path + ".npy"],
                          "control_fd": c.fd, "st": ST, "ioc_status": IOC_STATUS},
                         pass_fds=(c.fd,))

        bad = ["%s: %s" % kv for kv in sorted(rep["reads"].items()) if kv[1] != "ok"]
        self.assertEqual(bad, [], "reads as nobody")
        self.assertEqual(len(rep["reads"]), len(files))
        bad = ["%s: %s, expected EROFS" % kv for kv in sorted(rep["mutations"].items())
               if kv[1] != "EROFS"]
        self.assertEqual(bad, [], "mutating calls as nobody")
        self.assertEqual(rep["control_open"], "EACCES", "open of /.stfs/control as nobody")
        self.assertEqual(rep["control_ioctl"], "EACCES",
                         "ioctl as nobody on a control file root opened")

        by_path = {x.path: x for x in self.tensors}
        bad = []
        for rel, x in sorted(rep["xattrs"].items()):
            if x["list_bytes"] > XATTR_BOUND:
                bad.append("%s: listxattr of %d bytes" % (rel, x["list_bytes"]))
            for name, val in x["values"].items():
                if len(val.encode()) > XATTR_BOUND:
                    bad.append("%s: %s of %d bytes" % (rel, name, len(val.encode())))
            if x["missing"] != "ENODATA":
                bad.append("%s: a missing xattr gives %s" % (rel, x["missing"]))
            tt = by_path.get(rel)
            if tt is None:       # the .npy view
                if x["values"].get("user.stfs.view") != "npy":
                    bad.append("%s: xattrs %r" % (rel, x["values"]))
                continue
            want = {"user.safetensors.name": tt.name, "user.safetensors.dtype": tt.dtype,
                    "user.safetensors.shape": json.dumps(tt.shape, separators=(",", ":")),
                    "user.safetensors.shard": os.path.basename(tt.shard),
                    "user.safetensors.offset": str(tt.begin)}
            if x["values"] != want:
                bad.append("%s: xattrs %r, expected %r" % (rel, x["values"], want))
        self.assertEqual(bad, [])
        self.assertEqual(rep["dir_xattrs"], [])

        self.assertLess(rep["status_len"], STATUS_BOUND, "status document size")
        # its size is what a read returns (issue 14: it was 0)
        self.assertEqual(rep["status_st_size"], rep["status_len"], "status st_size vs read")
        st = rep["status"]
        self.assertEqual(len(st["jobs"]), len(jobs), "status: %r" % st)
        self.assertTrue(all(j["state"] == "done" for j in st["jobs"]), "status: %r" % st)
        self.assertIn("counters", st)
        self.assertEqual(set(rep["listing"]), {"model", "lm_head", ".stfs"},
                         "nothing was created")

        c.close()
        self.assertIsNone(m.proc.poll(), "stfs died; stderr:\n" + m.stderr())
        self.unmount(m)
        self.assertEqual(m.stderr(), "")

    def test_nobody_without_allow_other(self):
        """Without allow_other the kernel keeps other users out altogether."""
        m = self.mount(self.model)
        rep = self.probe({"mnt": m.path, "only_stat": True,
                          "files": [(self.tensors[0].path, self.tensors[0].sha256)]})
        self.assertEqual(rep["stat_root"], "EACCES")
        self.assertEqual(rep["read"], "EACCES")
        self.unmount(m)


def unittest_skip(msg):
    import unittest
    return unittest.SkipTest(msg)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("SKIP: needs root (mounts with allow_other, switches to nobody)")
        sys.exit(77)
    sys.exit(faultlib.main())
