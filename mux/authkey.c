/*
 * publickey authentication, one identity at a time (the list and its
 * order come from ident.c). An identity goes through these steps:
 *
 *   START  read the private key file (agent keys: straight to AGENT)
 *   PROBE  passphrase-protected key with a known public half: ask the
 *          server whether it would take the key (a sign callback that
 *          only notes that it was called), and ask for the passphrase only
 *          if it would, as ssh does
 *   SIGN   libssh2 offers the key and signs (public line + private file)
 *   AGENT  ssh-agent signs
 *
 * Each call that says EAGAIN is made again with the same arguments: the
 * key data, public line and passphrase stay in the conn until the
 * identity is done. Every identity that fails leaves a note saying why.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mux/internal.h"

enum { ID_START, ID_PROBE, ID_SIGN, ID_AGENT };

/* libssh2 1.10 signs RSA keys with ssh-rsa (SHA-1) only. */
static bool lib_has_rsa_sha2(void)
{
	return libssh2_version(0x010b00) != NULL;
}

static void id_next(mux_conn *c)
{
	mux__wipe_free(c->key_data, c->key_len + 1);
	c->key_data = NULL;
	c->key_len = 0;
	free(c->key_pub);
	c->key_pub = NULL;
	mux__auth_secret_clear(c);
	c->id_step = ID_START;
	c->id_idx++;
}

static void id_refused(mux_conn *c, struct mux_ident *id)
{
	if (!lib_has_rsa_sha2() && strncmp(id->type, "ssh-rsa", 7) == 0) {
		c->rsa_refused = true;
		mux__auth_note(c, id->label, "refused by the server; libssh2 %s signs RSA keys with ssh-rsa "
				   "(SHA-1) only", libssh2_version(0));
	} else {
		mux__auth_note(c, id->label, "refused by the server");
	}
}

/* After SIGN or AGENT failed with rc. */
static void id_failed(mux_conn *c, struct mux_ident *id, int rc)
{
	const char *msg = mux__ssh_errmsg(c);
	/* libssh2 answers AUTHENTICATION_FAILED only when the server refused
	 * the key itself; PUBLICKEY_UNVERIFIED "Callback returned error" when
	 * it would take the key but signing failed here (private key not
	 * loadable: wrong passphrase), otherwise when it refused the signature. */
	bool sign_local = rc == LIBSSH2_ERROR_FILE ||
			  (rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED && strstr(msg, "Callback"));
	if (rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED)
		id_refused(c, id);
	else if (sign_local && id->agent_id)
		mux__auth_note(c, id->label, "ssh-agent could not sign: %s", msg);
	else if (sign_local && id->encrypted)
		mux__auth_note(c, id->label, "wrong passphrase");
	else if (sign_local)
		mux__auth_note(c, id->label, "private key not usable: %s", msg);
	else if (rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED && !c->disconnect_msg[0] && !c->in_eof) {
		mux__auth_note(c, id->label, "the server took the key but refused its %s signature",
		     id->type[0] ? id->type : "");
	} else
		mux__auth_note(c, id->label, "%s", msg);
}

static bool ask_passphrase(mux_conn *c, struct mux_ident *id)
{
	char key[4200], prompt[4200];
	if (c->opts.batch_mode) {
		mux__auth_note(c, id->label, "passphrase needed; BatchMode does not ask for one");
		return false;
	}
	snprintf(key, sizeof(key), "passphrase:%s", id->path);
	snprintf(prompt, sizeof(prompt), "Enter passphrase for key '%s': ", id->path);
	if (mux__auth_ask(c, key, prompt, false) != 0) {
		mux__auth_note(c, id->label, "passphrase needed; no terminal to ask for a passphrase on");
		return false;
	}
	return true;
}

static LIBSSH2_USERAUTH_PUBLICKEY_SIGN_FUNC(probe_cb)
{
	mux_conn *c = *abstract;
	(void)session;
	(void)data;
	(void)data_len;
	*sig = NULL;
	*sig_len = 0;
	c->probe_ok = true; /* called only after the server's PK_OK */
	return -1;
}

static void id_start(mux_conn *c, struct mux_ident *id)
{
	if (id->file_err) {
		int e = -id->file_err;
		mux__auth_note(c, id->label, "%s",
		     e == ENOENT ? "no such file"
		     : e == EINVAL ? (id->path ? "not a private key file ssh can read" : "not a certificate")
		     : e == EACCES ? "not readable: permission denied"
				   : strerror(e));
		id_next(c);
		return;
	}
	if (id->agent_id) {
		c->keys_offered++;
		c->id_step = ID_AGENT;
		return;
	}
	if (!id->path) {
		mux__auth_note(c, id->label, "no identity file holds its private key");
		id_next(c);
		return;
	}
	int rc = mux__key_read_file(id->path, &c->key_data, &c->key_len);
	if (rc != 0) {
		mux__auth_note(c, id->label, "not readable: %s", strerror(-rc));
		id_next(c);
		return;
	}
	c->key_pub = id->blob ? mux__key_publine(id->blob, id->blob_len) : NULL;
	if (!id->encrypted) {
		c->id_step = ID_SIGN;
	} else if (c->key_pub) {
		c->probe_ok = false;
		c->id_step = ID_PROBE;
	} else if (ask_passphrase(c, id)) {
		c->id_step = ID_SIGN; /* public half unknown: passphrase first, as ssh */
	} else {
		id_next(c);
		return;
	}
	c->keys_offered++; /* once, whether probed first or not */
}

/* Returns true when waiting for the server (or done). */
bool mux__auth_pubkey_step(mux_conn *c)
{
	if (c->id_idx >= c->n_ids) {
		c->state = CS_AUTH_NEXT;
		return false;
	}
	struct mux_ident *id = &c->ids[c->id_idx];
	int rc;
	switch (c->id_step) {
	case ID_START:
		id_start(c, id);
		return false;
	case ID_PROBE:
		rc = libssh2_userauth_publickey(c->ssh, c->user, id->blob, id->blob_len, probe_cb,
						&c->auth_self);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return true;
		if (rc == 0)
			break; /* taken without a signature (never from OpenSSH) */
		if (!c->probe_ok) {
			if (!mux__auth_lost(c)) {
				id_failed(c, id, rc);
				id_next(c);
			}
			return c->state == CS_DEAD;
		}
		if (ask_passphrase(c, id))
			c->id_step = ID_SIGN;
		else
			id_next(c);
		return false;
	case ID_SIGN: /* a signature from the key file, or from the agent */
	case ID_AGENT:
		if (c->id_step == ID_AGENT)
			rc = libssh2_agent_userauth(c->agent, c->user, id->agent_id);
		else
			rc = libssh2_userauth_publickey_frommemory(
				c->ssh, c->user, strlen(c->user), c->key_pub,
				c->key_pub ? strlen(c->key_pub) : 0, c->key_data, c->key_len,
				c->secret_set ? c->secret : "");
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return true;
		if (rc == 0)
			break;
		if (mux__auth_lost(c))
			return true;
		id_failed(c, id, rc);
		id_next(c);
		return false;
	}
	if (id->agent_id && !id->path)
		mux__log(c, 2, "authenticated with %s", id->label); /* "ssh-agent key COMMENT" */
	else
		mux__log(c, 2, "authenticated with %s%s %s", id->agent_id ? "ssh-agent " : "",
			 id->cert ? "certificate" : "key", id->label);
	mux__set_up(c);
	return true;
}

