/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libiodirty-client: what a client of iodirtyd (org.iodirty.Tracker1) needs besides sd-bus.
 *  - the names of the service (iod-names.h): bus name, object paths, interfaces, errors;
 *  - connecting to the bus the daemon serves on, with fd passing negotiated;
 *  - Session1.MapBatch and UnmapBatch calls built from an array of events;
 *  - the one reader of the dirty log memfd a Harvest hands out (iod-dirty-log.h):
 *    iod_log_open_fd_ro() checks the whole layout before anything is read, maps it
 *    read-only, and iod_log_next_dirty() walks a round's dirty pages reading only the pages
 *    of the memfd that hold data.
 * Installed as libiodirty-client.so.0 (pkg-config libiodirty-client); iodirtyctl,
 * iodirty-migrate and the tests of this tree use it. Not linked into iodirtyd.
 *
 *	struct iod_dirty_log *log = NULL;
 *	uint64_t start, end;
 *
 *	iod_log_open_fd_ro(fd_from_harvest, &log);
 *	for (size_t i = 0; i < iod_log_region_count(log); i++) {
 *		const struct iod_log_region *g = iod_log_region(log, i);
 *		uint64_t nbits = g->length >> iod_log_page_shift(log);
 *
 *		for (uint64_t b = 0; iod_log_next_dirty(log, i, false, b, nbits, &start, &end) == 0;
 *		     b = end)
 *			copy(g->gpa + (start << iod_log_page_shift(log)),
 *			     (end - start) << iod_log_page_shift(log));
 *	}
 *	iod_log_free(log);
 */
#ifndef IODIRTY_CLIENT_H
#define IODIRTY_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <systemd/sd-bus.h>

#include "iod-dirty-log.h"
#include "iod-iova-map.h"
#include "iod-names.h"
#include "iod-util.h"

/*
 * Connect as a bus client to the bus at address (a D-Bus address string), or with address
 * NULL to the user bus if user is true, else to the system bus. Unix fds are negotiated
 * (the dirty log and guest memory travel as fds). Returns 0 or -errno; *ret is written only
 * on success.
 */
int iod_bus_client_open(const char *address, bool user, sd_bus **ret);

/*
 * A Session1.MapBatch call (map: a(ttt) of iova, gpa, length) or UnmapBatch call (a(tt) of
 * iova, length; gpa unused) to the session at path with the n entries of v, ready for
 * sd_bus_call. Returns 0 or -errno; *ret is written only on success.
 */
int iod_bus_new_batch(sd_bus *bus, const char *path, bool map, const struct iod_mapping *v,
		      size_t n, sd_bus_message **ret);

#endif
