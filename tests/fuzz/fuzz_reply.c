/*
 * libFuzzer target: the server -> client direction.
 *
 * Bytes go through the framer (checked against its model in
 * fuzz_framer.h), every line through the reply tracker, fp_parse_227 and
 * fp_parse_229, and whatever parses is formatted again the way the proxy
 * rewrites it. Invariants: the tracker's state follows RFC 959 (a middle
 * line is never an error; a reply ends exactly when a line says so), a
 * parsed passive reply re-parses from its formatted form to the same
 * address and port, formatters never exceed their capacity, and formatted
 * or printable text is one clean line.
 */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz_framer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct reply_ctx {
	fp_reply r;
	uint64_t seed;
};

/* Format with capacities below and at what is needed. */
static void check_caps(int (*fmt)(char *, size_t, const void *), const void *arg,
		       int need, uint64_t *seed)
{
	char small[128];
	size_t cap = (size_t)(fuzz_rand(seed) % (uint64_t)need);

	memset(small, 0x55, sizeof(small));
	CHECK(fmt(small, cap, arg) == FP_E_NOSPACE);
	for (size_t i = cap; i < sizeof(small); i++)
		CHECK(small[i] == 0x55);
	CHECK(fmt(small, (size_t)need, arg) == need);
}

static int fmt_227(char *buf, size_t cap, const void *arg)
{
	const fp_hostport *hp = arg;
	return fp_format_227(buf, cap, hp->ip, hp->port);
}

static int fmt_229(char *buf, size_t cap, const void *arg)
{
	const uint16_t *port = arg;
	return fp_format_229(buf, cap, *port);
}

/* A formatted reply is one single-line reply with the given code. */
static void check_one_line(const char *buf, int n, int code)
{
	fp_reply r;
	fp_reply_line rl;

	CHECK(n >= 6);
	CHECK(buf[n - 2] == '\r' && buf[n - 1] == '\n');
	CHECK(memchr(buf, '\n', (size_t)n - 1) == NULL);
	CHECK(memchr(buf, '\r', (size_t)n - 2) == NULL);
	fp_reply_init(&r);
	CHECK(fp_reply_feed(&r, buf, (size_t)n - 2, &rl) == FP_OK);
	CHECK(rl.code == code && rl.first && rl.last);
}

/* Reference readings, written independently of ftpparse and as plainly as
 * possible, for differential checks. */
static bool ref_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool ref_code(const char *t, size_t n)
{
	return n >= 3 && t[0] >= '1' && t[0] <= '5' && t[1] >= '0' && t[1] <= '5' &&
	       ref_digit(t[2]);
}

static bool ref_closes(const char *t, size_t n, int code)
{
	char c[8];

	snprintf(c, sizeof(c), "%d", code);
	if (n < 3 || memcmp(t, c, 3) != 0)
		return false;
	return n == 3 || t[3] == ' ' || t[3] == '\r' || t[3] == '\n';
}

/* Six numbers after the first digit past the code; -1 bad shape, -2 bad
 * range, else 0 and the values. */
static int ref_227(const char *t, size_t n, uint8_t ip[4], uint16_t *port)
{
	unsigned long v[6];
	size_t i = 0;

	if (ref_code(t, n) && (n == 3 || t[3] == ' ' || t[3] == '-'))
		i = 3;
	while (i < n && !ref_digit(t[i]))
		i++;
	for (int k = 0; k < 6; k++) {
		if (k > 0) {
			while (i < n && t[i] == ' ')
				i++;
			if (i >= n || t[i] != ',')
				return -1;
			i++;
			while (i < n && t[i] == ' ')
				i++;
		}
		if (i >= n || !ref_digit(t[i]))
			return -1;
		v[k] = 0;
		for (; i < n && ref_digit(t[i]); i++)
			v[k] = v[k] > 1000 ? v[k] : v[k] * 10 + (unsigned long)(t[i] - '0');
	}
	for (int k = 0; k < 6; k++)
		if (v[k] > 255)
			return -2;
	if (v[4] == 0 && v[5] == 0)
		return -2;
	for (int k = 0; k < 4; k++)
		ip[k] = (uint8_t)v[k];
	*port = (uint16_t)(v[4] * 256 + v[5]);
	return 0;
}

/* "(dddPORTd)" after the first '('; the port, or -1. */
static long ref_229(const char *t, size_t n)
{
	const char *p = memchr(t, '(', n);

	if (p == NULL)
		return -1;
	size_t i = (size_t)(p - t) + 1;
	if (i + 3 > n)
		return -1;
	unsigned char d = (unsigned char)t[i];
	if (d < 33 || d > 126 || ref_digit((char)d) || t[i + 1] != (char)d ||
	    t[i + 2] != (char)d)
		return -1;
	i += 3;
	long v = 0;
	size_t digits = 0;
	for (; i < n && ref_digit(t[i]); i++, digits++)
		v = v > 100000 ? v : v * 10 + (t[i] - '0');
	if (digits == 0 || i + 2 > n || t[i] != (char)d || t[i + 1] != ')')
		return -1;
	return v >= 1 && v <= 65535 ? v : -1;
}

static void check_passive(const char *t, size_t n, uint64_t *seed)
{
	char buf[128];
	fp_hostport hp, again;
	uint16_t port, port2;
	int rc, len;

	rc = fp_parse_227(t, n, &hp);
	CHECK(rc == FP_OK || rc == FP_E_SYNTAX || rc == FP_E_RANGE || rc == FP_E_CHARSET);
	fp_hostport ref;
	int want = ref_227(t, n, ref.ip, &ref.port);
	CHECK((rc == FP_OK) == (want == 0));
	CHECK((rc == FP_E_RANGE) == (want == -2));
	if (rc == FP_OK)
		CHECK(memcmp(hp.ip, ref.ip, 4) == 0 && hp.port == ref.port);
	if (rc == FP_OK) {
		CHECK(hp.port != 0);
		len = fp_format_227(buf, sizeof(buf), hp.ip, hp.port);
		CHECK(len > 0 && (size_t)len <= sizeof(buf));
		check_one_line(buf, len, 227);
		CHECK(fp_parse_227(buf, (size_t)len, &again) == FP_OK);
		CHECK(memcmp(hp.ip, again.ip, 4) == 0 && hp.port == again.port);
		check_caps(fmt_227, &hp, len, seed);
	} else {
		CHECK(hp.port == 0);
	}

	rc = fp_parse_229(t, n, &port);
	CHECK(rc == FP_OK || rc == FP_E_SYNTAX || rc == FP_E_RANGE ||
	      rc == FP_E_CHARSET || rc == FP_E_DELIM);
	long want229 = ref_229(t, n);
	CHECK((rc == FP_OK) == (want229 > 0));
	if (rc == FP_OK)
		CHECK(port == want229);
	if (rc == FP_OK) {
		CHECK(port != 0);
		CHECK(memchr(t, '(', n) != NULL);
		len = fp_format_229(buf, sizeof(buf), port);
		CHECK(len > 0 && (size_t)len <= sizeof(buf));
		check_one_line(buf, len, 229);
		CHECK(fp_parse_229(buf, (size_t)len, &port2) == FP_OK);
		CHECK(port == port2);
		check_caps(fmt_229, &port, len, seed);
	} else {
		CHECK(port == 0);
	}
}

static void check_text(const char *t, size_t n, int code)
{
	/* The proxy's own reply carrying peer text: one line, never more. */
	char *z = malloc(n + 1);
	char out[FP_LINE_MAX + 16];

	CHECK(z != NULL);
	memcpy(z, t, n);
	z[n] = '\0';
	size_t keep = strcspn(z, "\r\n");
	int len = fp_format_reply(out, sizeof(out), code, z);
	CHECK(len == (int)(keep + 6));
	check_one_line(out, len, code);
	CHECK(memcmp(out + 4, z, keep) == 0);
	CHECK(fp_format_reply(out, keep + 5, code, z) == FP_E_NOSPACE);
	free(z);

	/* Printable copy: printable ASCII only, NUL-terminated, within cap. */
	static char pr[4 * FP_LINE_MAX + 1];
	size_t odd = 0;
	for (size_t i = 0; i < n; i++)
		odd += (unsigned char)t[i] < 0x20 || (unsigned char)t[i] > 0x7e;
	fp_printable(pr, sizeof(pr), t, n);
	CHECK(strlen(pr) == n + 3 * odd);
	for (size_t i = 0; pr[i]; i++)
		CHECK(pr[i] >= 0x20 && pr[i] <= 0x7e);
	char tiny[7];
	fp_printable(tiny, sizeof(tiny), t, n);
	CHECK(strlen(tiny) < sizeof(tiny));
	CHECK(strncmp(tiny, pr, strlen(tiny)) == 0);
}

static void on_line(void *arg, const fp_line *l)
{
	struct reply_ctx *c = arg;
	char *t = fuzz_dup(l->p, l->text_len);
	size_t n = l->text_len;
	fp_reply before = c->r;
	fp_reply_line rl;

	int rc = fp_reply_feed(&c->r, t, n, &rl);
	if (before.in_multi) {
		/* Middle and closing lines are never errors. */
		CHECK(rc == FP_OK);
		CHECK(!rl.first && rl.code == before.code);
		CHECK(rl.last == ref_closes(t, n, before.code));
	} else {
		bool opens = ref_code(t, n) && (n == 3 || t[3] == ' ' || t[3] == '-' ||
						t[3] == '\r' || t[3] == '\n');
		CHECK((rc == FP_OK) == opens);
		CHECK(rc == FP_OK || rc == FP_E_SYNTAX);
		if (rc == FP_OK) {
			CHECK(rl.first);
			CHECK(rl.code == (t[0] - '0') * 100 + (t[1] - '0') * 10 + (t[2] - '0'));
			CHECK(rl.last == (n == 3 || t[3] != '-'));
		}
	}
	if (rc == FP_OK) {
		CHECK(rl.code >= 100 && rl.code <= 599);
		if (rl.last)
			CHECK(c->r.code == 0 && !c->r.in_multi);
		else
			CHECK(c->r.in_multi && c->r.code == rl.code);
	} else {
		CHECK(c->r.code == 0 && !c->r.in_multi);
	}

	check_passive(t, n, &c->seed);
	check_text(t, n, rc == FP_OK ? rl.code : 500);
	free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reply_ctx c;

	fp_reply_init(&c.r);
	c.seed = fuzz_seed(data, size);
	fuzz_frame(data, size, c.seed, 64, on_line, &c);

	/* The whole input as one text, with no framing at all. */
	char *t = fuzz_dup((const char *)data, size);
	check_passive(t, size, &c.seed);
	free(t);

	fuzz_frame_stretched(data, size);
	return 0;
}
