/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The GPA dirty log of one VM. The memfd layout is described in iod-dirty-log.h.
 *
 * Space for the planes: every region gets one area, aligned to LOG_AREA_ALIGN, that holds
 * its accumulating plane followed directly by its round plane. A new area goes into the
 * lowest gap between existing areas that is large enough, else after the last one. The
 * memfd only ever grows (it is sealed against shrinking, so that nobody holding the fd can
 * pull pages out from under a mapping); the pages of a removed region are handed back with
 * FALLOC_FL_PUNCH_HOLE, and the header's size field says how many bytes are in use.
 *
 * Nothing keeps a pointer into the mapping across calls: the header, the region table and
 * the planes are found from the mapping's base and the offsets stored in the memfd, because
 * adding a region may move the mapping (mremap).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iod-dirty-log.h"
#include "iod-util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the log layout is little-endian");
_Static_assert(sizeof(struct iod_log_header) == 56, "header layout");
_Static_assert(sizeof(struct iod_log_region) == 32, "region layout");

#define LOG_PAGE_SHIFT_MIN 12
#define LOG_PAGE_SHIFT_MAX 30
#define LOG_REGIONS_OFFSET UINT64_C(64) /* where a new log puts its region table */
#define LOG_AREA_ALIGN UINT64_C(4096) /* alignment of each region's plane area */
#define LOG_KNOWN_FLAGS IOD_LOG_F_INCOMPLETE

struct iod_dirty_log {
	int fd;
	uint8_t *map;
	uint64_t map_size; /* bytes mapped; may run past the end of the file, never accessed */
	uint64_t *scratch; /* reused by iod_log_merge() when it rescales */
	uint64_t scratch_words;
};

IOD_DEFINE_FREEP(struct iod_dirty_log, iod_log_free)

static struct iod_log_header *log_header(const struct iod_dirty_log *log)
{
	return (struct iod_log_header *)log->map;
}

static struct iod_log_region *log_table(const struct iod_dirty_log *log)
{
	return (struct iod_log_region *)(log->map + log_header(log)->regions_offset);
}

static uint64_t *log_plane(const struct iod_dirty_log *log, uint64_t offset)
{
	return (uint64_t *)(log->map + offset);
}

static unsigned log_shift(const struct iod_dirty_log *log)
{
	return log_header(log)->page_shift;
}

static uint64_t table_end(uint64_t regions_offset, uint32_t max_regions)
{
	return regions_offset + (uint64_t)max_regions * sizeof(struct iod_log_region);
}

/* Round v up to a multiple of the power of two a; false if that overflows. */
static bool align_up(uint64_t v, uint64_t a, uint64_t *ret)
{
	uint64_t t;

	if (iod_add_overflow(v, a - 1, &t))
		return false;
	*ret = t & ~(a - 1);
	return true;
}

/* A byte range of the memfd and what it holds (for overlap checks and free space). */
enum extent_kind {
	EXTENT_HEADER,
	EXTENT_TABLE,
	EXTENT_ACCUM,
	EXTENT_ROUND,
};

struct extent {
	uint64_t start;
	uint64_t end;
	enum extent_kind kind;
	size_t region;
};

static int extent_compare(const void *a, const void *b)
{
	const struct extent *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

static const char *extent_name(enum extent_kind kind)
{
	switch (kind) {
	case EXTENT_HEADER:
		return "the header";
	case EXTENT_TABLE:
		return "the region table";
	case EXTENT_ACCUM:
		return "accumulating plane";
	case EXTENT_ROUND:
		return "round plane";
	}
	return "?";
}

/* The planes of all regions, sorted by offset; returns how many (2 per region). */
static size_t log_plane_extents(const struct iod_dirty_log *log, struct extent *ext)
{
	const struct iod_log_region *t = log_table(log);
	uint32_t n = log_header(log)->n_regions;
	unsigned shift = log_shift(log);
	size_t k = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t bytes = iod_bitmap_bytes(t[i].length >> shift);

		ext[k++] = (struct extent){t[i].accum_offset, t[i].accum_offset + bytes,
					   EXTENT_ACCUM, i};
		ext[k++] = (struct extent){t[i].round_offset, t[i].round_offset + bytes,
					   EXTENT_ROUND, i};
	}
	qsort(ext, k, sizeof(*ext), extent_compare);
	return k;
}

/* Bytes in use: the end of the region table or of the last plane, whichever is later. */
static uint64_t log_used_size(const struct iod_dirty_log *log)
{
	const struct iod_log_header *h = log_header(log);
	const struct iod_log_region *t = log_table(log);
	uint64_t end = table_end(h->regions_offset, h->max_regions);

	for (uint32_t i = 0; i < h->n_regions; i++) {
		uint64_t bytes = iod_bitmap_bytes(t[i].length >> h->page_shift);

		if (t[i].accum_offset + bytes > end)
			end = t[i].accum_offset + bytes;
		if (t[i].round_offset + bytes > end)
			end = t[i].round_offset + bytes;
	}
	return end;
}

/* Find room for an area of need bytes: the lowest aligned gap between planes that fits. */
static int log_find_area(const struct iod_dirty_log *log, uint64_t need, uint64_t *ret_offset)
{
	struct extent ext[2 * IOD_LOG_MAX_REGIONS];
	const struct iod_log_header *h = log_header(log);
	uint64_t cursor, candidate, end;
	size_t n;

	n = log_plane_extents(log, ext);
	cursor = table_end(h->regions_offset, h->max_regions);
	for (size_t i = 0; i < n; i++) {
		if (!align_up(cursor, LOG_AREA_ALIGN, &candidate))
			return -EFBIG;
		if (!iod_add_overflow(candidate, need, &end) && end <= ext[i].start) {
			*ret_offset = candidate;
			return 0;
		}
		if (ext[i].end > cursor)
			cursor = ext[i].end;
	}
	if (!align_up(cursor, LOG_AREA_ALIGN, &candidate) ||
	    iod_add_overflow(candidate, need, &end) || end > INT64_MAX)
		return -EFBIG;
	*ret_offset = candidate;
	return 0;
}

/*
 * Make bytes [0, end) of the memfd exist and be mapped. The mapping is grown first (it may
 * move), then the file; if growing the file fails the mapping is shrunk back, so the file
 * never grows for an area that could not be mapped.
 */
static int log_ensure_size(struct iod_dirty_log *log, uint64_t end)
{
	uint64_t old_map_size = log->map_size;
	struct stat st;
	int r = 0;

	if (end > INT64_MAX || end > SIZE_MAX)
		return -EFBIG;

	if (end > log->map_size) {
		void *p = mremap(log->map, log->map_size, end, MREMAP_MAYMOVE);

		if (p == MAP_FAILED)
			return -errno;
		log->map = p;
		log->map_size = end;
	}

	if (fstat(log->fd, &st) < 0)
		r = -errno;
	else if ((uint64_t)st.st_size < end && ftruncate(log->fd, (off_t)end) < 0)
		r = -errno;
	if (r < 0 && log->map_size != old_map_size &&
	    mremap(log->map, log->map_size, old_map_size, 0) != MAP_FAILED)
		log->map_size = old_map_size;
	return r;
}

/* Zero [offset, offset + length) of the memfd, giving whole pages back where possible. */
static void log_zero(struct iod_dirty_log *log, uint64_t offset, uint64_t length)
{
	if (length == 0)
		return;
	if (fallocate(log->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
		      (off_t)length) < 0)
		memset(log->map + offset, 0, length);
}

static void log_zero_region_planes(struct iod_dirty_log *log, const struct iod_log_region *r)
{
	uint64_t bytes = iod_bitmap_bytes(r->length >> log_shift(log));

	if (r->round_offset == r->accum_offset + bytes) {
		log_zero(log, r->accum_offset, 2 * bytes);
	} else {
		log_zero(log, r->accum_offset, bytes);
		log_zero(log, r->round_offset, bytes);
	}
}

static struct iod_dirty_log *log_alloc(void)
{
	struct iod_dirty_log *log = calloc(1, sizeof(*log));

	if (!log)
		return NULL;
	log->fd = -EBADF;
	log->map = MAP_FAILED;
	return log;
}

int iod_log_new(unsigned page_shift, struct iod_dirty_log **ret)
{
	_cleanup_(iod_log_freep) struct iod_dirty_log *log = NULL;
	struct iod_log_header *h;
	uint64_t used, file_size;

	if (!ret || page_shift < LOG_PAGE_SHIFT_MIN || page_shift > LOG_PAGE_SHIFT_MAX)
		return -EINVAL;

	log = log_alloc();
	if (!log)
		return -ENOMEM;

	log->fd = memfd_create("iodirty-log", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (log->fd < 0)
		return -errno;
	/*
	 * A memfd starts out mode 0777: anybody given a read-only fd of the log could reopen
	 * it read-write through /proc/<pid>/fd and rewrite the offsets its owner trusts.
	 */
	if (fchmod(log->fd, 0600) < 0)
		return -errno;

	used = table_end(LOG_REGIONS_OFFSET, IOD_LOG_MAX_REGIONS);
	if (!align_up(used, LOG_AREA_ALIGN, &file_size))
		return -EFBIG;
	if (ftruncate(log->fd, (off_t)file_size) < 0)
		return -errno;
	/* Whoever holds the fd may grow it, but never pull pages from under a mapping. */
	if (fcntl(log->fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
		return -errno;

	log->map = mmap(NULL, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, log->fd, 0);
	if (log->map == MAP_FAILED)
		return -errno;
	log->map_size = file_size;

	h = log_header(log);
	*h = (struct iod_log_header){
		.magic = IOD_LOG_MAGIC,
		.version = IOD_LOG_VERSION,
		.page_shift = page_shift,
		.max_regions = IOD_LOG_MAX_REGIONS,
		.n_regions = 0,
		.regions_offset = LOG_REGIONS_OFFSET,
		.size = used,
		.rounds = 0,
		.flags = 0,
	};

	*ret = TAKE_PTR(log);
	return 0;
}

/* Check the header read from a memfd of file_size bytes. */
static int log_validate_header(const struct iod_log_header *h, uint64_t file_size)
{
	uint64_t tend;

	if (h->magic != IOD_LOG_MAGIC) {
		iod_debug("dirty log: bad magic %#" PRIx64 ", not a dirty log", h->magic);
		return -EBADMSG;
	}
	if (h->version != IOD_LOG_VERSION) {
		iod_debug("dirty log: unknown version %" PRIu32 " (this is version %d)", h->version,
			  IOD_LOG_VERSION);
		return -EPROTO;
	}
	if (h->page_shift < LOG_PAGE_SHIFT_MIN || h->page_shift > LOG_PAGE_SHIFT_MAX) {
		iod_debug("dirty log: page shift %" PRIu32 " out of range %d..%d", h->page_shift,
			  LOG_PAGE_SHIFT_MIN, LOG_PAGE_SHIFT_MAX);
		return -EBADMSG;
	}
	if (h->max_regions != IOD_LOG_MAX_REGIONS) {
		iod_debug("dirty log: region table has %" PRIu32 " entries, expected %d",
			  h->max_regions, IOD_LOG_MAX_REGIONS);
		return -EBADMSG;
	}
	if (h->n_regions > h->max_regions) {
		iod_debug("dirty log: %" PRIu32 " regions in a table of %" PRIu32, h->n_regions,
			  h->max_regions);
		return -EBADMSG;
	}
	if (h->flags & ~LOG_KNOWN_FLAGS) {
		iod_debug("dirty log: unknown flags %#" PRIx64, h->flags & ~LOG_KNOWN_FLAGS);
		return -EBADMSG;
	}
	if (h->regions_offset < sizeof(*h) || !iod_is_aligned(h->regions_offset, 8) ||
	    h->regions_offset >
		    UINT64_MAX - (uint64_t)h->max_regions * sizeof(struct iod_log_region)) {
		iod_debug("dirty log: bad region table offset %" PRIu64, h->regions_offset);
		return -EBADMSG;
	}
	tend = table_end(h->regions_offset, h->max_regions);
	if (h->size > file_size) {
		iod_debug("dirty log: %" PRIu64 " bytes in use but the memfd has only %" PRIu64
			  " (truncated?)",
			  h->size, file_size);
		return -EBADMSG;
	}
	if (tend > h->size) {
		iod_debug("dirty log: region table [%" PRIu64 ", %" PRIu64
			  ") runs past the %" PRIu64 " bytes in use",
			  h->regions_offset, tend, h->size);
		return -EBADMSG;
	}
	return 0;
}

/* Check the region table and the planes of a mapped log whose header passed. */
static int log_validate_regions(const struct iod_dirty_log *log)
{
	struct extent ext[2 * IOD_LOG_MAX_REGIONS + 2];
	const struct iod_log_header *h = log_header(log);
	const struct iod_log_region *t = log_table(log);
	uint64_t page = UINT64_C(1) << h->page_shift;
	size_t k = 0;

	ext[k++] = (struct extent){0, sizeof(*h), EXTENT_HEADER, 0};
	ext[k++] = (struct extent){h->regions_offset, table_end(h->regions_offset, h->max_regions),
				   EXTENT_TABLE, 0};

	for (uint32_t i = 0; i < h->n_regions; i++) {
		const struct iod_log_region *r = &t[i];
		uint64_t end, bytes;

		if (r->length == 0 || !iod_is_aligned(r->gpa, page) ||
		    !iod_is_aligned(r->length, page)) {
			iod_debug("dirty log: region %" PRIu32 " [%#" PRIx64 " +%#" PRIx64
				  "] is empty or not aligned to %#" PRIx64,
				  i, r->gpa, r->length, page);
			return -EBADMSG;
		}
		if (iod_add_overflow(r->gpa, r->length, &end)) {
			iod_debug("dirty log: region %" PRIu32 " [%#" PRIx64 " +%#" PRIx64
				  "] wraps past 2^64",
				  i, r->gpa, r->length);
			return -EBADMSG;
		}
		if (i > 0 && r->gpa < t[i - 1].gpa) {
			iod_debug("dirty log: region table not sorted at %" PRIu32, i);
			return -EBADMSG;
		}
		if (i > 0 && r->gpa < t[i - 1].gpa + t[i - 1].length) {
			iod_debug("dirty log: region %" PRIu32 " at %#" PRIx64
				  " overlaps the one before",
				  i, r->gpa);
			return -EBADMSG;
		}

		bytes = iod_bitmap_bytes(r->length >> h->page_shift);
		for (int p = 0; p < 2; p++) {
			uint64_t off = p ? r->round_offset : r->accum_offset;
			enum extent_kind kind = p ? EXTENT_ROUND : EXTENT_ACCUM;

			if (!iod_is_aligned(off, 8) || iod_add_overflow(off, bytes, &end) ||
			    end > h->size) {
				iod_debug("dirty log: %s of region %" PRIu32 " [%" PRIu64
					  " +%" PRIu64 "] misaligned or outside the %" PRIu64
					  " bytes in use",
					  extent_name(kind), i, off, bytes, h->size);
				return -EBADMSG;
			}
			ext[k++] = (struct extent){off, end, kind, i};
		}
	}

	qsort(ext, k, sizeof(ext[0]), extent_compare);
	for (size_t i = 1; i < k; i++) {
		if (ext[i].start < ext[i - 1].end) {
			const struct extent *a = &ext[i - 1], *b = &ext[i];

			if (a->kind == EXTENT_HEADER || a->kind == EXTENT_TABLE)
				iod_debug("dirty log: %s of region %zu overlaps %s",
					  extent_name(b->kind), b->region, extent_name(a->kind));
			else if (b->kind == EXTENT_HEADER || b->kind == EXTENT_TABLE)
				iod_debug("dirty log: %s of region %zu overlaps %s",
					  extent_name(a->kind), a->region, extent_name(b->kind));
			else
				iod_debug("dirty log: %s of region %zu overlaps %s of region %zu",
					  extent_name(a->kind), a->region, extent_name(b->kind),
					  b->region);
			return -EBADMSG;
		}
	}
	return 0;
}

int iod_log_open_fd(int fd, struct iod_dirty_log **ret)
{
	_cleanup_(iod_log_freep) struct iod_dirty_log *log = NULL;
	struct iod_log_header h;
	struct stat st;
	ssize_t n;
	int r;

	if (fd < 0)
		return -EBADF;
	if (!ret)
		return -EINVAL;

	log = log_alloc();
	if (!log)
		return -ENOMEM;

	log->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (log->fd < 0)
		return -errno;
	if (fstat(log->fd, &st) < 0)
		return -errno;
	/* The same owner-only mode as iod_log_new() gives, whoever made this memfd. */
	if ((st.st_mode & 07777) != 0600 && fchmod(log->fd, 0600) < 0)
		iod_debug("dirty log: cannot restrict the memfd to its owner, ignoring: %m");
	if (!S_ISREG(st.st_mode)) {
		iod_debug("dirty log: fd %d is not a regular file (memfd)", fd);
		return -EBADMSG;
	}
	if ((uint64_t)st.st_size < sizeof(h)) {
		iod_debug("dirty log: memfd of %jd bytes is too small for the header",
			  (intmax_t)st.st_size);
		return -EBADMSG;
	}

	n = pread(log->fd, &h, sizeof(h), 0);
	if (n < 0)
		return -errno;
	if ((size_t)n != sizeof(h)) {
		iod_debug("dirty log: short read of the header");
		return -EBADMSG;
	}
	r = log_validate_header(&h, (uint64_t)st.st_size);
	if (r < 0)
		return r;
	if (h.size > SIZE_MAX)
		return -EFBIG;

	log->map = mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, log->fd, 0);
	if (log->map == MAP_FAILED)
		return -errno;
	log->map_size = h.size;
	if (memcmp(log->map, &h, sizeof(h)) != 0) {
		iod_debug("dirty log: header changed while being read");
		return -EBADMSG;
	}

	r = log_validate_regions(log);
	if (r < 0)
		return r;

	/* A log written by iod_log_new() is sealed already; an older or foreign one may not be. */
	(void)fcntl(log->fd, F_ADD_SEALS, F_SEAL_SHRINK);

	*ret = TAKE_PTR(log);
	return 0;
}

struct iod_dirty_log *iod_log_free(struct iod_dirty_log *log)
{
	if (!log)
		return NULL;
	if (log->map != MAP_FAILED)
		munmap(log->map, log->map_size);
	iod_close(log->fd);
	free(log->scratch);
	free(log);
	return NULL;
}

int iod_log_fd(const struct iod_dirty_log *log)
{
	return log ? log->fd : -EBADF;
}

unsigned iod_log_page_shift(const struct iod_dirty_log *log)
{
	return log ? log_shift(log) : 0;
}

/* Index of the region containing addr, or -1. */
static ssize_t log_find_region(const struct iod_dirty_log *log, uint64_t addr)
{
	const struct iod_log_region *t = log_table(log);
	size_t lo = 0, hi = log_header(log)->n_regions;

	/* The first region starting after addr is at lo. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t[mid].gpa <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || addr - t[lo - 1].gpa >= t[lo - 1].length)
		return -1;
	return (ssize_t)(lo - 1);
}

int iod_log_accum_direct(struct iod_dirty_log *log, uint64_t gpa, uint64_t nbits, uint64_t **ret)
{
	unsigned shift;
	uint64_t page, end;
	ssize_t i;

	if (!log || !ret || nbits == 0)
		return -EINVAL;
	shift = log_shift(log);
	if (gpa & ((UINT64_C(1) << shift) - 1))
		return -EINVAL;
	if (nbits > (UINT64_MAX >> shift) || iod_add_overflow(gpa, nbits << shift, &end))
		return -EOVERFLOW;

	i = log_find_region(log, gpa);
	if (i < 0)
		return -EXDEV;
	const struct iod_log_region *r = &log_table(log)[i];
	page = (gpa - r->gpa) >> shift;
	if (end - r->gpa > r->length || page % IOD_BITS_PER_WORD)
		return -EXDEV;
	*ret = log_plane(log, r->accum_offset) + page / IOD_BITS_PER_WORD;
	return 0;
}

/*
 * Is [first, last] (inclusive) covered by regions, adjacent ones included? *ret_index gets
 * the region holding first.
 */
static int log_check_covered(const struct iod_dirty_log *log, uint64_t first, uint64_t last,
			     size_t *ret_index)
{
	const struct iod_log_region *t = log_table(log);
	size_t n = log_header(log)->n_regions;
	ssize_t start = log_find_region(log, first);

	if (start < 0)
		return -ERANGE;
	for (size_t i = (size_t)start;;) {
		uint64_t rlast = t[i].gpa + t[i].length - 1;

		if (last <= rlast)
			break;
		i++;
		if (i >= n || t[i].gpa != rlast + 1)
			return -ERANGE;
	}
	*ret_index = (size_t)start;
	return 0;
}

int iod_log_add_region(struct iod_dirty_log *log, uint64_t gpa, uint64_t length)
{
	struct iod_log_header *h;
	struct iod_log_region *t;
	uint64_t page, end, bytes, need, offset;
	size_t lo, hi, n;
	int r;

	if (!log)
		return -EINVAL;
	h = log_header(log);
	page = UINT64_C(1) << h->page_shift;
	if (length == 0 || !iod_is_aligned(gpa, page) || !iod_is_aligned(length, page))
		return -EINVAL;
	if (iod_add_overflow(gpa, length, &end))
		return -EOVERFLOW;

	/* Insertion point: the first region starting after gpa. */
	t = log_table(log);
	n = h->n_regions;
	for (lo = 0, hi = n; lo < hi;) {
		size_t mid = lo + (hi - lo) / 2;

		if (t[mid].gpa <= gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && t[lo - 1].gpa + t[lo - 1].length > gpa)
		return -EEXIST;
	if (lo < n && t[lo].gpa < end)
		return -EEXIST;
	if (n >= h->max_regions)
		return -ENOSPC;

	bytes = iod_bitmap_bytes(length >> h->page_shift);
	if (!align_up(2 * bytes, LOG_AREA_ALIGN, &need))
		return -EFBIG;
	r = log_find_area(log, need, &offset);
	if (r < 0)
		return r;
	r = log_ensure_size(log, offset + need);
	if (r < 0)
		return r;
	/* The gap may hold leftovers of a foreign writer; a fresh area reads as zeros anyway. */
	log_zero(log, offset, need);

	/* The mapping may have moved. */
	h = log_header(log);
	t = log_table(log);
	if (offset + 2 * bytes > h->size)
		h->size = offset + 2 * bytes;
	memmove(&t[lo + 1], &t[lo], (n - lo) * sizeof(*t));
	t[lo] = (struct iod_log_region){
		.gpa = gpa,
		.length = length,
		.accum_offset = offset,
		.round_offset = offset + bytes,
	};
	h->n_regions++;
	return 0;
}

int iod_log_remove_region(struct iod_dirty_log *log, uint64_t gpa)
{
	struct iod_log_header *h;
	struct iod_log_region *t;
	ssize_t i;

	if (!log)
		return -EINVAL;
	h = log_header(log);
	t = log_table(log);
	i = log_find_region(log, gpa);
	if (i < 0 || t[i].gpa != gpa)
		return -ENOENT;

	log_zero_region_planes(log, &t[i]);
	memmove(&t[i], &t[i + 1], (h->n_regions - (size_t)i - 1) * sizeof(*t));
	h->n_regions--;
	memset(&t[h->n_regions], 0, sizeof(*t));
	h->size = log_used_size(log);
	return 0;
}

size_t iod_log_region_count(const struct iod_dirty_log *log)
{
	return log ? log_header(log)->n_regions : 0;
}

const struct iod_log_region *iod_log_region(const struct iod_dirty_log *log, size_t i)
{
	if (!log || i >= log_header(log)->n_regions)
		return NULL;
	return &log_table(log)[i];
}

uint64_t iod_log_tracked_bytes(const struct iod_dirty_log *log)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < iod_log_region_count(log); i++)
		sum += log_table(log)[i].length;
	return sum;
}

/*
 * OR log pages [first, first + npages) into the accumulating planes, starting with region
 * index (which holds page first; the range was checked to be covered). The bits come from
 * bit src_start onwards of src (src_nbits bits), or are all set when src is NULL.
 */
static int log_apply_pages(struct iod_dirty_log *log, size_t index, uint64_t first, uint64_t npages,
			   const uint64_t *src, uint64_t src_nbits, uint64_t src_start)
{
	const struct iod_log_region *t = log_table(log);
	size_t n = log_header(log)->n_regions;
	unsigned shift = log_shift(log);
	uint64_t next = first, end = first + npages;

	for (size_t i = index; i < n && next < end; i++) {
		uint64_t rfirst = t[i].gpa >> shift;
		uint64_t rend = rfirst + (t[i].length >> shift);
		uint64_t to = end < rend ? end : rend;
		uint64_t *plane = log_plane(log, t[i].accum_offset);
		int r;

		if (rend <= next)
			continue; /* a region before this run of pages */
		if (rfirst > next)
			return -ERANGE; /* a hole; not reached, the range was checked */
		if (src)
			r = iod_bitmap_or(plane, rend - rfirst, next - rfirst, src, src_nbits,
					  src_start + (next - first), to - next);
		else
			r = iod_bitmap_set_range(plane, rend - rfirst, next - rfirst, to - next);
		if (r < 0)
			return r;
		next = to;
	}
	return next < end ? -ERANGE : 0;
}

int iod_log_mark(struct iod_dirty_log *log, uint64_t gpa, uint64_t length)
{
	unsigned shift;
	uint64_t end, first, last;
	size_t index;
	int r;

	if (!log || length == 0)
		return -EINVAL;
	if (iod_add_overflow(gpa, length, &end))
		return -EOVERFLOW;

	r = log_check_covered(log, gpa, end - 1, &index);
	if (r < 0)
		return r;

	shift = log_shift(log);
	first = gpa >> shift;
	last = (end - 1) >> shift;
	return log_apply_pages(log, index, first, last - first + 1, NULL, 0, 0);
}

static int log_scratch(struct iod_dirty_log *log, uint64_t words, uint64_t **ret)
{
	if (words > log->scratch_words) {
		uint64_t *p;

		if (words > SIZE_MAX / sizeof(uint64_t))
			return -ENOMEM;
		p = realloc(log->scratch, words * sizeof(uint64_t));
		if (!p)
			return -ENOMEM;
		log->scratch = p;
		log->scratch_words = words;
	}
	*ret = log->scratch;
	return 0;
}

/*
 * Pages smaller than the log's: prefix the bitmap with the small pages between the start of
 * the first log page and gpa (clear), so that it starts on a log page, then fold it.
 */
static int log_merge_smaller(struct iod_dirty_log *log, size_t index, uint64_t gpa,
			     const uint64_t *src, uint64_t src_off, uint64_t nbits,
			     unsigned src_shift)
{
	unsigned shift = log_shift(log);
	uint64_t lead = (gpa & ((UINT64_C(1) << shift) - 1)) >> src_shift;
	uint64_t total, npages, words_in = 0, *scratch, *folded;
	const uint64_t *in;
	int r;

	if (iod_add_overflow(lead, nbits, &total))
		return -EOVERFLOW;
	npages = iod_bitmap_rescaled_nbits(total, src_shift, shift);

	/* Fast path: the bitmap already starts on a log page and on a word. */
	if (lead != 0 || src_off % IOD_BITS_PER_WORD != 0)
		words_in = iod_bitmap_words(total);
	r = log_scratch(log, words_in + iod_bitmap_words(npages), &scratch);
	if (r < 0)
		return r;

	if (words_in) {
		memset(scratch, 0, words_in * sizeof(uint64_t));
		r = iod_bitmap_or(scratch, total, lead, src, src_off + nbits, src_off, nbits);
		if (r < 0)
			return r;
		in = scratch;
	} else {
		in = src + src_off / IOD_BITS_PER_WORD;
	}
	folded = scratch + words_in;
	memset(folded, 0, iod_bitmap_bytes(npages));
	r = iod_bitmap_rescale(folded, npages, shift, in, total, src_shift);
	if (r < 0)
		return r;

	return log_apply_pages(log, index, gpa >> shift, npages, folded, npages, 0);
}

/* Pages larger than the log's: every run of set bits becomes a run of log pages. */
static int log_merge_larger(struct iod_dirty_log *log, size_t index, uint64_t gpa,
			    const uint64_t *src, uint64_t src_off, uint64_t nbits,
			    unsigned src_shift)
{
	unsigned ratio = src_shift - log_shift(log);
	uint64_t first = gpa >> log_shift(log);
	uint64_t limit = src_off + nbits;

	for (uint64_t pos = src_off;;) {
		uint64_t set = iod_bitmap_find_next_set(src, limit, pos);
		uint64_t clear;
		int r;

		if (set >= limit)
			return 0;
		clear = iod_bitmap_find_next_clear(src, limit, set);
		r = log_apply_pages(log, index, first + ((set - src_off) << ratio),
				    (clear - set) << ratio, NULL, 0, 0);
		if (r < 0)
			return r;
		pos = clear;
	}
}

int iod_log_merge(struct iod_dirty_log *log, uint64_t gpa, const uint64_t *src, uint64_t src_off,
		  uint64_t nbits, unsigned src_shift)
{
	unsigned shift;
	uint64_t align, bytes, end, limit;
	size_t index;
	int r;

	if (!log || !src || nbits == 0 || src_shift >= 64)
		return -EINVAL;
	shift = log_shift(log);
	align = UINT64_C(1) << (src_shift < shift ? src_shift : shift);
	if (!iod_is_aligned(gpa, align))
		return -EINVAL;
	if (nbits > (UINT64_MAX >> src_shift) || iod_add_overflow(src_off, nbits, &limit))
		return -EOVERFLOW;
	bytes = nbits << src_shift;
	if (iod_add_overflow(gpa, bytes, &end))
		return -EOVERFLOW;

	r = log_check_covered(log, gpa, end - 1, &index);
	if (r < 0)
		return r;

	if (src_shift == shift)
		return log_apply_pages(log, index, gpa >> shift, nbits, src, limit, src_off);
	if (src_shift < shift)
		return log_merge_smaller(log, index, gpa, src, src_off, nbits, src_shift);
	return log_merge_larger(log, index, gpa, src, src_off, nbits, src_shift);
}

/* Mask of the bits of the last word of a plane of nbits bits that belong to it. */
static uint64_t last_word_mask(uint64_t nbits)
{
	return nbits % IOD_BITS_PER_WORD ? (UINT64_C(1) << (nbits % IOD_BITS_PER_WORD)) - 1
					 : UINT64_MAX;
}

int iod_log_snapshot(struct iod_dirty_log *log, uint64_t *ret_dirty_pages)
{
	const struct iod_log_region *t;
	size_t n;

	if (!log)
		return -EINVAL;
	t = log_table(log);
	n = log_header(log)->n_regions;
	for (size_t i = 0; i < n; i++) {
		uint64_t nbits = t[i].length >> log_shift(log);
		uint64_t words = iod_bitmap_words(nbits);
		uint64_t *accum = log_plane(log, t[i].accum_offset);
		uint64_t *round = log_plane(log, t[i].round_offset);

		/* Only touch words that have bits: clean pages of the memfd stay unallocated. */
		for (uint64_t w = 0; w < words; w++) {
			uint64_t bits = accum[w];

			if (!bits)
				continue;
			if (w == words - 1)
				bits &= last_word_mask(nbits);
			round[w] |= bits;
			accum[w] = 0;
		}
	}
	log_header(log)->rounds++;
	if (ret_dirty_pages)
		*ret_dirty_pages = iod_log_count_round(log);
	return 0;
}

int iod_log_ack(struct iod_dirty_log *log)
{
	const struct iod_log_region *t;
	size_t n;

	if (!log)
		return -EINVAL;
	t = log_table(log);
	n = log_header(log)->n_regions;
	for (size_t i = 0; i < n; i++) {
		uint64_t words = iod_bitmap_words(t[i].length >> log_shift(log));
		uint64_t *round = log_plane(log, t[i].round_offset);

		for (uint64_t w = 0; w < words; w++)
			if (round[w])
				round[w] = 0;
	}
	return 0;
}

const uint64_t *iod_log_accum_bitmap(const struct iod_dirty_log *log, size_t region)
{
	const struct iod_log_region *r = iod_log_region(log, region);

	return r ? log_plane(log, r->accum_offset) : NULL;
}

const uint64_t *iod_log_round_bitmap(const struct iod_dirty_log *log, size_t region)
{
	const struct iod_log_region *r = iod_log_region(log, region);

	return r ? log_plane(log, r->round_offset) : NULL;
}

static uint64_t log_count(const struct iod_dirty_log *log, bool round)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < iod_log_region_count(log); i++) {
		const struct iod_log_region *r = &log_table(log)[i];
		uint64_t nbits = r->length >> log_shift(log), c;

		if (iod_bitmap_count(log_plane(log, round ? r->round_offset : r->accum_offset),
				     nbits, 0, nbits, &c) == 0)
			sum += c;
	}
	return sum;
}

uint64_t iod_log_count_accum(const struct iod_dirty_log *log)
{
	return log_count(log, false);
}

uint64_t iod_log_count_round(const struct iod_dirty_log *log)
{
	return log_count(log, true);
}

uint64_t iod_log_flags(const struct iod_dirty_log *log)
{
	return log ? log_header(log)->flags : 0;
}

void iod_log_set_flags(struct iod_dirty_log *log, uint64_t flags)
{
	if (log)
		log_header(log)->flags = flags;
}

uint64_t iod_log_rounds(const struct iod_dirty_log *log)
{
	return log ? log_header(log)->rounds : 0;
}
