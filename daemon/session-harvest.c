/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Rounds of a session: Start and Stop, Harvest (each HWPT's bits read through the harvest
 * journal into the dirty log), Acknowledge, the dirty pages of a round as ranges, and the
 * samples of the dirty rate (the same read-and-clear, counted on the way into the log).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "journal.h"
#include "logging.h"
#include "rate.h"
#include "session-internal.h"

/* A HWPT bitmap is read in chunks of this many pages (32 KiB of bitmap). */
#define HARVEST_CHUNK_BITS (UINT64_C(1) << 18)
/*
 * ... and with one ioctl of at most this many pages (1 MiB of memory at 4 KiB, 32 bytes of
 * bitmap; a multiple of a bitmap word, so that a slice of a direct read starts a word too).
 * A kernel without preemption (PREEMPT_NONE) runs one GET_DIRTY_BITMAP to its end: on a
 * single CPU a long read of one session's worker thread would hold up the event loop's
 * thread, and with it every other session, for all of it. A slice is well under a
 * millisecond even under TCG.
 */
#define HARVEST_SLICE_BITS (UINT64_C(1) << 8)

int iod_session_ensure_journal(struct iod_session *s)
{
	if (s->journal)
		return 0;
	return iod_journal_new(HARVEST_CHUNK_BITS, &s->journal);
}

struct harvest_ctx {
	struct iod_session *session;
	const struct iod_session_hwpt *hwpt; /* the HWPT read, or NULL for ... */
	const struct iod_device *dev; /* ... the device whose DMA log is read */
	unsigned flags;
	const atomic_bool *cancel; /* checked between slices; NULL: never cancelled */
	/* The dirty rate to count the read pages into: a read that clears, while the rate is
	 * measured (a read without clearing leaves the pages to the next one; the read before
	 * an Unmap clears while the rate is measured, for that reason). */
	struct iod_rate *rate;
};

static bool cancelled(const struct harvest_ctx *c)
{
	return c->cancel && atomic_load_explicit(c->cancel, memory_order_relaxed);
}

/* Remember which read failed, for the reason a failed session gives. */
static int read_failed(struct harvest_ctx *c, int r, uint64_t iova, uint64_t length)
{
	struct iod_session *s = c->session;

	s->read_error = (struct iod_read_error){
		.hwpt_id = c->hwpt ? c->hwpt->hw.id : 0,
		.iova = iova,
		.length = length,
		.err = r,
	};
	if (c->dev)
		snprintf(s->read_error.device, sizeof(s->read_error.device), "%s", c->dev->name);
	if (c->dev)
		return log_debug_errno(r,
				       "Failed to read the DMA log of %s at [0x%" PRIx64
				       ", +0x%" PRIx64 "): %m",
				       c->dev->name, iova, length);
	return log_debug_errno(
		r, "Failed to read dirty bits of hwpt %u at [0x%" PRIx64 ", +0x%" PRIx64 "): %m",
		c->hwpt->hw.id, iova, length);
}

/* Read-and-clear (or, for a HWPT with IOD_READ_NO_CLEAR, read) [iova, +length) into buf.
 * A device's log is always cleared: its bits are in the log after this either way. */
static int read_bits(struct harvest_ctx *c, uint64_t iova, uint64_t length, uint64_t page,
		     uint64_t *buf)
{
	if (c->dev)
		return iod_vfio_log_report(c->dev->fd, iova, length, page, buf);
	return iod_hwpt_read_dirty(c->session->ictx, c->hwpt->hw.id, iova, length, page, buf,
				   c->flags);
}

/* What a rate sample counts the bits under: the HWPT, or the device's HWPT (0 for a device
 * without one). */
static uint32_t rate_id(const struct harvest_ctx *c)
{
	return c->dev ? c->dev->hwpt_id : c->hwpt->hw.id;
}

/* Read one mapped piece of one HWPT, slice by slice, into the accumulating plane. */
static int harvest_piece(const struct iod_mapping *p, void *userdata)
{
	struct harvest_ctx *c = userdata;
	struct iod_session *s = c->session;
	unsigned shift = iod_log_page_shift(s->log);
	uint64_t page = UINT64_C(1) << shift;
	uint64_t *direct;
	int r;

	/*
	 * Fast path: where the piece's first page starts a word of the log's accumulating
	 * plane, the kernel ORs the bits straight into the log (it only ever sets bits). No
	 * buffer, no copy, no merge; and since the plane lives in the log memfd, a crash right
	 * after the read-and-clear loses nothing either, nor does a read that fails half way.
	 * Not while the dirty rate is measured: it must see the bits each read returns.
	 */
	if (!c->rate && iod_log_accum_direct(s->log, p->gpa, p->length >> shift, &direct) == 0) {
		for (uint64_t done = 0; done < p->length;) {
			uint64_t len = MIN(p->length - done, HARVEST_SLICE_BITS << shift);

			if (cancelled(c))
				return -ECANCELED;
			r = read_bits(c, p->iova + done, len, page,
				      direct + (done >> shift) / IOD_BITS_PER_WORD);
			if (r < 0)
				return read_failed(c, r, p->iova + done, len);
			done += len;
		}
		return 0;
	}

	for (uint64_t done = 0; done < p->length;) {
		uint64_t len = MIN(p->length - done, HARVEST_SLICE_BITS << shift);
		uint64_t nbits = len >> shift;
		uint64_t *buf;
		int k;

		if (cancelled(c))
			return -ECANCELED;
		/* Read-and-clear leaves the only copy of the bits in this buffer until they are
		 * merged: it lives in a memfd that the next instance replays (journal.h). */
		buf = iod_journal_begin(s->journal, p->gpa + done, nbits, shift);
		r = read_bits(c, p->iova + done, len, page, buf);
		/* A read that failed half way may have cleared what it returned: merge that too. */
		if (!iod_bitmap_is_empty(buf, nbits, 0, nbits)) {
			if (c->rate)
				iod_rate_record(c->rate, rate_id(c), (p->gpa + done) >> shift, buf,
						nbits);
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

/* Read one HWPT's or one device's bits of [iova, +length) (the whole map with length 0). */
static int harvest_one(struct harvest_ctx *c, uint64_t iova, uint64_t length)
{
	struct iod_session *s = c->session;
	int r;

	if (length)
		return iod_iova_map_foreach(s->map, iova, length, harvest_piece, c);
	for (const struct iod_mapping *p = iod_iova_map_first(s->map); p;
	     p = iod_iova_map_next(s->map, p)) {
		r = harvest_piece(p, c);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Before a read: the journal it may need, and no read error yet. */
static int read_begin(struct iod_session *s)
{
	int r = iod_session_ensure_journal(s);

	if (r < 0)
		return r;
	s->read_error = (struct iod_read_error){};
	return 0;
}

/* Read [iova, iova + length) of every tracking HWPT (only that one if set; the whole map with
 * length 0); with cancel set, stop with -ECANCELED between two slices once *cancel is. */
static int read_hwpts(struct iod_session *s, const struct iod_session_hwpt *only, uint64_t iova,
		      uint64_t length, unsigned flags, const atomic_bool *cancel)
{
	int r;

	for (size_t i = 0; i < s->n_hwpts; i++) {
		struct harvest_ctx c = {
			.session = s,
			.hwpt = &s->hwpts[i],
			.flags = flags,
			.cancel = cancel,
			.rate = flags & IOD_READ_NO_CLEAR ? NULL : s->rate,
		};

		if (only && only != &s->hwpts[i])
			continue;
		if (!c.hwpt->hw.dirty_capable || !c.hwpt->hw.tracking)
			continue;
		r = harvest_one(&c, iova, length);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The same for the DMA log of every logging device (only that one if set). A device's log is
 * always read and cleared, so the rate always counts it. */
static int read_devices(struct iod_session *s, const struct iod_device *only, uint64_t iova,
			uint64_t length, const atomic_bool *cancel)
{
	int r;

	for (size_t i = 0; i < s->n_devices; i++) {
		struct harvest_ctx c = {
			.session = s,
			.dev = s->devices[i],
			.cancel = cancel,
			.rate = s->rate,
		};

		if (only && only != c.dev)
			continue;
		/* Not lost: a lost device is read once more as it is detached, on the event
		 * loop's thread, and lost is that thread's. */
		if (!c.dev->logging)
			continue;
		r = harvest_one(&c, iova, length);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A whole round's read: every tracking HWPT and every logging device over every mapping. */
static int read_all(struct iod_session *s, unsigned flags, const atomic_bool *cancel)
{
	int r = read_begin(s);

	if (r >= 0)
		r = read_hwpts(s, NULL, 0, 0, flags, cancel);
	if (r >= 0)
		r = read_devices(s, NULL, 0, 0, cancel);
	return r;
}

int iod_session_harvest_hwpts(struct iod_session *s, const struct iod_session_hwpt *only,
			      uint64_t iova, uint64_t length, unsigned flags)
{
	int r = read_begin(s);

	return r < 0 ? r : read_hwpts(s, only, iova, length, flags, NULL);
}

int iod_session_harvest_device(struct iod_session *s, const struct iod_device *d)
{
	int r = read_begin(s);

	return r < 0 ? r : read_devices(s, d, 0, 0, NULL);
}

int iod_session_harvest_devices(struct iod_session *s, uint64_t iova, uint64_t length)
{
	int r = read_begin(s);

	return r < 0 ? r : read_devices(s, NULL, iova, length, NULL);
}

/*
 * Precise: every bit stands for one page of page_size. Not with a fallback HWPT (its mapped
 * ranges are always dirty), nor with huge IOMMU pages: a huge IOPTE has one dirty bit, and
 * the kernel reports every page under it dirty.
 */
bool iod_session_precise(const struct iod_session *s)
{
	return !iod_session_has_fallback(s) && !s->options.huge_pages;
}

static int mark_piece(const struct iod_mapping *p, void *userdata)
{
	struct iod_session *s = userdata;

	return iod_log_mark(s->log, p->gpa, p->length);
}

/* Mark the mapped areas (inside [iova, +length), or all with length 0) dirty. */
int iod_session_mark_mapped(struct iod_session *s, uint64_t iova, uint64_t length)
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
void iod_session_fail_harvest(struct iod_session *s, const char *when, int r)
{
	const struct iod_read_error *e = &s->read_error;

	if (e->err != r || r == 0)
		iod_session_fail(s, "%s failed: %s", when, iod_strerror(r));
	else if (e->device[0])
		iod_session_fail(s,
				 "%s failed: reading the DMA log of %s at IOVA [0x%" PRIx64
				 ", +0x%" PRIx64 "): %s",
				 when, e->device, e->iova, e->length, iod_strerror(r));
	else if (r == -EINVAL && s->ctx->holes == IOD_HOLES_STRICT)
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

int iod_session_start(struct iod_session *s, struct iod_reason *why)
{
	size_t i;
	int r;

	r = iod_session_check_failed(s, why);
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
	for (size_t k = 0; k < s->n_devices; k++) {
		struct iod_device *d = s->devices[k];

		if (d->source != IOD_SOURCE_DEVICE_LOG || d->lost)
			continue;
		r = iod_session_devlog_start(s, d, false, NULL, NULL, 0, why);
		if (r < 0 && !d->source_explicit) {
			/* Chosen by "auto": the device still works, as a fallback. Nothing was
			 * tracked before Start, so nothing is lost. */
			iod_session_devlog_degrade(s, d, why->text);
			*why = (struct iod_reason){};
			continue;
		}
		if (r < 0) {
			while (k-- > 0)
				iod_session_devlog_stop(s, s->devices[k]);
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
	r = read_all(s, 0, NULL);
	if (r < 0) {
		/* A read-and-clear that failed half way may have lost bits. */
		iod_session_fail_harvest(s, "harvest before stopping", r);
		return iod_reason_kernel(why, r, "Failed to harvest before stopping");
	}
	if (iod_session_has_fallback(s)) {
		r = iod_session_mark_mapped(s, 0, 0);
		if (r < 0)
			return iod_reason_kernel(why, r, "Failed to mark fallback ranges");
	}

	for (size_t i = 0; i < s->n_devices; i++)
		iod_session_devlog_stop(s, s->devices[i]);
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

/* Harvest and MarkDirty: the session has a complete log and is tracking. */
static int check_tracking(struct iod_session *s, struct iod_reason *why)
{
	int r;

	r = iod_session_check_failed(s, why);
	if (r < 0)
		return r;
	if (!s->tracking)
		return iod_reasonf(why, -ESRCH, IOD_ERROR_NOT_TRACKING,
				   "Session %s is not tracking: call Start first", s->name);
	return 0;
}

int iod_session_harvest_begin(struct iod_session *s, struct iod_reason *why)
{
	int r;

	r = check_tracking(s, why);
	if (r < 0)
		return r;
	/* Here, not in the read: the journal is created on the event loop's thread only. */
	r = iod_session_ensure_journal(s);
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to create the harvest journal");
	return 0;
}

int iod_session_harvest_read(struct iod_session *s, bool peek, const atomic_bool *cancel)
{
	return read_all(s, peek ? IOD_READ_NO_CLEAR : 0, cancel);
}

int iod_session_harvest_end(struct iod_session *s, bool peek, int read_result, uint64_t t0,
			    struct iod_harvest_result *ret, struct iod_reason *why)
{
	uint64_t dirty = 0, now;
	bool precise, hwpts_changed = false;
	int r = read_result;

	if (r == -ECANCELED)
		/* Stopped between two slices: what was read and cleared is in the accumulating
		 * plane (or in the journal), and the next round reports it. Nothing is lost. */
		return iod_reasonf(why, r, IOD_ERROR_KERNEL,
				   "The harvest of session %s was cancelled: the session or the "
				   "daemon is going away. No dirty bit is lost: harvest again",
				   s->name);
	if (r < 0) {
		/* A read-and-clear that failed half way may have lost bits; EINVAL for an area
		 * the session mapped says bits are lost, peek or not. */
		if (!peek || r == -EINVAL || s->read_error.device[0])
			/* A device's log is read and cleared even by a peek: a read that failed
			 * half way may have lost its bits. */
			iod_session_fail_harvest(s, "harvest", r);
		return iod_reason_kernel(why, r, "Failed to harvest session %s", s->name);
	}
	precise = iod_session_precise(s);
	if (iod_session_has_fallback(s)) {
		/* First see which fallback HWPTs the client destroyed, then mark: the mark comes
		 * after the destroy, so it covers every write through them. */
		bool gone = iod_session_find_gone_fallbacks(s) > 0;

		r = iod_session_mark_mapped(s, 0, 0);
		if (r < 0)
			return iod_reason_kernel(why, r, "Failed to mark fallback ranges");
		/* Marked: a fallback HWPT the client destroyed has had its last round. */
		if (gone)
			hwpts_changed = iod_session_drop_gone_fallbacks(s) > 0;
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
		.hwpts_changed = hwpts_changed,
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
		s->last_round_timestamp = iod_realtime_usec();
	}
	return 0;
}

int iod_session_harvest(struct iod_session *s, bool peek, struct iod_harvest_result *ret,
			struct iod_reason *why)
{
	uint64_t t0 = iod_now_usec();
	int r;

	r = iod_session_harvest_begin(s, why);
	if (r < 0)
		return r;
	r = iod_session_harvest_read(s, peek, NULL);
	return iod_session_harvest_end(s, peek, r, t0, ret, why);
}

int iod_session_mark_begin(struct iod_session *s, struct iod_reason *why)
{
	return check_tracking(s, why);
}

int iod_session_rate_sample(struct iod_session *s, struct iod_reason *why)
{
	int r;

	assert(s->rate);
	r = iod_session_harvest_begin(s, why);
	if (r < 0)
		return r;
	r = read_all(s, 0, NULL);
	if (r < 0) {
		/* A read-and-clear that failed half way may have lost bits, as in a harvest. */
		iod_session_fail_harvest(s, "dirty rate sample", r);
		return iod_reason_kernel(why, r, "Failed to sample the dirty rate of session %s",
					 s->name);
	}
	iod_rate_close(s->rate, iod_now_usec());
	return 0;
}

int iod_session_rate_begin(struct iod_session *s, struct iod_reason *why)
{
	int r;

	if (s->rate)
		return 0;
	r = check_tracking(s, why);
	if (r < 0)
		return r;
	r = iod_rate_new(IOD_RATE_MAX_RUNS, iod_now_usec(), &s->rate);
	if (r < 0)
		return iod_reason_kernel(why, r, "Failed to set up the dirty rate");
	r = iod_session_rate_sample(s, why);
	if (r < 0) {
		iod_session_rate_end(s);
		return r;
	}
	log_info("Session %s: dirty rate sampling started.", s->name);
	return 0;
}

void iod_session_rate_end(struct iod_session *s)
{
	if (s->rate)
		log_info("Session %s: dirty rate sampling stopped.", s->name);
	s->rate = iod_rate_free(s->rate);
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

uint64_t iod_session_pending_round(const struct iod_session *s)
{
	return s->round_pending ? iod_log_rounds(s->log) : 0;
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
