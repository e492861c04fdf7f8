#!/usr/bin/env bash
# Every test suite that runs without a GPU, from a fresh clone:
# installs what is missing, builds, runs the unit and mount suites.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh

if [ -d build ]; then
	meson setup --reconfigure build -Dwerror=true >/dev/null
else
	meson setup build -Dwerror=true >/dev/null
fi
ninja -C build
meson test -C build --print-errorlogs --suite unit --suite mount
