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
 *  4. vIOMMU events at scale: single Map + Unmap pairs with 10 and with 10,000 live
 *     mappings in the session, and with 1 and with 50 sessions in the daemon, against the
 *     raw ioctls and against what a VMM does in-process (IOAS map, a read without clearing
 *     of the range per HWPT, IOAS unmap); once with the daemon as above and once under
 *     fdstore-harness, which gives it systemd's fd store, so that every event is persisted
 *     as under systemd. Printed: the rates, 10,000 / 10 mappings, 50 / 1 sessions, and
 *     what persistence costs (store / no store).
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

#include "iodirty-client.h"
#include "iodirty.h"
#include "iommufd-mock.h"
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
		else
			execlp("iodirtyd", "iodirtyd", arg, "--log-level=warning",
			       "--limit=log_bytes=268435456", "--limit=sessions=64", (char *)NULL);
		_exit(127);
	}
	wait_name(bus, IOD_BUS_NAME, daemon_pid);
}

static void stop_daemon(void)
{
	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, NULL, 0);
	}
	daemon_pid = 0;
	/* the bus forgets the name when the connection closes: no stale owner for the next */
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

static char *adopt(sd_bus *bus, struct mock *k, const char *name, bool viommu)
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
		r = sd_bus_message_append_array(m, 'u', k->hwpt, sizeof(k->hwpt));
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
	path = adopt(bus, k, name, false);
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

	path = adopt(bus, k, "bench-delivery", true); /* no mapping: the log alone */
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

/* MapBatch (map, every entry at gpa) or UnmapBatch of n slots of len bytes from iova. */
static void call_churn_batch(sd_bus *bus, const char *path, bool map, uint64_t iova, uint64_t gpa,
			     uint64_t len, int n)
{
	const char *member = map ? "MapBatch" : "UnmapBatch";
	struct iod_mapping v[CHURN_BATCH];
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	int r;

	if (n > CHURN_BATCH)
		die("a churn batch of %d entries", n);
	for (int i = 0; i < n; i++)
		v[i] = (struct iod_mapping){
			.iova = iova + (uint64_t)i * len, .gpa = gpa, .length = len};
	r = iod_bus_new_batch(bus, path, map, v, (size_t)n, &m);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, &error, NULL);
	if (r < 0)
		die("%s: %s", member, error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
}

static void bench_churn(sd_bus *bus, struct mock *k, int pairs)
{
	const int batches = (4 * pairs + CHURN_BATCH - 1) / CHURN_BATCH;
	uint64_t t_batch;
	const uint64_t len = 64 * 1024, iova = IOD_MOCK_APERTURE_START, gpa = UINT64_C(1) << 32;
	uint64_t t0, t_daemon, t_raw;
	char *path;

	path = adopt(bus, k, "bench-churn", true);
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

/* --- 4. vIOMMU events at scale -------------------------------------------------------------- */

#define SCALE_LEN (64 * 1024)
#define SCALE_LIVE_BASE (UINT64_C(1) << 30) /* live mappings: 4 KiB each from 1 GiB */
#define SCALE_PAIRS_MAX 400
#define SCALE_BUDGET_NS (UINT64_C(3) * 1000 * 1000 * 1000)

/* A session that only records mappings (a vIOMMU, no HWPT): the daemon's state grows. */
static char *scale_bystander(sd_bus *bus, struct mock *k, int i, int mappings)
{
	struct iod_mapping v[256];
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL, *reply = NULL;
	const uint64_t gpa = UINT64_C(1) << 32;
	const char *path;
	char name[32], *ret;
	int r;

	snprintf(name, sizeof(name), "bystander-%d", i);
	r = sd_bus_call_method(bus, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			       "AdoptSession", &error, &reply, "shuaua{sv}", name, k->fd, k->ioas,
			       0, 1, "viommu", "b", 1);
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		die("AdoptSession %s: %s", name, error.message ? error.message : strerror(-r));
	ret = strdup(path);
	sd_bus_message_unref(reply);
	call(bus, ret, "AddRegion", NULL, "tt", gpa, k->mem_size);
	for (int done = 0; done < mappings; done += 256) {
		int n = mappings - done < 256 ? mappings - done : 256;

		for (int j = 0; j < n; j++)
			v[j] = (struct iod_mapping){.iova = SCALE_LIVE_BASE +
							    (uint64_t)(done + j) * PAGE,
						    .gpa = gpa,
						    .length = PAGE};
		r = iod_bus_new_batch(bus, ret, true, v, (size_t)n, &m);
		if (r >= 0)
			r = sd_bus_call(bus, m, 0, &error, NULL);
		if (r < 0)
			die("MapBatch %s: %s", name, error.message ? error.message : strerror(-r));
		sd_bus_message_unref(m);
		m = NULL;
	}
	sd_bus_error_free(&error);
	return ret;
}

/* Map + unmap pairs until the budget is spent; pairs per second. mode: 0 raw, 1 in-process
 * (a read without clearing per HWPT before the unmap), 2 through the daemon. */
static double scale_pairs(sd_bus *bus, struct mock *k, const char *path, int mode)
{
	const uint64_t gpa = UINT64_C(1) << 32, iova = IOD_MOCK_APERTURE_START;
	uint64_t bitmap[SCALE_LEN / PAGE / 64 + 1];
	uint64_t t0 = iod_now_nsec(), t = 0;
	int pairs = 0;

	while (pairs < SCALE_PAIRS_MAX && (pairs < 20 || t < SCALE_BUDGET_NS)) {
		uint64_t at = iova + (uint64_t)(pairs % 64) * SCALE_LEN;

		if (iod_ioas_map(k->ictx, k->ioas, k->mem, SCALE_LEN, at,
				 IOD_MAP_READ | IOD_MAP_WRITE) < 0)
			die("map: %m");
		if (mode == 2) {
			call(bus, path, "Map", NULL, "ttt", at, gpa, (uint64_t)SCALE_LEN);
			call(bus, path, "Unmap", NULL, "tt", at, (uint64_t)SCALE_LEN);
		} else if (mode == 1) {
			for (int i = 0; i < N_HWPTS; i++)
				if (iod_hwpt_read_dirty(k->ictx, k->hwpt[i], at, SCALE_LEN, PAGE,
							bitmap, IOD_READ_NO_CLEAR) < 0)
					die("read dirty: %m");
		}
		mock_unmap_range(k, at, SCALE_LEN);
		pairs++;
		t = iod_now_nsec() - t0;
	}
	return pairs / (t / 1e9);
}

struct scale_result {
	double daemon, raw, inproc;
};

static struct scale_result scale_plain, scale_store;

/* One configuration: live mappings in the measured session, sessions in the daemon. */
static struct scale_result scale_run(sd_bus *bus, struct mock *k, int live, int sessions,
				     bool store)
{
	const uint64_t gpa = UINT64_C(1) << 32;
	char *bystanders[64] = {}, *path;
	struct iod_mapping v[256];
	struct scale_result res;
	sd_bus_message *m = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	path = adopt(bus, k, "scale", true);
	call(bus, path, "AddRegion", NULL, "tt", gpa, k->mem_size);
	call(bus, path, "Start", NULL, NULL);
	/* the live mappings: 4 KiB each, in the IOAS and recorded */
	mock_map_range(k, SCALE_LIVE_BASE, (uint64_t)live * PAGE);
	for (int done = 0; done < live; done += 256) {
		int n = live - done < 256 ? live - done : 256;

		for (int j = 0; j < n; j++)
			v[j] = (struct iod_mapping){
				.iova = SCALE_LIVE_BASE + (uint64_t)(done + j) * PAGE,
				.gpa = gpa + (uint64_t)(done + j) % (k->mem_size / PAGE) * PAGE,
				.length = PAGE};
		r = iod_bus_new_batch(bus, path, true, v, (size_t)n, &m);
		if (r >= 0)
			r = sd_bus_call(bus, m, 0, &error, NULL);
		if (r < 0)
			die("MapBatch: %s", error.message ? error.message : strerror(-r));
		sd_bus_message_unref(m);
		m = NULL;
	}
	for (int i = 1; i < sessions; i++)
		bystanders[i] = scale_bystander(bus, k, i, 200);

	res.raw = scale_pairs(bus, k, path, 0);
	res.inproc = scale_pairs(bus, k, path, 1);
	res.daemon = scale_pairs(bus, k, path, 2);
	printf("bench: scale: %5d live mappings, %2d session(s), %-12s %8.0f pairs/s with "
	       "iodirtyd, %8.0f/s in-process, %8.0f/s raw: daemon / in-process = %.1f, "
	       "daemon / raw = %.1f\n",
	       live, sessions, store ? "fd store:" : "no fd store:", res.daemon, res.inproc,
	       res.raw, res.inproc / res.daemon, res.raw / res.daemon);

	for (int i = 1; i < sessions; i++) {
		call(bus, bystanders[i], "Destroy", NULL, NULL);
		free(bystanders[i]);
	}
	call(bus, path, "Destroy", NULL, NULL);
	mock_unmap_range(k, SCALE_LIVE_BASE, (uint64_t)live * PAGE);
	free(path);
	sd_bus_error_free(&error);
	return res;
}

static void bench_scale(sd_bus *bus, struct mock *k, bool store)
{
	struct scale_result few = scale_run(bus, k, 10, 1, store);
	struct scale_result many = scale_run(bus, k, 10000, 1, store);
	struct scale_result crowd = scale_run(bus, k, 10, 50, store);

	printf("bench: scale (%s): single-event rate with 10 / with 10,000 live mappings = %.2f "
	       "(goal <= 1.2); with 1 / with 50 sessions = %.2f\n",
	       store ? "fd store" : "no fd store", few.daemon / many.daemon,
	       few.daemon / crowd.daemon);
	if (store)
		scale_store = few;
	else
		scale_plain = few;
}

int main(int argc, char **argv)
{
	uint64_t aperture = IOD_MOCK_APERTURE_END - IOD_MOCK_APERTURE_START;
	sd_bus *bus = NULL;
	struct mock k;

	setvbuf(stdout, NULL, _IOLBF, 0);
	mock_page = (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	if (access("/dev/iommu", F_OK) < 0)
		skip("/dev/iommu does not exist");
	atexit(cleanup);
	start_bus();
	if (iod_bus_client_open(bus_address, false, &bus) < 0)
		skip("cannot connect to the bench bus %s", bus_address);
	start_daemon(bus, false);
	printf("bench: iodirtyd and a private bus at %s\n", bus_address);

	mock_setup(&k, 256 * SZ_1M);
	bench_harvest(bus, &k, 256 * SZ_1M, true, 5);
	bench_harvest(bus, &k, 256 * SZ_1M, false, 5);
	bench_harvest(bus, &k, aperture, true, 3);
	bench_harvest(bus, &k, aperture, false, 3);
	bench_churn(bus, &k, 300);
	bench_delivery(bus, &k, 3);
	bench_scale(bus, &k, false);
	stop_daemon();
	start_daemon(bus, true);
	bench_scale(bus, &k, true);
	printf("bench: scale: persistence (fd store on / off, 10 live mappings, 1 session): an "
	       "event costs %.2f times as much (goal <= 1.1)\n",
	       scale_plain.daemon / scale_store.daemon);
	mock_teardown(&k);

	sd_bus_flush_close_unref(bus);
	cleanup();
	return EXIT_SUCCESS;
}
