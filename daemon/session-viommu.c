/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vIOMMU events of a session: Map and Unmap, in batches, each batch checked whole before
 * anything changes; an Unmap harvests its ranges before they leave the IOAS.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "logging.h"
#include "session-internal.h"

/* Map and Unmap are batches of one: MapBatch and UnmapBatch share every check and every step
 * with them. */
static int check_viommu(const struct iod_session *s, const char *what, struct iod_reason *why)
{
	if (s->options.viommu)
		return 0;
	if (s->options.nested)
		return iod_reasonf(
			why, -EMEDIUMTYPE, IOD_ERROR_WRONG_MODE,
			"Session %s is nested: it harvests the nest parent, whose IOVA is the GPA, and the guest's stage 1 changes never touch it, so there are no %s events to report",
			s->name, what);
	return iod_reasonf(
		why, -EMEDIUMTYPE, IOD_ERROR_WRONG_MODE,
		"Session %s has no vIOMMU (IOVA = GPA): create it with the option viommu=true to report %s events",
		s->name, what);
}

/*
 * What a batch must be before the session is even looked at: no more entries than the
 * mappings limit allows, each entry not empty, aligned and without overflow, its gpa too
 * with with_gpa. These are the checks that hold for any session.
 */
static int check_events(const struct iod_session *s, const char *array,
			const struct iod_mapping *events, size_t n, bool with_gpa,
			struct iod_reason *why)
{
	int r;

	r = iod_limits_check_batch(&s->ctx->config.limits, s->name, n, why);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = iod_session_check_range(s, "iova", events[i].iova, events[i].length, why);
		if (r >= 0 && with_gpa)
			r = iod_session_check_range(s, "gpa", events[i].gpa, events[i].length, why);
		if (r < 0)
			return iod_session_reason_at(why, r, array, i);
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
 * One Map event (check_events() passed) against the session as it is, before anything
 * changes. 1 if exactly this mapping (IOVA, GPA and length) is recorded already: a client's
 * retry of a Map whose reply it never got (the daemon restarted), which succeeds without a
 * change.
 */
static int check_map(struct iod_session *s, const struct iod_mapping *e, struct iod_reason *why)
{
	struct iod_mapping hit;

	if (!iod_session_region_containing(s, e->gpa, e->length))
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
		r = iod_session_reason_at(why, r, array, b);
	}
	free(v);
	return r;
}

/* Map one checked event into the IOAS (owner mode) and the IOVA map. */
static int map_one(struct iod_session *s, const struct iod_mapping *e, struct iod_reason *why)
{
	int r;

	if (s->mode == IOD_MODE_OWNER) {
		const struct iod_region *g = iod_session_region_containing(s, e->gpa, e->length);

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

	r = check_events(s, array, maps, n, true, why);
	if (r < 0)
		return r;
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
			return iod_session_reason_at(why, r, array, i);
		recorded[i] = r > 0;
		fresh += !recorded[i];
	}
	r = check_disjoint(array, maps, n, why);
	if (r < 0)
		return r;
	r = iod_limits_check_mappings(&s->ctx->config.limits, s->name, iod_iova_map_count(s->map),
				      fresh, why);
	if (r < 0)
		return r;
	if (fresh == 0)
		return 0;

	if (s->mode == IOD_MODE_OWNER) {
		r = iod_session_ensure_kernel(s, why);
		if (r < 0)
			return r;
	}
	iod_session_devlog_prepare_map(s, maps, recorded, n);
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
	return iod_session_reason_at(why, r, array, i);
}

int iod_session_map(struct iod_session *s, uint64_t iova, uint64_t gpa, uint64_t length,
		    struct iod_reason *why)
{
	const struct iod_mapping e = {.iova = iova, .gpa = gpa, .length = length};

	return iod_session_map_batch(s, NULL, &e, 1, why);
}

/* One Unmap event (check_events() passed): the kernel unmaps whole areas only, so a range
 * must not cut a mapping. */
static int check_unmap(struct iod_session *s, const struct iod_mapping *e, struct iod_reason *why)
{
	uint64_t end = e->iova + e->length;
	struct iod_mapping m;

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

/*
 * Before a range leaves the IOAS, its dirty bits go into the log; if that fails, the session
 * fails and the unmap still happens. Without a dirty rate the read does not clear. While the
 * rate is measured it reads and clears, as a sample does, and counts the pages into the
 * pending sample: after the unmap no sample can read them, and should the kernel refuse the
 * unmap (the range stays mapped), the next sample does not count them again.
 */
static void harvest_before_unmap(struct iod_session *s, const struct iod_mapping *e)
{
	struct iod_mapping hit;
	int r;

	if (!s->tracking || s->failed || !find_mapped(s, e->iova, e->length, &hit))
		return;
	r = iod_session_harvest_hwpts(s, NULL, e->iova, e->length, s->rate ? 0 : IOD_READ_NO_CLEAR);
	if (r < 0) {
		char when[96];

		snprintf(when, sizeof(when),
			 "harvest before unmapping IOVA [0x%" PRIx64 ", 0x%" PRIx64 ")", e->iova,
			 e->iova + e->length);
		iod_session_fail_harvest(s, when, r);
	}
	if (iod_session_has_fallback(s)) {
		r = iod_session_mark_mapped(s, e->iova, e->length);
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
	if (done > 0 && s->tracking && !s->failed) {
		/* A device's log outlives the mapping: read it again now that no DMA can reach
		 * the range, through the translation that is still known. */
		int k = iod_session_harvest_devices(s, e->iova, done);

		if (k < 0)
			iod_session_fail_harvest(s, "reading the DMA logs after an unmap", k);
	}
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

	r = check_events(s, array, ranges, n, false, why);
	if (r < 0)
		return r;
	r = check_viommu(s, "unmap", why);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = check_unmap(s, &ranges[i], why);
		if (r < 0)
			return iod_session_reason_at(why, r, array, i);
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
			return iod_session_reason_at(why, r, array, i);
	}
	return 0;
}

int iod_session_unmap(struct iod_session *s, uint64_t iova, uint64_t length, struct iod_reason *why)
{
	const struct iod_mapping e = {.iova = iova, .length = length};

	return iod_session_unmap_batch(s, NULL, &e, 1, why);
}
