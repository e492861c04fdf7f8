#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Whole source files through the mount: .stfs/shards and the one-file
.stfs/model.safetensors, served by the kernel (FUSE passthrough) where it
may, by the daemon where not (fs/passthrough.h).

    python3 tests/mount/test_passthrough.py --stfs build/fs/stfs --gen tools/gen_model.py

Each file's bytes are compared with the source file itself (read, mmap,
sha256). Whether the kernel served them is seen in the daemon's READ counter
(.stfs/status "read_requests"): it must not move while passthrough is on and
must move with -o passthrough=off. Off paths: the option, a daemon whose
backing files the kernel refuses (a mount from a user namespace: it has
CAP_SYS_ADMIN there only), and a daemon without CAP_SYS_ADMIN (run as
nobody through fusermount3, in a private mount namespace). Exits 77 like
test_mount.py.
"""

import hashlib
import json
import mmap
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_mount as tm  # noqa: E402
from test_mount import MountCase  # noqa: E402

ON = "passthrough on"
OFF = "passthrough off"


def read(path):
    with open(path, "rb") as f:
        return f.read()


def read_mmap(path):
    with open(path, "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            return m[:]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reads_served(m):
    """The daemon's READ counter."""
    return json.loads(read(m.p(".stfs", "status")))["counters"]["read_requests"]


class WholeFileCase(MountCase):
    def check_same(self, got, want):
        """@got (a mount path) has the bytes of @want (a source file), read
        with read(), with mmap and hashed; and its size and mtime."""
        raw = read(want)
        self.assertBytes(read(got), raw, got + " (read)")
        self.assertBytes(read_mmap(got), raw, got + " (mmap)")
        self.assertEqual(sha256(got), hashlib.sha256(raw).hexdigest(), got + " sha256")
        st, sst = os.stat(got), os.stat(want)
        self.assertEqual((st.st_size, stat.S_IMODE(st.st_mode)), (sst.st_size, 0o444), got)
        self.assertEqual(int(st.st_mtime), int(sst.st_mtime), got + " mtime")

    def check_on(self, m, files):
        """@files (mount path, source path) read right with no READ reaching
        the daemon; the log says passthrough is on."""
        before = reads_served(m)
        for got, want in files:
            self.check_same(got, want)
        if "the kernel does not offer it" in m.stderr():
            self.skipTest("this kernel does not offer FUSE passthrough: " + m.stderr().strip())
        self.assertEqual(reads_served(m), before,
                         "READs reached the daemon for whole files; stderr:\n" + m.stderr())
        self.assertIn(ON, m.stderr())

    def check_off(self, m, files, why):
        """The same bytes, served by the daemon; the log line says @why
        (None: no line at all)."""
        before = reads_served(m)
        for got, want in files:
            self.check_same(got, want)
        self.assertGreater(reads_served(m), before, "the daemon served no READ")
        lines = [ln for ln in m.stderr().splitlines() if "passthrough" in ln]
        if why is None:
            self.assertEqual(lines, [], "a passthrough line with -o passthrough=off")
        else:
            self.assertEqual(len(lines), 1, "want one passthrough line:\n" + m.stderr())
            self.assertIn(OFF, lines[0])
            self.assertIn(why, lines[0])


class ShardsTest(WholeFileCase):
    """A sharded set: .stfs/shards holds each shard file as it is."""
    PRESET = "llama"
    GEN_ARGS = ("--shards", "3")

    @classmethod
    def prepare(cls):
        cls.shards = sorted(f for f in os.listdir(cls.model) if f.endswith(".safetensors"))

    def files(self, m):
        return [(m.p(".stfs", "shards", f), os.path.join(self.model, f)) for f in self.shards]

    def test_listing(self):
        """Listed in .stfs only with listviews (du and tar would count the
        model twice), always there by name; it lists its files."""
        for opts, listed in (((), False), (("listviews",), True)):
            m = self.mount(None, *opts)
            self.assertEqual("shards" in os.listdir(m.p(".stfs")), listed, opts)
            self.assertEqual(sorted(os.listdir(m.p(".stfs", "shards"))), self.shards)
            self.assertTrue(stat.S_ISDIR(os.stat(m.p(".stfs", "shards")).st_mode))
            self.unmount(m)

    def test_passthrough_on(self):
        m = self.mount()
        self.check_on(m, self.files(m))
        self.unmount(m)

    def test_passthrough_on_clone_fd(self):
        """The hooks see every worker's own /dev/fuse clone."""
        m = self.mount(None, "clone_fd")
        self.check_on(m, self.files(m))
        self.unmount(m)

    def test_option_off(self):
        m = self.mount(None, "passthrough=off")
        self.check_off(m, self.files(m), None)
        self.unmount(m)

    def test_tensors_still_served(self):
        """Passthrough is for whole files only: a tensor is read through
        the daemon, right."""
        m = self.mount()
        before = reads_served(m)
        ref, _ = self.reference([os.path.join(self.model, f) for f in self.shards])
        self.check_contents(m, ref)
        self.assertGreater(reads_served(m), before)
        self.unmount(m)

    def test_bad_option(self):
        m = self.start(self.model, "passthrough=maybe")
        self.assertEqual(m.proc.wait(timeout=tm.EXIT_TIMEOUT), 1)
        m.done = True
        self.assertIn("passthrough=maybe", m.stderr())

    def in_namespace(self, unshare_args, setup, runas, why):
        """Mount, check and unmount inside new namespaces (unshare
        @unshare_args), the shell lines @setup first; the daemon, the checker
        (in_namespace below) and the unmount run as @runas (a command prefix).
        The daemon served every byte and said @why once."""
        unshare = shutil.which("unshare")
        if not unshare:
            self.skipTest("unshare(1) is missing")
        mnt = tempfile.mkdtemp(prefix="stfs-mnt-")
        self.addCleanup(self._rmdir, mnt)
        os.chmod(self.tmp, 0o755)
        os.chmod(mnt, 0o777)
        script = (
            "set -e\n" + setup +
            "$RUNAS \"$STFS\" -f \"$SRC\" \"$MNT\" 2>\"$LOG\" &\n"
            "for i in $(seq 300); do $RUNAS mountpoint -q \"$MNT\" && break; sleep 0.05; done\n"
            "$RUNAS python3 \"$ME\" --in-namespace \"$MNT\" \"$SRC\" || rc=$?\n"
            "$RUNAS fusermount3 -u \"$MNT\" || umount -l \"$MNT\"\n"
            "wait\n"
            "exit ${rc:-0}\n")
        fd, log = tempfile.mkstemp(prefix="stfs-log-", dir=self.tmp)
        os.close(fd)
        os.chmod(log, 0o666)
        env = dict(os.environ, STFS=tm.STFS, SRC=self.model, MNT=mnt, LOG=log, RUNAS=runas,
                   ME=os.path.abspath(__file__), DEV=os.path.join(self.tmp, "fuse"))
        try:
            r = subprocess.run([unshare, *unshare_args, "--propagation", "private", "sh", "-c",
                                script], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=120)
        finally:
            if tm.mounted(mnt):
                tm.fusermount("-uz", mnt)
        out = r.stdout.decode("utf-8", "replace")
        daemon = read(log).decode("utf-8", "replace")
        if r.returncode != 0 and not daemon and "unshare" in out:
            self.skipTest("cannot make the namespaces here: " + out.strip())
        self.assertEqual(r.returncode, 0, out + "\ndaemon:\n" + daemon)
        lines = [ln for ln in daemon.splitlines() if "passthrough" in ln]
        if lines and "does not offer" in lines[0]:
            self.skipTest("this kernel does not offer FUSE passthrough")
        self.assertEqual(len(lines), 1, daemon)
        self.assertIn(OFF + ": " + why, lines[0])

    def test_refused_backing_files(self):
        """From a user namespace the daemon has CAP_SYS_ADMIN there but not
        where the kernel checks it: the backing files are refused, the daemon
        serves the same bytes and says so once."""
        self.in_namespace(["--user", "--map-root-user", "--mount"], "", "",
                          "the kernel refused")

    def test_no_cap_sys_admin(self):
        """A daemon without CAP_SYS_ADMIN (nobody, mounting through
        fusermount3) does not ask for passthrough: the daemon serves the
        bytes and says why once. /dev/fuse is often 0600 (here too): a
        private mount namespace gets a 0666 node of the same device."""
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user nobody")
        if not shutil.which("setpriv"):
            self.skipTest("setpriv(1) is missing")
        setup = ("mknod \"$DEV\" c 10 229\nchmod 666 \"$DEV\"\n"
                 "mount --bind \"$DEV\" /dev/fuse\n")
        self.in_namespace(["--mount"], setup, "setpriv --reuid=%d --regid=%d --clear-groups"
                          % (nobody.pw_uid, nobody.pw_gid), "no CAP_SYS_ADMIN")


class OverlaySourceTest(WholeFileCase):
    """Shards on overlayfs (a model in a container image): the mount asks
    the kernel for stacking depth 2, or every backing file is refused
    (ELOOP)."""
    PRESET = "llama"
    GEN_ARGS = ("--shards", "2")

    def test_passthrough_on(self):
        top = tempfile.mkdtemp(prefix="stfs-ovl-", dir=self.tmp)
        dirs = {k: os.path.join(top, k) for k in ("upper", "work", "merged")}
        for d in dirs.values():
            os.mkdir(d)
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            "lowerdir=%s,upperdir=%s,workdir=%s"
                            % (self.model, dirs["upper"], dirs["work"]), dirs["merged"]],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            self.skipTest("cannot mount overlayfs here: " + r.stdout.decode().strip())
        self.addCleanup(subprocess.run, ["umount", "-l", dirs["merged"]])
        names = sorted(f for f in os.listdir(self.model) if f.endswith(".safetensors"))
        m = self.mount(dirs["merged"])
        self.check_on(m, [(m.p(".stfs", "shards", f), os.path.join(self.model, f))
                          for f in names])
        self.unmount(m)


class OneFileTest(WholeFileCase):
    """A one-file model: .stfs/model.safetensors is that file as it is."""
    PRESET = "tiny"

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.model, "model.safetensors")

    def files(self, m):
        return [(m.p(".stfs", "model.safetensors"), self.src),
                (m.p(".stfs", "shards", "model.safetensors"), self.src)]

    def test_passthrough_on(self):
        m = self.mount(self.src)
        self.check_on(m, self.files(m))
        self.unmount(m)

    def test_option_off(self):
        m = self.mount(self.src, "passthrough=off")
        self.check_off(m, self.files(m), None)
        self.unmount(m)

    def test_whole_model_still_valid(self):
        m = self.mount(self.src)
        tensors, meta = self.reference([self.src])
        self.check_whole_model(m, tensors, meta)
        self.unmount(m)


def in_namespace(mnt, src):
    """Run by test_refused_backing_files inside the user namespace: compare
    every shard and see that the daemon served the READs."""
    if not os.path.ismount(mnt):
        print("unshare failed: %s not mounted" % mnt)
        return 77
    served = json.loads(read(os.path.join(mnt, ".stfs", "status")))["counters"]
    for f in sorted(os.listdir(src)):
        if not f.endswith(".safetensors"):
            continue
        got = os.path.join(mnt, ".stfs", "shards", f)
        want = read(os.path.join(src, f))
        if read(got) != want or read_mmap(got) != want:
            print("%s: bytes differ" % got)
            return 1
    after = json.loads(read(os.path.join(mnt, ".stfs", "status")))["counters"]
    if after["read_requests"] <= served["read_requests"]:
        print("no READ reached the daemon")
        return 1
    return 0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--in-namespace":
        return in_namespace(sys.argv[2], sys.argv[3])
    tm.STFS = os.path.abspath(tm.STFS)
    return tm.main()


if __name__ == "__main__":
    sys.exit(main())
