/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small sd-bus helpers shared by the *-dbus.c files: the caller's uid, a{sv} options,
 * property getters.
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

/*
 * Property getters by offset, as systemd's BUS_DEFINE_PROPERTY_GET* and bus_property_get_*:
 * the vtable names a field, SD_BUS_PROPERTY("Name", "t", getter, offsetof(struct x, field),
 * flags), and sd-bus hands the getter a pointer to that field as userdata (a pointer to the
 * object itself with offset 0). With no getter at all sd-bus appends a basic type stored at
 * the offset by itself ('s': a char *, NULL read as ""), except a C bool, which is one byte
 * where D-Bus reads four: iod_bus_property_get_bool().
 */
int iod_bus_property_get_bool(sd_bus *bus, const char *path, const char *interface,
			      const char *property, sd_bus_message *reply, void *userdata,
			      sd_bus_error *error);

/*
 * Define a getter that appends get2(get1(field)), the field being a data_type at the
 * property's offset. Written with "static" in front, as in systemd:
 *   static IOD_BUS_DEFINE_PROPERTY_GET(property_get_state, "s", struct iod_session,
 *                                      iod_session_state_string);   (offset 0)
 *   static IOD_BUS_DEFINE_PROPERTY_GET_REF(property_get_rounds, "t", struct iod_dirty_log *,
 *                                          iod_log_rounds);   (offsetof(..., log))
 * get2(get1(field)) must have the C type that bus_type reads from the va_list (uint64_t for
 * 't', uint32_t for 'u', int or bool for 'b', const char * for 's' and 'o').
 */
#define IOD_BUS_DEFINE_PROPERTY_GET2(function, bus_type, data_type, get1, get2)                  \
	int function(sd_bus *bus, const char *path, const char *interface, const char *property, \
		     sd_bus_message *reply, void *userdata, sd_bus_error *error)                 \
	{                                                                                        \
		data_type *data = userdata;                                                      \
                                                                                                 \
		return sd_bus_message_append(reply, bus_type, get2(get1(data)));                 \
	}
#define IOD_BUS_IDENT(x) (x)
#define IOD_BUS_DEREF(x) (*(x))
/* get(pointer to the field) */
#define IOD_BUS_DEFINE_PROPERTY_GET(function, bus_type, data_type, get) \
	IOD_BUS_DEFINE_PROPERTY_GET2(function, bus_type, data_type, get, IOD_BUS_IDENT)
/* get(the field's value) */
#define IOD_BUS_DEFINE_PROPERTY_GET_REF(function, bus_type, data_type, get) \
	IOD_BUS_DEFINE_PROPERTY_GET2(function, bus_type, data_type, IOD_BUS_DEREF, get)
/* An enum field as a string: name##_to_string(field). */
#define IOD_BUS_DEFINE_PROPERTY_GET_ENUM(function, name, type) \
	IOD_BUS_DEFINE_PROPERTY_GET_REF(function, "s", type, name##_to_string)
/* A value that belongs to no object (offset 0, userdata unused). */
#define IOD_BUS_DEFINE_PROPERTY_GET_GLOBAL(function, bus_type, val)                              \
	int function(sd_bus *bus, const char *path, const char *interface, const char *property, \
		     sd_bus_message *reply, void *userdata, sd_bus_error *error)                 \
	{                                                                                        \
		return sd_bus_message_append(reply, bus_type, val);                              \
	}

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
