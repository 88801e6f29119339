/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * systemd's fd store, and nothing else: the fds the service manager passed to this instance
 * (LISTEN_FDS/LISTEN_FDNAMES), and the names this instance keeps there (sd_notify
 * "FDSTORE=1" with FDNAME and FDPOLL=0, "FDSTOREREMOVE=1"). Active only when NOTIFY_SOCKET
 * is set. What goes into the store, and in which order, is persist.c's business.
 */
#ifndef IOD_FDSTORE_H
#define IOD_FDSTORE_H

#include <stdbool.h>
#include <stddef.h>

struct iod_fdstore;

/* Look at NOTIFY_SOCKET and take the fds passed in LISTEN_FDS/LISTEN_FDNAMES (a passed fd
 * that is not open is logged and skipped). Call before anything else opens an fd. */
int iod_fdstore_new(struct iod_fdstore **ret);
struct iod_fdstore *iod_fdstore_free(struct iod_fdstore *f);
bool iod_fdstore_active(const struct iod_fdstore *f);

/* Store fd under name, unless the store holds that very file under it already (a name that
 * now stands for another file is replaced). Nothing when the store is not active. */
int iod_fdstore_put(struct iod_fdstore *f, const char *name, int fd);
/* Remove from the store every name keep() says no to. */
void iod_fdstore_prune(struct iod_fdstore *f, bool (*keep)(const char *name, void *userdata),
		       void *userdata);

/* The fds passed in, until iod_fdstore_adopt_passed(). */
size_t iod_fdstore_n_passed(const struct iod_fdstore *f);
const char *iod_fdstore_passed_name(const struct iod_fdstore *f, size_t i);
int iod_fdstore_passed_fd(const struct iod_fdstore *f, size_t i);
/* The passed fd of that name (the last one), or -ENOENT. The store keeps it: dup to keep. */
int iod_fdstore_lookup(const struct iod_fdstore *f, const char *name);
/* The restore is done: every passed name counts as stored, and this instance's copies of
 * the passed fds are closed. */
void iod_fdstore_adopt_passed(struct iod_fdstore *f);

#endif
