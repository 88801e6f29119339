/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hot-unplug of a device while iodirtyd tracks it: QEMU's edu device bound to vfio-pci
 * behind an emulated VT-d, in owner mode, with the daemon under fdstore-harness (run by
 * guest-fdstore.sh), so that the device's fd is also held by the fd store.
 *
 * The test creates a session, passes 4 MiB of guest memory (a memfd), has the daemon open
 * and attach the device by its PCI address, starts tracking and harvests once. Then it
 * removes the PCI device (echo 1 > /sys/bus/pci/devices/<addr>/remove) from a child process.
 * The kernel's removal waits until every fd of the device is closed, the daemon's and the
 * store's, so it completes only if the daemon releases the device and drops it from the
 * store. Checked:
 *  - Session1.DeviceLost arrives with the device's path; the removal completes (within
 *    30 s, it does not hang) and the device is gone from sysfs;
 *  - the session lives on: State "tracking", no devices, and Harvest works; its round holds
 *    every mapped page, which the fallback device made dirty up to its release;
 *  - nothing leaks: the daemon holds as many fds as before the attach, and the store the
 *    same names (iommufd, log, journal, memory, state).
 * Then a removal that begins while the daemon is stopped and killed, and the device's
 * properties (IommuType, IommuDirtyTracking, DmaLogging, Migration, MigrationFlags) across a
 * kill -9: the next instance says what the first one did.
 * At the end the PCI bus is rescanned and the edu device bound to vfio-pci again, for the
 * tests that follow.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon-test.h"
#include "fdstore-test.h"
#include "iodirty.h"

#define SZ_1M (UINT64_C(1) << 20)
#define LOG_SHIFT 12
#define LOG_PAGE (UINT64_C(1) << LOG_SHIFT)
#define GPA_BASE SZ_1M
#define MEM_SIZE (4 * SZ_1M)
#define REMOVE_TIMEOUT_USEC (30 * 1000000ull)

static sd_bus *bus;
static const char *pci;
static char *lost_path;

static int write_file(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, value, strlen(value));
	n = n < 0 ? -errno : 0;
	close(fd);
	return (int)n;
}

static int on_device_lost(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	const char *path, *reason;

	if (sd_bus_message_read(m, "os", &path, &reason) > 0) {
		printf("DeviceLost(%s, \"%s\")\n", path, reason);
		free(lost_path);
		lost_path = strdup(path);
	}
	return 0;
}

/* Put the edu device back for the tests that follow. */
static void rescan(void)
{
	char path[256];

	(void)write_file("/sys/bus/pci/rescan", "1");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver_override", pci);
	(void)write_file(path, "vfio-pci");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", pci);
	if (access(path, F_OK) == 0) {
		char unbind[300];

		snprintf(unbind, sizeof(unbind), "%s/unbind", path);
		(void)write_file(unbind, pci);
	}
	(void)write_file("/sys/bus/pci/drivers_probe", pci);
}

/* Remove the PCI device from a child process: the write blocks until the device is free. */
static pid_t start_removal(void)
{
	pid_t child = fork();

	dt_assert(child >= 0, "fork: %s", strerror(errno));
	if (child == 0) {
		char path[300];

		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/remove", pci);
		_exit(write_file(path, "1") < 0 ? 1 : 0);
	}
	return child;
}

/* Until the removal completed and DeviceLost arrived (30 s at most); the child's status. */
static int wait_removal(pid_t child)
{
	uint64_t deadline = iod_now_usec() + REMOVE_TIMEOUT_USEC;
	pid_t w = 0;
	int status = 0, r;

	for (;;) {
		if (w != child)
			w = waitpid(child, &status, WNOHANG);
		r = sd_bus_process(bus, NULL);
		dt_assert(r >= 0, "sd_bus_process: %s", strerror(-r));
		if (w == child && lost_path)
			return status;
		if (iod_now_usec() > deadline) {
			if (w != child)
				kill(child, SIGKILL);
			dt_assert(false, "after 30 s: removal %s, DeviceLost %s",
				  w == child ? "done" : "still blocked",
				  lost_path ? "received" : "not received");
		}
		if (r == 0)
			sd_bus_wait(bus, 100000);
	}
}

/*
 * A removal that starts while the daemon cannot act: it is stopped (SIGSTOP), the removal
 * begins (the uevent goes to a socket that dies with it), then it is killed. The next
 * instance takes the device back from the store and learns of the removal only from VFIO's
 * repeated release request.
 */
/* Rescan the PCI bus and wait for the edu device to be back on vfio-pci. */
static void device_back(void)
{
	char sysfs[256];

	snprintf(sysfs, sizeof(sysfs), "/sys/bus/pci/devices/%s/vfio-dev", pci);
	rescan();
	for (int i = 0; i < 100 && access(sysfs, F_OK) < 0; i++)
		usleep(50000);
	dt_assert(access(sysfs, F_OK) == 0, "%s is not back on vfio-pci after a rescan", pci);
}

static void removal_while_down(void)
{
	sd_bus_message *reply;
	const char *p;
	char *spath, *dpath, *state;
	unsigned starts;
	pid_t child;
	int memfd, status;

	device_back();

	memfd = memfd_create("guest-memory", MFD_CLOEXEC);
	dt_assert(memfd >= 0 && ftruncate(memfd, MEM_SIZE) == 0, "memfd");
	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "CreateSession", NULL, "sa{sv}", "up2", 0);
	dt_assert(sd_bus_message_read(reply, "o", &p) > 0, "CreateSession reply");
	spath = strdup(p);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "AddMemory", NULL, "httt", memfd,
				     UINT64_C(0), MEM_SIZE, GPA_BASE));
	close(memfd);
	reply = dt_call(bus, spath, DT_SES_IFACE, "AttachDevice", NULL, "sa{sv}", pci, 0);
	dt_assert(sd_bus_message_read(reply, "o", &p) > 0, "AttachDevice reply");
	dpath = strdup(p);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Start", NULL, ""));
	dt_assert(sd_bus_match_signal(bus, NULL, DT_DEST, spath, DT_SES_IFACE, "DeviceLost",
				      on_device_lost, NULL) >= 0,
		  "match DeviceLost");
	free(lost_path);
	lost_path = NULL;

	starts = (unsigned)harness_field(harness("status"), "starts");
	dt_assert(strcmp(harness("freeze"), "ok") == 0, "freeze");
	child = start_removal();
	usleep(500000);
	dt_assert(strncmp(harness("kill 9"), "ok", 2) == 0, "kill -9");
	harness_wait_ready(starts + 1);
	status = wait_removal(child);
	dt_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the removal failed");
	dt_assert(strcmp(lost_path, dpath) == 0, "DeviceLost names %s, not %s", lost_path, dpath);
	state = dt_get_string(bus, spath, DT_SES_IFACE, "State");
	dt_assert(strcmp(state, "tracking") == 0, "State \"%s\" after the device went", state);
	free(state);
	dt_assert(!strstr(harness_names(harness("status")), "up2/dev/"),
		  "the store still holds the device");
	dt_pass("a removal begun while the daemon was stopped completes after kill -9: the next instance releases the device on VFIO's request");

	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Destroy", NULL, ""));
	free(spath);
	free(dpath);
}

/* A string or boolean property of the device, as text. */
static char *device_props(const char *dpath)
{
	static const char *const names[] = {"IommuType", "IommuDirtyTracking", "DmaLogging",
					    "Migration"};
	char *out = NULL, *s;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	dt_assert(f, "open_memstream");
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		if (i == 0) {
			s = dt_get_string(bus, dpath, DT_DEV_IFACE, names[i]);
			fprintf(f, "%s=%s", names[i], s);
			free(s);
		} else {
			fprintf(f, " %s=%" PRIu64, names[i],
				dt_get_u64(bus, dpath, DT_DEV_IFACE, names[i], 'b'));
		}
	}
	{
		sd_bus_error e = SD_BUS_ERROR_NULL;
		char **flags = NULL;
		int r = sd_bus_get_property_strv(bus, DT_DEST, dpath, DT_DEV_IFACE,
						 "MigrationFlags", &e, &flags);

		dt_assert(r >= 0, "MigrationFlags: %s", e.message ? e.message : strerror(-r));
		fprintf(f, " MigrationFlags=");
		for (size_t i = 0; flags && flags[i]; i++) {
			fprintf(f, "%s%s", i ? "," : "", flags[i]);
			free(flags[i]);
		}
		free(flags);
		sd_bus_error_free(&e);
	}
	fclose(f);
	return out;
}

/* What the kernel said about a device at attach is what the next instance says too. */
static void device_properties_survive_restart(void)
{
	sd_bus_message *reply;
	const char *p;
	char *spath, *dpath, *before, *after;
	unsigned starts;
	int memfd;

	device_back();
	memfd = memfd_create("guest-memory", MFD_CLOEXEC);
	dt_assert(memfd >= 0 && ftruncate(memfd, MEM_SIZE) == 0, "memfd");
	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "CreateSession", NULL, "sa{sv}", "props", 1,
			"disconnect_policy", "s", "keep");
	dt_assert(sd_bus_message_read(reply, "o", &p) > 0, "CreateSession reply");
	spath = strdup(p);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "AddMemory", NULL, "httt", memfd,
				     UINT64_C(0), MEM_SIZE, GPA_BASE));
	close(memfd);
	reply = dt_call(bus, spath, DT_SES_IFACE, "AttachDevice", NULL, "sa{sv}", pci, 0);
	dt_assert(sd_bus_message_read(reply, "o", &p) > 0, "AttachDevice reply");
	dpath = strdup(p);
	sd_bus_message_unref(reply);
	before = device_props(dpath);
	dt_assert(strstr(before, "IommuType=intel-vtd"), "before the restart: %s", before);

	starts = (unsigned)harness_field(harness("status"), "starts");
	dt_assert(strncmp(harness("kill 9"), "ok", 2) == 0, "kill -9");
	harness_wait_ready(starts + 1);
	after = device_props(dpath);
	dt_assert(strcmp(before, after) == 0, "device properties before the restart: %s; after: %s",
		  before, after);
	dt_pass("device properties survive kill -9: %s", after);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Destroy", NULL, ""));
	free(before);
	free(after);
	free(spath);
	free(dpath);
}

int main(void)
{
	sd_bus_message *reply;
	sd_bus_slot *slot = NULL;
	const char *spath_c, *dpath_c, *st;
	char *spath, *dpath, *state, stored_before[4096], sysfs[256];
	uint64_t stored_n_before;
	unsigned fds_before, fds_after;
	uint64_t nr, dirty, usec;
	pid_t daemon_pid, child;
	int memfd, fd, precise, status = 0, r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	pci = getenv("IOD_EDU_PCI");
	dt_require_iommufd();
	if (!pci || !*pci) {
		printf("SKIP: IOD_EDU_PCI is not set: no edu device bound to vfio-pci\n");
		return 77;
	}
	snprintf(sysfs, sizeof(sysfs), "/sys/bus/pci/devices/%s", pci);

	memfd = memfd_create("guest-memory", MFD_CLOEXEC);
	dt_assert(memfd >= 0 && ftruncate(memfd, MEM_SIZE) == 0, "memfd");

	bus = dt_connect();
	daemon_pid = harness_wait_ready(1);

	reply = dt_call(bus, DT_MANAGER, DT_MGR_IFACE, "CreateSession", NULL, "sa{sv}", "up", 0);
	dt_assert(sd_bus_message_read(reply, "o", &spath_c) > 0, "CreateSession reply");
	spath = strdup(spath_c);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "AddMemory", NULL, "httt", memfd,
				     UINT64_C(0), MEM_SIZE, GPA_BASE));
	fds_before = proc_fd_count_settled(daemon_pid, 0);
	st = harness("status");
	stored_n_before = harness_field(st, "stored");
	snprintf(stored_before, sizeof(stored_before), "%s", harness_names(st));

	reply = dt_call(bus, spath, DT_SES_IFACE, "AttachDevice", NULL, "sa{sv}", pci, 0);
	dt_assert(sd_bus_message_read(reply, "o", &dpath_c) > 0, "AttachDevice reply");
	dpath = strdup(dpath_c);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Start", NULL, ""));
	st = harness("status");
	dt_assert(strstr(harness_names(st), "up/dev/0"), "the device fd is not in the store: %s",
		  st);
	reply = dt_call(bus, spath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	dt_assert(sd_bus_message_read(reply, "thtbt", &nr, &fd, &dirty, &precise, &usec) > 0,
		  "Harvest reply");
	dt_assert(!precise && dirty == MEM_SIZE / LOG_PAGE,
		  "with the fallback device attached a round is every mapped page, not %" PRIu64,
		  dirty);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Acknowledge", NULL, "t", nr));
	dt_pass("owner session with %s attached (fallback), tracking; its fd is in the store", pci);

	r = sd_bus_match_signal(bus, &slot, DT_DEST, spath, DT_SES_IFACE, "DeviceLost",
				on_device_lost, NULL);
	dt_assert(r >= 0, "match DeviceLost: %s", strerror(-r));

	/* The removal blocks until every fd of the device is closed. */
	child = start_removal();
	status = wait_removal(child);
	dt_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writing %s/remove failed", sysfs);
	dt_assert(strcmp(lost_path, dpath) == 0, "DeviceLost names %s, not %s", lost_path, dpath);
	dt_assert(access(sysfs, F_OK) < 0, "%s still exists after the removal", sysfs);
	dt_pass("removal of %s completed and DeviceLost(%s) arrived", pci, dpath);

	state = dt_get_string(bus, spath, DT_SES_IFACE, "State");
	dt_assert(strcmp(state, "tracking") == 0, "State \"%s\" after the device went", state);
	free(state);
	reply = dt_call(bus, spath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	dt_assert(sd_bus_message_read(reply, "thtbt", &nr, &fd, &dirty, &precise, &usec) > 0,
		  "Harvest reply");
	dt_assert(dirty == MEM_SIZE / LOG_PAGE,
		  "the round after the removal holds %" PRIu64 " pages, want every mapped page",
		  dirty);
	dt_assert(precise, "no fallback device is left, yet the round is not precise");
	sd_bus_message_unref(reply);
	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Acknowledge", NULL, "t", nr));
	reply = dt_call(bus, spath, DT_SES_IFACE, "Harvest", NULL, "a{sv}", 0);
	dt_assert(sd_bus_message_read(reply, "thtbt", &nr, &fd, &dirty, &precise, &usec) > 0,
		  "Harvest reply");
	dt_assert(dirty == 0, "a round after that holds %" PRIu64 " pages", dirty);
	sd_bus_message_unref(reply);
	dt_pass("the session lives on: tracking, Harvest works, the lost device's pages delivered");

	fds_after = proc_fd_count_settled(daemon_pid, fds_before);
	dt_assert(fds_after == fds_before, "the daemon holds %u fds, %u before the attach",
		  fds_after, fds_before);
	st = harness("status");
	dt_assert(harness_field(st, "starts") == 1, "the daemon restarted: %s", st);
	dt_assert(!strstr(harness_names(st), "/dev/"), "the store still holds a device: %s", st);
	dt_assert(harness_field(st, "stored") == stored_n_before,
		  "the store holds %" PRIu64 " fds, want %" PRIu64 " as before the attach (%s): %s",
		  harness_field(st, "stored"), stored_n_before, stored_before, st);
	dt_pass("nothing leaks: %u daemon fds as before the attach, the store as before",
		fds_after);

	sd_bus_message_unref(dt_call(bus, spath, DT_SES_IFACE, "Destroy", NULL, ""));
	removal_while_down();
	device_properties_survive_restart();
	st = harness("quit");
	dt_assert(strcmp(st, "ok status=0") == 0, "the daemon's exit on SIGTERM: %s", st);
	sd_bus_slot_unref(slot);
	sd_bus_flush_close_unref(bus);
	rescan();
	free(spath);
	free(dpath);
	free(lost_path);
	printf("%u checks passed\n", dt_passed);
	return EXIT_SUCCESS;
}
