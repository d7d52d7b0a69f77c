/*
 * Shared SFTP channels (see sftp_chan.h and sftp.h): the connection's pool
 * of "sftp" subsystem channels, the views on them, request slots, and
 * reply dispatch.
 *
 * A channel: opens -> INIT sent -> VERSION read -> ready. A protocol
 * error, a channel error or EOF fails it: every pending request is told
 * (err < 0), then every view gets the event; the channel closes itself.
 * A channel that fails before it was ready while others live was most
 * likely refused by sshd's MaxSessions: the limit becomes the number of
 * the others and its views move to them instead of failing.
 *
 * Ownership: the pool (conn->sftp_chans) owns each channel until it
 * starts closing; a closing channel owns itself and is freed once its
 * mux_chan has closed and no view names it. A view is its user's; it
 * names its channel until it is freed (in its timer's close callback,
 * never inside mux_sftp_close). A slot names its view until the reply
 * comes or the view closes; after that the reply is read and dropped
 * (and a handle it carries is closed).
 *
 * Memory: each request is one malloc'd packet until its write completes;
 * the slot table grows by doubling up to SLOTS_MAX (each view still has
 * at most MUX_SFTP_MAX_INFLIGHT); input is a fixed buffer per channel.
 * Replies are decoded in place and handed to callbacks by pointer.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "mux/internal.h"
#include "mux/sftp_chan.h"

#define IN_MAX_PKT (256 * 1024 + 1024) /* OpenSSH's sftp-server bound, with room */
#define IN_CAP (2 * IN_MAX_PKT)
/* An id is (generation << SLOT_BITS) | slot. */
#define SLOT_BITS 15
#define SLOTS_MAX (1u << SLOT_BITS)
#define SLOTS_START 128
#define STUCK_MS 5000

struct slot {
	mux_sftp *v;    /* NULL: nobody waits (its view closed, or ours) */
	mux_sftp_cb cb;
	void *data;
	uint64_t sent_ms;
	uint32_t id;
	int type;
	bool used;
};

/* A file or directory handle a view holds open. */
struct held {
	struct held *next;
	size_t len;
	char h[];
};

struct sftp_chan {
	struct sftp_chan *next; /* conn->sftp_chans, until closing */
	mux_conn *conn;
	mux_chan *mch;
	bool ready, failed, closing, closed;
	int error;
	bool posix_rename;
	mux_sftp *views;        /* every view naming this channel */
	unsigned nviews;        /* ... of which nactive are not closing */
	unsigned nactive;
	uint32_t gen;
	struct slot *slots;
	unsigned cap, used;
	unsigned char *in;
	size_t in_len;
};

struct mux_sftp {
	struct sftp_chan *ch;
	mux_sftp *vnext;
	mux_sftp_event_cb cb;
	void *data;
	bool told_ready, failed, closing, finishing;
	int error;
	unsigned npending;
	struct held *held;
	uv_timer_t timer;       /* the deferred ready event; its close frees us */
	void (*closed_cb)(void *);
	void *closed_data;
};

static void chan_close(struct sftp_chan *ch);

static bool chan_live(const struct sftp_chan *ch)
{
	return !ch->failed && !ch->closing;
}

static void chan_maybe_free(struct sftp_chan *ch)
{
	if (!ch->closed || ch->nviews > 0)
		return;
	free(ch->slots);
	free(ch->in);
	free(ch);
}

/* ---- views -------------------------------------------------------------- */

static void view_ready_cb(uv_timer_t *t)
{
	mux_sftp *v = t->data;
	if (v->closing || v->failed || v->told_ready)
		return;
	v->told_ready = true;
	v->cb(v, 0, v->data);
}

static void view_link(mux_sftp *v, struct sftp_chan *ch)
{
	v->ch = ch;
	v->vnext = ch->views;
	ch->views = v;
	ch->nviews++;
	ch->nactive++;
	if (ch->ready) /* never from inside mux_sftp_start */
		uv_timer_start(&v->timer, view_ready_cb, 0, 0);
}

static void view_unlink(mux_sftp *v)
{
	struct sftp_chan *ch = v->ch;
	mux_sftp **pp = &ch->views;
	while (*pp && *pp != v)
		pp = &(*pp)->vnext;
	if (*pp)
		*pp = v->vnext;
	ch->nviews--;
	if (!v->closing)
		ch->nactive--;
}

static void view_closed_cb(uv_handle_t *h)
{
	mux_sftp *v = h->data;
	struct sftp_chan *ch = v->ch;
	void (*cb)(void *) = v->closed_cb;
	void *data = v->closed_data;
	view_unlink(v);
	free(v);
	chan_maybe_free(ch);
	if (cb)
		cb(data);
}

/* A closing view is freed once its last request is answered (or dropped
 * with its channel): its session ends then, so the session caps bound
 * what closed sessions leave running on a shared channel. */
static void view_finish(mux_sftp *v)
{
	if (v->finishing)
		return;
	v->finishing = true;
	uv_timer_stop(&v->timer);
	uv_close((uv_handle_t *)&v->timer, view_closed_cb);
}

/* One request of v is answered or dropped. */
static void view_request_done(mux_sftp *v)
{
	v->npending--;
	if (v->closing && v->npending == 0)
		view_finish(v);
}

static void held_add(mux_sftp *v, const char *h, size_t len)
{
	struct held *e = malloc(sizeof(*e) + len);
	if (!e)
		return; /* the handle stays open on the server until the channel ends */
	e->len = len;
	memcpy(e->h, h, len);
	e->next = v->held;
	v->held = e;
}

bool sftp__holds(const mux_sftp *v, const char *h, size_t hlen)
{
	for (const struct held *e = v->held; e; e = e->next)
		if (e->len == hlen && memcmp(e->h, h, hlen) == 0)
			return true;
	return false;
}

void sftp__forget_handle(mux_sftp *v, const char *h, size_t hlen)
{
	for (struct held **pp = &v->held; *pp; pp = &(*pp)->next) {
		struct held *e = *pp;
		if (e->len == hlen && memcmp(e->h, h, hlen) == 0) {
			*pp = e->next;
			free(e);
			return;
		}
	}
}

bool sftp__posix_rename(const mux_sftp *v)
{
	return v->ch->posix_rename;
}

unsigned mux_sftp_pending(const mux_sftp *v)
{
	return v->npending;
}

/* ---- slots and packets ---------------------------------------------------- */

static bool slots_grow(struct sftp_chan *ch)
{
	unsigned cap = ch->cap ? ch->cap * 2 : SLOTS_START;
	if (cap > SLOTS_MAX)
		return false;
	struct slot *n = realloc(ch->slots, cap * sizeof(*n));
	if (!n)
		return false;
	memset(n + ch->cap, 0, (cap - ch->cap) * sizeof(*n));
	ch->slots = n;
	ch->cap = cap;
	return true;
}

/* A free slot and an id for it (the slot is taken when the packet is
 * sent). The table is kept at most half full so the search is short. */
static bool slot_find(struct sftp_chan *ch, unsigned *slot, uint32_t *id)
{
	if (2 * (ch->used + 1) > ch->cap && !slots_grow(ch) && ch->used >= ch->cap)
		return false;
	for (unsigned i = 0; i < ch->cap; i++) {
		unsigned k = (ch->gen + i) & (ch->cap - 1);
		if (!ch->slots[k].used) {
			ch->gen += i + 1;
			*slot = k;
			*id = (ch->gen << SLOT_BITS) | k;
			return true;
		}
	}
	return false;
}

static void slot_fill(struct sftp_chan *ch, unsigned k, uint32_t id, int type, mux_sftp *v,
		      mux_sftp_cb cb, void *data)
{
	struct slot *s = &ch->slots[k];
	s->used = true;
	s->sent_ms = uv_now(ch->conn->loop);
	s->id = id;
	s->type = type;
	s->v = v;
	s->cb = cb;
	s->data = data;
	ch->used++;
	if (v)
		v->npending++;
}

static void chan_fail(struct sftp_chan *ch, int err);

static void pkt_written_cb(mux_write_req *wr, int status)
{
	struct sftp_pkt *p = (struct sftp_pkt *)(void *)((char *)wr - offsetof(struct sftp_pkt, wr));
	struct sftp_chan *ch = p->ch;
	free(p);
	if (status < 0)
		chan_fail(ch, status);
}

static struct sftp_pkt *pkt_new(struct sftp_chan *ch, size_t extra, sfw_out *o)
{
	struct sftp_pkt *p = malloc(sizeof(*p) + extra + 64);
	if (!p)
		return NULL;
	p->ch = ch;
	sfw_out_init(o, p->buf, extra + 64);
	return p;
}

static int pkt_send(struct sftp_chan *ch, struct sftp_pkt *p, sfw_out *o)
{
	long n = sfw_end(o);
	if (n < 0) {
		free(p);
		return UV_EINVAL;
	}
	p->len = (size_t)n;
	int rc = mux_chan_write(&p->wr, ch->mch, (const char *)p->buf, p->len, pkt_written_cb);
	if (rc < 0)
		free(p);
	return rc;
}

int sftp__begin(mux_sftp *v, int type, size_t extra, struct sftp_reqb *b)
{
	struct sftp_chan *ch = v->ch;
	if (v->failed)
		return v->error;
	if (v->closing || !v->told_ready || !chan_live(ch))
		return ch->failed ? ch->error : UV_ENOTCONN;
	if (v->npending >= MUX_SFTP_MAX_INFLIGHT || !slot_find(ch, &b->slot, &b->id))
		return UV_ENOBUFS;
	if (!(b->p = pkt_new(ch, extra, &b->o)))
		return UV_ENOMEM;
	b->type = type;
	sfw_begin(&b->o, type, b->id);
	return 0;
}

int sftp__send(mux_sftp *v, struct sftp_reqb *b, mux_sftp_cb cb, void *data)
{
	int rc = pkt_send(v->ch, b->p, &b->o);
	if (rc == 0)
		slot_fill(v->ch, b->slot, b->id, b->type, v, cb, data);
	return rc;
}

/* CLOSE a handle nobody holds any more; its reply is dropped. */
static void chan_close_handle(struct sftp_chan *ch, const char *h, size_t len)
{
	unsigned k;
	uint32_t id;
	sfw_out o;
	struct sftp_pkt *p;
	if (!chan_live(ch) || !ch->ready || !slot_find(ch, &k, &id) || !(p = pkt_new(ch, len + 8, &o)))
		return;
	sfw_begin(&o, SFW_CLOSE, id);
	sfw_put_str(&o, h, len);
	if (pkt_send(ch, p, &o) == 0)
		slot_fill(ch, k, id, SFW_CLOSE, NULL, NULL, NULL);
}

/* ---- failure and closing --------------------------------------------------- */

/* The channel with the fewest active views, ready ones first; nlive
 * counts the live ones. except is not considered. */
/* Has a request waited STUCK_MS for its reply? The server answers a
 * channel's requests in order, so one that blocks (a FIFO, a hung mount)
 * stalls every client of the channel: a new client goes elsewhere. */
static bool chan_stuck(const struct sftp_chan *ch, uint64_t now)
{
	for (unsigned k = 0; ch->used && k < ch->cap; k++)
		if (ch->slots[k].used && now - ch->slots[k].sent_ms >= STUCK_MS)
			return true;
	return false;
}

/* Lower is better: not stuck, then ready, then fewest active clients. */
static uint64_t chan_rank(const struct sftp_chan *ch, uint64_t now)
{
	return ((uint64_t)chan_stuck(ch, now) << 40) | ((uint64_t)!ch->ready << 32) | ch->nactive;
}

/* The best live channel but except (chan_rank); nlive counts the live
 * ones. */
static struct sftp_chan *pool_pick(mux_conn *c, const struct sftp_chan *except, unsigned *nlive)
{
	struct sftp_chan *best = NULL;
	uint64_t now = uv_now(c->loop), best_rank = 0;
	unsigned n = 0;
	for (struct sftp_chan *ch = c->sftp_chans; ch; ch = ch->next) {
		if (ch == except || !chan_live(ch))
			continue;
		n++;
		uint64_t r = chan_rank(ch, now);
		if (!best || r < best_rank) {
			best = ch;
			best_rank = r;
		}
	}
	if (nlive)
		*nlive = n;
	return best;
}

/* A channel failed before it was ready, on a connection that is up,
 * while others live: its views go to the others. If the server refused
 * it, it most likely counted our channels against its MaxSessions: the
 * limit becomes what it holds now, the channels still closing included
 * (sshd counts them until they are gone), and never goes up again. */
static bool chan_rehome(struct sftp_chan *ch)
{
	mux_conn *c = ch->conn;
	unsigned others;
	if (ch->ready || c->state != CS_UP || !pool_pick(c, ch, &others))
		return false;
	unsigned held = others + c->sftp_closing;
	if (ch->error == MUX_ESSH(LIBSSH2_ERROR_CHANNEL_FAILURE) &&
	    (!c->sftp_limit || held < c->sftp_limit)) {
		c->sftp_limit = held;
		mux__log(c, 1, "the server refused another sftp channel (%s; sshd's MaxSessions?): "
			       "FTP sessions now share %u", mux_strerror(ch->error), held);
	}
	mux_sftp *list = ch->views;
	ch->views = NULL;
	ch->nviews = ch->nactive = 0;
	for (mux_sftp *v = list, *next; v; v = next) {
		next = v->vnext;
		if (v->closing) { /* stays until freed */
			v->vnext = ch->views;
			ch->views = v;
			ch->nviews++;
			continue;
		}
		view_link(v, pool_pick(c, ch, NULL));
	}
	return true;
}

static void chan_fail(struct sftp_chan *ch, int err)
{
	if (ch->failed || ch->closing)
		return;
	ch->failed = true;
	ch->error = err ? err : UV_EPROTO;
	if (chan_rehome(ch)) {
		chan_close(ch);
		return;
	}
	for (unsigned k = 0; k < ch->cap && !ch->closing; k++) {
		struct slot *s = &ch->slots[k];
		if (!s->used)
			continue;
		mux_sftp *v = s->v;
		s->used = false;
		ch->used--;
		if (!v)
			continue;
		view_request_done(v);
		if (!v->closing && s->cb)
			s->cb(v, NULL, ch->error, s->data);
	}
	/* views are freed only in their timers' close callbacks: the list
	 * holds while callbacks close them */
	for (mux_sftp *v = ch->views; v; v = v->vnext) {
		if (v->closing || v->failed)
			continue;
		v->failed = true;
		v->error = ch->error;
		v->cb(v, ch->error, v->data);
	}
	chan_close(ch);
}

static void chan_closed_cb(mux_chan *mch)
{
	struct sftp_chan *ch = mux_chan_data(mch);
	ch->conn->sftp_closing--; /* the conn waits for its channels: still here */
	ch->closed = true;
	ch->mch = NULL;
	chan_maybe_free(ch);
}

/* Out of the pool, pending requests dropped, the channel closing. */
static void chan_close(struct sftp_chan *ch)
{
	if (ch->closing)
		return;
	ch->closing = true;
	mux_conn *c = ch->conn;
	c->sftp_closing++;
	for (struct sftp_chan **pp = &c->sftp_chans; *pp; pp = &(*pp)->next) {
		if (*pp == ch) {
			*pp = ch->next;
			break;
		}
	}
	for (unsigned k = 0; k < ch->cap; k++) {
		struct slot *s = &ch->slots[k];
		bool had = s->used;
		s->used = false;
		if (had && s->v)
			view_request_done(s->v);
	}
	ch->used = 0;
	mux_chan_close(ch->mch, chan_closed_cb);
}

void mux_sftp_close(mux_sftp *v, void (*closed)(void *data), void *data)
{
	if (v->closing)
		return;
	struct sftp_chan *ch = v->ch;
	v->closing = true;
	v->closed_cb = closed;
	v->closed_data = data;
	ch->nactive--;
	/* Its requests' replies are read and dropped (cb is not called for a
	 * closing view); a handle one of them brings is CLOSEd. The handles
	 * it still holds: the channel's end closes them if no one else uses
	 * it, else a CLOSE each. */
	if (chan_live(ch) && ch->nactive == 0)
		chan_close(ch);
	while (v->held) {
		struct held *e = v->held;
		v->held = e->next;
		chan_close_handle(ch, e->h, e->len);
		free(e);
	}
	if (v->npending == 0)
		view_finish(v);
}

/* ---- input ------------------------------------------------------------ */

static void chan_packet(struct sftp_chan *ch, const unsigned char *pkt, size_t len)
{
	sfw_reply rep;
	if (sfw_parse_reply(pkt, len, &rep) < 0) {
		chan_fail(ch, UV_EPROTO);
		return;
	}
	if (!ch->ready) {
		if (rep.type != SFW_VERSION || rep.version < 3) {
			chan_fail(ch, UV_EPROTO);
			return;
		}
		ch->posix_rename = sfw_version_has(&rep, "posix-rename@openssh.com");
		ch->ready = true;
		for (mux_sftp *v = ch->views; v && chan_live(ch); v = v->vnext) {
			if (v->closing || v->failed || v->told_ready)
				continue;
			v->told_ready = true;
			v->cb(v, 0, v->data);
		}
		return;
	}
	unsigned k = rep.id & (SLOTS_MAX - 1);
	struct slot *s = k < ch->cap ? &ch->slots[k] : NULL;
	if (rep.type == SFW_VERSION || !s || !s->used || s->id != rep.id) {
		chan_fail(ch, UV_EPROTO); /* a reply to nothing we asked */
		return;
	}
	mux_sftp *v = s->v;
	mux_sftp_cb cb = s->cb;
	void *data = s->data;
	bool opened = (s->type == SFW_OPEN || s->type == SFW_OPENDIR) && rep.type == SFW_HANDLE;
	s->used = false;
	ch->used--;
	if (!v || v->closing) {
		if (opened) /* its view is closing: nobody will close it */
			chan_close_handle(ch, rep.data, rep.data_len);
		if (v)
			view_request_done(v);
		return;
	}
	v->npending--;
	if (opened)
		held_add(v, rep.data, rep.data_len);
	cb(v, &rep, 0, data);
}

static void chan_alloc_cb(mux_chan *mch, size_t suggested, uv_buf_t *buf)
{
	struct sftp_chan *ch = mux_chan_data(mch);
	(void)suggested;
	if (!chan_live(ch)) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init((char *)ch->in + ch->in_len, (unsigned)(IN_CAP - ch->in_len));
}

static void chan_read_cb(mux_chan *mch, ssize_t n, const uv_buf_t *buf)
{
	struct sftp_chan *ch = mux_chan_data(mch);
	(void)buf;
	if (!chan_live(ch))
		return;
	if (n < 0) {
		chan_fail(ch, n == UV_EOF ? UV_ECONNRESET : (int)n);
		return;
	}
	ch->in_len += (size_t)n;
	size_t off = 0;
	while (chan_live(ch)) {
		long l = sfw_frame(ch->in + off, ch->in_len - off, IN_MAX_PKT);
		if (l == SFW_E_AGAIN)
			break;
		if (l < 0) {
			chan_fail(ch, UV_EPROTO);
			return;
		}
		chan_packet(ch, ch->in + off, (size_t)l);
		off += (size_t)l;
	}
	if (!chan_live(ch))
		return;
	if (off) {
		memmove(ch->in, ch->in + off, ch->in_len - off);
		ch->in_len -= off;
	}
}

static void chan_open_cb(mux_chan *mch, int status, void *data)
{
	struct sftp_chan *ch = data;
	(void)mch;
	if (!chan_live(ch))
		return;
	if (status < 0) {
		chan_fail(ch, status);
		return;
	}
	struct sftp_pkt *p;
	sfw_out o;
	if (!(p = pkt_new(ch, 8, &o))) {
		chan_fail(ch, UV_ENOMEM);
		return;
	}
	sfw_begin(&o, SFW_INIT, 0);
	sfw_put_u32(&o, 3);
	int rc = pkt_send(ch, p, &o);
	if (rc == 0)
		rc = mux_chan_read_start(ch->mch, chan_alloc_cb, chan_read_cb);
	if (rc < 0)
		chan_fail(ch, rc);
}

static struct sftp_chan *chan_new(mux_conn *c)
{
	struct sftp_chan *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	ch->conn = c;
	ch->in = malloc(IN_CAP);
	if (ch->in && slots_grow(ch))
		ch->mch = mux_chan_open_subsystem(c, "sftp", chan_open_cb, ch);
	if (!ch->mch) {
		free(ch->slots);
		free(ch->in);
		free(ch);
		return NULL;
	}
	ch->next = c->sftp_chans;
	c->sftp_chans = ch;
	return ch;
}

mux_sftp *mux_sftp_start(mux_conn *c, mux_sftp_event_cb cb, void *data)
{
	if (!c || c->state != CS_UP)
		return NULL;
	mux_sftp *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	unsigned nlive;
	unsigned limit = c->sftp_limit ? c->sftp_limit : SFTP_CHANNELS_MAX;
	struct sftp_chan *ch = pool_pick(c, NULL, &nlive);
	if (!ch || nlive < limit) {
		struct sftp_chan *fresh = chan_new(c);
		if (fresh)
			ch = fresh;
	}
	if (!ch) {
		free(v);
		return NULL;
	}
	v->cb = cb;
	v->data = data;
	uv_timer_init(c->loop, &v->timer);
	v->timer.data = v;
	view_link(v, ch);
	return v;
}
