/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Persistence: what the next instance needs to take every session back, kept in systemd's
 * fd store (fdstore.c). Nothing here happens as a side effect: the code that changes
 * persistent state calls one of these before its reply goes out.
 *
 *   iod_persist_save()    a full snapshot: the fds the sessions need, then the JSON state
 *                         (iod-state.h) in a fresh sealed memfd "state-<generation>", then
 *                         the state journal reset to it, then the removal of what nothing
 *                         names any more. For the rare changes: sessions, devices, memory,
 *                         start/stop, failures, owners.
 *   iod_persist_events()  one record appended to the state journal (iod-state-journal.h,
 *                         the memfd "state.journal", stored once and written in place): the
 *                         vIOMMU events and harvest rounds. Its cost is the record's; when
 *                         the journal holds as many bytes as the last snapshot (or is
 *                         full) the next call compacts it into a snapshot.
 *
 * iod_persist_restore() takes the newest state that parses, replays the journal onto it
 * when it follows that state, and rebuilds the sessions without touching dirty tracking
 * (enabling it again would wipe the bits). A journal that cannot be replayed leaves the
 * snapshot's sessions marked failed (visibly: their log may miss what the journal held).
 *
 * With no fd store (no NOTIFY_SOCKET) only the device watches are updated.
 *
 * IODIRTYD_TEST_CRASH=journal-append:N or journal-torn:N (tests only): the daemon kills
 * itself with SIGKILL right after its Nth journal append (N counts from 1), or in the middle
 * of it (half a record written, not committed), before the reply goes out.
 */
#ifndef IOD_PERSIST_H
#define IOD_PERSIST_H

#include <stddef.h>

#include "iodirty.h"

struct iod_manager;
struct iod_session;

/* Set up persistence for m (its fd store must exist). */
int iod_persist_new(struct iod_manager *m);
void iod_persist_free(struct iod_manager *m);

/* Rebuild the sessions of the previous instance (needs the bus, for their owners). */
int iod_persist_restore(struct iod_manager *m);

/* A full snapshot (see above). Failures are logged; returns < 0 if the store missed it. */
int iod_persist_save(struct iod_manager *m);

/*
 * n entries of a vIOMMU event that has happened (IOD_SJ_MAP: the mappings added;
 * IOD_SJ_UNMAP: the ranges removed; value, if not 0, the event channel's sequence number of
 * the batch, which the session's event_seq already holds), or the session's new round count
 * (IOD_SJ_ROUNDS, value; no entries). Falls back to a snapshot when the journal cannot take
 * it.
 */
int iod_persist_events(struct iod_manager *m, struct iod_session *s,
		       enum iod_state_journal_type type, const struct iod_mapping *entries,
		       size_t n, uint64_t value);

/* Many changes in a row (an owner leaving with all its sessions): one snapshot at the end. */
void iod_persist_hold(struct iod_manager *m);
void iod_persist_release(struct iod_manager *m);

/* The daemon is exiting: with an active store, leave the kernel objects to it. */
void iod_persist_shutdown(struct iod_manager *m);

#endif
