/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The names of org.iodirty.Tracker1 (proto/org.iodirty.Tracker1.xml): the bus name, the
 * object paths, the interfaces and the named errors. Plain strings, shared by iodirtyd, its
 * clients and the tests, so that each is written once.
 */
#ifndef IOD_NAMES_H
#define IOD_NAMES_H

#define IOD_BUS_NAME "org.iodirty.Tracker1"
#define IOD_MANAGER_PATH "/org/iodirty/Tracker1"
#define IOD_SESSION_PREFIX "/org/iodirty/Tracker1/session"
#define IOD_MANAGER_INTERFACE "org.iodirty.Manager1"
#define IOD_SESSION_INTERFACE "org.iodirty.Session1"
#define IOD_DEVICE_INTERFACE "org.iodirty.Device1"

#define IOD_ERROR_PREFIX "org.iodirty.Error."
#define IOD_ERROR_INVALID_RANGE IOD_ERROR_PREFIX "InvalidRange"
#define IOD_ERROR_NOT_DIRTY_CAPABLE IOD_ERROR_PREFIX "NotDirtyCapable"
#define IOD_ERROR_NO_IOMMUFD IOD_ERROR_PREFIX "NoIommufd"
#define IOD_ERROR_NO_SUCH_SESSION IOD_ERROR_PREFIX "NoSuchSession"
#define IOD_ERROR_NO_SUCH_DEVICE IOD_ERROR_PREFIX "NoSuchDevice"
#define IOD_ERROR_SESSION_EXISTS IOD_ERROR_PREFIX "SessionExists"
#define IOD_ERROR_LIMIT_EXCEEDED IOD_ERROR_PREFIX "LimitExceeded"
#define IOD_ERROR_BUSY IOD_ERROR_PREFIX "Busy"
#define IOD_ERROR_SESSION_FAILED IOD_ERROR_PREFIX "SessionFailed"
#define IOD_ERROR_WRONG_MODE IOD_ERROR_PREFIX "WrongMode"
#define IOD_ERROR_NOT_TRACKING IOD_ERROR_PREFIX "NotTracking"
#define IOD_ERROR_NO_SUCH_ROUND IOD_ERROR_PREFIX "NoSuchRound"
#define IOD_ERROR_NOT_MAPPED IOD_ERROR_PREFIX "NotMapped"
#define IOD_ERROR_KERNEL IOD_ERROR_PREFIX "Kernel"

#endif
