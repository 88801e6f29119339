/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The state journal: appended records replay onto the snapshot they follow; a torn record
 * (a kill in the middle of an append) is never read; a damaged, stale or inapplicable
 * journal is refused with a reason and changes nothing; the header of a stored memfd is
 * checked before anything is mapped; the cost of an append is the record's, whatever the
 * state holds.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iod-state-journal.h"
#include "iodirty.h"

IOD_DEFINE_FREEP(struct iod_state, iod_state_free);

/* Two sessions with a vIOMMU, generation 5, vm1 with one mapping. */
static const char base_json[] =
	"{\"version\":1,\"generation\":5,\"sessions\":["
	"{\"name\":\"vm1\",\"uid\":0,\"owner\":null,\"mode\":\"adopt\","
	"\"disconnect_policy\":\"keep\",\"ioas_id\":1,\"page_shift\":12,\"flags\":[\"viommu\"],"
	"\"rounds\":2,\"iommufd_fdname\":null,\"log_fdname\":null,\"hwpts\":[],\"devices\":[],"
	"\"regions\":[{\"gpa\":\"0x0\",\"length\":\"0x40000000\",\"offset\":\"0x0\","
	"\"fdname\":null}],"
	"\"mappings\":[{\"iova\":\"0x100000\",\"gpa\":\"0x0\",\"length\":\"0x1000\"}]},"
	"{\"name\":\"vm2\",\"uid\":0,\"owner\":null,\"mode\":\"adopt\","
	"\"disconnect_policy\":\"keep\",\"ioas_id\":1,\"page_shift\":12,\"flags\":[\"viommu\"],"
	"\"rounds\":0,\"iommufd_fdname\":null,\"log_fdname\":null,\"hwpts\":[],\"devices\":[],"
	"\"regions\":[{\"gpa\":\"0x0\",\"length\":\"0x40000000\",\"offset\":\"0x0\","
	"\"fdname\":null}],\"mappings\":[]}]}";

static struct iod_state *base_state(void)
{
	struct iod_state *st = NULL;
	char *reason = NULL;
	int r = iod_state_from_json(base_json, &st, &reason);

	ck_assert_msg(r == 0, "base state: %s", reason ? reason : strerror(-r));
	return st;
}

static char *to_json(const struct iod_state *st)
{
	char *json = NULL;

	ck_assert_int_eq(iod_state_to_json(st, &json), 0);
	return json;
}

static struct iod_state_journal *journal(uint64_t capacity, uint64_t base)
{
	struct iod_state_journal *j = NULL;

	ck_assert_int_eq(iod_state_journal_new(capacity, base, &j), 0);
	return j;
}

static const struct iod_mapping two_maps[] = {
	{.iova = 0x200000, .gpa = 0x10000, .length = 0x2000},
	{.iova = 0x300000, .gpa = 0x10000, .length = 0x1000}, /* an alias: legal */
};

static const struct iod_mapping unmap_first[] = {{.iova = 0x100000, .length = 0x1000}};

/* The reference result of the three records below, applied by hand. */
static void expect_applied(const struct iod_state *st)
{
	const struct iod_state_session *s = &st->sessions[0];

	ck_assert_uint_eq(s->n_mappings, 2);
	ck_assert_uint_eq(s->mappings[0].iova, 0x200000);
	ck_assert_uint_eq(s->mappings[0].gpa, 0x10000);
	ck_assert_uint_eq(s->mappings[0].length, 0x2000);
	ck_assert_uint_eq(s->mappings[1].iova, 0x300000);
	ck_assert_uint_eq(s->rounds, 7);
	ck_assert_uint_eq(s->pending_round, 7); /* a round's record: the client holds it */
	ck_assert_uint_eq(st->sessions[1].n_mappings, 0);
	ck_assert_uint_eq(st->sessions[1].rounds, 0);
	ck_assert_uint_eq(st->sessions[1].pending_round, 0);
}

static void append_three(struct iod_state_journal *j)
{
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps, 2, 0), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_UNMAP, "vm1", unmap_first, 1, 0), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_ROUNDS, "vm1", NULL, 0, 7), 0);
}

START_TEST(test_records_replay_onto_their_snapshot)
{
	_cleanup_(iod_state_freep) struct iod_state *st = base_state();
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	uint64_t n = 0;

	append_three(j);
	ck_assert_uint_eq(iod_state_journal_used(j),
			  iod_state_journal_record_size(IOD_SJ_MAP, "vm1", 2) +
				  iod_state_journal_record_size(IOD_SJ_UNMAP, "vm1", 1) +
				  iod_state_journal_record_size(IOD_SJ_ROUNDS, "vm1", 0));
	ck_assert_int_eq(iod_state_journal_apply(j, st, &n, NULL), 0);
	ck_assert_uint_eq(n, 3);
	expect_applied(st);
}
END_TEST

/* The daemon's restore: a fresh instance opens the stored memfd and replays it. */
START_TEST(test_reopened_memfd_replays_and_refuses_appends_until_reset)
{
	_cleanup_(iod_state_freep) struct iod_state *st = base_state();
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *k = NULL;

	append_three(j);
	ck_assert_int_eq(iod_state_journal_open_fd(iod_state_journal_fd(j), &k, NULL), 0);
	ck_assert_int_eq(iod_state_journal_apply(k, st, NULL, NULL), 0);
	expect_applied(st);
	ck_assert_int_eq(iod_state_journal_append(k, IOD_SJ_ROUNDS, "vm1", NULL, 0, 8), -EROFS);
	iod_state_journal_reset(k, 6);
	ck_assert_uint_eq(iod_state_journal_used(k), 0);
	ck_assert_uint_eq(iod_state_journal_base(j), 6); /* the same file */
	ck_assert_int_eq(iod_state_journal_append(k, IOD_SJ_ROUNDS, "vm1", NULL, 0, 8), 0);
}
END_TEST

START_TEST(test_torn_record_is_never_read)
{
	_cleanup_(iod_state_freep) struct iod_state *st = base_state();
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *k = NULL;
	uint64_t n = 0, used;

	append_three(j);
	used = iod_state_journal_used(j);
	ck_assert_int_eq(iod_state_journal_append_torn(j, IOD_SJ_UNMAP, "vm1", two_maps, 1, 0), 0);
	ck_assert_uint_eq(iod_state_journal_used(j), used);
	ck_assert_int_eq(iod_state_journal_open_fd(iod_state_journal_fd(j), &k, NULL), 0);
	ck_assert_int_eq(iod_state_journal_apply(k, st, &n, NULL), 0);
	ck_assert_uint_eq(n, 3);
	expect_applied(st); /* the torn Unmap of 0x200000 did not happen */
}
END_TEST

START_TEST(test_journal_older_than_the_snapshot_is_ignored)
{
	_cleanup_(iod_state_freep) struct iod_state *st = base_state();
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 4);
	_cleanup_free_ char *before = to_json(st), *after = NULL;
	uint64_t n = 99;

	append_three(j);
	ck_assert_int_eq(iod_state_journal_apply(j, st, &n, NULL), 0);
	ck_assert_uint_eq(n, 0);
	after = to_json(st);
	ck_assert_str_eq(before, after);
}
END_TEST

START_TEST(test_journal_newer_than_the_snapshot_is_stale)
{
	_cleanup_(iod_state_freep) struct iod_state *st = base_state();
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 6);
	_cleanup_free_ char *reason = NULL;

	append_three(j);
	ck_assert_int_eq(iod_state_journal_apply(j, st, NULL, &reason), -ESTALE);
	ck_assert_ptr_nonnull(strstr(reason, "generation 6"));
}
END_TEST

/* Refused with a reason naming what is wrong, and st exactly as it was. */
static void assert_refused(struct iod_state_journal *j, const char *why)
{
	_cleanup_(iod_state_freep) struct iod_state *st = base_state();
	_cleanup_free_ char *before = to_json(st), *after = NULL, *reason = NULL;

	ck_assert_int_eq(iod_state_journal_apply(j, st, NULL, &reason), -EBADMSG);
	ck_assert_ptr_nonnull(reason);
	ck_assert_msg(strstr(reason, why), "reason \"%s\" lacks \"%s\"", reason, why);
	after = to_json(st);
	ck_assert_str_eq(before, after);
}

START_TEST(test_damaged_record_is_refused_and_changes_nothing)
{
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	uint64_t off = IOD_STATE_JOURNAL_HEADER +
		       iod_state_journal_record_size(IOD_SJ_MAP, "vm1", 2);
	uint8_t b;

	append_three(j);
	/* One bit of the Unmap's IOVA, after a good Map record that must not stay applied. */
	ck_assert_int_eq(pread(iod_state_journal_fd(j), &b, 1, (off_t)off + 40), 1);
	b ^= 0x10;
	ck_assert_int_eq(pwrite(iod_state_journal_fd(j), &b, 1, (off_t)off + 40), 1);
	assert_refused(j, "damaged");
}
END_TEST

START_TEST(test_map_over_a_mapping_does_not_apply)
{
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	const struct iod_mapping over = {.iova = 0x100000, .gpa = 0x2000, .length = 0x1000};

	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps, 2, 0), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", &over, 1, 0), 0);
	assert_refused(j, "does not apply");
}
END_TEST

/* A client's blind retry of a Map the daemon had recorded: journalled again, changes nothing. */
START_TEST(test_identical_map_again_changes_nothing)
{
	_cleanup_(iod_state_freep) struct iod_state *st = base_state();
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	const struct iod_mapping same = {.iova = 0x100000, .gpa = 0x0, .length = 0x1000};

	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps, 2, 0), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", &same, 1, 0), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps, 1, 0), 0);
	ck_assert_int_eq(iod_state_journal_apply(j, st, NULL, NULL), 0);
	ck_assert_uint_eq(st->sessions[0].n_mappings, 3);
	ck_assert_uint_eq(st->sessions[0].mappings[0].iova, 0x100000);
}
END_TEST

/* A refused journal leaves no round pending that it made (assert_refused compares the whole
 * state, pending_round included). */
START_TEST(test_record_of_an_unknown_session_is_refused)
{
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);

	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_ROUNDS, "vm1", NULL, 0, 3), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "gone", two_maps, 1, 0), 0);
	assert_refused(j, "no session \"gone\"");
}
END_TEST

/* The mapping result must still be a valid state: a Map of an unaligned range is not. */
START_TEST(test_replayed_state_is_validated)
{
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	const struct iod_mapping odd = {.iova = 0x400000, .gpa = 0x10, .length = 0x1000};

	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm2", &odd, 1, 0), 0);
	assert_refused(j, "vm2");
}
END_TEST

/* end moved over bytes that are no record (what no append ever leaves). */
START_TEST(test_trailing_bytes_and_a_wrong_sequence_are_refused)
{
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *k = journal(4096, 5);
	uint64_t end = IOD_STATE_JOURNAL_HEADER +
		       iod_state_journal_record_size(IOD_SJ_ROUNDS, "vm1", 0);
	uint8_t rec[64];

	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_ROUNDS, "vm1", NULL, 0, 3), 0);
	end += 16;
	ck_assert_int_eq(pwrite(iod_state_journal_fd(j), &end, 8, 32), 8);
	assert_refused(j, "trailing");

	/* The same record twice: its second copy has sequence 1 where 2 is due. */
	ck_assert_int_eq(iod_state_journal_append(k, IOD_SJ_ROUNDS, "vm1", NULL, 0, 3), 0);
	end = IOD_STATE_JOURNAL_HEADER + iod_state_journal_record_size(IOD_SJ_ROUNDS, "vm1", 0);
	ck_assert_int_eq(pread(iod_state_journal_fd(k), rec, end - IOD_STATE_JOURNAL_HEADER,
			       IOD_STATE_JOURNAL_HEADER),
			 (ssize_t)(end - IOD_STATE_JOURNAL_HEADER));
	ck_assert_int_eq(
		pwrite(iod_state_journal_fd(k), rec, end - IOD_STATE_JOURNAL_HEADER, (off_t)end),
		(ssize_t)(end - IOD_STATE_JOURNAL_HEADER));
	end += end - IOD_STATE_JOURNAL_HEADER;
	ck_assert_int_eq(pwrite(iod_state_journal_fd(k), &end, 8, 32), 8);
	assert_refused(k, "sequence 1 where 2");
}
END_TEST

START_TEST(test_full_journal_refuses_the_append_whole)
{
	uint64_t one = iod_state_journal_record_size(IOD_SJ_MAP, "vm1", 1);
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(one + 8, 5);

	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps, 1, 0), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps + 1, 1, 0),
			 -ENOSPC);
	ck_assert_uint_eq(iod_state_journal_used(j), one);
	iod_state_journal_reset(j, 6);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps + 1, 1, 0), 0);
}
END_TEST

START_TEST(test_bad_appends_write_nothing)
{
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);

	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps, 0, 0), -EINVAL);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "a:b", two_maps, 1, 0), -EINVAL);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, NULL, two_maps, 1, 0), -EINVAL);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_ROUNDS, "vm1", two_maps, 1, 0),
			 -EINVAL);
	ck_assert_int_eq(iod_state_journal_append(j, 9, "vm1", two_maps, 1, 0), -EINVAL);
	ck_assert_uint_eq(iod_state_journal_used(j), 0);
}
END_TEST

/* The header of a stored memfd is checked before it is mapped. */
START_TEST(test_open_refuses_what_is_not_a_journal)
{
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *k = NULL;
	_cleanup_free_ char *reason = NULL;
	_cleanup_close_ int fd = memfd_create("x", MFD_CLOEXEC);
	int jfd = iod_state_journal_fd(j);
	uint64_t v;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(iod_state_journal_open_fd(fd, &k, &reason), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(reason, "not a journal"));
	ck_assert_int_eq(ftruncate(fd, 4096 + 64), 0);
	ck_assert_int_eq(iod_state_journal_open_fd(fd, &k, &reason), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(reason, "magic"));

	/* end past the file, then unaligned */
	v = 64 + 4096 + 8;
	ck_assert_int_eq(pwrite(jfd, &v, 8, 32), 8);
	ck_assert_int_eq(iod_state_journal_open_fd(jfd, &k, &reason), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(reason, "end"));
	v = 64 + 4;
	ck_assert_int_eq(pwrite(jfd, &v, 8, 32), 8);
	ck_assert_int_eq(iod_state_journal_open_fd(jfd, &k, &reason), -EBADMSG);
	v = 64;
	ck_assert_int_eq(pwrite(jfd, &v, 8, 32), 8);
	/* a capacity that is not the file's */
	v = 8192;
	ck_assert_int_eq(pwrite(jfd, &v, 8, 16), 8);
	ck_assert_int_eq(iod_state_journal_open_fd(jfd, &k, &reason), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(reason, "capacity"));
	v = 4096;
	ck_assert_int_eq(pwrite(jfd, &v, 8, 16), 8);
	/* a reserved field */
	v = 1;
	ck_assert_int_eq(pwrite(jfd, &v, 8, 48), 8);
	ck_assert_int_eq(iod_state_journal_open_fd(jfd, &k, &reason), -EBADMSG);
	v = 0;
	ck_assert_int_eq(pwrite(jfd, &v, 8, 48), 8);
	ck_assert_int_eq(iod_state_journal_open_fd(jfd, &k, NULL), 0);
}
END_TEST

/* What an append costs does not depend on the state: it touches the record only. */
/* The event channel's sequence numbers ride on their batches' records, replay in order,
 * survive the JSON round trip, and a number that does not increase is refused whole. */
START_TEST(test_event_sequence_replays_and_must_increase)
{
	_cleanup_(iod_state_freep) struct iod_state *st = base_state();
	_cleanup_(iod_state_freep) struct iod_state *back = NULL;
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(4096, 5);
	_cleanup_free_ char *before = to_json(st), *json = NULL, *reason = NULL;
	uint64_t n = 0;

	ck_assert_uint_eq(iod_state_journal_record_size(IOD_SJ_MAP, "vm1", 2) + 8,
			  iod_state_journal_record_size(IOD_SJ_MAP | IOD_SJ_EVENT_SEQ, "vm1", 2));
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps, 2, 7), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_UNMAP, "vm1", unmap_first, 1, 9), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm2", two_maps, 1, 0), 0);
	ck_assert_int_eq(iod_state_journal_apply(j, st, &n, NULL), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(st->sessions[0].event_seq, 9);
	ck_assert_uint_eq(st->sessions[1].event_seq, 0); /* a bus call carries none */
	ck_assert_uint_eq(st->sessions[0].n_mappings, 2);

	json = to_json(st);
	ck_assert_ptr_nonnull(strstr(json, "\"event_seq\":9"));
	ck_assert_int_eq(iod_state_from_json(json, &back, NULL), 0);
	ck_assert_uint_eq(back->sessions[0].event_seq, 9);
	ck_assert_uint_eq(back->sessions[1].event_seq, 0);
	ck_assert_ptr_null(strstr(before, "event_seq")); /* written only when not 0 */

	/* A batch numbered 9 again after 9: refused, and st keeps what it had. */
	iod_state_free(st);
	st = base_state();
	iod_state_journal_reset(j, 5);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", two_maps, 2, 9), 0);
	ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_UNMAP, "vm1", unmap_first, 1, 9), 0);
	ck_assert_int_eq(iod_state_journal_apply(j, st, NULL, &reason), -EBADMSG);
	ck_assert_ptr_nonnull(reason);
	ck_assert_ptr_nonnull(strstr(reason, "event sequence 9 after 9"));
	ck_assert_uint_eq(st->sessions[0].event_seq, 0);
	free(json);
	json = to_json(st);
	ck_assert_str_eq(json, before);
}
END_TEST

START_TEST(test_record_size_depends_on_the_event_only)
{
	_cleanup_(iod_state_journal_freep) struct iod_state_journal *j = journal(1 << 20, 5);
	struct iod_mapping e = {.gpa = 0, .length = 0x1000};
	uint64_t size = iod_state_journal_record_size(IOD_SJ_MAP, "vm1", 1);

	for (unsigned i = 0; i < 1000; i++) {
		uint64_t before = iod_state_journal_used(j);

		e.iova = 0x1000000 + (uint64_t)i * 0x1000;
		ck_assert_int_eq(iod_state_journal_append(j, IOD_SJ_MAP, "vm1", &e, 1, 0), 0);
		ck_assert_uint_eq(iod_state_journal_used(j) - before, size);
	}
	ck_assert_uint_eq(size, 32 + 8 + 24);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("state-journal");
	TCase *t = tcase_create("journal");

	tcase_add_test(t, test_records_replay_onto_their_snapshot);
	tcase_add_test(t, test_reopened_memfd_replays_and_refuses_appends_until_reset);
	tcase_add_test(t, test_torn_record_is_never_read);
	tcase_add_test(t, test_journal_older_than_the_snapshot_is_ignored);
	tcase_add_test(t, test_journal_newer_than_the_snapshot_is_stale);
	tcase_add_test(t, test_damaged_record_is_refused_and_changes_nothing);
	tcase_add_test(t, test_map_over_a_mapping_does_not_apply);
	tcase_add_test(t, test_identical_map_again_changes_nothing);
	tcase_add_test(t, test_record_of_an_unknown_session_is_refused);
	tcase_add_test(t, test_replayed_state_is_validated);
	tcase_add_test(t, test_trailing_bytes_and_a_wrong_sequence_are_refused);
	tcase_add_test(t, test_full_journal_refuses_the_append_whole);
	tcase_add_test(t, test_bad_appends_write_nothing);
	tcase_add_test(t, test_open_refuses_what_is_not_a_journal);
	tcase_add_test(t, test_record_size_depends_on_the_event_only);
	tcase_add_test(t, test_event_sequence_replays_and_must_increase);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
