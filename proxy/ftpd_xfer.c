/*
 * Data connections and transfers of the SFTP front end.
 *
 * A px_fx is made by PASV/EPSV (a one-shot loopback listener on the
 * control connection's local address, kernel-chosen port, owner checked
 * like every ftpssh data port) or by PORT/EPRT (an address to connect to
 * when the transfer starts, its owner checked after connecting). The
 * transfer command opens the SFTP handle first, so a missing file gets
 * its 550 before any 150; then, once the data connection stands, bytes
 * move:
 *
 * RETR: a ring of FX_SLOTS reads of MUX_SFTP_CHUNK in flight (OpenSSH's
 * sftp keeps 64 x 32 KiB); replies may come in any order, data goes to
 * the client in offset order, and a slot is asked again only after its
 * bytes were written to the client, so a slow client stops the reads and
 * memory stays at FX_SLOTS chunks. A short read drops the reads after it
 * and asks again from where it ended.
 * STOR/APPE: client bytes are gathered into chunks and written with up to
 * FX_SLOTS WRITE requests in flight; reading the client stops at that
 * bound. The final CLOSE's status is the upload's status.
 * LIST/NLST/MLSD (ftpd_list.c): one READDIR at a time, its entries
 * formatted and written before the next is asked, so a directory of any
 * size streams in bounded memory.
 *
 * Ending: success -> CLOSE the handle and shut the connection down, then
 * 226. Failure or ABOR -> reply at once, close the connection, and close
 * the handle once the requests in flight have come back. Kill (the
 * session is closing its SFTP client too) -> close the handles only. The
 * object is freed once its uv handles are closed and no request is out.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/ftpd_fx.h"

/* ---- ending -------------------------------------------------------------- */

void fx_handle_closed_cb(uv_handle_t *h)
{
	px_fx *fx = h->data;
	if (h != (uv_handle_t *)&fx->listener && h != (uv_handle_t *)&fx->timer)
		free(h); /* the heap data connection */
	fx->handles--;
	fx_settle(fx);
}

void fx_close_handles(px_fx *fx)
{
	if (fx->handles_closing)
		return;
	fx->handles_closing = true;
	uv_close((uv_handle_t *)&fx->timer, fx_handle_closed_cb);
	if (fx->listener_open)
		uv_close((uv_handle_t *)&fx->listener, fx_handle_closed_cb);
	fx->listener_open = false;
	if (fx->conn)
		uv_close((uv_handle_t *)fx->conn, fx_handle_closed_cb);
}

static void fx_free(px_fx *fx)
{
	px_ftpd *s = fx->s;
	px_fx **pp = &s->fxs;
	while (*pp && *pp != fx)
		pp = &(*pp)->lnext;
	if (*pp)
		*pp = fx->lnext;
	if (fx->started)
		s->srv->nftpd_xfers--;
	for (int i = 0; i < FX_SLOTS; i++) {
		free(fx->slots[i].buf);
		free(fx->slots[i].wbuf);
	}
	free(fx->sbuf);
	free(fx->lbuf);
	/* unlinked: the session only compares the pointer */
	ftpd_fx_freed(s, fx);
	free(fx);
}

static void fx_handle_close_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_fx *fx = data;
	(void)sftp;
	(void)r;
	(void)err;
	fx->inflight--;
	fx_settle(fx);
}

void fx_settle(px_fx *fx)
{
	if (!fx->finished && !fx->killed)
		return;
	if (!fx->killed && fx->inflight == 0 && fx->have_handle) {
		/* a failed transfer's handle, now that nothing refers to it */
		fx->have_handle = false;
		if (mux_sftp_handle(ftpd_sftp(fx->s), SFW_CLOSE, fx->handle, fx->hlen,
				    fx_handle_close_cb, fx) == 0)
			fx->inflight++;
	}
	if (fx->handles == 0 && (fx->killed || fx->inflight == 0))
		fx_free(fx);
}

/* The transfer's command is answered (226 or an error). */
static void fx_end(px_fx *fx)
{
	px_ftpd *s = fx->s;
	if (fx->finished)
		return;
	fx->finished = true;
	fx->stopping = true;
	if (fx->started) {
		char sz[32];
		double secs = (uv_now(s->srv->loop) - fx->t0) / 1000.0;
		px_fmt_bytes(sz, sizeof(sz), (double)fx->bytes);
		px_log(1, "[#%u.%u] %s: %s in %.2f s, %.1f MB/s%s", s->id, fx->xid, fx->label, sz,
		       secs, secs > 0 ? fx->bytes / secs / 1e6 : 0.0, fx->code ? " (failed)" : "");
		s->srv->bytes_done += fx->bytes;
		s->srv->xfers_done++;
	}
	fx_close_handles(fx);
	ftpd_fx_finished(s, fx);
	fx_settle(fx);
}

void fx_fail(px_fx *fx, int code, const char *fmt, ...)
{
	char msg[FTPD_PATH_MAX + 200];
	va_list ap;
	if (fx->finished || fx->killed)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fx->code = code;
	if (px_log_enabled(fx->started ? 1 : 2)) {
		char pr[300];
		fp_printable(pr, sizeof(pr), msg, strlen(msg)); /* names are the peer's text */
		px_log(fx->started ? 1 : 2, "[#%u.%u] %s: %d %s", fx->s->id, fx->xid,
		       fx->label[0] ? fx->label : "data port", code, pr);
	}
	ftpd_reply(fx->s, code, "%s", msg);
	fx_end(fx);
}

/* SFTP said no (r) or the channel failed (r NULL). */
void fx_fail_sftp(px_fx *fx, const sfw_reply *r, int err, bool store)
{
	if (!r) {
		fx_fail(fx, 451, "ftpssh: SFTP channel lost (%s)", mux_strerror(err));
		return;
	}
	fx_fail(fx, ftpd_fx_code(r->status, r->msg, r->msg_len, store), "%s: %.*s", fx->path,
		(int)r->msg_len, r->msg_len ? r->msg : "failed");
}

static void fx_try_final(px_fx *fx)
{
	if (!fx->close_done || !fx->shut_done || fx->finished)
		return;
	if (fx->code) {
		fx_fail(fx, fx->code, "%s", fx->final_msg);
		return;
	}
	ftpd_reply(fx->s, 226, "Transfer complete (%llu bytes)", (unsigned long long)fx->bytes);
	fx_end(fx);
}

static void fx_final_close_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_fx *fx = data;
	(void)sftp;
	(void)err;
	fx->inflight--;
	if (fx->finished || fx->killed) {
		fx_settle(fx);
		return;
	}
	if (!ftpd_reply_ok(r) && (fx->kind == FX_STOR || fx->kind == FX_APPE)) {
		/* the upload's last chance to fail (quota, NFS, ...) */
		fx->code = r ? ftpd_fx_code(r->status, r->msg, r->msg_len, true) : 451;
		snprintf(fx->final_msg, sizeof(fx->final_msg), "%s: closing failed: %.*s",
			 fx->path, r ? (int)r->msg_len : 0, r ? r->msg : "");
	}
	fx->close_done = true;
	fx_try_final(fx);
}

static void fx_shut_cb(uv_shutdown_t *req, int status)
{
	px_fx *fx = req->data;
	(void)status; /* the bytes are written; a client that left early is its business */
	fx->shut_done = true;
	if (!fx->finished && !fx->killed)
		fx_try_final(fx);
}

void fx_complete(px_fx *fx)
{
	if (fx->completing || fx->finished)
		return;
	fx->completing = true;
	fx->close_done = fx->shut_done = true;
	if (fx->have_handle) {
		fx->have_handle = false;
		int rc = mux_sftp_handle(ftpd_sftp(fx->s), SFW_CLOSE, fx->handle, fx->hlen,
					 fx_final_close_cb, fx);
		if (rc == 0) {
			fx->inflight++;
			fx->close_done = false;
		} else if (fx->kind == FX_STOR || fx->kind == FX_APPE) {
			/* an upload is done when its CLOSE says so; the
			 * session's end closes the handle */
			fx->code = 451;
			snprintf(fx->final_msg, sizeof(fx->final_msg),
				 "%s: closing failed: cannot send the SFTP close (%s)", fx->path,
				 mux_strerror(rc));
		}
	}
	if (fx->conn && fx->connected && fx->kind != FX_STOR && fx->kind != FX_APPE) {
		fx->shut.data = fx;
		if (uv_shutdown(&fx->shut, (uv_stream_t *)fx->conn, fx_shut_cb) == 0)
			fx->shut_done = false;
	}
	fx_try_final(fx);
}

/* ---- RETR ----------------------------------------------------------------- */

#define SLOT(fx, i) (&(fx)->slots[((fx)->head + (i)) % FX_SLOTS])

static void retr_pump(px_fx *fx);

static void retr_drop_after(px_fx *fx, unsigned from)
{
	for (unsigned j = from; j < fx->count; j++) {
		struct fx_slot *sl = SLOT(fx, j);
		if (sl->st == SL_WAIT)
			sl->dropped = true;
		else if (sl->st != SL_WRITING)
			sl->st = SL_FREE;
	}
}

static void retr_read_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	struct fx_slot *sl = data;
	px_fx *fx = sl->fx;
	(void)sftp;
	fx->inflight--;
	if (sl->dropped || fx->stopping || fx->killed) {
		sl->dropped = false;
		sl->st = SL_FREE;
		if (fx->stopping || fx->killed)
			fx_settle(fx);
		else
			retr_pump(fx);
		return;
	}
	if (!r) {
		sl->st = SL_ERR;
		sl->status = MUX_FX_CONNECTION_LOST;
		snprintf(sl->msg, sizeof(sl->msg), "SFTP channel lost (%s)", mux_strerror(err));
	} else if (r->type == SFW_DATA && r->data_len <= sl->want && r->data_len > 0) {
		memcpy(sl->buf, r->data, r->data_len);
		sl->got = (uint32_t)r->data_len;
		sl->st = SL_READY;
	} else if (r->type == SFW_STATUS && r->status == MUX_FX_EOF) {
		sl->st = SL_EOF;
	} else {
		sl->st = SL_ERR;
		sl->status = r->type == SFW_STATUS ? r->status : MUX_FX_BAD_MESSAGE;
		snprintf(sl->msg, sizeof(sl->msg), "%.*s", (int)r->msg_len,
			 r->msg_len ? r->msg : "read failed");
	}
	retr_pump(fx);
}

static void retr_write_cb(uv_write_t *req, int status)
{
	struct fx_slot *sl = req->data;
	px_fx *fx = sl->fx;
	free(sl->wbuf);
	sl->wbuf = NULL;
	sl->st = SL_FREE;
	if (fx->stopping || fx->killed)
		return;
	if (status < 0) {
		fx_fail(fx, 426, "Data connection failed: %s", uv_strerror(status));
		return;
	}
	fx->bytes += sl->got;
	retr_pump(fx);
}

/* LF -> CR LF for TYPE A. */
static int retr_write(px_fx *fx, struct fx_slot *sl)
{
	uv_buf_t b = uv_buf_init(sl->buf, sl->got);
	if (fx->ascii) {
		sl->wbuf = malloc(2 * (size_t)sl->got);
		if (!sl->wbuf)
			return UV_ENOMEM;
		size_t o = 0;
		for (uint32_t i = 0; i < sl->got; i++) {
			if (sl->buf[i] == '\n' && !(i > 0 ? sl->buf[i - 1] == '\r' : fx->pending_cr))
				sl->wbuf[o++] = '\r';
			sl->wbuf[o++] = sl->buf[i];
		}
		fx->pending_cr = sl->buf[sl->got - 1] == '\r';
		b = uv_buf_init(sl->wbuf, (unsigned)o);
	}
	sl->wr.data = sl;
	sl->st = SL_WRITING;
	return uv_write(&sl->wr, (uv_stream_t *)fx->conn, &b, 1, retr_write_cb);
}

static void retr_pump(px_fx *fx)
{
	if (fx->stopping || fx->killed || !fx->connected || fx->completing)
		return;
	while (fx->wpos < fx->count) {
		struct fx_slot *sl = SLOT(fx, fx->wpos);
		if (sl->st == SL_WAIT)
			break;
		if (sl->st == SL_FREE || sl->st == SL_WRITING) {
			fx->wpos++;
			continue;
		}
		if (sl->st == SL_ERR) {
			fx_fail(fx, ftpd_fx_code(sl->status, sl->msg, strlen(sl->msg), false),
				"%s: %s", fx->path, sl->msg);
			return;
		}
		if (sl->st == SL_EOF) {
			fx->eof = true;
			retr_drop_after(fx, fx->wpos + 1);
			sl->st = SL_FREE;
			fx->wpos++;
			continue;
		}
		if (sl->got < sl->want) {
			/* short read: ask again from where it ended */
			retr_drop_after(fx, fx->wpos + 1);
			fx->offset = sl->off + sl->got;
		}
		int rc = retr_write(fx, sl);
		if (rc < 0) {
			sl->st = SL_FREE;
			fx_fail(fx, 426, "Data connection failed: %s", uv_strerror(rc));
			return;
		}
		fx->wpos++;
	}
	while (fx->count > 0 && SLOT(fx, 0)->st == SL_FREE) {
		fx->head = (fx->head + 1) % FX_SLOTS;
		fx->count--;
		if (fx->wpos > 0)
			fx->wpos--;
	}
	while (!fx->eof && fx->count < FX_SLOTS) {
		struct fx_slot *sl = SLOT(fx, fx->count);
		if (!sl->buf && !(sl->buf = malloc(MUX_SFTP_CHUNK))) {
			fx_fail(fx, 451, "ftpssh: out of memory");
			return;
		}
		sl->fx = fx;
		sl->st = SL_WAIT;
		sl->dropped = false;
		sl->off = fx->offset;
		sl->want = MUX_SFTP_CHUNK;
		sl->got = 0;
		int rc = mux_sftp_read(ftpd_sftp(fx->s), fx->handle, fx->hlen, sl->off, sl->want,
				       retr_read_cb, sl);
		if (rc < 0) {
			sl->st = SL_FREE;
			fx_fail(fx, 451, "ftpssh: cannot send the SFTP read (%s)", mux_strerror(rc));
			return;
		}
		fx->inflight++;
		fx->offset += sl->want;
		fx->count++;
	}
	if (fx->eof && fx->count == 0)
		fx_complete(fx);
}

/* ---- STOR / APPE ---------------------------------------------------------- */

static void stor_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void stor_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void stor_write_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_fx *fx = data;
	(void)sftp;
	fx->inflight--;
	if (fx->stopping || fx->killed) {
		fx_settle(fx);
		return;
	}
	if (!ftpd_reply_ok(r)) {
		fx_fail_sftp(fx, r, err, true);
		return;
	}
	if (fx->eof) {
		if (fx->inflight == 0)
			fx_complete(fx);
	} else if (!fx->reading && fx->inflight < FX_SLOTS) {
		if (uv_read_start((uv_stream_t *)fx->conn, stor_alloc_cb, stor_read_cb) == 0)
			fx->reading = true;
	}
}

/* Send what was gathered; TYPE A turns CR LF into LF (a CR at the end of
 * a chunk waits for the next byte). */
static void stor_flush(px_fx *fx, bool at_eof)
{
	size_t len = fx->slen, o = 0;
	bool carry = false;
	if (fx->ascii) {
		for (size_t i = 0; i < len; i++) {
			if (fx->sbuf[i] == '\r') {
				if (i + 1 < len && fx->sbuf[i + 1] == '\n')
					continue;
				if (i + 1 == len && !at_eof) {
					carry = true;
					break;
				}
			}
			fx->sbuf[o++] = fx->sbuf[i];
		}
		len = o;
	}
	fx->bytes += fx->slen - (carry ? 1 : 0);
	fx->slen = 0;
	if (len > 0) {
		int rc = mux_sftp_write(ftpd_sftp(fx->s), fx->handle, fx->hlen, fx->offset, fx->sbuf,
					len, stor_write_cb, fx);
		if (rc < 0) {
			fx_fail(fx, 451, "ftpssh: cannot send the SFTP write (%s)", mux_strerror(rc));
			return;
		}
		fx->inflight++;
		fx->offset += len;
	}
	if (carry) {
		fx->sbuf[0] = '\r';
		fx->slen = 1;
	}
	if (fx->inflight >= FX_SLOTS && fx->reading) {
		uv_read_stop((uv_stream_t *)fx->conn);
		fx->reading = false;
	}
}

static void stor_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	px_fx *fx = h->data;
	(void)suggested;
	if (!fx->sbuf)
		fx->sbuf = malloc(MUX_SFTP_CHUNK);
	/* WRITEs of mux_sftp_write_fill() bytes: a 64 KiB one went as three
	 * SSH packets, the last of ~170 bytes */
	size_t chunk = mux_sftp_write_fill(fx->hlen);
	*buf = fx->sbuf ? uv_buf_init(fx->sbuf + fx->slen, (unsigned)(chunk - fx->slen))
			: uv_buf_init(NULL, 0);
}

static void stor_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	px_fx *fx = st->data;
	(void)buf;
	if (fx->stopping || fx->killed)
		return;
	if (n > 0) {
		fx->slen += (size_t)n;
		if (fx->slen == mux_sftp_write_fill(fx->hlen))
			stor_flush(fx, false);
		return;
	}
	if (n == UV_EOF) {
		uv_read_stop(st);
		fx->reading = false;
		fx->eof = true;
		stor_flush(fx, true);
		if (!fx->stopping && fx->inflight == 0)
			fx_complete(fx);
		return;
	}
	if (n < 0)
		fx_fail(fx, 426, "Data connection failed: %s", uv_strerror((int)n));
}

/* ---- starting ---------------------------------------------------------------- */

/* Both the 150 and the data connection are there: move bytes. */
void fx_begin(px_fx *fx)
{
	if (!fx->ready || !fx->connected || fx->begun || fx->finished)
		return;
	fx->begun = true;
	fx->t0 = uv_now(fx->s->srv->loop);
	switch (fx->kind) {
	case FX_RETR:
		retr_pump(fx);
		break;
	case FX_STOR:
	case FX_APPE:
		if (uv_read_start((uv_stream_t *)fx->conn, stor_alloc_cb, stor_read_cb) == 0)
			fx->reading = true;
		else
			fx_fail(fx, 426, "Data connection failed");
		break;
	default:
		fx_list_begin(fx);
		break;
	}
}
