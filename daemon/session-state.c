/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A session as persistent state (struct iod_state_session) and back, with the fds its
 * state names (restart survival, fdstore.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "context.h"
#include "logging.h"
#include "session-internal.h"

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
		.pending_round = iod_session_pending_round(s),
		.event_seq = s->event_seq,
	};
	size_t i = 0;
	int r;

	st.flags = (s->tracking ? IOD_SESSION_F_TRACKING : 0) |
		   (s->failed ? IOD_SESSION_F_FAILED : 0) |
		   (s->options.huge_pages ? IOD_SESSION_F_HUGE_PAGES : 0) |
		   (s->options.viommu ? IOD_SESSION_F_VIOMMU : 0) |
		   (s->options.nested ? IOD_SESSION_F_NESTED : 0);

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
			.parent_id = s->hwpts[i].parent_id,
		};
	st.n_hwpts = s->n_hwpts;

	for (i = 0; i < s->n_devices; i++) {
		const struct iod_device *d = s->devices[i];
		struct iod_state_device *sd = &st.devices[st.n_devices];

		sd->index = d->index;
		sd->dev_id = d->dev_id;
		sd->hwpt_id = d->hwpt_id;
		sd->dirty_capable = iod_session_hwpt_find((struct iod_session *)s, d->hwpt_id) &&
				    iod_session_hwpt_find((struct iod_session *)s, d->hwpt_id)
					    ->hw.dirty_capable;
		sd->emulated = d->emulated;
		sd->device_log = d->source == IOD_SOURCE_DEVICE_LOG;
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

void iod_session_options_from_state(const struct iod_context *c, const struct iod_state_session *st,
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
		policy = c->config.disconnect_policy;
		break;
	}
	*ret = (struct iod_session_options){
		.page_size = UINT64_C(1) << st->page_shift,
		.huge_pages = st->flags & IOD_SESSION_F_HUGE_PAGES,
		.viommu = st->flags & IOD_SESSION_F_VIOMMU,
		.nested = st->flags & IOD_SESSION_F_NESTED,
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

/*
 * The pages of an owner session's mappings come from the address space of the instance that
 * mapped them (IOMMU_IOAS_MAP of its own mmap of the memory fd), which died with it. An IOMMU
 * domain (any HWPT of the session) pinned them and holds them still. Without one, as in a
 * session whose devices are all emulated (an mdev, a device that logs its DMA through an
 * iommufd access) or that has no device yet, nothing does: every access of an emulated
 * device fails with EFAULT, for good, and a device attached later finds no pages to map.
 * Map each recorded mapping again from this instance's mapping of the memory. A recorded
 * mapping the kernel no longer has (a death between the IOAS unmap and the save) stays
 * unmapped, for the client's Unmap to forget.
 */
static void remap_unpinned(struct iod_session *s)
{
	size_t n = 0;
	int r;

	for (const struct iod_mapping *p = iod_iova_map_first(s->map); p;
	     p = iod_iova_map_next(s->map, p)) {
		const struct iod_region *g = iod_session_region_containing(s, p->gpa, p->length);
		uint64_t unmapped = 0;

		if (!g || !g->va) {
			iod_session_fail(s,
					 "IOVA [0x%" PRIx64 ", +0x%" PRIx64 ") maps GPA 0x%" PRIx64
					 ", which is in no memory of the session",
					 p->iova, p->length, p->gpa);
			return;
		}
		r = iod_ioas_unmap(s->ictx, s->ioas_id, p->iova, p->length, &unmapped);
		if (r == -ENOENT || (r == 0 && unmapped == 0))
			continue;
		if (r < 0) {
			iod_session_fail(s,
					 "IOVA [0x%" PRIx64 ", +0x%" PRIx64
					 ") maps memory of the previous instance and could not be "
					 "unmapped: %s",
					 p->iova, p->length, iod_strerror(r));
			return;
		}
		r = iod_ioas_map(s->ictx, s->ioas_id, (uint8_t *)g->va + (p->gpa - g->gpa),
				 p->length, p->iova, IOD_MAP_READ | IOD_MAP_WRITE);
		if (r < 0) {
			iod_session_fail(s,
					 "IOVA [0x%" PRIx64 ", +0x%" PRIx64
					 ") could not be mapped again from this instance: %s",
					 p->iova, p->length, iod_strerror(r));
			return;
		}
		n++;
	}
	if (n > 0)
		log_info("Session %s: mapped %zu range(s) of guest memory again from this instance "
			 "(no IOMMU domain pins the previous instance's pages).",
			 s->name, n);
}

/*
 * A device that logged its DMA before the restart still does, over ranges nobody recorded,
 * and what it logged since the last read is in the device only. Start it anew over the
 * mappings and count all of them dirty: the next round copies everything it could have
 * written. A device that cannot start again fails the session. A session that does not
 * track stops any log its devices run (a daemon may have died between starting one and
 * saving that the session tracks).
 */
static void restart_device_logs(struct iod_session *s)
{
	bool marked = false;

	for (size_t i = 0; i < s->n_devices; i++) {
		struct iod_device *d = s->devices[i];
		struct iod_reason why = {};
		int r;

		if (d->source != IOD_SOURCE_DEVICE_LOG)
			continue;
		(void)iod_vfio_log_stop(d->fd);
		if (!s->tracking)
			continue;
		r = iod_session_devlog_start(s, d, false, NULL, NULL, 0, &why);
		if (r < 0) {
			iod_session_fail(s, "the DMA logging of %s did not start again: %s",
					 d->name, why.text[0] ? why.text : iod_strerror(r));
			continue;
		}
		if (!marked) {
			r = iod_session_mark_mapped(s, 0, 0);
			if (r < 0)
				iod_session_fail(s, "marking the ranges of %s failed: %s", d->name,
						 iod_strerror(r));
			marked = true;
		}
		log_info("Session %s: DMA logging of %s restarted; every mapped page counts as "
			 "dirty once.",
			 s->name, d->name);
	}
}

int iod_session_from_state(struct iod_context *c, const struct iod_state_session *st,
			   iod_fd_lookup_fn lookup, void *userdata, struct iod_session **ret)
{
	_cleanup_(iod_session_freep) struct iod_session *s = NULL;
	struct iod_session_options o;
	int r, fd;

	iod_session_options_from_state(c, st, &o);
	if (st->disconnect_policy == IOD_STATE_DISCONNECT_UNSET)
		log_notice(
			"Session %s: the state does not record its disconnect policy (written by an older iodirtyd), using the default \"%s\".",
			st->name, iod_disconnect_policy_to_string(o.disconnect_policy));
	r = iod_session_new(c, st->name, st->mode, (uid_t)st->uid, &o, &s);
	if (r < 0)
		return r;
	s->event_seq = st->event_seq;

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
			.parent_id = st->hwpts[i].parent_id,
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
		r = iod_session_fdname_new(&g->fdname, s, "mem/%" PRIx64, g->gpa);
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
		d->emulated = sd->emulated;
		d->source = sd->device_log	? IOD_SOURCE_DEVICE_LOG
			    : sd->dirty_capable ? IOD_SOURCE_IOMMU
						: IOD_SOURCE_FALLBACK;
		/* What the device offers is not recorded: ask the kernel again, as at attach (the
		 * fd is still bound to the session's iommufd). An emulated device has no IOMMU. */
		r = d->emulated ? 0
		    : s->ictx	? iod_iommufd_hw_info(s->ictx, d->dev_id, &d->hw)
				: -EBADF;
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
		    iod_session_fdname_new(&d->fdname, s, "dev/%" PRIu32, d->index) < 0)
			return -ENOMEM;
		if (d->name[0] == '/' && strdup_or_null(d->name, &d->cdev) < 0)
			return -ENOMEM;
		if (!d->cdev && iod_vfio_fd_cdev_path(d->fd, &d->cdev) < 0)
			d->cdev = NULL; /* a PCI address or a passed fd sysfs cannot name */
		h = iod_session_hwpt_find(s, d->hwpt_id);
		if (h)
			h->users++;
		if (h && d->source == IOD_SOURCE_DEVICE_LOG)
			h->log_users++;
		if (d->index >= s->next_device_index)
			s->next_device_index = d->index + 1;
		s->devices[s->n_devices++] = TAKE_PTR(d);
	}

	s->tracking = st->flags & IOD_SESSION_F_TRACKING;
	s->failed = st->flags & IOD_SESSION_F_FAILED;
	if (s->failed)
		s->failure = strdup("the log was incomplete before the daemon restarted");
	/*
	 * The round the client holds stays pending until it acknowledges it, with dirty pages
	 * or without. The state says so (pending_round); a state older than that key does not,
	 * but a round plane with pages is pending all the same. The log may be a round ahead of
	 * the state (killed between a Harvest's snapshot and its journal record, before the
	 * reply): a round that was pending is merged into that one, which is pending then.
	 */
	s->round_pending = st->pending_round != 0 || iod_log_count_round(s->log) > 0;
	s->last_round_usec = iod_now_usec();
	if (s->mode == IOD_MODE_OWNER && s->ictx && s->ioas_id) {
		unmap_unrecorded(s);
		if (s->n_hwpts == 0)
			remap_unpinned(s);
	}
	restart_device_logs(s);

	*ret = TAKE_PTR(s);
	return 0;
}
