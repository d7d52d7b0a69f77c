/*
 * Unit tests for ftpparse: every public function, table-driven.
 *
 * The framer is checked against itself: a stream fed whole, one byte at a
 * time, through fp_framer_space/commit, and split in two at every position
 * must give the same lines, byte for byte. The parsers get the shapes real
 * servers send and the hostile ones a broken or malicious peer could send.
 * Text arguments carry explicit lengths (T("...")) so that NUL bytes and
 * truncated buffers can be expressed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ftpparse/ftpparse.h"

/* A string literal and its length, NUL bytes included. */
#define T(s) s, sizeof(s) - 1
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- framer helpers ---------------------------------------------------- */

#define MAX_LINES 1024

struct lines {
	char data[1 << 16];
	size_t used;
	size_t len[MAX_LINES];
	size_t text_len[MAX_LINES];
	int n;
	int toolong;
};

static void lines_init(struct lines *c)
{
	memset(c, 0, sizeof(*c));
}

/* Take every complete line out of f, checking each one's shape. */
static void drain(fp_framer *f, struct lines *c)
{
	fp_line l;
	int rc;

	while ((rc = fp_framer_next(f, &l)) != FP_E_AGAIN) {
		if (rc == FP_E_TOOLONG) {
			c->toolong++;
			continue;
		}
		assert_int_equal(rc, FP_OK);
		assert_true(l.len >= 1 && l.len <= FP_LINE_MAX);
		assert_int_equal(l.p[l.len - 1], '\n');
		assert_null(memchr(l.p, '\n', l.len - 1));
		if (l.len >= 2 && l.p[l.len - 2] == '\r')
			assert_int_equal(l.text_len, l.len - 2);
		else
			assert_int_equal(l.text_len, l.len - 1);
		assert_true(c->n < MAX_LINES);
		assert_true(c->used + l.len <= sizeof(c->data));
		memcpy(c->data + c->used, l.p, l.len);
		c->used += l.len;
		c->len[c->n] = l.len;
		c->text_len[c->n] = l.text_len;
		c->n++;
	}
}

/* Feed all of p with fp_framer_feed, draining whenever the framer is full. */
static void feed_all(fp_framer *f, const char *p, size_t n, struct lines *c)
{
	int stuck = 0;

	while (n > 0) {
		size_t k = fp_framer_feed(f, p, n);

		assert_true(k <= n);
		p += k;
		n -= k;
		stuck = k == 0 ? stuck + 1 : 0;
		assert_true(stuck < 2);
		drain(f, c);
		assert_true(fp_framer_pending(f) <= FP_LINE_MAX);
	}
	drain(f, c);
}

/* The same through fp_framer_space/commit, at most chunk bytes a read. */
static void read_all(fp_framer *f, const char *p, size_t n, size_t chunk,
		     struct lines *c)
{
	int stuck = 0;

	while (n > 0) {
		size_t avail;
		char *dst = fp_framer_space(f, &avail);

		assert_true(avail <= FP_LINE_MAX);
		assert_true(dst >= f->buf && dst + avail <= f->buf + FP_LINE_MAX);
		size_t k = n < chunk ? n : chunk;
		if (k > avail)
			k = avail;
		memcpy(dst, p, k);
		fp_framer_commit(f, k);
		p += k;
		n -= k;
		stuck = k == 0 ? stuck + 1 : 0;
		assert_true(stuck < 2);
		drain(f, c);
	}
	drain(f, c);
}

static void assert_same_lines(const struct lines *a, const struct lines *b)
{
	assert_int_equal(a->n, b->n);
	assert_int_equal(a->toolong, b->toolong);
	assert_int_equal(a->used, b->used);
	assert_memory_equal(a->data, b->data, a->used);
	for (int i = 0; i < a->n; i++) {
		assert_int_equal(a->len[i], b->len[i]);
		assert_int_equal(a->text_len[i], b->text_len[i]);
	}
}

/* Streams that end in LF, so that every byte ends up in some line. */
static const struct {
	const char *p;
	size_t n;
	int lines;
} streams[] = {
	{ T("220 ready\r\n"), 1 },
	{ T("211-Features:\r\n MDTM\r\n REST STREAM\r\n SIZE\r\n EPSV\r\n"
	    " UTF8\r\n211 End\r\n227 Entering Passive Mode (10,0,0,1,195,80).\r\n"),
	  8 },
	{ T("a\nb\r\n\n\r\n\r\r\nx\ry\n"), 6 },
	{ T("\xff\xf4\xff\xf2" "ABOR\r\n\0\0\n\xc3\xa9t\xc3\xa9\r\n"), 3 },
	{ T("230-Welcome\r\n230-still\r\n123 other\r\n230 done\r\n"
	    "150 Opening\r\n226 Transfer complete\r\n"),
	  6 },
};

/* ---- framer tests ------------------------------------------------------ */

static void test_framer_basic(void **state)
{
	(void)state;
	fp_framer f;
	fp_line l;

	fp_framer_init(&f);
	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);
	assert_int_equal(fp_framer_feed(&f, T("220 a\r\n230 b\n")), 13);
	assert_int_equal(fp_framer_pending(&f), 13);

	assert_int_equal(fp_framer_next(&f, &l), FP_OK);
	assert_int_equal(l.len, 7);
	assert_int_equal(l.text_len, 5);
	assert_memory_equal(l.p, "220 a\r\n", 7);
	assert_int_equal(fp_framer_pending(&f), 6);

	assert_int_equal(fp_framer_next(&f, &l), FP_OK);
	assert_int_equal(l.len, 6);
	assert_int_equal(l.text_len, 5);
	assert_memory_equal(l.p, "230 b\n", 6);

	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);
	assert_int_equal(fp_framer_pending(&f), 0);
}

static void test_framer_partial(void **state)
{
	(void)state;
	fp_framer f;
	fp_line l;

	fp_framer_init(&f);
	fp_framer_feed(&f, T("22"));
	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);
	assert_int_equal(fp_framer_pending(&f), 2);
	fp_framer_feed(&f, T("0 x\r"));
	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);
	assert_int_equal(fp_framer_pending(&f), 6);
	/* The CR alone is not a terminator yet. */
	fp_framer_feed(&f, T("\n2"));
	assert_int_equal(fp_framer_next(&f, &l), FP_OK);
	assert_int_equal(l.len, 7);
	assert_int_equal(l.text_len, 5);
	assert_memory_equal(l.p, "220 x\r\n", 7);
	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);
	assert_int_equal(fp_framer_pending(&f), 1);
}

static void test_framer_bytes_exact(void **state)
{
	(void)state;
	static const char in[] = "\xff\xf4\xff\xf2" "ABOR\0\x80\r\r\n";
	fp_framer f;
	fp_line l;

	fp_framer_init(&f);
	fp_framer_feed(&f, in, sizeof(in) - 1);
	assert_int_equal(fp_framer_next(&f, &l), FP_OK);
	assert_int_equal(l.len, sizeof(in) - 1);
	assert_int_equal(l.text_len, sizeof(in) - 3);
	assert_memory_equal(l.p, in, sizeof(in) - 1);
}

static void test_framer_one_byte_at_a_time(void **state)
{
	(void)state;
	for (size_t s = 0; s < NELEM(streams); s++) {
		fp_framer f;
		struct lines whole, bytes, reads;

		lines_init(&whole);
		fp_framer_init(&f);
		feed_all(&f, streams[s].p, streams[s].n, &whole);
		assert_int_equal(whole.n, streams[s].lines);
		assert_int_equal(whole.toolong, 0);
		assert_int_equal(whole.used, streams[s].n);
		assert_memory_equal(whole.data, streams[s].p, streams[s].n);
		assert_int_equal(fp_framer_pending(&f), 0);

		lines_init(&bytes);
		fp_framer_init(&f);
		for (size_t i = 0; i < streams[s].n; i++)
			feed_all(&f, streams[s].p + i, 1, &bytes);
		assert_same_lines(&whole, &bytes);

		lines_init(&reads);
		fp_framer_init(&f);
		read_all(&f, streams[s].p, streams[s].n, 1, &reads);
		assert_same_lines(&whole, &reads);
	}
}

static void test_framer_every_split(void **state)
{
	(void)state;
	for (size_t s = 0; s < NELEM(streams); s++) {
		fp_framer f;
		struct lines whole;

		lines_init(&whole);
		fp_framer_init(&f);
		feed_all(&f, streams[s].p, streams[s].n, &whole);

		for (size_t cut = 0; cut <= streams[s].n; cut++) {
			struct lines two;

			lines_init(&two);
			fp_framer_init(&f);
			feed_all(&f, streams[s].p, cut, &two);
			feed_all(&f, streams[s].p + cut, streams[s].n - cut, &two);
			assert_same_lines(&whole, &two);
		}
	}
}

static void test_framer_odd_chunks(void **state)
{
	(void)state;
	static char big[40000];
	size_t n = 0;
	int want = 0;

	/* Lines of every length from 1 to ~280 bytes, CRLF and LF mixed. */
	while (n + 300 < sizeof(big)) {
		size_t k = (size_t)(want % 280);

		memset(big + n, 'a' + want % 26, k);
		n += k;
		if (want % 3 == 0)
			big[n++] = '\r';
		big[n++] = '\n';
		want++;
	}
	static const size_t chunks[] = { 1, 2, 3, 7, 64, 1000, 4095, 8191, 8192 };
	const struct lines *ref;
	static struct lines got[NELEM(chunks) + 1];
	fp_framer f;

	lines_init(&got[0]);
	fp_framer_init(&f);
	for (size_t i = 0; i < n; i += 100)
		feed_all(&f, big + i, n - i < 100 ? n - i : 100, &got[0]);
	ref = &got[0];
	assert_int_equal(ref->n, want);
	assert_int_equal(ref->used, n);
	assert_memory_equal(ref->data, big, n);
	for (size_t c = 0; c < NELEM(chunks); c++) {
		lines_init(&got[c + 1]);
		fp_framer_init(&f);
		read_all(&f, big, n, chunks[c], &got[c + 1]);
		assert_same_lines(ref, &got[c + 1]);
	}
}

static void test_framer_toolong_64k(void **state)
{
	(void)state;
	static char junk[64 * 1024];
	fp_framer f;
	struct lines c;

	memset(junk, 'A', sizeof(junk));
	lines_init(&c);
	fp_framer_init(&f);
	feed_all(&f, junk, sizeof(junk), &c);
	assert_int_equal(c.toolong, 1);
	assert_int_equal(c.n, 0);
	assert_true(fp_framer_pending(&f) < FP_LINE_MAX);

	/* More of the same line: still one error for it. */
	feed_all(&f, junk, 1000, &c);
	assert_int_equal(c.toolong, 1);

	/* Its LF ends it, unseen; the next line is framed normally. */
	feed_all(&f, T("tail\r\n220 ok\r\n"), &c);
	assert_int_equal(c.toolong, 1);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.len[0], 8);
	assert_memory_equal(c.data, "220 ok\r\n", 8);
	assert_int_equal(fp_framer_pending(&f), 0);
}

static void test_framer_toolong_one_chunk(void **state)
{
	(void)state;
	static char in[3 * FP_LINE_MAX];
	fp_framer f;
	struct lines c;
	size_t n = 0;

	/* A good line, an over-long one, another over-long one, a good line,
	 * all in one buffer. */
	memcpy(in + n, "220 a\r\n", 7);
	n += 7;
	memset(in + n, 'x', FP_LINE_MAX + 10);
	n += FP_LINE_MAX + 10;
	in[n++] = '\n';
	memset(in + n, 'y', FP_LINE_MAX);
	n += FP_LINE_MAX;
	in[n++] = '\n';
	memcpy(in + n, "230 b\n", 6);
	n += 6;

	for (size_t chunk = 1; chunk <= FP_LINE_MAX * 2; chunk = chunk * 3 + 1) {
		lines_init(&c);
		fp_framer_init(&f);
		read_all(&f, in, n, chunk, &c);
		assert_int_equal(c.toolong, 2);
		assert_int_equal(c.n, 2);
		assert_int_equal(c.used, 13);
		assert_memory_equal(c.data, "220 a\r\n230 b\n", 13);
	}
}

static void test_framer_limits(void **state)
{
	(void)state;
	static char in[FP_LINE_MAX + 2];
	fp_framer f;
	struct lines c;

	/* Exactly FP_LINE_MAX bytes, LF included: accepted. */
	memset(in, 'a', sizeof(in));
	in[FP_LINE_MAX - 1] = '\n';
	lines_init(&c);
	fp_framer_init(&f);
	feed_all(&f, in, FP_LINE_MAX, &c);
	assert_int_equal(c.toolong, 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.len[0], FP_LINE_MAX);
	assert_int_equal(c.text_len[0], FP_LINE_MAX - 1);

	/* One more byte before the LF: refused. */
	memset(in, 'a', sizeof(in));
	in[FP_LINE_MAX] = '\n';
	lines_init(&c);
	fp_framer_init(&f);
	feed_all(&f, in, FP_LINE_MAX + 1, &c);
	assert_int_equal(c.toolong, 1);
	assert_int_equal(c.n, 0);
	assert_int_equal(fp_framer_pending(&f), 0);

	/* The CR counts: FP_LINE_MAX - 1 bytes and CR LF is too long. */
	memset(in, 'a', sizeof(in));
	in[FP_LINE_MAX - 1] = '\r';
	in[FP_LINE_MAX] = '\n';
	lines_init(&c);
	fp_framer_init(&f);
	feed_all(&f, in, FP_LINE_MAX + 1, &c);
	assert_int_equal(c.toolong, 1);
	assert_int_equal(c.n, 0);
}

static void test_framer_feed_when_full(void **state)
{
	(void)state;
	static char in[FP_LINE_MAX + 100];
	fp_framer f;
	fp_line l;

	for (size_t i = 0; i < sizeof(in); i += 2) {
		in[i] = 'x';
		in[i + 1] = '\n';
	}
	fp_framer_init(&f);
	/* Complete lines fill the buffer: feed takes what fits. */
	assert_int_equal(fp_framer_feed(&f, in, sizeof(in)), FP_LINE_MAX);
	assert_int_equal(fp_framer_feed(&f, in, 2), 0);
	size_t avail = 99;
	(void)fp_framer_space(&f, &avail);
	assert_int_equal(avail, 0);

	int got = 0;
	while (fp_framer_next(&f, &l) == FP_OK) {
		assert_int_equal(l.len, 2);
		got++;
	}
	assert_int_equal(got, FP_LINE_MAX / 2);
	assert_int_equal(fp_framer_feed(&f, in + FP_LINE_MAX, 100), 100);
	got = 0;
	while (fp_framer_next(&f, &l) == FP_OK)
		got++;
	assert_int_equal(got, 50);
}

static void test_framer_space_commit(void **state)
{
	(void)state;
	fp_framer f;
	fp_line l;
	size_t avail;
	char *p;

	fp_framer_init(&f);
	p = fp_framer_space(&f, &avail);
	assert_ptr_equal(p, f.buf);
	assert_int_equal(avail, FP_LINE_MAX);
	memcpy(p, "a\nbc", 4);
	fp_framer_commit(&f, 4);
	assert_int_equal(fp_framer_next(&f, &l), FP_OK);
	assert_int_equal(l.len, 2);
	assert_ptr_equal(l.p, f.buf);
	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);

	/* Only the partial "bc" is left: it moves to the front. */
	p = fp_framer_space(&f, &avail);
	assert_ptr_equal(p, f.buf + 2);
	assert_int_equal(avail, FP_LINE_MAX - 2);
	assert_memory_equal(f.buf, "bc", 2);
	memcpy(p, "d\r\n", 3);
	fp_framer_commit(&f, 3);
	assert_int_equal(fp_framer_pending(&f), 5);
	assert_int_equal(fp_framer_next(&f, &l), FP_OK);
	assert_int_equal(l.len, 5);
	assert_int_equal(l.text_len, 3);
	assert_memory_equal(l.p, "bcd\r\n", 5);

	/* Everything taken: the whole buffer is free again. */
	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);
	p = fp_framer_space(&f, &avail);
	assert_ptr_equal(p, f.buf);
	assert_int_equal(avail, FP_LINE_MAX);

	/* A complete line not yet taken is not moved (it may be in use). */
	memcpy(p, "x\ny", 3);
	fp_framer_commit(&f, 3);
	p = fp_framer_space(&f, &avail);
	assert_ptr_equal(p, f.buf + 3);
	assert_int_equal(avail, FP_LINE_MAX - 3);
}

static void test_framer_space_full_line(void **state)
{
	(void)state;
	fp_framer f;
	fp_line l;
	size_t avail;
	char *p;

	/* A line that fills the buffer: space is 0 until next() drops it. */
	fp_framer_init(&f);
	p = fp_framer_space(&f, &avail);
	memset(p, 'z', avail);
	fp_framer_commit(&f, avail);
	(void)fp_framer_space(&f, &avail);
	assert_int_equal(avail, 0);
	assert_int_equal(fp_framer_next(&f, &l), FP_E_TOOLONG);
	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);
	p = fp_framer_space(&f, &avail);
	assert_int_equal(avail, FP_LINE_MAX);
	memcpy(p, "zz\n331 pw\r\n", 11);
	fp_framer_commit(&f, 11);
	assert_int_equal(fp_framer_next(&f, &l), FP_OK);
	assert_int_equal(l.len, 8);
	assert_memory_equal(l.p, "331 pw\r\n", 8);
	assert_int_equal(fp_framer_next(&f, &l), FP_E_AGAIN);
}

/* ---- replies ----------------------------------------------------------- */

struct reply_step {
	const char *line;
	int rc;
	int code;
	bool first;
	bool last;
};

static const struct {
	const char *name;
	struct reply_step steps[12]; /* ends at a NULL line */
} reply_cases[] = {
	{ "single", { { "220 Service ready", FP_OK, 220, true, true } } },
	{ "code only", { { "220", FP_OK, 220, true, true } } },
	{ "code with CRLF", { { "221\r\n", FP_OK, 221, true, true } } },
	{ "vsftpd FEAT",
	  { { "211-Features:", FP_OK, 211, true, false },
	    { " EPRT", FP_OK, 211, false, false },
	    { " EPSV", FP_OK, 211, false, false },
	    { " MDTM", FP_OK, 211, false, false },
	    { " PASV", FP_OK, 211, false, false },
	    { " REST STREAM", FP_OK, 211, false, false },
	    { " UTF8", FP_OK, 211, false, false },
	    { "211 End", FP_OK, 211, false, true },
	    { "200 Always in UTF8 mode.", FP_OK, 200, true, true } } },
	{ "tricky middle lines",
	  { { "230-Welcome", FP_OK, 230, true, false },
	    { "230-still welcome", FP_OK, 230, false, false },
	    { "123 other digits", FP_OK, 230, false, false },
	    { "220 another code", FP_OK, 230, false, false },
	    { "230x not a close", FP_OK, 230, false, false },
	    { "2301 not a close", FP_OK, 230, false, false },
	    { " 230 indented", FP_OK, 230, false, false },
	    { "", FP_OK, 230, false, false },
	    { "230 Login successful.", FP_OK, 230, false, true } } },
	{ "closed by code alone",
	  { { "250-a", FP_OK, 250, true, false },
	    { "250", FP_OK, 250, false, true },
	    { "226 next", FP_OK, 226, true, true } } },
	{ "odd bytes in the middle",
	  { { "214-Help", FP_OK, 214, true, false },
	    { "\xff\xf4\x80\x01", FP_OK, 214, false, false },
	    { "21", FP_OK, 214, false, false },
	    { "214 ok", FP_OK, 214, false, true } } },
	{ "garbage resets",
	  { { "hello", FP_E_SYNTAX, 0, false, false },
	    { "220 ok", FP_OK, 220, true, true } } },
	{ "bad codes",
	  { { "600 x", FP_E_SYNTAX, 0, false, false },
	    { "099 x", FP_E_SYNTAX, 0, false, false },
	    { "160 x", FP_E_SYNTAX, 0, false, false },
	    { "22a x", FP_E_SYNTAX, 0, false, false },
	    { "220x", FP_E_SYNTAX, 0, false, false },
	    { "22", FP_E_SYNTAX, 0, false, false },
	    { "", FP_E_SYNTAX, 0, false, false },
	    { " 220 x", FP_E_SYNTAX, 0, false, false },
	    { "559 ok", FP_OK, 559, true, true },
	    { "100 ok", FP_OK, 100, true, true } } },
};

static void test_reply_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(reply_cases); i++) {
		fp_reply r;

		fp_reply_init(&r);
		for (const struct reply_step *s = reply_cases[i].steps; s->line; s++) {
			fp_reply_line out;
			int rc = fp_reply_feed(&r, s->line, strlen(s->line), &out);

			if (rc != s->rc || (rc == FP_OK && (out.code != s->code ||
							     out.first != s->first ||
							     out.last != s->last)))
				fail_msg("%s: line \"%s\": rc %d code %d first %d last %d",
					 reply_cases[i].name, s->line, rc, out.code,
					 out.first, out.last);
		}
		assert_int_equal(r.code, 0);
		assert_false(r.in_multi);
	}
}

static void test_reply_state(void **state)
{
	(void)state;
	fp_reply r;
	fp_reply_line out;

	fp_reply_init(&r);
	assert_int_equal(r.code, 0);
	assert_int_equal(fp_reply_feed(&r, T("150-Opening"), &out), FP_OK);
	assert_int_equal(r.code, 150);
	assert_true(r.in_multi);
	assert_int_equal(fp_reply_feed(&r, T("150-more"), &out), FP_OK);
	assert_int_equal(r.code, 150);
	assert_true(r.in_multi);
	/* Only len bytes are read: "150 x" cut to "15" is a middle line. */
	assert_int_equal(fp_reply_feed(&r, "150 x", 2, &out), FP_OK);
	assert_false(out.last);
	assert_int_equal(fp_reply_feed(&r, T("150 done"), &out), FP_OK);
	assert_true(out.last);
	assert_int_equal(r.code, 0);
	assert_false(r.in_multi);
	/* A failed opening resets the tracker. */
	assert_int_equal(fp_reply_feed(&r, T("\0" "20 x"), &out), FP_E_SYNTAX);
	assert_int_equal(r.code, 0);
	assert_false(r.in_multi);
}

/* ---- commands ---------------------------------------------------------- */

static const struct {
	const char *text;
	size_t len;
	int rc;
	enum fp_verb verb;
	const char *name;
	size_t arg_off; /* where arg points, from text */
	const char *arg;
} cmd_cases[] = {
	{ T("USER anonymous\r\n"), FP_OK, FP_CMD_USER, "USER", 5, "anonymous" },
	{ T("user bob"), FP_OK, FP_CMD_USER, "USER", 5, "bob" },
	{ T("PASS secret word\n"), FP_OK, FP_CMD_PASS, "PASS", 5, "secret word" },
	{ T("PASS "), FP_OK, FP_CMD_PASS, "PASS", 5, "" },
	{ T("PaSv"), FP_OK, FP_CMD_PASV, "PASV", 4, "" },
	{ T("PASV\r\n"), FP_OK, FP_CMD_PASV, "PASV", 4, "" },
	{ T("EPSV ALL\r\n"), FP_OK, FP_CMD_EPSV, "EPSV", 5, "ALL" },
	{ T("PORT 127,0,0,1,4,1\r\n"), FP_OK, FP_CMD_PORT, "PORT", 5, "127,0,0,1,4,1" },
	{ T("EPRT |1|132.235.1.2|6275|"), FP_OK, FP_CMD_EPRT, "EPRT", 5,
	  "|1|132.235.1.2|6275|" },
	{ T("ccc\n"), FP_OK, FP_CMD_CCC, "CCC", 3, "" },
	{ T("AUTH TLS"), FP_OK, FP_CMD_AUTH, "AUTH", 5, "TLS" },
	{ T("NOOP"), FP_OK, FP_CMD_OTHER, "NOOP", 4, "" },
	{ T("XPWD\r\n"), FP_OK, FP_CMD_OTHER, "XPWD", 4, "" },
	{ T("SITE CHMOD 755 x\r\n"), FP_OK, FP_CMD_OTHER, "SITE", 5, "CHMOD 755 x" },
	{ T("RETR  two spaces"), FP_OK, FP_CMD_RETR, "RETR", 5, " two spaces" },
	{ T("STOR name with spaces.txt \r\n"), FP_OK, FP_CMD_STOR, "STOR", 5,
	  "name with spaces.txt " },
	{ T("STOR a\rb\r\n"), FP_OK, FP_CMD_STOR, "STOR", 5, "a\rb" },
	{ T("CWD \xc3\xa9t\xc3\xa9"), FP_OK, FP_CMD_OTHER, "CWD", 4, "\xc3\xa9t\xc3\xa9" },
	/* Telnet before ABOR: IP + DM, DM lost to urgent data, negotiation. */
	{ T("\xff\xf4\xff\xf2" "ABOR\r\n"), FP_OK, FP_CMD_ABOR, "ABOR", 8, "" },
	{ T("\xff\xf4\xff" "ABOR\r\n"), FP_OK, FP_CMD_ABOR, "ABOR", 7, "" },
	{ T("\xff\xf4" "abor"), FP_OK, FP_CMD_ABOR, "ABOR", 6, "" },
	{ T("\xff\xfb\x01" "QUIT"), FP_OK, FP_CMD_QUIT, "QUIT", 7, "" },
	{ T("\xff\xff" "ABOR"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("\xff"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("\xff\xf4"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T(""), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("\r\n"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("AB"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("AB x"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("ABCDE"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("RETRfile"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("RET1 x"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T(" USER x"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("USER\tbob"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("US\0R x"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("\xc3\x9cSER x"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	{ T("[AB] x"), FP_E_SYNTAX, FP_CMD_OTHER, "", 0, NULL },
	/* len bounds the parse: "QUITE" cut to 4 bytes is QUIT. */
	{ "QUITE", 4, FP_OK, FP_CMD_QUIT, "QUIT", 4, "" },
};

static void test_cmd_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(cmd_cases); i++) {
		fp_cmd c;
		int rc = fp_cmd_parse(cmd_cases[i].text, cmd_cases[i].len, &c);

		if (rc != cmd_cases[i].rc)
			fail_msg("case %zu: rc %d, want %d", i, rc, cmd_cases[i].rc);
		assert_int_equal(c.verb, cmd_cases[i].verb);
		assert_string_equal(c.name, cmd_cases[i].name);
		if (rc != FP_OK) {
			assert_int_equal(c.arg_len, 0);
			continue;
		}
		assert_ptr_equal(c.arg, cmd_cases[i].text + cmd_cases[i].arg_off);
		assert_int_equal(c.arg_len, strlen(cmd_cases[i].arg));
		assert_memory_equal(c.arg, cmd_cases[i].arg, c.arg_len);
	}
}

static void test_cmd_all_verbs(void **state)
{
	(void)state;
	static const struct {
		const char *lower;
		enum fp_verb verb;
	} v[] = {
		{ "user", FP_CMD_USER }, { "pass", FP_CMD_PASS }, { "acct", FP_CMD_ACCT },
		{ "pasv", FP_CMD_PASV }, { "epsv", FP_CMD_EPSV }, { "port", FP_CMD_PORT },
		{ "eprt", FP_CMD_EPRT }, { "lprt", FP_CMD_LPRT }, { "lpsv", FP_CMD_LPSV },
		{ "auth", FP_CMD_AUTH }, { "retr", FP_CMD_RETR }, { "stor", FP_CMD_STOR },
		{ "stou", FP_CMD_STOU }, { "appe", FP_CMD_APPE }, { "list", FP_CMD_LIST },
		{ "nlst", FP_CMD_NLST }, { "mlsd", FP_CMD_MLSD }, { "abor", FP_CMD_ABOR },
		{ "quit", FP_CMD_QUIT }, { "feat", FP_CMD_FEAT }, { "rein", FP_CMD_REIN },
		{ "pbsz", FP_CMD_PBSZ }, { "prot", FP_CMD_PROT }, { "ccc", FP_CMD_CCC },
		{ "mlst", FP_CMD_OTHER }, { "size", FP_CMD_OTHER }, { "cdup", FP_CMD_OTHER },
		{ "opts", FP_CMD_OTHER }, { "type", FP_CMD_OTHER }, { "pwd", FP_CMD_OTHER },
		{ "usr", FP_CMD_OTHER }, { "pas", FP_CMD_OTHER },
	};
	for (size_t i = 0; i < NELEM(v); i++) {
		char line[16], upper[5];
		size_t n = strlen(v[i].lower);
		fp_cmd c;

		for (size_t k = 0; k <= n; k++)
			upper[k] = (char)(v[i].lower[k] >= 'a' ? v[i].lower[k] - 32 : v[i].lower[k]);
		snprintf(line, sizeof(line), "%s x\r\n", v[i].lower);
		assert_int_equal(fp_cmd_parse(line, strlen(line), &c), FP_OK);
		assert_int_equal(c.verb, v[i].verb);
		assert_string_equal(c.name, upper);
		assert_int_equal(c.arg_len, 1);
		assert_int_equal(c.arg[0], 'x');
		/* Upper case means the same. */
		snprintf(line, sizeof(line), "%s", upper);
		assert_int_equal(fp_cmd_parse(line, strlen(line), &c), FP_OK);
		assert_int_equal(c.verb, v[i].verb);
	}
}

/* ---- 227 / PORT -------------------------------------------------------- */

struct hp_case {
	const char *text;
	size_t len;
	int rc;
	uint8_t ip[4];
	uint16_t port;
};

static const struct hp_case pasv_cases[] = {
	{ T("227 Entering Passive Mode (192,168,1,2,19,137)."), FP_OK, { 192, 168, 1, 2 }, 5001 },
	{ T("227 Entering Passive Mode 10,0,0,1,4,0"), FP_OK, { 10, 0, 0, 1 }, 1024 },
	{ T("227 =127,0,0,1,200,10"), FP_OK, { 127, 0, 0, 1 }, 51210 },
	{ T("227 passively listen to 127,0,0,1,39,16"), FP_OK, { 127, 0, 0, 1 }, 10000 },
	{ T("227 Entering Passive Mode (127, 0, 0, 1, 195, 80)"), FP_OK, { 127, 0, 0, 1 }, 50000 },
	{ T("227 Entering Passive Mode (127 ,0 , 0,1  ,195,   80)"), FP_OK, { 127, 0, 0, 1 }, 50000 },
	{ T("227 Entering Passive Mode (010,000,000,001,004,001)"), FP_OK, { 10, 0, 0, 1 }, 1025 },
	{ T("227 Entering Passive Mode (255,255,255,255,255,255)."), FP_OK, { 255, 255, 255, 255 }, 65535 },
	{ T("227 OK (0,0,0,0,0,1)"), FP_OK, { 0, 0, 0, 0 }, 1 },
	{ T("227-Entering Passive Mode (1,2,3,4,0,1)"), FP_OK, { 1, 2, 3, 4 }, 1 },
	{ T("227 Entering Passive Mode (1,2,3,4,5,6"), FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ T("227 Entering Passive Mode (1,2,3,4,5,6).\r\n"), FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ T("227 Entering Passive Mode (1,2,3,4,5,6) 7,8"), FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ T("227 Passiver Modus \xc3\xbc (1,2,3,4,5,6)"), FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ T("227 \0\0 (1,2,3,4,5,6)"), FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ T("Entering Passive Mode (1,2,3,4,5,6)"), FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ T("192,168,0,1,4,1"), FP_OK, { 192, 168, 0, 1 }, 1025 },
	{ T("227"), FP_E_SYNTAX, { 0 }, 0 },
	{ T(""), FP_E_SYNTAX, { 0 }, 0 },
	{ T("227 Entering Passive Mode"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,5)"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,,5,6)"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,5,x)"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1;2;3;4;5;6)"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1.2.3.4:1286)"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,5 6)"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,\0,5,6)"), FP_E_CHARSET, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,\xff" "4,5,6)"), FP_E_CHARSET, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4\0,5,6)"), FP_E_CHARSET, { 0 }, 0 },
	{ T("227 Entering Passive Mode (256,0,0,1,4,1)"), FP_E_RANGE, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,256,1)"), FP_E_RANGE, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,1,256)"), FP_E_RANGE, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,5,1234)"), FP_E_RANGE, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,0,0)"), FP_E_RANGE, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,000,0000)"), FP_E_RANGE, { 0 }, 0 },
	{ T("227 Entering Passive Mode (99999999999999999999,0,0,1,4,1)"), FP_E_RANGE, { 0 }, 0 },
	{ T("227 Entering Passive Mode (1,2,3,4,5,99999999999999999999999999999999)"),
	  FP_E_RANGE, { 0 }, 0 },
	{ T("227 Entering Passive Mode (4294967296,0,0,1,4,1)"), FP_E_RANGE, { 0 }, 0 },
	/* Only len bytes count: the same text cut short. */
	{ "227 (1,2,3,4,5,6)", 15, FP_E_SYNTAX, { 0 }, 0 },
	{ "227 (1,2,3,4,5,6)", 16, FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ "227 (1,2,3,4,5,67)", 16, FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ "227 (1,2,3,4,5,6)", 3, FP_E_SYNTAX, { 0 }, 0 },
};

static void check_hp_cases(const struct hp_case *t, size_t n,
			   int (*parse)(const char *, size_t, fp_hostport *))
{
	for (size_t i = 0; i < n; i++) {
		fp_hostport hp;

		memset(&hp, 0x5a, sizeof(hp));
		int rc = parse(t[i].text, t[i].len, &hp);
		if (rc != t[i].rc)
			fail_msg("case %zu \"%s\": rc %d (%s), want %d", i, t[i].text, rc,
				 fp_strerror(rc), t[i].rc);
		if (rc == FP_OK) {
			assert_memory_equal(hp.ip, t[i].ip, 4);
			assert_int_equal(hp.port, t[i].port);
		} else {
			/* Nothing half-parsed is left behind. */
			assert_int_equal(hp.port, 0);
			assert_int_equal(hp.ip[0] | hp.ip[1] | hp.ip[2] | hp.ip[3], 0);
		}
	}
}

static void test_parse_227(void **state)
{
	(void)state;
	check_hp_cases(pasv_cases, NELEM(pasv_cases), fp_parse_227);
}

static void test_parse_227_long_digits(void **state)
{
	(void)state;
	/* A hundred thousand digits: saturates, never overflows. */
	static char text[100100];
	size_t n = 0;

	memcpy(text, "227 (", 5);
	n = 5;
	memset(text + n, '9', 100000);
	n += 100000;
	memcpy(text + n, ",1,1,1,1,1)", 11);
	n += 11;
	fp_hostport hp;
	assert_int_equal(fp_parse_227(text, n, &hp), FP_E_RANGE);

	/* Leading zeros are only zeros. */
	n = 5;
	memset(text + n, '0', 100000);
	n += 100000;
	memcpy(text + n, "7,1,1,1,1,1)", 12);
	n += 12;
	assert_int_equal(fp_parse_227(text, n, &hp), FP_OK);
	assert_int_equal(hp.ip[0], 7);
	assert_int_equal(hp.port, 257);
}

static const struct hp_case port_cases[] = {
	{ T("127,0,0,1,4,1"), FP_OK, { 127, 0, 0, 1 }, 1025 },
	{ T("132,235,1,2,24,131"), FP_OK, { 132, 235, 1, 2 }, 6275 },
	{ T(" 10,0,0,1,0,21 "), FP_OK, { 10, 0, 0, 1 }, 21 },
	{ T("10,0,0,1,0,21\r\n"), FP_OK, { 10, 0, 0, 1 }, 21 },
	{ T("1, 2, 3, 4, 5, 6"), FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ T("001,002,003,004,005,006"), FP_OK, { 1, 2, 3, 4 }, 1286 },
	{ T(""), FP_E_SYNTAX, { 0 }, 0 },
	{ T("1,2,3,4,5"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("1,2,3,4,5,6,7"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("1,2,3,4,5,6x"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("(1,2,3,4,5,6)"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("a,b,c,d,e,f"), FP_E_SYNTAX, { 0 }, 0 },
	{ T("1,2,3,4,5,6\0"), FP_E_CHARSET, { 0 }, 0 },
	{ T("\x80" "1,2,3,4,5,6"), FP_E_CHARSET, { 0 }, 0 },
	{ T("256,0,0,1,4,1"), FP_E_RANGE, { 0 }, 0 },
	{ T("1,2,3,4,0,0"), FP_E_RANGE, { 0 }, 0 },
	{ T("99999999999999999999,1,1,1,1,1"), FP_E_RANGE, { 0 }, 0 },
	{ "1,2,3,4,5,6", 10, FP_E_SYNTAX, { 0 }, 0 },
};

static void test_parse_port(void **state)
{
	(void)state;
	check_hp_cases(port_cases, NELEM(port_cases), fp_parse_port);
}

/* ---- 229 ---------------------------------------------------------------- */

static const struct {
	const char *text;
	size_t len;
	int rc;
	uint16_t port;
} epsv_cases[] = {
	{ T("229 Entering Extended Passive Mode (|||6446|)"), FP_OK, 6446 },
	{ T("229 Entering Extended Passive Mode (|||6446|)\r\n"), FP_OK, 6446 },
	{ T("229 Extended Passive mode OK (|||50000|)."), FP_OK, 50000 },
	{ T("229 Entering Extended Passive Mode (!!!6446!)"), FP_OK, 6446 },
	{ T("229 Entering Extended Passive Mode (###1#)"), FP_OK, 1 },
	{ T("229 Entering Extended Passive Mode (~~~65535~)"), FP_OK, 65535 },
	{ T("229 Entering Extended Passive Mode ()))21))"), FP_OK, 21 },
	{ T("(|||00021|)"), FP_OK, 21 },
	{ T("229 Entering Extended Passive Mode (|||6446!)"), FP_E_DELIM, 0 },
	{ T("229 Entering Extended Passive Mode (|!|6446|)"), FP_E_DELIM, 0 },
	{ T("229 Entering Extended Passive Mode (||!6446|)"), FP_E_DELIM, 0 },
	{ T("229 Entering Extended Passive Mode (!||6446|)"), FP_E_DELIM, 0 },
	{ T("229 Entering Extended Passive Mode (   6446 )"), FP_E_DELIM, 0 },
	{ T("229 Entering Extended Passive Mode (1116441)"), FP_E_DELIM, 0 },
	{ T("229 Entering Extended Passive Mode (|1|::1|6446|)"), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode (||1.2.3.4|6446|)"), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode (||||)"), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode |||6446|"), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode (|||6446|"), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode (|||6446"), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode (|||6446|x"), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode (|||"), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode ("), FP_E_SYNTAX, 0 },
	{ T(""), FP_E_SYNTAX, 0 },
	{ T("229 Entering Extended Passive Mode (|||0|)"), FP_E_RANGE, 0 },
	{ T("229 Entering Extended Passive Mode (|||65536|)"), FP_E_RANGE, 0 },
	{ T("229 Entering Extended Passive Mode (|||99999999999999999999|)"), FP_E_RANGE, 0 },
	{ T("229 Entering Extended Passive Mode (\0\0\0" "6446\0)"), FP_E_CHARSET, 0 },
	{ T("229 Entering Extended Passive Mode (|||64\xc3" "46|)"), FP_E_CHARSET, 0 },
	{ T("229 Entering Extended Passive Mode (\xa6\xa6\xa6" "6446\xa6)"), FP_E_CHARSET, 0 },
	/* Only len bytes count. */
	{ "(|||6446|)", 9, FP_E_SYNTAX, 0 },
	{ "(|||6446|)", 10, FP_OK, 6446 },
};

static void test_parse_229(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(epsv_cases); i++) {
		uint16_t port = 777;
		int rc = fp_parse_229(epsv_cases[i].text, epsv_cases[i].len, &port);

		if (rc != epsv_cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d (%s), want %d", i,
				 epsv_cases[i].text, rc, fp_strerror(rc), epsv_cases[i].rc);
		assert_int_equal(port, epsv_cases[i].port);
	}
}

/* ---- EPRT --------------------------------------------------------------- */

static const struct {
	const char *text;
	size_t len;
	size_t cap;
	int rc;
	int family;
	const char *addr;
	uint16_t port;
} eprt_cases[] = {
	{ T("|1|132.235.1.2|6275|"), 64, FP_OK, 1, "132.235.1.2", 6275 },
	{ T("|2|1080::8:800:200C:417A|5282|"), 64, FP_OK, 2, "1080::8:800:200C:417A", 5282 },
	{ T("|2|::1|5282|"), 64, FP_OK, 2, "::1", 5282 },
	{ T("|2|::1|5282|"), 4, FP_OK, 2, "::1", 5282 },
	{ T("|2|::1|5282|"), 3, FP_E_NOSPACE, 0, "", 0 },
	{ T("!1!10.0.0.1!21!"), 64, FP_OK, 1, "10.0.0.1", 21 },
	{ T("#1#10.0.0.1#65535#\r\n"), 64, FP_OK, 1, "10.0.0.1", 65535 },
	{ T("|1|10.0.0.1|21| "), 64, FP_OK, 1, "10.0.0.1", 21 },
	{ T("|3|1.2.3.4|21|"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("|0|1.2.3.4|21|"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("|12|1.2.3.4|21|"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("||1.2.3.4|21|"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("|1||21|"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("|1|1.2.3.4||"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("|1|1.2.3.4|21"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("|1|1.2.3.4"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("|1|1.2.3.4|21|junk"), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T(""), 64, FP_E_SYNTAX, 0, "", 0 },
	{ T("|1|1.2.3.4|0|"), 64, FP_E_RANGE, 0, "", 0 },
	{ T("|1|1.2.3.4|65536|"), 64, FP_E_RANGE, 0, "", 0 },
	{ T("|1|1.2.3.4|99999999999999999999|"), 64, FP_E_RANGE, 0, "", 0 },
	{ T("|1|1.2.3.4!21!"), 64, FP_E_CHARSET, 0, "", 0 },
	{ T("|1|1.2.3.4;rm -rf /|21|"), 64, FP_E_CHARSET, 0, "", 0 },
	{ T("|1|1.2.3.\0|21|"), 64, FP_E_CHARSET, 0, "", 0 },
	{ T("|2|fe80::1%eth0|21|"), 64, FP_E_CHARSET, 0, "", 0 },
	{ T("|1|1.2.3.4|21!"), 64, FP_E_DELIM, 0, "", 0 },
	{ T("|1!1.2.3.4|21|"), 64, FP_E_DELIM, 0, "", 0 },
	{ T("1111.2.3.41211"), 64, FP_E_DELIM, 0, "", 0 },
	{ T(".1.1.2.3.4.21."), 64, FP_E_DELIM, 0, "", 0 },
	{ T("a1a1.2.3.4a21a"), 64, FP_E_DELIM, 0, "", 0 },
	{ T(" 1 1.2.3.4 21 "), 64, FP_E_DELIM, 0, "", 0 },
	{ T("\x7f" "1\x7f" "1.2.3.4\x7f" "21\x7f"), 64, FP_E_DELIM, 0, "", 0 },
	{ "|1|1.2.3.4|21|", 13, 64, FP_E_SYNTAX, 0, "", 0 },
};

static void test_parse_eprt(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(eprt_cases); i++) {
		char addr[64];
		int family = 9;
		uint16_t port = 777;

		memset(addr, 'Q', sizeof(addr));
		int rc = fp_parse_eprt(eprt_cases[i].text, eprt_cases[i].len, &family,
				       addr, eprt_cases[i].cap, &port);
		if (rc != eprt_cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d (%s), want %d", i,
				 eprt_cases[i].text, rc, fp_strerror(rc), eprt_cases[i].rc);
		assert_int_equal(family, eprt_cases[i].family);
		assert_string_equal(addr, eprt_cases[i].addr);
		assert_int_equal(port, eprt_cases[i].port);
		/* Nothing written past the capacity given. */
		for (size_t k = eprt_cases[i].cap; k < sizeof(addr); k++)
			assert_int_equal(addr[k], 'Q');
	}
}

/* ---- formatters ---------------------------------------------------------- */

/* Run a formatter at every capacity up to the one it needs: each smaller
 * one must fail without writing past the capacity; the exact one works. */
typedef int (*format_fn)(char *buf, size_t cap, const void *arg);

static void check_format(format_fn fn, const void *arg, const char *want)
{
	char buf[256];
	size_t need = strlen(want);

	for (size_t cap = 0; cap < need; cap++) {
		memset(buf, 0x7e, sizeof(buf));
		assert_int_equal(fn(cap ? buf : NULL, cap, arg), FP_E_NOSPACE);
		for (size_t k = cap; k < sizeof(buf); k++)
			assert_int_equal(buf[k], 0x7e);
	}
	memset(buf, 0x7e, sizeof(buf));
	assert_int_equal(fn(buf, need, arg), (int)need);
	assert_memory_equal(buf, want, need);
	assert_int_equal(buf[need], 0x7e);
	assert_int_equal(fn(buf, sizeof(buf), arg), (int)need);
	assert_memory_equal(buf, want, need);
}

struct pasv_arg {
	uint8_t ip[4];
	uint16_t port;
};

static int do_227(char *buf, size_t cap, const void *arg)
{
	const struct pasv_arg *a = arg;
	return fp_format_227(buf, cap, a->ip, a->port);
}

static int do_229(char *buf, size_t cap, const void *arg)
{
	const struct pasv_arg *a = arg;
	return fp_format_229(buf, cap, a->port);
}

struct reply_arg {
	int code;
	const char *text;
};

static int do_reply(char *buf, size_t cap, const void *arg)
{
	const struct reply_arg *a = arg;
	return fp_format_reply(buf, cap, a->code, a->text);
}

static void test_format_227(void **state)
{
	(void)state;
	static const struct {
		struct pasv_arg a;
		const char *want;
	} t[] = {
		{ { { 127, 0, 0, 1 }, 50000 }, "227 Entering Passive Mode (127,0,0,1,195,80).\r\n" },
		{ { { 0, 0, 0, 0 }, 1 }, "227 Entering Passive Mode (0,0,0,0,0,1).\r\n" },
		{ { { 255, 255, 255, 255 }, 65535 },
		  "227 Entering Passive Mode (255,255,255,255,255,255).\r\n" },
		{ { { 10, 1, 20, 100 }, 256 }, "227 Entering Passive Mode (10,1,20,100,1,0).\r\n" },
	};
	for (size_t i = 0; i < NELEM(t); i++)
		check_format(do_227, &t[i].a, t[i].want);
}

static void test_format_229(void **state)
{
	(void)state;
	static const struct {
		struct pasv_arg a;
		const char *want;
	} t[] = {
		{ { { 0 }, 6446 }, "229 Entering Extended Passive Mode (|||6446|)\r\n" },
		{ { { 0 }, 1 }, "229 Entering Extended Passive Mode (|||1|)\r\n" },
		{ { { 0 }, 65535 }, "229 Entering Extended Passive Mode (|||65535|)\r\n" },
	};
	for (size_t i = 0; i < NELEM(t); i++)
		check_format(do_229, &t[i].a, t[i].want);
}

static void test_format_reply(void **state)
{
	(void)state;
	static const struct {
		struct reply_arg a;
		const char *want;
	} t[] = {
		{ { 425, "Can't open data connection." }, "425 Can't open data connection.\r\n" },
		{ { 421, "Service not available\r\n" }, "421 Service not available\r\n" },
		{ { 500, "a\r\n500 injected" }, "500 a\r\n" },
		{ { 550, "x\nSTOR y" }, "550 x\r\n" },
		{ { 550, "x\ry" }, "550 x\r\n" },
		{ { 200, "" }, "200 \r\n" },
		{ { 200, NULL }, "200 \r\n" },
		{ { 100, "\xff\xc3\xa9" }, "100 \xff\xc3\xa9\r\n" },
		{ { 599, "top" }, "599 top\r\n" },
	};
	for (size_t i = 0; i < NELEM(t); i++)
		check_format(do_reply, &t[i].a, t[i].want);

	char buf[64];
	assert_int_equal(fp_format_reply(buf, sizeof(buf), 99, "x"), FP_E_RANGE);
	assert_int_equal(fp_format_reply(buf, sizeof(buf), 600, "x"), FP_E_RANGE);
	assert_int_equal(fp_format_reply(buf, sizeof(buf), -1, "x"), FP_E_RANGE);
}

static void test_format_roundtrip(void **state)
{
	(void)state;
	static const uint8_t ips[][4] = { { 127, 0, 0, 1 }, { 0, 0, 0, 0 }, { 255, 254, 1, 9 } };
	char buf[128];

	for (uint32_t port = 1; port <= 65535; port++) {
		const uint8_t *ip = ips[port % NELEM(ips)];
		fp_hostport hp;
		uint16_t p229;
		fp_reply r;
		fp_reply_line rl;

		int n = fp_format_227(buf, sizeof(buf), ip, (uint16_t)port);
		assert_true(n > 0);
		assert_int_equal(fp_parse_227(buf, (size_t)n, &hp), FP_OK);
		assert_memory_equal(hp.ip, ip, 4);
		assert_int_equal(hp.port, port);
		fp_reply_init(&r);
		assert_int_equal(fp_reply_feed(&r, buf, (size_t)n - 2, &rl), FP_OK);
		assert_int_equal(rl.code, 227);
		assert_true(rl.first && rl.last);

		n = fp_format_229(buf, sizeof(buf), (uint16_t)port);
		assert_true(n > 0);
		assert_int_equal(fp_parse_229(buf, (size_t)n, &p229), FP_OK);
		assert_int_equal(p229, port);
	}
}

/* ---- printable / strerror ------------------------------------------------ */

static void test_printable(void **state)
{
	(void)state;
	static const struct {
		const char *src;
		size_t len;
		size_t cap;
		const char *want;
	} t[] = {
		{ T("hello"), 64, "hello" },
		{ T("USER bob\r\n"), 64, "USER bob\\x0d\\x0a" },
		{ T("\0\xff\x7f\x1b[2J"), 64, "\\x00\\xff\\x7f\\x1b[2J" },
		{ T("a\\b ~"), 64, "a\\b ~" },
		{ T(""), 64, "" },
		{ T("abcdef"), 4, "abc" },
		{ T("abcdef"), 1, "" },
		{ T("\x01"), 4, "" },
		{ T("\x01"), 5, "\\x01" },
		{ T("ab\x01"), 6, "ab" },
		{ T("ab\x01"), 7, "ab\\x01" },
	};
	for (size_t i = 0; i < NELEM(t); i++) {
		char dst[80];

		memset(dst, 'Q', sizeof(dst));
		assert_ptr_equal(fp_printable(dst, t[i].cap, t[i].src, t[i].len), dst);
		assert_string_equal(dst, t[i].want);
		for (size_t k = t[i].cap; k < sizeof(dst); k++)
			assert_int_equal(dst[k], 'Q');
	}
	char untouched = 'Q';
	assert_ptr_equal(fp_printable(&untouched, 0, "abc", 3), &untouched);
	assert_int_equal(untouched, 'Q');
}

static void test_strerror(void **state)
{
	(void)state;
	static const int codes[] = { FP_OK, FP_E_AGAIN, FP_E_TOOLONG, FP_E_SYNTAX,
				     FP_E_RANGE, FP_E_NOSPACE, FP_E_CHARSET, FP_E_DELIM };
	const char *unknown = fp_strerror(-12345);

	assert_non_null(unknown);
	assert_string_equal(fp_strerror(1), unknown);
	for (size_t i = 0; i < NELEM(codes); i++) {
		const char *s = fp_strerror(codes[i]);

		assert_non_null(s);
		assert_true(strlen(s) > 0);
		assert_string_not_equal(s, unknown);
		for (size_t k = 0; k < i; k++)
			assert_string_not_equal(s, fp_strerror(codes[k]));
	}
	assert_string_equal(fp_strerror(FP_E_TOOLONG), "line too long");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_framer_basic),
		cmocka_unit_test(test_framer_partial),
		cmocka_unit_test(test_framer_bytes_exact),
		cmocka_unit_test(test_framer_one_byte_at_a_time),
		cmocka_unit_test(test_framer_every_split),
		cmocka_unit_test(test_framer_odd_chunks),
		cmocka_unit_test(test_framer_toolong_64k),
		cmocka_unit_test(test_framer_toolong_one_chunk),
		cmocka_unit_test(test_framer_limits),
		cmocka_unit_test(test_framer_feed_when_full),
		cmocka_unit_test(test_framer_space_commit),
		cmocka_unit_test(test_framer_space_full_line),
		cmocka_unit_test(test_reply_cases),
		cmocka_unit_test(test_reply_state),
		cmocka_unit_test(test_cmd_cases),
		cmocka_unit_test(test_cmd_all_verbs),
		cmocka_unit_test(test_parse_227),
		cmocka_unit_test(test_parse_227_long_digits),
		cmocka_unit_test(test_parse_port),
		cmocka_unit_test(test_parse_229),
		cmocka_unit_test(test_parse_eprt),
		cmocka_unit_test(test_format_227),
		cmocka_unit_test(test_format_229),
		cmocka_unit_test(test_format_reply),
		cmocka_unit_test(test_format_roundtrip),
		cmocka_unit_test(test_printable),
		cmocka_unit_test(test_strerror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
