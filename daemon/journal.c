/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "journal.h"

struct iod_journal {
	int fd;
	size_t size;
	struct iod_journal_header *hdr;
	uint64_t *bits;
};

static size_t journal_size(uint64_t capacity_bits)
{
	return IOD_JOURNAL_BITS_OFFSET + iod_bitmap_bytes(capacity_bits);
}

static int journal_map(struct iod_journal *j)
{
	void *p = mmap(NULL, j->size, PROT_READ | PROT_WRITE, MAP_SHARED, j->fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	j->hdr = p;
	j->bits = (uint64_t *)((uint8_t *)p + IOD_JOURNAL_BITS_OFFSET);
	return 0;
}

int iod_journal_new(uint64_t capacity_bits, struct iod_journal **ret)
{
	_cleanup_(iod_journal_freep) struct iod_journal *j = NULL;
	int r;

	if (capacity_bits == 0 || capacity_bits > (UINT64_C(1) << 32))
		return -EINVAL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->size = journal_size(capacity_bits);
	j->fd = memfd_create("iodirty-journal", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (j->fd < 0)
		return -errno;
	if (ftruncate(j->fd, (off_t)j->size) < 0)
		return -errno;
	/* Its size is part of the format: an earlier instance's journal never changes size. */
	(void)fcntl(j->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	r = journal_map(j);
	if (r < 0)
		return r;
	j->hdr->capacity_bits = capacity_bits;
	j->hdr->magic = IOD_JOURNAL_MAGIC;
	*ret = TAKE_PTR(j);
	return 0;
}

int iod_journal_open_fd(int fd, struct iod_journal **ret)
{
	_cleanup_(iod_journal_freep) struct iod_journal *j = NULL;
	struct iod_journal_header h;
	struct stat st;
	int r;

	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (j->fd < 0)
		return -errno;
	if (fstat(j->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < IOD_JOURNAL_BITS_OFFSET)
		return -EBADMSG;
	if (pread(j->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return -EBADMSG;
	if (h.magic != IOD_JOURNAL_MAGIC || h.capacity_bits == 0 ||
	    h.capacity_bits > (UINT64_C(1) << 32) ||
	    journal_size(h.capacity_bits) != (uint64_t)st.st_size ||
	    (h.pending &&
	     (h.nbits == 0 || h.nbits > h.capacity_bits || h.shift < 12 || h.shift > 30)))
		return -EBADMSG;
	j->size = (size_t)st.st_size;
	r = journal_map(j);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(j);
	return 0;
}

struct iod_journal *iod_journal_free(struct iod_journal *j)
{
	if (!j)
		return NULL;
	if (j->hdr)
		munmap(j->hdr, j->size);
	iod_close(j->fd);
	free(j);
	return NULL;
}

int iod_journal_fd(const struct iod_journal *j)
{
	return j->fd;
}

uint64_t iod_journal_capacity(const struct iod_journal *j)
{
	return j->hdr->capacity_bits;
}

uint64_t *iod_journal_begin(struct iod_journal *j, uint64_t gpa, uint64_t nbits, unsigned shift)
{
	/* Nothing pending while the header changes; the buffer is zero before it is pending. A
	 * process that dies between two of these stores leaves a journal that is either not
	 * pending or pending with a buffer of zeros and whatever the kernel wrote. */
	__atomic_store_n(&j->hdr->pending, 0, __ATOMIC_SEQ_CST);
	j->hdr->gpa = gpa;
	j->hdr->nbits = nbits;
	j->hdr->shift = shift;
	memset(j->bits, 0, iod_bitmap_bytes(nbits));
	__atomic_store_n(&j->hdr->pending, 1, __ATOMIC_SEQ_CST);
	return j->bits;
}

void iod_journal_end(struct iod_journal *j)
{
	__atomic_store_n(&j->hdr->pending, 0, __ATOMIC_SEQ_CST);
}

int iod_journal_replay(struct iod_journal *j, struct iod_dirty_log *log)
{
	int r;

	if (!__atomic_load_n(&j->hdr->pending, __ATOMIC_SEQ_CST))
		return 0;
	if (!iod_bitmap_is_empty(j->bits, j->hdr->nbits, 0, j->hdr->nbits)) {
		r = iod_log_merge(log, j->hdr->gpa, j->bits, 0, j->hdr->nbits, j->hdr->shift);
		if (r < 0)
			return r;
	}
	iod_journal_end(j);
	return 1;
}
