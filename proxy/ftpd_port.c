/*
 * Data ports of the SFTP front end and the start of a transfer.
 *
 * Passive: a one-shot listener on the control connection's local address
 * (kernel-chosen port) that takes one connection from a loopback address
 * owned by the control connection's uid. The check fails closed: an owner
 * that cannot be found is refused (unless --no-uid-check), since the
 * files behind this port are the SSH user's. Active: after connecting to
 * the client's loopback port, the owner of the socket that answered must
 * be that uid too. Either way the port waits data_timeout_sec.
 *
 * fx_start opens the SFTP handle (OPEN or OPENDIR, then FSTAT for RETR
 * and APPE) before answering 150, so a missing or unreadable file gets a
 * plain 550 and no data connection is used up.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/ftpd_fx.h"

bool fx_running(const px_fx *fx)
{
	return fx->started && !fx->finished;
}

uint64_t fx_bytes(const px_fx *fx)
{
	return fx->bytes;
}

px_fx *fx_list_next(const px_fx *fx)
{
	return fx->lnext;
}

void fx_kill(px_fx *fx)
{
	if (fx->killed)
		return;
	fx->killed = true;
	if (fx->s->fx == fx)
		fx->s->fx = NULL;
	fx_close_handles(fx);
	fx_settle(fx);
}

void fx_abort(px_fx *fx)
{
	if (fx_running(fx))
		fx_fail(fx, 426, "Transfer aborted; data connection closed");
}

static void timeout_cb(uv_timer_t *t)
{
	px_fx *fx = t->data;
	if (fx->connected || fx->finished || fx->killed)
		return;
	unsigned secs = ftpd_cfg(fx->s)->data_timeout_sec;
	if (fx->started) {
		fx_fail(fx, 425, "No data connection within %u s", secs);
		return;
	}
	px_log(2, "[#%u.%u] no data connection within %u s; port closed", fx->s->id, fx->xid,
	       secs);
	fx_kill(fx);
}

static px_fx *fx_new(px_ftpd *s, unsigned xid)
{
	px_fx *fx = calloc(1, sizeof(*fx));
	if (!fx)
		return NULL;
	fx->s = s;
	fx->xid = xid;
	uv_timer_init(s->srv->loop, &fx->timer);
	fx->timer.data = fx;
	fx->handles = 1;
	fx->lnext = s->fxs;
	s->fxs = fx;
	uv_timer_start(&fx->timer, timeout_cb, ftpd_cfg(s)->data_timeout_sec * 1000ull, 0);
	return fx;
}

/* ---- the data connection ------------------------------------------------- */

static void reject_closed_cb(uv_handle_t *h)
{
	free(h);
}

/* May the owner of the socket at peer (seen from ours) use this session's
 * data? Fails closed. */
static bool fx_owner_ok(px_fx *fx, const struct sockaddr_storage *ours,
			const struct sockaddr_storage *peer)
{
	if (ftpd_cfg(fx->s)->no_uid_check)
		return true;
	uid_t uid;
	int rc = px_peer_uid(fx->s->srv->diag_fd, ours, peer, &uid);
	if (rc != 0) {
		px_log(0, "[#%u.%u] cannot tell who owns the data connection (%s): refused",
		       fx->s->id, fx->xid, uv_strerror(rc));
		return false;
	}
	if ((long)uid != ftpd_client_uid(fx->s)) {
		px_log(0, "[#%u.%u] data connection of uid %ld refused: the session belongs to "
			  "uid %ld",
		       fx->s->id, fx->xid, (long)uid, ftpd_client_uid(fx->s));
		return false;
	}
	return true;
}

static void connection_cb(uv_stream_t *listener, int status)
{
	px_fx *fx = listener->data;
	if (status < 0) {
		px_log(0, "[#%u.%u] data port: %s", fx->s->id, fx->xid, uv_strerror(status));
		return;
	}
	if (fx->finished || fx->killed || fx->conn)
		return;
	uv_tcp_t *c = malloc(sizeof(*c));
	if (!c)
		return;
	uv_tcp_init(fx->s->srv->loop, c);
	c->data = fx;
	struct sockaddr_storage ours, peer;
	int lo = sizeof(ours), lp = sizeof(peer);
	if (uv_accept(listener, (uv_stream_t *)c) != 0 ||
	    uv_tcp_getsockname(c, (struct sockaddr *)&ours, &lo) != 0 ||
	    uv_tcp_getpeername(c, (struct sockaddr *)&peer, &lp) != 0 || !px_addr_is_loopback(&peer) ||
	    !fx_owner_ok(fx, &ours, &peer)) {
		uv_close((uv_handle_t *)c, reject_closed_cb);
		return; /* keep waiting for the real client */
	}
	fx->conn = c;
	fx->handles++;
	fx->connected = true;
	uv_tcp_nodelay(c, 1);
	uv_timer_stop(&fx->timer);
	uv_close((uv_handle_t *)&fx->listener, fx_handle_closed_cb);
	fx->listener_open = false;
	px_log(2, "[#%u.%u] data connection accepted", fx->s->id, fx->xid);
	fx_begin(fx);
}

px_fx *fx_passive(px_ftpd *s, unsigned xid, const struct sockaddr_storage *local,
		  uint16_t *port, int *err)
{
	px_fx *fx = fx_new(s, xid);
	struct sockaddr_storage a;
	int rc, len = sizeof(a);
	if (!fx) {
		*err = UV_ENOMEM;
		return NULL;
	}
	uv_tcp_init(s->srv->loop, &fx->listener);
	fx->listener.data = fx;
	fx->listener_open = true;
	fx->handles++;
	memcpy(&a, local, sizeof(a));
	if (a.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a)->sin6_port = 0;
	else
		((struct sockaddr_in *)&a)->sin_port = 0;
	if ((rc = uv_tcp_bind(&fx->listener, (struct sockaddr *)&a, 0)) < 0 ||
	    (rc = uv_listen((uv_stream_t *)&fx->listener, 4, connection_cb)) < 0 ||
	    (rc = uv_tcp_getsockname(&fx->listener, (struct sockaddr *)&a, &len)) < 0) {
		*err = rc;
		fx_kill(fx);
		return NULL;
	}
	*port = ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
					      : ((struct sockaddr_in *)&a)->sin_port);
	px_log(2, "[#%u.%u] passive data port %u", s->id, xid, *port);
	return fx;
}

px_fx *fx_active(px_ftpd *s, unsigned xid, const struct sockaddr_storage *addr)
{
	px_fx *fx = fx_new(s, xid);
	if (!fx)
		return NULL;
	fx->active = true;
	memcpy(&fx->addr, addr, sizeof(fx->addr));
	return fx;
}

static void active_connected_cb(uv_connect_t *req, int status)
{
	px_fx *fx = req->data;
	if (status == UV_ECANCELED || fx->finished || fx->killed)
		return;
	if (status < 0) {
		fx_fail(fx, 425, "Cannot open the data connection to your port: %s",
			uv_strerror(status));
		return;
	}
	struct sockaddr_storage ours;
	int len = sizeof(ours);
	if (uv_tcp_getsockname(fx->conn, (struct sockaddr *)&ours, &len) != 0 ||
	    !fx_owner_ok(fx, &ours, &fx->addr)) {
		fx_fail(fx, 425, "ftpssh: that port belongs to another local user");
		return;
	}
	fx->connected = true;
	uv_tcp_nodelay(fx->conn, 1);
	uv_timer_stop(&fx->timer);
	fx_begin(fx);
}

/* ---- start ------------------------------------------------------------------ */

/* The handle is open: 150, then connect (active) or wait for the client. */
static void fx_ready(px_fx *fx)
{
	static const char *names[] = {"", "RETR", "STOR", "APPE", "LIST", "NLST", "MLSD"};
	fx->ready = true;
	if (fx->kind == FX_RETR && fx->single_attrs.flags & SFW_ATTR_SIZE)
		ftpd_reply(fx->s, 150, "Opening %s mode data connection for %s (%llu bytes)",
			   fx->ascii ? "ASCII" : "BINARY", fx->path,
			   (unsigned long long)fx->single_attrs.size);
	else
		ftpd_reply(fx->s, 150, "Opening %s mode data connection for %s %s",
			   fx->ascii ? "ASCII" : "BINARY", names[fx->kind], fx->path);
	if (fx->active && !fx->conn) {
		uv_tcp_t *c = malloc(sizeof(*c));
		if (!c) {
			fx_fail(fx, 425, "ftpssh: out of memory");
			return;
		}
		uv_tcp_init(fx->s->srv->loop, c);
		c->data = fx;
		fx->conn = c;
		fx->handles++;
		fx->creq.data = fx;
		int rc = uv_tcp_connect(&fx->creq, c, (const struct sockaddr *)&fx->addr,
					active_connected_cb);
		if (rc < 0) {
			fx_fail(fx, 425, "Cannot open the data connection to your port: %s",
				uv_strerror(rc));
			return;
		}
	}
	fx_begin(fx);
}

static void fstat_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_fx *fx = data;
	(void)sftp;
	fx->inflight--;
	if (fx->stopping || fx->killed) {
		fx_settle(fx);
		return;
	}
	if (!r || r->type != SFW_ATTRS) {
		fx_fail_sftp(fx, r, err, fx->kind != FX_RETR);
		return;
	}
	const sfw_attrs *a = &r->attrs;
	if ((a->flags & SFW_ATTR_PERMISSIONS) && (a->perm & 0170000) != 0100000) {
		fx_fail(fx, 550, "%s: not a plain file", fx->path);
		return;
	}
	fx->single_attrs = *a;
	if (fx->kind == FX_APPE)
		fx->offset = (a->flags & SFW_ATTR_SIZE) ? a->size : 0;
	fx_ready(fx);
}

static void single_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_fx *fx = data;
	(void)sftp;
	(void)err;
	fx->inflight--;
	if (fx->stopping || fx->killed) {
		fx_settle(fx);
		return;
	}
	if (r && r->type == SFW_ATTRS &&
	    !((r->attrs.flags & SFW_ATTR_PERMISSIONS) && (r->attrs.perm & 0170000) == 0040000)) {
		fx->single = true;
		fx->single_attrs = r->attrs;
		fx->code = 0; /* OPENDIR's error no longer applies */
		fx_ready(fx);
		return;
	}
	fx_fail(fx, fx->code, "%s", fx->final_msg); /* OPENDIR's own error */
}

static void open_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_fx *fx = data;
	(void)sftp;
	fx->inflight--;
	if (r && r->type == SFW_HANDLE) {
		memcpy(fx->handle, r->data, r->data_len);
		fx->hlen = r->data_len;
		fx->have_handle = true;
	}
	if (fx->stopping || fx->killed) {
		fx_settle(fx);
		return;
	}
	if (!fx->have_handle) {
		bool list = fx->kind == FX_LIST || fx->kind == FX_NLST;
		if (list && r) {
			/* LIST of a file lists that file */
			fx->code = ftpd_fx_code(r->status, r->msg, r->msg_len, false);
			snprintf(fx->final_msg, sizeof(fx->final_msg), "%s: %.*s", fx->path,
				 (int)r->msg_len, r->msg_len ? r->msg : "cannot list");
			if (mux_sftp_path(ftpd_sftp(fx->s), SFW_STAT, fx->path, single_cb, fx) == 0) {
				fx->inflight++;
				return;
			}
		}
		fx_fail_sftp(fx, r, err, fx->kind == FX_STOR || fx->kind == FX_APPE);
		return;
	}
	if (fx->kind == FX_RETR || fx->kind == FX_APPE) {
		if (mux_sftp_handle(ftpd_sftp(fx->s), SFW_FSTAT, fx->handle, fx->hlen, fstat_cb,
				    fx) == 0) {
			fx->inflight++;
			return;
		}
		fx_fail(fx, 451, "ftpssh: cannot send the SFTP request");
		return;
	}
	fx_ready(fx);
}

void fx_start(px_fx *fx, enum fx_kind kind, const char *path, uint64_t offset, bool ascii,
	      const char *label)
{
	mux_sftp *sftp = ftpd_sftp(fx->s);
	int rc;
	fx->started = true;
	fx->s->srv->nftpd_xfers++; /* until fx_free */
	fx->kind = kind;
	fx->offset = offset;
	fx->ascii = ascii && (kind == FX_RETR || kind == FX_STOR || kind == FX_APPE);
	fx->t0 = uv_now(fx->s->srv->loop);
	snprintf(fx->path, sizeof(fx->path), "%s", path);
	snprintf(fx->label, sizeof(fx->label), "%s", label);
	switch (kind) {
	case FX_RETR:
		rc = mux_sftp_open(sftp, path, SFW_FXF_READ, NULL, open_cb, fx);
		break;
	case FX_STOR:
		rc = mux_sftp_open(sftp, path,
				   SFW_FXF_WRITE | SFW_FXF_CREAT | (offset ? 0 : SFW_FXF_TRUNC), NULL,
				   open_cb, fx);
		break;
	case FX_APPE:
		rc = mux_sftp_open(sftp, path, SFW_FXF_WRITE | SFW_FXF_CREAT | SFW_FXF_APPEND, NULL,
				   open_cb, fx);
		break;
	default:
		rc = mux_sftp_path(sftp, SFW_OPENDIR, path, open_cb, fx);
		break;
	}
	if (rc < 0) {
		fx_fail(fx, 451, "ftpssh: cannot send the SFTP request (%s)", mux_strerror(rc));
		return;
	}
	fx->inflight++;
}
