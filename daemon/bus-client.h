/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The client side of the bus: how iodirtyctl, iodirty-migrate and the test clients
 * connect to the bus iodirtyd serves on. Not linked into iodirtyd.
 */
#ifndef IOD_BUS_CLIENT_H
#define IOD_BUS_CLIENT_H

#include <stdbool.h>

#include <systemd/sd-bus.h>

#include "iodirty.h"

/*
 * Connect as a bus client to the bus at address (a D-Bus address string), or with address
 * NULL to the user bus if user is true, else to the system bus. Unix fds are negotiated
 * (the dirty log and guest memory travel as fds). Returns 0 or -errno; *ret is written only
 * on success.
 */
int iod_bus_client_open(const char *address, bool user, sd_bus **ret);

/*
 * A Session1.MapBatch call (map: a(ttt) of iova, gpa, length) or UnmapBatch call (a(tt) of
 * iova, length; gpa unused) to the session at path with the n entries of v, ready for
 * sd_bus_call. Returns 0 or -errno; *ret is written only on success.
 */
int iod_bus_new_batch(sd_bus *bus, const char *path, bool map, const struct iod_mapping *v,
		      size_t n, sd_bus_message **ret);

#endif
