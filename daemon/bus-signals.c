/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>

#include "bus-signals.h"
#include "context.h"

static int emit_changedv(const struct iod_context *c, const char *path, const char *interface,
			 const char *property, va_list ap)
{
	char *names[16];
	size_t n = 0;

	for (const char *p = property; p && n < ELEMENTSOF(names) - 1; p = va_arg(ap, const char *))
		names[n++] = (char *)p;
	names[n] = NULL;
	return sd_bus_emit_properties_changed_strv(c->bus, path, interface, names);
}

int iod_bus_emit_manager_changed(const struct iod_context *c, const char *property, ...)
{
	va_list ap;
	int r;

	if (!c->bus)
		return 0;
	va_start(ap, property);
	r = emit_changedv(c, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, property, ap);
	va_end(ap);
	return r;
}

static int emit_session_listed(const struct iod_context *c, const char *member, const char *name,
			       const char *path)
{
	int r;

	if (!c->bus)
		return 0;
	r = sd_bus_emit_signal(c->bus, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, member, "so", name,
			       path);
	if (r < 0)
		return r;
	return iod_bus_emit_manager_changed(c, "Sessions", NULL);
}

int iod_bus_emit_session_new(const struct iod_context *c, const char *name, const char *path)
{
	return emit_session_listed(c, "SessionNew", name, path);
}

int iod_bus_emit_session_removed(const struct iod_context *c, const char *name, const char *path)
{
	return emit_session_listed(c, "SessionRemoved", name, path);
}

int iod_bus_emit_session_changed(const struct iod_context *c, const char *path,
				 const char *property, ...)
{
	va_list ap;
	int r;

	if (!c->bus)
		return 0;
	va_start(ap, property);
	r = emit_changedv(c, path, IOD_SESSION_INTERFACE, property, ap);
	va_end(ap);
	return r;
}

int iod_bus_emit_session_failed(const struct iod_context *c, const char *path, const char *reason)
{
	if (!c->bus)
		return 0;
	return sd_bus_emit_signal(c->bus, path, IOD_SESSION_INTERFACE, "Failed", "s",
				  reason ? reason : "");
}

int iod_bus_emit_device_lost(const struct iod_context *c, const char *path, const char *device_path,
			     const char *reason)
{
	if (!c->bus)
		return 0;
	return sd_bus_emit_signal(c->bus, path, IOD_SESSION_INTERFACE, "DeviceLost", "os",
				  device_path,
				  reason ? reason : "the device was removed from the system");
}

int iod_bus_emit_device_changed(const struct iod_context *c, const char *path, const char *property,
				...)
{
	va_list ap;
	int r;

	if (!c->bus)
		return 0;
	va_start(ap, property);
	r = emit_changedv(c, path, IOD_DEVICE_INTERFACE, property, ap);
	va_end(ap);
	return r;
}
