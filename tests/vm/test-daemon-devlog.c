/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyd with devices that log their own DMA (VFIO DMA logging), over the real D-Bus, on
 * the guest's real kernel: the test device of tests/vm/testdev (an emulated-IOMMU VFIO
 * device whose "DMA" goes through its iommufd access and is logged in a bitmap, at most 8
 * ranges) and the kernel's mtty sample (migration, and a DMA log that logs nothing).
 *
 * The test opens each cdev and passes it with AttachDeviceFd; the daemon binds its duplicate
 * (the same open file) to its iommufd and attaches it to the session's IOAS. The test then
 * makes the device write guest memory through debugfs and checks, page for page:
 *  - without a vIOMMU: the written pages, and only those, are the round (precise); the
 *    memfd holds the bytes; the log is cleared by the round; a device detached while
 *    tracking leaves its last writes in the next round;
 *  - with a vIOMMU (IOVA != GPA): twenty mappings merged into what the device takes (it says
 *    E2BIG above 8); writes arrive translated to GPA; a write then an Unmap in flight keeps
 *    the page; a Map outside the logged ranges restarts the log over more ranges and the
 *    old mapped ranges count as dirty once, then rounds are exact again;
 *  - dirty_source "iommu" is refused for a device without an IOMMU, "none" is the fallback;
 *  - a device that logs in larger pages than the session's: chosen by "auto" it becomes a
 *    fallback device at Start (every mapped page, imprecise), asked for by "device" it makes
 *    Start fail with NotDirtyCapable;
 *  - mtty: DirtySource device-log, migration flags stop-copy and pre-copy, rounds empty.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon-test.h"
#include "iodirty.h"
#include "testdev.h"

#define SZ_1M (UINT64_C(1) << 20)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define GPA_BASE (UINT64_C(1) << 30)
#define MEM_SIZE (16 * SZ_1M)

static sd_bus *bus;
static uint8_t *mem; /* the test's view of the guest memory memfd */
static int memfd = -EBADF;

#define scall(spath, member, types, ...) \
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, member, NULL, types, ##__VA_ARGS__))

/* The round must be exactly want (GPA pages). */
static void expect_round(const char *spath, const struct dt_pageset *want, const char *what)
{
	struct dt_pageset got;
	bool precise;
	uint64_t n;

	n = dt_harvest_ack(bus, spath, GPA_BASE + MEM_SIZE, LOG_SHIFT, &got, &precise);
	dt_assert(precise, "%s: the round is not precise", what);
	for (uint64_t p = 0; p < got.npages; p++)
		dt_assert(dt_pageset_test(&got, p) == dt_pageset_test(want, p),
			  "%s: GPA page 0x%" PRIx64 " is %s the round, but was %s", what,
			  p << LOG_SHIFT, dt_pageset_test(&got, p) ? "in" : "not in",
			  dt_pageset_test(want, p) ? "written" : "not written");
	dt_assert(n == dt_pageset_count(want), "%s: %" PRIu64 " pages, want %" PRIu64, what, n,
		  dt_pageset_count(want));
	free(got.bits);
}

/* Device k writes len bytes of byte at iova, which lands at gpa: check the memfd too. */
static void dma(unsigned k, uint64_t iova, uint64_t gpa, uint64_t len, uint8_t byte,
		struct dt_pageset *want)
{
	int r = testdev_dma_write(k, iova, len, byte);

	dt_assert(r == 0, "testdev%u: DMA write of %" PRIu64 " bytes at IOVA 0x%" PRIx64 ": %s", k,
		  len, iova, strerror(-r));
	for (uint64_t i = 0; i < len; i++)
		dt_assert(mem[gpa - GPA_BASE + i] == byte,
			  "testdev%u wrote IOVA 0x%" PRIx64 ", GPA 0x%" PRIx64 " holds 0x%02x", k,
			  iova + i, gpa + i, mem[gpa - GPA_BASE + i]);
	for (uint64_t a = gpa & ~(LOG_PAGE - 1); a < gpa + len; a += LOG_PAGE)
		dt_pageset_add(want, a);
}

static void want_init(struct dt_pageset *want)
{
	dt_pageset_init(want, GPA_BASE + MEM_SIZE, LOG_SHIFT);
}

static void test_flat(void)
{
	struct dt_pageset want, got;
	struct testdev_state st;
	char *spath, *dpath;
	bool precise;
	uint64_t n;
	int fd;

	spath = dt_create_session(bus, "devlog-flat", false);
	scall(spath, "AddMemory", "httt", memfd, UINT64_C(0), MEM_SIZE, GPA_BASE);
	fd = testdev_open(0);
	dt_assert(fd >= 0, "opening testdev0: %s", strerror(-fd));
	dpath = dt_attach_fd(bus, spath, fd, NULL);
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "DirtySource", "device-log");
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "IommuType", "none");
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "TrackingMode", "hardware");
	dt_expect_string(bus, spath, DT_SES_IFACE, "TrackingMode", "hardware");
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "HwptId", 'u') == 0, "HwptId");
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLogging", 'b'), "DmaLogging");
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "Precise", 'b'), "Precise");
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLoggingRanges", 'u') == 0,
		  "DmaLoggingRanges before Start");
	dt_pass("flat: the test device is attached to the IOAS, its source is its DMA log");

	scall(spath, "Start", "");
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLoggingRanges", 'u') == 1,
		  "DmaLoggingRanges after Start");
	dt_assert(testdev_read_state(0, &st) == 0 && st.logging && st.nr_ranges == 1 &&
			  st.ranges[0].iova == GPA_BASE && st.ranges[0].length == MEM_SIZE &&
			  st.page_size == LOG_PAGE,
		  "the device logs %u ranges (first 0x%" PRIx64 " +0x%" PRIx64 ") at %" PRIu64,
		  st.nr_ranges, st.ranges[0].iova, st.ranges[0].length, st.page_size);

	want_init(&want);
	dma(0, GPA_BASE, GPA_BASE, 16, 0x11, &want);
	dma(0, GPA_BASE + 0x7800, GPA_BASE + 0x7800, 0x1000, 0x22, &want); /* two pages */
	dma(0, GPA_BASE + MEM_SIZE - 1, GPA_BASE + MEM_SIZE - 1, 1, 0x33, &want);
	dma(0, GPA_BASE + 0x123000, GPA_BASE + 0x123000, 3 * LOG_PAGE, 0x44, &want);
	expect_round(spath, &want, "flat");
	free(want.bits);
	want_init(&want);
	expect_round(spath, &want, "flat, nothing written");
	dt_pass("flat: a round is exactly the pages the device wrote (7), then none");

	/* detached while tracking: what it wrote last is in the next round */
	dma(0, GPA_BASE + 0x200000, GPA_BASE + 0x200000, 8, 0x55, &want);
	scall(spath, "DetachDevice", "o", dpath);
	dt_assert(testdev_read_state(0, &st) == 0 && !st.logging, "logging after DetachDevice");
	dt_expect_string(bus, spath, DT_SES_IFACE, "TrackingMode", "none");
	expect_round(spath, &want, "flat, after DetachDevice");
	free(want.bits);
	dt_pass("flat: DetachDevice reads the device's log first and stops it");

	/* dirty_source: no IOMMU to ask for; "none" is the fallback over every mapped page */
	close(fd);
	fd = testdev_open(0);
	dt_assert(fd >= 0, "opening testdev0: %s", strerror(-fd));
	dt_call_fails(bus, spath, DT_SES_IFACE, "AttachDeviceFd",
		      "org.iodirty.Error.NotDirtyCapable", "has no IOMMU of its own", "ha{sv}", fd,
		      1, "dirty_source", "s", "iommu");
	close(fd);
	fd = testdev_open(0);
	dt_assert(fd >= 0, "opening testdev0: %s", strerror(-fd));
	free(dpath);
	dpath = dt_attach_fd(bus, spath, fd, "none");
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "DirtySource", "fallback");
	dt_expect_string(bus, spath, DT_SES_IFACE, "TrackingMode", "fallback");
	dt_assert(testdev_read_state(0, &st) == 0 && !st.logging, "a fallback device logs");
	n = dt_harvest_ack(bus, spath, GPA_BASE + MEM_SIZE, LOG_SHIFT, &got, &precise);
	dt_assert(n == MEM_SIZE / LOG_PAGE && !precise,
		  "a fallback round is every mapped page, imprecise");
	free(got.bits);
	dt_pass("flat: dirty_source \"iommu\" is NotDirtyCapable without an IOMMU, \"none\" is the fallback");

	scall(spath, "Stop", "");
	scall(spath, "Destroy", "");
	close(fd);
	free(dpath);
	free(spath);
}

/* Twenty mappings, IOVA far from GPA and in reverse order, 1 MiB apart: a device that takes
 * 8 ranges refuses 20 and 10, and takes 5. */
#define N_MAPS 20
#define MAP_LEN (4 * LOG_PAGE)
static uint64_t map_iova(unsigned i)
{
	return UINT64_C(0x10000000) + i * SZ_1M;
}
static uint64_t map_gpa(unsigned i)
{
	return GPA_BASE + (N_MAPS - 1 - i) * 0x10000;
}

static void test_viommu(void)
{
	const uint64_t far_iova = UINT64_C(0x80000000), far_gpa = GPA_BASE + 0x800000;
	struct dt_pageset want;
	struct testdev_state st;
	char *spath, *dpath;
	unsigned n_ranges;
	int fd, r;

	spath = dt_create_session(bus, "devlog-viommu", true);
	scall(spath, "AddMemory", "httt", memfd, UINT64_C(0), MEM_SIZE, GPA_BASE);
	fd = testdev_open(1);
	dt_assert(fd >= 0, "opening testdev1: %s", strerror(-fd));
	dpath = dt_attach_fd(bus, spath, fd, "device");
	for (unsigned i = 0; i < N_MAPS; i++)
		scall(spath, "Map", "ttt", map_iova(i), map_gpa(i), MAP_LEN);
	scall(spath, "Start", "");
	n_ranges = (unsigned)dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLoggingRanges", 'u');
	dt_assert(testdev_read_state(1, &st) == 0 && st.logging, "testdev1 does not log");
	dt_assert(n_ranges >= 1 && n_ranges <= st.max_ranges && n_ranges == st.nr_ranges,
		  "%u ranges logged (the device says %u, takes %u) for %d mappings", n_ranges,
		  st.nr_ranges, st.max_ranges, N_MAPS);
	for (unsigned i = 0; i < N_MAPS; i++) {
		bool covered = false;

		for (unsigned k = 0; k < st.nr_ranges; k++)
			covered |= map_iova(i) >= st.ranges[k].iova &&
				   map_iova(i) + MAP_LEN <= st.ranges[k].iova + st.ranges[k].length;
		dt_assert(covered, "mapping %u (IOVA 0x%" PRIx64 ") is in no logged range", i,
			  map_iova(i));
	}
	dt_pass("viommu: %d mappings are logged as %u ranges (the device takes %u)", N_MAPS,
		n_ranges, st.max_ranges);

	want_init(&want);
	dma(1, map_iova(0), map_gpa(0), 1, 0x61, &want);
	dma(1, map_iova(4) + LOG_PAGE + 0x800, map_gpa(4) + LOG_PAGE + 0x800, LOG_PAGE, 0x62,
	    &want);
	dma(1, map_iova(9) + 3 * LOG_PAGE, map_gpa(9) + 3 * LOG_PAGE, LOG_PAGE, 0x63, &want);
	expect_round(spath, &want, "viommu");
	free(want.bits);
	dt_pass("viommu: the round is exactly the GPA pages behind the IOVA the device wrote");

	/* a write, then its mapping leaves while the round is not harvested yet */
	want_init(&want);
	dma(1, map_iova(3) + 2 * LOG_PAGE, map_gpa(3) + 2 * LOG_PAGE, 64, 0x64, &want);
	scall(spath, "Unmap", "tt", map_iova(3), MAP_LEN);
	r = testdev_dma_write(1, map_iova(3), 8, 0x65);
	dt_assert(r < 0, "the device still writes an unmapped IOVA");
	expect_round(spath, &want, "viommu, Unmap in flight");
	free(want.bits);
	dt_pass("viommu: a page written before its Unmap is in the next round (the write after it "
		"fails: %s)",
		strerror(-r));

	/* a Map outside the logged ranges: written pages before it are kept, the old mapped
	 * ranges count as dirty once, the device logs the new mapping too */
	want_init(&want);
	dma(1, map_iova(7), map_gpa(7), 8, 0x66, &want);
	scall(spath, "Map", "ttt", far_iova, far_gpa, MAP_LEN);
	dt_assert(testdev_read_state(1, &st) == 0 && st.logging, "testdev1 stopped logging");
	for (unsigned i = 0; i < N_MAPS; i++)
		if (i != 3)
			for (uint64_t a = map_gpa(i); a < map_gpa(i) + MAP_LEN; a += LOG_PAGE)
				dt_pageset_add(&want, a);
	dma(1, far_iova + LOG_PAGE, far_gpa + LOG_PAGE, 8, 0x67, &want);
	expect_round(spath, &want, "viommu, after a Map outside the logged ranges");
	free(want.bits);
	want_init(&want);
	dma(1, far_iova + 3 * LOG_PAGE, far_gpa + 3 * LOG_PAGE, 8, 0x68, &want);
	dma(1, map_iova(8), map_gpa(8), 8, 0x69, &want);
	expect_round(spath, &want, "viommu, the round after");
	free(want.bits);
	n_ranges = (unsigned)dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLoggingRanges", 'u');
	dt_assert(n_ranges >= 1 && n_ranges <= st.max_ranges, "%u ranges logged", n_ranges);
	dt_pass("viommu: a Map outside the logged ranges restarts the log (%u ranges): the old "
		"ranges count once, then rounds are exact again",
		n_ranges);

	scall(spath, "Stop", "");
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLoggingRanges", 'u') == 0,
		  "DmaLoggingRanges after Stop");
	dt_assert(testdev_read_state(1, &st) == 0 && !st.logging, "testdev1 logs after Stop");
	scall(spath, "Destroy", "");
	close(fd);
	free(dpath);
	free(spath);
	dt_pass("viommu: Stop stops the device's log");
}

static void reset_min_page_size(void)
{
	(void)testdev_set_min_page_size(4096);
}

static void test_coarse_device(void)
{
	struct dt_pageset got;
	char *spath, *dpath;
	bool precise;
	uint64_t n;
	int fd, r;

	r = testdev_set_min_page_size(2 * LOG_PAGE);
	dt_assert(r == 0, "setting the test device's min_page_size: %s", strerror(-r));
	dt_on_fail = reset_min_page_size;

	/* auto: the log cannot serve the session's pages, the device is a fallback */
	spath = dt_create_session(bus, "devlog-coarse", false);
	scall(spath, "AddMemory", "httt", memfd, UINT64_C(0), MEM_SIZE, GPA_BASE);
	fd = testdev_open(0);
	dt_assert(fd >= 0, "opening testdev0: %s", strerror(-fd));
	dpath = dt_attach_fd(bus, spath, fd, NULL);
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "DirtySource", "device-log");
	scall(spath, "Start", "");
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "DirtySource", "fallback");
	dt_expect_string(bus, spath, DT_SES_IFACE, "TrackingMode", "fallback");
	dt_assert(!dt_get_u64(bus, spath, DT_SES_IFACE, "Precise", 'b'), "Precise");
	n = dt_harvest_ack(bus, spath, GPA_BASE + MEM_SIZE, LOG_SHIFT, &got, &precise);
	dt_assert(n == MEM_SIZE / LOG_PAGE && !precise,
		  "the round of a fallback device: %" PRIu64 " pages, precise %d", n, precise);
	free(got.bits);
	scall(spath, "Stop", "");
	scall(spath, "Destroy", "");
	close(fd);
	free(dpath);
	free(spath);
	dt_pass("coarse device, auto: its log logs 8 KiB pages, so Start makes it a fallback device");

	/* device: asked for by name, Start fails and says why */
	spath = dt_create_session(bus, "devlog-coarse2", false);
	scall(spath, "AddMemory", "httt", memfd, UINT64_C(0), MEM_SIZE, GPA_BASE);
	fd = testdev_open(0);
	dt_assert(fd >= 0, "opening testdev0: %s", strerror(-fd));
	dpath = dt_attach_fd(bus, spath, fd, "device");
	dt_call_fails(bus, spath, DT_SES_IFACE, "Start", "org.iodirty.Error.NotDirtyCapable",
		      "logs DMA in pages of 8192 bytes", "");
	dt_expect_string(bus, spath, DT_SES_IFACE, "State", "idle");
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "DirtySource", "device-log");
	scall(spath, "Destroy", "");
	close(fd);
	free(dpath);
	free(spath);
	reset_min_page_size();
	dt_on_fail = NULL;
	dt_pass("coarse device, dirty_source \"device\": Start fails with NotDirtyCapable, the "
		"session stays idle");
}

static void test_mtty(void)
{
	static const char uuid[] = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
	struct dt_pageset want;
	char *spath, *dpath, *s;
	sd_bus_message *reply;
	int fd, r;

	r = mtty_create(uuid);
	dt_assert(r == 0, "creating an mtty mdev: %s (CONFIG_SAMPLE_VFIO_MDEV_MTTY)", strerror(-r));
	fd = mtty_open(uuid);
	dt_assert(fd >= 0, "opening the mtty mdev: %s", strerror(-fd));

	spath = dt_create_session(bus, "devlog-mtty", false);
	scall(spath, "AddMemory", "httt", memfd, UINT64_C(0), MEM_SIZE, GPA_BASE);
	dpath = dt_attach_fd(bus, spath, fd, NULL);
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "DirtySource", "device-log");
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "Migration", 'b'), "Migration");
	reply = dt_call(bus, dpath, "org.freedesktop.DBus.Properties", "Get", NULL, "ss",
			DT_DEV_IFACE, "MigrationFlags");
	{
		bool stop_copy = false, pre_copy = false;
		const char *flag;

		dt_assert(sd_bus_message_enter_container(reply, 'v', "as") > 0 &&
				  sd_bus_message_enter_container(reply, 'a', "s") > 0,
			  "MigrationFlags");
		while (sd_bus_message_read(reply, "s", &flag) > 0) {
			stop_copy |= strcmp(flag, "stop-copy") == 0;
			pre_copy |= strcmp(flag, "pre-copy") == 0;
		}
		dt_assert(stop_copy && pre_copy, "MigrationFlags lack stop-copy or pre-copy");
	}
	sd_bus_message_unref(reply);
	scall(spath, "Start", "");
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLoggingRanges", 'u') == 1,
		  "DmaLoggingRanges of mtty");
	want_init(&want);
	expect_round(spath, &want, "mtty");
	free(want.bits);
	s = dt_get_string(bus, spath, DT_SES_IFACE, "TrackingMode");
	dt_assert(strcmp(s, "hardware") == 0, "TrackingMode %s", s);
	free(s);
	scall(spath, "Stop", "");
	scall(spath, "Destroy", "");
	close(fd);
	r = mtty_remove(uuid);
	dt_assert(r == 0, "removing the mtty mdev: %s", strerror(-r));
	free(dpath);
	free(spath);
	dt_pass("mtty: migration flags stop-copy and pre-copy; its DMA log starts, reports nothing "
		"and stops through the daemon");
}

int main(void)
{
	dt_require_iommufd();
	bus = dt_connect();
	memfd = memfd_create("guest", MFD_CLOEXEC);
	dt_assert(memfd >= 0 && ftruncate(memfd, MEM_SIZE) == 0, "memfd: %s", strerror(errno));
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	dt_assert(mem != MAP_FAILED, "mmap: %s", strerror(errno));

	test_flat();
	test_viommu();
	test_coarse_device();
	test_mtty();

	printf("daemon-devlog: %u passed\n", dt_passed);
	sd_bus_unref(bus);
	return 0;
}
