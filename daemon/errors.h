/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The named D-Bus errors of org.iodirty.Tracker1 (documented in org.iodirty.Tracker1(5)).
 * Bad arguments use org.freedesktop.DBus.Error.InvalidArgs and callers that may not touch a
 * session org.freedesktop.DBus.Error.AccessDenied; everything the service itself has to say
 * is one of these.
 */
#ifndef IOD_ERRORS_H
#define IOD_ERRORS_H

#include <systemd/sd-bus.h>

#include "iod-names.h"

/* The names themselves: lib/iod-names.h. */

/*
 * Why a request was refused or failed: the error name and a sentence a person can act on.
 * Model code (session.c, device.c) fills it; the D-Bus handler turns it into the reply.
 */
struct iod_reason {
	const char *name; /* an error name above, or a standard D-Bus one */
	char text[256];
	/* The entry of a batch the error is about, plus one; 0 if it is about no one entry. */
	size_t entry_plus_one;
};

/* Fill why (may be NULL) and return err (a negative errno). */
int iod_reasonf(struct iod_reason *why, int err, const char *name, const char *format, ...)
	__attribute__((format(printf, 4, 5)));
/* Same for an error from the kernel or libiodirty while doing what (a printf format). */
int iod_reason_kernel(struct iod_reason *why, int err, const char *format, ...)
	__attribute__((format(printf, 3, 4)));
/* Set *error from why (or from err alone when why is empty); returns err. */
int iod_bus_error_from_reason(sd_bus_error *error, int err, const struct iod_reason *why);

/* Register the errno mapping of the names above (for sd_bus_error_get_errno() on clients). */
int iod_errors_register(void);

/*
 * Set *error from a negative errno that came back from the kernel or libiodirty while doing
 * what, choosing the named error that fits (-ENODEV from /dev/iommu is NoIommufd,
 * -EOPNOTSUPP is NotDirtyCapable, -ENOSPC/-E2BIG are LimitExceeded, -EBUSY is Busy, ...).
 * Returns a negative errno for the handler to return.
 */
int iod_bus_error_kernel(sd_bus_error *error, int err, const char *what);

#endif
