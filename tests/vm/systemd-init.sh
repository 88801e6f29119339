#!/bin/busybox sh
# /init of the 'systemd' guest shape (tests/vm/run systemd): boots the host's own Debian
# userspace with systemd as PID 1, so that iodirtyd runs under its real, sandboxed unit.
#
# The host exports its / read-only over virtio-9p (mount tag hostroot). This script mounts
# it, puts a tmpfs overlay on top, installs the project into the overlay (the tree 'make
# install' produced, carried in this initramfs under /iodirty/install), adds the test
# units from tests/vm/systemd/, moves /proc, /sys and /dev over and switch_roots to
# /lib/systemd/systemd, which boots iodirty-test.target (kernel command line).
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /lower /rw /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "systemd-init: $*"
	echo "@@IOD@@ result systemd-boot 1"
	echo "@@IOD@@ done"
	reboot -f
}

# The host's / does not change while the guest runs: let the guest cache it (cache=loose),
# which makes systemd's start-up under TCG several times faster than uncached 9p.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=524288,cache=loose hostroot /lower ||
	fail "cannot mount the host's / (9p, tag hostroot)"
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "cannot mount the overlay's tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot ||
	fail "cannot mount the overlay (lowerdir 9p, upper tmpfs)"
[ -x /newroot/lib/systemd/systemd ] || fail "the host has no /lib/systemd/systemd"

r=/newroot
# The project, as installed (PREFIX=/usr/local): daemon, unit, bus policy, activation file.
cp -a /iodirty/install/. $r/
# The test target, the test service, the drop-ins for the test, the guest test script,
# mockvm and the Python example client (client/examples/).
mkdir -p $r/etc/systemd/system $r/usr/local/libexec/iodirty
for f in /iodirty/systemd/*; do
	case $f in
	*.sh | *.py | */mockvm) cp "$f" $r/usr/local/libexec/iodirty/ ;;
	*) cp -a "$f" $r/etc/systemd/system/ ;;
	esac
done
# What 'systemd-sysusers' does at a package install (units/iodirty.sysusers), plus a user
# for the bus policy tests: iodirty-test is in the group iodirty, nobody is not.
grep -q '^iodirty:' $r/etc/group || echo 'iodirty:x:990:iodirty-test' >>$r/etc/group
grep -q '^iodirty-test:' $r/etc/passwd ||
	echo 'iodirty-test:x:990:990::/nonexistent:/usr/sbin/nologin' >>$r/etc/passwd
# The host may be a container: its marker files would make systemd believe it runs in one
# (and, among other things, ignore systemd.unit= on the kernel command line).
rm -f $r/.dockerenv $r/run/.containerenv
# The host's disks do not exist here: an fstab or crypttab entry would hold local-fs.target
# until its device times out, then send the boot to emergency.target.
: >$r/etc/fstab
rm -f $r/etc/crypttab
# A fresh machine: an empty machine id, for which systemd makes a transient one.
: >$r/etc/machine-id
# Nothing of the host's own boot: only iodirty-test.target and what it needs. Units the
# host enabled for sysinit.target (timesyncd, pstore) and the ones that cannot work on a
# read-only 9p root are masked.
for u in systemd-timesyncd.service systemd-pstore.service systemd-firstboot.service \
	systemd-repart.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
	systemd-random-seed.service systemd-machine-id-commit.service \
	systemd-update-utmp.service systemd-journal-flush.service systemd-pcrphase.service \
	systemd-pcrphase-sysinit.service systemd-modules-load.service kmod-static-nodes.service \
	systemd-sysusers.service systemd-hwdb-update.service systemd-journal-catalog-update.service \
	ldconfig.service systemd-update-done.service systemd-remount-fs.service \
	sys-fs-fuse-connections.mount sys-kernel-config.mount sys-kernel-tracing.mount \
	cryptsetup.target integritysetup.target veritysetup.target; do
	ln -sf /dev/null $r/etc/systemd/system/$u
done

mkdir -p $r/proc $r/sys $r/dev
mount --move /proc $r/proc
mount --move /sys $r/sys
mount --move /dev $r/dev
echo "systemd-init: switching to systemd on the host's root (overlay), $(cut -d' ' -f1 $r/proc/uptime)s after boot"
exec switch_root $r /lib/systemd/systemd
