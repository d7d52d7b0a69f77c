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

/* addr.c: loopback (the only data addresses accepted), unspecified (PORT
 * 0.0.0.0 / EPRT "::": the client's own host), and "a.b.c.d:p" / "[v6]:p". */
bool px_addr_is_loopback(const struct sockaddr_storage *ss);
bool px_addr_is_unspecified(const struct sockaddr_storage *ss);
void px_addr_str(const struct sockaddr_storage *ss, char *out, size_t cap);

/* ask.c: mux_ask_fn on /dev/tty; ctx points to a bool that is true while
 * reconnecting (then only remembered answers are given). */
int px_ask(void *ctx, const char *key, const char *prompt, bool echo, char *buf, size_t cap);
void px_ask_forget(void);

/* peeruid.c: which uid owns a loopback TCP socket, asked of the kernel
 * over one sock_diag netlink socket opened at start (px_peeruid_open;
 * its owner, the server, closes it). A negative diag_fd means netlink is
 * unavailable: /proc/net/tcp{,6} is read instead. 0 or -errno. */
#include <sys/types.h>
int px_peeruid_open(void);
void px_peeruid_close(int diag_fd);
/* The socket at the other end of our connection (ours = our address,
 * peer = its address). */
int px_peer_uid(int diag_fd, const struct sockaddr_storage *ours,
		const struct sockaddr_storage *peer, uid_t *uid);
/* The socket listening on addr (address and port; a wildcard listener on
 * that port counts). */
int px_listener_uid(int diag_fd, const struct sockaddr_storage *addr, uid_t *uid);

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
#define PX_ALLOW_MAX 32
/* limits.c: resolve --allow-users/--allow-groups (names or numbers) once,
 * at start; a name that does not resolve is logged and matches nobody. */
void px_limits_init(px_server *srv);
typedef struct px_session px_session;
typedef struct px_dataport px_dataport;
struct px_ftpd;
/* limits.c: is there no room for another session of uid (true: msg, from
 * "ftpssh: ", says why)? Both kinds of session count, self (the one
 * asking, if already listed) not. A client that will be refused at login
 * (!allowed) needs only a descriptor, and there are at most
 * PX_REFUSED_MAX of those at a time. */
#define PX_REFUSED_MAX 8
bool px_limits_full(px_server *srv, long uid, bool allowed, const px_session *self,
		    const struct px_ftpd *fself, char *msg, size_t cap);
/* The refusal's log line, at most one a second (a flood must not flood
 * the log); msg starts with "ftpssh: ". */
void px_limits_log_refusal(px_server *srv, unsigned id, const char *peer, const char *msg);
/* ftpd.c: adds the SFTP front end's admitted sessions not yet freed (but
 * fself) to *all, and those of uid to *mine; those waiting to be refused
 * at login to *refused only. */
void px_ftpd_count(const px_server *srv, long uid, const struct px_ftpd *fself, unsigned *all,
		   unsigned *mine, unsigned *refused);

struct px_server {
	uv_loop_t *loop;
	mux_conn *conn;
	const px_config *cfg;
	struct px_listener *listeners;
	px_session *sessions;     /* doubly linked */
	struct px_ftpd *ftpds;    /* SFTP front-end sessions (ftpd.c) */
	unsigned nftpds;
	unsigned nftpd_xfers;     /* their transfers started and not yet freed */
	struct px_xfer *xfers;    /* running data transfers */
	unsigned next_sid;
	unsigned nsessions;
	unsigned nxfers;
	uint64_t bytes_done;      /* data bytes of finished transfers */
	uint64_t xfers_done;
	int diag_fd;              /* sock_diag netlink socket, owned; -1 none */
	int reserve_fd;           /* /dev/null kept for the EMFILE refusal; -1 none */
	unsigned max_sessions;    /* --max-sessions, lowered to fit RLIMIT_NOFILE */
	uint64_t fd_budget;       /* descriptors sessions and transfers may use */
	bool allow_set;           /* --allow-users/--allow-groups given */
	unsigned n_allow_uid, n_allow_gid;
	uid_t allow_uid[PX_ALLOW_MAX];
	gid_t allow_gid[PX_ALLOW_MAX];
	uint64_t refusal_log_ms;  /* last "refused" log line (one a second) */
	unsigned refusals_quiet;  /* refusals not logged since */
	bool closing;
	int pending_closes;
	void (*close_cb)(void *);
	void *close_data;
};

/* session.c */
/* A new control connection (an accepted socket, which the session owns
 * from now on, even on failure). */
int px_session_accept(px_server *srv, int fd, const px_forward *fwd);
/* The active data connection of session sid (transfer xid) to the client
 * is up (status 0) or failed. Returns false when the session is gone or no
 * longer wants it (the caller then closes it). */
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
/* Active mode, in three steps: px_active_start connects to the client's
 * data address (the session hears of the outcome through
 * px_session_active_connected); once the server has named its passive
 * port, px_active_go opens the channel to it and starts pumping; or
 * px_active_abort drops the connection. go/abort return UV_ENOENT when the
 * transfer is gone. */
int px_active_start(px_server *srv, unsigned sid, unsigned xid,
		    const struct sockaddr *client, const char *what);
int px_active_go(px_server *srv, unsigned sid, unsigned xid, const char *host,
		 uint16_t port);
void px_active_abort(px_server *srv, unsigned sid, unsigned xid);
/* Is addr the local end of one of ftpssh's own active-mode connections?
 * Those must never count as a client at a data port (confused deputy). */
bool px_active_is_ours(px_server *srv, const struct sockaddr_storage *addr);
/* The server refused transfer sid.xid's command: its data connection, if
 * any, carried no transfer, and its end is logged as such. */
void px_xfer_refused(px_server *srv, px_dataport *dp, unsigned sid, unsigned xid);
/* Session sid has a data connection open (for the idle timeout). */
bool px_xfer_running(px_server *srv, unsigned sid);
/* Abort every running transfer (shutdown). */
void px_xfers_abort_all(px_server *srv);
void px_server_maybe_closed(px_server *srv);

/* status: the table printed on SIGUSR1 and written to --status-file. */
void px_sessions_report(px_server *srv, FILE *out);
uint64_t px_xfers_report(px_server *srv, FILE *out); /* returns live bytes */
/* "1.5 GiB", "812 KiB", "17 B" */
char *px_fmt_bytes(char *buf, size_t cap, double bytes);

#endif
