/*
 * Channels: direct-tcpip channels (and "session" channels running a
 * subsystem, such as sftp) with a stream interface, serviced round-robin
 * from conn_service().
 *
 * Life of a channel: QUEUED (in the open queue; libssh2 keeps open state
 * per session, so one open is in flight at a time) -> OPENING -> OPEN
 * (subsystem channels pass through STARTING, still at the head of the
 * queue, while their "subsystem" request is answered), or
 * FAILED when the open is refused or the connection dies. The owner always
 * ends it with mux_chan_close(); the channel is freed (libssh2_channel_free,
 * which waits for the server's CLOSE) in the reap step of a later service,
 * and only then does the close callback run.
 *
 * Flow control, receive side: channels are opened with a window of 0 and
 * credit is granted explicitly. A channel is read only while its consumer
 * gives buffers (alloc_cb), and credit is topped up only after reads, so
 * "promised but not delivered" (libssh2's window, which it counts down on
 * reads) stays under window_target. A consumer that stops reading stops the server
 * through the SSH window while every other channel keeps flowing. The
 * target doubles while the consumer keeps up, up to opts.window_max and
 * within the connection's budget, so long fat links fill.
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

static void chan_poke(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	if (c->servicing)
		c->reservice = true;
	else
		mux__kick(c);
}

static void put_u32(char **p, uint32_t v)
{
	unsigned char *u = (unsigned char *)*p;
	u[0] = (unsigned char)(v >> 24);
	u[1] = (unsigned char)(v >> 16);
	u[2] = (unsigned char)(v >> 8);
	u[3] = (unsigned char)v;
	*p += 4;
}

static void put_str(char **p, const char *s)
{
	size_t n = strlen(s);
	put_u32(p, (uint32_t)n);
	memcpy(*p, s, n);
	*p += n;
}

static void chan_link(mux_conn *c, mux_chan *ch);

mux_chan *mux_chan_open(mux_conn *c, const char *host, uint16_t port, mux_open_cb cb,
			void *data)
{
	static const char orig[] = "127.0.0.1";
	if (!c || c->state != CS_UP || !host)
		return NULL;
	size_t hl = strlen(host);
	if (hl == 0 || hl > 255)
		return NULL;
	mux_chan *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	ch->open_msg_len = 4 + hl + 4 + 4 + strlen(orig) + 4;
	ch->open_msg = malloc(ch->open_msg_len);
	if (!ch->open_msg) {
		free(ch);
		return NULL;
	}
	char *p = ch->open_msg;
	put_str(&p, host);
	put_u32(&p, port);
	put_str(&p, orig);
	put_u32(&p, 0);
	ch->conn = c;
	ch->id = ++c->next_id;
	ch->state = CH_QUEUED;
	ch->open_cb = cb;
	ch->data = data;
	snprintf(ch->desc, sizeof(ch->desc), "%s:%u", host, port);
	chan_link(c, ch);
	return ch;
}

/* Link at the head of the channel list, the tail of the open queue. */
static void chan_link(mux_conn *c, mux_chan *ch)
{
	ch->prev = NULL;
	ch->next = c->chans;
	if (c->chans)
		c->chans->prev = ch;
	c->chans = ch;
	c->nchans++;
	if (c->open_tail)
		c->open_tail->open_next = ch;
	else
		c->open_head = ch;
	c->open_tail = ch;
	chan_poke(ch);
}

mux_chan *mux_chan_open_subsystem(mux_conn *c, const char *subsystem, mux_open_cb cb,
				  void *data)
{
	if (!c || c->state != CS_UP || !subsystem || !*subsystem || strlen(subsystem) > 64)
		return NULL;
	mux_chan *ch = calloc(1, sizeof(*ch));
	if (!ch || !(ch->open_msg = strdup(subsystem))) {
		free(ch);
		return NULL;
	}
	ch->open_msg_len = strlen(subsystem);
	ch->subsystem = true;
	ch->conn = c;
	ch->id = ++c->next_id;
	ch->state = CH_QUEUED;
	ch->open_cb = cb;
	ch->data = data;
	snprintf(ch->desc, sizeof(ch->desc), "subsystem %s", subsystem);
	chan_link(c, ch);
	return ch;
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
	chan_poke(ch);
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
	chan_poke(ch);
	return 0;
}

int mux_chan_shutdown(mux_chan *ch)
{
	if (ch->close_wanted)
		return UV_EINVAL;
	ch->shutdown_wanted = true;
	chan_poke(ch);
	return 0;
}

void mux_chan_close(mux_chan *ch, mux_close_cb cb)
{
	if (ch->close_wanted)
		return;
	ch->close_wanted = true;
	ch->close_cb = cb;
	ch->reading = false;
	chan_poke(ch);
}

/* ---- helpers used while servicing --------------------------------------- */

static void chan_fail_writes(mux_chan *ch, int err)
{
	while (ch->wq_head) {
		mux_write_req *r = ch->wq_head;
		ch->wq_head = r->next;
		if (!ch->wq_head)
			ch->wq_tail = NULL;
		r->cb(r, err);
	}
}

static void chan_set_failed(mux_chan *ch, int err)
{
	if (!ch->error)
		ch->error = err;
	if (ch->state != CH_FREEING)
		ch->state = CH_FAILED;
}

void mux__chan_fail_all(mux_conn *c, int err)
{
	for (mux_chan *ch = c->chans; ch; ch = ch->next) {
		if (ch->state == CH_QUEUED || ch->state == CH_OPENING || ch->state == CH_STARTING) {
			ch->open_cb_due = true;
			ch->open_status = err;
		}
		chan_set_failed(ch, err);
	}
	c->open_head = c->open_tail = NULL;
	mux__kick(c);
}

static void open_dequeue(mux_conn *c)
{
	mux_chan *ch = c->open_head;
	c->open_head = ch->open_next;
	if (!c->open_head)
		c->open_tail = NULL;
	ch->open_next = NULL;
	free(ch->open_msg);
	ch->open_msg = NULL;
}

static void chan_grant(mux_chan *ch);

static LIBSSH2_CHANNEL *chan_open_ex(mux_conn *c, mux_chan *ch)
{
	if (ch->subsystem)
		return libssh2_channel_open_ex(c->ssh, "session", sizeof("session") - 1, 0,
					       LIBSSH2_CHANNEL_PACKET_DEFAULT, NULL, 0);
	return libssh2_channel_open_ex(c->ssh, "direct-tcpip", sizeof("direct-tcpip") - 1, 0,
				       LIBSSH2_CHANNEL_PACKET_DEFAULT, ch->open_msg,
				       (unsigned)ch->open_msg_len);
}

/* A subsystem channel at the head of the open queue, its session channel
 * open: send the "subsystem" request, repeated with the same arguments
 * while libssh2 says EAGAIN. 1: still waiting; 0: done (started, or
 * failed and dequeued). */
static int chan_start_subsystem(mux_conn *c, mux_chan *ch)
{
	int rc = libssh2_channel_process_startup(ch->lc, "subsystem", sizeof("subsystem") - 1,
						 ch->open_msg, (unsigned)ch->open_msg_len);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 1;
	open_dequeue(c);
	ch->open_cb_due = true;
	if (rc < 0) {
		mux__log(c, 2, "channel %u: %s refused: %s", ch->id, ch->desc,
			 mux_strerror(MUX_ESSH(rc)));
		chan_set_failed(ch, MUX_ESSH(rc));
		ch->open_status = MUX_ESSH(rc);
		return 0;
	}
	ch->state = CH_OPEN;
	ch->window_target = MUX_WINDOW_START;
	ch->open_status = 0;
	mux__log(c, 3, "channel %u to %s open", ch->id, ch->desc);
	chan_grant(ch);
	return 0;
}

static void service_opens(mux_conn *c)
{
	while (c->open_head) {
		mux_chan *ch = c->open_head;
		if (ch->close_wanted && ch->state == CH_QUEUED) {
			open_dequeue(c);
			ch->state = CH_FAILED;
			continue;
		}
		if (ch->state == CH_STARTING) {
			if (chan_start_subsystem(c, ch))
				return;
			continue;
		}
		ch->state = CH_OPENING;
		LIBSSH2_CHANNEL *lc = chan_open_ex(c, ch);
		if (!lc) {
			char *msg = NULL;
			int e = libssh2_session_last_error(c->ssh, &msg, NULL, 0);
			if (e == LIBSSH2_ERROR_EAGAIN)
				return;
			open_dequeue(c);
			mux__log(c, 2, "channel %u to %s refused: %s", ch->id, ch->desc,
				 msg ? msg : "?");
			chan_set_failed(ch, MUX_ESSH(e));
			ch->open_cb_due = true;
			ch->open_status = MUX_ESSH(e);
			continue;
		}
		if (ch->subsystem) {
			ch->lc = lc;
			ch->state = CH_STARTING; /* next pass sends the request */
			continue;
		}
		open_dequeue(c);
		ch->lc = lc;
		ch->state = CH_OPEN;
		ch->window_target = MUX_WINDOW_START;
		ch->open_cb_due = true;
		ch->open_status = 0;
		mux__log(c, 3, "channel %u to %s open", ch->id, ch->desc);
		chan_grant(ch);
	}
}

/* A channel's target, keeping the count of channels above the start size
 * (the ones sharing the connection's window budget) right. */
static void chan_set_target(mux_chan *ch, uint32_t target)
{
	mux_conn *c = ch->conn;
	bool was_big = ch->window_target > MUX_WINDOW_START;
	bool is_big = target > MUX_WINDOW_START;
	c->nbig += (unsigned)is_big - (unsigned)was_big;
	ch->window_target = target;
}

/* Keep the credit not yet delivered near window_target (see the top of
 * the file). Big windows share a budget of 4 x window_max: each of the n
 * channels that grew gets at most budget / (n + 1), so streams that start
 * later are not starved by one that grew alone first. */
static void chan_grant(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	unsigned long avail = 0;
	/* libssh2 1.10 counts the window down when we read, not when data
	 * arrives: win is credit given and not yet delivered, which includes
	 * what sits in libssh2's queue (avail) and what is in flight. */
	uint32_t win = libssh2_channel_window_read_ex(ch->lc, &avail, NULL);
	uint64_t outstanding = win;
	uint64_t fair = (uint64_t)c->opts.window_max * 4 / (c->nbig + 1);
	if (fair > c->opts.window_max)
		fair = c->opts.window_max;
	if (fair < MUX_WINDOW_START)
		fair = MUX_WINDOW_START;

	if (ch->window_target > fair)
		chan_set_target(ch, (uint32_t)fair); /* others joined: give back */
	if (outstanding >= ch->window_target / 4 * 3)
		return;
	/* The server used a quarter of its credit, we delivered nearly all of
	 * it and nothing waits undecrypted on our socket: the link, not the
	 * consumer nor our CPU, is the limit. Grow. (A CPU-bound receiver on a
	 * fast link would only make sshd buffer more.) */
	if (avail < ch->window_target / 8 && (uint64_t)ch->window_target * 2 <= fair &&
	    mux__socket_backlog(c) < 256 * 1024) {
		chan_set_target(ch, ch->window_target * 2);
		mux__log(c, 3, "channel %u window grows to %u KiB", ch->id, ch->window_target / 1024);
	}
	uint32_t adj = (uint32_t)(ch->window_target - outstanding);
	int rc = libssh2_channel_receive_window_adjust2(ch->lc, adj, 1, NULL);
	if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN)
		chan_set_failed(ch, MUX_ESSH(rc));
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
		if (libssh2_channel_window_write_ex(ch->lc, NULL) == 0)
			break; /* waiting for the server's window adjust */
		size_t want = r->len - r->off;
		if (want > quantum)
			want = quantum;
		ssize_t n = libssh2_channel_write(ch->lc, r->base + r->off, want);
		if (n == LIBSSH2_ERROR_EAGAIN)
			break;
		if (n < 0) {
			mux__log(c, 2, "channel %u write: %s", ch->id, mux_strerror(MUX_ESSH((int)n)));
			chan_set_failed(ch, MUX_ESSH((int)n));
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
			chan_set_failed(ch, MUX_ESSH(rc));
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
		ssize_t n = libssh2_channel_read(ch->lc, b.base, b.len);
		if (n > 0) {
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
		chan_set_failed(ch, MUX_ESSH((int)n));
		ch->read_cb(ch, 0, &b);
		break;
	}
	if (ch->state == CH_OPEN && !ch->close_wanted)
		chan_grant(ch);
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
		chan_fail_writes(ch, ch->error);
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
	chan_set_target(ch, 0);
}

/* Free what the owner closed. Returns true when ch is gone. */
static bool chan_reap(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	if (!ch->close_wanted || ch->state == CH_QUEUED || ch->state == CH_OPENING ||
	    ch->state == CH_STARTING)
		return false;
	chan_fail_writes(ch, UV_ECANCELED);
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
		/* Let libssh2 take in what arrived (window adjusts, EOFs, data
		 * for any channel) even when no consumer wants to read: a
		 * zero-length read moves the transport and touches nothing else
		 * (window credit is ours, see chan_grant). */
		if (c->in_len > 0) {
			for (mux_chan *ch = c->chans; ch; ch = ch->next)
				if (ch->state == CH_OPEN) {
					char dummy;
					(void)libssh2_channel_read(ch->lc, &dummy, 0);
					break;
				}
		}
		service_opens(c);
		for (mux_chan *ch = c->chans, *next; ch; ch = next) {
			next = ch->next;
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
}

bool mux__has_open_chan(const mux_conn *c)
{
	for (const mux_chan *ch = c->chans; ch; ch = ch->next)
		if (ch->state == CH_OPEN)
			return true;
	return false;
}
