/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A session: the dirty tracking of one VM. One iommufd context, one IOAS, the HWPTs of its
 * devices, the IOVA->GPA map, the guest memory regions and one GPA dirty log.
 *
 * Owner mode opens /dev/iommu lazily, at the first operation that needs a kernel object, so
 * that a session can be created (and its arguments checked) on a machine without iommufd.
 * Adopt mode works on the client's iommufd, IOAS and HWPTs and never destroys them.
 *
 * Every kernel object id is remembered and every fd carries an fd-store name, so that the
 * whole session can be written to a struct iod_state and rebuilt from it and its fds.
 *
 * Operations return 0 or a negative errno and, on error, fill a struct iod_reason with the
 * D-Bus error name and a sentence; state is unchanged on error unless stated otherwise.
 */
#ifndef IOD_SESSION_H
#define IOD_SESSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-bus.h>

#include "config.h"
#include "device.h"
#include "errors.h"
#include "iodirty.h"

struct iod_context;
struct iod_rate;
struct iod_rate_sampler;

struct iod_region {
	uint64_t gpa;
	uint64_t length;
	uint64_t offset; /* into fd */
	int fd; /* guest memory (owner mode); -EBADF in adopt mode */
	char *fdname;
	void *va; /* MAP_SHARED mapping of [offset, offset + length) (owner mode) */
	bool mapped; /* mapped IOVA = GPA in the IOAS by the daemon */
};

struct iod_session_hwpt {
	struct iod_hwpt hw;
	bool owned; /* allocated by the daemon */
	unsigned users; /* devices attached (owner mode) */
	unsigned log_users; /* ... of them logging their own DMA (not a fallback for them) */
	bool gone; /* adopt mode: the client destroyed it (iod_session_find_gone_fallbacks()) */
	uint32_t parent_id; /* a nested HWPT (stage 1): its nest parent; 0 for a paging HWPT */
};

/* The dirty read that failed last, for the reason a failed session gives. */
struct iod_read_error {
	uint32_t hwpt_id;
	char device[64]; /* a device's DMA log: its name (cut short); "" for a HWPT */
	uint64_t iova, length;
	int err;
};

struct iod_session_options {
	uint64_t page_size;
	bool huge_pages;
	bool viommu;
	/*
	 * Nested mode: the session harvests one nest parent (hwpts[0], allocated with
	 * NEST_PARENT | DIRTY_TRACKING), the stage 2 of the devices' nested HWPTs. Its IOAS is
	 * indexed by GPA (IOVA = GPA), so no translation and no Map/Unmap events: the guest's
	 * stage 1 changes never touch it. Excludes viommu.
	 */
	bool nested;
	enum iod_disconnect_policy disconnect_policy;
};

struct iod_session {
	struct iod_context *ctx; /* what the daemon's sessions share (context.h) */
	char *name;
	char *path; /* D-Bus object path */
	enum iod_session_mode mode;
	struct iod_session_options options;

	uid_t uid;
	char *owner; /* unique bus name of the owner; NULL while orphaned */

	bool tracking;
	bool failed;
	char *failure; /* why the log is incomplete */
	struct iod_read_error read_error;

	struct iod_iommufd *ictx; /* NULL until needed (owner mode) */
	char *iommufd_fdname;
	uint32_t ioas_id; /* 0: none yet */
	bool ioas_owned;

	struct iod_session_hwpt *hwpts;
	size_t n_hwpts;
	struct iod_device **devices;
	size_t n_devices;
	uint32_t next_device_index;
	struct iod_region *regions;
	size_t n_regions;
	uint64_t log_bytes; /* bitmap bytes of both planes of all regions */

	struct iod_iova_map *map;
	struct iod_dirty_log *log;
	char *log_fdname;
	struct iod_journal *journal; /* one chunk of a HWPT's bitmap, in a memfd (journal.h) */
	char *journal_fdname;
	/* Free without undoing kernel objects: the fd store keeps them for the next instance. */
	bool keep_kernel;

	/* The event channel (event-channel.h), owned by the bus layer above the session core;
	 * NULL if none. close_channel, set with it, closes it when the session is freed. */
	struct iod_event_channel *channel;
	void (*close_channel)(struct iod_session *s);
	uint64_t event_seq; /* the last batch applied from an event channel (persisted) */
	/* The harvest worker and the calls held for it (harvest-worker.h), owned by the bus
	 * layer like the channel; release_worker, set with it, stops and frees it first. */
	struct iod_harvest_worker *worker;
	void (*release_worker)(struct iod_session *s);
	/* The dirty rate (rate.h) while someone asks for it: NULL otherwise. Its timer
	 * (rate-sampler.h) is the bus layer's, like the worker; release_sampler, set with it,
	 * stops the timer and frees the rate. */
	struct iod_rate *rate;
	struct iod_rate_sampler *sampler;
	void (*release_sampler)(struct iod_session *s);

	/* statistics of the last round */
	bool round_pending;
	bool last_precise;
	uint64_t last_dirty_pages;
	uint64_t last_duration_usec;
	uint64_t last_round_usec; /* CLOCK_MONOTONIC of the last round (or of Start) */
	uint64_t last_round_timestamp; /* CLOCK_REALTIME usec of the last round; 0: none yet */
	uint64_t dirty_rate; /* bytes per second over the last round */
};

int iod_session_new(struct iod_context *c, const char *name, enum iod_session_mode mode, uid_t uid,
		    const struct iod_session_options *options, struct iod_session **ret);
/* Release everything in reverse order: devices, owned HWPTs, the IOAS, memory, fds. */
struct iod_session *iod_session_free(struct iod_session *s);
IOD_DEFINE_FREEP(struct iod_session, iod_session_free)

/*
 * Set (or, with NULL, drop) the owner's bus name. The manager watches every owner with one
 * match on NameOwnerChanged (iod_manager_publish()), not one per session: a bus allows a
 * connection few match rules (dbus-daemon: 512).
 */
int iod_session_set_owner(struct iod_session *s, const char *owner);
/*
 * The owner left the bus: forget it. true if the session's disconnect policy says that it
 * goes with its owner (the caller destroys it), false if it stays, orphaned.
 */
bool iod_session_owner_left(struct iod_session *s);

/*
 * Learn how the kernel answers a dirty read over unmapped IOVA (enum iod_hole_behavior) from
 * the session's first dirty capable HWPT, once per daemon: s->ctx->holes. Quiet, changes nothing.
 */
void iod_session_probe_holes(struct iod_session *s);

/*
 * Adopt mode: take over the client's iommufd (dup'ed) and name its IOAS and HWPTs. In a
 * nested session hwpt_ids[0] is the nest parent (a dirty capable paging HWPT of the IOAS:
 * NotDirtyCapable otherwise) and the others must be nested HWPTs (InvalidArgs otherwise;
 * the kernel cannot say whose children they are).
 */
int iod_session_adopt(struct iod_session *s, int iommufd, uint32_t ioas_id,
		      const uint32_t *hwpt_ids, size_t n_hwpts, struct iod_reason *why);

/* Owner mode: guest memory [offset, offset + size) of fd at gpa (mapped IOVA = GPA unless
 * the session has a vIOMMU). */
int iod_session_add_memory(struct iod_session *s, int fd, uint64_t offset, uint64_t size,
			   uint64_t gpa, struct iod_reason *why);
/* Adopt mode: guest memory the client mapped itself. */
int iod_session_add_region(struct iod_session *s, uint64_t gpa, uint64_t size,
			   struct iod_reason *why);

/*
 * vIOMMU events. Unmap harvests the range into the log before removing it (no clear, but
 * read-and-clear and counted into the dirty rate while it is measured); if that fails the
 * session fails, and the unmap still happens (returns 0).
 */
int iod_session_map(struct iod_session *s, uint64_t iova, uint64_t gpa, uint64_t length,
		    struct iod_reason *why);
int iod_session_unmap(struct iod_session *s, uint64_t iova, uint64_t length,
		      struct iod_reason *why);
/*
 * The same for n events at once (MapBatch, UnmapBatch; Map and Unmap are batches of one).
 * These are the only checks of the events: the caller passes them as read. Every entry is
 * checked before anything changes, in this order: the number of entries against the
 * mappings limit; each entry alone (not empty, aligned, no overflow); the session (it has a
 * vIOMMU); each entry against the session (MapBatch: inside guest memory, over no other
 * mapping; UnmapBatch: cutting no mapping); MapBatch entries against each other and the
 * mappings they add against the mappings limit. With array set, an error about one entry
 * names it ("maps[3]: ..."). An empty batch does nothing. MapBatch is all or nothing: if the
 * kernel refuses an entry, the entries mapped before it are taken back. UnmapBatch harvests
 * every range before the first leaves the IOAS; if the kernel refuses an unmap, the ranges
 * (and whole mappings) before it stay unmapped. Unmap entries use iova and length only.
 */
int iod_session_map_batch(struct iod_session *s, const char *array, const struct iod_mapping *maps,
			  size_t n, struct iod_reason *why);
int iod_session_unmap_batch(struct iod_session *s, const char *array,
			    const struct iod_mapping *ranges, size_t n, struct iod_reason *why);

/* Where AttachDevice's option dirty_source asks a device's dirty pages to come from. */
enum iod_source_choice {
	IOD_CHOOSE_AUTO, /* the IOMMU if it can track, else the device's DMA log, else none */
	IOD_CHOOSE_IOMMU, /* the IOMMU, or NotDirtyCapable */
	IOD_CHOOSE_DEVICE, /* the device's DMA log, or NotDirtyCapable */
	IOD_CHOOSE_NONE, /* none: the fallback (its mapped ranges always dirty) */
};

/*
 * Owner mode: attach an opened device (the session takes it over on success), its dirty
 * pages coming from the source choice asks for (d->source says which it got). A device
 * with no IOMMU of its own (d->emulated) is attached to the IOAS itself. While tracking, a
 * logging device starts logging at once.
 */
int iod_session_attach_device(struct iod_session *s, struct iod_device *d,
			      enum iod_source_choice choice, struct iod_reason *why);
/* Detach and free a device; a last user of a HWPT has it harvested first. */
int iod_session_detach_device(struct iod_session *s, struct iod_device *d, struct iod_reason *why);
struct iod_device *iod_session_find_device(struct iod_session *s, uint32_t index);
int iod_session_check_device_limit(struct iod_session *s, struct iod_reason *why);

/* Alignment of every address and size of the session (log page and system page). */
uint64_t iod_session_alignment(const struct iod_session *s);
/* Stateless checks of [addr, addr + size): not empty, aligned, no overflow. */
int iod_session_check_range(const struct iod_session *s, const char *what, uint64_t addr,
			    uint64_t size, struct iod_reason *why);

/* Idempotent: a second Start never re-enables (and so never wipes) anything. */
int iod_session_start(struct iod_session *s, struct iod_reason *why);
/* Harvest what the hardware has into the log, then turn tracking off. */
int iod_session_stop(struct iod_session *s, struct iod_reason *why);

struct iod_harvest_result {
	uint64_t round;
	uint64_t dirty_pages;
	uint64_t duration_usec;
	bool precise;
	/* Adopt mode: a fallback HWPT the client destroyed left the session after this round
	 * (Hwpts, TrackingMode and Precise changed). */
	bool hwpts_changed;
};
/*
 * One round: read-and-clear every HWPT per mapped area into the log, mark the mapped areas
 * of fallback devices dirty (then, in adopt mode, forget the fallback HWPTs the client
 * destroyed), then snapshot the log into its round plane. With peek, the
 * hardware is read without clearing, no round starts, and dirty_pages counts the round
 * plane and the accumulating plane together.
 */
int iod_session_harvest(struct iod_session *s, bool peek, struct iod_harvest_result *ret,
			struct iod_reason *why);
/*
 * The same in three steps, so that the long one can run off the event loop's thread
 * (harvest-worker.h). begin checks the session and creates what the read needs; read does
 * the reading (every tracking HWPT over every mapped area, into the accumulating plane) and
 * returns 0 or -errno; end takes read's result and t0 (CLOCK_MONOTONIC before begin) and
 * does the rest of the round: failure, fallback marks, snapshot, statistics.
 *
 * read is the only one that may run on another thread. It reads s->ictx, s->hwpts, s->map,
 * s->devices (each logging device's fd, name, HWPT id, logging flag and ranges) and the log's
 * table, reads and clears the devices' DMA logs, and writes the accumulating plane of the
 * log, the harvest journal, s->read_error and (while a dirty rate is measured) s->rate,
 * nothing else: while it runs nobody may change the first four or touch the last four (the
 * caller holds every request of the session back, and a device leaves only after the read
 * settled), and everything else of the session may be read. With cancel set it stops between two slices once *cancel is
 * true and returns -ECANCELED, which end turns into an error that fails nothing.
 */
int iod_session_harvest_begin(struct iod_session *s, struct iod_reason *why);
int iod_session_harvest_read(struct iod_session *s, bool peek, const atomic_bool *cancel);
int iod_session_harvest_end(struct iod_session *s, bool peek, int read_result, uint64_t t0,
			    struct iod_harvest_result *ret, struct iod_reason *why);
/*
 * The dirty pages of the current round (with peek: of both planes) as ranges of bytes, in
 * GPA space or (iova_space) translated back through the IOVA map. At most max ranges;
 * *ret_truncated says that more were left. *ret_ranges is malloc'ed. In IOVA space, dirty
 * pages that no IOVA maps now (harvested before an Unmap) cannot be reported: -EADDRNOTAVAIL,
 * their number in *ret_unmapped.
 */
int iod_session_dirty_ranges(struct iod_session *s, bool peek, bool iova_space, size_t max,
			     struct iod_range **ret_ranges, size_t *ret_n, bool *ret_truncated,
			     uint64_t *ret_unmapped);
/*
 * MarkDirty: writes the client made itself (an emulated device, the VMM's own writes, pages
 * a device pinned) as n GPA ranges, marked in the accumulating plane: the next round has
 * them. From the bus (MarkDirty) and the event channel (a mark batch) alike. The session
 * must track and not have failed (NotTracking, SessionFailed); every range is checked
 * (not empty, page-aligned, no overflow, inside one region) before any is marked, so a bad
 * one marks nothing and is named as "array[i]" (why->entry_plus_one). The caller holds it
 * back while the session harvests, like every request that touches the log.
 */
int iod_session_mark_begin(struct iod_session *s, struct iod_reason *why);
int iod_session_mark_batch(struct iod_session *s, const char *array, const struct iod_range *ranges,
			   size_t n, struct iod_reason *why);
/*
 * The dirty rate (GetDirtyRate). A sample reads and clears every tracking HWPT into the
 * accumulating plane of the log, exactly as a harvest does (so a later round reports every
 * page a sample saw), and hands each HWPT's bits to s->rate on the way (rate.h); then it
 * closes the rate's pending interval. While s->rate exists, the read-and-clear of a
 * Harvest or a Stop counts into the pending interval too, so that no dirtied page escapes
 * the rate either. NotTracking when the session does not track, SessionFailed when it
 * failed; a read that fails fails the session as a harvest does.
 *
 * iod_session_rate_begin() creates s->rate (if there is none) and takes its first, baseline
 * sample: what it reads was dirtied since Start or the last harvest, over a time nobody
 * knows, and goes into the log without being counted. iod_session_rate_end() frees it.
 */
int iod_session_rate_begin(struct iod_session *s, struct iod_reason *why);
int iod_session_rate_sample(struct iod_session *s, struct iod_reason *why);
void iod_session_rate_end(struct iod_session *s);
/* The client has round: clear the round plane. -ESTALE for another round. */
int iod_session_acknowledge(struct iod_session *s, uint64_t round, struct iod_reason *why);

/* Mark the log incomplete and the session failed (idempotent); emits the Failed signal. */
void iod_session_fail(struct iod_session *s, const char *format, ...) _printf_(2, 3);

/* Create the harvest journal (journal.h) if the session has none yet. */
int iod_session_ensure_journal(struct iod_session *s);

/* A read-only fd of the dirty log memfd, for the client. */
int iod_session_open_log_ro(struct iod_session *s);

const char *iod_session_state_string(const struct iod_session *s);
/* "none" (no HWPT), "hardware", "fallback", "mixed", or "nested" (a nested session with its
 * nest parent). */
const char *iod_session_tracking_mode_string(const struct iod_session *s);
bool iod_session_precise(const struct iod_session *s);
/* The log misses nothing: the session never failed (LogComplete). */
bool iod_session_log_complete(const struct iod_session *s);
/* The round a Harvest made that the client has not acknowledged yet, 0 if none. */
uint64_t iod_session_pending_round(const struct iod_session *s);
const char *iod_session_mode_to_string(enum iod_session_mode mode);

/* Serialise to / rebuild from the persistent state (restart survival). */
int iod_session_to_state(const struct iod_session *s, struct iod_state_session *ret);
/* The options a session was created with, as its state records them (a state written
 * before the disconnect policy was recorded gets the daemon's default policy). */
void iod_session_options_from_state(const struct iod_context *c, const struct iod_state_session *st,
				    struct iod_session_options *ret);
typedef int (*iod_fd_lookup_fn)(const char *fdname, void *userdata);
int iod_session_from_state(struct iod_context *c, const struct iod_state_session *st,
			   iod_fd_lookup_fn lookup, void *userdata, struct iod_session **ret);

#endif
