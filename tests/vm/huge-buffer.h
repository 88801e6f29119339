/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Memory the iommufd mock can map with huge IOPTEs, for the guest tests: physically
 * contiguous and aligned to the IOPTE, from hugetlbfs or a transparent huge page.
 */
#ifndef IOD_TESTS_VM_HUGE_BUFFER_H
#define IOD_TESTS_VM_HUGE_BUFFER_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* Whether [p, p + len) is backed by physically contiguous memory aligned to align: 1 yes,
 * 0 no, < 0 the PFNs cannot be read. */
static inline int vm_phys_contiguous(const void *p, uint64_t len, uint64_t align)
{
	const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t first = 0;
	int fd, r = 1;

	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (uint64_t off = 0; off < len && r == 1; off += page) {
		uint64_t ent, pfn;

		if (pread(fd, &ent, sizeof(ent), ((uintptr_t)p + off) / page * sizeof(ent)) !=
		    sizeof(ent)) {
			r = -EIO;
			break;
		}
		if (!(ent & (UINT64_C(1) << 63))) {
			r = 0;
			break;
		}
		pfn = ent & ((UINT64_C(1) << 55) - 1);
		if (pfn == 0) { /* PFNs hidden: no CAP_SYS_ADMIN */
			r = -EPERM;
			break;
		}
		if (off == 0) {
			if (pfn * page % align)
				r = 0;
			first = pfn;
		} else if (pfn != first + off / page) {
			r = 0;
		}
	}
	close(fd);
	return r;
}

/*
 * size bytes (a power of two, at least align) that are physically contiguous and aligned
 * to align: hugetlbfs pages (reserving a few when the pool is empty; the tests run as root)
 * or a transparent huge page. NULL, with *ret_why, if the guest kernel has neither.
 */
static inline void *vm_huge_buffer(uint64_t size, uint64_t align, const char **ret_why)
{
	const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint8_t *p, *aligned;
	int r;

	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED && errno == ENOMEM) {
		FILE *f = fopen("/proc/sys/vm/nr_hugepages", "we");

		if (f) {
			fprintf(f, "%u\n", 4);
			fclose(f);
			p = mmap(NULL, size, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
		}
	}
	if (p != MAP_FAILED) {
		r = vm_phys_contiguous(p, size, align);
		if (r != 0) { /* hugetlb pages are contiguous; the check only confirms it */
			printf("huge buffer: hugetlbfs\n");
			return p;
		}
		munmap(p, size);
	}

	/* a transparent huge page: size aligned, advised, touched */
	p = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		*ret_why = "cannot map memory for a huge buffer";
		return NULL;
	}
	aligned = (uint8_t *)(((uintptr_t)p + size - 1) & ~(uintptr_t)(size - 1));
	if (aligned > p)
		munmap(p, (size_t)(aligned - p));
	munmap(aligned + size, (size_t)(p + size - aligned));
	if (madvise(aligned, size, MADV_HUGEPAGE) < 0) {
		*ret_why = "no hugetlbfs pages and no transparent huge pages "
			   "(CONFIG_HUGETLBFS / CONFIG_TRANSPARENT_HUGEPAGE)";
		munmap(aligned, size);
		return NULL;
	}
	for (uint64_t off = 0; off < size; off += page)
		aligned[off] = 1;
	r = vm_phys_contiguous(aligned, size, align);
	if (r == 1) {
		printf("huge buffer: transparent huge page\n");
		return aligned;
	}
	*ret_why = r < 0 ? "cannot read PFNs from /proc/self/pagemap to prove a huge page"
			 : "no physically contiguous huge page was given";
	munmap(aligned, size);
	return NULL;
}

#endif
