/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A session's vIOMMU events: apply, then persist (events.h). */
#include "events.h"
#include "manager.h"
#include "persist.h"
#include "session.h"

int iod_events_apply(struct iod_session *s, bool map, const char *array,
		     const struct iod_mapping *events, size_t n, uint64_t seq,
		     struct iod_reason *why, struct iod_events_changed *ret_changed)
{
	uint64_t bytes = iod_iova_map_bytes(s->map);
	uint32_t ioas = s->ioas_id;
	bool failed = s->failed;
	int r;

	if (map)
		r = iod_session_map_batch(s, array, events, n, why);
	else
		r = iod_session_unmap_batch(s, array, events, n, why);
	if (r >= 0 && seq)
		s->event_seq = seq;
	/* Durable before the answer: the events themselves, one journal record; a refused
	 * unmap (the ranges before it are unmapped), a failed pre-unmap harvest or an owner
	 * session's first Map (it made the iommufd and the IOAS: new fds to store), the whole
	 * state. */
	if (r >= 0 && n > 0 && s->failed == failed && s->ioas_id == ioas)
		(void)iod_persist_events(iod_manager_of(s->ctx), s, map ? IOD_SJ_MAP : IOD_SJ_UNMAP,
					 events, n, seq);
	else if (s->failed != failed || s->ioas_id != ioas || iod_iova_map_bytes(s->map) != bytes)
		(void)iod_persist_save(iod_manager_of(s->ctx));
	*ret_changed = (struct iod_events_changed){
		.mappings = r >= 0 ? n > 0 : iod_iova_map_bytes(s->map) != bytes,
		.ioas = s->ioas_id != ioas,
	};
	return r;
}
