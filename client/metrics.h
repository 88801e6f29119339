/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyctl metrics: the daemon's and its sessions' properties as OpenMetrics 1.0 text, or
 * as the Prometheus text format 0.0.4 that node_exporter's textfile collector reads, on
 * stdout or written atomically to a file. The metrics are listed in iodirtyctl(1), METRICS.
 */
#ifndef IOD_CTL_METRICS_H
#define IOD_CTL_METRICS_H

#include <stdio.h>

#include <systemd/sd-bus.h>

enum iod_metrics_format {
	IOD_METRICS_OPENMETRICS, /* application/openmetrics-text; version=1.0.0 */
	IOD_METRICS_PROMETHEUS, /* text/plain; version=0.0.4 (node_exporter's textfile collector) */
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

/* The metric families and the timer, for --help. */
void iod_metrics_help(FILE *f);

#endif
