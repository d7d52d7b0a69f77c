/*
 * Line framer: a fixed buffer in which bytes wait until they form a line.
 *
 * buf[start..len) holds bytes not yet returned. Lines are cut at LF and
 * handed out in place, terminator included, without altering a byte.
 * `scanned` counts the bytes after `start` already known to hold no LF, so
 * every byte is searched once however the stream is split. Compaction
 * (moving the pending bytes to the front) happens only when the pending
 * bytes are one partial line; those bytes are then consumed as a line before
 * they can be moved again, so copying stays linear in the input as well.
 *
 * A line that fills the whole buffer without an LF is over-long: the buffer
 * is emptied, FP_E_TOOLONG is returned once, and `discarding` drops every
 * later byte up to and including the LF that ends it. Memory never grows.
 */
#include <assert.h>
#include <string.h>

#include "ftpparse.h"

void fp_framer_init(fp_framer *f)
{
	f->start = 0;
	f->len = 0;
	f->scanned = 0;
	f->discarding = false;
}

static void framer_empty(fp_framer *f)
{
	f->start = 0;
	f->len = 0;
	f->scanned = 0;
}

/* First LF in the pending bytes, searching only bytes not seen before.
 * Afterwards `scanned` is the offset of that LF from `start`, or all the
 * pending bytes when there is none. */
static const char *framer_find_lf(fp_framer *f)
{
	const char *base = f->buf + f->start;
	size_t pending = f->len - f->start;
	const char *lf = memchr(base + f->scanned, '\n', pending - f->scanned);

	f->scanned = lf != NULL ? (size_t)(lf - base) : pending;
	return lf;
}

char *fp_framer_space(fp_framer *f, size_t *avail)
{
	if (framer_find_lf(f) == NULL) {
		size_t pending = f->len - f->start;

		if (f->discarding) {
			/* Bytes of an over-long line: nobody will ever see them. */
			framer_empty(f);
		} else if (f->start > 0) {
			memmove(f->buf, f->buf + f->start, pending);
			f->start = 0;
			f->len = pending;
		}
	}
	*avail = FP_LINE_MAX - f->len;
	return f->buf + f->len;
}

void fp_framer_commit(fp_framer *f, size_t n)
{
	assert(n <= FP_LINE_MAX - f->len);
	if (n > FP_LINE_MAX - f->len)
		n = FP_LINE_MAX - f->len;
	f->len += n;
}

size_t fp_framer_feed(fp_framer *f, const char *p, size_t n)
{
	size_t taken = 0;

	while (taken < n) {
		size_t avail;
		char *dst = fp_framer_space(f, &avail);

		if (avail == 0)
			break;
		if (avail > n - taken)
			avail = n - taken;
		memcpy(dst, p + taken, avail);
		fp_framer_commit(f, avail);
		taken += avail;
	}
	return taken;
}

int fp_framer_next(fp_framer *f, fp_line *out)
{
	for (;;) {
		const char *lf = framer_find_lf(f);
		size_t pending = f->len - f->start;

		if (lf == NULL) {
			if (f->discarding || pending == 0) {
				framer_empty(f);
				return FP_E_AGAIN;
			}
			if (pending == FP_LINE_MAX) {
				framer_empty(f);
				f->discarding = true;
				return FP_E_TOOLONG;
			}
			return FP_E_AGAIN;
		}

		const char *base = f->buf + f->start;
		size_t n = f->scanned + 1;

		f->start += n;
		f->scanned = 0;
		if (f->discarding) {
			/* The LF that ends the over-long line: resume framing. */
			f->discarding = false;
			continue;
		}
		out->p = base;
		out->len = n;
		out->text_len = n - 1;
		if (n >= 2 && base[n - 2] == '\r')
			out->text_len--;
		return FP_OK;
	}
}

size_t fp_framer_pending(const fp_framer *f)
{
	return f->len - f->start;
}
