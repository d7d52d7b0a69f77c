/*
 * Receive windows: how much credit each channel keeps granted.
 *
 * Channels are opened with a window of 0 and credit is granted here,
 * only after reads (chan.c reads a channel only while its consumer gives
 * buffers), so "promised but not delivered" (libssh2's window, which it
 * counts down on reads) stays under window_target: a consumer that stops
 * reading stops the server through the SSH window while every other
 * channel keeps flowing. The target starts at MUX_WINDOW_START (ssh's
 * fixed window) and follows what the link needs (chan_measure), up to
 * opts.window_max and within the connection's budget, so long fat links
 * fill and short ones do not queue in sshd.
 */
#include "mux/internal.h"

#define SHRINK_SPANS 4 /* measured spans in a row that ask for < 1/4 of the window */

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
