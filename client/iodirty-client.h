/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libiodirty-client: what a client of iodirtyd (org.iodirty.Tracker1) needs besides sd-bus.
 *  - the names of the service (iod-names.h): bus name, object paths, interfaces, errors;
 *  - connecting to the bus the daemon serves on, with fd passing negotiated;
 *  - Session1.MapBatch and UnmapBatch calls built from an array of events;
 *  - the event channel (Session1.OpenEventChannel, wire format iod-event-channel.h): open
 *    it, send a batch (vIOMMU events, or the writes the caller reports), read a completion;
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
#include "iod-event-channel.h"
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

/*
 * The event channel of the session at path (Session1.OpenEventChannel; the caller must own
 * the session). *ret_fd is the client's end, blocking and close-on-exec; *ret_last_seq (may
 * be NULL) the sequence number of the last batch the session applied: send the batches
 * after it again, and number new ones above it. Returns 0 or -errno.
 *
 *	iod_channel_open(bus, path, &fd, &seq);
 *	iod_channel_send(fd, IOD_EVENT_UNMAP, ++seq, ranges, n);
 *	iod_channel_recv(fd, &c);   // c.seq == seq; c.error 0: harvested, unmapped, durable
 */
int iod_channel_open(sd_bus *bus, const char *path, int *ret_fd, uint64_t *ret_last_seq);

/*
 * Send one batch: type IOD_EVENT_MAP (v[i] = iova, gpa, length), IOD_EVENT_UNMAP (iova,
 * length; gpa is sent as 0) or IOD_EVENT_MARK (gpa, length; iova is sent as 0),
 * 1..IOD_EVENT_MAX_ENTRIES entries, 0 < seq < UINT64_MAX. Blocks while the socket is full.
 * Returns 0 or -errno (-EINVAL for arguments the channel would refuse).
 * Read the completions as you go: the daemon stops reading a channel whose completions are
 * not read, and a client that only sends then blocks here for good (or use a non-blocking
 * fd and poll for both directions).
 */
int iod_channel_send(int fd, enum iod_event_type type, uint64_t seq, const struct iod_mapping *v,
		     size_t n);

/*
 * Report writes to guest memory that no IOMMU sees (an emulated device's, the VMM's own,
 * pinned pages), as Session1.MarkDirty does on the bus: one mark batch of the n GPA ranges
 * (start, length; 1..IOD_EVENT_MAX_ENTRIES, each aligned to the session's log page and
 * inside one region), numbered seq like every batch (0 < seq < UINT64_MAX). Blocks while the
 * socket is full. Returns 0 or -errno (-EINVAL for arguments the channel would refuse).
 *
 * The completion (iod_channel_recv()) says whether the daemon took them: error 0, the pages
 * are in the log and the next Harvest has them; an error names the bad range (entry) and
 * nothing was marked. A write is in a round only if its completion was read before that
 * round's Harvest was called (proto/event-channel.md, "Reported writes"). A daemon older
 * than this function answers InvalidArgs ("batch type 3"): use MarkDirty there.
 * Since libiodirty-client 0.3 (symbol version LIBIODIRTY_CLIENT_0.3).
 *
 *	struct iod_range w = {.start = gpa, .length = 4096};
 *
 *	iod_channel_mark(fd, ++seq, &w, 1);
 *	iod_channel_recv(fd, &c);   // c.error 0: the next Harvest has the page
 */
int iod_channel_mark(int fd, uint64_t seq, const struct iod_range *ranges, size_t n);

/* A completion, as read and checked by iod_channel_recv(). */
struct iod_channel_completion {
	uint64_t seq;
	uint32_t flags; /* IOD_EVENT_COMPLETION_* */
	int error; /* 0 or a negative errno */
	uint32_t entry; /* the entry error is about, or IOD_EVENT_NO_ENTRY */
	char name[IOD_EVENT_MAX_TEXT + 1]; /* the D-Bus error name ("" when error is 0) */
	char message[IOD_EVENT_MAX_TEXT + 1];
};

/*
 * Read the next completion (blocking, unless the fd is non-blocking: then -EAGAIN). Returns
 * 0, -ECONNRESET when the daemon closed the channel, -EBADMSG for a packet that is not a
 * completion of this version, or another -errno.
 */
int iod_channel_recv(int fd, struct iod_channel_completion *ret);

#endif
