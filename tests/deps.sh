#!/bin/sh
# Install everything iodirty needs to build, test and run its guest tier on Debian 12.
# Run as root (the README's commands and .ci/run call it through 'make deps').
set -eu
packages="
	build-essential pkg-config make
	libsystemd-dev libjson-c-dev libnl-3-dev check
	systemd dbus libglib2.0-bin python3 python3-dbus
	linux-source-6.12 bc flex bison libelf-dev cpio xz-utils kmod rsync
	qemu-system-x86 busybox-static
	valgrind clang-format man-db groff-base
	python3 python3-prometheus-client
"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: run as root (or with sudo): it calls apt-get" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $packages
