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
 * per uid; and, when --allow-users/--allow-groups are given (a relay
 * lends its SSH identity to every local user), the uid must be one of the
 * users or a member of one of the groups (group lists are read when the
 * client connects). A refused connection gets one clear 421 line and is
 * closed; it never opens a channel.
 *
 * Idle: --idle-timeout seconds with no client command and no transfer of
 * the session running (a held or awaited reply counts as busy) ends the
 * session with a 421.
 */
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/session.h"

#define REFUSAL_LOG_MS 1000

void px_limits_log_refusal(px_server *srv, unsigned id, const char *peer, const char *msg)
{
	uint64_t now = uv_now(srv->loop);
	if (now - srv->refusal_log_ms >= REFUSAL_LOG_MS || srv->refusal_log_ms == 0) {
		if (srv->refusals_quiet)
			px_log(1, "[#%u] %s refused: %s (and %u more refused in the last second)",
			       id, peer, msg + 8, srv->refusals_quiet);
		else
			px_log(1, "[#%u] %s refused: %s", id, peer, msg + 8);
		srv->refusal_log_ms = now;
		srv->refusals_quiet = 0;
	} else {
		srv->refusals_quiet++;
	}
}

/* Turn a new connection away with a 421 (no channel is opened). */
static void session_refuse(px_session *s, const char *msg)
{
	s->refused = true;
	px_limits_log_refusal(s->srv, s->id, s->peer, msg);
	px_session_reply_now(s, 421, msg);
	s->server_eof = true;
	px_session_check_end(s);
}

static void allow_parse(px_server *srv, const char *list, bool users)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", list);
	for (char *save = NULL, *w = strtok_r(buf, ", ", &save); w;
	     w = strtok_r(NULL, ", ", &save)) {
		char *end;
		unsigned long id = strtoul(w, &end, 10);
		bool numeric = *w && !*end;
		if (!numeric) {
			struct passwd *pw = users ? getpwnam(w) : NULL;
			struct group *gr = users ? NULL : getgrnam(w);
			if (users ? !pw : !gr) {
				px_log(0, "--allow-%s: no %s named %s; it matches nobody",
				       users ? "users" : "groups", users ? "user" : "group", w);
				continue;
			}
			id = users ? pw->pw_uid : gr->gr_gid;
		}
		if ((users ? srv->n_allow_uid : srv->n_allow_gid) >= PX_ALLOW_MAX) {
			px_log(0, "--allow-%s: more than %d entries; %s and later ignored",
			       users ? "users" : "groups", PX_ALLOW_MAX, w);
			break;
		}
		if (users)
			srv->allow_uid[srv->n_allow_uid++] = (uid_t)id;
		else
			srv->allow_gid[srv->n_allow_gid++] = (gid_t)id;
	}
}

void px_limits_init(px_server *srv)
{
	const px_config *cfg = srv->cfg;
	srv->allow_set = cfg->allow_users[0] || cfg->allow_groups[0];
	allow_parse(srv, cfg->allow_users, true);
	allow_parse(srv, cfg->allow_groups, false);
}

/* May this uid use the relay? */
static bool uid_allowed(px_server *srv, long uid)
{
	if (!srv->allow_set)
		return true;
	if (uid < 0)
		return false;
	for (unsigned i = 0; i < srv->n_allow_uid; i++)
		if (srv->allow_uid[i] == (uid_t)uid)
			return true;
	if (!srv->n_allow_gid)
		return false;
	struct passwd pwbuf, *pw = NULL;
	char buf[4096];
	if (getpwuid_r((uid_t)uid, &pwbuf, buf, sizeof(buf), &pw) != 0 || !pw)
		return false;
	gid_t groups[256];
	int n = 256;
	if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
		n = 256; /* more than fit: the first 256 are there */
	for (int g = 0; g < n; g++)
		for (unsigned i = 0; i < srv->n_allow_gid; i++)
			if (groups[g] == srv->allow_gid[i])
				return true;
	return false;
}

bool px_session_admit(px_session *s, int urc)
{
	px_server *srv = s->srv;
	const px_config *cfg = srv->cfg;
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
	if (!uid_allowed(srv, s->client_uid)) {
		snprintf(msg, sizeof(msg),
			 "ftpssh: uid %ld may not use this relay (--allow-users, --allow-groups)",
			 s->client_uid);
		session_refuse(s, msg);
		return false;
	}
	if (px_limits_full(srv, s->client_uid, true, s, NULL, msg, sizeof(msg))) {
		session_refuse(s, msg);
		return false;
	}
	return true;
}

bool px_limits_full(px_server *srv, long uid, bool allowed, const px_session *self,
		    const struct px_ftpd *fself, char *msg, size_t cap)
{
	unsigned all = 0, mine = 0, refused = 0;
	for (px_session *o = srv->sessions; o; o = o->next) {
		if (o == self || o->refused || o->closing)
			continue;
		all++;
		if (uid >= 0 && o->client_uid == uid)
			mine++;
	}
	/* the SFTP front end's sessions count the same */
	px_ftpd_count(srv, uid, fself, &all, &mine, &refused);
	if (!allowed) {
		/* told at login; meanwhile one descriptor, and few of them */
		if (refused >= PX_REFUSED_MAX || 2ull * all + refused + 1 + srv->nxfers +
							 srv->nftpd_xfers > srv->fd_budget) {
			snprintf(msg, cap, "ftpssh: uid %ld may not use this SFTP front end "
					   "(see --sftp-allow-uid)", uid);
			return true;
		}
		return false;
	}
	/* descriptors: a session may hold two (control, data port), a
	 * transfer one, and transfers may outlive their sessions */
	if (2ull * (all + 1) + refused + srv->nxfers + srv->nftpd_xfers > srv->fd_budget) {
		snprintf(msg, cap,
			 "ftpssh: too many sessions (%u sessions and %u transfers use the file "
			 "descriptors there are); try again later",
			 all, srv->nxfers + srv->nftpd_xfers);
		return true;
	}
	if (all >= srv->max_sessions) {
		snprintf(msg, cap, "ftpssh: too many sessions (%u in all, the limit); try again later",
			 all);
		return true;
	}
	if (uid >= 0 && mine >= srv->cfg->max_sessions_per_user) {
		snprintf(msg, cap,
			 "ftpssh: too many sessions for uid %ld (%u, the per-user limit); try again "
			 "later",
			 uid, mine);
		return true;
	}
	return false;
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
