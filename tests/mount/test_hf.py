#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Mount tests of model folders as people have them (issue 14): a Hugging
Face hub cache (every file a relative link into ../../blobs), a diffusers
folder with fp16 variants, a Mistral-style folder with consolidated.safetensors
beside the HF shards, the companion files of a repository, a Git LFS pointer.

    python3 tests/mount/test_hf.py --stfs build/fs/stfs --gen tools/gen_model.py

The folders come from tools/gen_model.py (--companions, --variant, --hfcache);
the reference reader is the safetensors library, as in test_mount.py, whose
mount helpers this file uses.

Naming contract checked here (README "Hugging Face folders"):
  - a component's whole set is one file under the name of its own source
    file, at the component's place: MNT/model.safetensors for an HF set,
    MNT/unet/diffusion_pytorch_model.safetensors for a diffusers component;
  - a subtree view is D.part.safetensors, never D.safetensors: no name a
    loader opens by convention holds part of a model.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_mount as tm  # noqa: E402
from test_mount import MountCase, expected_tree  # noqa: E402

import safetensors  # noqa: E402

COMPANIONS = ("config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "README.md",
              "tokenizer.model")

# bytes per element for the alignment rule (sub-byte types: 1)
ELEM = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
        "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8, "C64": 8,
        "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1}


def snapshot_of(out, preset):
    snaps = os.path.join(out, "models--stfs--%s" % preset, "snapshots")
    return os.path.join(snaps, os.listdir(snaps)[0])


def read(path):
    with open(path, "rb") as f:
        return f.read()


def parse_st(raw):
    n = int.from_bytes(raw[:8], "little")
    doc = json.loads(raw[8:8 + n])
    doc.pop("__metadata__", None)
    return n, doc


class HfCase(MountCase):

    def check_tensors(self, m, tensors):
        """Every tensor's bytes at the path of the escaping rule (listings may
        hold companion files too)."""
        paths, _ = expected_tree((t.comp, t.name) for t in tensors)
        bad = []
        for t in tensors:
            p = m.p(paths[(t.comp, t.name)])
            try:
                got = read(p)
            except OSError as e:
                bad.append("%r: %s" % (t.name, e))
                continue
            if got != t.data:
                bad.append("%r: content differs" % t.name)
        self.assertEqual(bad[:10], [], "%d of %d tensors wrong" % (len(bad), len(tensors)))

    def tensor_files(self, m):
        """Relative paths of every tensor file (those with a name xattr)."""
        out = set()
        for d, dirs, files in os.walk(m.path):
            if os.path.relpath(d, m.path).split(os.sep)[0] == ".stfs":
                dirs[:] = []
                continue
            for f in files:
                p = os.path.join(d, f)
                try:
                    os.getxattr(p, "user.safetensors.name")
                except OSError:
                    continue
                out.add(os.path.relpath(p, m.path))
        return out

    def check_whole(self, path, tensors):
        """@path is a valid safetensors file holding exactly @tensors (names
        as in their source files)."""
        raw = read(path)
        self.assertEqual(os.stat(path).st_size, len(raw), path)
        got = {n: (i["dtype"], list(i["shape"]), bytes(i["data"]))
               for n, i in safetensors.deserialize(raw)}
        want = {t.name: (t.dtype, t.shape, t.data) for t in tensors}
        self.assertEqual(sorted(got), sorted(want), "tensor names in " + path)
        self.assertTrue(got == want, "tensor bytes in " + path)

    def check_aligned(self, path):
        raw = read(path)
        n, doc = parse_st(raw)
        self.assertEqual((8 + n) % 8, 0, "%s: data starts at %d" % (path, 8 + n))
        bad = ["%s %s at %d" % (k, v["dtype"], 8 + n + v["data_offsets"][0])
               for k, v in doc.items()
               if (8 + n + v["data_offsets"][0]) % ELEM[v["dtype"]]]
        self.assertEqual(bad[:5], [], "%s: %d tensors not aligned to their element size"
                         % (path, len(bad)))

    def check_shard_xattrs(self, m, tensors, base):
        """user.safetensors.shard is relative to @base (SOURCE, or its
        directory for a file): base/shard at offset holds the tensor."""
        paths, _ = expected_tree((t.comp, t.name) for t in tensors)
        bad = []
        for t in tensors:
            p = m.p(paths[(t.comp, t.name)])
            shard = os.getxattr(p, "user.safetensors.shard").decode()
            off = int(os.getxattr(p, "user.safetensors.offset"))
            f = os.path.join(base, shard)
            try:
                with open(f, "rb") as fh:
                    fh.seek(off)
                    ok = fh.read(len(t.data)) == t.data
            except OSError as e:
                bad.append("%r: shard %r: %s" % (t.name, shard, e))
                continue
            if not ok:
                bad.append("%r: shard %r offset %d: other bytes" % (t.name, shard, off))
        self.assertEqual(bad[:5], [], "%d bad shard xattrs" % len(bad))

    def check_companions(self, m, src, rels):
        for rel in rels:
            p = m.p(rel)
            self.assertEqual(read(p), read(os.path.join(src, rel)), rel)
            st = os.stat(p)
            self.assertEqual(st.st_mode & 0o7777, 0o444, rel)
            self.assertEqual(st.st_size, os.stat(os.path.join(src, rel)).st_size, rel)
            with self.assertRaises(OSError) as cm:
                open(p, "r+b")
            self.assertIn(cm.exception.errno, (errno.EROFS, errno.EACCES), rel)
            with self.assertRaises(OSError):
                os.getxattr(p, "user.safetensors.name")

    def check_stat_vs_read(self, m):
        """Every file of the mount: st_size == what a read returns."""
        bad = []
        n = 0
        for d, dirs, files in os.walk(m.path):
            for f in files:
                p = os.path.join(d, f)
                st = os.stat(p)
                try:
                    got = len(read(p))
                except OSError as e:
                    bad.append("%s: %s" % (p, e))
                    continue
                n += 1
                if got != st.st_size:
                    bad.append("%s: st_size %d, read %d" % (os.path.relpath(p, m.path),
                                                             st.st_size, got))
        self.assertGreater(n, 0)
        self.assertEqual(bad[:10], [], "%d of %d files" % (len(bad), n))

    def expect_refused(self, source, *opts):
        """stfs must refuse @source: exit status 1 before mounting; stderr."""
        mnt = tempfile.mkdtemp(prefix="stfs-mnt-")
        self.addCleanup(self._rmdir, mnt)
        args = [tm.STFS, "-f"]
        for o in opts:
            args += ["-o", o]
        try:
            r = subprocess.run(args + [source, mnt], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        finally:
            if tm.mounted(mnt):
                tm.fusermount("-u", mnt)
        self.assertEqual(r.returncode, 1, r.stderr.decode())
        return r.stderr.decode()


class HfCacheTest(HfCase):
    """Each SOURCE form through a hub cache of links into ../../blobs."""

    @classmethod
    def prepare(cls):
        out = os.path.join(cls.tmp, "cache")
        tm.run_gen("llama", out, "--companions", "--hfcache", "--layers", 2, "--hidden", 32)
        cls.snap = snapshot_of(out, "llama")
        shards = [os.path.join(cls.snap, "model-%05d-of-00003.safetensors" % k)
                  for k in (1, 2, 3)]
        cls.tensors, _ = cls.reference(shards)
        out1 = os.path.join(cls.tmp, "cache1")
        tm.run_gen("tiny", out1, "--companions", "--hfcache", "--layers", 1)
        cls.snap1 = snapshot_of(out1, "tiny")
        cls.tensors1, _ = cls.reference([os.path.join(cls.snap1, "model.safetensors")])

    def test_snapshot_dir(self):
        m = self.mount(self.snap)
        self.check_tensors(m, self.tensors)

    def test_index_link(self):
        """Defect: the link was resolved first and the index parsed as a
        safetensors file."""
        m = self.mount(os.path.join(self.snap, "model.safetensors.index.json"))
        self.check_tensors(m, self.tensors)
        self.check_shard_xattrs(m, self.tensors, self.snap)

    def test_index_link_relative(self):
        parent = os.path.dirname(os.path.dirname(self.snap))
        old = os.getcwd()
        os.chdir(parent)
        try:
            m = self.start(os.path.join("snapshots", os.path.basename(self.snap),
                                        "model.safetensors.index.json"))
        finally:
            os.chdir(old)
        self.wait_mounted(m)
        self.check_tensors(m, self.tensors)

    def test_shard_link(self):
        shard = os.path.join(self.snap, "model-00002-of-00003.safetensors")
        m = self.mount(shard)
        want, _ = self.reference([shard])
        self.check_tensors(m, want)
        self.check_shard_xattrs(m, want, self.snap)
        p = m.p(expected_tree([("", want[0].name)])[0][("", want[0].name)])
        self.assertEqual(os.getxattr(p, "user.safetensors.shard"),
                         b"model-00002-of-00003.safetensors")

    def test_single_file_link(self):
        m = self.mount(os.path.join(self.snap1, "model.safetensors"))
        self.check_tensors(m, self.tensors1)
        self.check_shard_xattrs(m, self.tensors1, self.snap1)
        self.check_whole(m.p("model.safetensors"), self.tensors1)

    def test_shard_xattr_relative_to_source(self):
        m = self.mount(self.snap)
        self.check_shard_xattrs(m, self.tensors, self.snap)

    def test_companions(self):
        """The small files beside the weights, byte for byte, read-only; not
        the weights, the index or hidden files."""
        for source in (self.snap, os.path.join(self.snap, "model.safetensors.index.json")):
            m = self.mount(source)
            self.check_companions(m, self.snap, COMPANIONS)
            listing = set(os.listdir(m.path))
            self.assertTrue(set(COMPANIONS) <= listing, listing)
            for rel in ("model.safetensors.index.json", "model-00001-of-00003.safetensors",
                        ".gitattributes"):
                self.assertFalse(os.path.lexists(m.p(rel)), rel)

    def test_conventional_name_is_whole_model(self):
        """Defect: MNT/model.safetensors was the subtree view of model/, so
        from_pretrained(MNT) loaded a model without lm_head."""
        m = self.mount(self.snap)
        self.check_whole(m.p("model.safetensors"), self.tensors)
        self.check_whole(m.p(".stfs", "model.safetensors"), self.tensors)
        self.assertFalse(os.path.lexists(m.p("model.safetensors.index.json")))

    def test_subtree_view_suffix(self):
        m = self.mount(self.snap)
        raw = read(m.p("model.part.safetensors"))
        names = {n for n, _ in safetensors.deserialize(raw)}
        self.assertEqual(names, {t.name[len("model."):] for t in self.tensors
                                 if t.name.startswith("model.")})
        self.assertTrue(os.path.isfile(m.p("model", "layers", "0.part.safetensors")))
        for rel in ("lm_head.safetensors", "model/layers/0.safetensors"):
            self.assertFalse(os.path.lexists(m.p(rel)), rel)

    def test_stat_vs_read(self):
        """Defect: .stfs/status had st_size 0 while a read returned JSON."""
        m = self.mount(self.snap)
        self.check_stat_vs_read(m)
        m2 = self.mount(self.snap, "listviews")
        self.check_stat_vs_read(m2)

    def test_status_copies(self):
        m = self.mount(self.snap)
        p = m.p(".stfs", "status")
        dst = os.path.join(self.tmp, "status.copy")
        shutil.copyfile(p, dst)       # sendfile: bounded by st_size
        doc = json.loads(read(dst))
        self.assertIn("jobs", doc)
        import mmap
        with open(p, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            self.assertIn(b"jobs", mm[:])
            mm.close()

    def test_aligned_views(self):
        m = self.mount(self.snap)
        for rel in ("model.safetensors", ".stfs/model.safetensors", "model.part.safetensors",
                    "model/layers/1.part.safetensors"):
            self.check_aligned(m.p(rel))


class DiffusersVariantTest(HfCase):
    """unet/, vae/, text_encoder/ each with an fp16 variant beside."""

    COMPS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
             "text_encoder": "model"}

    @classmethod
    def prepare(cls):
        cls.plain = os.path.join(cls.tmp, "plain")
        tm.run_gen("diffusers", cls.plain, "--companions")
        cls.var = os.path.join(cls.tmp, "variants")
        tm.run_gen("diffusers", cls.var, "--companions", "--variant", "fp16")
        cls.cache = os.path.join(cls.tmp, "cache")
        tm.run_gen("diffusers", cls.cache, "--companions", "--variant", "fp16", "--hfcache")
        cls.snap = snapshot_of(cls.cache, "diffusers")
        cls.sets = {}
        for v in (None, "fp16"):
            ts = []
            for comp, stem in cls.COMPS.items():
                f = "%s%s.safetensors" % (stem, "." + v if v else "")
                t, _ = cls.reference([os.path.join(cls.var, comp, f)], comp)
                ts += t
            cls.sets[v] = ts

    def test_default_is_the_non_variant_set(self):
        m = self.mount(self.var)
        self.check_tensors(m, self.sets[None])
        plain = self.mount(self.plain)
        self.assertEqual(self.tensor_files(m), self.tensor_files(plain),
                         "paths change with the variants beside")
        self.assertEqual(read(m.p(".stfs", "header.json")),
                         read(plain.p(".stfs", "header.json")).replace(
                             self.plain.encode(), self.var.encode()))

    def test_cache_snapshot(self):
        m = self.mount(self.snap)
        self.check_tensors(m, self.sets[None])
        self.check_shard_xattrs(m, self.sets[None], self.snap)

    def test_variant_option(self):
        m = self.mount(self.var, "variant=fp16")
        self.check_tensors(m, self.sets["fp16"])
        default = self.mount(self.var)
        self.assertEqual(self.tensor_files(m), self.tensor_files(default))
        for comp, stem in self.COMPS.items():
            self.check_whole(m.p(comp, stem + ".fp16.safetensors"),
                             [t for t in self.sets["fp16"] if t.comp == comp])
            self.assertFalse(os.path.lexists(m.p(comp, stem + ".safetensors")))

    def test_unknown_variant(self):
        err = self.expect_refused(self.var, "variant=bf16")
        self.assertIn("bf16", err)

    def test_all_sets(self):
        m = self.mount(self.var, "allsets")
        with open(m.p(".stfs", "header.json")) as f:
            doc = json.load(f)
        self.assertEqual(len(doc["tensors"]), len(self.sets[None]) + len(self.sets["fp16"]))

    def test_component_whole_files(self):
        """diffusers opens COMPONENT/diffusion_pytorch_model.safetensors."""
        m = self.mount(self.var)
        for comp, stem in self.COMPS.items():
            p = m.p(comp, stem + ".safetensors")
            self.check_whole(p, [t for t in self.sets[None] if t.comp == comp])
            self.check_aligned(p)
            self.assertFalse(os.path.lexists(m.p(comp, stem + ".fp16.safetensors")))
        self.assertFalse(os.path.lexists(m.p("unet.safetensors")))
        self.assertTrue(os.path.isfile(m.p("unet.part.safetensors")))

    def test_companions(self):
        m = self.mount(self.var)
        self.check_companions(m, self.var, ("model_index.json", "README.md", "unet/config.json",
                                            "vae/config.json", "text_encoder/config.json",
                                            "scheduler/scheduler_config.json"))

    def test_shard_xattr_relative_to_source(self):
        m = self.mount(self.var)
        self.check_shard_xattrs(m, self.sets[None], self.var)
        self.assertEqual(os.getxattr(m.p("vae", "decoder", "conv_out", "weight"),
                                     "user.safetensors.shard"),
                         b"vae/diffusion_pytorch_model.safetensors")

    def test_stat_vs_read(self):
        self.check_stat_vs_read(self.mount(self.var))


class MistralTest(HfCase):
    """consolidated.safetensors beside an HF sharded set."""

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.tmp, "mistral")
        tm.run_gen("mistral", cls.src, "--companions")
        cls.hf_only = os.path.join(cls.tmp, "hf-only")
        shutil.copytree(cls.src, cls.hf_only)
        os.unlink(os.path.join(cls.hf_only, "consolidated.safetensors"))
        cls.hf, _ = cls.reference([os.path.join(cls.src, "model-%05d-of-00002.safetensors" % k)
                                   for k in (1, 2)])
        cls.cons, _ = cls.reference([os.path.join(cls.src, "consolidated.safetensors")])

    def test_default_is_the_hf_set(self):
        m = self.mount(self.src)
        self.check_tensors(m, self.hf)
        self.assertEqual(self.tensor_files(m), self.tensor_files(self.mount(self.hf_only)))
        self.assertFalse(os.path.lexists(m.p("tok_embeddings")))
        self.check_whole(m.p("model.safetensors"), self.hf)
        self.check_companions(m, self.src, ("params.json", "config.json"))
        self.assertFalse(os.path.lexists(m.p("consolidated.safetensors")))

    def test_consolidated_as_source(self):
        m = self.mount(os.path.join(self.src, "consolidated.safetensors"))
        self.check_tensors(m, self.cons)

    def test_all_sets(self):
        m = self.mount(self.src, "allsets")
        with open(m.p(".stfs", "header.json")) as f:
            doc = json.load(f)
        self.assertEqual(len(doc["tensors"]), len(self.hf) + len(self.cons))


class LfsPointerTest(HfCase):
    PRESET = "lfs"

    def test_message(self):
        for source in (self.model, os.path.join(self.model, "model.safetensors")):
            err = self.expect_refused(source)
            self.assertIn("Git LFS pointer", err)
            self.assertNotIn("header size", err)


class AlignmentTest(HfCase):
    """Subset and whole-model views keep each tensor at an offset aligned to
    its element size, whatever the source's own layout."""
    PRESET = "dtypes"

    def test_views_aligned(self):
        m = self.mount(self.model)
        # one file: .stfs/model.safetensors is that file as it is, aligned or
        # not (passthrough); the whole-set file is the aligned view
        self.assertEqual(read(m.p(".stfs", "model.safetensors")),
                         read(os.path.join(self.model, "model.safetensors")))
        self.check_aligned(m.p("model.safetensors"))
        for d in os.listdir(m.path):
            if os.path.isdir(m.p(d)) and d != ".stfs":
                self.check_aligned(m.p(d + ".part.safetensors"))


def main():
    tm.STFS = os.path.abspath(tm.STFS)
    return tm.main()


if __name__ == "__main__":
    sys.exit(main())
