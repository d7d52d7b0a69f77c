/*
 * Who gets a session, and for how long: the policy half of a control
 * session (session.c is the mechanism).
 *
 * Admission, decided once the client's uid is known: a connection whose
 * owner cannot be established is refused (fail closed: its data ports
 * could not tell it from a thief) unless --no-uid-check; then the caps,
 * counted over admitted, open sessions: descriptors (2 per session and 1
 * per running transfer within the budget RLIMIT_NOFILE leaves, so the 421
 * comes before EMFILE), --max-sessions in all, --max-sessions-per-user
 * per uid. A refused connection gets one clear 421 line and is closed; it
 * never opens a channel.
 *
 * Idle: --idle-timeout seconds with no client command and no transfer of
 * the session running (a held or awaited reply counts as busy) ends the
 * session with a 421.
 */
#include <string.h>

#include "proxy/session.h"

#define REFUSAL_LOG_MS 1000

/* Turn a new connection away with a 421 (no channel is opened). Log lines
 * for refusals are limited to one a second: a flood must not flood the log. */
static void session_refuse(px_session *s, const char *msg)
{
	px_server *srv = s->srv;
	uint64_t now = uv_now(srv->loop);
	s->refused = true;
	if (now - srv->refusal_log_ms >= REFUSAL_LOG_MS || srv->refusal_log_ms == 0) {
		if (srv->refusals_quiet)
			px_log(1, "[#%u] %s refused: %s (and %u more refused in the last second)",
			       s->id, s->peer, msg + 8, srv->refusals_quiet);
		else
			px_log(1, "[#%u] %s refused: %s", s->id, s->peer, msg + 8);
		srv->refusal_log_ms = now;
		srv->refusals_quiet = 0;
	} else {
		srv->refusals_quiet++;
	}
	px_session_reply_now(s, 421, msg);
	s->server_eof = true;
	px_session_check_end(s);
}

bool px_session_admit(px_session *s, int urc)
{
	px_server *srv = s->srv;
	const px_config *cfg = srv->cfg;
	unsigned all = 0, mine = 0;
	char msg[200];
	if (!cfg->no_uid_check && s->client_uid < 0) {
		/* fail closed: its data ports could not tell it from a thief */
		snprintf(msg, sizeof(msg),
			 "ftpssh: cannot tell which local user this connection belongs to (%s); "
			 "refused",
			 uv_strerror(urc));
		session_refuse(s, msg);
		return false;
	}
	for (px_session *o = srv->sessions; o; o = o->next) {
		if (o == s || o->refused || o->closing)
			continue;
		all++;
		if (s->client_uid >= 0 && o->client_uid == s->client_uid)
			mine++;
	}
	/* descriptors: a session may hold two (control, data port), a
	 * transfer one, and transfers may outlive their sessions */
	if (2ull * (all + 1) + srv->nxfers > srv->fd_budget) {
		snprintf(msg, sizeof(msg),
			 "421 ftpssh: too many sessions (%u sessions and %u transfers use the file "
			 "descriptors there are); try again later",
			 all, srv->nxfers);
		session_refuse(s, msg + 4);
		return false;
	}
	if (all >= srv->max_sessions) {
		snprintf(msg, sizeof(msg),
			 "421 ftpssh: too many sessions (%u in all, the limit); try again later",
			 all);
		session_refuse(s, msg + 4);
		return false;
	}
	if (s->client_uid >= 0 && mine >= cfg->max_sessions_per_user) {
		snprintf(msg, sizeof(msg),
			 "421 ftpssh: too many sessions for uid %ld (%u, the per-user limit); try "
			 "again later",
			 s->client_uid, mine);
		session_refuse(s, msg + 4);
		return false;
	}
	return true;
}

/* --idle-timeout: no command and no transfer for that long. */
static void idle_cb(uv_timer_t *t)
{
	px_session *s = t->data;
	unsigned secs = s->srv->cfg->idle_timeout_sec;
	if (s->closing)
		return;
	if (px_xfer_running(s->srv, s->id) || s->held_cmd || s->fcount > 0) {
		/* busy: a transfer runs or a reply is awaited */
		uv_timer_start(&s->idle, idle_cb, secs * 1000ull, 0);
		return;
	}
	char msg[160];
	snprintf(msg, sizeof(msg), "ftpssh: idle for %u s (no command, no transfer); closing "
				   "(--idle-timeout)",
		 secs);
	px_log(1, "[#%u] idle for %u s; closing the session", s->id, secs);
	px_session_reply_now(s, 421, msg);
	/* nothing more is relayed either way; close once the 421 is out */
	fp_framer_init(&s->sin);
	fp_framer_init(&s->cin);
	s->client_eof = true;
	s->server_eof = true;
	s->idle_closed = true;
	px_session_pump(s);
	if (!s->closing && px_outq_len(&s->to_client) == 0)
		px_session_end(s, true, "idle timeout");
}

void px_session_idle_arm(px_session *s)
{
	unsigned secs = s->srv->cfg->idle_timeout_sec;
	if (secs && !s->closing)
		uv_timer_start(&s->idle, idle_cb, secs * 1000ull, 0);
}
