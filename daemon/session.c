/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#include <linux/magic.h>

#include "journal.h"
#include "logging.h"
#include "manager.h"
#include "session.h"

/* A HWPT bitmap is read in chunks of this many pages (32 KiB of bitmap). */
#define HARVEST_CHUNK_BITS (UINT64_C(1) << 18)

const char *iod_session_mode_to_string(enum iod_session_mode mode)
{
	return mode == IOD_MODE_ADOPT ? "adopt" : "owner";
}

static int fdname_new(char **ret, const struct iod_session *s, const char *format, ...)
	_printf_(3, 4);
static int fdname_new(char **ret, const struct iod_session *s, const char *format, ...)
{
	char suffix[64];
	va_list ap;

	va_start(ap, format);
	vsnprintf(suffix, sizeof(suffix), format, ap);
	va_end(ap);
	if (asprintf(ret, "%s/%s", s->name, suffix) < 0)
		return -ENOMEM;
	return 0;
}

int iod_session_new(struct iod_manager *m, const char *name, enum iod_session_mode mode, uid_t uid,
		    const struct iod_session_options *options, struct iod_session **ret)
{
	_cleanup_(iod_session_freep) struct iod_session *s = NULL;
	int r;

	if (!iod_session_name_valid(name) || !iod_page_size_valid(options->page_size))
		return -EINVAL;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->manager = m;
	s->mode = mode;
	s->uid = uid;
	s->options = *options;
	s->ioas_owned = mode == IOD_MODE_OWNER;

	s->name = strdup(name);
	if (!s->name)
		return -ENOMEM;
	r = sd_bus_path_encode(IOD_SESSION_PREFIX, name, &s->path);
	if (r < 0)
		return r;

	r = iod_iova_map_new(&s->map);
	if (r < 0)
		return r;
	r = iod_log_new((unsigned)__builtin_ctzll(options->page_size), &s->log);
	if (r < 0)
		return r;
	r = fdname_new(&s->log_fdname, s, "log");
	if (r < 0)
		return r;
	r = fdname_new(&s->journal_fdname, s, "journal");
	if (r < 0)
		return r;
	/* Named from the start: an owner session opens it only when first needed. */
	r = fdname_new(&s->iommufd_fdname, s, "iommufd");
	if (r < 0)
		return r;

	*ret = TAKE_PTR(s);
	return 0;
}

static void region_release(struct iod_region *g)
{
	if (g->va && g->va != MAP_FAILED)
		munmap(g->va, g->length);
	g->va = NULL;
	g->fd = iod_close(g->fd);
	free(g->fdname);
	g->fdname = NULL;
}

static struct iod_session_hwpt *hwpt_find(struct iod_session *s, uint32_t id)
{
	for (size_t i = 0; i < s->n_hwpts; i++)
		if (s->hwpts[i].hw.id == id)
			return &s->hwpts[i];
	return NULL;
}

static void hwpt_remove(struct iod_session *s, struct iod_session_hwpt *h)
{
	size_t i = (size_t)(h - s->hwpts);

	memmove(&s->hwpts[i], &s->hwpts[i + 1], (s->n_hwpts - i - 1) * sizeof(*h));
	s->n_hwpts--;
}

struct iod_session *iod_session_free(struct iod_session *s)
{
	if (!s)
		return NULL;

	/* Reverse order of setup: devices, HWPTs, mappings, IOAS, memory, context. */
	for (size_t i = s->n_devices; i > 0; i--) {
		struct iod_device *d = s->devices[i - 1];

		if (d->hwpt_id && s->ictx && !s->keep_kernel) {
			int r = iod_vfio_detach(d->fd);
			if (r < 0)
				log_debug_errno(r, "Failed to detach device %s, ignoring: %m",
						d->name);
		}
		iod_device_free(d);
	}
	free(s->devices);

	for (size_t i = s->n_hwpts; i > 0; i--) {
		struct iod_session_hwpt *h = &s->hwpts[i - 1];
		int r;

		if (!s->ictx || s->keep_kernel)
			break;
		if (h->owned) {
			r = iod_iommufd_destroy(s->ictx, h->hw.id);
			if (r < 0)
				log_debug_errno(r, "Failed to destroy hwpt %u, ignoring: %m",
						h->hw.id);
		} else if (h->hw.tracking) {
			/* The client's HWPT: turn off what we turned on, leave the rest. */
			r = iod_hwpt_set_tracking(s->ictx, &h->hw, false);
			if (r < 0)
				log_debug_errno(r,
						"Failed to stop tracking on hwpt %u, ignoring: %m",
						h->hw.id);
		}
	}
	free(s->hwpts);

	if (s->ictx && s->ioas_owned && s->ioas_id && !s->keep_kernel) {
		for (size_t i = s->n_regions; i > 0; i--) {
			struct iod_region *g = &s->regions[i - 1];

			if (g->mapped)
				(void)iod_ioas_unmap(s->ictx, s->ioas_id, g->gpa, g->length, NULL);
		}
		(void)iod_iommufd_destroy(s->ictx, s->ioas_id);
	}
	for (size_t i = s->n_regions; i > 0; i--)
		region_release(&s->regions[i - 1]);
	free(s->regions);

	iod_iommufd_free(s->ictx);
	iod_iova_map_free(s->map);
	iod_log_free(s->log);
	iod_journal_free(s->journal);
	free(s->journal_fdname);
	free(s->iommufd_fdname);
	free(s->log_fdname);
	free(s->failure);
	free(s->owner);
	free(s->path);
	free(s->name);
	free(s);
	return NULL;
}

void iod_session_owner_left(struct iod_session *s)
{
	struct iod_manager *m = s->manager;

	log_info("Owner %s of session %s left the bus.", s->owner ? s->owner : "(none)", s->name);
	free(s->owner);
	s->owner = NULL;

	if (s->options.disconnect_policy == IOD_DISCONNECT_DESTROY) {
		log_info("Destroying session %s (disconnect policy \"destroy\").", s->name);
		iod_manager_destroy_session(m, s);
		return;
	}

	log_info("Keeping session %s for uid %u (disconnect policy \"keep\").", s->name,
		 (unsigned)s->uid);
	(void)iod_session_send_changed(s, "Owner", "State", NULL);
}

int iod_session_set_owner(struct iod_session *s, const char *owner)
{
	char *copy = NULL;

	if (owner) {
		copy = strdup(owner);
		if (!copy)
			return -ENOMEM;
	}
	free(s->owner);
	s->owner = copy;
	return 0;
}

/* --- kernel context --------------------------------------------------------------------- */

static int session_ensure_kernel(struct iod_session *s, struct iod_reason *why)
{
	const char *path = s->manager->config.iommufd_path;
	struct iod_iommufd *ictx = NULL;
	uint32_t ioas = 0;
	int r;

	if (s->ictx)
		return 0;
	if (s->mode != IOD_MODE_OWNER)
		return iod_reasonf(why, -EINVAL, IOD_ERROR_WRONG_MODE, "Session %s has no iommufd",
				   s->name);

	r = iod_iommufd_open(path, &ictx);
	if (r == -ENODEV || r == -ENOENT)
		return iod_reasonf(
			why, -ENODEV, IOD_ERROR_NO_IOMMUFD,
			"%s does not exist: this kernel has no iommufd (CONFIG_IOMMUFD), so session %s cannot map memory or attach devices",
			path ? path : "/dev/iommu", s->name);
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to open %s", path ? path : "/dev/iommu");

	r = iod_ioas_alloc(ictx, &ioas);
	if (r < 0) {
		r = iod_reason_kernel(why, r, "Failed to allocate an IOAS");
		goto fail;
	}

	if (!s->options.huge_pages) {
		/* Before anything is mapped: dirty bits at base page granularity. */
		r = iod_ioas_set_huge_pages(ictx, ioas, false);
		if (r < 0) {
			r = iod_reason_kernel(
				why, r, "Failed to turn off huge IOMMU pages on ioas %u", ioas);
			goto fail;
		}
	}

	s->ioas_id = ioas;
	s->ictx = ictx;
	log_debug("Session %s: iommufd %d, ioas %u.", s->name, iod_iommufd_fd(s->ictx), ioas);
	return 0;

fail:
	/* Closing the context destroys the IOAS with it. */
	iod_iommufd_free(ictx);
	return r;
}

/*
 * Is id a HWPT of ictx, and can it report dirty bits? There is no ioctl that names an
 * object's type, so ask for the dirty bits of one page without clearing them: -ENOENT for
 * anything but a paging HWPT, -EOPNOTSUPP for a domain without dirty tracking. What comes
 * back otherwise (bits, or EINVAL from a driver whose tracking is still off) says "capable".
 */
static int hwpt_probe(struct iod_iommufd *ictx, uint32_t id, uint64_t page_size, bool *ret_capable)
{
	uint64_t word = 0;
	int r;

	r = iod_hwpt_read_dirty(ictx, id, 0, page_size, page_size, &word,
				IOD_READ_NO_CLEAR | IOD_READ_QUIET);
	if (r == -ENOENT)
		return r;
	*ret_capable = r != -EOPNOTSUPP;
	return 0;
}

void iod_session_probe_holes(struct iod_session *s)
{
	struct iod_manager *m = s->manager;
	enum iod_hole_behavior b;
	uint64_t hole, length;
	int r;

	if (m->holes != IOD_HOLES_UNKNOWN || !s->ictx || !s->ioas_id)
		return;
	for (size_t i = 0; i < s->n_hwpts; i++) {
		const struct iod_session_hwpt *h = &s->hwpts[i];

		if (!h->hw.dirty_capable)
			continue;
		r = iod_ioas_find_hole(s->ictx, s->ioas_id, &hole, &length);
		if (r < 0) {
			log_debug_errno(r, "Session %s: no unmappable IOVA in ioas %u to probe: %m",
					s->name, s->ioas_id);
			return;
		}
		r = iod_hwpt_probe_holes(s->ictx, h->hw.id, hole, length, &b);
		if (r == -EOPNOTSUPP)
			continue;
		if (r < 0) {
			log_debug_errno(r,
					"Session %s: probing hwpt %u at 0x%" PRIx64 " failed: %m",
					s->name, h->hw.id, hole);
			return;
		}
		m->holes = b;
		if (m->bus)
			(void)sd_bus_emit_properties_changed(m->bus, IOD_MANAGER_PATH,
							     IOD_MANAGER_INTERFACE,
							     "KernelHoleBehavior", NULL);
		log_info(
			"Kernel: a dirty bitmap read over unmapped IOVA %s (\"%s\").",
			b == IOD_HOLES_STRICT
				? "fails with EINVAL: a harvest that finds a mapped area gone fails "
				  "its session"
				: "succeeds with the bits from the hole on missing: harvests cover "
				  "exactly the mapped areas, and an area unmapped behind the daemon's "
				  "back goes unnoticed",
			iod_hole_behavior_to_string(b));
		return;
	}
}

int iod_session_adopt(struct iod_session *s, int iommufd, uint32_t ioas_id,
		      const uint32_t *hwpt_ids, size_t n_hwpts, struct iod_reason *why)
{
	_cleanup_free_ struct iod_session_hwpt *hwpts = NULL;
	struct iod_iommufd *ictx = NULL;
	bool huge = false;
	int r;

	if (s->mode != IOD_MODE_ADOPT || s->ictx)
		return -EINVAL;

	r = iod_iommufd_adopt(iommufd, &ictx);
	if (r == -ENOTTY || r == -EBADF)
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "The passed fd is not an iommufd (/dev/iommu)");
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to adopt the passed iommufd");

	/* The IOAS must be one: its huge page option answers only for an IOAS. */
	r = iod_ioas_get_huge_pages(ictx, ioas_id, &huge);
	if (r == -ENOENT || r == -EINVAL) {
		iod_iommufd_free(ictx);
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "Object %u of the passed iommufd is not an IOAS", ioas_id);
	}
	if (r < 0) {
		iod_iommufd_free(ictx);
		return iod_reason_kernel(why, r, "Failed to look at ioas %u", ioas_id);
	}
	if (huge)
		log_info("Session %s: ioas %u maps with huge IOMMU pages: a dirty huge page "
			 "makes every page under it dirty, so results are not precise "
			 "(IOMMU_OPTION_HUGE_PAGES=0 before mapping keeps bits precise).",
			 s->name, ioas_id);
	/* The client's IOAS decides: HugePages and Precise say what it does. */
	s->options.huge_pages = huge;

	hwpts = calloc(n_hwpts + 1, sizeof(*hwpts));
	if (!hwpts) {
		iod_iommufd_free(ictx);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n_hwpts; i++) {
		bool capable;

		r = hwpt_probe(ictx, hwpt_ids[i], s->options.page_size, &capable);
		if (r < 0) {
			iod_iommufd_free(ictx);
			if (r == -ENOENT)
				return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
						   "Object %u of the passed iommufd is not a HWPT",
						   hwpt_ids[i]);
			return iod_reason_kernel(why, r, "Failed to look at hwpt %u", hwpt_ids[i]);
		}
		if (!capable)
			log_info("Session %s: hwpt %u cannot track dirty pages: its mappings count "
				 "as always dirty (fallback).",
				 s->name, hwpt_ids[i]);
		hwpts[i] = (struct iod_session_hwpt){
			.hw = {.id = hwpt_ids[i], .dirty_capable = capable, .tracking = false},
			.owned = false,
		};
	}

	s->ictx = ictx;
	s->ioas_id = ioas_id;
	s->hwpts = TAKE_PTR(hwpts);
	s->n_hwpts = n_hwpts;
	iod_session_probe_holes(s);
	return 0;
}

/* --- guest memory ----------------------------------------------------------------------- */

uint64_t iod_session_alignment(const struct iod_session *s)
{
	long sys = sysconf(_SC_PAGESIZE);

	return MAX(s->options.page_size, sys > 0 ? (uint64_t)sys : 4096);
}

int iod_session_check_range(const struct iod_session *s, const char *what, uint64_t addr,
			    uint64_t size, struct iod_reason *why)
{
	uint64_t align = iod_session_alignment(s), end;

	if (size == 0)
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS, "size must not be 0");
	if (!iod_is_aligned(addr, align) || !iod_is_aligned(size, align))
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "%s 0x%" PRIx64 " and size 0x%" PRIx64
				   " must be aligned to the page size 0x%" PRIx64,
				   what, addr, size, align);
	if (iod_add_overflow(addr, size, &end))
		return iod_reasonf(why, -EOVERFLOW, IOD_ERROR_INVALID_RANGE,
				   "%s 0x%" PRIx64 " + size 0x%" PRIx64 " overflows", what, addr,
				   size);
	return 0;
}

static struct iod_region *region_containing(struct iod_session *s, uint64_t gpa, uint64_t length)
{
	for (size_t i = 0; i < s->n_regions; i++) {
		struct iod_region *g = &s->regions[i];

		if (gpa >= g->gpa && gpa - g->gpa <= g->length &&
		    length <= g->length - (gpa - g->gpa))
			return g;
	}
	return NULL;
}

/* Arguments of a new region, before anything changes. */
static int check_region(struct iod_session *s, uint64_t gpa, uint64_t size, uint64_t *ret_bytes,
			struct iod_reason *why)
{
	uint64_t align = iod_session_alignment(s), end, bytes, nbits;

	if (size == 0)
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS, "size must not be 0");
	if (!iod_is_aligned(gpa, align) || !iod_is_aligned(size, align))
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "gpa 0x%" PRIx64 " and size 0x%" PRIx64
				   " must be aligned to the page size 0x%" PRIx64,
				   gpa, size, align);
	if (iod_add_overflow(gpa, size, &end))
		return iod_reasonf(why, -EOVERFLOW, IOD_ERROR_INVALID_RANGE,
				   "gpa 0x%" PRIx64 " + size 0x%" PRIx64 " overflows", gpa, size);
	for (size_t i = 0; i < s->n_regions; i++) {
		const struct iod_region *g = &s->regions[i];

		if (gpa < g->gpa + g->length && g->gpa < end)
			return iod_reasonf(why, -EEXIST, IOD_ERROR_INVALID_RANGE,
					   "[0x%" PRIx64 ", 0x%" PRIx64
					   ") overlaps guest memory [0x%" PRIx64 ", 0x%" PRIx64 ")",
					   gpa, end, g->gpa, g->gpa + g->length);
	}
	if (s->n_regions >= s->manager->config.limits.regions ||
	    s->n_regions >= IOD_LOG_MAX_REGIONS)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "Session %s already has %zu memory regions (limit \"regions\")",
				   s->name, s->n_regions);
	nbits = size / s->options.page_size;
	bytes = 2 * iod_bitmap_bytes(nbits);
	if (bytes > s->manager->config.limits.log_bytes ||
	    s->log_bytes > s->manager->config.limits.log_bytes - bytes)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "The dirty log of session %s would grow to %" PRIu64
				   " bytes, over the limit \"log_bytes\" of %" PRIu64,
				   s->name, s->log_bytes + bytes,
				   s->manager->config.limits.log_bytes);
	if (s->uid != 0) {
		uint64_t user = iod_manager_log_bytes_of(s->manager, s->uid),
			 limit = s->manager->config.limits.log_bytes_per_user;

		if (user > limit || bytes > limit - user)
			return iod_reasonf(
				why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				"The dirty logs of uid %u would grow to %" PRIu64
				" bytes, over the limit \"log_bytes_per_user\" of %" PRIu64,
				(unsigned)s->uid, user + bytes, limit);
	}
	if (s->mode == IOD_MODE_OWNER || !s->options.viommu) {
		/* Without a vIOMMU IOVA = GPA: the region is also a mapping. */
		if (!s->options.viommu &&
		    iod_iova_map_count(s->map) >= s->manager->config.limits.mappings)
			return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
					   "Session %s has %zu mappings (limit \"mappings\")",
					   s->name, iod_iova_map_count(s->map));
	}
	*ret_bytes = bytes;
	return 0;
}

static int regions_grow(struct iod_session *s)
{
	struct iod_region *p = realloc(s->regions, (s->n_regions + 1) * sizeof(*p));

	if (!p)
		return -ENOMEM;
	s->regions = p;
	return 0;
}

int iod_session_add_memory(struct iod_session *s, int fd, uint64_t offset, uint64_t size,
			   uint64_t gpa, struct iod_reason *why)
{
	struct iod_region g = {.gpa = gpa, .length = size, .offset = offset, .fd = -EBADF};
	uint64_t align = iod_session_alignment(s), bytes, end;
	struct statfs sf;
	struct stat st;
	int r, flags;

	if (s->mode != IOD_MODE_OWNER)
		return iod_reasonf(
			why, -EMEDIUMTYPE, IOD_ERROR_WRONG_MODE,
			"Session %s is in adopt mode: declare the memory you mapped with AddRegion",
			s->name);
	r = check_region(s, gpa, size, &bytes, why);
	if (r < 0)
		return r;
	if (!iod_is_aligned(offset, align))
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "offset 0x%" PRIx64
				   " must be aligned to the page size 0x%" PRIx64,
				   offset, align);
	if (iod_add_overflow(offset, size, &end) || end > INT64_MAX)
		return iod_reasonf(why, -EOVERFLOW, IOD_ERROR_INVALID_RANGE,
				   "offset 0x%" PRIx64 " + size 0x%" PRIx64 " overflows", offset,
				   size);
	if (fstat(fd, &st) < 0)
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "The memory fd cannot be examined: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return iod_reasonf(
			why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
			"The memory fd is not a memfd or a file (memfd, tmpfs or hugetlbfs)");
	/* Guest memory lives in RAM: a file on disk would have the IOMMU pin its page cache
	 * and every DMA write would become disk I/O. */
	if (fstatfs(fd, &sf) < 0)
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "The memory fd's file system cannot be examined: %s",
				   strerror(errno));
	if (sf.f_type != TMPFS_MAGIC && sf.f_type != HUGETLBFS_MAGIC)
		return iod_reasonf(
			why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
			"The memory fd is a file on disk (file system 0x%llx): guest memory "
			"must be a memfd or a file on tmpfs or hugetlbfs",
			(unsigned long long)sf.f_type);
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || (flags & O_ACCMODE) != O_RDWR)
		return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
				   "The memory fd must be open for reading and writing");
	if ((uint64_t)st.st_size < end)
		return iod_reasonf(why, -ERANGE, IOD_ERROR_INVALID_RANGE,
				   "The memory fd holds %" PRIu64
				   " bytes, less than offset + size = %" PRIu64,
				   (uint64_t)st.st_size, end);

	if (!s->options.viommu) {
		r = session_ensure_kernel(s, why);
		if (r < 0)
			return r;
	}
	r = regions_grow(s);
	if (r < 0)
		return r;

	g.fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (g.fd < 0)
		return iod_reason_kernel(why, -errno, "Failed to duplicate the memory fd");
	r = fdname_new(&g.fdname, s, "mem/%" PRIx64, gpa);
	if (r < 0)
		goto fail;
	g.va = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, g.fd, (off_t)offset);
	if (g.va == MAP_FAILED) {
		g.va = NULL;
		r = iod_reason_kernel(why, -errno, "Failed to map guest memory at 0x%" PRIx64, gpa);
		goto fail;
	}

	r = iod_log_add_region(s->log, gpa, size);
	if (r < 0) {
		r = iod_reason_kernel(
			why, r, "Failed to add [0x%" PRIx64 ", +0x%" PRIx64 ") to the dirty log",
			gpa, size);
		goto fail;
	}

	if (!s->options.viommu) {
		r = iod_ioas_map(s->ictx, s->ioas_id, g.va, size, gpa,
				 IOD_MAP_READ | IOD_MAP_WRITE);
		if (r < 0) {
			r = iod_reason_kernel(why, r,
					      "Failed to map [0x%" PRIx64 ", +0x%" PRIx64
					      ") into ioas %u",
					      gpa, size, s->ioas_id);
			goto fail_log;
		}
		g.mapped = true;
		r = iod_iova_map_insert(s->map, gpa, gpa, size);
		if (r < 0) {
			(void)iod_ioas_unmap(s->ictx, s->ioas_id, gpa, size, NULL);
			r = iod_reason_kernel(why, r, "Failed to record the mapping");
			goto fail_log;
		}
	}

	s->regions[s->n_regions++] = g;
	s->log_bytes += bytes;
	log_debug("Session %s: memory [0x%" PRIx64 ", +0x%" PRIx64 ") from fd offset 0x%" PRIx64,
		  s->name, gpa, size, offset);
	return 0;

fail_log:
	(void)iod_log_remove_region(s->log, gpa);
fail:
	region_release(&g);
	return r;
}

int iod_session_add_region(struct iod_session *s, uint64_t gpa, uint64_t size,
			   struct iod_reason *why)
{
	uint64_t bytes;
	int r;

	if (s->mode != IOD_MODE_ADOPT)
		return iod_reasonf(
			why, -EMEDIUMTYPE, IOD_ERROR_WRONG_MODE,
			"Session %s is in owner mode: pass the guest memory with AddMemory",
			s->name);
	r = check_region(s, gpa, size, &bytes, why);
	if (r < 0)
		return r;
	if (!s->options.viommu) {
		/* The region is also the mapping (IOVA = GPA) harvests read: a hole in the
		 * client's IOAS inside it would have the kernel drop bits (or fail) there. */
		r = iod_ioas_check_mapped(s->ictx, s->ioas_id, gpa, size);
		if (r == -ENOENT)
			return iod_reasonf(
				why, -ERANGE, IOD_ERROR_INVALID_RANGE,
				"IOVA [0x%" PRIx64 ", 0x%" PRIx64
				") is not wholly mapped in ioas %u (it has a hole): declare each "
				"mapped piece as a region of its own, or create the session with "
				"viommu=true and report the mappings with Map",
				gpa, gpa + size, s->ioas_id);
		if (r < 0)
			return iod_reason_kernel(why, r,
						 "Failed to check that ioas %u maps [0x%" PRIx64
						 ", +0x%" PRIx64 ")",
						 s->ioas_id, gpa, size);
	}
	r = regions_grow(s);
	if (r < 0)
		return r;

	r = iod_log_add_region(s->log, gpa, size);
	if (r < 0)
		return iod_reason_kernel(
			why, r, "Failed to add [0x%" PRIx64 ", +0x%" PRIx64 ") to the dirty log",
			gpa, size);
	if (!s->options.viommu) {
		r = iod_iova_map_insert(s->map, gpa, gpa, size);
		if (r < 0) {
			(void)iod_log_remove_region(s->log, gpa);
			return iod_reason_kernel(why, r, "Failed to record the mapping");
		}
	}
	s->regions[s->n_regions++] = (struct iod_region){.gpa = gpa, .length = size, .fd = -EBADF};
	s->log_bytes += bytes;
	return 0;
}

/* --- harvesting ------------------------------------------------------------------------- */

int iod_session_ensure_journal(struct iod_session *s)
{
	if (s->journal)
		return 0;
	return iod_journal_new(HARVEST_CHUNK_BITS, &s->journal);
}

struct harvest_ctx {
	struct iod_session *session;
	const struct iod_session_hwpt *hwpt;
	unsigned flags;
};

/* Remember which read failed, for the reason a failed session gives. */
static int read_failed(struct harvest_ctx *c, int r, uint64_t iova, uint64_t length)
{
	struct iod_session *s = c->session;

	s->read_error = (struct iod_read_error){
		.hwpt_id = c->hwpt->hw.id, .iova = iova, .length = length, .err = r};
	return log_debug_errno(
		r, "Failed to read dirty bits of hwpt %u at [0x%" PRIx64 ", +0x%" PRIx64 "): %m",
		c->hwpt->hw.id, iova, length);
}

/* Read one mapped piece of one HWPT, chunk by chunk, into the accumulating plane. */
static int harvest_piece(const struct iod_mapping *p, void *userdata)
{
	struct harvest_ctx *c = userdata;
	struct iod_session *s = c->session;
	unsigned shift = iod_log_page_shift(s->log);
	uint64_t page = UINT64_C(1) << shift;
	int r;

	/*
	 * Fast path: where the piece's first page starts a word of the log's accumulating
	 * plane, the kernel ORs the bits straight into the log (it only ever sets bits). No
	 * buffer, no copy, no merge; and since the plane lives in the log memfd, a crash right
	 * after the read-and-clear loses nothing either, nor does a read that fails half way.
	 */
	uint64_t *direct;
	if (iod_log_accum_direct(s->log, p->gpa, p->length >> shift, &direct) == 0) {
		r = iod_hwpt_read_dirty(s->ictx, c->hwpt->hw.id, p->iova, p->length, page, direct,
					c->flags);
		return r < 0 ? read_failed(c, r, p->iova, p->length) : 0;
	}

	for (uint64_t done = 0; done < p->length;) {
		uint64_t len = MIN(p->length - done, HARVEST_CHUNK_BITS << shift);
		uint64_t nbits = len >> shift;
		/* Read-and-clear leaves the only copy of the bits in this buffer until they are
		 * merged: it lives in a memfd that the next instance replays (journal.h). */
		uint64_t *buf = iod_journal_begin(s->journal, p->gpa + done, nbits, shift);
		int k;

		r = iod_hwpt_read_dirty(s->ictx, c->hwpt->hw.id, p->iova + done, len, page, buf,
					c->flags);
		/* A read that failed half way may have cleared what it returned: merge that too. */
		if (!iod_bitmap_is_empty(buf, nbits, 0, nbits)) {
			k = iod_log_merge(s->log, p->gpa + done, buf, 0, nbits, shift);
			if (k < 0) {
				iod_journal_end(s->journal);
				return log_debug_errno(k, "Failed to merge into the log: %m");
			}
		}
		iod_journal_end(s->journal);
		if (r < 0)
			return read_failed(c, r, p->iova + done, len);
		done += len;
	}
	return 0;
}

/* Harvest [iova, iova + length) of every tracking HWPT (the whole map with length 0). */
static int harvest_hwpts(struct iod_session *s, const struct iod_session_hwpt *only, uint64_t iova,
			 uint64_t length, unsigned flags)
{
	int r;

	r = iod_session_ensure_journal(s);
	if (r < 0)
		return r;

	s->read_error = (struct iod_read_error){};
	for (size_t i = 0; i < s->n_hwpts; i++) {
		struct harvest_ctx c = {.session = s, .hwpt = &s->hwpts[i], .flags = flags};

		if (only && only != &s->hwpts[i])
			continue;
		if (!c.hwpt->hw.dirty_capable || !c.hwpt->hw.tracking)
			continue;
		if (length == 0) {
			for (const struct iod_mapping *p = iod_iova_map_first(s->map); p;
			     p = iod_iova_map_next(s->map, p)) {
				r = harvest_piece(p, &c);
				if (r < 0)
					return r;
			}
		} else {
			r = iod_iova_map_foreach(s->map, iova, length, harvest_piece, &c);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* A HWPT that cannot track but carries DMA: its mapped ranges count as always dirty. */
static bool hwpt_is_fallback(const struct iod_session *s, const struct iod_session_hwpt *h)
{
	return !h->hw.dirty_capable && (h->users > 0 || s->mode == IOD_MODE_ADOPT);
}

static bool session_has_fallback(const struct iod_session *s)
{
	for (size_t i = 0; i < s->n_hwpts; i++)
		if (hwpt_is_fallback(s, &s->hwpts[i]))
			return true;
	return false;
}

/*
 * Precise: every bit stands for one page of page_size. Not with a fallback HWPT (its mapped
 * ranges are always dirty), nor with huge IOMMU pages: a huge IOPTE has one dirty bit, and
 * the kernel reports every page under it dirty.
 */
bool iod_session_precise(const struct iod_session *s)
{
	return !session_has_fallback(s) && !s->options.huge_pages;
}

static int mark_piece(const struct iod_mapping *p, void *userdata)
{
	struct iod_session *s = userdata;

	return iod_log_mark(s->log, p->gpa, p->length);
}

/* Mark the mapped areas (inside [iova, +length), or all with length 0) dirty. */
static int mark_mapped(struct iod_session *s, uint64_t iova, uint64_t length)
{
	int r;

	if (length)
		return iod_iova_map_foreach(s->map, iova, length, mark_piece, s);
	for (const struct iod_mapping *p = iod_iova_map_first(s->map); p;
	     p = iod_iova_map_next(s->map, p)) {
		r = mark_piece(p, s);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * A harvest failed with r: fail the session, saying what the kernel refused. On a strict
 * kernel (enum iod_hole_behavior) EINVAL for an area the session mapped means the area is
 * no longer wholly in the IOAS, or its HWPT stopped tracking: either way, bits are lost.
 */
static void fail_harvest(struct iod_session *s, const char *when, int r)
{
	const struct iod_read_error *e = &s->read_error;

	if (e->err != r || r == 0)
		iod_session_fail(s, "%s failed: %s", when, iod_strerror(r));
	else if (r == -EINVAL && s->manager->holes == IOD_HOLES_STRICT)
		iod_session_fail(s,
				 "%s failed: the kernel reports IOVA [0x%" PRIx64 ", +0x%" PRIx64
				 ") of hwpt %u as not wholly mapped or not tracking (EINVAL): it "
				 "left the IOAS without the harvest that Unmap does first, or its "
				 "tracking was turned off, and its dirty bits are lost",
				 when, e->iova, e->length, e->hwpt_id);
	else
		iod_session_fail(
			s, "%s failed: reading hwpt %u at IOVA [0x%" PRIx64 ", +0x%" PRIx64 "): %s",
			when, e->hwpt_id, e->iova, e->length, iod_strerror(r));
}

void iod_session_fail(struct iod_session *s, const char *format, ...)
{
	char *reason = NULL;
	va_list ap;

	va_start(ap, format);
	if (vasprintf(&reason, format, ap) < 0)
		reason = NULL;
	va_end(ap);

	log_error("Session %s failed, its dirty log is incomplete: %s", s->name,
		  reason ? reason : "out of memory");
	iod_log_set_flags(s->log, iod_log_flags(s->log) | IOD_LOG_F_INCOMPLETE);
	if (s->failed) {
		free(reason);
		return;
	}
	s->failed = true;
	free(s->failure);
	s->failure = reason;
	(void)iod_session_send_failed(s);
	(void)iod_session_send_changed(s, "State", "LogComplete", "FailureReason", NULL);
}

static int check_failed(struct iod_session *s, struct iod_reason *why)
{
	if (!s->failed)
		return 0;
	return iod_reasonf(why, -EIO, IOD_ERROR_SESSION_FAILED,
			   "Session %s failed, its dirty log is incomplete: %s", s->name,
			   s->failure ? s->failure : "unknown reason");
}

int iod_session_start(struct iod_session *s, struct iod_reason *why)
{
	size_t i;
	int r;

	r = check_failed(s, why);
	if (r < 0)
		return r;
	if (s->tracking)
		return 0; /* idempotent: never re-enable, which would wipe the bits */

	for (i = 0; i < s->n_hwpts; i++) {
		struct iod_session_hwpt *h = &s->hwpts[i];

		if (!h->hw.dirty_capable)
			continue;
		r = iod_hwpt_set_tracking(s->ictx, &h->hw, true);
		if (r == -EOPNOTSUPP && !h->owned) {
			log_warning(
				"Session %s: hwpt %u cannot track dirty pages, treating its mappings as always dirty.",
				s->name, h->hw.id);
			h->hw.dirty_capable = false;
			continue;
		}
		if (r < 0) {
			r = iod_reason_kernel(why, r, "Failed to enable dirty tracking on hwpt %u",
					      h->hw.id);
			goto rollback;
		}
	}

	s->tracking = true;
	s->last_round_usec = iod_now_usec();
	log_info("Session %s: dirty tracking started (%s).", s->name,
		 iod_session_tracking_mode_string(s));
	return 0;

rollback:
	while (i-- > 0)
		if (s->hwpts[i].hw.tracking)
			(void)iod_hwpt_set_tracking(s->ictx, &s->hwpts[i].hw, false);
	return r;
}

int iod_session_stop(struct iod_session *s, struct iod_reason *why)
{
	int r;

	if (!s->tracking)
		return 0;

	/* Keep what the hardware saw so far: into the log before tracking goes off. */
	r = harvest_hwpts(s, NULL, 0, 0, 0);
	if (r < 0) {
		/* A read-and-clear that failed half way may have lost bits. */
		fail_harvest(s, "harvest before stopping", r);
		return iod_reason_kernel(why, r, "Failed to harvest before stopping");
	}
	if (session_has_fallback(s)) {
		r = mark_mapped(s, 0, 0);
		if (r < 0)
			return iod_reason_kernel(why, r, "Failed to mark fallback ranges");
	}

	for (size_t i = 0; i < s->n_hwpts; i++) {
		struct iod_session_hwpt *h = &s->hwpts[i];

		if (!h->hw.tracking)
			continue;
		r = iod_hwpt_set_tracking(s->ictx, &h->hw, false);
		if (r < 0)
			log_warning_errno(
				r, "Failed to disable dirty tracking on hwpt %u, ignoring: %m",
				h->hw.id);
	}
	s->tracking = false;
	log_info("Session %s: dirty tracking stopped.", s->name);
	return 0;
}

int iod_session_harvest(struct iod_session *s, bool peek, struct iod_harvest_result *ret,
			struct iod_reason *why)
{
	uint64_t t0 = iod_now_usec(), dirty = 0, now;
	bool precise;
	int r;

	r = check_failed(s, why);
	if (r < 0)
		return r;
	if (!s->tracking)
		return iod_reasonf(why, -ESRCH, IOD_ERROR_NOT_TRACKING,
				   "Session %s is not tracking: call Start first", s->name);

	r = harvest_hwpts(s, NULL, 0, 0, peek ? IOD_READ_NO_CLEAR : 0);
	if (r < 0) {
		/* A read-and-clear that failed half way may have lost bits; EINVAL for an area
		 * the session mapped says bits are lost, peek or not. */
		if (!peek || r == -EINVAL)
			fail_harvest(s, "harvest", r);
		return iod_reason_kernel(why, r, "Failed to harvest session %s", s->name);
	}
	precise = iod_session_precise(s);
	if (session_has_fallback(s)) {
		r = mark_mapped(s, 0, 0);
		if (r < 0)
			return iod_reason_kernel(why, r, "Failed to mark fallback ranges");
	}

	if (peek) {
		dirty = iod_log_count_union(s->log);
	} else {
		r = iod_log_snapshot(s->log, &dirty);
		if (r < 0)
			return iod_reason_kernel(why, r, "Failed to start round");
	}

	now = iod_now_usec();
	*ret = (struct iod_harvest_result){
		.round = iod_log_rounds(s->log),
		.dirty_pages = dirty,
		.duration_usec = now - t0,
		.precise = precise,
	};
	if (!peek) {
		uint64_t elapsed = now - s->last_round_usec, new_pages;

		/* The rate counts what this round added, not what an unacknowledged round held. */
		new_pages = dirty;
		if (s->round_pending && s->last_dirty_pages <= dirty)
			new_pages = dirty - s->last_dirty_pages;
		s->dirty_rate = elapsed ? (uint64_t)((double)new_pages *
						     (double)s->options.page_size * 1e6 /
						     (double)elapsed)
					: 0;
		s->round_pending = true;
		s->last_dirty_pages = dirty;
		s->last_duration_usec = ret->duration_usec;
		s->last_precise = precise;
		s->last_round_usec = now;
	}
	return 0;
}

int iod_session_acknowledge(struct iod_session *s, uint64_t round, struct iod_reason *why)
{
	uint64_t current = iod_log_rounds(s->log);
	int r;

	if (round == 0 || round != current)
		return iod_reasonf(why, -ESTALE, IOD_ERROR_NO_SUCH_ROUND,
				   "Round %" PRIu64
				   " is not the current round of session %s (%" PRIu64
				   "): a later Harvest merged it into round %" PRIu64,
				   round, s->name, current, current);
	if (!s->round_pending)
		return 0;
	r = iod_log_ack(s->log);
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to acknowledge round %" PRIu64, round);
	s->round_pending = false;
	return 0;
}

struct range_sink {
	struct iod_range *ranges;
	size_t n, max;
	bool truncated;
};

static bool sink_add(struct range_sink *k, uint64_t start, uint64_t length)
{
	if (k->n > 0 && k->ranges[k->n - 1].start + k->ranges[k->n - 1].length == start) {
		k->ranges[k->n - 1].length += length;
		return true;
	}
	if (k->n == k->max) {
		k->truncated = true;
		return false;
	}
	k->ranges[k->n++] = (struct iod_range){.start = start, .length = length};
	return true;
}

/* Emit the dirty runs of region i between GPA [gpa, end), translated by delta. */
static bool sink_region_runs(struct range_sink *k, const struct iod_dirty_log *log, size_t i,
			     bool peek, uint64_t gpa, uint64_t end, uint64_t delta)
{
	const struct iod_log_region *g = iod_log_region(log, i);
	unsigned shift = iod_log_page_shift(log);
	uint64_t first = (MAX(gpa, g->gpa) - g->gpa) >> shift;
	uint64_t last = (MIN(end, g->gpa + g->length) - g->gpa + (UINT64_C(1) << shift) - 1) >>
			shift;
	uint64_t b, e;

	for (uint64_t bit = first;
	     bit < last && iod_log_next_dirty(log, i, peek, bit, last, &b, &e) == 0; bit = e)
		if (!sink_add(k, g->gpa + (b << shift) + delta, (e - b) << shift))
			return false;
	return true;
}

struct gpa_interval {
	uint64_t start, end;
};

static int gpa_interval_cmp(const void *a, const void *b)
{
	const struct gpa_interval *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/*
 * Dirty pages of the round (with peek: of both planes) that no IOVA maps now (harvested
 * before an Unmap): they have no IOVA to be reported at. O(mappings log mappings + runs).
 */
static int count_unmapped_dirty(struct iod_session *s, bool peek, uint64_t *ret)
{
	unsigned shift = iod_log_page_shift(s->log);
	size_t n = 0, m = 0, count = iod_iova_map_count(s->map);
	_cleanup_free_ struct gpa_interval *v = calloc(count ?: 1, sizeof(*v));
	uint64_t total = 0;

	if (!v)
		return -ENOMEM;
	/* The GPA ranges some IOVA maps, sorted and merged. */
	for (const struct iod_mapping *p = iod_iova_map_first(s->map); p;
	     p = iod_iova_map_next(s->map, p))
		v[n++] = (struct gpa_interval){p->gpa, p->gpa + p->length};
	qsort(v, n, sizeof(*v), gpa_interval_cmp);
	for (size_t i = 0; i < n; i++) {
		if (m > 0 && v[i].start <= v[m - 1].end)
			v[m - 1].end = MAX(v[m - 1].end, v[i].end);
		else
			v[m++] = v[i];
	}

	for (size_t i = 0; i < iod_log_region_count(s->log); i++) {
		const struct iod_log_region *g = iod_log_region(s->log, i);
		uint64_t nbits = g->length >> shift, b, e, lo = 0;

		for (uint64_t bit = 0; iod_log_next_dirty(s->log, i, peek, bit, nbits, &b, &e) == 0;
		     bit = e) {
			uint64_t at = g->gpa + (b << shift), stop = g->gpa + (e << shift);

			/* intervals ending at or before the run can be skipped for good */
			while (lo < m && v[lo].end <= at)
				lo++;
			for (size_t k = lo; k < m && v[k].start < stop && at < stop; k++) {
				if (v[k].start > at)
					total += (v[k].start - at) >> shift;
				at = MAX(at, MIN(v[k].end, stop));
			}
			if (at < stop)
				total += (stop - at) >> shift;
		}
	}
	*ret = total;
	return 0;
}

int iod_session_dirty_ranges(struct iod_session *s, bool peek, bool iova_space, size_t max,
			     struct iod_range **ret_ranges, size_t *ret_n, bool *ret_truncated,
			     uint64_t *ret_unmapped)
{
	size_t nregions = iod_log_region_count(s->log);
	_cleanup_free_ struct iod_range *ranges = NULL;
	struct range_sink k = {.max = max};
	int r;

	if (max == 0)
		return -EINVAL;
	if (iova_space) {
		uint64_t unmapped = 0;

		r = count_unmapped_dirty(s, peek, &unmapped);
		if (r < 0)
			return r;
		if (unmapped > 0) {
			*ret_unmapped = unmapped;
			return -EADDRNOTAVAIL;
		}
	}

	/* Grow the output array lazily: a sparse round needs few entries. */
	ranges = calloc(MIN(max, 4096), sizeof(*ranges));
	if (!ranges)
		return -ENOMEM;
	k.ranges = ranges;
	k.max = MIN(max, 4096);

	for (;;) {
		bool done = true;

		k.n = 0;
		k.truncated = false;
		if (!iova_space) {
			for (size_t i = 0; i < nregions && done; i++) {
				const struct iod_log_region *g = iod_log_region(s->log, i);

				done = sink_region_runs(&k, s->log, i, peek, g->gpa,
							g->gpa + g->length, 0);
			}
		} else {
			for (const struct iod_mapping *p = iod_iova_map_first(s->map); p && done;
			     p = iod_iova_map_next(s->map, p)) {
				for (size_t i = 0; i < nregions && done; i++) {
					const struct iod_log_region *g = iod_log_region(s->log, i);

					if (g->gpa >= p->gpa + p->length ||
					    p->gpa >= g->gpa + g->length)
						continue;
					done = sink_region_runs(&k, s->log, i, peek, p->gpa,
								p->gpa + p->length,
								p->iova - p->gpa);
				}
			}
		}
		if (done || k.max == max)
			break;
		/* Out of room below the caller's maximum: grow and encode again. */
		{
			size_t nmax = k.max > max / 4 ? max : k.max * 4;
			struct iod_range *p = realloc(k.ranges, nmax * sizeof(*p));

			if (!p)
				return -ENOMEM;
			k.ranges = ranges = p;
			k.max = nmax;
		}
	}

	*ret_ranges = TAKE_PTR(ranges);
	*ret_n = k.n;
	*ret_truncated = k.truncated;
	return 0;
}

int iod_session_open_log_ro(struct iod_session *s)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", iod_log_fd(s->log));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return fd;
}

/* --- vIOMMU ----------------------------------------------------------------------------- */

/*
 * Map and Unmap are batches of one: MapBatch and UnmapBatch share every check and every step
 * with them. With array set, an error about one entry names it ("maps[3]: ...").
 */
static int reason_at(struct iod_reason *why, int err, const char *array, size_t i)
{
	char text[sizeof(why->text)];

	if (!why || !array)
		return err;
	if (snprintf(text, sizeof(text), "%s[%zu]: %s", array, i, why->text) >= 0)
		memcpy(why->text, text, sizeof(text));
	return err;
}

static int check_viommu(const struct iod_session *s, const char *what, struct iod_reason *why)
{
	if (s->options.viommu)
		return 0;
	return iod_reasonf(
		why, -EMEDIUMTYPE, IOD_ERROR_WRONG_MODE,
		"Session %s has no vIOMMU (IOVA = GPA): create it with the option viommu=true to report %s events",
		s->name, what);
}

int iod_session_check_events(const struct iod_session *s, const char *array,
			     const struct iod_mapping *events, size_t n, bool with_gpa,
			     struct iod_reason *why)
{
	int r;

	for (size_t i = 0; i < n; i++) {
		r = iod_session_check_range(s, "iova", events[i].iova, events[i].length, why);
		if (r >= 0 && with_gpa)
			r = iod_session_check_range(s, "gpa", events[i].gpa, events[i].length, why);
		if (r < 0)
			return reason_at(why, r, array, i);
	}
	return 0;
}

static int first_piece(const struct iod_mapping *p, void *userdata)
{
	*(struct iod_mapping *)userdata = *p;
	return 1;
}

/* The first mapped piece inside [iova, iova + length), if any: O(log n). */
static bool find_mapped(const struct iod_session *s, uint64_t iova, uint64_t length,
			struct iod_mapping *ret)
{
	return iod_iova_map_foreach(s->map, iova, length, first_piece, ret) > 0;
}

/*
 * One Map event against the session as it is, before anything changes. 1 if exactly this
 * mapping (IOVA, GPA and length) is recorded already: a client's retry of a Map whose reply
 * it never got (the daemon restarted), which succeeds without a change.
 */
static int check_map(struct iod_session *s, const struct iod_mapping *e, struct iod_reason *why)
{
	struct iod_mapping hit;
	int r;

	r = iod_session_check_events(s, NULL, e, 1, true, why);
	if (r < 0)
		return r;
	if (!region_containing(s, e->gpa, e->length))
		return iod_reasonf(why, -ERANGE, IOD_ERROR_INVALID_RANGE,
				   "GPA [0x%" PRIx64 ", 0x%" PRIx64
				   ") is not inside one guest memory region",
				   e->gpa, e->gpa + e->length);
	if (iod_iova_map_lookup(s->map, e->iova, &hit) == 0 && hit.iova == e->iova &&
	    hit.gpa == e->gpa && hit.length == e->length)
		return 1;
	if (find_mapped(s, e->iova, e->length, &hit))
		return iod_reasonf(why, -EEXIST, IOD_ERROR_INVALID_RANGE,
				   "IOVA [0x%" PRIx64 ", 0x%" PRIx64
				   ") overlaps an existing mapping at 0x%" PRIx64,
				   e->iova, e->iova + e->length, hit.iova);
	return 0;
}

struct event_order {
	uint64_t iova, end;
	size_t index;
};

static int event_order_cmp(const void *a, const void *b)
{
	const struct event_order *x = a, *y = b;

	return x->iova < y->iova ? -1 : x->iova > y->iova;
}

/* The entries of one batch must not overlap each other: sorted by IOVA, an overlap always
 * shows between neighbours. */
static int check_disjoint(const char *array, const struct iod_mapping *e, size_t n,
			  struct iod_reason *why)
{
	struct event_order *v;
	int r = 0;

	if (n < 2)
		return 0;
	v = calloc(n, sizeof(*v));
	if (!v)
		return iod_reason_kernel(why, -ENOMEM, "Failed to check the batch");
	for (size_t i = 0; i < n; i++)
		v[i] = (struct event_order){e[i].iova, e[i].iova + e[i].length, i};
	qsort(v, n, sizeof(*v), event_order_cmp);
	for (size_t k = 1; k < n && r == 0; k++) {
		size_t a = MIN(v[k - 1].index, v[k].index), b = MAX(v[k - 1].index, v[k].index);

		if (v[k].iova >= v[k - 1].end)
			continue;
		r = iod_reasonf(why, -EEXIST, IOD_ERROR_INVALID_RANGE,
				"IOVA [0x%" PRIx64 ", 0x%" PRIx64
				") overlaps %s[%zu] of the same batch",
				e[b].iova, e[b].iova + e[b].length, array ? array : "entries", a);
		r = reason_at(why, r, array, b);
	}
	free(v);
	return r;
}

static int check_mappings_limit(struct iod_session *s, size_t n, struct iod_reason *why)
{
	size_t have = iod_iova_map_count(s->map), limit = s->manager->config.limits.mappings;

	if (have <= limit && n <= limit - have)
		return 0;
	return iod_reasonf(
		why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
		"Session %s has %zu mappings, %zu more would be over the limit \"mappings\" of %zu",
		s->name, have, n, limit);
}

/* Map one checked event into the IOAS (owner mode) and the IOVA map. */
static int map_one(struct iod_session *s, const struct iod_mapping *e, struct iod_reason *why)
{
	int r;

	if (s->mode == IOD_MODE_OWNER) {
		const struct iod_region *g = region_containing(s, e->gpa, e->length);

		r = iod_ioas_map(s->ictx, s->ioas_id, (uint8_t *)g->va + (e->gpa - g->gpa),
				 e->length, e->iova, IOD_MAP_READ | IOD_MAP_WRITE);
		if (r < 0)
			return iod_reason_kernel(why, r,
						 "Failed to map IOVA [0x%" PRIx64 ", +0x%" PRIx64
						 ") into ioas %u",
						 e->iova, e->length, s->ioas_id);
	}
	r = iod_iova_map_insert(s->map, e->iova, e->gpa, e->length);
	if (r < 0) {
		if (s->mode == IOD_MODE_OWNER)
			(void)iod_ioas_unmap(s->ictx, s->ioas_id, e->iova, e->length, NULL);
		return iod_reason_kernel(why, r, "Failed to record the mapping");
	}
	return 0;
}

/* Take back an event map_one() applied (a whole entry: the removal never splits). */
static void map_undo(struct iod_session *s, const struct iod_mapping *e)
{
	int r;

	if (s->mode == IOD_MODE_OWNER) {
		r = iod_ioas_unmap(s->ictx, s->ioas_id, e->iova, e->length, NULL);
		if (r < 0)
			log_warning_errno(r,
					  "Failed to take back IOVA [0x%" PRIx64 ", +0x%" PRIx64
					  ") from ioas %u, ignoring: %m",
					  e->iova, e->length, s->ioas_id);
	}
	(void)iod_iova_map_remove(s->map, e->iova, e->length, NULL);
}

int iod_session_map_batch(struct iod_session *s, const char *array, const struct iod_mapping *maps,
			  size_t n, struct iod_reason *why)
{
	_cleanup_free_ bool *recorded = NULL;
	size_t i, fresh = 0;
	int r;

	r = check_viommu(s, "map", why);
	if (r < 0)
		return r;
	if (n == 0)
		return 0;
	recorded = calloc(n, sizeof(*recorded));
	if (!recorded)
		return iod_reason_kernel(why, -ENOMEM, "Failed to check the batch");
	for (i = 0; i < n; i++) {
		r = check_map(s, &maps[i], why);
		if (r < 0)
			return reason_at(why, r, array, i);
		recorded[i] = r > 0;
		fresh += !recorded[i];
	}
	r = check_disjoint(array, maps, n, why);
	if (r < 0)
		return r;
	r = check_mappings_limit(s, fresh, why);
	if (r < 0)
		return r;
	if (fresh == 0)
		return 0;

	if (s->mode == IOD_MODE_OWNER) {
		r = session_ensure_kernel(s, why);
		if (r < 0)
			return r;
	}
	for (i = 0; i < n; i++) {
		if (recorded[i])
			continue;
		r = map_one(s, &maps[i], why);
		if (r < 0)
			break;
	}
	if (i == n)
		return 0;
	/* All or nothing: what this call mapped goes again. */
	for (size_t k = i; k-- > 0;)
		if (!recorded[k])
			map_undo(s, &maps[k]);
	return reason_at(why, r, array, i);
}

int iod_session_map(struct iod_session *s, uint64_t iova, uint64_t gpa, uint64_t length,
		    struct iod_reason *why)
{
	const struct iod_mapping e = {.iova = iova, .gpa = gpa, .length = length};

	return iod_session_map_batch(s, NULL, &e, 1, why);
}

/* One Unmap event: the kernel unmaps whole areas only, so a range must not cut a mapping. */
static int check_unmap(struct iod_session *s, const struct iod_mapping *e, struct iod_reason *why)
{
	uint64_t end = e->iova + e->length;
	struct iod_mapping m;
	int r;

	r = iod_session_check_events(s, NULL, e, 1, false, why);
	if (r < 0)
		return r;
	if (iod_iova_map_lookup(s->map, e->iova, &m) == 0 && m.iova < e->iova)
		return iod_reasonf(why, -ERANGE, IOD_ERROR_INVALID_RANGE,
				   "Unmap at 0x%" PRIx64 " cuts the mapping [0x%" PRIx64
				   ", 0x%" PRIx64 "): unmap whole mappings",
				   e->iova, m.iova, m.iova + m.length);
	if (iod_iova_map_lookup(s->map, end - 1, &m) == 0 && m.iova + m.length > end)
		return iod_reasonf(why, -ERANGE, IOD_ERROR_INVALID_RANGE,
				   "Unmap up to 0x%" PRIx64 " cuts the mapping [0x%" PRIx64
				   ", 0x%" PRIx64 "): unmap whole mappings",
				   end, m.iova, m.iova + m.length);
	return 0;
}

/* Before a range leaves the IOAS, its dirty bits go into the log (read without clearing);
 * if that fails, the session fails and the unmap still happens. */
static void harvest_before_unmap(struct iod_session *s, const struct iod_mapping *e)
{
	struct iod_mapping hit;
	int r;

	if (!s->tracking || s->failed || !find_mapped(s, e->iova, e->length, &hit))
		return;
	r = harvest_hwpts(s, NULL, e->iova, e->length, IOD_READ_NO_CLEAR);
	if (r < 0) {
		char when[96];

		snprintf(when, sizeof(when),
			 "harvest before unmapping IOVA [0x%" PRIx64 ", 0x%" PRIx64 ")", e->iova,
			 e->iova + e->length);
		fail_harvest(s, when, r);
	}
	if (session_has_fallback(s)) {
		r = mark_mapped(s, e->iova, e->length);
		if (r < 0)
			iod_session_fail(s, "marking unmapped fallback range failed: %s",
					 iod_strerror(r));
	}
}

struct unmap_ctx {
	struct iod_session *session;
	struct iod_mapping failed; /* the piece the kernel refused */
};

static int unmap_piece(const struct iod_mapping *p, void *userdata)
{
	struct unmap_ctx *c = userdata;
	int r;

	r = iod_ioas_unmap(c->session->ictx, c->session->ioas_id, p->iova, p->length, NULL);
	if (r == -ENOENT) {
		/* Recorded, yet not in the IOAS: an instance died between its IOAS unmap and
		 * the state save. What the client asks for is already so. */
		log_notice("Session %s: IOVA [0x%" PRIx64 ", +0x%" PRIx64
			   ") was no longer in ioas %u; forgetting it.",
			   c->session->name, p->iova, p->length, c->session->ioas_id);
		return 0;
	}
	if (r < 0)
		c->failed = *p;
	return r;
}

/*
 * Unmap the whole mappings inside a checked range from the IOAS (owner mode), one kernel
 * area at a time, and forget them. If the kernel refuses one, the ones before it stay
 * unmapped and forgotten, that one and the rest stay mapped.
 */
static int unmap_one(struct iod_session *s, const struct iod_mapping *e, struct iod_reason *why)
{
	struct unmap_ctx c = {.session = s, .failed = {.iova = e->iova}};
	uint64_t done = e->length;
	int r = 0;

	if (s->mode == IOD_MODE_OWNER && s->ictx)
		r = iod_iova_map_foreach(s->map, e->iova, e->length, unmap_piece, &c);
	if (r < 0)
		done = c.failed.iova - e->iova;
	if (done > 0) {
		int k = iod_iova_map_remove(s->map, e->iova, done, NULL);

		if (k < 0)
			log_warning_errno(k,
					  "Failed to forget the mappings in [0x%" PRIx64
					  ", +0x%" PRIx64 "), ignoring: %m",
					  e->iova, done);
	}
	if (r < 0)
		return iod_reason_kernel(
			why, r, "Failed to unmap IOVA [0x%" PRIx64 ", +0x%" PRIx64 ") from ioas %u",
			c.failed.iova, c.failed.length, s->ioas_id);
	return 0;
}

int iod_session_unmap_batch(struct iod_session *s, const char *array,
			    const struct iod_mapping *ranges, size_t n, struct iod_reason *why)
{
	struct iod_mapping hit;
	size_t present = 0;
	int r;

	r = check_viommu(s, "unmap", why);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = check_unmap(s, &ranges[i], why);
		if (r < 0)
			return reason_at(why, r, array, i);
		present += find_mapped(s, ranges[i].iova, ranges[i].length, &hit);
	}
	/* Nothing of it is mapped: distinct, so that a client retrying an Unmap whose reply it
	 * never got (the daemon restarted) can tell that its first attempt did it. */
	if (n == 1 && present == 0)
		return iod_reasonf(why, -ENOENT, IOD_ERROR_NOT_MAPPED,
				   "There is no mapping in IOVA [0x%" PRIx64 ", 0x%" PRIx64
				   ") (for a retried Unmap: the first attempt did it)",
				   ranges[0].iova, ranges[0].iova + ranges[0].length);
	if (n > 1 && present == 0)
		return iod_reasonf(why, -ENOENT, IOD_ERROR_NOT_MAPPED,
				   "There is no mapping in any of the %zu ranges (for a retried "
				   "UnmapBatch: the first attempt did it)",
				   n);
	/* Every range is harvested before the first one leaves the IOAS. */
	for (size_t i = 0; i < n; i++)
		harvest_before_unmap(s, &ranges[i]);
	for (size_t i = 0; i < n; i++) {
		r = unmap_one(s, &ranges[i], why);
		if (r < 0)
			return reason_at(why, r, array, i);
	}
	return 0;
}

int iod_session_unmap(struct iod_session *s, uint64_t iova, uint64_t length, struct iod_reason *why)
{
	const struct iod_mapping e = {.iova = iova, .length = length};

	return iod_session_unmap_batch(s, NULL, &e, 1, why);
}

/* --- devices ---------------------------------------------------------------------------- */

struct iod_device *iod_session_find_device(struct iod_session *s, uint32_t index)
{
	for (size_t i = 0; i < s->n_devices; i++)
		if (s->devices[i]->index == index)
			return s->devices[i];
	return NULL;
}

int iod_session_check_device_limit(struct iod_session *s, struct iod_reason *why)
{
	if (s->mode != IOD_MODE_OWNER)
		return iod_reasonf(
			why, -EMEDIUMTYPE, IOD_ERROR_WRONG_MODE,
			"Session %s is in adopt mode: its devices belong to the client, which names its HWPTs instead",
			s->name);
	if (s->n_devices >= s->manager->config.limits.devices)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "Session %s already has %zu devices (limit \"devices\")",
				   s->name, s->n_devices);
	return 0;
}

/* Put the device on an existing HWPT of the right kind, or on a new one. */
static int attach_to_hwpt(struct iod_session *s, struct iod_device *d, bool dirty,
			  struct iod_reason *why)
{
	struct iod_session_hwpt h = {.owned = true};
	struct iod_session_hwpt *p;
	int r;

	/* Same IOMMU instance, same kind: the kernel accepts the attach. */
	for (size_t i = 0; i < s->n_hwpts; i++) {
		if (s->hwpts[i].hw.dirty_capable != dirty || !s->hwpts[i].owned)
			continue;
		if (iod_vfio_attach(d->fd, s->hwpts[i].hw.id, NULL) == 0) {
			s->hwpts[i].users++;
			d->hwpt_id = s->hwpts[i].hw.id;
			return 0;
		}
	}

	r = iod_hwpt_alloc(s->ictx, d->dev_id, s->ioas_id, dirty ? IOD_HWPT_DIRTY : 0, &h.hw.id);
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to allocate a %sHWPT for %s",
					 dirty ? "dirty tracking " : "", d->name);
	h.hw.dirty_capable = dirty;

	if (dirty && s->tracking) {
		/* A new HWPT has no bits yet: enabling now loses nothing. */
		r = iod_hwpt_set_tracking(s->ictx, &h.hw, true);
		if (r < 0) {
			r = iod_reason_kernel(why, r, "Failed to enable dirty tracking on hwpt %u",
					      h.hw.id);
			goto fail;
		}
	}

	p = realloc(s->hwpts, (s->n_hwpts + 1) * sizeof(*p));
	if (!p) {
		r = -ENOMEM;
		goto fail;
	}
	s->hwpts = p;

	r = iod_vfio_attach(d->fd, h.hw.id, NULL);
	if (r < 0) {
		r = iod_reason_kernel(why, r, "Failed to attach %s to hwpt %u", d->name, h.hw.id);
		goto fail;
	}
	h.users = 1;
	s->hwpts[s->n_hwpts++] = h;
	d->hwpt_id = h.hw.id;
	if (dirty)
		iod_session_probe_holes(s);
	return 0;

fail:
	(void)iod_iommufd_destroy(s->ictx, h.hw.id);
	return r;
}

int iod_session_attach_device(struct iod_session *s, struct iod_device *d, bool allow_dirty,
			      struct iod_reason *why)
{
	struct iod_device **p;
	bool dirty;
	int r;

	r = iod_session_check_device_limit(s, why);
	if (r < 0)
		return r;
	r = session_ensure_kernel(s, why);
	if (r < 0)
		return r;

	p = realloc(s->devices, (s->n_devices + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	s->devices = p;

	r = iod_device_bind(d, s->ictx, why);
	if (r < 0)
		return r;

	dirty = allow_dirty && d->hw.dirty_tracking;
	if (dirty) {
		r = attach_to_hwpt(s, d, true, why);
		if (r == -EOPNOTSUPP) {
			log_info(
				"Session %s: the IOMMU of %s refused a dirty tracking HWPT, using the fallback.",
				s->name, d->name);
			dirty = false;
		} else if (r < 0) {
			return r;
		}
	}
	if (!dirty) {
		r = attach_to_hwpt(s, d, false, why);
		if (r < 0)
			return r;
	}

	d->session = s;
	d->index = s->next_device_index++;
	r = asprintf(&d->path, "%s/device/%" PRIu32, s->path, d->index);
	if (r < 0) {
		d->path = NULL;
		goto fail;
	}
	r = fdname_new(&d->fdname, s, "dev/%" PRIu32, d->index);
	if (r < 0)
		goto fail;
	s->devices[s->n_devices++] = d;
	log_info("Session %s: attached %s (dev %u) to hwpt %u, %s.", s->name, d->name, d->dev_id,
		 d->hwpt_id, dirty ? "hardware dirty tracking" : "fallback (always dirty)");
	return 0;

fail:
	(void)iod_vfio_detach(d->fd);
	{
		struct iod_session_hwpt *h = hwpt_find(s, d->hwpt_id);

		if (h && --h->users == 0 && h->owned) {
			(void)iod_iommufd_destroy(s->ictx, h->hw.id);
			hwpt_remove(s, h);
		}
	}
	d->hwpt_id = 0;
	return -ENOMEM;
}

int iod_session_detach_device(struct iod_session *s, struct iod_device *d, struct iod_reason *why)
{
	struct iod_session_hwpt *h = hwpt_find(s, d->hwpt_id);
	size_t i;
	int r;

	for (i = 0; i < s->n_devices; i++)
		if (s->devices[i] == d)
			break;
	if (i == s->n_devices)
		return iod_reasonf(why, -ENXIO, IOD_ERROR_NO_SUCH_DEVICE,
				   "The device is not in session %s", s->name);

	if (h && h->users == 1 && s->tracking) {
		/* The HWPT goes with its last device: keep its bits. */
		if (h->hw.dirty_capable && h->hw.tracking) {
			r = harvest_hwpts(s, h, 0, 0, 0);
			if (r < 0)
				fail_harvest(s, "harvest before detaching the device", r);
		} else if (hwpt_is_fallback(s, h)) {
			r = mark_mapped(s, 0, 0);
			if (r < 0)
				iod_session_fail(s, "marking the ranges of %s failed: %s", d->name,
						 iod_strerror(r));
		}
	}

	r = iod_vfio_detach(d->fd);
	if (r < 0 && !d->lost)
		log_warning_errno(r, "Failed to detach %s, ignoring: %m", d->name);
	if (h && --h->users == 0 && h->owned) {
		r = iod_iommufd_destroy(s->ictx, h->hw.id);
		if (r < 0)
			log_warning_errno(r, "Failed to destroy hwpt %u, ignoring: %m", h->hw.id);
		hwpt_remove(s, h);
	}

	memmove(&s->devices[i], &s->devices[i + 1], (s->n_devices - i - 1) * sizeof(*s->devices));
	s->n_devices--;
	log_info("Session %s: detached %s.", s->name, d->name);
	iod_device_free(d);
	return 0;
}

/* --- properties ------------------------------------------------------------------------- */

const char *iod_session_state_string(const struct iod_session *s)
{
	if (s->failed)
		return "failed";
	if (!s->owner)
		return s->tracking ? "orphaned-tracking" : "orphaned";
	return s->tracking ? "tracking" : "idle";
}

const char *iod_session_tracking_mode_string(const struct iod_session *s)
{
	bool hw = false, fb = false;

	for (size_t i = 0; i < s->n_hwpts; i++) {
		const struct iod_session_hwpt *h = &s->hwpts[i];

		if (h->hw.dirty_capable && (h->users > 0 || s->mode == IOD_MODE_ADOPT))
			hw = true;
		else if (hwpt_is_fallback(s, h))
			fb = true;
	}
	if (hw && fb)
		return "mixed";
	if (hw)
		return "hardware";
	if (fb)
		return "fallback";
	return "none";
}

/* --- persistent state ------------------------------------------------------------------- */

static int strdup_or_null(const char *s, char **ret)
{
	if (!s) {
		*ret = NULL;
		return 0;
	}
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

int iod_session_to_state(const struct iod_session *s, struct iod_state_session *ret)
{
	struct iod_state_session st = {
		.uid = (uint32_t)s->uid,
		.mode = s->mode,
		.disconnect_policy = s->options.disconnect_policy == IOD_DISCONNECT_KEEP
					     ? IOD_STATE_DISCONNECT_KEEP
					     : IOD_STATE_DISCONNECT_DESTROY,
		.ioas_id = s->ioas_id,
		.page_shift = iod_log_page_shift(s->log),
		.rounds = iod_log_rounds(s->log),
	};
	size_t i = 0;
	int r;

	st.flags = (s->tracking ? IOD_SESSION_F_TRACKING : 0) |
		   (s->failed ? IOD_SESSION_F_FAILED : 0) |
		   (s->options.huge_pages ? IOD_SESSION_F_HUGE_PAGES : 0) |
		   (s->options.viommu ? IOD_SESSION_F_VIOMMU : 0);

	if ((r = strdup_or_null(s->name, &st.name)) < 0 ||
	    (r = strdup_or_null(s->owner, &st.owner)) < 0 ||
	    (r = strdup_or_null(s->iommufd_fdname, &st.iommufd_fdname)) < 0 ||
	    (r = strdup_or_null(s->log_fdname, &st.log_fdname)) < 0)
		goto fail;

	r = -ENOMEM;
	st.hwpts = calloc(s->n_hwpts + 1, sizeof(*st.hwpts));
	st.devices = calloc(s->n_devices + 1, sizeof(*st.devices));
	st.regions = calloc(s->n_regions + 1, sizeof(*st.regions));
	st.mappings = calloc(iod_iova_map_count(s->map) + 1, sizeof(*st.mappings));
	if (!st.hwpts || !st.devices || !st.regions || !st.mappings)
		goto fail;

	for (i = 0; i < s->n_hwpts; i++)
		st.hwpts[i] = (struct iod_state_hwpt){
			.id = s->hwpts[i].hw.id,
			.dirty_capable = s->hwpts[i].hw.dirty_capable,
			.tracking = s->hwpts[i].hw.tracking,
			.owned = s->hwpts[i].owned,
		};
	st.n_hwpts = s->n_hwpts;

	for (i = 0; i < s->n_devices; i++) {
		const struct iod_device *d = s->devices[i];
		struct iod_state_device *sd = &st.devices[st.n_devices];

		sd->index = d->index;
		sd->dev_id = d->dev_id;
		sd->hwpt_id = d->hwpt_id;
		sd->dirty_capable = hwpt_find((struct iod_session *)s, d->hwpt_id) &&
				    hwpt_find((struct iod_session *)s, d->hwpt_id)->hw.dirty_capable;
		st.n_devices++;
		if ((r = strdup_or_null(d->name, &sd->name)) < 0 ||
		    (r = strdup_or_null(d->fdname, &sd->fdname)) < 0)
			goto fail;
	}

	for (i = 0; i < s->n_regions; i++) {
		const struct iod_region *g = &s->regions[i];
		struct iod_state_region *sg = &st.regions[st.n_regions];

		sg->gpa = g->gpa;
		sg->length = g->length;
		sg->offset = g->offset;
		st.n_regions++;
		if ((r = strdup_or_null(g->fd >= 0 ? g->fdname : NULL, &sg->fdname)) < 0)
			goto fail;
	}

	for (const struct iod_mapping *p = iod_iova_map_first(s->map); p;
	     p = iod_iova_map_next(s->map, p))
		st.mappings[st.n_mappings++] = *p;

	*ret = st;
	return 0;

fail:
	iod_state_session_clear(&st);
	return r;
}

void iod_session_options_from_state(const struct iod_manager *m, const struct iod_state_session *st,
				    struct iod_session_options *ret)
{
	enum iod_disconnect_policy policy;

	switch (st->disconnect_policy) {
	case IOD_STATE_DISCONNECT_KEEP:
		policy = IOD_DISCONNECT_KEEP;
		break;
	case IOD_STATE_DISCONNECT_DESTROY:
		policy = IOD_DISCONNECT_DESTROY;
		break;
	default: /* not recorded: what the daemon that wrote the state did after a restart */
		policy = m->config.disconnect_policy;
		break;
	}
	*ret = (struct iod_session_options){
		.page_size = UINT64_C(1) << st->page_shift,
		.huge_pages = st->flags & IOD_SESSION_F_HUGE_PAGES,
		.viommu = st->flags & IOD_SESSION_F_VIOMMU,
		.disconnect_policy = policy,
	};
}

/*
 * An owner session's IOAS holds exactly the mappings its state records, unless the previous
 * instance died between an IOAS map and the state save that records it (AddMemory, Map):
 * that mapping pins memory nobody tracks and refuses the client's retry with EEXIST. No
 * ioctl lists an IOAS's areas, so unmap every gap between the recorded mappings: the kernel
 * unmaps only areas wholly inside a range (ENOENT for an empty one), and an unrecorded area
 * never overlaps a recorded one, as overlaps are refused before anything is mapped.
 */
static void unmap_unrecorded(struct iod_session *s)
{
	const struct iod_mapping *p = iod_iova_map_first(s->map);
	uint64_t at = 0, total = 0, unmapped;
	unsigned areas = 0;
	bool done = false;
	int r;

	while (!done) {
		uint64_t length;

		if (p) {
			length = p->iova - at;
		} else if (at == 0) {
			length = UINT64_MAX; /* nothing recorded: with iova 0, "everything" */
		} else {
			length = -at; /* up to the top of the address space */
		}
		done = !p;
		if (length > 0) {
			r = iod_ioas_unmap(s->ictx, s->ioas_id, at, length, &unmapped);
			if (r == 0 && unmapped > 0) {
				total += unmapped;
				areas++;
			} else if (r < 0 && r != -ENOENT) {
				log_warning_errno(r,
						  "Session %s: failed to clear IOVA [0x%" PRIx64
						  ", +0x%" PRIx64
						  ") of unrecorded mappings, ignoring: %m",
						  s->name, at, length);
			}
		}
		if (p) {
			at = p->iova + p->length;
			if (at == 0)
				break; /* the last mapping ends at the top */
			p = iod_iova_map_next(s->map, p);
		}
	}
	if (total > 0)
		log_notice(
			"Session %s: unmapped %" PRIu64
			" bytes in %u gap(s) of ioas %u that the state did not record (the previous instance died between mapping and saving).",
			s->name, total, areas, s->ioas_id);
}

int iod_session_from_state(struct iod_manager *m, const struct iod_state_session *st,
			   iod_fd_lookup_fn lookup, void *userdata, struct iod_session **ret)
{
	_cleanup_(iod_session_freep) struct iod_session *s = NULL;
	struct iod_session_options o;
	int r, fd;

	iod_session_options_from_state(m, st, &o);
	if (st->disconnect_policy == IOD_STATE_DISCONNECT_UNSET)
		log_notice(
			"Session %s: the state does not record its disconnect policy (written by an older iodirtyd), using the default \"%s\".",
			st->name, iod_disconnect_policy_to_string(o.disconnect_policy));
	r = iod_session_new(m, st->name, st->mode, (uid_t)st->uid, &o, &s);
	if (r < 0)
		return r;

	/* The dirty log, with every bit it held. */
	fd = lookup(st->log_fdname, userdata);
	if (fd < 0)
		return log_error_errno(fd, "Session %s: no fd \"%s\" for the dirty log: %m",
				       st->name, st->log_fdname);
	iod_log_free(s->log);
	s->log = NULL;
	r = iod_log_open_fd(fd, &s->log);
	if (r < 0)
		return log_error_errno(r, "Session %s: the dirty log is unusable: %m", st->name);

	/* An owner session that never needed the kernel has no iommufd (and no IOAS) yet. */
	fd = st->iommufd_fdname ? lookup(st->iommufd_fdname, userdata) : -ENOENT;
	if (fd < 0 && (st->ioas_id != 0 || st->mode == IOD_MODE_ADOPT))
		return log_error_errno(fd, "Session %s: no iommufd \"%s\": %m", st->name,
				       st->iommufd_fdname ? st->iommufd_fdname : "(none)");
	if (fd >= 0) {
		r = iod_iommufd_adopt(fd, &s->ictx);
		if (r < 0)
			return log_error_errno(r, "Session %s: the iommufd is unusable: %m",
					       st->name);
		s->ioas_id = st->ioas_id;
	}

	if (st->n_hwpts > 0) {
		s->hwpts = calloc(st->n_hwpts, sizeof(*s->hwpts));
		if (!s->hwpts)
			return -ENOMEM;
	}
	for (size_t i = 0; i < st->n_hwpts; i++)
		s->hwpts[s->n_hwpts++] = (struct iod_session_hwpt){
			.hw = {.id = st->hwpts[i].id,
			       .dirty_capable = st->hwpts[i].dirty_capable,
			       .tracking = st->hwpts[i].tracking},
			.owned = st->hwpts[i].owned,
		};

	if (st->n_regions > 0) {
		s->regions = calloc(st->n_regions, sizeof(*s->regions));
		if (!s->regions)
			return -ENOMEM;
	}
	for (size_t i = 0; i < st->n_regions; i++) {
		const struct iod_state_region *sg = &st->regions[i];
		struct iod_region *g = &s->regions[s->n_regions];

		*g = (struct iod_region){
			.gpa = sg->gpa, .length = sg->length, .offset = sg->offset, .fd = -EBADF};
		s->n_regions++;
		s->log_bytes += 2 * iod_bitmap_bytes(sg->length / o.page_size);
		if (!sg->fdname)
			continue;
		fd = lookup(sg->fdname, userdata);
		if (fd < 0)
			return log_error_errno(fd, "Session %s: no memory fd \"%s\": %m", st->name,
					       sg->fdname);
		g->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (g->fd < 0)
			return -errno;
		g->va = mmap(NULL, g->length, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd,
			     (off_t)g->offset);
		if (g->va == MAP_FAILED) {
			g->va = NULL;
			return log_error_errno(errno, "Session %s: failed to map memory \"%s\": %m",
					       st->name, sg->fdname);
		}
		r = fdname_new(&g->fdname, s, "mem/%" PRIx64, g->gpa);
		if (r < 0)
			return r;
		/* The IOAS kept its mappings: the kernel pinned this very memory. */
		g->mapped = !o.viommu;
	}

	for (size_t i = 0; i < st->n_mappings; i++) {
		r = iod_iova_map_insert(s->map, st->mappings[i].iova, st->mappings[i].gpa,
					st->mappings[i].length);
		if (r < 0)
			return log_error_errno(r, "Session %s: bad mapping: %m", st->name);
	}

	if (st->n_devices > 0) {
		s->devices = calloc(st->n_devices, sizeof(*s->devices));
		if (!s->devices)
			return -ENOMEM;
	}
	for (size_t i = 0; i < st->n_devices; i++) {
		const struct iod_state_device *sd = &st->devices[i];
		_cleanup_(iod_device_freep) struct iod_device *d = NULL;
		struct iod_session_hwpt *h;

		if (!sd->fdname)
			continue;
		fd = lookup(sd->fdname, userdata);
		if (fd < 0)
			return log_error_errno(fd, "Session %s: no device fd \"%s\": %m", st->name,
					       sd->fdname);
		d = calloc(1, sizeof(*d));
		if (!d)
			return -ENOMEM;
		d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (d->fd < 0)
			return -errno;
		d->session = s;
		d->index = sd->index;
		d->dev_id = sd->dev_id;
		d->hwpt_id = sd->hwpt_id;
		d->bound = true;
		d->hw.dirty_tracking = sd->dirty_capable;
		/* What the device offers is not recorded: ask the kernel again, as at attach (the
		 * fd is still bound to the session's iommufd). */
		r = s->ictx ? iod_iommufd_hw_info(s->ictx, d->dev_id, &d->hw) : -EBADF;
		if (r < 0)
			log_warning_errno(
				r,
				"Session %s: cannot read the IOMMU capabilities of restored "
				"device %u again, keeping what the state says: %m",
				st->name, d->index);
		if (iod_vfio_probe_features(d->fd, &d->features) < 0)
			d->features = (struct iod_vfio_features){};
		if (strdup_or_null(sd->name, &d->name) < 0 ||
		    asprintf(&d->path, "%s/device/%" PRIu32, s->path, d->index) < 0 ||
		    fdname_new(&d->fdname, s, "dev/%" PRIu32, d->index) < 0)
			return -ENOMEM;
		if (d->name[0] == '/' && strdup_or_null(d->name, &d->cdev) < 0)
			return -ENOMEM;
		if (!d->cdev && iod_vfio_fd_cdev_path(d->fd, &d->cdev) < 0)
			d->cdev = NULL; /* a PCI address or a passed fd sysfs cannot name */
		h = hwpt_find(s, d->hwpt_id);
		if (h)
			h->users++;
		if (d->index >= s->next_device_index)
			s->next_device_index = d->index + 1;
		s->devices[s->n_devices++] = TAKE_PTR(d);
	}

	s->tracking = st->flags & IOD_SESSION_F_TRACKING;
	s->failed = st->flags & IOD_SESSION_F_FAILED;
	if (s->failed)
		s->failure = strdup("the log was incomplete before the daemon restarted");
	s->round_pending = iod_log_count_round(s->log) > 0;
	s->last_round_usec = iod_now_usec();
	if (s->mode == IOD_MODE_OWNER && s->ictx && s->ioas_id)
		unmap_unrecorded(s);

	*ret = TAKE_PTR(s);
	return 0;
}
