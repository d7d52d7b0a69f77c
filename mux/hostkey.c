/*
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
int mux__hostkey_check(mux_conn *c)
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

