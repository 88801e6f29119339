/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A session's guest memory (AddMemory in owner mode, AddRegion in adopt mode) and its
 * devices, each attached to a HWPT of the session's IOAS.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <linux/magic.h>

#include "context.h"
#include "logging.h"
#include "session-internal.h"

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

struct iod_region *iod_session_region_containing(struct iod_session *s, uint64_t gpa,
						 uint64_t length)
{
	for (size_t i = 0; i < s->n_regions; i++) {
		struct iod_region *g = &s->regions[i];

		if (gpa >= g->gpa && gpa - g->gpa <= g->length &&
		    length <= g->length - (gpa - g->gpa))
			return g;
	}
	return NULL;
}

/* Bytes of dirty log (both planes) of the sessions of uid: limited per uid. */
static uint64_t log_bytes_of(const struct iod_context *c, uid_t uid)
{
	uint64_t n = 0;

	for (size_t i = 0; i < c->n_sessions; i++)
		if (c->sessions[i]->uid == uid)
			n += c->sessions[i]->log_bytes;
	return n;
}

/* Arguments of a new region, before anything changes. */
static int check_region(struct iod_session *s, uint64_t gpa, uint64_t size, uint64_t *ret_bytes,
			struct iod_reason *why)
{
	const struct iod_limits *l = &s->ctx->config.limits;
	uint64_t end = gpa + size, bytes;
	int r;

	r = iod_session_check_range(s, "gpa", gpa, size, why);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->n_regions; i++) {
		const struct iod_region *g = &s->regions[i];

		if (gpa < g->gpa + g->length && g->gpa < end)
			return iod_reasonf(why, -EEXIST, IOD_ERROR_INVALID_RANGE,
					   "[0x%" PRIx64 ", 0x%" PRIx64
					   ") overlaps guest memory [0x%" PRIx64 ", 0x%" PRIx64 ")",
					   gpa, end, g->gpa, g->gpa + g->length);
	}
	r = iod_limits_check_regions(l, s->name, s->n_regions, why);
	if (r < 0)
		return r;
	bytes = 2 * iod_bitmap_bytes(size / s->options.page_size);
	r = iod_limits_check_log_bytes(l, s->name, s->uid, s->log_bytes,
				       s->uid != 0 ? log_bytes_of(s->ctx, s->uid) : 0, bytes, why);
	if (r < 0)
		return r;
	/* Without a vIOMMU IOVA = GPA: the region is also a mapping. */
	if (!s->options.viommu) {
		r = iod_limits_check_one_mapping(l, s->name, iod_iova_map_count(s->map), why);
		if (r < 0)
			return r;
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

/* --- device DMA logging follows the mappings ---------------------------------------------- */

/* d logs DMA (or is to, once something is mapped) and some fresh entry of maps lies outside
 * the ranges it logs. */
static bool devlog_must_follow(const struct iod_session *s, const struct iod_device *d,
			       const struct iod_mapping *maps, const bool *recorded, size_t n)
{
	if (!s->tracking || d->source != IOD_SOURCE_DEVICE_LOG || d->lost)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!recorded[i] && !iod_session_devlog_covers(d, maps[i].iova, maps[i].length))
			return true;
	return false;
}

/* Before maps enter the IOAS (session-internal.h). A device cannot change its ranges while
 * it logs, so it is read out, stopped and started again over more; what it wrote between
 * the read and the start is seen by nobody, so the mapped parts of its old ranges are marked
 * dirty. The new mappings are logged before they exist: no DMA can reach them unseen. */
void iod_session_devlog_prepare_map(struct iod_session *s, const struct iod_mapping *maps,
				    const bool *recorded, size_t n)
{
	for (size_t k = 0; k < s->n_devices; k++) {
		struct iod_device *d = s->devices[k];
		_cleanup_free_ struct iod_range *old = NULL;
		struct iod_reason why = {};
		size_t n_old = d->n_log_ranges;
		int r;

		if (!devlog_must_follow(s, d, maps, recorded, n))
			continue;
		if (d->logging && n_old > 0) {
			old = malloc(n_old * sizeof(*old));
			if (!old) {
				iod_session_fail(s,
						 "restarting the DMA logging of %s: out of memory",
						 d->name);
				continue;
			}
			memcpy(old, d->log_ranges, n_old * sizeof(*old));
			r = iod_session_harvest_device(s, d);
			if (r < 0)
				iod_session_fail_harvest(s, "reading the DMA log before a map", r);
		} else {
			n_old = 0;
		}
		r = iod_session_devlog_start(s, d, true, maps, recorded, n, &why);
		if (r < 0) {
			/* Its log stopped: a fallback from now on, and everything mapped counts
			 * (the maps coming are marked by every later round). */
			iod_session_devlog_degrade(s, d, why.text[0] ? why.text : iod_strerror(r));
			r = iod_session_mark_mapped(s, 0, 0);
			if (r < 0)
				iod_session_fail(s, "marking the ranges of %s failed: %s", d->name,
						 iod_strerror(r));
			continue;
		}
		for (size_t i = 0; i < n_old; i++) {
			r = iod_session_mark_mapped(s, old[i].start, old[i].length);
			if (r < 0) {
				iod_session_fail(s, "marking the ranges of %s failed: %s", d->name,
						 iod_strerror(r));
				break;
			}
		}
		log_info("Session %s: DMA logging of %s follows the mappings: %zu ranges now, "
			 "%zu marked dirty while it restarted.",
			 s->name, d->name, d->n_log_ranges, n_old);
	}
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
		r = iod_session_ensure_kernel(s, why);
		if (r < 0)
			return r;
	}
	r = regions_grow(s);
	if (r < 0)
		return r;

	g.fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (g.fd < 0)
		return iod_reason_kernel(why, -errno, "Failed to duplicate the memory fd");
	r = iod_session_fdname_new(&g.fdname, s, "mem/%" PRIx64, gpa);
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
		const struct iod_mapping m = {.iova = gpa, .gpa = gpa, .length = size};
		const bool recorded = false;

		iod_session_devlog_prepare_map(s, &m, &recorded, 1);
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
	iod_region_release(&g);
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
	return iod_limits_check_devices(&s->ctx->config.limits, s->name, s->n_devices, why);
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

/* Undo what attach did with d's HWPT (or with the IOAS, for a device without one). */
static void vfio_detach(struct iod_device *d)
{
	int r = iod_vfio_detach(d->fd);

	if (r < 0 && !d->lost)
		log_warning_errno(r, "Failed to detach %s, ignoring: %m", d->name);
}

/* d is detached: let go of its HWPT (destroyed with its last device). */
static void release_hwpt(struct iod_session *s, struct iod_device *d)
{
	struct iod_session_hwpt *h = iod_session_hwpt_find(s, d->hwpt_id);
	int r;

	if (h && d->source == IOD_SOURCE_DEVICE_LOG)
		h->log_users--;
	if (h && --h->users == 0 && h->owned) {
		r = iod_iommufd_destroy(s->ictx, h->hw.id);
		if (r < 0)
			log_warning_errno(r, "Failed to destroy hwpt %u, ignoring: %m", h->hw.id);
		iod_session_hwpt_remove(s, h);
	}
	d->hwpt_id = 0;
}

static void detach_from_hwpt(struct iod_session *s, struct iod_device *d)
{
	vfio_detach(d);
	release_hwpt(s, d);
}

/* d's source as choice asks, before anything is attached: NotDirtyCapable for a source the
 * device does not have. The IOMMU may still refuse a dirty HWPT (attach_device()). */
static int choose_source(struct iod_session *s, struct iod_device *d, enum iod_source_choice choice,
			 struct iod_reason *why)
{
	bool iommu = d->hw.dirty_tracking && !d->emulated, log = d->features.dma_logging;

	switch (choice) {
	case IOD_CHOOSE_AUTO:
		d->source = iommu ? IOD_SOURCE_IOMMU
			    : log ? IOD_SOURCE_DEVICE_LOG
				  : IOD_SOURCE_FALLBACK;
		return 0;
	case IOD_CHOOSE_IOMMU:
		if (!iommu)
			return iod_reasonf(
				why, -EOPNOTSUPP, IOD_ERROR_NOT_DIRTY_CAPABLE,
				d->emulated ? "%s has no IOMMU of its own (dirty_source \"iommu\")"
					    : "The IOMMU of %s cannot track dirty pages "
					      "(dirty_source \"iommu\")",
				d->name);
		d->source = IOD_SOURCE_IOMMU;
		d->source_explicit = true;
		return 0;
	case IOD_CHOOSE_DEVICE:
		d->source_explicit = true;
		if (!log)
			return iod_reasonf(why, -EOPNOTSUPP, IOD_ERROR_NOT_DIRTY_CAPABLE,
					   "%s does not log its DMA (no VFIO DMA logging; "
					   "dirty_source \"device\")",
					   d->name);
		d->source = IOD_SOURCE_DEVICE_LOG;
		return 0;
	case IOD_CHOOSE_NONE:
		d->source = IOD_SOURCE_FALLBACK;
		return 0;
	}
	return -EINVAL;
}

/* A device that is not on a dirty HWPT: on a plain HWPT, or (no IOMMU) on the IOAS. */
static int attach_plain(struct iod_session *s, struct iod_device *d, struct iod_reason *why)
{
	struct iod_session_hwpt *h;
	int r;

	if (d->emulated) {
		/* An iommufd access: VFIO reads and writes guest memory for the device through
		 * the IOAS's mappings; there is no HWPT. */
		r = iod_vfio_attach(d->fd, s->ioas_id, NULL);
		if (r < 0)
			return iod_reason_kernel(why, r, "Failed to attach %s to ioas %u", d->name,
						 s->ioas_id);
		d->hwpt_id = 0;
		return 0;
	}
	r = attach_to_hwpt(s, d, false, why);
	if (r < 0)
		return r;
	h = iod_session_hwpt_find(s, d->hwpt_id);
	if (h && d->source == IOD_SOURCE_DEVICE_LOG)
		h->log_users++;
	return 0;
}

/* Attach d as its source says: a dirty HWPT, or a plain one, or (no IOMMU) the IOAS. */
static int attach_device(struct iod_session *s, struct iod_device *d, enum iod_source_choice choice,
			 struct iod_reason *why)
{
	int r;

	if (d->source == IOD_SOURCE_IOMMU) {
		r = attach_to_hwpt(s, d, true, why);
		if (r != -EOPNOTSUPP)
			return r;
		if (choice == IOD_CHOOSE_IOMMU)
			return iod_reasonf(
				why, r, IOD_ERROR_NOT_DIRTY_CAPABLE,
				"The IOMMU of %s refused a dirty tracking HWPT (dirty_source \"iommu\")",
				d->name);
		d->source = d->features.dma_logging ? IOD_SOURCE_DEVICE_LOG : IOD_SOURCE_FALLBACK;
		log_info("Session %s: the IOMMU of %s refused a dirty tracking HWPT, using %s.",
			 s->name, d->name,
			 d->source == IOD_SOURCE_DEVICE_LOG ? "the device's DMA log"
							    : "the fallback");
	}
	if (s->tracking && d->source == IOD_SOURCE_DEVICE_LOG) {
		/* Logging before the device can reach guest memory: none of its writes goes
		 * unseen. */
		r = iod_session_devlog_start(s, d, false, NULL, NULL, 0, why);
		if (r < 0 && d->source_explicit)
			return r;
		if (r < 0) {
			/* "auto": the fallback, which the harvest marks every round. */
			log_warning("Session %s: %s: %s; using the fallback.", s->name, d->name,
				    why->text);
			*why = (struct iod_reason){};
			d->source = IOD_SOURCE_FALLBACK;
		}
	}
	r = attach_plain(s, d, why);
	if (r < 0)
		iod_session_devlog_stop(s, d);
	return r;
}

int iod_session_attach_device(struct iod_session *s, struct iod_device *d,
			      enum iod_source_choice choice, struct iod_reason *why)
{
	struct iod_device **p;
	int r;

	r = iod_session_check_device_limit(s, why);
	if (r < 0)
		return r;
	r = iod_session_ensure_kernel(s, why);
	if (r < 0)
		return r;

	p = realloc(s->devices, (s->n_devices + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	s->devices = p;

	r = iod_device_bind(d, s->ictx, why);
	if (r < 0)
		return r;
	r = choose_source(s, d, choice, why);
	if (r < 0)
		return r;
	r = attach_device(s, d, choice, why);
	if (r < 0)
		return r;

	d->session = s;
	d->index = s->next_device_index++;
	r = asprintf(&d->path, "%s/device/%" PRIu32, s->path, d->index);
	if (r < 0) {
		d->path = NULL;
		goto fail;
	}
	r = iod_session_fdname_new(&d->fdname, s, "dev/%" PRIu32, d->index);
	if (r < 0)
		goto fail;
	s->devices[s->n_devices++] = d;
	log_info("Session %s: attached %s (dev %u) to %s %u, dirty pages from %s.", s->name,
		 d->name, d->dev_id, d->emulated ? "ioas" : "hwpt",
		 d->emulated ? s->ioas_id : d->hwpt_id,
		 d->source == IOD_SOURCE_IOMMU	      ? "the IOMMU"
		 : d->source == IOD_SOURCE_DEVICE_LOG ? "the device's DMA log"
						      : "nowhere: fallback (always dirty)");
	return 0;

fail:
	iod_session_devlog_stop(s, d);
	detach_from_hwpt(s, d);
	return -ENOMEM;
}

int iod_session_detach_device(struct iod_session *s, struct iod_device *d, struct iod_reason *why)
{
	struct iod_session_hwpt *h = iod_session_hwpt_find(s, d->hwpt_id);
	size_t i;
	int r;

	for (i = 0; i < s->n_devices; i++)
		if (s->devices[i] == d)
			break;
	if (i == s->n_devices)
		return iod_reasonf(why, -ENXIO, IOD_ERROR_NO_SUCH_DEVICE,
				   "The device is not in session %s", s->name);

	/* First the device stops reaching guest memory: all it wrote is then in its log, in
	 * its HWPT's bits, or (fallback) in the mapped ranges, and is taken below. */
	vfio_detach(d);
	if (d->logging) {
		r = iod_session_harvest_device(s, d);
		if (r < 0) {
			/* Unreadable (it may be gone): all it could reach counts as written. */
			log_warning_errno(r,
					  "Session %s: cannot read the DMA log of %s (%m), marking "
					  "every mapped page.",
					  s->name, d->name);
			r = iod_session_mark_mapped(s, 0, 0);
			if (r < 0)
				iod_session_fail(s, "marking the ranges of %s failed: %s", d->name,
						 iod_strerror(r));
		}
	}
	iod_session_devlog_stop(s, d);
	if (s->tracking && d->source == IOD_SOURCE_FALLBACK) {
		/* Also when it shares a plain HWPT with a logging device, which stops being a
		 * fallback once this one leaves. */
		r = iod_session_mark_mapped(s, 0, 0);
		if (r < 0)
			iod_session_fail(s, "marking the ranges of %s failed: %s", d->name,
					 iod_strerror(r));
	}
	if (h && h->users == 1 && s->tracking && h->hw.dirty_capable && h->hw.tracking) {
		/* The HWPT goes with its last device: keep its bits. */
		r = iod_session_harvest_hwpts(s, h, 0, 0, 0);
		if (r < 0)
			iod_session_fail_harvest(s, "harvest before detaching the device", r);
	}
	release_hwpt(s, d);

	memmove(&s->devices[i], &s->devices[i + 1], (s->n_devices - i - 1) * sizeof(*s->devices));
	s->n_devices--;
	log_info("Session %s: detached %s.", s->name, d->name);
	iod_device_free(d);
	return 0;
}

/* MarkDirty (session.h): ranges the client wrote itself, every one checked, then marked. */
static int mark_check(struct iod_session *s, uint64_t gpa, uint64_t size, struct iod_reason *why)
{
	int r;

	r = iod_session_check_range(s, "gpa", gpa, size, why);
	if (r < 0)
		return r;
	if (!iod_session_region_containing(s, gpa, size))
		return iod_reasonf(why, -ERANGE, IOD_ERROR_INVALID_RANGE,
				   "GPA range [0x%" PRIx64 ", +0x%" PRIx64
				   ") is not inside one region of session %s",
				   gpa, size, s->name);
	return 0;
}

int iod_session_mark_batch(struct iod_session *s, const char *array, const struct iod_range *ranges,
			   size_t n, struct iod_reason *why)
{
	int r;

	r = iod_session_mark_begin(s, why);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = mark_check(s, ranges[i].start, ranges[i].length, why);
		if (r < 0)
			return iod_session_reason_at(why, r, array, i);
	}
	for (size_t i = 0; i < n; i++) {
		r = iod_log_mark(s->log, ranges[i].start, ranges[i].length);
		if (r < 0) {
			/* Not after the checks (the log covers every region); should it happen,
			 * the ranges before this one stay marked: reported, never lost. */
			r = iod_reason_kernel(why, r,
					      "Failed to mark GPA [0x%" PRIx64 ", +0x%" PRIx64 ")",
					      ranges[i].start, ranges[i].length);
			return iod_session_reason_at(why, r, array, i);
		}
	}
	return 0;
}
