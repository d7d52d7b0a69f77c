/*
 * The server -> client half of a control session: reply lines are framed
 * and classified against the command FIFO. A 227 or 229 that answers a
 * PASV or EPSV the client actually sent is replaced by one pointing at a
 * fresh one-shot local port (dataport.c); the replies to ftpssh's own
 * hidden passive requests (active mode) go to active.c and never to the
 * client; FEAT loses its AUTH lines; everything else is forwarded
 * verbatim. The first reply to a transfer command tells the transfer
 * whether it ran (a refused command is not logged as a transfer).
 */
#include <string.h>
#include <strings.h>

#include "proxy/session.h"

static void answer_passive(px_session *s, bool epsv)
{
	char hostbuf[64];
	char line[128];
	uint16_t target = epsv ? s->epsv_port : s->pasv.port;
	uint16_t lport = 0;
	int n;

	if (!s->pasv_found) {
		char msg[160];
		snprintf(msg, sizeof(msg),
			 "ftpssh: cannot use the server's %s reply (%s); try again or use %s",
			 epsv ? "EPSV" : "PASV", fp_strerror(s->pasv_err),
			 epsv ? "PASV" : "EPSV");
		px_log(1, "[#%u] bad %s reply from server: %s", s->id, epsv ? "229" : "227",
		       fp_strerror(s->pasv_err));
		px_session_reply_now(s, 425, msg);
		return;
	}
	if (!epsv && s->local.ss_family != AF_INET) {
		px_log(2, "[#%u] PASV over IPv6 refused", s->id);
		px_session_reply_now(s, 425, "ftpssh: PASV cannot name an IPv6 address; use EPSV");
		return;
	}
	if (s->dp)
		px_dataport_close(s->dp); /* a new PASV replaces an unused port */
	const char *host = px_session_data_host(s, epsv, hostbuf, sizeof(hostbuf));
	int rc = px_dataport_open(s->srv, s->id, ++s->next_xid, (struct sockaddr *)&s->local,
				  host, target, s->client_uid, &s->dp, &lport);
	if (rc < 0) {
		char msg[160];
		snprintf(msg, sizeof(msg), "ftpssh: cannot open a local data port: %s",
			 uv_strerror(rc));
		px_log(0, "[#%u] %s", s->id, msg + strlen("ftpssh: "));
		px_session_reply_now(s, 425, msg);
		return;
	}
	if (epsv) {
		n = fp_format_229(line, sizeof(line), lport);
	} else {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&s->local;
		uint8_t ip[4];
		memcpy(ip, &sin->sin_addr, 4);
		n = fp_format_227(line, sizeof(line), ip, lport);
	}
	if (n > 0 && px_outq_push(&s->to_client, line, (size_t)n) == 0)
		px_session_log_line(s, "<-", line, (size_t)n - 2);
	px_log(2, "[#%u.%u] %s: local port %u -> %s:%u", s->id, s->next_xid,
	       epsv ? "EPSV" : "PASV", lport, host, target);
}

static bool feat_is_auth(const fp_line *l)
{
	size_t i = 0;
	while (i < l->text_len && l->p[i] == ' ')
		i++;
	return l->text_len - i >= 4 && strncasecmp(l->p + i, "AUTH", 4) == 0 &&
	       (l->text_len - i == 4 || l->p[i + 4] == ' ');
}

/* The first reply to a transfer command tells whether a transfer runs. */
static void note_transfer_reply(px_session *s, int head, const fp_reply_line *info)
{
	if (!info->first || !px_verb_transfers(head) || head != s->xfer_verb || !s->xfer_xid)
		return;
	if (info->code >= 400)
		px_xfer_refused(s->srv, s->dp, s->id, s->xfer_xid);
	s->xfer_xid = 0;
}

static void server_line(px_session *s, const fp_line *l)
{
	fp_reply_line info;
	int head = fifo_head(s);

	if (fp_reply_feed(&s->rep, l->p, l->text_len, &info) != FP_OK) {
		px_session_log_line(s, "<- (not a reply)", l->p, l->text_len);
		if (head == FP_CMD_PASV || head == FP_CMD_EPSV || head == EXP_ACTIVE_EPSV ||
		    head == EXP_ACTIVE_PASV) {
			/* It may still hold the server's real data port: never pass
			 * it on. It ends the reply to that command. */
			s->pasv_found = false;
			s->pasv_err = FP_E_SYNTAX;
			if (head == FP_CMD_PASV || head == FP_CMD_EPSV)
				answer_passive(s, head == FP_CMD_EPSV);
			else
				px_active_malformed(s);
			fifo_pop(s);
			return;
		}
		/* Elsewhere: pass it on untouched, the client is the judge. */
		px_outq_push(&s->to_client, l->p, l->len);
		return;
	}
	bool pasv = info.code == 227 && head == FP_CMD_PASV;
	bool epsv = info.code == 229 && head == FP_CMD_EPSV;
	px_session_log_line(s, "<-", l->p, l->text_len);
	if (head == EXP_ACTIVE_EPSV || head == EXP_ACTIVE_PASV) {
		px_active_reply(s, head, l, &info);
		if (info.last && info.code >= 200) {
			fifo_pop(s);
			px_active_next(s);
		}
		return;
	}
	note_transfer_reply(s, head, &info);
	if (head == FP_CMD_FEAT && !info.first && !info.last && feat_is_auth(l)) {
		/* TLS cannot be offered through ftpssh: don't advertise it */
		px_session_log_line(s, "<- (hidden)", l->p, l->text_len);
		return;
	}
	if (pasv || epsv) {
		if (info.first) {
			s->pasv_found = false;
			s->pasv_err = FP_E_SYNTAX;
		}
		if (!s->pasv_found) {
			int rc = pasv ? fp_parse_227(l->p, l->text_len, &s->pasv)
				      : fp_parse_229(l->p, l->text_len, &s->epsv_port);
			if (rc == FP_OK)
				s->pasv_found = true;
			else
				s->pasv_err = rc;
		}
		if (info.last)
			answer_passive(s, epsv);
	} else {
		px_outq_push(&s->to_client, l->p, l->len);
	}
	if (info.last && info.code >= 200) {
		if (head == FP_CMD_QUIT)
			s->quit_answered = true;
		fifo_pop(s);
	}
}

void px_session_process_server(px_session *s)
{
	fp_line l;
	while (!s->closing && px_outq_room(&s->to_client) >= FP_LINE_MAX + 256) {
		int rc = fp_framer_next(&s->sin, &l);
		if (rc == FP_E_AGAIN)
			break;
		if (rc == FP_E_TOOLONG) {
			px_log(1, "[#%u] server sent a line over %d bytes; session closed", s->id,
			       FP_LINE_MAX);
			px_session_reply_now(s, 421, "ftpssh: the server sent an over-long line; "
						     "closing");
			s->server_eof = true; /* nothing more will be relayed */
			mux_chan_read_stop(s->ch);
			break;
		}
		server_line(s, &l);
	}
	if (s->server_eof && !s->closing && fp_framer_pending(&s->sin) > 0 &&
	    px_outq_room(&s->to_client) >= FP_LINE_MAX) {
		/* the server closed in the middle of a line: deliver the tail */
		size_t n = fp_framer_pending(&s->sin);
		char *p = (char *)s->sin.buf + s->sin.start;
		px_outq_push(&s->to_client, p, n);
		fp_framer_init(&s->sin);
	}
}

