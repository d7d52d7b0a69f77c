/*
 * Helpers shared by the ftpparse sources; not part of the contract.
 *
 * Character classes are plain ASCII comparisons so that nothing depends on
 * the C locale. Numbers are read digit by digit and saturate just above the
 * caller's limit, so a run of a million digits costs a million comparisons
 * and never overflows. Output goes through a bounded writer that refuses to
 * write past its capacity and remembers that it ran out.
 */
#ifndef FP_INTERNAL_H
#define FP_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ftpparse.h"

static inline bool fp_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static inline bool fp_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool fp_is_xdigit(unsigned char c)
{
	return fp_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static inline char fp_to_upper(unsigned char c)
{
	return (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
}

/* A byte that has no business in a number field at all, as opposed to a
 * printable character in the wrong place. */
static inline bool fp_is_foreign(unsigned char c)
{
	return c == 0 || c >= 0x80;
}

/* What to report when a digit was expected at p[i] and did not come. */
static inline int fp_err_at(const char *p, size_t n, size_t i)
{
	if (i < n && fp_is_foreign((unsigned char)p[i]))
		return FP_E_CHARSET;
	return FP_E_SYNTAX;
}

/* Read decimal digits at p[*pos..n). Returns how many digits were read (0:
 * none there). *val is the number, or max + 1 when it is larger than max:
 * once past the limit the digits are still consumed but no longer added. */
static inline size_t fp_read_dec(const char *p, size_t n, size_t *pos,
				 uint32_t max, uint32_t *val)
{
	size_t i = *pos;
	uint32_t v = 0;

	while (i < n && fp_is_digit((unsigned char)p[i])) {
		if (v <= max)
			v = v * 10 + (uint32_t)(p[i] - '0');
		if (v > max)
			v = max + 1;
		i++;
	}
	*val = v;
	size_t digits = i - *pos;
	*pos = i;
	return digits;
}

static inline size_t fp_skip_spaces(const char *p, size_t n, size_t i)
{
	while (i < n && p[i] == ' ')
		i++;
	return i;
}

/* A reply code at the start of text: three digits, 1-5, 0-5, 0-9. */
static inline bool fp_reply_code(const char *text, size_t len, int *code)
{
	if (len < 3)
		return false;
	unsigned char a = (unsigned char)text[0];
	unsigned char b = (unsigned char)text[1];
	unsigned char c = (unsigned char)text[2];
	if (a < '1' || a > '5' || b < '0' || b > '5' || !fp_is_digit(c))
		return false;
	*code = (a - '0') * 100 + (b - '0') * 10 + (c - '0');
	return true;
}

/* Six numbers "h1,h2,h3,h4,p1,p2" at p[*pos..n), spaces allowed around the
 * commas. The shape is checked first (FP_E_SYNTAX, or FP_E_CHARSET for a NUL
 * or non-ASCII byte where a digit belongs), then the ranges (FP_E_RANGE).
 * *pos ends just after the last digit. Implemented in passive.c. */
int fp_read_tuple(const char *p, size_t n, size_t *pos, fp_hostport *out);

/* A bounded writer: once something does not fit, nothing more is written
 * and the result is FP_E_NOSPACE. */
struct fp_out {
	char *buf;
	size_t cap;
	size_t len;
	bool full;
};

static inline void fp_out_bytes(struct fp_out *o, const char *s, size_t n)
{
	if (o->full || n > o->cap - o->len) {
		o->full = true;
		return;
	}
	if (n == 0)
		return;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static inline void fp_out_str(struct fp_out *o, const char *s)
{
	fp_out_bytes(o, s, strlen(s));
}

static inline void fp_out_uint(struct fp_out *o, uint32_t v)
{
	char tmp[10];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	fp_out_bytes(o, tmp + i, sizeof(tmp) - i);
}

static inline int fp_out_result(const struct fp_out *o)
{
	if (o->full || o->len > INT_MAX)
		return FP_E_NOSPACE;
	return (int)o->len;
}

#endif
