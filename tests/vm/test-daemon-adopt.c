/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyd in adopt mode against the kernel's iommufd mock devices, over the real D-Bus.
 *
 * The program plays a VMM with a vIOMMU: it owns an iommufd with one IOAS (huge pages off)
 * and two mock devices, each on a dirty-tracking HWPT of its own, lends the iommufd to
 * iodirtyd with AdoptSession (fd passing) and declares its guest memory with AddRegion.
 * Then, for IOD_TEST_OPS operations (3000 by default) chosen at random from the seed, it
 *  - maps IOVA ranges of guest memory (IOMMU_IOAS_MAP) at random IOVAs and GPAs and reports
 *    them with Map(iova, gpa, size);
 *  - marks random pages dirty with the mock's DIRTY command on either HWPT, as a device
 *    writing them would, and records their GPAs;
 *  - unmaps single mappings, or spans of two mappings and the hole between them, by the
 *    adopt-mode protocol: Unmap to the daemon first (it reads the range's dirty bits
 *    without clearing them), then IOMMU_IOAS_UNMAP;
 *  - harvests: Harvest (the log memfd, its round plane read as a client does, then
 *    Acknowledge, or not: an unacknowledged round must not lose anything), HarvestRanges
 *    (sometimes truncated), a peek, a second Start (which must wipe nothing), Stop and Start.
 * At the end the union of all harvested GPA pages must equal the set of pages marked,
 * exactly: zero lost, zero spurious.
 *
 * Negative controls prove that the comparison can fail: a page marked after the final
 * harvest is reported missing, and a range unmapped from the IOAS before the daemon hears of
 * it (the wrong order) loses its dirty page: unnoticed on a "silent" kernel (up to
 * 6.12.117), failing the session on a "strict" one (6.12.118 on); which kernel runs here is
 * printed and must match Manager1.KernelHoleBehavior. Then a session whose HWPT disappears under it
 * fails at the next Unmap (State "failed", signal Failed, Harvest refused with
 * SessionFailed), and Destroy turns off the tracking the daemon turned on.
 *
 * IOD_TEST_SEED=<n> repeats a run; a failing run prints its seed last. IOD_TEST_ONLY=<check>
 * (controls, batches, iova_space, region_hole, huge_pages, order, destroy) runs one check
 * after a short set-up instead of the whole program.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>

#include "daemon-test.h"
#include "huge-buffer.h"
#include "iodirty.h"
#include "iommufd-mock.h"
#include "mock-vmm.h"
#include "test-rng.h"

#define SZ_1M (UINT64_C(1) << 20)
#define GUEST_SIZE (32 * SZ_1M)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define MAX_MAPPINGS 160
#define NDEV MOCK_VMM_NDEV

/* ---- the VMM's side: iommufd, IOAS, mock devices ---------------------------------------- */

struct mapping {
	uint64_t iova, gpa, size;
};

static struct mock_vmm vmm;
static struct mapping maps[MAX_MAPPINGS];
static size_t n_maps;

/* Mark the log pages [iova, iova + npages * LOG_PAGE) dirty on hwpt: halves picks which
 * mock IOPTEs of each page (bit 0 the first, bit 1 the second; 0 means both). Returns the
 * IOPTEs the mock marked. */
static int mock_dirty(uint32_t hwpt, uint64_t iova, uint64_t npages, unsigned halves,
		      uint64_t *ret_nr)
{
	const uint64_t per = LOG_PAGE / vmm.mock_page, nbits = npages * per;
	uint64_t marks[64] = {};

	dt_assert(nbits <= 64 * 64, "too many pages to mark at once");
	for (uint64_t i = 0; i < nbits; i++)
		if (halves == 0 || (halves & (1u << (i % per))))
			marks[i / 64] |= UINT64_C(1) << (i % 64);
	return iod_mock_dirty(vmm.fd, hwpt, iova, nbits, vmm.mock_page, marks, ret_nr);
}

static void vmm_setup(void)
{
	mock_vmm_open(&vmm);
	mock_vmm_dirty_hwpts(&vmm);
	mock_vmm_alloc_guest(&vmm, GUEST_SIZE);
	printf("vmm: iommufd %d, ioas %u, hwpts %u %u, %" PRIu64 " MiB of guest memory\n", vmm.fd,
	       vmm.ioas, vmm.hwpt[0], vmm.hwpt[1], GUEST_SIZE / SZ_1M);
}

/* ---- the session ----------------------------------------------------------------------- */

static sd_bus *bus;
static char *spath;
static struct dt_pageset marked, harvested;

static struct {
	unsigned map, unmap, span, mark, harvest, unacked, ranges, truncated, peek, restart, stop;
	unsigned map_batch, batched, unmap_batch, unbatched;
	unsigned channel; /* of the calls above, sent on the event channel */
} stats;

/* The event channel of the random run's session (-1: none), its last sequence number. */
static int chan = -1;
static uint64_t chan_seq;

static void adopt(const char *name, const uint32_t *hwpts, unsigned n, bool viommu)
{
	sd_bus_message *reply;
	const char *path;

	if (n == 2)
		reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}",
				name, vmm.fd, vmm.ioas, 2, hwpts[0], hwpts[1], 1, "viommu", "b",
				(int)viommu);
	else
		reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}",
				name, vmm.fd, vmm.ioas, 1, hwpts[0], 1, "viommu", "b", (int)viommu);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	free(spath);
	spath = strdup(path);
	sd_bus_message_unref(reply);
}

#define scall(member, types, ...) \
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, member, NULL, types, ##__VA_ARGS__))

/* pages harvested must have been marked: nothing spurious, at every round */
static void check_subset(const struct dt_pageset *got, const char *what)
{
	for (uint64_t w = 0; w < iod_bitmap_words(got->npages); w++) {
		uint64_t extra = got->bits[w] & ~marked.bits[w];

		dt_assert(!extra, "%s: GPA page 0x%" PRIx64 " is dirty but was never marked", what,
			  (w * 64 + (uint64_t)__builtin_ctzll(extra)) << LOG_SHIFT);
	}
}

static void harvest(void)
{
	struct dt_pageset got;
	struct dt_round round;

	round = dt_harvest(bus, spath, "Harvest", GUEST_SIZE, LOG_SHIFT, &got);
	dt_assert(round.precise, "round %" PRIu64 " is not precise with hardware tracking only",
		  round.nr);
	check_subset(&got, "Harvest");
	for (uint64_t w = 0; w < iod_bitmap_words(got.npages); w++)
		harvested.bits[w] |= got.bits[w];
	free(got.bits);
	stats.harvest++;
	/* now and then leave a round unacknowledged: the next one must carry it */
	if (rng_below(5) == 0) {
		stats.unacked++;
		return;
	}
	dt_acknowledge(bus, spath, round.nr);
}

static void harvest_ranges(void)
{
	uint32_t max = rng_below(3) == 0 ? 1 + (uint32_t)rng_below(4) : 65536;
	struct dt_pageset round;
	sd_bus_message *reply;
	uint64_t nr, dirty, usec, start, length;
	int truncated, precise;

	reply = dt_call(bus, spath, DT_SES_IFACE, "HarvestRanges", NULL, "a{sv}", 2, "space", "s",
			"gpa", "max_ranges", "u", max);
	dt_assert(sd_bus_message_read(reply, "t", &nr) > 0, "HarvestRanges reply");
	dt_assert(sd_bus_message_enter_container(reply, 'a', "(tt)") > 0, "HarvestRanges reply");
	dt_pageset_init(&round, GUEST_SIZE, LOG_SHIFT);
	while (sd_bus_message_read(reply, "(tt)", &start, &length) > 0) {
		dt_assert(length > 0 && start % LOG_PAGE == 0 && length % LOG_PAGE == 0,
			  "range [0x%" PRIx64 ", +0x%" PRIx64 ") is not whole pages", start,
			  length);
		for (uint64_t a = start; a < start + length; a += LOG_PAGE)
			dt_pageset_add(&round, a);
	}
	dt_assert(sd_bus_message_exit_container(reply) >= 0, "HarvestRanges reply");
	dt_assert(sd_bus_message_read(reply, "btbt", &truncated, &dirty, &precise, &usec) > 0,
		  "HarvestRanges reply");
	if (!truncated)
		dt_assert(dt_pageset_count(&round) == dirty,
			  "HarvestRanges: %" PRIu64 " pages in ranges, dirty_pages %" PRIu64,
			  dt_pageset_count(&round), dirty);
	check_subset(&round, "HarvestRanges");
	for (uint64_t w = 0; w < iod_bitmap_words(round.npages); w++)
		harvested.bits[w] |= round.bits[w];
	free(round.bits);
	sd_bus_message_unref(reply);
	stats.ranges++;
	if (truncated) {
		stats.truncated++; /* not the whole round: a later round delivers the rest */
		return;
	}
	/* Like Harvest, the round stays pending until acknowledged; now and then leave it. */
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == nr,
		  "HarvestRanges round %" PRIu64 " is not pending before Acknowledge", nr);
	if (rng_below(5) == 0) {
		stats.unacked++;
		return;
	}
	scall("Acknowledge", "t", nr);
}

static void peek(void)
{
	struct dt_pageset both;
	sd_bus_message *reply;
	uint64_t nr, dirty, usec;
	int fd, precise;

	reply = dt_call(bus, spath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 1, "peek", "b", 1);
	dt_assert(sd_bus_message_read(reply, "thtbt", &nr, &fd, &dirty, &precise, &usec) > 0,
		  "Harvest(peek) reply");
	dt_pageset_init(&both, GUEST_SIZE, LOG_SHIFT);
	dt_assert(dt_log_read(fd, &both, true) == dirty, "peek: dirty_pages differs from the log");
	check_subset(&both, "peek");
	free(both.bits);
	sd_bus_message_unref(reply);
	stats.peek++;
}

static bool overlaps(uint64_t iova, uint64_t size)
{
	for (size_t i = 0; i < n_maps; i++)
		if (iova < maps[i].iova + maps[i].size && maps[i].iova < iova + size)
			return true;
	return false;
}

/* The first free IOVA range of size from at, 1 MiB aligned (the mock aperture ends at 2 GiB). */
static uint64_t free_iova_at(uint64_t at, uint64_t size)
{
	while (overlaps(at, size))
		at += SZ_1M;
	dt_assert(at + size <= IOD_MOCK_APERTURE_END, "no free IOVA range");
	return at;
}

/* A free IOVA range of size in the aperture, 1 MiB aligned. */
static uint64_t free_iova(uint64_t size)
{
	return free_iova_at(IOD_MOCK_APERTURE_START, size);
}

/* Map [iova, +size) -> gpa into the IOAS; it joins maps[] (the caller tells the daemon). */
static void ioas_map_at(uint64_t iova, uint64_t gpa, uint64_t size)
{
	int r;

	dt_assert(n_maps < MAX_MAPPINGS, "maps[] is full");
	r = iod_ioas_map(vmm.ictx, vmm.ioas, vmm.guest + gpa, size, iova,
			 IOD_MAP_READ | IOD_MAP_WRITE);
	dt_assert(r == 0, "IOAS map [0x%" PRIx64 ", +0x%" PRIx64 "): %s", iova, size,
		  iod_strerror(r));
	maps[n_maps++] = (struct mapping){.iova = iova, .gpa = gpa, .size = size};
}

/* Choose a free IOVA range and a GPA for a new mapping and map it into the IOAS; it joins
 * maps[] (the caller tells the daemon). false if no free IOVA range was found. */
static bool ioas_map_random(void)
{
	uint64_t pages = rng_below(8) == 0 ? 1 + rng_below(512) : 1 + rng_below(32);
	uint64_t size = pages * LOG_PAGE, iova, gpa;
	int tries = 0;

	for (tries = 0; tries < 100; tries++) {
		iova = IOD_MOCK_APERTURE_START +
		       rng_below((IOD_MOCK_APERTURE_END - IOD_MOCK_APERTURE_START - size) /
				 LOG_PAGE) *
			       LOG_PAGE;
		/* keep mappings near each other now and then, so that spans are short */
		if (n_maps > 0 && rng_below(2) == 0) {
			const struct mapping *m = &maps[rng_below(n_maps)];

			iova = m->iova + m->size + rng_below(4) * LOG_PAGE;
			if (iova + size > IOD_MOCK_APERTURE_END)
				continue;
		}
		if (!overlaps(iova, size))
			break;
	}
	if (tries == 100)
		return false;
	gpa = rng_below((GUEST_SIZE - size) / LOG_PAGE + 1) * LOG_PAGE;
	ioas_map_at(iova, gpa, size);
	return true;
}

static void tell(bool map, const struct mapping *v, size_t n);

static void op_map(void)
{
	if (!ioas_map_random())
		return;
	tell(true, &maps[n_maps - 1], 1);
	stats.map++;
}

/*
 * MapBatch (map) or UnmapBatch of the n entries of v. With want_error NULL the call must
 * succeed; else it must fail with that error, its message containing needle (if not NULL).
 */
static void batch_call(bool map, const struct mapping *v, size_t n, const char *want_error,
		       const char *needle)
{
	const char *member = map ? "MapBatch" : "UnmapBatch";
	struct iod_mapping *ev = calloc(n ? n : 1, sizeof(*ev));
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	int r;

	dt_assert(ev, "out of memory");
	for (size_t i = 0; i < n; i++)
		ev[i] = (struct iod_mapping){
			.iova = v[i].iova, .gpa = v[i].gpa, .length = v[i].size};
	r = iod_bus_new_batch(bus, spath, map, ev, n, &m);
	free(ev);
	dt_assert(r >= 0, "building %s: %s", member, strerror(-r));
	r = sd_bus_call(bus, m, 0, &e, NULL);
	if (!want_error)
		dt_assert(r >= 0, "%s of %zu entries failed: %s (%s)", member, n,
			  e.message ? e.message : strerror(-r), e.name ? e.name : "?");
	else {
		dt_assert(r < 0, "%s succeeded, expected %s", member, want_error);
		dt_assert(sd_bus_error_has_name(&e, want_error),
			  "%s failed with %s (%s), expected %s", member, e.name ? e.name : "?",
			  e.message ? e.message : "", want_error);
		dt_assert(!needle || (e.message && strstr(e.message, needle)),
			  "%s: message \"%s\" lacks \"%s\"", member, e.message, needle);
	}
	sd_bus_error_free(&e);
	sd_bus_message_unref(m);
}

/* The same batch on the event channel: it must complete, in order, without an error. */
static void channel_call(bool map, const struct mapping *v, size_t n)
{
	struct iod_mapping ev[IOD_EVENT_MAX_ENTRIES];
	struct iod_channel_completion c;
	int r;

	dt_assert(n > 0 && n <= IOD_EVENT_MAX_ENTRIES, "a channel batch of %zu", n);
	for (size_t i = 0; i < n; i++)
		ev[i] = (struct iod_mapping){
			.iova = v[i].iova, .gpa = v[i].gpa, .length = v[i].size};
	r = iod_channel_send(chan, map ? IOD_EVENT_MAP : IOD_EVENT_UNMAP, ++chan_seq, ev, n);
	dt_assert(r >= 0, "event channel send: %s", strerror(-r));
	r = iod_channel_recv(chan, &c);
	dt_assert(r >= 0, "event channel completion: %s", strerror(-r));
	dt_assert(c.seq == chan_seq && c.error == 0 && c.flags == 0,
		  "event channel: batch %" PRIu64 " of %zu %s: completion for %" PRIu64
		  ", flags 0x%x: %s %s",
		  chan_seq, n, map ? "maps" : "unmaps", c.seq, c.flags, c.name, c.message);
	stats.channel++;
}

/* Map or Unmap events, told to the daemon on the bus or, with a channel open, on it (half
 * of the time each): both must give the same exact log. */
static void tell(bool map, const struct mapping *v, size_t n)
{
	if (chan >= 0 && rng_below(2)) {
		channel_call(map, v, n);
		return;
	}
	if (n == 1 && rng_below(2)) {
		if (map)
			scall("Map", "ttt", v[0].iova, v[0].gpa, v[0].size);
		else
			scall("Unmap", "tt", v[0].iova, v[0].size);
		return;
	}
	batch_call(map, v, n, NULL, NULL);
}

/* Several new ranges into the IOAS, then one MapBatch for all of them. */
static void op_map_batch(void)
{
	size_t first = n_maps, want = 2 + rng_below(7);

	while (n_maps - first < want && n_maps < MAX_MAPPINGS && ioas_map_random())
		;
	if (n_maps == first)
		return;
	tell(true, &maps[first], n_maps - first);
	stats.map_batch++;
	stats.batched += n_maps - first;
}

static bool tracking = true;

static void op_mark(void)
{
	const struct mapping *m;
	uint64_t first, npages, nr, want;
	unsigned halves, dev;
	int r;

	if (n_maps == 0 || !tracking)
		return;
	m = &maps[rng_below(n_maps)];
	first = rng_below(m->size / LOG_PAGE);
	npages = m->size / LOG_PAGE - first;
	npages = 1 + rng_below(npages < 16 ? npages : 16);
	halves = (unsigned)rng_below(3); /* 0 both IOPTEs, 1 the first, 2 the second */
	dev = (unsigned)rng_below(NDEV);
	r = mock_dirty(vmm.hwpt[dev], m->iova + first * LOG_PAGE, npages, halves, &nr);
	dt_assert(r == 0, "mock DIRTY: %s", strerror(-r));
	want = npages * (halves == 0 ? LOG_PAGE / vmm.mock_page : 1);
	dt_assert(nr == want, "the mock marked %" PRIu64 " IOPTEs, want %" PRIu64, nr, want);
	for (uint64_t i = 0; i < npages; i++)
		dt_pageset_add(&marked, m->gpa + (first + i) * LOG_PAGE);
	stats.mark++;
}

static void forget(size_t i)
{
	maps[i] = maps[--n_maps];
}

static void op_unmap(void)
{
	size_t i, next = SIZE_MAX;
	uint64_t start, end, unmapped, want;
	int r;

	if (n_maps == 0)
		return;
	i = rng_below(n_maps);
	start = maps[i].iova;
	end = maps[i].iova + maps[i].size;
	want = maps[i].size;
	/* a third of the time: this mapping, the hole after it and the next mapping */
	if (rng_below(3) == 0) {
		for (size_t k = 0; k < n_maps; k++)
			if (maps[k].iova >= end &&
			    (next == SIZE_MAX || maps[k].iova < maps[next].iova))
				next = k;
		if (next != SIZE_MAX) {
			end = maps[next].iova + maps[next].size;
			want += maps[next].size;
			stats.span++;
		}
	}

	/* adopt mode: the daemon first, while the range is still in the IOAS */
	tell(false, &(struct mapping){.iova = start, .size = end - start}, 1);
	r = iod_ioas_unmap(vmm.ictx, vmm.ioas, start, end - start, &unmapped);
	dt_assert(r == 0, "IOAS unmap [0x%" PRIx64 ", 0x%" PRIx64 "): %s", start, end,
		  iod_strerror(r));
	dt_assert(unmapped == want, "IOAS unmap: %" PRIu64 " bytes, want %" PRIu64, unmapped, want);
	/* swap-remove the higher index first: the lower one stays where it is */
	if (next != SIZE_MAX && next > i) {
		forget(next);
		forget(i);
	} else if (next != SIZE_MAX) {
		forget(i);
		forget(next);
	} else {
		forget(i);
	}
	stats.unmap++;
}

static int cmp_index_desc(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* One UnmapBatch for several mappings (and now and then a range with nothing mapped), then
 * IOMMU_IOAS_UNMAP of each: the adopt-mode protocol for a whole batch. */
static void op_unmap_batch(void)
{
	struct mapping v[8];
	size_t pick[8], k = 2 + rng_below(6), n = 0;
	uint64_t unmapped;
	int r;

	if (n_maps < 2)
		return;
	if (k > n_maps)
		k = n_maps;
	/* k distinct mappings: a partial Fisher-Yates shuffle of the indices */
	{
		size_t idx[MAX_MAPPINGS];

		for (size_t i = 0; i < n_maps; i++)
			idx[i] = i;
		for (size_t i = 0; i < k; i++) {
			size_t j = i + rng_below(n_maps - i), t = idx[i];

			idx[i] = idx[j];
			idx[j] = t;
			pick[i] = idx[i];
			v[n++] = maps[idx[i]];
		}
	}
	/* guests unmap generously: a range past the aperture has nothing mapped */
	if (rng_below(4) == 0)
		v[n++] = (struct mapping){.iova = IOD_MOCK_APERTURE_END, .size = 4 * LOG_PAGE};

	tell(false, v, n);
	for (size_t i = 0; i < k; i++) {
		r = iod_ioas_unmap(vmm.ictx, vmm.ioas, v[i].iova, v[i].size, &unmapped);
		dt_assert(r == 0, "IOAS unmap [0x%" PRIx64 ", +0x%" PRIx64 "): %s", v[i].iova,
			  v[i].size, iod_strerror(r));
		dt_assert(unmapped == v[i].size, "IOAS unmap: %" PRIu64 " bytes, want %" PRIu64,
			  unmapped, v[i].size);
	}
	/* swap-remove from the highest index down: lower ones stay where they are */
	qsort(pick, k, sizeof(pick[0]), cmp_index_desc);
	for (size_t i = 0; i < k; i++)
		forget(pick[i]);
	stats.unmap_batch++;
	stats.unbatched += k;
}

/* lost: marked but never harvested; spurious: harvested but never marked */
static void compare(uint64_t *ret_lost, uint64_t *ret_spurious, bool print)
{
	uint64_t lost = 0, spurious = 0;

	for (uint64_t p = 0; p < marked.npages; p++) {
		bool m = dt_pageset_test(&marked, p), h = dt_pageset_test(&harvested, p);

		if (m == h)
			continue;
		if (m)
			lost++;
		else
			spurious++;
		if (print && lost + spurious <= 8)
			printf("  GPA page 0x%" PRIx64 ": %s\n", p << LOG_SHIFT,
			       m ? "marked, never harvested (lost)" : "harvested, never marked");
	}
	*ret_lost = lost;
	*ret_spurious = spurious;
}

static void run_random(unsigned ops)
{
	const uint32_t hwpts[NDEV] = {vmm.hwpt[0], vmm.hwpt[1]};
	uint64_t lost, spurious;
	time_t t0 = time(NULL);

	adopt("adopt-torture", hwpts, NDEV, true);
	scall("AddRegion", "tt", UINT64_C(0), GUEST_SIZE);
	scall("Start", "");
	{
		int r = iod_channel_open(bus, spath, &chan, &chan_seq);

		dt_assert(r >= 0, "OpenEventChannel: %s", strerror(-r));
		dt_assert(chan_seq == 0, "a new session's event sequence is %" PRIu64, chan_seq);
	}

	for (unsigned op = 0; op < ops; op++) {
		uint64_t dice = rng_below(1000);

		if (dice < 200 && n_maps < MAX_MAPPINGS)
			op_map();
		else if (dice < 250 && n_maps < MAX_MAPPINGS)
			op_map_batch();
		else if (dice < 600)
			op_mark();
		else if (dice < 760 || n_maps >= MAX_MAPPINGS)
			op_unmap();
		else if (dice < 800)
			op_unmap_batch();
		else if (dice < 910)
			harvest();
		else if (dice < 960)
			harvest_ranges();
		else if (dice < 985)
			peek();
		else if (dice < 993) {
			/* Start while tracking: must not wipe a single bit */
			scall("Start", "");
			stats.restart++;
		} else {
			/* Stop keeps what the hardware had, Start begins afresh */
			scall("Stop", "");
			tracking = false;
			if (rng_below(2))
				op_unmap();
			scall("Start", "");
			tracking = true;
			stats.stop++;
		}
	}
	while (n_maps > 0 && rng_below(2))
		op_unmap();
	harvest();
	harvest(); /* the second one delivers a round left unacknowledged by the first */
	scall("Acknowledge", "t",
	      dt_get_u64(bus, spath, DT_SES_IFACE, "Rounds", 't')); /* may be a no-op */

	printf("%u ops in %ld s: %u maps, %u unmaps (%u spans), %u MapBatch (%u mappings), "
	       "%u UnmapBatch (%u mappings), %u of these on the event channel, %u marks, "
	       "%u harvests (%u left unacknowledged), "
	       "%u range harvests (%u truncated), %u peeks, %u second Starts, %u Stop/Start\n",
	       ops, (long)(time(NULL) - t0), stats.map, stats.unmap, stats.span, stats.map_batch,
	       stats.batched, stats.unmap_batch, stats.unbatched, stats.channel, stats.mark,
	       stats.harvest, stats.unacked, stats.ranges, stats.truncated, stats.peek,
	       stats.restart, stats.stop);
	compare(&lost, &spurious, true);
	printf("marked %" PRIu64 " pages, harvested %" PRIu64 ": %" PRIu64 " lost, %" PRIu64
	       " spurious\n",
	       dt_pageset_count(&marked), dt_pageset_count(&harvested), lost, spurious);
	dt_assert(lost == 0 && spurious == 0, "the harvested pages differ from the marked ones");
	dt_assert(dt_pageset_count(&marked) > 100, "too few pages marked to mean anything");
	dt_assert(stats.map_batch > 0 && stats.unmap_batch > 0,
		  "no batches among the random operations");
	dt_assert(stats.channel > 0, "no events went over the event channel");
	{
		/* A resend of the last batch (its completion lost, say): not applied again. */
		struct iod_channel_completion c;
		uint64_t mappings = dt_get_u64(bus, spath, DT_SES_IFACE, "Mappings", 'u');
		struct iod_mapping e = {.iova = IOD_MOCK_APERTURE_END, .length = LOG_PAGE};

		dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "EventSequence", 't') == chan_seq,
			  "EventSequence is not the last batch's %" PRIu64, chan_seq);
		dt_assert(iod_channel_send(chan, IOD_EVENT_UNMAP, chan_seq, &e, 1) == 0 &&
				  iod_channel_recv(chan, &c) == 0,
			  "resend on the event channel");
		dt_assert(c.seq == chan_seq && c.error == 0 &&
				  c.flags == IOD_EVENT_COMPLETION_REPLAYED,
			  "a resent batch: error %d, flags 0x%x", c.error, c.flags);
		dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "Mappings", 'u') == mappings,
			  "a resent batch changed the mappings");
		close(chan);
		chan = -1;
		dt_pass("event channel: %u of the event calls went over it; a resent batch "
			"completes as a replay and changes nothing",
			stats.channel);
	}
	dt_pass("adopt, vIOMMU, %u random operations: harvested GPA pages == marked pages (%" PRIu64
		")",
		ops, dt_pageset_count(&marked));
}

/* The comparison above can fail, and the order of the adopt-mode unmap protocol matters. */
static void negative_controls(void)
{
	uint64_t lost, spurious, iova, gpa, nr;
	int r;

	/* 1. a page marked after the final harvest is missing: one never marked before */
	iova = gpa = UINT64_MAX;
	while (iova == UINT64_MAX) {
		for (size_t i = 0; i < n_maps && iova == UINT64_MAX; i++)
			for (uint64_t o = 0; o < maps[i].size; o += LOG_PAGE)
				if (!dt_pageset_test(&marked, (maps[i].gpa + o) >> LOG_SHIFT)) {
					iova = maps[i].iova + o;
					gpa = maps[i].gpa + o;
					break;
				}
		if (iova == UINT64_MAX)
			op_map();
	}
	r = mock_dirty(vmm.hwpt[0], iova, 1, 0, &nr);
	dt_assert(r == 0 && nr > 0, "mock DIRTY");
	dt_pageset_add(&marked, gpa);
	compare(&lost, &spurious, false);
	dt_assert(lost == 1 && spurious == 0,
		  "negative control: a late mark went unnoticed (%" PRIu64 " lost)", lost);
	harvest();
	compare(&lost, &spurious, false);
	dt_assert(lost == 0 && spurious == 0, "the late mark was not harvested");
	dt_pass("negative control: a mark after the last harvest is reported lost, the next "
		"harvest has it");
}

/*
 * The kernel this runs on, from the raw ioctl: a read without clearing over IOVA 0, outside
 * the mock aperture, is 0 on a "silent" kernel and EINVAL on a "strict" one; anything else
 * fails the test. The daemon must have found the same (Manager1.KernelHoleBehavior).
 */
static enum iod_hole_behavior kernel_holes(void)
{
	struct iommu_hwpt_get_dirty_bitmap cmd = {
		.size = sizeof(cmd),
		.hwpt_id = vmm.hwpt[0],
		.flags = IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
		.iova = 0,
		.length = (uint64_t)sysconf(_SC_PAGESIZE),
		.page_size = (uint64_t)sysconf(_SC_PAGESIZE),
	};
	enum iod_hole_behavior b;
	uint64_t word = 0;
	char *daemon;
	int r;

	cmd.data = (uintptr_t)&word;
	r = ioctl(vmm.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, &cmd) < 0 ? -errno : 0;
	dt_assert(r == 0 || r == -EINVAL,
		  "a dirty read over unmapped IOVA returned %d: neither the silent (0) nor the "
		  "strict (EINVAL) kernel behaviour",
		  r);
	b = r == 0 ? IOD_HOLES_SILENT : IOD_HOLES_STRICT;
	daemon = dt_get_string(bus, DT_MANAGER, DT_MGR_IFACE, "KernelHoleBehavior");
	dt_assert(strcmp(daemon, iod_hole_behavior_to_string(b)) == 0,
		  "Manager1.KernelHoleBehavior is \"%s\", the kernel behaves \"%s\"", daemon,
		  iod_hole_behavior_to_string(b));
	free(daemon);
	printf("kernel behaviour: \"%s\" (a dirty read over unmapped IOVA %s)\n",
	       iod_hole_behavior_to_string(b),
	       b == IOD_HOLES_STRICT ? "fails with EINVAL: Linux 6.12.118 and later"
				     : "returns 0 without the bits: Linux up to 6.12.117");
	return b;
}

/*
 * The wrong order: out of the IOAS before the daemon is told. The bits are lost either way;
 * a silent kernel lets it pass unnoticed (the comparison sees the lost page), a strict one
 * makes the daemon's pre-unmap harvest fail, and with it the session, visibly. Last on this
 * session: on a strict kernel it fails.
 */
static void negative_control_order(void)
{
	enum iod_hole_behavior holes = kernel_holes();
	uint64_t lost, spurious, iova, size, gpa, nr, page;
	char *s;
	int r;

	size = 4 * LOG_PAGE;
	gpa = GUEST_SIZE - size;
	while (dt_pageset_test(&marked, (gpa + LOG_PAGE) >> LOG_SHIFT))
		gpa -= LOG_PAGE;
	iova = IOD_MOCK_APERTURE_END - size;
	while (overlaps(iova, size))
		iova -= SZ_1M;
	r = iod_ioas_map(vmm.ictx, vmm.ioas, vmm.guest + gpa, size, iova,
			 IOD_MAP_READ | IOD_MAP_WRITE);
	dt_assert(r == 0, "IOAS map: %s", iod_strerror(r));
	scall("Map", "ttt", iova, gpa, size);
	r = mock_dirty(vmm.hwpt[1], iova + LOG_PAGE, 1, 0, &nr);
	dt_assert(r == 0 && nr > 0, "mock DIRTY");
	page = gpa + LOG_PAGE;
	dt_pageset_add(&marked, page);
	r = iod_ioas_unmap(vmm.ictx, vmm.ioas, iova, size, NULL);
	dt_assert(r == 0, "IOAS unmap: %s", iod_strerror(r));
	scall("Unmap", "tt", iova, size); /* too late: the IOPTEs are gone */

	if (holes == IOD_HOLES_SILENT) {
		harvest();
		compare(&lost, &spurious, false);
		dt_assert(lost == 1 && spurious == 0,
			  "negative control: unmapping before telling the daemon lost %" PRIu64
			  " pages, want 1",
			  lost);
		/* That page is lost by design: it leaves the comparisons that follow. */
		marked.bits[(page >> LOG_SHIFT) / 64] &= ~(UINT64_C(1)
							   << ((page >> LOG_SHIFT) % 64));
		compare(&lost, &spurious, false);
		dt_assert(lost == 0 && spurious == 0, "the control's page is still counted");
		dt_pass("negative control (silent kernel): IOMMU_IOAS_UNMAP before Unmap loses the "
			"page unnoticed by the daemon, and the check sees it");
		return;
	}

	s = dt_get_string(bus, spath, DT_SES_IFACE, "State");
	dt_assert(strcmp(s, "failed") == 0, "State is %s after the too-late Unmap, want failed", s);
	free(s);
	dt_assert(!dt_get_u64(bus, spath, DT_SES_IFACE, "LogComplete", 'b'), "LogComplete");
	s = dt_get_string(bus, spath, DT_SES_IFACE, "FailureReason");
	dt_assert(strstr(s, "not wholly mapped") && strstr(s, "bits are lost"),
		  "FailureReason does not say what happened: %s", s);
	printf("FailureReason: %s\n", s);
	free(s);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Harvest",
				     "org.iodirty.Error.SessionFailed", "a{sv}", 0));
	dt_pass("negative control (strict kernel): IOMMU_IOAS_UNMAP before Unmap fails the "
		"daemon's pre-unmap harvest with EINVAL, and the session fails visibly");
}

/*
 * HarvestRanges in IOVA space cannot report a page that no IOVA maps any more (it was
 * harvested before an Unmap): it says so (NotMapped) instead of leaving it out, the round
 * stays pending, and in GPA space the page is there.
 */
/* Does a live mapping translate some IOVA to the guest page at gpa? */
static bool gpa_mapped(uint64_t gpa)
{
	for (size_t i = 0; i < n_maps; i++)
		if (gpa >= maps[i].gpa && gpa - maps[i].gpa < maps[i].size)
			return true;
	return false;
}

static void iova_space_after_unmap(void)
{
	uint64_t size = 4 * LOG_PAGE, iova = free_iova(size), gpa, nr;
	struct dt_pageset round;
	sd_bus_message *reply;
	uint64_t rnd, dirty, usec, start, length, page;
	int truncated, precise;
	char needle[96];

	/* A page never marked that no live mapping reaches: once its one mapping is gone, no
	 * IOVA maps it (another IOVA that did would let the daemon answer, rightly). */
	gpa = GUEST_SIZE - 8 * LOG_PAGE;
	while (dt_pageset_test(&marked, (gpa + LOG_PAGE) >> LOG_SHIFT) ||
	       gpa_mapped(gpa + LOG_PAGE)) {
		dt_assert(gpa >= LOG_PAGE, "no page of guest memory is free of marks and mappings");
		gpa -= LOG_PAGE;
	}
	page = gpa + LOG_PAGE;
	harvest(); /* start from an empty round */
	scall("Acknowledge", "t", dt_get_u64(bus, spath, DT_SES_IFACE, "Rounds", 't'));
	ioas_map_at(iova, gpa, size);
	scall("Map", "ttt", iova, gpa, size);
	dt_assert(mock_dirty(vmm.hwpt[0], iova + LOG_PAGE, 1, 0, &nr) == 0 && nr, "mock DIRTY");
	dt_pageset_add(&marked, page);
	scall("Unmap", "tt", iova, size);
	dt_assert(iod_ioas_unmap(vmm.ictx, vmm.ioas, iova, size, NULL) == 0, "IOAS unmap");
	n_maps--;

	snprintf(needle, sizeof(needle), "1 dirty page(s) of round");
	dt_call_fails(bus, spath, DT_SES_IFACE, "HarvestRanges", "org.iodirty.Error.NotMapped",
		      needle, "a{sv}", 1, "space", "s", "iova");
	rnd = dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't');
	dt_assert(rnd > 0, "the refused round is not pending");

	reply = dt_call(bus, spath, DT_SES_IFACE, "HarvestRanges", NULL, "a{sv}", 1, "space", "s",
			"gpa");
	dt_assert(sd_bus_message_read(reply, "t", &rnd) > 0 &&
			  sd_bus_message_enter_container(reply, 'a', "(tt)") > 0,
		  "HarvestRanges reply");
	dt_pageset_init(&round, GUEST_SIZE, LOG_SHIFT);
	while (sd_bus_message_read(reply, "(tt)", &start, &length) > 0)
		for (uint64_t a = start; a < start + length; a += LOG_PAGE)
			dt_pageset_add(&round, a);
	dt_assert(sd_bus_message_exit_container(reply) >= 0 &&
			  sd_bus_message_read(reply, "btbt", &truncated, &dirty, &precise, &usec) >
				  0,
		  "HarvestRanges reply");
	dt_assert(dt_pageset_test(&round, page >> LOG_SHIFT) && dirty == 1,
		  "GPA space: the page harvested before the Unmap is missing (%" PRIu64 " pages)",
		  dirty);
	check_subset(&round, "HarvestRanges gpa");
	for (uint64_t w = 0; w < iod_bitmap_words(round.npages); w++)
		harvested.bits[w] |= round.bits[w];
	free(round.bits);
	sd_bus_message_unref(reply);
	scall("Acknowledge", "t", rnd);
	dt_pass("HarvestRanges in IOVA space with a dirty page no IOVA maps any more: NotMapped, "
		"the round stays pending, and GPA space has the page");
}

/*
 * Without a vIOMMU a region is also the mapping harvests read: AddRegion refuses a range
 * with a hole in the client's IOAS (where the kernel would drop bits or fail), and takes
 * each mapped piece.
 */
static void region_with_hole(void)
{
	uint64_t size = 16 * LOG_PAGE, base = free_iova_at(UINT64_C(1) << 30, 3 * size);
	char *saved = spath ? strdup(spath) : NULL;
	char needle[96];

	ioas_map_at(base, 0, size);
	ioas_map_at(base + 2 * size, size, size); /* [base + size, base + 2 size) is a hole */
	adopt("adopt-hole", &vmm.hwpt[0], 1, false); /* never started: it must not ENABLE */
	snprintf(needle, sizeof(needle), "not wholly mapped in ioas %u", vmm.ioas);
	dt_call_fails(bus, spath, DT_SES_IFACE, "AddRegion", "org.iodirty.Error.InvalidRange",
		      needle, "tt", base, 3 * size);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "TrackedBytes", 't') == 0,
		  "a refused AddRegion added memory");
	scall("AddRegion", "tt", base, size);
	scall("AddRegion", "tt", base + 2 * size, size);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "TrackedBytes", 't') == 2 * size,
		  "the two mapped pieces are not tracked");
	scall("Destroy", "");
	free(spath);
	spath = saved;
	for (int i = 0; i < 2; i++) {
		dt_assert(iod_ioas_unmap(vmm.ictx, vmm.ioas, maps[n_maps - 1].iova,
					 maps[n_maps - 1].size, NULL) == 0,
			  "IOAS unmap");
		n_maps--;
	}
	dt_pass("AddRegion without a vIOMMU refuses a range with a hole in the IOAS "
		"(InvalidRange) and takes each mapped piece");
}

/*
 * An IOAS that maps with huge IOPTEs: one dirty bit covers 1 MiB of the mock, the kernel
 * reports all of it dirty, so the session says it is not precise (HugePages, Precise).
 */
static void huge_pages_are_not_precise(void)
{
	const uint64_t size = 2 * SZ_1M, iova = free_iova_at(UINT64_C(1) << 30, size);
	uint32_t ioas, stdev, idev, hwpt;
	struct iod_mock_cmd cmd = {.size = sizeof(cmd), .op = IOD_MOCK_OP_DOMAIN_FLAGS};
	char *saved = spath ? strdup(spath) : NULL;
	const char *why = NULL;
	sd_bus_message *reply;
	uint64_t nr, rnd, dirty, usec;
	int fd, precise;
	void *buf;

	buf = vm_huge_buffer(size, IOD_MOCK_HUGE_IOPTE_PAGES * vmm.mock_page, &why);
	dt_assert(buf, "no huge buffer in the test guest: %s", why);
	dt_assert(iod_ioas_alloc(vmm.ictx, &ioas) == 0, "IOAS alloc"); /* huge pages on */
	cmd.id = ioas;
	cmd.domain.dev_flags = IOD_MOCK_DEV_HUGE_IOVA;
	dt_assert(ioctl(vmm.fd, IOD_MOCK_CMD, &cmd) == 0, "mock device with huge IOPTEs");
	stdev = cmd.domain.out_stdev_id;
	idev = cmd.domain.out_idev_id;
	dt_assert(iod_hwpt_alloc(vmm.ictx, idev, ioas, IOD_HWPT_DIRTY, &hwpt) == 0, "dirty HWPT");
	dt_assert(iod_mock_replace(vmm.fd, stdev, hwpt) == 0, "attach");
	dt_assert(iod_ioas_map(vmm.ictx, ioas, buf, size, iova, IOD_MAP_READ | IOD_MAP_WRITE) == 0,
		  "IOAS map");

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}",
			"adopt-huge", vmm.fd, ioas, 1, hwpt, 0);
	sd_bus_message_unref(reply);
	free(spath);
	spath = strdup("/org/iodirty/Tracker1/session/adopt_2dhuge");
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "HugePages", 'b'),
		  "HugePages is false for an IOAS with huge pages on");
	dt_assert(!dt_get_u64(bus, spath, DT_SES_IFACE, "Precise", 'b'),
		  "Precise is true although huge IOPTEs may map");
	scall("AddRegion", "tt", iova, size);
	scall("Start", "");
	dt_assert(mock_dirty(hwpt, iova + 3 * LOG_PAGE, 1, 1, &nr) == 0 && nr == 1, "mock DIRTY");
	reply = dt_call(bus, spath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	dt_assert(sd_bus_message_read(reply, "thtbt", &rnd, &fd, &dirty, &precise, &usec) > 0,
		  "Harvest reply");
	dt_assert(!precise, "a round over huge IOPTEs says it is precise");
	dt_assert(dirty == SZ_1M / LOG_PAGE,
		  "one dirty mock page under a huge IOPTE gave %" PRIu64
		  " dirty pages, want %" PRIu64,
		  dirty, SZ_1M / LOG_PAGE);
	sd_bus_message_unref(reply);
	scall("Destroy", "");
	free(spath);
	spath = saved;
	dt_assert(iod_iommufd_destroy(vmm.ictx, stdev) == 0, "destroy the mock device");
	dt_assert(iod_iommufd_destroy(vmm.ictx, hwpt) == 0, "destroy the HWPT");
	dt_assert(iod_iommufd_destroy(vmm.ictx, ioas) == 0, "destroy the IOAS");
	munmap(buf, size);
	dt_pass("an IOAS with huge IOPTEs: HugePages true, Precise false, and one dirty mock page "
		"harvests as %" PRIu64 " pages (1 MiB), marked not precise",
		SZ_1M / LOG_PAGE);
}

static unsigned mappings_changed;

/* Count the PropertiesChanged signals of the session that name Mappings. */
static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	const char *iface = NULL, *name = NULL;
	bool seen = false;

	if (sd_bus_message_read(m, "s", &iface) <= 0 || strcmp(iface, DT_SES_IFACE) != 0)
		return 0;
	if (sd_bus_message_enter_container(m, 'a', "{sv}") > 0) {
		while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
			if (sd_bus_message_read(m, "s", &name) > 0 && strcmp(name, "Mappings") == 0)
				seen = true;
			(void)sd_bus_message_skip(m, "v");
			(void)sd_bus_message_exit_container(m);
		}
		(void)sd_bus_message_exit_container(m);
	}
	if (sd_bus_message_enter_container(m, 'a', "s") > 0) {
		while (sd_bus_message_read(m, "s", &name) > 0)
			if (strcmp(name, "Mappings") == 0)
				seen = true;
		(void)sd_bus_message_exit_container(m);
	}
	if (seen)
		mappings_changed++;
	return 0;
}

/* Signals come before the reply that follows them: dispatch what the last call queued. */
static unsigned take_mappings_changed(void)
{
	unsigned n;

	while (sd_bus_process(bus, NULL) > 0)
		;
	n = mappings_changed;
	mappings_changed = 0;
	return n;
}

static void expect_mappings(uint64_t count, uint64_t bytes, const char *when)
{
	uint64_t c = dt_get_u64(bus, spath, DT_SES_IFACE, "Mappings", 'u');
	uint64_t b = dt_get_u64(bus, spath, DT_SES_IFACE, "MappedBytes", 't');

	dt_assert(c == count && b == bytes,
		  "%s: Mappings %" PRIu64 ", MappedBytes 0x%" PRIx64 "; want %" PRIu64
		  ", 0x%" PRIx64,
		  when, c, b, count, bytes);
}

/* MapBatch and UnmapBatch one by one: properties, signals, refusals, the limit, exactness. */
static void batch_checks(void)
{
	const uint64_t max = dt_get_u64(bus, DT_MANAGER, DT_MGR_IFACE, "MaxMappings", 'u');
	uint64_t m0, b0, bytes = 0, lost, spurious, nr;
	struct mapping bad[2], v[4], *big;
	sd_bus_slot *slot = NULL;
	size_t first, n;
	char needle[160];

	while (n_maps + 3 > MAX_MAPPINGS)
		op_unmap();
	m0 = dt_get_u64(bus, spath, DT_SES_IFACE, "Mappings", 'u');
	b0 = dt_get_u64(bus, spath, DT_SES_IFACE, "MappedBytes", 't');
	dt_assert(sd_bus_match_signal(bus, &slot, DT_DEST, spath, "org.freedesktop.DBus.Properties",
				      "PropertiesChanged", on_properties_changed, NULL) >= 0,
		  "match PropertiesChanged");
	(void)take_mappings_changed();

	batch_call(true, NULL, 0, NULL, NULL);
	batch_call(false, NULL, 0, NULL, NULL);
	expect_mappings(m0, b0, "after empty batches");
	dt_assert(take_mappings_changed() == 0, "an empty batch sent PropertiesChanged");
	dt_pass("empty MapBatch and UnmapBatch succeed and change nothing");

	/* three mappings of 2, 3 and 4 pages, one MapBatch */
	first = n_maps;
	for (uint64_t i = 0; i < 3; i++) {
		uint64_t size = (2 + i) * LOG_PAGE;

		ioas_map_at(free_iova(size), GUEST_SIZE - (i + 1) * 4 * LOG_PAGE, size);
		bytes += size;
	}
	batch_call(true, &maps[first], 3, NULL, NULL);
	expect_mappings(m0 + 3, b0 + bytes, "after MapBatch of 3");
	dt_assert(take_mappings_changed() == 1, "MapBatch of 3 did not send one PropertiesChanged");
	dt_pass("MapBatch of 3: Mappings +3, MappedBytes +0x%" PRIx64 ", one PropertiesChanged",
		bytes);

	/* refused batches change nothing */
	bad[0] = (struct mapping){.iova = free_iova(LOG_PAGE), .gpa = 0, .size = LOG_PAGE};
	bad[1] = (struct mapping){
		.iova = maps[first + 1].iova + LOG_PAGE, .gpa = 0, .size = LOG_PAGE};
	snprintf(needle, sizeof(needle),
		 "maps[1]: IOVA [0x%" PRIx64 ", 0x%" PRIx64 ") overlaps an existing mapping",
		 bad[1].iova, bad[1].iova + LOG_PAGE);
	batch_call(true, bad, 2, "org.iodirty.Error.InvalidRange", needle);
	expect_mappings(m0 + 3, b0 + bytes, "after MapBatch overlapping a mapping");
	dt_pass("MapBatch overlapping an existing mapping: InvalidRange naming maps[1], nothing "
		"changed");

	bad[1] = (struct mapping){.iova = maps[first + 2].iova + LOG_PAGE, .size = LOG_PAGE};
	bad[0] = (struct mapping){.iova = maps[first].iova, .size = maps[first].size};
	snprintf(needle, sizeof(needle), "ranges[1]: Unmap at 0x%" PRIx64 " cuts the mapping",
		 bad[1].iova);
	batch_call(false, bad, 2, "org.iodirty.Error.InvalidRange", needle);
	expect_mappings(m0 + 3, b0 + bytes, "after UnmapBatch cutting a mapping");
	dt_assert(take_mappings_changed() == 0, "a refused batch sent PropertiesChanged");
	dt_pass("UnmapBatch cutting a mapping: InvalidRange naming ranges[1], nothing changed, "
		"not even ranges[0]");

	/* the limit counts the whole batch: one entry more than the room left */
	n = (size_t)(max - (m0 + 3) + 1);
	big = calloc(max + 1, sizeof(*big));
	dt_assert(big, "out of memory");
	for (size_t i = 0; i <= max; i++) /* past the aperture, GPAs aliased */
		big[i] = (struct mapping){.iova = (UINT64_C(1) << 40) + i * LOG_PAGE,
					  .gpa = (i % (GUEST_SIZE / LOG_PAGE)) * LOG_PAGE,
					  .size = LOG_PAGE};
	batch_call(true, big, n, "org.iodirty.Error.LimitExceeded", "more would be over the limit");
	expect_mappings(m0 + 3, b0 + bytes, "after MapBatch over the room left");
	batch_call(true, big, max + 1, "org.iodirty.Error.LimitExceeded", "A batch of more than");
	expect_mappings(m0 + 3, b0 + bytes, "after MapBatch over MaxMappings");
	free(big);
	dt_pass("MapBatch of %zu entries with room for %zu, and of MaxMappings + 1 = %" PRIu64
		": LimitExceeded, nothing changed",
		n, n - 1, max + 1);

	/* dirty pages in all three, then the adopt protocol: UnmapBatch, then the IOAS unmaps */
	for (size_t i = 0; i < 3; i++) {
		const struct mapping *m = &maps[first + i];

		dt_assert(mock_dirty(vmm.hwpt[i % NDEV], m->iova + LOG_PAGE, 1, 0, &nr) == 0 && nr,
			  "mock DIRTY");
		dt_pageset_add(&marked, m->gpa + LOG_PAGE);
		v[i] = *m;
	}
	v[3] = (struct mapping){.iova = IOD_MOCK_APERTURE_END, .size = SZ_1M}; /* nothing there */
	batch_call(false, v, 4, NULL, NULL);
	expect_mappings(m0, b0, "after UnmapBatch");
	dt_assert(take_mappings_changed() == 1, "UnmapBatch did not send one PropertiesChanged");
	for (size_t i = 0; i < 3; i++)
		dt_assert(iod_ioas_unmap(vmm.ictx, vmm.ioas, v[i].iova, v[i].size, NULL) == 0,
			  "IOAS unmap");
	n_maps = first;
	harvest();
	harvest();
	compare(&lost, &spurious, true);
	dt_assert(lost == 0 && spurious == 0,
		  "after UnmapBatch: %" PRIu64 " pages lost, %" PRIu64 " spurious", lost, spurious);
	dt_pass("UnmapBatch of 3 mappings and a hole: Mappings -3, one PropertiesChanged, the dirty "
		"pages harvested before IOMMU_IOAS_UNMAP");
	sd_bus_slot_unref(slot);
}

static bool failed_signal;
static int on_failed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	const char *reason = NULL;

	(void)sd_bus_message_read(m, "s", &reason);
	printf("signal Failed: %s\n", reason ? reason : "?");
	failed_signal = true;
	return 0;
}

/* Destroy turns off what Start turned on; a HWPT gone under a session fails it. */
static void destroy_and_fail(void)
{
	uint64_t nr, iova = IOD_MOCK_APERTURE_START, size = 8 * LOG_PAGE;
	uint32_t spare_stdev = 0, spare_idev = 0, hwpt;
	char *s;
	int r;

	scall("Destroy", "");
	/* the mock refuses DIRTY on a HWPT that does not track */
	r = mock_dirty(vmm.hwpt[0], IOD_MOCK_APERTURE_START, 1, 0, &nr);
	dt_assert(r == -EINVAL, "after Destroy the client's HWPT still tracks (mock DIRTY: %s)",
		  strerror(-r));
	dt_pass("Destroy turned off the tracking Start turned on");

	/* bad adoptions */
	{
		int memfd = memfd_create("not-an-iommufd", MFD_CLOEXEC);
		const uint32_t h = vmm.hwpt[0];

		sd_bus_message_unref(dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession",
					     SD_BUS_ERROR_INVALID_ARGS, "shuaua{sv}", "bad", memfd,
					     vmm.ioas, 1, h, 0));
		sd_bus_message_unref(dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession",
					     SD_BUS_ERROR_INVALID_ARGS, "shuaua{sv}", "bad", vmm.fd,
					     vmm.ioas, 1, 4242, 0));
		sd_bus_message_unref(dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession",
					     SD_BUS_ERROR_INVALID_ARGS, "shuaua{sv}", "bad", vmm.fd,
					     vmm.hwpt[0], 1, h, 0));
		close(memfd);
		dt_pass("AdoptSession refuses a non-iommufd, an unknown HWPT and a non-IOAS");
	}

	/* a third device on a HWPT of its own, then that HWPT goes away under the session */
	r = iod_mock_domain(vmm.fd, vmm.ioas, 0, &spare_stdev, NULL, &spare_idev);
	dt_assert(r == 0, "mock device: %s", strerror(-r));
	r = iod_hwpt_alloc(vmm.ictx, spare_idev, vmm.ioas, IOD_HWPT_DIRTY, &hwpt);
	dt_assert(r == 0, "dirty HWPT: %s", iod_strerror(r));
	dt_assert(iod_mock_replace(vmm.fd, spare_stdev, hwpt) == 0, "replace");

	adopt("adopt-fail", &hwpt, 1, true);
	dt_assert(sd_bus_match_signal(bus, NULL, DT_DEST, spath, DT_SES_IFACE, "Failed", on_failed,
				      NULL) >= 0,
		  "match Failed");
	scall("AddRegion", "tt", UINT64_C(0), GUEST_SIZE);
	scall("Start", "");
	while (overlaps(iova, size))
		iova += SZ_1M;
	r = iod_ioas_map(vmm.ictx, vmm.ioas, vmm.guest, size, iova, IOD_MAP_READ | IOD_MAP_WRITE);
	dt_assert(r == 0, "IOAS map: %s", iod_strerror(r));
	scall("Map", "ttt", iova, UINT64_C(0), size);
	dt_assert(mock_dirty(hwpt, iova, 2, 0, &nr) == 0, "mock DIRTY");

	/* the device moves back to the IOAS and the client destroys the HWPT it lent out */
	dt_assert(iod_mock_replace(vmm.fd, spare_stdev, vmm.ioas) == 0, "replace");
	dt_assert(iod_iommufd_destroy(vmm.ictx, hwpt) == 0, "destroy hwpt");

	/* the pre-unmap read fails: the unmap is accepted, the session fails */
	scall("Unmap", "tt", iova, size);
	dt_assert(iod_ioas_unmap(vmm.ictx, vmm.ioas, iova, size, NULL) == 0, "IOAS unmap");
	for (int i = 0; i < 50 && !failed_signal; i++) {
		dt_assert(sd_bus_process(bus, NULL) >= 0, "sd_bus_process");
		if (!failed_signal)
			(void)sd_bus_wait(bus, 100000);
	}
	dt_assert(failed_signal, "no Failed signal");
	s = dt_get_string(bus, spath, DT_SES_IFACE, "State");
	dt_assert(strcmp(s, "failed") == 0, "State is %s, want failed", s);
	free(s);
	dt_assert(!dt_get_u64(bus, spath, DT_SES_IFACE, "LogComplete", 'b'), "LogComplete");
	s = dt_get_string(bus, spath, DT_SES_IFACE, "FailureReason");
	dt_assert(*s, "no FailureReason");
	printf("FailureReason: %s\n", s);
	free(s);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Harvest",
				     "org.iodirty.Error.SessionFailed", "a{sv}", 0));
	dt_pass("a failed pre-unmap harvest fails the session: signal Failed, State failed, "
		"Harvest refused");
	scall("Destroy", "");
	dt_assert(iod_iommufd_destroy(vmm.ictx, spare_stdev) == 0, "destroy mock device");
}

int main(void)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} steps[] = {
		{"controls", negative_controls},
		{"batches", batch_checks},
		{"iova_space", iova_space_after_unmap},
		{"region_hole", region_with_hole},
		{"huge_pages", huge_pages_are_not_precise},
		{"order", negative_control_order},
		{"destroy", destroy_and_fail},
	};
	const char *o = getenv("IOD_TEST_OPS"), *only = getenv("IOD_TEST_ONLY");
	unsigned ops = o ? (unsigned)strtoul(o, NULL, 0) : 3000;

	setvbuf(stdout, NULL, _IOLBF, 0);
	rng_seed();
	dt_on_fail = rng_print_seed;

	dt_require_iommufd();
	vmm_setup();
	bus = dt_connect();
	dt_pageset_init(&marked, GUEST_SIZE, LOG_SHIFT);
	dt_pageset_init(&harvested, GUEST_SIZE, LOG_SHIFT);

	if (only) {
		/* One check on a fresh session, to show it pass or fail on its own. */
		adopt("adopt", vmm.hwpt, NDEV, true);
		scall("AddRegion", "tt", UINT64_C(0), GUEST_SIZE);
		scall("Start", "");
		for (size_t i = 0; i < ELEMENTSOF(steps); i++)
			if (strcmp(steps[i].name, only) == 0) {
				steps[i].fn();
				printf("%u checks passed (IOD_TEST_ONLY=%s)\n", dt_passed, only);
				return EXIT_SUCCESS;
			}
		dt_assert(false, "IOD_TEST_ONLY=%s is not one of this test's checks", only);
	}
	run_random(ops);
	for (size_t i = 0; i < ELEMENTSOF(steps); i++)
		steps[i].fn();

	sd_bus_flush_close_unref(bus);
	printf("%u checks passed\n", dt_passed);
	return EXIT_SUCCESS;
}
