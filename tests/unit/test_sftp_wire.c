/*
 * Unit tests for the SFTP v3 packet codec (mux/sftp_wire.c): requests
 * encoded byte for byte as the draft lays them out, replies framed when fed
 * one byte at a time, and hostile packets (lengths past the end, huge
 * counts, oversized packets, unknown types) refused without reading
 * outside the packet (ASan build).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mux/sftp_wire.h"

#define T(s) s, sizeof(s) - 1

/* Copy into an exactly-sized heap block so ASan sees any overread. */
static unsigned char *dup_exact(const void *p, size_t n)
{
	unsigned char *d = malloc(n ? n : 1);
	memcpy(d, p, n);
	return d;
}

static void test_encode_open(void **state)
{
	(void)state;
	unsigned char buf[128];
	sfw_out o;
	sfw_attrs a = {.flags = SFW_ATTR_PERMISSIONS, .perm = 0644};
	sfw_out_init(&o, buf, sizeof(buf));
	sfw_begin(&o, SFW_OPEN, 7);
	sfw_put_cstr(&o, "/a");
	sfw_put_u32(&o, SFW_FXF_WRITE | SFW_FXF_CREAT);
	sfw_put_attrs(&o, &a);
	long n = sfw_end(&o);
	static const unsigned char want[] = {
		0, 0, 0, 23, 3, 0, 0, 0, 7,           /* len, OPEN, id */
		0, 0, 0, 2, '/', 'a',                 /* path */
		0, 0, 0, 0x0a,                        /* pflags */
		0, 0, 0, 4, 0, 0, 0x01, 0xa4,         /* attrs: perm 0644 */
	};
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
}

static void test_encode_init_read_u64(void **state)
{
	(void)state;
	unsigned char buf[64];
	sfw_out o;
	sfw_out_init(&o, buf, sizeof(buf));
	sfw_begin(&o, SFW_INIT, 99);
	sfw_put_u32(&o, 3);
	assert_int_equal(sfw_end(&o), 9);
	static const unsigned char init[] = {0, 0, 0, 5, 1, 0, 0, 0, 3};
	assert_memory_equal(buf, init, 9);

	sfw_begin(&o, SFW_READ, 1);
	sfw_put_str(&o, "h", 1);
	sfw_put_u64(&o, 0x123456789aULL); /* > 4 GiB */
	sfw_put_u32(&o, 65536);
	assert_int_equal(sfw_end(&o), 4 + 1 + 4 + 5 + 8 + 4);
	static const unsigned char off[] = {0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a};
	assert_memory_equal(buf + 14, off, 8);
}

static void test_encode_overflow(void **state)
{
	(void)state;
	unsigned char buf[16];
	sfw_out o;
	sfw_out_init(&o, buf, sizeof(buf));
	sfw_begin(&o, SFW_STAT, 1);
	sfw_put_cstr(&o, "/a/very/long/path/that/does/not/fit");
	assert_int_equal(sfw_end(&o), SFW_E_NOSPACE);
}

static void test_frame(void **state)
{
	(void)state;
	static const unsigned char pkt[] = {0, 0, 0, 9, 101, 0, 0, 0, 5, 0, 0, 0, 0, 0xee};
	/* one byte at a time: AGAIN until the 13th byte */
	for (size_t i = 0; i < 13; i++)
		assert_int_equal(sfw_frame(pkt, i, 1024), SFW_E_AGAIN);
	assert_int_equal(sfw_frame(pkt, 13, 1024), 13);
	assert_int_equal(sfw_frame(pkt, 14, 1024), 13);
	assert_int_equal(sfw_frame(pkt, 13, 12), SFW_E_TOOBIG);
	static const unsigned char zero[] = {0, 0, 0, 0};
	assert_int_equal(sfw_frame(zero, 4, 1024), SFW_E_TOOBIG);
	static const unsigned char huge[] = {0xff, 0xff, 0xff, 0xff, 1};
	assert_int_equal(sfw_frame(huge, 5, 256 * 1024), SFW_E_TOOBIG);
}

static void test_status(void **state)
{
	(void)state;
	static const unsigned char pkt[] = {0, 0, 0, 24, 101, 0, 0, 0, 42, 0, 0, 0, 2,
					    0, 0, 0, 7, 'n', 'o', ' ', 'f', 'i', 'l', 'e',
					    0, 0, 0, 0};
	sfw_reply r;
	unsigned char *p = dup_exact(pkt, sizeof(pkt));
	assert_int_equal(sfw_parse_reply(p, sizeof(pkt), &r), SFW_OK);
	assert_int_equal(r.type, SFW_STATUS);
	assert_int_equal(r.id, 42);
	assert_int_equal(r.status, 2);
	assert_int_equal(r.msg_len, 7);
	assert_memory_equal(r.msg, "no file", 7);
	free(p);
	/* v3 servers may stop after the code */
	static const unsigned char bare[] = {0, 0, 0, 9, 101, 0, 0, 0, 1, 0, 0, 0, 1};
	p = dup_exact(bare, sizeof(bare));
	assert_int_equal(sfw_parse_reply(p, sizeof(bare), &r), SFW_OK);
	assert_int_equal(r.status, 1);
	assert_int_equal(r.msg_len, 0);
	free(p);
}

static void test_data_and_hostile_lengths(void **state)
{
	(void)state;
	static const unsigned char ok[] = {0, 0, 0, 12, 103, 0, 0, 0, 3, 0, 0, 0, 3, 'a', 'b', 'c'};
	sfw_reply r;
	unsigned char *p = dup_exact(ok, sizeof(ok));
	assert_int_equal(sfw_parse_reply(p, sizeof(ok), &r), SFW_OK);
	assert_int_equal(r.type, SFW_DATA);
	assert_int_equal(r.data_len, 3);
	assert_memory_equal(r.data, "abc", 3);
	free(p);
	/* a data length past the end of the packet */
	static const unsigned char bad[] = {0, 0, 0, 12, 103, 0, 0, 0, 3, 0x7f, 0xff, 0xff, 0xff,
					    'a', 'b', 'c'};
	p = dup_exact(bad, sizeof(bad));
	assert_int_equal(sfw_parse_reply(p, sizeof(bad), &r), SFW_E_SHORT);
	free(p);
	/* a handle longer than the protocol allows */
	unsigned char h[4 + 1 + 4 + 4 + 300] = {0};
	h[3] = (unsigned char)(sizeof(h) - 4);
	h[2] = (unsigned char)((sizeof(h) - 4) >> 8);
	h[4] = 102;
	h[11] = (unsigned char)(300 >> 8);
	h[12] = (unsigned char)(300 & 0xff);
	p = dup_exact(h, sizeof(h));
	assert_int_equal(sfw_parse_reply(p, sizeof(h), &r), SFW_E_TOOBIG);
	free(p);
	/* truncated everywhere: never OK, never a crash */
	for (size_t n = 0; n < sizeof(ok); n++) {
		p = dup_exact(ok, n);
		assert_int_not_equal(sfw_parse_reply(p, n, &r), SFW_OK);
		free(p);
	}
	/* unknown type */
	static const unsigned char unk[] = {0, 0, 0, 5, 77, 0, 0, 0, 1};
	assert_int_equal(sfw_parse_reply(unk, sizeof(unk), &r), SFW_E_TYPE);
}

static size_t put_name(unsigned char *b, const char *name, uint32_t flags, uint64_t size)
{
	sfw_out o;
	sfw_out_init(&o, b, 256);
	sfw_put_cstr(&o, name);
	sfw_put_cstr(&o, "long");
	sfw_attrs a = {.flags = flags, .size = size, .perm = 0100644, .mtime = 1000, .atime = 1};
	sfw_put_attrs(&o, &a);
	return o.len;
}

static void test_names(void **state)
{
	(void)state;
	unsigned char buf[1024];
	size_t n = 13;
	n += put_name(buf + n, "f\xc3\xa9", SFW_ATTR_SIZE | SFW_ATTR_PERMISSIONS | SFW_ATTR_ACMODTIME,
		      5ULL << 30);
	n += put_name(buf + n, "d", SFW_ATTR_PERMISSIONS, 0);
	buf[0] = (unsigned char)((n - 4) >> 24);
	buf[1] = (unsigned char)((n - 4) >> 16);
	buf[2] = (unsigned char)((n - 4) >> 8);
	buf[3] = (unsigned char)(n - 4);
	buf[4] = 104;
	memset(buf + 5, 0, 4);
	memset(buf + 9, 0, 3);
	buf[12] = 2;
	sfw_reply r;
	unsigned char *p = dup_exact(buf, n);
	assert_int_equal(sfw_parse_reply(p, n, &r), SFW_OK);
	assert_int_equal(r.count, 2);
	sfw_name e;
	assert_int_equal(sfw_name_next(&r.names, &e), SFW_OK);
	assert_int_equal(e.name_len, 3);
	assert_memory_equal(e.name, "f\xc3\xa9", 3);
	assert_true(e.attrs.size == 5ULL << 30);
	assert_int_equal(e.attrs.mtime, 1000);
	assert_int_equal(sfw_name_next(&r.names, &e), SFW_OK);
	assert_int_equal(e.attrs.perm, 0100644);
	assert_int_equal(e.attrs.size, 0);
	/* a third entry is not there */
	assert_int_equal(sfw_name_next(&r.names, &e), SFW_E_SHORT);
	free(p);

	/* a count far beyond what the packet can hold */
	buf[9] = 0x7f;
	p = dup_exact(buf, n);
	assert_int_equal(sfw_parse_reply(p, n, &r), SFW_E_SHORT);
	free(p);
}

static void test_attrs_extended_lie(void **state)
{
	(void)state;
	/* ATTRS reply with EXTENDED flag and a count of 2^31 */
	static const unsigned char pkt[] = {0, 0, 0, 13, 105, 0, 0, 0, 1, 0x80, 0, 0, 0,
					    0x80, 0, 0, 0};
	sfw_reply r;
	unsigned char *p = dup_exact(pkt, sizeof(pkt));
	assert_int_equal(sfw_parse_reply(p, sizeof(pkt), &r), SFW_E_SHORT);
	free(p);
}

static void test_version_extensions(void **state)
{
	(void)state;
	unsigned char buf[256];
	sfw_out o;
	sfw_out_init(&o, buf, sizeof(buf));
	sfw_begin(&o, SFW_VERSION, 0);
	o.len = 5; /* VERSION has no id */
	sfw_put_u32(&o, 3);
	sfw_put_cstr(&o, "posix-rename@openssh.com");
	sfw_put_cstr(&o, "1");
	sfw_put_cstr(&o, "statvfs@openssh.com");
	sfw_put_cstr(&o, "2");
	long n = sfw_end(&o);
	assert_true(n > 0);
	sfw_reply r;
	assert_int_equal(sfw_parse_reply(buf, (size_t)n, &r), SFW_OK);
	assert_int_equal(r.type, SFW_VERSION);
	assert_int_equal(r.version, 3);
	assert_true(sfw_version_has(&r, "posix-rename@openssh.com"));
	assert_true(sfw_version_has(&r, "statvfs@openssh.com"));
	assert_false(sfw_version_has(&r, "posix-rename"));
	assert_false(sfw_version_has(&r, "1"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encode_open),
		cmocka_unit_test(test_encode_init_read_u64),
		cmocka_unit_test(test_encode_overflow),
		cmocka_unit_test(test_frame),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_data_and_hostile_lengths),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_attrs_extended_lie),
		cmocka_unit_test(test_version_extensions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
