/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The IOVA -> GPA map as an AVL tree keyed by IOVA. Nodes carry parent links, so in-order
 * successors are found without a stack and a node can be unlinked given only its address.
 * Every operation rebalances from the changed node up to the root, so each single insert or
 * erase is O(log n) and the tree height stays below 1.45 log2(n + 2).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "iod-iova-map.h"
#include "iod-util.h"
#include "iova-map-internal.h"

struct iova_node {
	struct iod_mapping m; /* first: iod_iova_map_first()/next() hand out &node->m */
	struct iova_node *left;
	struct iova_node *right;
	struct iova_node *parent;
	int height; /* of the subtree rooted here; a leaf has 1 */
};

struct iod_iova_map {
	struct iova_node *root;
	size_t count;
	uint64_t bytes;
};

static unsigned fail_allocs;

void iod_iova_map_debug_fail_allocs(unsigned n)
{
	fail_allocs = n;
}

static struct iova_node *node_new(uint64_t iova, uint64_t gpa, uint64_t length)
{
	struct iova_node *n;

	if (fail_allocs > 0) {
		fail_allocs--;
		return NULL;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->m = (struct iod_mapping){.iova = iova, .gpa = gpa, .length = length};
	n->height = 1;
	return n;
}

static inline struct iova_node *node_of(const struct iod_mapping *m)
{
	return (struct iova_node *)((char *)m - offsetof(struct iova_node, m));
}

/* Entries never wrap, so the exclusive end always fits (see insert). */
static inline uint64_t node_end(const struct iova_node *n)
{
	return n->m.iova + n->m.length;
}

static inline int height(const struct iova_node *n)
{
	return n ? n->height : 0;
}

static inline void update_height(struct iova_node *n)
{
	int l = height(n->left), r = height(n->right);

	n->height = 1 + (l > r ? l : r);
}

static struct iova_node *leftmost(struct iova_node *n)
{
	if (n)
		while (n->left)
			n = n->left;
	return n;
}

static struct iova_node *successor(struct iova_node *n)
{
	if (n->right)
		return leftmost(n->right);
	while (n->parent && n->parent->right == n)
		n = n->parent;
	return n->parent;
}

/* Make new take old's place under parent (or at the root). */
static void replace_child(struct iod_iova_map *m, struct iova_node *parent, struct iova_node *old,
			  struct iova_node *new)
{
	if (!parent)
		m->root = new;
	else if (parent->left == old)
		parent->left = new;
	else
		parent->right = new;
}

/*
 *     x              y
 *    / \            / \
 *   a   y    ->    x   c
 *      / \        / \
 *     b   c      a   b
 */
static struct iova_node *rotate_left(struct iod_iova_map *m, struct iova_node *x)
{
	struct iova_node *y = x->right;

	x->right = y->left;
	if (y->left)
		y->left->parent = x;
	y->parent = x->parent;
	replace_child(m, x->parent, x, y);
	y->left = x;
	x->parent = y;
	update_height(x);
	update_height(y);
	return y;
}

static struct iova_node *rotate_right(struct iod_iova_map *m, struct iova_node *x)
{
	struct iova_node *y = x->left;

	x->left = y->right;
	if (y->right)
		y->right->parent = x;
	y->parent = x->parent;
	replace_child(m, x->parent, x, y);
	y->right = x;
	x->parent = y;
	update_height(x);
	update_height(y);
	return y;
}

/* Restore heights and balance on the path from n up to the root. */
static void rebalance(struct iod_iova_map *m, struct iova_node *n)
{
	while (n) {
		int balance = height(n->left) - height(n->right);

		if (balance > 1) {
			if (height(n->left->left) < height(n->left->right))
				rotate_left(m, n->left);
			n = rotate_right(m, n);
		} else if (balance < -1) {
			if (height(n->right->right) < height(n->right->left))
				rotate_right(m, n->right);
			n = rotate_left(m, n);
		} else
			update_height(n);
		n = n->parent;
	}
}

/* Link a fresh node whose range is known not to overlap anything. Cannot fail. */
static void link_node(struct iod_iova_map *m, struct iova_node *node)
{
	struct iova_node **link = &m->root, *parent = NULL;

	while (*link) {
		parent = *link;
		link = node->m.iova < parent->m.iova ? &parent->left : &parent->right;
	}
	node->parent = parent;
	*link = node;
	rebalance(m, parent);

	m->count++;
	m->bytes += node->m.length;
}

/* Unlink a node (the caller frees it). */
static void unlink_node(struct iod_iova_map *m, struct iova_node *n)
{
	struct iova_node *fix;

	if (!n->left || !n->right) {
		struct iova_node *child = n->left ? n->left : n->right;

		replace_child(m, n->parent, n, child);
		if (child)
			child->parent = n->parent;
		fix = n->parent;
	} else {
		/* Put the in-order successor (no left child) in n's place. */
		struct iova_node *s = leftmost(n->right);

		if (s->parent != n) {
			fix = s->parent;
			fix->left = s->right;
			if (s->right)
				s->right->parent = fix;
			s->right = n->right;
			n->right->parent = s;
		} else
			fix = s;
		s->left = n->left;
		n->left->parent = s;
		s->parent = n->parent;
		replace_child(m, n->parent, n, s);
	}
	rebalance(m, fix);

	m->count--;
	m->bytes -= n->m.length;
}

/* The first entry that ends after addr: the one containing addr, or the next one. */
static struct iova_node *lower_bound(const struct iod_iova_map *m, uint64_t addr)
{
	struct iova_node *n = m->root, *found = NULL;

	while (n) {
		if (node_end(n) > addr) {
			found = n;
			if (n->m.iova <= addr)
				break;
			n = n->left;
		} else
			n = n->right;
	}
	return found;
}

static struct iova_node *find(const struct iod_iova_map *m, uint64_t iova)
{
	struct iova_node *n = lower_bound(m, iova);

	return n && n->m.iova <= iova ? n : NULL;
}

int iod_iova_map_new(struct iod_iova_map **ret)
{
	struct iod_iova_map *m;

	if (!ret)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	*ret = m;
	return 0;
}

struct iod_iova_map *iod_iova_map_free(struct iod_iova_map *m)
{
	struct iova_node *n;

	if (!m)
		return NULL;

	/* Post-order without recursion or rebalancing: detach each leaf from its parent. */
	n = m->root;
	while (n) {
		struct iova_node *p;

		if (n->left) {
			n = n->left;
			continue;
		}
		if (n->right) {
			n = n->right;
			continue;
		}
		p = n->parent;
		if (p) {
			if (p->left == n)
				p->left = NULL;
			else
				p->right = NULL;
		}
		free(n);
		n = p;
	}
	free(m);
	return NULL;
}

static int check_range(uint64_t iova, uint64_t length, uint64_t *ret_end)
{
	if (length == 0)
		return -EINVAL;
	if (iod_add_overflow(iova, length, ret_end))
		return -EOVERFLOW;
	return 0;
}

int iod_iova_map_insert(struct iod_iova_map *m, uint64_t iova, uint64_t gpa, uint64_t length)
{
	struct iova_node *n;
	uint64_t end, gpa_end;
	int r;

	if (!m)
		return -EINVAL;
	r = check_range(iova, length, &end);
	if (r < 0)
		return r;
	if (iod_add_overflow(gpa, length, &gpa_end))
		return -EOVERFLOW;

	n = lower_bound(m, iova);
	if (n && n->m.iova < end)
		return -EEXIST;

	n = node_new(iova, gpa, length);
	if (!n)
		return -ENOMEM;
	link_node(m, n);
	return 0;
}

int iod_iova_map_remove(struct iod_iova_map *m, uint64_t iova, uint64_t length,
			uint64_t *ret_removed)
{
	struct iova_node *n;
	uint64_t end, removed = 0;
	int r;

	if (!m)
		return -EINVAL;
	r = check_range(iova, length, &end);
	if (r < 0)
		return r;

	n = lower_bound(m, iova);
	if (n && n->m.iova < iova && node_end(n) > end) {
		/* Strictly inside one entry: keep the left part in place, add the right part. */
		uint64_t cut = end - n->m.iova;
		struct iova_node *right;

		right = node_new(end, n->m.gpa + cut, node_end(n) - end);
		if (!right)
			return -ENOMEM;
		removed = length;
		/* Drop the removed bytes and the right part; link_node() adds the latter back. */
		m->bytes -= n->m.length - (iova - n->m.iova);
		n->m.length = iova - n->m.iova;
		link_node(m, right);
		goto done;
	}

	while (n && n->m.iova < end) {
		struct iova_node *next = successor(n);
		uint64_t n_end = node_end(n);

		if (n->m.iova < iova) {
			/* Cut off the tail; the key is unchanged. */
			removed += n_end - iova;
			m->bytes -= n_end - iova;
			n->m.length = iova - n->m.iova;
		} else if (n_end > end) {
			/* Cut off the head. The key grows but stays below the successor's. */
			uint64_t cut = end - n->m.iova;

			removed += cut;
			m->bytes -= cut;
			n->m.iova = end;
			n->m.gpa += cut;
			n->m.length -= cut;
		} else {
			removed += n->m.length;
			unlink_node(m, n);
			free(n);
		}
		n = next;
	}

done:
	if (ret_removed)
		*ret_removed = removed;
	return 0;
}

int iod_iova_map_lookup(const struct iod_iova_map *m, uint64_t iova, struct iod_mapping *ret)
{
	struct iova_node *n;

	if (!m || !ret)
		return -EINVAL;
	n = find(m, iova);
	if (!n)
		return -ENOENT;
	*ret = n->m;
	return 0;
}

int iod_iova_map_translate(const struct iod_iova_map *m, uint64_t iova, uint64_t *ret_gpa)
{
	struct iova_node *n;

	if (!m || !ret_gpa)
		return -EINVAL;
	n = find(m, iova);
	if (!n)
		return -ENOENT;
	*ret_gpa = n->m.gpa + (iova - n->m.iova);
	return 0;
}

int iod_iova_map_foreach(const struct iod_iova_map *m, uint64_t iova, uint64_t length,
			 iod_iova_map_cb cb, void *userdata)
{
	struct iova_node *n;
	uint64_t end;
	int r;

	if (!m || !cb)
		return -EINVAL;
	r = check_range(iova, length, &end);
	if (r < 0)
		return r;

	for (n = lower_bound(m, iova); n && n->m.iova < end; n = successor(n)) {
		struct iod_mapping piece = n->m;
		uint64_t piece_end = node_end(n);

		if (piece.iova < iova) {
			piece.gpa += iova - piece.iova;
			piece.iova = iova;
		}
		if (piece_end > end)
			piece_end = end;
		piece.length = piece_end - piece.iova;

		r = cb(&piece, userdata);
		if (r != 0)
			return r;
	}
	return 0;
}

const struct iod_mapping *iod_iova_map_first(const struct iod_iova_map *m)
{
	struct iova_node *n;

	if (!m)
		return NULL;
	n = leftmost(m->root);
	return n ? &n->m : NULL;
}

const struct iod_mapping *iod_iova_map_next(const struct iod_iova_map *m,
					    const struct iod_mapping *cur)
{
	struct iova_node *n;

	if (!m || !cur)
		return NULL;
	n = successor(node_of(cur));
	return n ? &n->m : NULL;
}

size_t iod_iova_map_count(const struct iod_iova_map *m)
{
	return m ? m->count : 0;
}

uint64_t iod_iova_map_bytes(const struct iod_iova_map *m)
{
	return m ? m->bytes : 0;
}

unsigned iod_iova_map_height(const struct iod_iova_map *m)
{
	return m ? (unsigned)height(m->root) : 0;
}

struct check_walk {
	size_t count;
	uint64_t bytes;
	const struct iova_node *prev;
};

/* Returns the subtree height, or -1 on a broken invariant. Depth is bounded by the height. */
static int check_subtree(const struct iova_node *n, const struct iova_node *parent,
			 struct check_walk *w)
{
	uint64_t end;
	int l, r;

	if (!n)
		return 0;
	if (n->parent != parent)
		return -1;

	l = check_subtree(n->left, n, w);
	if (l < 0)
		return -1;

	if (n->m.length == 0 || iod_add_overflow(n->m.iova, n->m.length, &end) ||
	    iod_add_overflow(n->m.gpa, n->m.length, &end))
		return -1;
	if (w->prev && node_end(w->prev) > n->m.iova)
		return -1; /* out of order or overlapping */
	w->prev = n;
	w->count++;
	w->bytes += n->m.length;

	r = check_subtree(n->right, n, w);
	if (r < 0)
		return -1;

	if (l - r > 1 || r - l > 1)
		return -1;
	if (n->height != 1 + (l > r ? l : r))
		return -1;
	return n->height;
}

int iod_iova_map_check_invariants(const struct iod_iova_map *m)
{
	struct check_walk w = {};

	if (!m)
		return -EINVAL;
	if (check_subtree(m->root, NULL, &w) < 0)
		return -EUCLEAN;
	if (w.count != m->count || w.bytes != m->bytes)
		return -EUCLEAN;
	return 0;
}
