/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "bus-client.h"

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
