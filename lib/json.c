/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Strict JSON (iod-json.h). Four steps, each with its own reasons:
 *
 *   1. the bytes: not empty, no NUL byte (json-c would stop there as if the text ended);
 *   2. json-c's strict tokener, told to stop after the first value
 *      (JSON_TOKENER_ALLOW_TRAILING_CHARS) so that we see where it ended; its errors are
 *      named when they are the usual suspects (a trailing comma, a comment, a single
 *      quote), else reported with json-c's description and the offset;
 *   3. nothing but white space after that value;
 *   4. a lexical pass over the same bytes for what json-c's strict mode still accepts:
 *      duplicate keys (it keeps the last value silently), keys with \u0000 (it cuts them
 *      there), single-quoted keys, NaN and Infinity, leading zeros, raw control characters
 *      in strings, integers beyond 64 bits (it clamps them).
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "iod-json.h"
#include "iod-util.h"

#define DEPTH_MAX 1024 /* more than anything we read needs, and below json-c's int */

/* Record the reason the text is rejected; -EBADMSG, or -ENOMEM without a reason. */
_printf_(2, 3) static int fail(char **reason, const char *format, ...)
{
	va_list ap;
	int r;

	if (*reason)
		return -EBADMSG;
	va_start(ap, format);
	r = vasprintf(reason, format, ap);
	va_end(ap);
	if (r < 0) {
		*reason = NULL;
		return -ENOMEM;
	}
	return -EBADMSG;
}

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

static bool is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static bool is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

static bool is_letter(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static size_t skip_space(const char *s, size_t len, size_t i)
{
	while (i < len && is_space(s[i]))
		i++;
	return i;
}

/* ---------------------------------------------------------------------------------------- */
/* json-c */

static void tokener_freep(struct json_tokener **tok)
{
	if (*tok)
		json_tokener_free(*tok);
}

static void json_putp(struct json_object **o)
{
	json_object_put(*o);
}

/* The first single quote outside a string in s[0..end), which json-c has tokenized (its
 * strict mode takes single-quoted keys, not values); end if there is none. */
static size_t first_single_quote(const char *s, size_t end)
{
	bool in_string = false;

	for (size_t i = 0; i < end; i++) {
		if (in_string && s[i] == '\\')
			i++;
		else if (s[i] == '"')
			in_string = !in_string;
		else if (!in_string && s[i] == '\'')
			return i;
	}
	return end;
}

/* json-c stopped with error e at offset at: name the problem when it is a common one. */
static int syntax_error(const char *s, size_t len, size_t at, enum json_tokener_error e,
			char **reason)
{
	if (at < len) {
		char ch = s[at];
		size_t p = at;

		if (ch == '\'')
			return fail(reason, "malformed JSON: single-quoted string at offset %zu",
				    first_single_quote(s, at));
		if (ch == '#' ||
		    (ch == '/' && at + 1 < len && (s[at + 1] == '/' || s[at + 1] == '*')))
			return fail(reason,
				    "malformed JSON: comment at offset %zu (JSON has no comments)",
				    at);
		if (ch == '}' || ch == ']') {
			while (p > 0 && is_space(s[p - 1]))
				p--;
			if (p > 0 && s[p - 1] == ',')
				return fail(reason, "malformed JSON: trailing comma at offset %zu",
					    p - 1);
		}
		if (at == 0 && len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
			return fail(reason, "malformed JSON: byte order mark at offset 0");
	}
	return fail(reason, "malformed JSON at offset %zu: %s", at, json_tokener_error_desc(e));
}

/* Steps 2 and 3: one value, then only white space. *ret is NULL for "null". */
static int tokenize(const char *s, size_t len, unsigned max_depth, struct json_object **ret,
		    char **reason)
{
	_cleanup_(tokener_freep) struct json_tokener *tok = NULL;
	_cleanup_(json_putp) struct json_object *o = NULL;
	enum json_tokener_error e;
	size_t end;

	tok = json_tokener_new_ex((int)max_depth);
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
					    JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, s, (int)len);
	e = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (e == json_tokener_continue) {
		/* Inside a value, or after a number or literal, which only the end of the
		 * input completes: say it has ended, the way json-c takes it, with a NUL. */
		o = json_tokener_parse_ex(tok, "", 1);
		if (json_tokener_get_error(tok) != json_tokener_success)
			return fail(
				reason,
				"malformed JSON: the document ends before the value is complete");
		end = len;
	} else if (e != json_tokener_success) {
		return syntax_error(s, len, end, e, reason);
	}

	end = skip_space(s, len, end);
	if (end < len)
		return fail(reason,
			    "malformed JSON: trailing data after the JSON value at offset %zu",
			    end);
	*ret = TAKE_PTR(o);
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Step 4, the lexical pass. Runs on text json-c has parsed, so strings are terminated and
 * brackets balance; it checks anyway. */

struct lex_key {
	size_t off, len; /* of the token, quotes included */
	bool escaped;
};

struct lex_frame {
	bool object;
	bool expect_key;
	size_t n_keys, n_alloc;
	struct lex_key *keys;
};

struct lexer {
	const char *s;
	size_t len;
	unsigned max_keys;
	char *reason;
};

/* Decode a string token with json-c; *ret is malloc'ed, *ret_len its length. */
static int decode_string_token(const char *s, const struct lex_key *k, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *tok = strndup(s + k->off, k->len);
	struct json_object *o;
	char *copy;
	size_t len;

	if (!tok)
		return -ENOMEM;
	o = json_tokener_parse(tok);
	if (!o || !json_object_is_type(o, json_type_string)) {
		json_object_put(o);
		return -ENOMEM; /* the tokener had already accepted this token */
	}
	len = json_object_get_string_len(o);
	copy = malloc(len + 1);
	if (copy)
		memcpy(copy, json_object_get_string(o), len + 1);
	json_object_put(o);
	if (!copy)
		return -ENOMEM;
	*ret = copy;
	*ret_len = len;
	return 0;
}

static int keys_equal(const char *s, const struct lex_key *a, const struct lex_key *b)
{
	_cleanup_free_ char *da = NULL, *db = NULL;
	size_t la, lb;
	int r;

	if (!a->escaped && !b->escaped)
		return a->len == b->len && memcmp(s + a->off, s + b->off, a->len) == 0;
	r = decode_string_token(s, a, &da, &la);
	if (r < 0)
		return r;
	r = decode_string_token(s, b, &db, &lb);
	if (r < 0)
		return r;
	return la == lb && memcmp(da, db, la) == 0;
}

/* Check a number token against JSON's grammar and 64-bit range; *i is left on its end. */
static int lex_number(struct lexer *l, size_t *i)
{
	const char *s = l->s;
	size_t len = l->len, start = *i, p = *i, int_start, n_digits;
	bool negative = false, integer = true;

	if (s[p] == '-') {
		negative = true;
		p++;
	}
	int_start = p;
	if (p < len && s[p] == '0')
		p++;
	else if (p < len && s[p] >= '1' && s[p] <= '9')
		while (p < len && is_digit(s[p]))
			p++;
	else
		return fail(&l->reason, "malformed number at offset %zu", start);
	n_digits = p - int_start;
	if (p < len && s[p] == '.') {
		integer = false;
		p++;
		if (p >= len || !is_digit(s[p]))
			return fail(&l->reason, "malformed number at offset %zu", start);
		while (p < len && is_digit(s[p]))
			p++;
	}
	if (p < len && (s[p] == 'e' || s[p] == 'E')) {
		integer = false;
		p++;
		if (p < len && (s[p] == '+' || s[p] == '-'))
			p++;
		if (p >= len || !is_digit(s[p]))
			return fail(&l->reason, "malformed number at offset %zu", start);
		while (p < len && is_digit(s[p]))
			p++;
	}
	if (p < len && is_digit(s[p]))
		return fail(&l->reason, "malformed number at offset %zu (leading zero)", start);

	if (integer) {
		/* json-c clamps integers beyond 64 bits; refuse them instead */
		const char *limit = negative ? "9223372036854775808" : "18446744073709551615";
		size_t limit_len = strlen(limit);

		if (n_digits > limit_len ||
		    (n_digits == limit_len && memcmp(s + int_start, limit, limit_len) > 0))
			return fail(&l->reason, "number at offset %zu is out of the 64-bit range",
				    start);
	}
	*i = p - 1;
	return 0;
}

static int frame_add_key(struct lexer *l, struct lex_frame *top, const struct lex_key *k)
{
	if (top->n_keys >= l->max_keys)
		return fail(
			&l->reason,
			"malformed JSON: too many keys in one object (more than %u) at offset %zu",
			l->max_keys, k->off);
	if (top->n_keys >= top->n_alloc) {
		size_t n = top->n_alloc ? top->n_alloc * 2 : 16;
		struct lex_key *p;

		if (n > l->max_keys)
			n = l->max_keys;
		p = reallocarray(top->keys, n, sizeof(*p));
		if (!p)
			return -ENOMEM;
		top->keys = p;
		top->n_alloc = n;
	}
	top->keys[top->n_keys++] = *k;
	return 0;
}

/* A string token starting at *i; a key when the innermost object expects one. */
static int lex_string(struct lexer *l, size_t *i, struct lex_frame *top)
{
	const char *s = l->s;
	struct lex_key k = {.off = *i};
	size_t p = *i + 1;
	char buf[68];
	int r;

	for (; p < l->len && s[p] != '"'; p++) {
		if ((unsigned char)s[p] < 0x20)
			return fail(
				&l->reason,
				"malformed JSON: raw control character in a string at offset %zu",
				p);
		if (s[p] == '\\') {
			k.escaped = true;
			p++;
		}
	}
	if (p >= l->len)
		return fail(&l->reason, "malformed JSON: unterminated string at offset %zu", *i);
	k.len = p + 1 - k.off;
	*i = p;

	if (!top || !top->object || !top->expect_key)
		return 0;
	top->expect_key = false;
	if (k.escaped) {
		/* json-c cuts keys at a NUL, which would make "a\u0000" a silent duplicate */
		_cleanup_free_ char *key = NULL;
		size_t key_len;

		r = decode_string_token(s, &k, &key, &key_len);
		if (r < 0)
			return r;
		if (memchr(key, 0, key_len))
			return fail(&l->reason, "key at offset %zu contains a NUL character",
				    k.off);
	}
	for (size_t j = 0; j < top->n_keys; j++) {
		r = keys_equal(s, &top->keys[j], &k);
		if (r < 0)
			return r;
		if (r > 0)
			return fail(&l->reason, "duplicate key \"%s\" at offset %zu",
				    printable(s + k.off + 1, k.len - 2, buf), k.off);
	}
	return frame_add_key(l, top, &k);
}

/* A bare word at *i: only true, false and null are JSON. */
static int lex_word(struct lexer *l, size_t *i)
{
	const char *s = l->s;
	size_t p = *i, n;
	char buf[68];

	while (p < l->len && is_letter(s[p]))
		p++;
	n = p - *i;
	if (!((n == 4 && memcmp(s + *i, "true", 4) == 0) ||
	      (n == 5 && memcmp(s + *i, "false", 5) == 0) ||
	      (n == 4 && memcmp(s + *i, "null", 4) == 0)))
		return fail(&l->reason, "malformed JSON: %s at offset %zu is not a JSON value",
			    printable(s + *i, n, buf), *i);
	*i = p - 1;
	return 0;
}

static int lex_walk(struct lexer *l, struct lex_frame *stack, size_t n_frames)
{
	const char *s = l->s;
	size_t depth = 0;
	int r = 0;

	for (size_t i = 0; i < l->len && r >= 0; i++) {
		struct lex_frame *top = depth ? &stack[depth - 1] : NULL;
		char ch = s[i];

		switch (ch) {
		case ' ':
		case '\t':
		case '\n':
		case '\r':
		case ':':
			break;
		case '"':
			r = lex_string(l, &i, top);
			break;
		case '{':
		case '[':
			if (depth >= n_frames)
				return fail(&l->reason,
					    "malformed JSON: nested too deeply at offset %zu", i);
			stack[depth].object = ch == '{';
			stack[depth].expect_key = true;
			stack[depth].n_keys = 0;
			depth++;
			break;
		case '}':
		case ']':
			if (depth == 0)
				return fail(&l->reason,
					    "malformed JSON: unbalanced '%c' at offset %zu", ch, i);
			depth--;
			break;
		case ',':
			if (top && top->object)
				top->expect_key = true;
			break;
		case '\'':
			return fail(&l->reason,
				    "malformed JSON: single-quoted string at offset %zu", i);
		default:
			if (ch == '-' || is_digit(ch))
				r = lex_number(l, &i);
			else if (is_letter(ch))
				r = lex_word(l, &i);
			else
				return fail(&l->reason,
					    "malformed JSON: unexpected character at offset %zu",
					    i);
		}
	}
	return r;
}

static int lex_check(const char *s, size_t len, unsigned max_depth, unsigned max_keys,
		     char **reason)
{
	struct lexer l = {.s = s, .len = len, .max_keys = max_keys};
	size_t n_frames = (size_t)max_depth + 1;
	struct lex_frame *stack;
	int r;

	stack = calloc(n_frames, sizeof(*stack));
	if (!stack)
		return -ENOMEM;
	r = lex_walk(&l, stack, n_frames);
	for (size_t k = 0; k < n_frames; k++)
		free(stack[k].keys);
	free(stack);
	if (r == -EBADMSG)
		*reason = TAKE_PTR(l.reason);
	free(l.reason);
	return r;
}

/* ---------------------------------------------------------------------------------------- */

int iod_json_parse(const char *text, size_t len, unsigned max_depth, unsigned max_keys,
		   struct json_object **ret, char **ret_reason)
{
	_cleanup_(json_putp) struct json_object *o = NULL;
	_cleanup_free_ char *reason = NULL;
	const char *nul;
	int r;

	if (!text || !ret || max_depth == 0 || max_depth > DEPTH_MAX || max_keys == 0)
		return -EINVAL;

	if (skip_space(text, len, 0) == len)
		r = fail(&reason, "malformed JSON: the document is empty%s",
			 len ? " (only white space)" : "");
	else if (len > INT_MAX)
		r = fail(&reason, "malformed JSON: the document is too large (%zu bytes)", len);
	else if ((nul = memchr(text, 0, len)))
		r = fail(&reason, "malformed JSON: NUL byte at offset %zu", (size_t)(nul - text));
	else {
		r = tokenize(text, len, max_depth, &o, &reason);
		if (r >= 0)
			r = lex_check(text, len, max_depth, max_keys, &reason);
	}
	if (r < 0) {
		if (r == -EBADMSG && ret_reason)
			*ret_reason = TAKE_PTR(reason);
		return r;
	}
	*ret = TAKE_PTR(o);
	return 0;
}
