/*
 * Passive-mode replies: reading 227/229 from a server and writing the ones
 * the proxy sends instead.
 *
 * 227 follows RFC 1123 4.1.2.6: the wording around the six numbers varies
 * between servers, so skip the reply code, scan to the first digit, and
 * read "h1,h2,h3,h4,p1,p2" from there whatever surrounds it. Shape is
 * checked before ranges, and every field is range-checked: a byte above
 * 255 or port 0 is refused rather than wrapped. 229 follows RFC 2428: the
 * delimiter is whatever character the server put after '(' and all four
 * must match. The text is never assumed to be NUL-terminated; every read
 * is bounded by len.
 */
#include <stdint.h>
#include <string.h>

#include "fp_internal.h"

int fp_read_tuple(const char *p, size_t n, size_t *pos, fp_hostport *out)
{
	uint32_t v[6];
	size_t i = *pos;

	for (int k = 0; k < 6; k++) {
		if (k > 0) {
			i = fp_skip_spaces(p, n, i);
			if (i >= n || p[i] != ',')
				return fp_err_at(p, n, i);
			i = fp_skip_spaces(p, n, i + 1);
		}
		if (fp_read_dec(p, n, &i, 255, &v[k]) == 0)
			return fp_err_at(p, n, i);
	}
	*pos = i;
	for (int k = 0; k < 6; k++)
		if (v[k] > 255)
			return FP_E_RANGE;
	if (v[4] == 0 && v[5] == 0)
		return FP_E_RANGE;
	for (int k = 0; k < 4; k++)
		out->ip[k] = (uint8_t)v[k];
	out->port = (uint16_t)(v[4] << 8 | v[5]);
	return FP_OK;
}

int fp_parse_227(const char *text, size_t len, fp_hostport *out)
{
	size_t i = 0;
	int code;

	memset(out, 0, sizeof(*out));
	/* Skip the code only when it is one ("227 ", "227-", "227"); text
	 * without a code may well start with the first address byte. */
	if (fp_reply_code(text, len, &code) &&
	    (len == 3 || text[3] == ' ' || text[3] == '-'))
		i = 3;
	while (i < len && !fp_is_digit((unsigned char)text[i]))
		i++;
	if (i == len)
		return FP_E_SYNTAX;

	fp_hostport hp;
	int rc = fp_read_tuple(text, len, &i, &hp);
	if (rc == FP_OK)
		*out = hp;
	return rc;
}

/* A character RFC 2428 allows as a delimiter; digits are left out because
 * the port between delimiters is made of them. */
static bool is_delim_char(unsigned char c)
{
	return c >= 33 && c <= 126 && !fp_is_digit(c);
}

/* Error for text[i] where the delimiter d was expected. */
static int delim_err(const char *text, size_t len, size_t i)
{
	if (i >= len)
		return FP_E_SYNTAX;
	if (is_delim_char((unsigned char)text[i]))
		return FP_E_DELIM;
	return fp_err_at(text, len, i);
}

int fp_parse_229(const char *text, size_t len, uint16_t *port)
{
	const char *paren = memchr(text, '(', len);
	uint32_t v;

	*port = 0;
	if (paren == NULL)
		return FP_E_SYNTAX;
	size_t i = (size_t)(paren - text) + 1;
	if (i >= len)
		return FP_E_SYNTAX;
	char d = text[i];
	if (!is_delim_char((unsigned char)d))
		return fp_is_foreign((unsigned char)d) ? FP_E_CHARSET : FP_E_DELIM;
	/* Empty net-prt and net-addr: the next two bytes are d as well. */
	for (int k = 0; k < 2; k++) {
		i++;
		if (i >= len || text[i] != d)
			return delim_err(text, len, i);
	}
	i++;
	if (fp_read_dec(text, len, &i, 65535, &v) == 0)
		return fp_err_at(text, len, i);
	if (i >= len || text[i] != d)
		return delim_err(text, len, i);
	i++;
	if (i >= len || text[i] != ')')
		return FP_E_SYNTAX;
	if (v == 0 || v > 65535)
		return FP_E_RANGE;
	*port = (uint16_t)v;
	return FP_OK;
}

int fp_format_227(char *buf, size_t cap, const uint8_t ip[4], uint16_t port)
{
	struct fp_out o = { buf, cap, 0, false };

	fp_out_str(&o, "227 Entering Passive Mode (");
	for (int k = 0; k < 4; k++) {
		fp_out_uint(&o, ip[k]);
		fp_out_bytes(&o, ",", 1);
	}
	fp_out_uint(&o, (uint32_t)(port >> 8));
	fp_out_bytes(&o, ",", 1);
	fp_out_uint(&o, (uint32_t)(port & 0xff));
	fp_out_str(&o, ").\r\n");
	return fp_out_result(&o);
}

int fp_format_229(char *buf, size_t cap, uint16_t port)
{
	struct fp_out o = { buf, cap, 0, false };

	fp_out_str(&o, "229 Entering Extended Passive Mode (|||");
	fp_out_uint(&o, port);
	fp_out_str(&o, "|)\r\n");
	return fp_out_result(&o);
}
