/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the guest-tier test programs (tests/vm/test-kernel-*.c): skipping
 * with a reason, counting open fds, the guest's free memory, a seeded random source
 * (test-rng.h) and watching the kernel log for warnings.
 */
#ifndef IOD_TESTS_VM_TEST_H
#define IOD_TESTS_VM_TEST_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test-rng.h"

#define IOD_EXIT_SKIP 77

/* Print why and exit 77: the whole program is skipped. */
static inline __attribute__((noreturn, format(printf, 1, 2))) void vm_skip(const char *fmt, ...)
{
	va_list ap;

	printf("SKIP: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(IOD_EXIT_SKIP);
}

/*
 * A part of a test that cannot run here says so on a line of its own and returns. Inside
 * the project's guest (tests/vm/init.sh sets IOD_VM_SHAPE) nothing may be missing, so
 * there a skipped part fails the test instead of passing quietly.
 */
#define vm_skip_part(fmt, ...)                                                            \
	do {                                                                              \
		printf("SKIP: %s: " fmt "\n", __func__, ##__VA_ARGS__);                   \
		fflush(stdout);                                                           \
		if (getenv("IOD_VM_SHAPE"))                                               \
			ck_abort_msg("skipped inside the test guest, where it must run"); \
	} while (0)

static inline unsigned vm_count_fds(void)
{
	struct dirent *de;
	unsigned n = 0;
	DIR *d;

	d = opendir("/proc/self/fd");
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

/* MemAvailable from /proc/meminfo in bytes; 0 if unknown. */
static inline uint64_t vm_mem_available(void)
{
	char line[256];
	uint64_t kb = 0;
	FILE *f;

	f = fopen("/proc/meminfo", "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/*
 * The kernel log since vm_kmsg_open(): vm_kmsg_warnings() prints and counts records that
 * show a kernel warning, bug or oops. -1 if /dev/kmsg cannot be read.
 */
static inline int vm_kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		lseek(fd, 0, SEEK_END);
	return fd;
}

static inline int vm_kmsg_warnings(int fd)
{
	static const char *const bad[] = {"WARNING:",		"BUG:",	      "Oops",
					  "kernel BUG",		"UBSAN:",     "KASAN:",
					  "general protection", "refcount_t:"};
	char rec[8192];
	int n = 0;

	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t l = read(fd, rec, sizeof(rec) - 1);

		if (l < 0 && errno == EPIPE) /* overwritten records: keep reading */
			continue;
		if (l <= 0)
			break;
		rec[l] = '\0';
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			if (strstr(rec, bad[i])) {
				printf("kernel: %s", rec);
				n++;
				break;
			}
	}
	return n;
}

#endif
