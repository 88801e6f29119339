/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyctl metrics: the daemon's and its sessions' properties as OpenMetrics 1.0 text, or
 * as the Prometheus text format 0.0.4 that node_exporter's textfile collector reads, on
 * stdout or written atomically to a file. The metrics are listed in iodirtyctl(1), METRICS.
 */
#ifndef IOD_CTL_METRICS_H
#define IOD_CTL_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <systemd/sd-bus.h>

enum iod_metrics_format {
	IOD_METRICS_OPENMETRICS, /* application/openmetrics-text; version=1.0.0 */
	IOD_METRICS_PROMETHEUS, /* text/plain; version=0.0.4 (node_exporter's textfile collector) */
};

/* Object paths (of sessions, of devices). */
struct iod_metrics_paths {
	char **v;
	size_t n;
};

/* What is read of the manager (org.iodirty.Manager1 properties). */
struct iod_metrics_daemon {
	char *version;
	char *holes; /* KernelHoleBehavior */
	bool iommufd;
	bool dirty_tracking;
	uint32_t max_sessions;
	uint64_t restarts;
	bool has_restarts; /* the daemon has the property Restarts */
	struct iod_metrics_paths sessions;
};

/* What is read of a session (org.iodirty.Session1 properties). */
struct iod_metrics_session {
	char *name;
	char *mode;
	char *state;
	char *tracking_mode;
	uint32_t owner_uid;
	bool tracking;
	bool precise;
	bool log_complete;
	bool viommu;
	bool nested;
	bool huge_pages;
	uint64_t page_size;
	uint32_t mappings;
	uint64_t mapped_bytes;
	uint64_t tracked_bytes;
	uint64_t log_bytes;
	uint64_t rounds;
	uint64_t pending_round;
	uint64_t last_dirty_pages;
	uint64_t last_duration_usec;
	uint64_t dirty_rate;
	uint64_t last_round_timestamp; /* 0: none (no sample) */
	struct iod_metrics_paths devices;
};

/* "openmetrics" or "prometheus"; -EINVAL for anything else. */
int iod_metrics_format_from_string(const char *s, enum iod_metrics_format *ret);

/*
 * Read everything from the daemon on bus first, then write the text: to stdout if output is
 * NULL, else to a temporary file next to output that is renamed over it once complete (mode
 * 0644), so a reader never sees half a file. When the daemon cannot be asked, nothing is
 * written. Errors are printed; returns 0 or a negative errno.
 */
int iod_metrics_run(sd_bus *bus, enum iod_metrics_format format, const char *output);

/*
 * The text for d and sessions[0..n), in that order (iod_metrics_run() sorts them by name),
 * into f. Label values are escaped; strings must be UTF-8 (D-Bus strings are).
 */
void iod_metrics_write(FILE *f, enum iod_metrics_format format, const struct iod_metrics_daemon *d,
		       const struct iod_metrics_session *sessions, size_t n);

/* The metric families and the timer, for --help. */
void iod_metrics_help(FILE *f);

#endif
