#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Time every scale class of the hostile corpus (tests/fuzz/cases.c, the
# built cases marked scale) at 10^4, 10^5 and 10^6: a check of the source
# must be O(n log n) or better, so 10x the input may cost about 10x the time.
# Prints one line per class and size: the refusal, the seconds of
# stf_model_open (what stfs does before refusing) and of stf_model_check
# (stfsctl verify), and the peak RSS. No pass/fail on time: the regression
# suite holds each class to a generous bound at one size.
#
#   tools/hostile_scale.sh [BUILD_DIR] [SIZES...]    # default: build 10000 100000 1000000
#
# Needs room in $TMPDIR (default /tmp): 10^6 sets are 10^6 small files.
set -e
build=${1:-build}
[ $# -gt 0 ] && shift
sizes=${*:-10000 100000 1000000}
exe=$build/tests/fuzz/fuzz_cases
[ -x "$exe" ] || { echo "$exe: not built (ninja -C $build)" >&2; exit 2; }
for n in $sizes; do
        "$exe" --scale "$n"
done
