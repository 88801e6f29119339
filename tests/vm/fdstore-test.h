/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The test side of fdstore-harness (tests/vm/fdstore-harness.c): commands on its control
 * socket (IOD_HARNESS, set by guest-fdstore.sh) and what the tests read from its answers.
 * Include after daemon-test.h.
 */
#ifndef IOD_TESTS_VM_FDSTORE_TEST_H
#define IOD_TESTS_VM_FDSTORE_TEST_H

#include <dirent.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Send one command, return the reply (static buffer). */
static inline const char *harness(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline const char *harness(const char *fmt, ...)
{
	static char buf[65536];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	const char *path = getenv("IOD_HARNESS");
	char cmd[256];
	va_list ap;
	ssize_t n;
	int fd;

	dt_assert(path && strlen(path) < sizeof(sa.sun_path),
		  "IOD_HARNESS is not set: run under guest-fdstore.sh");
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	dt_assert(fd >= 0, "socket: %s", strerror(errno));
	dt_assert(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect to %s: %s", path,
		  strerror(errno));
	dt_assert(send(fd, cmd, strlen(cmd), 0) == (ssize_t)strlen(cmd), "send \"%s\": %s", cmd,
		  strerror(errno));
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	dt_assert(n > 0, "no reply from the harness to \"%s\": %s", cmd,
		  n < 0 ? strerror(errno) : "closed");
	buf[n] = '\0';
	close(fd);
	return buf;
}

/* A number "key=N" from a status reply. */
static inline uint64_t harness_field(const char *reply, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "%s=", key);
	for (p = strstr(reply, pat); p && p > reply && p[-1] != ' '; p = strstr(p + 1, pat))
		;
	dt_assert(p, "no %s in \"%s\"", key, reply);
	return strtoull(p + strlen(pat), NULL, 10);
}

/* The names the harness's store holds, from a status reply ("a,b,c"). */
static inline const char *harness_names(const char *reply)
{
	const char *p = strstr(reply, "names=");

	dt_assert(p, "no names in \"%s\"", reply);
	return p + 6;
}

/* Number of open fds of a process. */
static inline unsigned proc_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *de;
	unsigned n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	dt_assert(d, "%s: %s", path, strerror(errno));
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/*
 * The fd count of a process once it settles on want (or, with want 0, on the lowest of a
 * few samples): the daemon closes fds it used for a moment (the notify socket of sd_notify,
 * the log fd of a Harvest reply) right after the message that wakes us is sent.
 */
static inline unsigned proc_fd_count_settled(pid_t pid, unsigned want)
{
	unsigned n = proc_fd_count(pid), low = n;

	for (int i = 0; i < 100 && (want ? n != want : i < 5); i++) {
		usleep(10000);
		n = proc_fd_count(pid);
		if (n < low)
			low = n;
	}
	return want ? n : low;
}

/* Wait for the n-th start of the daemon to be ready; its pid. */
static inline pid_t harness_wait_ready(unsigned n)
{
	const char *r = harness("wait-ready %u", n);

	dt_assert(strncmp(r, "ok", 2) == 0, "wait-ready %u: %s", n, r);
	return (pid_t)harness_field(r, "pid");
}

/* After "hold" and a kill: wait (up to 10 s) until no daemon runs. */
static inline void harness_wait_down(void)
{
	const char *r = harness("status");

	for (int i = 0; i < 1000 && harness_field(r, "pid") != 0; i++) {
		usleep(10000);
		r = harness("status");
	}
	dt_assert(harness_field(r, "pid") == 0, "the daemon is still running: %s", r);
}

#endif
