/*
 * Channels: direct-tcpip channels with a stream interface, serviced
 * round-robin from mux__service() (conn.c).
 *
 * Life of a channel: QUEUED (in the open queue) -> OPENING (-> STARTING
 * for a subsystem) -> OPEN, or FAILED when the open is refused or the
 * connection dies; the opening steps are chan_open.c's. The owner always
 * ends it with mux_chan_close(); the channel is freed (libssh2_channel_free,
 * which waits for the server's CLOSE) in the reap step of a later service,
 * and only then does the close callback run.
 *
 * Flow control, receive side: channels are opened with a window of 0 and
 * credit is granted explicitly. A channel is read only while its consumer
 * gives buffers (alloc_cb), and credit is topped up only after reads, so
 * "promised but not delivered" (libssh2's window, which it counts down on
 * reads) stays under window_target. A consumer that stops reading stops the server
 * through the SSH window while every other channel keeps flowing. How
 * much credit, and when: window.c.
 *
 * Send side: a channel writes only while the connection's output buffer is
 * under MUX_OUT_SOFT and the server's window is open; each channel gets a
 * quantum per pass so one upload cannot starve the others.
 */
#include <stdlib.h>
#include <string.h>

#include "mux/internal.h"

#define WRITE_QUANTUM (128 * 1024)
#define READ_QUANTUM (256 * 1024)

void mux__chan_poke(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	if (c->servicing)
		c->reservice = true;
	else
		mux__kick(c);
}

void *mux_chan_data(const mux_chan *ch)
{
	return ch->data;
}

int mux_chan_read_start(mux_chan *ch, mux_alloc_cb alloc, mux_read_cb read)
{
	if (!alloc || !read)
		return UV_EINVAL;
	if (ch->close_wanted)
		return UV_EINVAL;
	ch->alloc_cb = alloc;
	ch->read_cb = read;
	ch->reading = true;
	mux__chan_poke(ch);
	return 0;
}

void mux_chan_read_stop(mux_chan *ch)
{
	ch->reading = false;
}

int mux_chan_write(mux_write_req *req, mux_chan *ch, const char *base, size_t len,
		   mux_write_cb cb)
{
	if (ch->close_wanted || ch->shutdown_wanted)
		return UV_EPIPE;
	if (ch->state == CH_FAILED || ch->state == CH_FREEING)
		return ch->error ? ch->error : UV_EPIPE;
	req->next = NULL;
	req->ch = ch;
	req->base = base;
	req->len = len;
	req->off = 0;
	req->cb = cb;
	if (ch->wq_tail)
		ch->wq_tail->next = req;
	else
		ch->wq_head = req;
	ch->wq_tail = req;
	mux__chan_poke(ch);
	return 0;
}

int mux_chan_shutdown(mux_chan *ch)
{
	if (ch->close_wanted)
		return UV_EINVAL;
	ch->shutdown_wanted = true;
	mux__chan_poke(ch);
	return 0;
}

void mux_chan_close(mux_chan *ch, mux_close_cb cb)
{
	if (ch->close_wanted)
		return;
	ch->close_wanted = true;
	ch->close_cb = cb;
	ch->reading = false;
	mux__chan_poke(ch);
}

/* ---- helpers used while servicing --------------------------------------- */

void mux__chan_fail_writes(mux_chan *ch, int err)
{
	while (ch->wq_head) {
		mux_write_req *r = ch->wq_head;
		ch->wq_head = r->next;
		if (!ch->wq_head)
			ch->wq_tail = NULL;
		r->cb(r, err);
	}
}

void mux__chan_set_failed(mux_chan *ch, int err)
{
	if (!ch->error)
		ch->error = err;
	if (ch->state != CH_FREEING)
		ch->state = CH_FAILED;
}

void mux__chan_fail_all(mux_conn *c, int err)
{
	for (mux_chan *ch = c->chans; ch; ch = ch->next) {
		if ((ch->state == CH_QUEUED || ch->state == CH_OPENING || ch->state == CH_STARTING) &&
		    !ch->open_told) {
			ch->open_cb_due = true;
			ch->open_status = err;
			ch->open_told = true;
		}
		if (ch->state == CH_OPENING || ch->state == CH_STARTING)
			c->nopening--;
		if (ch->pending_lc) {
			/* still opening: freed with the channel (patch 0003
			 * frees its request; nothing is sent for it) */
			ch->lc = ch->pending_lc;
			ch->pending_lc = NULL;
		}
		mux__chan_set_failed(ch, err);
	}
	c->open_head = c->open_tail = NULL;
	mux__kick(c);
}

static bool chan_do_writes(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	size_t quantum = WRITE_QUANTUM;
	bool more = false;

	while (ch->wq_head && ch->state == CH_OPEN) {
		mux_write_req *r = ch->wq_head;
		if (r->off == r->len) {
			ch->wq_head = r->next;
			if (!ch->wq_head)
				ch->wq_tail = NULL;
			r->cb(r, 0);
			continue;
		}
		if (c->out_len >= MUX_OUT_SOFT)
			break;
		if (quantum == 0) {
			more = true;
			break;
		}
		size_t want = ch->wr_pending;
		if (!want) {
			if (libssh2_channel_window_write_ex(ch->lc, NULL) == 0)
				break; /* waiting for the server's window adjust */
			want = r->len - r->off;
			if (want > quantum)
				want = quantum;
		}
		/* After EAGAIN libssh2 holds a packet header built for the first
		 * call's length and sends that many bytes from the buffer of the
		 * next call: repeat the same pointer and length. */
		ssize_t n = libssh2_channel_write(ch->lc, r->base + r->off, want);
		if (n == LIBSSH2_ERROR_EAGAIN) {
			ch->wr_pending = want;
			break;
		}
		ch->wr_pending = 0;
		if (n < 0) {
			mux__log(c, 2, "channel %u write: %s", ch->id, mux_strerror(MUX_ESSH((int)n)));
			mux__chan_set_failed(ch, MUX_ESSH((int)n));
			break;
		}
		r->off += (size_t)n;
		quantum -= (size_t)n < quantum ? (size_t)n : quantum;
	}
	if (!ch->wq_head && ch->shutdown_wanted && !ch->eof_sent && ch->state == CH_OPEN) {
		int rc = libssh2_channel_send_eof(ch->lc);
		if (rc == 0)
			ch->eof_sent = true;
		else if (rc != LIBSSH2_ERROR_EAGAIN)
			mux__chan_set_failed(ch, MUX_ESSH(rc));
	}
	return more;
}

static bool chan_do_reads(mux_chan *ch)
{
	size_t quantum = READ_QUANTUM;
	bool more = false;

	while (ch->reading && !ch->eof_delivered && ch->state == CH_OPEN && !ch->close_wanted) {
		if (quantum == 0) {
			more = true;
			break;
		}
		uv_buf_t b = uv_buf_init(NULL, 0);
		ch->alloc_cb(ch, MUX_READ_CHUNK, &b);
		if (!b.base || b.len == 0) {
			ch->reading = false; /* resumed by mux_chan_read_start() */
			break;
		}
		/* Never ask for more than the credit libssh2 counts (win >=
		 * what it has queued, since it drops what exceeds the window):
		 * asking for more makes libssh2_channel_read send a window
		 * adjust of its own, and that one, interrupted by a key
		 * exchange, is resumed with a recomputed (even negative,
		 * wrapped) amount. Credit is mux__window_grant's alone (window.c). */
		uint32_t win = libssh2_channel_window_read_ex(ch->lc, NULL, NULL);
		size_t want = b.len < win ? b.len : win;
		if (want == 0) {
			/* nothing can be queued without credit; only EOF can be */
			if (libssh2_channel_eof(ch->lc) == 1) {
				ch->eof_delivered = true;
				ch->read_cb(ch, UV_EOF, &b);
			} else {
				ch->read_cb(ch, 0, &b);
			}
			break;
		}
		ssize_t n = libssh2_channel_read(ch->lc, b.base, want);
		if (n > 0) {
			ch->delivered += (uint64_t)n;
			quantum -= (size_t)n < quantum ? (size_t)n : quantum;
			ch->read_cb(ch, n, &b);
			continue;
		}
		if (n == LIBSSH2_ERROR_EAGAIN) {
			ch->read_cb(ch, 0, &b);
			break;
		}
		if (n == 0) {
			/* libssh2 returns 0 only once the server sent EOF or CLOSE
			 * and every byte before it has been read. */
			ch->eof_delivered = true;
			ch->read_cb(ch, UV_EOF, &b);
			break;
		}
		mux__chan_set_failed(ch, MUX_ESSH((int)n));
		ch->read_cb(ch, 0, &b);
		break;
	}
	if (ch->state == CH_OPEN && !ch->close_wanted)
		mux__window_grant(ch);
	return more;
}

/* Deliver what the owner has not been told yet: the open result, a failure
 * to a reader, failed writes. */
static void chan_deliver(mux_chan *ch)
{
	if (ch->open_cb_due) {
		ch->open_cb_due = false;
		if (ch->open_cb)
			ch->open_cb(ch, ch->open_status, ch->data);
	}
	if (ch->state == CH_FAILED) {
		mux__chan_fail_writes(ch, ch->error);
		if (ch->reading && !ch->err_delivered && !ch->eof_delivered && ch->read_cb) {
			uv_buf_t b = uv_buf_init(NULL, 0);
			ch->err_delivered = true;
			ch->read_cb(ch, ch->error, &b);
		}
	}
}

static void chan_unlink(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	if (ch->prev)
		ch->prev->next = ch->next;
	else
		c->chans = ch->next;
	if (ch->next)
		ch->next->prev = ch->prev;
	c->nchans--;
	mux__window_forget(ch);
}

/* Free what the owner closed. Returns true when ch is gone. */
static bool chan_reap(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	if (!ch->close_wanted || ch->state == CH_QUEUED)
		return false;
	if (ch->state == CH_OPENING || ch->state == CH_STARTING) {
		/* The request cannot be taken back: the owner is done with
		 * the channel now, and it stays here, an orphan, until the
		 * server answers (then it is closed and freed), or the
		 * connection goes. */
		mux__chan_fail_writes(ch, UV_ECANCELED);
		mux_close_cb cb = ch->close_cb;
		ch->close_cb = NULL;
		ch->open_cb = NULL;
		ch->read_cb = NULL;
		ch->alloc_cb = NULL;
		if (cb)
			cb(ch); /* may still ask mux_chan_data() */
		ch->data = NULL;
		return false;
	}
	mux__chan_fail_writes(ch, UV_ECANCELED);
	if (ch->lc) {
		ch->state = CH_FREEING;
		int rc = libssh2_channel_free(ch->lc);
		if (rc == LIBSSH2_ERROR_EAGAIN && c->state == CS_UP)
			return false;
		ch->lc = NULL;
	}
	chan_unlink(ch);
	mux__log(c, 3, "channel %u to %s closed", ch->id, ch->desc);
	free(ch->open_msg);
	mux_close_cb cb = ch->close_cb;
	if (cb)
		cb(ch);
	free(ch);
	return true;
}

static void chan_open_timer_cb(uv_timer_t *t)
{
	mux__kick(t->data);
}

/* Move the first channel to the end so the next pass starts elsewhere. */
static void chans_rotate(mux_conn *c)
{
	mux_chan *first = c->chans;
	if (!first || !first->next)
		return;
	mux_chan *last = first;
	while (last->next)
		last = last->next;
	c->chans = first->next;
	c->chans->prev = NULL;
	first->prev = last;
	first->next = NULL;
	last->next = first;
}

void mux__chan_service_all(mux_conn *c)
{
	bool more = false;

	if (c->state == CS_UP) {
#ifndef LIBSSH2_HAVE_SESSION_PROCESS_INPUT
		/* Without our libssh2 patch (conn.c uses it): let libssh2 take
		 * in what arrived (window adjusts, EOFs, data for any channel)
		 * even when no consumer wants to read: a zero-length read moves
		 * the transport and touches nothing else (window credit is
		 * ours, see window.c). It needs an open channel. */
		if (c->in_len > 0) {
			for (mux_chan *ch = c->chans; ch; ch = ch->next)
				if (ch->state == CH_OPEN) {
					char dummy;
					(void)libssh2_channel_read(ch->lc, &dummy, 0);
					break;
				}
		}
#endif
		mux__chan_service_opens(c);
		for (mux_chan *ch = c->chans, *next; ch; ch = next) {
			next = ch->next;
			mux__chan_poll_open(ch);
			if (ch->open_cb_due)
				chan_deliver(ch);
			if (ch->state != CH_OPEN || ch->close_wanted)
				continue;
			more |= chan_do_writes(ch);
			more |= chan_do_reads(ch);
		}
		chans_rotate(c);
	}
	for (mux_chan *ch = c->chans, *next; ch; ch = next) {
		next = ch->next;
		chan_deliver(ch);
		chan_reap(ch);
	}
	if (more)
		c->reservice = true;
	/* open deadlines need a wake-up even when nothing arrives */
	bool timing = uv_is_active((uv_handle_t *)&c->open_timer);
	if (c->nopening && !timing && c->state == CS_UP)
		uv_timer_start(&c->open_timer, chan_open_timer_cb, 1000, 1000);
	else if ((!c->nopening || c->state != CS_UP) && timing)
		uv_timer_stop(&c->open_timer);
}

bool mux__has_open_chan(const mux_conn *c)
{
	for (const mux_chan *ch = c->chans; ch; ch = ch->next)
		if (ch->state == CH_OPEN)
			return true;
	return false;
}
