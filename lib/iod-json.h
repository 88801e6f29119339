/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Strict JSON (RFC 8259) through json-c: the one parser for every document iodirty reads,
 * the daemon's configuration file and its saved state.
 *
 * json-c's default parser is lenient, and even its strict mode lets things through: it
 * keeps the last of duplicate keys silently, takes single-quoted keys, NaN and Infinity,
 * raw control characters in strings, clamps integers beyond 64 bits, and stops at a NUL
 * byte as if the text ended there. iod_json_parse() runs json-c's strict tokener and then
 * a lexical pass over the same bytes for all of that.
 */
#ifndef IOD_JSON_H
#define IOD_JSON_H

#include <stddef.h>

struct json_object;

/*
 * Parse text[0..len) as exactly one JSON value. len is what was read, not strlen(text), so
 * that a NUL byte is seen; text need not be NUL-terminated. Containers may nest max_depth
 * deep, and an object may hold max_keys keys.
 *
 * Rejected, each with a reason naming the problem and its byte offset: an empty text (or
 * only white space), a NUL byte anywhere, anything but white space after the first value
 * (a second value, garbage), duplicate keys in any object at any depth (also when spelled
 * with escapes), a key containing \u0000, single-quoted strings, trailing commas,
 * comments, literals other than true, false and null (NaN, Infinity), numbers JSON does
 * not allow (leading zeros, a '+', hex) or beyond the 64-bit range, raw control characters
 * in strings, invalid UTF-8, and nesting or key counts over the limits.
 *
 * Returns 0 with *ret a new reference (NULL for the text "null", which is how json-c
 * represents null); -EBADMSG with *ret_reason (may be NULL) set to a malloc'ed sentence;
 * -EINVAL for bad arguments (text or ret NULL, max_depth 0 or over 1024, max_keys 0);
 * -ENOMEM. *ret is written only on success.
 */
int iod_json_parse(const char *text, size_t len, unsigned max_depth, unsigned max_keys,
		   struct json_object **ret, char **ret_reason);

#endif
