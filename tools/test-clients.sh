#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Opt-in suite with the heavy clients (not run by tools/test.sh): PyTorch
# (CPU use; the PyPI wheel), transformers and diffusers from PyPI in a venv
# (about 6 GB), then tests/clients/test_clients.py against real mounts.
#   tools/test-clients.sh [unittest args]
# STFS_CLIENTS_VENV: where the venv lives (default build-clients/venv).
# Needs root (or /dev/fuse access) and fusermount3, like the mount suite.
set -eu
cd "$(dirname "$0")/.."
venv=${STFS_CLIENTS_VENV:-build-clients/venv}
if ! "$venv/bin/python" -c 'import torch, transformers, diffusers' 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q torch transformers diffusers accelerate safetensors numpy
fi
[ -f build/build.ninja ] || meson setup build
ninja -C build fs/stfs
exec "$venv/bin/python" tests/clients/test_clients.py --stfs build/fs/stfs "$@"
