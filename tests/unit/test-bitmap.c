/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bitmap engine against a bit-by-bit reference: every operation at odd offsets, across
 * word boundaries, on empty, full and random bitmaps, at the 64 MiB maximum size and past
 * 2^32 bits. Random inputs come from fixed seeds, printed with every failure.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/param.h>

#include "iod-bitmap.h"
#include "iod-util.h"

/* --- helpers ----------------------------------------------------------------------------- */

static uint64_t rng_state, rng_seed_value;

static void rng_seed(uint64_t seed)
{
	rng_seed_value = seed;
	rng_state = seed;
}

/* splitmix64 */
static uint64_t rng(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t n)
{
	return rng() % n;
}

/*
 * check's ck_assert*() report every passing assertion to the runner (a write per call), far
 * too slow inside loops over millions of bits. These only call into check on failure.
 */
#define assert_seed(cond, fmt, ...)                                                           \
	do {                                                                                  \
		if (!(cond))                                                                  \
			ck_abort_msg("%s:%d: " fmt " (seed %" PRIu64 ")", __FILE__, __LINE__, \
				     ##__VA_ARGS__, rng_seed_value);                          \
	} while (0)
#define expect(cond) assert_seed(cond, "%s", #cond)

static bool ref_get(const uint64_t *map, uint64_t bit)
{
	return (map[bit / 64] >> (bit % 64)) & 1;
}

static void ref_put(uint64_t *map, uint64_t bit, bool v)
{
	if (v)
		map[bit / 64] |= UINT64_C(1) << (bit % 64);
	else
		map[bit / 64] &= ~(UINT64_C(1) << (bit % 64));
}

/* The valid bits of the last word of an nbits-bit bitmap. */
static uint64_t last_mask_test(uint64_t nbits)
{
	return nbits % 64 ? (UINT64_C(1) << (nbits % 64)) - 1 : UINT64_MAX;
}

static uint64_t ref_count(const uint64_t *map, uint64_t start, uint64_t n)
{
	uint64_t c = 0;

	for (uint64_t i = start; i < start + n; i++)
		c += ref_get(map, i);
	return c;
}

enum fill {
	FILL_EMPTY,
	FILL_SPARSE, /* about 1 bit in 32 */
	FILL_HALF,
	FILL_DENSE, /* about 31 bits in 32 */
	FILL_RUNS, /* alternating runs of 1..300 bits */
	FILL_FULL,
	_FILL_MAX,
};

/* Fill every bit of nwords words, including bits past any nbits (they must be ignored). */
static void fill(uint64_t *map, uint64_t nwords, enum fill how)
{
	switch (how) {
	case FILL_EMPTY:
		memset(map, 0, nwords * 8);
		break;
	case FILL_FULL:
		memset(map, 0xff, nwords * 8);
		break;
	case FILL_SPARSE:
		for (uint64_t i = 0; i < nwords; i++)
			map[i] = rng() & rng() & rng() & rng() & rng();
		break;
	case FILL_HALF:
		for (uint64_t i = 0; i < nwords; i++)
			map[i] = rng();
		break;
	case FILL_DENSE:
		for (uint64_t i = 0; i < nwords; i++)
			map[i] = rng() | rng() | rng() | rng() | rng();
		break;
	case FILL_RUNS: {
		bool v = rng() & 1;

		for (uint64_t bit = 0; bit < nwords * 64; v = !v) {
			uint64_t len = 1 + rng_below(300);

			for (; len > 0 && bit < nwords * 64; len--, bit++)
				ref_put(map, bit, v);
		}
		break;
	}
	default:
		ck_abort_msg("bad fill");
	}
}

/* malloc() of exactly the words nbits needs (at least one), so sanitizers see overruns. */
static uint64_t *map_new(uint64_t nbits)
{
	uint64_t *m = malloc(MAX(iod_bitmap_bytes(nbits), 8));

	ck_assert_ptr_nonnull(m);
	return m;
}

static uint64_t *map_dup(const uint64_t *m, uint64_t nbits)
{
	uint64_t *d = map_new(nbits);

	memcpy(d, m, MAX(iod_bitmap_bytes(nbits), 8));
	return d;
}

static uint64_t words_of(uint64_t nbits)
{
	return MAX(iod_bitmap_words(nbits), 1);
}

/* Offsets and lengths that straddle word boundaries in every way. */
static const uint64_t offsets[] = {0, 1, 2, 31, 32, 63, 64, 65, 127, 128, 129, 1000};
static const uint64_t lengths[] = {0, 1, 2, 63, 64, 65, 127, 128, 129, 500, 1000, 4097};

/* --- fixture: scratch bitmaps for the random tests --------------------------------------- */

#define SCRATCH_BITS 20000
static uint64_t *scratch_a, *scratch_b, *scratch_ref;

static void scratch_setup(void)
{
	scratch_a = map_new(SCRATCH_BITS);
	scratch_b = map_new(SCRATCH_BITS);
	scratch_ref = map_new(SCRATCH_BITS);
}

static void scratch_teardown(void)
{
	free(scratch_a);
	free(scratch_b);
	free(scratch_ref);
}

/* --- sizes ------------------------------------------------------------------------------- */

START_TEST(test_words_bytes)
{
	ck_assert_uint_eq(iod_bitmap_words(0), 0);
	ck_assert_uint_eq(iod_bitmap_words(1), 1);
	ck_assert_uint_eq(iod_bitmap_words(63), 1);
	ck_assert_uint_eq(iod_bitmap_words(64), 1);
	ck_assert_uint_eq(iod_bitmap_words(65), 2);
	ck_assert_uint_eq(iod_bitmap_words(UINT64_C(1) << 29), UINT64_C(1) << 23);
	ck_assert_uint_eq(iod_bitmap_words((UINT64_C(1) << 32) + 1), (UINT64_C(1) << 26) + 1);
	ck_assert_uint_eq(iod_bitmap_words(UINT64_MAX), UINT64_C(1) << 58);
	ck_assert_uint_eq(iod_bitmap_bytes(0), 0);
	ck_assert_uint_eq(iod_bitmap_bytes(65), 16);
	ck_assert_uint_eq(iod_bitmap_bytes(UINT64_C(1) << 29), UINT64_C(64) << 20);
}
END_TEST

/* --- set / clear ------------------------------------------------------------------------- */

/* _i: start offset; every length, set and clear, over random garbage. */
START_TEST(test_set_clear_range)
{
	uint64_t start = offsets[_i];

	rng_seed(1000 + _i);
	for (size_t l = 0; l < ELEMENTSOF(lengths); l++) {
		for (int set = 0; set <= 1; set++) {
			uint64_t n = lengths[l], nbits = start + n + rng_below(3);
			uint64_t nw = words_of(nbits);

			fill(scratch_a, nw, FILL_HALF);
			memcpy(scratch_ref, scratch_a, nw * 8);
			for (uint64_t i = start; i < start + n; i++)
				ref_put(scratch_ref, i, set);

			if (set)
				ck_assert_int_eq(iod_bitmap_set_range(scratch_a, nbits, start, n),
						 0);
			else
				ck_assert_int_eq(iod_bitmap_clear_range(scratch_a, nbits, start, n),
						 0);
			assert_seed(!memcmp(scratch_a, scratch_ref, nw * 8),
				    "%s [%" PRIu64 ", +%" PRIu64 ") of %" PRIu64,
				    set ? "set" : "clear", start, n, nbits);
		}
	}
}
END_TEST

START_TEST(test_set_clear_range_tight)
{
	/* Exactly sized allocations: the last word is touched, nothing after it. */
	for (size_t l = 1; l < ELEMENTSOF(lengths); l++) {
		uint64_t n = lengths[l];
		_cleanup_free_ uint64_t *m = map_new(n);

		memset(m, 0, iod_bitmap_bytes(n));
		ck_assert_int_eq(iod_bitmap_set_range(m, n, 0, n), 0);
		ck_assert_uint_eq(ref_count(m, 0, iod_bitmap_words(n) * 64), n);
		ck_assert_int_eq(iod_bitmap_clear_range(m, n, 0, n), 0);
		ck_assert_uint_eq(ref_count(m, 0, iod_bitmap_words(n) * 64), 0);
	}
}
END_TEST

START_TEST(test_set_clear_range_invalid)
{
	static const struct {
		uint64_t start, n;
	} bad[] = {
		{0, 1001},
		{1, 1000},
		{1000, 1},
		{1001, 0},
		{999, 2},
		{UINT64_MAX, 1},
		{UINT64_MAX, 2},
		{2, UINT64_MAX},
		{UINT64_MAX, UINT64_MAX},
		{UINT64_C(1) << 63, UINT64_C(1) << 63},
	};
	uint64_t nbits = 1000, nw = words_of(nbits);

	rng_seed(7);
	fill(scratch_a, nw, FILL_HALF);
	memcpy(scratch_ref, scratch_a, nw * 8);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		ck_assert_int_eq(iod_bitmap_set_range(scratch_a, nbits, bad[i].start, bad[i].n),
				 -EINVAL);
		ck_assert_int_eq(iod_bitmap_clear_range(scratch_a, nbits, bad[i].start, bad[i].n),
				 -EINVAL);
		ck_assert_mem_eq(scratch_a, scratch_ref, nw * 8);
	}
	/* The edges themselves are fine. */
	ck_assert_int_eq(iod_bitmap_set_range(scratch_a, nbits, 1000, 0), 0);
	ck_assert_int_eq(iod_bitmap_set_range(scratch_a, nbits, 999, 1), 0);
	ck_assert(ref_get(scratch_a, 999));
}
END_TEST

/* --- OR-merge ---------------------------------------------------------------------------- */

static void check_or(uint64_t dst_off, uint64_t src_off, uint64_t n, uint64_t dst_slack,
		     uint64_t src_slack, enum fill src_fill, enum fill dst_fill)
{
	uint64_t dst_nbits = dst_off + n + dst_slack, src_nbits = src_off + n + src_slack;
	_cleanup_free_ uint64_t *src = map_new(src_nbits);
	_cleanup_free_ uint64_t *dst = map_new(dst_nbits);
	_cleanup_free_ uint64_t *ref = NULL;

	fill(src, words_of(src_nbits), src_fill);
	fill(dst, words_of(dst_nbits), dst_fill);
	ref = map_dup(dst, dst_nbits);
	for (uint64_t i = 0; i < n; i++)
		if (ref_get(src, src_off + i))
			ref_put(ref, dst_off + i, true);

	expect(iod_bitmap_or(dst, dst_nbits, dst_off, src, src_nbits, src_off, n) == 0);
	assert_seed(!memcmp(dst, ref, words_of(dst_nbits) * 8),
		    "or dst_off %" PRIu64 " src_off %" PRIu64 " n %" PRIu64, dst_off, src_off, n);
}

/* _i: src offset; every dst offset and length, with tight and slack sizes. */
START_TEST(test_or_offsets)
{
	uint64_t src_off = offsets[_i];

	rng_seed(2000 + _i);
	for (size_t d = 0; d < ELEMENTSOF(offsets); d++)
		for (size_t l = 0; l < ELEMENTSOF(lengths); l++) {
			check_or(offsets[d], src_off, lengths[l], 0, 0, FILL_HALF, FILL_SPARSE);
			check_or(offsets[d], src_off, lengths[l], rng_below(130), rng_below(130),
				 FILL_RUNS, FILL_HALF);
		}
}
END_TEST

START_TEST(test_or_empty_full)
{
	rng_seed(3000);
	/* Empty into random: unchanged; full into empty: exactly the range. */
	check_or(65, 3, 1000, 7, 0, FILL_EMPTY, FILL_HALF);
	check_or(3, 65, 1000, 0, 7, FILL_FULL, FILL_EMPTY);
	check_or(0, 0, 4096, 0, 0, FILL_FULL, FILL_EMPTY);
	check_or(127, 1, 64, 0, 0, FILL_FULL, FILL_FULL);
}
END_TEST

/* Random sizes and offsets, random fills. */
START_TEST(test_or_random)
{
	rng_seed(4000 + _i);
	for (int iter = 0; iter < 300; iter++) {
		uint64_t n = rng_below(3) ? rng_below(700) : rng_below(9000);

		check_or(rng_below(300), rng_below(300), n, rng_below(100), rng_below(100),
			 rng_below(_FILL_MAX), rng_below(_FILL_MAX));
	}
}
END_TEST

START_TEST(test_or_invalid)
{
	uint64_t nw = words_of(1000);

	rng_seed(5000);
	fill(scratch_a, nw, FILL_HALF);
	fill(scratch_b, nw, FILL_HALF);
	memcpy(scratch_ref, scratch_b, nw * 8);

	/* dst range past dst_nbits, src range past src_nbits, overflows. */
	ck_assert_int_eq(iod_bitmap_or(scratch_b, 1000, 1, scratch_a, 1000, 0, 1000), -EINVAL);
	ck_assert_int_eq(iod_bitmap_or(scratch_b, 1000, 0, scratch_a, 1000, 1, 1000), -EINVAL);
	ck_assert_int_eq(iod_bitmap_or(scratch_b, 1000, 0, scratch_a, 999, 0, 1000), -EINVAL);
	ck_assert_int_eq(iod_bitmap_or(scratch_b, 1000, 1001, scratch_a, 1000, 0, 0), -EINVAL);
	ck_assert_int_eq(iod_bitmap_or(scratch_b, 1000, 0, scratch_a, 1000, 1001, 0), -EINVAL);
	ck_assert_int_eq(iod_bitmap_or(scratch_b, 1000, UINT64_MAX, scratch_a, 1000, 0, 2),
			 -EINVAL);
	ck_assert_int_eq(iod_bitmap_or(scratch_b, 1000, 0, scratch_a, 1000, 5, UINT64_MAX),
			 -EINVAL);
	ck_assert_int_eq(
		iod_bitmap_or(scratch_b, UINT64_MAX, 5, scratch_a, UINT64_MAX, 0, UINT64_MAX),
		-EINVAL);
	ck_assert_mem_eq(scratch_b, scratch_ref, nw * 8);

	/* n == 0 at the very end is valid and changes nothing. */
	ck_assert_int_eq(iod_bitmap_or(scratch_b, 1000, 1000, scratch_a, 1000, 1000, 0), 0);
	ck_assert_mem_eq(scratch_b, scratch_ref, nw * 8);
}
END_TEST

/* --- count and is_empty ------------------------------------------------------------------ */

/* _i: start offset; every length and fill. */
START_TEST(test_count_is_empty)
{
	uint64_t start = offsets[_i];

	rng_seed(6000 + _i);
	for (int f = 0; f < _FILL_MAX; f++)
		for (size_t l = 0; l < ELEMENTSOF(lengths); l++) {
			uint64_t n = lengths[l], nbits = start + n + rng_below(2);
			_cleanup_free_ uint64_t *m = map_new(nbits);
			uint64_t c = UINT64_MAX, want;

			fill(m, words_of(nbits), f);
			want = ref_count(m, start, n);
			expect(iod_bitmap_count(m, nbits, start, n, &c) == 0);
			assert_seed(c == want,
				    "count [%" PRIu64 ", +%" PRIu64 ") fill %d: %" PRIu64
				    " != %" PRIu64,
				    start, n, f, c, want);
			assert_seed(iod_bitmap_is_empty(m, nbits, start, n) == (want == 0),
				    "is_empty [%" PRIu64 ", +%" PRIu64 ") fill %d", start, n, f);
		}
}
END_TEST

START_TEST(test_count_random)
{
	rng_seed(6500 + _i);
	for (int iter = 0; iter < 300; iter++) {
		uint64_t nbits = 1 + rng_below(SCRATCH_BITS);
		uint64_t start = rng_below(nbits + 1), n = rng_below(nbits - start + 1), c;

		fill(scratch_a, words_of(nbits), rng_below(_FILL_MAX));
		expect(iod_bitmap_count(scratch_a, nbits, start, n, &c) == 0);
		assert_seed(c == ref_count(scratch_a, start, n), "count");
		assert_seed(iod_bitmap_is_empty(scratch_a, nbits, start, n) == (c == 0),
			    "is_empty");
	}
}
END_TEST

START_TEST(test_count_single_bits)
{
	/* One bit set anywhere, for every position of a 3-word bitmap: count and is_empty. */
	uint64_t m[3];

	for (uint64_t bit = 0; bit < 192; bit++) {
		uint64_t c;

		memset(m, 0, sizeof(m));
		ref_put(m, bit, true);
		ck_assert_int_eq(iod_bitmap_count(m, 192, 0, 192, &c), 0);
		ck_assert_uint_eq(c, 1);
		ck_assert_int_eq(iod_bitmap_count(m, 192, bit, 192 - bit, &c), 0);
		ck_assert_uint_eq(c, 1);
		ck_assert_int_eq(iod_bitmap_count(m, 192, 0, bit, &c), 0);
		ck_assert_uint_eq(c, 0);
		ck_assert(!iod_bitmap_is_empty(m, 192, 0, bit + 1));
		ck_assert(iod_bitmap_is_empty(m, 192, bit + 1, 191 - bit));
		ck_assert(iod_bitmap_is_empty(m, 192, 0, bit));
	}
}
END_TEST

START_TEST(test_count_invalid)
{
	uint64_t m[2] = {UINT64_MAX, UINT64_MAX}, c = 42;

	ck_assert_int_eq(iod_bitmap_count(m, 100, 0, 101, &c), -EINVAL);
	ck_assert_int_eq(iod_bitmap_count(m, 100, 101, 0, &c), -EINVAL);
	ck_assert_int_eq(iod_bitmap_count(m, 100, UINT64_MAX, 2, &c), -EINVAL);
	ck_assert_int_eq(iod_bitmap_count(m, UINT64_MAX, 1, UINT64_MAX, &c), -EINVAL);
	ck_assert_uint_eq(c, 42); /* untouched on failure */
	ck_assert(!iod_bitmap_is_empty(m, 100, 0, 101));
	ck_assert(!iod_bitmap_is_empty(m, 100, UINT64_MAX, 2));

	/* Bits past nbits are not counted; an empty range is empty. */
	ck_assert_int_eq(iod_bitmap_count(m, 100, 0, 100, &c), 0);
	ck_assert_uint_eq(c, 100);
	ck_assert_int_eq(iod_bitmap_count(m, 100, 100, 0, &c), 0);
	ck_assert_uint_eq(c, 0);
	ck_assert(iod_bitmap_is_empty(m, 100, 100, 0));
}
END_TEST

/* --- find_next_set / find_next_clear ----------------------------------------------------- */

static uint64_t ref_find(const uint64_t *m, uint64_t nbits, uint64_t start, bool v)
{
	for (uint64_t i = start; i < nbits; i++)
		if (ref_get(m, i) == v)
			return i;
	return nbits;
}

/* _i: fill; every start of several sizes, with garbage past nbits. */
START_TEST(test_find_next)
{
	static const uint64_t sizes[] = {1, 63, 64, 65, 128, 129, 1000, 4097};

	rng_seed(7000 + _i);
	for (size_t s = 0; s < ELEMENTSOF(sizes); s++) {
		uint64_t nbits = sizes[s];
		_cleanup_free_ uint64_t *m = map_new(nbits);

		fill(m, words_of(nbits), _i);
		/* A few isolated bits far apart make the word-skipping loops run. */
		if (_i == FILL_EMPTY && nbits > 1000) {
			ref_put(m, 700, true);
			ref_put(m, nbits - 1, true);
		}
		if (_i == FILL_FULL && nbits > 1000) {
			ref_put(m, 700, false);
			ref_put(m, nbits - 1, false);
		}
		for (uint64_t start = 0; start <= nbits + 2; start++) {
			uint64_t set = iod_bitmap_find_next_set(m, nbits, start);
			uint64_t clr = iod_bitmap_find_next_clear(m, nbits, start);

			assert_seed(set == ref_find(m, nbits, start, true),
				    "find_next_set(%" PRIu64 ") of %" PRIu64 " = %" PRIu64, start,
				    nbits, set);
			assert_seed(clr == ref_find(m, nbits, start, false),
				    "find_next_clear(%" PRIu64 ") of %" PRIu64 " = %" PRIu64, start,
				    nbits, clr);
		}
	}
}
END_TEST

START_TEST(test_find_next_edges)
{
	uint64_t m[2] = {0, 0};

	/* Garbage past nbits is never reported. */
	m[1] = ~UINT64_C(0) << 5; /* bits 69.. */
	ck_assert_uint_eq(iod_bitmap_find_next_set(m, 69, 0), 69);
	ck_assert_uint_eq(iod_bitmap_find_next_set(m, 70, 0), 69);
	m[0] = m[1] = ~UINT64_C(0) >> 1; /* bit 63 and 127 clear */
	ck_assert_uint_eq(iod_bitmap_find_next_clear(m, 63, 0), 63);
	ck_assert_uint_eq(iod_bitmap_find_next_clear(m, 64, 0), 63);
	ck_assert_uint_eq(iod_bitmap_find_next_clear(m, 127, 64), 127);
	ck_assert_uint_eq(iod_bitmap_find_next_clear(m, 100, 64), 100);
	/* start at or past nbits, and an empty bitmap. */
	ck_assert_uint_eq(iod_bitmap_find_next_set(m, 100, 100), 100);
	ck_assert_uint_eq(iod_bitmap_find_next_set(m, 100, UINT64_MAX), 100);
	ck_assert_uint_eq(iod_bitmap_find_next_clear(m, 100, UINT64_MAX), 100);
	ck_assert_uint_eq(iod_bitmap_find_next_set(NULL, 0, 0), 0);
	ck_assert_uint_eq(iod_bitmap_find_next_clear(NULL, 0, 0), 0);
}
END_TEST

/* --- rescale ----------------------------------------------------------------------------- */

START_TEST(test_rescaled_nbits)
{
	/* To a larger page: rounded up. */
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(0, 12, 21), 0);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(1, 12, 21), 1);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(512, 12, 21), 1);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(513, 12, 21), 2);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(5, 11, 12), 3);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(6, 11, 12), 3);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(UINT64_MAX, 0, 63), 2);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(UINT64_MAX, 0, 1), UINT64_C(1) << 63);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(UINT64_C(1) << 29, 12, 21), 1 << 20);
	/* Same page: unchanged. */
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(12345, 12, 12), 12345);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(UINT64_MAX, 63, 63), UINT64_MAX);
	/* To a smaller page: exact, or UINT64_MAX when it does not fit. */
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(3, 12, 11), 6);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(3, 21, 12), 3 * 512);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(1, 63, 0), UINT64_C(1) << 63);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(2, 63, 0), UINT64_MAX);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(UINT64_C(1) << 62, 13, 11), UINT64_MAX);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(UINT64_C(1) << 61, 13, 11), UINT64_C(1) << 63);
	/* Shifts past 63 are not page sizes. */
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(1, 64, 12), UINT64_MAX);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(1, 12, 64), UINT64_MAX);
}
END_TEST

/* Bit-by-bit rescale, OR-ed into ref. */
static void ref_rescale(uint64_t *ref, uint64_t dst_nbits, unsigned dst_shift, const uint64_t *src,
			uint64_t src_nbits, unsigned src_shift)
{
	if (dst_shift >= src_shift) {
		for (uint64_t i = 0; i < src_nbits; i++)
			if (ref_get(src, i))
				ref_put(ref, i >> (dst_shift - src_shift), true);
	} else {
		for (uint64_t i = 0; i < dst_nbits; i++)
			if (ref_get(src, i >> (src_shift - dst_shift)))
				ref_put(ref, i, true);
	}
}

static const struct {
	unsigned src_shift, dst_shift;
} scales[] = {
	{12, 12}, {11, 12}, {12, 11}, {10, 12}, {12, 10}, {12, 15}, {15, 12}, {12, 16}, {16, 12},
	{12, 17}, {17, 12}, {12, 18}, {18, 12}, {12, 19}, {19, 12}, {12, 21}, {21, 12}, {12, 22},
	{22, 12}, {12, 30}, {30, 12}, {0, 40},	{40, 20}, {0, 63},  {63, 50}, {5, 6},	{6, 5},
};

#define RESCALE_MAX_DST_BITS (UINT64_C(1) << 17)

/* _i: a pair of page sizes; many src sizes and fills, garbage past both nbits. */
START_TEST(test_rescale)
{
	static const uint64_t sizes[] = {1,    2,    3,	   31,	 63,	64,    65,
					 100,  127,  128,  129,	 511,	512,   513,
					 1000, 4096, 4099, 8191, 20000, 32768, 32769};
	unsigned ss = scales[_i].src_shift, ds = scales[_i].dst_shift;

	rng_seed(8000 + _i);
	for (size_t s = 0; s < ELEMENTSOF(sizes); s++)
		for (int f = 0; f < _FILL_MAX; f++) {
			uint64_t src_nbits = sizes[s];
			uint64_t dst_nbits = iod_bitmap_rescaled_nbits(src_nbits, ss, ds);
			_cleanup_free_ uint64_t *src = NULL, *dst = NULL, *ref = NULL;

			if (dst_nbits > RESCALE_MAX_DST_BITS)
				continue;
			src = map_new(src_nbits);
			dst = map_new(dst_nbits);
			fill(src, words_of(src_nbits), f);
			fill(dst, words_of(dst_nbits), rng_below(2) ? FILL_SPARSE : FILL_EMPTY);
			ref = map_dup(dst, dst_nbits);
			ref_rescale(ref, dst_nbits, ds, src, src_nbits, ss);

			ck_assert_int_eq(iod_bitmap_rescale(dst, dst_nbits, ds, src, src_nbits, ss),
					 0);
			assert_seed(!memcmp(dst, ref, words_of(dst_nbits) * 8),
				    "rescale %u -> %u, src_nbits %" PRIu64 " fill %d", ss, ds,
				    src_nbits, f);

			/* Any other dst size is refused, leaving dst alone. */
			ck_assert_int_eq(
				iod_bitmap_rescale(dst, dst_nbits + 1, ds, src, src_nbits, ss),
				-EINVAL);
			if (dst_nbits > 0)
				ck_assert_int_eq(iod_bitmap_rescale(dst, dst_nbits - 1, ds, src,
								    src_nbits, ss),
						 -EINVAL);
			ck_assert_mem_eq(dst, ref, words_of(dst_nbits) * 8);
		}
}
END_TEST

START_TEST(test_rescale_invalid)
{
	uint64_t m[4] = {1, 2, 3, 4}, d[4] = {5, 6, 7, 8}, keep[4];

	memcpy(keep, d, sizeof(d));
	ck_assert_int_eq(iod_bitmap_rescale(d, 256, 64, m, 256, 12), -EINVAL);
	ck_assert_int_eq(iod_bitmap_rescale(d, 256, 12, m, 256, 64), -EINVAL);
	ck_assert_int_eq(iod_bitmap_rescale(d, 256, 12, m, 256, 13), -EINVAL);
	ck_assert_int_eq(iod_bitmap_rescale(d, 256, 12, m, 128, 11), -EINVAL);
	/* A size that does not fit 64 bits is refused, never wrapped. */
	ck_assert_int_eq(iod_bitmap_rescale(d, UINT64_MAX, 0, m, 2, 63), -EINVAL);
	ck_assert_int_eq(iod_bitmap_rescale(d, 0, 0, m, UINT64_C(1) << 63, 1), -EINVAL);
	ck_assert_mem_eq(d, keep, sizeof(d));
	/* Nothing to do is fine. */
	ck_assert_int_eq(iod_bitmap_rescale(d, 0, 21, m, 0, 12), 0);
	ck_assert_int_eq(iod_bitmap_rescale(d, 0, 12, m, 0, 21), 0);
	ck_assert_mem_eq(d, keep, sizeof(d));
}
END_TEST

/* 2 KiB <-> 4 KiB <-> 2 MiB round trips. */
START_TEST(test_rescale_round_trip)
{
	const uint64_t nbits_4k = (UINT64_C(1) << 16) + 77;
	const uint64_t nbits_2k = nbits_4k * 2, nbits_2m = (nbits_4k + 511) / 512;
	/* Back from 2M gives whole 2M pages: 512 bits each, past nbits_4k in the last one. */
	const uint64_t nbits_back = nbits_2m * 512;
	_cleanup_free_ uint64_t *m4k = map_new(nbits_4k), *m2k = map_new(nbits_2k),
				*m2m = map_new(nbits_2m), *back = map_new(nbits_back),
				*want = map_new(nbits_back);

	for (int f = 0; f < _FILL_MAX; f++) {
		rng_seed(9000 + f);
		fill(m4k, words_of(nbits_4k), f);
		/* Only bits below nbits matter: clear the tail so the maps can be compared. */
		ck_assert_int_eq(iod_bitmap_clear_range(m4k, iod_bitmap_words(nbits_4k) * 64,
							nbits_4k, 64 - nbits_4k % 64),
				 0);

		/* 4K -> 2K -> 4K is the identity. */
		memset(m2k, 0, iod_bitmap_bytes(nbits_2k));
		memset(back, 0, iod_bitmap_bytes(nbits_4k));
		ck_assert_int_eq(iod_bitmap_rescale(m2k, nbits_2k, 11, m4k, nbits_4k, 12), 0);
		ck_assert_int_eq(iod_bitmap_rescale(back, nbits_4k, 12, m2k, nbits_2k, 11), 0);
		assert_seed(!memcmp(back, m4k, iod_bitmap_bytes(nbits_4k)), "4K->2K->4K");

		/* 4K -> 2M -> 4K sets every 4K page of a 2M page that had any set. */
		memset(m2m, 0, iod_bitmap_bytes(nbits_2m));
		memset(back, 0, iod_bitmap_bytes(nbits_back));
		memset(want, 0, iod_bitmap_bytes(nbits_back));
		ck_assert_int_eq(iod_bitmap_rescale(m2m, nbits_2m, 21, m4k, nbits_4k, 12), 0);
		ck_assert_int_eq(iod_bitmap_rescale(back, nbits_back, 12, m2m, nbits_2m, 21), 0);
		for (uint64_t i = 0; i < nbits_4k; i++)
			if (ref_get(m4k, i))
				for (uint64_t j = i & ~UINT64_C(511); j < (i | 511) + 1; j++)
					ref_put(want, j, true);
		assert_seed(!memcmp(back, want, iod_bitmap_bytes(nbits_back)), "4K->2M->4K");

		/* 2K -> 2M directly equals 2K -> 4K -> 2M. */
		memset(m2k, 0, iod_bitmap_bytes(nbits_2k));
		fill(m2k, words_of(nbits_2k), f);
		memset(back, 0, iod_bitmap_bytes(nbits_4k));
		memset(m2m, 0, iod_bitmap_bytes(nbits_2m));
		{
			_cleanup_free_ uint64_t *direct = map_new(nbits_2m);

			memset(direct, 0, iod_bitmap_bytes(nbits_2m));
			ck_assert_int_eq(
				iod_bitmap_rescale(direct, nbits_2m, 21, m2k, nbits_2k, 11), 0);
			ck_assert_int_eq(iod_bitmap_rescale(back, nbits_4k, 12, m2k, nbits_2k, 11),
					 0);
			ck_assert_int_eq(iod_bitmap_rescale(m2m, nbits_2m, 21, back, nbits_4k, 12),
					 0);
			assert_seed(!memcmp(direct, m2m, iod_bitmap_bytes(nbits_2m)),
				    "2K->2M vs 2K->4K->2M");
		}
	}
}
END_TEST

/* --- ranges ------------------------------------------------------------------------------ */

/* Encode from start in chunks of max, checking each chunk; decode into a fresh map. */
static void check_ranges(const uint64_t *m, uint64_t nbits, uint64_t start, size_t max)
{
	_cleanup_free_ uint64_t *back = map_new(nbits), *want = map_dup(m, nbits);
	_cleanup_free_ struct iod_range *ranges = calloc(max, sizeof(*ranges));
	uint64_t next = start, prev_end = 0, calls = 0;
	bool first = true;

	ck_assert_ptr_nonnull(ranges);
	memset(back, 0, words_of(nbits) * 8);
	for (uint64_t i = 0; i < words_of(nbits) * 64; i++)
		if (i < start || i >= nbits)
			ref_put(want, i, false);

	while (next < nbits) {
		size_t n = SIZE_MAX;
		uint64_t from = next;

		expect(iod_bitmap_to_ranges(m, nbits, from, ranges, max, &n, &next) == 0);
		expect(n <= max);
		assert_seed(next == nbits || n == max, "stopped early at %" PRIu64, next);
		for (size_t i = 0; i < n; i++) {
			uint64_t s = ranges[i].start, e = s + ranges[i].length;

			/* In order, non-empty, maximal, and separated by a clear bit. */
			expect(ranges[i].length > 0);
			expect(s >= from);
			expect(e <= nbits);
			expect(first || s > prev_end);
			expect(s == from || !ref_get(m, s - 1));
			expect(e == nbits || !ref_get(m, e));
			expect(ref_count(m, s, e - s) == e - s);
			expect(iod_bitmap_is_empty(m, nbits, first ? start : prev_end,
						   s - (first ? start : prev_end)));
			prev_end = e;
			first = false;
		}
		expect(next >= (n > 0 ? prev_end : from));
		expect(iod_bitmap_from_ranges(back, nbits, ranges, n) == 0);
		expect(++calls < nbits + 2);
	}
	ck_assert_uint_eq(next, nbits);
	assert_seed(!memcmp(back, want, words_of(nbits) * 8),
		    "ranges round trip of %" PRIu64 " bits from %" PRIu64 ", max %zu", nbits, start,
		    max);
}

/* _i: fill; several sizes, starts and array sizes including continuation. */
START_TEST(test_ranges_round_trip)
{
	static const uint64_t sizes[] = {1, 63, 64, 65, 129, 1000, 4097, SCRATCH_BITS, 100003};
	static const size_t maxes[] = {1, 2, 3, 7, 64, 100000};

	rng_seed(10000 + _i);
	for (size_t s = 0; s < ELEMENTSOF(sizes); s++) {
		uint64_t nbits = sizes[s];
		_cleanup_free_ uint64_t *m = map_new(nbits);

		fill(m, words_of(nbits), _i);
		for (size_t x = 0; x < ELEMENTSOF(maxes); x++) {
			/* The largest size (many blocks of lines) with a few array sizes. */
			if (nbits > SCRATCH_BITS && maxes[x] < 7)
				continue;
			check_ranges(m, nbits, 0, maxes[x]);
			check_ranges(m, nbits, rng_below(nbits + 1), maxes[x]);
		}
	}
}
END_TEST

/* Runs of set bits of [start, nbits), bit by bit. */
static size_t ref_runs(const uint64_t *m, uint64_t nbits, uint64_t start, struct iod_range *out)
{
	size_t n = 0;

	for (uint64_t i = start; i < nbits; i++) {
		if (!ref_get(m, i))
			continue;
		if (n > 0 && out[n - 1].start + out[n - 1].length == i) {
			out[n - 1].length++;
		} else {
			out[n].start = i;
			out[n].length = 1;
			n++;
		}
	}
	return n;
}

/*
 * _i: a size. Two runs with their ends on and next to every word boundary, in bitmaps long
 * enough for the line-at-a-time scan, and in its first, last and leftover words: the runs
 * must come out exactly once, whole.
 */
START_TEST(test_ranges_boundaries)
{
	static const uint64_t sizes[] = {65, 128, 129, 640, 700, 1088, 1100, 2048, 2111};
	uint64_t nbits = sizes[_i], nw = iod_bitmap_words(nbits);
	_cleanup_free_ uint64_t *m = map_new(nbits);
	struct iod_range got[8], want[8];
	uint64_t edges_at[64];
	size_t ne = 0;

	/* Every word boundary near the start and the end, and one past it on either side. */
	for (uint64_t w = 0; w <= nw && ne + 3 <= ELEMENTSOF(edges_at); w++)
		if (w < 3 || w + 12 > nw)
			for (int d = -1; d <= 1; d++)
				if (w * 64 + d > 0 && w * 64 + d < nbits)
					edges_at[ne++] = w * 64 + d;
	edges_at[ne++] = nbits - 1;

	for (size_t a = 0; a < ne; a++)
		for (size_t b = a + 1; b < 2 * ne; b++) {
			/* b >= ne: a second run from the bit after the first one's end. */
			bool two = b >= ne;
			uint64_t s1 = edges_at[a], e1 = edges_at[two ? b - ne : b];
			uint64_t e2 = MIN(nbits, e1 + 70);
			size_t n, nwant;
			uint64_t next;

			if (e1 <= s1)
				continue;
			memset(m, 0, iod_bitmap_bytes(nbits));
			/* Garbage past nbits must not show. */
			m[nw - 1] |= ~last_mask_test(nbits);
			ck_assert_int_eq(iod_bitmap_set_range(m, nbits, s1, e1 - s1), 0);
			if (two && e1 + 1 < e2)
				ck_assert_int_eq(
					iod_bitmap_set_range(m, nbits, e1 + 1, e2 - e1 - 1), 0);

			for (uint64_t from = 0; from <= s1 + 1 && from <= nbits; from += s1 + 1) {
				nwant = ref_runs(m, nbits, from, want);
				ck_assert_int_eq(
					iod_bitmap_to_ranges(m, nbits, from, got, 8, &n, &next), 0);
				ck_assert_msg(n == nwant && !memcmp(got, want, n * sizeof(*got)),
					      "runs [%" PRIu64 ", %" PRIu64 ") + up to %" PRIu64
					      " in %" PRIu64 " bits from %" PRIu64
					      ": %zu, want %zu",
					      s1, e1, e2, nbits, from, n, nwant);
				ck_assert_uint_eq(next, nbits);
			}
		}
}
END_TEST

START_TEST(test_ranges_edges)
{
	uint64_t m[3] = {0, 0, 0}, next = 42;
	struct iod_range r[4];
	size_t n = 42;

	/* Empty bitmap: nothing, done, even with no room. */
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 0, r, 4, &n, &next), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_uint_eq(next, 150);
	n = 42;
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 0, r, 0, &n, &next), 0);
	ck_assert_uint_eq(n, 0);

	/* Full bitmap: one run; started inside it, the run begins at start. */
	memset(m, 0xff, sizeof(m));
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 0, r, 4, &n, &next), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(r[0].start, 0);
	ck_assert_uint_eq(r[0].length, 150);
	ck_assert_uint_eq(next, 150);
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 70, r, 4, &n, &next), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(r[0].start, 70);
	ck_assert_uint_eq(r[0].length, 80);

	/* Start == nbits is the end; past it is invalid; no room with runs left is invalid. */
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 150, r, 4, &n, &next), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_uint_eq(next, 150);
	n = 42;
	next = 42;
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 151, r, 4, &n, &next), -EINVAL);
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 0, r, 0, &n, &next), -EINVAL);
	ck_assert_uint_eq(n, 42);
	ck_assert_uint_eq(next, 42);

	/* Exactly as many runs as room: done (next == nbits), not "continue". */
	memset(m, 0, sizeof(m));
	ref_put(m, 3, true);
	ref_put(m, 64, true);
	ref_put(m, 65, true);
	ref_put(m, 149, true);
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 0, r, 3, &n, &next), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(next, 150);
	ck_assert_uint_eq(r[1].start, 64);
	ck_assert_uint_eq(r[1].length, 2);
	ck_assert_uint_eq(r[2].start, 149);
	ck_assert_uint_eq(r[2].length, 1);
	/* One short: continue from the start of the run that did not fit. */
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 0, r, 2, &n, &next), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(next, 149);
	ck_assert_int_eq(iod_bitmap_to_ranges(m, 150, 0, r, 2, &n, NULL), 0);
}
END_TEST

START_TEST(test_from_ranges_invalid)
{
	static const struct iod_range bad[] = {
		{0, 0},
		{999, 2},
		{1000, 1},
		{0, 1001},
		{UINT64_MAX, 1},
		{1, UINT64_MAX},
		{500, UINT64_MAX - 499},
	};
	uint64_t nw = words_of(1000);

	rng_seed(11000);
	fill(scratch_a, nw, FILL_SPARSE);
	memcpy(scratch_ref, scratch_a, nw * 8);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		/* Valid ranges around the bad one must not be applied either. */
		struct iod_range r[3] = {{0, 10}, bad[i], {990, 10}};

		ck_assert_int_eq(iod_bitmap_from_ranges(scratch_a, 1000, r, 3), -EINVAL);
		ck_assert_mem_eq(scratch_a, scratch_ref, nw * 8);
	}
	ck_assert_int_eq(iod_bitmap_from_ranges(scratch_a, 1000, NULL, 0), 0);
	ck_assert_mem_eq(scratch_a, scratch_ref, nw * 8);
	{
		struct iod_range ok[2] = {{0, 1000}, {999, 1}};
		uint64_t c;

		ck_assert_int_eq(iod_bitmap_from_ranges(scratch_a, 1000, ok, 2), 0);
		ck_assert_int_eq(iod_bitmap_count(scratch_a, 1000, 0, 1000, &c), 0);
		ck_assert_uint_eq(c, 1000);
	}
}
END_TEST

/* --- maximum size: 64 MiB, 2^29 bits ----------------------------------------------------- */

#define MAX_NBITS (UINT64_C(1) << 29)
#define MAX_SPARSE 4096
#define RUN_START ((UINT64_C(1) << 28) + 3)
#define RUN_LEN UINT64_C(3000001)

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Distinct values of (v[i] >> shift), v sorted. */
static uint64_t distinct_shifted(const uint64_t *v, size_t n, unsigned shift)
{
	uint64_t c = 0;

	for (size_t i = 0; i < n; i++)
		if (i == 0 || (v[i] >> shift) != (v[i - 1] >> shift))
			c++;
	return c;
}

START_TEST(test_max_size)
{
	_cleanup_free_ uint64_t *src = calloc(1, iod_bitmap_bytes(MAX_NBITS));
	_cleanup_free_ uint64_t *dst = calloc(1, iod_bitmap_bytes(MAX_NBITS));
	_cleanup_free_ uint64_t *half = NULL, *huge = NULL;
	_cleanup_free_ uint64_t *pos = calloc(MAX_SPARSE + 2 * (RUN_LEN + 1), sizeof(uint64_t));
	const uint64_t src_off = 777, dst_off = 12345, n = MAX_NBITS - dst_off;
	size_t npos = 0;
	uint64_t c, want;

	ck_assert_ptr_nonnull(src);
	ck_assert_ptr_nonnull(dst);
	ck_assert_ptr_nonnull(pos);

	/* Sparse random bits away from the run, the run, and the very first and last bits. */
	rng_seed(12000);
	while (npos < MAX_SPARSE) {
		uint64_t p = rng_below(MAX_NBITS);

		if (p + 1 >= RUN_START && p <= RUN_START + RUN_LEN)
			continue;
		pos[npos++] = p;
	}
	pos[npos++] = 0;
	pos[npos++] = MAX_NBITS - 1;
	qsort(pos, npos, sizeof(*pos), cmp_u64);
	for (size_t i = 0; i < npos; i++)
		ref_put(src, pos[i], true);
	ck_assert_int_eq(iod_bitmap_set_range(src, MAX_NBITS, RUN_START, RUN_LEN), 0);
	/* The run as explicit positions too, for the rescale expectations. */
	for (uint64_t i = 0; i < RUN_LEN; i++)
		pos[npos++] = RUN_START + i;
	qsort(pos, npos, sizeof(*pos), cmp_u64);
	want = distinct_shifted(pos, npos, 0);

	ck_assert_int_eq(iod_bitmap_count(src, MAX_NBITS, 0, MAX_NBITS, &c), 0);
	assert_seed(c == want, "count %" PRIu64 " != %" PRIu64, c, want);
	ck_assert(!iod_bitmap_is_empty(src, MAX_NBITS, 0, MAX_NBITS));

	/* Runs, in chunks: as many as the sorted positions have gaps, covering every bit. */
	{
		struct iod_range r[4096];
		uint64_t next = 0, runs = 0, bits = 0, want_runs = 0, prev_end = 0;

		for (size_t i = 0; i < npos; i++)
			if (i == 0 || pos[i] > pos[i - 1] + 1)
				want_runs++;
		while (next < MAX_NBITS) {
			size_t got;

			ck_assert_int_eq(
				iod_bitmap_to_ranges(src, MAX_NBITS, next, r, 4096, &got, &next),
				0);
			for (size_t i = 0; i < got; i++) {
				expect(runs == 0 || r[i].start > prev_end);
				expect(ref_get(src, r[i].start));
				prev_end = r[i].start + r[i].length;
				bits += r[i].length;
				runs++;
			}
		}
		ck_assert_uint_eq(runs, want_runs);
		ck_assert_uint_eq(bits, want);
	}

	/* OR-merge at odd offsets on both sides, over (nearly) the whole bitmap. */
	ck_assert_int_eq(iod_bitmap_or(dst, MAX_NBITS, dst_off, src, MAX_NBITS, src_off, n), 0);
	want = 0;
	for (size_t i = 0; i < npos; i++)
		if (pos[i] >= src_off && pos[i] < src_off + n && (i == 0 || pos[i] != pos[i - 1])) {
			want++;
			expect(ref_get(dst, pos[i] - src_off + dst_off));
		}
	ck_assert_int_eq(iod_bitmap_count(dst, MAX_NBITS, 0, MAX_NBITS, &c), 0);
	assert_seed(c == want, "or count %" PRIu64 " != %" PRIu64, c, want);
	for (size_t i = 0; i < npos; i++)
		if (pos[i] >= src_off) {
			ck_assert_uint_eq(iod_bitmap_find_next_set(dst, MAX_NBITS, 0),
					  pos[i] - src_off + dst_off);
			break;
		}
	ck_assert_uint_eq(iod_bitmap_find_next_clear(dst, MAX_NBITS, RUN_START - src_off + dst_off),
			  RUN_START + RUN_LEN - src_off + dst_off);
	ck_assert(iod_bitmap_is_empty(dst, MAX_NBITS, 0, dst_off));

	/* 2K -> 4K: one bit per distinct pair. */
	half = calloc(1, iod_bitmap_bytes(MAX_NBITS / 2));
	ck_assert_ptr_nonnull(half);
	ck_assert_int_eq(iod_bitmap_rescale(half, MAX_NBITS / 2, 12, src, MAX_NBITS, 11), 0);
	ck_assert_int_eq(iod_bitmap_count(half, MAX_NBITS / 2, 0, MAX_NBITS / 2, &c), 0);
	ck_assert_uint_eq(c, distinct_shifted(pos, npos, 1));

	/* 4K -> 2M: one bit per distinct 512-page block. */
	huge = calloc(1, iod_bitmap_bytes(MAX_NBITS / 512));
	ck_assert_ptr_nonnull(huge);
	ck_assert_int_eq(iod_bitmap_rescale(huge, MAX_NBITS / 512, 21, src, MAX_NBITS, 12), 0);
	ck_assert_int_eq(iod_bitmap_count(huge, MAX_NBITS / 512, 0, MAX_NBITS / 512, &c), 0);
	ck_assert_uint_eq(c, distinct_shifted(pos, npos, 9));
	for (size_t i = 0; i < npos; i++)
		expect(ref_get(huge, pos[i] >> 9));

	/* 2M -> 4K back into the 64 MiB map: whole 512-bit blocks. */
	memset(dst, 0, iod_bitmap_bytes(MAX_NBITS));
	ck_assert_int_eq(iod_bitmap_rescale(dst, MAX_NBITS, 12, huge, MAX_NBITS / 512, 21), 0);
	ck_assert_int_eq(iod_bitmap_count(dst, MAX_NBITS, 0, MAX_NBITS, &c), 0);
	ck_assert_uint_eq(c, 512 * distinct_shifted(pos, npos, 9));
}
END_TEST

/* --- past 2^32 bits ---------------------------------------------------------------------- */

START_TEST(test_beyond_4g_bits)
{
	const uint64_t g = UINT64_C(1) << 32, nbits = g + 4096;
	size_t bytes = iod_bitmap_bytes(nbits);
	struct iod_range r[2];
	uint64_t *m, c, next, src[2] = {~UINT64_C(0), 5};
	size_t n;

	/* 512 MiB of address space; only the pages touched here get memory. */
	m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);

	ck_assert_int_eq(iod_bitmap_set_range(m, nbits, g - 3, 100), 0);
	ck_assert_int_eq(iod_bitmap_count(m, nbits, g - 64, 512, &c), 0);
	ck_assert_uint_eq(c, 100);
	ck_assert(ref_get(m, g - 3) && ref_get(m, g + 96) && !ref_get(m, g + 97));
	ck_assert_uint_eq(iod_bitmap_find_next_set(m, nbits, g - 4000), g - 3);
	ck_assert_uint_eq(iod_bitmap_find_next_clear(m, nbits, g - 3), g + 97);
	ck_assert(iod_bitmap_is_empty(m, nbits, g + 97, 4096 - 97));
	ck_assert(!iod_bitmap_is_empty(m, nbits, g + 96, 1));

	ck_assert_int_eq(iod_bitmap_or(m, nbits, g + 1001, src, 128, 1, 127), 0);
	ck_assert_int_eq(iod_bitmap_count(m, nbits, g + 1001, 127, &c), 0);
	ck_assert_uint_eq(c, 63 + 2);
	ck_assert(ref_get(m, g + 1001 + 62) && ref_get(m, g + 1001 + 63) &&
		  !ref_get(m, g + 1001 + 64) && ref_get(m, g + 1001 + 65));

	ck_assert_int_eq(iod_bitmap_to_ranges(m, nbits, g - 5000, r, 2, &n, &next), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(r[0].start, g - 3);
	ck_assert_uint_eq(r[0].length, 100);
	ck_assert_uint_eq(r[1].start, g + 1001);
	ck_assert_uint_eq(r[1].length, 64);
	ck_assert_uint_eq(next, g + 1001 + 65);

	ck_assert_int_eq(iod_bitmap_clear_range(m, nbits, g - 3, 4099), 0);
	ck_assert(iod_bitmap_is_empty(m, nbits, g - 4096, 8192));
	ck_assert_int_eq(iod_bitmap_set_range(m, nbits, nbits - 1, 2), -EINVAL);
	ck_assert_int_eq(iod_bitmap_set_range(m, nbits, nbits - 1, 1), 0);
	ck_assert_uint_eq(iod_bitmap_find_next_set(m, nbits, g + 5), nbits - 1);

	/* A 2M-page bitmap for the same memory is small; the 4K one it expands to is not. */
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(nbits, 12, 21), (g >> 9) + 8);
	ck_assert_uint_eq(iod_bitmap_rescaled_nbits(g >> 9, 21, 12), g);

	ck_assert_int_eq(munmap(m, bytes), 0);
}
END_TEST

static Suite *bitmap_suite(void)
{
	Suite *s = suite_create("bitmap");
	TCase *tc;

	tc = tcase_create("sizes");
	tcase_add_test(tc, test_words_bytes);
	suite_add_tcase(s, tc);

	tc = tcase_create("set-clear");
	tcase_add_checked_fixture(tc, scratch_setup, scratch_teardown);
	tcase_add_loop_test(tc, test_set_clear_range, 0, ELEMENTSOF(offsets));
	tcase_add_test(tc, test_set_clear_range_tight);
	tcase_add_test(tc, test_set_clear_range_invalid);
	suite_add_tcase(s, tc);

	tc = tcase_create("or");
	tcase_add_checked_fixture(tc, scratch_setup, scratch_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_or_offsets, 0, ELEMENTSOF(offsets));
	tcase_add_test(tc, test_or_empty_full);
	tcase_add_loop_test(tc, test_or_random, 0, 4);
	tcase_add_test(tc, test_or_invalid);
	suite_add_tcase(s, tc);

	tc = tcase_create("count");
	tcase_add_checked_fixture(tc, scratch_setup, scratch_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_count_is_empty, 0, ELEMENTSOF(offsets));
	tcase_add_loop_test(tc, test_count_random, 0, 4);
	tcase_add_test(tc, test_count_single_bits);
	tcase_add_test(tc, test_count_invalid);
	suite_add_tcase(s, tc);

	tc = tcase_create("find");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_find_next, 0, _FILL_MAX);
	tcase_add_test(tc, test_find_next_edges);
	suite_add_tcase(s, tc);

	tc = tcase_create("rescale");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_rescaled_nbits);
	tcase_add_loop_test(tc, test_rescale, 0, ELEMENTSOF(scales));
	tcase_add_test(tc, test_rescale_invalid);
	tcase_add_test(tc, test_rescale_round_trip);
	suite_add_tcase(s, tc);

	tc = tcase_create("ranges");
	tcase_add_checked_fixture(tc, scratch_setup, scratch_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_ranges_round_trip, 0, _FILL_MAX);
	tcase_add_test(tc, test_ranges_edges);
	tcase_add_loop_test(tc, test_ranges_boundaries, 0, 9);
	tcase_add_test(tc, test_from_ranges_invalid);
	suite_add_tcase(s, tc);

	tc = tcase_create("large");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_max_size);
	tcase_add_test(tc, test_beyond_4g_bits);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(bitmap_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
