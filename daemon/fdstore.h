/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Restart and crash survival through systemd's fd store (active only when NOTIFY_SOCKET is
 * set). iommufd objects die with their file, so every fd that keeps one alive is pushed to
 * the store (sd_notify "FDSTORE=1", named, FDPOLL=0):
 *
 *   <session>/iommufd       the session's iommufd (its IOAS, HWPTs and device bindings)
 *   <session>/log           the dirty log memfd (both planes: unacknowledged rounds survive)
 *   <session>/journal       the harvest journal memfd (journal.h)
 *   <session>/mem/<gpa>     guest memory memfds (owner mode)
 *   <session>/dev/<index>   VFIO device cdevs (owner mode)
 *   state-<generation>      a sealed memfd with the JSON state (iod_state_to_json)
 *
 * After every change a client can see, and before the reply to the call that made it, the
 * store is brought up to date in an order that a crash at any point leaves restorable:
 * new fds first, then the state in a fresh sealed memfd under a new name, then the removal
 * (FDSTOREREMOVE=1) of the previous state and of fds no session uses any more. The next
 * instance takes the state with the highest generation that parses, rebuilds the sessions
 * from it without touching dirty tracking (enabling it again would wipe the bits), merges
 * a pending harvest journal, and closes and removes fds the state does not name.
 */
#ifndef IOD_FDSTORE_H
#define IOD_FDSTORE_H

#include <stdbool.h>

struct iod_manager;
struct iod_fdstore;

/* Look at NOTIFY_SOCKET and take the fds passed in LISTEN_FDS/LISTEN_FDNAMES. */
int iod_fdstore_new(struct iod_fdstore **ret);
struct iod_fdstore *iod_fdstore_free(struct iod_fdstore *f);
bool iod_fdstore_active(const struct iod_fdstore *f);

/* Rebuild the sessions from the passed fds (needs the bus, for their owners). */
int iod_fdstore_restore(struct iod_manager *m);

/*
 * Something a client can see changed: watch new devices for removal (uevent.c) and bring
 * the fd store up to date. Called before the reply of every call that changes a session.
 */
void iod_state_changed(struct iod_manager *m);

/* Many changes in a row (an owner leaving with all its sessions): save once, at the end. */
void iod_state_hold(struct iod_manager *m);
void iod_state_release(struct iod_manager *m);

/* The daemon is exiting: with an active store, leave the kernel objects to it. */
void iod_fdstore_shutdown(struct iod_manager *m);

#endif
