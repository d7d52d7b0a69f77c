/*
 * One FTP control session: a local client connection relayed over one SSH
 * channel to the FTP server, line by line.
 *
 * Client -> server: lines are framed (ftpparse), parsed as commands, and
 * forwarded verbatim; each forwarded command is remembered in a small FIFO
 * so that a reply is known to answer it ("know what you are answering").
 * Server -> client: lines are framed and classified into replies; a 227 or
 * 229 that answers a PASV or EPSV we actually forwarded is replaced by one
 * pointing at a fresh one-shot local port (dataport.c); everything else is
 * forwarded verbatim. ftpssh's own replies (534 to AUTH, 200/501 to PORT,
 * 425 when a data connection cannot be made) wait in `deferred` until every
 * earlier command has had its reply, so the client reads them in order.
 * Active mode (PORT/EPRT) is active.c's half of the session.
 *
 * Backpressure: each direction has a bounded output queue (outq.c). A side
 * is read only while the queue it feeds has room for a whole line and the
 * command FIFO has a free slot, so neither a flooding client nor a flooding
 * server grows memory.
 *
 * Admission: a connection whose owner cannot be established (unless
 * --no-uid-check), or one beyond --max-sessions or
 * --max-sessions-per-user, gets a 421 and is closed without a channel.
 *
 * Ownership: the session owns its client TCP handle, its channel, two
 * timers and the one unused data port (a new PASV/EPSV replaces it). It is
 * freed when every one of them has closed (pending_closes == 0). Running
 * data transfers are not the session's: they finish on their own.
 *
 * Ending: server EOF -> deliver what is left to the client, then close.
 * Client EOF -> forward what is left, send EOF on the channel, then wait
 * (bounded) for the server to close. Any error -> close at once. The log
 * line at the end says whether that was a normal close (QUIT answered,
 * the client leaving after its last reply) or a failure.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/session.h"

#define CLIENT_EOF_WAIT_MS 10000

/* ---- helpers ------------------------------------------------------------ */

#define TELNET_IAC 0xff
#define TELNET_SE 0xf0
#define TELNET_WILL 0xfb

/* Does this client line carry a secret? "PASS" or "ACCT" if so, else
 * NULL. Decided on the first word after blanks and Telnet IAC sequences,
 * whatever follows it, so "PASS\tx" and " PASS x" are masked too, whether
 * or not a server would take them. Errs on the side of masking. */
static const char *line_secret(const char *text, size_t n)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t i = 0;
	while (i < n) {
		if (p[i] == ' ' || p[i] == '\t') {
			i++;
		} else if (p[i] == TELNET_IAC && i + 1 < n && p[i + 1] != TELNET_IAC) {
			i += p[i + 1] < TELNET_SE ? 1 : p[i + 1] >= TELNET_WILL ? 3 : 2;
		} else {
			break;
		}
	}
	if (i + 4 > n)
		return NULL;
	if (strncasecmp(text + i, "PASS", 4) == 0)
		return "PASS";
	if (strncasecmp(text + i, "ACCT", 4) == 0)
		return "ACCT";
	return NULL;
}

/* The printable form of a client line for logs and status, secrets masked. */
static void client_line_text(char *buf, size_t cap, const char *p, size_t len)
{
	const char *secret = line_secret(p, len);
	if (secret) {
		snprintf(buf, cap, "%s ****", secret);
		return;
	}
	fp_printable(buf, cap, p, len);
}

void px_session_log_line(px_session *s, const char *dir, const char *p, size_t len)
{
	char buf[300];
	if (!px_log_enabled(3))
		return;
	fp_printable(buf, sizeof(buf), p, len);
	px_log(3, "[#%u] %s %s", s->id, dir, buf);
}

static void log_client_line(px_session *s, const char *p, size_t len)
{
	char buf[300];
	if (!px_log_enabled(3))
		return;
	client_line_text(buf, sizeof(buf), p, len);
	px_log(3, "[#%u] -> %s", s->id, buf);
}

void px_session_reply_now(px_session *s, int code, const char *text)
{
	char line[512];
	int n = fp_format_reply(line, sizeof(line), code, text);
	if (n > 0 && px_outq_push(&s->to_client, line, (size_t)n) == 0)
		px_log(3, "[#%u] <- %d %s (ftpssh)", s->id, code, text);
}

/* Out once the FIFO is empty: every earlier command has had its reply. */
static void deferred_flush(px_session *s)
{
	if (!s->deferred_len || s->fcount > 0 || px_outq_room(&s->to_client) < s->deferred_len)
		return;
	px_outq_push(&s->to_client, s->deferred, s->deferred_len);
	s->deferred_len = 0;
}

void px_session_reply(px_session *s, int code, const char *text)
{
	char line[512];
	int n = fp_format_reply(line, sizeof(line), code, text);
	if (n <= 0)
		return;
	if (s->deferred_len + (size_t)n > sizeof(s->deferred)) {
		/* cannot happen: reading stops while a reply waits */
		px_log(0, "[#%u] local reply dropped: %d %s", s->id, code, text);
		return;
	}
	memcpy(s->deferred + s->deferred_len, line, (size_t)n);
	s->deferred_len += (size_t)n;
	px_log(3, "[#%u] <- %d %s (ftpssh)%s", s->id, code, text,
	       s->fcount ? " (after earlier replies)" : "");
	deferred_flush(s);
}

int px_session_send(px_session *s, const char *line, size_t len, int expect)
{
	int rc = px_outq_push(&s->to_server, line, len);
	if (rc == 0)
		fifo_push(s, expect);
	return rc;
}

/* ---- closing --------------------------------------------------------------- */

static void session_free_if_done(px_session *s)
{
	if (s->pending_closes > 0)
		return;
	px_server *srv = s->srv;
	px_session_list_unlink(s);
	free(s->held_cmd);
	free(s);
	px_server_maybe_closed(srv);
}

static void session_handle_closed_cb(uv_handle_t *h)
{
	px_session *s = h->data;
	s->pending_closes--;
	session_free_if_done(s);
}

static void session_chan_closed_cb(mux_chan *ch)
{
	px_session *s = mux_chan_data(ch);
	s->ch = NULL;
	s->pending_closes--;
	session_free_if_done(s);
}

/* normal: an ordinary end (QUIT answered, the client leaving after its
 * last reply), logged with -v; a failure is logged at the default level. */
void px_session_end(px_session *s, bool normal, const char *why)
{
	if (s->closing)
		return;
	s->closing = true;
	uint64_t ms = uv_now(s->srv->loop) - s->started_ms;
	if (s->refused)
		px_log(3, "[#%u] refused connection from %s closed", s->id, s->peer);
	else if (normal)
		px_log(2, "[#%u] session from %s closed normally after %.1f s: %s", s->id, s->peer,
		       ms / 1000.0, why);
	else
		px_log(1, "[#%u] session from %s failed after %.1f s: %s", s->id, s->peer,
		       ms / 1000.0, why);
	if (s->dp)
		px_dataport_close(s->dp);
	px_active_drop(s);
	s->pending_closes += 3;
	uv_close((uv_handle_t *)&s->client, session_handle_closed_cb);
	uv_close((uv_handle_t *)&s->timer, session_handle_closed_cb);
	uv_close((uv_handle_t *)&s->idle, session_handle_closed_cb);
	if (s->ch) {
		s->pending_closes++;
		mux_chan_close(s->ch, session_chan_closed_cb);
	}
}

/* Every reply the client asked for has been handed to it. */
static bool replies_done(const px_session *s)
{
	return s->fcount == 0 && s->deferred_len == 0 && !s->held_cmd;
}

static void client_eof_timeout_cb(uv_timer_t *t)
{
	px_session_end(t->data, true, "the client left; the server did not close within 10 s");
}

/* Close once everything the server said has reached the client. */
void px_session_check_end(px_session *s)
{
	if (s->closing)
		return;
	if (s->server_eof && s->deferred_len &&
	    px_outq_room(&s->to_client) >= s->deferred_len) {
		/* nothing more will be answered: ftpssh's own replies go now */
		px_outq_push(&s->to_client, s->deferred, s->deferred_len);
		s->deferred_len = 0;
	}
	if (s->server_eof && fp_framer_pending(&s->sin) == 0 && px_outq_len(&s->to_client) == 0 &&
	    s->deferred_len == 0) {
		if (s->refused)
			px_session_end(s, true, "refused");
		else if (s->idle_closed)
			px_session_end(s, true, "idle timeout");
		else if (s->quit_answered)
			px_session_end(s, true, "QUIT answered");
		else if (s->client_eof && s->eof_early)
			px_session_end(s, false, "the client left before its replies came");
		else if (s->client_eof)
			px_session_end(s, true, "client and server closed");
		else
			px_session_end(s, false, "the server closed the connection");
		return;
	}
	if (s->client_eof && !s->eof_sent && fp_framer_pending(&s->cin) == 0 &&
	    px_outq_len(&s->to_server) == 0 && s->ch && s->to_server.chan) {
		s->eof_sent = true;
		mux_chan_shutdown(s->ch);
		uv_timer_start(&s->timer, client_eof_timeout_cb, CLIENT_EOF_WAIT_MS, 0);
	}
}

/* Where the server's data port is, as the gateway sees it: the control
 * connection's host (default, works behind NAT), or with
 * --data-host=reported the address in a 227 (EPSV has none: RFC 2428). */
const char *px_session_data_host(px_session *s, bool epsv, char *buf, size_t cap)
{
	if (epsv || !s->srv->cfg->data_host_reported)
		return s->fwd->host;
	snprintf(buf, cap, "%u.%u.%u.%u", s->pasv.ip[0], s->pasv.ip[1], s->pasv.ip[2],
		 s->pasv.ip[3]);
	return buf;
}

/* ---- client -> server ------------------------------------------------------ */

static void client_line(px_session *s, const fp_line *l)
{
	fp_cmd cmd;
	int rc = fp_cmd_parse(l->p, l->text_len, &cmd);
	int verb = rc == FP_OK ? (int)cmd.verb : FP_CMD_OTHER;

	log_client_line(s, l->p, l->text_len);
	px_session_idle_arm(s);
	client_line_text(s->last_cmd, sizeof(s->last_cmd), l->p, l->text_len);
	s->last_cmd_ms = uv_now(s->srv->loop);
	if (verb == FP_CMD_AUTH) {
		/* The SSH tunnel already encrypts, and TLS would hide the
		 * passive replies ftpssh has to rewrite. */
		px_session_reply(s, 534, "ftpssh: the link is already protected by SSH; continue "
					 "without TLS");
		return;
	}
	if (verb == FP_CMD_PORT || verb == FP_CMD_EPRT) {
		px_active_port(s, &cmd);
		return;
	}
	if (verb == FP_CMD_PASV || verb == FP_CMD_EPSV)
		s->active_armed = false;
	if (verb == FP_CMD_USER) {
		size_t n = cmd.arg_len < sizeof(s->user) - 1 ? cmd.arg_len : sizeof(s->user) - 1;
		fp_printable(s->user, sizeof(s->user), cmd.arg, n);
	}
	if (px_verb_transfers(verb) && px_active_transfer(s, l, verb))
		return; /* held: goes upstream once the data connection stands */
	if (px_verb_transfers(verb) && s->next_xid) {
		px_xfer_label(s->srv, s->dp, s->id, s->next_xid, s->last_cmd);
		s->xfer_verb = verb;
		s->xfer_xid = s->next_xid;
	}
	if (verb == FP_CMD_QUIT)
		s->quit_sent = true;
	px_session_send(s, l->p, l->len, verb);
}

static void process_client(px_session *s)
{
	while (!s->closing && !s->deferred_len && !s->held_cmd && s->fcount < FIFO_CAP &&
	       px_outq_room(&s->to_server) >= FP_LINE_MAX &&
	       px_outq_room(&s->to_client) >= 512) {
		fp_line l;
		int rc = fp_framer_next(&s->cin, &l);
		if (rc == FP_E_AGAIN)
			break;
		if (rc == FP_E_TOOLONG) {
			px_log(1, "[#%u] client sent a line over %d bytes", s->id, FP_LINE_MAX);
			px_session_reply(s, 500, "ftpssh: command line too long");
			continue;
		}
		client_line(s, &l);
	}
}

/* ---- read callbacks and flow control ---------------------------------------- */

static void client_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	px_session *s = h->data;
	size_t avail = 0;
	(void)suggested;
	char *p = fp_framer_space(&s->cin, &avail);
	*buf = uv_buf_init(p, (unsigned)avail);
}

static void client_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	px_session *s = st->data;
	(void)buf;
	if (n > 0) {
		fp_framer_commit(&s->cin, (size_t)n);
	} else if (n == UV_EOF) {
		s->client_eof = true;
		s->eof_early = !s->quit_sent && (!replies_done(s) || fp_framer_pending(&s->cin) > 0);
		uv_read_stop(st);
		s->client_reading = false;
	} else if (n == UV_ENOBUFS) {
		uv_read_stop(st);
		s->client_reading = false;
	} else if (n < 0) {
		char why[160];
		bool normal = s->quit_sent || (replies_done(s) && px_outq_len(&s->to_client) == 0);
		snprintf(why, sizeof(why), "client connection %s (%s)%s",
			 normal ? "closed" : "failed", uv_strerror((int)n),
			 normal ? " after its last reply" : " with replies pending");
		px_session_end(s, normal, why);
		return;
	}
	px_session_pump(s);
}

static void server_alloc_cb(mux_chan *ch, size_t suggested, uv_buf_t *buf)
{
	px_session *s = mux_chan_data(ch);
	size_t avail = 0;
	char *p = NULL;
	(void)suggested;
	if (!s->closing && px_outq_room(&s->to_client) >= FP_LINE_MAX + 256)
		p = fp_framer_space(&s->sin, &avail);
	*buf = uv_buf_init(p, (unsigned)avail);
	if (avail == 0)
		s->server_reading = false; /* mux pauses until read_start */
}

static void server_read_cb(mux_chan *ch, ssize_t n, const uv_buf_t *buf)
{
	px_session *s = mux_chan_data(ch);
	(void)buf;
	if (s->closing)
		return;
	if (n > 0) {
		fp_framer_commit(&s->sin, (size_t)n);
	} else if (n == UV_EOF) {
		s->server_eof = true;
		s->server_reading = false;
	} else if (n < 0) {
		if (!s->server_eof)
			px_session_reply_now(s, 421, "ftpssh: connection to the FTP server lost "
						     "(SSH tunnel down)");
		s->server_eof = true;
		px_log(1, "[#%u] SSH channel failed: %s", s->id, mux_strerror((int)n));
	}
	px_session_pump(s);
}

/* Move every line that can move, then decide who may be read. */
void px_session_pump(px_session *s)
{
	if (s->closing)
		return;
	px_session_process_server(s);
	deferred_flush(s);
	process_client(s);
	if (s->closing)
		return;
	bool want_client = !s->client_eof && s->to_server.chan && s->fcount < FIFO_CAP &&
			   px_outq_room(&s->to_server) >= FP_LINE_MAX;
	if (want_client) {
		size_t avail = 0;
		fp_framer_space(&s->cin, &avail);
		want_client = avail > 0;
	}
	if (want_client && !s->client_reading) {
		if (uv_read_start((uv_stream_t *)&s->client, client_alloc_cb, client_read_cb) == 0)
			s->client_reading = true;
	} else if (!want_client && s->client_reading) {
		uv_read_stop((uv_stream_t *)&s->client);
		s->client_reading = false;
	}
	bool want_server = !s->server_eof && s->to_server.chan &&
			   px_outq_room(&s->to_client) >= FP_LINE_MAX + 256;
	if (want_server && !s->server_reading) {
		s->server_reading = true;
		mux_chan_read_start(s->ch, server_alloc_cb, server_read_cb);
	}
	px_session_check_end(s);
}

static void outq_cb(px_outq *q, int status)
{
	px_session *s = q->data;
	if (s->closing)
		return;
	if (status < 0) {
		if (q == &s->to_client) {
			/* a client that sent QUIT (or had every reply) and went
			 * away before reading the last one is not a failure */
			char why[160];
			bool normal = s->quit_sent || s->refused;
			snprintf(why, sizeof(why), "client connection %s (%s)%s",
				 normal ? "closed" : "failed", uv_strerror(status),
				 s->quit_sent ? " after QUIT" : "");
			px_session_end(s, normal, why);
		} else {
			px_session_end(s, false, "SSH channel write failed");
		}
		return;
	}
	px_session_pump(s);
}

/* ---- start ------------------------------------------------------------------- */

static void chan_open_cb(mux_chan *ch, int status, void *data)
{
	px_session *s = data;
	(void)ch;
	if (s->closing)
		return;
	if (status < 0) {
		char msg[400];
		snprintf(msg, sizeof(msg),
			 "ftpssh: cannot reach the FTP server %s port %u through the SSH "
			 "gateway (%s)",
			 s->fwd->host, s->fwd->port, mux_strerror(status));
		px_log(0, "[#%u] %s", s->id, msg + 8);
		px_session_reply_now(s, 421, msg);
		s->server_eof = true;
		px_session_check_end(s);
		return;
	}
	px_log(2, "[#%u] connected to %s:%u", s->id, s->fwd->host, s->fwd->port);
	s->to_server.chan = s->ch;
	fifo_push(s, EXP_GREETING);
	px_session_pump(s);
}

int px_session_accept(px_server *srv, int fd, const px_forward *fwd)
{
	px_session *s = calloc(1, sizeof(*s));
	int rc;
	if (!s) {
		close(fd);
		return UV_ENOMEM;
	}
	s->srv = srv;
	s->fwd = fwd;
	s->id = ++srv->next_sid;
	s->started_ms = uv_now(srv->loop);
	s->client_uid = -1;
	uv_tcp_init(srv->loop, &s->client);
	s->client.data = s;
	uv_timer_init(srv->loop, &s->timer);
	s->timer.data = s;
	uv_timer_init(srv->loop, &s->idle);
	s->idle.data = s;
	fp_framer_init(&s->cin);
	fp_framer_init(&s->sin);
	fp_reply_init(&s->rep);
	px_outq_init(&s->to_client, outq_cb, s);
	px_outq_init(&s->to_server, outq_cb, s);
	s->to_client.stream = (uv_stream_t *)&s->client;
	snprintf(s->peer, sizeof(s->peer), "?");
	/* link first: from here on px_session_end() is the only way out */
	s->next = srv->sessions;
	if (srv->sessions)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;

	rc = uv_tcp_open(&s->client, fd);
	if (rc < 0) {
		close(fd);
		px_log(0, "accept failed: %s", uv_strerror(rc));
		px_session_end(s, false, "accept failed");
		return rc;
	}
	int len = sizeof(s->local);
	uv_tcp_getsockname(&s->client, (struct sockaddr *)&s->local, &len);
	struct sockaddr_storage peer;
	int urc = UV_ENOTCONN;
	len = sizeof(peer);
	if (uv_tcp_getpeername(&s->client, (struct sockaddr *)&peer, &len) == 0) {
		px_addr_str(&peer, s->peer, sizeof(s->peer));
		uid_t uid;
		if (!srv->cfg->no_uid_check) {
			urc = px_peer_uid(srv->diag_fd, &s->local, &peer, &uid);
			if (urc == 0)
				s->client_uid = (long)uid;
		}
	}
	uv_tcp_nodelay(&s->client, 1);
	/* Clients send ABOR's Telnet "Synch" as TCP urgent data (ftplib sends
	 * the whole "ABOR\r\n" urgent). Keep the urgent byte in the stream, as
	 * FTP servers do, or the command loses its LF. */
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one));

	if (!px_session_admit(s, urc))
		return 0;
	if (s->client_uid >= 0)
		px_log(1, "[#%u] FTP client %s (uid %ld) -> %s:%u", s->id, s->peer, s->client_uid,
		       fwd->host, fwd->port);
	else
		px_log(1, "[#%u] FTP client %s -> %s:%u", s->id, s->peer, fwd->host, fwd->port);

	px_session_idle_arm(s);
	if (!srv->conn || !mux_conn_is_up(srv->conn)) {
		px_session_reply_now(s, 421, "ftpssh: SSH tunnel down, retrying; try again shortly");
		s->server_eof = true;
		px_session_check_end(s);
		return 0;
	}
	s->ch = mux_chan_open(srv->conn, fwd->host, fwd->port, chan_open_cb, s);
	if (!s->ch) {
		px_session_reply_now(s, 421, "ftpssh: cannot open an SSH channel");
		s->server_eof = true;
		px_session_check_end(s);
	}
	return 0;
}

void px_session_list_unlink(px_session *s)
{
	px_server *srv = s->srv;
	if (s->prev)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	srv->nsessions--;
}

/* Used by server.c at shutdown. */
void px_sessions_close_all(px_server *srv);
void px_sessions_close_all(px_server *srv)
{
	for (px_session *s = srv->sessions, *next; s; s = next) {
		next = s->next;
		px_session_end(s, true, "ftpssh stopping");
	}
}

