#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Opt-in suite: the heavy clients load models straight from a mount.

    tools/test-clients.sh          # makes the venv, builds, runs this

Not part of tools/test.sh or meson's suites (PyTorch, transformers and
diffusers are several GB). Everything is made here and loaded offline
(HF_HUB_OFFLINE=1): no network to the Hub.

  - a tiny Llama (LlamaConfig with tiny dimensions) saved by save_pretrained
    in several shards; stfs mounts the folder, the index through a hub-cache
    link and the snapshot; LlamaForCausalLM.from_pretrained(MNT) gives
    logits identical to the original's;
  - a tiny diffusers UNet2DConditionModel and AutoencoderKL saved with an
    fp16 variant beside; from_pretrained(MNT, subfolder=...) gives weights
    identical to the originals and outputs identical to the same models
    loaded from the folder itself (a loaded model's outputs differ from the
    in-memory original's in the last bits, weights equal, mount or not), and
    with -o variant=fp16 and variant="fp16" weights identical to the fp16
    ones.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests"))
sys.path.insert(0, os.path.join(TOP, "tools"))
import stfstest  # noqa: E402
import gen_model  # noqa: E402

import torch  # noqa: E402

STFS = os.path.join(TOP, "build", "fs", "stfs")


class ClientCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="stfs-clients-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        os.environ["HF_HOME"] = os.path.join(cls.tmp, "hf-home")  # empty cache
        torch.manual_seed(0)
        cls.make()

    def mount(self, source, *opts):
        mnt = tempfile.mkdtemp(prefix="stfs-mnt-")
        args = [STFS, "-f"]
        for o in opts:
            args += ["-o", o]
        log = open(os.path.join(self.tmp, "log-%d" % time.monotonic_ns()), "w+b")
        proc = subprocess.Popen(args + [source, mnt], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)

        def cleanup():
            if stfstest.mounted(mnt):
                stfstest.fusermount("-u", mnt)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if stfstest.mounted(mnt):
                stfstest.fusermount("-uz", mnt)
            os.rmdir(mnt)
            log.close()
        self.addCleanup(cleanup)
        deadline = time.monotonic() + 30
        while not stfstest.mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                self.fail("stfs did not mount %s: %s" % (source, log.read().decode()))
            time.sleep(0.02)
        return mnt


class LlamaTest(ClientCase):

    @classmethod
    def make(cls):
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=64, tie_word_embeddings=False)
        cls.model = LlamaForCausalLM(cfg).eval()
        cls.src = os.path.join(cls.tmp, "llama")
        cls.model.save_pretrained(cls.src, max_shard_size="20KB")
        cls.shards = sorted(f for f in os.listdir(cls.src) if f.endswith(".safetensors"))
        cls.ids = torch.tensor([[1, 5, 9, 17, 33, 65, 127, 3]])
        with torch.no_grad():
            cls.want = cls.model(cls.ids).logits
        cache = os.path.join(cls.tmp, "cache")
        shutil.copytree(cls.src, cache)
        cls.snap = gen_model.to_hfcache(cache, "llama")

    def load(self, mnt):
        from transformers import LlamaForCausalLM
        m = LlamaForCausalLM.from_pretrained(mnt).eval()
        with torch.no_grad():
            return m(self.ids).logits

    def test_sharded(self):
        self.assertGreater(len(self.shards), 2, self.shards)

    def test_from_pretrained_folder(self):
        got = self.load(self.mount(self.src))
        self.assertTrue(torch.equal(got, self.want))

    def test_from_pretrained_cache_index_link(self):
        got = self.load(self.mount(os.path.join(self.snap, "model.safetensors.index.json")))
        self.assertTrue(torch.equal(got, self.want))

    def test_from_pretrained_cache_snapshot(self):
        got = self.load(self.mount(self.snap))
        self.assertTrue(torch.equal(got, self.want))


class DiffusersTest(ClientCase):

    @classmethod
    def make(cls):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        cls.unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
            attention_head_dim=8, norm_num_groups=8).eval()
        cls.vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
            sample_size=16).eval()
        cls.src = os.path.join(cls.tmp, "pipe")
        cls.unet.save_pretrained(os.path.join(cls.src, "unet"))
        cls.vae.save_pretrained(os.path.join(cls.src, "vae"))
        cls.unet16 = UNet2DConditionModel.from_pretrained(os.path.join(cls.src, "unet")).half()
        cls.vae16 = AutoencoderKL.from_pretrained(os.path.join(cls.src, "vae")).half()
        cls.unet16.save_pretrained(os.path.join(cls.src, "unet"), variant="fp16")
        cls.vae16.save_pretrained(os.path.join(cls.src, "vae"), variant="fp16")
        g = torch.Generator().manual_seed(1)
        cls.sample = torch.randn(1, 4, 8, 8, generator=g)
        cls.text = torch.randn(1, 3, 16, generator=g)
        cls.image = torch.randn(1, 3, 16, 16, generator=g)
        # The reference is the same loader on the source folder: a model
        # from from_pretrained differs from the one in memory in its last
        # bits (not in its weights: test_from_pretrained compares those).
        cls.want_unet = cls.run_unet(
            UNet2DConditionModel.from_pretrained(os.path.join(cls.src, "unet")).eval())
        cls.want_vae = cls.run_vae(
            AutoencoderKL.from_pretrained(os.path.join(cls.src, "vae")).eval())

    @classmethod
    def run_unet(cls, unet):
        with torch.no_grad():
            return unet(cls.sample, 10, encoder_hidden_states=cls.text).sample

    @classmethod
    def run_vae(cls, vae):
        with torch.no_grad():
            return vae.decode(vae.encode(cls.image).latent_dist.mean).sample

    def test_files(self):
        for comp in ("unet", "vae"):
            self.assertEqual(sorted(os.listdir(os.path.join(self.src, comp))),
                             ["config.json", "diffusion_pytorch_model.fp16.safetensors",
                              "diffusion_pytorch_model.safetensors"])

    def test_from_pretrained(self):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        mnt = self.mount(self.src)
        unet = UNet2DConditionModel.from_pretrained(mnt, subfolder="unet").eval()
        vae = AutoencoderKL.from_pretrained(mnt, subfolder="vae").eval()
        self.assertTrue(torch.equal(self.run_unet(unet), self.want_unet))
        self.assertTrue(torch.equal(self.run_vae(vae), self.want_vae))
        for got, want in ((unet, self.unet), (vae, self.vae)):
            a, b = got.state_dict(), want.state_dict()
            self.assertEqual(sorted(a), sorted(b))
            for k in a:
                self.assertTrue(torch.equal(a[k], b[k]), k)

    def test_from_pretrained_fp16_variant(self):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        mnt = self.mount(self.src, "variant=fp16")
        unet = UNet2DConditionModel.from_pretrained(mnt, subfolder="unet", variant="fp16")
        vae = AutoencoderKL.from_pretrained(mnt, subfolder="vae", variant="fp16")
        for a, b in zip(unet.state_dict().values(), self.unet16.state_dict().values()):
            self.assertTrue(torch.equal(a, b))
        for a, b in zip(vae.state_dict().values(), self.vae16.state_dict().values()):
            self.assertTrue(torch.equal(a, b))


def main():
    global STFS
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--stfs")
    args, rest = ap.parse_known_args()
    STFS = os.path.abspath(args.stfs or STFS)
    why = stfstest.fuse_skip_reason()
    if why:
        print("SKIP: " + why)
        return 77
    import transformers
    import diffusers
    print("torch %s, transformers %s, diffusers %s" % (torch.__version__, transformers.__version__,
                                                       diffusers.__version__))
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
