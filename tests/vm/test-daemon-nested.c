/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyd's nested mode against the kernel's iommufd mock devices, over the real D-Bus.
 *
 * The program plays a VMM with a hardware-nested vIOMMU: on its own iommufd it maps guest
 * memory into one IOAS at IOVA = GPA, allocates a nest parent on it (IOMMU_HWPT_ALLOC with
 * NEST_PARENT | DIRTY_TRACKING) and, for each of two mock devices, a nested child HWPT over
 * that parent (IOMMU_HWPT_DATA_SELFTEST, the mock's stage 1), and attaches each device to its
 * child. It lends the iommufd to iodirtyd with AdoptSession(nested=true, hwpt_ids = [parent,
 * child, child]) and declares its guest memory with AddRegion.
 *
 * What the mock marks, and where: the mock's DIRTY command (IOMMU_TEST_OP_DIRTY) accepts a
 * paging HWPT only. On a nested child it fails with ENOENT (the kernel looks the id up as
 * a paging HWPT), so a device's DMA through its child is played by a mark on the nest parent,
 * the stage 2 every child translates through; the mock indexes the parent's IOPTEs by the
 * parent's IOVA / IOPTE size, and the parent's IOAS is indexed by GPA: the mark is at the GPA
 * the device wrote. The program checks both facts before it relies on them.
 *
 * Then, for several rounds, it marks random GPA pages and harvests: the GPA pages of each
 * round's log plane must equal the pages marked in that round, exactly (zero lost, zero
 * spurious). No Map or Unmap event is ever sent: they are refused with WrongMode, and the
 * IOVA map stays the identity of the regions. The negative control proves the comparison can
 * fail: a mark dropped from the expected set (the page marked, the set not told) is reported.
 * DumpState must record the session as nested with its children (restart survival).
 *
 * Before anything else, the lib's probe of a dirty nest parent is asked on a mock device
 * (yes) and on a mock device without dirty tracking (no), and AdoptSession's checks are
 * tried: nested with viommu, a first HWPT that is a child, a child that is not nested, a
 * nest parent that cannot track, and CreateSession with nested.
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
#define GUEST_GPA (16 * SZ_1M) /* the mock's aperture starts at 16 MiB */
#define GUEST_SIZE (32 * SZ_1M)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define NDEV MOCK_VMM_NDEV
#define ROUNDS 6

/* The mock's stage 1 description (the kernel's struct iommu_hwpt_selftest, not uapi). */
#define MOCK_HWPT_DATA_SELFTEST 0xdead
#define MOCK_IOTLB_DEFAULT 0xbadbeef
struct mock_hwpt_selftest {
	uint32_t iotlb;
};

/* The mock devices are on nested HWPTs (the children) over one dirty tracking nest parent:
 * vmm.hwpt[] is not used. */
static struct mock_vmm vmm;
static struct {
	uint32_t parent, child[NDEV];
} nest;

/* Mark the log page at iova of hwpt dirty (both of its mock IOPTEs). Returns the IOPTEs
 * marked, or a negative errno. */
static int64_t mock_dirty(uint32_t hwpt, uint64_t iova)
{
	const uint64_t nbits = LOG_PAGE / vmm.mock_page;
	uint64_t marks = (UINT64_C(1) << nbits) - 1, nr = 0;
	int r = iod_mock_dirty(vmm.fd, hwpt, iova, nbits, vmm.mock_page, &marks, &nr);

	return r < 0 ? r : (int64_t)nr;
}

static uint32_t alloc_child(uint32_t idev, uint32_t parent)
{
	struct mock_hwpt_selftest data = {.iotlb = MOCK_IOTLB_DEFAULT};
	uint32_t id = 0;
	int r;

	r = iod_hwpt_alloc_nested(vmm.ictx, idev, parent, MOCK_HWPT_DATA_SELFTEST, &data,
				  sizeof(data), &id);
	dt_assert(r == 0, "nested HWPT over %u: %s", parent, iod_strerror(r));
	return id;
}

static void vmm_setup(void)
{
	bool can = false;
	int r;

	mock_vmm_open(&vmm);

	/* The probe ProbeDevice runs, on the lib: a mock IOMMU can give a dirty nest parent. */
	r = iod_hwpt_probe_nest_parent(vmm.ictx, vmm.idev[0], vmm.ioas, &can);
	dt_assert(r == 0 && can, "probe of a dirty nest parent on a mock device: %s, %s",
		  iod_strerror(r), can ? "yes" : "no");
	dt_pass("the mock device can have a dirty tracking nest parent (probe says yes)");

	r = iod_hwpt_alloc(vmm.ictx, vmm.idev[0], vmm.ioas, IOD_HWPT_NEST_PARENT | IOD_HWPT_DIRTY,
			   &nest.parent);
	dt_assert(r == 0, "dirty nest parent: %s", iod_strerror(r));
	for (int i = 0; i < NDEV; i++) {
		nest.child[i] = alloc_child(vmm.idev[i], nest.parent);
		r = iod_mock_replace(vmm.fd, vmm.stdev[i], nest.child[i]);
		dt_assert(r == 0, "attach mock device %d to nested hwpt %u: %s", i, nest.child[i],
			  strerror(-r));
	}
	dt_assert(iod_hwpt_is_nested(vmm.ictx, nest.child[0]) == 1, "child 0 is not nested");
	dt_assert(iod_hwpt_is_nested(vmm.ictx, nest.parent) == 0, "the parent looks nested");
	dt_assert(iod_hwpt_is_nested(vmm.ictx, vmm.ioas) == 0, "the IOAS looks nested");
	dt_pass("iod_hwpt_is_nested tells the children from the parent and the IOAS");

	/* Guest memory at IOVA = GPA: the nest parent is the stage 2, GPA -> host. */
	mock_vmm_alloc_guest(&vmm, GUEST_SIZE);
	mock_vmm_map_guest(&vmm, GUEST_SIZE, GUEST_GPA);
	printf("vmm: iommufd %d, ioas %u, nest parent %u, nested children %u %u, "
	       "%" PRIu64 " MiB of guest memory at GPA 0x%" PRIx64 "\n",
	       vmm.fd, vmm.ioas, nest.parent, nest.child[0], nest.child[1], GUEST_SIZE / SZ_1M,
	       GUEST_GPA);
}

/* A device without dirty tracking: the probe says no, and its nest parent is refused. */
static void check_probe_negative(void)
{
	uint32_t stdev = 0, idev = 0, id;
	bool can = true;
	int r;

	r = iod_mock_domain(vmm.fd, vmm.ioas, IOD_MOCK_DEV_NO_DIRTY, &stdev, NULL, &idev);
	dt_assert(r == 0, "mock device without dirty tracking: %s", strerror(-r));
	r = iod_hwpt_probe_nest_parent(vmm.ictx, idev, vmm.ioas, &can);
	dt_assert(r == 0 && !can, "probe on a device without dirty tracking: %s, %s",
		  iod_strerror(r), can ? "yes" : "no");
	r = iod_hwpt_alloc(vmm.ictx, idev, vmm.ioas, IOD_HWPT_NEST_PARENT | IOD_HWPT_DIRTY, &id);
	dt_assert(r == -EOPNOTSUPP, "dirty nest parent without dirty tracking: %s",
		  iod_strerror(r));
	dt_assert(iod_iommufd_destroy(vmm.ictx, stdev) == 0, "destroy the mock device");
	dt_pass("a device without dirty tracking: probe says no, NEST_PARENT|DIRTY is EOPNOTSUPP");
}

/* Which IOVA space the mock's DIRTY marks (see the opening comment). */
static void check_mock_facts(void)
{
	uint64_t gpa = GUEST_GPA + 5 * LOG_PAGE, word = 0;
	int64_t n;
	int r;

	r = iod_hwpt_set_tracking(vmm.ictx, &(struct iod_hwpt){.id = nest.parent}, true);
	dt_assert(r == 0, "enable tracking on the parent: %s", iod_strerror(r));

	n = mock_dirty(nest.child[0], gpa);
	dt_assert(n == -ENOENT, "DIRTY on a nested child: %" PRId64 " (%s), want ENOENT", n,
		  n < 0 ? strerror((int)-n) : "marked");
	n = mock_dirty(nest.parent, gpa);
	dt_assert(n == (int64_t)(LOG_PAGE / vmm.mock_page),
		  "DIRTY on the parent at GPA marked %" PRId64, n);
	/* read back at the same GPA, page by page: exactly that one bit */
	r = iod_hwpt_read_dirty(vmm.ictx, nest.parent, GUEST_GPA, 64 * LOG_PAGE, LOG_PAGE, &word,
				0);
	dt_assert(r == 0, "read the parent: %s", iod_strerror(r));
	dt_assert(word == UINT64_C(1) << 5, "parent bits 0x%016" PRIx64 ", want only bit 5", word);
	/* the child has no bitmap of its own */
	word = 0;
	r = iod_hwpt_read_dirty(vmm.ictx, nest.child[0], GUEST_GPA, 64 * LOG_PAGE, LOG_PAGE, &word,
				IOD_READ_QUIET);
	dt_assert(r == -ENOENT, "dirty read of a nested child: %s, want ENOENT", iod_strerror(r));

	r = iod_hwpt_set_tracking(vmm.ictx, &(struct iod_hwpt){.id = nest.parent, .tracking = true},
				  false);
	dt_assert(r == 0, "disable tracking on the parent: %s", iod_strerror(r));
	dt_pass("the mock marks the nest parent, at GPA; a nested child has no dirty bits (ENOENT)");
}

/* ---- the session ----------------------------------------------------------------------- */

static sd_bus *bus;
static char *spath;

#define scall(member, types, ...) \
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, member, NULL, types, ##__VA_ARGS__))

static void check_adopt_refusals(void)
{
	uint32_t plain = 0;
	int r;

	dt_call_fails(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", SD_BUS_ERROR_INVALID_ARGS,
		      "exclude each other", "shuaua{sv}", "bad", vmm.fd, vmm.ioas, 1, nest.parent,
		      2, "nested", "b", 1, "viommu", "b", 1);
	dt_call_fails(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", SD_BUS_ERROR_INVALID_ARGS,
		      "needs its nest parent", "shuaua{sv}", "bad", vmm.fd, vmm.ioas, 0, 1,
		      "nested", "b", 1);
	/* a child first: it is no paging HWPT, so no nest parent */
	dt_call_fails(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", SD_BUS_ERROR_INVALID_ARGS,
		      "is not a HWPT", "shuaua{sv}", "bad", vmm.fd, vmm.ioas, 2, nest.child[0],
		      nest.parent, 1, "nested", "b", 1);
	/* the parent twice over: the second is not nested */
	r = iod_hwpt_alloc(vmm.ictx, vmm.idev[0], vmm.ioas, IOD_HWPT_NEST_PARENT, &plain);
	dt_assert(r == 0, "nest parent without dirty tracking: %s", iod_strerror(r));
	dt_call_fails(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", SD_BUS_ERROR_INVALID_ARGS,
		      "hwpt_ids[1]: object", "shuaua{sv}", "bad", vmm.fd, vmm.ioas, 2, nest.parent,
		      plain, 1, "nested", "b", 1);
	/* a nest parent that cannot track (the SMMUv3 case) */
	dt_call_fails(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", IOD_ERROR_NOT_DIRTY_CAPABLE,
		      "cannot track dirty pages", "shuaua{sv}", "bad", vmm.fd, vmm.ioas, 1, plain,
		      1, "nested", "b", 1);
	dt_assert(iod_iommufd_destroy(vmm.ictx, plain) == 0, "destroy the plain nest parent");
	dt_call_fails(bus, DT_MANAGER, DT_MGR_IFACE, "CreateSession", IOD_ERROR_WRONG_MODE,
		      "needs AdoptSession", "sa{sv}", "bad", 1, "nested", "b", 1);
	dt_pass("AdoptSession and CreateSession refuse what a nested session cannot be");
}

static void adopt(void)
{
	sd_bus_message *reply;
	const char *path;
	char *mode;

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}", "nested",
			vmm.fd, vmm.ioas, 3, nest.parent, nest.child[0], nest.child[1], 1, "nested",
			"b", 1);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	spath = strdup(path);
	sd_bus_message_unref(reply);
	scall("AddRegion", "tt", GUEST_GPA, GUEST_SIZE);

	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "Nested", 'b') == 1, "Nested is false");
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "VIommu", 'b') == 0, "VIommu is true");
	mode = dt_get_string(bus, spath, DT_SES_IFACE, "TrackingMode");
	dt_assert(strcmp(mode, "nested") == 0, "TrackingMode \"%s\", want \"nested\"", mode);
	free(mode);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "Precise", 'b') == 1,
		  "a nested session with a dirty nest parent is not precise");
	dt_pass("adopted: Nested, TrackingMode \"nested\", Precise");
}

/* Map and Unmap mean nothing to a nested session: refused, and nothing changes. */
static void check_events_refused(void)
{
	dt_call_fails(bus, spath, DT_SES_IFACE, "Map", IOD_ERROR_WRONG_MODE, "is nested", "ttt",
		      GUEST_GPA, GUEST_GPA, LOG_PAGE);
	dt_call_fails(bus, spath, DT_SES_IFACE, "Unmap", IOD_ERROR_WRONG_MODE, "is nested", "tt",
		      GUEST_GPA, LOG_PAGE);
	dt_call_fails(bus, spath, DT_SES_IFACE, "UnmapBatch", IOD_ERROR_WRONG_MODE, "is nested",
		      "a(tt)", 1, GUEST_GPA, LOG_PAGE);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "Mappings", 'u') == 1,
		  "the identity mapping of the region changed");
	dt_pass("Map, Unmap and UnmapBatch are refused with WrongMode");
}

/* Pages in a but not in b. */
static uint64_t pageset_minus(const struct dt_pageset *a, const struct dt_pageset *b)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w < iod_bitmap_words(a->npages); w++)
		n += (uint64_t)__builtin_popcountll(a->bits[w] & ~b->bits[w]);
	return n;
}

/* Harvest one round into got (GPA pages relative to GUEST_GPA) and acknowledge it. */
static void harvest(struct dt_pageset *got)
{
	struct dt_pageset abs;
	struct dt_round round;

	round = dt_harvest(bus, spath, "Harvest", GUEST_GPA + GUEST_SIZE, LOG_SHIFT, &abs);
	dt_assert(round.precise, "round %" PRIu64 " is not precise", round.nr);
	dt_pageset_init(got, GUEST_SIZE, LOG_SHIFT);
	for (uint64_t p = GUEST_GPA >> LOG_SHIFT; p < abs.npages; p++)
		if (dt_pageset_test(&abs, p))
			dt_pageset_add(got, (p << LOG_SHIFT) - GUEST_GPA);
	dt_assert(dt_pageset_count(got) == round.dirty, "dirty pages outside guest memory");
	free(abs.bits);
	dt_acknowledge(bus, spath, round.nr);
}

/* Mark k random pages on the parent at their GPA; want gets them. */
static void mark_random(struct dt_pageset *want, unsigned k)
{
	for (unsigned i = 0; i < k; i++) {
		uint64_t off = rng_below(GUEST_SIZE / LOG_PAGE) * LOG_PAGE;
		int64_t n = mock_dirty(nest.parent, GUEST_GPA + off);

		dt_assert(n == (int64_t)(LOG_PAGE / vmm.mock_page),
			  "DIRTY at GPA 0x%" PRIx64 " marked %" PRId64, GUEST_GPA + off, n);
		dt_pageset_add(want, off);
	}
}

static void rounds(void)
{
	uint64_t total = 0;

	scall("Start", "");
	for (int round = 0; round < ROUNDS; round++) {
		struct dt_pageset want, got;
		uint64_t lost, spurious;

		dt_pageset_init(&want, GUEST_SIZE, LOG_SHIFT);
		mark_random(&want, 1 + (unsigned)rng_below(200));
		harvest(&got);
		lost = pageset_minus(&want, &got);
		spurious = pageset_minus(&got, &want);
		dt_assert(lost == 0 && spurious == 0,
			  "round %d: %" PRIu64 " pages marked, %" PRIu64 " harvested: %" PRIu64
			  " lost, %" PRIu64 " spurious",
			  round, dt_pageset_count(&want), dt_pageset_count(&got), lost, spurious);
		total += dt_pageset_count(&want);
		free(want.bits);
		free(got.bits);
	}
	dt_pass("%d rounds: the GPA bits harvested are exactly the %" PRIu64 " pages marked",
		ROUNDS, total);
}

/* The comparison above can fail: a mark the expected set does not hear of is spurious. */
static void negative_control(void)
{
	struct dt_pageset want, got;
	uint64_t off = 77 * LOG_PAGE, spurious;

	dt_pageset_init(&want, GUEST_SIZE, LOG_SHIFT);
	mark_random(&want, 10);
	while (dt_pageset_test(&want, off >> LOG_SHIFT))
		off += LOG_PAGE; /* never the page of a recorded mark */
	/* the mark dropped from the expectation: made on the parent, not added to want */
	dt_assert(mock_dirty(nest.parent, GUEST_GPA + off) > 0, "DIRTY for the control");
	harvest(&got);
	spurious = pageset_minus(&got, &want);
	dt_assert(spurious >= 1 && pageset_minus(&want, &got) == 0,
		  "negative control: a mark left out of the expectation went unnoticed "
		  "(%" PRIu64 " spurious)",
		  spurious);
	printf("negative control: the comparison reports %" PRIu64 " page(s) the expectation "
	       "lacks, as it must\n",
	       spurious);
	free(want.bits);
	free(got.bits);
	dt_pass("negative control: a dropped mark fails the comparison");
}

static void check_state(void)
{
	sd_bus_message *reply;
	const char *json;
	char want[64];

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "DumpState", NULL, "");
	dt_assert(sd_bus_message_read(reply, "s", &json) > 0, "DumpState reply");
	dt_assert(strstr(json, "\"nested\""), "the state does not record the nested flag: %s",
		  json);
	snprintf(want, sizeof(want), "\"parent_id\":%u", nest.parent);
	dt_assert(strstr(json, want), "the state does not record %s: %s", want, json);
	sd_bus_message_unref(reply);
	dt_pass("DumpState records the session as nested, with its children's parent");
}

int main(void)
{
	rng_seed();
	dt_on_fail = rng_print_seed;

	dt_require_iommufd();
	vmm_setup();
	check_probe_negative();
	check_mock_facts();

	bus = dt_connect();
	check_adopt_refusals();
	adopt();
	check_events_refused();
	rounds();
	negative_control();
	check_state();
	scall("Destroy", "");

	sd_bus_unref(bus);
	rng_print_seed();
	printf("%u passed\n", dt_passed);
	return 0;
}
