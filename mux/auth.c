/*
 * Bringing the session up: SSH handshake, host key check (hostkey.c), user
 * authentication. Each step is a non-blocking libssh2 call; EAGAIN means
 * "waiting for the server", and the same call is made again, with the same
 * arguments, on the next service.
 *
 * Authentication follows OpenSSH: methods in PreferredAuthentications
 * order (default publickey, keyboard-interactive, password), each only if
 * the server offers it and it is not switched off; publickey tries the
 * identities of ident.c in ssh's order (authkey.c). Whatever fails leaves
 * a note saying why (no such file, not readable, passphrase needed and
 * nobody to ask, wrong passphrase, refused by the server, signature
 * refused), and the failure message lists them. Server text that reaches
 * the terminal or the log is made printable first, as OpenSSH does.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mux/internal.h"

/* "bundled" or "system": which libssh2 the Makefile linked */
#ifndef FTPSSH_LIBSSH2_BUILD
#define FTPSSH_LIBSSH2_BUILD "unknown"
#endif

enum { M_PUBKEY = 1, M_KBDINT, M_PASSWORD };

static int ssh_err(mux_conn *c)
{
	return libssh2_session_last_errno(c->ssh);
}

const char *mux__ssh_errmsg(mux_conn *c)
{
	char *msg = NULL;
	libssh2_session_last_error(c->ssh, &msg, NULL, 0);
	return msg && *msg ? msg : "unknown error";
}

static const char *method_name(mux_conn *c, int type)
{
	const char *m = libssh2_session_methods(c->ssh, type);
	return m ? m : "?";
}

void mux__sanitize(const char *in, size_t n, char *out, size_t cap, bool keep_nl)
{
	size_t o = 0;
	if (cap == 0)
		return;
	for (size_t i = 0; i < n;) {
		unsigned char ch = (unsigned char)in[i];
		size_t len = 1;
		bool ok = (ch >= 0x20 && ch < 0x7f) || (ch == '\n' && keep_nl);
		if (ch >= 0xc2 && ch <= 0xf4) {
			/* valid UTF-8 of a printable character: no overlong forms,
			 * no surrogates, no C1 controls (0x9b is a CSI) */
			len = ch < 0xe0 ? 2 : ch < 0xf0 ? 3 : 4;
			uint32_t cp = ch & (0x7fu >> len);
			ok = i + len <= n;
			for (size_t k = 1; ok && k < len; k++) {
				unsigned char cc = (unsigned char)in[i + k];
				ok = (cc & 0xc0) == 0x80;
				cp = (cp << 6) | (cc & 0x3fu);
			}
			if (ok && ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
				   (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f))
				ok = false;
			if (!ok)
				len = 1;
		}
		if (ok) {
			if (o + len >= cap)
				break;
			memcpy(out + o, in + i, len);
			o += len;
		} else {
			if (o + 4 >= cap)
				break;
			snprintf(out + o, 5, "\\%03o", ch);
			o += 4;
		}
		i += len;
	}
	out[o] = '\0';
}

/* One entry of the failure message: "WHAT (why)", also logged at -v. */
void mux__auth_note(mux_conn *c, const char *what, const char *fmt, ...)
{
	char why[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	mux__log(c, 2, "%s: %s", what, why);
	size_t l = strlen(c->tried);
	if (l + 8 >= sizeof(c->tried))
		return;
	int n = snprintf(c->tried + l, sizeof(c->tried) - l, "%s%s (%s)", l ? ", " : "", what, why);
	if (n < 0 || (size_t)n >= sizeof(c->tried) - l)
		snprintf(c->tried + sizeof(c->tried) - 5, 5, "...");
}

void mux__auth_secret_clear(mux_conn *c)
{
	volatile char *p = c->secret; /* volatile: keep the dead store */
	for (size_t i = 0; i < sizeof(c->secret); i++)
		p[i] = 0;
	c->secret_set = false;
}

/* Ask the user (never in BatchMode). key names the question in a way the
 * server cannot steer; the answer cache in proxy/ask.c is keyed by it. */
int mux__auth_ask(mux_conn *c, const char *key, const char *prompt, bool echo)
{
	if (!c->opts.ask || c->opts.batch_mode)
		return -1;
	if (c->opts.ask(c->opts.ask_ctx, key, prompt, echo, c->secret, sizeof(c->secret)) != 0)
		return -1;
	c->secret_set = true;
	return 0;
}

/* The server's DISCONNECT reason (e.g. "Too many authentication
 * failures"), for the failure message. */
static void disconnect_cb(LIBSSH2_SESSION *s, int reason, const char *msg, int msg_len,
			  const char *lang, int lang_len, void **abstract)
{
	mux_conn *c = *abstract;
	(void)s;
	(void)reason;
	(void)lang;
	(void)lang_len;
	mux__sanitize(msg ? msg : "", msg && msg_len > 0 ? (size_t)msg_len : 0, c->disconnect_msg,
		      sizeof(c->disconnect_msg), false);
	if (!c->disconnect_msg[0])
		snprintf(c->disconnect_msg, sizeof(c->disconnect_msg), "no reason given");
}

/* ---- failure ---------------------------------------------------------------- */

static void auth_failed(mux_conn *c)
{
	char hint[400] = "";
	if (c->rsa_refused)
		snprintf(hint, sizeof(hint),
			 " RSA keys: libssh2 %s signs them only with ssh-rsa (SHA-1), which OpenSSH 8.8 "
			 "and later refuse; build ftpssh with libssh2 1.11 or newer (make "
			 "LIBSSH2=bundled), or use an ed25519 or ECDSA key.",
			 libssh2_version(0));
	else if (!c->tried[0])
		snprintf(hint, sizeof(hint), " Add a key with -i FILE or to ssh-agent.");
	mux__fail(c, MUX_FAIL_AUTH, MUX_ESSH(LIBSSH2_ERROR_AUTHENTICATION_FAILED),
		  "%s@%s: Permission denied (tried: %s).%s", c->user, c->host,
		  c->tried[0] ? c->tried : "nothing", hint);
}

/* The server hung up in the middle of authentication: say so, with the
 * usual cause when keys were refused (sshd's MaxAuthTries, 6 by default,
 * counts every key offered). True when the connection has failed. */
bool mux__auth_lost(mux_conn *c)
{
	if (!c->disconnect_msg[0] && !(c->in_eof && c->in_len == 0) && !c->in_err)
		return false;
	mux__fail(c, MUX_FAIL_AUTH, MUX_ESSH(LIBSSH2_ERROR_SOCKET_DISCONNECT),
		  "%s@%s: the server closed the connection during authentication (%s) after %u "
		  "key%s offered (tried: %s).%s",
		  c->user, c->host, c->disconnect_msg[0] ? c->disconnect_msg : "no reason given",
		  c->keys_offered, c->keys_offered == 1 ? "" : "s",
		  c->tried[0] ? c->tried : "nothing",
		  c->keys_offered >= 2 ? " sshd allows 6 attempts by default (MaxAuthTries): name "
					    "the key with -i FILE and -o IdentitiesOnly=yes, so that "
					    "other ssh-agent keys are not offered."
					  : "");
	return true;
}

/* ---- password and keyboard-interactive ----------------------------------- */

/* keyboard-interactive: libssh2 calls this (synchronously) with the
 * server's prompts; every answer comes from the user. The server's text is
 * made printable before it reaches the terminal, and each answer is
 * remembered under the prompt's number, not its (server-chosen) text. */
static void kbdint_cb(const char *name, int name_len, const char *instruction,
		      int instruction_len, int num_prompts,
		      const LIBSSH2_USERAUTH_KBDINT_PROMPT *prompts,
		      LIBSSH2_USERAUTH_KBDINT_RESPONSE *responses, void **abstract)
{
	mux_conn *c = *abstract;
	char head[1200] = "", *h = head;
	if (name && name_len > 0) {
		mux__sanitize(name, (size_t)name_len, h, 300, false);
		h += strlen(h);
		*h++ = '\n';
	}
	if (instruction && instruction_len > 0) {
		mux__sanitize(instruction, (size_t)instruction_len, h, 800, true);
		h += strlen(h);
		*h++ = '\n';
	}
	*h = '\0';
	if (num_prompts <= 0 && head[0])
		mux__log(c, 1, "%s", head);
	for (int i = 0; i < num_prompts; i++) {
		char prompt[1600], text[300], key[600];
		mux__sanitize((const char *)prompts[i].text, prompts[i].length, text, sizeof(text), false);
		snprintf(prompt, sizeof(prompt), "%s%s", i == 0 ? head : "", text);
		snprintf(key, sizeof(key), "keyboard-interactive:%s@%s:%u", c->user, c->host,
			 c->kbd_prompt_no++);
		responses[i].text = NULL;
		responses[i].length = 0;
		if (mux__auth_ask(c, key, prompt, prompts[i].echo != 0) != 0)
			continue;
		size_t n = strlen(c->secret);
		responses[i].text = malloc(n + 1); /* libssh2 frees it */
		if (responses[i].text) {
			memcpy(responses[i].text, c->secret, n + 1);
			responses[i].length = (unsigned)n;
		}
		mux__auth_secret_clear(c);
	}
}

/* Returns true when waiting for the server (or done). */
static bool password_step(mux_conn *c)
{
	if (!c->secret_set) {
		char prompt[600], key[600];
		if (c->opts.batch_mode) {
			mux__auth_note(c, "password", "not asked: BatchMode");
			c->state = CS_AUTH_NEXT;
			return false;
		}
		snprintf(prompt, sizeof(prompt), "%s@%s's password: ", c->user, c->host);
		snprintf(key, sizeof(key), "password:%s@%s", c->user, c->host);
		if (mux__auth_ask(c, key, prompt, false) != 0) {
			mux__auth_note(c, "password", "no terminal to ask on");
			c->state = CS_AUTH_NEXT;
			return false;
		}
	}
	int rc = libssh2_userauth_password_ex(c->ssh, c->user, (unsigned)strlen(c->user), c->secret,
					      (unsigned)strlen(c->secret), NULL);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return true;
	mux__auth_secret_clear(c);
	if (rc == 0) {
		mux__log(c, 2, "authenticated with a password");
		mux__set_up(c);
		return true;
	}
	if (mux__auth_lost(c))
		return true;
	mux__log(c, 1, "Permission denied, please try again.");
	if (++c->password_tries >= 3) {
		mux__auth_note(c, "password", "3 tries");
		c->state = CS_AUTH_NEXT;
	}
	return false;
}

static bool kbdint_step(mux_conn *c)
{
	if (c->opts.batch_mode || !c->opts.ask) {
		mux__auth_note(c, "keyboard-interactive", c->opts.batch_mode ? "not asked: BatchMode"
								 : "nobody to ask");
		c->state = CS_AUTH_NEXT;
		return false;
	}
	int rc = libssh2_userauth_keyboard_interactive_ex(c->ssh, c->user,
							  (unsigned)strlen(c->user), kbdint_cb);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return true;
	if (rc == 0) {
		mux__log(c, 2, "authenticated with keyboard-interactive");
		mux__set_up(c);
		return true;
	}
	if (mux__auth_lost(c))
		return true;
	mux__auth_note(c, "keyboard-interactive", "refused");
	c->state = CS_AUTH_NEXT;
	return false;
}

/* ---- methods ------------------------------------------------------------------ */

/* PreferredAuthentications, less what is switched off or not offered. */
static void methods_plan(mux_conn *c, const char *offered)
{
	const char *order = c->preferred_auth ? c->preferred_auth
					      : "publickey,keyboard-interactive,password";
	c->n_methods = c->method_idx = 0;
	for (const char *p = order; *p;) {
		size_t l = strcspn(p, ", ");
		int m = (l == 9 && !strncmp(p, "publickey", l))		? M_PUBKEY
			: (l == 20 && !strncmp(p, "keyboard-interactive", l)) ? M_KBDINT
			: (l == 8 && !strncmp(p, "password", l))		? M_PASSWORD
										: 0;
		const char *off = m == M_PUBKEY ? "publickey" : m == M_KBDINT ? "keyboard-interactive"
								 : "password";
		bool dup = false;
		for (size_t i = 0; i < c->n_methods; i++)
			dup |= c->methods[i] == m;
		bool disabled = (m == M_PUBKEY && c->opts.no_pubkey_auth) ||
				(m == M_KBDINT && c->opts.no_kbdint_auth) ||
				(m == M_PASSWORD && c->opts.no_password_auth);
		if (m && !dup && !disabled && strstr(offered, off) &&
		    c->n_methods < sizeof(c->methods) / sizeof(c->methods[0]))
			c->methods[c->n_methods++] = m;
		p += l;
		p += strspn(p, ", ");
	}
}

static bool auth_list_step(mux_conn *c)
{
	char *list = libssh2_userauth_list(c->ssh, c->user, (unsigned)strlen(c->user));
	if (!list) {
		if (ssh_err(c) == LIBSSH2_ERROR_EAGAIN)
			return true;
		if (libssh2_userauth_authenticated(c->ssh)) {
			mux__log(c, 2, "authenticated with method none");
			mux__set_up(c);
			return true;
		}
		mux__fail(c, MUX_FAIL_AUTH, MUX_ESSH(ssh_err(c)), "cannot list authentication methods: %s",
			  c->disconnect_msg[0] ? c->disconnect_msg : mux__ssh_errmsg(c));
		return true;
	}
	char shown[300];
	mux__sanitize(list, strlen(list), shown, sizeof(shown), false);
	mux__log(c, 2, "server accepts: %s", shown);
	methods_plan(c, list);
	c->state = CS_AUTH_NEXT;
	return false;
}

static void next_method(mux_conn *c)
{
	if (c->method_idx >= c->n_methods) {
		auth_failed(c);
		return;
	}
	int m = c->methods[c->method_idx++];
	if (m == M_PUBKEY) {
		if (mux__ident_build(c) != 0) {
			mux__fail(c, MUX_FAIL_AUTH, UV_ENOMEM, "out of memory listing identities");
			return;
		}
		c->id_idx = 0;
		c->id_step = 0; /* authkey.c: start */
		c->state = CS_AUTH_PUBKEY;
	} else if (m == M_PASSWORD) {
		c->password_tries = 0;
		c->state = CS_AUTH_PASSWORD;
	} else {
		c->state = CS_AUTH_KBDINT;
	}
}

void mux__auth_step(mux_conn *c)
{
	int rc;
	for (;;) {
		bool wait = false;
		switch (c->state) {
		case CS_HANDSHAKE:
			c->auth_self = c;
			/* libssh2 only looks at the descriptor's blocking mode (it is
			 * already non-blocking); all I/O goes through our callbacks. */
			rc = libssh2_session_handshake(c->ssh, (libssh2_socket_t)c->fd);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc) {
				mux__fail(c, MUX_FAIL_PROTO, MUX_ESSH(rc),
					  "SSH handshake with %s port %u failed: %s", c->host,
					  c->opts.port, mux__ssh_errmsg(c));
				return;
			}
			mux__log(c, 2, "SSH handshake done (libssh2 %s, %s): kex %s, host key %s, "
				 "cipher %s, MAC %s",
				 libssh2_version(0), FTPSSH_LIBSSH2_BUILD,
				 method_name(c, LIBSSH2_METHOD_KEX), method_name(c, LIBSSH2_METHOD_HOSTKEY),
				 method_name(c, LIBSSH2_METHOD_CRYPT_CS), method_name(c, LIBSSH2_METHOD_MAC_CS));
#if LIBSSH2_VERSION_NUM >= 0x010b00
			libssh2_session_callback_set2(c->ssh, LIBSSH2_CALLBACK_DISCONNECT,
						      (libssh2_cb_generic *)disconnect_cb);
#else
			libssh2_session_callback_set(c->ssh, LIBSSH2_CALLBACK_DISCONNECT,
						     (void *)disconnect_cb);
#endif
			if (mux__hostkey_check(c) != 0)
				return;
			c->state = CS_AUTH_LIST;
			break;
		case CS_AUTH_LIST:
			wait = auth_list_step(c);
			break;
		case CS_AUTH_NEXT:
			mux__auth_cleanup(c);
			next_method(c);
			break;
		case CS_AUTH_PUBKEY:
			wait = mux__auth_pubkey_step(c);
			break;
		case CS_AUTH_PASSWORD:
			wait = password_step(c);
			break;
		case CS_AUTH_KBDINT:
			wait = kbdint_step(c);
			break;
		default:
			return;
		}
		if (wait)
			return;
	}
}

/* ---- lifetime ------------------------------------------------------------------ */

int mux__auth_init(mux_conn *c, const mux_conn_opts *o)
{
	c->auth_self = c;
	if (o->preferred_auth && !(c->preferred_auth = strdup(o->preferred_auth)))
		return UV_ENOMEM;
	if (o->n_certificates) {
		c->certificates = calloc(o->n_certificates, sizeof(char *));
		if (!c->certificates)
			return UV_ENOMEM;
		for (size_t i = 0; i < o->n_certificates; i++)
			if (!(c->certificates[i] = strdup(o->certificates[i])))
				return UV_ENOMEM;
	}
	c->opts.preferred_auth = c->preferred_auth;
	c->opts.certificates = (const char *const *)c->certificates;
	return 0;
}

void mux__auth_cleanup(mux_conn *c)
{
	mux__wipe_free(c->key_data, c->key_len + 1);
	c->key_data = NULL;
	c->key_len = 0;
	free(c->key_pub);
	c->key_pub = NULL;
	mux__auth_secret_clear(c);
	mux__ident_free(c); /* before the agent: agent identities point into it */
	if (c->agent) {
		libssh2_agent_disconnect(c->agent);
		libssh2_agent_free(c->agent);
		c->agent = NULL;
	}
}

void mux__auth_free(mux_conn *c)
{
	mux__auth_cleanup(c);
	for (size_t i = 0; c->certificates && i < c->opts.n_certificates; i++)
		free(c->certificates[i]);
	free(c->certificates);
	c->certificates = NULL;
	free(c->preferred_auth);
	c->preferred_auth = NULL;
}
