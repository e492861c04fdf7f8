#!/usr/bin/env bash
# Bounded fuzzing of the parsers with libFuzzer.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]    # default 60 s each; all targets
#
# Builds the libFuzzer targets with clang into build-fuzz/ (needs clang and
# its libFuzzer runtime: Debian's clang + libclang-rt-dev), then runs each
# target for SECONDS: seeds from tests/fuzz/corpus/TARGET, inputs it finds
# kept in build-fuzz/fuzz-work/TARGET/ (so a second run goes on from there),
# ASan + UBSan + leak checks on. Targets: header index select names.
#
# A crash, leak, timeout or out-of-memory input is copied into
# tests/fuzz/regress/TARGET/, where the 'regression' suite replays it from
# then on (commit it with the fix). Exit status 1 when anything was found.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(header index select names)
build=${STFS_FUZZ_BUILD:-build-fuzz}

# select: matching is linear in pattern x name for every tensor, so 512-byte
# inputs keep it fast; the 4 KiB pattern limit is covered by the seeds.
declare -A max_len=([header]=65536 [index]=16384 [select]=512 [names]=16384)

if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dtests=disabled >/dev/null
fi
ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz_}"

found=0
for t in "${targets[@]}"; do
	work=$build/fuzz-work/$t
	art=$build/fuzz-work/$t-artifacts
	mkdir -p "$work" "$art" "tests/fuzz/regress/$t"
	rm -f "$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-* "$art"/slow-unit-*
	echo "== fuzz_$t: $secs s" >&2
	rc=0
	"$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -max_len="${max_len[$t]}" \
		-timeout=10 -rss_limit_mb=4096 -dict="tests/fuzz/dict/$t.dict" \
		-artifact_prefix="$art/" -print_final_stats=1 \
		"$work" "tests/fuzz/corpus/$t" 2>"$art/log" || rc=$?
	grep -E 'DONE|^stat::number_of_executed_units|^stat::peak_rss_mb|^Done ' \
		"$art/log" >&2 || true
	for f in "$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-*; do
		[ -e "$f" ] || continue
		cp "$f" "tests/fuzz/regress/$t/"
		echo "fuzz_$t: saved $(basename "$f") in tests/fuzz/regress/$t/ (log: $art/log)" >&2
		found=1
	done
	if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then
		echo "fuzz_$t: exit status $rc, see $art/log" >&2
		found=1
	fi
done
exit $found
