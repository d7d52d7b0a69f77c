/*
 * Unit tests for ftpparse/listing.c: the `ls -l` line clients parse, the
 * RFC 3659 facts, and UTC times computed without the C library (checked
 * against known dates, leap days, and times before 1970).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ftpparse/ftpparse.h"

#define T(s) s, sizeof(s) - 1
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void test_time(void **state)
{
	(void)state;
	static const struct {
		int64_t t;
		const char *want;
	} cases[] = {
		{0, "19700101000000"},
		{951782400, "20000229000000"},         /* leap day of a /400 year */
		{1700000000, "20231114221320"},
		{4102444799, "20991231235959"},
		{-1, "19691231235959"},
		{253402300799, "99991231235959"},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char b[20];
		assert_int_equal(fp_format_time(b, sizeof(b), cases[i].t), 14);
		assert_string_equal(b, cases[i].want);
	}
	char b[20];
	assert_int_equal(fp_format_time(b, 14, 0), FP_E_NOSPACE);
	assert_int_equal(fp_format_time(b, sizeof(b), 253402300800), FP_E_RANGE);
}

static void test_ls(void **state)
{
	(void)state;
	char b[512];
	int64_t now = 1700000000; /* 2023-11-14 */
	fp_fileinfo f = {T("report.txt"), true, true, true, true, 1234, 0100644, 1699990000, 0, 0};
	int n = fp_format_ls(b, sizeof(b), &f, now);
	assert_true(n > 0);
	b[n] = '\0';
	assert_string_equal(b, "-rw-r--r-- 1 0        0                1234 Nov 14 19:26 report.txt\r\n");

	fp_fileinfo d = {T("old dir"), true, true, true, true, 4096, 040755, 946684800, 1000, 100};
	n = fp_format_ls(b, sizeof(b), &d, now);
	b[n] = '\0';
	assert_string_equal(b, "drwxr-xr-x 1 1000     100              4096 Jan  1  2000 old dir\r\n");

	/* > 4 GiB, setuid/sticky bits, symlink */
	fp_fileinfo big = {T("big"), true, true, true, false, 5ULL << 30, 0104755, now, 0, 0};
	n = fp_format_ls(b, sizeof(b), &big, now);
	b[n] = '\0';
	assert_non_null(strstr(b, "-rwsr-xr-x"));
	assert_non_null(strstr(b, " 5368709120 "));
	fp_fileinfo st = {T("tmp"), false, true, false, false, 0, 041777, 0, 0, 0};
	n = fp_format_ls(b, sizeof(b), &st, now);
	b[n] = '\0';
	assert_true(strncmp(b, "drwxrwxrwt", 10) == 0);
	fp_fileinfo ln = {T("l"), false, true, false, false, 0, 0120777, 0, 0, 0};
	n = fp_format_ls(b, sizeof(b), &ln, now);
	assert_int_equal(b[0], 'l');
}

static void test_ls_hostile(void **state)
{
	(void)state;
	char b[512];
	fp_fileinfo f = {T("evil\r\n-rw-r--r-- 1 0 0 1 Jan 1 2000 forged"), true, true, true, true,
			 1, 0100644, 0, 0, 0};
	assert_int_equal(fp_format_ls(b, sizeof(b), &f, 0), FP_E_CHARSET);
	assert_int_equal(fp_format_facts(b, sizeof(b), &f, false), FP_E_CHARSET);
	fp_fileinfo e = {T(""), true, true, true, true, 1, 0100644, 0, 0, 0};
	assert_int_equal(fp_format_ls(b, sizeof(b), &e, 0), FP_E_CHARSET);
	/* every capacity short of the line: NOSPACE, never a partial line */
	fp_fileinfo g = {T("good"), true, true, true, true, 1, 0100644, 0, 0, 0};
	int full = fp_format_ls(b, sizeof(b), &g, 0);
	for (int cap = 0; cap < full; cap++)
		assert_int_equal(fp_format_ls(b, (size_t)cap, &g, 0), FP_E_NOSPACE);
	full = fp_format_facts(b, sizeof(b), &g, true);
	for (int cap = 0; cap < full; cap++)
		assert_int_equal(fp_format_facts(b, (size_t)cap, &g, true), FP_E_NOSPACE);
}

static void test_facts(void **state)
{
	(void)state;
	char b[512];
	fp_fileinfo f = {T("caf\xc3\xa9.txt"), true, true, true, true, 5ULL << 30, 0100640,
			 1700000000, 1000, 1000};
	int n = fp_format_facts(b, sizeof(b), &f, false);
	b[n] = '\0';
	assert_string_equal(b, "type=file;size=5368709120;modify=20231114221320;perm=adfrw;"
			       "UNIX.mode=0640;UNIX.uid=1000;UNIX.gid=1000; caf\xc3\xa9.txt\r\n");
	fp_fileinfo d = {T("sub"), true, true, false, false, 4096, 040700, 0, 0, 0};
	n = fp_format_facts(b, sizeof(b), &d, true);
	b[n] = '\0';
	assert_string_equal(b, " type=dir;perm=flcdmpe;UNIX.mode=0700; sub\r\n");
	fp_fileinfo bare = {T("x"), false, false, false, false, 0, 0, 0, 0, 0};
	n = fp_format_facts(b, sizeof(b), &bare, false);
	b[n] = '\0';
	assert_string_equal(b, "type=file;perm=adfrw; x\r\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_ls),
		cmocka_unit_test(test_ls_hostile),
		cmocka_unit_test(test_facts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
