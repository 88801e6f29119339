/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A session's event channel (event-channel.h; wire format iod-event-channel.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bus-signals.h"
#include "errors.h"
#include "event-channel.h"
#include "events.h"
#include "iod-event-channel.h"
#include "iod-util.h"
#include "logging.h"
#include "session.h"

/* Batches one dispatch handles at most before the event loop serves others. */
#define BATCHES_PER_DISPATCH 16
/* PropertiesChanged of the mappings: once per this many microseconds at most. */
#define SIGNAL_DELAY_USEC 50000

struct iod_event_channel {
	struct iod_session *s;
	int fd;
	sd_event_source *io;
	sd_event_source *signal; /* the coalesced PropertiesChanged, armed while owed */
	struct iod_events_changed owed;
	/* A completion the socket had no room for; nothing more is read until it is sent. */
	uint8_t pending[IOD_EVENT_MAX_COMPLETION_BYTES];
	size_t pending_size;
};

/*
 * One batch at a time in the whole daemon (one thread, and a batch is done before the next
 * is read): one packet buffer (with a byte over the largest packet, to see one that is too
 * long) and one entry array for all channels.
 */
static uint8_t packet[IOD_EVENT_MAX_BATCH_BYTES + 1] __attribute__((aligned(8)));
static struct iod_mapping entries[IOD_EVENT_MAX_ENTRIES];
static struct iod_range ranges[IOD_EVENT_MAX_ENTRIES];

static void channel_free(struct iod_event_channel *ch)
{
	if (!ch)
		return;
	sd_event_source_disable_unref(ch->io);
	sd_event_source_disable_unref(ch->signal);
	if (ch->fd >= 0)
		close(ch->fd);
	free(ch);
}

static void emit_owed(struct iod_event_channel *ch)
{
	struct iod_session *s = ch->s;

	if (ch->owed.mappings || ch->owed.ioas)
		(void)iod_bus_emit_session_changed(s->ctx, s->path, "Mappings", "MappedBytes",
						   ch->owed.ioas ? "IoasId" : NULL, NULL);
	ch->owed = (struct iod_events_changed){};
}

void iod_event_channel_close(struct iod_session *s)
{
	struct iod_event_channel *ch = s->channel;

	if (!ch)
		return;
	emit_owed(ch);
	s->channel = NULL;
	s->close_channel = NULL;
	channel_free(ch);
	log_debug("Session %s: event channel closed.", s->name);
}

void iod_event_channel_hold(struct iod_session *s, bool hold)
{
	struct iod_event_channel *ch = s->channel;
	int r;

	if (!ch)
		return;
	r = sd_event_source_set_enabled(ch->io, hold ? SD_EVENT_OFF : SD_EVENT_ON);
	if (r < 0) {
		/* A channel read under a harvest could change the map under it: close it (the
		 * client opens another and resends what has no completion). */
		log_error_errno(r, "Session %s: failed to %s its event channel, closing it: %m",
				s->name, hold ? "stop reading" : "resume reading");
		iod_event_channel_close(s);
	}
}

static int on_signal_due(sd_event_source *source, uint64_t usec, void *userdata)
{
	emit_owed(userdata);
	return 0;
}

static void owe_signal(struct iod_event_channel *ch, const struct iod_events_changed *changed)
{
	int enabled = SD_EVENT_OFF;

	if (!changed->mappings && !changed->ioas)
		return;
	ch->owed.mappings |= changed->mappings;
	ch->owed.ioas |= changed->ioas;
	if (sd_event_source_get_enabled(ch->signal, &enabled) >= 0 && enabled != SD_EVENT_OFF)
		return; /* armed already: this change goes out with it */
	if (sd_event_source_set_time_relative(ch->signal, SIGNAL_DELAY_USEC) < 0 ||
	    sd_event_source_set_enabled(ch->signal, SD_EVENT_ONESHOT) < 0)
		emit_owed(ch); /* no timer: send it now rather than never */
}

/* Send the completion in ch->pending; 0 when sent, -EAGAIN when the socket is full. */
static int send_pending(struct iod_event_channel *ch)
{
	ssize_t k = send(ch->fd, ch->pending, ch->pending_size, MSG_DONTWAIT | MSG_NOSIGNAL);

	if (k < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	ch->pending_size = 0;
	return 0;
}

/* Build a completion into ch->pending and send it. */
static int complete(struct iod_event_channel *ch, uint64_t seq, uint32_t flags, int error,
		    size_t entry_plus_one, const char *name, const char *message)
{
	size_t nl = error && name ? strlen(name) : 0, ml = error && message ? strlen(message) : 0;
	struct iod_event_completion c;

	nl = MIN(nl, (size_t)IOD_EVENT_MAX_TEXT / 2);
	ml = MIN(ml, (size_t)IOD_EVENT_MAX_TEXT - nl);
	c = (struct iod_event_completion){
		.version = IOD_EVENT_CHANNEL_VERSION,
		.flags = flags,
		.seq = seq,
		.error = error,
		.entry = entry_plus_one ? (uint32_t)(entry_plus_one - 1) : IOD_EVENT_NO_ENTRY,
		.name_length = (uint16_t)nl,
		.message_length = (uint16_t)ml,
	};
	memcpy(ch->pending, &c, sizeof(c));
	if (nl)
		memcpy(ch->pending + sizeof(c), name, nl);
	if (ml)
		memcpy(ch->pending + sizeof(c) + nl, message, ml);
	ch->pending_size = sizeof(c) + nl + ml;
	return send_pending(ch);
}

static int complete_invalid(struct iod_event_channel *ch, uint64_t seq, size_t entry_plus_one,
			    const char *format, ...) __attribute__((format(printf, 4, 5)));
static int complete_invalid(struct iod_event_channel *ch, uint64_t seq, size_t entry_plus_one,
			    const char *format, ...)
{
	char text[256];
	va_list ap;

	va_start(ap, format);
	vsnprintf(text, sizeof(text), format, ap);
	va_end(ap);
	return complete(ch, seq, 0, -EINVAL, entry_plus_one, SD_BUS_ERROR_INVALID_ARGS, text);
}

/* One packet of len bytes (the real length, also when it did not fit) in packet[]. */
static int handle_batch(struct iod_event_channel *ch, size_t len)
{
	struct iod_session *s = ch->s;
	struct iod_event_batch b;
	const struct iod_event_entry *v;
	struct iod_events_changed changed = {};
	struct iod_reason why = {};
	uint64_t seq = 0;
	int r;

	if (len >= offsetof(struct iod_event_batch, seq) + sizeof(b.seq) &&
	    len <= IOD_EVENT_MAX_BATCH_BYTES)
		memcpy(&seq, packet + offsetof(struct iod_event_batch, seq), sizeof(seq));
	/* The version first: a later version may have other sizes. */
	if (len >= sizeof(b.version) && len <= IOD_EVENT_MAX_BATCH_BYTES) {
		memcpy(&b.version, packet, sizeof(b.version));
		if (b.version != IOD_EVENT_CHANNEL_VERSION)
			return complete(ch, seq, 0, -EPROTONOSUPPORT, 0, SD_BUS_ERROR_NOT_SUPPORTED,
					"batch version is not 1, the version this daemon speaks");
	}
	if (len < sizeof(b))
		return complete_invalid(ch, seq, 0,
					"a packet of %zu bytes: a batch has a header of %zu bytes",
					len, sizeof(b));
	if (len > IOD_EVENT_MAX_BATCH_BYTES)
		return complete_invalid(
			ch, 0, 0,
			"a packet of more than %zu bytes (%zu): at most %u entries per batch",
			(size_t)IOD_EVENT_MAX_BATCH_BYTES, len, IOD_EVENT_MAX_ENTRIES);
	memcpy(&b, packet, sizeof(b));
	if (b.type != IOD_EVENT_MAP && b.type != IOD_EVENT_UNMAP && b.type != IOD_EVENT_MARK)
		return complete_invalid(ch, seq, 0, "batch type %u: 1 (map), 2 (unmap) or 3 (mark)",
					b.type);
	if (b.flags != 0 || b.reserved != 0)
		return complete_invalid(ch, seq, 0,
					"batch flags 0x%" PRIx32 ", reserved 0x%" PRIx32
					": none are defined, both must be 0",
					b.flags, b.reserved);
	if (b.count == 0 || b.count > IOD_EVENT_MAX_ENTRIES)
		return complete_invalid(ch, seq, 0, "batch count %" PRIu32 ": 1 to %u entries",
					b.count, IOD_EVENT_MAX_ENTRIES);
	if (len != sizeof(b) + (size_t)b.count * sizeof(*v))
		return complete_invalid(ch, seq, 0,
					"a batch of %" PRIu32 " entries in %zu bytes (want %zu)",
					b.count, len, sizeof(b) + (size_t)b.count * sizeof(*v));
	if (seq == 0 || seq == UINT64_MAX)
		return complete_invalid(
			ch, seq, 0,
			"batch seq 0x%" PRIx64
			": sequence numbers are 1 to 2^64 - 2 (none would follow the last)",
			seq);

	v = (const struct iod_event_entry *)(packet + sizeof(b));
	for (uint32_t i = 0; i < b.count; i++) {
		if (b.type == IOD_EVENT_UNMAP && v[i].gpa != 0)
			return complete_invalid(ch, seq, (size_t)i + 1,
						"entries[%" PRIu32 "]: gpa 0x%" PRIx64
						" in an unmap (must be 0)",
						i, v[i].gpa);
		if (b.type == IOD_EVENT_MARK && v[i].iova != 0)
			return complete_invalid(ch, seq, (size_t)i + 1,
						"entries[%" PRIu32 "]: iova 0x%" PRIx64
						" in a mark (must be 0)",
						i, v[i].iova);
		if (b.type == IOD_EVENT_MARK)
			ranges[i] = (struct iod_range){.start = v[i].gpa, .length = v[i].length};
		else
			entries[i] = (struct iod_mapping){
				.iova = v[i].iova, .gpa = v[i].gpa, .length = v[i].length};
	}

	/* A resend of a batch that was applied (its completion was lost with the daemon). */
	if (seq <= s->event_seq)
		return complete(ch, seq, IOD_EVENT_COMPLETION_REPLAYED, 0, 0, NULL, NULL);

	if (b.type == IOD_EVENT_MARK) {
		/* MarkDirty's checks and marks (every range checked before any is marked); the
		 * marks are in the log's memfd, durable as the log is. The seq is not journaled
		 * on its own: it is saved with the next journaled batch or snapshot, and a mark
		 * batch resent after a restart marks its pages once more, which loses nothing. */
		r = iod_session_mark_batch(s, "entries", ranges, b.count, &why);
		if (r >= 0)
			s->event_seq = seq;
	} else
		r = iod_events_apply(s, b.type == IOD_EVENT_MAP, "entries", entries, b.count, seq,
				     &why, &changed);
	owe_signal(ch, &changed);
	if (r < 0) {
		sd_bus_error e = SD_BUS_ERROR_NULL;

		(void)iod_bus_error_from_reason(&e, r, &why);
		r = complete(ch, seq, 0, r, why.entry_plus_one, e.name, e.message);
		sd_bus_error_free(&e);
		return r;
	}
	return complete(ch, seq, 0, 0, 0, NULL, NULL);
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct iod_event_channel *ch = userdata;
	struct iod_session *s = ch->s;
	int r;

	if (ch->pending_size > 0) {
		r = send_pending(ch);
		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			goto gone;
		r = sd_event_source_set_io_events(ch->io, EPOLLIN | EPOLLRDHUP);
		if (r < 0)
			goto gone; /* left on EPOLLOUT it would spin */
	}
	for (int k = 0; k < BATCHES_PER_DISPATCH; k++) {
		ssize_t len = recv(ch->fd, packet, sizeof(packet), MSG_DONTWAIT | MSG_TRUNC);

		if (len < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				break;
			r = -errno;
			goto gone;
		}
		/* No batch is empty: a read of nothing is the end (the client closed or
		 * shut down its side), whatever epoll said. */
		if (len == 0) {
			r = 0;
			goto gone;
		}
		r = handle_batch(ch, (size_t)len);
		if (r == -EAGAIN) {
			/* The client is not reading its completions: wait until it does. */
			r = sd_event_source_set_io_events(ch->io, EPOLLOUT);
			if (r < 0)
				goto gone; /* left on EPOLLIN it would spin */
			return 0;
		}
		if (r < 0)
			goto gone;
	}
	return 0;
gone:
	if (r < 0)
		log_debug_errno(r, "Session %s: event channel failed: %m", s->name);
	iod_event_channel_close(s); /* frees ch and this source: return at once */
	return 0;
}

int iod_event_channel_open(struct iod_session *s, sd_event *event, int *ret_fd)
{
	struct iod_event_channel *ch;
	int pair[2], r;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) < 0)
		return -errno;
	ch = calloc(1, sizeof(*ch));
	if (!ch) {
		close(pair[0]);
		close(pair[1]);
		return -ENOMEM;
	}
	/* The client's end blocks, as a socket normally does; the daemon's never. */
	r = fcntl(pair[1], F_GETFL);
	if (r < 0 || fcntl(pair[1], F_SETFL, r & ~O_NONBLOCK) < 0) {
		r = -errno;
		free(ch);
		close(pair[0]);
		close(pair[1]);
		return r;
	}
	ch->s = s;
	ch->fd = pair[0];
	r = sd_event_add_io(event, &ch->io, ch->fd, EPOLLIN | EPOLLRDHUP, on_io, ch);
	if (r >= 0)
		r = sd_event_add_time_relative(event, &ch->signal, CLOCK_MONOTONIC,
					       SIGNAL_DELAY_USEC, 1000, on_signal_due, ch);
	if (r >= 0)
		r = sd_event_source_set_enabled(ch->signal, SD_EVENT_OFF);
	if (r < 0) {
		channel_free(ch);
		close(pair[1]);
		return r;
	}
	(void)sd_event_source_set_description(ch->io, "event-channel");
	iod_event_channel_close(s);
	s->channel = ch;
	s->close_channel = iod_event_channel_close;
	*ret_fd = pair[1];
	log_debug("Session %s: event channel opened (event_seq %" PRIu64 ").", s->name,
		  s->event_seq);
	return 0;
}
