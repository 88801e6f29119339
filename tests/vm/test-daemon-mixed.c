/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Mixed sessions against the kernel's iommufd mock devices, over the real D-Bus: a session
 * whose devices are on HWPTs of different kinds, dirty tracking ones (harvested exactly) and
 * one that cannot track (the fallback: its mapped ranges count as always dirty).
 *
 * The program plays a VMM: one IOAS (huge pages off), two mock devices each on a dirty
 * tracking HWPT of its own (h0, h1), and a mock device created with
 * MOCK_FLAGS_DEVICE_NO_DIRTY on a plain HWPT (hf). First the kernel facts the test relies on:
 * a dirty tracking HWPT for that device is refused (EOPNOTSUPP), and so is attaching it to
 * h0 (EINVAL). Then two sessions, lent to iodirtyd with AdoptSession:
 *
 *  - "mixed" [h0, hf], guest memory mapped IOVA = GPA: TrackingMode "mixed", Precise false,
 *    Hwpts says which HWPT tracks. The fallback marks every mapped range of the session's
 *    IOAS, and here that is the whole region: every round (Harvest and HarvestRanges) is
 *    exactly every page of the region, the pages marked on h0 among them, precise false.
 *    GetDirtyRate counts h0 exactly and lists no rate for hf (it has none: precise false).
 *  - "mixed3" [h0, h1, hf] with a vIOMMU: only windows of the region are mapped, so the
 *    fallback covers only them. Every round is exactly the windows mapped in it (also those
 *    unmapped in it: Unmap marks them first) plus the pages MarkDirty reported outside them,
 *    nothing else of the region; GetDirtyRate counts each of h0 and h1 exactly (also the
 *    pages of a window unmapped before the sample closes). Then the
 *    VMM detaches the fallback device and destroys hf: the next round still has everything
 *    dirtied before (nothing lost, hf's windows whole), the session neither fails nor stops
 *    tracking; after that round hf has left the session (Hwpts), which is "hardware" and
 *    precise again, and the round after is exactly the pages marked, precise.
 *
 * What the daemon's model allows, and so what is checked:
 *  - one IOAS per session, and every HWPT of an IOAS maps all of it: a range can never be
 *    mapped for the precise devices only. Where the fallback does not cover a page (outside
 *    the mapped windows), a device cannot reach it either; the pages there come from
 *    MarkDirty, and they are exact. The exactness of the precise HWPTs' own bits is seen
 *    per HWPT in GetDirtyRate; Harvest, HarvestRanges and the Precise property have one
 *    precise flag for the whole round (a GPA bitmap), false while a fallback HWPT is in the
 *    session;
 *  - an adopted session has no Device objects (its devices are the VMM's): the per-device
 *    TrackingMode exists in owner mode only, which needs VFIO cdevs (none in this machine);
 *  - adopt mode has no call that takes a HWPT out of a session and the daemon cannot see
 *    the VMM's devices: it learns that the fallback device left when the VMM destroys its
 *    HWPT (the kernel allows that only once no device is attached), at the next Harvest.
 *
 * IOD_TEST_SEED=<n> repeats a run; a failing run prints its seed last.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/iommufd.h>

#include "daemon-test.h"
#include "iodirty.h"
#include "iommufd-mock.h"
#include "mock-vmm.h"
#include "test-rng.h"

#define SZ_1M (UINT64_C(1) << 20)
#define SZ_1K (UINT64_C(1) << 10)
#define GUEST_GPA (16 * SZ_1M) /* the mock's aperture starts at 16 MiB */
#define GUEST_SIZE (8 * SZ_1M)
#define GPA_END (GUEST_GPA + GUEST_SIZE)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define NPREC MOCK_VMM_NDEV /* dirty tracking mock devices */
#define INTERVAL_USEC (UINT64_C(60) * 1000000) /* the daemon's timer never samples */
#define WINDOW_USEC (UINT64_C(3600) * 1000000)

/* ---- the VMM's side: iommufd, IOAS, mock devices ---------------------------------------- */

/* The dirty tracking devices on h0 and h1 (vmm.hwpt[]), and the fallback device. */
static struct mock_vmm vmm;
static struct {
	uint32_t stdev, idev, hwpt; /* MOCK_FLAGS_DEVICE_NO_DIRTY, on a plain HWPT */
} fb;

static void vmm_setup(void)
{
	uint32_t id;
	int r;

	mock_vmm_open(&vmm);
	mock_vmm_dirty_hwpts(&vmm);

	r = iod_mock_domain(vmm.fd, vmm.ioas, IOD_MOCK_DEV_NO_DIRTY, &fb.stdev, NULL, &fb.idev);
	dt_assert(r == 0, "mock device without dirty tracking: %s", strerror(-r));
	r = iod_hwpt_alloc(vmm.ictx, fb.idev, vmm.ioas, IOD_HWPT_DIRTY, &id);
	dt_assert(
		r == -EOPNOTSUPP,
		"a dirty tracking HWPT for the device without dirty tracking: %s, want EOPNOTSUPP",
		r == 0 ? "allocated" : iod_strerror(r));
	r = iod_mock_replace(vmm.fd, fb.stdev, vmm.hwpt[0]);
	dt_assert(r == -EINVAL,
		  "attaching the device without dirty tracking to dirty hwpt %u: %s, want EINVAL",
		  vmm.hwpt[0], r == 0 ? "attached" : strerror(-r));
	dt_pass("the kernel refuses dirty tracking for a MOCK_FLAGS_DEVICE_NO_DIRTY device: "
		"IOMMU_HWPT_ALLOC EOPNOTSUPP, attach to a dirty HWPT EINVAL");
	r = iod_hwpt_alloc(vmm.ictx, fb.idev, vmm.ioas, 0, &fb.hwpt);
	dt_assert(r == 0, "plain HWPT: %s", iod_strerror(r));
	r = iod_mock_replace(vmm.fd, fb.stdev, fb.hwpt);
	dt_assert(r == 0, "attach the device without dirty tracking to hwpt %u: %s", fb.hwpt,
		  strerror(-r));

	mock_vmm_alloc_guest(&vmm, GUEST_SIZE);
	printf("vmm: iommufd %d, ioas %u, dirty tracking hwpts %u %u, fallback hwpt %u, %" PRIu64
	       " MiB of guest memory at GPA 0x%" PRIx64 "\n",
	       vmm.fd, vmm.ioas, vmm.hwpt[0], vmm.hwpt[1], fb.hwpt, GUEST_SIZE / SZ_1M, GUEST_GPA);
}

/* The VMM maps guest memory at gpa to iova in its IOAS. */
static void vmm_map(uint64_t iova, uint64_t gpa, uint64_t size)
{
	int r = iod_ioas_map(vmm.ictx, vmm.ioas, vmm.guest + (gpa - GUEST_GPA), size, iova,
			     IOD_MAP_READ | IOD_MAP_WRITE);

	dt_assert(r == 0, "IOAS map of IOVA 0x%" PRIx64 ": %s", iova, iod_strerror(r));
}

static void vmm_unmap(uint64_t iova, uint64_t size)
{
	int r = iod_ioas_unmap(vmm.ictx, vmm.ioas, iova, size, NULL);

	dt_assert(r == 0, "IOAS unmap of IOVA 0x%" PRIx64 ": %s", iova, iod_strerror(r));
}

/* ---- page sets (by GPA) ------------------------------------------------------------------ */

static void set_init(struct dt_pageset *p)
{
	dt_pageset_init(p, GPA_END, LOG_SHIFT);
}

static void set_clear(struct dt_pageset *p)
{
	memset(p->bits, 0, iod_bitmap_words(p->npages) * sizeof(uint64_t));
}

static void set_add_range(struct dt_pageset *p, uint64_t gpa, uint64_t size)
{
	for (uint64_t a = gpa; a < gpa + size; a += LOG_PAGE)
		dt_pageset_add(p, a);
}

static void set_or(struct dt_pageset *dst, const struct dt_pageset *src)
{
	for (uint64_t w = 0; w < iod_bitmap_words(dst->npages); w++)
		dst->bits[w] |= src->bits[w];
}

static uint64_t set_count_union(const struct dt_pageset *a, const struct dt_pageset *b)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w < iod_bitmap_words(a->npages); w++)
		n += (uint64_t)__builtin_popcountll(a->bits[w] | b->bits[w]);
	return n;
}

/* got must equal want, page for page: name the first page too many and the first missing. */
static void check_equal(const struct dt_pageset *got, const struct dt_pageset *want,
			const char *what)
{
	uint64_t n_extra = 0, n_missing = 0, first_extra = 0, first_missing = 0;
	char extra_at[48] = "", missing_at[48] = "";

	for (uint64_t w = 0; w < iod_bitmap_words(want->npages); w++) {
		uint64_t extra = got->bits[w] & ~want->bits[w];
		uint64_t missing = want->bits[w] & ~got->bits[w];

		if (extra && !n_extra)
			first_extra = (w * 64 + (uint64_t)__builtin_ctzll(extra)) << LOG_SHIFT;
		if (missing && !n_missing)
			first_missing = (w * 64 + (uint64_t)__builtin_ctzll(missing)) << LOG_SHIFT;
		n_extra += (uint64_t)__builtin_popcountll(extra);
		n_missing += (uint64_t)__builtin_popcountll(missing);
	}
	if (n_extra)
		snprintf(extra_at, sizeof(extra_at), " (the first at GPA 0x%" PRIx64 ")",
			 first_extra);
	if (n_missing)
		snprintf(missing_at, sizeof(missing_at), " (the first at GPA 0x%" PRIx64 ")",
			 first_missing);
	dt_assert(!n_extra && !n_missing,
		  "%s: %" PRIu64 " pages, want %" PRIu64 ": %" PRIu64 " too many%s, %" PRIu64
		  " missing%s",
		  what, dt_pageset_count(got), dt_pageset_count(want), n_extra, extra_at, n_missing,
		  missing_at);
}

/* Every page of sub is in set. */
static void check_subset(const struct dt_pageset *sub, const struct dt_pageset *set,
			 const char *what)
{
	for (uint64_t w = 0; w < iod_bitmap_words(set->npages); w++) {
		uint64_t lost = sub->bits[w] & ~set->bits[w];

		dt_assert(!lost, "%s: GPA page 0x%" PRIx64 " was dirtied and is not in the round",
			  what, (w * 64 + (uint64_t)__builtin_ctzll(lost)) << LOG_SHIFT);
	}
}

/* ---- marks: a device of h0 or h1 writing a page ------------------------------------------ */

/* Per precise HWPT: the pages marked since the last GetDirtyRate, and in its window. All
 * pages marked since the last round. */
static struct dt_pageset sample[NPREC], window[NPREC], marked;

/* Mark the log page at iova (translating to gpa) dirty on vmm.hwpt[dev]. */
static void mark(int dev, uint64_t iova, uint64_t gpa)
{
	mock_vmm_mark(&vmm, vmm.hwpt[dev], iova, LOG_PAGE);
	dt_pageset_add(&sample[dev], gpa);
	dt_pageset_add(&marked, gpa);
}

struct window_map {
	const char *name;
	uint64_t iova, gpa, size;
};

/* Mark n random pages of w on dev. */
static void mark_random(int dev, const struct window_map *w, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = rng_below(w->size >> LOG_SHIFT) << LOG_SHIFT;

		mark(dev, w->iova + off, w->gpa + off);
	}
}

/* ---- the session ----------------------------------------------------------------------- */

static sd_bus *bus;
static char *spath;

#define scall(member, types, ...) \
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, member, NULL, types, ##__VA_ARGS__))

static void adopt(const char *name, const uint32_t *hwpts, unsigned n, bool viommu)
{
	sd_bus_message *m = NULL, *reply;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	const char *path;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, DT_DEST, DT_MANAGER, DT_MGR_IFACE,
					   "AdoptSession");
	dt_assert(r >= 0, "AdoptSession message: %s", strerror(-r));
	r = sd_bus_message_append(m, "shu", name, vmm.fd, vmm.ioas);
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'u', hwpts, n * sizeof(*hwpts));
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 1, "viommu", "b", (int)viommu);
	dt_assert(r >= 0, "AdoptSession message: %s", strerror(-r));
	r = sd_bus_call(bus, m, 0, &e, &reply);
	dt_assert(r >= 0, "AdoptSession failed: %s", e.message ? e.message : strerror(-r));
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	free(spath);
	spath = strdup(path);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(m);
	sd_bus_error_free(&e);
	scall("AddRegion", "tt", GUEST_GPA, GUEST_SIZE);
}

/* TrackingMode and Precise. */
static void check_mode(const char *what, const char *want_mode, bool want_precise)
{
	char *mode = dt_get_string(bus, spath, DT_SES_IFACE, "TrackingMode");
	bool precise = dt_get_u64(bus, spath, DT_SES_IFACE, "Precise", 'b');

	dt_assert(strcmp(mode, want_mode) == 0, "%s: TrackingMode \"%s\", want \"%s\"", what, mode,
		  want_mode);
	dt_assert(precise == want_precise, "%s: Precise %d, want %d", what, precise, want_precise);
	free(mode);
}

/*
 * The Hwpts property lists ids in the order adopted, each (dirty capable, tracking, devices
 * attached): the precise ones capable and, after Start, tracking; the fallback neither. An
 * adopted session counts no devices (they are the VMM's) and has no Device objects.
 */
static void check_hwpts(const char *what, const uint32_t *ids, unsigned n, bool tracking)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	uint32_t id, users;
	int capable, on, r;
	unsigned i = 0;

	r = sd_bus_get_property(bus, DT_DEST, spath, DT_SES_IFACE, "Hwpts", &e, &reply, "a(ubbu)");
	dt_assert(r >= 0, "reading Hwpts: %s", e.message ? e.message : strerror(-r));
	dt_assert(sd_bus_message_enter_container(reply, 'a', "(ubbu)") > 0, "Hwpts");
	while (sd_bus_message_read(reply, "(ubbu)", &id, &capable, &on, &users) > 0) {
		bool fallback = id == fb.hwpt;

		dt_assert(i < n, "%s: Hwpts has more than %u entries", what, n);
		dt_assert(id == ids[i], "%s: Hwpts[%u] is hwpt %u, want %u", what, i, id, ids[i]);
		dt_assert(capable == !fallback, "%s: hwpt %u dirty capable %d, want %d", what, id,
			  capable, !fallback);
		dt_assert(on == (tracking && !fallback), "%s: hwpt %u tracking %d, want %d", what,
			  id, on, tracking && !fallback);
		dt_assert(users == 0, "%s: hwpt %u counts %u devices in an adopted session", what,
			  id, users);
		i++;
	}
	dt_assert(i == n, "%s: Hwpts has %u entries, want %u", what, i, n);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&e);

	r = sd_bus_get_property(bus, DT_DEST, spath, DT_SES_IFACE, "Devices", &e, &reply, "ao");
	dt_assert(r >= 0, "reading Devices: %s", e.message ? e.message : strerror(-r));
	dt_assert(sd_bus_message_enter_container(reply, 'a', "o") > 0, "Devices");
	dt_assert(sd_bus_message_at_end(reply, false) > 0,
		  "%s: an adopted session has Device objects", what);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&e);
}

/* Harvest one round: it must be want, page for page. Returns Harvest's precise. */
static bool harvest(const char *what, const struct dt_pageset *want)
{
	struct dt_pageset got;
	struct dt_round round;

	round = dt_harvest(bus, spath, what, GPA_END, LOG_SHIFT, &got);
	check_equal(&got, want, what);
	check_subset(&marked, &got, what);
	free(got.bits);
	dt_acknowledge(bus, spath, round.nr);
	printf("harvest: %s: round %" PRIu64 ", %" PRIu64 " dirty pages, precise %d\n", what,
	       round.nr, round.dirty, round.precise);
	set_clear(&marked);
	return round.precise;
}

/* The same through HarvestRanges in GPA space: also the number of ranges. */
static bool harvest_ranges(const char *what, const struct dt_pageset *want, unsigned want_ranges)
{
	uint64_t nr, dirty, usec, start, length;
	struct dt_pageset got;
	sd_bus_message *reply;
	int truncated, precise;
	unsigned n = 0;

	reply = dt_call(bus, spath, DT_SES_IFACE, "HarvestRanges", NULL, "a{sv}", 1, "space", "s",
			"gpa");
	dt_assert(sd_bus_message_read(reply, "t", &nr) > 0, "HarvestRanges reply");
	dt_assert(sd_bus_message_enter_container(reply, 'a', "(tt)") > 0, "HarvestRanges reply");
	set_init(&got);
	while (sd_bus_message_read(reply, "(tt)", &start, &length) > 0) {
		printf("ranges: %s: [0x%" PRIx64 ", 0x%" PRIx64 ")\n", what, start, start + length);
		dt_assert(start >= GUEST_GPA && start + length <= GPA_END,
			  "%s: range [0x%" PRIx64 ", +0x%" PRIx64 ") outside guest memory", what,
			  start, length);
		set_add_range(&got, start, length);
		n++;
	}
	dt_assert(sd_bus_message_exit_container(reply) >= 0, "HarvestRanges reply");
	dt_assert(sd_bus_message_read(reply, "btbt", &truncated, &dirty, &precise, &usec) > 0,
		  "HarvestRanges reply");
	dt_assert(!truncated, "%s: truncated", what);
	dt_assert(dt_pageset_count(&got) == dirty,
		  "%s: %" PRIu64 " pages in ranges, dirty_pages %" PRIu64, what,
		  dt_pageset_count(&got), dirty);
	check_equal(&got, want, what);
	check_subset(&marked, &got, what);
	dt_assert(n == want_ranges, "%s: %u ranges, want %u", what, n, want_ranges);
	free(got.bits);
	sd_bus_message_unref(reply);
	scall("Acknowledge", "t", nr);
	set_clear(&marked);
	return precise;
}

/* ---- GetDirtyRate: exact per precise HWPT -------------------------------------------------- */

/* h0, h1 and (listed without a rate) hf. */
static void get_rate(struct dt_rate *ret)
{
	dt_get_rate(bus, spath, INTERVAL_USEC, WINDOW_USEC, NPREC + 1, ret);
}

/* What the samples so far must show. */
static struct {
	uint64_t samples, vm_dirty, dirty[NPREC];
} want_rate;

/* The first call: a baseline, no sample. */
static void rate_baseline(void)
{
	struct dt_rate r;

	get_rate(&r);
	dt_assert(r.samples == 0, "the first GetDirtyRate has %" PRIu64 " samples", r.samples);
	memset(&want_rate, 0, sizeof(want_rate));
	for (int i = 0; i < NPREC; i++) {
		set_clear(&sample[i]);
		set_clear(&window[i]);
	}
}

/*
 * Close a sample: each of the session's n_prec precise HWPTs counts exactly the pages
 * marked on it, the VM the distinct pages marked on any; the fallback HWPT has no entry, and
 * while there is one the VM's numbers are not precise (its device's writes are not in them).
 */
static void check_rate(const char *what, unsigned n_prec, bool want_precise)
{
	struct dt_rate r;

	want_rate.samples++;
	want_rate.vm_dirty += set_count_union(&sample[0], &sample[1]);
	for (int i = 0; i < NPREC; i++) {
		want_rate.dirty[i] += dt_pageset_count(&sample[i]);
		set_or(&window[i], &sample[i]);
		set_clear(&sample[i]);
	}
	get_rate(&r);
	dt_assert(r.samples == want_rate.samples, "%s: %" PRIu64 " samples, want %" PRIu64, what,
		  r.samples, want_rate.samples);
	dt_assert(r.precise == want_precise, "%s: GetDirtyRate precise %d, want %d", what,
		  r.precise, want_precise);
	dt_assert(r.dirty == want_rate.vm_dirty, "%s: VM dirty pages %" PRIu64 ", marked %" PRIu64,
		  what, r.dirty, want_rate.vm_dirty);
	dt_assert(r.ws == set_count_union(&window[0], &window[1]),
		  "%s: VM working set %" PRIu64 ", distinct pages marked %" PRIu64, what, r.ws,
		  set_count_union(&window[0], &window[1]));
	dt_assert(r.n_hwpts == n_prec, "%s: %u HWPTs with a rate, want %u (not the fallback)", what,
		  r.n_hwpts, n_prec);
	for (unsigned i = 0; i < n_prec; i++) {
		dt_assert(r.hwpt[i].id == vmm.hwpt[i], "%s: rate of hwpt %u, want %u", what,
			  r.hwpt[i].id, vmm.hwpt[i]);
		dt_assert(r.hwpt[i].dirty == want_rate.dirty[i],
			  "%s: hwpt %u dirty pages %" PRIu64 ", marked %" PRIu64, what,
			  r.hwpt[i].id, r.hwpt[i].dirty, want_rate.dirty[i]);
		dt_assert(r.hwpt[i].ws == dt_pageset_count(&window[i]),
			  "%s: hwpt %u working set %" PRIu64 ", distinct pages marked %" PRIu64,
			  what, r.hwpt[i].id, r.hwpt[i].ws, dt_pageset_count(&window[i]));
	}
	dt_pass("%s: GetDirtyRate exact per dirty tracking HWPT (%" PRIu64 " + %" PRIu64
		" pages), no rate for the fallback hwpt %u, precise %s",
		what, r.hwpt[0].dirty, n_prec > 1 ? r.hwpt[1].dirty : 0, fb.hwpt,
		want_precise ? "true" : "false");
}

/* ---- session 1: one dirty tracking HWPT and the fallback, IOVA = GPA --------------------- */

static void run_identity(void)
{
	const uint32_t hwpts[] = {vmm.hwpt[0], fb.hwpt};
	const struct window_map all = {"all", GUEST_GPA, GUEST_GPA, GUEST_SIZE};
	struct dt_pageset want;
	unsigned n_marked;

	vmm_map(GUEST_GPA, GUEST_GPA, GUEST_SIZE);
	adopt("mixed", hwpts, 2, false);
	check_mode("mixed, adopted", "mixed", false);
	check_hwpts("mixed, adopted", hwpts, 2, false);
	scall("Start", "");
	check_mode("mixed, tracking", "mixed", false);
	check_hwpts("mixed, tracking", hwpts, 2, true);
	dt_pass("session [hwpt %u, hwpt %u]: TrackingMode \"mixed\", Precise false, Hwpts: "
		"hwpt %u tracks, hwpt %u cannot; no Device objects (adopt mode)",
		vmm.hwpt[0], fb.hwpt, vmm.hwpt[0], fb.hwpt);

	/* The fallback makes every mapped range of the IOAS dirty: here, the whole region. */
	set_init(&want);
	set_add_range(&want, GUEST_GPA, GUEST_SIZE);

	rate_baseline();
	mark_random(0, &all, 40);
	n_marked = (unsigned)dt_pageset_count(&marked);
	check_rate("mixed, sample 1", 1, false);
	dt_assert(!harvest("mixed, round 1", &want), "mixed, round 1: Harvest says precise");
	dt_pass("mixed, round 1: exactly the %" PRIu64
		" pages mapped (the fallback marks every mapped range of the session's IOAS, here "
		"the whole region), the %u marked on hwpt %u among them; precise false",
		dt_pageset_count(&want), n_marked, vmm.hwpt[0]);

	mark_random(0, &all, 10);
	dt_assert(!harvest_ranges("mixed, round 2 (HarvestRanges)", &want, 1),
		  "mixed, round 2: HarvestRanges says precise");
	dt_assert(!harvest("mixed, round 3 (nothing marked)", &want),
		  "mixed, round 3: Harvest says precise");
	dt_pass("mixed, rounds 2 and 3: HarvestRanges one range, the region; with nothing marked "
		"the round is still every mapped page; precise false");

	scall("Destroy", "");
	vmm_unmap(GUEST_GPA, GUEST_SIZE);
	free(want.bits);
}

/* ---- session 2: two dirty tracking HWPTs and the fallback, vIOMMU windows ----------------- */

static const struct window_map w1 = {"W1", 256 * SZ_1M, GUEST_GPA + 1 * SZ_1M, SZ_1M};
static const struct window_map w2 = {"W2", 512 * SZ_1M, GUEST_GPA + 5 * SZ_1M, 512 * SZ_1K};
static const struct window_map w3 = {"W3", 768 * SZ_1M, GUEST_GPA + 6 * SZ_1M, 256 * SZ_1K};

/* As a VMM with a vIOMMU does it: the IOAS first, then the event (before, for an unmap). */
static void window_map(const struct window_map *w)
{
	vmm_map(w->iova, w->gpa, w->size);
	scall("Map", "ttt", w->iova, w->gpa, w->size);
}

static void window_unmap(const struct window_map *w)
{
	scall("Unmap", "tt", w->iova, w->size);
	vmm_unmap(w->iova, w->size);
}

/* MarkDirty of one range, into want. */
static void mark_dirty(struct dt_pageset *want, uint64_t gpa, uint64_t size)
{
	scall("MarkDirty", "a(tt)", 1, gpa, size);
	set_add_range(want, gpa, size);
}

static void want_windows(struct dt_pageset *want, const struct window_map *const *ws, size_t n)
{
	set_clear(want);
	for (size_t i = 0; i < n; i++)
		set_add_range(want, ws[i]->gpa, ws[i]->size);
}

static void run_viommu(void)
{
	const uint32_t hwpts[] = {vmm.hwpt[0], vmm.hwpt[1], fb.hwpt};
	const struct window_map *w12[] = {&w1, &w2}, *w123[] = {&w1, &w2, &w3}, *w13[] = {&w1, &w3};
	struct dt_pageset want;
	int r;

	adopt("mixed3", hwpts, 3, true);
	window_map(&w1);
	window_map(&w2);
	check_mode("mixed3, adopted", "mixed", false);
	check_hwpts("mixed3, adopted", hwpts, 3, false);
	scall("Start", "");
	check_mode("mixed3, tracking", "mixed", false);
	check_hwpts("mixed3, tracking", hwpts, 3, true);
	dt_pass("session [hwpt %u, hwpt %u, hwpt %u] with a vIOMMU: TrackingMode \"mixed\", "
		"Precise false, Hwpts: two track, hwpt %u cannot",
		vmm.hwpt[0], vmm.hwpt[1], fb.hwpt, fb.hwpt);
	set_init(&want);

	/* Round 1: both precise HWPTs (overlapping pages in W1), MarkDirty outside the
	 * windows. The fallback covers W1 and W2, nothing else of the region. */
	rate_baseline();
	mark_random(0, &w1, 30);
	mark_random(1, &w1, 15);
	mark_random(1, &w2, 15);
	check_rate("mixed3, sample 1", 2, false);
	want_windows(&want, w12, 2);
	mark_dirty(&want, GUEST_GPA + 3 * SZ_1M, 2 * LOG_PAGE);
	mark_dirty(&want, GUEST_GPA + 7 * SZ_1M + 3 * LOG_PAGE, LOG_PAGE);
	dt_assert(!harvest("mixed3, round 1", &want), "mixed3, round 1: Harvest says precise");
	dt_pass("mixed3, round 1: exactly W1 and W2 (%" PRIu64
		" pages, the fallback's) and the 3 pages MarkDirty reported outside them; no other "
		"page of the region; precise false",
		(w1.size + w2.size) >> LOG_SHIFT);

	/* Round 2: W2 dirtied, then unmapped (Unmap marks it for the fallback), W3 mapped.
	 * The pages of W2 count in the sample that follows its unmap. */
	mark_random(0, &w2, 20);
	window_unmap(&w2);
	check_rate("mixed3, sample 2 (W2 unmapped in it)", 2, false);
	window_map(&w3);
	want_windows(&want, w123, 3);
	dt_assert(!harvest_ranges("mixed3, round 2 (HarvestRanges)", &want, 3),
		  "mixed3, round 2: HarvestRanges says precise");
	dt_pass("mixed3, round 2: HarvestRanges exactly W1, W2 (unmapped in the round) and W3, "
		"three ranges; precise false");

	/* Round 3: W2 is gone: its pages are dirty only where MarkDirty says so. */
	mark_random(0, &w1, 10);
	mark_random(1, &w3, 10);
	check_rate("mixed3, sample 3", 2, false);
	want_windows(&want, w13, 2);
	mark_dirty(&want, w2.gpa + LOG_PAGE, LOG_PAGE);
	dt_assert(!harvest("mixed3, round 3", &want), "mixed3, round 3: Harvest says precise");
	dt_pass("mixed3, round 3: exactly W1, W3 and the one page MarkDirty reported in W2's "
		"GPA range, which no IOVA maps any more: exact where the fallback does not cover");

	/* The VMM detaches the fallback device and destroys its HWPT (which the kernel
	 * allows only without devices). What was dirtied before must be in the next round. */
	mark_random(0, &w1, 10);
	mark_random(1, &w3, 10);
	want_windows(&want, w13, 2);
	mark_dirty(&want, GUEST_GPA + 4 * SZ_1M, LOG_PAGE);
	r = iod_iommufd_destroy(vmm.ictx, fb.stdev);
	dt_assert(r == 0, "destroying the mock device without dirty tracking: %s", iod_strerror(r));
	r = iod_iommufd_destroy(vmm.ictx, fb.hwpt);
	dt_assert(r == 0, "destroying hwpt %u: %s", fb.hwpt, iod_strerror(r));
	check_rate("mixed3, sample 4 (the fallback detached)", 2, false);
	dt_assert(!harvest("mixed3, round 4 (the fallback detached)", &want),
		  "mixed3, round 4: Harvest says precise");
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "LogComplete", 'b'),
		  "the session's log is incomplete after the fallback HWPT went");
	{
		char *state = dt_get_string(bus, spath, DT_SES_IFACE, "State");

		dt_assert(strcmp(state, "tracking") == 0, "State \"%s\" after the detach", state);
		free(state);
	}
	dt_pass("mixed3, round 4: the fallback device detached and hwpt %u destroyed: the "
		"round has every page marked before (W1, W3 as the fallback's, the MarkDirty "
		"page): nothing lost; the session tracks on, its log complete",
		fb.hwpt);

	/* After the round that counted it last, the destroyed HWPT has left the session: it
	 * is "hardware" and precise again. */
	check_mode("mixed3, after the detach", "hardware", true);
	check_hwpts("mixed3, after the detach", hwpts, 2, true);

	/* Round 5: exactly the pages marked on h0 and h1 and the one MarkDirty reported. */
	mark_random(0, &w1, 5);
	mark_random(1, &w3, 5);
	check_rate("mixed3, sample 5", 2, true);
	set_clear(&want);
	set_or(&want, &marked);
	mark_dirty(&want, GUEST_GPA + 2 * SZ_1M, LOG_PAGE);
	dt_assert(harvest("mixed3, round 5", &want), "mixed3, round 5: Harvest not precise");
	dt_pass("mixed3, round 5: TrackingMode \"hardware\", Precise true, Hwpts without hwpt %u; "
		"the round is exactly the pages marked on hwpt %u and %u and the MarkDirty page, "
		"precise",
		fb.hwpt, vmm.hwpt[0], vmm.hwpt[1]);

	scall("Destroy", "");
	free(want.bits);
}

int main(void)
{
	rng_seed();
	dt_on_fail = rng_print_seed;

	dt_require_iommufd();
	vmm_setup();
	set_init(&marked);
	for (int i = 0; i < NPREC; i++) {
		set_init(&sample[i]);
		set_init(&window[i]);
	}

	bus = dt_connect();
	run_identity();
	run_viommu();

	sd_bus_unref(bus);
	free(spath);
	rng_print_seed();
	printf("%u passed\n", dt_passed);
	return 0;
}
