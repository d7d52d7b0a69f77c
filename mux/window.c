/*
 * Receive windows: how much credit each channel keeps granted.
 *
 * Channels are opened with a window of 0 and credit is granted here,
 * only after reads (chan.c reads a channel only while its consumer gives
 * buffers), so "promised but not delivered" (libssh2's window, which it
 * counts down on reads) stays under window_target: a consumer that stops
 * reading stops the server through the SSH window while every other
 * channel keeps flowing. The target starts at MUX_WINDOW_START (ssh's
 * fixed window) and follows what the link needs (chan_size), up to
 * opts.window_max and within the connection's budget, so long fat links
 * fill and short ones do not queue in sshd.
 */
#include "mux/internal.h"

#define SHRINK_SPANS 4  /* low spans in a row before a window halves */
#define PROBE_SPANS 2   /* spans after a doubling until its rate is judged */
#define HOLD_SPANS 16   /* spans without a new try after a doubling that did not pay */
/* At most this much credit beyond what the link holds (rate x round
 * trip): the rest waits in sshd's channel buffer, which OpenSSH caps at
 * 16 MiB (CHAN_INPUT_MAX) and, as it nears the cap, packs (memmove of
 * all it holds) on every read from the FTP server. */
#define SSHD_QUEUE_MAX (8.0 * 1024 * 1024)

/* The most credit ch may hold: the connection's budget less what the
 * other channels hold now (a channel whose client stopped reading keeps
 * its credit as queued data until it reads), never below MUX_WINDOW_MIN
 * so that every channel still moves. */
uint32_t mux__window_room(const mux_chan *ch)
{
	const mux_conn *c = ch->conn;
	uint64_t others = c->credit - ch->credit;
	uint64_t room = c->credit_budget > others ? c->credit_budget - others : 0;
	if (room > UINT32_MAX)
		room = UINT32_MAX;
	return room < MUX_WINDOW_MIN ? MUX_WINDOW_MIN : (uint32_t)room;
}

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

/* A channel's delivery rate, over spans of at least two round trips and
 * 20 ms (span_rate, bytes/ns; span_done when one ends). The round trip is
 * the one alive.c times on a silent connection, so data queued in the
 * server does not inflate it. No round trip known: nothing is measured
 * and windows keep their start size, as ssh's. */
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
	ch->span_rate = (double)(ch->delivered - ch->rate_b0) / (double)span;
	ch->span_done = true;
	ch->rate_t0 = now;
	ch->rate_b0 = ch->delivered;
}

/* The window follows the link, once per measured span. Credit the link
 * cannot carry is not free: the server reads its side as fast as it may
 * and queues the rest in the channel's buffer, which OpenSSH grows by
 * copying it whole, 256 bytes at a time (sshbuf, recallocarray): windows
 * of 32 MiB on loopback, or on a 50 ms link moving 110 MB/s, cost sshd
 * 7 to 68 CPU s/GiB instead of ~2.5 and halved the transfer (issue 13).
 *
 * - Grow: when rate x round trip fills more than half the window, the
 *   window may be what limits. Double it and look two spans later: kept
 *   only if the rate rose by a quarter, else back to the old size and no
 *   new try for HOLD_SPANS spans.
 * - Shrink: halve after SHRINK_SPANS spans in a row that fill less than
 *   a quarter (a slower consumer; one span can be low through a burst).
 * - Never more than SSHD_QUEUE_MAX beyond what the link holds: sshd's
 *   own buffer turns expensive as it nears 16 MiB.
 * On loopback and LAN the round trip is well under a millisecond: windows
 * stay at the start size. */
static void chan_size(mux_chan *ch, uint64_t fair)
{
	mux_conn *c = ch->conn;
	if (!ch->span_done)
		return;
	ch->span_done = false;
	double fill = ch->span_rate * (double)c->rtt_ns; /* bytes in flight at this rate */
	uint32_t w = ch->window_target;
	if (ch->probe_rate > 0) {
		if (++ch->probe_spans < PROBE_SPANS)
			return;
		if (ch->span_rate < ch->probe_rate * 1.25 && w / 2 >= MUX_WINDOW_START) {
			chan_set_target(ch, w / 2);
			ch->hold_spans = HOLD_SPANS;
			mux__log(c, 3, "channel %u window back to %u KiB (no faster with %u KiB)",
				 ch->id, w / 2048, w / 1024);
		}
		ch->probe_rate = 0;
		return;
	}
	if (ch->hold_spans)
		ch->hold_spans--;
	/* what sshd would hold beyond what the link holds, at twice w */
	bool sshd_ok = (double)w * 2 <= fill + SSHD_QUEUE_MAX;
	if (fill * 2 > w && sshd_ok && !ch->hold_spans && (uint64_t)w * 2 <= fair) {
		ch->probe_rate = ch->span_rate;
		ch->probe_spans = 0;
		ch->low_spans = 0;
		chan_set_target(ch, w * 2);
		mux__log(c, 3, "channel %u window grows to %u KiB", ch->id, w / 512);
	} else if ((fill * 4 < w || (double)w > fill + SSHD_QUEUE_MAX) &&
		   w / 2 >= MUX_WINDOW_START) {
		if (++ch->low_spans >= SHRINK_SPANS) {
			ch->low_spans = 0;
			chan_set_target(ch, w / 2);
			mux__log(c, 3, "channel %u window shrinks to %u KiB", ch->id, w / 2048);
		}
	} else {
		ch->low_spans = 0;
	}
}

/* Keep the credit not yet delivered near window_target (see the top of
 * the file), within two budgets: channels that grew past the start share
 * the connection's budget, each at most budget / (n + 1) (so streams that
 * start later are not starved by one that grew alone first), and no
 * channel holds more than the budget less what the others hold
 * (mux__window_room).
 *
 * EAGAIN (a key exchange is running) leaves the adjust half done inside
 * libssh2: it is repeated with the same amount, and nothing else is
 * computed, until libssh2 takes it. */
void mux__window_grant(mux_chan *ch)
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
		uint32_t room = mux__window_room(ch);
		if (fair > room)
			fair = room;

		if (ch->window_target > fair)
			chan_set_target(ch, (uint32_t)fair); /* others joined: give back */
		chan_measure(ch);
		chan_size(ch, fair);
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
		mux__chan_set_failed(ch, MUX_ESSH(rc));
	else
		chan_credit_seen(ch, ch->credit + adj);
}

/* The channel is going: its credit and its place among the big ones. */
void mux__window_forget(mux_chan *ch)
{
	chan_set_target(ch, 0);
	chan_credit_seen(ch, 0);
}
