/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Every signal iodirtyd sends, and nothing else: PropertiesChanged of the manager, of a
 * session and of a device; SessionNew and SessionRemoved; a session's Failed and DeviceLost.
 * They go out on the context's bus (nowhere before the manager connects), from the session
 * core as from the handlers above it. Sending never saves: whoever changed persistent state
 * made it durable first (persist.h).
 *
 * The lists of property names end with NULL; at most 15 are sent.
 */
#ifndef IOD_BUS_SIGNALS_H
#define IOD_BUS_SIGNALS_H

struct iod_context;

int iod_bus_emit_manager_changed(const struct iod_context *c, const char *property, ...);
/* SessionNew or SessionRemoved, and the manager's Sessions property. */
int iod_bus_emit_session_new(const struct iod_context *c, const char *name, const char *path);
int iod_bus_emit_session_removed(const struct iod_context *c, const char *name, const char *path);

/* Of the session at path. */
int iod_bus_emit_session_changed(const struct iod_context *c, const char *path,
				 const char *property, ...);
int iod_bus_emit_session_failed(const struct iod_context *c, const char *path, const char *reason);
/* A NULL reason says that the device was removed from the system. */
int iod_bus_emit_device_lost(const struct iod_context *c, const char *path, const char *device_path,
			     const char *reason);

/* Of the device at path. */
int iod_bus_emit_device_changed(const struct iod_context *c, const char *path, const char *property,
				...);

#endif
