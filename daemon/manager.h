/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The manager: iodirtyd's event loop and bus connection, and the owner of the context that
 * the sessions share (configuration, sessions; context.h) and of the fd store.
 */
#ifndef IOD_MANAGER_H
#define IOD_MANAGER_H

#include <stdbool.h>
#include <sys/types.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "context.h"
#include "iodirty.h"

struct iod_session;
struct iod_device;
struct iod_fdstore;
struct iod_persist;

struct iod_manager {
	struct iod_context ctx; /* what the sessions see: configuration, sessions, bus */
	sd_event *event;
	struct iod_fdstore *fdstore; /* systemd's fd store (fdstore.c) */
	struct iod_persist *persist; /* what goes into it (persist.c) */
	/* Instances before this one that handed their state on through the fd store: the
	 * restored state's count + 1 (persisted; 0 when the store held no state). */
	uint64_t restarts;
	bool ready;
};

/* The manager that owns context c (every context of iodirtyd is a manager's; a session's
 * s->ctx, say). For the files above the sessions: the session core never asks. */
static inline struct iod_manager *iod_manager_of(struct iod_context *c)
{
	return container_of(c, struct iod_manager, ctx);
}

/* Takes over config (its strings are moved). */
int iod_manager_new(struct iod_config *config, struct iod_manager **ret);
struct iod_manager *iod_manager_free(struct iod_manager *m);
IOD_DEFINE_FREEP(struct iod_manager, iod_manager_free)

/* Connect (system bus, user bus, or address) and attach the bus to the event loop. */
int iod_manager_connect(struct iod_manager *m, const char *address, bool user);
/* Ask for the bus name (after the restore: nobody can call before). */
int iod_manager_request_name(struct iod_manager *m);
/* Run until SIGTERM/SIGINT. */
int iod_manager_run(struct iod_manager *m);

struct iod_session *iod_manager_find_session(struct iod_manager *m, const char *name);
struct iod_session *iod_manager_find_session_by_path(struct iod_manager *m, const char *path);
struct iod_device *iod_manager_find_device_by_path(struct iod_manager *m, const char *path);
unsigned iod_manager_sessions_of(struct iod_manager *m, uid_t uid);

/* Unlink and free the session; the caller announces it (SessionRemoved) and saves. */
void iod_manager_destroy_session(struct iod_manager *m, struct iod_session *s);

/* After a restore: say which limits the restored sessions exceed (none is dropped). */
void iod_manager_check_restored_limits(struct iod_manager *m);

/* The live sessions as persistent state. */
int iod_manager_to_state(struct iod_manager *m, struct iod_state **ret);

/* Is /dev/iommu there; does its kernel know the dirty tracking ioctls. */
bool iod_manager_iommufd_available(struct iod_manager *m);
bool iod_manager_dirty_tracking_supported(struct iod_manager *m);

#endif
