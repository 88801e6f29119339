// SPDX-License-Identifier: GPL-2.0
/*
 * iodirty-testdev: a test device for iodirty's guest test tier, and nothing else.
 *
 * It is not a driver for any hardware and must never be loaded outside the test guest of
 * tests/vm/ (tests/vm/run loads it there). It registers VFIO devices behind an emulated
 * IOMMU (the iommufd "access" path, as mediated devices use), whose only ability is device
 * DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_START/STOP/REPORT) over a software bitmap,
 * plus a debugfs knob that makes the device write into guest memory through its iommufd
 * access, as a DMA engine would, marking the dirty bitmap when logging covers the write.
 *
 * Module parameters:
 *   devices=N      number of devices, 1..8 (default 1): testdev0 .. testdevN-1
 *   max_ranges=N   the device's limit of logged ranges, 1..256 (default 8). A START with
 *                  more ranges fails with E2BIG, as a real device with a small tracker
 *                  would; vfio core itself allows 256 (PAGE_SIZE / 16).
 *   min_page_size=N the smallest page the device logs (default 4096; writable at run time
 *                  in /sys/module/iodirty_testdev/parameters/): a START asking for less
 *                  gets this, rounded up to a power of two, as a device with a coarse
 *                  tracker would answer.
 *
 * Each test device K is a platform device /sys/bus/platform/devices/iodirty-testdev.K
 * (bound to this module's driver) whose VFIO cdev is /dev/vfio/devices/vfioN (N from
 * .../iodirty-testdev.K/vfio-dev/vfioN), and /sys/kernel/debug/iodirty-testdev/testdevK/
 * holds
 *   dma    write "IOVA LENGTH [BYTE]" (numbers in C notation; BYTE defaults to 0xa5): the
 *          device writes LENGTH bytes of BYTE at IOVA with vfio_dma_rw(). The write(2)
 *          returns the kernel's error if the DMA fails (device not open: ENODEV; IOVA not
 *          mapped: ENOENT; LENGTH 0 or above 16 MiB: EINVAL). While logging is on, every
 *          logged page the write touches is marked dirty, even when the DMA fails part way
 *          (a device that may have written a page reports it; it never hides one).
 *   state  read: "key value" lines: vfio, open, logging, page_size, max_ranges, ranges,
 *          one "range IOVA LENGTH" per logged range, dirty (bits set now), dma_writes,
 *          dma_errors, unmaps (unmap notifications from iommufd).
 *
 * Logging: log_start takes the ranges vfio core has checked (aligned, not overlapping, at
 * most 256) and a page size, which it rounds up to a power of two of at least 4096 and
 * reports back. Starting twice is EINVAL, REPORT without logging is EINVAL (as mlx5 does),
 * STOP without logging is 0. Closing the device stops logging.
 */
#include <linux/debugfs.h>
#include <linux/device.h>
#include <linux/interval_tree.h>
#include <linux/iova_bitmap.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>

#define TESTDEV_NAME "iodirty-testdev"
#define TESTDEV_MAX_DEVICES 8
#define TESTDEV_MAX_DMA (16UL << 20)
/* At most 2^27 tracked pages per device (a 16 MiB bitmap): 512 GiB at 4 KiB. */
#define TESTDEV_MAX_BITS (1UL << 27)

static unsigned int devices = 1;
module_param(devices, uint, 0444);
MODULE_PARM_DESC(devices, "number of test devices (1..8, default 1)");

static unsigned int max_ranges = 8;
module_param(max_ranges, uint, 0444);
MODULE_PARM_DESC(max_ranges, "logged ranges a device accepts (1..256, default 8); more is E2BIG");

static unsigned int min_page_size = SZ_4K;
module_param(min_page_size, uint, 0644);
MODULE_PARM_DESC(min_page_size, "smallest page a device logs (default 4096; run-time writable)");

struct testdev_range {
	u64 iova; /* aligned down to the logging page size */
	u64 length; /* a multiple of the logging page size */
	unsigned long *bits; /* one bit per page of the range */
};

struct testdev {
	struct vfio_device vdev;
	struct dentry *dir;
	unsigned int id;

	struct mutex lock; /* everything below */
	bool open;
	bool logging;
	u64 page_size;
	u32 nr_ranges;
	struct testdev_range *ranges;
	u64 dma_writes;
	u64 dma_errors;
	atomic64_t unmaps;
};

static struct platform_device *pdevs[TESTDEV_MAX_DEVICES];
static struct dentry *testdev_debugfs;

static struct testdev *to_testdev(struct vfio_device *vdev)
{
	return container_of(vdev, struct testdev, vdev);
}

static void testdev_free_ranges(struct testdev *td)
{
	u32 i;

	for (i = 0; i < td->nr_ranges; i++)
		kvfree(td->ranges[i].bits);
	kfree(td->ranges);
	td->ranges = NULL;
	td->nr_ranges = 0;
	td->logging = false;
	td->page_size = 0;
}

/* Marks every logged page that [iova, iova + length) touches. Called with td->lock. */
static void testdev_mark(struct testdev *td, u64 iova, u64 length)
{
	u64 last = iova + length - 1;
	u32 i;

	for (i = 0; i < td->nr_ranges; i++) {
		struct testdev_range *r = &td->ranges[i];
		u64 r_last = r->iova + r->length - 1;
		u64 first_page, last_page;

		if (last < r->iova || iova > r_last)
			continue;
		first_page = (max(iova, r->iova) - r->iova) / td->page_size;
		last_page = (min(last, r_last) - r->iova) / td->page_size;
		bitmap_set(r->bits, first_page, last_page - first_page + 1);
	}
}

static int testdev_log_start(struct vfio_device *vdev, struct rb_root_cached *ranges, u32 nnodes,
			     u64 *page_size)
{
	struct testdev *td = to_testdev(vdev);
	struct interval_tree_node *node;
	struct testdev_range *r;
	unsigned long total = 0;
	u64 ps = *page_size;
	u32 i = 0;
	int ret;

	if (nnodes > max_ranges)
		return -E2BIG;
	if (ps < SZ_4K)
		ps = SZ_4K;
	if (ps < READ_ONCE(min_page_size))
		ps = READ_ONCE(min_page_size);
	if (ps > SZ_1G)
		return -EINVAL;
	ps = roundup_pow_of_two(ps);

	mutex_lock(&td->lock);
	if (td->logging) {
		ret = -EINVAL;
		goto out;
	}
	td->ranges = kcalloc(nnodes, sizeof(*td->ranges), GFP_KERNEL);
	if (!td->ranges) {
		ret = -ENOMEM;
		goto out;
	}
	td->page_size = ps;
	for (node = interval_tree_iter_first(ranges, 0, ULONG_MAX); node && i < nnodes;
	     node = interval_tree_iter_next(node, 0, ULONG_MAX)) {
		u64 first = ALIGN_DOWN((u64)node->start, ps);
		u64 end = ALIGN((u64)node->last + 1, ps);
		unsigned long npages;

		if (end <= first) { /* the last page of the address space */
			ret = -EOVERFLOW;
			goto fail;
		}
		npages = (end - first) / ps;
		total += npages;
		if (total > TESTDEV_MAX_BITS) {
			ret = -E2BIG;
			goto fail;
		}
		r = &td->ranges[i++];
		r->iova = first;
		r->length = end - first;
		r->bits = kvcalloc(BITS_TO_LONGS(npages), sizeof(unsigned long), GFP_KERNEL);
		td->nr_ranges = i;
		if (!r->bits) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	td->logging = true;
	*page_size = ps;
	ret = 0;
	goto out;
fail:
	testdev_free_ranges(td);
out:
	mutex_unlock(&td->lock);
	return ret;
}

static int testdev_log_stop(struct vfio_device *vdev)
{
	struct testdev *td = to_testdev(vdev);

	mutex_lock(&td->lock);
	testdev_free_ranges(td);
	mutex_unlock(&td->lock);
	return 0;
}

static int testdev_log_read_and_clear(struct vfio_device *vdev, unsigned long iova,
				      unsigned long length, struct iova_bitmap *dirty)
{
	struct testdev *td = to_testdev(vdev);
	u64 last = (u64)iova + length - 1;
	u32 i;

	mutex_lock(&td->lock);
	if (!td->logging) {
		mutex_unlock(&td->lock);
		return -EINVAL;
	}
	for (i = 0; i < td->nr_ranges; i++) {
		struct testdev_range *r = &td->ranges[i];
		u64 r_last = r->iova + r->length - 1;
		unsigned long bit, end_bit;

		if (last < r->iova || iova > r_last)
			continue;
		bit = (max((u64)iova, r->iova) - r->iova) / td->page_size;
		end_bit = (min(last, r_last) - r->iova) / td->page_size + 1;
		for (bit = find_next_bit(r->bits, end_bit, bit); bit < end_bit;
		     bit = find_next_bit(r->bits, end_bit, bit + 1)) {
			u64 page = r->iova + (u64)bit * td->page_size;
			u64 page_last = page + td->page_size - 1;
			u64 from = max(page, (u64)iova);
			u64 to = min(page_last, last);

			/* Report the part inside the window; clear only a page wholly inside. */
			iova_bitmap_set(dirty, from, to - from + 1);
			if (from == page && to == page_last)
				__clear_bit(bit, r->bits);
		}
	}
	mutex_unlock(&td->lock);
	return 0;
}

static const struct vfio_log_ops testdev_log_ops = {
	.log_start = testdev_log_start,
	.log_stop = testdev_log_stop,
	.log_read_and_clear = testdev_log_read_and_clear,
};

static int testdev_open_device(struct vfio_device *vdev)
{
	struct testdev *td = to_testdev(vdev);

	mutex_lock(&td->lock);
	td->open = true;
	mutex_unlock(&td->lock);
	return 0;
}

static void testdev_close_device(struct vfio_device *vdev)
{
	struct testdev *td = to_testdev(vdev);

	mutex_lock(&td->lock);
	testdev_free_ranges(td);
	td->open = false;
	mutex_unlock(&td->lock);
}

/*
 * iommufd unmaps an IOVA range. The device keeps no pinned pages nor cached translations
 * (each DMA goes through vfio_dma_rw(), which resolves the IOVA anew), so it has nothing
 * of the range left to drop: it only counts the notification. Takes no lock the DMA path
 * holds across vfio_dma_rw().
 */
static void testdev_dma_unmap(struct vfio_device *vdev, u64 iova, u64 length)
{
	atomic64_inc(&to_testdev(vdev)->unmaps);
}

static void testdev_release(struct vfio_device *vdev)
{
	struct testdev *td = to_testdev(vdev);

	testdev_free_ranges(td);
	mutex_destroy(&td->lock);
}

static const struct vfio_device_ops testdev_ops = {
	.name = TESTDEV_NAME,
	.release = testdev_release,
	.bind_iommufd = vfio_iommufd_emulated_bind,
	.unbind_iommufd = vfio_iommufd_emulated_unbind,
	.attach_ioas = vfio_iommufd_emulated_attach_ioas,
	.detach_ioas = vfio_iommufd_emulated_detach_ioas,
	.open_device = testdev_open_device,
	.close_device = testdev_close_device,
	.dma_unmap = testdev_dma_unmap,
};

/* "IOVA LENGTH [BYTE]" */
static int testdev_parse_dma(char *s, u64 *iova, u64 *length, u8 *byte)
{
	char *tok[3] = {};
	int n = 0;
	char *t;

	while ((t = strsep(&s, " \t\n")) != NULL) {
		if (!*t)
			continue;
		if (n == 3)
			return -EINVAL;
		tok[n++] = t;
	}
	if (n < 2)
		return -EINVAL;
	if (kstrtou64(tok[0], 0, iova) || kstrtou64(tok[1], 0, length))
		return -EINVAL;
	*byte = 0xa5;
	if (n == 3 && kstrtou8(tok[2], 0, byte))
		return -EINVAL;
	return 0;
}

static ssize_t testdev_dma_write(struct file *file, const char __user *ubuf, size_t count,
				 loff_t *ppos)
{
	struct testdev *td = file->private_data;
	char kbuf[96];
	u64 iova, length;
	void *data;
	u8 byte;
	int ret;

	if (count >= sizeof(kbuf))
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, count))
		return -EFAULT;
	kbuf[count] = '\0';
	ret = testdev_parse_dma(kbuf, &iova, &length, &byte);
	if (ret)
		return ret;
	if (!length || length > TESTDEV_MAX_DMA || iova + length - 1 < iova)
		return -EINVAL;

	data = kvmalloc(length, GFP_KERNEL);
	if (!data)
		return -ENOMEM;
	memset(data, byte, length);

	mutex_lock(&td->lock);
	if (!td->open) {
		ret = -ENODEV;
	} else {
		ret = vfio_dma_rw(&td->vdev, iova, data, length, true);
		if (td->logging)
			testdev_mark(td, iova, length);
		if (ret)
			td->dma_errors++;
		else
			td->dma_writes++;
	}
	mutex_unlock(&td->lock);
	kvfree(data);
	return ret ? ret : count;
}

static const struct file_operations testdev_dma_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = testdev_dma_write,
	.llseek = noop_llseek,
};

static int testdev_state_show(struct seq_file *m, void *unused)
{
	struct testdev *td = m->private;
	unsigned long dirty = 0;
	u32 i;

	mutex_lock(&td->lock);
	seq_printf(m, "vfio %s\n", dev_name(&td->vdev.device));
	seq_printf(m, "open %d\n", td->open);
	seq_printf(m, "logging %d\n", td->logging);
	seq_printf(m, "page_size %llu\n", td->page_size);
	seq_printf(m, "max_ranges %u\n", max_ranges);
	seq_printf(m, "ranges %u\n", td->nr_ranges);
	for (i = 0; i < td->nr_ranges; i++) {
		struct testdev_range *r = &td->ranges[i];

		seq_printf(m, "range 0x%llx 0x%llx\n", r->iova, r->length);
		dirty += bitmap_weight(r->bits, r->length / td->page_size);
	}
	seq_printf(m, "dirty %lu\n", dirty);
	seq_printf(m, "dma_writes %llu\n", td->dma_writes);
	seq_printf(m, "dma_errors %llu\n", td->dma_errors);
	seq_printf(m, "unmaps %lld\n", (long long)atomic64_read(&td->unmaps));
	mutex_unlock(&td->lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(testdev_state);

/*
 * VFIO wants the parent device bound to a driver (it pins the driver's module while the
 * device is open): each test device is a platform device iodirty-testdev.K, probed by this
 * module's platform driver, and the VFIO device is its child.
 */
static int testdev_probe(struct platform_device *pdev)
{
	struct testdev *td;
	char name[32];
	int ret;

	td = vfio_alloc_device(testdev, vdev, &pdev->dev, &testdev_ops);
	if (IS_ERR(td))
		return PTR_ERR(td);
	td->id = pdev->id;
	mutex_init(&td->lock);
	atomic64_set(&td->unmaps, 0);
	td->vdev.log_ops = &testdev_log_ops;

	ret = vfio_register_emulated_iommu_dev(&td->vdev);
	if (ret) {
		vfio_put_device(&td->vdev);
		return ret;
	}
	snprintf(name, sizeof(name), "testdev%u", td->id);
	td->dir = debugfs_create_dir(name, testdev_debugfs);
	debugfs_create_file("dma", 0200, td->dir, td, &testdev_dma_fops);
	debugfs_create_file("state", 0444, td->dir, td, &testdev_state_fops);
	platform_set_drvdata(pdev, td);
	return 0;
}

static void testdev_remove(struct platform_device *pdev)
{
	struct testdev *td = platform_get_drvdata(pdev);

	debugfs_remove_recursive(td->dir);
	vfio_unregister_group_dev(&td->vdev);
	vfio_put_device(&td->vdev);
}

static struct platform_driver testdev_driver = {
	.probe = testdev_probe,
	.remove = testdev_remove,
	.driver =
		{
			.name = TESTDEV_NAME,
		},
	.driver_managed_dma = true,
};

static void testdev_exit(void)
{
	unsigned int i;

	for (i = 0; i < TESTDEV_MAX_DEVICES; i++) {
		if (pdevs[i])
			platform_device_unregister(pdevs[i]);
		pdevs[i] = NULL;
	}
	platform_driver_unregister(&testdev_driver);
	debugfs_remove_recursive(testdev_debugfs);
}

static int __init testdev_init(void)
{
	unsigned int i;
	int ret;

	if (!devices || devices > TESTDEV_MAX_DEVICES || !max_ranges ||
	    max_ranges > PAGE_SIZE / sizeof(struct vfio_device_feature_dma_logging_range))
		return -EINVAL;

	testdev_debugfs = debugfs_create_dir(TESTDEV_NAME, NULL);
	ret = platform_driver_register(&testdev_driver);
	if (ret) {
		debugfs_remove_recursive(testdev_debugfs);
		return ret;
	}
	for (i = 0; i < devices; i++) {
		struct platform_device *pdev = platform_device_register_simple(TESTDEV_NAME, i,
									       NULL, 0);

		if (IS_ERR(pdev)) {
			ret = PTR_ERR(pdev);
			goto fail;
		}
		pdevs[i] = pdev;
		if (!platform_get_drvdata(pdev)) { /* the probe failed */
			ret = -ENODEV;
			goto fail;
		}
	}
	pr_info(TESTDEV_NAME ": %u test device(s), at most %u logged ranges each\n", devices,
		max_ranges);
	return 0;
fail:
	pr_err(TESTDEV_NAME ": creating test device %u failed: %d\n", i, ret);
	testdev_exit();
	return ret;
}

static void __exit testdev_module_exit(void)
{
	testdev_exit();
}

module_init(testdev_init);
module_exit(testdev_module_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("iodirty guest-tier test device: VFIO DMA logging over a software bitmap");
MODULE_IMPORT_NS(IOMMUFD);
