/*
 * Channels: direct-tcpip channels with a stream interface, serviced
 * round-robin from conn_service().
 *
 * Life of a channel: QUEUED (in the open queue; libssh2 keeps open state
 * per session, so one open is in flight at a time) -> OPENING -> OPEN, or
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
 * target doubles while the channel's rate times the round trip asks for
 * more (chan_measure), up to opts.window_max and within the connection's
 * budget, so long fat links fill and short ones do not queue in sshd.
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
#define SHRINK_SPANS 4 /* measured spans in a row that ask for < 1/4 of the window */

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
	if (!c || c->state != CS_UP || !subsystem || !*subsystem)
		return NULL;
	mux_chan *ch = calloc(1, sizeof(*ch));
	if (!ch || strlen(subsystem) >= sizeof(ch->subsys)) {
		free(ch);
		return NULL;
	}
	strcpy(ch->subsys, subsystem);
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
		chan_set_failed(ch, err);
	}
	c->open_head = c->open_tail = NULL;
	mux__kick(c);
}

static void open_dequeue_keep(mux_conn *c)
{
	mux_chan *ch = c->open_head;
	c->open_head = ch->open_next;
	if (!c->open_head)
		c->open_tail = NULL;
	ch->open_next = NULL;
}

static void chan_grant(mux_chan *ch);

/* The most credit ch may hold: the connection's budget less what the
 * other channels hold now (a channel whose client stopped reading keeps
 * its credit as queued data until it reads), never below MUX_WINDOW_MIN
 * so that every channel still moves. */
static uint32_t chan_budget_room(const mux_chan *ch)
{
	const mux_conn *c = ch->conn;
	uint64_t others = c->credit - ch->credit;
	uint64_t room = c->credit_budget > others ? c->credit_budget - others : 0;
	if (room > UINT32_MAX)
		room = UINT32_MAX;
	return room < MUX_WINDOW_MIN ? MUX_WINDOW_MIN : (uint32_t)room;
}

/* The channel is open: credit, and tell the owner (unless it gave up). */
static void chan_opened(mux_chan *ch, LIBSSH2_CHANNEL *lc)
{
	mux_conn *c = ch->conn;
	if (ch->subsys[0] && ch->state != CH_STARTING) {
		/* a session channel: open once its subsystem has started
		 * (chan_poll_start), under the same deadline */
		ch->lc = lc;
		ch->state = CH_STARTING;
		c->nopening++;
		return;
	}
	ch->lc = lc;
	uint32_t room = chan_budget_room(ch);
	ch->window_target = MUX_WINDOW_START < room ? MUX_WINDOW_START : room;
	ch->state = CH_OPEN;
	if (!ch->open_told) {
		ch->open_cb_due = true;
		ch->open_status = 0;
		ch->open_told = true;
	}
	mux__log(c, 3, "channel %u to %s open", ch->id, ch->desc);
	if (!ch->close_wanted)
		chan_grant(ch);
}

static void chan_open_failed(mux_chan *ch, int e, const char *msg)
{
	mux__log(ch->conn, 2, "channel %u to %s refused: %s", ch->id, ch->desc, msg ? msg : "?");
	chan_set_failed(ch, MUX_ESSH(e));
	if (!ch->open_told) {
		ch->open_cb_due = true;
		ch->open_status = MUX_ESSH(e);
		ch->open_told = true;
	}
}

/* An open past its deadline fails its owner now; the channel itself
 * stays OPENING until the server answers (then reap frees it), since
 * the request cannot be taken back. */
static void chan_open_deadline(mux_chan *ch)
{
	if (ch->open_told || uv_now(ch->conn->loop) < ch->open_deadline)
		return;
	mux__log(ch->conn, 1, "channel %u to %s: no answer from the gateway in %u s", ch->id,
		 ch->desc, MUX_OPEN_TIMEOUT_MS / 1000);
	ch->open_cb_due = true;
	ch->open_status = UV_ETIMEDOUT;
	ch->open_told = true;
	if (!ch->error)
		ch->error = UV_ETIMEDOUT;
}

/* The CHANNEL_OPEN type: a subsystem runs on a "session" channel. */
#define CHAN_TYPE(ch) ((ch)->subsys[0] ? "session" : "direct-tcpip")
#define CHAN_TYPE_LEN(ch) ((unsigned)strlen(CHAN_TYPE(ch)))

/* A STARTING channel: send its "subsystem" request, repeated with the
 * same arguments while libssh2 says EAGAIN (libssh2 keeps the request's
 * state in the channel, so several can be under way at once). */
static void chan_poll_start(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	int rc = libssh2_channel_process_startup(ch->lc, "subsystem", sizeof("subsystem") - 1,
						 ch->subsys, (unsigned)strlen(ch->subsys));
	if (rc == LIBSSH2_ERROR_EAGAIN) {
		chan_open_deadline(ch);
		return;
	}
	c->nopening--;
	if (rc < 0) {
		char *msg = NULL;
		libssh2_session_last_error(c->ssh, &msg, NULL, 0);
		chan_open_failed(ch, rc, msg); /* the channel is freed at reap */
		return;
	}
	chan_opened(ch, ch->lc);
}

#ifdef LIBSSH2_HAVE_CHANNEL_OPEN_START
/* With the bundled libssh2 (patch 0003) every queued open goes out at
 * once and each is polled on its own: a target that never answers holds
 * up nobody else. */
static void service_opens(mux_conn *c)
{
	while (c->open_head) {
		mux_chan *ch = c->open_head;
		open_dequeue_keep(c);
		if (ch->close_wanted) {
			ch->state = CH_FAILED;
			free(ch->open_msg);
			ch->open_msg = NULL;
			continue;
		}
		ch->state = CH_OPENING;
		ch->open_deadline = uv_now(c->loop) + MUX_OPEN_TIMEOUT_MS;
		LIBSSH2_CHANNEL *lc = libssh2_channel_open_start(
			c->ssh, CHAN_TYPE(ch), CHAN_TYPE_LEN(ch), 0,
			LIBSSH2_CHANNEL_PACKET_DEFAULT, ch->open_msg, (unsigned)ch->open_msg_len);
		free(ch->open_msg);
		ch->open_msg = NULL;
		if (!lc) {
			char *msg = NULL;
			int e = libssh2_session_last_error(c->ssh, &msg, NULL, 0);
			chan_open_failed(ch, e, msg);
			continue;
		}
		ch->pending_lc = lc;
		c->nopening++;
	}
}

/* One OPENING channel: has its answer come? */
static void chan_poll_open(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	int rc = libssh2_channel_open_poll(ch->pending_lc);
	if (rc == LIBSSH2_ERROR_EAGAIN) {
		chan_open_deadline(ch);
		return;
	}
	LIBSSH2_CHANNEL *lc = ch->pending_lc;
	ch->pending_lc = NULL;
	c->nopening--;
	if (rc < 0) {
		char *msg = NULL;
		libssh2_session_last_error(c->ssh, &msg, NULL, 0);
		chan_open_failed(ch, rc, msg); /* libssh2 freed the channel */
		return;
	}
	chan_opened(ch, lc);
}
#else
/* With a libssh2 that keeps open state per session, opens go out one at
 * a time; a late one still fails its owner at the deadline, but the
 * ones behind it wait for the server's answer (or libssh2's own 60 s). */
static void service_opens(mux_conn *c)
{
	while (c->open_head) {
		mux_chan *ch = c->open_head;
		if (ch->close_wanted && ch->state == CH_QUEUED) {
			open_dequeue_keep(c);
			free(ch->open_msg);
			ch->open_msg = NULL;
			ch->state = CH_FAILED;
			continue;
		}
		if (ch->state == CH_QUEUED) {
			ch->state = CH_OPENING;
			ch->open_deadline = uv_now(c->loop) + MUX_OPEN_TIMEOUT_MS;
			c->nopening++;
		}
		LIBSSH2_CHANNEL *lc = libssh2_channel_open_ex(
			c->ssh, CHAN_TYPE(ch), CHAN_TYPE_LEN(ch), 0,
			LIBSSH2_CHANNEL_PACKET_DEFAULT, ch->open_msg, (unsigned)ch->open_msg_len);
		if (!lc) {
			char *msg = NULL;
			int e = libssh2_session_last_error(c->ssh, &msg, NULL, 0);
			if (e == LIBSSH2_ERROR_EAGAIN) {
				chan_open_deadline(ch);
				return;
			}
			open_dequeue_keep(c);
			free(ch->open_msg);
			ch->open_msg = NULL;
			c->nopening--;
			chan_open_failed(ch, e, msg);
			continue;
		}
		open_dequeue_keep(c);
		free(ch->open_msg);
		ch->open_msg = NULL;
		c->nopening--;
		chan_opened(ch, lc);
	}
}
#endif

/* Our copy of the channel's credit (libssh2's receive window: granted,
 * not yet read) and the connection's sum of them, kept by deltas. */
static void chan_credit_seen(mux_chan *ch, uint32_t win)
{
	ch->conn->credit += (uint64_t)win - ch->credit;
	ch->credit = win;
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

/* The credit ch needs: what it delivers in two round trips (an adjust
 * takes one to reach the server and its data one more to arrive, so with
 * less the server waits), from its rate over a span of at least two
 * round trips and 20 ms. The round trip is the one conn.c times on a
 * silent connection, so data queued in the server does not inflate it.
 * Windows grow on a long link and stay at the start size on loopback and
 * LAN, where more credit only lets sshd queue megabytes in its output
 * buffer: that cost sshd 3 to 20 times its CPU per byte and halved
 * downloads (issue 13). No round trip known: never grows, as ssh. */
static void chan_measure(mux_chan *ch)
{
	uint64_t rtt = ch->conn->rtt_ns;
	if (!rtt)
		return;
	uint64_t now = uv_hrtime();
	if (!ch->rate_t0) {
		ch->rate_t0 = now;
		ch->rate_b0 = ch->delivered;
		return;
	}
	uint64_t span = now - ch->rate_t0;
	if (span < 2 * rtt || span < 20 * 1000000ull)
		return;
	double rate = (double)(ch->delivered - ch->rate_b0) / (double)span; /* bytes/ns */
	ch->window_need = (uint64_t)(2.0 * rate * (double)rtt);
	ch->rate_t0 = now;
	ch->rate_b0 = ch->delivered;
}

/* Keep the credit not yet delivered near window_target (see the top of
 * the file), within two budgets: channels that grew past the start share
 * the connection's budget, each at most budget / (n + 1) (so streams that
 * start later are not starved by one that grew alone first), and no
 * channel holds more than the budget less what the others hold
 * (chan_budget_room).
 *
 * EAGAIN (a key exchange is running) leaves the adjust half done inside
 * libssh2: it is repeated with the same amount, and nothing else is
 * computed, until libssh2 takes it. */
static void chan_grant(mux_chan *ch)
{
	mux_conn *c = ch->conn;
	uint32_t adj;

	if (ch->adj_pending) {
		adj = ch->adj_pending;
	} else {
		/* libssh2 counts the window down when we read, not when data
		 * arrives: win is credit given and not yet delivered, which
		 * includes what sits in libssh2's queue and what is in
		 * flight. */
		uint32_t win = libssh2_channel_window_read_ex(ch->lc, NULL, NULL);
		chan_credit_seen(ch, win);
		uint64_t fair = c->credit_budget / (c->nbig + 1);
		if (fair > c->opts.window_max)
			fair = c->opts.window_max;
		if (fair < MUX_WINDOW_START)
			fair = MUX_WINDOW_START;
		uint32_t room = chan_budget_room(ch);
		if (fair > room)
			fair = room;

		if (ch->window_target > fair)
			chan_set_target(ch, (uint32_t)fair); /* others joined: give back */
		chan_measure(ch);
		/* One doubling per measured span: the next span shows the rate
		 * the bigger window gives (on a link-bound channel, twice). */
		if (ch->window_need > ch->window_target &&
		    (uint64_t)ch->window_target * 2 <= fair) {
			chan_set_target(ch, ch->window_target * 2);
			ch->window_need = 0;
			ch->low_spans = 0;
			mux__log(c, 3, "channel %u window grows to %u KiB", ch->id,
				 ch->window_target / 1024);
		} else if (ch->window_need && ch->window_need < ch->window_target / 4 &&
			   ch->window_target / 2 >= MUX_WINDOW_START) {
			/* A slower consumer, or a shorter round trip than first
			 * measured: credit it no longer uses is sshd's queue.
			 * Only after SHRINK_SPANS low spans in a row: one span
			 * can be low through a burst of the link. */
			ch->window_need = 0;
			if (++ch->low_spans >= SHRINK_SPANS) {
				ch->low_spans = 0;
				chan_set_target(ch, ch->window_target / 2);
				mux__log(c, 3, "channel %u window shrinks to %u KiB", ch->id,
					 ch->window_target / 1024);
			}
		} else if (ch->window_need) {
			ch->low_spans = 0;
			ch->window_need = 0;
		}
		if (win >= ch->window_target / 4 * 3)
			return;
		/* win < target here, so adj > 0: never a wrapped negative */
		adj = ch->window_target - win;
	}
	int rc = libssh2_channel_receive_window_adjust2(ch->lc, adj, 1, NULL);
	if (rc == LIBSSH2_ERROR_EAGAIN) {
		if (!ch->adj_pending)
			mux__log(c, 3, "channel %u window adjust %u waits (key exchange)", ch->id, adj);
		ch->adj_pending = adj;
		return;
	}
	if (ch->adj_pending)
		mux__log(c, 3, "channel %u window adjust %u sent", ch->id, adj);
	ch->adj_pending = 0;
	if (rc < 0)
		chan_set_failed(ch, MUX_ESSH(rc));
	else
		chan_credit_seen(ch, ch->credit + adj);
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
		/* Never ask for more than the credit libssh2 counts (win >=
		 * what it has queued, since it drops what exceeds the window):
		 * asking for more makes libssh2_channel_read send a window
		 * adjust of its own, and that one, interrupted by a key
		 * exchange, is resumed with a recomputed (even negative,
		 * wrapped) amount. Credit is chan_grant's alone. */
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
	chan_credit_seen(ch, 0);
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
		chan_fail_writes(ch, UV_ECANCELED);
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
		 * ours, see chan_grant). It needs an open channel. */
		if (c->in_len > 0) {
			for (mux_chan *ch = c->chans; ch; ch = ch->next)
				if (ch->state == CH_OPEN) {
					char dummy;
					(void)libssh2_channel_read(ch->lc, &dummy, 0);
					break;
				}
		}
#endif
		service_opens(c);
		for (mux_chan *ch = c->chans, *next; ch; ch = next) {
			next = ch->next;
#ifdef LIBSSH2_HAVE_CHANNEL_OPEN_START
			if (ch->state == CH_OPENING)
				chan_poll_open(ch);
#endif
			if (ch->state == CH_STARTING)
				chan_poll_start(ch);
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
