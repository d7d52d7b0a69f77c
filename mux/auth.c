/*
 * Bringing the session up: SSH handshake, host key check, user
 * authentication. Each step is a non-blocking libssh2 call; EAGAIN means
 * "waiting for the server" and the step is simply called again on the next
 * service. Order follows OpenSSH: agent identities, then key files.
 *
 * Host keys: checked against one known_hosts file with libssh2's knownhost
 * API ("[host]:port" entries for ports other than 22, hashed or plain). A
 * changed key always refuses. An unknown key refuses, or is appended as one
 * line (accept-new) without rewriting the user's file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mux/internal.h"

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

static void base64_nopad(const unsigned char *in, size_t n, char *out, size_t cap)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < cap; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = tab[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = tab[v & 63];
	}
	out[o] = '\0';
}

static int key_typebits(int hostkey_type, const char **name)
{
	switch (hostkey_type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA:
		*name = "RSA";
		return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
	case LIBSSH2_HOSTKEY_TYPE_DSS:
		*name = "DSA";
		return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
		*name = "ECDSA";
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
		*name = "ECDSA";
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
		*name = "ECDSA";
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
	case LIBSSH2_HOSTKEY_TYPE_ED25519:
		*name = "ED25519";
		return LIBSSH2_KNOWNHOST_KEY_ED25519;
	default:
		*name = "unknown";
		return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
	}
}

static void host_entry_name(const mux_conn *c, char *name, size_t cap)
{
	if (c->opts.port == 22)
		snprintf(name, cap, "%s", c->host);
	else
		snprintf(name, cap, "[%s]:%u", c->host, c->opts.port);
}

/* Append one known_hosts line for the current host key, creating the
 * file's directory (~/.ssh, mode 700) as ssh does. */
static int hostkey_append(mux_conn *c, LIBSSH2_KNOWNHOSTS *kh, const char *key, size_t klen,
			  int typemask)
{
	char name[300];
	char line[4096];
	size_t outlen = 0;
	struct libssh2_knownhost *entry = NULL;

	host_entry_name(c, name, sizeof(name));
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", c->known_hosts);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST)
			return -1;
	}
	if (libssh2_knownhost_addc(kh, name, NULL, key, klen, NULL, 0, typemask, &entry) != 0)
		return -1;
	if (libssh2_knownhost_writeline(kh, entry, line, sizeof(line), &outlen,
					LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0)
		return -1;
	FILE *f = fopen(c->known_hosts, "a");
	if (!f)
		return -1;
	size_t w = fwrite(line, 1, outlen, f);
	if (fclose(f) != 0 || w != outlen)
		return -1;
	return 0;
}

/* 0: key accepted; -1: refused (connection failed with a message). */
static int hostkey_check(mux_conn *c)
{
	size_t klen = 0;
	int ktype = 0;
	const char *key = libssh2_session_hostkey(c->ssh, &klen, &ktype);
	const unsigned char *hash =
		(const unsigned char *)libssh2_hostkey_hash(c->ssh, LIBSSH2_HOSTKEY_HASH_SHA256);
	char fp[64] = "?";
	const char *tname = "unknown";
	int rc = -1;

	if (!key) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_HOSTKEY_INIT),
			  "no host key from %s", c->host);
		return -1;
	}
	if (hash)
		base64_nopad(hash, 32, fp, sizeof(fp));
	int typemask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
		       key_typebits(ktype, &tname);

	LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(c->ssh);
	if (!kh) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_ALLOC), "out of memory");
		return -1;
	}
	struct stat st;
	if (c->known_hosts && stat(c->known_hosts, &st) == 0 &&
	    libssh2_knownhost_readfile(kh, c->known_hosts, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0)
		mux__log(c, 0, "warning: cannot parse all of %s", c->known_hosts);

	/* OpenSSH's names: "host" for port 22, "[host]:port" otherwise, and
	 * nothing else (libssh2's own port handling would also accept a
	 * portless entry for any port). Hashed entries hash the same name. */
	char name[300];
	host_entry_name(c, name, sizeof(name));
	struct libssh2_knownhost *found = NULL;
	int r = libssh2_knownhost_checkp(kh, name, -1, key, klen, typemask, &found);
	switch (r) {
	case LIBSSH2_KNOWNHOST_CHECK_MATCH:
		mux__log(c, 2, "host key for %s matches %s (%s SHA256:%s)", c->host,
			 c->known_hosts, tname, fp);
		rc = 0;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
			  "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
			  "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
			  "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
			  "The %s host key of %s port %u is not the one recorded in %s.\n"
			  "Someone could be eavesdropping on you right now (man-in-the-middle\n"
			  "attack), or the host key has just been changed.\n"
			  "The fingerprint of the key sent by the server is SHA256:%s.\n"
			  "Refusing to connect. If the change is expected, remove the old entry\n"
			  "(ssh-keygen -R '%s' -f %s) and connect again.",
			  tname, c->host, c->opts.port, c->known_hosts, fp, name, c->known_hosts);
		break;
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
		if (c->opts.hostkey_policy == MUX_HOSTKEY_STRICT) {
			mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
				  "Host key verification failed: no %s key for %s port %u in %s.\n"
				  "The server's key fingerprint is SHA256:%s.\n"
				  "Check it with the server's administrator, then add it (for example "
				  "with ssh once, or -o StrictHostKeyChecking=accept-new).",
				  tname, c->host, c->opts.port, c->known_hosts, fp);
			break;
		}
		if (c->opts.hostkey_policy == MUX_HOSTKEY_ACCEPT_NEW) {
			if (hostkey_append(c, kh, key, klen, typemask) != 0)
				mux__log(c, 0, "warning: could not add the host key to %s: %s",
					 c->known_hosts, strerror(errno));
			else
				mux__log(c, 1,
					 "Permanently added %s key SHA256:%s for %s port %u to %s",
					 tname, fp, c->host, c->opts.port, c->known_hosts);
		} else {
			mux__log(c, 1, "warning: host key of %s not checked (SHA256:%s)", c->host, fp);
		}
		rc = 0;
		break;
	default:
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
			  "cannot check the host key of %s against %s", c->host, c->known_hosts);
		break;
	}
	libssh2_knownhost_free(kh);
	return rc;
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
			if (hostkey_check(c) != 0)
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
