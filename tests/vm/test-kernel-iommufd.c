/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libiodirty against the real iommufd of the guest kernel, on the selftest mock devices
 * (CONFIG_IOMMUFD_TEST): real HWPT dirty tracking through the real iommufd code, with the
 * mock's DIRTY command standing in for a device that writes memory.
 *
 * What it pins down:
 *  - harvested bits are exactly the pages marked dirty, for buffers of 8 KiB .. 256 MiB and
 *    bitmap pages of 2 and 4 KiB; clearing and non-clearing reads; a second read after a
 *    clearing one is empty;
 *  - a huge mock IOPTE sets every bit it covers, and IOMMU_OPTION_HUGE_PAGES=0 avoids that;
 *  - the kernel's traps: ENABLE twice wipes the bits (iod_hwpt_set_tracking() does not), and
 *    a read that starts in or crosses an unmapped hole loses bits on a "silent" kernel (up to
 *    6.12.117) or fails with EINVAL on a "strict" one (6.12.118 on): which one runs here is
 *    printed, anything else fails; reading per mapped area with iod_hwpt_read_dirty() loses
 *    none on both;
 *  - a mock IOMMU without dirty tracking: iod_hwpt_alloc(IOD_HWPT_DIRTY) is -EOPNOTSUPP;
 *  - fault injection through /proc/self/task/<tid>/fail-nth over every failure point of the
 *    library's set-up and harvest calls: each failure is a negative errno, leaves nothing
 *    behind, and the kernel logs no warning.
 *
 * Exit 77 with the reason printed when the kernel has no iommufd or no mock devices.
 * IOD_TEST_SEED=<n> repeats a run's random choices.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/iommufd.h>

#include "iodirty.h"
#include "iommufd-mock.h"
#include "huge-buffer.h"
#include "vm-test.h"

#define SZ_1K (UINT64_C(1) << 10)
#define SZ_1M (UINT64_C(1) << 20)

static uint64_t mock_page; /* the mock's IOPTE size: half a CPU page */
static uint64_t cpu_page;

/* ---- the mock ------------------------------------------------------------------------ */

static int mock_replace(int fd, uint32_t stdev, uint32_t pt_id, uint32_t *ret_pt_id)
{
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DOMAIN_REPLACE,
		.id = stdev,
		.replace.pt_id = pt_id,
	};

	if (ioctl(fd, IOD_MOCK_CMD, &cmd) < 0)
		return -errno;
	if (ret_pt_id)
		*ret_pt_id = cmd.replace.pt_id;
	return 0;
}

/* Mark the mock IOPTEs whose bits are set in marks (one bit per mock page from iova). */
static int mock_dirty(int fd, uint32_t hwpt, uint64_t iova, uint64_t length, const uint64_t *marks,
		      uint64_t *ret_nr)
{
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DIRTY,
		.id = hwpt,
		.dirty =
			{
				.iova = iova,
				.length = length,
				.page_size = mock_page,
				.uptr = (uintptr_t)marks,
			},
	};

	if (ioctl(fd, IOD_MOCK_CMD, &cmd) < 0)
		return -errno;
	if (ret_nr)
		*ret_nr = cmd.dirty.out_nr_dirty;
	return 0;
}

/* The raw ioctls the library exists to avoid. */
static int raw_enable(int fd, uint32_t hwpt)
{
	struct iommu_hwpt_set_dirty_tracking cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
		.hwpt_id = hwpt,
	};

	return ioctl(fd, IOMMU_HWPT_SET_DIRTY_TRACKING, &cmd) < 0 ? -errno : 0;
}

static int raw_read_dirty(int fd, uint32_t hwpt, uint64_t iova, uint64_t length, uint64_t page_size,
			  uint64_t *bitmap, uint32_t flags)
{
	struct iommu_hwpt_get_dirty_bitmap cmd = {
		.size = sizeof(cmd),
		.hwpt_id = hwpt,
		.flags = flags,
		.iova = iova,
		.length = length,
		.page_size = page_size,
		.data = (uintptr_t)bitmap,
	};

	return ioctl(fd, IOMMU_HWPT_GET_DIRTY_BITMAP, &cmd) < 0 ? -errno : 0;
}

/* ---- bitmaps ------------------------------------------------------------------------- */

static uint64_t *bitmap_new(uint64_t nbits)
{
	/* one guard word past the end: the kernel must not write there */
	uint64_t *map = calloc(iod_bitmap_words(nbits) + 1, sizeof(uint64_t));

	ck_assert_ptr_nonnull(map);
	return map;
}

static void bitmap_zero(uint64_t *map, uint64_t nbits)
{
	memset(map, 0, (iod_bitmap_words(nbits) + 1) * sizeof(uint64_t));
}

static void bit_set(uint64_t *map, uint64_t bit)
{
	map[bit / 64] |= UINT64_C(1) << (bit % 64);
}

static uint64_t bits_count(const uint64_t *map, uint64_t nbits)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w < iod_bitmap_words(nbits); w++)
		n += __builtin_popcountll(map[w]);
	return n;
}

#define assert_bitmap_eq(got, want, nbits, what)                                               \
	do {                                                                                   \
		uint64_t _nw = iod_bitmap_words(nbits);                                        \
		for (uint64_t _w = 0; _w < _nw; _w++)                                          \
			ck_assert_msg((got)[_w] == (want)[_w],                                 \
				      "%s: word %" PRIu64 " of %" PRIu64 ": got %#" PRIx64     \
				      ", want %#" PRIx64 " (%" PRIu64 " vs %" PRIu64 " bits)", \
				      what, _w, _nw, (got)[_w], (want)[_w],                    \
				      bits_count(got, nbits), bits_count(want, nbits));        \
		ck_assert_msg((got)[_nw] == 0, "%s: the kernel wrote past the bitmap", what);  \
	} while (0)

#define assert_bitmap_empty(got, nbits, what)                                            \
	do {                                                                             \
		uint64_t _n = bits_count(got, nbits);                                    \
		ck_assert_msg(_n == 0, "%s: %" PRIu64 " bits set, want none", what, _n); \
	} while (0)

/*
 * Random dirty mock pages: about one in 'density', always the first and the last, and a
 * run crossing a word boundary of the bitmap when there is room.
 */
static void pick_marks(uint64_t *marks, uint64_t npages, unsigned density)
{
	bitmap_zero(marks, npages);
	for (uint64_t i = 0; i < npages; i++)
		if (rng() % density == 0)
			bit_set(marks, i);
	bit_set(marks, 0);
	bit_set(marks, npages - 1);
	if (npages > 200)
		for (uint64_t i = 60; i < 140; i++)
			bit_set(marks, i);
}

/* What a read at page_size (a multiple of the mock page) must return for these marks. */
static void expected_bits(uint64_t *want, const uint64_t *marks, uint64_t npages,
			  uint64_t page_size)
{
	uint64_t ratio = page_size / mock_page;

	bitmap_zero(want, npages / ratio);
	for (uint64_t i = 0; i < npages; i++)
		if (iod_bitmap_test(marks, i))
			bit_set(want, i / ratio);
}

/* ---- a context with a mock device on a dirty-tracking HWPT ----------------------------- */

struct mock_env {
	struct iod_iommufd *ictx;
	int fd;
	uint32_t ioas;
	uint32_t stdev;
	uint32_t idev;
	struct iod_hwpt hwpt;
};

static void env_setup(struct mock_env *e, uint32_t dev_flags, bool huge_pages)
{
	uint32_t auto_hwpt, attached;

	*e = (struct mock_env){};
	ck_assert_int_eq(iod_iommufd_open(NULL, &e->ictx), 0);
	e->fd = iod_iommufd_fd(e->ictx);
	ck_assert_int_eq(iod_ioas_alloc(e->ictx, &e->ioas), 0);
	if (!huge_pages) {
		bool on = true;

		ck_assert_int_eq(iod_ioas_set_huge_pages(e->ictx, e->ioas, false), 0);
		ck_assert_int_eq(iod_ioas_get_huge_pages(e->ictx, e->ioas, &on), 0);
		ck_assert(!on);
	}

	/* the mock device comes attached to an automatic HWPT of the IOAS ... */
	ck_assert_int_eq(
		iod_mock_domain(e->fd, e->ioas, dev_flags, &e->stdev, &auto_hwpt, &e->idev), 0);
	/* ... and moves to a dirty-tracking HWPT allocated for it */
	ck_assert_int_eq(iod_hwpt_alloc(e->ictx, e->idev, e->ioas, IOD_HWPT_DIRTY, &e->hwpt.id), 0);
	e->hwpt.dirty_capable = true;
	ck_assert_int_eq(mock_replace(e->fd, e->stdev, e->hwpt.id, &attached), 0);
	ck_assert_uint_eq(attached, e->hwpt.id);

	ck_assert_int_eq(iod_hwpt_set_tracking(e->ictx, &e->hwpt, true), 0);
	ck_assert(e->hwpt.tracking);
}

static void env_teardown(struct mock_env *e)
{
	/* reverse order: the device holds the HWPT, the HWPT holds the IOAS */
	ck_assert_int_eq(iod_iommufd_destroy(e->ictx, e->stdev), 0);
	ck_assert_int_eq(iod_iommufd_destroy(e->ictx, e->hwpt.id), 0);
	ck_assert_int_eq(iod_iommufd_destroy(e->ictx, e->ioas), 0);
	e->ictx = iod_iommufd_free(e->ictx);
}

static void *buffer_new(uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_msg(p != MAP_FAILED, "mmap %" PRIu64 " bytes: %s", size, strerror(errno));
	return p;
}

/* ---- exact bits for every size and page size ---------------------------------------- */

static const uint64_t dirty_sizes[] = {
	8 * SZ_1K, 64 * SZ_1K, 2 * SZ_1M, 16 * SZ_1M, 256 * SZ_1M,
};

START_TEST(test_dirty_bits_exact)
{
	const uint64_t size = dirty_sizes[_i];
	const uint64_t iova = IOD_MOCK_APERTURE_START;
	const uint64_t npages = size / mock_page;
	_cleanup_free_ uint64_t *marks = NULL, *want = NULL, *got = NULL;
	struct mock_env e;
	uint64_t unmapped, nr;
	void *buf;

	if (vm_mem_available() < size + 64 * SZ_1M) {
		vm_skip_part("%" PRIu64 " KiB buffer: the guest has only %" PRIu64 " MiB available",
			     size / SZ_1K, vm_mem_available() / SZ_1M);
		return;
	}

	env_setup(&e, 0, true);
	buf = buffer_new(size);
	ck_assert_int_eq(
		iod_ioas_map(e.ictx, e.ioas, buf, size, iova, IOD_MAP_READ | IOD_MAP_WRITE), 0);

	marks = bitmap_new(npages);
	want = bitmap_new(npages);
	got = bitmap_new(npages);

	for (uint64_t page_size = mock_page; page_size <= 2 * mock_page; page_size *= 2) {
		const uint64_t nbits = size / page_size;

		for (int no_clear = 0; no_clear <= 1; no_clear++) {
			const unsigned flags = no_clear ? IOD_READ_NO_CLEAR : 0;
			char what[128];

			snprintf(what, sizeof(what), "%" PRIu64 " KiB, %" PRIu64 " B pages, %s",
				 size / SZ_1K, page_size, no_clear ? "no-clear" : "clear");

			pick_marks(marks, npages, 8);
			ck_assert_int_eq(mock_dirty(e.fd, e.hwpt.id, iova, size, marks, &nr), 0);
			ck_assert_uint_eq(nr, bits_count(marks, npages));
			expected_bits(want, marks, npages, page_size);

			bitmap_zero(got, nbits);
			ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, iova, size,
							     page_size, got, flags),
					 0);
			assert_bitmap_eq(got, want, nbits, what);

			/* again: the same bits without clearing, none after a clear */
			bitmap_zero(got, nbits);
			ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, iova, size,
							     page_size, got, flags),
					 0);
			if (no_clear) {
				assert_bitmap_eq(got, want, nbits, what);
				/* a clearing read takes them, the one after finds none */
				bitmap_zero(got, nbits);
				ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, iova, size,
								     page_size, got, 0),
						 0);
				assert_bitmap_eq(got, want, nbits, what);
				bitmap_zero(got, nbits);
				ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, iova, size,
								     page_size, got, 0),
						 0);
			}
			assert_bitmap_empty(got, nbits, what);
			printf("PASS: dirty bits exact: %s (%" PRIu64 " of %" PRIu64 " bits)\n",
			       what, bits_count(want, nbits), nbits);
		}
	}

	ck_assert_int_eq(iod_ioas_unmap(e.ictx, e.ioas, iova, size, &unmapped), 0);
	ck_assert_uint_eq(unmapped, size);
	env_teardown(&e);
	munmap(buf, size);
}
END_TEST

/* ---- huge IOPTEs --------------------------------------------------------------------- */

static void huge_case(bool huge_pages)
{
	const uint64_t size = 2 * SZ_1M;
	const uint64_t iova = IOD_MOCK_APERTURE_START; /* 1 MiB aligned */
	const uint64_t npages = size / mock_page;
	const uint64_t per_iopte = IOD_MOCK_HUGE_IOPTE_PAGES;
	_cleanup_free_ uint64_t *marks = NULL, *want = NULL, *got = NULL;
	const char *why = NULL;
	struct mock_env e;
	uint64_t nr;
	void *buf;

	buf = vm_huge_buffer(size, IOD_MOCK_HUGE_IOPTE_PAGES * mock_page, &why);
	if (!buf) {
		vm_skip_part("%s", why);
		return;
	}

	env_setup(&e, IOD_MOCK_DEV_HUGE_IOVA, huge_pages);
	ck_assert_int_eq(
		iod_ioas_map(e.ictx, e.ioas, buf, size, iova, IOD_MAP_READ | IOD_MAP_WRITE), 0);
	marks = bitmap_new(npages);
	want = bitmap_new(npages);
	got = bitmap_new(npages);

	/* one dirty mock page in the first huge IOPTE, the last one of the second */
	for (uint64_t page_size = mock_page; page_size <= 2 * mock_page; page_size *= 2) {
		const uint64_t nbits = size / page_size, ratio = page_size / mock_page;
		const uint64_t pick[] = {5, 2 * per_iopte - 1};

		for (size_t k = 0; k < ELEMENTSOF(pick); k++) {
			bitmap_zero(marks, npages);
			bit_set(marks, pick[k]);
			ck_assert_int_eq(mock_dirty(e.fd, e.hwpt.id, iova, size, marks, &nr), 0);
			ck_assert_uint_eq(nr, 1);

			bitmap_zero(want, nbits);
			if (huge_pages) {
				/* every bit of the IOPTE holding the page */
				uint64_t first = pick[k] / per_iopte * per_iopte;

				for (uint64_t i = first; i < first + per_iopte; i++)
					bit_set(want, i / ratio);
			} else
				bit_set(want, pick[k] / ratio);

			bitmap_zero(got, nbits);
			ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, iova, size,
							     page_size, got, 0),
					 0);
			assert_bitmap_eq(got, want, nbits,
					 huge_pages ? "huge IOPTE" : "huge pages off");
			printf("PASS: %s: page %" PRIu64 " dirty, %" PRIu64
			       " B bitmap pages: %" PRIu64 " bits\n",
			       huge_pages ? "huge IOPTE" : "huge pages off", pick[k], page_size,
			       bits_count(got, nbits));
		}
	}

	env_teardown(&e);
	munmap(buf, size);
}

START_TEST(test_huge_iopte_sets_every_bit)
{
	huge_case(true);
}
END_TEST

START_TEST(test_huge_pages_off_keeps_base_granularity)
{
	huge_case(false);
}
END_TEST

/* ---- trap: ENABLE twice -------------------------------------------------------------- */

START_TEST(test_enable_twice)
{
	const uint64_t size = 64 * SZ_1K, iova = IOD_MOCK_APERTURE_START;
	const uint64_t npages = size / mock_page;
	_cleanup_free_ uint64_t *marks = bitmap_new(npages), *got = bitmap_new(npages);
	struct mock_env e;
	uint64_t nr;
	void *buf;

	env_setup(&e, 0, true);
	buf = buffer_new(size);
	ck_assert_int_eq(
		iod_ioas_map(e.ictx, e.ioas, buf, size, iova, IOD_MAP_READ | IOD_MAP_WRITE), 0);
	pick_marks(marks, npages, 4);

	/* the trap: ENABLE on a HWPT that tracks already throws the bits away */
	ck_assert_int_eq(mock_dirty(e.fd, e.hwpt.id, iova, size, marks, &nr), 0);
	ck_assert_uint_gt(nr, 0);
	ck_assert_int_eq(raw_enable(e.fd, e.hwpt.id), 0);
	bitmap_zero(got, npages);
	ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, iova, size, mock_page, got,
					     IOD_READ_NO_CLEAR),
			 0);
	assert_bitmap_empty(got, npages, "after a raw second ENABLE");
	printf("PASS: raw ENABLE twice wiped %" PRIu64 " dirty pages\n", nr);

	/* the library: enabling again is a no-op, nothing is lost */
	ck_assert_int_eq(mock_dirty(e.fd, e.hwpt.id, iova, size, marks, &nr), 0);
	ck_assert_int_eq(iod_hwpt_set_tracking(e.ictx, &e.hwpt, true), 0);
	ck_assert_int_eq(iod_hwpt_set_tracking(e.ictx, &e.hwpt, true), 0);
	ck_assert(e.hwpt.tracking);
	bitmap_zero(got, npages);
	ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, iova, size, mock_page, got, 0), 0);
	assert_bitmap_eq(got, marks, npages, "after iod_hwpt_set_tracking(enable) twice");
	printf("PASS: iod_hwpt_set_tracking(enable) twice kept %" PRIu64 " dirty pages\n", nr);

	/* off and on again is a real change: the library sends it, the kernel starts clean */
	ck_assert_int_eq(mock_dirty(e.fd, e.hwpt.id, iova, size, marks, &nr), 0);
	ck_assert_int_eq(iod_hwpt_set_tracking(e.ictx, &e.hwpt, false), 0);
	ck_assert(!e.hwpt.tracking);
	ck_assert_int_eq(iod_hwpt_set_tracking(e.ictx, &e.hwpt, true), 0);
	ck_assert(e.hwpt.tracking);
	bitmap_zero(got, npages);
	ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, iova, size, mock_page, got, 0), 0);
	assert_bitmap_empty(got, npages, "after disable + enable");

	env_teardown(&e);
	munmap(buf, size);
}
END_TEST

/* ---- trap: holes --------------------------------------------------------------------- */

/*
 * Two kernels are in the field (enum iod_hole_behavior): up to 6.12.117 a read that starts in
 * or crosses an unmapped hole returns 0 and the bits from the hole on are missing ("silent");
 * from 6.12.118 it fails with EINVAL ("strict"). The test decides which one runs here from
 * what the raw ioctl does, checks that the library's probe says the same, and fails when the
 * kernel does anything else: a third behaviour must be looked at, not passed.
 */
START_TEST(test_harvest_across_hole)
{
	const uint64_t area = 64 * SZ_1K, base = IOD_MOCK_APERTURE_START;
	const struct iod_range areas[] = {
		{base, area},
		{base + 2 * area, area}, /* [base + area, base + 2 * area) is a hole */
	};
	const uint64_t span = 3 * area, npages = span / mock_page, apages = area / mock_page;
	_cleanup_free_ uint64_t *marks = bitmap_new(apages), *want = bitmap_new(npages),
				*got = bitmap_new(npages), *part = bitmap_new(apages);
	uint64_t nr, total = 0, before = 0, across_bits, across_after = 0, start_bits, hole, hlen;
	enum iod_hole_behavior seen, probed;
	int across_rc, start_rc, off_rc;
	struct mock_env e;
	uint8_t *buf;

	env_setup(&e, 0, true);
	buf = buffer_new(2 * area);
	for (size_t a = 0; a < ELEMENTSOF(areas); a++)
		ck_assert_int_eq(iod_ioas_map(e.ictx, e.ioas, buf + a * area, area, areas[a].start,
					      IOD_MAP_READ | IOD_MAP_WRITE),
				 0);

	/* dirty pages in both areas; want: their bits over the whole span */
	bitmap_zero(want, npages);
	for (size_t a = 0; a < ELEMENTSOF(areas); a++) {
		pick_marks(marks, apages, 4);
		ck_assert_int_eq(mock_dirty(e.fd, e.hwpt.id, areas[a].start, area, marks, &nr), 0);
		ck_assert_uint_eq(nr, bits_count(marks, apages));
		total += nr;
		if (a == 0)
			before = nr;
		for (uint64_t i = 0; i < apages; i++)
			if (iod_bitmap_test(marks, i))
				bit_set(want, (areas[a].start - base) / mock_page + i);
	}

	/* one raw read over the span, across the hole */
	bitmap_zero(got, npages);
	across_rc = raw_read_dirty(e.fd, e.hwpt.id, base, span, mock_page, got,
				   IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR);
	across_bits = bits_count(got, npages);
	for (uint64_t i = 2 * apages; i < npages; i++)
		across_after += iod_bitmap_test(got, i);

	/* one raw read that starts in the hole */
	bitmap_zero(got, npages);
	start_rc = raw_read_dirty(e.fd, e.hwpt.id, base + area, 2 * area, mock_page, got,
				  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR);
	start_bits = bits_count(got, 2 * apages);

	if (across_rc == 0 && across_bits == before && across_after == 0 && start_rc == 0 &&
	    start_bits == 0)
		seen = IOD_HOLES_SILENT;
	else if (across_rc == -EINVAL && start_rc == -EINVAL)
		seen = IOD_HOLES_STRICT;
	else
		ck_abort_msg("the kernel's dirty read over a hole is neither known behaviour: "
			     "across the hole rc %d with %" PRIu64 " of %" PRIu64 " bits (%" PRIu64
			     " after it), starting in the hole rc %d with %" PRIu64
			     " bits; silent would be 0 with %" PRIu64
			     " bits and none after, then 0 with none; strict EINVAL twice. "
			     "Look at the kernel, then at enum iod_hole_behavior",
			     across_rc, across_bits, total, across_after, start_rc, start_bits,
			     before);

	/* the library's probe, on a range outside the usable IOVA, says the same */
	ck_assert_int_eq(iod_ioas_find_hole(e.ictx, e.ioas, &hole, &hlen), 0);
	ck_assert_msg(hole + hlen <= IOD_MOCK_APERTURE_START || hole >= IOD_MOCK_APERTURE_END,
		      "probe range 0x%" PRIx64 " inside the mock aperture", hole);
	ck_assert_int_eq(iod_hwpt_probe_holes(e.ictx, e.hwpt.id, hole, hlen, &probed), 0);
	ck_assert_msg(probed == seen, "iod_hwpt_probe_holes() says %s, the reads say %s",
		      iod_hole_behavior_to_string(probed), iod_hole_behavior_to_string(seen));

	/* a read of a mapped area with tracking off: silent 0 without bits, strict EINVAL */
	ck_assert_int_eq(iod_hwpt_set_tracking(e.ictx, &e.hwpt, false), 0);
	bitmap_zero(part, apages);
	off_rc = raw_read_dirty(e.fd, e.hwpt.id, areas[0].start, area, mock_page, part,
				IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR);
	ck_assert_msg(off_rc == (seen == IOD_HOLES_STRICT ? -EINVAL : 0),
		      "a read with tracking off returned %d on a %s kernel", off_rc,
		      iod_hole_behavior_to_string(seen));
	if (seen == IOD_HOLES_SILENT)
		assert_bitmap_empty(part, apages, "a read with tracking off");
	/* off and on again wipes the bits: mark them again */
	ck_assert_int_eq(iod_hwpt_set_tracking(e.ictx, &e.hwpt, true), 0);
	for (size_t a = 0; a < ELEMENTSOF(areas); a++) {
		bitmap_zero(marks, apages);
		for (uint64_t i = 0; i < apages; i++)
			if (iod_bitmap_test(want, (areas[a].start - base) / mock_page + i))
				bit_set(marks, i);
		ck_assert_int_eq(mock_dirty(e.fd, e.hwpt.id, areas[a].start, area, marks, &nr), 0);
	}

	if (seen == IOD_HOLES_SILENT)
		printf("PASS: kernel behaviour \"silent\" (Linux up to 6.12.117): a read across "
		       "the hole returns 0 with %" PRIu64 " of %" PRIu64
		       " bits, one starting in it 0 with none, one with tracking off 0 with none\n",
		       across_bits, total);
	else
		printf("PASS: kernel behaviour \"strict\" (Linux 6.12.118 and later): reads across "
		       "the hole, starting in it and with tracking off fail with EINVAL (%" PRIu64
		       " bits before the hole reached the bitmap)\n",
		       across_bits);

	/* harvesting exactly the mapped areas loses nothing */
	bitmap_zero(got, npages);
	for (size_t a = 0; a < ELEMENTSOF(areas); a++) {
		uint64_t off = (areas[a].start - base) / mock_page;

		bitmap_zero(part, apages);
		ck_assert_int_eq(iod_hwpt_read_dirty(e.ictx, e.hwpt.id, areas[a].start,
						     areas[a].length, mock_page, part, 0),
				 0);
		for (uint64_t i = 0; i < apages; i++)
			if (iod_bitmap_test(part, i))
				bit_set(got, off + i);
	}
	assert_bitmap_eq(got, want, npages, "per-area harvest");
	printf("PASS: per-area harvest: %" PRIu64 " of %" PRIu64 " bits\n", bits_count(got, npages),
	       total);

	env_teardown(&e);
	munmap(buf, 2 * area);
}
END_TEST

/* ---- a mock IOMMU without dirty tracking --------------------------------------------- */

START_TEST(test_not_dirty_capable)
{
	_cleanup_close_ int unused = -EBADF;
	struct iod_hwpt plain = {};
	struct iod_hw_info info;
	struct mock_env e;
	uint32_t ioas = 0, stdev = 0, idev = 0, hwpt = 77;

	env_setup(&e, 0, true);
	ck_assert_int_eq(iod_iommufd_hw_info(e.ictx, e.idev, &info), 0);
	ck_assert(info.dirty_tracking);
	ck_assert_uint_ne(info.capabilities & IOMMU_HW_CAP_DIRTY_TRACKING, 0);

	ck_assert_int_eq(iod_ioas_alloc(e.ictx, &ioas), 0);
	ck_assert_int_eq(iod_mock_domain(e.fd, ioas, IOD_MOCK_DEV_NO_DIRTY, &stdev, NULL, &idev),
			 0);

	ck_assert_int_eq(iod_iommufd_hw_info(e.ictx, idev, &info), 0);
	ck_assert(!info.dirty_tracking);

	/* the library's "not dirty capable" */
	ck_assert_int_eq(iod_hwpt_alloc(e.ictx, idev, ioas, IOD_HWPT_DIRTY, &hwpt), -EOPNOTSUPP);
	ck_assert_uint_eq(hwpt, 77);
	printf("PASS: dirty HWPT for a mock IOMMU without dirty tracking: %s\n",
	       iod_strerror(-EOPNOTSUPP));

	/* a plain HWPT works, and cannot track */
	ck_assert_int_eq(iod_hwpt_alloc(e.ictx, idev, ioas, 0, &plain.id), 0);
	ck_assert_int_eq(iod_hwpt_set_tracking(e.ictx, &plain, true), -EOPNOTSUPP);
	ck_assert(!plain.tracking);

	/* a device whose IOMMU cannot track is refused on a dirty-tracking HWPT */
	ck_assert_int_eq(iod_mock_domain(e.fd, e.hwpt.id, IOD_MOCK_DEV_NO_DIRTY, NULL, NULL, NULL),
			 -EINVAL);

	ck_assert_int_eq(iod_iommufd_destroy(e.ictx, plain.id), 0);
	ck_assert_int_eq(iod_iommufd_destroy(e.ictx, stdev), 0);
	ck_assert_int_eq(iod_iommufd_destroy(e.ictx, ioas), 0);
	env_teardown(&e);
}
END_TEST

/* ---- the rest of the context API against the kernel ---------------------------------- */

START_TEST(test_iova_ranges)
{
	_cleanup_free_ struct iod_range *ranges = NULL;
	struct mock_env e;
	uint64_t align;
	uint32_t ioas;
	size_t n;

	env_setup(&e, 0, true);

	/* no device: all of the 64-bit space, whose length falls one byte short */
	ck_assert_int_eq(iod_ioas_alloc(e.ictx, &ioas), 0);
	ck_assert_int_eq(iod_ioas_iova_ranges(e.ictx, ioas, &ranges, &n, &align), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ranges[0].start, 0);
	ck_assert_uint_eq(ranges[0].length, UINT64_MAX);
	free(ranges);
	ranges = NULL;
	ck_assert_int_eq(iod_iommufd_destroy(e.ictx, ioas), 0);

	/* the mock device's aperture, at its IOPTE alignment */
	ck_assert_int_eq(iod_ioas_iova_ranges(e.ictx, e.ioas, &ranges, &n, &align), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ranges[0].start, IOD_MOCK_APERTURE_START);
	ck_assert_uint_eq(ranges[0].length, IOD_MOCK_APERTURE_END - IOD_MOCK_APERTURE_START);
	ck_assert_uint_eq(align, mock_page);

	env_teardown(&e);
}
END_TEST

START_TEST(test_map_unmap_and_options)
{
	const uint64_t size = 64 * SZ_1K, iova = IOD_MOCK_APERTURE_START;
	struct mock_env e;
	uint64_t unmapped;
	bool on = false;
	void *buf;

	env_setup(&e, 0, true);
	buf = buffer_new(size);

	ck_assert_int_eq(iod_ioas_get_huge_pages(e.ictx, e.ioas, &on), 0);
	ck_assert(on);
	ck_assert_int_eq(iod_ioas_map(e.ictx, e.ioas, buf, size, iova, IOD_MAP_READ), 0);
	/* the option cannot change under mappings */
	ck_assert_int_eq(iod_ioas_set_huge_pages(e.ictx, e.ioas, false), -EINVAL);
	/* overlapping, outside the aperture */
	ck_assert_int_eq(iod_ioas_map(e.ictx, e.ioas, buf, size, iova + size / 2, IOD_MAP_READ),
			 -EEXIST);
	ck_assert_int_lt(
		iod_ioas_map(e.ictx, e.ioas, buf, size, IOD_MOCK_APERTURE_END, IOD_MAP_READ), 0);
	/* nothing mapped there */
	ck_assert_int_eq(iod_ioas_unmap(e.ictx, e.ioas, iova + 2 * size, size, &unmapped), -ENOENT);
	ck_assert_int_eq(iod_ioas_unmap(e.ictx, e.ioas, iova, size, &unmapped), 0);
	ck_assert_uint_eq(unmapped, size);
	/* everything at once */
	ck_assert_int_eq(iod_ioas_map(e.ictx, e.ioas, buf, size, iova, IOD_MAP_WRITE), 0);
	ck_assert_int_eq(iod_ioas_map(e.ictx, e.ioas, buf, size, iova + 4 * size, IOD_MAP_WRITE),
			 0);
	ck_assert_int_eq(iod_ioas_unmap(e.ictx, e.ioas, 0, UINT64_MAX, &unmapped), 0);
	ck_assert_uint_eq(unmapped, 2 * size);

	/* unknown objects */
	ck_assert_int_eq(iod_iommufd_destroy(e.ictx, 0x7fff0000), -ENOENT);
	ck_assert_int_eq(iod_ioas_map(e.ictx, 0x7fff0000, buf, size, iova, IOD_MAP_READ), -ENOENT);

	env_teardown(&e);
	munmap(buf, size);
}
END_TEST

START_TEST(test_adopt)
{
	struct iod_iommufd *ictx = NULL, *adopted = NULL;
	unsigned fds = vm_count_fds();
	uint32_t ioas;
	int fd;

	ck_assert_int_eq(iod_iommufd_open(NULL, &ictx), 0);
	fd = iod_iommufd_fd(ictx);
	ck_assert_int_eq(iod_iommufd_adopt(fd, &adopted), 0);
	ck_assert_int_ne(iod_iommufd_fd(adopted), fd);
	ck_assert_int_ne(fcntl(iod_iommufd_fd(adopted), F_GETFD) & FD_CLOEXEC, 0);

	/* one kernel context behind both fds: what one creates, the other destroys */
	ck_assert_int_eq(iod_ioas_alloc(ictx, &ioas), 0);
	ck_assert_int_eq(iod_iommufd_destroy(adopted, ioas), 0);
	ck_assert_int_eq(iod_iommufd_destroy(ictx, ioas), -ENOENT);

	/* and it outlives the fd it was adopted from */
	ictx = iod_iommufd_free(ictx);
	ck_assert_int_eq(iod_ioas_alloc(adopted, &ioas), 0);
	adopted = iod_iommufd_free(adopted);
	ck_assert_uint_eq(vm_count_fds(), fds);
}
END_TEST

/* ---- fault injection ----------------------------------------------------------------- */

/*
 * The kernel's fault injection, driven per task by /proc/self/task/<tid>/fail-nth: writing
 * N makes the N-th fault-injection point this task passes fail, and the file reads 0 once
 * that has happened. Knobs this test sets itself when it can (the guest runner need not):
 *   /sys/kernel/debug/failslab/ignore-gfp-wait        N   (GFP_KERNEL slab allocations too)
 *   /sys/kernel/debug/fail_page_alloc/ignore-gfp-wait N   (page allocations likewise)
 *   /sys/kernel/debug/fail_page_alloc/ignore-gfp-highmem N
 *   /sys/kernel/debug/fail_page_alloc/min-order       0   (order-0 pages too)
 *   /sys/kernel/debug/{failslab,fail_page_alloc}/verbose 0 (no stack dump per failure)
 * With CONFIG_IOMMUFD_TEST iommufd has fault points of its own (fail_iommufd: object
 * lookups, page pinning), which fail-nth reaches as well.
 * debugfs is mounted on /sys/kernel/debug if it is not. probability stays 0: only fail-nth
 * injects, only in this task. Without the knobs the sweep still runs but covers only
 * allocations that cannot sleep, and says so.
 */
static bool write_knob(const char *path, const char *value)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);

	return fd >= 0 && write(fd, value, strlen(value)) == (ssize_t)strlen(value);
}

static bool fault_injection_knobs(void)
{
	const char *dbg = "/sys/kernel/debug";
	bool ok;

	if (access("/sys/kernel/debug/failslab", F_OK) < 0)
		(void)mount("debugfs", dbg, "debugfs", 0, NULL);

	ok = write_knob("/sys/kernel/debug/failslab/ignore-gfp-wait", "N");
	ok = write_knob("/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "N") && ok;
	(void)write_knob("/sys/kernel/debug/fail_page_alloc/ignore-gfp-highmem", "N");
	(void)write_knob("/sys/kernel/debug/fail_page_alloc/min-order", "0");
	(void)write_knob("/sys/kernel/debug/failslab/verbose", "0");
	(void)write_knob("/sys/kernel/debug/fail_page_alloc/verbose", "0");
	return ok;
}

struct fi {
	int nth; /* fail-nth of this task */
	unsigned fds;
	struct iod_iommufd *ictx;
	struct iod_iommufd *adopted;
	uint32_t ioas, stdev, idev;
	struct iod_hwpt hwpt;
	uint32_t expect_id;
	void *buf;
	uint64_t size, iova, npages;
	uint64_t *marks, *got;
};

static void fail_nth_arm(struct fi *s, unsigned n)
{
	char b[16];
	int l = snprintf(b, sizeof(b), "%u", n);

	ck_assert_int_eq(pwrite(s->nth, b, l, 0), l);
}

/* Disarm; true if the armed failure was injected. */
static bool fail_nth_fired(struct fi *s)
{
	char b[16] = "";
	ssize_t l;

	l = pread(s->nth, b, sizeof(b) - 1, 0);
	ck_assert_int_eq(pwrite(s->nth, "0", 1, 0), 1);
	ck_assert_int_gt(l, 0);
	return strcmp(b, "0\n") == 0;
}

struct step {
	const char *name;
	int (*run)(struct fi *s);
	/* after an injected failure: nothing may be left behind */
	void (*check_failed)(struct fi *s, int r);
	/* the failure hit something that recovered: undo the success, sweep on */
	void (*undo)(struct fi *s);
};

static unsigned sweep(struct fi *s, const struct step *st)
{
	unsigned failed = 0, by_errno[4096] = {};
	char summary[256] = "";
	size_t len = 0;

	for (unsigned n = 1;; n++) {
		bool fired;
		int r;

		ck_assert_msg(n < 5000, "%s: the sweep does not end", st->name);
		fail_nth_arm(s, n);
		r = st->run(s);
		fired = fail_nth_fired(s);
		if (!fired) {
			ck_assert_msg(r == 0, "%s failed with nothing injected: %s", st->name,
				      strerror(-r));
			for (int e = 1; e < 4096; e++)
				if (by_errno[e] && len < sizeof(summary))
					len += snprintf(summary + len, sizeof(summary) - len,
							" %s:%u", strerrorname_np(e) ?: "?",
							by_errno[e]);
			printf("sweep %-16s %3u failure points, %3u calls failed%s\n", st->name,
			       n - 1, failed, summary);
			return failed;
		}
		if (r < 0) {
			ck_assert_msg(r > -4096, "%s: %d is not an errno", st->name, r);
			failed++;
			by_errno[-r]++;
			if (st->check_failed)
				st->check_failed(s, r);
		} else if (st->undo)
			st->undo(s);
	}
}

static int run_open(struct fi *s)
{
	return iod_iommufd_open(NULL, &s->ictx);
}

static void open_failed(struct fi *s, int r)
{
	ck_assert_ptr_null(s->ictx);
	ck_assert_uint_eq(vm_count_fds(), s->fds);
}

static void open_undo(struct fi *s)
{
	s->ictx = iod_iommufd_free(s->ictx);
}

static int run_adopt(struct fi *s)
{
	return iod_iommufd_adopt(iod_iommufd_fd(s->ictx), &s->adopted);
}

static void adopt_failed(struct fi *s, int r)
{
	ck_assert_ptr_null(s->adopted);
	ck_assert_uint_eq(vm_count_fds(), s->fds + 1);
}

static void adopt_undo(struct fi *s)
{
	s->adopted = iod_iommufd_free(s->adopted);
}

static int run_ioas_alloc(struct fi *s)
{
	s->ioas = UINT32_MAX;
	return iod_ioas_alloc(s->ictx, &s->ioas);
}

static void id_untouched(struct fi *s, int r)
{
	ck_assert_uint_eq(s->ioas, UINT32_MAX);
}

static void ioas_undo(struct fi *s)
{
	ck_assert_int_eq(iod_iommufd_destroy(s->ictx, s->ioas), 0);
}

static int run_huge_off(struct fi *s)
{
	return iod_ioas_set_huge_pages(s->ictx, s->ioas, false);
}

static void huge_off_failed(struct fi *s, int r)
{
	bool on = false;

	ck_assert_int_eq(iod_ioas_get_huge_pages(s->ictx, s->ioas, &on), 0);
	ck_assert(on);
}

static void huge_off_undo(struct fi *s)
{
	ck_assert_int_eq(iod_ioas_set_huge_pages(s->ictx, s->ioas, true), 0);
}

static int run_iova_ranges(struct fi *s)
{
	struct iod_range *ranges = NULL;
	size_t n = 0;
	int r;

	r = iod_ioas_iova_ranges(s->ictx, s->ioas, &ranges, &n, NULL);
	if (r == 0) {
		ck_assert_uint_eq(n, 1);
		free(ranges);
	}
	return r;
}

static int run_map(struct fi *s)
{
	return iod_ioas_map(s->ictx, s->ioas, s->buf, s->size, s->iova,
			    IOD_MAP_READ | IOD_MAP_WRITE);
}

static void map_failed(struct fi *s, int r)
{
	ck_assert_int_eq(iod_ioas_unmap(s->ictx, s->ioas, s->iova, s->size, NULL), -ENOENT);
}

static void map_undo(struct fi *s)
{
	uint64_t unmapped = 0;

	ck_assert_int_eq(iod_ioas_unmap(s->ictx, s->ioas, s->iova, s->size, &unmapped), 0);
	ck_assert_uint_eq(unmapped, s->size);
}

static int run_hwpt_alloc(struct fi *s)
{
	s->hwpt.id = UINT32_MAX;
	return iod_hwpt_alloc(s->ictx, s->idev, s->ioas, IOD_HWPT_DIRTY, &s->hwpt.id);
}

static void hwpt_failed(struct fi *s, int r)
{
	ck_assert_uint_eq(s->hwpt.id, UINT32_MAX);
}

static void hwpt_undo(struct fi *s)
{
	ck_assert_int_eq(iod_iommufd_destroy(s->ictx, s->hwpt.id), 0);
}

static int run_tracking(struct fi *s)
{
	return iod_hwpt_set_tracking(s->ictx, &s->hwpt, true);
}

static void tracking_failed(struct fi *s, int r)
{
	ck_assert(!s->hwpt.tracking);
}

static void tracking_undo(struct fi *s)
{
	ck_assert_int_eq(iod_hwpt_set_tracking(s->ictx, &s->hwpt, false), 0);
}

static void mark(struct fi *s)
{
	uint64_t nr;

	ck_assert_int_eq(
		mock_dirty(iod_iommufd_fd(s->ictx), s->hwpt.id, s->iova, s->size, s->marks, &nr),
		0);
	ck_assert_uint_eq(nr, bits_count(s->marks, s->npages));
}

static int harvest(struct fi *s, unsigned flags)
{
	bitmap_zero(s->got, s->npages);
	return iod_hwpt_read_dirty(s->ictx, s->hwpt.id, s->iova, s->size, mock_page, s->got, flags);
}

static int run_harvest_no_clear(struct fi *s)
{
	return harvest(s, IOD_READ_NO_CLEAR);
}

static int run_harvest_clear(struct fi *s)
{
	return harvest(s, 0);
}

/* a failed harvest lost nothing: every bit is still there */
static void harvest_failed(struct fi *s, int r)
{
	ck_assert_int_eq(harvest(s, IOD_READ_NO_CLEAR), 0);
	assert_bitmap_eq(s->got, s->marks, s->npages, "after a failed harvest");
}

static void harvest_clear_undo(struct fi *s)
{
	assert_bitmap_eq(s->got, s->marks, s->npages, "harvest that recovered");
	mark(s);
}

/* The lowest free object id: the one the next allocation must get if nothing leaked. */
static uint32_t next_id(struct fi *s)
{
	uint32_t id;

	ck_assert_int_eq(iod_ioas_alloc(s->ictx, &id), 0);
	ck_assert_int_eq(iod_iommufd_destroy(s->ictx, id), 0);
	return id;
}

START_TEST(test_fault_injection)
{
	static const struct step st_open = {"open", run_open, open_failed, open_undo};
	static const struct step st_adopt = {"adopt", run_adopt, adopt_failed, adopt_undo};
	static const struct step st_ioas = {"ioas_alloc", run_ioas_alloc, id_untouched, ioas_undo};
	static const struct step st_huge = {"huge_pages_off", run_huge_off, huge_off_failed,
					    huge_off_undo};
	static const struct step st_ranges = {"iova_ranges", run_iova_ranges, NULL, NULL};
	static const struct step st_map = {"map", run_map, map_failed, map_undo};
	static const struct step st_hwpt = {"hwpt_alloc", run_hwpt_alloc, hwpt_failed, hwpt_undo};
	static const struct step st_track = {"set_tracking", run_tracking, tracking_failed,
					     tracking_undo};
	static const struct step st_read_nc = {"read_no_clear", run_harvest_no_clear,
					       harvest_failed, NULL};
	static const struct step st_read = {"read_clear", run_harvest_clear, harvest_failed,
					    harvest_clear_undo};
	_cleanup_free_ uint64_t *marks = NULL, *got = NULL;
	struct fi s = {.size = 256 * SZ_1K, .iova = IOD_MOCK_APERTURE_START};
	char path[64];
	unsigned failed;
	uint32_t id, attached;
	bool knobs;
	int kmsg;

	snprintf(path, sizeof(path), "/proc/self/task/%d/fail-nth", (int)gettid());
	if (access(path, F_OK) < 0) {
		vm_skip_part("%s does not exist (CONFIG_FAULT_INJECTION)", path);
		return;
	}
	knobs = fault_injection_knobs();
	if (!knobs)
		printf("NOTE: fault injection knobs in /sys/kernel/debug not writable: "
		       "sleeping allocations are not swept\n");

	s.npages = s.size / mock_page;
	marks = s.marks = bitmap_new(s.npages);
	got = s.got = bitmap_new(s.npages);
	pick_marks(s.marks, s.npages, 8);
	s.buf = buffer_new(s.size);
	memset(s.buf, 0, s.size);

	/* everything once without injection: faults in what userspace touches */
	{
		struct mock_env warm;

		env_setup(&warm, 0, false);
		ck_assert_int_eq(iod_ioas_map(warm.ictx, warm.ioas, s.buf, s.size, s.iova,
					      IOD_MAP_READ | IOD_MAP_WRITE),
				 0);
		bitmap_zero(s.got, s.npages);
		ck_assert_int_eq(iod_hwpt_read_dirty(warm.ictx, warm.hwpt.id, s.iova, s.size,
						     mock_page, s.got, 0),
				 0);
		env_teardown(&warm);
	}

	kmsg = vm_kmsg_open();
	s.nth = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(s.nth, 0);
	s.fds = vm_count_fds();

	/* set-up path */
	failed = sweep(&s, &st_open);
	if (knobs)
		ck_assert_msg(failed > 0, "no failure injected into open(/dev/iommu)");
	sweep(&s, &st_adopt);
	s.adopted = iod_iommufd_free(s.adopted);

	id = next_id(&s);
	sweep(&s, &st_ioas);
	ck_assert_uint_eq(s.ioas, id); /* no id held by a failed attempt */
	sweep(&s, &st_huge);
	sweep(&s, &st_map);

	ck_assert_int_eq(
		iod_mock_domain(iod_iommufd_fd(s.ictx), s.ioas, 0, &s.stdev, NULL, &s.idev), 0);
	sweep(&s, &st_ranges);
	id = next_id(&s);
	sweep(&s, &st_hwpt);
	ck_assert_uint_eq(s.hwpt.id, id);
	s.hwpt.dirty_capable = true;
	ck_assert_int_eq(mock_replace(iod_iommufd_fd(s.ictx), s.stdev, s.hwpt.id, &attached), 0);
	ck_assert_uint_eq(attached, s.hwpt.id);
	sweep(&s, &st_track);
	ck_assert(s.hwpt.tracking);

	/* harvest path */
	mark(&s);
	sweep(&s, &st_read_nc);
	assert_bitmap_eq(s.got, s.marks, s.npages, "swept no-clear harvest");
	sweep(&s, &st_read);
	assert_bitmap_eq(s.got, s.marks, s.npages, "swept clearing harvest");
	ck_assert_int_eq(harvest(&s, 0), 0);
	assert_bitmap_empty(s.got, s.npages, "after the swept clearing harvest");

	/* everything the sweep made comes apart cleanly: no reference was leaked */
	ck_assert_int_eq(iod_iommufd_destroy(s.ictx, s.stdev), 0);
	ck_assert_int_eq(iod_iommufd_destroy(s.ictx, s.hwpt.id), 0);
	ck_assert_int_eq(iod_iommufd_destroy(s.ictx, s.ioas), 0);
	ck_assert_uint_eq(next_id(&s), 1);
	s.ictx = iod_iommufd_free(s.ictx);
	ck_assert_uint_eq(vm_count_fds(), s.fds);

	if (kmsg >= 0)
		ck_assert_msg(vm_kmsg_warnings(kmsg) == 0, "the kernel logged a warning");
	else
		printf("NOTE: /dev/kmsg not readable: kernel warnings not checked\n");
	close(kmsg);
	close(s.nth);
	munmap(s.buf, s.size);
}
END_TEST

static Suite *iommufd_suite(void)
{
	Suite *s = suite_create("kernel iommufd (mock)");
	TCase *tc;

	tc = tcase_create("dirty");
	tcase_set_timeout(tc, 1800);
	tcase_add_loop_test(tc, test_dirty_bits_exact, 0, ELEMENTSOF(dirty_sizes));
	tcase_add_test(tc, test_huge_iopte_sets_every_bit);
	tcase_add_test(tc, test_huge_pages_off_keeps_base_granularity);
	suite_add_tcase(s, tc);

	tc = tcase_create("traps");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_enable_twice);
	tcase_add_test(tc, test_harvest_across_hole);
	tcase_add_test(tc, test_not_dirty_capable);
	suite_add_tcase(s, tc);

	tc = tcase_create("context");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_iova_ranges);
	tcase_add_test(tc, test_map_unmap_and_options);
	tcase_add_test(tc, test_adopt);
	suite_add_tcase(s, tc);

	tc = tcase_create("fault-injection");
	tcase_set_timeout(tc, 1800);
	tcase_add_test(tc, test_fault_injection);
	suite_add_tcase(s, tc);

	return s;
}

/* Skip the whole program unless the kernel has iommufd and its mock devices. */
static void require_mock(void)
{
	struct iod_iommufd *ictx = NULL;
	uint32_t ioas = 0, stdev = 0;
	int r;

	if (access("/dev/iommu", F_OK) < 0)
		vm_skip("/dev/iommu does not exist: the kernel has no iommufd (CONFIG_IOMMUFD)");
	r = iod_iommufd_open(NULL, &ictx);
	if (r < 0)
		vm_skip("cannot open /dev/iommu: %s", iod_strerror(r));
	r = iod_ioas_alloc(ictx, &ioas);
	if (r < 0)
		vm_skip("cannot allocate an IOAS: %s", iod_strerror(r));
	r = iod_mock_domain(iod_iommufd_fd(ictx), ioas, 0, &stdev, NULL, NULL);
	if (r == -ENOTTY)
		vm_skip("the kernel has no iommufd mock devices (CONFIG_IOMMUFD_TEST)");
	if (r < 0)
		vm_skip("cannot create a mock device: %s", strerror(-r));
	iod_iommufd_free(ictx);
}

int main(void)
{
	SRunner *sr;
	int failed;

	cpu_page = sysconf(_SC_PAGESIZE);
	mock_page = cpu_page / 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	require_mock();
	rng_seed();

	sr = srunner_create(iommufd_suite());
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
