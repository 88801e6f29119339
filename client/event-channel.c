/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The client side of a session's event channel (iodirty-client.h, iod-event-channel.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "iodirty-client.h"

int iod_channel_open(sd_bus *bus, const char *path, int *ret_fd, uint64_t *ret_last_seq)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	uint64_t last = 0;
	int fd = -1, r;

	r = sd_bus_call_method(bus, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE, "OpenEventChannel",
			       &error, &reply, "a{sv}", 0);
	if (r >= 0)
		r = sd_bus_message_read(reply, "ht", &fd, &last);
	if (r >= 0) {
		/* The message owns its fd: take a copy of our own. */
		fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			r = -errno;
	}
	sd_bus_error_free(&error);
	sd_bus_message_unref(reply);
	if (r < 0)
		return r;
	*ret_fd = fd;
	if (ret_last_seq)
		*ret_last_seq = last;
	return 0;
}

/* One batch of n entries, e[] filled by the caller. */
static int send_batch(int fd, enum iod_event_type type, uint64_t seq,
		      const struct iod_event_entry *e, size_t n)
{
	struct iod_event_batch b = {
		.version = IOD_EVENT_CHANNEL_VERSION,
		.type = (uint16_t)type,
		.count = (uint32_t)n,
		.seq = seq,
	};
	struct iovec iov[2] = {
		{.iov_base = &b, .iov_len = sizeof(b)},
		{.iov_base = (void *)e, .iov_len = n * sizeof(e[0])},
	};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
	ssize_t k;

	do
		k = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return -errno;
	return k == (ssize_t)(sizeof(b) + n * sizeof(e[0])) ? 0 : -EMSGSIZE;
}

int iod_channel_send(int fd, enum iod_event_type type, uint64_t seq, const struct iod_mapping *v,
		     size_t n)
{
	struct iod_event_entry e[IOD_EVENT_MAX_ENTRIES];

	if (n == 0 || n > IOD_EVENT_MAX_ENTRIES || seq == 0 || seq == UINT64_MAX ||
	    (type != IOD_EVENT_MAP && type != IOD_EVENT_UNMAP && type != IOD_EVENT_MARK))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		e[i] = (struct iod_event_entry){
			.iova = type == IOD_EVENT_MARK ? 0 : v[i].iova,
			.gpa = type == IOD_EVENT_UNMAP ? 0 : v[i].gpa,
			.length = v[i].length,
		};
	return send_batch(fd, type, seq, e, n);
}

int iod_channel_mark(int fd, uint64_t seq, const struct iod_range *ranges, size_t n)
{
	struct iod_event_entry e[IOD_EVENT_MAX_ENTRIES];

	if (n == 0 || n > IOD_EVENT_MAX_ENTRIES || seq == 0 || seq == UINT64_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		e[i] = (struct iod_event_entry){.gpa = ranges[i].start, .length = ranges[i].length};
	return send_batch(fd, IOD_EVENT_MARK, seq, e, n);
}

int iod_channel_recv(int fd, struct iod_channel_completion *ret)
{
	uint8_t buf[IOD_EVENT_MAX_COMPLETION_BYTES + 1];
	struct iod_event_completion c;
	ssize_t k;

	do
		k = recv(fd, buf, sizeof(buf), MSG_TRUNC);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return -errno;
	if (k == 0)
		return -ECONNRESET; /* the daemon closed the channel */
	if ((size_t)k < sizeof(c) || (size_t)k > IOD_EVENT_MAX_COMPLETION_BYTES)
		return -EBADMSG;
	memcpy(&c, buf, sizeof(c));
	if (c.version != IOD_EVENT_CHANNEL_VERSION || c.reserved != 0 || c.reserved2 != 0 ||
	    (c.flags & ~IOD_EVENT_COMPLETION_REPLAYED) ||
	    sizeof(c) + c.name_length + c.message_length != (size_t)k ||
	    c.name_length >= sizeof(ret->name) || c.message_length >= sizeof(ret->message) ||
	    (c.error == 0) != (c.name_length == 0) || c.error > 0 ||
	    (c.error != 0 && (c.flags & IOD_EVENT_COMPLETION_REPLAYED)) ||
	    (c.error == 0 && c.entry != IOD_EVENT_NO_ENTRY))
		return -EBADMSG;
	*ret = (struct iod_channel_completion){
		.seq = c.seq,
		.flags = c.flags,
		.error = c.error,
		.entry = c.entry,
	};
	memcpy(ret->name, buf + sizeof(c), c.name_length);
	ret->name[c.name_length] = '\0';
	memcpy(ret->message, buf + sizeof(c) + c.name_length, c.message_length);
	ret->message[c.message_length] = '\0';
	return 0;
}
