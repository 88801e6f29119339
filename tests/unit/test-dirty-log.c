/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the GPA dirty log (lib/dirty-log.c): regions, marking, merging at other
 * page sizes, rounds, the memfd across a restart and in a second process, the validation of
 * a memfd that cannot be trusted, and a random run against a simple reference model.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iod-dirty-log.h"
#include "iod-util.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

static void log_freep(struct iod_dirty_log **p)
{
	iod_log_free(*p);
}
#define _cleanup_log_ _cleanup_(log_freep)

/* --- helpers ----------------------------------------------------------------------------- */

static char last_debug[512];

static void capture_debug(int level, const char *message, void *userdata)
{
	snprintf(last_debug, sizeof(last_debug), "%s", message);
}

static struct iod_dirty_log *dl;

static void setup(void)
{
	iod_set_log_fn(capture_debug, NULL);
	last_debug[0] = 0;
	ck_assert_int_eq(iod_log_new(12, &dl), 0);
}

static void teardown(void)
{
	dl = iod_log_free(dl);
	iod_set_log_fn(NULL, NULL);
}

static size_t count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	size_t n = 0;

	ck_assert_ptr_nonnull(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Mappings of memfds called name. */
static size_t count_maps(const char *name)
{
	char line[4096], needle[128];
	FILE *f = fopen("/proc/self/maps", "re");
	size_t n = 0;

	ck_assert_ptr_nonnull(f);
	snprintf(needle, sizeof(needle), "/memfd:%s ", name);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			n++;
	fclose(f);
	return n;
}

static uint64_t fd_size(int fd)
{
	struct stat st;

	ck_assert_int_eq(fstat(fd, &st), 0);
	return (uint64_t)st.st_size;
}

/* A new memfd called name holding the first len bytes of fd (zeros past its end). */
static int copy_memfd(int fd, uint64_t len, const char *name)
{
	uint64_t have = fd_size(fd), n = len < have ? len : have;
	int copy = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *buf = malloc(n ? n : 1);

	ck_assert_int_ge(copy, 0);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pread(fd, buf, n, 0), (ssize_t)n);
	ck_assert_int_eq(ftruncate(copy, (off_t)len), 0);
	ck_assert_int_eq(pwrite(copy, buf, n, 0), (ssize_t)n);
	free(buf);
	return copy;
}

static uint64_t region_pages(const struct iod_dirty_log *log, size_t i)
{
	return iod_log_region(log, i)->length >> iod_log_page_shift(log);
}

/* The set bits of a plane, in order, into out[0..max); returns how many there are. */
static size_t plane_bits(const uint64_t *plane, uint64_t nbits, uint64_t *out, size_t max)
{
	size_t n = 0;

	for (uint64_t b = iod_bitmap_find_next_set(plane, nbits, 0); b < nbits;
	     b = iod_bitmap_find_next_set(plane, nbits, b + 1)) {
		if (n < max)
			out[n] = b;
		n++;
	}
	return n;
}

#define assert_plane_bits(plane, nbits, ...)                                      \
	do {                                                                      \
		const uint64_t _want[] = {__VA_ARGS__};                           \
		uint64_t _got[64];                                                \
		size_t _n = plane_bits((plane), (nbits), _got, ELEMENTSOF(_got)); \
		ck_assert_uint_eq(_n, ELEMENTSOF(_want));                         \
		for (size_t _i = 0; _i < ELEMENTSOF(_want); _i++)                 \
			ck_assert_uint_eq(_got[_i], _want[_i]);                   \
	} while (0)

#define assert_plane_empty(plane, nbits) ck_assert_uint_eq(plane_bits((plane), (nbits), NULL, 0), 0)

/* A copy of every plane of every region, to show that a failed call changed nothing. */
static uint8_t *dump_planes(const struct iod_dirty_log *log, size_t *ret_len)
{
	size_t len = 0, off = 0;
	uint8_t *buf;

	for (size_t i = 0; i < iod_log_region_count(log); i++)
		len += 2 * iod_bitmap_bytes(region_pages(log, i));
	buf = malloc(len ? len : 1);
	ck_assert_ptr_nonnull(buf);
	for (size_t i = 0; i < iod_log_region_count(log); i++) {
		uint64_t bytes = iod_bitmap_bytes(region_pages(log, i));

		memcpy(buf + off, iod_log_accum_bitmap(log, i), bytes);
		off += bytes;
		memcpy(buf + off, iod_log_round_bitmap(log, i), bytes);
		off += bytes;
	}
	*ret_len = len;
	return buf;
}

#define assert_unchanged_by(call, error)                           \
	do {                                                       \
		size_t _l1, _l2, _n = iod_log_region_count(dl);    \
		uint8_t *_before = dump_planes(dl, &_l1), *_after; \
		ck_assert_int_eq((call), (error));                 \
		_after = dump_planes(dl, &_l2);                    \
		ck_assert_uint_eq(iod_log_region_count(dl), _n);   \
		ck_assert_uint_eq(_l1, _l2);                       \
		ck_assert(memcmp(_before, _after, _l1) == 0);      \
		free(_before);                                     \
		free(_after);                                      \
	} while (0)

/* splitmix64: small, good enough, and the same everywhere. */
static uint64_t rng_state;

static uint64_t rng(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t test_seed(uint64_t dflt)
{
	const char *e = getenv("IOD_TEST_SEED");

	return e ? strtoull(e, NULL, 0) : dflt;
}

/* --- reference model ------------------------------------------------------------------- */

/*
 * One byte per log page of [base, base + space): whether it is in a region, and its bit in
 * each plane. Merging follows the definition: every byte of a dirty source page makes the
 * log page holding it dirty.
 */
#define MODEL_MAX_REGIONS 32

struct model {
	unsigned shift;
	uint64_t base, space, npages;
	uint8_t *in_region, *accum, *round;
	struct {
		uint64_t gpa, length;
	} regions[MODEL_MAX_REGIONS];
	size_t n;
};

static void model_init(struct model *m, unsigned shift, uint64_t base, uint64_t space)
{
	*m = (struct model){.shift = shift, .base = base, .space = space};
	m->npages = space >> shift;
	m->in_region = calloc(m->npages, 1);
	m->accum = calloc(m->npages, 1);
	m->round = calloc(m->npages, 1);
	ck_assert(m->in_region && m->accum && m->round);
}

static void model_fini(struct model *m)
{
	free(m->in_region);
	free(m->accum);
	free(m->round);
}

static uint64_t model_page(const struct model *m, uint64_t gpa)
{
	return (gpa - m->base) >> m->shift;
}

static bool model_covered(const struct model *m, uint64_t gpa, uint64_t length)
{
	if (length == 0 || gpa < m->base || gpa - m->base >= m->space ||
	    length > m->space - (gpa - m->base))
		return false;
	for (uint64_t p = model_page(m, gpa); p <= model_page(m, gpa + length - 1); p++)
		if (!m->in_region[p])
			return false;
	return true;
}

/* Regions are added only inside the model's space, page aligned. */
static int model_add(struct model *m, uint64_t gpa, uint64_t length)
{
	size_t i;

	for (uint64_t p = model_page(m, gpa); p <= model_page(m, gpa + length - 1); p++)
		if (m->in_region[p])
			return -EEXIST;
	ck_assert_uint_lt(m->n, MODEL_MAX_REGIONS);
	for (i = m->n; i > 0 && m->regions[i - 1].gpa > gpa; i--)
		m->regions[i] = m->regions[i - 1];
	m->regions[i].gpa = gpa;
	m->regions[i].length = length;
	m->n++;
	memset(m->in_region + model_page(m, gpa), 1, length >> m->shift);
	return 0;
}

static int model_remove(struct model *m, uint64_t gpa)
{
	for (size_t i = 0; i < m->n; i++) {
		if (m->regions[i].gpa != gpa)
			continue;
		uint64_t p = model_page(m, gpa), np = m->regions[i].length >> m->shift;

		memset(m->in_region + p, 0, np);
		memset(m->accum + p, 0, np);
		memset(m->round + p, 0, np);
		memmove(&m->regions[i], &m->regions[i + 1], (m->n - i - 1) * sizeof(m->regions[0]));
		m->n--;
		return 0;
	}
	return -ENOENT;
}

static void model_set(struct model *m, uint64_t gpa, uint64_t length)
{
	for (uint64_t p = model_page(m, gpa); p <= model_page(m, gpa + length - 1); p++)
		m->accum[p] = 1;
}

static int model_mark(struct model *m, uint64_t gpa, uint64_t length)
{
	if (!model_covered(m, gpa, length))
		return -ERANGE;
	model_set(m, gpa, length);
	return 0;
}

static int model_merge(struct model *m, uint64_t gpa, const uint64_t *src, uint64_t src_off,
		       uint64_t nbits, unsigned src_shift)
{
	uint64_t page = UINT64_C(1) << src_shift;

	if (nbits > m->space >> src_shift || !model_covered(m, gpa, nbits << src_shift))
		return -ERANGE;
	for (uint64_t j = 0; j < nbits; j++)
		if (iod_bitmap_test(src, src_off + j))
			model_set(m, gpa + j * page, page);
	return 0;
}

static uint64_t model_snapshot(struct model *m)
{
	uint64_t n = 0;

	for (uint64_t p = 0; p < m->npages; p++) {
		m->round[p] |= m->accum[p];
		m->accum[p] = 0;
		n += m->round[p];
	}
	return n;
}

static void model_ack(struct model *m)
{
	memset(m->round, 0, m->npages);
}

/* The log must equal the model exactly: regions, both planes, counts. */
static void model_check(const struct model *m, const struct iod_dirty_log *log, const char *what)
{
	uint64_t tracked = 0, n_accum = 0, n_round = 0, n_union = 0;

	if (iod_log_region_count(log) != m->n)
		ck_abort_msg("%s: %zu regions, expected %zu", what, iod_log_region_count(log),
			     m->n);
	for (size_t i = 0; i < m->n; i++) {
		const struct iod_log_region *r = iod_log_region(log, i);
		const uint64_t *accum = iod_log_accum_bitmap(log, i);
		const uint64_t *round = iod_log_round_bitmap(log, i);
		uint64_t p0 = model_page(m, r->gpa), np = r->length >> m->shift;

		if (r->gpa != m->regions[i].gpa || r->length != m->regions[i].length)
			ck_abort_msg("%s: region %zu is [%#" PRIx64 " +%#" PRIx64
				     "], expected [%#" PRIx64 " +%#" PRIx64 "]",
				     what, i, r->gpa, r->length, m->regions[i].gpa,
				     m->regions[i].length);
		for (uint64_t b = 0; b < np; b++) {
			if (iod_bitmap_test(accum, b) != m->accum[p0 + b])
				ck_abort_msg("%s: region %zu accumulating bit %" PRIu64
					     " is %d, expected %d",
					     what, i, b, iod_bitmap_test(accum, b),
					     m->accum[p0 + b]);
			if (iod_bitmap_test(round, b) != m->round[p0 + b])
				ck_abort_msg(
					"%s: region %zu round bit %" PRIu64 " is %d, expected %d",
					what, i, b, iod_bitmap_test(round, b), m->round[p0 + b]);
			n_accum += m->accum[p0 + b];
			n_round += m->round[p0 + b];
			n_union += m->accum[p0 + b] | m->round[p0 + b];
		}
		tracked += r->length;
	}
	if (iod_log_tracked_bytes(log) != tracked || iod_log_count_accum(log) != n_accum ||
	    iod_log_count_round(log) != n_round)
		ck_abort_msg("%s: tracked %" PRIu64 "/%" PRIu64 ", accum %" PRIu64 "/%" PRIu64
			     ", round %" PRIu64 "/%" PRIu64,
			     what, iod_log_tracked_bytes(log), tracked, iod_log_count_accum(log),
			     n_accum, iod_log_count_round(log), n_round);
	if (iod_log_count_union(log) != n_union)
		ck_abort_msg("%s: %" PRIu64 " pages dirty in either plane, expected %" PRIu64, what,
			     iod_log_count_union(log), n_union);
}

/* --- creation and regions ------------------------------------------------------------- */

START_TEST(test_new_page_shift)
{
	struct iod_dirty_log *l = NULL;

	ck_assert_int_eq(iod_log_new(11, &l), -EINVAL);
	ck_assert_int_eq(iod_log_new(31, &l), -EINVAL);
	ck_assert_ptr_null(l);
	ck_assert_int_eq(iod_log_new(12, NULL), -EINVAL);

	ck_assert_int_eq(iod_log_new(30, &l), 0);
	ck_assert_uint_eq(iod_log_page_shift(l), 30);
	ck_assert_int_eq(iod_log_add_region(l, GiB, 4 * KiB), -EINVAL);
	ck_assert_int_eq(iod_log_add_region(l, GiB, 2 * GiB), 0);
	ck_assert_uint_eq(region_pages(l, 0), 2);
	l = iod_log_free(l);
	ck_assert_ptr_null(l);
	ck_assert_ptr_null(iod_log_free(NULL));

	/* A fresh log: empty, no rounds, no flags, a sealed memfd. */
	ck_assert_uint_eq(iod_log_page_shift(dl), 12);
	ck_assert_uint_eq(iod_log_region_count(dl), 0);
	ck_assert_ptr_null(iod_log_region(dl, 0));
	ck_assert_ptr_null(iod_log_accum_bitmap(dl, 0));
	ck_assert_ptr_null(iod_log_round_bitmap(dl, 0));
	ck_assert_uint_eq(iod_log_tracked_bytes(dl), 0);
	ck_assert_uint_eq(iod_log_rounds(dl), 0);
	ck_assert_uint_eq(iod_log_flags(dl), 0);
	ck_assert_int_ge(iod_log_fd(dl), 0);
	ck_assert_int_eq(fcntl(iod_log_fd(dl), F_GET_SEALS) & F_SEAL_SHRINK, F_SEAL_SHRINK);
	ck_assert_int_eq(fcntl(iod_log_fd(dl), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	ck_assert_int_eq(count_maps("iodirty-log"), 1);
}
END_TEST

/* The kernel may write straight into the accumulating plane where words line up. */
START_TEST(test_accum_direct)
{
	const uint64_t base = GiB, len = 2 * MiB; /* 512 pages of 4 KiB */
	uint64_t *p = NULL, *q = NULL, dirty = 0;

	ck_assert_int_eq(iod_log_add_region(dl, base, len), 0);
	ck_assert_int_eq(iod_log_add_region(dl, base + len, len), 0);

	ck_assert_int_eq(iod_log_accum_direct(dl, base, 512, &p), 0);
	ck_assert_ptr_eq(p, iod_log_accum_bitmap(dl, 0));
	ck_assert_int_eq(iod_log_accum_direct(dl, base + 64 * 4 * KiB, 448, &q), 0);
	ck_assert_ptr_eq(q, p + 1);

	/* Not the first bit of a word, past the region (even into the adjacent one), a hole. */
	ck_assert_int_eq(iod_log_accum_direct(dl, base + 4 * KiB, 1, &q), -EXDEV);
	ck_assert_int_eq(iod_log_accum_direct(dl, base, 513, &q), -EXDEV);
	ck_assert_int_eq(iod_log_accum_direct(dl, base - 64 * 4 * KiB, 64, &q), -EXDEV);
	ck_assert_int_eq(iod_log_accum_direct(dl, base + 2 * len, 64, &q), -EXDEV);
	/* Bad arguments. */
	ck_assert_int_eq(iod_log_accum_direct(dl, base + 1, 64, &q), -EINVAL);
	ck_assert_int_eq(iod_log_accum_direct(dl, base, 0, &q), -EINVAL);
	ck_assert_int_eq(iod_log_accum_direct(dl, base, 64, NULL), -EINVAL);
	ck_assert_int_eq(iod_log_accum_direct(dl, base, UINT64_MAX >> 4, &q), -EOVERFLOW);
	ck_assert_ptr_eq(q, p + 1);

	/* Bits set through the pointer are the log's: they reach the round. */
	p[0] |= UINT64_C(1) << 3;
	p[7] |= UINT64_C(1) << 63;
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 2);
	ck_assert(iod_bitmap_test(iod_log_round_bitmap(dl, 0), 3));
	ck_assert(iod_bitmap_test(iod_log_round_bitmap(dl, 0), 511));
	ck_assert_uint_eq(iod_log_count_accum(dl), 0);
}
END_TEST

/* Read-only fds handed out must not be reopenable for writing by others: mode 0600. */
START_TEST(test_memfd_owner_only)
{
	struct stat st;

	struct iod_dirty_log *reopened = NULL;

	ck_assert_int_eq(fstat(iod_log_fd(dl), &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);

	/* A log taken over from a memfd somebody left open to all is restricted as well. */
	ck_assert_int_eq(fchmod(iod_log_fd(dl), 0666), 0);
	ck_assert_int_eq(iod_log_open_fd(iod_log_fd(dl), &reopened), 0);
	ck_assert_int_eq(fstat(iod_log_fd(reopened), &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	iod_log_free(reopened);
}
END_TEST

START_TEST(test_region_sorted)
{
	static const uint64_t gpas[] = {8 * GiB, 0, 4 * GiB, 64 * KiB, 16 * GiB - 4 * KiB};
	static const uint64_t lens[] = {1 * GiB, 64 * KiB, 2 * MiB, 4 * KiB, 4 * KiB};
	static const size_t order[] = {1, 3, 2, 0, 4};

	for (size_t i = 0; i < ELEMENTSOF(gpas); i++)
		ck_assert_int_eq(iod_log_add_region(dl, gpas[i], lens[i]), 0);

	ck_assert_uint_eq(iod_log_region_count(dl), ELEMENTSOF(gpas));
	ck_assert_uint_eq(iod_log_tracked_bytes(dl), GiB + 64 * KiB + 2 * MiB + 8 * KiB);
	for (size_t i = 0; i < ELEMENTSOF(order); i++) {
		const struct iod_log_region *r = iod_log_region(dl, i);
		uint64_t bytes = iod_bitmap_bytes(r->length >> 12);

		ck_assert_uint_eq(r->gpa, gpas[order[i]]);
		ck_assert_uint_eq(r->length, lens[order[i]]);
		ck_assert_uint_eq(r->accum_offset % 8, 0);
		ck_assert_uint_eq(r->round_offset % 8, 0);
		ck_assert_ptr_eq(
			iod_log_accum_bitmap(dl, i),
			(const void *)((const uint8_t *)iod_log_accum_bitmap(dl, 0) +
				       (r->accum_offset - iod_log_region(dl, 0)->accum_offset)));
		/* Planes do not overlap one another. */
		for (size_t j = 0; j < i; j++) {
			const struct iod_log_region *q = iod_log_region(dl, j);
			uint64_t qb = iod_bitmap_bytes(q->length >> 12);
			uint64_t a[] = {r->accum_offset, r->round_offset};
			uint64_t b[] = {q->accum_offset, q->round_offset};

			for (int x = 0; x < 2; x++)
				for (int y = 0; y < 2; y++)
					ck_assert(a[x] + bytes <= b[y] || b[y] + qb <= a[x]);
		}
		ck_assert(r->accum_offset + bytes <= r->round_offset ||
			  r->round_offset + bytes <= r->accum_offset);
		/* A fresh region is clean. */
		assert_plane_empty(iod_log_accum_bitmap(dl, i), r->length >> 12);
		assert_plane_empty(iod_log_round_bitmap(dl, i), r->length >> 12);
	}
	ck_assert_ptr_null(iod_log_region(dl, ELEMENTSOF(gpas)));
}
END_TEST

START_TEST(test_region_invalid)
{
	ck_assert_int_eq(iod_log_add_region(dl, GiB, 2 * MiB), 0);

	ck_assert_int_eq(iod_log_add_region(dl, 0, 0), -EINVAL);
	ck_assert_int_eq(iod_log_add_region(dl, 512, 4 * KiB), -EINVAL);
	ck_assert_int_eq(iod_log_add_region(dl, 0, 4 * KiB + 1), -EINVAL);
	ck_assert_int_eq(iod_log_add_region(dl, 0, 2 * KiB), -EINVAL);
	/* Wraps, or ends exactly at 2^64 (not representable). */
	ck_assert_int_eq(iod_log_add_region(dl, UINT64_MAX - 4 * KiB + 1, 8 * KiB), -EOVERFLOW);
	ck_assert_int_eq(iod_log_add_region(dl, UINT64_MAX - 4 * KiB + 1, 4 * KiB), -EOVERFLOW);
	ck_assert_int_eq(iod_log_add_region(dl, 8 * GiB, UINT64_MAX - 4 * KiB + 1), -EOVERFLOW);

	/* Overlaps: same, inside, over the start, over the end, around. */
	ck_assert_int_eq(iod_log_add_region(dl, GiB, 2 * MiB), -EEXIST);
	ck_assert_int_eq(iod_log_add_region(dl, GiB + 4 * KiB, 4 * KiB), -EEXIST);
	ck_assert_int_eq(iod_log_add_region(dl, GiB - 4 * KiB, 8 * KiB), -EEXIST);
	ck_assert_int_eq(iod_log_add_region(dl, GiB + 2 * MiB - 4 * KiB, 8 * KiB), -EEXIST);
	ck_assert_int_eq(iod_log_add_region(dl, GiB - 4 * KiB, 4 * MiB), -EEXIST);
	ck_assert_uint_eq(iod_log_region_count(dl), 1);
	ck_assert_uint_eq(iod_log_tracked_bytes(dl), 2 * MiB);

	/* Adjacent on both sides is fine. */
	ck_assert_int_eq(iod_log_add_region(dl, GiB - 4 * KiB, 4 * KiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, GiB + 2 * MiB, 4 * KiB), 0);
	ck_assert_uint_eq(iod_log_region_count(dl), 3);
	/* The last page of the address space can hold a region if it does not end at 2^64. */
	ck_assert_int_eq(iod_log_add_region(dl, UINT64_MAX - 8 * KiB + 1, 4 * KiB), 0);

	ck_assert_int_eq(iod_log_add_region(NULL, 0, 4 * KiB), -EINVAL);
}
END_TEST

static struct iod_log_header read_header(int fd)
{
	struct iod_log_header h;

	ck_assert_int_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	return h;
}

START_TEST(test_region_remove)
{
	const uint64_t size0 = read_header(iod_log_fd(dl)).size;

	ck_assert_int_eq(iod_log_add_region(dl, GiB, 2 * MiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 2 * GiB, 2 * MiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 3 * GiB, 2 * MiB), 0);

	ck_assert_int_eq(iod_log_remove_region(dl, GiB + 4 * KiB), -ENOENT);
	ck_assert_int_eq(iod_log_remove_region(dl, 0), -ENOENT);
	ck_assert_int_eq(iod_log_remove_region(dl, 5 * GiB), -ENOENT);
	ck_assert_uint_eq(iod_log_region_count(dl), 3);

	/* Dirty the middle one in both planes, remove it: the others keep their bits. */
	ck_assert_int_eq(iod_log_mark(dl, GiB, 4 * KiB), 0);
	ck_assert_int_eq(iod_log_mark(dl, 2 * GiB, 2 * MiB), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_mark(dl, 2 * GiB + 8 * KiB, 4 * KiB), 0);
	ck_assert_int_eq(iod_log_mark(dl, 3 * GiB + 2 * MiB - 4 * KiB, 4 * KiB), 0);
	ck_assert_int_eq(iod_log_remove_region(dl, 2 * GiB), 0);
	ck_assert_uint_eq(iod_log_region_count(dl), 2);
	ck_assert_uint_eq(iod_log_region(dl, 0)->gpa, GiB);
	ck_assert_uint_eq(iod_log_region(dl, 1)->gpa, 3 * GiB);
	ck_assert_uint_eq(iod_log_count_round(dl), 1);
	ck_assert_uint_eq(iod_log_count_accum(dl), 1);
	assert_plane_bits(iod_log_round_bitmap(dl, 0), 512, 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 1), 512, 511);
	ck_assert_int_eq(iod_log_remove_region(dl, 2 * GiB), -ENOENT);
	ck_assert_int_eq(iod_log_mark(dl, 2 * GiB, 4 * KiB), -ERANGE);

	/* Its bits are gone: the same range added again is clean. */
	ck_assert_int_eq(iod_log_add_region(dl, 2 * GiB, 2 * MiB), 0);
	assert_plane_empty(iod_log_accum_bitmap(dl, 1), 512);
	assert_plane_empty(iod_log_round_bitmap(dl, 1), 512);

	ck_assert_int_eq(iod_log_remove_region(dl, GiB), 0);
	ck_assert_int_eq(iod_log_remove_region(dl, 2 * GiB), 0);
	ck_assert_int_eq(iod_log_remove_region(dl, 3 * GiB), 0);
	ck_assert_uint_eq(iod_log_region_count(dl), 0);
	ck_assert_uint_eq(iod_log_tracked_bytes(dl), 0);
	ck_assert_uint_eq(iod_log_count_round(dl), 0);
	ck_assert_int_eq(iod_log_remove_region(NULL, 0), -EINVAL);
	/* Nothing is in use past the region table any more. */
	ck_assert_uint_eq(read_header(iod_log_fd(dl)).size, size0);
	ck_assert_uint_eq(size0, read_header(iod_log_fd(dl)).regions_offset +
					 IOD_LOG_MAX_REGIONS * sizeof(struct iod_log_region));
}
END_TEST

START_TEST(test_region_enospc)
{
	for (uint64_t i = 0; i < IOD_LOG_MAX_REGIONS; i++)
		ck_assert_int_eq(iod_log_add_region(dl, (2 * i + 1) * 8 * KiB, 4 * KiB), 0);
	ck_assert_uint_eq(iod_log_region_count(dl), IOD_LOG_MAX_REGIONS);

	/* Full: -ENOSPC for a new range, and an overlap still says -EEXIST. */
	ck_assert_int_eq(iod_log_add_region(dl, 0, 4 * KiB), -ENOSPC);
	ck_assert_int_eq(iod_log_add_region(dl, 64 * GiB, 4 * KiB), -ENOSPC);
	ck_assert_int_eq(iod_log_add_region(dl, 8 * KiB, 4 * KiB), -EEXIST);
	ck_assert_uint_eq(iod_log_region_count(dl), IOD_LOG_MAX_REGIONS);

	ck_assert_int_eq(iod_log_remove_region(dl, 3 * 8 * KiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 0, 4 * KiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 16 * KiB, 4 * KiB), -ENOSPC);
	ck_assert_uint_eq(iod_log_region(dl, 0)->gpa, 0);
	for (size_t i = 1; i < IOD_LOG_MAX_REGIONS; i++)
		ck_assert_uint_lt(iod_log_region(dl, i - 1)->gpa, iod_log_region(dl, i)->gpa);
}
END_TEST

/* Adding regions grows and remaps the memfd; bits and offsets survive every move. */
START_TEST(test_region_grow_remap)
{
	for (uint64_t i = 0; i < IOD_LOG_MAX_REGIONS; i++) {
		uint64_t gpa = (IOD_LOG_MAX_REGIONS - 1 - i) * 2 * GiB; /* added in reverse order */
		uint64_t len = GiB + i * 64 * KiB;

		ck_assert_int_eq(iod_log_add_region(dl, gpa, len), 0);
		/* First and last page of each region; the first half goes into a round. */
		ck_assert_int_eq(iod_log_mark(dl, gpa, 1), 0);
		ck_assert_int_eq(iod_log_mark(dl, gpa + len - 1, 1), 0);
		if (i == IOD_LOG_MAX_REGIONS / 2 - 1)
			ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
		/* Every region so far still holds exactly its two bits, in the right plane. */
		if (i % 32 == 31 || i == IOD_LOG_MAX_REGIONS - 1)
			for (size_t j = IOD_LOG_MAX_REGIONS - 1 - i; j < IOD_LOG_MAX_REGIONS; j++) {
				size_t k = j - (IOD_LOG_MAX_REGIONS - 1 - i);
				uint64_t np = region_pages(dl, k);
				bool in_round = i >= IOD_LOG_MAX_REGIONS / 2 - 1 &&
						IOD_LOG_MAX_REGIONS - 1 - j <
							IOD_LOG_MAX_REGIONS / 2;

				ck_assert_uint_eq(iod_log_region(dl, k)->gpa, j * 2 * GiB);
				assert_plane_bits(in_round ? iod_log_round_bitmap(dl, k)
							   : iod_log_accum_bitmap(dl, k),
						  np, 0, np - 1);
				assert_plane_empty(in_round ? iod_log_accum_bitmap(dl, k)
							    : iod_log_round_bitmap(dl, k),
						   np);
			}
	}
	ck_assert_uint_eq(iod_log_count_round(dl), IOD_LOG_MAX_REGIONS);
	ck_assert_uint_eq(iod_log_count_accum(dl), IOD_LOG_MAX_REGIONS);
	/* The file holds all planes. */
	for (size_t j = 0; j < IOD_LOG_MAX_REGIONS; j++) {
		const struct iod_log_region *r = iod_log_region(dl, j);

		ck_assert_uint_eq(r->gpa, j * 2 * GiB);
		ck_assert_uint_le(r->round_offset + iod_bitmap_bytes(r->length >> 12),
				  fd_size(iod_log_fd(dl)));
	}
	ck_assert_int_eq(count_maps("iodirty-log"), 1);
}
END_TEST

/* Space of a removed region is given back (hole) and reused; the file does not grow. */
START_TEST(test_region_space_reuse)
{
	struct stat st;
	uint64_t offset, size;

	ck_assert_int_eq(iod_log_add_region(dl, 0, GiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 64 * GiB, 64 * GiB), 0); /* 2 MiB planes */
	ck_assert_int_eq(iod_log_add_region(dl, 256 * GiB, GiB), 0);
	offset = iod_log_region(dl, 1)->accum_offset;
	size = fd_size(iod_log_fd(dl));

	ck_assert_int_eq(iod_log_mark(dl, 64 * GiB, 64 * GiB), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_mark(dl, 64 * GiB, 64 * GiB), 0);
	ck_assert_uint_eq(iod_log_count_accum(dl), 16 * 1024 * 1024);
	ck_assert_int_eq(fstat(iod_log_fd(dl), &st), 0);
	ck_assert_uint_ge((uint64_t)st.st_blocks * 512, 4 * MiB);

	ck_assert_int_eq(iod_log_remove_region(dl, 64 * GiB), 0);
	ck_assert_int_eq(fstat(iod_log_fd(dl), &st), 0);
	ck_assert_uint_lt((uint64_t)st.st_blocks * 512, 256 * KiB);

	/* Two smaller regions fit into the hole; the file keeps its size; both are clean. */
	ck_assert_int_eq(iod_log_add_region(dl, 512 * GiB, 32 * GiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 1024 * GiB, 16 * GiB), 0);
	ck_assert_uint_eq(iod_log_region(dl, 2)->accum_offset, offset);
	ck_assert_uint_gt(iod_log_region(dl, 3)->accum_offset, offset);
	ck_assert_uint_lt(iod_log_region(dl, 3)->accum_offset, iod_log_region(dl, 1)->accum_offset);
	ck_assert_uint_eq(fd_size(iod_log_fd(dl)), size);
	assert_plane_empty(iod_log_accum_bitmap(dl, 2), region_pages(dl, 2));
	assert_plane_empty(iod_log_round_bitmap(dl, 2), region_pages(dl, 2));
	assert_plane_empty(iod_log_accum_bitmap(dl, 3), region_pages(dl, 3));
	assert_plane_empty(iod_log_round_bitmap(dl, 3), region_pages(dl, 3));
	ck_assert_uint_eq(iod_log_count_accum(dl) + iod_log_count_round(dl), 0);
}
END_TEST

/* --- mark ----------------------------------------------------------------------------- */

START_TEST(test_mark_partial_pages)
{
	const uint64_t base = 4 * GiB;

	ck_assert_int_eq(iod_log_add_region(dl, base, MiB), 0);

	ck_assert_int_eq(iod_log_mark(dl, base + 1, 1), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 256, 0);
	ck_assert_int_eq(iod_log_mark(dl, base + 2 * 4 * KiB - 1, 2), 0); /* straddles 1|2 */
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 256, 0, 1, 2);
	ck_assert_int_eq(iod_log_mark(dl, base + 10 * 4 * KiB, 4 * KiB), 0); /* exactly one */
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 256, 0, 1, 2, 10);
	ck_assert_int_eq(iod_log_mark(dl, base + 20 * 4 * KiB + 100, 3 * 4 * KiB), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 256, 0, 1, 2, 10, 20, 21, 22, 23);
	ck_assert_int_eq(iod_log_mark(dl, base + MiB - 1, 1), 0); /* last byte */
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 256, 0, 1, 2, 10, 20, 21, 22, 23, 255);
	ck_assert_uint_eq(iod_log_count_accum(dl), 9);
	assert_plane_empty(iod_log_round_bitmap(dl, 0), 256);
	ck_assert_int_eq(iod_log_mark(dl, base, MiB), 0);
	ck_assert_uint_eq(iod_log_count_accum(dl), 256);
}
END_TEST

START_TEST(test_mark_ranges)
{
	const uint64_t base = 4 * GiB;

	ck_assert_int_eq(iod_log_add_region(dl, base, 64 * KiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, base + 64 * KiB, 64 * KiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, base + 256 * KiB, 64 * KiB), 0);

	/* Across two adjacent regions. */
	ck_assert_int_eq(iod_log_mark(dl, base + 60 * KiB + 1, 8 * KiB), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 16, 15);
	assert_plane_bits(iod_log_accum_bitmap(dl, 1), 16, 0, 1);
	assert_plane_empty(iod_log_accum_bitmap(dl, 2), 16);

	/* Into the hole, from before the first region, past the last: nothing at all. */
	assert_unchanged_by(iod_log_mark(dl, base + 160 * KiB, 1), -ERANGE);
	assert_unchanged_by(iod_log_mark(dl, base + 124 * KiB, 8 * KiB), -ERANGE);
	assert_unchanged_by(iod_log_mark(dl, base + 252 * KiB, 8 * KiB), -ERANGE);
	assert_unchanged_by(iod_log_mark(dl, base - 1, 2), -ERANGE);
	assert_unchanged_by(iod_log_mark(dl, base + 316 * KiB, 4 * KiB + 1), -ERANGE);
	assert_unchanged_by(iod_log_mark(dl, base, 256 * KiB + 1), -ERANGE);
	assert_unchanged_by(iod_log_mark(dl, 0, 4 * KiB), -ERANGE);
	assert_unchanged_by(iod_log_mark(dl, base, 0), -EINVAL);
	assert_unchanged_by(iod_log_mark(dl, UINT64_MAX, 2), -EOVERFLOW);
	assert_unchanged_by(iod_log_mark(dl, base, UINT64_MAX), -EOVERFLOW);
	ck_assert_int_eq(iod_log_mark(NULL, base, 1), -EINVAL);

	/* All three regions exactly. */
	ck_assert_int_eq(iod_log_mark(dl, base, 128 * KiB), 0);
	ck_assert_int_eq(iod_log_mark(dl, base + 256 * KiB, 64 * KiB), 0);
	ck_assert_uint_eq(iod_log_count_accum(dl), 48);
}
END_TEST

/* --- merge ---------------------------------------------------------------------------- */

/* By hand: 2 KiB pages (the mock IOMMU's) into 4 KiB log pages. */
START_TEST(test_merge_2k_by_hand)
{
	const uint64_t base = 4 * GiB;
	uint64_t src[2] = {0, 0};

	ck_assert_int_eq(iod_log_add_region(dl, base, 64 * KiB), 0);

	/* Bits 1 and 2: [2K, 4K) is in page 0, [4K, 6K) in page 1. */
	src[0] = 0x6;
	ck_assert_int_eq(iod_log_merge(dl, base, src, 0, 4, 11), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 16, 0, 1);

	/* At base + 2K: bit 0 is [2K, 4K) -> 0, bit 3 is [8K, 10K) -> 2, bit 4 [10K, 12K) -> 2. */
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	src[0] = 0x19;
	ck_assert_int_eq(iod_log_merge(dl, base + 2 * KiB, src, 0, 5, 11), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 16, 0, 2);

	/* The last 2 KiB page of the region, from bit 70 of the source. */
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	src[0] = 0;
	src[1] = UINT64_C(1) << 6;
	ck_assert_int_eq(iod_log_merge(dl, base + 60 * KiB, src, 69, 2, 11), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 16, 15);

	/* One 2 KiB page past the region: nothing. */
	assert_unchanged_by(iod_log_merge(dl, base + 60 * KiB, src, 69, 3, 11), -ERANGE);
	/* Aligned to 2 KiB is enough, 1 KiB is not. */
	assert_unchanged_by(iod_log_merge(dl, base + KiB, src, 0, 1, 11), -EINVAL);
}
END_TEST

/* By hand: 2 MiB pages (a huge IOPTE) into 4 KiB log pages. */
START_TEST(test_merge_2m_by_hand)
{
	const uint64_t base = 4 * GiB;
	uint64_t src = 0x1;

	ck_assert_int_eq(iod_log_add_region(dl, base, 8 * MiB), 0);

	ck_assert_int_eq(iod_log_merge(dl, base, &src, 0, 1, 21), 0);
	ck_assert_uint_eq(iod_log_count_accum(dl), 512);
	ck_assert(iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 511));
	ck_assert(!iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 512));

	/* At an odd 4 KiB offset: pages 1 .. 512, and bit 2 -> 1025 .. 1536. */
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	src = 0x5;
	ck_assert_int_eq(iod_log_merge(dl, base + 4 * KiB, &src, 0, 3, 21), 0);
	ck_assert_uint_eq(iod_log_count_accum(dl), 1024);
	ck_assert(!iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 0));
	ck_assert(iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 1));
	ck_assert(iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 512));
	ck_assert(!iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 513));
	ck_assert(!iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 1024));
	ck_assert(iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 1025));
	ck_assert(iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 1536));
	ck_assert(!iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 1537));

	/* Four huge pages from base + 4K end 4K past the region. */
	assert_unchanged_by(iod_log_merge(dl, base + 4 * KiB, &src, 0, 4, 21), -ERANGE);
	assert_unchanged_by(iod_log_merge(dl, base + 2 * KiB, &src, 0, 1, 21), -EINVAL);
}
END_TEST

/* Bits of the source outside [src_off, src_off + nbits) never reach the log. */
START_TEST(test_merge_source_window)
{
	const uint64_t base = 4 * GiB;
	uint64_t src[3] = {UINT64_MAX, UINT64_MAX, UINT64_MAX};

	ck_assert_int_eq(iod_log_add_region(dl, base, MiB), 0);

	ck_assert_int_eq(iod_log_merge(dl, base, src, 3, 5, 12), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 256, 0, 1, 2, 3, 4);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);

	/* 5 pages of 2 KiB: 2.5 log pages. */
	ck_assert_int_eq(iod_log_merge(dl, base + 8 * KiB, src, 61, 5, 11), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 256, 2, 3, 4);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);

	/* 70 bits of 4 KiB from bit 64: the word-aligned start. */
	ck_assert_int_eq(iod_log_merge(dl, base + 4 * KiB, src, 64, 70, 12), 0);
	ck_assert_uint_eq(iod_log_count_accum(dl), 70);
	ck_assert(!iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 0));
	ck_assert(iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 70));
	ck_assert(!iod_bitmap_test(iod_log_accum_bitmap(dl, 0), 71));
}
END_TEST

START_TEST(test_merge_invalid)
{
	const uint64_t base = 4 * GiB;
	uint64_t src[2] = {1, 1};

	ck_assert_int_eq(iod_log_add_region(dl, base, MiB), 0);

	assert_unchanged_by(iod_log_merge(dl, base, src, 0, 0, 12), -EINVAL);
	assert_unchanged_by(iod_log_merge(dl, base, NULL, 0, 1, 12), -EINVAL);
	assert_unchanged_by(iod_log_merge(dl, base, src, 0, 1, 64), -EINVAL);
	assert_unchanged_by(iod_log_merge(dl, base + 512, src, 0, 1, 12), -EINVAL);
	assert_unchanged_by(iod_log_merge(dl, UINT64_MAX - 4 * KiB + 1, src, 0, 2, 12), -EOVERFLOW);
	assert_unchanged_by(iod_log_merge(dl, base, src, 0, UINT64_C(1) << 50, 21), -EOVERFLOW);
	assert_unchanged_by(iod_log_merge(dl, base, src, UINT64_MAX, 1, 12), -EOVERFLOW);
	assert_unchanged_by(iod_log_merge(dl, 0, src, 0, 1, 12), -ERANGE);
	ck_assert_int_eq(iod_log_merge(NULL, base, src, 0, 1, 12), -EINVAL);
	ck_assert_uint_eq(iod_log_count_accum(dl), 0);
}
END_TEST

/* log page shift, source page shift */
static const unsigned merge_variants[][2] = {
	{12, 12}, {12, 11}, {12, 9}, {12, 13}, {12, 16}, {12, 21}, {14, 12}, {14, 11},
};

/*
 * Each variant against the model: aligned, at odd offsets, across two adjacent regions, up
 * to the end of a region and one page past it (into a hole), from inside a hole.
 */
START_TEST(test_merge_variants)
{
	const unsigned shift = merge_variants[_i][0], s = merge_variants[_i][1];
	const uint64_t base = 4 * GiB, page = UINT64_C(1) << s;
	const uint64_t align = s < shift ? page : UINT64_C(1) << shift;
	_cleanup_log_ struct iod_dirty_log *l = NULL;
	uint64_t seed = test_seed(0xd1e7 + _i), src[256];
	struct model m;
	char what[128];
	struct {
		uint64_t gpa, src_off, nbits;
	} cases[] = {
		/* inside R0, aligned */
		{base, 0, (4 * MiB) >> s},
		/* odd offsets in the log and in the source */
		{base + 3 * align, 37, ((2 * MiB) >> s) + 1},
		{base + 5 * align, 64, ((2 * MiB) >> s) + 3},
		/* across R0 | R1 */
		{base + 8 * MiB - (2 * MiB), 100, (4 * MiB) >> s},
		{base + 8 * MiB - 7 * align, 1, ((1 * MiB) >> s) + 7 * align / page + 1},
		/* to the end of R1 exactly */
		{base + 16 * MiB - ((4 * MiB >> s) << s), 5, (4 * MiB) >> s},
		/* in R2 */
		{base + 20 * MiB + align, 3, ((2 * MiB) >> s)},
	};

	rng_state = seed;
	ck_assert_int_eq(iod_log_new(shift, &l), 0);
	model_init(&m, shift, base, 32 * MiB);
	ck_assert_int_eq(iod_log_add_region(l, base, 8 * MiB), model_add(&m, base, 8 * MiB));
	ck_assert_int_eq(iod_log_add_region(l, base + 8 * MiB, 8 * MiB),
			 model_add(&m, base + 8 * MiB, 8 * MiB));
	ck_assert_int_eq(iod_log_add_region(l, base + 20 * MiB, 4 * MiB),
			 model_add(&m, base + 20 * MiB, 4 * MiB));

	for (size_t c = 0; c < ELEMENTSOF(cases); c++) {
		uint64_t nbits = cases[c].nbits ? cases[c].nbits : 1;
		int r;

		ck_assert_uint_le(cases[c].src_off + nbits, 64 * ELEMENTSOF(src));
		for (size_t w = 0; w < ELEMENTSOF(src); w++)
			src[w] = c % 2 ? rng() : rng() & rng() & rng();
		snprintf(what, sizeof(what), "variant %d (log %u, src %u) case %zu seed %#" PRIx64,
			 _i, shift, s, c, seed);
		r = iod_log_merge(l, cases[c].gpa, src, cases[c].src_off, nbits, s);
		ck_assert_msg(r == 0, "%s: %d", what, r);
		ck_assert_int_eq(model_merge(&m, cases[c].gpa, src, cases[c].src_off, nbits, s), 0);
		model_check(&m, l, what);

		/* One source page more runs into a hole or out of R2: refused, nothing changes. */
		if (c >= 5) {
			r = iod_log_merge(l, cases[c].gpa, src, cases[c].src_off,
					  nbits + (UINT64_C(2) * MiB >> s) + 1, s);
			ck_assert_msg(r == -ERANGE, "%s: %d", what, r);
			model_check(&m, l, what);
		}
		/* Snapshot every other case, so both planes carry bits. */
		if (c % 2) {
			ck_assert_int_eq(iod_log_snapshot(l, NULL), 0);
			model_snapshot(&m);
		}
	}

	/* From inside the hole, from before R0, from inside R2 past its end. */
	memset(src, 0xff, sizeof(src));
	ck_assert_int_eq(iod_log_merge(l, base + 17 * MiB, src, 0, 1, s), -ERANGE);
	ck_assert_int_eq(iod_log_merge(l, base - 8 * MiB, src, 0, (16 * MiB) >> s, s), -ERANGE);
	ck_assert_int_eq(
		iod_log_merge(l, base + 24 * MiB - align, src, 0, (2 * align + page - 1) / page, s),
		-ERANGE);
	/* Misaligned to the smaller page. */
	ck_assert_int_eq(iod_log_merge(l, base + align / 2, src, 0, 1, s), -EINVAL);
	snprintf(what, sizeof(what), "variant %d after refusals", _i);
	model_check(&m, l, what);
	model_fini(&m);
}
END_TEST

/* --- rounds --------------------------------------------------------------------------- */

START_TEST(test_rounds)
{
	const uint64_t base = 4 * GiB;
	uint64_t dirty = 12345;

	ck_assert_int_eq(iod_log_add_region(dl, base, MiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 8 * GiB, MiB), 0);

	/* An empty round. */
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 0);
	ck_assert_uint_eq(iod_log_rounds(dl), 1);

	ck_assert_int_eq(iod_log_mark(dl, base, 1), 0);
	ck_assert_int_eq(iod_log_mark(dl, 8 * GiB + 8 * KiB, 1), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 2);
	ck_assert_uint_eq(iod_log_rounds(dl), 2);
	ck_assert_uint_eq(iod_log_count_accum(dl), 0);
	assert_plane_bits(iod_log_round_bitmap(dl, 0), 256, 0);
	assert_plane_bits(iod_log_round_bitmap(dl, 1), 256, 2);

	/* Not acknowledged: the next round holds both the old and the new bits. */
	ck_assert_int_eq(iod_log_mark(dl, base + 4 * KiB, 1), 0);
	ck_assert_int_eq(iod_log_mark(dl, 8 * GiB + 8 * KiB, 1), 0); /* again */
	ck_assert_uint_eq(iod_log_count_accum(dl), 2);
	ck_assert_uint_eq(iod_log_count_round(dl), 2);
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 3);
	assert_plane_bits(iod_log_round_bitmap(dl, 0), 256, 0, 1);
	assert_plane_bits(iod_log_round_bitmap(dl, 1), 256, 2);
	assert_plane_empty(iod_log_accum_bitmap(dl, 0), 256);

	/* Acknowledged: the round plane is clear; what was marked since stays accumulated. */
	ck_assert_int_eq(iod_log_mark(dl, base + MiB - 1, 1), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_uint_eq(iod_log_count_round(dl), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), 256, 255);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	assert_plane_bits(iod_log_round_bitmap(dl, 0), 256, 255);
	ck_assert_uint_eq(iod_log_rounds(dl), 4);

	ck_assert_int_eq(iod_log_snapshot(NULL, &dirty), -EINVAL);
	ck_assert_int_eq(iod_log_ack(NULL), -EINVAL);
}
END_TEST

START_TEST(test_flags)
{
	ck_assert_uint_eq(iod_log_flags(dl), 0);
	iod_log_set_flags(dl, IOD_LOG_F_INCOMPLETE);
	ck_assert_uint_eq(iod_log_flags(dl), IOD_LOG_F_INCOMPLETE);
	iod_log_set_flags(dl, 0);
	ck_assert_uint_eq(iod_log_flags(dl), 0);
	iod_log_set_flags(NULL, 1);
	ck_assert_uint_eq(iod_log_flags(NULL), 0);
	ck_assert_int_eq(iod_log_fd(NULL), -EBADF);
	ck_assert_uint_eq(iod_log_region_count(NULL), 0);
}
END_TEST

/* --- the memfd ------------------------------------------------------------------------ */

/* The daemon's restart: keep the fd, drop the log, take the fd over again. */
START_TEST(test_memfd_survives)
{
	_cleanup_log_ struct iod_dirty_log *again = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t fds;

	ck_assert_int_eq(iod_log_add_region(dl, 4 * GiB, 2 * MiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 4 * GiB + 2 * MiB, 2 * MiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 0, 640 * KiB), 0);
	ck_assert_int_eq(iod_log_mark(dl, 4 * GiB + 2 * MiB - 4 * KiB, 8 * KiB), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_mark(dl, 12 * KiB, 1), 0);
	ck_assert_int_eq(iod_log_mark(dl, 4 * GiB + 4 * MiB - 1, 1), 0);
	iod_log_set_flags(dl, IOD_LOG_F_INCOMPLETE);

	fd = fcntl(iod_log_fd(dl), F_DUPFD_CLOEXEC, 3);
	ck_assert_int_ge(fd, 0);
	dl = iod_log_free(dl);
	ck_assert_int_eq(count_maps("iodirty-log"), 0);

	fds = count_fds();
	ck_assert_int_eq(iod_log_open_fd(fd, &again), 0);
	ck_assert_uint_eq(count_fds(), fds + 1); /* its own dup */
	ck_assert_int_ne(iod_log_fd(again), fd);

	ck_assert_uint_eq(iod_log_page_shift(again), 12);
	ck_assert_uint_eq(iod_log_region_count(again), 3);
	ck_assert_uint_eq(iod_log_region(again, 0)->gpa, 0);
	ck_assert_uint_eq(iod_log_region(again, 0)->length, 640 * KiB);
	ck_assert_uint_eq(iod_log_region(again, 1)->gpa, 4 * GiB);
	ck_assert_uint_eq(iod_log_region(again, 2)->gpa, 4 * GiB + 2 * MiB);
	ck_assert_uint_eq(iod_log_rounds(again), 1);
	ck_assert_uint_eq(iod_log_flags(again), IOD_LOG_F_INCOMPLETE);
	assert_plane_bits(iod_log_accum_bitmap(again, 0), 160, 3);
	assert_plane_empty(iod_log_round_bitmap(again, 0), 160);
	assert_plane_bits(iod_log_round_bitmap(again, 1), 512, 511);
	assert_plane_bits(iod_log_round_bitmap(again, 2), 512, 0);
	assert_plane_empty(iod_log_accum_bitmap(again, 1), 512);
	assert_plane_bits(iod_log_accum_bitmap(again, 2), 512, 511);

	/* And it carries on: grow it, mark, take a round. */
	ck_assert_int_eq(iod_log_add_region(again, 64 * GiB, 64 * GiB), 0);
	ck_assert_int_eq(iod_log_mark(again, 128 * GiB - 1, 1), 0);
	ck_assert_int_eq(iod_log_mark(again, 2 * MiB, 1), -ERANGE);
	ck_assert_int_eq(iod_log_snapshot(again, NULL), 0);
	ck_assert_uint_eq(iod_log_count_round(again), 5);
	ck_assert_uint_eq(iod_log_rounds(again), 2);

	/* Freed: the caller's fd is still its own. */
	again = iod_log_free(again);
	ck_assert_uint_eq(count_fds(), fds);
	ck_assert_int_ge(fcntl(fd, F_GETFD), 0);
	ck_assert_int_eq(iod_log_open_fd(fd, &again), 0);
	ck_assert_uint_eq(iod_log_region_count(again), 4);
	ck_assert_uint_eq(iod_log_count_round(again), 5);
	ck_assert_int_eq(iod_log_open_fd(-1, &again), -EBADF);
}
END_TEST

static bool child_round_is(const uint8_t *map, uint64_t nregions, uint64_t extra)
{
	const struct iod_log_header *h = (const void *)map;
	const struct iod_log_region *t = (const void *)(map + h->regions_offset);

	if (h->magic != IOD_LOG_MAGIC || h->n_regions != nregions || h->rounds != 1 + extra)
		return false;
	for (uint32_t i = 0; i < h->n_regions; i++) {
		const uint64_t *round = (const void *)(map + t[i].round_offset);
		uint64_t nbits = t[i].length >> h->page_shift;

		for (uint64_t b = 0; b < nbits; b++)
			if (iod_bitmap_test(round, b) !=
			    (b % 7 == i || (extra && (b == nbits - 1 || (i == 0 && b == 2)))))
				return false;
	}
	return true;
}

/* Another process maps the memfd on its own and reads the round at round_offset. */
START_TEST(test_memfd_second_process)
{
	int to_child[2], to_parent[2], status;
	char c = 0;
	pid_t pid;

	for (uint64_t i = 0; i < 3; i++) {
		uint64_t gpa = (i + 1) * GiB;

		ck_assert_int_eq(iod_log_add_region(dl, gpa, 300 * KiB), 0);
		for (uint64_t b = i; b < 75; b += 7)
			ck_assert_int_eq(iod_log_mark(dl, gpa + b * 4 * KiB, 4 * KiB), 0);
	}
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_mark(dl, GiB + 8 * KiB, 1), 0); /* accumulating only */
	ck_assert_int_eq(pipe2(to_child, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(to_parent, O_CLOEXEC), 0);

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = iod_log_fd(dl);
		struct stat st;
		uint8_t *map;
		int ok;

		if (fstat(fd, &st) < 0)
			_exit(2);
		map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED)
			_exit(3);
		ok = child_round_is(map, 3, 0);
		/* Let the parent take another round, then look again through the same mapping. */
		if (write(to_parent[1], "r", 1) != 1 || read(to_child[0], &c, 1) != 1)
			_exit(4);
		ok = ok && child_round_is(map, 3, 1);
		_exit(ok ? 0 : 1);
	}

	ck_assert_int_eq(read(to_parent[0], &c, 1), 1);
	for (uint64_t i = 0; i < 3; i++)
		ck_assert_int_eq(iod_log_mark(dl, (i + 1) * GiB + 300 * KiB - 1, 1), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_count_round(dl), 3 * 11 + 1 + 3);
	ck_assert_int_eq(write(to_child[1], "g", 1), 1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	for (int i = 0; i < 2; i++) {
		close(to_child[i]);
		close(to_parent[i]);
	}
}
END_TEST

/* --- memfds that cannot be trusted ---------------------------------------------------- */

struct corruption {
	const char *name;
	void (*mutate)(struct iod_log_header *h, struct iod_log_region *t, uint64_t *file_size);
	int error;
	const char *why; /* in the debug message */
};

#define MUTATION(fname, body)                                                                      \
	static void fname(struct iod_log_header *h, struct iod_log_region *t, uint64_t *file_size) \
	{                                                                                          \
		body;                                                                              \
	}

MUTATION(intact, (void)h)
MUTATION(bad_magic, h->magic ^= 1)
MUTATION(version_2, h->version = 2)
MUTATION(version_0, h->version = 0)
MUTATION(page_shift_small, h->page_shift = 11)
MUTATION(page_shift_big, h->page_shift = 31)
MUTATION(max_regions_other, h->max_regions = IOD_LOG_MAX_REGIONS - 1)
MUTATION(n_regions_too_big, h->n_regions = IOD_LOG_MAX_REGIONS + 1)
MUTATION(n_regions_past_used, h->n_regions = 4)
MUTATION(unknown_flags, h->flags |= 2)
MUTATION(regions_in_header, h->regions_offset = 16)
MUTATION(regions_misaligned, h->regions_offset += 4)
MUTATION(regions_past_size,
	 h->regions_offset = h->size - IOD_LOG_MAX_REGIONS * sizeof(struct iod_log_region) + 8)
MUTATION(regions_offset_wraps, h->regions_offset = UINT64_MAX - 63)
MUTATION(size_past_file, h->size = *file_size + 8)
MUTATION(truncated, *file_size = h->size - 8)
MUTATION(truncated_header, *file_size = 20)
MUTATION(empty_file, *file_size = 0)
MUTATION(unsorted, {
	struct iod_log_region tmp = t[0];
	t[0] = t[2];
	t[2] = tmp;
})
MUTATION(overlapping, t[1].gpa -= 4096)
MUTATION(duplicate, t[1].gpa = t[0].gpa)
MUTATION(region_misaligned, t[2].gpa += 512)
MUTATION(region_length_misaligned, t[2].length -= 512)
MUTATION(region_empty, t[2].length = 0)
MUTATION(region_wraps, t[2].length = UINT64_MAX - 4095)
MUTATION(region_huge, t[2].length = UINT64_C(1) << 62)
/* Region 1 has 64-byte planes: this one ends one word past the bytes in use. */
MUTATION(plane_past_size, t[1].round_offset = h->size - 56)
MUTATION(plane_offset_wraps, t[0].accum_offset = UINT64_MAX - 7)
MUTATION(plane_misaligned, t[0].accum_offset += 4)
MUTATION(plane_over_header, t[0].accum_offset = 0)
MUTATION(plane_over_table, t[1].round_offset = h->regions_offset + 64)
MUTATION(planes_overlap, t[1].accum_offset = t[0].round_offset)
MUTATION(planes_same_region, t[2].round_offset = t[2].accum_offset)

static const struct corruption corruptions[] = {
	{"intact", intact, 0, ""},
	{"bad magic", bad_magic, -EBADMSG, "magic"},
	{"version 2", version_2, -EPROTO, "version 2"},
	{"version 0", version_0, -EPROTO, "version 0"},
	{"page shift 11", page_shift_small, -EBADMSG, "page shift 11"},
	{"page shift 31", page_shift_big, -EBADMSG, "page shift 31"},
	{"max_regions", max_regions_other, -EBADMSG, "255 entries"},
	{"n_regions > max", n_regions_too_big, -EBADMSG, "257 regions"},
	{"n_regions counts a zero entry", n_regions_past_used, -EBADMSG, "region 3"},
	{"unknown flag", unknown_flags, -EBADMSG, "flags 0x2"},
	{"table inside the header", regions_in_header, -EBADMSG, "region table offset"},
	{"table misaligned", regions_misaligned, -EBADMSG, "region table offset"},
	{"table past size", regions_past_size, -EBADMSG, "runs past"},
	{"table offset wraps", regions_offset_wraps, -EBADMSG, "region table offset"},
	{"size past the file", size_past_file, -EBADMSG, "truncated"},
	{"truncated", truncated, -EBADMSG, "truncated"},
	{"truncated in the header", truncated_header, -EBADMSG, "too small"},
	{"empty file", empty_file, -EBADMSG, "too small"},
	{"unsorted", unsorted, -EBADMSG, "not sorted"},
	{"overlapping", overlapping, -EBADMSG, "overlaps the one before"},
	{"duplicate", duplicate, -EBADMSG, "overlaps the one before"},
	{"region misaligned", region_misaligned, -EBADMSG, "not aligned"},
	{"region length misaligned", region_length_misaligned, -EBADMSG, "not aligned"},
	{"region empty", region_empty, -EBADMSG, "empty"},
	{"region wraps", region_wraps, -EBADMSG, "wraps"},
	{"region huge", region_huge, -EBADMSG, "outside"},
	{"plane past size", plane_past_size, -EBADMSG, "round plane of region 1 ["},
	{"plane offset wraps", plane_offset_wraps, -EBADMSG, "accumulating plane of region 0 ["},
	{"plane misaligned", plane_misaligned, -EBADMSG, "misaligned"},
	{"plane over the header", plane_over_header, -EBADMSG, "overlaps the header"},
	{"plane over the table", plane_over_table, -EBADMSG, "overlaps the region table"},
	{"planes overlap", planes_overlap, -EBADMSG, "overlaps accumulating plane of region 1"},
	{"planes of one region", planes_same_region, -EBADMSG, "of region 2 overlaps"},
};

/* A valid log, copied into a memfd, corrupted, offered to iod_log_open_fd(). */
START_TEST(test_open_corrupt)
{
	const struct corruption *c = &corruptions[_i];
	_cleanup_log_ struct iod_dirty_log *opened = NULL;
	_cleanup_close_ int copy = -EBADF;
	uint64_t size, new_size;
	size_t fds, maps;
	uint8_t *map;
	int r;

	ck_assert_int_eq(iod_log_add_region(dl, GiB, MiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, GiB + MiB, 2 * MiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 2 * GiB, 64 * KiB), 0);
	ck_assert_int_eq(iod_log_mark(dl, GiB, 3 * MiB), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_mark(dl, 2 * GiB, 1), 0);

	size = new_size = fd_size(iod_log_fd(dl));
	copy = copy_memfd(iod_log_fd(dl), size, "test-corrupt");
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, copy, 0);
	ck_assert_ptr_ne(map, MAP_FAILED);
	c->mutate((struct iod_log_header *)map,
		  (struct iod_log_region *)(map + ((struct iod_log_header *)map)->regions_offset),
		  &new_size);
	ck_assert_int_eq(munmap(map, size), 0);
	if (new_size != size)
		ck_assert_int_eq(ftruncate(copy, (off_t)new_size), 0);

	fds = count_fds();
	maps = count_maps("test-corrupt");
	ck_assert_uint_eq(maps, 0);
	last_debug[0] = 0;
	r = iod_log_open_fd(copy, &opened);
	ck_assert_msg(r == c->error, "%s: got %d (%s), expected %d; debug: %s", c->name, r,
		      strerror(-r), c->error, last_debug);
	ck_assert_msg(strstr(last_debug, c->why), "%s: debug message '%s' lacks '%s'", c->name,
		      last_debug, c->why);
	if (r < 0) {
		ck_assert_ptr_null(opened);
		ck_assert_uint_eq(count_fds(), fds);
		ck_assert_uint_eq(count_maps("test-corrupt"), 0);
	} else {
		/* The intact copy (not sealed) is a working log with the same content. */
		ck_assert_uint_eq(iod_log_region_count(opened), 3);
		ck_assert_uint_eq(iod_log_count_round(opened), 768);
		ck_assert_uint_eq(iod_log_count_accum(opened), 1);
		ck_assert_int_eq(iod_log_add_region(opened, 0, 4 * KiB), 0);
		ck_assert_uint_eq(count_maps("test-corrupt"), 1);
	}
}
END_TEST

/*
 * A foreign writer left junk where nothing is in use: past the end of a plane's last bit and
 * in free space past the planes. Neither may reach a round or a new region.
 */
START_TEST(test_open_junk)
{
	_cleanup_log_ struct iod_dirty_log *opened = NULL;
	_cleanup_close_ int copy = -EBADF;
	const struct iod_log_region *r;
	uint64_t size, used, junk = UINT64_MAX << 16;
	uint8_t *fill;

	ck_assert_int_eq(iod_log_add_region(dl, GiB, MiB), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 2 * GiB, 64 * KiB), 0); /* 16 bits */
	ck_assert_int_eq(iod_log_mark(dl, 2 * GiB, 1), 0);
	size = fd_size(iod_log_fd(dl));
	used = read_header(iod_log_fd(dl)).size;
	r = iod_log_region(dl, 1);

	copy = copy_memfd(iod_log_fd(dl), size + 256 * KiB, "test-junk");
	fill = malloc(size + 256 * KiB - used);
	ck_assert_ptr_nonnull(fill);
	memset(fill, 0xa5, size + 256 * KiB - used);
	ck_assert_int_eq(pwrite(copy, fill, size + 256 * KiB - used, (off_t)used),
			 (ssize_t)(size + 256 * KiB - used));
	free(fill);
	junk |= 1;
	ck_assert_int_eq(pwrite(copy, &junk, 8, (off_t)r->accum_offset), 8);

	ck_assert_int_eq(iod_log_open_fd(copy, &opened), 0);
	ck_assert_uint_eq(iod_log_count_accum(opened), 1);
	ck_assert_int_eq(iod_log_snapshot(opened, NULL), 0);
	ck_assert_uint_eq(iod_log_round_bitmap(opened, 1)[0], 1);
	ck_assert_uint_eq(iod_log_count_round(opened), 1);

	/* A new region lands in the junk, and is clean all the same. */
	ck_assert_int_eq(iod_log_add_region(opened, 4 * GiB, 4 * MiB), 0);
	ck_assert_uint_ge(iod_log_region(opened, 2)->accum_offset, used);
	ck_assert_uint_lt(iod_log_region(opened, 2)->accum_offset, size + 256 * KiB);
	for (size_t w = 0; w < 16; w++) {
		ck_assert_uint_eq(iod_log_accum_bitmap(opened, 2)[w], 0);
		ck_assert_uint_eq(iod_log_round_bitmap(opened, 2)[w], 0);
	}
	/* The copy was not sealed; taking it over seals it against shrinking. */
	ck_assert_int_eq(fcntl(copy, F_GET_SEALS) & F_SEAL_SHRINK, F_SEAL_SHRINK);
}
END_TEST

START_TEST(test_open_not_a_file)
{
	struct iod_dirty_log *opened = NULL;
	int p[2];
	size_t fds;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	fds = count_fds();
	ck_assert_int_eq(iod_log_open_fd(p[0], &opened), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(last_debug, "regular file"));
	ck_assert_ptr_null(opened);
	ck_assert_uint_eq(count_fds(), fds);
	ck_assert_int_eq(iod_log_open_fd(p[0], NULL), -EINVAL);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(iod_log_open_fd(p[0], &opened), -EBADF);
}
END_TEST

/* --- only pages that hold bits are allocated ------------------------------------------ */

/*
 * The log lives in shared memory (shmem), where touching a page allocates it: a write, and
 * a read through a mapping as well. A clean log, however large its regions, must hold no
 * page of its planes, and a log with a few dirty pages only the pages those bits live in.
 * Bits are checked with pread() here (it reads holes as zeros without allocating them)
 * until the allocation has been looked at.
 */

/* The most one touched spot can allocate: a base page, or a huge page where shmem uses them. */
static uint64_t alloc_unit(void)
{
	static const char *const top = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
	uint64_t unit = (uint64_t)sysconf(_SC_PAGESIZE);
	char line[256] = "", path[512];
	bool top_on;
	struct dirent *e;
	FILE *f;
	DIR *d;

	f = fopen(top, "re");
	if (f) {
		if (!fgets(line, sizeof(line), f))
			line[0] = 0;
		fclose(f);
	}
	top_on = strstr(line, "[always]") || strstr(line, "[within_size]") ||
		 strstr(line, "[force]");
	if (top_on)
		unit = 2 * MiB;
	/* Multi-size THP (Linux 6.11+): hugepages-<size>kB/shmem_enabled, "inherit" = the above. */
	d = opendir("/sys/kernel/mm/transparent_hugepage");
	while (d && (e = readdir(d))) {
		unsigned long kb;

		if (sscanf(e->d_name, "hugepages-%lukB", &kb) != 1)
			continue;
		snprintf(path, sizeof(path), "/sys/kernel/mm/transparent_hugepage/%s/shmem_enabled",
			 e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (!fgets(line, sizeof(line), f))
			line[0] = 0;
		fclose(f);
		if ((strstr(line, "[always]") || strstr(line, "[within_size]") ||
		     (strstr(line, "[inherit]") && top_on)) &&
		    kb * KiB > unit)
			unit = kb * KiB;
	}
	if (d)
		closedir(d);
	return unit;
}

/* Bytes of the memfd allocated (shmem counts whole pages in st_blocks). */
static uint64_t allocated(int fd)
{
	struct stat st;

	ck_assert_int_eq(fstat(fd, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/* Bytes of [off, off + len) of fd that hold data, as SEEK_DATA/SEEK_HOLE see it. */
static uint64_t data_bytes(int fd, uint64_t off, uint64_t len)
{
	uint64_t n = 0, end = off + len;

	for (uint64_t pos = off; pos < end;) {
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA), h;

		if (d < 0) {
			ck_assert_int_eq(errno, ENXIO);
			break;
		}
		if ((uint64_t)d >= end)
			break;
		h = lseek(fd, d, SEEK_HOLE);
		ck_assert_int_gt(h, d);
		n += ((uint64_t)h < end ? (uint64_t)h : end) - (uint64_t)d;
		pos = (uint64_t)h;
	}
	return n;
}

static uint64_t plane_data(const struct iod_dirty_log *log, size_t region, bool round)
{
	const struct iod_log_region *r = iod_log_region(log, region);

	return data_bytes(iod_log_fd(log), round ? r->round_offset : r->accum_offset,
			  iod_bitmap_bytes(r->length >> iod_log_page_shift(log)));
}

/* Bit b of a plane, read with pread(). */
static bool pread_bit(const struct iod_dirty_log *log, size_t region, bool round, uint64_t b)
{
	const struct iod_log_region *r = iod_log_region(log, region);
	uint64_t w;

	ck_assert_int_eq(pread(iod_log_fd(log), &w, sizeof(w),
			       (off_t)((round ? r->round_offset : r->accum_offset) + b / 64 * 8)),
			 (ssize_t)sizeof(w));
	return (w >> (b % 64)) & 1;
}

/*
 * A region of 64 GiB at 4 KiB pages: 2 MiB per plane (more where shmem uses huge pages, so
 * that one huge page is still a small part of a plane).
 */
static uint64_t big_region_length(uint64_t unit)
{
	uint64_t plane = unit * 16 > 2 * MiB ? unit * 16 : 2 * MiB;

	return plane * 8 * (4 * KiB);
}

/* What the header and the region table may take: their pages, nothing of the planes. */
static uint64_t table_bytes(uint64_t unit)
{
	uint64_t end = sizeof(struct iod_log_header) +
		       IOD_LOG_MAX_REGIONS * sizeof(struct iod_log_region) + 64;

	return (end + unit - 1) / unit * unit;
}

/* Rounds without a dirty page, counting, a restart: not one page of a plane is touched. */
START_TEST(test_sparse_clean_rounds)
{
	const uint64_t unit = alloc_unit(), base = 64 * GiB, len = big_region_length(unit);
	_cleanup_log_ struct iod_dirty_log *again = NULL;
	_cleanup_close_ int fd = -EBADF;
	uint64_t before, dirty = 1;

	ck_assert_int_eq(iod_log_add_region(dl, base, len), 0);
	before = allocated(iod_log_fd(dl));
	ck_assert_uint_le(before, table_bytes(unit));

	ck_assert_uint_eq(iod_log_count_accum(dl), 0);
	ck_assert_uint_eq(iod_log_count_round(dl), 0);
	ck_assert_uint_eq(iod_log_count_union(dl), 0);
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 0);
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
		ck_assert_int_eq(iod_log_ack(dl), 0);
	}
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);

	/* Taken over after a restart: validating it and carrying on touch no plane either. */
	fd = fcntl(iod_log_fd(dl), F_DUPFD_CLOEXEC, 3);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(iod_log_open_fd(fd, &again), 0);
	ck_assert_int_eq(iod_log_snapshot(again, &dirty), 0);
	ck_assert_uint_eq(dirty, 0);
	ck_assert_int_eq(iod_log_ack(again), 0);
	ck_assert_uint_eq(iod_log_count_accum(again) + iod_log_count_round(again), 0);
	ck_assert_uint_eq(allocated(fd), before);
	ck_assert_uint_eq(plane_data(again, 0, false) + plane_data(again, 0, true), 0);
}
END_TEST

/* One dirty page allocates about one page of each plane, and the rounds give them back. */
START_TEST(test_sparse_one_page)
{
	const uint64_t unit = alloc_unit(), base = 64 * GiB, len = big_region_length(unit);
	const uint64_t page = len / (4 * KiB) / 2 + 12345; /* somewhere in the middle */
	uint64_t before, dirty = 0;

	ck_assert_int_eq(iod_log_add_region(dl, base, len), 0);
	before = allocated(iod_log_fd(dl));

	ck_assert_int_eq(iod_log_mark(dl, base + page * 4 * KiB, 1), 0);
	ck_assert_uint_le(plane_data(dl, 0, false), unit);
	ck_assert_uint_eq(plane_data(dl, 0, true), 0);

	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 1);
	ck_assert_uint_le(plane_data(dl, 0, false), unit);
	ck_assert_uint_gt(plane_data(dl, 0, true), 0);
	ck_assert_uint_le(plane_data(dl, 0, true), unit);
	ck_assert_uint_le(allocated(iod_log_fd(dl)), before + 2 * unit);
	ck_assert(pread_bit(dl, 0, true, page));
	ck_assert(!pread_bit(dl, 0, false, page));
	ck_assert_uint_eq(iod_log_count_round(dl), 1);
	ck_assert_uint_eq(iod_log_count_accum(dl), 0);

	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert(!pread_bit(dl, 0, true, page));
	ck_assert_uint_eq(iod_log_count_round(dl), 0);
	ck_assert_uint_le(allocated(iod_log_fd(dl)), before + 2 * unit);

	/* Clean rounds hand the pages that held the bit back. */
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);

	/* And the bits are exactly right through the mapping as well. */
	assert_plane_empty(iod_log_accum_bitmap(dl, 0), len >> 12);
	assert_plane_empty(iod_log_round_bitmap(dl, 0), len >> 12);
}
END_TEST

/*
 * A harvest: IOMMU_HWPT_GET_DIRTY_BITMAP pins the bitmap for writing, which allocates the
 * pages, in windows of up to 512 pages from each bit it sets (Linux 6.10 on; all of the
 * bitmap before), and sets a few bits. Here every page is pinned. The round takes the bits,
 * and the pages of the accumulating plane that are left with none go back.
 */
START_TEST(test_sparse_after_harvest)
{
	const uint64_t unit = alloc_unit(), base = 64 * GiB, len = big_region_length(unit);
	const uint64_t nbits = len >> 12, bytes = nbits / 8;
	const uint64_t bits[] = {0, nbits / 3, nbits - 1};
	volatile uint64_t *p;
	uint64_t *direct = NULL, before, dirty = 0;

	ck_assert_int_eq(iod_log_add_region(dl, base, len), 0);
	before = allocated(iod_log_fd(dl));

	for (int harvest = 0; harvest < 2; harvest++) {
		ck_assert_int_eq(iod_log_accum_direct(dl, base, nbits, &direct), 0);
		p = direct;
		for (uint64_t w = 0; w < bytes / 8; w += 512)
			p[w] = p[w]; /* the pin: a write fault on every page */
		if (harvest == 0)
			for (size_t i = 0; i < ELEMENTSOF(bits); i++)
				p[bits[i] / 64] |= UINT64_C(1) << (bits[i] % 64);
		ck_assert_uint_ge(allocated(iod_log_fd(dl)), before + bytes);

		ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
		ck_assert_uint_eq(dirty, ELEMENTSOF(bits));
		ck_assert_uint_le(plane_data(dl, 0, false), ELEMENTSOF(bits) * unit);
		ck_assert_uint_le(plane_data(dl, 0, true), ELEMENTSOF(bits) * unit);
	}
	for (size_t i = 0; i < ELEMENTSOF(bits); i++) {
		ck_assert(pread_bit(dl, 0, true, bits[i]));
		ck_assert(!pread_bit(dl, 0, false, bits[i]));
	}
	/* The second harvest found nothing: its pages are all gone again. */
	ck_assert_uint_eq(plane_data(dl, 0, false), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);
	assert_plane_empty(iod_log_round_bitmap(dl, 0), nbits);
}
END_TEST

/* Merging a bitmap as large as the plane with a single bit set allocates one page of it. */
static const unsigned sparse_merge_shifts[] = {12, 11, 9, 13};

START_TEST(test_sparse_merge)
{
	const unsigned s = sparse_merge_shifts[_i];
	const uint64_t unit = alloc_unit(), base = 64 * GiB, len = big_region_length(unit);
	const uint64_t src_off = _i % 2 ? 37 : 0, nbits = len >> s, bit = nbits / 2 + 777;
	const uint64_t log_page = (bit << s) >> 12;
	_cleanup_free_ uint64_t *src = calloc(iod_bitmap_words(src_off + nbits), 8);
	uint64_t before;

	ck_assert_ptr_nonnull(src);
	ck_assert_int_eq(iod_log_add_region(dl, base, len), 0);
	before = allocated(iod_log_fd(dl));

	src[(src_off + bit) / 64] |= UINT64_C(1) << ((src_off + bit) % 64);
	ck_assert_int_eq(iod_log_merge(dl, base, src, src_off, nbits, s), 0);
	ck_assert_uint_le(plane_data(dl, 0, false), unit);
	ck_assert_uint_eq(plane_data(dl, 0, true), 0);
	ck_assert_uint_le(allocated(iod_log_fd(dl)), before + unit);
	ck_assert(pread_bit(dl, 0, false, log_page));

	/* An all-clear bitmap touches nothing at all. */
	memset(src, 0, iod_bitmap_words(src_off + nbits) * 8);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);
	ck_assert_int_eq(iod_log_merge(dl, base, src, src_off, nbits, s), 0);
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);

	ck_assert_int_eq(iod_log_merge(dl, base + 64 * (UINT64_C(1) << s), src, src_off, 1, s), 0);
	ck_assert_uint_eq(iod_log_count_accum(dl), 0);
	ck_assert_uint_eq(allocated(iod_log_fd(dl)), before);
}
END_TEST

/*
 * iod_log_next_dirty() against a reference: random marks in both planes of two regions (one
 * large and sparse, one small and dense), runs compared page by page, for the round plane
 * alone and for both planes; and through a read-only view of the same memfd.
 */
START_TEST(test_next_dirty_runs)
{
	const uint64_t seed = test_seed(0x5eed + _i);
	const uint64_t lengths[2] = {UINT64_C(1) << 32, UINT64_C(1)
								<< 22}; /* 1 Mi and 1 Ki pages */
	const uint64_t gpas[2] = {0, UINT64_C(1) << 40};
	struct iod_dirty_log *log = NULL, *view = NULL;

	rng_state = seed;
	ck_assert_int_eq(iod_log_new(12, &log), 0);
	for (int g = 0; g < 2; g++)
		ck_assert_int_eq(iod_log_add_region(log, gpas[g], lengths[g]), 0);
	/* round plane: marks, snapshot; then more marks in the accumulating plane */
	for (int pass = 0; pass < 2; pass++) {
		for (int k = 0; k < 200; k++) {
			int g = (int)(rng() % 2);
			uint64_t pages = lengths[g] >> 12, p = rng() % pages, n = 1 + rng() % 70;

			if (p + n > pages)
				n = pages - p;
			ck_assert_int_eq(iod_log_mark(log, gpas[g] + (p << 12), n << 12), 0);
		}
		if (pass == 0)
			ck_assert_int_eq(iod_log_snapshot(log, NULL), 0);
	}
	ck_assert_int_eq(iod_log_open_fd_ro(iod_log_fd(log), &view), 0);

	for (int both = 0; both < 2; both++)
		for (int v = 0; v < 2; v++) {
			struct iod_dirty_log *l = v ? view : log;

			for (size_t g = 0; g < 2; g++) {
				const uint64_t *round = iod_log_round_bitmap(l, g);
				const uint64_t *accum = iod_log_accum_bitmap(l, g);
				uint64_t nbits = lengths[g] >> 12, pos = 0, start, end, total = 0;

				for (uint64_t b = 0;
				     iod_log_next_dirty(l, g, both, b, nbits, &start, &end) == 0;
				     b = end) {
					ck_assert_msg(start >= pos && end > start && end <= nbits,
						      "seed %#" PRIx64 ": run [%" PRIu64
						      ", %" PRIu64 ") after %" PRIu64,
						      seed, start, end, pos);
					/* nothing dirty in the gap, everything dirty in the run, and the
					 * run ends where the dirt does */
					for (uint64_t i = pos; i < end; i++) {
						bool dirty = iod_bitmap_test(round, i) ||
							     (both && iod_bitmap_test(accum, i));

						ck_assert_msg(dirty == (i >= start),
							      "seed %#" PRIx64
							      ", region %zu, both %d: "
							      "page %" PRIu64 " is %s",
							      seed, g, both, i,
							      dirty ? "dirty" : "clean");
					}
					ck_assert(end == nbits ||
						  !(iod_bitmap_test(round, end) ||
						    (both && iod_bitmap_test(accum, end))));
					total += end - start;
					pos = end;
				}
				for (uint64_t i = pos; i < nbits; i++)
					ck_assert(!(iod_bitmap_test(round, i) ||
						    (both && iod_bitmap_test(accum, i))));
				ck_assert_uint_gt(total, 0);
			}
		}
	ck_assert_int_eq(iod_log_next_dirty(log, 2, false, 0, 1, &(uint64_t){0}, &(uint64_t){0}),
			 -EINVAL);
	ck_assert_int_eq(iod_log_mark(view, 0, 4096), -EROFS);
	ck_assert_int_eq(iod_log_snapshot(view, NULL), -EROFS);
	iod_log_free(view);
	iod_log_free(log);
}
END_TEST

/* A reader finds the stretches of a plane that may hold bits, and only those. */
START_TEST(test_sparse_next_data)
{
	const uint64_t unit = alloc_unit(), base = 64 * GiB, len = big_region_length(unit);
	const uint64_t nbits = len >> 12, a = nbits / 4 + 3, b = nbits - 1;
	uint64_t before, first = 0, end = 0, n = 0;

	ck_assert_int_eq(iod_log_add_region(dl, base, len), 0);
	ck_assert_int_eq(iod_log_add_region(dl, 0, 64 * KiB), 0); /* a small one before it */
	before = allocated(iod_log_fd(dl));

	/* Clean: no data anywhere. */
	ck_assert_int_eq(iod_log_next_data(dl, 1, false, 0, &first, &end), -ENODATA);
	ck_assert_int_eq(iod_log_next_data(dl, 1, true, 0, &first, &end), -ENODATA);
	ck_assert_int_eq(iod_log_next_data(dl, 2, false, 0, &first, &end), -EINVAL);
	ck_assert_int_eq(iod_log_next_data(dl, 1, false, 0, NULL, &end), -EINVAL);
	ck_assert_int_eq(iod_log_next_data(NULL, 0, false, 0, &first, &end), -EINVAL);

	/* Pages a and b dirty, a also in the round: one stretch around each, in order. */
	ck_assert_int_eq(iod_log_mark(dl, base + a * 4 * KiB, 1), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, NULL), 0);
	ck_assert_int_eq(iod_log_mark(dl, base + a * 4 * KiB, 1), 0);
	ck_assert_int_eq(iod_log_mark(dl, base + b * 4 * KiB, 1), 0);
	ck_assert_uint_eq(iod_log_count_union(dl), 2);
	ck_assert_uint_eq(iod_log_count_accum(dl), 2);
	ck_assert_uint_eq(iod_log_count_round(dl), 1);

	for (uint64_t bit = 0; iod_log_next_data(dl, 1, false, bit, &first, &end) == 0; bit = end) {
		ck_assert_uint_ge(first, bit);
		ck_assert_uint_gt(end, first);
		ck_assert_uint_le(end, nbits);
		ck_assert_uint_le(end - first, unit * 8);
		ck_assert(first == bit || first % 64 == 0);
		ck_assert_int_eq(iod_bitmap_count(iod_log_accum_bitmap(dl, 1), nbits, first,
						  end - first, &n),
				 0);
		ck_assert_uint_eq(n, 1);
		ck_assert(first <= a ? a < end : first <= b && b < end);
	}
	/* From inside a stretch, the stretch starts there. */
	ck_assert_int_eq(iod_log_next_data(dl, 1, false, a, &first, &end), 0);
	ck_assert_uint_eq(first, a);
	ck_assert_int_eq(iod_log_next_data(dl, 1, true, a + 1, &first, &end), 0);
	ck_assert_uint_eq(first, a + 1);
	ck_assert_int_eq(iod_log_next_data(dl, 1, false, nbits, &first, &end), -ENODATA);
	ck_assert_uint_le(allocated(iod_log_fd(dl)), before + 3 * unit);

	/* The union after a snapshot is the round. */
	ck_assert_int_eq(iod_log_snapshot(dl, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(iod_log_count_union(dl), 2);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_uint_eq(iod_log_count_union(dl), 0);
}
END_TEST

/*
 * Planes that start and end inside a page of the memfd: the round plane of this region
 * begins in the page where the accumulating plane ends. Clearing one plane must neither
 * give back a page the other still uses nor touch its bits.
 */
START_TEST(test_sparse_shared_pages)
{
	const uint64_t nbits = 8 * (3 * 4 * KiB + 1000), len = nbits * 4 * KiB, base = 64 * GiB;
	const struct iod_log_region *r;
	const volatile uint64_t *ro;
	uint64_t dirty = 0, last_word;
	void *map;
	int fd;

	ck_assert_int_eq(iod_log_add_region(dl, base, len), 0);
	r = iod_log_region(dl, 0);
	ck_assert_uint_ne(r->round_offset % (4 * KiB), 0);
	fd = iod_log_fd(dl);
	/* A reader's view: read-only, mapped before any of it happens. */
	map = mmap(NULL, r->round_offset + nbits / 8, PROT_READ, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(map, MAP_FAILED);
	ro = map;
	last_word = (r->accum_offset + nbits / 8 - 8) / 8;

	/* Everything dirty, into the round: the accumulating plane is empty up to its end. */
	ck_assert_int_eq(iod_log_mark(dl, base, len), 0);
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, nbits);
	ck_assert_uint_eq(iod_log_count_accum(dl), 0);
	ck_assert_uint_eq(iod_log_count_round(dl), nbits);
	ck_assert_uint_eq(ro[last_word], 0);
	ck_assert_uint_eq(ro[last_word + 1], UINT64_MAX);
	assert_plane_empty(iod_log_accum_bitmap(dl, 0), nbits);

	/* The first and last page get dirty again; the ack clears the round around them. */
	ck_assert_int_eq(iod_log_mark(dl, base, 1), 0);
	ck_assert_int_eq(iod_log_mark(dl, base + len - 1, 1), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_uint_eq(iod_log_count_round(dl), 0);
	ck_assert_uint_eq(ro[last_word], UINT64_C(1) << 63);
	ck_assert_uint_eq(ro[last_word + 1], 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), nbits, 0, nbits - 1);
	assert_plane_empty(iod_log_round_bitmap(dl, 0), nbits);

	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 2);
	assert_plane_bits(iod_log_round_bitmap(dl, 0), nbits, 0, nbits - 1);
	assert_plane_empty(iod_log_accum_bitmap(dl, 0), nbits);

	/* A clear end of one plane in the shared page, bits at the start of the other. */
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 2);
	ck_assert_uint_eq(ro[last_word + 1], 1);
	assert_plane_bits(iod_log_round_bitmap(dl, 0), nbits, 0, nbits - 1);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	ck_assert_int_eq(iod_log_mark(dl, base + len - 1, 1), 0);
	ck_assert_int_eq(iod_log_ack(dl), 0);
	assert_plane_bits(iod_log_accum_bitmap(dl, 0), nbits, nbits - 1);
	ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
	ck_assert_uint_eq(dirty, 1);
	assert_plane_bits(iod_log_round_bitmap(dl, 0), nbits, nbits - 1);

	/* Clean rounds leave at most the two pages the planes share with something else. */
	ck_assert_int_eq(iod_log_ack(dl), 0);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(iod_log_snapshot(dl, &dirty), 0);
		ck_assert_int_eq(iod_log_ack(dl), 0);
	}
	ck_assert_uint_eq(dirty, 0);
	ck_assert_uint_le(data_bytes(fd, r->accum_offset, 2 * nbits / 8), 2 * alloc_unit());
	ck_assert_uint_eq(ro[last_word], 0);
	ck_assert_int_eq(munmap(map, r->round_offset + nbits / 8), 0);
}
END_TEST

/* --- random operations against the model ---------------------------------------------- */

/*
 * Log page shift, guest space, the most pages of a region, operations. The last variant
 * has regions whose planes span several pages of the memfd at offsets that are not page
 * aligned, so that rounds give pages back next to bits that must stay.
 */
static const struct {
	unsigned shift;
	uint64_t space, region_pages, ops;
} random_variants[] = {
	{12, 16 * MiB, 64, 5000},
	{14, 16 * MiB, 64, 5000},
	{12, 256 * MiB, 40000, 1500},
};

static uint64_t pick_gpa(const struct model *m)
{
	if (m->n > 0 && rng() % 4) {
		size_t i = rng() % m->n;

		return m->regions[i].gpa + rng() % m->regions[i].length;
	}
	return m->base + rng() % m->space;
}

START_TEST(test_random_ops)
{
	const unsigned shift = random_variants[_i].shift;
	const uint64_t base = 4 * GiB, space = random_variants[_i].space;
	const uint64_t page = UINT64_C(1) << shift, region_pages = random_variants[_i].region_pages;
	static const unsigned src_shifts[] = {9, 11, 12, 13, 14, 16, 21};
	const uint64_t seed = test_seed(0x10d1 + _i);
	struct iod_dirty_log *l = NULL;
	uint64_t src[64];
	struct model m;
	char what[160];
	unsigned counts[8] = {0};

	rng_state = seed;
	ck_assert_int_eq(iod_log_new(shift, &l), 0);
	model_init(&m, shift, base, space);

	for (unsigned op = 0; op < random_variants[_i].ops; op++) {
		unsigned kind = rng() % 100;
		int r = 0, want = 0;

		if (kind < 10) {
			/* add: anywhere, or right after an existing region */
			uint64_t gpa = base + (rng() % m.npages) * page;
			uint64_t len = (1 + rng() % region_pages) * page;

			if (m.n > 0 && rng() % 2) {
				size_t i = rng() % m.n;

				gpa = m.regions[i].gpa + m.regions[i].length;
			}
			if (gpa >= base + space || m.n == MODEL_MAX_REGIONS)
				continue;
			if (len > base + space - gpa)
				len = base + space - gpa;
			snprintf(what, sizeof(what), "add [%#" PRIx64 " +%#" PRIx64 "]", gpa, len);
			want = model_add(&m, gpa, len);
			r = iod_log_add_region(l, gpa, len);
			counts[0]++;
		} else if (kind < 15) {
			uint64_t gpa = m.n > 0 && rng() % 2 ? m.regions[rng() % m.n].gpa
							    : base + (rng() % m.npages) * page;

			snprintf(what, sizeof(what), "remove %#" PRIx64, gpa);
			want = model_remove(&m, gpa);
			r = iod_log_remove_region(l, gpa);
			counts[1]++;
		} else if (kind < 40) {
			uint64_t gpa = pick_gpa(&m);
			uint64_t len = 1 + rng() % (rng() % 2	? 3 * page
						    : rng() % 8 ? 40 * page
								: region_pages * page);

			snprintf(what, sizeof(what), "mark [%#" PRIx64 " +%#" PRIx64 "]", gpa, len);
			want = model_mark(&m, gpa, len);
			r = iod_log_mark(l, gpa, len);
			counts[2]++;
		} else if (kind < 75) {
			unsigned s = src_shifts[rng() % ELEMENTSOF(src_shifts)];
			uint64_t align = UINT64_C(1) << (s < shift ? s : shift);
			uint64_t gpa = pick_gpa(&m) & ~(align - 1);
			uint64_t max = (MiB >> s) > 2 ? MiB >> s : 2;
			uint64_t src_off = rng() % 130;
			uint64_t nbits = 1 + rng() % (max < 64 * 64 - 130 ? max : 64 * 64 - 130);
			unsigned density = rng() % 4;

			for (size_t w = 0; w < ELEMENTSOF(src); w++)
				src[w] = density == 0	? rng()
					 : density == 1 ? rng() & rng() & rng() & rng()
					 : density == 2 ? UINT64_MAX
							: 0;
			snprintf(what, sizeof(what),
				 "merge [%#" PRIx64 " %" PRIu64 " bits of 2^%u from bit %" PRIu64
				 "]",
				 gpa, nbits, s, src_off);
			want = model_merge(&m, gpa, src, src_off, nbits, s);
			r = iod_log_merge(l, gpa, src, src_off, nbits, s);
			counts[3]++;
		} else if (kind < 88) {
			uint64_t dirty = 0, expect = model_snapshot(&m);

			snprintf(what, sizeof(what), "snapshot");
			r = iod_log_snapshot(l, &dirty);
			if (dirty != expect)
				ck_abort_msg("seed %#" PRIx64 " op %u: snapshot reports %" PRIu64
					     ", expected %" PRIu64,
					     seed, op, dirty, expect);
			counts[4]++;
		} else if (kind < 97) {
			snprintf(what, sizeof(what), "ack");
			model_ack(&m);
			r = iod_log_ack(l);
			counts[5]++;
		} else {
			/* restart */
			_cleanup_close_ int fd = fcntl(iod_log_fd(l), F_DUPFD_CLOEXEC, 3);

			snprintf(what, sizeof(what), "reopen");
			l = iod_log_free(l);
			r = iod_log_open_fd(fd, &l);
			counts[6]++;
		}

		if (r != want)
			ck_abort_msg("seed %#" PRIx64
				     " (log 2^%u) op %u: %s returned %d, expected %d",
				     seed, shift, op, what, r, want);
		{
			char ctx[256];

			snprintf(ctx, sizeof(ctx), "seed %#" PRIx64 " (log 2^%u) op %u: after %s",
				 seed, shift, op, what);
			model_check(&m, l, ctx);
		}
	}
	/* Every kind of operation ran, and merges both succeeded and were refused. */
	for (unsigned k = 0; k < 7; k++)
		ck_assert_uint_gt(counts[k], 10);
	ck_assert_uint_eq(iod_log_rounds(l), counts[4]);
	iod_log_free(l);
	model_fini(&m);
}
END_TEST

static Suite *dirty_log_suite(void)
{
	Suite *s = suite_create("dirty-log");
	TCase *tc;

	tc = tcase_create("regions");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_new_page_shift);
	tcase_add_test(tc, test_memfd_owner_only);
	tcase_add_test(tc, test_accum_direct);
	tcase_add_test(tc, test_region_sorted);
	tcase_add_test(tc, test_region_invalid);
	tcase_add_test(tc, test_region_remove);
	tcase_add_test(tc, test_region_enospc);
	tcase_add_test(tc, test_region_grow_remap);
	tcase_add_test(tc, test_region_space_reuse);
	suite_add_tcase(s, tc);

	tc = tcase_create("mark");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_mark_partial_pages);
	tcase_add_test(tc, test_mark_ranges);
	suite_add_tcase(s, tc);

	tc = tcase_create("merge");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_merge_2k_by_hand);
	tcase_add_test(tc, test_merge_2m_by_hand);
	tcase_add_test(tc, test_merge_source_window);
	tcase_add_test(tc, test_merge_invalid);
	tcase_add_loop_test(tc, test_merge_variants, 0, ELEMENTSOF(merge_variants));
	suite_add_tcase(s, tc);

	tc = tcase_create("rounds");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_rounds);
	tcase_add_test(tc, test_flags);
	suite_add_tcase(s, tc);

	tc = tcase_create("memfd");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_memfd_survives);
	tcase_add_test(tc, test_memfd_second_process);
	tcase_add_loop_test(tc, test_open_corrupt, 0, ELEMENTSOF(corruptions));
	tcase_add_test(tc, test_open_junk);
	tcase_add_test(tc, test_open_not_a_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("sparse");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_sparse_clean_rounds);
	tcase_add_test(tc, test_sparse_one_page);
	tcase_add_test(tc, test_sparse_after_harvest);
	tcase_add_loop_test(tc, test_sparse_merge, 0, ELEMENTSOF(sparse_merge_shifts));
	tcase_add_test(tc, test_sparse_next_data);
	tcase_add_loop_test(tc, test_next_dirty_runs, 0, 4);
	tcase_add_test(tc, test_sparse_shared_pages);
	suite_add_tcase(s, tc);

	tc = tcase_create("random");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_random_ops, 0, ELEMENTSOF(random_variants));
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dirty_log_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
