/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * IOVA -> GPA map: exact behaviour of insert/remove/lookup/foreach, a randomized comparison
 * against a page-array model, and a 200k-entry run that checks the tree invariants (AVL
 * balance included) through the private debug hooks.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iodirty.h"
#include "iova-map-internal.h"

#define PAGE UINT64_C(0x1000)

/*
 * Hot-loop assertions: check's ck_assert_* record a checkpoint with a system call each time,
 * which dominates loops of millions of checks. These only call into check on failure.
 */
#define REQUIRE(cond, ...)                         \
	do {                                       \
		if (!(cond))                       \
			ck_abort_msg(__VA_ARGS__); \
	} while (0)
#define REQUIRE_EQ(a, b)                                                                       \
	do {                                                                                   \
		int64_t _a = (int64_t)(a), _b = (int64_t)(b);                                  \
		if (_a != _b)                                                                  \
			ck_abort_msg("%s == %s failed: %" PRId64 " (%#" PRIx64 ") != %" PRId64 \
				     " (%#" PRIx64 ")",                                        \
				     #a, #b, _a, (uint64_t)_a, _b, (uint64_t)_b);              \
	} while (0)

static struct iod_iova_map *m;

static void setup(void)
{
	m = NULL;
	ck_assert_int_eq(iod_iova_map_new(&m), 0);
	ck_assert_ptr_nonnull(m);
}

static void teardown(void)
{
	iod_iova_map_debug_fail_allocs(0);
	m = iod_iova_map_free(m);
}

static void assert_consistent(void)
{
	ck_assert_int_eq(iod_iova_map_check_invariants(m), 0);
}

/* Collect the whole map through first/next. */
static size_t collect(struct iod_mapping *out, size_t max)
{
	size_t n = 0;

	for (const struct iod_mapping *e = iod_iova_map_first(m); e; e = iod_iova_map_next(m, e)) {
		ck_assert_uint_lt(n, max);
		out[n++] = *e;
	}
	ck_assert_uint_eq(n, iod_iova_map_count(m));
	return n;
}

/* Assert the map holds exactly these entries, in this order. */
static void expect_entries(const struct iod_mapping *want, size_t n_want)
{
	struct iod_mapping got[64];
	uint64_t bytes = 0;
	size_t n;

	n = collect(got, ELEMENTSOF(got));
	ck_assert_uint_eq(n, n_want);
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(got[i].iova == want[i].iova && got[i].gpa == want[i].gpa &&
				      got[i].length == want[i].length,
			      "entry %zu: got {%#" PRIx64 ", %#" PRIx64 ", %#" PRIx64
			      "}, want {%#" PRIx64 ", %#" PRIx64 ", %#" PRIx64 "}",
			      i, got[i].iova, got[i].gpa, got[i].length, want[i].iova, want[i].gpa,
			      want[i].length);
		bytes += want[i].length;
	}
	ck_assert_uint_eq(iod_iova_map_bytes(m), bytes);
	assert_consistent();
}

#define EXPECT(...)                                               \
	do {                                                      \
		const struct iod_mapping _want[] = {__VA_ARGS__}; \
		expect_entries(_want, ELEMENTSOF(_want));         \
	} while (0)
#define EXPECT_EMPTY() expect_entries(NULL, 0)
#define E(i, g, l)                                     \
	{                                              \
		.iova = (i), .gpa = (g), .length = (l) \
	}

/* ---------------------------------------------------------------------------------------- */

START_TEST(test_empty)
{
	struct iod_mapping e;
	uint64_t gpa = 7, removed = 7;

	ck_assert_uint_eq(iod_iova_map_count(m), 0);
	ck_assert_uint_eq(iod_iova_map_bytes(m), 0);
	ck_assert_ptr_null(iod_iova_map_first(m));
	ck_assert_int_eq(iod_iova_map_lookup(m, 0, &e), -ENOENT);
	ck_assert_int_eq(iod_iova_map_translate(m, 0, &gpa), -ENOENT);
	ck_assert_uint_eq(gpa, 7);
	ck_assert_int_eq(iod_iova_map_remove(m, 0, PAGE, &removed), 0);
	ck_assert_uint_eq(removed, 0);
	ck_assert_uint_eq(iod_iova_map_height(m), 0);
	assert_consistent();

	/* NULL is accepted by the destructor and the queries. */
	ck_assert_ptr_null(iod_iova_map_free(NULL));
	ck_assert_uint_eq(iod_iova_map_count(NULL), 0);
	ck_assert_uint_eq(iod_iova_map_bytes(NULL), 0);
	ck_assert_ptr_null(iod_iova_map_first(NULL));
	ck_assert_int_eq(iod_iova_map_new(NULL), -EINVAL);
}
END_TEST

START_TEST(test_insert_lookup_translate)
{
	struct iod_mapping e;
	uint64_t gpa;

	/* Out of order on purpose; IOVA != GPA and one alias of the same GPA. */
	ck_assert_int_eq(iod_iova_map_insert(m, 0x40000, 0x9000000, 0x2000), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 0x10000, 0x100000, 0x4000), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 0x80000, 0x100000, 0x1000), 0);
	EXPECT(E(0x10000, 0x100000, 0x4000), E(0x40000, 0x9000000, 0x2000),
	       E(0x80000, 0x100000, 0x1000));
	ck_assert_uint_eq(iod_iova_map_count(m), 3);
	ck_assert_uint_eq(iod_iova_map_bytes(m), 0x7000);

	/* lookup returns the whole entry from any byte inside it */
	for (uint64_t a = 0x10000; a < 0x14000; a += 0x7ff) {
		memset(&e, 0, sizeof(e));
		ck_assert_int_eq(iod_iova_map_lookup(m, a, &e), 0);
		ck_assert_uint_eq(e.iova, 0x10000);
		ck_assert_uint_eq(e.gpa, 0x100000);
		ck_assert_uint_eq(e.length, 0x4000);
		ck_assert_int_eq(iod_iova_map_translate(m, a, &gpa), 0);
		ck_assert_uint_eq(gpa, 0x100000 + (a - 0x10000));
	}
	ck_assert_int_eq(iod_iova_map_lookup(m, 0x13fff, &e), 0);
	ck_assert_uint_eq(e.iova, 0x10000);
	ck_assert_int_eq(iod_iova_map_translate(m, 0x41234, &gpa), 0);
	ck_assert_uint_eq(gpa, 0x9001234);
	ck_assert_int_eq(iod_iova_map_translate(m, 0x80fff, &gpa), 0);
	ck_assert_uint_eq(gpa, 0x100fff);

	/* just outside every entry */
	e = (struct iod_mapping){1, 2, 3};
	gpa = 42;
	ck_assert_int_eq(iod_iova_map_lookup(m, 0xffff, &e), -ENOENT);
	ck_assert_int_eq(iod_iova_map_lookup(m, 0x14000, &e), -ENOENT);
	ck_assert_int_eq(iod_iova_map_lookup(m, 0x42000, &e), -ENOENT);
	ck_assert_int_eq(iod_iova_map_lookup(m, 0x81000, &e), -ENOENT);
	ck_assert_int_eq(iod_iova_map_lookup(m, 0, &e), -ENOENT);
	ck_assert_int_eq(iod_iova_map_lookup(m, UINT64_MAX, &e), -ENOENT);
	ck_assert_int_eq(iod_iova_map_translate(m, 0x3ffff, &gpa), -ENOENT);
	/* ret_* untouched on failure */
	ck_assert_uint_eq(e.iova, 1);
	ck_assert_uint_eq(e.gpa, 2);
	ck_assert_uint_eq(e.length, 3);
	ck_assert_uint_eq(gpa, 42);
}
END_TEST

START_TEST(test_insert_byte_granular)
{
	uint64_t gpa;

	/* The map itself does not care about pages. */
	ck_assert_int_eq(iod_iova_map_insert(m, 1, 100, 1), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 2, 7, 3), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 0, 0, 1), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 4, 0, 1), -EEXIST);
	ck_assert_int_eq(iod_iova_map_insert(m, 5, 0, 1), 0);
	ck_assert_int_eq(iod_iova_map_remove(m, 5, 1, NULL), 0);
	EXPECT(E(0, 0, 1), E(1, 100, 1), E(2, 7, 3));
	ck_assert_int_eq(iod_iova_map_translate(m, 4, &gpa), 0);
	ck_assert_uint_eq(gpa, 9);
	ck_assert_int_eq(iod_iova_map_translate(m, 5, &gpa), -ENOENT);
}
END_TEST

START_TEST(test_insert_zero_length)
{
	ck_assert_int_eq(iod_iova_map_insert(m, 0x1000, 0x1000, 0x1000), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 0x5000, 0x5000, 0), -EINVAL);
	/* zero length inside an entry is still EINVAL, not EEXIST */
	ck_assert_int_eq(iod_iova_map_insert(m, 0x1000, 0x1000, 0), -EINVAL);
	EXPECT(E(0x1000, 0x1000, 0x1000));
}
END_TEST

/* Range checks shared by insert, remove and foreach. */
static const struct overflow_case {
	uint64_t iova, gpa, length;
	int insert; /* expected from insert; remove/foreach only look at iova/length */
	int range; /* expected from remove and foreach */
} overflow_cases[] = {
	{UINT64_MAX - 4095, 0x1000, 8192, -EOVERFLOW, -EOVERFLOW},
	{UINT64_MAX, 0, 1, -EOVERFLOW, -EOVERFLOW},
	{0x1000, 0, UINT64_MAX, -EOVERFLOW, -EOVERFLOW},
	{UINT64_MAX - 4095, 0, 4096, -EOVERFLOW, -EOVERFLOW}, /* ends exactly at 2^64 */
	{0x1000, UINT64_MAX - 4095, 8192, -EOVERFLOW, 0}, /* only the GPA wraps */
	{0x1000, UINT64_MAX - 4095, 4096, -EOVERFLOW, 0},
	{0x1000, UINT64_MAX - 8191, 4096, 0, 0}, /* GPA ends 4 KiB below 2^64 */
	{UINT64_MAX - 8191, 0x1000, 4096, 0, 0}, /* IOVA ends 4 KiB below 2^64 */
	{UINT64_MAX - 1, UINT64_MAX - 1, 1, 0, 0}, /* the last byte that can be mapped */
	{0, 0, UINT64_MAX, 0, 0}, /* everything but the last byte */
	{0x1000, 0x1000, 0, -EINVAL, -EINVAL},
};

static int count_cb(const struct iod_mapping *piece, void *userdata)
{
	(*(unsigned *)userdata)++;
	return 0;
}

START_TEST(test_range_overflow)
{
	const struct overflow_case *c = &overflow_cases[_i];
	uint64_t removed = 0xdead;
	unsigned calls = 0;

	ck_assert_int_eq(iod_iova_map_insert(m, c->iova, c->gpa, c->length), c->insert);
	if (c->insert == 0) {
		EXPECT(E(c->iova, c->gpa, c->length));
	} else
		EXPECT_EMPTY();

	ck_assert_int_eq(iod_iova_map_foreach(m, c->iova, c->length, count_cb, &calls), c->range);
	ck_assert_uint_eq(calls, c->range == 0 && c->insert == 0 ? 1 : 0);

	ck_assert_int_eq(iod_iova_map_remove(m, c->iova, c->length, &removed), c->range);
	if (c->range == 0)
		ck_assert_uint_eq(removed, c->insert == 0 ? c->length : 0);
	else
		ck_assert_uint_eq(removed, 0xdead);
	EXPECT_EMPTY();
}
END_TEST

/* Every way a new range can meet the existing [0x10000, 0x14000). */
static const struct overlap_case {
	const char *what;
	uint64_t iova, length;
	int expect;
} overlap_cases[] = {
	{"same", 0x10000, 0x4000, -EEXIST},
	{"inside", 0x11000, 0x1000, -EEXIST},
	{"inside, one byte", 0x12345, 1, -EEXIST},
	{"covering", 0xf000, 0x6000, -EEXIST},
	{"covering almost everything", 0, UINT64_MAX - 0x1000000, -EEXIST},
	{"left edge", 0xe000, 0x3000, -EEXIST},
	{"left edge, one byte", 0xe000, 0x2001, -EEXIST},
	{"right edge", 0x13000, 0x3000, -EEXIST},
	{"right edge, one byte", 0x13fff, 0x3000, -EEXIST},
	{"same start, longer", 0x10000, 0x8000, -EEXIST},
	{"same end, shorter", 0x12000, 0x2000, -EEXIST},
	{"touching left", 0xc000, 0x4000, 0},
	{"touching right", 0x14000, 0x4000, 0},
	{"apart", 0x100000, 0x1000, 0},
};

START_TEST(test_overlap)
{
	const struct overlap_case *c = &overlap_cases[_i];

	ck_assert_int_eq(iod_iova_map_insert(m, 0x10000, 0x500000, 0x4000), 0);
	ck_assert_msg(iod_iova_map_insert(m, c->iova, 0x900000, c->length) == c->expect, "%s",
		      c->what);
	if (c->expect < 0) {
		EXPECT(E(0x10000, 0x500000, 0x4000));
	} else {
		ck_assert_uint_eq(iod_iova_map_count(m), 2);
		ck_assert_uint_eq(iod_iova_map_bytes(m), 0x4000 + c->length);
		assert_consistent();
	}
}
END_TEST

START_TEST(test_overlap_between_two)
{
	/* A range filling a hole exactly fits; one byte more on either side does not. */
	ck_assert_int_eq(iod_iova_map_insert(m, 0x1000, 0x1000, 0x1000), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 0x4000, 0x4000, 0x1000), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 0x1fff, 0, 0x2000), -EEXIST);
	ck_assert_int_eq(iod_iova_map_insert(m, 0x2000, 0, 0x2001), -EEXIST);
	ck_assert_int_eq(iod_iova_map_insert(m, 0, 0, 0x10000), -EEXIST);
	ck_assert_int_eq(iod_iova_map_insert(m, 0x2000, 0x70000, 0x2000), 0);
	EXPECT(E(0x1000, 0x1000, 0x1000), E(0x2000, 0x70000, 0x2000), E(0x4000, 0x4000, 0x1000));
}
END_TEST

START_TEST(test_adjacent_kept_separate)
{
	uint64_t removed;
	struct iod_mapping e;

	/* Adjacent in both IOVA and GPA: still two entries. */
	ck_assert_int_eq(iod_iova_map_insert(m, 0x1000, 0x1000, 0x1000), 0);
	ck_assert_int_eq(iod_iova_map_insert(m, 0x2000, 0x2000, 0x1000), 0);
	EXPECT(E(0x1000, 0x1000, 0x1000), E(0x2000, 0x2000, 0x1000));
	ck_assert_int_eq(iod_iova_map_lookup(m, 0x2000, &e), 0);
	ck_assert_uint_eq(e.iova, 0x2000);
	ck_assert_uint_eq(e.length, 0x1000);

	ck_assert_int_eq(iod_iova_map_remove(m, 0x1000, 0x1000, &removed), 0);
	ck_assert_uint_eq(removed, 0x1000);
	EXPECT(E(0x2000, 0x2000, 0x1000));
}
END_TEST

/* Layout for the removal tests: three entries with holes between them. */
static void three_entries(void)
{
	ck_assert_int_eq(iod_iova_map_insert(m, 0x10000, 0x800000, 0x4000), 0); /* A */
	ck_assert_int_eq(iod_iova_map_insert(m, 0x20000, 0x300000, 0x2000), 0); /* B */
	ck_assert_int_eq(iod_iova_map_insert(m, 0x30000, 0x100000, 0x8000), 0); /* C */
}

static const struct remove_case {
	const char *what;
	uint64_t iova, length, removed;
	struct iod_mapping after[4];
	size_t n_after;
} remove_cases[] = {
	{"exact A",
	 0x10000,
	 0x4000,
	 0x4000,
	 {E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000)},
	 2},
	{"exact B",
	 0x20000,
	 0x2000,
	 0x2000,
	 {E(0x10000, 0x800000, 0x4000), E(0x30000, 0x100000, 0x8000)},
	 2},
	{"left part of A",
	 0x10000,
	 0x1000,
	 0x1000,
	 {E(0x11000, 0x801000, 0x3000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000)},
	 3},
	{"left part of A from a hole",
	 0x8000,
	 0x9000,
	 0x1000,
	 {E(0x11000, 0x801000, 0x3000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000)},
	 3},
	{"right part of A",
	 0x13000,
	 0x1000,
	 0x1000,
	 {E(0x10000, 0x800000, 0x3000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000)},
	 3},
	{"right part of A into a hole",
	 0x12000,
	 0x8000,
	 0x2000,
	 {E(0x10000, 0x800000, 0x2000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000)},
	 3},
	{"middle of C",
	 0x32000,
	 0x3000,
	 0x3000,
	 {E(0x10000, 0x800000, 0x4000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x2000),
	  E(0x35000, 0x105000, 0x3000)},
	 4},
	{"one byte in the middle of C",
	 0x34567,
	 1,
	 1,
	 {E(0x10000, 0x800000, 0x4000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x4567),
	  E(0x34568, 0x104568, 0x3a98)},
	 4},
	{"tail of A, all of B, head of C",
	 0x11000,
	 0x21000,
	 0x3000 + 0x2000 + 0x2000,
	 {E(0x10000, 0x800000, 0x1000), E(0x32000, 0x102000, 0x6000)},
	 2},
	{"A and B whole, with the holes", 0x8000, 0x20000, 0x6000, {E(0x30000, 0x100000, 0x8000)}, 1},
	{"everything", 0, 0x100000, 0xe000, {}, 0},
	{"a hole",
	 0x14000,
	 0xc000,
	 0,
	 {E(0x10000, 0x800000, 0x4000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000)},
	 3},
	{"beyond the last entry",
	 0x38000,
	 0x100000,
	 0,
	 {E(0x10000, 0x800000, 0x4000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000)},
	 3},
};

START_TEST(test_remove)
{
	const struct remove_case *c = &remove_cases[_i];
	uint64_t removed = 0xdead;

	three_entries();
	ck_assert_msg(iod_iova_map_remove(m, c->iova, c->length, &removed) == 0, "%s", c->what);
	ck_assert_msg(removed == c->removed, "%s: removed %#" PRIx64 ", want %#" PRIx64, c->what,
		      removed, c->removed);
	expect_entries(c->after, c->n_after);
}
END_TEST

START_TEST(test_remove_null_removed)
{
	three_entries();
	ck_assert_int_eq(iod_iova_map_remove(m, 0x11000, 0x1000, NULL), 0);
	EXPECT(E(0x10000, 0x800000, 0x1000), E(0x12000, 0x802000, 0x2000),
	       E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000));
	ck_assert_int_eq(iod_iova_map_remove(m, 0x11000, 0, NULL), -EINVAL);
}
END_TEST

START_TEST(test_remove_split_enomem)
{
	uint64_t removed = 0xdead;

	three_entries();

	/* A split needs a node: with allocation failing the map is left as it was. */
	iod_iova_map_debug_fail_allocs(1);
	ck_assert_int_eq(iod_iova_map_remove(m, 0x32000, 0x1000, &removed), -ENOMEM);
	ck_assert_uint_eq(removed, 0xdead);
	EXPECT(E(0x10000, 0x800000, 0x4000), E(0x20000, 0x300000, 0x2000),
	       E(0x30000, 0x100000, 0x8000));

	/* Trimming and whole-entry removal allocate nothing. */
	iod_iova_map_debug_fail_allocs(1);
	ck_assert_int_eq(iod_iova_map_remove(m, 0x12000, 0x10000, &removed), 0);
	ck_assert_uint_eq(removed, 0x4000);
	EXPECT(E(0x10000, 0x800000, 0x2000), E(0x30000, 0x100000, 0x8000));

	/* Insert too. */
	ck_assert_int_eq(iod_iova_map_insert(m, 0x50000, 0x50000, 0x1000), -ENOMEM);
	EXPECT(E(0x10000, 0x800000, 0x2000), E(0x30000, 0x100000, 0x8000));

	/* The hook is spent: the same split now works. */
	ck_assert_int_eq(iod_iova_map_remove(m, 0x32000, 0x1000, &removed), 0);
	ck_assert_uint_eq(removed, 0x1000);
	EXPECT(E(0x10000, 0x800000, 0x2000), E(0x30000, 0x100000, 0x2000),
	       E(0x33000, 0x103000, 0x5000));
}
END_TEST

struct pieces {
	struct iod_mapping p[16];
	size_t n;
	size_t stop_at; /* return stop_ret when this many pieces were seen */
	int stop_ret;
};

static int pieces_cb(const struct iod_mapping *piece, void *userdata)
{
	struct pieces *ps = userdata;

	ck_assert_uint_lt(ps->n, ELEMENTSOF(ps->p));
	ps->p[ps->n++] = *piece;
	return ps->n == ps->stop_at ? ps->stop_ret : 0;
}

static const struct foreach_case {
	const char *what;
	uint64_t iova, length;
	struct iod_mapping pieces[4];
	size_t n_pieces;
} foreach_cases[] = {
	{"all",
	 0,
	 0x100000,
	 {E(0x10000, 0x800000, 0x4000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x8000)},
	 3},
	{"clipped both ends",
	 0x12000,
	 0x1f000,
	 {E(0x12000, 0x802000, 0x2000), E(0x20000, 0x300000, 0x2000), E(0x30000, 0x100000, 0x1000)},
	 3},
	{"inside one entry", 0x31000, 0x2000, {E(0x31000, 0x101000, 0x2000)}, 1},
	{"one byte", 0x37fff, 1, {E(0x37fff, 0x107fff, 1)}, 1},
	{"exact entry", 0x20000, 0x2000, {E(0x20000, 0x300000, 0x2000)}, 1},
	{"hole only", 0x14000, 0xc000, {}, 0},
	{"ends where B starts", 0x13000, 0xd000, {E(0x13000, 0x803000, 0x1000)}, 1},
	{"starts where A ends", 0x14000, 0xd000, {E(0x20000, 0x300000, 0x1000)}, 1},
	{"beyond", 0x38000, 0x1000, {}, 0},
};

START_TEST(test_foreach)
{
	const struct foreach_case *c = &foreach_cases[_i];
	struct pieces ps = {};

	three_entries();
	ck_assert_int_eq(iod_iova_map_foreach(m, c->iova, c->length, pieces_cb, &ps), 0);
	ck_assert_msg(ps.n == c->n_pieces, "%s: %zu pieces, want %zu", c->what, ps.n, c->n_pieces);
	for (size_t i = 0; i < ps.n; i++)
		ck_assert_msg(ps.p[i].iova == c->pieces[i].iova &&
				      ps.p[i].gpa == c->pieces[i].gpa &&
				      ps.p[i].length == c->pieces[i].length,
			      "%s: piece %zu is {%#" PRIx64 ", %#" PRIx64 ", %#" PRIx64 "}",
			      c->what, i, ps.p[i].iova, ps.p[i].gpa, ps.p[i].length);
	/* the walk does not change the map */
	EXPECT(E(0x10000, 0x800000, 0x4000), E(0x20000, 0x300000, 0x2000),
	       E(0x30000, 0x100000, 0x8000));
}
END_TEST

START_TEST(test_foreach_stop)
{
	struct pieces ps = {.stop_at = 2, .stop_ret = 42};

	three_entries();
	ck_assert_int_eq(iod_iova_map_foreach(m, 0, 0x100000, pieces_cb, &ps), 42);
	ck_assert_uint_eq(ps.n, 2);

	ps = (struct pieces){.stop_at = 1, .stop_ret = -EIO};
	ck_assert_int_eq(iod_iova_map_foreach(m, 0x30000, 0x1000, pieces_cb, &ps), -EIO);
	ck_assert_uint_eq(ps.n, 1);

	ck_assert_int_eq(iod_iova_map_foreach(m, 0, 0x1000, NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_iteration)
{
	const struct iod_mapping *e;

	three_entries();
	e = iod_iova_map_first(m);
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->iova, 0x10000);
	e = iod_iova_map_next(m, e);
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->iova, 0x20000);
	e = iod_iova_map_next(m, e);
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->iova, 0x30000);
	ck_assert_ptr_null(iod_iova_map_next(m, e));
	ck_assert_ptr_null(iod_iova_map_next(m, NULL));
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Randomized comparison against a page array. */

#define NP 512 /* units in the modelled window */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

struct ref_unit {
	bool mapped;
	unsigned id; /* entry identity: an entry is a maximal run of one id */
	uint64_t gpa;
};

static const struct random_variant {
	uint64_t unit; /* bytes per modelled unit */
	uint64_t base; /* IOVA of unit 0 */
	uint64_t seed;
} random_variants[] = {
	{1, 0, 0x1234},
	{PAGE, 0, 0x5eed},
	{PAGE, UINT64_MAX - (NP + 1) * PAGE + 1, 0xfeedface}, /* the top of the space */
	{UINT64_C(1) << 21, UINT64_C(1) << 40, 0xc0ffee},
};

struct ref_pieces {
	const struct ref_unit *ref;
	const struct random_variant *v;
	uint64_t seed;
	unsigned op;
	size_t expected_unit; /* next unit to match */
	size_t end_unit;
	size_t n;
};

/* The next run of mapped units of one id in [*u, end): start and length in units. */
static bool ref_next_run(const struct ref_unit *ref, size_t *u, size_t end, size_t *ret_start,
			 size_t *ret_len)
{
	size_t s = *u, e;

	while (s < end && !ref[s].mapped)
		s++;
	if (s >= end)
		return false;
	e = s + 1;
	while (e < end && ref[e].mapped && ref[e].id == ref[s].id)
		e++;
	*ret_start = s;
	*ret_len = e - s;
	*u = e;
	return true;
}

static int ref_pieces_cb(const struct iod_mapping *piece, void *userdata)
{
	struct ref_pieces *rp = userdata;
	size_t s, l;
	const struct random_variant *v = rp->v;

	REQUIRE(ref_next_run(rp->ref, &rp->expected_unit, rp->end_unit, &s, &l),
		"seed %#" PRIx64 " op %u: extra piece at %#" PRIx64, rp->seed, rp->op, piece->iova);
	REQUIRE(piece->iova == v->base + s * v->unit && piece->length == l * v->unit &&
			piece->gpa == rp->ref[s].gpa,
		"seed %#" PRIx64 " op %u: piece {%#" PRIx64 ", %#" PRIx64 ", %#" PRIx64
		"} != unit %zu + %zu",
		rp->seed, rp->op, piece->iova, piece->gpa, piece->length, s, l);
	rp->n++;
	return 0;
}

static void compare_with_ref(const struct ref_unit *ref, const struct random_variant *v,
			     unsigned op)
{
	const struct iod_mapping *e = iod_iova_map_first(m);
	size_t u = 0, s, l, n = 0, mapped_units = 0;

	REQUIRE(iod_iova_map_check_invariants(m) == 0, "seed %#" PRIx64 " op %u: invariants",
		v->seed, op);
	while (ref_next_run(ref, &u, NP, &s, &l)) {
		REQUIRE(e, "seed %#" PRIx64 " op %u: map ends before unit %zu", v->seed, op, s);
		REQUIRE(e->iova == v->base + s * v->unit && e->length == l * v->unit &&
				e->gpa == ref[s].gpa,
			"seed %#" PRIx64 " op %u: entry {%#" PRIx64 ", %#" PRIx64 ", %#" PRIx64
			"} != units %zu + %zu at gpa %#" PRIx64,
			v->seed, op, e->iova, e->gpa, e->length, s, l, ref[s].gpa);
		mapped_units += l;
		n++;
		e = iod_iova_map_next(m, e);
	}
	REQUIRE(!e, "seed %#" PRIx64 " op %u: extra entries", v->seed, op);
	REQUIRE_EQ(iod_iova_map_count(m), n);
	REQUIRE_EQ(iod_iova_map_bytes(m), mapped_units * v->unit);
}

START_TEST(test_random_vs_reference)
{
	const struct random_variant *v = &random_variants[_i];
	struct ref_unit ref[NP] = {};
	unsigned next_id = 1;
	const unsigned ops = 20000;

	rng_state = v->seed;
	for (unsigned op = 0; op < ops; op++) {
		size_t s = rnd_below(NP), l, mapped = 0;
		unsigned what = rnd_below(10);

		if (what < 5) {
			/* insert */
			uint64_t gpa = rnd_below(UINT64_C(1) << 50) * v->unit;
			int r, want;

			l = 1 + rnd_below(24);
			if (s + l > NP)
				l = NP - s;
			for (size_t i = s; i < s + l; i++)
				mapped += ref[i].mapped;
			want = mapped ? -EEXIST : 0;
			r = iod_iova_map_insert(m, v->base + s * v->unit, gpa, l * v->unit);
			REQUIRE(r == want,
				"seed %#" PRIx64 " op %u: insert units %zu+%zu: %d, want %d",
				v->seed, op, s, l, r, want);
			if (r == 0) {
				for (size_t i = 0; i < l; i++)
					ref[s + i] = (struct ref_unit){true, next_id,
								       gpa + i * v->unit};
				next_id++;
			}
		} else if (what < 9) {
			/* remove */
			uint64_t removed = 0;

			l = 1 + rnd_below(64);
			if (s + l > NP)
				l = NP - s;
			for (size_t i = s; i < s + l; i++) {
				mapped += ref[i].mapped;
				ref[i].mapped = false;
			}
			REQUIRE(iod_iova_map_remove(m, v->base + s * v->unit, l * v->unit,
						    &removed) == 0,
				"seed %#" PRIx64 " op %u: remove", v->seed, op);
			REQUIRE(removed == mapped * v->unit,
				"seed %#" PRIx64 " op %u: remove units %zu+%zu removed %#" PRIx64
				", want %zu units",
				v->seed, op, s, l, removed, mapped);
		} else {
			/* foreach over a random window: the model's runs cut at the window */
			struct ref_pieces rp;
			size_t u, ss = 0, ll = 0;

			l = 1 + rnd_below(NP - s);
			rp = (struct ref_pieces){.ref = ref,
						 .v = v,
						 .seed = v->seed,
						 .op = op,
						 .expected_unit = s,
						 .end_unit = s + l};
			REQUIRE_EQ(iod_iova_map_foreach(m, v->base + s * v->unit, l * v->unit,
							ref_pieces_cb, &rp),
				   0);
			u = rp.expected_unit;
			REQUIRE(!ref_next_run(ref, &u, s + l, &ss, &ll),
				"seed %#" PRIx64 " op %u: foreach missed units %zu+%zu", v->seed,
				op, ss, ll);
		}

		compare_with_ref(ref, v, op);

		/* spot lookups, including inside a unit */
		for (unsigned k = 0; k < 4; k++) {
			size_t u = rnd_below(NP);
			uint64_t off = rnd_below(v->unit), gpa = 0;
			int r = iod_iova_map_translate(m, v->base + u * v->unit + off, &gpa);

			if (ref[u].mapped)
				REQUIRE(r == 0 && gpa == ref[u].gpa + off,
					"seed %#" PRIx64 " op %u: translate unit %zu", v->seed, op,
					u);
			else
				REQUIRE(r == -ENOENT,
					"seed %#" PRIx64 " op %u: unit %zu should be unmapped",
					v->seed, op, u);
		}
	}
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* 200k entries. */

#define BIG 200000

/*
 * The AVL bound: a tree of height h holds at least N(h) nodes, N(h) = N(h-1) + N(h-2) + 1
 * (the sparsest AVL trees). So n entries allow at most the largest h with N(h) <= n.
 */
static unsigned avl_max_height(size_t n)
{
	size_t a = 0, b = 1; /* N(h - 1), N(h) */
	unsigned h = 1;

	if (n == 0)
		return 0;
	for (;;) {
		size_t c = a + b + 1; /* N(h + 1) */

		if (c > n)
			return h;
		a = b;
		b = c;
		h++;
	}
}

static void assert_balanced(size_t n)
{
	unsigned h = iod_iova_map_height(m);

	REQUIRE_EQ(iod_iova_map_check_invariants(m), 0);
	REQUIRE(h <= avl_max_height(n), "height %u with %zu entries exceeds the AVL bound %u", h, n,
		avl_max_height(n));
}

static uint64_t big_gpa(size_t i)
{
	return (UINT64_C(0x100000000) + (uint64_t)i * 0x7000) ^ ((uint64_t)(i & 0xff) << 40);
}

static uint64_t big_len(size_t i)
{
	return (1 + i % 2) * PAGE;
}

static void shuffle(size_t *a, size_t n)
{
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = rnd_below(i + 1), t = a[i];

		a[i] = a[j];
		a[j] = t;
	}
}

START_TEST(test_big_random_order)
{
	_cleanup_free_ size_t *order = malloc(BIG * sizeof(*order));
	_cleanup_free_ bool *gone = calloc(BIG, sizeof(*gone));
	uint64_t bytes = 0, removed;
	size_t count = BIG;

	ck_assert_ptr_nonnull(order);
	ck_assert_ptr_nonnull(gone);
	rng_state = 0xb16;
	for (size_t i = 0; i < BIG; i++)
		order[i] = i;
	shuffle(order, BIG);

	/* slot i lives at 3 pages * i, so there is always a hole after each entry */
	for (size_t k = 0; k < BIG; k++) {
		size_t i = order[k];

		REQUIRE_EQ(iod_iova_map_insert(m, i * 3 * PAGE, big_gpa(i), big_len(i)), 0);
		bytes += big_len(i);
	}
	REQUIRE_EQ(iod_iova_map_count(m), BIG);
	REQUIRE_EQ(iod_iova_map_bytes(m), bytes);
	assert_balanced(BIG);

	for (size_t i = 0; i < BIG; i++) {
		struct iod_mapping e;

		REQUIRE_EQ(iod_iova_map_lookup(m, i * 3 * PAGE + big_len(i) - 1, &e), 0);
		REQUIRE_EQ(e.iova, i * 3 * PAGE);
		REQUIRE_EQ(e.gpa, big_gpa(i));
		REQUIRE_EQ(e.length, big_len(i));
		REQUIRE_EQ(iod_iova_map_lookup(m, i * 3 * PAGE + big_len(i), &e), -ENOENT);
	}

	/* remove half, in random order */
	shuffle(order, BIG);
	for (size_t k = 0; k < BIG / 2; k++) {
		size_t i = order[k];

		REQUIRE_EQ(iod_iova_map_remove(m, i * 3 * PAGE, big_len(i), &removed), 0);
		REQUIRE_EQ(removed, big_len(i));
		gone[i] = true;
		bytes -= big_len(i);
		count--;
		if (k % 20000 == 0)
			assert_balanced(count);
	}
	REQUIRE_EQ(iod_iova_map_count(m), count);
	REQUIRE_EQ(iod_iova_map_bytes(m), bytes);
	assert_balanced(count);

	for (size_t i = 0; i < BIG; i++) {
		uint64_t gpa;
		int r = iod_iova_map_translate(m, i * 3 * PAGE + 5, &gpa);

		if (gone[i])
			REQUIRE_EQ(r, -ENOENT);
		else {
			REQUIRE_EQ(r, 0);
			REQUIRE_EQ(gpa, big_gpa(i) + 5);
		}
	}

	/* one removal across a quarter of the space: many entries at once, splits at both
	 * ends when those entries survived */
	{
		uint64_t lo = (BIG / 4) * 3 * PAGE + PAGE / 2, hi = (BIG / 2) * 3 * PAGE + 10;
		uint64_t want = 0;

		for (size_t i = BIG / 4; i <= BIG / 2; i++) {
			uint64_t s = i * 3 * PAGE, e = s + big_len(i);

			if (gone[i])
				continue;
			s = s < lo ? lo : s;
			e = e > hi ? hi : e;
			if (e > s)
				want += e - s;
		}
		REQUIRE_EQ(iod_iova_map_remove(m, lo, hi - lo, &removed), 0);
		REQUIRE_EQ(removed, want);
		bytes -= want;
		REQUIRE_EQ(iod_iova_map_bytes(m), bytes);
		assert_balanced(iod_iova_map_count(m));
	}
}
END_TEST

static const struct order_variant {
	const char *what;
	bool descending;
} order_variants[] = {
	{"ascending", false},
	{"descending", true},
};

START_TEST(test_big_sorted_order)
{
	const struct order_variant *v = &order_variants[_i];
	size_t n = 0;
	const struct iod_mapping *e;

	/* Sorted input degenerates an unbalanced tree into a list. */
	for (size_t k = 0; k < BIG; k++) {
		size_t i = v->descending ? BIG - 1 - k : k;

		REQUIRE_EQ(iod_iova_map_insert(m, i * PAGE, i * PAGE, PAGE), 0);
	}
	assert_balanced(BIG);
	for (e = iod_iova_map_first(m); e; e = iod_iova_map_next(m, e)) {
		REQUIRE_EQ(e->iova, n * PAGE);
		n++;
	}
	REQUIRE_EQ(n, BIG);

	/* drain from one end, one entry at a time */
	for (size_t k = 0; k < BIG; k++) {
		size_t i = v->descending ? k : BIG - 1 - k;

		REQUIRE_EQ(iod_iova_map_remove(m, i * PAGE, PAGE, NULL), 0);
		if (k % 50000 == 0)
			assert_balanced(BIG - k - 1);
	}
	REQUIRE_EQ(iod_iova_map_count(m), 0);
	REQUIRE_EQ(iod_iova_map_bytes(m), 0);
	REQUIRE_EQ(iod_iova_map_height(m), 0);
}
END_TEST

START_TEST(test_big_free)
{
	/* Freeing a full map releases every node (valgrind/ASan check the rest). */
	for (size_t i = 0; i < BIG; i++)
		REQUIRE_EQ(iod_iova_map_insert(m, i * 2 * PAGE, 0, PAGE), 0);
	assert_balanced(BIG);
}
END_TEST

static Suite *iova_map_suite(void)
{
	Suite *s = suite_create("iova-map");
	TCase *tc;

	tc = tcase_create("basic");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_empty);
	tcase_add_test(tc, test_insert_lookup_translate);
	tcase_add_test(tc, test_insert_byte_granular);
	tcase_add_test(tc, test_insert_zero_length);
	tcase_add_loop_test(tc, test_range_overflow, 0, ELEMENTSOF(overflow_cases));
	tcase_add_loop_test(tc, test_overlap, 0, ELEMENTSOF(overlap_cases));
	tcase_add_test(tc, test_overlap_between_two);
	tcase_add_test(tc, test_adjacent_kept_separate);
	tcase_add_loop_test(tc, test_remove, 0, ELEMENTSOF(remove_cases));
	tcase_add_test(tc, test_remove_null_removed);
	tcase_add_test(tc, test_remove_split_enomem);
	tcase_add_loop_test(tc, test_foreach, 0, ELEMENTSOF(foreach_cases));
	tcase_add_test(tc, test_foreach_stop);
	tcase_add_test(tc, test_iteration);
	suite_add_tcase(s, tc);

	tc = tcase_create("random");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_random_vs_reference, 0, ELEMENTSOF(random_variants));
	suite_add_tcase(s, tc);

	tc = tcase_create("large");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_big_random_order);
	tcase_add_loop_test(tc, test_big_sorted_order, 0, ELEMENTSOF(order_variants));
	tcase_add_test(tc, test_big_free);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(iova_map_suite());
	int failures;

	srunner_run_all(sr, CK_NORMAL);
	failures = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failures ? 1 : 0;
}
