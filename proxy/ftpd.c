/*
 * ftpssh's own FTP server: one control session per client of a
 * "-L port:sftp" forward, its file system the SFTP subsystem on the one
 * SSH connection (a client of the connection's shared sftp channels,
 * mux/sftp.h, taken when the client connects).
 *
 * Who may log in: the local uid that runs ftpssh and the uids given with
 * --sftp-allow-uid, told apart by the owner of the client's socket
 * (px_peer_uid); any USER/PASS is then accepted, since the files are the
 * SSH user's anyway. A client whose owner cannot be found is refused: the
 * check fails closed.
 *
 * Commands are handled one at a time in arrival order: a command that
 * needs an SFTP request sets busy and the next line is not read out of the
 * framer until its reply is sent. While a transfer runs (ftpd_xfer.c) only
 * ABOR, STAT, NOOP and QUIT are taken; other lines wait in the framer.
 *
 * Ownership: the session owns its client handle, its SFTP client, and
 * every data port / transfer it created (s->fxs; s->fx is the one the
 * next transfer command uses). It is freed once the client handle and the
 * SFTP channel have closed and every transfer object has gone.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/ftpd.h"

static void ftpd_pump(px_ftpd *s);
static void idle_cb(uv_timer_t *t);

/* A session that will be refused at login is closed this long after it
 * came, whatever it sends. */
#define REFUSED_LINGER_S 30
/* A closed session counts against the caps while its SFTP requests are
 * still out, this long at most. */
#define CLOSING_COUNT_MS 30000

/* ---- accessors for ftpd_xfer.c ------------------------------------------ */

mux_sftp *ftpd_sftp(px_ftpd *s)
{
	return s->sftp;
}

unsigned ftpd_id(const px_ftpd *s)
{
	return s->id;
}

uv_loop_t *ftpd_loop(const px_ftpd *s)
{
	return s->srv->loop;
}

const px_config *ftpd_cfg(const px_ftpd *s)
{
	return s->srv->cfg;
}

long ftpd_client_uid(const px_ftpd *s)
{
	return s->client_uid;
}

void ftpd_reply(px_ftpd *s, int code, const char *fmt, ...)
{
	char text[FTPD_PATH_MAX + 256];
	char line[sizeof(text) + 8];
	va_list ap;
	if (s->closing)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	int n = fp_format_reply(line, sizeof(line), code, text);
	if (n > 0 && px_outq_push(&s->out, line, (size_t)n) == 0 && px_log_enabled(3)) {
		char pr[300];
		fp_printable(pr, sizeof(pr), line, (size_t)n - 2);
		px_log(3, "[#%u] <- %s", s->id, pr);
	}
}

/* Lines of a multi-line reply, already formatted with CR LF. */
void ftpd_reply_raw(px_ftpd *s, const char *text, size_t len)
{
	if (!s->closing)
		px_outq_push(&s->out, text, len);
}

int ftpd_fx_code(uint32_t status, const char *msg, size_t msg_len, bool store)
{
	/* OpenSSH's sftp-server says "Failure" for ENOSPC; other servers
	 * name it in the message or use the later drafts' codes. */
	if (status == MUX_FX_NO_SPACE_ON_FILESYSTEM || status == MUX_FX_QUOTA_EXCEEDED ||
	    (msg_len >= 5 && memmem(msg, msg_len, "space", 5)))
		return 452;
	switch (status) {
	case MUX_FX_NO_SUCH_FILE:
	case MUX_FX_NO_SUCH_PATH:
	case MUX_FX_NOT_A_DIRECTORY:
	case MUX_FX_FILE_IS_A_DIRECTORY:
	case MUX_FX_DIR_NOT_EMPTY:
	case MUX_FX_FILE_ALREADY_EXISTS:
		return 550;
	case MUX_FX_PERMISSION_DENIED:
	case MUX_FX_WRITE_PROTECT:
		return store ? 553 : 550;
	case MUX_FX_OP_UNSUPPORTED:
		return 502;
	default:
		return 451;
	}
}

/* ---- closing ---------------------------------------------------------------- */

static void ftpd_free_if_done(px_ftpd *s)
{
	if (s->pending_closes > 0 || s->fxs)
		return;
	px_server *srv = s->srv;
	if (s->prev)
		s->prev->next = s->next;
	else
		srv->ftpds = s->next;
	if (s->next)
		s->next->prev = s->prev;
	srv->nftpds--;
	free(s);
	px_server_maybe_closed(srv);
}

static void client_closed_cb(uv_handle_t *h)
{
	px_ftpd *s = h->data;
	s->pending_closes--;
	ftpd_free_if_done(s);
}

static void idle_closed_cb(uv_handle_t *h)
{
	px_ftpd *s = h->data;
	s->pending_closes--;
	ftpd_free_if_done(s);
}

static void sftp_closed_cb(void *data)
{
	px_ftpd *s = data;
	s->sftp = NULL;
	s->pending_closes--;
	ftpd_free_if_done(s);
}

void ftpd_close(px_ftpd *s, const char *why)
{
	if (s->closing)
		return;
	s->closing = true;
	s->closed_ms = uv_now(s->srv->loop);
	px_log(2, "[#%u] sftp session from %s ends after %.1f s: %s", s->id, s->peer,
	       (uv_now(s->srv->loop) - s->started_ms) / 1000.0, why);
	s->fx = NULL;
	/* A transfer whose handles are already closed is freed inside
	 * fx_kill, and tells us: hold s until the loop is done. */
	s->pending_closes++;
	for (px_fx *fx = s->fxs, *next; fx; fx = next) {
		next = fx_list_next(fx);
		fx_kill(fx);
	}
	s->pending_closes++;
	uv_close((uv_handle_t *)&s->client, client_closed_cb);
	s->pending_closes++;
	uv_close((uv_handle_t *)&s->idle, idle_closed_cb);
	if (s->sftp) {
		s->pending_closes++;
		mux_sftp_close(s->sftp, sftp_closed_cb, s);
	}
	s->pending_closes--; /* the hold; the client handle's close is still to come */
}

void ftpd_fx_finished(px_ftpd *s, px_fx *fx)
{
	if (s->fx == fx)
		s->fx = NULL;
	if (!s->closing)
		ftpd_pump(s);
}

void ftpd_fx_freed(px_ftpd *s, px_fx *fx)
{
	if (s->fx == fx)
		s->fx = NULL;
	if (s->closing)
		ftpd_free_if_done(s);
	else
		ftpd_pump(s);
}

/* ---- the SFTP client ------------------------------------------------------- */

static void sftp_event_cb(mux_sftp *sftp, int status, void *data)
{
	px_ftpd *s = data;
	(void)sftp;
	if (status == 0) {
		s->sftp_state = 1;
		px_log(2, "[#%u] sftp subsystem ready", s->id);
		if (s->wait_sftp) {
			s->wait_sftp = false;
			ftpd_login_finish(s);
		}
		return;
	}
	s->sftp_state = -1;
	px_log(1, "[#%u] sftp channel failed: %s", s->id, mux_strerror(status));
	ftpd_reply(s, 421, "ftpssh: the SFTP subsystem is not available (%s)",
		   mux_strerror(status));
	s->quitting = true;
	s->busy = false;
	ftpd_pump(s);
}

/* ---- control stream ----------------------------------------------------------- */

static bool verb_during_transfer(const fp_cmd *c)
{
	return strcmp(c->name, "ABOR") == 0 || strcmp(c->name, "STAT") == 0 ||
	       strcmp(c->name, "NOOP") == 0 || strcmp(c->name, "QUIT") == 0;
}

/* --idle-timeout, as for relayed sessions: no command and no transfer
 * (nor a reply awaited) for that long ends the session with a 421. An
 * SFTP reply awaited that long, with the server answering nothing on
 * the channel meanwhile (mux_sftp_waited_ms), does not count as busy:
 * the server sits on the request (a FIFO, a hung mount), and the session
 * would otherwise stay, counted, whether its client is there or not. A
 * session quitting that long (its client does not read the last reply)
 * ends too. A session that will be refused at login gets
 * REFUSED_LINGER_S, commands or not. */
static void idle_arm(px_ftpd *s)
{
	uint64_t full = s->srv->cfg->idle_timeout_sec * 1000ull;
	if (!full || s->closing || !s->allowed)
		return;
	uint64_t now = uv_now(s->srv->loop);
	uint64_t idle_at = s->last_cmd_ms + full;
	uint64_t waited = s->sftp ? mux_sftp_waited_ms(s->sftp) : 0;
	uint64_t due = idle_at > now ? idle_at - now : 1;
	if (waited && full - (waited < full ? waited : full) < due)
		due = waited < full ? full - waited : 1;
	uv_timer_start(&s->idle, idle_cb, due, 0);
}

static void idle_cb(uv_timer_t *t)
{
	px_ftpd *s = t->data;
	uint64_t full = s->srv->cfg->idle_timeout_sec * 1000ull;
	if (s->closing)
		return;
	if (!s->allowed) {
		ftpd_close(s, "not allowed, and still here");
		return;
	}
	uint64_t now = uv_now(s->srv->loop);
	uint64_t waited = s->sftp ? mux_sftp_waited_ms(s->sftp) : 0;
	if (waited >= full) {
		px_log(1, "[#%u] the SFTP server has not answered for %.0f s; closing the session",
		       s->id, waited / 1000.0);
		ftpd_reply(s, 421, "ftpssh: the SFTP server has not answered for %.0f s; closing "
				   "(--idle-timeout)", waited / 1000.0);
		/* its reply may never come: do not wait for it */
		ftpd_close(s, "SFTP server not answering");
		return;
	}
	bool busy = s->busy || (s->fx && fx_running(s->fx));
	if (busy || now - s->last_cmd_ms < full) {
		idle_arm(s);
		return;
	}
	if (s->quitting) {
		ftpd_close(s, "quitting, and the client does not take the last reply");
		return;
	}
	px_log(1, "[#%u] idle for %u s; closing the session", s->id, (unsigned)(full / 1000));
	ftpd_reply(s, 421, "ftpssh: idle for %u s (no command, no transfer); closing "
			   "(--idle-timeout)", (unsigned)(full / 1000));
	s->quitting = true;
	s->last_cmd_ms = now; /* the 421 has this long to go out */
	idle_arm(s);
	ftpd_pump(s);
}

static void idle_restart(px_ftpd *s)
{
	s->last_cmd_ms = uv_now(s->srv->loop);
	idle_arm(s);
}

static void process_client(px_ftpd *s)
{
	while (!s->closing && !s->busy && !s->quitting &&
	       px_outq_room(&s->out) >= FTPD_PATH_MAX * 2 + 1024) {
		size_t sv_start = s->cin.start, sv_len = s->cin.len, sv_scanned = s->cin.scanned;
		bool sv_disc = s->cin.discarding;
		fp_line l;
		int rc = fp_framer_next(&s->cin, &l);
		if (rc == FP_E_AGAIN)
			break;
		if (rc == FP_E_TOOLONG) {
			px_log(1, "[#%u] client sent a line over %d bytes", s->id, FP_LINE_MAX);
			ftpd_reply(s, 500, "Command line too long");
			continue;
		}
		fp_cmd cmd;
		if (fp_cmd_parse(l.p, l.text_len, &cmd) != FP_OK) {
			ftpd_reply(s, 500, "Syntax error, command unrecognized");
			continue;
		}
		if (s->fx && fx_running(s->fx) && !verb_during_transfer(&cmd)) {
			/* wait for the transfer: put the line back */
			s->cin.start = sv_start;
			s->cin.len = sv_len;
			s->cin.scanned = sv_scanned;
			s->cin.discarding = sv_disc;
			break;
		}
		idle_restart(s);
		s->dispatching = true;
		ftpd_command(s, &cmd, &l);
		s->dispatching = false;
	}
}

static void client_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	px_ftpd *s = h->data;
	size_t avail = 0;
	(void)suggested;
	char *p = fp_framer_space(&s->cin, &avail);
	*buf = uv_buf_init(p, (unsigned)avail);
}

static void client_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	px_ftpd *s = st->data;
	(void)buf;
	if (s->closing)
		return;
	if (n > 0) {
		fp_framer_commit(&s->cin, (size_t)n);
	} else if (n == UV_EOF) {
		s->client_eof = true;
		uv_read_stop(st);
		s->reading = false;
	} else if (n == UV_ENOBUFS) {
		uv_read_stop(st);
		s->reading = false;
	} else if (n < 0) {
		ftpd_close(s, uv_strerror((int)n));
		return;
	}
	ftpd_pump(s);
}

static void ftpd_pump(px_ftpd *s)
{
	/* A handler can end a transfer (ABOR, QUIT), which pumps: the loop
	 * that called the handler goes on instead, so replies keep order. */
	if (s->closing || s->dispatching)
		return;
	process_client(s);
	if (s->closing)
		return;
	bool running = s->fx && fx_running(s->fx);
	if (s->quitting && px_outq_len(&s->out) == 0 && !running) {
		ftpd_close(s, "QUIT");
		return;
	}
	if (s->client_eof && !s->busy && !running) {
		ftpd_close(s, "client closed");
		return;
	}
	size_t avail = 0;
	fp_framer_space(&s->cin, &avail);
	bool want = !s->client_eof && !s->quitting && avail > 0;
	if (want && !s->reading) {
		if (uv_read_start((uv_stream_t *)&s->client, client_alloc_cb, client_read_cb) == 0)
			s->reading = true;
	} else if (!want && s->reading) {
		uv_read_stop((uv_stream_t *)&s->client);
		s->reading = false;
	}
}

void ftpd_done(px_ftpd *s)
{
	s->busy = false;
	ftpd_pump(s);
}

static void out_cb(px_outq *q, int status)
{
	px_ftpd *s = q->data;
	if (s->closing)
		return;
	if (status < 0) {
		ftpd_close(s, "client connection failed");
		return;
	}
	ftpd_pump(s);
}

/* ---- accept ------------------------------------------------------------------ */

/* The owner of the client's socket: ftpssh's own uid, or one given with
 * --sftp-allow-uid. Unknown owner: no. */
static bool uid_allowed(const px_config *cfg, long uid)
{
	if (uid < 0)
		return false;
	if ((uid_t)uid == getuid())
		return true;
	for (size_t i = 0; i < cfg->n_sftp_allow; i++)
		if (cfg->sftp_allow_uids[i] == uid)
			return true;
	return false;
}

void px_ftpd_count(const px_server *srv, long uid, const struct px_ftpd *fself, unsigned *all,
		   unsigned *mine, unsigned *refused)
{
	/* closing ones too, until freed: a closed session's SFTP requests
	 * still run on the shared channel until answered (mux/sftp.h); but
	 * for CLOSING_COUNT_MS at most, so a server that never answers does
	 * not keep the slots taken. Those that will be refused at login take
	 * descriptors, not sessions: they count apart. */
	uint64_t now = uv_now(srv->loop);
	for (const px_ftpd *o = srv->ftpds; o; o = o->next) {
		if (o == fself || !o->admitted ||
		    (o->closing && now - o->closed_ms >= CLOSING_COUNT_MS))
			continue;
		if (!o->allowed) {
			(*refused)++;
			continue;
		}
		(*all)++;
		if (uid >= 0 && o->client_uid == uid)
			(*mine)++;
	}
}

int px_ftpd_accept(px_server *srv, int fd, const px_forward *fwd)
{
	px_ftpd *s = calloc(1, sizeof(*s));
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
	uv_timer_init(srv->loop, &s->idle);
	s->idle.data = s;
	fp_framer_init(&s->cin);
	px_outq_init(&s->out, out_cb, s);
	s->out.stream = (uv_stream_t *)&s->client;
	snprintf(s->cwd, sizeof(s->cwd), "/");
	snprintf(s->peer, sizeof(s->peer), "?");
	s->next = srv->ftpds;
	if (srv->ftpds)
		srv->ftpds->prev = s;
	srv->ftpds = s;
	srv->nftpds++;

	/* the listener accepted it (server.c); the handle owns it now */
	int rc = uv_tcp_open(&s->client, fd);
	if (rc < 0) {
		close(fd);
		px_log(0, "accept failed: %s", uv_strerror(rc));
		ftpd_close(s, "accept failed");
		return rc;
	}
	uv_tcp_nodelay(&s->client, 1);
	int one = 1; /* ABOR's urgent byte stays in the stream */
	setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one));
	int len = sizeof(s->local);
	uv_tcp_getsockname(&s->client, (struct sockaddr *)&s->local, &len);
	struct sockaddr_storage peer;
	len = sizeof(peer);
	int urc = UV_ENOTCONN;
	if (uv_tcp_getpeername(&s->client, (struct sockaddr *)&peer, &len) == 0) {
		px_addr_str(&peer, s->peer, sizeof(s->peer));
		uid_t uid;
		urc = px_peer_uid(srv->diag_fd, &s->local, &peer, &uid);
		if (urc == 0)
			s->client_uid = (long)uid;
	}
	s->allowed = uid_allowed(srv->cfg, s->client_uid);
	if (urc != 0)
		px_log(0, "[#%u] sftp front end: cannot tell which user %s is (%s): refused",
		       s->id, s->peer, uv_strerror(urc));
	else if (!s->allowed)
		px_log(0, "[#%u] sftp front end: client %s is uid %ld, not allowed (ftpssh runs "
			  "as uid %ld; see --sftp-allow-uid): refused",
		       s->id, s->peer, s->client_uid, (long)getuid());
	else
		px_log(1, "[#%u] FTP client %s (uid %ld) -> SFTP", s->id, s->peer, s->client_uid);

	/* the caps of every session (--max-sessions, per user, descriptors);
	 * one that will not be let in holds a descriptor too */
	char full[200];
	if (urc != 0) {
		/* fail closed, as relayed sessions do, and count for nobody */
		ftpd_reply(s, 421, "ftpssh: cannot tell which local user this connection belongs "
				   "to (%s); refused", uv_strerror(urc));
		s->quitting = true;
		ftpd_pump(s);
		return 0;
	}
	if (px_limits_full(srv, s->client_uid, s->allowed, NULL, s, full, sizeof(full))) {
		px_limits_log_refusal(srv, s->id, s->peer, full);
		ftpd_reply(s, 421, "%s", full);
		s->quitting = true;
		ftpd_pump(s);
		return 0;
	}
	s->admitted = true;
	if (!s->allowed) {
		/* it is told at login (530), which FTP clients show plainly;
		 * meanwhile it counts, for REFUSED_LINGER_S at most */
		ftpd_reply(s, 220, "ftpssh SFTP front end (login will be refused)");
		uv_timer_start(&s->idle, idle_cb, REFUSED_LINGER_S * 1000ull, 0);
	} else if (!srv->conn || !mux_conn_is_up(srv->conn)) {
		ftpd_reply(s, 421, "ftpssh: SSH tunnel down, retrying; try again shortly");
		s->quitting = true;
	} else if (!(s->sftp = mux_sftp_start(srv->conn, sftp_event_cb, s))) {
		ftpd_reply(s, 421, "ftpssh: cannot open an SSH channel");
		s->quitting = true;
	} else {
		ftpd_reply(s, 220, "ftpssh SFTP front end ready");
	}
	idle_restart(s);
	ftpd_pump(s);
	return 0;
}

void px_ftpd_close_all(px_server *srv)
{
	for (px_ftpd *s = srv->ftpds, *next; s; s = next) {
		next = s->next;
		ftpd_close(s, "ftpssh stopping");
	}
}

void px_ftpd_report(px_server *srv, FILE *out)
{
	uint64_t now = uv_now(srv->loop);
	for (px_ftpd *s = srv->ftpds; s; s = s->next) {
		char id[16], uid[24];
		snprintf(id, sizeof(id), "#%u", s->id);
		snprintf(uid, sizeof(uid), "%ld", s->client_uid);
		char what[48] = "(sftp)";
		if (s->fx && fx_running(s->fx))
			snprintf(what, sizeof(what), "(sftp, %llu bytes so far)",
				 (unsigned long long)fx_bytes(s->fx));
		fprintf(out, "%-7s %-16.16s %-24.24s %6s %7.0fs  %s %s\n", id,
			s->user[0] ? s->user : "-", s->peer, uid, (now - s->started_ms) / 1000.0,
			s->last_cmd[0] ? s->last_cmd : "-", what);
	}
}
