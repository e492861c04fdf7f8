#!/usr/bin/env bash
# Install what stfs needs to build and test, from Debian and PyPI.
# Idempotent: installs only what is missing. Needs root (or sudo) for apt.
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc libfuse3-dev fuse3 libjansson-dev check attr
      valgrind clang openssh-server sshfs)
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
	# openssh-server is here for the sshfs fault suite, which runs a private
	# sshd of its own. Installing it must not start a system sshd on port
	# 22: Debian's ssh.service and init script do not start while this file
	# exists. Only when this script installs it; an existing one is left be.
	if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
		$SUDO mkdir -p /etc/ssh
		$SUDO touch /etc/ssh/sshd_not_to_be_run
	fi
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import numpy, safetensors' 2>/dev/null; then
	echo "deps: pip install numpy safetensors"
	python3 -m pip install -q numpy safetensors
fi
