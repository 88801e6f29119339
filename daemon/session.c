/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A session's lifecycle: creation, the owner, the kernel context (opened lazily in owner
 * mode, taken over in adopt mode), failure, release, and the strings its state shows.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bus-signals.h"
#include "context.h"
#include "journal.h"
#include "rate.h"
#include "logging.h"
#include "session-internal.h"

const char *iod_session_mode_to_string(enum iod_session_mode mode)
{
	return mode == IOD_MODE_ADOPT ? "adopt" : "owner";
}

int iod_session_fdname_new(char **ret, const struct iod_session *s, const char *format, ...)
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

int iod_session_new(struct iod_context *c, const char *name, enum iod_session_mode mode, uid_t uid,
		    const struct iod_session_options *options, struct iod_session **ret)
{
	_cleanup_(iod_session_freep) struct iod_session *s = NULL;
	int r;

	if (!iod_session_name_valid(name) || !iod_page_size_valid(options->page_size))
		return -EINVAL;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ctx = c;
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
	r = iod_session_fdname_new(&s->log_fdname, s, "log");
	if (r < 0)
		return r;
	r = iod_session_fdname_new(&s->journal_fdname, s, "journal");
	if (r < 0)
		return r;
	/* Named from the start: an owner session opens it only when first needed. */
	r = iod_session_fdname_new(&s->iommufd_fdname, s, "iommufd");
	if (r < 0)
		return r;

	*ret = TAKE_PTR(s);
	return 0;
}

void iod_region_release(struct iod_region *g)
{
	if (g->va && g->va != MAP_FAILED)
		munmap(g->va, g->length);
	g->va = NULL;
	g->fd = iod_close(g->fd);
	free(g->fdname);
	g->fdname = NULL;
}

struct iod_session_hwpt *iod_session_hwpt_find(struct iod_session *s, uint32_t id)
{
	for (size_t i = 0; i < s->n_hwpts; i++)
		if (s->hwpts[i].hw.id == id)
			return &s->hwpts[i];
	return NULL;
}

void iod_session_hwpt_remove(struct iod_session *s, struct iod_session_hwpt *h)
{
	size_t i = (size_t)(h - s->hwpts);

	memmove(&s->hwpts[i], &s->hwpts[i + 1], (s->n_hwpts - i - 1) * sizeof(*h));
	s->n_hwpts--;
}

/* --- release ---------------------------------------------------------------------------- */

struct iod_session *iod_session_free(struct iod_session *s)
{
	if (!s)
		return NULL;

	/* First what the layer above hangs on the session: a harvest thread before anything
	 * it reads goes. */
	if (s->release_worker)
		s->release_worker(s);
	if (s->release_sampler)
		s->release_sampler(s);
	s->rate = iod_rate_free(s->rate);
	if (s->close_channel)
		s->close_channel(s);
	/* Reverse order of setup: devices, HWPTs, mappings, IOAS, memory, context. */
	for (size_t i = s->n_devices; i > 0; i--) {
		struct iod_device *d = s->devices[i - 1];

		if (d->logging && !s->keep_kernel)
			(void)iod_vfio_log_stop(d->fd);
		if ((d->hwpt_id || d->emulated) && s->ictx && !s->keep_kernel) {
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
		iod_region_release(&s->regions[i - 1]);
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

/* --- owner ------------------------------------------------------------------------------ */

bool iod_session_owner_left(struct iod_session *s)
{
	log_info("Owner %s of session %s left the bus.", s->owner ? s->owner : "(none)", s->name);
	free(s->owner);
	s->owner = NULL;

	if (s->options.disconnect_policy == IOD_DISCONNECT_DESTROY) {
		log_info("Destroying session %s (disconnect policy \"destroy\").", s->name);
		return true;
	}

	log_info("Keeping session %s for uid %u (disconnect policy \"keep\").", s->name,
		 (unsigned)s->uid);
	return false;
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

int iod_session_ensure_kernel(struct iod_session *s, struct iod_reason *why)
{
	const char *path = s->ctx->config.iommufd_path;
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
	struct iod_context *c = s->ctx;
	enum iod_hole_behavior b;
	uint64_t hole, length;
	int r;

	if (c->holes != IOD_HOLES_UNKNOWN || !s->ictx || !s->ioas_id)
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
		c->holes = b;
		(void)iod_bus_emit_manager_changed(c, "KernelHoleBehavior", NULL);
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
	if (s->options.nested && n_hwpts == 0)
		return iod_reasonf(
			why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
			"A nested session needs its nest parent: name it as hwpt_ids[0]");

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

		if (s->options.nested && i > 0) {
			/* A nested child: it has no dirty bits of its own (the parent has them). */
			r = iod_hwpt_is_nested(ictx, hwpt_ids[i]);
			if (r <= 0) {
				iod_iommufd_free(ictx);
				if (r == 0)
					return iod_reasonf(
						why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
						"hwpt_ids[%zu]: object %u of the passed iommufd is not a nested HWPT (in a nested session hwpt_ids[0] is the nest parent, the others its nested children)",
						i, hwpt_ids[i]);
				return iod_reason_kernel(why, r, "Failed to look at hwpt %u",
							 hwpt_ids[i]);
			}
			hwpts[i] = (struct iod_session_hwpt){
				.hw = {.id = hwpt_ids[i]},
				.parent_id = hwpt_ids[0],
			};
			continue;
		}
		r = hwpt_probe(ictx, hwpt_ids[i], s->options.page_size, &capable);
		if (r < 0) {
			iod_iommufd_free(ictx);
			if (r == -ENOENT)
				return iod_reasonf(why, -EINVAL, SD_BUS_ERROR_INVALID_ARGS,
						   "Object %u of the passed iommufd is not a HWPT",
						   hwpt_ids[i]);
			return iod_reason_kernel(why, r, "Failed to look at hwpt %u", hwpt_ids[i]);
		}
		if (!capable && s->options.nested) {
			iod_iommufd_free(ictx);
			return iod_reasonf(
				why, -EOPNOTSUPP, IOD_ERROR_NOT_DIRTY_CAPABLE,
				"hwpt_ids[0]: hwpt %u cannot track dirty pages: a nested session needs a nest parent allocated with IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING (ProbeDevice says whether the IOMMU can: nest_parent_dirty_tracking)",
				hwpt_ids[i]);
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

/* --- HWPT kinds ------------------------------------------------------------------------- */

/* A HWPT that cannot track but carries DMA: its mapped ranges count as always dirty. */
bool iod_session_hwpt_is_fallback(const struct iod_session *s, const struct iod_session_hwpt *h)
{
	/* A nested HWPT's DMA goes through its nest parent, which has the dirty bits. */
	if (h->parent_id)
		return false;
	return !h->hw.dirty_capable && (h->users > h->log_users || s->mode == IOD_MODE_ADOPT);
}

/* A device without an IOMMU or a DMA log: it is on no HWPT, so ask it. */
static bool device_is_fallback(const struct iod_device *d)
{
	return d->emulated && d->source == IOD_SOURCE_FALLBACK;
}

bool iod_session_has_fallback(const struct iod_session *s)
{
	for (size_t i = 0; i < s->n_hwpts; i++)
		if (iod_session_hwpt_is_fallback(s, &s->hwpts[i]))
			return true;
	for (size_t i = 0; i < s->n_devices; i++)
		if (device_is_fallback(s->devices[i]))
			return true;
	return false;
}

size_t iod_session_find_gone_fallbacks(struct iod_session *s)
{
	size_t n = 0;

	if (s->mode != IOD_MODE_ADOPT)
		return 0;
	for (size_t i = 0; i < s->n_hwpts; i++) {
		struct iod_session_hwpt *h = &s->hwpts[i];
		bool capable;

		/* ENOENT: no HWPT has the id. Whatever has it now (ids are reused), it is not
		 * the HWPT the client named, which is gone. */
		h->gone = iod_session_hwpt_is_fallback(s, h) &&
			  hwpt_probe(s->ictx, h->hw.id, s->options.page_size, &capable) == -ENOENT;
		n += h->gone;
	}
	return n;
}

size_t iod_session_drop_gone_fallbacks(struct iod_session *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_hwpts;) {
		struct iod_session_hwpt *h = &s->hwpts[i];

		if (!h->gone) {
			i++;
			continue;
		}
		log_info("Session %s: hwpt %u no longer exists: its devices left it, and its "
			 "mappings no longer count as always dirty.",
			 s->name, h->hw.id);
		iod_session_hwpt_remove(s, h);
		n++;
	}
	return n;
}

/* --- failure ---------------------------------------------------------------------------- */

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
	(void)iod_bus_emit_session_failed(s->ctx, s->path, s->failure);
	(void)iod_bus_emit_session_changed(s->ctx, s->path, "State", "LogComplete", "FailureReason",
					   NULL);
}

bool iod_session_log_complete(const struct iod_session *s)
{
	return !(iod_log_flags(s->log) & IOD_LOG_F_INCOMPLETE);
}

int iod_session_reason_at(struct iod_reason *why, int err, const char *array, size_t i)
{
	char text[sizeof(why->text)];

	if (!why)
		return err;
	why->entry_plus_one = i + 1;
	if (!array)
		return err;
	if (snprintf(text, sizeof(text), "%s[%zu]: %s", array, i, why->text) >= 0)
		memcpy(why->text, text, sizeof(text));
	return err;
}

int iod_session_check_failed(struct iod_session *s, struct iod_reason *why)
{
	if (!s->failed)
		return 0;
	return iod_reasonf(why, -EIO, IOD_ERROR_SESSION_FAILED,
			   "Session %s failed, its dirty log is incomplete: %s", s->name,
			   s->failure ? s->failure : "unknown reason");
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

		/* A nest parent carries the DMA of the devices on its children. */
		if (h->hw.dirty_capable &&
		    (h->users > 0 || s->mode == IOD_MODE_ADOPT || s->options.nested))
			hw = true;
		else if (iod_session_hwpt_is_fallback(s, h))
			fb = true;
	}
	/* A device logging its own DMA is as exact as a dirty HWPT. */
	for (size_t i = 0; i < s->n_devices; i++) {
		if (s->devices[i]->source == IOD_SOURCE_DEVICE_LOG)
			hw = true;
		else if (device_is_fallback(s->devices[i]))
			fb = true;
	}
	if (hw && fb)
		return "mixed";
	if (hw && s->options.nested)
		return "nested";
	if (hw)
		return "hardware";
	if (fb)
		return "fallback";
	return "none";
}
