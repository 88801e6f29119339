/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dirty rate of a session over a sliding window (GetDirtyRate): pure bookkeeping, no
 * kernel, no bus, no session. The session's harvest path hands it what each read-and-clear
 * of a HWPT returned (iod_rate_record()), page runs in GPA space: the pages dirtied since
 * the previous read of that HWPT. A sample closes the pending interval (iod_rate_close());
 * a ring keeps the closed samples of the last window. A query adds the pages of the
 * samples inside a window and counts the distinct pages among them (the working set), for
 * the whole VM or for one HWPT.
 *
 * Memory is capped: at most IOD_RATE_MAX_SAMPLES samples and max_runs page runs over all
 * of them. Past the cap the oldest samples go first (the window a query reports shrinks to
 * what is kept); a pending interval that alone passes it keeps counting pages but no longer
 * knows which (its working set is no longer exact: precise false).
 *
 * The bookkeeping has one writer at a time: iod_rate_record() may run on the harvest
 * worker's thread while nothing else touches the rate.
 */
#ifndef IOD_RATE_H
#define IOD_RATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IOD_RATE_MAX_SAMPLES 1024
#define IOD_RATE_MAX_RUNS (UINT64_C(1) << 18) /* 4 MiB of runs per session */
#define IOD_RATE_INTERVAL_MIN_USEC (UINT64_C(10) * 1000) /* 10 ms */
#define IOD_RATE_INTERVAL_MAX_USEC (UINT64_C(60) * 1000000) /* 1 min */
#define IOD_RATE_INTERVAL_DEFAULT_USEC (UINT64_C(1) * 1000000)
#define IOD_RATE_WINDOW_MAX_USEC (UINT64_C(3600) * 1000000) /* 1 h */
#define IOD_RATE_WINDOW_DEFAULT_USEC (UINT64_C(10) * 1000000)
/* Sampling stops when nobody asked for twice the window, and never sooner than this. */
#define IOD_RATE_LINGER_MIN_USEC (UINT64_C(10) * 1000000)

/* The union of every HWPT (the VM) in a query. */
#define IOD_RATE_ALL_HWPTS UINT32_MAX

struct iod_rate;

/* A new rate whose pending interval starts at now (CLOCK_MONOTONIC, usec). Its first
 * sample is a baseline: what it holds was dirtied over a time nobody knows, since Start
 * or the last harvest, and it is dropped rather than counted. */
int iod_rate_new(uint64_t max_runs, uint64_t now_usec, struct iod_rate **ret);
struct iod_rate *iod_rate_free(struct iod_rate *r);

/* The window the ring keeps: samples that ended before now - window go. */
void iod_rate_set_window(struct iod_rate *r, uint64_t window_usec);

/*
 * The pending interval: hwpt_id read these nbits bits (pages of the log), the first one at
 * GPA page first_page, and cleared them in the IOMMU. Never fails: out of memory or over the
 * cap, the pages are counted without their runs.
 */
void iod_rate_record(struct iod_rate *r, uint32_t hwpt_id, uint64_t first_page,
		     const uint64_t *bits, uint64_t nbits);

/* Close the pending interval at now into a sample (the first one, the baseline, is dropped)
 * and drop the samples that left the window. */
void iod_rate_close(struct iod_rate *r, uint64_t now_usec);

struct iod_rate_result {
	uint64_t window_usec; /* from the start of the oldest sample counted to the end of the
				 newest; 0 with no sample */
	uint64_t samples;
	uint64_t dirty_pages; /* summed over the samples: a page dirtied in two samples counts
				 twice, a page of two HWPTs, or read twice, in one sample once */
	uint64_t pages_per_sec;
	uint64_t working_set_pages; /* distinct pages over the samples */
	bool exact; /* the working set is exact (no sample lost its runs to the cap) */
};

/* The samples that lie within window_usec of the newest sample's end, for hwpt_id or
 * IOD_RATE_ALL_HWPTS. -ENOMEM. */
int iod_rate_query(const struct iod_rate *r, uint64_t window_usec, uint32_t hwpt_id,
		   struct iod_rate_result *ret);

#endif
