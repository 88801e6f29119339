/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "iodirty.h"
#include "limit.h"

struct iod_limit {
	const char *name; /* in the configuration and on the command line (--limit) */
	size_t offset; /* in struct iod_limits */
	bool is64;
	uint64_t def, min, max;
};

#define LIMIT32(n, field, d, lo, hi)                                    \
	{                                                               \
		n, offsetof(struct iod_limits, field), false, d, lo, hi \
	}
#define LIMIT64(n, field, d, lo, hi)                                   \
	{                                                              \
		n, offsetof(struct iod_limits, field), true, d, lo, hi \
	}

/* What struct iod_limits says each is; the D-Bus properties Max* show them. */
static const struct iod_limit limit_table[] = {
	LIMIT32("sessions", sessions, 64, 1, 4096),
	LIMIT32("sessions_per_user", sessions_per_user, 16, 1, 4096),
	LIMIT32("devices", devices, 32, 1, 256),
	LIMIT32("regions", regions, 64, 1, IOD_LOG_MAX_REGIONS),
	LIMIT32("mappings", mappings, 65536, 1, 1u << 24),
	LIMIT64("log_bytes", log_bytes, UINT64_C(256) << 20, 4096, UINT64_C(1) << 36),
	LIMIT64("log_bytes_per_user", log_bytes_per_user, UINT64_C(1) << 30, 4096,
		UINT64_C(1) << 40),
	LIMIT32("ranges", ranges, 65536, 1, 1u << 20),
};

static void limit_store(struct iod_limits *l, const struct iod_limit *d, uint64_t v)
{
	char *p = (char *)l + d->offset;

	if (d->is64)
		*(uint64_t *)p = v;
	else
		*(uint32_t *)p = (uint32_t)v;
}

void iod_limits_init(struct iod_limits *l)
{
	*l = (struct iod_limits){};
	for (size_t i = 0; i < ELEMENTSOF(limit_table); i++)
		limit_store(l, &limit_table[i], limit_table[i].def);
}

const struct iod_limit *iod_limit_find(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(limit_table); i++)
		if (strcmp(limit_table[i].name, name) == 0)
			return &limit_table[i];
	return NULL;
}

int iod_limit_set(struct iod_limits *l, const struct iod_limit *d, uint64_t v, char **ret_reason)
{
	if (v < d->min || v > d->max) {
		char *reason = NULL;

		if (asprintf(&reason, "limit \"%s\" must be between %" PRIu64 " and %" PRIu64,
			     d->name, d->min, d->max) < 0)
			reason = NULL;
		if (ret_reason) {
			free(*ret_reason);
			*ret_reason = reason;
		} else {
			free(reason);
		}
		return -EINVAL;
	}
	limit_store(l, d, v);
	return 0;
}

/* --- checks ----------------------------------------------------------------------------- */

int iod_limits_check_sessions(const struct iod_limits *l, size_t n_sessions, uid_t uid,
			      unsigned n_of_uid, struct iod_reason *why)
{
	if (n_sessions >= l->sessions)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "There are already %zu sessions (limit \"sessions\")",
				   n_sessions);
	if (uid != 0 && n_of_uid >= l->sessions_per_user)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "uid %u already has %u sessions (limit \"sessions_per_user\")",
				   (unsigned)uid, n_of_uid);
	return 0;
}

int iod_limits_check_hwpts(const struct iod_limits *l, size_t n, struct iod_reason *why)
{
	if (n > l->devices)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "%zu HWPTs are more than the limit \"devices\" of %u", n,
				   l->devices);
	return 0;
}

int iod_limits_check_devices(const struct iod_limits *l, const char *session, size_t n_devices,
			     struct iod_reason *why)
{
	if (n_devices >= l->devices)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "Session %s already has %zu devices (limit \"devices\")",
				   session, n_devices);
	return 0;
}

int iod_limits_check_regions(const struct iod_limits *l, const char *session, size_t n_regions,
			     struct iod_reason *why)
{
	/* The log's own table bounds the limit too (the limit's range stops there). */
	if (n_regions >= l->regions || n_regions >= IOD_LOG_MAX_REGIONS)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "Session %s already has %zu memory regions (limit \"regions\")",
				   session, n_regions);
	return 0;
}

int iod_limits_check_log_bytes(const struct iod_limits *l, const char *session, uid_t uid,
			       uint64_t have, uint64_t user_have, uint64_t bytes,
			       struct iod_reason *why)
{
	if (bytes > l->log_bytes || have > l->log_bytes - bytes)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "The dirty log of session %s would grow to %" PRIu64
				   " bytes, over the limit \"log_bytes\" of %" PRIu64,
				   session, have + bytes, l->log_bytes);
	if (uid != 0 &&
	    (user_have > l->log_bytes_per_user || bytes > l->log_bytes_per_user - user_have))
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "The dirty logs of uid %u would grow to %" PRIu64
				   " bytes, over the limit \"log_bytes_per_user\" of %" PRIu64,
				   (unsigned)uid, user_have + bytes, l->log_bytes_per_user);
	return 0;
}

int iod_limits_check_one_mapping(const struct iod_limits *l, const char *session, size_t have,
				 struct iod_reason *why)
{
	if (have >= l->mappings)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "Session %s has %zu mappings (limit \"mappings\")", session,
				   have);
	return 0;
}

int iod_limits_check_mappings(const struct iod_limits *l, const char *session, size_t have,
			      size_t n, struct iod_reason *why)
{
	size_t limit = l->mappings;

	if (have <= limit && n <= limit - have)
		return 0;
	return iod_reasonf(
		why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
		"Session %s has %zu mappings, %zu more would be over the limit \"mappings\" of %zu",
		session, have, n, limit);
}

int iod_limits_check_batch(const struct iod_limits *l, const char *session, size_t n,
			   struct iod_reason *why)
{
	if (n > l->mappings)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "A batch of more than %" PRIu32
				   " entries is over the limit \"mappings\" of session %s",
				   l->mappings, session);
	return 0;
}

int iod_limits_check_ranges(const struct iod_limits *l, uint32_t max_ranges, struct iod_reason *why)
{
	if (max_ranges > l->ranges)
		return iod_reasonf(why, -ENOSPC, IOD_ERROR_LIMIT_EXCEEDED,
				   "Option \"max_ranges\" %" PRIu32
				   " is over the limit \"ranges\" of %" PRIu32,
				   max_ranges, l->ranges);
	return 0;
}
