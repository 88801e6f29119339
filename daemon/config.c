/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "config.h"
#include "iod-json.h"
#include "iodirty.h"
#include "logging.h"

#define CONFIG_MAX_BYTES (1u << 20)
#define CONFIG_MAX_DEPTH 8 /* the file needs 2 */
#define CONFIG_MAX_KEYS 64 /* per object; the file has fewer than 10 keys and limits */

void iod_config_init(struct iod_config *c)
{
	*c = (struct iod_config){
		.log_level = LOG_INFO,
		.disconnect_policy = IOD_DISCONNECT_DESTROY,
		.page_size = 4096,
		.huge_pages = false,
	};
	iod_limits_init(&c->limits);
}

void iod_config_clear(struct iod_config *c)
{
	free(c->iommufd_path);
	free(c->sysfs_root);
	c->iommufd_path = c->sysfs_root = NULL;
}

static const char *const policy_names[_IOD_DISCONNECT_MAX] = {
	[IOD_DISCONNECT_DESTROY] = "destroy",
	[IOD_DISCONNECT_KEEP] = "keep",
};

const char *iod_disconnect_policy_to_string(enum iod_disconnect_policy p)
{
	return p < _IOD_DISCONNECT_MAX ? policy_names[p] : NULL;
}

int iod_disconnect_policy_from_string(const char *s)
{
	for (int i = 0; i < _IOD_DISCONNECT_MAX; i++)
		if (strcmp(s, policy_names[i]) == 0)
			return i;
	return -EINVAL;
}

bool iod_page_size_valid(uint64_t v)
{
	return iod_is_pow2(v) && v >= 4096 && v <= (UINT64_C(1) << 30);
}

static int reasonf(char **ret_reason, const char *format, ...) _printf_(2, 3);
static int reasonf(char **ret_reason, const char *format, ...)
{
	va_list ap;
	char *s;

	va_start(ap, format);
	if (vasprintf(&s, format, ap) < 0)
		s = NULL;
	va_end(ap);
	if (ret_reason) {
		free(*ret_reason);
		*ret_reason = s;
	} else {
		free(s);
	}
	return -EINVAL;
}

int iod_config_set_limit(struct iod_config *c, const char *name, const char *value,
			 char **ret_reason)
{
	const struct iod_limit *d = iod_limit_find(name);
	unsigned long long v;
	char *end;

	if (!d)
		return reasonf(ret_reason, "unknown limit \"%s\"", name);
	errno = 0;
	v = strtoull(value, &end, 0);
	if (errno || end == value || *end || value[0] == '-')
		return reasonf(ret_reason, "limit \"%s\": \"%s\" is not a number", name, value);
	return iod_limit_set(&c->limits, d, v, ret_reason);
}

static int get_u64(struct json_object *v, const char *key, uint64_t *ret, char **ret_reason)
{
	int64_t i;

	if (!json_object_is_type(v, json_type_int))
		return reasonf(ret_reason, "\"%s\" must be an integer", key);
	i = json_object_get_int64(v);
	if (i < 0)
		return reasonf(ret_reason, "\"%s\" must not be negative", key);
	*ret = (uint64_t)i;
	return 0;
}

static int get_string(struct json_object *v, const char *key, const char **ret, char **ret_reason)
{
	if (!json_object_is_type(v, json_type_string))
		return reasonf(ret_reason, "\"%s\" must be a string", key);
	*ret = json_object_get_string(v);
	return 0;
}

static int parse_limits(struct iod_config *c, struct json_object *o, char **ret_reason)
{
	if (!json_object_is_type(o, json_type_object))
		return reasonf(ret_reason, "\"limits\" must be an object");

	json_object_object_foreach(o, key, val) {
		const struct iod_limit *d = iod_limit_find(key);
		uint64_t v;
		int r;

		if (!d)
			return reasonf(ret_reason, "unknown limit \"%s\"", key);
		r = get_u64(val, key, &v, ret_reason);
		if (r < 0)
			return r;
		r = iod_limit_set(&c->limits, d, v, ret_reason);
		if (r < 0)
			return r;
	}
	return 0;
}

static int set_path(char **dst, const char *key, const char *s, char **ret_reason)
{
	char *copy;

	if (s[0] != '/')
		return reasonf(ret_reason, "\"%s\" must be an absolute path", key);
	copy = strdup(s);
	if (!copy)
		return -ENOMEM;
	free(*dst);
	*dst = copy;
	return 0;
}

static void json_putp(struct json_object **o)
{
	if (*o)
		json_object_put(*o);
}

int iod_config_load(struct iod_config *c, const char *path, char **ret_reason)
{
	_cleanup_(json_putp) struct json_object *root = NULL;
	_cleanup_free_ char *text = NULL, *why = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t size = 0, alloc = 0;
	ssize_t n;
	int r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		if (alloc - size < 4096) {
			char *p;

			if (alloc >= CONFIG_MAX_BYTES)
				return reasonf(ret_reason, "%s: file is larger than 1 MiB", path);
			alloc = alloc ? alloc * 2 : 8192;
			p = realloc(text, alloc);
			if (!p)
				return -ENOMEM;
			text = p;
		}
		n = read(fd, text + size, alloc - size);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		size += (size_t)n;
	}
	if (size == 0)
		return reasonf(ret_reason, "%s: file is empty", path);

	/* strict, and over the bytes read: a NUL byte does not end the file */
	r = iod_json_parse(text, size, CONFIG_MAX_DEPTH, CONFIG_MAX_KEYS, &root, &why);
	if (r == -EBADMSG)
		return reasonf(ret_reason, "%s: %s", path, why);
	if (r < 0)
		return r;
	if (!json_object_is_type(root, json_type_object))
		return reasonf(ret_reason, "%s: the top level must be a JSON object", path);

	json_object_object_foreach(root, key, val) {
		const char *s = NULL;
		uint64_t v;

		if (strcmp(key, "log_level") == 0) {
			r = get_string(val, key, &s, ret_reason);
			if (r < 0)
				return r;
			r = iod_log_level_from_string(s);
			if (r < 0)
				return reasonf(ret_reason, "unknown log level \"%s\"", s);
			c->log_level = r;
		} else if (strcmp(key, "disconnect_policy") == 0) {
			r = get_string(val, key, &s, ret_reason);
			if (r < 0)
				return r;
			r = iod_disconnect_policy_from_string(s);
			if (r < 0)
				return reasonf(
					ret_reason,
					"disconnect_policy must be \"destroy\" or \"keep\", not \"%s\"",
					s);
			c->disconnect_policy = r;
		} else if (strcmp(key, "page_size") == 0) {
			r = get_u64(val, key, &v, ret_reason);
			if (r < 0)
				return r;
			if (!iod_page_size_valid(v))
				return reasonf(
					ret_reason,
					"page_size must be a power of two from 4096 to 1073741824");
			c->page_size = v;
		} else if (strcmp(key, "huge_pages") == 0) {
			if (!json_object_is_type(val, json_type_boolean))
				return reasonf(ret_reason, "\"huge_pages\" must be true or false");
			c->huge_pages = json_object_get_boolean(val);
		} else if (strcmp(key, "iommufd_path") == 0) {
			r = get_string(val, key, &s, ret_reason);
			if (r < 0)
				return r;
			r = set_path(&c->iommufd_path, key, s, ret_reason);
			if (r < 0)
				return r;
		} else if (strcmp(key, "sysfs_root") == 0) {
			r = get_string(val, key, &s, ret_reason);
			if (r < 0)
				return r;
			r = set_path(&c->sysfs_root, key, s, ret_reason);
			if (r < 0)
				return r;
		} else if (strcmp(key, "limits") == 0) {
			r = parse_limits(c, val, ret_reason);
			if (r < 0)
				return r;
		} else {
			return reasonf(ret_reason, "unknown key \"%s\"", key);
		}
	}
	return 0;
}
