/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the files of a session share and nobody else may use. One session is written in six
 * files, each calling only those listed before it:
 *
 *   session.c          lifecycle, owner, the kernel context, adopt, failure, state strings
 *   session-devlog.c   device DMA logging: the ranges a logging device is started over
 *   session-harvest.c  Start/Stop, harvest (through the journal), acknowledge, dirty ranges,
 *                      the dirty rate's samples (rate.h below it)
 *   session-memory.c   guest memory regions, devices and their HWPTs
 *   session-viommu.c   Map/Unmap and their batches, the harvest before an unmap
 *   session-state.c    to and from struct iod_state (restart survival)
 *
 * Below them: the context the daemon's sessions share (context.c) and the sending of signals
 * (bus-signals.c); never the manager or a *-dbus.c file. The public API is session.h;
 * session-dbus.c puts it on the bus.
 */
#ifndef IOD_SESSION_INTERNAL_H
#define IOD_SESSION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "session.h"

/* session.c */

/* *ret = "<session>/<suffix>": the fd-store name of one of the session's fds. */
int iod_session_fdname_new(char **ret, const struct iod_session *s, const char *format, ...)
	_printf_(3, 4);
/* Owner mode: open the iommufd and allocate the IOAS, at the first need (idempotent). */
int iod_session_ensure_kernel(struct iod_session *s, struct iod_reason *why);
/*
 * The error in why is about entry i of a batch: it becomes why's entry, and with array set
 * its text starts with "array[i]: ". Returns err.
 */
int iod_session_reason_at(struct iod_reason *why, int err, const char *array, size_t i);
/* SessionFailed with the reason of the failure, if the session failed. */
int iod_session_check_failed(struct iod_session *s, struct iod_reason *why);
/* Unmap and close a region's memory; the struct itself stays. */
void iod_region_release(struct iod_region *g);
struct iod_session_hwpt *iod_session_hwpt_find(struct iod_session *s, uint32_t id);
void iod_session_hwpt_remove(struct iod_session *s, struct iod_session_hwpt *h);
/* A HWPT that cannot track but carries DMA: its mapped ranges count as always dirty. */
bool iod_session_hwpt_is_fallback(const struct iod_session *s, const struct iod_session_hwpt *h);
bool iod_session_has_fallback(const struct iod_session *s);
/*
 * Adopt mode: forget the fallback HWPTs the client destroyed (IOMMU_DESTROY succeeds only
 * once no device is attached, so no DMA goes through them any more). find flags them (and
 * returns how many); the caller then marks the mapped ranges, so that the mark comes after
 * the destroy and holds all their devices wrote; drop removes the flagged ones (returns how
 * many went).
 */
size_t iod_session_find_gone_fallbacks(struct iod_session *s);
size_t iod_session_drop_gone_fallbacks(struct iod_session *s);

/* session-devlog.c */

/*
 * Start d's DMA logging over the session's mapped IOVA and the maps not recorded[] yet
 * (maps may be NULL), merged to what d takes (nothing is started while nothing is to be
 * logged). With keep_old, restart it over those ranges and the ones it logs now: the caller
 * has read its log out first, and must mark what it may have written between that read and
 * the restart (iod_session_devlog_prepare_map()). Any log the device runs is stopped first.
 * NotDirtyCapable if the device logs at another page size than the session's.
 */
int iod_session_devlog_start(struct iod_session *s, struct iod_device *d, bool keep_old,
			     const struct iod_mapping *maps, const bool *recorded, size_t n_maps,
			     struct iod_reason *why);
/* Stop d's DMA logging (what it logged is gone: read it first). */
void iod_session_devlog_stop(struct iod_session *s, struct iod_device *d);
/* d's log cannot serve (why says so): stop it and make d a fallback device. The caller marks
 * what d may have written unseen. */
void iod_session_devlog_degrade(struct iod_session *s, struct iod_device *d, const char *why);
/* d logs all of [iova, iova + length). */
bool iod_session_devlog_covers(const struct iod_device *d, uint64_t iova, uint64_t length);

/* session-harvest.c */

/* Harvest [iova, iova + length) of every tracking HWPT (of only that one if set; the whole
 * map with length 0) into the accumulating plane of the log. */
int iod_session_harvest_hwpts(struct iod_session *s, const struct iod_session_hwpt *only,
			      uint64_t iova, uint64_t length, unsigned flags);
/* Read and clear d's DMA log over every mapped area into the accumulating plane. */
int iod_session_harvest_device(struct iod_session *s, const struct iod_device *d);
/* Read and clear every logging device's DMA log over [iova, iova + length). */
int iod_session_harvest_devices(struct iod_session *s, uint64_t iova, uint64_t length);
/* Mark the mapped areas (inside [iova, +length), or all with length 0) dirty. */
int iod_session_mark_mapped(struct iod_session *s, uint64_t iova, uint64_t length);
/* A harvest failed with r: fail the session, saying what the kernel refused. */
void iod_session_fail_harvest(struct iod_session *s, const char *when, int r);

/* session-memory.c */

/*
 * Device DMA logging follows the mappings. Before maps[i] (those not recorded[i]) enter the
 * IOAS, every logging device whose ranges do not cover them is read out, restarted over its
 * old ranges, the mappings and the new ones, and the mapped parts of its old ranges are
 * marked dirty (what it wrote between the read and the restart was seen by nobody). So the
 * new mappings are logged before any DMA can reach them. A failure fails the session.
 */
void iod_session_devlog_prepare_map(struct iod_session *s, const struct iod_mapping *maps,
				    const bool *recorded, size_t n);

/* The region that holds all of [gpa, gpa + length), or NULL. */
struct iod_region *iod_session_region_containing(struct iod_session *s, uint64_t gpa,
						 uint64_t length);

#endif
