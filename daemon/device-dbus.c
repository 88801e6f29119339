/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stddef.h>

#include "bus-util.h"
#include "device.h"
#include "device-dbus.h"
#include "manager.h"
#include "session.h"

static const char *session_path(const struct iod_session *s)
{
	return s->path;
}

static IOD_BUS_DEFINE_PROPERTY_GET_REF(property_get_session, "o", struct iod_session *,
				       session_path);
static IOD_BUS_DEFINE_PROPERTY_GET_REF(property_get_iommu_type, "s", uint32_t,
				       iod_iommu_type_to_string);

static int property_get_tracking(sd_bus *bus, const char *path, const char *interface,
				 const char *property, sd_bus_message *reply, void *userdata,
				 sd_bus_error *error)
{
	struct iod_device *d = userdata;
	struct iod_session *s = d->session;
	const char *v = "fallback";

	/* Exact: the IOMMU's dirty bits, or the device's own DMA log. */
	if (d->source == IOD_SOURCE_DEVICE_LOG)
		v = "hardware";
	for (size_t i = 0; i < s->n_hwpts; i++)
		if (s->hwpts[i].hw.id == d->hwpt_id && s->hwpts[i].hw.dirty_capable)
			v = "hardware";
	return sd_bus_message_append(reply, "s", v);
}

static int property_get_dirty_source(sd_bus *bus, const char *path, const char *interface,
				     const char *property, sd_bus_message *reply, void *userdata,
				     sd_bus_error *error)
{
	const struct iod_device *d = userdata;

	return sd_bus_message_append(reply, "s", iod_dirty_source_to_string(d->source));
}

static int property_get_log_ranges(sd_bus *bus, const char *path, const char *interface,
				   const char *property, sd_bus_message *reply, void *userdata,
				   sd_bus_error *error)
{
	const struct iod_device *d = userdata;

	return sd_bus_message_append(reply, "u", (uint32_t)(d->logging ? d->n_log_ranges : 0));
}

static int property_get_migration_flags(sd_bus *bus, const char *path, const char *interface,
					const char *property, sd_bus_message *reply, void *userdata,
					sd_bus_error *error)
{
	struct iod_device *d = userdata;
	const char *name;
	int r;

	r = sd_bus_message_open_container(reply, 'a', "s");
	if (r < 0)
		return r;
	for (unsigned i = 0; (name = iod_migration_flag_name(d->features.migration_flags, i));
	     i++) {
		r = sd_bus_message_append(reply, "s", name);
		if (r < 0)
			return r;
	}
	return sd_bus_message_close_container(reply);
}

#define DEVICE_OFF(f) offsetof(struct iod_device, f)
#define CONST SD_BUS_VTABLE_PROPERTY_CONST

const sd_bus_vtable iod_device_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Session", "o", property_get_session, DEVICE_OFF(session), CONST),
	SD_BUS_PROPERTY("Index", "u", NULL, DEVICE_OFF(index), CONST),
	SD_BUS_PROPERTY("Name", "s", NULL, DEVICE_OFF(name), CONST),
	SD_BUS_PROPERTY("Cdev", "s", NULL, DEVICE_OFF(cdev), CONST),
	SD_BUS_PROPERTY("DevId", "u", NULL, DEVICE_OFF(dev_id), CONST),
	SD_BUS_PROPERTY("HwptId", "u", NULL, DEVICE_OFF(hwpt_id), CONST),
	SD_BUS_PROPERTY("IommuType", "s", property_get_iommu_type, DEVICE_OFF(hw.type), CONST),
	SD_BUS_PROPERTY("IommuDirtyTracking", "b", iod_bus_property_get_bool,
			DEVICE_OFF(hw.dirty_tracking), CONST),
	SD_BUS_PROPERTY("TrackingMode", "s", property_get_tracking, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("DirtySource", "s", property_get_dirty_source, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("DmaLoggingRanges", "u", property_get_log_ranges, 0, 0),
	SD_BUS_PROPERTY("DmaLogging", "b", iod_bus_property_get_bool,
			DEVICE_OFF(features.dma_logging), CONST),
	SD_BUS_PROPERTY("Migration", "b", iod_bus_property_get_bool, DEVICE_OFF(features.migration),
			CONST),
	SD_BUS_PROPERTY("MigrationFlags", "as", property_get_migration_flags, 0, CONST),
	SD_BUS_PROPERTY("Lost", "b", iod_bus_property_get_bool, DEVICE_OFF(lost),
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_VTABLE_END,
};

int iod_device_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
			   void **found, sd_bus_error *error)
{
	struct iod_device *d = iod_manager_find_device_by_path(userdata, path);

	if (!d)
		return 0;
	*found = d;
	return 1;
}
