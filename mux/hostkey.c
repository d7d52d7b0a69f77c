/*
 * Host keys, checked the way OpenSSH checks them (sshconnect.c, hostfile.c
 * and sshd(8)'s known_hosts format were the model; nothing is copied).
 *
 * The host is looked up under one name: HostKeyAlias if set, else "host"
 * for port 22 and "[host]:port" for any other port. Every UserKnownHostsFile
 * and then every GlobalKnownHostsFile is read with our own parser
 * (knownhosts.c: markers, patterns with '*', '?' and '!', hashed names),
 * and the key the server sent is judged against every matching line:
 *
 *   @revoked line with this key         refuse, whatever the policy
 *   plain line with this key            accept
 *   plain lines, none with this key     refuse loudly: changed key, or a key
 *                                       of another type than the known ones
 *                                       (a known host never gets a new key)
 *   no plain line                       unknown: StrictHostKeyChecking says
 *
 * @cert-authority lines are reported (libssh2 cannot check a host
 * certificate) and otherwise ignored: plain keys are still checked. A file
 * that exists but cannot be read fails closed when it could have held the
 * answer. accept-new appends one line to the first user file, with a
 * hashed name under HashKnownHosts, never rewriting what is there.
 *
 * Before the handshake, the same lookup orders the host-key algorithms:
 * those whose key type is known for this host first (mux__hostkey_order),
 * so a host known by its ed25519 key negotiates ed25519 even if it offers
 * ECDSA too.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "mux/internal.h"
#include "mux/namelist.h"

#define KH_LINE_MAX (64 * 1024) /* longer lines are skipped */
#define KH_BLOB_MAX 16384       /* an RSA-16384 key is ~2 KiB */
#define KH_NAME_MAX 1100

/* ---- reading known_hosts files ---------------------------------------- */

static int hmac_sha1(const unsigned char *key, size_t klen, const unsigned char *msg, size_t mlen,
		     unsigned char out[20])
{
	unsigned int olen = 0;
	if (klen > INT_MAX || !HMAC(EVP_sha1(), key, (int)klen, msg, mlen, out, &olen) || olen != 20)
		return -1;
	return 0;
}

struct kh_ref {
	const char *file; /* points into c->opts */
	unsigned line;
	char type[64];
};

struct kh_scan {
	/* in: the server's key, or NULL to collect known types only */
	const unsigned char *blob;
	size_t blen;
	const char *btype;
	/* out */
	bool ok, revoked, changed, other, ca;
	struct kh_ref match, revoked_at, changed_at, other_at;
	char types[512];         /* key types of plain lines, comma separated */
	const char *unreadable;  /* a file that exists but could not be read */
	int unreadable_err;
};

static void ref_set(struct kh_ref *r, const char *file, unsigned line, const mux_kh_entry *e)
{
	r->file = file;
	r->line = line;
	size_t n = e->type_len < sizeof(r->type) - 1 ? e->type_len : sizeof(r->type) - 1;
	memcpy(r->type, e->type, n);
	r->type[n] = '\0';
}

static void types_add(struct kh_scan *s, const char *t, size_t len)
{
	size_t used = strlen(s->types);
	if (mux_nl_contains(s->types, t, len) || used + len + 2 > sizeof(s->types))
		return;
	if (used)
		s->types[used++] = ',';
	memcpy(s->types + used, t, len);
	s->types[used + len] = '\0';
}

static void kh_line(mux_conn *c, const char *path, unsigned no, const char *line, size_t len,
		    const char *name, struct kh_scan *s, unsigned char *blob)
{
	mux_kh_entry e;
	char btype[64];
	int r = mux_kh_parse(line, len, &e);
	if (r == MUX_KH_SKIP)
		return;
	if (r != MUX_KH_ENTRY) {
		mux__log(c, 3, "%s:%u: not a known_hosts entry, skipped", path, no);
		return;
	}
	int m = mux_kh_match(e.hosts, e.hosts_len, name, hmac_sha1);
	if (m < 0)
		mux__log(c, 3, "%s:%u: cannot check this hashed name, skipped", path, no);
	if (m <= 0)
		return;
	int blen = mux_kh_b64_decode(e.key, e.key_len, blob, KH_BLOB_MAX);
	if (blen < 0 || mux_kh_blob_type(blob, (size_t)blen, btype, sizeof(btype)) < 0 ||
	    strlen(btype) != e.type_len || memcmp(btype, e.type, e.type_len) != 0) {
		mux__log(c, 2, "%s:%u: unreadable key for %s, skipped", path, no, name);
		return;
	}
	bool same = s->blob && (size_t)blen == s->blen && memcmp(blob, s->blob, s->blen) == 0;
	switch (e.marker) {
	case MUX_KH_REVOKED:
		if (same && !s->revoked) {
			s->revoked = true;
			ref_set(&s->revoked_at, path, no, &e);
		}
		break;
	case MUX_KH_CA:
		s->ca = true;
		break;
	case MUX_KH_PLAIN:
		types_add(s, e.type, e.type_len);
		if (!s->blob)
			break;
		if (same) {
			if (!s->ok)
				ref_set(&s->match, path, no, &e);
			s->ok = true;
		} else if (strcmp(btype, s->btype) == 0) {
			if (!s->changed)
				ref_set(&s->changed_at, path, no, &e);
			s->changed = true;
		} else {
			if (!s->other)
				ref_set(&s->other_at, path, no, &e);
			s->other = true;
		}
		break;
	}
}

static void kh_file(mux_conn *c, const char *path, const char *name, struct kh_scan *s,
		    unsigned char *blob)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		if (errno != ENOENT && errno != ENOTDIR && !s->unreadable) {
			s->unreadable = path;
			s->unreadable_err = errno;
		}
		return;
	}
	char *line = NULL;
	size_t cap = 0;
	unsigned no = 0;
	ssize_t n;
	errno = 0;
	while ((n = getline(&line, &cap, f)) >= 0) {
		no++;
		if (n > KH_LINE_MAX) {
			mux__log(c, 2, "%s:%u: line longer than %d bytes, skipped", path, no,
				 KH_LINE_MAX);
			continue;
		}
		kh_line(c, path, no, line, (size_t)n, name, s, blob);
	}
	if (ferror(f) && !s->unreadable) {
		s->unreadable = path;
		s->unreadable_err = errno ? errno : EIO;
	}
	free(line);
	fclose(f);
}

/* Every user file, then every global file. */
static int kh_scan_all(mux_conn *c, const char *name, struct kh_scan *s)
{
	unsigned char *blob = malloc(KH_BLOB_MAX);
	if (!blob)
		return -1;
	for (size_t i = 0; i < c->opts.n_known_hosts_files; i++)
		kh_file(c, c->opts.known_hosts_files[i], name, s, blob);
	for (size_t i = 0; i < c->opts.n_global_known_hosts; i++)
		kh_file(c, c->opts.global_known_hosts[i], name, s, blob);
	free(blob);
	return 0;
}

static int kh_name(mux_conn *c, char *name, size_t cap)
{
	return mux_kh_lookup_name(c->host, c->opts.port, c->opts.hostkey_alias, name, cap);
}

/* "f1, f2, f3" for messages. */
static void kh_files_text(const mux_conn *c, char *out, size_t cap)
{
	size_t used = 0;
	out[0] = '\0';
	for (size_t k = 0; k < 2; k++) {
		const char *const *v = k ? c->opts.global_known_hosts : c->opts.known_hosts_files;
		size_t n = k ? c->opts.n_global_known_hosts : c->opts.n_known_hosts_files;
		for (size_t i = 0; i < n && used < cap; i++) {
			int w = snprintf(out + used, cap - used, "%s%s", used ? ", " : "", v[i]);
			if (w < 0)
				return;
			used += (size_t)w;
		}
	}
	if (!out[0])
		snprintf(out, cap, "(no known_hosts file)");
}

/* ---- host-key algorithm order ----------------------------------------- */

int mux__hostkey_order(mux_conn *c, const char *algs, char *out, size_t cap)
{
	char name[KH_NAME_MAX];
	struct kh_scan s = {0};
	if (c->opts.hostkey_algs_keep_order && c->opts.hostkey_algs && *c->opts.hostkey_algs)
		return -1;
	if (kh_name(c, name, sizeof(name)) < 0 || kh_scan_all(c, name, &s) != 0 || !s.types[0])
		return -1;
	size_t used = 0;
	out[0] = '\0';
	for (int pass = 0; pass < 2; pass++) {
		const char *p = algs;
		while (p && *p) {
			const char *comma = strchr(p, ',');
			size_t len = comma ? (size_t)(comma - p) : strlen(p), tl = 0;
			const char *kt = mux_kh_alg_keytype(p, len, &tl);
			bool known = kt && mux_nl_contains(s.types, kt, tl);
			if (known == (pass == 0) && mux_nl_append(out, cap, &used, p, len) != 0)
				return -1;
			p = comma ? comma + 1 : NULL;
		}
	}
	mux__log(c, 2, "known host key types for %s: %s", name, s.types);
	return 0;
}

/* ---- the check ---------------------------------------------------------- */

/* OpenSSH's short names in messages: ED25519, ECDSA, RSA. */
static const char *type_label(const char *t)
{
	static const struct {
		const char *prefix, *label;
	} tab[] = {{"ssh-ed25519", "ED25519"}, {"ecdsa-sha2-", "ECDSA"}, {"ssh-rsa", "RSA"},
		   {"ssh-dss", "DSA"}, {"sk-ssh-ed25519", "ED25519-SK"}, {"sk-ecdsa", "ECDSA-SK"}};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strncmp(t, tab[i].prefix, strlen(tab[i].prefix)) == 0)
			return tab[i].label;
	return t;
}

/* Append one line for the server's key to the first user file, creating
 * its directory (~/.ssh, mode 700) as ssh does. 0, or -1 with errno. */
static int kh_append(mux_conn *c, const char *name, const char *btype, const unsigned char *key,
		     size_t klen)
{
	char hashed[128];
	const char *path = c->opts.n_known_hosts_files ? c->opts.known_hosts_files[0] : NULL;
	if (!path) {
		errno = ENOENT;
		return -1;
	}
	if (c->opts.hash_known_hosts) {
		unsigned char salt[20];
		if (RAND_bytes(salt, sizeof(salt)) != 1 ||
		    mux_kh_hash_name(name, salt, hmac_sha1, hashed, sizeof(hashed)) < 0) {
			errno = EIO;
			return -1;
		}
		name = hashed;
	}
	size_t b64cap = (klen + 2) / 3 * 4 + 1;
	char *b64 = malloc(b64cap);
	if (!b64 || mux_kh_b64_encode(key, klen, b64, b64cap) < 0) {
		free(b64);
		errno = ENOMEM;
		return -1;
	}
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
			free(b64);
			return -1;
		}
	}
	int rc = -1;
	FILE *f = fopen(path, "a+");
	if (f) {
		/* A last line without its newline must not swallow ours. */
		bool nl = false;
		if (fseek(f, -1, SEEK_END) == 0) {
			int ch = fgetc(f);
			nl = ch != '\n' && ch != EOF;
		}
		int w = fprintf(f, "%s%s %s %s\n", nl ? "\n" : "", name, btype, b64);
		int e = errno;
		rc = (fclose(f) == 0 && w > 0) ? 0 : -1;
		if (rc != 0 && w <= 0)
			errno = e;
	}
	free(b64);
	return rc;
}

static const char banner_changed[] =
	"@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
	"@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
	"@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n";

/* 0: key accepted; -1: refused (connection failed with a message). */
int mux__hostkey_check(mux_conn *c)
{
	static bool ca_told;
	size_t klen = 0;
	int ktype = 0;
	const char *key = libssh2_session_hostkey(c->ssh, &klen, &ktype);
	const unsigned char *hash =
		(const unsigned char *)libssh2_hostkey_hash(c->ssh, LIBSSH2_HOSTKEY_HASH_SHA256);
	char fp[64] = "?", btype[64], name[KH_NAME_MAX], files[2048], who[KH_NAME_MAX + 300];
	struct kh_scan s = {0};

	if (!key || mux_kh_blob_type((const unsigned char *)key, klen, btype, sizeof(btype)) < 0) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_HOSTKEY_INIT),
			  "no usable host key from %s", c->host);
		return -1;
	}
	if (hash && mux_kh_b64_encode(hash, 32, fp, sizeof(fp)) > 0)
		fp[strcspn(fp, "=")] = '\0'; /* ssh prints SHA256 fingerprints unpadded */
	if (kh_name(c, name, sizeof(name)) < 0) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
			  "host name too long to look up: %s", c->host);
		return -1;
	}
	s.blob = (const unsigned char *)key;
	s.blen = klen;
	s.btype = btype;
	if (kh_scan_all(c, name, &s) != 0) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_ALLOC), "out of memory");
		return -1;
	}
	kh_files_text(c, files, sizeof(files));
	if (c->opts.hostkey_alias && *c->opts.hostkey_alias)
		snprintf(who, sizeof(who), "%s port %u (HostKeyAlias %s)", c->host, c->opts.port,
			 name);
	else
		snprintf(who, sizeof(who), "%s port %u", c->host, c->opts.port);
	const char *label = type_label(btype);

	if (s.ca) {
		mux__log(c, ca_told ? 2 : 1,
			 "a @cert-authority line names %s: libssh2 cannot check host certificates; "
			 "checking plain keys", name);
		ca_told = true;
	}
	if (s.unreadable)
		mux__log(c, 0, "warning: cannot read %s: %s", s.unreadable,
			 strerror(s.unreadable_err));
	if (s.revoked) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
			  "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
			  "@       WARNING: REVOKED HOST KEY DETECTED!               @\n"
			  "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
			  "The %s host key of %s is marked as revoked in %s:%u.\n"
			  "This could mean that a stolen key is being used to impersonate this host.\n"
			  "The fingerprint of the key sent by the server is SHA256:%s.\n"
			  "Refusing to connect, whatever StrictHostKeyChecking says.",
			  label, who, s.revoked_at.file, s.revoked_at.line, fp);
		return -1;
	}
	if (s.ok) {
		mux__log(c, 2, "host key for %s matches %s:%u (%s SHA256:%s)", name, s.match.file,
			 s.match.line, label, fp);
		return 0;
	}
	if (s.changed) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
			  "%s"
			  "The %s host key of %s is not the one recorded in %s:%u.\n"
			  "Someone could be eavesdropping on you right now (man-in-the-middle\n"
			  "attack), or the host key has just been changed.\n"
			  "The fingerprint of the key sent by the server is SHA256:%s.\n"
			  "Offending %s key in %s:%u.\n"
			  "Refusing to connect. If the change is expected, remove the old entry\n"
			  "(ssh-keygen -R '%s' -f %s) and connect again.",
			  banner_changed, label, who, s.changed_at.file, s.changed_at.line, fp,
			  type_label(s.changed_at.type), s.changed_at.file, s.changed_at.line, name,
			  s.changed_at.file);
		return -1;
	}
	if (s.other) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
			  "%s"
			  "%s sent a %s host key, but the key known for it is of another type:\n"
			  "%s key in %s:%u. A known host never gets a key of another type added:\n"
			  "someone could be eavesdropping on you right now (man-in-the-middle\n"
			  "attack), or the server's keys have just been changed.\n"
			  "The fingerprint of the key sent by the server is SHA256:%s.\n"
			  "Refusing to connect. If the change is expected, remove the old entry\n"
			  "(ssh-keygen -R '%s' -f %s) and connect again.",
			  banner_changed, who, label, type_label(s.other_at.type), s.other_at.file,
			  s.other_at.line, fp, name, s.other_at.file);
		return -1;
	}
	/* Unknown. A file we could not read might have known it: no. */
	if (s.unreadable && c->opts.hostkey_policy != MUX_HOSTKEY_STRICT) {
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
			  "Host key verification failed: %s is not known, and %s cannot be read "
			  "(%s), so whether it is known cannot be told. Refusing to connect.",
			  who, s.unreadable, strerror(s.unreadable_err));
		return -1;
	}
	switch (c->opts.hostkey_policy) {
	case MUX_HOSTKEY_ACCEPT_NEW:
		if (kh_append(c, name, btype, (const unsigned char *)key, klen) != 0)
			mux__log(c, 0, "warning: could not add the host key to %s: %s",
				 c->opts.n_known_hosts_files ? c->opts.known_hosts_files[0]
							     : "(no UserKnownHostsFile)",
				 strerror(errno));
		else
			mux__log(c, 1, "Permanently added %s key SHA256:%s for %s to %s%s", label,
				 fp, who, c->opts.known_hosts_files[0],
				 c->opts.hash_known_hosts ? " (hashed name)" : "");
		return 0;
	case MUX_HOSTKEY_OFF:
		mux__log(c, 1, "warning: host key of %s not checked (%s SHA256:%s)", who, label, fp);
		return 0;
	case MUX_HOSTKEY_STRICT:
	default:
		mux__fail(c, MUX_FAIL_HOSTKEY, MUX_ESSH(LIBSSH2_ERROR_KNOWN_HOSTS),
			  "Host key verification failed: no %s key for %s in %s.\n"
			  "The server's key fingerprint is SHA256:%s.\n"
			  "Check it with the server's administrator, then add it (for example "
			  "with ssh once, or -o StrictHostKeyChecking=accept-new).",
			  label, who, files, fp);
		return -1;
	}
}
