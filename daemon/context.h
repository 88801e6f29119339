/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the sessions of one daemon share, below them: the configuration with its limits, how
 * the kernel answers a dirty read over a hole, the list of sessions, and the bus their
 * signals go out on. A session points at its context, never at the manager, which owns the
 * context (struct iod_manager embeds one). The context never looks into a session: it only
 * holds the list.
 */
#ifndef IOD_CONTEXT_H
#define IOD_CONTEXT_H

#include <stddef.h>

#include <systemd/sd-bus.h>

#include "config.h"
#include "iodirty.h"

struct iod_session;

struct iod_context {
	struct iod_config config;
	/* How the kernel answers a dirty read over unmapped IOVA: learnt from the first dirty
	 * capable HWPT of any session (iod_session_probe_holes()). */
	enum iod_hole_behavior holes;
	struct iod_session **sessions; /* oldest first */
	size_t n_sessions;
	sd_bus *bus; /* the manager's connection, NULL before it connects: no signals */
};

/* Takes over config (its strings are moved). */
void iod_context_init(struct iod_context *c, struct iod_config *config);
/* Free the list (not the sessions in it: their owner frees them first) and the configuration. */
void iod_context_clear(struct iod_context *c);

/* Append s to the list; unlink it (the session itself stays). */
int iod_context_add_session(struct iod_context *c, struct iod_session *s);
void iod_context_remove_session(struct iod_context *c, struct iod_session *s);

#endif
