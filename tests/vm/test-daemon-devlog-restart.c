/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A device that logs its own DMA survives a restart of iodirtyd through the fd store with
 * nothing lost, on the guest's real kernel: the test device of tests/vm/testdev (testdev0,
 * DMA logging over a software bitmap) in an owner session with guest memory in a memfd,
 * attached by fd. Run by guest-fdstore.sh, which starts the daemon under fdstore-harness.
 *
 * For each case (no vIOMMU: IOVA = GPA, one mapping; a vIOMMU: five small mappings, IOVA
 * far from GPA and in reverse order) x (SIGKILL, SIGTERM) x (pages A acknowledged, harvested
 * but not acknowledged, not harvested):
 *  - Start; the device writes pages A; A's round is exact (when harvested);
 *  - the device writes pages B; the daemon is killed, and the harness holds it down;
 *  - with no daemon running the device still logs, and writes pages C: on this kernel
 *    every such write fails with EFAULT and changes nothing (the IOAS takes guest memory
 *    from the address space of the daemon that mapped it, and no IOMMU domain pins it
 *    for this emulated device); a write that works must be in the first round;
 *  - the harness starts a new instance, which restores the session from the fd store:
 *    the session is tracking, the device is DirtySource "device-log", and the device logs
 *    again over the same ranges as before (its debugfs state says so); the device retries
 *    C, which lands (the new instance mapped the memory again);
 *  - the first round after the restart holds every page written and not acknowledged
 *    before (B, C, and A unless acknowledged), and is exactly every mapped page: the
 *    daemon cannot know what the device logged while it was away, and says so in the man
 *    page ("every mapped page counts as dirty once"); its Precise stays true (the man page:
 *    the bits of a device log are exact), and the Harvest reply says the same;
 *  - the round after is exactly the pages the device wrote since (D), then a round is
 *    empty.
 * A round that was harvested and not acknowledged is still pending after the restart
 * (PendingRound), and the first Harvest takes it in.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon-test.h"
#include "fdstore-test.h"
#include "iodirty.h"
#include "testdev.h"

#define SZ_1M (UINT64_C(1) << 20)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define GPA_BASE (UINT64_C(1) << 30)
#define MEM_SIZE (16 * SZ_1M)

/* With a vIOMMU: N_MAPS mappings of MAP_PAGES pages, 2 MiB apart in IOVA, reversed in GPA. */
#define N_MAPS 5
#define MAP_PAGES 8

static sd_bus *bus;
static uint8_t *mem; /* the test's view of the guest memory memfd */
static int memfd = -EBADF;
static pid_t daemon_pid;
static unsigned starts = 1;

struct mapping {
	uint64_t iova, gpa, length;
};

/* A DMA write of the device: n pages from page of mapping m. */
struct write {
	unsigned m, page, n;
};

struct layout {
	const char *name;
	bool viommu;
	struct mapping maps[N_MAPS];
	unsigned n_maps;
	/* A before the first harvest, B before the kill, C while the daemon is down, D after
	 * the first round after the restart; each ends with n = 0 */
	struct write a[4], b[4], c[4], d[4];
};

static struct layout flat = {
	.name = "flat",
	.maps = {{GPA_BASE, GPA_BASE, MEM_SIZE}},
	.n_maps = 1,
	.a = {{0, 0, 1}, {0, 17, 1}, {0, MEM_SIZE / LOG_PAGE - 1, 1}},
	.b = {{0, 1, 2}, {0, 100, 1}, {0, 17, 1}},
	.c = {{0, 200, 1}, {0, 2047, 1}},
	.d = {{0, 17, 1}, {0, 300, 3}},
};

static struct layout viommu = {
	.name = "viommu",
	.viommu = true,
	.n_maps = N_MAPS,
	.a = {{0, 0, 1}, {4, 7, 1}},
	.b = {{1, 2, 2}, {3, 5, 1}, {0, 0, 1}},
	.c = {{2, 1, 1}, {4, 3, 1}},
	.d = {{0, 0, 1}, {2, 6, 2}},
};

static void viommu_layout(void)
{
	for (unsigned i = 0; i < N_MAPS; i++)
		viommu.maps[i] = (struct mapping){
			.iova = UINT64_C(0x10000000) + i * 2 * SZ_1M,
			.gpa = GPA_BASE + (N_MAPS - 1 - i) * SZ_1M,
			.length = MAP_PAGES * LOG_PAGE,
		};
}

enum first_round {
	A_ACKNOWLEDGED,
	A_PENDING, /* harvested, not acknowledged */
	A_NOT_HARVESTED,
};

static const char *first_round_name(enum first_round a)
{
	return a == A_ACKNOWLEDGED ? "A acknowledged"
	       : a == A_PENDING	   ? "A harvested, not acknowledged"
				   : "A not harvested";
}

static void print_status(void)
{
	printf("harness: %s\n", harness("status"));
}

#define scall(spath, member, types, ...) \
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, member, NULL, types, ##__VA_ARGS__))

static void want_init(struct dt_pageset *set)
{
	dt_pageset_init(set, GPA_BASE + MEM_SIZE, LOG_SHIFT);
}

/* One Harvest round read from the log memfd; acknowledged with ack. Its number. */
static uint64_t harvest(const char *spath, struct dt_pageset *set, bool ack, bool *ret_precise)
{
	struct dt_round round = dt_harvest(bus, spath, "Harvest", GPA_BASE + MEM_SIZE, LOG_SHIFT,
					   set);

	if (ack)
		dt_acknowledge(bus, spath, round.nr);
	*ret_precise = round.precise;
	return round.nr;
}

/* got must equal want, page for page; what names want's pages in a message. */
static void expect_pages(const struct dt_pageset *got, const struct dt_pageset *want,
			 const char *round, const char *what)
{
	for (uint64_t p = 0; p < got->npages; p++)
		dt_assert(dt_pageset_test(got, p) == dt_pageset_test(want, p),
			  "%s: GPA page 0x%" PRIx64 " is %s the round, but is %s", round,
			  p << LOG_SHIFT, dt_pageset_test(got, p) ? "in" : "not in",
			  dt_pageset_test(want, p) ? what : "not that");
}

/* The next round must be exactly want, precise, and is acknowledged. */
static void expect_round(const char *spath, const struct dt_pageset *want, const char *round)
{
	struct dt_pageset got;
	bool precise;

	(void)harvest(spath, &got, true, &precise);
	dt_assert(precise, "%s: the round is not precise", round);
	expect_pages(&got, want, round, "written");
	printf("  %s: %" PRIu64 " pages, exact\n", round, dt_pageset_count(&got));
	free(got.bits);
}

/* The device writes each of w (until n = 0): check the memfd, add the pages to sets. */
static void dma(const struct layout *l, const struct write *w, uint8_t byte,
		struct dt_pageset *set1, struct dt_pageset *set2)
{
	for (; w->n; w++) {
		const struct mapping *m = &l->maps[w->m];
		/* one page: 64 bytes inside it; more: from the middle of the first page to the
		 * middle of the last */
		uint64_t off = w->page * LOG_PAGE + (w->n == 1 ? 0x400 : LOG_PAGE / 2);
		uint64_t len = w->n == 1 ? 64 : (w->n - 1) * LOG_PAGE;
		int r;

		dt_assert((w->page + w->n) * LOG_PAGE <= m->length, "write outside mapping %u",
			  w->m);
		r = testdev_dma_write(0, m->iova + off, len, byte);
		dt_assert(r == 0,
			  "testdev0: DMA write of %" PRIu64 " bytes at IOVA 0x%" PRIx64 ": %s", len,
			  m->iova + off, strerror(-r));
		for (uint64_t i = 0; i < len; i++)
			dt_assert(mem[m->gpa + off - GPA_BASE + i] == byte,
				  "testdev0 wrote IOVA 0x%" PRIx64 ", GPA 0x%" PRIx64
				  " holds 0x%02x, want 0x%02x",
				  m->iova + off + i, m->gpa + off + i,
				  mem[m->gpa + off - GPA_BASE + i], byte);
		for (unsigned k = 0; k < w->n; k++) {
			dt_pageset_add(set1, m->gpa + (w->page + k) * LOG_PAGE);
			if (set2)
				dt_pageset_add(set2, m->gpa + (w->page + k) * LOG_PAGE);
		}
	}
}

/* The device logs, over ranges that cover every mapping; their number, matching the daemon. */
static void expect_logging(const struct layout *l, const char *dpath, struct testdev_state *st,
			   const char *when)
{
	unsigned n_ranges;

	dt_assert(testdev_read_state(0, st) == 0, "reading testdev0's state");
	dt_assert(st->logging && st->page_size == LOG_PAGE,
		  "%s: testdev0 does not log (logging %d, page size %" PRIu64 ")", when,
		  st->logging, st->page_size);
	n_ranges = (unsigned)dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLoggingRanges", 'u');
	dt_assert(n_ranges >= 1 && n_ranges == st->nr_ranges && n_ranges <= st->max_ranges,
		  "%s: the daemon says %u ranges, the device logs %u (takes %u)", when, n_ranges,
		  st->nr_ranges, st->max_ranges);
	for (unsigned i = 0; i < l->n_maps; i++) {
		bool covered = false;

		for (unsigned k = 0; k < st->nr_ranges; k++)
			covered |= l->maps[i].iova >= st->ranges[k].iova &&
				   l->maps[i].iova + l->maps[i].length <=
					   st->ranges[k].iova + st->ranges[k].length;
		dt_assert(covered, "%s: mapping %u (IOVA 0x%" PRIx64 ") is in no logged range",
			  when, i, l->maps[i].iova);
	}
}

static unsigned n_writes(const struct write *w)
{
	unsigned n = 0;

	while (w[n].n)
		n++;
	return n;
}

/*
 * C, while no daemon runs. The device reaches guest memory through the IOAS mapping, and
 * the mapping's pages come from the address space of the daemon that mapped them (Linux
 * 6.12 has no IOMMU_IOAS_MAP_FILE): with no IOMMU domain pinning them, as for this device,
 * a write while that daemon is gone fails with EFAULT and changes nothing. A write that
 * works (a kernel that keeps the memory) must be in the first round after the restart.
 */
static unsigned down_writes(const struct layout *l, struct dt_pageset *unacked)
{
	unsigned refused = 0;

	for (const struct write *w = l->c; w->n; w++) {
		const struct mapping *m = &l->maps[w->m];
		uint64_t off = w->page * LOG_PAGE + 0x400;
		uint8_t old = mem[m->gpa + off - GPA_BASE], new = (uint8_t)~old;
		int r = testdev_dma_write(0, m->iova + off, 64, new);

		if (r == 0) {
			dt_assert(mem[m->gpa + off - GPA_BASE] == new,
				  "the write while down at GPA 0x%" PRIx64 " did not land",
				  m->gpa + off);
			dt_pageset_add(unacked, m->gpa + w->page * LOG_PAGE);
			continue;
		}
		dt_assert(r == -EFAULT,
			  "testdev0: DMA write at IOVA 0x%" PRIx64 " while the daemon is down: %s",
			  m->iova + off, strerror(-r));
		dt_assert(mem[m->gpa + off - GPA_BASE] == old,
			  "a refused write while down changed GPA 0x%" PRIx64, m->gpa + off);
		refused++;
	}
	return refused;
}

static void run_case(const struct layout *l, int sig, enum first_round a)
{
	const char *signame = sig == SIGKILL ? "SIGKILL" : "SIGTERM";
	struct dt_pageset unacked, mapped, got, d;
	struct testdev_state before, st;
	char name[64], when[96], *spath, *dpath, *names;
	uint64_t pending = 0;
	unsigned refused;
	const char *reply;
	bool precise;
	int fd;

	snprintf(name, sizeof(name), "dr-%s-%s-%d", l->name, sig == SIGKILL ? "kill" : "term",
		 (int)a);
	printf("case %s: %s, %s, %s\n", name, l->name, signame, first_round_name(a));
	spath = dt_create_session(bus, name, l->viommu);
	scall(spath, "AddMemory", "httt", memfd, UINT64_C(0), MEM_SIZE, GPA_BASE);
	fd = testdev_open(0);
	dt_assert(fd >= 0, "opening testdev0: %s", strerror(-fd));
	{
		sd_bus_message *m = dt_call(bus, spath, DT_SES_IFACE, "AttachDeviceFd", NULL,
					    "ha{sv}", fd, 1, "dirty_source", "s", "device");
		const char *path;

		dt_assert(sd_bus_message_read(m, "o", &path) > 0, "AttachDeviceFd reply");
		dpath = strdup(path);
		sd_bus_message_unref(m);
	}
	want_init(&mapped);
	for (unsigned i = 0; i < l->n_maps; i++) {
		if (l->viommu)
			scall(spath, "Map", "ttt", l->maps[i].iova, l->maps[i].gpa,
			      l->maps[i].length);
		for (uint64_t o = 0; o < l->maps[i].length; o += LOG_PAGE)
			dt_pageset_add(&mapped, l->maps[i].gpa + o);
	}
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "DirtySource", "device-log");
	scall(spath, "Start", "");
	expect_logging(l, dpath, &before, "after Start");

	/* A, and its round */
	want_init(&unacked);
	want_init(&d);
	dma(l, l->a, 0xa1, &unacked, &d);
	if (a == A_ACKNOWLEDGED) {
		expect_round(spath, &d, "round of A");
		free(unacked.bits);
		want_init(&unacked);
	} else if (a == A_PENDING) {
		pending = harvest(spath, &got, false, &precise);
		dt_assert(precise, "the round of A is not precise");
		expect_pages(&got, &d, "round of A (not acknowledged)", "written");
		free(got.bits);
	}
	free(d.bits);

	/* B, then the daemon goes, and stays down while the device writes C */
	want_init(&d);
	dma(l, l->b, 0xb2, &unacked, &d);
	free(d.bits);
	reply = harness("hold");
	dt_assert(strcmp(reply, "ok") == 0, "hold: %s", reply);
	reply = harness("kill %d", sig);
	dt_assert(strncmp(reply, "ok", 2) == 0, "kill: %s", reply);
	harness_wait_down();
	dt_assert(testdev_read_state(0, &st) == 0 && st.logging,
		  "with the daemon down (%s) testdev0 stopped logging", signame);
	refused = down_writes(l, &unacked);
	reply = harness("release");
	dt_assert(strcmp(reply, "ok") == 0, "release: %s", reply);
	daemon_pid = harness_wait_ready(++starts);
	printf("  %s; while down the device still logs (%" PRIu64 " bits) and %u of its %u "
	       "writes were refused (EFAULT); restarted as pid %d\n",
	       signame, st.dirty, refused, n_writes(l->c), (int)daemon_pid);

	/* the session and the device are back, logging over the same ranges */
	reply = harness("status");
	snprintf(when, sizeof(when), "%s/dev/", name);
	names = strdup(harness_names(reply));
	dt_assert(names && strstr(names, when), "the store lacks the device fd %s0: %s", when,
		  reply);
	free(names);
	dt_expect_string(bus, spath, DT_SES_IFACE, "State", "tracking");
	dt_expect_string(bus, dpath, DT_DEV_IFACE, "DirtySource", "device-log");
	dt_expect_string(bus, spath, DT_SES_IFACE, "TrackingMode", "hardware");
	dt_assert(dt_get_u64(bus, dpath, DT_DEV_IFACE, "DmaLogging", 'b'), "DmaLogging");
	snprintf(when, sizeof(when), "after the %s restart", signame);
	expect_logging(l, dpath, &st, when);
	dt_assert(st.nr_ranges == before.nr_ranges, "%u ranges logged after the restart, %u before",
		  st.nr_ranges, before.nr_ranges);
	for (unsigned k = 0; k < st.nr_ranges && k < TESTDEV_MAX_RANGES; k++)
		dt_assert(st.ranges[k].iova == before.ranges[k].iova &&
				  st.ranges[k].length == before.ranges[k].length,
			  "range %u is 0x%" PRIx64 " +0x%" PRIx64 " after the restart, 0x%" PRIx64
			  " +0x%" PRIx64 " before",
			  k, st.ranges[k].iova, st.ranges[k].length, before.ranges[k].iova,
			  before.ranges[k].length);
	/* the device retries C: it reaches guest memory again, through this instance's
	 * mappings */
	for (const struct write *w = l->c; w->n; w++) {
		const struct mapping *m = &l->maps[w->m];
		uint64_t iova = m->iova + w->page * LOG_PAGE + 0x800;
		int r = testdev_dma_write(0, iova, 64, 0xc5);

		dt_assert(r == 0,
			  "after the %s restart testdev0 cannot write IOVA 0x%" PRIx64
			  " (GPA 0x%" PRIx64 "): %s; the guest memory behind the IOAS is gone",
			  signame, iova, m->gpa + w->page * LOG_PAGE + 0x800, strerror(-r));
		dt_assert(mem[m->gpa + w->page * LOG_PAGE + 0x800 - GPA_BASE] == 0xc5,
			  "the write after the restart did not land");
		dt_pageset_add(&unacked, m->gpa + w->page * LOG_PAGE);
	}
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == pending,
		  "PendingRound is %" PRIu64 " after the restart, want %" PRIu64,
		  dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't'), pending);

	/* the first round: every page written and not acknowledged, in fact every mapped page */
	{
		bool says_precise = dt_get_u64(bus, spath, DT_SES_IFACE, "Precise", 'b');
		uint64_t nr = harvest(spath, &got, true, &precise);

		dt_assert(nr > pending, "round %" PRIu64 " after round %" PRIu64, nr, pending);
		for (uint64_t p = 0; p < unacked.npages; p++)
			dt_assert(!dt_pageset_test(&unacked, p) || dt_pageset_test(&got, p),
				  "first round after the %s restart: GPA page 0x%" PRIx64
				  ", written by the device before it and not acknowledged, is "
				  "not in it: lost",
				  signame, p << LOG_SHIFT);
		expect_pages(&got, &mapped, "first round after the restart", "mapped");
		dt_assert(says_precise && precise,
			  "first round after the %s restart: Precise %d, the Harvest reply's "
			  "precise %d; the man page says a device log stays precise",
			  signame, says_precise, precise);
		printf("  first round after the restart: %" PRIu64 " pages = every mapped page "
		       "(%" PRIu64 " written and not acknowledged), precise\n",
		       dt_pageset_count(&got), dt_pageset_count(&unacked));
		free(got.bits);
	}

	/* then rounds are exact again */
	want_init(&d);
	dma(l, l->d, 0xd4, &d, NULL);
	expect_round(spath, &d, "round after");
	free(d.bits);
	want_init(&d);
	expect_round(spath, &d, "round after, nothing written");
	free(d.bits);

	scall(spath, "Stop", "");
	dt_assert(testdev_read_state(0, &st) == 0 && !st.logging, "testdev0 logs after Stop");
	scall(spath, "Destroy", "");
	close(fd);
	free(unacked.bits);
	free(mapped.bits);
	free(dpath);
	free(spath);
	dt_pass("%s, %s, %s: the device logs again over the same %u range(s); %u write(s) while "
		"down refused (EFAULT), retried after the restart; the first round is every mapped "
		"page, precise, with every page written and not acknowledged; the next is exact",
		l->name, signame, first_round_name(a), before.nr_ranges, refused);
}

int main(void)
{
	static const int sigs[] = {SIGKILL, SIGTERM};
	const char *reply;

	setvbuf(stdout, NULL, _IOLBF, 0);
	dt_on_fail = print_status;
	dt_require_iommufd();
	bus = dt_connect();
	memfd = memfd_create("guest", MFD_CLOEXEC);
	dt_assert(memfd >= 0 && ftruncate(memfd, MEM_SIZE) == 0, "memfd: %s", strerror(errno));
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	dt_assert(mem != MAP_FAILED, "mmap: %s", strerror(errno));
	viommu_layout();
	daemon_pid = harness_wait_ready(1);

	for (unsigned s = 0; s < 2; s++)
		for (unsigned a = A_ACKNOWLEDGED; a <= A_NOT_HARVESTED; a++) {
			run_case(&flat, sigs[s], a);
			run_case(&viommu, sigs[s], a);
		}

	reply = harness("quit");
	dt_assert(strcmp(reply, "ok status=0") == 0, "the daemon's exit on SIGTERM: %s", reply);
	sd_bus_flush_close_unref(bus);
	printf("daemon-devlog-restart: %u passed\n", dt_passed);
	return EXIT_SUCCESS;
}
