/*
 * Which shared SFTP channel a client gets (see sftp_chan.h): a new one
 * while the connection has fewer than its limit, else the best live one
 * (not stuck, ready, fewest clients); and where a refused channel's
 * clients go. The channels themselves: sftp_chan.c.
 */
#include <stdlib.h>

#include "mux/sftp_chan.h"

/* A request unanswered this long marks its channel stuck. */
#define STUCK_MS 5000

static void view_ready_cb(uv_timer_t *t)
{
	mux_sftp *v = t->data;
	if (v->closing || v->failed || v->told_ready)
		return;
	v->told_ready = true;
	v->cb(v, 0, v->data);
}

void sftp__view_link(mux_sftp *v, struct sftp_chan *ch)
{
	if (!ch->retry_wait) /* else the timer is its reopen or deadline */
		uv_timer_stop(&ch->linger);
	v->ch = ch;
	v->vnext = ch->views;
	ch->views = v;
	ch->nviews++;
	ch->nactive++;
	if (ch->ready) /* never from inside mux_sftp_start */
		uv_timer_start(&v->timer, view_ready_cb, 0, 0);
}

/* Has the server sat on a request for STUCK_MS? It answers a channel's
 * requests in order, so one that blocks (a FIFO, a hung mount) stalls
 * every client of the channel: a new client goes elsewhere, and an idle
 * stuck channel is not kept. */
static bool chan_stuck(const struct sftp_chan *ch)
{
	return sftp__quiet_ms(ch, NULL) >= STUCK_MS;
}

#define RANK_STUCK (1ull << 40)

/* Lower is better: not stuck, then ready, then fewest active clients; 0
 * is an idle channel to take. */
static uint64_t chan_rank(const struct sftp_chan *ch)
{
	return (chan_stuck(ch) ? RANK_STUCK : 0) | ((uint64_t)!ch->ready << 32) | ch->nactive;
}

bool sftp__pool_keep_idle(const struct sftp_chan *ch)
{
	/* Only on a server known to be tight (it refused a channel): a
	 * reused channel costs sshd more per byte than a fresh one (its
	 * sftp server's buffers stay grown: loopback RETR 322-351 MB/s and
	 * sshd 2.2-3.2 s/GiB reused, 413-472 MB/s and 1.6-1.9 s/GiB fresh) */
	if (!ch->conn->sftp_limit || chan_rank(ch) != 0)
		return false;
	for (const struct sftp_chan *o = ch->conn->sftp_chans; o; o = o->next)
		if (o != ch && sftp__chan_live(o) && chan_rank(o) == 0)
			return false;
	return true;
}

/* The best live channel but except (chan_rank, *rank); nlive counts the
 * live ones. */
static struct sftp_chan *pool_pick(mux_conn *c, const struct sftp_chan *except, unsigned *nlive,
				   uint64_t *rank)
{
	struct sftp_chan *best = NULL;
	uint64_t best_rank = 0;
	unsigned n = 0;
	for (struct sftp_chan *ch = c->sftp_chans; ch; ch = ch->next) {
		if (ch == except || !sftp__chan_live(ch))
			continue;
		n++;
		uint64_t r = chan_rank(ch);
		if (!best || r < best_rank) {
			best = ch;
			best_rank = r;
		}
	}
	if (nlive)
		*nlive = n;
	if (rank)
		*rank = best_rank;
	return best;
}

/* A channel failed before it was ready, on a connection that is up,
 * while others live: its views go to the others. If the server refused
 * it, it most likely counted our channels against its MaxSessions: the
 * limit becomes what it holds now, the channels still closing included
 * (sshd counts them until they are gone), and never goes up again. */
void sftp__learn_limit(mux_conn *c, int err, unsigned others)
{
	unsigned held = others + c->sftp_closing;
	if (err != MUX_ESSH(LIBSSH2_ERROR_CHANNEL_FAILURE) || !held ||
	    (c->sftp_limit && held >= c->sftp_limit))
		return;
	c->sftp_limit = held;
	mux__log(c, 1, "the server refused another sftp channel (%s; sshd's MaxSessions?): "
		       "FTP sessions now share %u", mux_strerror(err), held);
}

bool sftp__rehome(struct sftp_chan *ch)
{
	mux_conn *c = ch->conn;
	unsigned others;
	uint64_t rank;
	if (ch->ready || c->state != CS_UP)
		return false;
	struct sftp_chan *best = pool_pick(c, ch, &others, &rank);
	sftp__learn_limit(c, ch->error, others);
	if (!best || (rank & RANK_STUCK))
		return false; /* a quick failure beats joining a stalled queue */
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
		sftp__view_link(v, pool_pick(c, ch, NULL, NULL));
	}
	return true;
}

mux_sftp *mux_sftp_start(mux_conn *c, mux_sftp_event_cb cb, void *data)
{
	if (!c || c->state != CS_UP)
		return NULL;
	mux_sftp *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	unsigned nlive;
	uint64_t rank = 0;
	unsigned limit = c->sftp_limit ? c->sftp_limit : SFTP_CHANNELS_MAX;
	struct sftp_chan *ch = pool_pick(c, NULL, &nlive, &rank);
	/* a channel of its own while there is room, unless an idle one
	 * (ready, answering, nobody on it: rank 0) is there for the taking */
	if (!ch || (nlive < limit && rank != 0)) {
		struct sftp_chan *fresh = sftp__chan_new(c);
		if (fresh) {
			ch = fresh;
			rank = 0;
		}
	}
	/* none, or only stalled ones: a quick failure beats a hung login */
	if (!ch || (rank & RANK_STUCK)) {
		if (ch)
			mux__log(c, 1, "every sftp channel waits on a request the server sits on; "
				       "refusing a new FTP session");
		free(v);
		return NULL;
	}
	v->cb = cb;
	v->data = data;
	uv_timer_init(c->loop, &v->timer);
	v->timer.data = v;
	sftp__view_link(v, ch);
	return v;
}
