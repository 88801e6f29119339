/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The session objects on the bus (org.iodirty.Tracker1.Session): a fallback vtable, its
 * handlers and the node enumerator (which lists the device objects too).
 */
#ifndef IOD_SESSION_DBUS_H
#define IOD_SESSION_DBUS_H

#include <systemd/sd-bus.h>

extern const sd_bus_vtable iod_session_vtable[];
int iod_session_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
			    void **found, sd_bus_error *error);
int iod_session_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
				sd_bus_error *error);

#endif
