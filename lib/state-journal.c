/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The state journal (iod-state-journal.h): appends in place, and the validated replay. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "iod-state-journal.h"
#include "iod-util.h"

struct header {
	uint64_t magic;
	uint32_t version;
	uint32_t header_size;
	uint64_t capacity; /* bytes of records the file has room for */
	uint64_t base; /* snapshot generation the records apply to */
	uint64_t end; /* offset just past the last committed record */
	uint64_t reserved[3];
};

struct record {
	uint32_t type;
	uint32_t size;
	uint64_t seq;
	uint32_t check;
	uint32_t name_length;
	uint64_t count;
	/* name, padded to 8; entries */
};

_Static_assert(sizeof(struct header) == IOD_STATE_JOURNAL_HEADER, "journal header size");
_Static_assert(sizeof(struct record) == 32, "journal record header size");

struct iod_state_journal {
	int fd;
	struct header *h; /* MAP_SHARED over the whole file */
	size_t size; /* of the file and the mapping */
	uint64_t next_seq; /* of the next record appended */
};

static uint64_t align8(uint64_t v)
{
	return (v + 7) & ~UINT64_C(7);
}

/* CRC-32 (IEEE 802.3, reflected); records are small, a table buys nothing here. */
static uint32_t crc32_update(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (UINT32_C(0xedb88320) & (0u - (crc & 1)));
	}
	return ~crc;
}

static size_t entry_words(uint32_t type)
{
	type &= ~IOD_SJ_EVENT_SEQ;
	return type == IOD_SJ_MAP ? 3 : type == IOD_SJ_UNMAP ? 2 : 0;
}

/* Bytes between the name and the entries: the event sequence number, if the record has one. */
static size_t seq_bytes(uint32_t type)
{
	return type & IOD_SJ_EVENT_SEQ ? 8 : 0;
}

uint64_t iod_state_journal_record_size(enum iod_state_journal_type type, const char *session,
				       size_t n)
{
	size_t name_len = session ? strlen(session) : 0;

	return sizeof(struct record) + align8(name_len) + seq_bytes(type) +
	       (uint64_t)n * entry_words(type) * 8;
}

static int map_file(int fd, size_t size, struct header **ret)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	*ret = p;
	return 0;
}

int iod_state_journal_new(uint64_t capacity, uint64_t base, struct iod_state_journal **ret)
{
	_cleanup_close_ int fd = -EBADF;
	struct iod_state_journal *j;
	uint64_t size;
	int r;

	if (capacity == 0 || capacity > (UINT64_C(1) << 30) || !iod_is_aligned(capacity, 8))
		return -EINVAL;
	size = IOD_STATE_JOURNAL_HEADER + capacity;
	fd = memfd_create("iodirtyd-state-journal", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		return -errno;
	/* The size never changes: a mapping of the whole file stays valid. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return -errno;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	r = map_file(fd, size, &j->h);
	if (r < 0) {
		free(j);
		return r;
	}
	j->fd = TAKE_FD(fd);
	j->size = size;
	j->next_seq = 1;
	*j->h = (struct header){
		.magic = IOD_STATE_JOURNAL_MAGIC,
		.version = IOD_STATE_JOURNAL_VERSION,
		.header_size = IOD_STATE_JOURNAL_HEADER,
		.capacity = capacity,
		.base = base,
		.end = IOD_STATE_JOURNAL_HEADER,
	};
	*ret = j;
	return 0;
}

_printf_(3, 4) static int reasonf(char **ret_reason, int err, const char *format, ...)
{
	va_list ap;

	if (ret_reason) {
		free(*ret_reason);
		*ret_reason = NULL;
		va_start(ap, format);
		if (vasprintf(ret_reason, format, ap) < 0)
			*ret_reason = NULL;
		va_end(ap);
	}
	return err;
}

int iod_state_journal_open_fd(int fd, struct iod_state_journal **ret, char **ret_reason)
{
	_cleanup_close_ int own = -EBADF;
	struct iod_state_journal *j;
	struct header h;
	struct stat st;
	ssize_t k;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < IOD_STATE_JOURNAL_HEADER)
		return reasonf(ret_reason, -EBADMSG, "not a journal: %s of %lld bytes",
			       S_ISREG(st.st_mode) ? "a file" : "not a regular file",
			       (long long)st.st_size);
	k = pread(fd, &h, sizeof(h), 0);
	if (k < 0)
		return -errno;
	if ((size_t)k != sizeof(h) || h.magic != IOD_STATE_JOURNAL_MAGIC)
		return reasonf(ret_reason, -EBADMSG, "not a journal: bad magic");
	if (h.version != IOD_STATE_JOURNAL_VERSION || h.header_size != IOD_STATE_JOURNAL_HEADER)
		return reasonf(ret_reason, -EBADMSG,
			       "journal version %u (header %u bytes) is not version %d", h.version,
			       h.header_size, IOD_STATE_JOURNAL_VERSION);
	if (h.capacity == 0 || h.capacity > (UINT64_C(1) << 30) || !iod_is_aligned(h.capacity, 8) ||
	    (uint64_t)st.st_size != IOD_STATE_JOURNAL_HEADER + h.capacity)
		return reasonf(ret_reason, -EBADMSG,
			       "journal capacity %llu does not match its size of %lld bytes",
			       (unsigned long long)h.capacity, (long long)st.st_size);
	if (h.end < IOD_STATE_JOURNAL_HEADER || h.end > (uint64_t)st.st_size ||
	    !iod_is_aligned(h.end, 8))
		return reasonf(ret_reason, -EBADMSG, "journal end %llu is outside its records",
			       (unsigned long long)h.end);
	for (size_t i = 0; i < ELEMENTSOF(h.reserved); i++)
		if (h.reserved[i])
			return reasonf(ret_reason, -EBADMSG, "journal header: reserved field set");

	own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (own < 0)
		return -errno;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	r = map_file(own, (size_t)st.st_size, &j->h);
	if (r < 0) {
		free(j);
		return r;
	}
	j->fd = TAKE_FD(own);
	j->size = (size_t)st.st_size;
	j->next_seq = 0; /* unknown until the records were read: appends refused */
	*ret = j;
	return 0;
}

struct iod_state_journal *iod_state_journal_free(struct iod_state_journal *j)
{
	if (!j)
		return NULL;
	if (j->h)
		munmap(j->h, j->size);
	iod_close(j->fd);
	free(j);
	return NULL;
}

int iod_state_journal_fd(const struct iod_state_journal *j)
{
	return j->fd;
}

uint64_t iod_state_journal_base(const struct iod_state_journal *j)
{
	return j->h->base;
}

uint64_t iod_state_journal_used(const struct iod_state_journal *j)
{
	return __atomic_load_n(&j->h->end, __ATOMIC_ACQUIRE) - IOD_STATE_JOURNAL_HEADER;
}

uint64_t iod_state_journal_capacity(const struct iod_state_journal *j)
{
	return j->h->capacity;
}

void iod_state_journal_reset(struct iod_state_journal *j, uint64_t base)
{
	/* Base first: a reader that sees the new base with the old end takes records of the
	 * old base for the new one only if both stores were seen out of order, which a
	 * single process's stores to shared memory never are (x86 TSO, and release here). */
	__atomic_store_n(&j->h->end, IOD_STATE_JOURNAL_HEADER, __ATOMIC_RELEASE);
	__atomic_store_n(&j->h->base, base, __ATOMIC_RELEASE);
	j->next_seq = 1;
}

/* Write the record at end; with commit, move end past it. */
static int append(struct iod_state_journal *j, enum iod_state_journal_type type,
		  const char *session, const struct iod_mapping *entries, size_t n, uint64_t value,
		  bool commit)
{
	size_t name_len = session ? strlen(session) : 0, words = entry_words(type);
	uint64_t size, end = j->h->end;
	uint32_t rtype = type;
	struct record rec;
	uint8_t *p;

	if ((type != IOD_SJ_MAP && type != IOD_SJ_UNMAP && type != IOD_SJ_ROUNDS) ||
	    !iod_session_name_valid(session) || (type == IOD_SJ_ROUNDS && n > 0) ||
	    n > IOD_STATE_JOURNAL_MAX_ENTRIES || (words && n == 0))
		return -EINVAL;
	if (j->next_seq == 0)
		return -EROFS; /* opened from an earlier instance: reset it first */
	if (type != IOD_SJ_ROUNDS && value)
		rtype |= IOD_SJ_EVENT_SEQ;
	size = iod_state_journal_record_size(rtype, session, n);
	if (size > j->size - end)
		return -ENOSPC;

	rec = (struct record){
		.type = rtype,
		.size = (uint32_t)size,
		.seq = j->next_seq,
		.name_length = (uint32_t)name_len,
		.count = type == IOD_SJ_ROUNDS ? value : n,
	};
	p = (uint8_t *)j->h + end;
	memcpy(p + sizeof(rec), session, name_len);
	memset(p + sizeof(rec) + name_len, 0, align8(name_len) - name_len);
	{
		uint64_t *w = (uint64_t *)(p + sizeof(rec) + align8(name_len));

		if (rtype & IOD_SJ_EVENT_SEQ)
			*w++ = value;
		for (size_t i = 0; i < n; i++) {
			*w++ = entries[i].iova;
			if (type == IOD_SJ_MAP)
				*w++ = entries[i].gpa;
			*w++ = entries[i].length;
		}
	}
	memcpy(p, &rec, sizeof(rec));
	rec.check = crc32_update(0, p, size);
	memcpy(p + offsetof(struct record, check), &rec.check, sizeof(rec.check));
	if (!commit) {
		/* What a kill in the middle of the copy leaves: half of it, end unmoved. */
		memset(p + size / 2, 0, size - size / 2);
		return 0;
	}
	/* The commit point: one aligned store, after the record's bytes. */
	__atomic_store_n(&j->h->end, end + size, __ATOMIC_RELEASE);
	j->next_seq++;
	return 0;
}

int iod_state_journal_append(struct iod_state_journal *j, enum iod_state_journal_type type,
			     const char *session, const struct iod_mapping *entries, size_t n,
			     uint64_t value)
{
	return append(j, type, session, entries, n, value, true);
}

int iod_state_journal_append_torn(struct iod_state_journal *j, enum iod_state_journal_type type,
				  const char *session, const struct iod_mapping *entries, size_t n,
				  uint64_t value)
{
	return append(j, type, session, entries, n, value, false);
}

/* --- replay ----------------------------------------------------------------------------- */

struct replay {
	struct iod_state *st;
	struct iod_iova_map **maps; /* per session, built when a record first names it */
	size_t *by_name; /* session indexes sorted by name */
};

static int by_name_cmp(const void *a, const void *b, void *userdata)
{
	const struct iod_state *st = userdata;

	return strcmp(st->sessions[*(const size_t *)a].name, st->sessions[*(const size_t *)b].name);
}

static ssize_t find_session(const struct replay *rp, const char *name)
{
	size_t lo = 0, hi = rp->st->n_sessions;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2, i = rp->by_name[mid];
		int c = strcmp(name, rp->st->sessions[i].name);

		if (c == 0)
			return (ssize_t)i;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

static int session_map(struct replay *rp, size_t i, struct iod_iova_map **ret)
{
	const struct iod_state_session *s = &rp->st->sessions[i];
	int r;

	if (!rp->maps[i]) {
		r = iod_iova_map_new(&rp->maps[i]);
		if (r < 0)
			return r;
		for (size_t k = 0; k < s->n_mappings; k++) {
			r = iod_iova_map_insert(rp->maps[i], s->mappings[k].iova,
						s->mappings[k].gpa, s->mappings[k].length);
			if (r < 0)
				return r;
		}
	}
	*ret = rp->maps[i];
	return 0;
}

static int apply_record(struct replay *rp, const struct record *rec, const uint8_t *p, uint64_t off,
			char **ret_reason)
{
	char name[IOD_NAME_MAX + 1];
	uint32_t type = rec->type & ~IOD_SJ_EVENT_SEQ;
	const uint64_t *w;
	struct iod_iova_map *map;
	ssize_t si;
	size_t words = entry_words(rec->type);
	int r;

	memcpy(name, p + sizeof(*rec), rec->name_length);
	name[rec->name_length] = '\0';
	si = find_session(rp, name);
	if (si < 0)
		return reasonf(ret_reason, -EBADMSG,
			       "journal record %llu at %llu: no session \"%s\" in the state",
			       (unsigned long long)rec->seq, (unsigned long long)off, name);
	if (type == IOD_SJ_ROUNDS) {
		/* A new round is the client's until it acknowledges it, which saves it all. */
		rp->st->sessions[si].rounds = rec->count;
		rp->st->sessions[si].pending_round = rec->count;
		return 0;
	}
	r = session_map(rp, (size_t)si, &map);
	if (r < 0)
		return reasonf(ret_reason, r == -ENOMEM ? r : -EBADMSG,
			       "session \"%s\": its mappings do not form a map", name);
	w = (const uint64_t *)(p + sizeof(*rec) + align8(rec->name_length));
	if (rec->type & IOD_SJ_EVENT_SEQ) {
		/* The event channel's batches are applied in the order of their numbers. */
		if (*w <= rp->st->sessions[si].event_seq)
			return reasonf(ret_reason, -EBADMSG,
				       "journal record %llu (session \"%s\"): event sequence %llu "
				       "after %llu",
				       (unsigned long long)rec->seq, name, (unsigned long long)*w,
				       (unsigned long long)rp->st->sessions[si].event_seq);
		rp->st->sessions[si].event_seq = *w++;
	}
	for (uint64_t k = 0; k < rec->count; k++, w += words) {
		if (type == IOD_SJ_MAP) {
			struct iod_mapping have;

			r = iod_iova_map_insert(map, w[0], w[1], w[2]);
			/* A Map identical to a recorded mapping (a client's retry) changed nothing:
			 * the daemon accepts it, and so does its replay. */
			if (r == -EEXIST && iod_iova_map_lookup(map, w[0], &have) == 0 &&
			    have.iova == w[0] && have.gpa == w[1] && have.length == w[2])
				r = 0;
		} else
			r = iod_iova_map_remove(map, w[0], w[1], NULL);
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			return reasonf(ret_reason, -EBADMSG,
				       "journal record %llu (%s of session \"%s\"), entry %llu "
				       "[0x%llx, +0x%llx) does not apply: %s",
				       (unsigned long long)rec->seq,
				       type == IOD_SJ_MAP ? "map" : "unmap", name,
				       (unsigned long long)k, (unsigned long long)w[0],
				       (unsigned long long)w[words - 1], strerror(-r));
	}
	return 0;
}

/* Check one record's frame: size, type, counts, name, check. */
static int check_record(const struct iod_state_journal *j, uint64_t off, uint64_t end, uint64_t seq,
			struct record *rec, char **ret_reason)
{
	const uint8_t *p = (const uint8_t *)j->h + off;
	uint32_t check, type;
	uint64_t want;

	if (end - off < sizeof(*rec))
		return reasonf(ret_reason, -EBADMSG, "journal: %llu trailing bytes at %llu",
			       (unsigned long long)(end - off), (unsigned long long)off);
	memcpy(rec, p, sizeof(*rec));
	type = rec->type & ~IOD_SJ_EVENT_SEQ;
	if ((type != IOD_SJ_MAP && type != IOD_SJ_UNMAP && type != IOD_SJ_ROUNDS) ||
	    (type == IOD_SJ_ROUNDS && (rec->type & IOD_SJ_EVENT_SEQ)))
		return reasonf(ret_reason, -EBADMSG, "journal record at %llu: unknown type %u",
			       (unsigned long long)off, rec->type);
	if (rec->size < sizeof(*rec) || !iod_is_aligned(rec->size, 8) || rec->size > end - off)
		return reasonf(ret_reason, -EBADMSG,
			       "journal record at %llu: size %u is outside the journal",
			       (unsigned long long)off, rec->size);
	if (rec->name_length == 0 || rec->name_length > IOD_NAME_MAX ||
	    (type != IOD_SJ_ROUNDS &&
	     (rec->count == 0 || rec->count > IOD_STATE_JOURNAL_MAX_ENTRIES)))
		return reasonf(ret_reason, -EBADMSG,
			       "journal record at %llu: name length %u or count %llu out of range",
			       (unsigned long long)off, rec->name_length,
			       (unsigned long long)rec->count);
	want = sizeof(*rec) + align8(rec->name_length) + seq_bytes(rec->type) +
	       (type == IOD_SJ_ROUNDS ? 0 : rec->count * entry_words(rec->type) * 8);
	if (want != rec->size)
		return reasonf(ret_reason, -EBADMSG,
			       "journal record at %llu: %u bytes for %llu entries (want %llu)",
			       (unsigned long long)off, rec->size, (unsigned long long)rec->count,
			       (unsigned long long)want);
	/* The check is computed with its own field zero. */
	check = crc32_update(0, p, offsetof(struct record, check));
	check = crc32_update(check, &(uint32_t){0}, sizeof(rec->check));
	check = crc32_update(check, p + offsetof(struct record, check) + sizeof(rec->check),
			     rec->size - offsetof(struct record, check) - sizeof(rec->check));
	if (check != rec->check)
		return reasonf(ret_reason, -EBADMSG, "journal record at %llu: damaged (check)",
			       (unsigned long long)off);
	if (rec->seq != seq)
		return reasonf(ret_reason, -EBADMSG,
			       "journal record at %llu: sequence %llu where %llu was due",
			       (unsigned long long)off, (unsigned long long)rec->seq,
			       (unsigned long long)seq);
	{
		char name[IOD_NAME_MAX + 1];

		memcpy(name, p + sizeof(*rec), rec->name_length);
		name[rec->name_length] = '\0';
		for (size_t k = rec->name_length; k < align8(rec->name_length); k++)
			if (p[sizeof(*rec) + k])
				return reasonf(ret_reason, -EBADMSG,
					       "journal record at %llu: name padding not zero",
					       (unsigned long long)off);
		if (!iod_session_name_valid(name))
			return reasonf(ret_reason, -EBADMSG,
				       "journal record at %llu: not a session name",
				       (unsigned long long)off);
	}
	return 0;
}

static void replay_done(struct replay *rp)
{
	for (size_t i = 0; rp->maps && i < rp->st->n_sessions; i++)
		iod_iova_map_free(rp->maps[i]);
	free(rp->maps);
	free(rp->by_name);
}

/* A session's map as a new mappings array. */
static int map_to_array(const struct iod_iova_map *map, struct iod_mapping **ret, size_t *ret_n)
{
	size_t n = iod_iova_map_count(map), k = 0;
	struct iod_mapping *v = calloc(n ? n : 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (const struct iod_mapping *e = iod_iova_map_first(map); e;
	     e = iod_iova_map_next(map, e))
		v[k++] = *e;
	*ret = v;
	*ret_n = n;
	return 0;
}

static void swap_mappings(struct iod_state_session *s, struct iod_mapping **v, size_t *n)
{
	struct iod_mapping *tv = s->mappings;
	size_t tn = s->n_mappings;

	s->mappings = *v;
	s->n_mappings = *n;
	*v = tv;
	*n = tn;
}

int iod_state_journal_apply(const struct iod_state_journal *j, struct iod_state *st,
			    uint64_t *ret_records, char **ret_reason)
{
	struct replay rp = {.st = st};
	uint64_t end = __atomic_load_n(&j->h->end, __ATOMIC_ACQUIRE), off, seq = 1;
	uint64_t *saved_rounds = NULL, *saved_pending = NULL, *saved_seq = NULL;
	struct iod_mapping **new_maps = NULL;
	size_t *new_n = NULL;
	int r = 0;

	if (j->h->base < st->generation) {
		if (ret_records)
			*ret_records = 0;
		return 0; /* compacted into the snapshot already */
	}
	if (j->h->base > st->generation)
		return reasonf(ret_reason, -ESTALE,
			       "the journal follows state generation %llu, the state is %llu",
			       (unsigned long long)j->h->base, (unsigned long long)st->generation);
	if (end < IOD_STATE_JOURNAL_HEADER || end > j->size || !iod_is_aligned(end, 8))
		return reasonf(ret_reason, -EBADMSG, "journal end %llu is outside its records",
			       (unsigned long long)end);

	rp.maps = calloc(st->n_sessions ? st->n_sessions : 1, sizeof(*rp.maps));
	rp.by_name = calloc(st->n_sessions ? st->n_sessions : 1, sizeof(*rp.by_name));
	saved_rounds = calloc(st->n_sessions ? st->n_sessions : 1, sizeof(*saved_rounds));
	saved_pending = calloc(st->n_sessions ? st->n_sessions : 1, sizeof(*saved_pending));
	saved_seq = calloc(st->n_sessions ? st->n_sessions : 1, sizeof(*saved_seq));
	if (!rp.maps || !rp.by_name || !saved_rounds || !saved_pending || !saved_seq) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < st->n_sessions; i++) {
		rp.by_name[i] = i;
		saved_rounds[i] = st->sessions[i].rounds;
		saved_pending[i] = st->sessions[i].pending_round;
		saved_seq[i] = st->sessions[i].event_seq;
	}
	qsort_r(rp.by_name, st->n_sessions, sizeof(*rp.by_name), by_name_cmp, st);

	for (off = IOD_STATE_JOURNAL_HEADER; off < end; seq++) {
		struct record rec;

		r = check_record(j, off, end, seq, &rec, ret_reason);
		if (r >= 0)
			r = apply_record(&rp, &rec, (const uint8_t *)j->h + off, off, ret_reason);
		if (r < 0)
			goto undo;
		off += rec.size;
	}
	/* The new arrays first (nothing of st changes if memory runs out), then swap them in,
	 * validate, and swap back if the result is not a valid state. */
	new_maps = calloc(st->n_sessions ? st->n_sessions : 1, sizeof(*new_maps));
	new_n = calloc(st->n_sessions ? st->n_sessions : 1, sizeof(*new_n));
	if (!new_maps || !new_n) {
		r = -ENOMEM;
		goto undo;
	}
	for (size_t i = 0; i < st->n_sessions; i++)
		if (rp.maps[i]) {
			r = map_to_array(rp.maps[i], &new_maps[i], &new_n[i]);
			if (r < 0)
				goto undo;
		}
	for (size_t i = 0; i < st->n_sessions; i++)
		if (rp.maps[i])
			swap_mappings(&st->sessions[i], &new_maps[i], &new_n[i]);
	r = iod_state_validate(st, ret_reason);
	if (r < 0) {
		for (size_t i = 0; i < st->n_sessions; i++)
			if (rp.maps[i])
				swap_mappings(&st->sessions[i], &new_maps[i], &new_n[i]);
		r = -EBADMSG;
		goto undo;
	}
	if (ret_records)
		*ret_records = seq - 1;
	goto out;
undo:
	for (size_t i = 0; i < st->n_sessions; i++) {
		st->sessions[i].rounds = saved_rounds[i];
		st->sessions[i].pending_round = saved_pending[i];
		st->sessions[i].event_seq = saved_seq[i];
	}
out:
	for (size_t i = 0; new_maps && i < st->n_sessions; i++)
		free(new_maps[i]);
	free(new_maps);
	free(new_n);
	free(saved_rounds);
	free(saved_pending);
	free(saved_seq);
	replay_done(&rp);
	return r;
}
