/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"

void iod_context_init(struct iod_context *c, struct iod_config *config)
{
	*c = (struct iod_context){
		.config = *config,
		.holes = IOD_HOLES_UNKNOWN,
	};
	config->iommufd_path = config->sysfs_root = NULL;
}

void iod_context_clear(struct iod_context *c)
{
	free(c->sessions);
	c->sessions = NULL;
	c->n_sessions = 0;
	c->bus = NULL;
	iod_config_clear(&c->config);
}

int iod_context_add_session(struct iod_context *c, struct iod_session *s)
{
	struct iod_session **p = reallocarray(c->sessions, c->n_sessions + 1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	c->sessions = p;
	c->sessions[c->n_sessions++] = s;
	return 0;
}

void iod_context_remove_session(struct iod_context *c, struct iod_session *s)
{
	for (size_t i = 0; i < c->n_sessions; i++)
		if (c->sessions[i] == s) {
			memmove(&c->sessions[i], &c->sessions[i + 1],
				(c->n_sessions - i - 1) * sizeof(*c->sessions));
			c->n_sessions--;
			return;
		}
}
