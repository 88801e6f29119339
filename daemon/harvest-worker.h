/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A session's harvest on a worker thread, and the calls to the session that wait for it:
 * one VM's harvest never holds up another VM's events (the argument is at the top of
 * harvest-worker.c).
 *
 * While a session's harvest runs, its D-Bus method calls are held (a reference to the
 * message is kept, no reply yet) and its event channel is not read; when the harvest is
 * done, its caller is answered, then the held calls are served in the order they came, then
 * the channel is read again. Property reads are served at once: they only read. Every held
 * caller gets an answer: from its method, or an error when the session is destroyed or the
 * daemon stops first.
 */
#ifndef IOD_HARVEST_WORKER_H
#define IOD_HARVEST_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-bus.h>

struct iod_manager;
struct iod_session;

/* What a Harvest or HarvestRanges call asked for. */
struct iod_harvest_request {
	bool ranges; /* HarvestRanges */
	bool peek;
	bool iova_space; /* HarvestRanges: ranges in IOVA space */
	uint32_t max_ranges; /* HarvestRanges */
	bool failed_before; /* the session had failed before the harvest */
};

/* The rest of the round, on the event loop's thread: read_result is what
 * iod_session_harvest_read() returned, t0 the time before iod_session_harvest_begin().
 * Answers m. */
typedef void (*iod_harvest_done_fn)(struct iod_session *s, sd_bus_message *m,
				    const struct iod_harvest_request *req, int read_result,
				    uint64_t t0);

/* A method of the session, as sd-bus calls it. */
typedef int (*iod_held_call_fn)(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* Must a call to s wait: does a harvest run, or do calls wait before it? */
bool iod_session_calls_held(struct iod_session *s);
/* Keep m (not read yet) until s is free, then call fn(m, s) and answer as sd-bus would.
 * Returns 1 (the handler's return value: no reply now) or -ENOMEM. */
int iod_session_hold_call(struct iod_session *s, sd_bus_message *m, iod_held_call_fn fn);

/*
 * Run iod_session_harvest_read() of s on a worker thread for the call m, after
 * iod_session_harvest_begin() succeeded (t0: the time before it); done runs on the event
 * loop's thread when it is over. Until then the session's calls are held and its event
 * channel is not read. If no thread can be started the read runs here and now.
 */
void iod_harvest_start(struct iod_session *s, sd_event *event, sd_bus_message *m,
		       const struct iod_harvest_request *req, uint64_t t0,
		       iod_harvest_done_fn done);

/* Wait for the running harvest of s, if any, and finish its round (done): for what must not
 * happen under it, such as the removal of a device. The held calls wait on. */
void iod_harvest_settle(struct iod_session *s);

/* The daemon is stopping: cancel every running harvest (its caller gets an error; what it
 * had read stays in the log for the next instance's round) and answer every held call with
 * an error. */
void iod_harvest_stop_all(struct iod_manager *m);

#endif
