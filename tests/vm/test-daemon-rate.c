/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Session1.GetDirtyRate against the kernel's iommufd mock devices, over the real D-Bus.
 *
 * The program plays a VMM: one IOAS (huge pages off) with guest memory at IOVA = GPA, two
 * mock devices each on a dirty tracking HWPT of its own, lent to iodirtyd with AdoptSession.
 * It marks known GPA pages with the mock's DIRTY command, as a device writing them would,
 * between calls to GetDirtyRate, with an interval long enough (1 min) that the daemon's timer
 * never samples during the test: every call closes exactly one sample. Then:
 *  - pages marked before the first call are its baseline: counted nowhere, yet in the log;
 *  - per sample, the VM's dirty pages equal the distinct pages marked on either HWPT in it,
 *    each HWPT's the pages marked on it; over the window, dirty_pages is the sum over the
 *    samples, the working set the distinct pages, for the VM and per HWPT, exactly;
 *  - a Harvest in the middle of a sample (it reads and clears the IOMMU bits) loses nothing
 *    from the rate: its pages count in the sample;
 *  - pages_per_sec is dirty_pages over window_usec;
 *  - a short window counts only the newest sample;
 *  - nothing is lost for the migration: the union of every Harvest equals every page
 *    marked, exactly (the sampler's reads went into the log);
 *  - with the daemon's timer sampling every 10 ms while pages are marked and Harvests run
 *    (on the daemon's harvest thread), the working set over the window is exactly the
 *    distinct pages marked, per VM and per HWPT, and again nothing is lost;
 *  - in a second session, with a vIOMMU: pages dirtied in a window that is unmapped before
 *    the sample closes count in that sample, once (Unmap reads them into the log and the
 *    rate), never again in the next one, and they reach the log.
 *
 * IOD_TEST_SEED=<n> repeats a run; a failing run prints its seed last.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>

#include "daemon-test.h"
#include "iodirty.h"
#include "iommufd-mock.h"
#include "mock-vmm.h"
#include "test-rng.h"

#define SZ_1M (UINT64_C(1) << 20)
#define GUEST_GPA (16 * SZ_1M) /* the mock's aperture starts at 16 MiB */
#define GUEST_SIZE (8 * SZ_1M)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define NPAGES (GUEST_SIZE >> LOG_SHIFT)
#define NDEV MOCK_VMM_NDEV
#define INTERVAL_USEC (UINT64_C(60) * 1000000)
#define WINDOW_USEC (UINT64_C(3600) * 1000000)

static struct mock_vmm vmm;

static void vmm_setup(void)
{
	mock_vmm_open(&vmm);
	mock_vmm_dirty_hwpts(&vmm);
	mock_vmm_alloc_guest(&vmm, GUEST_SIZE);
	mock_vmm_map_guest(&vmm, GUEST_SIZE, GUEST_GPA);
	printf("vmm: iommufd %d, ioas %u, hwpts %u %u, %" PRIu64
	       " MiB of guest memory at GPA 0x%" PRIx64 "\n",
	       vmm.fd, vmm.ioas, vmm.hwpt[0], vmm.hwpt[1], GUEST_SIZE / SZ_1M, GUEST_GPA);
}

/* ---- page sets: what was marked ---------------------------------------------------------- */

/* All marks; the marks of the current sample per HWPT; the window's per HWPT. */
static struct dt_pageset all_marked, sample[NDEV], window[NDEV];

static void pageset_or(struct dt_pageset *dst, const struct dt_pageset *src)
{
	for (uint64_t w = 0; w < iod_bitmap_words(dst->npages); w++)
		dst->bits[w] |= src->bits[w];
}

static void pageset_clear(struct dt_pageset *p)
{
	memset(p->bits, 0, iod_bitmap_words(p->npages) * sizeof(uint64_t));
}

static uint64_t pageset_count_union(const struct dt_pageset *a, const struct dt_pageset *b)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w < iod_bitmap_words(a->npages); w++)
		n += (uint64_t)__builtin_popcountll(a->bits[w] | b->bits[w]);
	return n;
}

/* Mark the log page at IOVA iova, guest page index page, dirty on device dev's HWPT. */
static void mark_at(int dev, uint64_t iova, uint64_t page)
{
	mock_vmm_mark(&vmm, vmm.hwpt[dev], iova, LOG_PAGE);
	dt_pageset_add(&sample[dev], page << LOG_SHIFT);
	dt_pageset_add(&all_marked, page << LOG_SHIFT);
}

/* The same where the IOAS maps guest memory at IOVA = GPA. */
static void mark(int dev, uint64_t page)
{
	mark_at(dev, GUEST_GPA + (page << LOG_SHIFT), page);
}

/* Mark n random pages on dev, from the first span pages (small spans make overlaps), a
 * few of them as runs of neighbours. */
static void mark_random(int dev, unsigned n, uint64_t span)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t page = rng_below(span), len = rng_below(4) == 0 ? 1 + rng_below(5) : 1;

		for (uint64_t k = 0; k < len && page + k < NPAGES; k++)
			mark(dev, page + k);
	}
}

/* ---- the session ----------------------------------------------------------------------- */

static sd_bus *bus;
static char *spath;
static struct dt_pageset harvested;

#define scall(member, types, ...) \
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, member, NULL, types, ##__VA_ARGS__))

static void get_rate(uint64_t interval_usec, uint64_t window_usec, struct dt_rate *ret)
{
	dt_get_rate(bus, spath, interval_usec, window_usec, NDEV, ret);
}

/* Harvest one round into harvested and acknowledge it. */
static void harvest(void)
{
	struct dt_pageset abs;
	struct dt_round round;

	round = dt_harvest(bus, spath, "Harvest", GUEST_GPA + GUEST_SIZE, LOG_SHIFT, &abs);
	for (uint64_t p = GUEST_GPA >> LOG_SHIFT; p < abs.npages; p++)
		if (dt_pageset_test(&abs, p))
			dt_pageset_add(&harvested, (p << LOG_SHIFT) - GUEST_GPA);
	free(abs.bits);
	dt_acknowledge(bus, spath, round.nr);
	printf("harvest: round %" PRIu64 ", %" PRIu64 " dirty pages\n", round.nr, round.dirty);
}

/* Expected numbers, kept as the samples close. */
static struct {
	uint64_t samples, vm_dirty, dirty[NDEV];
} want;

/* The sample now closing: add its marks to the expectation and the window. */
static void close_sample(void)
{
	want.samples++;
	want.vm_dirty += pageset_count_union(&sample[0], &sample[1]);
	for (int i = 0; i < NDEV; i++) {
		want.dirty[i] += dt_pageset_count(&sample[i]);
		pageset_or(&window[i], &sample[i]);
		pageset_clear(&sample[i]);
	}
}

static void check_rate(const struct dt_rate *r, const char *what)
{
	dt_assert(r->samples == want.samples, "%s: %" PRIu64 " samples, want %" PRIu64, what,
		  r->samples, want.samples);
	dt_assert(r->precise, "%s: not precise", what);
	dt_assert(r->window_usec > 0, "%s: an empty window", what);
	dt_assert(r->dirty == want.vm_dirty, "%s: VM dirty pages %" PRIu64 ", marked %" PRIu64,
		  what, r->dirty, want.vm_dirty);
	dt_assert(r->ws == pageset_count_union(&window[0], &window[1]),
		  "%s: VM working set %" PRIu64 ", distinct pages marked %" PRIu64, what, r->ws,
		  pageset_count_union(&window[0], &window[1]));
	dt_assert(r->pps == (uint64_t)((double)r->dirty * 1e6 / (double)r->window_usec),
		  "%s: %" PRIu64 " pages/s is not %" PRIu64 " pages over %" PRIu64 " us", what,
		  r->pps, r->dirty, r->window_usec);
	dt_assert(r->n_hwpts == NDEV, "%s: %u HWPTs, want %d", what, r->n_hwpts, NDEV);
	for (int i = 0; i < NDEV; i++) {
		dt_assert(r->hwpt[i].id == vmm.hwpt[i], "%s: HWPT %d is %u, want %u", what, i,
			  r->hwpt[i].id, vmm.hwpt[i]);
		dt_assert(r->hwpt[i].n_devices == 0,
			  "%s: an adopted session knows no device objects", what);
		dt_assert(r->hwpt[i].dirty == want.dirty[i],
			  "%s: hwpt %u dirty pages %" PRIu64 ", marked %" PRIu64, what,
			  r->hwpt[i].id, r->hwpt[i].dirty, want.dirty[i]);
		dt_assert(r->hwpt[i].ws == dt_pageset_count(&window[i]),
			  "%s: hwpt %u working set %" PRIu64 ", distinct pages marked %" PRIu64,
			  what, r->hwpt[i].id, r->hwpt[i].ws, dt_pageset_count(&window[i]));
	}
	dt_pass("%s: %" PRIu64 " sample(s), %" PRIu64 " dirty pages (%" PRIu64 " + %" PRIu64
		" per HWPT), working set %" PRIu64 " (%" PRIu64 " + %" PRIu64 "), as marked",
		what, r->samples, r->dirty, r->hwpt[0].dirty, r->hwpt[1].dirty, r->ws,
		r->hwpt[0].ws, r->hwpt[1].ws);
}

/* Every page marked is in the union of the Harvests, and nothing else. */
static void check_nothing_lost(const char *when)
{
	for (uint64_t w = 0; w < iod_bitmap_words(NPAGES); w++) {
		uint64_t lost = all_marked.bits[w] & ~harvested.bits[w];
		uint64_t extra = harvested.bits[w] & ~all_marked.bits[w];

		dt_assert(!lost, "%s: GPA page 0x%" PRIx64 " was marked and no Harvest reported it",
			  when,
			  GUEST_GPA + ((w * 64 + (uint64_t)__builtin_ctzll(lost)) << LOG_SHIFT));
		dt_assert(!extra, "%s: GPA page 0x%" PRIx64 " was reported and never marked", when,
			  GUEST_GPA + ((w * 64 + (uint64_t)__builtin_ctzll(extra)) << LOG_SHIFT));
	}
	dt_pass("%s: the Harvests report all %" PRIu64
		" pages marked, baselines and samples included: the sampler consumed nothing",
		when, dt_pageset_count(&all_marked));
}

static void adopt(void)
{
	sd_bus_message *reply;
	const char *path;

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}", "rate",
			vmm.fd, vmm.ioas, 2, vmm.hwpt[0], vmm.hwpt[1], 0);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	spath = strdup(path);
	sd_bus_message_unref(reply);
	scall("AddRegion", "tt", GUEST_GPA, GUEST_SIZE);
	scall("Start", "");
}

static void run(void)
{
	struct dt_rate r;

	/* Before the first call: the baseline's, in the log, not in the rate. */
	mark_random(0, 10, NPAGES);
	mark_random(1, 10, NPAGES);
	for (int i = 0; i < NDEV; i++)
		pageset_clear(&sample[i]);
	get_rate(INTERVAL_USEC, WINDOW_USEC, &r);
	dt_assert(r.samples == 0 && r.window_usec == 0 && r.dirty == 0 && r.ws == 0,
		  "the first call has a sample: %" PRIu64 " samples, %" PRIu64 " pages", r.samples,
		  r.dirty);
	dt_pass("the first call is the baseline: no sample, the pages before it not counted");

	/* Sample 1: both HWPTs, overlapping pages (a small span). */
	mark_random(0, 40, 256);
	mark_random(1, 30, 256);
	close_sample();
	get_rate(INTERVAL_USEC, WINDOW_USEC, &r);
	check_rate(&r, "sample 1");

	/* Sample 2: pages dirtied again (the span of sample 1), and a Harvest in the middle
	 * that reads and clears the IOMMU bits before the sample does. */
	mark_random(0, 30, 512);
	mark_random(1, 5, 64);
	harvest();
	mark_random(1, 20, 512);
	close_sample();
	get_rate(INTERVAL_USEC, WINDOW_USEC, &r);
	check_rate(&r, "sample 2 (a Harvest in it)");

	/* Sample 3: one HWPT only. */
	mark_random(0, 25, NPAGES);
	close_sample();
	get_rate(INTERVAL_USEC, WINDOW_USEC, &r);
	check_rate(&r, "sample 3 (hwpt 0 only)");

	/* A short window: only the newest sample, which alone is longer than the window. */
	usleep(300000);
	mark_random(1, 12, NPAGES);
	memset(&want, 0, sizeof(want));
	for (int i = 0; i < NDEV; i++)
		pageset_clear(&window[i]);
	close_sample();
	get_rate(100000, 100000, &r);
	check_rate(&r, "a 100 ms window (the newest sample only)");
	dt_assert(r.window_usec >= 300000, "the newest sample spans %" PRIu64 " us", r.window_usec);

	/* Nothing lost for the migration: every page marked, in the log, exactly. */
	harvest();
	check_nothing_lost("after the samples");
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* iodirtyctl rate prints the same working set (nothing was marked since GetDirtyRate). */
static void check_iodirtyctl(uint64_t ws)
{
	char cmd[512], line[512], needle[64];
	bool found = false;
	FILE *f;

	snprintf(cmd, sizeof(cmd),
		 "iodirtyctl --address='%s' rate --interval=10ms --window=10s rate 2>&1",
		 getenv("IOD_BUS_ADDRESS"));
	snprintf(needle, sizeof(needle), "Working set: %" PRIu64 " pages", ws);
	f = popen(cmd, "r");
	dt_assert(f, "popen: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		printf("iodirtyctl| %s", line);
		if (strstr(line, needle))
			found = true;
	}
	dt_assert(pclose(f) == 0, "iodirtyctl rate failed");
	dt_assert(found, "iodirtyctl rate does not print \"%s\"", needle);
	dt_pass("iodirtyctl rate prints the working set, %" PRIu64 " pages", ws);
}

/*
 * The daemon's timer at work (10 ms) while pages are marked and Harvests run (on the
 * daemon's harvest thread): where a sample ends is not known here, so the dirty pages are
 * not either, but the working set over a window that holds every sample since the baseline
 * is the distinct pages marked, exactly, and the log still gets every page.
 */
static void run_concurrent(void)
{
	struct dt_pageset marked_here[NDEV];
	uint64_t end, n_marks = 0, n_harvests = 0;
	struct dt_rate r;

	/* Stop ends the rate; after Start the next call is a new baseline. */
	scall("Stop", "");
	scall("Start", "");
	get_rate(10000, 10000000, &r);
	dt_assert(r.samples == 0, "after Stop and Start the first call has %" PRIu64 " samples",
		  r.samples);
	for (int i = 0; i < NDEV; i++) {
		dt_pageset_init(&marked_here[i], GUEST_SIZE, LOG_SHIFT);
		pageset_clear(&sample[i]);
	}
	end = now_usec() + 1500000;
	while (now_usec() < end) {
		int dev = (int)rng_below(NDEV);

		mark_random(dev, 1 + (unsigned)rng_below(3), 512);
		pageset_or(&marked_here[dev], &sample[dev]);
		pageset_clear(&sample[dev]);
		n_marks++;
		if (rng_below(10) == 0) {
			harvest();
			n_harvests++;
		}
		usleep((useconds_t)rng_below(20000));
	}
	get_rate(10000, 10000000, &r);
	dt_assert(r.samples > 10, "only %" PRIu64 " samples in 1.5 s at 10 ms: no timer?",
		  r.samples);
	dt_assert(r.precise, "not precise");
	dt_assert(r.ws == pageset_count_union(&marked_here[0], &marked_here[1]),
		  "VM working set %" PRIu64 ", distinct pages marked %" PRIu64, r.ws,
		  pageset_count_union(&marked_here[0], &marked_here[1]));
	dt_assert(r.dirty >= r.ws, "fewer dirty pages (%" PRIu64 ") than the working set", r.dirty);
	for (int i = 0; i < NDEV; i++)
		dt_assert(r.hwpt[i].ws == dt_pageset_count(&marked_here[i]),
			  "hwpt %u working set %" PRIu64 ", distinct pages marked %" PRIu64,
			  r.hwpt[i].id, r.hwpt[i].ws, dt_pageset_count(&marked_here[i]));
	dt_pass("timer at 10 ms, %" PRIu64 " marks, %" PRIu64 " Harvests: %" PRIu64
		" samples, working set %" PRIu64 " (%" PRIu64 " + %" PRIu64 "), as marked",
		n_marks, n_harvests, r.samples, r.ws, r.hwpt[0].ws, r.hwpt[1].ws);

	check_iodirtyctl(r.ws);
	harvest();
	check_nothing_lost("after the timer's samples");
	for (int i = 0; i < NDEV; i++)
		free(marked_here[i].bits);
}

/* ---- a vIOMMU session: windows that are unmapped between two samples -------------------- */

struct window {
	const char *name;
	uint64_t iova, page, npages; /* page: the first guest page index it maps */
};

static const struct window wa = {"A", 256 * SZ_1M, 256, 256};
static const struct window wb = {"B", 512 * SZ_1M, 1024, 128};

/* As a VMM with a vIOMMU does it: the IOAS first, then the event (before, for an unmap). */
static void window_map(const struct window *w)
{
	int r = iod_ioas_map(vmm.ictx, vmm.ioas, vmm.guest + (w->page << LOG_SHIFT),
			     w->npages << LOG_SHIFT, w->iova, IOD_MAP_READ | IOD_MAP_WRITE);

	dt_assert(r == 0, "IOAS map of window %s: %s", w->name, iod_strerror(r));
	scall("Map", "ttt", w->iova, GUEST_GPA + (w->page << LOG_SHIFT), w->npages << LOG_SHIFT);
}

static void window_unmap(const struct window *w)
{
	int r;

	scall("Unmap", "tt", w->iova, w->npages << LOG_SHIFT);
	r = iod_ioas_unmap(vmm.ictx, vmm.ioas, w->iova, w->npages << LOG_SHIFT, NULL);
	dt_assert(r == 0, "IOAS unmap of window %s: %s", w->name, iod_strerror(r));
}

/* Mark n random pages of w on dev, through its IOVA. */
static void mark_window(int dev, const struct window *w, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t k = rng_below(w->npages);

		mark_at(dev, w->iova + (k << LOG_SHIFT), w->page + k);
	}
}

static void adopt_viommu(void)
{
	sd_bus_message *reply;
	const char *path;

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}",
			"rate-viommu", vmm.fd, vmm.ioas, 2, vmm.hwpt[0], vmm.hwpt[1], 1, "viommu",
			"b", 1);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	free(spath);
	spath = strdup(path);
	sd_bus_message_unref(reply);
	scall("AddRegion", "tt", GUEST_GPA, GUEST_SIZE);
}

/*
 * Pages dirtied in a window that is unmapped before the sample closes: Unmap harvests them
 * into the log, and they count in that sample, once: not lost from the rate (the HWPT no
 * longer has them once the window is gone), not counted again by the next sample, whose
 * pages are only those marked in it, the window mapped again at the same IOVA included.
 */
static void run_viommu(void)
{
	struct dt_rate r;

	adopt_viommu();
	window_map(&wa);
	window_map(&wb);
	scall("Start", "");

	get_rate(INTERVAL_USEC, WINDOW_USEC, &r);
	dt_assert(r.samples == 0, "the first call of session rate-viommu has %" PRIu64 " samples",
		  r.samples);
	memset(&want, 0, sizeof(want));
	for (int i = 0; i < NDEV; i++) {
		pageset_clear(&sample[i]);
		pageset_clear(&window[i]);
	}

	/* Sample 1: both windows dirtied on both HWPTs, then window B unmapped. */
	mark_window(0, &wa, 20);
	mark_window(1, &wa, 10);
	mark_window(0, &wb, 25);
	mark_window(1, &wb, 15);
	window_unmap(&wb);
	close_sample();
	get_rate(INTERVAL_USEC, WINDOW_USEC, &r);
	check_rate(&r, "vIOMMU sample 1 (window B dirtied, then unmapped)");

	/* Sample 2: B mapped again at the same IOVA and dirtied again, some of the same pages
	 * among them; A dirtied; then B unmapped with A still mapped. Sample 1's pages of B
	 * must not count again. */
	window_map(&wb);
	mark_window(0, &wb, 10);
	mark_window(1, &wa, 10);
	window_unmap(&wb);
	close_sample();
	get_rate(INTERVAL_USEC, WINDOW_USEC, &r);
	check_rate(&r, "vIOMMU sample 2 (B mapped again, dirtied, unmapped)");

	/* Sample 3: nothing of B, which is gone; A only. */
	mark_window(0, &wa, 5);
	close_sample();
	get_rate(INTERVAL_USEC, WINDOW_USEC, &r);
	check_rate(&r, "vIOMMU sample 3 (A only)");

	/* The pages of the unmapped windows reached the log too, exactly. */
	harvest();
	check_nothing_lost("after the vIOMMU samples");
	scall("Destroy", "");
}

int main(void)
{
	rng_seed();
	dt_on_fail = rng_print_seed;

	dt_require_iommufd();
	vmm_setup();
	dt_pageset_init(&all_marked, GUEST_SIZE, LOG_SHIFT);
	dt_pageset_init(&harvested, GUEST_SIZE, LOG_SHIFT);
	for (int i = 0; i < NDEV; i++) {
		dt_pageset_init(&sample[i], GUEST_SIZE, LOG_SHIFT);
		dt_pageset_init(&window[i], GUEST_SIZE, LOG_SHIFT);
	}

	bus = dt_connect();
	adopt();
	run();
	run_concurrent();
	scall("Destroy", "");
	run_viommu();

	sd_bus_unref(bus);
	rng_print_seed();
	printf("%u passed\n", dt_passed);
	return 0;
}
