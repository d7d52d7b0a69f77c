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
#define PX_MAX_KNOWN_HOSTS_FILES 16
#define PX_ALG_LIST_MAX 1024

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
} px_forward;

typedef struct px_config {
	px_forward fwd[PX_MAX_FORWARDS];
	size_t nfwd;
	char gateway[256];
	char user[128];
	uint16_t ssh_port;
	const char *identities[PX_MAX_IDENTITIES];
	size_t nidentities;
	bool identities_given;
	/* Host keys. The two *_known_hosts strings are ssh's values (space-
	 * separated lists, "" for ssh's default, "none"); px_cli_parse splits
	 * them, ~ expanded, into the file arrays below (paths in kh_paths). */
	char known_hosts[4096];          /* UserKnownHostsFile */
	char global_known_hosts[4096];   /* GlobalKnownHostsFile */
	const char *kh_files[PX_MAX_KNOWN_HOSTS_FILES];
	size_t n_kh_files;
	const char *gkh_files[PX_MAX_KNOWN_HOSTS_FILES];
	size_t n_gkh_files;
	char kh_paths[2][8192];
	char hostkey_alias[256];
	bool hash_known_hosts;
	enum mux_hostkey_policy hostkey_policy;
	unsigned keepalive_sec;
	unsigned keepalive_count;
	/* Algorithms: as given (ssh's +/-/^ forms), then, once parsing is
	 * done, resolved in place to plain lists (mux_algs_resolve); a name
	 * this build cannot use is a usage error. "" means ftpssh's defaults. */
	char ciphers[PX_ALG_LIST_MAX];
	char macs[PX_ALG_LIST_MAX];
	char kex[PX_ALG_LIST_MAX];
	char hostkey_algs[PX_ALG_LIST_MAX];
	bool hostkey_algs_keep_order;    /* given as a plain or ^ list */
	/* The four lists above are plain already (the ssh -G path fills them
	 * from mux_algs_from_ssh and sets this, and hostkey_algs_keep_order
	 * false: ssh -G does not say which form the user wrote). */
	bool algs_resolved;
	uint32_t window_max;
	unsigned data_timeout_sec; /* one-shot data port lifetime */
	bool data_host_reported;   /* data channels to the 227's address */
	bool no_uid_check;         /* accept data connections from any local user */
	int verbosity;             /* -q: -1, default 0, -v 1, -vv 2 */
	bool syslog;
	char status_file[4096];
} px_config;

/* Parse argv into cfg. Returns 0 to run, 1 when --help/--version was
 * handled (exit 0), or -1 after printing a usage error to err. */
int px_cli_parse(int argc, char **argv, px_config *cfg, FILE *out, FILE *err);
/* Free what parsing kept (strings from config files). */
void px_cli_free(px_config *cfg);

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
