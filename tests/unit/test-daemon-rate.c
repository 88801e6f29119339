/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dirty rate's bookkeeping (daemon/rate.c) without a kernel: what a sample counts, the
 * window a query covers, the working set, and the memory cap. Times are made up (usec).
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "rate.h"

/* Record pages [first, first + n) of hwpt as one read would return them, in a bitmap that
 * starts at page base. */
static void record(struct iod_rate *r, uint32_t hwpt, uint64_t base, uint64_t first, uint64_t n)
{
	uint64_t bits[8] = {};

	ck_assert_uint_le(first - base + n, 512);
	for (uint64_t i = first - base; i < first - base + n; i++)
		bits[i / 64] |= UINT64_C(1) << (i % 64);
	iod_rate_record(r, hwpt, base, bits, 512);
}

static struct iod_rate_result query(struct iod_rate *r, uint64_t window, uint32_t hwpt)
{
	struct iod_rate_result res;

	ck_assert_int_eq(iod_rate_query(r, window, hwpt, &res), 0);
	return res;
}

START_TEST(test_baseline_not_counted)
{
	struct iod_rate *r = NULL;
	struct iod_rate_result res;

	ck_assert_int_eq(iod_rate_new(IOD_RATE_MAX_RUNS, 1000, &r), 0);
	record(r, 1, 0, 10, 5);
	iod_rate_close(r, 2000);
	res = query(r, 1000000, IOD_RATE_ALL_HWPTS);
	ck_assert_uint_eq(res.samples, 0);
	ck_assert_uint_eq(res.window_usec, 0);
	ck_assert_uint_eq(res.dirty_pages, 0);
	ck_assert_uint_eq(res.pages_per_sec, 0);

	record(r, 1, 0, 10, 5);
	iod_rate_close(r, 3000);
	res = query(r, 1000000, IOD_RATE_ALL_HWPTS);
	ck_assert_uint_eq(res.samples, 1);
	ck_assert_uint_eq(res.window_usec, 1000);
	ck_assert_uint_eq(res.dirty_pages, 5);
	ck_assert_uint_eq(res.pages_per_sec, 5000);
	ck_assert(res.exact);
	iod_rate_free(r);
}
END_TEST

START_TEST(test_two_hwpts_and_working_set)
{
	struct iod_rate *r = NULL;
	struct iod_rate_result vm, a, b;

	ck_assert_int_eq(iod_rate_new(IOD_RATE_MAX_RUNS, 0, &r), 0);
	iod_rate_close(r, 0); /* baseline */
	/* sample 1: hwpt 1 pages 0..9, hwpt 2 pages 5..14 (5 shared) */
	record(r, 1, 0, 0, 10);
	record(r, 2, 0, 5, 10);
	iod_rate_close(r, 1000000);
	/* sample 2: hwpt 1 pages 8..11 (two again), in two reads that adjoin */
	record(r, 1, 0, 8, 2);
	record(r, 1, 10, 10, 2);
	iod_rate_close(r, 2000000);

	vm = query(r, 10000000, IOD_RATE_ALL_HWPTS);
	a = query(r, 10000000, 1);
	b = query(r, 10000000, 2);
	ck_assert_uint_eq(vm.samples, 2);
	ck_assert_uint_eq(vm.window_usec, 2000000);
	ck_assert_uint_eq(vm.dirty_pages, 15 + 4);
	ck_assert_uint_eq(vm.working_set_pages, 15);
	ck_assert_uint_eq(vm.pages_per_sec, 9);
	ck_assert_uint_eq(a.dirty_pages, 14);
	ck_assert_uint_eq(a.working_set_pages, 12);
	ck_assert_uint_eq(b.dirty_pages, 10);
	ck_assert_uint_eq(b.working_set_pages, 10);
	ck_assert_uint_eq(query(r, 10000000, 3).dirty_pages, 0);

	/* a window of one second: the newest sample only */
	vm = query(r, 1000000, IOD_RATE_ALL_HWPTS);
	ck_assert_uint_eq(vm.samples, 1);
	ck_assert_uint_eq(vm.window_usec, 1000000);
	ck_assert_uint_eq(vm.dirty_pages, 4);
	ck_assert_uint_eq(vm.working_set_pages, 4);
	/* a window shorter than the newest sample: still the newest */
	ck_assert_uint_eq(query(r, 10, IOD_RATE_ALL_HWPTS).samples, 1);
	iod_rate_free(r);
}
END_TEST

/* A page that two reads of one HWPT return in one sample (a Harvest, or the harvest before
 * an Unmap, then the sample) counts once in that sample, for the HWPT as for the VM. */
START_TEST(test_page_read_twice_in_one_sample)
{
	struct iod_rate *r = NULL;
	struct iod_rate_result res;

	ck_assert_int_eq(iod_rate_new(IOD_RATE_MAX_RUNS, 0, &r), 0);
	iod_rate_close(r, 1000); /* the baseline */
	record(r, 1, 0, 10, 5);
	record(r, 2, 0, 12, 1);
	record(r, 1, 0, 12, 6); /* 12..14 again, 15..17 new */
	iod_rate_close(r, 2000);
	res = query(r, 1000000, 1);
	ck_assert_uint_eq(res.dirty_pages, 8);
	ck_assert_uint_eq(res.working_set_pages, 8);
	res = query(r, 1000000, IOD_RATE_ALL_HWPTS);
	ck_assert_uint_eq(res.dirty_pages, 8);
	res = query(r, 1000000, 2);
	ck_assert_uint_eq(res.dirty_pages, 1);

	/* the next sample counts them again: they were dirtied again */
	record(r, 1, 0, 10, 2);
	iod_rate_close(r, 3000);
	res = query(r, 1000000, 1);
	ck_assert_uint_eq(res.dirty_pages, 10);
	ck_assert_uint_eq(res.working_set_pages, 8);
	ck_assert(res.exact);
	iod_rate_free(r);
}
END_TEST

START_TEST(test_window_drops_old_samples)
{
	struct iod_rate *r = NULL;

	ck_assert_int_eq(iod_rate_new(IOD_RATE_MAX_RUNS, 0, &r), 0);
	iod_rate_set_window(r, 3000);
	iod_rate_close(r, 0);
	for (uint64_t t = 1000; t <= 10000; t += 1000) {
		record(r, 1, 0, t / 1000, 1);
		iod_rate_close(r, t);
	}
	/* samples ending at 7000..10000 are kept (end + window >= now) */
	ck_assert_uint_eq(query(r, UINT64_MAX, IOD_RATE_ALL_HWPTS).samples, 4);
	iod_rate_free(r);
}
END_TEST

START_TEST(test_cap)
{
	struct iod_rate *r = NULL;
	struct iod_rate_result res;

	ck_assert_int_eq(iod_rate_new(4, 0, &r), 0);
	iod_rate_close(r, 0);
	/* three samples of two isolated pages: the cap of 4 runs keeps the last two */
	for (uint64_t t = 1; t <= 3; t++) {
		record(r, 1, 0, 10 * t, 1);
		record(r, 1, 0, 10 * t + 2, 1);
		iod_rate_close(r, t * 1000);
	}
	res = query(r, UINT64_MAX, IOD_RATE_ALL_HWPTS);
	ck_assert_uint_eq(res.samples, 2);
	ck_assert_uint_eq(res.window_usec, 2000);
	ck_assert_uint_eq(res.dirty_pages, 4);
	ck_assert_uint_eq(res.working_set_pages, 4);
	ck_assert(res.exact);

	/* one sample alone over the cap: counted, its working set a lower bound */
	for (uint64_t p = 0; p < 20; p += 2)
		record(r, 1, 0, 100 + p, 1);
	iod_rate_close(r, 4000);
	res = query(r, 1000, IOD_RATE_ALL_HWPTS);
	ck_assert_uint_eq(res.samples, 1);
	ck_assert_uint_eq(res.dirty_pages, 10);
	ck_assert_uint_le(res.working_set_pages, 10);
	ck_assert(!res.exact);
	iod_rate_free(r);
}
END_TEST

static Suite *rate_suite(void)
{
	Suite *s = suite_create("daemon rate");
	TCase *tc = tcase_create("rate");

	tcase_add_test(tc, test_baseline_not_counted);
	tcase_add_test(tc, test_two_hwpts_and_working_set);
	tcase_add_test(tc, test_page_read_twice_in_one_sample);
	tcase_add_test(tc, test_window_drops_old_samples);
	tcase_add_test(tc, test_cap);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(rate_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
