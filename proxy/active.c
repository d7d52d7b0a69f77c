/*
 * Active mode (PORT/EPRT) on the session's side. The server side of every
 * transfer stays passive inside SSH: ftpssh connects to the client's data
 * port itself and asks the server for a passive port, as a passive client
 * would.
 *
 * The sequence, per transfer:
 *   PORT/EPRT   checked (loopback, port >= 1024, not another user's
 *               listener) and answered 200 here; nothing goes upstream.
 *   other commands (TYPE I, SIZE ...) are relayed as usual.
 *   RETR/STOR/LIST...  held; the listener at the client's address must be
 *               the control client's uid's; ftpssh connects to it
 *               (ACT_CONNECTING). A refusal is a 425 at once: the server
 *               never hears of the transfer.
 *   connected:  EPSV (PASV once the server has refused EPSV) goes upstream
 *               (ACT_PASSIVE).
 *   229/227:    the channel to the server's data port opens and the held
 *               command goes upstream at once.
 * So nothing the client sends between PORT and its transfer command meets
 * a server that, after PASV, reads nothing until its data port is
 * connected (issue 15). ftpssh's own replies keep the order of the reply
 * FIFO (px_session_reply).
 *
 * Ownership: the data connection is a px_xfer of the server (dataport.c),
 * known here by (session id, held_xid); the session drops it with
 * px_active_abort when it ends before the server's port is known.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/session.h"

/* Whose listener is at the client's data address? 0: the client's own (or
 * the check is off); else a negative code and a text for the reply. */
static int target_check(px_session *s, const char **why)
{
	uid_t uid;
	struct sockaddr_storage a = s->active_addr;
	if (s->srv->cfg->no_uid_check || s->client_uid < 0)
		return 0;
	const struct sockaddr_in6 *a6 = (const void *)&s->active_addr;
	if (a.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
		/* ::ffff:127.x names an IPv4 socket: look there */
		struct sockaddr_in *a4 = (struct sockaddr_in *)&a;
		uint16_t port = a6->sin6_port;
		uint32_t ip;
		memcpy(&ip, &a6->sin6_addr.s6_addr[12], 4);
		memset(&a, 0, sizeof(a));
		a4->sin_family = AF_INET;
		a4->sin_port = port;
		a4->sin_addr.s_addr = ip;
	}
	int rc = px_listener_uid(s->srv->diag_fd, &a, &uid);
	if (rc == UV_ENOENT) {
		*why = "nothing listens there";
		return UV_ECONNREFUSED;
	}
	if (rc < 0) {
		*why = "cannot tell whose port it is";
		return rc;
	}
	if ((long)uid != s->client_uid) {
		*why = "that port belongs to another user";
		return UV_EACCES;
	}
	return 0;
}

/* PORT/EPRT: checked and answered here (only a loopback address and a port
 * >= 1024, so ftpssh can never be used to bounce to another host). */
void px_active_port(px_session *s, const fp_cmd *cmd)
{
	bool eprt = cmd->verb == FP_CMD_EPRT;
	const char *verb = eprt ? "EPRT" : "PORT";
	char msg[200], a[64];
	uint16_t port = 0;
	int rc;

	memset(&s->active_addr, 0, sizeof(s->active_addr));
	s->active_armed = false;
	if (eprt) {
		char addr[64];
		int fam = 0;
		rc = fp_parse_eprt(cmd->arg, cmd->arg_len, &fam, addr, sizeof(addr), &port);
		if (rc == FP_OK)
			rc = fam == 1 ? uv_ip4_addr(addr, port, (struct sockaddr_in *)&s->active_addr)
				      : uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&s->active_addr);
	} else {
		fp_hostport hp;
		rc = fp_parse_port(cmd->arg, cmd->arg_len, &hp);
		if (rc == FP_OK) {
			struct sockaddr_in *in = (struct sockaddr_in *)&s->active_addr;
			in->sin_family = AF_INET;
			memcpy(&in->sin_addr, hp.ip, 4);
			in->sin_port = htons(hp.port);
			port = hp.port;
		}
	}
	if (rc != 0) {
		snprintf(msg, sizeof(msg), "ftpssh: cannot parse the %s argument", verb);
		px_session_reply(s, 501, msg);
		return;
	}
	if (px_addr_is_unspecified(&s->active_addr)) {
		/* "::" or 0.0.0.0 (lftp over IPv6 says EPRT |2|::|port|): the
		 * client means its own host, the peer of the control connection. */
		struct sockaddr_storage peer;
		int plen = sizeof(peer);
		if (uv_tcp_getpeername(&s->client, (struct sockaddr *)&peer, &plen) == 0) {
			if (peer.ss_family == AF_INET6)
				((struct sockaddr_in6 *)&peer)->sin6_port = htons(port);
			else
				((struct sockaddr_in *)&peer)->sin_port = htons(port);
			s->active_addr = peer;
		}
	}
	px_addr_str(&s->active_addr, a, sizeof(a));
	if (!px_addr_is_loopback(&s->active_addr)) {
		px_log(1, "[#%u] %s to %s refused: not a loopback address", s->id, verb, a);
		snprintf(msg, sizeof(msg), "ftpssh: %s must name a loopback address (no FTP bounce)",
			 verb);
		px_session_reply(s, 501, msg);
		return;
	}
	if (port < 1024) {
		snprintf(msg, sizeof(msg), "ftpssh: %s to a port below 1024 refused", verb);
		px_session_reply(s, 501, msg);
		return;
	}
	const char *why = NULL;
	if (target_check(s, &why) == UV_EACCES) {
		/* another user's port (or one of ftpssh's own data ports):
		 * ftpssh must not connect there on this client's behalf */
		px_log(0, "[#%u] %s to %s refused: %s (uid %ld asked)", s->id, verb, a, why,
		       s->client_uid);
		snprintf(msg, sizeof(msg), "ftpssh: %s to %s refused: %s", verb, a, why);
		px_session_reply(s, 501, msg);
		return;
	}
	if (s->dp)
		px_dataport_close(s->dp);
	s->active_eprt = eprt;
	s->active_armed = true;
	snprintf(msg, sizeof(msg), "%s command successful (ftpssh carries it over SSH)", verb);
	px_session_reply(s, 200, msg);
}

static void held_free(px_session *s)
{
	free(s->held_cmd);
	s->held_cmd = NULL;
	s->act = ACT_IDLE;
}

static void held_fail(px_session *s, const char *why)
{
	char msg[200];
	px_active_abort(s->srv, s->id, s->held_xid);
	held_free(s);
	snprintf(msg, sizeof(msg), "ftpssh: cannot open the data connection to your port (%s)",
		 why);
	px_session_reply(s, 425, msg);
}

bool px_active_transfer(px_session *s, const fp_line *l, int verb)
{
	if (!s->active_armed)
		return false;
	s->active_armed = false;
	s->held_cmd = malloc(l->len);
	if (!s->held_cmd) {
		px_session_reply(s, 425, "ftpssh: out of memory");
		return true;
	}
	memcpy(s->held_cmd, l->p, l->len);
	s->held_len = l->len;
	s->held_verb = verb;
	s->held_xid = ++s->next_xid;
	s->act = ACT_CONNECTING;
	const char *why = NULL;
	int rc = target_check(s, &why);
	if (rc < 0) {
		char a[64];
		px_addr_str(&s->active_addr, a, sizeof(a));
		px_log(1, "[#%u.%u] data connection to %s not made: %s", s->id, s->held_xid, a,
		       why);
		held_fail(s, why);
		return true;
	}
	rc = px_active_start(s->srv, s->id, s->held_xid, (struct sockaddr *)&s->active_addr,
			     s->last_cmd);
	if (rc < 0) {
		px_log(0, "[#%u] active data connection: %s", s->id, uv_strerror(rc));
		held_fail(s, uv_strerror(rc));
	}
	return true;
}

/* Ask the server for a passive port on behalf of the client. */
static void passive_request(px_session *s)
{
	static const char epsv_cmd[] = "EPSV\r\n", pasv_cmd[] = "PASV\r\n";
	bool epsv = !s->no_epsv;
	const char *cmd = epsv ? epsv_cmd : pasv_cmd;
	s->pasv_found = false;
	s->pasv_err = FP_E_SYNTAX;
	if (px_session_send(s, cmd, strlen(cmd), epsv ? EXP_ACTIVE_EPSV : EXP_ACTIVE_PASV) != 0) {
		held_fail(s, "cannot reach the server");
		return;
	}
	char dir[32];
	snprintf(dir, sizeof(dir), "-> (for %s)", s->active_eprt ? "EPRT" : "PORT");
	px_session_log_line(s, dir, cmd, 4);
}

bool px_session_active_connected(px_server *srv, unsigned sid, unsigned xid, int status)
{
	px_session *s;
	for (s = srv->sessions; s; s = s->next)
		if (s->id == sid)
			break;
	if (!s || s->closing || s->act != ACT_CONNECTING || s->held_xid != xid)
		return false;
	if (status < 0) {
		held_fail(s, uv_strerror(status));
	} else {
		s->act = ACT_PASSIVE;
		passive_request(s);
	}
	px_session_pump(s);
	return status == 0 && s->act == ACT_PASSIVE;
}

void px_active_malformed(px_session *s)
{
	if (s->act == ACT_PASSIVE)
		held_fail(s, "the server's passive reply was malformed");
}

/* A reply to the hidden EPSV/PASV: on success the channel to the server's
 * port opens and the held command follows at once; an EPSV refusal is
 * asked again as PASV; a PASV failure is the client's 425. */
void px_active_reply(px_session *s, int head, const fp_line *l, const fp_reply_line *info)
{
	bool epsv = head == EXP_ACTIVE_EPSV;
	bool ok_code = info->code == (epsv ? 229 : 227);
	if (ok_code && !s->pasv_found) {
		int rc = epsv ? fp_parse_229(l->p, l->text_len, &s->epsv_port)
			      : fp_parse_227(l->p, l->text_len, &s->pasv);
		if (rc == FP_OK)
			s->pasv_found = true;
		else
			s->pasv_err = rc;
	}
	if (!info->last || info->code < 200 || s->act != ACT_PASSIVE)
		return;
	if (ok_code && s->pasv_found) {
		char hostbuf[64];
		uint16_t port = epsv ? s->epsv_port : s->pasv.port;
		const char *host = px_session_data_host(s, epsv, hostbuf, sizeof(hostbuf));
		int rc = px_active_go(s->srv, s->id, s->held_xid, host, port);
		if (rc < 0) {
			held_fail(s, rc == UV_ENOENT ? "your data connection closed"
						     : mux_strerror(rc));
			return;
		}
		/* the transfer command follows its passive request at once */
		px_session_send(s, s->held_cmd, s->held_len, s->held_verb);
		if (px_log_enabled(3)) {
			char dir[48];
			snprintf(dir, sizeof(dir), "-> (held for %s, sent now)",
				 s->active_eprt ? "EPRT" : "PORT");
			px_session_log_line(s, dir, s->last_cmd, strlen(s->last_cmd));
		}
		s->xfer_verb = s->held_verb;
		s->xfer_xid = s->held_xid;
		held_free(s);
		return;
	}
	if (epsv && info->code >= 400 && !ok_code) {
		s->no_epsv = true; /* the caller pops this entry; PASV next */
		return;
	}
	char msg[200];
	snprintf(msg, sizeof(msg), "the server gave no usable passive port (%s)",
		 ok_code ? fp_strerror(s->pasv_err) : "refused");
	px_log(1, "[#%u] %s", s->id, msg);
	held_fail(s, msg);
}

void px_active_next(px_session *s)
{
	if (s->act == ACT_PASSIVE && s->no_epsv && s->held_cmd)
		passive_request(s);
}

void px_active_drop(px_session *s)
{
	if (s->held_cmd)
		px_active_abort(s->srv, s->id, s->held_xid);
	held_free(s);
}
