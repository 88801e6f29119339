/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VMM side of the guest tests that lend iodirtyd an iommufd of their own
 * (AdoptSession, tests/vm/test-daemon-*.c): an iommufd with one IOAS, MOCK_VMM_NDEV of the
 * kernel's iommufd mock devices on it (iommufd-mock.h) and anonymous guest memory. What a
 * test adds on top (a device without dirty tracking, nested HWPTs, its own mappings) it
 * does with lib/iommufd.h and iommufd-mock.h. Failures print and exit (daemon-test.h).
 */
#ifndef IOD_TESTS_VM_MOCK_VMM_H
#define IOD_TESTS_VM_MOCK_VMM_H

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon-test.h"
#include "iodirty.h"
#include "iommufd-mock.h"

#define MOCK_VMM_NDEV 2

struct mock_vmm {
	struct iod_iommufd *ictx;
	int fd; /* the iommufd */
	uint32_t ioas;
	uint32_t stdev[MOCK_VMM_NDEV], idev[MOCK_VMM_NDEV]; /* the mock devices */
	uint32_t hwpt[MOCK_VMM_NDEV]; /* each device's dirty tracking HWPT, if it has one */
	uint8_t *guest; /* guest memory */
	uint64_t mock_page; /* the size of a mock IOPTE: half the CPU page */
};

/*
 * Open /dev/iommu, allocate the IOAS with huge pages off (base page IOPTEs: a huge one
 * would make every page under it dirty) and create the mock devices on it, attached to
 * the IOAS. Exits 77 (skipped) where the kernel has no mock devices.
 */
static inline void mock_vmm_open(struct mock_vmm *vmm)
{
	int r;

	vmm->mock_page = (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	r = iod_iommufd_open(NULL, &vmm->ictx);
	dt_assert(r == 0, "open /dev/iommu: %s", iod_strerror(r));
	vmm->fd = iod_iommufd_fd(vmm->ictx);
	dt_assert(iod_ioas_alloc(vmm->ictx, &vmm->ioas) == 0, "IOAS alloc");
	dt_assert(iod_ioas_set_huge_pages(vmm->ictx, vmm->ioas, false) == 0, "huge pages off");
	for (int i = 0; i < MOCK_VMM_NDEV; i++) {
		r = iod_mock_domain(vmm->fd, vmm->ioas, 0, &vmm->stdev[i], NULL, &vmm->idev[i]);
		if (r == -ENOTTY || r == -EOPNOTSUPP || r == -EINVAL) {
			printf("SKIP: the kernel has no iommufd mock devices (CONFIG_IOMMUFD_TEST): %s\n",
			       strerror(-r));
			exit(77);
		}
		dt_assert(r == 0, "mock device: %s", strerror(-r));
	}
}

/* Move each mock device to a dirty tracking HWPT of its own (vmm->hwpt[]). */
static inline void mock_vmm_dirty_hwpts(struct mock_vmm *vmm)
{
	int r;

	for (int i = 0; i < MOCK_VMM_NDEV; i++) {
		r = iod_hwpt_alloc(vmm->ictx, vmm->idev[i], vmm->ioas, IOD_HWPT_DIRTY,
				   &vmm->hwpt[i]);
		dt_assert(r == 0, "dirty HWPT: %s", iod_strerror(r));
		r = iod_mock_replace(vmm->fd, vmm->stdev[i], vmm->hwpt[i]);
		dt_assert(r == 0, "attach the mock device to hwpt %u: %s", vmm->hwpt[i],
			  strerror(-r));
	}
}

/* size bytes of guest memory (vmm->guest), not mapped in the IOAS. */
static inline void mock_vmm_alloc_guest(struct mock_vmm *vmm, uint64_t size)
{
	vmm->guest = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dt_assert(vmm->guest != MAP_FAILED, "guest memory: %s", strerror(errno));
}

/* Map the first size bytes of guest memory in the IOAS at iova. */
static inline void mock_vmm_map_guest(struct mock_vmm *vmm, uint64_t size, uint64_t iova)
{
	int r = iod_ioas_map(vmm->ictx, vmm->ioas, vmm->guest, size, iova,
			     IOD_MAP_READ | IOD_MAP_WRITE);

	dt_assert(r == 0, "map guest memory: %s", iod_strerror(r));
}

/*
 * Mark the page of page_size bytes at iova dirty on hwpt, all its mock IOPTEs, as a device
 * writing it would: the mock must mark every one.
 */
static inline void mock_vmm_mark(const struct mock_vmm *vmm, uint32_t hwpt, uint64_t iova,
				 uint64_t page_size)
{
	const uint64_t nbits = page_size / vmm->mock_page;
	uint64_t marks = (UINT64_C(1) << nbits) - 1, nr = 0;
	int r;

	r = iod_mock_dirty(vmm->fd, hwpt, iova, nbits, vmm->mock_page, &marks, &nr);
	dt_assert(r == 0, "mock DIRTY on hwpt %u: %s", hwpt, strerror(-r));
	dt_assert(nr == nbits, "mock DIRTY marked %" PRIu64 " IOPTEs", nr);
}

#endif
