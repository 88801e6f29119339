/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Harvest benchmarks in the mock guest, each printed as a ratio to a baseline measured in
 * the same run (never a pass/fail on time):
 *
 *  1. a daemon harvest round (D-Bus call, read-and-clear per HWPT, translation, merge,
 *     delivery of the log memfd, mapped by the client) against the raw
 *     IOMMU_HWPT_GET_DIRTY_BITMAP loop over the same HWPTs and range, for 256 MiB and for
 *     the whole mock aperture [16 MiB, 2 GiB), dense and sparse dirty sets (target 1.15x);
 *  2. delivering a 64 MiB bitmap (2 TiB of guest memory at 4 KiB pages): the log memfd of
 *     a Harvest against the same bytes inline in a D-Bus byte array (a test-only echo
 *     service on the same bus), both read to the end by the client;
 *  3. vIOMMU churn: map + unmap pairs per second with the daemon in the loop (Map, Unmap
 *     with its harvest before unmap) against the raw IOAS map + unmap ioctls;
 *  4. single vIOMMU events: Map + Unmap pairs per second through iodirtyd (D-Bus calls, and
 *     batches of one on the session's event channel) with 10 and with
 *     10,000 live mappings in the session, and with 1 and with 50 sessions in the daemon
 *     (the other 49 holding mappings too), against what a VMM does in-process for the same
 *     event (IOAS map, a read without clearing of the range per HWPT, IOAS unmap) and the
 *     bare IOAS ioctls; once with iodirtyd alone (no NOTIFY_SOCKET: nothing is persisted)
 *     and once under fdstore-harness, which gives it systemd's fd store, so that every
 *     event is persisted as under systemd. Each figure is a median of 5 short runs. Printed:
 *     the rates, 10 / 10,000 mappings, 1 / 50 sessions, what persistence costs (no store /
 *     store) and daemon / in-process; and the pairs in batches of 64 (event channel, D-Bus
 *     MapBatch/UnmapBatch, in-process) with 10 and with 10,000 live mappings.
 *
 *  5. nested mode: a Harvest round of a nested session (its nest parent read by GPA into the
 *     log) against the raw IOMMU_HWPT_GET_DIRTY_BITMAP on the parent, 256 MiB, dense and
 *     sparse.
 *  6. one VM never stalls another: the unmap latency of session A (median and max of
 *     NS_EVENTS events; Unmap on D-Bus, and an unmap batch on the event channel, each from
 *     the send to the answer) while session B (another process, another bus connection)
 *     harvests the whole mock aperture (about 2 GiB, 2 HWPTs) round after round, against
 *     the same with B idle (goal <= 2x).
 *  7. the first round of a sparse guest (512 MiB, about 1/16 populated in 64 KiB extents) by
 *     the reference migration (client/migrate.c, as iodirty-migrate runs it: the memfd mapped
 *     read-only, the bytes written to a link at memory speed): holes skipped against the
 *     plain full copy, a fresh memfd of the same contents for each; the bytes, the time from
 *     Start to the end of the round, and what the round left populated on the source.
 *
 * IOD_BENCH_ONLY=holes runs 7 alone; IOD_BENCH_ONLY=harvest runs 1 alone; IOD_BENCH_ONLY=nostall runs 6 alone; IOD_BENCH_ONLY=nested runs 5 alone; IOD_BENCH_ONLY=events runs 4 alone (tests/vm/run: IOD_VM_ENV="IOD_BENCH_ONLY=events").
 *
 * It starts its own bus (dbus-daemon with a permissive config and message limits big enough
 * for the inline transfer) and its own iodirtyd on it. Exit 77 without iommufd, mock devices,
 * dbus-daemon or iodirtyd.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <systemd/sd-bus.h>

#include "daemon-test.h"
#include "fdstore-test.h"
#include "iodirty-client.h"
#include "iodirty.h"
#include "iommufd-mock.h"
#include "migrate.h"
#include "test-rng.h"

#define SKIP 77
#define SZ_1M (UINT64_C(1) << 20)
#define N_HWPTS 2
#define PAGE 4096

static char bus_address[512];
static pid_t dbus_pid, daemon_pid, echo_pid;
static uint64_t mock_page;

static void cleanup(void)
{
	pid_t pids[] = {echo_pid, daemon_pid, dbus_pid};

	for (size_t i = 0; i < ELEMENTSOF(pids); i++)
		if (pids[i] > 0) {
			kill(pids[i], SIGTERM);
			waitpid(pids[i], NULL, 0);
		}
	echo_pid = daemon_pid = dbus_pid = 0;
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("FAIL: ");
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	cleanup();
	exit(EXIT_FAILURE);
}

static void skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("SKIP: ");
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	cleanup();
	exit(SKIP);
}

/* --- the bus, the daemon, the echo service -------------------------------------------------- */

static const char bus_conf[] =
	"<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
	" \"https://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
	"<busconfig>\n"
	" <type>session</type>\n"
	" <listen>unix:path=/tmp/iodirty-bench-bus</listen>\n"
	" <auth>EXTERNAL</auth>\n"
	" <policy context=\"default\">\n"
	"  <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
	"  <allow eavesdrop=\"true\"/>\n"
	"  <allow own=\"*\"/>\n"
	" </policy>\n"
	" <limit name=\"max_message_size\">134217728</limit>\n"
	" <limit name=\"max_incoming_bytes\">1000000000</limit>\n"
	" <limit name=\"max_outgoing_bytes\">1000000000</limit>\n"
	" <limit name=\"reply_timeout\">300000</limit>\n"
	"</busconfig>\n";

static void start_bus(void)
{
	int pfd[2];
	FILE *f;
	ssize_t l;

	f = fopen("/tmp/iodirty-bench-bus.conf", "we");
	if (!f || fputs(bus_conf, f) < 0 || fclose(f) != 0)
		die("writing the bus config: %m");
	if (pipe(pfd) < 0)
		die("pipe: %m");
	dbus_pid = fork();
	if (dbus_pid == 0) {
		char arg[64];

		close(pfd[0]);
		snprintf(arg, sizeof(arg), "--print-address=%d", pfd[1]);
		execlp("dbus-daemon", "dbus-daemon", "--config-file=/tmp/iodirty-bench-bus.conf",
		       "--nofork", arg, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	l = read(pfd[0], bus_address, sizeof(bus_address) - 1);
	close(pfd[0]);
	if (l <= 0)
		skip("dbus-daemon did not start");
	bus_address[l] = '\0';
	bus_address[strcspn(bus_address, "\n")] = '\0';
}

static bool name_has_owner(sd_bus *bus, const char *name)
{
	return sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				  "org.freedesktop.DBus", "GetNameOwner", NULL, NULL, "s",
				  name) >= 0;
}

static void wait_name(sd_bus *bus, const char *name, pid_t pid)
{
	for (int i = 0; i < 400; i++) {
		if (name_has_owner(bus, name))
			return;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			break;
		usleep(50000);
	}
	skip("%s did not appear on the bus", name);
}

#define HARNESS_CONTROL "/tmp/iodirty-bench-harness"

/* iodirtyd on the bench bus; with store, under fdstore-harness (the fd store of systemd). */
static void start_daemon(sd_bus *bus, bool store)
{
	char arg[600];

	daemon_pid = fork();
	if (daemon_pid == 0) {
		snprintf(arg, sizeof(arg), "--bus-address=%s", bus_address);
		if (store)
			execlp("fdstore-harness", "fdstore-harness", "--control=" HARNESS_CONTROL,
			       "--", "iodirtyd", arg, "--log-level=warning",
			       "--limit=log_bytes=268435456", "--limit=sessions=64", (char *)NULL);
		else if (unsetenv("NOTIFY_SOCKET") == 0) /* no fd store: nothing is persisted */
			execlp("iodirtyd", "iodirtyd", arg, "--log-level=warning",
			       "--limit=log_bytes=268435456", "--limit=sessions=64", (char *)NULL);
		_exit(127);
	}
	wait_name(bus, IOD_BUS_NAME, daemon_pid);
}

/* Stop it (with the harness, the harness ends it and closes the store) and wait until the
 * bus has dropped its name, so that the next daemon is the one that gets it. */
static void stop_daemon(sd_bus *bus)
{
	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, NULL, 0);
	}
	daemon_pid = 0;
	for (int i = 0; i < 200 && name_has_owner(bus, IOD_BUS_NAME); i++)
		usleep(50000);
	if (name_has_owner(bus, IOD_BUS_NAME))
		die("%s still has an owner after the daemon exited", IOD_BUS_NAME);
}

/* The test-only echo: Bitmap(t size) -> ay of size bytes, from a buffer it keeps. */
static uint8_t *echo_buf;

static int echo_bitmap(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	sd_bus_message *reply = NULL;
	uint64_t size;
	int r;

	r = sd_bus_message_read(m, "t", &size);
	if (r < 0)
		return r;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r >= 0)
		r = sd_bus_message_append_array(reply, 'y', echo_buf, size);
	if (r >= 0)
		r = sd_bus_send(NULL, reply, NULL);
	sd_bus_message_unref(reply);
	return r;
}

static const sd_bus_vtable echo_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("Bitmap", "t", "ay", echo_bitmap, 0),
	SD_BUS_VTABLE_END,
};

static void start_echo(sd_bus *bus, uint64_t size)
{
	echo_pid = fork();
	if (echo_pid == 0) {
		sd_bus *b = NULL;

		echo_buf = malloc(size);
		if (!echo_buf || iod_bus_client_open(bus_address, false, &b) < 0)
			_exit(1);
		for (uint64_t i = 0; i < size; i++)
			echo_buf[i] = (uint8_t)rng();
		if (sd_bus_add_object_vtable(b, NULL, "/bench", "org.iodirty.BenchEcho",
					     echo_vtable, NULL) < 0 ||
		    sd_bus_request_name(b, "org.iodirty.BenchEcho", 0) < 0)
			_exit(1);
		for (;;) {
			int r = sd_bus_process(b, NULL);

			if (r < 0)
				_exit(1);
			if (r == 0)
				sd_bus_wait(b, UINT64_MAX);
		}
	}
	wait_name(bus, "org.iodirty.BenchEcho", echo_pid);
}

/* --- the mock machine ------------------------------------------------------------------------ */

struct mock {
	struct iod_iommufd *ictx;
	int fd;
	uint32_t ioas, stdev[N_HWPTS], hwpt[N_HWPTS];
	int memfd;
	uint8_t *mem;
	uint64_t mem_size;
};

static void mock_setup(struct mock *k, uint64_t mem_size)
{
	int r;

	*k = (struct mock){.mem_size = mem_size};
	r = iod_iommufd_open(NULL, &k->ictx);
	if (r < 0)
		skip("no iommufd: %s", iod_strerror(r));
	k->fd = iod_iommufd_fd(k->ictx);
	if (iod_ioas_alloc(k->ictx, &k->ioas) < 0 ||
	    iod_ioas_set_huge_pages(k->ictx, k->ioas, false) < 0)
		die("IOAS: %m");
	for (int i = 0; i < N_HWPTS; i++) {
		struct iod_mock_cmd cmd = {
			.size = sizeof(cmd), .op = IOD_MOCK_OP_DOMAIN_FLAGS, .id = k->ioas};
		struct iod_mock_cmd rep = {.size = sizeof(rep), .op = IOD_MOCK_OP_DOMAIN_REPLACE};

		if (ioctl(k->fd, IOD_MOCK_CMD, &cmd) < 0)
			skip("no iommufd mock devices: %m");
		k->stdev[i] = cmd.domain.out_stdev_id;
		r = iod_hwpt_alloc(k->ictx, cmd.domain.out_idev_id, k->ioas, IOD_HWPT_DIRTY,
				   &k->hwpt[i]);
		if (r < 0)
			die("dirty HWPT: %s", strerror(-r));
		rep.id = k->stdev[i];
		rep.replace.pt_id = k->hwpt[i];
		if (ioctl(k->fd, IOD_MOCK_CMD, &rep) < 0)
			die("replace: %m");
	}
	k->memfd = memfd_create("bench-ram", MFD_CLOEXEC);
	if (k->memfd < 0 || ftruncate(k->memfd, (off_t)mem_size) < 0)
		die("memfd: %m");
	k->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->memfd, 0);
	if (k->mem == MAP_FAILED)
		die("mmap: %m");
	memset(k->mem, 1, mem_size);
}

/* [iova, iova + length) mapped by repeating the memory (aliases: any range fits in RAM). */
static void mock_map_range(struct mock *k, uint64_t iova, uint64_t length)
{
	for (uint64_t done = 0; done < length;) {
		uint64_t n = length - done < k->mem_size ? length - done : k->mem_size;
		int r = iod_ioas_map(k->ictx, k->ioas, k->mem, n, iova + done,
				     IOD_MAP_READ | IOD_MAP_WRITE);

		if (r < 0)
			die("map IOVA 0x%" PRIx64 ": %s", iova + done, strerror(-r));
		done += n;
	}
}

static void mock_unmap_range(struct mock *k, uint64_t iova, uint64_t length)
{
	if (iod_ioas_unmap(k->ictx, k->ioas, iova, length, NULL) < 0)
		die("unmap: %m");
}

static void mock_teardown(struct mock *k)
{
	for (int i = 0; i < N_HWPTS; i++) {
		(void)iod_iommufd_destroy(k->ictx, k->stdev[i]);
		(void)iod_iommufd_destroy(k->ictx, k->hwpt[i]);
	}
	(void)iod_iommufd_destroy(k->ictx, k->ioas);
	k->ictx = iod_iommufd_free(k->ictx);
	munmap(k->mem, k->mem_size);
	close(k->memfd);
}

/* What devices do: mark the mock IOPTEs of marks (one bit per mock page from iova) dirty. */
static void mock_mark(struct mock *k, uint64_t iova, uint64_t length, const uint64_t *marks)
{
	for (int i = 0; i < N_HWPTS; i++) {
		struct iod_mock_cmd cmd = {
			.size = sizeof(cmd),
			.op = IOD_MOCK_OP_DIRTY,
			.id = k->hwpt[i],
			.dirty = {.iova = iova,
				  .length = length,
				  .page_size = mock_page,
				  .uptr = (uintptr_t)marks},
		};

		if (ioctl(k->fd, IOD_MOCK_CMD, &cmd) < 0)
			die("mock DIRTY: %m");
	}
}

/* --- session helpers ------------------------------------------------------------------------- */

/* AdoptSession of the mock's IOAS; with hwpts, its dirty tracking HWPTs too. */
static char *adopt(sd_bus *bus, struct mock *k, const char *name, bool viommu, bool hwpts)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL, *reply = NULL;
	const char *path;
	char *ret;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, IOD_BUS_NAME, IOD_MANAGER_PATH,
					   IOD_MANAGER_INTERFACE, "AdoptSession");
	if (r >= 0)
		r = sd_bus_message_append(m, "shu", name, k->fd, k->ioas);
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'u', k->hwpt, hwpts ? sizeof(k->hwpt) : 0);
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 1, "viommu", "b", (int)viommu);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, &error, &reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		die("AdoptSession %s: %s", name, error.message ? error.message : strerror(-r));
	ret = strdup(path);
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
	sd_bus_message_unref(reply);
	return ret;
}

static void call(sd_bus *bus, const char *path, const char *member, sd_bus_message **reply,
		 const char *types, ...)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	va_list ap;
	int r;

	va_start(ap, types);
	r = sd_bus_call_methodv(bus, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE, member, &error,
				reply, types, ap);
	va_end(ap);
	if (r < 0)
		die("%s: %s", member, error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
}

/* A Harvest round delivered: the log mapped (and, with consume, every round word read). */
static uint64_t harvest_round(sd_bus *bus, const char *path, bool consume, bool ack)
{
	struct iod_dirty_log *log = NULL;
	sd_bus_message *reply = NULL;
	uint64_t round, dirty, usec, count = 0, start, end;
	int fd, precise, r;

	call(bus, path, "Harvest", &reply, "a{sv}", 0);
	if (sd_bus_message_read(reply, "thtbt", &round, &fd, &dirty, &precise, &usec) < 0)
		die("Harvest reply");
	r = iod_log_open_fd_ro(fd, &log);
	if (r < 0)
		die("the log memfd: %s", iod_strerror(r));
	if (consume) {
		for (size_t i = 0; i < iod_log_region_count(log); i++) {
			const struct iod_log_region *g = iod_log_region(log, i);
			uint64_t nbits = g->length >> iod_log_page_shift(log);

			for (uint64_t b = 0;
			     iod_log_next_dirty(log, i, false, b, nbits, &start, &end) == 0;
			     b = end)
				count += end - start;
		}
		if (count != dirty)
			die("the log holds %" PRIu64 " dirty pages, Harvest said %" PRIu64, count,
			    dirty);
	}
	iod_log_free(log);
	sd_bus_message_unref(reply);
	if (ack)
		call(bus, path, "Acknowledge", NULL, "t", round);
	return dirty;
}

/* --- 1. harvest round vs raw ioctl loop ------------------------------------------------------- */

static void bench_harvest(sd_bus *bus, struct mock *k, uint64_t length, bool dense, int reps)
{
	uint64_t iova = IOD_MOCK_APERTURE_START, nmock = length / mock_page, nbits = length / PAGE;
	uint64_t t_daemon = 0, t_round = 0, t_raw = 0, want = 0;
	uint64_t *marks = calloc(iod_bitmap_words(nmock), 8);
	uint64_t *bitmap = malloc(iod_bitmap_bytes(nbits));
	char name[64], *path;

	if (!marks || !bitmap)
		die("out of memory");
	for (uint64_t i = 0; i < nmock; i++)
		if (dense || rng() % 512 == 0)
			marks[i / 64] |= UINT64_C(1) << (i % 64);
	mock_map_range(k, iova, length);
	snprintf(name, sizeof(name), "bench-%" PRIu64 "-%s", length >> 20,
		 dense ? "dense" : "sparse");
	path = adopt(bus, k, name, false, true);
	call(bus, path, "AddRegion", NULL, "tt", iova, length);
	call(bus, path, "Start", NULL, NULL);

	for (int rep = 0; rep < reps; rep++) {
		uint64_t t0, t1, got = 0;

		/* the daemon: Harvest (read-and-clear, merge, deliver), the log mapped */
		mock_mark(k, iova, length, marks);
		t0 = iod_now_nsec();
		got = harvest_round(bus, path, false, false);
		t1 = iod_now_nsec();
		call(bus, path, "Acknowledge", NULL, "t", (uint64_t)rep + 1);
		t_round += iod_now_nsec() - t0;
		t_daemon += t1 - t0;
		if (rep == 0)
			want = got;
		else if (got != want)
			die("round %d: %" PRIu64 " dirty pages, round 1 had %" PRIu64, rep + 1, got,
			    want);

		/* raw: the same HWPTs and range, one bitmap zeroed per HWPT */
		mock_mark(k, iova, length, marks);
		t0 = iod_now_nsec();
		for (int i = 0; i < N_HWPTS; i++) {
			memset(bitmap, 0, iod_bitmap_bytes(nbits));
			if (iod_hwpt_read_dirty(k->ictx, k->hwpt[i], iova, length, PAGE, bitmap,
						0) < 0)
				die("raw read: %m");
		}
		t_raw += iod_now_nsec() - t0;
	}
	printf("bench: harvest %5" PRIu64 " MiB %-6s %d HWPTs, %7" PRIu64
	       " dirty pages: daemon Harvest %8.2f ms (with Acknowledge %8.2f ms), raw "
	       "GET_DIRTY_BITMAP loop %8.2f ms: ratio %.3f (with Acknowledge %.3f; target <= 1.15: %s)\n",
	       length >> 20, dense ? "dense," : "sparse,", N_HWPTS, want, t_daemon / 1e6 / reps,
	       t_round / 1e6 / reps, t_raw / 1e6 / reps, (double)t_daemon / (double)t_raw,
	       (double)t_round / (double)t_raw,
	       (double)t_daemon / (double)t_raw <= 1.15 ? "met" : "MISSED");

	call(bus, path, "Destroy", NULL, NULL);
	mock_unmap_range(k, iova, length);
	free(path);
	free(marks);
	free(bitmap);
}

/* --- 2. a 64 MiB bitmap: fd vs inline ---------------------------------------------------------- */

static void bench_delivery(sd_bus *bus, struct mock *k, int reps)
{
	const uint64_t bitmap_bytes = 64 * SZ_1M, guest = bitmap_bytes * 8 * PAGE; /* 2 TiB */
	uint64_t t_fd = 0, t_inline = 0;
	char *path;

	path = adopt(bus, k, "bench-delivery", true, true); /* no mapping: the log alone */
	call(bus, path, "AddRegion", NULL, "tt", (uint64_t)0, guest);
	call(bus, path, "Start", NULL, NULL);
	start_echo(bus, bitmap_bytes);

	for (int rep = 0; rep < reps; rep++) {
		sd_bus_message *reply = NULL;
		const void *data;
		size_t size;
		uint64_t t0, count = 0;

		t0 = iod_now_nsec();
		(void)harvest_round(bus, path, true, true);
		t_fd += iod_now_nsec() - t0;

		t0 = iod_now_nsec();
		if (sd_bus_call_method(bus, "org.iodirty.BenchEcho", "/bench",
				       "org.iodirty.BenchEcho", "Bitmap", NULL, &reply, "t",
				       bitmap_bytes) < 0 ||
		    sd_bus_message_read_array(reply, 'y', &data, &size) < 0 || size != bitmap_bytes)
			die("the inline transfer of %" PRIu64 " bytes failed", bitmap_bytes);
		for (size_t i = 0; i < size / 8; i++)
			count += (uint64_t)__builtin_popcountll(((const uint64_t *)data)[i]);
		sd_bus_message_unref(reply);
		t_inline += iod_now_nsec() - t0;
		if (count == 0)
			die("the echo sent zeros");
	}
	printf("bench: a 64 MiB bitmap (2 TiB at 4 KiB) to the client and read: log memfd (Harvest "
	       "+ Acknowledge) %8.2f ms, inline D-Bus byte array %8.2f ms: inline / fd = %.2f\n",
	       t_fd / 1e6 / reps, t_inline / 1e6 / reps, (double)t_inline / (double)t_fd);
	call(bus, path, "Destroy", NULL, NULL);
	free(path);
}

/* --- 3. vIOMMU churn ---------------------------------------------------------------------------- */

#define CHURN_BATCH 64

/* One batch call (MapBatch or UnmapBatch) of n entries. */
static void call_batch(sd_bus *bus, const char *path, bool map, const struct iod_mapping *v,
		       size_t n)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	int r;

	r = iod_bus_new_batch(bus, path, map, v, n, &m);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, &error, NULL);
	if (r < 0)
		die("%s of %zu entries: %s", map ? "MapBatch" : "UnmapBatch", n,
		    error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
}

/* MapBatch (map, every entry at gpa) or UnmapBatch of n slots of len bytes from iova. */
static void call_churn_batch(sd_bus *bus, const char *path, bool map, uint64_t iova, uint64_t gpa,
			     uint64_t len, int n)
{
	struct iod_mapping v[CHURN_BATCH];

	if (n > CHURN_BATCH)
		die("a churn batch of %d entries", n);
	for (int i = 0; i < n; i++)
		v[i] = (struct iod_mapping){
			.iova = iova + (uint64_t)i * len, .gpa = gpa, .length = len};
	call_batch(bus, path, map, v, (size_t)n);
}

static void bench_churn(sd_bus *bus, struct mock *k, int pairs)
{
	const int batches = (4 * pairs + CHURN_BATCH - 1) / CHURN_BATCH;
	uint64_t t_batch;
	const uint64_t len = 64 * 1024, iova = IOD_MOCK_APERTURE_START, gpa = UINT64_C(1) << 32;
	uint64_t t0, t_daemon, t_raw;
	char *path;

	path = adopt(bus, k, "bench-churn", true, true);
	call(bus, path, "AddRegion", NULL, "tt", gpa, k->mem_size);
	call(bus, path, "Start", NULL, NULL);

	t0 = iod_now_nsec();
	for (int i = 0; i < pairs; i++) {
		uint64_t at = iova + (uint64_t)(i % 64) * len;

		if (iod_ioas_map(k->ictx, k->ioas, k->mem, len, at, IOD_MAP_READ | IOD_MAP_WRITE) <
		    0)
			die("map: %m");
		call(bus, path, "Map", NULL, "ttt", at, gpa, len);
		call(bus, path, "Unmap", NULL, "tt", at, len);
		mock_unmap_range(k, at, len);
	}
	t_daemon = iod_now_nsec() - t0;

	t0 = iod_now_nsec();
	for (int i = 0; i < pairs; i++) {
		uint64_t at = iova + (uint64_t)(i % 64) * len;

		if (iod_ioas_map(k->ictx, k->ioas, k->mem, len, at, IOD_MAP_READ | IOD_MAP_WRITE) <
		    0)
			die("map: %m");
		mock_unmap_range(k, at, len);
	}
	t_raw = iod_now_nsec() - t0;
	printf("bench: vIOMMU churn, 64 KiB map + unmap pairs: %.0f/s with iodirtyd (Map, Unmap "
	       "with harvest before unmap, %d HWPTs tracking), %.0f/s raw ioctls: raw / daemon = %.1f\n",
	       pairs / (t_daemon / 1e9), N_HWPTS, pairs / (t_raw / 1e9),
	       (double)t_daemon / (double)t_raw);

	/* The same pairs in batches: the raw maps, one MapBatch, one UnmapBatch, the raw unmaps. */
	t0 = iod_now_nsec();
	for (int b = 0; b < batches; b++) {
		for (int i = 0; i < CHURN_BATCH; i++)
			if (iod_ioas_map(k->ictx, k->ioas, k->mem, len, iova + (uint64_t)i * len,
					 IOD_MAP_READ | IOD_MAP_WRITE) < 0)
				die("map: %m");
		call_churn_batch(bus, path, true, iova, gpa, len, CHURN_BATCH);
		call_churn_batch(bus, path, false, iova, gpa, len, CHURN_BATCH);
		for (int i = 0; i < CHURN_BATCH; i++)
			mock_unmap_range(k, iova + (uint64_t)i * len, len);
	}
	t_batch = iod_now_nsec() - t0;
	printf("bench: vIOMMU churn, 64 KiB map + unmap pairs in batches of %d: %.0f/s with "
	       "iodirtyd (MapBatch, UnmapBatch), %.0f/s raw ioctls: raw / daemon = %.1f\n",
	       CHURN_BATCH, batches * CHURN_BATCH / (t_batch / 1e9), pairs / (t_raw / 1e9),
	       ((double)t_batch / (batches * CHURN_BATCH)) / ((double)t_raw / pairs));
	call(bus, path, "Destroy", NULL, NULL);
	free(path);
}

/* --- 4. single vIOMMU events at scale ----------------------------------------------------- */

/*
 * A pair is what a VMM does for one vIOMMU map and its unmap. Through iodirtyd: IOAS map of
 * 64 KiB, Map, Unmap (the daemon reads the range per HWPT before it forgets it), IOAS unmap.
 * In-process, the same event without the daemon: IOAS map, a read without clearing of the
 * range per HWPT, IOAS unmap. Bare: IOAS map and unmap alone.
 * Every figure is the median of EV_REPS runs; a run stops at max_pairs or after cap_ns,
 * whichever comes first, and never has fewer than one pair, so that a case at one pair per
 * second still finishes. A figure that has taken EV_FIGURE_CAP_NS by its EV_MIN_REPS-th run
 * stops there (the output says how many runs and pairs each figure rests on).
 */
#define EV_LEN (64 * 1024)
#define EV_GPA (UINT64_C(1) << 32) /* the sessions' region: [4 GiB, + the mock's memory) */
#define EV_LIVE_BASE (UINT64_C(1) << 30) /* live mappings: 4 KiB each from 1 GiB */
#define EV_FEW 10
#define EV_MANY 10000
#define EV_SESSIONS 50
#define EV_OTHER_MAPPINGS 200 /* held by each of the other EV_SESSIONS - 1 sessions */
#define EV_REPS 5
#define EV_MIN_REPS 3
#define EV_MSEC UINT64_C(1000000)
#define EV_FIGURE_CAP_NS (20000 * EV_MSEC)

enum ev_loop { EV_DAEMON, EV_CHANNEL, EV_CHANNEL_SYNC, EV_INPROC, EV_BARE, _EV_LOOP_MAX };

/* the length of a run: at most max_pairs, and no more pairs once cap_ns has passed */
static const struct {
	uint64_t max_pairs, cap_ns;
} ev_loops[_EV_LOOP_MAX] = {
	[EV_DAEMON] = {200, 1000 * EV_MSEC},	   [EV_CHANNEL] = {1000, 200 * EV_MSEC},
	[EV_CHANNEL_SYNC] = {1000, 200 * EV_MSEC}, [EV_INPROC] = {1000, 200 * EV_MSEC},
	[EV_BARE] = {1000, 200 * EV_MSEC},
};

struct ev_figure {
	double rate; /* pairs per second of the median run */
	uint64_t pairs; /* in all runs */
	int reps;
};

/* [fd store][10,000 live mappings][50 sessions][loop] */
static struct ev_figure ev_fig[2][2][2][_EV_LOOP_MAX];
static uint64_t ev_nsec[2];
/* The measured session's event channel, and the sequence number of its last batch. */
static int ev_chan = -1;
static uint64_t ev_seq;

/* Send one batch on the event channel. */
static void ev_channel_send(enum iod_event_type type, const struct iod_mapping *v, size_t n)
{
	int r = iod_channel_send(ev_chan, type, ++ev_seq, v, n);

	if (r < 0)
		die("event channel: %s", strerror(-r));
}

/* Read the completion of batch seq; it must be a success. */
static void ev_channel_wait(uint64_t seq)
{
	struct iod_channel_completion c;
	int r = iod_channel_recv(ev_chan, &c);

	if (r < 0)
		die("event channel: %s", strerror(-r));
	if (c.seq != seq || c.error != 0)
		die("event channel: batch %" PRIu64 ": completion for %" PRIu64 ": %s %s", seq,
		    c.seq, c.name, c.message);
}

/*
 * A map and an unmap on the event channel. With wait_map, the map's completion is awaited
 * before the unmap is sent. Without, the VMM goes on at once, as it may: batches apply in
 * order, so the unmap's completion (awaited before IOMMU_IOAS_UNMAP) covers the map too.
 */
static void ev_channel_pair(const struct iod_mapping *v, size_t n, bool wait_map)
{
	ev_channel_send(IOD_EVENT_MAP, v, n);
	if (wait_map)
		ev_channel_wait(ev_seq);
	ev_channel_send(IOD_EVENT_UNMAP, v, n);
	if (!wait_map)
		ev_channel_wait(ev_seq - 1);
	ev_channel_wait(ev_seq);
}

static void ev_pair(sd_bus *bus, struct mock *k, const char *path, enum ev_loop what, uint64_t i)
{
	const uint64_t at = IOD_MOCK_APERTURE_START + (i % 64) * EV_LEN;
	uint64_t bitmap[EV_LEN / PAGE / 64 + 1] = {};
	int r;

	r = iod_ioas_map(k->ictx, k->ioas, k->mem, EV_LEN, at, IOD_MAP_READ | IOD_MAP_WRITE);
	if (r < 0)
		die("map IOVA 0x%" PRIx64 ": %s", at, strerror(-r));
	if (what == EV_DAEMON) {
		call(bus, path, "Map", NULL, "ttt", at, EV_GPA, (uint64_t)EV_LEN);
		call(bus, path, "Unmap", NULL, "tt", at, (uint64_t)EV_LEN);
	} else if (what == EV_CHANNEL || what == EV_CHANNEL_SYNC) {
		const struct iod_mapping e = {.iova = at, .gpa = EV_GPA, .length = EV_LEN};

		ev_channel_pair(&e, 1, what == EV_CHANNEL_SYNC);
	} else if (what == EV_INPROC) {
		for (int h = 0; h < N_HWPTS; h++) {
			r = iod_hwpt_read_dirty(k->ictx, k->hwpt[h], at, EV_LEN, PAGE, bitmap,
						IOD_READ_NO_CLEAR);
			if (r < 0)
				die("read dirty of HWPT %u: %s", k->hwpt[h], strerror(-r));
		}
	}
	mock_unmap_range(k, at, EV_LEN);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static struct ev_figure ev_measure(sd_bus *bus, struct mock *k, const char *path, enum ev_loop what)
{
	const uint64_t t_figure = iod_now_nsec();
	double rates[EV_REPS];
	struct ev_figure f = {};

	/* an odd number of runs: EV_MIN_REPS when the figure is slow, else EV_REPS */
	while (f.reps < EV_REPS && (f.reps < EV_MIN_REPS || f.reps % 2 == 0 ||
				    iod_now_nsec() - t_figure < EV_FIGURE_CAP_NS)) {
		const uint64_t t0 = iod_now_nsec();
		uint64_t n = 0, t;

		do {
			ev_pair(bus, k, path, what, n++);
			t = iod_now_nsec() - t0;
		} while (n < ev_loops[what].max_pairs && t < ev_loops[what].cap_ns);
		rates[f.reps++] = (double)n / ((double)t / 1e9);
		f.pairs += n;
	}
	qsort(rates, (size_t)f.reps, sizeof(rates[0]), cmp_double);
	f.rate = rates[f.reps / 2];
	return f;
}

/* Live mapping i: 4 KiB at EV_LIVE_BASE + i pages, onto page i of the region (wrapping). */
static struct iod_mapping ev_live(const struct mock *k, int i)
{
	return (struct iod_mapping){
		.iova = EV_LIVE_BASE + (uint64_t)i * PAGE,
		.gpa = EV_GPA + (uint64_t)i % (k->mem_size / PAGE) * PAGE,
		.length = PAGE,
	};
}

/* Live mappings [from, to) in the IOAS, one area each, as a vIOMMU leaves them. */
static void ev_ioas_live(struct mock *k, int from, int to)
{
	for (int i = from; i < to; i++) {
		struct iod_mapping e = ev_live(k, i);
		int r = iod_ioas_map(k->ictx, k->ioas, k->mem + (e.gpa - EV_GPA), e.length, e.iova,
				     IOD_MAP_READ | IOD_MAP_WRITE);

		if (r < 0)
			die("map IOVA 0x%" PRIx64 ": %s", e.iova, strerror(-r));
	}
}

/* Live mappings [from, to) told to the session, in one MapBatch. */
static void ev_record(sd_bus *bus, const struct mock *k, const char *path, int from, int to)
{
	struct iod_mapping *v = calloc((size_t)(to - from), sizeof(*v));

	if (!v)
		die("out of memory");
	for (int i = from; i < to; i++)
		v[i - from] = ev_live(k, i);
	call_batch(bus, path, true, v, (size_t)(to - from));
	free(v);
}

/* Persistence is active: the daemon put its state into the harness's store. */
static void ev_check_store(void)
{
	const char *reply = NULL;
	uint64_t stored = 0;

	for (int i = 0; i < 40 && stored == 0; i++) {
		if (i)
			usleep(50000);
		reply = harness("status");
		stored = harness_field(reply, "stored");
	}
	if (stored == 0)
		die("the daemon stored nothing in the fd store of fdstore-harness: persistence is "
		    "not active (%s)",
		    reply);
	printf("bench: events: iodirtyd under fdstore-harness, %" PRIu64 " fds in its store\n",
	       stored);
}

/* The measured session: the mock's HWPTs, tracking, live mappings [0, live). */
static char *ev_session(sd_bus *bus, struct mock *k, int live, bool store)
{
	char *path = adopt(bus, k, "events", true, true);

	call(bus, path, "AddRegion", NULL, "tt", EV_GPA, k->mem_size);
	call(bus, path, "Start", NULL, NULL);
	ev_record(bus, k, path, 0, live);
	if (store)
		ev_check_store();
	if (ev_chan >= 0)
		close(ev_chan);
	if (iod_channel_open(bus, path, &ev_chan, &ev_seq) < 0)
		die("OpenEventChannel failed");
	return path;
}

/* One of the other sessions: a vIOMMU without HWPTs holding EV_OTHER_MAPPINGS mappings. */
static void ev_other_session(sd_bus *bus, struct mock *k, int i)
{
	char name[32], *path;

	snprintf(name, sizeof(name), "other-%d", i);
	path = adopt(bus, k, name, true, false);
	call(bus, path, "AddRegion", NULL, "tt", EV_GPA, k->mem_size);
	ev_record(bus, k, path, 0, EV_OTHER_MAPPINGS);
	free(path);
}

static const char *ev_goal(double ratio, double goal)
{
	return ratio <= goal ? "met" : "missed";
}

static void ev_case(sd_bus *bus, struct mock *k, const char *path, bool store, bool many,
		    bool crowd)
{
	struct ev_figure *f = ev_fig[store][many][crowd];

	for (int w = _EV_LOOP_MAX - 1; w >= 0; w--)
		f[w] = ev_measure(bus, k, path, (enum ev_loop)w);
	printf("bench: events: %-11s %5d live mappings, %2d session(s): iodirtyd D-Bus %7.1f "
	       "pairs/s (%d runs, %" PRIu64 " pairs), event channel %7.0f/s (%d, %" PRIu64
	       "), the same awaiting each completion %7.0f/s, in-process %6.0f/s (%d, %" PRIu64
	       "), bare ioctls %6.0f/s (%d, %" PRIu64 "): D-Bus / in-process = %.1f, channel / "
	       "in-process = %.2f (goal <= 1.5: %s), awaiting each %.2f\n",
	       store ? "fd store," : "no store,", many ? EV_MANY : EV_FEW, crowd ? EV_SESSIONS : 1,
	       f[EV_DAEMON].rate, f[EV_DAEMON].reps, f[EV_DAEMON].pairs, f[EV_CHANNEL].rate,
	       f[EV_CHANNEL].reps, f[EV_CHANNEL].pairs, f[EV_CHANNEL_SYNC].rate, f[EV_INPROC].rate,
	       f[EV_INPROC].reps, f[EV_INPROC].pairs, f[EV_BARE].rate, f[EV_BARE].reps,
	       f[EV_BARE].pairs, f[EV_INPROC].rate / f[EV_DAEMON].rate,
	       f[EV_INPROC].rate / f[EV_CHANNEL].rate,
	       ev_goal(f[EV_INPROC].rate / f[EV_CHANNEL].rate, 1.5),
	       f[EV_INPROC].rate / f[EV_CHANNEL_SYNC].rate);
}

/*
 * The same pairs in batches of EV_BATCH, as a VMM that queues its vIOMMU events sends them:
 * the IOAS maps, then in-process a NO_CLEAR read of each range per HWPT, through the channel
 * one MAP and one UNMAP batch, through D-Bus one MapBatch and one UnmapBatch; then the IOAS
 * unmaps. Median of EV_REPS runs of EV_BATCH_ROUNDS batches.
 */
#define EV_BATCH 64
#define EV_BATCH_ROUNDS 20

enum ev_batch_kind { EVB_INPROC, EVB_CHANNEL, EVB_DBUS, _EVB_MAX };

static void ev_batch_round(sd_bus *bus, struct mock *k, const char *path, enum ev_batch_kind w)
{
	uint64_t bitmap[EV_LEN / PAGE / 64 + 1] = {};
	struct iod_mapping v[EV_BATCH];
	int r;

	for (int i = 0; i < EV_BATCH; i++) {
		v[i] = (struct iod_mapping){.iova = IOD_MOCK_APERTURE_START + (uint64_t)i * EV_LEN,
					    .gpa = EV_GPA,
					    .length = EV_LEN};
		r = iod_ioas_map(k->ictx, k->ioas, k->mem, EV_LEN, v[i].iova,
				 IOD_MAP_READ | IOD_MAP_WRITE);
		if (r < 0)
			die("map IOVA 0x%" PRIx64 ": %s", v[i].iova, strerror(-r));
	}
	if (w == EVB_CHANNEL) {
		ev_channel_pair(v, EV_BATCH, false);
	} else if (w == EVB_DBUS) {
		call_batch(bus, path, true, v, EV_BATCH);
		call_batch(bus, path, false, v, EV_BATCH);
	} else {
		for (int h = 0; h < N_HWPTS; h++)
			for (int i = 0; i < EV_BATCH; i++) {
				r = iod_hwpt_read_dirty(k->ictx, k->hwpt[h], v[i].iova, EV_LEN,
							PAGE, bitmap, IOD_READ_NO_CLEAR);
				if (r < 0)
					die("read dirty of HWPT %u: %s", k->hwpt[h], strerror(-r));
			}
	}
	for (int i = 0; i < EV_BATCH; i++)
		mock_unmap_range(k, v[i].iova, EV_LEN);
}

static void ev_batches(sd_bus *bus, struct mock *k, const char *path, bool store, int live)
{
	double rates[_EVB_MAX][EV_REPS], med[_EVB_MAX];

	for (int rep = 0; rep < EV_REPS; rep++)
		for (int w = 0; w < _EVB_MAX; w++) {
			const uint64_t t0 = iod_now_nsec();

			for (int b = 0; b < EV_BATCH_ROUNDS; b++)
				ev_batch_round(bus, k, path, (enum ev_batch_kind)w);
			rates[w][rep] = EV_BATCH_ROUNDS * EV_BATCH /
					((double)(iod_now_nsec() - t0) / 1e9);
		}
	for (int w = 0; w < _EVB_MAX; w++) {
		qsort(rates[w], EV_REPS, sizeof(rates[w][0]), cmp_double);
		med[w] = rates[w][EV_REPS / 2];
	}
	printf("bench: events: %-11s %5d live mappings, batches of %d: event channel %7.0f "
	       "pairs/s, D-Bus (MapBatch, UnmapBatch) %7.0f/s, in-process %7.0f/s: channel / "
	       "in-process = %.2f (goal <= 1.1: %s), D-Bus / in-process = %.2f\n",
	       store ? "fd store," : "no store,", live, EV_BATCH, med[EVB_CHANNEL], med[EVB_DBUS],
	       med[EVB_INPROC], med[EVB_INPROC] / med[EVB_CHANNEL],
	       ev_goal(med[EVB_INPROC] / med[EVB_CHANNEL], 1.1), med[EVB_INPROC] / med[EVB_DBUS]);
}

static void bench_events(sd_bus *bus, struct mock *k, bool store)
{
	const uint64_t t0 = iod_now_nsec();
	uint64_t t;
	char *path;

	start_daemon(bus, store);
	ev_ioas_live(k, 0, EV_FEW);
	path = ev_session(bus, k, EV_FEW, store);
	ev_case(bus, k, path, store, false, false);
	ev_batches(bus, k, path, store, EV_FEW);
	/* the other sessions while the state is small (each call persists all of it today) */
	t = iod_now_nsec();
	for (int i = 1; i < EV_SESSIONS; i++)
		ev_other_session(bus, k, i);
	printf("bench: events: %s the other %d sessions set up (AdoptSession, AddRegion, "
	       "MapBatch of %d each) in %.1f s\n",
	       store ? "fd store," : "no store,", EV_SESSIONS - 1, EV_OTHER_MAPPINGS,
	       (double)(iod_now_nsec() - t) / 1e9);
	ev_case(bus, k, path, store, false, true);
	ev_ioas_live(k, EV_FEW, EV_MANY);
	t = iod_now_nsec();
	ev_record(bus, k, path, EV_FEW, EV_MANY);
	printf("bench: events: %s one MapBatch of %d mappings in %.2f s\n",
	       store ? "fd store," : "no store,", EV_MANY - EV_FEW,
	       (double)(iod_now_nsec() - t) / 1e9);
	ev_case(bus, k, path, store, true, true);
	call(bus, path, "Destroy", NULL, NULL);
	free(path);

	/* one session with 10,000: a fresh daemon, cheaper than 49 Destroy calls today */
	stop_daemon(bus);
	start_daemon(bus, store);
	path = ev_session(bus, k, EV_MANY, store);
	ev_case(bus, k, path, store, true, false);
	ev_batches(bus, k, path, store, EV_MANY);
	call(bus, path, "Destroy", NULL, NULL);
	free(path);
	stop_daemon(bus);
	mock_unmap_range(k, EV_LIVE_BASE, (uint64_t)EV_MANY * PAGE);
	ev_nsec[store] = iod_now_nsec() - t0;
}

static void ev_summary(void)
{
	printf("bench: events: pairs/s, median of runs of up to %" PRIu64 " pairs or %" PRIu64
	       " ms (iodirtyd; %" PRIu64 " or %" PRIu64 " ms in-process and bare); %d HWPTs; "
	       "the other %d sessions hold %d mappings each\n",
	       ev_loops[EV_DAEMON].max_pairs, ev_loops[EV_DAEMON].cap_ns / EV_MSEC,
	       ev_loops[EV_INPROC].max_pairs, ev_loops[EV_INPROC].cap_ns / EV_MSEC, N_HWPTS,
	       EV_SESSIONS - 1, EV_OTHER_MAPPINGS);
	printf("bench:   %-8s %8s %8s | %9s %6s %6s | %9s %6s | %10s %6s | %10s %6s | %12s | "
	       "%14s\n",
	       "fd store", "mappings", "sessions", "D-Bus", "runs", "pairs", "channel", "pairs",
	       "in-process", "pairs", "bare", "pairs", "D-Bus / raw", "channel / raw");
	for (int store = 0; store < 2; store++)
		for (int many = 0; many < 2; many++)
			for (int crowd = 0; crowd < 2; crowd++) {
				const struct ev_figure *f = ev_fig[store][many][crowd];

				printf("bench:   %-8s %8d %8d | %9.1f %6d %6" PRIu64
				       " | %9.0f %6" PRIu64 " | %10.0f %6" PRIu64
				       " | %10.0f %6" PRIu64 " | %12.1f | %14.2f\n",
				       store ? "yes" : "no", many ? EV_MANY : EV_FEW,
				       crowd ? EV_SESSIONS : 1, f[EV_DAEMON].rate,
				       f[EV_DAEMON].reps, f[EV_DAEMON].pairs, f[EV_CHANNEL].rate,
				       f[EV_CHANNEL].pairs, f[EV_INPROC].rate, f[EV_INPROC].pairs,
				       f[EV_BARE].rate, f[EV_BARE].pairs,
				       f[EV_INPROC].rate / f[EV_DAEMON].rate,
				       f[EV_INPROC].rate / f[EV_CHANNEL].rate);
			}
	printf("bench: events: D-Bus / raw and channel / raw: the time of a pair through iodirtyd "
	       "(Map and Unmap calls; a batch of one each on the event channel, the unmap's "
	       "completion awaited before IOMMU_IOAS_UNMAP) over the time of the same pair "
	       "in-process (IOAS map, NO_CLEAR read per HWPT, IOAS unmap)\n");
	for (int store = 0; store < 2; store++)
		for (int crowd = 0; crowd < 2; crowd++) {
			double r = ev_fig[store][0][crowd][EV_DAEMON].rate /
				   ev_fig[store][1][crowd][EV_DAEMON].rate;

			double rc = ev_fig[store][0][crowd][EV_CHANNEL].rate /
				    ev_fig[store][1][crowd][EV_CHANNEL].rate;

			printf("bench: events: scaling, %-9s %2d session(s): rate with %d / with %d "
			       "live mappings = %.2f on D-Bus (goal <= 1.2: %s), %.2f on the event "
			       "channel (goal <= 1.2: %s)\n",
			       store ? "fd store," : "no store,", crowd ? EV_SESSIONS : 1, EV_FEW,
			       EV_MANY, r, ev_goal(r, 1.2), rc, ev_goal(rc, 1.2));
		}
	for (int store = 0; store < 2; store++)
		for (int many = 0; many < 2; many++) {
			double r = ev_fig[store][many][0][EV_DAEMON].rate /
				   ev_fig[store][many][1][EV_DAEMON].rate;

			printf("bench: events: sessions, %-9s %5d live mappings: rate with 1 / with "
			       "%d sessions = %.2f\n",
			       store ? "fd store," : "no store,", many ? EV_MANY : EV_FEW,
			       EV_SESSIONS, r);
		}
	for (int many = 0; many < 2; many++)
		for (int crowd = 0; crowd < 2; crowd++) {
			double r = ev_fig[0][many][crowd][EV_DAEMON].rate /
				   ev_fig[1][many][crowd][EV_DAEMON].rate;

			printf("bench: events: persistence cost, %5d live mappings, %2d session(s): "
			       "rate without / with the fd store = %.2f (goal <= 1.1: %s)\n",
			       many ? EV_MANY : EV_FEW, crowd ? EV_SESSIONS : 1, r,
			       ev_goal(r, 1.1));
		}
	printf("bench: events: took %.0f s (no store %.0f s, fd store %.0f s)\n",
	       (double)(ev_nsec[0] + ev_nsec[1]) / 1e9, (double)ev_nsec[0] / 1e9,
	       (double)ev_nsec[1] / 1e9);
}

/* --- 5. nested mode: a harvest round of the nest parent vs the raw loop on it ----------------- */

/*
 * A nest parent (NEST_PARENT | DIRTY_TRACKING) on the mock's IOAS, a fresh mock device on a
 * nested child of it (the mock's stage 1, IOMMU_HWPT_DATA_SELFTEST), adopted with
 * nested=true: the daemon's Harvest (the parent read by GPA straight into the log, delivered)
 * against IOMMU_HWPT_GET_DIRTY_BITMAP on the parent over the same range. The mock marks the
 * parent at GPA (its DIRTY command refuses a nested HWPT).
 */
static void bench_nested(sd_bus *bus, struct mock *k, uint64_t length, bool dense, int reps)
{
	struct iod_mock_cmd dom = {
		.size = sizeof(dom), .op = IOD_MOCK_OP_DOMAIN_FLAGS, .id = k->ioas};
	struct iod_mock_cmd rep = {.size = sizeof(rep), .op = IOD_MOCK_OP_DOMAIN_REPLACE};
	struct {
		uint32_t iotlb;
	} stage1 = {.iotlb = 0xbadbeef};
	uint64_t iova = IOD_MOCK_APERTURE_START, nmock = length / mock_page, nbits = length / PAGE;
	uint64_t t_daemon = 0, t_raw = 0, want = 0;
	uint64_t *marks = calloc(iod_bitmap_words(nmock), 8);
	uint64_t *bitmap = malloc(iod_bitmap_bytes(nbits));
	uint32_t parent, child, ids[2];
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL, *reply = NULL;
	const char *opath;
	char *path;
	int r;

	if (!marks || !bitmap)
		die("out of memory");
	for (uint64_t i = 0; i < nmock; i++)
		if (dense || rng() % 512 == 0)
			marks[i / 64] |= UINT64_C(1) << (i % 64);
	if (ioctl(k->fd, IOD_MOCK_CMD, &dom) < 0)
		die("nested mock device: %m");
	r = iod_hwpt_alloc(k->ictx, dom.domain.out_idev_id, k->ioas,
			   IOD_HWPT_NEST_PARENT | IOD_HWPT_DIRTY, &parent);
	if (r < 0)
		die("dirty nest parent: %s", strerror(-r));
	r = iod_hwpt_alloc_nested(k->ictx, dom.domain.out_idev_id, parent, 0xdead, &stage1,
				  sizeof(stage1), &child);
	if (r < 0)
		die("nested child: %s", strerror(-r));
	rep.id = dom.domain.out_stdev_id;
	rep.replace.pt_id = child;
	if (ioctl(k->fd, IOD_MOCK_CMD, &rep) < 0)
		die("replace: %m");
	mock_map_range(k, iova, length);

	ids[0] = parent;
	ids[1] = child;
	r = sd_bus_message_new_method_call(bus, &m, IOD_BUS_NAME, IOD_MANAGER_PATH,
					   IOD_MANAGER_INTERFACE, "AdoptSession");
	if (r >= 0)
		r = sd_bus_message_append(m, "shu", dense ? "nested-dense" : "nested-sparse", k->fd,
					  k->ioas);
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'u', ids, sizeof(ids));
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 1, "nested", "b", 1);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, &error, &reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &opath);
	if (r < 0)
		die("AdoptSession nested: %s", error.message ? error.message : strerror(-r));
	path = strdup(opath);
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
	sd_bus_message_unref(reply);
	call(bus, path, "AddRegion", NULL, "tt", iova, length);
	call(bus, path, "Start", NULL, NULL);

	for (int i = 0; i < reps; i++) {
		struct iod_mock_cmd mark = {
			.size = sizeof(mark),
			.op = IOD_MOCK_OP_DIRTY,
			.id = parent,
			.dirty = {.iova = iova,
				  .length = length,
				  .page_size = mock_page,
				  .uptr = (uintptr_t)marks},
		};
		uint64_t t0, got;

		if (ioctl(k->fd, IOD_MOCK_CMD, &mark) < 0)
			die("mock DIRTY on the nest parent: %m");
		t0 = iod_now_nsec();
		got = harvest_round(bus, path, false, false);
		t_daemon += iod_now_nsec() - t0;
		call(bus, path, "Acknowledge", NULL, "t", (uint64_t)i + 1);
		if (i == 0)
			want = got;
		else if (got != want)
			die("nested round %d: %" PRIu64 " dirty pages, round 1 had %" PRIu64, i + 1,
			    got, want);

		if (ioctl(k->fd, IOD_MOCK_CMD, &mark) < 0)
			die("mock DIRTY on the nest parent: %m");
		t0 = iod_now_nsec();
		memset(bitmap, 0, iod_bitmap_bytes(nbits));
		if (iod_hwpt_read_dirty(k->ictx, parent, iova, length, PAGE, bitmap, 0) < 0)
			die("raw read of the nest parent: %m");
		t_raw += iod_now_nsec() - t0;
	}
	printf("bench: nested harvest %5" PRIu64 " MiB %-6s nest parent, %7" PRIu64
	       " dirty pages: daemon Harvest %8.2f ms, raw GET_DIRTY_BITMAP on the parent %8.2f "
	       "ms: ratio %.3f\n",
	       length >> 20, dense ? "dense," : "sparse,", want, t_daemon / 1e6 / reps,
	       t_raw / 1e6 / reps, (double)t_daemon / (double)t_raw);

	call(bus, path, "Destroy", NULL, NULL);
	mock_unmap_range(k, iova, length);
	(void)iod_iommufd_destroy(k->ictx, dom.domain.out_stdev_id);
	(void)iod_iommufd_destroy(k->ictx, child);
	(void)iod_iommufd_destroy(k->ictx, parent);
	free(path);
	free(marks);
	free(bitmap);
}

/* --- 6. one VM never stalls another ------------------------------------------------------------ */

#define NS_EVENTS 300

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* n unmap latencies of session path (ns, sorted): Map first (not timed), then the Unmap on
 * D-Bus or, with channel, an unmap batch on the event channel (ev_chan), awaited. */
static void ns_latencies(sd_bus *bus, struct mock *k, const char *path, bool channel, uint64_t *lat,
			 int n)
{
	for (int i = 0; i < n; i++) {
		const uint64_t at = IOD_MOCK_APERTURE_START + (uint64_t)(i % 64) * EV_LEN;
		struct iod_mapping e = {.iova = at, .gpa = EV_GPA, .length = EV_LEN};
		uint64_t t0;
		int r;

		r = iod_ioas_map(k->ictx, k->ioas, k->mem, EV_LEN, at,
				 IOD_MAP_READ | IOD_MAP_WRITE);
		if (r < 0)
			die("map IOVA 0x%" PRIx64 ": %s", at, strerror(-r));
		if (channel) {
			ev_channel_send(IOD_EVENT_MAP, &e, 1);
			ev_channel_wait(ev_seq);
			e.gpa = 0;
			t0 = iod_now_nsec();
			ev_channel_send(IOD_EVENT_UNMAP, &e, 1);
			ev_channel_wait(ev_seq);
		} else {
			call(bus, path, "Map", NULL, "ttt", at, EV_GPA, (uint64_t)EV_LEN);
			t0 = iod_now_nsec();
			call(bus, path, "Unmap", NULL, "tt", at, (uint64_t)EV_LEN);
		}
		lat[i] = iod_now_nsec() - t0;
		mock_unmap_range(k, at, EV_LEN);
	}
	qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
}

/* Session B's harvester: another process on its own connection, Harvest and Acknowledge
 * round after round until killed; a byte down the pipe per round. Never returns. */
static void ns_harvester(const char *path, int out)
{
	sd_bus *b = NULL;

	if (iod_bus_client_open(bus_address, false, &b) < 0)
		_exit(1);
	for (;;) {
		sd_bus_message *reply = NULL;
		uint64_t round, dirty, usec;
		int fd, precise;

		if (sd_bus_call_method(b, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE, "Harvest",
				       NULL, &reply, "a{sv}", 0) < 0 ||
		    sd_bus_message_read(reply, "thtbt", &round, &fd, &dirty, &precise, &usec) < 0)
			_exit(2);
		sd_bus_message_unref(reply);
		if (sd_bus_call_method(b, IOD_BUS_NAME, path, IOD_SESSION_INTERFACE, "Acknowledge",
				       NULL, NULL, "t", round) < 0)
			_exit(3);
		if (write(out, "r", 1) != 1)
			_exit(4);
	}
}

static void bench_nostall(sd_bus *bus, struct mock *kb)
{
	uint64_t aperture = IOD_MOCK_APERTURE_END - IOD_MOCK_APERTURE_START;
	uint64_t lat[2][2][NS_EVENTS]; /* [B harvesting][channel] */
	char *path_a, *path_b, buf[256];
	int pipefd[2], rounds = 0;
	struct mock ka;
	pid_t pid;
	ssize_t k;

	mock_setup(&ka, 16 * SZ_1M);
	mock_map_range(kb, IOD_MOCK_APERTURE_START, aperture);
	path_b = adopt(bus, kb, "nostall-b", false, true);
	call(bus, path_b, "AddRegion", NULL, "tt", IOD_MOCK_APERTURE_START, aperture);
	call(bus, path_b, "Start", NULL, NULL);
	path_a = ev_session(bus, &ka, EV_FEW, false);

	for (int busy = 0; busy < 2; busy++) {
		pid = -1;
		if (busy) {
			if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
				die("pipe: %m");
			pid = fork();
			if (pid < 0)
				die("fork: %m");
			if (pid == 0) {
				close(pipefd[0]);
				ns_harvester(path_b, pipefd[1]);
			}
			close(pipefd[1]);
			/* B's first round is under way */
			usleep(200000);
		}
		for (int channel = 0; channel < 2; channel++)
			ns_latencies(bus, &ka, path_a, channel, lat[busy][channel], NS_EVENTS);
		if (busy) {
			while ((k = read(pipefd[0], buf, sizeof(buf))) > 0)
				rounds += (int)k;
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			close(pipefd[0]);
		}
	}
	for (int channel = 0; channel < 2; channel++) {
		const uint64_t *idle = lat[0][channel], *busy = lat[1][channel];
		double med = (double)busy[NS_EVENTS / 2] / (double)idle[NS_EVENTS / 2];
		double max = (double)busy[NS_EVENTS - 1] / (double)idle[NS_EVENTS - 1];

		printf("bench: nostall: unmap latency of session A over %-13s (%d events): B idle "
		       "median %7.3f ms max %8.3f ms; B harvesting %" PRIu64
		       " MiB (%d rounds done meanwhile) median %7.3f ms max %8.3f ms: ratio median "
		       "%.2f (goal <= 2: %s), max %.2f (goal <= 2: %s)\n",
		       channel ? "event channel" : "D-Bus", NS_EVENTS,
		       (double)idle[NS_EVENTS / 2] / 1e6, (double)idle[NS_EVENTS - 1] / 1e6,
		       aperture >> 20, rounds, (double)busy[NS_EVENTS / 2] / 1e6,
		       (double)busy[NS_EVENTS - 1] / 1e6, med, med <= 2 ? "met" : "missed", max,
		       max <= 2 ? "met" : "missed");
	}

	call(bus, path_a, "Destroy", NULL, NULL);
	call(bus, path_b, "Destroy", NULL, NULL);
	close(ev_chan);
	ev_chan = -1;
	mock_unmap_range(kb, IOD_MOCK_APERTURE_START, aperture);
	mock_teardown(&ka);
	free(path_a);
	free(path_b);
}

/* --- 7. the first round of a sparse guest: holes skipped vs the plain full copy ----------- */

#define HOLES_SIZE (512 * SZ_1M)
#define HOLES_EXTENT (64 * UINT64_C(1024))
#define HOLES_GPA UINT64_C(0x100000000)

struct holes_run {
	uint8_t *link; /* the destination: one batch at a time, at memory speed */
	uint64_t t0, nsec, bytes, skipped;
};

static int holes_started(struct iod_migrate *m, void *userdata)
{
	struct holes_run *hr = userdata;

	hr->t0 = iod_now_nsec();
	return 0;
}

static int holes_write(uint64_t gpa, const void *data, uint64_t length, void *userdata)
{
	struct holes_run *hr = userdata;

	if (length > SZ_1M)
		return -E2BIG;
	memcpy(hr->link, data, length);
	return 0;
}

static void holes_round(const struct iod_migrate_round *r, void *userdata)
{
	struct holes_run *hr = userdata;

	if (r->index != 0)
		return;
	hr->nsec = iod_now_nsec() - hr->t0;
	hr->bytes = r->bytes;
	hr->skipped = r->skipped_bytes;
}

/* A fresh memfd with the same extents populated (the seed): returns it, and what it holds. */
static int holes_memfd(uint64_t seed, uint64_t *ret_populated)
{
	int fd = memfd_create("bench-sparse", MFD_CLOEXEC);
	uint8_t *p;
	struct stat st;

	if (fd < 0 || ftruncate(fd, (off_t)HOLES_SIZE) < 0)
		die("memfd: %m");
	p = mmap(NULL, HOLES_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap: %m");
	rng_state = seed;
	for (uint64_t off = 0; off < HOLES_SIZE; off += HOLES_EXTENT)
		if (rng() % 16 == 0)
			memset(p + off, (int)(1 + rng() % 255), HOLES_EXTENT);
	munmap(p, HOLES_SIZE);
	if (fstat(fd, &st) < 0)
		die("fstat: %m");
	*ret_populated = (uint64_t)st.st_blocks * 512;
	return fd;
}

/* One first round (and the empty rounds after it); what the source holds afterwards. */
static void holes_once(sd_bus *bus, struct mock *k, bool skip, int rep, struct holes_run *hr,
		       uint64_t *ret_populated, uint64_t *ret_after)
{
	struct iod_migrate_ops ops = {
		.started = holes_started, .write = holes_write, .round = holes_round};
	struct iod_migrate_result res;
	struct iod_migrate *m = NULL;
	char name[64];
	struct stat st;
	int fd, r;

	fd = holes_memfd(0x5eed, ret_populated);
	snprintf(name, sizeof(name), "bench-holes-%s-%d", skip ? "skip" : "full", rep);
	{
		struct iod_migrate_config c = {
			.session = name,
			.mode = IOD_MIGRATE_ADOPT,
			.memfd = fd,
			.size = HOLES_SIZE,
			.gpa = HOLES_GPA,
			.viommu = true, /* nothing mapped: the rounds after the first are empty */
			.iommufd = k->fd,
			.ioas = k->ioas,
			.hwpts = k->hwpt,
			.n_hwpts = N_HWPTS,
			.converge_pages = 64,
			.max_rounds = 1,
			.on_daemon_restart = IOD_MIGRATE_ABORT,
			.skip_holes = skip,
		};

		r = iod_migrate_new(bus, &c, &ops, hr, &m);
		if (r < 0)
			die("iod_migrate_new: %s", strerror(-r));
	}
	r = iod_migrate_run(m, &res);
	if (r < 0)
		die("the migration (%s) failed: %s", name, iod_migrate_error(m));
	iod_migrate_free(m);
	if (fstat(fd, &st) < 0)
		die("fstat: %m");
	*ret_after = (uint64_t)st.st_blocks * 512;
	close(fd);
}

static int cmp_u64_holes(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void bench_holes(sd_bus *bus, struct mock *k, int reps)
{
	struct holes_run hr[2][5] = {};
	uint64_t t[2][5], populated = 0, after[2] = {}, link_bytes = SZ_1M;
	uint8_t *link = malloc(link_bytes);

	if (!link || reps > 5)
		die("bench_holes: out of memory or too many repetitions");
	memset(link, 0, link_bytes);
	for (int rep = 0; rep < reps; rep++)
		for (int skip = 1; skip >= 0; skip--) {
			hr[skip][rep].link = link;
			holes_once(bus, k, skip, rep, &hr[skip][rep], &populated, &after[skip]);
			t[skip][rep] = hr[skip][rep].nsec;
			if (skip && hr[skip][rep].bytes + hr[skip][rep].skipped != HOLES_SIZE)
				die("holes: %" PRIu64 " bytes copied and %" PRIu64
				    " skipped of %" PRIu64,
				    hr[skip][rep].bytes, hr[skip][rep].skipped,
				    (uint64_t)HOLES_SIZE);
		}
	qsort(t[0], (size_t)reps, sizeof(uint64_t), cmp_u64_holes);
	qsort(t[1], (size_t)reps, sizeof(uint64_t), cmp_u64_holes);
	printf("bench: first round of a %" PRIu64 " MiB guest, %.1f%% populated: holes skipped "
	       "%8.2f ms for %7.1f MiB (%7.1f MiB skipped), full copy %8.2f ms for %7.1f MiB: "
	       "time ratio %.3f, bytes ratio %.3f (median of %d); the source populated after "
	       "the round: %.1f MiB skipping, %.1f MiB copying all\n",
	       (uint64_t)HOLES_SIZE >> 20, 100.0 * (double)populated / (double)HOLES_SIZE,
	       t[1][reps / 2] / 1e6, hr[1][0].bytes / (double)SZ_1M,
	       hr[1][0].skipped / (double)SZ_1M, t[0][reps / 2] / 1e6,
	       hr[0][0].bytes / (double)SZ_1M, (double)t[1][reps / 2] / (double)t[0][reps / 2],
	       (double)hr[1][0].bytes / (double)hr[0][0].bytes, reps, after[1] / (double)SZ_1M,
	       after[0] / (double)SZ_1M);
	free(link);
}

int main(int argc, char **argv)
{
	uint64_t aperture = IOD_MOCK_APERTURE_END - IOD_MOCK_APERTURE_START;
	const char *only = getenv("IOD_BENCH_ONLY");
	bool events_only = false, nested_only = false, nostall_only = false, harvest_only = false,
	     holes_only = false;
	sd_bus *bus = NULL;
	struct mock k;

	if (only && *only) {
		if (strcmp(only, "events") != 0 && strcmp(only, "nested") != 0 &&
		    strcmp(only, "nostall") != 0 && strcmp(only, "harvest") != 0 &&
		    strcmp(only, "holes") != 0) {
			printf("FAIL: IOD_BENCH_ONLY=%s: the choices are \"harvest\", \"holes\", "
			       "\"events\", \"nested\" and \"nostall\"\n",
			       only);
			return EXIT_FAILURE;
		}
		harvest_only = strcmp(only, "harvest") == 0;
		nostall_only = strcmp(only, "nostall") == 0;
		events_only = strcmp(only, "events") == 0;
		nested_only = strcmp(only, "nested") == 0;
		holes_only = strcmp(only, "holes") == 0;
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	mock_page = (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	if (access("/dev/iommu", F_OK) < 0)
		skip("/dev/iommu does not exist");
	atexit(cleanup);
	setenv("IOD_HARNESS", HARNESS_CONTROL, 1); /* for harness() of fdstore-test.h */
	start_bus();
	if (iod_bus_client_open(bus_address, false, &bus) < 0)
		skip("cannot connect to the bench bus %s", bus_address);
	mock_setup(&k, 256 * SZ_1M);
	if (nostall_only) {
		start_daemon(bus, false);
		bench_nostall(bus, &k);
		stop_daemon(bus);
		mock_teardown(&k);
		sd_bus_flush_close_unref(bus);
		cleanup();
		return EXIT_SUCCESS;
	}
	if (holes_only) {
		start_daemon(bus, false);
		bench_holes(bus, &k, 3);
		stop_daemon(bus);
		mock_teardown(&k);
		sd_bus_flush_close_unref(bus);
		cleanup();
		return EXIT_SUCCESS;
	}
	if (nested_only) {
		start_daemon(bus, false);
		bench_nested(bus, &k, 256 * SZ_1M, true, 5);
		bench_nested(bus, &k, 256 * SZ_1M, false, 5);
		stop_daemon(bus);
		mock_teardown(&k);
		sd_bus_flush_close_unref(bus);
		cleanup();
		return EXIT_SUCCESS;
	}
	if (!events_only) {
		start_daemon(bus, false);
		printf("bench: iodirtyd and a private bus at %s\n", bus_address);
		bench_harvest(bus, &k, 256 * SZ_1M, true, 5);
		bench_harvest(bus, &k, 256 * SZ_1M, false, 5);
		bench_harvest(bus, &k, aperture, true, 3);
		bench_harvest(bus, &k, aperture, false, 3);
		if (harvest_only) {
			stop_daemon(bus);
			mock_teardown(&k);
			sd_bus_flush_close_unref(bus);
			cleanup();
			return EXIT_SUCCESS;
		}
		bench_churn(bus, &k, 300);
		bench_delivery(bus, &k, 3);
		bench_nested(bus, &k, 256 * SZ_1M, true, 5);
		bench_nested(bus, &k, 256 * SZ_1M, false, 5);
		bench_nostall(bus, &k);
		bench_holes(bus, &k, 3);
		stop_daemon(bus);
	}
	bench_events(bus, &k, false);
	bench_events(bus, &k, true);
	ev_summary();
	mock_teardown(&k);

	sd_bus_flush_close_unref(bus);
	cleanup();
	return EXIT_SUCCESS;
}
