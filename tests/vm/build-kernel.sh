#!/bin/sh
# Build (once) the guest kernel for the real-kernel test tier and print the bzImage path.
# The kernel is cached outside the work tree, keyed by the config fragment and the source
# version: $IOD_CACHE/kernel/<key>/bzImage (IOD_CACHE defaults to ~/.cache/iodirty).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$("$here/../../lib/uapi/kernel-source.sh")
cache=${IOD_CACHE:-${HOME:-/root}/.cache/iodirty}
fragment=$here/kernel.config

key=$( (basename "$src"; cat "$fragment"; echo v1) | sha256sum | cut -c1-16)
dir=$cache/kernel/$key
if [ -f "$dir/bzImage" ]; then
	echo "$dir/bzImage"
	exit 0
fi

mkdir -p "$cache/kernel"
exec 9>"$cache/kernel/.lock"
flock 9
if [ -f "$dir/bzImage" ]; then
	echo "$dir/bzImage"
	exit 0
fi

obj=$dir/obj
log=$dir/build.log
mkdir -p "$obj"
echo "build-kernel: building the guest kernel in $obj (first run on this machine: several minutes; log: $log)" >&2
{
	make -C "$src" O="$obj" ARCH=x86_64 tinyconfig
	KCONFIG_CONFIG="$obj/.config" "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment"
	make -C "$src" O="$obj" ARCH=x86_64 olddefconfig
} >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }

# Every option the fragment asks for must have survived olddefconfig.
missing=
while IFS= read -r line; do
	case $line in CONFIG_*=*) ;; *) continue ;; esac
	opt=${line%%=*}
	want=${line#*=}
	if [ "$want" = n ]; then
		grep -qx "$opt=y" "$obj/.config" && missing="$missing $opt(=y,want n)"
	else
		grep -qx "$opt=$want" "$obj/.config" || missing="$missing $opt"
	fi
done <"$fragment"
if [ -n "$missing" ]; then
	echo "build-kernel: options not set after olddefconfig (missing dependencies?):$missing" >&2
	exit 1
fi

jobs=$(nproc 2>/dev/null || echo 2)
if ! make -C "$src" O="$obj" ARCH=x86_64 -j"$jobs" bzImage >>"$log" 2>&1; then
	tail -40 "$log" >&2
	exit 1
fi
cp "$obj/arch/x86/boot/bzImage" "$dir/bzImage.tmp"
cp "$obj/.config" "$dir/config"
mv "$dir/bzImage.tmp" "$dir/bzImage"
# Keep the cache small: the object tree is only needed to rebuild.
rm -rf "$obj"
echo "$dir/bzImage"
