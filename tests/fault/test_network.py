#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fault suite: a model on network storage (issue 15).

    python3 tests/fault/test_network.py --stfs build/fs/stfs --gen tools/gen_model.py \\
        --stfsctl build/tools/stfsctl

SOURCE is on sshfs, to a private sshd on 127.0.0.1 (tests/fault/sshfslib.py):

- Bytes: every tensor read through stfs equals the bytes an independent
  reader (the safetensors library where numpy has the dtype, else a parse
  of the file here) finds in the server's own copy; a host prefetch of
  everything completes; stfsctl verify --scan of the sshfs source and of the
  mount's whole-model file finds what it finds in the server's copy.

Exits 77 (SKIP) without /dev/fuse, fusermount3, sshd or sshfs.
"""

import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import sshfslib  # noqa: E402
from faultlib import DONE, read_model, run_gen  # noqa: E402

def stfsctl(*args, timeout=60):
    return subprocess.run([faultlib.STFSCTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


class NetworkCase(sshfslib.SshfsCase):
    """A 3-shard llama in the export; cls.src: its path on sshfs."""

    @classmethod
    def prepare_export(cls):
        cls.model = os.path.join(cls.export, "model")
        run_gen("llama", cls.model, "--shards", 3, "--layers", 4, "--hidden", 256)
        cls.tensors, cls.shards = read_model(cls.model)

    @classmethod
    def prepare(cls):
        super().prepare()
        cls.src = os.path.join(cls.remote, "model")



class HarnessTest(NetworkCase):
    """What the later cases rely on, sshfs alone: a killed connection is
    reconnected for a new open, and a stalled one holds a read until
    resumed."""

    def read_remote(self, path):
        with open(os.path.join(self.src, os.path.basename(path)), "rb") as f:
            return f.read()

    def test_kill_reconnects(self):
        want = self.read_remote(self.shards[0])
        self.assertGreater(self.server.kill_sessions(), 0, "no ssh session to kill")
        deadline = time.monotonic() + 20
        while True:
            try:
                self.assertEqual(self.read_remote(self.shards[0]), want)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertGreater(len(self.server.sessions()), 0, "sshfs did not reconnect")

    def test_stall_holds_reads(self):
        import threading
        self.read_remote(self.shards[1])      # connected
        out = []
        self.assertGreater(self.server.stall(), 0)
        self.addCleanup(self.server.resume)
        # a name never looked up: sshfs must ask the server
        t = threading.Thread(target=lambda: out.append(os.path.exists(
            os.path.join(self.src, "not-there-%d" % time.monotonic_ns()))), daemon=True)
        t.start()
        t.join(0.5)
        self.assertTrue(t.is_alive(), "a lookup on a stalled server returned")
        self.server.resume()
        t.join(20)
        self.assertFalse(t.is_alive(), "the lookup still waits after the resume")


class BytesTest(NetworkCase):
    def test_bytes_prefetch_verify(self):
        m = self.mount(self.src)
        for t in self.tensors:
            got, err = self.read_errno(m.p(t.path))
            self.assertIsNone(err, "%s: %s" % (t.name, faultlib.errname(err or 0)))
            self.assertBytes(got, t.data, t.name)
        # the safetensors library, on the server's copy, where numpy has the dtype
        from safetensors import safe_open
        checked = 0
        for shard in self.shards:
            with safe_open(shard, framework="numpy") as f:
                for name in f.keys():
                    t = next(t for t in self.tensors if t.name == name)
                    if t.dtype not in ("F16", "F32"):
                        continue
                    got, err = self.read_errno(m.p(t.path))
                    self.assertIsNone(err)
                    self.assertBytes(got, f.get_tensor(name).tobytes(), name)
                    checked += 1
        self.assertGreater(checked, 10)

        c = self.control(m)
        st = self.wait_job(c, c.prefetch("", threads=4))
        self.assertEqual(st["state"], DONE, "host prefetch over sshfs: %r" % st)
        self.assertEqual(st["tensors"], len(self.tensors))
        c.close()

        # verify --scan reads every byte: through sshfs, and through stfs on
        # sshfs, it must count what it counts in the server's own copy
        scans = {}
        for target in (self.model, self.src, m.p(".stfs", "model.safetensors")):
            p = stfsctl("verify", "--scan", "--json", target)
            self.assertIn(p.returncode, (0, 1), p.stderr.decode())
            doc = json.loads(p.stdout)
            self.assertEqual(doc["problems"], [], "stfsctl verify %s" % target)
            scans[target] = {k: doc["scan"][k] for k in ("bytes", "nan", "inf", "nan_tensors")}
        self.assertEqual(len(set(map(repr, scans.values()))), 1, scans)
        self.unmount(m)
        self.assertEqual(self.stderr_lines(m), [], "stfs said something")


if __name__ == "__main__":
    sys.exit(sshfslib.main())
