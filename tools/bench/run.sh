#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# Run every stfs benchmark row and print a Markdown summary.
#
# usage: tools/bench/run.sh [--quick] [--keep] [--workdir DIR] [--stfs PATH]
#                           [--nullfs PATH] [--rows 1,2,3,4,5,6,7,8,9]
#                           [--fakecuda DIR]
#
#   --quick     tiny models, one run each: a smoke test for CI (no figure
#               means anything; nothing is asserted)
#   --keep      keep the generated models (in --workdir) for the next run
#   --workdir   where models are generated (default: a new directory in
#               /var/tmp, removed at the end unless --keep). It must be on
#               a real disk, or the cold rows are not cold.
#   --stfs      the daemon (default: $STFS or build/fs/stfs)
#   --nullfs    row 1e's ceiling daemon (default: $NULLFS or
#               tools/bench/nullfs of the daemon's build directory)
#   --rows      which rows to run (default all: 1,2,3,4,5,6,7,8,9; row 8
#               prints "no GPU on this machine (skipped)" where there is none)
#   --fakecuda  run row 8 against tests/gpu's fake driver: DIR holds its
#               libcuda.so.1 (build/tests/gpu). Figures meaningless; the
#               smoke run uses it so that the GPU path runs everywhere
#
# Run as root for the cold rows (they drop the page cache with
# `echo 3 > /proc/sys/vm/drop_caches`) and for row 7. Exit status is 0 unless
# a script fails; missed targets do not fail the run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cmdline="tools/bench/run.sh${*:+ $*}"
quick=()
keep=0
workdir=
stfs=${STFS:-$root/build/fs/stfs}
rows=1,2,3,4,5,6,7,8,9
fakecuda=

while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=(--quick) ;;
	--keep) keep=1 ;;
	--workdir) workdir=$2; shift ;;
	--stfs) stfs=$2; shift ;;
	--nullfs) NULLFS=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); export NULLFS; shift ;;
	--rows) rows=$2; shift ;;
	--fakecuda) fakecuda=$(cd "$2" && pwd); shift ;;
	-h | --help) sed -n '4,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

if [ ! -x "$stfs" ]; then
	echo "run.sh: no daemon at $stfs: build first (meson setup build && ninja -C build) or pass --stfs" >&2
	exit 1
fi
if ! command -v fusermount3 >/dev/null || [ ! -e /dev/fuse ]; then
	echo "run.sh: needs fusermount3 and /dev/fuse" >&2
	exit 1
fi
[ "$(id -u)" = 0 ] || echo "run.sh: not root: cold figures and row 7 are skipped" >&2

own=0
if [ -z "$workdir" ]; then
	workdir=$(mktemp -d /var/tmp/stfs-bench-XXXXXX)
	own=1
fi
mkdir -p "$workdir"
results=$(mktemp /tmp/stfs-bench-results-XXXXXX)
cleanup() {
	rm -f "$results"
	if [ "$own" = 1 ] && [ "$keep" = 0 ]; then rm -rf "$workdir"; fi
}
trap cleanup EXIT

common=(--stfs "$stfs" --workdir "$workdir" --json "$results" "${quick[@]}")
start=$SECONDS
run_row() {
	local t0=$SECONDS
	echo "--- row $1: $2" >&2
	python3 "$here/$2" "${common[@]}"
	echo "--- row $1: $((SECONDS - t0)) s" >&2
}
for r in ${rows//,/ }; do
	case $r in
	1) run_row 1 row1_seq.py ;;
	2) run_row 2 row2_random.py ;;
	3) run_row 3 row3_mmap.py ;;
	4) run_row 4 row4_numpy.py ;;
	5) run_row 5 row5_meta.py ;;
	6) run_row 6 row6_prefetch.py ;;
	7) run_row 7 row7_shared.py ;;
	8) if [ -n "$fakecuda" ]; then
		LD_LIBRARY_PATH=$fakecuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} run_row 8 row8_gpu.py
	else
		run_row 8 row8_gpu.py
	fi ;;
	9) run_row 9 row9_whole.py ;;
	*) echo "run.sh: no row $r" >&2; exit 2 ;;
	esac
done
python3 "$here/summary.py" "$results" "$cmdline"
echo
echo "total: $((SECONDS - start)) s"
[ "$keep" = 1 ] && echo "models kept in $workdir" >&2
exit 0
