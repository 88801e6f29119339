/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bus tier: an sd-bus client that drives iodirtyd on a private bus and checks what
 * busctl cannot: named errors, fd passing (memfds, wrong fds, the harvested log), access
 * control between uids, the disconnect policy and the limits.
 *
 *   test-bus-client ADDRESS OTHER_UID DENIED_UID
 *   test-bus-client --notify SOCKET ADDRESS
 *
 * The second form listens on SOCKET as a service manager would (NOTIFY_SOCKET) and, when
 * READY=1 arrives, checks that the bus name is already owned.
 *
 * OTHER_UID may call the service (the stand-in for the group "iodirty"), DENIED_UID may
 * only introspect it (the bus policy refuses its calls). The daemon runs with
 * tests/bus/iodirtyd-test.conf. Prints "PASS: ..." / "FAIL: ..." per check; tests/bus/run
 * counts them. Exits non-zero if any check failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "iodirty-client.h"
#include "iod-dirty-log.h"

#define E_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"
#define E_ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define E_PREFIX "org.iodirty.Error."

/* Limits of tests/bus/iodirtyd-test.conf (and the --limit on run's command line). */
#define LIMIT_SESSIONS 6
#define LIMIT_PER_USER 2
#define LIMIT_DEVICES 2
#define LIMIT_REGIONS 3
#define LIMIT_MAPPINGS 4
#define LIMIT_LOG_BYTES 65536
#define LIMIT_LOG_BYTES_PER_USER 98304
#define LIMIT_RANGES 16

static const char *address;
static uid_t other_uid, denied_uid;
static unsigned passed, failed;

static void result(bool ok, const char *name, const char *format, ...)
{
	va_list ap;

	if (ok) {
		passed++;
		printf("PASS: %s\n", name);
		return;
	}
	failed++;
	printf("FAIL: %s (", name);
	va_start(ap, format);
	vprintf(format, ap);
	va_end(ap);
	printf(")\n");
}

static sd_bus *connect_bus(void)
{
	sd_bus *bus = NULL;
	int r;

	r = iod_bus_client_open(address, false, &bus);
	if (r < 0) {
		fprintf(stderr, "cannot connect to %s: %s\n", address, strerror(-r));
		exit(2);
	}
	return bus;
}

static const char *session_path(const char *name, char *buf, size_t size)
{
	char *p = NULL;

	if (sd_bus_path_encode(IOD_MANAGER_PATH "/session", name, &p) < 0)
		abort();
	snprintf(buf, size, "%s", p);
	free(p);
	return buf;
}

/* Call member of IOD_BUS_NAME with the arguments types and ap describe (none if types is NULL). */
static int callv(sd_bus *bus, const char *path, const char *iface, const char *member,
		 sd_bus_error *error, sd_bus_message **reply, const char *types, va_list ap)
{
	sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, IOD_BUS_NAME, path, iface, member);
	if (r >= 0 && types)
		r = sd_bus_message_appendv(m, types, ap);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, error, reply);
	sd_bus_message_unref(m);
	return r;
}

/* Call and expect success; returns the reply (or NULL after a FAIL). */
static sd_bus_message *call_ok(sd_bus *bus, const char *name, const char *path, const char *iface,
			       const char *member, const char *types, ...)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	va_list ap;
	int r;

	va_start(ap, types);
	r = callv(bus, path, iface, member, &error, &reply, types, ap);
	va_end(ap);
	if (name)
		result(r >= 0, name, "%s: %s", error.name ? error.name : strerror(-r),
		       error.message ? error.message : "");
	sd_bus_error_free(&error);
	return r >= 0 ? reply : NULL;
}

/* A call returned r and error: it must have failed with want, its message containing needle
 * (if not NULL). Returns whether it did. */
static bool expect_error(const char *name, int r, const sd_bus_error *error, const char *want,
			 const char *needle)
{
	if (r >= 0)
		result(false, name, "succeeded, expected %s", want);
	else if (!error->name || strcmp(error->name, want) != 0)
		result(false, name, "got %s (%s), expected %s", error->name ? error->name : "?",
		       error->message ? error->message : strerror(-r), want);
	else if (needle && (!error->message || !strstr(error->message, needle)))
		result(false, name, "message \"%s\" lacks \"%s\"", error->message, needle);
	else {
		result(true, name, NULL);
		return true;
	}
	return false;
}

/* Call and expect the error named want, whose message contains needle (if not NULL). */
static void call_err(sd_bus *bus, const char *name, const char *want, const char *needle,
		     const char *path, const char *iface, const char *member, const char *types,
		     ...)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	va_list ap;
	int r;

	va_start(ap, types);
	r = callv(bus, path, iface, member, &error, &reply, types, ap);
	va_end(ap);
	sd_bus_message_unref(reply);
	expect_error(name, r, &error, want, needle);
	sd_bus_error_free(&error);
}

static uint64_t get_u64(sd_bus *bus, const char *path, const char *iface, const char *prop,
			char type)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	char sig[2] = {type, 0};
	uint64_t v = UINT64_MAX;
	uint32_t u;
	int b, r;

	r = sd_bus_get_property(bus, IOD_BUS_NAME, path, iface, prop, &error, &reply, sig);
	if (r >= 0) {
		if (type == 't')
			r = sd_bus_message_read(reply, "t", &v);
		else if (type == 'u' && (r = sd_bus_message_read(reply, "u", &u)) >= 0)
			v = u;
		else if (type == 'b' && (r = sd_bus_message_read(reply, "b", &b)) >= 0)
			v = (uint64_t)b;
	}
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	return v;
}

static char *get_string(sd_bus *bus, const char *path, const char *iface, const char *prop)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char *s = NULL;

	if (sd_bus_get_property_string(bus, IOD_BUS_NAME, path, iface, prop, &error, &s) < 0)
		s = strdup("(error)");
	sd_bus_error_free(&error);
	return s;
}

static void expect_string(sd_bus *bus, const char *name, const char *path, const char *iface,
			  const char *prop, const char *want)
{
	char *s = get_string(bus, path, iface, prop);

	result(s && strcmp(s, want) == 0, name, "%s is \"%s\", expected \"%s\"", prop, s, want);
	free(s);
}

static void expect_u64(sd_bus *bus, const char *name, const char *path, const char *iface,
		       const char *prop, char type, uint64_t want)
{
	uint64_t v = get_u64(bus, path, iface, prop, type);

	result(v == want, name, "%s is %" PRIu64 ", expected %" PRIu64, prop, v, want);
}

static void create(sd_bus *bus, const char *name, const char *session, bool viommu,
		   const char *policy)
{
	sd_bus_message *reply = call_ok(bus, name, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
					"CreateSession", "sa{sv}", session, 2, "viommu", "b",
					(int)viommu, "disconnect_policy", "s", policy);
	sd_bus_message_unref(reply);
}

static void destroy(sd_bus *bus, const char *session)
{
	sd_bus_message_unref(call_ok(bus, NULL, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
				     "DestroySession", "s", session));
}

static int make_memfd(uint64_t size, bool read_only)
{
	int fd = memfd_create("iodirty-test-guest", MFD_CLOEXEC), ro;
	char path[64];

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		abort();
	if (!read_only)
		return fd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	close(fd);
	return ro;
}

/* --- argument validation ------------------------------------------------------------------- */

static void test_create_validation(sd_bus *bus)
{
	call_err(bus, "create: empty name", E_INVALID_ARGS, "not 1 to 64", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "", 0);
	call_err(bus, "create: name with a slash", E_INVALID_ARGS, "a/b", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "a/b", 0);
	call_err(bus, "create: name of 65 characters", E_INVALID_ARGS, NULL, IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0);
	call_err(bus, "create: unknown option", E_INVALID_ARGS, "Unknown option \"bogus\"",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "v1", 1,
		 "bogus", "b", 1);
	call_err(bus, "create: option of the wrong type", E_INVALID_ARGS, "page_size",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "v1", 1,
		 "page_size", "u", 4096);
	call_err(bus, "create: option given twice", E_INVALID_ARGS, "twice", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "v1", 2, "viommu", "b", 1,
		 "viommu", "b", 0);
	call_err(bus, "create: page size not a power of two", E_INVALID_ARGS, "power of two",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "v1", 1,
		 "page_size", "t", (uint64_t)12288);
	call_err(bus, "create: page size too small", E_INVALID_ARGS, "power of two",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "v1", 1,
		 "page_size", "t", (uint64_t)2048);
	call_err(bus, "create: bad disconnect policy", E_INVALID_ARGS, "\"later\"",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "v1", 1,
		 "disconnect_policy", "s", "later");
	call_err(bus, "adopt: huge_pages is not an adopt option", E_INVALID_ARGS, "huge_pages",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "AdoptSession", "shuaua{sv}", "v1", 0, 1,
		 0, 1, "huge_pages", "b", 0);
	call_err(bus, "get: no such session", E_PREFIX "NoSuchSession", "nothere", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "GetSession", "s", "nothere");
	call_err(bus, "destroy: no such session", E_PREFIX "NoSuchSession", NULL, IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "DestroySession", "s", "nothere");
	expect_u64(bus, "create: failures left no session", IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
		   "MaxSessions", 'u', LIMIT_SESSIONS);

	create(bus, "create: v1", "v1", false, "keep");
	call_err(bus, "create: duplicate name", E_PREFIX "SessionExists", "v1", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "v1", 0);
	destroy(bus, "v1");
}

static void test_adopt_validation(sd_bus *bus)
{
	int memfd = make_memfd(4096, false), p[2];
	uint32_t hwpts[LIMIT_DEVICES + 1] = {2, 3, 4};
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	int r;

	if (pipe2(p, O_CLOEXEC) < 0)
		abort();
	call_err(bus, "adopt: a memfd is not an iommufd", E_INVALID_ARGS, "not an iommufd",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "AdoptSession", "shuaua{sv}", "a1", memfd,
		 1, 0, 0);
	call_err(bus, "adopt: a pipe is not an iommufd", E_INVALID_ARGS, "not an iommufd",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "AdoptSession", "shuaua{sv}", "a1", p[0],
		 1, 0, 0);
	call_err(bus, "adopt: ioas 0", E_INVALID_ARGS, "ioas_id 0", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "AdoptSession", "shuaua{sv}", "a1", memfd, 0, 0, 0);
	call_err(bus, "adopt: hwpt given twice", E_INVALID_ARGS, "twice", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "AdoptSession", "shuaua{sv}", "a1", memfd, 1, 2, 5, 5, 0);
	call_err(bus, "adopt: hwpt id = ioas id", E_INVALID_ARGS, "not a HWPT", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "AdoptSession", "shuaua{sv}", "a1", memfd, 1, 1, 1, 0);

	/* More HWPTs than the device limit. */
	r = sd_bus_message_new_method_call(bus, &m, IOD_BUS_NAME, IOD_MANAGER_PATH,
					   IOD_MANAGER_INTERFACE, "AdoptSession");
	if (r >= 0)
		r = sd_bus_message_append(m, "shu", "a1", memfd, 1);
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'u', hwpts, sizeof(hwpts));
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 0);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, &error, NULL);
	result(r < 0 && sd_bus_error_has_name(&error, E_PREFIX "LimitExceeded"),
	       "adopt: more HWPTs than the device limit", "got %s", error.name);
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);

	call_err(bus, "get: failed adopts left no session", E_PREFIX "NoSuchSession", NULL,
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "GetSession", "s", "a1");
	close(memfd);
	close(p[0]);
	close(p[1]);
}

static void test_memory_validation(sd_bus *bus)
{
	char path[256];
	int good = make_memfd(4 * 65536, false), ro = make_memfd(65536, true), p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		abort();
	session_path("mem", path, sizeof(path));
	create(bus, "memory: create viommu session", "mem", true, "keep");

	call_err(bus, "memory: size 0", E_INVALID_ARGS, "must not be 0", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 0, 0, 0);
	call_err(bus, "memory: unaligned gpa", E_INVALID_ARGS, "aligned", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 0, 4096, 100);
	call_err(bus, "memory: unaligned size", E_INVALID_ARGS, "aligned", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 0, 4097, 0);
	call_err(bus, "memory: unaligned offset", E_INVALID_ARGS, "offset", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 12, 4096, 0);
	call_err(bus, "memory: gpa + size overflows", E_PREFIX "InvalidRange", "overflows", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 0, 8192, UINT64_MAX - 4095);
	call_err(bus, "memory: offset + size overflows", E_PREFIX "InvalidRange", "overflows", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", good, UINT64_MAX - 4095, 8192, 0);
	call_err(bus, "memory: a pipe is not memory", E_INVALID_ARGS, "not a memfd", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", p[0], 0, 4096, 0);
	call_err(bus, "memory: a read-only memfd", E_INVALID_ARGS, "reading and writing", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", ro, 0, 4096, 0);
	call_err(bus, "memory: past the end of the memfd", E_PREFIX "InvalidRange", "less than",
		 path, IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 65536, 4 * 65536, 0);
	expect_u64(bus, "memory: failures left no region", path, IOD_SESSION_INTERFACE,
		   "TrackedBytes", 't', 0);

	sd_bus_message_unref(call_ok(bus, "memory: region at 1 MiB", path, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", good, 0, 65536, 0x100000));
	call_err(bus, "memory: overlapping region", E_PREFIX "InvalidRange", "overlaps", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 0, 8192, 0x10f000);
	call_err(bus, "memory: region containing another", E_PREFIX "InvalidRange", "overlaps",
		 path, IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 0, 4 * 65536, 0xf0000);
	sd_bus_message_unref(call_ok(bus, "memory: adjacent region", path, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", good, 65536, 65536, 0x110000));
	expect_u64(bus, "memory: tracked bytes", path, IOD_SESSION_INTERFACE, "TrackedBytes", 't',
		   131072);
	call_err(bus, "memory: AddRegion is for adopt mode", E_PREFIX "WrongMode", "owner mode",
		 path, IOD_SESSION_INTERFACE, "AddRegion", "tt", 0, 4096);

	/* vIOMMU events: validation before the kernel. */
	call_err(bus, "map: size 0", E_INVALID_ARGS, NULL, path, IOD_SESSION_INTERFACE, "Map",
		 "ttt", 0, 0x100000, 0);
	call_err(bus, "map: unaligned iova", E_INVALID_ARGS, "iova", path, IOD_SESSION_INTERFACE,
		 "Map", "ttt", 0x800, 0x100000, 4096);
	call_err(bus, "map: iova + size overflows", E_PREFIX "InvalidRange", "overflows", path,
		 IOD_SESSION_INTERFACE, "Map", "ttt", UINT64_MAX - 4095, 0x100000, 8192);
	call_err(bus, "map: gpa outside guest memory", E_PREFIX "InvalidRange",
		 "not inside one guest memory region", path, IOD_SESSION_INTERFACE, "Map", "ttt", 0,
		 0, 4096);
	call_err(bus, "map: gpa across two regions", E_PREFIX "InvalidRange", NULL, path,
		 IOD_SESSION_INTERFACE, "Map", "ttt", 0, 0x10f000, 8192);
	call_err(bus, "map: needs the kernel", E_PREFIX "NoIommufd", "/dev/iommu", path,
		 IOD_SESSION_INTERFACE, "Map", "ttt", 0x4000000, 0x100000, 4096);
	expect_u64(bus, "map: failures left no mapping", path, IOD_SESSION_INTERFACE, "Mappings",
		   'u', 0);
	call_err(bus, "unmap: nothing mapped there is NotMapped (a retry can tell it is done)",
		 E_PREFIX "NotMapped", "no mapping", path, IOD_SESSION_INTERFACE, "Unmap", "tt", 0,
		 65536);
	call_err(bus, "unmap: unaligned", E_INVALID_ARGS, NULL, path, IOD_SESSION_INTERFACE,
		 "Unmap", "tt", 1, 4096);
	destroy(bus, "mem");

	/* Without a vIOMMU AddMemory maps IOVA = GPA at once: that needs /dev/iommu. */
	session_path("flat", path, sizeof(path));
	create(bus, "memory: create flat session", "flat", false, "keep");
	call_err(bus, "memory: flat session needs the kernel", E_PREFIX "NoIommufd",
		 "CONFIG_IOMMUFD", path, IOD_SESSION_INTERFACE, "AddMemory", "httt", good, 0, 65536,
		 0);
	expect_u64(bus, "memory: NoIommufd left no region", path, IOD_SESSION_INTERFACE,
		   "TrackedBytes", 't', 0);
	expect_u64(bus, "memory: NoIommufd left no IOAS", path, IOD_SESSION_INTERFACE, "IoasId",
		   'u', 0);
	call_err(bus, "map: no vIOMMU", E_PREFIX "WrongMode", "viommu", path, IOD_SESSION_INTERFACE,
		 "Map", "ttt", 0, 0, 4096);
	call_err(bus, "device: bad name", E_INVALID_ARGS, "neither a PCI address", path,
		 IOD_SESSION_INTERFACE, "AttachDevice", "sa{sv}", "eth0", 0);
	call_err(bus, "device: bad PCI address", E_INVALID_ARGS, NULL, path, IOD_SESSION_INTERFACE,
		 "AttachDevice", "sa{sv}", "0000:00:1g.0", 0);
	call_err(bus, "device: unknown option", E_INVALID_ARGS, "Unknown option", path,
		 IOD_SESSION_INTERFACE, "AttachDevice", "sa{sv}", "0000:00:01.0", 1, "bogus", "b",
		 1);
	call_err(bus, "device: unknown dirty_source", E_INVALID_ARGS,
		 "dirty_source: \"dma\" is not one of auto, iommu, device, none", path,
		 IOD_SESSION_INTERFACE, "AttachDeviceFd", "ha{sv}", p[0], 1, "dirty_source", "s",
		 "dma");
	call_err(bus, "device: dirty_source of the wrong type", E_INVALID_ARGS, NULL, path,
		 IOD_SESSION_INTERFACE, "AttachDeviceFd", "ha{sv}", p[0], 1, "dirty_source", "b",
		 1);
	call_err(bus, "device: dirty_tracking false contradicts dirty_source device",
		 E_INVALID_ARGS, "contradict", path, IOD_SESSION_INTERFACE, "AttachDeviceFd",
		 "ha{sv}", p[0], 2, "dirty_tracking", "b", 0, "dirty_source", "s", "device");
	call_err(bus, "device: a pipe is not a VFIO cdev", E_INVALID_ARGS, "not a VFIO device",
		 path, IOD_SESSION_INTERFACE, "AttachDeviceFd", "ha{sv}", p[0], 0);
	call_err(bus, "device: /dev/null is not a VFIO cdev", E_INVALID_ARGS, NULL, path,
		 IOD_SESSION_INTERFACE, "AttachDevice", "sa{sv}", "/dev/null", 0);
	call_err(bus, "device: no such PCI device", E_PREFIX "NoSuchDevice", NULL, path,
		 IOD_SESSION_INTERFACE, "AttachDevice", "sa{sv}", "00ff:ff:1f.7", 0);
	call_err(bus, "device: no such device object", E_PREFIX "NoSuchDevice", NULL, path,
		 IOD_SESSION_INTERFACE, "DetachDevice", "o",
		 "/org/iodirty/Tracker1/session/flat/device/9");
	call_err(bus, "probe: bad name", E_INVALID_ARGS, NULL, IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "ProbeDevice", "s", "nope");
	call_err(bus, "probe: a pipe is not a VFIO cdev", E_INVALID_ARGS, "not a VFIO device",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "ProbeDeviceFd", "h", p[0]);
	destroy(bus, "flat");

	close(good);
	close(ro);
	close(p[0]);
	close(p[1]);
}

/* --- vIOMMU batches ------------------------------------------------------------------------ */

struct event {
	uint64_t iova, gpa, size; /* gpa unused by UnmapBatch */
};

/* MapBatch (map) or UnmapBatch with the n entries of v. */
static int call_batch(sd_bus *bus, const char *path, bool map, const struct event *v, size_t n,
		      sd_bus_error *error)
{
	struct iod_mapping *e = calloc(n ? n : 1, sizeof(*e));
	sd_bus_message *m = NULL;
	int r;

	if (!e)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		e[i] = (struct iod_mapping){
			.iova = v[i].iova, .gpa = v[i].gpa, .length = v[i].size};
	r = iod_bus_new_batch(bus, path, map, e, n, &m);
	free(e);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, error, NULL);
	sd_bus_message_unref(m);
	return r;
}

static void batch_ok(sd_bus *bus, const char *name, const char *path, bool map,
		     const struct event *v, size_t n)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r = call_batch(bus, path, map, v, n, &error);

	result(r >= 0, name, "%s: %s", error.name ? error.name : strerror(-r),
	       error.message ? error.message : "");
	sd_bus_error_free(&error);
}

/* A batch that must fail with want (its message containing needle) and change nothing: the
 * Mappings property stays what it was (a second check, "<name>: nothing changed"). */
static void batch_err(sd_bus *bus, const char *name, const char *want, const char *needle,
		      const char *path, bool map, const struct event *v, size_t n)
{
	uint64_t before = get_u64(bus, path, IOD_SESSION_INTERFACE, "Mappings", 'u');
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char unchanged[160];
	int r;

	r = call_batch(bus, path, map, v, n, &error);
	expect_error(name, r, &error, want, needle);
	sd_bus_error_free(&error);
	snprintf(unchanged, sizeof(unchanged), "%s: nothing changed", name);
	expect_u64(bus, unchanged, path, IOD_SESSION_INTERFACE, "Mappings", 'u', before);
}

#define N_EVENTS(v) (sizeof(v) / sizeof((v)[0]))

/* Region [0x100000, 0x110000): the checks before the kernel (the bus tier has no
 * /dev/iommu, so a batch that passes them all ends in NoIommufd; the guest tier,
 * tests/vm/test-daemon-adopt.c, maps for real). */
static void test_batch_validation(sd_bus *bus)
{
	static const struct event unaligned_iova[] = {{0x10000, 0x100000, 0x1000},
						      {0x20800, 0x101000, 0x1000}};
	static const struct event unaligned_gpa[] = {{0x10000, 0x100800, 0x1000}};
	static const struct event empty_entry[] = {{0x10000, 0x100000, 0x1000},
						   {0x20000, 0x101000, 0}};
	static const struct event overflow[] = {{0x10000, 0x100000, 0x1000},
						{0x20000, 0x101000, 0x1000},
						{UINT64_MAX - 0xfff, 0x102000, 0x2000}};
	static const struct event gpa_overflow[] = {{0x10000, UINT64_MAX - 0xfff, 0x2000}};
	static const struct event outside[] = {{0x10000, 0x100000, 0x1000},
					       {0x20000, 0x10f000, 0x2000}};
	static const struct event inside_overlap[] = {{0x10000, 0x100000, 0x2000},
						      {0x30000, 0x102000, 0x1000},
						      {0x11000, 0x104000, 0x1000}};
	static const struct event same_twice[] = {{0x40000, 0x100000, 0x1000},
						  {0x40000, 0x100000, 0x1000}};
	/* aliases: several IOVAs may translate to one GPA */
	static const struct event at_limit[LIMIT_MAPPINGS] = {{0x10000, 0x100000, 0x1000},
							      {0x11000, 0x100000, 0x1000},
							      {0x12000, 0x101000, 0x1000},
							      {0x20000, 0x102000, 0x4000}};
	static const struct event over_limit[LIMIT_MAPPINGS + 1] = {{0x10000, 0x100000, 0x1000},
								    {0x11000, 0x101000, 0x1000},
								    {0x12000, 0x102000, 0x1000},
								    {0x13000, 0x103000, 0x1000},
								    {0x14000, 0x104000, 0x1000}};
	static const struct event unmap_unaligned[] = {{0x10000, 0, 0x1000}, {0x20000, 0, 0x800}};
	static const struct event unmap_empty_entry[] = {{0x10000, 0, 0}};
	static const struct event unmap_overflow[] = {{0x10000, 0, 0x1000},
						      {UINT64_MAX - 0xfff, 0, 0x2000}};
	static const struct event unmap_nothing[] = {{0x10000, 0, 0x1000}, {0x0, 0, 0x100000}};
	int mem = make_memfd(65536, false);
	char path[256];

	session_path("batch", path, sizeof(path));
	create(bus, "batch: create viommu session", "batch", true, "keep");
	sd_bus_message_unref(call_ok(bus, "batch: region at 1 MiB", path, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", mem, (uint64_t)0, (uint64_t)65536,
				     (uint64_t)0x100000));

	batch_ok(bus, "batch: empty MapBatch succeeds", path, true, NULL, 0);
	batch_ok(bus, "batch: empty UnmapBatch succeeds", path, false, NULL, 0);
	expect_u64(bus, "batch: empty batches map nothing", path, IOD_SESSION_INTERFACE, "Mappings",
		   'u', 0);

	batch_err(bus, "map batch: unaligned iova", E_INVALID_ARGS, "maps[1]: iova 0x20800", path,
		  true, unaligned_iova, N_EVENTS(unaligned_iova));
	batch_err(bus, "map batch: unaligned gpa", E_INVALID_ARGS, "maps[0]: gpa 0x100800", path,
		  true, unaligned_gpa, N_EVENTS(unaligned_gpa));
	batch_err(bus, "map batch: size 0", E_INVALID_ARGS, "maps[1]: size must not be 0", path,
		  true, empty_entry, N_EVENTS(empty_entry));
	batch_err(bus, "map batch: iova + size overflows", E_PREFIX "InvalidRange", "maps[2]: iova",
		  path, true, overflow, N_EVENTS(overflow));
	batch_err(bus, "map batch: gpa + size overflows", E_PREFIX "InvalidRange", "maps[0]: gpa",
		  path, true, gpa_overflow, N_EVENTS(gpa_overflow));
	batch_err(bus, "map batch: gpa outside guest memory", E_PREFIX "InvalidRange",
		  "maps[1]: GPA [0x10f000, 0x111000) is not inside one guest memory region", path,
		  true, outside, N_EVENTS(outside));
	batch_err(bus, "map batch: entries overlap each other", E_PREFIX "InvalidRange",
		  "maps[2]: IOVA [0x11000, 0x12000) overlaps maps[0]", path, true, inside_overlap,
		  N_EVENTS(inside_overlap));
	batch_err(bus, "map batch: the same entry twice", E_PREFIX "InvalidRange",
		  "maps[1]: IOVA [0x40000, 0x41000) overlaps maps[0]", path, true, same_twice,
		  N_EVENTS(same_twice));
	batch_err(bus, "map batch: more entries than the mappings limit", E_PREFIX "LimitExceeded",
		  "\"mappings\"", path, true, over_limit, N_EVENTS(over_limit));
	/* every check passed, the kernel is next */
	batch_err(bus, "map batch: a valid batch at the limit reaches the kernel",
		  E_PREFIX "NoIommufd", "/dev/iommu", path, true, at_limit, N_EVENTS(at_limit));

	batch_err(bus, "unmap batch: unaligned size", E_INVALID_ARGS, "ranges[1]: iova 0x20000",
		  path, false, unmap_unaligned, N_EVENTS(unmap_unaligned));
	batch_err(bus, "unmap batch: size 0", E_INVALID_ARGS, "ranges[0]: size must not be 0", path,
		  false, unmap_empty_entry, N_EVENTS(unmap_empty_entry));
	batch_err(bus, "unmap batch: iova + size overflows", E_PREFIX "InvalidRange",
		  "ranges[1]: iova", path, false, unmap_overflow, N_EVENTS(unmap_overflow));
	batch_err(bus, "unmap batch: more entries than the mappings limit",
		  E_PREFIX "LimitExceeded", "\"mappings\"", path, false, over_limit,
		  N_EVENTS(over_limit));
	batch_err(bus,
		  "unmap batch: nothing of it mapped is NotMapped (a retry can tell it is done)",
		  E_PREFIX "NotMapped", "any of the 2 ranges", path, false, unmap_nothing,
		  N_EVENTS(unmap_nothing));
	destroy(bus, "batch");

	session_path("flatbatch", path, sizeof(path));
	create(bus, "batch: create flat session", "flatbatch", false, "keep");
	batch_err(bus, "map batch: no vIOMMU", E_PREFIX "WrongMode", "viommu", path, true, at_limit,
		  1);
	batch_err(bus, "unmap batch: no vIOMMU", E_PREFIX "WrongMode", "viommu", path, false,
		  unmap_nothing, N_EVENTS(unmap_nothing));
	batch_err(bus, "map batch: no vIOMMU, even when empty", E_PREFIX "WrongMode", "viommu",
		  path, true, NULL, 0);
	destroy(bus, "flatbatch");
	close(mem);
}

/* --- the event channel --------------------------------------------------------------------- */

/* Send a raw packet of len bytes on the channel. */
static void channel_raw(int fd, const void *p, size_t len)
{
	if (send(fd, p, len, MSG_NOSIGNAL) != (ssize_t)len)
		abort();
}

/* A batch header with count entries, and the entries of v after it, into buf. */
static size_t channel_packet(void *buf, uint16_t type, uint64_t seq, const struct event *v,
			     size_t n)
{
	struct iod_event_batch b = {.version = IOD_EVENT_CHANNEL_VERSION,
				    .type = type,
				    .count = (uint32_t)n,
				    .seq = seq};
	struct iod_event_entry *e = (struct iod_event_entry *)((uint8_t *)buf + sizeof(b));

	memcpy(buf, &b, sizeof(b));
	for (size_t i = 0; i < n; i++)
		e[i] = (struct iod_event_entry){.iova = type == IOD_EVENT_MARK ? 0 : v[i].iova,
						.gpa = type == IOD_EVENT_UNMAP ? 0 : v[i].gpa,
						.length = v[i].size};
	return sizeof(b) + n * sizeof(*e);
}

/*
 * The next completion must be for seq, with error name want (NULL: success) whose message
 * holds needle, about entry; and the session's Mappings must not have changed.
 */
static void channel_expect(sd_bus *bus, const char *name, int fd, const char *path, uint64_t seq,
			   const char *want, const char *needle, uint32_t entry)
{
	struct iod_channel_completion c;
	int r = iod_channel_recv(fd, &c);

	if (r < 0)
		result(false, name, "no completion: %s", strerror(-r));
	else if (c.seq != seq)
		result(false, name, "completion for seq %" PRIu64 ", expected %" PRIu64, c.seq,
		       seq);
	else if (!want)
		result(c.error == 0, name, "%s: %s", c.name, c.message);
	else if (c.error >= 0 || strcmp(c.name, want) != 0)
		result(false, name, "got %s (%s), expected %s", c.error ? c.name : "success",
		       c.message, want);
	else if (needle && !strstr(c.message, needle))
		result(false, name, "message \"%s\" lacks \"%s\"", c.message, needle);
	else
		result(c.entry == entry, name, "entry %" PRIu32 ", expected %" PRIu32, c.entry,
		       entry);
	(void)bus;
	(void)path;
}

static int channel_open(sd_bus *bus, const char *name, const char *path, uint64_t *last)
{
	int fd = -1, r = iod_channel_open(bus, path, &fd, last);

	result(r >= 0, name, "%s", strerror(-r));
	return r >= 0 ? fd : -1;
}

/* The peer closed the channel: a read sees the end (or a reset). */
static bool channel_closed(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	struct iod_channel_completion c;

	if (poll(&p, 1, 5000) <= 0)
		return false;
	return iod_channel_recv(fd, &c) == -ECONNRESET;
}

/* Region [0x100000, 0x110000), as test_batch_validation; a batch that passes every check
 * ends in NoIommufd here (the guest tier applies them for real). */
static void test_event_channel(sd_bus *bus)
{
	static const struct event unaligned_iova[] = {{0x10000, 0x100000, 0x1000},
						      {0x20800, 0x101000, 0x1000}};
	static const struct event outside[] = {{0x10000, 0x100000, 0x1000},
					       {0x20000, 0x10f000, 0x2000}};
	static const struct event overlap[] = {{0x10000, 0x100000, 0x2000},
					       {0x30000, 0x102000, 0x1000},
					       {0x11000, 0x104000, 0x1000}};
	static const struct event over_limit[LIMIT_MAPPINGS + 1] = {{0x10000, 0x100000, 0x1000},
								    {0x11000, 0x101000, 0x1000},
								    {0x12000, 0x102000, 0x1000},
								    {0x13000, 0x103000, 0x1000},
								    {0x14000, 0x104000, 0x1000}};
	static const struct event good[] = {{0x10000, 0x100000, 0x1000}};
	static const struct event unmap_nothing[] = {{0x10000, 0, 0x1000}};
	static uint8_t buf[IOD_EVENT_MAX_BATCH_BYTES + 64] __attribute__((aligned(8)));
	struct iod_event_batch *b = (struct iod_event_batch *)buf;
	int mem = make_memfd(65536, false), fd, fd2;
	uint64_t last = UINT64_MAX;
	char path[256];
	size_t len;

	session_path("chan", path, sizeof(path));
	create(bus, "channel: create viommu session", "chan", true, "keep");
	sd_bus_message_unref(call_ok(bus, "channel: region at 1 MiB", path, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", mem, (uint64_t)0, (uint64_t)65536,
				     (uint64_t)0x100000));
	call_err(bus, "channel: unknown option", E_INVALID_ARGS, "nope", path,
		 IOD_SESSION_INTERFACE, "OpenEventChannel", "a{sv}", 1, "nope", "b", 1);
	fd = channel_open(bus, "channel: the owner opens it", path, &last);
	result(last == 0, "channel: a new session has applied no batch", "last %" PRIu64, last);
	if (fd < 0)
		goto out;

	/* The batch checks, with the entry named as in MapBatch ("maps[1]" there). */
	len = channel_packet(buf, IOD_EVENT_MAP, 1, unaligned_iova, N_EVENTS(unaligned_iova));
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: unaligned iova names entries[1]", fd, path, 1, E_INVALID_ARGS,
		       "entries[1]: iova 0x20800", 1);
	len = channel_packet(buf, IOD_EVENT_MAP, 2, outside, N_EVENTS(outside));
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: gpa outside guest memory", fd, path, 2,
		       E_PREFIX "InvalidRange", "entries[1]: GPA [0x10f000, 0x111000)", 1);
	len = channel_packet(buf, IOD_EVENT_MAP, 3, overlap, N_EVENTS(overlap));
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: entries overlap each other", fd, path, 3,
		       E_PREFIX "InvalidRange", "entries[2]: IOVA [0x11000, 0x12000) overlaps", 2);
	len = channel_packet(buf, IOD_EVENT_MAP, 4, over_limit, N_EVENTS(over_limit));
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: more entries than the mappings limit", fd, path, 4,
		       E_PREFIX "LimitExceeded", "\"mappings\"", IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 5, good, 1);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: a valid batch reaches the kernel", fd, path, 5,
		       E_PREFIX "NoIommufd", "/dev/iommu", IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_UNMAP, 6, unmap_nothing, 1);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: unmap of nothing is NotMapped", fd, path, 6,
		       E_PREFIX "NotMapped", NULL, IOD_EVENT_NO_ENTRY);

	/* The frame. */
	channel_raw(fd, buf, 10);
	channel_expect(bus, "channel: a packet shorter than a header", fd, path, 0, E_INVALID_ARGS,
		       "header of 24 bytes", IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 7, good, 1);
	b->version = 2;
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: another version", fd, path, 7,
		       "org.freedesktop.DBus.Error.NotSupported", "version", IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 71, good, 1);
	b->version = 2;
	channel_raw(fd, buf, 10);
	channel_expect(bus, "channel: another version is checked first, whatever the size", fd,
		       path, 0, "org.freedesktop.DBus.Error.NotSupported", "version",
		       IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, UINT64_MAX, good, 1);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: seq 2^64 - 1 (nothing could follow it)", fd, path, UINT64_MAX,
		       E_INVALID_ARGS, "seq 0xffffffffffffffff", IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, 4, 8, good, 1);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: an unknown type", fd, path, 8, E_INVALID_ARGS, "type 4",
		       IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 9, good, 1);
	b->flags = 0x4;
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: unknown flags", fd, path, 9, E_INVALID_ARGS, "flags 0x4",
		       IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 10, good, 1);
	b->reserved = 1;
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: reserved not 0", fd, path, 10, E_INVALID_ARGS, "reserved 0x1",
		       IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 11, good, 0);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: an empty batch", fd, path, 11, E_INVALID_ARGS, "count 0",
		       IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 12, good, 1);
	channel_raw(fd, buf, len + 8);
	channel_expect(bus, "channel: trailing bytes after the entries", fd, path, 12,
		       E_INVALID_ARGS, "1 entries in 56 bytes (want 48)", IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 13, good, 1);
	b->count = 2;
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: a count larger than the entries sent", fd, path, 13,
		       E_INVALID_ARGS, "2 entries in 48 bytes", IOD_EVENT_NO_ENTRY);
	memset(buf, 0, sizeof(buf));
	len = channel_packet(buf, IOD_EVENT_MAP, 14, good, 1);
	b->count = IOD_EVENT_MAX_ENTRIES + 1;
	channel_raw(fd, buf, sizeof(*b) + (IOD_EVENT_MAX_ENTRIES + 1) * 24);
	channel_expect(bus, "channel: a packet over the largest batch", fd, path, 0, E_INVALID_ARGS,
		       "at most 1024 entries", IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MAP, 0, good, 1);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: seq 0", fd, path, 0, E_INVALID_ARGS, "seq 0",
		       IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_UNMAP, 15, unmap_nothing, 1);
	((struct iod_event_entry *)(buf + sizeof(*b)))[0].gpa = 0x1000;
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel: an unmap with a gpa names its entry", fd, path, 15,
		       E_INVALID_ARGS, "entries[0]: gpa 0x1000", 0);
	expect_u64(bus, "channel: bad batches changed nothing", path, IOD_SESSION_INTERFACE,
		   "Mappings", 'u', 0);
	expect_u64(bus, "channel: no batch applied", path, IOD_SESSION_INTERFACE, "EventSequence",
		   't', 0);

	/* Pipelined: many batches sent before any completion is read; the daemon stops
	 * reading while its completions wait, and still answers on the bus. */
	{
		unsigned sent = 0, got = 0, in_order = 0;
		struct iod_channel_completion c;
		int fl = fcntl(fd, F_GETFL);

		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
		len = channel_packet(buf, IOD_EVENT_MAP, 0, over_limit, N_EVENTS(over_limit));
		for (;;) {
			b->seq = 100 + sent;
			if (send(fd, buf, len, MSG_NOSIGNAL) < 0)
				break;
			if (++sent == 20000)
				break;
		}
		expect_u64(bus, "channel: the daemon answers on the bus while a channel is full",
			   path, IOD_SESSION_INTERFACE, "Mappings", 'u', 0);
		fcntl(fd, F_SETFL, fl);
		while (got < sent && iod_channel_recv(fd, &c) == 0) {
			in_order += c.seq == 100 + got && c.error == -ENOSPC;
			got++;
		}
		result(sent > 100 && got == sent && in_order == sent,
		       "channel: every pipelined batch completes, in order",
		       "%u sent, %u "
		       "completed, %u in order",
		       sent, got, in_order);
		if (got && c.error != -ENOSPC)
			printf("# last completion: %d %s %s\n", c.error, c.name, c.message);
	}

	/* A second channel replaces the first; Destroy closes it. */
	fd2 = channel_open(bus, "channel: open a second one", path, NULL);
	result(channel_closed(fd), "channel: the first one is closed", "still open");
	len = channel_packet(buf, IOD_EVENT_MAP, 20001, good, 1);
	if (fd2 >= 0) {
		channel_raw(fd2, buf, len);
		channel_expect(bus, "channel: the second one works", fd2, path, 20001,
			       E_PREFIX "NoIommufd", NULL, IOD_EVENT_NO_ENTRY);
	}
	destroy(bus, "chan");
	result(fd2 >= 0 && channel_closed(fd2), "channel: Destroy closes it", "still open");
	if (fd2 >= 0)
		close(fd2);
	close(fd);

	session_path("flatchan", path, sizeof(path));
	create(bus, "channel: create flat session", "flatchan", false, "keep");
	fd = channel_open(bus, "channel: a flat session opens one", path, NULL);
	if (fd >= 0) {
		len = channel_packet(buf, IOD_EVENT_MAP, 1, good, 1);
		channel_raw(fd, buf, len);
		channel_expect(bus, "channel: no vIOMMU", fd, path, 1, E_PREFIX "WrongMode",
			       "viommu", IOD_EVENT_NO_ENTRY);
		/* The client goes away: the daemon closes its end and goes on. */
		close(fd);
	}
	expect_u64(bus, "channel: a closed channel leaves the session", path, IOD_SESSION_INTERFACE,
		   "Mappings", 'u', 0);
	/* A client that shuts down its writing side ends the channel: the daemon closes it
	 * (rather than answering empty reads for ever). */
	fd = channel_open(bus, "channel: open one more", path, NULL);
	if (fd >= 0) {
		/* First fill it until the daemon waits for room for a completion, and drain
		 * it: the end must be seen after that wait too. */
		struct iod_channel_completion c;
		int fl = fcntl(fd, F_GETFL);
		unsigned sent = 0, got = 0;

		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
		len = channel_packet(buf, IOD_EVENT_MAP, 1, good, 1);
		while (sent < 20000) {
			b->seq = 1 + sent;
			if (send(fd, buf, len, MSG_NOSIGNAL) < 0)
				break;
			sent++;
		}
		fcntl(fd, F_SETFL, fl);
		while (got < sent && iod_channel_recv(fd, &c) == 0)
			got++;
		printf("# full channel: %u batches sent before the socket was full\n", sent);
		result(got == sent, "channel: a full channel drains", "%u of %u", got, sent);
		shutdown(fd, SHUT_WR);
		result(channel_closed(fd), "channel: shutdown of the client's side ends it",
		       "still open");
		close(fd);
	}
	destroy(bus, "flatchan");
out:
	close(mem);
}

/* --- tracking and harvest ------------------------------------------------------------------ */

static void test_harvest(sd_bus *bus)
{
	struct iod_dirty_log *log = NULL;
	sd_bus_message *reply;
	uint64_t round = 0, dirty = 9, usec, n;
	int fd = -1, precise = 0, truncated = 1, mem = make_memfd(2 * 65536, false);
	char path[256];
	void *p;

	session_path("hv", path, sizeof(path));
	create(bus, "harvest: create", "hv", true, "keep");
	sd_bus_message_unref(call_ok(bus, "harvest: memory", path, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", mem, 0, 2 * 65536, 0x200000));

	call_err(bus, "harvest: before Start", E_PREFIX "NotTracking", "Start", path,
		 IOD_SESSION_INTERFACE, "Harvest", "a{sv}", 0);
	call_err(bus, "harvest: unknown option", E_INVALID_ARGS, "Unknown option", path,
		 IOD_SESSION_INTERFACE, "Harvest", "a{sv}", 1, "clear", "b", 1);
	sd_bus_message_unref(call_ok(bus, "start", path, IOD_SESSION_INTERFACE, "Start", NULL));
	sd_bus_message_unref(
		call_ok(bus, "start again is a no-op", path, IOD_SESSION_INTERFACE, "Start", NULL));
	expect_string(bus, "start: state", path, IOD_SESSION_INTERFACE, "State", "tracking");

	reply = call_ok(bus, "harvest: round 1", path, IOD_SESSION_INTERFACE, "Harvest", "a{sv}",
			0);
	if (reply &&
	    sd_bus_message_read(reply, "thtbt", &round, &fd, &dirty, &precise, &usec) >= 0) {
		result(round == 1 && dirty == 0 && precise, "harvest: round 1 result",
		       "round %" PRIu64 " dirty %" PRIu64 " precise %d", round, dirty, precise);
		n = (uint64_t)iod_log_open_fd_ro(fd, &log);
		result(log, "harvest: the log fd is a valid log (the client library's reader)",
		       "%s", iod_strerror((int)n));
		if (log) {
			const struct iod_log_region *g = iod_log_region(log, 0);

			result(iod_log_region_count(log) == 1 && iod_log_page_shift(log) == 12 &&
				       iod_log_rounds(log) == 1,
			       "harvest: log region table",
			       "%zu regions, shift %u, rounds %" PRIu64, iod_log_region_count(log),
			       iod_log_page_shift(log), iod_log_rounds(log));
			result(g && g->gpa == 0x200000 && g->length == 2 * 65536,
			       "harvest: log region", "gpa %" PRIx64, g ? g->gpa : 0);
			result(iod_log_mark(log, 0x200000, 4096) == -EROFS,
			       "harvest: the reader refuses to change the log", "");
			iod_log_free(log);
		}
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		result(p == MAP_FAILED && errno == EACCES, "harvest: the log fd is read-only",
		       "mmap for writing: %s", p == MAP_FAILED ? strerror(errno) : "succeeded");
		if (p != MAP_FAILED)
			munmap(p, 4096);
	}
	sd_bus_message_unref(reply);
	expect_u64(bus, "harvest: pending round", path, IOD_SESSION_INTERFACE, "PendingRound", 't',
		   1);
	expect_u64(bus, "harvest: rounds", path, IOD_SESSION_INTERFACE, "Rounds", 't', 1);

	reply = call_ok(bus, "harvest: peek", path, IOD_SESSION_INTERFACE, "Harvest", "a{sv}", 1,
			"peek", "b", 1);
	if (reply && sd_bus_message_read(reply, "thtbt", &round, &fd, &dirty, &precise, &usec) >= 0)
		result(round == 1, "harvest: peek starts no round", "round %" PRIu64, round);
	sd_bus_message_unref(reply);

	call_err(bus, "acknowledge: round 0", E_INVALID_ARGS, NULL, path, IOD_SESSION_INTERFACE,
		 "Acknowledge", "t", (uint64_t)0);
	call_err(bus, "acknowledge: wrong round", E_PREFIX "NoSuchRound", "round 1", path,
		 IOD_SESSION_INTERFACE, "Acknowledge", "t", (uint64_t)7);
	reply = call_ok(bus, "harvest: round 2 without acknowledging", path, IOD_SESSION_INTERFACE,
			"Harvest", "a{sv}", 0);
	sd_bus_message_unref(reply);
	call_err(bus, "acknowledge: a merged round", E_PREFIX "NoSuchRound", "round 2", path,
		 IOD_SESSION_INTERFACE, "Acknowledge", "t", (uint64_t)1);
	sd_bus_message_unref(call_ok(bus, "acknowledge: round 2", path, IOD_SESSION_INTERFACE,
				     "Acknowledge", "t", (uint64_t)2));
	expect_u64(bus, "acknowledge: nothing pending", path, IOD_SESSION_INTERFACE, "PendingRound",
		   't', 0);

	call_err(bus, "ranges: bad space", E_INVALID_ARGS, "\"gpa\" or \"iova\"", path,
		 IOD_SESSION_INTERFACE, "HarvestRanges", "a{sv}", 1, "space", "s", "hpa");
	call_err(bus, "ranges: max_ranges 0", E_INVALID_ARGS, "at least 1", path,
		 IOD_SESSION_INTERFACE, "HarvestRanges", "a{sv}", 1, "max_ranges", "u", 0);
	call_err(bus, "ranges: max_ranges over the limit", E_PREFIX "LimitExceeded", "ranges", path,
		 IOD_SESSION_INTERFACE, "HarvestRanges", "a{sv}", 1, "max_ranges", "u",
		 LIMIT_RANGES + 1);
	reply = call_ok(bus, "ranges: iova space", path, IOD_SESSION_INTERFACE, "HarvestRanges",
			"a{sv}", 2, "space", "s", "iova", "max_ranges", "u", LIMIT_RANGES);
	if (reply) {
		int r = sd_bus_message_read(reply, "t", &round);

		if (r >= 0)
			r = sd_bus_message_enter_container(reply, 'a', "(tt)");
		for (n = 0; r > 0 && (r = sd_bus_message_skip(reply, "(tt)")) > 0;)
			n++;
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
		if (r >= 0)
			r = sd_bus_message_read(reply, "btbt", &truncated, &dirty, &precise, &usec);
		result(r >= 0 && round == 3 && n == 0 && !truncated && dirty == 0 && precise,
		       "ranges: empty round", "r %d round %" PRIu64 " n %" PRIu64, r, round, n);
	}
	sd_bus_message_unref(reply);
	expect_u64(bus, "ranges: the round stays pending until the client acknowledges it", path,
		   IOD_SESSION_INTERFACE, "PendingRound", 't', 3);
	sd_bus_message_unref(call_ok(bus, "ranges: Acknowledge the round", path,
				     IOD_SESSION_INTERFACE, "Acknowledge", "t", (uint64_t)3));
	expect_u64(bus, "ranges: nothing pending after Acknowledge", path, IOD_SESSION_INTERFACE,
		   "PendingRound", 't', 0);

	reply = call_ok(bus, "DumpState as root", IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			"DumpState", NULL);
	if (reply) {
		const char *json = NULL;

		(void)sd_bus_message_read(reply, "s", &json);
		result(json && strstr(json, "\"name\":\"hv\"") && strstr(json, "\"hv/log\"") &&
			       strstr(json, "\"gpa\":\"0x200000\""),
		       "DumpState: names the session, its log and its memory", "%s", json);
	}
	sd_bus_message_unref(reply);

	sd_bus_message_unref(call_ok(bus, "stop", path, IOD_SESSION_INTERFACE, "Stop", NULL));
	sd_bus_message_unref(
		call_ok(bus, "stop again is a no-op", path, IOD_SESSION_INTERFACE, "Stop", NULL));
	call_err(bus, "harvest: after Stop", E_PREFIX "NotTracking", NULL, path,
		 IOD_SESSION_INTERFACE, "Harvest", "a{sv}", 0);
	sd_bus_message_unref(call_ok(bus, "destroy via Session1.Destroy", path,
				     IOD_SESSION_INTERFACE, "Destroy", NULL));
	call_err(bus, "destroy: the object is gone", "org.freedesktop.DBus.Error.UnknownObject",
		 NULL, path, IOD_SESSION_INTERFACE, "Start", NULL);
	close(mem);
}

/* --- limits -------------------------------------------------------------------------------- */

/* The dirty GPA ranges of the current round (HarvestRanges in GPA space) as "gpa+len," text. */
static void ranges_text(sd_bus *bus, const char *name, const char *path, char *buf, size_t size,
			uint64_t *ret_round)
{
	sd_bus_message *reply;
	uint64_t gpa, len;
	size_t at = 0;
	int r;

	buf[0] = 0;
	reply = call_ok(bus, name, path, IOD_SESSION_INTERFACE, "HarvestRanges", "a{sv}", 1,
			"space", "s", "gpa");
	if (!reply)
		return;
	r = sd_bus_message_read(reply, "t", ret_round);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "(tt)");
	while (r > 0 && (r = sd_bus_message_read(reply, "(tt)", &gpa, &len)) > 0 && at < size)
		at += (size_t)snprintf(buf + at, size - at, "0x%" PRIx64 "+0x%" PRIx64 ",", gpa,
				       len);
	sd_bus_message_unref(reply);
}

/* MarkDirty: a client's own writes, validated whole, in the next round and nowhere else. */
static void test_mark_dirty(sd_bus *bus)
{
	int mem = make_memfd(2 * 65536, false);
	uint64_t round = 0;
	char path[256], got[512];

	session_path("mark", path, sizeof(path));
	create(bus, "mark: create", "mark", true, "destroy");
	sd_bus_message_unref(call_ok(bus, "mark: memory", path, IOD_SESSION_INTERFACE, "AddMemory",
				     "httt", mem, 0, 2 * 65536, 0x200000));
	call_err(bus, "mark: before Start", E_PREFIX "NotTracking", "Start", path,
		 IOD_SESSION_INTERFACE, "MarkDirty", "a(tt)", 1, (uint64_t)0x200000,
		 (uint64_t)0x1000);
	sd_bus_message_unref(
		call_ok(bus, "mark: start", path, IOD_SESSION_INTERFACE, "Start", NULL));

	/* each bad entry is named, and the good entries before it are not marked */
	call_err(bus, "mark: unaligned", E_INVALID_ARGS, "ranges[1]: gpa 0x200800", path,
		 IOD_SESSION_INTERFACE, "MarkDirty", "a(tt)", 2, (uint64_t)0x200000,
		 (uint64_t)0x1000, (uint64_t)0x200800, (uint64_t)0x1000);
	call_err(bus, "mark: size 0", E_INVALID_ARGS, "ranges[0]: size must not be 0", path,
		 IOD_SESSION_INTERFACE, "MarkDirty", "a(tt)", 1, (uint64_t)0x200000, (uint64_t)0);
	call_err(bus, "mark: overflow", E_PREFIX "InvalidRange", "ranges[0]", path,
		 IOD_SESSION_INTERFACE, "MarkDirty", "a(tt)", 1, UINT64_C(0xfffffffffffff000),
		 (uint64_t)0x2000);
	call_err(bus, "mark: outside the memory", E_PREFIX "InvalidRange",
		 "ranges[2]: GPA range [0x220000, +0x1000) is not inside one region", path,
		 IOD_SESSION_INTERFACE, "MarkDirty", "a(tt)", 3, (uint64_t)0x200000,
		 (uint64_t)0x1000, (uint64_t)0x201000, (uint64_t)0x1000, (uint64_t)0x220000,
		 (uint64_t)0x1000);
	call_err(bus, "mark: across the end of the memory", E_PREFIX "InvalidRange", "ranges[0]",
		 path, IOD_SESSION_INTERFACE, "MarkDirty", "a(tt)", 1, (uint64_t)0x21f000,
		 (uint64_t)0x2000);
	ranges_text(bus, "mark: refused calls marked nothing", path, got, sizeof(got), &round);
	result(got[0] == 0, "mark: refused calls left the round empty", "round %" PRIu64 ": %s",
	       round, got);
	sd_bus_message_unref(call_ok(bus, "mark: acknowledge the empty round", path,
				     IOD_SESSION_INTERFACE, "Acknowledge", "t", round));

	/* overlapping and adjacent ranges merge; an empty array is a no-op */
	sd_bus_message_unref(call_ok(bus, "mark: no ranges", path, IOD_SESSION_INTERFACE,
				     "MarkDirty", "a(tt)", 0));
	sd_bus_message_unref(call_ok(bus, "mark: three ranges", path, IOD_SESSION_INTERFACE,
				     "MarkDirty", "a(tt)", 3, (uint64_t)0x200000, (uint64_t)0x1000,
				     (uint64_t)0x204000, (uint64_t)0x2000, (uint64_t)0x205000,
				     (uint64_t)0x2000));
	sd_bus_message_unref(call_ok(bus, "mark: the last page", path, IOD_SESSION_INTERFACE,
				     "MarkDirty", "a(tt)", 1, (uint64_t)0x21f000,
				     (uint64_t)0x1000));
	ranges_text(bus, "mark: harvest", path, got, sizeof(got), &round);
	result(strcmp(got, "0x200000+0x1000,0x204000+0x3000,0x21f000+0x1000,") == 0,
	       "mark: the round has exactly the marked pages", "round %" PRIu64 ": %s", round, got);
	sd_bus_message_unref(call_ok(bus, "mark: acknowledge", path, IOD_SESSION_INTERFACE,
				     "Acknowledge", "t", round));
	ranges_text(bus, "mark: next harvest", path, got, sizeof(got), &round);
	result(got[0] == 0, "mark: acknowledged marks are gone from the next round",
	       "round %" PRIu64 ": %s", round, got);
	destroy(bus, "mark");
	close(mem);
}

/*
 * A mark batch on the event channel: MarkDirty's checks and semantics, the entry named in the
 * completion, nothing marked by a refused batch, and the next round has exactly the pages
 * of the accepted ones (with those of MarkDirty on the bus).
 */
static void test_channel_mark(sd_bus *bus)
{
	static const struct event one[] = {{0, 0x200000, 0x1000}};
	static const struct event unaligned[] = {{0, 0x200000, 0x1000}, {0, 0x200800, 0x1000}};
	static const struct event empty[] = {{0, 0x200000, 0}};
	static const struct event overflow[] = {{0, 0x200000, 0x1000},
						{0, UINT64_C(0xfffffffffffff000), 0x2000}};
	static const struct event outside[] = {
		{0, 0x200000, 0x1000}, {0, 0x201000, 0x1000}, {0, 0x220000, 0x1000}};
	static const struct event across[] = {{0, 0x21f000, 0x2000}};
	static const struct event last_page[] = {{0, 0x21f000, 0x1000}};
	static uint8_t buf[IOD_EVENT_MAX_BATCH_BYTES + 64] __attribute__((aligned(8)));
	struct iod_event_batch *b = (struct iod_event_batch *)buf;
	struct iod_event_entry *e = (struct iod_event_entry *)(buf + sizeof(*b));
	int mem = make_memfd(2 * 65536, false), fd;
	uint64_t round = 0, last = 0;
	char path[256], got[512];
	size_t len;

	session_path("chanmark", path, sizeof(path));
	create(bus, "channel mark: create", "chanmark", true, "destroy");
	sd_bus_message_unref(call_ok(bus, "channel mark: memory", path, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", mem, 0, 2 * 65536, 0x200000));
	fd = channel_open(bus, "channel mark: open the channel", path, &last);
	if (fd < 0)
		goto out;
	len = channel_packet(buf, IOD_EVENT_MARK, 1, one, 1);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel mark: before Start", fd, path, 1, E_PREFIX "NotTracking",
		       "Start", IOD_EVENT_NO_ENTRY);
	sd_bus_message_unref(
		call_ok(bus, "channel mark: start", path, IOD_SESSION_INTERFACE, "Start", NULL));

	/* Each bad entry is named; the good entries before it are not marked. */
	len = channel_packet(buf, IOD_EVENT_MARK, 2, unaligned, N_EVENTS(unaligned));
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel mark: unaligned names entries[1]", fd, path, 2, E_INVALID_ARGS,
		       "entries[1]: gpa 0x200800", 1);
	len = channel_packet(buf, IOD_EVENT_MARK, 3, empty, 1);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel mark: length 0", fd, path, 3, E_INVALID_ARGS,
		       "entries[0]: size must not be 0", 0);
	len = channel_packet(buf, IOD_EVENT_MARK, 4, overflow, N_EVENTS(overflow));
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel mark: overflow", fd, path, 4, E_PREFIX "InvalidRange",
		       "entries[1]", 1);
	len = channel_packet(buf, IOD_EVENT_MARK, 5, outside, N_EVENTS(outside));
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel mark: outside the memory", fd, path, 5,
		       E_PREFIX "InvalidRange",
		       "entries[2]: GPA range [0x220000, +0x1000) is not inside one region", 2);
	len = channel_packet(buf, IOD_EVENT_MARK, 6, across, 1);
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel mark: across the end of the memory", fd, path, 6,
		       E_PREFIX "InvalidRange", "entries[0]", 0);
	len = channel_packet(buf, IOD_EVENT_MARK, 7, unaligned, N_EVENTS(unaligned));
	e[1] = (struct iod_event_entry){.iova = 0x1000, .gpa = 0x201000, .length = 0x1000};
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel mark: an iova in a mark names its entry", fd, path, 7,
		       E_INVALID_ARGS, "entries[1]: iova 0x1000 in a mark (must be 0)", 1);
	len = channel_packet(buf, IOD_EVENT_MARK, 8, one, 1);
	b->flags = 0x1;
	channel_raw(fd, buf, len);
	channel_expect(bus, "channel mark: unknown flags", fd, path, 8, E_INVALID_ARGS, "flags 0x1",
		       IOD_EVENT_NO_ENTRY);
	len = channel_packet(buf, IOD_EVENT_MARK, 9, one, 1);
	channel_raw(fd, buf, len + 24);
	channel_expect(bus, "channel mark: trailing data after the entries", fd, path, 9,
		       E_INVALID_ARGS, "1 entries in 72 bytes (want 48)", IOD_EVENT_NO_ENTRY);
	memset(buf, 0, sizeof(buf));
	len = channel_packet(buf, IOD_EVENT_MARK, 10, one, 1);
	b->count = IOD_EVENT_MAX_ENTRIES + 1;
	for (uint32_t i = 0; i < b->count; i++)
		e[i] = (struct iod_event_entry){.gpa = 0x200000, .length = 0x1000};
	channel_raw(fd, buf, sizeof(*b) + (IOD_EVENT_MAX_ENTRIES + 1) * sizeof(*e));
	channel_expect(bus, "channel mark: too many entries", fd, path, 0, E_INVALID_ARGS,
		       "at most 1024 entries", IOD_EVENT_NO_ENTRY);
	expect_u64(bus, "channel mark: refused batches applied nothing", path,
		   IOD_SESSION_INTERFACE, "EventSequence", 't', 0);
	ranges_text(bus, "channel mark: harvest after the refusals", path, got, sizeof(got),
		    &round);
	result(got[0] == 0, "channel mark: refused batches marked nothing", "round %" PRIu64 ": %s",
	       round, got);
	sd_bus_message_unref(call_ok(bus, "channel mark: acknowledge the empty round", path,
				     IOD_SESSION_INTERFACE, "Acknowledge", "t", round));

	/* Accepted: the channel's marks and the bus's in the next round, and nothing else. */
	{
		static const struct iod_range written[] = {
			{0x200000, 0x1000}, {0x204000, 0x2000}, {0x205000, 0x2000}};
		int r = iod_channel_mark(fd, 11, written, 0);

		result(r == -EINVAL, "channel mark: the library refuses an empty batch", "%d", r);
		r = iod_channel_mark(fd, 11, written, ELEMENTSOF(written));
		result(r == 0, "channel mark: iod_channel_mark() sends three ranges", "%s",
		       strerror(-r));
	}
	channel_expect(bus, "channel mark: three ranges", fd, path, 11, NULL, NULL,
		       IOD_EVENT_NO_ENTRY);
	expect_u64(bus, "channel mark: the batch's seq is the session's", path,
		   IOD_SESSION_INTERFACE, "EventSequence", 't', 11);
	sd_bus_message_unref(call_ok(bus, "channel mark: the last page on the bus", path,
				     IOD_SESSION_INTERFACE, "MarkDirty", "a(tt)", 1,
				     (uint64_t)0x21f000, (uint64_t)0x1000));
	ranges_text(bus, "channel mark: harvest", path, got, sizeof(got), &round);
	result(strcmp(got, "0x200000+0x1000,0x204000+0x3000,0x21f000+0x1000,") == 0,
	       "channel mark: the round has exactly the marked pages", "round %" PRIu64 ": %s",
	       round, got);
	sd_bus_message_unref(call_ok(bus, "channel mark: acknowledge", path, IOD_SESSION_INTERFACE,
				     "Acknowledge", "t", round));
	/* A resend of an applied batch is a replay: nothing is marked again. */
	len = channel_packet(buf, IOD_EVENT_MARK, 11, last_page, 1);
	channel_raw(fd, buf, len);
	{
		struct iod_channel_completion c;
		int r = iod_channel_recv(fd, &c);

		result(r == 0 && c.seq == 11 && c.error == 0 &&
			       (c.flags & IOD_EVENT_COMPLETION_REPLAYED),
		       "channel mark: a resent batch is a replay",
		       "r %d seq %" PRIu64 " error %d flags 0x%x", r, r == 0 ? c.seq : 0,
		       r == 0 ? c.error : 0, r == 0 ? c.flags : 0);
	}
	ranges_text(bus, "channel mark: next harvest", path, got, sizeof(got), &round);
	result(got[0] == 0,
	       "channel mark: the replay marked nothing, the acknowledged marks are gone",
	       "round %" PRIu64 ": %s", round, got);
	close(fd);
out:
	destroy(bus, "chanmark");
	close(mem);
}

/* GetDirtyRate: its options are checked before anything; a session without a HWPT has a
 * rate of zero, with samples. The exact numbers are the guest tier's
 * (tests/vm/test-daemon-rate.c). */
static void rate_call(sd_bus *bus, const char *name, const char *path, uint64_t want_samples)
{
	uint64_t window = 1, samples = 9, dirty = 9, pps = 9, ws = 9;
	sd_bus_message *reply;
	int precise = 0;

	reply = call_ok(bus, NULL, path, IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 2,
			"interval_usec", "t", (uint64_t)20000, "window_usec", "t",
			(uint64_t)20000000);
	if (!reply)
		return;
	if (sd_bus_message_read(reply, "tttttb", &window, &samples, &dirty, &pps, &ws, &precise) <
		    0 ||
	    sd_bus_message_enter_container(reply, 'a', "(uaottt)") < 0) {
		result(false, name, "reply of the wrong type");
	} else {
		result(samples >= want_samples && (samples == 0) == (window == 0) && dirty == 0 &&
			       pps == 0 && ws == 0 && precise &&
			       sd_bus_message_at_end(reply, false) > 0,
		       name,
		       "window %" PRIu64 " samples %" PRIu64 " dirty %" PRIu64 " rate %" PRIu64
		       " working set %" PRIu64 " precise %d",
		       window, samples, dirty, pps, ws, precise);
	}
	sd_bus_message_unref(reply);
}

static void test_dirty_rate(sd_bus *bus)
{
	int mem = make_memfd(65536, false);
	char path[256];

	session_path("rate", path, sizeof(path));
	create(bus, "rate: create", "rate", true, "keep");
	sd_bus_message_unref(call_ok(bus, "rate: memory", path, IOD_SESSION_INTERFACE, "AddMemory",
				     "httt", mem, 0, 65536, 0x100000));
	close(mem);

	call_err(bus, "rate: before Start", E_PREFIX "NotTracking", "Start", path,
		 IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 0);
	call_err(bus, "rate: unknown option", E_INVALID_ARGS, "Unknown option", path,
		 IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 1, "peek", "b", 1);
	call_err(bus, "rate: interval of the wrong type", E_INVALID_ARGS, "interval_usec", path,
		 IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 1, "interval_usec", "u", 1000000);
	call_err(bus, "rate: zero interval", E_INVALID_ARGS, "between 10000", path,
		 IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 1, "interval_usec", "t",
		 (uint64_t)0);
	call_err(bus, "rate: interval under 10 ms", E_INVALID_ARGS, "between 10000", path,
		 IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 1, "interval_usec", "t",
		 (uint64_t)9999);
	call_err(bus, "rate: huge interval", E_INVALID_ARGS, "not 18446744073709551615", path,
		 IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 1, "interval_usec", "t",
		 UINT64_MAX);
	call_err(bus, "rate: window shorter than the interval", E_INVALID_ARGS,
		 "at least the interval", path, IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 2,
		 "interval_usec", "t", (uint64_t)2000000, "window_usec", "t", (uint64_t)1000000);
	call_err(bus, "rate: huge window", E_INVALID_ARGS, "at most 3600000000", path,
		 IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 1, "window_usec", "t", UINT64_MAX);
	call_err(bus, "rate: too many samples in the window", E_INVALID_ARGS, "more than 1024",
		 path, IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 2, "interval_usec", "t",
		 (uint64_t)10000, "window_usec", "t", (uint64_t)3600000000);

	sd_bus_message_unref(
		call_ok(bus, "rate: start", path, IOD_SESSION_INTERFACE, "Start", NULL));
	rate_call(bus, "rate: the first call is the baseline (no sample yet)", path, 0);
	rate_call(bus, "rate: the second call has a sample, of nothing", path, 1);
	usleep(100000);
	rate_call(bus, "rate: the timer samples meanwhile", path, 3);
	sd_bus_message_unref(call_ok(bus, "rate: stop", path, IOD_SESSION_INTERFACE, "Stop", NULL));
	call_err(bus, "rate: after Stop", E_PREFIX "NotTracking", "Start", path,
		 IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 0);
	destroy(bus, "rate");
}

static void test_limits(sd_bus *bus)
{
	int mem = make_memfd(8 * 65536, false);
	char path[256], name[32];

	session_path("lim", path, sizeof(path));
	create(bus, "limits: create", "lim", true, "keep");
	for (int i = 0; i < LIMIT_REGIONS; i++)
		sd_bus_message_unref(call_ok(bus, "limits: region", path, IOD_SESSION_INTERFACE,
					     "AddMemory", "httt", mem, (uint64_t)i * 4096, 4096,
					     (uint64_t)i * 0x100000));
	call_err(bus, "limits: one region too many", E_PREFIX "LimitExceeded", "regions", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", mem, 0, 4096, 0x10000000);
	destroy(bus, "lim");

	/* 65536 bytes of log = 32 KiB per plane = 262144 pages = 1 GiB of guest memory. */
	create(bus, "limits: create for log bytes", "lim", true, "keep");
	call_err(bus, "limits: log bytes", E_PREFIX "LimitExceeded", "log_bytes", path,
		 IOD_SESSION_INTERFACE, "AddMemory", "httt", mem, 0, (uint64_t)2 << 30, 0);
	destroy(bus, "lim");

	for (int i = 0; i < LIMIT_SESSIONS; i++) {
		snprintf(name, sizeof(name), "many%d", i);
		create(bus, "limits: session", name, false, "keep");
	}
	call_err(bus, "limits: one session too many", E_PREFIX "LimitExceeded", "sessions",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "onemore", 0);
	for (int i = 0; i < LIMIT_SESSIONS; i++) {
		snprintf(name, sizeof(name), "many%d", i);
		destroy(bus, name);
	}
	close(mem);
}

static void run_as(uid_t uid, void (*fn)(sd_bus *bus, void *userdata), void *userdata);

/* --- what a client may make the daemon open, hold and say (audit findings) ---------------- */

/* A root-only folder with a file and a FIFO, watched for opens by anybody (inotify). */
struct secrets {
	char dir[64], file[96], fifo[96];
	int inotify;
};

static void secrets_make(struct secrets *x)
{
	int fd;

	snprintf(x->dir, sizeof(x->dir), "/tmp/iodirty-secret.XXXXXX");
	if (!mkdtemp(x->dir))
		abort();
	snprintf(x->file, sizeof(x->file), "%s/secret", x->dir);
	snprintf(x->fifo, sizeof(x->fifo), "%s/fifo", x->dir);
	fd = open(x->file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, "secret\n", 7) != 7 || mkfifo(x->fifo, 0600) < 0)
		abort();
	close(fd);
	x->inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (x->inotify < 0 || inotify_add_watch(x->inotify, x->dir, IN_OPEN | IN_ACCESS) < 0)
		abort();
}

/* How many opens (or reads) of anything in the folder since the last call. */
static unsigned secrets_opened(struct secrets *x)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	unsigned n = 0;
	ssize_t k;

	while ((k = read(x->inotify, buf, sizeof(buf))) > 0)
		for (char *p = buf; p < buf + k;) {
			const struct inotify_event *e = (const void *)p;

			n++;
			p += sizeof(*e) + e->len;
		}
	return n;
}

static void secrets_remove(struct secrets *x)
{
	close(x->inotify);
	unlink(x->file);
	unlink(x->fifo);
	rmdir(x->dir);
}

static void other_names_devices(sd_bus *bus, void *userdata)
{
	const struct secrets *x = userdata;
	const char *names[] = {x->file, x->fifo, "/etc/shadow", "0000:00:01.0"};
	char path[256], what[160];

	create(bus, NULL, "nobodydev", false, "destroy");
	session_path("nobodydev", path, sizeof(path));
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		snprintf(what, sizeof(what), "other uid: AttachDevice(\"%s\") is denied", names[i]);
		call_err(bus, what, E_ACCESS_DENIED, "Only root may name a device", path,
			 IOD_SESSION_INTERFACE, "AttachDevice", "sa{sv}", names[i], 0);
	}
	destroy(bus, "nobodydev");
}

static void test_named_devices(sd_bus *bus)
{
	struct secrets x;
	char path[256];
	unsigned n;

	secrets_make(&x);
	(void)secrets_opened(&x);
	run_as(other_uid, other_names_devices, &x);
	n = secrets_opened(&x);
	result(n == 0, "other uid: AttachDevice by name made the daemon open nothing",
	       "%u opens in a root-only folder", n);

	/* Root may name a device, but only a VFIO cdev: nothing else is ever opened. */
	create(bus, NULL, "rootdev", false, "keep");
	session_path("rootdev", path, sizeof(path));
	call_err(bus, "root: AttachDevice of a regular file is refused unopened", E_INVALID_ARGS,
		 "/dev/vfio/devices", path, IOD_SESSION_INTERFACE, "AttachDevice", "sa{sv}", x.file,
		 0);
	call_err(bus, "root: AttachDevice of a FIFO is refused unopened (no hang)", E_INVALID_ARGS,
		 "/dev/vfio/devices", path, IOD_SESSION_INTERFACE, "AttachDevice", "sa{sv}", x.fifo,
		 0);
	call_err(bus, "root: a path that climbs out of /dev/vfio/devices is refused",
		 E_INVALID_ARGS, "/dev/vfio/devices", path, IOD_SESSION_INTERFACE, "AttachDevice",
		 "sa{sv}", "/dev/vfio/devices/../../etc/shadow", 0);
	n = secrets_opened(&x);
	result(n == 0, "root: AttachDevice of a non-cdev made the daemon open nothing",
	       "%u opens in the folder", n);
	destroy(bus, "rootdev");
	secrets_remove(&x);
}

static void test_memory_kinds(sd_bus *bus)
{
	char path[256], file[] = "/var/tmp/iodirty-disk.XXXXXX";
	struct statfs sf;
	int fd = mkstemp(file);

	if (fd < 0 || ftruncate(fd, 65536) < 0)
		abort();
	session_path("kinds", path, sizeof(path));
	create(bus, NULL, "kinds", true, "keep");
	if (fstatfs(fd, &sf) == 0 && (sf.f_type == 0x01021994 || sf.f_type == 0x958458f6)) {
		printf("SKIP: %s is on tmpfs or hugetlbfs here: no disk file to offer\n", file);
	} else {
		int rw = open(file, O_RDWR | O_CLOEXEC);

		call_err(bus, "memory: a file on disk is not guest memory", E_INVALID_ARGS,
			 "tmpfs or hugetlbfs", path, IOD_SESSION_INTERFACE, "AddMemory", "httt", rw,
			 0, 4096, 0);
		close(rw);
	}
	expect_u64(bus, "memory: the disk file left no region", path, IOD_SESSION_INTERFACE,
		   "TrackedBytes", 't', 0);
	destroy(bus, "kinds");
	close(fd);
	unlink(file);
}

/* Error replies quote client input: bounded and escaped, never raw. */
static void test_error_echo(sd_bus *bus)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	char *big = malloc(10001);
	const char *weird = "vm\x01\x1b[31m\nowned";
	bool clean = true;
	int r;

	if (!big)
		abort();
	memset(big, 'a', 10000);
	big[10000] = '\0';
	r = sd_bus_call_method(bus, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			       "CreateSession", &error, &reply, "sa{sv}", big, 0);
	result(r < 0 && error.message && strlen(error.message) < 512,
	       "error replies quote a 10,000-character name in under 512 bytes", "%zu bytes",
	       error.message ? strlen(error.message) : (size_t)0);
	sd_bus_error_free(&error);
	sd_bus_message_unref(reply);
	reply = NULL;

	r = sd_bus_call_method(bus, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			       "GetSession", &error, &reply, "s", weird);
	for (const char *p = error.message; p && *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			clean = false;
	result(r < 0 && error.message && clean && strstr(error.message, "\\x01"),
	       "error replies escape control bytes of client input", "%s",
	       error.message ? error.message : "(none)");
	sd_bus_error_free(&error);
	sd_bus_message_unref(reply);
	free(big);
}

/* Log bytes count per user across sessions: one uid cannot pin sessions x log_bytes. */
static void other_fills_logs(sd_bus *bus, void *userdata)
{
	int mem = make_memfd((uint64_t)1 << 30, false);
	char a[256], b[256];

	create(bus, NULL, "logs1", true, "destroy");
	create(bus, NULL, "logs2", true, "destroy");
	session_path("logs1", a, sizeof(a));
	session_path("logs2", b, sizeof(b));
	/* 1 GiB at 4 KiB pages: 32 KiB per plane, 64 KiB of log: the whole per-session limit */
	sd_bus_message_unref(call_ok(bus, "other uid: a log of log_bytes", a, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", mem, 0, (uint64_t)1 << 30, 0));
	call_err(bus, "other uid: a second full log is over log_bytes_per_user",
		 E_PREFIX "LimitExceeded", "log_bytes_per_user", b, IOD_SESSION_INTERFACE,
		 "AddMemory", "httt", mem, 0, (uint64_t)1 << 30, 0);
	sd_bus_message_unref(call_ok(bus, "other uid: what is left of log_bytes_per_user fits", b,
				     IOD_SESSION_INTERFACE, "AddMemory", "httt", mem, 0,
				     (uint64_t)1 << 29, 0));
	destroy(bus, "logs1");
	destroy(bus, "logs2");
	close(mem);
}

static void test_log_bytes_per_user(sd_bus *bus)
{
	expect_u64(bus, "limits: MaxLogBytesPerUser", IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
		   "MaxLogBytesPerUser", 't', LIMIT_LOG_BYTES_PER_USER);
	run_as(other_uid, other_fills_logs, NULL);
}

/* --- other uids and the disconnect policy ------------------------------------------------ */

/* Run fn(bus) in a child as uid; its checks print like ours. */
static void run_as(uid_t uid, void (*fn)(sd_bus *bus, void *userdata), void *userdata)
{
	pid_t pid;
	int status;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		sd_bus *bus;

		if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 ||
		    setresuid(uid, uid, uid) < 0) {
			printf("FAIL: cannot become uid %u: %s\n", (unsigned)uid, strerror(errno));
			_exit(1);
		}
		bus = connect_bus();
		fn(bus, userdata);
		sd_bus_flush_close_unref(bus);
		fflush(stdout);
		_exit(failed ? 1 : 0);
	}
	if (waitpid(pid, &status, 0) < 0)
		abort();
	/* The child's lines are counted by tests/bus/run; keep our own tally in step. */
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		failed++;
}

static void other_acts_on_root_session(sd_bus *bus, void *userdata)
{
	const char *path = userdata;

	call_err(bus, "other uid: Start on root's session", E_ACCESS_DENIED, "belongs to uid 0",
		 path, IOD_SESSION_INTERFACE, "Start", NULL);
	call_err(bus, "other uid: Harvest on root's session", E_ACCESS_DENIED, NULL, path,
		 IOD_SESSION_INTERFACE, "Harvest", "a{sv}", 0);
	call_err(bus, "other uid: Claim of root's session", E_ACCESS_DENIED, NULL, path,
		 IOD_SESSION_INTERFACE, "Claim", NULL);
	call_err(bus, "other uid: Destroy of root's session", E_ACCESS_DENIED, NULL, path,
		 IOD_SESSION_INTERFACE, "Destroy", NULL);
	call_err(bus, "other uid: DestroySession of root's session", E_ACCESS_DENIED, NULL,
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "DestroySession", "s", "rootvm");
	call_err(bus, "other uid: DumpState", E_ACCESS_DENIED, "root", IOD_MANAGER_PATH,
		 IOD_MANAGER_INTERFACE, "DumpState", NULL);
	call_err(bus, "other uid: ProbeDevice by name", E_ACCESS_DENIED, "ProbeDeviceFd",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "ProbeDevice", "s", "0000:00:01.0");
	call_err(bus, "other uid: MapBatch on root's session", E_ACCESS_DENIED, "belongs to uid 0",
		 path, IOD_SESSION_INTERFACE, "MapBatch", "a(ttt)", 1, (uint64_t)0x10000,
		 (uint64_t)0x100000, (uint64_t)0x1000);
	call_err(bus, "other uid: MarkDirty on root's session", E_ACCESS_DENIED, "belongs to uid 0",
		 path, IOD_SESSION_INTERFACE, "MarkDirty", "a(tt)", 1, (uint64_t)0x200000,
		 (uint64_t)0x1000);
	call_err(bus, "other uid: UnmapBatch on root's session", E_ACCESS_DENIED,
		 "belongs to uid 0", path, IOD_SESSION_INTERFACE, "UnmapBatch", "a(tt)", 1,
		 (uint64_t)0x10000, (uint64_t)0x1000);
	call_err(bus, "other uid: Map on root's session", E_ACCESS_DENIED, "belongs to uid 0", path,
		 IOD_SESSION_INTERFACE, "Map", "ttt", (uint64_t)0x10000, (uint64_t)0x100000,
		 (uint64_t)0x1000);
	call_err(bus, "other uid: OpenEventChannel on root's session", E_ACCESS_DENIED,
		 "belongs to uid 0", path, IOD_SESSION_INTERFACE, "OpenEventChannel", "a{sv}", 0);
	call_err(bus, "other uid: GetDirtyRate on root's session", E_ACCESS_DENIED,
		 "belongs to uid 0", path, IOD_SESSION_INTERFACE, "GetDirtyRate", "a{sv}", 0);
	expect_string(bus, "other uid: may read properties", path, IOD_SESSION_INTERFACE, "Name",
		      "rootvm");
}

static void other_creates(sd_bus *bus, void *userdata)
{
	char path[256];

	create(bus, "other uid: create own session", "nobodyvm", true, "keep");
	session_path("nobodyvm", path, sizeof(path));
	sd_bus_message_unref(call_ok(bus, "other uid: Start own session", path,
				     IOD_SESSION_INTERFACE, "Start", NULL));
	expect_u64(bus, "other uid: OwnerUID", path, IOD_SESSION_INTERFACE, "OwnerUID", 'u',
		   other_uid);
	create(bus, "other uid: second session", "nobodyvm2", true, "destroy");
	call_err(bus, "other uid: sessions_per_user", E_PREFIX "LimitExceeded", "sessions_per_user",
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "nobodyvm3",
		 0);
	/* Leaving the bus now: nobodyvm is kept (orphaned), nobodyvm2 destroyed. */
}

static void other_reclaims(sd_bus *bus, void *userdata)
{
	char path[256];

	session_path("nobodyvm", path, sizeof(path));
	expect_string(bus, "keep: orphaned state", path, IOD_SESSION_INTERFACE, "State",
		      "orphaned-tracking");
	call_err(bus, "keep: same uid, other connection, before Claim", E_ACCESS_DENIED, "Claim",
		 path, IOD_SESSION_INTERFACE, "Harvest", "a{sv}", 0);
	sd_bus_message_unref(call_ok(bus, "keep: Claim by the same uid", path,
				     IOD_SESSION_INTERFACE, "Claim", NULL));
	sd_bus_message_unref(call_ok(bus, "keep: Harvest after Claim", path, IOD_SESSION_INTERFACE,
				     "Harvest", "a{sv}", 0));
	expect_string(bus, "keep: tracking again", path, IOD_SESSION_INTERFACE, "State",
		      "tracking");
	sd_bus_message_unref(call_ok(bus, "keep: Claim again is a no-op", path,
				     IOD_SESSION_INTERFACE, "Claim", NULL));
	/* Stay connected while the parent checks that root can still act. */
}

static void denied_uid_checks(sd_bus *bus, void *userdata)
{
	const char *path = userdata;
	char *s;

	call_err(bus, "bus policy: a uid outside the group cannot create", E_ACCESS_DENIED, NULL,
		 IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "denied", 0);
	call_err(bus, "bus policy: a uid outside the group cannot Start", E_ACCESS_DENIED, NULL,
		 path, IOD_SESSION_INTERFACE, "Start", NULL);
	s = get_string(bus, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE, "Version");
	result(s && strcmp(s, "(error)") != 0, "bus policy: anybody may read properties",
	       "Version: %s", s);
	free(s);
}

static bool session_exists(sd_bus *bus, const char *name)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	int r;

	r = sd_bus_call_method(bus, IOD_BUS_NAME, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
			       "GetSession", &error, &reply, "s", name);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&error);
	return r >= 0;
}

/* The daemon sees the disconnect asynchronously: wait for it, a bounded while. */
static bool wait_session_gone(sd_bus *bus, const char *name)
{
	for (int i = 0; i < 50; i++) {
		struct timespec ts = {0, 20 * 1000 * 1000};

		if (!session_exists(bus, name))
			return true;
		nanosleep(&ts, NULL);
	}
	return false;
}

static void test_access(sd_bus *bus)
{
	char path[256], opath[256];

	session_path("rootvm", path, sizeof(path));
	create(bus, "access: root creates", "rootvm", true, "keep");
	run_as(other_uid, other_acts_on_root_session, path);
	run_as(denied_uid, denied_uid_checks, path);

	run_as(other_uid, other_creates, NULL);
	result(wait_session_gone(bus, "nobodyvm2"), "destroy policy: session gone with its owner",
	       "nobodyvm2 still exists");
	result(session_exists(bus, "nobodyvm"), "keep policy: session stays", "nobodyvm is gone");
	session_path("nobodyvm", opath, sizeof(opath));
	expect_string(bus, "keep policy: no owner", opath, IOD_SESSION_INTERFACE, "Owner", "");
	expect_u64(bus, "keep policy: still tracking", opath, IOD_SESSION_INTERFACE, "Tracking",
		   'b', 1);

	run_as(other_uid, other_reclaims, NULL);
	sd_bus_message_unref(call_ok(bus, "root may act on any session", opath,
				     IOD_SESSION_INTERFACE, "Stop", NULL));
	sd_bus_message_unref(call_ok(bus, "root may claim any session", opath,
				     IOD_SESSION_INTERFACE, "Claim", NULL));
	expect_u64(bus, "claim: owner uid unchanged", opath, IOD_SESSION_INTERFACE, "OwnerUID", 'u',
		   other_uid);
	destroy(bus, "nobodyvm");
	destroy(bus, "rootvm");
}

static int notify_listen(const char *socket_path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 20};
	char buf[4096];
	int fd;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || strlen(socket_path) >= sizeof(sa.sun_path))
		return 2;
	strcpy(sa.sun_path, socket_path);
	unlink(socket_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return 2;
	/* Tell tests/bus/run that the socket is there. */
	printf("listening\n");
	fflush(stdout);

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
		sd_bus_error error = SD_BUS_ERROR_NULL;
		sd_bus_message *reply = NULL;
		const char *owner = NULL;
		sd_bus *bus;
		int r;

		if (n < 0) {
			result(false, "notify: READY=1 arrives", "%s", strerror(errno));
			break;
		}
		buf[n] = '\0';
		if (!strstr(buf, "READY=1"))
			continue;
		result(true, "notify: READY=1 arrives", NULL);
		bus = connect_bus();
		r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				       "org.freedesktop.DBus", "GetNameOwner", &error, &reply, "s",
				       IOD_BUS_NAME);
		if (r >= 0)
			r = sd_bus_message_read(reply, "s", &owner);
		result(r >= 0, "notify: the name is owned when READY=1 comes", "%s",
		       error.message ? error.message : strerror(-r));
		sd_bus_message_unref(reply);
		sd_bus_error_free(&error);
		sd_bus_flush_close_unref(bus);
		break;
	}
	close(fd);
	unlink(socket_path);
	return failed ? 1 : 0;
}

/*
 * --metrics-setup: sessions with numbers in them for the metrics check in tests/bus/run,
 * kept (policy "keep") after this client leaves. "metrics-a": 128 KiB of guest memory,
 * tracking, ROUNDS rounds harvested of which the last is not acknowledged. "metrics-b":
 * 64 KiB, page size 8192, huge pages, never started.
 */
#define METRICS_ROUNDS 3
static void metrics_setup(sd_bus *bus)
{
	int mem_a = make_memfd(2 * 65536, false), mem_b = make_memfd(65536, false);
	char a[256], b[256];

	session_path("metrics-a", a, sizeof(a));
	session_path("metrics-b", b, sizeof(b));
	create(bus, "metrics: create metrics-a", "metrics-a", true, "keep");
	sd_bus_message_unref(call_ok(bus, "metrics: create metrics-b", IOD_MANAGER_PATH,
				     IOD_MANAGER_INTERFACE, "CreateSession", "sa{sv}", "metrics-b",
				     4, "viommu", "b", 1, "disconnect_policy", "s", "keep",
				     "page_size", "t", (uint64_t)8192, "huge_pages", "b", 1));
	sd_bus_message_unref(call_ok(bus, "metrics: memory of metrics-a", a, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", mem_a, (uint64_t)0, (uint64_t)2 * 65536,
				     (uint64_t)0x200000));
	sd_bus_message_unref(call_ok(bus, "metrics: memory of metrics-b", b, IOD_SESSION_INTERFACE,
				     "AddMemory", "httt", mem_b, (uint64_t)0, (uint64_t)65536,
				     (uint64_t)0));
	sd_bus_message_unref(
		call_ok(bus, "metrics: start metrics-a", a, IOD_SESSION_INTERFACE, "Start", NULL));
	for (uint64_t round = 1; round <= METRICS_ROUNDS; round++) {
		sd_bus_message_unref(call_ok(bus, "metrics: harvest metrics-a", a,
					     IOD_SESSION_INTERFACE, "Harvest", "a{sv}", 0));
		if (round < METRICS_ROUNDS)
			sd_bus_message_unref(call_ok(bus, "metrics: acknowledge", a,
						     IOD_SESSION_INTERFACE, "Acknowledge", "t",
						     round));
	}
	close(mem_a);
	close(mem_b);
}

int main(int argc, char *argv[])
{
	sd_bus *bus;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && strcmp(argv[1], "--notify") == 0) {
		address = argv[3];
		return notify_listen(argv[2]);
	}

	if (argc == 3 && strcmp(argv[1], "--metrics-setup") == 0) {
		address = argv[2];
		bus = connect_bus();
		metrics_setup(bus);
		sd_bus_flush_close_unref(bus);
		printf("client: %u passed, %u failed\n", passed, failed);
		return failed ? 1 : 0;
	}
	if (argc != 4) {
		fprintf(stderr,
			"usage: %s ADDRESS OTHER_UID DENIED_UID | --metrics-setup ADDRESS | "
			"--notify SOCKET ADDRESS\n",
			argv[0]);
		return 2;
	}
	address = argv[1];
	other_uid = (uid_t)strtoul(argv[2], NULL, 10);
	denied_uid = (uid_t)strtoul(argv[3], NULL, 10);

	bus = connect_bus();
	test_create_validation(bus);
	test_adopt_validation(bus);
	test_memory_validation(bus);
	test_batch_validation(bus);
	test_event_channel(bus);
	test_harvest(bus);
	test_mark_dirty(bus);
	test_channel_mark(bus);
	test_dirty_rate(bus);
	test_limits(bus);
	test_named_devices(bus);
	test_memory_kinds(bus);
	test_error_echo(bus);
	test_log_bytes_per_user(bus);
	test_access(bus);
	sd_bus_flush_close_unref(bus);

	printf("client: %u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
