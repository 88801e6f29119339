/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * xorshift64*, the seeded random source of the guest-tier programs: a run's choices are
 * reproduced from the seed it prints (IOD_TEST_SEED=<n>).
 */
#ifndef IOD_TESTS_VM_TEST_RNG_H
#define IOD_TESTS_VM_TEST_RNG_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_seed_value __attribute__((unused)); /* what rng_seed() chose */

static inline uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static inline uint64_t rng_below(uint64_t n)
{
	return rng() % n;
}

/* Seed from IOD_TEST_SEED, else from the time and the pid (never 0); prints the seed and
 * returns it. */
static inline uint64_t rng_seed(void)
{
	const char *e = getenv("IOD_TEST_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 0)
			  : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

	if (!seed)
		seed = 1;
	rng_state = rng_seed_value = seed;
	printf("seed: IOD_TEST_SEED=%" PRIu64 "\n", seed);
	return seed;
}

/* The last line of a failing run (e.g. as dt_on_fail): the seed that reproduces it. */
static inline void rng_print_seed(void)
{
	printf("seed: IOD_TEST_SEED=%" PRIu64 " reproduces this run\n", rng_seed_value);
}

#endif
