/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The timer that samples a session's dirty rate (session.h: iod_session_rate_sample())
 * while someone asks for it, owned by the bus layer like the harvest worker.
 *
 * The first request sets the sampling up (with its baseline sample); each request takes a
 * sample at once, so that its answer ends now, and sets the interval and the window of the
 * timer's samples (the last request's win). The timer samples every interval; it skips a
 * tick while a harvest runs (the harvest counts into the rate itself) and stops, freeing
 * everything, when nobody asked for twice the window (IOD_RATE_LINGER_MIN_USEC at least),
 * when the session stops tracking or fails, or when a sample fails (the session is then
 * failed too, as by a harvest). Nothing is sampled while nobody asks.
 */
#ifndef IOD_RATE_SAMPLER_H
#define IOD_RATE_SAMPLER_H

#include <stdint.h>

#include <systemd/sd-event.h>

#include "errors.h"

struct iod_session;

/* Take a sample of s now and keep sampling every interval_usec, keeping window_usec
 * (already checked by the caller). NotTracking, SessionFailed, Kernel. */
int iod_rate_sampler_request(struct iod_session *s, sd_event *event, uint64_t interval_usec,
			     uint64_t window_usec, struct iod_reason *why);

#endif
