/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small helpers shared by libiodirty, iodirtyd and the tests: scope-based cleanup,
 * ownership transfer and the library's log callback.
 */
#ifndef IOD_UTIL_H
#define IOD_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* The struct of the given type that holds member at ptr. */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Arguments are evaluated twice: no side effects in them. */
#undef MIN
#undef MAX
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Hand a pointer (or fd) over to someone else: returns the value and resets the variable. */
#define TAKE_PTR(p)                                 \
	({                                          \
		__typeof__(p) _take_ptr_tmp_ = (p); \
		(p) = NULL;                         \
		_take_ptr_tmp_;                     \
	})
#define TAKE_FD(fd)                       \
	({                                \
		int _take_fd_tmp_ = (fd); \
		(fd) = -EBADF;            \
		_take_fd_tmp_;            \
	})

/* Close an fd (ignoring an invalid one), keeping errno; returns -EBADF for assignment. */
static inline int iod_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -EBADF;
}

static inline void iod_closep(int *fd)
{
	iod_close(*fd);
}

static inline void iod_freep(void *p)
{
	free(*(void **)p);
}

#define _cleanup_close_ _cleanup_(iod_closep)
#define _cleanup_free_ _cleanup_(iod_freep)

/* Define foo_freep() for a destructor foo_free() that accepts NULL and returns NULL. */
#define IOD_DEFINE_FREEP(type, func)         \
	static inline void func##p(type **p) \
	{                                    \
		if (*p)                      \
			func(*p);            \
	}

/* true if a + b overflows 64 bits; otherwise *ret = a + b. */
static inline bool iod_add_overflow(uint64_t a, uint64_t b, uint64_t *ret)
{
	return __builtin_add_overflow(a, b, ret);
}

static inline bool iod_is_aligned(uint64_t v, uint64_t align)
{
	return (v & (align - 1)) == 0;
}

static inline bool iod_is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* CLOCK_MONOTONIC in nanoseconds and microseconds. */
static inline uint64_t iod_now_nsec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static inline uint64_t iod_now_usec(void)
{
	return iod_now_nsec() / 1000;
}

/* CLOCK_REALTIME in microseconds since the epoch: for timestamps shown to people. */
static inline uint64_t iod_realtime_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/*
 * Logging. The library never writes to stderr and never logs above debug on its own:
 * it hands messages to the callback installed here (none by default).
 * Levels follow syslog (LOG_ERR .. LOG_DEBUG).
 */
typedef void (*iod_log_fn)(int level, const char *message, void *userdata);
void iod_set_log_fn(iod_log_fn fn, void *userdata);
void iod_logf(int level, const char *format, ...) _printf_(2, 3);
#define iod_debug(...) iod_logf(7, __VA_ARGS__)

/*
 * Client input quoted for a message (an error reply, a log line): at most IOD_QUOTE_CHARS
 * characters of s, bytes outside printable ASCII and '"' and '\' written as \xNN, and a
 * longer s cut with "...(N bytes)". Always fits buf; returns buf.
 */
#define IOD_QUOTE_CHARS 64
#define IOD_QUOTE_MAX (IOD_QUOTE_CHARS * 4 + 32)
const char *iod_quote(const char *s, char buf[static IOD_QUOTE_MAX]);

/*
 * Describe a libiodirty error (negative errno) for a person, where the library gives an
 * errno a meaning of its own (see the module headers). Falls back to strerror().
 */
const char *iod_strerror(int err);

#endif
