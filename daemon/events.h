/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A session's vIOMMU events, from wherever they come (Map, Unmap, MapBatch and UnmapBatch on
 * the bus; a batch on the event channel, event-channel.h): the session core applies them
 * (iod_session_map_batch(), which checks every entry first), then they are made durable,
 * all before the caller answers.
 */
#ifndef IOD_EVENTS_H
#define IOD_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "iod-iova-map.h"

struct iod_session;

/* What changed, for the caller's PropertiesChanged. */
struct iod_events_changed {
	bool mappings; /* Mappings, MappedBytes */
	bool ioas; /* IoasId (an owner session's first Map made the IOAS) */
};

/*
 * Apply n map (map) or unmap events; array names the entries in errors ("maps[3]: ...").
 * seq other than 0 is the event channel's sequence number of the batch: on success it
 * becomes the session's event_seq, in the same journal record as the events. Durable on
 * return: the events as one journal record; a session whose state changed in other ways (a
 * refused unmap after earlier ranges went, a failed pre-unmap harvest, a new IOAS) as a
 * whole snapshot. Returns 0 or a negative errno with why filled.
 */
int iod_events_apply(struct iod_session *s, bool map, const char *array,
		     const struct iod_mapping *events, size_t n, uint64_t seq,
		     struct iod_reason *why, struct iod_events_changed *ret_changed);

#endif
