/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A stand-in VMM for the guest's shell tests (guest-daemon-busctl.sh): busctl cannot pass
 * file descriptors, so this program does the one call that needs one.
 *
 *   mockvm NAME SIZE
 *
 * It opens an iommufd, makes an IOAS (huge pages off) with one mock device on a
 * dirty-tracking HWPT, maps SIZE bytes of memory at IOVA 16 MiB (the start of the mock
 * aperture), lends it all to iodirtyd with AdoptSession(NAME, disconnect policy "keep"), and
 * prints "ready PATH IOAS HWPT". Then it reads commands from stdin:
 *   mark OFFSET PAGES   mark PAGES 4 KiB pages from IOVA 16 MiB + OFFSET dirty (mock DIRTY),
 *                       answer "marked N" (mock IOPTEs)
 *   quit                exit (the daemon keeps its duplicate of the iommufd)
 * The bus is the one in IOD_BUS_ADDRESS.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon-test.h"
#include "iodirty.h"
#include "iommufd-mock.h"

#define LOG_PAGE UINT64_C(4096)

int main(int argc, char **argv)
{
	struct iod_mock_cmd cmd = {.size = sizeof(cmd), .op = IOD_MOCK_OP_DOMAIN_FLAGS};
	const uint64_t iova = IOD_MOCK_APERTURE_START;
	uint64_t size, mock_page = (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	struct iod_iommufd *ictx = NULL;
	uint32_t ioas, stdev, idev, hwpt;
	sd_bus_message *reply;
	const char *path;
	char line[256];
	sd_bus *bus;
	void *mem;
	int fd, r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 3) {
		fprintf(stderr, "usage: mockvm NAME SIZE\n");
		return 2;
	}
	size = strtoull(argv[2], NULL, 0);
	dt_assert(size && size % LOG_PAGE == 0, "bad size");

	r = iod_iommufd_open(NULL, &ictx);
	dt_assert(r == 0, "open /dev/iommu: %s", iod_strerror(r));
	fd = iod_iommufd_fd(ictx);
	dt_assert(iod_ioas_alloc(ictx, &ioas) == 0, "IOAS");
	dt_assert(iod_ioas_set_huge_pages(ictx, ioas, false) == 0, "huge pages off");
	cmd.id = ioas;
	dt_assert(ioctl(fd, IOD_MOCK_CMD, &cmd) == 0, "mock device: %s", strerror(errno));
	stdev = cmd.domain.out_stdev_id;
	idev = cmd.domain.out_idev_id;
	dt_assert(iod_hwpt_alloc(ictx, idev, ioas, IOD_HWPT_DIRTY, &hwpt) == 0, "dirty HWPT");
	cmd = (struct iod_mock_cmd){.size = sizeof(cmd),
				    .op = IOD_MOCK_OP_DOMAIN_REPLACE,
				    .id = stdev,
				    .replace.pt_id = hwpt};
	dt_assert(ioctl(fd, IOD_MOCK_CMD, &cmd) == 0, "replace: %s", strerror(errno));
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dt_assert(mem != MAP_FAILED, "memory");
	r = iod_ioas_map(ictx, ioas, mem, size, iova, IOD_MAP_READ | IOD_MAP_WRITE);
	dt_assert(r == 0, "IOAS map: %s", iod_strerror(r));

	bus = dt_connect();
	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}", argv[1],
			fd, ioas, 1, hwpt, 1, "disconnect_policy", "s", "keep");
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	printf("ready %s %u %u\n", path, ioas, hwpt);
	sd_bus_message_unref(reply);

	while (fgets(line, sizeof(line), stdin)) {
		uint64_t off, pages, marks[64] = {};

		if (strncmp(line, "quit", 4) == 0)
			break;
		if (sscanf(line, "mark %" SCNi64 " %" SCNi64, &off, &pages) != 2 ||
		    pages * (LOG_PAGE / mock_page) > 64 * 64 || off % LOG_PAGE) {
			printf("error: %s", line);
			continue;
		}
		for (uint64_t i = 0; i < pages * (LOG_PAGE / mock_page); i++)
			marks[i / 64] |= UINT64_C(1) << (i % 64);
		cmd = (struct iod_mock_cmd){.size = sizeof(cmd),
					    .op = IOD_MOCK_OP_DIRTY,
					    .id = hwpt,
					    .dirty = {.iova = iova + off,
						      .length = pages * LOG_PAGE,
						      .page_size = mock_page,
						      .uptr = (uintptr_t)marks}};
		if (ioctl(fd, IOD_MOCK_CMD, &cmd) < 0)
			printf("error: mock DIRTY: %s\n", strerror(errno));
		else
			printf("marked %" PRIu64 "\n", (uint64_t)cmd.dirty.out_nr_dirty);
	}
	sd_bus_flush_close_unref(bus);
	iod_iommufd_free(ictx);
	return 0;
}
