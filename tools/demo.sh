#!/usr/bin/env bash
# The main job on the built-in example: build, generate a small Llama-style
# model (3 shards), mount it, show it, unmount.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null

work=$(mktemp -d /tmp/stfs-demo.XXXXXX)
mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() {
	mountpoint -q "$mnt" && fusermount3 -u "$mnt"
	rm -rf "$work"
}
trap cleanup EXIT

python3 tools/gen_model.py tiny "$work/model" --shards 3
build/fs/stfs "$work/model" "$mnt"
# The mount is live when the daemon returns (it mounts before detaching).

echo "== the tree (find $mnt -maxdepth 4)"
find "$mnt" -maxdepth 4 | sed "s|$mnt|MNT|" | sort -V | head -30
echo "== a tensor: ls -l, xattrs, first values"
f="$mnt/model/layers/0/self_attn/q_proj/weight"
ls -l "$f" | sed "s|$mnt|MNT|"
getfattr --absolute-names -d "$f" | sed "s|$mnt|MNT|"
python3 - "$f" <<'PY'
import json, os, sys
import numpy as np
f = sys.argv[1]
dt = os.getxattr(f, "user.safetensors.dtype").decode()
shape = json.loads(os.getxattr(f, "user.safetensors.shape"))
np_dt = {"F16": np.float16, "F32": np.float32, "BF16": np.uint16}[dt]
a = np.memmap(f, dtype=np_dt, mode="r", shape=tuple(shape))
if dt == "BF16":  # bfloat16 is the top half of a float32
    a = (a.astype(np.uint32) << 16).view(np.float32)
print(f"numpy.memmap: {dt} {shape}: {a.ravel()[:4]} ...")
PY
echo "== .stfs/metadata.json"
cat "$mnt/.stfs/metadata.json"; echo
echo "== du -sh"
du -sh --apparent-size "$mnt" | sed "s|$mnt|MNT|"
