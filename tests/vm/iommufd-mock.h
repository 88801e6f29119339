/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The few commands of the kernel's iommufd selftest mock (CONFIG_IOMMUFD_TEST) that the
 * guest tests use, declared here by the project: the kernel's own declaration is not
 * uapi. One command ioctl on the iommufd, IOMMU_TEST_CMD, multiplexes operations; its
 * argument is a fixed-size, size-versioned struct whose layout must match the kernel's
 * byte for byte (checked by the static assertions below), since the kernel requires the
 * whole struct up to its trailing 'last' member.
 *
 * Facts of the Linux 6.12 mock that the tests rely on:
 *  - a mock device is created, bound and attached by one operation (MOCK_DOMAIN); it
 *    yields a selftest object id (destroying it unbinds the device), the id of the HWPT
 *    it is attached to, and its iommufd device id (for IOMMU_HWPT_ALLOC);
 *  - mock domains map in IOPTEs of half the CPU page size (2 KiB on x86) and, for
 *    devices created with IOD_MOCK_DEV_HUGE_IOVA, also in "huge" IOPTEs of 512 of them
 *    (1 MiB) where the memory is physically contiguous and aligned;
 *  - the aperture of a mock domain is [16 MiB, 2 GiB);
 *  - DIRTY marks the IOPTEs of a given bitmap dirty, as a device writing them would; its
 *    page_size must be the IOPTE size (the mock indexes its table by iova / page_size);
 *    it needs dirty tracking enabled and returns how many IOPTEs it marked;
 *  - a device created with IOD_MOCK_DEV_NO_DIRTY has an IOMMU without dirty tracking.
 */
#ifndef IOD_TESTS_IOMMUFD_MOCK_H
#define IOD_TESTS_IOMMUFD_MOCK_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/iommufd.h>

#define IOD_MOCK_CMD _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)

enum {
	IOD_MOCK_OP_DOMAIN = 2,
	IOD_MOCK_OP_DOMAIN_REPLACE = 10,
	IOD_MOCK_OP_DOMAIN_FLAGS = 12,
	IOD_MOCK_OP_DIRTY = 13,
};

enum {
	IOD_MOCK_DEV_NO_DIRTY = 1 << 0,
	IOD_MOCK_DEV_HUGE_IOVA = 1 << 1,
};

#define IOD_MOCK_APERTURE_START (UINT64_C(1) << 24)
#define IOD_MOCK_APERTURE_END (UINT64_C(1) << 31) /* exclusive */
#define IOD_MOCK_HUGE_IOPTE_PAGES 512

struct iod_mock_cmd {
	uint32_t size;
	uint32_t op;
	uint32_t id; /* in: IOAS or HWPT (DOMAIN*), selftest object (REPLACE), HWPT (DIRTY) */
	uint32_t __reserved;
	union {
		struct {
			uint32_t out_stdev_id;
			uint32_t out_hwpt_id;
			uint32_t out_idev_id;
			uint32_t dev_flags; /* DOMAIN_FLAGS only */
		} domain;
		struct {
			uint32_t pt_id; /* in: new HWPT or IOAS; out: the HWPT attached */
		} replace;
		struct {
			uint32_t flags;
			uint32_t __pad;
			uint64_t iova __attribute__((aligned(8)));
			uint64_t length __attribute__((aligned(8)));
			uint64_t page_size __attribute__((aligned(8)));
			uint64_t uptr __attribute__((aligned(8)));
			uint64_t out_nr_dirty __attribute__((aligned(8)));
		} dirty;
		/* the kernel's union is 48 bytes: its largest member is 'dirty' */
		uint64_t __union_size[6] __attribute__((aligned(8)));
	};
	uint32_t last;
};

_Static_assert(offsetof(struct iod_mock_cmd, dirty.iova) == 24, "mock cmd layout");
_Static_assert(offsetof(struct iod_mock_cmd, last) == 64, "mock cmd layout");
_Static_assert(sizeof(struct iod_mock_cmd) == 72, "mock cmd size");

/*
 * A mock device (of dev_flags, e.g. IOD_MOCK_DEV_NO_DIRTY) attached to pt_id on the iommufd
 * fd: its selftest device id, the HWPT it is on and its iommufd device id (each output may
 * be NULL). 0 or a negative errno.
 */
static inline int iod_mock_domain(int fd, uint32_t pt_id, uint32_t dev_flags, uint32_t *ret_stdev,
				  uint32_t *ret_hwpt, uint32_t *ret_idev)
{
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DOMAIN_FLAGS,
		.id = pt_id,
		.domain.dev_flags = dev_flags,
	};

	if (ioctl(fd, IOD_MOCK_CMD, &cmd) < 0)
		return -errno;
	if (ret_stdev)
		*ret_stdev = cmd.domain.out_stdev_id;
	if (ret_hwpt)
		*ret_hwpt = cmd.domain.out_hwpt_id;
	if (ret_idev)
		*ret_idev = cmd.domain.out_idev_id;
	return 0;
}

/* Move mock device stdev to pt_id (a HWPT or an IOAS). 0 or a negative errno. */
static inline int iod_mock_replace(int fd, uint32_t stdev, uint32_t pt_id)
{
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DOMAIN_REPLACE,
		.id = stdev,
		.replace.pt_id = pt_id,
	};

	return ioctl(fd, IOD_MOCK_CMD, &cmd) < 0 ? -errno : 0;
}

/*
 * Mark the IOPTEs set in marks (nbits of them, page_size bytes each from iova) dirty on
 * hwpt, as a device writing them would; ret_nr: how many the mock marked. 0 or a
 * negative errno.
 */
static inline int iod_mock_dirty(int fd, uint32_t hwpt, uint64_t iova, uint64_t nbits,
				 uint64_t page_size, const uint64_t *marks, uint64_t *ret_nr)
{
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DIRTY,
		.id = hwpt,
		.dirty = {.iova = iova,
			  .length = nbits * page_size,
			  .page_size = page_size,
			  .uptr = (uintptr_t)marks},
	};

	if (ioctl(fd, IOD_MOCK_CMD, &cmd) < 0)
		return -errno;
	*ret_nr = cmd.dirty.out_nr_dirty;
	return 0;
}

#endif
