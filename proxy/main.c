/*
 * main: parse the command line, bring the SSH connection up, then listen.
 *
 * Order matters to users: the SSH connection is made and authenticated
 * first, so that a wrong key or host key fails at once with a clear message
 * and a distinct exit code, and the "point your FTP client at" line means
 * the relay really works. One libuv loop runs everything; the process ends
 * when the loop has no handle left (checked in debug builds: a leaked
 * handle fails the run).
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proxy/internal.h"

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 60000
#define DRAIN_TICK_MS 200
#define DRAIN_QUIET_MS 1000  /* no transfer for this long: replies are in */
#define DRAIN_MAX_MS 30000   /* then stop anyway */
/* Stopping: sessions close their channels politely, which waits for the
 * server's CLOSE of each; a server gone silent never sends it. */
#define CLOSE_GRACE_MS 3000

static struct {
	uv_loop_t *loop;
	px_config cfg;
	mux_conn_opts opts;
	mux_conn *conn;          /* current connection, NULL while down */
	unsigned conns_alive;    /* including ones still closing */
	bool up_once;
	bool reconnecting;       /* px_ask: use remembered answers only */
	px_server *srv;
	uv_signal_t sigint, sigterm, sigusr1;
	uv_timer_t retry, drain, status;
	bool status_line;        /* stderr is a terminal: keep a status line */
	uint64_t status_bytes, status_ms;
	double rate;
	uint64_t backoff_ms;
	uint64_t drain_start, quiet_since;
	int exit_code;
	bool stopping, draining;
	int signals;
} app;

static void app_stop(int code);
static void conn_cb(mux_conn *c, enum mux_conn_event ev, int kind, const char *msg,
		    void *data);

static void app_maybe_exit(void)
{
	if (!app.stopping || app.srv || app.conns_alive)
		return;
	uv_close((uv_handle_t *)&app.sigint, NULL);
	uv_close((uv_handle_t *)&app.sigterm, NULL);
	uv_close((uv_handle_t *)&app.sigusr1, NULL);
	uv_close((uv_handle_t *)&app.retry, NULL);
	uv_close((uv_handle_t *)&app.drain, NULL);
	uv_close((uv_handle_t *)&app.status, NULL);
	if (app.status_line)
		px_log_status("");
}

/* -f. The fork happens at start-up, before libuv starts threads (a
 * threadpool does not survive fork) and before any proxy child (which
 * must be ours to reap): the parent only waits, on a pipe, until the
 * child says its listeners are up, then exits 0; if the child dies first,
 * the parent exits with the child's status. Until then the child still
 * has the terminal, for questions and messages. */
static int bg_ready_fd = -1;

static void app_fork_background(void)
{
	int fds[2];
	fflush(NULL);
	if (pipe2(fds, O_CLOEXEC) != 0) {
		px_log(0, "cannot go to the background: %s", strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		px_log(0, "cannot go to the background: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (pid == 0) {
		close(fds[0]);
		bg_ready_fd = fds[1];
		return;
	}
	close(fds[1]);
	char b;
	ssize_t n;
	while ((n = read(fds[0], &b, 1)) < 0 && errno == EINTR)
		;
	if (n == 1)
		_exit(PX_EXIT_OK); /* nothing to clean: it all belongs to the child */
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : PX_EXIT_ERROR);
}

/* The listeners are up and announced: let the parent go, leave the
 * terminal. */
static void app_background_ready(void)
{
	if (bg_ready_fd < 0)
		return;
	px_log(1, "running in the background as pid %ld", (long)getpid());
	fflush(NULL);
	setsid();
	int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nul >= 0) {
		dup2(nul, 0);
		close(nul);
	}
	if (write(bg_ready_fd, "R", 1) != 1)
		px_log(0, "cannot tell the foreground process: %s", strerror(errno));
	close(bg_ready_fd);
	bg_ready_fd = -1;
	if (app.status_line) {
		app.status_line = false;
		px_log_status("");
		if (!app.cfg.status_file[0])
			uv_timer_stop(&app.status);
	}
}

static void conn_open(void)
{
	/* app.conn is set by mux_conn_start before any event can name it */
	app.conns_alive++;
	int rc = mux_conn_start(app.loop, &app.opts, conn_cb, NULL, &app.conn);
	if (rc < 0) {
		app.conns_alive--;
		app.conn = NULL;
		px_log(0, "cannot start the SSH connection: %s", mux_strerror(rc));
		app_stop(PX_EXIT_ERROR);
	}
}

static void retry_cb(uv_timer_t *t)
{
	(void)t;
	if (!app.stopping)
		conn_open();
}

/* The connection died after having been up: tell the server, drop it, and
 * try again later, each wait twice the last, up to a minute. */
/* Close the connection, which fails what is left on it, and tell the
 * server it has none. */
static void conn_drop(void)
{
	mux_conn *old = app.conn;
	app.conn = NULL;
	if (app.srv)
		px_server_set_conn(app.srv, NULL);
	if (old)
		mux_conn_close(old);
}

static void conn_retry_later(void)
{
	conn_drop();
	if (app.stopping)
		return;
	px_log(1, "reconnecting in %.0f s", app.backoff_ms / 1000.0);
	uv_timer_start(&app.retry, retry_cb, app.backoff_ms, 0);
	app.backoff_ms *= 2;
	if (app.backoff_ms > BACKOFF_MAX_MS)
		app.backoff_ms = BACKOFF_MAX_MS;
}

static void server_closed_cb(void *data)
{
	(void)data;
	app.srv = NULL;
	conn_drop();
	app_maybe_exit();
}

static void conn_cb(mux_conn *c, enum mux_conn_event ev, int kind, const char *msg, void *data)
{
	(void)data;
	if (ev == MUX_CONN_CLOSED) {
		app.conns_alive--;
		app_maybe_exit();
		return;
	}
	if (c != app.conn)
		return; /* an old connection on its way out */
	switch (ev) {
	case MUX_CONN_UP:
		px_log(1, "SSH connection to %s@%s port %u is up", app.cfg.user, app.cfg.gateway,
		       app.cfg.ssh_port);
		app.up_once = true;
		app.reconnecting = true;
		app.backoff_ms = BACKOFF_FIRST_MS;
		if (app.stopping)
			break;
		if (app.srv)
			px_server_set_conn(app.srv, c);
		else if (px_server_start(app.loop, c, &app.cfg, &app.srv) < 0)
			app_stop(PX_EXIT_LISTEN);
		else
			app_background_ready();
		break;
	case MUX_CONN_FAILED:
		px_log(0, "%s", msg);
		if (!app.up_once || kind == MUX_FAIL_HOSTKEY || kind == MUX_FAIL_AUTH) {
			/* The first connection, or a failure retrying will not cure. */
			app_stop(kind == MUX_FAIL_HOSTKEY ? PX_EXIT_HOSTKEY
				 : kind == MUX_FAIL_AUTH  ? PX_EXIT_AUTH
				 : app.up_once		  ? PX_EXIT_ERROR
							  : PX_EXIT_NET);
			break;
		}
		conn_retry_later();
		break;
	case MUX_CONN_LOST:
		px_log(0, "%s", msg);
		conn_retry_later();
		break;
	case MUX_CONN_CLOSED:
		break;
	}
}

/* The sessions' channels have had CLOSE_GRACE_MS to close: drop the
 * connection under them, which fails what is left at once. */
static void close_grace_cb(uv_timer_t *t)
{
	(void)t;
	if (!app.conn)
		return;
	px_log(1, "the channels have not closed within %d s (the SSH server does not answer, "
		  "or the link is slow); dropping the connection", CLOSE_GRACE_MS / 1000);
	conn_drop();
}

static void app_stop(int code)
{
	if (app.stopping)
		return;
	app.stopping = true;
	app.exit_code = code;
	uv_timer_stop(&app.retry);
	uv_timer_stop(&app.drain);
	if (app.srv) {
		px_server_close(app.srv, server_closed_cb, NULL);
		if (app.srv) /* app.drain is free now, and closed on exit */
			uv_timer_start(&app.drain, close_grace_cb, CLOSE_GRACE_MS, 0);
	} else {
		server_closed_cb(NULL);
	}
}

/* SIGTERM/SIGINT: stop accepting, let running transfers end (and their
 * final replies reach the clients), then stop; DRAIN_MAX_MS at most. */
static void drain_cb(uv_timer_t *t)
{
	(void)t;
	uint64_t now = uv_now(app.loop);
	if (!app.srv || px_server_transfers(app.srv) > 0)
		app.quiet_since = now;
	if (now - app.quiet_since >= DRAIN_QUIET_MS || now - app.drain_start >= DRAIN_MAX_MS)
		app_stop(PX_EXIT_OK);
}

static const char *ssh_state(void)
{
	if (app.conn && mux_conn_is_up(app.conn))
		return "up";
	return app.up_once ? "down, reconnecting" : "connecting";
}

/* Every second: the terminal status line, and every other second the
 * status file (written aside and renamed, so readers never see half). */
static void status_cb(uv_timer_t *t)
{
	(void)t;
	if (!app.srv)
		return;
	uint64_t now = uv_now(app.loop), bytes = px_server_bytes(app.srv);
	if (now > app.status_ms) {
		double inst = (double)(bytes - app.status_bytes) * 1000.0 / (double)(now - app.status_ms);
		app.rate = app.rate * 0.5 + inst * 0.5; /* smooth a little */
	}
	app.status_bytes = bytes;
	app.status_ms = now;
	if (app.status_line) {
		char line[256];
		px_server_summary(app.srv, ssh_state(), app.rate, line, sizeof(line));
		px_log_status(line);
	}
	if (app.cfg.status_file[0] && (now / 1000) % 2 == 0) {
		char tmp[4200];
		snprintf(tmp, sizeof(tmp), "%s.tmp", app.cfg.status_file);
		FILE *f = fopen(tmp, "w");
		if (f) {
			px_server_report(app.srv, ssh_state(), f);
			if (fclose(f) == 0)
				rename(tmp, app.cfg.status_file);
		}
	}
}

static void sigusr1_cb(uv_signal_t *h, int signum)
{
	(void)h;
	(void)signum;
	if (!app.srv) {
		px_log(0, "status: ssh %s, not serving yet", ssh_state());
		return;
	}
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (!m)
		return;
	px_server_report(app.srv, ssh_state(), m);
	fclose(m);
	/* one log line per table row */
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		px_log(0, "%s", line);
	free(text);
}

static void signal_cb(uv_signal_t *h, int signum)
{
	(void)h;
	if (++app.signals > 1) {
		/* second signal: the user means it */
		fprintf(stderr, "ftpssh: %s again, exiting now\n", strsignal(signum));
		_exit(PX_EXIT_ERROR);
	}
	if (app.stopping) {
		/* stopping already (a fatal error): app.drain is the close
		 * grace now, not to be replaced by a drain */
		px_log(1, "%s: stopping already (once more to stop at once)", strsignal(signum));
		return;
	}
	if (!app.srv || px_server_transfers(app.srv) == 0) {
		px_log(1, "%s: stopping", strsignal(signum));
		app_stop(PX_EXIT_OK);
		return;
	}
	px_log(1, "%s: no new clients; stopping when the %u running transfer(s) end "
		  "(at most %d s; again to stop now)",
	       strsignal(signum), px_server_transfers(app.srv), DRAIN_MAX_MS / 1000);
	px_server_stop_listening(app.srv);
	app.drain_start = app.quiet_since = uv_now(app.loop);
	uv_timer_start(&app.drain, drain_cb, DRAIN_TICK_MS, DRAIN_TICK_MS);
}

/* libssh2 allocates every packet it receives (32 KiB of payload) and frees
 * it when the channel is read: a window's worth of packets is allocated at
 * the top of the heap and freed again, and glibc gave those pages back to
 * the kernel each time (its default trim threshold is 128 KiB), to fault
 * them in, zeroed, for the next window. That was half of ftpssh's CPU on
 * a download (3.2 CPU s/GiB, 1.3 without; issue 13). Keep up to 8 MiB of
 * free heap, and grow it 1 MiB at a time; untouched pages cost no RSS. */
static void app_tune_malloc(void)
{
#ifdef M_TRIM_THRESHOLD
	mallopt(M_TRIM_THRESHOLD, 8 * 1024 * 1024);
	mallopt(M_TOP_PAD, 1024 * 1024);
#endif
}

int main(int argc, char **argv)
{
	app_tune_malloc();
	int rc = px_cli_parse(argc, argv, &app.cfg, stdout, stderr);
	if (rc != 0) {
		px_cli_free(&app.cfg);
		return rc > 0 ? PX_EXIT_OK : PX_EXIT_USAGE;
	}
	px_log_init(app.cfg.verbosity);
	if (app.cfg.syslog)
		px_log_use_syslog();
	/* Before the loop exists: ssh -G is a child we wait for here. */
	if (px_sshconfig_resolve(&app.cfg, stderr) != 0) {
		px_cli_free(&app.cfg);
		return PX_EXIT_USAGE;
	}
	px_log_init(app.cfg.verbosity); /* LogLevel may have changed it */
	if (!mux_libssh2_patched())
		px_log(2, "libssh2 %s from the system (system build): no bulk crypt, one channel "
		       "open at a time, windows fixed at 2 MiB: slower than the default "
		       "build with ftpssh's libssh2 patches (make LIBSSH2=bundled)",
		       mux_libssh2_version());
	if (app.cfg.background)
		app_fork_background();
	app.status_line = !app.cfg.syslog && app.cfg.verbosity >= 0 && isatty(2);
	signal(SIGPIPE, SIG_IGN);
	app.loop = uv_default_loop();

	uv_signal_init(app.loop, &app.sigint);
	uv_signal_init(app.loop, &app.sigterm);
	uv_signal_start(&app.sigint, signal_cb, SIGINT);
	uv_signal_start(&app.sigterm, signal_cb, SIGTERM);
	uv_signal_init(app.loop, &app.sigusr1);
	uv_signal_start(&app.sigusr1, sigusr1_cb, SIGUSR1);
	uv_timer_init(app.loop, &app.status);
	if (app.status_line || app.cfg.status_file[0])
		uv_timer_start(&app.status, status_cb, 1000, 1000);
	uv_unref((uv_handle_t *)&app.status);
	uv_timer_init(app.loop, &app.retry);
	uv_timer_init(app.loop, &app.drain);
	app.backoff_ms = BACKOFF_FIRST_MS;

	const px_config *cf = &app.cfg;
	app.opts = (mux_conn_opts){
		.host = cf->gateway,
		.port = cf->ssh_port,
		.user = cf->user,
		.proxy_argv = cf->proxy_argv[0] ? cf->proxy_argv : NULL,
		.address_family = cf->address_family,
		.connect_timeout_sec = cf->connect_timeout_sec,
		.identities = cf->identities,
		.n_identities = cf->nidentities,
		.certificates = cf->certificates,
		.n_certificates = cf->ncertificates,
		.use_agent = cf->use_agent,
		.identities_only = cf->identities_only,
		.batch_mode = cf->batch_mode,
		.preferred_auth = cf->preferred_auth,
		.no_pubkey_auth = cf->no_pubkey_auth,
		.no_password_auth = cf->no_password_auth,
		.no_kbdint_auth = cf->no_kbdint_auth,
		.known_hosts_files = cf->known_hosts_files,
		.n_known_hosts_files = cf->nknown_hosts_files,
		.global_known_hosts = cf->global_known_hosts,
		.n_global_known_hosts = cf->nglobal_known_hosts,
		.hostkey_alias = cf->hostkey_alias,
		.hash_known_hosts = cf->hash_known_hosts,
		.hostkey_policy = cf->hostkey_policy,
		.keepalive_sec = cf->keepalive_sec,
		.keepalive_count = cf->keepalive_count,
		.ciphers = cf->ciphers,
		.macs = cf->macs,
		.kex = cf->kex,
		.hostkey_algs = cf->hostkey_algs,
		.hostkey_algs_keep_order = cf->hostkey_algs_keep_order,
		.compression = cf->compression,
		.window_max = cf->window_max,
		.log = px_log_mux,
		.log_ctx = NULL,
		.ask = cf->batch_mode ? NULL : px_ask,
		.ask_ctx = &app.reconnecting,
	};
	conn_open();
	uv_run(app.loop, UV_RUN_DEFAULT);
	px_ask_forget();
	px_cli_free(&app.cfg);
	rc = uv_loop_close(app.loop);
#ifdef FTPSSH_DEBUG_LOOP_CLOSE
	if (rc != 0) {
		fprintf(stderr, "ftpssh: BUG: handles left open at exit\n");
		uv_print_all_handles(app.loop, stderr);
		abort();
	}
#endif
	return app.exit_code;
}
