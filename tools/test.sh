#!/usr/bin/env bash
# Every test suite that runs without a GPU, from a fresh clone:
# installs what is missing, builds, runs the unit, ctl, regression and mount
# suites, then the same under ASan+UBSan (build-asan/), then the unit suite
# under valgrind, then the -Dcuda=disabled and -Dfuse=disabled builds.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh

setup() { # DIR ARGS...
	local dir=$1
	shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir"
}

setup build -Dwerror=true
meson test -C build --print-errorlogs --suite unit --suite ctl --suite regression --suite mount --suite gpu-fake

# Sanitizers. use_sigaltstack=0: gcc 12's ASan misreports its own
# sigaltstack teardown in libfuse's worker threads as an overflow.
setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
ASAN_OPTIONS=use_sigaltstack=0:detect_leaks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --print-errorlogs --suite unit --suite ctl --suite regression --suite mount --suite gpu-fake

# The unit suite under valgrind (no fork, so leaks are seen in-process).
CK_FORK=no meson test -C build --print-errorlogs --suite unit --timeout-multiplier 10 \
	--wrap='valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1'

# The variants users can get, compile plus the unit suite: without the CUDA
# headers (the stub target, which a machine with cuda.h never compiles
# otherwise), and without libfuse (core/ and stfsctl only; the option must
# not even look libfuse up).
setup build-nocuda -Dwerror=true -Dcuda=disabled
test -e build-nocuda/core/libstfcore.a.p/gpu_stub.c.o
meson test -C build-nocuda --print-errorlogs --suite unit
setup build-nofuse -Dwerror=true -Dfuse=disabled
grep -q 'Dependency fuse3 skipped: feature fuse disabled' build-nofuse/meson-logs/meson-log.txt
test ! -e build-nofuse/fs/stfs
meson test -C build-nofuse --print-errorlogs --suite unit --suite ctl

# Benchmarks as a smoke test only: tiny sizes, no assertion on speed; row 8
# (GPU) on the fake driver, so the path runs (its figures mean nothing).
tools/bench/run.sh --quick --stfs build/fs/stfs --fakecuda build/tests/gpu >/dev/null
echo "bench smoke: ok"
