/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirty-migrate's destinations (migrate-dest.h): an image file with its marker, or a stream
 * to a pipe or a socket, and the receiving end of such a stream (--receive).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iod-util.h"
#include "migrate-dest.h"

#define STREAM_MAGIC UINT64_C(0x313047494d444f49) /* "IODMIG01" */
#define STREAM_END UINT64_MAX
/* A socket carries the receiver's answers back: after the header, a hello (REPLY, 0 for a
 * new image, or 1 + the last round the image it kept confirmed), and after each round's sync
 * record (SYNC, round) the same round once the image has it (REPLY, round). */
#define STREAM_SYNC (UINT64_MAX - 1)
#define STREAM_REPLY UINT64_C(0x3130504552444f49) /* "IODREP01" */
#define REPLY_TIMEOUT_MSEC (60 * 1000)

static int write_all(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n > 0) {
		ssize_t l = write(fd, p, n);

		if (l < 0 && errno == EINTR)
			continue;
		if (l < 0)
			return -errno;
		p += l;
		n -= (size_t)l;
	}
	return 0;
}

/* Read n bytes, waiting at most timeout_msec for each part (-1: for ever). */
static int read_timeout(int fd, void *buf, size_t n, int timeout_msec)
{
	uint8_t *p = buf;

	while (n > 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t l;
		int k = poll(&pfd, 1, timeout_msec);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -ETIMEDOUT;
		l = read(fd, p, n);
		if (l < 0 && errno == EINTR)
			continue;
		if (l < 0)
			return -errno;
		if (l == 0)
			return -EPIPE;
		p += l;
		n -= (size_t)l;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t n)
{
	return read_timeout(fd, buf, n, -1);
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
	const uint8_t *p = buf;

	while (n > 0) {
		ssize_t l = pwrite(fd, p, n, (off_t)off);

		if (l < 0 && errno == EINTR)
			continue;
		if (l < 0)
			return -errno;
		p += l;
		n -= (size_t)l;
		off += (uint64_t)l;
	}
	return 0;
}

/* A fast checksum of memory contents (not cryptographic): 4 lanes of multiply-xor. */
uint64_t checksum(const uint8_t *p, uint64_t n)
{
	uint64_t h[4] = {0x243f6a8885a308d3, 0x13198a2e03707344, 0xa4093822299f31d0,
			 0x082efa98ec4e6c89};
	uint64_t i = 0, w;

	for (; i + 32 <= n; i += 32)
		for (int k = 0; k < 4; k++) {
			memcpy(&w, p + i + 8 * k, 8);
			h[k] = (h[k] ^ w) * 0x100000001b3;
		}
	for (; i < n; i++)
		h[0] = (h[0] ^ p[i]) * 0x100000001b3;
	return (h[0] ^ (h[1] >> 1) ^ (h[2] << 3) ^ (h[3] >> 7)) + n;
}

/*
 * The marker beside an image file, IMAGE.iodirty: which round of which session the image
 * holds, confirmed. It is written (a temporary file, synced, renamed, the directory synced)
 * after the image was synced with that round, and removed before anything is written to an
 * image that has no confirmed round of this migration. So an image without it never counts
 * as kept, however large it is: an interrupted first copy is never taken for a whole one.
 * A full round written over an image that holds a confirmed round keeps it valid for that
 * round: every page written since is in the session's log. Session "-" for --receive.
 *     iodirty-migrate image 1
 *     session NAME
 *     confirmed ROUND
 */
static char *marker_path(const char *image)
{
	char *p;

	return asprintf(&p, "%s.iodirty", image) < 0 ? NULL : p;
}

static void sync_dir_of(const char *path)
{
	_cleanup_free_ char *dir = strdup(path);
	char *slash = dir ? strrchr(dir, '/') : NULL;
	int fd;

	if (!dir)
		return;
	if (slash)
		*(slash == dir ? slash + 1 : slash) = 0;
	fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

/* A marker that cannot be written only costs the next resume a full round: a warning. */
static void marker_write(const char *image, const char *session, uint64_t round)
{
	_cleanup_free_ char *path = marker_path(image), *tmp = NULL;
	FILE *f;

	if (!path || asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		goto fail;
	}
	f = fopen(tmp, "we");
	if (!f)
		goto fail;
	fprintf(f, "iodirty-migrate image 1\nsession %s\nconfirmed %" PRIu64 "\n",
		session ? session : "-", round);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0) {
		fclose(f);
		goto fail;
	}
	if (fclose(f) != 0 || rename(tmp, path) < 0)
		goto fail;
	sync_dir_of(path);
	return;
fail:
	fprintf(stderr,
		"iodirty-migrate: cannot record round %" PRIu64 " in %s (%m): a resume to "
		"this image will copy everything\n",
		round, path ? path : image);
	if (tmp)
		(void)unlink(tmp);
}

/* The round a marker says the image holds of session (NULL: whatever session): 0, or
 * -ENOENT when there is no marker or it is not this session's, -EBADMSG when malformed. */
int marker_read(const char *image, const char *session, uint64_t *ret_round)
{
	_cleanup_free_ char *path = marker_path(image);
	char buf[256], again[256], name[80];
	unsigned version;
	uint64_t round;
	size_t n;
	FILE *f;

	if (!path)
		return -ENOMEM;
	f = fopen(path, "re");
	if (!f)
		return -ENOENT;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* exactly the three lines marker_write() writes, nothing else */
	if (sscanf(buf, "iodirty-migrate image %u\nsession %79s\nconfirmed %" SCNu64, &version,
		   name, &round) != 3 ||
	    version != 1 ||
	    snprintf(again, sizeof(again),
		     "iodirty-migrate image 1\nsession %s\nconfirmed %" PRIu64 "\n", name,
		     round) >= (int)sizeof(again) ||
	    strcmp(again, buf) != 0)
		return -EBADMSG;
	if (session && strcmp(name, session) != 0)
		return -ENOENT;
	*ret_round = round;
	return 0;
}

void marker_remove(const char *image)
{
	_cleanup_free_ char *path = marker_path(image);

	if (path && unlink(path) == 0)
		sync_dir_of(path);
}

int dest_write(uint64_t gpa, const void *data, uint64_t length, void *userdata)
{
	struct dest *d = *(struct dest **)userdata; /* struct run starts with it */
	uint64_t rec[2] = {gpa, length};
	int r;

	if (!d->stream)
		return pwrite_all(d->fd, data, length, gpa - d->gpa);
	r = write_all(d->fd, rec, sizeof(rec));
	if (r >= 0)
		r = write_all(d->fd, data, length);
	return r;
}

/*
 * A file destination reads zero where nothing is written: the full copy leaves out the holes
 * of the source. A file that has no data yet does (a new sparse file, a fresh memfd); any
 * other is cleared by punching one hole over it. -1 with errno when that cannot be done (a
 * block device without zeroing discard, a file system without holes).
 */
int dest_clear(struct dest *d, uint64_t size)
{
	off_t o = lseek(d->fd, 0, SEEK_DATA);

	if (o < 0 && errno == ENXIO)
		return 0;
	return fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)size);
}

int stream_begin(struct dest *d, uint64_t size)
{
	uint64_t hdr[3] = {STREAM_MAGIC, d->gpa, size}, hello[2];
	int r;

	r = write_all(d->fd, hdr, sizeof(hdr));
	if (r < 0 || !d->sock)
		return r;
	/* the receiver's hello: whether it kept its image (iodirty-migrate --receive --resume) */
	r = read_timeout(d->fd, hello, sizeof(hello), REPLY_TIMEOUT_MSEC);
	if (r < 0) {
		fprintf(stderr,
			"The receiver did not answer on the socket: %s (a socket destination needs "
			"iodirty-migrate --receive reading that socket, which confirms each round)\n",
			strerror(-r));
		return r;
	}
	if (hello[0] != STREAM_REPLY) {
		fprintf(stderr, "The receiver's hello is not an iodirty-migrate answer.\n");
		return -EBADMSG;
	}
	d->kept = hello[1] != 0;
	d->confirmed = hello[1] - 1;
	return 0;
}

/*
 * The destination has everything written so far (round: the daemon's, 0 the full copy).
 * A file: fdatasync. A socket: the receiver answers the sync record once its image has it.
 * A pipe: nothing comes back, written counts as delivered.
 */
int dest_confirm(uint64_t round, void *userdata)
{
	struct dest *d = *(struct dest **)userdata;
	uint64_t rec[2] = {STREAM_SYNC, round}, reply[2];
	int r;

	if (!d->stream) {
		if (fdatasync(d->fd) < 0)
			return -errno;
		if (d->image)
			marker_write(d->image, d->session, round);
		return 0;
	}
	if (!d->sock)
		return 0;
	r = write_all(d->fd, rec, sizeof(rec));
	if (r >= 0)
		r = read_timeout(d->fd, reply, sizeof(reply), REPLY_TIMEOUT_MSEC);
	if (r >= 0 && (reply[0] != STREAM_REPLY || reply[1] != round))
		r = -EBADMSG;
	return r;
}

int stream_end(struct dest *d, bool with_sum, uint64_t sum, int *ret_verdict)
{
	uint64_t rec[3] = {STREAM_END, with_sum, sum}, reply[2];
	int r;

	*ret_verdict = VERDICT_UNKNOWN;
	r = write_all(d->fd, rec, sizeof(rec));
	if (r < 0 || !d->sock)
		return r;
	r = read_timeout(d->fd, reply, sizeof(reply), REPLY_TIMEOUT_MSEC);
	if (r < 0)
		return r;
	if (reply[0] != STREAM_REPLY || reply[1] > VERDICT_MISMATCH)
		return -EBADMSG;
	*ret_verdict = (int)reply[1];
	return 0;
}

/* Compare a file destination with the source: the number of differing pages. */
int verify_file(struct dest *d, const uint8_t *mem, uint64_t size, uint64_t page, uint64_t *ret_bad,
		uint64_t *ret_first)
{
	uint64_t chunk = UINT64_C(1) << 20, bad = 0, first = UINT64_MAX;
	_cleanup_free_ uint8_t *buf = malloc(chunk);

	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < size; off += chunk) {
		uint64_t n = size - off < chunk ? size - off : chunk;
		ssize_t l = pread(d->fd, buf, n, (off_t)off);

		if (l < 0)
			return -errno;
		if ((uint64_t)l < n)
			memset(buf + l, 0, n - (uint64_t)l);
		if (memcmp(buf, mem + off, n) == 0)
			continue;
		for (uint64_t p = 0; p < n; p += page) {
			uint64_t len = n - p < page ? n - p : page;

			if (memcmp(buf + p, mem + off + p, len) != 0) {
				if (first == UINT64_MAX)
					first = d->gpa + off + p;
				bad++;
			}
		}
	}
	*ret_bad = bad;
	*ret_first = first;
	return 0;
}

/* A socket's answer to the sender (REPLY, value). */
static int reply(int fd, uint64_t value)
{
	uint64_t rec[2] = {STREAM_REPLY, value};

	return write_all(fd, rec, sizeof(rec));
}

/*
 * --receive: a stream into an image file. On a socket it answers: a hello after the header
 * (whether it kept IMAGE: --resume and IMAGE has the memory's size), and each sync record
 * once the image has the round (written and fdatasync'd).
 */
int migrate_receive(const char *image, int fd, bool resume, uint64_t die_after_rounds)
{
	int in = fd >= 0 ? fd : STDIN_FILENO, out;
	uint64_t hdr[3], rec[2], sum, records = 0, bytes = 0, confirmed = 0, base, size;
	_cleanup_free_ uint8_t *buf = NULL;
	size_t buf_size = 0;
	uint64_t kept_round = 0;
	bool sock, kept = false;
	struct stat st;
	uint8_t *img;
	int r, verdict;

	if (fstat(in, &st) < 0) {
		fprintf(stderr, "Cannot read the stream: %m\n");
		return EXIT_FAILURE;
	}
	sock = S_ISSOCK(st.st_mode);
	r = read_all(in, hdr, sizeof(hdr));
	if (r < 0 || hdr[0] != STREAM_MAGIC) {
		fprintf(stderr, "Not an iodirty-migrate stream.\n");
		return EXIT_FAILURE;
	}
	base = hdr[1];
	size = hdr[2];
	/*
	 * Kept only with --resume, on a socket (a sender on a pipe cannot learn it and sends a
	 * full round), for an image of this size whose marker says which round it confirmed.
	 * Otherwise anew: the sender leaves out what its memory never populated, which must
	 * read zero, and the marker goes before the first byte is written.
	 */
	if (resume && !sock)
		fprintf(stderr, "receive: a pipe cannot tell the sender what the image holds: "
				"a new image\n");
	if (resume && sock && stat(image, &st) >= 0 && st.st_size != 0) {
		if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
			fprintf(stderr,
				"%s is not an image of this memory (%" PRIu64
				" bytes): not resuming into it.\n",
				image, size);
			return EXIT_FAILURE;
		}
		kept = marker_read(image, NULL, &kept_round) == 0;
	}
	if (!kept)
		marker_remove(image);
	out = open(image, O_RDWR | O_CREAT | O_CLOEXEC | (kept ? 0 : O_TRUNC), 0600);
	if (out < 0 || ftruncate(out, (off_t)size) < 0) {
		fprintf(stderr, "Cannot create %s: %m\n", image);
		return EXIT_FAILURE;
	}
	if (resume && sock && kept)
		fprintf(stderr,
			"receive: resuming into the kept image (round %" PRIu64 " confirmed)\n",
			kept_round);
	else if (resume && sock)
		fprintf(stderr, "receive: no confirmed image to resume into: a new one\n");
	if (sock && reply(in, kept ? kept_round + 1 : 0) < 0) {
		fprintf(stderr, "Cannot answer the sender: %m\n");
		return EXIT_FAILURE;
	}
	for (;;) {
		r = read_all(in, rec, sizeof(rec));
		if (r < 0) {
			fprintf(stderr, "The stream ended early: %s\n", strerror(-r));
			return EXIT_FAILURE;
		}
		if (confirmed == die_after_rounds) {
			fprintf(stderr, "receive: test: dying after %" PRIu64 " confirmed rounds\n",
				confirmed);
			_exit(9);
		}
		if (rec[0] == STREAM_END)
			break;
		if (rec[0] == STREAM_SYNC) {
			if (!sock) {
				fprintf(stderr,
					"A sync record on a stream that is not a socket.\n");
				return EXIT_FAILURE;
			}
			if (fdatasync(out) < 0) {
				fprintf(stderr, "Confirming round %" PRIu64 " failed: %m\n",
					rec[1]);
				return EXIT_FAILURE;
			}
			marker_write(image, NULL, rec[1]);
			if (reply(in, rec[1]) < 0) {
				fprintf(stderr, "Confirming round %" PRIu64 " failed: %m\n",
					rec[1]);
				return EXIT_FAILURE;
			}
			confirmed++;
			continue;
		}
		if (rec[0] < base || rec[1] > size || rec[0] - base > size - rec[1]) {
			fprintf(stderr,
				"A record at 0x%" PRIx64 " (+0x%" PRIx64
				") is outside the memory.\n",
				rec[0], rec[1]);
			return EXIT_FAILURE;
		}
		if (rec[1] > buf_size) {
			free(buf);
			buf_size = rec[1];
			buf = malloc(buf_size);
			if (!buf)
				return EXIT_FAILURE;
		}
		r = read_all(in, buf, rec[1]);
		if (r >= 0)
			r = pwrite_all(out, buf, rec[1], rec[0] - base);
		if (r < 0) {
			fprintf(stderr, "Receiving failed: %s\n", strerror(-r));
			return EXIT_FAILURE;
		}
		records++;
		bytes += rec[1];
	}
	/* the end record: STREAM_END, whether a checksum follows, the checksum */
	r = read_all(in, &sum, sizeof(sum));
	if (r < 0) {
		fprintf(stderr, "The stream ended early: %s\n", strerror(-r));
		return EXIT_FAILURE;
	}
	printf("received %" PRIu64 " records, %" PRIu64 " bytes into %s", records, bytes, image);
	if (sock)
		printf(", %" PRIu64 " rounds confirmed", confirmed);
	printf("\n");
	verdict = VERDICT_NONE;
	if (rec[1]) {
		img = mmap(NULL, size, PROT_READ, MAP_SHARED, out, 0);
		if (img == MAP_FAILED) {
			fprintf(stderr, "Cannot map %s: %m\n", image);
			return EXIT_FAILURE;
		}
		verdict = checksum(img, size) == sum ? VERDICT_EQUAL : VERDICT_MISMATCH;
		munmap(img, size);
	}
	/* on a socket the sender learns it too, and exits as this does */
	if (sock && (fdatasync(out) < 0 || reply(in, (uint64_t)verdict) < 0))
		fprintf(stderr, "Cannot answer the end of the stream, ignoring: %m\n");
	if (verdict == VERDICT_MISMATCH) {
		printf("verification: MISMATCH (the image differs from the source's checksum)\n");
		return EXIT_MISMATCH;
	}
	if (verdict == VERDICT_EQUAL)
		printf("verification: the image equals the source (checksum %016" PRIx64 ")\n",
		       sum);
	return EXIT_SUCCESS;
}
