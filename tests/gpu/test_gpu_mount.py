#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""CUDA prefetch through real mounts, against tests/gpu's fakecuda.

The daemon runs with LD_LIBRARY_PATH at the fake (a libcuda.so.1 that keeps
device memory in host memory) and FAKECUDA_STATS at a file where the fake
keeps its live counters, so every test can check that what a job allocated
is freed again by evict, cancel, failure and unmount. Bytes on the device
are read back by a second process (ipc_read) through the user.stfs.cuda
xattr's IPC handle and compared with the source.

usage: test_gpu_mount.py --stfs STFS --gen GEN --fakecuda DIR --ipc-read EXE
                         --stfsctl STFSCTL
Exits 77 where FUSE is unavailable.
"""

import argparse
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "control"))
import stfstest  # noqa: E402
import test_control as tc  # noqa: E402
from test_control import CUDA, Control, read_reference  # noqa: E402,F401

FAKECUDA = None
IPC_READ = None
STFSCTL = None
RING, DIRECT, AUTO = 0, 1, 2  # STFS_STAGING_*
# every counter that must be back to 0 once nothing is prefetched
LIVE = ("device_allocs", "pinned_allocs", "registered", "streams", "events", "ipc_open",
        "leaked_at_ctx_release")


class FakeMount(tc.Mount):
    """A mount whose daemon loads fakecuda, configured by FAKECUDA_* @env."""

    def __init__(self, test, source, *opts, env=None):
        self.stats_path = os.path.join(tempfile.mkdtemp(prefix="stfs-fakecuda-"), "stats.json")
        test.addCleanup(shutil.rmtree, os.path.dirname(self.stats_path), True)
        self.source = source
        with stfstest.environ(LD_LIBRARY_PATH=FAKECUDA, FAKECUDA_STATS=self.stats_path,
                              **(env or {})):
            super().__init__(test, source, *opts)

    def fake(self):
        """The fake driver's counters in the daemon now ({} before its first CUDA call)."""
        try:
            with open(self.stats_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def xattr(self, name):
        return stfstest.cuda_xattr(self.tensor(name))


def ipc_read(kv):
    """The bytes of one tensor, read by another process through its IPC handle."""
    return stfstest.ipc_read(IPC_READ, FAKECUDA, kv)


class GpuMountTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="stfs-gpu-models-")
        cls.llama = os.path.join(cls.work, "llama")
        tc.run_gen("llama", cls.llama, "--shards", 2, "--layers", 3, "--hidden", 24)
        cls.ref = read_reference(cls.llama)
        # ~40 MiB: a job in 4 KiB chunks on one thread runs long enough to be
        # cancelled, unmounted under, or to lose its device
        cls.wide = os.path.join(cls.work, "wide")
        tc.run_gen("llama", cls.wide, "--shards", 2, "--layers", 2, "--hidden", 1024)
        cls.refs = {cls.llama: cls.ref, cls.wide: read_reference(cls.wide)}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def layer(self, i):
        pre = "model.layers.%d." % i
        return sorted(n for n in self.ref if n.startswith(pre))

    def assert_freed(self, m, what, within=0.0):
        """Nothing held in the fake driver (within @within seconds: a
        cancelled job whose copies are still queued reads as cancelled
        after a grace of 1 s, and gives its memory back once its threads
        are back)."""
        deadline = time.monotonic() + within
        while True:
            st = m.fake()
            live = {k: st.get(k, 0) for k in LIVE}
            if not any(live.values()) or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self.assertEqual(live, {k: 0 for k in LIVE},
                         "%s: the fake driver still holds %s" % (what, st))

    def assert_device_bytes(self, m, names, device):
        for n in names:
            kv = m.xattr(n)
            self.assertEqual(int(kv["device"]), device, n)
            self.assertEqual(int(kv["size"]), len(self.ref[n]), n)
            self.assertEqual(ipc_read(kv), self.ref[n], n)

    def assert_serving(self, m):
        with open(m.tensor("model.norm.weight"), "rb") as f:
            self.assertEqual(f.read(), self.refs[m.source]["model.norm.weight"])
        self.assertIn("counters", m.status())

    def unmount_clean(self, m):
        self.assertTrue(m.unmount(), "fusermount3 -u kept failing")
        rc = m.wait_exit()
        self.assertEqual(rc, 0, m.stderr())
        self.assert_freed(m, "after unmount")

    # ------------------------------------------------------------- bytes

    def test_prefetch_to_two_devices_read_by_another_process(self):
        m = FakeMount(self, self.llama)
        c = m.control()
        j0 = c.prefetch("model.layers.0", target=CUDA, device=0, threads=3, chunk=4096)
        j1 = c.prefetch("model.layers.1\nmodel.norm", target=CUDA, device=1, threads=2)
        for j in (j0, j1):
            st = c.wait(j)
            self.assertEqual(st["state"], "done", st)
            self.assertEqual(st["bytes_done"], st["bytes_total"])
        self.assert_device_bytes(m, self.layer(0), 0)
        self.assert_device_bytes(m, self.layer(1) + ["model.norm.weight"], 1)
        self.assertEqual(m.fake()["device_allocs"], 2)
        self.assertEqual([j["target"] for j in m.status()["jobs"]], ["cuda:0", "cuda:1"])
        # not on the device that was not asked
        with self.assertRaises(OSError) as cm:
            m.xattr(self.layer(2)[0])
        self.assertEqual(cm.exception.errno, errno.ENODATA)
        # evict per device: the other stays readable
        self.assertEqual(c.evict("model.layers.0", target=CUDA, device=1), 0)
        self.assertEqual(c.evict("model.layers.0", target=CUDA, device=0), len(self.layer(0)))
        self.assertEqual(m.fake()["device_allocs"], 1)
        with self.assertRaises(OSError) as cm:
            m.xattr(self.layer(0)[0])
        self.assertEqual(cm.exception.errno, errno.ENODATA)
        self.assert_device_bytes(m, self.layer(1), 1)
        self.assertEqual(c.evict("", target=CUDA, device=1), len(self.layer(1)) + 1)
        self.assert_freed(m, "after evicting everything")
        self.assert_serving(m)
        c.close()
        self.unmount_clean(m)

    def test_sliced_prefetch_bytes(self):
        m = FakeMount(self, self.llama)
        c = m.control()
        name = "model.layers.2.mlp.up_proj.weight"
        st = c.wait(c.prefetch(name, target=CUDA, device=1, slice=(0, 1, 2), chunk=4096))
        self.assertEqual(st["state"], "done", st)
        kv = m.xattr(name)
        half = len(self.ref[name]) // 2
        self.assertEqual(int(kv["size"]), half)
        self.assertEqual(ipc_read(kv), self.ref[name][half:])
        c.close()
        self.unmount_clean(m)

    def text_commands(self, m):
        """A function that writes one text command to @m's control file, returns the reply."""
        fd = os.open(m.p(".stfs", "control"), os.O_RDWR | os.O_CLOEXEC)
        self.addCleanup(os.close, fd)

        def cmd(text):
            self.assertEqual(os.write(fd, text.encode()), len(text))
            os.lseek(fd, 0, os.SEEK_SET)
            reply = os.read(fd, 4096).decode()
            tc.asan_settle()
            return reply
        return cmd

    def test_text_command_to_cuda1(self):
        m = FakeMount(self, self.llama, "-o", "rw")
        reply = self.text_commands(m)("prefetch model.layers.1 cuda:1 threads=2\n")
        mo = re.fullmatch(r"job (\d+)\n", reply)
        self.assertTrue(mo, reply)
        st = m.control().wait(int(mo.group(1)))
        self.assertEqual(st["state"], "done", st)
        self.assert_device_bytes(m, self.layer(1), 1)

    # --------------------------------------------------- jobs that stop

    def test_cancel_mid_job(self):
        m = FakeMount(self, self.wide, env=dict(FAKECUDA_DELAY_US="500"))
        c = m.control()
        job = c.prefetch("", target=CUDA, device=0, threads=1, chunk=4096)
        deadline = time.monotonic() + 10
        while c.status(job)["bytes_done"] == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        c.cancel(job)
        st = c.wait(job)
        self.assertEqual(st["state"], "cancelled", st)
        self.assertLess(st["bytes_done"], st["bytes_total"])
        self.assert_freed(m, "after cancel", within=20)
        with self.assertRaises(OSError):
            m.xattr("model.norm.weight")
        self.assertEqual(c.evict("", target=CUDA, device=0), 0)
        self.assert_serving(m)
        # and the device still works
        self.assertEqual(c.wait(c.prefetch("model.norm", target=CUDA, device=0))["state"], "done")
        c.close()
        self.unmount_clean(m)

    def test_unmount_with_jobs_running(self):
        m = FakeMount(self, self.wide, env=dict(FAKECUDA_DELAY_US="500"))
        c = m.control()
        jobs = [c.prefetch("", target=CUDA, device=d, threads=2, chunk=4096) for d in (0, 1)]
        for j in jobs:
            self.assertEqual(c.status(j)["state"], "running")
        c.close()
        self.unmount_clean(m)

    def test_live_jobs_are_bounded(self):
        # Each copy waits up to 0.2 s in the fake: a job of the small model
        # in 4 KiB chunks on one thread runs for seconds, so the 64 jobs
        # started by the loop all still run when the 65th is asked for.
        m = FakeMount(self, self.llama, env=dict(FAKECUDA_DELAY_US="200000"))
        c = m.control()
        threads0 = len(os.listdir("/proc/%d/task" % m.proc.pid))
        jobs, refused = [], 0
        for _ in range(100):
            try:
                jobs.append(c.prefetch("", target=CUDA, device=0, threads=1, chunk=4096))
            except OSError as e:
                self.assertEqual(e.errno, errno.EBUSY)
                refused += 1
        self.assertEqual((len(jobs), refused), (64, 36))
        err, nr, msg = c.reason()
        self.assertEqual((err, nr), (errno.EBUSY, 1))
        self.assertEqual(msg, "too many prefetch jobs running (64 at most): wait for one to "
                              "end or cancel one")
        # stfsctl says the same and exits 1
        r = subprocess.run([STFSCTL, "prefetch", m.path, "--to", "cuda:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.decode(), "stfsctl: prefetch: " + msg + "\n")
        # a job thread and the fake's stream thread each, plus libfuse's
        threads = len(os.listdir("/proc/%d/task" % m.proc.pid))
        self.assertLessEqual(threads, threads0 + 2 * 64 + tc.FUSE_WORKERS)
        for j in jobs:
            self.assertEqual(c.status(j)["state"], "running")
            c.cancel(j)
        for j in jobs:
            self.assertEqual(c.wait(j)["state"], "cancelled")
        self.assert_freed(m, "after cancelling 64 jobs", within=20)
        # ended jobs made room again
        st = c.wait(c.prefetch("model.norm", target=CUDA, device=0))
        self.assertEqual((st["state"], st["tensors"]), ("done", 1))
        c.close()
        self.unmount_clean(m)

    def test_chunk_size_and_pinned_staging_bounds(self):
        # chunk=1 used to plan one 64-byte chunk per model byte (2.7 GB for
        # this 40 MiB model: the ioctl blocked, then the job crawled). Now
        # chunks are whole pages, and a worker's ring holds 3 of them.
        m = FakeMount(self, self.wide, env=dict(FAKECUDA_DELAY_US="0"))
        c = m.control()
        t0 = time.monotonic()
        job = c.prefetch("", target=CUDA, device=0, threads=4, chunk=1)
        took = time.monotonic() - t0
        peak = 0
        while c.status(job)["state"] == "running":
            peak = max(peak, m.fake().get("pinned_bytes", 0))
            time.sleep(0.002)
        st = c.wait(job)
        print("\nchunk=1: ioctl %.3f s, job %.2f s, pinned at most %d bytes seen"
              % (took, st["elapsed_ns"] / 1e9, peak), file=sys.stderr)
        self.assertEqual(st["state"], "done", st)
        self.assertLess(took, 1.0)
        self.assertLessEqual(peak, 3 * 4 * 4096)
        name = "model.layers.1.mlp.down_proj.weight"
        self.assertEqual(ipc_read(m.xattr(name)), self.refs[self.wide][name])
        # one job pinning more than 1 GiB: refused, with the reason
        self.assertEqual(tc.job_errno(c.prefetch, "", target=CUDA, device=0, threads=64,
                                      chunk=8 << 20), errno.EINVAL)
        self.assertEqual(c.reason()[2], "64 threads of 8388608-byte chunks would pin 1536 MiB "
                         "of staging (3 x threads x chunk), more than 1024 MiB: ask for "
                         "smaller chunks or fewer threads")
        c.close()
        self.unmount_clean(m)
        # jobs that fit alone but not together: the second waits for the first
        m = FakeMount(self, self.llama, env=dict(FAKECUDA_DELAY_US="200000"))
        c = m.control()
        first = c.prefetch("", target=CUDA, device=0, threads=64, chunk=4 << 20)
        self.assertEqual(tc.job_errno(c.prefetch, "", target=CUDA, device=1, threads=64,
                                      chunk=4 << 20), errno.EBUSY)
        self.assertRegex(c.reason()[2], r"^running CUDA jobs pin 768 MiB of staging; this one "
                                        r"would pin 768 MiB more, past the bound of 1024 MiB")
        c.cancel(first)
        c.wait(first)
        # its staging counts until its threads are back (after the wait,
        # when they took more than the cancel's grace of 1 s)
        deadline = time.monotonic() + 20
        while True:
            try:
                second = c.prefetch("model.norm", target=CUDA, device=1, threads=64,
                                    chunk=4 << 20)
                break
            except OSError as e:
                self.assertEqual(e.errno, errno.EBUSY)
                self.assertLess(time.monotonic(), deadline, "the first job's staging stays")
                time.sleep(0.05)
        st = c.wait(second)
        self.assertEqual(st["state"], "done")
        c.close()
        self.unmount_clean(m)

    # --------------------------------------- the same tensors, twice

    def test_repeated_and_overlapping_prefetch(self):
        """What is resident is skipped: no second allocation of the same bytes."""
        m = FakeMount(self, self.llama)
        c = m.control()
        l0, l1 = "model.layers.0", "model.layers.1"
        self.assertEqual(c.wait(c.prefetch(l0, target=CUDA, device=0))["state"], "done")
        st = c.wait(c.prefetch(l0, target=CUDA, device=0))
        self.assertEqual((st["state"], st["tensors"]), ("done", 0))
        self.assertEqual(m.fake()["total_device_allocs"], 1)
        st = c.wait(c.prefetch(l0 + "\n" + l1, target=CUDA, device=0))
        self.assertEqual((st["state"], st["tensors"]), ("done", len(self.layer(1))))
        self.assertEqual(m.fake()["device_allocs"], 2)
        self.assert_device_bytes(m, self.layer(0) + self.layer(1), 0)
        self.assertEqual(c.evict(l0 + "\n" + l1, target=CUDA, device=0),
                         len(self.layer(0)) + len(self.layer(1)))
        self.assert_freed(m, "after evicting both")
        c.close()
        self.unmount_clean(m)

    # Several jobs may hold the same tensors: a slice of them, another
    # device, or two jobs at once. Each keeps its own record; when one
    # replaced another's, evict could never reach the earlier allocation.
    def test_same_tensors_in_several_jobs_stay_evictable(self):
        """Every allocation stays reachable: evicting everything frees all device memory."""
        m = FakeMount(self, self.llama)
        c = m.control()
        l0 = "model.layers.0"
        for kw in (dict(), dict(slice=(0, 0, 2)), dict(device=1)):
            kw = dict(dict(target=CUDA, device=0), **kw)
            self.assertEqual(c.wait(c.prefetch(l0, **kw))["state"], "done", kw)
        # two jobs of the same tensors at once
        js = [c.prefetch("model.layers.2", target=CUDA, device=0, chunk=4096) for _ in range(2)]
        for j in js:
            self.assertEqual(c.wait(j)["state"], "done")
        self.assertEqual(m.fake()["device_allocs"], 5)
        for d in (0, 1):
            c.evict("", target=CUDA, device=d)
        self.assert_freed(m, "after evicting every tensor from both devices")
        c.close()
        self.unmount_clean(m)

    # ------------------------------------------- staging: ring, direct, auto

    def copies(self, m):
        st = m.fake()
        return st.get("copies_registered", 0), st.get("copies_pinned", 0)

    def test_direct_staging_bytes_and_fallback(self):
        for env, mixed in ((None, False), (dict(FAKECUDA_FAIL="cuMemHostRegister_v2:1"), True)):
            with self.subTest(env=env):
                m = FakeMount(self, self.llama, env=env)
                c = m.control()
                st = c.wait(c.prefetch("", target=CUDA, device=0, chunk=4096, flags=DIRECT))
                self.assertEqual(st["state"], "done", st)
                self.assert_device_bytes(m, sorted(self.ref), 0)
                direct, pinned = self.copies(m)
                self.assertGreater(direct, 0)
                # the first shard's registration refused: it went through the ring
                self.assertEqual(pinned > 0, mixed, m.fake())
                self.assertEqual(m.fake()["registered"], 0, "registration outlived its job")
                self.assertEqual(m.fake()["total_registers"], 1 if mixed else 2)
                c.evict("", target=CUDA, device=0)
                self.assert_freed(m, "after a direct job")
                c.close()
                self.unmount_clean(m)

    def test_auto_staging_follows_residency(self):
        m = FakeMount(self, self.wide)
        c = m.control()
        ref = self.refs[self.wide]
        # cold: nothing of the source in the page cache -> the ring
        for fn in os.listdir(self.wide):
            fd = os.open(os.path.join(self.wide, fn), os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        st = c.wait(c.prefetch("model.layers.1", target=CUDA, device=0, flags=AUTO))
        self.assertEqual(st["state"], "done", st)
        self.assertEqual(self.copies(m)[0], 0, "a cold source was copied without staging")
        names = sorted(n for n in ref if n.startswith("model.layers.1."))
        for n in names[:3]:
            self.assertEqual(ipc_read(m.xattr(n)), ref[n], n)
        self.assertEqual(c.evict("model.layers.1", target=CUDA, device=0), len(names))
        # warm (the source read directly; a host prefetch would leave it cold
        # with -o cache=single): straight from the page cache
        for fn in os.listdir(self.wide):
            with open(os.path.join(self.wide, fn), "rb") as f:
                while f.read(1 << 20):
                    pass
        pinned = self.copies(m)[1]
        st = c.wait(c.prefetch("model.layers.1", target=CUDA, device=0, flags=AUTO))
        self.assertEqual(st["state"], "done", st)
        self.assertGreater(self.copies(m)[0], 0)
        self.assertEqual(self.copies(m)[1], pinned, "a resident source went through the ring")
        for n in names[:3]:
            self.assertEqual(ipc_read(m.xattr(n)), ref[n], n)
        c.close()
        self.unmount_clean(m)

    def test_staging_option_forms(self):
        m = FakeMount(self, self.llama, "-o", "rw")
        cmd = self.text_commands(m)
        c = m.control()
        for i, mode in enumerate(("ring", "direct", "auto")):
            r = cmd("prefetch model.layers.%d cuda:1 staging=%s" % (i, mode))
            self.assertRegex(r, r"^job \d+\n$", mode)
            self.assertEqual(c.wait(int(r.split()[1]))["state"], "done")
            self.assert_device_bytes(m, self.layer(i), 1)
        self.assertGreater(self.copies(m)[0], 0)
        njobs = len(m.status()["jobs"])
        for bad in ("prefetch model cuda:0 staging=fast", "prefetch model cuda:0 staging=",
                    "prefetch model staging=direct"):  # host: no staging
            self.assertRegex(cmd(bad), r"^error: [^\n]+\n$", bad)
        for flags, target in ((3, CUDA), (4, CUDA), (1 << 31, CUDA), (DIRECT, tc.HOST)):
            self.assertEqual(tc.job_errno(c.prefetch, "model", target=target, flags=flags),
                             errno.EINVAL, flags)
        self.assertEqual(len(m.status()["jobs"]), njobs)
        # stfsctl
        r = subprocess.run([STFSCTL, "prefetch", m.path, "model.norm", "--to", "cuda:0",
                            "--staging", "direct", "--wait"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assert_device_bytes(m, ["model.norm.weight"], 0)
        r = subprocess.run([STFSCTL, "prefetch", m.path, "--to", "cuda:0", "--staging", "x"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 2, r.stdout)

    # ------------------------------------------------------------ faults

    def assert_fails_cleanly(self, env, message, device=0, source=None):
        m = FakeMount(self, source or self.wide, env=env)
        c = m.control()
        st = c.wait(c.prefetch("", target=CUDA, device=device, threads=2, chunk=65536))
        self.assertEqual(st["state"], "failed", (env, st))
        self.assertNotEqual(st["error"], 0)
        self.assertRegex(st["message"], message)
        self.assertIn(st["message"], m.status()["jobs"][0]["error"])
        self.assert_freed(m, "after %s" % env)
        with self.assertRaises(OSError) as cm:
            m.xattr("model.norm.weight")
        self.assertEqual(cm.exception.errno, errno.ENODATA)
        self.assertEqual(c.evict("", target=CUDA, device=device), 0)
        self.assert_serving(m)
        return m, c

    def test_out_of_device_memory(self):
        m, c = self.assert_fails_cleanly(dict(FAKECUDA_MEM="1M"),
                                         r"^cuda:0: cuMemAlloc failed: out of memory$")
        # what fits still goes
        self.assertEqual(c.wait(c.prefetch("model.norm", target=CUDA, device=0))["state"], "done")
        c.close()
        self.unmount_clean(m)

    def test_device_lost_mid_job(self):
        m, c = self.assert_fails_cleanly(dict(FAKECUDA_LOST="0:20"),
                                         r"^cuda:0: .*busy or unavailable$")
        # the other device goes on
        st = c.wait(c.prefetch("model.norm", target=CUDA, device=1))
        self.assertEqual(st["state"], "done", st)
        st = c.wait(c.prefetch("model.norm", target=CUDA, device=0))
        self.assertEqual(st["state"], "failed", st)
        c.close()
        self.unmount_clean(m)

    def test_nth_call_of_an_entry_point_fails(self):
        for call, n, msg in (("cuDevicePrimaryCtxRetain", 1, "context failed"),
                             ("cuMemHostAlloc", 2, "cuMemHostAlloc failed"),
                             ("cuStreamCreate", 2, "stream setup failed"),
                             ("cuEventCreate", 4, "stream setup failed"),
                             ("cuMemcpyHtoDAsync_v2", 7, "async copy failed"),
                             ("cuEventRecord", 9, "async copy failed"),
                             ("cuEventSynchronize", 5, "copy failed"),
                             ("cuStreamSynchronize", 1, "stream synchronize failed")):
            with self.subTest(call=call):
                m, c = self.assert_fails_cleanly(dict(FAKECUDA_FAIL="%s:%d" % (call, n)),
                                                 r"^cuda:0: %s: unknown error$" % msg)
                c.close()
                self.unmount_clean(m)

    def test_no_such_device(self):
        m, c = self.assert_fails_cleanly(dict(FAKECUDA_DEVICES="1"),
                                         r"^cuda:1: no such device \(1 CUDA devices\)$", device=1)
        c.close()
        self.unmount_clean(m)
        m, c = self.assert_fails_cleanly(dict(FAKECUDA_DEVICES="0"), r"^cuda:0: cuInit failed")
        c.close()
        self.unmount_clean(m)


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--stfs", required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("--fakecuda", required=True, help="directory of the fake libcuda.so.1")
    ap.add_argument("--ipc-read", required=True)
    ap.add_argument("--stfsctl", required=True)
    args, rest = ap.parse_known_args()
    tc.STFS = os.path.abspath(args.stfs)
    tc.GEN = os.path.abspath(args.gen)
    global FAKECUDA, IPC_READ, STFSCTL
    STFSCTL = os.path.abspath(args.stfsctl)
    FAKECUDA = os.path.abspath(args.fakecuda)
    IPC_READ = os.path.abspath(args.ipc_read)
    return stfstest.run_tests(rest)


if __name__ == "__main__":
    sys.exit(main())
