/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bus tier: a thousand sessions from several owners, the daemon's restart with all of them,
 * and a restart under lower limits. iodirtyd runs under fdstore-harness (the service
 * manager's fd store, tests/vm/fdstore-harness.c) with the configuration file CONFIG, which
 * this program rewrites between restarts.
 *
 *   IOD_BUS_ADDRESS=... IOD_HARNESS=... test-bus-scale CONFIG SESSIONS
 *
 * What it pins down:
 *  - every session of every owner is one the daemon can watch: SESSIONS sessions from four
 *    connections (more than the 512 match rules dbus-daemon allows one connection) are all
 *    created, and the daemon stays up;
 *  - a restart (kill -9) restores all of them, their owners still connected, and stays up;
 *  - an owner that leaves takes its "destroy" sessions with it and nobody else's;
 *  - a restart with the limits lowered below what is stored restores every session
 *    (nothing is dropped), says so, and refuses new sessions until there is room again.
 * Prints "PASS: ..." per check; exits non-zero on the first failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon-test.h"
#include "fdstore-test.h"

#define OWNERS 4

static const char *config;

static void write_config(unsigned sessions)
{
	FILE *f = fopen(config, "we");

	dt_assert(f, "%s: %s", config, strerror(errno));
	fprintf(f,
		"{\"log_level\": \"info\", \"limits\": {\"sessions\": %u, \"sessions_per_user\": "
		"%u}}\n",
		sessions, sessions);
	dt_assert(fclose(f) == 0, "%s: %s", config, strerror(errno));
}

static uint64_t count_sessions(sd_bus *bus)
{
	sd_bus_message *reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "ListSessions", NULL, "");
	uint64_t n = 0;
	int r;

	r = sd_bus_message_enter_container(reply, 'a', "(sosu)");
	while (r > 0 && (r = sd_bus_message_skip(reply, "(sosu)")) > 0)
		n++;
	dt_assert(r >= 0, "ListSessions reply: %s", strerror(-r));
	sd_bus_message_unref(reply);
	return n;
}

static void create(sd_bus *bus, unsigned i)
{
	char name[32];
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	int r;

	snprintf(name, sizeof(name), "vm%u", i);
	r = sd_bus_call_method(bus, DT_DEST, DT_MANAGER, DT_MGR_IFACE, "CreateSession", &error,
			       &reply, "sa{sv}", name, 2, "viommu", "b", 1, "disconnect_policy",
			       "s", i % OWNERS == 0 ? "destroy" : "keep");
	dt_assert(r >= 0, "CreateSession #%u: %s: %s", i + 1, error.name ? error.name : "",
		  error.message ? error.message : strerror(-r));
	sd_bus_message_unref(reply);
}

int main(int argc, char *argv[])
{
	sd_bus *owners[OWNERS], *bus;
	unsigned n, starts;
	pid_t pid;
	char *s;

	setvbuf(stdout, NULL, _IOLBF, 0);
	dt_assert(argc == 3, "usage: test-bus-scale CONFIG SESSIONS");
	config = argv[1];
	n = (unsigned)strtoul(argv[2], NULL, 10);
	dt_assert(n >= 2 * OWNERS, "SESSIONS must be at least %d", 2 * OWNERS);

	pid = harness_wait_ready(1);
	for (unsigned k = 0; k < OWNERS; k++)
		owners[k] = dt_connect();
	bus = dt_connect();

	for (unsigned i = 0; i < n; i++)
		create(owners[i % OWNERS], i);
	dt_assert(count_sessions(bus) == n, "ListSessions after creating %u", n);
	dt_assert(kill(pid, 0) == 0, "iodirtyd is gone");
	dt_pass("%u sessions from %d owners (more than 512 from one connection): all created, "
		"the daemon is up",
		n, OWNERS);

	/* A restart takes every session back, with its owner still connected. */
	harness("kill 9");
	pid = harness_wait_ready(2);
	dt_assert(count_sessions(bus) == n, "ListSessions after the restart: %" PRIu64 ", want %u",
		  count_sessions(bus), n);
	s = dt_get_string(bus, "/org/iodirty/Tracker1/session/vm1", DT_SES_IFACE, "Owner");
	dt_assert(*s, "vm1 lost its owner in the restart");
	free(s);
	dt_assert(kill(pid, 0) == 0, "iodirtyd is gone after the restore");
	dt_pass("kill -9: all %u sessions restored with their owners, the daemon is up", n);

	/* An owner that leaves takes its own "destroy" sessions only. */
	sd_bus_flush_close_unref(owners[0]);
	for (int i = 0; i < 200 && count_sessions(bus) != n - n / OWNERS; i++)
		usleep(20000);
	dt_assert(count_sessions(bus) == n - n / OWNERS,
		  "%" PRIu64 " sessions after owner 0 left, want %u", count_sessions(bus),
		  n - n / OWNERS);
	n -= n / OWNERS;
	dt_pass("the owner of every fourth session left: exactly its %d \"destroy\" sessions went",
		(int)(n / (OWNERS - 1)));

	/* Lower the limits below what is stored: restored all the same, no new sessions. */
	write_config(4);
	starts = (unsigned)harness_field(harness("status"), "starts");
	harness("kill 9");
	pid = harness_wait_ready(starts + 1);
	dt_assert(count_sessions(bus) == n, "after a restart over the limit: %" PRIu64 ", want %u",
		  count_sessions(bus), n);
	sd_bus_message_unref(dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "CreateSession",
				     "org.iodirty.Error.LimitExceeded", "sa{sv}", "onemore", 0));
	dt_assert(dt_get_u64(bus, DT_MANAGER, DT_MGR_IFACE, "MaxSessions", 'u') == 4,
		  "MaxSessions");
	dt_pass("a restart with \"sessions\" lowered to 4: all %u sessions restored, new ones "
		"refused with LimitExceeded",
		n);

	for (unsigned k = 1; k < OWNERS; k++)
		sd_bus_flush_close_unref(owners[k]);
	sd_bus_flush_close_unref(bus);
	s = (char *)harness("quit");
	dt_assert(strncmp(s, "ok", 2) == 0, "quit: %s", s);
	printf("%u checks passed\n", dt_passed);
	return 0;
}
