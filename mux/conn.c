/*
 * The SSH connection: one transport, one libssh2 session.
 *
 * The transport is a pair of libuv streams, rd and wr: both the TCP
 * handle, or the stdout and stdin pipes of a proxy child (ProxyCommand,
 * or `ssh -W` for ProxyJump) that conn.c spawns, owns, and on close
 * kills (SIGTERM, then SIGKILL) and reaps. The child ending is the
 * transport's EOF: a lost connection like any other.
 *
 * libssh2 is given send/recv callbacks instead of the socket. recv copies
 * from `in` (filled by uv_read, which stops while `in` is full); send tries
 * the socket directly and queues what the kernel did not take in the `out`
 * ring, which one uv_write at a time drains. send never says "would block",
 * so libssh2 never holds a half-sent packet, and the 1.10 rule "repeat the
 * very same call after EAGAIN" never comes up: EAGAIN from any libssh2 call
 * here means "waiting for bytes from the server", and any other call may be
 * made in the meantime. Backpressure on output is ours: channel writes stop
 * while `out` holds more than MUX_OUT_SOFT.
 *
 * Everything runs in mux__service(): on input, on output drained, on a kick
 * from a channel owner (deferred to an idle handle so that owners' calls
 * never re-enter libssh2), and on the keepalive timer.
 *
 * Files: conn.c the state and the service loop; transport.c the I/O
 * callbacks, reading and the proxy child; alive.c keepalives and the round
 * trip; auth*.c, hostkey.c, algos.c the steps before UP; chan.c channels.
 *
 * States: RESOLVING -> CONNECTING -> HANDSHAKE -> AUTH_* (auth.c) -> UP;
 * with a proxy child straight to HANDSHAKE. ctimer (ConnectTimeout, 30 s
 * when unset) bounds everything before UP and names the stage it caught.
 * Any failure -> DEAD: channels are failed, owners close them, and
 * mux_conn_close() then closes the handles; MUX_CONN_CLOSED is the last
 * event, after which the object is freed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "mux/internal.h"


void mux__log(mux_conn *c, int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (!c->opts.log)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->opts.log(c->opts.log_ctx, level, "%s", buf);
}

const char *mux_strerror(int err)
{
	static const struct {
		int code;
		const char *msg;
	} ssh_errs[] = {
		{LIBSSH2_ERROR_SOCKET_DISCONNECT, "SSH connection closed by the server"},
		{LIBSSH2_ERROR_SOCKET_SEND, "cannot send to the SSH server"},
		{LIBSSH2_ERROR_SOCKET_RECV, "cannot receive from the SSH server"},
		{LIBSSH2_ERROR_KEX_FAILURE, "SSH key exchange failed"},
		{LIBSSH2_ERROR_BANNER_RECV, "no SSH banner from the server"},
		{LIBSSH2_ERROR_HOSTKEY_INIT, "cannot read the server's host key"},
		{LIBSSH2_ERROR_METHOD_NOT_SUPPORTED, "no common cipher, MAC or key type"},
		{LIBSSH2_ERROR_CHANNEL_FAILURE, "the gateway refused the channel"},
		{LIBSSH2_ERROR_CHANNEL_OUTOFORDER, "SSH channel protocol error"},
		{LIBSSH2_ERROR_CHANNEL_CLOSED, "SSH channel closed"},
		{LIBSSH2_ERROR_CHANNEL_EOF_SENT, "SSH channel already at EOF"},
		{LIBSSH2_ERROR_AUTHENTICATION_FAILED, "authentication failed"},
		{LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED, "key not accepted"},
		{LIBSSH2_ERROR_FILE, "cannot read or decrypt the key file"},
		{LIBSSH2_ERROR_ALLOC, "out of memory in libssh2"},
		{LIBSSH2_ERROR_TIMEOUT, "SSH timeout"},
		{LIBSSH2_ERROR_PROTO, "SSH protocol error"},
		{LIBSSH2_ERROR_BAD_USE, "libssh2 misuse (a bug in ftpssh)"},
		{LIBSSH2_ERROR_AGENT_PROTOCOL, "ssh-agent protocol error"},
		{LIBSSH2_ERROR_KNOWN_HOSTS, "cannot use the known_hosts file"},
		{LIBSSH2_ERROR_CHANNEL_WINDOW_FULL, "SSH channel window full"},
	};
	if (err <= MUX_ESSH_BASE + 0 && err > MUX_ESSH_BASE - 1000) {
		int e = err - MUX_ESSH_BASE;
		for (size_t i = 0; i < sizeof(ssh_errs) / sizeof(ssh_errs[0]); i++)
			if (ssh_errs[i].code == e)
				return ssh_errs[i].msg;
		return "SSH error";
	}
	return uv_strerror(err);
}

const char *mux_libssh2_version(void)
{
	return libssh2_version(0);
}

bool mux_libssh2_patched(void)
{
#if defined(LIBSSH2_HAVE_SESSION_PROCESS_INPUT) && defined(LIBSSH2_HAVE_CHANNEL_OPEN_START)
	return true;
#else
	return false;
#endif
}

/* ---- state changes ------------------------------------------------------ */

/* Stop all I/O and fail every channel with err; owners then close them. */
static void conn_go_dead(mux_conn *c, int err)
{
	c->state = CS_DEAD;
	uv_timer_stop(&c->timer);
	uv_timer_stop(&c->ctimer);
	uv_timer_stop(&c->rtt_timer);
	if (c->reading) {
		uv_read_stop(c->rd);
		c->reading = false;
	}
	mux__chan_fail_all(c, err);
}

void mux__fail(mux_conn *c, int kind, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (c->state == CS_DEAD || c->state == CS_CLOSING)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bool was_up = c->state == CS_UP;
	conn_go_dead(c, err ? err : UV_ECONNRESET);
	if (c->cb)
		c->cb(c, was_up ? MUX_CONN_LOST : MUX_CONN_FAILED, kind, msg, c->cb_data);
	mux__maybe_finish_close(c);
}

void mux__set_up(mux_conn *c)
{
	c->state = CS_UP;
	uv_timer_stop(&c->ctimer);
	mux__auth_cleanup(c);
	mux__alive_start(c);
	if (c->cb)
		c->cb(c, MUX_CONN_UP, 0, "", c->cb_data);
}

/* ---- the service loop ---------------------------------------------------- */

void mux__service(mux_conn *c)
{
	if (c->servicing) {
		c->reservice = true;
		return;
	}
	c->servicing = true;
	for (int round = 0; round < 64; round++) {
		c->reservice = false;
		if (c->state >= CS_HANDSHAKE && c->state < CS_UP)
			mux__auth_step(c);
#ifdef LIBSSH2_HAVE_SESSION_PROCESS_INPUT
		/* Handle what arrived even when no channel call would (patch
		 * 0002 of the bundled libssh2): an idle connection answers the
		 * server's keepalives, and replies to ours are dropped. */
		if (c->state == CS_UP && c->in_len > 0) {
			int rc = libssh2_session_process_input(c->ssh);
			if (rc > 0)
				mux__pong(c); /* replies to our keepalives came */
			else if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN)
				mux__fail(c, MUX_FAIL_NET, MUX_ESSH(rc), "SSH connection to %s lost: %s",
					  c->host, mux_strerror(MUX_ESSH(rc)));
		}
#endif
		if (c->state == CS_UP || c->state == CS_DEAD)
			mux__chan_service_all(c);
		/* EOF counts once every byte before it was taken by libssh2; with
		 * no open channel nothing will take them (an idle session's
		 * trailing global requests), so EOF counts at once. */
		if (c->state == CS_UP &&
		    (c->out_err || c->in_err ||
		     (c->in_eof && (c->in_len == 0 || !mux__has_open_chan(c))))) {
			int err = c->out_err ? c->out_err : c->in_err ? c->in_err : UV_EOF;
			mux__fail(c, MUX_FAIL_NET, err, "SSH connection to %s lost: %s", c->host,
				  err != UV_EOF ? uv_strerror(err)
				  : c->proxy	? "the proxy command's output ended"
						: "closed by the server");
		} else if (c->state >= CS_HANDSHAKE && c->state < CS_UP &&
			   (c->out_err || c->in_err || (c->in_eof && c->in_len == 0))) {
			mux__fail(c, MUX_FAIL_NET, UV_ECONNRESET,
				  c->proxy ? "the proxy command to %s:%u ended during the SSH handshake"
					   : "%s:%u closed the connection during the SSH handshake",
				  c->host, c->opts.port);
		}
		if (!c->reservice)
			break;
	}
	if (c->reservice)
		mux__kick(c); /* still busy: go round the loop first */
	c->servicing = false;
	mux__update_reading(c);
	mux__maybe_finish_close(c);
}

static void conn_kick_cb(uv_idle_t *h)
{
	mux_conn *c = container_of(h, mux_conn, kick);
	uv_idle_stop(h);
	c->kicked = false;
	mux__service(c);
}

void mux__kick(mux_conn *c)
{
	if (c->kicked || c->state == CS_CLOSING)
		return;
	c->kicked = true;
	uv_idle_start(&c->kick, conn_kick_cb);
}

/* ---- connecting ---------------------------------------------------------- */

static void conn_connect_cb(uv_connect_t *req, int status)
{
	mux_conn *c = container_of(req, mux_conn, connect_req);
	if (c->state != CS_CONNECTING)
		return;
	if (status < 0) {
		mux__fail(c, MUX_FAIL_NET, status, "cannot connect to %s port %u: %s", c->host,
			  c->opts.port, uv_strerror(status));
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_os_fd_t fd;
	c->fd = uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 ? fd : -1;
	c->rd = c->wr = (uv_stream_t *)&c->tcp;
	c->state = CS_HANDSHAKE;
	mux__update_reading(c);
	mux__service(c);
}

static void conn_resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	mux_conn *c = container_of(req, mux_conn, gai);
	c->gai_pending = false;
	if (c->state != CS_RESOLVING) {
		uv_freeaddrinfo(res);
		mux__maybe_finish_close(c);
		return;
	}
	if (status < 0) {
		mux__fail(c, MUX_FAIL_NET, status, "cannot resolve %s: %s", c->host,
			  uv_strerror(status));
		return;
	}
	c->state = CS_CONNECTING;
	int rc = uv_tcp_connect(&c->connect_req, &c->tcp, res->ai_addr, conn_connect_cb);
	uv_freeaddrinfo(res);
	if (rc < 0)
		mux__fail(c, MUX_FAIL_NET, rc, "cannot connect to %s port %u: %s", c->host,
			  c->opts.port, uv_strerror(rc));
}

/* ---- the caller's options, copied ----------------------------------------- */

/* Every string and list of the caller's opts goes into one block the
 * connection owns (the caller's may change or go while we live). Two
 * passes over the same code: the first measures (base NULL). */
struct arena {
	char *base;
	size_t used;
};

static void *arena_take(struct arena *a, size_t n, size_t align)
{
	a->used = (a->used + align - 1) / align * align;
	void *p = a->base ? a->base + a->used : NULL;
	a->used += n;
	return p;
}

static const char *arena_str(struct arena *a, const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *p = arena_take(a, n, 1);
	if (p)
		memcpy(p, s, n);
	return p;
}

/* n strings (n == SIZE_MAX: up to a NULL, which is copied too). */
static const char *const *arena_vec(struct arena *a, const char *const *v, size_t n)
{
	if (!v)
		return NULL;
	if (n == SIZE_MAX)
		for (n = 0; v[n];)
			n++;
	const char **p = arena_take(a, (n + 1) * sizeof(char *), sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		const char *s = arena_str(a, v[i]);
		if (p)
			p[i] = s;
	}
	if (p)
		p[n] = NULL;
	return p;
}

static void opts_copy(struct arena *a, mux_conn_opts *d, const mux_conn_opts *o)
{
	d->host = arena_str(a, o->host);
	d->user = arena_str(a, o->user);
	d->proxy_argv = arena_vec(a, o->proxy_argv, SIZE_MAX);
	d->identities = arena_vec(a, o->identities, o->n_identities);
	d->certificates = arena_vec(a, o->certificates, o->n_certificates);
	d->preferred_auth = arena_str(a, o->preferred_auth);
	d->known_hosts = arena_str(a, o->known_hosts);
	if (o->n_known_hosts_files == 0 && o->known_hosts) {
		/* the older single-file form: a list of one */
		const char *one[1] = {o->known_hosts};
		d->known_hosts_files = arena_vec(a, one, 1);
		d->n_known_hosts_files = 1;
	} else {
		d->known_hosts_files = arena_vec(a, o->known_hosts_files, o->n_known_hosts_files);
	}
	d->global_known_hosts = arena_vec(a, o->global_known_hosts, o->n_global_known_hosts);
	d->hostkey_alias = arena_str(a, o->hostkey_alias);
	d->ciphers = arena_str(a, o->ciphers);
	d->macs = arena_str(a, o->macs);
	d->kex = arena_str(a, o->kex);
	d->hostkey_algs = arena_str(a, o->hostkey_algs);
}

static void conn_free(mux_conn *c)
{
	free(c->strings);
	mux__auth_free(c);
	free(c->in);
	free(c->out);
	free(c);
}

void mux__handle_closed_cb(uv_handle_t *h)
{
	mux_conn *c = h->data;
	if (--c->handles_open > 0)
		return;
	mux_conn_cb cb = c->cb;
	void *data = c->cb_data;
	conn_free(c);
	if (cb)
		cb(NULL, MUX_CONN_CLOSED, 0, "", data);
}

/* Close handles and free once the owner asked to close and no channel is
 * left (owners close their channels after being told of the failure). */
void mux__maybe_finish_close(mux_conn *c)
{
	if (!c->close_wanted || c->state == CS_CLOSING || c->nchans > 0 || c->servicing ||
	    c->gai_pending)
		return;
	if (c->ssh) {
		if (c->state == CS_UP)
			libssh2_session_disconnect(c->ssh, "ftpssh closing");
		mux__auth_cleanup(c);
		libssh2_session_free(c->ssh);
		c->ssh = NULL;
	}
	c->state = CS_CLOSING;
	uv_close((uv_handle_t *)&c->timer, mux__handle_closed_cb);
	uv_close((uv_handle_t *)&c->kick, mux__handle_closed_cb);
	uv_close((uv_handle_t *)&c->open_timer, mux__handle_closed_cb);
	uv_close((uv_handle_t *)&c->rtt_timer, mux__handle_closed_cb);
	if (!c->proxy) {
		uv_close((uv_handle_t *)&c->tcp, mux__handle_closed_cb);
		uv_timer_stop(&c->ctimer);
		uv_close((uv_handle_t *)&c->ctimer, mux__handle_closed_cb);
		return;
	}
	mux__proxy_close(c);
}

/* ---- ConnectTimeout ------------------------------------------------------------- */

#define MUX_CONNECT_TIMEOUT_DEFAULT 30

static unsigned connect_timeout(const mux_conn *c)
{
	return c->opts.connect_timeout_sec ? c->opts.connect_timeout_sec
					   : MUX_CONNECT_TIMEOUT_DEFAULT;
}

static void conn_timeout_cb(uv_timer_t *t)
{
	mux_conn *c = t->data;
	const char *stage;
	if (c->state >= CS_UP)
		return;
	if (c->state == CS_RESOLVING || c->state == CS_CONNECTING)
		stage = "connect";
	else if (c->state == CS_HANDSHAKE)
		stage = c->bytes_in == 0 ? "SSH banner" : "key exchange";
	else
		stage = "authentication";
	mux__fail(c, MUX_FAIL_NET, UV_ETIMEDOUT,
		  "%s port %u%s: timed out at the %s stage after %u s (ConnectTimeout)", c->host,
		  c->opts.port, c->proxy ? " (through the proxy command)" : "", stage,
		  connect_timeout(c));
}

/* A question to the user may take longer than any timeout: the clock
 * starts again once it is answered. */
static int conn_ask(void *ctx, const char *key, const char *prompt, bool echo, char *buf,
		    size_t cap)
{
	mux_conn *c = ctx;
	int rc = c->user_ask(c->user_ask_ctx, key, prompt, echo, buf, cap);
	if (c->state < CS_UP && uv_is_active((uv_handle_t *)&c->ctimer)) {
		uv_update_time(c->loop);
		uv_timer_start(&c->ctimer, conn_timeout_cb, connect_timeout(c) * 1000ull, 0);
	}
	return rc;
}

int mux_conn_start(uv_loop_t *loop, const mux_conn_opts *o, mux_conn_cb cb, void *data,
		   mux_conn **out)
{
	static bool ssh_inited;
	int rc = UV_ENOMEM;
	struct arena a = {0};
	mux_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return UV_ENOMEM;
	if (!ssh_inited) {
		if (libssh2_init(0) != 0) {
			free(c);
			return MUX_ESSH(LIBSSH2_ERROR_ALLOC);
		}
		ssh_inited = true;
	}
	c->loop = loop;
	c->fd = -1;
	c->cb = cb;
	c->cb_data = data;
	c->opts = *o;
	if (!c->opts.window_max || c->opts.window_max < MUX_WINDOW_START)
		c->opts.window_max = MUX_WINDOW_START;
	c->credit_budget = 2ull * c->opts.window_max;
	if (c->credit_budget < MUX_CREDIT_BUDGET_MIN)
		c->credit_budget = MUX_CREDIT_BUDGET_MIN;
	if (!o->host || !o->user)
		goto fail;
	opts_copy(&a, &c->opts, o); /* measure */
	c->strings = malloc(a.used ? a.used : 1);
	c->in = malloc(MUX_IN_CAP);
	c->out = malloc(MUX_OUT_CAP);
	if (!c->strings || !c->in || !c->out)
		goto fail;
	a = (struct arena){.base = c->strings};
	opts_copy(&a, &c->opts, o);
	c->host = c->opts.host;
	c->user = c->opts.user;
	c->identities = c->opts.identities;
	c->proxy = c->opts.proxy_argv && c->opts.proxy_argv[0];
	if (c->opts.ask) {
		c->user_ask = c->opts.ask;
		c->user_ask_ctx = c->opts.ask_ctx;
		c->opts.ask = conn_ask;
		c->opts.ask_ctx = c;
	}
	if (mux__auth_init(c, &c->opts) != 0)
		goto fail;

	c->ssh = libssh2_session_init_ex(NULL, NULL, NULL, c);
	if (!c->ssh)
		goto fail;
	libssh2_session_set_blocking(c->ssh, 0);
#if LIBSSH2_VERSION_NUM >= 0x010b00 /* 1.11: typed callbacks, the old call deprecated */
	libssh2_session_callback_set2(c->ssh, LIBSSH2_CALLBACK_SEND,
				      (libssh2_cb_generic *)mux__send_cb);
	libssh2_session_callback_set2(c->ssh, LIBSSH2_CALLBACK_RECV,
				      (libssh2_cb_generic *)mux__recv_cb);
#else
	libssh2_session_callback_set(c->ssh, LIBSSH2_CALLBACK_SEND, (void *)mux__send_cb);
	libssh2_session_callback_set(c->ssh, LIBSSH2_CALLBACK_RECV, (void *)mux__recv_cb);
#endif
	if ((rc = mux__algos_apply(c)) < 0)
		goto fail;
	if (c->opts.compression)
		libssh2_session_flag(c->ssh, LIBSSH2_FLAG_COMPRESS, 1);

	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	uv_idle_init(loop, &c->kick);
	c->kick.data = c;
	uv_timer_init(loop, &c->open_timer);
	c->open_timer.data = c;
	uv_timer_init(loop, &c->rtt_timer);
	c->rtt_timer.data = c;
	uv_timer_init(loop, &c->ctimer);
	c->ctimer.data = c;
	c->handles_open = 5;
	*out = c; /* before anything can report an event about c */
	uv_timer_start(&c->ctimer, conn_timeout_cb, connect_timeout(c) * 1000ull, 0);

	if (c->proxy) {
		rc = mux__proxy_start(c);
		if (rc < 0) {
			mux__fail(c, MUX_FAIL_NET, rc, "cannot run the proxy command %s: %s",
				  c->opts.proxy_argv[0], uv_strerror(rc));
			return 0;
		}
		c->state = CS_HANDSHAKE;
		mux__update_reading(c);
		mux__kick(c);
		return 0;
	}

	uv_tcp_init(loop, &c->tcp);
	c->tcp.data = c;
	c->handles_open++;
	char port[8];
	snprintf(port, sizeof(port), "%u", o->port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = o->address_family};
	c->state = CS_RESOLVING;
	rc = uv_getaddrinfo(loop, &c->gai, conn_resolved_cb, c->host, port, &hints);
	c->gai_pending = rc == 0;
	if (rc < 0) {
		/* Handles exist: report through the normal path. */
		mux__fail(c, MUX_FAIL_NET, rc, "cannot resolve %s: %s", c->host, uv_strerror(rc));
	}
	return 0;
fail:
	if (c->ssh)
		libssh2_session_free(c->ssh);
	conn_free(c);
	return rc;
}

void mux_conn_close(mux_conn *c)
{
	if (c->close_wanted)
		return;
	c->close_wanted = true;
	if (c->state == CS_RESOLVING)
		uv_cancel((uv_req_t *)&c->gai);
	if (c->state != CS_DEAD && c->state != CS_CLOSING)
		conn_go_dead(c, UV_ECANCELED);
	mux__kick(c);
	mux__maybe_finish_close(c);
}

bool mux_conn_is_up(const mux_conn *c)
{
	return c && c->state == CS_UP;
}

