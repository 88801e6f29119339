/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iod-insmod FILE.ko [PARAM=VALUE...]: load a kernel module with finit_module(2). The test
 * guest's init loads the test device module (tests/vm/testdev/) with it: a fresh Debian root
 * need not have kmod, and busybox's insmod is not ours to rely on. Exit 0 when loaded, 1
 * with the reason otherwise (EEXIST, already loaded, is an error too).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char params[1024] = "";
	size_t len = 0;
	int fd;

	if (argc < 2) {
		fprintf(stderr, "usage: iod-insmod FILE.ko [PARAM=VALUE...]\n");
		return 1;
	}
	for (int i = 2; i < argc; i++) {
		int n = snprintf(params + len, sizeof(params) - len, "%s%s", len ? " " : "",
				 argv[i]);

		if (n < 0 || (size_t)n >= sizeof(params) - len) {
			fprintf(stderr, "iod-insmod: parameters too long\n");
			return 1;
		}
		len += n;
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "iod-insmod: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (syscall(SYS_finit_module, fd, params, 0) < 0) {
		fprintf(stderr, "iod-insmod: loading %s failed: %s\n", argv[1], strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	return 0;
}
