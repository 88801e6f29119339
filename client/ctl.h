/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyctl's bus helpers (ctl.c), which report errors as every command does, for
 * iodirtyctl.c and the commands that live in files of their own (ctl-rate.c).
 */
#ifndef IOD_CTL_H
#define IOD_CTL_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>

/* --json: errors without the D-Bus error name. */
extern bool ctl_json;

/* Print "what: message (error name)" on stderr; -EIO. */
int ctl_fail(const sd_bus_error *error, int r, const char *what);
/* The object path of session name (Manager1.GetSession), malloc'ed. */
int ctl_session_path(sd_bus *bus, const char *name, char **ret);
/* A property of basic type as a json object (NULL on failure). */
struct json_object *ctl_get_prop(sd_bus *bus, const char *path, const char *iface,
				 const char *prop);

struct ctl_rate_options {
	uint64_t interval_usec, window_usec;
	bool watch; /* print again every interval until SIGINT or SIGTERM */
	bool json;
};

/* iodirtyctl rate NAME (ctl-rate.c). */
int ctl_rate(sd_bus *bus, const char *name, const struct ctl_rate_options *opt);

#endif
