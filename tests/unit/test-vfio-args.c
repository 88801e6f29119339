/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the kernel-facing modules decide on their own, without a kernel: PCI address syntax,
 * resolving a VFIO cdev through a sysfs tree (a directory layout built in a temp dir),
 * arguments rejected before any ioctl, and the errors for fds that are not iommufd or VFIO.
 *
 * The iommufd calls are made on a context opened on /dev/null: a request that passes the
 * library's validation reaches the ioctl and comes back -ENOTTY, one that does not comes
 * back -EINVAL or -EOVERFLOW. That tells "validated" from "sent" without a kernel.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iodirty.h"

static void iommufd_freep(struct iod_iommufd **p)
{
	iod_iommufd_free(*p);
}
#define _cleanup_iommufd_ _cleanup_(iommufd_freep)

static unsigned count_fds(void)
{
	unsigned n = 0;
	struct dirent *de;
	DIR *d;

	d = opendir("/proc/self/fd");
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static long pagesz(void)
{
	return sysconf(_SC_PAGESIZE);
}

/* ---- PCI addresses ------------------------------------------------------------------- */

START_TEST(test_pci_address_valid)
{
	static const char *const good[] = {
		"0000:00:03.0", "0000:00:1f.7", "0000:AB:1F.7", "ffff:ff:00.0", "10000:00:02.0",
	};
	static const char *const bad[] = {
		"",
		"00:03.0",
		"000:00:03.0",
		"0000:0:03.0",
		"0000:00:3.0",
		"0000:00:03",
		"0000:00:03.",
		"0000:00:20.0",
		"0000:00:03.8",
		"0000:0g:03.0",
		"0000:00:03.0 ",
		" 0000:00:03.0",
		"0000-00-03.0",
		"0000:00-03.0",
		"0000:000:03.0",
		"0000:00:003.0",
		"000000000:00:03.0",
		"0000:00:03.00",
		"0000:00:03.0/..",
		"../0000:00:03.0",
	};

	for (size_t i = 0; i < ELEMENTSOF(good); i++)
		ck_assert_msg(iod_pci_address_valid(good[i]), "rejected %s", good[i]);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		ck_assert_msg(!iod_pci_address_valid(bad[i]), "accepted '%s'", bad[i]);
	ck_assert(!iod_pci_address_valid(NULL));
}
END_TEST

/* ---- cdev path through a sysfs tree -------------------------------------------------- */

static char sysroot[PATH_MAX];

static void mkdirs(const char *rel)
{
	char path[PATH_MAX * 2];
	char *p;

	snprintf(path, sizeof(path), "%s/%s", sysroot, rel);
	for (p = path + strlen(sysroot) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		ck_assert(mkdir(path, 0755) == 0 || errno == EEXIST);
		*p = '/';
	}
	ck_assert(mkdir(path, 0755) == 0 || errno == EEXIST);
}

static void symlink_at(const char *target, const char *rel)
{
	char path[PATH_MAX * 2];

	snprintf(path, sizeof(path), "%s/%s", sysroot, rel);
	ck_assert_int_eq(symlink(target, path), 0);
}

static void rm_rf(const char *path)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	ck_assert_int_eq(system(cmd), 0);
}

/*
 * The layout Linux has: bus/pci/devices/<addr> is a symlink into devices/, and a device
 * bound to vfio-pci with cdev support has a vfio-dev/vfioN directory.
 */
static void sysfs_setup(void)
{
	snprintf(sysroot, sizeof(sysroot), "%s/iod-sysfs-XXXXXX", getenv("TMPDIR") ?: "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(sysroot));

	/* bound to vfio-pci */
	mkdirs("devices/pci0000:00/0000:00:03.0/vfio-dev/vfio0");
	/* bound to some other driver */
	mkdirs("devices/pci0000:00/0000:00:04.0");
	/* vfio-dev present but empty */
	mkdirs("devices/pci0000:00/0000:00:05.0/vfio-dev");
	/* inconsistent: two cdevs */
	mkdirs("devices/pci0000:00/0000:00:06.0/vfio-dev/vfio1");
	mkdirs("devices/pci0000:00/0000:00:06.0/vfio-dev/vfio2");
	/* a higher cdev number and other entries beside it */
	mkdirs("devices/pci0000:00/0000:00:07.0/vfio-dev/vfio12");
	mkdirs("devices/pci0000:00/0000:00:07.0/vfio-dev/power");
	mkdirs("devices/pci0000:00/0000:00:07.0/vfio-dev/vfiox");

	mkdirs("bus/pci/devices");
	symlink_at("../../../devices/pci0000:00/0000:00:03.0", "bus/pci/devices/0000:00:03.0");
	symlink_at("../../../devices/pci0000:00/0000:00:04.0", "bus/pci/devices/0000:00:04.0");
	symlink_at("../../../devices/pci0000:00/0000:00:05.0", "bus/pci/devices/0000:00:05.0");
	symlink_at("../../../devices/pci0000:00/0000:00:06.0", "bus/pci/devices/0000:00:06.0");
	symlink_at("../../../devices/pci0000:00/0000:00:07.0", "bus/pci/devices/0000:00:07.0");
	/* a dangling link: the device went away */
	symlink_at("../../../devices/pci0000:00/0000:00:08.0", "bus/pci/devices/0000:00:08.0");
}

static void sysfs_teardown(void)
{
	rm_rf(sysroot);
}

START_TEST(test_cdev_path_resolves)
{
	_cleanup_free_ char *path = NULL;

	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:03.0", &path), 0);
	ck_assert_str_eq(path, "/dev/vfio/devices/vfio0");
	free(path);
	path = NULL;

	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:07.0", &path), 0);
	ck_assert_str_eq(path, "/dev/vfio/devices/vfio12");
}
END_TEST

START_TEST(test_cdev_path_upper_case)
{
	_cleanup_free_ char *path = NULL;

	mkdirs("devices/pci0000:00/0000:0a:1f.0/vfio-dev/vfio3");
	symlink_at("../../../devices/pci0000:00/0000:0a:1f.0", "bus/pci/devices/0000:0a:1f.0");
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:0A:1F.0", &path), 0);
	ck_assert_str_eq(path, "/dev/vfio/devices/vfio3");
}
END_TEST

START_TEST(test_cdev_path_errors)
{
	char *path = (char *)"untouched";

	/* no such PCI device, or its link dangles */
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:09.0", &path), -ENODEV);
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:08.0", &path), -ENODEV);
	/* a device not bound to a VFIO driver with cdevs */
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:04.0", &path), -ENXIO);
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:05.0", &path), -ENXIO);
	/* two cdevs for one device: sysfs is not what Linux makes */
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:06.0", &path), -EBADMSG);
	/* malformed addresses never touch the file system */
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "../../../etc", &path), -EINVAL);
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:03.0/..", &path), -EINVAL);
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, NULL, &path), -EINVAL);
	ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:03.0", NULL), -EINVAL);
	/* a sysfs root that does not exist */
	ck_assert_int_eq(iod_vfio_cdev_path("/nonexistent-iod", "0000:00:03.0", &path), -ENODEV);

	ck_assert_str_eq(path, "untouched");
}
END_TEST

START_TEST(test_cdev_path_no_leak)
{
	unsigned before = count_fds();
	char *path = NULL;

	for (int i = 0; i < 16; i++) {
		ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:03.0", &path), 0);
		free(path);
		ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:06.0", &path), -EBADMSG);
		ck_assert_int_eq(iod_vfio_cdev_path(sysroot, "0000:00:04.0", &path), -ENXIO);
	}
	ck_assert_uint_eq(count_fds(), before);
}
END_TEST

/* ---- VFIO fds ------------------------------------------------------------------------ */

START_TEST(test_vfio_open_not_vfio)
{
	char file[PATH_MAX];
	int fd = 4242, tmp;
	unsigned before = count_fds();

	ck_assert_int_eq(iod_vfio_open("/nonexistent-iod/vfio0", &fd), -ENOENT);
	ck_assert_int_eq(iod_vfio_open("/dev/null", &fd), -ENOTTY);

	snprintf(file, sizeof(file), "%s/iod-file-XXXXXX", getenv("TMPDIR") ?: "/tmp");
	tmp = mkstemp(file);
	ck_assert_int_ge(tmp, 0);
	close(tmp);
	ck_assert_int_eq(iod_vfio_open(file, &fd), -ENOTTY);
	unlink(file);

	ck_assert_int_eq(iod_vfio_open(NULL, &fd), -EINVAL);
	ck_assert_int_eq(iod_vfio_open("/dev/null", NULL), -EINVAL);
	ck_assert_int_eq(fd, 4242);
	ck_assert_uint_eq(count_fds(), before);
}
END_TEST

START_TEST(test_vfio_check_fd)
{
	_cleanup_close_ int null = -EBADF, dir = -EBADF;
	int p[2];

	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(null, 0);
	dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(dir, 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);

	ck_assert_int_eq(iod_vfio_check_fd(null), -ENOTTY);
	ck_assert_int_eq(iod_vfio_check_fd(dir), -ENOTTY);
	ck_assert_int_eq(iod_vfio_check_fd(p[0]), -ENOTTY);
	ck_assert_int_eq(iod_vfio_check_fd(-1), -EBADF);
	close(p[0]);
	ck_assert_int_eq(iod_vfio_check_fd(p[0]), -EBADF);
	close(p[1]);
}
END_TEST

START_TEST(test_vfio_ioctls_args)
{
	_cleanup_close_ int null = -EBADF;
	struct iod_vfio_features f = {.dma_logging = true, .migration_flags = 7};
	uint32_t id = 77;

	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(null, 0);

	ck_assert_int_eq(iod_vfio_bind(null, null, NULL), -EINVAL);
	ck_assert_int_eq(iod_vfio_bind(-1, null, &id), -EBADF);
	ck_assert_int_eq(iod_vfio_bind(null, -1, &id), -EBADF);
	/* a well-formed request reaches the ioctl, which /dev/null does not know */
	ck_assert_int_eq(iod_vfio_bind(null, null, &id), -ENOTTY);
	ck_assert_uint_eq(id, 77);

	ck_assert_int_eq(iod_vfio_attach(-1, 1, &id), -EBADF);
	ck_assert_int_eq(iod_vfio_attach(null, 1, &id), -ENOTTY);
	ck_assert_int_eq(iod_vfio_attach(null, 1, NULL), -ENOTTY);
	ck_assert_uint_eq(id, 77);

	ck_assert_int_eq(iod_vfio_detach(-1), -EBADF);
	ck_assert_int_eq(iod_vfio_detach(null), -ENOTTY);

	ck_assert_int_eq(iod_vfio_probe_features(-1, &f), -EBADF);
	ck_assert_int_eq(iod_vfio_probe_features(null, NULL), -EINVAL);
	ck_assert(f.dma_logging);
	ck_assert_uint_eq(f.migration_flags, 7);
}
END_TEST

/* ---- iommufd contexts ---------------------------------------------------------------- */

START_TEST(test_iommufd_open_missing)
{
	struct iod_iommufd *ictx = (struct iod_iommufd *)0x1;
	unsigned before = count_fds();

	ck_assert_int_eq(iod_iommufd_open("/nonexistent-iod/iommu", &ictx), -ENODEV);
	ck_assert_ptr_eq(ictx, (struct iod_iommufd *)0x1);
	ck_assert_int_eq(iod_iommufd_open(NULL, NULL), -EINVAL);
	if (access("/dev/iommu", F_OK) < 0) {
		ck_assert_int_eq(iod_iommufd_open(NULL, &ictx), -ENODEV);
		ck_assert_ptr_eq(ictx, (struct iod_iommufd *)0x1);
	}
	ck_assert_uint_eq(count_fds(), before);
}
END_TEST

START_TEST(test_iommufd_adopt_not_iommufd)
{
	struct iod_iommufd *ictx = (struct iod_iommufd *)0x1;
	_cleanup_close_ int null = -EBADF, dir = -EBADF;
	unsigned before;
	int p[2];

	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(null, 0);
	dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(dir, 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	before = count_fds();

	ck_assert_int_eq(iod_iommufd_adopt(null, &ictx), -ENOTTY);
	ck_assert_int_eq(iod_iommufd_adopt(dir, &ictx), -ENOTTY);
	ck_assert_int_eq(iod_iommufd_adopt(p[0], &ictx), -ENOTTY);
	ck_assert_int_eq(iod_iommufd_adopt(p[1], &ictx), -ENOTTY);
	ck_assert_int_eq(iod_iommufd_adopt(-1, &ictx), -EBADF);
	ck_assert_int_eq(iod_iommufd_adopt(null, NULL), -EINVAL);
	ck_assert_ptr_eq(ictx, (struct iod_iommufd *)0x1);
	/* the dup is closed again on every failure */
	ck_assert_uint_eq(count_fds(), before);

	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(iod_iommufd_adopt(p[0], &ictx), -EBADF);
	ck_assert_ptr_eq(ictx, (struct iod_iommufd *)0x1);
}
END_TEST

START_TEST(test_iommufd_null_context)
{
	struct iod_hwpt hwpt = {.id = 1};
	uint64_t bitmap[1];
	uint32_t id;
	bool on;

	ck_assert_ptr_null(iod_iommufd_free(NULL));
	ck_assert_int_eq(iod_iommufd_fd(NULL), -EBADF);
	ck_assert_int_eq(iod_ioas_alloc(NULL, &id), -EINVAL);
	ck_assert_int_eq(iod_iommufd_destroy(NULL, 1), -EINVAL);
	ck_assert_int_eq(iod_ioas_set_huge_pages(NULL, 1, false), -EINVAL);
	ck_assert_int_eq(iod_ioas_get_huge_pages(NULL, 1, &on), -EINVAL);
	ck_assert_int_eq(iod_hwpt_alloc(NULL, 1, 2, 0, &id), -EINVAL);
	ck_assert_int_eq(iod_hwpt_set_tracking(NULL, &hwpt, true), -EINVAL);
	ck_assert_int_eq(iod_hwpt_read_dirty(NULL, 1, 0, 4096, 4096, bitmap, 0), -EINVAL);
}
END_TEST

static struct iod_iommufd *null_ctx(void)
{
	struct iod_iommufd *ictx = NULL;

	/* iod_iommufd_open() takes a path for tests and does not second-guess it */
	ck_assert_int_eq(iod_iommufd_open("/dev/null", &ictx), 0);
	ck_assert_int_ge(iod_iommufd_fd(ictx), 0);
	return ictx;
}

START_TEST(test_iommufd_fd_cloexec)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	_cleanup_close_ int null = -EBADF;
	struct iod_iommufd *adopted = NULL;

	ck_assert_int_ne(fcntl(iod_iommufd_fd(ictx), F_GETFD) & FD_CLOEXEC, 0);

	/* adopting duplicates the fd: the caller keeps its own */
	null = open("/dev/null", O_RDWR);
	ck_assert_int_ge(null, 0);
	ck_assert_int_eq(iod_iommufd_adopt(null, &adopted), -ENOTTY);
	ck_assert_int_ge(fcntl(null, F_GETFD), 0);
}
END_TEST

START_TEST(test_ioas_args)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	uint32_t id = 77;
	bool on = true;

	ck_assert_int_eq(iod_ioas_alloc(ictx, NULL), -EINVAL);
	ck_assert_int_eq(iod_ioas_alloc(ictx, &id), -ENOTTY);
	ck_assert_uint_eq(id, 77);

	ck_assert_int_eq(iod_ioas_get_huge_pages(ictx, 1, NULL), -EINVAL);
	ck_assert_int_eq(iod_ioas_get_huge_pages(ictx, 1, &on), -ENOTTY);
	ck_assert(on);
	ck_assert_int_eq(iod_ioas_set_huge_pages(ictx, 1, false), -ENOTTY);
	ck_assert_int_eq(iod_iommufd_destroy(ictx, 1), -ENOTTY);
}
END_TEST

START_TEST(test_map_args)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	const uint64_t ps = pagesz();
	char *buf, *top;

	buf = aligned_alloc(ps, 4 * ps);
	ck_assert_ptr_nonnull(buf);
	top = (char *)(uintptr_t)(UINTPTR_MAX & ~(ps - 1));

	/* well formed: reaches the ioctl */
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, 2 * ps, 0x100000, IOD_MAP_READ), -ENOTTY);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, ps, 0, IOD_MAP_READ | IOD_MAP_WRITE), -ENOTTY);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, ps, UINT64_MAX - ps + 1, IOD_MAP_WRITE),
			 -ENOTTY);

	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, 0, 0x100000, IOD_MAP_READ), -EINVAL);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, NULL, ps, 0x100000, IOD_MAP_READ), -EINVAL);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, ps, 0x100000, 0), -EINVAL);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, ps, 0x100000, 1u << 2), -EINVAL);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, ps, 0x100000, IOD_MAP_READ | (1u << 31)),
			 -EINVAL);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf + 1, ps, 0x100000, IOD_MAP_READ), -EINVAL);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, ps, 0x100001, IOD_MAP_READ), -EINVAL);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, ps + 1, 0x100000, IOD_MAP_READ), -EINVAL);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, ps / 2, 0x100000, IOD_MAP_READ), -EINVAL);
	/* wrapping IOVA or VA */
	ck_assert_int_eq(iod_ioas_map(ictx, 1, buf, 2 * ps, UINT64_MAX - ps + 1, IOD_MAP_READ),
			 -EOVERFLOW);
	ck_assert_int_eq(iod_ioas_map(ictx, 1, top, 2 * ps, 0x100000, IOD_MAP_READ), -EOVERFLOW);
	ck_assert_int_eq(iod_ioas_map(NULL, 1, buf, ps, 0x100000, IOD_MAP_READ), -EINVAL);

	free(buf);
}
END_TEST

START_TEST(test_unmap_args)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	uint64_t unmapped = 77;

	ck_assert_int_eq(iod_ioas_unmap(ictx, 1, 0x100000, 0x1000, &unmapped), -ENOTTY);
	ck_assert_int_eq(iod_ioas_unmap(ictx, 1, 0x100000, 0x1000, NULL), -ENOTTY);
	/* everything: iova 0, length UINT64_MAX, as the kernel defines it */
	ck_assert_int_eq(iod_ioas_unmap(ictx, 1, 0, UINT64_MAX, &unmapped), -ENOTTY);

	ck_assert_int_eq(iod_ioas_unmap(ictx, 1, 0x100000, 0, &unmapped), -EINVAL);
	ck_assert_int_eq(iod_ioas_unmap(ictx, 1, UINT64_MAX, 2, &unmapped), -EOVERFLOW);
	ck_assert_int_eq(iod_ioas_unmap(ictx, 1, 2, UINT64_MAX, &unmapped), -EOVERFLOW);
	ck_assert_int_eq(iod_ioas_unmap(NULL, 1, 0, 0x1000, &unmapped), -EINVAL);
	ck_assert_uint_eq(unmapped, 77);
}
END_TEST

START_TEST(test_iova_ranges_args)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	struct iod_range *ranges = (struct iod_range *)0x1;
	uint64_t align = 77;
	size_t n = 77;

	ck_assert_int_eq(iod_ioas_iova_ranges(ictx, 1, &ranges, &n, &align), -ENOTTY);
	ck_assert_int_eq(iod_ioas_iova_ranges(ictx, 1, &ranges, &n, NULL), -ENOTTY);
	ck_assert_int_eq(iod_ioas_iova_ranges(ictx, 1, NULL, &n, &align), -EINVAL);
	ck_assert_int_eq(iod_ioas_iova_ranges(ictx, 1, &ranges, NULL, &align), -EINVAL);
	ck_assert_int_eq(iod_ioas_iova_ranges(NULL, 1, &ranges, &n, &align), -EINVAL);
	ck_assert_ptr_eq(ranges, (struct iod_range *)0x1);
	ck_assert_uint_eq(n, 77);
	ck_assert_uint_eq(align, 77);
}
END_TEST

START_TEST(test_hw_info_args)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	struct iod_hw_info info = {.type = 77};

	ck_assert_int_eq(iod_iommufd_hw_info(ictx, 1, NULL), -EINVAL);
	ck_assert_int_eq(iod_iommufd_hw_info(NULL, 1, &info), -EINVAL);
	ck_assert_int_eq(iod_iommufd_hw_info(ictx, 1, &info), -ENOTTY);
	ck_assert_uint_eq(info.type, 77);
}
END_TEST

START_TEST(test_hwpt_alloc_args)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	uint32_t id = 77;

	ck_assert_int_eq(iod_hwpt_alloc(ictx, 1, 2, 0, &id), -ENOTTY);
	ck_assert_int_eq(iod_hwpt_alloc(ictx, 1, 2, IOD_HWPT_DIRTY, &id), -ENOTTY);
	ck_assert_int_eq(iod_hwpt_alloc(ictx, 1, 2, IOD_HWPT_NEST_PARENT, &id), -ENOTTY);
	ck_assert_int_eq(iod_hwpt_alloc(ictx, 1, 2, IOD_HWPT_NEST_PARENT | IOD_HWPT_DIRTY, &id),
			 -ENOTTY);
	ck_assert_int_eq(iod_hwpt_alloc(ictx, 1, 2, 1u << 2, &id), -EINVAL);
	ck_assert_int_eq(iod_hwpt_alloc(ictx, 1, 2, IOD_HWPT_DIRTY | (1u << 31), &id), -EINVAL);
	ck_assert_int_eq(iod_hwpt_alloc(ictx, 1, 2, 0, NULL), -EINVAL);
	ck_assert_uint_eq(id, 77);
}
END_TEST

START_TEST(test_hwpt_alloc_nested_args)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	uint32_t id = 77, data = 0;
	bool yes = true;

	/* arguments are checked before the kernel is asked (it would answer ENOTTY here) */
	ck_assert_int_eq(iod_hwpt_alloc_nested(ictx, 1, 2, 0xdead, &data, sizeof(data), &id),
			 -ENOTTY);
	ck_assert_int_eq(iod_hwpt_alloc_nested(ictx, 1, 2, 0, &data, sizeof(data), &id), -EINVAL);
	ck_assert_int_eq(iod_hwpt_alloc_nested(ictx, 1, 2, 0xdead, NULL, sizeof(data), &id),
			 -EINVAL);
	ck_assert_int_eq(iod_hwpt_alloc_nested(ictx, 1, 2, 0xdead, &data, 0, &id), -EINVAL);
	ck_assert_int_eq(iod_hwpt_alloc_nested(ictx, 1, 2, 0xdead, &data, sizeof(data), NULL),
			 -EINVAL);
	ck_assert_int_eq(iod_hwpt_alloc_nested(NULL, 1, 2, 0xdead, &data, sizeof(data), &id),
			 -EINVAL);
	ck_assert_uint_eq(id, 77);
	ck_assert_int_eq(iod_hwpt_is_nested(NULL, 1), -EINVAL);
	ck_assert_int_eq(iod_hwpt_is_nested(ictx, 1), -ENOTTY);
	ck_assert_int_eq(iod_hwpt_probe_nest_parent(ictx, 1, 2, NULL), -EINVAL);
	ck_assert_int_eq(iod_hwpt_probe_nest_parent(ictx, 1, 2, &yes), -ENOTTY);
	ck_assert(yes);
}
END_TEST

START_TEST(test_set_tracking_idempotent)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	struct iod_hwpt hwpt = {.id = 5, .dirty_capable = true};

	ck_assert_int_eq(iod_hwpt_set_tracking(ictx, NULL, true), -EINVAL);

	/* a change of state goes to the kernel; a failure leaves the state alone */
	ck_assert_int_eq(iod_hwpt_set_tracking(ictx, &hwpt, true), -ENOTTY);
	ck_assert(!hwpt.tracking);

	/* no change: nothing is sent (sending ENABLE again would wipe the dirty bits) */
	ck_assert_int_eq(iod_hwpt_set_tracking(ictx, &hwpt, false), 0);
	ck_assert(!hwpt.tracking);

	hwpt.tracking = true;
	ck_assert_int_eq(iod_hwpt_set_tracking(ictx, &hwpt, true), 0);
	ck_assert(hwpt.tracking);
	ck_assert_int_eq(iod_hwpt_set_tracking(ictx, &hwpt, false), -ENOTTY);
	ck_assert(hwpt.tracking);
}
END_TEST

START_TEST(test_read_dirty_args)
{
	_cleanup_iommufd_ struct iod_iommufd *ictx = null_ctx();
	uint64_t bitmap[4] = {};

	/* well formed */
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0x100000, 0x4000, 0x1000, bitmap, 0),
			 -ENOTTY);
	ck_assert_int_eq(
		iod_hwpt_read_dirty(ictx, 1, 0x100000, 0x1000, 0x800, bitmap, IOD_READ_NO_CLEAR),
		-ENOTTY);
	ck_assert_int_eq(
		iod_hwpt_read_dirty(ictx, 1, UINT64_MAX - 0xfff, 0x1000, 0x1000, bitmap, 0),
		-ENOTTY);

	/* page size: a power of two */
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0, 0x1000, 0, bitmap, 0), -EINVAL);
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0, 0x3000, 0x3000, bitmap, 0), -EINVAL);
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0, 0x1001, 0x1001, bitmap, 0), -EINVAL);
	/* alignment of iova and length to it */
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0x100800, 0x1000, 0x1000, bitmap, 0),
			 -EINVAL);
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0x100000, 0x1800, 0x1000, bitmap, 0),
			 -EINVAL);
	/* zero length, overflow */
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0x100000, 0, 0x1000, bitmap, 0), -EINVAL);
	ck_assert_int_eq(
		iod_hwpt_read_dirty(ictx, 1, UINT64_MAX - 0xfff, 0x2000, 0x1000, bitmap, 0),
		-EOVERFLOW);
	/* flags, bitmap */
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0, 0x1000, 0x1000, bitmap, 1u << 2), -EINVAL);
	ck_assert_int_eq(iod_hwpt_read_dirty(ictx, 1, 0, 0x1000, 0x1000, NULL, 0), -EINVAL);

	for (size_t i = 0; i < ELEMENTSOF(bitmap); i++)
		ck_assert_uint_eq(bitmap[i], 0);
}
END_TEST

/* ---- logging ------------------------------------------------------------------------- */

struct log_capture {
	unsigned n;
	int worst; /* lowest (most severe) level seen */
	char last[512];
};

static void capture(int level, const char *message, void *userdata)
{
	struct log_capture *c = userdata;

	c->n++;
	if (level < c->worst)
		c->worst = level;
	snprintf(c->last, sizeof(c->last), "%s", message);
}

START_TEST(test_failures_logged_at_debug)
{
	struct log_capture c = {.worst = 99};
	struct iod_iommufd *ictx = NULL;
	char *path = NULL;
	uint32_t id;

	iod_set_log_fn(capture, &c);
	ck_assert_int_eq(iod_iommufd_open("/nonexistent-iod/iommu", &ictx), -ENODEV);
	ck_assert_uint_ge(c.n, 1);
	ck_assert_ptr_nonnull(strstr(c.last, "/nonexistent-iod/iommu"));

	ictx = null_ctx();
	ck_assert_int_eq(iod_hwpt_alloc(ictx, 3, 4, IOD_HWPT_DIRTY, &id), -ENOTTY);
	ck_assert_ptr_nonnull(strstr(c.last, "IOMMU_HWPT_ALLOC"));
	ck_assert_int_eq(iod_vfio_cdev_path("/nonexistent-iod", "0000:00:03.0", &path), -ENODEV);
	ck_assert_int_eq(c.worst, 7);
	iod_iommufd_free(ictx);
	iod_set_log_fn(NULL, NULL);
}
END_TEST

/* Device DMA logging: ranges merged to a device's limit across the smallest gaps, every input
 * byte still covered; arguments refused before any ioctl. */
static bool covers(const struct iod_range *out, size_t n_out, const struct iod_range *in,
		   size_t n_in)
{
	for (size_t i = 0; i < n_in; i++) {
		bool found = false;

		for (size_t k = 0; k < n_out; k++)
			if (in[i].start >= out[k].start &&
			    in[i].start + in[i].length <= out[k].start + out[k].length)
				found = true;
		if (!found)
			return false;
	}
	return true;
}

START_TEST(test_log_merge_ranges)
{
	/* gaps: 0x1000, 0x10000, 0x2000, 0x1000 */
	const struct iod_range in[] = {
		{0x0, 0x1000},	   {0x2000, 0x1000},  {0x13000, 0x1000},
		{0x16000, 0x1000}, {0x18000, 0x2000},
	};
	struct iod_range r[5];
	size_t n;

	memcpy(r, in, sizeof(in));
	ck_assert_uint_eq(iod_vfio_log_merge_ranges(r, 5, 5), 5);
	ck_assert_uint_eq(iod_vfio_log_merge_ranges(r, 5, 8), 5);
	ck_assert(memcmp(r, in, sizeof(in)) == 0);

	/* Two joins: the two gaps of 0x1000 (the first and the last), not the 0x2000 one. */
	n = iod_vfio_log_merge_ranges(r, 5, 3);
	ck_assert_uint_eq(n, 3);
	ck_assert(covers(r, n, in, 5));
	ck_assert_uint_eq(r[0].start, 0x0);
	ck_assert_uint_eq(r[0].length, 0x3000);
	ck_assert_uint_eq(r[1].start, 0x13000);
	ck_assert_uint_eq(r[1].length, 0x1000);
	ck_assert_uint_eq(r[2].start, 0x16000);
	ck_assert_uint_eq(r[2].length, 0x4000);

	/* Three joins: the 0x2000 gap goes too; the 0x10000 one stays. */
	memcpy(r, in, sizeof(in));
	n = iod_vfio_log_merge_ranges(r, 5, 2);
	ck_assert_uint_eq(n, 2);
	ck_assert(covers(r, n, in, 5));
	ck_assert_uint_eq(r[0].length, 0x3000);
	ck_assert_uint_eq(r[1].start, 0x13000);
	ck_assert_uint_eq(r[1].length, 0x7000);

	/* One range over everything; a limit of 0 means 1. */
	memcpy(r, in, sizeof(in));
	n = iod_vfio_log_merge_ranges(r, 5, 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(r[0].start, 0);
	ck_assert_uint_eq(r[0].length, 0x1a000);
}
END_TEST

START_TEST(test_log_merge_ranges_many)
{
	/* 1000 ranges with gaps of pseudo-random sizes (many equal): merged to each limit, the
	 * result is sorted, disjoint, covers every input, and joined the smallest gaps. */
	enum { N = 1000 };
	static struct iod_range in[N], r[N];
	uint64_t at = 0, seed = 42;

	for (size_t i = 0; i < N; i++) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		at += ((seed >> 33) % 8 + 1) * 0x1000; /* gap */
		in[i] = (struct iod_range){at, ((seed >> 40) % 4 + 1) * 0x1000};
		at += in[i].length;
	}
	for (size_t max = 1; max <= N; max = max * 3 + 1) {
		uint64_t joined_max = 0, kept_min = UINT64_MAX;
		size_t n;

		memcpy(r, in, sizeof(in));
		n = iod_vfio_log_merge_ranges(r, N, max);
		ck_assert_uint_eq(n, max < N ? max : N);
		ck_assert(covers(r, n, in, N));
		for (size_t k = 1; k < n; k++)
			ck_assert(r[k].start > r[k - 1].start + r[k - 1].length);
		/* Every gap left is at least as large as every gap joined. */
		for (size_t i = 1; i < N; i++) {
			uint64_t gap = in[i].start - (in[i - 1].start + in[i - 1].length);
			bool kept = false;

			for (size_t k = 1; k < n; k++)
				if (r[k].start == in[i].start)
					kept = true;
			if (kept)
				kept_min = gap < kept_min ? gap : kept_min;
			else
				joined_max = gap > joined_max ? gap : joined_max;
		}
		if (n > 1 && n < N)
			ck_assert_uint_le(joined_max, kept_min);
	}
}
END_TEST

START_TEST(test_log_args)
{
	struct iod_range one = {0x1000, 0x1000}, bad = {0x1800, 0x1000};
	struct iod_range two[] = {{0x2000, 0x2000}, {0x3000, 0x1000}};
	uint64_t page = 4096, bits = 0;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(iod_vfio_log_start(-1, &one, 1, &page), -EBADF);
	ck_assert_int_eq(iod_vfio_log_start(fd, &one, 0, &page), -EINVAL);
	ck_assert_int_eq(iod_vfio_log_start(fd, &one, IOD_VFIO_LOG_MAX_RANGES + 1, &page), -EINVAL);
	ck_assert_int_eq(iod_vfio_log_start(fd, &bad, 1, &page), -EINVAL); /* misaligned */
	ck_assert_int_eq(iod_vfio_log_start(fd, two, 2, &page), -EINVAL); /* overlapping */
	page = 3000;
	ck_assert_int_eq(iod_vfio_log_start(fd, &one, 1, &page), -EINVAL);
	page = 4096;
	/* Valid: it reaches the ioctl, which /dev/null refuses. */
	ck_assert_int_eq(iod_vfio_log_start(fd, &one, 1, &page), -ENOTTY);
	ck_assert_uint_eq(page, 4096);
	ck_assert_int_eq(iod_vfio_log_report(fd, 0x1000, 0, 4096, &bits), -EINVAL);
	ck_assert_int_eq(iod_vfio_log_report(fd, 0x1800, 0x1000, 4096, &bits), -EINVAL);
	ck_assert_int_eq(iod_vfio_log_report(fd, UINT64_MAX - 0xfff, 0x2000, 4096, &bits), -EINVAL);
	ck_assert_int_eq(iod_vfio_log_report(fd, 0x1000, 0x1000, 2048, &bits), -EINVAL);
	ck_assert_int_eq(iod_vfio_log_report(fd, 0x1000, 0x1000, 4096, NULL), -EINVAL);
	ck_assert_int_eq(iod_vfio_log_report(fd, 0x1000, 0x1000, 4096, &bits), -ENOTTY);
	ck_assert_int_eq(iod_vfio_log_stop(-1), -EBADF);
	ck_assert_int_eq(iod_vfio_log_stop(fd), -ENOTTY);
	close(fd);
}
END_TEST

static Suite *vfio_args_suite(void)
{
	Suite *s = suite_create("kernel-facing arguments");
	TCase *tc;

	tc = tcase_create("pci");
	tcase_add_test(tc, test_pci_address_valid);
	suite_add_tcase(s, tc);

	tc = tcase_create("sysfs");
	tcase_add_checked_fixture(tc, sysfs_setup, sysfs_teardown);
	tcase_add_test(tc, test_cdev_path_resolves);
	tcase_add_test(tc, test_cdev_path_upper_case);
	tcase_add_test(tc, test_cdev_path_errors);
	tcase_add_test(tc, test_cdev_path_no_leak);
	suite_add_tcase(s, tc);

	tc = tcase_create("vfio");
	tcase_add_test(tc, test_vfio_open_not_vfio);
	tcase_add_test(tc, test_vfio_check_fd);
	tcase_add_test(tc, test_vfio_ioctls_args);
	tcase_add_test(tc, test_log_merge_ranges);
	tcase_add_test(tc, test_log_merge_ranges_many);
	tcase_add_test(tc, test_log_args);
	suite_add_tcase(s, tc);

	tc = tcase_create("iommufd");
	tcase_add_test(tc, test_iommufd_open_missing);
	tcase_add_test(tc, test_iommufd_adopt_not_iommufd);
	tcase_add_test(tc, test_iommufd_null_context);
	tcase_add_test(tc, test_iommufd_fd_cloexec);
	tcase_add_test(tc, test_ioas_args);
	tcase_add_test(tc, test_map_args);
	tcase_add_test(tc, test_unmap_args);
	tcase_add_test(tc, test_iova_ranges_args);
	tcase_add_test(tc, test_hw_info_args);
	tcase_add_test(tc, test_hwpt_alloc_args);
	tcase_add_test(tc, test_hwpt_alloc_nested_args);
	tcase_add_test(tc, test_set_tracking_idempotent);
	tcase_add_test(tc, test_read_dirty_args);
	tcase_add_test(tc, test_failures_logged_at_debug);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(vfio_args_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
