#!/bin/busybox sh
# /init of the iodirty test guest. Mounts the basics, prepares the machine shape named on
# the kernel command line (iod.shape=mock|vfio|demo), runs the tests listed for it in
# /iodirty/<shape>.tests and reports each one on the serial console as
#   @@IOD@@ <name> <exit code>
# then '@@IOD@@ done' and powers the guest off (the host runner exits QEMU on reboot).
/bin/busybox --install -s /bin
export PATH=/iodirty/bin:/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /run /var/run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo 4 > /proc/sys/kernel/printk

shape=mock
timeout_s=600
for arg in $(cat /proc/cmdline); do
	case $arg in
	iod.shape=*) shape=${arg#iod.shape=} ;;
	iod.timeout=*) timeout_s=${arg#iod.timeout=} ;;
	iod.only=*) only=${arg#iod.only=} ;;
	iod.env.*=*) export "${arg#iod.env.}" ;;
	esac
done
export IOD_VM_SHAPE=$shape

say() { echo "@@IOD@@ $*"; }

if [ "$shape" = vfio ] || [ "$shape" = demo ] || [ "$shape" = demo-vfio ]; then
	# Bind the edu device (1234:11e8) to vfio-pci so it appears as a VFIO cdev.
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ] || continue
		bdf=${d##*/}
		echo vfio-pci >"$d/driver_override"
		[ -e "$d/driver" ] && echo "$bdf" >"$d/driver/unbind"
		echo "$bdf" >/sys/bus/pci/drivers_probe
		export IOD_EDU_PCI=$bdf
		echo "init: edu device $bdf bound to $(basename "$(readlink "$d/driver")")"
	done
fi

# The test device for device DMA logging (tests/vm/testdev/, tests/vm/testdev.h) in the
# mock shape, where its tests run: two devices, at most 8 logged ranges each. Not in the
# vfio shapes, where the edu device is expected to be vfio0.
case $shape in
mock)
	if iod-insmod /iodirty/modules/iodirty-testdev.ko devices=2 max_ranges=8; then
		echo "init: iodirty-testdev loaded"
	else
		echo "init: loading iodirty-testdev failed"
	fi
	;;
esac

# Fault injection: make failslab and fail_page_alloc usable through fail-nth.
for f in failslab fail_page_alloc; do
	k=/sys/kernel/debug/$f
	[ -d $k ] || continue
	echo N >$k/ignore-gfp-wait 2>/dev/null
	[ -e $k/ignore-gfp-highmem ] && echo N >$k/ignore-gfp-highmem
	[ -e $k/min-order ] && echo 0 >$k/min-order
	echo 0 >$k/verbose 2>/dev/null
done

dmesg_before=$(dmesg | grep -c -E 'WARNING:|BUG:|Oops|refcount_t|leak' || true)
list=/iodirty/$shape.tests
say begin "$shape"
if [ -f "$list" ]; then
	while read -r name cmd; do
		case $name in '' | '#'*) continue ;; esac
		if [ -n "${only:-}" ] && [ "$name" != "$only" ]; then continue; fi
		echo "=== $name: $cmd"
		timeout "$timeout_s" sh -c "cd /tmp && exec $cmd" </dev/null
		say result "$name" $?
	done <"$list"
else
	echo "init: no test list $list"
fi
dmesg_after=$(dmesg | grep -c -E 'WARNING:|BUG:|Oops|refcount_t|leak' || true)
if [ "$dmesg_after" != "$dmesg_before" ]; then
	echo "init: the kernel logged warnings during the tests:"
	dmesg | grep -E -A20 'WARNING:|BUG:|Oops|refcount_t|leak'
	say result kernel-log-clean 1
else
	say result kernel-log-clean 0
fi
say done
sync
reboot -f
