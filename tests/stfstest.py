"""Helpers shared by the Python suites that mount (tests/*/test_*.py).

Import after putting tests/ on sys.path:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
"""

import contextlib
import mmap
import os
import re
import shutil
import subprocess
import sys
import unittest


def mounted(path):
    """True when @path is a mount point in /proc/self/mountinfo.

    Unlike os.path.ismount this never touches the FUSE mount itself, so it
    neither blocks on a hung daemon nor says False for a dead one
    (ENOTCONN)."""
    want = os.path.realpath(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            mp = line.split(b" ")[4]
            mp = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), mp)
            if os.fsdecode(mp) == want:
                return True
    return False


def fusermount(*args):
    return subprocess.run(["fusermount3", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)


def run_gen(gen, preset, outdir, *args):
    """Run tools/gen_model.py (@gen) PRESET OUTDIR ARGS...; raise on failure."""
    r = subprocess.run([sys.executable, gen, preset, outdir, *map(str, args)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError("gen_model.py %s failed: %s" % (preset, r.stdout.decode()))


def fuse_skip_reason():
    """Why real mounts cannot run here (the caller exits 77), or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        # libfuse opens /dev/fuse itself before it would try fusermount3
        return "/dev/fuse is not accessible to uid %d" % os.geteuid()
    return None



class Mount:
    """A daemon (@proc) serving the mount at @path, its output in the file @log."""

    def __init__(self, path, proc, log):
        self.path = path
        self.proc = proc
        self.log = log
        self.done = False

    def p(self, *rel):
        return os.path.join(self.path, *rel)

    def stderr(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

def run_tests(rest, missing=None, files=()):
    """Run the unittest cases of the calling script (module __main__) with
    the command-line arguments @rest; the exit status: 77 (SKIP) where real
    mounts cannot run or @missing (what is not installed) says why, 1 when
    one of @files ((what, path) pairs) does not exist, else 0 when every
    test passed and 1 when one did not."""
    why = fuse_skip_reason() or missing
    if why:
        print("SKIP: " + why)
        return 77
    for what, path in files:
        if not os.path.isfile(path):
            print("ERROR: %s not found at %s" % (what, path), file=sys.stderr)
            return 1
    prog = unittest.main(module="__main__", argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


def cuda_xattr(path):
    """The user.stfs.cuda xattr of tensor file @path (where a CUDA prefetch
    put it) as a dict: device, handle, offset, size, ..."""
    raw = os.getxattr(path, "user.stfs.cuda").decode()
    return dict(x.split("=", 1) for x in raw.split())


def ipc_read(exe, libdir, kv):
    """The bytes of one tensor on the device, read by another process
    (@exe: tests/gpu/ipc_read, loading libcuda from @libdir, the fake
    driver's directory) through its IPC handle @kv (cuda_xattr)."""
    r = subprocess.run([exe, kv["device"], kv["handle"], kv["offset"], kv["size"]],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, LD_LIBRARY_PATH=libdir), timeout=60)
    if r.returncode:
        raise AssertionError("ipc_read: %s" % r.stderr.decode())
    return r.stdout


@contextlib.contextmanager
def environ(**add):
    """Set the variables @add in os.environ for the block (a daemon started
    in it inherits them), then put back what was there."""
    saved = {k: os.environ.get(k) for k in add}
    os.environ.update(add)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resident_pages(path):
    """(resident, total) pages of @path's page cache: mincore of a mapping.
    Of a mount file this is the mount's cache; nothing is read."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    if not size:
        return 0, 0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap " + path)
        vec = ctypes.create_string_buffer(pages)
        try:
            if libc.mincore(addr, size, vec):
                raise OSError(ctypes.get_errno(), "mincore " + path)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec.raw), pages


def evict(path):
    """Ask the kernel to drop @path's page cache (of a mount file: the
    mount's pages, not the source's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def mapped_rss(pid, path):
    """Resident bytes of process @pid's mappings of file @path (smaps Rss)."""
    want, rss, inside = os.path.realpath(path), 0, False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if head and re.match(r"^[0-9a-f]+-[0-9a-f]+$", head[0]):
                inside = len(head) >= 6 and line.rstrip("\n").endswith(want)
            elif inside and head[0] == "Rss:":
                rss += int(head[1]) * 1024
    return rss
