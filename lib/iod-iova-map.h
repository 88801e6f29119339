/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The IOVA -> GPA map: an ordered map of non-overlapping IOVA intervals, each translating
 * linearly to a guest-physical range. Lookup, insert and removal are O(log n) (a balanced
 * search tree); removing any sub-range splits the entries it cuts. Sized for 100k+ entries.
 *
 * Without a vIOMMU a session maps IOVA = GPA; with one, the guest's map/unmap events build
 * this map. Different IOVAs may translate to the same GPA (aliases are legal); IOVA ranges
 * never overlap.
 */
#ifndef IOD_IOVA_MAP_H
#define IOD_IOVA_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct iod_iova_map;

struct iod_mapping {
	uint64_t iova;
	uint64_t gpa;
	uint64_t length; /* > 0; iova + length and gpa + length do not overflow */
};

int iod_iova_map_new(struct iod_iova_map **ret);
struct iod_iova_map *iod_iova_map_free(struct iod_iova_map *m);

/*
 * Add [iova, iova + length) -> [gpa, gpa + length).
 * -EINVAL: length 0; -EOVERFLOW: iova + length or gpa + length wraps past 2^64;
 * -EEXIST: the IOVA range overlaps an existing entry; -ENOMEM. The map is unchanged on error.
 * Adjacent entries are kept separate (an unmap of exactly one event's range stays exact).
 */
int iod_iova_map_insert(struct iod_iova_map *m, uint64_t iova, uint64_t gpa, uint64_t length);

/*
 * Remove whatever is mapped inside [iova, iova + length), splitting entries that straddle
 * either end. *ret_removed (may be NULL) gets the number of bytes that were mapped there.
 * -EINVAL: length 0; -EOVERFLOW: wraps; -ENOMEM: a split needed memory (map unchanged).
 * Removing an unmapped range is not an error (*ret_removed = 0).
 */
int iod_iova_map_remove(struct iod_iova_map *m, uint64_t iova, uint64_t length,
			uint64_t *ret_removed);

/* The entry containing iova, whole. -ENOENT if iova is not mapped. */
int iod_iova_map_lookup(const struct iod_iova_map *m, uint64_t iova, struct iod_mapping *ret);

/* GPA of iova. -ENOENT if not mapped. */
int iod_iova_map_translate(const struct iod_iova_map *m, uint64_t iova, uint64_t *ret_gpa);

/*
 * Call cb for every mapped piece inside [iova, iova + length), in IOVA order, each clipped to
 * the range (so piece->iova >= iova and the piece ends at or before iova + length). A
 * non-zero return from cb stops the walk and is returned. Returns 0 or -EINVAL/-EOVERFLOW
 * for a bad range. The map must not be changed from inside cb.
 */
typedef int (*iod_iova_map_cb)(const struct iod_mapping *piece, void *userdata);
int iod_iova_map_foreach(const struct iod_iova_map *m, uint64_t iova, uint64_t length,
			 iod_iova_map_cb cb, void *userdata);

/* Whole-map iteration in IOVA order: first entry, and the entry after cur (NULL at the end). */
const struct iod_mapping *iod_iova_map_first(const struct iod_iova_map *m);
const struct iod_mapping *iod_iova_map_next(const struct iod_iova_map *m,
					    const struct iod_mapping *cur);

size_t iod_iova_map_count(const struct iod_iova_map *m);
/* Total bytes mapped. */
uint64_t iod_iova_map_bytes(const struct iod_iova_map *m);

#endif
