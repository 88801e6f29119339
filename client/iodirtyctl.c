/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyctl: look at and drive iodirtyd (org.iodirty.Tracker1) from a terminal or a script.
 * Exit codes: 0 success, 1 the service refused or failed, 2 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "iodirty-client.h"
#include "iodirty.h"
#include "ctl.h"
#include "metrics.h"

#define EXIT_USAGE 2

static const char *arg_address;
static bool arg_user;
static bool arg_json;
static bool arg_ranges;
static bool arg_peek;
static bool arg_iova;
static bool arg_viommu;
static bool arg_huge_pages;
static bool arg_destroy_on_exit;
static uint32_t arg_max_ranges;
static uint64_t arg_page_size;
static const char *arg_output;
static enum iod_metrics_format arg_format = IOD_METRICS_OPENMETRICS;
static bool arg_metrics_options;
/* rate */
static bool arg_watch;
static uint64_t arg_interval_usec = 1000000;
static uint64_t arg_window_usec = 10000000;

static void help(void)
{
	printf("Usage: iodirtyctl [OPTIONS...] COMMAND [ARGS...]\n"
	       "\n"
	       "Look at and drive iodirtyd, the IOMMU dirty tracking service.\n"
	       "\n"
	       "Commands:\n"
	       "  status                 Version, kernel capabilities, limits\n"
	       "  sessions               List the sessions\n"
	       "  session NAME           Show one session\n"
	       "  devices NAME           List the devices of a session\n"
	       "  probe DEVICE           What a device (PCI address or cdev path) can do\n"
	       "  create NAME            Create an owner-mode session (kept when iodirtyctl exits)\n"
	       "  destroy NAME           Destroy a session\n"
	       "  start NAME             Start dirty tracking\n"
	       "  stop NAME              Stop dirty tracking\n"
	       "  harvest NAME           Harvest one round and acknowledge it\n"
	       "  metrics                The daemon and its sessions as OpenMetrics text\n"
	       "  rate NAME              Dirty pages per second and working set, per VM and HWPT\n"
	       "\n"
	       "Options:\n"
	       "  -h --help              Show this help\n"
	       "     --version           Show the version\n"
	       "     --address=ADDRESS   Talk to the bus at ADDRESS (default: the system bus)\n"
	       "     --user              Talk to the user bus\n"
	       "  -j --json              Print JSON instead of tables\n"
	       "     --ranges            harvest: ask for ranges instead of the bitmap\n"
	       "     --iova              harvest --ranges: in IOVA space instead of GPA space\n"
	       "     --max-ranges=N      harvest --ranges: at most N ranges\n"
	       "     --peek              harvest: read without clearing, start no round\n"
	       "     --viommu            create: IOVA differs from GPA (Map/Unmap events)\n"
	       "     --huge-pages        create: let the IOMMU use huge pages (coarser bits)\n"
	       "     --page-size=BYTES   create: dirty log page size\n"
	       "     --destroy-on-exit   create: disconnect policy \"destroy\" instead of \"keep\"\n"
	       "     --format=FORMAT     metrics: \"openmetrics\" (OpenMetrics 1.0, the default) or\n"
	       "                         \"prometheus\" (text format 0.0.4, for node_exporter's\n"
	       "                         textfile collector)\n"
	       "     --output=FILE       metrics: write FILE atomically (a temporary file in its\n"
	       "                         directory, renamed over it) instead of standard output\n"
	       "     --watch             rate: print again every interval until interrupted\n"
	       "     --interval=TIME     rate: sample every TIME (default 1s; us, ms, s, min)\n"
	       "     --window=TIME       rate: over the last TIME (default 10s)\n"
	       "\n"
	       "Exit status: 0 on success, 1 when the service refused or failed, 2 on bad usage.\n"
	       "\n");
	iod_metrics_help(stdout);
	printf("\nSee iodirtyctl(1).\n");
}

/* --- bus helpers ----------------------------------------------------------------------------- */

static void add_props(struct json_object *obj, sd_bus *bus, const char *path, const char *iface,
		      const char *const *props)
{
	for (size_t i = 0; props[i]; i += 2) {
		struct json_object *v = ctl_get_prop(bus, path, iface, props[i]);

		if (v)
			json_object_object_add(obj, props[i + 1], v);
	}
}

static void print_json(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* "Label: value" lines, in the order of props. */
static void print_fields(struct json_object *obj, const char *const *props,
			 const char *const *labels)
{
	for (size_t i = 0; props[i]; i += 2) {
		struct json_object *v;

		if (!json_object_object_get_ex(obj, props[i + 1], &v))
			continue;
		printf("%22s: %s\n", labels[i / 2],
		       json_object_is_type(v, json_type_string) ? json_object_get_string(v)
								: json_object_to_json_string(v));
	}
}

/* --- commands -------------------------------------------------------------------------------- */

static const char *const status_props[] = {
	"Version",
	"version",
	"IommufdAvailable",
	"iommufd_available",
	"DirtyTrackingSupported",
	"dirty_tracking_supported",
	"KernelHoleBehavior",
	"kernel_hole_behavior",
	"DisconnectPolicy",
	"disconnect_policy",
	"DefaultPageSize",
	"default_page_size",
	"DefaultHugePages",
	"default_huge_pages",
	"MaxSessions",
	"max_sessions",
	"MaxSessionsPerUser",
	"max_sessions_per_user",
	"MaxDevices",
	"max_devices",
	"MaxRegions",
	"max_regions",
	"MaxMappings",
	"max_mappings",
	"MaxLogBytes",
	"max_log_bytes",
	"MaxLogBytesPerUser",
	"max_log_bytes_per_user",
	"MaxRanges",
	"max_ranges",
	NULL,
};
static const char *const status_labels[] = {
	"Version",
	"iommufd",
	"Dirty tracking ioctls",
	"Reads over IOVA holes",
	"Disconnect policy",
	"Default page size",
	"Default huge pages",
	"Max sessions",
	"Max sessions per user",
	"Max devices",
	"Max regions",
	"Max mappings",
	"Max log bytes",
	"Max log bytes per user",
	"Max ranges",
};

static int cmd_status(sd_bus *bus, char **args)
{
	struct json_object *o = json_object_new_object();
	struct json_object *v;

	add_props(o, bus, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, status_props);
	if (!json_object_object_get_ex(o, "version", &v)) {
		json_object_put(o);
		fprintf(stderr, "iodirtyd does not answer on this bus.\n");
		return -EIO;
	}
	v = ctl_get_prop(bus, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "Sessions");
	json_object_object_add(o, "sessions",
			       json_object_new_int64(v ? (int64_t)json_object_array_length(v) : 0));
	json_object_put(v);
	if (arg_json) {
		print_json(o);
	} else {
		print_fields(o, status_props, status_labels);
		printf("%22s: %s\n", "Sessions",
		       json_object_get_string(json_object_object_get(o, "sessions")));
	}
	json_object_put(o);
	return 0;
}

static const char *const session_props[] = {
	"Name",
	"name",
	"Mode",
	"mode",
	"State",
	"state",
	"TrackingMode",
	"tracking_mode",
	"Precise",
	"precise",
	"LogComplete",
	"log_complete",
	"FailureReason",
	"failure_reason",
	"Owner",
	"owner",
	"OwnerUID",
	"owner_uid",
	"DisconnectPolicy",
	"disconnect_policy",
	"VIommu",
	"viommu",
	"Nested",
	"nested",
	"HugePages",
	"huge_pages",
	"PageSize",
	"page_size",
	"IoasId",
	"ioas_id",
	"Devices",
	"devices",
	"Mappings",
	"mappings",
	"MappedBytes",
	"mapped_bytes",
	"TrackedBytes",
	"tracked_bytes",
	"LogBytes",
	"log_bytes",
	"Rounds",
	"rounds",
	"PendingRound",
	"pending_round",
	"LastRoundDirtyPages",
	"last_round_dirty_pages",
	"LastRoundDurationUSec",
	"last_round_duration_usec",
	"DirtyRate",
	"dirty_rate",
	NULL,
};
static const char *const session_labels[] = {
	"Name",
	"Mode",
	"State",
	"Tracking mode",
	"Precise",
	"Log complete",
	"Failure",
	"Owner",
	"Owner UID",
	"Disconnect policy",
	"vIOMMU",
	"Nested",
	"Huge pages",
	"Page size",
	"IOAS",
	"Devices",
	"Mappings",
	"Mapped bytes",
	"Tracked bytes",
	"Log bytes",
	"Rounds",
	"Pending round",
	"Last round dirty",
	"Last round usec",
	"Dirty rate (B/s)",
};

/* One label per property pair (and the NULL after them). */
_Static_assert(ELEMENTSOF(session_props) == 2 * ELEMENTSOF(session_labels) + 1,
	       "session_props and session_labels differ");

static struct json_object *session_json(sd_bus *bus, const char *path)
{
	struct json_object *o = json_object_new_object();

	add_props(o, bus, path, IOD_SESSION_INTERFACE, session_props);
	return o;
}

static int cmd_sessions(sd_bus *bus, char **args)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct json_object *list = json_object_new_array();
	sd_bus_message *reply = NULL;
	const char *name, *path, *state;
	uint32_t uid;
	int r;

	r = sd_bus_call_method(bus, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			       "ListSessions", &error, &reply, NULL);
	if (r < 0) {
		r = ctl_fail(&error, r, "ListSessions");
		goto out;
	}
	r = sd_bus_message_enter_container(reply, 'a', "(sosu)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sosu)", &name, &path, &state, &uid)) > 0)
		json_object_array_add(list, session_json(bus, path));
	if (r < 0) {
		r = ctl_fail(NULL, r, "ListSessions");
		goto out;
	}

	if (arg_json) {
		print_json(list);
	} else {
		printf("%-20s %-18s %-6s %-8s %-9s %7s %14s %7s\n", "NAME", "STATE", "MODE", "UID",
		       "TRACKING", "DEVICES", "TRACKED", "ROUNDS");
		for (size_t i = 0; i < json_object_array_length(list); i++) {
			struct json_object *s = json_object_array_get_idx(list, i), *v;

#define F(key) (json_object_object_get_ex(s, key, &v) ? json_object_get_string(v) : "-")
			printf("%-20s %-18s %-6s %-8s %-9s %7zu %14s %7s\n", F("name"), F("state"),
			       F("mode"), F("owner_uid"), F("tracking_mode"),
			       json_object_object_get_ex(s, "devices", &v)
				       ? json_object_array_length(v)
				       : 0,
			       F("tracked_bytes"), F("rounds"));
#undef F
		}
	}
	r = 0;
out:
	json_object_put(list);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	return r;
}

static int cmd_session(sd_bus *bus, char **args)
{
	struct json_object *o;
	char *path = NULL;
	int r;

	r = ctl_session_path(bus, args[0], &path);
	if (r < 0)
		return r;
	o = session_json(bus, path);
	if (arg_json)
		print_json(o);
	else
		print_fields(o, session_props, session_labels);
	json_object_put(o);
	free(path);
	return 0;
}

static const char *const device_props[] = {
	"Name",
	"name",
	"Cdev",
	"cdev",
	"DevId",
	"dev_id",
	"HwptId",
	"hwpt_id",
	"IommuType",
	"iommu_type",
	"IommuDirtyTracking",
	"iommu_dirty_tracking",
	"TrackingMode",
	"tracking_mode",
	"DirtySource",
	"dirty_source",
	"DmaLoggingRanges",
	"dma_logging_ranges",
	"DmaLogging",
	"dma_logging",
	"Migration",
	"migration",
	"MigrationFlags",
	"migration_flags",
	"Lost",
	"lost",
	NULL,
};

static int cmd_devices(sd_bus *bus, char **args)
{
	struct json_object *list = json_object_new_array(), *devs;
	char *path = NULL;
	int r;

	r = ctl_session_path(bus, args[0], &path);
	if (r < 0)
		goto out;
	devs = ctl_get_prop(bus, path, IOD_SESSION_INTERFACE, "Devices");
	for (size_t i = 0; devs && i < json_object_array_length(devs); i++) {
		const char *dpath = json_object_get_string(json_object_array_get_idx(devs, i));
		struct json_object *d = json_object_new_object();

		json_object_object_add(d, "path", json_object_new_string(dpath));
		add_props(d, bus, dpath, IOD_DEVICE_INTERFACE, device_props);
		json_object_array_add(list, d);
	}
	json_object_put(devs);

	if (arg_json) {
		print_json(list);
	} else {
		printf("%-16s %-26s %-11s %5s %-9s %-10s %-11s %-9s\n", "NAME", "CDEV", "IOMMU",
		       "HWPT", "TRACKING", "SOURCE", "DMA-LOGGING", "MIGRATION");
		for (size_t i = 0; i < json_object_array_length(list); i++) {
			struct json_object *d = json_object_array_get_idx(list, i), *v;

#define F(key) (json_object_object_get_ex(d, key, &v) ? json_object_get_string(v) : "-")
			printf("%-16s %-26s %-11s %5s %-9s %-10s %-11s %-9s\n", F("name"),
			       F("cdev"), F("iommu_type"), F("hwpt_id"), F("tracking_mode"),
			       F("dirty_source"), F("dma_logging"), F("migration"));
#undef F
		}
	}
out:
	json_object_put(list);
	free(path);
	return r;
}

static int cmd_probe(sd_bus *bus, char **args)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct json_object *o = json_object_new_object();
	sd_bus_message *reply = NULL;
	int r;

	r = sd_bus_call_method(bus, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			       "ProbeDevice", &error, &reply, "s", args[0]);
	if (r < 0) {
		r = ctl_fail(&error, r, args[0]);
		goto out;
	}
	r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		const char *key, *contents, *s;
		char type;
		int b;

		if ((r = sd_bus_message_read(reply, "s", &key)) < 0 ||
		    (r = sd_bus_message_peek_type(reply, &type, &contents)) < 0 ||
		    (r = sd_bus_message_enter_container(reply, 'v', contents)) < 0)
			break;
		if (contents[0] == 's' && sd_bus_message_read_basic(reply, 's', &s) >= 0) {
			json_object_object_add(o, key, json_object_new_string(s));
		} else if (contents[0] == 'b' && sd_bus_message_read_basic(reply, 'b', &b) >= 0) {
			json_object_object_add(o, key, json_object_new_boolean(b));
		} else if (strcmp(contents, "as") == 0) {
			struct json_object *a = json_object_new_array();

			if (sd_bus_message_enter_container(reply, 'a', "s") >= 0) {
				while (sd_bus_message_read_basic(reply, 's', &s) > 0)
					json_object_array_add(a, json_object_new_string(s));
				sd_bus_message_exit_container(reply);
			}
			json_object_object_add(o, key, a);
		} else {
			sd_bus_message_skip(reply, contents);
		}
		if ((r = sd_bus_message_exit_container(reply)) < 0 ||
		    (r = sd_bus_message_exit_container(reply)) < 0)
			break;
	}
	if (r < 0) {
		r = ctl_fail(NULL, r, "ProbeDevice");
		goto out;
	}
	if (arg_json) {
		print_json(o);
	} else {
		json_object_object_foreach(o, key, val) {
			printf("%22s: %s\n", key,
			       json_object_is_type(val, json_type_string)
				       ? json_object_get_string(val)
				       : json_object_to_json_string(val));
		}
	}
	r = 0;
out:
	json_object_put(o);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	return r;
}

static int simple_call(sd_bus *bus, const char *name, const char *member)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char *path = NULL;
	int r;

	r = ctl_session_path(bus, name, &path);
	if (r < 0)
		return r;
	r = sd_bus_call_method(bus, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE, member, &error, NULL,
			       NULL);
	if (r < 0)
		r = ctl_fail(&error, r, member);
	sd_bus_error_free(&error);
	free(path);
	return r < 0 ? r : 0;
}

static int cmd_start(sd_bus *bus, char **args)
{
	return simple_call(bus, args[0], "Start");
}

static int cmd_stop(sd_bus *bus, char **args)
{
	return simple_call(bus, args[0], "Stop");
}

static int cmd_destroy(sd_bus *bus, char **args)
{
	return simple_call(bus, args[0], "Destroy");
}

static int cmd_create(sd_bus *bus, char **args)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL, *reply = NULL;
	const char *path;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, IOD_BUS_NAME, IOD_MANAGER_PATH,
					   IOD_MANAGER_INTERFACE, "CreateSession");
	if (r >= 0)
		r = sd_bus_message_append(m, "s", args[0]);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}{sv}{sv}", "viommu", "b", (int)arg_viommu,
					  "huge_pages", "b", (int)arg_huge_pages,
					  "disconnect_policy", "s",
					  arg_destroy_on_exit ? "destroy" : "keep");
	if (r >= 0 && arg_page_size)
		r = sd_bus_message_append(m, "{sv}", "page_size", "t", arg_page_size);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, &error, &reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		r = ctl_fail(&error, r, "CreateSession");
	else if (arg_json)
		printf("{ \"path\": \"%s\" }\n", path);
	else
		printf("%s\n", path);
	sd_bus_message_unref(m);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	return r < 0 ? r : 0;
}

/* Count the dirty pages of every region of a harvested log (round plane, with peek | accum). */
/* The dirty pages of each region of the round (with peek, of both planes) in the log. */
static int read_log(int fd, bool peek, struct json_object *regions)
{
	struct iod_dirty_log *log = NULL;
	int r;

	r = iod_log_open_fd_ro(fd, &log);
	if (r < 0)
		return r;
	for (size_t i = 0; i < iod_log_region_count(log); i++) {
		const struct iod_log_region *g = iod_log_region(log, i);
		uint64_t nbits = g->length >> iod_log_page_shift(log), n = 0, start, end;
		struct json_object *o;

		for (uint64_t b = 0; iod_log_next_dirty(log, i, peek, b, nbits, &start, &end) == 0;
		     b = end)
			n += end - start;
		o = json_object_new_object();
		json_object_object_add(o, "gpa", json_object_new_uint64(g->gpa));
		json_object_object_add(o, "length", json_object_new_uint64(g->length));
		json_object_object_add(o, "dirty_pages", json_object_new_uint64(n));
		json_object_array_add(regions, o);
	}
	iod_log_free(log);
	return 0;
}

static int cmd_harvest(sd_bus *bus, char **args)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL, *reply = NULL;
	struct json_object *o = json_object_new_object(), *list = json_object_new_array();
	uint64_t round, dirty, usec;
	int precise, truncated = 0, fd, r;
	char *path = NULL;

	r = ctl_session_path(bus, args[0], &path);
	if (r < 0)
		goto out;
	r = sd_bus_message_new_method_call(bus, &m, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE,
					   arg_ranges ? "HarvestRanges" : "Harvest");
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}", "peek", "b", (int)arg_peek);
	if (r >= 0 && arg_ranges)
		r = sd_bus_message_append(m, "{sv}", "space", "s", arg_iova ? "iova" : "gpa");
	if (r >= 0 && arg_ranges && arg_max_ranges)
		r = sd_bus_message_append(m, "{sv}", "max_ranges", "u", arg_max_ranges);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, &error, &reply);
	if (r < 0) {
		r = ctl_fail(&error, r, "Harvest");
		goto out;
	}

	if (arg_ranges) {
		uint64_t start, length;

		r = sd_bus_message_read(reply, "t", &round);
		if (r >= 0)
			r = sd_bus_message_enter_container(reply, 'a', "(tt)");
		while (r >= 0 && (r = sd_bus_message_read(reply, "(tt)", &start, &length)) > 0) {
			struct json_object *e = json_object_new_object();

			json_object_object_add(e, "start", json_object_new_uint64(start));
			json_object_object_add(e, "length", json_object_new_uint64(length));
			json_object_array_add(list, e);
		}
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
		if (r >= 0)
			r = sd_bus_message_read(reply, "btbt", &truncated, &dirty, &precise, &usec);
	} else {
		r = sd_bus_message_read(reply, "thtbt", &round, &fd, &dirty, &precise, &usec);
		if (r >= 0)
			r = read_log(fd, arg_peek, list);
	}
	/* Printed below, so the round is delivered: acknowledge it. A truncated list is not the
	 * whole round: it stays pending, and the next harvest delivers it again. */
	if (r >= 0 && !arg_peek && !truncated) {
		sd_bus_error_free(&error);
		r = sd_bus_call_method(bus, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE,
				       "Acknowledge", &error, NULL, "t", round);
		if (r < 0) {
			r = ctl_fail(&error, r, "Acknowledge");
			goto out;
		}
	}
	if (r < 0) {
		r = ctl_fail(NULL, r, "Harvest reply");
		goto out;
	}

	json_object_object_add(o, "round", json_object_new_uint64(round));
	json_object_object_add(o, "dirty_pages", json_object_new_uint64(dirty));
	json_object_object_add(o, "precise", json_object_new_boolean(precise));
	json_object_object_add(o, "duration_usec", json_object_new_uint64(usec));
	json_object_object_add(o, "peek", json_object_new_boolean(arg_peek));
	if (arg_ranges) {
		json_object_object_add(o, "space",
				       json_object_new_string(arg_iova ? "iova" : "gpa"));
		json_object_object_add(o, "truncated", json_object_new_boolean(truncated));
	}
	json_object_object_add(o, arg_ranges ? "ranges" : "regions", json_object_get(list));

	if (arg_json) {
		print_json(o);
	} else {
		printf("%22s: %" PRIu64 "%s\n", "Round", round, arg_peek ? " (peek)" : "");
		printf("%22s: %" PRIu64 "\n", "Dirty pages", dirty);
		printf("%22s: %s\n", "Precise",
		       precise ? "yes" : "no (fallback devices or huge IOMMU pages)");
		printf("%22s: %" PRIu64 "\n", "Duration (usec)", usec);
		if (arg_ranges) {
			printf("%22s: %s\n", "Truncated", truncated ? "yes" : "no");
			printf("\n%-18s %-18s\n", arg_iova ? "IOVA" : "GPA", "LENGTH");
		} else {
			printf("\n%-18s %-18s %12s\n", "GPA", "LENGTH", "DIRTY");
		}
		for (size_t i = 0; i < json_object_array_length(list); i++) {
			struct json_object *e = json_object_array_get_idx(list, i), *v;
			uint64_t a, b;

			json_object_object_get_ex(e, arg_ranges ? "start" : "gpa", &v);
			a = json_object_get_uint64(v);
			json_object_object_get_ex(e, "length", &v);
			b = json_object_get_uint64(v);
			if (arg_ranges) {
				printf("0x%-16" PRIx64 " 0x%-16" PRIx64 "\n", a, b);
			} else {
				json_object_object_get_ex(e, "dirty_pages", &v);
				printf("0x%-16" PRIx64 " 0x%-16" PRIx64 " %12" PRIu64 "\n", a, b,
				       json_object_get_uint64(v));
			}
		}
	}
	r = 0;
out:
	json_object_put(list);
	json_object_put(o);
	sd_bus_message_unref(m);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	free(path);
	return r;
}

static int cmd_metrics(sd_bus *bus, char **args)
{
	return iod_metrics_run(bus, arg_format, arg_output);
}

static int cmd_rate(sd_bus *bus, char **args)
{
	const struct ctl_rate_options o = {
		.interval_usec = arg_interval_usec,
		.window_usec = arg_window_usec,
		.watch = arg_watch,
		.json = arg_json,
	};

	return ctl_rate(bus, args[0], &o);
}

static const struct {
	const char *name;
	int nargs;
	int (*fn)(sd_bus *bus, char **args);
} commands[] = {
	{"status", 0, cmd_status},   {"sessions", 0, cmd_sessions}, {"session", 1, cmd_session},
	{"devices", 1, cmd_devices}, {"probe", 1, cmd_probe},	    {"create", 1, cmd_create},
	{"destroy", 1, cmd_destroy}, {"start", 1, cmd_start},	    {"stop", 1, cmd_stop},
	{"harvest", 1, cmd_harvest}, {"metrics", 0, cmd_metrics},   {"harvest", 1, cmd_harvest},
	{"rate", 1, cmd_rate},
};

enum {
	ARG_VERSION = 0x100,
	ARG_ADDRESS,
	ARG_USER,
	ARG_SYSTEM,
	ARG_RANGES,
	ARG_IOVA,
	ARG_MAX_RANGES,
	ARG_PEEK,
	ARG_VIOMMU,
	ARG_HUGE_PAGES,
	ARG_PAGE_SIZE,
	ARG_DESTROY_ON_EXIT,
	ARG_OUTPUT,
	ARG_FORMAT,
	ARG_WATCH,
	ARG_INTERVAL,
	ARG_WINDOW,
};

/* "1.5s", "500ms", "2min", "250us"; a bare number is seconds. */
static int parse_duration(const char *s, uint64_t *ret)
{
	static const struct {
		const char *suffix;
		double usec;
	} units[] = {{"us", 1}, {"ms", 1e3}, {"s", 1e6}, {"min", 60e6}, {"", 1e6}};
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !(v >= 0) || *s == '-')
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(units); i++)
		if (strcmp(end, units[i].suffix) == 0) {
			if (v * units[i].usec >= 1.8e19)
				return -ERANGE;
			*ret = (uint64_t)(v * units[i].usec);
			return 0;
		}
	return -EINVAL;
}

static int parse_argv(int argc, char *argv[])
{
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, ARG_VERSION},
		{"address", required_argument, NULL, ARG_ADDRESS},
		{"user", no_argument, NULL, ARG_USER},
		{"system", no_argument, NULL, ARG_SYSTEM},
		{"json", no_argument, NULL, 'j'},
		{"ranges", no_argument, NULL, ARG_RANGES},
		{"iova", no_argument, NULL, ARG_IOVA},
		{"max-ranges", required_argument, NULL, ARG_MAX_RANGES},
		{"peek", no_argument, NULL, ARG_PEEK},
		{"viommu", no_argument, NULL, ARG_VIOMMU},
		{"huge-pages", no_argument, NULL, ARG_HUGE_PAGES},
		{"page-size", required_argument, NULL, ARG_PAGE_SIZE},
		{"destroy-on-exit", no_argument, NULL, ARG_DESTROY_ON_EXIT},
		{"output", required_argument, NULL, ARG_OUTPUT},
		{"format", required_argument, NULL, ARG_FORMAT},
		{"watch", no_argument, NULL, ARG_WATCH},
		{"interval", required_argument, NULL, ARG_INTERVAL},
		{"window", required_argument, NULL, ARG_WINDOW},
		{},
	};
	unsigned long long v;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "hj", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			help();
			return 0;
		case ARG_VERSION:
			printf("iodirtyctl %s\n", IOD_VERSION);
			return 0;
		case ARG_ADDRESS:
			arg_address = optarg;
			break;
		case ARG_USER:
			arg_user = true;
			break;
		case ARG_SYSTEM:
			arg_user = false;
			arg_address = NULL;
			break;
		case 'j':
			arg_json = true;
			ctl_json = true;
			break;
		case ARG_RANGES:
			arg_ranges = true;
			break;
		case ARG_IOVA:
			arg_iova = true;
			break;
		case ARG_PEEK:
			arg_peek = true;
			break;
		case ARG_VIOMMU:
			arg_viommu = true;
			break;
		case ARG_HUGE_PAGES:
			arg_huge_pages = true;
			break;
		case ARG_DESTROY_ON_EXIT:
			arg_destroy_on_exit = true;
			break;
		case ARG_OUTPUT:
			if (!*optarg) {
				fprintf(stderr, "--output needs a file name.\n");
				return -EINVAL;
			}
			arg_output = optarg;
			arg_metrics_options = true;
			break;
		case ARG_FORMAT:
			if (iod_metrics_format_from_string(optarg, &arg_format) < 0) {
				fprintf(stderr,
					"Unknown format \"%s\": \"openmetrics\" or \"prometheus\".\n",
					optarg);
				return -EINVAL;
			}
			arg_metrics_options = true;
			break;
		case ARG_WATCH:
			arg_watch = true;
			break;
		case ARG_INTERVAL:
		case ARG_WINDOW:
			if (parse_duration(optarg, c == ARG_INTERVAL ? &arg_interval_usec
								     : &arg_window_usec) < 0) {
				fprintf(stderr,
					"Bad time \"%s\": a number with us, ms, s or min (s if none).\n",
					optarg);
				return -EINVAL;
			}
			break;
		case ARG_MAX_RANGES:
		case ARG_PAGE_SIZE:
			errno = 0;
			v = strtoull(optarg, &end, 0);
			if (errno || *end || end == optarg || optarg[0] == '-' ||
			    (c == ARG_MAX_RANGES && (v == 0 || v > UINT32_MAX))) {
				fprintf(stderr, "Bad number \"%s\".\n", optarg);
				return -EINVAL;
			}
			if (c == ARG_MAX_RANGES)
				arg_max_ranges = (uint32_t)v;
			else
				arg_page_size = v;
			break;
		default:
			return -EINVAL;
		}
	}
	if (arg_iova && !arg_ranges) {
		fprintf(stderr, "--iova needs --ranges: the bitmap is always in GPA space.\n");
		return -EINVAL;
	}
	return 1;
}

int main(int argc, char *argv[])
{
	sd_bus *bus = NULL;
	const char *verb;
	int r;

	r = parse_argv(argc, argv);
	if (r <= 0)
		return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;

	verb = optind < argc ? argv[optind] : "status";
	for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
		if (strcmp(commands[i].name, verb) != 0)
			continue;
		if (arg_metrics_options && commands[i].fn != cmd_metrics) {
			fprintf(stderr, "--output and --format are options of \"metrics\".\n");
			return EXIT_USAGE;
		}
		if ((optind < argc ? argc - optind - 1 : 0) != commands[i].nargs) {
			fprintf(stderr, "\"%s\" takes %d argument%s. See iodirtyctl --help.\n",
				verb, commands[i].nargs, commands[i].nargs == 1 ? "" : "s");
			return EXIT_USAGE;
		}
		r = iod_bus_client_open(arg_address, arg_user, &bus);
		if (r < 0) {
			fprintf(stderr, "Failed to connect to the bus: %s\n", strerror(-r));
			return EXIT_FAILURE;
		}
		r = commands[i].fn(bus, argv + optind + 1);
		sd_bus_flush_close_unref(bus);
		return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	}
	fprintf(stderr, "Unknown command \"%s\". See iodirtyctl --help.\n", verb);
	return EXIT_USAGE;
}
