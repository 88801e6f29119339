/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VFIO device cdevs (/dev/vfio/devices/vfioN) bound to an iommufd.
 */
#ifndef IOD_VFIO_H
#define IOD_VFIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iod-bitmap.h"

/*
 * true if s is a full PCI address "DDDD:BB:DD.F" (hex, lower or upper case).
 */
bool iod_pci_address_valid(const char *s);

/*
 * Resolve a PCI address to its VFIO cdev path through sysfs:
 * <sysfs>/bus/pci/devices/<addr>/vfio-dev/vfioN -> /dev/vfio/devices/vfioN.
 * sysfs_root NULL means "/sys". -EINVAL: malformed address; -ENODEV: no such PCI device;
 * -ENXIO: the device is not bound to a VFIO driver with cdev support.
 * *ret_path is malloc'ed.
 */
int iod_vfio_cdev_path(const char *sysfs_root, const char *pci_address, char **ret_path);

/*
 * Open a cdev read-write, CLOEXEC. The path is resolved without following any symbolic link
 * (-ELOOP) and checked before anything is opened for real: -ENOTTY if it is not a VFIO device
 * cdev (a regular file is never read, a FIFO never blocks, another device is never opened).
 */
int iod_vfio_open(const char *path, int *ret_fd);
/* Check that fd is a VFIO device cdev (character device of the vfio-dev class). */
int iod_vfio_check_fd(int fd);
/*
 * The cdev path (/dev/vfio/devices/vfioN) of a VFIO device cdev fd, found through
 * /sys/dev/char. -ENOTTY: not a VFIO device cdev; -ENOENT: no sysfs entry for it (no /sys
 * in this mount namespace); -EBADMSG: sysfs names it oddly.
 */
int iod_vfio_fd_cdev_path(int fd, char **ret_path);

/* VFIO_DEVICE_BIND_IOMMUFD: bind the device to iommufd; *ret_dev_id is the iommufd device id. */
int iod_vfio_bind(int device_fd, int iommufd, uint32_t *ret_dev_id);
/* VFIO_DEVICE_ATTACH_IOMMUFD_PT to an IOAS or HWPT; *ret_pt_id (may be NULL) gets the
 * HWPT the kernel attached to (an auto-domain when pt_id is an IOAS). */
int iod_vfio_attach(int device_fd, uint32_t pt_id, uint32_t *ret_pt_id);
/* VFIO_DEVICE_DETACH_IOMMUFD_PT */
int iod_vfio_detach(int device_fd);

/* What a device offers beyond the IOMMU. */
struct iod_vfio_features {
	bool dma_logging; /* VFIO_DEVICE_FEATURE_DMA_LOGGING_START probes OK */
	bool migration; /* VFIO_DEVICE_FEATURE_MIGRATION supported */
	uint64_t migration_flags; /* VFIO_MIGRATION_STOP_COPY | _P2P | _PRE_COPY */
};
/* Probe with VFIO_DEVICE_FEATURE_PROBE; ENOTTY from the kernel means "not supported". */
int iod_vfio_probe_features(int device_fd, struct iod_vfio_features *ret);

/*
 * Device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_*): a device that records its own DMA
 * writes, per IOVA page, over the ranges it was started with. Linux takes at most a page of
 * ranges (256 with 4 KiB pages: IOD_VFIO_LOG_MAX_RANGES) and a device may take fewer (E2BIG):
 * the caller merges its ranges to fit (iod_vfio_log_merge_ranges()).
 */
#define IOD_VFIO_LOG_MAX_RANGES 256
/*
 * Coalesce n sorted, disjoint ranges in place into at most max (>= 1) ranges that cover all
 * of them, joining across the smallest gaps first (so that the least unmapped IOVA is
 * logged). Returns the new count.
 */
size_t iod_vfio_log_merge_ranges(struct iod_range *ranges, size_t n, size_t max);
/*
 * DMA_LOGGING_START over n sorted, disjoint, page-aligned ranges (1 <= n <=
 * IOD_VFIO_LOG_MAX_RANGES) with *page_size, which the device may change (it says so by
 * writing it back). -E2BIG: more ranges than the device takes; -EINVAL also when it is started
 * already (Linux drivers refuse a second start).
 */
int iod_vfio_log_start(int device_fd, const struct iod_range *ranges, size_t n,
		       uint64_t *page_size);
/* DMA_LOGGING_STOP: the device forgets what it logged. */
int iod_vfio_log_stop(int device_fd);
/*
 * DMA_LOGGING_REPORT: read and clear the device's bits of [iova, iova + length), one per
 * page_size page, ORed into bitmap (bit i: iova + i * page_size; the kernel only sets bits).
 */
int iod_vfio_log_report(int device_fd, uint64_t iova, uint64_t length, uint64_t page_size,
			uint64_t *bitmap);

/*
 * Have VFIO signal eventfd when the kernel wants the device back (PCI removal, driver
 * unbind): the removal waits until every fd of the device is closed, asking again every
 * 10 seconds. eventfd < 0 disarms. -EOPNOTSUPP for a device without the request channel
 * (not PCI).
 */
int iod_vfio_set_req_eventfd(int device_fd, int eventfd);

#endif
