/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The state document: the exact format (a golden document), round trips of rich and empty
 * states, and every rejection the strict parser and the validator make, each checked for
 * its errno and for a reason that names the offending field.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "iod-json.h"
#include "iodirty.h"

IOD_DEFINE_FREEP(struct iod_state, iod_state_free);

static void json_putp(struct json_object **o)
{
	json_object_put(*o);
}

static char *xstrdup(const char *s)
{
	char *p;

	if (!s)
		return NULL;
	p = strdup(s);
	ck_assert_ptr_nonnull(p);
	return p;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	ck_assert_ptr_nonnull(p);
	return p;
}

/* The format, pinned: what iod_state_to_json() writes for golden_state(). */
static const char golden[] =
	"{\"version\":1,\"generation\":7,\"sessions\":["
	"{\"name\":\"vm-a\",\"uid\":1000,\"owner\":\":1.42\",\"mode\":\"owner\","
	"\"disconnect_policy\":\"keep\",\"ioas_id\":2,"
	"\"page_shift\":12,\"flags\":[\"tracking\",\"viommu\"],\"rounds\":3,"
	"\"iommufd_fdname\":\"vm-a.iommufd\",\"log_fdname\":\"vm-a.log\","
	"\"hwpts\":[{\"id\":5,\"dirty_capable\":true,\"tracking\":true,\"owned\":true},"
	"{\"id\":6,\"dirty_capable\":false,\"tracking\":false,\"owned\":true}],"
	"\"devices\":[{\"index\":0,\"name\":\"0000:00:04.0\",\"fdname\":\"vm-a.dev0\",\"dev_id\":3,"
	"\"hwpt_id\":5,\"dirty_capable\":true},"
	"{\"index\":1,\"name\":\"/dev/vfio/devices/vfio1\",\"fdname\":\"vm-a.dev1\",\"dev_id\":4,"
	"\"hwpt_id\":6,\"dirty_capable\":false}],"
	"\"regions\":[{\"gpa\":\"0x0\",\"length\":\"0x80000000\",\"offset\":\"0x0\","
	"\"fdname\":\"vm-a.mem0\"},"
	"{\"gpa\":\"0x100000000\",\"length\":\"0x80000000\",\"offset\":\"0x80000000\","
	"\"fdname\":\"vm-a.mem0\"}],"
	"\"mappings\":[{\"iova\":\"0x0\",\"gpa\":\"0x0\",\"length\":\"0x80000000\"},"
	"{\"iova\":\"0x100000000\",\"gpa\":\"0x100000000\",\"length\":\"0x1000\"},"
	"{\"iova\":\"0x100002000\",\"gpa\":\"0x100000000\",\"length\":\"0x2000\"}]},"
	"{\"name\":\"vm_b\",\"uid\":0,\"owner\":null,\"mode\":\"adopt\","
	"\"disconnect_policy\":\"destroy\",\"ioas_id\":1,"
	"\"page_shift\":21,\"flags\":[],\"rounds\":0,\"iommufd_fdname\":\"vm_b.iommufd\","
	"\"log_fdname\":null,"
	"\"hwpts\":[{\"id\":9,\"dirty_capable\":true,\"tracking\":false,\"owned\":false}],"
	"\"devices\":[{\"index\":3,\"name\":\"fd\",\"fdname\":null,\"dev_id\":0,\"hwpt_id\":9,"
	"\"dirty_capable\":true}],"
	"\"regions\":[{\"gpa\":\"0x0\",\"length\":\"0x40000000\",\"offset\":\"0x0\","
	"\"fdname\":null}],"
	"\"mappings\":[{\"iova\":\"0x0\",\"gpa\":\"0x0\",\"length\":\"0x40000000\"}]}"
	"]}";

/*
 * The same state as written by the daemons before the disconnect policy was recorded:
 * version 1 without the key. It must still load (an upgrade restarts on it).
 */
static const char golden_before_policy[] =
	"{\"version\":1,\"generation\":7,\"sessions\":["
	"{\"name\":\"vm-a\",\"uid\":1000,\"owner\":\":1.42\",\"mode\":\"owner\",\"ioas_id\":2,"
	"\"page_shift\":12,\"flags\":[\"tracking\",\"viommu\"],\"rounds\":3,"
	"\"iommufd_fdname\":\"vm-a.iommufd\",\"log_fdname\":\"vm-a.log\","
	"\"hwpts\":[{\"id\":5,\"dirty_capable\":true,\"tracking\":true,\"owned\":true},"
	"{\"id\":6,\"dirty_capable\":false,\"tracking\":false,\"owned\":true}],"
	"\"devices\":[{\"index\":0,\"name\":\"0000:00:04.0\",\"fdname\":\"vm-a.dev0\",\"dev_id\":3,"
	"\"hwpt_id\":5,\"dirty_capable\":true},"
	"{\"index\":1,\"name\":\"/dev/vfio/devices/vfio1\",\"fdname\":\"vm-a.dev1\",\"dev_id\":4,"
	"\"hwpt_id\":6,\"dirty_capable\":false}],"
	"\"regions\":[{\"gpa\":\"0x0\",\"length\":\"0x80000000\",\"offset\":\"0x0\","
	"\"fdname\":\"vm-a.mem0\"},"
	"{\"gpa\":\"0x100000000\",\"length\":\"0x80000000\",\"offset\":\"0x80000000\","
	"\"fdname\":\"vm-a.mem0\"}],"
	"\"mappings\":[{\"iova\":\"0x0\",\"gpa\":\"0x0\",\"length\":\"0x80000000\"},"
	"{\"iova\":\"0x100000000\",\"gpa\":\"0x100000000\",\"length\":\"0x1000\"},"
	"{\"iova\":\"0x100002000\",\"gpa\":\"0x100000000\",\"length\":\"0x2000\"}]},"
	"{\"name\":\"vm_b\",\"uid\":0,\"owner\":null,\"mode\":\"adopt\",\"ioas_id\":1,"
	"\"page_shift\":21,\"flags\":[],\"rounds\":0,\"iommufd_fdname\":\"vm_b.iommufd\","
	"\"log_fdname\":null,"
	"\"hwpts\":[{\"id\":9,\"dirty_capable\":true,\"tracking\":false,\"owned\":false}],"
	"\"devices\":[{\"index\":3,\"name\":\"fd\",\"fdname\":null,\"dev_id\":0,\"hwpt_id\":9,"
	"\"dirty_capable\":true}],"
	"\"regions\":[{\"gpa\":\"0x0\",\"length\":\"0x40000000\",\"offset\":\"0x0\","
	"\"fdname\":null}],"
	"\"mappings\":[{\"iova\":\"0x0\",\"gpa\":\"0x0\",\"length\":\"0x40000000\"}]}"
	"]}";

#define EMPTY_DOC "{\"version\":1,\"generation\":0,\"sessions\":[]}"

static struct iod_state *golden_state(void)
{
	struct iod_state *st = xcalloc(1, sizeof(*st));
	struct iod_state_session *s;

	st->generation = 7;
	st->n_sessions = 2;
	st->sessions = xcalloc(2, sizeof(*st->sessions));

	s = &st->sessions[0];
	s->name = xstrdup("vm-a");
	s->uid = 1000;
	s->owner = xstrdup(":1.42");
	s->mode = IOD_MODE_OWNER;
	s->disconnect_policy = IOD_STATE_DISCONNECT_KEEP;
	s->ioas_id = 2;
	s->page_shift = 12;
	s->flags = IOD_SESSION_F_TRACKING | IOD_SESSION_F_VIOMMU;
	s->rounds = 3;
	s->iommufd_fdname = xstrdup("vm-a.iommufd");
	s->log_fdname = xstrdup("vm-a.log");
	s->n_hwpts = 2;
	s->hwpts = xcalloc(2, sizeof(*s->hwpts));
	s->hwpts[0] = (struct iod_state_hwpt){5, true, true, true, 0};
	s->hwpts[1] = (struct iod_state_hwpt){6, false, false, true, 0};
	s->n_devices = 2;
	s->devices = xcalloc(2, sizeof(*s->devices));
	s->devices[0] = (struct iod_state_device){
		0, xstrdup("0000:00:04.0"), xstrdup("vm-a.dev0"), 3, 5, true, false, false};
	s->devices[1] = (struct iod_state_device){
		1,    xstrdup("/dev/vfio/devices/vfio1"), xstrdup("vm-a.dev1"), 4, 6, false, false,
		false};
	s->n_regions = 2;
	s->regions = xcalloc(2, sizeof(*s->regions));
	s->regions[0] = (struct iod_state_region){0, 0x80000000, 0, xstrdup("vm-a.mem0")};
	s->regions[1] = (struct iod_state_region){0x100000000, 0x80000000, 0x80000000,
						  xstrdup("vm-a.mem0")};
	s->n_mappings = 3;
	s->mappings = xcalloc(3, sizeof(*s->mappings));
	s->mappings[0] = (struct iod_mapping){0, 0, 0x80000000};
	s->mappings[1] = (struct iod_mapping){0x100000000, 0x100000000, 0x1000};
	s->mappings[2] = (struct iod_mapping){0x100002000, 0x100000000, 0x2000};

	s = &st->sessions[1];
	s->name = xstrdup("vm_b");
	s->mode = IOD_MODE_ADOPT;
	s->disconnect_policy = IOD_STATE_DISCONNECT_DESTROY;
	s->ioas_id = 1;
	s->page_shift = 21;
	s->iommufd_fdname = xstrdup("vm_b.iommufd");
	s->n_hwpts = 1;
	s->hwpts = xcalloc(1, sizeof(*s->hwpts));
	s->hwpts[0] = (struct iod_state_hwpt){9, true, false, false, 0};
	s->n_devices = 1;
	s->devices = xcalloc(1, sizeof(*s->devices));
	s->devices[0] = (struct iod_state_device){3, xstrdup("fd"), NULL, 0, 9, true, false, false};
	s->n_regions = 1;
	s->regions = xcalloc(1, sizeof(*s->regions));
	s->regions[0] = (struct iod_state_region){0, 0x40000000, 0, NULL};
	s->n_mappings = 1;
	s->mappings = xcalloc(1, sizeof(*s->mappings));
	s->mappings[0] = (struct iod_mapping){0, 0, 0x40000000};
	return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Exact equality */

static void assert_str_eq(const char *a, const char *b, const char *what, size_t si, size_t i)
{
	if (!a || !b)
		ck_assert_msg(a == b, "sessions[%zu] %s[%zu]: %s vs %s", si, what, i,
			      a ? a : "NULL", b ? b : "NULL");
	else
		ck_assert_msg(strcmp(a, b) == 0, "sessions[%zu] %s[%zu]: \"%s\" vs \"%s\"", si,
			      what, i, a, b);
}

static void assert_state_equal(const struct iod_state *a, const struct iod_state *b)
{
	ck_assert_uint_eq(a->generation, b->generation);
	ck_assert_uint_eq(a->restarts, b->restarts);
	ck_assert_uint_eq(a->n_sessions, b->n_sessions);
	for (size_t si = 0; si < a->n_sessions; si++) {
		const struct iod_state_session *x = &a->sessions[si], *y = &b->sessions[si];

		assert_str_eq(x->name, y->name, "name", si, 0);
		assert_str_eq(x->owner, y->owner, "owner", si, 0);
		assert_str_eq(x->iommufd_fdname, y->iommufd_fdname, "iommufd_fdname", si, 0);
		assert_str_eq(x->log_fdname, y->log_fdname, "log_fdname", si, 0);
		ck_assert_uint_eq(x->uid, y->uid);
		ck_assert_int_eq(x->mode, y->mode);
		ck_assert_int_eq(x->disconnect_policy, y->disconnect_policy);
		ck_assert_uint_eq(x->ioas_id, y->ioas_id);
		ck_assert_uint_eq(x->page_shift, y->page_shift);
		ck_assert_uint_eq(x->flags, y->flags);
		ck_assert_uint_eq(x->rounds, y->rounds);
		ck_assert_uint_eq(x->pending_round, y->pending_round);
		ck_assert_uint_eq(x->event_seq, y->event_seq);

		ck_assert_uint_eq(x->n_hwpts, y->n_hwpts);
		for (size_t i = 0; i < x->n_hwpts; i++) {
			ck_assert_uint_eq(x->hwpts[i].id, y->hwpts[i].id);
			ck_assert_int_eq(x->hwpts[i].dirty_capable, y->hwpts[i].dirty_capable);
			ck_assert_int_eq(x->hwpts[i].tracking, y->hwpts[i].tracking);
			ck_assert_int_eq(x->hwpts[i].owned, y->hwpts[i].owned);
			ck_assert_uint_eq(x->hwpts[i].parent_id, y->hwpts[i].parent_id);
		}
		ck_assert_uint_eq(x->n_devices, y->n_devices);
		for (size_t i = 0; i < x->n_devices; i++) {
			ck_assert_uint_eq(x->devices[i].index, y->devices[i].index);
			assert_str_eq(x->devices[i].name, y->devices[i].name, "devices.name", si,
				      i);
			assert_str_eq(x->devices[i].fdname, y->devices[i].fdname, "devices.fdname",
				      si, i);
			ck_assert_uint_eq(x->devices[i].dev_id, y->devices[i].dev_id);
			ck_assert_uint_eq(x->devices[i].hwpt_id, y->devices[i].hwpt_id);
			ck_assert_int_eq(x->devices[i].dirty_capable, y->devices[i].dirty_capable);
			ck_assert_int_eq(x->devices[i].emulated, y->devices[i].emulated);
			ck_assert_int_eq(x->devices[i].device_log, y->devices[i].device_log);
		}
		ck_assert_uint_eq(x->n_regions, y->n_regions);
		for (size_t i = 0; i < x->n_regions; i++) {
			ck_assert_uint_eq(x->regions[i].gpa, y->regions[i].gpa);
			ck_assert_uint_eq(x->regions[i].length, y->regions[i].length);
			ck_assert_uint_eq(x->regions[i].offset, y->regions[i].offset);
			assert_str_eq(x->regions[i].fdname, y->regions[i].fdname, "regions.fdname",
				      si, i);
		}
		ck_assert_uint_eq(x->n_mappings, y->n_mappings);
		for (size_t i = 0; i < x->n_mappings; i++)
			if (x->mappings[i].iova != y->mappings[i].iova ||
			    x->mappings[i].gpa != y->mappings[i].gpa ||
			    x->mappings[i].length != y->mappings[i].length)
				ck_abort_msg("sessions[%zu].mappings[%zu] differs", si, i);
	}
}

/* Serialise, parse back, compare, and serialise again to the same text. */
static void round_trip(const struct iod_state *st, char **ret_json)
{
	_cleanup_(iod_state_freep) struct iod_state *back = NULL;
	_cleanup_free_ char *json = NULL, *again = NULL, *reason = NULL;
	int r;

	ck_assert_int_eq(iod_state_validate(st, &reason), 0);
	ck_assert_ptr_null(reason);
	ck_assert_int_eq(iod_state_to_json(st, &json), 0);
	ck_assert_ptr_nonnull(json);
	r = iod_state_from_json(json, &back, &reason);
	ck_assert_msg(r == 0, "parse of our own output failed: %d: %s", r,
		      reason ? reason : "(no reason)");
	assert_state_equal(st, back);
	ck_assert_int_eq(iod_state_to_json(back, &again), 0);
	ck_assert_str_eq(json, again);
	if (ret_json)
		*ret_json = TAKE_PTR(json);
}

/* ---------------------------------------------------------------------------------------- */
/* Format and round trips */

START_TEST(test_golden_format)
{
	_cleanup_(iod_state_freep) struct iod_state *st = golden_state(), *parsed = NULL;
	_cleanup_free_ char *json = NULL, *reason = NULL;

	ck_assert_int_eq(iod_state_to_json(st, &json), 0);
	ck_assert_str_eq(json, golden);

	ck_assert_int_eq(iod_state_from_json(golden, &parsed, &reason), 0);
	ck_assert_ptr_null(reason);
	assert_state_equal(st, parsed);
}
END_TEST

START_TEST(test_before_policy)
{
	_cleanup_(iod_state_freep) struct iod_state *want = golden_state(), *parsed = NULL;
	_cleanup_free_ char *json = NULL, *reason = NULL;
	int r;

	/* A document of an older daemon loads, its sessions' policy not recorded ... */
	r = iod_state_from_json(golden_before_policy, &parsed, &reason);
	ck_assert_msg(r == 0, "rejected (%d): %s", r, reason ? reason : "(no reason)");
	for (size_t i = 0; i < want->n_sessions; i++) {
		ck_assert_int_eq(parsed->sessions[i].disconnect_policy, IOD_STATE_DISCONNECT_UNSET);
		want->sessions[i].disconnect_policy = IOD_STATE_DISCONNECT_UNSET;
	}
	assert_state_equal(want, parsed);
	/* ... and is written back as it was: no policy is made up */
	ck_assert_int_eq(iod_state_to_json(parsed, &json), 0);
	ck_assert_str_eq(json, golden_before_policy);
	round_trip(parsed, NULL);
}
END_TEST

START_TEST(test_policy_round_trip)
{
	static const enum iod_state_disconnect_policy policies[] = {
		IOD_STATE_DISCONNECT_UNSET,
		IOD_STATE_DISCONNECT_DESTROY,
		IOD_STATE_DISCONNECT_KEEP,
	};
	static const char *const keys[] = {
		NULL,
		"\"mode\":\"owner\",\"disconnect_policy\":\"destroy\",\"ioas_id\"",
		"\"mode\":\"owner\",\"disconnect_policy\":\"keep\",\"ioas_id\"",
	};

	for (size_t k = 0; k < ELEMENTSOF(policies); k++) {
		_cleanup_(iod_state_freep) struct iod_state *st = golden_state(), *back = NULL;
		_cleanup_free_ char *json = NULL, *first = NULL;

		st->sessions[0].disconnect_policy = policies[k];
		round_trip(st, &json);
		ck_assert_int_eq(iod_state_from_json(json, &back, NULL), 0);
		ck_assert_int_eq(back->sessions[0].disconnect_policy, policies[k]);
		/* the text of the first session: written after "mode", or not at all */
		first = strndup(json, (size_t)(strstr(json, "{\"name\":\"vm_b\"") - json));
		ck_assert_ptr_nonnull(first);
		if (keys[k])
			ck_assert_ptr_nonnull(strstr(first, keys[k]));
		else
			ck_assert_ptr_null(strstr(first, "disconnect_policy"));
	}
}
END_TEST

/* Session 1 (adopt) made nested: hwpt 9 the nest parent, 11 and 12 its nested children. */
static void make_nested(struct iod_state *st)
{
	struct iod_state_session *s = &st->sessions[1];

	s->flags |= IOD_SESSION_F_NESTED;
	s->n_hwpts = 3;
	s->hwpts = realloc(s->hwpts, 3 * sizeof(*s->hwpts));
	ck_assert_ptr_nonnull(s->hwpts);
	s->hwpts[1] = (struct iod_state_hwpt){11, false, false, false, 9};
	s->hwpts[2] = (struct iod_state_hwpt){12, false, false, false, 9};
}

START_TEST(test_nested_round_trip)
{
	_cleanup_(iod_state_freep) struct iod_state *st = golden_state(), *back = NULL;
	_cleanup_free_ char *json = NULL, *old = NULL, *reason = NULL;

	make_nested(st);
	round_trip(st, &json);
	ck_assert_ptr_nonnull(strstr(json, "\"flags\":[\"nested\"]"));
	ck_assert_ptr_nonnull(strstr(json, "{\"id\":11,\"dirty_capable\":false,\"tracking\":false,"
					   "\"owned\":false,\"parent_id\":9}"));
	/* the nest parent and every other hwpt write no parent_id */
	ck_assert_ptr_nonnull(strstr(json, "{\"id\":9,\"dirty_capable\":true,\"tracking\":false,"
					   "\"owned\":false}"));
	ck_assert_ptr_null(strstr(golden, "parent_id"));
	ck_assert_int_eq(iod_state_from_json(json, &back, &reason), 0);
	ck_assert(back->sessions[1].flags & IOD_SESSION_F_NESTED);
	ck_assert_uint_eq(back->sessions[1].hwpts[2].parent_id, 9);
	ck_assert_uint_eq(back->sessions[0].hwpts[0].parent_id, 0);
}
END_TEST

/* Device DMA logging: an emulated device (no HWPT) and a logging device on a plain HWPT
 * round-trip; the keys are written only when set; contradictions are refused. */
START_TEST(test_device_source_round_trip)
{
	_cleanup_(iod_state_freep) struct iod_state *st = golden_state(), *back = NULL;
	_cleanup_free_ char *json = NULL, *reason = NULL;
	struct iod_state_session *s = &st->sessions[0];
	struct iod_state_device *d;

	s->devices = realloc(s->devices, 3 * sizeof(*s->devices));
	ck_assert_ptr_nonnull(s->devices);
	s->n_devices = 3;
	s->devices[1].device_log = true; /* on hwpt 6, which cannot track */
	s->devices[2] = (struct iod_state_device){
		2,   xstrdup("/dev/vfio/devices/vfio2"), xstrdup("vm-a.dev2"), 7, 0, false, true,
		true};
	round_trip(st, &json);
	ck_assert_ptr_nonnull(
		strstr(json, "\"hwpt_id\":6,\"dirty_capable\":false,\"device_log\":true}"));
	ck_assert_ptr_nonnull(strstr(
		json,
		"\"hwpt_id\":0,\"dirty_capable\":false,\"emulated\":true,\"device_log\":true}"));
	ck_assert_ptr_null(strstr(golden, "emulated"));
	ck_assert_ptr_null(strstr(golden, "device_log"));
	ck_assert_int_eq(iod_state_from_json(json, &back, &reason), 0);
	ck_assert(back->sessions[0].devices[2].emulated);
	ck_assert(back->sessions[0].devices[1].device_log);
	ck_assert(!back->sessions[0].devices[0].device_log);

	d = &s->devices[2];
	d->hwpt_id = 5; /* an emulated device on a HWPT */
	ck_assert_int_eq(iod_state_validate(st, &reason), -EINVAL);
	ck_assert_ptr_nonnull(strstr(reason, "devices[2]: an emulated device is on no HWPT"));
	d->hwpt_id = 0;
	d->emulated = false; /* hwpt 0 without being emulated */
	free(reason);
	reason = NULL;
	ck_assert_int_eq(iod_state_validate(st, &reason), -EINVAL);
	ck_assert_ptr_nonnull(strstr(reason, "devices[2].hwpt_id: 0 is not one of"));
	d->emulated = true;
	s->devices[0].device_log = true; /* logging, yet on a dirty HWPT */
	free(reason);
	reason = NULL;
	ck_assert_int_eq(iod_state_validate(st, &reason), -EINVAL);
	ck_assert_ptr_nonnull(strstr(reason, "devices[0]: a device that logs its own DMA"));
}
END_TEST

/* The pending round is optional: written after "rounds" when not 0, absent reads as 0 (the
 * golden document, as every document of a daemon that did not record it); a round that is
 * not the current one cannot be pending. */
START_TEST(test_pending_round_round_trip)
{
	_cleanup_(iod_state_freep) struct iod_state *st = golden_state(), *back = NULL, *old = NULL;
	_cleanup_free_ char *json = NULL, *reason = NULL;

	ck_assert_ptr_null(strstr(golden, "pending_round"));
	ck_assert_int_eq(iod_state_from_json(golden, &old, NULL), 0);
	ck_assert_uint_eq(old->sessions[0].pending_round, 0);

	st->sessions[0].pending_round = 3; /* rounds 3 */
	round_trip(st, &json);
	ck_assert_ptr_nonnull(strstr(json, "\"rounds\":3,\"pending_round\":3,\"iommufd_fdname\""));
	ck_assert_int_eq(iod_state_from_json(json, &back, &reason), 0);
	ck_assert_uint_eq(back->sessions[0].pending_round, 3);
	ck_assert_uint_eq(back->sessions[1].pending_round, 0);
	/* session 1 has none pending: not written */
	ck_assert_ptr_null(strstr(strstr(json, "pending_round") + 1, "pending_round"));

	st->sessions[0].pending_round = 2; /* a round a later Harvest merged */
	ck_assert_int_eq(iod_state_validate(st, &reason), -EINVAL);
	ck_assert_ptr_nonnull(strstr(reason, "pending_round: 2 is not the current round 3"));
	free(json);
	json = NULL;
	ck_assert_int_eq(iod_state_to_json(st, &json), -EINVAL);
}
END_TEST

START_TEST(test_empty_state)
{
	struct iod_state empty = {};
	_cleanup_(iod_state_freep) struct iod_state *parsed = NULL;
	_cleanup_free_ char *json = NULL;

	ck_assert_int_eq(iod_state_to_json(&empty, &json), 0);
	ck_assert_str_eq(json, EMPTY_DOC);
	round_trip(&empty, NULL);

	ck_assert_int_eq(iod_state_from_json(EMPTY_DOC, &parsed, NULL), 0);
	ck_assert_uint_eq(parsed->generation, 0);
	ck_assert_uint_eq(parsed->n_sessions, 0);
	ck_assert_ptr_null(parsed->sessions);
}
END_TEST

/* The restart count is optional: absent reads as 0, and 0 is not written. */
START_TEST(test_restarts_round_trip)
{
	struct iod_state st = {.generation = 3, .restarts = UINT64_MAX};
	_cleanup_(iod_state_freep) struct iod_state *parsed = NULL, *refused = NULL;
	_cleanup_free_ char *json = NULL, *reason = NULL;

	round_trip(&st, &json);
	ck_assert_str_eq(json, "{\"version\":1,\"generation\":3,"
			       "\"restarts\":18446744073709551615,\"sessions\":[]}");
	ck_assert_int_eq(iod_state_from_json("{\"version\":1,\"generation\":3,\"restarts\":2,"
					     "\"sessions\":[]}",
					     &parsed, NULL),
			 0);
	ck_assert_uint_eq(parsed->restarts, 2);
	ck_assert_int_eq(iod_state_from_json("{\"version\":1,\"generation\":3,\"restarts\":-1,"
					     "\"sessions\":[]}",
					     &refused, &reason),
			 -EBADMSG);
	ck_assert_ptr_nonnull(strstr(reason, "restarts"));
}
END_TEST

START_TEST(test_empty_session_round_trip)
{
	struct iod_state_session s = {
		.name = (char *)"lonely",
		.mode = IOD_MODE_ADOPT,
		.page_shift = 12,
	};
	struct iod_state st = {.generation = 1, .sessions = &s, .n_sessions = 1};
	_cleanup_free_ char *json = NULL;

	round_trip(&st, &json);
	ck_assert_str_eq(json, "{\"version\":1,\"generation\":1,\"sessions\":[{\"name\":\"lonely\","
			       "\"uid\":0,\"owner\":null,\"mode\":\"adopt\",\"ioas_id\":0,"
			       "\"page_shift\":12,\"flags\":[],\"rounds\":0,"
			       "\"iommufd_fdname\":null,\"log_fdname\":null,\"hwpts\":[],"
			       "\"devices\":[],\"regions\":[],\"mappings\":[]}]}");
}
END_TEST

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Many sessions in both modes, every flag combination, extreme values, many mappings. */
static struct iod_state *rich_state(uint64_t seed)
{
	static const unsigned shifts[] = {12, 16, 21, 30, 12, 13};
	struct iod_state *st = xcalloc(1, sizeof(*st));
	const size_t n = ELEMENTSOF(shifts);

	rng_state = seed;
	st->generation = UINT64_MAX - 1; /* the largest with a successor */
	st->n_sessions = n;
	st->sessions = xcalloc(n, sizeof(*st->sessions));
	for (size_t si = 0; si < n; si++) {
		struct iod_state_session *s = &st->sessions[si];
		bool owner = si % 2 == 0;
		uint64_t page = UINT64_C(1) << shifts[si];
		uint64_t iova = 0;
		char buf[128];

		snprintf(buf, sizeof(buf), "%s-%zu_%c", owner ? "Owner" : "adopt", si,
			 (int)('a' + si));
		s->name = xstrdup(buf);
		s->uid = si == 1 ? UINT32_MAX : 1000 + (uint32_t)si;
		s->owner = si == 3 ? NULL : xstrdup(":1.4242");
		s->mode = owner ? IOD_MODE_OWNER : IOD_MODE_ADOPT;
		s->disconnect_policy = (enum iod_state_disconnect_policy)(si % 3); /* all three */
		s->ioas_id = si == 2 ? UINT32_MAX : (uint32_t)si + 1;
		s->page_shift = shifts[si];
		s->flags = si * 3 % 16;
		s->rounds = si == 4 ? UINT64_MAX : rnd() % 1000;
		snprintf(buf, sizeof(buf), "iommufd %zu (the iommu; with punctuation!)", si);
		s->iommufd_fdname = si == 5 ? NULL : xstrdup(buf);
		snprintf(buf, sizeof(buf), "log/%zu", si);
		s->log_fdname = si == 1 ? NULL : xstrdup(buf);

		s->n_hwpts = 1 + si % 3;
		s->hwpts = xcalloc(s->n_hwpts, sizeof(*s->hwpts));
		for (size_t i = 0; i < s->n_hwpts; i++)
			s->hwpts[i] = (struct iod_state_hwpt){
				.id = i == 0 && si == 0 ? UINT32_MAX : (uint32_t)(100 - i * 7),
				.dirty_capable = rnd() & 1,
				.tracking = rnd() & 1,
				.owned = owner,
			};

		s->n_devices = si % 4;
		s->devices = s->n_devices ? xcalloc(s->n_devices, sizeof(*s->devices)) : NULL;
		for (size_t i = 0; i < s->n_devices; i++) {
			static const char *const names[] = {
				"0000:65:00.1",
				"/dev/vfio/devices/vfio7",
				"name with \"quotes\", \\backslash\\ and caf\xc3\xa9 \xe2\x82\xac",
			};

			snprintf(buf, sizeof(buf), "dev.%zu.%zu", si, i);
			s->devices[i] = (struct iod_state_device){
				.index = i == 2 ? UINT32_MAX : (uint32_t)(i * 10),
				.name = xstrdup(names[i % 3]),
				.fdname = owner || i == 1 ? xstrdup(buf) : NULL,
				.dev_id = owner ? (uint32_t)(i + 1) : 0,
				.hwpt_id = s->hwpts[i % s->n_hwpts].id,
				.dirty_capable = i % 2,
			};
		}

		/* regions, one of them at the very top of the address space */
		s->n_regions = 3;
		s->regions = xcalloc(3, sizeof(*s->regions));
		for (size_t i = 0; i < 3; i++) {
			snprintf(buf, sizeof(buf), "mem.%zu", si);
			s->regions[i] = (struct iod_state_region){
				.gpa = i == 2 ? (0 - 2 * page) : i * 64 * page,
				.length = i == 2 ? page : 32 * page,
				.offset = i == 2 ? UINT64_MAX - page : i * 32 * page,
				.fdname = owner || i == 0 ? xstrdup(buf) : NULL,
			};
		}

		/* mappings in a shuffled order, with gaps, IOVA != GPA, up to the top */
		s->n_mappings = si == 0 ? 5000 : 50 * si;
		s->mappings = xcalloc(s->n_mappings, sizeof(*s->mappings));
		for (size_t i = 0; i < s->n_mappings; i++) {
			uint64_t pages = 1 + rnd() % 4;

			iova += (rnd() % 3) * page;
			s->mappings[i] = (struct iod_mapping){
				.iova = iova,
				.gpa = (rnd() % (UINT64_C(1) << (62 - shifts[si]))) * page,
				.length = pages * page,
			};
			iova += pages * page;
		}
		s->mappings[s->n_mappings - 1].iova = 0 - 2 * page;
		s->mappings[s->n_mappings - 1].gpa = 0 - 2 * page;
		s->mappings[s->n_mappings - 1].length = page;
		for (size_t i = s->n_mappings - 1; i > 0; i--) {
			size_t j = rnd() % (i + 1);
			struct iod_mapping t = s->mappings[i];

			s->mappings[i] = s->mappings[j];
			s->mappings[j] = t;
		}
	}
	return st;
}

START_TEST(test_rich_round_trip)
{
	_cleanup_(iod_state_freep) struct iod_state *st = rich_state(0x5747e);
	_cleanup_free_ char *json = NULL;

	round_trip(st, &json);
	/* spot checks of the encoding */
	ck_assert_ptr_nonnull(strstr(json, "\"generation\":18446744073709551614,"));
	ck_assert_ptr_nonnull(strstr(json, "\"rounds\":18446744073709551615,"));
	ck_assert_ptr_nonnull(strstr(json, "\"uid\":4294967295,"));
	ck_assert_ptr_nonnull(strstr(json, "\"offset\":\"0xffffffffffffefff\""));
	ck_assert_ptr_nonnull(strstr(json, "\"name\":\"/dev/vfio/devices/vfio7\""));
	ck_assert_ptr_nonnull(strstr(
		json, "with \\\"quotes\\\", \\\\backslash\\\\ and caf\xc3\xa9 \xe2\x82\xac"));
}
END_TEST

START_TEST(test_free_null)
{
	ck_assert_ptr_null(iod_state_free(NULL));
	iod_state_session_clear(NULL);
	{
		struct iod_state_session s = {.name = xstrdup("x")};

		iod_state_session_clear(&s);
		ck_assert_ptr_null(s.name);
		iod_state_session_clear(&s); /* cleared twice is fine */
	}
}
END_TEST

START_TEST(test_bad_arguments)
{
	_cleanup_(iod_state_freep) struct iod_state *st = golden_state();
	struct iod_state *out = (struct iod_state *)0x1;
	char *json = (char *)0x1;

	ck_assert_int_eq(iod_state_to_json(NULL, &json), -EINVAL);
	ck_assert_int_eq(iod_state_to_json(st, NULL), -EINVAL);
	ck_assert_ptr_eq(json, (char *)0x1);
	ck_assert_int_eq(iod_state_from_json(NULL, &out, NULL), -EINVAL);
	ck_assert_int_eq(iod_state_from_json(golden, NULL, NULL), -EINVAL);
	ck_assert_ptr_eq(out, (struct iod_state *)0x1);
	ck_assert_int_eq(iod_state_validate(NULL, NULL), -EINVAL);
}
END_TEST

static const struct name_case {
	const char *name;
	bool valid;
} name_cases[] = {
	{"a", true},
	{"vm-1_B", true},
	{"0123456789012345678901234567890123456789012345678901234567890123", true},
	{"01234567890123456789012345678901234567890123456789012345678901234", false},
	{"", false},
	{"vm 1", false},
	{"vm.1", false},
	{"vm/1", false},
	{"caf\xc3\xa9", false},
	{"tab\t", false},
	{NULL, false},
};

START_TEST(test_session_name_valid)
{
	const struct name_case *c = &name_cases[_i];

	ck_assert_msg(iod_session_name_valid(c->name) == c->valid, "\"%s\"",
		      c->name ? c->name : "NULL");
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Accepted inputs that differ from our own output */

static void assert_parses_to_golden(const char *text)
{
	_cleanup_(iod_state_freep) struct iod_state *want = golden_state(), *got = NULL;
	_cleanup_free_ char *reason = NULL;
	int r;

	r = iod_state_from_json(text, &got, &reason);
	ck_assert_msg(r == 0, "rejected (%d): %s", r, reason ? reason : "(no reason)");
	assert_state_equal(want, got);
}

START_TEST(test_accept_pretty_and_reordered)
{
	_cleanup_(json_putp) struct json_object *root = json_tokener_parse(golden);
	_cleanup_(json_putp) struct json_object *reordered = json_object_new_object();
	_cleanup_free_ char *text = NULL;

	ck_assert_ptr_nonnull(root);
	/* pretty-printed, with tabs and newlines, and a trailing newline */
	ck_assert_int_ge(asprintf(&text, "\n\t %s\n\r\n",
				  json_object_to_json_string_ext(
					  root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED)),
			 0);
	assert_parses_to_golden(text);

	/* keys in another order */
	json_object_object_add(reordered, "sessions",
			       json_object_get(json_object_object_get(root, "sessions")));
	json_object_object_add(reordered, "generation", json_object_new_int(7));
	json_object_object_add(reordered, "version", json_object_new_int(1));
	assert_parses_to_golden(json_object_to_json_string(reordered));
}
END_TEST

START_TEST(test_accept_hex_spellings)
{
	_cleanup_(json_putp) struct json_object *root = json_tokener_parse(golden);
	_cleanup_(iod_state_freep) struct iod_state *st = NULL;
	_cleanup_free_ char *reason = NULL;

	/* leading zeros up to 16 digits, upper and mixed case digits */
	ck_assert_ptr_nonnull(root);
	ck_assert_int_eq(json_pointer_set(&root, "/sessions/0/regions/1/gpa",
					  json_object_new_string("0x0000000100000000")),
			 0);
	ck_assert_int_eq(json_pointer_set(&root, "/sessions/0/regions/1/offset",
					  json_object_new_string("0x8000000A")),
			 0);
	ck_assert_int_eq(json_pointer_set(&root, "/sessions/0/mappings/2/iova",
					  json_object_new_string("0x000000010000aB00")),
			 0);
	ck_assert_int_eq(json_pointer_set(&root, "/sessions/0/mappings/2/gpa",
					  json_object_new_string("0xFFFFFFFFFFFFC000")),
			 0);
	ck_assert_int_eq(iod_state_from_json(json_object_to_json_string(root), &st, &reason),
			 -EBADMSG);
	/* 0x10000ab00 is not page aligned: the value was read, and checked */
	ck_assert_ptr_nonnull(
		strstr(reason, "sessions[0].mappings[2].iova: 0x10000ab00 is not aligned"));
	ck_assert_int_eq(json_pointer_set(&root, "/sessions/0/mappings/2/iova",
					  json_object_new_string("0x000000010000A000")),
			 0);
	ck_assert_int_eq(iod_state_from_json(json_object_to_json_string(root), &st, NULL), 0);
	ck_assert_uint_eq(st->sessions[0].regions[1].gpa, 0x100000000);
	ck_assert_uint_eq(st->sessions[0].regions[1].offset, 0x8000000a);
	ck_assert_uint_eq(st->sessions[0].mappings[2].iova, 0x10000a000);
	ck_assert_uint_eq(st->sessions[0].mappings[2].gpa, 0xffffffffffffc000);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Rejections: the golden document with one change, made through a JSON pointer. */

#define DELETE NULL

static const struct reject_case {
	const char *pointer;
	const char *value; /* JSON text, or DELETE to remove the member */
	int err;
	const char *field; /* the reason names this */
	const char *what; /* and says this */
} reject_cases[] = {
	/* nested sessions */
	{"/sessions/1/hwpts/0/parent_id", "0", -EBADMSG, "sessions[1].hwpts[0].parent_id",
	 "0 is no HWPT"},
	{"/sessions/1/hwpts/0/parent_id", "\"9\"", -EBADMSG, "sessions[1].hwpts[0].parent_id",
	 "expected an integer"},
	{"/sessions/1/hwpts/0/parent_id", "9", -EBADMSG, "sessions[1].hwpts[0].parent_id",
	 "only a session with the flag \"nested\""},
	{"/sessions/0/flags", "[\"viommu\",\"nested\"]", -EBADMSG, "sessions[0].flags",
	 "exclude each other"},
	{"/sessions/0/flags", "[\"nested\"]", -EBADMSG, "sessions[0].hwpts[1].parent_id",
	 "is not the nest parent 5"},
	/* the root */
	{"/version", DELETE, -EBADMSG, "version", "missing"},
	{"/version", "2", -EPROTO, "version", "unsupported"},
	{"/version", "0", -EPROTO, "version", "unsupported"},
	{"/version", "-1", -EPROTO, "version", "unsupported"},
	{"/version", "\"1\"", -EBADMSG, "version", "expected an integer"},
	{"/version", "1.0", -EBADMSG, "version", "expected an integer"},
	{"/generation", DELETE, -EBADMSG, "generation", "missing"},
	{"/generation", "-1", -EBADMSG, "generation", "negative"},
	{"/generation", "1.5", -EBADMSG, "generation", "expected an integer"},
	{"/generation", "\"7\"", -EBADMSG, "generation", "expected an integer"},
	{"/generation", "null", -EBADMSG, "generation", "expected an integer"},
	{"/generation", "18446744073709551615", -EBADMSG, "generation",
	 "18446744073709551615 has no successor"},
	{"/sessions", DELETE, -EBADMSG, "sessions", "missing"},
	{"/sessions", "{}", -EBADMSG, "sessions", "expected an array"},
	{"/sessions", "null", -EBADMSG, "sessions", "expected an array"},
	{"/extra", "1", -EBADMSG, "document", "unknown key \"extra\""},
	{"/sessions/0", "5", -EBADMSG, "sessions[0]", "expected an object"},
	{"/sessions/1", "[]", -EBADMSG, "sessions[1]", "expected an object"},

	/* session fields */
	{"/sessions/0/extra", "true", -EBADMSG, "sessions[0]", "unknown key \"extra\""},
	{"/sessions/0/name", DELETE, -EBADMSG, "sessions[0].name", "missing"},
	{"/sessions/0/name", "\"bad name\"", -EBADMSG, "sessions[0].name", "not a valid"},
	{"/sessions/0/name", "\"\"", -EBADMSG, "sessions[0].name", "not a valid"},
	{"/sessions/0/name",
	 "\"01234567890123456789012345678901234567890123456789012345678901234\"", -EBADMSG,
	 "sessions[0].name", "not a valid"},
	{"/sessions/0/name", "\"caf\xc3\xa9\"", -EBADMSG, "sessions[0].name", "not a valid"},
	{"/sessions/0/name", "null", -EBADMSG, "sessions[0].name", "expected a string"},
	{"/sessions/1/name", "\"vm-a\"", -EBADMSG, "sessions[1].name",
	 "duplicate session name \"vm-a\" (also sessions[0])"},
	{"/sessions/0/uid", DELETE, -EBADMSG, "sessions[0].uid", "missing"},
	{"/sessions/0/uid", "4294967296", -EBADMSG, "sessions[0].uid", "out of range"},
	{"/sessions/0/uid", "-1", -EBADMSG, "sessions[0].uid", "negative"},
	{"/sessions/0/uid", "\"1000\"", -EBADMSG, "sessions[0].uid", "expected an integer"},
	{"/sessions/0/uid", "1e3", -EBADMSG, "sessions[0].uid", "expected an integer"},
	{"/sessions/0/owner", DELETE, -EBADMSG, "sessions[0].owner", "missing"},
	{"/sessions/0/owner", "5", -EBADMSG, "sessions[0].owner", "expected a string or null"},
	{"/sessions/0/owner", "\"\"", -EBADMSG, "sessions[0].owner", "printable"},
	{"/sessions/0/owner", "\"a\\nb\"", -EBADMSG, "sessions[0].owner", "printable"},
	{"/sessions/0/mode", DELETE, -EBADMSG, "sessions[0].mode", "missing"},
	{"/sessions/0/mode", "\"steal\"", -EBADMSG, "sessions[0].mode", "unknown mode \"steal\""},
	{"/sessions/0/mode", "\"Owner\"", -EBADMSG, "sessions[0].mode", "unknown mode"},
	{"/sessions/0/mode", "\"owner\\u0000\"", -EBADMSG, "sessions[0].mode", "unknown mode"},
	{"/sessions/0/flags", "[\"tracking\\u0000x\"]", -EBADMSG, "sessions[0].flags[0]",
	 "unknown flag \"tracking?x\""},
	{"/sessions/0/mode", "0", -EBADMSG, "sessions[0].mode", "expected a string"},
	{"/sessions/0/disconnect_policy", "\"later\"", -EBADMSG, "sessions[0].disconnect_policy",
	 "unknown policy \"later\" (expected \"destroy\" or \"keep\")"},
	{"/sessions/0/disconnect_policy", "\"Keep\"", -EBADMSG, "sessions[0].disconnect_policy",
	 "unknown policy"},
	{"/sessions/1/disconnect_policy", "\"\"", -EBADMSG, "sessions[1].disconnect_policy",
	 "unknown policy"},
	{"/sessions/0/disconnect_policy", "\"keep\\u0000\"", -EBADMSG,
	 "sessions[0].disconnect_policy", "unknown policy \"keep?\""},
	{"/sessions/0/disconnect_policy", "null", -EBADMSG, "sessions[0].disconnect_policy",
	 "expected a string, got null"},
	{"/sessions/0/disconnect_policy", "1", -EBADMSG, "sessions[0].disconnect_policy",
	 "expected a string"},
	{"/sessions/0/disconnect_policy", "true", -EBADMSG, "sessions[0].disconnect_policy",
	 "expected a string"},
	{"/sessions/0/disconnect_policy", "[\"keep\"]", -EBADMSG, "sessions[0].disconnect_policy",
	 "expected a string"},
	{"/sessions/0/disconnect-policy", "\"keep\"", -EBADMSG, "sessions[0]",
	 "unknown key \"disconnect-policy\""},
	{"/sessions/0/ioas_id", DELETE, -EBADMSG, "sessions[0].ioas_id", "missing"},
	{"/sessions/0/ioas_id", "4294967296", -EBADMSG, "sessions[0].ioas_id", "out of range"},
	{"/sessions/0/ioas_id", "-2", -EBADMSG, "sessions[0].ioas_id", "negative"},
	{"/sessions/0/page_shift", DELETE, -EBADMSG, "sessions[0].page_shift", "missing"},
	{"/sessions/0/page_shift", "11", -EBADMSG, "sessions[0].page_shift", "out of range"},
	{"/sessions/0/page_shift", "31", -EBADMSG, "sessions[0].page_shift", "out of range"},
	{"/sessions/0/page_shift", "0", -EBADMSG, "sessions[0].page_shift", "out of range"},
	{"/sessions/0/page_shift", "4294967308", -EBADMSG, "sessions[0].page_shift",
	 "out of range"},
	{"/sessions/0/flags", DELETE, -EBADMSG, "sessions[0].flags", "missing"},
	{"/sessions/0/flags", "3", -EBADMSG, "sessions[0].flags", "expected an array"},
	{"/sessions/0/flags", "[\"tracking\",\"bogus\"]", -EBADMSG, "sessions[0].flags[1]",
	 "unknown flag \"bogus\""},
	{"/sessions/0/flags", "[\"tracking\",\"tracking\"]", -EBADMSG, "sessions[0].flags[1]",
	 "listed twice"},
	{"/sessions/0/flags", "[1]", -EBADMSG, "sessions[0].flags[0]", "expected a string"},
	{"/sessions/0/flags", "[\"TRACKING\"]", -EBADMSG, "sessions[0].flags[0]", "unknown flag"},
	{"/sessions/0/rounds", DELETE, -EBADMSG, "sessions[0].rounds", "missing"},
	{"/sessions/0/rounds", "-1", -EBADMSG, "sessions[0].rounds", "negative"},
	{"/sessions/0/rounds", "\"0x3\"", -EBADMSG, "sessions[0].rounds", "expected an integer"},
	{"/sessions/0/pending_round", "2", -EBADMSG, "sessions[0].pending_round",
	 "is not the current round 3"},
	{"/sessions/1/pending_round", "1", -EBADMSG, "sessions[1].pending_round",
	 "is not the current round 0"},
	{"/sessions/0/pending_round", "-3", -EBADMSG, "sessions[0].pending_round", "negative"},
	{"/sessions/0/pending_round", "true", -EBADMSG, "sessions[0].pending_round",
	 "expected an integer"},
	{"/sessions/0/iommufd_fdname", DELETE, -EBADMSG, "sessions[0].iommufd_fdname", "missing"},
	{"/sessions/0/iommufd_fdname", "null", -EBADMSG, "sessions[0].iommufd_fdname",
	 "required in owner mode"},
	{"/sessions/0/iommufd_fdname", "\"a:b\"", -EBADMSG, "sessions[0].iommufd_fdname",
	 "not a valid fd name"},
	{"/sessions/0/iommufd_fdname", "\"\"", -EBADMSG, "sessions[0].iommufd_fdname",
	 "not a valid fd name"},
	{"/sessions/0/iommufd_fdname", "\"tab\\there\"", -EBADMSG, "sessions[0].iommufd_fdname",
	 "not a valid fd name"},
	{"/sessions/0/iommufd_fdname", "\"caf\xc3\xa9\"", -EBADMSG, "sessions[0].iommufd_fdname",
	 "not a valid fd name"},
	{"/sessions/0/log_fdname", DELETE, -EBADMSG, "sessions[0].log_fdname", "missing"},
	{"/sessions/0/log_fdname", "\"\"", -EBADMSG, "sessions[0].log_fdname",
	 "not a valid fd name"},
	{"/sessions/0/log_fdname", "false", -EBADMSG, "sessions[0].log_fdname",
	 "expected a string or null"},

	/* hwpts */
	{"/sessions/0/hwpts", DELETE, -EBADMSG, "sessions[0].hwpts", "missing"},
	{"/sessions/0/hwpts", "{}", -EBADMSG, "sessions[0].hwpts", "expected an array"},
	{"/sessions/0/hwpts/1", "6", -EBADMSG, "sessions[0].hwpts[1]", "expected an object"},
	{"/sessions/0/hwpts/1/id", "5", -EBADMSG, "sessions[0].hwpts[1].id",
	 "duplicate id 5 (also hwpts[0])"},
	{"/sessions/0/hwpts/0/id", "4294967296", -EBADMSG, "sessions[0].hwpts[0].id",
	 "out of range"},
	{"/sessions/0/hwpts/0/id", DELETE, -EBADMSG, "sessions[0].hwpts[0].id", "missing"},
	{"/sessions/0/hwpts/0/dirty_capable", "1", -EBADMSG, "sessions[0].hwpts[0].dirty_capable",
	 "expected a boolean"},
	{"/sessions/0/hwpts/0/tracking", "\"true\"", -EBADMSG, "sessions[0].hwpts[0].tracking",
	 "expected a boolean"},
	{"/sessions/0/hwpts/0/owned", DELETE, -EBADMSG, "sessions[0].hwpts[0].owned", "missing"},
	{"/sessions/0/hwpts/0/color", "\"red\"", -EBADMSG, "sessions[0].hwpts[0]",
	 "unknown key \"color\""},

	/* devices */
	{"/sessions/0/devices", "null", -EBADMSG, "sessions[0].devices", "expected an array"},
	{"/sessions/0/devices/0/index", DELETE, -EBADMSG, "sessions[0].devices[0].index",
	 "missing"},
	{"/sessions/0/devices/1/index", "0", -EBADMSG, "sessions[0].devices[1].index",
	 "duplicate index 0 (also devices[0])"},
	{"/sessions/0/devices/1/index", "-1", -EBADMSG, "sessions[0].devices[1].index", "negative"},
	{"/sessions/0/devices/0/hwpt_id", "7", -EBADMSG, "sessions[0].devices[0].hwpt_id",
	 "not one of the session's hwpts"},
	{"/sessions/0/devices/0/hwpt_id", "9", -EBADMSG, "sessions[0].devices[0].hwpt_id",
	 "not one of the session's hwpts"}, /* hwpt 9 belongs to another session */
	{"/sessions/1/devices/0/hwpt_id", "0", -EBADMSG, "sessions[1].devices[0].hwpt_id",
	 "not one of the session's hwpts"},
	{"/sessions/0/devices/0/fdname", "null", -EBADMSG, "sessions[0].devices[0].fdname",
	 "required in owner mode"},
	{"/sessions/0/devices/0/fdname", "\"x:y\"", -EBADMSG, "sessions[0].devices[0].fdname",
	 "not a valid fd name"},
	{"/sessions/0/devices/0/name", "\"\"", -EBADMSG, "sessions[0].devices[0].name",
	 "UTF-8 without control characters"},
	{"/sessions/0/devices/0/name", "null", -EBADMSG, "sessions[0].devices[0].name",
	 "expected a string"},
	{"/sessions/1/devices/0/name", "\"fd\\u0000x\"", -EBADMSG, "sessions[1].devices[0].name",
	 "NUL"},
	{"/sessions/1/devices/0/name", "\"fd\\u0007\"", -EBADMSG, "sessions[1].devices[0].name",
	 "control characters"},
	{"/sessions/1/devices/0/name", "\"\xc0\xaf\"", -EBADMSG, "sessions[1].devices[0].name",
	 "UTF-8"}, /* json-c lets overlong UTF-8 through */
	{"/sessions/1/devices/0/name", "\"\xed\xa0\x80\"", -EBADMSG, "sessions[1].devices[0].name",
	 "UTF-8"},
	{"/sessions/0/devices/0/dev_id", "-3", -EBADMSG, "sessions[0].devices[0].dev_id",
	 "negative"},
	{"/sessions/0/devices/0/dev_id", "3.0", -EBADMSG, "sessions[0].devices[0].dev_id",
	 "expected an integer"},
	{"/sessions/0/devices/0/dirty_capable", "null", -EBADMSG,
	 "sessions[0].devices[0].dirty_capable", "expected a boolean"},
	{"/sessions/0/devices/0/bdf", "\"x\"", -EBADMSG, "sessions[0].devices[0]",
	 "unknown key \"bdf\""},

	/* regions */
	{"/sessions/0/regions/1/gpa", "\"0x40000000\"", -EBADMSG, "sessions[0].regions[1].gpa",
	 "overlaps regions[0]"},
	{"/sessions/0/regions/0/gpa", "\"0x17fffe000\"", -EBADMSG, "sessions[0].regions[1].gpa",
	 "overlaps regions[0]"},
	{"/sessions/0/regions/0/length", "\"0x0\"", -EBADMSG, "sessions[0].regions[0].length",
	 "zero"},
	{"/sessions/0/regions/0/gpa", "\"0x800\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "not aligned to the page size 0x1000"},
	{"/sessions/0/regions/0/length", "\"0x1800\"", -EBADMSG, "sessions[0].regions[0].length",
	 "not a multiple of the page size 0x1000"},
	{"/sessions/1/regions/0/gpa", "\"0x100000\"", -EBADMSG, "sessions[1].regions[0].gpa",
	 "not aligned to the page size 0x200000"},
	{"/sessions/0/regions/1/gpa", "\"0xffffffff80000000\"", -EBADMSG,
	 "sessions[0].regions[1].gpa", "past the end"},
	{"/sessions/0/regions/1/offset", "\"0xffffffffffffffff\"", -EBADMSG,
	 "sessions[0].regions[1].offset", "past"},
	{"/sessions/0/regions/0/fdname", "null", -EBADMSG, "sessions[0].regions[0].fdname",
	 "required in owner mode"},
	{"/sessions/0/regions/0/fdname", DELETE, -EBADMSG, "sessions[0].regions[0].fdname",
	 "missing"},
	{"/sessions/0/regions/0/gpa", "4096", -EBADMSG, "sessions[0].regions[0].gpa",
	 "expected a \"0x...\" hex string"},
	{"/sessions/0/regions/0/gpa", "\"0x\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"0x12g0\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"0x00000000000001000\"", -EBADMSG,
	 "sessions[0].regions[0].gpa", "1 to 16 hex digits"}, /* 17 digits */
	{"/sessions/0/regions/0/gpa", "\"0X1000\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"1000\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"-0x1000\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"0x-1000\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"0x+1000\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\" 0x1000\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"0x1000 \"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"0x 1000\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/gpa", "\"0x1000\\u0000\"", -EBADMSG, "sessions[0].regions[0].gpa",
	 "1 to 16 hex digits"},
	{"/sessions/0/regions/0/offset", "\"0x10000000000000000\"", -EBADMSG,
	 "sessions[0].regions[0].offset", "1 to 16 hex digits"},
	{"/sessions/0/regions/0/size", "\"0x1000\"", -EBADMSG, "sessions[0].regions[0]",
	 "unknown key \"size\""},

	/* mappings */
	{"/sessions/0/mappings/1/iova", "\"0x0\"", -EBADMSG, "sessions[0].mappings[1].iova",
	 "overlaps mappings[0]"},
	{"/sessions/0/mappings/1/iova", "\"0x100002000\"", -EBADMSG, "sessions[0].mappings[2].iova",
	 "overlaps mappings[1]"},
	{"/sessions/0/mappings/1/length", "\"0x3000\"", -EBADMSG, "sessions[0].mappings[2].iova",
	 "overlaps mappings[1]"},
	{"/sessions/0/mappings/0/length", "\"0x0\"", -EBADMSG, "sessions[0].mappings[0].length",
	 "zero"},
	{"/sessions/0/mappings/1/iova", "\"0x100000800\"", -EBADMSG, "sessions[0].mappings[1].iova",
	 "not aligned"},
	{"/sessions/0/mappings/1/gpa", "\"0x100000001\"", -EBADMSG, "sessions[0].mappings[1].gpa",
	 "not aligned"},
	{"/sessions/0/mappings/1/length", "\"0x1001\"", -EBADMSG, "sessions[0].mappings[1].length",
	 "not a multiple of the page size"},
	{"/sessions/1/mappings/0/length", "\"0x1000\"", -EBADMSG, "sessions[1].mappings[0].length",
	 "not a multiple of the page size 0x200000"},
	{"/sessions/0/mappings/1/iova", "\"0xfffffffffffff000\"", -EBADMSG,
	 "sessions[0].mappings[1].iova", "past the end"},
	{"/sessions/0/mappings/1/gpa", "\"0xfffffffffffff000\"", -EBADMSG,
	 "sessions[0].mappings[1].gpa", "past the end"},
	{"/sessions/0/mappings/0", "[]", -EBADMSG, "sessions[0].mappings[0]", "expected an object"},
	{"/sessions/0/mappings/0/length", "null", -EBADMSG, "sessions[0].mappings[0].length",
	 "expected a \"0x...\" hex string"},
	{"/sessions/0/mappings/0/iova", DELETE, -EBADMSG, "sessions[0].mappings[0].iova",
	 "missing"},
	{"/sessions/0/mappings/2/dirty", "true", -EBADMSG, "sessions[0].mappings[2]",
	 "unknown key \"dirty\""},
	{"/sessions/0/mappings", "\"none\"", -EBADMSG, "sessions[0].mappings", "expected an array"},
};

/* Apply one change to the golden document; DELETE removes the member. */
static char *mutate_golden(const char *pointer, const char *value)
{
	_cleanup_(json_putp) struct json_object *root = json_tokener_parse(golden);
	char *text;

	ck_assert_ptr_nonnull(root);
	if (value == DELETE) {
		_cleanup_free_ char *parent_path = xstrdup(pointer);
		char *slash = strrchr(parent_path, '/');
		struct json_object *parent;

		*slash = 0;
		ck_assert_int_eq(json_pointer_get(root, parent_path, &parent), 0);
		ck_assert(json_object_is_type(parent, json_type_object));
		ck_assert(json_object_object_get_ex(parent, slash + 1, NULL));
		json_object_object_del(parent, slash + 1);
	} else {
		struct json_object *v = json_tokener_parse(value);

		ck_assert_msg(v || strcmp(value, "null") == 0, "bad test value %s", value);
		ck_assert_int_eq(json_pointer_set(&root, pointer, v), 0);
	}
	text = xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
	return text;
}

static void assert_rejected(const char *text, int err, const char *field, const char *what,
			    const char *label)
{
	struct iod_state *st = (struct iod_state *)0x1;
	_cleanup_free_ char *reason = NULL;
	int r;

	r = iod_state_from_json(text, &st, &reason);
	ck_assert_msg(r == err, "%s: got %d (%s), want %d", label, r, reason ? reason : "-", err);
	ck_assert_ptr_eq(st, (struct iod_state *)0x1);
	ck_assert_msg(reason, "%s: no reason", label);
	ck_assert_msg(!field || strstr(reason, field), "%s: reason \"%s\" does not name %s", label,
		      reason, field);
	ck_assert_msg(!what || strstr(reason, what), "%s: reason \"%s\" does not say \"%s\"", label,
		      reason, what);

	/* the reason is optional */
	st = (struct iod_state *)0x1;
	ck_assert_int_eq(iod_state_from_json(text, &st, NULL), err);
	ck_assert_ptr_eq(st, (struct iod_state *)0x1);
}

START_TEST(test_reject)
{
	const struct reject_case *c = &reject_cases[_i];
	_cleanup_free_ char *text = mutate_golden(c->pointer, c->value);
	char label[256];

	snprintf(label, sizeof(label), "%s = %s", c->pointer, c->value ? c->value : "(deleted)");
	assert_rejected(text, c->err, c->field, c->what, label);
}
END_TEST

/* Changes the strict rules allow. */
struct accept_case {
	const char *pointer;
	const char *value;
};

static const struct accept_case accepted_changes[] = {
	{"/sessions/1/iommufd_fdname", "null"}, /* adopt mode: fd names optional */
	{"/sessions/1/devices/0/fdname", "\"vm_b.dev\""},
	{"/sessions/1/regions/0/fdname", "\"vm_b.mem\""},
	{"/sessions/0/owner", "null"},
	{"/sessions/0/log_fdname", "null"},
	{"/sessions/0/name",
	 "\"0123456789012345678901234567890123456789012345678901234567890123\""},
	{"/sessions/1/page_shift", "30"},
	{"/sessions/0/regions/1/gpa", "\"0x80000000\""}, /* touching is not overlapping */
	{"/sessions/0/mappings/2/iova", "\"0x100001000\""}, /* touching */
	{"/sessions/0/mappings/2/gpa", "\"0xffffffffffffd000\""}, /* ends 4 KiB below 2^64 */
	{"/generation", "18446744073709551614"}, /* the last one with a successor */
	{"/sessions/0/rounds", "18446744073709551615"},
	{"/sessions/0/pending_round", "3"},
	{"/sessions/0/pending_round", "0"}, /* written by no daemon, read as absent */
	{"/sessions/0/uid", "4294967295"},
	{"/sessions/0/ioas_id", "0"},
	{"/sessions/1/ioas_id", "4294967295"},
	{"/sessions/0/devices/0/name", "\"caf\\u00e9 \xe2\x82\xac \\\"x\\\"\""},
	{"/sessions/0/flags", "[\"viommu\",\"huge-pages\",\"failed\",\"tracking\"]"},
	{"/sessions/0/disconnect_policy", "\"destroy\""},
	{"/sessions/1/disconnect_policy", "\"keep\""},
	{"/sessions/1/flags", "[\"nested\"]"}, /* a nest parent alone, no children yet */
};

START_TEST(test_accept_changes)
{
	const struct accept_case *c = &accepted_changes[_i];
	_cleanup_free_ char *text = NULL, *reason = NULL, *again = NULL;
	_cleanup_(iod_state_freep) struct iod_state *st = NULL, *back = NULL;
	int r;

	text = mutate_golden(c->pointer, c->value);
	r = iod_state_from_json(text, &st, &reason);
	ck_assert_msg(r == 0, "%s = %s rejected: %s", c->pointer, c->value, reason);
	/* and it survives a round trip */
	ck_assert_int_eq(iod_state_to_json(st, &again), 0);
	ck_assert_int_eq(iod_state_from_json(again, &back, NULL), 0);
	assert_state_equal(st, back);
}
END_TEST

START_TEST(test_accept_values)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_(iod_state_freep) struct iod_state *st = NULL;

	text = mutate_golden("/generation", "18446744073709551614");
	ck_assert_int_eq(iod_state_from_json(text, &st, NULL), 0);
	ck_assert_uint_eq(st->generation, UINT64_MAX - 1);
	st = iod_state_free(st);
	free(text);

	text = mutate_golden("/sessions/0/flags",
			     "[\"viommu\",\"huge-pages\",\"failed\",\"tracking\"]");
	ck_assert_int_eq(iod_state_from_json(text, &st, NULL), 0);
	ck_assert_uint_eq(st->sessions[0].flags, IOD_SESSION_F_ALL & ~IOD_SESSION_F_NESTED);
	st = iod_state_free(st);
	free(text);

	text = mutate_golden("/sessions/1/flags",
			     "[\"nested\",\"huge-pages\",\"failed\",\"tracking\"]");
	ck_assert_int_eq(iod_state_from_json(text, &st, NULL), 0);
	ck_assert_uint_eq(st->sessions[1].flags, IOD_SESSION_F_ALL & ~IOD_SESSION_F_VIOMMU);
	st = iod_state_free(st);
	free(text);

	text = mutate_golden("/sessions/0/devices/0/name", "\"caf\\u00e9\"");
	ck_assert_int_eq(iod_state_from_json(text, &st, NULL), 0);
	ck_assert_str_eq(st->sessions[0].devices[0].name, "caf\xc3\xa9");
	st = iod_state_free(st);
	free(text);

	text = mutate_golden("/sessions/1/iommufd_fdname", "null");
	ck_assert_int_eq(iod_state_from_json(text, &st, NULL), 0);
	ck_assert_ptr_null(st->sessions[1].iommufd_fdname);
	st = iod_state_free(st);
	free(text);

	/* one session with the policy, one without (as an older daemon wrote it) */
	text = mutate_golden("/sessions/1/disconnect_policy", DELETE);
	ck_assert_int_eq(iod_state_from_json(text, &st, NULL), 0);
	ck_assert_int_eq(st->sessions[0].disconnect_policy, IOD_STATE_DISCONNECT_KEEP);
	ck_assert_int_eq(st->sessions[1].disconnect_policy, IOD_STATE_DISCONNECT_UNSET);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Rejections of malformed text */

#define G_HEAD "{\"version\":1,\"generation\":"
#define SESSION_PREFIX                                                                            \
	"{\"version\":1,\"generation\":0,\"sessions\":[{\"name\":\"x\",\"uid\":0,\"owner\":null," \
	"\"mode\":\"adopt\",\"ioas_id\":1,\"page_shift\":12,\"flags\":[],\"rounds\":0,"           \
	"\"iommufd_fdname\":null,\"log_fdname\":null,\"hwpts\":[],\"devices\":[],"                \
	"\"regions\":[],\"mappings\":["
#define SESSION_SUFFIX "]}]}"

static const struct text_case {
	const char *label;
	const char *text;
	int err;
	const char *what;
} text_cases[] = {
	{"empty", "", -EBADMSG, "empty"},
	{"blank", "  \n\t", -EBADMSG, "empty"},
	{"open brace", "{", -EBADMSG, "ends before"},
	{"truncated", G_HEAD "0,\"sessions\":[]", -EBADMSG, "ends before"},
	{"truncated in a string", G_HEAD "0,\"sessions\":[],\"x", -EBADMSG, "ends before"},
	{"NUL inside (the text ends there)", G_HEAD "0\0,\"sessions\":[]}", -EBADMSG,
	 "ends before"},
	{"trailing comma in object", G_HEAD "0,\"sessions\":[],}", -EBADMSG, "malformed JSON"},
	{"trailing comma in array",
	 SESSION_PREFIX "{\"iova\":\"0x0\",\"gpa\":\"0x0\","
			"\"length\":\"0x1000\"}," SESSION_SUFFIX,
	 -EBADMSG, "malformed JSON"},
	{"trailing garbage", EMPTY_DOC "x", -EBADMSG, "malformed JSON"},
	{"trailing object", EMPTY_DOC "{}", -EBADMSG, "malformed JSON"},
	{"trailing brace", EMPTY_DOC "}", -EBADMSG, "malformed JSON"},
	{"trailing garbage after blanks", EMPTY_DOC "\n\n0", -EBADMSG, "malformed JSON"},
	{"trailing NUL-escaped garbage", EMPTY_DOC " \\u0000", -EBADMSG, "malformed JSON"},
	{"comment", "{/* */\"version\":1,\"generation\":0,\"sessions\":[]}", -EBADMSG,
	 "malformed JSON"},
	{"single quotes", "{'version':1,'generation':0,'sessions':[]}", -EBADMSG, "single-quoted"},
	{"unquoted key", "{version:1,\"generation\":0,\"sessions\":[]}", -EBADMSG,
	 "malformed JSON"},
	{"not an object: array", "[]", -EBADMSG, "not an object"},
	{"not an object: string", "\"x\"", -EBADMSG, "not an object"},
	{"not an object: number", "1 ", -EBADMSG, "not an object"},
	{"not an object: null", "null", -EBADMSG, "not an object"},
	{"deeply nested array",
	 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
	 -EBADMSG, "malformed JSON"},
	{"deeply nested value", G_HEAD "0,\"sessions\":[[[[[[[[[[]]]]]]]]]]}", -EBADMSG,
	 "malformed JSON"},
	{"nested inside a session", SESSION_PREFIX "[[[[[[[[]]]]]]]]" SESSION_SUFFIX, -EBADMSG,
	 "malformed JSON"},
	{"huge number", G_HEAD "18446744073709551616,\"sessions\":[]}", -EBADMSG,
	 "out of the 64-bit range"},
	{"huger number", G_HEAD "99999999999999999999999999,\"sessions\":[]}", -EBADMSG,
	 "out of the 64-bit range"},
	{"huge negative number", G_HEAD "-9223372036854775809,\"sessions\":[]}", -EBADMSG,
	 "out of the 64-bit range"},
	{"negative number", G_HEAD "-1,\"sessions\":[]}", -EBADMSG,
	 "generation: must not be negative"},
	{"huge exponent", G_HEAD "1e400,\"sessions\":[]}", -EBADMSG,
	 "generation: expected an integer"},
	{"fraction", G_HEAD "0.5,\"sessions\":[]}", -EBADMSG, "generation: expected an integer"},
	{"NaN", G_HEAD "NaN,\"sessions\":[]}", -EBADMSG, "not a JSON value"},
	{"Infinity", G_HEAD "Infinity,\"sessions\":[]}", -EBADMSG, "not a JSON value"},
	{"-Infinity", G_HEAD "-Infinity,\"sessions\":[]}", -EBADMSG, "malformed"},
	{"leading zeros", G_HEAD "00,\"sessions\":[]}", -EBADMSG, "leading zero"},
	{"negative leading zero", G_HEAD "-01,\"sessions\":[]}", -EBADMSG, "leading zero"},
	{"leading zero, single", G_HEAD "07,\"sessions\":[]}", -EBADMSG, "malformed"},
	{"trailing dot", G_HEAD "1.,\"sessions\":[]}", -EBADMSG, "malformed number"},
	{"plus sign", G_HEAD "+1,\"sessions\":[]}", -EBADMSG, "malformed JSON"},
	{"hex number", G_HEAD "0x10,\"sessions\":[]}", -EBADMSG, "malformed JSON"},
	{"upper case literal", G_HEAD "0,\"sessions\":[],\"a\":TRUE}", -EBADMSG, "malformed JSON"},
	{"a valid session list, then garbage", SESSION_PREFIX SESSION_SUFFIX "x", -EBADMSG,
	 "malformed JSON"},
	{"duplicate key", "{\"version\":1,\"version\":1,\"generation\":0,\"sessions\":[]}",
	 -EBADMSG, "duplicate key \"version\""},
	{"duplicate key, escaped",
	 "{\"version\":1,\"\\u0076ersion\":1,\"generation\":0,\"sessions\":[]}", -EBADMSG,
	 "duplicate key"},
	{"duplicate key, last differs",
	 "{\"version\":1,\"generation\":0,\"sessions\":[],\"generation\":5}", -EBADMSG,
	 "duplicate key \"generation\""},
	{"duplicate key in a mapping",
	 SESSION_PREFIX "{\"iova\":\"0x0\",\"gpa\":\"0x0\",\"length\":\"0x1000\","
			"\"length\":\"0x2000\"}" SESSION_SUFFIX,
	 -EBADMSG, "duplicate key \"length\""},
	{"same keys in sibling objects are fine, but not here",
	 SESSION_PREFIX "{\"iova\":\"0x0\",\"gpa\":\"0x0\",\"length\":\"0x1000\"},"
			"{\"iova\":\"0x1000\",\"iova\":\"0x1000\",\"gpa\":\"0x0\","
			"\"length\":\"0x1000\"}" SESSION_SUFFIX,
	 -EBADMSG, "duplicate key \"iova\""},
	{"raw tab in a string", G_HEAD "0,\"sessions\":[],\"a\tb\":1}", -EBADMSG,
	 "raw control character"},
	{"raw newline in a string",
	 "{\"version\":1,\"generation\":0,\"sessions\":[{\"name\":\"a\nb\"}]}", -EBADMSG,
	 "raw control character"},
	{"invalid UTF-8", G_HEAD "0,\"sessions\":[],\"\xff\":1}", -EBADMSG, "malformed JSON"},
	{"overlong UTF-8 in a key", G_HEAD "0,\"sessions\":[],\"\xc0\xaf\":1}", -EBADMSG,
	 "unknown key"},
	{"byte order mark", "\xef\xbb\xbf" EMPTY_DOC, -EBADMSG, "malformed JSON"},
	{"key with a NUL", G_HEAD "0,\"sessions\":[],\"generation\\u0000\":5}", -EBADMSG,
	 "contains a NUL"},
	{"key with a NUL, alone", G_HEAD "0,\"sessions\":[],\"x\\u0000\":5}", -EBADMSG,
	 "contains a NUL"},
	{"escaped key, no NUL", G_HEAD "0,\"sessions\":[],\"\\u0078\":5}", -EBADMSG,
	 "unknown key \"x\""},
	{"unknown version with unknown keys", "{\"version\":2,\"generation\":0,\"tables\":{}}",
	 -EPROTO, "version"},
	{"version only", "{\"version\":1}", -EBADMSG, "generation: missing"},
	{"empty object", "{}", -EBADMSG, "version: missing"},
	{"too many keys",
	 "{\"version\":1,\"generation\":0,\"sessions\":[],\"a\":0,\"b\":0,"
	 "\"c\":0,\"d\":0,\"e\":0,\"f\":0,\"g\":0,\"h\":0,\"i\":0,\"j\":0,\"k\":0,"
	 "\"l\":0,\"m\":0,\"n\":0,\"o\":0}",
	 -EBADMSG, "too many keys"},
	{"unknown key in an empty session list", G_HEAD "0,\"sessions\":[],\"Sessions\":[]}",
	 -EBADMSG, "unknown key \"Sessions\""},
};

START_TEST(test_reject_text)
{
	const struct text_case *c = &text_cases[_i];

	assert_rejected(c->text, c->err, NULL, c->what, c->label);
}
END_TEST

START_TEST(test_reject_every_prefix)
{
	/* No proper prefix of a valid document is a valid document. */
	const size_t len = strlen(golden);

	for (size_t n = 0; n < len; n++) {
		_cleanup_free_ char *text = strndup(golden, n);
		_cleanup_free_ char *reason = NULL;
		struct iod_state *st = NULL;
		int r;

		ck_assert_ptr_nonnull(text);
		r = iod_state_from_json(text, &st, &reason);
		if (r != -EBADMSG || !reason || st)
			ck_abort_msg("prefix of %zu bytes: %d (%s)", n, r, reason ? reason : "-");
	}
}
END_TEST

START_TEST(test_reject_deep_nesting)
{
	/* far beyond any depth limit */
	const size_t depth = 100000;
	_cleanup_free_ char *text = malloc(2 * depth + 1);

	ck_assert_ptr_nonnull(text);
	memset(text, '[', depth);
	memset(text + depth, ']', depth);
	text[2 * depth] = 0;
	assert_rejected(text, -EBADMSG, NULL, "malformed JSON", "100000 brackets");
}
END_TEST

/* The daemon reads a memfd: the length is what was read, and a NUL byte is not an end. */
START_TEST(test_reject_nul)
{
	const size_t len = strlen(golden);
	static const char tails[][8] = {"", "{}", " ", "\n{}", "x"};

	for (size_t k = 0; k < ELEMENTSOF(tails); k++) {
		_cleanup_free_ char *text = malloc(len + 1 + sizeof(tails[k]));
		_cleanup_free_ char *reason = NULL, *want = NULL;
		struct iod_state *st = (struct iod_state *)0x1;
		size_t n = len + 1 + strlen(tails[k]);

		ck_assert_ptr_nonnull(text);
		memcpy(text, golden, len);
		text[len] = '\0';
		memcpy(text + len + 1, tails[k], strlen(tails[k]));
		ck_assert_int_eq(iod_state_from_json_len(text, n, &st, &reason), -EBADMSG);
		ck_assert_ptr_eq(st, (struct iod_state *)0x1);
		ck_assert_int_ge(asprintf(&want, "NUL byte at offset %zu", len), 0);
		ck_assert_msg(reason && strstr(reason, want), "golden + NUL + \"%s\": reason %s",
			      tails[k], reason ? reason : "(none)");
	}
	/* a NUL inside, where the text before it is no document */
	{
		static const char text[] = G_HEAD "0\0,\"sessions\":[]}";
		_cleanup_free_ char *reason = NULL;
		struct iod_state *st = NULL;

		ck_assert_int_eq(iod_state_from_json_len(text, sizeof(text) - 1, &st, &reason),
				 -EBADMSG);
		ck_assert_msg(reason && strstr(reason, "NUL byte at offset 27"), "reason %s",
			      reason ? reason : "(none)");
	}
}
END_TEST

START_TEST(test_accept_len)
{
	const size_t len = strlen(golden);
	_cleanup_(iod_state_freep) struct iod_state *want = golden_state(), *st = NULL;
	_cleanup_free_ char *text = malloc(len + 4);
	_cleanup_free_ char *reason = NULL;
	int r;

	/* not NUL-terminated: the bytes after len are not looked at */
	ck_assert_ptr_nonnull(text);
	memcpy(text, golden, len);
	memcpy(text + len, "x\0{", 4);
	r = iod_state_from_json_len(text, len, &st, &reason);
	ck_assert_msg(r == 0, "rejected (%d): %s", r, reason ? reason : "(no reason)");
	assert_state_equal(want, st);
	ck_assert_int_eq(iod_state_from_json_len(NULL, 0, &st, NULL), -EINVAL);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* The validator on structs in memory (and iod_state_to_json refusing them) */

typedef void (*mutate_fn)(struct iod_state *st);

static void replace_str(char **p, const char *s)
{
	free(*p);
	*p = xstrdup(s);
}

#define S0 (&st->sessions[0])
#define S1 (&st->sessions[1])

static void m_nested_viommu(struct iod_state *st)
{
	make_nested(st);
	S1->flags |= IOD_SESSION_F_VIOMMU;
}
static void m_nested_wrong_parent(struct iod_state *st)
{
	make_nested(st);
	S1->hwpts[2].parent_id = 11;
}
static void m_nested_parent_has_parent(struct iod_state *st)
{
	make_nested(st);
	S1->hwpts[0].parent_id = 12;
}
static void m_nested_parent_not_capable(struct iod_state *st)
{
	make_nested(st);
	S1->hwpts[0].dirty_capable = false;
}
static void m_nested_child_tracking(struct iod_state *st)
{
	make_nested(st);
	S1->hwpts[1].tracking = true;
}
static void m_parent_id_not_nested(struct iod_state *st)
{
	S0->hwpts[1].parent_id = 5;
}
static void m_name_null(struct iod_state *st)
{
	free(S0->name);
	S0->name = NULL;
}
static void m_name_bad(struct iod_state *st)
{
	replace_str(&S0->name, "no/slash");
}
static void m_name_long(struct iod_state *st)
{
	replace_str(&S0->name, "01234567890123456789012345678901234567890123456789012345678901234");
}
static void m_name_dup(struct iod_state *st)
{
	replace_str(&S1->name, "vm-a");
}
static void m_mode(struct iod_state *st)
{
	S0->mode = (enum iod_session_mode)7;
}
static void m_policy(struct iod_state *st)
{
	S0->disconnect_policy = (enum iod_state_disconnect_policy)7;
}
static void m_shift_low(struct iod_state *st)
{
	S0->page_shift = 11;
}
static void m_shift_high(struct iod_state *st)
{
	S1->page_shift = 31;
}
static void m_flags(struct iod_state *st)
{
	S0->flags |= UINT64_C(1) << 5;
}
static void m_owner_empty(struct iod_state *st)
{
	replace_str(&S0->owner, "");
}
static void m_owner_ctrl(struct iod_state *st)
{
	replace_str(&S0->owner, ":1.\x7f");
}
static void m_iommufd_null(struct iod_state *st)
{
	free(S0->iommufd_fdname);
	S0->iommufd_fdname = NULL;
}
static void m_iommufd_colon(struct iod_state *st)
{
	replace_str(&S1->iommufd_fdname, "a:b");
}
static void m_fdname_long(struct iod_state *st)
{
	char buf[257];

	memset(buf, 'f', 256);
	buf[256] = 0;
	replace_str(&S0->log_fdname, buf);
}
static void m_hwpts_null(struct iod_state *st)
{
	free(S0->hwpts);
	S0->hwpts = NULL;
}
static void m_hwpt_dup(struct iod_state *st)
{
	S0->hwpts[0].id = 6;
}
static void m_device_hwpt(struct iod_state *st)
{
	S0->devices[1].hwpt_id = 9;
}
static void m_device_index_dup(struct iod_state *st)
{
	S0->devices[0].index = 1;
}
static void m_device_name_null(struct iod_state *st)
{
	free(S0->devices[0].name);
	S0->devices[0].name = NULL;
}
static void m_device_name_overlong(struct iod_state *st)
{
	replace_str(&S0->devices[0].name, "\xc0\xaf");
}
static void m_device_name_c1(struct iod_state *st)
{
	replace_str(&S0->devices[0].name, "a\xc2\x85");
}
static void m_device_name_surrogate(struct iod_state *st)
{
	replace_str(&S0->devices[0].name, "\xed\xa0\x80");
}
static void m_device_name_truncated(struct iod_state *st)
{
	replace_str(&S0->devices[0].name, "ab\xe2\x82");
}
static void m_device_fdname_null(struct iod_state *st)
{
	free(S0->devices[1].fdname);
	S0->devices[1].fdname = NULL;
}
static void m_devices_null(struct iod_state *st)
{
	for (size_t i = 0; i < S1->n_devices; i++) {
		free(S1->devices[i].name);
		free(S1->devices[i].fdname);
	}
	free(S1->devices);
	S1->devices = NULL;
}
static void m_region_zero(struct iod_state *st)
{
	S0->regions[1].length = 0;
}
static void m_region_unaligned(struct iod_state *st)
{
	S1->regions[0].gpa = 0x1000;
}
static void m_region_overflow(struct iod_state *st)
{
	S0->regions[1].gpa = 0 - S0->regions[1].length;
}
static void m_region_offset_overflow(struct iod_state *st)
{
	S0->regions[0].offset = UINT64_MAX - 0x1000;
}
static void m_region_fdname(struct iod_state *st)
{
	free(S0->regions[1].fdname);
	S0->regions[1].fdname = NULL;
}
static void m_region_overlap(struct iod_state *st)
{
	/* regions[1] now starts inside regions[0]: the later index is blamed */
	S0->regions[1].gpa = 0x7ffff000;
}
static void m_mapping_overlap(struct iod_state *st)
{
	S0->mappings[0].iova = 0x100000000;
	S0->mappings[0].length = 0x1000;
}
static void m_mapping_zero(struct iod_state *st)
{
	S1->mappings[0].length = 0;
}
static void m_mapping_gpa(struct iod_state *st)
{
	S0->mappings[2].gpa = 0x100000200;
}
static void m_mapping_iova_overflow(struct iod_state *st)
{
	S0->mappings[2].iova = 0xffffffffffffe000;
	S0->mappings[2].length = 0x2000;
}
static void m_mapping_gpa_overflow(struct iod_state *st)
{
	S0->mappings[2].gpa = 0xfffffffffffff000;
}
static void m_mapping_big_page(struct iod_state *st)
{
	S1->mappings[0].iova = 0x1000;
}
static void m_generation_max(struct iod_state *st)
{
	st->generation = UINT64_MAX; /* the next save would wrap to 0 */
}
static void m_sessions_null(struct iod_state *st)
{
	for (size_t i = 0; i < st->n_sessions; i++)
		iod_state_session_clear(&st->sessions[i]);
	free(st->sessions);
	st->sessions = NULL;
}

static const struct validate_case {
	const char *label;
	mutate_fn mutate;
	const char *field;
	const char *what;
} validate_cases[] = {
	{"nested and viommu", m_nested_viommu, "sessions[1].flags", "exclude each other"},
	{"nested child of another", m_nested_wrong_parent, "sessions[1].hwpts[2].parent_id",
	 "11 is not the nest parent 9"},
	{"nest parent with a parent", m_nested_parent_has_parent, "sessions[1].hwpts[0].parent_id",
	 "its nest parent, which has none"},
	{"nest parent not capable", m_nested_parent_not_capable,
	 "sessions[1].hwpts[0].dirty_capable", "must track dirty pages"},
	{"nested child tracking", m_nested_child_tracking, "sessions[1].hwpts[1]",
	 "no dirty bits of its own"},
	{"parent_id outside nested", m_parent_id_not_nested, "sessions[0].hwpts[1].parent_id",
	 "only a session with the flag \"nested\""},
	{"name NULL", m_name_null, "sessions[0].name", "missing"},
	{"name bad", m_name_bad, "sessions[0].name", "not a valid session name"},
	{"name long", m_name_long, "sessions[0].name", "not a valid session name"},
	{"name duplicate", m_name_dup, "sessions[1].name", "duplicate session name"},
	{"mode", m_mode, "sessions[0].mode", "unknown mode 7"},
	{"disconnect_policy", m_policy, "sessions[0].disconnect_policy", "unknown policy 7"},
	{"page_shift 11", m_shift_low, "sessions[0].page_shift", "out of range"},
	{"page_shift 31", m_shift_high, "sessions[1].page_shift", "out of range"},
	{"flags", m_flags, "sessions[0].flags", "unknown flags 0x20"},
	{"owner empty", m_owner_empty, "sessions[0].owner", "printable"},
	{"owner DEL", m_owner_ctrl, "sessions[0].owner", "printable"},
	{"iommufd_fdname NULL", m_iommufd_null, "sessions[0].iommufd_fdname",
	 "required in owner mode"},
	{"iommufd_fdname colon", m_iommufd_colon, "sessions[1].iommufd_fdname",
	 "not a valid fd name"},
	{"fdname 256", m_fdname_long, "sessions[0].log_fdname", "not a valid fd name"},
	{"hwpts NULL", m_hwpts_null, "sessions[0].hwpts", "no array"},
	{"hwpt dup", m_hwpt_dup, "sessions[0].hwpts[1].id", "duplicate id 6 (also hwpts[0])"},
	{"device hwpt", m_device_hwpt, "sessions[0].devices[1].hwpt_id", "not one of"},
	{"device index dup", m_device_index_dup, "sessions[0].devices[1].index", "duplicate"},
	{"device name NULL", m_device_name_null, "sessions[0].devices[0].name", "UTF-8"},
	{"device name overlong", m_device_name_overlong, "sessions[0].devices[0].name", "UTF-8"},
	{"device name C1", m_device_name_c1, "sessions[0].devices[0].name", "UTF-8"},
	{"device name surrogate", m_device_name_surrogate, "sessions[0].devices[0].name", "UTF-8"},
	{"device name truncated", m_device_name_truncated, "sessions[0].devices[0].name", "UTF-8"},
	{"device fdname NULL", m_device_fdname_null, "sessions[0].devices[1].fdname",
	 "required in owner mode"},
	{"devices NULL", m_devices_null, "sessions[1].devices", "no array"},
	{"region zero", m_region_zero, "sessions[0].regions[1].length", "zero"},
	{"region unaligned", m_region_unaligned, "sessions[1].regions[0].gpa", "not aligned"},
	{"region overflow", m_region_overflow, "sessions[0].regions[1].gpa", "past the end"},
	{"region offset overflow", m_region_offset_overflow, "sessions[0].regions[0].offset",
	 "past"},
	{"region fdname", m_region_fdname, "sessions[0].regions[1].fdname",
	 "required in owner mode"},
	{"region overlap", m_region_overlap, "sessions[0].regions[1].gpa", "overlaps regions[0]"},
	{"mapping overlap", m_mapping_overlap, "sessions[0].mappings[1].iova",
	 "overlaps mappings[0]"},
	{"mapping zero", m_mapping_zero, "sessions[1].mappings[0].length", "zero"},
	{"mapping gpa", m_mapping_gpa, "sessions[0].mappings[2].gpa", "not aligned"},
	{"mapping iova overflow", m_mapping_iova_overflow, "sessions[0].mappings[2].iova",
	 "past the end"},
	{"mapping gpa overflow", m_mapping_gpa_overflow, "sessions[0].mappings[2].gpa",
	 "past the end"},
	{"mapping 2M page", m_mapping_big_page, "sessions[1].mappings[0].iova",
	 "not aligned to the page size 0x200000"},
	{"sessions NULL", m_sessions_null, "sessions", "no array"},
	{"generation 2^64-1", m_generation_max, "generation", "has no successor"},
};

START_TEST(test_validate)
{
	const struct validate_case *c = &validate_cases[_i];
	_cleanup_(iod_state_freep) struct iod_state *st = golden_state();
	_cleanup_free_ char *reason = NULL;
	char *json = (char *)0x1;
	int r;

	ck_assert_int_eq(iod_state_validate(st, NULL), 0);
	c->mutate(st);
	r = iod_state_validate(st, &reason);
	ck_assert_msg(r == -EINVAL, "%s: %d", c->label, r);
	ck_assert_msg(reason && strstr(reason, c->field) && strstr(reason, c->what),
		      "%s: reason \"%s\" should name %s and say \"%s\"", c->label,
		      reason ? reason : "(none)", c->field, c->what);
	ck_assert_int_eq(iod_state_validate(st, NULL), -EINVAL);
	ck_assert_int_eq(iod_state_to_json(st, &json), -EINVAL);
	ck_assert_ptr_eq(json, (char *)0x1);
}
END_TEST

START_TEST(test_validate_names_session)
{
	_cleanup_(iod_state_freep) struct iod_state *st = golden_state();
	_cleanup_free_ char *reason = NULL;

	/* Once a session's name is known good, reasons carry it. */
	S1->mappings[0].length = 0;
	ck_assert_int_eq(iod_state_validate(st, &reason), -EINVAL);
	ck_assert_str_eq(reason,
			 "sessions[1].mappings[0].length: must not be zero (session \"vm_b\")");
}
END_TEST

START_TEST(test_validate_accepts)
{
	_cleanup_(iod_state_freep) struct iod_state *st = golden_state();

	/* adopt mode: no fd names needed anywhere */
	free(S1->iommufd_fdname);
	S1->iommufd_fdname = NULL;
	ck_assert_int_eq(iod_state_validate(st, NULL), 0);
	/* aliases: two IOVAs on one GPA; regions may share a memfd */
	S0->mappings[1].gpa = S0->mappings[0].gpa;
	ck_assert_int_eq(iod_state_validate(st, NULL), 0);
	/* same hwpt ids and device indexes in different sessions */
	S1->hwpts[0].id = 5;
	S1->devices[0].hwpt_id = 5;
	S1->devices[0].index = 0;
	ck_assert_int_eq(iod_state_validate(st, NULL), 0);
	/* the highest page that can be mapped */
	S0->mappings[2] = (struct iod_mapping){0xffffffffffffe000, 0xffffffffffffe000, 0x1000};
	ck_assert_int_eq(iod_state_validate(st, NULL), 0);
	round_trip(st, NULL);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* The strict JSON parser under the state and the daemon's configuration (iod_json_parse) */

#define JSON_DEPTH 8
#define JSON_KEYS 16
/* A string literal and its length, NUL bytes inside included. */
#define BYTES(s) s, sizeof(s) - 1

static const struct json_reject_case {
	const char *label;
	const char *text;
	size_t len;
	const char *what; /* the reason says this */
} json_reject_cases[] = {
	{"empty", BYTES(""), "the document is empty"},
	{"only white space", BYTES(" \n\t\r "), "the document is empty"},

	{"duplicate key", BYTES("{\"a\":1,\"a\":2}"), "duplicate key \"a\" at offset 7"},
	{"duplicate key, same value", BYTES("{\"a\":1,\"b\":2,\"a\":1}"),
	 "duplicate key \"a\" at offset 13"},
	{"duplicate key, nested", BYTES("{\"x\":[{\"y\":{\"a\":1,\"a\":{}}}]}"),
	 "duplicate key \"a\" at offset 18"},
	{"duplicate key, in a later element", BYTES("[{\"a\":1},{\"a\":1,\"a\":1}]"),
	 "duplicate key \"a\" at offset 16"},
	{"duplicate key, escaped", BYTES("{\"a\":1,\"\\u0061\":2}"), "duplicate key"},
	{"duplicate key, after a nested object", BYTES("{\"a\":{\"b\":1},\"a\":2}"),
	 "duplicate key \"a\" at offset 13"},
	{"key with a NUL", BYTES("{\"a\\u0000\":1}"), "contains a NUL character"},

	{"second object", BYTES("{\"a\":1}{\"b\":2}"),
	 "trailing data after the JSON value at offset 7"},
	{"second object on the next line", BYTES("{\"a\":1}\n{\"b\":2}\n"),
	 "trailing data after the JSON value at offset 8"},
	{"second array", BYTES("[1] [2]"), "trailing data after the JSON value at offset 4"},
	{"trailing garbage", BYTES("{\"a\":1} x"),
	 "trailing data after the JSON value at offset 8"},
	{"trailing brace", BYTES("{\"a\":1}}"), "trailing data after the JSON value at offset 7"},
	{"trailing garbage after a number", BYTES("12x"),
	 "trailing data after the JSON value at offset 2"},
	{"trailing garbage after a string", BYTES("\"a\" \"b\""),
	 "trailing data after the JSON value at offset 4"},

	{"NUL after the value", BYTES("{\"a\":1}\0"), "NUL byte at offset 7"},
	{"data after a NUL", BYTES("{\"a\":1}\0{\"b\":2}"), "NUL byte at offset 7"},
	{"NUL after white space", BYTES("{\"a\":1}\n\0"), "NUL byte at offset 8"},
	{"NUL in a string", BYTES("{\"a\":\"x\0y\"}"), "NUL byte at offset 7"},
	{"NUL between tokens", BYTES("{\"a\":\0 1}"), "NUL byte at offset 5"},
	{"NUL first", BYTES("\0{}"), "NUL byte at offset 0"},

	{"single-quoted key", BYTES("{'a':1}"), "single-quoted string at offset 1"},
	{"single-quoted value", BYTES("{\"a\":'x'}"), "single-quoted string at offset 5"},
	{"single-quoted top level", BYTES("'x'"), "single-quoted string at offset 0"},
	{"single-quoted key and value", BYTES("{'a':'x'}"), "single-quoted string at offset 1"},
	{"single-quoted value, a quote in a key", BYTES("{\"it's\\\"\":'x'}"),
	 "single-quoted string at offset 10"},

	{"trailing comma in an object", BYTES("{\"a\":1,}"), "trailing comma at offset 6"},
	{"trailing comma in an array", BYTES("[1,2,]"), "trailing comma at offset 4"},
	{"trailing comma, nested, blanks", BYTES("{\"a\":[1, \n],\"b\":2}"),
	 "trailing comma at offset 7"},
	{"trailing comma after an object", BYTES("{\"a\":{},\n}"), "trailing comma at offset 7"},
	{"comma alone", BYTES("[,]"), "malformed JSON at offset 1"},

	{"block comment", BYTES("{\"a\":1 /* one */}"), "comment at offset 7"},
	{"line comment", BYTES("{\"a\":1, // one\n\"b\":2}"), "comment at offset 8"},
	{"comment first", BYTES("// settings\n{\"a\":1}"), "comment at offset 0"},
	{"hash comment", BYTES("{\"a\":1, # one\n\"b\":2}"), "comment at offset 8"},
	{"comment after the value", BYTES("{\"a\":1} // one"),
	 "trailing data after the JSON value at offset 8"},

	{"NaN", BYTES("{\"a\":NaN}"), "NaN at offset 5 is not a JSON value"},
	{"Infinity", BYTES("[Infinity]"), "Infinity at offset 1 is not a JSON value"},
	{"-Infinity", BYTES("[-Infinity]"), "malformed number at offset 1"},
	{"nan", BYTES("[nan]"), "malformed JSON at offset"},
	{"upper case literal", BYTES("[TRUE]"), "malformed JSON at offset"},
	{"unquoted key", BYTES("{a:1}"), "malformed JSON at offset"},
	{"leading zero", BYTES("[00]"), "leading zero"},
	{"plus sign", BYTES("[+1]"), "malformed JSON at offset 1"},
	{"hex number", BYTES("[0x10]"), "malformed JSON at offset"},
	{"integer beyond 64 bits", BYTES("[18446744073709551616]"),
	 "number at offset 1 is out of the 64-bit range"},
	{"raw control character", BYTES("[\"a\tb\"]"),
	 "raw control character in a string at offset 3"},
	{"invalid UTF-8", BYTES("[\"\xff\"]"), "malformed JSON at offset"},
	{"byte order mark", BYTES("\xef\xbb\xbf{}"), "malformed JSON: byte order mark at offset 0"},

	{"unterminated object", BYTES("{\"a\":1"), "ends before the value is complete"},
	{"unterminated string", BYTES("\"abc"), "ends before the value is complete"},
	{"unterminated literal", BYTES("[tru"), "ends before the value is complete"},
	{"too deep", BYTES("[[[[[[[[[]]]]]]]]]"), "malformed JSON at offset 8"},
	{"too many keys",
	 BYTES("{\"a\":0,\"b\":0,\"c\":0,\"d\":0,\"e\":0,\"f\":0,\"g\":0,\"h\":0,\"i\":0,"
	       "\"j\":0,\"k\":0,\"l\":0,\"m\":0,\"n\":0,\"o\":0,\"p\":0,\"q\":0}"),
	 "too many keys in one object (more than 16) at offset 97"},
};

START_TEST(test_json_reject)
{
	const struct json_reject_case *c = &json_reject_cases[_i];
	struct json_object *o = (struct json_object *)0x1;
	_cleanup_free_ char *reason = NULL;
	int r;

	r = iod_json_parse(c->text, c->len, JSON_DEPTH, JSON_KEYS, &o, &reason);
	ck_assert_msg(r == -EBADMSG, "%s: accepted (%d)", c->label, r);
	ck_assert_ptr_eq(o, (struct json_object *)0x1);
	ck_assert_msg(reason && strstr(reason, c->what), "%s: reason \"%s\" does not say \"%s\"",
		      c->label, reason ? reason : "(none)", c->what);
	/* the reason is optional */
	ck_assert_int_eq(iod_json_parse(c->text, c->len, JSON_DEPTH, JSON_KEYS, &o, NULL),
			 -EBADMSG);
	ck_assert_ptr_eq(o, (struct json_object *)0x1);
}
END_TEST

static const struct json_accept_case {
	const char *text;
	size_t len;
	enum json_type type;
} json_accept_cases[] = {
	{BYTES("{}"), json_type_object},
	{BYTES("[]"), json_type_array},
	{BYTES(" \n\t{\"a\" : 1 , \"b\":[true,false,null],\"c\":{\"a\":-1.5e3}}\r\n"),
	 json_type_object}, /* the same key in an inner object */
	{BYTES("[{\"a\":1},{\"a\":1}]"), json_type_array}, /* and in sibling objects */
	{BYTES("{\"a\":{\"b\":1},\"b\":2}"), json_type_object},
	{BYTES("{\"a\":\"/* no comment */ // 'x', ] } \\\" #\"}"), json_type_object},
	{BYTES("{\"a\":1,\"A\":2,\"a \":3,\"\\u0061b\":4,\"\\\"\":5,\"\":6}"), json_type_object},
	{BYTES("{\"caf\\u00e9\":\"\xe2\x82\xac \\ud83d\\ude00\"}"), json_type_object},
	{BYTES("\"x\""), json_type_string},
	{BYTES("0"), json_type_int},
	{BYTES("-12"), json_type_int},
	{BYTES("1.5e3 "), json_type_double},
	{BYTES("18446744073709551615"), json_type_int},
	{BYTES("-9223372036854775808"), json_type_int},
	{BYTES("true"), json_type_boolean},
	{BYTES("null"), json_type_null},
	{BYTES("[[[[[[[[]]]]]]]]"), json_type_array}, /* 8 deep */
	{BYTES("{\"a\":0,\"b\":0,\"c\":0,\"d\":0,\"e\":0,\"f\":0,\"g\":0,\"h\":0,\"i\":0,"
	       "\"j\":0,\"k\":0,\"l\":0,\"m\":0,\"n\":0,\"o\":0,\"p\":{\"a\":0}}"),
	 json_type_object}, /* 16 keys */
};

START_TEST(test_json_accept)
{
	const struct json_accept_case *c = &json_accept_cases[_i];
	_cleanup_(json_putp) struct json_object *o = NULL, *want = NULL;
	_cleanup_free_ char *reason = NULL;
	int r;

	r = iod_json_parse(c->text, c->len, JSON_DEPTH, JSON_KEYS, &o, &reason);
	ck_assert_msg(r == 0, "%s: rejected (%d): %s", c->text, r, reason ? reason : "(none)");
	ck_assert_ptr_null(reason);
	ck_assert_msg(json_object_is_type(o, c->type), "%s: type %d", c->text,
		      json_object_get_type(o));
	/* the same tree json-c's own parser makes */
	want = json_tokener_parse(c->text);
	ck_assert_msg(json_object_equal(o, want), "%s: parsed as %s", c->text,
		      json_object_to_json_string(o));
}
END_TEST

START_TEST(test_json_length)
{
	_cleanup_(json_putp) struct json_object *o = NULL;
	struct json_object *out = (struct json_object *)0x1;

	/* only len bytes are read: no NUL terminator needed, what follows is not looked at */
	ck_assert_int_eq(iod_json_parse("{\"a\":1}x\0{", 7, JSON_DEPTH, JSON_KEYS, &o, NULL), 0);
	ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "a")), 1);
	json_object_put(o);
	o = NULL;
	/* a number at the very end of the text */
	ck_assert_int_eq(iod_json_parse("1234", 2, JSON_DEPTH, JSON_KEYS, &o, NULL), 0);
	ck_assert_int_eq(json_object_get_int(o), 12);

	ck_assert_int_eq(iod_json_parse(NULL, 0, JSON_DEPTH, JSON_KEYS, &out, NULL), -EINVAL);
	ck_assert_int_eq(iod_json_parse("{}", 2, JSON_DEPTH, JSON_KEYS, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iod_json_parse("{}", 2, 0, JSON_KEYS, &out, NULL), -EINVAL);
	ck_assert_int_eq(iod_json_parse("{}", 2, JSON_DEPTH, 0, &out, NULL), -EINVAL);
	ck_assert_ptr_eq(out, (struct json_object *)0x1);
}
END_TEST

static Suite *json_suite(void)
{
	Suite *s = suite_create("json");
	TCase *tc;

	tc = tcase_create("strict");
	tcase_add_loop_test(tc, test_json_reject, 0, ELEMENTSOF(json_reject_cases));
	tcase_add_loop_test(tc, test_json_accept, 0, ELEMENTSOF(json_accept_cases));
	tcase_add_test(tc, test_json_length);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *state_suite(void)
{
	Suite *s = suite_create("state");
	TCase *tc;

	tc = tcase_create("format");
	tcase_add_test(tc, test_golden_format);
	tcase_add_test(tc, test_before_policy);
	tcase_add_test(tc, test_policy_round_trip);
	tcase_add_test(tc, test_nested_round_trip);
	tcase_add_test(tc, test_device_source_round_trip);
	tcase_add_test(tc, test_empty_state);
	tcase_add_test(tc, test_restarts_round_trip);
	tcase_add_test(tc, test_pending_round_round_trip);
	tcase_add_test(tc, test_empty_session_round_trip);
	tcase_add_test(tc, test_rich_round_trip);
	tcase_add_test(tc, test_free_null);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_loop_test(tc, test_session_name_valid, 0, ELEMENTSOF(name_cases));
	tcase_add_test(tc, test_accept_pretty_and_reordered);
	tcase_add_test(tc, test_accept_hex_spellings);
	tcase_add_loop_test(tc, test_accept_changes, 0, ELEMENTSOF(accepted_changes));
	tcase_add_test(tc, test_accept_values);
	suite_add_tcase(s, tc);

	tc = tcase_create("reject");
	tcase_add_loop_test(tc, test_reject, 0, ELEMENTSOF(reject_cases));
	tcase_add_loop_test(tc, test_reject_text, 0, ELEMENTSOF(text_cases));
	tcase_add_test(tc, test_reject_every_prefix);
	tcase_add_test(tc, test_reject_deep_nesting);
	tcase_add_test(tc, test_reject_nul);
	tcase_add_test(tc, test_accept_len);
	suite_add_tcase(s, tc);

	tc = tcase_create("validate");
	tcase_add_loop_test(tc, test_validate, 0, ELEMENTSOF(validate_cases));
	tcase_add_test(tc, test_validate_names_session);
	tcase_add_test(tc, test_validate_accepts);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(state_suite());
	int failures;

	srunner_add_suite(sr, json_suite());
	srunner_run_all(sr, CK_NORMAL);
	failures = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failures ? 1 : 0;
}
