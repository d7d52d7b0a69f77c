/*
 * Bringing the session up: SSH handshake, host key check, user
 * authentication. Each step is a non-blocking libssh2 call; EAGAIN means
 * "waiting for the server" and the step is simply called again on the next
 * service. Order follows OpenSSH: agent identities, then key files.
 *
 * The host key is checked between the handshake and authentication, by
 * hostkey.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mux/internal.h"

/* "bundled" or "system": which libssh2 the Makefile linked */
#ifndef FTPSSH_LIBSSH2_BUILD
#define FTPSSH_LIBSSH2_BUILD "unknown"
#endif

static int ssh_err(mux_conn *c)
{
	return libssh2_session_last_errno(c->ssh);
}

static const char *ssh_errmsg(mux_conn *c)
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

static void tried_add(mux_conn *c, const char *what)
{
	size_t l = strlen(c->tried);
	snprintf(c->tried + l, sizeof(c->tried) - l, "%s%s", l ? ", " : "", what);
}

void mux__auth_cleanup(mux_conn *c)
{
	if (c->agent) {
		libssh2_agent_disconnect(c->agent);
		libssh2_agent_free(c->agent);
		c->agent = NULL;
		c->agent_id = NULL;
	}
}

/* Next agent identity, or NULL when there is none (or no agent). */
static struct libssh2_agent_publickey *agent_next(mux_conn *c)
{
	struct libssh2_agent_publickey *id = NULL;
	if (!c->agent) {
		if (!c->opts.use_agent || !getenv("SSH_AUTH_SOCK"))
			return NULL;
		c->agent = libssh2_agent_init(c->ssh);
		if (!c->agent)
			return NULL;
		if (libssh2_agent_connect(c->agent) != 0 ||
		    libssh2_agent_list_identities(c->agent) != 0) {
			mux__log(c, 2, "ssh-agent not usable: %s", ssh_errmsg(c));
			mux__auth_cleanup(c);
			c->opts.use_agent = false;
			return NULL;
		}
	}
	if (libssh2_agent_get_identity(c->agent, &id, c->agent_id) != 0)
		return NULL;
	return id;
}

static void auth_failed(mux_conn *c)
{
	mux__fail(c, MUX_FAIL_AUTH, MUX_ESSH(LIBSSH2_ERROR_AUTHENTICATION_FAILED),
		  "%s@%s: Permission denied (tried: %s). Add a key with -i FILE or to "
		  "ssh-agent; RSA keys need rsa-sha2 signatures, which libssh2 1.10 lacks "
		  "(OpenSSH 8.8+ refuses them): use an ed25519 or ECDSA key.",
		  c->user, c->host, c->tried[0] ? c->tried : "nothing");
}

static void secret_clear(mux_conn *c)
{
	/* volatile: keep the compiler from skipping a dead store */
	volatile char *p = c->secret;
	for (size_t i = 0; i < sizeof(c->secret); i++)
		p[i] = 0;
	c->secret_set = false;
}

static int ask(mux_conn *c, const char *prompt, bool echo)
{
	if (!c->opts.ask)
		return -1;
	if (c->opts.ask(c->opts.ask_ctx, prompt, echo, c->secret, sizeof(c->secret)) != 0)
		return -1;
	c->secret_set = true;
	return 0;
}

/* keyboard-interactive: libssh2 calls this (synchronously) with the
 * server's prompts; every answer comes from the user. */
static void kbdint_cb(const char *name, int name_len, const char *instruction,
		      int instruction_len, int num_prompts,
		      const LIBSSH2_USERAUTH_KBDINT_PROMPT *prompts,
		      LIBSSH2_USERAUTH_KBDINT_RESPONSE *responses, void **abstract)
{
	mux_conn *c = *abstract;
	(void)name;
	(void)name_len;
	(void)instruction;
	(void)instruction_len;
	for (int i = 0; i < num_prompts; i++) {
		char prompt[300];
		size_t pl = prompts[i].length < sizeof(prompt) - 1 ? prompts[i].length
								     : sizeof(prompt) - 1;
		memcpy(prompt, prompts[i].text, pl);
		prompt[pl] = '\0';
		responses[i].text = NULL;
		responses[i].length = 0;
		if (ask(c, prompt, prompts[i].echo != 0) != 0)
			continue;
		size_t n = strlen(c->secret);
		responses[i].text = malloc(n + 1); /* libssh2 frees it */
		if (responses[i].text) {
			memcpy(responses[i].text, c->secret, n + 1);
			responses[i].length = (unsigned)n;
		}
		secret_clear(c);
	}
}

static void agent_done(mux_conn *c)
{
	if (c->agent_tried) {
		char t[64];
		snprintf(t, sizeof(t), "ssh-agent (%u keys)", c->agent_tried);
		tried_add(c, t);
	}
	mux__auth_cleanup(c);
	c->state = CS_AUTH_KEY;
}


void mux__auth_step(mux_conn *c)
{
	int rc;
	for (;;) {
		switch (c->state) {
		case CS_HANDSHAKE: {
			/* libssh2 only looks at the descriptor's blocking mode (it is
			 * already non-blocking); all I/O goes through our callbacks. */
			rc = libssh2_session_handshake(c->ssh, (libssh2_socket_t)c->fd);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc) {
				mux__fail(c, MUX_FAIL_PROTO, MUX_ESSH(rc),
					  "SSH handshake with %s port %u failed: %s", c->host,
					  c->opts.port, ssh_errmsg(c));
				return;
			}
			mux__log(c, 2, "SSH handshake done (libssh2 %s, %s): kex %s, host key %s, "
				 "cipher %s, MAC %s",
				 libssh2_version(0), FTPSSH_LIBSSH2_BUILD,
				 method_name(c, LIBSSH2_METHOD_KEX), method_name(c, LIBSSH2_METHOD_HOSTKEY),
				 method_name(c, LIBSSH2_METHOD_CRYPT_CS), method_name(c, LIBSSH2_METHOD_MAC_CS));
			if (mux__hostkey_check(c) != 0)
				return;
			c->state = CS_AUTH_LIST;
			break;
		}
		case CS_AUTH_LIST: {
			char *list = libssh2_userauth_list(c->ssh, c->user, (unsigned)strlen(c->user));
			if (!list) {
				if (ssh_err(c) == LIBSSH2_ERROR_EAGAIN)
					return;
				if (libssh2_userauth_authenticated(c->ssh)) {
					mux__set_up(c);
					return;
				}
				mux__fail(c, MUX_FAIL_AUTH, MUX_ESSH(ssh_err(c)),
					  "cannot list authentication methods: %s", ssh_errmsg(c));
				return;
			}
			c->auth_publickey = strstr(list, "publickey") != NULL;
			c->auth_password = strstr(list, "password") != NULL;
			c->auth_kbdint = strstr(list, "keyboard-interactive") != NULL;
			mux__log(c, 2, "server accepts: %s", list);
			c->state = c->auth_publickey ? CS_AUTH_AGENT : CS_AUTH_PASSWORD;
			break;
		}
		case CS_AUTH_AGENT:
			if (!c->agent_id) {
				/* first identity, or none: then on to key files */
				c->agent_id = c->agent_tried ? NULL : agent_next(c);
				if (!c->agent_id) {
					agent_done(c);
					break;
				}
				c->agent_tried++;
			}
			rc = libssh2_agent_userauth(c->agent, c->user, c->agent_id);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc == 0) {
				mux__log(c, 2, "authenticated with ssh-agent key %s",
					 c->agent_id->comment ? c->agent_id->comment : "");
				mux__set_up(c);
				return;
			}
			c->agent_id = agent_next(c);
			if (!c->agent_id)
				agent_done(c);
			else
				c->agent_tried++;
			break;
		case CS_AUTH_KEY: {
			if (c->key_idx >= c->opts.n_identities) {
				c->state = CS_AUTH_PASSWORD;
				break;
			}
			const char *key = c->identities[c->key_idx];
			rc = libssh2_userauth_publickey_fromfile_ex(
				c->ssh, c->user, (unsigned)strlen(c->user), NULL, key,
				c->secret_set ? c->secret : "");
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc == 0) {
				mux__log(c, 2, "authenticated with key %s", key);
				secret_clear(c);
				mux__set_up(c);
				return;
			}
			mux__log(c, 2, "key %s: %s", key, ssh_errmsg(c));
			if (rc == LIBSSH2_ERROR_FILE && !c->key_asked) {
				/* unreadable, or (the usual case) protected by a passphrase */
				char prompt[600];
				c->key_asked = true;
				snprintf(prompt, sizeof(prompt), "Enter passphrase for key '%s': ", key);
				if (ask(c, prompt, false) == 0)
					break; /* same key again, with the passphrase */
				tried_add(c, key);
				tried_add(c, "(passphrase-protected or unreadable; no terminal to ask "
					     "for a passphrase on)");
			} else {
				tried_add(c, key);
				if (rc == LIBSSH2_ERROR_FILE)
					tried_add(c, "(wrong passphrase or unreadable)");
			}
			secret_clear(c);
			c->key_asked = false;
			c->key_idx++;
			break;
		}
		case CS_AUTH_PASSWORD: {
			if (!c->auth_password || c->password_tries >= 3 || !c->opts.ask) {
				c->state = CS_AUTH_KBDINT;
				break;
			}
			if (!c->secret_set) {
				char prompt[400];
				snprintf(prompt, sizeof(prompt), "%s@%s's password: ", c->user, c->host);
				if (ask(c, prompt, false) != 0) {
					tried_add(c, "password (no terminal to ask on)");
					c->state = CS_AUTH_KBDINT;
					break;
				}
			}
			rc = libssh2_userauth_password_ex(c->ssh, c->user, (unsigned)strlen(c->user),
							  c->secret, (unsigned)strlen(c->secret),
							  NULL);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			secret_clear(c);
			if (rc == 0) {
				mux__log(c, 2, "authenticated with a password");
				mux__set_up(c);
				return;
			}
			mux__log(c, 1, "Permission denied, please try again.");
			if (++c->password_tries >= 3) {
				tried_add(c, "password (3 tries)");
				c->state = CS_AUTH_KBDINT;
			}
			break;
		}
		case CS_AUTH_KBDINT:
			if (!c->auth_kbdint || !c->opts.ask) {
				auth_failed(c);
				return;
			}
			rc = libssh2_userauth_keyboard_interactive_ex(
				c->ssh, c->user, (unsigned)strlen(c->user), kbdint_cb);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc == 0) {
				mux__log(c, 2, "authenticated with keyboard-interactive");
				mux__set_up(c);
				return;
			}
			tried_add(c, "keyboard-interactive");
			auth_failed(c);
			return;
		default:
			return;
		}
	}
}
