/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyd in owner mode with a real PCI device, over the real D-Bus: QEMU's edu device
 * bound to vfio-pci behind an emulated VT-d, which has no dirty tracking (the fallback).
 *
 * The daemon owns the iommufd, the IOAS and the HWPT; the guest memory is a memfd the test
 * passes with AddMemory. The test opens the device's cdev itself and passes it with
 * AttachDeviceFd: the daemon binds its duplicate to its iommufd, and since both fds share
 * one open file, the test's fd is bound too, so the test can map BAR0 and start DMA while
 * the daemon tracks. Checked:
 *  - without a vIOMMU (IOVA = GPA): the device's writes arrive in the memfd, Harvest says
 *    precise = false and its round covers every mapped page, so every page the device
 *    wrote; the session and device properties say "fallback" and "intel-vtd";
 *  - with a vIOMMU: Map(iova, gpa, size) makes the device's DMA to iova land at gpa in the
 *    memfd; the round holds exactly the mapped GPA ranges; Unmap keeps the range in the next
 *    round and DMA to the unmapped IOVA no longer reaches memory;
 *  - DetachDevice and Destroy release everything (the device can be attached again);
 *  - a probe has no side effect: ProbeDeviceFd leaves the caller's fd unbound, and a probe
 *    of a device bound elsewhere is refused (Busy).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/vfio.h>

#include "daemon-test.h"
#include "edu.h"
#include "iodirty.h"

#define SZ_1M (UINT64_C(1) << 20)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define GPA_BASE SZ_1M /* under the edu device's 28-bit DMA mask */
#define MEM_SIZE (4 * SZ_1M)

#define EDU_XFER 1024

static sd_bus *bus;
static char cdev[64];
static uint8_t *mem; /* the test's view of the guest memory memfd */
static int memfd = -EBADF;

/* ---- the edu device, through the test's own fd -------------------------------------- */

struct edu {
	int fd;
	volatile uint8_t *bar;
	uint64_t bar_size;
};

static void edu_setup(struct edu *e)
{
	struct vfio_region_info cfg = {.argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX};
	struct vfio_region_info bar = {.argsz = sizeof(bar), .index = VFIO_PCI_BAR0_REGION_INDEX};
	uint16_t cmd;
	void *p;

	/* only a bound device answers: bound by the daemon, through the shared open file */
	dt_assert(ioctl(e->fd, VFIO_DEVICE_GET_REGION_INFO, &cfg) == 0,
		  "config region info on the test's fd (bound by the daemon?): %s",
		  strerror(errno));
	dt_assert(pread(e->fd, &cmd, sizeof(cmd), cfg.offset + PCI_CMD_OFFSET) == sizeof(cmd),
		  "read PCI command");
	cmd |= PCI_CMD_MEMORY | PCI_CMD_MASTER;
	dt_assert(pwrite(e->fd, &cmd, sizeof(cmd), cfg.offset + PCI_CMD_OFFSET) == sizeof(cmd),
		  "write PCI command");
	dt_assert(ioctl(e->fd, VFIO_DEVICE_GET_REGION_INFO, &bar) == 0, "BAR0 info");
	p = mmap(NULL, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, e->fd, (off_t)bar.offset);
	dt_assert(p != MAP_FAILED, "mmap BAR0: %s", strerror(errno));
	e->bar = p;
	e->bar_size = bar.size;
	dt_assert(*(volatile uint32_t *)(e->bar + EDU_REG_ID) == EDU_ID, "edu id");
}

static void edu_close(struct edu *e)
{
	if (e->bar)
		munmap((void *)e->bar, e->bar_size);
	e->bar = NULL;
	close(e->fd);
	e->fd = -EBADF;
}

static void edu_dma(struct edu *e, uint64_t src, uint64_t dst, uint64_t count, bool to_ram)
{
	edu_dma_start(e->bar, src, dst, count, to_ram);
	dt_assert(edu_dma_wait(e->bar, 60), "edu DMA did not complete");
}

/* RAM at src_iova -> device -> RAM at dst_iova */
static void edu_copy(struct edu *e, uint64_t src_iova, uint64_t dst_iova)
{
	edu_dma(e, src_iova, EDU_BUF + 0x100, EDU_XFER, false);
	edu_dma(e, EDU_BUF + 0x100, dst_iova, EDU_XFER, true);
}

/* ---- sessions ------------------------------------------------------------------------- */

#define scall(spath, member, types, ...) \
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, member, NULL, types, ##__VA_ARGS__))

static void fill(uint64_t gpa, uint8_t seed)
{
	for (unsigned i = 0; i < EDU_XFER; i++)
		mem[gpa - GPA_BASE + i] = (uint8_t)(i * 13 + seed);
}

static bool same(uint64_t a, uint64_t b)
{
	return memcmp(mem + (a - GPA_BASE), mem + (b - GPA_BASE), EDU_XFER) == 0;
}

static void test_identity(void)
{
	const uint64_t src = GPA_BASE + 0x10000, dst = GPA_BASE + 0x234000 + 0x300;
	struct dt_pageset set;
	struct edu e = {};
	char *spath, *dpath, *s;
	bool precise;
	uint64_t n;

	spath = dt_create_session(bus, "edu-owner", false);
	scall(spath, "AddMemory", "httt", memfd, UINT64_C(0), MEM_SIZE, GPA_BASE);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "IoasId", 'u') != 0, "no IOAS");
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "MappedBytes", 't') == MEM_SIZE,
		  "MappedBytes");

	e.fd = open(cdev, O_RDWR | O_CLOEXEC);
	dt_assert(e.fd >= 0, "open %s: %s", cdev, strerror(errno));
	dpath = dt_attach_fd(bus, spath, e.fd, NULL);
	s = dt_get_string(bus, spath, DT_SES_IFACE, "TrackingMode");
	dt_assert(strcmp(s, "fallback") == 0, "TrackingMode %s", s);
	free(s);
	dt_assert(!dt_get_u64(bus, spath, DT_SES_IFACE, "Precise", 'b'), "Precise");
	s = dt_get_string(bus, dpath, DT_DEV_IFACE, "IommuType");
	dt_assert(strcmp(s, "intel-vtd") == 0, "IommuType %s", s);
	free(s);
	s = dt_get_string(bus, dpath, DT_DEV_IFACE, "TrackingMode");
	dt_assert(strcmp(s, "fallback") == 0, "device TrackingMode %s", s);
	free(s);
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "HwptId", 'u') != 0, "HwptId");
	s = dt_get_string(bus, dpath, DT_DEV_IFACE, "Cdev");
	dt_assert(strcmp(s, cdev) == 0, "Cdev of the fd-attached device is \"%s\", not %s", s,
		  cdev);
	free(s);
	dt_pass("owner: AddMemory and AttachDeviceFd of %s (Cdev found from the fd), fallback on the emulated VT-d",
		cdev);

	scall(spath, "Start", "");
	scall(spath, "Start", "");
	n = dt_harvest_ack(bus, spath, GPA_BASE + MEM_SIZE, LOG_SHIFT, &set, &precise);
	dt_assert(!precise, "a fallback round must say precise = false");
	dt_assert(n == MEM_SIZE / LOG_PAGE, "fallback round: %" PRIu64 " pages, want all %" PRIu64,
		  n, MEM_SIZE / LOG_PAGE);
	free(set.bits);

	/* the device writes guest memory: RAM -> device -> RAM, IOVA = GPA */
	edu_setup(&e);
	fill(src, 7);
	memset(mem + (dst - GPA_BASE), 0, EDU_XFER);
	edu_copy(&e, src, dst);
	dt_assert(same(src, dst), "the device's DMA did not arrive in the memfd");
	dt_pass("owner: the device's DMA through the daemon's IOAS arrived in the memfd");

	n = dt_harvest_ack(bus, spath, GPA_BASE + MEM_SIZE, LOG_SHIFT, &set, &precise);
	dt_assert(!precise, "precise");
	for (uint64_t a = dst & ~(LOG_PAGE - 1); a < dst + EDU_XFER; a += LOG_PAGE)
		dt_assert(dt_pageset_test(&set, a >> LOG_SHIFT),
			  "GPA page 0x%" PRIx64 " written by the device is not in the round", a);
	for (uint64_t p = 0; p < set.npages; p++)
		dt_assert(dt_pageset_test(&set, p) == (p >= GPA_BASE / LOG_PAGE),
			  "page 0x%" PRIx64 ": fallback marks exactly the mapped memory",
			  p << LOG_SHIFT);
	free(set.bits);
	dt_pass("owner: Harvest is imprecise and covers every page the device wrote");

	scall(spath, "Stop", "");
	scall(spath, "DetachDevice", "o", dpath);
	s = dt_get_string(bus, spath, DT_SES_IFACE, "TrackingMode");
	dt_assert(strcmp(s, "none") == 0, "TrackingMode after detach: %s", s);
	free(s);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "DetachDevice",
				     "org.iodirty.Error.NoSuchDevice", "o", dpath));
	scall(spath, "Destroy", "");
	edu_close(&e);
	free(dpath);
	free(spath);
	dt_pass("owner: Stop, DetachDevice and Destroy");
}

static void test_viommu(void)
{
	const uint64_t iova_a = 0x800000, gpa_a = GPA_BASE + 0x100000, size_a = 0x10000;
	const uint64_t iova_b = 0x900000, gpa_b = GPA_BASE + 0x3ff000, size_b = LOG_PAGE;
	struct dt_pageset set;
	struct edu e = {};
	char *spath, *dpath;
	bool precise;
	uint64_t n;

	spath = dt_create_session(bus, "edu-viommu", true);
	scall(spath, "AddMemory", "httt", memfd, UINT64_C(0), MEM_SIZE, GPA_BASE);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "MappedBytes", 't') == 0,
		  "with a vIOMMU AddMemory maps nothing");
	e.fd = open(cdev, O_RDWR | O_CLOEXEC);
	dt_assert(e.fd >= 0, "open %s: %s", cdev, strerror(errno));
	dpath = dt_attach_fd(bus, spath, e.fd, NULL);
	scall(spath, "Map", "ttt", iova_a, gpa_a, size_a);
	scall(spath, "Map", "ttt", iova_b, gpa_b, size_b);
	scall(spath, "Start", "");
	edu_setup(&e);

	/* the device writes IOVA iova_a + 0x2000: the data lands at gpa_a + 0x2000 */
	fill(gpa_b, 42);
	memset(mem + (gpa_a + 0x2000 - GPA_BASE), 0, EDU_XFER);
	edu_copy(&e, iova_b, iova_a + 0x2000);
	dt_assert(same(gpa_b, gpa_a + 0x2000),
		  "DMA to IOVA 0x%" PRIx64 " did not land at GPA 0x%" PRIx64, iova_a + 0x2000,
		  gpa_a + 0x2000);
	dt_pass("owner, vIOMMU: DMA to an IOVA lands at the GPA Map gave it");

	n = dt_harvest_ack(bus, spath, GPA_BASE + MEM_SIZE, LOG_SHIFT, &set, &precise);
	dt_assert(!precise, "precise");
	for (uint64_t p = 0; p < set.npages; p++) {
		uint64_t a = p << LOG_SHIFT;
		bool mapped = (a >= gpa_a && a < gpa_a + size_a) ||
			      (a >= gpa_b && a < gpa_b + size_b);

		dt_assert(dt_pageset_test(&set, p) == mapped,
			  "GPA page 0x%" PRIx64 " is %s the round, mapped %d", a,
			  dt_pageset_test(&set, p) ? "in" : "not in", mapped);
	}
	dt_assert(n == (size_a + size_b) / LOG_PAGE, "dirty pages %" PRIu64, n);
	free(set.bits);
	dt_pass("owner, vIOMMU: the fallback round is exactly the mapped GPA ranges");

	/* unmapped: the range still reaches the next round, and the IOVA leads nowhere */
	scall(spath, "Unmap", "tt", iova_a, size_a);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "Mappings", 'u') == 1, "Mappings");
	memset(mem + (gpa_a - GPA_BASE), 0, EDU_XFER);
	edu_dma(&e, EDU_BUF + 0x100, iova_a, EDU_XFER, true);
	for (unsigned i = 0; i < EDU_XFER; i++)
		dt_assert(mem[gpa_a - GPA_BASE + i] == 0, "DMA to an unmapped IOVA reached memory");
	n = dt_harvest_ack(bus, spath, GPA_BASE + MEM_SIZE, LOG_SHIFT, &set, &precise);
	for (uint64_t a = gpa_a; a < gpa_a + size_a; a += LOG_PAGE)
		dt_assert(dt_pageset_test(&set, a >> LOG_SHIFT),
			  "unmapped GPA page 0x%" PRIx64 " missing from the next round", a);
	dt_assert(n == (size_a + size_b) / LOG_PAGE, "dirty pages %" PRIu64, n);
	free(set.bits);
	dt_pass("owner, vIOMMU: Unmap keeps the range for the next round; DMA to it is blocked");

	scall(spath, "Destroy", "");
	edu_close(&e);
	free(dpath);
	free(spath);
}

/*
 * A probe has no side effect on the device: ProbeDeviceFd leaves the caller's fd unbound
 * (the caller can still bind it to an iommufd of its own), and a probe by name of a device
 * somebody holds bound is refused (Busy) instead of touching it.
 */
static void test_probe(const char *pci)
{
	struct iod_iommufd *ictx = NULL;
	sd_bus_message *reply;
	uint32_t dev_id = 0;
	int fd, r;

	fd = open(cdev, O_RDWR | O_CLOEXEC);
	dt_assert(fd >= 0, "open %s: %s", cdev, strerror(errno));
	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "ProbeDeviceFd", NULL, "h", fd);
	sd_bus_message_unref(reply);
	dt_assert(iod_iommufd_open(NULL, &ictx) == 0, "open /dev/iommu");
	r = iod_vfio_bind(fd, iod_iommufd_fd(ictx), &dev_id);
	dt_assert(r == 0,
		  "after ProbeDeviceFd the caller's fd cannot be bound to its own iommufd: %s "
		  "(the probe bound it)",
		  iod_strerror(r));
	dt_pass("ProbeDeviceFd leaves the caller's fd unbound: the caller binds it itself "
		"(dev_id %u)",
		dev_id);

	dt_call_fails(bus, DT_MANAGER, DT_MGR_IFACE, "ProbeDevice", "org.iodirty.Error.Busy",
		      "is in use", "s", pci);
	dt_call_fails(bus, DT_MANAGER, DT_MGR_IFACE, "ProbeDeviceFd", "org.iodirty.Error.Busy",
		      "is in use", "h", fd);
	close(fd); /* unbinds */
	iod_iommufd_free(ictx);
	sd_bus_message_unref(dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "ProbeDevice", NULL, "s", pci));
	dt_pass("a probe of a device bound elsewhere is refused with Busy and disturbs nothing; "
		"once free it is probed again");
}

int main(void)
{
	const char *env = getenv("IOD_EDU_PCI");
	_cleanup_free_ char *path = NULL;
	int r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	dt_require_iommufd();
	if (!env || !*env) {
		printf("SKIP: IOD_EDU_PCI is not set: no edu device bound to vfio-pci\n");
		return 77;
	}
	r = iod_vfio_cdev_path(NULL, env, &path);
	dt_assert(r == 0, "%s has no VFIO cdev: %s", env, iod_strerror(r));
	snprintf(cdev, sizeof(cdev), "%s", path);

	memfd = memfd_create("guest-memory", MFD_CLOEXEC);
	dt_assert(memfd >= 0 && ftruncate(memfd, MEM_SIZE) == 0, "memfd");
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	dt_assert(mem != MAP_FAILED, "mmap memfd");

	bus = dt_connect();
	test_probe(env);
	test_identity();
	test_viommu();
	sd_bus_flush_close_unref(bus);
	printf("%u checks passed\n", dt_passed);
	return EXIT_SUCCESS;
}
