/*
 * libFuzzer target: the client -> server direction.
 *
 * Bytes go through the framer (checked against its model in
 * fuzz_framer.h), every line through fp_cmd_parse, and every argument
 * (and every whole line) through fp_parse_port and fp_parse_eprt.
 * Invariants: a line parses the same with or without its terminator; a
 * verb is 3-4 upper-case letters and maps to its enum exactly when it is a
 * known one; the argument lies inside the line; a parsed PORT or EPRT
 * argument, written out again, parses to the same values; an EPRT address
 * never exceeds the capacity given and holds only address characters.
 */
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

#include "tests/fuzz/fuzz_framer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Indexed by enum fp_verb. */
static const char *const verb_names[] = {
	[FP_CMD_OTHER] = "", [FP_CMD_USER] = "USER", [FP_CMD_PASS] = "PASS",
	[FP_CMD_ACCT] = "ACCT", [FP_CMD_PASV] = "PASV", [FP_CMD_EPSV] = "EPSV",
	[FP_CMD_PORT] = "PORT", [FP_CMD_EPRT] = "EPRT", [FP_CMD_LPRT] = "LPRT",
	[FP_CMD_LPSV] = "LPSV", [FP_CMD_AUTH] = "AUTH", [FP_CMD_RETR] = "RETR",
	[FP_CMD_STOR] = "STOR", [FP_CMD_STOU] = "STOU", [FP_CMD_APPE] = "APPE",
	[FP_CMD_LIST] = "LIST", [FP_CMD_NLST] = "NLST", [FP_CMD_MLSD] = "MLSD",
	[FP_CMD_ABOR] = "ABOR", [FP_CMD_QUIT] = "QUIT", [FP_CMD_FEAT] = "FEAT",
	[FP_CMD_REIN] = "REIN", [FP_CMD_PBSZ] = "PBSZ", [FP_CMD_PROT] = "PROT",
	[FP_CMD_CCC] = "CCC",
};

static void check_verb(const fp_cmd *c)
{
	size_t n = strlen(c->name);

	CHECK(n == 3 || n == 4);
	for (size_t i = 0; i < n; i++)
		CHECK(c->name[i] >= 'A' && c->name[i] <= 'Z');
	CHECK((size_t)c->verb < sizeof(verb_names) / sizeof(verb_names[0]));
	if (c->verb != FP_CMD_OTHER) {
		CHECK(strcmp(c->name, verb_names[c->verb]) == 0);
		return;
	}
	for (size_t v = 1; v < sizeof(verb_names) / sizeof(verb_names[0]); v++)
		CHECK(strcmp(c->name, verb_names[v]) != 0);
}

static void check_port(const char *a, size_t n)
{
	fp_hostport hp, again;
	int rc = fp_parse_port(a, n, &hp);

	CHECK(rc == FP_OK || rc == FP_E_SYNTAX || rc == FP_E_RANGE || rc == FP_E_CHARSET);
	if (rc != FP_OK) {
		CHECK(hp.port == 0);
		return;
	}
	CHECK(hp.port != 0);
	char buf[64];
	int len = snprintf(buf, sizeof(buf), "%u,%u,%u,%u,%u,%u", hp.ip[0], hp.ip[1],
			   hp.ip[2], hp.ip[3], hp.port >> 8, hp.port & 0xff);
	CHECK(len > 0 && (size_t)len < sizeof(buf));
	CHECK(fp_parse_port(buf, (size_t)len, &again) == FP_OK);
	CHECK(memcmp(hp.ip, again.ip, 4) == 0 && hp.port == again.port);
}

static void check_eprt(const char *a, size_t n)
{
	char addr[256], addr2[256];
	int family, family2;
	uint16_t port, port2;

	memset(addr, 0x55, sizeof(addr));
	int rc = fp_parse_eprt(a, n, &family, addr, sizeof(addr) - 1, &port);
	CHECK(rc == FP_OK || rc == FP_E_SYNTAX || rc == FP_E_RANGE ||
	      rc == FP_E_CHARSET || rc == FP_E_DELIM || rc == FP_E_NOSPACE);
	CHECK(addr[sizeof(addr) - 1] == 0x55);
	if (rc != FP_OK) {
		CHECK(addr[0] == '\0' && family == 0 && port == 0);
		return;
	}
	CHECK(family == 1 || family == 2);
	CHECK(port != 0);
	size_t al = strlen(addr);
	CHECK(al > 0 && al < sizeof(addr) - 1);
	for (size_t i = 0; i < al; i++)
		CHECK(strchr("0123456789abcdefABCDEF.:", addr[i]) != NULL);
	CHECK(memmem(a, n, addr, al) != NULL);

	/* Exactly enough room works; one byte less does not, and stays inside. */
	memset(addr2, 0x55, sizeof(addr2));
	CHECK(fp_parse_eprt(a, n, &family2, addr2, al + 1, &port2) == FP_OK);
	CHECK(strcmp(addr, addr2) == 0);
	memset(addr2, 0x55, sizeof(addr2));
	CHECK(fp_parse_eprt(a, n, &family2, addr2, al, &port2) == FP_E_NOSPACE);
	for (size_t i = al; i < sizeof(addr2); i++)
		CHECK(addr2[i] == 0x55);

	/* Written out with the same delimiter, it reads back the same. */
	char buf[300];
	int len = snprintf(buf, sizeof(buf), "%c%d%c%s%c%u%c", a[0], family, a[0], addr,
			   a[0], port, a[0]);
	CHECK(len > 0 && (size_t)len < sizeof(buf));
	CHECK(fp_parse_eprt(buf, (size_t)len, &family2, addr2, sizeof(addr2), &port2) == FP_OK);
	CHECK(family == family2 && port == port2 && strcmp(addr, addr2) == 0);
}

static void on_line(void *ctx, const fp_line *l)
{
	(void)ctx;
	char *t = fuzz_dup(l->p, l->text_len);
	char *whole = fuzz_dup(l->p, l->len);
	size_t n = l->text_len;
	fp_cmd c, c2;

	int rc = fp_cmd_parse(t, n, &c);
	int rc2 = fp_cmd_parse(whole, l->len, &c2);
	CHECK(rc == FP_OK || rc == FP_E_SYNTAX);
	/* The terminator changes nothing. */
	CHECK(rc == rc2 && c.verb == c2.verb && strcmp(c.name, c2.name) == 0);
	CHECK(c.arg_len == c2.arg_len);
	if (rc == FP_OK) {
		check_verb(&c);
		CHECK(c.arg >= t && c.arg + c.arg_len == t + n);
		/* The verb sits right before the argument (and its one space),
		 * after nothing but Telnet commands. */
		size_t vl = strlen(c.name);
		const char *v = c.arg - vl;
		if (c.arg > t && c.arg[-1] == ' ' && (size_t)(c.arg - t) > vl)
			v = c.arg - 1 - vl;
		CHECK(v >= t);
		CHECK(strncasecmp(v, c.name, vl) == 0);
		CHECK(v == t || (unsigned char)t[0] == 0xff);
		CHECK(c2.arg - whole == c.arg - t);
		char *arg = fuzz_dup(c.arg, c.arg_len);
		check_port(arg, c.arg_len);
		check_eprt(arg, c.arg_len);
		free(arg);
	} else {
		CHECK(c.verb == FP_CMD_OTHER && c.name[0] == '\0' && c.arg_len == 0);
	}
	check_port(t, n);
	check_eprt(t, n);
	free(whole);
	free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_frame(data, size, fuzz_seed(data, size), 64, on_line, NULL);
	fuzz_frame_stretched(data, size);
	return 0;
}
