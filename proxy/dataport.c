/*
 * One-shot data ports and the transfers they start.
 *
 * A data port is a loopback listener on a kernel-chosen port, bound to the
 * address the client used for its control connection (clients such as curl
 * ignore the address in a 227 and reuse that one). It takes exactly one
 * connection from a loopback address, hands it to a mux_pump that opens a
 * channel to the FTP server's data port, and closes. If no connection
 * comes within data_timeout_sec it closes anyway.
 *
 * Whose connection it takes (data_conn_allowed), every doubt a no and the
 * port left waiting for the real client: not one of ftpssh's own
 * active-mode sockets (another session's PORT aimed here would pass the
 * uid check under ftpssh's uid), and only one whose owner, asked of the
 * kernel, is the control connection's uid; an owner that cannot be
 * established is refused too.
 *
 * Active-mode transfers live here as well (px_active_start/go/abort): the
 * connection to the client first, the channel once the session knows the
 * server's passive port.
 *
 * Ownership: the session owns its unused data port (through *slot, which is
 * cleared here when the port closes). A started transfer (px_xfer) belongs
 * to the server's list, not to the session: it ends by itself when both
 * sides have finished, and the server aborts it only at shutdown.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/internal.h"

struct px_dataport {
	px_server *srv;
	px_dataport **slot;
	uv_tcp_t listener;
	uv_timer_t timer;
	unsigned sid, xid;
	char host[256];
	uint16_t port;
	long owner_uid;
	bool grace;        /* the timer was extended once for a waiting client */
	bool told_unknown; /* "cannot tell who" logged once */
	bool refused;      /* the server refused the command: no transfer ran */
	char what[128];    /* transfer label, handed to the transfer */
	bool closing;
	int pending_closes;
};

struct px_xfer {
	struct px_xfer *prev, *next;
	px_server *srv;
	mux_pump *pump;
	unsigned sid, xid;
	uint64_t t0;
	uv_connect_t connect;  /* active mode: our connection to the client */
	struct sockaddr_storage ours; /* active mode: its local address */
	bool active;           /* active mode, the pump not started yet */
	bool connected;        /* active mode: the client's port answered */
	bool ran;              /* the pump was started: data could move */
	bool refused;          /* the server refused the command */
	char what[128];        /* "RETR big.iso", or "" until the command is seen */
	char host[256];
	uint16_t port;
};

static void dataport_closed_cb(uv_handle_t *h)
{
	px_dataport *dp = h->data;
	if (--dp->pending_closes == 0)
		free(dp);
}

void px_dataport_close(px_dataport *dp)
{
	if (dp->closing)
		return;
	dp->closing = true;
	if (dp->slot && *dp->slot == dp)
		*dp->slot = NULL;
	dp->pending_closes = 2;
	uv_close((uv_handle_t *)&dp->listener, dataport_closed_cb);
	uv_close((uv_handle_t *)&dp->timer, dataport_closed_cb);
}

static void timeout_cb(uv_timer_t *t)
{
	px_dataport *dp = t->data;
	/* A connection already waiting in the backlog wins over the timer
	 * (a busy loop can reach the timer first): give it a moment. */
	uv_os_fd_t fd;
	if (!dp->grace && uv_fileno((uv_handle_t *)&dp->listener, &fd) == 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN)) {
			dp->grace = true;
			uv_timer_start(&dp->timer, timeout_cb, 1000, 0);
			return;
		}
	}
	px_log(2, "[#%u.%u] no data connection within %u s; port closed", dp->sid, dp->xid,
	       dp->srv->cfg->data_timeout_sec);
	px_dataport_close(dp);
}

static void xfer_done_cb(mux_pump *p, const mux_pump_result *r, void *data)
{
	struct px_xfer *x = data;
	px_server *srv = x->srv;
	char sz[32];
	(void)p;
	double secs = (uv_now(srv->loop) - x->t0) / 1000.0;
	uint64_t bytes = r->bytes_down + r->bytes_up;
	double rate = secs > 0 ? bytes / secs / 1e6 : 0;
	const char *what = x->what[0] ? x->what : "data";
	const char *dir = r->bytes_up > r->bytes_down ? "to server" : "from server";
	px_fmt_bytes(sz, sizeof(sz), (double)bytes);
	if (!x->ran || (x->refused && bytes == 0))
		/* nothing was transferred: not a transfer line */
		px_log(2, "[#%u.%u] %s: no transfer (%s)", x->sid, x->xid, what,
		       x->refused ? "the server refused the command" : "data connection dropped");
	else if (r->status == 0)
		px_log(1, "[#%u.%u] %s: %s %s in %.2f s, %.1f MB/s", x->sid, x->xid, what, sz,
		       dir, secs, rate);
	else
		px_log(1, "[#%u.%u] %s: ended after %s %s: %s", x->sid, x->xid, what, sz, dir,
		       mux_strerror(r->status));
	srv->bytes_done += bytes;
	if (x->ran && !x->refused)
		srv->xfers_done++;
	if (x->prev)
		x->prev->next = x->next;
	else if (srv->xfers == x)
		srv->xfers = x->next;
	if (x->next)
		x->next->prev = x->prev;
	srv->nxfers--;
	free(x);
	px_server_maybe_closed(srv);
}

/* A transfer object linked into the server's list, with a fresh pump. */
static struct px_xfer *xfer_new(px_server *srv, unsigned sid, unsigned xid)
{
	struct px_xfer *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->srv = srv;
	x->sid = sid;
	x->xid = xid;
	x->t0 = uv_now(srv->loop);
	x->pump = mux_pump_new(srv->loop, xfer_done_cb, x);
	if (!x->pump) {
		free(x);
		return NULL;
	}
	/* linked before anything can fail: xfer_done_cb unlinks */
	x->next = srv->xfers;
	if (srv->xfers)
		srv->xfers->prev = x;
	srv->xfers = x;
	srv->nxfers++;
	return x;
}

static struct px_xfer *xfer_find(px_server *srv, unsigned sid, unsigned xid)
{
	for (struct px_xfer *x = srv->xfers; x; x = x->next)
		if (x->sid == sid && x->xid == xid)
			return x;
	return NULL;
}

static void active_connected_cb(uv_connect_t *req, int status)
{
	struct px_xfer *x = container_of(req, struct px_xfer, connect);
	if (status == UV_ECANCELED)
		return; /* the pump is closing */
	x->connected = status == 0;
	/* The session asks the server for its data port only now: a client
	 * port that refuses gets a quick 425 instead of a server timeout. */
	bool wanted = px_session_active_connected(x->srv, x->sid, x->xid, status);
	if (status < 0 || !wanted) {
		if (status < 0)
			px_log(1, "[#%u.%u] cannot connect to the client's data port: %s", x->sid,
			       x->xid, uv_strerror(status));
		x->connected = false;
		mux_pump_close(x->pump);
	}
}

int px_active_start(px_server *srv, unsigned sid, unsigned xid, const struct sockaddr *client,
		    const char *what)
{
	struct px_xfer *x = xfer_new(srv, sid, xid);
	if (!x)
		return UV_ENOMEM;
	snprintf(x->what, sizeof(x->what), "%s", what);
	x->active = true;
	int rc = uv_tcp_connect(&x->connect, mux_pump_tcp(x->pump), client, active_connected_cb);
	if (rc < 0) {
		mux_pump_close(x->pump);
		return rc;
	}
	/* connect() has bound the socket already: remember its address so a
	 * PORT aimed at one of our own data ports is recognised there */
	int len = sizeof(x->ours);
	uv_tcp_getsockname(mux_pump_tcp(x->pump), (struct sockaddr *)&x->ours, &len);
	return 0;
}

int px_active_go(px_server *srv, unsigned sid, unsigned xid, const char *host, uint16_t port)
{
	struct px_xfer *x = xfer_find(srv, sid, xid);
	if (!x || !x->active || !x->connected)
		return UV_ENOENT;
	snprintf(x->host, sizeof(x->host), "%s", host);
	x->port = port;
	int rc = mux_pump_start(x->pump, srv->conn, host, port);
	if (rc < 0) {
		px_log(0, "[#%u.%u] cannot open a data channel: %s", sid, xid, mux_strerror(rc));
		mux_pump_close(x->pump);
		return rc;
	}
	x->ran = true;
	px_log(2, "[#%u.%u] active: connected to the client, channel to %s:%u", sid, xid, host,
	       port);
	return 0;
}

void px_active_abort(px_server *srv, unsigned sid, unsigned xid)
{
	struct px_xfer *x = xfer_find(srv, sid, xid);
	if (x)
		mux_pump_close(x->pump);
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

bool px_active_is_ours(px_server *srv, const struct sockaddr_storage *addr)
{
	for (struct px_xfer *x = srv->xfers; x; x = x->next)
		if (x->ours.ss_family && same_addr(&x->ours, addr))
			return true;
	return false;
}

void px_xfer_refused(px_server *srv, px_dataport *dp, unsigned sid, unsigned xid)
{
	if (dp && dp->sid == sid && dp->xid == xid && !dp->closing) {
		dp->refused = true;
		return;
	}
	struct px_xfer *x = xfer_find(srv, sid, xid);
	if (x)
		x->refused = true;
}

/* Whose is this data connection? true: take it. Every doubt is a no: the
 * real client can still connect after a refused one. */
static bool data_conn_allowed(px_dataport *dp, uv_tcp_t *tcp, struct sockaddr_storage *peer)
{
	px_server *srv = dp->srv;
	struct sockaddr_storage ours;
	int len = sizeof(*peer);
	if (uv_tcp_getpeername(tcp, (struct sockaddr *)peer, &len) != 0 || !px_addr_is_loopback(peer)) {
		px_log(0, "[#%u.%u] data connection from a non-loopback address refused",
		       dp->sid, dp->xid);
		return false;
	}
	if (px_active_is_ours(srv, peer)) {
		/* a PORT/EPRT aimed at this port: ftpssh would pass its own
		 * uid check and hand the data to another session */
		px_log(0, "[#%u.%u] data connection from ftpssh's own active-mode socket refused "
			  "(a PORT/EPRT of another session aimed at this port)",
		       dp->sid, dp->xid);
		return false;
	}
	if (dp->owner_uid < 0)
		return true; /* --no-uid-check */
	uid_t uid;
	len = sizeof(ours);
	int urc = uv_tcp_getsockname(tcp, (struct sockaddr *)&ours, &len);
	if (urc == 0)
		urc = px_peer_uid(srv->diag_fd, &ours, peer, &uid);
	if (urc != 0) {
		if (!dp->told_unknown)
			px_log(0, "[#%u.%u] cannot tell who opened a data connection (%s); refused, "
				  "waiting for the client",
			       dp->sid, dp->xid, uv_strerror(urc));
		dp->told_unknown = true;
		return false;
	}
	if ((long)uid != dp->owner_uid) {
		/* another local user raced the client to the port */
		px_log(0, "[#%u.%u] data connection from uid %ld refused: the session belongs "
			  "to uid %ld",
		       dp->sid, dp->xid, (long)uid, dp->owner_uid);
		return false;
	}
	return true;
}

static void connection_cb(uv_stream_t *listener, int status)
{
	px_dataport *dp = listener->data;
	px_server *srv = dp->srv;
	if (status < 0) {
		px_log(0, "[#%u.%u] data port: %s", dp->sid, dp->xid, uv_strerror(status));
		return;
	}
	if (dp->closing)
		return;
	struct px_xfer *x = xfer_new(srv, dp->sid, dp->xid);
	if (!x) {
		px_log(0, "[#%u.%u] out of memory", dp->sid, dp->xid);
		return;
	}
	memcpy(x->what, dp->what, sizeof(x->what));
	x->refused = dp->refused;
	int rc = uv_accept(listener, (uv_stream_t *)mux_pump_tcp(x->pump));
	if (rc < 0) {
		px_log(0, "[#%u.%u] data accept: %s", dp->sid, dp->xid, uv_strerror(rc));
		mux_pump_close(x->pump);
		return;
	}
	struct sockaddr_storage peer;
	if (!data_conn_allowed(dp, mux_pump_tcp(x->pump), &peer)) {
		mux_pump_close(x->pump);
		return; /* keep waiting for the real client */
	}
	rc = mux_pump_start(x->pump, srv->conn, dp->host, dp->port);
	if (rc < 0) {
		px_log(0, "[#%u.%u] cannot open a data channel: %s", dp->sid, dp->xid,
		       mux_strerror(rc));
		mux_pump_close(x->pump);
	} else {
		x->ran = true;
		px_log(2, "[#%u.%u] data connection accepted, channel to %s:%u", dp->sid,
		       dp->xid, dp->host, dp->port);
	}
	px_dataport_close(dp); /* one shot */
}

int px_dataport_open(px_server *srv, unsigned sid, unsigned xid,
		     const struct sockaddr *bind_addr, const char *host, uint16_t port,
		     long owner_uid, px_dataport **slot, uint16_t *local_port)
{
	struct sockaddr_storage a;
	int rc;
	px_dataport *dp = calloc(1, sizeof(*dp));
	if (!dp)
		return UV_ENOMEM;
	dp->srv = srv;
	dp->sid = sid;
	dp->xid = xid;
	dp->port = port;
	dp->owner_uid = owner_uid;
	snprintf(dp->host, sizeof(dp->host), "%s", host);
	uv_tcp_init(srv->loop, &dp->listener);
	dp->listener.data = dp;
	uv_timer_init(srv->loop, &dp->timer);
	dp->timer.data = dp;

	memset(&a, 0, sizeof(a));
	if (bind_addr->sa_family == AF_INET6) {
		memcpy(&a, bind_addr, sizeof(struct sockaddr_in6));
		((struct sockaddr_in6 *)&a)->sin6_port = 0;
	} else {
		memcpy(&a, bind_addr, sizeof(struct sockaddr_in));
		((struct sockaddr_in *)&a)->sin_port = 0;
	}
	if ((rc = uv_tcp_bind(&dp->listener, (struct sockaddr *)&a, 0)) < 0 ||
	    (rc = uv_listen((uv_stream_t *)&dp->listener, 4, connection_cb)) < 0)
		goto fail;
	int len = sizeof(a);
	if ((rc = uv_tcp_getsockname(&dp->listener, (struct sockaddr *)&a, &len)) < 0)
		goto fail;
	*local_port = ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
						    : ((struct sockaddr_in *)&a)->sin_port);
	uv_timer_start(&dp->timer, timeout_cb, srv->cfg->data_timeout_sec * 1000ull, 0);
	dp->slot = slot;
	*slot = dp;
	return 0;
fail:
	px_dataport_close(dp);
	return rc;
}

void px_xfers_abort_all(px_server *srv)
{
	for (struct px_xfer *x = srv->xfers, *next; x; x = next) {
		next = x->next;
		mux_pump_close(x->pump);
	}
}

void px_xfer_label(px_server *srv, px_dataport *dp, unsigned sid, unsigned xid,
		   const char *what)
{
	if (dp && dp->sid == sid && dp->xid == xid && !dp->closing) {
		snprintf(dp->what, sizeof(dp->what), "%s", what);
		return;
	}
	struct px_xfer *x = xfer_find(srv, sid, xid);
	if (x)
		snprintf(x->what, sizeof(x->what), "%s", what);
}

bool px_xfer_running(px_server *srv, unsigned sid)
{
	for (struct px_xfer *x = srv->xfers; x; x = x->next)
		if (x->sid == sid)
			return true;
	return false;
}

uint64_t px_xfers_report(px_server *srv, FILE *out)
{
	uint64_t live = 0;
	uint64_t now = uv_now(srv->loop);
	if (out)
		fprintf(out, "%-9s %-40s %12s %10s %8s\n", "TRANSFER", "COMMAND", "BYTES",
			"MB/s", "AGE");
	for (struct px_xfer *x = srv->xfers; x; x = x->next) {
		uint64_t up = 0, down = 0;
		mux_pump_stats(x->pump, &up, &down);
		live += up + down;
		if (!out)
			continue;
		double secs = (now - x->t0) / 1000.0;
		char id[24];
		snprintf(id, sizeof(id), "#%u.%u", x->sid, x->xid);
		fprintf(out, "%-9s %-40.40s %12llu %10.1f %7.1fs\n", id,
			x->what[0] ? x->what : "(waiting for command)",
			(unsigned long long)(up + down), secs > 0 ? (up + down) / secs / 1e6 : 0.0,
			secs);
	}
	return live;
}

char *px_fmt_bytes(char *buf, size_t cap, double b)
{
	static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;
	while (b >= 1024 && u < 4) {
		b /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%.0f B", b);
	else
		snprintf(buf, cap, "%.1f %s", b, unit[u]);
	return buf;
}
