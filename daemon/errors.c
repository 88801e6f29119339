/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "errors.h"
#include "iodirty.h"

static const sd_bus_error_map iod_error_map[] = {
	SD_BUS_ERROR_MAP(IOD_ERROR_INVALID_RANGE, ERANGE),
	SD_BUS_ERROR_MAP(IOD_ERROR_NOT_DIRTY_CAPABLE, EOPNOTSUPP),
	SD_BUS_ERROR_MAP(IOD_ERROR_NO_IOMMUFD, ENODEV),
	SD_BUS_ERROR_MAP(IOD_ERROR_NO_SUCH_SESSION, ENOENT),
	SD_BUS_ERROR_MAP(IOD_ERROR_NO_SUCH_DEVICE, ENXIO),
	SD_BUS_ERROR_MAP(IOD_ERROR_SESSION_EXISTS, EEXIST),
	SD_BUS_ERROR_MAP(IOD_ERROR_LIMIT_EXCEEDED, ENOSPC),
	SD_BUS_ERROR_MAP(IOD_ERROR_BUSY, EBUSY),
	SD_BUS_ERROR_MAP(IOD_ERROR_SESSION_FAILED, EIO),
	SD_BUS_ERROR_MAP(IOD_ERROR_WRONG_MODE, EMEDIUMTYPE),
	SD_BUS_ERROR_MAP(IOD_ERROR_NOT_TRACKING, ESRCH),
	SD_BUS_ERROR_MAP(IOD_ERROR_NO_SUCH_ROUND, ESTALE),
	SD_BUS_ERROR_MAP(IOD_ERROR_NOT_MAPPED, ENOENT),
	SD_BUS_ERROR_MAP(IOD_ERROR_KERNEL, EIO),
	SD_BUS_ERROR_MAP_END,
};

int iod_errors_register(void)
{
	return sd_bus_error_add_map(iod_error_map);
}

static const char *kernel_error_name(int err)
{
	switch (err) {
	case -ENODEV:
		return IOD_ERROR_NO_IOMMUFD;
	case -EOPNOTSUPP:
		return IOD_ERROR_NOT_DIRTY_CAPABLE;
	case -ENOSPC:
	case -E2BIG:
	case -ENOMEM:
		return IOD_ERROR_LIMIT_EXCEEDED;
	case -EBUSY:
		return IOD_ERROR_BUSY;
	case -ERANGE:
	case -EOVERFLOW:
		return IOD_ERROR_INVALID_RANGE;
	case -ENXIO:
		return IOD_ERROR_NO_SUCH_DEVICE;
	default:
		return IOD_ERROR_KERNEL;
	}
}

int iod_reasonf(struct iod_reason *why, int err, const char *name, const char *format, ...)
{
	va_list ap;

	if (!why)
		return err;
	why->name = name;
	va_start(ap, format);
	vsnprintf(why->text, sizeof(why->text), format, ap);
	va_end(ap);
	return err;
}

int iod_reason_kernel(struct iod_reason *why, int err, const char *format, ...)
{
	char what[192];
	va_list ap;

	if (err >= 0)
		err = -EIO;
	if (!why)
		return err;
	va_start(ap, format);
	vsnprintf(what, sizeof(what), format, ap);
	va_end(ap);
	why->name = kernel_error_name(err);
	snprintf(why->text, sizeof(why->text), "%s: %s", what, iod_strerror(err));
	return err;
}

int iod_bus_error_from_reason(sd_bus_error *error, int err, const struct iod_reason *why)
{
	if (why && why->name) {
		sd_bus_error_set(error, why->name, why->text);
		return err;
	}
	return sd_bus_error_set_errnof(error, err, "%s", iod_strerror(err));
}

int iod_bus_error_kernel(sd_bus_error *error, int err, const char *what)
{
	struct iod_reason why = {};

	err = iod_reason_kernel(&why, err, "%s", what);
	return iod_bus_error_from_reason(error, err, &why);
}
