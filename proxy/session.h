/*
 * Internal to proxy/session.c and proxy/active.c: the FTP control
 * session's state, and the few calls the active-mode half makes into the
 * relay half and back.
 */
#ifndef PROXY_SESSION_H
#define PROXY_SESSION_H

#include <sys/socket.h>

#include "proxy/internal.h"

#define FIFO_CAP 16
#define DEFERRED_CAP 1024

/* FIFO entries beyond fp_verb: what ftpssh itself is waiting for. The
 * ACTIVE ones are the passive requests ftpssh sends on behalf of a client
 * that gave PORT/EPRT; their replies are never forwarded. */
enum expect { EXP_GREETING = 100, EXP_ACTIVE_EPSV, EXP_ACTIVE_PASV };

/* Where an active-mode transfer command is (active.c). */
enum act_state {
	ACT_IDLE,       /* no transfer command held */
	ACT_CONNECTING, /* connecting to the client's data port */
	ACT_PASSIVE,    /* hidden EPSV/PASV sent, waiting for its reply */
};

struct px_session {
	px_server *srv;
	px_session *prev, *next;
	const px_forward *fwd;
	unsigned id;
	unsigned next_xid;
	uv_tcp_t client;
	uv_timer_t timer;  /* bounded wait for the server after client EOF */
	uv_timer_t idle;   /* --idle-timeout */
	mux_chan *ch;
	px_dataport *dp;
	struct sockaddr_storage local; /* our side of the control connection */
	long client_uid;               /* owner of the client's socket, -1 unknown */
	bool refused;                  /* turned away at accept (limits, unknown owner) */
	char user[64];                 /* from USER, for status */
	char last_cmd[96];             /* last command (PASS/ACCT masked), for status */
	uint64_t last_cmd_ms;
	char peer[INET6_ADDRSTRLEN + 10];

	fp_framer cin, sin;
	fp_reply rep;
	int fifo[FIFO_CAP];
	unsigned fhead, fcount;
	/* ftpssh's own replies to commands never sent upstream: they wait here
	 * until the replies to every earlier command have gone (FIFO order) */
	char deferred[DEFERRED_CAP];
	size_t deferred_len;
	/* the passive reply being read */
	bool pasv_found;
	fp_hostport pasv;
	uint16_t epsv_port;
	int pasv_err;
	/* the transfer command waiting for its first reply, to tell a
	 * refused command from a transfer in the log */
	int xfer_verb;
	unsigned xfer_xid;
	bool quit_sent, quit_answered;
	bool idle_closed;  /* --idle-timeout ended it */
	bool eof_early;    /* the client left before its replies came */

	/* active mode (active.c) */
	struct sockaddr_storage active_addr; /* the client's data address */
	bool active_armed;  /* next transfer command connects to active_addr */
	bool active_eprt;   /* the client said EPRT (for the reply text) */
	bool no_epsv;       /* the server refused EPSV once: ask PASV */
	enum act_state act;
	char *held_cmd;     /* transfer command held until the server's port is known */
	size_t held_len;
	int held_verb;
	unsigned held_xid;

	px_outq to_client, to_server;
	bool client_reading, server_reading;
	bool client_eof, server_eof, eof_sent;
	bool closing;
	int pending_closes;
	uint64_t started_ms;
};

/* The command FIFO: what each coming reply answers. */
static inline int fifo_head(const px_session *s)
{
	return s->fcount ? s->fifo[s->fhead] : -1;
}

static inline void fifo_push(px_session *s, int v)
{
	s->fifo[(s->fhead + s->fcount) % FIFO_CAP] = v;
	s->fcount++;
}

static inline void fifo_pop(px_session *s)
{
	if (!s->fcount)
		return;
	s->fhead = (s->fhead + 1) % FIFO_CAP;
	s->fcount--;
}

static inline bool px_verb_transfers(int v)
{
	return v == FP_CMD_RETR || v == FP_CMD_STOR || v == FP_CMD_STOU || v == FP_CMD_APPE ||
	       v == FP_CMD_LIST || v == FP_CMD_NLST || v == FP_CMD_MLSD;
}

/* session.c */
void px_session_pump(px_session *s);
/* End the session now; normal: an ordinary end (logged with -v), else a
 * failure (logged at the default level). Idempotent. */
void px_session_end(px_session *s, bool normal, const char *why);
/* End it once everything the server said has reached the client. */
void px_session_check_end(px_session *s);
/* A reply of ftpssh's own to the command being answered now. */
void px_session_reply_now(px_session *s, int code, const char *text);
/* A reply of ftpssh's own to a command not sent upstream: it goes out once
 * the replies to all earlier commands have. */
void px_session_reply(px_session *s, int code, const char *text);
/* Send a command line upstream and expect its reply (verb or EXP_*). */
int px_session_send(px_session *s, const char *line, size_t len, int expect);
void px_session_log_line(px_session *s, const char *dir, const char *p, size_t len);
/* Where the server's data port is, as the gateway sees it. */
const char *px_session_data_host(px_session *s, bool epsv, char *buf, size_t cap);

/* limits.c: admission (owner known, caps in all and per uid); false when
 * the connection was turned away with a 421 (urc: the owner lookup's
 * result). And the idle timer, (re)armed on every command. */
bool px_session_admit(px_session *s, int urc);
void px_session_idle_arm(px_session *s);

/* reply.c: server -> client, every line that can move now. */
void px_session_process_server(px_session *s);

/* active.c */
void px_active_port(px_session *s, const fp_cmd *cmd);
/* A transfer command while PORT/EPRT is armed: held here; true if taken. */
bool px_active_transfer(px_session *s, const fp_line *l, int verb);
/* A reply line to the hidden EPSV/PASV at the FIFO head. */
void px_active_reply(px_session *s, int head, const fp_line *l, const fp_reply_line *info);
/* The hidden request's entry has left the FIFO: ask again if needed. */
void px_active_next(px_session *s);
/* The hidden request's reply was not a reply at all. */
void px_active_malformed(px_session *s);
/* The session ends: drop a held command and its data connection. */
void px_active_drop(px_session *s);

#endif
