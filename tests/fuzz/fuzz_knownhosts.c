/*
 * libFuzzer target: the pure part of mux's host-key and algorithm code.
 *
 * The input's first line is an algorithm spec (ssh's +/-/^ forms) and its
 * second a "supported" list; the rest is a known_hosts file. Invariants:
 * a resolved list fits its buffer, has no duplicates and only supported
 * names; the from-ssh reconciliation keeps only supported names; every
 * parsed line's fields lie inside the line, are non-empty and hold no
 * blank; host matching and base64/blob decoding stay in bounds; decoded
 * keys survive an encode/decode round trip. The HMAC is a stand-in (a
 * keyed checksum): what is fuzzed is the parsing around it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mux/knownhosts.h"
#include "mux/namelist.h"
#include "tests/fuzz/fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fake_hmac(const unsigned char *key, size_t klen, const unsigned char *msg, size_t mlen,
		     unsigned char out[20])
{
	memset(out, 0, 20);
	for (size_t i = 0; i < klen; i++)
		out[i % 20] ^= key[i];
	for (size_t i = 0; i < mlen; i++)
		out[(i * 7) % 20] = (unsigned char)(out[(i * 7) % 20] * 31 + msg[i]);
	return 0;
}

/* Take the next line of data (without '\n') as a NUL-terminated copy. */
static char *take_line(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
	size_t n = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
	char *s = malloc(n + 1);
	if (!s)
		abort();
	memcpy(s, *p, n);
	s[n] = '\0';
	*p += n + (nl ? 1 : 0);
	return s;
}

static void check_list(const char *out, const char *supported)
{
	const char *p = out;
	while (*p) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		CHECK(n > 0);
		CHECK(mux_nl_contains(supported, p, n));
		/* no duplicate later on */
		const char *q = comma ? comma + 1 : NULL;
		while (q && *q) {
			const char *c2 = strchr(q, ',');
			size_t n2 = c2 ? (size_t)(c2 - q) : strlen(q);
			CHECK(!(n2 == n && memcmp(p, q, n) == 0));
			q = c2 ? c2 + 1 : NULL;
		}
		if (!comma)
			break;
		p = comma + 1;
	}
}

static void fuzz_lists(const char *spec, const char *supported)
{
	char out[256], bad[32];
	/* defaults: the supported names, as algos.c passes them cut to the build */
	int rc = mux_nl_resolve(spec, supported, supported, out, sizeof(out), bad, sizeof(bad));
	CHECK(rc >= MUX_NL_ETOOLONG && rc <= MUX_NL_OK);
	CHECK(strlen(bad) < sizeof(bad));
	if (rc == MUX_NL_OK) {
		CHECK(strlen(out) < sizeof(out) && out[0]);
		check_list(out, supported);
	}
	rc = mux_nl_from_ssh(spec, "aes128-ctr,aes256-ctr", supported, out, sizeof(out), bad,
			     sizeof(bad));
	CHECK(rc >= MUX_NL_ETOOLONG && rc <= MUX_NL_SAME);
	if (rc == MUX_NL_OK)
		check_list(out, supported);
}

static bool has_blank(const char *s, size_t n)
{
	return memchr(s, ' ', n) || memchr(s, '\t', n);
}

static void fuzz_line(const char *line, size_t len)
{
	static const char *names[] = {"gw", "[127.0.0.1]:2222", "gw.example.org", ""};
	mux_kh_entry e;
	int rc = mux_kh_parse(line, len, &e);
	CHECK(rc == MUX_KH_ENTRY || rc == MUX_KH_SKIP || rc == MUX_KH_EBAD);
	if (rc != MUX_KH_ENTRY)
		return;
	const char *end = line + len;
	CHECK(e.hosts >= line && e.hosts + e.hosts_len <= end && e.hosts_len > 0);
	CHECK(e.type >= line && e.type + e.type_len <= end && e.type_len > 0);
	CHECK(e.key >= line && e.key + e.key_len <= end && e.key_len > 0);
	CHECK(!has_blank(e.hosts, e.hosts_len) && !has_blank(e.type, e.type_len) &&
	      !has_blank(e.key, e.key_len));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int m = mux_kh_match(e.hosts, e.hosts_len, names[i], fake_hmac);
		CHECK(m >= -1 && m <= 1);
	}
	unsigned char blob[512], again[512];
	char text[700], type[64];
	int n = mux_kh_b64_decode(e.key, e.key_len, blob, sizeof(blob));
	CHECK(n >= -1 && n <= (int)sizeof(blob));
	if (n < 0)
		return;
	int t = mux_kh_b64_encode(blob, (size_t)n, text, sizeof(text));
	CHECK(t >= 0 && (size_t)t == strlen(text));
	CHECK(mux_kh_b64_decode(text, (size_t)t, again, sizeof(again)) == n);
	CHECK(memcmp(blob, again, (size_t)n) == 0);
	int tl = mux_kh_blob_type(blob, (size_t)n, type, sizeof(type));
	CHECK(tl == -1 || ((size_t)tl == strlen(type) && tl > 0 && tl + 4 <= n));
	size_t klen = 0;
	const char *kt = mux_kh_alg_keytype(e.type, e.type_len, &klen);
	CHECK(!kt || klen > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	char *spec = take_line(&p, end);
	char *supported = take_line(&p, end);
	fuzz_lists(spec, supported);
	free(spec);
	free(supported);
	while (p < end) {
		char *line = take_line(&p, end);
		fuzz_line(line, strlen(line));
		free(line);
	}
	/* the salt-and-hash writer against the matcher */
	unsigned char salt[20] = {0};
	char hashed[128];
	memcpy(salt, data, size < 20 ? size : 20);
	CHECK(mux_kh_hash_name("gw", salt, fake_hmac, hashed, sizeof(hashed)) > 0);
	CHECK(mux_kh_match(hashed, strlen(hashed), "gw", fake_hmac) == 1);
	return 0;
}
