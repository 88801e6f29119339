/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fdstore-harness: the part of a service manager that iodirtyd's restart survival relies
 * on, for the guest tests (where systemd is not PID 1). It
 *  - creates a notify socket (AF_UNIX datagram, SO_PASSCRED) and starts the daemon with
 *    NOTIFY_SOCKET pointing at it;
 *  - accepts messages from the daemon's pid only: READY=1, STOPPING=1, WATCHDOG=1,
 *    FDSTORE=1 with SCM_RIGHTS fds and FDNAME= (default "stored"; a file already in the
 *    store is not stored twice), FDSTOREREMOVE=1 with FDNAME=;
 *  - restarts the daemon whenever it exits, passing the stored fds from fd 3 on with
 *    LISTEN_FDS, LISTEN_PID (the child's own pid, set after fork) and LISTEN_FDNAMES
 *    (colon-separated);
 *  - with --watchdog-usec=N sets WATCHDOG_USEC/WATCHDOG_PID and, when no WATCHDOG=1 came
 *    for N microseconds, sends SIGABRT (and SIGCONT), then SIGKILL 3 s later, and restarts.
 *
 * A test drives it through a SOCK_SEQPACKET control socket (--control=PATH), one command
 * per packet, one reply each:
 *   status              "pid=P starts=N ready=0|1 stored=K watchdog=W exits=E names=a,b"
 *   kill SIG [USEC]     signal the current daemon now or USEC microseconds later: "ok pid=P"
 *   wait-ready N        reply once the N-th start has sent READY=1: "ok pid=P starts=N"
 *   freeze              SIGSTOP the daemon (it stops pinging the watchdog): "ok"
 *   drop NAME           close the stored fds named NAME, as if they were lost: "ok"
 *   ioas-map NAME IOAS IOVA LENGTH
 *                       map LENGTH bytes of fresh anonymous memory at IOVA into IOAS of the
 *                       stored iommufd NAME, behind the daemon's back (what a daemon that
 *                       died between an IOAS map and its state save leaves): "ok" or
 *                       "error TEXT"
 *   ioas-unmap NAME IOAS IOVA LENGTH
 *                       unmap that range from the IOAS behind the daemon's back (a death
 *                       between an IOAS unmap and the save): "ok unmapped=N" or "error TEXT"
 *   hold                from now on, a daemon that exits is not started again (status
 *                       says pid=0 once it is down): "ok"
 *   release             end hold, and start the daemon if it is down: "ok"
 *   setenv NAME=VALUE   set NAME in the environment of the daemon's next starts: "ok"
 *   unsetenv NAME       remove it again: "ok"
 *   quit                SIGTERM, no restart; reply "ok status=S" once it exited, close the
 *                       store and exit
 *
 * Usage: fdstore-harness --control=PATH [--watchdog-usec=N] [--max-fds=N] -- DAEMON [ARGS]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/iommufd.h>

#include "iod-util.h"

#ifndef F_DUPFD_QUERY
#define F_DUPFD_QUERY (1024 + 3) /* Linux 6.10: do two fds refer to the same file? */
#endif

#define MAX_CLIENTS 8
#define MAX_FDS_PER_MESSAGE 768
#define ABORT_GRACE_USEC (3 * 1000000ull)

struct stored_fd {
	int fd;
	char *name;
};

struct client {
	int fd;
	unsigned wait_starts; /* a wait-ready pending: reply when starts >= this and ready */
	bool wait_exit; /* quit pending */
};

static char **daemon_argv;
static const char *control_path;
static uint64_t watchdog_usec;
static size_t max_fds = 4096;

static int notify_fd = -1, control_fd = -1, signal_fd = -1;
static char notify_path[108];
static struct client clients[MAX_CLIENTS];

static struct stored_fd *store;
static size_t n_store;

static pid_t daemon_pid;
static unsigned starts, exits, watchdog_kills;
static bool ready, quitting, holding;
static int last_status;
static uint64_t watchdog_deadline, abort_deadline;
static int kill_signal;
static uint64_t kill_at;
static pid_t kill_pid;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "harness: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

static __attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "harness: fatal: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (daemon_pid > 0)
		kill(daemon_pid, SIGKILL);
	exit(1);
}

/* --- the store ------------------------------------------------------------------------- */

static bool store_has_file(int fd)
{
	for (size_t i = 0; i < n_store; i++)
		if (fcntl(store[i].fd, F_DUPFD_QUERY, fd) == 1)
			return true;
	return false;
}

static void store_add(int fd, const char *name)
{
	struct stored_fd *p;

	if (store_has_file(fd)) {
		close(fd);
		return;
	}
	if (n_store >= max_fds) {
		say("store full (%zu fds), dropping \"%s\"", n_store, name);
		close(fd);
		return;
	}
	p = realloc(store, (n_store + 1) * sizeof(*p));
	if (!p)
		die("out of memory");
	store = p;
	store[n_store].fd = fd;
	store[n_store].name = strdup(name);
	if (!store[n_store].name)
		die("out of memory");
	n_store++;
}

static void store_remove(const char *name)
{
	for (size_t i = n_store; i > 0; i--) {
		if (strcmp(store[i - 1].name, name) != 0)
			continue;
		close(store[i - 1].fd);
		free(store[i - 1].name);
		memmove(&store[i - 1], &store[i], (n_store - i) * sizeof(*store));
		n_store--;
	}
}

static int store_find(const char *name)
{
	for (size_t i = 0; i < n_store; i++)
		if (strcmp(store[i].name, name) == 0)
			return store[i].fd;
	return -ENOENT;
}

static void store_clear(void)
{
	while (n_store > 0) {
		n_store--;
		close(store[n_store].fd);
		free(store[n_store].name);
	}
}

/* --- the daemon ------------------------------------------------------------------------ */

static void daemon_start(void)
{
	char buf[32];
	pid_t pid;

	pid = fork();
	if (pid < 0)
		die("fork: %m");
	if (pid == 0) {
		sigset_t none;
		int *tmp = calloc(n_store + 1, sizeof(int));
		char *names;
		size_t len = 1;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (!tmp)
			_exit(127);
		/* Out of the way first, then into place from 3 (dup2 clears FD_CLOEXEC). */
		for (size_t i = 0; i < n_store; i++) {
			tmp[i] = fcntl(store[i].fd, F_DUPFD, (int)(3 + n_store));
			if (tmp[i] < 0)
				_exit(127);
			len += strlen(store[i].name) + 1;
		}
		for (size_t i = 0; i < n_store; i++) {
			if (dup2(tmp[i], (int)(3 + i)) < 0)
				_exit(127);
			close(tmp[i]);
		}
		names = calloc(1, len);
		if (!names)
			_exit(127);
		for (size_t i = 0; i < n_store; i++) {
			if (i)
				strcat(names, ":");
			strcat(names, store[i].name);
		}
		if (n_store > 0) {
			snprintf(buf, sizeof(buf), "%zu", n_store);
			setenv("LISTEN_FDS", buf, 1);
			snprintf(buf, sizeof(buf), "%d", (int)getpid());
			setenv("LISTEN_PID", buf, 1);
			setenv("LISTEN_FDNAMES", names, 1);
		} else {
			unsetenv("LISTEN_FDS");
			unsetenv("LISTEN_PID");
			unsetenv("LISTEN_FDNAMES");
		}
		setenv("NOTIFY_SOCKET", notify_path, 1);
		if (watchdog_usec) {
			snprintf(buf, sizeof(buf), "%" PRIu64, watchdog_usec);
			setenv("WATCHDOG_USEC", buf, 1);
			snprintf(buf, sizeof(buf), "%d", (int)getpid());
			setenv("WATCHDOG_PID", buf, 1);
		}
		execvp(daemon_argv[0], daemon_argv);
		fprintf(stderr, "harness: exec %s: %m\n", daemon_argv[0]);
		_exit(127);
	}
	daemon_pid = pid;
	starts++;
	ready = false;
	abort_deadline = 0;
	watchdog_deadline = watchdog_usec ? iod_now_usec() + watchdog_usec : 0;
	say("started %s as pid %d (start %u) with %zu stored fds", daemon_argv[0], (int)pid, starts,
	    n_store);
}

/* --- notify messages ------------------------------------------------------------------- */

static void handle_message(char *text, int *fds, size_t n_fds)
{
	const char *fdname = NULL;
	bool fdstore = false, fdstoreremove = false;

	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		if (strcmp(line, "READY=1") == 0) {
			if (!ready)
				say("pid %d is ready", (int)daemon_pid);
			ready = true;
		} else if (strcmp(line, "WATCHDOG=1") == 0) {
			if (watchdog_usec)
				watchdog_deadline = iod_now_usec() + watchdog_usec;
		} else if (strcmp(line, "STOPPING=1") == 0) {
			say("pid %d is stopping", (int)daemon_pid);
		} else if (strcmp(line, "FDSTORE=1") == 0) {
			fdstore = true;
		} else if (strcmp(line, "FDSTOREREMOVE=1") == 0) {
			fdstoreremove = true;
		} else if (strncmp(line, "FDNAME=", 7) == 0) {
			fdname = line + 7;
		}
	}
	if (fdname && (!*fdname || strlen(fdname) > 255 || strchr(fdname, ':'))) {
		say("invalid FDNAME \"%s\", ignoring the message", fdname);
		fdstore = fdstoreremove = false;
	}
	if (fdstoreremove && fdname)
		store_remove(fdname);
	for (size_t i = 0; i < n_fds; i++) {
		if (fdstore)
			store_add(fds[i], fdname ? fdname : "stored");
		else
			close(fds[i]);
	}
}

static void notify_drain(void)
{
	for (;;) {
		char buf[4096];
		union {
			struct cmsghdr h;
			uint8_t b[CMSG_SPACE(sizeof(struct ucred)) +
				  CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MESSAGE)];
		} ctl;
		struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = &ctl,
			.msg_controllen = sizeof(ctl),
		};
		struct ucred *cred = NULL;
		int *fds = NULL;
		size_t n_fds = 0;
		ssize_t n;

		n = recvmsg(notify_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0)
			die("recvmsg on the notify socket: %m");
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET)
				continue;
			if (c->cmsg_type == SCM_RIGHTS) {
				fds = (int *)CMSG_DATA(c);
				n_fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			} else if (c->cmsg_type == SCM_CREDENTIALS &&
				   c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
				cred = (struct ucred *)CMSG_DATA(c);
			}
		}
		if (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC) || !cred || daemon_pid <= 0 ||
		    cred->pid != daemon_pid) {
			say("ignoring a notify message from pid %d%s", cred ? (int)cred->pid : -1,
			    mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC) ? " (truncated)" : "");
			for (size_t i = 0; i < n_fds; i++)
				close(fds[i]);
			continue;
		}
		buf[n] = '\0';
		handle_message(buf, fds, n_fds);
	}
}

/* --- control --------------------------------------------------------------------------- */

static void reply(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct client *c, const char *fmt, ...)
{
	char buf[65536];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (send(c->fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1, MSG_NOSIGNAL) <
	    0)
		say("reply to a control client failed: %m");
}

static void client_close(struct client *c)
{
	close(c->fd);
	*c = (struct client){.fd = -1};
}

static void status_reply(struct client *c)
{
	char names[60000] = "";
	size_t used = 0;

	for (size_t i = 0; i < n_store; i++) {
		int k = snprintf(names + used, sizeof(names) - used, "%s%s", i ? "," : "",
				 store[i].name);

		if (k < 0 || (size_t)k >= sizeof(names) - used)
			break;
		used += (size_t)k;
	}
	reply(c, "pid=%d starts=%u ready=%d stored=%zu watchdog=%u exits=%u names=%s",
	      (int)daemon_pid, starts, ready, n_store, watchdog_kills, exits, names);
}

/* ioas-map / ioas-unmap: change a stored iommufd's IOAS behind the daemon's back. */
static void ioas_command(struct client *c, const char *cmd)
{
	char op[16], name[128];
	unsigned ioas;
	unsigned long long iova, length;
	int fd;

	if (sscanf(cmd, "%15s %127s %u %lli %lli", op, name, &ioas, &iova, &length) != 5 ||
	    length == 0) {
		reply(c, "error usage: %s NAME IOAS IOVA LENGTH", op);
		return;
	}
	fd = store_find(name);
	if (fd < 0) {
		reply(c, "error no stored fd \"%s\"", name);
		return;
	}
	if (strcmp(op, "ioas-map") == 0) {
		void *mem = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				 -1, 0);
		struct iommu_ioas_map m = {
			.size = sizeof(m),
			.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
				 IOMMU_IOAS_MAP_WRITEABLE,
			.ioas_id = ioas,
			.user_va = (uintptr_t)mem,
			.length = length,
			.iova = iova,
		};

		if (mem == MAP_FAILED) {
			reply(c, "error mmap: %s", strerror(errno));
			return;
		}
		/* the memory stays: the kernel pins it for as long as the mapping lives */
		if (ioctl(fd, IOMMU_IOAS_MAP, &m) < 0) {
			reply(c, "error IOMMU_IOAS_MAP: %s", strerror(errno));
			munmap(mem, length);
			return;
		}
		say("mapped [0x%llx, +0x%llx) into ioas %u of \"%s\"", iova, length, ioas, name);
		reply(c, "ok");
	} else {
		struct iommu_ioas_unmap u = {
			.size = sizeof(u), .ioas_id = ioas, .iova = iova, .length = length};

		if (ioctl(fd, IOMMU_IOAS_UNMAP, &u) < 0) {
			reply(c, "error IOMMU_IOAS_UNMAP: %s", strerror(errno));
			return;
		}
		say("unmapped [0x%llx, +0x%llx) from ioas %u of \"%s\"", iova, length, ioas, name);
		reply(c, "ok unmapped=%llu", (unsigned long long)u.length);
	}
}

static void check_waiters(void)
{
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &clients[i];

		if (c->fd < 0 || !c->wait_starts || !ready || starts < c->wait_starts)
			continue;
		c->wait_starts = 0;
		reply(c, "ok pid=%d starts=%u", (int)daemon_pid, starts);
	}
}

/*
 * Stop the daemon as systemd does, but SIGCONT first (a frozen daemon runs again) and SIGTERM
 * after: a SIGCONT that arrives once the daemon is exiting can break a sanitizer build's leak
 * check at exit (LeakSanitizer stops the process under ptrace, and the SIGCONT undoes that
 * stop: it then waits for ever).
 */
static void stop_daemon(void)
{
	kill(daemon_pid, SIGCONT);
	kill(daemon_pid, SIGTERM);
}

static __attribute__((noreturn)) void quit_now(int code);

static void handle_command(struct client *c, char *cmd)
{
	int sig;
	unsigned long long arg = 0;

	if (strcmp(cmd, "status") == 0) {
		status_reply(c);
	} else if (sscanf(cmd, "kill %d %llu", &sig, &arg) >= 1) {
		if (daemon_pid <= 0) {
			reply(c, "error no daemon");
			return;
		}
		if (arg == 0) {
			kill(daemon_pid, sig);
		} else {
			kill_signal = sig;
			kill_pid = daemon_pid;
			kill_at = iod_now_usec() + arg;
		}
		reply(c, "ok pid=%d", (int)daemon_pid);
	} else if (sscanf(cmd, "wait-ready %llu", &arg) == 1) {
		c->wait_starts = arg ? (unsigned)arg : 1;
		check_waiters();
	} else if (strncmp(cmd, "drop ", 5) == 0) {
		store_remove(cmd + 5);
		reply(c, "ok");
	} else if (strncmp(cmd, "ioas-map ", 9) == 0 || strncmp(cmd, "ioas-unmap ", 11) == 0) {
		ioas_command(c, cmd);
	} else if (strncmp(cmd, "setenv ", 7) == 0 && strchr(cmd + 7, '=')) {
		char *eq = strchr(cmd + 7, '=');

		*eq = '\0';
		reply(c, setenv(cmd + 7, eq + 1, 1) == 0 ? "ok" : "error setenv");
	} else if (strncmp(cmd, "unsetenv ", 9) == 0) {
		reply(c, unsetenv(cmd + 9) == 0 ? "ok" : "error unsetenv");
	} else if (strcmp(cmd, "hold") == 0) {
		holding = true;
		reply(c, "ok");
	} else if (strcmp(cmd, "release") == 0) {
		holding = false;
		reply(c, "ok");
		if (daemon_pid <= 0 && !quitting)
			daemon_start();
	} else if (strcmp(cmd, "freeze") == 0) {
		if (daemon_pid > 0)
			kill(daemon_pid, SIGSTOP);
		reply(c, "ok");
	} else if (strcmp(cmd, "quit") == 0) {
		quitting = true;
		c->wait_exit = true;
		if (daemon_pid > 0)
			stop_daemon();
		else
			quit_now(0); /* held down: nothing to stop */
	} else {
		reply(c, "error unknown command");
	}
}

static void control_read(struct client *c)
{
	char buf[512];
	ssize_t n = recv(c->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(c);
		return;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	handle_command(c, buf);
}

static void control_accept(void)
{
	int fd = accept4(control_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (clients[i].fd < 0) {
			clients[i] = (struct client){.fd = fd};
			return;
		}
	close(fd);
}

/* --- main loop ------------------------------------------------------------------------- */

static __attribute__((noreturn)) void quit_now(int code)
{
	say("quitting; closing %zu stored fds", n_store);
	store_clear();
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (clients[i].fd >= 0 && clients[i].wait_exit)
			reply(&clients[i], "ok status=%d", code);
	unlink(control_path);
	unlink(notify_path);
	exit(0);
}

static void daemon_exited(int status)
{
	exits++;
	last_status = status;
	if (WIFEXITED(status))
		say("pid %d exited with status %d", (int)daemon_pid, WEXITSTATUS(status));
	else
		say("pid %d killed by signal %d", (int)daemon_pid, WTERMSIG(status));
	daemon_pid = 0;
	ready = false;
	kill_at = 0;
	watchdog_deadline = abort_deadline = 0;

	if (quitting)
		quit_now(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	if (holding) {
		say("holding: not starting the daemon again until release");
		return;
	}
	daemon_start();
}

static void handle_signals(void)
{
	struct signalfd_siginfo si;

	while (read(signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD) {
			int status;
			pid_t pid;

			/* Messages the daemon sent before it died belong to it: read them while its
			 * pid still names it (before it is reaped). */
			notify_drain();
			while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
				if (pid == daemon_pid)
					daemon_exited(status);
		} else {
			say("got signal %u, quitting", si.ssi_signo);
			quitting = true;
			if (daemon_pid > 0)
				stop_daemon();
			else
				exit(0);
		}
	}
}

static void handle_timers(void)
{
	uint64_t now = iod_now_usec();

	if (kill_at && now >= kill_at) {
		if (daemon_pid > 0 && daemon_pid == kill_pid)
			kill(daemon_pid, kill_signal);
		kill_at = 0;
	}
	if (watchdog_deadline && now >= watchdog_deadline && daemon_pid > 0) {
		say("watchdog timeout of pid %d: SIGABRT", (int)daemon_pid);
		watchdog_kills++;
		kill(daemon_pid, SIGABRT);
		kill(daemon_pid, SIGCONT);
		watchdog_deadline = 0;
		abort_deadline = now + ABORT_GRACE_USEC;
	}
	if (abort_deadline && now >= abort_deadline && daemon_pid > 0) {
		say("pid %d survived SIGABRT: SIGKILL", (int)daemon_pid);
		kill(daemon_pid, SIGKILL);
		abort_deadline = 0;
	}
}

static int poll_timeout(void)
{
	uint64_t now = iod_now_usec(), next = UINT64_MAX;

	if (kill_at)
		next = kill_at;
	if (watchdog_deadline && watchdog_deadline < next)
		next = watchdog_deadline;
	if (abort_deadline && abort_deadline < next)
		next = abort_deadline;
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)((next - now + 999) / 1000);
}

static void setup(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	sigset_t mask;
	int one = 1, size = 8 * 1024 * 1024;
	char dir[] = "/tmp/fdstore-harness.XXXXXX";

	if (!mkdtemp(dir))
		die("mkdtemp: %m");
	snprintf(notify_path, sizeof(notify_path), "%s/notify", dir);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (notify_fd < 0)
		die("socket: %m");
	strcpy(sa.sun_path, notify_path);
	if (bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind %s: %m", notify_path);
	if (setsockopt(notify_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
		die("SO_PASSCRED: %m");
	(void)setsockopt(notify_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));

	control_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (control_fd < 0)
		die("socket: %m");
	memset(sa.sun_path, 0, sizeof(sa.sun_path));
	if (strlen(control_path) >= sizeof(sa.sun_path))
		die("control path too long");
	strcpy(sa.sun_path, control_path);
	unlink(control_path);
	if (bind(control_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(control_fd, 8) < 0)
		die("control socket %s: %m", control_path);

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (signal_fd < 0)
		die("signalfd: %m");
	for (int i = 0; i < MAX_CLIENTS; i++)
		clients[i].fd = -1;
}

int main(int argc, char *argv[])
{
	static const struct option options[] = {
		{"control", required_argument, NULL, 'c'},
		{"watchdog-usec", required_argument, NULL, 'w'},
		{"max-fds", required_argument, NULL, 'm'},
		{},
	};
	int c;

	while ((c = getopt_long(argc, argv, "+", options, NULL)) >= 0) {
		switch (c) {
		case 'c':
			control_path = optarg;
			break;
		case 'w':
			watchdog_usec = strtoull(optarg, NULL, 0);
			break;
		case 'm':
			max_fds = strtoul(optarg, NULL, 0);
			break;
		default:
			return 2;
		}
	}
	if (!control_path || optind >= argc) {
		fprintf(stderr, "Usage: fdstore-harness --control=PATH [--watchdog-usec=N] "
				"[--max-fds=N] -- DAEMON [ARGS...]\n");
		return 2;
	}
	daemon_argv = argv + optind;
	setvbuf(stderr, NULL, _IOLBF, 0);

	setup();
	daemon_start();

	for (;;) {
		struct pollfd p[3 + MAX_CLIENTS];
		int n = 0, r;

		p[n++] = (struct pollfd){.fd = notify_fd, .events = POLLIN};
		p[n++] = (struct pollfd){.fd = signal_fd, .events = POLLIN};
		p[n++] = (struct pollfd){.fd = control_fd, .events = POLLIN};
		for (int i = 0; i < MAX_CLIENTS; i++)
			p[n++] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};

		r = poll(p, (nfds_t)n, poll_timeout());
		if (r < 0 && errno != EINTR)
			die("poll: %m");
		if (p[0].revents)
			notify_drain();
		if (p[1].revents)
			handle_signals();
		if (p[2].revents)
			control_accept();
		for (int i = 0; i < MAX_CLIENTS; i++)
			if (clients[i].fd >= 0 && p[3 + i].revents)
				control_read(&clients[i]);
		handle_timers();
		check_waiters();
	}
}
