/*
 * SFTP request layer (see sftp.h): one subsystem channel, a table of
 * pending requests indexed by the low bits of their id, one input buffer
 * that holds at most one maximal packet plus what follows it.
 *
 * States: the channel opens -> INIT sent -> VERSION read -> ready. A
 * protocol error, a channel error or EOF makes the client failed: every
 * pending request is told (err < 0) and the owner gets the event, then
 * closes. Closing drops pending callbacks and waits for the channel's
 * close callback before freeing (write callbacks come before it).
 *
 * Memory: each request is one malloc'd packet (header + at most
 * MUX_SFTP_CHUNK of data) until its write completes; the number of pending
 * requests is bounded by the table; input is a fixed buffer. Replies are
 * decoded in place and handed to callbacks by pointer, so DATA is copied
 * once, by the consumer.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "mux/sftp.h"

#define IN_MAX_PKT (256 * 1024 + 1024) /* OpenSSH's sftp-server bound, with room */
#define IN_CAP (2 * IN_MAX_PKT)
#define ID_SLOT_BITS 7 /* 1 << 7 == MUX_SFTP_MAX_INFLIGHT */

struct req {
	mux_sftp_cb cb;
	void *data;
	uint32_t id;
	bool used;
};

struct pkt {
	mux_write_req wr;
	mux_sftp *s;
	size_t len;
	unsigned char buf[];
};

struct mux_sftp {
	mux_chan *ch;
	mux_sftp_event_cb cb;
	void *data;
	bool ready, failed, closing;
	int error;
	bool posix_rename;
	uint32_t gen;
	unsigned npending;
	struct req reqs[MUX_SFTP_MAX_INFLIGHT];
	unsigned char *in;
	size_t in_len;
	void (*closed_cb)(void *);
	void *closed_data;
};

static void sftp_fail(mux_sftp *s, int err)
{
	if (s->failed || s->closing)
		return;
	s->failed = true;
	s->error = err ? err : UV_EPROTO;
	for (unsigned i = 0; i < MUX_SFTP_MAX_INFLIGHT && !s->closing; i++) {
		struct req *r = &s->reqs[i];
		if (!r->used)
			continue;
		r->used = false;
		s->npending--;
		r->cb(s, NULL, s->error, r->data);
	}
	if (!s->closing && s->cb)
		s->cb(s, s->error, s->data);
}

static void pkt_written_cb(mux_write_req *wr, int status)
{
	struct pkt *p = (struct pkt *)(void *)((char *)wr - offsetof(struct pkt, wr));
	mux_sftp *s = p->s;
	free(p);
	if (status < 0 && !s->closing)
		sftp_fail(s, status);
}

/* A packet buffer for a request of up to extra bytes beyond the fixed
 * header fields; sfw_out set up on it. */
static struct pkt *pkt_new(mux_sftp *s, size_t extra, sfw_out *o)
{
	struct pkt *p = malloc(sizeof(*p) + extra + 64);
	if (!p)
		return NULL;
	p->s = s;
	sfw_out_init(o, p->buf, extra + 64);
	return p;
}

/* Take a free slot and make an id for it. */
static struct req *req_take(mux_sftp *s, uint32_t *id)
{
	if (s->npending >= MUX_SFTP_MAX_INFLIGHT)
		return NULL;
	for (unsigned i = 0; i < MUX_SFTP_MAX_INFLIGHT; i++) {
		unsigned slot = (s->gen + i) & (MUX_SFTP_MAX_INFLIGHT - 1);
		if (!s->reqs[slot].used) {
			s->gen += i + 1;
			*id = (s->gen << ID_SLOT_BITS) | slot;
			return &s->reqs[slot];
		}
	}
	return NULL;
}

static int pkt_send(mux_sftp *s, struct pkt *p, sfw_out *o, mux_sftp_cb cb, void *data,
		    struct req *r, uint32_t id)
{
	long n = sfw_end(o);
	if (n < 0) {
		free(p);
		return UV_EINVAL;
	}
	p->len = (size_t)n;
	int rc = mux_chan_write(&p->wr, s->ch, (const char *)p->buf, p->len, pkt_written_cb);
	if (rc < 0) {
		free(p);
		return rc;
	}
	if (r) {
		r->used = true;
		r->id = id;
		r->cb = cb;
		r->data = data;
		s->npending++;
	}
	return 0;
}

/* A request being built: its packet, the encoder on it, its slot and id. */
struct reqb {
	sfw_out o;
	struct pkt *p;
	struct req *r;
	uint32_t id;
};

/* Common start of a request: checks, slot, packet. 0 or an error. */
static int req_begin(mux_sftp *s, int type, size_t extra, struct reqb *b)
{
	if (s->closing || s->failed || !s->ready)
		return s->failed ? s->error : UV_ENOTCONN;
	if (!(b->r = req_take(s, &b->id)))
		return UV_ENOBUFS;
	if (!(b->p = pkt_new(s, extra, &b->o)))
		return UV_ENOMEM;
	sfw_begin(&b->o, type, b->id);
	return 0;
}

/* Common end: send it; cb gets the reply. */
static int req_send(mux_sftp *s, struct reqb *b, mux_sftp_cb cb, void *data)
{
	return pkt_send(s, b->p, &b->o, cb, data, b->r, b->id);
}

#define PATH_CAP 4096

int mux_sftp_path(mux_sftp *s, int type, const char *path, mux_sftp_cb cb, void *data)
{
	struct reqb b;
	size_t pl = strlen(path);
	if (pl > PATH_CAP)
		return UV_EINVAL;
	int err = req_begin(s, type, pl + 16, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, path, pl);
	if (type == SFW_MKDIR) {
		sfw_attrs a = {0};
		sfw_put_attrs(&b.o, &a);
	}
	return req_send(s, &b, cb, data);
}

int mux_sftp_open(mux_sftp *s, const char *path, uint32_t pflags, const sfw_attrs *a,
		  mux_sftp_cb cb, void *data)
{
	struct reqb b;
	size_t pl = strlen(path);
	sfw_attrs none = {0};
	if (pl > PATH_CAP)
		return UV_EINVAL;
	int err = req_begin(s, SFW_OPEN, pl + 64, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, path, pl);
	sfw_put_u32(&b.o, pflags);
	sfw_put_attrs(&b.o, a ? a : &none);
	return req_send(s, &b, cb, data);
}

int mux_sftp_handle(mux_sftp *s, int type, const char *h, size_t hlen, mux_sftp_cb cb,
		    void *data)
{
	struct reqb b;
	if (hlen > SFW_HANDLE_MAX)
		return UV_EINVAL;
	int err = req_begin(s, type, hlen + 8, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, h, hlen);
	return req_send(s, &b, cb, data);
}

int mux_sftp_read(mux_sftp *s, const char *h, size_t hlen, uint64_t off, uint32_t len,
		  mux_sftp_cb cb, void *data)
{
	struct reqb b;
	if (hlen > SFW_HANDLE_MAX || len > MUX_SFTP_CHUNK)
		return UV_EINVAL;
	int err = req_begin(s, SFW_READ, hlen + 16, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, h, hlen);
	sfw_put_u64(&b.o, off);
	sfw_put_u32(&b.o, len);
	return req_send(s, &b, cb, data);
}

/* A WRITE's fields after its id: string handle, uint64 offset and the
 * data string's length. */
#define WRITE_FIELDS(hlen) (4 + (hlen) + 8 + 4)

size_t mux_sftp_write_fill(size_t hlen)
{
	/* uint32 length, byte type, uint32 id, then the fields and the data */
	size_t head = 4 + 1 + 4 + WRITE_FIELDS(hlen);
	size_t n = 2 * MUX_PACKET_DATA - head;
	return n < MUX_SFTP_CHUNK ? n : MUX_SFTP_CHUNK;
}

int mux_sftp_write(mux_sftp *s, const char *h, size_t hlen, uint64_t off, const void *buf,
		   size_t len, mux_sftp_cb cb, void *data)
{
	struct reqb b;
	if (hlen > SFW_HANDLE_MAX || len > MUX_SFTP_CHUNK)
		return UV_EINVAL;
	int err = req_begin(s, SFW_WRITE, WRITE_FIELDS(hlen) + len, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, h, hlen);
	sfw_put_u64(&b.o, off);
	sfw_put_str(&b.o, buf, len);
	return req_send(s, &b, cb, data);
}

int mux_sftp_rename(mux_sftp *s, const char *from, const char *to, mux_sftp_cb cb, void *data)
{
	static const char ext[] = "posix-rename@openssh.com";
	struct reqb b;
	size_t fl = strlen(from), tl = strlen(to);
	if (fl > PATH_CAP || tl > PATH_CAP)
		return UV_EINVAL;
	int type = s->posix_rename ? SFW_EXTENDED : SFW_RENAME;
	int err = req_begin(s, type, fl + tl + sizeof(ext) + 16, &b);
	if (err)
		return err;
	if (s->posix_rename)
		sfw_put_cstr(&b.o, ext);
	sfw_put_str(&b.o, from, fl);
	sfw_put_str(&b.o, to, tl);
	return req_send(s, &b, cb, data);
}

int mux_sftp_setstat(mux_sftp *s, const char *path, const sfw_attrs *a, mux_sftp_cb cb,
		     void *data)
{
	struct reqb b;
	size_t pl = strlen(path);
	if (pl > PATH_CAP)
		return UV_EINVAL;
	int err = req_begin(s, SFW_SETSTAT, pl + 48, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, path, pl);
	sfw_put_attrs(&b.o, a);
	return req_send(s, &b, cb, data);
}

unsigned mux_sftp_pending(const mux_sftp *s)
{
	return s->npending;
}

/* ---- input ------------------------------------------------------------ */

static void sftp_packet(mux_sftp *s, const unsigned char *pkt, size_t len)
{
	sfw_reply rep;
	int rc = sfw_parse_reply(pkt, len, &rep);
	if (rc < 0) {
		sftp_fail(s, UV_EPROTO);
		return;
	}
	if (!s->ready) {
		if (rep.type != SFW_VERSION || rep.version < 3) {
			sftp_fail(s, UV_EPROTO);
			return;
		}
		s->posix_rename = sfw_version_has(&rep, "posix-rename@openssh.com");
		s->ready = true;
		if (s->cb)
			s->cb(s, 0, s->data);
		return;
	}
	struct req *r = &s->reqs[rep.id & (MUX_SFTP_MAX_INFLIGHT - 1)];
	if (rep.type == SFW_VERSION || !r->used || r->id != rep.id) {
		sftp_fail(s, UV_EPROTO); /* a reply to nothing we asked */
		return;
	}
	r->used = false;
	s->npending--;
	r->cb(s, &rep, 0, r->data);
}

static void sftp_alloc_cb(mux_chan *ch, size_t suggested, uv_buf_t *buf)
{
	mux_sftp *s = mux_chan_data(ch);
	(void)suggested;
	if (s->closing || s->failed) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init((char *)s->in + s->in_len, (unsigned)(IN_CAP - s->in_len));
}

static void sftp_read_cb(mux_chan *ch, ssize_t n, const uv_buf_t *buf)
{
	mux_sftp *s = mux_chan_data(ch);
	(void)buf;
	if (s->closing || s->failed)
		return;
	if (n < 0) {
		sftp_fail(s, n == UV_EOF ? UV_ECONNRESET : (int)n);
		return;
	}
	s->in_len += (size_t)n;
	size_t off = 0;
	while (!s->closing && !s->failed) {
		long l = sfw_frame(s->in + off, s->in_len - off, IN_MAX_PKT);
		if (l == SFW_E_AGAIN)
			break;
		if (l < 0) {
			sftp_fail(s, UV_EPROTO);
			return;
		}
		sftp_packet(s, s->in + off, (size_t)l);
		off += (size_t)l;
	}
	if (s->closing || s->failed)
		return;
	if (off) {
		memmove(s->in, s->in + off, s->in_len - off);
		s->in_len -= off;
	}
}

static void sftp_open_cb(mux_chan *ch, int status, void *data)
{
	mux_sftp *s = data;
	(void)ch;
	if (s->closing)
		return;
	if (status < 0) {
		sftp_fail(s, status);
		return;
	}
	struct pkt *p;
	sfw_out o;
	if (!(p = pkt_new(s, 8, &o))) {
		sftp_fail(s, UV_ENOMEM);
		return;
	}
	sfw_begin(&o, SFW_INIT, 0);
	sfw_put_u32(&o, 3);
	int rc = pkt_send(s, p, &o, NULL, NULL, NULL, 0);
	if (rc == 0)
		rc = mux_chan_read_start(s->ch, sftp_alloc_cb, sftp_read_cb);
	if (rc < 0)
		sftp_fail(s, rc);
}

mux_sftp *mux_sftp_start(mux_conn *c, mux_sftp_event_cb cb, void *data)
{
	mux_sftp *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->in = malloc(IN_CAP);
	s->cb = cb;
	s->data = data;
	if (s->in)
		s->ch = mux_chan_open_subsystem(c, "sftp", sftp_open_cb, s);
	if (!s->ch) {
		free(s->in);
		free(s);
		return NULL;
	}
	return s;
}

static void sftp_chan_closed_cb(mux_chan *ch)
{
	mux_sftp *s = mux_chan_data(ch);
	void (*cb)(void *) = s->closed_cb;
	void *data = s->closed_data;
	free(s->in);
	free(s);
	if (cb)
		cb(data);
}

void mux_sftp_close(mux_sftp *s, void (*closed)(void *data), void *data)
{
	if (s->closing)
		return;
	s->closing = true;
	s->closed_cb = closed;
	s->closed_data = data;
	memset(s->reqs, 0, sizeof(s->reqs));
	s->npending = 0;
	mux_chan_close(s->ch, sftp_chan_closed_cb);
}
