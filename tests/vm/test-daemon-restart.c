/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyd survives its own death: restart and kill -9 through the fd store, against the
 * kernel's iommufd mock devices, over the real D-Bus. Run by guest-fdstore.sh, which starts
 * the daemon under fdstore-harness (the service manager's fd store and watchdog).
 *
 * The program plays a VMM: its own iommufd, an IOAS with 32 MiB of guest memory at IOVA =
 * GPA = 16 MiB and a mock device on a dirty-tracking HWPT, lent to the daemon with
 * AdoptSession. Then, for IOD_TEST_CYCLES cycles (100 by default), it marks random pages
 * dirty with the mock's DIRTY command and kills the daemon (SIGKILL, now and then SIGTERM)
 * at a random point:
 *  - while idle, with pages marked and not harvested: after the restart those bits must
 *    still be in the IOMMU (read without clearing) and come out of the next Harvest; an
 *    instance that enabled tracking again would have wiped them;
 *  - right after sending Harvest (now and then HarvestRanges), after a random delay of
 *    0..4 ms: before the daemon read the call, in the middle of the harvest, or after the
 *    reply;
 *  - between the Harvest reply and Acknowledge, and between the HarvestRanges reply and
 *    Acknowledge: the round survives (PendingRound is still its number), and the new
 *    instance accepts Acknowledge of it; a round with no dirty page too
 *    (empty_round_survives_restart).
 * Before an idle kill the VMM also reports a write of its own (MarkDirty on the bus or a mark
 * batch on the event channel, answered): that page must come out of a later round too.
 * After each restart the daemon holds as many fds as the previous instances did, the store
 * holds exactly the session's iommufd, log and journal memfds and one state, and the session
 * is still tracking. At the end the union of the delivered rounds must equal the set of
 * pages marked, exactly. Destroy empties the store but for the state and its journal.
 *
 * The disconnect policy survives too: owner sessions created with "keep" under a daemon
 * whose default is "destroy" stay, orphaned, when their owner leaves while the daemon is
 * down and when it leaves after the restart; a "destroy" session whose owner left while the
 * daemon was down is gone.
 *
 * A VMM with a vIOMMU recovers a Map or Unmap that a restart interrupted by sending it again,
 * blindly. On a second IOAS with its own mock device on its own dirty-tracking HWPT, adopted
 * as a session with a vIOMMU, for IOD_TEST_VIOMMU_CYCLES cycles (60 by default) the program
 * maps a few small ranges of guest memory (IOMMU_IOAS_MAP, then Map or MapBatch), unmaps
 * some (Unmap or UnmapBatch, then IOMMU_IOAS_UNMAP once the daemon answered), marks pages of
 * mapped ranges dirty and harvests now and then. About half of the Map, MapBatch, Unmap and
 * UnmapBatch calls are sent and the daemon is killed (SIGKILL) 0..4 ms later; once the next
 * instance is ready the same call goes again: a Map or MapBatch must succeed (a mapping
 * identical to a recorded one is accepted unchanged), an Unmap or UnmapBatch must succeed or
 * answer NotMapped (the first attempt did it; it must, when the first reply made it out).
 * The daemon then records exactly the VMM's mappings, and at the end the union of the
 * delivered rounds equals the set of pages marked: none lost, none spurious. Before the
 * random kills, the daemon is made to kill itself exactly between a journal append and the
 * reply, and in the middle of an append (a torn record), for a Map and an Unmap each
 * (rv_journal_kills).
 *
 * A nested session (its nest parent harvested by GPA, a mock device on a nested child) killed
 * with pages marked comes back nested and delivers exactly those pages (nested_survives_kill).
 *
 * IOD_TEST_SEED=<n> repeats a run's choices (not the kernel's timing).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>

#include "daemon-test.h"
#include "fdstore-test.h"
#include "iodirty.h"
#include "iommufd-mock.h"
#include "test-rng.h"

#define SZ_1M (UINT64_C(1) << 20)
#define GUEST_GPA IOD_MOCK_APERTURE_START
#define GUEST_SIZE (32 * SZ_1M)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define GUEST_PAGES (GUEST_SIZE / LOG_PAGE)

static uint64_t seed, mock_page;

static void print_seed(void)
{
	printf("seed: IOD_TEST_SEED=%" PRIu64 " reproduces this run's choices\n", seed);
	printf("harness: %s\n", harness("status"));
}

/* ---- the VMM ----------------------------------------------------------------------------- */

static struct iod_iommufd *ictx;
static int vfd;
static uint32_t ioas, stdev, idev, hwpt;
static uint8_t *guest;

static int mock_cmd(struct iod_mock_cmd *cmd)
{
	return ioctl(vfd, IOD_MOCK_CMD, cmd) < 0 ? -errno : 0;
}

static void vmm_setup(void)
{
	struct iod_mock_cmd dom = {.size = sizeof(dom), .op = IOD_MOCK_OP_DOMAIN_FLAGS};
	struct iod_mock_cmd rep = {.size = sizeof(rep), .op = IOD_MOCK_OP_DOMAIN_REPLACE};
	int r;

	r = iod_iommufd_open(NULL, &ictx);
	dt_assert(r == 0, "open /dev/iommu: %s", iod_strerror(r));
	vfd = iod_iommufd_fd(ictx);
	dt_assert(iod_ioas_alloc(ictx, &ioas) == 0, "IOAS alloc");
	dt_assert(iod_ioas_set_huge_pages(ictx, ioas, false) == 0, "huge pages off");
	dom.id = ioas;
	r = mock_cmd(&dom);
	if (r == -ENOTTY || r == -EOPNOTSUPP || r == -EINVAL) {
		printf("SKIP: the kernel has no iommufd mock devices (CONFIG_IOMMUFD_TEST): %s\n",
		       strerror(-r));
		exit(77);
	}
	dt_assert(r == 0, "mock device: %s", strerror(-r));
	stdev = dom.domain.out_stdev_id;
	idev = dom.domain.out_idev_id;
	r = iod_hwpt_alloc(ictx, idev, ioas, IOD_HWPT_DIRTY, &hwpt);
	dt_assert(r == 0, "dirty HWPT: %s", iod_strerror(r));
	rep.id = stdev;
	rep.replace.pt_id = hwpt;
	dt_assert(mock_cmd(&rep) == 0, "attach the mock device to hwpt %u", hwpt);
	guest = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dt_assert(guest != MAP_FAILED, "guest memory: %s", strerror(errno));
	r = iod_ioas_map(ictx, ioas, guest, GUEST_SIZE, GUEST_GPA, IOD_MAP_READ | IOD_MAP_WRITE);
	dt_assert(r == 0, "map guest memory: %s", iod_strerror(r));
}

/* ---- what was marked, what was delivered ------------------------------------------------ */

static struct dt_pageset marked, delivered, in_iommu;
static sd_bus *bus;
static char *spath;
static pid_t daemon_pid;
static unsigned starts = 1;

static uint32_t max_ranges; /* Manager1.MaxRanges: a HarvestRanges reply is never cut */

static struct {
	unsigned marks, harvests, idle_kills, harvest_kills, ack_kills, terms, replies_lost,
		acked_after_restart, journal_merges;
	unsigned ranges_rounds, ranges_harvest_kills, ranges_ack_kills;
	unsigned reports, chan_reports;
} stats;

/* Mark n log pages dirty (page numbers from GUEST_GPA), as a device writing them would
 * (both mock IOPTEs of each). */
static void mark_pages(const uint64_t *pages, unsigned n)
{
	uint64_t marks[GUEST_PAGES * 2 / 64] = {};
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DIRTY,
		.id = hwpt,
		.dirty = {.iova = GUEST_GPA,
			  .length = GUEST_SIZE,
			  .page_size = mock_page,
			  .uptr = (uintptr_t)marks},
	};
	const uint64_t per = LOG_PAGE / mock_page;
	uint64_t want = 0;

	for (unsigned i = 0; i < n; i++) {
		for (uint64_t k = 0; k < per; k++) {
			uint64_t bit = pages[i] * per + k;

			if (!(marks[bit / 64] & (UINT64_C(1) << (bit % 64))))
				want++;
			marks[bit / 64] |= UINT64_C(1) << (bit % 64);
		}
		dt_pageset_add(&marked, GUEST_GPA + pages[i] * LOG_PAGE);
		dt_pageset_add(&in_iommu, GUEST_GPA + pages[i] * LOG_PAGE);
	}
	dt_assert(mock_cmd(&cmd) == 0, "mock DIRTY: %s", strerror(errno));
	dt_assert(cmd.dirty.out_nr_dirty == want,
		  "the mock marked %" PRIu64 " IOPTEs, not %" PRIu64,
		  (uint64_t)cmd.dirty.out_nr_dirty, want);
	stats.marks += n;
}

/* Mark n random log pages dirty (n <= 64); repeats allowed. */
static void mark_random(unsigned n)
{
	uint64_t pages[64];

	dt_assert(n <= 64, "mark_random: %u pages", n);
	for (unsigned i = 0; i < n; i++)
		pages[i] = rng_below(GUEST_PAGES);
	mark_pages(pages, n);
}

/* Every page got holds was marked (is in was_marked): nothing spurious, at every round. */
static void check_subset(const struct dt_pageset *got, const struct dt_pageset *was_marked,
			 const char *what)
{
	for (uint64_t w = 0; w < iod_bitmap_words(got->npages); w++) {
		uint64_t extra = got->bits[w] & ~was_marked->bits[w];

		dt_assert(!extra, "%s: page 0x%" PRIx64 " is dirty but was never marked", what,
			  (w * 64 + (uint64_t)__builtin_ctzll(extra)) << LOG_SHIFT);
	}
}

/* A Harvest reply: read the round plane as a client does, check it against was_marked and
 * add it to into. Its round. */
static uint64_t read_round(sd_bus_message *reply, struct dt_pageset *into,
			   const struct dt_pageset *was_marked)
{
	struct dt_pageset round;
	uint64_t nr, dirty, usec, n;
	int fd, precise;

	dt_assert(sd_bus_message_read(reply, "thtbt", &nr, &fd, &dirty, &precise, &usec) > 0,
		  "Harvest reply");
	dt_pageset_init(&round, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);
	n = dt_log_read(fd, &round, false);
	dt_assert(n == dirty,
		  "round %" PRIu64 ": %" PRIu64 " pages in the log, Harvest said %" PRIu64, nr, n,
		  dirty);
	check_subset(&round, was_marked, "Harvest");
	for (uint64_t w = 0; w < iod_bitmap_words(round.npages); w++)
		into->bits[w] |= round.bits[w];
	free(round.bits);
	return nr;
}

/* A HarvestRanges reply (space "gpa"): its byte ranges, as a client reads them, checked
 * against was_marked and added to into. Its round. */
static uint64_t read_ranges(sd_bus_message *reply, struct dt_pageset *into,
			    const struct dt_pageset *was_marked)
{
	struct dt_pageset round;
	uint64_t nr, dirty, usec, start, length;
	int truncated, precise;

	dt_assert(sd_bus_message_read(reply, "t", &nr) > 0, "HarvestRanges reply");
	dt_assert(sd_bus_message_enter_container(reply, 'a', "(tt)") > 0, "HarvestRanges reply");
	dt_pageset_init(&round, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);
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
	/* a truncated round must not be acknowledged: max_ranges is the limit, never reached */
	dt_assert(!truncated, "round %" PRIu64 ": HarvestRanges truncated at %" PRIu32 " ranges",
		  nr, max_ranges);
	dt_assert(dt_pageset_count(&round) == dirty,
		  "round %" PRIu64 ": %" PRIu64 " pages in the ranges, HarvestRanges said %" PRIu64,
		  nr, dt_pageset_count(&round), dirty);
	check_subset(&round, was_marked, "HarvestRanges");
	for (uint64_t w = 0; w < iod_bitmap_words(round.npages); w++)
		into->bits[w] |= round.bits[w];
	free(round.bits);
	return nr;
}

/* A Harvest reply of session rs, into delivered. Its round. */
static uint64_t take_round(sd_bus_message *reply)
{
	stats.harvests++;
	return read_round(reply, &delivered, &marked);
}

/* A HarvestRanges reply of session rs, into delivered. Its round. */
static uint64_t take_ranges(sd_bus_message *reply)
{
	stats.harvests++;
	stats.ranges_rounds++;
	return read_ranges(reply, &delivered, &marked);
}

static void acknowledge(uint64_t round)
{
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Acknowledge", NULL, "t", round));
}

/* A Harvest is about to be sent: from now on the pages marked so far may have left the
 * IOMMU for the daemon's log, whether or not the reply makes it back. */
static void harvest_sent(void)
{
	memset(in_iommu.bits, 0, iod_bitmap_bytes(in_iommu.npages));
}

static uint64_t harvest(void)
{
	sd_bus_message *reply;
	uint64_t nr;

	harvest_sent();
	reply = dt_call(bus, spath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	nr = take_round(reply);

	sd_bus_message_unref(reply);
	return nr;
}

/* ---- killing ---------------------------------------------------------------------------- */

static unsigned baseline_fds;

static void check_after_restart(void)
{
	const char *st;
	char want[512];
	unsigned n;

	daemon_pid = harness_wait_ready(++starts);
	st = harness("status");
	dt_assert(harness_field(st, "stored") == 5,
		  "the store holds %" PRIu64
		  " fds, want 5 (iommufd, log, journal, state, state journal): %s",
		  harness_field(st, "stored"), st);
	snprintf(want, sizeof(want), "rs/iommufd,rs/log,rs/journal,state.journal");
	for (const char *name = want; *name;) {
		size_t len = strcspn(name, ",");
		char one[64];

		snprintf(one, sizeof(one), "%.*s", (int)len, name);
		dt_assert(strstr(harness_names(st), one), "the store lacks %s: %s", one, st);
		name += len + (name[len] == ',');
	}
	if (!baseline_fds)
		baseline_fds = proc_fd_count_settled(daemon_pid, 0);
	n = proc_fd_count_settled(daemon_pid, baseline_fds);
	dt_assert(n == baseline_fds, "instance %u holds %u fds, the first restarted one %u", starts,
		  n, baseline_fds);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "Tracking", 'b'),
		  "the session is not tracking after restart %u", starts);
	{
		char *state = dt_get_string(bus, spath, DT_SES_IFACE, "State");

		dt_assert(strcmp(state, "tracking") == 0, "State \"%s\" after restart %u", state,
			  starts);
		free(state);
	}
}

static int kill_signal(void)
{
	if (rng_below(5) == 0) {
		stats.terms++;
		return SIGTERM;
	}
	return SIGKILL;
}

/* Pages marked since the last Harvest was sent are still in the IOMMU: read them without
 * clearing. */
static void check_bits_in_iommu(void)
{
	uint64_t bits[GUEST_PAGES / 64 + 1] = {};
	int r;

	r = iod_hwpt_read_dirty(ictx, hwpt, GUEST_GPA, GUEST_SIZE, LOG_PAGE, bits,
				IOD_READ_NO_CLEAR);
	dt_assert(r == 0, "read dirty bits: %s", iod_strerror(r));
	for (uint64_t p = 0; p < GUEST_PAGES; p++) {
		bool want = dt_pageset_test(&in_iommu, (GUEST_GPA >> LOG_SHIFT) + p);
		bool got = bits[p / 64] & (UINT64_C(1) << (p % 64));

		dt_assert(
			!want || got,
			"page 0x%" PRIx64
			" marked before restart %u is gone from the IOMMU: tracking was enabled again",
			GUEST_GPA + p * LOG_PAGE, starts);
	}
}

/*
 * A write the VMM made itself (no IOMMU saw it), reported before the kill: MarkDirty on the
 * bus, or a mark batch on the session's event channel. Accepted, it is in the log memfd,
 * which the fd store keeps: a later round must deliver the page.
 */
static void report_random(void)
{
	uint64_t page = rng_below(GUEST_PAGES), tries = 0;
	struct iod_range w;

	/* a page nothing marked yet: only the report can deliver it */
	while (dt_pageset_test(&marked, (GUEST_GPA >> LOG_SHIFT) + page)) {
		dt_assert(++tries < GUEST_PAGES, "every page is marked: nothing left to report");
		page = (page + 1) % GUEST_PAGES;
	}
	w = (struct iod_range){.start = GUEST_GPA + page * LOG_PAGE, .length = LOG_PAGE};
	if (rng_below(2)) {
		sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "MarkDirty", NULL, "a(tt)",
					     1, w.start, w.length));
	} else {
		struct iod_channel_completion c = {};
		uint64_t last = 0;
		int fd = -1, r;

		r = iod_channel_open(bus, spath, &fd, &last);
		dt_assert(r == 0, "OpenEventChannel: %s", iod_strerror(r));
		r = iod_channel_mark(fd, last + 1, &w, 1);
		if (r == 0)
			r = iod_channel_recv(fd, &c);
		dt_assert(r == 0 && c.seq == last + 1 && c.error == 0, "mark batch: %s %s %s",
			  iod_strerror(r), c.name, c.message);
		close(fd);
		stats.chan_reports++;
	}
	dt_pageset_add(&marked, w.start);
	stats.reports++;
}

static void kill_idle(void)
{
	mark_random(1 + (unsigned)rng_below(40));
	report_random();
	dt_assert(kill(daemon_pid, kill_signal()) == 0, "kill: %s", strerror(errno));
	check_after_restart();
	check_bits_in_iommu();
	stats.idle_kills++;
}

struct pending {
	bool done;
	sd_bus_message *reply;
	char *error;
};

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct pending *p = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(m);

	p->done = true;
	if (e)
		p->error = strdup(e->name ? e->name : "?");
	else
		p->reply = sd_bus_message_ref(m);
	return 0;
}

/* Wait for the answer to an asynchronous call: the daemon's reply, or the bus's error once
 * the daemon is gone. */
static void wait_pending(struct pending *p)
{
	int r;

	while (!p->done) {
		r = sd_bus_process(bus, NULL);
		dt_assert(r >= 0, "sd_bus_process: %s", strerror(-r));
		if (r == 0)
			sd_bus_wait(bus, 1000000);
	}
}

static void kill_in_harvest(void)
{
	bool ranges = rng_below(3) == 0;
	struct pending p = {};
	sd_bus_slot *slot = NULL;
	int r;

	mark_random(1 + (unsigned)rng_below(40));
	harvest_sent();
	if (ranges)
		r = sd_bus_call_method_async(bus, &slot, DT_DEST, spath, DT_SES_IFACE,
					     "HarvestRanges", on_reply, &p, "a{sv}", 2, "space",
					     "s", "gpa", "max_ranges", "u", max_ranges);
	else
		r = sd_bus_call_method_async(bus, &slot, DT_DEST, spath, DT_SES_IFACE, "Harvest",
					     on_reply, &p, "a{sv}", 0);
	dt_assert(r >= 0, "%s: %s", ranges ? "HarvestRanges" : "Harvest", strerror(-r));
	dt_assert(sd_bus_flush(bus) >= 0, "flush");
	usleep((useconds_t)rng_below(4000));
	dt_assert(kill(daemon_pid, kill_signal()) == 0, "kill: %s", strerror(errno));
	wait_pending(&p);
	if (p.reply) {
		/* The reply made it out: the round is ours, acknowledged or not. */
		if (ranges)
			take_ranges(p.reply);
		else
			take_round(p.reply);
		sd_bus_message_unref(p.reply);
	} else {
		stats.replies_lost++;
		free(p.error);
	}
	sd_bus_slot_unref(slot);
	check_after_restart();
	stats.harvest_kills++;
	if (ranges)
		stats.ranges_harvest_kills++;
}

static void kill_before_ack(void)
{
	uint64_t nr;

	mark_random(1 + (unsigned)rng_below(40));
	nr = harvest();
	dt_assert(kill(daemon_pid, kill_signal()) == 0, "kill: %s", strerror(errno));
	check_after_restart();
	/* The unacknowledged round survived with its number. */
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == nr,
		  "round %" PRIu64 " is no longer pending after the restart", nr);
	acknowledge(nr);
	stats.acked_after_restart++;
	stats.ack_kills++;
}

/* HarvestRanges no longer acknowledges its round either: a kill between its reply and
 * Acknowledge leaves the round pending, and the next instance accepts its Acknowledge. */
static void kill_before_ranges_ack(void)
{
	sd_bus_message *reply;
	uint64_t nr;

	mark_random(1 + (unsigned)rng_below(40));
	harvest_sent();
	reply = dt_call(bus, spath, DT_SES_IFACE, "HarvestRanges", NULL, "a{sv}", 2, "space", "s",
			"gpa", "max_ranges", "u", max_ranges);
	nr = take_ranges(reply);
	sd_bus_message_unref(reply);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == nr,
		  "round %" PRIu64 " of HarvestRanges is not pending before Acknowledge", nr);
	dt_assert(kill(daemon_pid, kill_signal()) == 0, "kill: %s", strerror(errno));
	check_after_restart();
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == nr,
		  "round %" PRIu64 " of HarvestRanges is no longer pending after the restart", nr);
	acknowledge(nr);
	dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == 0,
		  "round %" PRIu64 " is still pending after its Acknowledge", nr);
	stats.acked_after_restart++;
	stats.ranges_ack_kills++;
}

/*
 * A round with no dirty page that the client holds and has not acknowledged is as pending
 * after a restart (SIGKILL: the last state plus its journal; SIGTERM: a full save) as
 * before: PendingRound is its number, and Acknowledge of it clears it. An acknowledged one
 * stays acknowledged. Its round plane is empty, so only the state can say it is pending.
 */
static void empty_round_survives_restart(void)
{
	static const int signals[] = {SIGKILL, SIGTERM};
	uint64_t nr;

	acknowledge(harvest()); /* nothing left in the IOMMU or the log */
	for (size_t i = 0; i < ELEMENTSOF(signals); i++) {
		nr = harvest();
		dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "LastRoundDirtyPages", 't') == 0,
			  "round %" PRIu64 " has dirty pages: nothing was marked", nr);
		dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == nr,
			  "the empty round %" PRIu64 " is not pending before the restart", nr);
		dt_assert(kill(daemon_pid, signals[i]) == 0, "kill: %s", strerror(errno));
		check_after_restart();
		dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == nr,
			  "the empty round %" PRIu64 " is no longer pending after %s", nr,
			  strsignal(signals[i]));
		dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "Rounds", 't') == nr,
			  "Rounds is not %" PRIu64 " after %s", nr, strsignal(signals[i]));
		acknowledge(nr);
		dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == 0,
			  "round %" PRIu64 " is still pending after its Acknowledge", nr);
		dt_assert(kill(daemon_pid, signals[i]) == 0, "kill: %s", strerror(errno));
		check_after_restart();
		dt_assert(dt_get_u64(bus, spath, DT_SES_IFACE, "PendingRound", 't') == 0,
			  "the acknowledged round %" PRIu64 " is pending again after %s", nr,
			  strsignal(signals[i]));
	}
	dt_pass("an unacknowledged round with no dirty page stays pending across SIGKILL and "
		"SIGTERM, and its Acknowledge by the next instance clears it; an acknowledged "
		"one stays acknowledged");
}

/* ---- the disconnect policy across a restart --------------------------------------------- */

/* A new client that creates an owner-mode session with this disconnect policy. */
static sd_bus *owner_of(const char *name, const char *policy)
{
	sd_bus *b = dt_connect();

	sd_bus_message_unref(dt_call(b, DT_MANAGER, DT_MGR_IFACE, "CreateSession", NULL, "sa{sv}",
				     name, 1, "disconnect_policy", "s", policy));
	return b;
}

/* The client leaves the bus; returns once the bus has dropped its name. */
static void leave(sd_bus *b)
{
	const char *unique = NULL;
	char *name;
	int has = 1;

	dt_assert(sd_bus_get_unique_name(b, &unique) >= 0, "unique name");
	name = strdup(unique);
	sd_bus_flush_close_unref(b);
	for (int i = 0; i < 500 && has; i++) {
		sd_bus_error e = SD_BUS_ERROR_NULL;
		sd_bus_message *reply = NULL;
		int r;

		r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				       "org.freedesktop.DBus", "NameHasOwner", &e, &reply, "s",
				       name);
		dt_assert(r >= 0 && sd_bus_message_read(reply, "b", &has) > 0, "NameHasOwner: %s",
			  e.message ? e.message : strerror(-r));
		sd_bus_error_free(&e);
		sd_bus_message_unref(reply);
		if (has)
			usleep(10000);
	}
	dt_assert(!has, "%s is still on the bus", name);
	free(name);
}

/* A string property of session name, or NULL once the session does not exist. */
static char *session_prop(const char *name, const char *prop)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path;
	char *value;
	int r;

	r = sd_bus_call_method(bus, DT_DEST, DT_MANAGER, DT_MGR_IFACE, "GetSession", &e, &reply,
			       "s", name);
	if (r < 0) {
		dt_assert(sd_bus_error_has_name(&e, "org.iodirty.Error.NoSuchSession"),
			  "GetSession %s: %s", name, e.message ? e.message : strerror(-r));
		sd_bus_error_free(&e);
		return NULL;
	}
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "GetSession reply");
	value = dt_get_string(bus, path, DT_SES_IFACE, prop);
	sd_bus_message_unref(reply);
	return value;
}

/* Wait up to 5 s for session name to be in State want (NULL: gone). */
static void expect_state(const char *name, const char *want, const char *why)
{
	char *state = NULL;

	for (int i = 0; i < 500; i++) {
		free(state);
		state = session_prop(name, "State");
		if (want ? state && strcmp(state, want) == 0 : !state)
			break;
		usleep(10000);
	}
	dt_assert(want ? state && strcmp(state, want) == 0 : !state,
		  "session %s is %s, want %s: %s", name, state ? state : "gone",
		  want ? want : "gone", why);
	free(state);
}

static void policy_survives_restart(void)
{
	char *def = dt_get_string(bus, DT_MANAGER, DT_MGR_IFACE, "DisconnectPolicy");
	sd_bus *early, *late, *gone;

	/* With "keep" as the default the checks below could not fail. */
	dt_assert(strcmp(def, "destroy") == 0, "the daemon's default policy is \"%s\"", def);
	free(def);
	early = owner_of("keep-early", "keep");
	late = owner_of("keep-late", "keep");
	gone = owner_of("destroy-early", "destroy");

	/* Two owners leave while the daemon is down (stopped, then killed). */
	dt_assert(strncmp(harness("freeze"), "ok", 2) == 0, "freeze");
	leave(early);
	leave(gone);
	dt_assert(kill(daemon_pid, SIGKILL) == 0, "kill: %s", strerror(errno));
	daemon_pid = harness_wait_ready(++starts);
	expect_state("keep-early", "orphaned", "its owner left while the daemon was down");
	expect_state("destroy-early", NULL, "its owner left while the daemon was down");
	expect_state("keep-late", "idle", "its owner is still connected");
	{
		char *policy = session_prop("keep-late", "DisconnectPolicy");

		dt_assert(strcmp(policy, "keep") == 0,
			  "keep-late's policy is \"%s\" after the restart", policy);
		free(policy);
	}

	/* The third owner leaves the new instance. */
	leave(late);
	expect_state("keep-late", "orphaned", "its owner left after the restart");
	dt_pass("disconnect policy restored: \"keep\" sessions stay orphaned when the owner leaves during or after a restart, a \"destroy\" session goes (default \"destroy\")");

	sd_bus_message_unref(
		dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "DestroySession", NULL, "s", "keep-early"));
	sd_bus_message_unref(
		dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "DestroySession", NULL, "s", "keep-late"));
}

/* ---- owner mode: a death between an IOAS (un)map and the state save ---------------------- */

#define OWN_GPA (UINT64_C(1) << 32)
#define OWN_MEM (2 * SZ_1M)
#define OWN_LEN (64 * 1024)
#define OWN_IOVA(i) (IOD_MOCK_APERTURE_START + (uint64_t)(i)*SZ_1M)

static uint64_t own_mappings(const char *path)
{
	return dt_get_u64(bus, path, DT_SES_IFACE, "Mappings", 'u');
}

static void own_harness(const char *op, uint32_t own_ioas, uint64_t iova)
{
	const char *r = harness("%s own/iommufd %u 0x%" PRIx64 " 0x%" PRIx64, op, own_ioas, iova,
				(uint64_t)OWN_LEN);

	dt_assert(strncmp(r, "ok", 2) == 0, "harness %s: %s", op, r);
}

/*
 * The daemon maps into its own IOAS and then saves the state that records the mapping; a
 * death in between leaves an area no state names, which would refuse the client's retry
 * of the same Map with EEXIST for good. The harness makes that area behind the daemon's
 * back (and, the other way round, removes a recorded one) and kills the daemon: the next
 * instance clears what it does not know, and an Unmap of what the kernel no longer has
 * succeeds.
 */
static void owner_death_between_map_and_save(void)
{
	sd_bus_message *reply;
	const char *p;
	char *path;
	uint32_t own_ioas;
	int memfd;

	memfd = memfd_create("own-memory", MFD_CLOEXEC);
	dt_assert(memfd >= 0 && ftruncate(memfd, OWN_MEM) == 0, "memfd: %s", strerror(errno));
	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "CreateSession", NULL, "sa{sv}", "own", 2,
			"viommu", "b", 1, "disconnect_policy", "s", "keep");
	dt_assert(sd_bus_message_read(reply, "o", &p) > 0, "CreateSession reply");
	path = strdup(p);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, path, DT_SES_IFACE, "AddMemory", NULL, "httt", memfd,
				     UINT64_C(0), (uint64_t)OWN_MEM, OWN_GPA));
	close(memfd);
	sd_bus_message_unref(dt_call(bus, path, DT_SES_IFACE, "Map", NULL, "ttt", OWN_IOVA(0),
				     OWN_GPA, OWN_LEN));
	sd_bus_message_unref(dt_call(bus, path, DT_SES_IFACE, "Map", NULL, "ttt", OWN_IOVA(1),
				     OWN_GPA, OWN_LEN));
	own_ioas = (uint32_t)dt_get_u64(bus, path, DT_SES_IFACE, "IoasId", 'u');
	dt_assert(own_ioas != 0 && own_mappings(path) == 2,
		  "owner session: ioas %u, %" PRIu64 " mappings", own_ioas, own_mappings(path));

	/* An area the daemon does not know refuses its Map (the check below can fail). */
	own_harness("ioas-map", own_ioas, OWN_IOVA(2));
	sd_bus_message_unref(dt_call(bus, path, DT_SES_IFACE, "Map", "org.iodirty.Error.Kernel",
				     "ttt", OWN_IOVA(2), OWN_GPA, OWN_LEN));
	dt_assert(own_mappings(path) == 2, "a refused Map changed Mappings");
	dt_pass("control: an IOAS area the daemon did not record refuses the Map of its range");

	/* Another one, and a recorded mapping gone, while the daemon is down. */
	dt_assert(strncmp(harness("freeze"), "ok", 2) == 0, "freeze");
	own_harness("ioas-map", own_ioas, OWN_IOVA(3));
	own_harness("ioas-unmap", own_ioas, OWN_IOVA(1));
	dt_assert(kill(daemon_pid, SIGKILL) == 0, "kill: %s", strerror(errno));
	daemon_pid = harness_wait_ready(++starts);

	dt_assert(own_mappings(path) == 2, "%" PRIu64 " mappings after the restart, want 2",
		  own_mappings(path));
	sd_bus_message_unref(dt_call(bus, path, DT_SES_IFACE, "Map", NULL, "ttt", OWN_IOVA(2),
				     OWN_GPA, OWN_LEN));
	sd_bus_message_unref(dt_call(bus, path, DT_SES_IFACE, "Map", NULL, "ttt", OWN_IOVA(3),
				     OWN_GPA, OWN_LEN));
	dt_assert(own_mappings(path) == 4, "%" PRIu64 " mappings, want 4", own_mappings(path));
	dt_pass("after kill -9 the next instance cleared the IOAS areas its state did not record: the client's Map retries succeed");
	sd_bus_message_unref(
		dt_call(bus, path, DT_SES_IFACE, "Unmap", NULL, "tt", OWN_IOVA(1), OWN_LEN));
	dt_assert(own_mappings(path) == 3, "%" PRIu64 " mappings after the Unmap, want 3",
		  own_mappings(path));
	/* the recorded ones are really in the IOAS: the harness cannot map over them */
	for (int i = 0; i < 4; i++) {
		const char *r = harness("ioas-map own/iommufd %u 0x%" PRIx64 " 0x%" PRIx64,
					own_ioas, OWN_IOVA(i), (uint64_t)OWN_LEN);

		dt_assert(i == 1 ? strncmp(r, "ok", 2) == 0 : strncmp(r, "error", 5) == 0,
			  "IOVA 0x%" PRIx64 ": harness ioas-map: %s", OWN_IOVA(i), r);
	}
	dt_pass("an Unmap of a recorded mapping the kernel no longer had succeeds; the IOAS holds exactly the recorded mappings");

	sd_bus_message_unref(dt_call(bus, path, DT_SES_IFACE, "Destroy", NULL, ""));
	free(path);
}

/* ---- vIOMMU: a Map or Unmap the daemon died in, retried blindly ------------------------- */

/*
 * The VMM's second address space: an IOAS with its own mock device on its own
 * dirty-tracking HWPT (a second session on the first HWPT would enable tracking on it again,
 * which wipes its bits), adopted as session rv with a vIOMMU. Mappings take pieces of the
 * guest memory buffer at IOVA slots of their own, far from each other, each holding one
 * mapping of at most RV_MAX_PAGES pages; slot RV_SLOTS is kept for the negative control.
 */
#define RV_SLOTS 64
#define RV_SLOT_SIZE (64 * UINT64_C(1024))
#define RV_IOVA(slot) ((UINT64_C(1) << 30) + (uint64_t)(slot)*RV_SLOT_SIZE)
#define RV_MAX_PAGES 4
#define RV_MAX_BATCH 4
#define NOT_MAPPED "org.iodirty.Error.NotMapped"

_Static_assert(RV_SLOT_SIZE / LOG_PAGE >= RV_MAX_PAGES, "a mapping fits its slot");
_Static_assert(RV_IOVA(RV_SLOTS + 1) <= IOD_MOCK_APERTURE_END, "the slots are in the aperture");

struct rv_mapping {
	uint64_t iova, gpa, size;
	unsigned slot;
};

static uint32_t rv_ioas, rv_stdev, rv_hwpt;
static char *rvpath;
/* the mappings the daemon has answered for (Map or MapBatch), not yet Unmap'ed */
static struct rv_mapping rv_maps[RV_SLOTS];
static size_t rv_n;
static bool rv_slot_used[RV_SLOTS];
/* GPA pages of this phase only: the first phase's pages are in marked and delivered */
static struct dt_pageset rv_marked, rv_delivered;

static struct {
	unsigned map, map_batch, batched, unmap, unmap_batch, unbatched, kills, replies_out,
		found_done, redone, marks, harvests;
	/* on the event channel: events sent, of them in flight at a kill, batches completed
	 * before a kill, resent batches the next instance had (replays) and had not */
	unsigned chan, chan_killed, chan_completed, chan_replayed, chan_reapplied;
} rv_stats;

/* Session rv's event channel, the daemon instance that opened it, the last seq sent. */
static int rv_chan = -1;
static unsigned rv_chan_start;
static uint64_t rv_seq;

static void rv_vmm_setup(void)
{
	struct iod_mock_cmd dom = {.size = sizeof(dom), .op = IOD_MOCK_OP_DOMAIN_FLAGS};
	struct iod_mock_cmd rep = {.size = sizeof(rep), .op = IOD_MOCK_OP_DOMAIN_REPLACE};
	int r;

	dt_assert(iod_ioas_alloc(ictx, &rv_ioas) == 0, "second IOAS alloc");
	dt_assert(iod_ioas_set_huge_pages(ictx, rv_ioas, false) == 0, "huge pages off");
	dom.id = rv_ioas;
	r = mock_cmd(&dom);
	dt_assert(r == 0, "second mock device: %s", strerror(-r));
	rv_stdev = dom.domain.out_stdev_id;
	r = iod_hwpt_alloc(ictx, dom.domain.out_idev_id, rv_ioas, IOD_HWPT_DIRTY, &rv_hwpt);
	dt_assert(r == 0, "second dirty HWPT: %s", iod_strerror(r));
	rep.id = rv_stdev;
	rep.replace.pt_id = rv_hwpt;
	r = mock_cmd(&rep);
	dt_assert(r == 0, "attach the second mock device to hwpt %u: %s", rv_hwpt, strerror(-r));
}

static void rv_vmm_teardown(void)
{
	int r;

	/* reverse order: the device (unbound with its selftest object), the HWPT, the IOAS
	 * (with what is still mapped in it) */
	r = iod_iommufd_destroy(ictx, rv_stdev);
	dt_assert(r == 0, "destroy the second mock device: %s", iod_strerror(r));
	r = iod_iommufd_destroy(ictx, rv_hwpt);
	dt_assert(r == 0, "destroy hwpt %u: %s", rv_hwpt, iod_strerror(r));
	r = iod_iommufd_destroy(ictx, rv_ioas);
	dt_assert(r == 0, "destroy ioas %u: %s", rv_ioas, iod_strerror(r));
}

static void rv_ioas_map(const struct rv_mapping *m)
{
	int r;

	r = iod_ioas_map(ictx, rv_ioas, guest + (m->gpa - GUEST_GPA), m->size, m->iova,
			 IOD_MAP_READ | IOD_MAP_WRITE);
	dt_assert(r == 0, "IOAS map [0x%" PRIx64 ", +0x%" PRIx64 ") -> GPA 0x%" PRIx64 ": %s",
		  m->iova, m->size, m->gpa, iod_strerror(r));
}

static void rv_ioas_unmap(const struct rv_mapping *m)
{
	uint64_t unmapped = 0;
	int r;

	r = iod_ioas_unmap(ictx, rv_ioas, m->iova, m->size, &unmapped);
	dt_assert(r == 0 && unmapped == m->size,
		  "IOAS unmap [0x%" PRIx64 ", +0x%" PRIx64 "): %s, %" PRIu64 " bytes", m->iova,
		  m->size, iod_strerror(r), unmapped);
}

/* Mark pages [first, first + npages) of mapping m dirty on the second HWPT, at their IOVA
 * (both mock IOPTEs of each), as the device writing them would; their GPAs join rv_marked. */
static void rv_mark(const struct rv_mapping *m, uint64_t first, uint64_t npages)
{
	const uint64_t per = LOG_PAGE / mock_page, nbits = npages * per;
	uint64_t marks[4] = {};
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DIRTY,
		.id = rv_hwpt,
		.dirty = {.iova = m->iova + first * LOG_PAGE,
			  .length = npages * LOG_PAGE,
			  .page_size = mock_page,
			  .uptr = (uintptr_t)marks},
	};
	int r;

	dt_assert(first + npages <= m->size / LOG_PAGE && nbits <= 64 * ELEMENTSOF(marks),
		  "rv_mark: pages %" PRIu64 "+%" PRIu64 " of a mapping of %" PRIu64, first, npages,
		  m->size / LOG_PAGE);
	for (uint64_t b = 0; b < nbits; b++)
		marks[b / 64] |= UINT64_C(1) << (b % 64);
	r = mock_cmd(&cmd);
	dt_assert(r == 0, "mock DIRTY at IOVA 0x%" PRIx64 ": %s", cmd.dirty.iova, strerror(-r));
	dt_assert(cmd.dirty.out_nr_dirty == nbits,
		  "the mock marked %" PRIu64 " IOPTEs at IOVA 0x%" PRIx64 ", not %" PRIu64,
		  (uint64_t)cmd.dirty.out_nr_dirty, cmd.dirty.iova, nbits);
	for (uint64_t i = 0; i < npages; i++)
		dt_pageset_add(&rv_marked, m->gpa + (first + i) * LOG_PAGE);
	rv_stats.marks++;
}

static void rv_mark_random(void)
{
	const struct rv_mapping *m;
	uint64_t pages, first;

	if (rv_n == 0)
		return;
	m = &rv_maps[rng_below(rv_n)];
	pages = m->size / LOG_PAGE;
	first = rng_below(pages);
	rv_mark(m, first, 1 + rng_below(pages - first));
}

/* Harvest and Acknowledge a round of session rv; its pages join rv_delivered. */
static void rv_harvest(void)
{
	sd_bus_message *reply;
	uint64_t nr;

	reply = dt_call(bus, rvpath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	nr = read_round(reply, &rv_delivered, &rv_marked);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, rvpath, DT_SES_IFACE, "Acknowledge", NULL, "t", nr));
	rv_stats.harvests++;
}

/* The daemon records exactly the mappings the VMM has told it of. */
static void rv_check_recorded(const char *when)
{
	uint64_t bytes = 0, n, b;

	for (size_t i = 0; i < rv_n; i++)
		bytes += rv_maps[i].size;
	n = dt_get_u64(bus, rvpath, DT_SES_IFACE, "Mappings", 'u');
	b = dt_get_u64(bus, rvpath, DT_SES_IFACE, "MappedBytes", 't');
	dt_assert(n == rv_n && b == bytes,
		  "%s: the daemon records %" PRIu64 " mappings of 0x%" PRIx64
		  " bytes, the VMM has %zu of 0x%" PRIx64,
		  when, n, b, rv_n, bytes);
}

static const char *rv_member(bool map, size_t n)
{
	if (map)
		return n > 1 ? "MapBatch" : "Map";
	return n > 1 ? "UnmapBatch" : "Unmap";
}

/* Map (map, n == 1), MapBatch, Unmap or UnmapBatch of the n entries of v to session rv. */
static sd_bus_message *rv_message(bool map, const struct rv_mapping *v, size_t n)
{
	struct iod_mapping ev[RV_MAX_BATCH];
	sd_bus_message *m = NULL;
	int r;

	dt_assert(n >= 1 && n <= RV_MAX_BATCH, "a call of %zu entries", n);
	if (n == 1) {
		r = sd_bus_message_new_method_call(bus, &m, DT_DEST, rvpath, DT_SES_IFACE,
						   rv_member(map, n));
		if (r >= 0 && map)
			r = sd_bus_message_append(m, "ttt", v->iova, v->gpa, v->size);
		else if (r >= 0)
			r = sd_bus_message_append(m, "tt", v->iova, v->size);
	} else {
		for (size_t i = 0; i < n; i++)
			ev[i] = (struct iod_mapping){
				.iova = v[i].iova, .gpa = v[i].gpa, .length = v[i].size};
		r = iod_bus_new_batch(bus, rvpath, map, ev, n, &m);
	}
	dt_assert(r >= 0, "building %s: %s", rv_member(map, n), strerror(-r));
	return m;
}

/* Send the call and wait for the daemon's answer. It must succeed; with ret_not_mapped
 * set, NotMapped is accepted too and said there. */
static void rv_sync(bool map, const struct rv_mapping *v, size_t n, bool *ret_not_mapped,
		    const char *when)
{
	sd_bus_message *m = rv_message(map, v, n);
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	r = sd_bus_call(bus, m, 0, &e, NULL);
	if (r < 0 && ret_not_mapped && sd_bus_error_has_name(&e, NOT_MAPPED)) {
		*ret_not_mapped = true;
	} else {
		dt_assert(r >= 0, "%s of %zu entries at IOVA 0x%" PRIx64 "%s failed: %s (%s)",
			  rv_member(map, n), n, v[0].iova, when,
			  e.message ? e.message : strerror(-r), e.name ? e.name : "?");
		if (ret_not_mapped)
			*ret_not_mapped = false;
	}
	sd_bus_error_free(&e);
	sd_bus_message_unref(m);
}

/* An event channel of the running instance (a restart closed the last one). */
static void rv_channel(void)
{
	uint64_t last = 0;
	int r;

	if (rv_chan >= 0 && rv_chan_start == starts)
		return;
	if (rv_chan >= 0)
		close(rv_chan);
	r = iod_channel_open(bus, rvpath, &rv_chan, &last);
	dt_assert(r >= 0, "OpenEventChannel: %s", strerror(-r));
	dt_assert(last <= rv_seq, "the daemon applied batch %" PRIu64 ", the last sent is %" PRIu64,
		  last, rv_seq);
	rv_chan_start = starts;
}

static void rv_channel_send(bool map, const struct rv_mapping *v, size_t n, uint64_t seq)
{
	struct iod_mapping ev[RV_MAX_BATCH];
	int r;

	for (size_t i = 0; i < n; i++)
		ev[i] = (struct iod_mapping){
			.iova = v[i].iova, .gpa = v[i].gpa, .length = v[i].size};
	r = iod_channel_send(rv_chan, map ? IOD_EVENT_MAP : IOD_EVENT_UNMAP, seq, ev, n);
	dt_assert(r >= 0, "event channel: send batch %" PRIu64 ": %s", seq, strerror(-r));
}

/* The completion of batch seq: a success; a replay exactly when replay is set. */
static void rv_channel_complete(uint64_t seq, bool replay, const char *when)
{
	struct iod_channel_completion c;
	int r = iod_channel_recv(rv_chan, &c);

	dt_assert(r >= 0, "event channel: completion of batch %" PRIu64 "%s: %s", seq, when,
		  strerror(-r));
	dt_assert(c.seq == seq && c.error == 0,
		  "event channel: batch %" PRIu64 "%s: completion for %" PRIu64 ": %s %s", seq,
		  when, c.seq, c.name, c.message);
	dt_assert(!!(c.flags & IOD_EVENT_COMPLETION_REPLAYED) == replay,
		  "event channel: batch %" PRIu64 "%s: %s, want %s", seq, when,
		  c.flags & IOD_EVENT_COMPLETION_REPLAYED ? "a replay" : "applied",
		  replay ? "a replay (the killed instance applied it)" : "applied");
}

/*
 * The event on the event channel. Half of the time the batch (split in two batches in
 * flight when it has several entries) is sent and the daemon is killed 0..4 ms later; the
 * completions that made it out are read, a new channel says which batches the killed
 * instance applied, and every batch is sent again with its number: each must complete, as
 * a replay exactly when it had been applied. Unlike a blind retry on the bus, a resent
 * Unmap never answers NotMapped. A completion that made it out must be of a batch the next
 * instance knows (it was durable).
 */
static void rv_event_channel(bool map, const struct rv_mapping *v, size_t n)
{
	size_t split = n > 1 ? 1 + rng_below(n - 1) : n;
	uint64_t first = rv_seq + 1, last = 0, completed = 0;
	unsigned batches = split < n ? 2 : 1;

	rv_channel();
	rv_stats.chan += (unsigned)n;
	if (rng_below(2) == 0) {
		rv_channel_send(map, v, n, ++rv_seq);
		rv_channel_complete(rv_seq, false, "");
		return;
	}
	rv_channel_send(map, v, split, ++rv_seq);
	if (split < n)
		rv_channel_send(map, v + split, n - split, ++rv_seq);
	usleep((useconds_t)rng_below(4000));
	dt_assert(kill(daemon_pid, SIGKILL) == 0, "kill: %s", strerror(errno));
	/* What the killed instance completed, in order, until the channel ends. */
	for (;;) {
		struct iod_channel_completion c;

		if (iod_channel_recv(rv_chan, &c) < 0)
			break;
		dt_assert(c.seq == first + completed && c.error == 0,
			  "event channel: completion for %" PRIu64 " (%s %s) before the kill, want "
			  "a success for %" PRIu64,
			  c.seq, c.name, c.message, first + completed);
		completed++;
	}
	daemon_pid = harness_wait_ready(++starts);
	rv_stats.kills++;
	rv_stats.chan_killed += (unsigned)n;
	rv_stats.chan_completed += (unsigned)completed;

	rv_channel(); /* the killed instance's channel is gone: a new one */
	last = dt_get_u64(bus, rvpath, DT_SES_IFACE, "EventSequence", 't');
	dt_assert(last >= first - 1 + completed,
		  "batch %" PRIu64 " was completed before the kill, but the next instance has "
		  "applied up to %" PRIu64 " only",
		  first - 1 + completed, last);
	rv_channel_send(map, v, split, first);
	if (split < n)
		rv_channel_send(map, v + split, n - split, first + 1);
	for (unsigned b = 0; b < batches; b++) {
		bool had = first + b <= last;

		rv_channel_complete(first + b, had, " (resent after kill -9)");
		if (had)
			rv_stats.chan_replayed++;
		else
			rv_stats.chan_reapplied++;
	}
}

/*
 * Tell the daemon of a map (map) or unmap event of the n entries of v: a third of the time
 * on the event channel (rv_event_channel()), else on the bus. Half of the time the
 * call is sent, the daemon is killed (SIGKILL) 0..4 ms later, and once its next instance is
 * ready the VMM, not knowing whether the first attempt took effect, sends the same call
 * again: a Map or MapBatch must succeed, an Unmap or UnmapBatch must succeed or answer
 * NotMapped, which it must when the first attempt's reply made it out. Returns once the
 * daemon has answered.
 */
static void rv_event(bool map, const struct rv_mapping *v, size_t n)
{
	const char *member = rv_member(map, n);
	struct pending p = {};
	sd_bus_slot *slot = NULL;
	sd_bus_message *m;
	bool not_mapped;
	int r;

	if (rng_below(3) == 0) {
		rv_event_channel(map, v, n);
		return;
	}
	if (rng_below(2) == 0) {
		rv_sync(map, v, n, NULL, "");
		return;
	}
	m = rv_message(map, v, n);
	r = sd_bus_call_async(bus, &slot, m, on_reply, &p, 0);
	dt_assert(r >= 0, "%s: %s", member, strerror(-r));
	sd_bus_message_unref(m);
	dt_assert(sd_bus_flush(bus) >= 0, "flush");
	usleep((useconds_t)rng_below(4000));
	dt_assert(kill(daemon_pid, SIGKILL) == 0, "kill: %s", strerror(errno));
	wait_pending(&p);
	sd_bus_slot_unref(slot);
	/* the store holds session rv's fds now: no check_after_restart() */
	daemon_pid = harness_wait_ready(++starts);
	rv_stats.kills++;
	if (p.reply) {
		rv_stats.replies_out++;
		sd_bus_message_unref(p.reply);
	} else {
		/* Only the bus answers for a daemon that died; the daemon itself never refuses. */
		dt_assert(strncmp(p.error, "org.freedesktop.DBus.Error.", 27) == 0,
			  "%s at IOVA 0x%" PRIx64 " failed with %s before the kill", member,
			  v[0].iova, p.error);
		free(p.error);
	}

	rv_sync(map, v, n, map ? NULL : &not_mapped, " (a blind retry after kill -9)");
	if (map)
		return;
	if (not_mapped) {
		rv_stats.found_done++;
		return;
	}
	/* The state is saved before the reply goes out: a reply that made it out means the
	 * next instance knows the mappings are gone. */
	dt_assert(!p.reply,
		  "%s at IOVA 0x%" PRIx64 " was answered before the kill, yet its retry found "
		  "the mappings still recorded",
		  member, v[0].iova);
	rv_stats.redone++;
}

/* A free slot, at random; RV_SLOTS if there is none. */
static unsigned rv_free_slot(void)
{
	unsigned start = (unsigned)rng_below(RV_SLOTS);

	for (unsigned i = 0; i < RV_SLOTS; i++)
		if (!rv_slot_used[(start + i) % RV_SLOTS])
			return (start + i) % RV_SLOTS;
	return RV_SLOTS;
}

/* Map 1..RV_MAX_BATCH new mappings of 1..RV_MAX_PAGES random pages of guest memory into the
 * IOAS, then tell the daemon: Map for one, MapBatch for more. */
static void rv_map_some(void)
{
	struct rv_mapping v[RV_MAX_BATCH];
	size_t k = 1 + rng_below(RV_MAX_BATCH), n = 0;

	for (; n < k; n++) {
		uint64_t pages = 1 + rng_below(RV_MAX_PAGES);
		unsigned slot = rv_free_slot();

		if (slot == RV_SLOTS)
			break;
		rv_slot_used[slot] = true;
		v[n] = (struct rv_mapping){
			.iova = RV_IOVA(slot),
			.gpa = GUEST_GPA + rng_below(GUEST_PAGES - pages + 1) * LOG_PAGE,
			.size = pages * LOG_PAGE,
			.slot = slot,
		};
		rv_ioas_map(&v[n]);
	}
	if (n == 0)
		return;
	rv_event(true, v, n);
	for (size_t i = 0; i < n; i++)
		rv_maps[rv_n++] = v[i];
	if (n == 1) {
		rv_stats.map++;
	} else {
		rv_stats.map_batch++;
		rv_stats.batched += n;
	}
	rv_check_recorded(rv_member(true, n));
}

/* Unmap 1..RV_MAX_BATCH recorded mappings: the daemon first (Unmap for one, UnmapBatch for
 * more), and only once it has answered, IOMMU_IOAS_UNMAP (the adopt-mode protocol). */
static void rv_unmap_some(void)
{
	struct rv_mapping v[RV_MAX_BATCH];
	size_t k = 1 + rng_below(RV_MAX_BATCH);

	if (k > rv_n)
		k = rv_n;
	if (k == 0)
		return;
	for (size_t i = 0; i < k; i++) {
		size_t j = rng_below(rv_n);

		v[i] = rv_maps[j];
		rv_maps[j] = rv_maps[--rv_n];
	}
	rv_event(false, v, k);
	for (size_t i = 0; i < k; i++) {
		rv_ioas_unmap(&v[i]);
		rv_slot_used[v[i].slot] = false;
	}
	if (k == 1) {
		rv_stats.unmap++;
	} else {
		rv_stats.unmap_batch++;
		rv_stats.unbatched += k;
	}
	rv_check_recorded(rv_member(false, k));
}

/* Lost: marked, never delivered; spurious: delivered, never marked (GPA pages). */
static void rv_compare(uint64_t *ret_lost, uint64_t *ret_spurious, bool print)
{
	uint64_t lost = 0, spurious = 0;

	for (uint64_t p = 0; p < rv_marked.npages; p++) {
		bool m = dt_pageset_test(&rv_marked, p), d = dt_pageset_test(&rv_delivered, p);

		if (m == d)
			continue;
		if (m)
			lost++;
		else
			spurious++;
		if (print && lost + spurious <= 8)
			printf("  GPA page 0x%" PRIx64 ": %s\n", p << LOG_SHIFT,
			       m ? "marked, never delivered (lost)" : "delivered, never marked");
	}
	*ret_lost = lost;
	*ret_spurious = spurious;
}

/* Without kills: what makes the blind retries safe, and that the checks can refuse. */
static void rv_controls(void)
{
	struct rv_mapping a = {.iova = RV_IOVA(0), .gpa = GUEST_GPA, .size = 2 * LOG_PAGE};
	struct rv_mapping both[2] = {a, {.iova = RV_IOVA(1), .size = LOG_PAGE}};
	bool not_mapped;

	rv_ioas_map(&a);
	rv_sync(true, &a, 1, NULL, "");
	rv_sync(true, &a, 1, NULL, " (the same Map again)");
	sd_bus_message_unref(dt_call(bus, rvpath, DT_SES_IFACE, "Map",
				     "org.iodirty.Error.InvalidRange", "ttt", a.iova,
				     a.gpa + LOG_PAGE, a.size));
	rv_maps[rv_n++] = a;
	rv_check_recorded("a Map twice and one to another GPA");
	dt_pass("control: a Map identical to a recorded mapping succeeds without a change; one at its IOVA to another GPA is InvalidRange");

	rv_sync(false, &a, 1, &not_mapped, "");
	dt_assert(!not_mapped, "the first Unmap of a recorded mapping is NotMapped");
	rv_n = 0;
	rv_check_recorded("Unmap");
	rv_sync(false, &a, 1, &not_mapped, " (the same Unmap again)");
	dt_assert(not_mapped, "Unmap of IOVA 0x%" PRIx64 " twice: the second is not NotMapped",
		  a.iova);
	rv_sync(false, both, 2, &not_mapped, " (nothing mapped)");
	dt_assert(not_mapped, "UnmapBatch of nothing mapped is not NotMapped");
	rv_ioas_unmap(&a);
	dt_pass("control: an Unmap or UnmapBatch with nothing mapped is NotMapped");
}

/*
 * The two points of an event's persistence, hit exactly (the daemon kills itself there:
 * IODIRTYD_TEST_CRASH, set for one instance through the harness):
 *  - journal-append: the record is committed, the reply has not gone out. The next instance
 *    knows the event: a blind retry of the Map succeeds unchanged, of the Unmap is NotMapped.
 *  - journal-torn: half of the record is written, the commit never happened. The next
 *    instance does not know the event: the retried Map maps, the retried Unmap unmaps.
 * Either way the daemon ends up recording exactly the VMM's mappings.
 */
static void rv_crash_at(const char *point, bool map, struct rv_mapping *m)
{
	char cmd[96];
	struct pending p = {};
	sd_bus_slot *slot = NULL;
	sd_bus_message *msg;
	bool torn = strcmp(point, "journal-torn") == 0, not_mapped;
	int r;

	/* An instance that kills itself at its first journal append, and only that one. */
	snprintf(cmd, sizeof(cmd), "setenv IODIRTYD_TEST_CRASH=%s:1", point);
	dt_assert(strcmp(harness("%s", cmd), "ok") == 0, "harness %s", cmd);
	dt_assert(kill(daemon_pid, SIGKILL) == 0, "kill: %s", strerror(errno));
	daemon_pid = harness_wait_ready(++starts);
	rv_stats.kills++;
	dt_assert(strcmp(harness("unsetenv IODIRTYD_TEST_CRASH"), "ok") == 0, "harness unsetenv");

	if (map)
		rv_ioas_map(m);
	msg = rv_message(map, m, 1);
	r = sd_bus_call_async(bus, &slot, msg, on_reply, &p, 0);
	dt_assert(r >= 0, "%s: %s", rv_member(map, 1), strerror(-r));
	sd_bus_message_unref(msg);
	wait_pending(&p);
	sd_bus_slot_unref(slot);
	dt_assert(!p.reply && p.error && strncmp(p.error, "org.freedesktop.DBus.Error.", 27) == 0,
		  "%s with the daemon set to die at %s: answered %s", rv_member(map, 1), point,
		  p.error ? p.error : "success");
	free(p.error);
	daemon_pid = harness_wait_ready(++starts);
	rv_stats.kills++;

	rv_sync(map, m, 1, map ? NULL : &not_mapped, " (the retry after a journal kill)");
	if (map) {
		rv_maps[rv_n++] = *m;
	} else {
		dt_assert(not_mapped != torn, "Unmap retried after a kill %s: %s, want %s", point,
			  not_mapped ? "NotMapped" : "unmapped it again",
			  torn ? "unmapped again (the torn record never counted)"
			       : "NotMapped (the committed record counts)");
		rv_ioas_unmap(m);
		rv_n--;
	}
	rv_check_recorded(point);
}

static void rv_journal_kills(void)
{
	static const char *const points[] = {"journal-append", "journal-torn"};

	for (size_t i = 0; i < ELEMENTSOF(points); i++) {
		struct rv_mapping m = {.iova = RV_IOVA(RV_SLOTS + 1),
				       .gpa = GUEST_GPA + 8 * LOG_PAGE,
				       .size = 2 * LOG_PAGE};

		rv_crash_at(points[i], true, &m);
		rv_crash_at(points[i], false, &m);
	}
	dt_pass("kills inside the journal: after a committed record and before the reply, the "
		"retried Map succeeds unchanged and the retried Unmap is NotMapped; after a torn "
		"record the retries map and unmap; the daemon records exactly the VMM's mappings");
}

static void viommu_events_survive_kills(void)
{
	const char *c = getenv("IOD_TEST_VIOMMU_CYCLES");
	unsigned cycles = c ? (unsigned)strtoul(c, NULL, 0) : 60, starts_before = starts;
	uint64_t lost, spurious;
	sd_bus_message *reply;
	const char *p, *st;
	time_t t0;

	rv_vmm_setup();
	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}", "rv",
			vfd, rv_ioas, 1, rv_hwpt, 1, "viommu", "b", 1);
	dt_assert(sd_bus_message_read(reply, "o", &p) > 0, "AdoptSession reply");
	rvpath = strdup(p);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, rvpath, DT_SES_IFACE, "AddRegion", NULL, "tt", GUEST_GPA,
				     (uint64_t)GUEST_SIZE));
	sd_bus_message_unref(dt_call(bus, rvpath, DT_SES_IFACE, "Start", NULL, ""));
	st = harness("status");
	dt_assert(strstr(harness_names(st), "rv/iommufd") && strstr(harness_names(st), "rv/log") &&
			  strstr(harness_names(st), "rv/journal"),
		  "after AdoptSession rv the store holds: %s", st);
	dt_pageset_init(&rv_marked, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);
	dt_pageset_init(&rv_delivered, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);

	rv_controls();
	rv_journal_kills();

	t0 = time(NULL);
	for (unsigned i = 0; i < cycles; i++) {
		if (rv_n == 0 || (rv_n + RV_MAX_BATCH <= RV_SLOTS && rng_below(5) < 3))
			rv_map_some();
		else
			rv_unmap_some();
		for (uint64_t k = rng_below(4); k > 0; k--)
			rv_mark_random();
		if (rng_below(4) == 0)
			rv_harvest();
	}
	printf("%u vIOMMU cycles in %ld s, %zu mappings left\n", cycles, (long)(time(NULL) - t0),
	       rv_n);
	dt_assert(starts - starts_before == rv_stats.kills, "%u restarts for %u kills",
		  starts - starts_before, rv_stats.kills);
	dt_pass("vIOMMU events: %u Map, %u MapBatch (%u mappings), %u Unmap, %u UnmapBatch (%u mappings); %u of them killed 0..4 ms after sending (%u replies out before the kill) and retried blindly: every Map/MapBatch retry succeeded, %u Unmap/UnmapBatch retries found the first attempt done (NotMapped), %u did it again",
		rv_stats.map, rv_stats.map_batch, rv_stats.batched, rv_stats.unmap,
		rv_stats.unmap_batch, rv_stats.unbatched, rv_stats.kills, rv_stats.replies_out,
		rv_stats.found_done, rv_stats.redone);
	dt_assert(rv_stats.chan > 0 && rv_stats.chan_killed > 0,
		  "no events (%u) or none in flight at a kill (%u) on the event channel",
		  rv_stats.chan, rv_stats.chan_killed);
	dt_pass("event channel: %u of the mappings went over it, %u of them in batches in flight "
		"at a kill -9; %u batches completed before the kill; resent with their numbers, "
		"%u completed as replays (the killed instance had them), %u were applied anew",
		rv_stats.chan, rv_stats.chan_killed, rv_stats.chan_completed,
		rv_stats.chan_replayed, rv_stats.chan_reapplied);

	/* The last round, then the comparison. */
	rv_harvest();
	rv_compare(&lost, &spurious, true);
	dt_assert(lost == 0 && spurious == 0,
		  "vIOMMU events: %" PRIu64 " pages lost, %" PRIu64 " spurious", lost, spurious);
	dt_pass("vIOMMU events through %u kills: marked %" PRIu64 " pages, delivered %" PRIu64
		": 0 lost, 0 spurious (%u marks, %u rounds)",
		rv_stats.kills, dt_pageset_count(&rv_marked), dt_pageset_count(&rv_delivered),
		rv_stats.marks, rv_stats.harvests);

	/* Negative control: a page never marked, in a new mapping, marked after the last
	 * harvest, shows as missing. */
	{
		struct rv_mapping m = {.iova = RV_IOVA(RV_SLOTS), .size = LOG_PAGE};
		uint64_t page = rng_below(GUEST_PAGES), tries = 0;

		while (dt_pageset_test(&rv_marked, (GUEST_GPA >> LOG_SHIFT) + page)) {
			dt_assert(++tries < GUEST_PAGES,
				  "every page is marked: no negative control");
			page = (page + 1) % GUEST_PAGES;
		}
		m.gpa = GUEST_GPA + page * LOG_PAGE;
		rv_ioas_map(&m);
		rv_sync(true, &m, 1, NULL, "");
		rv_mark(&m, 0, 1);
	}
	rv_compare(&lost, &spurious, false);
	dt_assert(lost == 1 && spurious == 0,
		  "negative control: %" PRIu64 " lost, %" PRIu64 " spurious, want 1 and 0", lost,
		  spurious);
	dt_pass("negative control: a page marked after the last harvest shows as missing");

	sd_bus_message_unref(dt_call(bus, rvpath, DT_SES_IFACE, "Destroy", NULL, ""));
	st = harness("status");
	dt_assert(!strstr(harness_names(st), "rv/"), "after Destroy of rv the store holds: %s", st);
	rv_vmm_teardown();
	free(rvpath);
	free(rv_marked.bits);
	free(rv_delivered.bits);
}

/* ---- main ------------------------------------------------------------------------------- */

/* ---- a nested session survives a kill ----------------------------------------------------- */

/*
 * A nested session (AdoptSession option nested) on an IOAS of its own: a nest parent with
 * dirty tracking and a mock device on a nested child of it (the mock's stage 1,
 * IOMMU_HWPT_DATA_SELFTEST). Pages marked on the parent at their GPA (the mock's DIRTY
 * command marks paging HWPTs only, by the parent's IOVA, which is the GPA) before a SIGKILL
 * must come out of the restored session's first Harvest, exactly; the restored session is
 * still nested, tracking the parent, with the child recorded.
 */
static void nested_survives_kill(void)
{
	struct iod_mock_cmd dom = {.size = sizeof(dom), .op = IOD_MOCK_OP_DOMAIN_FLAGS};
	struct iod_mock_cmd rep = {.size = sizeof(rep), .op = IOD_MOCK_OP_DOMAIN_REPLACE};
	struct {
		uint32_t iotlb;
	} stage1 = {.iotlb = 0xbadbeef}; /* the mock's stage 1 */
	uint64_t marks[GUEST_PAGES * 2 / 64] = {}, nr, dirty, usec;
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DIRTY,
		.dirty = {.iova = GUEST_GPA,
			  .length = GUEST_SIZE,
			  .page_size = mock_page,
			  .uptr = (uintptr_t)marks},
	};
	const uint64_t per = LOG_PAGE / mock_page;
	struct dt_pageset want, got;
	uint32_t ns_ioas, ns_stdev, parent, child, id;
	unsigned n_hwpts = 0;
	sd_bus_message *reply;
	const char *path;
	char *npath, *mode;
	int r, fd, precise, b1, b2;
	uint32_t users;

	dt_assert(iod_ioas_alloc(ictx, &ns_ioas) == 0, "nested IOAS alloc");
	dt_assert(iod_ioas_set_huge_pages(ictx, ns_ioas, false) == 0, "huge pages off");
	r = iod_ioas_map(ictx, ns_ioas, guest, GUEST_SIZE, GUEST_GPA, IOD_MAP_READ | IOD_MAP_WRITE);
	dt_assert(r == 0, "map guest memory at IOVA = GPA: %s", iod_strerror(r));
	dom.id = ns_ioas;
	dt_assert(mock_cmd(&dom) == 0, "nested mock device");
	ns_stdev = dom.domain.out_stdev_id;
	r = iod_hwpt_alloc(ictx, dom.domain.out_idev_id, ns_ioas,
			   IOD_HWPT_NEST_PARENT | IOD_HWPT_DIRTY, &parent);
	dt_assert(r == 0, "dirty nest parent: %s", iod_strerror(r));
	r = iod_hwpt_alloc_nested(ictx, dom.domain.out_idev_id, parent, 0xdead, &stage1,
				  sizeof(stage1), &child);
	dt_assert(r == 0, "nested child: %s", iod_strerror(r));
	rep.id = ns_stdev;
	rep.replace.pt_id = child;
	dt_assert(mock_cmd(&rep) == 0, "attach the mock device to nested hwpt %u", child);

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}", "ns",
			vfd, ns_ioas, 2, parent, child, 1, "nested", "b", 1);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	npath = strdup(path);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, npath, DT_SES_IFACE, "AddRegion", NULL, "tt", GUEST_GPA,
				     (uint64_t)GUEST_SIZE));
	sd_bus_message_unref(dt_call(bus, npath, DT_SES_IFACE, "Start", NULL, ""));

	dt_pageset_init(&want, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);
	for (unsigned i = 0; i < 40; i++) {
		uint64_t page = rng_below(GUEST_PAGES);

		for (uint64_t k = 0; k < per; k++)
			marks[(page * per + k) / 64] |= UINT64_C(1) << ((page * per + k) % 64);
		dt_pageset_add(&want, GUEST_GPA + page * LOG_PAGE);
	}
	cmd.id = parent;
	dt_assert(mock_cmd(&cmd) == 0, "mock DIRTY on the nest parent: %s", strerror(errno));

	dt_assert(kill(daemon_pid, SIGKILL) == 0, "kill: %s", strerror(errno));
	daemon_pid = harness_wait_ready(++starts);

	dt_assert(dt_get_u64(bus, npath, DT_SES_IFACE, "Nested", 'b') == 1,
		  "the restored session is not nested");
	mode = dt_get_string(bus, npath, DT_SES_IFACE, "TrackingMode");
	dt_assert(strcmp(mode, "nested") == 0, "restored TrackingMode \"%s\"", mode);
	free(mode);
	r = sd_bus_get_property(bus, DT_DEST, npath, DT_SES_IFACE, "Hwpts", NULL, &reply,
				"a(ubbu)");
	dt_assert(r >= 0, "Hwpts: %s", strerror(-r));
	dt_assert(sd_bus_message_enter_container(reply, 'a', "(ubbu)") > 0, "Hwpts");
	while (sd_bus_message_read(reply, "(ubbu)", &id, &b1, &b2, &users) > 0) {
		dt_assert(n_hwpts != 0 || (id == parent && b1 && b2),
			  "restored hwpts[0] is %u (capable %d, tracking %d), want the tracking "
			  "nest parent %u",
			  id, b1, b2, parent);
		dt_assert(n_hwpts != 1 || (id == child && !b1 && !b2),
			  "restored hwpts[1] is %u, want the nested child %u", id, child);
		n_hwpts++;
	}
	sd_bus_message_unref(reply);
	dt_assert(n_hwpts == 2, "the restored session has %u hwpts, want 2", n_hwpts);

	reply = dt_call(bus, npath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	dt_assert(sd_bus_message_read(reply, "thtbt", &nr, &fd, &dirty, &precise, &usec) > 0,
		  "Harvest reply");
	dt_pageset_init(&got, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);
	dt_log_read(fd, &got, false);
	sd_bus_message_unref(reply);
	for (uint64_t w = 0; w < iod_bitmap_words(want.npages); w++)
		dt_assert(want.bits[w] == got.bits[w],
			  "after the kill the nested round differs from the %" PRIu64
			  " pages marked (word %" PRIu64 ": want 0x%016" PRIx64
			  ", got 0x%016" PRIx64 ")",
			  dt_pageset_count(&want), w, want.bits[w], got.bits[w]);
	sd_bus_message_unref(dt_call(bus, npath, DT_SES_IFACE, "Acknowledge", NULL, "t", nr));
	sd_bus_message_unref(dt_call(bus, npath, DT_SES_IFACE, "Destroy", NULL, ""));
	dt_pass("a nested session survives SIGKILL: still nested, the parent tracking, the child "
		"recorded, and the %" PRIu64 " pages marked before the kill harvested exactly",
		dt_pageset_count(&want));

	dt_assert(iod_iommufd_destroy(ictx, ns_stdev) == 0, "destroy the nested mock device");
	dt_assert(iod_iommufd_destroy(ictx, child) == 0, "destroy the nested child");
	dt_assert(iod_iommufd_destroy(ictx, parent) == 0, "destroy the nest parent");
	dt_assert(iod_iommufd_destroy(ictx, ns_ioas) == 0, "destroy the nested IOAS");
	free(want.bits);
	free(got.bits);
	free(npath);
}

static void adopt(void)
{
	sd_bus_message *reply;
	const char *path;

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}", "rs",
			vfd, ioas, 1, hwpt, 0);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	spath = strdup(path);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "AddRegion", NULL, "tt", GUEST_GPA,
				     (uint64_t)GUEST_SIZE));
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Start", NULL, ""));
}

int main(void)
{
	const char *c = getenv("IOD_TEST_CYCLES");
	unsigned cycles = c ? (unsigned)strtoul(c, NULL, 0) : 100;
	const char *st;
	uint64_t nr;
	time_t t0;
	int r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	seed = rng_seed();
	dt_on_fail = print_seed;
	mock_page = (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	dt_require_iommufd();

	vmm_setup();
	bus = dt_connect();
	dt_pageset_init(&marked, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);
	dt_pageset_init(&delivered, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);
	dt_pageset_init(&in_iommu, GUEST_GPA + GUEST_SIZE, LOG_SHIFT);
	daemon_pid = harness_wait_ready(1);
	adopt();
	max_ranges = (uint32_t)dt_get_u64(bus, DT_MANAGER, DT_MGR_IFACE, "MaxRanges", 'u');
	st = harness("status");
	dt_assert(harness_field(st, "stored") == 5, "after AdoptSession the store holds: %s", st);
	dt_pass("AdoptSession: iommufd, log, journal, state and state journal are in the fd store");

	t0 = time(NULL);
	for (unsigned i = 0; i < cycles; i++) {
		/* now and then an ordinary round in between */
		if (rng_below(3) == 0) {
			mark_random(1 + (unsigned)rng_below(20));
			acknowledge(harvest());
		}
		switch (rng_below(5)) {
		case 0:
			kill_idle();
			break;
		case 1:
		case 2:
			kill_in_harvest();
			break;
		case 3:
			kill_before_ack();
			break;
		default:
			kill_before_ranges_ack();
			break;
		}
	}
	printf("%u restarts in %ld s\n", cycles, (long)(time(NULL) - t0));
	dt_pass("%u restarts: %u while idle (bits still in the IOMMU after each), %u in a harvest (%u of them in HarvestRanges; %u replies lost), %u between the reply and Acknowledge (%u after Harvest, %u after HarvestRanges; %u acknowledged by the next instance), %u by SIGTERM",
		cycles, stats.idle_kills, stats.harvest_kills, stats.ranges_harvest_kills,
		stats.replies_lost, stats.ack_kills + stats.ranges_ack_kills, stats.ack_kills,
		stats.ranges_ack_kills, stats.acked_after_restart, stats.terms);
	dt_pass("fd counts constant: the daemon %u fds after each restart, the store 5",
		baseline_fds);
	empty_round_survives_restart();

	/* The last round, then the comparison. */
	nr = harvest();
	acknowledge(nr);
	for (uint64_t w = 0; w < iod_bitmap_words(marked.npages); w++) {
		uint64_t lost = marked.bits[w] & ~delivered.bits[w];

		dt_assert(!lost, "page 0x%" PRIx64 " was marked but never delivered",
			  (w * 64 + (uint64_t)__builtin_ctzll(lost)) << LOG_SHIFT);
		dt_assert(marked.bits[w] == delivered.bits[w],
			  "delivered pages differ from marked");
	}
	dt_pass("union of %u delivered rounds (%u of them HarvestRanges) = the %" PRIu64
		" pages marked (%u marks by the device, %u writes reported before an idle kill, "
		"%u of them on the event channel), exactly",
		stats.harvests, stats.ranges_rounds, dt_pageset_count(&marked), stats.marks,
		stats.reports, stats.chan_reports);

	/* Negative control: a page never marked before, marked after the last harvest, is not
	 * delivered. (A random page could be one marked earlier: then nothing would differ.) */
	{
		uint64_t page = rng_below(GUEST_PAGES), tries = 0;

		while (dt_pageset_test(&marked, (GUEST_GPA >> LOG_SHIFT) + page)) {
			dt_assert(++tries < GUEST_PAGES,
				  "every page is marked: no negative control");
			page = (page + 1) % GUEST_PAGES;
		}
		mark_pages(&page, 1);
	}
	r = 0;
	for (uint64_t w = 0; w < iod_bitmap_words(marked.npages); w++)
		if (marked.bits[w] != delivered.bits[w])
			r = 1;
	dt_assert(r, "the comparison cannot fail");
	dt_pass("negative control: a page marked after the last harvest shows as missing");

	/* A state that names an fd the store lost: the session comes back failed, visibly. */
	harness("drop rs/log");
	dt_assert(kill(daemon_pid, SIGKILL) == 0, "kill: %s", strerror(errno));
	daemon_pid = harness_wait_ready(++starts);
	{
		char *state = dt_get_string(bus, spath, DT_SES_IFACE, "State");
		char *why = dt_get_string(bus, spath, DT_SES_IFACE, "FailureReason");

		dt_assert(strcmp(state, "failed") == 0 && *why,
			  "with its log fd lost the session is \"%s\" (%s)", state, why);
		printf("FailureReason: %s\n", why);
		free(state);
		free(why);
	}
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Harvest",
				     "org.iodirty.Error.SessionFailed", "a{sv}", 0));
	st = harness("status");
	dt_assert(!strstr(harness_names(st), "rs/iommufd"),
		  "the failed session's iommufd is still stored: %s", st);
	dt_pass("a lost log fd: the session is restored as failed, its other fds released");

	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Destroy", NULL, ""));
	st = harness("status");
	dt_assert(harness_field(st, "stored") == 2 && strstr(harness_names(st), "state-") &&
			  strstr(harness_names(st), "state.journal"),
		  "after Destroy the store holds: %s", st);
	dt_pass("Destroy: the store holds only the state and its journal");

	policy_survives_restart();
	owner_death_between_map_and_save();
	viommu_events_survive_kills();
	nested_survives_kill();

	st = harness("quit");
	dt_assert(strcmp(st, "ok status=0") == 0, "the daemon's exit on SIGTERM: %s", st);
	sd_bus_flush_close_unref(bus);
	printf("%u checks passed\n", dt_passed);
	return EXIT_SUCCESS;
}
