/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The GPA dirty log of one VM (session): one bitmap per guest memory region at the log's
 * page size (default 4 KiB), shared by all devices of the VM.
 *
 * The log lives in a memfd so that it can be handed to a client (fd passing) and kept in
 * systemd's fd store across a daemon restart. The memfd holds two planes per region:
 *  - the *accumulating* plane, into which harvests merge translated bitmaps;
 *  - the *round* plane: what the current, not yet acknowledged round delivers.
 * iod_log_snapshot() ORs the accumulating plane into the round plane and clears the
 * accumulating plane; iod_log_ack() clears the round plane. A round that is never
 * acknowledged therefore keeps growing and loses nothing.
 *
 * memfd layout (all little-endian, offsets in bytes, every bitmap 8-byte aligned):
 *   struct iod_log_header                     at 0
 *   struct iod_log_region[max_regions]        at header.regions_offset
 *   bitmaps                                   at each region's accum_offset / round_offset
 * The memfd grows (ftruncate) as regions are added; a region's offsets never move while it
 * exists. iod_log_open_fd() validates all of it (magic, version, sizes, overlaps, bounds)
 * before trusting it.
 */
#ifndef IOD_DIRTY_LOG_H
#define IOD_DIRTY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iod-bitmap.h"

#define IOD_LOG_MAGIC UINT64_C(0x31474f4c59524944) /* "DIRYLOG1" */
#define IOD_LOG_VERSION 1
#define IOD_LOG_MAX_REGIONS 256

struct iod_log_header {
	uint64_t magic;
	uint32_t version;
	uint32_t page_shift; /* log page size = 1 << page_shift, 12 by default */
	uint32_t max_regions; /* entries in the region table */
	uint32_t n_regions; /* entries in use (the first n_regions, sorted by gpa) */
	uint64_t regions_offset; /* offset of the region table */
	uint64_t size; /* bytes of the memfd in use */
	uint64_t rounds; /* snapshots taken */
	uint64_t flags; /* IOD_LOG_F_* */
};

/* The log missed dirty state (a failed pre-unmap harvest): no longer complete. */
#define IOD_LOG_F_INCOMPLETE (UINT64_C(1) << 0)

struct iod_log_region {
	uint64_t gpa; /* page aligned */
	uint64_t length; /* bytes, page aligned, > 0 */
	uint64_t accum_offset; /* accumulating plane */
	uint64_t round_offset; /* round plane */
};

struct iod_dirty_log;

/* A new empty log with pages of 1 << page_shift bytes (12..30). */
int iod_log_new(unsigned page_shift, struct iod_dirty_log **ret);
/*
 * Take over a memfd written by a log (after a restart). The fd is dup'ed; the caller keeps
 * its own. -EBADMSG for a memfd whose contents are not a valid log (with a debug message
 * saying why), -EPROTO for an unknown version.
 */
int iod_log_open_fd(int fd, struct iod_dirty_log **ret);
/*
 * A client's view of a log memfd it was handed (possibly open read-only): the same checks
 * as iod_log_open_fd(), mapped read-only, and the read functions below work on it; every
 * function that would change the log returns -EROFS (iod_log_set_flags() does nothing).
 * This is the one reader of the layout: clients use it rather than the structs.
 */
int iod_log_open_fd_ro(int fd, struct iod_dirty_log **ret);
struct iod_dirty_log *iod_log_free(struct iod_dirty_log *log);

/* The memfd (owned by the log; dup it to keep it). */
int iod_log_fd(const struct iod_dirty_log *log);
unsigned iod_log_page_shift(const struct iod_dirty_log *log);

/*
 * Add a guest memory region. -EINVAL: zero length or not page aligned; -EOVERFLOW: wraps;
 * -EEXIST: overlaps a region; -ENOSPC: IOD_LOG_MAX_REGIONS reached; -ENOMEM / -errno of
 * ftruncate/mmap. Unchanged on error.
 */
int iod_log_add_region(struct iod_dirty_log *log, uint64_t gpa, uint64_t length);
/* Remove the region starting at gpa (-ENOENT if none). Its dirty bits are dropped. */
int iod_log_remove_region(struct iod_dirty_log *log, uint64_t gpa);

size_t iod_log_region_count(const struct iod_dirty_log *log);
/* Region i (0 <= i < count, sorted by gpa); NULL past the end. */
const struct iod_log_region *iod_log_region(const struct iod_dirty_log *log, size_t i);
/* Total bytes of guest memory covered by regions. */
uint64_t iod_log_tracked_bytes(const struct iod_dirty_log *log);

/*
 * Mark [gpa, gpa + length) dirty in the accumulating plane (partial pages count whole).
 * The whole range must lie inside regions: -ERANGE otherwise, and nothing is marked.
 * -EINVAL: length 0; -EOVERFLOW: wraps.
 */
int iod_log_mark(struct iod_dirty_log *log, uint64_t gpa, uint64_t length);

/*
 * OR a bitmap into the accumulating plane. src has nbits bits of (1 << src_shift)-byte
 * pages starting at src_off (a bit offset into src); its first page is at guest address
 * gpa, which must be aligned to min(src page, log page). The covered GPA range must lie
 * inside regions (it may span several adjacent regions): -ERANGE otherwise, with nothing
 * merged. Pages of a different size are rescaled (a larger log page is dirty when any
 * smaller page in it is).
 */
int iod_log_merge(struct iod_dirty_log *log, uint64_t gpa, const uint64_t *src, uint64_t src_off,
		  uint64_t nbits, unsigned src_shift);

/*
 * Direct access for a reader that only sets bits (IOMMU_HWPT_GET_DIRTY_BITMAP writes into
 * the buffer it is given and never clears a bit): *ret points at the accumulating-plane word
 * holding the log page at gpa, so that nbits pages at the log's page size can be OR-ed in
 * place, with no copy and no merge. Because the plane lives in the log's memfd, bits written
 * there survive the writer's crash. Possible only when [gpa, gpa + (nbits << page_shift))
 * lies inside one region and gpa's page is the first bit of a word (its page index in the
 * region is a multiple of 64): -EXDEV otherwise, and the caller reads into a buffer and
 * uses iod_log_merge(). -EINVAL: nbits 0 or gpa not page aligned; -EOVERFLOW: wraps. The
 * pointer is valid until the next iod_log_add_region() or iod_log_remove_region(), and
 * may be written through only while no other call on the log runs (see the note on memory
 * below). The kernel pins, and so allocates, up to 512 pages of the bitmap from each bit it
 * sets (all of the bitmap before Linux 6.10), bits or not; the next iod_log_snapshot()
 * gives back those left without a bit.
 */
int iod_log_accum_direct(struct iod_dirty_log *log, uint64_t gpa, uint64_t nbits, uint64_t **ret);

/*
 * Start a round: round |= accumulating, accumulating = 0, rounds++. *ret_dirty_pages (may
 * be NULL) gets the number of set bits in the round plane afterwards.
 */
int iod_log_snapshot(struct iod_dirty_log *log, uint64_t *ret_dirty_pages);
/* The client has the round: clear the round plane. */
int iod_log_ack(struct iod_dirty_log *log);

/*
 * Memory: the memfd is shared memory, in which a page is allocated when it is first
 * touched, read through a mapping or written. The log touches only pages that hold bits:
 * snapshot, ack and the counts visit only the parts of the memfd holding data
 * (SEEK_DATA), merging writes only pages that get a bit, and snapshot and ack give back
 * (FALLOC_FL_PUNCH_HOLE) the pages of the plane they clear that they find without a bit;
 * the pages that held bits in the last round are cleared in place and kept. So a clean log
 * holds no page of its planes, however large its regions. A mapping, read-only or not,
 * sees a page that was given back as zeros. The log has one writer at a time: no bit may
 * be set through iod_log_accum_direct() while a snapshot or an ack runs.
 */

/* Read access to a region's planes (NULL for a bad index). Bits: length >> page_shift. */
const uint64_t *iod_log_accum_bitmap(const struct iod_dirty_log *log, size_t region);
const uint64_t *iod_log_round_bitmap(const struct iod_dirty_log *log, size_t region);

/*
 * Where a plane of region may hold set bits: *ret_first, *ret_end (bits, ret_first >= bit)
 * bound the first stretch at or after bit that lies in pages of the memfd that hold data.
 * All bits outside such stretches are clear. A reader walking a large plane through
 * iod_log_accum_bitmap() / iod_log_round_bitmap() should visit only these stretches:
 * reading any other page through the mapping allocates it. -ENODATA: no data from bit on;
 * -EINVAL: no such region or NULL out-parameters.
 */
int iod_log_next_data(const struct iod_dirty_log *log, size_t region, bool round, uint64_t bit,
		      uint64_t *ret_first, uint64_t *ret_end);

/*
 * The first run of dirty pages of region at or after bit, below nbits (bits): pages set in
 * the round plane, or with both in either plane. [*ret_start, *ret_end). Reads only pages
 * of the memfd that hold data. -ENODATA: no dirty page from bit on; -EINVAL: no such region.
 */
int iod_log_next_dirty(const struct iod_dirty_log *log, size_t region, bool both, uint64_t bit,
		       uint64_t nbits, uint64_t *ret_start, uint64_t *ret_end);

/* Count set bits of a plane over all regions. */
uint64_t iod_log_count_accum(const struct iod_dirty_log *log);
uint64_t iod_log_count_round(const struct iod_dirty_log *log);
/* Count pages set in either plane: what a snapshot now would report. */
uint64_t iod_log_count_union(const struct iod_dirty_log *log);

uint64_t iod_log_flags(const struct iod_dirty_log *log);
void iod_log_set_flags(struct iod_dirty_log *log, uint64_t flags);
uint64_t iod_log_rounds(const struct iod_dirty_log *log);

#endif
