/*
 * mux: one SSH connection and the channels it carries. Knows nothing of FTP.
 *
 * A mux_conn is one libssh2 session over one libuv TCP handle. libssh2 never
 * touches the socket itself: its send/recv callbacks copy into and out of
 * bounded buffers that libuv drains and fills, so every libssh2 call is
 * non-blocking, and "would block" only ever means "waiting for input".
 *
 * A mux_chan is a direct-tcpip channel with a libuv-like stream interface:
 * read_start with alloc/read callbacks (an alloc that gives no room is how a
 * consumer says "stop"), writes with completion callbacks, shutdown (EOF
 * after the queued bytes) and close. Callbacks run from the loop, never from
 * inside the call that caused them, except read/alloc which run whenever the
 * connection is serviced.
 *
 * A mux_pump splices one TCP connection to one channel with backpressure in
 * both directions and half-close done right; it owns both ends.
 *
 * Functions return 0 or a negative error: libuv codes (UV_*) pass through,
 * libssh2 codes are mapped with mux_strerror() for messages.
 */
#ifndef MUX_H
#define MUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mux_conn mux_conn;
typedef struct mux_chan mux_chan;
typedef struct mux_pump mux_pump;

/* Logging hook: level 0 error, 1 info, 2 verbose, 3 debug. */
typedef void (*mux_log_fn)(void *ctx, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

enum mux_hostkey_policy {
	MUX_HOSTKEY_STRICT = 0,     /* unknown or changed key: refuse */
	MUX_HOSTKEY_ACCEPT_NEW = 1, /* unknown: add to known_hosts; changed: refuse */
	MUX_HOSTKEY_OFF = 2,        /* unknown: accept (not saved); changed: refuse */
};

/* Ask the user a question (passphrase, password, keyboard-interactive
 * prompt). Writes a NUL-terminated answer into buf and returns 0, or returns
 * -1 when there is nobody to ask (no terminal). May block: it is only used
 * while the connection comes up. key names the question in a way the
 * server cannot steer ("passphrase:FILE", "password:USER@HOST",
 * "keyboard-interactive:USER@HOST:N" for the Nth prompt); prompt is the
 * text to show, server text in it already made printable. */
typedef int (*mux_ask_fn)(void *ctx, const char *key, const char *prompt, bool echo, char *buf,
			  size_t cap);

typedef struct mux_conn_opts {
	const char *host;            /* gateway name or address (ssh -G "hostname") */
	uint16_t port;               /* SSH port */
	const char *user;            /* login name */
	/* Transport. NULL: TCP to host:port. Otherwise the SSH connection runs
	 * over the stdin/stdout of this command (ProxyCommand, or "ssh -W
	 * host:port ..." for ProxyJump), argv[0] looked up in PATH; its
	 * stderr is the user's. */
	const char *const *proxy_argv;
	int address_family;          /* AF_UNSPEC, AF_INET or AF_INET6 (-4/-6) */
	/* Bound on TCP connect + banner + key exchange + authentication, in
	 * seconds (ConnectTimeout); 0 means the built-in default. */
	unsigned connect_timeout_sec;

	/* Identities, in the order ssh tries them. */
	const char *const *identities; /* private key files to try, in order */
	size_t n_identities;
	const char *const *certificates; /* CertificateFile entries */
	size_t n_certificates;
	bool use_agent;              /* try ssh-agent identities first */
	bool identities_only;        /* agent keys only if they match identities */
	bool batch_mode;             /* never ask the user anything */
	/* Methods in the order to try them, ssh's names, comma separated
	 * (PreferredAuthentications); NULL: ssh's default order. */
	const char *preferred_auth;
	bool no_pubkey_auth, no_password_auth, no_kbdint_auth;

	/* Host keys, checked as OpenSSH does (hostkey.c): every file of both
	 * lists is read, user files first; the caller fills in ssh's defaults
	 * (~/.ssh/known_hosts ~/.ssh/known_hosts2, /etc/ssh/ssh_known_hosts
	 * /etc/ssh/ssh_known_hosts2), paths already ~-expanded. An empty
	 * list means none. */
	const char *known_hosts;     /* older single-file form: used when n_known_hosts_files is 0 */
	const char *const *known_hosts_files; /* UserKnownHostsFile list (first: where accept-new writes) */
	size_t n_known_hosts_files;
	const char *const *global_known_hosts; /* GlobalKnownHostsFile list */
	size_t n_global_known_hosts;
	const char *hostkey_alias;   /* HostKeyAlias, or NULL */
	bool hash_known_hosts;       /* accept-new writes hashed names */
	enum mux_hostkey_policy hostkey_policy;

	unsigned keepalive_sec;      /* 0: no keepalive */
	unsigned keepalive_count;    /* silent intervals before giving up (3) */
	/* Algorithm lists, already resolved to plain comma-separated names
	 * (no +/-/^), or NULL for ftpssh's defaults. */
	const char *ciphers;
	const char *macs;
	const char *kex;
	const char *hostkey_algs;
	/* With hostkey_algs given as a plain or '^' list, offer it as it is;
	 * otherwise (defaults, '+' and '-' forms, as in OpenSSH) the
	 * algorithms of keys known_hosts holds for this host go first. */
	bool hostkey_algs_keep_order;
	bool compression;
	uint32_t window_max;         /* per-channel receive window cap (bytes) */
	mux_log_fn log;
	void *log_ctx;
	mux_ask_fn ask;              /* NULL: never ask */
	void *ask_ctx;
} mux_conn_opts;

/* Connection events. MUX_CONN_UP: authenticated, channels can be opened.
 * MUX_CONN_FAILED: could not come up (status says why, msg is a sentence
 * for the user). MUX_CONN_LOST: was up and died; every channel has been
 * told. MUX_CONN_CLOSED: mux_conn_close() finished; the object is gone. */
enum mux_conn_event { MUX_CONN_UP, MUX_CONN_FAILED, MUX_CONN_LOST, MUX_CONN_CLOSED };
enum mux_fail_kind { MUX_FAIL_NET = 1, MUX_FAIL_HOSTKEY, MUX_FAIL_AUTH, MUX_FAIL_PROTO };
typedef void (*mux_conn_cb)(mux_conn *c, enum mux_conn_event ev, int kind,
			    const char *msg, void *data);

int mux_conn_start(uv_loop_t *loop, const mux_conn_opts *opts, mux_conn_cb cb,
		   void *data, mux_conn **out);
/* Start closing: channels still open are failed with UV_ECANCELED to their
 * owners, who must close them; then the session and socket go, and cb gets
 * MUX_CONN_CLOSED. Idempotent. */
void mux_conn_close(mux_conn *c);
bool mux_conn_is_up(const mux_conn *c);

/* libssh2 error codes overlap libuv's, so they travel shifted into their
 * own range; mux_strerror() names both kinds. */
#define MUX_ESSH_BASE (-20000)
#define MUX_ESSH(e) (MUX_ESSH_BASE + (e))
const char *mux_strerror(int err);
/* Version of the libssh2 library in use. */
const char *mux_libssh2_version(void);
/* Whether the libssh2 linked has ftpssh's patches (scripts/libssh2/patches:
 * keepalive replies seen, so windows follow the round trip; channel opens
 * that do not wait for each other). Without them ftpssh works, slower. */
bool mux_libssh2_patched(void);

/* ---- algorithms (algos.c) ---------------------------------------------
 * What ssh's Ciphers, MACs, KexAlgorithms and HostKeyAlgorithms name. The
 * lists come from the running libssh2 (libssh2_session_supported_algs), so
 * one binary is right with 1.10 and 1.11 alike. Host certificate
 * algorithms (libssh2 cannot check the CA) and libssh2's pseudo-algorithms
 * (ext-info-c, kex-strict-c-v00@openssh.com) are never listed or offered
 * by name. */
enum mux_alg_kind { MUX_ALG_CIPHER, MUX_ALG_MAC, MUX_ALG_KEX, MUX_ALG_HOSTKEY, MUX_ALG_KINDS };

/* The kind an `ssh -Q` query names: cipher, mac, kex, key (also the
 * ssh_config names Ciphers, MACs, KexAlgorithms, HostKeyAlgorithms, any
 * case); -1 for anything else. */
int mux_alg_kind_from_query(const char *query);
/* ssh_config's name for a kind: "Ciphers", "MACs", ... */
const char *mux_alg_option_name(enum mux_alg_kind kind);
/* What this build can use, comma separated, in libssh2's order. 0 or a
 * negative error (MUX_ESSH). */
int mux_algs_supported(enum mux_alg_kind kind, char *out, size_t cap);
/* ftpssh's defaults (the one table in algos.c) that this build has. */
int mux_algs_default(enum mux_alg_kind kind, char *out, size_t cap);
/* A user's value with ssh's forms ("a,b", "+a", "-a*", "^a"), resolved
 * against ftpssh's defaults into a plain list for mux_conn_opts. Returns 0,
 * or -1 with msg a sentence naming the first name this build cannot use
 * and listing what it supports (a start-up error: exit 2). */
int mux_algs_resolve(enum mux_alg_kind kind, const char *spec, char *out, size_t cap, char *msg,
		     size_t msgcap);
/* For the `ssh -G` path: SSH_LIST is what ssh -G printed for the option
 * (ssh has already applied +/-/^ against its own defaults), SSH_BASELINE
 * what it prints when nothing sets the option (`ssh -G -F none host`).
 * Returns 1 when they are equal (nothing asked: out is "", use ftpssh's
 * defaults), 0 with out the names of SSH_LIST this build supports, in
 * ssh's order (names from ssh's baseline the build lacks, such as
 * chacha20-poly1305 under libssh2 1.10, are dropped quietly), or -1 with
 * msg naming a name the user asked for that the build cannot use, or
 * saying that nothing usable is left (an empty SSH_LIST, what ssh -G
 * prints after "-*", included). */
int mux_algs_from_ssh(enum mux_alg_kind kind, const char *ssh_list, const char *ssh_baseline,
		      char *out, size_t cap, char *msg, size_t msgcap);

/* ---- channels ---------------------------------------------------------- */
typedef void (*mux_open_cb)(mux_chan *ch, int status, void *data);
/* Give a buffer to read into. buf->len == 0 means "no room now": reading
 * pauses until mux_chan_read_start() is called again. */
typedef void (*mux_alloc_cb)(mux_chan *ch, size_t suggested, uv_buf_t *buf);
/* nread > 0: data; 0: nothing (buffer given back); UV_EOF: the peer sent EOF
 * (delivered once, after all data); other < 0: error, channel unusable. */
typedef void (*mux_read_cb)(mux_chan *ch, ssize_t nread, const uv_buf_t *buf);
typedef void (*mux_close_cb)(mux_chan *ch);

typedef struct mux_write_req mux_write_req;
typedef void (*mux_write_cb)(mux_write_req *req, int status);
/* Embed in the caller's object, like uv_write_t. Fields after `data` are
 * private; the buffer must stay valid until cb runs. */
struct mux_write_req {
	void *data;
	mux_write_req *next;
	mux_chan *ch;
	const char *base;
	size_t len;
	size_t off;
	mux_write_cb cb;
};

/* Queue a direct-tcpip open to host:port as seen from the gateway. Opens go
 * out one at a time (libssh2 keeps open state per session). The channel
 * exists (and must be closed by its owner) even if opening fails. Returns
 * NULL only when out of memory or the connection is not up. */
mux_chan *mux_chan_open(mux_conn *c, const char *host, uint16_t port,
			mux_open_cb cb, void *data);
/* Queue a "session" channel that runs the named subsystem ("sftp"). cb
 * runs once the subsystem has started (status 0) or failed; everything
 * after that (reads, writes, window, close) is as for mux_chan_open(). */
mux_chan *mux_chan_open_subsystem(mux_conn *c, const char *subsystem, mux_open_cb cb,
				  void *data);
void *mux_chan_data(const mux_chan *ch);
int mux_chan_read_start(mux_chan *ch, mux_alloc_cb alloc, mux_read_cb read);
void mux_chan_read_stop(mux_chan *ch);
/* libssh2 puts at most this much channel data in one SSH packet
 * (_libssh2_channel_write, 1.10 and 1.11), so a write of a whole number of
 * times this leaves no short packet behind, each of which costs a send(),
 * a MAC and a wake-up of sshd like a full one (test_pump.py counts the
 * packets of an upload, test_sftp.py those of an SFTP one). */
#define MUX_PACKET_DATA 32700
int mux_chan_write(mux_write_req *req, mux_chan *ch, const char *base,
		   size_t len, mux_write_cb cb);
/* Send EOF once every queued write has gone. */
int mux_chan_shutdown(mux_chan *ch);
/* Pending writes complete with UV_ECANCELED; cb runs once the channel is
 * gone. Idempotent; safe in any state. */
void mux_chan_close(mux_chan *ch, mux_close_cb cb);

/* ---- pump: TCP <-> channel -------------------------------------------- */
typedef struct mux_pump_result {
	int status;           /* 0: both directions ended with EOF */
	uint64_t bytes_up;    /* local -> channel */
	uint64_t bytes_down;  /* channel -> local */
} mux_pump_result;
typedef void (*mux_pump_done_cb)(mux_pump *p, const mux_pump_result *r, void *data);

/* A pump with an initialised TCP handle for the caller to uv_accept() into
 * (or uv_tcp_connect() from). The pump owns that handle from now on. It
 * holds no connection until started: a connection may come and go (and be
 * freed) between the two calls. */
mux_pump *mux_pump_new(uv_loop_t *loop, mux_pump_done_cb cb, void *data);
uv_tcp_t *mux_pump_tcp(mux_pump *p);
/* Open a channel on c (the connection up now) to host:port and move bytes
 * until both sides are done. UV_ENOTCONN when c is NULL or not up. */
int mux_pump_start(mux_pump *p, mux_conn *c, const char *host, uint16_t port);
/* Abort: both ends closed now, done_cb later with UV_ECANCELED. Idempotent. */
void mux_pump_close(mux_pump *p);
/* Bytes moved so far, for live status. */
void mux_pump_stats(const mux_pump *p, uint64_t *bytes_up, uint64_t *bytes_down);

#endif
