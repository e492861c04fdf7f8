#!/usr/bin/env bash
# Install what stfs needs to build and test, from Debian and PyPI.
# Idempotent: installs only what is missing. Needs root (or sudo) for apt.
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc libfuse3-dev fuse3 libjansson-dev check attr
      valgrind clang)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	echo "deps: installing ${missing[*]}"
	$SUDO apt-get update -qq || true
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import numpy, safetensors' 2>/dev/null; then
	echo "deps: pip install numpy safetensors"
	python3 -m pip install -q numpy safetensors
fi
