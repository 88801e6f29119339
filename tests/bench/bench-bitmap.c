/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bitmap engine throughput on 64 MiB bitmaps (2^29 bits: 2 TiB of guest memory at 4 KiB
 * pages), each operation against memcpy() of the same 64 MiB measured in the same run.
 * A rescale works between a 64 MiB bitmap and its counterpart at the other page size
 * (2K -> 4K: 64 MiB -> 32 MiB, 4K -> 2K: 32 MiB -> 64 MiB, 4K -> 2M: 64 MiB -> 128 KiB).
 * Every figure is the best of several runs on pre-faulted memory. This is not a test: it
 * always exits 0 and says how many targets were met.
 */
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iod-bitmap.h"

#define NBITS (UINT64_C(1) << 29)
#define BYTES (NBITS / 8)
#define RUNS 21
#define RANGE_CHUNK 4096

/* Keep the compiler from dropping or reordering work whose result is otherwise unused. */
static inline void do_not_optimize(uint64_t v)
{
	__asm__ volatile("" : : "r"(v) : "memory");
}

static inline void clobber_memory(void)
{
	__asm__ volatile("" : : : "memory");
}

static uint64_t rng_state = 0x1d0d1e7;

static uint64_t rng(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Page-aligned, pre-faulted (every page written) buffer. */
static uint64_t *buffer(size_t bytes, int pattern)
{
	uint64_t *p = aligned_alloc(4096, bytes);

	if (!p) {
		fprintf(stderr, "bench-bitmap: out of memory\n");
		exit(EXIT_FAILURE);
	}
	memset(p, pattern, bytes);
	return p;
}

static uint64_t *bm_dense, *bm_sparse, *bm_dst, *bm_half, *bm_huge;
static struct iod_range ranges[RANGE_CHUNK];
static uint64_t sparse_bits; /* bits set in bm_sparse */
static uint64_t result; /* the last operation's result, checked where it has one */

enum op {
	OP_MEMCPY,
	OP_OR_ALIGNED,
	OP_OR_SAME_ODD,
	OP_OR_ODD,
	OP_RESCALE_2K_4K,
	OP_RESCALE_4K_2K,
	OP_RESCALE_4K_2M,
	OP_COUNT_SPARSE,
	OP_RANGES_SPARSE,
	OP_FIND_SPARSE,
	OP_COUNT_DENSE,
};

static int run(enum op op)
{
	uint64_t c = 0, next;
	size_t n;

	switch (op) {
	case OP_MEMCPY:
		memcpy(bm_dst, bm_dense, BYTES);
		break;
	case OP_OR_ALIGNED:
		return iod_bitmap_or(bm_dst, NBITS, 0, bm_dense, NBITS, 0, NBITS);
	case OP_OR_SAME_ODD:
		return iod_bitmap_or(bm_dst, NBITS, 12345, bm_dense, NBITS, 12345, NBITS - 12345);
	case OP_OR_ODD:
		return iod_bitmap_or(bm_dst, NBITS, 12345, bm_dense, NBITS, 777, NBITS - 12345);
	case OP_RESCALE_2K_4K:
		return iod_bitmap_rescale(bm_half, NBITS / 2, 12, bm_dense, NBITS, 11);
	case OP_RESCALE_4K_2K:
		return iod_bitmap_rescale(bm_dst, NBITS, 11, bm_half, NBITS / 2, 12);
	case OP_RESCALE_4K_2M:
		return iod_bitmap_rescale(bm_huge, NBITS / 512, 21, bm_dense, NBITS, 12);
	case OP_COUNT_SPARSE:
		if (iod_bitmap_count(bm_sparse, NBITS, 0, NBITS, &c) < 0)
			return -1;
		break;
	case OP_RANGES_SPARSE:
		for (next = 0; next < NBITS;) {
			if (iod_bitmap_to_ranges(bm_sparse, NBITS, next, ranges, RANGE_CHUNK, &n,
						 &next) < 0)
				return -1;
			for (size_t i = 0; i < n; i++)
				c += ranges[i].length;
		}
		break;
	case OP_FIND_SPARSE:
		for (uint64_t b = iod_bitmap_find_next_set(bm_sparse, NBITS, 0); b < NBITS;
		     b = iod_bitmap_find_next_set(bm_sparse, NBITS, b + 1))
			c++;
		break;
	case OP_COUNT_DENSE:
		if (iod_bitmap_count(bm_dense, NBITS, 0, NBITS, &c) < 0)
			return -1;
		break;
	}
	result = c;
	do_not_optimize(c);
	clobber_memory();
	return 0;
}

static double time_once(enum op op)
{
	double t0;

	/* Start on a fresh time slice: on a busy machine a run cut by the scheduler is lost. */
	sched_yield();
	t0 = now_ms();
	if (run(op) < 0) {
		fprintf(stderr, "bench-bitmap: operation %d failed\n", op);
		exit(EXIT_FAILURE);
	}
	return now_ms() - t0;
}

/*
 * Best of RUNS for op, alternating with the memcpy baseline so that both see the same
 * machine (other load, frequency); *ret_base is the best baseline of those runs. The order
 * within a pair flips every time, so that each of the two follows the other as often as it
 * follows itself (memcpy() leaves 64 MiB of writes draining behind it).
 */
static double best_of(enum op op, double *ret_base)
{
	double best = 1e30, base = 1e30;

	for (int i = 0; i < RUNS; i++) {
		double t_base, t_op;

		if (i % 2 == 0) {
			t_base = time_once(OP_MEMCPY);
			t_op = time_once(op);
		} else {
			t_op = time_once(op);
			t_base = time_once(OP_MEMCPY);
		}
		if (t_base < base)
			base = t_base;
		if (t_op < best)
			best = t_op;
	}
	*ret_base = base;
	return best;
}

static const struct {
	enum op op;
	const char *name;
	double target; /* maximum ratio to memcpy; 0: none */
	bool strict; /* ratio must be below target, not just at most */
} ops[] = {
	{OP_OR_ALIGNED, "or, offsets 0/0", 2.0, false},
	{OP_OR_SAME_ODD, "or, offsets 12345/12345", 2.0, false},
	{OP_OR_ODD, "or, offsets 12345/777", 2.0, false},
	{OP_RESCALE_2K_4K, "rescale 2K -> 4K", 2.0, false},
	{OP_RESCALE_4K_2K, "rescale 4K -> 2K", 2.0, false},
	{OP_RESCALE_4K_2M, "rescale 4K -> 2M", 2.0, false},
	{OP_COUNT_SPARSE, "count, sparse", 1.0, true},
	{OP_RANGES_SPARSE, "to_ranges, sparse", 1.0, true},
	{OP_FIND_SPARSE, "find_next_set walk, sparse", 0, false},
	{OP_COUNT_DENSE, "count, dense", 0, false},
};

int main(void)
{
	const double gib = 1024.0 * 1024.0 * 1024.0;
	unsigned met = 0, targets = 0;
	double base;

	bm_dense = buffer(BYTES, 0);
	bm_sparse = buffer(BYTES, 0);
	bm_dst = buffer(BYTES, 0);
	bm_half = buffer(BYTES / 2, 0);
	bm_huge = buffer(BYTES / 512, 0);

	/* Dense: random, half the bits set. Sparse: 0.1% of the bits set at random. */
	for (uint64_t i = 0; i < NBITS / 64; i++)
		bm_dense[i] = rng();
	for (uint64_t i = 0; i < NBITS / 1000; i++) {
		uint64_t b = rng() % NBITS;

		bm_sparse[b / 64] |= UINT64_C(1) << (b % 64);
	}
	if (iod_bitmap_count(bm_sparse, NBITS, 0, NBITS, &sparse_bits) < 0)
		return EXIT_FAILURE;

	printf("bench-bitmap: 64 MiB bitmaps (2^29 bits), best of %d runs, each run next to a "
	       "memcpy() of 64 MiB;\n"
	       "  ratio = operation / that memcpy; sparse: %" PRIu64 " bits set (0.1%%), dense: "
	       "random\n",
	       RUNS, sparse_bits);
	printf("%-28s %9s %7s %11s %6s %7s  %s\n", "operation", "time (ms)", "GiB/s", "memcpy (ms)",
	       "ratio", "target", "result");

	best_of(OP_MEMCPY, &base);
	printf("%-28s %9.2f %7.2f %11.2f %6.2f %7s  %s\n", "memcpy (baseline)", base,
	       BYTES / gib / (base / 1e3), base, 1.0, "-", "-");

	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		double t = best_of(ops[i].op, &base), ratio = t / base;
		char target[16] = "-";
		const char *verdict = "-";

		if ((ops[i].op == OP_COUNT_SPARSE || ops[i].op == OP_RANGES_SPARSE ||
		     ops[i].op == OP_FIND_SPARSE) &&
		    result != sparse_bits) {
			fprintf(stderr,
				"bench-bitmap: %s found %" PRIu64 " bits, not %" PRIu64 "\n",
				ops[i].name, result, sparse_bits);
			return EXIT_FAILURE;
		}
		if (ops[i].target > 0) {
			bool ok = ops[i].strict ? ratio < ops[i].target : ratio <= ops[i].target;

			snprintf(target, sizeof(target), "%s %.1f",
				 ops[i].strict ? "<" : "<=", ops[i].target);
			verdict = ok ? "OK" : "MISS";
			targets++;
			met += ok;
		}
		printf("%-28s %9.2f %7.2f %11.2f %6.2f %7s  %s\n", ops[i].name, t,
		       BYTES / gib / (t / 1e3), base, ratio, target, verdict);
	}
	printf("bench-bitmap: %u of %u targets met\n", met, targets);

	free(bm_dense);
	free(bm_sparse);
	free(bm_dst);
	free(bm_half);
	free(bm_huge);
	return EXIT_SUCCESS;
}
