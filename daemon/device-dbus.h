/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The device objects of sessions on the bus (org.iodirty.Tracker1.Device): read-only
 * properties under the session's path.
 */
#ifndef IOD_DEVICE_DBUS_H
#define IOD_DEVICE_DBUS_H

#include <systemd/sd-bus.h>

extern const sd_bus_vtable iod_device_vtable[];
int iod_device_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
			   void **found, sd_bus_error *error);

#endif
