/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A session's event channel (Session1.OpenEventChannel): the daemon's end of a
 * SOCK_SEQPACKET pair on which the session's owner sends batches of vIOMMU events or of the
 * writes it reports (MarkDirty) and gets one completion per batch (wire format:
 * iod-event-channel.h, proto/event-channel.md).
 *
 * A batch is checked like MapBatch/UnmapBatch/MarkDirty and applied through the same path
 * (iod_events_apply(), iod_session_mark_batch()); its completion goes out once the batch is
 * durable. The channel
 * answers in order and holds at most one completion the socket had no room for: until the
 * client reads it, the channel reads nothing more (the client's backlog stays in its own
 * socket buffer, which the kernel caps). PropertiesChanged for the mappings is sent once per
 * 50 ms at most, not per batch. A dispatch handles at most a few batches, so one busy channel
 * does not hold up the rest of the event loop.
 *
 * A session has at most one channel: opening another closes the first. The channel closes
 * when the client closes its end, when the session is destroyed or changes owner, and when
 * the daemon stops (the client then opens a new one and resends what has no completion).
 */
#ifndef IOD_EVENT_CHANNEL_DAEMON_H
#define IOD_EVENT_CHANNEL_DAEMON_H

#include <stdbool.h>

#include <systemd/sd-event.h>

struct iod_session;

/*
 * Open a channel for s on event (closing the one it had); *ret_fd is the client's end
 * (close-on-exec, the caller passes it on and closes it). Returns 0 or -errno.
 */
int iod_event_channel_open(struct iod_session *s, sd_event *event, int *ret_fd);
/* Close s's channel, if it has one; a PropertiesChanged it still owed goes out now. */
void iod_event_channel_close(struct iod_session *s);
/* Stop (hold) or resume reading s's channel, if it has one: batches wait in the socket while
 * the session harvests (harvest-worker.h). A channel opened later is read at once. */
void iod_event_channel_hold(struct iod_session *s, bool hold);

#endif
