/*
 * LIST, NLST and MLSD of the SFTP front end: one READDIR in flight, its
 * entries formatted (ftpparse/listing.c) into one buffer, written to the
 * data connection, and only then the next READDIR. Memory is one reply's
 * worth of lines, whatever the directory's size. "." and ".." are left
 * out; a name that holds CR or LF is left out too (it would forge lines).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/ftpd_fx.h"

static void list_readdir(px_fx *fx);

static void list_write_cb(uv_write_t *req, int status)
{
	px_fx *fx = req->data;
	fx->llen = 0;
	if (fx->stopping || fx->killed)
		return;
	if (status < 0) {
		fx_fail(fx, 426, "Data connection failed: %s", uv_strerror(status));
		return;
	}
	if (fx->single || fx->eof)
		fx_complete(fx);
	else
		list_readdir(fx);
}

static bool list_room(px_fx *fx, size_t need)
{
	if (fx->lcap - fx->llen >= need)
		return true;
	size_t cap = fx->llen + need + 4096;
	char *n = realloc(fx->lbuf, cap);
	if (!n)
		return false;
	fx->lbuf = n;
	fx->lcap = cap;
	return true;
}

/* One entry into lbuf. */
static void list_entry(px_fx *fx, const char *name, size_t nlen, const sfw_attrs *a, int64_t now)
{
	if ((nlen == 1 && name[0] == '.') || (nlen == 2 && name[0] == '.' && name[1] == '.'))
		return;
	if (!list_room(fx, nlen + 256))
		return;
	char *out = fx->lbuf + fx->llen;
	size_t cap = fx->lcap - fx->llen;
	fp_fileinfo fi;
	ftpd_fileinfo(&fi, name, nlen, a);
	int n;
	if (fx->kind == FX_NLST) {
		if (memchr(name, '\r', nlen) || memchr(name, '\n', nlen))
			return;
		memcpy(out, name, nlen);
		memcpy(out + nlen, "\r\n", 2);
		n = (int)nlen + 2;
	} else if (fx->kind == FX_MLSD) {
		n = fp_format_facts(out, cap, &fi, false);
	} else {
		n = fp_format_ls(out, cap, &fi, now);
	}
	if (n > 0)
		fx->llen += (size_t)n;
}

static void list_flush(px_fx *fx)
{
	if (fx->llen == 0) {
		if (fx->single || fx->eof)
			fx_complete(fx);
		else
			list_readdir(fx);
		return;
	}
	uv_buf_t b = uv_buf_init(fx->lbuf, (unsigned)fx->llen);
	fx->lwr.data = fx;
	fx->bytes += fx->llen;
	int rc = uv_write(&fx->lwr, (uv_stream_t *)fx->conn, &b, 1, list_write_cb);
	if (rc < 0)
		fx_fail(fx, 426, "Data connection failed: %s", uv_strerror(rc));
}

static void list_readdir_cb(mux_sftp *sftp, const sfw_reply *r, int err, void *data)
{
	px_fx *fx = data;
	(void)sftp;
	fx->inflight--;
	if (fx->stopping || fx->killed) {
		fx_settle(fx);
		return;
	}
	if (r && r->type == SFW_STATUS && r->status == MUX_FX_EOF) {
		fx->eof = true;
		list_flush(fx);
		return;
	}
	if (!r || r->type != SFW_NAME) {
		fx_fail_sftp(fx, r, err, false);
		return;
	}
	int64_t now = (int64_t)time(NULL);
	sfw_in names = r->names;
	for (uint32_t i = 0; i < r->count; i++) {
		sfw_name e;
		if (sfw_name_next(&names, &e) != 0) {
			fx_fail(fx, 451, "ftpssh: malformed directory entry from the SFTP server");
			return;
		}
		list_entry(fx, e.name, e.name_len, &e.attrs, now);
	}
	list_flush(fx);
}

static void list_readdir(px_fx *fx)
{
	int rc = mux_sftp_handle(ftpd_sftp(fx->s), SFW_READDIR, fx->handle, fx->hlen,
				 list_readdir_cb, fx);
	if (rc < 0) {
		fx_fail(fx, 451, "ftpssh: cannot send the SFTP request (%s)", mux_strerror(rc));
		return;
	}
	fx->inflight++;
}

void fx_list_begin(px_fx *fx)
{
	if (fx->single) {
		const char *name = ftpd_base_name(fx->path);
		list_entry(fx, name, strlen(name), &fx->single_attrs, (int64_t)time(NULL));
		list_flush(fx);
		return;
	}
	list_readdir(fx);
}
