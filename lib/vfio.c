/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VFIO device cdevs: finding them through sysfs, opening, binding to an iommufd,
 * attaching to an IOAS or HWPT, and probing what a device offers for migration.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/openat2.h>
#include <linux/vfio.h>

#include "iod-util.h"
#include "iod-vfio.h"

#define VFIO_CDEV_DIR "/dev/vfio/devices"
#define VFIO_DEV_CLASS "vfio-dev"

#define debug_fail(r, what, fmt, ...)                                                          \
	({                                                                                     \
		int _r = (r);                                                                  \
		iod_debug("vfio: %s(" fmt ") failed: %s", what, ##__VA_ARGS__, strerror(-_r)); \
		_r;                                                                            \
	})

static bool hex_run(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

static unsigned hex_value(const char *s, size_t n)
{
	unsigned v = 0;

	for (size_t i = 0; i < n; i++)
		v = v * 16 + (isdigit((unsigned char)s[i])
				      ? s[i] - '0'
				      : tolower((unsigned char)s[i]) - 'a' + 10);
	return v;
}

/*
 * "DDDD:BB:DD.F": a domain of four hex digits (Linux prints at least four; VMD domains
 * have more, up to eight), bus of two, device of two (at most 0x1f), a function digit 0-7.
 */
bool iod_pci_address_valid(const char *s)
{
	const char *colon;
	size_t dlen;

	if (!s)
		return false;
	colon = strchr(s, ':');
	if (!colon)
		return false;
	dlen = colon - s;
	if (dlen < 4 || dlen > 8 || !hex_run(s, dlen))
		return false;
	s = colon + 1;
	if (strlen(s) != 7)
		return false;
	if (!hex_run(s, 2) || s[2] != ':' || !hex_run(s + 3, 2) || s[5] != '.')
		return false;
	if (hex_value(s + 3, 2) > 0x1f)
		return false;
	return s[6] >= '0' && s[6] <= '7';
}

/* Accepts "vfio<decimal>" only. */
static bool is_vfio_name(const char *name)
{
	const char *p;

	if (strncmp(name, "vfio", 4) != 0)
		return false;
	p = name + 4;
	if (!*p)
		return false;
	for (; *p; p++)
		if (!isdigit((unsigned char)*p))
			return false;
	return true;
}

int iod_vfio_cdev_path(const char *sysfs_root, const char *pci_address, char **ret_path)
{
	_cleanup_free_ char *devdir = NULL, *vfiodir = NULL, *found = NULL;
	char addr[32], *path;
	struct dirent *de;
	struct stat st;
	DIR *d;
	int r = 0;

	if (!ret_path || !iod_pci_address_valid(pci_address))
		return -EINVAL;
	if (!sysfs_root)
		sysfs_root = "/sys";

	/* sysfs names are lower case. */
	for (size_t i = 0; i <= strlen(pci_address); i++)
		addr[i] = tolower((unsigned char)pci_address[i]);

	if (asprintf(&devdir, "%s/bus/pci/devices/%s", sysfs_root, addr) < 0) {
		devdir = NULL;
		return -ENOMEM;
	}
	if (stat(devdir, &st) < 0) {
		r = errno == ENOENT || errno == ENOTDIR ? -ENODEV : -errno;
		return debug_fail(r, "stat", "%s", devdir);
	}
	if (!S_ISDIR(st.st_mode))
		return debug_fail(-ENODEV, "stat", "%s: not a directory", devdir);

	if (asprintf(&vfiodir, "%s/vfio-dev", devdir) < 0) {
		vfiodir = NULL;
		return -ENOMEM;
	}
	d = opendir(vfiodir);
	if (!d) {
		r = errno == ENOENT || errno == ENOTDIR ? -ENXIO : -errno;
		return debug_fail(r, "opendir", "%s", vfiodir);
	}

	/* A VFIO device has exactly one cdev. */
	errno = 0;
	while ((de = readdir(d))) {
		if (!is_vfio_name(de->d_name))
			continue;
		if (found) {
			r = -EBADMSG;
			break;
		}
		found = strdup(de->d_name);
		if (!found) {
			r = -ENOMEM;
			break;
		}
	}
	if (r == 0 && errno != 0)
		r = -errno;
	closedir(d);
	if (r < 0)
		return debug_fail(r, "readdir", "%s", vfiodir);
	if (!found)
		return debug_fail(-ENXIO, "readdir", "%s: no vfio cdev", vfiodir);

	if (asprintf(&path, VFIO_CDEV_DIR "/%s", found) < 0)
		return -ENOMEM;
	*ret_path = path;
	return 0;
}

/* The character device major that /proc/devices lists for the vfio-dev class. */
static int vfio_dev_major(unsigned *ret)
{
	_cleanup_free_ char *line = NULL;
	bool chr = false;
	size_t n = 0;
	FILE *f;
	int r = -ENOENT;

	f = fopen("/proc/devices", "re");
	if (!f)
		return -errno;
	while (getline(&line, &n, f) > 0) {
		unsigned m;
		char name[64];

		if (strncmp(line, "Character devices:", 18) == 0) {
			chr = true;
			continue;
		}
		if (strncmp(line, "Block devices:", 14) == 0)
			chr = false;
		if (!chr || sscanf(line, "%u %63s", &m, name) != 2)
			continue;
		if (strcmp(name, VFIO_DEV_CLASS) == 0) {
			*ret = m;
			r = 0;
			break;
		}
	}
	fclose(f);
	return r;
}

int iod_vfio_check_fd(int fd)
{
	char path[64], link[PATH_MAX];
	const char *base;
	struct stat st;
	unsigned vfio_major = 0;
	ssize_t n;
	int r;

	if (fd < 0)
		return -EBADF;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISCHR(st.st_mode))
		return -ENOTTY;

	/* /sys/dev/char/MAJ:MIN/subsystem -> .../class/vfio-dev */
	snprintf(path, sizeof(path), "/sys/dev/char/%u:%u/subsystem", major(st.st_rdev),
		 minor(st.st_rdev));
	n = readlink(path, link, sizeof(link) - 1);
	if (n >= 0) {
		link[n] = '\0';
		base = strrchr(link, '/');
		base = base ? base + 1 : link;
		return strcmp(base, VFIO_DEV_CLASS) == 0 ? 0 : -ENOTTY;
	}
	if (errno != ENOENT)
		return debug_fail(-errno, "readlink", "%s", path);

	/* No sysfs entry: either not a registered device at all, or no /sys in this mount
	 * namespace. The major of the vfio-dev region tells. */
	r = vfio_dev_major(&vfio_major);
	if (r < 0)
		return -ENOTTY;
	return major(st.st_rdev) == vfio_major ? 0 : -ENOTTY;
}

int iod_vfio_fd_cdev_path(int fd, char **ret_path)
{
	char path[64], link[PATH_MAX];
	const char *base;
	struct stat st;
	unsigned n_digits = 0;
	ssize_t n;
	int r;

	if (!ret_path)
		return -EINVAL;
	r = iod_vfio_check_fd(fd);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return -errno;
	/* /sys/dev/char/MAJ:MIN -> ../../devices/.../vfio-dev/vfioN */
	snprintf(path, sizeof(path), "/sys/dev/char/%u:%u", major(st.st_rdev), minor(st.st_rdev));
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return debug_fail(-errno, "readlink", "%s", path);
	link[n] = '\0';
	base = strrchr(link, '/');
	base = base ? base + 1 : link;
	if (strncmp(base, "vfio", 4) != 0)
		return debug_fail(-EBADMSG, "cdev name", "%s -> %s", path, link);
	for (const char *c = base + 4; *c; c++, n_digits++)
		if (*c < '0' || *c > '9')
			return debug_fail(-EBADMSG, "cdev name", "%s -> %s", path, link);
	if (n_digits == 0 || n_digits > 10)
		return debug_fail(-EBADMSG, "cdev name", "%s -> %s", path, link);
	if (asprintf(ret_path, "/dev/vfio/devices/%s", base) < 0)
		return -ENOMEM;
	return 0;
}

/* open() that follows no symbolic link on the way, where the kernel can (openat2). */
static int open_no_links(const char *path, int flags)
{
#ifdef SYS_openat2
	struct open_how how = {
		.flags = (uint64_t)flags,
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));

	if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
		return fd;
#endif
	/* Before Linux 5.6: at least the last component is not a link. */
	return open(path, flags | O_NOFOLLOW);
}

int iod_vfio_open(const char *path, int *ret_fd)
{
	_cleanup_close_ int where = -EBADF, fd = -EBADF;
	struct stat a, b;
	char proc[64];
	int r, flags;

	if (!path || !ret_fd)
		return -EINVAL;

	/*
	 * Look before opening: an O_PATH handle opens nothing (no device open, no FIFO that
	 * blocks, no file read), and what it names is checked to be a VFIO device cdev. Then
	 * that very inode is opened through the handle.
	 */
	where = open_no_links(path, O_PATH | O_CLOEXEC);
	if (where < 0)
		return debug_fail(-errno, "open", "%s (O_PATH)", path);
	r = iod_vfio_check_fd(where);
	if (r < 0)
		return debug_fail(r, "check", "%s", path);
	if (fstat(where, &a) < 0)
		return -errno;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", where);
	fd = open(proc, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return debug_fail(-errno, "open", "%s", path);
	if (fstat(fd, &b) < 0)
		return -errno;
	if (a.st_rdev != b.st_rdev || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
		return debug_fail(-ENOTTY, "open", "%s: changed while being opened", path);
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		return -errno;

	*ret_fd = TAKE_FD(fd);
	return 0;
}

int iod_vfio_bind(int device_fd, int iommufd, uint32_t *ret_dev_id)
{
	struct vfio_device_bind_iommufd bind = {
		.argsz = sizeof(bind),
		.iommufd = iommufd,
	};

	if (!ret_dev_id)
		return -EINVAL;
	if (device_fd < 0 || iommufd < 0)
		return -EBADF;

	if (ioctl(device_fd, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
		return debug_fail(-errno, "VFIO_DEVICE_BIND_IOMMUFD", "fd %d, iommufd %d",
				  device_fd, iommufd);

	*ret_dev_id = bind.out_devid;
	return 0;
}

int iod_vfio_attach(int device_fd, uint32_t pt_id, uint32_t *ret_pt_id)
{
	struct vfio_device_attach_iommufd_pt attach = {
		.argsz = sizeof(attach),
		.pt_id = pt_id,
	};

	if (device_fd < 0)
		return -EBADF;

	if (ioctl(device_fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) < 0)
		return debug_fail(-errno, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "fd %d, pt %u",
				  device_fd, pt_id);

	if (ret_pt_id)
		*ret_pt_id = attach.pt_id;
	return 0;
}

int iod_vfio_detach(int device_fd)
{
	struct vfio_device_detach_iommufd_pt detach = {
		.argsz = sizeof(detach),
	};

	if (device_fd < 0)
		return -EBADF;

	if (ioctl(device_fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach) < 0)
		return debug_fail(-errno, "VFIO_DEVICE_DETACH_IOMMUFD_PT", "fd %d", device_fd);
	return 0;
}

int iod_vfio_probe_features(int device_fd, struct iod_vfio_features *ret)
{
	/* struct vfio_device_feature ends in a flexible array: header and payload share one
	 * suitably aligned buffer. */
	uint64_t buf[(sizeof(struct vfio_device_feature) +
		      sizeof(struct vfio_device_feature_migration) + 7) /
		     8];
	struct vfio_device_feature *feature = (struct vfio_device_feature *)buf;
	struct vfio_device_feature_migration *mig = (void *)feature->data;
	struct iod_vfio_features f = {};

	if (!ret)
		return -EINVAL;
	if (device_fd < 0)
		return -EBADF;

	/* Device DMA logging: probing for SET support needs no payload. */
	memset(buf, 0, sizeof(buf));
	feature->argsz = sizeof(*feature);
	feature->flags = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET |
			 VFIO_DEVICE_FEATURE_DMA_LOGGING_START;
	if (ioctl(device_fd, VFIO_DEVICE_FEATURE, feature) == 0)
		f.dma_logging = true;
	else if (errno != ENOTTY)
		return debug_fail(-errno, "VFIO_DEVICE_FEATURE", "fd %d, probe DMA_LOGGING_START",
				  device_fd);

	memset(buf, 0, sizeof(buf));
	feature->argsz = sizeof(*feature) + sizeof(*mig);
	feature->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION;
	if (ioctl(device_fd, VFIO_DEVICE_FEATURE, feature) == 0) {
		f.migration = true;
		f.migration_flags = mig->flags;
	} else if (errno != ENOTTY)
		return debug_fail(-errno, "VFIO_DEVICE_FEATURE", "fd %d, get MIGRATION", device_fd);

	*ret = f;
	return 0;
}

int iod_vfio_set_req_eventfd(int device_fd, int eventfd)
{
	struct vfio_irq_info info = {.argsz = sizeof(info), .index = VFIO_PCI_REQ_IRQ_INDEX};
	union {
		struct vfio_irq_set set;
		uint8_t buf[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
	} u = {};
	int32_t efd = eventfd;

	if (ioctl(device_fd, VFIO_DEVICE_GET_IRQ_INFO, &info) < 0)
		return errno == EINVAL ? -EOPNOTSUPP : -errno;
	if (info.count < 1 || !(info.flags & VFIO_IRQ_INFO_EVENTFD))
		return -EOPNOTSUPP;

	u.set.argsz = sizeof(u.buf);
	u.set.index = VFIO_PCI_REQ_IRQ_INDEX;
	u.set.start = 0;
	if (eventfd >= 0) {
		u.set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
		u.set.count = 1;
		memcpy(u.set.data, &efd, sizeof(efd));
	} else {
		u.set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
		u.set.count = 0;
		u.set.argsz = sizeof(u.set);
	}
	if (ioctl(device_fd, VFIO_DEVICE_SET_IRQS, &u.set) < 0)
		return -errno;
	return 0;
}

/* --- device DMA logging ----------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

size_t iod_vfio_log_merge_ranges(struct iod_range *ranges, size_t n, size_t max)
{
	uint64_t *gaps, threshold, prev_end;
	size_t out, over, at_threshold;

	if (max == 0)
		max = 1;
	if (n <= max)
		return n;

	/* The (n - max) smallest gaps go: every gap below the threshold, and as many equal to
	 * it as are still needed, first come first joined. */
	over = n - max;
	gaps = malloc((n - 1) * sizeof(*gaps));
	if (gaps) {
		for (size_t i = 1; i < n; i++)
			gaps[i - 1] = ranges[i].start -
				      (ranges[i - 1].start + ranges[i - 1].length);
		qsort(gaps, n - 1, sizeof(*gaps), cmp_u64);
		threshold = gaps[over - 1];
		at_threshold = 0;
		for (size_t i = 0; i < over; i++)
			if (gaps[i] == threshold)
				at_threshold++;
		free(gaps);
	} else {
		/* No memory for the gaps: one range over all of them still covers them. */
		threshold = UINT64_MAX;
		at_threshold = over;
	}

	out = 0;
	prev_end = ranges[0].start + ranges[0].length;
	for (size_t i = 1; i < n; i++) {
		/* The gap to the input range before, read before anything is written over it:
		 * a write goes to slot out + 1 <= i, an extension to slot out <= i - 1. */
		uint64_t gap = ranges[i].start - prev_end;
		bool join = gap < threshold || (gap == threshold && at_threshold > 0);

		prev_end = ranges[i].start + ranges[i].length;
		if (join && gap == threshold)
			at_threshold--;
		if (join)
			ranges[out].length = prev_end - ranges[out].start;
		else
			ranges[++out] = ranges[i];
	}
	return out + 1;
}

int iod_vfio_log_start(int device_fd, const struct iod_range *ranges, size_t n, uint64_t *page_size)
{
	struct vfio_device_feature_dma_logging_range *r;
	struct vfio_device_feature_dma_logging_control *ctl;
	uint64_t buf[(sizeof(struct vfio_device_feature) + sizeof(*ctl) + 7) / 8] = {};
	struct vfio_device_feature *feature = (struct vfio_device_feature *)buf;
	int ret = 0;

	if (device_fd < 0)
		return -EBADF;
	if (!ranges || !page_size || n == 0 || n > IOD_VFIO_LOG_MAX_RANGES || *page_size < 4096 ||
	    (*page_size & (*page_size - 1)))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (ranges[i].length == 0 ||
		    (ranges[i].start | ranges[i].length) & (*page_size - 1) ||
		    ranges[i].start + ranges[i].length < ranges[i].start)
			return -EINVAL;
		if (i > 0 && ranges[i].start < ranges[i - 1].start + ranges[i - 1].length)
			return -EINVAL;
	}

	r = calloc(n, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		r[i] = (struct vfio_device_feature_dma_logging_range){
			.iova = ranges[i].start,
			.length = ranges[i].length,
		};
	ctl = (void *)feature->data;
	feature->argsz = sizeof(*feature) + sizeof(*ctl);
	feature->flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START;
	ctl->page_size = *page_size;
	ctl->num_ranges = (uint32_t)n;
	ctl->ranges = (uintptr_t)r;
	if (ioctl(device_fd, VFIO_DEVICE_FEATURE, feature) < 0)
		ret = debug_fail(-errno, "VFIO_DEVICE_FEATURE",
				 "fd %d, DMA_LOGGING_START, %zu ranges", device_fd, n);
	else
		*page_size = ctl->page_size;
	free(r);
	return ret;
}

int iod_vfio_log_stop(int device_fd)
{
	struct vfio_device_feature feature = {
		.argsz = sizeof(feature),
		.flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
	};

	if (device_fd < 0)
		return -EBADF;
	if (ioctl(device_fd, VFIO_DEVICE_FEATURE, &feature) < 0)
		return debug_fail(-errno, "VFIO_DEVICE_FEATURE", "fd %d, DMA_LOGGING_STOP",
				  device_fd);
	return 0;
}

int iod_vfio_log_report(int device_fd, uint64_t iova, uint64_t length, uint64_t page_size,
			uint64_t *bitmap)
{
	struct vfio_device_feature_dma_logging_report *rep;
	uint64_t buf[(sizeof(struct vfio_device_feature) + sizeof(*rep) + 7) / 8] = {};
	struct vfio_device_feature *feature = (struct vfio_device_feature *)buf;

	if (device_fd < 0)
		return -EBADF;
	if (!bitmap || length == 0 || page_size < 4096 || (page_size & (page_size - 1)) ||
	    (iova | length) & (page_size - 1) || iova + length < iova)
		return -EINVAL;
	rep = (void *)feature->data;
	feature->argsz = sizeof(*feature) + sizeof(*rep);
	feature->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT;
	rep->iova = iova;
	rep->length = length;
	rep->page_size = page_size;
	rep->bitmap = (uintptr_t)bitmap;
	if (ioctl(device_fd, VFIO_DEVICE_FEATURE, feature) < 0)
		return debug_fail(-errno, "VFIO_DEVICE_FEATURE",
				  "fd %d, DMA_LOGGING_REPORT [0x%llx, +0x%llx)", device_fd,
				  (unsigned long long)iova, (unsigned long long)length);
	return 0;
}
