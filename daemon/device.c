/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "device.h"
#include "logging.h"

#define VFIO_CDEV_PREFIX "/dev/vfio/devices/vfio"

/* "/dev/vfio/devices/vfioN": the only paths a device may be named by. */
static bool cdev_path_valid(const char *spec)
{
	const char *n = spec + strlen(VFIO_CDEV_PREFIX);

	if (strncmp(spec, VFIO_CDEV_PREFIX, strlen(VFIO_CDEV_PREFIX)) != 0 || !*n || strlen(n) > 10)
		return false;
	for (; *n; n++)
		if (*n < '0' || *n > '9')
			return false;
	return true;
}

bool iod_device_spec_valid(const char *spec)
{
	if (!spec || !*spec || strlen(spec) >= 4096)
		return false;
	if (spec[0] == '/')
		return cdev_path_valid(spec);
	return iod_pci_address_valid(spec);
}

int iod_device_open(const char *sysfs_root, const char *spec, int passed_fd,
		    struct iod_device **ret, struct iod_reason *why)
{
	_cleanup_(iod_device_freep) struct iod_device *d = NULL;
	int r;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->fd = -EBADF;

	if (!spec) {
		r = iod_vfio_check_fd(passed_fd);
		if (r < 0)
			return iod_reasonf(
				why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				"The passed fd is not a VFIO device cdev (/dev/vfio/devices/vfioN): %s",
				iod_strerror(r));
		d->fd = fcntl(passed_fd, F_DUPFD_CLOEXEC, 3);
		if (d->fd < 0)
			return -errno;
		d->name = strdup("fd");
		if (!d->name)
			return -ENOMEM;
		/* Cdev names the device for operators and for unplug uevents, when sysfs can. */
		r = iod_vfio_fd_cdev_path(d->fd, &d->cdev);
		if (r < 0)
			log_debug_errno(r, "No cdev path for the passed device fd: %m");
	} else {
		if (!iod_device_spec_valid(spec)) {
			char q[IOD_QUOTE_MAX];

			return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
					   "Device \"%s\" is " IOD_DEVICE_SPEC_WANTED,
					   iod_quote(spec, q));
		}
		d->name = strdup(spec);
		if (!d->name)
			return -ENOMEM;
		if (spec[0] == '/') {
			d->cdev = strdup(spec);
			if (!d->cdev)
				return -ENOMEM;
		} else {
			r = iod_vfio_cdev_path(sysfs_root, spec, &d->cdev);
			if (r == -ENODEV)
				return iod_reasonf(why, r, IOD_ERROR_NO_SUCH_DEVICE,
						   "There is no PCI device %s", spec);
			if (r == -ENXIO)
				return iod_reasonf(
					why, r, IOD_ERROR_NO_SUCH_DEVICE,
					"PCI device %s is not bound to a VFIO driver with cdev support (vfio-pci, CONFIG_VFIO_DEVICE_CDEV)",
					spec);
			if (r < 0)
				return iod_reason_kernel(why, r, "Failed to resolve PCI device %s",
							 spec);
		}
		r = iod_vfio_open(d->cdev, &d->fd);
		if (r == -ENOENT)
			return iod_reasonf(why, -ENXIO, IOD_ERROR_NO_SUCH_DEVICE,
					   "%s does not exist", d->cdev);
		if (r == -ENOTTY || r == -ELOOP)
			return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
					   "%s is not a VFIO device cdev (symbolic links are not "
					   "followed)",
					   d->cdev);
		if (r < 0)
			return iod_reason_kernel(why, r, "Failed to open %s", d->cdev);
	}

	*ret = TAKE_PTR(d);
	return 0;
}

int iod_device_open_probe(const char *sysfs_root, const char *spec, int passed_fd,
			  struct iod_device **ret, struct iod_reason *why)
{
	_cleanup_(iod_device_freep) struct iod_device *d = NULL;
	struct stat a, b;
	int r, flags;

	if (spec)
		return iod_device_open(sysfs_root, spec, -EBADF, ret, why);

	r = iod_vfio_check_fd(passed_fd);
	if (r < 0)
		return iod_reasonf(
			why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
			"The passed fd is not a VFIO device cdev (/dev/vfio/devices/vfioN): %s",
			iod_strerror(r));
	/* The caller proves it may use the device by an fd open for reading and writing: a
	 * path-only fd (O_PATH) needs no permission on the device itself. */
	flags = fcntl(passed_fd, F_GETFL);
	if (flags < 0 || (flags & O_PATH) || (flags & O_ACCMODE) != O_RDWR)
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "The passed device fd must be open for reading and writing");
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->fd = -EBADF;
	d->name = strdup("fd");
	if (!d->name)
		return -ENOMEM;
	r = iod_vfio_fd_cdev_path(passed_fd, &d->cdev);
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to find the cdev of the passed device fd");
	r = iod_vfio_open(d->cdev, &d->fd);
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to open %s", d->cdev);
	if (fstat(passed_fd, &a) < 0 || fstat(d->fd, &b) < 0 || a.st_rdev != b.st_rdev)
		return iod_reasonf(why, -ENXIO, IOD_ERROR_NO_SUCH_DEVICE,
				   "%s is no longer the device of the passed fd", d->cdev);
	*ret = TAKE_PTR(d);
	return 0;
}

struct iod_device *iod_device_free(struct iod_device *d)
{
	if (!d)
		return NULL;
	sd_event_source_disable_unref(d->req_source);
	iod_close(d->fd);
	free(d->name);
	free(d->cdev);
	free(d->path);
	free(d->fdname);
	free(d->log_ranges);
	free(d);
	return NULL;
}

int iod_device_bind(struct iod_device *d, struct iod_iommufd *ictx, struct iod_reason *why)
{
	int r;

	r = iod_vfio_bind(d->fd, iod_iommufd_fd(ictx), &d->dev_id);
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to bind device %s to iommufd", d->name);
	d->bound = true;

	r = iod_iommufd_hw_info(ictx, d->dev_id, &d->hw);
	if (r == -ENOENT) {
		/* The id the bind gave is no iommufd device: the device has no IOMMU of its own
		 * and VFIO made it an iommufd access (an emulated IOMMU: mdev devices). */
		d->emulated = true;
		d->hw = (struct iod_hw_info){};
	} else if (r < 0)
		return iod_reason_kernel(why, r, "Failed to read the IOMMU capabilities of %s",
					 d->name);

	r = iod_vfio_probe_features(d->fd, &d->features);
	if (r < 0) {
		log_debug_errno(r, "Failed to probe the VFIO features of %s, assuming none: %m",
				d->name);
		d->features = (struct iod_vfio_features){};
	}
	return 0;
}

const char *iod_dirty_source_to_string(enum iod_dirty_source source)
{
	switch (source) {
	case IOD_SOURCE_IOMMU:
		return "iommu";
	case IOD_SOURCE_DEVICE_LOG:
		return "device-log";
	case IOD_SOURCE_FALLBACK:
		return "fallback";
	}
	return "unknown";
}

const char *iod_iommu_type_to_string(uint32_t type)
{
	switch (type) {
	case 0:
		return "none";
	case 1:
		return "intel-vtd";
	case 2:
		return "arm-smmuv3";
	case 3:
		return "tegra241-cmdqv";
	case 0xfeedbeef:
		return "selftest";
	default:
		return "unknown";
	}
}

const char *iod_migration_flag_name(uint64_t flags, unsigned i)
{
	static const struct {
		uint64_t flag;
		const char *name;
	} table[] = {
		{1u << 0, "stop-copy"},
		{1u << 1, "p2p"},
		{1u << 2, "pre-copy"},
	};
	unsigned n = 0;

	for (size_t k = 0; k < ELEMENTSOF(table); k++)
		if (flags & table[k].flag) {
			if (n == i)
				return table[k].name;
			n++;
		}
	return NULL;
}
