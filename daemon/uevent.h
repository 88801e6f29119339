/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Device removal. Two signals say that a device of a session is going away:
 *  - a kernel uevent (NETLINK_KOBJECT_UEVENT through libnl-3) "remove" of the PCI function,
 *    of anything above it, or of its VFIO cdev;
 *  - VFIO's release request: the eventfd registered with VFIO_DEVICE_SET_IRQS on
 *    VFIO_PCI_REQ_IRQ_INDEX, which the kernel signals (every 10 s) while a removal waits
 *    for the device's fds to close.
 * Either way the device is released at once: what its HWPT holds is harvested into the
 * log, it is detached, its fd is closed and dropped from the fd store (a stored VFIO fd
 * would block the removal for ever), Session1.DeviceLost is sent, and the session goes on
 * with its log and its other devices.
 */
#ifndef IOD_UEVENT_H
#define IOD_UEVENT_H

#include <stdbool.h>

#include "iod-util.h"

struct iod_manager;
struct iod_device;
struct iod_uevent;

int iod_uevent_start(struct iod_manager *m, struct iod_uevent **ret);
struct iod_uevent *iod_uevent_free(struct iod_uevent *u);
IOD_DEFINE_FREEP(struct iod_uevent, iod_uevent_free)

/* Register a release request eventfd for every device that has none yet. */
void iod_uevent_watch_devices(struct iod_manager *m);

/* Release device d of its session now (see above); why is logged. */
void iod_device_lost(struct iod_device *d, const char *why);

/* Does a removed kernel device (DEVPATH, SUBSYSTEM and DEVNAME of a uevent; the last two
 * may be NULL) name device d, or a parent of it? */
bool iod_uevent_devpath_matches(const char *devpath, const char *subsystem, const char *devname,
				const struct iod_device *d);

#endif
