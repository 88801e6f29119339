/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * End-to-end proofs of the reference migration (daemon/migrate.c, iodirty-migrate) in the
 * guest, against a running iodirtyd on the bus at $IOD_BUS_ADDRESS:
 *
 *   test-migrate mock [--seeds=N] [--seed=S] [--drop-round=N|final]
 *       Adopt mode on the kernel's mock devices: the test owns the iommufd, two mock
 *       devices on dirty HWPTs and the IOAS; guest memory is a memfd mapped at IOVAs that
 *       differ from its GPAs (1 MiB chunks on random IOVA slots, some aliased). While the
 *       migration runs, a workload writes random guest bytes and marks the same IOVA
 *       pages dirty on a mock HWPT (what device DMA does), and churns the vIOMMU (Unmap
 *       then unmap, map then Map; every other event on the session's event channel). After
 *       the final round the destination must equal the
 *       source byte for byte. A failing seed prints how to replay it. With --drop-round
 *       a round is deliberately not copied and the run must be detected as a mismatch
 *       (the negative control: the check can fail).
 *   test-migrate sparse [--seeds=N] [--seed=S] [--size=MIB]
 *       The same machine with sparse guest memory: most of the memfd never populated, some
 *       chunks mapped (pinned, so populated) and filled, some extents and single bytes
 *       written by "CPUs" before the migration; during it the devices write, and new
 *       mappings fill holes the full copy skipped, which the devices then write. The full
 *       copy skips holes (skip_holes): the destination must equal the source byte for byte,
 *       and the bytes skipped must be exactly the log pages never populated.
 *   test-migrate reported [--seeds=N] [--seed=S] [--size=MIB] [--unreported=N|final]
 *       No IOMMU at all: an owner session with guest memory and no device, whose
 *       "emulated device" writes guest memory with the CPU and reports every write with
 *       MarkDirty (mark batches on the event channel, some MarkDirty calls on the bus)
 *       before the next Harvest. The destination must equal the source byte for byte.
 *       With --unreported one write is not reported (after dirty round N, or in the
 *       pause) and the run must be detected as a mismatch of exactly that page.
 *   test-migrate edu [--seed=S]
 *       Owner mode with the edu device (IOD_EDU_PCI) attached by fd: its DMA engine
 *       copies guest pages to other guest pages while the migration runs (fallback: the
 *       emulated VT-d has no dirty tracking). The destination must equal the source.
 *   test-migrate devlog [--seed=S] [--drop-round=N]
 *       Owner mode with the test device of tests/vm/testdev attached by fd: it has no IOMMU
 *       of its own and logs its own DMA (VFIO DMA logging), and writes random guest bytes
 *       while the migration runs. The result must say precise and the destination must
 *       equal the source; with --drop-round a round is not copied and the mismatch must be
 *       found (the negative control).
 *   test-migrate demo-mock [--sparse] [IODIRTY-MIGRATE OPTIONS...]
 *   test-migrate demo-edu [IODIRTY-MIGRATE OPTIONS...]
 *       Set up the same machine and exec iodirty-migrate on it with a workload child
 *       (test-migrate workload-mock|workload-edu): the reference orchestrator, as a
 *       person would run it. With --sparse, most of the memory is never populated (as in
 *       test-migrate sparse) and the workload maps a quarter of it: holes are skipped; the
 *       destination, /tmp/demo-mock-sparse.img, is filled with random bytes first.
 *   test-migrate resume-mock kept|fresh|kill|partial
 *       The same machine, iodirty-migrate run twice: a first attempt that fails (its
 *       receiver dies, or it is killed mid-round), then --resume; the image must equal the
 *       source (see cmd_resume_mock()).
 *
 * Exit 0 pass, 1 fail, 77 skip (no iommufd, mock devices, edu device or bus).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <json-c/json.h>
#include <linux/vfio.h>
#include <systemd/sd-bus.h>

#include "iodirty-client.h"
#include "edu.h"
#include "iodirty.h"
#include "iommufd-mock.h"
#include "migrate.h"
#include "test-rng.h"
#include "testdev.h"

#define SKIP 77

#define SZ_1M (UINT64_C(1) << 20)
#define CHUNK SZ_1M /* vIOMMU mapping granule */
#define IOVA_SLOT_BASE (UINT64_C(256) << 20) /* inside the mock aperture [16 MiB, 2 GiB) */
#define IOVA_SLOTS 1024
#define MOCK_GPA UINT64_C(0x100000000) /* 4 GiB: far from every IOVA */
#define N_DEVS 2

static const char *bus_address;
static volatile sig_atomic_t stop_requested;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("FAIL: ");
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	exit(EXIT_FAILURE);
}

static void skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("SKIP: ");
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	exit(SKIP);
}

static void rng_fill(uint8_t *p, uint64_t n)
{
	for (uint64_t i = 0; i < n; i += 8) {
		uint64_t v = rng();

		memcpy(p + i, &v, n - i < 8 ? n - i : 8);
	}
}

static int memfd_new(uint64_t size, bool cloexec, uint8_t **ret_mem)
{
	int fd = memfd_create("guest-ram", cloexec ? MFD_CLOEXEC : 0);
	void *p;

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		die("memfd of %" PRIu64 " bytes: %m", size);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap guest memory: %m");
	*ret_mem = p;
	return fd;
}

static void on_stop_signal(int sig)
{
	stop_requested = 1;
}

static void catch_stop(void)
{
	struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

/* =============================== the mock machine ========================================= */

struct mock_map {
	uint64_t iova, gpa; /* gpa of the chunk */
	bool mapped;
	bool unreported; /* in the IOAS, its Map not answered yet (the daemon was away) */
};

struct mock_vm {
	struct iod_iommufd *ictx;
	int fd;
	uint32_t ioas;
	uint32_t stdev[N_DEVS], hwpt[N_DEVS];
	uint64_t mock_page;
	int memfd;
	uint8_t *mem;
	uint64_t size, gpa;
	struct mock_map maps[IOVA_SLOTS]; /* by IOVA slot */
	unsigned n_mapped;
	/* for the workload */
	sd_bus *bus;
	const char *path;
	uint64_t writes, churn;
	bool churn_enabled;
	bool tolerate_bus_errors; /* a workload process: the daemon may be restarting */
	/* The session's event channel: every other vIOMMU event goes over it. */
	bool chan_open;
	int chan;
	uint64_t seq; /* of the last batch sent on it */
	bool chan_ever; /* opened once: seq continues above the session's last_sequence */
	uint64_t events, chan_events;
	/* Sparse memory (test-migrate sparse): most of the memfd never populated. */
	uint64_t map_limit; /* new mappings only of chunks below this GPA (UINT64_MAX: any) */
	uint8_t *populated; /* per 4 KiB page: populated before the migration (NULL: dense) */
	uint64_t log_page; /* the session's dirty log page size */
	int next_slot; /* a chunk just mapped: the next DMA write goes through it (-1: none) */
	uint64_t hole_maps, hole_writes; /* mappings and DMA writes of memory skipped as holes */
};

static int mock_cmd_domain(int fd, uint32_t pt_id, uint32_t *ret_stdev, uint32_t *ret_idev)
{
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd), .op = IOD_MOCK_OP_DOMAIN_FLAGS, .id = pt_id};

	if (ioctl(fd, IOD_MOCK_CMD, &cmd) < 0)
		return -errno;
	*ret_stdev = cmd.domain.out_stdev_id;
	*ret_idev = cmd.domain.out_idev_id;
	return 0;
}

static int mock_cmd_replace(int fd, uint32_t stdev, uint32_t pt_id)
{
	struct iod_mock_cmd cmd = {.size = sizeof(cmd),
				   .op = IOD_MOCK_OP_DOMAIN_REPLACE,
				   .id = stdev,
				   .replace.pt_id = pt_id};

	return ioctl(fd, IOD_MOCK_CMD, &cmd) < 0 ? -errno : 0;
}

/* The device behind hwpt wrote [iova, iova + length) (mock page aligned): mark it dirty. */
static int mock_cmd_dirty(struct mock_vm *vm, uint32_t hwpt, uint64_t iova, uint64_t length)
{
	uint64_t npages = length / vm->mock_page, marks[8] = {};
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DIRTY,
		.id = hwpt,
		.dirty = {.iova = iova,
			  .length = length,
			  .page_size = vm->mock_page,
			  .uptr = (uintptr_t)marks},
	};

	if (npages > 64 * ELEMENTSOF(marks))
		return -E2BIG;
	for (uint64_t i = 0; i < npages; i++)
		marks[i / 64] |= UINT64_C(1) << (i % 64);
	if (ioctl(vm->fd, IOD_MOCK_CMD, &cmd) < 0)
		return -errno;
	return cmd.dirty.out_nr_dirty == npages ? 0 : -EIO;
}

/* The mock machine; its memory filled with random bytes, or with sparse left unpopulated. */
static void mock_vm_setup(struct mock_vm *vm, uint64_t size, bool cloexec, bool sparse)
{
	int r;

	*vm = (struct mock_vm){
		.size = size, .gpa = MOCK_GPA, .map_limit = UINT64_MAX, .next_slot = -1};
	vm->mock_page = (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	r = iod_iommufd_open(NULL, &vm->ictx);
	if (r == -ENODEV)
		skip("/dev/iommu does not exist: the kernel has no iommufd");
	if (r < 0)
		die("open /dev/iommu: %s", strerror(-r));
	vm->fd = iod_iommufd_fd(vm->ictx);
	if (!cloexec) {
		/* a descriptor iodirty-migrate and its workload inherit */
		int fd = fcntl(vm->fd, F_DUPFD, 3);

		if (fd < 0)
			die("dup: %m");
		vm->fd = fd;
	}
	if (iod_ioas_alloc(vm->ictx, &vm->ioas) < 0 ||
	    iod_ioas_set_huge_pages(vm->ictx, vm->ioas, false) < 0)
		die("IOAS: %m");
	for (int i = 0; i < N_DEVS; i++) {
		uint32_t idev = 0;

		r = mock_cmd_domain(vm->fd, vm->ioas, &vm->stdev[i], &idev);
		if (r < 0)
			skip("no iommufd mock devices (CONFIG_IOMMUFD_TEST): %s", strerror(-r));
		r = iod_hwpt_alloc(vm->ictx, idev, vm->ioas, IOD_HWPT_DIRTY, &vm->hwpt[i]);
		if (r >= 0)
			r = mock_cmd_replace(vm->fd, vm->stdev[i], vm->hwpt[i]);
		if (r < 0)
			die("dirty HWPT for mock device %d: %s", i, strerror(-r));
	}
	vm->memfd = memfd_new(size, cloexec, &vm->mem);
	if (!sparse)
		rng_fill(vm->mem, size);
}

static int free_slot(struct mock_vm *vm)
{
	for (int tries = 0; tries < 4 * IOVA_SLOTS; tries++) {
		int s = (int)(rng() % IOVA_SLOTS);

		if (!vm->maps[s].mapped)
			return s;
	}
	return -1;
}

static int random_mapped(struct mock_vm *vm)
{
	unsigned k;

	if (!vm->n_mapped)
		return -1;
	k = (unsigned)(rng() % vm->n_mapped);
	for (int s = 0; s < IOVA_SLOTS; s++)
		if (vm->maps[s].mapped && k-- == 0)
			return s;
	return -1;
}

/* A Map or Unmap event; -ENOENT for NotMapped (an Unmap the daemon already did). */
/* MapBatch of the slots given, repeated as bus_map() repeats a Map. */
static int bus_map_batch(struct mock_vm *vm, const int *slots, int n)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *msg = NULL;
	int r;

	do {
		sd_bus_error_free(&error);
		sd_bus_message_unref(msg);
		r = sd_bus_message_new_method_call(vm->bus, &msg, IOD_BUS_NAME, vm->path,
						   IOD_SESSION_INTERFACE, "MapBatch");
		if (r >= 0)
			r = sd_bus_message_open_container(msg, 'a', "(ttt)");
		for (int i = 0; r >= 0 && i < n; i++)
			r = sd_bus_message_append(msg, "(ttt)", vm->maps[slots[i]].iova,
						  vm->maps[slots[i]].gpa, CHUNK);
		if (r >= 0)
			r = sd_bus_message_close_container(msg);
		if (r >= 0)
			r = sd_bus_call(vm->bus, msg, 0, &error, NULL);
	} while (r == -EINTR);
	if (r < 0)
		printf("MapBatch: %s\n", error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
	sd_bus_message_unref(msg);
	return r;
}

static int bus_map(struct mock_vm *vm, const char *member, const char *types, ...)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	va_list ap;
	int r;

	/* The orchestrator's SIGTERM (stop) can interrupt the wait for the reply (ppoll is
	 * never restarted): send the call again, as a VMM would; Map and Unmap are safe to
	 * repeat (an identical Map succeeds, a repeated Unmap is NotMapped). */
	do {
		sd_bus_error_free(&error);
		va_start(ap, types);
		r = sd_bus_call_methodv(vm->bus, IOD_BUS_NAME, vm->path, IOD_SESSION_INTERFACE,
					member, &error, NULL, types, ap);
		va_end(ap);
	} while (r == -EINTR);
	if (r < 0 && sd_bus_error_has_name(&error, "org.iodirty.Error.NotMapped"))
		r = -ENOENT;
	else if (r < 0)
		printf("%s: %s\n", member, error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
	return r;
}

/*
 * The same event on the session's event channel. When the channel fails (the daemon went
 * away), a new one is opened and the batch sent again with its number: the daemon applies
 * it unless the instance that went had done so (the completion then says REPLAYED).
 * Returns as bus_map() does; an error when no channel can be opened (the daemon is away).
 */
static int chan_map(struct mock_vm *vm, bool map, uint64_t iova, uint64_t gpa)
{
	const struct iod_mapping e = {.iova = iova, .gpa = map ? gpa : 0, .length = CHUNK};
	struct iod_channel_completion c;
	uint64_t last, seq = 0;
	int r = -ECONNRESET;

	for (int attempt = 0; attempt < 2; attempt++) {
		if (!vm->chan_open) {
			r = iod_channel_open(vm->bus, vm->path, &vm->chan, &last);
			if (r < 0)
				return r;
			vm->chan_open = true;
			/* A session an earlier process fed (a resumed migration's new workload):
			 * batches at or below its last_sequence would count as resent. */
			if (!vm->chan_ever && last > vm->seq)
				vm->seq = last;
			vm->chan_ever = true;
		}
		if (!seq)
			seq = ++vm->seq; /* the same seq when sent again after a reopen */
		r = iod_channel_send(vm->chan, map ? IOD_EVENT_MAP : IOD_EVENT_UNMAP, seq, &e, 1);
		if (r >= 0)
			r = iod_channel_recv(vm->chan, &c);
		if (r >= 0)
			break;
		close(vm->chan);
		vm->chan_open = false;
	}
	if (r < 0)
		return r;
	if (c.seq != seq) {
		printf("event channel: completion for batch %" PRIu64 ", want %" PRIu64 "\n", c.seq,
		       seq);
		return -EBADMSG;
	}
	vm->chan_events++;
	if (c.error == 0)
		return 0;
	if (strcmp(c.name, "org.iodirty.Error.NotMapped") == 0)
		return -ENOENT;
	printf("%s on the event channel: %s\n", map ? "map" : "unmap", c.message);
	return c.error;
}

/* A vIOMMU event, on the bus and on the event channel by turns. */
static int vm_event(struct mock_vm *vm, bool map, uint64_t iova, uint64_t gpa)
{
	if (vm->events++ % 2)
		return chan_map(vm, map, iova, gpa);
	if (map)
		return bus_map(vm, "Map", "ttt", iova, gpa, CHUNK);
	return bus_map(vm, "Unmap", "tt", iova, CHUNK);
}

/* Map chunk (gpa) at IOVA slot s: the IOAS first, then the Map event (before any DMA). */
static int mock_map(struct mock_vm *vm, int s, uint64_t gpa, bool report)
{
	struct mock_map *p = &vm->maps[s];
	int r;

	p->iova = IOVA_SLOT_BASE + (uint64_t)s * CHUNK;
	p->gpa = gpa;
	r = iod_ioas_map(vm->ictx, vm->ioas, vm->mem + (gpa - vm->gpa), CHUNK, p->iova,
			 IOD_MAP_READ | IOD_MAP_WRITE);
	if (r < 0)
		return r;
	if (report) {
		r = vm_event(vm, true, p->iova, gpa);
		if (r < 0 && !vm->tolerate_bus_errors) {
			(void)iod_ioas_unmap(vm->ictx, vm->ioas, p->iova, CHUNK, NULL);
			return r;
		}
		/* The daemon is away (restarting): it may have recorded the mapping before it
		 * went. The mapping stays, carries no DMA, and its Map is retried until answered
		 * (a Map identical to a recorded one succeeds): never taken back unreported. */
		p->unreported = r < 0;
	}
	p->mapped = true;
	vm->n_mapped++;
	return p->unreported ? -EAGAIN : 0;
}

/* Retry the Map of every mapping whose Map the daemon did not answer. */
static void mock_report_pending(struct mock_vm *vm)
{
	for (int s = 0; s < IOVA_SLOTS; s++) {
		struct mock_map *p = &vm->maps[s];

		if (p->mapped && p->unreported &&
		    bus_map(vm, "Map", "ttt", p->iova, p->gpa, CHUNK) >= 0)
			p->unreported = false;
	}
}

/* Unmap slot s: the Unmap event first (the daemon harvests it), then the IOAS. */
static int mock_unmap(struct mock_vm *vm, int s, bool report)
{
	struct mock_map *p = &vm->maps[s];
	int r;

	if (report) {
		r = vm_event(vm, false, p->iova, 0);
		if (r == -ENOENT && (p->unreported || vm->tolerate_bus_errors))
			r = 0; /* a retry the first attempt did, or a Map never recorded */
		if (r < 0)
			return vm->tolerate_bus_errors ? -EAGAIN : r; /* stays mapped */
	}
	r = iod_ioas_unmap(vm->ictx, vm->ioas, p->iova, CHUNK, NULL);
	if (r < 0)
		return r;
	p->mapped = false;
	p->unreported = false;
	vm->n_mapped--;
	return 0;
}

/* Every chunk of guest memory at a random IOVA slot with probability 3/4; some aliased. */
static void mock_initial_maps(struct mock_vm *vm)
{
	for (uint64_t c = 0; c < vm->size / CHUNK; c++) {
		int n = rng() % 4 ? 1 : 0;

		if (rng() % 8 == 0)
			n++; /* an alias: the same guest memory at a second IOVA */
		for (int i = 0; i < n; i++) {
			int s = free_slot(vm);

			if (s < 0 || mock_map(vm, s, vm->gpa + c * CHUNK, false) < 0)
				die("initial mapping of chunk %" PRIu64 ": %m", c);
		}
	}
}

/* Sparse: was any log page of [gpa, gpa + length) left out by the full copy (nothing in it
 * populated before the migration)? */
static bool range_was_hole(const struct mock_vm *vm, uint64_t gpa, uint64_t length)
{
	uint64_t per = vm->log_page / 4096;

	for (uint64_t lp = (gpa - vm->gpa) / vm->log_page;
	     lp * vm->log_page < gpa - vm->gpa + length; lp++) {
		bool hole = true;

		for (uint64_t i = 0; i < per; i++)
			hole = hole && !vm->populated[lp * per + i];
		if (hole)
			return true;
	}
	return false;
}

static bool chunk_was_hole(const struct mock_vm *vm, uint64_t gpa)
{
	return range_was_hole(vm, gpa, CHUNK);
}

/*
 * One step of the guest's devices: a few DMA writes through mapped IOVAs (the bytes, then
 * the dirty mark on the device's HWPT: a harvest between the two sees the mark later, never
 * the other way round), and now and then a vIOMMU map or unmap.
 */
static int mock_step(struct mock_vm *vm)
{
	unsigned n_writes = 1 + (unsigned)(rng() % 6);
	int r;

	if (vm->tolerate_bus_errors)
		mock_report_pending(vm);
	if (vm->churn_enabled && rng() % 4 == 0) {
		if ((rng() % 2 || vm->n_mapped > IOVA_SLOTS / 2) && vm->n_mapped > 4) {
			r = mock_unmap(vm, random_mapped(vm), true);
		} else {
			int s = free_slot(vm);
			uint64_t gpa = vm->gpa + (rng() % (vm->size / CHUNK)) * CHUNK;

			if (gpa + CHUNK > vm->map_limit)
				s = -1; /* sparse, first round: not where the copy has yet to walk */
			r = s < 0 ? 0 : mock_map(vm, s, gpa, true);
			if (r == -EEXIST)
				r = 0; /* a slot somebody else mapped: no churn this time */
			if (r == 0 && s >= 0 && vm->populated) {
				/* mapping pins, and so populates: what the full copy skipped as a hole
				 * fills with zeros now, and the device writes into it at once */
				vm->next_slot = s;
				vm->hole_maps += chunk_was_hole(vm, gpa);
			}
		}
		if (r == -EAGAIN)
			r = 0;
		if (r < 0)
			return r;
		vm->churn++;
	}
	for (unsigned i = 0; i < n_writes; i++) {
		int s = vm->next_slot >= 0 ? vm->next_slot : random_mapped(vm);
		uint64_t pages = CHUNK / vm->mock_page, first, n, off, len;
		const struct mock_map *p;

		if (s < 0)
			break;
		p = &vm->maps[s];
		if (p->unreported)
			continue; /* the daemon may not know it: no DMA through it */
		first = rng() % pages;
		n = 1 + rng() % (rng() % 16 == 0 ? 32 : 3);
		if (first + n > pages)
			n = pages - first;
		off = first * vm->mock_page;
		len = n * vm->mock_page;
		/* partial writes: the first and last bytes need not be touched */
		{
			uint64_t skip_head = rng() % 64, skip_tail = rng() % 64;

			rng_fill(vm->mem + (p->gpa - vm->gpa) + off + skip_head,
				 len - skip_head - skip_tail);
		}
		r = mock_cmd_dirty(vm, vm->hwpt[rng() % N_DEVS], p->iova + off, len);
		if (r < 0)
			return r;
		vm->writes++;
		vm->next_slot = -1;
		if (vm->populated)
			vm->hole_writes += range_was_hole(vm, p->gpa + off, len);
	}
	return 0;
}

static void mock_vm_teardown(struct mock_vm *vm)
{
	if (vm->chan_open)
		close(vm->chan);
	vm->chan_open = false;
	for (int s = 0; s < IOVA_SLOTS; s++)
		if (vm->maps[s].mapped)
			(void)mock_unmap(vm, s, false);
	for (int i = 0; i < N_DEVS; i++) {
		(void)iod_iommufd_destroy(vm->ictx, vm->stdev[i]);
		(void)iod_iommufd_destroy(vm->ictx, vm->hwpt[i]);
	}
	(void)iod_iommufd_destroy(vm->ictx, vm->ioas);
	if (vm->fd != iod_iommufd_fd(vm->ictx))
		close(vm->fd);
	vm->ictx = iod_iommufd_free(vm->ictx);
	munmap(vm->mem, vm->size);
	close(vm->memfd);
}

/* ------------------------------ migrate.c hooks -------------------------------------------- */

struct image {
	uint8_t *p;
	uint64_t gpa, size;
	unsigned rounds;
	uint64_t bytes;
	bool full_done; /* round 0 reported */
	uint64_t full_bytes; /* round 0's bytes */
	uint64_t pos; /* during round 0: the end of the last write (the copy goes up) */
	uint64_t skipped; /* round 0's skipped_bytes */
};

static int image_write(uint64_t gpa, const void *data, uint64_t length, void *userdata)
{
	struct image *img = *(struct image **)userdata;

	if (gpa < img->gpa || length > img->size || gpa - img->gpa > img->size - length)
		return -ERANGE;
	memcpy(img->p + (gpa - img->gpa), data, length);
	img->bytes += length;
	if (!img->full_done)
		img->pos = gpa + length;
	return 0;
}

static bool verbose_rounds;

static void print_round(const struct iod_migrate_round *r, void *userdata)
{
	struct image *img = *(struct image **)userdata;

	img->rounds = r->index;
	if (r->index == 0) {
		img->full_done = true;
		img->full_bytes = r->bytes;
		img->skipped = r->skipped_bytes;
	}
	if (verbose_rounds)
		printf("  round %2u %-5s dirty %6" PRIu64 " pages, %8" PRIu64
		       " bytes, harvest %6" PRIu64 " us (daemon %5" PRIu64 " us), copy %6" PRIu64
		       " us, ack %5" PRIu64 " us, round %7" PRIu64 " us, est. downtime %6" PRIu64
		       " us%s%s%s\n",
		       r->index,
		       r->index == 0 ? "full"
		       : r->final    ? "final"
				     : "dirty",
		       r->dirty_pages, r->bytes, r->harvest_usec, r->daemon_usec, r->copy_usec,
		       r->ack_usec, r->wall_usec, r->est_downtime_usec,
		       r->skipped_bytes ? ", holes skipped" : "", r->precise ? "" : " imprecise",
		       r->dropped ? " DROPPED" : "");
}

struct mock_run {
	struct image *img; /* first: image_write() */
	struct mock_vm *vm;
};

static int mock_prepare(struct iod_migrate *m, void *userdata)
{
	struct mock_run *run = userdata;
	struct mock_vm *vm = run->vm;

	vm->bus = iod_migrate_bus(m);
	vm->path = iod_migrate_session_path(m);
	for (int s = 0; s < IOVA_SLOTS; s++)
		if (vm->maps[s].mapped) {
			int r = bus_map(vm, "Map", "ttt", vm->maps[s].iova, vm->maps[s].gpa, CHUNK);

			if (r < 0)
				return r;
		}
	return 0;
}

static int mock_tick(struct iod_migrate *m, void *userdata)
{
	struct mock_run *run = userdata;

	return mock_step(run->vm);
}

/* The devices write once more right before they stop: the final round is never empty. */
static int mock_pause(struct iod_migrate *m, void *userdata)
{
	struct mock_run *run = userdata;
	bool churn = run->vm->churn_enabled;
	int r;

	run->vm->churn_enabled = false;
	r = mock_step(run->vm);
	run->vm->churn_enabled = churn;
	return r;
}

static uint64_t count_bad_pages(const uint8_t *a, const uint8_t *b, uint64_t size,
				uint64_t *ret_first)
{
	uint64_t bad = 0;

	*ret_first = UINT64_MAX;
	for (uint64_t off = 0; off < size; off += 4096)
		if (memcmp(a + off, b + off, 4096) != 0) {
			if (*ret_first == UINT64_MAX)
				*ret_first = off;
			bad++;
		}
	return bad;
}

/* The downtime estimate against the measured downtime (a report, never a pass/fail). */
static double downtime_ratios[256];
static unsigned n_downtime_ratios;

static void print_downtime(uint64_t seed, const struct iod_migrate_result *res)
{
	const struct iod_migrate_estimate *e = &res->est, *m = &res->measured;
	double ratio = m->downtime_usec ? (double)e->downtime_usec / (double)m->downtime_usec : 0;

	printf("seed %" PRIu64 ": downtime estimated %" PRIu64 " us, measured %" PRIu64
	       " us, ratio %.2f (estimated/measured: pause %" PRIu64 "/%" PRIu64
	       " us, harvest %" PRIu64 "/%" PRIu64 " us, copy %" PRIu64 "/%" PRIu64
	       " pages %" PRIu64 "/%" PRIu64 " us, rest %" PRIu64 "/%" PRIu64 " us)\n",
	       seed, e->downtime_usec, m->downtime_usec, ratio, e->pause_usec, m->pause_usec,
	       e->harvest_usec, m->harvest_usec, e->pages, m->pages, e->copy_usec, m->copy_usec,
	       e->fixed_usec, m->fixed_usec);
	if (n_downtime_ratios < ELEMENTSOF(downtime_ratios))
		downtime_ratios[n_downtime_ratios++] = ratio;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void print_downtime_summary(void)
{
	unsigned within = 0;

	if (n_downtime_ratios == 0)
		return;
	qsort(downtime_ratios, n_downtime_ratios, sizeof(double), cmp_double);
	for (unsigned i = 0; i < n_downtime_ratios; i++)
		within += downtime_ratios[i] >= 0.7 && downtime_ratios[i] <= 1.3;
	printf("downtime estimated/measured over %u seeds: min %.2f, median %.2f, max %.2f; "
	       "%u of %u within 0.7-1.3\n",
	       n_downtime_ratios, downtime_ratios[0], downtime_ratios[n_downtime_ratios / 2],
	       downtime_ratios[n_downtime_ratios - 1], within, n_downtime_ratios);
}

/* ------------------------ what every seed of a mode does ------------------------------------ */

/* The migration config of one seed's run: what the modes share (they add the rest). */
static struct iod_migrate_config seed_config(const char *name, int memfd, const uint8_t *mem,
					     uint64_t size, uint64_t gpa)
{
	return (struct iod_migrate_config){
		.session = name,
		.memfd = memfd,
		.size = size,
		.gpa = gpa,
		.mem = mem,
		.converge_pages = 32,
		.max_rounds = 12,
		.batch_bytes = 64 * 1024,
		.on_daemon_restart = IOD_MIGRATE_ABORT,
	};
}

/*
 * Run one seed's migration (prefix names it in the FAIL line) with the mode's hooks: it
 * copies into the image userdata starts with (image_write()), and prints its rounds
 * (print_round()). 0, or a negative errno.
 */
static int seed_migrate(sd_bus *bus, const char *prefix, uint64_t seed,
			const struct iod_migrate_config *c, const struct iod_migrate_ops *hooks,
			void *userdata, struct iod_migrate_result *ret_res)
{
	struct iod_migrate_ops ops = *hooks;
	struct iod_migrate *m = NULL;
	int r;

	ops.write = image_write;
	ops.round = print_round;
	r = iod_migrate_new(bus, c, &ops, userdata, &m);
	if (r < 0)
		die("iod_migrate_new: %s", strerror(-r));
	r = iod_migrate_run(m, ret_res);
	if (r < 0)
		printf("FAIL: %sseed %" PRIu64 ": the migration failed (%s): %s\n", prefix, seed,
		       iod_migrate_status_to_string(ret_res->status), iod_migrate_error(m));
	iod_migrate_free(m);
	return r;
}

/* End a seed's line with the comparison of the destination (img) with the source (mem) of
 * size bytes at gpa. Returns the number of pages that differ. */
static uint64_t print_comparison(const uint8_t *img, const uint8_t *mem, uint64_t size,
				 uint64_t gpa, uint64_t *ret_first)
{
	uint64_t bad = count_bad_pages(img, mem, size, ret_first);

	printf(": %s", bad ? "MISMATCH" : "destination == source");
	if (bad)
		printf(" (%" PRIu64 " pages differ, the first at GPA 0x%" PRIx64 ")", bad,
		       gpa + *ret_first);
	printf("\n");
	return bad;
}

/*
 * A mode that migrates once per seed (--seed, --seeds, --size, --verbose), with a negative
 * control (its option makes the run lose something, and the comparison must see it).
 */
struct seeds_mode {
	const char *name; /* test-migrate NAME */
	const char *summary; /* the last line's words before the count */
	const char *control; /* the negative control's option: N (a dirty round from 1), final */
	bool control_zero; /* --CONTROL=0 means no control (else it is refused) */
	const char *lost; /* what the control loses ("round") */
	const char *undetected; /* the FAIL line where nothing differs with the control */
	const char *detected; /* the PASS line where the control is seen */
	/* One seed: the number of pages that differ, *ret_error where it failed otherwise. */
	uint64_t (*one)(sd_bus *bus, uint64_t seed, uint64_t size, uint64_t control,
			bool *ret_error);
};

static int seeds_run(const struct seeds_mode *mode, int argc, char **argv)
{
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20), seeds = 1,
		 size = 32 * SZ_1M, control = 0;
	bool seed_given = false;
	unsigned failed = 0;
	sd_bus *bus = NULL;
	int c;

	const struct option options[] = {
		{"seed", required_argument, NULL, 's'},
		{"seeds", required_argument, NULL, 'n'},
		{"size", required_argument, NULL, 'S'},
		{mode->control, required_argument, NULL, 'c'},
		{"verbose", no_argument, NULL, 'v'},
		{},
	};
	while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
		switch (c) {
		case 's':
			seed = strtoull(optarg, NULL, 0);
			seed_given = true;
			break;
		case 'n':
			seeds = strtoull(optarg, NULL, 0);
			break;
		case 'S':
			size = strtoull(optarg, NULL, 0) * SZ_1M;
			break;
		case 'c':
			control = strcmp(optarg, "final") == 0 ? IOD_MIGRATE_DROP_FINAL
							       : strtoull(optarg, NULL, 0);
			if (control == 0 && !mode->control_zero)
				die("--%s=N: a dirty round from 1, or final", mode->control);
			break;
		case 'v':
			verbose_rounds = true;
			break;
		default:
			return 2;
		}
	}
	if (iod_bus_client_open(bus_address, false, &bus) < 0)
		skip("no bus at %s", bus_address);
	if (!seed_given)
		printf("seeds %" PRIu64 " .. %" PRIu64 " (replay one with --seed=N)\n", seed,
		       seed + seeds - 1);
	for (uint64_t i = 0; i < seeds; i++) {
		bool error = false;
		uint64_t bad = mode->one(bus, seed + i, size, control, &error);

		if (error) {
			failed++;
		} else if (control) {
			if (bad == 0) {
				char value[24];

				if (control == IOD_MIGRATE_DROP_FINAL)
					snprintf(value, sizeof(value), "final");
				else
					snprintf(value, sizeof(value), "%" PRIu64, control);
				printf("FAIL: seed %" PRIu64
				       ": %s and yet the destination matches: "
				       "the check cannot see a lost %s (replay: test-migrate %s "
				       "--seed=%" PRIu64 " --%s=%s)\n",
				       seed + i, mode->undetected, mode->lost, mode->name, seed + i,
				       mode->control, value);
				failed++;
			} else {
				printf("PASS: seed %" PRIu64 ": %s\n", seed + i, mode->detected);
			}
		} else if (bad) {
			printf("FAIL: seed %" PRIu64
			       ": replay with: test-migrate %s --seed=%" PRIu64 " --verbose\n",
			       seed + i, mode->name, seed + i);
			failed++;
		}
	}
	sd_bus_flush_close_unref(bus);
	if (!control)
		print_downtime_summary(); /* of the modes that report it */
	printf("%s: %s%" PRIu64 " seeds, %u failed\n", failed ? "FAIL" : "PASS", mode->summary,
	       seeds, failed);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* One seed. Returns the number of differing pages (0: the destination equals the source). */
static uint64_t mock_one(sd_bus *bus, uint64_t seed, uint64_t size, uint64_t drop_round,
			 bool *ret_error)
{
	struct mock_vm vm;
	struct image img = {.gpa = MOCK_GPA, .size = size};
	struct mock_run run = {.img = &img, .vm = &vm};
	struct iod_migrate_ops hooks = {
		.prepare = mock_prepare,
		.tick = mock_tick,
		.pause = mock_pause,
	};
	struct iod_migrate_config c;
	struct iod_migrate_result res;
	uint64_t bad, first;
	char name[64];
	int r;

	rng_state = seed ? seed : 1;
	mock_vm_setup(&vm, size, true, false);
	vm.churn_enabled = true;
	mock_initial_maps(&vm);
	img.p = malloc(size);
	if (!img.p)
		die("out of memory");
	memset(img.p, 0, size);

	snprintf(name, sizeof(name), "mock-%" PRIu64, seed);
	c = seed_config(name, vm.memfd, vm.mem, size, MOCK_GPA);
	c.mode = IOD_MIGRATE_ADOPT;
	c.viommu = true;
	c.iommufd = vm.fd;
	c.ioas = vm.ioas;
	c.hwpts = vm.hwpt;
	c.n_hwpts = N_DEVS;
	c.drop_round = drop_round;
	r = seed_migrate(bus, "", seed, &c, &hooks, &run, &res);
	*ret_error = r < 0;

	printf("seed %" PRIu64 ": %u dirty rounds%s, %" PRIu64 " bytes copied, %" PRIu64
	       " DMA writes, %" PRIu64 " map/unmap events (%" PRIu64 " on the event channel), %u "
	       "mappings at the end",
	       seed, res.rounds, res.converged ? " (converged)" : "", res.total_bytes, vm.writes,
	       vm.churn, vm.chan_events, vm.n_mapped);
	bad = print_comparison(img.p, vm.mem, size, MOCK_GPA, &first);
	if (r >= 0)
		print_downtime(seed, &res);
	if (vm.writes == 0 || vm.churn == 0 || vm.chan_events == 0)
		*ret_error = true;
	free(img.p);
	mock_vm_teardown(&vm);
	return bad;
}

/* ========================= reported writes: emulated devices only ========================== */

/*
 * test-migrate reported: a VM whose only "device" is emulated. Its writes go into guest
 * memory with the CPU, and no IOMMU sees them: the workload reports every write itself,
 * with a mark batch on the session's event channel (three ticks in four) or MarkDirty on
 * the bus (the fourth), and reads the completion or reply before it returns, so before
 * the orchestrator's next Harvest. The session is an owner session with memory and no
 * device at all; the destination must equal the source byte for byte.
 *
 * With --unreported=N one write is not reported: the first one after dirty round N was
 * copied (final: in the pause, before the final round), into a page nothing wrote before
 * and nothing writes after, so no round can carry it by chance. The run must then be
 * detected as a mismatch (the negative control: a write nobody reports is lost).
 */
#define REPORTED_GPA UINT64_C(0x100000000)
#define REPORTED_PAGE UINT64_C(4096)
#define REPORTED_NONE UINT64_C(0)

enum { PAGE_UNTOUCHED, PAGE_WRITTEN, PAGE_UNREPORTED };

struct reported_vm {
	uint8_t *mem;
	int memfd;
	uint64_t size;
	uint8_t *page_state; /* per page: PAGE_* */
	sd_bus *bus;
	const char *path;
	int chan;
	bool chan_open;
	uint64_t seq;
	uint64_t writes, chan_batches, chan_ranges, bus_calls, bus_ranges;
	/* the broken variant: 0 none, N after dirty round N, IOD_MIGRATE_DROP_FINAL the pause */
	uint64_t unreported_after;
	bool paused;
	uint64_t unreported_gpa; /* the write left unreported (0: none yet) */
};

struct reported_run {
	struct image *img; /* first: image_write() */
	struct reported_vm *vm;
};

static int reported_mark_bus(struct reported_vm *vm, const struct iod_range *w, size_t n)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *msg = NULL;
	int r;

	r = sd_bus_message_new_method_call(vm->bus, &msg, IOD_BUS_NAME, vm->path,
					   IOD_SESSION_INTERFACE, "MarkDirty");
	if (r >= 0)
		r = sd_bus_message_open_container(msg, 'a', "(tt)");
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = sd_bus_message_append(msg, "(tt)", w[i].start, w[i].length);
	if (r >= 0)
		r = sd_bus_message_close_container(msg);
	if (r >= 0)
		r = sd_bus_call(vm->bus, msg, 0, &error, NULL);
	if (r < 0)
		printf("MarkDirty: %s\n", error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
	sd_bus_message_unref(msg);
	vm->bus_calls++;
	vm->bus_ranges += n;
	return r;
}

static int reported_mark_channel(struct reported_vm *vm, const struct iod_range *w, size_t n)
{
	struct iod_channel_completion c;
	int r;

	if (!vm->chan_open) {
		r = iod_channel_open(vm->bus, vm->path, &vm->chan, &vm->seq);
		if (r < 0) {
			printf("OpenEventChannel: %s\n", strerror(-r));
			return r;
		}
		vm->chan_open = true;
	}
	r = iod_channel_mark(vm->chan, ++vm->seq, w, n);
	if (r >= 0)
		r = iod_channel_recv(vm->chan, &c);
	if (r < 0) {
		printf("mark batch %" PRIu64 ": %s\n", vm->seq, strerror(-r));
		return r;
	}
	if (c.seq != vm->seq || c.error != 0) {
		printf("mark batch %" PRIu64 ": completion for %" PRIu64 ": %s: %s (entry %" PRIu32
		       ")\n",
		       vm->seq, c.seq, c.name, c.message, c.entry);
		return c.error ? c.error : -EPROTO;
	}
	vm->chan_batches++;
	vm->chan_ranges += n;
	return 0;
}

/* One step of the emulated device: a few writes with the CPU, then their report. */
static int reported_step(struct reported_run *run)
{
	struct reported_vm *vm = run->vm;
	uint64_t pages = vm->size / REPORTED_PAGE;
	struct iod_range w[4];
	size_t n = 0, k = 1 + rng() % ELEMENTSOF(w);
	bool leave_out = false;

	if (vm->unreported_after != REPORTED_NONE && vm->unreported_gpa == 0)
		leave_out = vm->paused ||
			    (vm->unreported_after != IOD_MIGRATE_DROP_FINAL &&
			     run->img->full_done && run->img->rounds >= vm->unreported_after);
	if (leave_out) {
		/* A page nothing wrote: no round has it, and the full copy read it before. */
		uint64_t p = rng() % pages;

		for (uint64_t tries = 0; vm->page_state[p] != PAGE_UNTOUCHED; tries++) {
			if (tries == pages)
				die("no page left that nothing wrote");
			p = (p + 1) % pages;
		}
		rng_fill(vm->mem + p * REPORTED_PAGE + 100, 200);
		vm->page_state[p] = PAGE_UNREPORTED;
		vm->unreported_gpa = REPORTED_GPA + p * REPORTED_PAGE;
		vm->writes++;
		printf("# a write left unreported: GPA 0x%" PRIx64 " (after round %u%s)\n",
		       vm->unreported_gpa, run->img->rounds, vm->paused ? ", in the pause" : "");
	}
	for (size_t i = 0; i < k; i++) {
		uint64_t first = rng() % pages, np = 1 + rng() % (rng() % 16 == 0 ? 32 : 3);
		uint64_t head = rng() % 64, tail = rng() % 64;
		bool clash = false;

		if (first + np > pages)
			np = pages - first;
		for (uint64_t p = first; p < first + np; p++)
			clash |= vm->page_state[p] == PAGE_UNREPORTED;
		if (clash)
			continue; /* the unreported page is never written again */
		/* partial writes: the first and last bytes need not be touched */
		rng_fill(vm->mem + first * REPORTED_PAGE + head, np * REPORTED_PAGE - head - tail);
		memset(vm->page_state + first, PAGE_WRITTEN, np);
		w[n++] = (struct iod_range){.start = REPORTED_GPA + first * REPORTED_PAGE,
					    .length = np * REPORTED_PAGE};
		vm->writes++;
	}
	if (n == 0)
		return 0;
	return rng() % 4 == 0 ? reported_mark_bus(vm, w, n) : reported_mark_channel(vm, w, n);
}

static int reported_started(struct iod_migrate *m, void *userdata)
{
	struct reported_run *run = userdata;

	run->vm->bus = iod_migrate_bus(m);
	run->vm->path = iod_migrate_session_path(m);
	return 0;
}

static int reported_tick(struct iod_migrate *m, void *userdata)
{
	return reported_step(userdata);
}

/* The device writes once more right before it stops: the final round is never empty. */
static int reported_pause(struct iod_migrate *m, void *userdata)
{
	struct reported_run *run = userdata;

	run->vm->paused = true;
	return reported_step(run);
}

/* One seed. Returns the number of differing pages (0: the destination equals the source). */
static uint64_t reported_one(sd_bus *bus, uint64_t seed, uint64_t size, uint64_t unreported,
			     bool *ret_error)
{
	struct reported_vm vm = {.size = size, .unreported_after = unreported};
	struct image img = {.gpa = REPORTED_GPA, .size = size};
	struct reported_run run = {.img = &img, .vm = &vm};
	struct iod_migrate_ops hooks = {
		.started = reported_started,
		.tick = reported_tick,
		.pause = reported_pause,
	};
	struct iod_migrate_config c;
	struct iod_migrate_result res = {};
	uint64_t bad, first;
	char name[64];
	int r;

	rng_state = seed ? seed : 1;
	vm.memfd = memfd_new(size, true, &vm.mem);
	rng_fill(vm.mem, size);
	vm.page_state = calloc(size / REPORTED_PAGE, 1);
	img.p = calloc(1, size);
	if (!vm.page_state || !img.p)
		die("out of memory");

	snprintf(name, sizeof(name), "reported-%" PRIu64, seed);
	c = seed_config(name, vm.memfd, vm.mem, size, REPORTED_GPA);
	c.mode = IOD_MIGRATE_OWNER; /* memory and no device: nothing does DMA */
	c.page_size = REPORTED_PAGE;
	r = seed_migrate(bus, "", seed, &c, &hooks, &run, &res);
	*ret_error = r < 0;
	if (vm.chan_open)
		close(vm.chan);

	printf("seed %" PRIu64 ": %u dirty rounds%s%s, %" PRIu64 " bytes copied, %" PRIu64
	       " CPU writes reported in %" PRIu64 " mark batches (%" PRIu64 " ranges) and %" PRIu64
	       " MarkDirty calls (%" PRIu64 " ranges)",
	       seed, res.rounds, res.converged ? " (converged)" : "",
	       res.precise ? ", precise" : ", imprecise", res.total_bytes, vm.writes,
	       vm.chan_batches, vm.chan_ranges, vm.bus_calls, vm.bus_ranges);
	bad = print_comparison(img.p, vm.mem, size, REPORTED_GPA, &first);
	if (r >= 0 && (!res.precise || vm.writes == 0 || vm.chan_batches == 0 || vm.bus_calls == 0))
		*ret_error = true;
	if (unreported != REPORTED_NONE && vm.unreported_gpa == 0) {
		printf("FAIL: seed %" PRIu64 ": the migration ended before the write to leave "
		       "unreported\n",
		       seed);
		*ret_error = true;
	}
	if (unreported != REPORTED_NONE && bad &&
	    (bad != 1 || REPORTED_GPA + first != vm.unreported_gpa)) {
		printf("FAIL: seed %" PRIu64 ": pages other than the unreported one differ\n",
		       seed);
		*ret_error = true;
	}
	free(img.p);
	free(vm.page_state);
	munmap(vm.mem, size);
	close(vm.memfd);
	return bad;
}

/* test-migrate mock and test-migrate reported. */
static const struct seeds_mode seeds_modes[] = {
	{
		.name = "mock",
		.summary = "",
		.control = "drop-round",
		.control_zero = true,
		.lost = "round",
		.undetected = "the dropped round was not copied",
		.detected = "the dropped round is detected",
		.one = mock_one,
	},
	{
		.name = "reported",
		.summary = "reported writes: ",
		.control = "unreported",
		.control_zero = false,
		.lost = "write",
		.undetected = "a write was not reported",
		.detected = "the unreported write is detected (exactly its page differs)",
		.one = reported_one,
	},
};

/* ============================ sparse memory: holes skipped ================================ */

#define SPARSE_LOG_PAGE (UINT64_C(16) << 10) /* above the memfd's 4 KiB: the rounding shows */

static void populate(struct mock_vm *vm, uint64_t off, uint64_t length)
{
	for (uint64_t pg = off / 4096; pg * 4096 < off + length; pg++)
		vm->populated[pg] = 1;
}

/*
 * Before the migration: about 1 chunk in 8 mapped for the devices (mapping pins, and so
 * populates, the whole chunk) and filled; elsewhere the guest's CPUs wrote extents of 1-8
 * pages and single bytes (a log page partly populated). The rest is never touched.
 */
static void sparse_populate(struct mock_vm *vm)
{
	uint64_t chunks = vm->size / CHUNK, pages = vm->size / 4096;

	for (uint64_t c = 0; c < chunks; c++) {
		int s;

		if (c != chunks / 2 && rng() % 8)
			continue;
		s = free_slot(vm);
		if (s < 0 || mock_map(vm, s, vm->gpa + c * CHUNK, false) < 0)
			die("initial mapping of chunk %" PRIu64 ": %m", c);
		rng_fill(vm->mem + c * CHUNK, CHUNK);
		populate(vm, c * CHUNK, CHUNK);
	}
	for (int i = 0; i < 200; i++) {
		uint64_t pg = rng() % pages, n = 1 + rng() % 8;

		if (pg + n > pages)
			n = pages - pg;
		rng_fill(vm->mem + pg * 4096, n * 4096);
		populate(vm, pg * 4096, n * 4096);
	}
	for (int i = 0; i < 100; i++) {
		uint64_t b = rng() % vm->size;

		vm->mem[b] = (uint8_t)(1 + rng() % 255);
		populate(vm, b, 1);
	}
}

/* What the kernel says: 4 KiB pages of the memfd with data (SEEK_DATA / SEEK_HOLE). */
static uint64_t memfd_data_pages(int fd, uint64_t size)
{
	uint64_t n = 0;
	off_t d = 0, h;

	while ((d = lseek(fd, d, SEEK_DATA)) >= 0 && (uint64_t)d < size) {
		h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			die("SEEK_HOLE on the memfd: %m");
		n += ((uint64_t)MIN((uint64_t)h, size) - (uint64_t)d) / 4096;
		d = h;
	}
	if (d < 0 && errno != ENXIO)
		die("SEEK_DATA on the memfd: %m");
	return n;
}

/*
 * The devices' step, in the first round mapping nothing where the copy has yet to walk:
 * what it skips is then exactly what was never populated before the migration. A mapping
 * behind the copy fills a hole it skipped; the device writes into it at once (mock_step),
 * and only the dirty log can bring that to the destination.
 */
static int sparse_tick(struct iod_migrate *m, void *userdata)
{
	struct mock_run *run = userdata;

	run->vm->map_limit = run->img->full_done ? UINT64_MAX : run->img->pos;
	return mock_step(run->vm);
}

/* One seed: true when the destination equals the source and the skip is what it must be. */
static bool sparse_one(sd_bus *bus, uint64_t seed, uint64_t size)
{
	struct mock_vm vm;
	struct image img = {.gpa = MOCK_GPA, .size = size, .pos = MOCK_GPA};
	struct mock_run run = {.img = &img, .vm = &vm};
	struct iod_migrate_ops hooks = {
		.prepare = mock_prepare,
		.tick = sparse_tick,
		.pause = mock_pause,
	};
	const uint64_t per = SPARSE_LOG_PAGE / 4096;
	uint64_t want = 0, populated = 0, kernel, bad, first;
	struct iod_migrate_config c;
	struct iod_migrate_result res;
	char name[64];
	bool ok = true;
	int r;

	rng_state = seed ? seed : 1;
	mock_vm_setup(&vm, size, true, true);
	vm.churn_enabled = true;
	vm.log_page = SPARSE_LOG_PAGE;
	vm.populated = calloc(size / 4096, 1);
	img.p = calloc(1, size); /* a fresh destination: what is not written reads zero */
	if (!vm.populated || !img.p)
		die("out of memory");
	sparse_populate(&vm);
	for (uint64_t pg = 0; pg < size / 4096; pg++)
		populated += vm.populated[pg];
	kernel = memfd_data_pages(vm.memfd, size);
	if (kernel != populated)
		die("seed %" PRIu64 ": the memfd has %" PRIu64
		    " pages of data, the test populated %" PRIu64
		    ": the test's bookkeeping is wrong",
		    seed, kernel, populated);
	/* never populated, in whole log pages: what the first round must skip */
	for (uint64_t lp = 0; lp < size / SPARSE_LOG_PAGE; lp++) {
		bool hole = true;

		for (uint64_t i = 0; i < per; i++)
			hole = hole && !vm.populated[lp * per + i];
		want += hole ? SPARSE_LOG_PAGE : 0;
	}

	snprintf(name, sizeof(name), "sparse-%" PRIu64, seed);
	c = seed_config(name, vm.memfd, vm.mem, size, MOCK_GPA);
	c.mode = IOD_MIGRATE_ADOPT;
	c.page_size = SPARSE_LOG_PAGE;
	c.viommu = true;
	c.iommufd = vm.fd;
	c.ioas = vm.ioas;
	c.hwpts = vm.hwpt;
	c.n_hwpts = N_DEVS;
	c.converge_pages = 8;
	c.skip_holes = true;
	r = seed_migrate(bus, "sparse ", seed, &c, &hooks, &run, &res);
	if (r < 0)
		ok = false;

	printf("sparse seed %" PRIu64 ": %" PRIu64 " of %" PRIu64
	       " pages populated before the migration; first round %" PRIu64
	       " bytes copied, %" PRIu64 " skipped (never populated: %" PRIu64
	       "); %u dirty rounds, %" PRIu64 " bytes in all; %" PRIu64 " DMA writes, %" PRIu64
	       " into skipped memory (mapped %" PRIu64 " times since)",
	       seed, populated, size / 4096, img.full_bytes, img.skipped, want, res.rounds,
	       res.total_bytes, vm.writes, vm.hole_writes, vm.hole_maps);
	bad = print_comparison(img.p, vm.mem, size, MOCK_GPA, &first);
	if (bad)
		ok = false;
	if (img.skipped != want || res.skipped_bytes != want) {
		printf("FAIL: sparse seed %" PRIu64 ": the first round skipped %" PRIu64
		       " bytes (result: %" PRIu64 "), the memory never populated is %" PRIu64
		       " bytes\n",
		       seed, img.skipped, res.skipped_bytes, want);
		ok = false;
	}
	if (img.full_bytes + img.skipped != size) {
		printf("FAIL: sparse seed %" PRIu64 ": the first round copied %" PRIu64
		       " and skipped %" PRIu64 " bytes of %" PRIu64 "\n",
		       seed, img.full_bytes, img.skipped, size);
		ok = false;
	}
	if (vm.hole_writes == 0) {
		printf("FAIL: sparse seed %" PRIu64 ": no device wrote into skipped memory: no "
		       "proof (replay: test-migrate sparse --seed=%" PRIu64 ")\n",
		       seed, seed);
		ok = false;
	}
	if (!ok)
		printf("FAIL: sparse seed %" PRIu64
		       ": replay with test-migrate sparse --seed=%" PRIu64 " --verbose\n",
		       seed, seed);
	free(img.p);
	free(vm.populated);
	mock_vm_teardown(&vm);
	return ok;
}

static int cmd_sparse(int argc, char **argv)
{
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20), seeds = 1,
		 size = 64 * SZ_1M;
	unsigned failed = 0;
	sd_bus *bus = NULL;
	int c;

	static const struct option options[] = {
		{"seed", required_argument, NULL, 's'},
		{"seeds", required_argument, NULL, 'n'},
		{"size", required_argument, NULL, 'S'},
		{"verbose", no_argument, NULL, 'v'},
		{},
	};
	while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
		switch (c) {
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			seeds = strtoull(optarg, NULL, 0);
			break;
		case 'S':
			size = strtoull(optarg, NULL, 0) * SZ_1M;
			break;
		case 'v':
			verbose_rounds = true;
			break;
		default:
			return 2;
		}
	}
	if (size < 8 * CHUNK || size > IOVA_SLOTS / 4 * CHUNK) {
		fprintf(stderr, "--size: 8 to %d MiB\n", IOVA_SLOTS / 4);
		return 2;
	}
	if (iod_bus_client_open(bus_address, false, &bus) < 0)
		skip("no bus at %s", bus_address);
	printf("seeds %" PRIu64 " .. %" PRIu64 " (replay one with --seed=N)\n", seed,
	       seed + seeds - 1);
	for (uint64_t i = 0; i < seeds; i++)
		failed += !sparse_one(bus, seed + i, size);
	sd_bus_flush_close_unref(bus);
	printf("%s: sparse memory, holes skipped: %" PRIu64 " seeds, %u failed\n",
	       failed ? "FAIL" : "PASS", seeds, failed);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* =============================== the edu device =========================================== */

#define EDU_XFER 2048
#define EDU_GPA UINT64_C(0x1000000) /* IOVA = GPA, under the device's 28-bit DMA mask */

struct edu {
	int fd;
	volatile uint8_t *bar;
	uint64_t bar_size;
	uint64_t gpa, size;
	int phase; /* 0: next a read from RAM, 1: next a write to RAM */
	uint64_t writes;
	uint64_t pending_dst;
};

static void edu_find(char *addr, size_t size)
{
	const char *env = getenv("IOD_EDU_PCI");
	glob_t g;

	if (env && *env) {
		snprintf(addr, size, "%s", env);
		return;
	}
	if (glob("/sys/bus/pci/devices/*/vendor", 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			char path[512], buf[16] = "";
			FILE *f;

			f = fopen(g.gl_pathv[i], "re");
			if (!f)
				continue;
			if (!fgets(buf, sizeof(buf), f))
				buf[0] = '\0';
			fclose(f);
			if (strncmp(buf, "0x1234", 6) != 0)
				continue;
			snprintf(path, sizeof(path), "%s", g.gl_pathv[i]);
			*strrchr(path, '/') = '\0';
			snprintf(addr, size, "%s", strrchr(path, '/') + 1);
			globfree(&g);
			return;
		}
		globfree(&g);
	}
	skip("no edu device (IOD_EDU_PCI unset, none in sysfs)");
}

static int edu_open(bool cloexec)
{
	_cleanup_free_ char *path = NULL;
	char addr[64];
	int fd, r;

	if (access("/dev/iommu", F_OK) < 0)
		skip("/dev/iommu does not exist");
	edu_find(addr, sizeof(addr));
	r = iod_vfio_cdev_path(NULL, addr, &path);
	if (r < 0)
		skip("edu %s has no VFIO cdev: %s", addr, iod_strerror(r));
	fd = open(path, O_RDWR | (cloexec ? O_CLOEXEC : 0));
	if (fd < 0)
		die("open %s: %m", path);
	return fd;
}

/* Once the daemon bound and attached the device: bus mastering on, BAR0 mapped. */
static int edu_start(struct edu *e)
{
	struct vfio_region_info cfg = {.argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX};
	struct vfio_region_info bar = {.argsz = sizeof(bar), .index = VFIO_PCI_BAR0_REGION_INDEX};
	uint16_t cmd;
	void *p;

	if (ioctl(e->fd, VFIO_DEVICE_GET_REGION_INFO, &cfg) < 0 ||
	    ioctl(e->fd, VFIO_DEVICE_GET_REGION_INFO, &bar) < 0)
		return -errno;
	if (pread(e->fd, &cmd, sizeof(cmd), (off_t)cfg.offset + PCI_CMD_OFFSET) != sizeof(cmd))
		return -EIO;
	cmd |= PCI_CMD_MEMORY | PCI_CMD_MASTER;
	if (pwrite(e->fd, &cmd, sizeof(cmd), (off_t)cfg.offset + PCI_CMD_OFFSET) != sizeof(cmd))
		return -EIO;
	p = mmap(NULL, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, e->fd, (off_t)bar.offset);
	if (p == MAP_FAILED)
		return -errno;
	e->bar = p;
	e->bar_size = bar.size;
	return 0;
}

/* Without waiting: start the next transfer if the engine is idle (the DMA runs meanwhile). */
static void edu_step(struct edu *e)
{
	uint64_t pages = e->size / 4096;

	if (edu_dma_busy(e->bar))
		return;
	if (e->pending_dst) /* the last transfer wrote guest memory */
		e->writes++;
	e->pending_dst = 0;
	if (e->phase == 0) {
		edu_dma_start(e->bar, e->gpa + (rng() % pages) * 4096 + (rng() % 2) * 2048, EDU_BUF,
			      EDU_XFER, false);
		e->phase = 1;
	} else {
		e->pending_dst = e->gpa + (rng() % pages) * 4096 + (rng() % 2) * 2048;
		edu_dma_start(e->bar, EDU_BUF, e->pending_dst, EDU_XFER, true);
		e->phase = 0;
	}
}

/* The device is quiet: no transfer in flight. */
static int edu_quiesce(struct edu *e)
{
	if (!edu_dma_wait(e->bar, 60))
		return -ETIMEDOUT;
	if (e->pending_dst)
		e->writes++;
	e->pending_dst = 0;
	return 0;
}

struct edu_run {
	struct image *img; /* first: image_write() */
	struct edu *e;
};

static int edu_started_hook(struct iod_migrate *m, void *userdata)
{
	struct edu_run *run = userdata;

	return edu_start(run->e);
}

static int edu_tick(struct iod_migrate *m, void *userdata)
{
	struct edu_run *run = userdata;

	edu_step(run->e);
	return 0;
}

static int edu_pause(struct iod_migrate *m, void *userdata)
{
	struct edu_run *run = userdata;

	return edu_quiesce(run->e);
}

/*
 * Owner mode with one device passed by fd: guest memory of o->size random bytes at o->gpa in
 * a memfd, migrated into img (allocated here) with ops (image_write and print_round added),
 * run as userdata (its first member points to img). Dies if the migration fails. Returns how
 * many pages differ, the first in *ret_first.
 */
struct owner_migration {
	const char *session;
	int device_fd;
	uint64_t gpa, size;
	unsigned max_rounds;
	uint64_t max_bandwidth, drop_round;
};

static uint64_t owner_migrate(const struct owner_migration *o, struct iod_migrate_ops ops,
			      struct image *img, void *run, struct iod_migrate_result *res,
			      uint64_t *ret_first)
{
	struct iod_migrate *m = NULL;
	sd_bus *bus = NULL;
	uint64_t bad;
	uint8_t *mem;
	int memfd, r;

	if (iod_bus_client_open(bus_address, false, &bus) < 0)
		skip("no bus at %s", bus_address);
	memfd = memfd_new(o->size, true, &mem);
	rng_fill(mem, o->size);
	*img = (struct image){.gpa = o->gpa, .size = o->size, .p = calloc(1, o->size)};
	if (!img->p)
		die("out of memory");
	ops.write = image_write;
	ops.round = print_round;
	{
		struct iod_migrate_config c = {
			.session = o->session,
			.mode = IOD_MIGRATE_OWNER,
			.memfd = memfd,
			.size = o->size,
			.gpa = o->gpa,
			.mem = mem,
			.device_fds = &o->device_fd,
			.n_device_fds = 1,
			.converge_pages = 0,
			.max_rounds = o->max_rounds,
			.batch_bytes = 256 * 1024,
			.max_bandwidth = o->max_bandwidth,
			.on_daemon_restart = IOD_MIGRATE_ABORT,
			.drop_round = o->drop_round,
		};

		r = iod_migrate_new(bus, &c, &ops, run, &m);
		if (r < 0)
			die("iod_migrate_new: %s", strerror(-r));
	}
	r = iod_migrate_run(m, res);
	if (r < 0)
		die("the migration failed (%s): %s", iod_migrate_status_to_string(res->status),
		    iod_migrate_error(m));
	iod_migrate_free(m);
	bad = count_bad_pages(img->p, mem, o->size, ret_first);
	sd_bus_flush_close_unref(bus);
	return bad;
}

static int cmd_edu(int argc, char **argv)
{
	uint64_t seed = (uint64_t)time(NULL), size = 16 * SZ_1M, bad, first;
	struct edu e = {.gpa = EDU_GPA, .size = size};
	struct image img;
	struct edu_run run = {.img = &img, .e = &e};
	const struct iod_migrate_ops ops = {
		.started = edu_started_hook,
		.tick = edu_tick,
		.pause = edu_pause,
	};
	struct iod_migrate_result res;

	for (int i = 1; i < argc; i++)
		if (strncmp(argv[i], "--seed=", 7) == 0)
			seed = strtoull(argv[i] + 7, NULL, 0);
	printf("seed %" PRIu64 " (replay with --seed=%" PRIu64 ")\n", seed, seed);
	rng_state = seed ? seed : 1;
	verbose_rounds = true;

	e.fd = edu_open(true);
	bad = owner_migrate(
		&(struct owner_migration){
			.session = "edu",
			.device_fd = e.fd,
			.gpa = EDU_GPA,
			.size = size,
			.max_rounds = 3,
			.max_bandwidth = 16 * SZ_1M, /* a slow link: the DMA engine has time */
		},
		ops, &img, &run, &res, &first);
	printf("edu: %u dirty rounds, %" PRIu64 " bytes copied, %" PRIu64
	       " DMA writes into guest memory during the migration, precise: %s\n",
	       res.rounds, res.total_bytes, e.writes, res.precise ? "yes" : "no (fallback)");
	if (res.precise)
		die("the emulated VT-d cannot track dirty pages: the result must say imprecise");
	if (e.writes == 0)
		die("the device wrote nothing during the migration: no proof");
	if (bad)
		die("%" PRIu64 " pages differ, the first at GPA 0x%" PRIx64
		    " (replay: --seed=%" PRIu64 ")",
		    bad, EDU_GPA + first, seed);
	printf("PASS: edu DMA during migration: the destination equals the source\n");
	return EXIT_SUCCESS;
}

/* ============================ a device that logs its own DMA ============================ */

#define DEVLOG_GPA (UINT64_C(1) << 30)

struct devlog_run {
	struct image *img; /* first: image_write() */
	unsigned dev; /* the test device (testdev.h) */
	uint64_t size;
	uint64_t writes;
	bool started;
};

static int devlog_started(struct iod_migrate *m, void *userdata)
{
	struct devlog_run *run = userdata;

	run->started = true;
	return 0;
}

/* A few device writes of random length and value at random guest addresses (IOVA = GPA). */
static int devlog_tick(struct iod_migrate *m, void *userdata)
{
	struct devlog_run *run = userdata;

	if (!run->started)
		return 0;
	for (int i = 0; i < 4; i++) {
		uint64_t len = 1 + rng() % (2 * 4096), off = rng() % (run->size - len);
		int r = testdev_dma_write(run->dev, DEVLOG_GPA + off, len, (uint8_t)rng());

		if (r < 0)
			die("testdev%u: DMA write at GPA 0x%" PRIx64 ": %s", run->dev,
			    DEVLOG_GPA + off, strerror(-r));
		run->writes++;
	}
	return 0;
}

/* The device's writes are synchronous: nothing is in flight at the pause. */
static int devlog_pause(struct iod_migrate *m, void *userdata)
{
	return 0;
}

static int cmd_devlog(int argc, char **argv)
{
	uint64_t seed = (uint64_t)time(NULL), size = 16 * SZ_1M, drop_round = 0, bad, first;
	struct image img;
	struct devlog_run run = {.img = &img, .dev = 0, .size = size};
	const struct iod_migrate_ops ops = {
		.started = devlog_started,
		.tick = devlog_tick,
		.pause = devlog_pause,
	};
	struct iod_migrate_result res;
	int fd;

	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--seed=", 7) == 0)
			seed = strtoull(argv[i] + 7, NULL, 0);
		else if (strncmp(argv[i], "--drop-round=", 13) == 0)
			drop_round = strtoull(argv[i] + 13, NULL, 0);
		else
			die("devlog: unknown argument %s", argv[i]);
	}
	printf("seed %" PRIu64 " (replay with --seed=%" PRIu64 ")\n", seed, seed);
	rng_state = seed ? seed : 1;
	verbose_rounds = true;

	if (access("/dev/iommu", F_OK) < 0)
		skip("/dev/iommu does not exist");
	fd = testdev_open(run.dev);
	if (fd < 0)
		die("testdev%u: %s (the guest loads iodirty-testdev.ko in the mock shapes)",
		    run.dev, strerror(-fd));
	bad = owner_migrate(
		&(struct owner_migration){
			.session = "devlog",
			.device_fd = fd,
			.gpa = DEVLOG_GPA,
			.size = size,
			.max_rounds = 4,
			.max_bandwidth = 32 * SZ_1M,
			.drop_round = drop_round,
		},
		ops, &img, &run, &res, &first);
	printf("devlog: %u dirty rounds, %" PRIu64 " bytes copied, %" PRIu64
	       " device writes during the migration, precise: %s: %s\n",
	       res.rounds, res.total_bytes, run.writes, res.precise ? "yes" : "no",
	       bad ? "MISMATCH" : "destination == source");
	if (run.writes == 0)
		die("the device wrote nothing during the migration: no proof");
	if (!res.precise)
		die("a device logging its own DMA is exact: the result must say precise");
	if (drop_round) {
		if (!bad)
			die("round %" PRIu64 " was not copied, yet the destination equals the "
			    "source: the check cannot fail",
			    drop_round);
		printf("PASS: negative control: the round not copied is caught (%" PRIu64
		       " pages differ)\n",
		       bad);
	} else {
		if (bad)
			die("%" PRIu64 " pages differ, the first at GPA 0x%" PRIx64
			    " (replay: --seed=%" PRIu64 ")",
			    bad, DEVLOG_GPA + first, seed);
		printf("PASS: device DMA logging during migration: the destination equals the "
		       "source\n");
	}
	close(fd);
	return EXIT_SUCCESS;
}

/* ============================ the orchestrator as a program ================================= */

static const char *self_path(void)
{
	static char buf[4096];
	ssize_t l = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

	if (l < 0)
		die("readlink /proc/self/exe: %m");
	buf[l] = '\0';
	return buf;
}

static const char *migrate_binary(void)
{
	const char *e = getenv("IODIRTY_MIGRATE");

	return e && *e ? e : "iodirty-migrate";
}

static void exec_migrate(char **args)
{
	fflush(stdout);
	execvp(args[0], args);
	die("exec %s: %m", args[0]);
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		die("out of memory");
	va_end(ap);
	return s;
}

/* iodirty-migrate on the mock machine with its workload; with resume, the session's own set-up
 * (adopt, HWPTs, mappings) is the earlier run's. Returns the number of arguments. */
static size_t mock_migrate_args(const struct mock_vm *vm, const char *session, bool resume,
				bool sparse, char **args)
{
	size_t n = 0;

	args[n++] = (char *)migrate_binary();
	args[n++] = xasprintf("--address=%s", bus_address);
	args[n++] = xasprintf("--session=%s", session);
	if (resume) {
		args[n++] = "--resume";
	} else {
		args[n++] = "--adopt";
		args[n++] = xasprintf("--iommufd-fd=%d", vm->fd);
		args[n++] = xasprintf("--ioas=%u", vm->ioas);
		for (int i = 0; i < N_DEVS; i++)
			args[n++] = xasprintf("--hwpt=%u", vm->hwpt[i]);
		args[n++] = "--viommu";
		for (int s = 0; s < IOVA_SLOTS; s++)
			if (vm->maps[s].mapped)
				args[n++] = xasprintf("--map=0x%" PRIx64 ":0x%" PRIx64
						      ":0x%" PRIx64,
						      vm->maps[s].iova, vm->maps[s].gpa, CHUNK);
	}
	args[n++] = xasprintf("--memory-fd=%d", vm->memfd);
	args[n++] = xasprintf("--size=%" PRIu64, vm->size);
	args[n++] = xasprintf("--gpa=0x%" PRIx64, vm->gpa);
	args[n++] = xasprintf("--workload=%s workload-mock --iommufd-fd=%d --ioas=%u --hwpts=%u,%u "
			      "--memfd=%d --size=%" PRIu64 "%s",
			      self_path(), vm->fd, vm->ioas, vm->hwpt[0], vm->hwpt[1], vm->memfd,
			      vm->size, sparse ? " --sparse" : "");
	return n;
}

static int cmd_demo_mock(int argc, char **argv)
{
	char *args[IOVA_SLOTS + 64];
	struct mock_vm vm;
	size_t n;
	uint64_t size = 32 * SZ_1M;
	bool sparse = argc > 1 && strcmp(argv[1], "--sparse") == 0;

	if (sparse) {
		argv++;
		argc--;
	}
	rng_state = (uint64_t)time(NULL) | 1;
	mock_vm_setup(&vm, size, false, sparse);
	if (sparse) {
		/* most of the memory never populated: the first round skips it */
		vm.populated = calloc(size / 4096, 1);
		if (!vm.populated)
			die("out of memory");
		sparse_populate(&vm);
	} else {
		mock_initial_maps(&vm);
	}
	fprintf(stderr,
		"demo: mock machine: iommufd fd %d, IOAS %u, mock devices on dirty HWPTs %u and "
		"%u, %" PRIu64 " MiB of guest memory at GPA 0x%" PRIx64 " in %u IOVA mappings\n",
		vm.fd, vm.ioas, vm.hwpt[0], vm.hwpt[1], size >> 20, vm.gpa, vm.n_mapped);

	n = mock_migrate_args(&vm, "demo-mock", false, sparse, args);
	args[n++] = "--dest=/tmp/demo-mock.img"; /* the caller's --dest comes later and wins */
	if (sparse) {
		/* a destination holding old bytes: where the source has holes it must read zero
		 * after the migration, though they are not sent (iodirty-migrate clears it) */
		uint8_t *junk = malloc(size);
		int fd = open("/tmp/demo-mock-sparse.img", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0600);

		if (!junk || fd < 0)
			die("/tmp/demo-mock-sparse.img: %m");
		rng_fill(junk, size);
		if (write(fd, junk, size) != (ssize_t)size)
			die("/tmp/demo-mock-sparse.img: %m");
		close(fd);
		free(junk);
		args[n++] = "--dest=/tmp/demo-mock-sparse.img";
	}
	for (int i = 1; i < argc && n < ELEMENTSOF(args) - 1; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	exec_migrate(args);
	return EXIT_FAILURE;
}

/* The workload of demo-mock: the same device writes and vIOMMU churn, until SIGTERM. */
static int cmd_workload_mock(int argc, char **argv)
{
	struct mock_vm vm = {.gpa = MOCK_GPA, .map_limit = UINT64_MAX, .next_slot = -1};
	unsigned h0 = 0, h1 = 0;
	bool sparse = false;
	int r;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strncmp(a, "--iommufd-fd=", 13) == 0)
			vm.fd = atoi(a + 13);
		else if (strncmp(a, "--ioas=", 7) == 0)
			vm.ioas = (uint32_t)atoi(a + 7);
		else if (strncmp(a, "--hwpts=", 8) == 0)
			sscanf(a + 8, "%u,%u", &h0, &h1);
		else if (strncmp(a, "--memfd=", 8) == 0)
			vm.memfd = atoi(a + 8);
		else if (strncmp(a, "--size=", 7) == 0)
			vm.size = strtoull(a + 7, NULL, 0);
		else if (strcmp(a, "--sparse") == 0)
			sparse = true;
	}
	vm.hwpt[0] = h0;
	vm.hwpt[1] = h1;
	vm.mock_page = (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	rng_state = (uint64_t)getpid() * 7919 + 1;
	catch_stop();
	if (iod_iommufd_adopt(vm.fd, &vm.ictx) < 0)
		die("workload: not an iommufd: %d", vm.fd);
	vm.mem = mmap(NULL, vm.size, PROT_READ | PROT_WRITE, MAP_SHARED, vm.memfd, 0);
	if (vm.mem == MAP_FAILED)
		die("workload: mmap: %m");
	/*
	 * The initial mappings are in the IOAS already: churn here only what this workload
	 * mapped itself (fresh slots), so that it never unmaps what it does not know.
	 * Writes go through the mappings it knows, found by asking the kernel nothing: the
	 * workload learns them from the session's Map events it makes.
	 */
	r = iod_bus_client_open(bus_address, false, &vm.bus);
	if (r < 0)
		die("workload: bus: %s", strerror(-r));
	vm.path = getenv("IODIRTY_SESSION_PATH");
	if (!vm.path)
		die("workload: IODIRTY_SESSION_PATH is not set");
	/* Map the whole guest memory once more at fresh IOVA slots: the device's own window.
	 * With --sparse every fourth chunk only: mapping pins, so fills holes of the memory while
	 * the first round walks it, and churn fills more later. Reported in one MapBatch: one
	 * bus round trip, so that the device writes while the first round is still copying
	 * (with a Map per chunk it often did not write before the migration converged). */
	int batch[IOVA_SLOTS], n_batch = 0;

	for (uint64_t c = 0; c < vm.size / CHUNK; c++) {
		int s = -1;

		if (sparse && c % 4)
			continue;
		for (int t = IOVA_SLOTS - 1; t >= 0 && s < 0; t--)
			if (iod_ioas_map(vm.ictx, vm.ioas, vm.mem + c * CHUNK, CHUNK,
					 IOVA_SLOT_BASE + (uint64_t)t * CHUNK,
					 IOD_MAP_READ | IOD_MAP_WRITE) == 0)
				s = t;
		if (s < 0)
			die("workload: no free IOVA slot");
		vm.maps[s] = (struct mock_map){.iova = IOVA_SLOT_BASE + (uint64_t)s * CHUNK,
					       .gpa = vm.gpa + c * CHUNK,
					       .mapped = true};
		vm.n_mapped++;
		batch[n_batch++] = s;
	}
	if (bus_map_batch(&vm, batch, n_batch) < 0)
		die("workload: MapBatch");
	vm.churn_enabled = true;
	vm.tolerate_bus_errors = true;
	while (!stop_requested) {
		r = mock_step(&vm);
		if (r < 0)
			die("workload: %s", strerror(-r));
		usleep(20000); /* a dirty rate the demo's link outruns: rounds converge */
	}
	printf("workload: stopped after %" PRIu64 " DMA writes and %" PRIu64
	       " map/unmap events (%" PRIu64 " of them on the event channel)\n",
	       vm.writes, vm.churn, vm.chan_events);
	return EXIT_SUCCESS;
}

static int cmd_demo_edu(int argc, char **argv)
{
	uint64_t size = 16 * SZ_1M;
	char *args[64];
	size_t n = 0;
	uint8_t *mem;
	int fd, memfd;

	rng_state = (uint64_t)time(NULL) | 1;
	fd = edu_open(false);
	memfd = memfd_new(size, false, &mem);
	rng_fill(mem, size);
	fprintf(stderr,
		"demo: edu device (VFIO cdev fd %d) and %" PRIu64
		" MiB of guest memory at GPA 0x%" PRIx64 " (owner mode, IOVA = GPA)\n",
		fd, size >> 20, EDU_GPA);
	args[n++] = (char *)migrate_binary();
	args[n++] = xasprintf("--address=%s", bus_address);
	args[n++] = "--session=demo-edu";
	args[n++] = xasprintf("--memory-fd=%d", memfd);
	args[n++] = xasprintf("--size=%" PRIu64, size);
	args[n++] = xasprintf("--gpa=0x%" PRIx64, EDU_GPA);
	args[n++] = xasprintf("--device-fd=%d", fd);
	args[n++] = "--dest=/tmp/demo-edu.img";
	args[n++] = xasprintf("--workload=%s workload-edu --device-fd=%d --size=%" PRIu64,
			      self_path(), fd, size);
	for (int i = 1; i < argc && n < ELEMENTSOF(args) - 1; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	exec_migrate(args);
	return EXIT_FAILURE;
}

static int cmd_workload_edu(int argc, char **argv)
{
	struct edu e = {.gpa = EDU_GPA, .size = 16 * SZ_1M};
	int r;

	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--device-fd=", 12) == 0)
			e.fd = atoi(argv[i] + 12);
		else if (strncmp(argv[i], "--size=", 7) == 0)
			e.size = strtoull(argv[i] + 7, NULL, 0);
	}
	rng_state = (uint64_t)getpid() * 7919 + 1;
	catch_stop();
	r = edu_start(&e);
	if (r < 0)
		die("workload: edu: %s", strerror(-r));
	while (!stop_requested) {
		edu_step(&e);
		usleep(5000);
	}
	r = edu_quiesce(&e);
	printf("workload: edu stopped after %" PRIu64 " DMA writes into guest memory\n", e.writes);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* =============================== resuming a migration ===================================== */

#define RESUME_SESSION "resume-mock"
#define EXIT_DEST_FAILED 7 /* iodirty-migrate(1) */

/* Run args in its own process group (its workload child joins it), stdout to out (or
 * inherited); keep_fd is inherited, every other close-on-exec descriptor is not. */
static pid_t spawn(char **args, int keep_fd, const char *out)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork: %m");
	if (pid == 0) {
		setpgid(0, 0);
		if (keep_fd >= 0 && fcntl(keep_fd, F_SETFD, 0) < 0)
			_exit(127);
		if (out) {
			int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);

			if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0)
				_exit(127);
		}
		execvp(args[0], args);
		_exit(127);
	}
	setpgid(pid, pid);
	return pid;
}

static int wait_exit(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid: %m");
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* The orchestrator is dead: stop what is left of its process group (its workload) the way
 * the orchestrator would, with SIGTERM (it finishes its step: no write without its dirty
 * mark), and reap it (this process is a child subreaper). */
static void stop_group(pid_t pgid)
{
	if (kill(-pgid, SIGTERM) < 0 && errno != ESRCH)
		die("kill: %m");
	while (waitpid(-pgid, NULL, 0) >= 0 || errno == EINTR)
		;
}

static uint64_t session_u64(sd_bus *bus, const char *path, const char *name)
{
	uint64_t v = 0;

	if (sd_bus_get_property_trivial(bus, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE, name, NULL,
					't', &v) < 0)
		return UINT64_MAX;
	return v;
}

/* The resumed run's JSON: the kind of its first round, the bytes it copied, its verification. */
static void resumed_rounds(const char *file, char *kind, size_t kind_size, uint64_t *ret_bytes,
			   char *verify, size_t verify_size)
{
	struct json_object *o = NULL, *rounds, *first, *v;
	char *text = NULL, *start;
	size_t len = 0;
	FILE *f = fopen(file, "re");

	/* the workload shares the run's stdout: the JSON object is the line that opens with { */
	if (f && getdelim(&text, &len, '\0', f) > 0) {
		start = text[0] == '{' ? text : strstr(text, "\n{");
		if (start)
			o = json_tokener_parse(start + (start[0] == '\n'));
	}
	if (f)
		fclose(f);
	free(text);
	if (!o)
		die("the resumed run printed no JSON (%s)", file);
	if (!json_object_object_get_ex(o, "rounds", &rounds) ||
	    json_object_array_length(rounds) == 0 ||
	    !(first = json_object_array_get_idx(rounds, 0)) ||
	    !json_object_object_get_ex(first, "kind", &v))
		die("the resumed run's JSON has no rounds");
	snprintf(kind, kind_size, "%s", json_object_get_string(v));
	if (!json_object_object_get_ex(o, "total_bytes", &v))
		die("the resumed run's JSON has no total_bytes");
	*ret_bytes = json_object_get_uint64(v);
	snprintf(verify, verify_size, "%s",
		 json_object_object_get_ex(o, "verification", &v) && v ? json_object_get_string(v)
								       : "none");
	json_object_put(o);
}

static void compare_image(const struct mock_vm *vm, const char *image, const char *what)
{
	uint64_t bad, first;
	struct stat st;
	uint8_t *p;
	int fd = open(image, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size != vm->size)
		die("%s: %s is missing or has the wrong size", what, image);
	p = mmap(NULL, vm->size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap %s: %m", image);
	bad = count_bad_pages(p, vm->mem, vm->size, &first);
	munmap(p, vm->size);
	close(fd);
	if (bad)
		die("%s: %" PRIu64
		    " pages of %s differ from the source, the first at offset 0x%" PRIx64,
		    what, bad, image, first);
	printf("%s: %s equals the source, byte for byte\n", what, image);
}

/* A receiver (iodirty-migrate --receive) on a socket pair; *ret_send is the sender's end. */
static pid_t start_receiver(const char *image, bool resume, const char *die_after, int *ret_send)
{
	char *args[8];
	size_t n = 0;
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %m");
	args[n++] = (char *)migrate_binary();
	args[n++] = xasprintf("--receive=%s", image);
	args[n++] = xasprintf("--dest-fd=%d", sv[1]);
	if (resume)
		args[n++] = "--resume";
	if (die_after)
		args[n++] = xasprintf("--test-receiver-die-after=%s", die_after);
	args[n] = NULL;
	pid = spawn(args, sv[1], NULL);
	close(sv[1]);
	*ret_send = sv[0];
	return pid;
}

/*
 * test-migrate resume-mock kept|fresh|kill|partial: a failed attempt is not a lost attempt.
 *   kept   the receiver (on a socket) dies after confirming 3 rounds: the orchestrator exits 7
 *          with the session tracking; --resume to a receiver resuming into the same image
 *          sends only what is dirty since (no full round), and the image equals the source.
 *   fresh  the same failure, then --resume to a new receiver: it says it kept nothing, so a
 *          full round goes first; the image equals the source.
 *   kill   the orchestrator, copying to an image file, is killed (SIGKILL) while a round is
 *          harvested and not acknowledged; --resume to the same file sends what is dirty
 *          since the last acknowledged round, and the file equals the source.
 */
/*
 * resume-mock partial: after the first attempt failed, a second one resumes to a new image
 * file and is killed while its full round is half written. The image then has the memory's
 * size but not the memory: a third attempt to it must copy everything again (its marker,
 * IMAGE.iodirty, was never written), not only what is dirty.
 */
static void partial_attempt(struct mock_vm *vm, const char *image)
{
	char *args[IOVA_SLOTS + 64];
	uint64_t deadline = iod_now_usec() + 120 * UINT64_C(1000000);
	struct stat st;
	pid_t sender;
	size_t n;
	int rc;

	unlink(image); /* the receiver's image of the first attempt, and its marker */
	unlink(xasprintf("%s.iodirty", image));
	n = mock_migrate_args(vm, RESUME_SESSION, true, false, args);
	args[n++] = xasprintf("--dest=%s", image);
	args[n++] = "--max-bandwidth=2M"; /* the full round takes about 16 s */
	args[n++] = "--quiet";
	args[n] = NULL;
	sender = spawn(args, -1, NULL);
	/* kill it once the image has some of the full round, not all of it */
	while (stat(image, &st) < 0 || st.st_blocks < 2048 / 512 * 1024) {
		if (waitpid(sender, NULL, WNOHANG) != 0)
			die("the second attempt ended before its full round was half written");
		if (iod_now_usec() > deadline)
			die("the second attempt wrote nothing");
		usleep(1000);
	}
	kill(sender, SIGKILL);
	rc = wait_exit(sender);
	stop_group(sender);
	printf("second attempt: resumed to a new image, killed (status %d) with %" PRIu64
	       " of %" PRIu64 " bytes of its full round written\n",
	       rc, (uint64_t)st.st_blocks * 512, vm->size);
}

static int cmd_resume_mock(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	const char *image = "/tmp/resume-mock.img", *json = "/tmp/resume-mock.json";
	char *args[IOVA_SLOTS + 64], kind[16], verify[128];
	uint64_t size = 32 * SZ_1M, bytes;
	struct mock_vm vm;
	pid_t sender, receiver = 0;
	int fd = -1, rc, rrc = 0;
	size_t n;

	if (strcmp(mode, "kept") != 0 && strcmp(mode, "fresh") != 0 && strcmp(mode, "kill") != 0 &&
	    strcmp(mode, "partial") != 0)
		die("usage: test-migrate resume-mock kept|fresh|kill|partial");
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		die("PR_SET_CHILD_SUBREAPER: %m");
	rng_state = (uint64_t)time(NULL) | 1;
	mock_vm_setup(&vm, size, false, false);
	mock_initial_maps(&vm);
	unlink(image);

	/* the first attempt */
	n = mock_migrate_args(&vm, RESUME_SESSION, false, false, args);
	args[n++] = "--converge-pages=0"; /* rounds go on until the failure */
	args[n++] = "--max-rounds=100000";
	if (strcmp(mode, "kill") == 0) {
		sd_bus *bus = NULL;
		char *path = NULL;
		uint64_t rounds = 0, pending = 0, deadline;

		args[n++] = xasprintf("--dest=%s", image);
		args[n++] = "--max-bandwidth=2M";
		args[n++] = "--quiet";
		args[n] = NULL;
		sender = spawn(args, -1, NULL);
		if (iod_bus_client_open(bus_address, false, &bus) < 0)
			die("bus");
		/* kill it while a dirty round is harvested and not acknowledged: mid-round */
		deadline = iod_now_usec() + 120 * UINT64_C(1000000);
		for (;;) {
			if (!path) {
				sd_bus_message *reply = NULL;
				const char *p;

				if (sd_bus_call_method(bus, IOD_BUS_NAME, IOD_MANAGER_PATH,
						       IOD_MANAGER_INTERFACE, "GetSession", NULL,
						       &reply, "s", RESUME_SESSION) >= 0 &&
				    sd_bus_message_read(reply, "o", &p) >= 0)
					path = strdup(p);
				sd_bus_message_unref(reply);
			}
			if (path) {
				rounds = session_u64(bus, path, "Rounds");
				pending = session_u64(bus, path, "PendingRound");
				if (rounds != UINT64_MAX && rounds >= 3 && pending &&
				    pending != UINT64_MAX)
					break;
			}
			if (waitpid(sender, NULL, WNOHANG) != 0)
				die("the first attempt ended before it could be killed mid-round");
			if (iod_now_usec() > deadline)
				die("no round was ever pending");
			usleep(500);
		}
		kill(sender, SIGKILL);
		rc = wait_exit(sender);
		stop_group(sender);
		printf("first attempt: killed (status %d) while round %" PRIu64
		       " was harvested and not acknowledged (%" PRIu64 " rounds harvested)\n",
		       rc, pending, rounds);
		pending = session_u64(bus, path, "PendingRound");
		printf("the session is left with round %" PRIu64 " pending\n", pending);
		free(path);
		sd_bus_flush_close_unref(bus);
	} else {
		receiver = start_receiver(image, false, "3", &fd);
		args[n++] = xasprintf("--dest-fd=%d", fd);
		args[n++] = "--max-bandwidth=16M";
		args[n++] = "--quiet";
		args[n] = NULL;
		sender = spawn(args, fd, NULL);
		close(fd);
		rc = wait_exit(sender);
		rrc = wait_exit(receiver);
		stop_group(sender);
		printf("first attempt: the receiver died after 3 confirmed rounds (status %d), "
		       "iodirty-migrate exited %d\n",
		       rrc, rc);
		if (rc != EXIT_DEST_FAILED)
			die("iodirty-migrate exited %d, not %d (destination failed, session kept)",
			    rc, EXIT_DEST_FAILED);
		if (strcmp(mode, "fresh") == 0)
			unlink(image); /* the new destination has nothing */
		if (strcmp(mode, "partial") == 0) {
			partial_attempt(&vm, image);
			receiver = 0; /* waited for above; the next attempts write a file */
			rrc = 0;
		}
	}

	/* the resumed attempt */
	n = mock_migrate_args(&vm, RESUME_SESSION, true, false, args);
	args[n++] = "--verify";
	args[n++] = "--json";
	if (strcmp(mode, "kill") == 0 || strcmp(mode, "partial") == 0) {
		args[n++] = xasprintf("--dest=%s", image);
		args[n] = NULL;
		sender = spawn(args, -1, json);
	} else {
		receiver = start_receiver(image, strcmp(mode, "kept") == 0, NULL, &fd);
		args[n++] = xasprintf("--dest-fd=%d", fd);
		args[n] = NULL;
		sender = spawn(args, fd, json);
		close(fd);
	}
	rc = wait_exit(sender);
	if (receiver)
		rrc = wait_exit(receiver);
	stop_group(sender);
	resumed_rounds(json, kind, sizeof(kind), &bytes, verify, sizeof(verify));
	printf("resumed attempt: iodirty-migrate exited %d, receiver %d; its first round: %s, "
	       "%" PRIu64 " bytes copied in all (memory: %" PRIu64 "); verification: %s\n",
	       rc, rrc, kind, bytes, size, verify);
	if (rc != 0 || rrc != 0) {
		struct json_object *o = json_object_from_file(json), *e;

		if (o && json_object_object_get_ex(o, "error", &e))
			printf("resumed attempt: %s\n", json_object_get_string(e));
		json_object_put(o);
		die("the resumed migration failed");
	}
	/* a receiver on a socket tells the sender what its checksum check found */
	bool to_file = strcmp(mode, "kill") == 0 || strcmp(mode, "partial") == 0;
	bool want_full = strcmp(mode, "fresh") == 0 || strcmp(mode, "partial") == 0;

	if (strcmp(verify,
		   to_file ? "equal" : "the receiver's image matches the source's checksum") != 0)
		die("the resumed run's verification says \"%s\"", verify);
	if (want_full ? strcmp(kind, "full") != 0 : strcmp(kind, "dirty") != 0 || bytes >= size)
		die("the resumed run to a %s destination began with a %s round, %" PRIu64
		    " bytes copied",
		    want_full ? "new" : "kept", kind, bytes);
	compare_image(&vm, image, "resume");
	printf("PASS: resume-mock %s: nothing was lost\n", mode);
	unlink(image);
	unlink(json);
	return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	bus_address = getenv("IOD_BUS_ADDRESS");
	if (argc < 2) {
		fprintf(stderr,
			"usage: test-migrate mock|sparse|reported|edu|devlog|demo-mock|demo-edu [OPTIONS]\n");
		return 2;
	}
	if (!bus_address || !*bus_address)
		skip("IOD_BUS_ADDRESS is not set: run under guest-migrate.sh");
	argv++;
	argc--;
	for (size_t i = 0; i < ELEMENTSOF(seeds_modes); i++)
		if (strcmp(argv[0], seeds_modes[i].name) == 0)
			return seeds_run(&seeds_modes[i], argc, argv);
	if (strcmp(argv[0], "edu") == 0)
		return cmd_edu(argc, argv);
	if (strcmp(argv[0], "devlog") == 0)
		return cmd_devlog(argc, argv);
	if (strcmp(argv[0], "sparse") == 0)
		return cmd_sparse(argc, argv);
	if (strcmp(argv[0], "demo-mock") == 0)
		return cmd_demo_mock(argc, argv);
	if (strcmp(argv[0], "workload-mock") == 0)
		return cmd_workload_mock(argc, argv);
	if (strcmp(argv[0], "demo-edu") == 0)
		return cmd_demo_edu(argc, argv);
	if (strcmp(argv[0], "workload-edu") == 0)
		return cmd_workload_edu(argc, argv);
	if (strcmp(argv[0], "resume-mock") == 0)
		return cmd_resume_mock(argc, argv);
	fprintf(stderr, "unknown command %s\n", argv[0]);
	return 2;
}
