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
 *
 * Untouched pages stay untouched. The memfd is shmem, where touching a page allocates it: a
 * write, and a read through a mapping as well. Regions can be huge (4 TiB at 4 KiB pages is
 * 128 MiB per plane) and are mostly clean, so nothing here walks a plane word by word: the
 * walkers ask the memfd where it holds data (lseek SEEK_DATA / SEEK_HOLE) and visit only
 * that, since a hole reads as zeros; writers never store zeros into a page that gets no bit
 * (see log_or_sparse()); and the clearing walkers give pages that they find wholly zero back
 * (see log_sweep_plane()). The cost of a snapshot, an ack or a count is that of the pages
 * that hold data, not that of the regions.
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
	uint64_t page_size; /* the system's: what shmem allocates, and gives back, at a time */
	uint64_t *scratch; /* reused by iod_log_merge() when it rescales */
	uint64_t scratch_words;
	bool read_only; /* a client's view (iod_log_open_fd_ro()): no change is allowed */
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

/*
 * Where the memfd holds data. A cursor keeps the last answer, [data, hole) as seen from
 * `from`, so that planes lying next to one another, or all inside one hole, cost a single
 * pair of lseek() calls. It is good for one walk over planes that do not overlap: the walk
 * changes only the plane it is in, behind its position.
 *
 * lseek() moves the file position that the fd shares with its dups (the fd store holds one);
 * nothing reads or writes the log through the file position. A file without SEEK_DATA (not
 * shmem; only iod_log_open_fd() could be given one) reads as data throughout.
 */
struct data_cursor {
	bool valid;
	uint64_t from, data, hole; /* data == hole == UINT64_MAX: no data at or after from */
};

/*
 * The first data of the memfd in [pos, end): [*ret_start, *ret_end). false if there is none.
 * Offsets come back as the file has them, page aligned, unless clipped to [pos, end).
 */
static bool log_next_data(const struct iod_dirty_log *log, struct data_cursor *c, uint64_t pos,
			  uint64_t end, uint64_t *ret_start, uint64_t *ret_end)
{
	uint64_t start;

	if (pos >= end)
		return false;
	if (!c->valid || pos < c->from || pos >= c->hole) {
		off_t d = lseek(log->fd, (off_t)pos, SEEK_DATA), h;

		*c = (struct data_cursor){.valid = true, .from = pos};
		if (d < 0 && errno == ENXIO) {
			c->data = c->hole = UINT64_MAX;
		} else if (d < 0) {
			c->data = pos;
			c->hole = UINT64_MAX;
		} else {
			h = lseek(log->fd, d, SEEK_HOLE);
			c->data = (uint64_t)d;
			c->hole = h < d ? UINT64_MAX : (uint64_t)h;
		}
	}
	start = pos > c->data ? pos : c->data;
	if (start >= end)
		return false;
	*ret_start = start;
	*ret_end = MIN(c->hole, end);
	return true;
}

/* Give [offset, offset + length) back to the kernel; it reads as zeros from then on. */
static int log_punch(struct iod_dirty_log *log, uint64_t offset, uint64_t length)
{
	if (length == 0)
		return 0;
	if (fallocate(log->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
		      (off_t)length) < 0)
		return -errno;
	return 0;
}

/* Zero [offset, offset + length) of the memfd, giving whole pages back where possible. */
static void log_zero(struct iod_dirty_log *log, uint64_t offset, uint64_t length)
{
	struct data_cursor c = {};
	uint64_t ds, de;

	if (log_punch(log, offset, length) == 0)
		return;
	/* No hole punching (not shmem): clear what is not zero yet, where there is data. */
	for (uint64_t pos = offset; log_next_data(log, &c, pos, offset + length, &ds, &de);
	     pos = de)
		for (uint64_t *w = (uint64_t *)(log->map + ds); w < (uint64_t *)(log->map + de);
		     w++)
			if (*w)
				*w = 0;
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
	long page = sysconf(_SC_PAGESIZE);

	if (!log)
		return NULL;
	log->fd = -EBADF;
	log->map = MAP_FAILED;
	/* Only the unit of giving pages back; any power of two works, the real one works best. */
	log->page_size = page > 0 && !((uint64_t)page & ((uint64_t)page - 1)) ? (uint64_t)page
									      : 4096;
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

static int log_open(int fd, bool read_only, struct iod_dirty_log **ret)
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
	log->read_only = read_only;

	log->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (log->fd < 0)
		return -errno;
	if (fstat(log->fd, &st) < 0)
		return -errno;
	/* The same owner-only mode as iod_log_new() gives, whoever made this memfd. */
	if (!read_only && (st.st_mode & 07777) != 0600 && fchmod(log->fd, 0600) < 0)
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

	log->map = mmap(NULL, h.size, read_only ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED,
			log->fd, 0);
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
	if (!read_only)
		(void)fcntl(log->fd, F_ADD_SEALS, F_SEAL_SHRINK);

	*ret = TAKE_PTR(log);
	return 0;
}

int iod_log_open_fd(int fd, struct iod_dirty_log **ret)
{
	return log_open(fd, false, ret);
}

int iod_log_open_fd_ro(int fd, struct iod_dirty_log **ret)
{
	return log_open(fd, true, ret);
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

	if (log && log->read_only)
		return -EROFS;

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

	if (log && log->read_only)
		return -EROFS;

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

	if (log && log->read_only)
		return -EROFS;

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
 * plane[dst + i] |= src[src_off + i] for i < n, where the plane (nbits bits) lives at offset
 * off of the memfd: iod_bitmap_or(), but a page of the memfd whose share of src is clear is
 * left alone. A bitmap read from the kernel is mostly clear, and OR-ing its zero words in
 * would allocate every page of the plane it covers. Runs of pages that do get bits go to
 * the engine in one call each, so a dense bitmap still takes its full-speed path.
 */
static int log_or_sparse(const struct iod_dirty_log *log, uint64_t off, uint64_t nbits,
			 uint64_t dst, const uint64_t *src, uint64_t src_nbits, uint64_t src_off,
			 uint64_t n)
{
	uint64_t *plane = log_plane(log, off);
	uint64_t run_dst = 0, run_src = 0, run_n = 0;
	int r;

	/* Checked up front, so that nothing is merged when any of it is out of range. */
	if (n > nbits || dst > nbits - n || n > src_nbits || src_off > src_nbits - n)
		return -EINVAL;

	while (n > 0) {
		/* The bits whose words lie in the page holding dst's word (off is 8-aligned). */
		uint64_t byte = off + dst / IOD_BITS_PER_WORD * sizeof(uint64_t);
		uint64_t next_page = (byte | (log->page_size - 1)) + 1;
		uint64_t k = MIN(n, (next_page - off) / sizeof(uint64_t) * IOD_BITS_PER_WORD - dst);

		if (!iod_bitmap_is_empty(src, src_nbits, src_off, k)) {
			if (run_n == 0) {
				run_dst = dst;
				run_src = src_off;
			}
			run_n += k;
		} else if (run_n > 0) {
			r = iod_bitmap_or(plane, nbits, run_dst, src, src_nbits, run_src, run_n);
			if (r < 0)
				return r;
			run_n = 0;
		}
		dst += k;
		src_off += k;
		n -= k;
	}
	if (run_n > 0)
		return iod_bitmap_or(plane, nbits, run_dst, src, src_nbits, run_src, run_n);
	return 0;
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
		int r;

		if (rend <= next)
			continue; /* a region before this run of pages */
		if (rfirst > next)
			return -ERANGE; /* a hole; not reached, the range was checked */
		if (src)
			r = log_or_sparse(log, t[i].accum_offset, rend - rfirst, next - rfirst, src,
					  src_nbits, src_start + (next - first), to - next);
		else
			r = iod_bitmap_set_range(log_plane(log, t[i].accum_offset), rend - rfirst,
						 next - rfirst, to - next);
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

	if (log && log->read_only)
		return -EROFS;

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

	if (log && log->read_only)
		return -EROFS;

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

/*
 * Clear words [w0, w1) of plane, moving their bits into dst first when there is one (bits
 * past nbits, in the last word, are dropped: only a foreign writer puts any there). Only
 * words that are not zero are written. Returns whether any was.
 */
static bool clear_words(uint64_t *plane, uint64_t *dst, uint64_t w0, uint64_t w1, uint64_t nbits)
{
	uint64_t last = iod_bitmap_words(nbits) - 1, any = 0, tail = 0;

	if (w1 > last) {
		/* The last word of the plane, with the bits that belong to it. */
		tail = plane[last];
		if (tail)
			plane[last] = 0;
		if (dst && (tail & last_word_mask(nbits)))
			dst[last] |= tail & last_word_mask(nbits);
		w1 = last;
	}
	if (!dst) {
		for (uint64_t w = w0; w < w1; w++) {
			any |= plane[w];
			if (plane[w])
				plane[w] = 0;
		}
		return any | tail;
	}
	for (uint64_t w = w0; w < w1; w++) {
		uint64_t bits = plane[w];

		any |= bits;
		if (bits) {
			plane[w] = 0;
			dst[w] |= bits;
		}
	}
	return any | tail;
}

/*
 * Clear the plane of nbits bits at offset off of the memfd; with dst (the round plane of
 * the same region), OR its bits into dst first. Only the memfd's data is visited, a page at
 * a time, and only words that are not zero are written (dst's included: a page of the round
 * plane gets allocated only for a bit).
 *
 * A page that lies wholly inside the plane and holds no bit is given back (punched). Such
 * pages held bits a round before, were read through a mapping, or, in the accumulating
 * plane, were pinned by IOMMU_HWPT_GET_DIRTY_BITMAP through iod_log_accum_direct(): the
 * kernel pins the bitmap for writing (FOLL_WRITE, which allocates) a window of up to 512
 * pages at a time, from each bit it sets outside the window it holds (Linux 6.10 on,
 * iova_bitmap_set(); before 6.10 every window of the range was pinned, bits or not). So a
 * single dirty page can allocate 2 MiB of the plane. Giving those back costs the next
 * harvest that pins them again a page fault each: proportional to what the kernel pins, not
 * to the regions, and the alternative is a plane that stays allocated wherever a bit once
 * was. A page with bits is cleared in place and kept: what was dirty in a round is likely
 * to be dirty in the next, and a busy page is not freed and faulted in again every round.
 * What stays allocated is the pages that held bits in the latest round.
 *
 * Why punching is safe:
 *  - The page reads as zeros before and after; a reader with the memfd mapped (read-only,
 *    a client, the fd store's next owner) sees no change, and its next touch of the page
 *    faults in a new zero page (which a reader should avoid: iod_log_next_data()).
 *  - Only a writer racing with us could lose a bit: one that sets a bit in the page after
 *    we looked at it and before the punch, or into a page the kernel had pinned before the
 *    punch (the pinned copy would be cut off from the file). The log has a single writer
 *    at a time, the owner's thread, and iod_log_accum_direct()'s pointer is written only
 *    inside the owner's own synchronous IOMMU_HWPT_GET_DIRTY_BITMAP call, whose pins are
 *    dropped before it returns; nothing writes a plane while a snapshot or an ack runs.
 *    Reading a word and then zeroing it has always needed that: a concurrent bit would
 *    be lost the same way without any punching.
 *  - The pointers stay valid: the mapping does not change, only the pages under it.
 *  - Only whole pages inside the plane are punched. A punch is exact to the byte anyway
 *    (it zeroes, rather than frees, the parts of pages at either end), so this is about
 *    cost: a page the plane shares with a neighbour (planes need only be 8-byte aligned)
 *    could not be freed, and its words are cleared one by one instead.
 *  - A punch that fails changes nothing: the page is zeros already.
 */
static void log_sweep_plane(struct iod_dirty_log *log, struct data_cursor *c, uint64_t off,
			    uint64_t nbits, uint64_t *dst)
{
	uint64_t *plane = log_plane(log, off);
	uint64_t end = off + iod_bitmap_bytes(nbits), page = log->page_size;
	uint64_t ds, de, punch = 0, punch_end = 0;

	for (uint64_t pos = off; log_next_data(log, c, pos, end, &ds, &de); pos = de) {
		for (uint64_t a = ds, b; a < de; a = b) {
			bool any;

			b = MIN((a | (page - 1)) + 1, de);
			any = clear_words(plane, dst, (a - off) / sizeof(uint64_t),
					  (b - off) / sizeof(uint64_t), nbits);
			if (!any && b - a == page) {
				if (a != punch_end) {
					(void)log_punch(log, punch, punch_end - punch);
					punch = a;
				}
				punch_end = b;
			}
		}
	}
	(void)log_punch(log, punch, punch_end - punch);
}

int iod_log_snapshot(struct iod_dirty_log *log, uint64_t *ret_dirty_pages)
{
	struct data_cursor c = {};
	const struct iod_log_region *t;
	size_t n;

	if (log && log->read_only)
		return -EROFS;

	if (!log)
		return -EINVAL;
	t = log_table(log);
	n = log_header(log)->n_regions;
	for (size_t i = 0; i < n; i++)
		log_sweep_plane(log, &c, t[i].accum_offset, t[i].length >> log_shift(log),
				log_plane(log, t[i].round_offset));
	log_header(log)->rounds++;
	if (ret_dirty_pages)
		*ret_dirty_pages = iod_log_count_round(log);
	return 0;
}

int iod_log_ack(struct iod_dirty_log *log)
{
	struct data_cursor c = {};
	const struct iod_log_region *t;
	size_t n;

	if (log && log->read_only)
		return -EROFS;

	if (!log)
		return -EINVAL;
	t = log_table(log);
	n = log_header(log)->n_regions;
	for (size_t i = 0; i < n; i++)
		log_sweep_plane(log, &c, t[i].round_offset, t[i].length >> log_shift(log), NULL);
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

/*
 * The bits [*ret_first, *ret_end) of the plane of nbits bits at offset off that lie in the
 * first data of the memfd at or after bit; false if there is none.
 */
static bool plane_next_data(const struct iod_dirty_log *log, struct data_cursor *c, uint64_t off,
			    uint64_t nbits, uint64_t bit, uint64_t *ret_first, uint64_t *ret_end)
{
	uint64_t ds, de, first;

	if (bit >= nbits || !log_next_data(log, c, off + bit / IOD_BITS_PER_WORD * sizeof(uint64_t),
					   off + iod_bitmap_bytes(nbits), &ds, &de))
		return false;
	first = (ds - off) / sizeof(uint64_t) * IOD_BITS_PER_WORD;
	*ret_first = first > bit ? first : bit;
	*ret_end = MIN((de - off) / sizeof(uint64_t) * IOD_BITS_PER_WORD, nbits);
	return true;
}

int iod_log_next_data(const struct iod_dirty_log *log, size_t region, bool round, uint64_t bit,
		      uint64_t *ret_first, uint64_t *ret_end)
{
	const struct iod_log_region *r = iod_log_region(log, region);
	struct data_cursor c = {};
	uint64_t first, end;

	if (!r || !ret_first || !ret_end)
		return -EINVAL;
	if (!plane_next_data(log, &c, round ? r->round_offset : r->accum_offset,
			     r->length >> log_shift(log), bit, &first, &end))
		return -ENODATA;
	*ret_first = first;
	*ret_end = end;
	return 0;
}

/* The first bit at or after bit, below nbits, set in one plane of region i; nbits if none.
 * Only pages holding data are read (a read of any other page would allocate it). */
static uint64_t plane_next_set(const struct iod_dirty_log *log, size_t i, bool round, uint64_t bit,
			       uint64_t nbits)
{
	const uint64_t *plane = round ? iod_log_round_bitmap(log, i) : iod_log_accum_bitmap(log, i);
	uint64_t first, end;

	while (bit < nbits && iod_log_next_data(log, i, round, bit, &first, &end) == 0 &&
	       first < nbits) {
		uint64_t limit = MIN(end, nbits),
			 f = iod_bitmap_find_next_set(plane, limit, MAX(first, bit));

		if (f < limit)
			return f;
		bit = limit;
	}
	return nbits;
}

/* The first bit at or after bit, below nbits, clear in one plane of region i. */
static uint64_t plane_next_clear(const struct iod_dirty_log *log, size_t i, bool round,
				 uint64_t bit, uint64_t nbits)
{
	const uint64_t *plane = round ? iod_log_round_bitmap(log, i) : iod_log_accum_bitmap(log, i);
	uint64_t first, end;

	while (bit < nbits) {
		uint64_t limit, c;

		if (iod_log_next_data(log, i, round, bit, &first, &end) < 0 || first > bit)
			return bit; /* a hole: clear */
		limit = MIN(end, nbits);
		c = iod_bitmap_find_next_clear(plane, limit, bit);
		if (c < limit)
			return c;
		bit = limit;
	}
	return nbits;
}

int iod_log_next_dirty(const struct iod_dirty_log *log, size_t region, bool both, uint64_t bit,
		       uint64_t nbits, uint64_t *ret_start, uint64_t *ret_end)
{
	const struct iod_log_region *r = iod_log_region(log, region);
	uint64_t b, e;

	if (!r || !ret_start || !ret_end)
		return -EINVAL;
	nbits = MIN(nbits, r->length >> log_shift(log));
	b = plane_next_set(log, region, true, bit, nbits);
	if (both)
		b = MIN(b, plane_next_set(log, region, false, bit, nbits));
	if (b >= nbits)
		return -ENODATA;
	/* The run ends where both planes are clear. */
	for (e = b;;) {
		uint64_t x = plane_next_clear(log, region, true, e, nbits);
		uint64_t y = both ? plane_next_clear(log, region, false, e, nbits) : x;

		if (x == y) {
			e = x;
			break;
		}
		e = MAX(x, y);
	}
	*ret_start = b;
	*ret_end = e;
	return 0;
}

static uint64_t log_count(const struct iod_dirty_log *log, bool round)
{
	struct data_cursor c = {};
	uint64_t sum = 0;

	for (size_t i = 0; i < iod_log_region_count(log); i++) {
		const struct iod_log_region *r = &log_table(log)[i];
		uint64_t nbits = r->length >> log_shift(log), off, first, end, n;

		off = round ? r->round_offset : r->accum_offset;
		for (uint64_t bit = 0; plane_next_data(log, &c, off, nbits, bit, &first, &end);
		     bit = end)
			if (iod_bitmap_count(log_plane(log, off), nbits, first, end - first, &n) ==
			    0)
				sum += n;
	}
	return sum;
}

uint64_t iod_log_count_union(const struct iod_dirty_log *log)
{
	struct data_cursor ca = {}, cr = {};
	uint64_t sum = 0;

	/* Everything in the round, and what the accumulating plane has beyond it. */
	for (size_t i = 0; i < iod_log_region_count(log); i++) {
		const struct iod_log_region *g = &log_table(log)[i];
		const uint64_t *a = log_plane(log, g->accum_offset);
		const uint64_t *r = log_plane(log, g->round_offset);
		uint64_t nbits = g->length >> log_shift(log), af, ae, rf, re, n;

		for (uint64_t bit = 0;
		     plane_next_data(log, &cr, g->round_offset, nbits, bit, &rf, &re); bit = re)
			if (iod_bitmap_count(r, nbits, rf, re - rf, &n) == 0)
				sum += n;

		for (uint64_t bit = 0;
		     plane_next_data(log, &ca, g->accum_offset, nbits, bit, &af, &ae); bit = ae) {
			/* Where the round is a hole it is clear; elsewhere, bit by bit. */
			for (uint64_t pos = af; pos < ae;) {
				uint64_t hole_end = ae, both_end;

				if (plane_next_data(log, &cr, g->round_offset, nbits, pos, &rf,
						    &re) &&
				    rf < ae)
					hole_end = rf;
				if (hole_end > pos &&
				    iod_bitmap_count(a, nbits, pos, hole_end - pos, &n) == 0)
					sum += n;
				if (hole_end >= ae)
					break;
				/* Both hold data here: whole words from hole_end, but past nbits. */
				both_end = MIN(re, ae);
				for (uint64_t w = hole_end / IOD_BITS_PER_WORD;
				     w * IOD_BITS_PER_WORD < both_end; w++) {
					uint64_t v = a[w] & ~r[w];

					if ((w + 1) * IOD_BITS_PER_WORD > nbits)
						v &= last_word_mask(nbits);
					sum += (uint64_t)__builtin_popcountll(v);
				}
				pos = both_end;
			}
		}
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
	if (log && log->read_only)
		return;
	if (log)
		log_header(log)->flags = flags;
}

uint64_t iod_log_rounds(const struct iod_dirty_log *log)
{
	return log ? log_header(log)->rounds : 0;
}
