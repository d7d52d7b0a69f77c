/*
 * Unit tests for mux/namelist.c: ssh's Ciphers/MACs/KexAlgorithms/
 * HostKeyAlgorithms forms (plain, +, -, ^, wildcards) resolved against a
 * defaults list and a "build" list, as algos.c feeds them from libssh2;
 * the ssh -G reconciliation; wildcard matching; bounded output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mux/namelist.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A build like libssh2 1.10, and defaults cut to it. */
#define SUP "aes128-ctr,aes192-ctr,aes256-ctr,aes256-cbc,aes128-cbc,3des-cbc"
#define DEF "aes128-ctr,aes192-ctr,aes256-ctr"

static void test_resolve_table(void **state)
{
	(void)state;
	static const struct {
		const char *spec;
		int rc;
		const char *out; /* or the bad name */
	} cases[] = {
		{NULL, MUX_NL_OK, DEF},
		{"", MUX_NL_OK, DEF},
		{"aes256-ctr", MUX_NL_OK, "aes256-ctr"},
		{"aes256-ctr,aes128-ctr", MUX_NL_OK, "aes256-ctr,aes128-ctr"},
		{"aes256-ctr,aes256-ctr", MUX_NL_OK, "aes256-ctr"},
		{"+aes128-cbc", MUX_NL_OK, DEF ",aes128-cbc"},
		{"+aes128-ctr", MUX_NL_OK, DEF},
		{"+*-cbc", MUX_NL_OK, DEF ",aes256-cbc,aes128-cbc,3des-cbc"},
		{"^aes256-ctr", MUX_NL_OK, "aes256-ctr,aes128-ctr,aes192-ctr"},
		{"^3des-cbc", MUX_NL_OK, "3des-cbc," DEF},
		{"-aes128-ctr", MUX_NL_OK, "aes192-ctr,aes256-ctr"},
		{"-aes1*", MUX_NL_OK, "aes256-ctr"},
		{"-aes1*,aes2*", MUX_NL_OK, NULL /* empty */},
		{"-no-such", MUX_NL_OK, DEF},          /* removing what is not there: fine */
		{"-", MUX_NL_OK, DEF},
		{"aes*-ctr", MUX_NL_OK, "aes128-ctr,aes192-ctr,aes256-ctr"},
		{"aes?" "?" "?-c*", MUX_NL_OK, "aes128-ctr,aes192-ctr,aes256-ctr,aes256-cbc,aes128-cbc"},
		{"no-such-cipher", MUX_NL_EBADNAME, "no-such-cipher"},
		{"aes128-ctr,aes256-gcm@openssh.com", MUX_NL_EBADNAME, "aes256-gcm@openssh.com"},
		{"+chacha20-poly1305@openssh.com", MUX_NL_EBADNAME, "chacha20-poly1305@openssh.com"},
		{"^nope*", MUX_NL_EBADNAME, "nope*"},
		{"aes128-ctr,,aes256-ctr", MUX_NL_EBADNAME, ""},
		{"aes128-ctr,", MUX_NL_EBADNAME, ""},
		{"!aes128-ctr", MUX_NL_EBADNAME, "!aes128-ctr"},
		{"AES128-CTR", MUX_NL_EBADNAME, "AES128-CTR"}, /* algorithm names are exact */
		{"aes128-ctr ", MUX_NL_EBADNAME, "aes128-ctr "},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char out[256], bad[64];
		int rc = mux_nl_resolve(cases[i].spec, DEF, SUP, out, sizeof(out), bad, sizeof(bad));
		if (!cases[i].out && cases[i].rc == MUX_NL_OK) {
			if (rc != MUX_NL_EEMPTY)
				fail_msg("case %zu \"%s\": %d, want empty", i, cases[i].spec, rc);
			continue;
		}
		if (rc != cases[i].rc)
			fail_msg("case %zu \"%s\": %d (%s / %s), want %d", i,
				 cases[i].spec ? cases[i].spec : "(null)", rc, out, bad, cases[i].rc);
		if (rc == MUX_NL_OK)
			assert_string_equal(out, cases[i].out);
		else
			assert_string_equal(bad, cases[i].out);
	}
}

static void test_resolve_bounds(void **state)
{
	(void)state;
	char out[16], bad[4];
	/* does not fit: an error, never a shorter list */
	assert_int_equal(mux_nl_resolve("aes128-ctr,aes256-ctr", DEF, SUP, out, sizeof(out), bad,
					sizeof(bad)),
			 MUX_NL_ETOOLONG);
	assert_int_equal(mux_nl_resolve("aes128-ctr", DEF, SUP, out, 10, bad, sizeof(bad)),
			 MUX_NL_ETOOLONG);
	assert_int_equal(mux_nl_resolve("aes128-ctr", DEF, SUP, out, 11, bad, sizeof(bad)),
			 MUX_NL_OK);
	assert_string_equal(out, "aes128-ctr");
	/* the bad name is cut to its buffer, NUL-terminated */
	assert_int_equal(mux_nl_resolve("nonsense", DEF, SUP, out, sizeof(out), bad, sizeof(bad)),
			 MUX_NL_EBADNAME);
	assert_string_equal(bad, "non");
	assert_int_equal(mux_nl_resolve("x", DEF, SUP, out, 0, bad, sizeof(bad)), MUX_NL_ETOOLONG);
	/* an empty build supports nothing */
	assert_int_equal(mux_nl_resolve("aes128-ctr", "", "", out, sizeof(out), NULL, 0),
			 MUX_NL_EBADNAME);
	assert_int_equal(mux_nl_resolve(NULL, "", "", out, sizeof(out), NULL, 0), MUX_NL_EEMPTY);
}

#define SSH_BASE "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr," \
		 "aes128-gcm@openssh.com,aes256-gcm@openssh.com"

static void test_from_ssh(void **state)
{
	(void)state;
	static const struct {
		const char *ssh;
		int rc;
		const char *out;
	} cases[] = {
		{SSH_BASE, MUX_NL_SAME, ""},
		{"", MUX_NL_SAME, ""},
		{"aes256-ctr", MUX_NL_OK, "aes256-ctr"},
		/* ssh's "-chacha*": the rest, in ssh's order, minus what 1.10 lacks */
		{"aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com",
		 MUX_NL_OK, "aes128-ctr,aes192-ctr,aes256-ctr"},
		/* ssh's "+aes128-cbc" */
		{SSH_BASE ",aes128-cbc", MUX_NL_OK, "aes128-ctr,aes192-ctr,aes256-ctr,aes128-cbc"},
		/* asked for by the user, not in ssh's baseline, not in the build */
		{"aes256-ctr,rijndael-cbc@lysator.liu.se", MUX_NL_EBADNAME,
		 "rijndael-cbc@lysator.liu.se"},
		/* asked for, in ssh's baseline, missing here: nothing usable */
		{"aes256-gcm@openssh.com", MUX_NL_EEMPTY, NULL},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char out[256], bad[64];
		int rc = mux_nl_from_ssh(cases[i].ssh, SSH_BASE, SUP, out, sizeof(out), bad,
					 sizeof(bad));
		if (rc != cases[i].rc)
			fail_msg("case %zu \"%s\": %d, want %d", i, cases[i].ssh, rc, cases[i].rc);
		if (rc == MUX_NL_OK || rc == MUX_NL_SAME)
			assert_string_equal(out, cases[i].out);
		else if (rc == MUX_NL_EBADNAME)
			assert_string_equal(bad, cases[i].out);
	}
}

static void test_wildmatch(void **state)
{
	(void)state;
	static const struct {
		const char *s, *p;
		bool nocase, want;
	} cases[] = {
		{"", "", false, true},       {"", "*", false, true},     {"a", "", false, false},
		{"abc", "a*c", false, true}, {"abc", "a?c", false, true}, {"ac", "a?c", false, false},
		{"ABC", "abc", false, false}, {"ABC", "abc", true, true}, {"abc", "*b*", false, true},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "*a*a*a*a*a*a*a*a*b", false, true},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "*a*a*a*a*a*a*a*a*b", false, false},
		{"abc", "abc*", false, true}, {"abc", "abcd", false, false},
	};
	for (size_t i = 0; i < NELEM(cases); i++)
		if (mux_nl_wildmatch(cases[i].s, strlen(cases[i].s), cases[i].p, strlen(cases[i].p),
				     cases[i].nocase) != cases[i].want)
			fail_msg("case %zu: \"%s\" vs \"%s\"", i, cases[i].s, cases[i].p);
	assert_true(mux_nl_contains("a,bb,c", "bb", 2));
	assert_false(mux_nl_contains("a,bb,c", "b", 1));
	assert_false(mux_nl_contains(NULL, "a", 1));
	assert_false(mux_nl_contains("", "", 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resolve_table),
		cmocka_unit_test(test_resolve_bounds),
		cmocka_unit_test(test_from_ssh),
		cmocka_unit_test(test_wildmatch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
