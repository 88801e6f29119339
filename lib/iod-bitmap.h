/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bitmap engine. A bitmap is an array of uint64_t words; bit i lives in word i / 64 at
 * position i % 64 (the kernel's layout for IOMMU_HWPT_GET_DIRTY_BITMAP on a 64-bit
 * little-endian host). One bit stands for one page of a power-of-two size. All operations
 * work a word at a time; none allocates.
 *
 * Bit positions and counts are uint64_t so that bitmaps of any size up to 2^64 - 1 bits
 * work (the engine is sized and benchmarked for 2 TiB of guest memory at 4 KiB pages:
 * 2^29 bits, 64 MiB of bitmap).
 *
 * Functions that take a range return -EINVAL for a range that runs past the bitmap's
 * nbits or overflows; they never touch memory outside [0, nbits).
 */
#ifndef IOD_BITMAP_H
#define IOD_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IOD_BITS_PER_WORD 64

/* Number of words needed for nbits bits. */
static inline uint64_t iod_bitmap_words(uint64_t nbits)
{
	return nbits / IOD_BITS_PER_WORD + !!(nbits % IOD_BITS_PER_WORD);
}

/* Bytes needed for nbits bits, rounded up to whole words. */
static inline uint64_t iod_bitmap_bytes(uint64_t nbits)
{
	return iod_bitmap_words(nbits) * sizeof(uint64_t);
}

static inline bool iod_bitmap_test(const uint64_t *map, uint64_t bit)
{
	return (map[bit / 64] >> (bit % 64)) & 1;
}

/* Set / clear bits [start, start + n) of a bitmap of nbits bits. */
int iod_bitmap_set_range(uint64_t *map, uint64_t nbits, uint64_t start, uint64_t n);
int iod_bitmap_clear_range(uint64_t *map, uint64_t nbits, uint64_t start, uint64_t n);

/*
 * OR-merge: dst[dst_off + i] |= src[src_off + i] for 0 <= i < n, where dst has dst_nbits
 * bits and src has src_nbits bits. Offsets may be any bit position (the IOVA->GPA shift);
 * bits of dst outside the target range are never changed. src and dst must not overlap.
 */
int iod_bitmap_or(uint64_t *dst, uint64_t dst_nbits, uint64_t dst_off, const uint64_t *src,
		  uint64_t src_nbits, uint64_t src_off, uint64_t n);

/* Number of set bits in [start, start + n). *ret is written only on success. */
int iod_bitmap_count(const uint64_t *map, uint64_t nbits, uint64_t start, uint64_t n,
		     uint64_t *ret);

/* true if no bit in [start, start + n) is set (false also for an invalid range). */
bool iod_bitmap_is_empty(const uint64_t *map, uint64_t nbits, uint64_t start, uint64_t n);

/*
 * First set (clear) bit at or after start, or nbits if there is none (also when
 * start >= nbits).
 */
uint64_t iod_bitmap_find_next_set(const uint64_t *map, uint64_t nbits, uint64_t start);
uint64_t iod_bitmap_find_next_clear(const uint64_t *map, uint64_t nbits, uint64_t start);

/*
 * Rescale between page sizes. src has src_nbits bits of (1 << src_shift)-byte pages and
 * describes the same address range as dst, which has dst_nbits bits of (1 << dst_shift)-byte
 * pages, both starting at address 0 of that range.
 * - To a larger page (e.g. 2 KiB -> 4 KiB, 4 KiB -> 2 MiB): a dst bit is set when any src
 *   page it covers is set.
 * - To a smaller page (e.g. 4 KiB -> 2 KiB): every dst page inside a set src page is set.
 * Bits are OR-ed into dst (dst is not cleared first). The page sizes may differ by any
 * power of two (shifts 0..63). dst_nbits must equal the number of dst pages that cover
 * src_nbits src pages (rounded up when rescaling to a larger page), else -EINVAL.
 */
int iod_bitmap_rescale(uint64_t *dst, uint64_t dst_nbits, unsigned dst_shift, const uint64_t *src,
		       uint64_t src_nbits, unsigned src_shift);

/*
 * The number of dst bits iod_bitmap_rescale() expects for these sizes; UINT64_MAX when that
 * number does not fit in 64 bits or a shift is above 63.
 */
uint64_t iod_bitmap_rescaled_nbits(uint64_t src_nbits, unsigned src_shift, unsigned dst_shift);

/* A run of set bits (or, by extension, of pages or bytes): [start, start + length). */
struct iod_range {
	uint64_t start;
	uint64_t length;
};

/*
 * Encode the runs of set bits of [start, nbits) as ranges, in order, into ranges[0..max).
 * Stops when the array is full: *ret_n is the number written and *ret_next the bit to
 * continue from (nbits when all runs were encoded). A run cut by a full array continues in
 * the next call (ret_next may be NULL). Returns 0, or -EINVAL for start > nbits or max == 0
 * with runs left.
 */
int iod_bitmap_to_ranges(const uint64_t *map, uint64_t nbits, uint64_t start,
			 struct iod_range *ranges, size_t max, size_t *ret_n, uint64_t *ret_next);

/*
 * Set the bits of every range (OR). Validates all ranges first: a range that is empty,
 * overflows or runs past nbits gives -EINVAL and the bitmap is left unchanged.
 */
int iod_bitmap_from_ranges(uint64_t *map, uint64_t nbits, const struct iod_range *ranges, size_t n);

#endif
