/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iommufd: the context, IOAS, HWPT and dirty tracking ioctls.
 *
 * Every function validates its arguments before it talks to the kernel, so that a
 * malformed request never reaches an ioctl; everything the kernel reports comes back as
 * its negative errno, logged at debug level only.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/iommufd.h>

#include "iod-iommufd.h"
#include "iod-util.h"

#define IOMMUFD_DEFAULT_PATH "/dev/iommu"

struct iod_iommufd {
	int fd;
};

/* Debug-log a failed kernel call and pass its (negative) error on. */
#define debug_fail(r, what, fmt, ...)                                                             \
	({                                                                                        \
		int _r = (r);                                                                     \
		iod_debug("iommufd: %s(" fmt ") failed: %s", what, ##__VA_ARGS__, strerror(-_r)); \
		_r;                                                                               \
	})

static long sys_page_size(void)
{
	static long cached;

	if (!cached) {
		long p = sysconf(_SC_PAGESIZE);
		cached = p > 0 ? p : 4096;
	}
	return cached;
}

static int iommufd_new(int fd, struct iod_iommufd **ret)
{
	struct iod_iommufd *ictx;

	ictx = calloc(1, sizeof(*ictx));
	if (!ictx)
		return -ENOMEM;
	ictx->fd = fd;
	*ret = ictx;
	return 0;
}

int iod_iommufd_open(const char *path, struct iod_iommufd **ret)
{
	_cleanup_close_ int fd = -EBADF;
	int r;

	if (!ret)
		return -EINVAL;
	if (!path)
		path = IOMMUFD_DEFAULT_PATH;

	fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = errno == ENOENT ? -ENODEV : -errno;
		return debug_fail(r, "open", "%s", path);
	}

	r = iommufd_new(fd, ret);
	if (r < 0)
		return r;
	TAKE_FD(fd);
	return 0;
}

/*
 * A harmless question only an iommufd answers: the context's RLIMIT accounting mode
 * (IOMMU_OPTION_RLIMIT_MODE, object 0). It allocates nothing and changes nothing.
 */
static int iommufd_verify(int fd)
{
	struct iommu_option cmd = {
		.size = sizeof(cmd),
		.option_id = IOMMU_OPTION_RLIMIT_MODE,
		.op = IOMMU_OPTION_OP_GET,
		.object_id = 0,
	};

	if (ioctl(fd, IOMMU_OPTION, &cmd) < 0) {
		if (errno == EBADF)
			return -EBADF;
		/* ENOTTY from anything else; EINVAL or EOPNOTSUPP from drivers that reuse
		 * the number for something of their own. None of them is an iommufd. */
		return -ENOTTY;
	}
	if (cmd.val64 > 1)
		return -ENOTTY;
	return 0;
}

int iod_iommufd_adopt(int fd, struct iod_iommufd **ret)
{
	_cleanup_close_ int copy = -EBADF;
	int r;

	if (!ret)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;

	copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (copy < 0)
		return debug_fail(-errno, "F_DUPFD_CLOEXEC", "%d", fd);

	r = iommufd_verify(copy);
	if (r < 0)
		return debug_fail(r, "adopt", "fd %d", fd);

	r = iommufd_new(copy, ret);
	if (r < 0)
		return r;
	TAKE_FD(copy);
	return 0;
}

struct iod_iommufd *iod_iommufd_free(struct iod_iommufd *ictx)
{
	if (!ictx)
		return NULL;
	iod_close(ictx->fd);
	free(ictx);
	return NULL;
}

int iod_iommufd_fd(const struct iod_iommufd *ictx)
{
	if (!ictx)
		return -EBADF;
	return ictx->fd;
}

int iod_iommufd_hw_info(struct iod_iommufd *ictx, uint32_t dev_id, struct iod_hw_info *ret)
{
	struct iommu_hw_info cmd = {
		.size = sizeof(cmd),
		.dev_id = dev_id,
	};

	if (!ictx || !ret)
		return -EINVAL;

	if (ioctl(ictx->fd, IOMMU_GET_HW_INFO, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_GET_HW_INFO", "dev %u", dev_id);

	*ret = (struct iod_hw_info){
		.type = cmd.out_data_type,
		.capabilities = cmd.out_capabilities,
		.dirty_tracking = cmd.out_capabilities & IOMMU_HW_CAP_DIRTY_TRACKING,
	};
	return 0;
}

int iod_iommufd_destroy(struct iod_iommufd *ictx, uint32_t id)
{
	struct iommu_destroy cmd = {
		.size = sizeof(cmd),
		.id = id,
	};

	if (!ictx)
		return -EINVAL;

	if (ioctl(ictx->fd, IOMMU_DESTROY, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_DESTROY", "%u", id);
	return 0;
}

int iod_ioas_alloc(struct iod_iommufd *ictx, uint32_t *ret_ioas_id)
{
	struct iommu_ioas_alloc cmd = {
		.size = sizeof(cmd),
	};

	if (!ictx || !ret_ioas_id)
		return -EINVAL;

	if (ioctl(ictx->fd, IOMMU_IOAS_ALLOC, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_IOAS_ALLOC", "");

	*ret_ioas_id = cmd.out_ioas_id;
	return 0;
}

static int ioas_huge_pages(struct iod_iommufd *ictx, uint32_t ioas_id, uint16_t op, uint64_t *val)
{
	struct iommu_option cmd = {
		.size = sizeof(cmd),
		.option_id = IOMMU_OPTION_HUGE_PAGES,
		.op = op,
		.object_id = ioas_id,
		.val64 = *val,
	};

	if (ioctl(ictx->fd, IOMMU_OPTION, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_OPTION", "HUGE_PAGES, %s, ioas %u",
				  op == IOMMU_OPTION_OP_SET ? "set" : "get", ioas_id);
	*val = cmd.val64;
	return 0;
}

int iod_ioas_set_huge_pages(struct iod_iommufd *ictx, uint32_t ioas_id, bool enable)
{
	uint64_t val = enable;

	if (!ictx)
		return -EINVAL;

	return ioas_huge_pages(ictx, ioas_id, IOMMU_OPTION_OP_SET, &val);
}

int iod_ioas_get_huge_pages(struct iod_iommufd *ictx, uint32_t ioas_id, bool *ret_enabled)
{
	uint64_t val = 0;
	int r;

	if (!ictx || !ret_enabled)
		return -EINVAL;

	r = ioas_huge_pages(ictx, ioas_id, IOMMU_OPTION_OP_GET, &val);
	if (r < 0)
		return r;
	*ret_enabled = val != 0;
	return 0;
}

int iod_ioas_map(struct iod_iommufd *ictx, uint32_t ioas_id, void *va, uint64_t length,
		 uint64_t iova, unsigned flags)
{
	struct iommu_ioas_map cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA,
		.ioas_id = ioas_id,
		.user_va = (uintptr_t)va,
		.length = length,
		.iova = iova,
	};
	uint64_t end;

	if (!ictx || !va || length == 0)
		return -EINVAL;
	if (flags == 0 || (flags & ~(IOD_MAP_READ | IOD_MAP_WRITE)))
		return -EINVAL;
	if (!iod_is_aligned((uintptr_t)va, sys_page_size()) ||
	    !iod_is_aligned(iova, sys_page_size()) || !iod_is_aligned(length, sys_page_size()))
		return -EINVAL;
	if (iod_add_overflow(iova, length - 1, &end) ||
	    iod_add_overflow((uintptr_t)va, length - 1, &end))
		return -EOVERFLOW;

	if (flags & IOD_MAP_READ)
		cmd.flags |= IOMMU_IOAS_MAP_READABLE;
	if (flags & IOD_MAP_WRITE)
		cmd.flags |= IOMMU_IOAS_MAP_WRITEABLE;

	if (ioctl(ictx->fd, IOMMU_IOAS_MAP, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_IOAS_MAP",
				  "ioas %u, iova 0x%" PRIx64 ", length 0x%" PRIx64, ioas_id, iova,
				  length);
	return 0;
}

int iod_ioas_unmap(struct iod_iommufd *ictx, uint32_t ioas_id, uint64_t iova, uint64_t length,
		   uint64_t *ret_unmapped)
{
	struct iommu_ioas_unmap cmd = {
		.size = sizeof(cmd),
		.ioas_id = ioas_id,
		.iova = iova,
		.length = length,
	};
	uint64_t end;

	if (!ictx || length == 0)
		return -EINVAL;
	if (iod_add_overflow(iova, length - 1, &end))
		return -EOVERFLOW;

	if (ioctl(ictx->fd, IOMMU_IOAS_UNMAP, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_IOAS_UNMAP",
				  "ioas %u, iova 0x%" PRIx64 ", length 0x%" PRIx64, ioas_id, iova,
				  length);
	if (ret_unmapped)
		*ret_unmapped = cmd.length;
	return 0;
}

int iod_ioas_check_mapped(struct iod_iommufd *ictx, uint32_t ioas_id, uint64_t iova,
			  uint64_t length)
{
	struct iommu_ioas_copy cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_READABLE,
		.src_ioas_id = ioas_id,
		.length = length,
		.src_iova = iova,
	};
	uint32_t scratch;
	uint64_t last;
	int r;

	if (!ictx || length == 0)
		return -EINVAL;
	if (iod_add_overflow(iova, length - 1, &last))
		return -EOVERFLOW;

	/* The kernel copies only a range its areas cover without a gap (ENOENT otherwise),
	 * into an IOAS of its own, which pins nothing new (it has no domain) and goes again. */
	r = iod_ioas_alloc(ictx, &scratch);
	if (r < 0)
		return r;
	cmd.dst_ioas_id = scratch;
	r = ioctl(ictx->fd, IOMMU_IOAS_COPY, &cmd) < 0 ? -errno : 0;
	if (r < 0 && r != -ENOENT)
		(void)debug_fail(r, "IOMMU_IOAS_COPY",
				 "ioas %u, iova 0x%" PRIx64 ", length 0x%" PRIx64, ioas_id, iova,
				 length);
	(void)iod_iommufd_destroy(ictx, scratch);
	return r;
}

int iod_ioas_iova_ranges(struct iod_iommufd *ictx, uint32_t ioas_id, struct iod_range **ret_ranges,
			 size_t *ret_n, uint64_t *ret_alignment)
{
	_cleanup_free_ struct iommu_iova_range *kranges = NULL;
	struct iommu_ioas_iova_ranges cmd;
	struct iod_range *ranges;
	uint32_t n = 0;

	if (!ictx || !ret_ranges || !ret_n)
		return -EINVAL;

	/*
	 * The kernel fills at most num_iovas entries and answers EMSGSIZE with the real count
	 * when the array is too small. The count can grow between two calls (a device attached
	 * meanwhile adds reserved regions), so ask until it fits.
	 */
	for (;;) {
		cmd = (struct iommu_ioas_iova_ranges){
			.size = sizeof(cmd),
			.ioas_id = ioas_id,
			.num_iovas = n,
			.allowed_iovas = (uintptr_t)kranges,
		};
		if (ioctl(ictx->fd, IOMMU_IOAS_IOVA_RANGES, &cmd) == 0)
			break;
		if (errno != EMSGSIZE || cmd.num_iovas <= n)
			return debug_fail(-errno, "IOMMU_IOAS_IOVA_RANGES", "ioas %u", ioas_id);

		n = cmd.num_iovas;
		free(kranges);
		kranges = calloc(n, sizeof(*kranges));
		if (!kranges)
			return -ENOMEM;
	}

	n = cmd.num_iovas;
	ranges = calloc(n ?: 1, sizeof(*ranges));
	if (!ranges)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		ranges[i].start = kranges[i].start;
		/* 'last' is inclusive; the whole 64-bit space [0, 2^64 - 1] has no 64-bit
		 * length, so it comes back one byte short. */
		ranges[i].length = kranges[i].last - kranges[i].start + 1;
		if (ranges[i].length == 0)
			ranges[i].length = UINT64_MAX;
	}

	*ret_ranges = ranges;
	*ret_n = n;
	if (ret_alignment)
		*ret_alignment = cmd.out_iova_alignment;
	return 0;
}

int iod_hwpt_alloc(struct iod_iommufd *ictx, uint32_t dev_id, uint32_t pt_id, unsigned flags,
		   uint32_t *ret_hwpt_id)
{
	struct iommu_hwpt_alloc cmd = {
		.size = sizeof(cmd),
		.dev_id = dev_id,
		.pt_id = pt_id,
		.data_type = IOMMU_HWPT_DATA_NONE,
	};

	if (!ictx || !ret_hwpt_id)
		return -EINVAL;
	if (flags & ~(IOD_HWPT_DIRTY | IOD_HWPT_NEST_PARENT))
		return -EINVAL;

	if (flags & IOD_HWPT_DIRTY)
		cmd.flags |= IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
	if (flags & IOD_HWPT_NEST_PARENT)
		cmd.flags |= IOMMU_HWPT_ALLOC_NEST_PARENT;

	if (ioctl(ictx->fd, IOMMU_HWPT_ALLOC, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_HWPT_ALLOC", "dev %u, pt %u%s%s", dev_id, pt_id,
				  flags & IOD_HWPT_DIRTY ? ", dirty tracking" : "",
				  flags & IOD_HWPT_NEST_PARENT ? ", nest parent" : "");

	*ret_hwpt_id = cmd.out_hwpt_id;
	return 0;
}

int iod_hwpt_alloc_nested(struct iod_iommufd *ictx, uint32_t dev_id, uint32_t parent_id,
			  uint32_t data_type, const void *data, uint32_t data_len,
			  uint32_t *ret_hwpt_id)
{
	struct iommu_hwpt_alloc cmd = {
		.size = sizeof(cmd),
		.dev_id = dev_id,
		.pt_id = parent_id,
		.data_type = data_type,
		.data_len = data_len,
		.data_uptr = (uintptr_t)data,
	};

	if (!ictx || !ret_hwpt_id || !data || data_len == 0)
		return -EINVAL;
	/* NONE describes no stage 1: the kernel would take it for a paging HWPT request. */
	if (data_type == IOMMU_HWPT_DATA_NONE)
		return -EINVAL;

	if (ioctl(ictx->fd, IOMMU_HWPT_ALLOC, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_HWPT_ALLOC",
				  "dev %u, nest parent %u, data type %u", dev_id, parent_id,
				  data_type);

	*ret_hwpt_id = cmd.out_hwpt_id;
	return 0;
}

int iod_hwpt_is_nested(struct iod_iommufd *ictx, uint32_t id)
{
	struct iommu_hwpt_invalidate cmd = {
		.size = sizeof(cmd),
		.hwpt_id = id,
		.entry_num = 0,
	};

	if (!ictx)
		return -EINVAL;
	if (ioctl(ictx->fd, IOMMU_HWPT_INVALIDATE, &cmd) == 0)
		return 1;
	/* The driver sees an empty array of a type it may not know: EINVAL says "nested" as
	 * well as success does. Only the lookup answers ENOENT. */
	if (errno == ENOENT)
		return 0;
	if (errno == EINVAL || errno == EOPNOTSUPP)
		return 1;
	return debug_fail(-errno, "IOMMU_HWPT_INVALIDATE", "hwpt %u, no entries", id);
}

int iod_hwpt_probe_nest_parent(struct iod_iommufd *ictx, uint32_t dev_id, uint32_t ioas_id,
			       bool *ret)
{
	uint32_t id;
	int r;

	if (!ictx || !ret)
		return -EINVAL;
	r = iod_hwpt_alloc(ictx, dev_id, ioas_id, IOD_HWPT_NEST_PARENT | IOD_HWPT_DIRTY, &id);
	if (r == -EOPNOTSUPP) {
		*ret = false;
		return 0;
	}
	if (r < 0)
		return r;
	(void)iod_iommufd_destroy(ictx, id);
	*ret = true;
	return 0;
}

int iod_hwpt_set_tracking(struct iod_iommufd *ictx, struct iod_hwpt *hwpt, bool enable)
{
	struct iommu_hwpt_set_dirty_tracking cmd = {
		.size = sizeof(cmd),
	};

	if (!ictx || !hwpt)
		return -EINVAL;

	/* ENABLE wipes every dirty bit, even when tracking is on already: only on change. */
	if (hwpt->tracking == enable)
		return 0;

	cmd.hwpt_id = hwpt->id;
	cmd.flags = enable ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0;
	if (ioctl(ictx->fd, IOMMU_HWPT_SET_DIRTY_TRACKING, &cmd) < 0)
		return debug_fail(-errno, "IOMMU_HWPT_SET_DIRTY_TRACKING", "hwpt %u, %s", hwpt->id,
				  enable ? "enable" : "disable");

	hwpt->tracking = enable;
	return 0;
}

int iod_hwpt_read_dirty(struct iod_iommufd *ictx, uint32_t hwpt_id, uint64_t iova, uint64_t length,
			uint64_t page_size, uint64_t *bitmap, unsigned flags)
{
	struct iommu_hwpt_get_dirty_bitmap cmd = {
		.size = sizeof(cmd),
		.hwpt_id = hwpt_id,
		.iova = iova,
		.length = length,
		.page_size = page_size,
		.data = (uintptr_t)bitmap,
	};
	uint64_t last;

	if (!ictx || !bitmap)
		return -EINVAL;
	if (flags & ~(IOD_READ_NO_CLEAR | IOD_READ_QUIET))
		return -EINVAL;
	if (!iod_is_pow2(page_size) || length == 0)
		return -EINVAL;
	if (!iod_is_aligned(iova, page_size) || !iod_is_aligned(length, page_size))
		return -EINVAL;
	if (iod_add_overflow(iova, length - 1, &last))
		return -EOVERFLOW;

	if (flags & IOD_READ_NO_CLEAR)
		cmd.flags |= IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR;

	if (ioctl(ictx->fd, IOMMU_HWPT_GET_DIRTY_BITMAP, &cmd) < 0) {
		if (flags & IOD_READ_QUIET)
			return -errno;
		return debug_fail(-errno, "IOMMU_HWPT_GET_DIRTY_BITMAP",
				  "hwpt %u, iova 0x%" PRIx64 ", length 0x%" PRIx64
				  ", page size 0x%" PRIx64,
				  hwpt_id, iova, length, page_size);
	}
	return 0;
}

const char *iod_hole_behavior_to_string(enum iod_hole_behavior b)
{
	switch (b) {
	case IOD_HOLES_SILENT:
		return "silent";
	case IOD_HOLES_STRICT:
		return "strict";
	default:
		return "unknown";
	}
}

int iod_hwpt_probe_holes(struct iod_iommufd *ictx, uint32_t hwpt_id, uint64_t hole, uint64_t length,
			 enum iod_hole_behavior *ret)
{
	uint64_t word = 0;
	int r;

	if (!ictx || !ret)
		return -EINVAL;
	/* One bit: the page size is the whole range. */
	r = iod_hwpt_read_dirty(ictx, hwpt_id, hole, length, length, &word,
				IOD_READ_NO_CLEAR | IOD_READ_QUIET);
	if (r == 0)
		*ret = IOD_HOLES_SILENT;
	else if (r == -EINVAL)
		*ret = IOD_HOLES_STRICT;
	else
		return r;
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const struct iod_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

int iod_ioas_find_hole(struct iod_iommufd *ictx, uint32_t ioas_id, uint64_t *ret_iova,
		       uint64_t *ret_length)
{
	_cleanup_free_ struct iod_range *ranges = NULL;
	uint64_t align = 0, size, at = 0;
	size_t n = 0;
	int r;

	if (!ictx || !ret_iova || !ret_length)
		return -EINVAL;
	r = iod_ioas_iova_ranges(ictx, ioas_id, &ranges, &n, &align);
	if (r < 0)
		return r;
	size = (uint64_t)sys_page_size();
	if (align > size && iod_is_pow2(align))
		size = align;
	qsort(ranges, n, sizeof(*ranges), range_cmp);

	/* Walk the gaps between usable ranges, lowest first. */
	for (size_t i = 0; i <= n; i++) {
		uint64_t last;

		if (!iod_add_overflow(at, size - 1, &last) && (i == n || last < ranges[i].start)) {
			*ret_iova = at;
			*ret_length = size;
			return 0;
		}
		if (i == n)
			break;
		/* past this range, aligned up */
		if (iod_add_overflow(ranges[i].start, ranges[i].length, &last) ||
		    iod_add_overflow(last, size - 1, &last))
			return -ENOENT; /* usable up to the top */
		if ((last & ~(size - 1)) > at)
			at = last & ~(size - 1);
	}
	return -ENOENT;
}
