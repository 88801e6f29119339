/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest tier's test devices for device DMA logging, for test programs in the guest:
 *
 * - testdevK: the VFIO devices of iodirty-testdev.ko (tests/vm/testdev/), loaded by the
 *   guest's init (tests/vm/init.sh) in the mock shape with devices=2 max_ranges=8.
 *   Emulated IOMMU (attach to an IOAS, not a HWPT), DMA logging over a software bitmap,
 *   and a debugfs knob that makes the device write guest memory through its iommufd
 *   access. It only writes while its cdev is open, bound and attached to an IOAS that maps
 *   the IOVA. The device accepts at most max_ranges logged ranges (E2BIG beyond).
 * - mtty: the kernel's sample mediated device (CONFIG_SAMPLE_VFIO_MDEV_MTTY=y): migration
 *   (STOP_COPY, PRE_COPY) and DMA logging ops that log nothing (REPORT is all zero).
 *
 * Every function returns 0 (or an fd) on success and -errno on failure, and writes its
 * out-parameters only on success. libc only: usable from check tests and from plain
 * programs alike.
 */
#ifndef IOD_TESTS_VM_TESTDEV_H
#define IOD_TESTS_VM_TESTDEV_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TESTDEV_SYSFS "/sys/bus/platform/devices/iodirty-testdev."
#define TESTDEV_DEBUGFS "/sys/kernel/debug/iodirty-testdev"
#define TESTDEV_MAX_RANGES 256
#define MTTY_TYPES "/sys/class/mdev_bus/mtty/mdev_supported_types"

/* The "vfioN" entry of DIR/vfio-dev/ as "/dev/vfio/devices/vfioN". */
static inline int testdev__vfio_dev(const char *dir, char *path, size_t size)
{
	char sub[512];
	struct dirent *de;
	int r = -ENXIO;
	DIR *d;

	snprintf(sub, sizeof(sub), "%s/vfio-dev", dir);
	d = opendir(sub);
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (strncmp(de->d_name, "vfio", 4) == 0) {
			if ((size_t)snprintf(path, size, "/dev/vfio/devices/%s", de->d_name) >=
			    size)
				r = -ENAMETOOLONG;
			else
				r = 0;
			break;
		}
	closedir(d);
	return r;
}

static inline int testdev__open_rw(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

/*
 * The VFIO cdev of test device k ("/dev/vfio/devices/vfioN") into path. -ENOENT: no such
 * test device (module not loaded, or k >= devices).
 */
static inline int testdev_cdev_path(unsigned k, char *path, size_t size)
{
	char dir[128];

	snprintf(dir, sizeof(dir), TESTDEV_SYSFS "%u", k);
	return testdev__vfio_dev(dir, path, size);
}

/* Open test device k's cdev read-write (CLOEXEC): the fd, or -errno. */
static inline int testdev_open(unsigned k)
{
	char path[128];
	int r = testdev_cdev_path(k, path, sizeof(path));

	return r < 0 ? r : testdev__open_rw(path);
}

/*
 * Make test device k write len bytes of value byte at iova ("DMA"), through its iommufd
 * access. While DMA logging is on, every logged page the write touches is marked dirty.
 * Errors are the kernel's: -ENODEV the cdev is not open, -ENOENT nothing mapped at (part
 * of) the range, -EINVAL len 0 or above 16 MiB, -EPERM a read-only mapping.
 */
static inline int testdev_dma_write(unsigned k, uint64_t iova, uint64_t len, uint8_t byte)
{
	char path[128], cmd[96];
	ssize_t n;
	int fd, l;

	snprintf(path, sizeof(path), TESTDEV_DEBUGFS "/testdev%u/dma", k);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	l = snprintf(cmd, sizeof(cmd), "0x%" PRIx64 " %" PRIu64 " 0x%02x\n", iova, len, byte);
	n = write(fd, cmd, l);
	if (n < 0)
		n = -errno;
	close(fd);
	if (n < 0)
		return (int)n;
	return n == l ? 0 : -EIO;
}

/*
 * The smallest page every test device logs from its next START on (the module's run-time
 * parameter min_page_size; 4096 is its default). Put it back when done: the guest's later
 * tests share the module.
 */
static inline int testdev_set_min_page_size(unsigned size)
{
	char v[32];
	ssize_t n;
	int fd, l;

	fd = open("/sys/module/iodirty_testdev/parameters/min_page_size", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	l = snprintf(v, sizeof(v), "%u\n", size);
	n = write(fd, v, (size_t)l);
	if (n < 0)
		n = -errno;
	close(fd);
	if (n < 0)
		return (int)n;
	return n == l ? 0 : -EIO;
}

/* What test device k reports in debugfs (testdevK/state). */
struct testdev_state {
	char vfio[32]; /* "vfioN" */
	bool open;
	bool logging;
	uint64_t page_size; /* 0 while not logging */
	unsigned max_ranges; /* the module's limit */
	unsigned nr_ranges;
	struct {
		uint64_t iova, length; /* as logged: aligned to page_size */
	} ranges[TESTDEV_MAX_RANGES];
	uint64_t dirty; /* bits set now, not yet reported */
	uint64_t dma_writes, dma_errors; /* knob writes that succeeded, failed */
	uint64_t unmaps; /* iommufd's unmap notifications */
};

static inline int testdev_read_state(unsigned k, struct testdev_state *ret)
{
	struct testdev_state s = {0};
	char path[128], line[256];
	unsigned v;
	FILE *f;

	snprintf(path, sizeof(path), TESTDEV_DEBUGFS "/testdev%u/state", k);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		uint64_t a, b;

		if (sscanf(line, "vfio %31s", s.vfio) == 1)
			continue;
		if (sscanf(line, "open %u", &v) == 1)
			s.open = v;
		else if (sscanf(line, "logging %u", &v) == 1)
			s.logging = v;
		else if (sscanf(line, "page_size %" SCNu64, &a) == 1)
			s.page_size = a;
		else if (sscanf(line, "max_ranges %u", &v) == 1)
			s.max_ranges = v;
		else if (sscanf(line, "range 0x%" SCNx64 " 0x%" SCNx64, &a, &b) == 2) {
			if (s.nr_ranges < TESTDEV_MAX_RANGES) {
				s.ranges[s.nr_ranges].iova = a;
				s.ranges[s.nr_ranges].length = b;
			}
			s.nr_ranges++;
		} else if (sscanf(line, "dirty %" SCNu64, &a) == 1)
			s.dirty = a;
		else if (sscanf(line, "dma_writes %" SCNu64, &a) == 1)
			s.dma_writes = a;
		else if (sscanf(line, "dma_errors %" SCNu64, &a) == 1)
			s.dma_errors = a;
		else if (sscanf(line, "unmaps %" SCNu64, &a) == 1)
			s.unmaps = a;
	}
	fclose(f);
	*ret = s;
	return 0;
}

/*
 * Create an mtty mdev (type mtty-1, one port) named uuid ("xxxxxxxx-xxxx-xxxx-xxxx-
 * xxxxxxxxxxxx"). -ENOENT: no mtty in this kernel; -EEXIST: the UUID is taken.
 */
static inline int mtty_create(const char *uuid)
{
	int fd = open(MTTY_TYPES "/mtty-1/create", O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, uuid, strlen(uuid));
	if (n < 0)
		n = -errno;
	close(fd);
	return n < 0 ? (int)n : 0;
}

/* Remove the mtty mdev uuid (every fd of it must be closed first, or this waits). */
static inline int mtty_remove(const char *uuid)
{
	char path[160];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/remove", uuid);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, "1", 1);
	if (n < 0)
		n = -errno;
	close(fd);
	return n < 0 ? (int)n : 0;
}

/* The VFIO cdev of the mdev uuid ("/dev/vfio/devices/vfioN") into path. */
static inline int mtty_cdev_path(const char *uuid, char *path, size_t size)
{
	char dir[160];

	snprintf(dir, sizeof(dir), "/sys/bus/mdev/devices/%s", uuid);
	return testdev__vfio_dev(dir, path, size);
}

/* Open the mdev's cdev read-write (CLOEXEC): the fd, or -errno. */
static inline int mtty_open(const char *uuid)
{
	char path[128];
	int r = mtty_cdev_path(uuid, path, sizeof(path));

	return r < 0 ? r : testdev__open_rw(path);
}

#endif
