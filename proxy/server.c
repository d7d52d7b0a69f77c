/*
 * The server: one loopback listener per -L forward, the list of sessions
 * and the list of running transfers. It owns the listeners, the sock_diag
 * socket used for every owner check and a reserve descriptor; sessions and
 * transfers unlink themselves when they end. Closing stops the listeners,
 * ends every session and transfer, and calls back once all are gone.
 *
 * Listeners are plain sockets under a uv_poll_t, accepted here rather than
 * by libuv: on EMFILE libuv accepts and closes every pending connection
 * without a word, which locks every user out in silence. Here the reserve
 * descriptor (/dev/null, opened at start) is given up for a moment instead:
 * accept, say "421 too many sessions", close, take the reserve back. The
 * session caps (sessions in all, lowered to what RLIMIT_NOFILE allows, and
 * per uid) are meant to bite long before that.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/ftpd.h"

/* Descriptors a session may hold at once: its control connection, an
 * unused data port and one data connection. */
#define FDS_PER_SESSION 3
/* Kept free beyond what is open at start: SSH re-connects, config and
 * /proc reads, the status file. */
#define FDS_SPARE 16
#define ACCEPT_BURST 64

struct px_listener {
	struct px_listener *next;
	px_server *srv;
	const px_forward *fwd;
	uv_poll_t poll;
	bool poll_inited;
	int fd;
};

void px_sessions_close_all(px_server *srv);

static void reserve_take(px_server *srv)
{
	if (srv->reserve_fd < 0)
		srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Out of descriptors: refuse one waiting client with a reply rather than
 * leave it (and everyone behind it) hanging. false: no reserve to do it
 * with (the caller stops for this round). */
static bool listener_refuse_emfile(struct px_listener *l)
{
	static const char msg[] = "421 ftpssh: too many sessions (out of file descriptors); "
				  "try again later\r\n";
	px_server *srv = l->srv;
	if (srv->reserve_fd < 0) {
		reserve_take(srv); /* for the next round, if a descriptor came free */
		uint64_t now = uv_now(srv->loop);
		if (now - srv->refusal_log_ms >= 1000 || srv->refusal_log_ms == 0) {
			px_log(0, "listener: out of file descriptors and no reserve left");
			srv->refusal_log_ms = now;
		}
		return false;
	}
	close(srv->reserve_fd);
	srv->reserve_fd = -1;
	int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd >= 0) {
		ssize_t n = send(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)n;
		close(fd);
		px_log(0, "listener: out of file descriptors; a new client got 421");
	}
	reserve_take(srv);
	return fd >= 0;
}

static void listener_poll_cb(uv_poll_t *h, int status, int events)
{
	struct px_listener *l = h->data;
	(void)events;
	if (status < 0) {
		px_log(0, "listener: %s", uv_strerror(status));
		return;
	}
	for (int i = 0; i < ACCEPT_BURST && !l->srv->closing; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			int e = errno;
			if (e == EMFILE || e == ENFILE) {
				if (listener_refuse_emfile(l))
					continue;
				return;
			}
			if (e == EINTR || e == ECONNABORTED)
				continue;
			if (e != EAGAIN && e != EWOULDBLOCK)
				px_log(0, "listener: accept: %s", strerror(e));
			return;
		}
		if (l->fwd->sftp)
			px_ftpd_accept(l->srv, fd, l->fwd);
		else
			px_session_accept(l->srv, fd, l->fwd);
	}
}

static bool addr_is_loopback(const char *a)
{
	return strncmp(a, "127.", 4) == 0 || strcmp(a, "::1") == 0;
}

static int listener_bind(struct px_listener *l, const char *addr, uint16_t port,
			 uint16_t *bound)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	int rc, one = 1;
	if (strchr(addr, ':')) {
		rc = uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&ss);
		slen = sizeof(struct sockaddr_in6);
	} else {
		rc = uv_ip4_addr(addr, port, (struct sockaddr_in *)&ss);
		slen = sizeof(struct sockaddr_in);
	}
	if (rc < 0)
		return rc;
	l->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd < 0)
		return -errno;
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(l->fd, (struct sockaddr *)&ss, slen) < 0 || listen(l->fd, 128) < 0)
		return -errno;
	if (getsockname(l->fd, (struct sockaddr *)&ss, &slen) < 0)
		return -errno;
	if ((rc = uv_poll_init_socket(l->srv->loop, &l->poll, l->fd)) < 0)
		return rc;
	l->poll_inited = true;
	l->poll.data = l;
	if ((rc = uv_poll_start(&l->poll, UV_READABLE, listener_poll_cb)) < 0)
		return rc;
	*bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						: ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

static void listener_closed_cb(uv_handle_t *h)
{
	struct px_listener *l = h->data;
	px_server *srv = l->srv;
	close(l->fd);
	free(l);
	srv->pending_closes--;
	px_server_maybe_closed(srv);
}

static void listener_free_cb(uv_handle_t *h)
{
	struct px_listener *l = h->data;
	close(l->fd);
	free(l);
}

/* A listener that failed to start: close what it holds and free it. */
static void listener_discard(struct px_listener *l)
{
	if (l->poll_inited) {
		uv_close((uv_handle_t *)&l->poll, listener_free_cb);
		return;
	}
	if (l->fd >= 0)
		close(l->fd);
	free(l);
}

static struct px_listener *listener_new(px_server *srv, const px_forward *f)
{
	struct px_listener *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->srv = srv;
	l->fwd = f;
	l->fd = -1;
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
		listener_discard(l);
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
		listener_discard(l);
		l = listener_new(srv, f);
		if (!l)
			return UV_ENOMEM;
		rc = listener_bind(l, f->bind_addr, 2121, &port);
	}
	if (rc < 0) {
		px_log(0, "cannot listen on %s port %u: %s", f->bind_addr,
		       f->default_port ? 2121 : f->bind_port, uv_strerror(rc));
		listener_discard(l);
		return rc;
	}
	l->next = srv->listeners;
	srv->listeners = l;
	srv->pending_closes++;
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

/* How many open descriptors now (at start: stdio, the loop, SSH). */
static unsigned fds_open(void)
{
	unsigned n = 0;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	rlim_t top = rl.rlim_cur < 65536 ? rl.rlim_cur : 65536;
	for (rlim_t fd = 0; fd < top; fd++)
		if (fcntl((int)fd, F_GETFD) >= 0)
			n++;
	return n;
}

/* --max-sessions, lowered so that the cap bites before descriptors run
 * out: each session may hold FDS_PER_SESSION of them. Sets the budget of
 * descriptors admission counts against (limits.c). */
static unsigned session_ceiling(px_server *srv, const px_config *cfg)
{
	struct rlimit rl;
	unsigned cap = cfg->max_sessions;
	srv->fd_budget = UINT64_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return cap;
	unsigned long base = fds_open() + FDS_SPARE;
	srv->fd_budget = rl.rlim_cur > base ? rl.rlim_cur - base : 0;
	unsigned long fit = rl.rlim_cur > base ? (rl.rlim_cur - base) / FDS_PER_SESSION : 0;
	if (fit < 1)
		fit = 1;
	if (fit < cap) {
		px_log(1, "at most %lu sessions: RLIMIT_NOFILE is %llu (raise it with ulimit -n "
			  "for the --max-sessions=%u asked)",
		       fit, (unsigned long long)rl.rlim_cur, cfg->max_sessions);
		cap = (unsigned)fit;
	}
	return cap;
}

int px_server_start(uv_loop_t *loop, mux_conn *conn, const px_config *cfg, px_server **out)
{
	px_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return UV_ENOMEM;
	srv->loop = loop;
	srv->conn = conn;
	srv->cfg = cfg;
	srv->reserve_fd = -1;
	srv->diag_fd = -1;
	*out = srv;
	if (!cfg->no_uid_check) {
		srv->diag_fd = px_peeruid_open();
		if (srv->diag_fd < 0)
			px_log(1, "no sock_diag netlink socket (%s): owner checks read "
				  "/proc/net/tcp",
			       uv_strerror(srv->diag_fd));
	}
	reserve_take(srv);
	px_limits_init(srv);
	for (size_t i = 0; i < cfg->nfwd; i++) {
		int rc = listener_open(srv, &cfg->fwd[i]);
		if (rc < 0)
			return rc; /* caller closes srv */
	}
	srv->max_sessions = session_ceiling(srv, cfg);
	px_log(2, "session limits: %u in all, %u per user, idle timeout %u s",
	       srv->max_sessions, cfg->max_sessions_per_user, cfg->idle_timeout_sec);
	return 0;
}

void px_server_maybe_closed(px_server *srv)
{
	if (!srv->closing || srv->nsessions || srv->nftpds || srv->nxfers || srv->pending_closes)
		return;
	void (*cb)(void *) = srv->close_cb;
	void *data = srv->close_data;
	srv->close_cb = NULL;
	px_peeruid_close(srv->diag_fd);
	if (srv->reserve_fd >= 0)
		close(srv->reserve_fd);
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
		uv_close((uv_handle_t *)&l->poll, listener_closed_cb);
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
