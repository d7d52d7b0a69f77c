/*
 * The server: one loopback listener per -L forward, the list of sessions
 * and the list of running transfers. It owns the listeners; sessions and
 * transfers unlink themselves when they end. Closing stops the listeners,
 * ends every session and transfer, and calls back once all are gone.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/ftpd.h"

struct px_listener {
	struct px_listener *next;
	px_server *srv;
	const px_forward *fwd;
	uv_tcp_t tcp;
};

void px_sessions_close_all(px_server *srv);

static void listener_connection_cb(uv_stream_t *st, int status)
{
	struct px_listener *l = st->data;
	if (status < 0) {
		/* EMFILE and friends: say so, keep serving the others */
		px_log(0, "listener: %s", uv_strerror(status));
		return;
	}
	if (l->srv->closing)
		return;
	if (l->fwd->sftp)
		px_ftpd_accept(l->srv, st, l->fwd);
	else
		px_session_accept(l->srv, st, l->fwd);
}

static bool addr_is_loopback(const char *a)
{
	return strncmp(a, "127.", 4) == 0 || strcmp(a, "::1") == 0;
}

static int listener_bind(struct px_listener *l, const char *addr, uint16_t port,
			 uint16_t *bound)
{
	struct sockaddr_storage ss;
	int rc;
	if (strchr(addr, ':'))
		rc = uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&ss);
	else
		rc = uv_ip4_addr(addr, port, (struct sockaddr_in *)&ss);
	if (rc < 0)
		return rc;
	if ((rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) < 0)
		return rc;
	if ((rc = uv_listen((uv_stream_t *)&l->tcp, 128, listener_connection_cb)) < 0)
		return rc;
	int len = sizeof(ss);
	if ((rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len)) < 0)
		return rc;
	*bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						: ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

static void listener_closed_cb(uv_handle_t *h)
{
	struct px_listener *l = h->data;
	px_server *srv = l->srv;
	free(l);
	srv->pending_closes--;
	px_server_maybe_closed(srv);
}

static void listener_free_cb(uv_handle_t *h)
{
	free(h->data);
}

static struct px_listener *listener_new(px_server *srv, const px_forward *f)
{
	struct px_listener *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->srv = srv;
	l->fwd = f;
	uv_tcp_init(srv->loop, &l->tcp);
	l->tcp.data = l;
	return l;
}

/* The IPv6 loopback twin of a default loopback listener, on the same port.
 * Its absence (no IPv6, port taken on ::1) is not an error. */
static void listener_open_v6(px_server *srv, const px_forward *f, uint16_t port)
{
	struct px_listener *l = listener_new(srv, f);
	uint16_t bound = 0;
	if (!l)
		return;
	int rc = listener_bind(l, "::1", port, &bound);
	if (rc < 0) {
		px_log(2, "not listening on [::1]:%u: %s", port, uv_strerror(rc));
		uv_close((uv_handle_t *)&l->tcp, listener_free_cb);
		return;
	}
	l->next = srv->listeners;
	srv->listeners = l;
	srv->pending_closes++;
	px_log(2, "also listening on [::1]:%u", bound);
}

static int listener_open(px_server *srv, const px_forward *f)
{
	struct px_listener *l = listener_new(srv, f);
	uint16_t port = 0;
	int rc;
	if (!l)
		return UV_ENOMEM;
	rc = listener_bind(l, f->bind_addr, f->bind_port, &port);
	if (rc < 0 && f->default_port && (rc == UV_EACCES || rc == UV_EADDRINUSE)) {
		/* Port 21 needs privilege (or is taken): the documented fallback. */
		px_log(2, "cannot listen on %s port 21 (%s); using 2121", f->bind_addr,
		       uv_strerror(rc));
		uv_close((uv_handle_t *)&l->tcp, listener_free_cb);
		/* a fresh handle: a failed bind leaves the old one unusable */
		l = listener_new(srv, f);
		if (!l)
			return UV_ENOMEM;
		rc = listener_bind(l, f->bind_addr, 2121, &port);
	}
	l->next = srv->listeners;
	srv->listeners = l;
	srv->pending_closes++;
	if (rc < 0) {
		px_log(0, "cannot listen on %s port %u: %s", f->bind_addr,
		       f->default_port ? 2121 : f->bind_port, uv_strerror(rc));
		return rc;
	}
	if (!addr_is_loopback(f->bind_addr))
		px_log(0, "warning: listening on %s, beyond loopback: other hosts can reach "
			  "this FTP relay",
		       f->bind_addr);
	bool v6 = strchr(f->bind_addr, ':') != NULL;
	/* Printed at every verbosity: scripts and users wait for this line. */
	fprintf(stderr, "ftpssh: point your FTP client at ftp://%s%s%s:%u/ (passive mode)\n",
		v6 ? "[" : "", f->bind_addr, v6 ? "]" : "", port);
	if (f->sftp)
		px_log(2, "serving FTP on %s port %u from the gateway's SFTP (start %s)",
		       f->bind_addr, port, f->start_dir[0] ? f->start_dir : "home");
	else
		px_log(2, "relaying %s port %u to %s:%u via the gateway", f->bind_addr, port,
		       f->host, f->port);
	if (f->also_v6)
		listener_open_v6(srv, f, port);
	return 0;
}

int px_server_start(uv_loop_t *loop, mux_conn *conn, const px_config *cfg, px_server **out)
{
	px_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return UV_ENOMEM;
	srv->loop = loop;
	srv->conn = conn;
	srv->cfg = cfg;
	*out = srv;
	for (size_t i = 0; i < cfg->nfwd; i++) {
		int rc = listener_open(srv, &cfg->fwd[i]);
		if (rc < 0)
			return rc; /* caller closes srv */
	}
	return 0;
}

void px_server_maybe_closed(px_server *srv)
{
	if (!srv->closing || srv->nsessions || srv->nftpds || srv->nxfers || srv->pending_closes)
		return;
	void (*cb)(void *) = srv->close_cb;
	void *data = srv->close_data;
	srv->close_cb = NULL;
	free(srv);
	if (cb)
		cb(data);
}

void px_server_set_conn(px_server *srv, mux_conn *conn)
{
	srv->conn = conn;
}

unsigned px_server_transfers(const px_server *srv)
{
	/* the SFTP front end's count too: a SIGTERM drain waits for them */
	return srv->nxfers + srv->nftpd_xfers;
}

void px_server_stop_listening(px_server *srv)
{
	for (struct px_listener *l = srv->listeners, *next; l; l = next) {
		next = l->next;
		uv_close((uv_handle_t *)&l->tcp, listener_closed_cb);
	}
	srv->listeners = NULL;
}

void px_server_close(px_server *srv, void (*cb)(void *data), void *data)
{
	if (srv->closing)
		return;
	srv->closing = true;
	srv->close_cb = cb;
	srv->close_data = data;
	px_server_stop_listening(srv);
	px_sessions_close_all(srv);
	px_ftpd_close_all(srv);
	px_xfers_abort_all(srv);
	px_server_maybe_closed(srv);
}
