#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fault suite: a source that stalls (issue 15, "a sick source never holds
the whole daemon").

    python3 tests/fault/test_stall.py --stfs build/fs/stfs --gen tools/gen_model.py

Two stalling sources, the same cases on each: (1) a FUSE filesystem that
is always there: a lower stfs serves the model, and the stfs under test
mounts the lower mount's whole-model file (LOWER/model.safetensors);
SIGSTOP of the lower daemon stalls every read of a byte the lower mount's
page cache does not hold. (2) sshfs to a private sshd on 127.0.0.1
(sshfslib), the server's session stopped with SIGSTOP; skipped where sshd
or sshfs is missing. Either way stfs sees a source on FUSE, so its default
(-o async_reads=auto) serves data reads on its own threads.

- More concurrent uncached readers than FUSE worker threads during a
  stall: stat of a name never looked up, a listing never made, getxattr
  and .stfs/status answer within a few seconds; the reads fail with EIO
  after -o read_timeout; after SIGCONT every byte is right.
- A stall shorter than read_timeout fails nothing.
- SIGTERM during a stall unmounts within a bound; the readers get an error,
  not a hang; the daemon exits 0. Twice: without fusectl (the close of the
  device at exit ends the connection) and with fusectl mounted at
  /sys/fs/fuse/connections (the daemon aborts the connection through it).
- SIGTERM while the periodic shard check waits on the stalled source.
- cancel of a prefetch stuck on the stalled source ends it within a second
  or so; a new job is accepted; the stuck threads come back after the stall
  and are reaped.
- The same path forced on a local source (-o async_reads=on) serves every
  byte, and the options are checked.

The suite runs in a mount namespace of its own (private_mounts), so that a
test can mount or unmount fusectl without changing the machine's or that of
a suite running beside it: the SIGTERM tests pin it (where the namespace
cannot be had, the one without fusectl runs as the machine is, and the one
with it skips).

Exits 77 (SKIP) without /dev/fuse or fusermount3; the sshfs cases skip without
sshd or sshfs.
"""

import ctypes
import errno
import os
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import sshfslib  # noqa: E402
from faultlib import (CANCELLED, DONE, RUNNING, FaultCase, errname, fusermount, mounted, read_model,  # noqa: E402
                      run_gen, status_doc)

READERS = 16          # concurrent readers, against ...
WORKERS = 4           # ... this many FUSE worker threads (-o max_threads)
ANSWER_WITHIN = 3.0   # seconds a metadata request may take during a stall
TIMEOUT = 2           # -o read_timeout of the upper mount, seconds
UNMOUNT_WITHIN = 6.0  # after SIGTERM during a stall
CANCEL_GRACE = 1.0    # STF_JOB_CANCEL_GRACE_MS: a cancelled job stuck on the source ends then
JOB_THREAD = "stfs-prefetch"  # STF_JOB_THREAD_NAME
FUSECTL = "/sys/fs/fuse/connections"    # FUSECTL_DIR of fs/main.c

LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
NO_PRIVATE_MOUNTS = "not tried"     # why the suite has no mount namespace of its own


def libc_call(what, ret):
    """None when the libc call @what returned 0, else "@what: strerror"."""
    return None if ret == 0 else "%s: %s" % (what, os.strerror(ctypes.get_errno()))


def private_mounts():
    """Move this process into a mount namespace of its own whose mounts
    propagate nowhere. Before any thread starts: unshare moves the calling
    thread only (threads and children started later follow it). None, or
    why not."""
    return (libc_call("unshare(CLONE_NEWNS)", LIBC.unshare(CLONE_NEWNS)) or
            libc_call("making / private", LIBC.mount(b"none", b"/", None, MS_REC | MS_PRIVATE,
                                                      None)))


def fusectl_mounted():
    with open("/proc/self/mountinfo") as f:
        return any(ln.split()[4] == FUSECTL and ln.split(" - ")[1].split()[0] == "fusectl"
                   for ln in f)


def mount_fusectl():
    return libc_call("mount -t fusectl", LIBC.mount(b"fusectl", FUSECTL.encode(), b"fusectl",
                                                    0, None))


def umount_fusectl():
    return libc_call("umount " + FUSECTL, LIBC.umount2(FUSECTL.encode(), 0))


def job_threads(pid):
    """How many threads of process @pid are prefetch job threads."""
    n = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                n += f.read().strip() == JOB_THREAD
        except OSError:
            pass    # the thread ended meanwhile
    return n


def timed(fn, *args, within):
    """(result, None, seconds) of fn(*args) run on a thread, or (None,
    "hung", within) when it has not returned within @within seconds (the
    thread is left; it ends when the stall does), or (None, errno name,
    seconds)."""
    out = []

    def run():
        try:
            out.append((fn(*args), None))
        except OSError as e:
            out.append((None, errname(e.errno)))
    t0 = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(within)
    if not out:
        return None, "hung", within
    return out[0][0], out[0][1], time.monotonic() - t0


class Reader(threading.Thread):
    """Read @path from start to end in 1 MiB preads; .err the errno name
    of the first failure (None when every byte came), .took seconds."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.err = None
        self.data = None
        self.took = None

    def run(self):
        t0 = time.monotonic()
        out = bytearray()
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                while True:
                    b = os.pread(fd, 1 << 20, len(out))
                    if not b:
                        break
                    out += b
            finally:
                os.close(fd)
            self.data = bytes(out)
        except OSError as e:
            self.err = errname(e.errno)
        self.took = time.monotonic() - t0


def gen_model(path):
    """One shard of ~30 MB: 16+ tensors far from the header, none of them in
    a page cache after stfs read the header."""
    run_gen("llama", path, "--shards", 1, "--layers", 6, "--hidden", 512)
    tensors, _ = read_model(path)
    big = sorted((t for t in tensors if t.begin > (4 << 20)), key=lambda t: -len(t.data))
    return tensors, big


class Scenarios:
    """The stall cases, for a FaultCase with .tensors, .big (tensors far
    from the header, largest first) and three methods: source() the path of
    the shard on the stallable filesystem, fresh for each test; stall();
    resume() (also registered as a cleanup by stall)."""

    def sigterm_unmounts(self, upper):
        """SIGTERM the daemon of @upper; it must unmount within
        UNMOUNT_WITHIN. Returns when the signal was sent (monotonic)."""
        t0 = time.monotonic()
        upper.proc.send_signal(signal.SIGTERM)
        while mounted(upper.path) and time.monotonic() - t0 < UNMOUNT_WITHIN:
            time.sleep(0.05)
        took = time.monotonic() - t0
        self.assertFalse(mounted(upper.path), "still mounted %.0f s after SIGTERM" % took)
        return t0

    def start_readers(self, upper, tensors):
        readers = [Reader(upper.p(t.path)) for t in tensors]
        for r in readers:
            r.start()
        return readers

    def test_metadata_answers_while_reads_wait(self):
        """16 uncached readers, 4 FUSE workers, the source stalled: every
        metadata request answers, every read fails with EIO after the
        timeout, and after the stall every byte is right. Before the async
        reads every worker sat in the kernel's copy and all four checks
        hung."""
        self.assertGreaterEqual(len(self.big), READERS)
        upper = self.mount(self.source(), "max_threads=%d" % WORKERS,
                           "read_timeout=%d" % TIMEOUT)
        fresh = self.big[-1]                   # never looked up before the stall
        listed = os.path.dirname(upper.p(self.big[-2].path))
        self.stall()
        t0 = time.monotonic()
        readers = self.start_readers(upper, self.big[:READERS])
        time.sleep(0.5)                        # every worker would be taken by now
        checks = {
            "stat": (os.stat, upper.p(fresh.path)),
            "listdir": (os.listdir, listed),
            "getxattr": (os.getxattr, upper.p(self.big[0].path), "user.safetensors.dtype"),
            "status": (status_doc, upper.path),
        }
        slow = {}
        for what, (fn, *args) in checks.items():
            res, err, took = timed(fn, *args, within=ANSWER_WITHIN)
            if err is not None:
                slow[what] = "%s after %.1f s" % (err, took)
        self.assertEqual(slow, {}, "metadata during a stall")
        bound = 2 * TIMEOUT + 4.0    # the kernel retries a failed readahead once
        for r in readers:
            r.join(max(0.1, t0 + bound - time.monotonic()))
        waiting = [r.path for r in readers if r.is_alive()]
        self.assertEqual(waiting, [], "readers still waiting %.0f s into the stall" % bound)
        self.assertEqual({r.err for r in readers}, {"EIO"})
        self.assertIn("a read waited %d s for the source: EIO" % TIMEOUT, upper.stderr())
        self.assertGreaterEqual(status_doc(upper.path)["counters"]["read_timeouts"], READERS)
        self.resume()
        self.assertTensors(upper, self.tensors)
        self.unmount(upper)

    def test_short_stall_fails_nothing(self):
        upper = self.mount(self.source(), "read_timeout=30")
        self.stall()
        readers = self.start_readers(upper, self.big[:8])
        time.sleep(1.0)
        self.assertTrue(all(r.is_alive() for r in readers), "reads waited for the source")
        self.resume()
        for r in readers:
            r.join(30)
        got = {r.path: (r.err, r.data) for r in readers}
        want = {upper.p(t.path): (None, t.data) for t in self.big[:8]}
        self.assertTrue(got == want, "a read failed or differs after a 1 s stall")
        self.unmount(upper)

    def pin_fusectl(self, want):
        """fusectl mounted at FUSECTL (@want true) or not for this test, in
        the suite's mount namespace, and put back as it was at cleanup (after
        the daemons' cleanups). None, or why it could not be done (then it is
        as the machine has it)."""
        if fusectl_mounted() == want:
            return None
        if NO_PRIVATE_MOUNTS:
            return "no mount namespace of our own (%s)" % NO_PRIVATE_MOUNTS
        why = mount_fusectl() if want else umount_fusectl()
        if why is None:
            self.addCleanup(umount_fusectl if want else mount_fusectl)
        return why

    def sigterm_during_stall(self, fusectl):
        """SIGTERM with more readers than FUSE workers waiting on a stalled
        source: unmounted within a bound (it waited for the source before),
        every reader answered while the source is still stalled: ECONNABORTED
        or ENOTCONN (the read in flight gets EIO at exit, the kernel retries
        it, and the retry is cut with the connection), exit status 0, nothing
        left after the stall. @fusectl: whether fusectl is mounted; the
        daemon must have aborted the right connection through it (one line
        logged), else said it could not."""
        upper = self.mount(self.source(), "max_threads=%d" % WORKERS, "read_timeout=60")
        conn = faultlib.connection_id(upper.path)
        abort = "%s/%d/abort" % (FUSECTL, conn)
        self.stall()
        readers = self.start_readers(upper, self.big[:READERS])
        time.sleep(1.0)
        self.assertTrue(all(r.is_alive() for r in readers), "reads waited for the source")
        t0 = self.sigterm_unmounts(upper)
        for r in readers:
            r.join(max(0.1, t0 + UNMOUNT_WITHIN - time.monotonic()))
        self.assertEqual([r.path for r in readers if r.is_alive()], [],
                         "readers still waiting after the unmount")
        errs = {r.err for r in readers}
        log = upper.stderr()
        self.assertLessEqual(errs, {"ECONNABORTED", "ENOTCONN"}, log)
        if fusectl:
            self.assertIn("connection %d aborted through %s\n" % (conn, abort), log)
        else:
            self.assertIn("fusectl is not mounted at %s: " % FUSECTL, log)
        self.resume()
        rc = self.wait_exit(upper, "SIGTERM")
        upper.done = True
        self.assertEqual(rc, 0, log)
        if fusectl:     # the connection is gone too
            self.assertFalse(os.path.exists(os.path.dirname(abort)), abort)
        print("readers got %s; fusectl %s" % (sorted(errs), "mounted" if fusectl else "not mounted"))

    def test_sigterm_during_stall(self):
        """Without fusectl (pinned so where the suite has a mount namespace of
        its own): the close of the device at exit ends the connection."""
        self.pin_fusectl(False)
        self.sigterm_during_stall(fusectl_mounted())

    def test_sigterm_aborts_through_fusectl(self):
        """With fusectl mounted: the daemon aborts its connection through
        FUSECTL/N/abort (never run in a test before: fusectl is not mounted
        on the test machines)."""
        why = self.pin_fusectl(True)
        if why:
            self.skipTest("fusectl cannot be mounted at %s: %s" % (FUSECTL, why))
        self.sigterm_during_stall(True)

    def test_fusermount_u_during_stall(self):
        """fusermount3 -u with readers waiting on a stalled source answers
        at once (EBUSY while they hold their files: nothing is lost), -u -z
        detaches the mount at once, the readers get EIO at read_timeout, and
        the daemon exits 0 once the source answers. Before the async reads a
        -u waited in D state until the source answered."""
        upper = self.mount(self.source(), "read_timeout=%d" % TIMEOUT)
        self.stall()
        readers = self.start_readers(upper, self.big[:8])
        time.sleep(1.0)
        self.assertTrue(all(r.is_alive() for r in readers), "reads waited for the source")
        for args in (("-u",), ("-u", "-z")):
            r, err, took = timed(fusermount, *args, upper.path, within=ANSWER_WITHIN)
            self.assertIsNone(err, "fusermount3 %s during a stall: %s after %.1f s"
                              % (" ".join(args), err, took))
            if not mounted(upper.path):
                break
            self.assertIn("busy", r.stdout.decode(), "fusermount3 %s" % " ".join(args))
        self.assertFalse(mounted(upper.path), "still mounted after fusermount3 -u -z")
        t0 = time.monotonic()
        bound = 2 * TIMEOUT + 4.0    # the kernel retries a failed readahead once
        for r in readers:
            r.join(max(0.1, t0 + bound - time.monotonic()))
        self.assertEqual([r.path for r in readers if r.is_alive()], [],
                         "readers still waiting %.0f s after the unmount" % bound)
        self.assertLessEqual({r.err for r in readers}, {"EIO", "ECONNABORTED", "ENOTCONN"})
        self.resume()
        rc = self.wait_exit(upper, "fusermount3 -u -z")
        upper.done = True
        self.assertEqual(rc, 0, upper.stderr())

    def test_prefetch_during_stall(self):
        """A host prefetch whose chunks wait on a stalled source: cancel and
        .stfs/status answer at once, and SIGTERM unmounts within the bound
        (a chunk copied by the kernel from the stalled mapping held the
        unmount until the source answered)."""
        upper = self.mount(self.source(), "read_timeout=60")
        c = self.control(upper)
        self.stall()
        job = c.prefetch("", threads=2)
        time.sleep(1.0)
        self.assertEqual(c.status(job)["state"], RUNNING, "the job waits on the source")
        _, err, took = timed(c.cancel, job, within=ANSWER_WITHIN)
        self.assertIsNone(err, "cancel during a stall: %s after %.1f s" % (err, took))
        _, err, took = timed(status_doc, upper.path, within=ANSWER_WITHIN)
        self.assertIsNone(err, ".stfs/status during a stall: %s after %.1f s" % (err, took))
        t0 = self.sigterm_unmounts(upper)
        self.resume()
        rc = self.wait_exit(upper, "SIGTERM")
        upper.done = True
        self.assertEqual(rc, 0, upper.stderr())


    def test_sigterm_with_check_stuck(self):
        """The periodic shard check (-o check_interval) waits on the stalled
        source: SIGTERM still unmounts, and the daemon exits 0, within the
        bound, the source still stalled (stf_watch_free gives a stuck check
        2 s, then leaves it). The lower stfs holds the check's statx; sshfs
        answers it from its attribute cache (dcache_timeout), so there only
        the reads wait."""
        upper = self.mount(self.source(), "check_interval=0.1")
        self.stall()
        time.sleep(0.5)     # a check asks the stalled source by now
        t0 = self.sigterm_unmounts(upper)
        if "ASAN_OPTIONS" in os.environ:
            # LeakSanitizer stops every thread at exit (ptrace), and a thread
            # in a FUSE request cannot stop: under ASan the exit waits for
            # the source; the plain build checks the bound
            self.resume()
            self.assertEqual(self.wait_exit(upper, "SIGTERM"), 0, upper.stderr())
            upper.done = True
            return
        # and gone, the source still stalled
        try:
            rc = upper.proc.wait(max(0.1, t0 + UNMOUNT_WITHIN - time.monotonic()))
        except subprocess.TimeoutExpired:
            rc = "still running"
        took = time.monotonic() - t0
        self.resume()
        self.wait_exit(upper, "SIGTERM")
        upper.done = True
        self.assertEqual(rc, 0, "%.1f s after SIGTERM; stderr:\n%s" % (took, upper.stderr()))
        print("exit %.1f s after SIGTERM, the source stalled" % took)

    def cancel_stuck(self, c, job):
        """Cancel @job, which waits on the stalled source: it must read as
        cancelled after the grace, and not much later. Returns the seconds
        it took."""
        t0 = time.monotonic()
        c.cancel(job)
        while c.status(job)["state"] == RUNNING:
            self.assertLess(time.monotonic() - t0, CANCEL_GRACE + 2.0,
                            "a cancelled job stuck on the source still runs")
            time.sleep(0.02)
        took = time.monotonic() - t0
        self.assertEqual(c.status(job)["state"], CANCELLED)
        self.assertGreaterEqual(took, CANCEL_GRACE - 0.1)
        return took

    def test_cancel_stuck_prefetch(self):
        """A host prefetch whose chunks wait on a stalled source, cancelled:
        its status says cancelled within the grace, a new job (of a tensor
        the source gave before the stall) is accepted and done; after the
        stall its threads come back and are reaped, and the daemon exits 0.
        Before, the job stayed running until the source answered."""
        upper = self.mount(self.source(), "read_timeout=60")
        ready = self.big[-1]
        self.assertBytes(self.read_errno(upper.p(ready.path))[0], ready.data, ready.name)
        c = self.control(upper)
        self.stall()
        job = c.prefetch("", threads=2)
        time.sleep(1.0)
        self.assertEqual(c.status(job)["state"], RUNNING, "the job waits on the source")
        self.assertEqual(job_threads(upper.proc.pid), 2)
        took = self.cancel_stuck(c, job)
        st = self.wait_job(c, c.prefetch(ready.name, threads=1), timeout=ANSWER_WITHIN)
        self.assertEqual(st["state"], DONE, "a new job during the stall: %r" % st)
        self.assertEqual(job_threads(upper.proc.pid), 2, "the stuck threads")
        self.resume()
        deadline = time.monotonic() + 20
        while job_threads(upper.proc.pid):
            self.assertLess(time.monotonic(), deadline, "stuck threads never came back")
            status_doc(upper.path)      # reaps what has finished
            time.sleep(0.05)
        self.assertEqual(c.status(job)["state"], CANCELLED, "stays cancelled")
        print("cancel of a stuck job: cancelled after %.2f s" % took)
        c.close()
        self.unmount(upper)
        self.assertNotIn("still wait", upper.stderr())


    def test_cancel_stuck_cuda_prefetch(self):
        """The same for a CUDA prefetch (the fake driver; the ring's pread
        waits on the source): cancelled within the grace; after the stall
        its threads come back and it gives back its device memory and
        staging."""
        if faultlib.FAKECUDA is None:
            self.skipTest("the CUDA target is not built")
        stats = os.path.join(self.tmp, "fakecuda-stall.json")
        with faultlib.stfstest.environ(**faultlib.fakecuda_env(stats)):
            upper = self.mount(self.source(), "read_timeout=60")
        c = self.control(upper)
        self.stall()
        job = c.prefetch("", threads=2, target=1)
        time.sleep(1.0)
        self.assertEqual(c.status(job)["state"], RUNNING, "the job waits on the source")
        self.assertTrue(faultlib.fake_live(stats).get("device_allocs"))
        self.cancel_stuck(c, job)
        self.resume()
        deadline = time.monotonic() + 20
        while job_threads(upper.proc.pid) or any(faultlib.fake_live(stats).values()):
            self.assertLess(time.monotonic(), deadline, "threads %d, the fake driver holds %r"
                            % (job_threads(upper.proc.pid), faultlib.fake_live(stats)))
            status_doc(upper.path)      # reaps what has finished
            time.sleep(0.05)
        c.close()
        self.unmount(upper)


class StallTest(Scenarios, FaultCase):
    """The source: a lower stfs's whole-model file; the stall: SIGSTOP of
    the lower daemon."""

    @classmethod
    def prepare(cls):
        cls.model = os.path.join(cls.tmp, "model")
        cls.tensors, cls.big = gen_model(cls.model)

    def source(self):
        # passthrough=off: the lower daemon itself serves every byte
        self.lower = self.mount(self.model, "listviews", "readahead_kb=0", "passthrough=off")
        return self.lower.p("model.safetensors")

    def stall(self):
        self.lower.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(self.resume)    # runs first: never unmount a stopped daemon

    def resume(self):
        if self.lower.proc.poll() is None:
            self.lower.proc.send_signal(signal.SIGCONT)


class SshfsStallTest(Scenarios, sshfslib.SshfsCase):
    """The source: the shard on sshfs to a private sshd on 127.0.0.1; the
    stall: SIGSTOP of the server's session. Keep-alives that would drop a
    frozen connection after 3 s (and reconnect) are turned off here."""

    sshfs_opts = ("ServerAliveCountMax=100000",)

    @classmethod
    def prepare_export(cls):
        cls.model = os.path.join(cls.export, "model")
        cls.tensors, cls.big = gen_model(cls.model)

    def source(self):
        return os.path.join(self.remote, "model", "model.safetensors")

    def stall(self):
        self.assertGreater(self.server.stall(), 0, "no ssh session to stall")
        self.addCleanup(self.server.resume)

    def resume(self):
        self.server.resume()


class LocalTest(FaultCase):
    @classmethod
    def prepare(cls):
        cls.model = os.path.join(cls.tmp, "model")
        cls.tensors, cls.big = gen_model(cls.model)

    def test_forced_async_on_local_source(self):
        """-o async_reads=on over a local file: every byte of every tensor
        and of ranges that start and end inside tensors and cross them."""
        m = self.mount(self.model, "async_reads=on", "data_threads=2")
        self.assertTensors(m, self.tensors)
        self.assertGreaterEqual(status_doc(m.path)["counters"]["async_reads"],
                                len(self.tensors))
        # a view of many extents (header + every tensor, reordered): the same
        # bytes as the zero-copy replies of a second mount
        ref = self.mount(self.model, "async_reads=off")
        for view in ((".stfs", "model.safetensors"), ("model", "layers", "1.part.safetensors")):
            got, err = self.read_errno(m.p(*view))
            want, werr = self.read_errno(ref.p(*view))
            self.assertEqual((err, werr), (None, None))
            self.assertBytes(got, want, "/".join(view))
        self.unmount(ref)
        t = self.big[0]
        got, err = self.read_errno(m.p(t.path), 12345, 3 << 20)
        self.assertIsNone(err)
        self.assertBytes(got, t.data[12345:12345 + (3 << 20)], "a range of " + t.name)
        self.unmount(m)

    def test_auto_local_stays_zero_copy(self):
        m = self.mount(self.model)
        self.assertTensors(m, self.tensors)
        counters = status_doc(m.path)["counters"]
        self.assertGreater(counters["read_requests"], 0)
        self.assertEqual(counters["async_reads"], 0)
        self.unmount(m)
        self.assertEqual(self.stderr_lines(m), [])

    def test_bad_options_refused(self):
        for opt in ("async_reads=sometimes", "read_timeout=-1", "read_timeout=x",
                    "data_threads=100000"):
            r = subprocess.run([faultlib.STFS, "-f", "-o", opt, self.model, self.tmp],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(r.returncode, 1, "%s: %s" % (opt, r.stdout.decode()))
            self.assertIn(opt.split("=")[0], r.stdout.decode())
            self.assertFalse(mounted(self.tmp))


if __name__ == "__main__":
    NO_PRIVATE_MOUNTS = private_mounts()
    sys.exit(faultlib.main())
