/*
 * Algorithms: what ssh's Ciphers, MACs, KexAlgorithms and HostKeyAlgorithms
 * mean for this build, and the preferences a new session is given.
 *
 * The build's lists are asked of the running libssh2 each time (a scratch
 * session and libssh2_session_supported_algs), never written down here:
 * 1.10 and 1.11 differ (GCM, chacha20, etm MACs, rsa-sha2). ftpssh's own
 * preferences are the one table below, cut to what the build has. Every
 * libssh2_session_method_pref result is checked: libssh2 silently drops
 * names it does not know and only fails when none is left, so user lists
 * are validated before (mux_algs_resolve) and a failure here is a bug or a
 * library that changed under us, reported rather than ignored.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mux/internal.h"
#include "mux/namelist.h"

/* ==== ftpssh's default preferences =========================================
 * THE table of defaults: first the one measured fastest among the safe ones,
 * then OpenSSH's other defaults. Ciphers as measured with the bundled
 * libssh2 (patch 0004, issue 13; bench/ssh_reader, one channel, loopback):
 * AES-GCM ~300 MB/s at ~1.6 CPU s/GiB, AES-CTR + HMAC-SHA2 ~180 MB/s at
 * ~2.7, ChaCha20-Poly1305 (libssh2's own C code) ~140 MB/s at ~4.6.
 * MACs: encrypt-then-MAC first, as OpenSSH (the MAC covers the ciphertext;
 * with patch 0004 it costs the same as MAC-then-encrypt). Names the
 * running libssh2 lacks are skipped.
 * Left out on purpose: CBC modes, arcfour, blowfish, cast, 3des, MD5,
 * RIPEMD, truncated MACs, SHA-1 key exchange and ssh-dss (give them with
 * "+name" if an old server needs them). Host certificate algorithms are
 * never offered (libssh2 cannot check the CA's signature). */
static const char *const default_algs[MUX_ALG_KINDS] = {
	[MUX_ALG_CIPHER] = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
			   "aes128-ctr,aes192-ctr,aes256-ctr,"
			   "chacha20-poly1305@openssh.com",
	[MUX_ALG_MAC] = "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,"
			"hmac-sha1-etm@openssh.com,"
			"hmac-sha2-256,hmac-sha2-512,hmac-sha1",
	[MUX_ALG_KEX] = "curve25519-sha256,curve25519-sha256@libssh.org,"
			"ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
			"diffie-hellman-group-exchange-sha256,"
			"diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,"
			"diffie-hellman-group14-sha256",
	[MUX_ALG_HOSTKEY] = "ssh-ed25519,"
			    "ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,"
			    "rsa-sha2-512,rsa-sha2-256,ssh-rsa",
};
/* ========================================================================== */

#define ALG_LIST_MAX 2048

static const struct {
	const char *option;   /* ssh_config name */
	const char *query;    /* ssh -Q name */
	int method;           /* libssh2 method type */
} kinds[MUX_ALG_KINDS] = {
	[MUX_ALG_CIPHER] = {"Ciphers", "cipher", LIBSSH2_METHOD_CRYPT_CS},
	[MUX_ALG_MAC] = {"MACs", "mac", LIBSSH2_METHOD_MAC_CS},
	[MUX_ALG_KEX] = {"KexAlgorithms", "kex", LIBSSH2_METHOD_KEX},
	[MUX_ALG_HOSTKEY] = {"HostKeyAlgorithms", "key", LIBSSH2_METHOD_HOSTKEY},
};

int mux_alg_kind_from_query(const char *q)
{
	if (!q)
		return -1;
	for (int k = 0; k < MUX_ALG_KINDS; k++)
		if (strcasecmp(q, kinds[k].query) == 0 || strcasecmp(q, kinds[k].option) == 0)
			return k;
	return -1;
}

const char *mux_alg_option_name(enum mux_alg_kind kind)
{
	return (unsigned)kind < MUX_ALG_KINDS ? kinds[kind].option : "?";
}

/* Names the library lists that are not algorithms one may choose. */
static bool alg_hidden(enum mux_alg_kind kind, const char *name)
{
	size_t len = strlen(name);
	if (strcmp(name, "none") == 0)
		return true;
	if (kind == MUX_ALG_KEX)
		return strncmp(name, "ext-info-", 9) == 0 || strncmp(name, "kex-strict-", 11) == 0;
	if (kind == MUX_ALG_HOSTKEY) {
		size_t tl;
		return !mux_kh_alg_keytype(name, len, &tl);
	}
	return false;
}

/* The library's list for KIND into out; with pseudo, only the hidden KEX
 * pseudo-algorithms instead. */
static int supported_list(enum mux_alg_kind kind, bool pseudo, char *out, size_t cap)
{
	static bool inited;
	const char **algs = NULL;
	size_t used = 0;
	int rc = 0;
	if ((unsigned)kind >= MUX_ALG_KINDS || cap == 0)
		return MUX_ESSH(LIBSSH2_ERROR_INVAL);
	out[0] = '\0';
	if (!inited) {
		if (libssh2_init(0) != 0)
			return MUX_ESSH(LIBSSH2_ERROR_ALLOC);
		inited = true;
	}
	LIBSSH2_SESSION *s = libssh2_session_init();
	if (!s)
		return MUX_ESSH(LIBSSH2_ERROR_ALLOC);
	int n = libssh2_session_supported_algs(s, kinds[kind].method, &algs);
	if (n < 0) {
		rc = MUX_ESSH(n);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if (!algs[i] || alg_hidden(kind, algs[i]) != pseudo ||
		    (pseudo && kind != MUX_ALG_KEX))
			continue;
		size_t len = strlen(algs[i]);
		if (used + len + 2 > cap) {
			rc = MUX_ESSH(LIBSSH2_ERROR_BUFFER_TOO_SMALL);
			goto out;
		}
		if (used)
			out[used++] = ',';
		memcpy(out + used, algs[i], len + 1);
		used += len;
	}
out:
	if (algs)
		libssh2_free(s, (void *)algs);
	libssh2_session_free(s);
	return rc;
}

int mux_algs_supported(enum mux_alg_kind kind, char *out, size_t cap)
{
	return supported_list(kind, false, out, cap);
}

int mux_algs_default(enum mux_alg_kind kind, char *out, size_t cap)
{
	char sup[ALG_LIST_MAX];
	int rc = mux_algs_supported(kind, sup, sizeof(sup));
	if (rc < 0)
		return rc;
	/* The table cut to the build: a plain list of patterns that all exist
	 * would fail on the first missing one, so filter name by name. */
	const char *p = default_algs[kind];
	size_t used = 0;
	out[0] = '\0';
	while (p && *p) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (mux_nl_contains(sup, p, len) && mux_nl_append(out, cap, &used, p, len) != 0)
			return MUX_ESSH(LIBSSH2_ERROR_BUFFER_TOO_SMALL);
		p = comma ? comma + 1 : NULL;
	}
	return 0;
}

/* NAME ("name", quoted here) is not one this build can use. */
static void unsupported_msg(enum mux_alg_kind kind, const char *name, const char *sup, char *msg,
			    size_t msgcap)
{
	snprintf(msg, msgcap,
		 "%s: \"%s\" is not supported by this build (libssh2 %s); it supports: %s",
		 kinds[kind].option, name, mux_libssh2_version(), sup);
}

int mux_algs_resolve(enum mux_alg_kind kind, const char *spec, char *out, size_t cap, char *msg,
		     size_t msgcap)
{
	char sup[ALG_LIST_MAX], def[ALG_LIST_MAX], bad[128];
	if (msgcap)
		msg[0] = '\0';
	if ((unsigned)kind >= MUX_ALG_KINDS || mux_algs_supported(kind, sup, sizeof(sup)) < 0 ||
	    mux_algs_default(kind, def, sizeof(def)) < 0) {
		snprintf(msg, msgcap, "cannot list the algorithms of this libssh2");
		return -1;
	}
	switch (mux_nl_resolve(spec, def, sup, out, cap, bad, sizeof(bad))) {
	case MUX_NL_OK:
		return 0;
	case MUX_NL_EBADNAME:
		unsupported_msg(kind, bad, sup, msg, msgcap);
		return -1;
	case MUX_NL_EEMPTY:
		snprintf(msg, msgcap, "%s: %s leaves no algorithm to offer; this build supports: %s",
			 kinds[kind].option, spec, sup);
		return -1;
	default:
		snprintf(msg, msgcap, "%s: list too long", kinds[kind].option);
		return -1;
	}
}

int mux_algs_from_ssh(enum mux_alg_kind kind, const char *ssh_list, const char *ssh_baseline,
		      char *out, size_t cap, char *msg, size_t msgcap)
{
	char sup[ALG_LIST_MAX], bad[128];
	if (msgcap)
		msg[0] = '\0';
	if ((unsigned)kind >= MUX_ALG_KINDS || mux_algs_supported(kind, sup, sizeof(sup)) < 0) {
		snprintf(msg, msgcap, "cannot list the algorithms of this libssh2");
		return -1;
	}
	if (ssh_list && !*ssh_list) {
		/* ssh -G prints an empty list when "-*" removed every name */
		snprintf(msg, msgcap, "%s: the list leaves no algorithm to offer; this build "
			 "supports: %s", kinds[kind].option, sup);
		return -1;
	}
	switch (mux_nl_from_ssh(ssh_list, ssh_baseline, sup, out, cap, bad, sizeof(bad))) {
	case MUX_NL_SAME:
		return 1;
	case MUX_NL_OK:
		return 0;
	case MUX_NL_EBADNAME:
		unsupported_msg(kind, bad, sup, msg, msgcap);
		return -1;
	case MUX_NL_EEMPTY:
		if (!strchr(ssh_list, ',')) {
			/* one name, asked for, that the build lacks: name it */
			unsupported_msg(kind, ssh_list, sup, msg, msgcap);
			return -1;
		}
		snprintf(msg, msgcap, "%s: none of ssh's list (%s) is supported by this build; it "
			 "supports: %s", kinds[kind].option, ssh_list, sup);
		return -1;
	default:
		snprintf(msg, msgcap, "%s: list too long", kinds[kind].option);
		return -1;
	}
}

static int pref(mux_conn *c, int method, const char *list, const char *what)
{
	int rc = libssh2_session_method_pref(c->ssh, method, list);
	if (rc != 0)
		mux__log(c, 0, "libssh2 refused the %s preference \"%s\": %s", what, list,
			 mux_strerror(MUX_ESSH(rc)));
	return rc == 0 ? 0 : MUX_ESSH(rc);
}

int mux__algos_apply(mux_conn *c)
{
	char list[ALG_LIST_MAX], hk[ALG_LIST_MAX];
	int rc;
	const char *given[MUX_ALG_KINDS] = {c->opts.ciphers, c->opts.macs, c->opts.kex,
					    c->opts.hostkey_algs};
	for (int k = 0; k < MUX_ALG_KINDS; k++) {
		const char *l = given[k];
		if (!l || !*l) {
			if ((rc = mux_algs_default(k, list, sizeof(list))) < 0)
				return rc;
			l = list;
		}
		switch (k) {
		case MUX_ALG_CIPHER:
			if ((rc = pref(c, LIBSSH2_METHOD_CRYPT_CS, l, "cipher")) < 0 ||
			    (rc = pref(c, LIBSSH2_METHOD_CRYPT_SC, l, "cipher")) < 0)
				return rc;
			break;
		case MUX_ALG_MAC:
			if ((rc = pref(c, LIBSSH2_METHOD_MAC_CS, l, "MAC")) < 0 ||
			    (rc = pref(c, LIBSSH2_METHOD_MAC_SC, l, "MAC")) < 0)
				return rc;
			break;
		case MUX_ALG_KEX: {
			/* A KEX list replaces libssh2's, pseudo-algorithms included;
			 * 1.11.1 puts ext-info-c and kex-strict-c back itself, older
			 * versions need the ones they list kept by hand (strict KEX
			 * is the Terrapin fix). */
			char pseudo[256], kx[ALG_LIST_MAX + 256];
			const char *kl = l;
			if (!libssh2_version(0x010b01) &&
			    supported_list(MUX_ALG_KEX, true, pseudo, sizeof(pseudo)) == 0 && pseudo[0]) {
				snprintf(kx, sizeof(kx), "%s,%s", l, pseudo);
				kl = kx;
			}
			if ((rc = pref(c, LIBSSH2_METHOD_KEX, kl, "key exchange")) < 0)
				return rc;
			break;
		}
		case MUX_ALG_HOSTKEY:
			/* Known key types first, as OpenSSH orders them. */
			if (mux__hostkey_order(c, l, hk, sizeof(hk)) == 0)
				l = hk;
			mux__log(c, 2, "host key algorithms offered: %s", l);
			if ((rc = pref(c, LIBSSH2_METHOD_HOSTKEY, l, "host key")) < 0)
				return rc;
			break;
		}
	}
	return 0;
}
