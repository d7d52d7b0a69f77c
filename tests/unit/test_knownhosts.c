/*
 * Unit tests for mux/knownhosts.c, the pure known_hosts parser: line shapes
 * (markers, comments, hostile and truncated lines, each also fed cut at
 * every length), host patterns with '*', '?' and '!', hashed names checked
 * against lines ssh-keygen -H wrote (a real HMAC-SHA1 from libcrypto), the
 * lookup name OpenSSH uses, base64 both ways, key blob types, and the key
 * type each host-key algorithm verifies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "mux/knownhosts.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int hmac_sha1(const unsigned char *key, size_t klen, const unsigned char *msg, size_t mlen,
		     unsigned char out[20])
{
	unsigned int olen = 0;
	return HMAC(EVP_sha1(), key, (int)klen, msg, mlen, out, &olen) && olen == 20 ? 0 : -1;
}

static int hmac_fails(const unsigned char *key, size_t klen, const unsigned char *msg,
		      size_t mlen, unsigned char out[20])
{
	(void)key, (void)klen, (void)msg, (void)mlen, (void)out;
	return -1;
}

#define ED_KEY "AAAAC3NzaC1lZDI1NTE5AAAAIE/VmiBtEobSLqfF1vUFxQW3/THgw4C59WkI5bo6ZwjN"
/* ssh-keygen -H of "[127.0.0.1]:2222" and of "myhost", with the key above */
#define HASHED_PORT "|1|Mg/99mg210/r76TEr5LmEZbg8HU=|l7D7KjfV0lGSu3lYkVTgeWHPOq4="
#define HASHED_MYHOST "|1|J4zEsxY7DDwsd6y/nZOAsV1h+H8=|1Y0VmoJD+upUzFh5CqGK7uSzpmU="

static void field_eq(const char *p, size_t len, const char *want)
{
	assert_int_equal(len, strlen(want));
	assert_memory_equal(p, want, len);
}

/* ---- parsing --------------------------------------------------------------- */

static void test_parse_shapes(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		int rc;
		enum mux_kh_marker marker;
		const char *hosts, *type;
	} cases[] = {
		{"gw.example.org ssh-ed25519 " ED_KEY "\n", MUX_KH_ENTRY, MUX_KH_PLAIN,
		 "gw.example.org", "ssh-ed25519"},
		{"[127.0.0.1]:2222,gw ssh-ed25519 " ED_KEY " a comment\r\n", MUX_KH_ENTRY,
		 MUX_KH_PLAIN, "[127.0.0.1]:2222,gw", "ssh-ed25519"},
		{"\t  host\tssh-ed25519\t" ED_KEY, MUX_KH_ENTRY, MUX_KH_PLAIN, "host", "ssh-ed25519"},
		{"@revoked * ssh-ed25519 " ED_KEY "\n", MUX_KH_ENTRY, MUX_KH_REVOKED, "*",
		 "ssh-ed25519"},
		{"@cert-authority *.example.org ssh-ed25519 " ED_KEY, MUX_KH_ENTRY, MUX_KH_CA,
		 "*.example.org", "ssh-ed25519"},
		{HASHED_PORT " ssh-ed25519 " ED_KEY, MUX_KH_ENTRY, MUX_KH_PLAIN, HASHED_PORT,
		 "ssh-ed25519"},
		{"", MUX_KH_SKIP, 0, NULL, NULL},
		{"\n", MUX_KH_SKIP, 0, NULL, NULL},
		{"   \t \r\n", MUX_KH_SKIP, 0, NULL, NULL},
		{"# gw ssh-ed25519 " ED_KEY, MUX_KH_SKIP, 0, NULL, NULL},
		{"   #comment", MUX_KH_SKIP, 0, NULL, NULL},
		{"host ssh-ed25519", MUX_KH_EBAD, 0, NULL, NULL},
		{"host", MUX_KH_EBAD, 0, NULL, NULL},
		{"@revoked", MUX_KH_EBAD, 0, NULL, NULL},
		{"@revoked host ssh-ed25519", MUX_KH_EBAD, 0, NULL, NULL},
		{"@unknown host ssh-ed25519 " ED_KEY, MUX_KH_EBAD, 0, NULL, NULL},
		{"@REVOKED host ssh-ed25519 " ED_KEY, MUX_KH_EBAD, 0, NULL, NULL},
		{"host 2048 35 2511818393", MUX_KH_EBAD, 0, NULL, NULL}, /* SSH-1 */
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		mux_kh_entry e;
		int rc = mux_kh_parse(cases[i].line, strlen(cases[i].line), &e);
		if (rc != cases[i].rc)
			fail_msg("case %zu \"%s\": %d, want %d", i, cases[i].line, rc, cases[i].rc);
		if (rc != MUX_KH_ENTRY)
			continue;
		assert_int_equal(e.marker, cases[i].marker);
		field_eq(e.hosts, e.hosts_len, cases[i].hosts);
		field_eq(e.type, e.type_len, cases[i].type);
		field_eq(e.key, e.key_len, ED_KEY);
	}
}

static void test_parse_nul_and_truncation(void **state)
{
	(void)state;
	static const char line[] = "@revoked host ssh-ed25519 " ED_KEY " comment\n";
	mux_kh_entry e;
	/* a NUL inside a line is not an entry */
	static const char nul[] = "host ssh-ed25519 AAAA\0AAAA";
	assert_int_equal(mux_kh_parse(nul, sizeof(nul) - 1, &e), MUX_KH_EBAD);
	/* every prefix of a good line: never reads past it, fields inside it */
	for (size_t n = 0; n <= sizeof(line) - 1; n++) {
		char buf[sizeof(line)];
		memcpy(buf, line, n);
		int rc = mux_kh_parse(buf, n, &e);
		assert_true(rc == MUX_KH_ENTRY || rc == MUX_KH_SKIP || rc == MUX_KH_EBAD);
		if (rc == MUX_KH_ENTRY) {
			assert_true(e.key + e.key_len <= buf + n);
			assert_true(e.key_len >= 1);
		}
	}
}

/* ---- matching -------------------------------------------------------------- */

static void test_match_patterns(void **state)
{
	(void)state;
	static const struct {
		const char *hosts, *name;
		int want;
	} cases[] = {
		{"gw.example.org", "gw.example.org", 1},
		{"GW.Example.ORG", "gw.example.org", 1},
		{"gw.example.org", "gw.example.com", 0},
		{"a,b,gw", "gw", 1},
		{"a,b,gw", "g", 0},
		{"*.example.org", "gw.example.org", 1},
		{"*.example.org", "example.org", 0},
		{"gw?.example.org", "gw1.example.org", 1},
		{"gw?.example.org", "gw12.example.org", 0},
		{"*", "anything", 1},
		{"*.example.org,!bad.example.org", "bad.example.org", 0},
		{"!bad.example.org,*.example.org", "bad.example.org", 0},
		{"!bad.example.org,*.example.org", "gw.example.org", 1},
		{"!bad.example.org", "gw.example.org", 0}, /* negation alone never matches */
		{"[127.0.0.1]:2222", "[127.0.0.1]:2222", 1},
		{"[127.0.0.1]:2222", "[127.0.0.1]:22222", 0},
		{"127.0.0.1", "[127.0.0.1]:2222", 0},
		{"[127.0.0.1]:*", "[127.0.0.1]:2222", 1},
		{",,gw,", "gw", 1},
		{"", "gw", 0},
		{"**a**b", "xxaxxbb", 1},
		{HASHED_PORT, "[127.0.0.1]:2222", 1},
		{HASHED_PORT, "[127.0.0.1]:2223", 0},
		{HASHED_PORT, "127.0.0.1", 0},
		{HASHED_MYHOST, "myhost", 1},
		{HASHED_MYHOST, "MYHOST", 0}, /* hashes compare exact bytes */
		{"|1|bad|bad", "myhost", -1},
		{"|1|Mg/99mg210/r76TEr5LmEZbg8HU=", "myhost", -1},
		{"|1|Mg/99mg210/r76TEr5LmEZbg8HU=|AAAA", "myhost", -1},
		{"|2|x|y", "myhost", 0}, /* not our magic: an ordinary pattern */
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		int got = mux_kh_match(cases[i].hosts, strlen(cases[i].hosts), cases[i].name,
				       hmac_sha1);
		if (got != cases[i].want)
			fail_msg("case %zu: \"%s\" vs \"%s\": %d, want %d", i, cases[i].hosts,
				 cases[i].name, got, cases[i].want);
	}
	assert_int_equal(mux_kh_match(HASHED_MYHOST, strlen(HASHED_MYHOST), "myhost", hmac_fails),
			 -1);
	assert_int_equal(mux_kh_match(HASHED_MYHOST, strlen(HASHED_MYHOST), "myhost", NULL), -1);
	/* the length bounds the field: a match must not read past it */
	assert_int_equal(mux_kh_match("gw,other", 2, "gw", hmac_sha1), 1);
	assert_int_equal(mux_kh_match("gw,other", 2, "other", hmac_sha1), 0);
}

static void test_hash_name_roundtrip(void **state)
{
	(void)state;
	unsigned char salt[20];
	char out[128];
	for (size_t i = 0; i < sizeof(salt); i++)
		salt[i] = (unsigned char)(i * 37 + 1);
	int n = mux_kh_hash_name("[gw]:2222", salt, hmac_sha1, out, sizeof(out));
	assert_int_equal(n, 3 + 28 + 1 + 28);
	assert_int_equal((size_t)n, strlen(out));
	assert_memory_equal(out, "|1|", 3);
	assert_int_equal(mux_kh_match(out, (size_t)n, "[gw]:2222", hmac_sha1), 1);
	assert_int_equal(mux_kh_match(out, (size_t)n, "[gw]:2223", hmac_sha1), 0);
	assert_int_equal(mux_kh_hash_name("gw", salt, hmac_sha1, out, 40), -1);
	assert_int_equal(mux_kh_hash_name("gw", salt, hmac_fails, out, sizeof(out)), -1);
}

static void test_lookup_name(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(mux_kh_lookup_name("GW.Example.org", 22, NULL, out, sizeof(out)), 14);
	assert_string_equal(out, "gw.example.org");
	mux_kh_lookup_name("127.0.0.1", 2222, NULL, out, sizeof(out));
	assert_string_equal(out, "[127.0.0.1]:2222");
	mux_kh_lookup_name("::1", 2222, NULL, out, sizeof(out));
	assert_string_equal(out, "[::1]:2222");
	mux_kh_lookup_name("127.0.0.1", 2222, "Gateway-Alias", out, sizeof(out));
	assert_string_equal(out, "Gateway-Alias"); /* alias as given, no port */
	mux_kh_lookup_name("127.0.0.1", 2222, "", out, sizeof(out));
	assert_string_equal(out, "[127.0.0.1]:2222");
	assert_int_equal(mux_kh_lookup_name("127.0.0.1", 2222, NULL, out, 16), -1);
	assert_int_equal(mux_kh_lookup_name("127.0.0.1", 2222, NULL, out, 17), 16);
}

/* ---- codecs ---------------------------------------------------------------- */

static void test_base64(void **state)
{
	(void)state;
	static const struct {
		const char *plain, *b64;
	} cases[] = {
		{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
		{"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
	};
	unsigned char bin[64];
	char txt[64];
	for (size_t i = 0; i < NELEM(cases); i++) {
		size_t pl = strlen(cases[i].plain);
		assert_int_equal(mux_kh_b64_encode((const unsigned char *)cases[i].plain, pl, txt,
						   sizeof(txt)),
				 (int)strlen(cases[i].b64));
		assert_string_equal(txt, cases[i].b64);
		assert_int_equal(mux_kh_b64_decode(cases[i].b64, strlen(cases[i].b64), bin,
						   sizeof(bin)),
				 (int)pl);
		assert_memory_equal(bin, cases[i].plain, pl);
	}
	static const char *bad[] = {"Zg=", "Zg", "Z===", "=Zg=", "Zg==Zg==", "Zm9v!A==", "Zm 9",
				    "Zm=v"};
	for (size_t i = 0; i < NELEM(bad); i++)
		if (mux_kh_b64_decode(bad[i], strlen(bad[i]), bin, sizeof(bin)) != -1)
			fail_msg("\"%s\" decoded", bad[i]);
	/* no room */
	assert_int_equal(mux_kh_b64_decode("Zm9vYmFy", 8, bin, 5), -1);
	assert_int_equal(mux_kh_b64_encode((const unsigned char *)"foo", 3, txt, 4), -1);
	assert_int_equal(mux_kh_b64_encode((const unsigned char *)"foo", 3, txt, 5), 4);
}

static void test_blob_type(void **state)
{
	(void)state;
	unsigned char blob[128];
	char type[32];
	int n = mux_kh_b64_decode(ED_KEY, strlen(ED_KEY), blob, sizeof(blob));
	assert_int_equal(n, 51);
	assert_int_equal(mux_kh_blob_type(blob, (size_t)n, type, sizeof(type)), 11);
	assert_string_equal(type, "ssh-ed25519");
	assert_int_equal(mux_kh_blob_type(blob, (size_t)n, type, 11), -1); /* no room for NUL */
	assert_int_equal(mux_kh_blob_type(blob, 14, type, sizeof(type)), -1); /* cut */
	assert_int_equal(mux_kh_blob_type(blob, 3, type, sizeof(type)), -1);
	static const unsigned char huge[] = {0xff, 0xff, 0xff, 0xff, 'a'};
	assert_int_equal(mux_kh_blob_type(huge, sizeof(huge), type, sizeof(type)), -1);
	static const unsigned char zero[] = {0, 0, 0, 0};
	assert_int_equal(mux_kh_blob_type(zero, sizeof(zero), type, sizeof(type)), -1);
	static const unsigned char ctl[] = {0, 0, 0, 3, 'a', '\n', 'b'};
	assert_int_equal(mux_kh_blob_type(ctl, sizeof(ctl), type, sizeof(type)), -1);
}

static void test_alg_keytype(void **state)
{
	(void)state;
	static const struct {
		const char *alg, *type;
	} cases[] = {
		{"ssh-ed25519", "ssh-ed25519"},
		{"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"},
		{"ecdsa-sha2-nistp521", "ecdsa-sha2-nistp521"},
		{"rsa-sha2-512", "ssh-rsa"},
		{"rsa-sha2-256", "ssh-rsa"},
		{"ssh-rsa", "ssh-rsa"},
		{"ssh-dss", "ssh-dss"},
		{"ssh-ed25519-cert-v01@openssh.com", NULL},
		{"ecdsa-sha2-nistp256-cert-v01@openssh.com", NULL},
		{"rsa-sha2-512-cert-v01@openssh.com", NULL},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		size_t tl = 0;
		const char *t = mux_kh_alg_keytype(cases[i].alg, strlen(cases[i].alg), &tl);
		if (!cases[i].type) {
			assert_null(t);
			continue;
		}
		assert_non_null(t);
		field_eq(t, tl, cases[i].type);
	}
	/* lengths, not NULs, bound the name (it comes from a comma list) */
	size_t tl = 0;
	const char *t = mux_kh_alg_keytype("rsa-sha2-256,ssh-ed25519", 12, &tl);
	field_eq(t, tl, "ssh-rsa");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_shapes),
		cmocka_unit_test(test_parse_nul_and_truncation),
		cmocka_unit_test(test_match_patterns),
		cmocka_unit_test(test_hash_name_roundtrip),
		cmocka_unit_test(test_lookup_name),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_blob_type),
		cmocka_unit_test(test_alg_keytype),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
