/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The harvest journal of a session: the buffer a HWPT's dirty bits are read into, kept in a
 * memfd (stored in the fd store next to the dirty log) with a header saying where the bits
 * belong. IOMMU_HWPT_GET_DIRTY_BITMAP clears the bits it returns, so between that ioctl and
 * the merge into the log the only copy of those bits is this buffer; a daemon killed there
 * leaves them in the memfd, and the next instance merges them (iod_journal_replay). Merging
 * is an OR, so merging a chunk twice, or a chunk the kernel never wrote, loses nothing and
 * adds nothing.
 *
 * memfd layout (native endianness: it never leaves the machine):
 *   struct iod_journal_header   at 0
 *   bitmap                      at IOD_JOURNAL_BITS_OFFSET, capacity_bits bits
 */
#ifndef IOD_JOURNAL_H
#define IOD_JOURNAL_H

#include <stdint.h>

#include "iodirty.h"

#define IOD_JOURNAL_MAGIC UINT64_C(0x314c4e524a444f49) /* "IODJRNL1" */
#define IOD_JOURNAL_BITS_OFFSET 64

struct iod_journal_header {
	uint64_t magic;
	uint64_t capacity_bits;
	uint32_t pending; /* 1: the bitmap may hold bits that are not in the log yet */
	uint32_t shift; /* page size of the bitmap: 1 << shift */
	uint64_t gpa; /* guest address of the bitmap's first page */
	uint64_t nbits;
};

struct iod_journal;

/* A new journal whose buffer holds capacity_bits bits. */
int iod_journal_new(uint64_t capacity_bits, struct iod_journal **ret);
/* Take over a journal memfd of an earlier instance (dup'ed; the caller keeps its fd).
 * -EBADMSG when it is not a journal. */
int iod_journal_open_fd(int fd, struct iod_journal **ret);
struct iod_journal *iod_journal_free(struct iod_journal *j);
IOD_DEFINE_FREEP(struct iod_journal, iod_journal_free)

int iod_journal_fd(const struct iod_journal *j);
uint64_t iod_journal_capacity(const struct iod_journal *j);

/* Zero the buffer for nbits bits at gpa and mark it pending; returns the buffer. */
uint64_t *iod_journal_begin(struct iod_journal *j, uint64_t gpa, uint64_t nbits, unsigned shift);
/* The bits are in the log (or the session failed): nothing pending any more. */
void iod_journal_end(struct iod_journal *j);

/* Merge pending bits into log. 1 if something was pending, 0 if not, < 0 on error (the
 * journal stays pending). */
int iod_journal_replay(struct iod_journal *j, struct iod_dirty_log *log);

#endif
