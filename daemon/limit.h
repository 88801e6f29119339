/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What a client may make iodirtyd hold: sessions, devices, guest memory regions, mappings,
 * dirty log bytes, ranges in one reply. Each limit is described once here: its name in the
 * configuration (iodirtyd.conf(5), --limit), its default and range, and the check that
 * refuses a request over it with LimitExceeded and a sentence naming the limit. The
 * configuration sets the limits; the session core and the D-Bus handlers call the checks.
 */
#ifndef IOD_LIMIT_H
#define IOD_LIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct iod_reason;

struct iod_limits {
	uint32_t sessions; /* sessions in the daemon */
	uint32_t sessions_per_user; /* sessions one non-root uid may own */
	uint32_t devices; /* devices per session (HWPTs of an adopted session) */
	uint32_t regions; /* guest memory regions per session */
	uint32_t mappings; /* IOVA mappings per session, and entries in one batch */
	uint64_t log_bytes; /* dirty log bitmap bytes (both planes) per session */
	uint64_t log_bytes_per_user; /* the same, summed over the sessions of a non-root uid */
	uint32_t ranges; /* ranges in one HarvestRanges reply */
};

/* The defaults. */
void iod_limits_init(struct iod_limits *l);

/* One limit as the configuration names it; NULL for an unknown name. */
struct iod_limit;
const struct iod_limit *iod_limit_find(const char *name);
/* Set limit d of l to v: -EINVAL, with *ret_reason (malloc'ed), when v is out of its range. */
int iod_limit_set(struct iod_limits *l, const struct iod_limit *d, uint64_t v, char **ret_reason);

/*
 * The checks: 0, or -ENOSPC with why filled (LimitExceeded). "session" is the name of the
 * session asked about, "uid" the uid a request counts against (root is exempt from the
 * per-user limits).
 */

/* One more session, with n_sessions in the daemon and n_of_uid owned by uid. */
int iod_limits_check_sessions(const struct iod_limits *l, size_t n_sessions, uid_t uid,
			      unsigned n_of_uid, struct iod_reason *why);
/* An adopted session naming n HWPTs (limit "devices"). */
int iod_limits_check_hwpts(const struct iod_limits *l, size_t n, struct iod_reason *why);
/* One more device for a session with n_devices. */
int iod_limits_check_devices(const struct iod_limits *l, const char *session, size_t n_devices,
			     struct iod_reason *why);
/* One more guest memory region for a session with n_regions. */
int iod_limits_check_regions(const struct iod_limits *l, const char *session, size_t n_regions,
			     struct iod_reason *why);
/* bytes more of dirty log for a session that has have, of a uid whose sessions have
 * user_have. */
int iod_limits_check_log_bytes(const struct iod_limits *l, const char *session, uid_t uid,
			       uint64_t have, uint64_t user_have, uint64_t bytes,
			       struct iod_reason *why);
/* One more mapping (the region of a session without a vIOMMU) for a session with have. */
int iod_limits_check_one_mapping(const struct iod_limits *l, const char *session, size_t have,
				 struct iod_reason *why);
/* n more mappings (a Map batch) for a session with have. */
int iod_limits_check_mappings(const struct iod_limits *l, const char *session, size_t have,
			      size_t n, struct iod_reason *why);
/* A batch of n vIOMMU events (MapBatch, UnmapBatch; limit "mappings"). */
int iod_limits_check_batch(const struct iod_limits *l, const char *session, size_t n,
			   struct iod_reason *why);
/* A HarvestRanges reply of at most max_ranges ranges. */
int iod_limits_check_ranges(const struct iod_limits *l, uint32_t max_ranges,
			    struct iod_reason *why);

#endif
