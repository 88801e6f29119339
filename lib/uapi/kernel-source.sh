#!/bin/sh
# Print the path of an unpacked Linux source tree from Debian's linux-source-6.12
# package, unpacking it once into the cache (IOD_CACHE, default ~/.cache/iodirty).
# The tree is keyed by the package version, so an upgrade unpacks a fresh one.
# IOD_KERNEL_SRC=DIR uses an unpacked tree of your own instead (for example a scratch copy
# with a change reverted, to run the guest tier against an older kernel's behaviour); the
# guest kernel's cache key includes the folder's name.
set -eu

if [ -n "${IOD_KERNEL_SRC:-}" ]; then
	if [ ! -f "$IOD_KERNEL_SRC/Makefile" ] || [ ! -d "$IOD_KERNEL_SRC/drivers/iommu" ]; then
		echo "kernel-source: IOD_KERNEL_SRC=$IOD_KERNEL_SRC is not an unpacked Linux source tree" >&2
		exit 1
	fi
	(cd "$IOD_KERNEL_SRC" && pwd)
	exit 0
fi

pkg=linux-source-6.12
cache=${IOD_CACHE:-${HOME:-/root}/.cache/iodirty}
tarball=/usr/src/$pkg.tar.xz

if [ ! -r "$tarball" ]; then
	echo "kernel-source: $tarball is missing; install it with 'apt-get install $pkg' (or run 'make deps')" >&2
	exit 1
fi
version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || stat -c %Y "$tarball")
version=$(printf %s "$version" | tr -c "A-Za-z0-9.+\n-" _)
dest=$cache/src/$pkg-$version

if [ ! -f "$dest/.unpacked" ]; then
	mkdir -p "$cache/src"
	exec 9>"$cache/src/.lock"
	flock 9
	if [ ! -f "$dest/.unpacked" ]; then
		echo "kernel-source: unpacking $tarball into $dest (once per version)" >&2
		rm -rf "$dest.tmp"
		mkdir -p "$dest.tmp"
		tar -xJf "$tarball" -C "$dest.tmp" --strip-components=1
		touch "$dest.tmp/.unpacked"
		rm -rf "$dest"
		mv "$dest.tmp" "$dest"
	fi
fi
echo "$dest"
