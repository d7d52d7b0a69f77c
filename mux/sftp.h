/*
 * An asynchronous SFTP v3 client on an "sftp" subsystem channel.
 *
 * Not libssh2's sftp API: that one waits for each reply before the next
 * request, and a transfer needs many requests in flight (OpenSSH's sftp
 * keeps up to 64). Here every request is a packet queued on the channel
 * with a callback; replies are matched by id and may come in any order.
 * A client's requests in flight are bounded (MUX_SFTP_MAX_INFLIGHT);
 * callers bound their own share (a transfer keeps at most a few dozen).
 *
 * Clients of one connection share channels: sshd counts each subsystem
 * channel against MaxSessions (10 by default), so a client takes a
 * channel of its own only while the connection has fewer than 8 and the
 * server has not refused one, and none is idle; after that it joins the
 * answering channel with the fewest clients (none answering: refused).
 * A channel whose last client left waits 15 s for the next. A channel's
 * failure fails every client on it. Closing a client CLOSEs the handles
 * it still holds.
 *
 * Reply callbacks get the decoded packet (mux/sftp_wire.h), valid only
 * during the call, or err < 0 and no packet when the channel failed. After
 * mux_sftp_close() no callback runs but the closed one.
 */
#ifndef MUX_SFTP_H
#define MUX_SFTP_H

#include "mux/mux.h"
#include "mux/sftp_wire.h"

#define MUX_SFTP_MAX_INFLIGHT 128
/* Largest data a READ asks for or a WRITE carries. */
#define MUX_SFTP_CHUNK (64 * 1024)

/* SSH_FX status codes (v3, and the later drafts' codes some servers send). */
enum mux_sftp_status {
	MUX_FX_OK = 0, MUX_FX_EOF = 1, MUX_FX_NO_SUCH_FILE = 2, MUX_FX_PERMISSION_DENIED = 3,
	MUX_FX_FAILURE = 4, MUX_FX_BAD_MESSAGE = 5, MUX_FX_NO_CONNECTION = 6,
	MUX_FX_CONNECTION_LOST = 7, MUX_FX_OP_UNSUPPORTED = 8,
	MUX_FX_NO_SUCH_PATH = 10, MUX_FX_FILE_ALREADY_EXISTS = 11, MUX_FX_WRITE_PROTECT = 12,
	MUX_FX_NO_SPACE_ON_FILESYSTEM = 14, MUX_FX_QUOTA_EXCEEDED = 15,
	MUX_FX_DIR_NOT_EMPTY = 18, MUX_FX_NOT_A_DIRECTORY = 19, MUX_FX_FILE_IS_A_DIRECTORY = 24,
};

typedef struct mux_sftp mux_sftp;
/* status 0: the server answered INIT, requests may go. < 0: no channel
 * could be had, or the client's channel failed later (every pending
 * request has been told); the owner closes. Runs at most once with 0 and
 * once with an error, never from inside mux_sftp_start(). */
typedef void (*mux_sftp_event_cb)(mux_sftp *s, int status, void *data);
typedef void (*mux_sftp_cb)(mux_sftp *s, const sfw_reply *r, int err, void *data);

mux_sftp *mux_sftp_start(mux_conn *c, mux_sftp_event_cb cb, void *data);
/* Stop: pending requests' callbacks are dropped, the handles the client
 * holds are closed (or the channel, when no other client uses it);
 * closed(data) runs once the client's requests are answered (or the
 * channel is gone), never from inside this call. Idempotent. */
void mux_sftp_close(mux_sftp *s, void (*closed)(void *data), void *data);
unsigned mux_sftp_pending(const mux_sftp *s);
/* How long the client's oldest pending request has waited for its reply
 * (ms); 0 with none pending. */
uint64_t mux_sftp_waited_ms(const mux_sftp *s);

/* Requests. Each returns 0 (cb will run once) or a negative error
 * (UV_ENOBUFS when MUX_SFTP_MAX_INFLIGHT are pending, UV_EINVAL for an
 * oversized argument, UV_EBADF for a handle this client did not open or
 * has closed, the channel's error after a failure). */
/* REALPATH, STAT, LSTAT, OPENDIR, REMOVE, MKDIR, RMDIR, READLINK */
int mux_sftp_path(mux_sftp *s, int type, const char *path, mux_sftp_cb cb, void *data);
int mux_sftp_open(mux_sftp *s, const char *path, uint32_t pflags, const sfw_attrs *a,
		  mux_sftp_cb cb, void *data);
/* CLOSE, READDIR, FSTAT on a handle */
int mux_sftp_handle(mux_sftp *s, int type, const char *h, size_t hlen, mux_sftp_cb cb,
		    void *data);
int mux_sftp_read(mux_sftp *s, const char *h, size_t hlen, uint64_t off, uint32_t len,
		  mux_sftp_cb cb, void *data);
/* The largest data (at most MUX_SFTP_CHUNK) whose WRITE on a handle of hlen
 * bytes fills two SSH packets exactly (MUX_PACKET_DATA). */
size_t mux_sftp_write_fill(size_t hlen);
/* The data is copied: buf may be reused at once. */
int mux_sftp_write(mux_sftp *s, const char *h, size_t hlen, uint64_t off, const void *buf,
		   size_t len, mux_sftp_cb cb, void *data);
/* posix-rename@openssh.com when the server offers it (replaces the
 * target, as FTP clients expect), else plain RENAME. */
int mux_sftp_rename(mux_sftp *s, const char *from, const char *to, mux_sftp_cb cb,
		    void *data);
int mux_sftp_setstat(mux_sftp *s, const char *path, const sfw_attrs *a, mux_sftp_cb cb,
		     void *data);

#endif
