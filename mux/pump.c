/*
 * A pump splices one local TCP connection to one SSH channel.
 *
 * Owns: the TCP handle, the channel, a linger timer, and at most PUMP_DEPTH
 * buffers in flight per direction. A buffer read from one side is handed to
 * the other side's write and comes back when that write completes (at once
 * when the local socket takes a channel buffer whole); the
 * source is read only while fewer than PUMP_DEPTH are out, so a slow sink
 * stops its source (TCP: uv_read_stop; channel: no buffer in alloc, which
 * stops SSH window credit) and memory stays bounded.
 *
 * Half-close, per direction (OpenSSH's istate/ostate): local EOF -> channel
 * EOF after the last queued byte; channel EOF -> uv_shutdown after the last
 * queued byte. The pump finishes when both directions have ended, or on the
 * first error (then both ends are closed at once). After the server's data
 * has all been delivered and our write side shut, a client that keeps its
 * end open is given PUMP_LINGER_MS before the pump closes anyway.
 */
#include <stdlib.h>
#include <string.h>

#include "mux/internal.h"

/* Two of libssh2's packets: a 64 KiB upload buffer went as 32700 + 32700 +
 * 136 bytes, and every third packet was a 136-byte one. */
#define PUMP_CHUNK (2 * MUX_PACKET_DATA)
#define PUMP_DEPTH 4
#define PUMP_LINGER_MS 30000
/* Every pump may hold PUMP_DEPTH buffers per direction, which multiplies
 * by the number of transfers (a client that does not read pins its four).
 * All pumps of the process together keep at most PUMP_BUDGET buffers
 * (16 MB); past it a direction gets a buffer only when it has none in
 * flight, so every transfer still moves, one buffer at a time. */
#define PUMP_BUDGET 256

static unsigned pump_bufs_total; /* allocated by all pumps: in flight + free lists */

typedef struct pump_buf {
	union {
		uv_write_t uw;
		mux_write_req mw;
	} req;
	mux_pump *p;
	struct pump_buf *next_free;
	char data[PUMP_CHUNK];
} pump_buf;

struct mux_pump {
	uv_tcp_t tcp;
	uv_timer_t linger;
	uv_shutdown_t shut;
	mux_chan *ch;
	mux_pump_done_cb cb;
	void *data;
	int up_out, down_out;   /* buffers in flight per direction */
	bool tcp_reading, tcp_eof, ch_eof, shut_done;
	bool started, closing, done_called;
	int pending_closes;
	int status;
	uint64_t up, down;
	/* Buffers come back here instead of free(): a transfer reuses the
	 * same few, so the heap does not grow and shrink (and the kernel zero
	 * fresh pages) 64 KB at a time. At most 2 x PUMP_DEPTH exist. */
	pump_buf *free_bufs;
};

static void pump_check(mux_pump *p);
static void pump_abort(mux_pump *p, int status);
static void pump_tcp_read_start(mux_pump *p);

/* A buffer for a direction that has `out` buffers in flight, or NULL when
 * the process-wide budget says wait. */
static pump_buf *buf_get(mux_pump *p, int out)
{
	pump_buf *b = p->free_bufs;
	if (b) {
		p->free_bufs = b->next_free;
		return b;
	}
	if (out > 0 && pump_bufs_total >= PUMP_BUDGET)
		return NULL;
	b = malloc(sizeof(*b));
	if (b) {
		b->p = p;
		pump_bufs_total++;
	}
	return b;
}

static void buf_free(pump_buf *b)
{
	pump_bufs_total--;
	free(b);
}

static void buf_put(pump_buf *b)
{
	if (!b)
		return;
	mux_pump *p = b->p;
	if (pump_bufs_total > PUMP_BUDGET) {
		buf_free(b); /* over budget: don't hoard */
		return;
	}
	b->next_free = p->free_bufs;
	p->free_bufs = b;
}

static pump_buf *buf_of(const char *base)
{
	return base ? container_of(base, pump_buf, data) : NULL;
}

static void pump_maybe_free(mux_pump *p)
{
	if (!p->closing || p->pending_closes > 0 || p->up_out || p->down_out)
		return;
	if (!p->done_called) {
		mux_pump_result r = {p->status, p->up, p->down};
		p->done_called = true;
		if (p->cb)
			p->cb(p, &r, p->data);
	}
	while (p->free_bufs) {
		pump_buf *b = p->free_bufs;
		p->free_bufs = b->next_free;
		buf_free(b);
	}
	free(p);
}

static void pump_handle_closed_cb(uv_handle_t *h)
{
	mux_pump *p = h->data;
	p->pending_closes--;
	pump_maybe_free(p);
}

static void pump_chan_closed_cb(mux_chan *ch)
{
	mux_pump *p = mux_chan_data(ch);
	p->ch = NULL;
	p->pending_closes--;
	pump_maybe_free(p);
}

static void pump_close_all(mux_pump *p, int status)
{
	if (p->closing)
		return;
	p->closing = true;
	p->status = status;
	p->pending_closes = 2;
	uv_close((uv_handle_t *)&p->tcp, pump_handle_closed_cb);
	uv_close((uv_handle_t *)&p->linger, pump_handle_closed_cb);
	if (p->ch) {
		p->pending_closes++;
		mux_chan_close(p->ch, pump_chan_closed_cb);
	}
}

static void pump_abort(mux_pump *p, int status)
{
	pump_close_all(p, status ? status : UV_ECONNABORTED);
}

/* ---- local -> channel --------------------------------------------------- */

static void tcp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
	mux_pump *p = h->data;
	(void)suggested;
	pump_buf *b = p->up_out < PUMP_DEPTH ? buf_get(p, p->up_out) : NULL;
	*out = b ? uv_buf_init(b->data, PUMP_CHUNK) : uv_buf_init(NULL, 0);
}

static void up_write_cb(mux_write_req *req, int status)
{
	pump_buf *b = container_of(req, pump_buf, req.mw);
	mux_pump *p = b->p;
	buf_put(b);
	p->up_out--;
	if (status < 0 && !p->closing)
		pump_abort(p, status);
	if (p->closing) {
		pump_maybe_free(p);
		return;
	}
	if (!p->tcp_reading && !p->tcp_eof && p->up_out < PUMP_DEPTH)
		pump_tcp_read_start(p);
	pump_check(p);
}

static void tcp_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	mux_pump *p = s->data;
	pump_buf *b = buf_of(buf->base);

	if (n > 0 && !p->closing) {
		p->up += (uint64_t)n;
		p->up_out++;
		int rc = mux_chan_write(&b->req.mw, p->ch, b->data, (size_t)n, up_write_cb);
		if (rc < 0) {
			p->up_out--;
			buf_put(b);
			pump_abort(p, rc);
			return;
		}
		if (p->up_out >= PUMP_DEPTH) {
			uv_read_stop(s);
			p->tcp_reading = false;
		}
		return;
	}
	buf_put(b);
	if (n == 0 || p->closing)
		return;
	if (n == UV_ENOBUFS) {
		uv_read_stop(s);
		p->tcp_reading = false;
		return;
	}
	uv_read_stop(s);
	p->tcp_reading = false;
	if (n == UV_EOF) {
		p->tcp_eof = true;
		mux_chan_shutdown(p->ch);
		pump_check(p);
		return;
	}
	pump_abort(p, (int)n);
}

static void pump_tcp_read_start(mux_pump *p)
{
	if (uv_read_start((uv_stream_t *)&p->tcp, tcp_alloc_cb, tcp_read_cb) == 0)
		p->tcp_reading = true;
}

/* ---- channel -> local --------------------------------------------------- */

static void ch_alloc_cb(mux_chan *ch, size_t suggested, uv_buf_t *out)
{
	mux_pump *p = mux_chan_data(ch);
	(void)suggested;
	pump_buf *b = (p->down_out < PUMP_DEPTH && !p->closing) ? buf_get(p, p->down_out) : NULL;
	*out = b ? uv_buf_init(b->data, PUMP_CHUNK) : uv_buf_init(NULL, 0);
}

static void ch_read_cb(mux_chan *ch, ssize_t n, const uv_buf_t *buf);

static void down_write_cb(uv_write_t *req, int status)
{
	pump_buf *b = container_of(req, pump_buf, req.uw);
	mux_pump *p = b->p;
	buf_put(b);
	p->down_out--;
	if (status < 0 && !p->closing)
		pump_abort(p, status);
	if (p->closing) {
		pump_maybe_free(p);
		return;
	}
	if (!p->ch_eof && p->down_out < PUMP_DEPTH)
		mux_chan_read_start(p->ch, ch_alloc_cb, ch_read_cb);
}

static void shut_cb(uv_shutdown_t *req, int status)
{
	mux_pump *p = req->data;
	if (p->closing)
		return;
	if (status < 0) {
		pump_abort(p, status);
		return;
	}
	p->shut_done = true;
	pump_check(p);
}

static void ch_read_cb(mux_chan *ch, ssize_t n, const uv_buf_t *buf)
{
	mux_pump *p = mux_chan_data(ch);
	pump_buf *b = buf_of(buf->base);

	if (n > 0 && !p->closing) {
		uv_buf_t w = uv_buf_init(b->data, (unsigned)n);
		p->down += (uint64_t)n;
		/* Hand it to the socket at once when it takes it all: a queued
		 * uv_write ends in an epoll_ctl per buffer (libuv 1.44 re-arms
		 * the watcher when the write queue drains), 31k per GiB. libuv
		 * says EAGAIN while an earlier write is queued, so nothing
		 * overtakes the rest of a buffer (tests/integration/test_pump.py). */
		int done = uv_try_write((uv_stream_t *)&p->tcp, &w, 1);
		if (done == (int)n) {
			buf_put(b);
			return;
		}
		if (done < 0 && done != UV_EAGAIN) {
			buf_put(b);
			pump_abort(p, done);
			return;
		}
		if (done > 0)
			w = uv_buf_init(b->data + done, (unsigned)(n - done));
		p->down_out++;
		int rc = uv_write(&b->req.uw, (uv_stream_t *)&p->tcp, &w, 1, down_write_cb);
		if (rc < 0) {
			p->down_out--;
			buf_put(b);
			pump_abort(p, rc);
		}
		return;
	}
	buf_put(b);
	if (n == 0 || p->closing)
		return;
	if (n == UV_EOF) {
		p->ch_eof = true;
		mux_chan_read_stop(ch);
		p->shut.data = p;
		int rc = uv_shutdown(&p->shut, (uv_stream_t *)&p->tcp, shut_cb);
		if (rc < 0)
			pump_abort(p, rc);
		return;
	}
	pump_abort(p, (int)n);
}

static void linger_cb(uv_timer_t *t)
{
	mux_pump *p = t->data;
	/* Everything the server sent was delivered; the client just has not
	 * closed its end. */
	pump_close_all(p, 0);
}

static void pump_check(mux_pump *p)
{
	if (p->closing)
		return;
	bool up_done = p->tcp_eof && p->up_out == 0;
	bool down_done = p->ch_eof && p->shut_done;
	if (up_done && down_done) {
		pump_close_all(p, 0);
		return;
	}
	if (down_done && !uv_is_active((uv_handle_t *)&p->linger))
		uv_timer_start(&p->linger, linger_cb, PUMP_LINGER_MS, 0);
}

static void ch_open_cb(mux_chan *ch, int status, void *data)
{
	mux_pump *p = data;
	(void)ch;
	if (p->closing)
		return;
	if (status < 0) {
		pump_abort(p, status);
		return;
	}
	mux_chan_read_start(p->ch, ch_alloc_cb, ch_read_cb);
	pump_tcp_read_start(p);
}

/* ---- public ------------------------------------------------------------- */

mux_pump *mux_pump_new(uv_loop_t *loop, mux_pump_done_cb cb, void *data)
{
	mux_pump *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->cb = cb;
	p->data = data;
	uv_tcp_init(loop, &p->tcp);
	p->tcp.data = p;
	uv_timer_init(loop, &p->linger);
	p->linger.data = p;
	return p;
}

uv_tcp_t *mux_pump_tcp(mux_pump *p)
{
	return &p->tcp;
}

int mux_pump_start(mux_pump *p, mux_conn *c, const char *host, uint16_t port)
{
	if (p->started || p->closing)
		return UV_EINVAL;
	p->started = true;
	if (!c || !mux_conn_is_up(c))
		return UV_ENOTCONN;
	p->ch = mux_chan_open(c, host, port, ch_open_cb, p);
	if (!p->ch)
		return UV_ENOMEM;
	return 0;
}

void mux_pump_close(mux_pump *p)
{
	pump_close_all(p, UV_ECANCELED);
}

void mux_pump_stats(const mux_pump *p, uint64_t *bytes_up, uint64_t *bytes_down)
{
	*bytes_up = p->up;
	*bytes_down = p->down;
}
