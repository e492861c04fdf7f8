#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 8: prefetch of every tensor to GPU memory (--to cuda:0).

Runs only where a GPU is present: torch.cuda.is_available() when torch
imports, or libcuda.so.1 (ctypes) with cuInit and cuDeviceGetCount > 0.
Otherwise it prints "row 8: no GPU on this machine (skipped)" and puts
that line in the summary.

stfs: a PREFETCH ioctl on MOUNT/.stfs/control with target cuda:--device
(--threads workers, default 4 = the daemon's default), timed from the
ioctl until STATUS says done (polled every millisecond), on a fresh mount;
then EVICT frees the device memory. GB/s = tensor bytes / that time.

Baselines, on the same bytes:
  pinned       one cuMemcpyHtoD of all the tensor bytes from a pinned host
               buffer (cuMemHostAlloc) into one cuMemAlloc allocation, via
               ctypes over libcuda: the bandwidth the link gives a plain
               copy that needs no reading at all
  safetensors  safe_open(shard, framework="pt", device="cuda:0") and
               get_tensor() of every tensor of every shard, then
               torch.cuda.synchronize() (needs torch)

  8a  source warm (page cache) vs pinned        target >= 0.90
  8b  source warm vs safetensors, source warm   target >= 10
  8c  source cold (root: drop_caches after a fresh mount) vs pinned
  8d  source cold vs safetensors, source cold
  8e  source warm, --staging direct (the mapping registered read-only with
      the driver, DMA straight from the page cache, no CPU copy) vs pinned
                                                target >= 0.90
Ratio = stfs GB/s / baseline GB/s. The cold rows have no target: both
sides wait on the same disk. 8a-8d use the default staging (ring).

Against tests/gpu's fakecuda (run.sh --fakecuda DIR puts it on
LD_LIBRARY_PATH; the smoke run does) every figure is meaningless: the
"device" is host memory. The row then only proves that the path runs, and
says so in its notes.

The first warm job is checked: a few tensors are copied back from the
device through the user.stfs.cuda xattr (cuIpcOpenMemHandle + offset) and
compared with their source bytes.
"""

import ctypes
import os
import sys
import time

import common as C
import ctl
from row1_seq import read_source
from row6_prefetch import source_ranges

SKIP = "no GPU on this machine (skipped)"


class CudaError(RuntimeError):
    pass


class IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * 64)]


class Cuda:
    """The few driver calls the baselines and the check need (ctypes)."""

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        u64, vp, i, u = ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint
        P = ctypes.POINTER
        self._fn("Init", ["cuInit"], [u])
        self._fn("DeviceGetCount", ["cuDeviceGetCount"], [P(i)])
        self._fn("DeviceGet", ["cuDeviceGet"], [P(i), i])
        self._fn("DeviceGetName", ["cuDeviceGetName"], [ctypes.c_char_p, i, i])
        self._fn("DriverGetVersion", ["cuDriverGetVersion"], [P(i)])
        self._fn("PrimaryCtxRetain", ["cuDevicePrimaryCtxRetain"], [P(vp), i])
        self._fn("CtxSetCurrent", ["cuCtxSetCurrent"], [vp])
        self._fn("CtxSynchronize", ["cuCtxSynchronize"], [])
        self._fn("MemAlloc", ["cuMemAlloc_v2", "cuMemAlloc"], [P(u64), ctypes.c_size_t])
        self._fn("MemFree", ["cuMemFree_v2", "cuMemFree"], [u64])
        self._fn("MemHostAlloc", ["cuMemHostAlloc"], [P(vp), ctypes.c_size_t, u])
        self._fn("MemFreeHost", ["cuMemFreeHost"], [vp])
        self._fn("MemcpyHtoD", ["cuMemcpyHtoD_v2", "cuMemcpyHtoD"], [u64, vp, ctypes.c_size_t])
        self._fn("MemcpyDtoH", ["cuMemcpyDtoH_v2", "cuMemcpyDtoH"], [vp, u64, ctypes.c_size_t])
        self._fn("IpcOpenMemHandle", ["cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle"],
                 [P(u64), IpcHandle, u])
        self._fn("IpcCloseMemHandle", ["cuIpcCloseMemHandle"], [u64])
        self._fn("GetErrorString", ["cuGetErrorString"], [i, P(ctypes.c_char_p)])
        self.call("cuInit", self.Init, 0)
        self.ctx = None

    def _fn(self, attr, names, argtypes):
        for name in names:
            try:
                f = getattr(self.lib, name)
            except AttributeError:
                continue
            f.restype, f.argtypes = ctypes.c_int, argtypes
            setattr(self, attr, f)
            return
        raise CudaError("libcuda.so.1 lacks %s" % names[0])

    def call(self, what, f, *a):
        r = f(*a)
        if r != 0:
            s = ctypes.c_char_p()
            self.GetErrorString(r, ctypes.byref(s))
            raise CudaError("%s: %s (%d)" % (what, s.value.decode() if s.value else "error", r))

    def device_count(self):
        n = ctypes.c_int()
        self.call("cuDeviceGetCount", self.DeviceGetCount, ctypes.byref(n))
        return n.value

    def describe(self, ordinal):
        d, v = ctypes.c_int(), ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        self.call("cuDeviceGet", self.DeviceGet, ctypes.byref(d), ordinal)
        self.call("cuDeviceGetName", self.DeviceGetName, name, 256, d)
        self.call("cuDriverGetVersion", self.DriverGetVersion, ctypes.byref(v))
        return "%s (driver API %d.%d)" % (name.value.decode(), v.value // 1000, v.value % 1000 // 10)

    def use(self, ordinal):
        """Make device ORDINAL's primary context current on this thread."""
        d, ctx = ctypes.c_int(), ctypes.c_void_p()
        self.call("cuDeviceGet", self.DeviceGet, ctypes.byref(d), ordinal)
        self.call("cuDevicePrimaryCtxRetain", self.PrimaryCtxRetain, ctypes.byref(ctx), d)
        self.call("cuCtxSetCurrent", self.CtxSetCurrent, ctx)
        self.ctx = ctx

    def pinned_copy_times(self, ranges, size, reps):
        """Fill a pinned buffer with RANGES' bytes; time REPS cuMemcpyHtoD of all SIZE bytes."""
        host, dev = ctypes.c_void_p(), ctypes.c_uint64()
        self.call("cuMemHostAlloc", self.MemHostAlloc, ctypes.byref(host), size, 0)
        try:
            self.call("cuMemAlloc", self.MemAlloc, ctypes.byref(dev), size)
            try:
                mv = memoryview((ctypes.c_char * size).from_address(host.value)).cast("B")
                pos = 0
                for src, off, n in ranges:
                    fd = os.open(src, os.O_RDONLY)
                    try:
                        got = 0
                        while got < n:
                            k = os.preadv(fd, [mv[pos + got:pos + n]], off + got)
                            if k <= 0:
                                raise IOError("%s: short read" % src)
                            got += k
                    finally:
                        os.close(fd)
                    pos += n
                del mv
                times = []
                self.call("cuMemcpyHtoD", self.MemcpyHtoD, dev, host, size)  # first touch
                for _ in range(reps):
                    t0 = time.perf_counter()
                    self.call("cuMemcpyHtoD", self.MemcpyHtoD, dev, host, size)
                    self.call("cuCtxSynchronize", self.CtxSynchronize)
                    times.append(time.perf_counter() - t0)
                return times
            finally:
                self.MemFree(dev)
        finally:
            self.MemFreeHost(host)

    def check_ipc(self, tensors, count=4):
        """Copy COUNT tensors back through user.stfs.cuda; (checked, first mismatch or None)."""
        nz = [t for t in tensors if t["size"]]
        picks = {id(t): t for t in (nz[:1] + nz[len(nz) // 3:len(nz) // 3 + 1]
                                    + nz[2 * len(nz) // 3:2 * len(nz) // 3 + 1] + nz[-1:])}
        opened = {}
        try:
            for t in list(picks.values())[:count]:
                kv = dict(x.split("=", 1) for x in os.getxattr(t["path"], "user.stfs.cuda").decode().split())
                if int(kv["size"]) != t["size"]:
                    return len(picks), "%s: xattr size %s, tensor %d" % (t["name"], kv["size"], t["size"])
                h = kv["handle"]
                if h not in opened:
                    handle = IpcHandle.from_buffer_copy(bytes.fromhex(h))
                    p = ctypes.c_uint64()
                    self.call("cuIpcOpenMemHandle", self.IpcOpenMemHandle, ctypes.byref(p), handle, 1)
                    opened[h] = p.value
                got = ctypes.create_string_buffer(t["size"])
                self.call("cuMemcpyDtoH", self.MemcpyDtoH, got, opened[h] + int(kv["offset"]), t["size"])
                with open(t["src"], "rb") as f:
                    f.seek(t["offset"])
                    want = f.read(t["size"])
                if got.raw != want:
                    return len(picks), t["name"]
        finally:
            for p in opened.values():
                self.IpcCloseMemHandle(p)
        return len(picks), None


def detect():
    """(torch module or None, Cuda or None, description); description None: no GPU.
    A description containing "fakecuda" is tests/gpu's fake driver."""
    torch, cu, desc, why = None, None, None, []
    try:
        import torch as _torch
        torch = _torch
    except Exception as e:  # ImportError, or a broken install
        why.append("torch: %s" % e)
    try:
        cu = Cuda()
        if cu.device_count() < 1:
            why.append("libcuda: no device")
            cu = None
        else:
            desc = cu.describe(0)
    except (OSError, CudaError) as e:
        why.append("libcuda: %s" % e)
        cu = None
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.device_count() > 0:
                desc = desc or torch.cuda.get_device_name(0)
            else:
                why.append("torch %s: no CUDA device" % torch.__version__)
                torch = None
        except Exception as e:
            why.append("torch: %s" % e)
            torch = None
    if desc is None:
        C.log("row 8: " + "; ".join(why))
    return torch, cu, desc


def skip(args, what=SKIP):
    print("row 8: %s" % what)
    if args.json:
        import json
        with open(args.json, "a") as f:
            f.write(json.dumps(dict(row="8", what="prefetch to GPU", stfs=what, baseline="", ratio=None,
                                    target="", met=None, note="", quick=bool(args.quick))) + "\n")
    return 0


def st_load(torch, shards, device):
    from safetensors import safe_open
    out = []
    for s in shards:
        with safe_open(s, framework="pt", device=device) as f:
            for k in f.keys():
                out.append(f.get_tensor(k))
    torch.cuda.synchronize()
    return out


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--device", type=int, default=0, help="CUDA device ordinal (default 0)")
    ap.add_argument("--threads", type=int, default=4, help="prefetch workers (default 4, the daemon's)")
    ap.add_argument("--chunk", type=int, default=0,
                    help="prefetch chunk in bytes (default 0: the daemon's, 4 MiB)")
    ap.add_argument("--no-cold", action="store_true", help="skip 8c and 8d")
    args = ap.parse_args(argv)
    torch, cu, gpu = detect()
    if gpu is None:
        return skip(args)
    n = C.reps(args, 5)
    do_cold = C.is_root() and not args.no_cold
    target = "cuda:%d" % args.device
    buf = bytearray(1 << 20)
    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        with C.Mount(args.stfs, model) as m:
            tensors = C.tensors_of(m.mp, model)
        size = sum(t["size"] for t in tensors)
        ranges = source_ranges(tensors)
        shards = sorted({t["src"] for t in tensors})
        env = C.environment(model, args.stfs) + [
            "GPU %s: %s; torch %s" % (target, gpu, torch.__version__ if torch else "not available"),
            "model: %d tensors, %s, %d shards; prefetch --to %s, --threads %d, chunk %s; median of %d"
            % (len(tensors), C.fmt_bytes(size), len(shards), target, args.threads,
               C.fmt_bytes(args.chunk) if args.chunk else "daemon default", n)]
        if do_cold:
            env.append("cold runs drop the page cache as root: sync; echo 3 > /proc/sys/vm/drop_caches")
        res = C.Results(args, "Row 8: prefetch to GPU memory (%s)" % C.fmt_bytes(size), env)
        t = {k: [] for k in ("pf_warm", "pf_cold", "pf_direct", "pin", "st_warm", "st_cold")}
        notes = {}
        fake = "fakecuda" in gpu
        if fake:
            env.append("FAKE DRIVER (tests/gpu/fakecuda, device memory in host memory): "
                       "every figure of this row is meaningless; it proves the path runs")

        # pinned copy: one allocation, n timed copies
        if cu is not None:
            try:
                cu.use(args.device)
                t["pin"] = cu.pinned_copy_times(ranges, size, n)
            except CudaError as e:
                notes["pin"] = "pinned copy failed: %s" % e
        else:
            notes["pin"] = "no pinned baseline: libcuda.so.1 not usable from ctypes"

        def prefetch(mp, check, staging="ring"):
            with ctl.Control(mp) as c:
                dt, st = c.run((), target, args.threads, args.chunk,
                               staging=ctl.STAGING[staging])
                if st["bytes_total"] != size:
                    raise RuntimeError("prefetch moved %d bytes, the tensors have %d" % (st["bytes_total"], size))
                if check:
                    if cu is None:
                        notes["check"] = "device bytes not checked (no libcuda via ctypes)"
                    else:
                        try:
                            k, bad = cu.check_ipc(C.tensors_of(mp, model))
                        except (CudaError, OSError, KeyError, ValueError) as e:
                            notes["check"] = "device bytes not checked: %s" % e
                        else:
                            if bad:
                                raise RuntimeError("%s: bytes on %s differ from the source" % (bad, target))
                            notes["check"] = ("%d tensors copied back through user.stfs.cuda "
                                              "(cuIpcOpenMemHandle): equal to the source" % k)
                c.evict((), target)
                return dt, st

        try:
            for i in range(n):
                C.log("row 8: run %d/%d" % (i + 1, n))
                read_source(tensors, buf)  # source warm
                with C.Mount(args.stfs, model) as m:
                    t["pf_warm"].append(prefetch(m.mp, i == 0)[0])
                read_source(tensors, buf)
                with C.Mount(args.stfs, model) as m:
                    t["pf_direct"].append(prefetch(m.mp, False, "direct")[0])
                if torch is not None:
                    read_source(tensors, buf)
                    dt, out = C.timed(st_load, torch, shards, target)
                    del out
                    torch.cuda.empty_cache()
                    t["st_warm"].append(dt)
                if do_cold:
                    with C.Mount(args.stfs, model) as m:
                        C.drop_caches()  # the fresh daemon has mapped nothing yet
                        t["pf_cold"].append(prefetch(m.mp, False)[0])
                    if torch is not None:
                        C.drop_caches()
                        dt, out = C.timed(st_load, torch, shards, target)
                        del out
                        torch.cuda.empty_cache()
                        t["st_cold"].append(dt)
        except ctl.JobFailed as e:
            return skip(args, "prefetch to %s failed: %s" % (target, e))

        def cell(key, what=""):
            s = C.median(t[key])
            return s, "%s (%s)%s" % (C.fmt_rate(size / s), C.fmt_time(s), what)

        def add(row, what, mkey, bkey, bwhat, target_=None, limit=None, note=""):
            if not t[mkey]:
                res.add(row, what, "n/a (not root)" if not C.is_root() else "n/a (--no-cold)", "", None)
                return
            ms, mcell = cell(mkey)
            if not t[bkey]:
                why = notes.get("pin") if bkey == "pin" else "n/a (torch with CUDA not importable)"
                res.add(row, what, mcell, why or "n/a", None, target_, None, note=note)
                return
            bs, bcell = cell(bkey, " " + bwhat)
            ratio = bs / ms
            res.add(row, what, mcell, bcell, ratio, target_,
                    None if limit is None or fake else ratio >= limit,
                    note=note)

        fk = "FAKE DRIVER: meaningless. " if fake else ""
        dst = target + (" of the FAKE driver" if fake else "")
        add("8a", "prefetch to %s, source warm" % dst, "pf_warm", "pin", "(pinned cuMemcpyHtoD)",
            ">= 0.90", 0.90, note=fk + notes.get("check", ""))
        add("8b", "prefetch to %s, source warm" % dst, "pf_warm", "st_warm", "(safetensors, warm)",
            ">= 10", 10.0, note=fk)
        add("8c", "prefetch to %s, source cold" % dst, "pf_cold", "pin", "(pinned cuMemcpyHtoD)",
            note=fk)
        add("8d", "prefetch to %s, source cold" % dst, "pf_cold", "st_cold", "(safetensors, cold)",
            note=fk)
        add("8e", "prefetch to %s --staging direct, source warm" % dst, "pf_direct", "pin",
            "(pinned cuMemcpyHtoD)", ">= 0.90", 0.90, note=fk)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
