/*
 * The identities to offer, in the order OpenSSH's pubkey_prepare() uses:
 *
 *   1. certificates named by CertificateFile;
 *   2. agent keys that are also configured identity files (the agent
 *      signs: no passphrase needed);
 *   3. the other agent keys, in the agent's order, unless IdentitiesOnly;
 *   4. the remaining identity files, each followed by KEY-cert.pub when
 *      that exists and no CertificateFile is given (as ssh does).
 *
 * A file's public half comes from KEY.pub or from the unencrypted header
 * of an OpenSSH-format private key, so a key can be offered before its
 * passphrase is asked for; a PEM key without KEY.pub is offered only once
 * decrypted (its public half is unknown until then). Files that cannot be
 * read stay in the list with their error, so the failure message can say
 * what happened to each.
 *
 * The list owns its strings and blobs; agent identities point into the
 * agent's own list and live as long as c->agent (auth cleanup frees both).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mux/internal.h"

#define MAX_IDS 64

typedef struct id_list {
	struct mux_ident *v;
	size_t n;
} id_list;

static void ident_clear(struct mux_ident *id)
{
	free(id->path);
	free(id->label);
	free(id->blob);
	memset(id, 0, sizeof(*id));
}

static struct mux_ident *list_add(id_list *l)
{
	if (l->n >= MAX_IDS)
		return NULL;
	struct mux_ident *id = &l->v[l->n++];
	memset(id, 0, sizeof(*id));
	return id;
}

static void list_free(id_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		ident_clear(&l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static char *strcat2(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 1;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s%s", a, b);
	return s;
}

static void set_blob(struct mux_ident *id, unsigned char *blob, size_t len)
{
	free(id->blob);
	id->blob = blob;
	id->blob_len = len;
	id->type[0] = '\0';
	if (blob && !mux__key_blob_type(blob, len, id->type, sizeof(id->type)))
		id->type[0] = '\0';
	id->cert = id->type[0] && mux__key_is_cert_type(id->type);
}

/* A public key file (KEY.pub, KEY-cert.pub, a CertificateFile): its blob,
 * or -errno / -EINVAL. */
static int read_pub(const char *path, unsigned char **blob, size_t *len)
{
	char *text;
	size_t tl;
	int rc = mux__key_read_file(path, &text, &tl);
	if (rc != 0)
		return rc;
	rc = mux__key_parse_pub(text, tl, blob, len) == 0 ? 0 : -EINVAL;
	free(text);
	return rc;
}

/* An identity file: whether it needs a passphrase and its public half. */
static int load_file(mux_conn *c, struct mux_ident *id, const char *path)
{
	char *data;
	size_t len;
	unsigned char *blob = NULL, *pub = NULL;
	size_t blob_len = 0, pub_len = 0;
	if (!(id->path = strdup(path)) || !(id->label = strdup(path)))
		return UV_ENOMEM;
	id->file_err = mux__key_read_file(path, &data, &len);
	if (id->file_err != 0) {
		mux__log(c, 2, "identity file %s: %s", path, strerror(-id->file_err));
		return 0;
	}
	if (mux__key_parse_private(data, len, &id->encrypted, &blob, &blob_len) != 0)
		id->file_err = -EINVAL;
	mux__wipe_free(data, len + 1);
	if (id->file_err != 0) {
		mux__log(c, 2, "identity file %s: not a private key ssh can read", path);
		return 0;
	}
	/* KEY.pub is what ssh offers first; the header must agree with it. */
	char *pubpath = strcat2(path, ".pub");
	if (!pubpath) {
		free(blob);
		return UV_ENOMEM;
	}
	if (read_pub(pubpath, &pub, &pub_len) == 0 &&
	    (!blob || (pub_len == blob_len && memcmp(pub, blob, blob_len) == 0))) {
		free(blob);
		blob = pub;
		blob_len = pub_len;
	} else {
		free(pub);
	}
	free(pubpath);
	set_blob(id, blob, blob_len);
	mux__log(c, 3, "identity file %s: %s%s", path, id->type[0] ? id->type : "key type unknown",
		 id->encrypted ? ", passphrase protected" : "");
	return 0;
}

/* KEY-cert.pub next to KEY: a certificate of KEY, or nothing. */
static int load_cert_beside(mux_conn *c, id_list *files, const struct mux_ident *key)
{
	unsigned char *blob;
	size_t len;
	char *cpath = strcat2(key->path, "-cert.pub");
	if (!cpath)
		return UV_ENOMEM;
	if (read_pub(cpath, &blob, &len) != 0) {
		free(cpath);
		return 0;
	}
	if (key->blob && !mux__cert_certifies(blob, len, key->blob, key->blob_len)) {
		mux__log(c, 2, "%s is not a certificate of %s: not used", cpath, key->path);
		free(blob);
		free(cpath);
		return 0;
	}
	struct mux_ident *id = list_add(files);
	if (!id || !(id->path = strdup(key->path))) {
		free(blob);
		free(cpath);
		return id ? UV_ENOMEM : 0;
	}
	id->label = cpath;
	id->encrypted = key->encrypted;
	set_blob(id, blob, len);
	return 0;
}

static int load_cert_file(mux_conn *c, id_list *pref, const char *path)
{
	struct mux_ident *id = list_add(pref);
	if (!id)
		return 0;
	if (!(id->label = strdup(path)))
		return UV_ENOMEM;
	unsigned char *blob;
	size_t len;
	id->file_err = read_pub(path, &blob, &len);
	if (id->file_err == 0) {
		set_blob(id, blob, len);
		if (!id->cert)
			id->file_err = -EINVAL;
	}
	if (id->file_err != 0)
		mux__log(c, 2, "certificate file %s: %s", path,
			 id->file_err == -EINVAL ? "not a certificate" : strerror(-id->file_err));
	return 0;
}

static bool blob_equal(const struct mux_ident *id, const struct libssh2_agent_publickey *a)
{
	return id->blob && id->blob_len == a->blob_len && memcmp(id->blob, a->blob, a->blob_len) == 0;
}

/* Connect to ssh-agent and list its keys; false when there is none. */
static bool agent_open(mux_conn *c)
{
	char *msg = NULL;
	if (!c->opts.use_agent || !getenv("SSH_AUTH_SOCK"))
		return false;
	c->agent = libssh2_agent_init(c->ssh);
	if (!c->agent)
		return false;
	if (libssh2_agent_connect(c->agent) != 0 || libssh2_agent_list_identities(c->agent) != 0) {
		libssh2_session_last_error(c->ssh, &msg, NULL, 0);
		mux__log(c, 2, "ssh-agent not usable: %s", msg && *msg ? msg : "unknown error");
		libssh2_agent_disconnect(c->agent);
		libssh2_agent_free(c->agent);
		c->agent = NULL;
		return false;
	}
	return true;
}

static int take_agent_keys(mux_conn *c, id_list *pref, id_list *files, id_list *agent)
{
	struct libssh2_agent_publickey *a = NULL, *prev = NULL;
	while (libssh2_agent_get_identity(c->agent, &a, prev) == 0) {
		prev = a;
		bool found = false;
		/* CertificateFile entries the agent holds: it signs them */
		for (size_t i = 0; i < pref->n; i++)
			if (!pref->v[i].agent_id && blob_equal(&pref->v[i], a)) {
				pref->v[i].agent_id = a;
				found = true;
			}
		for (size_t i = 0; !found && i < files->n; i++) {
			if (!blob_equal(&files->v[i], a))
				continue;
			struct mux_ident *id = list_add(pref);
			if (!id)
				break;
			*id = files->v[i];
			id->agent_id = a;
			memmove(&files->v[i], &files->v[i + 1], (files->n - i - 1) * sizeof(files->v[0]));
			files->n--;
			found = true;
		}
		if (found || c->opts.identities_only)
			continue;
		struct mux_ident *id = list_add(agent);
		if (!id)
			break;
		unsigned char *blob = malloc(a->blob_len ? a->blob_len : 1);
		char label[200];
		snprintf(label, sizeof(label), "ssh-agent key %s", a->comment && *a->comment ? a->comment : "(no comment)");
		char clean[200];
		mux__sanitize(label, strlen(label), clean, sizeof(clean), false);
		if (!blob || !(id->label = strdup(clean))) {
			free(blob);
			return UV_ENOMEM;
		}
		memcpy(blob, a->blob, a->blob_len);
		set_blob(id, blob, a->blob_len);
		id->agent_id = a;
	}
	return 0;
}

static int append(id_list *dst, id_list *src)
{
	for (size_t i = 0; i < src->n; i++) {
		struct mux_ident *id = list_add(dst);
		if (!id)
			break;
		*id = src->v[i];
		memset(&src->v[i], 0, sizeof(src->v[i]));
	}
	src->n = 0;
	return 0;
}

int mux__ident_build(mux_conn *c)
{
	id_list pref = {0}, files = {0}, agent = {0};
	int rc = UV_ENOMEM;
	mux__ident_free(c);
	pref.v = calloc(MAX_IDS, sizeof(*pref.v));
	files.v = calloc(MAX_IDS, sizeof(*files.v));
	agent.v = calloc(MAX_IDS, sizeof(*agent.v));
	if (!pref.v || !files.v || !agent.v)
		goto out;
	for (size_t i = 0; i < c->opts.n_certificates; i++)
		if ((rc = load_cert_file(c, &pref, c->certificates[i])) != 0)
			goto out;
	for (size_t i = 0; i < c->opts.n_identities; i++) {
		struct mux_ident *id = list_add(&files);
		if (!id)
			break;
		if ((rc = load_file(c, id, c->identities[i])) != 0)
			goto out;
		if (!id->file_err && !c->opts.n_certificates &&
		    (rc = load_cert_beside(c, &files, id)) != 0)
			goto out;
	}
	/* a CertificateFile is signed with the identity file it certifies */
	for (size_t i = 0; i < pref.n; i++)
		for (size_t j = 0; pref.v[i].cert && !pref.v[i].path && j < files.n; j++)
			if (files.v[j].blob && !files.v[j].cert &&
			    mux__cert_certifies(pref.v[i].blob, pref.v[i].blob_len, files.v[j].blob,
						files.v[j].blob_len)) {
				if (!(pref.v[i].path = strdup(files.v[j].path))) {
					rc = UV_ENOMEM;
					goto out;
				}
				pref.v[i].encrypted = files.v[j].encrypted;
			}
	if (agent_open(c) && (rc = take_agent_keys(c, &pref, &files, &agent)) != 0)
		goto out;
	append(&pref, &agent);
	append(&pref, &files);
	c->ids = pref.v;
	c->n_ids = pref.n;
	pref.v = NULL;
	pref.n = 0;
	for (size_t i = 0; i < c->n_ids; i++)
		mux__log(c, 3, "will try %s%s%s", c->ids[i].label,
			 c->ids[i].agent_id ? " (ssh-agent)" : "", c->ids[i].cert ? " (certificate)" : "");
	rc = 0;
out:
	list_free(&pref);
	list_free(&files);
	list_free(&agent);
	return rc;
}

void mux__ident_free(mux_conn *c)
{
	for (size_t i = 0; i < c->n_ids; i++)
		ident_clear(&c->ids[i]);
	free(c->ids);
	c->ids = NULL;
	c->n_ids = 0;
	c->id_idx = 0;
}
