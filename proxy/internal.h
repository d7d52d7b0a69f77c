/* Internal to proxy/: sessions, data ports and the bounded output queue. */
#ifndef PROXY_INTERNAL_H
#define PROXY_INTERNAL_H

#include "ftpparse/ftpparse.h"
#include "proxy/proxy.h"

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- bounded output queue -------------------------------------------------
 * A byte ring of PX_OUTQ_CAP with one write in flight, in front of either a
 * uv stream or a mux channel. Pushing more than fits fails: callers check
 * px_outq_room() first and stop reading their source instead. */
#define PX_OUTQ_CAP (32 * 1024)

typedef struct px_outq px_outq;
typedef void (*px_outq_cb)(px_outq *q, int status);
struct px_outq {
	char buf[PX_OUTQ_CAP];
	size_t head, len, inflight;
	int err;
	uv_stream_t *stream;  /* one of these two is the sink */
	mux_chan *chan;
	px_outq_cb cb;        /* after each completed write (room was made) */
	void *data;
	union {
		uv_write_t uw;
		mux_write_req mw;
	} req;
};

void px_outq_init(px_outq *q, px_outq_cb cb, void *data);
size_t px_outq_room(const px_outq *q);
size_t px_outq_len(const px_outq *q);
int px_outq_push(px_outq *q, const char *p, size_t n);

/* ask.c: mux_ask_fn on /dev/tty; ctx points to a bool that is true while
 * reconnecting (then only remembered answers are given). */
int px_ask(void *ctx, const char *prompt, bool echo, char *buf, size_t cap);
void px_ask_forget(void);

/* peeruid.c: uid owning the socket at the other end of a local TCP
 * connection (ours = our address, peer = its address). 0 or -errno. */
#include <sys/types.h>
int px_peer_uid(const struct sockaddr_storage *ours, const struct sockaddr_storage *peer,
		uid_t *uid);

/* ---- sshconfig.c, for sshrun.c: the option table ---------------------------
 * Entry i's name; applying ssh -G's value uv for it (bv: the -F none
 * baseline's, NULL when absent) to cfg; ~ and % token expansion; and the
 * names set by the user that ftpssh cannot honour, for one warning. */
size_t px__sshopt_count(void);
const char *px__sshopt_name(size_t i);
int px__sshopt_apply(px_config *cfg, size_t i, const char *uv, const char *bv, char *why,
		     size_t cap);
void px__ssh_note_unhonoured(const char *name);
const char *px__ssh_unhonoured(void);
/* Without ssh: the algorithm lists as written (ssh's +/-/^ forms)
 * resolved against this build (mux_algs_resolve); -1 with why naming a
 * name the build lacks and what it supports. */
int px__sshconfig_resolve_algs(px_config *cfg, char *why, size_t cap);

/* sshtokens.c: ~, ${VAR} and % tokens of IdentityFile, CertificateFile,
 * ProxyCommand expanded into out; -1 with why when impossible. */
int px__ssh_expand(const px_config *cfg, const char *in, char *out, size_t cap, char *why,
		   size_t wcap);

/* ---- server internals used by sessions ---------------------------------- */
typedef struct px_session px_session;
typedef struct px_dataport px_dataport;

struct px_server {
	uv_loop_t *loop;
	mux_conn *conn;
	const px_config *cfg;
	struct px_listener *listeners;
	px_session *sessions;     /* doubly linked */
	struct px_xfer *xfers;    /* running data transfers */
	unsigned next_sid;
	unsigned nsessions;
	unsigned nxfers;
	uint64_t bytes_done;      /* data bytes of finished transfers */
	uint64_t xfers_done;
	bool closing;
	int pending_closes;
	void (*close_cb)(void *);
	void *close_data;
};

/* session.c */
int px_session_accept(px_server *srv, uv_stream_t *listener, const px_forward *fwd);
void px_session_close(px_session *s, const char *why);
/* The active data connection of session sid (transfer xid) to the client
 * is up (status 0) or failed. Returns false when the session is gone. */
bool px_session_active_connected(px_server *srv, unsigned sid, unsigned xid, int status);
void px_session_list_unlink(px_session *s);

/* dataport.c: a one-shot listener whose single connection is pumped to
 * host:port over a new channel. *slot is cleared when the port closes.
 * owner_uid >= 0: only a connection from a socket of that uid is taken. */
int px_dataport_open(px_server *srv, unsigned sid, unsigned xid,
		     const struct sockaddr *bind_addr, const char *host, uint16_t port,
		     long owner_uid, px_dataport **slot, uint16_t *local_port);
/* Name transfer sid.xid ("RETR big.iso") for logs and status: on its data
 * port if it has not connected yet, else on the running transfer. */
void px_xfer_label(px_server *srv, px_dataport *dp, unsigned sid, unsigned xid,
		   const char *what);
void px_dataport_close(px_dataport *dp);
/* Active mode: connect to the client's data address and pump it to
 * host:port over a new channel. The session is told the outcome of the
 * connect (px_session_active_connected) before anything is pumped. */
int px_active_start(px_server *srv, unsigned sid, unsigned xid,
		    const struct sockaddr *client, const char *host, uint16_t port,
		    const char *what);
/* Abort every running transfer (shutdown). */
void px_xfers_abort_all(px_server *srv);
void px_server_maybe_closed(px_server *srv);

/* status: the table printed on SIGUSR1 and written to --status-file. */
void px_sessions_report(px_server *srv, FILE *out);
uint64_t px_xfers_report(px_server *srv, FILE *out); /* returns live bytes */
/* "1.5 GiB", "812 KiB", "17 B" */
char *px_fmt_bytes(char *buf, size_t cap, double bytes);

#endif
