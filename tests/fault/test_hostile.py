#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Hostile sources and names, as a new user or an attacker would try them
(issue 11): what stfs and stfsctl do with what the parser accepted.

    python3 tests/fault/test_hostile.py --stfs build/fs/stfs \\
        --stfsctl build/tools/stfsctl --gen tools/gen_model.py

- View names: every name in a mount, views included, fits in NAME_MAX (255)
  and `cp` of every view works, for tensor and directory names at the
  component limit and past it.

The same classes at the parser level (stf_model_open, stf_model_check) are
in the regression suite's built cases (tests/fuzz/cases.c).

Exits 77 (SKIP) without /dev/fuse or fusermount3.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from faultlib import FaultCase  # noqa: E402

STFSCTL = None
NAME_MAX = 255


def write_st(path, names, metadata=None):
    """A sound .safetensors file: one U8 tensor of 2 bytes per name."""
    hdr, data = {}, b""
    if metadata:
        hdr["__metadata__"] = metadata
    for i, n in enumerate(names):
        hdr[n] = {"dtype": "U8", "shape": [2], "data_offsets": [2 * i, 2 * i + 2]}
        data += bytes([i & 0xFF, 0x5A])
    h = json.dumps(hdr, ensure_ascii=False).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


class ViewNames(FaultCase):
    """Names at the 238-byte component limit and past it: every view's
    name fits in NAME_MAX, so `cp` of it works. Before rule 5 moved from 255
    to 238, a 252-byte tensor name gave a 256-byte T.npy and a 250-byte
    directory a 262-byte view: listed with -o listviews, opened by the mount
    (FUSE takes names up to 1024), but not copyable anywhere."""

    NAMES = ["e" * 252, "d" * 250 + ".w", "k" * 238, "j" * 238 + ".w", "x" * 300,
             "m" * 244 + ".a", "m" * 244 + ".b"]

    @classmethod
    def prepare(cls):
        cls.src = os.path.join(cls.tmp, "long.safetensors")
        write_st(cls.src, cls.NAMES)

    def test_every_name_fits_and_copies(self):
        m = self.mount(self.src, "listviews")
        out = tempfile.mkdtemp(prefix="stfs-cp-")
        self.addCleanup(shutil.rmtree, out, ignore_errors=True)
        too_long, views = [], []
        for d, dirs, files in os.walk(m.path):
            for n in dirs + files:
                if len(os.fsencode(n)) > NAME_MAX:
                    too_long.append((len(os.fsencode(n)), os.path.join(d, n)))
                elif n.endswith(".npy") or n.endswith(".safetensors"):
                    views.append(os.path.join(d, n))
        self.assertEqual(too_long, [], "names over NAME_MAX")
        # a .npy of each tensor, a .part.safetensors of each of the 3
        # directories (and the whole-set files)
        self.assertEqual(len([v for v in views if v.endswith(".npy")]), len(self.NAMES))
        self.assertEqual(len([v for v in views if v.endswith(".part.safetensors")]), 3)
        for v in views:
            dst = os.path.join(out, os.path.basename(v))
            shutil.copyfile(v, dst)
            with open(v, "rb") as a, open(dst, "rb") as b:
                self.assertEqual(a.read(), b.read(), v)
        self.unmount(m)


def main():
    global STFSCTL
    args = sys.argv[1:]
    if "--stfsctl" in args:
        i = args.index("--stfsctl")
        STFSCTL = os.path.abspath(args[i + 1])
        del args[i:i + 2]
    sys.argv[1:] = args
    return faultlib.main()


if __name__ == "__main__":
    sys.exit(main())
