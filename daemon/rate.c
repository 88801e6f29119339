/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dirty rate's bookkeeping (rate.h): a pending interval and a ring of closed samples,
 * each holding, per HWPT, the number of pages read and their runs of GPA pages.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "iod-bitmap.h"
#include "iod-util.h"
#include "rate.h"

struct run {
	uint64_t page, n;
};

/* One HWPT's pages in one interval. */
struct part {
	uint32_t hwpt_id;
	uint64_t pages;
	struct run *runs;
	size_t n_runs, alloc;
};

struct sample {
	uint64_t start_usec, end_usec;
	uint64_t vm_pages; /* distinct pages of every HWPT */
	bool lost_runs; /* pages were counted without their runs */
	struct part *parts;
	size_t n_parts;
};

struct iod_rate {
	uint64_t max_runs, runs_held; /* in the ring and the pending interval */
	uint64_t window_usec;
	bool baseline; /* the pending interval is the first: dropped when it closes */
	struct sample pending;
	struct sample ring[IOD_RATE_MAX_SAMPLES];
	size_t head, n; /* oldest at head */
};

static void sample_clear(struct iod_rate *r, struct sample *s)
{
	for (size_t i = 0; i < s->n_parts; i++) {
		r->runs_held -= s->parts[i].n_runs;
		free(s->parts[i].runs);
	}
	free(s->parts);
	*s = (struct sample){};
}

int iod_rate_new(uint64_t max_runs, uint64_t now_usec, struct iod_rate **ret)
{
	struct iod_rate *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->max_runs = max_runs;
	r->window_usec = IOD_RATE_WINDOW_DEFAULT_USEC;
	r->baseline = true;
	r->pending.start_usec = now_usec;
	*ret = r;
	return 0;
}

struct iod_rate *iod_rate_free(struct iod_rate *r)
{
	if (!r)
		return NULL;
	sample_clear(r, &r->pending);
	for (size_t i = 0; i < r->n; i++)
		sample_clear(r, &r->ring[(r->head + i) % IOD_RATE_MAX_SAMPLES]);
	free(r);
	return NULL;
}

void iod_rate_set_window(struct iod_rate *r, uint64_t window_usec)
{
	r->window_usec = window_usec;
}

static void drop_oldest(struct iod_rate *r)
{
	sample_clear(r, &r->ring[r->head]);
	r->head = (r->head + 1) % IOD_RATE_MAX_SAMPLES;
	r->n--;
}

static struct part *pending_part(struct iod_rate *r, uint32_t hwpt_id)
{
	struct sample *s = &r->pending;
	struct part *p;

	for (size_t i = 0; i < s->n_parts; i++)
		if (s->parts[i].hwpt_id == hwpt_id)
			return &s->parts[i];
	p = realloc(s->parts, (s->n_parts + 1) * sizeof(*p));
	if (!p)
		return NULL;
	s->parts = p;
	p = &s->parts[s->n_parts++];
	*p = (struct part){.hwpt_id = hwpt_id};
	return p;
}

/* Append a run to p; false when it cannot be kept (cap or memory). */
static bool add_run(struct iod_rate *r, struct part *p, uint64_t page, uint64_t n)
{
	struct run *last = p->n_runs ? &p->runs[p->n_runs - 1] : NULL;

	if (last && last->page + last->n == page) {
		last->n += n;
		return true;
	}
	/* Over the cap, the oldest samples make room; the pending interval never does. */
	while (r->runs_held >= r->max_runs && r->n > 0)
		drop_oldest(r);
	if (r->runs_held >= r->max_runs)
		return false;
	if (p->n_runs == p->alloc) {
		size_t alloc = p->alloc ? p->alloc * 2 : 16;
		struct run *runs = realloc(p->runs, alloc * sizeof(*runs));

		if (!runs)
			return false;
		p->runs = runs;
		p->alloc = alloc;
	}
	p->runs[p->n_runs++] = (struct run){.page = page, .n = n};
	r->runs_held++;
	return true;
}

void iod_rate_record(struct iod_rate *r, uint32_t hwpt_id, uint64_t first_page,
		     const uint64_t *bits, uint64_t nbits)
{
	struct part *p = NULL;
	uint64_t bit = 0;

	while (bit < nbits) {
		uint64_t end;

		bit = iod_bitmap_find_next_set(bits, nbits, bit);
		if (bit >= nbits)
			break;
		end = iod_bitmap_find_next_clear(bits, nbits, bit);
		if (!p) {
			p = pending_part(r, hwpt_id);
			if (!p) {
				r->pending.lost_runs = true;
				return; /* not even counted: the sample says it is not exact */
			}
		}
		p->pages += end - bit;
		if (!r->pending.lost_runs && !add_run(r, p, first_page + bit, end - bit))
			r->pending.lost_runs = true;
		bit = end;
	}
}

static int run_cmp(const void *a, const void *b)
{
	const struct run *x = a, *y = b;

	return x->page < y->page ? -1 : x->page > y->page;
}

/* Distinct pages of n runs (sorted here). */
static uint64_t count_distinct(struct run *runs, size_t n)
{
	uint64_t count = 0, end = 0;

	qsort(runs, n, sizeof(*runs), run_cmp);
	for (size_t i = 0; i < n; i++) {
		uint64_t s = runs[i].page, e = runs[i].page + runs[i].n;

		if (e <= end)
			continue;
		count += e - MAX(s, end);
		end = e;
	}
	return count;
}

static bool part_matches(const struct part *p, uint32_t hwpt_id)
{
	return hwpt_id == IOD_RATE_ALL_HWPTS || p->hwpt_id == hwpt_id;
}

/* The runs of parts of hwpt_id in samples [first, first + n) of the ring, or of the pending
 * interval with pending set, in one array. */
static int gather(const struct iod_rate *r, const struct sample *const *samples, size_t n,
		  uint32_t hwpt_id, struct run **ret, size_t *ret_n)
{
	struct run *runs;
	size_t total = 0, k = 0;

	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < samples[i]->n_parts; j++)
			if (part_matches(&samples[i]->parts[j], hwpt_id))
				total += samples[i]->parts[j].n_runs;
	runs = malloc(MAX(total, (size_t)1) * sizeof(*runs));
	if (!runs)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < samples[i]->n_parts; j++) {
			const struct part *p = &samples[i]->parts[j];

			if (!part_matches(p, hwpt_id))
				continue;
			memcpy(runs + k, p->runs, p->n_runs * sizeof(*runs));
			k += p->n_runs;
		}
	*ret = runs;
	*ret_n = total;
	return 0;
}

void iod_rate_close(struct iod_rate *r, uint64_t now_usec)
{
	struct sample *s = &r->pending;
	const struct sample *one = s;
	struct run *runs;
	size_t n;

	s->end_usec = now_usec;
	if (r->baseline) {
		r->baseline = false;
		sample_clear(r, s);
	} else {
		s->vm_pages = 0;
		if (s->lost_runs || gather(r, &one, 1, IOD_RATE_ALL_HWPTS, &runs, &n) < 0) {
			/* An upper bound: the sum over the HWPTs. */
			s->lost_runs = true;
			for (size_t i = 0; i < s->n_parts; i++)
				s->vm_pages += s->parts[i].pages;
		} else {
			s->vm_pages = count_distinct(runs, n);
			free(runs);
			/* A page that two reads of one HWPT returned (a Harvest or an Unmap, then
			 * the sample) was dirtied once in this sample, as far as anyone can tell. */
			for (size_t i = 0; i < s->n_parts; i++)
				s->parts[i].pages = count_distinct(s->parts[i].runs,
								   s->parts[i].n_runs);
		}
		if (r->n == IOD_RATE_MAX_SAMPLES)
			drop_oldest(r);
		r->ring[(r->head + r->n) % IOD_RATE_MAX_SAMPLES] = *s;
		r->n++;
		*s = (struct sample){};
	}
	s->start_usec = now_usec;

	while (r->n > 0 && r->ring[r->head].end_usec + r->window_usec < now_usec)
		drop_oldest(r);
}

int iod_rate_query(const struct iod_rate *r, uint64_t window_usec, uint32_t hwpt_id,
		   struct iod_rate_result *ret)
{
	const struct sample *list[IOD_RATE_MAX_SAMPLES];
	struct iod_rate_result res = {.exact = true};
	uint64_t end;
	struct run *runs;
	size_t n = 0, n_runs;
	int k;

	if (r->n == 0) {
		*ret = res;
		return 0;
	}
	end = r->ring[(r->head + r->n - 1) % IOD_RATE_MAX_SAMPLES].end_usec;
	/* Newest first, while the sample starts inside the window. */
	for (size_t i = r->n; i > 0; i--) {
		const struct sample *s = &r->ring[(r->head + i - 1) % IOD_RATE_MAX_SAMPLES];

		if (end - s->start_usec > window_usec && n > 0)
			break;
		list[n++] = s;
	}
	res.samples = n;
	res.window_usec = end - list[n - 1]->start_usec;
	for (size_t i = 0; i < n; i++) {
		if (list[i]->lost_runs)
			res.exact = false;
		if (hwpt_id == IOD_RATE_ALL_HWPTS)
			res.dirty_pages += list[i]->vm_pages;
		else
			for (size_t j = 0; j < list[i]->n_parts; j++)
				if (list[i]->parts[j].hwpt_id == hwpt_id)
					res.dirty_pages += list[i]->parts[j].pages;
	}
	k = gather(r, list, n, hwpt_id, &runs, &n_runs);
	if (k < 0)
		return k;
	res.working_set_pages = count_distinct(runs, n_runs);
	free(runs);
	/* Not exact: pages were counted without their runs, and the working set is what the
	 * runs kept say, a lower bound. */
	if (res.window_usec)
		res.pages_per_sec = (uint64_t)((double)res.dirty_pages * 1e6 /
					       (double)res.window_usec);
	*ret = res;
	return 0;
}
