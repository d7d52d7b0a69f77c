/*
 * Opening channels (see chan.c for a channel's life): the CHANNEL_OPEN
 * request is built here and queued; mux__chan_service_opens() sends what
 * is queued and mux__chan_poll_open() looks for each answer. With the
 * bundled libssh2 (patch 0003) every open is in flight at once, each
 * polled on its own; with another libssh2, one at a time. Every open has
 * MUX_OPEN_TIMEOUT_MS: past it the owner is told, and the channel stays,
 * an orphan, until the server answers, since the request cannot be taken
 * back. A subsystem channel (a "session" channel) is open once its
 * "subsystem" request has succeeded (STARTING), under the same deadline.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mux/internal.h"

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
	mux__chan_poke(ch);
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

static void open_dequeue_keep(mux_conn *c)
{
	mux_chan *ch = c->open_head;
	c->open_head = ch->open_next;
	if (!c->open_head)
		c->open_tail = NULL;
	ch->open_next = NULL;
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
	uint32_t room = mux__window_room(ch);
	ch->window_target = MUX_WINDOW_START < room ? MUX_WINDOW_START : room;
	ch->state = CH_OPEN;
	if (!ch->open_told) {
		ch->open_cb_due = true;
		ch->open_status = 0;
		ch->open_told = true;
	}
	mux__log(c, 3, "channel %u to %s open", ch->id, ch->desc);
	if (!ch->close_wanted)
		mux__window_grant(ch);
}

static void chan_open_failed(mux_chan *ch, int e, const char *msg)
{
	mux__log(ch->conn, 2, "channel %u to %s refused: %s", ch->id, ch->desc, msg ? msg : "?");
	mux__chan_set_failed(ch, MUX_ESSH(e));
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
void mux__chan_service_opens(mux_conn *c)
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
void mux__chan_service_opens(mux_conn *c)
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

/* An OPENING or STARTING channel: has its answer come? */
void mux__chan_poll_open(mux_chan *ch)
{
#ifdef LIBSSH2_HAVE_CHANNEL_OPEN_START
	if (ch->state == CH_OPENING)
		chan_poll_open(ch);
#endif
	if (ch->state == CH_STARTING)
		chan_poll_start(ch); /* also right after its open came */
}
