/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-util.h"
#include "iod-util.h"

int iod_bus_query_uid(sd_bus_message *m, uid_t *ret_uid, sd_bus_error *error)
{
	sd_bus_creds *creds = NULL;
	uid_t uid;
	int r;

	r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID, &creds);
	if (r >= 0) {
		r = sd_bus_creds_get_euid(creds, &uid);
		sd_bus_creds_unref(creds);
	}
	if (r < 0)
		return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %s",
					       strerror(-r));
	*ret_uid = uid;
	return 0;
}

int iod_bus_read_options(sd_bus_message *m, const struct iod_bus_option *table, void *storage,
			 sd_bus_error *error)
{
	uint64_t seen = 0;
	int r;

	r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0)
		return r;

	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const struct iod_bus_option *o;
		const char *key, *contents;
		char type, sig[2], q[IOD_QUOTE_MAX], qc[IOD_QUOTE_MAX];
		size_t i;

		r = sd_bus_message_read(m, "s", &key);
		if (r < 0)
			return r;
		for (i = 0, o = NULL; table[i].key; i++)
			if (strcmp(table[i].key, key) == 0) {
				o = &table[i];
				break;
			}
		if (!o)
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "Unknown option \"%s\"", iod_quote(key, q));
		if (seen & (UINT64_C(1) << i))
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "Option \"%s\" given twice", key);
		seen |= UINT64_C(1) << i;

		r = sd_bus_message_peek_type(m, &type, &contents);
		if (r < 0)
			return r;
		sig[0] = o->type;
		sig[1] = '\0';
		if (type != 'v' || strcmp(contents, sig) != 0)
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "Option \"%s\" must be of type '%c', not '%s'",
						 key, o->type,
						 iod_quote(contents ? contents : "?", qc));

		r = sd_bus_message_enter_container(m, 'v', sig);
		if (r < 0)
			return r;
		switch (o->type) {
		case 'b': {
			int b;

			r = sd_bus_message_read_basic(m, 'b', &b);
			if (r >= 0)
				*(bool *)((char *)storage + o->offset) = b;
			break;
		}
		case 'u':
			r = sd_bus_message_read_basic(m, 'u', (char *)storage + o->offset);
			break;
		case 't':
			r = sd_bus_message_read_basic(m, 't', (char *)storage + o->offset);
			break;
		case 's':
			r = sd_bus_message_read_basic(m, 's', (char *)storage + o->offset);
			break;
		default:
			r = -EINVAL;
		}
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

int iod_bus_property_get_bool(sd_bus *bus, const char *path, const char *interface,
			      const char *property, sd_bus_message *reply, void *userdata,
			      sd_bus_error *error)
{
	return sd_bus_message_append(reply, "b", (int)*(const bool *)userdata);
}
