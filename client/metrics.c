/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyctl metrics (metrics.h). All properties are read first (one GetAll for the manager,
 * one per session), then written family by family: OpenMetrics wants every sample of a
 * family together. The same series come out in both formats; they differ only where the
 * Prometheus text format lacks a type: a counter family is named with its "_total", an info
 * or state set is a gauge, and there are no "# UNIT" lines and no "# EOF".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iod-names.h"
#include "iod-util.h"
#include "metrics.h"

static inline bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/* --- what is read ---------------------------------------------------------------------------- */

/* A property: its name, D-Bus type ('s', 'b', 'u', 't', or 'o' for "ao"), where it goes and
 * whether a daemon may lack it (one older than the property). */
struct prop {
	const char *name;
	char type;
	size_t offset;
	bool optional;
};

#define D(f) offsetof(struct iod_metrics_daemon, f)
static const struct prop daemon_table[] = {
	{"Version", 's', D(version), false},
	{"KernelHoleBehavior", 's', D(holes), false},
	{"IommufdAvailable", 'b', D(iommufd), false},
	{"DirtyTrackingSupported", 'b', D(dirty_tracking), false},
	{"MaxSessions", 'u', D(max_sessions), false},
	{"Sessions", 'o', D(sessions), false},
	{"Restarts", 't', D(restarts), true},
};
#undef D
enum { DAEMON_RESTARTS = 6 }; /* its index */

#define S(f) offsetof(struct iod_metrics_session, f)
static const struct prop session_table[] = {
	{"Name", 's', S(name), false},
	{"Mode", 's', S(mode), false},
	{"State", 's', S(state), false},
	{"TrackingMode", 's', S(tracking_mode), false},
	{"OwnerUID", 'u', S(owner_uid), false},
	{"Tracking", 'b', S(tracking), false},
	{"Precise", 'b', S(precise), false},
	{"LogComplete", 'b', S(log_complete), false},
	{"VIommu", 'b', S(viommu), false},
	{"Nested", 'b', S(nested), false},
	{"HugePages", 'b', S(huge_pages), false},
	{"PageSize", 't', S(page_size), false},
	{"Mappings", 'u', S(mappings), false},
	{"MappedBytes", 't', S(mapped_bytes), false},
	{"TrackedBytes", 't', S(tracked_bytes), false},
	{"LogBytes", 't', S(log_bytes), false},
	{"Rounds", 't', S(rounds), false},
	{"PendingRound", 't', S(pending_round), false},
	{"LastRoundDirtyPages", 't', S(last_dirty_pages), false},
	{"LastRoundDurationUSec", 't', S(last_duration_usec), false},
	{"DirtyRate", 't', S(dirty_rate), false},
	{"LastRoundTimestamp", 't', S(last_round_timestamp), true},
	{"Devices", 'o', S(devices), false},
};
#undef S

_Static_assert(ELEMENTSOF(daemon_table) <= sizeof(unsigned) * 8, "too many properties");
_Static_assert(ELEMENTSOF(session_table) <= sizeof(unsigned) * 8, "too many properties");

static void paths_clear(struct iod_metrics_paths *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	*p = (struct iod_metrics_paths){};
}

static void daemon_props_clear(struct iod_metrics_daemon *d)
{
	free(d->version);
	free(d->holes);
	paths_clear(&d->sessions);
}

static void session_props_clear(struct iod_metrics_session *s)
{
	free(s->name);
	free(s->mode);
	free(s->state);
	free(s->tracking_mode);
	paths_clear(&s->devices);
}

static int read_paths(sd_bus_message *m, struct iod_metrics_paths *ret)
{
	struct iod_metrics_paths p = {};
	const char *path;
	int r;

	r = sd_bus_message_enter_container(m, 'a', "o");
	while (r >= 0 && (r = sd_bus_message_read_basic(m, 'o', &path)) > 0) {
		char **v = realloc(p.v, (p.n + 1) * sizeof(*v));

		if (!v) {
			r = -ENOMEM;
			break;
		}
		p.v = v;
		if (!(p.v[p.n] = strdup(path))) {
			r = -ENOMEM;
			break;
		}
		p.n++;
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(m);
	if (r < 0) {
		paths_clear(&p);
		return r;
	}
	paths_clear(ret);
	*ret = p;
	return 0;
}

/* One property's value (the variant is entered) into its field. */
static int read_value(sd_bus_message *m, const struct prop *p, void *base)
{
	void *field = (char *)base + p->offset;
	const char *s;
	int b, r;

	switch (p->type) {
	case 's':
		r = sd_bus_message_read_basic(m, 's', &s);
		if (r < 0)
			return r;
		free(*(char **)field);
		*(char **)field = strdup(s);
		return *(char **)field ? 0 : -ENOMEM;
	case 'b':
		r = sd_bus_message_read_basic(m, 'b', &b);
		if (r >= 0)
			*(bool *)field = b;
		return r < 0 ? r : 0;
	case 'u':
		r = sd_bus_message_read_basic(m, 'u', field);
		return r < 0 ? r : 0;
	case 't':
		r = sd_bus_message_read_basic(m, 't', field);
		return r < 0 ? r : 0;
	case 'o':
		return read_paths(m, field);
	}
	return -EINVAL;
}

static const char *signature_of(char type)
{
	return type == 'o' ? "ao" : type == 's' ? "s" : type == 'b' ? "b" : type == 'u' ? "u" : "t";
}

/*
 * Properties.GetAll(interface) on path into base, by table. A property the table does not
 * know is skipped (a newer daemon); one it knows with another type, or a required one that
 * is missing, is an error that names it. *ret_error (may be NULL) gets the call's error.
 */
static int get_all(sd_bus *bus, const char *path, const char *interface, const struct prop *table,
		   size_t n_table, void *base, unsigned *seen, sd_bus_error *ret_error)
{
	sd_bus_message *m = NULL, *reply = NULL;
	const char *key, *contents;
	int r;

	/* No auto start: a metrics run observes the daemon, it never bus-activates it. */
	r = sd_bus_message_new_method_call(bus, &m, IOD_BUS_NAME, path,
					   "org.freedesktop.DBus.Properties", "GetAll");
	if (r >= 0)
		r = sd_bus_message_set_auto_start(m, false);
	if (r >= 0)
		r = sd_bus_message_append(m, "s", interface);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, ret_error, &reply);
	sd_bus_message_unref(m);
	if (r < 0)
		return r;
	r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		const struct prop *p = NULL;
		char type;

		if ((r = sd_bus_message_read_basic(reply, 's', &key)) < 0 ||
		    (r = sd_bus_message_peek_type(reply, &type, &contents)) < 0)
			break;
		for (size_t i = 0; i < n_table && !p; i++)
			if (streq(table[i].name, key))
				p = &table[i];
		if (!p) {
			r = sd_bus_message_skip(reply, "v");
		} else if (!streq(contents, signature_of(p->type))) {
			fprintf(stderr, "%s: property %s has type \"%s\", expected \"%s\".\n", path,
				key, contents, signature_of(p->type));
			r = -EBADMSG;
			break;
		} else {
			r = sd_bus_message_enter_container(reply, 'v', contents);
			if (r >= 0)
				r = read_value(reply, p, base);
			if (r >= 0)
				r = sd_bus_message_exit_container(reply);
			*seen |= 1u << (p - table);
		}
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	sd_bus_message_unref(reply);
	if (r < 0) {
		if (r != -EBADMSG)
			fprintf(stderr, "%s: cannot read the properties of %s: %s\n", path,
				interface, strerror(-r));
		return -EBADMSG;
	}
	for (size_t i = 0; i < n_table; i++)
		if (!table[i].optional && !(*seen & (1u << i))) {
			fprintf(stderr, "%s: the daemon did not report property %s of %s.\n", path,
				table[i].name, interface);
			return -EBADMSG;
		}
	return 0;
}

static int cmp_session(const void *a, const void *b)
{
	return strcmp(((const struct iod_metrics_session *)a)->name,
		      ((const struct iod_metrics_session *)b)->name);
}

/* --- what is written --------------------------------------------------------------------------- */

struct writer {
	FILE *f;
	enum iod_metrics_format format;
};

/* A label value: backslash, double quote and newline escaped (both formats). */
static void put_label_value(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '"')
			fputs("\\\"", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

/*
 * The metadata of a family. type: "gauge", "counter", "info" or "stateset"; unit may be
 * NULL. help must hold no backslash, double quote or newline (it is not escaped).
 */
static void family(struct writer *w, const char *name, const char *type, const char *unit,
		   const char *help)
{
	bool om = w->format == IOD_METRICS_OPENMETRICS;
	const char *suffix = "";

	if (!om && streq(type, "counter"))
		suffix = "_total";
	else if (!om && streq(type, "info"))
		suffix = "_info";
	if (!om && (streq(type, "info") || streq(type, "stateset")))
		type = "gauge";
	fprintf(w->f, "# TYPE %s%s %s\n", name, suffix, type);
	if (om && unit)
		fprintf(w->f, "# UNIT %s %s\n", name, unit);
	fprintf(w->f, "# HELP %s%s %s\n", name, suffix, help);
}

/* The start of a sample: name+suffix{session="...", and the labels so far open. */
static void sample_start(struct writer *w, const char *name, const char *suffix,
			 const char *session)
{
	fprintf(w->f, "%s%s{", name, suffix);
	if (session) {
		fputs("session=", w->f);
		put_label_value(w->f, session);
	}
}

static void label(struct writer *w, bool first, const char *key, const char *value)
{
	fprintf(w->f, "%s%s=", first ? "" : ",", key);
	put_label_value(w->f, value);
}

static void sample_u64(struct writer *w, const char *name, const char *suffix, const char *session,
		       uint64_t v)
{
	if (session) {
		sample_start(w, name, suffix, session);
		fprintf(w->f, "} %" PRIu64 "\n", v);
	} else {
		fprintf(w->f, "%s%s %" PRIu64 "\n", name, suffix, v);
	}
}

/* Microseconds as seconds, exactly (no floating point on the way). */
static void sample_usec(struct writer *w, const char *name, const char *session, uint64_t usec)
{
	sample_start(w, name, "", session);
	fprintf(w->f, "} %" PRIu64 ".%06" PRIu64 "\n", usec / 1000000, usec % 1000000);
}

/* A state set: one sample per known state (1 for the current one), and the current one
 * too if the daemon is newer than this list. */
static void stateset(struct writer *w, const char *name, const char *session,
		     const char *const *states, const char *current)
{
	bool known = false;

	for (size_t i = 0; states[i]; i++) {
		sample_start(w, name, "", session);
		label(w, false, name, states[i]);
		fprintf(w->f, "} %d\n", streq(states[i], current));
		known = known || streq(states[i], current);
	}
	if (!known) {
		sample_start(w, name, "", session);
		label(w, false, name, current);
		fputs("} 1\n", w->f);
	}
}

static const char *const session_states[] = {
	"idle", "tracking", "orphaned", "orphaned-tracking", "failed", NULL,
};
static const char *const tracking_modes[] = {
	"none", "hardware", "fallback", "mixed", "nested", NULL,
};

/* The per-session families whose value is one number. */
enum value_kind { V_U64, V_U32, V_BOOL, V_USEC, V_TIMESTAMP, V_COUNT };
static const struct {
	const char *name;
	const char *type;
	const char *unit;
	const char *help;
	enum value_kind kind;
	size_t offset;
} session_families[] = {
#define S(f) offsetof(struct iod_metrics_session, f)
	{"iodirty_session_tracking", "gauge", NULL,
	 "1 while dirty tracking is on (between Start and Stop), else 0.", V_BOOL, S(tracking)},
	{"iodirty_session_precise", "gauge", NULL,
	 "0 when a fallback device or huge IOMMU pages make the dirty bits coarse, else 1.", V_BOOL,
	 S(precise)},
	{"iodirty_session_log_complete", "gauge", NULL,
	 "0 once a harvest failed where bits may have been lost (the session failed), else 1.",
	 V_BOOL, S(log_complete)},
	{"iodirty_session_rounds", "counter", NULL, "Rounds harvested.", V_U64, S(rounds)},
	{"iodirty_session_pending_round", "gauge", NULL,
	 "The round delivered but not yet acknowledged, or 0.", V_U64, S(pending_round)},
	{"iodirty_session_last_round_dirty_pages", "gauge", NULL,
	 "Dirty pages of the last round (pages of the session's page size).", V_U64,
	 S(last_dirty_pages)},
	{"iodirty_session_last_round_duration_seconds", "gauge", "seconds",
	 "How long the last round took.", V_USEC, S(last_duration_usec)},
	{"iodirty_session_last_round_timestamp_seconds", "gauge", "seconds",
	 "When the last round was harvested (Unix time); absent until this daemon instance "
	 "harvests one.",
	 V_TIMESTAMP, S(last_round_timestamp)},
	{"iodirty_session_dirty_rate_bytes_per_second", "gauge", "bytes_per_second",
	 "Bytes dirtied per second over the last round.", V_U64, S(dirty_rate)},
	{"iodirty_session_mapped_bytes", "gauge", "bytes", "Bytes of IOVA mapped.", V_U64,
	 S(mapped_bytes)},
	{"iodirty_session_tracked_bytes", "gauge", "bytes",
	 "Bytes of guest memory in the dirty log.", V_U64, S(tracked_bytes)},
	{"iodirty_session_log_bytes", "gauge", "bytes",
	 "Bitmap bytes of the dirty log (both planes).", V_U64, S(log_bytes)},
	{"iodirty_session_page_size_bytes", "gauge", "bytes", "Dirty log page size.", V_U64,
	 S(page_size)},
	{"iodirty_session_mappings", "gauge", NULL, "IOVA mappings.", V_U32, S(mappings)},
	{"iodirty_session_devices", "gauge", NULL, "Devices attached.", V_COUNT, S(devices)},
#undef S
};

void iod_metrics_help(FILE *f)
{
	static const char *const fixed[][2] = {
		{"iodirty_daemon", "info {version,kernel_hole_behavior}"},
		{"iodirty_daemon_iommufd_available", "gauge"},
		{"iodirty_daemon_dirty_tracking_supported", "gauge"},
		{"iodirty_daemon_sessions", "gauge"},
		{"iodirty_daemon_max_sessions", "gauge"},
		{"iodirty_daemon_restarts", "counter"},
		{"iodirty_session", "info {session,mode,owner_uid,viommu,nested,huge_pages}"},
		{"iodirty_session_state", "stateset {session,iodirty_session_state}"},
		{"iodirty_session_tracking_mode",
		 "stateset {session,iodirty_session_tracking_mode}"},
	};

	fputs("Metrics (families; iodirtyctl(1), METRICS, says what each one is):\n", f);
	for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
		fprintf(f, "  %-45s %s\n", fixed[i][0], fixed[i][1]);
	for (size_t i = 0; i < ELEMENTSOF(session_families); i++)
		fprintf(f, "  %-45s %s%s%s {session}\n", session_families[i].name,
			session_families[i].type, session_families[i].unit ? ", unit " : "",
			session_families[i].unit ? session_families[i].unit : "");
	fputs("A counter's sample is NAME_total, an info's NAME_info.\n"
	      "iodirty-metrics.timer (installed, not enabled) runs every minute:\n"
	      "  iodirtyctl metrics --format=prometheus \\\n"
	      "      --output=/var/lib/prometheus/node-exporter/iodirty.prom\n",
	      f);
}

void iod_metrics_write(FILE *f, enum iod_metrics_format format, const struct iod_metrics_daemon *d,
		       const struct iod_metrics_session *sessions, size_t n)
{
	struct writer writer = {.f = f, .format = format}, *w = &writer;
	bool om = format == IOD_METRICS_OPENMETRICS;

	family(w, "iodirty_daemon", "info", NULL,
	       "The daemon: its version and what the kernel does with a dirty bitmap read over "
	       "unmapped IOVA (silent, strict or unknown).");
	sample_start(w, "iodirty_daemon", "_info", NULL);
	label(w, true, "version", d->version);
	label(w, false, "kernel_hole_behavior", d->holes);
	fputs("} 1\n", w->f);
	family(w, "iodirty_daemon_iommufd_available", "gauge", NULL,
	       "1 if the kernel has iommufd (/dev/iommu exists).");
	sample_u64(w, "iodirty_daemon_iommufd_available", "", NULL, d->iommufd);
	family(w, "iodirty_daemon_dirty_tracking_supported", "gauge", NULL,
	       "1 if the kernel's iommufd knows the HWPT dirty tracking ioctls.");
	sample_u64(w, "iodirty_daemon_dirty_tracking_supported", "", NULL, d->dirty_tracking);
	family(w, "iodirty_daemon_sessions", "gauge", NULL, "Sessions.");
	sample_u64(w, "iodirty_daemon_sessions", "", NULL, n);
	family(w, "iodirty_daemon_max_sessions", "gauge", NULL,
	       "The sessions limit (iodirtyd.conf limit sessions).");
	sample_u64(w, "iodirty_daemon_max_sessions", "", NULL, d->max_sessions);
	if (d->has_restarts) {
		family(w, "iodirty_daemon_restarts", "counter", NULL,
		       "Times a daemon instance took the sessions over from the one before it "
		       "through the fd store (crash, watchdog, restart, upgrade).");
		sample_u64(w, "iodirty_daemon_restarts", "_total", NULL, d->restarts);
	}

	family(w, "iodirty_session", "info", NULL,
	       "One per session: its name, mode (owner or adopt), owning uid and options.");
	for (size_t i = 0; i < n; i++) {
		const struct iod_metrics_session *s = &sessions[i];
		char uid[16];

		snprintf(uid, sizeof(uid), "%" PRIu32, s->owner_uid);
		sample_start(w, "iodirty_session", "_info", s->name);
		label(w, false, "mode", s->mode);
		label(w, false, "owner_uid", uid);
		label(w, false, "viommu", s->viommu ? "true" : "false");
		label(w, false, "nested", s->nested ? "true" : "false");
		label(w, false, "huge_pages", s->huge_pages ? "true" : "false");
		fputs("} 1\n", w->f);
	}
	family(w, "iodirty_session_state", "stateset", NULL,
	       "The session's state: idle, tracking, orphaned, orphaned-tracking or failed.");
	for (size_t i = 0; i < n; i++)
		stateset(w, "iodirty_session_state", sessions[i].name, session_states,
			 sessions[i].state);
	family(w, "iodirty_session_tracking_mode", "stateset", NULL,
	       "How the session's devices are tracked: none, hardware, fallback (always dirty), "
	       "mixed or nested.");
	for (size_t i = 0; i < n; i++)
		stateset(w, "iodirty_session_tracking_mode", sessions[i].name, tracking_modes,
			 sessions[i].tracking_mode);

	for (size_t k = 0; k < ELEMENTSOF(session_families); k++) {
		const char *name = session_families[k].name;
		bool counter = streq(session_families[k].type, "counter");

		family(w, name, session_families[k].type, session_families[k].unit,
		       session_families[k].help);
		for (size_t i = 0; i < n; i++) {
			const char *field = (const char *)&sessions[i] + session_families[k].offset;
			const char *sname = sessions[i].name;
			uint64_t v = 0;

			switch (session_families[k].kind) {
			case V_U64:
				v = *(const uint64_t *)field;
				break;
			case V_U32:
				v = *(const uint32_t *)field;
				break;
			case V_BOOL:
				v = *(const bool *)field;
				break;
			case V_COUNT:
				v = ((const struct iod_metrics_paths *)field)->n;
				break;
			case V_TIMESTAMP:
				if (*(const uint64_t *)field)
					sample_usec(w, name, sname, *(const uint64_t *)field);
				continue;
			case V_USEC:
				sample_usec(w, name, sname, *(const uint64_t *)field);
				continue;
			}
			sample_u64(w, name, counter ? "_total" : "", sname, v);
		}
	}
	if (om)
		fputs("# EOF\n", w->f);
}

/* --- output ------------------------------------------------------------------------------------ */

/* text[0..len) into output through a temporary file in the same directory and a rename. */
static int write_atomically(const char *output, const char *text, size_t len)
{
	_cleanup_free_ char *dir_copy = strdup(output), *base_copy = strdup(output);
	_cleanup_free_ char *tmp = NULL;
	const char *dir, *base;
	size_t done = 0;
	struct stat st;
	int fd, r = 0;

	if (!dir_copy || !base_copy)
		return -ENOMEM;
	dir = dirname(dir_copy);
	base = basename(base_copy);
	if (!*output || output[strlen(output) - 1] == '/' || streq(base, ".") ||
	    streq(base, "..")) {
		fprintf(stderr, "--output=%s does not name a file.\n", output);
		return -EINVAL;
	}
	if (stat(output, &st) == 0 && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "--output=%s exists and is not a regular file.\n", output);
		return -EINVAL;
	}
	/* A hidden name without the final suffix: a collector that reads *.prom skips it. */
	if (asprintf(&tmp, "%s/.%s.XXXXXX", dir, base) < 0) {
		tmp = NULL;
		return -ENOMEM;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "Cannot create a temporary file in %s for --output: %s\n", dir,
			strerror(-r));
		return r;
	}
	if (fchmod(fd, 0644) < 0)
		r = -errno;
	while (r == 0 && done < len) {
		ssize_t k = write(fd, text + done, len - done);

		if (k < 0 && errno != EINTR)
			r = -errno;
		else if (k == 0)
			r = -EIO; /* no progress: never loop on it */
		else if (k > 0)
			done += (size_t)k;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, output) < 0)
		r = -errno;
	if (r < 0) {
		fprintf(stderr, "Cannot write %s: %s\n", output, strerror(-r));
		(void)unlink(tmp);
	}
	return r;
}

int iod_metrics_format_from_string(const char *s, enum iod_metrics_format *ret)
{
	if (streq(s, "openmetrics"))
		*ret = IOD_METRICS_OPENMETRICS;
	else if (streq(s, "prometheus"))
		*ret = IOD_METRICS_PROMETHEUS;
	else
		return -EINVAL;
	return 0;
}

/* A session that went away between the list and its GetAll is not an error. */
static bool gone(const sd_bus_error *e)
{
	return sd_bus_error_has_name(e, SD_BUS_ERROR_UNKNOWN_OBJECT) ||
	       sd_bus_error_has_name(e, SD_BUS_ERROR_UNKNOWN_INTERFACE) ||
	       sd_bus_error_has_name(e, IOD_ERROR_PREFIX "NoSuchSession");
}

int iod_metrics_run(sd_bus *bus, enum iod_metrics_format format, const char *output)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct iod_metrics_daemon d = {};
	struct iod_metrics_session *sessions = NULL;
	unsigned seen = 0;
	FILE *f;
	size_t n = 0, len = 0;
	char *text = NULL;
	int r;

	r = get_all(bus, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, daemon_table,
		    ELEMENTSOF(daemon_table), &d, &seen, &error);
	if (r < 0) {
		if (r != -EBADMSG)
			fprintf(stderr, "Cannot read the metrics of iodirtyd: %s%s%s%s\n",
				error.message ? error.message : strerror(-r),
				error.name ? " (" : "", error.name ? error.name : "",
				error.name ? ")" : "");
		goto out;
	}
	d.has_restarts = seen & (1u << DAEMON_RESTARTS);
	sessions = calloc(d.sessions.n + 1, sizeof(*sessions));
	if (!sessions) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < d.sessions.n; i++) {
		struct iod_metrics_session *s = &sessions[n];

		seen = 0;
		sd_bus_error_free(&error);
		r = get_all(bus, d.sessions.v[i], IOD_SESSION_INTERFACE, session_table,
			    ELEMENTSOF(session_table), s, &seen, &error);
		if (r < 0 && gone(&error)) {
			session_props_clear(s);
			*s = (struct iod_metrics_session){};
			continue;
		}
		if (r < 0) {
			if (r != -EBADMSG)
				fprintf(stderr, "Cannot read session %s: %s%s%s%s\n",
					d.sessions.v[i],
					error.message ? error.message : strerror(-r),
					error.name ? " (" : "", error.name ? error.name : "",
					error.name ? ")" : "");
			session_props_clear(s);
			goto out;
		}
		n++;
	}
	qsort(sessions, n, sizeof(*sessions), cmp_session);

	f = open_memstream(&text, &len);
	if (!f) {
		r = -errno;
		goto out;
	}
	iod_metrics_write(f, format, &d, sessions, n);
	if (fclose(f) != 0) {
		r = -ENOMEM;
		goto out;
	}
	if (output) {
		r = write_atomically(output, text, len);
	} else {
		fwrite(text, 1, len, stdout);
		r = fflush(stdout) == 0 ? 0 : -errno;
		if (r < 0)
			fprintf(stderr, "Cannot write the metrics: %s\n", strerror(-r));
	}
out:
	if (r == -ENOMEM)
		fprintf(stderr, "Cannot produce the metrics: %s\n", strerror(-r));
	for (size_t i = 0; i < n; i++)
		session_props_clear(&sessions[i]);
	free(sessions);
	daemon_props_clear(&d);
	free(text);
	sd_bus_error_free(&error);
	return r < 0 ? r : 0;
}
