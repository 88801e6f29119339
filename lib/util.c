/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Small helpers of iod-util.h that are not inline. */
#include <stdio.h>
#include <string.h>

#include "iod-util.h"

const char *iod_quote(const char *s, char buf[static IOD_QUOTE_MAX])
{
	size_t o = 0, i = 0, len;

	if (!s)
		s = "";
	len = strlen(s);
	for (; s[i] && i < IOD_QUOTE_CHARS; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			o += (size_t)snprintf(buf + o, IOD_QUOTE_MAX - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	if (i < len)
		snprintf(buf + o, IOD_QUOTE_MAX - o, "...(%zu bytes)", len);
	else
		buf[o] = '\0';
	return buf;
}
