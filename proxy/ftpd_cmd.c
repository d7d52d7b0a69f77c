/*
 * The FTP commands of the SFTP front end (ftpd.c runs the session).
 *
 * One table, one handler per verb. A handler either replies at once or
 * sends one SFTP request with itself as the continuation (busy is set
 * until it replies, so commands keep their order). Paths are resolved
 * lexically against the working directory ("." and ".." folded) into an
 * absolute SFTP path: the FTP root is the SFTP server's root, which for a
 * chrooted account is its chroot.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/ftpd.h"

enum { NEED_LOGIN = 1, NEED_ARG = 2 };

/* ---- paths ------------------------------------------------------------- */

/* arg (absolute, or relative to cwd) folded into out. -1 when too long. */
static int path_resolve(const char *cwd, const char *arg, char *out, size_t cap)
{
	char tmp[2 * FTPD_PATH_MAX + 2];
	int n = arg[0] == '/' ? snprintf(tmp, sizeof(tmp), "%s", arg)
			      : snprintf(tmp, sizeof(tmp), "%s/%s", cwd, arg);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -1;
	size_t o = 1;
	out[0] = '/';
	for (char *p = tmp, *e; *p; p = e) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		e = p;
		while (*e && *e != '/')
			e++;
		size_t l = (size_t)(e - p);
		if (l == 1 && p[0] == '.')
			continue;
		if (l == 2 && p[0] == '.' && p[1] == '.') {
			while (o > 1 && out[o - 1] != '/')
				o--;
			if (o > 1)
				o--;
			continue;
		}
		if (o + 1 + l >= cap)
			return -1;
		if (o > 1)
			out[o++] = '/';
		memcpy(out + o, p, l);
		o += l;
	}
	out[o] = '\0';
	return 0;
}

bool ftpd_resolve(px_ftpd *s, const char *arg, char *out)
{
	if (path_resolve(s->cwd, arg, out, FTPD_PATH_MAX) != 0) {
		ftpd_reply(s, 553, "Path too long");
		return false;
	}
	return true;
}

/* "path" with every " doubled (RFC 959 appendix II). */
void ftpd_quote_path(const char *p, char *out, size_t cap)
{
	size_t o = 0;
	for (; *p && o + 3 < cap; p++) {
		if (*p == '"')
			out[o++] = '"';
		out[o++] = *p;
	}
	out[o] = '\0';
}

const char *ftpd_base_name(const char *p)
{
	const char *b = strrchr(p, '/');
	return b && b[1] ? b + 1 : p;
}

/* ---- replies from SFTP ------------------------------------------------- */

/* Reply to a failed request and end the command. */
void ftpd_sftp_error(px_ftpd *s, const sfw_reply *r, int err, bool store,
			     const char *what)
{
	if (!r) {
		ftpd_reply(s, 421, "ftpssh: SFTP channel lost (%s)", mux_strerror(err));
		s->quitting = true;
	} else {
		int code = ftpd_fx_code(r->status, r->msg, r->msg_len, store);
		/* a file action not taken (MKD of an existing name, RMD of a
		 * full directory): sftp-server says only "Failure" */
		if (code == 451 && r->status == MUX_FX_FAILURE)
			code = 550;
		ftpd_reply(s, code, "%s: %.*s", what, (int)r->msg_len,
			   r->msg_len ? r->msg : "failed");
	}
	ftpd_done(s);
}

bool ftpd_reply_ok(const sfw_reply *r)
{
	return r && r->type == SFW_STATUS && r->status == MUX_FX_OK;
}

/* Send a path request with cb as its continuation; reply 451 if it
 * cannot even be sent. */
void ftpd_send_path(px_ftpd *s, int type, const char *path, mux_sftp_cb cb)
{
	int rc = s->sftp ? mux_sftp_path(s->sftp, type, path, cb, s) : UV_ENOTCONN;
	if (rc < 0) {
		ftpd_reply(s, 451, "ftpssh: cannot send the SFTP request (%s)", mux_strerror(rc));
		return;
	}
	s->busy = true;
}

void ftpd_fileinfo(fp_fileinfo *fi, const char *name, size_t nlen, const sfw_attrs *a)
{
	memset(fi, 0, sizeof(*fi));
	fi->name = name;
	fi->name_len = nlen;
	fi->has_size = a->flags & SFW_ATTR_SIZE;
	fi->size = a->size;
	fi->has_perm = a->flags & SFW_ATTR_PERMISSIONS;
	fi->perm = a->perm;
	fi->has_mtime = a->flags & SFW_ATTR_ACMODTIME;
	fi->mtime = a->mtime;
	fi->has_ids = a->flags & SFW_ATTR_UIDGID;
	fi->uid = a->uid;
	fi->gid = a->gid;
}

/* ---- login ------------------------------------------------------------- */

/* The start directory must be one: OpenSSH's REALPATH accepts a path
 * whose last component does not exist. */
static void login_stat_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_ftpd *s = data;
	(void)sftp;
	const char *dir = s->fwd->start_dir[0] ? s->fwd->start_dir : ".";
	if (!r) {
		ftpd_sftp_error(s, r, err, false, "");
		return;
	}
	if (r->type != SFW_ATTRS) {
		ftpd_reply(s, 530, "ftpssh: start directory %s: %.*s", dir, (int)r->msg_len,
			   r->msg_len ? r->msg : "not usable");
		ftpd_done(s);
		return;
	}
	if ((r->attrs.flags & SFW_ATTR_PERMISSIONS) && (r->attrs.perm & 0170000) != 0040000) {
		ftpd_reply(s, 530, "ftpssh: start directory %s: Not a directory", dir);
		ftpd_done(s);
		return;
	}
	memcpy(s->cwd, s->path, sizeof(s->cwd));
	s->logged_in = true;
	char pr[200];
	fp_printable(pr, sizeof(pr), s->cwd, strlen(s->cwd));
	px_log(1, "[#%u] logged in as %s (SSH user's files), directory %s", s->id, s->user, pr);
	ftpd_reply(s, 230, "Logged in; files are the SSH user's (SFTP)");
	ftpd_done(s);
}

static void login_realpath_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_ftpd *s = data;
	sfw_name n;
	(void)sftp;
	if (r && r->type == SFW_NAME && r->count >= 1 && sfw_name_next((sfw_in *)&r->names, &n) == 0 &&
	    n.name_len > 0 && n.name_len < sizeof(s->path) && n.name[0] == '/') {
		memcpy(s->path, n.name, n.name_len);
		s->path[n.name_len] = '\0';
		s->busy = false;
		ftpd_send_path(s, SFW_STAT, s->path, login_stat_cb);
		if (!s->busy)
			ftpd_done(s);
		return;
	}
	if (!r) {
		ftpd_sftp_error(s, r, err, false, "");
		return;
	}
	ftpd_reply(s, 530, "ftpssh: start directory %s: %.*s",
		   s->fwd->start_dir[0] ? s->fwd->start_dir : ".", (int)r->msg_len,
		   r->msg_len ? r->msg : "not usable");
	ftpd_done(s);
}

void ftpd_login_finish(px_ftpd *s)
{
	ftpd_send_path(s, SFW_REALPATH, s->fwd->start_dir[0] ? s->fwd->start_dir : ".",
		  login_realpath_cb);
	if (!s->busy)
		ftpd_done(s);
}

static void cmd_user(px_ftpd *s, const char *arg)
{
	fp_printable(s->user, sizeof(s->user), arg, strlen(arg));
	s->user_given = true;
	s->logged_in = false;
	ftpd_reply(s, 331, "Any password will do: the files are the SSH user's");
}

static void cmd_pass(px_ftpd *s, const char *arg)
{
	(void)arg;
	if (!s->user_given) {
		ftpd_reply(s, 503, "Login with USER first");
		return;
	}
	if (!s->allowed) {
		px_log(0, "[#%u] login as %s refused: uid %ld may not use the SFTP front end",
		       s->id, s->user, s->client_uid);
		ftpd_reply(s, 530, "ftpssh: local uid %ld may not use this SFTP front end "
				   "(see --sftp-allow-uid)",
			   s->client_uid);
		s->quitting = true; /* told; it holds a descriptor for nothing */
		return;
	}
	if (s->sftp_state < 0) {
		ftpd_reply(s, 421, "ftpssh: the SFTP subsystem is not available");
		s->quitting = true;
		return;
	}
	if (s->sftp_state == 0) {
		s->wait_sftp = true;
		s->busy = true;
		return;
	}
	ftpd_login_finish(s);
}

/* ---- simple commands ----------------------------------------------------- */

static void cmd_syst(px_ftpd *s, const char *arg)
{
	(void)arg;
	ftpd_reply(s, 215, "UNIX Type: L8");
}

static void cmd_feat(px_ftpd *s, const char *arg)
{
	static const char feat[] = "211-Features:\r\n"
				   " EPRT\r\n"
				   " EPSV\r\n"
				   " MDTM\r\n"
				   " MLST type*;size*;modify*;perm*;UNIX.mode*;UNIX.uid*;UNIX.gid*;\r\n"
				   " PASV\r\n"
				   " REST STREAM\r\n"
				   " SIZE\r\n"
				   " TVFS\r\n"
				   " UTF8\r\n"
				   "211 End\r\n";
	(void)arg;
	ftpd_reply_raw(s, feat, sizeof(feat) - 1);
}

static void cmd_opts(px_ftpd *s, const char *arg)
{
	if (strncasecmp(arg, "UTF8", 4) == 0 || strncasecmp(arg, "UTF-8", 5) == 0)
		ftpd_reply(s, 200, "UTF8 is always on");
	else if (strncasecmp(arg, "MLST", 4) == 0)
		ftpd_reply(s, 200, "MLST OPTS type;size;modify;perm;UNIX.mode;UNIX.uid;UNIX.gid;");
	else
		ftpd_reply(s, 501, "Option not understood");
}

static void cmd_pwd(px_ftpd *s, const char *arg)
{
	char q[2 * FTPD_PATH_MAX];
	(void)arg;
	ftpd_quote_path(s->cwd, q, sizeof(q));
	ftpd_reply(s, 257, "\"%s\" is the current directory", q);
}

static void cmd_type(px_ftpd *s, const char *arg)
{
	char t = (char)(arg[0] & ~0x20);
	if (t == 'A' && (!arg[1] || strcasecmp(arg + 1, " N") == 0)) {
		s->ascii = true;
		ftpd_reply(s, 200, "Type set to A");
	} else if (t == 'I' && !arg[1]) {
		s->ascii = false;
		ftpd_reply(s, 200, "Type set to I");
	} else if (t == 'L' && strcmp(arg + 1, " 8") == 0) {
		s->ascii = false;
		ftpd_reply(s, 200, "Type set to L 8");
	} else {
		ftpd_reply(s, 504, "Type not supported");
	}
}

static void cmd_mode(px_ftpd *s, const char *arg)
{
	if ((arg[0] & ~0x20) == 'S' && !arg[1])
		ftpd_reply(s, 200, "Mode set to S");
	else
		ftpd_reply(s, 504, "Only stream mode is supported");
}

static void cmd_stru(px_ftpd *s, const char *arg)
{
	if ((arg[0] & ~0x20) == 'F' && !arg[1])
		ftpd_reply(s, 200, "Structure set to F");
	else
		ftpd_reply(s, 504, "Only file structure is supported");
}

static void cmd_noop(px_ftpd *s, const char *arg)
{
	(void)arg;
	ftpd_reply(s, 200, "NOOP ok");
}

static void cmd_quit(px_ftpd *s, const char *arg)
{
	(void)arg;
	if (s->fx && fx_running(s->fx))
		fx_abort(s->fx);
	ftpd_reply(s, 221, "Goodbye");
	s->quitting = true;
}

static void cmd_abor(px_ftpd *s, const char *arg)
{
	(void)arg;
	if (s->fx && fx_running(s->fx)) {
		fx_abort(s->fx); /* replies 426 */
		ftpd_reply(s, 226, "ABOR successful");
		return;
	}
	ftpd_reply(s, 225, "No transfer to abort");
}

static void cmd_rest(px_ftpd *s, const char *arg)
{
	char *end;
	if (arg[0] < '0' || arg[0] > '9') {
		ftpd_reply(s, 501, "REST needs a byte offset");
		return;
	}
	unsigned long long v = strtoull(arg, &end, 10);
	if (*end || v > INT64_MAX) {
		ftpd_reply(s, 501, "REST needs a byte offset");
		return;
	}
	s->rest = v;
	ftpd_reply(s, 350, "Restarting at %llu; send STOR or RETR", v);
}

static void cmd_auth(px_ftpd *s, const char *arg)
{
	(void)arg;
	ftpd_reply(s, 534, "ftpssh: the link is already protected by SSH; continue without TLS");
}

static void cmd_allo(px_ftpd *s, const char *arg)
{
	(void)arg;
	ftpd_reply(s, 202, "No storage allocation needed");
}

static void cmd_help(px_ftpd *s, const char *arg)
{
	static const char help[] =
		"214-Commands understood (ftpssh SFTP front end):\r\n"
		" ABOR ALLO APPE AUTH CDUP CWD DELE EPRT EPSV FEAT HELP LIST MDTM MKD MLSD\r\n"
		" MLST MODE NLST NOOP OPTS PASS PASV PORT PWD QUIT REST RETR RMD RNFR RNTO\r\n"
		" SITE SIZE STAT STOR STRU SYST TYPE USER XCUP XCWD XMKD XPWD XRMD\r\n"
		"214 SITE CHMOD mode path is the only SITE command\r\n";
	(void)arg;
	ftpd_reply_raw(s, help, sizeof(help) - 1);
}


/* ---- dispatch ------------------------------------------------------------- */

struct cmd_entry {
	const char *name;
	void (*fn)(px_ftpd *s, const char *arg);
	unsigned flags;
};

static const struct cmd_entry cmds[] = {
	{"USER", cmd_user, NEED_ARG},  {"PASS", cmd_pass, 0},
	{"SYST", cmd_syst, 0},          {"FEAT", cmd_feat, 0},
	{"OPTS", cmd_opts, NEED_ARG},  {"NOOP", cmd_noop, 0},
	{"QUIT", cmd_quit, 0},          {"HELP", cmd_help, 0},
	{"AUTH", cmd_auth, 0},          {"ABOR", cmd_abor, NEED_LOGIN},
	{"PWD", cmd_pwd, NEED_LOGIN},   {"XPWD", cmd_pwd, NEED_LOGIN},
	{"CWD", ftpd_cmd_cwd, NEED_LOGIN | NEED_ARG},
	{"XCWD", ftpd_cmd_cwd, NEED_LOGIN | NEED_ARG},
	{"CDUP", ftpd_cmd_cdup, NEED_LOGIN}, {"XCUP", ftpd_cmd_cdup, NEED_LOGIN},
	{"TYPE", cmd_type, NEED_LOGIN | NEED_ARG},
	{"MODE", cmd_mode, NEED_LOGIN | NEED_ARG},
	{"STRU", cmd_stru, NEED_LOGIN | NEED_ARG},
	{"ALLO", cmd_allo, NEED_LOGIN}, {"REST", cmd_rest, NEED_LOGIN | NEED_ARG},
	{"PASV", ftpd_cmd_pasv, NEED_LOGIN}, {"EPSV", ftpd_cmd_epsv, NEED_LOGIN},
	{"PORT", ftpd_cmd_port, NEED_LOGIN | NEED_ARG},
	{"EPRT", ftpd_cmd_port, NEED_LOGIN | NEED_ARG},
	{"RETR", ftpd_cmd_xfer, NEED_LOGIN | NEED_ARG},
	{"STOR", ftpd_cmd_xfer, NEED_LOGIN | NEED_ARG},
	{"APPE", ftpd_cmd_xfer, NEED_LOGIN | NEED_ARG},
	{"LIST", ftpd_cmd_xfer, NEED_LOGIN}, {"NLST", ftpd_cmd_xfer, NEED_LOGIN},
	{"MLSD", ftpd_cmd_xfer, NEED_LOGIN},
	{"SIZE", ftpd_cmd_stat_like, NEED_LOGIN | NEED_ARG},
	{"MDTM", ftpd_cmd_stat_like, NEED_LOGIN | NEED_ARG},
	{"MLST", ftpd_cmd_stat_like, NEED_LOGIN},
	{"STAT", ftpd_cmd_stat, NEED_LOGIN},
	{"DELE", ftpd_cmd_simple, NEED_LOGIN | NEED_ARG},
	{"MKD", ftpd_cmd_simple, NEED_LOGIN | NEED_ARG},
	{"XMKD", ftpd_cmd_simple, NEED_LOGIN | NEED_ARG},
	{"RMD", ftpd_cmd_simple, NEED_LOGIN | NEED_ARG},
	{"XRMD", ftpd_cmd_simple, NEED_LOGIN | NEED_ARG},
	{"RNFR", ftpd_cmd_rnfr, NEED_LOGIN | NEED_ARG},
	{"RNTO", ftpd_cmd_rnto, NEED_LOGIN | NEED_ARG},
	{"SITE", ftpd_cmd_site, NEED_LOGIN | NEED_ARG},
};

void ftpd_command(px_ftpd *s, const fp_cmd *cmd, const fp_line *line)
{
	char arg[FP_LINE_MAX];
	bool pass = strcmp(cmd->name, "PASS") == 0;
	if (px_log_enabled(3)) {
		char pr[300];
		fp_printable(pr, sizeof(pr), line->p, line->text_len);
		px_log(3, "[#%u] -> %s", s->id, pass ? "PASS ****" : pr);
	}
	if (pass)
		snprintf(s->last_cmd, sizeof(s->last_cmd), "PASS ****");
	else
		fp_printable(s->last_cmd, sizeof(s->last_cmd), line->p, line->text_len);
	if (cmd->arg_len >= sizeof(arg) || memchr(cmd->arg, '\0', cmd->arg_len)) {
		ftpd_reply(s, 501, "Argument not allowed");
		return;
	}
	memcpy(arg, cmd->arg, cmd->arg_len);
	arg[cmd->arg_len] = '\0';
	memcpy(s->verb, cmd->name, sizeof(s->verb));
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		const struct cmd_entry *e = &cmds[i];
		if (strcmp(e->name, cmd->name) != 0)
			continue;
		if ((e->flags & NEED_LOGIN) && !s->logged_in) {
			ftpd_reply(s, 530, "Please login with USER and PASS");
			return;
		}
		if ((e->flags & NEED_ARG) && !arg[0]) {
			ftpd_reply(s, 501, "%s needs an argument", e->name);
			return;
		}
		if (strcmp(e->name, "RNTO") != 0 && strcmp(e->name, "RNFR") != 0)
			s->have_rnfr = false;
		e->fn(s, arg);
		return;
	}
	ftpd_reply(s, 502, "Command %s not implemented", cmd->name);
}
