#!/bin/sh
# Builds the initramfs of the 'systemd' guest shape and prints its path (called by
# tests/vm/run). It carries a static busybox, /init (systemd-init.sh), the project as 'make
# install' lays it out for PREFIX=/usr/local, and the test units of tests/vm/systemd/; the
# guest's userspace is the host's own /, exported read-only over 9p.
# Usage: systemd-stage.sh BUILD_DIR
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
B=$1
stage=$B/vm/systemd-root
initrd=$B/vm/systemd-initramfs.cpio.gz

[ -x /lib/systemd/systemd ] || { echo "vm: the systemd shape needs systemd on the host: run 'make deps' (package systemd)" >&2; exit 1; }
[ -x /usr/bin/dbus-daemon ] || { echo "vm: the systemd shape needs dbus on the host: run 'make deps' (package dbus)" >&2; exit 1; }
command -v setpriv >/dev/null || { echo "vm: the systemd shape needs setpriv (package util-linux)" >&2; exit 1; }
command -v gdbus >/dev/null || { echo "vm: the systemd shape needs gdbus (fd passing): run 'make deps' (package libglib2.0-bin)" >&2; exit 1; }
# The Python client's check (client/examples/): the guest runs the host's python3, its
# standard library and dbus-python (_dbus_bindings, linked to libdbus) from the host's /.
/usr/bin/python3 -c 'import dbus, _dbus_bindings, mmap' 2>/dev/null ||
	{ echo "vm: the systemd shape needs python3 with dbus-python: run 'make deps' (packages python3 python3-dbus)" >&2; exit 1; }

rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/iodirty"
cp /bin/busybox "$stage/bin/busybox"
cp "$here/systemd-init.sh" "$stage/init"
chmod 0755 "$stage/init"
# 'make install' without rebuilding 'all' (the test programs of other tiers are not needed
# here): build what it installs, then install with 'all' taken as up to date.
need="$B/iodirtyd $B/libiodirty.a $B/libiodirty.pc $B/units/iodirtyd.service"
[ -f "$top/client/iodirtyctl.c" ] && need="$need $B/iodirtyctl"
# mockvm, the stand-in VMM that lends a kernel mock device to the daemon (adopt mode)
[ -f "$top/tests/vm/mockvm.c" ] && need="$need $B/vm/mockvm"
# shellcheck disable=SC2086
make -C "$top" --no-print-directory -s B="$B" PREFIX=/usr/local $need >&2
make -C "$top" --no-print-directory -s B="$B" PREFIX=/usr/local DESTDIR="$stage/iodirty/install" \
	-o all install >&2
[ -x "$stage/iodirty/install/usr/local/sbin/iodirtyd" ] ||
	{ echo "vm: 'make install' did not install iodirtyd" >&2; exit 1; }
# Only what the running system needs: no static library, headers or pkg-config file.
rm -rf "$stage/iodirty/install/usr/local/lib/libiodirty.a" "$stage/iodirty/install/usr/local/lib/pkgconfig" \
	"$stage/iodirty/install/usr/local/include"
cp -a "$here/systemd" "$stage/iodirty/systemd"
[ -x "$B/vm/mockvm" ] && cp "$B/vm/mockvm" "$stage/iodirty/systemd/mockvm"
cp "$top/client/examples/iodirty-python-example.py" "$stage/iodirty/systemd/"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
echo "$initrd"
