# SPDX-License-Identifier: Apache-2.0
"""Shared helpers of the fault suites (tests/fault/test_*.py).

The mount and unmount pattern is the one of tests/mount/test_mount.py,
copied rather than imported so that the suites do not break when that file
changes: a unique mkdtemp mount point per mount, the daemon started with -f
and its stderr captured to a file, mountinfo polled with a deadline, and an
unmount in addCleanup that ends in kill + ``fusermount3 -uz``. Because these
suites provoke hangs on purpose, no wait is unbounded: descriptors of the
mount are closed with a deadline, and a daemon that will not die even of
SIGKILL (a thread of it waiting on its own mount) has its connection
aborted through /sys/fs/fuse/connections where fusectl is mounted.

The reference reader is independent of stfs: shards are parsed here (8-byte
length, JSON header) and every tensor's bytes cut out of the file.
"""

import argparse
import errno
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import stfstest  # noqa: E402
from stfstest import fusermount, mounted  # noqa: E402,F401


def run_gen(preset, outdir, *args):
    stfstest.run_gen(GEN, preset, outdir, *args)

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))

STFS = os.environ.get("STFS_EXE", os.path.join(TOP, "build", "fs", "stfs"))
GEN = os.environ.get("STFS_GEN", os.path.join(TOP, "tools", "gen_model.py"))
STFSCTL = os.path.join(TOP, "build", "tools", "stfsctl")    # --stfsctl
FAKECUDA = None     # --fakecuda: the directory of tests/gpu's fake libcuda.so.1
IPC_READ = None     # --ipc-read: tests/gpu/ipc_read

MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0
PAGE = os.sysconf("SC_PAGE_SIZE")

# ------------------------------------------------------------ control ioctls
# Layouts of core/stfs_ioctl.h.

PF = "<IIiIQiIIIQ8192s"     # struct stfs_prefetch_req
ST = "<IIQiIiIQQQ256s"      # struct stfs_status_req
CA = "<IIQ"                 # struct stfs_cancel_req
EV = "<IIiIQ8192s"          # struct stfs_evict_req

QUEUED, RUNNING, DONE, FAILED, CANCELLED = range(5)
STATE_NAMES = ("queued", "running", "done", "failed", "cancelled")


def ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (0xB7 << 8) | nr


IOC_PREFETCH = ioc(3, 1, struct.calcsize(PF))
IOC_STATUS = ioc(3, 2, struct.calcsize(ST))
IOC_CANCEL = ioc(1, 3, struct.calcsize(CA))
IOC_EVICT = ioc(3, 4, struct.calcsize(EV))


def close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass    # ENOTCONN: the daemon is gone


def fakecuda_env(stats):
    """The environment (for stfstest.environ) of a daemon that loads the
    fake driver, its counters in the file @stats."""
    return dict(LD_LIBRARY_PATH=FAKECUDA, FAKECUDA_STATS=stats)


def fake_live(stats):
    """What the fake driver holds now (device and pinned allocations,
    registrations, streams, events), from its counters file @stats; {}
    before its first call."""
    try:
        with open(stats) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: doc.get(k, 0) for k in ("device_allocs", "pinned_allocs", "registered",
                                       "streams", "events")}


class Control:
    """The ioctls of MNT/.stfs/control, opened read-only. @mount: the Mount,
    whose daemon close() stops if it hangs (see FaultCase.close_fd)."""

    def __init__(self, mount):
        self.mount = mount
        self.fd = os.open(os.path.join(mount.path, ".stfs", "control"), os.O_RDONLY)

    def close(self):
        if self.fd >= 0:
            close_fd(self.fd, self.mount)
            self.fd = -1

    def prefetch(self, selection="", threads=0, chunk=0, target=0, device=0, staging=0):
        """Start a job: host (target 0) or cuda:@device (1) with STFS_STAGING_* @staging."""
        buf = bytearray(struct.pack(PF, 1, target, device, threads, chunk, -1, 0, 0, staging, 0,
                                    selection.encode()))
        fcntl.ioctl(self.fd, IOC_PREFETCH, buf, True)
        return struct.unpack(PF, buf)[9]

    def status(self, job):
        buf = bytearray(struct.pack(ST, 1, 0, job, 0, 0, 0, 0, 0, 0, 0, b""))
        fcntl.ioctl(self.fd, IOC_STATUS, buf, True)
        (_, state, _, error, _, _, tensors, total, done, elapsed,
         msg) = struct.unpack(ST, buf)
        return {"state": state, "error": error, "tensors": tensors, "total": total,
                "done": done, "elapsed_ns": elapsed,
                "message": msg.split(b"\0", 1)[0].decode("utf-8", "replace")}

    def cancel(self, job):
        fcntl.ioctl(self.fd, IOC_CANCEL, struct.pack(CA, 1, 0, job))

    def evict(self, selection=""):
        buf = bytearray(struct.pack(EV, 1, 0, 0, 0, 0, selection.encode()))
        fcntl.ioctl(self.fd, IOC_EVICT, buf, True)
        return struct.unpack(EV, buf)[4]


# ---------------------------------------------------------------- helpers


def mount_dev(path):
    """"MAJOR:MINOR" of the mount at @path in mountinfo, or None."""
    want = os.path.realpath(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            mp = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
            if os.fsdecode(mp) == want:
                return fields[2].decode()
    return None


def connection_id(path):
    """The id of the FUSE connection of the mount at @path, its name under
    /sys/fs/fuse/connections (the kernel's dev_t: MAJOR << 20 | MINOR), or
    None."""
    dev = mount_dev(path)
    if dev is None:
        return None
    major, minor = (int(n) for n in dev.split(":"))
    return major << 20 | minor


def abort_connection(path):
    """Abort the FUSE connection of the mount at @path through fusectl
    (/sys/fs/fuse/connections, where mounted and writable): the way out
    when a daemon is stuck waiting on its own mount. True if done."""
    conn = connection_id(path)
    if conn is None:
        return False
    ctl = "/sys/fs/fuse/connections/%d/abort" % conn
    try:
        with open(ctl, "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def force_stop(m):
    """End the daemon of Mount @m whatever state it is in, and the mount:
    SIGTERM, SIGKILL, then an abort of the connection, then a lazy
    unmount. Never spawns a process while the daemon may still hang (a
    child closing an inherited FUSE descriptor would wait on it)."""
    for sig, wait in ((signal.SIGTERM, EXIT_TIMEOUT), (signal.SIGKILL, 5.0)):
        if m.proc.poll() is not None:
            break
        m.proc.send_signal(sig)
        try:
            m.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    if m.proc.poll() is None:
        # killed but not reaped: a thread of it waits on its own mount
        abort_connection(m.path)
        try:
            m.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    if mounted(m.path):
        fusermount("-uz", m.path)


def close_fd(fd, m):
    """Close a descriptor of the mount of @m; if that hangs (FLUSH to a hung
    daemon), stop the daemon, which ends the wait."""
    t = threading.Thread(target=close_quietly, args=(fd,), daemon=True)
    t.start()
    t.join(5.0)
    if t.is_alive():
        force_stop(m)
        t.join(EXIT_TIMEOUT)


def proc_status(pid):
    """{VmRSS, RssAnon, RssFile (KiB), Threads} of process @pid from
    /proc/PID/status; {} when it is gone."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])
                elif k == "Threads":
                    out[k] = int(v)
    except OSError:
        return {}
    return out


def fmt_status(st):
    return "VmRSS %.1f MiB (anon %.1f, file %.1f), %d threads" % (
        st.get("VmRSS", 0) / 1024, st.get("RssAnon", 0) / 1024, st.get("RssFile", 0) / 1024,
        st.get("Threads", 0))


def errname(e):
    return errno.errorcode.get(e, str(e))


def try_errno(fn, *args):
    """The errno @fn raises, or None when it succeeds."""
    try:
        r = fn(*args)
    except OSError as e:
        return e.errno
    if isinstance(r, int) and fn is os.open:
        os.close(r)
    return None


class Tensor:
    __slots__ = ("name", "dtype", "shape", "shard", "begin", "end", "data", "path", "sha256")

    def __init__(self, name, dtype, shape, shard, begin, end, data):
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.shard = shard      # path of the shard file
        self.begin = begin      # absolute offsets of the data in the shard
        self.end = end
        self.data = data
        self.path = "/".join(name.split("."))   # plain names only (llama, tiny)

    def __repr__(self):
        return "Tensor(%r)" % self.name


def read_shard(path, keep=True):
    """Every tensor of one .safetensors file, cut out of its bytes (with
    @keep false: .data is None, .sha256 its digest)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    meta = hdr.pop("__metadata__", None)
    out = []
    for name, e in hdr.items():
        b, end = e["data_offsets"]
        data = raw[8 + n + b:8 + n + end]
        t = Tensor(name, e["dtype"], list(e["shape"]), path, 8 + n + b, 8 + n + end,
                   data if keep else None)
        t.sha256 = hashlib.sha256(data).hexdigest()
        out.append(t)
    out.sort(key=lambda t: t.begin)
    return out, meta


def read_model(model_dir, keep=True):
    """(tensors, shards) of a generated single-component model directory."""
    names = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    shards = [os.path.join(model_dir, f) for f in names]
    tensors = []
    for s in shards:
        tensors += read_shard(s, keep)[0]
    return tensors, shards


def status_doc(mnt):
    """/.stfs/status, parsed."""
    with open(os.path.join(mnt, ".stfs", "status"), "rb") as f:
        return json.loads(f.read())


def file_sha256(path):
    """(hex digest, None) of the file at @path read in 1 MiB pieces, or
    (None, errno)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    return h.hexdigest(), None
                h.update(b)
    except OSError as e:
        return None, e.errno


def dir_of(t):
    return t.path.rsplit("/", 1)[0] if "/" in t.path else ""


# ---------------------------------------------------------------- base class


Mount = stfstest.Mount


class FaultCase(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="stfs-fault-%s-" % cls.__name__)
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.prepare()

    @classmethod
    def prepare(cls):
        pass

    def start(self, source, *opts, mnt=None):
        """Start the daemon in the foreground, stderr to a file; the mount is
        always cleaned up."""
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

    def mount(self, source, *opts, mnt=None):
        m = self.start(source, *opts, mnt=mnt)
        self.wait_mounted(m)
        return m

    def wait_mounted(self, m):
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while True:
            rc = m.proc.poll()
            if rc is not None:
                self.fail("stfs exited with status %d before mounting %s; stderr:\n%s"
                          % (rc, m.path, m.stderr()))
            if mounted(m.path) and os.path.ismount(m.path):
                return
            if time.monotonic() > deadline:
                self.fail("%s not mounted after %.0fs; stderr:\n%s"
                          % (m.path, MOUNT_TIMEOUT, m.stderr()))
            time.sleep(0.02)

    def wait_exit(self, m, what):
        """The daemon's exit status, within EXIT_TIMEOUT."""
        try:
            rc = m.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("stfs did not exit within %.0fs after %s; stderr:\n%s"
                      % (EXIT_TIMEOUT, what, m.stderr()))
        return rc

    def unmount(self, m):
        """fusermount3 -u; the daemon must exit 0 and the mount be gone."""
        self.assertIsNone(m.proc.poll(), "stfs died before the unmount; stderr:\n" + m.stderr())
        r = fusermount("-u", m.path)
        self.assertEqual(r.returncode, 0, "fusermount3 -u: %s" % r.stdout.decode())
        rc = self.wait_exit(m, "fusermount3 -u")
        m.done = True
        self.assertEqual(rc, 0, "stfs exit status after unmount; stderr:\n" + m.stderr())
        self.assertFalse(mounted(m.path))

    def terminate(self, m, sig=signal.SIGTERM):
        """Signal the daemon; it must exit 0 and leave nothing mounted."""
        m.proc.send_signal(sig)
        rc = self.wait_exit(m, "signal %d" % sig)
        still = mounted(m.path)
        if not still:
            m.done = True
        self.assertFalse(still, "still mounted after signal %d" % sig)
        self.assertEqual(rc, 0, "exit status on signal %d; stderr:\n%s" % (sig, m.stderr()))

    @staticmethod
    def _cleanup(m):
        """After a test that did not unmount (it failed): stop the daemon
        without waiting on it for ever, and leave nothing mounted."""
        if m.done and not mounted(m.path):
            return
        force_stop(m)
        m.done = True

    def control(self, m):
        """Control of Mount @m, closed at cleanup (before the unmount)."""
        c = Control(m)
        self.addCleanup(c.close)
        return c

    def close_later(self, fd, m):
        self.addCleanup(close_fd, fd, m)

    @staticmethod
    def _rmdir(path):
        try:
            os.rmdir(path)
        except OSError:
            pass

    def kill_child(self, proc):
        """Cleanup for a helper process (subprocess.Popen or
        multiprocessing.Process)."""
        def stop():
            alive = proc.poll() is None if hasattr(proc, "poll") else proc.is_alive()
            if alive:
                proc.kill()
            if hasattr(proc, "poll"):
                proc.wait()
                for f in (proc.stdin, proc.stdout, proc.stderr):
                    if f:
                        f.close()
            else:
                proc.join()
        self.addCleanup(stop)

    def assertBytes(self, got, want, what):
        if got == want:
            return
        n = min(len(got), len(want))
        first = next((i for i in range(n) if got[i] != want[i]), n)
        self.fail("%s: %d bytes read, %d expected, first difference at byte %d "
                  "(got %r, want %r)" % (what, len(got), len(want), first,
                                          bytes(got[first:first + 8]), bytes(want[first:first + 8])))

    def assertTensors(self, m, tensors):
        """Every tensor of @tensors reads whole and right through Mount @m."""
        bad = []
        for t in tensors:
            got, err = self.read_errno(m.p(t.path))
            if err is not None or got != t.data:
                bad.append("%s: %s" % (t.name, errname(err) if err else "content differs"))
        self.assertEqual(bad, [])

    def read_errno(self, path, off=0, size=-1):
        """(bytes, None) of a read of @path, or (None, errno)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            return None, e.errno
        try:
            if size < 0:
                out = bytearray()
                while True:
                    b = os.pread(fd, 1 << 20, off + len(out))
                    if not b:
                        break
                    out += b
                return bytes(out), None
            return os.pread(fd, size, off), None
        except OSError as e:
            return None, e.errno
        finally:
            os.close(fd)

    def wait_job(self, c, job, timeout=60.0):
        """The status of prefetch @job of Control @c once it has ended."""
        deadline = time.monotonic() + timeout
        while True:
            st = c.status(job)
            if st["state"] not in (QUEUED, RUNNING):
                return st
            if time.monotonic() > deadline:
                self.fail("job %d still %s after %.0fs: %r"
                          % (job, STATE_NAMES[st["state"]], timeout, st))
            time.sleep(0.01)

    def stderr_lines(self, m):
        return [ln for ln in m.stderr().splitlines() if ln.strip()]


# ---------------------------------------------------------------- main


def main():
    global STFS, GEN, STFSCTL, FAKECUDA, IPC_READ
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--stfs")
    ap.add_argument("--gen")
    ap.add_argument("--stfsctl")
    ap.add_argument("--fakecuda")
    ap.add_argument("--ipc-read")
    args, rest = ap.parse_known_args()
    STFS = os.path.abspath(args.stfs or STFS)
    GEN = os.path.abspath(args.gen or GEN)
    STFSCTL = os.path.abspath(args.stfsctl or STFSCTL)
    FAKECUDA = os.path.abspath(args.fakecuda) if args.fakecuda else None
    IPC_READ = os.path.abspath(args.ipc_read) if args.ipc_read else None

    why = stfstest.fuse_skip_reason()
    if why:
        print("SKIP: " + why)
        return 77
    if importlib.util.find_spec("numpy") is None:    # the generator needs it
        print("SKIP: python3 module numpy is needed")
        return 77
    for what, path in (("stfs daemon", STFS), ("generator", GEN)):
        if not os.path.isfile(path):
            print("ERROR: %s not found at %s" % (what, path), file=sys.stderr)
            return 1
    prog = unittest.main(module="__main__", argv=[sys.argv[0]] + rest, exit=False,
                         verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1
