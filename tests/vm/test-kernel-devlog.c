/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_START/STOP/REPORT) on the guest
 * kernel, through the raw uAPI, with the two test devices of tests/vm/testdev.h:
 *
 *  - iodirty-testdev (tests/vm/testdev/): bound to an iommufd and attached to an IOAS (an
 *    emulated IOMMU: the device reaches memory through an iommufd access). A memfd buffer
 *    is mapped at IOVAs unlike its user address; the device's debugfs knob writes into it
 *    by IOVA. REPORT sets exactly the bits of the pages written (a write straddling a page
 *    boundary sets both), the buffer holds the bytes, REPORT clears what it read, a write
 *    outside the logged ranges reaches memory and sets no bit, a logging page size above
 *    the report's reports every page it covers, more ranges than the device's limit is
 *    E2BIG, REPORT after STOP fails, and after IOMMU_IOAS_UNMAP the device's write fails
 *    with ENOENT and the kernel logs nothing.
 *  - mtty (samples/vfio-mdev): its migration flags include STOP_COPY and PRE_COPY; DMA
 *    logging passes through vfio core to its empty log ops (REPORT is all zero); and vfio
 *    core's own checks: no ranges EINVAL, more than 256 (PAGE_SIZE / 16) E2BIG,
 *    overlapping ranges EINVAL, REPORT with a page size below 4096 EINVAL.
 *
 * Exit 77 with the reason printed when /dev/iommu, the test module or mtty is missing
 * (inside the test guest that is a failure: tests/vm/run counts skips as failures).
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
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "testdev.h"
#include "vm-test.h"

#define PG 4096u
#define BUF_SIZE (32 * PG)
/* Two mappings of the one buffer: its first and second half, far from any user address. */
#define IOVA_A UINT64_C(0x10000000)
#define IOVA_B UINT64_C(0x20000000)
#define HALF (BUF_SIZE / 2)
#define MTTY_UUID "6a1c8e0e-5d3b-4c1f-9f6e-0d1e2f3a4b5c"

struct env {
	int iommufd;
	uint32_t ioas;
	int devfd;
	uint32_t devid;
	uint8_t *buf;
	int kmsg;
};

static struct env e;

/* --- raw uAPI ------------------------------------------------------------------------ */

static int ioas_map(uint64_t iova, void *va, uint64_t length)
{
	struct iommu_ioas_map map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = e.ioas,
		.user_va = (uintptr_t)va,
		.length = length,
		.iova = iova,
	};

	return ioctl(e.iommufd, IOMMU_IOAS_MAP, &map) < 0 ? -errno : 0;
}

static int ioas_unmap(uint64_t iova, uint64_t length)
{
	struct iommu_ioas_unmap unmap = {
		.size = sizeof(unmap), .ioas_id = e.ioas, .iova = iova, .length = length};

	return ioctl(e.iommufd, IOMMU_IOAS_UNMAP, &unmap) < 0 ? -errno : 0;
}

static int device_bind_attach(int fd, uint32_t *ret_devid)
{
	struct vfio_device_bind_iommufd bind = {.argsz = sizeof(bind), .iommufd = e.iommufd};
	struct vfio_device_attach_iommufd_pt attach = {.argsz = sizeof(attach), .pt_id = e.ioas};

	if (ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
		return -errno;
	if (ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) < 0)
		return -errno;
	/* An emulated IOMMU attaches to the IOAS itself: no HWPT in between. */
	ck_assert_uint_eq(attach.pt_id, e.ioas);
	*ret_devid = bind.out_devid;
	return 0;
}

/* VFIO_DEVICE_FEATURE with size bytes of payload; on success the payload is copied back. */
static int feature(int fd, uint32_t flags, void *data, size_t size)
{
	size_t argsz = sizeof(struct vfio_device_feature) + size;
	struct vfio_device_feature *f = calloc(1, argsz);
	int r;

	ck_assert_ptr_nonnull(f);
	f->argsz = argsz;
	f->flags = flags;
	if (size)
		memcpy(f->data, data, size);
	r = ioctl(fd, VFIO_DEVICE_FEATURE, f) < 0 ? -errno : 0;
	if (r == 0 && size)
		memcpy(data, f->data, size);
	free(f);
	return r;
}

static int log_start(int fd, uint64_t page_size,
		     const struct vfio_device_feature_dma_logging_range *ranges, unsigned n,
		     uint64_t *ret_page_size)
{
	struct vfio_device_feature_dma_logging_control ctl = {
		.page_size = page_size, .num_ranges = n, .ranges = (uintptr_t)ranges};
	int r = feature(fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, &ctl,
			sizeof(ctl));

	if (r == 0 && ret_page_size)
		*ret_page_size = ctl.page_size;
	return r;
}

static int log_stop(int fd)
{
	return feature(fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, NULL, 0);
}

/* REPORT [iova, iova + length) at page_size into bitmap, which is zeroed first. */
static int log_report(int fd, uint64_t iova, uint64_t length, uint64_t page_size, uint64_t *bitmap)
{
	uint64_t nbits = length / page_size;
	struct vfio_device_feature_dma_logging_report rep = {.iova = iova,
							     .length = length,
							     .page_size = page_size,
							     .bitmap = (uintptr_t)bitmap};

	memset(bitmap, 0, (nbits + 63) / 64 * 8);
	return feature(fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, &rep,
		       sizeof(rep));
}

static bool bit_test(const uint64_t *map, uint64_t bit)
{
	return map[bit / 64] >> (bit % 64) & 1;
}

/* The set bits of map (nbits) as "0 3 6 7", for messages and comparisons. */
static const char *bits_str(const uint64_t *map, uint64_t nbits)
{
	static char s[1024];
	size_t l = 0;

	s[0] = '\0';
	for (uint64_t i = 0; i < nbits && l < sizeof(s) - 24; i++)
		if (bit_test(map, i))
			l += snprintf(s + l, sizeof(s) - l, "%s%" PRIu64, l ? " " : "", i);
	return s;
}

/* --- fixtures ------------------------------------------------------------------------ */

static void iommufd_setup(void)
{
	struct iommu_ioas_alloc alloc = {.size = sizeof(alloc)};

	e.kmsg = vm_kmsg_open();
	e.iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(e.iommufd, 0);
	ck_assert_int_eq(ioctl(e.iommufd, IOMMU_IOAS_ALLOC, &alloc), 0);
	e.ioas = alloc.out_ioas_id;
}

static void iommufd_teardown(void)
{
	close(e.iommufd);
	ck_assert_int_eq(vm_kmsg_warnings(e.kmsg), 0);
	if (e.kmsg >= 0)
		close(e.kmsg);
}

static void testdev_setup(void)
{
	int memfd;

	iommufd_setup();
	e.devfd = testdev_open(0);
	ck_assert_msg(e.devfd >= 0, "testdev_open(0): %s", strerror(-e.devfd));
	ck_assert_int_eq(device_bind_attach(e.devfd, &e.devid), 0);

	memfd = memfd_create("devlog", MFD_CLOEXEC);
	ck_assert_int_ge(memfd, 0);
	ck_assert_int_eq(ftruncate(memfd, BUF_SIZE), 0);
	e.buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ck_assert_ptr_ne(e.buf, MAP_FAILED);
	close(memfd);
	ck_assert_uint_ne((uintptr_t)e.buf, IOVA_A);
	ck_assert_uint_ne((uintptr_t)e.buf, IOVA_B);
	ck_assert_int_eq(ioas_map(IOVA_A, e.buf, HALF), 0);
	ck_assert_int_eq(ioas_map(IOVA_B, e.buf + HALF, HALF), 0);
}

static void testdev_teardown(void)
{
	close(e.devfd);
	munmap(e.buf, BUF_SIZE);
	iommufd_teardown();
}

static const struct vfio_device_feature_dma_logging_range both_halves[] = {
	{.iova = IOVA_A, .length = HALF},
	{.iova = IOVA_B, .length = HALF},
};

static void dma(uint64_t iova, uint64_t len, uint8_t byte)
{
	int r = testdev_dma_write(0, iova, len, byte);

	ck_assert_msg(r == 0, "DMA write of %" PRIu64 " bytes at 0x%" PRIx64 ": %s", len, iova,
		      strerror(-r));
}

static void assert_bytes(uint64_t off, uint64_t len, uint8_t byte)
{
	for (uint64_t i = 0; i < len; i++)
		ck_assert_msg(e.buf[off + i] == byte, "buffer[%" PRIu64 "] = 0x%02x, want 0x%02x",
			      off + i, e.buf[off + i], byte);
}

/* --- the test device ----------------------------------------------------------------- */

START_TEST(test_testdev_reports_exactly_the_written_pages)
{
	uint64_t map_a[HALF / PG / 64 + 1], map_b[HALF / PG / 64 + 1], ps = 0;
	struct testdev_state st;

	ck_assert_int_eq(log_start(e.devfd, PG, both_halves, 2, &ps), 0);
	ck_assert_uint_eq(ps, PG);
	ck_assert_int_eq(testdev_read_state(0, &st), 0);
	ck_assert(st.open && st.logging);
	ck_assert_uint_eq(st.page_size, PG);
	ck_assert_uint_eq(st.nr_ranges, 2);

	dma(IOVA_A + 16, 1, 0x11); /* page A0 */
	dma(IOVA_A + 3 * PG, PG, 0x22); /* page A3, whole */
	dma(IOVA_A + 6 * PG + 4000, 200, 0x33); /* straddles A6 and A7 */
	dma(IOVA_B + 2 * PG + 100, 100, 0x44); /* page B2 */
	ck_assert_int_eq(testdev_read_state(0, &st), 0);
	ck_assert_uint_eq(st.dirty, 5);

	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, PG, map_a), 0);
	ck_assert_str_eq(bits_str(map_a, HALF / PG), "0 3 6 7");
	ck_assert_int_eq(log_report(e.devfd, IOVA_B, HALF, PG, map_b), 0);
	ck_assert_str_eq(bits_str(map_b, HALF / PG), "2");

	/* The device wrote through the IOVAs into the buffer, and nowhere else. */
	assert_bytes(0, 16, 0);
	assert_bytes(16, 1, 0x11);
	assert_bytes(17, 3 * PG - 17, 0);
	assert_bytes(3 * PG, PG, 0x22);
	assert_bytes(4 * PG, 2 * PG + 4000, 0);
	assert_bytes(6 * PG + 4000, 200, 0x33);
	assert_bytes(6 * PG + 4200, HALF - (6 * PG + 4200), 0);
	assert_bytes(HALF, 2 * PG + 100, 0);
	assert_bytes(HALF + 2 * PG + 100, 100, 0x44);
	assert_bytes(HALF + 2 * PG + 200, HALF - (2 * PG + 200), 0);

	/* REPORT reads and clears. */
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, PG, map_a), 0);
	ck_assert_str_eq(bits_str(map_a, HALF / PG), "");
	ck_assert_int_eq(log_report(e.devfd, IOVA_B, HALF, PG, map_b), 0);
	ck_assert_str_eq(bits_str(map_b, HALF / PG), "");
	ck_assert_int_eq(testdev_read_state(0, &st), 0);
	ck_assert_uint_eq(st.dirty, 0);
	ck_assert_uint_eq(st.dma_writes, 4);

	/* A later write is logged again. */
	dma(IOVA_A + 15 * PG, 8, 0x55);
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, PG, map_a), 0);
	ck_assert_str_eq(bits_str(map_a, HALF / PG), "15");
	ck_assert_int_eq(log_stop(e.devfd), 0);
}
END_TEST

START_TEST(test_testdev_dma_outside_logged_ranges_sets_no_bit)
{
	const struct vfio_device_feature_dma_logging_range first_quarter = {.iova = IOVA_A,
									    .length = HALF / 2};
	uint64_t map[HALF / PG / 64 + 1];

	ck_assert_int_eq(log_start(e.devfd, PG, &first_quarter, 1, NULL), 0);
	dma(IOVA_A + HALF / 2 + PG, 64, 0x66); /* mapped, not logged */
	dma(IOVA_B, 64, 0x67); /* the other mapping, not logged */
	assert_bytes(HALF / 2 + PG, 64, 0x66);
	assert_bytes(HALF, 64, 0x67);
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF / 2, PG, map), 0);
	ck_assert_str_eq(bits_str(map, HALF / 2 / PG), "");
	/* A window wider than the logged range reports nothing outside it either. */
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, PG, map), 0);
	ck_assert_str_eq(bits_str(map, HALF / PG), "");
	ck_assert_int_eq(log_stop(e.devfd), 0);
}
END_TEST

START_TEST(test_testdev_large_log_page_reports_every_page_it_covers)
{
	const struct vfio_device_feature_dma_logging_range r = {.iova = IOVA_A, .length = HALF};
	/* Aligned to 12 KiB, as vfio core wants the ranges aligned to the page size asked. */
	const struct vfio_device_feature_dma_logging_range odd = {.iova = 16 * 3 * PG,
								  .length = 4 * 3 * PG};
	uint64_t map[HALF / PG / 64 + 1], ps = 0;

	/* The device rounds a page size up to a power of two: 12 KiB becomes 16 KiB. */
	ck_assert_int_eq(log_start(e.devfd, 3 * PG, &odd, 1, &ps), 0);
	ck_assert_uint_eq(ps, 4 * PG);
	ck_assert_int_eq(log_stop(e.devfd), 0);

	ck_assert_int_eq(log_start(e.devfd, 2 * PG, &r, 1, &ps), 0);
	ck_assert_uint_eq(ps, 2 * PG);
	dma(IOVA_A + 5 * PG + 7, 1, 0x77); /* one byte in the 8 KiB page of 4 KiB pages 4, 5 */
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, PG, map), 0);
	ck_assert_str_eq(bits_str(map, HALF / PG), "4 5");
	ck_assert_int_eq(log_stop(e.devfd), 0);
}
END_TEST

START_TEST(test_testdev_range_limit_is_e2big)
{
	struct vfio_device_feature_dma_logging_range ranges[TESTDEV_MAX_RANGES + 1];
	struct testdev_state st;

	ck_assert_int_eq(testdev_read_state(0, &st), 0);
	ck_assert_uint_gt(st.max_ranges, 0);
	ck_assert_uint_lt(st.max_ranges, TESTDEV_MAX_RANGES);
	for (unsigned i = 0; i <= TESTDEV_MAX_RANGES; i++)
		ranges[i] = (struct vfio_device_feature_dma_logging_range){
			.iova = IOVA_A + 2 * i * PG, .length = PG};

	/* One more than the device takes: refused, nothing started. */
	ck_assert_int_eq(log_start(e.devfd, PG, ranges, st.max_ranges + 1, NULL), -E2BIG);
	ck_assert_int_eq(testdev_read_state(0, &st), 0);
	ck_assert(!st.logging);
	/* vfio core's own limit comes first above 256. */
	ck_assert_int_eq(log_start(e.devfd, PG, ranges, TESTDEV_MAX_RANGES + 1, NULL), -E2BIG);
	/* Exactly the limit: taken. */
	ck_assert_int_eq(log_start(e.devfd, PG, ranges, st.max_ranges, NULL), 0);
	ck_assert_int_eq(testdev_read_state(0, &st), 0);
	ck_assert(st.logging);
	ck_assert_uint_eq(st.nr_ranges, st.max_ranges);
	/* Starting again while logging is EINVAL (as mlx5). */
	ck_assert_int_eq(log_start(e.devfd, PG, ranges, 1, NULL), -EINVAL);
	ck_assert_int_eq(log_stop(e.devfd), 0);
}
END_TEST

START_TEST(test_testdev_report_after_stop_fails)
{
	uint64_t map[HALF / PG / 64 + 1];

	ck_assert_int_eq(log_start(e.devfd, PG, both_halves, 2, NULL), 0);
	dma(IOVA_A, 8, 0x88);
	ck_assert_int_eq(log_stop(e.devfd), 0);
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, PG, map), -EINVAL);
	ck_assert_int_eq(log_stop(e.devfd), 0); /* stopping twice is harmless */
	/* The device still writes memory with logging off. */
	dma(IOVA_A + PG, 8, 0x89);
	assert_bytes(PG, 8, 0x89);
}
END_TEST

START_TEST(test_testdev_dma_after_unmap_fails)
{
	struct testdev_state before, after;
	int r;

	dma(IOVA_B + PG, 16, 0x99);
	assert_bytes(HALF + PG, 16, 0x99);
	ck_assert_int_eq(ioas_unmap(IOVA_B, HALF), 0);
	ck_assert_int_eq(testdev_read_state(0, &before), 0);
	r = testdev_dma_write(0, IOVA_B + PG, 16, 0x9a);
	ck_assert_msg(r == -ENOENT, "DMA after unmap: %s, want ENOENT", strerror(-r));
	assert_bytes(HALF + PG, 16, 0x99);
	/* Half in the still-mapped first half, half beyond it: refused as well. */
	r = testdev_dma_write(0, IOVA_A + HALF - 8, 16, 0x9b);
	ck_assert_msg(r == -ENOENT, "DMA across the end of a mapping: %s", strerror(-r));
	/* ... but not before the kernel wrote the mapped part: a failed DMA may have written. */
	assert_bytes(HALF - 8, 8, 0x9b);
	ck_assert_int_eq(testdev_read_state(0, &after), 0);
	ck_assert_uint_eq(after.dma_errors, before.dma_errors + 2);
	/* The rest still works. */
	dma(IOVA_A, 16, 0x9c);
	assert_bytes(0, 16, 0x9c);
}
END_TEST

START_TEST(test_testdev_closed_device_does_no_dma)
{
	struct testdev_state st;
	int r;

	close(e.devfd);
	e.devfd = -1;
	r = testdev_dma_write(0, IOVA_A, 16, 0xaa);
	ck_assert_msg(r == -ENODEV, "DMA from a closed device: %s, want ENODEV", strerror(-r));
	assert_bytes(0, 16, 0);
	ck_assert_int_eq(testdev_read_state(0, &st), 0);
	ck_assert(!st.open && !st.logging);
}
END_TEST

/* --- mtty ---------------------------------------------------------------------------- */

static void mtty_setup(void)
{
	int r;

	iommufd_setup();
	r = mtty_create(MTTY_UUID);
	if (r == -EEXIST) { /* left by a failed test, whose teardown did not run */
		ck_assert_int_eq(mtty_remove(MTTY_UUID), 0);
		r = mtty_create(MTTY_UUID);
	}
	ck_assert_msg(r == 0, "creating the mtty mdev: %s", strerror(-r));
	e.devfd = mtty_open(MTTY_UUID);
	ck_assert_msg(e.devfd >= 0, "opening the mtty cdev: %s", strerror(-e.devfd));
	ck_assert_int_eq(device_bind_attach(e.devfd, &e.devid), 0);
}

static void mtty_teardown(void)
{
	close(e.devfd);
	ck_assert_int_eq(mtty_remove(MTTY_UUID), 0);
	iommufd_teardown();
}

START_TEST(test_mtty_migration_flags)
{
	struct vfio_device_feature_migration mig = {0};

	ck_assert_int_eq(feature(e.devfd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION,
				 &mig, sizeof(mig)),
			 0);
	ck_assert_msg((mig.flags & VFIO_MIGRATION_STOP_COPY) &&
			      (mig.flags & VFIO_MIGRATION_PRE_COPY),
		      "migration flags 0x%llx", (unsigned long long)mig.flags);
}
END_TEST

START_TEST(test_mtty_dma_logging_passes_through)
{
	const struct vfio_device_feature_dma_logging_range r = {.iova = IOVA_A, .length = HALF};
	uint64_t map[HALF / PG / 64 + 1];

	ck_assert_int_eq(feature(e.devfd,
				 VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET |
					 VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
				 NULL, 0),
			 0);
	ck_assert_int_eq(feature(e.devfd,
				 VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET |
					 VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
				 NULL, 0),
			 0);
	ck_assert_int_eq(log_start(e.devfd, PG, &r, 1, NULL), 0);
	memset(map, 0xff, sizeof(map));
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, PG, map), 0);
	ck_assert_str_eq(bits_str(map, HALF / PG), "");
	ck_assert_int_eq(log_stop(e.devfd), 0);
}
END_TEST

START_TEST(test_mtty_core_rejects_bad_starts_and_reports)
{
	static struct vfio_device_feature_dma_logging_range many[TESTDEV_MAX_RANGES + 1];
	const struct vfio_device_feature_dma_logging_range overlap[] = {
		{.iova = IOVA_A, .length = 4 * PG},
		{.iova = IOVA_A + 3 * PG, .length = 4 * PG},
	};
	uint64_t map[HALF / PG / 64 + 1];

	for (unsigned i = 0; i <= TESTDEV_MAX_RANGES; i++)
		many[i] = (struct vfio_device_feature_dma_logging_range){
			.iova = IOVA_A + 2 * i * PG, .length = PG};

	ck_assert_int_eq(log_start(e.devfd, PG, many, 0, NULL), -EINVAL);
	ck_assert_int_eq(log_start(e.devfd, PG, many, TESTDEV_MAX_RANGES + 1, NULL), -E2BIG);
	ck_assert_int_eq(log_start(e.devfd, PG, overlap, 2, NULL), -EINVAL);
	/* 256 ranges are vfio core's limit, and mtty has none of its own. */
	ck_assert_int_eq(log_start(e.devfd, PG, many, TESTDEV_MAX_RANGES, NULL), 0);
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, 2048, map), -EINVAL);
	ck_assert_int_eq(log_report(e.devfd, IOVA_A, HALF, PG, map), 0);
	ck_assert_int_eq(log_stop(e.devfd), 0);
}
END_TEST

static Suite *devlog_suite(void)
{
	Suite *s = suite_create("kernel device DMA logging");
	TCase *tc;

	tc = tcase_create("testdev");
	tcase_add_checked_fixture(tc, testdev_setup, testdev_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_testdev_reports_exactly_the_written_pages);
	tcase_add_test(tc, test_testdev_dma_outside_logged_ranges_sets_no_bit);
	tcase_add_test(tc, test_testdev_large_log_page_reports_every_page_it_covers);
	tcase_add_test(tc, test_testdev_range_limit_is_e2big);
	tcase_add_test(tc, test_testdev_report_after_stop_fails);
	tcase_add_test(tc, test_testdev_dma_after_unmap_fails);
	tcase_add_test(tc, test_testdev_closed_device_does_no_dma);
	suite_add_tcase(s, tc);

	tc = tcase_create("mtty");
	tcase_add_checked_fixture(tc, mtty_setup, mtty_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_mtty_migration_flags);
	tcase_add_test(tc, test_mtty_dma_logging_passes_through);
	tcase_add_test(tc, test_mtty_core_rejects_bad_starts_and_reports);
	suite_add_tcase(s, tc);
	return s;
}

static void require_devices(void)
{
	char path[128];
	int r;

	if (access("/dev/iommu", F_OK) < 0)
		vm_skip("/dev/iommu does not exist: the kernel has no iommufd (CONFIG_IOMMUFD)");
	r = testdev_cdev_path(0, path, sizeof(path));
	if (r < 0)
		vm_skip("no iodirty-testdev device (%s): the module is not loaded", strerror(-r));
	if (access(MTTY_TYPES "/mtty-1/create", W_OK) < 0)
		vm_skip("no mtty mdev type: the kernel has no CONFIG_SAMPLE_VFIO_MDEV_MTTY");
	if (access(TESTDEV_DEBUGFS, F_OK) < 0)
		vm_skip("%s is missing: debugfs is not mounted", TESTDEV_DEBUGFS);
}

int main(void)
{
	SRunner *sr;
	int failed;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (sysconf(_SC_PAGESIZE) != PG)
		vm_skip("the CPU page is not 4 KiB");
	require_devices();

	sr = srunner_create(devlog_suite());
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
