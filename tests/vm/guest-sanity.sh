#!/bin/sh
# The guest itself is what the other tests assume: fail loudly if it is not.
shape=$1
rc=0
check() {
	if eval "$2"; then echo "ok: $1"; else echo "not ok: $1"; rc=1; fi
}
check "/dev/iommu exists" "[ -c /dev/iommu ]"
check "memfd works" "[ -d /proc/self/fd ]"
check "fail-nth is available" "[ -e /proc/self/task/\$\$/fail-nth ]"
# The wrappers' verdict can fail: a failing program must fail each of them (and, where a
# plain program can pass, a passing one passes).
for w in guest-daemon.sh guest-fdstore.sh guest-migrate.sh; do
	check "$w reports a failing program" "! sh /iodirty/$w false >/dev/null 2>&1"
done
for w in guest-daemon.sh guest-migrate.sh; do
	check "$w reports a passing program" "sh /iodirty/$w true >/dev/null 2>&1"
done
if [ "$shape" = mock ]; then
	check "the test device module is loaded" "[ -d /sys/bus/platform/devices/iodirty-testdev.0/vfio-dev ] && [ -d /sys/kernel/debug/iodirty-testdev/testdev0 ]"
	check "the mtty mdev type exists" "[ -e /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-1/create ]"
fi
if [ "$shape" = vfio ]; then
	check "the edu device is bound to vfio-pci" "[ -n \"\${IOD_EDU_PCI:-}\" ] && [ \"\$(basename \"\$(readlink /sys/bus/pci/devices/\$IOD_EDU_PCI/driver)\")\" = vfio-pci ]"
	check "its VFIO cdev exists" "ls /sys/bus/pci/devices/\$IOD_EDU_PCI/vfio-dev/ | grep -q vfio && [ -c /dev/vfio/devices/vfio0 ]"
	check "the IOMMU is VT-d" "ls /sys/class/iommu/ | grep -q dmar"
fi
exit $rc
