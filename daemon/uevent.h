/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Kernel uevents (NETLINK_KOBJECT_UEVENT through libnl-3): notices when a device that a
 * session holds is removed, marks it lost and sends Session1.DeviceLost.
 */
#ifndef IOD_UEVENT_H
#define IOD_UEVENT_H

#include <stdbool.h>

struct iod_manager;
struct iod_device;
struct iod_uevent;

int iod_uevent_start(struct iod_manager *m, struct iod_uevent **ret);
struct iod_uevent *iod_uevent_free(struct iod_uevent *u);

/* Does the kernel device path (DEVPATH of a uevent) name device d or a parent of it? */
bool iod_uevent_devpath_matches(const char *devpath, const char *subsystem,
				const struct iod_device *d);

#endif
