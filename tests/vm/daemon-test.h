/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers of the guest-tier programs that drive iodirtyd over the real D-Bus with sd-bus
 * (tests/vm/test-daemon-*.c, run by guest-daemon.sh, which puts the bus address in
 * IOD_BUS_ADDRESS): checks that print and exit, method calls that print the D-Bus error,
 * and a client's reading of the dirty log memfd (the layout of org.iodirty.Tracker1(5)).
 */
#ifndef IOD_TESTS_VM_DAEMON_TEST_H
#define IOD_TESTS_VM_DAEMON_TEST_H

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "iodirty-client.h"
#include "iodirty.h"

/* Short names of lib/iod-names.h for the tests. */
#define DT_DEST IOD_BUS_NAME
#define DT_MANAGER IOD_MANAGER_PATH
#define DT_MGR_IFACE IOD_MANAGER_INTERFACE
#define DT_SES_IFACE IOD_SESSION_INTERFACE
#define DT_DEV_IFACE IOD_DEVICE_INTERFACE

static unsigned dt_passed __attribute__((unused));

/* Called before a failing check exits (prints what reproduces the run). */
static void (*dt_on_fail)(void) __attribute__((unused));

static inline __attribute__((noreturn, format(printf, 3, 4))) void dt_fail(const char *file,
									   int line,
									   const char *fmt, ...)
{
	va_list ap;

	printf("FAIL: %s:%d: ", file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (dt_on_fail)
		dt_on_fail();
	fflush(stdout);
	exit(EXIT_FAILURE);
}

#define dt_assert(cond, ...)                                      \
	do {                                                      \
		if (!(cond))                                      \
			dt_fail(__FILE__, __LINE__, __VA_ARGS__); \
	} while (0)

#define dt_pass(...)                 \
	do {                         \
		printf("PASS: ");    \
		printf(__VA_ARGS__); \
		printf("\n");        \
		fflush(stdout);      \
		dt_passed++;         \
	} while (0)

/* Exit 77 (skipped) when the kernel has no iommufd. */
static inline void dt_require_iommufd(void)
{
	if (access("/dev/iommu", F_OK) < 0) {
		printf("SKIP: /dev/iommu does not exist\n");
		exit(77);
	}
}

static inline sd_bus *dt_connect(void)
{
	const char *address = getenv("IOD_BUS_ADDRESS");
	sd_bus *bus = NULL;
	int r;

	dt_assert(address && *address, "IOD_BUS_ADDRESS is not set: run under guest-daemon.sh");
	r = iod_bus_client_open(address, false, &bus);
	dt_assert(r >= 0, "connecting to %s: %s", address, strerror(-r));
	/* Finish the handshake now: a connection left unauthenticated longer than the bus's
	 * auth_timeout (dbus-daemon: 5 s) is dropped, and a test may keep one idle a while. */
	{
		const char *unique = NULL;

		r = sd_bus_get_unique_name(bus, &unique);
		dt_assert(r >= 0, "connecting to %s: %s", address, strerror(-r));
	}
	return bus;
}

/* Call a method; on failure, with want_error NULL the test fails, else the error name must
 * be want_error. Returns the reply (NULL on an expected error). */
#define dt_call(bus, path, iface, member, want_error, types, ...)                                \
	({                                                                                       \
		sd_bus_error _e = SD_BUS_ERROR_NULL;                                             \
		sd_bus_message *_reply = NULL;                                                   \
		int _r = sd_bus_call_method(bus, DT_DEST, path, iface, member, &_e, &_reply,     \
					    types, ##__VA_ARGS__);                               \
		const char *_want = (want_error);                                                \
		if (_want) {                                                                     \
			dt_assert(_r < 0, "%s succeeded, expected %s", member, _want);           \
			dt_assert(sd_bus_error_has_name(&_e, _want),                             \
				  "%s failed with %s (%s), expected %s", member,                 \
				  _e.name ? _e.name : "?", _e.message ? _e.message : "", _want); \
		} else {                                                                         \
			dt_assert(_r >= 0, "%s failed: %s (%s)", member,                         \
				  _e.message ? _e.message : strerror(-_r),                       \
				  _e.name ? _e.name : "?");                                      \
		}                                                                                \
		sd_bus_error_free(&_e);                                                          \
		_reply;                                                                          \
	})

/* A call that must fail with want_error, its message containing needle. */
#define dt_call_fails(bus, path, iface, member, want_error, needle, types, ...)                  \
	do {                                                                                     \
		sd_bus_error _e = SD_BUS_ERROR_NULL;                                             \
		int _r = sd_bus_call_method(bus, DT_DEST, path, iface, member, &_e, NULL, types, \
					    ##__VA_ARGS__);                                      \
		dt_assert(_r < 0, "%s succeeded, expected %s", member, want_error);              \
		dt_assert(sd_bus_error_has_name(&_e, want_error) && _e.message &&                \
				  strstr(_e.message, needle),                                    \
			  "%s failed with %s (%s), expected %s saying \"%s\"", member,           \
			  _e.name ? _e.name : "?", _e.message ? _e.message : "", want_error,     \
			  needle);                                                               \
		printf("%s refused as expected: %s\n", member, _e.message);                      \
		sd_bus_error_free(&_e);                                                          \
	} while (0)

/* ---- sessions -------------------------------------------------------------------------- */

/* CreateSession name, with or without a vIOMMU: the session's path (to free). */
static inline char *dt_create_session(sd_bus *bus, const char *name, bool viommu)
{
	sd_bus_message *reply;
	const char *path;
	char *ret;

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "CreateSession", NULL, "sa{sv}", name, 1,
			"viommu", "b", (int)viommu);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "CreateSession reply");
	ret = strdup(path);
	sd_bus_message_unref(reply);
	return ret;
}

/* AttachDeviceFd fd to the session at spath, with dirty_source source (NULL: the daemon's
 * choice): the device's path (to free). */
static inline char *dt_attach_fd(sd_bus *bus, const char *spath, int fd, const char *source)
{
	sd_bus_message *reply;
	const char *path;
	char *ret;

	if (source)
		reply = dt_call(bus, spath, DT_SES_IFACE, "AttachDeviceFd", NULL, "ha{sv}", fd, 1,
				"dirty_source", "s", source);
	else
		reply = dt_call(bus, spath, DT_SES_IFACE, "AttachDeviceFd", NULL, "ha{sv}", fd, 0);
	dt_assert(sd_bus_message_read(reply, "o", &path) > 0, "AttachDeviceFd reply");
	ret = strdup(path);
	sd_bus_message_unref(reply);
	return ret;
}

static inline char *dt_get_string(sd_bus *bus, const char *path, const char *iface,
				  const char *prop)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char *v = NULL;
	int r;

	r = sd_bus_get_property_string(bus, DT_DEST, path, iface, prop, &e, &v);
	dt_assert(r >= 0, "reading %s: %s", prop, e.message ? e.message : strerror(-r));
	sd_bus_error_free(&e);
	return v;
}

static inline uint64_t dt_get_u64(sd_bus *bus, const char *path, const char *iface,
				  const char *prop, char type)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	uint64_t v = 0;
	uint32_t u = 0;
	int b = 0, r;

	if (type == 't')
		r = sd_bus_get_property_trivial(bus, DT_DEST, path, iface, prop, &e, 't', &v);
	else if (type == 'u')
		r = sd_bus_get_property_trivial(bus, DT_DEST, path, iface, prop, &e, 'u', &u);
	else
		r = sd_bus_get_property_trivial(bus, DT_DEST, path, iface, prop, &e, 'b', &b);
	dt_assert(r >= 0, "reading %s: %s", prop, e.message ? e.message : strerror(-r));
	sd_bus_error_free(&e);
	return type == 't' ? v : type == 'u' ? u : (uint64_t) !!b;
}

/* The string property prop of the object at path must be want. */
static inline void dt_expect_string(sd_bus *bus, const char *path, const char *iface,
				    const char *prop, const char *want)
{
	char *v = dt_get_string(bus, path, iface, prop);

	dt_assert(strcmp(v, want) == 0, "%s is \"%s\", want \"%s\"", prop, v, want);
	free(v);
}

/* ---- the dirty log memfd, as a client reads it ----------------------------------------- */

/* A set of pages of guest memory [0, npages << shift): one bit per page. */
struct dt_pageset {
	uint64_t *bits;
	uint64_t npages;
	unsigned shift;
};

static inline void dt_pageset_init(struct dt_pageset *p, uint64_t bytes, unsigned shift)
{
	p->shift = shift;
	p->npages = bytes >> shift;
	p->bits = calloc(iod_bitmap_words(p->npages) + 1, sizeof(uint64_t));
	dt_assert(p->bits, "out of memory");
}

static inline void dt_pageset_add(struct dt_pageset *p, uint64_t gpa)
{
	uint64_t page = gpa >> p->shift;

	dt_assert(page < p->npages, "GPA 0x%" PRIx64 " outside guest memory", gpa);
	p->bits[page / 64] |= UINT64_C(1) << (page % 64);
}

static inline bool dt_pageset_test(const struct dt_pageset *p, uint64_t page)
{
	return p->bits[page / 64] & (UINT64_C(1) << (page % 64));
}

static inline uint64_t dt_pageset_count(const struct dt_pageset *p)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w < iod_bitmap_words(p->npages); w++)
		n += (uint64_t)__builtin_popcountll(p->bits[w]);
	return n;
}

/*
 * Map the log fd a Harvest returned and OR its round plane (with accum also the
 * accumulating plane, for a peek) into set. Checks the header as a client must. Returns the
 * number of pages set in the plane(s) read.
 */
static inline uint64_t dt_log_read(int fd, struct dt_pageset *set, bool accum)
{
	struct iod_dirty_log *log = NULL;
	uint64_t n = 0, start, end;
	struct stat st;
	int r;

	/* read-only: a client cannot write the daemon's log */
	dt_assert(fstat(fd, &st) == 0, "fstat of the log fd: %s", strerror(errno));
	dt_assert(mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) ==
			  MAP_FAILED,
		  "the log fd can be mapped writable");

	r = iod_log_open_fd_ro(fd, &log);
	dt_assert(r == 0, "the log memfd is not a valid log: %s", iod_strerror(r));
	dt_assert(iod_log_page_shift(log) == set->shift, "log page shift %u, want %u",
		  iod_log_page_shift(log), set->shift);
	for (size_t i = 0; i < iod_log_region_count(log); i++) {
		const struct iod_log_region *g = iod_log_region(log, i);
		uint64_t nbits = g->length >> set->shift;

		for (uint64_t b = 0; iod_log_next_dirty(log, i, accum, b, nbits, &start, &end) == 0;
		     b = end)
			for (uint64_t p = start; p < end; p++) {
				dt_pageset_add(set, g->gpa + (p << set->shift));
				n++;
			}
	}
	iod_log_free(log);
	return n;
}

/* What Harvest answered. */
struct dt_round {
	uint64_t nr, dirty, usec;
	bool precise;
};

/*
 * Harvest on the session at spath, its round plane read into set (initialised for guest
 * memory [0, bytes) in pages of 1 << shift), which must hold as many pages as Harvest said
 * (what names the check in a failure). The round is not acknowledged: see dt_acknowledge().
 */
static inline struct dt_round dt_harvest(sd_bus *bus, const char *spath, const char *what,
					 uint64_t bytes, unsigned shift, struct dt_pageset *set)
{
	struct dt_round round;
	sd_bus_message *reply;
	int fd, precise;
	uint64_t n;

	reply = dt_call(bus, spath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	dt_assert(sd_bus_message_read(reply, "thtbt", &round.nr, &fd, &round.dirty, &precise,
				      &round.usec) > 0,
		  "Harvest reply");
	round.precise = precise;
	dt_pageset_init(set, bytes, shift);
	n = dt_log_read(fd, set, false);
	dt_assert(n == round.dirty,
		  "%s: round %" PRIu64 ": the log holds %" PRIu64 " pages, Harvest said %" PRIu64,
		  what, round.nr, n, round.dirty);
	sd_bus_message_unref(reply);
	return round;
}

static inline void dt_acknowledge(sd_bus *bus, const char *spath, uint64_t nr)
{
	sd_bus_message_unref(
		dt_call(bus, spath, DT_SES_IFACE, "Acknowledge", NULL, "t", (uint64_t)nr));
}

/*
 * One Harvest round of the session at spath (see dt_harvest()), acknowledged and printed:
 * the number of dirty pages, and in ret_precise whether the round is precise.
 */
static inline uint64_t dt_harvest_ack(sd_bus *bus, const char *spath, uint64_t bytes,
				      unsigned shift, struct dt_pageset *set, bool *ret_precise)
{
	struct dt_round round = dt_harvest(bus, spath, "Harvest", bytes, shift, set);

	dt_acknowledge(bus, spath, round.nr);
	printf("round %" PRIu64 ": %" PRIu64 " dirty pages, precise %s, %" PRIu64 " us\n", round.nr,
	       round.dirty, round.precise ? "true" : "false", round.usec);
	*ret_precise = round.precise;
	return round.dirty;
}

/* ---- GetDirtyRate ---------------------------------------------------------------------- */

#define DT_RATE_MAX_HWPTS 8

/* What GetDirtyRate answered: the session's rate, and the rate of each of its HWPTs. */
struct dt_rate {
	uint64_t window_usec, samples, dirty, pps, ws;
	int precise;
	unsigned n_hwpts;
	struct {
		uint32_t id;
		unsigned n_devices;
		uint64_t dirty, pps, ws;
	} hwpt[DT_RATE_MAX_HWPTS];
};

/* GetDirtyRate of the session at spath (interval_usec, window_usec), printed; it must list
 * fewer than max_hwpts HWPTs. */
static inline void dt_get_rate(sd_bus *bus, const char *spath, uint64_t interval_usec,
			       uint64_t window_usec, unsigned max_hwpts, struct dt_rate *ret)
{
	sd_bus_message *reply;
	struct dt_rate r = {};
	const char *dev;

	dt_assert(max_hwpts <= DT_RATE_MAX_HWPTS, "%u HWPTs, at most %d", max_hwpts,
		  DT_RATE_MAX_HWPTS);
	reply = dt_call(bus, spath, DT_SES_IFACE, "GetDirtyRate", NULL, "a{sv}", 2, "interval_usec",
			"t", interval_usec, "window_usec", "t", window_usec);
	dt_assert(sd_bus_message_read(reply, "tttttb", &r.window_usec, &r.samples, &r.dirty, &r.pps,
				      &r.ws, &r.precise) > 0,
		  "GetDirtyRate reply");
	dt_assert(sd_bus_message_enter_container(reply, 'a', "(uaottt)") > 0, "GetDirtyRate reply");
	while (sd_bus_message_enter_container(reply, 'r', "uaottt") > 0) {
		dt_assert(r.n_hwpts < max_hwpts, "more HWPTs than the session has");
		dt_assert(sd_bus_message_read(reply, "u", &r.hwpt[r.n_hwpts].id) > 0,
			  "GetDirtyRate reply");
		dt_assert(sd_bus_message_enter_container(reply, 'a', "o") > 0,
			  "GetDirtyRate reply");
		while (sd_bus_message_read(reply, "o", &dev) > 0)
			r.hwpt[r.n_hwpts].n_devices++;
		dt_assert(sd_bus_message_exit_container(reply) >= 0, "GetDirtyRate reply");
		dt_assert(sd_bus_message_read(reply, "ttt", &r.hwpt[r.n_hwpts].dirty,
					      &r.hwpt[r.n_hwpts].pps, &r.hwpt[r.n_hwpts].ws) > 0,
			  "GetDirtyRate reply");
		dt_assert(sd_bus_message_exit_container(reply) >= 0, "GetDirtyRate reply");
		r.n_hwpts++;
	}
	sd_bus_message_unref(reply);
	printf("rate: window %" PRIu64 " us, %" PRIu64 " sample(s), %" PRIu64
	       " dirty pages, %" PRIu64 " pages/s, working set %" PRIu64 ", precise %d\n",
	       r.window_usec, r.samples, r.dirty, r.pps, r.ws, r.precise);
	for (unsigned i = 0; i < r.n_hwpts; i++)
		printf("rate:   hwpt %u (%u devices): %" PRIu64 " dirty pages, %" PRIu64
		       " pages/s, working set %" PRIu64 "\n",
		       r.hwpt[i].id, r.hwpt[i].n_devices, r.hwpt[i].dirty, r.hwpt[i].pps,
		       r.hwpt[i].ws);
	*ret = r;
}

#endif
