/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bus tier, no bus needed: the metrics writer (client/metrics.c) on values that need
 * escaping, which the daemon itself never produces (session names are [A-Za-z0-9_-]):
 * a backslash, a double quote, a newline, UTF-8, and a state newer than the writer's lists.
 * Writes OUT.om (OpenMetrics) and OUT.prom (Prometheus text); tests/bus/check-metrics.py
 * --escape parses both and checks that every value comes back as it went in.
 *
 *   test-metrics-escape OUT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static int write_file(const char *out, const char *suffix, enum iod_metrics_format format,
		      const struct iod_metrics_daemon *d, const struct iod_metrics_session *s,
		      size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s.%s", out, suffix);
	f = fopen(path, "we");
	if (!f) {
		perror(path);
		return 1;
	}
	iod_metrics_write(f, format, d, s, n);
	if (fclose(f) != 0) {
		perror(path);
		return 1;
	}
	return 0;
}

int main(int argc, char *argv[])
{
	struct iod_metrics_daemon d = {
		.version = (char *)"1.0 \"quoted\" back\\slash\nnewline",
		.holes = (char *)"unknown",
		.max_sessions = 64,
		.restarts = 2,
		.has_restarts = true,
	};
	struct iod_metrics_session s[] = {
		{
			.name = (char *)"vm\"1\\x\ny",
			.mode = (char *)"owner",
			.state = (char *)"tracking",
			.tracking_mode = (char *)"hardware",
			.tracking = true,
			.precise = true,
			.log_complete = true,
			.page_size = 4096,
			.rounds = 7,
			.last_duration_usec = 1234567,
			.last_round_timestamp = 1700000000123456,
		},
		{
			.name = (char *)"gr\xc3\xbc\xc3\x9f"
					"e",
			.mode = (char *)"adopt",
			.state = (char *)"sleeping \"newer\"",
			.tracking_mode = (char *)"none",
			.page_size = 8192,
		},
	};

	if (argc != 2) {
		fprintf(stderr, "usage: %s OUT\n", argv[0]);
		return 2;
	}
	return write_file(argv[1], "om", IOD_METRICS_OPENMETRICS, &d, s, 2) ||
	       write_file(argv[1], "prom", IOD_METRICS_PROMETHEUS, &d, s, 2);
}
