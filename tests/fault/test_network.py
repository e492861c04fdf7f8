#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fault suite: a model on network storage (issue 15).

    python3 tests/fault/test_network.py --stfs build/fs/stfs --gen tools/gen_model.py \\
        --stfsctl build/tools/stfsctl

SOURCE is on sshfs, to a private sshd on 127.0.0.1 (tests/fault/sshfslib.py):

- Bytes: every tensor read through stfs equals the bytes an independent
  reader (the safetensors library where numpy has the dtype, else a parse
  of the file here) finds in the server's own copy; a host prefetch of
  everything completes; stfsctl verify --scan of the sshfs source and of the
  mount's whole-model file finds what it finds in the server's copy.
- CUDA prefetch (against tests/gpu's fakecuda, where the CUDA target is
  built: --fakecuda DIR --ipc-read EXE) of tensors never read, after the
  connection died: the ring and the direct staging both reopen the shards
  and put the server's bytes on the device.

Exits 77 (SKIP) without /dev/fuse, fusermount3, sshd or sshfs.
"""

import errno
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import sshfslib  # noqa: E402
from faultlib import DONE, read_model, run_gen  # noqa: E402

CUDA = 1          # STFS_TARGET_CUDA
RING, DIRECT = 0, 1  # STFS_STAGING_*


def stfsctl(*args, timeout=60):
    return subprocess.run([faultlib.STFSCTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


class NetworkCase(sshfslib.SshfsCase):
    """A 3-shard llama in the export; cls.src: its path on sshfs."""

    @classmethod
    def prepare_export(cls):
        cls.model = os.path.join(cls.export, "model")
        run_gen("llama", cls.model, "--shards", 3, "--layers", 4, "--hidden", 256)
        cls.tensors, cls.shards = read_model(cls.model)

    @classmethod
    def prepare(cls):
        super().prepare()
        cls.src = os.path.join(cls.remote, "model")

    def drop_sshfs_cache(self):
        """Make stfs's next reads of the shards go to the server: an open on
        sshfs (no kernel_cache) drops the file's page cache, mapped pages
        too."""
        for s in self.shards:
            with open(os.path.join(self.src, os.path.basename(s)), "rb"):
                pass


class HarnessTest(NetworkCase):
    """What the later cases rely on, sshfs alone: a killed connection is
    reconnected for a new open, and a stalled one holds a read until
    resumed."""

    def read_remote(self, path):
        with open(os.path.join(self.src, os.path.basename(path)), "rb") as f:
            return f.read()

    def test_kill_reconnects(self):
        want = self.read_remote(self.shards[0])
        self.assertGreater(self.server.kill_sessions(), 0, "no ssh session to kill")
        deadline = time.monotonic() + 20
        while True:
            try:
                self.assertEqual(self.read_remote(self.shards[0]), want)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertGreater(len(self.server.sessions()), 0, "sshfs did not reconnect")

    def test_stall_holds_reads(self):
        import threading
        self.read_remote(self.shards[1])      # connected
        out = []
        self.assertGreater(self.server.stall(), 0)
        self.addCleanup(self.server.resume)
        # a name never looked up: sshfs must ask the server
        t = threading.Thread(target=lambda: out.append(os.path.exists(
            os.path.join(self.src, "not-there-%d" % time.monotonic_ns()))), daemon=True)
        t.start()
        t.join(0.5)
        self.assertTrue(t.is_alive(), "a lookup on a stalled server returned")
        self.server.resume()
        t.join(20)
        self.assertFalse(t.is_alive(), "the lookup still waits after the resume")


class BytesTest(NetworkCase):
    def test_bytes_prefetch_verify(self):
        m = self.mount(self.src)
        for t in self.tensors:
            got, err = self.read_errno(m.p(t.path))
            self.assertIsNone(err, "%s: %s" % (t.name, faultlib.errname(err or 0)))
            self.assertBytes(got, t.data, t.name)
        # the safetensors library, on the server's copy, where numpy has the dtype
        from safetensors import safe_open
        checked = 0
        for shard in self.shards:
            with safe_open(shard, framework="numpy") as f:
                for name in f.keys():
                    t = next(t for t in self.tensors if t.name == name)
                    if t.dtype not in ("F16", "F32"):
                        continue
                    got, err = self.read_errno(m.p(t.path))
                    self.assertIsNone(err)
                    self.assertBytes(got, f.get_tensor(name).tobytes(), name)
                    checked += 1
        self.assertGreater(checked, 10)

        c = self.control(m)
        st = self.wait_job(c, c.prefetch("", threads=4))
        self.assertEqual(st["state"], DONE, "host prefetch over sshfs: %r" % st)
        self.assertEqual(st["tensors"], len(self.tensors))
        c.close()

        # verify --scan reads every byte: through sshfs, and through stfs on
        # sshfs, it must count what it counts in the server's own copy
        scans = {}
        for target in (self.model, self.src, m.p(".stfs", "model.safetensors")):
            p = stfsctl("verify", "--scan", "--json", target)
            self.assertIn(p.returncode, (0, 1), p.stderr.decode())
            doc = json.loads(p.stdout)
            self.assertEqual(doc["problems"], [], "stfsctl verify %s" % target)
            scans[target] = {k: doc["scan"][k] for k in ("bytes", "nan", "inf", "nan_tensors")}
        self.assertEqual(len(set(map(repr, scans.values()))), 1, scans)
        self.unmount(m)
        self.assertEqual(self.stderr_lines(m), [], "stfs said something")


class ReconnectTest(NetworkCase):
    """The server side of the connection dies while stfs reads; sshfs
    reconnects: stfs reopens the shards it reads and serves every tensor
    not read before, without a remount (issue 15: before, every byte stfs
    did not hold already gave EIO until a remount)."""

    def test_kill_mid_read_then_unread_tensors(self):
        import threading
        m = self.mount(self.src)
        early = self.tensors[::3]
        later = [t for t in self.tensors if t not in early]
        for t in early:
            got, err = self.read_errno(m.p(t.path))
            self.assertIsNone(err)
        # a reader of the early tensors, O_DIRECT (never the mount's cache),
        # in flight while the connection dies
        stop, errors, passes = threading.Event(), [], [0]

        def reader():
            while not stop.is_set():
                for t in early:
                    try:
                        fd = os.open(m.p(t.path), os.O_RDONLY | os.O_DIRECT)
                        try:
                            os.pread(fd, len(t.data), 0)
                        finally:
                            os.close(fd)
                    except OSError as e:
                        errors.append(e.errno)
                passes[0] += 1
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        self.addCleanup(stop.set)
        while passes[0] < 1:
            time.sleep(0.01)
        self.drop_sshfs_cache()
        self.assertGreater(self.server.kill_sessions(), 0)
        before = passes[0]
        deadline = time.monotonic() + 20
        while passes[0] < before + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        th.join(10)
        self.assertGreaterEqual(passes[0], before + 2, "the reader stopped")
        # every tensor not read before the kill, right, without a remount
        for t in later:
            got, err = self.read_errno(m.p(t.path))
            self.assertIsNone(err, "%s after the reconnect: %s; stderr:\n%s"
                              % (t.name, faultlib.errname(err or 0), m.stderr()))
            self.assertBytes(got, t.data, t.name)
        st = faultlib.status_doc(m.path)
        reopened = [s for s in st["shards"] if s["reopened"] > 0]
        self.assertTrue(reopened, "status names no reopened shard: %r" % st["shards"])
        for s in st["shards"]:
            self.assertEqual(s["state"], "ok", s)
            self.assertEqual(s["fs"], "fuse", s)
        lines = self.stderr_lines(m)
        self.assertTrue(lines, "no log line")
        for ln in lines:
            self.assertIn("reopened the file", ln)
            self.assertNotIn("truncated", ln)
            self.assertTrue(any(os.path.basename(s) in ln for s in self.shards), ln)
        print("reads failed during the reconnect: %d (%s)"
              % (len(errors), ", ".join(sorted(set(map(faultlib.errname, errors))))))
        self.unmount(m)

    def test_server_away_then_back(self):
        """The server stays away: reads of what stfs does not hold fail with
        EIO, one line says the reopen failed, the status says unreachable;
        once it is back, the next reads reopen and read right."""
        m = self.mount(self.src)
        self.drop_sshfs_cache()
        self.server.down()
        self.addCleanup(lambda: self.server.proc or self.server.up())
        t = self.tensors[-1]
        got, err = self.read_errno(m.p(t.path))
        self.assertEqual(err, errno.EIO, "a read while the server is away")
        self.read_errno(m.p(t.path))
        st = {s["shard"]: s for s in faultlib.status_doc(m.path)["shards"]}
        shard = os.path.basename(t.shard)
        self.assertEqual(st.get(shard, {}).get("state"), "unreachable", st)
        self.assertIsNotNone(st[shard]["error"])
        self.server.up()
        deadline = time.monotonic() + 20
        while self.read_errno(m.p(t.path))[1] is not None:
            self.assertLess(time.monotonic(), deadline, "never read again; stderr:\n"
                            + m.stderr())
            time.sleep(0.2)
        for t in self.tensors:
            got, err = self.read_errno(m.p(t.path))
            self.assertIsNone(err, t.name)
            self.assertBytes(got, t.data, t.name)
        st = {s["shard"]: s for s in faultlib.status_doc(m.path)["shards"]}
        self.assertEqual(st[shard]["state"], "ok", st)
        self.assertGreater(st[shard]["reopened"], 0)
        said = [ln for ln in self.stderr_lines(m) if "reopening the file failed too" in ln]
        self.assertEqual(len([ln for ln in said if shard in ln]), 1, m.stderr())
        self.unmount(m)

    def test_kill_then_prefetch(self):
        """A host prefetch is the first to meet the dead connection: it
        reopens the shards and completes."""
        m = self.mount(self.src)
        self.drop_sshfs_cache()
        self.assertGreater(self.server.kill_sessions(), 0)
        c = self.control(m)
        st = self.wait_job(c, c.prefetch("", threads=2))
        self.assertEqual(st["state"], DONE, "host prefetch after the reconnect: %r; stderr:\n%s"
                         % (st, m.stderr()))
        c.close()
        for t in self.tensors:
            got, err = self.read_errno(m.p(t.path))
            self.assertIsNone(err, t.name)
            self.assertBytes(got, t.data, t.name)
        self.assertEqual(st["tensors"], len(self.tensors))
        self.assertTrue(any(s["reopened"] for s in faultlib.status_doc(m.path)["shards"]))
        self.unmount(m)


class CudaReconnectTest(NetworkCase):
    """A CUDA prefetch is the first to meet the dead connection (issue 15:
    the ring's pread failed the job, naming no shard; the direct staging's
    copies read the dead mapping): it reopens the shards, and the device
    holds the server's bytes."""

    def setUp(self):
        if faultlib.FAKECUDA is None:
            self.skipTest("the CUDA target is not built")
        self.stats = os.path.join(self.tmp, "fakecuda-%s.json" % self._testMethodName)

    def mount_fake(self):
        with faultlib.stfstest.environ(**faultlib.fakecuda_env(self.stats)):
            return self.mount(self.src)

    def device_bytes(self, m, t):
        """Tensor @t as another process reads it on the fake device."""
        return faultlib.stfstest.ipc_read(faultlib.IPC_READ, faultlib.FAKECUDA,
                                          faultlib.stfstest.cuda_xattr(m.p(t.path)))

    def kill_then_cuda(self, staging):
        m = self.mount_fake()
        self.drop_sshfs_cache()
        self.assertGreater(self.server.kill_sessions(), 0)
        c = self.control(m)
        st = self.wait_job(c, c.prefetch("", threads=2, target=CUDA, staging=staging))
        self.assertEqual(st["state"], DONE, "cuda prefetch after the reconnect: %r; stderr:\n%s"
                         % (st, m.stderr()))
        self.assertEqual(st["tensors"], len(self.tensors))
        for t in self.tensors:
            self.assertBytes(self.device_bytes(m, t), t.data, t.name)
        self.assertTrue(any(s["reopened"] for s in faultlib.status_doc(m.path)["shards"]))
        for ln in self.stderr_lines(m):
            self.assertIn("reopened the file", ln)
        c.close()
        self.unmount(m)
        self.assertFalse(any(faultlib.fake_live(self.stats).values()),
                         "the fake driver still holds %r" % faultlib.fake_live(self.stats))

    def test_kill_then_cuda_ring(self):
        self.kill_then_cuda(RING)

    def test_kill_then_cuda_direct(self):
        self.kill_then_cuda(DIRECT)


class ChangeTest(NetworkCase):
    """A shard changed on the server (same size, written in the export, so
    no inotify event reaches the mount): stfs refuses it as a whole, says
    so in the status and the log, and keeps serving the other shards.
    sshfs keeps attributes for 20 s by default: this mount asks every
    second (dcache_timeout=1)."""

    sshfs_opts = ("dcache_timeout=1",)
    INTERVAL = 0.5

    def setUp(self):
        # each test changes a shard: start from the generated bytes, with an
        # mtime in the past (sftp has whole seconds: a change in the second
        # of the mount would keep the mtime)
        for t in self.tensors:
            with open(t.shard, "r+b") as f:
                f.seek(t.begin)
                f.write(t.data)
        past = int(time.time()) - 100
        for s in self.shards:
            os.utime(s, (past, past))
        # and seen so through sshfs's caches before the mount takes its stat
        deadline = time.monotonic() + 10
        for s in self.shards:
            while os.stat(os.path.join(self.src, os.path.basename(s))).st_mtime != past:
                self.assertLess(time.monotonic(), deadline, "sshfs never showed the mtime")
                time.sleep(0.1)

    def change_on_server(self, shard):
        """Overwrite 16 bytes of the last tensor of @shard in place (same
        size, a new mtime); returns the tensors of that shard."""
        mine = [t for t in self.tensors if t.shard == shard]
        with open(shard, "r+b") as f:
            f.seek(mine[-1].begin)
            f.write(bytes(b ^ 0xFF for b in mine[-1].data[:16]))
        return mine

    def check_refused(self, m, shard, mine, why):
        others = [t for t in self.tensors if t.shard != shard]
        for t in mine:
            for path in (m.p(t.path), m.p(t.path + ".npy")):
                got, err = self.read_errno(path)
                self.assertEqual(err, errno.EIO, "%s: %s" % (path, "read" if got else err))
        for t in others:
            got, err = self.read_errno(m.p(t.path))
            self.assertIsNone(err, t.name)
            self.assertBytes(got, t.data, t.name)
        st = {s["shard"]: s for s in faultlib.status_doc(m.path)["shards"]}
        self.assertEqual(st.get(os.path.basename(shard), {}).get("state"), "changed", st)
        self.assertEqual([s for s in st.values() if s["state"] != "ok"],
                         [st[os.path.basename(shard)]])
        # one line for the shard (from the watcher's thread: wait for it);
        # others only reopened after a reconnect
        deadline = time.monotonic() + 5
        while True:
            lines = self.stderr_lines(m)
            said = [ln for ln in lines if os.path.basename(shard) in ln]
            if said or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.assertEqual(len(said), 1, m.stderr())
        self.assertIn("changed on the source", said[0])
        self.assertIn(why, said[0])
        for ln in lines:
            self.assertTrue(ln in said or "reopened the file" in ln, ln)

    def test_same_size_change_seen_within_interval(self):
        m = self.mount(self.src, "check_interval=%g" % self.INTERVAL)
        for t in self.tensors:
            self.assertBytes(self.read_errno(m.p(t.path))[0], t.data, t.name)
        shard = self.shards[1]
        t0 = time.monotonic()
        mine = self.change_on_server(shard)
        # cached in the mount: the change drops it, then reads come to stfs
        while self.read_errno(m.p(mine[0].path))[1] != errno.EIO:
            self.assertLess(time.monotonic() - t0, 10, "change not seen in 10 s; stderr:\n"
                            + m.stderr())
            time.sleep(0.05)
        print("change seen after %.2f s (check_interval=%g, sshfs attribute cache 1 s)"
              % (time.monotonic() - t0, self.INTERVAL))
        self.check_refused(m, shard, mine, "mtime")
        self.unmount(m)

    def test_changed_while_disconnected(self):
        """No periodic check: the reopen after a reconnect finds the change."""
        m = self.mount(self.src, "check_interval=0")
        shard = self.shards[2]
        for s in self.shards:
            with open(os.path.join(self.src, os.path.basename(s)), "rb"):
                pass    # drop sshfs's page cache of the shards (no kernel_cache)
        self.assertGreater(self.server.kill_sessions(), 0)
        mine = self.change_on_server(shard)
        # past sshfs's attribute cache (dcache_timeout=1): a change younger
        # than that is not seen by the reopen (README)
        time.sleep(2.5)
        got, err = self.read_errno(m.p(mine[0].path))
        self.assertEqual(err, errno.EIO, "read of a changed shard after a reconnect")
        self.check_refused(m, shard, mine, "seen after a read failed")
        self.unmount(m)


if __name__ == "__main__":
    sys.exit(sshfslib.main())
