#!/bin/sh
# Provide <linux/iommufd.h> and <linux/vfio.h> with HWPT dirty tracking for the build.
# Usage: gen-headers.sh OUTDIR
# If the system's <linux/iommufd.h> defines IOMMU_HWPT_GET_DIRTY_BITMAP, nothing is
# generated (OUTDIR/linux stays empty and the system headers are used). Otherwise the
# uapi headers are produced with 'make headers_install' from Debian's linux-source-6.12
# and the two files are copied into OUTDIR/linux. No kernel header is kept in the repo.
set -eu
mkdir -p "$1"; out=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}

mkdir -p "$out/linux"
if printf '#include <linux/iommufd.h>\n#ifndef IOMMU_HWPT_GET_DIRTY_BITMAP\n#error old\n#endif\n' |
	"$cc" -E -x c - >/dev/null 2>&1; then
	echo "uapi: using the system's <linux/iommufd.h>" >&2
	rm -f "$out/linux/iommufd.h" "$out/linux/vfio.h"
	touch "$out/.stamp"
	exit 0
fi

src=$("$here/kernel-source.sh")
hdr=$out/kernel-headers
echo "uapi: the system has no iommufd dirty tracking header; running headers_install from $src" >&2
rm -rf "$hdr" "$out/kbuild"
make -s -C "$src" O="$out/kbuild" ARCH=x86 INSTALL_HDR_PATH="$hdr" headers_install >&2
cp "$hdr/include/linux/iommufd.h" "$hdr/include/linux/vfio.h" "$out/linux/"
rm -rf "$out/kbuild"
touch "$out/.stamp"
