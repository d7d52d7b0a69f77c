/*
 * SFTP requests (see sftp.h): each builder checks its arguments, takes a
 * slot and a packet on the view's channel (sftp_chan.c), encodes its
 * fields and sends. Channels, views, slots and replies: sftp_chan.c.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "mux/sftp_chan.h"

#define PATH_CAP 4096

int mux_sftp_path(mux_sftp *s, int type, const char *path, mux_sftp_cb cb, void *data)
{
	struct sftp_reqb b;
	size_t pl = strlen(path);
	if (pl > PATH_CAP)
		return UV_EINVAL;
	int err = sftp__begin(s, type, pl + 16, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, path, pl);
	if (type == SFW_MKDIR) {
		sfw_attrs a = {0};
		sfw_put_attrs(&b.o, &a);
	}
	return sftp__send(s, &b, cb, data);
}

int mux_sftp_open(mux_sftp *s, const char *path, uint32_t pflags, const sfw_attrs *a,
		  mux_sftp_cb cb, void *data)
{
	struct sftp_reqb b;
	size_t pl = strlen(path);
	sfw_attrs none = {0};
	if (pl > PATH_CAP)
		return UV_EINVAL;
	int err = sftp__begin(s, SFW_OPEN, pl + 64, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, path, pl);
	sfw_put_u32(&b.o, pflags);
	sfw_put_attrs(&b.o, a ? a : &none);
	return sftp__send(s, &b, cb, data);
}

int mux_sftp_handle(mux_sftp *s, int type, const char *h, size_t hlen, mux_sftp_cb cb,
		    void *data)
{
	struct sftp_reqb b;
	if (hlen > SFW_HANDLE_MAX)
		return UV_EINVAL;
	if (!sftp__holds(s, h, hlen))
		return UV_EBADF;
	int err = sftp__begin(s, type, hlen + 8, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, h, hlen);
	err = sftp__send(s, &b, cb, data);
	if (err == 0 && type == SFW_CLOSE)
		sftp__forget_handle(s, h, hlen);
	return err;
}

int mux_sftp_read(mux_sftp *s, const char *h, size_t hlen, uint64_t off, uint32_t len,
		  mux_sftp_cb cb, void *data)
{
	struct sftp_reqb b;
	if (hlen > SFW_HANDLE_MAX || len > MUX_SFTP_CHUNK)
		return UV_EINVAL;
	if (!sftp__holds(s, h, hlen))
		return UV_EBADF;
	int err = sftp__begin(s, SFW_READ, hlen + 16, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, h, hlen);
	sfw_put_u64(&b.o, off);
	sfw_put_u32(&b.o, len);
	return sftp__send(s, &b, cb, data);
}

/* A WRITE's fields after its id: string handle, uint64 offset and the
 * data string's length. */
#define WRITE_FIELDS(hlen) (4 + (hlen) + 8 + 4)

size_t mux_sftp_write_fill(size_t hlen)
{
	/* uint32 length, byte type, uint32 id, then the fields and the data */
	size_t head = 4 + 1 + 4 + WRITE_FIELDS(hlen);
	size_t n = 2 * MUX_PACKET_DATA - head;
	return n < MUX_SFTP_CHUNK ? n : MUX_SFTP_CHUNK;
}

int mux_sftp_write(mux_sftp *s, const char *h, size_t hlen, uint64_t off, const void *buf,
		   size_t len, mux_sftp_cb cb, void *data)
{
	struct sftp_reqb b;
	if (hlen > SFW_HANDLE_MAX || len > MUX_SFTP_CHUNK)
		return UV_EINVAL;
	if (!sftp__holds(s, h, hlen))
		return UV_EBADF;
	int err = sftp__begin(s, SFW_WRITE, WRITE_FIELDS(hlen) + len, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, h, hlen);
	sfw_put_u64(&b.o, off);
	sfw_put_str(&b.o, buf, len);
	return sftp__send(s, &b, cb, data);
}

int mux_sftp_rename(mux_sftp *s, const char *from, const char *to, mux_sftp_cb cb, void *data)
{
	static const char ext[] = "posix-rename@openssh.com";
	struct sftp_reqb b;
	size_t fl = strlen(from), tl = strlen(to);
	if (fl > PATH_CAP || tl > PATH_CAP)
		return UV_EINVAL;
	int type = sftp__posix_rename(s) ? SFW_EXTENDED : SFW_RENAME;
	int err = sftp__begin(s, type, fl + tl + sizeof(ext) + 16, &b);
	if (err)
		return err;
	if (sftp__posix_rename(s))
		sfw_put_cstr(&b.o, ext);
	sfw_put_str(&b.o, from, fl);
	sfw_put_str(&b.o, to, tl);
	return sftp__send(s, &b, cb, data);
}

int mux_sftp_setstat(mux_sftp *s, const char *path, const sfw_attrs *a, mux_sftp_cb cb,
		     void *data)
{
	struct sftp_reqb b;
	size_t pl = strlen(path);
	if (pl > PATH_CAP)
		return UV_EINVAL;
	int err = sftp__begin(s, SFW_SETSTAT, pl + 48, &b);
	if (err)
		return err;
	sfw_put_str(&b.o, path, pl);
	sfw_put_attrs(&b.o, a);
	return sftp__send(s, &b, cb, data);
}
