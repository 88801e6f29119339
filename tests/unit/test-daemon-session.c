/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The session core of iodirtyd (libiodirtyd.a) without a kernel: what needs no /dev/iommu.
 * vIOMMU events are checked and applied on adopt-mode sessions with a vIOMMU, which keep
 * their mappings in the IOVA map only; rounds run on sessions without HWPTs (or with a
 * fallback HWPT, which is never read), their dirty bits set in the log as a harvest would
 * merge them. Every refusal is checked for its errno, its D-Bus error name and the exact
 * sentence a client reads. The context is a bare struct: no bus, no fd store.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "context.h"
#include "logging.h"
#include "session.h"

#define PAGE UINT64_C(0x1000)
#define REGION_GPA UINT64_C(0x100000)
#define REGION_SIZE UINT64_C(0x10000)

/* The limits of the bus tier (tests/bus/iodirtyd-test.conf). */
#define LIMIT_SESSIONS 6
#define LIMIT_PER_USER 2
#define LIMIT_DEVICES 2
#define LIMIT_REGIONS 3
#define LIMIT_MAPPINGS 4
#define LIMIT_LOG_BYTES 65536
#define LIMIT_LOG_BYTES_PER_USER 98304
#define LIMIT_RANGES 16

#define E_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"

static struct iod_context ctx;

static void setup(void)
{
	ctx = (struct iod_context){};
	iod_config_init(&ctx.config);
	ctx.config.iommufd_path = strdup("/nonexistent/iommu"); /* no kernel, on any host */
	ck_assert_ptr_nonnull(ctx.config.iommufd_path);
	ctx.config.limits = (struct iod_limits){
		.sessions = LIMIT_SESSIONS,
		.sessions_per_user = LIMIT_PER_USER,
		.devices = LIMIT_DEVICES,
		.regions = LIMIT_REGIONS,
		.mappings = LIMIT_MAPPINGS,
		.log_bytes = LIMIT_LOG_BYTES,
		.log_bytes_per_user = LIMIT_LOG_BYTES_PER_USER,
		.ranges = LIMIT_RANGES,
	};
	iod_log_set_max_level(getenv("IOD_TEST_VERBOSE") ? LOG_DEBUG : LOG_CRIT);
}

static void teardown(void)
{
	while (ctx.n_sessions > 0)
		iod_session_free(ctx.sessions[--ctx.n_sessions]);
	free(ctx.sessions);
	iod_config_clear(&ctx.config);
}

/* A session of ctx (freed by teardown), owned by ":1.1". */
static struct iod_session *session_add(const char *name, enum iod_session_mode mode, bool viommu,
				       uid_t uid)
{
	const struct iod_session_options o = {
		.page_size = PAGE,
		.viommu = viommu,
		.disconnect_policy = IOD_DISCONNECT_KEEP,
	};
	struct iod_session *s = NULL;

	ck_assert_int_eq(iod_session_new(&ctx, name, mode, uid, &o, &s), 0);
	ck_assert_int_eq(iod_session_set_owner(s, ":1.1"), 0);
	ck_assert_int_eq(iod_context_add_session(&ctx, s), 0);
	return s;
}

/* An adopt-mode session with a vIOMMU and guest memory [REGION_GPA, +REGION_SIZE). */
static struct iod_session *viommu_session(const char *name)
{
	struct iod_session *s = session_add(name, IOD_MODE_ADOPT, true, 0);
	struct iod_reason why = {};

	ck_assert_int_eq(iod_session_add_region(s, REGION_GPA, REGION_SIZE, &why), 0);
	return s;
}

static int make_memfd(uint64_t size)
{
	int fd = memfd_create("iodirty-unit-guest", MFD_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
	return fd;
}

static void expect_reason(int r, int want_r, const struct iod_reason *why, const char *name,
			  const char *text)
{
	ck_assert_msg(r == want_r, "returned %d (%s), want %d", r, why->text, want_r);
	ck_assert_ptr_nonnull(why->name);
	ck_assert_str_eq(why->name, name);
	ck_assert_str_eq(why->text, text);
}

static int map_batch(struct iod_session *s, const struct iod_mapping *v, size_t n,
		     struct iod_reason *why)
{
	*why = (struct iod_reason){};
	return iod_session_map_batch(s, "maps", v, n, why);
}

static int unmap_batch(struct iod_session *s, const struct iod_mapping *v, size_t n,
		       struct iod_reason *why)
{
	*why = (struct iod_reason){};
	return iod_session_unmap_batch(s, "ranges", v, n, why);
}

#define N(v) (sizeof(v) / sizeof((v)[0]))

/* --- vIOMMU events: each batch checked whole before anything changes ------------------------ */

START_TEST(map_batch_empty_maps_nothing)
{
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why = {};

	ck_assert_int_eq(map_batch(s, NULL, 0, &why), 0);
	ck_assert_int_eq(unmap_batch(s, NULL, 0, &why), 0);
	ck_assert_uint_eq(iod_iova_map_count(s->map), 0);
}
END_TEST

START_TEST(map_batch_empty_entry_names_the_entry)
{
	static const struct iod_mapping v[] = {{0x10000, 0x100000, 0x1000}, {0x20000, 0x101000, 0}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(map_batch(s, v, N(v), &why), -EINVAL, &why, E_INVALID_ARGS,
		      "maps[1]: size must not be 0");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 0);
}
END_TEST

START_TEST(map_batch_unaligned_iova_names_the_entry)
{
	static const struct iod_mapping v[] = {{0x10000, 0x100000, 0x1000},
					       {0x20800, 0x101000, 0x1000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(
		map_batch(s, v, N(v), &why), -EINVAL, &why, E_INVALID_ARGS,
		"maps[1]: iova 0x20800 and size 0x1000 must be aligned to the page size 0x1000");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 0);
}
END_TEST

START_TEST(map_batch_unaligned_gpa_names_the_entry)
{
	static const struct iod_mapping v[] = {{0x10000, 0x100800, 0x1000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(
		map_batch(s, v, N(v), &why), -EINVAL, &why, E_INVALID_ARGS,
		"maps[0]: gpa 0x100800 and size 0x1000 must be aligned to the page size 0x1000");
}
END_TEST

START_TEST(map_batch_overflow_is_an_invalid_range)
{
	static const struct iod_mapping v[] = {{0x10000, 0x100000, 0x1000},
					       {0x20000, 0x101000, 0x1000},
					       {UINT64_MAX - 0xfff, 0x102000, 0x2000}};
	static const struct iod_mapping g[] = {{0x10000, UINT64_MAX - 0xfff, 0x2000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(map_batch(s, v, N(v), &why), -EOVERFLOW, &why, IOD_ERROR_INVALID_RANGE,
		      "maps[2]: iova 0xfffffffffffff000 + size 0x2000 overflows");
	expect_reason(map_batch(s, g, N(g), &why), -EOVERFLOW, &why, IOD_ERROR_INVALID_RANGE,
		      "maps[0]: gpa 0xfffffffffffff000 + size 0x2000 overflows");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 0);
}
END_TEST

START_TEST(map_batch_outside_guest_memory_names_the_entry)
{
	static const struct iod_mapping v[] = {{0x10000, 0x100000, 0x1000},
					       {0x20000, 0x10f000, 0x2000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(map_batch(s, v, N(v), &why), -ERANGE, &why, IOD_ERROR_INVALID_RANGE,
		      "maps[1]: GPA [0x10f000, 0x111000) is not inside one guest memory region");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 0);
}
END_TEST

START_TEST(map_batch_overlap_names_the_entry)
{
	static const struct iod_mapping v[] = {{0x10000, 0x100000, 0x2000},
					       {0x30000, 0x102000, 0x1000},
					       {0x11000, 0x104000, 0x1000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(map_batch(s, v, N(v), &why), -EEXIST, &why, IOD_ERROR_INVALID_RANGE,
		      "maps[2]: IOVA [0x11000, 0x12000) overlaps maps[0] of the same batch");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 0);
}
END_TEST

START_TEST(map_batch_same_entry_twice_overlaps)
{
	static const struct iod_mapping v[] = {{0x40000, 0x100000, 0x1000},
					       {0x40000, 0x100000, 0x1000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(map_batch(s, v, N(v), &why), -EEXIST, &why, IOD_ERROR_INVALID_RANGE,
		      "maps[1]: IOVA [0x40000, 0x41000) overlaps maps[0] of the same batch");
}
END_TEST

START_TEST(map_batch_over_the_limit_is_refused_before_its_entries)
{
	/* the last entry is bad too: the size of the batch is checked first */
	static const struct iod_mapping v[LIMIT_MAPPINGS + 1] = {{0x10000, 0x100000, 0x1000},
								 {0x11000, 0x101000, 0x1000},
								 {0x12000, 0x102000, 0x1000},
								 {0x13000, 0x103000, 0x1000},
								 {0x14000, 0x104000, 0}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(
		map_batch(s, v, N(v), &why), -ENOSPC, &why, IOD_ERROR_LIMIT_EXCEEDED,
		"A batch of more than 4 entries is over the limit \"mappings\" of session ev");
	expect_reason(
		unmap_batch(s, v, N(v), &why), -ENOSPC, &why, IOD_ERROR_LIMIT_EXCEEDED,
		"A batch of more than 4 entries is over the limit \"mappings\" of session ev");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 0);
}
END_TEST

START_TEST(map_batch_at_the_limit_maps_every_entry)
{
	/* aliases: several IOVAs may translate to one GPA */
	static const struct iod_mapping v[LIMIT_MAPPINGS] = {{0x10000, 0x100000, 0x1000},
							     {0x11000, 0x100000, 0x1000},
							     {0x12000, 0x101000, 0x1000},
							     {0x20000, 0x102000, 0x4000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_mapping hit;
	struct iod_reason why;

	ck_assert_int_eq(map_batch(s, v, N(v), &why), 0);
	ck_assert_uint_eq(iod_iova_map_count(s->map), 4);
	ck_assert_uint_eq(iod_iova_map_bytes(s->map), 0x7000);
	ck_assert_int_eq(iod_iova_map_lookup(s->map, 0x11000, &hit), 0);
	ck_assert_uint_eq(hit.gpa, 0x100000);
}
END_TEST

START_TEST(map_batch_adding_over_the_mappings_limit_is_refused)
{
	static const struct iod_mapping three[] = {{0x10000, 0x100000, 0x1000},
						   {0x11000, 0x101000, 0x1000},
						   {0x12000, 0x102000, 0x1000}};
	/* the first is recorded already (a retry): only the other two count */
	static const struct iod_mapping more[] = {{0x10000, 0x100000, 0x1000},
						  {0x13000, 0x103000, 0x1000},
						  {0x14000, 0x104000, 0x1000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	ck_assert_int_eq(map_batch(s, three, N(three), &why), 0);
	expect_reason(
		map_batch(s, more, N(more), &why), -ENOSPC, &why, IOD_ERROR_LIMIT_EXCEEDED,
		"Session ev has 3 mappings, 2 more would be over the limit \"mappings\" of 4");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 3);
	ck_assert_int_eq(map_batch(s, more, 2, &why), 0);
	ck_assert_uint_eq(iod_iova_map_count(s->map), 4);
}
END_TEST

START_TEST(map_retry_of_a_recorded_mapping_succeeds_without_a_change)
{
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why = {};

	ck_assert_int_eq(iod_session_map(s, 0x10000, 0x100000, 0x2000, &why), 0);
	ck_assert_int_eq(iod_session_map(s, 0x10000, 0x100000, 0x2000, &why), 0);
	ck_assert_uint_eq(iod_iova_map_count(s->map), 1);
}
END_TEST

START_TEST(map_over_an_existing_mapping_is_refused_without_an_index)
{
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why = {};
	int r;

	ck_assert_int_eq(iod_session_map(s, 0x10000, 0x100000, 0x2000, &why), 0);
	r = iod_session_map(s, 0x11000, 0x104000, 0x1000, &why);
	expect_reason(r, -EEXIST, &why, IOD_ERROR_INVALID_RANGE,
		      "IOVA [0x11000, 0x12000) overlaps an existing mapping at 0x11000");
	r = iod_session_map(s, 0x10000, 0x100000, 0x0, &why);
	expect_reason(r, -EINVAL, &why, E_INVALID_ARGS, "size must not be 0");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 1);
}
END_TEST

START_TEST(map_without_viommu_is_the_wrong_mode_but_bad_entries_come_first)
{
	static const struct iod_mapping bad[] = {{0x10800, 0x100000, 0x1000}};
	static const struct iod_mapping good[] = {{0x10000, 0x100000, 0x1000}};
	struct iod_session *s = session_add("flat", IOD_MODE_ADOPT, false, 0);
	struct iod_reason why;
	const char *want = "Session flat has no vIOMMU (IOVA = GPA): create it with the option "
			   "viommu=true to report map events";

	expect_reason(map_batch(s, good, N(good), &why), -EMEDIUMTYPE, &why, IOD_ERROR_WRONG_MODE,
		      want);
	expect_reason(map_batch(s, NULL, 0, &why), -EMEDIUMTYPE, &why, IOD_ERROR_WRONG_MODE, want);
	expect_reason(map_batch(s, bad, N(bad), &why), -EINVAL, &why, E_INVALID_ARGS,
		      "maps[0]: iova 0x10800 and size 0x1000 must be aligned to the page size "
		      "0x1000");
	expect_reason(unmap_batch(s, good, N(good), &why), -EMEDIUMTYPE, &why, IOD_ERROR_WRONG_MODE,
		      "Session flat has no vIOMMU (IOVA = GPA): create it with the option "
		      "viommu=true to report unmap events");
}
END_TEST

START_TEST(unmap_batch_entries_are_checked_and_named)
{
	static const struct iod_mapping unaligned[] = {{0x10000, 0, 0x1000}, {0x20000, 0, 0x800}};
	static const struct iod_mapping empty[] = {{0x10000, 0, 0}};
	static const struct iod_mapping overflow[] = {{0x10000, 0, 0x1000},
						      {UINT64_MAX - 0xfff, 0, 0x2000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	expect_reason(
		unmap_batch(s, unaligned, N(unaligned), &why), -EINVAL, &why, E_INVALID_ARGS,
		"ranges[1]: iova 0x20000 and size 0x800 must be aligned to the page size 0x1000");
	expect_reason(unmap_batch(s, empty, N(empty), &why), -EINVAL, &why, E_INVALID_ARGS,
		      "ranges[0]: size must not be 0");
	expect_reason(unmap_batch(s, overflow, N(overflow), &why), -EOVERFLOW, &why,
		      IOD_ERROR_INVALID_RANGE,
		      "ranges[1]: iova 0xfffffffffffff000 + size 0x2000 overflows");
}
END_TEST

START_TEST(unmap_of_nothing_mapped_is_not_mapped)
{
	static const struct iod_mapping two[] = {{0x10000, 0, 0x1000}, {0x0, 0, 0x100000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why = {};
	int r;

	expect_reason(unmap_batch(s, two, N(two), &why), -ENOENT, &why, IOD_ERROR_NOT_MAPPED,
		      "There is no mapping in any of the 2 ranges (for a retried UnmapBatch: the "
		      "first attempt did it)");
	r = iod_session_unmap(s, 0x10000, 0x1000, &why);
	expect_reason(r, -ENOENT, &why, IOD_ERROR_NOT_MAPPED,
		      "There is no mapping in IOVA [0x10000, 0x11000) (for a retried Unmap: the "
		      "first attempt did it)");
}
END_TEST

START_TEST(unmap_that_cuts_a_mapping_is_refused)
{
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why = {};
	int r;

	ck_assert_int_eq(iod_session_map(s, 0x10000, 0x100000, 0x2000, &why), 0);
	r = iod_session_unmap(s, 0x11000, 0x1000, &why);
	expect_reason(r, -ERANGE, &why, IOD_ERROR_INVALID_RANGE,
		      "Unmap at 0x11000 cuts the mapping [0x10000, 0x12000): unmap whole mappings");
	r = iod_session_unmap(s, 0x0, 0x11000, &why);
	expect_reason(r, -ERANGE, &why, IOD_ERROR_INVALID_RANGE,
		      "Unmap up to 0x11000 cuts the mapping [0x10000, 0x12000): unmap whole "
		      "mappings");
	ck_assert_uint_eq(iod_iova_map_count(s->map), 1);
}
END_TEST

START_TEST(unmap_batch_removes_whole_mappings)
{
	static const struct iod_mapping maps[] = {{0x10000, 0x100000, 0x1000},
						  {0x11000, 0x101000, 0x1000},
						  {0x40000, 0x102000, 0x2000}};
	/* one range over two mappings, one over a hole and a mapping */
	static const struct iod_mapping ranges[] = {{0x10000, 0, 0x2000}, {0x30000, 0, 0x20000}};
	struct iod_session *s = viommu_session("ev");
	struct iod_reason why;

	ck_assert_int_eq(map_batch(s, maps, N(maps), &why), 0);
	ck_assert_int_eq(unmap_batch(s, ranges, 1, &why), 0);
	ck_assert_uint_eq(iod_iova_map_count(s->map), 1);
	ck_assert_int_eq(unmap_batch(s, ranges, N(ranges), &why), 0);
	ck_assert_uint_eq(iod_iova_map_count(s->map), 0);
}
END_TEST

/* --- limits ------------------------------------------------------------------------------- */

START_TEST(limits_table_knows_each_limit_with_its_range)
{
	static const char *const names[] = {
		"sessions",  "sessions_per_user",  "devices", "regions", "mappings",
		"log_bytes", "log_bytes_per_user", "ranges"};
	struct iod_limits l;
	char *reason = NULL;

	iod_limits_init(&l);
	ck_assert_uint_eq(l.sessions, 64);
	ck_assert_uint_eq(l.mappings, 65536);
	ck_assert_uint_eq(l.log_bytes, UINT64_C(256) << 20);
	for (size_t i = 0; i < N(names); i++)
		ck_assert_ptr_nonnull(iod_limit_find(names[i]));
	ck_assert_ptr_null(iod_limit_find("nolimit"));

	ck_assert_int_eq(iod_limit_set(&l, iod_limit_find("sessions"), 0, &reason), -EINVAL);
	ck_assert_str_eq(reason, "limit \"sessions\" must be between 1 and 4096");
	ck_assert_uint_eq(l.sessions, 64);
	ck_assert_int_eq(
		iod_limit_set(&l, iod_limit_find("log_bytes_per_user"), UINT64_C(1) << 33, &reason),
		0);
	ck_assert_uint_eq(l.log_bytes_per_user, UINT64_C(1) << 33);
	free(reason);
}
END_TEST

START_TEST(config_set_limit_names_what_is_wrong)
{
	char *reason = NULL;

	ck_assert_int_eq(iod_config_set_limit(&ctx.config, "nolimit", "3", &reason), -EINVAL);
	ck_assert_str_eq(reason, "unknown limit \"nolimit\"");
	ck_assert_int_eq(iod_config_set_limit(&ctx.config, "ranges", "many", &reason), -EINVAL);
	ck_assert_str_eq(reason, "limit \"ranges\": \"many\" is not a number");
	ck_assert_int_eq(iod_config_set_limit(&ctx.config, "ranges", "2000000", &reason), -EINVAL);
	ck_assert_str_eq(reason, "limit \"ranges\" must be between 1 and 1048576");
	ck_assert_int_eq(iod_config_set_limit(&ctx.config, "ranges", "0x20", &reason), 0);
	ck_assert_uint_eq(ctx.config.limits.ranges, 32);
	free(reason);
}
END_TEST

START_TEST(sessions_limit_counts_the_daemon_then_the_uid_but_not_root)
{
	const struct iod_limits *l = &ctx.config.limits;
	struct iod_reason why = {};

	expect_reason(iod_limits_check_sessions(l, LIMIT_SESSIONS, 0, 0, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED,
		      "There are already 6 sessions (limit \"sessions\")");
	expect_reason(iod_limits_check_sessions(l, 3, 1000, LIMIT_PER_USER, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED,
		      "uid 1000 already has 2 sessions (limit \"sessions_per_user\")");
	ck_assert_int_eq(iod_limits_check_sessions(l, 3, 1000, LIMIT_PER_USER - 1, NULL), 0);
	ck_assert_int_eq(iod_limits_check_sessions(l, 5, 0, 5, NULL), 0);
}
END_TEST

START_TEST(device_and_hwpt_limits_name_the_limit)
{
	const struct iod_limits *l = &ctx.config.limits;
	struct iod_session *s = session_add("dev", IOD_MODE_ADOPT, false, 0);
	struct iod_reason why = {};

	expect_reason(iod_limits_check_devices(l, "vm", LIMIT_DEVICES, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED,
		      "Session vm already has 2 devices (limit \"devices\")");
	ck_assert_int_eq(iod_limits_check_devices(l, "vm", LIMIT_DEVICES - 1, NULL), 0);
	expect_reason(iod_limits_check_hwpts(l, LIMIT_DEVICES + 1, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED, "3 HWPTs are more than the limit \"devices\" of 2");
	ck_assert_int_eq(iod_limits_check_hwpts(l, LIMIT_DEVICES, NULL), 0);
	/* an adopted session's devices are the client's */
	expect_reason(iod_session_check_device_limit(s, &why), -EMEDIUMTYPE, &why,
		      IOD_ERROR_WRONG_MODE,
		      "Session dev is in adopt mode: its devices belong to the client, which names "
		      "its HWPTs instead");
}
END_TEST

START_TEST(ranges_and_mapping_limits_name_the_limit)
{
	const struct iod_limits *l = &ctx.config.limits;
	struct iod_reason why = {};

	expect_reason(iod_limits_check_ranges(l, LIMIT_RANGES + 1, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED,
		      "Option \"max_ranges\" 17 is over the limit \"ranges\" of 16");
	ck_assert_int_eq(iod_limits_check_ranges(l, LIMIT_RANGES, NULL), 0);
	expect_reason(iod_limits_check_one_mapping(l, "vm", LIMIT_MAPPINGS, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED, "Session vm has 4 mappings (limit \"mappings\")");
	ck_assert_int_eq(iod_limits_check_one_mapping(l, "vm", LIMIT_MAPPINGS - 1, NULL), 0);
	/* more mappings than the limit already (a restore over a lowered limit) */
	expect_reason(
		iod_limits_check_mappings(l, "vm", LIMIT_MAPPINGS + 2, 0, &why), -ENOSPC, &why,
		IOD_ERROR_LIMIT_EXCEEDED,
		"Session vm has 6 mappings, 0 more would be over the limit \"mappings\" of 4");
	ck_assert_int_eq(iod_limits_check_batch(l, "vm", LIMIT_MAPPINGS, NULL), 0);
}
END_TEST

START_TEST(region_limit_refuses_one_region_too_many)
{
	struct iod_session *s = session_add("lim", IOD_MODE_ADOPT, true, 0);
	struct iod_reason why = {};

	for (uint64_t i = 0; i < LIMIT_REGIONS; i++)
		ck_assert_int_eq(iod_session_add_region(s, i << 20, PAGE, &why), 0);
	expect_reason(iod_session_add_region(s, UINT64_C(16) << 20, PAGE, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED,
		      "Session lim already has 3 memory regions (limit \"regions\")");
	ck_assert_uint_eq(s->n_regions, LIMIT_REGIONS);
	ck_assert_uint_eq(iod_log_region_count(s->log), LIMIT_REGIONS);
}
END_TEST

START_TEST(log_bytes_limit_counts_both_planes)
{
	struct iod_session *s = session_add("lim", IOD_MODE_ADOPT, true, 0);
	struct iod_reason why = {};

	/* 2 GiB of 4 KiB pages: 64 KiB of bitmap per plane */
	expect_reason(iod_session_add_region(s, 0, UINT64_C(2) << 30, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED,
		      "The dirty log of session lim would grow to 131072 bytes, over the limit "
		      "\"log_bytes\" of 65536");
	ck_assert_int_eq(iod_session_add_region(s, 0, UINT64_C(1) << 30, &why), 0);
	ck_assert_uint_eq(s->log_bytes, 65536);
	expect_reason(iod_session_add_region(s, UINT64_C(1) << 30, PAGE, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED,
		      "The dirty log of session lim would grow to 65552 bytes, over the limit "
		      "\"log_bytes\" of 65536");
}
END_TEST

START_TEST(log_bytes_per_user_limit_counts_every_session_of_the_uid)
{
	struct iod_session *a = session_add("a", IOD_MODE_ADOPT, true, 1000);
	struct iod_session *b = session_add("b", IOD_MODE_ADOPT, true, 1000);
	struct iod_session *r0 = session_add("r0", IOD_MODE_ADOPT, true, 0);
	struct iod_session *r1 = session_add("r1", IOD_MODE_ADOPT, true, 0);
	struct iod_reason why = {};

	ck_assert_int_eq(iod_session_add_region(a, 0, UINT64_C(1) << 30, &why), 0);
	expect_reason(iod_session_add_region(b, 0, UINT64_C(1) << 30, &why), -ENOSPC, &why,
		      IOD_ERROR_LIMIT_EXCEEDED,
		      "The dirty logs of uid 1000 would grow to 131072 bytes, over the limit "
		      "\"log_bytes_per_user\" of 98304");
	ck_assert_int_eq(iod_session_add_region(b, 0, UINT64_C(512) << 20, &why), 0);
	/* root's sessions count against nobody */
	ck_assert_int_eq(iod_session_add_region(r0, 0, UINT64_C(1) << 30, &why), 0);
	ck_assert_int_eq(iod_session_add_region(r1, 0, UINT64_C(1) << 30, &why), 0);
}
END_TEST

/* --- guest memory ------------------------------------------------------------------------- */

START_TEST(add_region_refuses_overlap_and_the_wrong_mode)
{
	struct iod_session *s = viommu_session("mem");
	struct iod_session *o = session_add("own", IOD_MODE_OWNER, true, 0);
	struct iod_reason why = {};

	expect_reason(iod_session_add_region(s, REGION_GPA + REGION_SIZE - PAGE, 2 * PAGE, &why),
		      -EEXIST, &why, IOD_ERROR_INVALID_RANGE,
		      "[0x10f000, 0x111000) overlaps guest memory [0x100000, 0x110000)");
	expect_reason(iod_session_add_region(s, 0x800, PAGE, &why), -EINVAL, &why, E_INVALID_ARGS,
		      "gpa 0x800 and size 0x1000 must be aligned to the page size 0x1000");
	expect_reason(iod_session_add_region(o, 0, PAGE, &why), -EMEDIUMTYPE, &why,
		      IOD_ERROR_WRONG_MODE,
		      "Session own is in owner mode: pass the guest memory with AddMemory");
	expect_reason(iod_session_add_memory(s, -1, 0, PAGE, 0, &why), -EMEDIUMTYPE, &why,
		      IOD_ERROR_WRONG_MODE,
		      "Session mem is in adopt mode: declare the memory you mapped with AddRegion");
	ck_assert_uint_eq(s->n_regions, 1);
	ck_assert_uint_eq(iod_log_tracked_bytes(s->log), REGION_SIZE);
}
END_TEST

START_TEST(add_memory_refuses_what_is_not_guest_memory)
{
	struct iod_session *s = session_add("own", IOD_MODE_OWNER, true, 0);
	int mem = make_memfd(REGION_SIZE), ro, p[2];
	struct iod_reason why = {};
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", mem);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(ro, 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);

	expect_reason(iod_session_add_memory(s, p[0], 0, PAGE, 0, &why), -EINVAL, &why,
		      E_INVALID_ARGS,
		      "The memory fd is not a memfd or a file (memfd, tmpfs or hugetlbfs)");
	expect_reason(iod_session_add_memory(s, ro, 0, PAGE, 0, &why), -EINVAL, &why,
		      E_INVALID_ARGS, "The memory fd must be open for reading and writing");
	expect_reason(iod_session_add_memory(s, mem, PAGE, REGION_SIZE, 0, &why), -ERANGE, &why,
		      IOD_ERROR_INVALID_RANGE,
		      "The memory fd holds 65536 bytes, less than offset + size = 69632");
	expect_reason(iod_session_add_memory(s, mem, 0x800, PAGE, 0, &why), -EINVAL, &why,
		      E_INVALID_ARGS, "offset 0x800 must be aligned to the page size 0x1000");
	ck_assert_uint_eq(s->n_regions, 0);
	ck_assert_uint_eq(iod_log_region_count(s->log), 0);
	close(p[0]);
	close(p[1]);
	close(ro);
	close(mem);
}
END_TEST

START_TEST(add_memory_without_iommufd_is_no_iommufd_and_changes_nothing)
{
	struct iod_session *s = session_add("flat", IOD_MODE_OWNER, false, 0);
	int mem = make_memfd(REGION_SIZE);
	struct iod_reason why = {};

	expect_reason(iod_session_add_memory(s, mem, 0, REGION_SIZE, REGION_GPA, &why), -ENODEV,
		      &why, IOD_ERROR_NO_IOMMUFD,
		      "/nonexistent/iommu does not exist: this kernel has no iommufd "
		      "(CONFIG_IOMMUFD), so session flat cannot map memory or attach devices");
	ck_assert_ptr_null(s->ictx);
	ck_assert_uint_eq(s->n_regions, 0);
	ck_assert_uint_eq(s->log_bytes, 0);
	close(mem);
}
END_TEST

START_TEST(add_memory_with_viommu_maps_the_fd_and_needs_no_kernel)
{
	struct iod_session *s = session_add("own", IOD_MODE_OWNER, true, 0);
	int mem = make_memfd(2 * REGION_SIZE);
	struct iod_reason why = {};
	char *p;

	ck_assert_int_eq(iod_session_add_memory(s, mem, REGION_SIZE, REGION_SIZE, REGION_GPA, &why),
			 0);
	ck_assert_uint_eq(s->n_regions, 1);
	ck_assert_str_eq(s->regions[0].fdname, "own/mem/100000");
	ck_assert_int_ge(s->regions[0].fd, 0);
	ck_assert(!s->regions[0].mapped);
	/* the mapping is of the fd at the offset, shared */
	p = mmap(NULL, 2 * REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mem, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	p[REGION_SIZE + 5] = 42;
	ck_assert_int_eq(((char *)s->regions[0].va)[5], 42);
	munmap(p, 2 * REGION_SIZE);
	ck_assert_ptr_null(s->ictx);
	close(mem);
}
END_TEST

/* --- rounds ------------------------------------------------------------------------------- */

START_TEST(harvest_before_start_is_not_tracking)
{
	struct iod_session *s = viommu_session("h");
	struct iod_harvest_result res;
	struct iod_reason why = {};

	expect_reason(iod_session_harvest(s, false, &res, &why), -ESRCH, &why,
		      IOD_ERROR_NOT_TRACKING, "Session h is not tracking: call Start first");
}
END_TEST

START_TEST(harvest_starts_a_round_that_acknowledge_clears)
{
	struct iod_session *s = viommu_session("h");
	struct iod_harvest_result res;
	struct iod_reason why = {};

	ck_assert_int_eq(iod_session_start(s, &why), 0);
	ck_assert_int_eq(iod_session_start(s, &why), 0); /* idempotent */
	ck_assert_int_eq(iod_log_mark(s->log, REGION_GPA, 3 * PAGE), 0);

	ck_assert_int_eq(iod_session_harvest(s, true, &res, &why), 0); /* peek: no round */
	ck_assert_uint_eq(res.round, 0);
	ck_assert_uint_eq(res.dirty_pages, 3);
	ck_assert_uint_eq(iod_session_pending_round(s), 0);

	ck_assert_int_eq(iod_session_harvest(s, false, &res, &why), 0);
	ck_assert_uint_eq(res.round, 1);
	ck_assert_uint_eq(res.dirty_pages, 3);
	ck_assert(res.precise);
	ck_assert_uint_eq(iod_session_pending_round(s), 1);
	ck_assert_uint_eq(s->last_dirty_pages, 3);

	/* an unacknowledged round keeps growing */
	ck_assert_int_eq(iod_log_mark(s->log, REGION_GPA + 8 * PAGE, PAGE), 0);
	ck_assert_int_eq(iod_session_harvest(s, false, &res, &why), 0);
	ck_assert_uint_eq(res.round, 2);
	ck_assert_uint_eq(res.dirty_pages, 4);

	expect_reason(iod_session_acknowledge(s, 1, &why), -ESTALE, &why, IOD_ERROR_NO_SUCH_ROUND,
		      "Round 1 is not the current round of session h (2): a later Harvest merged "
		      "it into round 2");
	ck_assert_int_eq(iod_session_acknowledge(s, 2, &why), 0);
	ck_assert_uint_eq(iod_session_pending_round(s), 0);
	ck_assert_uint_eq(iod_log_count_round(s->log), 0);
	ck_assert_int_eq(iod_session_acknowledge(s, 2, &why), 0); /* again: nothing pending */

	ck_assert_int_eq(iod_session_stop(s, &why), 0);
	ck_assert(!s->tracking);
}
END_TEST

START_TEST(failed_session_refuses_start_and_harvest)
{
	struct iod_session *s = viommu_session("h");
	struct iod_harvest_result res;
	struct iod_reason why = {};

	ck_assert(iod_session_log_complete(s));
	iod_session_fail(s, "test: %s", "bits lost");
	iod_session_fail(s, "a second failure keeps the first reason");
	ck_assert(!iod_session_log_complete(s));
	ck_assert_str_eq(s->failure, "test: bits lost");
	expect_reason(iod_session_start(s, &why), -EIO, &why, IOD_ERROR_SESSION_FAILED,
		      "Session h failed, its dirty log is incomplete: test: bits lost");
	s->tracking = true;
	expect_reason(iod_session_harvest(s, false, &res, &why), -EIO, &why,
		      IOD_ERROR_SESSION_FAILED,
		      "Session h failed, its dirty log is incomplete: test: bits lost");
}
END_TEST

/* The dirty ranges of the round: n ranges, compared with want. */
static void expect_ranges(struct iod_session *s, bool peek, bool iova, size_t max,
			  const struct iod_range *want, size_t n_want, bool want_truncated)
{
	struct iod_range *ranges = NULL;
	uint64_t unmapped = 0;
	bool truncated = !want_truncated;
	size_t n = 0;

	ck_assert_int_eq(
		iod_session_dirty_ranges(s, peek, iova, max, &ranges, &n, &truncated, &unmapped),
		0);
	ck_assert_uint_eq(n, n_want);
	ck_assert(truncated == want_truncated);
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(ranges[i].start == want[i].start &&
				      ranges[i].length == want[i].length,
			      "range %zu: [0x%" PRIx64 ", +0x%" PRIx64 "), want [0x%" PRIx64
			      ", +0x%" PRIx64 ")",
			      i, ranges[i].start, ranges[i].length, want[i].start, want[i].length);
	}
	free(ranges);
}

START_TEST(dirty_ranges_merge_neighbouring_pages_in_gpa_space)
{
	static const struct iod_range want[] = {{REGION_GPA, 3 * PAGE},
						{REGION_GPA + 5 * PAGE, PAGE},
						{REGION_GPA + 15 * PAGE, PAGE}};
	struct iod_session *s = viommu_session("r");
	struct iod_harvest_result res;
	struct iod_reason why = {};

	ck_assert_int_eq(iod_session_start(s, &why), 0);
	ck_assert_int_eq(iod_log_mark(s->log, REGION_GPA, 3 * PAGE), 0);
	ck_assert_int_eq(iod_log_mark(s->log, REGION_GPA + 5 * PAGE, PAGE), 0);
	ck_assert_int_eq(iod_log_mark(s->log, REGION_GPA + 15 * PAGE, PAGE), 0);
	expect_ranges(s, false, false, 16, NULL, 0, false); /* not harvested yet */
	expect_ranges(s, true, false, 16, want, N(want), false); /* peek sees both planes */
	ck_assert_int_eq(iod_session_harvest(s, false, &res, &why), 0);
	expect_ranges(s, false, false, 16, want, N(want), false);
	expect_ranges(s, false, false, 2, want, 2, true);
	ck_assert_int_eq(iod_session_dirty_ranges(s, false, false, 0, NULL, NULL, NULL, NULL),
			 -EINVAL);
}
END_TEST

START_TEST(dirty_ranges_in_iova_space_translate_through_the_map)
{
	static const struct iod_mapping maps[] = {{0x40000, REGION_GPA, 0x2000},
						  {0x10000, REGION_GPA + 0x4000, 0x1000}};
	/* in IOVA order, and an alias reports a page at each of its IOVAs */
	static const struct iod_mapping alias[] = {{0x80000, REGION_GPA + 0x1000, 0x1000}};
	static const struct iod_range want[] = {{0x10000, PAGE}, {0x41000, PAGE}};
	static const struct iod_range want_alias[] = {
		{0x10000, PAGE}, {0x41000, PAGE}, {0x80000, PAGE}};
	struct iod_session *s = viommu_session("r");
	struct iod_harvest_result res;
	struct iod_reason why;

	ck_assert_int_eq(map_batch(s, maps, N(maps), &why), 0);
	ck_assert_int_eq(iod_session_start(s, &why), 0);
	ck_assert_int_eq(iod_log_mark(s->log, REGION_GPA + 0x1000, PAGE), 0);
	ck_assert_int_eq(iod_log_mark(s->log, REGION_GPA + 0x4000, PAGE), 0);
	ck_assert_int_eq(iod_session_harvest(s, false, &res, &why), 0);
	expect_ranges(s, false, true, 16, want, N(want), false);
	ck_assert_int_eq(map_batch(s, alias, N(alias), &why), 0);
	expect_ranges(s, false, true, 16, want_alias, N(want_alias), false);
}
END_TEST

START_TEST(dirty_ranges_in_iova_space_refuse_pages_no_iova_maps)
{
	static const struct iod_mapping maps[] = {{0x40000, REGION_GPA, 0x2000}};
	struct iod_session *s = viommu_session("r");
	struct iod_range *ranges = NULL;
	struct iod_harvest_result res;
	uint64_t unmapped = 0;
	struct iod_reason why;
	bool truncated;
	size_t n;

	ck_assert_int_eq(map_batch(s, maps, N(maps), &why), 0);
	ck_assert_int_eq(iod_session_start(s, &why), 0);
	ck_assert_int_eq(iod_log_mark(s->log, REGION_GPA, 4 * PAGE), 0);
	ck_assert_int_eq(iod_session_harvest(s, false, &res, &why), 0);
	ck_assert_int_eq(
		iod_session_dirty_ranges(s, false, true, 16, &ranges, &n, &truncated, &unmapped),
		-EADDRNOTAVAIL);
	ck_assert_uint_eq(unmapped, 2);
	ck_assert_ptr_null(ranges);
}
END_TEST

/* A fallback HWPT (one that cannot track) is never read: its mapped ranges count as dirty. */
static void add_fallback_hwpt(struct iod_session *s, bool capable)
{
	struct iod_session_hwpt *p = realloc(s->hwpts, (s->n_hwpts + 1) * sizeof(*p));

	ck_assert_ptr_nonnull(p);
	s->hwpts = p;
	s->hwpts[s->n_hwpts++] = (struct iod_session_hwpt){
		.hw = {.id = 10 + (uint32_t)s->n_hwpts, .dirty_capable = capable},
	};
}

START_TEST(unmap_marks_a_fallback_range_dirty_before_it_goes)
{
	static const struct iod_mapping maps[] = {{0x40000, REGION_GPA, 0x2000},
						  {0x50000, REGION_GPA + 0x8000, 0x1000}};
	static const struct iod_range want[] = {{REGION_GPA, 2 * PAGE}};
	struct iod_session *s = viommu_session("fb");
	struct iod_harvest_result res;
	struct iod_range *ranges = NULL;
	uint64_t unmapped = 0;
	struct iod_reason why;
	bool truncated;
	size_t n;

	add_fallback_hwpt(s, false);
	ck_assert(!iod_session_precise(s));
	ck_assert_int_eq(map_batch(s, maps, N(maps), &why), 0);
	ck_assert_int_eq(iod_session_start(s, &why), 0);
	ck_assert_int_eq(iod_session_unmap(s, 0x40000, 0x2000, &why), 0);
	/* the unmapped range was marked on its way out; nothing else is dirty yet */
	ck_assert_uint_eq(iod_log_count_accum(s->log), 2);
	expect_ranges(s, true, false, 16, want, N(want), false);
	ck_assert_int_eq(
		iod_session_dirty_ranges(s, true, true, 16, &ranges, &n, &truncated, &unmapped),
		-EADDRNOTAVAIL);
	ck_assert_uint_eq(unmapped, 2);
	/* a harvest marks what is still mapped */
	ck_assert_int_eq(iod_session_harvest(s, false, &res, &why), 0);
	ck_assert_uint_eq(res.dirty_pages, 3);
	ck_assert(!res.precise);
	ck_assert(!s->failed);
}
END_TEST

/* --- state strings and lifecycle ------------------------------------------------------------ */

START_TEST(state_string_follows_owner_tracking_and_failure)
{
	struct iod_session *s = viommu_session("st");
	struct iod_reason why = {};

	ck_assert_str_eq(iod_session_state_string(s), "idle");
	ck_assert_int_eq(iod_session_start(s, &why), 0);
	ck_assert_str_eq(iod_session_state_string(s), "tracking");
	ck_assert_int_eq(iod_session_set_owner(s, NULL), 0);
	ck_assert_str_eq(iod_session_state_string(s), "orphaned-tracking");
	ck_assert_int_eq(iod_session_stop(s, &why), 0);
	ck_assert_str_eq(iod_session_state_string(s), "orphaned");
	iod_session_fail(s, "test");
	ck_assert_str_eq(iod_session_state_string(s), "failed");
	ck_assert_str_eq(iod_session_mode_to_string(IOD_MODE_OWNER), "owner");
	ck_assert_str_eq(iod_session_mode_to_string(s->mode), "adopt");
}
END_TEST

START_TEST(tracking_mode_and_precise_follow_the_hwpts)
{
	struct iod_session *a = session_add("a", IOD_MODE_ADOPT, false, 0);
	struct iod_session *o = session_add("o", IOD_MODE_OWNER, false, 0);
	const struct iod_session_options huge = {.page_size = PAGE, .huge_pages = true};
	struct iod_session *h = NULL;

	ck_assert_str_eq(iod_session_tracking_mode_string(a), "none");
	ck_assert(iod_session_precise(a));
	add_fallback_hwpt(a, true);
	ck_assert_str_eq(iod_session_tracking_mode_string(a), "hardware");
	ck_assert(iod_session_precise(a));
	add_fallback_hwpt(a, false);
	ck_assert_str_eq(iod_session_tracking_mode_string(a), "mixed");
	ck_assert(!iod_session_precise(a));

	/* in owner mode only a HWPT that carries a device counts */
	add_fallback_hwpt(o, false);
	ck_assert_str_eq(iod_session_tracking_mode_string(o), "none");
	ck_assert(iod_session_precise(o));
	o->hwpts[0].users = 1;
	ck_assert_str_eq(iod_session_tracking_mode_string(o), "fallback");
	ck_assert(!iod_session_precise(o));

	/* a dirty huge IOPTE makes every page under it dirty */
	ck_assert_int_eq(iod_session_new(&ctx, "huge", IOD_MODE_OWNER, 0, &huge, &h), 0);
	ck_assert(!iod_session_precise(h));
	iod_session_free(h);
}
END_TEST

START_TEST(session_new_refuses_bad_names_and_page_sizes)
{
	const struct iod_session_options o = {.page_size = PAGE};
	const struct iod_session_options odd = {.page_size = 3000};
	struct iod_session *s = NULL;

	ck_assert_int_eq(iod_session_new(&ctx, "bad name", IOD_MODE_OWNER, 0, &o, &s), -EINVAL);
	ck_assert_int_eq(iod_session_new(&ctx, "", IOD_MODE_OWNER, 0, &o, &s), -EINVAL);
	ck_assert_int_eq(iod_session_new(&ctx, "vm", IOD_MODE_OWNER, 0, &odd, &s), -EINVAL);
	ck_assert_ptr_null(s);

	ck_assert_int_eq(iod_session_new(&ctx, "vm-1", IOD_MODE_OWNER, 0, &o, &s), 0);
	ck_assert_str_eq(s->path, "/org/iodirty/Tracker1/session/vm_2d1");
	ck_assert_str_eq(s->log_fdname, "vm-1/log");
	ck_assert_str_eq(s->journal_fdname, "vm-1/journal");
	ck_assert_str_eq(s->iommufd_fdname, "vm-1/iommufd");
	ck_assert_ptr_null(s->ictx); /* opened at the first need */
	ck_assert_str_eq(iod_session_state_string(s), "orphaned");
	iod_session_free(s);
}
END_TEST

START_TEST(owner_leaving_destroys_or_orphans_as_the_policy_says)
{
	struct iod_session *keep = viommu_session("keep");
	struct iod_session *gone = viommu_session("gone");

	gone->options.disconnect_policy = IOD_DISCONNECT_DESTROY;
	/* The session says what becomes of it; its caller (the NameOwnerChanged handler)
	 * destroys it. */
	ck_assert(!iod_session_owner_left(keep));
	ck_assert_ptr_null(keep->owner);
	ck_assert_str_eq(iod_session_state_string(keep), "orphaned");
	ck_assert(iod_session_owner_left(gone));
	ck_assert_ptr_null(gone->owner);
	ck_assert_uint_eq(ctx.n_sessions, 2);
}
END_TEST

/* --- persistent state ------------------------------------------------------------------------ */

struct fd_table {
	const char *name[8];
	int fd[8];
	size_t n;
};

static void fd_table_add(struct fd_table *t, const char *name, int fd)
{
	ck_assert_uint_lt(t->n, N(t->name));
	t->name[t->n] = name;
	t->fd[t->n++] = fd;
}

static int lookup_fd(const char *name, void *userdata)
{
	const struct fd_table *t = userdata;

	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->name[i], name) == 0)
			return t->fd[i];
	return -ENOENT;
}

static void expect_str_or_null(const char *a, const char *b)
{
	if (!a || !b)
		ck_assert_ptr_eq(a, b);
	else
		ck_assert_str_eq(a, b);
}

static void expect_same_state(const struct iod_state_session *a, const struct iod_state_session *b)
{
	ck_assert_str_eq(a->name, b->name);
	ck_assert_uint_eq(a->uid, b->uid);
	expect_str_or_null(a->owner, b->owner);
	ck_assert_int_eq(a->mode, b->mode);
	ck_assert_int_eq(a->disconnect_policy, b->disconnect_policy);
	ck_assert_uint_eq(a->ioas_id, b->ioas_id);
	ck_assert_uint_eq(a->page_shift, b->page_shift);
	ck_assert_uint_eq(a->flags, b->flags);
	ck_assert_uint_eq(a->rounds, b->rounds);
	expect_str_or_null(a->iommufd_fdname, b->iommufd_fdname);
	expect_str_or_null(a->log_fdname, b->log_fdname);
	ck_assert_uint_eq(a->n_hwpts, b->n_hwpts);
	ck_assert_uint_eq(a->n_devices, b->n_devices);
	ck_assert_uint_eq(a->n_regions, b->n_regions);
	for (size_t i = 0; i < a->n_regions; i++) {
		ck_assert_uint_eq(a->regions[i].gpa, b->regions[i].gpa);
		ck_assert_uint_eq(a->regions[i].length, b->regions[i].length);
		ck_assert_uint_eq(a->regions[i].offset, b->regions[i].offset);
		expect_str_or_null(a->regions[i].fdname, b->regions[i].fdname);
	}
	ck_assert_uint_eq(a->n_mappings, b->n_mappings);
	for (size_t i = 0; i < a->n_mappings; i++)
		ck_assert(a->mappings[i].iova == b->mappings[i].iova &&
			  a->mappings[i].gpa == b->mappings[i].gpa &&
			  a->mappings[i].length == b->mappings[i].length);
}

/* st as the one session of a whole state document, written and read back. */
static void expect_valid_document(const struct iod_state_session *st)
{
	struct iod_state doc = {
		.generation = 1, .sessions = (struct iod_state_session *)st, .n_sessions = 1};
	struct iod_state *back = NULL;
	char *json = NULL, *reason = NULL;

	ck_assert_msg(iod_state_validate(&doc, &reason) == 0, "%s", reason);
	ck_assert_int_eq(iod_state_to_json(&doc, &json), 0);
	ck_assert_msg(iod_state_from_json(json, &back, &reason) == 0, "%s", reason);
	ck_assert_uint_eq(back->n_sessions, 1);
	expect_same_state(st, &back->sessions[0]);
	iod_state_free(back);
	free(json);
}

START_TEST(state_round_trip_keeps_an_owner_session_without_kernel_objects)
{
	static const struct iod_range want[] = {{0x200000, 2 * PAGE}, {0x301000, PAGE}};
	struct iod_session *s = session_add("vm", IOD_MODE_OWNER, true, 1000), *back = NULL;
	struct iod_state_session st = {}, st2 = {};
	int mem = make_memfd(2 * REGION_SIZE);
	struct iod_harvest_result res;
	struct iod_reason why = {};
	struct fd_table t = {};

	ck_assert_int_eq(iod_session_add_memory(s, mem, 0, REGION_SIZE, 0x200000, &why), 0);
	ck_assert_int_eq(iod_session_add_memory(s, mem, REGION_SIZE, REGION_SIZE, 0x300000, &why),
			 0);
	ck_assert_int_eq(iod_session_start(s, &why), 0);
	ck_assert_int_eq(iod_log_mark(s->log, 0x200000, 2 * PAGE), 0);
	ck_assert_int_eq(iod_session_harvest(s, false, &res, &why), 0);
	ck_assert_int_eq(iod_log_mark(s->log, 0x301000, PAGE), 0); /* not harvested yet */

	ck_assert_int_eq(iod_session_to_state(s, &st), 0);
	ck_assert_uint_eq(st.rounds, 1);
	ck_assert_uint_eq(st.flags, IOD_SESSION_F_TRACKING | IOD_SESSION_F_VIOMMU);
	ck_assert_int_eq(st.disconnect_policy, IOD_STATE_DISCONNECT_KEEP);
	ck_assert_str_eq(st.regions[1].fdname, "vm/mem/300000");
	expect_valid_document(&st);

	fd_table_add(&t, st.log_fdname, iod_log_fd(s->log));
	fd_table_add(&t, "vm/mem/200000", mem);
	fd_table_add(&t, "vm/mem/300000", mem);
	ck_assert_int_eq(iod_session_from_state(&ctx, &st, lookup_fd, &t, &back), 0);
	/* the owner is the restore's to give back, once it knows who is still on the bus */
	ck_assert_ptr_null(back->owner);
	ck_assert_int_eq(iod_session_set_owner(back, st.owner), 0);

	ck_assert_int_eq(iod_session_to_state(back, &st2), 0);
	expect_same_state(&st, &st2);
	ck_assert(back->tracking);
	ck_assert(!back->failed);
	ck_assert_uint_eq(iod_session_pending_round(back), 1);
	ck_assert_uint_eq(back->log_bytes, s->log_bytes);
	ck_assert_int_eq(back->options.disconnect_policy, IOD_DISCONNECT_KEEP);
	/* the memory is mapped again from its fd, and the log has every bit */
	((char *)s->regions[1].va)[7] = 9;
	ck_assert_int_eq(((char *)back->regions[1].va)[7], 9);
	ck_assert_str_eq(back->regions[1].fdname, "vm/mem/300000");
	expect_ranges(back, true, false, 16, want, N(want), false);

	iod_state_session_clear(&st);
	iod_state_session_clear(&st2);
	iod_session_free(back);
	close(mem);
}
END_TEST

START_TEST(state_round_trip_keeps_a_failed_session_failed)
{
	struct iod_session *s = viommu_session("f"), *back = NULL;
	struct iod_state_session st = {};
	struct fd_table t = {};

	iod_session_fail(s, "test");
	ck_assert_int_eq(iod_session_to_state(s, &st), 0);
	ck_assert(st.flags & IOD_SESSION_F_FAILED);
	ck_assert_ptr_null(st.regions[0].fdname); /* adopt mode: the client's memory */

	fd_table_add(&t, st.log_fdname, iod_log_fd(s->log));
	/* an adopted session cannot come back without the client's iommufd */
	ck_assert_int_eq(iod_session_from_state(&ctx, &st, lookup_fd, &t, &back), -ENOENT);
	ck_assert_ptr_null(back);

	st.mode = IOD_MODE_OWNER; /* the same session as an owner's that never needed the kernel */
	ck_assert_int_eq(iod_session_from_state(&ctx, &st, lookup_fd, &t, &back), 0);
	ck_assert(back->failed);
	ck_assert_str_eq(back->failure, "the log was incomplete before the daemon restarted");
	ck_assert(!iod_session_log_complete(back));
	ck_assert_str_eq(iod_session_state_string(back), "failed");
	iod_state_session_clear(&st);
	iod_session_free(back);
}
END_TEST

START_TEST(state_keeps_the_mappings_of_an_adopted_session)
{
	static const struct iod_mapping maps[] = {{0x40000, REGION_GPA, 0x2000},
						  {0x10000, REGION_GPA + 0x4000, 0x1000}};
	struct iod_session *s = viommu_session("ad");
	struct iod_state_session st = {};
	struct iod_reason why;

	ck_assert_int_eq(map_batch(s, maps, N(maps), &why), 0);
	ck_assert_int_eq(iod_session_to_state(s, &st), 0);
	ck_assert_uint_eq(st.n_mappings, 2);
	ck_assert_uint_eq(st.mappings[0].iova, 0x10000); /* in IOVA order */
	ck_assert_uint_eq(st.mappings[1].gpa, REGION_GPA);
	ck_assert_int_eq(st.mode, IOD_MODE_ADOPT);
	expect_valid_document(&st);
	iod_state_session_clear(&st);
}
END_TEST

START_TEST(state_without_a_policy_takes_the_daemon_default)
{
	struct iod_state_session st = {
		.page_shift = 16,
		.flags = IOD_SESSION_F_HUGE_PAGES,
		.disconnect_policy = IOD_STATE_DISCONNECT_UNSET,
	};
	struct iod_session_options o;

	ctx.config.disconnect_policy = IOD_DISCONNECT_KEEP;
	iod_session_options_from_state(&ctx, &st, &o);
	ck_assert_uint_eq(o.page_size, 65536);
	ck_assert(o.huge_pages);
	ck_assert(!o.viommu);
	ck_assert_int_eq(o.disconnect_policy, IOD_DISCONNECT_KEEP);
	ctx.config.disconnect_policy = IOD_DISCONNECT_DESTROY;
	iod_session_options_from_state(&ctx, &st, &o);
	ck_assert_int_eq(o.disconnect_policy, IOD_DISCONNECT_DESTROY);
	st.disconnect_policy = IOD_STATE_DISCONNECT_KEEP;
	iod_session_options_from_state(&ctx, &st, &o);
	ck_assert_int_eq(o.disconnect_policy, IOD_DISCONNECT_KEEP);
}
END_TEST

static Suite *session_suite(void)
{
	Suite *s = suite_create("daemon session");
	TCase *tc;

	tc = tcase_create("vIOMMU events");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, map_batch_empty_maps_nothing);
	tcase_add_test(tc, map_batch_empty_entry_names_the_entry);
	tcase_add_test(tc, map_batch_unaligned_iova_names_the_entry);
	tcase_add_test(tc, map_batch_unaligned_gpa_names_the_entry);
	tcase_add_test(tc, map_batch_overflow_is_an_invalid_range);
	tcase_add_test(tc, map_batch_outside_guest_memory_names_the_entry);
	tcase_add_test(tc, map_batch_overlap_names_the_entry);
	tcase_add_test(tc, map_batch_same_entry_twice_overlaps);
	tcase_add_test(tc, map_batch_over_the_limit_is_refused_before_its_entries);
	tcase_add_test(tc, map_batch_at_the_limit_maps_every_entry);
	tcase_add_test(tc, map_batch_adding_over_the_mappings_limit_is_refused);
	tcase_add_test(tc, map_retry_of_a_recorded_mapping_succeeds_without_a_change);
	tcase_add_test(tc, map_over_an_existing_mapping_is_refused_without_an_index);
	tcase_add_test(tc, map_without_viommu_is_the_wrong_mode_but_bad_entries_come_first);
	tcase_add_test(tc, unmap_batch_entries_are_checked_and_named);
	tcase_add_test(tc, unmap_of_nothing_mapped_is_not_mapped);
	tcase_add_test(tc, unmap_that_cuts_a_mapping_is_refused);
	tcase_add_test(tc, unmap_batch_removes_whole_mappings);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, limits_table_knows_each_limit_with_its_range);
	tcase_add_test(tc, config_set_limit_names_what_is_wrong);
	tcase_add_test(tc, sessions_limit_counts_the_daemon_then_the_uid_but_not_root);
	tcase_add_test(tc, device_and_hwpt_limits_name_the_limit);
	tcase_add_test(tc, ranges_and_mapping_limits_name_the_limit);
	tcase_add_test(tc, region_limit_refuses_one_region_too_many);
	tcase_add_test(tc, log_bytes_limit_counts_both_planes);
	tcase_add_test(tc, log_bytes_per_user_limit_counts_every_session_of_the_uid);
	suite_add_tcase(s, tc);

	tc = tcase_create("guest memory");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, add_region_refuses_overlap_and_the_wrong_mode);
	tcase_add_test(tc, add_memory_refuses_what_is_not_guest_memory);
	tcase_add_test(tc, add_memory_without_iommufd_is_no_iommufd_and_changes_nothing);
	tcase_add_test(tc, add_memory_with_viommu_maps_the_fd_and_needs_no_kernel);
	suite_add_tcase(s, tc);

	tc = tcase_create("rounds");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, harvest_before_start_is_not_tracking);
	tcase_add_test(tc, harvest_starts_a_round_that_acknowledge_clears);
	tcase_add_test(tc, failed_session_refuses_start_and_harvest);
	tcase_add_test(tc, dirty_ranges_merge_neighbouring_pages_in_gpa_space);
	tcase_add_test(tc, dirty_ranges_in_iova_space_translate_through_the_map);
	tcase_add_test(tc, dirty_ranges_in_iova_space_refuse_pages_no_iova_maps);
	tcase_add_test(tc, unmap_marks_a_fallback_range_dirty_before_it_goes);
	suite_add_tcase(s, tc);

	tc = tcase_create("lifecycle");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, state_string_follows_owner_tracking_and_failure);
	tcase_add_test(tc, tracking_mode_and_precise_follow_the_hwpts);
	tcase_add_test(tc, session_new_refuses_bad_names_and_page_sizes);
	tcase_add_test(tc, owner_leaving_destroys_or_orphans_as_the_policy_says);
	suite_add_tcase(s, tc);

	tc = tcase_create("persistent state");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, state_round_trip_keeps_an_owner_session_without_kernel_objects);
	tcase_add_test(tc, state_round_trip_keeps_a_failed_session_failed);
	tcase_add_test(tc, state_keeps_the_mappings_of_an_adopted_session);
	tcase_add_test(tc, state_without_a_policy_takes_the_daemon_default);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(session_suite());
	int failures;

	srunner_run_all(sr, CK_NORMAL);
	failures = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failures ? 1 : 0;
}
