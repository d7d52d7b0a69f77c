/*
 * Is the server there, and how far: want-reply keepalives after a silent
 * keepalive interval (ServerAliveInterval/CountMax: silence counts, any
 * byte from the server proves it alive), and the round trip to the server,
 * timed on keepalives sent while the connection is silent (chan.c sizes
 * channel windows with it).
 */
#include "mux/internal.h"

#define RTT_PROBES 3      /* timed keepalives after UP */
#define RTT_PROBE_MS 250  /* silence that a probe waits for */
#define PING_LOST_NS (10 * 1000000000ull)
#define RTT_TICKS_MAX 240 /* probes wait for silence at most this many ticks (60 s) */

/* Patch 0002's libssh2_session_process_input() tells when a keepalive's
 * reply arrives; other builds cannot time one. */
#ifdef LIBSSH2_HAVE_SESSION_PROCESS_INPUT
#define REPLIES_SEEN true
#else
#define REPLIES_SEEN false
#endif

/* Is a timed keepalive out? One unanswered for PING_LOST_NS is given up
 * (a server that does not answer): the next one is timed instead. */
static bool conn_ping_out(mux_conn *c)
{
	if (c->ping_sent && uv_hrtime() - c->ping_sent > PING_LOST_NS)
		c->ping_sent = 0;
	return c->ping_sent != 0;
}

/* Send a want-reply keepalive; time its reply (conn_pong) when the reply
 * can be seen (patch 0002), it went out and none is out. Called on a
 * silent connection only, where the reply queues behind nothing.
 *
 * libssh2_keepalive_send() sends at most one keepalive per 2 s, counted
 * in whole seconds (it turns an interval of 1 into 2), and returns 0
 * whether it sent or not; what reached the transport tells. Guessing
 * from our own clock was wrong whenever a second boundary fell between:
 * libssh2 sent one we did not time, then did not send the one we timed,
 * whose reply never came, and the next probe waited PING_LOST_NS (the
 * three round-trip probes took 25 s instead of 4). */
static int conn_ping(mux_conn *c)
{
	int next = 0;
	uint64_t out = c->bytes_out;
	int rc = libssh2_keepalive_send(c->ssh, &next);
	if (rc == 0 && c->bytes_out != out && !conn_ping_out(c) && REPLIES_SEEN)
		c->ping_sent = uv_hrtime();
	return rc;
}

/* A reply came: the round trip is the smallest of the probes, then
 * follows later samples (keepalives), quickly down and slowly up. */
void mux__pong(mux_conn *c)
{
	if (!c->ping_sent)
		return;
	uint64_t t = uv_hrtime() - c->ping_sent;
	c->ping_sent = 0;
	if (t == 0)
		t = 1;
	if (!c->rtt_ns || t < c->rtt_ns)
		c->rtt_ns = t;
	else if (c->rtt_probes >= RTT_PROBES)
		c->rtt_ns = (3 * c->rtt_ns + t) / 4;
	bool probed = false; /* the probes are all in: say it at -v, once */
	if (c->rtt_probes < RTT_PROBES && ++c->rtt_probes == RTT_PROBES) {
		uv_timer_stop(&c->rtt_timer);
		probed = true;
	}
	mux__log(c, probed ? 2 : 3, "SSH round trip to %s: %.2f ms (sample %.2f ms)", c->host,
		 c->rtt_ns / 1e6, t / 1e6);
}

#ifdef LIBSSH2_HAVE_SESSION_PROCESS_INPUT /* without it no reply is seen */
/* Probe once the connection has been silent for a tick: nothing queued
 * in the server then delays the reply. (One sent at UP took 26-33 ms on
 * loopback: sshd sets the session up before it answers.) A connection
 * busy from the start gets one probe anyway after two ticks: queued
 * behind at most a start window of data, it overstates the round trip
 * by that window's time, once (the next span does not re-measure), and
 * silent probes later bring it down. */
static void conn_rtt_cb(uv_timer_t *t)
{
	mux_conn *c = container_of(t, mux_conn, rtt_timer);
	if (c->state != CS_UP) {
		uv_timer_stop(t);
		return;
	}
	bool silent = c->bytes_in == c->rtt_bytes_in && c->out_len == 0 && !c->writing;
	c->rtt_bytes_in = c->bytes_in;
	if (++c->rtt_ticks >= RTT_TICKS_MAX) {
		uv_timer_stop(t); /* later samples: the keepalives */
		return;
	}
	if ((silent || (!c->rtt_ns && c->rtt_ticks >= 2)) && !conn_ping_out(c))
		(void)conn_ping(c);
}
#endif

static void conn_keepalive_cb(uv_timer_t *t)
{
	mux_conn *c = container_of(t, mux_conn, timer);
	if (c->state != CS_UP)
		return;
	/* Any byte from the server proves it alive; keepalives (which ask for
	 * a reply) go out only when it has been silent for an interval, and
	 * keepalive_count silent intervals in a row end the connection. */
	if (c->bytes_in != c->alive_bytes_in) {
		c->alive_bytes_in = c->bytes_in;
		c->alive_missed = 0;
		return;
	}
	unsigned max = c->opts.keepalive_count ? c->opts.keepalive_count : 3;
	if (++c->alive_missed > max) {
		mux__fail(c, MUX_FAIL_NET, UV_ETIMEDOUT,
			  "SSH server %s not answering (%u keepalives in %u s)", c->host, max,
			  max * c->opts.keepalive_sec);
		return;
	}
	int rc = conn_ping(c);
	if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN)
		mux__fail(c, MUX_FAIL_NET, MUX_ESSH(rc), "keepalive failed: %s",
			  mux_strerror(MUX_ESSH(rc)));
}

void mux__alive_start(mux_conn *c)
{
	/* want_reply: the reply is what shows the server alive, and its
	 * round trip sizes the channel windows (chan.c): probes go out at
	 * the first silent moments after UP. (A libssh2 without patch
	 * 0002 keeps such replies in its packet list: ~100 bytes per silent
	 * keepalive interval; no timed one is sent then.) */
	libssh2_keepalive_config(c->ssh, 1, 1);
#ifdef LIBSSH2_HAVE_SESSION_PROCESS_INPUT
	c->rtt_bytes_in = c->bytes_in;
	uv_timer_start(&c->rtt_timer, conn_rtt_cb, RTT_PROBE_MS, RTT_PROBE_MS);
#endif
	if (c->opts.keepalive_sec) {
		c->alive_bytes_in = c->bytes_in;
		uv_timer_start(&c->timer, conn_keepalive_cb, c->opts.keepalive_sec * 1000ull,
			       c->opts.keepalive_sec * 1000ull);
	}
}
