/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <systemd/sd-daemon.h>

#include "fdstore.h"
#include "journal.h"
#include "logging.h"
#include "manager.h"
#include "session.h"
#include "uevent.h"

#define STATE_PREFIX "state-"
#define STATE_MAX_BYTES (UINT64_C(64) << 20)

/* A name the store holds, as far as this instance knows, and which file it is. */
struct stored {
	char *name;
	dev_t dev;
	ino_t ino;
};

struct iod_fdstore {
	bool active;
	struct stored *stored;
	size_t n_stored;
	uint64_t generation; /* of the state last saved (or restored) */
	char *state_name; /* its name in the store */
	char *last_json; /* its JSON with generation 0: an unchanged state is not saved again */
	bool busy;
	unsigned held; /* iod_state_hold(): changes wait for the last iod_state_release() */
	bool pending; /* a change came while held */
	bool closed; /* exiting: what the store holds is for the next instance */

	/* passed in by the service manager, until iod_fdstore_restore() */
	int *listen_fds;
	char **listen_names;
	size_t n_listen;
};

/* One fd the store should hold. */
struct want {
	const char *name;
	int fd;
};

/* Parse a decimal that fills the whole string. */
static int parse_unsigned(const char *s, unsigned long *ret)
{
	char *end;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	*ret = strtoul(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	return 0;
}

/*
 * The fds the service manager passed (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), read by hand
 * rather than with sd_listen_fds_with_names(), which gives up on all of them when one is not
 * open. A passed fd that is not open is logged and skipped; its name is not used, so that the
 * fd number, which the next open() may hand out, is never taken for it. Every fd taken is
 * CLOEXEC. The variables are removed either way.
 */
static int listen_fds_take(struct iod_fdstore *f)
{
	const char *e_pid = getenv("LISTEN_PID"), *e_fds = getenv("LISTEN_FDS");
	const char *e_names = getenv("LISTEN_FDNAMES");
	_cleanup_free_ char *names = NULL;
	unsigned long pid, n;
	char *name, *next;
	int r = 0;

	if (!e_pid || !e_fds)
		goto out;
	if (parse_unsigned(e_pid, &pid) < 0 || parse_unsigned(e_fds, &n) < 0) {
		log_warning("LISTEN_PID=%s LISTEN_FDS=%s are not numbers, ignoring the passed fds.",
			    e_pid, e_fds);
		goto out;
	}
	if (pid != (unsigned long)getpid() || n == 0)
		goto out;
	if (n > (unsigned long)INT_MAX - SD_LISTEN_FDS_START) {
		log_warning("LISTEN_FDS=%lu is out of range, ignoring the passed fds.", n);
		goto out;
	}
	names = e_names ? strdup(e_names) : NULL;
	if (e_names && !names) {
		r = -ENOMEM;
		goto out;
	}
	f->listen_fds = calloc(n, sizeof(int));
	f->listen_names = calloc(n, sizeof(char *));
	if (!f->listen_fds || !f->listen_names) {
		r = -ENOMEM;
		goto out;
	}
	name = names;
	for (unsigned long i = 0; i < n; i++, name = next) {
		int fd = SD_LISTEN_FDS_START + (int)i, flags;

		next = name ? strchr(name, ':') : NULL;
		if (next)
			*next++ = '\0';
		flags = fcntl(fd, F_GETFD);
		if (flags < 0) {
			log_warning("Passed fd %d (\"%s\") is not open, skipping it: %m", fd,
				    name && *name ? name : "unnamed");
			continue;
		}
		if (!(flags & FD_CLOEXEC))
			(void)fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
		f->listen_fds[f->n_listen] = fd;
		f->listen_names[f->n_listen] = name && *name ? strdup(name) : NULL;
		if (name && *name && !f->listen_names[f->n_listen]) {
			iod_close(fd);
			r = -ENOMEM;
			goto out;
		}
		f->n_listen++;
	}
out:
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return r;
}

int iod_fdstore_new(struct iod_fdstore **ret)
{
	struct iod_fdstore *f;
	const char *e;
	int r;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	e = getenv("NOTIFY_SOCKET");
	f->active = e && *e;

	r = listen_fds_take(f);
	if (r < 0) {
		iod_fdstore_free(f);
		return r;
	}
	*ret = f;
	return 0;
}

static void listen_close(struct iod_fdstore *f)
{
	for (size_t i = 0; i < f->n_listen; i++) {
		iod_close(f->listen_fds[i]);
		free(f->listen_names ? f->listen_names[i] : NULL);
	}
	free(f->listen_fds);
	free(f->listen_names);
	f->listen_fds = NULL;
	f->listen_names = NULL;
	f->n_listen = 0;
}

struct iod_fdstore *iod_fdstore_free(struct iod_fdstore *f)
{
	if (!f)
		return NULL;
	listen_close(f);
	for (size_t i = 0; i < f->n_stored; i++)
		free(f->stored[i].name);
	free(f->stored);
	free(f->state_name);
	free(f->last_json);
	free(f);
	return NULL;
}

bool iod_fdstore_active(const struct iod_fdstore *f)
{
	return f && f->active;
}

/* --- the store's contents ------------------------------------------------------------- */

static struct stored *stored_find(struct iod_fdstore *f, const char *name)
{
	for (size_t i = 0; i < f->n_stored; i++)
		if (strcmp(f->stored[i].name, name) == 0)
			return &f->stored[i];
	return NULL;
}

static int stored_add(struct iod_fdstore *f, const char *name, int fd)
{
	struct stored *p;
	struct stat st = {};

	(void)fstat(fd, &st);
	p = stored_find(f, name);
	if (p) {
		p->dev = st.st_dev;
		p->ino = st.st_ino;
		return 0;
	}
	p = realloc(f->stored, (f->n_stored + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	f->stored = p;
	p = &f->stored[f->n_stored];
	p->name = strdup(name);
	if (!p->name)
		return -ENOMEM;
	p->dev = st.st_dev;
	p->ino = st.st_ino;
	f->n_stored++;
	return 0;
}

static void stored_drop(struct iod_fdstore *f, struct stored *p)
{
	size_t i = (size_t)(p - f->stored);

	free(p->name);
	memmove(&f->stored[i], &f->stored[i + 1], (f->n_stored - i - 1) * sizeof(*p));
	f->n_stored--;
}

static bool stored_same_file(const struct stored *p, int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && st.st_dev == p->dev && st.st_ino == p->ino;
}

static int store_push(const char *name, int fd)
{
	_cleanup_free_ char *msg = NULL;
	int r;

	/* FDPOLL=0: a VFIO or iommufd file never signals hangup; nothing to watch. */
	if (asprintf(&msg, "FDSTORE=1\nFDNAME=%s\nFDPOLL=0", name) < 0)
		return -ENOMEM;
	r = sd_pid_notify_with_fds(0, false, msg, &fd, 1);
	if (r == 0)
		return -ENOTCONN;
	return r < 0 ? r : 0;
}

static int store_remove(const char *name)
{
	int r;

	r = sd_notifyf(false, "FDSTOREREMOVE=1\nFDNAME=%s", name);
	if (r == 0)
		return -ENOTCONN;
	return r < 0 ? r : 0;
}

/* --- what the store should hold -------------------------------------------------------- */

static int wants_add(struct want **w, size_t *n, const char *name, int fd)
{
	struct want *p;

	if (!name || fd < 0)
		return 0;
	p = realloc(*w, (*n + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	*w = p;
	p[(*n)++] = (struct want){.name = name, .fd = fd};
	return 0;
}

static int wants_collect(struct iod_manager *m, struct want **ret, size_t *ret_n)
{
	struct want *w = NULL;
	size_t n = 0;
	int r = 0;

	for (size_t i = 0; i < m->n_sessions; i++) {
		struct iod_session *s = m->sessions[i];

		/* Before the first harvest can need it. */
		if (iod_session_ensure_journal(s) < 0)
			log_warning(
				"Session %s: no harvest journal, a crash in a harvest may lose bits.",
				s->name);

		if (r >= 0)
			r = wants_add(&w, &n, s->log_fdname, iod_log_fd(s->log));
		if (r >= 0 && s->ictx)
			r = wants_add(&w, &n, s->iommufd_fdname, iod_iommufd_fd(s->ictx));
		if (r >= 0 && s->journal)
			r = wants_add(&w, &n, s->journal_fdname, iod_journal_fd(s->journal));
		for (size_t k = 0; r >= 0 && k < s->n_regions; k++)
			r = wants_add(&w, &n, s->regions[k].fdname, s->regions[k].fd);
		for (size_t k = 0; r >= 0 && k < s->n_devices; k++)
			r = wants_add(&w, &n, s->devices[k]->fdname, s->devices[k]->fd);
	}
	if (r < 0) {
		free(w);
		return r;
	}
	*ret = w;
	*ret_n = n;
	return 0;
}

static bool wants_has(const struct want *w, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(w[i].name, name) == 0)
			return true;
	return false;
}

/* --- the state memfd ------------------------------------------------------------------- */

static int state_memfd(const char *json)
{
	_cleanup_close_ int fd = -EBADF;
	size_t len = strlen(json), done = 0;

	fd = memfd_create("iodirtyd-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t k = write(fd, json + done, len - done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		done += (size_t)k;
	}
	/* Complete before anyone sees it, and never changed afterwards. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return -errno;
	return TAKE_FD(fd);
}

static int state_save(struct iod_manager *m)
{
	struct iod_fdstore *f = m->fdstore;
	_cleanup_free_ char *cmp = NULL, *json = NULL, *name = NULL;
	_cleanup_close_ int fd = -EBADF;
	struct iod_state *st = NULL;
	int r;

	r = iod_manager_to_state(m, &st);
	if (r < 0)
		return log_error_errno(r, "Failed to collect the state for the fd store: %m");
	st->generation = 0;
	if (f->generation >= UINT64_MAX - 1) {
		/* The reader refuses UINT64_MAX (it has no successor): never wrap, never write it. */
		iod_state_free(st);
		return log_error_errno(EOVERFLOW,
				       "The state generation is exhausted, the fd store keeps "
				       "generation %" PRIu64 ": %m",
				       f->generation);
	}
	r = iod_state_to_json(st, &cmp);
	if (r >= 0 && f->last_json && strcmp(cmp, f->last_json) == 0) {
		iod_state_free(st);
		return 0; /* what the store holds is still right */
	}
	st->generation = f->generation + 1;
	if (r >= 0)
		r = iod_state_to_json(st, &json);
	iod_state_free(st);
	if (r < 0)
		return log_error_errno(
			r,
			"Failed to serialise the state, the fd store keeps the previous one: %m");

	fd = state_memfd(json);
	if (fd < 0)
		return log_error_errno(fd, "Failed to write the state memfd: %m");
	if (asprintf(&name, STATE_PREFIX "%" PRIu64, f->generation + 1) < 0)
		return -ENOMEM;
	r = store_push(name, fd);
	if (r < 0)
		return log_error_errno(
			r, "Failed to store state %s, the fd store keeps the previous one: %m",
			name);
	r = stored_add(f, name, fd);
	if (r < 0)
		return r;
	f->generation++;
	free(f->state_name);
	f->state_name = TAKE_PTR(name);
	free(f->last_json);
	f->last_json = TAKE_PTR(cmp);
	log_debug("Saved state generation %" PRIu64 " to the fd store.", f->generation);
	return 0;
}

static int fdstore_sync(struct iod_manager *m)
{
	struct iod_fdstore *f = m->fdstore;
	_cleanup_free_ struct want *w = NULL;
	size_t n = 0;
	int r;

	r = wants_collect(m, &w, &n);
	if (r < 0)
		return log_error_errno(r, "Failed to list the fds for the fd store: %m");

	/* 1. New fds, before a state that names them. */
	for (size_t i = 0; i < n; i++) {
		struct stored *p = stored_find(f, w[i].name);

		if (p && stored_same_file(p, w[i].fd))
			continue;
		if (p) {
			/* The name now stands for another file (a session of the same name). */
			(void)store_remove(w[i].name);
			stored_drop(f, p);
		}
		r = store_push(w[i].name, w[i].fd);
		if (r < 0) {
			log_warning_errno(r,
					  "Failed to store fd \"%s\", a restart would lose it: %m",
					  w[i].name);
			continue;
		}
		r = stored_add(f, w[i].name, w[i].fd);
		if (r < 0)
			return r;
	}

	/* 2. The state, under a new name: the previous one stays until this one is there. */
	(void)state_save(m);

	/* 3. What nothing names any more: earlier states, fds of sessions and devices gone. */
	for (size_t i = f->n_stored; i > 0; i--) {
		struct stored *p = &f->stored[i - 1];

		if ((f->state_name && strcmp(p->name, f->state_name) == 0) ||
		    wants_has(w, n, p->name))
			continue;
		r = store_remove(p->name);
		if (r < 0)
			log_warning_errno(r,
					  "Failed to remove fd \"%s\" from the store, ignoring: %m",
					  p->name);
		else
			log_debug("Removed fd \"%s\" from the fd store.", p->name);
		stored_drop(f, p);
	}
	return 0;
}

void iod_state_hold(struct iod_manager *m)
{
	if (m && m->fdstore)
		m->fdstore->held++;
}

void iod_state_release(struct iod_manager *m)
{
	if (!m || !m->fdstore || m->fdstore->held == 0)
		return;
	if (--m->fdstore->held == 0 && m->fdstore->pending) {
		m->fdstore->pending = false;
		iod_state_changed(m);
	}
}

void iod_state_changed(struct iod_manager *m)
{
	if (!m || !m->fdstore || m->fdstore->busy || m->fdstore->closed)
		return;
	if (m->fdstore->held) {
		m->fdstore->pending = true;
		return;
	}
	m->fdstore->busy = true;
	iod_uevent_watch_devices(m);
	if (m->fdstore->active)
		(void)fdstore_sync(m);
	m->fdstore->busy = false;
}

/* --- restore --------------------------------------------------------------------------- */

static int lookup(const char *name, void *userdata)
{
	struct iod_fdstore *f = userdata;

	if (!name)
		return -ENOENT;
	for (size_t i = f->n_listen; i > 0; i--)
		if (f->listen_names && f->listen_names[i - 1] &&
		    strcmp(f->listen_names[i - 1], name) == 0)
			return f->listen_fds[i - 1];
	return -ENOENT;
}

static int state_read(int fd, const char *name, struct iod_state **ret)
{
	_cleanup_free_ char *buf = NULL, *reason = NULL;
	struct stat st;
	size_t done = 0;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > STATE_MAX_BYTES)
		return log_warning_errno(
			EBADMSG, "Stored state \"%s\" is not a state memfd, ignoring it.", name);
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	while (done < (size_t)st.st_size) {
		ssize_t k = pread(fd, buf + done, (size_t)st.st_size - done, (off_t)done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EBADMSG;
		done += (size_t)k;
	}
	buf[done] = '\0';
	r = iod_state_from_json_len(buf, done, ret, &reason);
	if (r < 0)
		return log_warning_errno(r, "Stored state \"%s\" is unusable, ignoring it: %s",
					 name, reason ? reason : iod_strerror(r));
	return 0;
}

/* A session that could not be rebuilt: visible, failed, and destroyable by its owner. */
static int session_failed_shell(struct iod_manager *m, const struct iod_state_session *st, int err,
				struct iod_session **ret)
{
	struct iod_session_options o;
	struct iod_session *s = NULL;
	int r;

	iod_session_options_from_state(m, st, &o);
	r = iod_session_new(m, st->name, st->mode, (uid_t)st->uid, &o, &s);
	if (r < 0)
		return r;
	s->failed = true;
	if (asprintf(
		    &s->failure,
		    "the daemon restarted and could not take the session back (%s): its kernel objects and dirty log are gone",
		    iod_strerror(err)) < 0)
		s->failure = NULL;
	iod_log_set_flags(s->log, iod_log_flags(s->log) | IOD_LOG_F_INCOMPLETE);
	*ret = s;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool strv_contains_sorted(char **names, const char *name)
{
	size_t n = 0;

	while (names[n])
		n++;
	return bsearch(&name, names, n, sizeof(char *), cmp_str) != NULL;
}

/*
 * The names on the bus now, sorted, or NULL when the bus cannot say (then every recorded
 * owner is taken as present: nothing is destroyed on a guess). The match on NameOwnerChanged
 * is in place before this call, so an owner that leaves afterwards is noticed as usual.
 */
static char **bus_names(struct iod_manager *m)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char **names = NULL;
	size_t n = 0;
	int r;

	if (!m->bus)
		return NULL;
	r = sd_bus_call_method(m->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
			       "org.freedesktop.DBus", "ListNames", &error, &reply, NULL);
	if (r >= 0)
		r = sd_bus_message_read_strv(reply, &names);
	if (r < 0) {
		log_warning(
			"Failed to list the names on the bus, keeping every session's owner: %s",
			error.message ? error.message : strerror(-r));
		sd_bus_error_free(&error);
		return NULL;
	}
	while (names && names[n])
		n++;
	if (names)
		qsort(names, n, sizeof(char *), cmp_str);
	return names;
}

static void strv_free(char **l)
{
	for (size_t i = 0; l && l[i]; i++)
		free(l[i]);
	free(l);
}

static void restore_session(struct iod_manager *m, const struct iod_state_session *st, char **names)
{
	struct iod_fdstore *f = m->fdstore;
	struct iod_session *s = NULL;
	int r, fd;

	r = iod_session_from_state(m, st, lookup, f, &s);
	if (r < 0) {
		log_error_errno(r, "Session %s: cannot be restored, marking it failed: %m",
				st->name);
		r = session_failed_shell(m, st, r, &s);
		if (r < 0) {
			log_error_errno(r, "Session %s: lost: %m", st->name);
			return;
		}
	} else {
		/* Bits a harvest had read and cleared when the previous instance died. */
		fd = lookup(s->journal_fdname, f);
		if (fd >= 0) {
			struct iod_journal *j = NULL;

			r = iod_journal_open_fd(fd, &j);
			if (r >= 0)
				r = iod_journal_replay(j, s->log);
			if (r > 0)
				log_notice(
					"Session %s: merged the bits of a harvest the previous instance did not finish.",
					s->name);
			if (r < 0)
				iod_session_fail(s, "the harvest journal could not be merged: %s",
						 iod_strerror(r));
			s->journal = j;
		}
		iod_session_probe_holes(s);
		for (size_t i = 0; i < s->n_devices; i++) {
			struct iod_device *d = s->devices[i];

			if (!d->cdev && d->name && iod_pci_address_valid(d->name))
				(void)iod_vfio_cdev_path(m->config.sysfs_root, d->name, &d->cdev);
		}
	}

	if (st->owner && names && !strv_contains_sorted(names, st->owner)) {
		log_info("Owner %s of session %s left the bus while the daemon was down.",
			 st->owner, s->name);
		if (s->options.disconnect_policy == IOD_DISCONNECT_DESTROY) {
			log_info("Destroying session %s (disconnect policy \"destroy\").", s->name);
			iod_session_free(s);
			return;
		}
	} else if (st->owner) {
		r = iod_session_set_owner(s, st->owner);
		if (r < 0) {
			log_error_errno(r, "Session %s: lost: %m", st->name);
			s->keep_kernel = true;
			iod_session_free(s);
			return;
		}
	}

	r = iod_manager_add_session(m, s);
	if (r < 0) {
		log_error_errno(r, "Session %s: lost: %m", st->name);
		s->keep_kernel = true;
		iod_session_free(s);
		return;
	}
	log_info("Session %s restored (%s mode, %s%s, %zu device(s), round %" PRIu64 ").", s->name,
		 iod_session_mode_to_string(s->mode), iod_session_state_string(s),
		 s->tracking ? ", tracking left on" : "", s->n_devices, iod_log_rounds(s->log));
}

int iod_fdstore_restore(struct iod_manager *m)
{
	struct iod_fdstore *f = m->fdstore;
	struct iod_state *best = NULL;

	if (!f)
		return 0;
	if (f->n_listen > 0 && !f->active)
		log_warning(
			"Got %zu fds but no NOTIFY_SOCKET: restoring, but nothing will be stored.",
			f->n_listen);

	for (size_t i = 0; i < f->n_listen; i++) {
		const char *name = f->listen_names ? f->listen_names[i] : NULL;
		struct iod_state *st = NULL;

		if (!name || strncmp(name, STATE_PREFIX, strlen(STATE_PREFIX)) != 0)
			continue;
		if (state_read(f->listen_fds[i], name, &st) < 0)
			continue;
		if (!best || st->generation > best->generation) {
			iod_state_free(best);
			best = st;
		} else {
			iod_state_free(st);
		}
	}

	if (best) {
		log_info("Restoring %zu session(s) from state generation %" PRIu64
			 " (%zu fds passed).",
			 best->n_sessions, best->generation, f->n_listen);
		char **names = bus_names(m);

		f->generation = best->generation;
		for (size_t i = 0; i < best->n_sessions; i++)
			restore_session(m, &best->sessions[i], names);
		strv_free(names);
		iod_state_free(best);
		iod_manager_check_restored_limits(m);
	} else if (f->n_listen > 0) {
		log_warning("The fd store holds %zu fds but no usable state: closing them.",
			    f->n_listen);
	}

	/* Everything passed in is in the store: what the sessions do not use goes. */
	for (size_t i = 0; i < f->n_listen; i++)
		if (f->listen_names && f->listen_names[i])
			(void)stored_add(f, f->listen_names[i], f->listen_fds[i]);
	listen_close(f);

	iod_state_changed(m);
	return 0;
}

void iod_fdstore_shutdown(struct iod_manager *m)
{
	if (!m->fdstore || !m->fdstore->active || m->fdstore->closed)
		return;
	iod_state_changed(m);
	m->fdstore->closed = true;
	if (m->n_sessions > 0)
		log_info(
			"Leaving %zu session(s) to the fd store: the next instance takes them back.",
			m->n_sessions);
	for (size_t i = 0; i < m->n_sessions; i++)
		m->sessions[i]->keep_kernel = true;
}
