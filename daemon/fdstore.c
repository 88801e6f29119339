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
#include "logging.h"

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

	/* passed in by the service manager, until iod_fdstore_adopt_passed() */
	int *listen_fds;
	char **listen_names;
	size_t n_listen;
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

/* --- the service manager's side -------------------------------------------------------- */

int iod_fdstore_put(struct iod_fdstore *f, const char *name, int fd)
{
	struct stored *p = stored_find(f, name);
	int r;

	if (!f->active)
		return 0;
	if (p && stored_same_file(p, fd))
		return 0;
	if (p) {
		/* The name now stands for another file (a session of the same name). */
		(void)store_remove(name);
		stored_drop(f, p);
	}
	r = store_push(name, fd);
	if (r < 0)
		return r;
	return stored_add(f, name, fd);
}

void iod_fdstore_prune(struct iod_fdstore *f, bool (*keep)(const char *name, void *userdata),
		       void *userdata)
{
	for (size_t i = f->n_stored; i > 0; i--) {
		struct stored *p = &f->stored[i - 1];
		int r;

		if (keep(p->name, userdata))
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
}

/* --- what the previous instance left --------------------------------------------------- */

size_t iod_fdstore_n_passed(const struct iod_fdstore *f)
{
	return f ? f->n_listen : 0;
}

const char *iod_fdstore_passed_name(const struct iod_fdstore *f, size_t i)
{
	return f->listen_names ? f->listen_names[i] : NULL;
}

int iod_fdstore_passed_fd(const struct iod_fdstore *f, size_t i)
{
	return f->listen_fds[i];
}

int iod_fdstore_lookup(const struct iod_fdstore *f, const char *name)
{
	if (!f || !name)
		return -ENOENT;
	/* The last of a name wins, as the service manager passes them in order. */
	for (size_t i = f->n_listen; i > 0; i--)
		if (f->listen_names && f->listen_names[i - 1] &&
		    strcmp(f->listen_names[i - 1], name) == 0)
			return f->listen_fds[i - 1];
	return -ENOENT;
}

void iod_fdstore_adopt_passed(struct iod_fdstore *f)
{
	for (size_t i = 0; i < f->n_listen; i++)
		if (f->listen_names && f->listen_names[i])
			(void)stored_add(f, f->listen_names[i], f->listen_fds[i]);
	listen_close(f);
}
