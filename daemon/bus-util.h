/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small sd-bus helpers shared by the *-dbus.c files: the caller's uid, a{sv} options.
 */
#ifndef IOD_BUS_UTIL_H
#define IOD_BUS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-bus.h>

/* The effective uid of the sender of m. */
int iod_bus_query_uid(sd_bus_message *m, uid_t *ret_uid, sd_bus_error *error);

/* Property getter for a C bool stored at the property's offset. */
int iod_bus_property_get_bool(sd_bus *bus, const char *path, const char *interface,
			      const char *property, sd_bus_message *reply, void *userdata,
			      sd_bus_error *error);

/* One known key of an a{sv} options argument, stored at offset in a struct. */
struct iod_bus_option {
	const char *key;
	char type; /* 'b' (bool), 'u' (uint32_t), 't' (uint64_t), 's' (const char *, valid while
		      the message lives) */
	size_t offset;
};

/*
 * Read an a{sv} argument into the struct at storage. An unknown key, a duplicate key or a
 * value of the wrong type is refused with InvalidArgs naming it.
 */
int iod_bus_read_options(sd_bus_message *m, const struct iod_bus_option *table, void *storage,
			 sd_bus_error *error);

#endif
