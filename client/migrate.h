/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A reference pre-copy migration of guest memory driven by iodirtyd (org.iodirty.Tracker1),
 * as a small module that iodirty-migrate(1) and the guest tests share.
 *
 * One run: create a session (owner or adopt), give it the guest memory and the devices,
 * Start, copy everything (with skip_holes: what the memfd ever populated), then rounds of
 * Harvest (the log memfd, walked per region on its
 * round plane), copy the dirty pages, Acknowledge, until a round is small enough or the
 * round limit is reached; then the caller's workload is paused and a final round is
 * copied (stop-and-copy). The caller provides the destination (write, confirm), the workload
 * hooks (tick, pause) and receives a report per round.
 *
 * A round is acknowledged only after it was delivered: the destination confirms it (ops
 * confirm) before Acknowledge. So when the destination fails, or this process dies, every
 * page not confirmed is still in the session's log, and the next Harvest delivers it again:
 * the session is left tracking (IOD_MIGRATE_DEST_FAILED) and a later run with config.resume
 * goes on from there, to the same destination, or after a full round to a new one.
 *
 * Everything here is a client of the daemon: sd-bus calls on one connection, no thread.
 */
#ifndef IOD_MIGRATE_H
#define IOD_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-bus.h>

enum iod_migrate_mode {
	IOD_MIGRATE_OWNER, /* CreateSession + AddMemory + AttachDevice[Fd] */
	IOD_MIGRATE_ADOPT, /* AdoptSession on the caller's iommufd + AddRegion */
};

enum iod_migrate_policy {
	IOD_MIGRATE_ABORT,
	IOD_MIGRATE_RETRY, /* daemon restart: wait for the name, GetSession, Claim, go on */
	IOD_MIGRATE_CONTINUE, /* device lost: warn and go on */
};

/* How a run ended (iod_migrate_run() returns 0 only for IOD_MIGRATE_OK). */
enum iod_migrate_status {
	IOD_MIGRATE_OK,
	IOD_MIGRATE_ERROR, /* the service refused or failed, or the destination did */
	IOD_MIGRATE_DAEMON_LOST, /* the daemon went away (abort), or its session did not survive */
	IOD_MIGRATE_DEVICE_LOST, /* DeviceLost with the abort policy */
	IOD_MIGRATE_SESSION_FAILED, /* the dirty log is incomplete (signal Failed) */
	IOD_MIGRATE_DEST_FAILED, /* the destination failed: the session is left tracking with
				  * every unconfirmed page, for a run with config.resume */
};

/* A vIOMMU mapping reported with Map before Start. */
struct iod_migrate_mapping {
	uint64_t iova, gpa, size;
};

#define IOD_MIGRATE_DROP_FINAL UINT64_MAX

struct iod_migrate_config {
	const char *session; /* session name */
	enum iod_migrate_mode mode;
	/* the guest memory: one region [gpa, gpa + size) = memfd [offset, offset + size) */
	int memfd;
	uint64_t offset, size, gpa;
	const uint8_t *mem; /* mapped by the caller; NULL: the module maps the memfd read-only */
	uint64_t page_size; /* dirty log page size, 0 for the daemon's default */
	bool viommu;
	const struct iod_migrate_mapping *mappings;
	size_t n_mappings;
	/* owner mode: devices by name (PCI address or cdev path) and by fd */
	const char *const *devices;
	size_t n_devices;
	const int *device_fds;
	size_t n_device_fds;
	/* adopt mode */
	int iommufd;
	uint32_t ioas;
	const uint32_t *hwpts;
	size_t n_hwpts;
	/* the loop */
	uint64_t converge_pages; /* a round with at most this many dirty pages is the last */
	unsigned max_rounds; /* dirty rounds before the final one, whatever their size */
	uint64_t max_bandwidth; /* bytes per second, 0 for no limit */
	uint64_t batch_bytes; /* the workload ticks after each batch copied (default 1 MiB) */
	enum iod_migrate_policy on_daemon_restart; /* ABORT or RETRY */
	uint64_t restart_timeout_usec;
	enum iod_migrate_policy on_device_lost; /* ABORT or CONTINUE */
	bool keep_session; /* do not destroy the session at the end */
	/* test only: acknowledge this dirty round (1..) without copying it, or
	 * IOD_MIGRATE_DROP_FINAL for the final round: the destination is then wrong */
	uint64_t drop_round;
	/* what pausing the VM costs, for the downtime estimate before the first pause (0: not
	 * known; the module measures it at the pause and reports it) */
	uint64_t pause_usec;
	/* The full copy skips what the memfd never populated (its holes: SEEK_DATA/SEEK_HOLE
	 * on [offset, offset + size)). The caller promises that the destination reads every
	 * byte not written to it as zero (a fresh memfd or sparse file, a cleared image). */
	bool skip_holes;
	/* Create the session with the disconnect policy "keep": it outlives this process (the
	 * destination failed, or the process died) for a run with resume. */
	bool resumable;
	/* Go on with the existing session of this name (GetSession, Claim) instead of creating
	 * one: the next Harvest delivers every page since the last acknowledged round. The
	 * session options above are not used. resume_full: the destination is new (or did not
	 * keep its memory): copy everything first. Without it the full copy is skipped when the
	 * session has harvested a round, i.e. when an earlier run's full copy was confirmed. */
	bool resume;
	bool resume_full;
	/* Without resume_full: the last round the destination confirmed (its marker). The full
	 * copy is skipped only if every round acknowledged since is in it: the session's last
	 * round is that one, or the one after it, still pending (a run that died in it). */
	uint64_t resume_confirmed;
};

struct iod_migrate;

/*
 * What the stop-and-copy would cost if the VM were paused now: the final round's dirty pages
 * are those written since the last harvest (its dirty rate times the time since, plus the
 * pause itself), its Harvest costs what the last one did (same HWPTs, same tracked size),
 * its copy runs at the bandwidth measured so far, and a round's fixed cost (Acknowledge, the
 * log's mapping, the bus) and the pause are what earlier rounds measured.
 */
struct iod_migrate_estimate {
	uint64_t pages; /* the final round's dirty pages */
	uint64_t pause_usec; /* the pause hook (the caller's figure, then the measured one) */
	uint64_t harvest_usec; /* the final Harvest */
	uint64_t copy_usec; /* pages at the measured bandwidth */
	uint64_t fixed_usec; /* the rest of a round: Acknowledge, the log, the bus */
	uint64_t downtime_usec; /* the sum */
};

/* What one round did. Round 0 is the full copy; the final round has final = true. */
struct iod_migrate_round {
	unsigned index;
	bool final;
	bool dropped; /* test only: not copied on purpose */
	uint64_t daemon_round; /* the daemon's round number, 0 for the full copy */
	uint64_t dirty_pages;
	uint64_t bytes; /* copied */
	uint64_t harvest_usec; /* the Harvest call as the client saw it */
	uint64_t daemon_usec; /* the harvest as the daemon measured it */
	uint64_t copy_usec; /* writing the pages to the destination */
	uint64_t bandwidth; /* bytes per second, measured over all rounds so far */
	uint64_t est_downtime_usec; /* est.downtime_usec (0 for the full copy) */
	bool precise;
	uint64_t ack_usec; /* the Acknowledge call */
	uint64_t interval_usec; /* since the previous harvest (or Start): what dirty_pages took */
	uint64_t wall_usec; /* the whole round as the client saw it */
	/* A pre-copy round: the downtime if the VM were paused after it. The final round: the
	 * estimate made before the pause, and the measured downtime (pause .. acknowledged). */
	struct iod_migrate_estimate est;
	uint64_t pause_usec; /* the final round: the pause hook took this */
	uint64_t downtime_usec; /* the final round: measured */
	uint64_t skipped_bytes; /* the full copy: holes of the memfd (read zero), not copied */
};

struct iod_migrate_ops {
	/* After the session has its memory and devices, before Start (e.g. more Map events). */
	int (*prepare)(struct iod_migrate *m, void *userdata);
	/* Tracking is on: start the workload (optional). */
	int (*started)(struct iod_migrate *m, void *userdata);
	/* Called between batches of copying: a workload that runs in steps takes one. */
	int (*tick)(struct iod_migrate *m, void *userdata);
	/* Pause the VM and its devices before the final round; return once nothing writes. */
	int (*pause)(struct iod_migrate *m, void *userdata);
	/* The destination: guest memory [gpa, gpa + length) has these bytes. */
	int (*write)(uint64_t gpa, const void *data, uint64_t length, void *userdata);
	/* A round is done (for the report). */
	void (*round)(const struct iod_migrate_round *r, void *userdata);
	/* Optional: everything written so far has been delivered (durable in a file, confirmed
	 * by a receiver); round is the daemon's round number, 0 for the full copy. Called before
	 * Acknowledge: a failure leaves the round in the log (IOD_MIGRATE_DEST_FAILED). Without
	 * it a round counts as delivered once written. */
	int (*confirm)(uint64_t round, void *userdata);
};

struct iod_migrate_result {
	enum iod_migrate_status status;
	unsigned rounds; /* dirty rounds, the final one included */
	bool converged; /* the last pre-copy round was under converge_pages */
	uint64_t total_bytes; /* copied, all rounds */
	uint64_t bandwidth; /* bytes per second */
	uint64_t est_downtime_usec; /* estimated before the pause (est.downtime_usec) */
	uint64_t downtime_usec; /* measured: pause .. final round copied and acknowledged */
	uint64_t total_usec;
	bool precise;
	unsigned daemon_restarts; /* survived */
	unsigned devices_lost;
	struct iod_migrate_estimate est; /* made before the pause */
	struct iod_migrate_estimate measured; /* the same parts of the downtime, measured */
	uint64_t skipped_bytes; /* the full copy's holes, not copied (skip_holes) */
	bool resumed; /* config.resume: went on with an existing session */
	bool resumed_full; /* ... and copied everything first */
	uint64_t resumed_after; /* ... whose log had this many rounds harvested */
};

int iod_migrate_new(sd_bus *bus, const struct iod_migrate_config *config,
		    const struct iod_migrate_ops *ops, void *userdata, struct iod_migrate **ret);
struct iod_migrate *iod_migrate_free(struct iod_migrate *m);

/* Run the migration. 0, or a negative errno with ret->status and iod_migrate_error(). */
int iod_migrate_run(struct iod_migrate *m, struct iod_migrate_result *ret);

/* For the hooks: the connection, the session's object path (NULL before it exists). */
sd_bus *iod_migrate_bus(struct iod_migrate *m);
const char *iod_migrate_session_path(struct iod_migrate *m);
/* Why the run failed, for a person ("" when it did not). */
const char *iod_migrate_error(struct iod_migrate *m);

const char *iod_migrate_status_to_string(enum iod_migrate_status s);

#endif
