#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Generate safetensors test models for stfs.

usage: gen_model.py PRESET OUTDIR [--shards N] [--seed S] [--layers L]
                    [--hidden H] [--experts E] [--tensors T]
                    [--companions] [--variant V] [--hfcache]

Presets: tiny, llama, moe, dtypes, odd, big, diffusers, mistral, lfs (see
PRESETS below).

Folder shapes as people have them:
  --companions  also write the small files a Hugging Face repository holds
                beside its weights (config.json, tokenizer files, README.md,
                .gitattributes; model_index.json, scheduler/ for diffusers)
  --variant V   diffusers: also write every component as a V variant
                (diffusion_pytorch_model.V.safetensors, model.V.safetensors),
                F16 tensors of other bytes
  --hfcache     lay OUTDIR out as a Hugging Face hub cache:
                OUTDIR/models--stfs--PRESET/{blobs,refs/main,snapshots/REV},
                every file of the snapshot a relative symbolic link into
                ../../blobs/SHA256 (the path of the snapshot is printed)
  mistral       a Mistral-style repository: an HF sharded set (--shards,
                default 2) and consolidated.safetensors (other names) beside it
  lfs           model.safetensors is a Git LFS pointer file (a repository
                cloned without LFS), with config.json beside it

The files are written here, not with the safetensors library, because the
presets need dtypes and names that library refuses to write. Layout of each
file: 8-byte little-endian header length N, N bytes of JSON (``__metadata__``
first, then the tensors in name order, padded with spaces to a multiple of
8), then the tensors' data tightly packed in name order. Names are ordered by
their UTF-8 bytes. A sharded set follows the Hugging Face convention:
model-0000K-of-0000N.safetensors plus model.safetensors.index.json.

Data is random bytes from numpy.random.default_rng(--seed), drawn once per
file in file order, so the output is byte-for-byte reproducible (BOOL tensors
are masked to 0/1 so they hold valid values).
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np

# name -> bits per element (the 22 dtypes of the format)
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64,
    "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    bits = n * DTYPE_BITS[dtype]
    if bits % 8:
        raise ValueError("%s%s: %d bits is not a whole number of bytes"
                         % (dtype, list(shape), bits))
    return bits // 8


def name_key(t):
    return t[0].encode("utf-8")


class Writer:
    """Writes safetensors files; one RNG for the whole output."""

    def __init__(self, seed, generator):
        self.rng = np.random.default_rng(seed)
        self.meta = {"format": "pt", "generator": generator}
        self.files = 0
        self.tensors = 0
        self.bytes = 0

    def write_file(self, path, tensors):
        """tensors: list of (name, dtype, shape). Returns data bytes."""
        tensors = sorted(tensors, key=name_key)
        parts = ['"__metadata__":' + json.dumps(self.meta, separators=(",", ":"))]
        off = 0
        bools = []
        dumps = json.dumps
        for name, dtype, shape in tensors:
            size = nbytes(dtype, shape)
            if dtype == "BOOL":
                bools.append((off, off + size))
            parts.append('%s:{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}'
                         % (dumps(name, ensure_ascii=False), dtype,
                            ",".join(str(d) for d in shape), off, off + size))
            off += size
        header = ("{" + ",".join(parts) + "}").encode("utf-8")
        header += b" " * (-len(header) % 8)
        data = np.frombuffer(self.rng.bytes(off), dtype=np.uint8)
        if bools:
            data = data.copy()
            for b, e in bools:
                data[b:e] &= 1
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            f.write(data.tobytes())
        self.files += 1
        self.tensors += len(tensors)
        self.bytes += off
        return off

    def write_set(self, outdir, tensors, shards, base="model"):
        """One file, or an HF-style sharded set with its index."""
        names = [t[0] for t in tensors]
        if len(set(names)) != len(names):
            raise ValueError("duplicate tensor names")
        if shards <= 1:
            self.write_file(os.path.join(outdir, base + ".safetensors"), tensors)
            return
        tensors = sorted(tensors, key=name_key)
        if shards > len(tensors):
            raise ValueError("more shards (%d) than tensors (%d)" % (shards, len(tensors)))
        # Contiguous runs in name order, balanced by bytes; every shard gets
        # at least one tensor.
        sizes = [nbytes(dt, sh) for _, dt, sh in tensors]
        total = sum(sizes)
        groups = []
        start = 0
        acc = 0
        for k in range(shards):
            left = shards - k - 1
            end = start + 1
            acc += sizes[start]
            target = total * (k + 1) / shards
            while end < len(tensors) - left and acc + sizes[end] / 2 <= target:
                acc += sizes[end]
                end += 1
            if k == shards - 1:
                end = len(tensors)
            groups.append(tensors[start:end])
            start = end
        weight_map = {}
        for k, group in enumerate(groups):
            fname = "%s-%05d-of-%05d.safetensors" % (base, k + 1, shards)
            self.write_file(os.path.join(outdir, fname), group)
            for t in group:
                weight_map[t[0]] = fname
        index = {
            "metadata": {"total_size": total},
            "weight_map": dict(sorted(weight_map.items(), key=lambda kv: kv[0].encode("utf-8"))),
        }
        with open(os.path.join(outdir, base + ".safetensors.index.json"), "w",
                  encoding="utf-8") as f:
            json.dump(index, f, indent=2, ensure_ascii=False)
            f.write("\n")


def llama_tensors(layers, hidden, vocab=256):
    inter = 2 * hidden
    kv = hidden // 2
    t = [("model.embed_tokens.weight", "BF16", [vocab, hidden]),
         ("model.norm.weight", "F32", [hidden]),
         ("lm_head.weight", "F16", [vocab, hidden])]
    for i in range(layers):
        p = "model.layers.%d." % i
        t += [(p + "self_attn.q_proj.weight", "BF16", [hidden, hidden]),
              (p + "self_attn.k_proj.weight", "BF16", [kv, hidden]),
              (p + "self_attn.v_proj.weight", "BF16", [kv, hidden]),
              (p + "self_attn.o_proj.weight", "BF16", [hidden, hidden]),
              (p + "mlp.gate_proj.weight", "F16", [inter, hidden]),
              (p + "mlp.up_proj.weight", "F16", [inter, hidden]),
              (p + "mlp.down_proj.weight", "F16", [hidden, inter]),
              (p + "input_layernorm.weight", "F32", [hidden]),
              (p + "post_attention_layernorm.weight", "F32", [hidden])]
    return t


def moe_tensors(layers, hidden, experts):
    inter = max(hidden // 2, 1)
    t = [("model.embed_tokens.weight", "BF16", [64, hidden]),
         ("model.norm.weight", "F32", [hidden]),
         ("lm_head.weight", "BF16", [64, hidden])]
    for i in range(layers):
        p = "model.layers.%d." % i
        t += [(p + "self_attn.q_proj.weight", "BF16", [hidden, hidden]),
              (p + "self_attn.k_proj.weight", "BF16", [hidden, hidden]),
              (p + "self_attn.v_proj.weight", "BF16", [hidden, hidden]),
              (p + "self_attn.o_proj.weight", "BF16", [hidden, hidden]),
              (p + "input_layernorm.weight", "F32", [hidden]),
              (p + "post_attention_layernorm.weight", "F32", [hidden]),
              (p + "mlp.gate.weight", "F32", [experts, hidden])]  # the router
        for j in range(experts):
            q = p + "mlp.experts.%d." % j
            t += [(q + "gate_proj.weight", "BF16", [inter, hidden]),
                  (q + "up_proj.weight", "BF16", [inter, hidden]),
                  (q + "down_proj.weight", "BF16", [hidden, inter])]
    return t


def dtypes_tensors():
    shapes = {4: [2, 8], 6: [4, 4], 8: [3, 5], 16: [4, 3], 32: [2, 3], 64: [3, 2]}
    t = [("dtype.%s" % dt, dt, shapes[bits]) for dt, bits in DTYPE_BITS.items()]
    t += [("scalar.f32", "F32", []),
          ("scalar.bf16", "BF16", []),
          ("empty.f32", "F32", [0]),
          ("empty.bf16_3x0", "BF16", [3, 0]),
          ("empty.f4", "F4", [0, 7])]
    return t


def odd_names():
    long_a = "x" * 300
    shared = "s" * 250
    return [
        "a..b", ".lead", "trail.", ".stfs.x", "x.stfs",
        "a.b", "a.b.c", "p/q.r", "100%.s",
        "long." + long_a,
        "long." + shared + "b" * 50,
        "long." + shared + "a" * 50,
        # cut at 223 bytes would split a 3-byte character / a "%25"
        "cut.u" + "\u6a21" * 100,
        "cut." + "z" * 238 + "%" * 30,
        # names that look like the rule's own tokens
        "tok.%t", "tok.%~0", "tok.%2E", "tok.%",
        # around the 238-byte limit (255 less ".part.safetensors", so that
        # views fit in NAME_MAX too): kept, cut, pushed over by escaping
        "edge." + "e" * 238,
        "edge." + "f" * 239,
        "edge." + "g" * 236 + "%",
        # a cut part that is both a tensor and a directory (rules 4 and 5)
        "lp." + "L" * 300, "lp." + "L" * 300 + ".c",
        # more than ten parts sharing a cut prefix: %~0 .. %~11
    ] + ["many." + "m" * 260 + "%02d" % i for i in range(12)] + [
        "\u6a21\u578b.\u5c42.0",
        "layers.2", "layers.10", "layers.1",
        "", ".", "..",
        'with space."quoted"\\',
    ]


def odd_tensors():
    dts = ["F32", "BF16", "U8", "I64", "F16"]
    return [(n, dts[i % len(dts)], [i % 3 + 1, 2]) for i, n in enumerate(odd_names())]


def big_tensors(count, hidden, experts):
    names = []
    projs = ("gate", "up", "down")
    per_layer = experts * 3
    for k in range(count):
        i, r = divmod(k, per_layer)
        j, p = divmod(r, 3)
        names.append("model.layers.%d.mlp.experts.%d.%s_proj.weight" % (i, j, projs[p]))
    shape = [2, hidden]
    return [(n, "BF16", shape) for n in names]


def write_json(path, doc):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_text(path, text, mode="w"):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


def hf_companions(outdir, rng):
    """The small files of a transformers repository, beside the weights."""
    write_json(os.path.join(outdir, "config.json"),
               {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "hidden_size": 64, "torch_dtype": "bfloat16"})
    write_json(os.path.join(outdir, "generation_config.json"),
               {"bos_token_id": 1, "eos_token_id": 2})
    vocab = {"tok%d" % i: i for i in range(300)}
    write_json(os.path.join(outdir, "tokenizer.json"),
               {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}})
    write_json(os.path.join(outdir, "tokenizer_config.json"),
               {"model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast"})
    write_json(os.path.join(outdir, "special_tokens_map.json"), {"bos_token": "tok1"})
    write_text(os.path.join(outdir, "README.md"), "---\nlicense: apache-2.0\n---\n# tiny\n")
    write_text(os.path.join(outdir, ".gitattributes"), "*.safetensors filter=lfs diff=lfs\n")
    # a binary one: every byte value, and not valid UTF-8
    write_text(os.path.join(outdir, "tokenizer.model"),
               bytes(range(256)) + rng.bytes(3000), "wb")


def mistral_tensors(layers, hidden, vocab=256):
    """consolidated.safetensors: the same model under Mistral's own names."""
    t = [("tok_embeddings.weight", "BF16", [vocab, hidden]),
         ("norm.weight", "BF16", [hidden]),
         ("output.weight", "BF16", [vocab, hidden])]
    for i in range(layers):
        p = "layers.%d." % i
        t += [(p + "attention.wq.weight", "BF16", [hidden, hidden]),
              (p + "attention.wk.weight", "BF16", [hidden // 2, hidden]),
              (p + "feed_forward.w1.weight", "BF16", [2 * hidden, hidden]),
              (p + "attention_norm.weight", "BF16", [hidden])]
    return t


LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a3ef1c8b0e1f4a6e2b6f8c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4\n"
               "size 26953722\n")


def to_hfcache(outdir, preset):
    """Move OUTDIR's files into a hub cache tree; returns the snapshot path."""
    repo = os.path.join(outdir, "models--stfs--%s" % preset)
    rev = hashlib.sha1(preset.encode()).hexdigest()
    snap = os.path.join(repo, "snapshots", rev)
    blobs = os.path.join(repo, "blobs")
    files = []
    for d, dirs, names in os.walk(outdir):
        dirs.sort()
        if os.path.abspath(d).startswith(os.path.abspath(repo)):
            continue
        files += [os.path.relpath(os.path.join(d, n), outdir) for n in sorted(names)]
    os.makedirs(blobs, exist_ok=True)
    for rel in files:
        src = os.path.join(outdir, rel)
        h = hashlib.sha256()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        blob = os.path.join(blobs, h.hexdigest())
        if os.path.exists(blob):
            os.unlink(src)
        else:
            os.rename(src, blob)
        link = os.path.join(snap, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    for d, dirs, _ in os.walk(outdir, topdown=False):
        if not os.path.abspath(d).startswith(os.path.abspath(repo)) and d != outdir:
            os.rmdir(d)
    write_text(os.path.join(repo, "refs", "main"), rev)
    return snap


def diffusers(w, outdir, variant=None, companions=False):
    unet = [("conv_in.weight", "F16", [8, 4, 3, 3]),
            ("conv_in.bias", "F16", [8]),
            ("time_embedding.linear_1.weight", "F32", [16, 8]),
            ("conv_out.weight", "F16", [4, 8, 3, 3])]
    for b in range(2):
        for r in range(2):
            p = "down_blocks.%d.resnets.%d." % (b, r)
            unet += [(p + "conv1.weight", "F16", [8, 8, 3, 3]),
                     (p + "conv2.weight", "F16", [8, 8, 3, 3]),
                     (p + "norm1.weight", "F32", [8])]
    vae = [("encoder.conv_in.weight", "F32", [8, 3, 3, 3]),
           ("encoder.conv_out.weight", "F32", [8, 8, 3, 3]),
           ("decoder.conv_in.weight", "F32", [8, 4, 3, 3]),
           ("decoder.conv_out.weight", "F32", [3, 8, 3, 3]),
           ("quant_conv.weight", "F32", [8, 8, 1, 1])]
    te = [("text_model.embeddings.token_embedding.weight", "F16", [64, 16]),
          ("text_model.final_layer_norm.weight", "F32", [16])]
    for i in range(2):
        p = "text_model.encoder.layers.%d." % i
        te += [(p + "self_attn.q_proj.weight", "F16", [16, 16]),
               (p + "self_attn.k_proj.weight", "F16", [16, 16]),
               (p + "mlp.fc1.weight", "F16", [32, 16])]
    w.write_file(os.path.join(outdir, "unet", "diffusion_pytorch_model.safetensors"), unet)
    w.write_file(os.path.join(outdir, "vae", "diffusion_pytorch_model.safetensors"), vae)
    w.write_file(os.path.join(outdir, "text_encoder", "model.safetensors"), te)
    if variant:
        def half(ts):
            return [(n, "F16", sh) for n, _, sh in ts]
        w.write_file(os.path.join(outdir, "unet", "diffusion_pytorch_model.%s.safetensors"
                                  % variant), half(unet))
        w.write_file(os.path.join(outdir, "vae", "diffusion_pytorch_model.%s.safetensors"
                                  % variant), half(vae))
        w.write_file(os.path.join(outdir, "text_encoder", "model.%s.safetensors" % variant),
                     half(te))
    if companions:
        for comp in ("unet", "vae", "text_encoder"):
            write_json(os.path.join(outdir, comp, "config.json"),
                       {"_class_name": comp, "_diffusers_version": "0.0.0", "sample_size": 8})
        write_json(os.path.join(outdir, "scheduler", "scheduler_config.json"),
                   {"_class_name": "PNDMScheduler", "num_train_timesteps": 1000})
        write_text(os.path.join(outdir, "README.md"), "# a tiny diffusers pipeline\n")
    with open(os.path.join(outdir, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline",
                   "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"],
                   "text_encoder": ["transformers", "CLIPTextModel"]}, f, indent=2)
        f.write("\n")


# preset -> defaults
PRESETS = {
    "tiny": dict(layers=4, hidden=64, shards=1),
    "llama": dict(layers=8, hidden=128, shards=3),
    "moe": dict(layers=4, hidden=16, experts=256, shards=4),
    "dtypes": dict(shards=1),
    "odd": dict(shards=1),
    "big": dict(tensors=100000, hidden=4, experts=256, shards=160),
    "diffusers": dict(),
    "mistral": dict(layers=2, hidden=64, shards=2),
    "lfs": dict(),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Generate safetensors test models for stfs.")
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("outdir")
    ap.add_argument("--shards", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--experts", type=int)
    ap.add_argument("--tensors", type=int)
    ap.add_argument("--companions", action="store_true")
    ap.add_argument("--variant")
    ap.add_argument("--hfcache", action="store_true")
    a = ap.parse_args(argv)
    if a.variant is not None and (a.preset != "diffusers" or not a.variant
                                  or "/" in a.variant or "." in a.variant):
        ap.error("--variant: a plain name, for the diffusers preset")

    opt = dict(PRESETS[a.preset])
    for k in ("shards", "layers", "hidden", "experts", "tensors"):
        v = getattr(a, k)
        if v is not None:
            if v < (0 if k == "layers" else 1):
                ap.error("--%s must be positive" % k)
            opt[k] = v
    shards = opt.get("shards", 1)

    w = Writer(a.seed, "stfs tools/gen_model.py %s seed=%d" % (a.preset, a.seed))
    os.makedirs(a.outdir, exist_ok=True)
    try:
        if a.preset in ("tiny", "llama"):
            t = llama_tensors(opt["layers"], opt["hidden"])
        elif a.preset == "moe":
            t = moe_tensors(opt["layers"], opt["hidden"], opt["experts"])
        elif a.preset == "dtypes":
            t = dtypes_tensors()
        elif a.preset == "odd":
            t = odd_tensors()
        elif a.preset == "big":
            t = big_tensors(opt["tensors"], opt["hidden"], opt["experts"])
        elif a.preset == "mistral":
            t = llama_tensors(opt["layers"], opt["hidden"])
            w.write_file(os.path.join(a.outdir, "consolidated.safetensors"),
                         mistral_tensors(opt["layers"], opt["hidden"]))
            write_json(os.path.join(a.outdir, "params.json"),
                       {"dim": opt["hidden"], "n_layers": opt["layers"]})
        elif a.preset == "lfs":
            t = None
            write_text(os.path.join(a.outdir, "model.safetensors"), LFS_POINTER)
            write_json(os.path.join(a.outdir, "config.json"), {"model_type": "llama"})
        else:
            if shards != 1:
                ap.error("diffusers: --shards is not supported")
            t = None
            diffusers(w, a.outdir, a.variant, a.companions)
        if t is not None:
            w.write_set(a.outdir, t, shards)
            if a.companions:
                hf_companions(a.outdir, w.rng)
        where = to_hfcache(a.outdir, a.preset) if a.hfcache else a.outdir
    except (ValueError, OSError) as e:
        print("gen_model.py: %s" % e, file=sys.stderr)
        return 1
    print("%s: %d files, %d tensors, %d bytes in %s"
          % (a.preset, w.files, w.tensors, w.bytes, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
