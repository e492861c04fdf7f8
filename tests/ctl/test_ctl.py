#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""stfsctl inspect and verify, without a mount; with --stfs also the job
commands against one mount of hostile names (class Jobs: the daemon's
messages and log escaped; skipped without FUSE).

    python3 tests/ctl/test_ctl.py --stfsctl build/tools/stfsctl \\
        [--stfs build/fs/stfs] --gen tools/gen_model.py [unittest args]

(or STFSCTL_EXE / STFS_EXE / STFS_GEN in the environment).

- inspect on generated models: counts, parameters, bytes (per dtype, per
  shard, per module), metadata and the largest tensors are compared with an
  independent reader: safetensors.deserialize() (the Rust parser) and the
  header JSON read here;
- verify on every malformed case of the parser's rules, one file (or set)
  per rule: exit status 1 and a problem naming the file, the tensor or
  offset and the rule; the first problem is the very line stfs prints when
  it refuses the same source (when --stfs is given); files with many
  problems get every one, once;
- verify --scan: NaN/Inf/all-zero per tensor against NumPy and a decoder of
  the F8 formats written here, on random and on planted data, with any
  number of threads; memory stays flat on a big sparse model; the progress
  bar shows on a terminal only.
"""

import argparse
import json
import math
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
import safetensors

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import stfstest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
STFSCTL = os.environ.get("STFSCTL_EXE", os.path.join(TOP, "build", "tools", "stfsctl"))
STFS = os.environ.get("STFS_EXE", "")
GEN = os.environ.get("STFS_GEN", os.path.join(TOP, "tools", "gen_model.py"))

BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64,
    "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
DTYPE_ORDER = list(BITS)  # the order of core/dtype.h, which --json follows
FLOATS = {"F16", "BF16", "F32", "F64", "C64", "F8_E5M2", "F8_E4M3", "F8_E4M3FNUZ",
          "F8_E5M2FNUZ", "F8_E8M0"}


# ---------------------------------------------------------------- helpers


def run(*args, timeout=120, **kw):
    return subprocess.run([STFSCTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, **kw)


def ctl_json(*args, expect=0):
    p = run(*args, "--json")
    if p.returncode != expect:
        raise AssertionError("stfsctl %s: exit %d, want %d\n%s" % (
            " ".join(args), p.returncode, expect, p.stderr.decode(errors="replace")))
    return json.loads(p.stdout)


def gen(preset, outdir, *extra):
    subprocess.run([sys.executable, GEN, preset, outdir, *extra], check=True,
                   stdout=subprocess.DEVNULL)


def header_of(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return n, json.loads(f.read(n))


def write_st(path, tensors, metadata=None, raw_header=None, data=None):
    """tensors: [(name, dtype, shape, bytes)] laid out in order."""
    hdr = {}
    if metadata is not None:
        hdr["__metadata__"] = metadata
    off = 0
    blob = []
    for name, dt, shape, b in tensors:
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blob.append(b)
    h = raw_header if raw_header is not None else json.dumps(hdr).encode()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        f.write(data if data is not None else b"".join(blob))


def write_raw(path, header, data_len=0, size_field=None):
    """A file with @header (bytes or a dict) and @data_len zero bytes."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if size_field is None else size_field))
        f.write(h)
        f.write(b"\0" * data_len)


def ent(dt, shape, b, e):
    return {"dtype": dt, "shape": shape, "data_offsets": [b, e]}


class Reference:
    """A model read without stfs: the safetensors library and the headers."""

    def __init__(self, source):
        self.source = source
        self.components = []  # (name, index path or None, [shard paths])
        if os.path.isdir(source):
            self._scan_dir(source)
        elif source.endswith(".json"):
            self._add_index("", source)
        else:
            self.components.append(("", None, [source]))
        if len(self.components) == 1:
            self.components[0] = ("",) + self.components[0][1:]
        self.tensors = []  # dicts: name, component, dtype, shape, params, bytes, shard, data
        self.shards = []
        for comp, index, paths in self.components:
            for path in paths:
                with open(path, "rb") as f:
                    raw = f.read()
                n, hdr = header_of(path)
                got = safetensors.deserialize(raw)
                self.shards.append({"name": os.path.basename(path), "component": comp,
                                    "size": len(raw), "header_size": n,
                                    "tensors": len(got), "bytes": len(raw) - 8 - n,
                                    "metadata": hdr.get("__metadata__", {})})
                for name, v in got:
                    self.tensors.append({
                        "name": name, "component": comp, "dtype": v["dtype"],
                        "shape": list(v["shape"]), "params": math.prod(v["shape"]),
                        "bytes": len(v["data"]), "shard": os.path.basename(path),
                        "offset": 8 + n + hdr[name]["data_offsets"][0],
                        "data": bytes(v["data"])})

    def _add_index(self, comp, index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        d = os.path.dirname(index)
        self.components.append((comp, index, [os.path.join(d, s) for s in sorted(set(wm.values()))]))

    def _scan_dir(self, top):
        def sets(d):
            ents = sorted(e for e in os.listdir(d) if not e.startswith("."))
            found, listed = [], set()
            for e in ents:
                if e.endswith(".safetensors.index.json"):
                    with open(os.path.join(d, e)) as f:
                        listed |= set(json.load(f)["weight_map"].values())
                    found.append((e[:-len(".safetensors.index.json")], os.path.join(d, e), True))
            for e in ents:
                if e.endswith(".safetensors") and e not in listed:
                    found.append((e[:-len(".safetensors")], os.path.join(d, e), False))
            return ents, found

        ents, found = sets(top)
        allsets = list(found)
        for e in ents:
            if os.path.isdir(os.path.join(top, e)):
                _, sub = sets(os.path.join(top, e))
                for stem, path, idx in sub:
                    allsets.append((e if len(sub) == 1 else e + "/" + stem, path, idx))
        for name, path, idx in allsets:
            if idx:
                self._add_index(name, path)
            else:
                self.components.append((name, None, [path]))

    def metadata(self):
        def comp_meta(comp, index):
            meta = {}
            for s in self.shards:
                if s["component"] == comp:
                    for k, v in s["metadata"].items():
                        meta.setdefault(k, v)
            out = {"__metadata__": meta}
            if index:
                with open(index) as f:
                    im = json.load(f).get("metadata")
                if im is not None:
                    out["index_metadata"] = im
            return out

        if len(self.components) == 1:
            return comp_meta("", self.components[0][1])
        return {"components": {c: comp_meta(c, i) for c, i, _ in self.components}}

    def display(self, t):
        return (t["component"] + "/" if len(self.components) > 1 else "") + t["name"]

    def trie(self):
        """Per path of parts: [tensors, params, bytes, own tensor or None, children]."""
        root = {"count": [0, 0, 0], "tensor": None, "kids": {}}
        multi = len(self.components) > 1
        for t in self.tensors:
            parts = ([t["component"]] if multi else []) + t["name"].split(".")
            node = root
            for p in [None] + parts:
                if p is not None:
                    node = node["kids"].setdefault(p, {"count": [0, 0, 0], "tensor": None,
                                                       "kids": {}})
                node["count"][0] += 1
                node["count"][1] += t["params"]
                node["count"][2] += t["bytes"]
            node["tensor"] = t
        return root


# ------------------------------------------------- F8 and NaN/Inf reference


def f8_value(code, fmt):
    """Decode one F8 code (the OCP / AMD definitions) to a Python float."""
    s = -1.0 if code & 0x80 else 1.0
    if fmt == "F8_E8M0":
        return math.nan if code == 0xff else 2.0 ** (code - 127)
    if fmt in ("F8_E4M3FNUZ", "F8_E5M2FNUZ") and code == 0x80:
        return math.nan
    ebits, mbits, bias = {"F8_E5M2": (5, 2, 15), "F8_E4M3": (4, 3, 7),
                          "F8_E4M3FNUZ": (4, 3, 8), "F8_E5M2FNUZ": (5, 2, 16)}[fmt]
    e = (code >> mbits) & ((1 << ebits) - 1)
    m = code & ((1 << mbits) - 1)
    if fmt == "F8_E5M2" and e == 31:
        return s * math.inf if m == 0 else math.nan
    if fmt == "F8_E4M3" and e == 15 and m == 7:
        return math.nan
    if e == 0:
        return s * m / (1 << mbits) * 2.0 ** (1 - bias)
    return s * (1 + m / (1 << mbits)) * 2.0 ** (e - bias)


F8_NAN = {f: np.array([math.isnan(f8_value(c, f)) for c in range(256)])
          for f in ("F8_E5M2", "F8_E4M3", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0")}
F8_INF = {f: np.array([math.isinf(f8_value(c, f)) for c in range(256)]) for f in F8_NAN}


def nan_inf(dtype, data):
    """(nan, inf) counts of @data, or (None, None) where not applicable."""
    b = np.frombuffer(data, dtype=np.uint8)
    if dtype in F8_NAN:
        return int(F8_NAN[dtype][b].sum()), int(F8_INF[dtype][b].sum())
    if dtype == "BF16":
        v = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype in ("F16", "F32", "F64", "C64"):
        v = np.frombuffer(data, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8",
                                       "C64": "<c8"}[dtype])
    else:
        return None, None
    with np.errstate(invalid="ignore"):
        return int(np.isnan(v).sum()), int(np.isinf(v).sum())


# ------------------------------------------------------------------ tests


class TmpDir(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="stfsctl-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, *p):
        return os.path.join(self.tmp, *p)


class Cli(TmpDir):
    def test_help_and_usage(self):
        p = run("--help")
        self.assertEqual(p.returncode, 0)
        for cmd in ("inspect", "verify", "prefetch", "status", "cancel", "evict"):
            self.assertIn(cmd, p.stdout.decode())
        for cmd, opts in (("inspect", ("--depth", "--top", "--json")),
                          ("verify", ("--scan", "--threads", "--json"))):
            p = run(cmd, "--help")
            self.assertEqual(p.returncode, 0)
            for o in opts:
                self.assertIn(o, p.stdout.decode())
        self.assertEqual(run("--version").returncode, 0)
        self.assertIn(b"stfsctl ", run("--version").stdout)

    def test_usage_errors_exit_2(self):
        gen("tiny", self.tmp)
        src = self.path("model.safetensors")
        for args in ((), ("nosuchcommand",), ("inspect",), ("verify",),
                     ("inspect", src, src), ("inspect", src, "--depth", "x"),
                     ("inspect", src, "--depth", "-1"), ("inspect", src, "--top", "1e3"),
                     ("verify", src, "--threads", "0"), ("verify", src, "--bogus")):
            p = run(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertTrue(p.stderr, args)

    def test_missing_source(self):
        p = run("verify", self.path("nope.safetensors"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("No such file or directory", p.stdout.decode())
        p = run("inspect", self.path("nope.safetensors"))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("No such file or directory", p.stderr.decode())


class Inspect(TmpDir):
    """inspect --json against the reference, on every generator preset."""

    MODELS = [("tiny", ()), ("llama", ("--shards", "3")), ("moe", ()), ("dtypes", ()),
              ("odd", ()), ("diffusers", ())]

    def check_model(self, src, ref):
        d = ctl_json("inspect", src, "--depth", "0", "--top", "1000000")
        self.assertEqual(d["source"], src)
        tensors = ref.tensors
        self.assertEqual(d["tensors"], len(tensors))
        self.assertEqual(d["params"], sum(t["params"] for t in tensors))
        self.assertEqual(d["bytes"], sum(t["bytes"] for t in tensors))
        # per dtype, in table order, only those present
        want = {}
        for t in tensors:
            c = want.setdefault(t["dtype"], {"tensors": 0, "params": 0, "bytes": 0})
            c["tensors"] += 1
            c["params"] += t["params"]
            c["bytes"] += t["bytes"]
        self.assertEqual(d["dtypes"], want)
        self.assertEqual(list(d["dtypes"]), [k for k in DTYPE_ORDER if k in want])
        # shards
        got = sorted(d["shards"], key=lambda s: (s["component"], s["name"]))
        exp = sorted(ref.shards, key=lambda s: (s["component"], s["name"]))
        self.assertEqual(len(got), len(exp))
        for g, e in zip(got, exp):
            for k in ("name", "component", "size", "header_size", "tensors", "bytes"):
                self.assertEqual(g[k], e[k], (g, k))
            self.assertTrue(os.path.samefile(g["path"], os.path.join(
                os.path.dirname(g["path"]), e["name"])))
        self.assertEqual(sum(c["tensors"] for c in d["components"]), len(tensors))
        self.assertEqual(d["metadata"], ref.metadata())
        self.check_modules(d["modules"], ref)
        self.check_largest(d["largest"], ref, len(tensors))
        return d

    def check_modules(self, root, ref):
        """Every node, every run instance, against the reference trie."""
        trie = ref.trie()
        self.assertEqual((root["tensors"], root["params"], root["bytes"]),
                         tuple(trie["count"]))
        self.assertEqual(root["name"], "")
        self.assertEqual(root["path"], "")
        multi = len(ref.components) > 1
        seen = [0]

        def same(a, b):
            """Same structure (the collapse rule): names, dtypes and shapes below."""
            ta, tb = a["tensor"], b["tensor"]
            if (ta is None) != (tb is None):
                return False
            if ta and (ta["dtype"], ta["shape"]) != (tb["dtype"], tb["shape"]):
                return False
            return a["kids"].keys() == b["kids"].keys() and all(
                same(a["kids"][k], b["kids"][k]) for k in a["kids"])

        def walk(node, refs, path, depth):
            """@node: JSON; @refs: the reference nodes it stands for."""
            seen[0] += 1
            self.assertEqual(node["path"], path)
            for r in refs:
                self.assertEqual([node["tensors"], node["params"], node["bytes"]], r["count"],
                                 path)
                self.assertTrue(same(r, refs[0]), path)
            t = refs[0]["tensor"]
            if t is not None:
                self.assertEqual((node["dtype"], node["shape"]), (t["dtype"], t["shape"]))
            else:
                self.assertNotIn("dtype", node)
            kids = node.get("children", [])
            covered = []
            for c in kids:
                if c["repeat"] > 1:
                    self.assertEqual(c["name"], "{%d..%d}" % (c["first"], c["last"]))
                    self.assertEqual(c["last"] - c["first"] + 1, c["repeat"])
                    names = [str(i) for i in range(c["first"], c["last"] + 1)]
                else:
                    self.assertNotIn("first", c)
                    names = [c["name"]]
                covered += names
                sep = "" if depth == 0 else "/" if (multi and depth == 1) else "."
                walk(c, [r["kids"][n] for r in refs for n in names],
                     path + sep + c["name"], depth + 1)
            # every child of the reference appears once; numbered runs are maximal
            self.assertEqual(sorted(covered), sorted(refs[0]["kids"]), path)
            nums = [c for c in kids if c["name"].isdigit() or c["repeat"] > 1]
            for a, b in zip(nums, nums[1:]):
                last = a["last"] if a["repeat"] > 1 else int(a["name"])
                first = b["first"] if b["repeat"] > 1 else int(b["name"])
                if (first == last + 1 and not a["name"].startswith("0") or a["name"] == "0") \
                        and str(first) == (b["name"] if b["repeat"] == 1 else str(b["first"])):
                    self.assertFalse(same(refs[0]["kids"][str(last)], refs[0]["kids"][str(first)]),
                                     "%s: %s and %s should have collapsed" % (path, a["name"],
                                                                             b["name"]))

        walk(root, [trie], "", 0)
        self.assertGreater(seen[0], 0)

    def check_largest(self, largest, ref, n):
        self.assertEqual(len(largest), n)
        sizes = [x["bytes"] for x in largest]
        self.assertEqual(sizes, sorted((t["bytes"] for t in ref.tensors), reverse=True))
        by = {(t["component"], t["name"]): t for t in ref.tensors}
        for x in largest:
            t = by[(x["component"], x["name"])]
            self.assertEqual((x["dtype"], x["shape"], x["params"], x["bytes"], x["shard"],
                              x["offset"]),
                             (t["dtype"], t["shape"], t["params"], t["bytes"], t["shard"],
                              t["offset"]))

    def test_presets(self):
        for preset, extra in self.MODELS:
            with self.subTest(preset=preset):
                out = self.path(preset)
                gen(preset, out, *extra)
                src = out
                if preset in ("tiny", "dtypes", "odd"):
                    src = os.path.join(out, "model.safetensors")
                self.check_model(src, Reference(src))

    def test_index_source_and_directory_agree(self):
        gen("llama", self.tmp, "--shards", "3")
        a = ctl_json("inspect", self.tmp)
        b = ctl_json("inspect", self.path("model.safetensors.index.json"))
        del a["source"], b["source"]
        self.assertEqual(a, b)

    def test_llama_collapse_and_depth(self):
        gen("llama", self.tmp, "--shards", "3", "--layers", "32")
        d = ctl_json("inspect", self.tmp, "--depth", "3")
        model = [c for c in d["modules"]["children"] if c["name"] == "model"][0]
        layers = [c for c in model["children"] if c["name"] == "layers"][0]
        self.assertEqual(len(layers["children"]), 1)
        run_ = layers["children"][0]
        self.assertEqual((run_["name"], run_["repeat"], run_["first"], run_["last"]),
                         ("{0..31}", 32, 0, 31))
        self.assertEqual(run_["path"], "model.layers.{0..31}")
        self.assertNotIn("children", run_)  # depth 3 stops here
        self.assertEqual(layers["tensors"], 32 * 9)
        self.assertEqual(layers["params"], 32 * run_["params"])
        self.assertEqual(d["depth"], 3)

        def depth(n):
            return 1 + max((depth(c) for c in n.get("children", [])), default=-1)

        for k in (1, 2, 5):
            self.assertEqual(depth(ctl_json("inspect", self.tmp, "--depth", str(k))["modules"]),
                             k)
        self.assertEqual(depth(ctl_json("inspect", self.tmp, "--depth", "0")["modules"]), 6)
        self.assertEqual(ctl_json("inspect", self.tmp, "--top", "0")["largest"], [])
        self.assertEqual(len(ctl_json("inspect", self.tmp)["largest"]), 10)
        # text: the same numbers, the run as N x one instance
        p = run("inspect", self.tmp)
        self.assertEqual(p.returncode, 0)
        text = p.stdout.decode()
        self.assertIn("tensors:     %s\n" % format(d["tensors"], ","), text)
        self.assertIn("params:      %s (" % format(d["params"], ","), text)
        self.assertIn("bytes:       %s (" % format(d["bytes"], ","), text)
        self.assertIn("32 x 9      {0..31}", text)
        self.assertIn("total_size: %d" % d["bytes"], text)

    def test_moe_nested_runs(self):
        gen("moe", self.tmp, "--experts", "64")
        d = ctl_json("inspect", self.tmp, "--depth", "0")
        node = d["modules"]
        for name in ("model", "layers", "{0..3}", "mlp", "experts", "{0..63}"):
            node = [c for c in node["children"] if c["name"] == name][0]
        self.assertEqual(node["path"], "model.layers.{0..3}.mlp.experts.{0..63}")
        self.assertEqual(node["repeat"], 64)
        self.assertEqual(node["tensors"], 3)

    def test_hostile_deep_name(self):
        """A name of 100,000 parts: the tree is cut at 64 levels, counts stay exact."""
        name = ".".join(["a"] * 100000)
        src = self.path("deep.safetensors")
        write_st(src, [(name, "F32", [2], b"\0" * 8), ("b", "U8", [1], b"\1")])
        d = ctl_json("inspect", src, "--depth", "0")
        node, depth = d["modules"], 0
        while "children" in node:
            node = node["children"][0]
            depth += 1
        self.assertEqual(depth, 64)
        self.assertEqual(node["path"], ".".join(["a"] * 64))
        self.assertEqual((node["tensors"], node["params"], node["bytes"]), (1, 2, 8))
        self.assertEqual((d["tensors"], d["params"], d["bytes"]), (2, 3, 9))
        self.assertEqual(run("inspect", src, "--depth", "0").returncode, 0)

    def test_big_preset_fast(self):
        """The 100,000-tensor set: exact counts; the time is reported, not judged."""
        gen("big", self.tmp)
        t0 = time.monotonic()
        p = run("inspect", self.tmp, "--json")
        secs = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        d = json.loads(p.stdout)
        self.assertEqual(d["tensors"], 100000)
        self.assertEqual(d["params"], 800000)
        self.assertEqual(d["bytes"], 1600000)
        self.assertEqual(len(d["shards"]), 160)
        self.assertEqual(d["dtypes"], {"BF16": {"tensors": 100000, "params": 800000,
                                                "bytes": 1600000}})
        layers = d["modules"]["children"][0]["children"][0]
        self.assertEqual([c["name"] for c in layers["children"]], ["{0..129}", "130"])
        sys.stderr.write("\n  inspect of the big preset (100,000 tensors, 160 shards): "
                         "%.3f s\n" % secs)


# ------------------------------------------------------------ malformed


def cases():
    """(name, builder(dir) -> source, [expected fragments, in order]).

    Each fragment is one problem: its message must contain the fragment.
    """
    c = []

    def one(name, header, data_len, frags, size_field=None):
        def b(d):
            p = os.path.join(d, "m.safetensors")
            write_raw(p, header, data_len, size_field)
            return p
        c.append((name, b, frags))

    ok = ent("F32", [2], 0, 8)

    def short(d):
        p = os.path.join(d, "m.safetensors")
        with open(p, "wb") as f:
            f.write(b"\x01\x02\x03")
        return p

    c.append(("file_too_short", short, ["byte 0: file is 3 bytes, too short"]))
    one("header_over_limit", b"{}", 0, ["byte 0: header size 100000001 exceeds the limit"],
        size_field=100000001)
    one("header_past_end", b"{}", 0, ["byte 0: header size 4096 runs past the end"],
        size_field=4096)
    one("not_json", b"{\"a\":", 0, ["byte 13: header is not valid JSON"])
    one("nul_padding", json.dumps({"t": ok}).encode() + b"\0\0\0", 8,
        ["header is not valid JSON"])
    one("duplicate_key", b'{"t":' + json.dumps(ok).encode() + b',"t":'
        + json.dumps(ok).encode() + b"}", 8, ["header is not valid JSON: duplicate object key"])
    one("invalid_utf8", b'{"t\xff":' + json.dumps(ok).encode() + b"}", 8,
        ["header is not valid JSON"])
    one("nul_in_name", b'{"a\\u0000b":' + json.dumps(ok).encode() + b"}", 8,
        ["header is not valid JSON"])
    one("not_object", b"[1, 2]", 0, ["byte 8: header is not a JSON object"])
    one("metadata_not_object", {"__metadata__": [1], "t": ok}, 8,
        ['"__metadata__" is not an object'])
    one("metadata_value", {"__metadata__": {"k": 1}, "t": ok}, 8,
        ["\"__metadata__\" value of 'k' is not a string"])
    one("entry_not_object", {"t": [1]}, 0, ["tensor 't': entry is not an object"])
    one("unknown_key", {"t": dict(ok, extra=1)}, 8, ["tensor 't': unknown key 'extra'"])
    one("dtype_missing", {"t": {"shape": [2], "data_offsets": [0, 8]}}, 8,
        ["tensor 't': \"dtype\" is missing or not a string"])
    one("dtype_unknown", {"t": ent("F17", [2], 0, 8)}, 8, ["tensor 't': unknown dtype 'F17'"])
    one("dtype_case", {"t": ent("f32", [2], 0, 8)}, 8, ["tensor 't': unknown dtype 'f32'"])
    one("shape_missing", {"t": {"dtype": "F32", "data_offsets": [0, 8]}}, 8,
        ["tensor 't': \"shape\" is missing or not an array"])
    one("shape_negative", {"t": ent("F32", [-2], 0, 8)}, 8,
        ["tensor 't': \"shape\" dimension 0 is not a non-negative integer"])
    one("shape_float", {"t": ent("F32", [1, 2.0], 0, 8)}, 8,
        ["tensor 't': \"shape\" dimension 1 is not a non-negative integer"])
    one("shape_overflow", {"t": ent("U8", [2 ** 32, 2 ** 32], 0, 8)}, 8,
        ["tensor 't': element count of \"shape\" overflows 64 bits"])
    # An entry whose offsets cannot be read has no place in the data buffer:
    # the bytes it would cover are reported too (every hole and trailing byte).
    one("offsets_missing", {"t": {"dtype": "F32", "shape": [2]}}, 8,
        ["tensor 't': \"data_offsets\" is missing or not two non-negative integers",
         "8 trailing bytes"])
    one("offsets_three", {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}}, 8,
        ["tensor 't': \"data_offsets\" is missing", "8 trailing bytes"])
    one("begin_after_end", {"t": ent("F32", [2], 8, 0)}, 8,
        ["tensor 't': data_offsets begin 8 > end 0", "8 trailing bytes"])
    one("bits_overflow", {"t": ent("F64", [2 ** 31, 2 ** 31], 0, 8)}, 8,
        ["tensor 't': bit count of shape [2147483648, 2147483648] overflows 64 bits"])
    one("partial_byte", {"t": ent("F4", [3], 0, 2)}, 2,
        ["tensor 't': 3 elements of F4 (4 bits) are not a whole number of bytes"])
    one("span_mismatch", {"t": ent("F32", [3], 0, 8)}, 8,
        ["tensor 't': data_offsets [0, 8] span 8 bytes but F32 [3] needs 12 bytes"])
    one("past_data", {"t": ent("F32", [2], 0, 8)}, 4,
        ["tensor 't': data_offsets end 8 is past the end of the data buffer (4 bytes)",
         "4 trailing bytes"])
    one("hole", {"a": ent("F32", [1], 0, 4), "b": ent("F32", [1], 8, 12)}, 12,
        ["hole of 4 bytes in the data buffer before tensor 'b'"])
    one("overlap", {"a": ent("F32", [2], 0, 8), "b": ent("F32", [1], 4, 8)}, 8,
        ["tensor 'b' overlaps tensor 'a'"])
    one("trailing", {"a": ent("F32", [1], 0, 4)}, 9,
        ["5 trailing bytes after the last tensor are not covered by any tensor"])
    one("trailing_empty", {}, 3, ["3 trailing bytes after the last tensor"])

    # index rules: shards a.safetensors (tensors x, y) and b.safetensors (z)
    def good_shards(d):
        write_st(os.path.join(d, "a.safetensors"),
                 [("x", "F32", [1], b"\0" * 4), ("y", "F32", [1], b"\0" * 4)])
        write_st(os.path.join(d, "b.safetensors"), [("z", "F32", [1], b"\0" * 4)])

    def index(name, body, frags, shards=good_shards):
        def b(d):
            shards(d)
            p = os.path.join(d, "model.safetensors.index.json")
            with open(p, "w") as f:
                f.write(body if isinstance(body, str) else json.dumps(body))
            return p
        c.append((name, b, frags))

    wm = {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}
    index("index_not_json", "{", ["index is not valid JSON"])
    index("index_no_weight_map", {"metadata": {}}, ['index has no "weight_map" object'])
    index("index_weight_map_array", {"weight_map": []}, ['index has no "weight_map" object'])
    index("index_empty", {"weight_map": {}}, ['index "weight_map" is empty'])
    index("index_value_not_string", {"weight_map": dict(wm, z=1)},
          ["tensor 'z': weight_map value is not a string"])
    for bad in ("../b.safetensors", "sub/b.safetensors", ".", "..", ""):
        index("index_not_plain_" + (bad.replace("/", "_").replace(".", "dot") or "empty"),
              {"weight_map": dict(wm, z=bad)},
              ["tensor 'z': weight_map value '%s' is not a plain file name" % bad])
    index("index_missing_shard", {"weight_map": dict(wm, w="c.safetensors")},
          ["shard 'c.safetensors' listed in weight_map does not exist"])
    index("index_unlisted", {"weight_map": {"x": "a.safetensors", "z": "b.safetensors"}},
          ["a.safetensors: tensor 'y' is not listed in the index"])
    index("index_other_shard", {"weight_map": dict(wm, y="b.safetensors")},
          ["a.safetensors: tensor 'y' is listed in the index",
           "tensor 'y' is listed but not in shard 'b.safetensors'"])
    index("index_listed_not_in_shard", {"weight_map": dict(wm, w="b.safetensors")},
          ["tensor 'w' is listed but not in shard 'b.safetensors'"])

    def dir_shard(d):
        good_shards(d)
        os.mkdir(os.path.join(d, "c.safetensors"))

    index("index_shard_is_directory", {"weight_map": dict(wm, w="c.safetensors")},
          ["c.safetensors: not a regular file"], shards=dir_shard)

    def empty_dir(d):
        os.mkdir(os.path.join(d, "empty"))
        return os.path.join(d, "empty")

    c.append(("directory_without_model", empty_dir,
              ["no .safetensors file or index in this directory"]))

    def same_name(d):
        write_st(os.path.join(d, "top", "unet.safetensors"), [("a", "F32", [1], b"\0" * 4)])
        write_st(os.path.join(d, "top", "unet", "x.safetensors"), [("a", "F32", [1], b"\0" * 4)])
        return os.path.join(d, "top")

    c.append(("two_sets_one_name", same_name, ["two sets would mount under the same or nested names ('unet')"]))
    return c


CASES = cases()


class Verify(TmpDir):
    def verify(self, src):
        p = run("verify", src, "--json")
        d = json.loads(p.stdout)
        return p.returncode, d

    def stfs_line(self, src):
        """The one line stfs prints when it refuses @src, or None without --stfs."""
        if not STFS:
            return None
        mnt = self.path("mnt")
        os.makedirs(mnt, exist_ok=True)
        p = subprocess.run([STFS, "-f", src, mnt], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 1, "stfs accepted a malformed source")
        line = p.stderr.decode().strip().splitlines()[0]
        self.assertTrue(line.startswith("stfs: "), line)
        return line[len("stfs: "):]

    def test_sound_models(self):
        for preset, extra in Inspect.MODELS + [("big", ("--tensors", "3000", "--shards", "7"))]:
            with self.subTest(preset=preset):
                out = self.path(preset)
                gen(preset, out, *extra)
                rc, d = self.verify(out)
                self.assertEqual(rc, 0, d)
                self.assertEqual(d["problems"], [])
                self.assertTrue(d["sound"])
                self.assertIsNone(d["scan"])
                p = run("verify", out)
                self.assertEqual(p.returncode, 0)
                self.assertTrue(p.stdout.startswith(b"sound: "), p.stdout)

    def test_every_rule(self):
        for name, build, frags in CASES:
            with self.subTest(case=name):
                d = self.path(name)
                os.makedirs(d)
                src = build(d)
                rc, out = self.verify(src)
                self.assertEqual(rc, 1, out)
                self.assertFalse(out["sound"])
                msgs = [p["message"] for p in out["problems"]]
                self.assertEqual(len(msgs), len(frags), msgs)
                for m, f in zip(msgs, frags):
                    self.assertIn(f, m)
                for p in out["problems"]:
                    # FILE: WHERE: RULE, FILE first
                    self.assertTrue(p["message"].startswith(p["file"] + ": ")
                                    or p["message"].startswith(p["file"] + " and "), p)
                    if p["tensor"] is not None:
                        self.assertIn("'%s'" % p["tensor"], p["message"])
                    if p["offset"] is not None and "byte " in p["message"] \
                            and not p["tensor"]:
                        self.assertIn("byte %d" % p["offset"], p["message"])
                # the same first line as the mount's refusal
                line = self.stfs_line(src)
                if line is not None:
                    self.assertEqual(line, msgs[0])
                # text mode: the same lines, then the count
                p = run("verify", src)
                self.assertEqual(p.returncode, 1)
                lines = p.stdout.decode().splitlines()
                self.assertEqual(lines[:-1], msgs)
                self.assertEqual(lines[-1], "%d problem%s found" % (len(msgs),
                                                                    "" if len(msgs) == 1 else "s"))
                # inspect refuses it with the first problem
                p = run("inspect", src)
                self.assertEqual(p.returncode, 1)
                self.assertIn(msgs[0], p.stderr.decode())

    def test_offsets_and_tensors(self):
        hdr = {"a": ent("F32", [1], 0, 4), "bad": ent("F17", [1], 4, 8),
               "b": ent("F32", [1], 12, 16)}
        src = self.path("m.safetensors")
        write_raw(src, hdr, 16)
        n, _ = header_of(src)
        rc, d = self.verify(src)
        self.assertEqual(rc, 1)
        probs = d["problems"]
        self.assertEqual(len(probs), 2, probs)
        self.assertEqual((probs[0]["tensor"], probs[0]["offset"]), ("bad", 8 + n + 4))
        self.assertIn("unknown dtype 'F17'", probs[0]["message"])
        # the broken entry keeps its place: the hole is after it, not before
        self.assertEqual((probs[1]["tensor"], probs[1]["offset"]), ("b", 8 + n + 8))
        self.assertIn("byte %d: hole of 4 bytes" % (8 + n + 8), probs[1]["message"])

    def test_many_problems_in_one_file(self):
        hdr = {"__metadata__": {"a": 1, "b": "ok", "c": [2]},
               "t1": ent("F17", [2], 0, 8),
               "t2": ent("F32", [2], 16, 24),
               "t3": ent("F32", [3], 20, 28),
               "t4": ent("F32", [2], 24, 30),
               "t6": ent("F32", [-1], 40, 44),
               "t7": ent("F32", [1], 44, 48)}
        src = self.path("m.safetensors")
        write_raw(src, hdr, 52)
        rc, d = self.verify(src)
        self.assertEqual(rc, 1)
        msgs = [p["message"] for p in d["problems"]]
        want = ["value of 'a' is not a string", "value of 'c' is not a string",
                "tensor 't1': unknown dtype 'F17'",
                "tensor 't3': data_offsets [20, 28] span 8 bytes but F32 [3] needs 12",
                "tensor 't4': data_offsets [24, 30] span 6 bytes but F32 [2] needs 8",
                "tensor 't6': \"shape\" dimension 0 is not a non-negative integer",
                "hole of 8 bytes in the data buffer before tensor 't2'",
                "tensor 't3' overlaps tensor 't2'",
                "tensor 't4' overlaps tensor 't3'",
                "hole of 10 bytes in the data buffer before tensor 't6'",
                "4 trailing bytes after the last tensor"]
        self.assertEqual(len(msgs), len(want), msgs)
        for m, w in zip(msgs, want):
            self.assertIn(w, m)

    def test_unplaced_entry(self):
        """An entry without readable offsets: the bytes it may cover are reported too."""
        hdr = {"a": ent("F32", [2], 0, 8), "b": ent("F32", [1], 4, 8), "lost": "x",
               "c": ent("F32", [1], 12, 16)}
        src = self.path("m.safetensors")
        write_raw(src, hdr, 20)
        rc, d = self.verify(src)
        msgs = [p["message"] for p in d["problems"]]
        self.assertEqual(len(msgs), 4, msgs)
        self.assertIn("tensor 'lost': entry is not an object", msgs[0])
        self.assertIn("tensor 'b' overlaps tensor 'a'", msgs[1])
        self.assertIn("hole of 4 bytes in the data buffer before tensor 'c'", msgs[2])
        self.assertIn("4 trailing bytes", msgs[3])

    def test_many_problems_in_a_set(self):
        """Every problem of a sharded set once; none reported twice downstream."""
        d = self.tmp
        write_st(os.path.join(d, "s1.safetensors"),
                 [("a", "F32", [1], b"\0" * 4), ("b", "F32", [1], b"\0" * 4),
                  ("extra", "F32", [1], b"\0" * 4)])
        write_raw(os.path.join(d, "s2.safetensors"), {"c": ent("F17", [1], 0, 4)}, 4)
        write_st(os.path.join(d, "s3.safetensors"), [("e", "F32", [1], b"\0" * 4)])
        wm = {"a": "s1.safetensors", "b": "s3.safetensors", "c": "s2.safetensors",
              "d": "missing.safetensors", "e": "s3.safetensors", "f": "../etc",
              "g": "s1.safetensors", "h": "gone.safetensors"}
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"weight_map": wm}, f)
        rc, out = self.verify(d)
        self.assertEqual(rc, 1)
        msgs = [p["message"] for p in out["problems"]]
        want = ["tensor 'f': weight_map value '../etc' is not a plain file name",
                "shard 'gone.safetensors' listed in weight_map does not exist",
                "shard 'missing.safetensors' listed in weight_map does not exist",
                "s2.safetensors: tensor 'c': unknown dtype 'F17'",
                "s1.safetensors: tensor 'b' is listed in the index",
                "s1.safetensors: tensor 'extra' is not listed in the index",
                "tensor 'b' is listed but not in shard 's3.safetensors'",
                "tensor 'g' is listed but not in shard 's1.safetensors'"]
        self.assertEqual(len(msgs), len(want), msgs)
        for m, w in zip(msgs, want):
            self.assertIn(w, m)
        line = self.stfs_line(d)
        if line is not None:
            self.assertEqual(line, msgs[0])

    def test_directory_with_a_bad_index(self):
        """A broken index in a directory: reported; its shards still checked alone."""
        write_st(self.path("m-1.safetensors"), [("a", "F32", [1], b"\0" * 4)])
        write_raw(self.path("m-2.safetensors"), {"b": ent("F32", [2], 0, 4)}, 4)
        with open(self.path("m.safetensors.index.json"), "w") as f:
            f.write("{not json")
        rc, out = self.verify(self.tmp)
        self.assertEqual(rc, 1)
        msgs = [p["message"] for p in out["problems"]]
        self.assertEqual(len(msgs), 2, msgs)
        self.assertIn("index is not valid JSON", msgs[0])
        self.assertIn("m-2.safetensors: tensor 'b': data_offsets [0, 4] span 4", msgs[1])


# ------------------------------------------------------------------ scan


def scan_json(src, *extra, expect=None):
    p = run("verify", src, "--scan", "--json", *extra, timeout=300)
    d = json.loads(p.stdout)
    if expect is not None:
        assert p.returncode == expect, (p.returncode, p.stderr)
    return p.returncode, d


class Scan(TmpDir):
    def reference(self, src):
        ref = Reference(src)
        out = {}
        for t in ref.tensors:
            n, i = nan_inf(t["dtype"], t["data"])
            out[(t["component"], t["name"])] = {
                "nan": n, "inf": i,
                "all_zero": len(t["data"]) > 0 and not any(t["data"])}
        return out

    def compare(self, src, *extra):
        rc, d = scan_json(src, *extra)
        ref = self.reference(src)
        got = {(t["component"], t["name"]): {k: t[k] for k in ("nan", "inf", "all_zero")}
               for t in d["scan"]["tensors"]}
        self.assertEqual(got, ref)
        bad = any(v["nan"] or v["inf"] for v in ref.values())
        self.assertEqual(rc, 1 if bad else 0)
        s = d["scan"]
        self.assertEqual(s["nan"], sum(v["nan"] or 0 for v in ref.values()))
        self.assertEqual(s["inf"], sum(v["inf"] or 0 for v in ref.values()))
        self.assertEqual(s["nan_tensors"], sum(1 for v in ref.values() if v["nan"]))
        self.assertEqual(s["inf_tensors"], sum(1 for v in ref.values() if v["inf"]))
        self.assertEqual(s["all_zero_tensors"], sum(1 for v in ref.values() if v["all_zero"]))
        return d

    def test_random_presets_against_numpy(self):
        for preset, extra in (("dtypes", ()), ("llama", ("--shards", "3")), ("moe", ()),
                              ("diffusers", ())):
            with self.subTest(preset=preset):
                out = self.path(preset)
                gen(preset, out, *extra)
                self.compare(out)

    def test_every_code_of_every_float_type(self):
        rng = np.random.default_rng(1)
        codes8 = np.arange(256, dtype=np.uint8).tobytes()
        codes16 = np.arange(65536, dtype=np.uint16).astype("<u2").tobytes()
        tensors = [("f8." + f, f, [256], codes8) for f in F8_NAN]
        tensors += [("h.F16", "F16", [65536], codes16), ("h.BF16", "BF16", [65536], codes16),
                    ("h.I16", "I16", [65536], codes16)]
        for dt, n in (("F32", 50000), ("F64", 30000), ("C64", 30000)):
            b = bytearray(rng.bytes(n * BITS[dt] // 8))
            # force many exponent-all-ones values
            step = BITS[dt] // 8
            hi = {"F32": (0x7f, 0x80), "F64": (0x7f, 0xf0), "C64": (0x7f, 0x80)}[dt]
            for k in range(0, len(b), step * 3):
                b[k + step - 1] = hi[0] | (b[k + step - 1] & 0x80)
                b[k + step - 2] |= hi[1]
            tensors.append(("r." + dt, dt, [n], bytes(b)))
        tensors += [("z.u8", "U8", [1000], b"\0" * 1000), ("z.f4", "F4", [8], b"\0" * 4),
                    ("z.empty", "F32", [0], b""), ("n.f6", "F6_E2M3", [4], b"\xff" * 3)]
        write_st(self.path("m.safetensors"), tensors)
        d = self.compare(self.path("m.safetensors"))
        byname = {t["name"]: t for t in d["scan"]["tensors"]}
        self.assertEqual((byname["f8.F8_E5M2"]["nan"], byname["f8.F8_E5M2"]["inf"]), (6, 2))
        self.assertEqual((byname["f8.F8_E4M3"]["nan"], byname["f8.F8_E4M3"]["inf"]), (2, 0))
        self.assertEqual(byname["f8.F8_E4M3FNUZ"]["nan"], 1)
        self.assertEqual(byname["f8.F8_E5M2FNUZ"]["nan"], 1)
        self.assertEqual(byname["f8.F8_E8M0"]["nan"], 1)
        self.assertEqual((byname["h.F16"]["nan"], byname["h.F16"]["inf"]), (2046, 2))
        self.assertEqual((byname["h.BF16"]["nan"], byname["h.BF16"]["inf"]), (254, 2))
        self.assertIsNone(byname["h.I16"]["nan"])
        self.assertIsNone(byname["n.f6"]["inf"])
        self.assertTrue(byname["z.u8"]["all_zero"])
        self.assertTrue(byname["z.f4"]["all_zero"])
        self.assertFalse(byname["z.empty"]["all_zero"])

    def planted(self):
        """A model of finite values with NaN/Inf planted at known places."""
        rng = np.random.default_rng(7)
        fin32 = rng.uniform(-2, 2, 300000).astype("<f4")
        fin16 = rng.uniform(-2, 2, 4096).astype("<f2")
        bf16 = (rng.uniform(-2, 2, 4096).astype("<f4").view("<u4") >> 16).astype("<u2")
        fin64 = rng.uniform(-2, 2, 1000).astype("<f8")
        c64 = (rng.uniform(-1, 1, 500) + 1j * rng.uniform(-1, 1, 500)).astype("<c8")
        e4m3 = rng.integers(0, 0x7f, 1000, dtype=np.uint8)  # 0x7f excluded: finite
        e5m2 = rng.integers(0, 0x7c, 1000, dtype=np.uint8)
        fnuz = rng.integers(0, 0x80, 1000, dtype=np.uint8)
        e8m0 = rng.integers(0, 0xff, 1000, dtype=np.uint8)
        fin32[[0, 12345, 299999]] = np.nan
        fin32[[77, 200000]] = [np.inf, -np.inf]
        fin16[4095] = np.nan
        fin16[[1, 2]] = -np.inf
        bf16[[10, 20, 30]] = [0x7fc0, 0xff81, 0x7f80]   # NaN, NaN, +Inf
        fin64[[999]] = -np.inf
        c64[[3, 4, 5]] = [complex(np.nan, 0), complex(0, np.inf), complex(np.inf, np.nan)]
        e4m3[[5, 6]] = [0x7f, 0xff]
        e5m2[[0, 1, 2]] = [0x7c, 0xfd, 0xfc]
        fnuz[[9]] = [0x80]
        e8m0[[999]] = [0xff]
        tensors = [
            ("a.f32", "F32", [300000], fin32.tobytes()),
            ("a.f16", "F16", [64, 64], fin16.tobytes()),
            ("a.bf16", "BF16", [4096], bf16.tobytes()),
            ("a.f64", "F64", [1000], fin64.tobytes()),
            ("a.c64", "C64", [500], c64.tobytes()),
            ("b.e4m3", "F8_E4M3", [1000], e4m3.tobytes()),
            ("b.e5m2", "F8_E5M2", [1000], e5m2.tobytes()),
            ("b.e4m3fnuz", "F8_E4M3FNUZ", [1000], fnuz.tobytes()),
            ("b.e8m0", "F8_E8M0", [1000], e8m0.tobytes()),
            ("c.zeros", "BF16", [100, 100], b"\0" * 20000),
            ("c.clean", "F32", [100], np.ones(100, "<f4").tobytes()),
            ("c.ints", "I32", [100], np.full(100, -1, "<i4").tobytes()),
        ]
        expect = {"a.f32": (3, 2), "a.f16": (1, 2), "a.bf16": (2, 1), "a.f64": (0, 1),
                  "a.c64": (2, 2), "b.e4m3": (2, 0), "b.e5m2": (1, 2), "b.e4m3fnuz": (1, 0),
                  "b.e8m0": (1, 0), "c.zeros": (0, 0), "c.clean": (0, 0),
                  "c.ints": (None, None)}
        return tensors, expect

    def test_planted_found_exactly(self):
        tensors, expect = self.planted()
        src = self.path("m.safetensors")
        write_st(src, tensors, metadata={"format": "pt"})
        results = []
        for threads in ("1", "3", "8"):
            rc, d = scan_json(src, "--threads", threads)
            self.assertEqual(rc, 1)
            got = {t["name"]: (t["nan"], t["inf"]) for t in d["scan"]["tensors"]}
            self.assertEqual(got, expect)
            zero = {t["name"] for t in d["scan"]["tensors"] if t["all_zero"]}
            self.assertEqual(zero, {"c.zeros"})
            results.append(d["scan"]["tensors"])
        self.assertEqual(results[0], results[1])
        self.assertEqual(results[0], results[2])
        # the text report lists exactly the tensors with findings
        p = run("verify", src, "--scan")
        self.assertEqual(p.returncode, 1)
        lines = p.stdout.decode().splitlines()
        self.assertEqual(lines[0], "sound: 1 shard, 12 tensors, %s bytes of data"
                         % format(sum(len(t[3]) for t in tensors), ","))
        listed = [ln.split()[0] for ln in lines[1:-1]]
        self.assertEqual(listed, sorted([k for k, v in expect.items() if v[0] or v[1]]
                                        + ["c.zeros"]))
        self.assertIn("a.f32  F32  NaN 3  Inf 2", lines)
        self.assertIn("b.e4m3  F8_E4M3  NaN 2", lines)
        self.assertIn("c.zeros  BF16  all zeros", lines)
        self.assertTrue(lines[-1].startswith("scan: 12 tensors"))
        self.assertIn("8 with NaN (13 values), 6 with Inf (10 values), 1 all zeros", lines[-1])
        # and the model stays clean when nothing is planted
        clean = [t for t in tensors if t[0] in ("c.clean", "c.ints", "c.zeros")]
        write_st(self.path("clean.safetensors"), clean)
        rc, d = scan_json(self.path("clean.safetensors"))
        self.assertEqual(rc, 0)

    def test_scan_skipped_when_malformed(self):
        src = self.path("m.safetensors")
        write_raw(src, {"t": ent("F17", [1], 0, 4)}, 4)
        rc, d = scan_json(src)
        self.assertEqual(rc, 1)
        self.assertIsNone(d["scan"])
        p = run("verify", src, "--scan")
        self.assertIn(b"scan skipped", p.stdout)

    def test_memory_stays_flat(self):
        """A 768 MiB model (sparse: no disk used) scanned in far less memory."""
        size = 768 << 20
        st = os.statvfs(self.tmp)
        src = self.path("big.safetensors")
        hdr = json.dumps({"w": ent("U8", [size], 0, size)}).encode()
        hdr += b" " * (-len(hdr) % 8)
        with open(src, "wb") as f:
            f.write(struct.pack("<Q", len(hdr)))
            f.write(hdr)
            f.truncate(8 + len(hdr) + size)
        if os.stat(src).st_blocks * 512 > (64 << 20) or st.f_bavail * st.f_frsize < (64 << 20):
            self.skipTest("no sparse files here")
        # Read its output, then reap it with wait4 for its own peak RSS.
        proc = subprocess.Popen([STFSCTL, "verify", src, "--scan", "--json", "--threads", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.assertEqual(proc.returncode, 0)
        d = json.loads(out)
        self.assertTrue(d["scan"]["tensors"][0]["all_zero"])
        self.assertEqual(d["scan"]["bytes"], size)
        maxrss = usage.ru_maxrss * 1024
        sys.stderr.write("\n  scan of a 768 MiB model: peak RSS %.1f MiB\n" % (maxrss / 2 ** 20))
        self.assertLess(maxrss, 160 << 20)

    def test_progress_bar_on_a_terminal_only(self):
        tensors, _ = self.planted()
        src = self.path("m.safetensors")
        write_st(src, tensors)
        # not a terminal: no bar
        p = run("verify", src, "--scan")
        self.assertNotIn(b"scan [", p.stderr)
        # a terminal on stderr: the bar, then the line cleared
        master, slave = pty.openpty()
        proc = subprocess.Popen([STFSCTL, "verify", src, "--scan"], stdout=subprocess.PIPE,
                                stderr=slave)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 1)
            if not r:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        proc.communicate(timeout=60)
        os.close(master)
        self.assertIn(b"scan [", seen)
        self.assertIn(b"%", seen)
        self.assertTrue(seen.rstrip(b" ").endswith(b"\r"), seen[-80:])


# C0/DEL, C1 as UTF-8, bidi controls, or a byte that is not UTF-8: none may
# reach a terminal (core/text.h). Decoded with surrogateescape so bad bytes show.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                    "\u2066-\u2069\udc80-\udcff]")


class Jobs(TmpDir):
    """stfsctl's job commands against a mount of a model with hostile
    names: what the daemon says about them (a refusal's reason, a job's
    error) reaches the terminal escaped, and so does the daemon's log."""

    NAMES = {"csi\u009b[31m.w": "csi\\xc2\\x9b[31m.w", "rlo\u202egnp.w": "rlo\\xe2\\x80\\xaegnp.w",
             "esc\u001b]0;x\u0007.w": "esc\\x1b]0;x\\x07.w"}

    def mount(self, src, *opts):
        why = stfstest.fuse_skip_reason() or (None if STFS else "no --stfs given")
        if why:
            self.skipTest(why)
        mnt = self.path("mnt")
        os.makedirs(mnt)
        log = open(self.path("daemon.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen([STFS, "-f", *opts, src, mnt], stdout=log, stderr=log)

        def stop():
            if stfstest.mounted(mnt):
                stfstest.fusermount("-u", mnt)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                stfstest.fusermount("-uz", mnt)
        self.addCleanup(stop)
        deadline = time.monotonic() + 30
        while not stfstest.mounted(mnt):
            self.assertIsNone(proc.poll(), "stfs exited: %s" % self.log())
            self.assertLess(time.monotonic(), deadline, "not mounted")
            time.sleep(0.02)
        return mnt

    def log(self):
        with open(self.path("daemon.log"), "rb") as f:
            return f.read()

    def test_daemon_messages_escaped(self):
        src = self.path("m.safetensors")
        write_st(src, [(n, "U8", [2], b"ab") for n in self.NAMES] + [("ok.w", "U8", [2], b"cd")])
        # -o debug: the daemon logs every refused control request, with its reason
        mnt = self.mount(src, "-o", "debug")
        for name, shown in self.NAMES.items():
            pattern = name[:3] + "*"
            p = run("prefetch", mnt, pattern, "--slice", "0:0/3")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertEqual(p.stderr.decode(), "stfsctl: prefetch: tensor '%s': dim 0 (2) does "
                             "not divide by 3\n" % shown)
            self.assertEqual(UNSAFE.findall(p.stderr.decode("utf-8", "surrogateescape")), [])
        refused = [ln.decode("utf-8", "surrogateescape") for ln in self.log().splitlines()
                   if b"refused" in ln]
        self.assertEqual(len(refused), len(self.NAMES), refused)
        for ln, shown in zip(refused, self.NAMES.values()):
            self.assertEqual(ln, "stfs: control request 1 refused: tensor '%s': dim 0 (2) does "
                             "not divide by 3" % shown)
        # the job commands still work on that mount
        p = run("prefetch", mnt, "ok.w", "--wait")
        self.assertEqual(p.returncode, 0, p.stderr)


def main():
    global STFSCTL, STFS, GEN
    ap = argparse.ArgumentParser()
    ap.add_argument("--stfsctl", default=STFSCTL)
    ap.add_argument("--stfs", default=STFS)
    ap.add_argument("--gen", default=GEN)
    args, rest = ap.parse_known_args()
    STFSCTL, STFS, GEN = args.stfsctl, args.stfs, args.gen
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
