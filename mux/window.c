/*
 * Receive windows: how much credit each channel keeps granted.
 *
 * Channels are opened with a window of 0 and credit is granted here,
 * only after reads (chan.c reads a channel only while its consumer gives
 * buffers), so "promised but not delivered" (libssh2's window, which it
 * counts down on reads) stays under window_target: a consumer that stops
 * reading stops the server through the SSH window while every other
 * channel keeps flowing. The target starts at MUX_WINDOW_START (ssh's
 * fixed window) and follows what the link holds at the channel's rate
 * (chan_size), up to opts.window_max and within the connection's budget,
 * so long fat links fill and sshd is never handed much more than the link
 * can take.
 */
#include "mux/internal.h"

#define SHRINK_SPANS 4  /* spans in a row wanting less before a window shrinks */
/* The credit kept beyond what the link holds (rate x round trip): what
 * lets the rate, and so the window, grow while the window is the limit,
 * and what sshd may have to queue when the link is: ssh's own window.
 * ftpssh's default --window-max (proxy/cli.c) is a small 8 MiB for the
 * same reason: on the 50 ms bench link, maxima of 12 to 32 MiB let a
 * stall of sshd's output put that much in its channel buffer, and then
 * each read cost sshd ~35 ms for seconds (see chan_size). */
#define BEYOND_LINK (2.0 * 1024 * 1024)
/* Grant more once this much of the target was delivered (at most a
 * quarter of it): with big windows, a quarter not yet re-granted is a
 * quarter of the link left empty. */
#define ADJUST_STEP (512u * 1024)

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

/* The window follows the link, once per measured span: the target is
 * what the link holds at the measured rate plus BEYOND_LINK.
 *
 * While the window is what limits, nearly all of it is in flight, so the
 * rate, and then the target, grow by up to BEYOND_LINK a span (at most
 * doubling). When something else limits (the link, the server, our
 * consumer), the target settles at rate x round trip + BEYOND_LINK.
 *
 * Why no more: sshd reads the FTP server whenever its channel buffer
 * holds less than the credit we gave and sends one packet per pass of
 * its loop, so what its output cannot take at once stays queued there
 * until the credit runs out. OpenSSH (7.6 to today) grows that sshbuf by
 * recallocarray, 32 KiB a read: malloc, copy whole, zero and free the
 * old one; past the largest block glibc has had back, each step is a
 * fresh mmap faulted in page by page. With 8 MiB queued sshd spent
 * ~35 ms a read, the transfer fell to 1 MB/s for seconds, and only the
 * credit running out ended it (issue 13; minflt and perf of sshd).
 * So credit beyond the link is kept small. Shrinking waits for
 * SHRINK_SPANS spans in a row that want less (one span can be low
 * through a burst) and at most halves; dropping at once when the rate
 * halved did not prevent those stalls (it acts a span late, after the
 * credit is out) and made windows jumpy on a busy machine.
 *
 * On loopback and LAN the round trip is well under a millisecond:
 * windows stay at the start size, as ssh's. */
static void chan_size(mux_chan *ch, uint64_t fair)
{
	mux_conn *c = ch->conn;
	if (!ch->span_done)
		return;
	ch->span_done = false;
	double fill = ch->span_rate * (double)c->rtt_ns; /* bytes in flight at this rate */
	double want = fill + BEYOND_LINK;
	uint32_t w = ch->window_target;
	uint32_t next;
	/* Grow when the link holds a real share of the window (a round trip
	 * of a few ms timed on a busy loopback is not a link) and more than
	 * a few KiB would change. */
	if (fill > w / 4 && want > (double)w + w / 16) {
		ch->low_spans = 0;
		double cap = (double)fair < 2.0 * w ? (double)fair : 2.0 * w;
		next = (uint32_t)(want < cap ? want : cap);
		if (next <= w)
			return;
	} else if (want < (double)w) {
		if (++ch->low_spans < SHRINK_SPANS)
			return;
		ch->low_spans = 0;
		next = (uint32_t)(want > w / 2 ? want : w / 2);
		if (next < MUX_WINDOW_START)
			next = MUX_WINDOW_START;
		if (next >= w)
			return;
	} else {
		ch->low_spans = 0; /* about right */
		return;
	}
	chan_set_target(ch, next);
	/* one line per change of a quarter or more, not one per span */
	uint32_t last = ch->window_logged ? ch->window_logged : MUX_WINDOW_START;
	if (next >= last + last / 4 || next <= last - last / 4) {
		ch->window_logged = next;
		mux__log(c, 3, "channel %u window %s to %u KiB (%.1f MB/s)", ch->id,
			 next > last ? "grows" : "shrinks", next / 1024, ch->span_rate * 1e3);
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
		uint32_t step = ch->window_target / 4;
		if (step > ADJUST_STEP)
			step = ADJUST_STEP;
		if (win + step > ch->window_target)
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
