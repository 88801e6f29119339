/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One VM never stalls another: two adopt-mode sessions on the mock, each the VM of its own
 * VMM (iommufd, IOAS, a mock device on a dirty tracking HWPT), over the real D-Bus.
 *
 * Session B tracks 1 GiB (IOVA 1:1 on a vIOMMU mapping; its memory aliases a small memfd)
 * with pages marked dirty all over it. B's Harvest is sent and not awaited; while it has
 * not been answered, session A (another bus connection) maps, marks and unmaps ranges, on
 * D-Bus and on its event channel. The check: A's events complete while B's Harvest is
 * still running (counted only when B's reply has not arrived after A's event was answered;
 * at least 4 of each kind, and B's harvest must then still be running), and the exact dirty
 * bits hold for both: A's final round equals what A marked, B's round equals what was
 * marked on B.
 *
 * B's own calls sent during its harvest (a Map and an Unmap of a small extra range, then
 * HarvestRanges) and two batches on B's own event channel (a Map of the same range again,
 * then a mark of a page nothing else dirtied: a reported write) wait for the harvest and
 * are served after it, in order: the replies come in the order sent, HarvestRanges makes
 * round 2 (and reports round 1's pages, not acknowledged), the channel's Map succeeds only
 * after the held Unmap, its completion arrives after the Harvest's reply, and the marked
 * page is in neither round 1 nor round 2 but in round 3: a mark is held like a bus call and
 * never lands inside a running harvest.
 *
 * Then the same with Destroy: a harvest in flight when B is destroyed; its caller and the
 * calls held for it get answers, and the daemon serves A as before.
 *
 * On a daemon that harvests on its event loop, A's first event waits for B's whole harvest:
 * no event of A completes while it runs, and the test fails.
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
#include <unistd.h>

#include <linux/iommufd.h>

#include "daemon-test.h"
#include "iodirty.h"
#include "iommufd-mock.h"

#define SZ_1M (UINT64_C(1) << 20)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define B_SIZE (1024 * SZ_1M) /* B's tracked IOVA and GPA */
#define B_MEM (64 * SZ_1M) /* the memfd B's IOVA aliases */
#define B_EXTRA_IOVA (IOD_MOCK_APERTURE_START + B_SIZE) /* a small mapping past it */
#define B_EXTRA_GPA (B_SIZE - 16 * LOG_PAGE)
#define A_SIZE (32 * SZ_1M)
#define BASE IOD_MOCK_APERTURE_START

static uint64_t mock_page;

struct vmm {
	struct iod_iommufd *ictx;
	int fd;
	uint32_t ioas, stdev, idev, hwpt;
	uint8_t *mem;
	uint64_t mem_size;
};

static struct vmm va, vb;

static void vmm_setup(struct vmm *v, uint64_t mem_size)
{
	struct iod_mock_cmd cmd = {.size = sizeof(cmd), .op = IOD_MOCK_OP_DOMAIN_FLAGS};
	struct iod_mock_cmd rep = {.size = sizeof(rep), .op = IOD_MOCK_OP_DOMAIN_REPLACE};
	int r, memfd;

	r = iod_iommufd_open(NULL, &v->ictx);
	dt_assert(r == 0, "open /dev/iommu: %s", iod_strerror(r));
	v->fd = iod_iommufd_fd(v->ictx);
	dt_assert(iod_ioas_alloc(v->ictx, &v->ioas) == 0, "IOAS alloc");
	dt_assert(iod_ioas_set_huge_pages(v->ictx, v->ioas, false) == 0, "huge pages off");
	cmd.id = v->ioas;
	if (ioctl(v->fd, IOD_MOCK_CMD, &cmd) < 0) {
		printf("SKIP: the kernel has no iommufd mock devices: %s\n", strerror(errno));
		exit(77);
	}
	v->stdev = cmd.domain.out_stdev_id;
	v->idev = cmd.domain.out_idev_id;
	r = iod_hwpt_alloc(v->ictx, v->idev, v->ioas, IOD_HWPT_DIRTY, &v->hwpt);
	dt_assert(r == 0, "dirty HWPT: %s", iod_strerror(r));
	rep.id = v->stdev;
	rep.replace.pt_id = v->hwpt;
	dt_assert(ioctl(v->fd, IOD_MOCK_CMD, &rep) == 0, "attach: %s", strerror(errno));
	memfd = memfd_create("nostall", MFD_CLOEXEC);
	dt_assert(memfd >= 0 && ftruncate(memfd, (off_t)mem_size) == 0, "memfd: %s",
		  strerror(errno));
	v->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	dt_assert(v->mem != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(v->mem, 1, mem_size);
	close(memfd);
	v->mem_size = mem_size;
}

/* [iova, +length) into v's IOAS, repeating its memory. */
static void vmm_map(struct vmm *v, uint64_t iova, uint64_t length)
{
	for (uint64_t done = 0; done < length;) {
		uint64_t n = MIN(length - done, v->mem_size);
		int r = iod_ioas_map(v->ictx, v->ioas, v->mem, n, iova + done,
				     IOD_MAP_READ | IOD_MAP_WRITE);

		dt_assert(r == 0, "IOAS map 0x%" PRIx64 ": %s", iova + done, iod_strerror(r));
		done += n;
	}
}

static void vmm_unmap(struct vmm *v, uint64_t iova, uint64_t length)
{
	int r = iod_ioas_unmap(v->ictx, v->ioas, iova, length, NULL);

	dt_assert(r == 0, "IOAS unmap 0x%" PRIx64 ": %s", iova, iod_strerror(r));
}

/* A device writes the log page at iova (both mock IOPTEs of it). */
static void vmm_mark(struct vmm *v, uint64_t iova)
{
	uint64_t marks = (UINT64_C(1) << (LOG_PAGE / mock_page)) - 1;
	struct iod_mock_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOD_MOCK_OP_DIRTY,
		.id = v->hwpt,
		.dirty = {.iova = iova,
			  .length = LOG_PAGE,
			  .page_size = mock_page,
			  .uptr = (uintptr_t)&marks},
	};

	dt_assert(ioctl(v->fd, IOD_MOCK_CMD, &cmd) == 0, "mock DIRTY at 0x%" PRIx64 ": %s", iova,
		  strerror(errno));
}

static char *adopt(sd_bus *bus, struct vmm *v, const char *name)
{
	sd_bus_message *reply;
	const char *path;
	char *ret;

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "AdoptSession", NULL, "shuaua{sv}", name,
			v->fd, v->ioas, 1, v->hwpt, 1, "viommu", "b", 1);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AdoptSession reply");
	ret = strdup(path);
	sd_bus_message_unref(reply);
	return ret;
}

#define call(bus, path, member, types, ...) \
	sd_bus_message_unref(dt_call(bus, path, DT_SES_IFACE, member, NULL, types, ##__VA_ARGS__))

/* One round of path: its round plane into set (and acknowledged). Returns its number. */
static uint64_t harvest_into(sd_bus *bus, const char *path, struct dt_pageset *set)
{
	sd_bus_message *reply;
	uint64_t nr, dirty, usec, n;
	int fd, precise;

	reply = dt_call(bus, path, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	dt_assert(sd_bus_message_read(reply, "thtbt", &nr, &fd, &dirty, &precise, &usec) > 0,
		  "Harvest reply");
	n = dt_log_read(fd, set, false);
	dt_assert(n == dirty, "round %" PRIu64 " holds %" PRIu64 " pages, Harvest said %" PRIu64,
		  nr, n, dirty);
	sd_bus_message_unref(reply);
	call(bus, path, "Acknowledge", "t", nr);
	return nr;
}

static void expect_equal(const struct dt_pageset *got, const struct dt_pageset *want,
			 const char *what)
{
	for (uint64_t w = 0; w < iod_bitmap_words(want->npages); w++) {
		uint64_t lost = want->bits[w] & ~got->bits[w],
			 extra = got->bits[w] & ~want->bits[w];

		dt_assert(!lost, "%s: GPA page 0x%" PRIx64 " was marked but is not in the log",
			  what, (w * 64 + (uint64_t)__builtin_ctzll(lost)) << LOG_SHIFT);
		dt_assert(!extra, "%s: GPA page 0x%" PRIx64 " is in the log but was never marked",
			  what, (w * 64 + (uint64_t)__builtin_ctzll(extra)) << LOG_SHIFT);
	}
}

/* ---- B's calls in flight ---------------------------------------------------------------- */

#define MAX_REPLIES 8

struct replies {
	unsigned n;
	const char *order[MAX_REPLIES]; /* members, in the order their replies came */
	char *error[MAX_REPLIES]; /* error name or NULL */
	uint64_t harvest_round, harvest_dirty, ranges_round;
	struct dt_pageset *ranges; /* HarvestRanges: its ranges go in here */
};

static struct replies rb;

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	const sd_bus_error *e = sd_bus_message_get_error(m);
	const char *member = userdata;
	unsigned i = rb.n++;

	dt_assert(i < MAX_REPLIES, "too many replies");
	rb.order[i] = member;
	rb.error[i] = e ? strdup(e->name) : NULL;
	if (!e)
		printf("B: %s answered\n", member);
	else
		printf("B: %s answered with %s: %s\n", member, e->name, e->message);
	if (!e && strcmp(member, "Harvest") == 0) {
		uint64_t usec;
		int fd, precise;

		dt_assert(sd_bus_message_read(m, "thtbt", &rb.harvest_round, &fd, &rb.harvest_dirty,
					      &precise, &usec) > 0,
			  "Harvest reply");
	}
	if (!e && strcmp(member, "HarvestRanges") == 0) {
		uint64_t start, length;

		dt_assert(sd_bus_message_read(m, "t", &rb.ranges_round) > 0 &&
				  sd_bus_message_enter_container(m, 'a', "(tt)") > 0,
			  "HarvestRanges reply");
		while (sd_bus_message_read(m, "(tt)", &start, &length) > 0)
			for (uint64_t g = start; g < start + length; g += LOG_PAGE)
				dt_pageset_add(rb.ranges, g);
	}
	return 0;
}

static void send_async(sd_bus *bus, const char *path, const char *member, const char *types, ...)
{
	sd_bus_message *m = NULL;
	va_list ap;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, DT_DEST, path, DT_SES_IFACE, member);
	dt_assert(r >= 0, "%s: %s", member, strerror(-r));
	va_start(ap, types);
	r = sd_bus_message_appendv(m, types, ap);
	va_end(ap);
	dt_assert(r >= 0, "%s: %s", member, strerror(-r));
	r = sd_bus_call_async(bus, NULL, m, on_reply, (void *)member, 120 * 1000000ULL);
	dt_assert(r >= 0, "%s: %s", member, strerror(-r));
	sd_bus_message_unref(m);
	/* out now: the daemon must have it before what follows */
	dt_assert(sd_bus_flush(bus) >= 0, "flush");
}

/* Process B's connection without waiting: did the Harvest's reply come? */
static bool harvest_answered(sd_bus *bus)
{
	while (sd_bus_process(bus, NULL) > 0)
		;
	for (unsigned i = 0; i < rb.n; i++)
		if (strcmp(rb.order[i], "Harvest") == 0)
			return true;
	return false;
}

static void wait_replies(sd_bus *bus, unsigned n)
{
	while (rb.n < n) {
		int r = sd_bus_process(bus, NULL);

		dt_assert(r >= 0, "processing B's bus: %s", strerror(-r));
		if (r == 0)
			dt_assert(sd_bus_wait(bus, 60 * 1000000ULL) >= 0, "waiting on B's bus");
	}
}

/* ---- A's events ------------------------------------------------------------------------- */

static sd_bus *bus_a;
static char *path_a;
static int chan_a = -1;
static uint64_t seq_a;
static struct dt_pageset marked_a;

static void channel_pair_check(int chan, bool map, uint64_t seq, const struct iod_mapping *e)
{
	struct iod_channel_completion c;
	int r;

	r = iod_channel_send(chan, map ? IOD_EVENT_MAP : IOD_EVENT_UNMAP, seq, e, 1);
	dt_assert(r >= 0, "channel send: %s", strerror(-r));
	r = iod_channel_recv(chan, &c);
	dt_assert(r >= 0, "channel completion: %s", strerror(-r));
	dt_assert(c.seq == seq && c.error == 0, "channel batch %" PRIu64 ": %s %s", seq, c.name,
		  c.message);
}

/* One vIOMMU pair of A: map a 64 KiB range, a device writes a page of it, unmap it (the
 * daemon first: it harvests the range before it leaves). On D-Bus or on the channel. */
static void a_pair(unsigned i, bool channel)
{
	uint64_t iova = BASE + (uint64_t)(i % 64) * 16 * LOG_PAGE;
	uint64_t gpa = (uint64_t)(i % 499) * 16 * LOG_PAGE % (A_SIZE - 16 * LOG_PAGE);
	uint64_t page = (i * 7) % 16;
	struct iod_mapping e = {.iova = iova, .gpa = gpa, .length = 16 * LOG_PAGE};

	vmm_map(&va, iova, e.length);
	if (channel)
		channel_pair_check(chan_a, true, ++seq_a, &e);
	else
		call(bus_a, path_a, "Map", "ttt", e.iova, e.gpa, e.length);
	vmm_mark(&va, iova + page * LOG_PAGE);
	dt_pageset_add(&marked_a, gpa + page * LOG_PAGE);
	e.gpa = 0;
	if (channel)
		channel_pair_check(chan_a, false, ++seq_a, &e);
	else
		call(bus_a, path_a, "Unmap", "tt", e.iova, e.length);
	vmm_unmap(&va, iova, e.length);
}

/* ---- the test --------------------------------------------------------------------------- */

static sd_bus *bus_b;
static char *path_b;
static struct dt_pageset marked_b, ranges_b;

static void b_setup(const char *name)
{
	path_b = adopt(bus_b, &vb, name);
	call(bus_b, path_b, "AddRegion", "tt", (uint64_t)0, B_SIZE);
	call(bus_b, path_b, "Map", "ttt", BASE, (uint64_t)0, B_SIZE - 16 * LOG_PAGE);
	call(bus_b, path_b, "Start", "");
}

static void b_mark_all(void)
{
	/* every 61st page of 1 GiB: ~4300 pages, everywhere */
	for (uint64_t p = 3; p < (B_SIZE - 16 * LOG_PAGE) / LOG_PAGE; p += 61) {
		vmm_mark(&vb, BASE + p * LOG_PAGE);
		dt_pageset_add(&marked_b, p * LOG_PAGE);
	}
}

static bool readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, 0) > 0;
}

static void others_go_on(void)
{
	struct iod_mapping e = {.iova = B_EXTRA_IOVA, .gpa = B_EXTRA_GPA, .length = 16 * LOG_PAGE};
	struct iod_mapping u = {.iova = B_EXTRA_IOVA, .length = 16 * LOG_PAGE};
	/* a page of B's region that b_mark_all() leaves clean */
	const struct iod_range written = {.start = 2 * LOG_PAGE, .length = LOG_PAGE};
	unsigned dbus_done = 0, chan_done = 0, i = 0;
	struct iod_channel_completion c;
	bool b_sent = false;
	struct dt_pageset got, want;
	uint64_t t0, t_a, nr, b_seq = 0, map_seq = 0, mark_seq = 0;
	int b_chan = -1;

	b_setup("vm-b");
	b_mark_all();
	dt_assert(iod_channel_open(bus_b, path_b, &b_chan, &b_seq) >= 0, "B's channel");
	vmm_map(&vb, B_EXTRA_IOVA, e.length);

	/* B: Harvest, and right behind it its own calls, all in flight */
	t0 = t_a = iod_now_nsec();
	send_async(bus_b, path_b, "Harvest", "a{sv}", 0);
	send_async(bus_b, path_b, "Map", "ttt", e.iova, e.gpa, e.length);
	send_async(bus_b, path_b, "Unmap", "tt", e.iova, e.length);
	send_async(bus_b, path_b, "HarvestRanges", "a{sv}", 1, "max_ranges", "u", 65536);

	/* A, while B's Harvest has no answer: count what completes before it */
	while (!harvest_answered(bus_b)) {
		bool channel = i % 2;

		a_pair(i++, channel);
		if (harvest_answered(bus_b))
			break;
		t_a = iod_now_nsec();
		if (channel)
			chan_done++;
		else
			dbus_done++;
		/* B's own channel batch, once A was served: B's harvest runs by now. It maps
		 * the extra range again: right only after the held Map and Unmap. */
		if (i == 2) {
			dt_assert(iod_channel_send(b_chan, IOD_EVENT_MAP, map_seq = ++b_seq, &e,
						   1) >= 0 &&
					  iod_channel_mark(b_chan, mark_seq = ++b_seq, &written,
							   1) >= 0,
				  "B's channel sends");
			b_sent = true;
		}
		dt_assert(!b_sent || readable(b_chan) == false || harvest_answered(bus_b),
			  "B's channel batch completed while B's Harvest ran");
	}
	printf("A: %u D-Bus pairs and %u channel pairs completed while B's Harvest ran (the "
	       "last %.0f ms after it was sent; its answer came after %.0f ms)\n",
	       dbus_done, chan_done, (double)(t_a - t0) / 1e6, (double)(iod_now_nsec() - t0) / 1e6);
	dt_assert(dbus_done >= 4 && chan_done >= 4,
		  "session A was stalled by B's harvest: only %u D-Bus and %u channel pairs of A "
		  "completed while it ran (want 4 of each)",
		  dbus_done, chan_done);
	dt_pass("A's D-Bus and event channel events complete while B harvests");

	/* B's calls: after the Harvest, in order, and served correctly */
	wait_replies(bus_b, 4);
	dt_assert(strcmp(rb.order[0], "Harvest") == 0 && strcmp(rb.order[1], "Map") == 0 &&
			  strcmp(rb.order[2], "Unmap") == 0 &&
			  strcmp(rb.order[3], "HarvestRanges") == 0,
		  "B's replies came as %s, %s, %s, %s", rb.order[0], rb.order[1], rb.order[2],
		  rb.order[3]);
	for (unsigned k = 0; k < 4; k++)
		dt_assert(!rb.error[k], "B's %s failed: %s", rb.order[k], rb.error[k]);
	dt_assert(rb.harvest_round == 1 && rb.ranges_round == 2,
		  "B's rounds %" PRIu64 " (Harvest) and %" PRIu64 " (HarvestRanges), want 1 and 2",
		  rb.harvest_round, rb.ranges_round);
	if (!b_sent)
		dt_assert(iod_channel_send(b_chan, IOD_EVENT_MAP, map_seq = ++b_seq, &e, 1) >= 0 &&
				  iod_channel_mark(b_chan, mark_seq = ++b_seq, &written, 1) >= 0,
			  "B's channel sends");
	dt_assert(iod_channel_recv(b_chan, &c) >= 0 && c.seq == map_seq && c.error == 0,
		  "B's channel map after the held Unmap: %s %s", c.name, c.message);
	dt_assert(iod_channel_recv(b_chan, &c) >= 0 && c.seq == mark_seq && c.error == 0,
		  "B's channel mark: %s %s", c.name, c.message);
	dt_assert(iod_channel_send(b_chan, IOD_EVENT_UNMAP, ++b_seq, &u, 1) >= 0 &&
			  iod_channel_recv(b_chan, &c) >= 0 && c.error == 0,
		  "B's channel unmap: %s %s", c.name, c.message);
	vmm_unmap(&vb, B_EXTRA_IOVA, e.length);
	dt_pass("B's calls and channel batches sent during its harvest are served after it, in "
		"order (its HarvestRanges makes round 2)");

	/* exact bits: B's round 1, carried into round 2 (not acknowledged) */
	dt_assert(rb.harvest_dirty == dt_pageset_count(&marked_b),
		  "B's Harvest: %" PRIu64 " dirty pages, %" PRIu64 " were marked", rb.harvest_dirty,
		  dt_pageset_count(&marked_b));
	expect_equal(rb.ranges, &marked_b, "B's rounds 1 and 2");
	call(bus_b, path_b, "Acknowledge", "t", rb.ranges_round);
	/* since then on B only the mark sent during the harvest: its next round has that page */
	dt_pageset_init(&got, B_SIZE, LOG_SHIFT);
	dt_pageset_init(&want, B_SIZE, LOG_SHIFT);
	dt_pageset_add(&want, written.start);
	nr = harvest_into(bus_b, path_b, &got);
	expect_equal(&got, &want, "B's round 3 (the mark sent during its harvest)");
	dt_assert(nr == 3, "B's round after the mark is %" PRIu64 ", want 3", nr);
	free(got.bits);
	free(want.bits);
	dt_pass("B's mark batch sent during its harvest is in neither that round nor the "
		"HarvestRanges held behind it, but in the next one");
	/* A's log: exactly what A marked */
	dt_pageset_init(&got, A_SIZE, LOG_SHIFT);
	(void)harvest_into(bus_a, path_a, &got);
	expect_equal(&got, &marked_a, "A's round");
	free(got.bits);
	dt_pass("exact dirty bits for both sessions (B %" PRIu64 " pages, A %" PRIu64 ")",
		dt_pageset_count(&marked_b), dt_pageset_count(&marked_a));
	close(b_chan);
	call(bus_b, path_b, "Destroy", "");
}

/* A session destroyed with its harvest in flight and a call held: both get an answer. */
static void destroy_during_harvest(void)
{
	struct iod_mapping e = {.iova = B_EXTRA_IOVA, .gpa = B_EXTRA_GPA, .length = 16 * LOG_PAGE};
	struct dt_pageset got;

	memset(&rb, 0, sizeof(rb));
	rb.ranges = &ranges_b;
	memset(marked_b.bits, 0, iod_bitmap_bytes(marked_b.npages));
	b_setup("vm-c");
	b_mark_all();
	vmm_map(&vb, B_EXTRA_IOVA, e.length);
	send_async(bus_b, path_b, "Harvest", "a{sv}", 0);
	send_async(bus_b, path_b, "Map", "ttt", e.iova, e.gpa, e.length);
	usleep(20000);
	sd_bus_message_unref(
		dt_call(bus_b, DT_MANAGER, DT_MGR_IFACE, "DestroySession", NULL, "s", "vm-c"));
	wait_replies(bus_b, 2);
	dt_assert(strcmp(rb.order[0], "Harvest") == 0 && strcmp(rb.order[1], "Map") == 0,
		  "replies came as %s, %s", rb.order[0], rb.order[1]);
	if (rb.error[0])
		dt_assert(rb.error[1] && strcmp(rb.error[1], IOD_ERROR_NO_SUCH_SESSION) == 0,
			  "the held Map after a cancelled Harvest: %s", rb.error[1]);
	vmm_unmap(&vb, B_EXTRA_IOVA, e.length);
	/* A is served as before, exactly */
	memset(marked_a.bits, 0, iod_bitmap_bytes(marked_a.npages));
	for (unsigned i = 0; i < 8; i++)
		a_pair(1000 + i, i % 2);
	dt_pageset_init(&got, A_SIZE, LOG_SHIFT);
	(void)harvest_into(bus_a, path_a, &got);
	expect_equal(&got, &marked_a, "A's round after B went");
	free(got.bits);
	dt_pass("a session destroyed during its harvest answers its callers (Harvest %s, held "
		"Map %s); the others are served",
		rb.error[0] ? rb.error[0] : "answered", rb.error[1] ? rb.error[1] : "answered");
}

int main(void)
{
	dt_require_iommufd();
	mock_page = (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	setvbuf(stdout, NULL, _IOLBF, 0);

	vmm_setup(&va, A_SIZE);
	vmm_setup(&vb, B_MEM);
	bus_a = dt_connect();
	bus_b = dt_connect();

	vmm_map(&vb, BASE, B_SIZE - 16 * LOG_PAGE);
	path_a = adopt(bus_a, &va, "vm-a");
	call(bus_a, path_a, "AddRegion", "tt", (uint64_t)0, A_SIZE);
	call(bus_a, path_a, "Start", "");
	dt_assert(iod_channel_open(bus_a, path_a, &chan_a, &seq_a) >= 0, "A's channel");
	dt_pageset_init(&marked_a, A_SIZE, LOG_SHIFT);
	dt_pageset_init(&marked_b, B_SIZE, LOG_SHIFT);
	dt_pageset_init(&ranges_b, B_SIZE, LOG_SHIFT);
	rb.ranges = &ranges_b;

	others_go_on();
	destroy_during_harvest();

	printf("test-daemon-nostall: %u checks passed\n", dt_passed);
	return 0;
}
