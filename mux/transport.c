/*
 * The bytes between libssh2 and the transport (see conn.c for the design):
 * libssh2's recv callback copies from `in`, which uv_read fills and stops
 * filling while it is full; its send callback tries the socket at once and
 * queues the rest in the `out` ring, drained one uv_write at a time, and
 * never says "would block". And the proxy child (ProxyCommand, or ssh -W
 * for ProxyJump) whose stdin and stdout are the transport: spawned, owned,
 * on close made to go (SIGTERM, then SIGKILL) and reaped.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "mux/internal.h"

/* ---- libssh2 I/O callbacks ---------------------------------------------- */

/* libssh2 1.10 talks to ssh-agent through the session's send/recv
 * callbacks, on the agent's socket: those bytes are not ours. */
static ssize_t plain_recv(libssh2_socket_t fd, void *buf, size_t len, int flags)
{
	ssize_t n = recv(fd, buf, len, flags);
	return n < 0 ? -errno : n;
}

static ssize_t plain_send(libssh2_socket_t fd, const void *buf, size_t len, int flags)
{
	ssize_t n = send(fd, buf, len, flags | MSG_NOSIGNAL);
	return n < 0 ? -errno : n;
}

ssize_t mux__recv_cb(libssh2_socket_t fd, void *buf, size_t len, int flags,
			    void **abstract)
{
	mux_conn *c = *abstract;
	if (fd != c->fd) /* libssh2's ssh-agent client uses these callbacks too */
		return plain_recv(fd, buf, len, flags);
	if (c->in_len == 0) {
		/* Dead: nothing will be read any more. Saying "try again"
		 * here left libssh2 waiting for a channel's CLOSE forever:
		 * libssh2_channel_free() and libssh2_session_free() returned
		 * EAGAIN and the session was leaked. */
		if (c->in_err || c->state >= CS_DEAD)
			return -ECONNRESET;
		if (c->in_eof)
			return 0;
		return -EAGAIN;
	}
	size_t n = len < c->in_len ? len : c->in_len;
	memcpy(buf, c->in + c->in_start, n);
	c->in_start += n;
	c->in_len -= n;
	if (c->in_len == 0)
		c->in_start = 0;
	return (ssize_t)n;
}

static void conn_write_next(mux_conn *c);

static void conn_write_cb(uv_write_t *req, int status)
{
	mux_conn *c = container_of(req, mux_conn, wreq);
	size_t n = c->writing;

	c->writing = 0;
	if (status < 0) {
		if (!c->out_err)
			c->out_err = status;
		c->out_len = 0;
		c->out_head = 0;
		mux__service(c);
		return;
	}
	bool was_high = c->out_len >= MUX_OUT_SOFT;
	c->out_head = (c->out_head + n) % MUX_OUT_CAP;
	c->out_len -= n;
	if (c->out_len == 0)
		c->out_head = 0;
	conn_write_next(c);
	if (was_high && c->out_len < MUX_OUT_SOFT)
		mux__service(c);
}

/* Start a uv_write for the contiguous head of the ring, if none runs. */
static void conn_write_next(mux_conn *c)
{
	if (c->writing || c->out_len == 0 || c->out_err || c->state == CS_CLOSING)
		return;
	size_t contig = MUX_OUT_CAP - c->out_head;
	size_t n = c->out_len < contig ? c->out_len : contig;
	uv_buf_t b = uv_buf_init(c->out + c->out_head, (unsigned)n);
	int rc = uv_write(&c->wreq, c->wr, &b, 1, conn_write_cb);
	if (rc < 0) {
		c->out_err = rc;
		return;
	}
	c->writing = n;
}

ssize_t mux__send_cb(libssh2_socket_t fd, const void *buf, size_t len, int flags,
			    void **abstract)
{
	mux_conn *c = *abstract;
	const char *p = buf;
	size_t left = len;
	if (fd != c->fd)
		return plain_send(fd, buf, len, flags);

	if (c->out_err)
		return -EPIPE;
	c->bytes_out += len;
	if (c->out_len == 0 && !c->writing) {
		uv_buf_t b = uv_buf_init((char *)p, (unsigned)left);
		int n = uv_try_write(c->wr, &b, 1);
		if (n > 0) {
			p += n;
			left -= (size_t)n;
		} else if (n != UV_EAGAIN) {
			c->out_err = n;
			return -EPIPE;
		}
	}
	if (left > MUX_OUT_CAP - c->out_len) {
		/* Cannot happen while channel writes respect MUX_OUT_SOFT; if it
		 * does, failing the connection is better than losing bytes. */
		mux__log(c, 0, "ssh: output buffer overflow (%zu queued)", c->out_len);
		c->out_err = UV_ENOBUFS;
		return -ENOBUFS;
	}
	while (left > 0) {
		size_t tail = (c->out_head + c->out_len) % MUX_OUT_CAP;
		size_t room = MUX_OUT_CAP - tail;
		size_t n = left < room ? left : room;
		memcpy(c->out + tail, p, n);
		c->out_len += n;
		p += n;
		left -= n;
	}
	conn_write_next(c);
	return (ssize_t)len;
}

/* ---- socket reading ------------------------------------------------------ */

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	mux_conn *c = h->data;
	(void)suggested;
	/* Move the unread input to the front only when that costs no more
	 * than what was consumed since (in_start >= in_len), or when the room
	 * behind it runs short. Moving before every read copied up to 256 KiB
	 * per socket read: a third of ftpssh's CPU on a download (issue 13).
	 * Reading stops at in_len == MUX_IN_CAP, so the room is never 0. */
	size_t room = MUX_IN_CAP - c->in_start - c->in_len;
	if (c->in_start > 0 && (c->in_start >= c->in_len || room < MUX_IN_CAP / 16)) {
		memmove(c->in, c->in + c->in_start, c->in_len);
		c->in_start = 0;
		room = MUX_IN_CAP - c->in_len;
	}
	*buf = uv_buf_init(c->in + c->in_start + c->in_len, (unsigned)room);
}

static void conn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	mux_conn *c = s->data;
	(void)buf;
	if (n > 0) {
		c->in_len += (size_t)n;
		c->bytes_in += (uint64_t)n;
		/* sshd does not set TCP_NODELAY on a non-interactive connection,
		 * so its small packets (a control reply, a tiny file) wait for our
		 * delayed ACK: 40 ms per exchange. Ask the kernel to ACK at once
		 * while traffic is small; bulk reads don't need it. Linux clears
		 * the flag by itself, hence after every small read. */
		if (n < 16384 && c->fd >= 0 && !c->proxy) {
			int one = 1;
			setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
		}
	} else if (n == UV_EOF) {
		c->in_eof = true;
	} else if (n < 0) {
		c->in_err = (int)n;
	}
	if (n < 0 || c->in_len == MUX_IN_CAP) {
		uv_read_stop(s);
		c->reading = false;
	}
	mux__service(c);
}

void mux__update_reading(mux_conn *c)
{
	if (c->state == CS_CLOSING || c->state == CS_DEAD || !c->rd)
		return;
	if (c->state == CS_RESOLVING || c->state == CS_CONNECTING)
		return;
	bool want = !c->in_eof && !c->in_err && c->in_len < MUX_IN_CAP;
	if (want && !c->reading) {
		if (uv_read_start(c->rd, conn_alloc_cb, conn_read_cb) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop(c->rd);
		c->reading = false;
	}
}

/* ---- the proxy child ----------------------------------------------------------- */

#define PROXY_KILL_GRACE_MS 2000

static void proxy_close_proc(mux_conn *c)
{
	uv_timer_stop(&c->ctimer);
	uv_close((uv_handle_t *)&c->proc, mux__handle_closed_cb);
	uv_close((uv_handle_t *)&c->ctimer, mux__handle_closed_cb);
}

static void proxy_exit_cb(uv_process_t *p, int64_t status, int sig)
{
	mux_conn *c = p->data;
	c->proc_running = false;
	c->proc_status = sig ? 128 + sig : (int)status;
	if (c->state == CS_CLOSING) {
		proxy_close_proc(c);
		return;
	}
	/* Not a failure by itself: its last output may still be unread. The
	 * pipe's EOF ends the connection. */
	mux__log(c, c->state == CS_UP || c->proc_status ? 1 : 2,
		 "proxy command %s exited with status %d", c->opts.proxy_argv[0],
		 c->proc_status);
}

/* SIGTERM, then SIGKILL, then give up waiting (a bound, should the exit
 * never be reported) and close the handle anyway. */
static void proxy_kill_cb(uv_timer_t *t)
{
	mux_conn *c = t->data;
	if (!c->proc_running) {
		proxy_close_proc(c);
		return;
	}
	if (c->kill_stage == 1) {
		c->kill_stage = 2;
		uv_process_kill(&c->proc, SIGKILL);
		uv_timer_start(&c->ctimer, proxy_kill_cb, PROXY_KILL_GRACE_MS, 0);
		return;
	}
	mux__log(c, 2, "proxy command pid %d did not go; leaving it", c->proc.pid);
	proxy_close_proc(c);
}

int mux__proxy_start(mux_conn *c)
{
	uv_stdio_container_t stdio[3];
	int rc;
	uv_pipe_init(c->loop, &c->pin, 0);
	uv_pipe_init(c->loop, &c->pout, 0);
	c->pin.data = c->pout.data = c;
	c->handles_open += 2;
	stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
	stdio[0].data.stream = (uv_stream_t *)&c->pin;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&c->pout;
	stdio[2].flags = UV_INHERIT_FD; /* its messages and prompts are the user's */
	stdio[2].data.fd = 2;
	uv_process_options_t po = {
		.exit_cb = proxy_exit_cb,
		.file = c->opts.proxy_argv[0],
		.args = (char **)c->opts.proxy_argv,
		.stdio_count = 3,
		.stdio = stdio,
	};
	c->proc.data = c;
	rc = uv_spawn(c->loop, &c->proc, &po);
	c->handles_open++; /* the process handle is initialised even on failure */
	if (rc < 0)
		return rc;
	c->proc_running = true;
	uv_os_fd_t fd;
	c->fd = uv_fileno((uv_handle_t *)&c->pout, &fd) == 0 ? fd : -1;
	c->rd = (uv_stream_t *)&c->pout;
	c->wr = (uv_stream_t *)&c->pin;
	if (c->opts.proxy_argv[1] && c->opts.proxy_argv[2])
		mux__log(c, 2, "SSH connection through: %s %s %s ...", c->opts.proxy_argv[0],
			 c->opts.proxy_argv[1], c->opts.proxy_argv[2]);
	return 0;
}

/* The transport's handles close and the child is made to go: our end of
 * its stdin closing is the first hint, then SIGTERM, then SIGKILL. */
void mux__proxy_close(mux_conn *c)
{
	uv_close((uv_handle_t *)&c->pin, mux__handle_closed_cb);
	uv_close((uv_handle_t *)&c->pout, mux__handle_closed_cb);
	if (!c->proc_running) {
		proxy_close_proc(c);
		return;
	}
	c->kill_stage = 1;
	uv_process_kill(&c->proc, SIGTERM);
	uv_timer_stop(&c->ctimer);
	uv_timer_start(&c->ctimer, proxy_kill_cb, PROXY_KILL_GRACE_MS, 0);
}
