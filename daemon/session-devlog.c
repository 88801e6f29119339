/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Device DMA logging as a session's dirty source: which IOVA ranges a logging device is
 * started over, and starting and stopping it. Reading its log is the harvest's
 * (session-harvest.c); changing its ranges under a vIOMMU is Map's (session-viommu.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bus-signals.h"
#include "logging.h"
#include "session-internal.h"

static int cmp_range(const void *a, const void *b)
{
	const struct iod_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Sort and join overlapping or touching ranges in place; the new count. */
static size_t normalize(struct iod_range *r, size_t n)
{
	size_t out = 0;

	if (n == 0)
		return 0;
	qsort(r, n, sizeof(*r), cmp_range);
	for (size_t i = 1; i < n; i++) {
		uint64_t end = r[out].start + r[out].length;

		if (r[i].start <= end) {
			if (r[i].start + r[i].length > end)
				r[out].length = r[i].start + r[i].length - r[out].start;
		} else {
			r[++out] = r[i];
		}
	}
	return out + 1;
}

/* The session's mapped IOVA, plus (keep_old) the ranges d logs now, plus the IOVA of the
 * maps not recorded yet, normalized. */
static int wanted_ranges(struct iod_session *s, const struct iod_device *d, bool keep_old,
			 const struct iod_mapping *maps, const bool *recorded, size_t n_maps,
			 struct iod_range **ret, size_t *ret_n)
{
	size_t n = 0, cap = (keep_old ? d->n_log_ranges : 0) + n_maps;
	struct iod_range *r;

	for (const struct iod_mapping *p = iod_iova_map_first(s->map); p;
	     p = iod_iova_map_next(s->map, p))
		cap++;
	r = calloc(cap ? cap : 1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (const struct iod_mapping *p = iod_iova_map_first(s->map); p;
	     p = iod_iova_map_next(s->map, p))
		r[n++] = (struct iod_range){p->iova, p->length};
	if (keep_old)
		for (size_t i = 0; i < d->n_log_ranges; i++)
			r[n++] = d->log_ranges[i];
	for (size_t i = 0; i < n_maps; i++)
		if (!recorded || !recorded[i])
			r[n++] = (struct iod_range){maps[i].iova, maps[i].length};
	*ret_n = normalize(r, n);
	*ret = r;
	return 0;
}

bool iod_session_devlog_covers(const struct iod_device *d, uint64_t iova, uint64_t length)
{
	if (!d->logging)
		return false;
	for (size_t i = 0; i < d->n_log_ranges; i++) {
		const struct iod_range *r = &d->log_ranges[i];

		if (iova >= r->start && iova + length <= r->start + r->length)
			return true;
	}
	return false;
}

int iod_session_devlog_start(struct iod_session *s, struct iod_device *d, bool keep_old,
			     const struct iod_mapping *maps, const bool *recorded, size_t n_maps,
			     struct iod_reason *why)
{
	uint64_t want_page = UINT64_C(1) << iod_log_page_shift(s->log), page;
	_cleanup_free_ struct iod_range *r = NULL;
	size_t n, k;
	int ret;

	if (d->logging && !keep_old)
		return 0;
	ret = wanted_ranges(s, d, keep_old, maps, recorded, n_maps, &r, &n);
	if (ret < 0)
		return ret;
	/* Restarting (the caller read the log out), or starting a device whose log may still
	 * run from before (a daemon that died between starting it and saving its state): a
	 * device refuses a second start, and what an old log holds is not the session's. */
	(void)iod_vfio_log_stop(d->fd);
	d->logging = false;
	if (n == 0)
		/* Nothing is mapped, so the device cannot write: it starts at the first Map. */
		return 0;
	if (d->log_max_ranges == 0)
		d->log_max_ranges = IOD_VFIO_LOG_MAX_RANGES;

	for (;;) {
		/* Merged in place: a retry merges the merged set further (the same as merging
		 * the original set to the smaller count). */
		k = iod_vfio_log_merge_ranges(r, n, d->log_max_ranges);
		n = k;
		page = want_page;
		ret = iod_vfio_log_start(d->fd, r, k, &page);
		if (ret != -E2BIG || d->log_max_ranges == 1)
			break;
		/* The device takes fewer ranges than Linux does: join more gaps. */
		d->log_max_ranges = k / 2 ? k / 2 : 1;
		log_debug("Session %s: %s takes fewer than %zu logging ranges, trying %zu.",
			  s->name, d->name, k, d->log_max_ranges);
	}
	if (ret < 0)
		return iod_reason_kernel(why, ret, "Failed to start the DMA logging of %s",
					 d->name);
	if (page != want_page) {
		(void)iod_vfio_log_stop(d->fd);
		return iod_reasonf(why, -EOPNOTSUPP, IOD_ERROR_NOT_DIRTY_CAPABLE,
				   "%s logs DMA in pages of %" PRIu64
				   " bytes, not in the session's pages of %" PRIu64,
				   d->name, page, want_page);
	}

	free(d->log_ranges);
	d->log_ranges = realloc(r, k * sizeof(*r));
	if (!d->log_ranges)
		d->log_ranges = r;
	r = NULL;
	d->n_log_ranges = k;
	d->log_page_size = page;
	d->logging = true;
	log_debug("Session %s: DMA logging of %s started over %zu ranges.", s->name, d->name, k);
	return 0;
}

void iod_session_devlog_degrade(struct iod_session *s, struct iod_device *d, const char *why)
{
	struct iod_session_hwpt *h = iod_session_hwpt_find(s, d->hwpt_id);

	if (d->source != IOD_SOURCE_DEVICE_LOG)
		return;
	iod_session_devlog_stop(s, d);
	if (h)
		h->log_users--;
	d->source = IOD_SOURCE_FALLBACK;
	if (d->path) {
		(void)iod_bus_emit_device_changed(s->ctx, d->path, "DirtySource", "TrackingMode",
						  NULL);
		(void)iod_bus_emit_session_changed(s->ctx, s->path, "TrackingMode", "Precise",
						   NULL);
	}
	log_warning("Session %s: %s: %s; its mapped ranges count as always dirty from now on "
		    "(fallback).",
		    s->name, d->name, why);
}

void iod_session_devlog_stop(struct iod_session *s, struct iod_device *d)
{
	int r;

	if (!d->logging)
		return;
	r = iod_vfio_log_stop(d->fd);
	if (r < 0 && !d->lost)
		log_warning_errno(r,
				  "Session %s: failed to stop the DMA logging of %s, ignoring: %m",
				  s->name, d->name);
	d->logging = false;
	d->n_log_ranges = 0;
	free(d->log_ranges);
	d->log_ranges = NULL;
}
