/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The reference pre-copy migration (see migrate.h): an sd-bus client of iodirtyd.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "iodirty.h"
#include "migrate.h"

struct iod_migrate {
	sd_bus *bus;
	struct iod_migrate_config c;
	struct iod_migrate_ops ops;
	void *userdata;

	const uint8_t *mem;
	bool mem_mapped;
	char *path;
	bool session_made;
	sd_bus_slot *slot_owner, *slot_lost, *slot_failed;

	/* events seen by the signal handlers, handled between steps */
	bool daemon_gone; /* the name lost its owner (or changed owner) */
	unsigned devices_lost_new;
	bool failed;
	char *failure;

	/* the copy */
	uint64_t copied_total;
	uint64_t copy_usec_total;
	uint64_t batch_left;
	bool ticking;
	uint64_t tick_usec; /* the workload's steps in the current round (not the round's cost) */
	uint64_t pace_t0, pace_bytes; /* max_bandwidth: the round's first write, bytes since */

	/* the downtime model (estimate()) */
	uint64_t page_size; /* the dirty log's */
	uint64_t t_harvested; /* the last Harvest reply, or Start: where the log's count begins */
	uint64_t t_round; /* the current round began */
	uint64_t t_pause; /* the final round: the pause began */
	struct iod_migrate_estimate est; /* if the VM were paused after the last round */
	/* the last pre-copy rounds' Harvest calls and fixed costs, newest first */
	uint64_t harvests[3], fixed[3];

	struct iod_migrate_result res;
	char error[512];
};

static void sleep_usec(uint64_t usec)
{
	struct timespec ts = {.tv_sec = (time_t)(usec / 1000000),
			      .tv_nsec = (long)(usec % 1000000) * 1000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

const char *iod_migrate_status_to_string(enum iod_migrate_status s)
{
	switch (s) {
	case IOD_MIGRATE_OK:
		return "ok";
	case IOD_MIGRATE_ERROR:
		return "error";
	case IOD_MIGRATE_DAEMON_LOST:
		return "daemon-lost";
	case IOD_MIGRATE_DEVICE_LOST:
		return "device-lost";
	case IOD_MIGRATE_SESSION_FAILED:
		return "session-failed";
	case IOD_MIGRATE_DEST_FAILED:
		return "destination-failed";
	}
	return "unknown";
}

static int failf(struct iod_migrate *m, enum iod_migrate_status status, int r, const char *format,
		 ...) _printf_(4, 5);
static int failf(struct iod_migrate *m, enum iod_migrate_status status, int r, const char *format,
		 ...)
{
	va_list ap;

	/* the first failure is the one to report */
	if (m->res.status == IOD_MIGRATE_OK) {
		va_start(ap, format);
		vsnprintf(m->error, sizeof(m->error), format, ap);
		va_end(ap);
		m->res.status = status;
	}
	return r < 0 ? r : -EIO;
}

/* The daemon itself is gone (as opposed to refusing): the bus says so. */
static bool error_is_daemon_gone(const sd_bus_error *e, int r)
{
	return sd_bus_error_has_name(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
	       sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY) ||
	       sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER) ||
	       sd_bus_error_has_name(e, "org.freedesktop.DBus.Error.Disconnected");
}

/* --- signals -------------------------------------------------------------------------------- */

static int on_owner_changed(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	struct iod_migrate *m = userdata;
	const char *name, *old, *new;

	if (sd_bus_message_read(msg, "sss", &name, &old, &new) < 0)
		return 0;
	if (strcmp(name, IOD_BUS_NAME) == 0 && old[0])
		m->daemon_gone = true;
	return 0;
}

static int on_device_lost(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	struct iod_migrate *m = userdata;
	const char *dev = "?", *reason = "?";

	(void)sd_bus_message_read(msg, "os", &dev, &reason);
	fprintf(stderr, "iodirty-migrate: device %s of session %s was lost: %s\n", dev,
		m->c.session, reason);
	m->devices_lost_new++;
	m->res.devices_lost++;
	return 0;
}

static int on_failed(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	struct iod_migrate *m = userdata;
	const char *reason = "?";

	(void)sd_bus_message_read(msg, "s", &reason);
	m->failed = true;
	free(m->failure);
	m->failure = strdup(reason);
	return 0;
}

/* Dispatch what arrived (signals), without blocking. */
static int pump(struct iod_migrate *m)
{
	int r;

	while ((r = sd_bus_process(m->bus, NULL)) > 0)
		;
	if (r < 0)
		return failf(m, IOD_MIGRATE_ERROR, r, "Lost the bus connection: %s", strerror(-r));
	return 0;
}

static int watch_session(struct iod_migrate *m)
{
	int r;

	r = sd_bus_match_signal(m->bus, &m->slot_lost, IOD_BUS_NAME, m->path, IOD_SESSION_INTERFACE,
				"DeviceLost", on_device_lost, m);
	if (r >= 0)
		r = sd_bus_match_signal(m->bus, &m->slot_failed, IOD_BUS_NAME, m->path,
					IOD_SESSION_INTERFACE, "Failed", on_failed, m);
	if (r < 0)
		return failf(m, IOD_MIGRATE_ERROR, r, "Failed to watch session signals: %s",
			     strerror(-r));
	return 0;
}

/* --- calls ---------------------------------------------------------------------------------- */

/* A session method; on failure the error is recorded and -EPIPE means "the daemon is gone". */
static int scall(struct iod_migrate *m, const char *member, sd_bus_message **reply,
		 const char *types, ...)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	va_list ap;
	int r;

	va_start(ap, types);
	r = sd_bus_call_methodv(m->bus, IOD_BUS_NAME, m->path, IOD_SESSION_INTERFACE, member,
				&error, reply, types, ap);
	va_end(ap);
	if (r >= 0)
		return r;
	if (error_is_daemon_gone(&error, r)) {
		m->daemon_gone = true;
		snprintf(m->error, sizeof(m->error), "%s: iodirtyd went away (%s)", member,
			 error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return -EPIPE;
	}
	if (sd_bus_error_has_name(&error, "org.iodirty.Error.SessionFailed"))
		r = failf(m, IOD_MIGRATE_SESSION_FAILED, r, "%s: %s", member, error.message);
	else
		r = failf(m, IOD_MIGRATE_ERROR, r, "%s: %s%s%s%s", member,
			  error.message ? error.message : strerror(-r), error.name ? " (" : "",
			  error.name ? error.name : "", error.name ? ")" : "");
	sd_bus_error_free(&error);
	return r;
}

static int get_session_path(struct iod_migrate *m, sd_bus_error *error)
{
	sd_bus_message *reply = NULL;
	const char *path;
	int r;

	r = sd_bus_call_method(m->bus, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			       "GetSession", error, &reply, "s", m->c.session);
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &path);
	if (r >= 0) {
		free(m->path);
		m->path = strdup(path);
		r = m->path ? 0 : -ENOMEM;
	}
	sd_bus_message_unref(reply);
	return r;
}

/*
 * The daemon went away. With the retry policy wait for it to come back, find the session
 * again and claim it: the next Harvest then delivers everything not acknowledged.
 */
static int handle_daemon_gone(struct iod_migrate *m, const char *during)
{
	uint64_t deadline = iod_now_usec() + m->c.restart_timeout_usec;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	if (m->c.on_daemon_restart != IOD_MIGRATE_RETRY)
		return failf(m, IOD_MIGRATE_DAEMON_LOST, -EPIPE,
			     "iodirtyd went away %s (policy --on-daemon-restart=abort): the "
			     "migration of session %s is abandoned, its destination is incomplete",
			     during, m->c.session);
	fprintf(stderr,
		"iodirty-migrate: iodirtyd went away %s, waiting up to %" PRIu64
		" s for it to come back\n",
		during, m->c.restart_timeout_usec / 1000000);

	for (;;) {
		sd_bus_message *reply = NULL;

		r = sd_bus_call_method(m->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				       "org.freedesktop.DBus", "GetNameOwner", NULL, &reply, "s",
				       IOD_BUS_NAME);
		sd_bus_message_unref(reply);
		if (r >= 0)
			break;
		if (iod_now_usec() >= deadline)
			return failf(m, IOD_MIGRATE_DAEMON_LOST, -ETIMEDOUT,
				     "iodirtyd went away %s and did not come back within %" PRIu64
				     " s: the migration of session %s is abandoned",
				     during, m->c.restart_timeout_usec / 1000000, m->c.session);
		(void)sd_bus_wait(m->bus, 100000);
		r = pump(m);
		if (r < 0)
			return r;
	}
	r = pump(m);
	if (r < 0)
		return r;
	m->daemon_gone = false;

	r = get_session_path(m, &error);
	if (r < 0) {
		r = failf(m, IOD_MIGRATE_DAEMON_LOST, r,
			  "iodirtyd restarted %s and session %s did not survive (%s): its dirty "
			  "log is gone, the destination cannot be completed; migrate again from "
			  "a full copy",
			  during, m->c.session, error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return r;
	}
	sd_bus_error_free(&error);
	/* A restored session has lost its owner's bus name: take it back. */
	r = sd_bus_call_method(m->bus, IOD_BUS_NAME, m->path, IOD_SESSION_INTERFACE, "Claim",
			       &error, NULL, NULL);
	if (r < 0 && !sd_bus_error_has_name(&error, "org.iodirty.Error.Busy")) {
		r = failf(m, IOD_MIGRATE_DAEMON_LOST, r,
			  "iodirtyd restarted %s; claiming session %s failed: %s", during,
			  m->c.session, error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return r;
	}
	sd_bus_error_free(&error);
	m->res.daemon_restarts++;
	fprintf(stderr, "iodirty-migrate: iodirtyd is back, session %s survived: going on\n",
		m->c.session);
	return 0;
}

/* Between steps: signals that change the course of the run. */
static int check_events(struct iod_migrate *m, const char *during)
{
	int r;

	r = pump(m);
	if (r < 0)
		return r;
	if (m->failed)
		return failf(m, IOD_MIGRATE_SESSION_FAILED, -EIO,
			     "Session %s failed, its dirty log is incomplete: %s", m->c.session,
			     m->failure ? m->failure : "?");
	if (m->devices_lost_new) {
		m->devices_lost_new = 0;
		if (m->c.on_device_lost != IOD_MIGRATE_CONTINUE)
			return failf(m, IOD_MIGRATE_DEVICE_LOST, -ENODEV,
				     "A device of session %s was lost %s (policy "
				     "--on-device-lost=abort)",
				     m->c.session, during);
		fprintf(stderr,
			"iodirty-migrate: going on without it (--on-device-lost=continue)\n");
	}
	if (m->daemon_gone)
		return handle_daemon_gone(m, during);
	return 0;
}

/* --- setting up ----------------------------------------------------------------------------- */

static int append_options(struct iod_migrate *m, sd_bus_message *msg)
{
	int r;

	r = sd_bus_message_open_container(msg, 'a', "{sv}");
	if (r >= 0 && m->c.viommu)
		r = sd_bus_message_append(msg, "{sv}", "viommu", "b", 1);
	if (r >= 0 && m->c.page_size)
		r = sd_bus_message_append(msg, "{sv}", "page_size", "t", m->c.page_size);
	if (r >= 0 && (m->c.keep_session || m->c.resumable))
		r = sd_bus_message_append(msg, "{sv}", "disconnect_policy", "s", "keep");
	if (r >= 0)
		r = sd_bus_message_close_container(msg);
	return r;
}

static int create_session(struct iod_migrate *m)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *msg = NULL, *reply = NULL;
	const char *path;
	int r;

	r = sd_bus_message_new_method_call(
		m->bus, &msg, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
		m->c.mode == IOD_MIGRATE_ADOPT ? "AdoptSession" : "CreateSession");
	if (r >= 0)
		r = sd_bus_message_append(msg, "s", m->c.session);
	if (r >= 0 && m->c.mode == IOD_MIGRATE_ADOPT) {
		r = sd_bus_message_append(msg, "hu", m->c.iommufd, m->c.ioas);
		if (r >= 0)
			r = sd_bus_message_append_array(msg, 'u', m->c.hwpts,
							m->c.n_hwpts * sizeof(uint32_t));
	}
	if (r >= 0)
		r = append_options(m, msg);
	if (r >= 0)
		r = sd_bus_call(m->bus, msg, 0, &error, &reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &path);
	if (r >= 0) {
		m->path = strdup(path);
		r = m->path ? 0 : -ENOMEM;
	}
	if (r < 0)
		r = failf(m,
			  error_is_daemon_gone(&error, r) ? IOD_MIGRATE_DAEMON_LOST
							  : IOD_MIGRATE_ERROR,
			  r, "Creating session %s: %s", m->c.session,
			  error.message ? error.message : strerror(-r));
	else
		m->session_made = true;
	sd_bus_error_free(&error);
	sd_bus_message_unref(msg);
	sd_bus_message_unref(reply);
	return r;
}

/* Tracking is on (from now, the log counts what the devices write): start the workload. */
static int tracking_started(struct iod_migrate *m)
{
	int r;

	m->t_harvested = iod_now_usec();
	if (m->ops.started) {
		r = m->ops.started(m, m->userdata);
		if (r < 0)
			return failf(m, IOD_MIGRATE_ERROR, r, "Starting the workload failed: %s",
				     strerror(-r));
	}
	return 0;
}

static int setup(struct iod_migrate *m)
{
	int r;

	r = create_session(m);
	if (r < 0)
		return r;
	r = watch_session(m);
	if (r < 0)
		return r;

	if (m->c.mode == IOD_MIGRATE_OWNER)
		r = scall(m, "AddMemory", NULL, "httt", m->c.memfd, m->c.offset, m->c.size,
			  m->c.gpa);
	else
		r = scall(m, "AddRegion", NULL, "tt", m->c.gpa, m->c.size);
	if (r < 0)
		return r;

	for (size_t i = 0; i < m->c.n_mappings; i++) {
		const struct iod_migrate_mapping *p = &m->c.mappings[i];

		r = scall(m, "Map", NULL, "ttt", p->iova, p->gpa, p->size);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < m->c.n_devices; i++) {
		r = scall(m, "AttachDevice", NULL, "sa{sv}", m->c.devices[i], 0);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < m->c.n_device_fds; i++) {
		r = scall(m, "AttachDeviceFd", NULL, "ha{sv}", m->c.device_fds[i], 0);
		if (r < 0)
			return r;
	}
	if (m->ops.prepare) {
		r = m->ops.prepare(m, m->userdata);
		if (r < 0)
			return failf(m, IOD_MIGRATE_ERROR, r, "Preparing the session failed: %s",
				     strerror(-r));
	}
	r = scall(m, "Start", NULL, NULL);
	if (r < 0)
		return r;
	return tracking_started(m);
}

/* A boolean or u64 property of the session, for resume_session(). */
static int session_property(struct iod_migrate *m, const char *name, char type, void *ret)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	r = sd_bus_get_property_trivial(m->bus, IOD_BUS_NAME, m->path, IOD_SESSION_INTERFACE, name,
					&error, type, ret);
	if (r < 0)
		r = failf(m, IOD_MIGRATE_ERROR, r, "Reading %s of session %s: %s", name,
			  m->c.session, error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
	return r;
}

/*
 * config.resume: the session of an earlier run, left tracking after its destination failed
 * or the run died. Find it, take it (Claim: its owner left the bus, or root takes it over),
 * and check that its log still covers everything since its last acknowledged round.
 */
static int resume_session(struct iod_migrate *m)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int tracking = 0, complete = 0;
	uint64_t rounds = 0, pending = 0;
	const char *what;
	bool kept;
	int r;

	r = get_session_path(m, &error);
	if (r < 0) {
		r = failf(m, IOD_MIGRATE_ERROR, r, "No session %s to resume: %s", m->c.session,
			  error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return r;
	}
	r = sd_bus_call_method(m->bus, IOD_BUS_NAME, m->path, IOD_SESSION_INTERFACE, "Claim",
			       &error, NULL, NULL);
	if (r < 0) {
		r = failf(m, IOD_MIGRATE_ERROR, r,
			  "Claiming session %s failed: %s (is the run that left it still going?)",
			  m->c.session, error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return r;
	}
	m->session_made = true; /* ours now: stopped and destroyed at the end, as if made here */
	r = watch_session(m);
	if (r >= 0)
		r = session_property(m, "LogComplete", 'b', &complete);
	if (r >= 0)
		r = session_property(m, "Tracking", 'b', &tracking);
	if (r >= 0)
		r = session_property(m, "Rounds", 't', &rounds);
	if (r < 0)
		return r;
	if (!complete)
		return failf(
			m, IOD_MIGRATE_SESSION_FAILED, -EIO,
			"Session %s failed, its dirty log is incomplete: it cannot be resumed; "
			"migrate again from a full copy",
			m->c.session);
	if (!tracking)
		return failf(m, IOD_MIGRATE_ERROR, -ESTALE,
			     "Session %s is not tracking (it was stopped): its log does not cover "
			     "the time since, it cannot be resumed; destroy it and migrate again",
			     m->c.session);
	if (r >= 0)
		r = session_property(m, "PendingRound", 't', &pending);
	if (r < 0)
		return r;
	/*
	 * Rounds are acknowledged only once the destination confirmed them, one number per
	 * Harvest. The destination's last confirmed round C covers the session when the
	 * session's last round is C (acknowledged or not), or C + 1 still pending (harvested,
	 * never confirmed): then every page written since C is in the log. Anything else (a
	 * round acknowledged by another destination, C from another run) needs a full round.
	 */
	kept = !m->c.resume_full && rounds > 0 &&
	       (rounds == m->c.resume_confirmed ||
		(pending == rounds && m->c.resume_confirmed + 1 == rounds));
	m->res.resumed = true;
	m->res.resumed_after = rounds;
	m->res.resumed_full = !kept;
	if (m->c.resume_full)
		what = "a new destination, a full round first";
	else if (rounds == 0)
		what = "its first run ended before its full copy was confirmed, a full round first";
	else if (!kept)
		what = "the destination's last confirmed round does not cover the rounds "
		       "acknowledged since, a full round first";
	else
		what = "the destination kept its memory, sending what is dirty since the last "
		       "round it confirmed";
	fprintf(stderr,
		"iodirty-migrate: resuming session %s (%" PRIu64 " round%s harvested): %s\n",
		m->c.session, rounds, rounds == 1 ? "" : "s", what);
	return tracking_started(m);
}

/* A round begins: its clock, and the pacing and workload time counted in it. */
static void round_begin(struct iod_migrate *m)
{
	m->t_round = iod_now_usec();
	m->tick_usec = 0;
	m->pace_t0 = 0;
	m->pace_bytes = 0;
}

/* --- copying -------------------------------------------------------------------------------- */

static int tick(struct iod_migrate *m)
{
	int r;

	uint64_t t0;

	if (!m->ticking || !m->ops.tick)
		return 0;
	t0 = iod_now_usec();
	r = m->ops.tick(m, m->userdata);
	t0 = iod_now_usec() - t0;
	m->tick_usec += t0;
	if (m->pace_t0)
		m->pace_t0 += t0; /* the workload's time is not the link's */
	if (r < 0)
		return failf(m, IOD_MIGRATE_ERROR, r, "The workload failed: %s", strerror(-r));
	return 0;
}

/* Write [gpa, gpa + length) to the destination, at most max_bandwidth, ticking per batch. */
static int copy_range(struct iod_migrate *m, uint64_t gpa, uint64_t length, uint64_t *usec)
{
	while (length > 0) {
		uint64_t n = MIN(length, m->batch_left), t0 = iod_now_usec(), spent;
		int r;

		r = m->ops.write(gpa, m->mem + (gpa - m->c.gpa), n, m->userdata);
		if (r < 0)
			return failf(m, IOD_MIGRATE_DEST_FAILED, r,
				     "Writing [0x%" PRIx64 ", +0x%" PRIx64
				     ") to the destination failed: %s",
				     gpa, n, strerror(-r));
		if (m->c.max_bandwidth) {
			/* Paced over the round, not per write: a sleep that overshoots is made up
			 * by the writes after it, and the time counted is the time taken. */
			uint64_t now = iod_now_usec(), due;

			if (!m->pace_t0)
				m->pace_t0 = t0;
			m->pace_bytes += n;
			due = m->pace_t0 +
			      (uint64_t)((double)m->pace_bytes * 1e6 / (double)m->c.max_bandwidth);
			if (now < due)
				sleep_usec(due - now);
		}
		spent = iod_now_usec() - t0;
		*usec += spent;
		m->copied_total += n;
		m->copy_usec_total += spent;
		gpa += n;
		length -= n;
		m->batch_left -= n;
		if (m->batch_left == 0) {
			m->batch_left = m->c.batch_bytes;
			r = tick(m);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static uint64_t bandwidth(const struct iod_migrate *m)
{
	return m->copy_usec_total
		       ? (uint64_t)((double)m->copied_total * 1e6 / (double)m->copy_usec_total)
		       : 0;
}

static uint64_t sub_sat(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

static void push3(uint64_t v[3], uint64_t x)
{
	v[2] = v[1];
	v[1] = v[0];
	v[0] = x ? x : 1; /* 0 marks an empty slot */
}

/* The least of the last three (the newest alone until there are three). */
static uint64_t min3(const uint64_t v[3])
{
	if (!v[1] || !v[2])
		return v[0];
	return MIN(v[0], MIN(v[1], v[2]));
}

/* The median of the last three (the newest until there are three): one slow round does not
 * make the estimate. */
static uint64_t median3(const uint64_t v[3])
{
	if (!v[1] || !v[2])
		return v[0];
	return MAX(MIN(v[0], v[1]), MIN(MAX(v[0], v[1]), v[2]));
}

/*
 * The stop-and-copy if the VM were paused right after pre-copy round rd (struct
 * iod_migrate_estimate says what each part stands for). The final round's pages are the
 * ones written from the last harvest until the devices stop: this round's rate (its dirty
 * pages over the time they took to accumulate) times the time since that harvest plus the
 * pause, at most every page.
 */
static void estimate(const struct iod_migrate *m, const struct iod_migrate_round *rd, uint64_t now,
		     struct iod_migrate_estimate *e)
{
	uint64_t page = m->page_size ? m->page_size : 4096, max_pages = m->c.size / page;
	uint64_t since, bw = rd->bandwidth;
	double pages;

	*e = (struct iod_migrate_estimate){
		.pause_usec = m->c.pause_usec,
		/* the final Harvest runs with the workload stopped, as the least loaded
		 * pre-copy one did: the fastest of the last three */
		.harvest_usec = min3(m->harvests),
		.fixed_usec = median3(m->fixed),
	};
	since = sub_sat(now, m->t_harvested) + e->pause_usec;
	pages = rd->interval_usec
			? (double)rd->dirty_pages * (double)since / (double)rd->interval_usec
			: (double)rd->dirty_pages;
	e->pages = pages >= (double)max_pages ? max_pages : (uint64_t)(pages + 0.999);
	e->copy_usec = bw ? (uint64_t)((double)e->pages * (double)page * 1e6 / (double)bw) : 0;
	e->downtime_usec = e->pause_usec + e->harvest_usec + e->copy_usec + e->fixed_usec;
}

static void report(struct iod_migrate *m, struct iod_migrate_round *rd)
{
	uint64_t now = iod_now_usec();

	rd->bandwidth = bandwidth(m);
	rd->wall_usec = sub_sat(now, m->t_round);
	if (rd->final) {
		rd->est = m->est;
		rd->pause_usec = m->res.measured.pause_usec;
		rd->downtime_usec = sub_sat(now, m->t_pause);
		m->res.est = m->est;
		m->res.measured = (struct iod_migrate_estimate){
			.pages = rd->dirty_pages,
			.pause_usec = rd->pause_usec,
			.harvest_usec = rd->harvest_usec,
			.copy_usec = rd->copy_usec,
			.fixed_usec = sub_sat(rd->downtime_usec,
					      rd->pause_usec + rd->harvest_usec + rd->copy_usec),
			.downtime_usec = rd->downtime_usec,
		};
	} else if (rd->index > 0) {
		push3(m->harvests, rd->harvest_usec);
		push3(m->fixed,
		      sub_sat(rd->wall_usec, rd->harvest_usec + rd->copy_usec + m->tick_usec));
		estimate(m, rd, now, &rd->est);
		m->est = rd->est;
	}
	rd->est_downtime_usec = rd->est.downtime_usec;
	if (m->ops.round)
		m->ops.round(rd, m->userdata);
}

/*
 * Holes. The full copy may leave out what the memfd never populated: such pages read zero,
 * and so does the destination where nothing was written (skip_holes is the caller's promise).
 *
 * Why this is safe while devices write: the walk happens during the full copy, after Start,
 * one extent at a time right before it is copied. A hole seen at time T held zeros at T, so
 * skipping it is the same as copying its zeros at T. Whatever lands there later is a write
 * after Start like any other: DMA is in the dirty log (and a device can only write memory
 * that is mapped for it, pinned and hence populated first), so a later round copies it, as
 * it would for a page copied at T. A CPU write is not in the IOMMU's log, for a copied page
 * as much as for a skipped one: the VMM's own CPU dirty log must cover it either way. The
 * walk must not happen before Start: a hole filled by DMA between the walk and Start would
 * be in neither the copy nor the log.
 */

/* The log page size, for rounding extents (the session says; the configuration otherwise). */
static uint64_t hole_page(struct iod_migrate *m)
{
	uint64_t v = 0;

	if (sd_bus_get_property_trivial(m->bus, IOD_BUS_NAME, m->path, IOD_SESSION_INTERFACE,
					"PageSize", NULL, 't', &v) < 0 ||
	    v == 0 || (v & (v - 1)))
		v = m->c.page_size ? m->c.page_size : 4096;
	return v;
}

/*
 * The next populated extent of the memory at or after gpa, as [*ret_start, *ret_end) in GPA,
 * rounded outwards to page (a page partly populated is copied whole); *ret_start == *ret_end
 * == the end of the memory when nothing is populated from gpa on (ENXIO: no data up to EOF;
 * a file shorter than offset + size reads zero beyond EOF). A negative errno when the file
 * cannot tell (EINVAL, ESPIPE, ...): the caller copies the rest.
 * lseek() moves the offset of fd's open file: fd is the module's own when it could reopen it.
 */
static int next_data(struct iod_migrate *m, int fd, uint64_t gpa, uint64_t page,
		     uint64_t *ret_start, uint64_t *ret_end)
{
	uint64_t end = m->c.gpa + m->c.size, fend = m->c.offset + m->c.size, a, b;
	off_t d, h;

	d = lseek(fd, (off_t)(m->c.offset + (gpa - m->c.gpa)), SEEK_DATA);
	if (d < 0 && errno != ENXIO)
		return -errno;
	if (d < 0 || (uint64_t)d >= fend) {
		*ret_start = *ret_end = end;
		return 0;
	}
	h = lseek(fd, d, SEEK_HOLE);
	if (h < 0)
		return -errno;
	if ((uint64_t)h <= (uint64_t)d)
		return -EIO; /* not what SEEK_HOLE promises: trust nothing */
	a = m->c.gpa + ((uint64_t)d - m->c.offset);
	b = m->c.gpa + (MIN((uint64_t)h, fend) - m->c.offset);
	a = MAX(a & ~(page - 1), gpa);
	b = b > end - page ? end : MIN((b + page - 1) & ~(page - 1), end);
	*ret_start = a;
	*ret_end = b;
	return 0;
}

/* A descriptor of the memfd for the walk, or -1 when it cannot be walked (not a file). */
static int hole_fd(struct iod_migrate *m)
{
	char path[64];
	struct stat st;
	int fd;

	if (!m->c.skip_holes || m->c.memfd < 0 || fstat(m->c.memfd, &st) < 0 ||
	    !S_ISREG(st.st_mode))
		return -1;
	/* our own open file, so that lseek() leaves the caller's file offset alone */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", m->c.memfd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd >= 0 ? fd : m->c.memfd;
}

static int full_copy(struct iod_migrate *m)
{
	struct iod_migrate_round rd = {.index = 0, .precise = true};
	uint64_t end = m->c.gpa + m->c.size, page = 0;
	int fd = hole_fd(m), r = 0;

	if (fd >= 0)
		page = hole_page(m);
	round_begin(m);
	for (uint64_t gpa = m->c.gpa; gpa < end && r >= 0;) {
		uint64_t a = gpa, b = end;

		if (fd >= 0 && next_data(m, fd, gpa, page, &a, &b) < 0) {
			/* the file cannot tell its holes: copy the rest */
			if (fd != m->c.memfd)
				close(fd);
			fd = -1;
			a = gpa;
			b = end;
		}
		rd.skipped_bytes += a - gpa;
		while (a < b) {
			uint64_t n = MIN(b - a, m->c.batch_bytes);

			r = copy_range(m, a, n, &rd.copy_usec);
			if (r < 0)
				break;
			a += n;
			r = check_events(m, "during the full copy");
			if (r < 0)
				break;
		}
		gpa = b;
	}
	if (fd >= 0 && fd != m->c.memfd)
		close(fd);
	if (r < 0)
		return r;
	rd.bytes = m->c.size - rd.skipped_bytes;
	rd.dirty_pages = m->c.size / (m->c.page_size ? m->c.page_size : 4096);
	m->res.skipped_bytes = rd.skipped_bytes;
	report(m, &rd);
	return 0;
}

/* The destination has round (0: the full copy): only then may it be acknowledged. */
static int confirm(struct iod_migrate *m, uint64_t round)
{
	int r;

	if (!m->ops.confirm)
		return 0;
	r = m->ops.confirm(round, m->userdata);
	if (r < 0)
		return failf(m, IOD_MIGRATE_DEST_FAILED, r,
			     "The destination did not confirm %s%.0" PRIu64 ": %s",
			     round ? "round " : "the full copy", round, strerror(-r));
	return 0;
}

/* Copy the dirty pages of the round plane that fall in our memory. */
static int copy_dirty(struct iod_migrate *m, const struct iod_dirty_log *log,
		      struct iod_migrate_round *rd)
{
	unsigned shift = iod_log_page_shift(log);
	uint64_t end = m->c.gpa + m->c.size;
	int r;

	for (size_t i = 0; i < iod_log_region_count(log); i++) {
		const struct iod_log_region *g = iod_log_region(log, i);
		uint64_t nbits = g->length >> shift, first, last;

		for (uint64_t bit = 0;
		     iod_log_next_dirty(log, i, false, bit, nbits, &first, &last) == 0;
		     bit = last) {
			uint64_t a = MAX(g->gpa + (first << shift), m->c.gpa);
			uint64_t b = MIN(g->gpa + (last << shift), end);

			if (a >= b)
				continue;
			r = copy_range(m, a, b - a, &rd->copy_usec);
			if (r < 0)
				return r;
			rd->bytes += b - a;
		}
	}
	return 0;
}

/* One round: Harvest, copy (unless dropped), Acknowledge. -EAGAIN: do the round again. */
static int dirty_round(struct iod_migrate *m, unsigned index, bool final,
		       struct iod_migrate_round *ret)
{
	struct iod_migrate_round rd = {.index = index, .final = final};
	struct iod_dirty_log *log = NULL;
	sd_bus_message *reply = NULL;
	uint64_t t0 = iod_now_usec(), t1;
	int fd, precise, r;

	r = scall(m, "Harvest", &reply, "a{sv}", 0);
	if (r == -EPIPE)
		goto gone;
	if (r < 0)
		return r;
	t1 = iod_now_usec();
	rd.harvest_usec = t1 - t0;
	r = sd_bus_message_read(reply, "thtbt", &rd.daemon_round, &fd, &rd.dirty_pages, &precise,
				&rd.daemon_usec);
	if (r < 0) {
		sd_bus_message_unref(reply);
		return failf(m, IOD_MIGRATE_ERROR, r, "Bad Harvest reply: %s", strerror(-r));
	}
	rd.precise = precise;
	r = iod_log_open_fd_ro(fd, &log); /* the reader keeps its own copy of the fd */
	sd_bus_message_unref(reply);
	if (r < 0)
		return failf(m, IOD_MIGRATE_ERROR, r,
			     "The dirty log of round %" PRIu64 " cannot be used: %s",
			     rd.daemon_round, strerror(-r));

	rd.dropped = m->c.drop_round &&
		     (final ? m->c.drop_round == IOD_MIGRATE_DROP_FINAL : m->c.drop_round == index);
	if (!rd.dropped) {
		r = copy_dirty(m, log, &rd);
		if (r < 0) {
			iod_log_free(log);
			return r == -EBADMSG
				       ? failf(m, IOD_MIGRATE_ERROR, r,
					       "The dirty log of round %" PRIu64 " is malformed",
					       rd.daemon_round)
				       : r;
		}
	}
	m->page_size = UINT64_C(1) << iod_log_page_shift(log);
	iod_log_free(log);
	r = confirm(m, rd.daemon_round);
	if (r < 0)
		return r; /* not acknowledged: the round stays in the log for a resumed run */

	t0 = iod_now_usec();
	r = scall(m, "Acknowledge", NULL, "t", rd.daemon_round);
	if (r == -EPIPE)
		goto gone; /* the round stays pending in the log: the next Harvest has it again */
	if (r < 0)
		return r;
	rd.ack_usec = iod_now_usec() - t0;
	/* the round's pages accumulated from the previous harvest to this one */
	rd.interval_usec = sub_sat(t1, m->t_harvested);
	m->t_harvested = t1;
	report(m, &rd);
	*ret = rd;
	return 0;

gone:
	r = handle_daemon_gone(m, final ? "in the final round" : "during a round");
	return r < 0 ? r : -EAGAIN;
}

/* --- the run -------------------------------------------------------------------------------- */

int iod_migrate_new(sd_bus *bus, const struct iod_migrate_config *config,
		    const struct iod_migrate_ops *ops, void *userdata, struct iod_migrate **ret)
{
	struct iod_migrate *m;

	if (!bus || !config || !ops || !ops->write || !config->session || config->size == 0)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->bus = sd_bus_ref(bus);
	m->c = *config;
	m->ops = *ops;
	m->userdata = userdata;
	if (!m->c.batch_bytes)
		m->c.batch_bytes = UINT64_C(1) << 20;
	if (!m->c.max_rounds)
		m->c.max_rounds = 30;
	if (!m->c.restart_timeout_usec)
		m->c.restart_timeout_usec = 30 * UINT64_C(1000000);
	m->batch_left = m->c.batch_bytes;
	*ret = m;
	return 0;
}

struct iod_migrate *iod_migrate_free(struct iod_migrate *m)
{
	if (!m)
		return NULL;
	sd_bus_slot_unref(m->slot_owner);
	sd_bus_slot_unref(m->slot_lost);
	sd_bus_slot_unref(m->slot_failed);
	if (m->mem_mapped)
		munmap((void *)m->mem, m->c.size);
	sd_bus_unref(m->bus);
	free(m->path);
	free(m->failure);
	free(m);
	return NULL;
}

sd_bus *iod_migrate_bus(struct iod_migrate *m)
{
	return m->bus;
}

const char *iod_migrate_session_path(struct iod_migrate *m)
{
	return m->path;
}

const char *iod_migrate_error(struct iod_migrate *m)
{
	return m->error;
}

static void teardown(struct iod_migrate *m)
{
	if (!m->session_made || m->daemon_gone)
		return;
	/* Every page the destination did not confirm is in the log: leave the session
	 * tracking, for a run with resume (config.resumable makes it outlive this process). */
	if (m->res.status == IOD_MIGRATE_DEST_FAILED)
		return;
	(void)sd_bus_call_method(m->bus, IOD_BUS_NAME, m->path, IOD_SESSION_INTERFACE, "Stop", NULL,
				 NULL, NULL);
	if (!m->c.keep_session)
		(void)sd_bus_call_method(m->bus, IOD_BUS_NAME, m->path, IOD_SESSION_INTERFACE,
					 "Destroy", NULL, NULL, NULL);
}

static int run(struct iod_migrate *m)
{
	struct iod_migrate_round rd;
	unsigned index = 1;
	int r;

	r = sd_bus_match_signal(m->bus, &m->slot_owner, "org.freedesktop.DBus",
				"/org/freedesktop/DBus", "org.freedesktop.DBus", "NameOwnerChanged",
				on_owner_changed, m);
	if (r < 0)
		return failf(m, IOD_MIGRATE_ERROR, r, "Failed to watch the bus: %s", strerror(-r));

	if (!m->mem) {
		void *p = mmap(NULL, m->c.size, PROT_READ, MAP_SHARED, m->c.memfd,
			       (off_t)m->c.offset);

		if (p == MAP_FAILED)
			return failf(m, IOD_MIGRATE_ERROR, -errno,
				     "Failed to map the guest memory: %s", strerror(errno));
		m->mem = p;
		m->mem_mapped = true;
	}

	r = m->c.resume ? resume_session(m) : setup(m);
	if (r < 0)
		return r;

	m->ticking = true;
	if (!m->c.resume || m->res.resumed_full) {
		r = full_copy(m);
		if (r >= 0)
			r = confirm(m, 0);
		if (r < 0)
			return r;
	}

	/* pre-copy rounds */
	for (;;) {
		round_begin(m);
		m->tick_usec = 0;
		r = check_events(m, "between rounds");
		if (r < 0)
			return r;
		r = dirty_round(m, index, false, &rd);
		if (r == -EAGAIN)
			continue;
		if (r < 0)
			return r;
		m->res.precise = rd.precise;
		index++;
		if (rd.precise && rd.dirty_pages <= m->c.converge_pages) {
			m->res.converged = true;
			break;
		}
		if (index > m->c.max_rounds)
			break;
	}

	/* stop and copy */
	m->t_pause = iod_now_usec();
	m->ticking = false;
	if (m->ops.pause) {
		r = m->ops.pause(m, m->userdata);
		if (r < 0)
			return failf(m, IOD_MIGRATE_ERROR, r, "Pausing the workload failed: %s",
				     strerror(-r));
	}
	m->res.measured.pause_usec = iod_now_usec() - m->t_pause;
	do {
		round_begin(m);
		r = check_events(m, "in the final round");
		if (r >= 0)
			r = dirty_round(m, index, true, &rd);
	} while (r == -EAGAIN);
	if (r < 0)
		return r;
	m->res.downtime_usec = rd.downtime_usec;
	m->res.rounds = index;
	m->res.est_downtime_usec = rd.est_downtime_usec;
	m->res.precise = rd.precise;
	return check_events(m, "after the final round");
}

int iod_migrate_run(struct iod_migrate *m, struct iod_migrate_result *ret)
{
	uint64_t t0 = iod_now_usec();
	int r;

	r = run(m);
	teardown(m);
	m->res.total_bytes = m->copied_total;
	m->res.bandwidth = bandwidth(m);
	m->res.total_usec = iod_now_usec() - t0;
	if (r < 0 && m->res.status == IOD_MIGRATE_OK) {
		char why[sizeof(m->error)];

		snprintf(why, sizeof(why), "%s", m->error[0] ? m->error : strerror(-r));
		r = failf(m, IOD_MIGRATE_ERROR, r, "%s", why);
	}
	*ret = m->res;
	return r;
}
