/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dirty rate's timer (rate-sampler.h).
 */
#include <errno.h>
#include <stdlib.h>

#include "harvest-worker.h"
#include "iod-util.h"
#include "logging.h"
#include "manager.h"
#include "persist.h"
#include "rate-sampler.h"
#include "rate.h"
#include "session.h"

struct iod_rate_sampler {
	struct iod_session *s;
	sd_event_source *timer;
	uint64_t interval_usec, window_usec;
	uint64_t last_request_usec;
};

static void sampler_release(struct iod_session *s)
{
	struct iod_rate_sampler *p = s->sampler;

	if (p) {
		sd_event_source_disable_unref(p->timer);
		free(p);
	}
	s->sampler = NULL;
	s->release_sampler = NULL;
	iod_session_rate_end(s);
}

static void rearm(struct iod_rate_sampler *p, uint64_t now)
{
	int r;

	r = sd_event_source_set_time(p->timer, now + p->interval_usec);
	if (r >= 0)
		r = sd_event_source_set_enabled(p->timer, SD_EVENT_ONESHOT);
	if (r < 0)
		log_warning_errno(r,
				  "Session %s: failed to re-arm the dirty rate timer, ignoring: %m",
				  p->s->name);
}

static int on_tick(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct iod_rate_sampler *p = userdata;
	struct iod_session *s = p->s;
	uint64_t now = iod_now_usec(), linger;
	struct iod_reason why = {};
	bool failed_before = s->failed;
	int r;

	/* A harvest runs: it counts into the rate itself, and the rate is its while it runs. */
	if (iod_session_calls_held(s)) {
		rearm(p, now);
		return 0;
	}
	linger = MAX(2 * p->window_usec, IOD_RATE_LINGER_MIN_USEC);
	if (!s->tracking || s->failed || now - p->last_request_usec > linger) {
		sampler_release(s);
		return 0;
	}
	r = iod_session_rate_sample(s, &why);
	if (r < 0) {
		log_warning("Session %s: %s; dirty rate sampling stopped.", s->name, why.text);
		if (s->failed != failed_before)
			(void)iod_persist_save(iod_manager_of(s->ctx));
		sampler_release(s);
		return 0;
	}
	rearm(p, now);
	return 0;
}

int iod_rate_sampler_request(struct iod_session *s, sd_event *event, uint64_t interval_usec,
			     uint64_t window_usec, struct iod_reason *why)
{
	struct iod_rate_sampler *p = s->sampler;
	bool failed_before = s->failed;
	uint64_t now;
	int r;

	if (!p) {
		p = calloc(1, sizeof(*p));
		if (!p)
			return iod_reason_kernel(why, -ENOMEM, "Failed to set up the dirty rate");
		p->s = s;
		r = sd_event_add_time(event, &p->timer, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_tick,
				      p);
		if (r < 0) {
			free(p);
			return iod_reason_kernel(why, r, "Failed to set up the dirty rate timer");
		}
		(void)sd_event_source_set_description(p->timer, "dirty-rate");
		r = iod_session_rate_begin(s, why);
		if (r < 0) {
			sd_event_source_disable_unref(p->timer);
			free(p);
			if (s->failed != failed_before)
				(void)iod_persist_save(iod_manager_of(s->ctx));
			return r;
		}
		s->sampler = p;
		s->release_sampler = sampler_release;
	} else {
		r = iod_session_rate_sample(s, why);
		if (r < 0) {
			if (s->failed != failed_before)
				(void)iod_persist_save(iod_manager_of(s->ctx));
			sampler_release(s);
			return r;
		}
	}
	now = iod_now_usec();
	p->interval_usec = interval_usec;
	p->window_usec = window_usec;
	p->last_request_usec = now;
	iod_rate_set_window(s->rate, window_usec);
	rearm(p, now);
	return 0;
}
