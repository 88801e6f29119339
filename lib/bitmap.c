/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bitmap engine (see iod-bitmap.h for the contract). Everything works a word at a time:
 * partial words at the edges of a range are handled with masks, whole words in between with
 * straight loops, two words per operation where the compiler's vector extension helps.
 * Nothing here allocates or logs.
 */
#include <errno.h>
#include <string.h>

#include "iod-bitmap.h"
#include "iod-util.h"

#define ALL_ONES UINT64_MAX

/* The low n bits set, n in [0, 64]; a constant expression for constant n. */
#define LOW_BITS(n) ((n) >= 64 ? ALL_ONES : (UINT64_C(1) << ((n) % 64)) - 1)
/* The low width bits of every period-bit group set (period a power of two, width <= period). */
#define REPEAT_BITS(width, period) ((ALL_ONES / LOW_BITS(period)) * LOW_BITS(width))

static inline uint64_t mask_low(unsigned n)
{
	return LOW_BITS(n);
}

/* Bits [n, 64) set, n in [0, 63]. */
static inline uint64_t mask_from(unsigned n)
{
	return ALL_ONES << n;
}

static inline unsigned popcount64(uint64_t x)
{
#ifdef __POPCNT__
	return __builtin_popcountll(x);
#else
	/* Without a popcount instruction the builtin becomes a library call; add in place. */
	x -= (x >> 1) & REPEAT_BITS(1, 2);
	x = (x & REPEAT_BITS(2, 4)) + ((x >> 2) & REPEAT_BITS(2, 4));
	x = (x + (x >> 4)) & REPEAT_BITS(4, 8);
	return (x * REPEAT_BITS(1, 8)) >> 56;
#endif
}

/* [start, start + n) lies inside a bitmap of nbits bits, without overflow. */
static inline bool range_valid(uint64_t nbits, uint64_t start, uint64_t n)
{
	uint64_t end;

	return !iod_add_overflow(start, n, &end) && end <= nbits;
}

/* Mask of the valid bits of the last word of an nbits-bit bitmap (nbits > 0). */
static inline uint64_t last_word_mask(uint64_t nbits)
{
	return mask_low((nbits - 1) % 64 + 1);
}

/*
 * Two words at a time through the compiler's generic vector extension (GCC, clang): SSE2 on
 * x86-64, NEON on arm64, pairs of scalar operations elsewhere. Loads and stores go through
 * memcpy(), so neither alignment nor aliasing is assumed.
 */
typedef uint64_t vec_u64 __attribute__((vector_size(16)));

static inline vec_u64 vload(const uint64_t *p)
{
	vec_u64 v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void vstore(uint64_t *p, vec_u64 v)
{
	memcpy(p, &v, sizeof(v));
}

/*
 * The ratio-2 rescale kernels also move bytes between lanes. That needs a shuffle builtin
 * (GCC 12+, clang) and a little-endian host, where byte j of a vector holds bits 8j..8j+7 of
 * the bitmap; elsewhere the word-at-a-time kernels do all the work.
 */
#if defined(__has_builtin) && defined(__BYTE_ORDER__)
#if __has_builtin(__builtin_shufflevector) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HAVE_BYTE_SHUFFLE 1
typedef uint8_t vec_u8 __attribute__((vector_size(16)));
#endif
#endif

/*
 * Streaming through a bitmap much larger than the caches, the hardware prefetcher alone
 * keeps too few lines in flight as soon as there is real work per word. Hinting the line
 * PREFETCH_AHEAD words (4 KiB) ahead brings these loops to memory speed. Only lines inside
 * the bitmap are hinted.
 */
#define PREFETCH_AHEAD 512

static inline void prefetch_read(const uint64_t *p, uint64_t i, uint64_t n)
{
	if (i + PREFETCH_AHEAD < n)
		__builtin_prefetch(p + i + PREFETCH_AHEAD, 0);
}

static inline void prefetch_write(uint64_t *p, uint64_t i, uint64_t n)
{
	if (i + PREFETCH_AHEAD < n)
		__builtin_prefetch(p + i + PREFETCH_AHEAD, 1);
}

/* --- set / clear ------------------------------------------------------------------------- */

static void fill_range(uint64_t *map, uint64_t start, uint64_t n, bool set)
{
	uint64_t first = start / 64, last = (start + n - 1) / 64;
	uint64_t head = mask_from(start % 64), tail = mask_low((start + n - 1) % 64 + 1);

	if (first == last)
		head &= tail;
	if (set)
		map[first] |= head;
	else
		map[first] &= ~head;
	if (first == last)
		return;

	memset(map + first + 1, set ? 0xff : 0, (last - first - 1) * sizeof(uint64_t));
	if (set)
		map[last] |= tail;
	else
		map[last] &= ~tail;
}

int iod_bitmap_set_range(uint64_t *map, uint64_t nbits, uint64_t start, uint64_t n)
{
	if (!range_valid(nbits, start, n))
		return -EINVAL;
	if (n > 0)
		fill_range(map, start, n, true);
	return 0;
}

int iod_bitmap_clear_range(uint64_t *map, uint64_t nbits, uint64_t start, uint64_t n)
{
	if (!range_valid(nbits, start, n))
		return -EINVAL;
	if (n > 0)
		fill_range(map, start, n, false);
	return 0;
}

/* --- OR-merge ---------------------------------------------------------------------------- */

/*
 * n bits (1..64) of src starting at bit pos, in the low bits of the result. Reads only the
 * words that hold [pos, pos + n).
 */
static inline uint64_t get_bits(const uint64_t *src, uint64_t pos, unsigned n)
{
	const uint64_t *p = src + pos / 64;
	unsigned o = pos % 64;
	uint64_t v = p[0] >> o;

	if (o + n > 64)
		v |= p[1] << (64 - o);
	return v & mask_low(n);
}

/*
 * dst[i] |= the 64 bits of src starting at bit shift of src[i], for i < nwords. With
 * shift > 0 this reads src[0..nwords], which the caller guarantees lie inside the range.
 */
static void or_words(uint64_t *dst, const uint64_t *src, unsigned shift, uint64_t nwords)
{
	uint64_t i = 0;

	if (shift == 0) {
		for (; i + 8 <= nwords; i += 8) {
			prefetch_read(src, i, nwords);
			prefetch_write(dst, i, nwords);
#pragma GCC unroll 4
			for (unsigned j = 0; j < 8; j += 2)
				vstore(dst + i + j, vload(dst + i + j) | vload(src + i + j));
		}
		for (; i < nwords; i++)
			dst[i] |= src[i];
		return;
	}

	for (; i + 8 <= nwords; i += 8) {
		prefetch_read(src, i, nwords);
		prefetch_write(dst, i, nwords);
#pragma GCC unroll 4
		for (unsigned j = 0; j < 8; j += 2)
			vstore(dst + i + j, vload(dst + i + j) | (vload(src + i + j) >> shift) |
						    (vload(src + i + j + 1) << (64 - shift)));
	}
	for (; i < nwords; i++)
		dst[i] |= (src[i] >> shift) | (src[i + 1] << (64 - shift));
}

int iod_bitmap_or(uint64_t *dst, uint64_t dst_nbits, uint64_t dst_off, const uint64_t *src,
		  uint64_t src_nbits, uint64_t src_off, uint64_t n)
{
	uint64_t nwords;
	unsigned d;

	if (!range_valid(dst_nbits, dst_off, n) || !range_valid(src_nbits, src_off, n))
		return -EINVAL;
	if (n == 0)
		return 0;

	/* Bring dst to a word boundary; from there on every dst word is whole but the last. */
	dst += dst_off / 64;
	d = dst_off % 64;
	if (d > 0) {
		unsigned h = MIN(n, 64 - d);

		*dst++ |= get_bits(src, src_off, h) << d;
		src_off += h;
		n -= h;
	}

	/* Word-aligned dst; src shifted by a fixed amount (0 when both offsets agree mod 64). */
	nwords = n / 64;
	or_words(dst, src + src_off / 64, src_off % 64, nwords);
	dst += nwords;
	src_off += nwords * 64;
	n %= 64;

	if (n > 0)
		*dst |= get_bits(src, src_off, n);
	return 0;
}

/* --- count, emptiness, search ------------------------------------------------------------ */

/* Carry-save adder: h:l = a + b + c, bit-sliced over every bit of the vectors. */
static inline void csa(vec_u64 *h, vec_u64 *l, vec_u64 a, vec_u64 b, vec_u64 c)
{
	vec_u64 u = a ^ b;

	*h = (a & b) | (u & c);
	*l = u ^ c;
}

static inline uint64_t popcount_vec(vec_u64 v)
{
	return popcount64(v[0]) + popcount64(v[1]);
}

/*
 * Set bits in p[0..n). Harley-Seal: 32 words at a time are folded through carry-save adders
 * into weighted accumulators, so only two words in 32 need a full popcount.
 */
static uint64_t popcount_words(const uint64_t *p, uint64_t n)
{
	vec_u64 ones = {0, 0}, twos = {0, 0}, fours = {0, 0}, eights = {0, 0};
	vec_u64 twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, sixteens;
	uint64_t total = 0, i = 0;

	for (; i + 32 <= n; i += 32) {
		const uint64_t *q = p + i;

#pragma GCC unroll 4
		for (unsigned j = 0; j < 32; j += 8)
			prefetch_read(p, i + j, n);
		csa(&twos_a, &ones, ones, vload(q), vload(q + 2));
		csa(&twos_b, &ones, ones, vload(q + 4), vload(q + 6));
		csa(&fours_a, &twos, twos, twos_a, twos_b);
		csa(&twos_a, &ones, ones, vload(q + 8), vload(q + 10));
		csa(&twos_b, &ones, ones, vload(q + 12), vload(q + 14));
		csa(&fours_b, &twos, twos, twos_a, twos_b);
		csa(&eights_a, &fours, fours, fours_a, fours_b);
		csa(&twos_a, &ones, ones, vload(q + 16), vload(q + 18));
		csa(&twos_b, &ones, ones, vload(q + 20), vload(q + 22));
		csa(&fours_a, &twos, twos, twos_a, twos_b);
		csa(&twos_a, &ones, ones, vload(q + 24), vload(q + 26));
		csa(&twos_b, &ones, ones, vload(q + 28), vload(q + 30));
		csa(&fours_b, &twos, twos, twos_a, twos_b);
		csa(&eights_b, &fours, fours, fours_a, fours_b);
		csa(&sixteens, &eights, eights, eights_a, eights_b);
		total += popcount_vec(sixteens);
	}
	total = 16 * total + 8 * popcount_vec(eights) + 4 * popcount_vec(fours) +
		2 * popcount_vec(twos) + popcount_vec(ones);
	for (; i < n; i++)
		total += popcount64(p[i]);
	return total;
}

int iod_bitmap_count(const uint64_t *map, uint64_t nbits, uint64_t start, uint64_t n, uint64_t *ret)
{
	uint64_t first, last, head, tail, c;

	if (!range_valid(nbits, start, n))
		return -EINVAL;
	if (n == 0) {
		*ret = 0;
		return 0;
	}

	first = start / 64;
	last = (start + n - 1) / 64;
	head = mask_from(start % 64);
	tail = mask_low((start + n - 1) % 64 + 1);
	if (first == last) {
		*ret = popcount64(map[first] & head & tail);
		return 0;
	}

	c = popcount64(map[first] & head) + popcount64(map[last] & tail);
	c += popcount_words(map + first + 1, last - first - 1);
	*ret = c;
	return 0;
}

/* Any bit set in p[0..n)? One branch per eight words. */
static inline bool words_nonzero(const uint64_t *p, uint64_t n)
{
	uint64_t acc = 0, i = 0;

	for (; i + 8 <= n; i += 8) {
		prefetch_read(p, i, n);
		if (p[i] | p[i + 1] | p[i + 2] | p[i + 3] | p[i + 4] | p[i + 5] | p[i + 6] |
		    p[i + 7])
			return true;
	}
	for (; i < n; i++)
		acc |= p[i];
	return acc != 0;
}

bool iod_bitmap_is_empty(const uint64_t *map, uint64_t nbits, uint64_t start, uint64_t n)
{
	uint64_t first, last, head, tail;

	if (!range_valid(nbits, start, n))
		return false;
	if (n == 0)
		return true;

	first = start / 64;
	last = (start + n - 1) / 64;
	head = mask_from(start % 64);
	tail = mask_low((start + n - 1) % 64 + 1);
	if (first == last)
		return !(map[first] & head & tail);
	if ((map[first] & head) || (map[last] & tail))
		return false;
	return !words_nonzero(map + first + 1, last - first - 1);
}

/*
 * Bit j set for each of the eight words p[0..8) that differs from skip; computed without
 * branches, as the place where a gap ends cannot be predicted.
 */
static inline unsigned differing_words(const uint64_t *p, uint64_t skip)
{
	unsigned m = 0;

#pragma GCC unroll 8
	for (unsigned j = 0; j < 8; j++)
		m |= (unsigned)(p[j] != skip) << j;
	return m;
}

/* The first word at or after i, below nw, that is not equal to skip; nw if there is none. */
static inline uint64_t skip_words(const uint64_t *map, uint64_t i, uint64_t nw, uint64_t skip)
{
	/* One branch per eight words (a cache line). */
	for (; i + 8 <= nw; i += 8) {
		const uint64_t *p = map + i;

		prefetch_read(map, i, nw);
		if ((p[0] ^ skip) | (p[1] ^ skip) | (p[2] ^ skip) | (p[3] ^ skip) | (p[4] ^ skip) |
		    (p[5] ^ skip) | (p[6] ^ skip) | (p[7] ^ skip))
			return i + __builtin_ctz(differing_words(p, skip));
	}
	for (; i < nw; i++)
		if (map[i] != skip)
			return i;
	return nw;
}

/* First bit at or after start that differs from the bits of skip (0: set, ALL_ONES: clear). */
static inline uint64_t find_next(const uint64_t *map, uint64_t nbits, uint64_t start, uint64_t skip)
{
	uint64_t w, v, bit;

	if (start >= nbits)
		return nbits;

	w = start / 64;
	v = (map[w] ^ skip) & mask_from(start % 64);
	if (!v) {
		uint64_t nw = iod_bitmap_words(nbits);

		w = skip_words(map, w + 1, nw, skip);
		if (w == nw)
			return nbits;
		v = map[w] ^ skip;
	}
	/* Bits past nbits in the last word are not part of the bitmap. */
	bit = w * 64 + __builtin_ctzll(v);
	return MIN(bit, nbits);
}

uint64_t iod_bitmap_find_next_set(const uint64_t *map, uint64_t nbits, uint64_t start)
{
	return find_next(map, nbits, start, 0);
}

uint64_t iod_bitmap_find_next_clear(const uint64_t *map, uint64_t nbits, uint64_t start)
{
	return find_next(map, nbits, start, ALL_ONES);
}

/* --- rescale ----------------------------------------------------------------------------- */

uint64_t iod_bitmap_rescaled_nbits(uint64_t src_nbits, unsigned src_shift, unsigned dst_shift)
{
	unsigned k;

	if (src_shift > 63 || dst_shift > 63)
		return UINT64_MAX;
	if (dst_shift >= src_shift) {
		k = dst_shift - src_shift;
		return (src_nbits >> k) + !!(src_nbits & mask_low(k));
	}
	k = src_shift - dst_shift;
	if (src_nbits > (UINT64_MAX >> k))
		return UINT64_MAX;
	return src_nbits << k;
}

/*
 * Ratio 2^k with k in 1..5: one word holds 64 >> k groups of 2^k bits. squeeze() ORs each
 * group into one bit and packs those bits into the low 64 >> k bits; spread() is its
 * inverse, turning each of the low 64 >> k bits into a group of 2^k equal bits. Both are
 * straight-line shift-and-mask sequences once k is a constant.
 */
static inline __attribute__((always_inline)) uint64_t squeeze(uint64_t w, const unsigned k)
{
	/* OR every group into its lowest bit. */
#pragma GCC unroll 8
	for (unsigned b = 0; b < k; b++)
		w |= w >> (1u << b);
	w &= REPEAT_BITS(1, 1u << k);

	/* Pack: runs of g bits spaced G apart become runs of 2g bits spaced 2G apart. */
#pragma GCC unroll 8
	for (unsigned j = k; j < 6; j++) {
		unsigned G = 1u << j, g = G >> k;

		w = (w | (w >> (G - g))) & REPEAT_BITS(2 * g, 2 * G);
	}
	return w;
}

static inline __attribute__((always_inline)) uint64_t spread(uint64_t w, const unsigned k)
{
	/* Unpack the low 64 >> k bits to one bit every 2^k, the reverse of squeeze(). */
#pragma GCC unroll 8
	for (unsigned step = 0; step < 6 - k; step++) {
		unsigned G = 32u >> step, g = G >> k;

		w = (w | (w << (G - g))) & REPEAT_BITS(g, G);
	}
	/* Each group holds at most its lowest bit: multiplying copies it without carries. */
	return w * LOW_BITS(1u << k);
}

/* dst[i] |= the squeezed src[i << k .. (i + 1) << k), for i < ndst. */
static inline __attribute__((always_inline)) void compress_words(uint64_t *dst, const uint64_t *src,
								 uint64_t ndst, const unsigned k)
{
	const unsigned r = 1u << k, per = 64 >> k;

	for (uint64_t i = 0; i < ndst; i++) {
		const uint64_t *s = src + (i << k);
		uint64_t v = 0;

		for (unsigned j = 0; j < r; j++)
			v |= squeeze(s[j], k) << (j * per);
		dst[i] |= v;
	}
}

/* dst[i << k .. (i + 1) << k) |= the spread src[i], for i < nsrc. */
static inline __attribute__((always_inline)) void expand_words(uint64_t *dst, const uint64_t *src,
							       uint64_t nsrc, const unsigned k)
{
	const unsigned r = 1u << k, per = 64 >> k;

	for (uint64_t i = 0; i < nsrc; i++) {
		uint64_t *d = dst + (i << k);
		uint64_t w = src[i];

		for (unsigned j = 0; j < r; j++)
			d[j] |= spread((w >> (j * per)) & LOW_BITS(per), k);
	}
}

#ifdef HAVE_BYTE_SHUFFLE
/*
 * Ratio 2, sixteen bits at a time: squeeze within every 16-bit lane, leaving its 8 result
 * bits in the lane's low byte, so that one byte shuffle packs two vectors (four src words)
 * into two dst words. Returns the number of dst words done.
 */
static uint64_t compress2_vec(uint64_t *dst, const uint64_t *src, uint64_t ndst)
{
	uint64_t i = 0;

	for (; i + 4 <= ndst; i += 4) {
		const uint64_t *s = src + 2 * i;

		prefetch_read(src, 2 * i, 2 * ndst);
		prefetch_write(dst, i, ndst);
#pragma GCC unroll 2
		for (unsigned j = 0; j < 4; j += 2) {
			vec_u64 a = vload(s + 2 * j), b = vload(s + 2 * j + 2);
			vec_u8 packed;

			a = (a | (a >> 1)) & REPEAT_BITS(1, 2);
			b = (b | (b >> 1)) & REPEAT_BITS(1, 2);
			a = (a | (a >> 1)) & REPEAT_BITS(2, 4);
			b = (b | (b >> 1)) & REPEAT_BITS(2, 4);
			a = (a | (a >> 2)) & REPEAT_BITS(4, 8);
			b = (b | (b >> 2)) & REPEAT_BITS(4, 8);
			a |= a >> 4; /* the shuffle below keeps only the low byte */
			b |= b >> 4;
			packed = __builtin_shufflevector((vec_u8)a, (vec_u8)b, 0, 2, 4, 6, 8, 10,
							 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
			vstore(dst + i + j, vload(dst + i + j) | (vec_u64)packed);
		}
	}
	return i;
}

/*
 * Ratio 2 the other way: every src byte widens to a 16-bit lane (a byte interleave with
 * itself, high copy masked off), each bit doubled within the lane.
 */
static inline vec_u64 spread2_lanes(vec_u64 w)
{
	w &= REPEAT_BITS(8, 16);
	w = (w | (w << 4)) & REPEAT_BITS(4, 8);
	w = (w | (w << 2)) & REPEAT_BITS(2, 4);
	w = (w | (w << 1)) & REPEAT_BITS(1, 2);
	return w | (w << 1);
}

/* Returns the number of src words done. */
static uint64_t expand2_vec(uint64_t *dst, const uint64_t *src, uint64_t nsrc)
{
	uint64_t i = 0;

	for (; i + 4 <= nsrc; i += 4) {
		uint64_t *d = dst + 2 * i;

		prefetch_read(src, i, nsrc);
		prefetch_write(dst, 2 * i, 2 * nsrc);
#pragma GCC unroll 2
		for (unsigned j = 0; j < 4; j += 2) {
			vec_u8 v = (vec_u8)vload(src + i + j);
			vec_u64 lo, hi;

			lo = (vec_u64)__builtin_shufflevector(v, v, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5,
							      5, 6, 6, 7, 7);
			hi = (vec_u64)__builtin_shufflevector(v, v, 8, 8, 9, 9, 10, 10, 11, 11, 12,
							      12, 13, 13, 14, 14, 15, 15);
			vstore(d + 2 * j, vload(d + 2 * j) | spread2_lanes(lo));
			vstore(d + 2 * j + 2, vload(d + 2 * j + 2) | spread2_lanes(hi));
		}
	}
	return i;
}
#endif

/* Dispatch to a copy of the kernel compiled for a constant k (1..5). */
static void compress_small(uint64_t *dst, const uint64_t *src, uint64_t ndst, unsigned k)
{
	switch (k) {
	case 1: {
		uint64_t done = 0;
#ifdef HAVE_BYTE_SHUFFLE
		done = compress2_vec(dst, src, ndst);
#endif
		compress_words(dst + done, src + 2 * done, ndst - done, 1);
		break;
	}
	case 2:
		compress_words(dst, src, ndst, 2);
		break;
	case 3:
		compress_words(dst, src, ndst, 3);
		break;
	case 4:
		compress_words(dst, src, ndst, 4);
		break;
	default:
		compress_words(dst, src, ndst, 5);
		break;
	}
}

static void expand_small(uint64_t *dst, const uint64_t *src, uint64_t nsrc, unsigned k)
{
	switch (k) {
	case 1: {
		uint64_t done = 0;
#ifdef HAVE_BYTE_SHUFFLE
		done = expand2_vec(dst, src, nsrc);
#endif
		expand_words(dst + 2 * done, src + done, nsrc - done, 1);
		break;
	}
	case 2:
		expand_words(dst, src, nsrc, 2);
		break;
	case 3:
		expand_words(dst, src, nsrc, 3);
		break;
	case 4:
		expand_words(dst, src, nsrc, 4);
		break;
	default:
		expand_words(dst, src, nsrc, 5);
		break;
	}
}

/*
 * To a page 2^k times larger, k in 1..5. Whole dst words come straight from whole src words;
 * the last dst word, which may draw on fewer than 2^k words and a partial one, is built
 * from a zero-padded copy so that nothing past src_nbits is read or counted.
 */
static void rescale_up_small(uint64_t *dst, const uint64_t *src, uint64_t src_nbits, unsigned k)
{
	uint64_t full = src_nbits / 64, nsrc = iod_bitmap_words(src_nbits);
	uint64_t ndst = full >> k, rest = nsrc - (ndst << k);
	uint64_t tmp[32] = {};

	compress_small(dst, src, ndst, k);
	if (rest == 0)
		return;
	memcpy(tmp, src + (ndst << k), rest * sizeof(uint64_t));
	tmp[rest - 1] &= last_word_mask(src_nbits);
	compress_small(dst + ndst, tmp, 1, k);
}

/* To a page 2^k times smaller, k in 1..5; the last src word may be partial. */
static void rescale_down_small(uint64_t *dst, uint64_t dst_nbits, const uint64_t *src,
			       uint64_t src_nbits, unsigned k)
{
	uint64_t full = src_nbits / 64, left;
	uint64_t tmp[32] = {}, w;

	expand_small(dst, src, full, k);
	if (src_nbits % 64 == 0)
		return;
	w = src[full] & last_word_mask(src_nbits);
	expand_small(tmp, &w, 1, k);
	left = iod_bitmap_words(dst_nbits) - (full << k);
	dst += full << k;
	for (uint64_t i = 0; i < left; i++)
		dst[i] |= tmp[i];
}

/*
 * To a page 2^k times larger, k >= 6: dst bit b covers the q = 2^(k-6) src words from b * q,
 * and is set if any of them is non-zero. Only the last dst bit can cover a short or partial
 * tail of src.
 */
static void rescale_up_large(uint64_t *dst, uint64_t dst_nbits, const uint64_t *src,
			     uint64_t src_nbits, unsigned k)
{
	uint64_t q = UINT64_C(1) << (k - 6), full = src_nbits / 64;
	uint64_t nb = full / q; /* dst bits backed by q whole src words */

	for (uint64_t i = 0; i * 64 < nb; i++) {
		uint64_t bits = MIN(64, nb - i * 64), v = 0;
		const uint64_t *s = src + i * 64 * q;

		if (q == 1) {
			for (unsigned b = 0; b < bits; b++) {
				if (b % 8 == 0)
					prefetch_read(src, i * 64 + b, full);
				v |= (uint64_t)(s[b] != 0) << b;
			}
		} else {
			for (unsigned b = 0; b < bits; b++) {
				prefetch_read(src, (i * 64 + b) * q, full);
				v |= (uint64_t)words_nonzero(s + b * q, q) << b;
			}
		}
		dst[i] |= v;
	}

	if (nb < dst_nbits) {
		/* The last dst bit: the remaining whole words plus the partial word, if any. */
		const uint64_t *s = src + nb * q;
		uint64_t nfull = full - nb * q;
		bool any = words_nonzero(s, nfull);

		if (src_nbits % 64)
			any = any || (s[nfull] & last_word_mask(src_nbits));
		if (any)
			dst[nb / 64] |= UINT64_C(1) << (nb % 64);
	}
}

/* To a page 2^k times smaller, k >= 6: each set src bit fills q = 2^(k-6) whole dst words. */
static void rescale_down_large(uint64_t *dst, const uint64_t *src, uint64_t src_nbits, unsigned k)
{
	uint64_t q = UINT64_C(1) << (k - 6), nsrc = iod_bitmap_words(src_nbits);

	for (uint64_t i = 0; i < nsrc; i++) {
		uint64_t w = src[i];

		if (i == nsrc - 1)
			w &= last_word_mask(src_nbits);
		while (w) {
			uint64_t *d = dst + (i * 64 + __builtin_ctzll(w)) * q;

			if (q == 1)
				*d = ALL_ONES;
			else
				memset(d, 0xff, q * sizeof(uint64_t));
			w &= w - 1;
		}
	}
}

int iod_bitmap_rescale(uint64_t *dst, uint64_t dst_nbits, unsigned dst_shift, const uint64_t *src,
		       uint64_t src_nbits, unsigned src_shift)
{
	unsigned k;

	if (src_shift > 63 || dst_shift > 63)
		return -EINVAL;
	if (iod_bitmap_rescaled_nbits(src_nbits, src_shift, dst_shift) != dst_nbits)
		return -EINVAL;
	/* The overflow marker only equals a real size when no rescaling happens. */
	if (dst_nbits == UINT64_MAX && src_shift != dst_shift)
		return -EINVAL;
	if (src_nbits == 0)
		return 0;

	if (src_shift == dst_shift)
		return iod_bitmap_or(dst, dst_nbits, 0, src, src_nbits, 0, src_nbits);

	if (dst_shift > src_shift) {
		k = dst_shift - src_shift;
		if (k < 6)
			rescale_up_small(dst, src, src_nbits, k);
		else
			rescale_up_large(dst, dst_nbits, src, src_nbits, k);
	} else {
		k = src_shift - dst_shift;
		if (k < 6)
			rescale_down_small(dst, dst_nbits, src, src_nbits, k);
		else
			rescale_down_large(dst, src, src_nbits, k);
	}
	return 0;
}

/* --- ranges ------------------------------------------------------------------------------ */

/*
 * Runs are found from their edges: in word v, whose previous bit is carry, the bits of
 * v ^ (v << 1 | carry) mark where a run starts (the bit is set) or ends (it is clear).
 * Only words with a set bit, or right after one, can hold an edge; the rest are skipped.
 */
struct range_scan {
	struct iod_range *ranges;
	size_t max, n;
	uint64_t run_start;
	uint64_t next; /* where a full array stopped */
};

static inline uint64_t edges(uint64_t v, uint64_t carry)
{
	return v ^ ((v << 1) | carry);
}

/* Record the edges e of word v (bits base..base+63). false: the array is full. */
static inline bool scan_edges(struct range_scan *sc, uint64_t v, uint64_t e, uint64_t base)
{
	while (e) {
		unsigned b = __builtin_ctzll(e);

		e &= e - 1;
		if ((v >> b) & 1) {
			if (_unlikely_(sc->n == sc->max)) {
				sc->next = base + b;
				return false;
			}
			sc->run_start = base + b;
		} else {
			/* A run only starts with room for it, so its end always fits. */
			sc->ranges[sc->n++] = (struct iod_range){
				.start = sc->run_start,
				.length = base + b - sc->run_start,
			};
		}
	}
	return true;
}

/*
 * Word w of map, w > 0, not zero. The common case of a sparse bitmap, a single run inside
 * the word touching neither end, is taken without walking its edges: adding the lowest set
 * bit clears that run and sets the bit just past it.
 *
 * Zero words are never visited, yet one can hold an edge: the end, at its bit 0, of a run
 * through the top bit of the word before. That end is recorded here, from the word before,
 * when the next word is zero and below end (the caller visits the word at end itself).
 */
static inline bool scan_word(struct range_scan *sc, const uint64_t *map, uint64_t w, uint64_t end)
{
	uint64_t v = map[w], carry = map[w - 1] >> 63, t = v + (v & -v);

	if (_likely_(t != 0 && ((t & v) | carry) == 0)) {
		unsigned s = __builtin_ctzll(v);

		if (_unlikely_(sc->n == sc->max)) {
			sc->next = w * 64 + s;
			return false;
		}
		sc->ranges[sc->n++] = (struct iod_range){
			.start = w * 64 + s,
			.length = __builtin_ctzll(t) - s,
		};
		return true;
	}
	if (!scan_edges(sc, v, edges(v, carry), w * 64))
		return false;
	if ((v >> 63) && w + 1 < end && map[w + 1] == 0)
		sc->ranges[sc->n++] = (struct iod_range){
			.start = sc->run_start,
			.length = (w + 1) * 64 - sc->run_start,
		};
	return true;
}

/* Does the line p[0..8) have a set bit? */
static inline bool line_nonzero(const uint64_t *p)
{
	vec_u64 acc = vload(p) | vload(p + 2) | vload(p + 4) | vload(p + 6);

	return (acc[0] | acc[1]) != 0;
}

/*
 * Words [i, end) of map, i > 0; the bit before them is the top bit of map[i - 1].
 *
 * At 0.1% random bits a third of the lines (eight words) hold a bit, at unpredictable
 * places: a loop that branches per line or per word mispredicts about once per run, and
 * that, not memory, would bound it. So a block of lines is done in three straight loops:
 * list the lines with a set bit; list the words of those lines with a set bit; walk just
 * those words (scan_word() takes care of the zero words that end a run). Lines ahead are
 * prefetched one at a time along the way, so that memory keeps streaming while the later
 * loops compute. false: the array is full.
 */
#define SCAN_BLOCK_LINES 128
/* How far ahead of the block being scanned lines are prefetched: 32 KiB, four blocks. */
#define SCAN_AHEAD_WORDS 4096

static bool scan_words(struct range_scan *state, const uint64_t *map, uint64_t i, uint64_t end)
{
	struct range_scan sc = *state; /* a local copy the compiler can keep in registers */
	uint16_t lines[SCAN_BLOCK_LINES], words[SCAN_BLOCK_LINES * 8];
	uint64_t ahead = i; /* the next line to prefetch */
	bool ok = true;

	/* The first blocks, to begin with. */
	for (; ahead < i + SCAN_AHEAD_WORDS && ahead + 8 <= end; ahead += 8)
		__builtin_prefetch(map + ahead);

	while (i + 8 <= end) {
		unsigned nlines = MIN((end - i) / 8, SCAN_BLOCK_LINES), k = 0, q = 0;
		uint64_t limit = MIN(i + SCAN_AHEAD_WORDS, end - 7);

		for (unsigned l = 0; l < nlines; l++) {
			lines[k] = l;
			k += line_nonzero(map + i + 8 * l);
		}

		for (unsigned x = 0; x < k; x++) {
			unsigned first = 8 * lines[x];
			const uint64_t *p = map + i + first;

			if (ahead < limit) {
				__builtin_prefetch(map + ahead);
				ahead += 8;
			}
#pragma GCC unroll 8
			for (unsigned j = 0; j < 8; j++) {
				words[q] = first + j;
				q += p[j] != 0;
			}
		}

		for (unsigned x = 0; x < q; x++) {
			uint64_t w = i + words[x];

			if (ahead < limit) {
				__builtin_prefetch(map + ahead);
				ahead += 8;
			}
			if (_unlikely_(!scan_word(&sc, map, w, end))) {
				ok = false;
				goto out;
			}
		}

		for (; ahead < limit; ahead += 8)
			__builtin_prefetch(map + ahead);
		i += 8 * nlines;
	}
	for (; i < end; i++) {
		if (map[i] && !scan_word(&sc, map, i, end)) {
			ok = false;
			break;
		}
	}
out:
	*state = sc;
	return ok;
}

int iod_bitmap_to_ranges(const uint64_t *map, uint64_t nbits, uint64_t start,
			 struct iod_range *ranges, size_t max, size_t *ret_n, uint64_t *ret_next)
{
	struct range_scan sc = {.ranges = ranges, .max = max, .next = nbits};
	uint64_t first, last, v, carry = 0;

	if (start > nbits)
		return -EINVAL;
	if (start == nbits)
		goto done;

	/* Bits before start and from nbits on read as clear: a run is cut at both ends. */
	first = start / 64;
	last = (nbits - 1) / 64;
	v = map[first] & mask_from(start % 64);
	if (first == last)
		v &= last_word_mask(nbits);
	if (!scan_edges(&sc, v, edges(v, 0), first * 64))
		goto full;
	carry = v >> 63;
	if (carry && first + 1 < last && map[first + 1] == 0) {
		/* See scan_word(): the end of a run in a zero word that is not visited. */
		sc.ranges[sc.n++] = (struct iod_range){
			.start = sc.run_start,
			.length = (first + 1) * 64 - sc.run_start,
		};
	}
	if (first < last) {
		if (!scan_words(&sc, map, first + 1, last))
			goto full;
		v = map[last] & last_word_mask(nbits);
		if (!scan_edges(&sc, v, edges(v, map[last - 1] >> 63), last * 64))
			goto full;
		carry = v >> 63;
	}
	/* A run through the last bit of a whole last word has no clear bit to end it. */
	if (carry)
		sc.ranges[sc.n++] = (struct iod_range){
			.start = sc.run_start,
			.length = nbits - sc.run_start,
		};
	goto done;

full:
	if (max == 0)
		return -EINVAL;
done:
	*ret_n = sc.n;
	if (ret_next)
		*ret_next = sc.next;
	return 0;
}

int iod_bitmap_from_ranges(uint64_t *map, uint64_t nbits, const struct iod_range *ranges, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ranges[i].length == 0 || !range_valid(nbits, ranges[i].start, ranges[i].length))
			return -EINVAL;
	for (size_t i = 0; i < n; i++)
		fill_range(map, ranges[i].start, ranges[i].length, true);
	return 0;
}
