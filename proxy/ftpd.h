/*
 * Internal to proxy/: ftpssh's own FTP server side, whose file system is
 * the SFTP subsystem on the one SSH connection (-L port:sftp[:/dir]).
 *
 * ftpd.c: the control session (login, commands, paths, replies).
 * ftpd_xfer.c: data connections (PASV/EPSV listener or PORT/EPRT connect)
 * and the transfers over them (RETR/STOR/APPE pipelined over SFTP,
 * LIST/NLST/MLSD streamed from READDIR).
 */
#ifndef PROXY_FTPD_H
#define PROXY_FTPD_H

#include "mux/sftp.h"
#include "proxy/internal.h"

#define FTPD_PATH_MAX 4096

typedef struct px_ftpd px_ftpd;
typedef struct px_fx px_fx;

enum fx_kind { FX_RETR = 1, FX_STOR, FX_APPE, FX_LIST, FX_NLST, FX_MLSD };

/* The control session; fields are ftpd.c's and ftpd_cmd.c's. */
struct px_ftpd {
	px_server *srv;
	px_ftpd *prev, *next;          /* srv->ftpds */
	const px_forward *fwd;
	unsigned id, next_xid;
	uv_tcp_t client;
	struct sockaddr_storage local; /* our side of the control connection */
	long client_uid;               /* owner of the client's socket, -1 unknown */
	bool allowed;                  /* that uid may log in */
	bool admitted;                 /* ... and there was room: it counts */
	uint64_t closed_ms;            /* when closing began */
	uint64_t last_cmd_ms;          /* when the last command came (--idle-timeout) */
	char peer[INET6_ADDRSTRLEN + 10];
	char user[64];
	char last_cmd[96];
	uint64_t started_ms;
	fp_framer cin;
	px_outq out;
	bool reading, client_eof, quitting, closing;
	int pending_closes;            /* client handle, idle timer, SFTP client */
	uv_timer_t idle;               /* --idle-timeout */
	mux_sftp *sftp;
	int sftp_state;                /* 0 opening, 1 ready, -1 failed */
	bool wait_sftp;                /* PASS waits for the SFTP client */
	bool user_given, logged_in;
	bool busy;                     /* an SFTP request answers the current command */
	char verb[5];                  /* the current command's verb */
	bool dispatching;              /* inside a command handler: no nested pump */
	char cwd[FTPD_PATH_MAX];
	char path[FTPD_PATH_MAX];      /* the current command's path */
	char path2[FTPD_PATH_MAX];
	char rnfr[FTPD_PATH_MAX];
	bool have_rnfr;
	uint64_t rest;
	bool ascii;
	px_fx *fx;                     /* data port the next transfer uses */
	px_fx *fxs;                    /* every transfer object alive */
};

/* ftpd.c */
void ftpd_close(px_ftpd *s, const char *why);
/* The current command is answered: take the next. */
void ftpd_done(px_ftpd *s);
void ftpd_reply_raw(px_ftpd *s, const char *text, size_t len);
/* ftpd_cmd.c */
void ftpd_command(px_ftpd *s, const fp_cmd *cmd, const fp_line *line);
void ftpd_login_finish(px_ftpd *s);
bool ftpd_resolve(px_ftpd *s, const char *arg, char *out);
void ftpd_quote_path(const char *p, char *out, size_t cap);
const char *ftpd_base_name(const char *p);
void ftpd_sftp_error(px_ftpd *s, const sfw_reply *r, int err, bool store, const char *what);
bool ftpd_reply_ok(const sfw_reply *r);
void ftpd_send_path(px_ftpd *s, int type, const char *path, mux_sftp_cb cb);
void ftpd_fileinfo(fp_fileinfo *fi, const char *name, size_t nlen, const sfw_attrs *a);
/* ftpd_fs.c: the commands that touch files and data ports */
void ftpd_cmd_cwd(px_ftpd *s, const char *arg);
void ftpd_cmd_cdup(px_ftpd *s, const char *arg);
void ftpd_cmd_pasv(px_ftpd *s, const char *arg);
void ftpd_cmd_epsv(px_ftpd *s, const char *arg);
void ftpd_cmd_port(px_ftpd *s, const char *arg);
void ftpd_cmd_xfer(px_ftpd *s, const char *arg);
void ftpd_cmd_stat_like(px_ftpd *s, const char *arg);
void ftpd_cmd_stat(px_ftpd *s, const char *arg);
void ftpd_cmd_simple(px_ftpd *s, const char *arg);
void ftpd_cmd_rnfr(px_ftpd *s, const char *arg);
void ftpd_cmd_rnto(px_ftpd *s, const char *arg);
void ftpd_cmd_site(px_ftpd *s, const char *arg);

/* ftpd.c: used by ftpd_xfer.c */
void ftpd_reply(px_ftpd *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
mux_sftp *ftpd_sftp(px_ftpd *s);
unsigned ftpd_id(const px_ftpd *s);
uv_loop_t *ftpd_loop(const px_ftpd *s);
const px_config *ftpd_cfg(const px_ftpd *s);
long ftpd_client_uid(const px_ftpd *s);
/* A transfer has answered its command (226 or an error) or gone: the
 * session may read the next command / free itself. */
void ftpd_fx_finished(px_ftpd *s, px_fx *fx);
void ftpd_fx_freed(px_ftpd *s, px_fx *fx);
/* FTP reply code for an SFTP status, for the operation's kind:
 * store-like operations (STOR, APPE, MKD, RNTO) say 553 for a refused
 * name, reads say 550; a full disk is 452; the rest 451. */
int ftpd_fx_code(uint32_t status, const char *msg, size_t msg_len, bool store);

/* ftpd_xfer.c */
/* A passive data port bound to the control connection's local address
 * (port chosen by the kernel), waiting data_timeout_sec. */
px_fx *fx_passive(px_ftpd *s, unsigned xid, const struct sockaddr_storage *local,
		  uint16_t *port, int *err);
/* Active mode: connect to addr when the transfer starts. */
px_fx *fx_active(px_ftpd *s, unsigned xid, const struct sockaddr_storage *addr);
/* Start kind on path (already resolved) from offset; the 150 and the
 * final reply are sent by the transfer. name: what the client named (for
 * a LIST of one file). */
void fx_start(px_fx *fx, enum fx_kind kind, const char *path, uint64_t offset, bool ascii,
	      const char *label);
bool fx_running(const px_fx *fx);
/* ABOR: stop now; the SFTP handle is closed once the requests in flight
 * have come back. Replies 426 if a transfer was running. */
void fx_abort(px_fx *fx);
/* Drop: the session is closing (its SFTP client too): no more replies. */
void fx_kill(px_fx *fx);
/* Bytes moved so far. */
uint64_t fx_bytes(const px_fx *fx);
px_fx *fx_list_next(const px_fx *fx);

/* ftpd.c: entry points from server.c */
int px_ftpd_accept(px_server *srv, int fd, const px_forward *fwd);
void px_ftpd_close_all(px_server *srv);
void px_ftpd_report(px_server *srv, FILE *out);

#endif
