# SPDX-License-Identifier: Apache-2.0
"""The stfs control ioctls (core/stfs_ioctl.h) from Python, for rows 6 and 8.

Control(mp) opens MP/.stfs/control read-only (the ioctls work on a
read-only mount; the mounting user or root only) and issues PREFETCH,
STATUS and EVICT. run() starts a job and polls its STATUS every --poll
seconds (1 ms by default: stfsctl --wait polls every 100 ms, too coarse to
time a job of a few hundred ms) until it ends, and returns the wall time
from the PREFETCH ioctl to the first STATUS that says it ended, with the
daemon's own elapsed time of the job for reference.

The struct layouts below mirror stfs_ioctl.h (little-endian x86-64/arm64,
natural alignment, no implicit padding): 8240, 312 and 8216 bytes.
"""

import fcntl
import json
import os
import struct
import subprocess
import time

VERSION = 1
MAGIC = 0xB7
TARGET_HOST, TARGET_CUDA = 0, 1
STATES = ("queued", "running", "done", "failed", "cancelled")
DONE = 2
SELECTION_MAX = 8192
MESSAGE_MAX = 256

# version target device threads chunk slice_dim slice_rank slice_world flags job selection
PREFETCH = struct.Struct("<IIiIQiIIIQ%ds" % SELECTION_MAX)
# version state job error target device tensors bytes_total bytes_done elapsed_ns message
STATUS = struct.Struct("<IIQiIiIQQQ%ds" % MESSAGE_MAX)
# version target device pad count selection
EVICT = struct.Struct("<IIiIQ%ds" % SELECTION_MAX)
assert (PREFETCH.size, STATUS.size, EVICT.size) == (8240, 312, 8216)


# stfs_prefetch_req.flags of a cuda job (STFS_STAGING_*)
STAGING = {"ring": 0, "direct": 1, "auto": 2}


def _iowr(nr, size):
    return (3 << 30) | (size << 16) | (MAGIC << 8) | nr


IOC_PREFETCH = _iowr(1, PREFETCH.size)
IOC_STATUS = _iowr(2, STATUS.size)
IOC_EVICT = _iowr(4, EVICT.size)


def parse_target(s):
    """'host' or 'cuda:N' -> (target, device)."""
    if s == "host":
        return TARGET_HOST, 0
    if s.startswith("cuda:") and s[5:].isdigit():
        return TARGET_CUDA, int(s[5:])
    raise ValueError("target %r: host or cuda:N" % s)


def _selection(patterns):
    sel = "".join(p + "\n" for p in patterns).encode()
    if len(sel) >= SELECTION_MAX:
        raise ValueError("selection longer than %d bytes" % SELECTION_MAX)
    return sel


class JobFailed(RuntimeError):
    pass


class Control:
    def __init__(self, mp):
        self.mp = mp
        self.fd = os.open(os.path.join(mp, ".stfs", "control"), os.O_RDONLY | os.O_CLOEXEC)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def prefetch(self, patterns=(), target="host", threads=0, chunk=0, staging=0):
        """Start a job (staging: STAGING[name] of a cuda job); its id."""
        tgt, dev = parse_target(target)
        buf = bytearray(PREFETCH.pack(VERSION, tgt, dev, threads, chunk, -1, 0, 0, staging, 0,
                                      _selection(patterns)))
        fcntl.ioctl(self.fd, IOC_PREFETCH, buf, True)
        return PREFETCH.unpack(buf)[9]

    def status(self, job):
        buf = bytearray(STATUS.pack(VERSION, 0, job, 0, 0, 0, 0, 0, 0, 0, b""))
        fcntl.ioctl(self.fd, IOC_STATUS, buf, True)
        v = STATUS.unpack(buf)
        return dict(state=STATES[v[1]] if v[1] < len(STATES) else str(v[1]), job=v[2], error=v[3],
                    target=v[4], device=v[5], tensors=v[6], bytes_total=v[7], bytes_done=v[8],
                    seconds=v[9] / 1e9, message=v[10].split(b"\0", 1)[0].decode(errors="replace"))

    def evict(self, patterns=(), target="host"):
        """Tensors evicted."""
        tgt, dev = parse_target(target)
        buf = bytearray(EVICT.pack(VERSION, tgt, dev, 0, 0, _selection(patterns)))
        fcntl.ioctl(self.fd, IOC_EVICT, buf, True)
        return EVICT.unpack(buf)[4]

    def run(self, patterns=(), target="host", threads=0, chunk=0, poll=0.001, staging=0):
        """Prefetch and wait: (wall seconds, final status dict). Raises JobFailed."""
        t0 = time.perf_counter()
        job = self.prefetch(patterns, target, threads, chunk, staging)
        while True:
            st = self.status(job)
            if st["state"] not in ("queued", "running"):
                break
            time.sleep(poll)
        dt = time.perf_counter() - t0
        if st["state"] != "done":
            raise JobFailed("job %d %s: %s" % (job, st["state"], st["message"] or os.strerror(st["error"])))
        return dt, st


def run_stfsctl(stfsctl, mp, target="host", threads=0, chunk=0):
    """Time `stfsctl prefetch MP --to TARGET [--threads N] [--chunk B] --wait`.

    (wall seconds, the job's line of .stfs/status). stfsctl polls every
    100 ms, so the wall time is rounded up by as much.
    """
    cmd = [stfsctl, "prefetch", mp, "--to", target, "--wait"]
    if threads:
        cmd += ["--threads", str(threads)]
    if chunk:
        cmd += ["--chunk", str(chunk)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise JobFailed("%s: exit %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-400:]))
    job = int(r.stdout.split()[1])
    for j in status_json(mp)["jobs"]:
        if j["id"] == job:
            return dt, j
    raise RuntimeError("job %d not in .stfs/status" % job)


def status_json(mp):
    """MP/.stfs/status: {"jobs": [...], "counters": {...}} (a fresh snapshot)."""
    with open(os.path.join(mp, ".stfs", "status")) as f:
        return json.load(f)


def counters(mp):
    return status_json(mp)["counters"]


def default_stfsctl(stfs):
    """$STFSCTL, else tools/stfsctl of the build directory holding the daemon."""
    if os.environ.get("STFSCTL"):
        return os.environ["STFSCTL"]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(stfs))), "tools", "stfsctl")
