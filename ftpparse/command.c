/*
 * Client commands: the verb, its argument, and the two active-mode
 * arguments (PORT, RFC 959; EPRT, RFC 2428).
 *
 * A command is "VERB" or "VERB SP arg": the verb is 3 or 4 ASCII letters,
 * matched without regard to case; the argument is everything after the one
 * space, untouched. Clients put Telnet IAC sequences in front of ABOR
 * (IAC IP, IAC DM), and those are skipped before the verb. When the DM went
 * out as TCP urgent data the kernel takes it out of the stream, leaving an
 * IAC followed directly by the verb, so an IAC followed by a byte that is
 * not a Telnet command is skipped on its own. IAC IAC is an escaped 0xFF
 * data byte, which is no letter: the line has no verb.
 */
#include <stdint.h>
#include <string.h>

#include "fp_internal.h"

#define TELNET_IAC 0xff
#define TELNET_SE 0xf0   /* lowest Telnet command byte */
#define TELNET_WILL 0xfb /* WILL, WONT, DO, DONT carry an option byte */

static const struct {
	char name[5];
	enum fp_verb verb;
} verbs[] = {
	{ "USER", FP_CMD_USER }, { "PASS", FP_CMD_PASS }, { "ACCT", FP_CMD_ACCT },
	{ "PASV", FP_CMD_PASV }, { "EPSV", FP_CMD_EPSV }, { "PORT", FP_CMD_PORT },
	{ "EPRT", FP_CMD_EPRT }, { "LPRT", FP_CMD_LPRT }, { "LPSV", FP_CMD_LPSV },
	{ "AUTH", FP_CMD_AUTH }, { "RETR", FP_CMD_RETR }, { "STOR", FP_CMD_STOR },
	{ "STOU", FP_CMD_STOU }, { "APPE", FP_CMD_APPE }, { "LIST", FP_CMD_LIST },
	{ "NLST", FP_CMD_NLST }, { "MLSD", FP_CMD_MLSD }, { "ABOR", FP_CMD_ABOR },
	{ "QUIT", FP_CMD_QUIT }, { "FEAT", FP_CMD_FEAT }, { "REIN", FP_CMD_REIN },
	{ "PBSZ", FP_CMD_PBSZ }, { "PROT", FP_CMD_PROT }, { "CCC", FP_CMD_CCC },
};

/* Offset of the first byte after any leading Telnet commands. */
static size_t skip_telnet(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n && s[i] == TELNET_IAC) {
		if (i + 1 >= n || s[i + 1] == TELNET_IAC)
			break; /* lone IAC at the end, or an escaped 0xFF */
		if (s[i + 1] < TELNET_SE)
			i += 1; /* IAC whose command byte went out of band */
		else if (s[i + 1] >= TELNET_WILL)
			i += 3; /* option negotiation: IAC WILL opt */
		else
			i += 2; /* IAC IP, IAC DM, IAC AO, ... */
	}
	return i < n ? i : n;
}

int fp_cmd_parse(const char *text, size_t len, fp_cmd *out)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t i, v;

	out->verb = FP_CMD_OTHER;
	out->name[0] = '\0';
	out->arg = NULL;
	out->arg_len = 0;

	/* The terminator is optional: LF or CR LF at the end is not text. */
	if (len > 0 && s[len - 1] == '\n') {
		len--;
		if (len > 0 && s[len - 1] == '\r')
			len--;
	}
	i = skip_telnet(s, len);
	for (v = 0; i + v < len && v < 5 && fp_is_alpha(s[i + v]); v++)
		;
	if (v < 3 || v > 4)
		return FP_E_SYNTAX;
	if (i + v < len && s[i + v] != ' ')
		return FP_E_SYNTAX;

	for (size_t k = 0; k < v; k++)
		out->name[k] = fp_to_upper(s[i + k]);
	out->name[v] = '\0';
	for (size_t k = 0; k < sizeof(verbs) / sizeof(verbs[0]); k++) {
		if (strcmp(out->name, verbs[k].name) == 0) {
			out->verb = verbs[k].verb;
			break;
		}
	}
	i += v;
	if (i < len)
		i++; /* the one space */
	out->arg = text + i;
	out->arg_len = len - i;
	return FP_OK;
}

/* An argument may be followed by spaces, and by the line terminator when
 * the caller passes the whole line. */
static bool only_trailer(const char *p, size_t n, size_t i)
{
	for (; i < n; i++)
		if (p[i] != ' ' && p[i] != '\r' && p[i] != '\n')
			return false;
	return true;
}

int fp_parse_port(const char *arg, size_t len, fp_hostport *out)
{
	size_t i = fp_skip_spaces(arg, len, 0);
	fp_hostport hp;

	memset(out, 0, sizeof(*out));
	int rc = fp_read_tuple(arg, len, &i, &hp);
	if (rc != FP_OK)
		return rc;
	if (!only_trailer(arg, len, i))
		return fp_err_at(arg, len, i);
	*out = hp;
	return FP_OK;
}

static bool is_addr_char(unsigned char c)
{
	return fp_is_xdigit(c) || c == '.' || c == ':';
}

/* Error for s[i] where the delimiter was expected. */
static int eprt_delim_err(const char *arg, size_t len, size_t i)
{
	unsigned char c = i < len ? (unsigned char)arg[i] : 0;

	if (i < len && c >= 33 && c <= 126)
		return FP_E_DELIM;
	return fp_err_at(arg, len, i);
}

int fp_parse_eprt(const char *arg, size_t len, int *family, char *addr,
		  size_t addr_cap, uint16_t *port)
{
	const unsigned char *s = (const unsigned char *)arg;
	uint32_t proto, p;
	size_t i, a0, an;

	*family = 0;
	*port = 0;
	if (addr_cap > 0)
		addr[0] = '\0';
	if (len == 0)
		return FP_E_SYNTAX;
	unsigned char d = s[0];
	/* The delimiter must not be able to occur inside a field. */
	if (d < 33 || d > 126 || is_addr_char(d))
		return FP_E_DELIM;

	i = 1;
	if (fp_read_dec(arg, len, &i, 9, &proto) == 0)
		return i < len && s[i] == d ? FP_E_SYNTAX : eprt_delim_err(arg, len, i);
	if (i >= len || s[i] != d)
		return eprt_delim_err(arg, len, i);
	if (proto != 1 && proto != 2)
		return FP_E_SYNTAX;

	a0 = ++i;
	while (i < len && s[i] != d) {
		if (!is_addr_char(s[i]))
			return FP_E_CHARSET;
		i++;
	}
	an = i - a0;
	if (i >= len || an == 0)
		return FP_E_SYNTAX;

	i++;
	if (fp_read_dec(arg, len, &i, 65535, &p) == 0)
		return i < len && s[i] == d ? FP_E_SYNTAX : eprt_delim_err(arg, len, i);
	if (i >= len || s[i] != d)
		return eprt_delim_err(arg, len, i);
	if (!only_trailer(arg, len, i + 1))
		return FP_E_SYNTAX;
	if (p == 0 || p > 65535)
		return FP_E_RANGE;
	if (an >= addr_cap)
		return FP_E_NOSPACE;
	memcpy(addr, arg + a0, an);
	addr[an] = '\0';
	*family = (int)proto;
	*port = (uint16_t)p;
	return FP_OK;
}
