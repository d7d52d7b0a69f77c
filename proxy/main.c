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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/proxy.h"

static struct {
	uv_loop_t *loop;
	px_config cfg;
	mux_conn *conn;
	px_server *srv;
	uv_signal_t sigint, sigterm;
	int exit_code;
	bool stopping;
	int signals;
} app;

static void app_stop(int code);

static void server_closed_cb(void *data)
{
	(void)data;
	app.srv = NULL;
	if (app.conn)
		mux_conn_close(app.conn);
}

static void conn_cb(mux_conn *c, enum mux_conn_event ev, int kind, const char *msg, void *data)
{
	(void)c;
	(void)data;
	switch (ev) {
	case MUX_CONN_UP:
		px_log(1, "SSH connection to %s@%s port %u is up", app.cfg.user, app.cfg.gateway,
		       app.cfg.ssh_port);
		if (!app.srv && !app.stopping) {
			if (px_server_start(app.loop, app.conn, &app.cfg, &app.srv) < 0)
				app_stop(PX_EXIT_LISTEN);
		}
		break;
	case MUX_CONN_FAILED:
		px_log(0, "%s", msg);
		app_stop(kind == MUX_FAIL_HOSTKEY ? PX_EXIT_HOSTKEY
			 : kind == MUX_FAIL_AUTH  ? PX_EXIT_AUTH
						  : PX_EXIT_NET);
		break;
	case MUX_CONN_LOST:
		px_log(0, "%s", msg);
		app_stop(PX_EXIT_ERROR);
		break;
	case MUX_CONN_CLOSED:
		app.conn = NULL;
		uv_close((uv_handle_t *)&app.sigint, NULL);
		uv_close((uv_handle_t *)&app.sigterm, NULL);
		break;
	}
}

static void app_stop(int code)
{
	if (app.stopping)
		return;
	app.stopping = true;
	app.exit_code = code;
	if (app.srv)
		px_server_close(app.srv, server_closed_cb, NULL);
	else
		server_closed_cb(NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
	(void)h;
	if (++app.signals > 1) {
		/* second signal: the user means it */
		fprintf(stderr, "ftpssh: %s again, exiting now\n", strsignal(signum));
		_exit(PX_EXIT_ERROR);
	}
	px_log(1, "%s: stopping", strsignal(signum));
	app_stop(PX_EXIT_OK);
}

int main(int argc, char **argv)
{
	int rc = px_cli_parse(argc, argv, &app.cfg, stdout, stderr);
	if (rc != 0)
		return rc > 0 ? PX_EXIT_OK : PX_EXIT_USAGE;
	px_log_init(app.cfg.verbosity);
	signal(SIGPIPE, SIG_IGN);
	app.loop = uv_default_loop();

	uv_signal_init(app.loop, &app.sigint);
	uv_signal_init(app.loop, &app.sigterm);
	uv_signal_start(&app.sigint, signal_cb, SIGINT);
	uv_signal_start(&app.sigterm, signal_cb, SIGTERM);

	mux_conn_opts o = {
		.host = app.cfg.gateway,
		.port = app.cfg.ssh_port,
		.user = app.cfg.user,
		.identities = app.cfg.identities,
		.n_identities = app.cfg.nidentities,
		.use_agent = true,
		.known_hosts = app.cfg.known_hosts,
		.hostkey_policy = app.cfg.hostkey_policy,
		.keepalive_sec = app.cfg.keepalive_sec,
		.ciphers = app.cfg.ciphers[0] ? app.cfg.ciphers : NULL,
		.macs = app.cfg.macs[0] ? app.cfg.macs : NULL,
		.window_max = app.cfg.window_max,
		.log = px_log_mux,
		.log_ctx = NULL,
	};
	rc = mux_conn_start(app.loop, &o, conn_cb, NULL, &app.conn);
	if (rc < 0) {
		px_log(0, "cannot start: %s", mux_strerror(rc));
		return PX_EXIT_ERROR;
	}
	uv_run(app.loop, UV_RUN_DEFAULT);
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
