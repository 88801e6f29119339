/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where iodirty-migrate copies guest memory to (migrate-dest.c): an image file (the byte at
 * GPA g at offset g - gpa) with a marker beside it saying which round of which session it
 * holds, confirmed; or a stream (header, records, sync records, end record) to a pipe or a
 * socket, on which a receiver (migrate_receive()) answers. iodirty-migrate(1) describes both.
 */
#ifndef IOD_MIGRATE_DEST_H
#define IOD_MIGRATE_DEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses of iodirty-migrate (iodirty-migrate(1), EXIT STATUS). */
#define EXIT_USAGE 2
#define EXIT_MISMATCH 3
#define EXIT_DAEMON_LOST 4
#define EXIT_DEVICE_LOST 5
#define EXIT_SESSION_FAILED 6
#define EXIT_DEST_FAILED 7

struct dest {
	int fd;
	bool stream;
	bool sock; /* a stream on a socket: the receiver confirms rounds */
	bool kept; /* --resume: the destination kept its memory from the earlier run */
	uint64_t confirmed; /* ... and the last round it confirmed (its marker) */
	const char *image; /* a regular file by path: its marker is IMAGE.iodirty */
	uint64_t gpa; /* of the first byte of the image */
	const char *session; /* the session, for the image's marker */
};

/* The receiver's answer to the end record on a socket: what its checksum check found. */
enum { VERDICT_UNKNOWN = -1, VERDICT_NONE, VERDICT_EQUAL, VERDICT_MISMATCH };

/* The hooks of struct iod_migrate_ops, with userdata pointing at a struct dest pointer. */
int dest_write(uint64_t gpa, const void *data, uint64_t length, void *userdata);
int dest_confirm(uint64_t round, void *userdata);
/* A file destination reads zero where nothing is written: -1 with errno when it cannot. */
int dest_clear(struct dest *d, uint64_t size);
/* A stream: the header (and on a socket the receiver's hello), the end record. */
int stream_begin(struct dest *d, uint64_t size);
int stream_end(struct dest *d, bool with_sum, uint64_t sum, int *ret_verdict);
/* A file destination against the source: its differing pages, the first of them. */
int verify_file(struct dest *d, const uint8_t *mem, uint64_t size, uint64_t page, uint64_t *ret_bad,
		uint64_t *ret_first);
/* The checksum of n bytes that a stream's end record carries. */
uint64_t checksum(const uint8_t *p, uint64_t n);
/* The marker beside an image: the round of session (NULL: any) it holds; -ENOENT without. */
int marker_read(const char *image, const char *session, uint64_t *ret_round);
void marker_remove(const char *image);
/* --receive=IMAGE: a stream from fd (-1: stdin) into IMAGE; an exit status. With resume a
 * marked image of the right size is kept; die_after_rounds (test only, UINT64_MAX: never). */
int migrate_receive(const char *image, int fd, bool resume, uint64_t die_after_rounds);

#endif
