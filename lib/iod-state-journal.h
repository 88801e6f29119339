/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The state journal: the changes made to the daemon's state (iod-state.h) since its last
 * full snapshot, as small binary records appended in place to one memfd. A vIOMMU event is
 * made durable by appending one record, whose size depends on the event only, never on how
 * many mappings or sessions exist; now and then the daemon writes a full snapshot and resets
 * the journal to it (compaction).
 *
 * memfd layout (native endianness and native alignment: it never leaves the machine; the
 * size is fixed and sealed):
 *
 *   header  (64 bytes)   magic "IODSJRN1", version, capacity, base, end, next_seq
 *   records (from 64)    each 8-byte aligned:
 *                          u32 type, u32 size (whole record, a multiple of 8)
 *                          u64 seq                (next_seq of the journal when appended)
 *                          u32 check              (CRC-32 of the record with check = 0)
 *                          u32 name_length        (the session name, 1..IOD_NAME_MAX bytes)
 *                          u64 count              (entries, or the value of a ROUNDS record)
 *                          name, padded with zeros to 8 bytes
 *                          u64 event_seq          (MAP, UNMAP with IOD_SJ_EVENT_SEQ in type)
 *                          entries: MAP {iova, gpa, length}, UNMAP {iova, length}; none else
 *
 * Replaying follows the daemon's rules: a MAP entry identical to a recorded mapping (a
 * client's retry) and an UNMAP range with nothing mapped in it change nothing; a MAP entry
 * that overlaps a different mapping does not apply.
 *
 * Commit rule: a record counts once "end" covers it. An append writes the record past end,
 * then stores the new end with one aligned 64-bit store, so a process killed at any point
 * leaves either the old journal or the new one; what lies past end (a torn record) is never
 * read. "base" names the snapshot generation the records apply to: a journal whose base is
 * older than the snapshot being restored was compacted into it already and is ignored.
 *
 * Everything read back is validated: header fields, record sizes against their counts (no
 * trailing bytes), the check, the sequence, session names, entries that do not apply (a Map
 * over a mapping, an Unmap of nothing); any of these makes the journal unusable, with a
 * reason.
 */
#ifndef IOD_STATE_JOURNAL_H
#define IOD_STATE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iod-iova-map.h"
#include "iod-state.h"
#include "iod-util.h"

#define IOD_STATE_JOURNAL_MAGIC UINT64_C(0x314e524a53444f49) /* "IODSJRN1" */
#define IOD_STATE_JOURNAL_VERSION 1
#define IOD_STATE_JOURNAL_HEADER 64
/* Entries of one record (a batch larger than that is split into several records). */
#define IOD_STATE_JOURNAL_MAX_ENTRIES 65536

enum iod_state_journal_type {
	IOD_SJ_MAP = 1, /* count mappings {iova, gpa, length} added to the session */
	IOD_SJ_UNMAP = 2, /* count ranges {iova, length}: every mapping inside is removed */
	/* the session's "rounds" is now count, and that round is pending ("pending_round"):
	 * the daemon appends one for each Harvest that starts a round, and saves the whole
	 * state at an Acknowledge */
	IOD_SJ_ROUNDS = 3,
};
/*
 * In a MAP or UNMAP record's type: the record is a batch of the session's event channel
 * (iod-event-channel.h) and carries its sequence number, which becomes the session's
 * event_seq. Each such number is greater than the session's event_seq before it.
 */
#define IOD_SJ_EVENT_SEQ 0x10000u

struct iod_state_journal;

/* A new journal in a fresh memfd of capacity bytes of records, based on generation base. */
int iod_state_journal_new(uint64_t capacity, uint64_t base, struct iod_state_journal **ret);
/*
 * Take a journal memfd of an earlier instance (dup'ed: the caller keeps its fd). -EBADMSG
 * with *ret_reason (may be NULL, malloc'ed) when the header is not a journal's.
 */
int iod_state_journal_open_fd(int fd, struct iod_state_journal **ret, char **ret_reason);
struct iod_state_journal *iod_state_journal_free(struct iod_state_journal *j);
IOD_DEFINE_FREEP(struct iod_state_journal, iod_state_journal_free)

int iod_state_journal_fd(const struct iod_state_journal *j);
uint64_t iod_state_journal_base(const struct iod_state_journal *j);
/* Bytes of committed records. */
uint64_t iod_state_journal_used(const struct iod_state_journal *j);
uint64_t iod_state_journal_capacity(const struct iod_state_journal *j);

/* Bytes a record of this type with n entries for session takes. */
uint64_t iod_state_journal_record_size(enum iod_state_journal_type type, const char *session,
				       size_t n);

/*
 * Append one committed record. MAP takes entries[0..n) as {iova, gpa, length}; UNMAP takes
 * {iova, length} of each (gpa ignored); for both a value other than 0 is the event channel's
 * sequence number of the batch (IOD_SJ_EVENT_SEQ). ROUNDS takes value and no entries. -ENOSPC when the
 * record does not fit (nothing is written: compact, then append again), -EINVAL for a bad
 * name, type or count.
 */
int iod_state_journal_append(struct iod_state_journal *j, enum iod_state_journal_type type,
			     const char *session, const struct iod_mapping *entries, size_t n,
			     uint64_t value);

/*
 * For tests: what a process killed in the middle of an append leaves behind: the first
 * half of the record written past end, and end not moved.
 */
int iod_state_journal_append_torn(struct iod_state_journal *j, enum iod_state_journal_type type,
				  const char *session, const struct iod_mapping *entries, size_t n,
				  uint64_t value);

/* A snapshot of generation base now holds everything: forget the records. */
void iod_state_journal_reset(struct iod_state_journal *j, uint64_t base);

/*
 * Apply the committed records to st, a state read from the snapshot of the journal's base
 * generation. *ret_records (may be NULL) gets how many were applied. Returns 0 (also when
 * the journal is older than st: nothing to apply), -ESTALE when the journal is based on a
 * newer generation than st (its snapshot is missing), -EBADMSG when a record is damaged or
 * does not apply; on error st is unchanged and *ret_reason (may be NULL) says why. The
 * result is validated with iod_state_validate().
 */
int iod_state_journal_apply(const struct iod_state_journal *j, struct iod_state *st,
			    uint64_t *ret_records, char **ret_reason);

#endif
