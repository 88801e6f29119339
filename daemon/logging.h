/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyd's log: one line per message on stderr. When stderr is connected to the journal
 * (JOURNAL_STREAM matches it) or IOD_LOG_PREFIX=1, each line starts with "<N>", the syslog
 * level, which journald turns into the entry's priority.
 */
#ifndef IOD_LOGGING_H
#define IOD_LOGGING_H

#include <syslog.h>

#include "iod-util.h"

void iod_log_setup(void);
void iod_log_set_max_level(int level);
int iod_log_get_max_level(void);
/* "err", "warning", "notice", "info", "debug" (or 0..7) to a level; -EINVAL if unknown. */
int iod_log_level_from_string(const char *s);

/* Log at level; with error != 0, %m in format is strerror(|error|). Returns -|error|. */
int iod_log_internal(int level, int error, const char *format, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...) iod_log_internal(level, error, __VA_ARGS__)
#define log_error(...) iod_log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_warning(...) iod_log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_notice(...) iod_log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_info(...) iod_log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_debug(...) iod_log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_error_errno(error, ...) iod_log_internal(LOG_ERR, error, __VA_ARGS__)
#define log_warning_errno(error, ...) iod_log_internal(LOG_WARNING, error, __VA_ARGS__)
#define log_notice_errno(error, ...) iod_log_internal(LOG_NOTICE, error, __VA_ARGS__)
#define log_debug_errno(error, ...) iod_log_internal(LOG_DEBUG, error, __VA_ARGS__)

#endif
