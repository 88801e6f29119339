/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <systemd/sd-event.h>

#include "bus-signals.h"
#include "harvest-worker.h"
#include "logging.h"
#include "manager.h"
#include "session.h"
#include "persist.h"
#include "uevent.h"

#define UEVENT_GROUP_KERNEL 1
#define UEVENT_RCVBUF (1024 * 1024)

struct iod_uevent {
	struct iod_manager *manager;
	struct nl_sock *sock;
	sd_event_source *source;
};

static bool has_component(const char *path, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = strstr(path, name); p; p = strstr(p + 1, name))
		if (p > path && p[-1] == '/' && (p[n] == '/' || p[n] == '\0'))
			return true;
	return false;
}

static const char *basename_of(const char *path)
{
	const char *b = strrchr(path, '/');

	return b ? b + 1 : path;
}

bool iod_uevent_devpath_matches(const char *devpath, const char *subsystem, const char *devname,
				const struct iod_device *d)
{
	/* The PCI function itself, or anything above it, went away. */
	if (d->name && iod_pci_address_valid(d->name) && has_component(devpath, d->name))
		return true;
	if (!d->cdev)
		return false;
	/* Its VFIO cdev went away (the driver let go of the device). DEVNAME is relative to
	 * /dev ("vfio/devices/vfio0"). */
	if (devname && strncmp(d->cdev, "/dev/", 5) == 0 && strcmp(d->cdev + 5, devname) == 0)
		return true;
	if (subsystem && strcmp(subsystem, "vfio-dev") == 0 &&
	    strcmp(basename_of(devpath), basename_of(d->cdev)) == 0)
		return true;
	return false;
}

void iod_device_lost(struct iod_device *d, const char *why)
{
	struct iod_session *s = d->session;
	struct iod_reason reason = {};
	int r;

	if (d->lost)
		return;
	d->lost = true;
	log_warning("Session %s: device %s (%s) is going away (%s): harvesting and releasing it.",
		    s->name, d->name, d->path, why);
	/* No more requests from it while it goes. */
	d->req_source = sd_event_source_disable_unref(d->req_source);

	/* While the object still exists: the signal names its path. */
	(void)iod_bus_emit_device_lost(s->ctx, s->path, d->path, why);
	(void)iod_bus_emit_device_changed(s->ctx, d->path, "Lost", NULL);

	/* Not under a harvest of the session: that one ends its round first (its caller is
	 * answered; the calls held for it stay held). */
	iod_harvest_settle(s);
	/* Harvests the HWPT if this was its last device, detaches, closes the fd. */
	r = iod_session_detach_device(s, d, &reason);
	if (r < 0) {
		log_error_errno(r, "Session %s: failed to release a lost device: %s", s->name,
				reason.text);
		return;
	}
	/* The state without it, and its fd out of the store (persist.c). */
	(void)iod_persist_save(iod_manager_of(s->ctx));
	(void)iod_bus_emit_session_changed(s->ctx, s->path, "Devices", "Hwpts", "TrackingMode",
					   "Precise", NULL);
}

static struct iod_device *find_removed(struct iod_manager *m, const char *devpath,
				       const char *subsystem, const char *devname)
{
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		struct iod_session *s = m->ctx.sessions[i];

		for (size_t k = 0; k < s->n_devices; k++)
			if (!s->devices[k]->lost &&
			    iod_uevent_devpath_matches(devpath, subsystem, devname, s->devices[k]))
				return s->devices[k];
	}
	return NULL;
}

static void handle_remove(struct iod_manager *m, const char *devpath, const char *subsystem,
			  const char *devname)
{
	struct iod_device *d;

	/* Releasing a device changes the lists: look again from the start each time. */
	while ((d = find_removed(m, devpath, subsystem, devname)))
		iod_device_lost(d, "the kernel removed the device");
}

static int on_uevent(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct iod_uevent *u = userdata;

	for (;;) {
		struct sockaddr_nl nla = {};
		unsigned char *buf = NULL;
		const char *action = NULL, *devpath = NULL, *subsystem = NULL, *devname = NULL;
		int n;

		n = nl_recv(u->sock, &nla, &buf, NULL);
		if (n <= 0) {
			free(buf);
			/* -NLE_AGAIN: drained. Anything else (an overrun) is survivable: VFIO's
			 * release request still comes. */
			if (n < 0 && n != -NLE_AGAIN)
				log_debug("Reading kernel uevents failed, ignoring: %s",
					  nl_geterror(n));
			return 0;
		}
		/* Only the kernel speaks on this group. */
		if (nla.nl_pid != 0) {
			free(buf);
			continue;
		}
		/* "action@devpath\0KEY=VALUE\0..." */
		for (int off = 0; off < n;) {
			const char *kv = (const char *)buf + off;
			size_t len = strnlen(kv, (size_t)(n - off));

			if (len == (size_t)(n - off))
				break;
			if (strncmp(kv, "ACTION=", 7) == 0)
				action = kv + 7;
			else if (strncmp(kv, "DEVPATH=", 8) == 0)
				devpath = kv + 8;
			else if (strncmp(kv, "SUBSYSTEM=", 10) == 0)
				subsystem = kv + 10;
			else if (strncmp(kv, "DEVNAME=", 8) == 0)
				devname = kv + 8;
			off += (int)len + 1;
		}
		if (action && devpath && strcmp(action, "remove") == 0)
			handle_remove(u->manager, devpath, subsystem, devname);
		free(buf);
	}
}

int iod_uevent_start(struct iod_manager *m, struct iod_uevent **ret)
{
	struct iod_uevent *u;
	int r;

	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->manager = m;
	u->sock = nl_socket_alloc();
	if (!u->sock) {
		free(u);
		return -ENOMEM;
	}
	nl_socket_disable_seq_check(u->sock);
	r = nl_connect(u->sock, NETLINK_KOBJECT_UEVENT);
	if (r >= 0)
		r = nl_socket_add_membership(u->sock, UEVENT_GROUP_KERNEL);
	if (r < 0) {
		iod_uevent_free(u);
		return -EPROTONOSUPPORT;
	}
	/* A burst of uevents (a whole bus going away) must not overrun the socket. */
	(void)nl_socket_set_buffer_size(u->sock, UEVENT_RCVBUF, 0);
	if (nl_socket_set_nonblocking(u->sock) < 0) {
		iod_uevent_free(u);
		return -EIO;
	}
	r = sd_event_add_io(m->event, &u->source, nl_socket_get_fd(u->sock), EPOLLIN, on_uevent, u);
	if (r < 0) {
		iod_uevent_free(u);
		return r;
	}
	*ret = u;
	return 0;
}

struct iod_uevent *iod_uevent_free(struct iod_uevent *u)
{
	if (!u)
		return NULL;
	sd_event_source_disable_unref(u->source);
	nl_socket_free(u->sock);
	free(u);
	return NULL;
}

/* --- VFIO's release request ------------------------------------------------------------ */

static int on_release_request(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct iod_device *d = userdata;
	eventfd_t v;

	(void)eventfd_read(fd, &v);
	iod_device_lost(d, "VFIO asked for the device back (removal or driver unbind)");
	return 0;
}

static int watch_device(struct iod_manager *m, struct iod_device *d)
{
	_cleanup_close_ int efd = -EBADF;
	int r;

	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		return -errno;
	r = iod_vfio_set_req_eventfd(d->fd, efd);
	if (r < 0)
		return r;
	r = sd_event_add_io(m->event, &d->req_source, efd, EPOLLIN, on_release_request, d);
	if (r < 0) {
		(void)iod_vfio_set_req_eventfd(d->fd, -EBADF);
		return r;
	}
	(void)sd_event_source_set_io_fd_own(d->req_source, true);
	(void)sd_event_source_set_description(d->req_source, "vfio-release-request");
	TAKE_FD(efd);
	return 0;
}

void iod_uevent_watch_devices(struct iod_manager *m)
{
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		struct iod_session *s = m->ctx.sessions[i];

		for (size_t k = 0; k < s->n_devices; k++) {
			struct iod_device *d = s->devices[k];
			int r;

			if (d->req_source || d->lost || d->fd < 0 || d->req_unsupported)
				continue;
			r = watch_device(m, d);
			if (r == -EOPNOTSUPP) {
				d->req_unsupported = true;
				log_debug("Session %s: %s has no release request channel.", s->name,
					  d->name);
			} else if (r < 0) {
				d->req_unsupported = true;
				log_warning_errno(
					r,
					"Session %s: cannot watch %s for release requests, its removal will wait for the uevent: %m",
					s->name, d->name);
			}
		}
	}
}
