/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Debug hooks of the IOVA -> GPA map, for the unit tests only. Not installed, not part of
 * the public API.
 */
#ifndef IOD_IOVA_MAP_INTERNAL_H
#define IOD_IOVA_MAP_INTERNAL_H

#include "iod-iova-map.h"

/*
 * Walk the whole tree and check every invariant: search order, no overlaps, parent links,
 * cached heights, AVL balance (|height(left) - height(right)| <= 1 at every node), entry
 * sanity (length > 0, no wrap) and the cached count and byte total.
 * Returns 0, or -EUCLEAN if anything is off.
 */
int iod_iova_map_check_invariants(const struct iod_iova_map *m);

/* Height of the tree: 0 when empty, 1 for a single entry. */
unsigned iod_iova_map_height(const struct iod_iova_map *m);

/*
 * Fault injection: make the map's next n node allocations fail with -ENOMEM (process-wide;
 * 0 turns it off).
 */
void iod_iova_map_debug_fail_allocs(unsigned n);

#endif
