/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The event channel of a session (Session1.OpenEventChannel), wire format version 1: the
 * direct path for a VMM's vIOMMU map and unmap events, beside the D-Bus control plane.
 * proto/event-channel.md is the contract; this header is its C form, shared by iodirtyd and
 * libiodirty-client.
 *
 * The channel is one end of a SOCK_SEQPACKET socket pair: every send is one packet, read
 * whole. All fields are in the host's byte order (the channel never leaves the machine).
 *
 * Client to daemon: one batch per packet, a header and count entries right after it.
 *
 *	struct iod_event_batch  (24 bytes)
 *	struct iod_event_entry  [count]  (24 bytes each)
 *
 * A batch is a MapBatch (type IOD_EVENT_MAP: iova, gpa, length), an UnmapBatch
 * (IOD_EVENT_UNMAP: iova, length; gpa must be 0) or a MarkDirty (IOD_EVENT_MARK: gpa,
 * length; iova must be 0), checked and applied exactly as those D-Bus methods do: every entry
 * is checked before anything changes, a bad entry is named in the completion and the batch
 * changes nothing, an unmap's ranges are harvested into the log before they leave the IOAS,
 * a mark's ranges are in the log's accumulating plane (the next Harvest) on completion.
 * A batch has one type; batches apply in the order sent, the entries of one in their order.
 * The mark type came after the first release of version 1: a daemon without it refuses a
 * mark batch as an unknown type (InvalidArgs, "batch type 3"), and changes nothing.
 *
 * Daemon to client: one completion per batch, in the order the batches were sent.
 *
 *	struct iod_event_completion  (32 bytes)
 *	error name  [name_length bytes, no NUL]  a D-Bus error name, as the method would reply
 *	message     [message_length bytes, no NUL]
 *
 * A completion with error 0 means the batch is applied and durable: the events are in the
 * daemon's state journal and an unmap's pre-unmap harvest is in the dirty log, so a daemon
 * that restarts after it keeps them; a mark batch's pages are in the dirty log (its seq is
 * saved with the next journaled batch: resent after a restart, it is marked again).
 *
 * Sequence numbers make a resend safe. Every batch carries seq, which must be greater than
 * the seq of every batch the session applied before (on any channel). The daemon keeps the
 * highest applied seq with the session's state, across restarts; OpenEventChannel returns
 * it. A batch whose seq is not greater is not applied again: it completes with error 0 and
 * IOD_EVENT_COMPLETION_REPLAYED. A client that lost its channel (the daemon restarted)
 * opens a new one and sends again every batch it has no completion for. A failed batch is
 * corrected and sent under a new number (its old one may be a replay by then).
 *
 * A read of nothing (the client closed or shut down its side, or sent an empty packet)
 * ends the channel.
 */
#ifndef IOD_EVENT_CHANNEL_H
#define IOD_EVENT_CHANNEL_H

#include <stdint.h>

#define IOD_EVENT_CHANNEL_VERSION 1
/* Entries of one batch, at most; larger packets are refused. */
#define IOD_EVENT_MAX_ENTRIES 1024
/* Bytes of a completion's name and message together, at most. */
#define IOD_EVENT_MAX_TEXT 768

enum iod_event_type {
	IOD_EVENT_MAP = 1,
	IOD_EVENT_UNMAP = 2,
	IOD_EVENT_MARK = 3, /* MarkDirty: gpa, length; iova must be 0 */
};

struct iod_event_batch {
	uint16_t version; /* IOD_EVENT_CHANNEL_VERSION */
	uint16_t type; /* enum iod_event_type */
	uint32_t count; /* entries that follow: 1..IOD_EVENT_MAX_ENTRIES */
	uint64_t seq; /* > every seq the session applied; 1 to UINT64_MAX - 1 */
	uint32_t flags; /* none defined: 0 */
	uint32_t reserved; /* 0 */
};

struct iod_event_entry {
	uint64_t iova; /* 0 in a mark */
	uint64_t gpa; /* IOD_EVENT_MAP and IOD_EVENT_MARK; 0 in an unmap */
	uint64_t length;
};

/* The batch's seq was applied before: nothing was done again. */
#define IOD_EVENT_COMPLETION_REPLAYED 0x1u

struct iod_event_completion {
	uint16_t version; /* IOD_EVENT_CHANNEL_VERSION */
	uint16_t reserved; /* 0 */
	uint32_t flags; /* IOD_EVENT_COMPLETION_* */
	uint64_t seq; /* of the batch; 0 if the packet was too short to carry one */
	int32_t error; /* 0 or a negative errno */
	uint32_t entry; /* the entry the error is about, or IOD_EVENT_NO_ENTRY */
	uint16_t name_length; /* bytes of the error name after this header (0 if error is 0) */
	uint16_t message_length; /* bytes of the message after the name */
	uint32_t reserved2; /* 0 */
};

#define IOD_EVENT_NO_ENTRY UINT32_MAX

_Static_assert(sizeof(struct iod_event_batch) == 24, "event batch header: 24 bytes");
_Static_assert(sizeof(struct iod_event_entry) == 24, "event entry: 24 bytes");
_Static_assert(sizeof(struct iod_event_completion) == 32, "event completion: 32 bytes");

/* The largest packet either side sends. */
#define IOD_EVENT_MAX_BATCH_BYTES \
	(sizeof(struct iod_event_batch) + IOD_EVENT_MAX_ENTRIES * sizeof(struct iod_event_entry))
#define IOD_EVENT_MAX_COMPLETION_BYTES (sizeof(struct iod_event_completion) + IOD_EVENT_MAX_TEXT)

#endif
