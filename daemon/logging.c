/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "logging.h"

static int max_level = LOG_INFO;
static bool prefix_level;

static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return st.st_dev == dev && st.st_ino == ino;
}

static void lib_log(int level, const char *message, void *userdata)
{
	iod_log_internal(level, 0, "%s", message);
}

void iod_log_setup(void)
{
	const char *e = getenv("IOD_LOG_PREFIX");

	prefix_level = stderr_is_journal() || (e && strcmp(e, "1") == 0);
	iod_set_log_fn(lib_log, NULL);
}

void iod_log_set_max_level(int level)
{
	max_level = level;
}

int iod_log_get_max_level(void)
{
	return max_level;
}

int iod_log_level_from_string(const char *s)
{
	static const char *const names[] = {"emerg",   "alert",	 "crit", "err",
					    "warning", "notice", "info", "debug"};

	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	if (strcmp(s, "error") == 0)
		return LOG_ERR;
	if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
		return s[0] - '0';
	return -EINVAL;
}

int iod_log_internal(int level, int error, const char *format, ...)
{
	int saved = errno;
	va_list ap;

	if (error < 0)
		error = -error;
	if (level > max_level) {
		errno = saved;
		return -error;
	}

	if (prefix_level)
		fprintf(stderr, "<%d>", level);
	errno = error;
	va_start(ap, format);
	vfprintf(stderr, format, ap);
	va_end(ap);
	fputc('\n', stderr);
	errno = saved;
	return -error;
}
