#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Row 4: load every tensor into NumPy arrays, through the mount vs safetensors.

stfs, three ways (each makes an in-memory array per tensor, like the
baseline):
  npy       numpy.load(T.npy)                         (the .npy view)
  fromfile  numpy.fromfile(T, dtype).reshape(shape)   (the raw tensor file)
  st-view   safetensors.numpy.load_file(MOUNT/.stfs/model.safetensors)
Baseline: safetensors.numpy.load_file(shard) for every shard of the source
(the library copies each tensor out of its mapping into a new array).
Ratio = stfs time / baseline time (lower is better; target <= 1.2).

Warm: both in the page cache. Cold: page cache dropped and a fresh daemon.
The generated model's BF16 tensors are relabelled F16 (NumPy has no
bfloat16); with --model, every dtype must be one NumPy knows. The first
warm run checks that every array equals the baseline's, byte for byte.
"""

import os
import sys

import numpy as np

import common as C

NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "U64": "<u8", "I32": "<i4",
      "U32": "<u4", "I16": "<i2", "U16": "<u2", "I8": "i1", "U8": "u1", "BOOL": "?", "C64": "<c8"}


def load_npy(tensors):
    return {t["name"]: np.load(t["path"] + ".npy") for t in tensors}


def load_fromfile(tensors):
    out = {}
    for t in tensors:
        out[t["name"]] = np.fromfile(t["path"], dtype=NP[t["dtype"]]).reshape(t["shape"])
    return out


def load_st(files):
    from safetensors.numpy import load_file
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


def same(a, b):
    if a.keys() != b.keys():
        return "tensor names differ"
    for k in a:
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            return "%s: %s%s vs %s%s" % (k, x.dtype, x.shape, y.dtype, y.shape)
        if x.tobytes() != y.tobytes():
            return "%s: bytes differ" % k
    return None


def main(argv=None):
    ap = C.parser(__doc__)
    C.common_args(ap)
    ap.add_argument("--no-cold", action="store_true", help="only the warm figures")
    args = ap.parse_args(argv)
    n = C.reps(args, 3)
    do_cold = C.is_root() and not args.no_cold
    ways = ("npy", "fromfile", "st-view")
    with C.Workdir(args) as work:
        model = C.llama_model(args, work)
        warm = {w: [] for w in ways + ("base",)}
        cold = {w: [] for w in ways + ("base",)}
        with C.Mount(args.stfs, model) as m:
            tensors = C.tensors_of(m.mp, model)
            bad = sorted({t["dtype"] for t in tensors} - set(NP))
            if bad:
                raise SystemExit("row 4: dtypes NumPy cannot load: %s" % ", ".join(bad))
            shards = sorted({t["src"] for t in tensors})
            view = os.path.join(m.mp, ".stfs", "model.safetensors")
            size = sum(t["size"] for t in tensors)
            fns = {"npy": (load_npy, tensors), "fromfile": (load_fromfile, tensors),
                   "st-view": (load_st, [view]), "base": (load_st, shards)}
            ref = load_st(shards)
            for w in ways:
                err = same(fns[w][0](fns[w][1]), ref)
                if err:
                    raise SystemExit("row 4: %s differs from safetensors: %s" % (w, err))
            del ref
            # warm the source again: reads through the mount let go of it
            # (-o cache=single)
            load_st(shards)
            for i in range(n):  # alternating the order, against drift
                for w in (("base",) + ways)[::1 if i % 2 == 0 else -1]:
                    dt, d = C.timed(*fns[w])
                    del d
                    warm[w].append(dt)
        if do_cold:
            for i in range(n):
                C.log("row 4: cold run %d/%d" % (i + 1, n))
                C.drop_caches()
                cold["base"].append(C.timed(load_st, shards)[0])
                for w in ways:
                    with C.Mount(args.stfs, model) as m:
                        mt = C.tensors_of(m.mp, model)
                        arg = [os.path.join(m.mp, ".stfs", "model.safetensors")] if w == "st-view" else mt
                        C.drop_caches()
                        cold[w].append(C.timed(fns[w][0], arg)[0])

        env = C.environment(model, args.stfs) + [
            "model: %d tensors, %s, %d shards; median of %d" % (len(tensors), C.fmt_bytes(size), len(shards), n)]
        res = C.Results(args, "Row 4: load every tensor with NumPy", env)
        label = {"npy": "numpy.load(T.npy)", "fromfile": "numpy.fromfile(T)",
                 "st-view": "load_file(.stfs/model.safetensors)"}
        for state, d in (("warm", warm), ("cold", cold)):
            if not d["base"]:
                continue
            b = C.median(d["base"])
            for w in ways:
                s = C.median(d[w])
                res.add("4", "%s, %s" % (label[w], state), C.fmt_time(s),
                        "%s (safetensors load_file)" % C.fmt_time(b), s / b, "<= 1.2x time", s / b <= 1.2)
        if not do_cold:
            res.add("4", "cold loads", "n/a (%s)" % ("--no-cold" if args.no_cold else "not root"), "", None)
        res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
