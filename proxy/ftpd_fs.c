/*
 * The SFTP front end's commands that touch files or set up data
 * connections (ftpd_cmd.c has the table and the simple ones).
 *
 * Each file command is one SFTP request whose callback replies; the
 * session stays busy meanwhile. PASV/EPSV/PORT/EPRT make the data port the
 * next transfer command uses (ftpd_xfer.c); PORT/EPRT follow the relay's
 * rules: loopback only, port >= 1024, so no FTP bounce.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "proxy/ftpd.h"

static bool is_dir(const sfw_attrs *a)
{
	return (a->flags & SFW_ATTR_PERMISSIONS) && (a->perm & 0170000) == 0040000;
}

static bool is_reg(const sfw_attrs *a)
{
	return !(a->flags & SFW_ATTR_PERMISSIONS) || (a->perm & 0170000) == 0100000;
}

/* ---- CWD / CDUP --------------------------------------------------------- */

static void cwd_stat_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_ftpd *s = data;
	(void)sftp;
	if (!r || r->type != SFW_ATTRS) {
		ftpd_sftp_error(s, r, err, false, s->path);
		return;
	}
	if (!is_dir(&r->attrs)) {
		ftpd_reply(s, 550, "%s: Not a directory", s->path);
	} else {
		memcpy(s->cwd, s->path, sizeof(s->cwd));
		ftpd_reply(s, 250, "Directory changed to %s", s->cwd);
	}
	ftpd_done(s);
}

void ftpd_cmd_cwd(px_ftpd *s, const char *arg)
{
	if (ftpd_resolve(s, arg, s->path))
		ftpd_send_path(s, SFW_STAT, s->path, cwd_stat_cb);
}

void ftpd_cmd_cdup(px_ftpd *s, const char *arg)
{
	(void)arg;
	ftpd_cmd_cwd(s, "..");
}

/* ---- SIZE / MDTM / MLST / STAT path -------------------------------------- */

static void stat_like_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_ftpd *s = data;
	char buf[FTPD_PATH_MAX + 512];
	(void)sftp;
	if (!r || r->type != SFW_ATTRS) {
		ftpd_sftp_error(s, r, err, false, s->path);
		return;
	}
	const sfw_attrs *a = &r->attrs;
	if (strcmp(s->verb, "SIZE") == 0) {
		if (!is_reg(a) || !(a->flags & SFW_ATTR_SIZE))
			ftpd_reply(s, 550, "%s: not a plain file", s->path);
		else
			ftpd_reply(s, 213, "%llu", (unsigned long long)a->size);
	} else if (strcmp(s->verb, "MDTM") == 0) {
		char t[20];
		if (!(a->flags & SFW_ATTR_ACMODTIME) || fp_format_time(t, sizeof(t), a->mtime) < 0)
			ftpd_reply(s, 550, "%s: no modification time", s->path);
		else
			ftpd_reply(s, 213, "%s", t);
	} else {
		bool mlst = strcmp(s->verb, "MLST") == 0;
		fp_fileinfo fi;
		ftpd_fileinfo(&fi, s->path, strlen(s->path), a);
		int n = mlst ? fp_format_facts(buf, sizeof(buf), &fi, true)
			     : fp_format_ls(buf, sizeof(buf), &fi, (int64_t)time(NULL));
		if (n < 0) {
			ftpd_reply(s, 550, "%s: cannot be listed on one line", s->path);
		} else {
			int code = mlst ? 250 : 213;
			char head[64];
			int hn = snprintf(head, sizeof(head), "%d-Status of the file:\r\n", code);
			ftpd_reply_raw(s, head, (size_t)hn);
			if (!mlst)
				ftpd_reply_raw(s, " ", 1);
			ftpd_reply_raw(s, buf, (size_t)n);
			ftpd_reply(s, code, "End");
		}
	}
	ftpd_done(s);
}

void ftpd_cmd_stat_like(px_ftpd *s, const char *arg)
{
	if (ftpd_resolve(s, arg, s->path))
		ftpd_send_path(s, strcmp(s->verb, "STAT") == 0 ? SFW_LSTAT : SFW_STAT, s->path,
			       stat_like_cb);
}

void ftpd_cmd_stat(px_ftpd *s, const char *arg)
{
	if (s->fx && fx_running(s->fx)) {
		ftpd_reply(s, 213, "Transfer in progress: %llu bytes so far",
			   (unsigned long long)fx_bytes(s->fx));
		return;
	}
	if (arg[0]) {
		ftpd_cmd_stat_like(s, arg);
		return;
	}
	char text[FTPD_PATH_MAX + 512];
	int n = snprintf(text, sizeof(text),
			 "211-ftpssh SFTP front end status:\r\n"
			 " Logged in as %s (the SSH user's files)\r\n"
			 " Directory %s\r\n"
			 " TYPE: %s, STRUcture: File, MODE: Stream\r\n"
			 "211 End of status\r\n",
			 s->user, s->cwd, s->ascii ? "ASCII" : "BINARY");
	if (n > 0 && (size_t)n < sizeof(text))
		ftpd_reply_raw(s, text, (size_t)n);
}

/* ---- DELE / MKD / RMD / RNFR / RNTO / SITE CHMOD -------------------------- */

static void simple_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_ftpd *s = data;
	(void)sftp;
	bool mkd = strcmp(s->verb, "MKD") == 0 || strcmp(s->verb, "XMKD") == 0;
	bool store = mkd || strcmp(s->verb, "RNTO") == 0;
	if (!ftpd_reply_ok(r)) {
		ftpd_sftp_error(s, r, err, store, s->path);
		return;
	}
	if (mkd) {
		char q[2 * FTPD_PATH_MAX];
		ftpd_quote_path(s->path, q, sizeof(q));
		ftpd_reply(s, 257, "\"%s\" created", q);
	} else if (strcmp(s->verb, "SITE") == 0) {
		ftpd_reply(s, 200, "SITE CHMOD command successful");
	} else {
		ftpd_reply(s, 250, "%s command successful", s->verb);
	}
	ftpd_done(s);
}

void ftpd_cmd_simple(px_ftpd *s, const char *arg)
{
	int type = strcmp(s->verb, "DELE") == 0 ? SFW_REMOVE
		   : (strcmp(s->verb, "MKD") == 0 || strcmp(s->verb, "XMKD") == 0) ? SFW_MKDIR
										     : SFW_RMDIR;
	if (ftpd_resolve(s, arg, s->path))
		ftpd_send_path(s, type, s->path, simple_cb);
}

static void rnfr_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_ftpd *s = data;
	(void)sftp;
	if (!r || r->type != SFW_ATTRS) {
		ftpd_sftp_error(s, r, err, false, s->path);
		return;
	}
	memcpy(s->rnfr, s->path, sizeof(s->rnfr));
	s->have_rnfr = true;
	ftpd_reply(s, 350, "Ready for RNTO");
	ftpd_done(s);
}

void ftpd_cmd_rnfr(px_ftpd *s, const char *arg)
{
	s->have_rnfr = false;
	if (ftpd_resolve(s, arg, s->path))
		ftpd_send_path(s, SFW_LSTAT, s->path, rnfr_cb);
}

void ftpd_cmd_rnto(px_ftpd *s, const char *arg)
{
	if (!s->have_rnfr) {
		ftpd_reply(s, 503, "RNFR first");
		return;
	}
	s->have_rnfr = false;
	if (!ftpd_resolve(s, arg, s->path))
		return;
	int rc = mux_sftp_rename(s->sftp, s->rnfr, s->path, simple_cb, s);
	if (rc < 0)
		ftpd_reply(s, 451, "ftpssh: cannot send the SFTP request (%s)", mux_strerror(rc));
	else
		s->busy = true;
}

void ftpd_cmd_site(px_ftpd *s, const char *arg)
{
	if (strncasecmp(arg, "CHMOD ", 6) != 0) {
		if (strncasecmp(arg, "HELP", 4) == 0)
			ftpd_reply(s, 214, "SITE CHMOD mode path");
		else
			ftpd_reply(s, 504, "Only SITE CHMOD is supported");
		return;
	}
	const char *p = arg + 6;
	char *end;
	while (*p == ' ')
		p++;
	unsigned long mode = strtoul(p, &end, 8);
	if (end == p || *end != ' ' || mode > 07777) {
		ftpd_reply(s, 501, "Usage: SITE CHMOD <octal mode> <path>");
		return;
	}
	while (*end == ' ')
		end++;
	if (!*end) {
		ftpd_reply(s, 501, "Usage: SITE CHMOD <octal mode> <path>");
		return;
	}
	if (!ftpd_resolve(s, end, s->path))
		return;
	sfw_attrs a = {.flags = SFW_ATTR_PERMISSIONS, .perm = (uint32_t)mode};
	int rc = mux_sftp_setstat(s->sftp, s->path, &a, simple_cb, s);
	if (rc < 0)
		ftpd_reply(s, 451, "ftpssh: cannot send the SFTP request (%s)", mux_strerror(rc));
	else
		s->busy = true;
}

/* ---- data ports -------------------------------------------------------------- */

static void drop_unused_port(px_ftpd *s)
{
	if (s->fx) {
		px_fx *old = s->fx;
		s->fx = NULL;
		fx_kill(old);
	}
}

static void passive(px_ftpd *s, bool epsv)
{
	uint16_t port = 0;
	int err = 0;
	if (!epsv && s->local.ss_family != AF_INET) {
		ftpd_reply(s, 425, "PASV cannot name an IPv6 address; use EPSV");
		return;
	}
	drop_unused_port(s);
	s->fx = fx_passive(s, ++s->next_xid, &s->local, &port, &err);
	if (!s->fx) {
		ftpd_reply(s, 425, "ftpssh: cannot open a local data port: %s", uv_strerror(err));
		return;
	}
	if (epsv) {
		ftpd_reply(s, 229, "Entering Extended Passive Mode (|||%u|)", port);
	} else {
		const unsigned char *ip =
			(const unsigned char *)&((const struct sockaddr_in *)&s->local)->sin_addr;
		ftpd_reply(s, 227, "Entering Passive Mode (%u,%u,%u,%u,%u,%u)", ip[0], ip[1], ip[2],
			   ip[3], port >> 8, port & 0xff);
	}
}

void ftpd_cmd_pasv(px_ftpd *s, const char *arg)
{
	(void)arg;
	passive(s, false);
}

void ftpd_cmd_epsv(px_ftpd *s, const char *arg)
{
	if (strcasecmp(arg, "ALL") == 0) {
		ftpd_reply(s, 200, "EPSV ALL ok");
		return;
	}
	if (arg[0] && strcmp(arg, "1") != 0 && strcmp(arg, "2") != 0) {
		ftpd_reply(s, 522, "Network protocol not supported, use (1,2)");
		return;
	}
	passive(s, true);
}

void ftpd_cmd_port(px_ftpd *s, const char *arg)
{
	bool eprt = strcmp(s->verb, "EPRT") == 0;
	struct sockaddr_storage a;
	uint16_t port = 0;
	int rc;
	memset(&a, 0, sizeof(a));
	if (eprt) {
		char addr[64];
		int fam = 0;
		rc = fp_parse_eprt(arg, strlen(arg), &fam, addr, sizeof(addr), &port);
		if (rc == FP_OK)
			rc = fam == 1 ? uv_ip4_addr(addr, port, (struct sockaddr_in *)&a)
				      : uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&a);
	} else {
		fp_hostport hp;
		rc = fp_parse_port(arg, strlen(arg), &hp);
		if (rc == FP_OK) {
			struct sockaddr_in *in = (struct sockaddr_in *)&a;
			in->sin_family = AF_INET;
			memcpy(&in->sin_addr, hp.ip, 4);
			in->sin_port = htons(hp.port);
			port = hp.port;
		}
	}
	if (rc != 0) {
		ftpd_reply(s, 501, "Cannot parse the %s argument", s->verb);
		return;
	}
	if (!px_addr_is_loopback(&a)) {
		px_log(1, "[#%u] %s to a non-loopback address refused", s->id, s->verb);
		ftpd_reply(s, 501, "ftpssh: %s must name a loopback address (no FTP bounce)",
			   s->verb);
		return;
	}
	if (port < 1024) {
		ftpd_reply(s, 501, "ftpssh: %s to a port below 1024 refused", s->verb);
		return;
	}
	drop_unused_port(s);
	s->fx = fx_active(s, ++s->next_xid, &a);
	if (!s->fx) {
		ftpd_reply(s, 425, "ftpssh: out of memory");
		return;
	}
	ftpd_reply(s, 200, "%s command successful", s->verb);
}

/* ---- transfers ------------------------------------------------------------------ */

void ftpd_cmd_xfer(px_ftpd *s, const char *arg)
{
	static const struct {
		const char *verb;
		enum fx_kind kind;
	} kinds[] = {{"RETR", FX_RETR}, {"STOR", FX_STOR}, {"APPE", FX_APPE},
		     {"LIST", FX_LIST}, {"NLST", FX_NLST}, {"MLSD", FX_MLSD}};
	enum fx_kind kind = FX_RETR;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(s->verb, kinds[i].verb) == 0)
			kind = kinds[i].kind;
	uint64_t rest = s->rest;
	s->rest = 0;
	if (!s->fx) {
		ftpd_reply(s, 425, "Use PORT, EPRT, PASV or EPSV first");
		return;
	}
	if (kind == FX_LIST || kind == FX_NLST) {
		/* "LIST -la dir": ls options are accepted and ignored */
		while (arg[0] == '-') {
			while (*arg && *arg != ' ')
				arg++;
			while (*arg == ' ')
				arg++;
		}
	}
	if (!ftpd_resolve(s, arg[0] ? arg : ".", s->path))
		return;
	char label[128], pr[100];
	fp_printable(pr, sizeof(pr), arg, strlen(arg)); /* logged: the peer's text */
	snprintf(label, sizeof(label), "%s %s", s->verb, pr);
	fx_start(s->fx, kind, s->path, kind == FX_APPE ? 0 : rest, s->ascii, label);
}
