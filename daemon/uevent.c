/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <systemd/sd-event.h>

#include "logging.h"
#include "manager.h"
#include "session.h"
#include "uevent.h"

#define UEVENT_GROUP_KERNEL 1

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

bool iod_uevent_devpath_matches(const char *devpath, const char *subsystem,
				const struct iod_device *d)
{
	const char *base;

	/* The PCI function itself, or anything above it, went away. */
	if (d->name && iod_pci_address_valid(d->name) && has_component(devpath, d->name))
		return true;
	/* Its VFIO cdev went away (the driver was unbound). */
	if (d->cdev && subsystem && strcmp(subsystem, "vfio-dev") == 0) {
		base = strrchr(d->cdev, '/');
		base = base ? base + 1 : d->cdev;
		size_t lb = strlen(base), ld = strlen(devpath);

		if (ld > lb && devpath[ld - lb - 1] == '/' && strcmp(devpath + ld - lb, base) == 0)
			return true;
	}
	return false;
}

static void handle_remove(struct iod_manager *m, const char *devpath, const char *subsystem)
{
	for (size_t i = 0; i < m->n_sessions; i++) {
		struct iod_session *s = m->sessions[i];

		for (size_t k = 0; k < s->n_devices; k++) {
			struct iod_device *d = s->devices[k];

			if (d->lost || !iod_uevent_devpath_matches(devpath, subsystem, d))
				continue;
			d->lost = true;
			log_warning("Session %s: device %s was removed (%s).", s->name, d->name,
				    devpath);
			(void)iod_session_send_device_lost(s, d);
			(void)sd_bus_emit_properties_changed(m->bus, d->path, IOD_DEVICE_INTERFACE,
							     "Lost", NULL);
		}
	}
}

static int on_uevent(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct iod_uevent *u = userdata;

	for (;;) {
		struct sockaddr_nl nla = {};
		unsigned char *buf = NULL;
		const char *action = NULL, *devpath = NULL, *subsystem = NULL;
		int n;

		n = nl_recv(u->sock, &nla, &buf, NULL);
		if (n <= 0) {
			free(buf);
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
			off += (int)len + 1;
		}
		if (action && devpath && strcmp(action, "remove") == 0)
			handle_remove(u->manager, devpath, subsystem);
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
	nl_join_groups(u->sock, UEVENT_GROUP_KERNEL);
	r = nl_connect(u->sock, NETLINK_KOBJECT_UEVENT);
	if (r < 0) {
		iod_uevent_free(u);
		return -EPROTONOSUPPORT;
	}
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
