/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirty-migrate: the reference pre-copy migration orchestrator driven by iodirtyd.
 * Copies guest memory held in a memfd to a file or a stream (pipe, socket), using the
 * daemon's dirty log to copy again only what devices wrote. See iodirty-migrate(1).
 *
 * Exit codes: 0 migrated (and verified with --verify), 1 the service or the destination
 * failed, 2 bad usage, 3 the destination differs from the source, 4 iodirtyd went away
 * (or its session did not survive), 5 a device was lost, 6 the session's dirty log is
 * incomplete, 7 the destination failed and the session is left tracking for --resume.
 *
 * A round is acknowledged only after the destination confirmed it: a file once written and
 * fdatasync'd, a receiver on a socket once it answered the round's sync record (it writes
 * the image, fdatasyncs it, then answers). A pipe carries nothing back: there a round counts
 * as delivered once written, and a resumed run to a pipe always begins with a full round.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "iodirty-client.h"
#include "iodirty.h"
#include "migrate-dest.h"
#include "migrate.h"

static const char *arg_address;
static bool arg_user;
static bool arg_json;
static bool arg_verify;
static bool arg_quiet;
static const char *arg_session;
static const char *arg_memory;
static int arg_memory_fd = -1;
static uint64_t arg_offset;
static uint64_t arg_size;
static uint64_t arg_gpa;
static const char *arg_dest;
static int arg_dest_fd = -1;
static const char *arg_receive;
static const char *arg_workload;
static bool arg_resume;
static bool arg_full;
static uint64_t arg_test_die_round = UINT64_MAX;
static int arg_stop_signal = SIGTERM;
static struct iod_migrate_config arg_c = {
	.mode = IOD_MIGRATE_OWNER,
	.converge_pages = 64,
	.max_rounds = 30,
	.on_daemon_restart = IOD_MIGRATE_RETRY,
	.on_device_lost = IOD_MIGRATE_ABORT,
	.iommufd = -1,
	.skip_holes = true,
};
static const char **arg_devices;
static int *arg_device_fds;
static uint32_t *arg_hwpts;
static struct iod_migrate_mapping *arg_maps;

static void help(void)
{
	printf("Usage: iodirty-migrate [OPTIONS...] --size=BYTES (--memory=PATH | --memory-fd=N)\n"
	       "                       (--dest=PATH | --dest-fd=N)\n"
	       "       iodirty-migrate --resume --session=NAME [--full] --size=BYTES\n"
	       "                       (--memory=PATH | --memory-fd=N) (--dest=PATH | --dest-fd=N)\n"
	       "       iodirty-migrate --receive=IMAGE [--resume] [--dest-fd=N]\n"
	       "\n"
	       "Migrate guest memory by pre-copy, with the DMA dirty state from iodirtyd.\n"
	       "\n"
	       "Source:\n"
	       "     --memory=PATH        Guest memory file (memfd via /proc/PID/fd/N, tmpfs, hugetlbfs)\n"
	       "     --memory-fd=N        Guest memory as an inherited fd\n"
	       "     --offset=BYTES       Where the memory starts in the file (default 0)\n"
	       "     --size=BYTES         Bytes of guest memory (K, M, G suffixes)\n"
	       "     --gpa=ADDR           Its guest-physical address (default 0)\n"
	       "Session:\n"
	       "     --session=NAME       Session name (default migrate-PID)\n"
	       "     --device=DEV         Attach a VFIO device: PCI address or cdev path (repeat)\n"
	       "     --device-fd=N        Attach a VFIO cdev opened by the caller (repeat)\n"
	       "     --adopt              Adopt the caller's iommufd instead (needs the next three)\n"
	       "     --iommufd-fd=N       The caller's iommufd\n"
	       "     --ioas=ID            Its IOAS\n"
	       "     --hwpt=ID            A HWPT to track (repeat)\n"
	       "     --viommu             IOVA differs from GPA: report mappings with --map\n"
	       "     --map=IOVA:GPA:SIZE  A vIOMMU mapping (repeat)\n"
	       "     --page-size=BYTES    Dirty log page size\n"
	       "     --keep-session       Do not destroy the session at the end\n"
	       "     --resume             Go on with session NAME, left by a run whose destination\n"
	       "                          failed (exit 7) or that died: to a destination that kept\n"
	       "                          its memory only what is dirty since its last confirmed\n"
	       "                          round, to a new one a full round first\n"
	       "     --full               With --resume: the destination is new, copy everything\n"
	       "Destination:\n"
	       "     --dest=PATH          A file (image of the memory) or '-' for a stream on stdout\n"
	       "     --dest-fd=N          An inherited fd: a file, or a pipe or socket (stream)\n"
	       "     --receive=IMAGE      Receive a stream on stdin (or --dest-fd) into IMAGE;\n"
	       "                          with --resume keep what IMAGE has (a resumed sender\n"
	       "                          on a socket then sends only what is missing)\n"
	       "     --verify             Check the destination against the source at the end\n"
	       "     --no-skip-holes      Copy what the source never populated too (zeros)\n"
	       "Loop:\n"
	       "     --max-rounds=N       Dirty rounds before stop-and-copy (default 30)\n"
	       "     --converge-pages=N   Stop when a round has at most N dirty pages (default 64)\n"
	       "     --max-bandwidth=B    Copy at most B bytes per second (K, M, G suffixes)\n"
	       "     --workload=CMD       Run CMD (sh -c) while migrating; stop it before the final round\n"
	       "     --stop-signal=SIG    Signal that stops the workload: TERM (default; waits for\n"
	       "                          it to exit) or STOP (waits until it is stopped)\n"
	       "     --pause-time=MS      What stopping the workload takes, for the downtime\n"
	       "                          estimate (default 0: not known; the result reports it)\n"
	       "     --on-daemon-restart=retry|abort   (default retry)\n"
	       "     --restart-timeout=SEC              (default 30)\n"
	       "     --on-device-lost=abort|continue    (default abort)\n"
	       "     --test-drop-round=N|final          Test only: do not copy that round\n"
	       "     --test-receiver-die-after=N        Test only: the receiver exits after\n"
	       "                                        confirming N rounds\n"
	       "Output and bus:\n"
	       "  -j --json               Print the rounds and the result as JSON\n"
	       "  -q --quiet              No table\n"
	       "     --address=ADDRESS    Talk to the bus at ADDRESS (default: the system bus)\n"
	       "     --user               Talk to the user bus\n"
	       "  -h --help               Show this help\n"
	       "     --version            Show the version\n"
	       "\n"
	       "Exit status: 0 migrated, 1 failed, 2 bad usage, 3 destination differs,\n"
	       "4 iodirtyd went away, 5 device lost, 6 dirty log incomplete, 7 destination failed:\n"
	       "the session keeps tracking, go on with --resume. See iodirty-migrate(1).\n");
}

static char *bytes_str(char *buf, size_t size, uint64_t n)
{
	if (n >= (UINT64_C(1) << 30))
		snprintf(buf, size, "%.1f GiB", n / (double)(UINT64_C(1) << 30));
	else if (n >= (UINT64_C(1) << 20))
		snprintf(buf, size, "%.1f MiB", n / (double)(UINT64_C(1) << 20));
	else if (n >= 1024)
		snprintf(buf, size, "%.1f KiB", n / 1024.0);
	else
		snprintf(buf, size, "%" PRIu64 " B", n);
	return buf;
}

static char *usec_str(char *buf, size_t size, uint64_t usec)
{
	if (usec >= 1000000)
		snprintf(buf, size, "%.2f s", usec / 1e6);
	else if (usec >= 1000)
		snprintf(buf, size, "%.1f ms", usec / 1e3);
	else
		snprintf(buf, size, "%" PRIu64 " us", usec);
	return buf;
}

/* --- the workload ----------------------------------------------------------------------------- */

struct run {
	struct dest *dest; /* first: dest_write() finds it there */
	pid_t workload;
	struct json_object *rounds;
	uint64_t page;
};

static int workload_started(struct iod_migrate *m, void *userdata)
{
	struct run *run = userdata;
	pid_t pid;

	if (!arg_workload)
		return 0;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		setenv("IODIRTY_SESSION_PATH", iod_migrate_session_path(m), 1);
		execl("/bin/sh", "sh", "-c", arg_workload, (char *)NULL);
		_exit(127);
	}
	run->workload = pid;
	return 0;
}

static int workload_pause(struct iod_migrate *m, void *userdata)
{
	struct run *run = userdata;
	int status;

	if (run->workload <= 0)
		return 0;
	if (kill(run->workload, arg_stop_signal) < 0)
		return -errno;
	for (;;) {
		pid_t p = waitpid(run->workload, &status,
				  arg_stop_signal == SIGSTOP ? WUNTRACED : 0);

		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0)
			return -errno;
		break;
	}
	if (!WIFSTOPPED(status)) {
		run->workload = 0;
		if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
			fprintf(stderr, "The workload exited with status %d.\n",
				WEXITSTATUS(status));
			return -ECHILD;
		}
	}
	return 0;
}

static void workload_kill(struct run *run)
{
	if (run->workload <= 0)
		return;
	kill(run->workload, SIGKILL);
	kill(run->workload, SIGCONT);
	while (waitpid(run->workload, NULL, 0) < 0 && errno == EINTR)
		;
	run->workload = 0;
}

/* --- the report ------------------------------------------------------------------------------- */

/* Estimated against measured, part by part (struct iod_migrate_estimate). */
static void print_downtime(const struct iod_migrate_result *res)
{
	const struct iod_migrate_estimate *e = &res->est, *m = &res->measured;
	char a[32], b[32];

	printf("downtime: estimated %s, measured %s", usec_str(a, sizeof(a), e->downtime_usec),
	       usec_str(b, sizeof(b), m->downtime_usec));
	if (m->downtime_usec)
		printf(" (ratio %.2f)", (double)e->downtime_usec / (double)m->downtime_usec);
	printf(": pause %s", usec_str(a, sizeof(a), e->pause_usec));
	printf("/%s, ", usec_str(b, sizeof(b), m->pause_usec));
	printf("harvest %s", usec_str(a, sizeof(a), e->harvest_usec));
	printf("/%s, ", usec_str(b, sizeof(b), m->harvest_usec));
	printf("copy %" PRIu64 "/%" PRIu64 " pages %s", e->pages, m->pages,
	       usec_str(a, sizeof(a), e->copy_usec));
	printf("/%s, ", usec_str(b, sizeof(b), m->copy_usec));
	printf("rest %s", usec_str(a, sizeof(a), e->fixed_usec));
	printf("/%s\n", usec_str(b, sizeof(b), m->fixed_usec));
}

static struct json_object *estimate_json(const struct iod_migrate_estimate *e)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "pages", json_object_new_uint64(e->pages));
	json_object_object_add(o, "pause_usec", json_object_new_uint64(e->pause_usec));
	json_object_object_add(o, "harvest_usec", json_object_new_uint64(e->harvest_usec));
	json_object_object_add(o, "copy_usec", json_object_new_uint64(e->copy_usec));
	json_object_object_add(o, "fixed_usec", json_object_new_uint64(e->fixed_usec));
	json_object_object_add(o, "downtime_usec", json_object_new_uint64(e->downtime_usec));
	return o;
}

static void on_round(const struct iod_migrate_round *r, void *userdata)
{
	struct run *run = userdata;
	char a[32], b[32], c[32], d[32], e[64] = "";

	if (arg_json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "round", json_object_new_int64(r->index));
		json_object_object_add(o, "kind",
				       json_object_new_string(r->index == 0 ? "full"
							      : r->final    ? "final"
									    : "dirty"));
		json_object_object_add(o, "daemon_round", json_object_new_uint64(r->daemon_round));
		json_object_object_add(o, "dirty_pages", json_object_new_uint64(r->dirty_pages));
		json_object_object_add(o, "bytes", json_object_new_uint64(r->bytes));
		json_object_object_add(o, "harvest_usec", json_object_new_uint64(r->harvest_usec));
		json_object_object_add(o, "daemon_usec", json_object_new_uint64(r->daemon_usec));
		json_object_object_add(o, "copy_usec", json_object_new_uint64(r->copy_usec));
		json_object_object_add(o, "bandwidth", json_object_new_uint64(r->bandwidth));
		json_object_object_add(o, "ack_usec", json_object_new_uint64(r->ack_usec));
		json_object_object_add(o, "interval_usec",
				       json_object_new_uint64(r->interval_usec));
		json_object_object_add(o, "est_downtime_usec",
				       json_object_new_uint64(r->est_downtime_usec));
		if (r->index > 0)
			json_object_object_add(o, "estimate", estimate_json(&r->est));
		if (r->final) {
			json_object_object_add(o, "pause_usec",
					       json_object_new_uint64(r->pause_usec));
			json_object_object_add(o, "downtime_usec",
					       json_object_new_uint64(r->downtime_usec));
		}
		json_object_object_add(o, "precise", json_object_new_boolean(r->precise));
		json_object_object_add(o, "skipped_bytes",
				       json_object_new_uint64(r->skipped_bytes));
		if (r->dropped)
			json_object_object_add(o, "dropped", json_object_new_boolean(true));
		json_object_array_add(run->rounds, o);
		return;
	}
	if (arg_quiet)
		return;
	if (r->index == 0)
		printf("%-6s %-6s %11s %10s %10s %10s %12s %14s\n", "ROUND", "KIND", "DIRTY-PAGES",
		       "COPIED", "HARVEST", "COPY-TIME", "BANDWIDTH", "EST-DOWNTIME");
	if (r->skipped_bytes)
		snprintf(e, sizeof(e), " (skipped %s never populated)",
			 bytes_str(a, sizeof(a), r->skipped_bytes));
	printf("%-6u %-6s %11" PRIu64 " %10s %10s %10s %10s/s %14s%s%s%s\n", r->index,
	       r->index == 0 ? "full"
	       : r->final    ? "final"
			     : "dirty",
	       r->dirty_pages, bytes_str(a, sizeof(a), r->bytes),
	       r->index == 0 ? "-" : usec_str(b, sizeof(b), r->harvest_usec),
	       usec_str(c, sizeof(c), r->copy_usec), bytes_str(d, sizeof(d), r->bandwidth),
	       r->index == 0 ? "-" : usec_str((char[32]){}, 32, r->est_downtime_usec), e,
	       r->precise ? "" : " (imprecise)", r->dropped ? " DROPPED (test)" : "");
	fflush(stdout);
}

/* --- options ---------------------------------------------------------------------------------- */

static int parse_size(const char *s, uint64_t *ret)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || s[0] == '-')
		return -EINVAL;
	switch (*end) {
	case 'K':
	case 'k':
		v <<= 10;
		end++;
		break;
	case 'M':
		v <<= 20;
		end++;
		break;
	case 'G':
		v <<= 30;
		end++;
		break;
	}
	if (*end)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_fd(const char *s, int *ret)
{
	uint64_t v;

	if (parse_size(s, &v) < 0 || v > 1 << 20)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

#define PUSH(array, n, value)                                                        \
	({                                                                           \
		__typeof__(array) _a = realloc(array, ((n) + 1) * sizeof(*(array))); \
		int _r = -ENOMEM;                                                    \
		if (_a) {                                                            \
			(array) = _a;                                                \
			(array)[(n)++] = (value);                                    \
			_r = 0;                                                      \
		}                                                                    \
		_r;                                                                  \
	})

enum {
	ARG_VERSION = 0x100,
	ARG_ADDRESS,
	ARG_USER,
	ARG_SESSION,
	ARG_MEMORY,
	ARG_MEMORY_FD,
	ARG_OFFSET,
	ARG_SIZE,
	ARG_GPA,
	ARG_DEVICE,
	ARG_DEVICE_FD,
	ARG_ADOPT,
	ARG_IOMMUFD_FD,
	ARG_IOAS,
	ARG_HWPT,
	ARG_VIOMMU,
	ARG_MAP,
	ARG_PAGE_SIZE,
	ARG_KEEP,
	ARG_DEST,
	ARG_DEST_FD,
	ARG_RECEIVE,
	ARG_VERIFY,
	ARG_MAX_ROUNDS,
	ARG_CONVERGE,
	ARG_BANDWIDTH,
	ARG_WORKLOAD,
	ARG_STOP_SIGNAL,
	ARG_ON_RESTART,
	ARG_RESTART_TIMEOUT,
	ARG_PAUSE_TIME,
	ARG_ON_DEVICE_LOST,
	ARG_DROP_ROUND,
	ARG_NO_SKIP_HOLES,
	ARG_RESUME,
	ARG_FULL,
	ARG_DIE_AFTER,
};

static int parse_argv(int argc, char *argv[])
{
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, ARG_VERSION},
		{"json", no_argument, NULL, 'j'},
		{"quiet", no_argument, NULL, 'q'},
		{"address", required_argument, NULL, ARG_ADDRESS},
		{"user", no_argument, NULL, ARG_USER},
		{"session", required_argument, NULL, ARG_SESSION},
		{"memory", required_argument, NULL, ARG_MEMORY},
		{"memory-fd", required_argument, NULL, ARG_MEMORY_FD},
		{"offset", required_argument, NULL, ARG_OFFSET},
		{"size", required_argument, NULL, ARG_SIZE},
		{"gpa", required_argument, NULL, ARG_GPA},
		{"device", required_argument, NULL, ARG_DEVICE},
		{"device-fd", required_argument, NULL, ARG_DEVICE_FD},
		{"adopt", no_argument, NULL, ARG_ADOPT},
		{"iommufd-fd", required_argument, NULL, ARG_IOMMUFD_FD},
		{"ioas", required_argument, NULL, ARG_IOAS},
		{"hwpt", required_argument, NULL, ARG_HWPT},
		{"viommu", no_argument, NULL, ARG_VIOMMU},
		{"map", required_argument, NULL, ARG_MAP},
		{"page-size", required_argument, NULL, ARG_PAGE_SIZE},
		{"keep-session", no_argument, NULL, ARG_KEEP},
		{"dest", required_argument, NULL, ARG_DEST},
		{"dest-fd", required_argument, NULL, ARG_DEST_FD},
		{"receive", required_argument, NULL, ARG_RECEIVE},
		{"verify", no_argument, NULL, ARG_VERIFY},
		{"no-skip-holes", no_argument, NULL, ARG_NO_SKIP_HOLES},
		{"max-rounds", required_argument, NULL, ARG_MAX_ROUNDS},
		{"converge-pages", required_argument, NULL, ARG_CONVERGE},
		{"max-bandwidth", required_argument, NULL, ARG_BANDWIDTH},
		{"workload", required_argument, NULL, ARG_WORKLOAD},
		{"stop-signal", required_argument, NULL, ARG_STOP_SIGNAL},
		{"on-daemon-restart", required_argument, NULL, ARG_ON_RESTART},
		{"restart-timeout", required_argument, NULL, ARG_RESTART_TIMEOUT},
		{"pause-time", required_argument, NULL, ARG_PAUSE_TIME},
		{"on-device-lost", required_argument, NULL, ARG_ON_DEVICE_LOST},
		{"test-drop-round", required_argument, NULL, ARG_DROP_ROUND},
		{"resume", no_argument, NULL, ARG_RESUME},
		{"full", no_argument, NULL, ARG_FULL},
		{"test-receiver-die-after", required_argument, NULL, ARG_DIE_AFTER},
		{},
	};
	size_t n_devices = 0, n_fds = 0, n_hwpts = 0, n_maps = 0;
	uint64_t v, w, x;
	int c, fd;

	while ((c = getopt_long(argc, argv, "hjq", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			help();
			return 0;
		case ARG_VERSION:
			printf("iodirty-migrate %s\n", IOD_VERSION);
			return 0;
		case 'j':
			arg_json = true;
			break;
		case 'q':
			arg_quiet = true;
			break;
		case ARG_ADDRESS:
			arg_address = optarg;
			break;
		case ARG_USER:
			arg_user = true;
			break;
		case ARG_SESSION:
			arg_session = optarg;
			break;
		case ARG_MEMORY:
			arg_memory = optarg;
			break;
		case ARG_MEMORY_FD:
			if (parse_fd(optarg, &arg_memory_fd) < 0)
				goto bad;
			break;
		case ARG_OFFSET:
			if (parse_size(optarg, &arg_offset) < 0)
				goto bad;
			break;
		case ARG_SIZE:
			if (parse_size(optarg, &arg_size) < 0 || arg_size == 0)
				goto bad;
			break;
		case ARG_GPA:
			if (parse_size(optarg, &arg_gpa) < 0)
				goto bad;
			break;
		case ARG_DEVICE:
			if (PUSH(arg_devices, n_devices, optarg) < 0)
				return -ENOMEM;
			break;
		case ARG_DEVICE_FD:
			if (parse_fd(optarg, &fd) < 0)
				goto bad;
			if (PUSH(arg_device_fds, n_fds, fd) < 0)
				return -ENOMEM;
			break;
		case ARG_ADOPT:
			arg_c.mode = IOD_MIGRATE_ADOPT;
			break;
		case ARG_IOMMUFD_FD:
			if (parse_fd(optarg, &arg_c.iommufd) < 0)
				goto bad;
			break;
		case ARG_IOAS:
			if (parse_size(optarg, &v) < 0 || v > UINT32_MAX)
				goto bad;
			arg_c.ioas = (uint32_t)v;
			break;
		case ARG_HWPT:
			if (parse_size(optarg, &v) < 0 || v > UINT32_MAX)
				goto bad;
			if (PUSH(arg_hwpts, n_hwpts, (uint32_t)v) < 0)
				return -ENOMEM;
			break;
		case ARG_VIOMMU:
			arg_c.viommu = true;
			break;
		case ARG_MAP: {
			char *a = strdup(optarg), *b, *d;
			int r = -EINVAL;

			if (!a)
				return -ENOMEM;
			b = strchr(a, ':');
			d = b ? strchr(b + 1, ':') : NULL;
			if (d) {
				*b++ = '\0';
				*d++ = '\0';
				if (parse_size(a, &v) >= 0 && parse_size(b, &w) >= 0 &&
				    parse_size(d, &x) >= 0)
					r = PUSH(arg_maps, n_maps,
						 ((struct iod_migrate_mapping){v, w, x}));
			}
			free(a);
			if (r == -ENOMEM)
				return r;
			if (r < 0)
				goto bad;
			break;
		}
		case ARG_PAGE_SIZE:
			if (parse_size(optarg, &arg_c.page_size) < 0)
				goto bad;
			break;
		case ARG_KEEP:
			arg_c.keep_session = true;
			break;
		case ARG_DEST:
			arg_dest = optarg;
			break;
		case ARG_DEST_FD:
			if (parse_fd(optarg, &arg_dest_fd) < 0)
				goto bad;
			break;
		case ARG_RECEIVE:
			arg_receive = optarg;
			break;
		case ARG_VERIFY:
			arg_verify = true;
			break;
		case ARG_NO_SKIP_HOLES:
			arg_c.skip_holes = false;
			break;
		case ARG_MAX_ROUNDS:
			if (parse_size(optarg, &v) < 0 || v == 0 || v > 100000)
				goto bad;
			arg_c.max_rounds = (unsigned)v;
			break;
		case ARG_CONVERGE:
			if (parse_size(optarg, &arg_c.converge_pages) < 0)
				goto bad;
			break;
		case ARG_BANDWIDTH:
			if (parse_size(optarg, &arg_c.max_bandwidth) < 0)
				goto bad;
			break;
		case ARG_WORKLOAD:
			arg_workload = optarg;
			break;
		case ARG_STOP_SIGNAL:
			if (strcmp(optarg, "TERM") == 0 || strcmp(optarg, "SIGTERM") == 0)
				arg_stop_signal = SIGTERM;
			else if (strcmp(optarg, "STOP") == 0 || strcmp(optarg, "SIGSTOP") == 0)
				arg_stop_signal = SIGSTOP;
			else if (strcmp(optarg, "INT") == 0 || strcmp(optarg, "SIGINT") == 0)
				arg_stop_signal = SIGINT;
			else
				goto bad;
			break;
		case ARG_ON_RESTART:
			if (strcmp(optarg, "retry") == 0)
				arg_c.on_daemon_restart = IOD_MIGRATE_RETRY;
			else if (strcmp(optarg, "abort") == 0)
				arg_c.on_daemon_restart = IOD_MIGRATE_ABORT;
			else
				goto bad;
			break;
		case ARG_RESTART_TIMEOUT:
			if (parse_size(optarg, &v) < 0 || v == 0 || v > 86400)
				goto bad;
			arg_c.restart_timeout_usec = v * 1000000;
			break;
		case ARG_PAUSE_TIME:
			if (parse_size(optarg, &v) < 0 || v > 3600 * 1000)
				goto bad;
			arg_c.pause_usec = v * 1000;
			break;
		case ARG_ON_DEVICE_LOST:
			if (strcmp(optarg, "abort") == 0)
				arg_c.on_device_lost = IOD_MIGRATE_ABORT;
			else if (strcmp(optarg, "continue") == 0)
				arg_c.on_device_lost = IOD_MIGRATE_CONTINUE;
			else
				goto bad;
			break;
		case ARG_DROP_ROUND:
			if (strcmp(optarg, "final") == 0)
				arg_c.drop_round = IOD_MIGRATE_DROP_FINAL;
			else if (parse_size(optarg, &arg_c.drop_round) < 0 || arg_c.drop_round == 0)
				goto bad;
			break;
		case ARG_RESUME:
			arg_resume = true;
			break;
		case ARG_FULL:
			arg_full = true;
			break;
		case ARG_DIE_AFTER:
			if (parse_size(optarg, &arg_test_die_round) < 0 ||
			    arg_test_die_round == UINT64_MAX)
				goto bad;
			break;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "Unexpected argument \"%s\". See iodirty-migrate --help.\n",
			argv[optind]);
		return -EINVAL;
	}
	arg_c.devices = arg_devices;
	arg_c.n_devices = n_devices;
	arg_c.device_fds = arg_device_fds;
	arg_c.n_device_fds = n_fds;
	arg_c.hwpts = arg_hwpts;
	arg_c.n_hwpts = n_hwpts;
	arg_c.mappings = arg_maps;
	arg_c.n_mappings = n_maps;

	if (arg_test_die_round != UINT64_MAX && !arg_receive) {
		fprintf(stderr, "--test-receiver-die-after needs --receive.\n");
		return -EINVAL;
	}
	if (arg_full && (!arg_resume || arg_receive)) {
		fprintf(stderr, "--full needs --resume (and is for the sender).\n");
		return -EINVAL;
	}
	if (arg_receive)
		return 1;
	if (arg_resume && !arg_session) {
		fprintf(stderr,
			"--resume needs --session: the name of the session to go on with.\n");
		return -EINVAL;
	}
	if (arg_resume &&
	    (arg_c.mode == IOD_MIGRATE_ADOPT || n_devices || n_fds || n_hwpts || n_maps ||
	     arg_c.viommu || arg_c.page_size || arg_c.iommufd >= 0 || arg_c.ioas)) {
		fprintf(stderr, "--resume goes on with an existing session: its devices, HWPTs, "
				"mappings and options are set already; drop --adopt, --device, "
				"--device-fd, --iommufd-fd, --ioas, --hwpt, --viommu, --map and "
				"--page-size.\n");
		return -EINVAL;
	}
	if (!arg_memory == (arg_memory_fd < 0)) {
		fprintf(stderr,
			"Give the guest memory with --memory or --memory-fd (one of them).\n");
		return -EINVAL;
	}
	if (!arg_size) {
		fprintf(stderr, "--size is needed.\n");
		return -EINVAL;
	}
	if (!arg_dest == (arg_dest_fd < 0)) {
		fprintf(stderr, "Give the destination with --dest or --dest-fd (one of them).\n");
		return -EINVAL;
	}
	if (arg_c.mode == IOD_MIGRATE_ADOPT) {
		if (arg_c.iommufd < 0 || !arg_c.ioas || n_devices || n_fds) {
			fprintf(stderr, "--adopt needs --iommufd-fd and --ioas (and --hwpt), and "
					"takes no --device: the devices belong to the caller.\n");
			return -EINVAL;
		}
	} else if (arg_c.iommufd >= 0 || arg_c.ioas || n_hwpts) {
		fprintf(stderr, "--iommufd-fd, --ioas and --hwpt need --adopt.\n");
		return -EINVAL;
	}
	if (n_maps && !arg_c.viommu) {
		fprintf(stderr, "--map needs --viommu.\n");
		return -EINVAL;
	}
	return 1;
bad:
	fprintf(stderr, "Bad value \"%s\". See iodirty-migrate --help.\n", optarg);
	return -EINVAL;
}

static int status_to_exit(enum iod_migrate_status s)
{
	switch (s) {
	case IOD_MIGRATE_OK:
		return EXIT_SUCCESS;
	case IOD_MIGRATE_DAEMON_LOST:
		return EXIT_DAEMON_LOST;
	case IOD_MIGRATE_DEVICE_LOST:
		return EXIT_DEVICE_LOST;
	case IOD_MIGRATE_SESSION_FAILED:
		return EXIT_SESSION_FAILED;
	case IOD_MIGRATE_DEST_FAILED:
		return EXIT_DEST_FAILED;
	default:
		return EXIT_FAILURE;
	}
}

static void print_result(const struct iod_migrate_result *res, int r, struct iod_migrate *m,
			 struct run *run, const char *verify, uint64_t bad, uint64_t first)
{
	char a[32], b[32], c[32], d[32];

	if (arg_json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "session", json_object_new_string(arg_c.session));
		json_object_object_add(
			o, "status",
			json_object_new_string(iod_migrate_status_to_string(res->status)));
		if (r < 0)
			json_object_object_add(o, "error",
					       json_object_new_string(iod_migrate_error(m)));
		json_object_object_add(o, "rounds", json_object_get(run->rounds));
		json_object_object_add(o, "dirty_rounds", json_object_new_int64(res->rounds));
		json_object_object_add(o, "converged", json_object_new_boolean(res->converged));
		json_object_object_add(o, "precise", json_object_new_boolean(res->precise));
		json_object_object_add(o, "total_bytes", json_object_new_uint64(res->total_bytes));
		json_object_object_add(o, "skip_holes", json_object_new_boolean(arg_c.skip_holes));
		json_object_object_add(o, "skipped_bytes",
				       json_object_new_uint64(res->skipped_bytes));
		json_object_object_add(o, "bandwidth", json_object_new_uint64(res->bandwidth));
		json_object_object_add(o, "est_downtime_usec",
				       json_object_new_uint64(res->est_downtime_usec));
		json_object_object_add(o, "downtime_usec",
				       json_object_new_uint64(res->downtime_usec));
		if (r >= 0) {
			json_object_object_add(o, "downtime_estimate", estimate_json(&res->est));
			json_object_object_add(o, "downtime_measured",
					       estimate_json(&res->measured));
		}
		json_object_object_add(o, "total_usec", json_object_new_uint64(res->total_usec));
		json_object_object_add(o, "daemon_restarts",
				       json_object_new_int64(res->daemon_restarts));
		json_object_object_add(o, "devices_lost", json_object_new_int64(res->devices_lost));
		json_object_object_add(o, "verification",
				       verify ? json_object_new_string(verify) : NULL);
		if (bad)
			json_object_object_add(o, "pages_differing", json_object_new_uint64(bad));
		printf("%s\n",
		       json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(o);
		return;
	}
	if (r < 0) {
		fprintf(stderr, "iodirty-migrate: %s: %s\n",
			iod_migrate_status_to_string(res->status), iod_migrate_error(m));
		if (res->status == IOD_MIGRATE_DEST_FAILED)
			fprintf(stderr,
				"iodirty-migrate: session %s keeps tracking: no round the destination "
				"did not confirm was acknowledged. Go on with\n"
				"  iodirty-migrate --resume --session=%s --size=... --memory... "
				"--dest...\n"
				"to the same destination (only what it misses is sent; a receiver "
				"needs --receive=IMAGE --resume),\n"
				"or add --full for a new destination; or drop it with iodirtyctl.\n",
				arg_c.session, arg_c.session);
		return;
	}
	if (arg_quiet && !verify)
		return;
	if (!arg_quiet) {
		printf("\nmigrated %s in %s: %u dirty round%s (%s), %s copied at %s/s%s\n",
		       bytes_str(a, sizeof(a), arg_size), usec_str(b, sizeof(b), res->total_usec),
		       res->rounds, res->rounds == 1 ? "" : "s",
		       res->converged ? "converged" : "round limit reached",
		       bytes_str(c, sizeof(c), res->total_bytes),
		       bytes_str(d, sizeof(d), res->bandwidth),
		       res->precise ? "" : ", imprecise: fallback devices");
		if (res->skipped_bytes)
			printf("skipped: %s the source never populated (holes: zero at the "
			       "destination without being copied)\n",
			       bytes_str(a, sizeof(a), res->skipped_bytes));
		print_downtime(res);
	}
	if (verify && strcmp(verify, "mismatch") == 0)
		printf("verification: MISMATCH: %" PRIu64
		       " page%s differ, the first at GPA 0x%" PRIx64 "\n",
		       bad, bad == 1 ? "" : "s", first);
	else if (verify && strcmp(verify, "equal") == 0)
		printf("verification: the destination equals the source, byte for byte\n");
	else if (verify)
		printf("verification: %s\n", verify);
}

int main(int argc, char *argv[])
{
	_cleanup_free_ char *session = NULL;
	struct iod_migrate_result res = {};
	struct iod_migrate_ops ops = {
		.started = workload_started,
		.pause = workload_pause,
		.write = dest_write,
		.round = on_round,
		.confirm = dest_confirm,
	};
	struct dest dest = {.fd = -1};
	struct run run = {.dest = &dest};
	struct iod_migrate *m = NULL;
	const char *verify = NULL;
	uint64_t bad = 0, first = 0;
	sd_bus *bus = NULL;
	struct stat st;
	bool existed = false;
	int memfd, r, ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	r = parse_argv(argc, argv);
	if (r <= 0)
		return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;
	if (arg_receive)
		return migrate_receive(arg_receive, arg_dest_fd, arg_resume, arg_test_die_round);

	if (!arg_session) {
		if (asprintf(&session, "migrate-%d", (int)getpid()) < 0)
			return EXIT_FAILURE;
		arg_session = session;
	}
	arg_c.session = arg_session;
	arg_c.offset = arg_offset;
	arg_c.size = arg_size;
	arg_c.gpa = arg_gpa;

	memfd = arg_memory_fd;
	if (arg_memory) {
		memfd = open(arg_memory, O_RDWR | O_CLOEXEC);
		if (memfd < 0) {
			fprintf(stderr, "Cannot open the guest memory %s: %m\n", arg_memory);
			return EXIT_FAILURE;
		}
	}
	if (fstat(memfd, &st) < 0 || (uint64_t)st.st_size < arg_offset + arg_size) {
		fprintf(stderr, "The guest memory is smaller than --offset + --size.\n");
		return EXIT_FAILURE;
	}
	arg_c.memfd = memfd;

	dest.gpa = arg_gpa;
	dest.session = arg_session;
	if (arg_dest && strcmp(arg_dest, "-") == 0)
		dest.fd = STDOUT_FILENO;
	else if (arg_dest) {
		existed = stat(arg_dest, &st) >= 0 && S_ISREG(st.st_mode) && st.st_size != 0;
		dest.fd = open(arg_dest, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	} else
		dest.fd = arg_dest_fd;
	if (dest.fd < 0 || fstat(dest.fd, &st) < 0) {
		fprintf(stderr, "Cannot open the destination %s: %m\n", arg_dest ? arg_dest : "fd");
		return EXIT_FAILURE;
	}
	dest.stream = !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode);
	dest.sock = S_ISSOCK(st.st_mode);
	/*
	 * A file named by path carries a marker (marker_write()): it kept its memory when the
	 * marker says which round of this session it confirmed, and it has the memory's size.
	 * Anything else (a block device, a file by fd, a file without the marker) is not kept:
	 * its marker goes before anything is written, and a resume to it is a full round.
	 */
	if (!dest.stream && S_ISREG(st.st_mode) && arg_dest)
		dest.image = arg_dest;
	if (arg_resume && !arg_full && dest.image && existed) {
		if ((uint64_t)st.st_size != arg_size) {
			fprintf(stderr,
				"The destination has %" PRIu64 " bytes, not the memory's %" PRIu64
				": not an image of this migration. Resume to it with --full.\n",
				(uint64_t)st.st_size, arg_size);
			return EXIT_FAILURE;
		}
		dest.kept = marker_read(dest.image, arg_session, &dest.confirmed) == 0;
		if (!dest.kept)
			fprintf(stderr,
				"iodirty-migrate: %s has no confirmed round of session %s (no "
				"%s.iodirty): a full round first\n",
				dest.image, arg_session, dest.image);
	}
	if (dest.image && !dest.kept)
		marker_remove(dest.image);
	if (dest.stream && dest.fd == STDOUT_FILENO && !arg_quiet && !arg_json) {
		/* the stream owns stdout: the table goes to stderr */
		dest.fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
		if (dest.fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
			fprintf(stderr, "Cannot move stdout: %m\n");
			return EXIT_FAILURE;
		}
	}
	if (!dest.stream && S_ISREG(st.st_mode) && ftruncate(dest.fd, (off_t)arg_size) < 0) {
		fprintf(stderr, "Cannot size the destination: %m\n");
		return EXIT_FAILURE;
	}
	/* A destination that kept its memory is never cleared; a full round sent to it after
	 * all (--full, or the session is not where the image is) copies the holes too. */
	if (dest.kept)
		arg_c.skip_holes = false;
	if (!dest.stream && arg_c.skip_holes && dest_clear(&dest, arg_size) < 0) {
		fprintf(stderr,
			"The destination cannot be cleared (%m): copying the holes of the source "
			"too (as with --no-skip-holes).\n");
		arg_c.skip_holes = false;
	}
	if (dest.stream && stream_begin(&dest, arg_size) < 0) {
		fprintf(stderr, "Cannot write to the destination: %m\n");
		return EXIT_FAILURE;
	}
	if (dest.kept)
		arg_c.skip_holes = false; /* the receiver kept its image (its hello said so) */
	if (arg_resume && dest.stream && !dest.sock)
		fprintf(stderr, "iodirty-migrate: a pipe cannot tell what the receiver kept: a "
				"full round first\n");
	arg_c.resumable = true;
	arg_c.resume = arg_resume;
	arg_c.resume_full = arg_full || !dest.kept;
	arg_c.resume_confirmed = dest.confirmed;

	run.rounds = json_object_new_array();
	run.page = arg_c.page_size ? arg_c.page_size : 4096;
	r = iod_bus_client_open(arg_address, arg_user, &bus);
	if (r < 0) {
		fprintf(stderr, "Failed to connect to the bus: %s\n", strerror(-r));
		return EXIT_FAILURE;
	}
	r = iod_migrate_new(bus, &arg_c, &ops, &run, &m);
	if (r < 0) {
		fprintf(stderr, "Cannot set up the migration: %s\n", strerror(-r));
		return EXIT_FAILURE;
	}

	r = iod_migrate_run(m, &res);
	ret = r < 0 ? status_to_exit(res.status) : EXIT_SUCCESS;
	if (ret == EXIT_SUCCESS)
		ret = status_to_exit(res.status);

	/* The workload is paused (or gone) after a successful final round: compare now. */
	if (r >= 0 && arg_verify) {
		const uint8_t *mem = mmap(NULL, arg_size, PROT_READ, MAP_SHARED, memfd,
					  (off_t)arg_offset);

		if (mem == MAP_FAILED) {
			verify = "error";
			ret = EXIT_FAILURE;
		} else if (dest.stream) {
			int verdict;

			if (stream_end(&dest, true, checksum(mem, arg_size), &verdict) < 0) {
				verify = "error";
				ret = EXIT_FAILURE;
			} else if (verdict == VERDICT_EQUAL) {
				verify = "the receiver's image matches the source's checksum";
			} else if (verdict == VERDICT_MISMATCH) {
				verify = "MISMATCH: the receiver's image differs from the source's "
					 "checksum";
				ret = EXIT_MISMATCH;
			} else {
				verify = "sent (the receiver checks it)";
			}
		} else if (verify_file(&dest, mem, arg_size, run.page, &bad, &first) < 0) {
			verify = "error";
			ret = EXIT_FAILURE;
		} else {
			verify = bad ? "mismatch" : "equal";
			if (bad)
				ret = EXIT_MISMATCH;
		}
		if (mem != MAP_FAILED)
			munmap((void *)mem, arg_size);
	} else if (r >= 0 && dest.stream) {
		int verdict;

		if (stream_end(&dest, false, 0, &verdict) < 0)
			ret = EXIT_FAILURE;
	}
	if (r < 0 && run.workload > 0)
		(void)workload_pause(m, &run); /* let it finish its step: nothing half done */
	workload_kill(&run);
	print_result(&res, r, m, &run, verify, bad, first);

	iod_migrate_free(m);
	json_object_put(run.rounds);
	sd_bus_flush_close_unref(bus);
	if (dest.fd > STDERR_FILENO)
		close(dest.fd);
	free(arg_devices);
	free(arg_device_fds);
	free(arg_hwpts);
	free(arg_maps);
	return ret;
}
