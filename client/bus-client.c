/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "iodirty-client.h"

int iod_bus_client_open(const char *address, bool user, sd_bus **ret)
{
	sd_bus *bus = NULL;
	int r;

	if (address) {
		r = sd_bus_new(&bus);
		if (r >= 0)
			r = sd_bus_set_address(bus, address);
		if (r >= 0)
			r = sd_bus_set_bus_client(bus, 1);
		if (r >= 0)
			r = sd_bus_negotiate_fds(bus, 1);
		if (r >= 0)
			r = sd_bus_start(bus);
	} else if (user) {
		r = sd_bus_open_user(&bus);
	} else {
		r = sd_bus_open_system(&bus);
	}
	if (r < 0) {
		sd_bus_unref(bus);
		return r;
	}
	*ret = bus;
	return 0;
}

int iod_bus_new_batch(sd_bus *bus, const char *path, bool map, const struct iod_mapping *v,
		      size_t n, sd_bus_message **ret)
{
	sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE,
					   map ? "MapBatch" : "UnmapBatch");
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', map ? "(ttt)" : "(tt)");
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = map ? sd_bus_message_append(m, "(ttt)", v[i].iova, v[i].gpa, v[i].length)
			: sd_bus_message_append(m, "(tt)", v[i].iova, v[i].length);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r < 0) {
		sd_bus_message_unref(m);
		return r;
	}
	*ret = m;
	return 0;
}
