/*
 * proxy: the FTP side of ftpssh. Command line, loopback listeners, one FTP
 * session per client (control relay with 227/229 rewrite), and the
 * one-shot data ports whose connections are pumped over SSH channels.
 *
 * This header is the module's contract with main(): configuration, the
 * log, and the server object that owns listeners and sessions.
 */
#ifndef PROXY_H
#define PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "mux/mux.h"

#define PX_MAX_FORWARDS 16
#define PX_MAX_IDENTITIES 16

/* Exit codes, documented in ftpssh(1). */
enum px_exit {
	PX_EXIT_OK = 0,
	PX_EXIT_ERROR = 1,     /* runtime failure: tunnel lost for good, ... */
	PX_EXIT_USAGE = 2,     /* bad command line */
	PX_EXIT_NET = 3,       /* cannot reach or talk to the SSH server */
	PX_EXIT_HOSTKEY = 4,   /* host key unknown or changed */
	PX_EXIT_AUTH = 5,      /* SSH authentication failed */
	PX_EXIT_LISTEN = 6,    /* cannot listen on the local port */
};

typedef struct px_forward {
	char bind_addr[64];   /* numeric or "localhost"; default 127.0.0.1 */
	uint16_t bind_port;   /* 0: kernel-assigned */
	bool default_port;    /* no -L: 21 if it may be bound, else 2121 */
	bool also_v6;         /* loopback by default: ::1 as well as 127.0.0.1 */
	char host[256];       /* FTP server, as the gateway resolves it */
	uint16_t port;
	bool sftp;            /* -L port:sftp[:/dir]: ftpssh serves FTP from SFTP */
	char start_dir[256];  /* its first working directory ("": the login's) */
} px_forward;

#define PX_MAX_FILES 8        /* known-hosts files, certificates */
#define PX_MAX_SSH_ARGS 128   /* argv given to `ssh -G` */
#define PX_MAX_PROXY_ARGS 32  /* argv of the ProxyCommand / jump ssh */

typedef struct px_config {
	px_forward fwd[PX_MAX_FORWARDS];
	size_t nfwd;
	char gateway[256];         /* ssh -G "hostname": where to connect */
	char destination[256];     /* the host as the user named it (%n) */
	char dest_user[128];       /* user@ of the destination, or "" */
	uint16_t dest_port;        /* :port of the destination, or 0 */
	char user[128];
	uint16_t ssh_port;
	const char *identities[PX_MAX_IDENTITIES];
	size_t nidentities;
	bool identities_given;
	const char *certificates[PX_MAX_FILES];
	size_t ncertificates;
	bool identities_only;
	bool use_agent;            /* IdentityAgent none: false */
	bool batch_mode;
	const char *preferred_auth; /* PreferredAuthentications or NULL */
	bool no_pubkey_auth, no_password_auth, no_kbdint_auth;
	char known_hosts[4096];    /* first UserKnownHostsFile: accept-new writes here */
	const char *known_hosts_files[PX_MAX_FILES];
	size_t nknown_hosts_files;
	const char *global_known_hosts[PX_MAX_FILES];
	size_t nglobal_known_hosts;
	const char *hostkey_alias; /* or NULL */
	bool hash_known_hosts;
	enum mux_hostkey_policy hostkey_policy;
	unsigned keepalive_sec;
	unsigned keepalive_count;
	/* Algorithm lists; NULL: not set by the user, ftpssh's defaults. */
	const char *ciphers, *macs, *kex, *hostkey_algs;
	/* hostkey_algs given as a plain or ^ list (no ssh: as written); the
	 * ssh -G path cannot tell which form was written, so false there */
	bool hostkey_algs_keep_order;
	bool compression;          /* -C, Compression yes */
	int address_family;        /* AF_UNSPEC, AF_INET (-4), AF_INET6 (-6) */
	unsigned connect_timeout_sec; /* 0: mux's bounded default */
	const char *proxy_jump;    /* ProxyJump as ssh -G prints it, or NULL */
	const char *proxy_command; /* ProxyCommand (tokens expanded), or NULL */
	const char *proxy_argv[PX_MAX_PROXY_ARGS + 1]; /* NULL-terminated; [0] NULL: TCP */
	bool background;           /* -f: fork once the listeners are up */

	/* What the command line and config files gave for ssh: `ssh -G`
	 * gets ssh_args, then the destination, then ssh_tail (the config
	 * files' settings, which the command line's beat: first one wins). */
	const char *ssh_args[PX_MAX_SSH_ARGS];
	size_t nssh_args;
	const char *ssh_tail[PX_MAX_SSH_ARGS];
	size_t nssh_tail;
	const char *ssh_config;    /* -F FILE (passed on to a jump's ssh) */
	bool verbosity_given;      /* -q/-v on the command line beat LogLevel */

	uint32_t window_max;
	unsigned data_timeout_sec; /* one-shot data port lifetime */
	bool data_host_reported;   /* data channels to the 227's address */
	bool no_uid_check;         /* accept data connections from any local user */
	unsigned max_sessions;          /* sessions in all (RLIMIT_NOFILE may lower it) */
	unsigned max_sessions_per_user; /* sessions of one local uid */
	unsigned idle_timeout_sec;      /* control session idle limit, 0 never */
	char allow_users[512];          /* "alice,1002": who may use the relay ("" all) */
	char allow_groups[512];         /* "ftpusers,100": or members of these */
	long sftp_allow_uids[16];  /* besides our own uid, who may use an sftp forward */
	size_t n_sftp_allow;
	int verbosity;             /* -q: -1, default 0, -v 1, -vv 2 */
	bool syslog;
	char status_file[4096];
} px_config;

/* Parse argv into cfg. Returns 0 to run, 1 when --help/--version was
 * handled (exit 0), or -1 after printing a usage error to err. */
int px_cli_parse(int argc, char **argv, px_config *cfg, FILE *out, FILE *err);
/* clitext.c: the usage line and the rest of --help */
extern const char px_cli_usage[];
extern const char px_cli_help[];
/* fwdspec.c: -L and destination syntax; 0, or -1 when malformed */
int px_port_parse(const char *s, bool allow_zero, uint16_t *out);
/* "a:b:[c:d]:e" split on ':' outside brackets, which are dropped: the
 * field count, or -1 when a field does not fit 256 bytes or max fields */
int px_split_colons(const char *s, char fields[][256], int max);
int px_forward_parse(const char *spec, px_forward *f);
/* Free what parsing kept (strings from config files). */
void px_cli_free(px_config *cfg);
/* Keep a copy of s until px_cli_free(); NULL when out of room. */
const char *px_cli_keep(const char *s);

/* ---- ssh configuration (sshconfig.c) ---------------------------------------
 * The effective settings for the destination, asked of OpenSSH itself:
 * `ssh -G` with the user's ssh flags, read into cfg. Without an ssh
 * binary (or FTPSSH_SSH naming none), cfg keeps what the command line
 * gave. Runs before the loop, bounded in time. 0, or -1 after a message
 * (exit 2: ssh refused the options, or an option ftpssh must refuse). */
int px_sshconfig_resolve(px_config *cfg, FILE *err);
/* Apply one ssh option ("Key", "value") as given by the user, for the
 * command line's -o and for config files, when no ssh can resolve them.
 * 0 applied or accepted; -1 unknown name or bad value (why says which).
 * known: set to whether ssh knows the name. */
int px_sshconfig_set(px_config *cfg, const char *key, const char *val, bool *known, char *why,
		     size_t cap);
/* Whether ssh knows this option name. */
bool px_sshconfig_known(const char *key);

/* ---- log -----------------------------------------------------------------
 * One line per event on stderr: "ftpssh: [#12] text". Levels: 0 error
 * (always), 1 normal, 2 verbose (-v), 3 trace (-vv). */
void px_log_init(int verbosity);
void px_log_use_syslog(void);
/* The terminal status line kept under the log ("" removes it). */
void px_log_status(const char *line);
bool px_log_enabled(int level);
void px_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* mux_log_fn-compatible hook. */
void px_log_mux(void *ctx, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- server: listeners, sessions and transfers -------------------------- */
typedef struct px_server px_server;

/* Bind every forward's listener; prints the "point your FTP client at"
 * line for each. Returns 0 or a negative uv error (message logged). */
int px_server_start(uv_loop_t *loop, mux_conn *conn, const px_config *cfg,
		    px_server **out);
/* The SSH connection to open channels on; NULL while it is down (new
 * clients then get 421 and are closed). */
void px_server_set_conn(px_server *srv, mux_conn *conn);
/* Stop accepting new clients; running sessions and transfers go on. */
void px_server_stop_listening(px_server *srv);
/* Transfers running now. */
unsigned px_server_transfers(const px_server *srv);
/* The full table (sessions, transfers, totals) for SIGUSR1 and
 * --status-file; and the one-line summary for the terminal. */
void px_server_report(px_server *srv, const char *ssh_state, FILE *out);
void px_server_summary(px_server *srv, const char *ssh_state, double rate, char *buf,
		       size_t cap);
/* Data bytes moved so far, finished and running transfers together. */
uint64_t px_server_bytes(px_server *srv);
/* Stop listening and end every session and transfer now; cb runs once
 * every handle is closed. */
void px_server_close(px_server *srv, void (*cb)(void *data), void *data);

#endif
