#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Everything about stfs that needs a real GPU, in one run of a few minutes,
# on a machine that may have no libfuse, no jansson headers and no
# /dev/fuse. It has NOT run on a real GPU yet (see README, "The GPU path").
#
# usage: tools/gpu-check.sh [--device N] [--gib N] [--reps N] [--mount] [--keep]
#
#   --device N  the GPU (default 0)
#   --gib N     size of the generated model in GiB (default 4)
#   --reps N    timed runs per measure; medians are printed (default 3)
#   --mount     also build the daemon with meson and run bench row 8
#               through a real mount (needs libfuse3, jansson, /dev/fuse)
#   --keep      keep the work directory (model, binaries, logs)
#
# Steps, each printed with its result:
#  1. what the machine has: GPU and driver (nvidia-smi), libcuda.so.1,
#     cuda.h (toolkit, $CUDA_HOME, or the nvidia-* Python wheels), jansson
#  2. build core/ and tests/gpu with gcc alone (no meson, no FUSE; jansson
#     linked statically where libjansson.a exists)
#  3. the GPU suite against the real driver: tests/gpu/test_cuda_prefetch
#     (every byte of whole and sliced jobs, dims 0 and 1, world 2 and 4,
#     every rank, ring and direct staging, auto on a hot and a cold source)
#  4. bench row 8 without a mount (tests/gpu/bench_cuda): prefetch of every
#     tensor of a --gib model, source warm in the page cache, ring and
#     direct staging (each job's bytes checked, and a tensor read by another
#     process through the IPC handle), against one pinned cuMemcpyHtoD of
#     the same bytes and
#     (where torch and safetensors import) the safetensors library loading
#     the same shards to cuda:N; prints the ratios and the targets
#     (>= 0.9 of the pinned copy, >= 10x safetensors; reference: 48.5 GB/s,
#     the fastest published page-cache-to-H200 loader)
# Exit status: 0 when every check passed (a missed speed target does not
# fail it), 1 on a failed check, 2 on bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
device=0 gib=4 reps=3 mount=0 keep=0
while [ $# -gt 0 ]; do
	case $1 in
	--device) device=$2; shift ;;
	--gib) gib=$2; shift ;;
	--reps) reps=$2; shift ;;
	--mount) mount=1 ;;
	--keep) keep=1 ;;
	-h | --help) awk 'NR >= 4 && /^#/ {sub(/^# ?/, ""); print; next} NR >= 4 {exit}' "$0"; exit 0 ;;
	*) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
work=$(mktemp -d /var/tmp/stfs-gpu-check-XXXXXX)
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work"; fi; }
trap cleanup EXIT
start=$SECONDS
say() { printf '\n== %s (%d s)\n' "$*" $((SECONDS - start)); }
die() { echo "gpu-check: FAILED: $*" >&2; exit 1; }

# ------------------------------------------------------------ 1. machine
say "1. machine"
echo "stfs $(git -C "$root" describe --always --dirty 2>/dev/null || echo '(no git)'); kernel $(uname -r); $(nproc) CPUs; $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=index,name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader || true
else
	echo "nvidia-smi: not installed"
fi
libcuda=$( (ldconfig -p 2>/dev/null || true) | awk '/libcuda\.so\.1 / {print $NF; exit}')
[ -n "$libcuda" ] || [ -n "${LD_LIBRARY_PATH:-}" ] || die "no libcuda.so.1 (the NVIDIA driver) on this machine"
echo "libcuda.so.1: ${libcuda:-from LD_LIBRARY_PATH=$LD_LIBRARY_PATH}"
cuda_inc=
for d in "${CUDA_INCLUDE:-}" "${CUDA_HOME:+$CUDA_HOME/include}" /usr/local/cuda/include /usr/include \
	$(python3 -c 'import site, glob; print(" ".join(d for s in site.getsitepackages() for d in glob.glob(s + "/nvidia/*/include")))' 2>/dev/null || true); do
	if [ -n "$d" ] && [ -f "$d/cuda.h" ]; then cuda_inc=$d; break; fi
done
[ -n "$cuda_inc" ] || die "no cuda.h: install the CUDA toolkit headers (or pip install nvidia-cuda-runtime-cu12) or set CUDA_INCLUDE"
echo "cuda.h: $cuda_inc/cuda.h ($(awk '/define CUDA_VERSION/ {print "CUDA_VERSION " $3; exit}' "$cuda_inc/cuda.h"))"
jansson_cflags='' jansson_libs=''
if pkg-config --exists jansson 2>/dev/null; then
	jansson_cflags=$(pkg-config --cflags jansson)
	a=$(pkg-config --variable=libdir jansson)/libjansson.a
	if [ -f "$a" ]; then jansson_libs=$a; else jansson_libs=$(pkg-config --libs jansson); fi
elif [ -f /usr/include/jansson.h ]; then
	jansson_libs=-ljansson
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "jansson headers missing: apt-get install libjansson-dev"
	apt-get install -y -qq libjansson-dev >/dev/null || die "cannot install libjansson-dev"
	jansson_libs=-ljansson
	[ -f /usr/lib/x86_64-linux-gnu/libjansson.a ] && jansson_libs=/usr/lib/x86_64-linux-gnu/libjansson.a
else
	die "no jansson headers (libjansson-dev / jansson-devel)"
fi
echo "jansson: ${jansson_cflags:-system headers} ${jansson_libs}"
python3 -c 'import torch, safetensors; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "; safetensors", safetensors.__version__)' 2>/dev/null ||
	echo "torch or safetensors not importable: the safetensors baseline is skipped"

# ------------------------------------------------------------- 2. build
say "2. build core/ and tests/gpu with gcc"
# shellcheck disable=SC2206,SC2086 # the pkg-config flags are meant to split
cflags=(-std=gnu11 -O2 -g -Wall -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 '-DSTF_VERSION="gpu-check"'
	-Icore -Itests/lib -I"$cuda_inc" $jansson_cflags -pthread)
mkdir -p "$work/obj"
# core/ and the tests' safetensors writer (tests/lib/stwrite.c)
for c in core/*.c tests/lib/stwrite.c; do
	[ "$c" = core/gpu_stub.c ] && continue
	gcc "${cflags[@]}" -c "$c" -o "$work/obj/$(basename "$c" .c).o" || die "compiling $c"
done
ar rcs "$work/libstfcore.a" "$work"/obj/*.o
for t in test_cuda_prefetch bench_cuda ipc_read; do
	# shellcheck disable=SC2086
	gcc "${cflags[@]}" -Itests/gpu "tests/gpu/$t.c" "$work/libstfcore.a" $jansson_libs -ldl -lm \
		-o "$work/$t" || die "building tests/gpu/$t.c"
done
echo "built: test_cuda_prefetch bench_cuda ipc_read"

# ------------------------------------------------------ 3. the GPU suite
say "3. the GPU suite against the real driver"
rc=0
"$work/test_cuda_prefetch" || rc=$?
[ $rc = 77 ] && die "test_cuda_prefetch found no CUDA device"
[ $rc = 0 ] || die "test_cuda_prefetch (exit $rc)"

# ------------------------------------------------------------ 4. row 8
say "4. bench row 8 without a mount: a ${gib} GiB model"
model=$work/model
python3 - "$model" "$gib" <<'EOF'
# A sharded model of random bytes: 64 MiB F16 matrices and small F32 norms,
# 4 shards and an index. No numpy needed.
import json, os, struct, sys
out, gib = sys.argv[1], float(sys.argv[2])
os.makedirs(out)
big, norm = 64 << 20, 4096 * 4
n = max(4, int(gib * (1 << 30) // (big + norm)))
weight_map = {}
for s in range(4):
    name = "model-%05d-of-00004.safetensors" % (s + 1)
    hdr, off = {}, 0
    for i in range(s, n, 4):
        hdr["layers.%d.weight" % i] = dict(dtype="F16", shape=[4096, 8192], data_offsets=[off, off + big])
        off += big
        hdr["layers.%d.norm" % i] = dict(dtype="F32", shape=[4096], data_offsets=[off, off + norm])
        off += norm
    for k in hdr:
        weight_map[k] = name
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        left = off
        while left:
            k = min(left, 64 << 20)
            f.write(os.urandom(k))
            left -= k
with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
    json.dump(dict(metadata={}, weight_map=weight_map), f)
EOF
du -sh "$model" | sed 's/\t/ /'
IPC_READ=$work/ipc_read "$work/bench_cuda" "$model" "$device" 0 "$reps" | tee "$work/bench.txt" ||
	die "bench_cuda"
python3 - "$model" "$device" "$reps" >>"$work/bench.txt" <<'EOF' || echo "safetensors baseline: failed (see above)"
import glob, os, statistics, sys, time
try:
    import torch
    from safetensors import safe_open
except Exception as e:
    sys.stderr.write("safetensors baseline skipped: %s\n" % e)
    sys.exit(0)
model, dev, reps = sys.argv[1], "cuda:%s" % sys.argv[2], int(sys.argv[3])
if not torch.cuda.is_available():
    sys.stderr.write("safetensors baseline skipped: torch has no CUDA\n")
    sys.exit(0)
shards = sorted(glob.glob(os.path.join(model, "*.safetensors")))
times, size = [], 0
for r in range(reps + 1):  # the first run warms up CUDA and the page cache
    t0 = time.perf_counter()
    out = []
    for s in shards:
        with safe_open(s, framework="pt", device=dev) as f:
            out += [f.get_tensor(k) for k in f.keys()]
    torch.cuda.synchronize()
    if r:
        times.append(time.perf_counter() - t0)
    size = sum(t.numel() * t.element_size() for t in out)
    del out
    torch.cuda.empty_cache()
print("safetensors_load %.6f %d" % (statistics.median(times), size))
EOF
python3 - "$work/bench.txt" <<'EOF'
import sys
m = {}
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    k, s, b = line.split()
    m[k] = (float(s), int(b))
gbs = lambda k: m[k][1] / m[k][0] / 1e9
print("\n| row | measure | stfs | baseline | ratio | target |")
print("|---|---|---|---|---|---|")
def row(r, what, a, b, target):
    if a not in m or b not in m:
        print("| %s | %s | %s | n/a | | %s |" % (r, what, "%.2f GB/s" % gbs(a) if a in m else "n/a", target))
        return
    ratio = gbs(a) / gbs(b)
    lim = float(target.split()[-1].rstrip("x"))
    print("| %s | %s | %.2f GB/s | %.2f GB/s (%s) | %.2f | %s (%s) |" % (
        r, what, gbs(a), gbs(b), b, ratio, target, "met" if ratio >= lim else "**missed**"))
row("8a", "prefetch, ring staging, source warm", "prefetch_ring", "pinned_htod", ">= 0.9")
row("8b", "prefetch, ring staging, source warm", "prefetch_ring", "safetensors_load", ">= 10x")
row("8e", "prefetch, direct staging, source warm", "prefetch_direct", "pinned_htod", ">= 0.9")
row("8f", "prefetch, direct staging, source warm", "prefetch_direct", "safetensors_load", ">= 10x")
best = max(gbs(k) for k in ("prefetch_ring", "prefetch_direct"))
print("\nbest stfs prefetch: %.2f GB/s; the fastest published page-cache-to-H200 loader: 48.5 GB/s (%.2fx)"
      % (best, best / 48.5))
EOF

# ------------------------------------------------ 5. through a mount
if [ "$mount" = 1 ]; then
	say "5. bench row 8 through a mount"
	[ -e /dev/fuse ] || die "--mount: no /dev/fuse"
	{ meson setup "$work/build" >/dev/null && ninja -C "$work/build" >/dev/null; } ||
		die "--mount: meson build"
	python3 tools/bench/row8_gpu.py --stfs "$work/build/fs/stfs" --workdir "$work" --model "$model" \
		--device "$device" --reps "$reps" || die "row8_gpu.py"
fi
say "done: every check passed"
[ $((SECONDS - start)) -le 300 ] || echo "note: took over 5 minutes"
