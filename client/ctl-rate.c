/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyctl rate NAME: the dirty rate of a tracking session (Session1.GetDirtyRate), once or
 * every interval (--watch) until interrupted, as a table or JSON.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "ctl.h"
#include "iodirty.h"

static volatile sig_atomic_t rate_interrupted;

static void rate_on_signal(int sig)
{
	rate_interrupted = 1;
}

/* One GetDirtyRate, as JSON (NULL on failure, reported). */
static struct json_object *rate_get(sd_bus *bus, const char *name, const char *path,
				    uint64_t page_size, const struct ctl_rate_options *opt)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	struct json_object *o = NULL, *hwpts;
	uint64_t window, samples, dirty, pps, ws;
	int precise, r;

	r = sd_bus_call_method(bus, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE, "GetDirtyRate",
			       &error, &reply, "a{sv}", 2, "interval_usec", "t", opt->interval_usec,
			       "window_usec", "t", opt->window_usec);
	if (r < 0) {
		ctl_fail(&error, r, "GetDirtyRate");
		goto out;
	}
	r = sd_bus_message_read(reply, "tttttb", &window, &samples, &dirty, &pps, &ws, &precise);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "(uaottt)");
	if (r < 0)
		goto bad;
	o = json_object_new_object();
	hwpts = json_object_new_array();
	json_object_object_add(o, "session", json_object_new_string(name));
	json_object_object_add(o, "window_usec", json_object_new_uint64(window));
	json_object_object_add(o, "samples", json_object_new_uint64(samples));
	json_object_object_add(o, "dirty_pages", json_object_new_uint64(dirty));
	json_object_object_add(o, "pages_per_sec", json_object_new_uint64(pps));
	json_object_object_add(o, "bytes_per_sec", json_object_new_uint64(pps * page_size));
	json_object_object_add(o, "working_set_pages", json_object_new_uint64(ws));
	json_object_object_add(o, "working_set_bytes", json_object_new_uint64(ws * page_size));
	json_object_object_add(o, "precise", json_object_new_boolean(precise));
	json_object_object_add(o, "hwpts", hwpts);
	while ((r = sd_bus_message_enter_container(reply, 'r', "uaottt")) > 0) {
		struct json_object *h = json_object_new_object(), *devs = json_object_new_array();
		const char *dev;
		uint32_t id;

		json_object_array_add(hwpts, h);
		json_object_object_add(h, "devices", devs);
		r = sd_bus_message_read(reply, "u", &id);
		if (r >= 0)
			r = sd_bus_message_enter_container(reply, 'a', "o");
		while (r >= 0 && (r = sd_bus_message_read(reply, "o", &dev)) > 0)
			json_object_array_add(devs, json_object_new_string(dev));
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
		if (r >= 0)
			r = sd_bus_message_read(reply, "ttt", &dirty, &pps, &ws);
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
		if (r < 0)
			goto bad;
		json_object_object_add(h, "hwpt_id", json_object_new_uint64(id));
		json_object_object_add(h, "dirty_pages", json_object_new_uint64(dirty));
		json_object_object_add(h, "pages_per_sec", json_object_new_uint64(pps));
		json_object_object_add(h, "working_set_pages", json_object_new_uint64(ws));
	}
	if (r >= 0)
		goto out;
bad:
	ctl_fail(NULL, r, "GetDirtyRate reply");
	json_object_put(o);
	o = NULL;
out:
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	return o;
}

static uint64_t json_u64(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_uint64(v) : 0;
}

static void rate_print(struct json_object *o, const struct ctl_rate_options *opt)
{
	struct json_object *hwpts, *v;

	if (opt->json) {
		printf("%s\n", json_object_to_json_string_ext(
				       o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		return;
	}
	json_object_object_get_ex(o, "precise", &v);
	printf("%22s: %.3f s (%" PRIu64 " samples)\n", "Window",
	       (double)json_u64(o, "window_usec") / 1e6, json_u64(o, "samples"));
	if (json_u64(o, "samples") == 0)
		printf("%22s  (sampling just started: ask again after an interval)\n", "");
	printf("%22s: %" PRIu64 " pages/s (%.1f MiB/s)\n", "Dirty rate",
	       json_u64(o, "pages_per_sec"), (double)json_u64(o, "bytes_per_sec") / (1 << 20));
	printf("%22s: %" PRIu64 "\n", "Dirty pages", json_u64(o, "dirty_pages"));
	printf("%22s: %" PRIu64 " pages (%.1f MiB)\n", "Working set",
	       json_u64(o, "working_set_pages"),
	       (double)json_u64(o, "working_set_bytes") / (1 << 20));
	printf("%22s: %s\n", "Precise",
	       json_object_get_boolean(v) ? "yes"
					  : "no (fallback devices, huge IOMMU pages or a capped "
					    "working set)");
	json_object_object_get_ex(o, "hwpts", &hwpts);
	printf("\n%-6s %12s %12s %12s  %s\n", "HWPT", "PAGES/S", "DIRTY", "WORKING SET", "DEVICES");
	for (size_t i = 0; i < json_object_array_length(hwpts); i++) {
		struct json_object *h = json_object_array_get_idx(hwpts, i), *devs;
		size_t n;

		json_object_object_get_ex(h, "devices", &devs);
		n = json_object_array_length(devs);
		printf("%-6" PRIu64 " %12" PRIu64 " %12" PRIu64 " %12" PRIu64 "  %s\n",
		       json_u64(h, "hwpt_id"), json_u64(h, "pages_per_sec"),
		       json_u64(h, "dirty_pages"), json_u64(h, "working_set_pages"),
		       n ? json_object_get_string(json_object_array_get_idx(devs, 0)) : "-");
		for (size_t j = 1; j < n; j++)
			printf("%-6s %12s %12s %12s  %s\n", "", "", "", "",
			       json_object_get_string(json_object_array_get_idx(devs, j)));
	}
}

int ctl_rate(sd_bus *bus, const char *name, const struct ctl_rate_options *opt)
{
	struct sigaction sa = {.sa_handler = rate_on_signal};
	struct json_object *page_size, *o;
	char *path = NULL;
	int r;

	r = ctl_session_path(bus, name, &path);
	if (r < 0)
		return r;
	page_size = ctl_get_prop(bus, path, IOD_SESSION_INTERFACE, "PageSize");
	if (opt->watch) {
		(void)sigaction(SIGINT, &sa, NULL);
		(void)sigaction(SIGTERM, &sa, NULL);
	}
	for (bool first = true; !rate_interrupted; first = false) {
		struct timespec ts = {.tv_sec = (time_t)(opt->interval_usec / 1000000),
				      .tv_nsec = (long)(opt->interval_usec % 1000000) * 1000};

		o = rate_get(bus, name, path, page_size ? json_object_get_uint64(page_size) : 0,
			     opt);
		if (!o) {
			r = -EIO;
			break;
		}
		/* The call that starts the daemon's sampler has no sample yet: the numbers come
		 * an interval later. */
		if (first && json_u64(o, "samples") == 0) {
			json_object_put(o);
			(void)nanosleep(&ts, NULL);
			if (rate_interrupted)
				break;
			o = rate_get(bus, name, path,
				     page_size ? json_object_get_uint64(page_size) : 0, opt);
			if (!o) {
				r = -EIO;
				break;
			}
		}
		if (!opt->json && opt->watch && !first)
			printf("\n");
		rate_print(o, opt);
		json_object_put(o);
		fflush(stdout);
		if (!opt->watch)
			break;
		/* A signal ends the sleep early. */
		(void)nanosleep(&ts, NULL);
	}
	json_object_put(page_size);
	free(path);
	return r;
}
