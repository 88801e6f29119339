/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's persistent state as JSON (json-c): every session with its kernel object ids,
 * devices, guest memory regions and IOVA->GPA mappings. The daemon keeps this document in a
 * memfd in systemd's fd store, next to the fds it names, and rebuilds its sessions from it
 * after a restart. The schema is proto/iodirty-state.schema.json.
 *
 * Parsing is strict: malformed JSON (iod_json_parse()), unknown keys, wrong types,
 * out-of-range numbers, duplicate names or ids, overlapping regions or mappings, unaligned
 * addresses, references to unknown objects and a generation without a successor are all
 * rejected with a reason. Every key is required but the root's "restarts", a session's
 * "disconnect_policy", "event_seq" and "pending_round", and a
 * hwpt's "parent_id", which version 1 documents written before they were added lack (a
 * hwpt without "parent_id" is not nested). A session with the flag "nested" has a nest
 * parent first in "hwpts", dirty capable, and nothing else but nested hwpts whose
 * "parent_id" is that parent; it has no "viommu" flag, and only a nested session's hwpts
 * have a "parent_id".
 */
#ifndef IOD_STATE_H
#define IOD_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iod-iova-map.h"

#define IOD_STATE_VERSION 1
#define IOD_NAME_MAX 64 /* session names: [A-Za-z0-9_-], 1..64 characters */

enum iod_session_mode {
	IOD_MODE_OWNER, /* the daemon opened /dev/iommu and owns every object */
	IOD_MODE_ADOPT, /* the client's iommufd and objects; the daemon only tracks */
};

/*
 * What happens to a session when its owner leaves the bus (the session option
 * "disconnect_policy"). UNSET: the document does not say, because it was written by a
 * daemon that did not record the policy; the daemon that restores it applies its own
 * default policy, as that older daemon did. The key is absent from the JSON then.
 */
enum iod_state_disconnect_policy {
	IOD_STATE_DISCONNECT_UNSET,
	IOD_STATE_DISCONNECT_DESTROY, /* "destroy": destroyed with its owner */
	IOD_STATE_DISCONNECT_KEEP, /* "keep": kept, orphaned, until its uid claims it */
};

/* Session flags */
#define IOD_SESSION_F_TRACKING (UINT64_C(1) << 0) /* tracking started */
#define IOD_SESSION_F_FAILED (UINT64_C(1) << 1) /* the log is incomplete */
#define IOD_SESSION_F_HUGE_PAGES (UINT64_C(1) << 2) /* IOAS keeps huge IOPTEs */
#define IOD_SESSION_F_VIOMMU (UINT64_C(1) << 3) /* IOVA != GPA, map from vIOMMU events */
/* Harvests read a nest parent, indexed by GPA (hwpts: the parent, then its children). */
#define IOD_SESSION_F_NESTED (UINT64_C(1) << 4)
#define IOD_SESSION_F_ALL (UINT64_C(0x1f))

struct iod_state_hwpt {
	uint32_t id;
	bool dirty_capable;
	bool tracking;
	bool owned; /* allocated by the daemon (destroyed with the session) */
	uint32_t parent_id; /* a nested HWPT: its nest parent, a hwpt of the session; else 0 */
};

struct iod_state_device {
	uint32_t index; /* object path .../device/<index> */
	char *name; /* PCI address, cdev path or "fd" */
	char *fdname; /* fd-store name of the device fd; NULL in adopt mode */
	uint32_t dev_id; /* iommufd device id; 0 when unknown (adopt) */
	uint32_t hwpt_id; /* 0 only for an emulated device */
	bool dirty_capable;
	bool emulated; /* no IOMMU of its own: attached to the IOAS, on no HWPT */
	bool device_log; /* its dirty pages come from its own DMA log */
};

struct iod_state_region {
	uint64_t gpa;
	uint64_t length;
	uint64_t offset; /* into the memfd */
	char *fdname; /* fd-store name of the guest memory memfd; NULL in adopt mode */
};

struct iod_state_session {
	char *name;
	uint32_t uid;
	char *owner; /* unique bus name of the creator at the time (may be gone) */
	enum iod_session_mode mode;
	enum iod_state_disconnect_policy disconnect_policy;
	uint32_t ioas_id;
	unsigned page_shift; /* log page size */
	uint64_t flags; /* IOD_SESSION_F_* */
	uint64_t rounds;
	/* The round the client holds and has not acknowledged: rounds, or 0 when none is (or
	 * the document is older than the key: the round plane of the log may then tell). */
	uint64_t pending_round;
	uint64_t event_seq; /* the event channel's last applied batch (0: none) */
	char *iommufd_fdname;
	char *log_fdname;
	struct iod_state_hwpt *hwpts;
	size_t n_hwpts;
	struct iod_state_device *devices;
	size_t n_devices;
	struct iod_state_region *regions;
	size_t n_regions;
	struct iod_mapping *mappings;
	size_t n_mappings;
};

struct iod_state {
	uint64_t generation; /* bumped on every save; at most UINT64_MAX - 1 */
	/* How many times an instance took this state over from the one before (optional key,
	 * written when not 0). */
	uint64_t restarts;
	struct iod_state_session *sessions;
	size_t n_sessions;
};

struct iod_state *iod_state_free(struct iod_state *st);
/* Free the members of one session (not the struct itself). */
void iod_state_session_clear(struct iod_state_session *s);

bool iod_session_name_valid(const char *name);

/* Serialise to a JSON string (malloc'ed). -EINVAL if st itself is inconsistent. */
int iod_state_to_json(const struct iod_state *st, char **ret_json);
/*
 * Parse and validate. On -EBADMSG (malformed or inconsistent) or -EPROTO (unknown version),
 * *ret_reason (may be NULL) gets a malloc'ed sentence saying what is wrong and where.
 */
int iod_state_from_json(const char *json, struct iod_state **ret, char **ret_reason);
/*
 * The same for text[0..len) as it was read (iod_json_parse()): a NUL byte in it, and so
 * anything after one, is an error. iod_state_from_json() is this with strlen(json).
 */
int iod_state_from_json_len(const char *text, size_t len, struct iod_state **ret,
			    char **ret_reason);

/*
 * Check a state in memory with the same rules as the parser. Returns 0, or -EINVAL with
 * *ret_reason (may be NULL) set to a malloc'ed sentence naming the offending field.
 */
int iod_state_validate(const struct iod_state *st, char **ret_reason);

#endif
