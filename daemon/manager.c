/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "fdstore.h"
#include "logging.h"
#include "manager.h"
#include "session.h"

int iod_manager_new(struct iod_config *config, struct iod_manager **ret)
{
	_cleanup_(iod_manager_freep) struct iod_manager *m = NULL;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	iod_context_init(&m->ctx, config);

	/* Before anything opens an fd: the passed fds start at 3, and an fd number the service
	 * manager named but did not pass must not be taken for one of ours. */
	r = iod_fdstore_new(&m->fdstore);
	if (r < 0)
		return r;
	r = sd_event_default(&m->event);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(m);
	return 0;
}

struct iod_manager *iod_manager_free(struct iod_manager *m)
{
	if (!m)
		return NULL;
	/* Newest first: release every kernel object (unless persist.c left them to the fd
	 * store) before the bus goes. */
	if (m->ctx.n_sessions > 0)
		log_info("Releasing %zu session(s).", m->ctx.n_sessions);
	while (m->ctx.n_sessions > 0)
		iod_session_free(m->ctx.sessions[--m->ctx.n_sessions]);
	iod_fdstore_free(m->fdstore);
	sd_bus_flush_close_unref(m->ctx.bus);
	sd_event_unref(m->event);
	iod_context_clear(&m->ctx);
	free(m);
	return NULL;
}

static int name_acquired(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
	struct iod_manager *m = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(reply);

	if (e) {
		log_error("Failed to acquire the bus name %s: %s", IOD_BUS_NAME, e->message);
		sd_event_exit(m->event, EXIT_FAILURE);
		return 0;
	}
	m->ready = true;
	log_info("Acquired %s, ready.", IOD_BUS_NAME);
	(void)sd_notify(false, "READY=1\nSTATUS=Serving " IOD_BUS_NAME);
	return 0;
}

void iod_manager_check_restored_limits(struct iod_manager *m)
{
	const struct iod_limits *l = &m->ctx.config.limits;

	if (m->ctx.n_sessions > l->sessions)
		log_warning("Restored %zu sessions, over the limit \"sessions\" of %u: none is "
			    "dropped (their dirty logs and devices are live); new sessions are "
			    "refused until there are fewer than %u.",
			    m->ctx.n_sessions, l->sessions, l->sessions);
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		uid_t uid = m->ctx.sessions[i]->uid;
		unsigned n = iod_manager_sessions_of(m, uid);
		bool first = true;

		for (size_t k = 0; k < i && first; k++)
			first = m->ctx.sessions[k]->uid != uid;
		if (first && uid != 0 && n > l->sessions_per_user)
			log_warning("Restored %u sessions of uid %u, over the limit "
				    "\"sessions_per_user\" of %u: none is dropped; the uid may "
				    "create new ones once it has fewer.",
				    n, (unsigned)uid, l->sessions_per_user);
	}
}

int iod_manager_connect(struct iod_manager *m, const char *address, bool user)
{
	sd_bus *bus = NULL;
	int r;

	if (address) {
		r = sd_bus_new(&bus);
		if (r < 0)
			return r;
		r = sd_bus_set_address(bus, address);
		if (r >= 0)
			r = sd_bus_set_bus_client(bus, true);
		if (r >= 0)
			r = sd_bus_start(bus);
	} else if (user) {
		r = sd_bus_open_user(&bus);
	} else {
		r = sd_bus_open_system(&bus);
	}
	if (r < 0) {
		sd_bus_unref(bus);
		return log_error_errno(r, "Failed to connect to the %s bus: %m",
				       address ? address
				       : user  ? "user"
					       : "system");
	}
	m->ctx.bus = bus;

	r = sd_bus_attach_event(bus, m->event, SD_EVENT_PRIORITY_NORMAL);
	if (r < 0)
		return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
	return sd_bus_set_exit_on_disconnect(bus, true);
}

int iod_manager_request_name(struct iod_manager *m)
{
	int r;

	r = sd_bus_request_name_async(m->ctx.bus, NULL, IOD_BUS_NAME, 0, name_acquired, m);
	if (r < 0)
		return log_error_errno(r, "Failed to request the bus name %s: %m", IOD_BUS_NAME);
	return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct iod_manager *m = userdata;

	log_info("Received %s, shutting down.", strsignal((int)si->ssi_signo));
	(void)sd_notify(false, "STOPPING=1");
	sd_event_exit(m->event, 0);
	return 0;
}

int iod_manager_run(struct iod_manager *m)
{
	sigset_t mask;
	int r;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);

	r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m);
	if (r >= 0)
		r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m);
	if (r < 0)
		return log_error_errno(r, "Failed to watch signals: %m");
	r = sd_event_set_watchdog(m->event, true);
	if (r < 0)
		log_warning_errno(r, "Failed to enable the watchdog, ignoring: %m");

	r = sd_event_loop(m->event);
	if (r < 0)
		return log_error_errno(r, "Event loop failed: %m");

	return r;
}

struct iod_session *iod_manager_find_session(struct iod_manager *m, const char *name)
{
	for (size_t i = 0; i < m->ctx.n_sessions; i++)
		if (strcmp(m->ctx.sessions[i]->name, name) == 0)
			return m->ctx.sessions[i];
	return NULL;
}

struct iod_session *iod_manager_find_session_by_path(struct iod_manager *m, const char *path)
{
	for (size_t i = 0; i < m->ctx.n_sessions; i++)
		if (strcmp(m->ctx.sessions[i]->path, path) == 0)
			return m->ctx.sessions[i];
	return NULL;
}

struct iod_device *iod_manager_find_device_by_path(struct iod_manager *m, const char *path)
{
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		struct iod_session *s = m->ctx.sessions[i];
		size_t n = strlen(s->path);

		if (strncmp(path, s->path, n) != 0 || path[n] != '/')
			continue;
		for (size_t k = 0; k < s->n_devices; k++)
			if (strcmp(s->devices[k]->path, path) == 0)
				return s->devices[k];
	}
	return NULL;
}

unsigned iod_manager_sessions_of(struct iod_manager *m, uid_t uid)
{
	unsigned n = 0;

	for (size_t i = 0; i < m->ctx.n_sessions; i++)
		if (m->ctx.sessions[i]->uid == uid)
			n++;
	return n;
}

void iod_manager_destroy_session(struct iod_manager *m, struct iod_session *s)
{
	iod_context_remove_session(&m->ctx, s);
	log_info("Session %s destroyed.", s->name);
	iod_session_free(s);
}

int iod_manager_to_state(struct iod_manager *m, struct iod_state **ret)
{
	static uint64_t generation;
	struct iod_state *st;
	int r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->sessions = calloc(m->ctx.n_sessions + 1, sizeof(*st->sessions));
	if (!st->sessions) {
		free(st);
		return -ENOMEM;
	}
	st->generation = ++generation;
	st->restarts = m->restarts;
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		r = iod_session_to_state(m->ctx.sessions[i], &st->sessions[i]);
		if (r < 0) {
			iod_state_free(st);
			return r;
		}
		st->n_sessions++;
	}
	*ret = st;
	return 0;
}

bool iod_manager_iommufd_available(struct iod_manager *m)
{
	return access(m->ctx.config.iommufd_path ? m->ctx.config.iommufd_path : "/dev/iommu",
		      F_OK) == 0;
}

bool iod_manager_dirty_tracking_supported(struct iod_manager *m)
{
	struct iod_iommufd *ictx = NULL;
	uint64_t word = 0;
	int r;

	if (iod_iommufd_open(m->ctx.config.iommufd_path, &ictx) < 0)
		return false;
	/* No HWPT has id 0: a kernel that knows the ioctl says ENOENT, an old one ENOTTY. */
	r = iod_hwpt_read_dirty(ictx, 0, 0, 4096, 4096, &word, 0);
	iod_iommufd_free(ictx);
	return r != -ENOTTY;
}
