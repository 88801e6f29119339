/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyd's configuration: a JSON file (iodirtyd.conf(5)) with command-line overrides.
 */
#ifndef IOD_CONFIG_H
#define IOD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "limit.h"

#define IOD_CONFIG_FILE "/etc/iodirty/iodirtyd.conf"

enum iod_disconnect_policy {
	IOD_DISCONNECT_DESTROY, /* the owner's sessions are destroyed when it leaves the bus */
	IOD_DISCONNECT_KEEP, /* they stay, orphaned, until their uid claims or destroys them */
	_IOD_DISCONNECT_MAX,
};

struct iod_config {
	int log_level;
	enum iod_disconnect_policy disconnect_policy;
	uint64_t page_size; /* default log page size of new sessions */
	bool huge_pages; /* default of the session option "huge_pages" */
	char *iommufd_path; /* NULL: /dev/iommu */
	char *sysfs_root; /* NULL: /sys */
	struct iod_limits limits;
};

void iod_config_init(struct iod_config *c);
void iod_config_clear(struct iod_config *c);

/*
 * Read a configuration file over c. -ENOENT if it does not exist; on -EINVAL (bad JSON,
 * unknown key, wrong type, value out of range) *ret_reason gets a malloc'ed explanation.
 * c may be partly changed on error.
 */
int iod_config_load(struct iod_config *c, const char *path, char **ret_reason);

/* Set one limit by its configuration name ("sessions", "devices", ...; limit.h) from a
 * string. */
int iod_config_set_limit(struct iod_config *c, const char *name, const char *value,
			 char **ret_reason);

const char *iod_disconnect_policy_to_string(enum iod_disconnect_policy p);
int iod_disconnect_policy_from_string(const char *s);

/* true if v is a valid log page size: a power of two from 4 KiB to 1 GiB. */
bool iod_page_size_valid(uint64_t v);

#endif
