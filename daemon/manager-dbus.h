/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The manager object on the bus (org.iodirty.Tracker1.Manager): its vtable and handlers, the
 * publication of every object, and the one watch on the owners of sessions.
 */
#ifndef IOD_MANAGER_DBUS_H
#define IOD_MANAGER_DBUS_H

#include <systemd/sd-bus.h>

struct iod_manager;

/* Publish the objects and the owner watch on the manager's bus. */
int iod_manager_publish(struct iod_manager *m);
extern const sd_bus_vtable iod_manager_vtable[];
int iod_manager_on_name_owner_changed(sd_bus_message *message, void *userdata, sd_bus_error *error);

#endif
