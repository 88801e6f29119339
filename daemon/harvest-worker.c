/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A session's harvest on a worker thread (harvest-worker.h).
 *
 * Why it is safe without a lock. The only thing that runs off the event loop's thread is
 * iod_session_harvest_read() of one session (session.h says what it reads and writes). The
 * loop's thread keeps every writer of those away for as long as the thread runs:
 *
 *  - the session's own requests are the only writers of its map, HWPTs and kernel context:
 *    its D-Bus method calls are held here (iod_session_calls_held() at the top of every
 *    Session1 method) and its event channel is not read (iod_event_channel_hold());
 *  - the other ways in go through here first: a device that goes away waits for the thread
 *    and the end of the round (iod_harvest_settle()); destroying the session (Destroy,
 *    DestroySession, its owner leaving with the "destroy" policy) and the daemon stopping
 *    cancel it and wait for it (the thread stops between two slices of at most
 *    HARVEST_SLICE_BITS pages), before anything of the session is freed;
 *  - what the loop's thread still does with the session only reads, and reads nothing the
 *    thread writes: property reads (map counters, the log's header, the lists), a snapshot
 *    of the daemon's state made for another session (iod_session_to_state(): the map, the
 *    HWPT list, the log's round count and flags; never the bitmap planes, which live in the
 *    log memfd the store holds, nor the journal's contents), and putting the session's fds
 *    in the store (the harvest journal was created by iod_session_harvest_begin(), on this
 *    thread, before the worker started);
 *  - the thread writes only the log's accumulating plane, the harvest journal and
 *    s->read_error, and nobody else touches them until it is joined.
 *
 * Ordering. The round's end (the snapshot of the log into its round plane, statistics, the
 * state journal record of the round, signals, the reply) runs on the loop's thread after
 * pthread_join(), which orders everything the thread wrote before it. So the journal record
 * of a round is appended after its bits are in the log and never while a snapshot of the
 * state is written (both happen on this thread only). Then the held calls are served, oldest
 * first; one of them may start the next harvest, and the rest wait for that one. The event
 * channel is read again only when no call is held any more: the calls and the batches of one
 * session are never interleaved with a harvest of it, so a bit the harvest read is never
 * attributed through a mapping that changed under it.
 *
 * Completion: the thread writes to an eventfd as its last act; an sd-event io source on it
 * joins the thread. A held call is served from a defer source, not from the completion, so
 * that a settle (a device going away) can end a round without serving calls in the middle of
 * the removal.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "errors.h"
#include "event-channel.h"
#include "harvest-worker.h"
#include "logging.h"
#include "manager.h"
#include "session.h"

/* Calls that may wait for one session's harvest at most. */
#define HELD_MAX 4096u

struct held_call {
	sd_bus_message *m;
	iod_held_call_fn fn;
};

struct iod_harvest_worker {
	struct iod_session *s;

	/* the running harvest */
	bool running;
	bool threaded; /* a thread runs it (else it ran inline) */
	pthread_t thread;
	atomic_bool cancel;
	int result; /* written by the thread, read after the join */
	int efd; /* the thread's last act is a write here */
	sd_event_source *done_source;
	sd_bus_message *m;
	struct iod_harvest_request req;
	uint64_t t0;
	iod_harvest_done_fn done;

	/* the calls that wait, oldest first */
	struct held_call *held;
	size_t n_held, n_alloc;
	sd_event_source *drain_source;
	bool draining;
	bool *freed; /* set while draining: tells the drain that the session went */
};

static void *worker_main(void *userdata)
{
	struct iod_harvest_worker *w = userdata;

	w->result = iod_session_harvest_read(w->s, w->req.peek, &w->cancel);
	if (eventfd_write(w->efd, 1) < 0)
		log_error_errno(errno, "Session %s: failed to signal the end of a harvest: %m",
				w->s->name);
	return NULL;
}

/* Answer m as sd-bus answers a method that returned r with error set or not. */
static void reply_as_sd_bus(sd_bus_message *m, int r, sd_bus_error *error)
{
	if (sd_bus_error_is_set(error))
		(void)sd_bus_reply_method_error(m, error);
	else if (r < 0)
		(void)sd_bus_reply_method_errno(m, r, NULL);
}

static void answer_held(struct iod_harvest_worker *w, const char *name, const char *message)
{
	for (size_t i = 0; i < w->n_held; i++) {
		(void)sd_bus_reply_method_errorf(w->held[i].m, name, "%s", message);
		sd_bus_message_unref(w->held[i].m);
	}
	w->n_held = 0;
}

/* Join the thread (it has finished or will soon) and end the round. */
static void finish(struct iod_harvest_worker *w)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	eventfd_t v;

	if (!w->running)
		return;
	if (w->threaded) {
		int k = pthread_join(w->thread, NULL);

		if (k != 0)
			log_error_errno(-k, "Session %s: failed to join the harvest thread: %m",
					w->s->name);
		(void)eventfd_read(w->efd, &v);
	}
	w->running = false;
	m = TAKE_PTR(w->m);
	log_debug("Session %s: harvest read done (%d).", w->s->name, w->result);
	w->done(w->s, m, &w->req, w->result, w->t0);
	/* Serve what waited, from the loop: not in the middle of whoever settled. */
	if (w->drain_source && sd_event_source_set_enabled(w->drain_source, SD_EVENT_ONESHOT) < 0)
		log_error("Session %s: failed to schedule its held calls.", w->s->name);
}

static int on_done(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	finish(userdata);
	return 0;
}

static void worker_release(struct iod_session *s);

static void drain(struct iod_harvest_worker *w)
{
	struct iod_session *s = w->s;
	bool freed = false;

	w->draining = true;
	w->freed = &freed;
	while (w->n_held > 0 && !w->running) {
		sd_bus_error error = SD_BUS_ERROR_NULL;
		struct held_call c = w->held[0];
		int r;

		memmove(&w->held[0], &w->held[1], (w->n_held - 1) * sizeof(*w->held));
		w->n_held--;
		r = c.fn(c.m, s, &error);
		reply_as_sd_bus(c.m, r, &error);
		sd_bus_error_free(&error);
		sd_bus_message_unref(c.m);
		if (freed)
			return; /* the call destroyed the session, and w with it */
	}
	w->freed = NULL;
	w->draining = false;
	if (!w->running && w->n_held == 0) {
		iod_event_channel_hold(s, false);
		/* Idle: between harvests a session holds no thread, eventfd or source. */
		worker_release(s);
	}
}

static int on_drain(sd_event_source *source, void *userdata)
{
	drain(userdata);
	return 0;
}

static void worker_release(struct iod_session *s)
{
	struct iod_harvest_worker *w = s->worker;

	if (!w)
		return;
	if (w->running) {
		/* Nothing of the session is freed before the thread is gone. */
		atomic_store(&w->cancel, true);
		if (w->threaded)
			(void)pthread_join(w->thread, NULL);
		w->running = false;
		(void)sd_bus_reply_method_errorf(w->m, IOD_ERROR_NO_SUCH_SESSION,
						 "Session %s was destroyed during the harvest",
						 s->name);
		w->m = sd_bus_message_unref(w->m);
	}
	answer_held(w, IOD_ERROR_NO_SUCH_SESSION,
		    "The session was destroyed before this call to it was served");
	if (w->freed)
		*w->freed = true;
	free(w->held);
	sd_event_source_disable_unref(w->done_source);
	sd_event_source_disable_unref(w->drain_source);
	if (w->efd >= 0)
		close(w->efd);
	free(w);
	s->worker = NULL;
	s->release_worker = NULL;
}

/* s's worker, made on first need and freed when idle again (drain()); its sources go on
 * event, which may be NULL once the loop is gone: then the worker only holds calls. */
static struct iod_harvest_worker *worker_get(struct iod_session *s, sd_event *event)
{
	struct iod_harvest_worker *w = s->worker;
	int r;

	if (w)
		return w;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->s = s;
	w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->efd < 0) {
		free(w);
		return NULL;
	}
	r = sd_event_add_io(event, &w->done_source, w->efd, EPOLLIN, on_done, w);
	if (r >= 0)
		r = sd_event_add_defer(event, &w->drain_source, on_drain, w);
	if (r >= 0)
		r = sd_event_source_set_enabled(w->drain_source, SD_EVENT_OFF);
	if (r < 0) {
		sd_event_source_disable_unref(w->done_source);
		sd_event_source_disable_unref(w->drain_source);
		close(w->efd);
		free(w);
		return NULL;
	}
	(void)sd_event_source_set_description(w->done_source, "harvest-done");
	(void)sd_event_source_set_description(w->drain_source, "harvest-held-calls");
	s->worker = w;
	s->release_worker = worker_release;
	return w;
}

bool iod_session_calls_held(struct iod_session *s)
{
	struct iod_harvest_worker *w = s->worker;

	return w && (w->running || (w->n_held > 0 && !w->draining));
}

int iod_session_hold_call(struct iod_session *s, sd_bus_message *m, iod_held_call_fn fn)
{
	struct iod_harvest_worker *w = s->worker;

	/* Anyone may call (the caller is checked when the call is served): cap the wait. */
	if (w->n_held >= HELD_MAX)
		return sd_bus_reply_method_errorf(
			m, IOD_ERROR_LIMIT_EXCEEDED,
			"Session %s is harvesting and %u calls already wait for it: call again "
			"when the harvest is done",
			s->name, HELD_MAX);
	/* Held only while there is a worker: it exists. */
	if (w->n_held == w->n_alloc) {
		size_t n = w->n_alloc ? 2 * w->n_alloc : 16;
		struct held_call *v = reallocarray(w->held, n, sizeof(*v));

		if (!v)
			return -ENOMEM;
		w->held = v;
		w->n_alloc = n;
	}
	w->held[w->n_held++] = (struct held_call){.m = sd_bus_message_ref(m), .fn = fn};
	log_debug("Session %s: %s held until its harvest is done (%zu waiting).", s->name,
		  sd_bus_message_get_member(m), w->n_held);
	return 1;
}

void iod_harvest_start(struct iod_session *s, sd_event *event, sd_bus_message *m,
		       const struct iod_harvest_request *req, uint64_t t0, iod_harvest_done_fn done)
{
	struct iod_harvest_worker *w = worker_get(s, event);
	int k;

	if (!w) {
		/* No worker: the round as before, on this thread. */
		done(s, m, req, iod_session_harvest_read(s, req->peek, NULL), t0);
		return;
	}
	w->m = sd_bus_message_ref(m);
	w->req = *req;
	w->t0 = t0;
	w->done = done;
	w->result = 0;
	atomic_store(&w->cancel, false);
	w->running = true;
	iod_event_channel_hold(s, true);

	k = pthread_create(&w->thread, NULL, worker_main, w);
	w->threaded = k == 0;
	if (k != 0) {
		log_warning_errno(-k,
				  "Session %s: failed to start a harvest thread, harvesting "
				  "on the event loop: %m",
				  s->name);
		w->result = iod_session_harvest_read(s, req->peek, NULL);
		finish(w);
	}
}

void iod_harvest_settle(struct iod_session *s)
{
	if (s->worker)
		finish(s->worker);
}

void iod_harvest_stop_all(struct iod_manager *m)
{
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		struct iod_harvest_worker *w = m->ctx.sessions[i]->worker;

		if (!w)
			continue;
		atomic_store(&w->cancel, true);
		finish(w);
		answer_held(w, SD_BUS_ERROR_DISCONNECTED,
			    "iodirtyd is stopping: this call was not served; call again once "
			    "it is back (its state is kept)");
	}
}
