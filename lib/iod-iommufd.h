/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iommufd: the context (/dev/iommu or an adopted fd), IOAS, HWPT and dirty tracking.
 *
 * Errors with a meaning of their own (iod_strerror() describes them):
 *   -ENODEV      /dev/iommu does not exist: the kernel has no iommufd (CONFIG_IOMMUFD).
 *   -ENOTTY      the kernel's iommufd lacks the ioctl (too old for dirty tracking), or an
 *                adopted fd is not an iommufd.
 *   -EOPNOTSUPP  the IOMMU behind the device cannot track dirty pages ("not dirty capable").
 * Everything else is the kernel's errno.
 *
 * Object ids are the kernel's; there is no ioctl to list them, so callers must remember
 * every id they allocate or adopt.
 */
#ifndef IOD_IOMMUFD_H
#define IOD_IOMMUFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iod-bitmap.h"

struct iod_iommufd;

/* Open /dev/iommu (path overridable for tests: NULL means /dev/iommu). */
int iod_iommufd_open(const char *path, struct iod_iommufd **ret);
/*
 * Use an iommufd that somebody else opened (passed over a socket, or restored from the fd
 * store). The fd is dup'ed (CLOEXEC); the caller keeps its own. -ENOTTY if it is not an
 * iommufd, -EBADF if it is not an fd.
 */
int iod_iommufd_adopt(int fd, struct iod_iommufd **ret);
struct iod_iommufd *iod_iommufd_free(struct iod_iommufd *ictx);
int iod_iommufd_fd(const struct iod_iommufd *ictx);

/* IOMMU_GET_HW_INFO for a bound device. */
struct iod_hw_info {
	uint32_t type; /* enum iommu_hw_info_type (NONE, INTEL_VTD, ARM_SMMUV3, ...) */
	uint64_t capabilities; /* IOMMU_HW_CAP_* */
	bool dirty_tracking; /* capabilities & IOMMU_HW_CAP_DIRTY_TRACKING */
};
int iod_iommufd_hw_info(struct iod_iommufd *ictx, uint32_t dev_id, struct iod_hw_info *ret);

/* Destroy any iommufd object (IOMMU_DESTROY). */
int iod_iommufd_destroy(struct iod_iommufd *ictx, uint32_t id);

/* IOAS */
int iod_ioas_alloc(struct iod_iommufd *ictx, uint32_t *ret_ioas_id);
/*
 * IOMMU_OPTION_HUGE_PAGES on an IOAS. Turn it off before anything is mapped to keep IOMMU
 * mappings (and so dirty tracking) at base page granularity.
 */
int iod_ioas_set_huge_pages(struct iod_iommufd *ictx, uint32_t ioas_id, bool enable);
int iod_ioas_get_huge_pages(struct iod_iommufd *ictx, uint32_t ioas_id, bool *ret_enabled);

#define IOD_MAP_READ (1u << 0)
#define IOD_MAP_WRITE (1u << 1)
/*
 * Map user memory [va, va + length) at exactly iova (IOMMU_IOAS_MAP with FIXED_IOVA).
 * -EINVAL for zero length, unknown flags or unaligned arguments; -EOVERFLOW for wrapping.
 */
int iod_ioas_map(struct iod_iommufd *ictx, uint32_t ioas_id, void *va, uint64_t length,
		 uint64_t iova, unsigned flags);
/* Unmap [iova, iova + length); *ret_unmapped (may be NULL) gets the bytes the kernel unmapped. */
int iod_ioas_unmap(struct iod_iommufd *ictx, uint32_t ioas_id, uint64_t iova, uint64_t length,
		   uint64_t *ret_unmapped);
/*
 * Is [iova, iova + length) of the IOAS wholly mapped, without a hole? 0 if so, -ENOENT if
 * not (IOMMU_IOAS_COPY of the range into a scratch IOAS, destroyed at once: nothing changes).
 */
int iod_ioas_check_mapped(struct iod_iommufd *ictx, uint32_t ioas_id, uint64_t iova,
			  uint64_t length);
/*
 * The usable IOVA ranges (inclusive 'last' turned into start/length) and the required IOVA
 * alignment. *ret_ranges is malloc'ed (free() it); written only on success.
 */
int iod_ioas_iova_ranges(struct iod_iommufd *ictx, uint32_t ioas_id, struct iod_range **ret_ranges,
			 size_t *ret_n, uint64_t *ret_alignment);

/* HWPT */
#define IOD_HWPT_DIRTY (1u << 0) /* allocate with IOMMU_HWPT_ALLOC_DIRTY_TRACKING */
/* IOMMU_HWPT_ALLOC_NEST_PARENT: the stage 2 (GPA -> host) of nested children. */
#define IOD_HWPT_NEST_PARENT (1u << 1)
/*
 * A paging HWPT of the IOAS pt_id for the IOMMU of device dev_id. -EOPNOTSUPP with
 * IOD_HWPT_DIRTY when the IOMMU cannot track dirty pages, or with IOD_HWPT_NEST_PARENT when
 * it cannot nest (or cannot track a nest parent: SMMUv3 in Linux 6.12).
 */
int iod_hwpt_alloc(struct iod_iommufd *ictx, uint32_t dev_id, uint32_t pt_id, unsigned flags,
		   uint32_t *ret_hwpt_id);
/*
 * A nested HWPT (stage 1) over the nest parent parent_id, for the IOMMU of dev_id: data
 * (data_len bytes, not empty) is the driver's stage 1 description of type data_type
 * (IOMMU_HWPT_DATA_VTD_S1, ...; IOMMU_HWPT_DATA_SELFTEST for the kernel's mock). -EINVAL when
 * parent_id is not a nest parent, -EOPNOTSUPP when the driver refuses the data type.
 */
int iod_hwpt_alloc_nested(struct iod_iommufd *ictx, uint32_t dev_id, uint32_t parent_id,
			  uint32_t data_type, const void *data, uint32_t data_len,
			  uint32_t *ret_hwpt_id);
/*
 * Is id a nested HWPT (a stage 1 over a nest parent)? IOMMU_HWPT_INVALIDATE with no entries,
 * which invalidates nothing: the kernel looks the object up as a nested HWPT (ENOENT for
 * anything else) and hands the empty array to its driver. 1 if so, 0 if not (or no such
 * object), else a negative errno. No ioctl says which parent a nested HWPT has.
 */
int iod_hwpt_is_nested(struct iod_iommufd *ictx, uint32_t id);
/*
 * Can the IOMMU of dev_id give the IOAS ioas_id a dirty tracking nest parent? Tries to
 * allocate one (IOD_HWPT_NEST_PARENT | IOD_HWPT_DIRTY) and destroys it at once. *ret is
 * false when the kernel says EOPNOTSUPP (the IOMMU cannot nest, cannot track, or cannot do
 * both at once); other errors are returned.
 */
int iod_hwpt_probe_nest_parent(struct iod_iommufd *ictx, uint32_t dev_id, uint32_t ioas_id,
			       bool *ret);

/*
 * A HWPT whose dirty tracking state the library remembers, so that enabling is idempotent:
 * IOMMU_HWPT_SET_DIRTY_TRACKING(ENABLE) clears every dirty bit in the kernel, even when
 * tracking is already on; iod_hwpt_set_tracking() therefore only issues the ioctl on a
 * change of state. A HWPT taken over after a restart is created with its known state.
 */
struct iod_hwpt {
	uint32_t id;
	bool dirty_capable; /* allocated with IOD_HWPT_DIRTY (or known to be) */
	bool tracking; /* dirty tracking is on in the kernel */
};
int iod_hwpt_set_tracking(struct iod_iommufd *ictx, struct iod_hwpt *hwpt, bool enable);

#define IOD_READ_NO_CLEAR (1u << 0) /* IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR */
#define IOD_READ_QUIET (1u << 1) /* a probe: do not debug-log a failure */
/*
 * Read (and unless IOD_READ_NO_CLEAR, clear) the dirty bits of [iova, iova + length) into
 * bitmap, one bit per page_size bytes (a power of two). The kernel only sets bits: the
 * caller zeroes the bitmap. iova and length must be page_size aligned (-EINVAL) and must
 * cover mapped IOVA only, so callers harvest exactly the areas they mapped: what the kernel
 * does with a range that starts in or crosses an unmapped hole depends on its version
 * (enum iod_hole_behavior). On a strict kernel a failed read may still have set (and, when
 * clearing, cleared) the bits of the part before the hole: they are in bitmap.
 */
int iod_hwpt_read_dirty(struct iod_iommufd *ictx, uint32_t hwpt_id, uint64_t iova, uint64_t length,
			uint64_t page_size, uint64_t *bitmap, unsigned flags);

/*
 * What IOMMU_HWPT_GET_DIRTY_BITMAP does with IOVA that nothing maps. Linux up to 6.12.117
 * ("silent") returns 0 and the bits of everything from the hole on are missing; the same
 * happens when tracking is off or the bitmap cannot be pinned. From 6.12.118 ("strict") the
 * walk's error comes back: a range that starts in or crosses a hole fails with EINVAL.
 * Both are in the field.
 */
enum iod_hole_behavior {
	IOD_HOLES_UNKNOWN, /* not probed yet, or no dirty capable HWPT to ask */
	IOD_HOLES_SILENT, /* returns 0, bits after the hole lost */
	IOD_HOLES_STRICT, /* fails with EINVAL */
};
/* "unknown", "silent" or "strict". */
const char *iod_hole_behavior_to_string(enum iod_hole_behavior b);
/*
 * Ask the kernel which behaviour it has: a read without clearing, quietly, of
 * [hole, hole + length) of a dirty capable HWPT, a range the caller knows nothing maps (see
 * iod_ioas_find_hole()). It reads no bit and clears nothing. -EOPNOTSUPP for a HWPT that
 * cannot track; any other error but the strict kernel's EINVAL is returned as it is.
 */
int iod_hwpt_probe_holes(struct iod_iommufd *ictx, uint32_t hwpt_id, uint64_t hole, uint64_t length,
			 enum iod_hole_behavior *ret);
/*
 * An IOVA range of the IOAS that nothing can map: outside every usable range the kernel
 * reports (the IOMMU's aperture and reserved regions), aligned to and as long as
 * *ret_length = max(the IOAS's IOVA alignment, the CPU page size). -ENOENT when the whole
 * IOVA space is usable.
 */
int iod_ioas_find_hole(struct iod_iommufd *ictx, uint32_t ioas_id, uint64_t *ret_iova,
		       uint64_t *ret_length);

#endif
