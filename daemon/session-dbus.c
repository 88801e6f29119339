/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bus-signals.h"
#include "bus-util.h"
#include "errors.h"
#include "event-channel.h"
#include "events.h"
#include "harvest-worker.h"
#include "persist.h"
#include "rate-sampler.h"
#include "rate.h"
#include "uevent.h"
#include "logging.h"
#include "manager.h"
#include "session.h"
#include "session-dbus.h"

/* The owner (uid and bus name) and root may act on a session; nobody else. */
static int check_caller_uid(struct iod_session *s, sd_bus_message *m, uid_t *ret_uid,
			    sd_bus_error *error)
{
	const char *sender = sd_bus_message_get_sender(m);
	uid_t uid;
	int r;

	r = iod_bus_query_uid(m, &uid, error);
	if (r < 0)
		return r;
	if (ret_uid)
		*ret_uid = uid;
	if (uid == 0)
		return 0;
	if (uid == s->uid && s->owner && sender && strcmp(sender, s->owner) == 0)
		return 0;
	if (uid == s->uid && !s->owner)
		return sd_bus_error_setf(
			error, SD_BUS_ERROR_ACCESS_DENIED,
			"Session %s has no owner since its creator left the bus: call Claim first",
			s->name);
	return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
				 "Session %s belongs to uid %u (%s)", s->name, (unsigned)s->uid,
				 s->owner ? s->owner : "no bus name");
}

static int check_caller(struct iod_session *s, sd_bus_message *m, sd_bus_error *error)
{
	return check_caller_uid(s, m, NULL, error);
}

static int reply_reason(sd_bus_error *error, int r, const struct iod_reason *why)
{
	return iod_bus_error_from_reason(error, r, why);
}

/*
 * First in every method, before its arguments are read: while the session harvests (or
 * calls wait for it), the call waits too, and the method runs afterwards, in order, with the
 * same message (harvest-worker.h).
 */
#define HOLD_WHILE_HARVESTING(m, userdata, method)                         \
	do {                                                               \
		if (iod_session_calls_held(userdata))                      \
			return iod_session_hold_call(userdata, m, method); \
	} while (0)

static int method_add_memory(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct iod_reason why = {};
	uint64_t offset, size, gpa;
	int fd, r;
	HOLD_WHILE_HARVESTING(m, userdata, method_add_memory);

	r = sd_bus_message_read(m, "httt", &fd, &offset, &size, &gpa);
	if (r < 0)
		return r;

	r = iod_session_check_range(s, "gpa", gpa, size, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	r = iod_session_add_memory(s, fd, offset, size, gpa, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	(void)iod_persist_save(iod_manager_of(s->ctx));
	(void)iod_bus_emit_session_changed(s->ctx, s->path, "Regions", "TrackedBytes", "LogBytes",
					   "MappedBytes", "Mappings", "IoasId", NULL);
	return sd_bus_reply_method_return(m, NULL);
}

static int method_add_region(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct iod_reason why = {};
	uint64_t size, gpa;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_add_region);

	r = sd_bus_message_read(m, "tt", &gpa, &size);
	if (r < 0)
		return r;

	r = iod_session_check_range(s, "gpa", gpa, size, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	r = iod_session_add_region(s, gpa, size, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	(void)iod_persist_save(iod_manager_of(s->ctx));
	(void)iod_bus_emit_session_changed(s->ctx, s->path, "Regions", "TrackedBytes", "LogBytes",
					   "MappedBytes", "Mappings", NULL);
	return sd_bus_reply_method_return(m, NULL);
}

struct attach_options {
	bool dirty_tracking;
	const char *dirty_source;
};

static const struct iod_bus_option attach_options_table[] = {
	{"dirty_tracking", 'b', offsetof(struct attach_options, dirty_tracking)},
	{"dirty_source", 's', offsetof(struct attach_options, dirty_source)},
	{},
};

/* The options' source: dirty_source ("auto", "iommu", "device", "none"); dirty_tracking
 * false is "none" and contradicts any other but "auto". */
static int attach_source_choice(const struct attach_options *o, enum iod_source_choice *ret,
				sd_bus_error *error)
{
	static const char *const names[] = {
		[IOD_CHOOSE_AUTO] = "auto",
		[IOD_CHOOSE_IOMMU] = "iommu",
		[IOD_CHOOSE_DEVICE] = "device",
		[IOD_CHOOSE_NONE] = "none",
	};
	enum iod_source_choice c = IOD_CHOOSE_AUTO;
	char q[IOD_QUOTE_MAX];
	size_t i;

	if (o->dirty_source) {
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strcmp(o->dirty_source, names[i]) == 0)
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			return sd_bus_error_setf(
				error, SD_BUS_ERROR_INVALID_ARGS,
				"Option dirty_source: \"%s\" is not one of auto, iommu, device, none",
				iod_quote(o->dirty_source, q));
		c = (enum iod_source_choice)i;
	}
	if (!o->dirty_tracking) {
		if (c != IOD_CHOOSE_AUTO && c != IOD_CHOOSE_NONE)
			return sd_bus_error_setf(
				error, SD_BUS_ERROR_INVALID_ARGS,
				"Options dirty_tracking false and dirty_source \"%s\" contradict each other",
				names[c]);
		c = IOD_CHOOSE_NONE;
	}
	*ret = c;
	return 0;
}

static int attach_common(sd_bus_message *m, struct iod_session *s, const char *spec, int fd,
			 sd_bus_error *error)
{
	struct attach_options o = {.dirty_tracking = true};
	enum iod_source_choice choice = IOD_CHOOSE_AUTO;
	struct iod_device *d = NULL;
	struct iod_reason why = {};
	char q[IOD_QUOTE_MAX];
	uid_t uid;
	int r;

	r = iod_bus_read_options(m, attach_options_table, &o, error);
	if (r < 0)
		return r;
	r = attach_source_choice(&o, &choice, error);
	if (r < 0)
		return r;

	/* Before the name is even looked at: only root may have the daemon open a path. */
	r = check_caller_uid(s, m, &uid, error);
	if (r < 0)
		return r;
	if (spec && uid != 0)
		return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, IOD_DEVICE_NEEDS_ROOT);
	if (spec && !iod_device_spec_valid(spec))
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Device \"%s\" is " IOD_DEVICE_SPEC_WANTED,
					 iod_quote(spec, q));

	r = iod_session_check_device_limit(s, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	r = iod_device_open(s->ctx->config.sysfs_root, spec, fd, &d, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	r = iod_session_attach_device(s, d, choice, &why);
	if (r < 0) {
		iod_device_free(d);
		return reply_reason(error, r, &why);
	}

	/* Its removal is watched from now on (VFIO's release request). */
	iod_uevent_watch_devices(iod_manager_of(s->ctx));
	(void)iod_persist_save(iod_manager_of(s->ctx));
	(void)iod_bus_emit_session_changed(s->ctx, s->path, "Devices", "Hwpts", "TrackingMode",
					   "Precise", "IoasId", NULL);
	return sd_bus_reply_method_return(m, "o", d->path);
}

static int method_attach_device(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	const char *spec;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_attach_device);

	r = sd_bus_message_read(m, "s", &spec);
	if (r < 0)
		return r;
	return attach_common(m, userdata, spec, -EBADF, error);
}

static int method_attach_device_fd(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	int fd, r;
	HOLD_WHILE_HARVESTING(m, userdata, method_attach_device_fd);

	r = sd_bus_message_read(m, "h", &fd);
	if (r < 0)
		return r;
	return attach_common(m, userdata, NULL, fd, error);
}

static int method_detach_device(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct iod_reason why = {};
	struct iod_device *d;
	char q[IOD_QUOTE_MAX];
	const char *path;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_detach_device);

	r = sd_bus_message_read(m, "o", &path);
	if (r < 0)
		return r;

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	d = iod_manager_find_device_by_path(iod_manager_of(s->ctx), path);
	if (!d || d->session != s)
		return sd_bus_error_setf(error, IOD_ERROR_NO_SUCH_DEVICE,
					 "Session %s has no device %s", s->name,
					 iod_quote(path, q));

	r = iod_session_detach_device(s, d, &why);
	/* Also when it failed: a harvest in it may have failed the session. */
	(void)iod_persist_save(iod_manager_of(s->ctx));
	if (r < 0)
		return reply_reason(error, r, &why);

	(void)iod_bus_emit_session_changed(s->ctx, s->path, "Devices", "Hwpts", "TrackingMode",
					   "Precise", NULL);
	return sd_bus_reply_method_return(m, NULL);
}

/*
 * Map, Unmap, MapBatch and UnmapBatch share one path: check the caller, hand the entries to
 * iod_events_apply() (as the event channel does), one PropertiesChanged.
 */
static int events_apply(sd_bus_message *m, struct iod_session *s, bool map, const char *array,
			const struct iod_mapping *events, size_t n, sd_bus_error *error)
{
	struct iod_events_changed changed;
	struct iod_reason why = {};
	int r;

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	r = iod_events_apply(s, map, array, events, n, 0, &why, &changed);
	if (changed.mappings || changed.ioas)
		(void)iod_bus_emit_session_changed(s->ctx, s->path, "Mappings", "MappedBytes",
						   changed.ioas ? "IoasId" : NULL, NULL);
	if (r < 0)
		return reply_reason(error, r, &why);
	return sd_bus_reply_method_return(m, NULL);
}

static int method_map(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_mapping e;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_map);

	r = sd_bus_message_read(m, "ttt", &e.iova, &e.gpa, &e.length);
	if (r < 0)
		return r;
	return events_apply(m, userdata, true, NULL, &e, 1, error);
}

static int method_unmap(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_mapping e = {};
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_unmap);

	r = sd_bus_message_read(m, "tt", &e.iova, &e.length);
	if (r < 0)
		return r;
	return events_apply(m, userdata, false, NULL, &e, 1, error);
}

/*
 * Read a(ttt) (map) or a(tt) into one array. The session core refuses a batch of more entries
 * than the mappings limit; one entry over it is enough for that, so the rest of a longer
 * array is left unread and uncopied.
 */
static int read_events(sd_bus_message *m, struct iod_session *s, bool map, struct iod_mapping **ret,
		       size_t *ret_n)
{
	size_t max = (size_t)s->ctx->config.limits.mappings + 1, n = 0, alloc = 0;
	struct iod_mapping *v = NULL, e = {};
	int r;

	r = sd_bus_message_enter_container(m, 'a', map ? "(ttt)" : "(tt)");
	if (r < 0)
		return r;
	while (n < max) {
		if (map)
			r = sd_bus_message_read(m, "(ttt)", &e.iova, &e.gpa, &e.length);
		else
			r = sd_bus_message_read(m, "(tt)", &e.iova, &e.length);
		if (r <= 0)
			break;
		if (n == alloc) {
			size_t na = MIN(alloc ? 2 * alloc : 64, max);
			struct iod_mapping *q = reallocarray(v, na, sizeof(*q));

			if (!q) {
				r = -ENOMEM;
				break;
			}
			v = q;
			alloc = na;
		}
		v[n++] = e;
	}
	if (r >= 0 && n < max)
		r = sd_bus_message_exit_container(m);
	if (r < 0) {
		free(v);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* MapBatch (map) or UnmapBatch: read the array, then as Map/Unmap. */
static int batch(sd_bus_message *m, struct iod_session *s, bool map, sd_bus_error *error)
{
	struct iod_mapping *v = NULL;
	size_t n;
	int r;

	r = read_events(m, s, map, &v, &n);
	if (r < 0)
		return r;
	r = events_apply(m, s, map, map ? "maps" : "ranges", v, n, error);
	free(v);
	return r;
}

static int method_map_batch(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	HOLD_WHILE_HARVESTING(m, userdata, method_map_batch);

	return batch(m, userdata, true, error);
}

static int method_unmap_batch(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	HOLD_WHILE_HARVESTING(m, userdata, method_unmap_batch);

	return batch(m, userdata, false, error);
}

/* At most this many ranges in one MarkDirty call. */
#define MARK_DIRTY_MAX 65536

static int method_mark_dirty(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	_cleanup_free_ struct iod_range *v = NULL;
	struct iod_reason why = {};
	uint64_t gpa, size;
	size_t n = 0, allocated = 0;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_mark_dirty);

	r = check_caller(s, m, error);
	if (r < 0)
		return r;
	r = iod_session_mark_begin(s, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	r = sd_bus_message_enter_container(m, 'a', "(tt)");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_read(m, "(tt)", &gpa, &size)) > 0) {
		if (n == MARK_DIRTY_MAX)
			return sd_bus_error_setf(error, IOD_ERROR_LIMIT_EXCEEDED,
						 "More than %d ranges in one MarkDirty call",
						 MARK_DIRTY_MAX);
		if (n == allocated) {
			size_t k = allocated ? 2 * allocated : 64;
			struct iod_range *w = reallocarray(v, k, sizeof(*v));

			if (!w)
				return -ENOMEM;
			v = w;
			allocated = k;
		}
		v[n++] = (struct iod_range){.start = gpa, .length = size};
	}
	if (r < 0)
		return r;
	r = sd_bus_message_exit_container(m);
	if (r < 0)
		return r;

	/* Every range is checked before any is marked: a bad one marks nothing. */
	r = iod_session_mark_batch(s, "ranges", v, n, &why);
	if (r < 0)
		return reply_reason(error, r, &why);
	return sd_bus_reply_method_return(m, NULL);
}

static const struct iod_bus_option channel_options_table[] = {
	{},
};

static int method_open_event_channel(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	_cleanup_close_ int fd = -EBADF;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_open_event_channel);

	r = iod_bus_read_options(m, channel_options_table, NULL, error);
	if (r < 0)
		return r;

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	r = iod_event_channel_open(s, sd_bus_get_event(sd_bus_message_get_bus(m)), &fd);
	if (r < 0)
		return sd_bus_error_set_errnof(error, r, "Failed to open an event channel: %s",
					       iod_strerror(r));
	log_info("Session %s: event channel opened (last applied batch %" PRIu64 ").", s->name,
		 s->event_seq);
	return sd_bus_reply_method_return(m, "ht", fd, s->event_seq);
}

static int method_start(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct iod_reason why = {};
	bool was = s->tracking;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_start);

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	r = iod_session_start(s, &why);
	/* Also when it failed: a harvest in it may have failed the session. */
	(void)iod_persist_save(iod_manager_of(s->ctx));
	if (r < 0)
		return reply_reason(error, r, &why);

	if (!was)
		(void)iod_bus_emit_session_changed(s->ctx, s->path, "State", "Tracking",
						   "TrackingMode", "Precise", "Hwpts", NULL);
	return sd_bus_reply_method_return(m, NULL);
}

static int method_stop(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct iod_reason why = {};
	bool was = s->tracking;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_stop);

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	r = iod_session_stop(s, &why);
	/* Also when it failed: a harvest in it may have failed the session. */
	(void)iod_persist_save(iod_manager_of(s->ctx));
	if (r < 0)
		return reply_reason(error, r, &why);
	/* No tracking, no rate: a Start later begins a new one, from a new baseline. */
	if (s->release_sampler)
		s->release_sampler(s);

	if (was)
		(void)iod_bus_emit_session_changed(s->ctx, s->path, "State", "Tracking", NULL);
	return sd_bus_reply_method_return(m, NULL);
}

struct harvest_options {
	bool peek;
	const char *space;
	uint32_t max_ranges;
};

static const struct iod_bus_option harvest_options_table[] = {
	{"peek", 'b', offsetof(struct harvest_options, peek)},
	{},
};

static const struct iod_bus_option ranges_options_table[] = {
	{"peek", 'b', offsetof(struct harvest_options, peek)},
	{"space", 's', offsetof(struct harvest_options, space)},
	{"max_ranges", 'u', offsetof(struct harvest_options, max_ranges)},
	{},
};

/* After a harvest, before its reply: a new round is one journal record; a session that
 * failed in it, the whole state. */
static void harvest_persist(struct iod_session *s, bool peek, bool failed_before)
{
	if (s->failed != failed_before)
		(void)iod_persist_save(iod_manager_of(s->ctx));
	else if (!peek)
		(void)iod_persist_events(iod_manager_of(s->ctx), s, IOD_SJ_ROUNDS, NULL, 0,
					 iod_log_rounds(s->log));
}

static void send_round_changed(struct iod_session *s, bool peek)
{
	if (!peek)
		(void)iod_bus_emit_session_changed(s->ctx, s->path, "Rounds", "PendingRound",
						   "LastRoundDirtyPages", "LastRoundDurationUSec",
						   "DirtyRate", "LastRoundTimestamp", NULL);
}

/* Harvest: the reply, once the round is over. */
static int reply_harvest(struct iod_session *s, sd_bus_message *m,
			 const struct iod_harvest_request *req,
			 const struct iod_harvest_result *res, sd_bus_error *error)
{
	_cleanup_close_ int fd = -EBADF;

	fd = iod_session_open_log_ro(s);
	if (fd < 0)
		return iod_bus_error_kernel(error, fd,
					    "Failed to open the dirty log for the client");

	send_round_changed(s, req->peek);
	return sd_bus_reply_method_return(m, "thtbt", res->round, fd, res->dirty_pages,
					  (int)res->precise, res->duration_usec);
}

/* HarvestRanges: the reply, once the round is over. */
static int reply_ranges(struct iod_session *s, sd_bus_message *m,
			const struct iod_harvest_request *req, const struct iod_harvest_result *res,
			sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_free_ struct iod_range *ranges = NULL;
	uint64_t unmapped = 0;
	bool truncated;
	size_t n;
	int r;

	r = iod_session_dirty_ranges(s, req->peek, req->iova_space, req->max_ranges, &ranges, &n,
				     &truncated, &unmapped);
	if (r == -EADDRNOTAVAIL) {
		send_round_changed(s, req->peek);
		return sd_bus_error_setf(
			error, IOD_ERROR_NOT_MAPPED,
			"%" PRIu64 " dirty page(s) of round %" PRIu64
			" are mapped by no IOVA now (harvested before an Unmap), so they have no IOVA "
			"to be reported at: ask with space \"gpa\". The round stays pending",
			unmapped, res->round);
	}
	if (r < 0)
		return iod_bus_error_kernel(error, r, "Failed to encode the dirty ranges");

	/* The round stays pending until the client acknowledges it, as for Harvest: a reply
	 * that is lost, or a daemon killed before it went out, must not lose the round. */
	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_append(reply, "t", res->round);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(tt)");
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = sd_bus_message_append(reply, "(tt)", ranges[i].start, ranges[i].length);
		if (r < 0)
			return r;
	}
	r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	r = sd_bus_message_append(reply, "btbt", (int)truncated, res->dirty_pages,
				  (int)res->precise, res->duration_usec);
	if (r < 0)
		return r;

	send_round_changed(s, req->peek);
	return sd_bus_send(NULL, reply, NULL);
}

/* The end of a round whose reading ran on the harvest worker (harvest-worker.h): on the
 * event loop's thread, as the handler would have gone on. */
static void harvest_done(struct iod_session *s, sd_bus_message *m,
			 const struct iod_harvest_request *req, int read_result, uint64_t t0)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct iod_harvest_result res;
	struct iod_reason why = {};
	int r;

	r = iod_session_harvest_end(s, req->peek, read_result, t0, &res, &why);
	harvest_persist(s, req->peek || r < 0, req->failed_before);
	if (r >= 0 && res.hwpts_changed) {
		(void)iod_persist_save(iod_manager_of(s->ctx));
		(void)iod_bus_emit_session_changed(s->ctx, s->path, "Hwpts", "TrackingMode",
						   "Precise", NULL);
	}
	if (r < 0)
		r = reply_reason(&error, r, &why);
	else if (req->ranges)
		r = reply_ranges(s, m, req, &res, &error);
	else
		r = reply_harvest(s, m, req, &res, &error);
	if (sd_bus_error_is_set(&error))
		(void)sd_bus_reply_method_error(m, &error);
	else if (r < 0)
		(void)sd_bus_reply_method_errno(m, r, NULL);
	sd_bus_error_free(&error);
}

/* Start a round for m: checked here, read on the worker, answered by harvest_done(). */
static int harvest_start(sd_bus_message *m, struct iod_session *s, struct iod_harvest_request *req,
			 sd_bus_error *error)
{
	struct iod_reason why = {};
	uint64_t t0 = iod_now_usec();
	int r;

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	req->failed_before = s->failed;
	r = iod_session_harvest_begin(s, &why);
	if (r < 0) {
		harvest_persist(s, true, req->failed_before);
		return reply_reason(error, r, &why);
	}
	iod_harvest_start(s, sd_bus_get_event(sd_bus_message_get_bus(m)), m, req, t0, harvest_done);
	return 1;
}

static int method_harvest(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct harvest_options o = {};
	struct iod_harvest_request req;
	int r;

	HOLD_WHILE_HARVESTING(m, userdata, method_harvest);

	r = iod_bus_read_options(m, harvest_options_table, &o, error);
	if (r < 0)
		return r;

	req = (struct iod_harvest_request){.peek = o.peek};
	return harvest_start(m, userdata, &req, error);
}

static int method_harvest_ranges(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct harvest_options o = {.space = "gpa", .max_ranges = s->ctx->config.limits.ranges};
	struct iod_harvest_request req;
	struct iod_reason why = {};
	char q[IOD_QUOTE_MAX];
	bool iova;
	int r;

	HOLD_WHILE_HARVESTING(m, userdata, method_harvest_ranges);

	r = iod_bus_read_options(m, ranges_options_table, &o, error);
	if (r < 0)
		return r;
	if (strcmp(o.space, "gpa") == 0)
		iova = false;
	else if (strcmp(o.space, "iova") == 0)
		iova = true;
	else
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Option \"space\" must be \"gpa\" or \"iova\", not \"%s\"",
					 iod_quote(o.space, q));
	if (o.max_ranges == 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Option \"max_ranges\" must be at least 1");
	r = iod_limits_check_ranges(&s->ctx->config.limits, o.max_ranges, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	req = (struct iod_harvest_request){
		.ranges = true, .peek = o.peek, .iova_space = iova, .max_ranges = o.max_ranges};
	return harvest_start(m, s, &req, error);
}

struct rate_options {
	uint64_t interval_usec;
	uint64_t window_usec;
};

static const struct iod_bus_option rate_options_table[] = {
	{"interval_usec", 't', offsetof(struct rate_options, interval_usec)},
	{"window_usec", 't', offsetof(struct rate_options, window_usec)},
	{},
};

static int append_rate(sd_bus_message *reply, const struct iod_rate_result *res)
{
	return sd_bus_message_append(reply, "ttt", res->dirty_pages, res->pages_per_sec,
				     res->working_set_pages);
}

static int method_get_dirty_rate(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct rate_options o = {.interval_usec = IOD_RATE_INTERVAL_DEFAULT_USEC,
				 .window_usec = IOD_RATE_WINDOW_DEFAULT_USEC};
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct iod_rate_result vm;
	struct iod_reason why = {};
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_get_dirty_rate);

	r = iod_bus_read_options(m, rate_options_table, &o, error);
	if (r < 0)
		return r;
	if (o.interval_usec < IOD_RATE_INTERVAL_MIN_USEC ||
	    o.interval_usec > IOD_RATE_INTERVAL_MAX_USEC)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Option \"interval_usec\" must be between %" PRIu64
					 " (10 ms) and %" PRIu64 " (1 min), not %" PRIu64,
					 IOD_RATE_INTERVAL_MIN_USEC, IOD_RATE_INTERVAL_MAX_USEC,
					 o.interval_usec);
	if (o.window_usec < o.interval_usec || o.window_usec > IOD_RATE_WINDOW_MAX_USEC)
		return sd_bus_error_setf(
			error, SD_BUS_ERROR_INVALID_ARGS,
			"Option \"window_usec\" must be at least the interval (%" PRIu64
			") and at most %" PRIu64 " (1 h), not %" PRIu64,
			o.interval_usec, IOD_RATE_WINDOW_MAX_USEC, o.window_usec);
	if (o.window_usec / o.interval_usec > IOD_RATE_MAX_SAMPLES)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "A window of %" PRIu64
					 " us holds more than %d samples of %" PRIu64
					 " us: make the interval longer or the window shorter",
					 o.window_usec, IOD_RATE_MAX_SAMPLES, o.interval_usec);

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	r = iod_rate_sampler_request(s, sd_bus_get_event(sd_bus_message_get_bus(m)),
				     o.interval_usec, o.window_usec, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	r = iod_rate_query(s->rate, o.window_usec, IOD_RATE_ALL_HWPTS, &vm);
	if (r < 0)
		return iod_bus_error_kernel(error, r, "Failed to compute the dirty rate");
	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_append(reply, "tt", vm.window_usec, vm.samples);
	if (r >= 0)
		r = append_rate(reply, &vm);
	if (r >= 0)
		r = sd_bus_message_append(reply, "b", (int)(vm.exact && iod_session_precise(s)));
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'a', "(uaottt)");
	for (size_t i = 0; r >= 0 && i < s->n_hwpts; i++) {
		const struct iod_session_hwpt *h = &s->hwpts[i];
		struct iod_rate_result one;

		if (!h->hw.dirty_capable || !h->hw.tracking)
			continue; /* a fallback HWPT has no rate: Precise says so */
		r = iod_rate_query(s->rate, o.window_usec, h->hw.id, &one);
		if (r < 0)
			return iod_bus_error_kernel(error, r, "Failed to compute the dirty rate");
		r = sd_bus_message_open_container(reply, 'r', "uaottt");
		if (r >= 0)
			r = sd_bus_message_append(reply, "u", h->hw.id);
		if (r >= 0)
			r = sd_bus_message_open_container(reply, 'a', "o");
		for (size_t j = 0; r >= 0 && j < s->n_devices; j++)
			if (s->devices[j]->hwpt_id == h->hw.id)
				r = sd_bus_message_append(reply, "o", s->devices[j]->path);
		if (r >= 0)
			r = sd_bus_message_close_container(reply);
		if (r >= 0)
			r = append_rate(reply, &one);
		if (r >= 0)
			r = sd_bus_message_close_container(reply);
	}
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int method_acknowledge(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct iod_reason why = {};
	uint64_t round;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_acknowledge);

	r = sd_bus_message_read(m, "t", &round);
	if (r < 0)
		return r;
	if (round == 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Round 0 does not exist: rounds count from 1");

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	r = iod_session_acknowledge(s, round, &why);
	if (r < 0)
		return reply_reason(error, r, &why);

	(void)iod_persist_save(iod_manager_of(s->ctx));
	(void)iod_bus_emit_session_changed(s->ctx, s->path, "PendingRound", NULL);
	return sd_bus_reply_method_return(m, NULL);
}

static int method_claim(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	const char *sender = sd_bus_message_get_sender(m);
	uid_t uid;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_claim);

	r = iod_bus_query_uid(m, &uid, error);
	if (r < 0)
		return r;
	if (uid != 0 && uid != s->uid)
		return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
					 "Session %s belongs to uid %u", s->name, (unsigned)s->uid);
	if (s->owner && sender && strcmp(s->owner, sender) == 0)
		return sd_bus_reply_method_return(m, NULL);
	if (s->owner && uid != 0)
		return sd_bus_error_setf(error, IOD_ERROR_BUSY,
					 "Session %s is owned by %s, which is still connected",
					 s->name, s->owner);

	r = iod_session_set_owner(s, sender);
	if (r < 0)
		return sd_bus_error_set_errnof(error, r, "Failed to track the new owner: %s",
					       strerror(-r));
	/* The channel was the old owner's: the new one opens its own. */
	iod_event_channel_close(s);
	log_info("Session %s claimed by %s (uid %u).", s->name, sender, (unsigned)uid);

	(void)iod_persist_save(iod_manager_of(s->ctx));
	(void)iod_bus_emit_session_changed(s->ctx, s->path, "Owner", "State", NULL);
	return sd_bus_reply_method_return(m, NULL);
}

static int method_destroy(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s = userdata;
	struct iod_manager *mgr = iod_manager_of(s->ctx);
	_cleanup_free_ char *name = NULL, *path = NULL;
	int r;
	HOLD_WHILE_HARVESTING(m, userdata, method_destroy);

	r = check_caller(s, m, error);
	if (r < 0)
		return r;

	name = strdup(s->name);
	path = strdup(s->path);
	iod_manager_destroy_session(mgr, s); /* s is freed */
	(void)iod_persist_save(mgr);
	if (name && path)
		(void)iod_bus_emit_session_removed(&mgr->ctx, name, path);
	return sd_bus_reply_method_return(m, NULL);
}

/* --- properties ------------------------------------------------------------------------- */

static IOD_BUS_DEFINE_PROPERTY_GET(property_get_state, "s", struct iod_session,
				   iod_session_state_string);
static IOD_BUS_DEFINE_PROPERTY_GET(property_get_tracking_mode, "s", struct iod_session,
				   iod_session_tracking_mode_string);
static IOD_BUS_DEFINE_PROPERTY_GET(property_get_precise, "b", struct iod_session,
				   iod_session_precise);
static IOD_BUS_DEFINE_PROPERTY_GET(property_get_log_complete, "b", struct iod_session,
				   iod_session_log_complete);
static IOD_BUS_DEFINE_PROPERTY_GET(property_get_pending_round, "t", struct iod_session,
				   iod_session_pending_round);
static IOD_BUS_DEFINE_PROPERTY_GET_ENUM(property_get_mode, iod_session_mode, enum iod_session_mode);
static IOD_BUS_DEFINE_PROPERTY_GET_ENUM(property_get_policy, iod_disconnect_policy,
					enum iod_disconnect_policy);
static IOD_BUS_DEFINE_PROPERTY_GET_REF(property_get_tracked_bytes, "t", struct iod_dirty_log *,
				       iod_log_tracked_bytes);
static IOD_BUS_DEFINE_PROPERTY_GET_REF(property_get_rounds, "t", struct iod_dirty_log *,
				       iod_log_rounds);
static IOD_BUS_DEFINE_PROPERTY_GET_REF(property_get_mapped_bytes, "t", struct iod_iova_map *,
				       iod_iova_map_bytes);

static uint32_t mapping_count(const struct iod_iova_map *map)
{
	return (uint32_t)iod_iova_map_count(map);
}

static IOD_BUS_DEFINE_PROPERTY_GET_REF(property_get_mappings, "u", struct iod_iova_map *,
				       mapping_count);

static int property_get_devices(sd_bus *bus, const char *path, const char *interface,
				const char *property, sd_bus_message *reply, void *userdata,
				sd_bus_error *error)
{
	struct iod_session *s = userdata;
	int r;

	r = sd_bus_message_open_container(reply, 'a', "o");
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->n_devices; i++) {
		r = sd_bus_message_append(reply, "o", s->devices[i]->path);
		if (r < 0)
			return r;
	}
	return sd_bus_message_close_container(reply);
}

static int property_get_regions(sd_bus *bus, const char *path, const char *interface,
				const char *property, sd_bus_message *reply, void *userdata,
				sd_bus_error *error)
{
	struct iod_session *s = userdata;
	int r;

	r = sd_bus_message_open_container(reply, 'a', "(ttt)");
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->n_regions; i++) {
		r = sd_bus_message_append(reply, "(ttt)", s->regions[i].gpa, s->regions[i].length,
					  s->regions[i].offset);
		if (r < 0)
			return r;
	}
	return sd_bus_message_close_container(reply);
}

static int property_get_hwpts(sd_bus *bus, const char *path, const char *interface,
			      const char *property, sd_bus_message *reply, void *userdata,
			      sd_bus_error *error)
{
	struct iod_session *s = userdata;
	int r;

	r = sd_bus_message_open_container(reply, 'a', "(ubbu)");
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->n_hwpts; i++) {
		const struct iod_session_hwpt *h = &s->hwpts[i];

		r = sd_bus_message_append(reply, "(ubbu)", h->hw.id, (int)h->hw.dirty_capable,
					  (int)h->hw.tracking, h->users);
		if (r < 0)
			return r;
	}
	return sd_bus_message_close_container(reply);
}

#define SESSION_OFF(f) offsetof(struct iod_session, f)
#define EMITS SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE
#define CONST SD_BUS_VTABLE_PROPERTY_CONST
#define UNPRIV SD_BUS_VTABLE_UNPRIVILEGED

const sd_bus_vtable iod_session_vtable[] = {
	SD_BUS_VTABLE_START(0),

	SD_BUS_PROPERTY("Name", "s", NULL, SESSION_OFF(name), CONST),
	SD_BUS_PROPERTY("Mode", "s", property_get_mode, SESSION_OFF(mode), CONST),
	SD_BUS_PROPERTY("State", "s", property_get_state, 0, EMITS),
	SD_BUS_PROPERTY("Tracking", "b", iod_bus_property_get_bool, SESSION_OFF(tracking), EMITS),
	SD_BUS_PROPERTY("TrackingMode", "s", property_get_tracking_mode, 0, EMITS),
	SD_BUS_PROPERTY("Precise", "b", property_get_precise, 0, EMITS),
	SD_BUS_PROPERTY("LogComplete", "b", property_get_log_complete, 0, EMITS),
	SD_BUS_PROPERTY("FailureReason", "s", NULL, SESSION_OFF(failure), EMITS),
	SD_BUS_PROPERTY("Owner", "s", NULL, SESSION_OFF(owner), EMITS),
	SD_BUS_PROPERTY("OwnerUID", "u", NULL, SESSION_OFF(uid), CONST),
	SD_BUS_PROPERTY("DisconnectPolicy", "s", property_get_policy,
			SESSION_OFF(options.disconnect_policy), CONST),
	SD_BUS_PROPERTY("VIommu", "b", iod_bus_property_get_bool, SESSION_OFF(options.viommu),
			CONST),
	SD_BUS_PROPERTY("Nested", "b", iod_bus_property_get_bool, SESSION_OFF(options.nested),
			CONST),
	SD_BUS_PROPERTY("HugePages", "b", iod_bus_property_get_bool,
			SESSION_OFF(options.huge_pages), CONST),
	SD_BUS_PROPERTY("PageSize", "t", NULL, SESSION_OFF(options.page_size), CONST),
	SD_BUS_PROPERTY("IoasId", "u", NULL, SESSION_OFF(ioas_id), EMITS),
	SD_BUS_PROPERTY("Hwpts", "a(ubbu)", property_get_hwpts, 0, EMITS),
	SD_BUS_PROPERTY("Devices", "ao", property_get_devices, 0, EMITS),
	SD_BUS_PROPERTY("Regions", "a(ttt)", property_get_regions, 0, EMITS),
	SD_BUS_PROPERTY("Mappings", "u", property_get_mappings, SESSION_OFF(map), EMITS),
	SD_BUS_PROPERTY("MappedBytes", "t", property_get_mapped_bytes, SESSION_OFF(map), EMITS),
	SD_BUS_PROPERTY("TrackedBytes", "t", property_get_tracked_bytes, SESSION_OFF(log), EMITS),
	SD_BUS_PROPERTY("LogBytes", "t", NULL, SESSION_OFF(log_bytes), EMITS),
	SD_BUS_PROPERTY("Rounds", "t", property_get_rounds, SESSION_OFF(log), EMITS),
	SD_BUS_PROPERTY("PendingRound", "t", property_get_pending_round, 0, EMITS),
	SD_BUS_PROPERTY("LastRoundDirtyPages", "t", NULL, SESSION_OFF(last_dirty_pages), EMITS),
	SD_BUS_PROPERTY("LastRoundDurationUSec", "t", NULL, SESSION_OFF(last_duration_usec), EMITS),
	SD_BUS_PROPERTY("DirtyRate", "t", NULL, SESSION_OFF(dirty_rate), EMITS),
	SD_BUS_PROPERTY("LastRoundTimestamp", "t", NULL, SESSION_OFF(last_round_timestamp), EMITS),
	/* Changes with every channel batch: read it, no signal. */
	SD_BUS_PROPERTY("EventSequence", "t", NULL, SESSION_OFF(event_seq), 0),

	SD_BUS_METHOD_WITH_ARGS("AddMemory",
				SD_BUS_ARGS("h", memfd, "t", offset, "t", size, "t", gpa),
				SD_BUS_NO_RESULT, method_add_memory, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("AddRegion", SD_BUS_ARGS("t", gpa, "t", size), SD_BUS_NO_RESULT,
				method_add_region, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("AttachDevice", SD_BUS_ARGS("s", device, "a{sv}", options),
				SD_BUS_RESULT("o", path), method_attach_device, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("AttachDeviceFd", SD_BUS_ARGS("h", fd, "a{sv}", options),
				SD_BUS_RESULT("o", path), method_attach_device_fd, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("DetachDevice", SD_BUS_ARGS("o", path), SD_BUS_NO_RESULT,
				method_detach_device, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("Map", SD_BUS_ARGS("t", iova, "t", gpa, "t", size),
				SD_BUS_NO_RESULT, method_map, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("Unmap", SD_BUS_ARGS("t", iova, "t", size), SD_BUS_NO_RESULT,
				method_unmap, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("MapBatch", SD_BUS_ARGS("a(ttt)", maps), SD_BUS_NO_RESULT,
				method_map_batch, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("UnmapBatch", SD_BUS_ARGS("a(tt)", ranges), SD_BUS_NO_RESULT,
				method_unmap_batch, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("MarkDirty", SD_BUS_ARGS("a(tt)", ranges), SD_BUS_NO_RESULT,
				method_mark_dirty, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("OpenEventChannel", SD_BUS_ARGS("a{sv}", options),
				SD_BUS_RESULT("h", channel, "t", last_sequence),
				method_open_event_channel, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("Start", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_start, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("Stop", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_stop, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("Harvest", SD_BUS_ARGS("a{sv}", options),
				SD_BUS_RESULT("t", round, "h", log, "t", dirty_pages, "b", precise,
					      "t", duration_usec),
				method_harvest, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("HarvestRanges", SD_BUS_ARGS("a{sv}", options),
				SD_BUS_RESULT("t", round, "a(tt)", ranges, "b", truncated, "t",
					      dirty_pages, "b", precise, "t", duration_usec),
				method_harvest_ranges, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("GetDirtyRate", SD_BUS_ARGS("a{sv}", options),
				SD_BUS_RESULT("t", window_usec, "t", samples, "t", dirty_pages, "t",
					      pages_per_sec, "t", working_set_pages, "b", precise,
					      "a(uaottt)", hwpts),
				method_get_dirty_rate, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("Acknowledge", SD_BUS_ARGS("t", round), SD_BUS_NO_RESULT,
				method_acknowledge, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("Claim", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_claim, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("Destroy", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_destroy,
				UNPRIV),

	SD_BUS_SIGNAL_WITH_ARGS("Failed", SD_BUS_ARGS("s", reason), 0),
	SD_BUS_SIGNAL_WITH_ARGS("DeviceLost", SD_BUS_ARGS("o", device, "s", reason), 0),

	SD_BUS_VTABLE_END,
};

int iod_session_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
			    void **found, sd_bus_error *error)
{
	struct iod_session *s = iod_manager_find_session_by_path(userdata, path);

	if (!s)
		return 0;
	*found = s;
	return 1;
}

int iod_session_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
				sd_bus_error *error)
{
	struct iod_manager *m = userdata;
	char **l;
	size_t n = 0, k = 0;

	for (size_t i = 0; i < m->ctx.n_sessions; i++)
		n += 1 + m->ctx.sessions[i]->n_devices;
	l = calloc(n + 1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		struct iod_session *s = m->ctx.sessions[i];

		l[k] = strdup(s->path);
		if (!l[k])
			goto oom;
		k++;
		for (size_t j = 0; j < s->n_devices; j++) {
			l[k] = strdup(s->devices[j]->path);
			if (!l[k])
				goto oom;
			k++;
		}
	}
	*nodes = l;
	return 0;

oom:
	while (k > 0)
		free(l[--k]);
	free(l);
	return -ENOMEM;
}
