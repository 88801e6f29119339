/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The state document (json-c). Writing validates first and emits a compact document;
 * reading runs the strict JSON parser (iod_json_parse(): json-c's strict tokener, then a
 * lexical pass for what json-c lets through: duplicate keys, trailing data, NUL bytes,
 * single quotes, NaN/Infinity, leading zeros, raw control characters, integers beyond 64
 * bits), then a typed walk over the tree, then the same consistency rules as
 * iod_state_validate().
 *
 * Encoding (proto/iodirty-state.schema.json): addresses, lengths and offsets are strings of
 * "0x" and 1 to 16 hex digits, so every uint64 survives any JSON reader; ids, uid and
 * page_shift are JSON integers; generation and rounds are JSON integers over the uint64
 * range (json-c reads them back exactly; the strict parser rejects anything larger instead
 * of letting json-c clamp it), except that a generation of 2^64-1 is refused: it has no
 * successor, so the next save would wrap to 0 and look older than every other state.
 * Absent fd names are null. A session's disconnect_policy, event_seq and pending_round are
 * the optional keys: disconnect_policy is written unless it is IOD_STATE_DISCONNECT_UNSET,
 * which is what a document without it (from a daemon that did not record it) reads back as;
 * event_seq and pending_round are written when they are not 0, which a document without
 * them reads back as. The root's restarts is optional in the same way as event_seq.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "iod-json.h"
#include "iod-state.h"
#include "iod-util.h"

#define STATE_MAX_DEPTH 8 /* the document needs 5 */
#define STATE_MAX_KEYS 17 /* the largest object of the document, a session, has 17 keys */
#define FDNAME_MAX 255 /* systemd's limit for FDNAME= */
#define OWNER_MAX 255 /* D-Bus names */
#define DEVICE_NAME_MAX 4095
#define PAGE_SHIFT_MIN 12
#define PAGE_SHIFT_MAX 30

static const char *const flag_names[] = {
	"tracking", /* IOD_SESSION_F_TRACKING */
	"failed", /* IOD_SESSION_F_FAILED */
	"huge-pages", /* IOD_SESSION_F_HUGE_PAGES */
	"viommu", /* IOD_SESSION_F_VIOMMU */
	"nested", /* IOD_SESSION_F_NESTED */
};

static const char *const mode_names[] = {
	[IOD_MODE_OWNER] = "owner",
	[IOD_MODE_ADOPT] = "adopt",
};

static const char *const disconnect_policy_names[] = {
	[IOD_STATE_DISCONNECT_UNSET] = NULL, /* not written */
	[IOD_STATE_DISCONNECT_DESTROY] = "destroy",
	[IOD_STATE_DISCONNECT_KEEP] = "keep",
};

/* ---------------------------------------------------------------------------------------- */
/* Reasons */

struct ctx {
	int err; /* -EBADMSG while parsing, -EINVAL when validating a struct */
	char *reason; /* the first failure */
	size_t si; /* index of the session at hand, SIZE_MAX outside sessions */
	const char *sname; /* its name, once known to be valid */
};

static void ctx_done(struct ctx *c)
{
	free(c->reason);
}

static inline bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/*
 * Record the first reason the input is rejected and return err. Messages are
 * "<field>: <what is wrong>" with the field relative to the session at hand; the session
 * is prefixed here ("sessions[2].regions[0].gpa: ..."), and a message that starts with ':'
 * is about the session (or the document) itself.
 */
_printf_(3, 4) static int fail_err(struct ctx *c, int err, const char *format, ...)
{
	_cleanup_free_ char *msg = NULL;
	char prefix[48], suffix[IOD_NAME_MAX + 16] = "";
	va_list ap;
	int r;

	if (c->reason)
		return err;

	va_start(ap, format);
	r = vasprintf(&msg, format, ap);
	va_end(ap);
	if (r < 0) {
		msg = NULL;
		return -ENOMEM;
	}
	if (c->si != SIZE_MAX)
		snprintf(prefix, sizeof(prefix), "sessions[%zu]%s", c->si,
			 msg[0] == ':' ? "" : ".");
	else
		snprintf(prefix, sizeof(prefix), "%s", msg[0] == ':' ? "document" : "");
	if (c->sname)
		snprintf(suffix, sizeof(suffix), " (session \"%s\")", c->sname);
	if (asprintf(&c->reason, "%s%s%s", prefix, msg, suffix) < 0) {
		c->reason = NULL;
		return -ENOMEM;
	}
	return err;
}

#define fail(c, ...) fail_err((c), (c)->err, __VA_ARGS__)

/* Copy at most 64 bytes of untrusted text for a message, with '?' for anything unprintable. */
static const char *printable(const char *s, size_t len, char buf[static 68])
{
	size_t n = 0;

	for (; n < len && n < 64; n++)
		buf[n] = s[n] >= 0x20 && s[n] < 0x7f && s[n] != '"' && s[n] != '\\' ? s[n] : '?';
	if (n < len) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = 0;
	return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* Rules shared by the parser and the validator */

bool iod_session_name_valid(const char *name)
{
	size_t n = 0;

	if (!name)
		return false;
	for (; name[n]; n++) {
		char ch = name[n];

		if (n >= IOD_NAME_MAX)
			return false;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
			return false;
	}
	return n > 0;
}

/* Printable ASCII, 1..max bytes, none of the bytes in reject. */
static bool ascii_text_valid(const char *s, size_t max, const char *reject)
{
	size_t n = 0;

	for (; s[n]; n++) {
		if (n >= max)
			return false;
		if (s[n] < 0x20 || s[n] > 0x7e || strchr(reject, s[n]))
			return false;
	}
	return n > 0;
}

/* The fd store's rule for names: printable ASCII except ':', 1..255 bytes. */
static bool fdname_valid(const char *s)
{
	return ascii_text_valid(s, FDNAME_MAX, ":");
}

/* An fd name field: valid when set, and set when required. field is printf'ed with i. */
_printf_(2, 0) static int check_fdname(struct ctx *c, const char *field, size_t i,
				       const char *fdname, bool required)
{
	char name[48];

	snprintf(name, sizeof(name), field, i);
	if (!fdname && required)
		return fail(c, "%s: required in owner mode", name);
	if (fdname && !fdname_valid(fdname))
		return fail(c,
			    "%s: not a valid fd name (1 to %d printable ASCII characters, no ':')",
			    name, FDNAME_MAX);
	return 0;
}

/* Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF) without control
 * characters, 1..max bytes. */
static bool utf8_text_valid(const char *str, size_t max)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (s[i]) {
		unsigned c = s[i], need, cp;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else
			return false;
		for (unsigned k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false; /* also stops at the terminating NUL */
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		if (cp >= 0x80 && cp < 0xa0) /* C1 controls */
			return false;
		i += need + 1;
	}
	return i > 0 && i <= max;
}

/* Sort helpers: index arrays ordered by a key, ties by index (so messages are stable). */
struct sort_ctx {
	const void *base;
	size_t size; /* element size */
	size_t offset; /* of the uint32_t/uint64_t key, or of the char * key */
	int kind; /* 32, 64 or 's' */
};

static int cmp_index(const void *a, const void *b, void *userdata)
{
	const struct sort_ctx *sc = userdata;
	size_t ia = *(const size_t *)a, ib = *(const size_t *)b;
	const char *ea = (const char *)sc->base + ia * sc->size + sc->offset;
	const char *eb = (const char *)sc->base + ib * sc->size + sc->offset;
	int r = 0;

	if (sc->kind == 32) {
		uint32_t x, y;

		memcpy(&x, ea, sizeof(x));
		memcpy(&y, eb, sizeof(y));
		r = (x > y) - (x < y);
	} else if (sc->kind == 64) {
		uint64_t x, y;

		memcpy(&x, ea, sizeof(x));
		memcpy(&y, eb, sizeof(y));
		r = (x > y) - (x < y);
	} else {
		const char *x, *y;

		memcpy(&x, ea, sizeof(x));
		memcpy(&y, eb, sizeof(y));
		r = strcmp(x, y);
	}
	if (r != 0)
		return r;
	return (ia > ib) - (ia < ib);
}

/* Indexes 0..n-1 of base sorted by the key; NULL with -ENOMEM. n may be 0. */
static size_t *sorted_index(const void *base, size_t n, size_t size, size_t offset, int kind)
{
	struct sort_ctx sc = {base, size, offset, kind};
	size_t *idx = malloc((n ? n : 1) * sizeof(*idx));

	if (!idx)
		return NULL;
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	qsort_r(idx, n, sizeof(*idx), cmp_index, &sc);
	return idx;
}

#define SORTED_INDEX(array, n, field, kind) \
	sorted_index((array), (n), sizeof(*(array)), offsetof(__typeof__(*(array)), field), (kind))

/* An address range: non-zero, aligned to the page, not wrapping. */
static int check_range(struct ctx *c, const char *what, size_t i, const char *addr_name,
		       uint64_t addr, uint64_t length, uint64_t page)
{
	uint64_t end;

	if (length == 0)
		return fail(c, "%s[%zu].length: must not be zero", what, i);
	if (!iod_is_aligned(addr, page))
		return fail(c,
			    "%s[%zu].%s: 0x%" PRIx64 " is not aligned to the page size 0x%" PRIx64,
			    what, i, addr_name, addr, page);
	if (!iod_is_aligned(length, page))
		return fail(c,
			    "%s[%zu].length: 0x%" PRIx64
			    " is not a multiple of the page size 0x%" PRIx64,
			    what, i, length, page);
	if (iod_add_overflow(addr, length, &end))
		return fail(c,
			    "%s[%zu].%s: 0x%" PRIx64 " + length 0x%" PRIx64
			    " goes past the end of the 64-bit address space",
			    what, i, addr_name, addr, length);
	return 0;
}

/* Ranges [start, start + length) sorted by start must not overlap. */
static int check_overlaps(struct ctx *c, const char *what, const char *addr_name, const void *base,
			  size_t n, size_t size, size_t start_off, size_t length_off)
{
	_cleanup_free_ size_t *idx = sorted_index(base, n, size, start_off, 64);

	if (!idx)
		return -ENOMEM;
	for (size_t k = 1; k < n; k++) {
		const char *a = (const char *)base + idx[k - 1] * size;
		const char *b = (const char *)base + idx[k] * size;
		uint64_t a_start, a_len, b_start;

		memcpy(&a_start, a + start_off, sizeof(a_start));
		memcpy(&a_len, a + length_off, sizeof(a_len));
		memcpy(&b_start, b + start_off, sizeof(b_start));
		if (a_start + a_len > b_start) /* ranges were checked not to wrap */
			return fail(c, "%s[%zu].%s: overlaps %s[%zu]", what,
				    MAX(idx[k - 1], idx[k]), addr_name, what,
				    MIN(idx[k - 1], idx[k]));
	}
	return 0;
}

static int validate_session(struct ctx *c, const struct iod_state_session *s)
{
	bool owner_mode = s->mode == IOD_MODE_OWNER;
	_cleanup_free_ size_t *hwpt_idx = NULL;
	uint64_t page;
	int r;

	if (!s->name)
		return fail(c, "name: missing");
	if (!iod_session_name_valid(s->name))
		return fail(c, "name: not a valid session name (1 to %d of A-Z a-z 0-9 _ -)",
			    IOD_NAME_MAX);
	c->sname = s->name;

	if (s->mode != IOD_MODE_OWNER && s->mode != IOD_MODE_ADOPT)
		return fail(c, "mode: unknown mode %d", (int)s->mode);
	if (s->disconnect_policy != IOD_STATE_DISCONNECT_UNSET &&
	    s->disconnect_policy != IOD_STATE_DISCONNECT_DESTROY &&
	    s->disconnect_policy != IOD_STATE_DISCONNECT_KEEP)
		return fail(c, "disconnect_policy: unknown policy %d", (int)s->disconnect_policy);
	if (s->page_shift < PAGE_SHIFT_MIN || s->page_shift > PAGE_SHIFT_MAX)
		return fail(c, "page_shift: %u is out of range (%d to %d)", s->page_shift,
			    PAGE_SHIFT_MIN, PAGE_SHIFT_MAX);
	page = UINT64_C(1) << s->page_shift;
	if (s->flags & ~IOD_SESSION_F_ALL)
		return fail(c, "flags: unknown flags 0x%" PRIx64, s->flags & ~IOD_SESSION_F_ALL);
	if (s->pending_round != 0 && s->pending_round != s->rounds)
		return fail(c,
			    "pending_round: %" PRIu64 " is not the current round %" PRIu64
			    " (rounds): only the last round can be pending",
			    s->pending_round, s->rounds);
	if (s->owner && !ascii_text_valid(s->owner, OWNER_MAX, ""))
		return fail(c, "owner: must be 1 to %d printable ASCII characters", OWNER_MAX);
	r = check_fdname(c, "iommufd_fdname", 0, s->iommufd_fdname, owner_mode);
	if (r < 0)
		return r;
	r = check_fdname(c, "log_fdname", 0, s->log_fdname, false);
	if (r < 0)
		return r;

	if (s->n_hwpts && !s->hwpts)
		return fail(c, "hwpts: %zu entries but no array", s->n_hwpts);
	if (s->n_devices && !s->devices)
		return fail(c, "devices: %zu entries but no array", s->n_devices);
	if (s->n_regions && !s->regions)
		return fail(c, "regions: %zu entries but no array", s->n_regions);
	if (s->n_mappings && !s->mappings)
		return fail(c, "mappings: %zu entries but no array", s->n_mappings);

	/* hwpts: unique ids */
	hwpt_idx = SORTED_INDEX(s->hwpts, s->n_hwpts, id, 32);
	if (!hwpt_idx)
		return -ENOMEM;
	for (size_t k = 1; k < s->n_hwpts; k++)
		if (s->hwpts[hwpt_idx[k - 1]].id == s->hwpts[hwpt_idx[k]].id)
			return fail(c, "hwpts[%zu].id: duplicate id %u (also hwpts[%zu])",
				    hwpt_idx[k], s->hwpts[hwpt_idx[k]].id, hwpt_idx[k - 1]);

	/* nested: the nest parent first, the rest its children; nothing nested elsewhere */
	if (s->flags & IOD_SESSION_F_NESTED) {
		if (s->flags & IOD_SESSION_F_VIOMMU)
			return fail(c, "flags: \"nested\" and \"viommu\" exclude each other (a "
				       "nest parent is indexed by GPA)");
		if (s->n_hwpts > 0 && s->hwpts[0].parent_id != 0)
			return fail(c, "hwpts[0].parent_id: the first hwpt of a nested session is "
				       "its nest parent, which has none");
		if (s->n_hwpts > 0 && !s->hwpts[0].dirty_capable)
			return fail(c, "hwpts[0].dirty_capable: a nested session's nest parent "
				       "must track dirty pages");
		for (size_t i = 1; i < s->n_hwpts; i++) {
			if (s->hwpts[i].parent_id != s->hwpts[0].id)
				return fail(c,
					    "hwpts[%zu].parent_id: %u is not the nest parent %u "
					    "(hwpts[0])",
					    i, s->hwpts[i].parent_id, s->hwpts[0].id);
			if (s->hwpts[i].dirty_capable || s->hwpts[i].tracking)
				return fail(
					c,
					"hwpts[%zu]: a nested hwpt has no dirty bits of its own "
					"(dirty_capable and tracking must be false)",
					i);
		}
	} else {
		for (size_t i = 0; i < s->n_hwpts; i++)
			if (s->hwpts[i].parent_id != 0)
				return fail(c,
					    "hwpts[%zu].parent_id: only a session with the flag "
					    "\"nested\" has nested hwpts",
					    i);
	}

	/* devices: unique indexes, known hwpts, fd names in owner mode */
	for (size_t i = 0; i < s->n_devices; i++) {
		const struct iod_state_device *d = &s->devices[i];
		size_t lo = 0, hi = s->n_hwpts;

		if (!d->name || !utf8_text_valid(d->name, DEVICE_NAME_MAX))
			return fail(c, "devices[%zu].name: must be 1 to %d bytes of UTF-8 %s", i,
				    DEVICE_NAME_MAX, "without control characters");
		r = check_fdname(c, "devices[%zu].fdname", i, d->fdname, owner_mode);
		if (r < 0)
			return r;
		if (d->device_log && d->dirty_capable)
			return fail(
				c,
				"devices[%zu]: a device that logs its own DMA (device_log) is "
				"on a HWPT that can track (dirty_capable true): it must be false",
				i);
		if (d->emulated) {
			if (d->hwpt_id != 0 || d->dirty_capable)
				return fail(c,
					    "devices[%zu]: an emulated device is on no HWPT "
					    "(hwpt_id 0, dirty_capable false)",
					    i);
			continue;
		}
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (s->hwpts[hwpt_idx[mid]].id < d->hwpt_id)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo >= s->n_hwpts || s->hwpts[hwpt_idx[lo]].id != d->hwpt_id)
			return fail(c, "devices[%zu].hwpt_id: %u is not one of the session's hwpts",
				    i, d->hwpt_id);
	}
	{
		_cleanup_free_ size_t *idx = SORTED_INDEX(s->devices, s->n_devices, index, 32);

		if (!idx)
			return -ENOMEM;
		for (size_t k = 1; k < s->n_devices; k++)
			if (s->devices[idx[k - 1]].index == s->devices[idx[k]].index)
				return fail(
					c,
					"devices[%zu].index: duplicate index %u (also devices[%zu])",
					idx[k], s->devices[idx[k]].index, idx[k - 1]);
	}

	/* regions */
	for (size_t i = 0; i < s->n_regions; i++) {
		const struct iod_state_region *g = &s->regions[i];
		uint64_t end;

		r = check_range(c, "regions", i, "gpa", g->gpa, g->length, page);
		if (r < 0)
			return r;
		if (iod_add_overflow(g->offset, g->length, &end))
			return fail(c,
				    "regions[%zu].offset: 0x%" PRIx64 " + length 0x%" PRIx64
				    " goes past the end of the 64-bit range",
				    i, g->offset, g->length);
		r = check_fdname(c, "regions[%zu].fdname", i, g->fdname, owner_mode);
		if (r < 0)
			return r;
	}
	r = check_overlaps(c, "regions", "gpa", s->regions, s->n_regions, sizeof(*s->regions),
			   offsetof(struct iod_state_region, gpa),
			   offsetof(struct iod_state_region, length));
	if (r < 0)
		return r;

	/* mappings */
	for (size_t i = 0; i < s->n_mappings; i++) {
		const struct iod_mapping *mp = &s->mappings[i];

		r = check_range(c, "mappings", i, "iova", mp->iova, mp->length, page);
		if (r < 0)
			return r;
		r = check_range(c, "mappings", i, "gpa", mp->gpa, mp->length, page);
		if (r < 0)
			return r;
	}
	return check_overlaps(c, "mappings", "iova", s->mappings, s->n_mappings,
			      sizeof(*s->mappings), offsetof(struct iod_mapping, iova),
			      offsetof(struct iod_mapping, length));
}

static int validate(struct ctx *c, const struct iod_state *st)
{
	_cleanup_free_ size_t *idx = NULL;
	int r;

	if (st->generation == UINT64_MAX)
		return fail(c,
			    "generation: %" PRIu64
			    " has no successor (the next save would wrap to 0)",
			    st->generation);
	if (st->n_sessions && !st->sessions)
		return fail(c, "sessions: %zu entries but no array", st->n_sessions);

	for (size_t i = 0; i < st->n_sessions; i++) {
		c->si = i;
		c->sname = NULL;
		r = validate_session(c, &st->sessions[i]);
		if (r < 0)
			return r;
	}
	c->si = SIZE_MAX;
	c->sname = NULL;

	idx = SORTED_INDEX(st->sessions, st->n_sessions, name, 's');
	if (!idx)
		return -ENOMEM;
	for (size_t k = 1; k < st->n_sessions; k++)
		if (streq(st->sessions[idx[k - 1]].name, st->sessions[idx[k]].name)) {
			c->si = idx[k];
			return fail(c, "name: duplicate session name \"%s\" (also sessions[%zu])",
				    st->sessions[idx[k]].name, idx[k - 1]);
		}
	return 0;
}

int iod_state_validate(const struct iod_state *st, char **ret_reason)
{
	_cleanup_(ctx_done) struct ctx c = {.err = -EINVAL, .si = SIZE_MAX};
	int r;

	if (!st)
		return -EINVAL;
	r = validate(&c, st);
	if (r == -EINVAL && ret_reason)
		*ret_reason = TAKE_PTR(c.reason);
	return r;
}

/* ---------------------------------------------------------------------------------------- */
/* Freeing */

void iod_state_session_clear(struct iod_state_session *s)
{
	if (!s)
		return;
	free(s->name);
	free(s->owner);
	free(s->iommufd_fdname);
	free(s->log_fdname);
	free(s->hwpts);
	for (size_t i = 0; s->devices && i < s->n_devices; i++) {
		free(s->devices[i].name);
		free(s->devices[i].fdname);
	}
	free(s->devices);
	for (size_t i = 0; s->regions && i < s->n_regions; i++)
		free(s->regions[i].fdname);
	free(s->regions);
	free(s->mappings);
	*s = (struct iod_state_session){};
}

struct iod_state *iod_state_free(struct iod_state *st)
{
	if (!st)
		return NULL;
	for (size_t i = 0; st->sessions && i < st->n_sessions; i++)
		iod_state_session_clear(&st->sessions[i]);
	free(st->sessions);
	free(st);
	return NULL;
}

IOD_DEFINE_FREEP(struct iod_state, iod_state_free);

static void json_putp(struct json_object **o)
{
	json_object_put(*o);
}

/* ---------------------------------------------------------------------------------------- */
/* Writing */

/* Add val to obj under key. Takes val in every case; NULL val means out of memory. */
static int add(struct json_object *obj, const char *key, struct json_object *val)
{
	if (!val)
		return -ENOMEM;
	if (json_object_object_add_ex(obj, key, val,
				      JSON_C_OBJECT_ADD_KEY_IS_NEW |
					      JSON_C_OBJECT_ADD_CONSTANT_KEY) < 0) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

static int add_null(struct json_object *obj, const char *key)
{
	if (json_object_object_add_ex(obj, key, NULL,
				      JSON_C_OBJECT_ADD_KEY_IS_NEW |
					      JSON_C_OBJECT_ADD_CONSTANT_KEY) < 0)
		return -ENOMEM;
	return 0;
}

static int append(struct json_object *array, struct json_object *val)
{
	if (!val)
		return -ENOMEM;
	if (json_object_array_add(array, val) < 0) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

static struct json_object *new_hex(uint64_t v)
{
	char buf[sizeof("0x") + 16];

	snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
	return json_object_new_string(buf);
}

static int add_string_or_null(struct json_object *obj, const char *key, const char *s)
{
	return s ? add(obj, key, json_object_new_string(s)) : add_null(obj, key);
}

/* Build a new object in *ret, added to array first, so only the root is ever put. */
static int append_object(struct json_object *array, struct json_object **ret)
{
	struct json_object *o = json_object_new_object();
	int r;

	r = append(array, o);
	if (r < 0)
		return r;
	*ret = o;
	return 0;
}

static int add_array(struct json_object *obj, const char *key, struct json_object **ret)
{
	struct json_object *a = json_object_new_array();
	int r;

	r = add(obj, key, a);
	if (r < 0)
		return r;
	*ret = a;
	return 0;
}

static int session_to_json(const struct iod_state_session *s, struct json_object *o)
{
	struct json_object *a, *e;
	int r;

	if ((r = add(o, "name", json_object_new_string(s->name))) < 0 ||
	    (r = add(o, "uid", json_object_new_int64(s->uid))) < 0 ||
	    (r = add_string_or_null(o, "owner", s->owner)) < 0 ||
	    (r = add(o, "mode", json_object_new_string(mode_names[s->mode]))) < 0)
		return r;
	if (s->disconnect_policy != IOD_STATE_DISCONNECT_UNSET) {
		r = add(o, "disconnect_policy",
			json_object_new_string(disconnect_policy_names[s->disconnect_policy]));
		if (r < 0)
			return r;
	}
	if ((r = add(o, "ioas_id", json_object_new_int64(s->ioas_id))) < 0 ||
	    (r = add(o, "page_shift", json_object_new_int64(s->page_shift))) < 0 ||
	    (r = add_array(o, "flags", &a)) < 0)
		return r;
	for (size_t k = 0; k < ELEMENTSOF(flag_names); k++)
		if (s->flags & (UINT64_C(1) << k)) {
			r = append(a, json_object_new_string(flag_names[k]));
			if (r < 0)
				return r;
		}
	if (s->event_seq) {
		r = add(o, "event_seq", json_object_new_uint64(s->event_seq));
		if (r < 0)
			return r;
	}
	if ((r = add(o, "rounds", json_object_new_uint64(s->rounds))) < 0)
		return r;
	if (s->pending_round) {
		r = add(o, "pending_round", json_object_new_uint64(s->pending_round));
		if (r < 0)
			return r;
	}
	if ((r = add_string_or_null(o, "iommufd_fdname", s->iommufd_fdname)) < 0 ||
	    (r = add_string_or_null(o, "log_fdname", s->log_fdname)) < 0)
		return r;

	if ((r = add_array(o, "hwpts", &a)) < 0)
		return r;
	for (size_t i = 0; i < s->n_hwpts; i++) {
		const struct iod_state_hwpt *h = &s->hwpts[i];

		if ((r = append_object(a, &e)) < 0 ||
		    (r = add(e, "id", json_object_new_int64(h->id))) < 0 ||
		    (r = add(e, "dirty_capable", json_object_new_boolean(h->dirty_capable))) < 0 ||
		    (r = add(e, "tracking", json_object_new_boolean(h->tracking))) < 0 ||
		    (r = add(e, "owned", json_object_new_boolean(h->owned))) < 0)
			return r;
		if (h->parent_id != 0 &&
		    (r = add(e, "parent_id", json_object_new_int64(h->parent_id))) < 0)
			return r;
	}

	if ((r = add_array(o, "devices", &a)) < 0)
		return r;
	for (size_t i = 0; i < s->n_devices; i++) {
		const struct iod_state_device *d = &s->devices[i];

		if ((r = append_object(a, &e)) < 0 ||
		    (r = add(e, "index", json_object_new_int64(d->index))) < 0 ||
		    (r = add(e, "name", json_object_new_string(d->name))) < 0 ||
		    (r = add_string_or_null(e, "fdname", d->fdname)) < 0 ||
		    (r = add(e, "dev_id", json_object_new_int64(d->dev_id))) < 0 ||
		    (r = add(e, "hwpt_id", json_object_new_int64(d->hwpt_id))) < 0 ||
		    (r = add(e, "dirty_capable", json_object_new_boolean(d->dirty_capable))) < 0)
			return r;
		/* Only when set: a document without them reads as before. */
		if (d->emulated && (r = add(e, "emulated", json_object_new_boolean(true))) < 0)
			return r;
		if (d->device_log && (r = add(e, "device_log", json_object_new_boolean(true))) < 0)
			return r;
	}

	if ((r = add_array(o, "regions", &a)) < 0)
		return r;
	for (size_t i = 0; i < s->n_regions; i++) {
		const struct iod_state_region *g = &s->regions[i];

		if ((r = append_object(a, &e)) < 0 || (r = add(e, "gpa", new_hex(g->gpa))) < 0 ||
		    (r = add(e, "length", new_hex(g->length))) < 0 ||
		    (r = add(e, "offset", new_hex(g->offset))) < 0 ||
		    (r = add_string_or_null(e, "fdname", g->fdname)) < 0)
			return r;
	}

	if ((r = add_array(o, "mappings", &a)) < 0)
		return r;
	for (size_t i = 0; i < s->n_mappings; i++) {
		const struct iod_mapping *mp = &s->mappings[i];

		if ((r = append_object(a, &e)) < 0 || (r = add(e, "iova", new_hex(mp->iova))) < 0 ||
		    (r = add(e, "gpa", new_hex(mp->gpa))) < 0 ||
		    (r = add(e, "length", new_hex(mp->length))) < 0)
			return r;
	}
	return 0;
}

int iod_state_to_json(const struct iod_state *st, char **ret_json)
{
	_cleanup_(json_putp) struct json_object *root = NULL;
	struct json_object *sessions;
	const char *text;
	char *copy;
	int r;

	if (!st || !ret_json)
		return -EINVAL;

	{
		_cleanup_(ctx_done) struct ctx c = {.err = -EINVAL, .si = SIZE_MAX};

		r = validate(&c, st);
		if (r < 0) {
			if (c.reason)
				iod_debug("Refusing to serialise an inconsistent state: %s",
					  c.reason);
			return r;
		}
	}

	root = json_object_new_object();
	if (!root)
		return -ENOMEM;
	if ((r = add(root, "version", json_object_new_int64(IOD_STATE_VERSION))) < 0 ||
	    (r = add(root, "generation", json_object_new_uint64(st->generation))) < 0 ||
	    (st->restarts &&
	     (r = add(root, "restarts", json_object_new_uint64(st->restarts))) < 0) ||
	    (r = add_array(root, "sessions", &sessions)) < 0)
		return r;
	for (size_t i = 0; i < st->n_sessions; i++) {
		struct json_object *o;

		r = append_object(sessions, &o);
		if (r < 0)
			return r;
		r = session_to_json(&st->sessions[i], o);
		if (r < 0)
			return r;
	}

	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
							    JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!text)
		return -ENOMEM;
	copy = strdup(text);
	if (!copy)
		return -ENOMEM;
	*ret_json = copy;
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading */

/* A JSON string equal to s, embedded NULs included. */
static bool string_is(struct json_object *v, const char *s)
{
	size_t len = strlen(s);

	return (size_t)json_object_get_string_len(v) == len &&
	       memcmp(json_object_get_string(v), s, len) == 0;
}

static const char *type_name(struct json_object *v)
{
	switch (json_object_get_type(v)) {
	case json_type_null:
		return "null";
	case json_type_boolean:
		return "a boolean";
	case json_type_double:
		return "a non-integer number";
	case json_type_int:
		return "an integer";
	case json_type_object:
		return "an object";
	case json_type_array:
		return "an array";
	case json_type_string:
		return "a string";
	}
	return "unknown";
}

/*
 * The object at path may have only these keys, and must have the first n_required of them.
 * path is relative to the session (or empty for the root).
 */
static int check_keys(struct ctx *c, struct json_object *o, const char *path,
		      const char *const *keys, size_t n_keys, size_t n_required)
{
	json_object_object_foreach(o, key, val) {
		bool known = false;
		char buf[68];

		(void)val;
		for (size_t k = 0; k < n_keys && !known; k++)
			known = streq(key, keys[k]);
		if (!known)
			return fail(c, "%s: unknown key \"%s\"", path,
				    printable(key, strlen(key), buf));
	}
	for (size_t k = 0; k < n_required; k++)
		if (!json_object_object_get_ex(o, keys[k], NULL))
			return fail(c, "%s%s%s: missing", path, *path ? "." : "", keys[k]);
	return 0;
}

static struct json_object *field(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;
}

#define FIELD_FMT "%s%s%s"
#define FIELD_ARGS(path, key) (path), *(path) ? "." : "", (key)

static int get_uint(struct ctx *c, struct json_object *o, const char *path, const char *key,
		    uint64_t max, uint64_t *ret)
{
	struct json_object *v = field(o, key);
	uint64_t u;

	if (!json_object_is_type(v, json_type_int))
		return fail(c, FIELD_FMT ": expected an integer, got %s", FIELD_ARGS(path, key),
			    type_name(v));
	if (json_object_get_int64(v) < 0)
		return fail(c, FIELD_FMT ": must not be negative", FIELD_ARGS(path, key));
	u = json_object_get_uint64(v);
	if (u > max)
		return fail(c, FIELD_FMT ": %" PRIu64 " is out of range (at most %" PRIu64 ")",
			    FIELD_ARGS(path, key), u, max);
	*ret = u;
	return 0;
}

static int get_u32(struct ctx *c, struct json_object *o, const char *path, const char *key,
		   uint32_t *ret)
{
	uint64_t u;
	int r;

	r = get_uint(c, o, path, key, UINT32_MAX, &u);
	if (r < 0)
		return r;
	*ret = (uint32_t)u;
	return 0;
}

/* "0x" and 1 to 16 hex digits, nothing else. */
static int get_hex(struct ctx *c, struct json_object *o, const char *path, const char *key,
		   uint64_t *ret)
{
	struct json_object *v = field(o, key);
	const char *s;
	size_t len;
	uint64_t u = 0;

	if (!json_object_is_type(v, json_type_string))
		return fail(c, FIELD_FMT ": expected a \"0x...\" hex string, got %s",
			    FIELD_ARGS(path, key), type_name(v));
	s = json_object_get_string(v);
	len = json_object_get_string_len(v);
	if (len < 3 || len > 18 || s[0] != '0' || s[1] != 'x')
		return fail(c, FIELD_FMT ": expected \"0x\" and 1 to 16 hex digits",
			    FIELD_ARGS(path, key));
	for (size_t i = 2; i < len; i++) {
		char ch = s[i];
		unsigned d;

		if (ch >= '0' && ch <= '9')
			d = ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			d = ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			d = ch - 'A' + 10;
		else
			return fail(c, FIELD_FMT ": expected \"0x\" and 1 to 16 hex digits",
				    FIELD_ARGS(path, key));
		u = (u << 4) | d;
	}
	*ret = u;
	return 0;
}

static int get_bool(struct ctx *c, struct json_object *o, const char *path, const char *key,
		    bool *ret)
{
	struct json_object *v = field(o, key);

	if (!json_object_is_type(v, json_type_boolean))
		return fail(c, FIELD_FMT ": expected a boolean, got %s", FIELD_ARGS(path, key),
			    type_name(v));
	*ret = json_object_get_boolean(v);
	return 0;
}

/* A string, or with nullable also null (*ret = NULL). Content rules are validate()'s. */
static int get_string(struct ctx *c, struct json_object *o, const char *path, const char *key,
		      bool nullable, char **ret)
{
	struct json_object *v = field(o, key);
	const char *s;
	char *copy;

	if (nullable && json_object_is_type(v, json_type_null)) {
		*ret = NULL;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return fail(c, FIELD_FMT ": expected a string%s, got %s", FIELD_ARGS(path, key),
			    nullable ? " or null" : "", type_name(v));
	s = json_object_get_string(v);
	if (strlen(s) != (size_t)json_object_get_string_len(v))
		return fail(c, FIELD_FMT ": contains a NUL character", FIELD_ARGS(path, key));
	copy = strdup(s);
	if (!copy)
		return -ENOMEM;
	*ret = copy;
	return 0;
}

/* The array at key, its length in *ret_n. */
static int get_array(struct ctx *c, struct json_object *o, const char *path, const char *key,
		     struct json_object **ret, size_t *ret_n)
{
	struct json_object *v = field(o, key);

	if (!json_object_is_type(v, json_type_array))
		return fail(c, FIELD_FMT ": expected an array, got %s", FIELD_ARGS(path, key),
			    type_name(v));
	*ret = v;
	*ret_n = json_object_array_length(v);
	return 0;
}

/* Element i of array key must be an object with exactly these keys; path gets "key[i]". */
/* An element of an array of objects with keys, every one required but the last n_optional. */
static int get_element_opt(struct ctx *c, struct json_object *array, const char *key, size_t i,
			   const char *const *keys, size_t n_keys, size_t n_optional, char *path,
			   size_t path_size, struct json_object **ret)
{
	struct json_object *e = json_object_array_get_idx(array, i);
	int r;

	snprintf(path, path_size, "%s[%zu]", key, i);
	if (!json_object_is_type(e, json_type_object))
		return fail(c, "%s: expected an object, got %s", path, type_name(e));
	r = check_keys(c, e, path, keys, n_keys, n_keys - n_optional);
	if (r < 0)
		return r;
	*ret = e;
	return 0;
}

static int get_element(struct ctx *c, struct json_object *array, const char *key, size_t i,
		       const char *const *keys, size_t n_keys, char *path, size_t path_size,
		       struct json_object **ret)
{
	return get_element_opt(c, array, key, i, keys, n_keys, 0, path, path_size, ret);
}

/* calloc that is happy with n == 0 (returns NULL then, which is fine for the state). */
static int alloc_array(void **ret, size_t n, size_t size)
{
	void *p;

	if (n == 0) {
		*ret = NULL;
		return 0;
	}
	p = calloc(n, size);
	if (!p)
		return -ENOMEM;
	*ret = p;
	return 0;
}

/* All required but the last: parent_id (nested hwpts only) came later. */
static const char *const hwpt_keys[] = {"id", "dirty_capable", "tracking", "owned", "parent_id"};
/* All required but the last two: emulated and device_log (device DMA logging) came later. */
static const char *const device_keys[] = {"index",   "name",	      "fdname",	  "dev_id",
					  "hwpt_id", "dirty_capable", "emulated", "device_log"};
static const char *const region_keys[] = {"gpa", "length", "offset", "fdname"};
static const char *const mapping_keys[] = {"iova", "gpa", "length"};
/* All required but the last N_SESSION_OPTIONAL: disconnect_policy, event_seq and
 * pending_round came later. */
static const char *const session_keys[] = {
	"name",	      "uid",	       "owner",	  "mode",	    "ioas_id",
	"page_shift", "flags",	       "rounds",  "iommufd_fdname", "log_fdname",
	"hwpts",      "devices",       "regions", "mappings",	    "disconnect_policy",
	"event_seq",  "pending_round",
};
#define N_SESSION_OPTIONAL 3
/* All required but the last: restarts came later. */
static const char *const root_keys[] = {"version", "generation", "sessions", "restarts"};

static int parse_flags(struct ctx *c, struct json_object *o, uint64_t *ret)
{
	struct json_object *a;
	uint64_t flags = 0;
	size_t n;
	int r;

	r = get_array(c, o, "", "flags", &a, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct json_object *v = json_object_array_get_idx(a, i);
		const char *s;
		size_t k;
		char buf[68];

		if (!json_object_is_type(v, json_type_string))
			return fail(c, "flags[%zu]: expected a string, got %s", i, type_name(v));
		s = json_object_get_string(v);
		for (k = 0; k < ELEMENTSOF(flag_names); k++)
			if (string_is(v, flag_names[k]))
				break;
		if (k >= ELEMENTSOF(flag_names))
			return fail(c, "flags[%zu]: unknown flag \"%s\"", i,
				    printable(s, json_object_get_string_len(v), buf));
		if (flags & (UINT64_C(1) << k))
			return fail(c, "flags[%zu]: \"%s\" listed twice", i, flag_names[k]);
		flags |= UINT64_C(1) << k;
	}
	*ret = flags;
	return 0;
}

/* Optional: a document without the key (an older daemon's) reads as UNSET. */
static int parse_disconnect_policy(struct ctx *c, struct json_object *o,
				   enum iod_state_disconnect_policy *ret)
{
	struct json_object *v;
	char buf[68];

	if (!json_object_object_get_ex(o, "disconnect_policy", &v)) {
		*ret = IOD_STATE_DISCONNECT_UNSET;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return fail(c, "disconnect_policy: expected a string, got %s", type_name(v));
	if (string_is(v, disconnect_policy_names[IOD_STATE_DISCONNECT_DESTROY]))
		*ret = IOD_STATE_DISCONNECT_DESTROY;
	else if (string_is(v, disconnect_policy_names[IOD_STATE_DISCONNECT_KEEP]))
		*ret = IOD_STATE_DISCONNECT_KEEP;
	else
		return fail(
			c,
			"disconnect_policy: unknown policy \"%s\" (expected \"destroy\" or \"keep\")",
			printable(json_object_get_string(v), json_object_get_string_len(v), buf));
	return 0;
}

static int parse_session(struct ctx *c, struct json_object *o, struct iod_state_session *s)
{
	struct json_object *a, *e, *v;
	char path[48];
	uint64_t u;
	size_t n;
	int r;

	if (!json_object_is_type(o, json_type_object))
		return fail(c, ": expected an object, got %s", type_name(o));
	r = check_keys(c, o, "", session_keys, ELEMENTSOF(session_keys),
		       ELEMENTSOF(session_keys) - N_SESSION_OPTIONAL);
	if (r < 0)
		return r;

	r = get_string(c, o, "", "name", false, &s->name);
	if (r < 0)
		return r;
	if (!iod_session_name_valid(s->name))
		return fail(c, "name: not a valid session name (1 to %d of A-Z a-z 0-9 _ -)",
			    IOD_NAME_MAX);
	c->sname = s->name;

	if ((r = get_u32(c, o, "", "uid", &s->uid)) < 0 ||
	    (r = get_string(c, o, "", "owner", true, &s->owner)) < 0)
		return r;

	v = field(o, "mode");
	if (!json_object_is_type(v, json_type_string))
		return fail(c, "mode: expected a string, got %s", type_name(v));
	if (string_is(v, mode_names[IOD_MODE_OWNER]))
		s->mode = IOD_MODE_OWNER;
	else if (string_is(v, mode_names[IOD_MODE_ADOPT]))
		s->mode = IOD_MODE_ADOPT;
	else {
		char buf[68];

		return fail(
			c, "mode: unknown mode \"%s\" (expected \"owner\" or \"adopt\")",
			printable(json_object_get_string(v), json_object_get_string_len(v), buf));
	}

	r = parse_disconnect_policy(c, o, &s->disconnect_policy);
	if (r < 0)
		return r;

	if ((r = get_u32(c, o, "", "ioas_id", &s->ioas_id)) < 0 ||
	    (r = get_uint(c, o, "", "page_shift", UINT_MAX, &u)) < 0)
		return r;
	s->page_shift = (unsigned)u;
	if ((r = parse_flags(c, o, &s->flags)) < 0 ||
	    (r = get_uint(c, o, "", "rounds", UINT64_MAX, &s->rounds)) < 0 ||
	    (json_object_object_get_ex(o, "pending_round", NULL) &&
	     (r = get_uint(c, o, "", "pending_round", UINT64_MAX, &s->pending_round)) < 0) ||
	    (json_object_object_get_ex(o, "event_seq", NULL) &&
	     (r = get_uint(c, o, "", "event_seq", UINT64_MAX, &s->event_seq)) < 0) ||
	    (r = get_string(c, o, "", "iommufd_fdname", true, &s->iommufd_fdname)) < 0 ||
	    (r = get_string(c, o, "", "log_fdname", true, &s->log_fdname)) < 0)
		return r;

	if ((r = get_array(c, o, "", "hwpts", &a, &n)) < 0 ||
	    (r = alloc_array((void **)&s->hwpts, n, sizeof(*s->hwpts))) < 0)
		return r;
	s->n_hwpts = n;
	for (size_t i = 0; i < n; i++) {
		struct iod_state_hwpt *h = &s->hwpts[i];

		if ((r = get_element_opt(c, a, "hwpts", i, hwpt_keys, ELEMENTSOF(hwpt_keys), 1,
					 path, sizeof(path), &e)) < 0 ||
		    (r = get_u32(c, e, path, "id", &h->id)) < 0 ||
		    (r = get_bool(c, e, path, "dirty_capable", &h->dirty_capable)) < 0 ||
		    (r = get_bool(c, e, path, "tracking", &h->tracking)) < 0 ||
		    (r = get_bool(c, e, path, "owned", &h->owned)) < 0)
			return r;
		if (json_object_object_get_ex(e, "parent_id", NULL)) {
			if ((r = get_u32(c, e, path, "parent_id", &h->parent_id)) < 0)
				return r;
			if (h->parent_id == 0)
				return fail(c, "%s.parent_id: 0 is no HWPT (leave the key out)",
					    path);
		}
	}

	if ((r = get_array(c, o, "", "devices", &a, &n)) < 0 ||
	    (r = alloc_array((void **)&s->devices, n, sizeof(*s->devices))) < 0)
		return r;
	s->n_devices = n;
	for (size_t i = 0; i < n; i++) {
		struct iod_state_device *d = &s->devices[i];

		if ((r = get_element_opt(c, a, "devices", i, device_keys, ELEMENTSOF(device_keys),
					 2, path, sizeof(path), &e)) < 0 ||
		    (r = get_u32(c, e, path, "index", &d->index)) < 0 ||
		    (r = get_string(c, e, path, "name", false, &d->name)) < 0 ||
		    (r = get_string(c, e, path, "fdname", true, &d->fdname)) < 0 ||
		    (r = get_u32(c, e, path, "dev_id", &d->dev_id)) < 0 ||
		    (r = get_u32(c, e, path, "hwpt_id", &d->hwpt_id)) < 0 ||
		    (r = get_bool(c, e, path, "dirty_capable", &d->dirty_capable)) < 0)
			return r;
		if ((json_object_object_get_ex(e, "emulated", NULL) &&
		     (r = get_bool(c, e, path, "emulated", &d->emulated)) < 0) ||
		    (json_object_object_get_ex(e, "device_log", NULL) &&
		     (r = get_bool(c, e, path, "device_log", &d->device_log)) < 0))
			return r;
	}

	if ((r = get_array(c, o, "", "regions", &a, &n)) < 0 ||
	    (r = alloc_array((void **)&s->regions, n, sizeof(*s->regions))) < 0)
		return r;
	s->n_regions = n;
	for (size_t i = 0; i < n; i++) {
		struct iod_state_region *g = &s->regions[i];

		if ((r = get_element(c, a, "regions", i, region_keys, ELEMENTSOF(region_keys), path,
				     sizeof(path), &e)) < 0 ||
		    (r = get_hex(c, e, path, "gpa", &g->gpa)) < 0 ||
		    (r = get_hex(c, e, path, "length", &g->length)) < 0 ||
		    (r = get_hex(c, e, path, "offset", &g->offset)) < 0 ||
		    (r = get_string(c, e, path, "fdname", true, &g->fdname)) < 0)
			return r;
	}

	if ((r = get_array(c, o, "", "mappings", &a, &n)) < 0 ||
	    (r = alloc_array((void **)&s->mappings, n, sizeof(*s->mappings))) < 0)
		return r;
	s->n_mappings = n;
	for (size_t i = 0; i < n; i++) {
		struct iod_mapping *mp = &s->mappings[i];

		if ((r = get_element(c, a, "mappings", i, mapping_keys, ELEMENTSOF(mapping_keys),
				     path, sizeof(path), &e)) < 0 ||
		    (r = get_hex(c, e, path, "iova", &mp->iova)) < 0 ||
		    (r = get_hex(c, e, path, "gpa", &mp->gpa)) < 0 ||
		    (r = get_hex(c, e, path, "length", &mp->length)) < 0)
			return r;
	}
	return 0;
}

static int parse_root(struct ctx *c, struct json_object *root, struct iod_state **ret)
{
	_cleanup_(iod_state_freep) struct iod_state *st = NULL;
	struct json_object *v, *sessions;
	size_t n;
	int r;

	if (!json_object_is_type(root, json_type_object))
		return fail(c, "the document is %s, not an object", type_name(root));

	/* The version decides how to read the rest, so it comes first. */
	v = field(root, "version");
	if (!v)
		return fail(c, "version: missing");
	if (!json_object_is_type(v, json_type_int))
		return fail(c, "version: expected an integer, got %s", type_name(v));
	if (json_object_get_int64(v) != IOD_STATE_VERSION)
		return fail_err(c, -EPROTO,
				"version: unsupported state version %" PRId64
				" (this build reads version %d)",
				json_object_get_int64(v), IOD_STATE_VERSION);

	r = check_keys(c, root, "", root_keys, ELEMENTSOF(root_keys), ELEMENTSOF(root_keys) - 1);
	if (r < 0)
		return r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	if ((r = get_uint(c, root, "", "generation", UINT64_MAX, &st->generation)) < 0 ||
	    (json_object_object_get_ex(root, "restarts", NULL) &&
	     (r = get_uint(c, root, "", "restarts", UINT64_MAX, &st->restarts)) < 0) ||
	    (r = get_array(c, root, "", "sessions", &sessions, &n)) < 0 ||
	    (r = alloc_array((void **)&st->sessions, n, sizeof(*st->sessions))) < 0)
		return r;
	st->n_sessions = n;
	for (size_t i = 0; i < n; i++) {
		c->si = i;
		c->sname = NULL;
		r = parse_session(c, json_object_array_get_idx(sessions, i), &st->sessions[i]);
		if (r < 0)
			return r;
	}
	c->si = SIZE_MAX;
	c->sname = NULL;

	r = validate(c, st);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(st);
	return 0;
}

int iod_state_from_json_len(const char *text, size_t len, struct iod_state **ret, char **ret_reason)
{
	_cleanup_(ctx_done) struct ctx c = {.err = -EBADMSG, .si = SIZE_MAX};
	_cleanup_(json_putp) struct json_object *root = NULL;
	_cleanup_free_ char *reason = NULL;
	struct iod_state *st = NULL;
	int r;

	if (!text || !ret)
		return -EINVAL;

	r = iod_json_parse(text, len, STATE_MAX_DEPTH, STATE_MAX_KEYS, &root, &reason);
	if (r == -EBADMSG)
		r = fail(&c, "%s", reason);
	else if (r >= 0)
		r = parse_root(&c, root, &st);
	if (r < 0) {
		if ((r == -EBADMSG || r == -EPROTO) && ret_reason)
			*ret_reason = TAKE_PTR(c.reason);
		return r;
	}
	*ret = st;
	return 0;
}

int iod_state_from_json(const char *json, struct iod_state **ret, char **ret_reason)
{
	if (!json)
		return -EINVAL;
	return iod_state_from_json_len(json, strlen(json), ret, ret_reason);
}
