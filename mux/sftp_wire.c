/*
 * SFTP v3 packet codec (see sftp_wire.h). The encoder writes into a
 * caller's buffer and only records an overflow, so a request is built with
 * straight-line code and checked once at sfw_end(). The decoder reads
 * through an sfw_in that turns every out-of-bounds read into a sticky
 * error and a zero value: a hostile length can make a field empty, never
 * make us read past the packet.
 */
#include <string.h>

#include "mux/sftp_wire.h"

void sfw_out_init(sfw_out *o, void *buf, size_t cap)
{
	o->p = buf;
	o->cap = cap;
	o->len = 0;
	o->overflow = false;
}

static void put_bytes(sfw_out *o, const void *s, size_t n)
{
	if (o->overflow || n > o->cap - o->len) {
		o->overflow = true;
		return;
	}
	if (n)
		memcpy(o->p + o->len, s, n);
	o->len += n;
}

void sfw_put_u32(sfw_out *o, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
			      (unsigned char)(v >> 8), (unsigned char)v};
	put_bytes(o, b, 4);
}

void sfw_put_u64(sfw_out *o, uint64_t v)
{
	sfw_put_u32(o, (uint32_t)(v >> 32));
	sfw_put_u32(o, (uint32_t)v);
}

void sfw_put_str(sfw_out *o, const void *s, size_t n)
{
	if (n > UINT32_MAX) {
		o->overflow = true;
		return;
	}
	sfw_put_u32(o, (uint32_t)n);
	put_bytes(o, s, n);
}

void sfw_put_cstr(sfw_out *o, const char *s)
{
	sfw_put_str(o, s, strlen(s));
}

void sfw_put_attrs(sfw_out *o, const sfw_attrs *a)
{
	uint32_t f = a->flags & (SFW_ATTR_SIZE | SFW_ATTR_UIDGID | SFW_ATTR_PERMISSIONS |
				 SFW_ATTR_ACMODTIME);
	sfw_put_u32(o, f);
	if (f & SFW_ATTR_SIZE)
		sfw_put_u64(o, a->size);
	if (f & SFW_ATTR_UIDGID) {
		sfw_put_u32(o, a->uid);
		sfw_put_u32(o, a->gid);
	}
	if (f & SFW_ATTR_PERMISSIONS)
		sfw_put_u32(o, a->perm);
	if (f & SFW_ATTR_ACMODTIME) {
		sfw_put_u32(o, a->atime);
		sfw_put_u32(o, a->mtime);
	}
}

void sfw_begin(sfw_out *o, int type, uint32_t id)
{
	o->len = 0;
	o->overflow = false;
	sfw_put_u32(o, 0); /* patched by sfw_end */
	unsigned char t = (unsigned char)type;
	put_bytes(o, &t, 1);
	if (type != SFW_INIT)
		sfw_put_u32(o, id);
}

long sfw_end(sfw_out *o)
{
	if (o->overflow || o->len < 5)
		return SFW_E_NOSPACE;
	uint32_t n = (uint32_t)(o->len - 4);
	o->p[0] = (unsigned char)(n >> 24);
	o->p[1] = (unsigned char)(n >> 16);
	o->p[2] = (unsigned char)(n >> 8);
	o->p[3] = (unsigned char)n;
	return (long)o->len;
}

long sfw_frame(const void *p, size_t len, size_t max)
{
	const unsigned char *u = p;
	if (len < 4)
		return SFW_E_AGAIN;
	uint32_t n = (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
	if (n < 1 || max < 4 || n > max - 4)
		return SFW_E_TOOBIG;
	if (len - 4 < n)
		return SFW_E_AGAIN;
	return (long)n + 4;
}

void sfw_in_init(sfw_in *in, const void *p, size_t len)
{
	in->p = p;
	in->len = len;
	in->off = 0;
	in->err = false;
}

static const unsigned char *take(sfw_in *in, size_t n)
{
	if (in->err || n > in->len - in->off) {
		in->err = true;
		return NULL;
	}
	const unsigned char *r = in->p + in->off;
	in->off += n;
	return r;
}

uint8_t sfw_get_u8(sfw_in *in)
{
	const unsigned char *b = take(in, 1);
	return b ? b[0] : 0;
}

uint32_t sfw_get_u32(sfw_in *in)
{
	const unsigned char *b = take(in, 4);
	return b ? (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3] : 0;
}

uint64_t sfw_get_u64(sfw_in *in)
{
	uint64_t hi = sfw_get_u32(in);
	return hi << 32 | sfw_get_u32(in);
}

const char *sfw_get_str(sfw_in *in, size_t *n)
{
	uint32_t l = sfw_get_u32(in);
	const unsigned char *b = take(in, l);
	*n = b ? l : 0;
	return b ? (const char *)b : "";
}

void sfw_get_attrs(sfw_in *in, sfw_attrs *a)
{
	memset(a, 0, sizeof(*a));
	a->flags = sfw_get_u32(in);
	if (a->flags & SFW_ATTR_SIZE)
		a->size = sfw_get_u64(in);
	if (a->flags & SFW_ATTR_UIDGID) {
		a->uid = sfw_get_u32(in);
		a->gid = sfw_get_u32(in);
	}
	if (a->flags & SFW_ATTR_PERMISSIONS)
		a->perm = sfw_get_u32(in);
	if (a->flags & SFW_ATTR_ACMODTIME) {
		a->atime = sfw_get_u32(in);
		a->mtime = sfw_get_u32(in);
	}
	if (a->flags & SFW_ATTR_EXTENDED) {
		uint32_t n = sfw_get_u32(in);
		/* each pair is at least 8 bytes: a count beyond that is a lie */
		if (n > (in->len - in->off) / 8) {
			in->err = true;
			return;
		}
		for (uint32_t i = 0; i < n && !in->err; i++) {
			size_t l;
			(void)sfw_get_str(in, &l);
			(void)sfw_get_str(in, &l);
		}
	}
	if (in->err)
		memset(a, 0, sizeof(*a));
}

int sfw_parse_reply(const void *pkt, size_t len, sfw_reply *out)
{
	sfw_in in;
	memset(out, 0, sizeof(*out));
	out->msg = out->data = "";
	sfw_in_init(&in, pkt, len);
	(void)sfw_get_u32(&in); /* length, checked by sfw_frame */
	out->type = sfw_get_u8(&in);
	if (in.err)
		return SFW_E_SHORT;
	if (out->type == SFW_VERSION) {
		out->version = sfw_get_u32(&in);
		out->data = (const char *)in.p + in.off;
		out->data_len = in.err ? 0 : in.len - in.off;
		return in.err ? SFW_E_SHORT : SFW_OK;
	}
	out->id = sfw_get_u32(&in);
	switch (out->type) {
	case SFW_STATUS:
		out->status = sfw_get_u32(&in);
		if (in.off < in.len) /* v3 servers may omit message and language */
			out->msg = sfw_get_str(&in, &out->msg_len);
		break;
	case SFW_HANDLE:
		out->data = sfw_get_str(&in, &out->data_len);
		if (!in.err && out->data_len > SFW_HANDLE_MAX)
			return SFW_E_TOOBIG;
		break;
	case SFW_DATA:
		out->data = sfw_get_str(&in, &out->data_len);
		break;
	case SFW_NAME:
		out->count = sfw_get_u32(&in);
		/* each entry is at least 12 bytes (two empty strings, flags) */
		if (!in.err && out->count > (in.len - in.off) / 12)
			return SFW_E_SHORT;
		sfw_in_init(&out->names, in.p + in.off, in.err ? 0 : in.len - in.off);
		break;
	case SFW_ATTRS:
		sfw_get_attrs(&in, &out->attrs);
		break;
	case SFW_EXTENDED_REPLY:
		out->data = (const char *)in.p + in.off;
		out->data_len = in.err ? 0 : in.len - in.off;
		break;
	default:
		return SFW_E_TYPE;
	}
	return in.err ? SFW_E_SHORT : SFW_OK;
}

int sfw_name_next(sfw_in *names, sfw_name *out)
{
	out->name = sfw_get_str(names, &out->name_len);
	out->longname = sfw_get_str(names, &out->longname_len);
	sfw_get_attrs(names, &out->attrs);
	return names->err ? SFW_E_SHORT : SFW_OK;
}

bool sfw_version_has(const sfw_reply *v, const char *name)
{
	sfw_in in;
	size_t want = strlen(name);
	sfw_in_init(&in, v->data, v->data_len);
	while (in.off < in.len && !in.err) {
		size_t n, dn;
		const char *s = sfw_get_str(&in, &n);
		(void)sfw_get_str(&in, &dn);
		if (!in.err && n == want && memcmp(s, name, n) == 0)
			return true;
	}
	return false;
}
