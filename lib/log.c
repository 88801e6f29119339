/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdio.h>
#include <string.h>

#include "iodirty.h"

static iod_log_fn log_fn;
static void *log_userdata;

void iod_set_log_fn(iod_log_fn fn, void *userdata)
{
	log_fn = fn;
	log_userdata = userdata;
}

void iod_logf(int level, const char *format, ...)
{
	char buf[512];
	va_list ap;
	int saved = errno;

	if (!log_fn)
		return;
	va_start(ap, format);
	vsnprintf(buf, sizeof(buf), format, ap);
	va_end(ap);
	log_fn(level, buf, log_userdata);
	errno = saved;
}

const char *iod_strerror(int err)
{
	switch (err) {
	case -ENODEV:
		return "no such device (for /dev/iommu: the kernel has no iommufd)";
	case -ENOTTY:
		return "ioctl not supported (kernel too old for iommufd dirty tracking, or not an iommufd/VFIO fd)";
	case -EOPNOTSUPP:
		return "the IOMMU cannot track dirty pages (not dirty capable)";
	case -EBADMSG:
		return "malformed or inconsistent data";
	case -EPROTO:
		return "unknown format version";
	default:
		return strerror(err < 0 ? -err : err);
	}
}
