/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libiodirty with a real PCI device: QEMU's edu device (1234:11e8) bound to vfio-pci behind
 * an emulated VT-d, used through its VFIO cdev. The device's DMA engine copies between guest
 * memory and its own 4 KiB buffer, so the test sees data go through the IOAS mappings the
 * library made. The emulated VT-d has no dirty tracking: this is the fallback path.
 *
 * The edu device, as QEMU implements it: BAR0 is 1 MiB of MMIO; 0x00 reads 0x010000ed
 * (version 1.0), 0x04 reads back the bitwise inverse of what was written; DMA registers at
 * 0x80 source, 0x88 destination, 0x90 count, 0x98 command (bit 0 start/busy, bit 1
 * direction: 0 from RAM to the device, 1 from the device to RAM); the device's buffer sits
 * at device address 0x40000; DMA addresses are masked to 28 bits; a transfer completes
 * about 100 ms (virtual time) after it is started. Older QEMUs refuse a transfer reaching
 * the very end of the buffer, so transfers here stay well inside it.
 *
 * The PCI address comes from IOD_EDU_PCI or from scanning /sys/bus/pci/devices. Exit 77
 * with the reason printed when /dev/iommu or the device (bound to vfio-pci) is absent.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "edu.h"
#include "iodirty.h"
#include "vm-test.h"

#define EDU_XFER 1024

/* Two IOVAs under the device's 28-bit DMA mask. */
#define IOVA_SRC UINT64_C(0x100000)
#define IOVA_DST UINT64_C(0x200000)

static char edu_addr[32];
static uint64_t cpu_page;

static bool read_hex(const char *path, unsigned *ret)
{
	FILE *f = fopen(path, "re");
	bool ok;

	if (!f)
		return false;
	ok = fscanf(f, "%x", ret) == 1;
	fclose(f);
	return ok;
}

/* The first edu device in sysfs. */
static bool find_edu(char *addr, size_t size)
{
	glob_t g;
	bool found = false;

	if (glob("/sys/bus/pci/devices/*", 0, NULL, &g) != 0)
		return false;
	for (size_t i = 0; i < g.gl_pathc && !found; i++) {
		char path[512];
		unsigned vendor, device;

		snprintf(path, sizeof(path), "%s/vendor", g.gl_pathv[i]);
		if (!read_hex(path, &vendor) || vendor != EDU_VENDOR)
			continue;
		snprintf(path, sizeof(path), "%s/device", g.gl_pathv[i]);
		if (!read_hex(path, &device) || device != EDU_DEVICE)
			continue;
		snprintf(addr, size, "%s", strrchr(g.gl_pathv[i], '/') + 1);
		found = true;
	}
	globfree(&g);
	return found;
}

/* ---- a bound device ------------------------------------------------------------------ */

struct dev {
	int fd;
	struct iod_iommufd *ictx;
	uint32_t dev_id;
	uint32_t ioas;
	volatile uint8_t *bar;
	uint64_t bar_size;
};

static void dev_open_bind(struct dev *d)
{
	_cleanup_free_ char *path = NULL;

	*d = (struct dev){.fd = -EBADF};
	ck_assert_int_eq(iod_vfio_cdev_path(NULL, edu_addr, &path), 0);
	ck_assert_int_eq(iod_vfio_open(path, &d->fd), 0);
	ck_assert_int_eq(iod_iommufd_open(NULL, &d->ictx), 0);
	ck_assert_int_eq(iod_vfio_bind(d->fd, iod_iommufd_fd(d->ictx), &d->dev_id), 0);
	ck_assert_int_eq(iod_ioas_alloc(d->ictx, &d->ioas), 0);
}

static void dev_close(struct dev *d)
{
	if (d->bar)
		munmap((void *)d->bar, d->bar_size);
	d->fd = iod_close(d->fd); /* unbinds */
	ck_assert_int_eq(iod_iommufd_destroy(d->ictx, d->ioas), 0);
	d->ictx = iod_iommufd_free(d->ictx);
}

static void region_info(struct dev *d, uint32_t index, struct vfio_region_info *ret)
{
	*ret = (struct vfio_region_info){.argsz = sizeof(*ret), .index = index};
	ck_assert_msg(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, ret) == 0,
		      "VFIO_DEVICE_GET_REGION_INFO(%u): %s", index, strerror(errno));
}

/* Memory decoding and bus mastering on, through the virtualised config space. */
static void enable_bus_master(struct dev *d)
{
	struct vfio_region_info cfg;
	uint16_t cmd;

	region_info(d, VFIO_PCI_CONFIG_REGION_INDEX, &cfg);
	ck_assert_int_eq(pread(d->fd, &cmd, sizeof(cmd), cfg.offset + PCI_CMD_OFFSET), sizeof(cmd));
	cmd |= PCI_CMD_MEMORY | PCI_CMD_MASTER;
	ck_assert_int_eq(pwrite(d->fd, &cmd, sizeof(cmd), cfg.offset + PCI_CMD_OFFSET),
			 sizeof(cmd));
}

static void map_bar0(struct dev *d)
{
	struct vfio_region_info bar;
	void *p;

	region_info(d, VFIO_PCI_BAR0_REGION_INDEX, &bar);
	ck_assert_uint_ge(bar.size, 0x100);
	ck_assert_msg(bar.flags & VFIO_REGION_INFO_FLAG_MMAP, "BAR0 cannot be mmap'ed");
	p = mmap(NULL, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, d->fd, bar.offset);
	ck_assert_msg(p != MAP_FAILED, "mmap BAR0: %s", strerror(errno));
	d->bar = p;
	d->bar_size = bar.size;
}

static uint32_t rd32(struct dev *d, unsigned reg)
{
	return *(volatile uint32_t *)(d->bar + reg);
}

static void wr32(struct dev *d, unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)(d->bar + reg) = v;
}

/* One DMA transfer; returns once the device reports it done. */
static void edu_dma(struct dev *d, uint64_t src, uint64_t dst, uint64_t count, bool to_ram)
{
	ck_assert_uint_eq(edu_dma_busy(d->bar), 0);
	edu_dma_start(d->bar, src, dst, count, to_ram);
	ck_assert_msg(edu_dma_wait(d->bar, 60), "edu DMA did not complete");
}

static uint8_t *page_new(void)
{
	void *p = mmap(NULL, cpu_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert(p != MAP_FAILED);
	memset(p, 0, cpu_page);
	return p;
}

static bool in_ranges(const struct iod_range *r, size_t n, uint64_t start, uint64_t length)
{
	for (size_t i = 0; i < n; i++)
		if (start >= r[i].start && start + length - 1 <= r[i].start + (r[i].length - 1))
			return true;
	return false;
}

/* ---- tests --------------------------------------------------------------------------- */

START_TEST(test_resolve_and_open)
{
	_cleanup_free_ char *path = NULL, *path2 = NULL;
	char upper[32];
	unsigned fds = vm_count_fds();
	int fd = -EBADF;

	ck_assert(iod_pci_address_valid(edu_addr));
	ck_assert_int_eq(iod_vfio_cdev_path(NULL, edu_addr, &path), 0);
	ck_assert_int_eq(strncmp(path, "/dev/vfio/devices/vfio", 22), 0);
	printf("edu %s: %s\n", edu_addr, path);

	for (size_t i = 0; i <= strlen(edu_addr); i++)
		upper[i] = (edu_addr[i] >= 'a' && edu_addr[i] <= 'f') ? edu_addr[i] - 32
								      : edu_addr[i];
	ck_assert_int_eq(iod_vfio_cdev_path("/sys", upper, &path2), 0);
	ck_assert_str_eq(path, path2);

	ck_assert_int_eq(iod_vfio_open(path, &fd), 0);
	ck_assert_int_eq(iod_vfio_check_fd(fd), 0);
	ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
	/* an iommufd is not a VFIO device, and a VFIO device is not an iommufd */
	{
		struct iod_iommufd *ictx = NULL;

		ck_assert_int_eq(iod_iommufd_adopt(fd, &ictx), -ENOTTY);
		ck_assert_int_eq(iod_iommufd_open(NULL, &ictx), 0);
		ck_assert_int_eq(iod_vfio_check_fd(iod_iommufd_fd(ictx)), -ENOTTY);
		iod_iommufd_free(ictx);
	}
	close(fd);
	ck_assert_uint_eq(vm_count_fds(), fds);
}
END_TEST

START_TEST(test_dma_through_ioas)
{
	_cleanup_free_ struct iod_range *ranges = NULL;
	unsigned fds = vm_count_fds();
	struct iod_vfio_features features;
	struct iod_hw_info info;
	uint32_t hwpt, attached, dirty = 77;
	uint64_t unmapped, align;
	uint8_t *src, *dst;
	struct dev d;
	size_t n;

	dev_open_bind(&d);

	/* an emulated VT-d: no dirty tracking, the library says "not dirty capable" */
	ck_assert_int_eq(iod_iommufd_hw_info(d.ictx, d.dev_id, &info), 0);
	ck_assert_uint_eq(info.type, IOMMU_HW_INFO_TYPE_INTEL_VTD);
	ck_assert(!info.dirty_tracking);
	ck_assert_int_eq(iod_hwpt_alloc(d.ictx, d.dev_id, d.ioas, IOD_HWPT_DIRTY, &dirty),
			 -EOPNOTSUPP);
	ck_assert_uint_eq(dirty, 77);
	printf("PASS: dirty HWPT on the emulated VT-d: %s\n", iod_strerror(-EOPNOTSUPP));

	/* a plain HWPT, the device attached to it */
	ck_assert_int_eq(iod_hwpt_alloc(d.ictx, d.dev_id, d.ioas, 0, &hwpt), 0);
	ck_assert_int_eq(iod_vfio_attach(d.fd, hwpt, &attached), 0);
	ck_assert_uint_eq(attached, hwpt);

	ck_assert_int_eq(iod_ioas_iova_ranges(d.ictx, d.ioas, &ranges, &n, &align), 0);
	ck_assert_uint_ge(n, 1);
	ck_assert(in_ranges(ranges, n, IOVA_SRC, cpu_page));
	ck_assert(in_ranges(ranges, n, IOVA_DST, cpu_page));
	ck_assert_uint_le(align, cpu_page);

	src = page_new();
	dst = page_new();
	ck_assert_int_eq(iod_ioas_map(d.ictx, d.ioas, src, cpu_page, IOVA_SRC, IOD_MAP_READ), 0);
	ck_assert_int_eq(
		iod_ioas_map(d.ictx, d.ioas, dst, cpu_page, IOVA_DST, IOD_MAP_READ | IOD_MAP_WRITE),
		0);

	enable_bus_master(&d);
	map_bar0(&d);
	ck_assert_uint_eq(rd32(&d, EDU_REG_ID), EDU_ID);
	wr32(&d, EDU_REG_LIVENESS, 0x12345678);
	ck_assert_uint_eq(rd32(&d, EDU_REG_LIVENESS), ~UINT32_C(0x12345678));

	/* RAM -> device -> RAM at another IOVA, twice with different data and offsets */
	for (unsigned round = 0; round < 2; round++) {
		const uint64_t dev_off = round ? 0x800 : 0x100, dst_off = round ? 0x900 : 0x200;

		for (unsigned i = 0; i < EDU_XFER; i++)
			src[i] = (uint8_t)(i * 7 + 3 + round * 101);
		memset(dst, 0, cpu_page);

		edu_dma(&d, IOVA_SRC, EDU_BUF + dev_off, EDU_XFER, false);
		edu_dma(&d, EDU_BUF + dev_off, IOVA_DST + dst_off, EDU_XFER, true);

		ck_assert_msg(memcmp(dst + dst_off, src, EDU_XFER) == 0,
			      "round %u: the data did not come back", round);
		for (uint64_t i = 0; i < cpu_page; i++)
			if (i < dst_off || i >= dst_off + EDU_XFER)
				ck_assert_msg(dst[i] == 0, "round %u: byte %" PRIu64 " written",
					      round, i);
		printf("PASS: edu DMA round %u: %u bytes RAM -> device -> RAM through the IOAS\n",
		       round, EDU_XFER);
	}

	/* the device has nothing of its own for migration */
	ck_assert_int_eq(iod_vfio_probe_features(d.fd, &features), 0);
	ck_assert(!features.dma_logging);
	ck_assert(!features.migration);
	ck_assert_uint_eq(features.migration_flags, 0);

	/* once unmapped, the IOVA leads nowhere: the IOMMU translates, it does not pass through */
	ck_assert_int_eq(iod_ioas_unmap(d.ictx, d.ioas, IOVA_DST, cpu_page, &unmapped), 0);
	ck_assert_uint_eq(unmapped, cpu_page);
	memset(dst, 0, cpu_page);
	edu_dma(&d, EDU_BUF + 0x100, IOVA_DST, EDU_XFER, true);
	for (uint64_t i = 0; i < cpu_page; i++)
		ck_assert_msg(dst[i] == 0, "DMA to an unmapped IOVA reached memory");
	printf("PASS: DMA to an unmapped IOVA did not reach memory\n");

	ck_assert_int_eq(iod_vfio_detach(d.fd), 0);
	ck_assert_int_eq(iod_ioas_unmap(d.ictx, d.ioas, IOVA_SRC, cpu_page, &unmapped), 0);
	ck_assert_int_eq(iod_iommufd_destroy(d.ictx, hwpt), 0);
	dev_close(&d);
	munmap(src, cpu_page);
	munmap(dst, cpu_page);
	ck_assert_uint_eq(vm_count_fds(), fds);
}
END_TEST

START_TEST(test_attach_ioas_auto_domain)
{
	unsigned fds = vm_count_fds();
	uint32_t pt, hwpt, again;
	struct dev d;

	dev_open_bind(&d);

	/* attached to the IOAS itself, the kernel makes and reports a HWPT of its own */
	ck_assert_int_eq(iod_vfio_attach(d.fd, d.ioas, &pt), 0);
	ck_assert_uint_ne(pt, d.ioas);
	/* which goes with the attachment: the IOAS cannot be destroyed meanwhile */
	ck_assert_int_eq(iod_iommufd_destroy(d.ictx, d.ioas), -EBUSY);

	/* replaced by an explicit HWPT without detaching */
	ck_assert_int_eq(iod_hwpt_alloc(d.ictx, d.dev_id, d.ioas, 0, &hwpt), 0);
	ck_assert_int_eq(iod_vfio_attach(d.fd, hwpt, &again), 0);
	ck_assert_uint_eq(again, hwpt);
	ck_assert_int_eq(iod_iommufd_destroy(d.ictx, hwpt), -EBUSY);

	ck_assert_int_eq(iod_vfio_detach(d.fd), 0);
	ck_assert_int_eq(iod_iommufd_destroy(d.ictx, hwpt), 0);
	dev_close(&d);
	ck_assert_uint_eq(vm_count_fds(), fds);
}
END_TEST

START_TEST(test_bind_errors)
{
	_cleanup_free_ char *path = NULL;
	struct iod_iommufd *ictx = NULL;
	uint32_t dev_id = 77;
	int fd = -EBADF, null;

	ck_assert_int_eq(iod_vfio_cdev_path(NULL, edu_addr, &path), 0);
	ck_assert_int_eq(iod_vfio_open(path, &fd), 0);

	/* binding needs an iommufd */
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(null, 0);
	ck_assert_int_lt(iod_vfio_bind(fd, null, &dev_id), 0);
	ck_assert_uint_eq(dev_id, 77);
	close(null);

	/* nothing but binding is allowed before binding */
	ck_assert_int_lt(iod_vfio_attach(fd, 1, NULL), 0);

	ck_assert_int_eq(iod_iommufd_open(NULL, &ictx), 0);
	ck_assert_int_eq(iod_vfio_bind(fd, iod_iommufd_fd(ictx), &dev_id), 0);
	/* an id that is not an IOAS or HWPT */
	ck_assert_int_lt(iod_vfio_attach(fd, dev_id, NULL), 0);
	ck_assert_int_lt(iod_vfio_attach(fd, 0x7fff0000, NULL), 0);

	close(fd);
	iod_iommufd_free(ictx);
}
END_TEST

static Suite *vfio_suite(void)
{
	Suite *s = suite_create("kernel VFIO (edu)");
	TCase *tc = tcase_create("edu");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_resolve_and_open);
	tcase_add_test(tc, test_dma_through_ioas);
	tcase_add_test(tc, test_attach_ioas_auto_domain);
	tcase_add_test(tc, test_bind_errors);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	_cleanup_free_ char *path = NULL;
	const char *env = getenv("IOD_EDU_PCI");
	SRunner *sr;
	int failed, r;

	cpu_page = sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (access("/dev/iommu", F_OK) < 0)
		vm_skip("/dev/iommu does not exist: the kernel has no iommufd (CONFIG_IOMMUFD)");
	if (env && *env)
		snprintf(edu_addr, sizeof(edu_addr), "%s", env);
	else if (!find_edu(edu_addr, sizeof(edu_addr)))
		vm_skip("no edu PCI device (%04x:%04x) in /sys/bus/pci/devices", EDU_VENDOR,
			EDU_DEVICE);
	r = iod_vfio_cdev_path(NULL, edu_addr, &path);
	if (r == -ENODEV)
		vm_skip("no PCI device %s", edu_addr);
	if (r == -ENXIO)
		vm_skip("%s is not bound to vfio-pci with cdev support", edu_addr);
	if (r < 0)
		vm_skip("cannot resolve %s: %s", edu_addr, iod_strerror(r));
	if (access(path, F_OK) < 0)
		vm_skip("%s does not exist (devtmpfs?)", path);

	sr = srunner_create(vfio_suite());
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
