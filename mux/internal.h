/* Internal to mux/: the structures shared by conn.c, auth.c and chan.c. */
#ifndef MUX_INTERNAL_H
#define MUX_INTERNAL_H

#include <libssh2.h>

#include "mux/knownhosts.h"
#include "mux/mux.h"

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* SSH socket buffers. Input: what libuv read and libssh2 has not taken.
 * Output: encrypted packets libssh2 produced and the socket has not taken.
 * Channel writes stop at OUT_SOFT; small control packets (window adjust,
 * EOF, CLOSE, keepalive) may go past it, never past OUT_CAP. */
#define MUX_IN_CAP (256 * 1024)
#define MUX_OUT_CAP (2 * 1024 * 1024)
#define MUX_OUT_SOFT (256 * 1024)

/* Receive window: every channel starts with WINDOW_START of credit (ssh's
 * fixed window) and follows, up to opts.window_max, what the link holds at
 * the channel's rate (window.c). Credit given to a channel whose consumer
 * stops reading becomes memory (libssh2 queues what the server sends), so
 * all channels together hold at most credit_budget (2 x window_max, at
 * least MUX_CREDIT_BUDGET_MIN), each at least MUX_WINDOW_MIN (two SSH
 * packets) so that every channel moves. */
#define MUX_WINDOW_START (2u * 1024 * 1024)
/* The connection's credit budget is 2 x window_max, but never less than
 * this: idle control channels hold start windows too, and a small
 * --window-max must not starve concurrent transfers of credit. */
#define MUX_CREDIT_BUDGET_MIN (64ull * 1024 * 1024)
#define MUX_WINDOW_MIN (64u * 1024)
#define MUX_READ_CHUNK (64 * 1024)
/* A channel open the gateway has not answered in this time fails its
 * owner (sshd answers a direct-tcpip open when its connect() ends: ~2 min
 * for a target that drops SYNs). */
#define MUX_OPEN_TIMEOUT_MS 20000

enum conn_state {
	CS_RESOLVING,
	CS_CONNECTING,
	CS_HANDSHAKE,
	CS_AUTH_LIST,
	CS_AUTH_NEXT,     /* pick the next method (PreferredAuthentications) */
	CS_AUTH_PUBKEY,   /* one identity after another (auth.c) */
	CS_AUTH_PASSWORD,
	CS_AUTH_KBDINT,
	CS_UP,
	CS_DEAD,    /* failed or lost: waiting for channel owners to close */
	CS_CLOSING, /* handles closing */
};

enum chan_state {
	CH_QUEUED,  /* in the open queue */
	CH_OPENING, /* CHANNEL_OPEN sent, no answer yet (may outlive its
		     * deadline: the owner was told, the answer is awaited) */
	CH_STARTING, /* subsystem channel: open, "subsystem" request in progress */
	CH_OPEN,
	CH_FAILED,  /* open failed or connection lost; owner must close */
	CH_FREEING, /* libssh2_channel_free in progress */
};

struct mux_chan {
	mux_conn *conn;
	mux_chan *prev, *next;     /* conn->chans */
	mux_chan *open_next;       /* conn open queue */
	unsigned id;
	enum chan_state state;
	LIBSSH2_CHANNEL *lc;
	char *open_msg;            /* direct-tcpip request body */
	char subsys[32];           /* a "session" channel running this subsystem, or "" */
	size_t open_msg_len;
	char desc[80];             /* host:port for logs */
	mux_open_cb open_cb;
	void *data;
	int error;                 /* first error; delivered to the owner */
	/* reading */
	mux_alloc_cb alloc_cb;
	mux_read_cb read_cb;
	bool reading;
	bool eof_delivered;
	bool err_delivered;
	uint32_t window_target;    /* credit we keep outstanding */
	/* delivery rate, measured over spans of >= 2 round trips (chan.c) */
	uint64_t delivered;        /* bytes handed to the owner */
	uint64_t rate_t0;          /* uv_hrtime() at the span's start, 0: none yet */
	uint64_t rate_b0;          /* delivered at rate_t0 */
	double span_rate;          /* bytes/ns over the last span */
	bool span_done;            /* a span ended, not yet acted on (window.c) */
	uint32_t window_logged;    /* window_target when last logged */
	unsigned low_spans;        /* spans in a row that wanted less than the target */
	/* libssh2 calls that answered EAGAIN, repeated with the very same
	 * arguments until they complete: libssh2 keeps the packet built by the
	 * first call and, for a window adjust, adds the *new* call's amount to
	 * its count (see the EAGAIN rules in docs/ARCHITECTURE.md). */
	uint32_t adj_pending;      /* window adjust amount, 0 if none */
	uint32_t credit;           /* libssh2's receive window as last seen */
	size_t wr_pending;         /* write length, 0 if none */
	/* writing */
	mux_write_req *wq_head, *wq_tail;
	bool shutdown_wanted;
	bool eof_sent;
	/* closing */
	bool close_wanted;
	mux_close_cb close_cb;
	bool open_cb_due;          /* open result not yet told */
	bool open_told;            /* the owner has had (or will get) its open result */
	int open_status;
	uint64_t open_deadline;    /* uv_now() by which the open must be answered */
	LIBSSH2_CHANNEL *pending_lc; /* opening (patch 0003), not yet usable */
};

struct mux_conn {
	uv_loop_t *loop;
	/* Transport: TCP, or a proxy child's stdout (pout, read) and stdin
	 * (pin, write). rd/wr point at whichever is in use. */
	uv_stream_t *rd, *wr;
	uv_tcp_t tcp;
	uv_pipe_t pin, pout;
	uv_process_t proc;
	bool proxy;                /* transport is a child process */
	bool proc_running;         /* spawned, exit not yet seen */
	int proc_status;           /* exit status once it ended */
	unsigned kill_stage;       /* closing: 1 SIGTERM sent, 2 SIGKILL sent */
	/* ConnectTimeout until UP; while closing, the proxy's kill grace */
	uv_timer_t ctimer;
	mux_ask_fn user_ask;       /* the owner's; opts.ask wraps it */
	void *user_ask_ctx;
	char *strings;             /* one block: every string of opts, copied */
	uv_getaddrinfo_t gai;
	uv_connect_t connect_req;
	uv_timer_t timer;
	uv_idle_t kick;
	uv_write_t wreq;
	int handles_open;          /* uv handles not yet closed */
	int fd;                    /* the SSH socket, to tell it from the agent's */
	bool gai_pending;          /* getaddrinfo running: c must outlive it */
	enum conn_state state;
	mux_conn_cb cb;
	void *cb_data;
	mux_conn_opts opts;        /* its strings and lists point into `strings` */
	/* short names for opts.host, opts.user, opts.identities */
	const char *host, *user;
	const char *const *identities;
	LIBSSH2_SESSION *ssh;
	/* authentication (auth.c, ident.c) */
	char **certificates;       /* our copies of opts.certificates */
	char *preferred_auth;
	LIBSSH2_AGENT *agent;
	struct mux_ident *ids;     /* identities in the order ssh tries them */
	size_t n_ids, id_idx;
	int id_step;               /* where the current identity is (auth.c) */
	char *key_data;            /* its private key file, while in use */
	size_t key_len;
	char *key_pub;             /* its public key line for libssh2, or NULL */
	bool probe_ok;             /* the server would take the current key */
	void *auth_self;           /* = this conn: libssh2's callback "abstract" */
	int methods[4];            /* methods to try, in order (auth.c) */
	size_t n_methods, method_idx;
	bool auth_publickey, auth_password, auth_kbdint;
	char secret[512];          /* passphrase or password being tried */
	bool secret_set;           /* secret holds an answer for this step */
	unsigned password_tries;
	unsigned kbd_prompt_no;    /* keyboard-interactive prompts so far */
	unsigned keys_offered;     /* identities offered to the server */
	bool rsa_refused;          /* an RSA key was refused (the 1.10 hint) */
	char disconnect_msg[160];  /* the server's DISCONNECT reason, sanitised */
	char tried[2048];          /* what auth tried, for the failure message */

	/* SSH socket input */
	char *in;
	size_t in_start, in_len;
	bool in_eof;
	int in_err;
	bool reading;
	/* SSH socket output (ring) */
	char *out;
	size_t out_head, out_len;
	size_t writing;            /* bytes of the in-flight uv_write, 0 if none */
	int out_err;

	/* channels */
	mux_chan *chans;
	unsigned nchans;
	unsigned next_id;
	mux_chan *open_head, *open_tail;
	bool servicing, reservice;
	bool kicked;
	bool close_wanted;
	uint64_t bytes_in;         /* for keepalive: any byte proves the server alive */
	uint64_t bytes_out;        /* SSH bytes libssh2 handed us: did a keepalive go? */
	uint64_t alive_bytes_in;   /* bytes_in at the last keepalive tick */
	unsigned alive_missed;     /* keepalive ticks with nothing received */
	/* Round trip to the server, timed with a want-reply keepalive sent on
	 * a silent connection (at UP and by the keepalive timer), so nothing
	 * queued in the server delays the reply. 0: not known (a libssh2
	 * without patch 0002 does not tell when the reply arrives). */
	uint64_t ping_sent;        /* uv_hrtime() of the timed keepalive, 0: none out */
	uint64_t rtt_ns;           /* the round trip (conn_pong) */
	uv_timer_t rtt_timer;      /* probes after UP (conn_rtt_cb) */
	uint64_t rtt_bytes_in;     /* bytes_in at the last probe tick */
	unsigned rtt_probes;       /* probe replies so far */
	unsigned rtt_ticks;        /* rtt_timer ticks since UP */
	unsigned nbig;             /* channels whose window grew past the start */
	unsigned nopening;         /* channels OPENING (the open timer runs) */
	uv_timer_t open_timer;     /* wakes the service for open deadlines */
	uint64_t credit;           /* sum of the channels' credit */
	uint64_t credit_budget;    /* most credit all channels may hold */
	/* the SFTP front end's shared channels (sftp_chan.c) */
	struct sftp_chan *sftp_chans;
	unsigned sftp_limit;       /* 0, or how many the server allowed */
	unsigned sftp_closing;     /* closing, not yet closed */
};

/* conn.c */
void mux__service(mux_conn *c);
void mux__handle_closed_cb(uv_handle_t *h);
void mux__kick(mux_conn *c);
void mux__log(mux_conn *c, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void mux__fail(mux_conn *c, int kind, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void mux__set_up(mux_conn *c);
void mux__maybe_finish_close(mux_conn *c);

/* transport.c: libssh2's I/O callbacks, socket reading, the proxy child */
ssize_t mux__recv_cb(libssh2_socket_t fd, void *buf, size_t len, int flags, void **abstract);
ssize_t mux__send_cb(libssh2_socket_t fd, const void *buf, size_t len, int flags,
		     void **abstract);
void mux__update_reading(mux_conn *c);
int mux__proxy_start(mux_conn *c);
void mux__proxy_close(mux_conn *c);

/* alive.c: keepalives and the round trip (after UP) */
void mux__alive_start(mux_conn *c);
void mux__pong(mux_conn *c);

/* hostkey.c: 0 accepted, -1 refused (the connection has failed). */
int mux__hostkey_check(mux_conn *c);
/* ALGS reordered as OpenSSH does: algorithms of key types known_hosts
 * holds for this host first (unless opts.hostkey_algs_keep_order). 0 with
 * out filled, -1 (out unusable: offer ALGS as it is). */
int mux__hostkey_order(mux_conn *c, const char *algs, char *out, size_t cap);

/* algos.c: set every method preference on c->ssh before the handshake
 * (each result checked); 0 or a negative error. */
int mux__algos_apply(mux_conn *c);

/* auth.c: drive the handshake/hostkey/auth states; returns when waiting.
 * init copies what auth needs from opts (0 or UV_ENOMEM); cleanup drops
 * the agent, identities and secrets (idempotent); free releases the copies. */
void mux__auth_step(mux_conn *c);
int mux__auth_init(mux_conn *c, const mux_conn_opts *o);
void mux__auth_cleanup(mux_conn *c);
void mux__auth_free(mux_conn *c);
/* Shared by auth.c and authkey.c: one entry of the failure message
 * ("WHAT (why)", also logged at -v); ask the user (never in BatchMode;
 * key as for mux_ask_fn); wipe the secret; the server hung up during
 * authentication (true: the connection has failed, with the message). */
void mux__auth_note(mux_conn *c, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int mux__auth_ask(mux_conn *c, const char *key, const char *prompt, bool echo);
void mux__auth_secret_clear(mux_conn *c);
bool mux__auth_lost(mux_conn *c);
const char *mux__ssh_errmsg(mux_conn *c);
/* authkey.c: the publickey method; true when waiting for the server or
 * done (up, or failed), false to go on (state may have changed). */
bool mux__auth_pubkey_step(mux_conn *c);
/* Make server text printable as OpenSSH does before it reaches a terminal
 * or log: printable ASCII and valid printable UTF-8 stay, newlines stay if
 * keep_nl, everything else becomes \ooo. Always NUL-terminates. */
void mux__sanitize(const char *in, size_t n, char *out, size_t cap, bool keep_nl);

/* ident.c: the identities to try, in ssh's order (certificates from
 * CertificateFile, agent keys that match configured files, other agent
 * keys unless IdentitiesOnly, then the files). */
struct mux_ident {
	char *path;                /* private key file; NULL: the agent signs */
	char *label;               /* for messages: the file, or "agent key COMMENT" */
	unsigned char *blob;       /* public key or certificate; NULL: unknown */
	size_t blob_len;
	char type[80];             /* from blob: "ssh-ed25519", "...-cert-v01@openssh.com" */
	bool cert;
	bool encrypted;            /* the private key file needs a passphrase */
	int file_err;              /* -errno reading the file, or -EINVAL: not a key */
	struct libssh2_agent_publickey *agent_id; /* sign with ssh-agent */
};
int mux__ident_build(mux_conn *c);
void mux__ident_free(mux_conn *c);

/* keyfile.c: key files as ssh reads them (bounded parsing, nothing trusted) */
void mux__wipe_free(void *p, size_t n);
int mux__key_read_file(const char *path, char **data, size_t *len); /* 0 or -errno */
int mux__key_parse_pub(const char *text, size_t len, unsigned char **blob, size_t *blob_len);
int mux__key_parse_private(const char *data, size_t len, bool *encrypted, unsigned char **blob,
			   size_t *blob_len);
bool mux__key_blob_type(const unsigned char *blob, size_t len, char *type, size_t cap);
bool mux__key_is_cert_type(const char *type);
bool mux__cert_certifies(const unsigned char *cert, size_t cert_len, const unsigned char *key,
			 size_t key_len);
char *mux__key_publine(const unsigned char *blob, size_t blob_len); /* "type base64\n" */

/* chan.c */
void mux__chan_poke(mux_chan *ch);
void mux__chan_fail_writes(mux_chan *ch, int err);
void mux__chan_set_failed(mux_chan *ch, int err);
void mux__chan_service_all(mux_conn *c);
void mux__chan_fail_all(mux_conn *c, int err);
bool mux__has_open_chan(const mux_conn *c);

/* chan_open.c */
void mux__chan_service_opens(mux_conn *c);
void mux__chan_poll_open(mux_chan *ch);

/* window.c: receive credit */
uint32_t mux__window_room(const mux_chan *ch);
void mux__window_grant(mux_chan *ch);
void mux__window_forget(mux_chan *ch);

#endif
