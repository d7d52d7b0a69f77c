/*
 * Reply tracking (RFC 959 4.2), error names, and text for humans.
 *
 * fp_reply is a two-state machine. Between replies, a line must open one:
 * "NNN-" starts a multi-line reply and remembers NNN, "NNN " (or "NNN"
 * alone) is a whole reply. Inside a multi-line reply, only "NNN " or "NNN"
 * with the remembered code closes it; every other line, even one starting
 * with digits or with "NNN-" again, is a middle line and cannot be an
 * error. A line that fails to open a reply resets the machine, so one bad
 * line does not wedge the session.
 */
#include <stdint.h>
#include <string.h>

#include "fp_internal.h"

const char *fp_strerror(int err)
{
	switch (err) {
	case FP_OK:
		return "ok";
	case FP_E_AGAIN:
		return "need more bytes";
	case FP_E_TOOLONG:
		return "line too long";
	case FP_E_SYNTAX:
		return "syntax error";
	case FP_E_RANGE:
		return "number out of range";
	case FP_E_NOSPACE:
		return "output buffer too small";
	case FP_E_CHARSET:
		return "byte not allowed here";
	case FP_E_DELIM:
		return "bad or mismatched delimiters";
	}
	return "unknown error";
}

void fp_reply_init(fp_reply *r)
{
	r->code = 0;
	r->in_multi = false;
}

/* The byte after a reply code: what kind of line this is. A CR or LF counts
 * as the end of the line, for callers that pass the terminator along. */
enum code_sep { SEP_BAD, SEP_END, SEP_SPACE, SEP_DASH };

static enum code_sep reply_sep(const char *text, size_t len)
{
	if (len == 3 || text[3] == '\r' || text[3] == '\n')
		return SEP_END;
	if (text[3] == ' ')
		return SEP_SPACE;
	if (text[3] == '-')
		return SEP_DASH;
	return SEP_BAD;
}

int fp_reply_feed(fp_reply *r, const char *text, size_t len, fp_reply_line *out)
{
	int code = 0;
	bool has_code = fp_reply_code(text, len, &code);
	enum code_sep sep = has_code ? reply_sep(text, len) : SEP_BAD;

	if (r->in_multi) {
		out->code = r->code;
		out->first = false;
		out->last = false;
		if (code == r->code && (sep == SEP_SPACE || sep == SEP_END)) {
			out->last = true;
			fp_reply_init(r);
		}
		return FP_OK;
	}

	if (sep == SEP_BAD) {
		out->code = 0;
		out->first = false;
		out->last = false;
		fp_reply_init(r);
		return FP_E_SYNTAX;
	}
	out->code = code;
	out->first = true;
	out->last = sep != SEP_DASH;
	if (sep == SEP_DASH) {
		r->code = code;
		r->in_multi = true;
	} else {
		fp_reply_init(r);
	}
	return FP_OK;
}

int fp_format_reply(char *buf, size_t cap, int code, const char *text)
{
	struct fp_out o = { buf, cap, 0, false };

	if (code < 100 || code > 599)
		return FP_E_RANGE;
	if (text == NULL)
		text = "";
	/* Stop at the first CR or LF: one call, one line on the wire. */
	size_t n = strcspn(text, "\r\n");

	fp_out_uint(&o, (uint32_t)code);
	fp_out_bytes(&o, " ", 1);
	fp_out_bytes(&o, text, n);
	fp_out_bytes(&o, "\r\n", 2);
	return fp_out_result(&o);
}

char *fp_printable(char *dst, size_t cap, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (cap == 0)
		return dst;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];

		if (c >= 0x20 && c <= 0x7e) {
			if (cap - o < 2)
				break;
			dst[o++] = (char)c;
		} else {
			/* An escape is written whole or not at all. */
			if (cap - o < 5)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return dst;
}
