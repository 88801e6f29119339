/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Persistence (persist.h): snapshots and the state journal in the fd store, and the restore. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "fdstore.h"
#include "journal.h"
#include "logging.h"
#include "manager.h"
#include "persist.h"
#include "session.h"

#define STATE_PREFIX "state-"
#define STATE_MAX_BYTES (UINT64_C(64) << 20)
#define JOURNAL_NAME "state.journal"
/* Room for records between two snapshots; a tmpfs file: untouched pages cost nothing. */
#define JOURNAL_CAPACITY (UINT64_C(16) << 20)
/* Compact when the journal holds this much, or as much as the last snapshot if more. */
#define JOURNAL_COMPACT_MIN (UINT64_C(256) << 10)

struct iod_persist {
	struct iod_fdstore *store;
	struct iod_state_journal *journal; /* NULL until the first snapshot */
	uint64_t generation; /* of the state last saved (or restored) */
	char *state_name; /* its name in the store */
	char *last_json; /* its JSON with generation 0: an unchanged state is not saved again */
	uint64_t snapshot_bytes;
	bool busy;
	unsigned held; /* iod_persist_hold(): snapshots wait for the last release */
	bool pending; /* a change came while held */
	bool closed; /* exiting: what the store holds is for the next instance */

	/* IODIRTYD_TEST_CRASH */
	bool crash_torn;
	uint64_t crash_at, appends;
};

static void test_hook_parse(struct iod_persist *p)
{
	const char *e = getenv("IODIRTYD_TEST_CRASH");
	unsigned long long n = 0;
	char what[32];

	if (!e)
		return;
	if (sscanf(e, "%31[a-z-]:%llu", what, &n) != 2 || n == 0 ||
	    (strcmp(what, "journal-append") != 0 && strcmp(what, "journal-torn") != 0)) {
		log_warning("IODIRTYD_TEST_CRASH=%s is not journal-append:N or journal-torn:N, "
			    "ignoring it.",
			    e);
		return;
	}
	p->crash_torn = strcmp(what, "journal-torn") == 0;
	p->crash_at = n;
	log_warning("IODIRTYD_TEST_CRASH=%s: this instance kills itself at that journal append "
		    "(a test).",
		    e);
}

int iod_persist_new(struct iod_manager *m)
{
	struct iod_persist *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->store = m->fdstore;
	test_hook_parse(p);
	m->persist = p;
	return 0;
}

void iod_persist_free(struct iod_manager *m)
{
	struct iod_persist *p = m ? m->persist : NULL;

	if (!p)
		return;
	iod_state_journal_free(p->journal);
	free(p->state_name);
	free(p->last_json);
	free(p);
	m->persist = NULL;
}

static bool active(const struct iod_persist *p)
{
	return p && iod_fdstore_active(p->store) && !p->closed;
}

/* --- snapshots ------------------------------------------------------------------------- */

/*
 * Call cb(name, fd) for every fd of s that the store must hold: its log, iommufd and
 * harvest journal, guest memory memfds and device cdevs. A non-zero return stops the walk
 * and is returned.
 */
static int session_foreach_fd(struct iod_session *s,
			      int (*cb)(const char *name, int fd, void *userdata), void *userdata)
{
	const struct {
		const char *name;
		int fd;
	} fds[] = {
		{s->log_fdname, iod_log_fd(s->log)},
		{s->iommufd_fdname, s->ictx ? iod_iommufd_fd(s->ictx) : -EBADF},
		{s->journal_fdname, s->journal ? iod_journal_fd(s->journal) : -EBADF},
	};
	int r;

	for (size_t k = 0; k < ELEMENTSOF(fds); k++)
		if (fds[k].name && fds[k].fd >= 0 && (r = cb(fds[k].name, fds[k].fd, userdata)))
			return r;
	for (size_t k = 0; k < s->n_regions; k++)
		if (s->regions[k].fdname && s->regions[k].fd >= 0 &&
		    (r = cb(s->regions[k].fdname, s->regions[k].fd, userdata)))
			return r;
	for (size_t k = 0; k < s->n_devices; k++)
		if (s->devices[k]->fdname && s->devices[k]->fd >= 0 &&
		    (r = cb(s->devices[k]->fdname, s->devices[k]->fd, userdata)))
			return r;
	return 0;
}

static int put_fd(const char *name, int fd, void *userdata)
{
	struct iod_persist *p = userdata;

	if (iod_fdstore_put(p->store, name, fd) < 0)
		log_warning("Failed to store fd \"%s\", a restart would lose it.", name);
	return 0;
}

/* Store the fds every session needs (before a state that names them). */
static void put_session_fds(struct iod_manager *m)
{
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		struct iod_session *s = m->ctx.sessions[i];

		/* Before the first harvest can need it. */
		if (iod_session_ensure_journal(s) < 0)
			log_warning(
				"Session %s: no harvest journal, a crash in a harvest may lose bits.",
				s->name);
		(void)session_foreach_fd(s, put_fd, m->persist);
	}
}

static int is_name(const char *name, int fd, void *userdata)
{
	return strcmp(name, userdata) == 0;
}

/* Does anything still name this stored fd? */
static bool keep_name(const char *name, void *userdata)
{
	struct iod_manager *m = userdata;
	struct iod_persist *p = m->persist;

	if (strcmp(name, JOURNAL_NAME) == 0 && p->journal)
		return true;
	if (p->state_name && strcmp(name, p->state_name) == 0)
		return true;
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		struct iod_session *s = m->ctx.sessions[i];
		size_t len = strlen(s->name);

		/* Every fd name of a session is "<session>/...". */
		if (strncmp(name, s->name, len) == 0 && name[len] == '/' &&
		    session_foreach_fd(s, is_name, (void *)name))
			return true;
	}
	return false;
}

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

/* The journal, stored once (before the first state that it follows). */
static int ensure_journal(struct iod_persist *p)
{
	int r;

	if (p->journal)
		return 0;
	r = iod_state_journal_new(JOURNAL_CAPACITY, p->generation, &p->journal);
	if (r < 0)
		return log_error_errno(r, "Failed to make the state journal: %m");
	r = iod_fdstore_put(p->store, JOURNAL_NAME, iod_state_journal_fd(p->journal));
	if (r < 0) {
		p->journal = iod_state_journal_free(p->journal);
		return log_warning_errno(r, "Failed to store the state journal: %m");
	}
	return 0;
}

/* Write the state as generation + 1 and store it. 0 also when nothing changed. */
static int state_save(struct iod_manager *m)
{
	struct iod_persist *p = m->persist;
	_cleanup_free_ char *cmp = NULL, *json = NULL, *name = NULL;
	_cleanup_close_ int fd = -EBADF;
	struct iod_state *st = NULL;
	int r;

	r = iod_manager_to_state(m, &st);
	if (r < 0)
		return log_error_errno(r, "Failed to collect the state for the fd store: %m");
	st->generation = 0;
	if (p->generation >= UINT64_MAX - 1) {
		/* The reader refuses UINT64_MAX (it has no successor): never wrap, never write it. */
		iod_state_free(st);
		return log_error_errno(EOVERFLOW,
				       "The state generation is exhausted, the fd store keeps "
				       "generation %" PRIu64 ": %m",
				       p->generation);
	}
	r = iod_state_to_json(st, &cmp);
	if (r >= 0 && p->last_json && strcmp(cmp, p->last_json) == 0 && p->journal &&
	    iod_state_journal_used(p->journal) == 0) {
		iod_state_free(st);
		return 0; /* what the store holds is still right */
	}
	st->generation = p->generation + 1;
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
	if (asprintf(&name, STATE_PREFIX "%" PRIu64, p->generation + 1) < 0)
		return -ENOMEM;
	r = iod_fdstore_put(p->store, name, fd);
	if (r < 0)
		return log_error_errno(
			r, "Failed to store state %s, the fd store keeps the previous one: %m",
			name);
	p->generation++;
	p->snapshot_bytes = strlen(json);
	free(p->state_name);
	p->state_name = TAKE_PTR(name);
	free(p->last_json);
	p->last_json = TAKE_PTR(cmp);
	/* The new state holds every record: the journal now follows it. A kill before this
	 * leaves a journal of an older generation, which the next instance ignores. */
	if (p->journal)
		iod_state_journal_reset(p->journal, p->generation);
	log_debug("Saved state generation %" PRIu64 " to the fd store.", p->generation);
	return 0;
}

static int snapshot(struct iod_manager *m)
{
	struct iod_persist *p = m->persist;
	int r;

	put_session_fds(m);
	(void)ensure_journal(p);
	r = state_save(m);
	/* What nothing names any more: earlier states, fds of sessions and devices gone. Not
	 * when the state failed: the previous one still names them. */
	if (r >= 0)
		iod_fdstore_prune(p->store, keep_name, m);
	return r;
}

int iod_persist_save(struct iod_manager *m)
{
	struct iod_persist *p = m ? m->persist : NULL;
	int r;

	if (!p || p->busy || p->closed)
		return 0;
	if (p->held) {
		p->pending = true;
		return 0;
	}
	if (!active(p))
		return 0;
	p->busy = true;
	r = snapshot(m);
	p->busy = false;
	return r;
}

void iod_persist_hold(struct iod_manager *m)
{
	if (m && m->persist)
		m->persist->held++;
}

void iod_persist_release(struct iod_manager *m)
{
	struct iod_persist *p = m ? m->persist : NULL;

	if (!p || p->held == 0)
		return;
	if (--p->held == 0 && p->pending) {
		p->pending = false;
		(void)iod_persist_save(m);
	}
}

/* --- the journal ----------------------------------------------------------------------- */

/* Append one record; IODIRTYD_TEST_CRASH kills this instance at its Nth append, after the
 * commit (journal-append) or instead of it, with half the record written (journal-torn). */
static int append(struct iod_persist *p, struct iod_session *s, enum iod_state_journal_type type,
		  const struct iod_mapping *entries, size_t n, uint64_t value)
{
	bool crash = p->crash_at && ++p->appends == p->crash_at;
	int r = 0;

	if (crash && p->crash_torn)
		(void)iod_state_journal_append_torn(p->journal, type, s->name, entries, n, value);
	else
		r = iod_state_journal_append(p->journal, type, s->name, entries, n, value);
	if (crash) {
		log_warning("IODIRTYD_TEST_CRASH: killing this instance at journal append %" PRIu64
			    ".",
			    p->appends);
		raise(SIGKILL);
	}
	return r;
}

int iod_persist_events(struct iod_manager *m, struct iod_session *s,
		       enum iod_state_journal_type type, const struct iod_mapping *entries,
		       size_t n, uint64_t value)
{
	struct iod_persist *p = m ? m->persist : NULL;
	uint64_t limit;

	if (!active(p) || p->busy)
		return 0;
	if (p->held || !p->journal || p->generation == 0) {
		/* No snapshot to follow yet, or a snapshot is due anyway. */
		return iod_persist_save(m);
	}
	limit = MAX(JOURNAL_COMPACT_MIN, p->snapshot_bytes);
	if (iod_state_journal_used(p->journal) >= limit)
		return iod_persist_save(m); /* compaction: this event is in the snapshot */

	/* A batch larger than a record takes several (ROUNDS: one, without entries). */
	size_t done = 0;
	do {
		size_t k = MIN(n - done, (size_t)IOD_STATE_JOURNAL_MAX_ENTRIES);
		/* An event channel's sequence number goes with the batch's last record. */
		bool last = done + k == n;
		int r = append(p, s, type, entries ? entries + done : NULL, k,
			       type == IOD_SJ_ROUNDS || last ? value : 0);

		if (r == -ENOSPC)
			return iod_persist_save(m); /* the records so far are in it too */
		if (r < 0) {
			log_error_errno(r,
					"Failed to append to the state journal, saving it all: %m");
			return iod_persist_save(m);
		}
		done += k;
	} while (done < n);
	return 0;
}

/* --- restore --------------------------------------------------------------------------- */

static int lookup(const char *name, void *userdata)
{
	return iod_fdstore_lookup(userdata, name);
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

	iod_session_options_from_state(&m->ctx, st, &o);
	r = iod_session_new(&m->ctx, st->name, st->mode, (uid_t)st->uid, &o, &s);
	if (r < 0)
		return r;
	s->failed = true;
	s->event_seq = st->event_seq; /* resends stay replays */
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

	if (!m->ctx.bus)
		return NULL;
	r = sd_bus_call_method(m->ctx.bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
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

static void restore_session(struct iod_manager *m, const struct iod_state_session *st, char **names,
			    const char *journal_failure)
{
	struct iod_fdstore *f = m->persist->store;
	struct iod_session *s = NULL;
	int r, fd;

	r = iod_session_from_state(&m->ctx, st, lookup, f, &s);
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
		if (journal_failure)
			iod_session_fail(s,
					 "the daemon restarted and its state journal could not be "
					 "replayed (%s): changes after its last snapshot may be "
					 "missing",
					 journal_failure);
		iod_session_probe_holes(s);
		for (size_t i = 0; i < s->n_devices; i++) {
			struct iod_device *d = s->devices[i];

			if (!d->cdev && d->name && iod_pci_address_valid(d->name))
				(void)iod_vfio_cdev_path(m->ctx.config.sysfs_root, d->name,
							 &d->cdev);
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

	r = iod_context_add_session(&m->ctx, s);
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

/*
 * The stored journal, replayed onto best. Returns NULL, or why it could not be (malloc'ed);
 * the journal is kept either way, to be reset by the first snapshot.
 */
static char *journal_replay(struct iod_persist *p, struct iod_state *best)
{
	_cleanup_free_ char *reason = NULL;
	uint64_t n = 0;
	int fd = iod_fdstore_lookup(p->store, JOURNAL_NAME), r;

	if (fd < 0)
		return NULL;
	r = iod_state_journal_open_fd(fd, &p->journal, &reason);
	if (r >= 0)
		r = iod_state_journal_apply(p->journal, best, &n, &reason);
	if (r < 0) {
		log_error("The state journal cannot be replayed onto state generation %" PRIu64
			  ": %s",
			  best->generation, reason ? reason : iod_strerror(r));
		return reason ? TAKE_PTR(reason) : strdup(iod_strerror(r));
	}
	if (n > 0)
		log_info("Replayed %" PRIu64 " change(s) from the state journal.", n);
	return NULL;
}

int iod_persist_restore(struct iod_manager *m)
{
	struct iod_persist *p = m->persist;
	struct iod_state *best = NULL;
	size_t n_passed = iod_fdstore_n_passed(p->store);

	if (n_passed > 0 && !iod_fdstore_active(p->store))
		log_warning(
			"Got %zu fds but no NOTIFY_SOCKET: restoring, but nothing will be stored.",
			n_passed);

	for (size_t i = 0; i < n_passed; i++) {
		const char *name = iod_fdstore_passed_name(p->store, i);
		struct iod_state *st = NULL;

		if (!name || strncmp(name, STATE_PREFIX, strlen(STATE_PREFIX)) != 0)
			continue;
		if (state_read(iod_fdstore_passed_fd(p->store, i), name, &st) < 0)
			continue;
		if (!best || st->generation > best->generation) {
			iod_state_free(best);
			best = st;
		} else {
			iod_state_free(st);
		}
	}

	if (best) {
		_cleanup_free_ char *journal_failure = NULL;
		char **names;

		log_info("Restoring %zu session(s) from state generation %" PRIu64
			 " (%zu fds passed).",
			 best->n_sessions, best->generation, n_passed);
		journal_failure = journal_replay(p, best);
		names = bus_names(m);
		p->generation = best->generation;
		m->restarts = best->restarts < UINT64_MAX ? best->restarts + 1 : UINT64_MAX;
		for (size_t i = 0; i < best->n_sessions; i++)
			restore_session(m, &best->sessions[i], names, journal_failure);
		strv_free(names);
		iod_state_free(best);
		iod_manager_check_restored_limits(m);
	} else if (n_passed > 0) {
		log_warning("The fd store holds %zu fds but no usable state: closing them.",
			    n_passed);
	}

	/* Everything passed in is in the store: what the sessions do not use goes. */
	iod_fdstore_adopt_passed(p->store);
	(void)iod_persist_save(m);
	return 0;
}

void iod_persist_shutdown(struct iod_manager *m)
{
	struct iod_persist *p = m ? m->persist : NULL;

	if (!p || !active(p))
		return;
	(void)iod_persist_save(m);
	p->closed = true;
	if (m->ctx.n_sessions > 0)
		log_info(
			"Leaving %zu session(s) to the fd store: the next instance takes them back.",
			m->ctx.n_sessions);
	for (size_t i = 0; i < m->ctx.n_sessions; i++)
		m->ctx.sessions[i]->keep_kernel = true;
}
