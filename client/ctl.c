/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bus helpers of iodirtyctl's commands (ctl.h), shared by iodirtyctl.c and ctl-rate.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "iodirty.h"

bool ctl_json;

int ctl_fail(const sd_bus_error *error, int r, const char *what)
{
	fprintf(stderr, "%s: %s", what, error && error->message ? error->message : strerror(-r));
	if (error && error->name && !ctl_json)
		fprintf(stderr, " (%s)", error->name);
	fputc('\n', stderr);
	return -EIO;
}

int ctl_session_path(sd_bus *bus, const char *name, char **ret)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path;
	int r;

	r = sd_bus_call_method(bus, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			       "GetSession", &error, &reply, "s", name);
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &path);
	if (r >= 0) {
		*ret = strdup(path);
		r = *ret ? 0 : -ENOMEM;
	} else {
		r = ctl_fail(&error, r, name);
	}
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	return r;
}

/* Read a property of basic type into a json object (NULL on failure). */
struct json_object *ctl_get_prop(sd_bus *bus, const char *path, const char *iface, const char *prop)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	struct json_object *o = NULL;
	sd_bus_message *reply = NULL;
	const char *contents;
	char type;
	int r;

	r = sd_bus_call_method(bus, IOD_BUS_NAME, path, "org.freedesktop.DBus.Properties", "Get",
			       &error, &reply, "ss", iface, prop);
	if (r >= 0)
		r = sd_bus_message_peek_type(reply, &type, &contents);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'v', contents);
	if (r < 0)
		goto out;

	switch (contents[0]) {
	case 's':
	case 'o': {
		const char *s;

		if (sd_bus_message_read_basic(reply, contents[0], &s) >= 0)
			o = json_object_new_string(s);
		break;
	}
	case 'b': {
		int b;

		if (sd_bus_message_read_basic(reply, 'b', &b) >= 0)
			o = json_object_new_boolean(b);
		break;
	}
	case 'u': {
		uint32_t u;

		if (sd_bus_message_read_basic(reply, 'u', &u) >= 0)
			o = json_object_new_int64(u);
		break;
	}
	case 't': {
		uint64_t t;

		if (sd_bus_message_read_basic(reply, 't', &t) >= 0)
			o = json_object_new_uint64(t);
		break;
	}
	case 'a':
		if (strcmp(contents, "ao") == 0 || strcmp(contents, "as") == 0) {
			const char *s;

			o = json_object_new_array();
			if (sd_bus_message_enter_container(reply, 'a', contents + 1) < 0)
				break;
			while (sd_bus_message_read_basic(reply, contents[1], &s) > 0)
				json_object_array_add(o, json_object_new_string(s));
		}
		break;
	}
out:
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	return o;
}
