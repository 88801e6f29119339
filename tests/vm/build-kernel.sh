#!/bin/sh
# Build (once) the guest kernel for the real-kernel test tier and print the bzImage path.
# The kernel is cached outside the work tree, keyed by the config fragment and the source
# version: $IOD_CACHE/kernel/<key>/bzImage (IOD_CACHE defaults to ~/.cache/iodirty).
#
# Next to it, iodirty-testdev.ko: the test device of tests/vm/testdev/, built as an external
# module against the kernel's object tree. The object tree is kept for that, pruned of the
# kernel's own objects (what is left is what 'make M=' needs: .config, generated headers,
# scripts, objtool, Module.symvers). The module has its own key (its sources), kept in
# iodirty-testdev.key: a change to tests/vm/testdev/ rebuilds the module, not the kernel.
# A module that does not build fails this script.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$("$here/../../lib/uapi/kernel-source.sh")
cache=${IOD_CACHE:-${HOME:-/root}/.cache/iodirty}
fragment=$here/kernel.config
testdev=$here/testdev

key=$( (basename "$src"; cat "$fragment"; echo v2) | sha256sum | cut -c1-16)
modkey=$( (echo "$key"; cd "$testdev" && for f in $(ls | LC_ALL=C sort); do echo "$f"; cat "$f"; done) | sha256sum | cut -c1-16)
dir=$cache/kernel/$key
obj=$dir/obj
log=$dir/build.log
ko=$dir/iodirty-testdev.ko

up_to_date() {
	[ -f "$dir/bzImage" ] && [ -f "$ko" ] && [ "$(cat "$dir/iodirty-testdev.key" 2>/dev/null)" = "$modkey" ]
}

if up_to_date; then
	echo "$dir/bzImage"
	exit 0
fi

mkdir -p "$cache/kernel"
exec 9>"$cache/kernel/.lock"
flock 9
if up_to_date; then
	echo "$dir/bzImage"
	exit 0
fi

build_module() {
	echo "build-kernel: building iodirty-testdev.ko against $obj (log: $dir/module.log)" >&2
	rm -rf "$obj/iodirty-testdev"
	cp -r "$testdev" "$obj/iodirty-testdev"
	rm -f "$ko"
	if ! make -C "$src" O="$obj" ARCH=x86_64 M="$obj/iodirty-testdev" modules >"$dir/module.log" 2>&1 ||
		[ ! -f "$obj/iodirty-testdev/iodirty-testdev.ko" ]; then
		tail -40 "$dir/module.log" >&2
		echo "build-kernel: the test module iodirty-testdev.ko did not build (log: $dir/module.log)" >&2
		exit 1
	fi
	cp "$obj/iodirty-testdev/iodirty-testdev.ko" "$ko.tmp"
	mv "$ko.tmp" "$ko"
	echo "$modkey" >"$dir/iodirty-testdev.key"
}

# The kernel is there and its object tree too: only the module changed.
if [ -f "$dir/bzImage" ] && [ -f "$obj/Module.symvers" ]; then
	build_module
	echo "$dir/bzImage"
	exit 0
fi

rm -rf "$obj"
rm -f "$dir/bzImage"
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
# 'modules' (there are none in the tree) writes Module.symvers for the external module.
if ! make -C "$src" O="$obj" ARCH=x86_64 -j"$jobs" bzImage modules >>"$log" 2>&1; then
	tail -40 "$log" >&2
	exit 1
fi
cp "$obj/arch/x86/boot/bzImage" "$dir/bzImage.tmp"
cp "$obj/.config" "$dir/config"
# Keep the cache small: drop the kernel's own objects, keep what an external module needs.
find "$obj" \( -path "$obj/scripts" -o -path "$obj/tools" \) -prune -o \
	\( -name '*.o' -o -name '*.a' -o -name '*.ko' -o -name '.*.cmd' -o -name '.tmp_vmlinux*' \) -type f -print |
	xargs -r rm -f
rm -f "$obj/vmlinux" "$obj/vmlinux.o" "$obj/arch/x86/boot/compressed/vmlinux.bin"*
mv "$dir/bzImage.tmp" "$dir/bzImage"
build_module
echo "$dir/bzImage"
