/*
 * Shared SFTP channels (see sftp_chan.h and sftp.h): one "sftp" subsystem
 * channel, the views on it, request slots, and reply dispatch. Which
 * channel a view gets: sftp_pool.c.
 *
 * A channel: opens -> INIT sent -> VERSION read -> ready. A protocol
 * error, a channel error or EOF fails it: every pending request is told
 * (err < 0), then every view gets the event; the channel closes itself.
 * One that fails before it was ready may instead hand its views to the
 * others (sftp__rehome).
 *
 * Ownership: the pool (conn->sftp_chans) owns each channel until it
 * starts closing (failed, or idle past its linger timer); a closing
 * channel owns itself and is freed once its mux_chan and its timer have
 * closed and no view names it. A view is its user's; it
 * names its channel until it is freed (in its timer's close callback,
 * never inside mux_sftp_close, and not before its last request is
 * answered or dropped). A closing view's replies are read and dropped
 * (and a handle one carries is closed).
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
#define SLOTS_START 128
/* A channel refused while ours were closing waits this long for one. */
#define RETRY_WAIT_MS 2000

static void chan_close(struct sftp_chan *ch);

static void chan_maybe_free(struct sftp_chan *ch)
{
	if (!ch->closed || !ch->linger_closed || ch->nviews > 0)
		return;
	free(ch->slots);
	free(ch->in);
	free(ch);
}

/* ---- views -------------------------------------------------------------- */

static void view_unlink(mux_sftp *v)
{
	struct sftp_chan *ch = v->ch;
	mux_sftp **pp = &ch->views;
	while (*pp && *pp != v)
		pp = &(*pp)->vnext;
	if (*pp)
		*pp = v->vnext;
	ch->nviews--; /* only closing views are unlinked: not in nactive */
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

uint64_t sftp__quiet_ms(const struct sftp_chan *ch, const mux_sftp *v)
{
	if (v ? v->npending == 0 : ch->used == 0) /* then ch may be closed, its conn gone */
		return 0;
	uint64_t now = uv_now(ch->conn->loop), oldest = now;
	for (unsigned k = 0; k < ch->cap; k++) {
		const struct slot *s = &ch->slots[k];
		if (s->used && (!v || s->v == v) && s->sent_ms < oldest)
			oldest = s->sent_ms;
	}
	uint64_t since = oldest > ch->last_reply_ms ? oldest : ch->last_reply_ms;
	return now > since ? now - since : 0;
}

uint64_t mux_sftp_waited_ms(const mux_sftp *v)
{
	return sftp__quiet_ms(v->ch, v);
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
	struct sftp_pkt *p = container_of(wr, struct sftp_pkt, wr);
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
	if (v->closing || !v->told_ready || !sftp__chan_live(ch))
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
	/* every reply is somebody's: a request without a callback is a bug */
	if (!cb) {
		free(b->p);
		return UV_EINVAL;
	}
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
	if (!sftp__chan_live(ch) || !ch->ready || !slot_find(ch, &k, &id) || !(p = pkt_new(ch, len + 8, &o)))
		return;
	sfw_begin(&o, SFW_CLOSE, id);
	sfw_put_str(&o, h, len);
	if (pkt_send(ch, p, &o) == 0)
		slot_fill(ch, k, id, SFW_CLOSE, NULL, NULL, NULL);
}

/* ---- failure and closing --------------------------------------------------- */

/* The channel with the fewest active views, ready ones first; nlive
 * counts the live ones. except is not considered. */
static void chan_fail(struct sftp_chan *ch, int err)
{
	if (ch->failed || ch->closing)
		return;
	ch->failed = true;
	ch->error = err ? err : UV_EPROTO;
	if (sftp__rehome(ch)) {
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

static void chan_open_cb(mux_chan *mch, int status, void *data);

static void refused_closed_cb(mux_chan *mch)
{
	(void)mch; /* the refused try of a channel that opened again */
}

/* Open a refused channel again. Its refused mux_chan is kept until
 * then: the connection, which waits for every channel, is still here. */
static void retry_cb(uv_timer_t *t)
{
	struct sftp_chan *ch = t->data;
	if (!sftp__chan_live(ch) || !ch->retry_wait)
		return;
	ch->retry_wait = false;
	mux_chan *fresh = mux_chan_open_subsystem(ch->conn, "sftp", chan_open_cb, ch);
	if (!fresh) {
		chan_fail(ch, ch->conn->state == CS_UP ? UV_ENOMEM : UV_ENOTCONN);
		return;
	}
	mux_chan_close(ch->mch, refused_closed_cb);
	ch->mch = fresh;
}

static void chan_closed_cb(mux_chan *mch)
{
	struct sftp_chan *ch = mux_chan_data(mch);
	mux_conn *c = ch->conn; /* the conn waits for its channels: still here */
	ch->closed = true;
	ch->mch = NULL;
	if (!ch->opened) { /* never held by the server: in nobody's way */
		if (c->state == CS_UP) {
			chan_maybe_free(ch);
			return;
		}
	} else {
		c->sftp_closing--;
	}
	/* One gone: a channel refused while it was closing may open now
	 * (from the loop, not inside the mux's channel service), or fails
	 * now if the connection went. */
	if (c->state == CS_UP) {
		for (struct sftp_chan *w = c->sftp_chans; w; w = w->next)
			if (w->retry_wait && sftp__chan_live(w))
				uv_timer_start(&w->linger, retry_cb, 0, 0); /* the deadline's place */
	} else {
		for (;;) {
			struct sftp_chan *w = c->sftp_chans;
			while (w && !(w->retry_wait && sftp__chan_live(w)))
				w = w->next;
			if (!w)
				break;
			chan_fail(w, UV_ENOTCONN); /* out of the pool: not found again */
		}
	}
	chan_maybe_free(ch);
}

/* None of ours closed in RETRY_WAIT_MS (the server may be sitting on
 * them): fail rather than keep a login waiting. */
static void retry_deadline_cb(uv_timer_t *t)
{
	struct sftp_chan *ch = t->data;
	if (sftp__chan_live(ch) && ch->retry_wait)
		chan_fail(ch, MUX_ESSH(LIBSSH2_ERROR_CHANNEL_FAILURE));
}

/* The server refused the channel while no other of ours lives but some
 * are still closing: sshd counts those until they are gone (MaxSessions
 * 1, and a script's session per file: the next session's channel came
 * while the last one's was closing). Open again once one has closed
 * (RETRY_WAIT_MS at most), or at once if none is closing (it may have
 * closed while the open was on its way), twice at most, instead of
 * failing the clients. The limit is learned. */
static bool chan_retry(struct sftp_chan *ch, int status)
{
	mux_conn *c = ch->conn;
	if (status != MUX_ESSH(LIBSSH2_ERROR_CHANNEL_FAILURE) || c->state != CS_UP ||
	    ch->retries >= 2)
		return false;
	for (const struct sftp_chan *o = c->sftp_chans; o; o = o->next)
		if (o != ch && sftp__chan_live(o))
			return false; /* sftp__rehome moves the clients there */
	if (c->sftp_closing == 0 && ch->retries > 0)
		return false;
	ch->retries++;
	sftp__learn_limit(c, status, 0);
	ch->retry_wait = true;
	if (c->sftp_closing == 0) /* the one in the way is gone already */
		uv_timer_start(&ch->linger, retry_cb, 0, 0);
	else
		uv_timer_start(&ch->linger, retry_deadline_cb, RETRY_WAIT_MS, 0);
	return true;
}

static void linger_closed_cb(uv_handle_t *h)
{
	struct sftp_chan *ch = h->data;
	ch->linger_closed = true;
	chan_maybe_free(ch);
}

static void linger_cb(uv_timer_t *t)
{
	struct sftp_chan *ch = t->data;
	if (sftp__chan_live(ch) && ch->nactive == 0)
		chan_close(ch);
}

/* Out of the pool, pending requests dropped, the channel closing. */
static void chan_close(struct sftp_chan *ch)
{
	if (ch->closing)
		return;
	ch->closing = true;
	uv_timer_stop(&ch->linger);
	uv_close((uv_handle_t *)&ch->linger, linger_closed_cb);
	mux_conn *c = ch->conn;
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
	if (ch->opened)
		c->sftp_closing++; /* sshd counts it until it is gone */
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
	 * it still holds: the channel's end closes them if it ends, else a
	 * CLOSE each. The last client leaves a ready channel idle for the
	 * next, unless another idle one is there already. */
	if (sftp__chan_live(ch) && ch->nactive == 0) {
		if (sftp__pool_keep_idle(ch))
			uv_timer_start(&ch->linger, linger_cb, SFTP_LINGER_MS, 0);
		else
			chan_close(ch);
	}
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
		for (mux_sftp *v = ch->views; v && sftp__chan_live(ch); v = v->vnext) {
			if (v->closing || v->failed || v->told_ready)
				continue;
			v->told_ready = true;
			v->cb(v, 0, v->data);
		}
		return;
	}
	ch->last_reply_ms = uv_now(ch->conn->loop);
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
	if (!sftp__chan_live(ch)) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init((char *)ch->in + ch->in_len, (unsigned)(IN_CAP - ch->in_len));
}

static void chan_read_cb(mux_chan *mch, ssize_t n, const uv_buf_t *buf)
{
	struct sftp_chan *ch = mux_chan_data(mch);
	(void)buf;
	if (!sftp__chan_live(ch))
		return;
	if (n < 0) {
		chan_fail(ch, n == UV_EOF ? UV_ECONNRESET : (int)n);
		return;
	}
	ch->in_len += (size_t)n;
	size_t off = 0;
	while (sftp__chan_live(ch)) {
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
	if (!sftp__chan_live(ch))
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
	if (!sftp__chan_live(ch))
		return;
	if (status < 0) {
		if (!chan_retry(ch, status))
			chan_fail(ch, status);
		return;
	}
	ch->opened = true;
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

struct sftp_chan *sftp__chan_new(mux_conn *c)
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
	uv_timer_init(c->loop, &ch->linger);
	ch->linger.data = ch;
	ch->next = c->sftp_chans;
	c->sftp_chans = ch;
	return ch;
}
