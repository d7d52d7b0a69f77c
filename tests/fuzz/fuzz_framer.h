/*
 * Shared by the libFuzzer targets: drive an fp_framer over a byte stream in
 * pseudo-random chunks and check every result against a model of what the
 * framer must return.
 *
 * The model is the stream itself: a line is the bytes from the end of the
 * previous one up to and including the next LF, at most FP_LINE_MAX long.
 * FP_E_TOOLONG is allowed only where FP_LINE_MAX bytes without an LF follow,
 * and the next line must then start after that over-long line's LF. At the
 * end, whatever the framer still holds must be exactly the unreturned tail.
 * Chunk sizes and the choice between fp_framer_feed and the zero-copy
 * fp_framer_space/commit path come from a generator seeded by the input, so
 * a crash reproduces from its input alone.
 */
#ifndef FUZZ_FRAMER_H
#define FUZZ_FRAMER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpparse/ftpparse.h"
#include "tests/fuzz/fuzz_check.h"

typedef void (*fuzz_line_fn)(void *ctx, const fp_line *l);

static uint64_t fuzz_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static uint64_t fuzz_seed(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return h ^ n;
}

struct fuzz_model {
	const uint8_t *s;
	size_t n;
	size_t off; /* where the next line must start */
	unsigned toolong;
};

static void model_result(struct fuzz_model *m, int rc, const fp_line *l)
{
	if (rc == FP_OK) {
		CHECK(l->len >= 1 && l->len <= FP_LINE_MAX);
		CHECK(m->off + l->len <= m->n);
		CHECK(memcmp(l->p, m->s + m->off, l->len) == 0);
		CHECK(l->p[l->len - 1] == '\n');
		CHECK(memchr(l->p, '\n', l->len - 1) == NULL);
		if (l->len >= 2 && l->p[l->len - 2] == '\r')
			CHECK(l->text_len == l->len - 2);
		else
			CHECK(l->text_len == l->len - 1);
		m->off += l->len;
		return;
	}
	CHECK(rc == FP_E_TOOLONG);
	CHECK(m->off + FP_LINE_MAX <= m->n);
	CHECK(memchr(m->s + m->off, '\n', FP_LINE_MAX) == NULL);
	const uint8_t *lf = memchr(m->s + m->off, '\n', m->n - m->off);
	m->off = lf != NULL ? (size_t)(lf - m->s) + 1 : m->n;
	m->toolong++;
}

static void fuzz_drain(fp_framer *f, struct fuzz_model *m, fuzz_line_fn fn,
		       void *ctx)
{
	fp_line l;
	int rc;

	while ((rc = fp_framer_next(f, &l)) != FP_E_AGAIN) {
		model_result(m, rc, &l);
		if (rc == FP_OK && fn != NULL)
			fn(ctx, &l);
	}
	CHECK(fp_framer_pending(f) <= FP_LINE_MAX);
}

/* Frame s[0..n) in random chunks, most of them up to `small` bytes; call
 * fn for each line. Returns how many lines were refused as too long. */
static unsigned fuzz_frame(const uint8_t *s, size_t n, uint64_t seed,
			   size_t small, fuzz_line_fn fn, void *ctx)
{
	static fp_framer f;
	struct fuzz_model m = { s, n, 0, 0 };
	size_t pos = 0;
	int stuck = 0;

	fp_framer_init(&f);
	while (pos < n) {
		uint64_t r = fuzz_rand(&seed);
		size_t want = (r & 3) == 0 ? (size_t)(r >> 8) % (2 * FP_LINE_MAX) + 1
					   : (size_t)(r >> 8) % small + 1;
		size_t k;

		if (want > n - pos)
			want = n - pos;
		if (r & 4) {
			k = fp_framer_feed(&f, (const char *)s + pos, want);
			CHECK(k <= want);
		} else {
			size_t avail;
			char *dst = fp_framer_space(&f, &avail);

			CHECK(avail <= FP_LINE_MAX);
			CHECK(dst >= f.buf && dst + avail <= f.buf + FP_LINE_MAX);
			k = want < avail ? want : avail;
			memcpy(dst, s + pos, k);
			fp_framer_commit(&f, k);
		}
		pos += k;
		/* Nothing taken twice in a row, even after draining: stuck. */
		stuck = k == 0 ? stuck + 1 : 0;
		CHECK(stuck < 2);
		/* Sometimes leave lines in the buffer to pile up. */
		if ((r & 0x30) != 0 || k == 0)
			fuzz_drain(&f, &m, fn, ctx);
	}
	fuzz_drain(&f, &m, fn, ctx);
	CHECK(fp_framer_pending(&f) == n - m.off);
	CHECK(fp_framer_pending(&f) < FP_LINE_MAX);
	return m.toolong;
}

/* The input with its LFs taken out, repeated past a buffer's worth, then
 * the input itself: one over-long line that the input's first LF ends,
 * followed by the input's other lines. This reaches FP_E_TOOLONG and the
 * recovery after it from inputs far smaller than FP_LINE_MAX. Framing
 * only: the lines after it were checked in the first pass. */
static void fuzz_frame_stretched(const uint8_t *p, size_t n)
{
	if (n == 0 || n > 4 * FP_LINE_MAX)
		return;
	uint8_t *junk = malloc(n);
	size_t jn = 0;

	CHECK(junk != NULL);
	for (size_t i = 0; i < n; i++)
		if (p[i] != '\n')
			junk[jn++] = p[i];
	if (jn == 0) {
		free(junk);
		return;
	}
	size_t reps = FP_LINE_MAX / jn + 1;
	size_t total = jn * reps + n;
	uint8_t *s = malloc(total);

	CHECK(s != NULL);
	for (size_t i = 0; i < reps; i++)
		memcpy(s + i * jn, junk, jn);
	memcpy(s + jn * reps, p, n);
	unsigned toolong = fuzz_frame(s, total, fuzz_seed(p, n) ^ 0x5a5a, 2048,
				      NULL, NULL);
	CHECK(toolong >= 1);
	if (memchr(p, '\n', n) == NULL)
		CHECK(toolong == 1);
	free(s);
	free(junk);
}

/* An exact-size heap copy, so ASan sees any read past len. */
static char *fuzz_dup(const char *p, size_t n)
{
	char *d = malloc(n ? n : 1);

	CHECK(d != NULL);
	if (n)
		memcpy(d, p, n);
	return d;
}

#endif
