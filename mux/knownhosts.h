/*
 * Internal to mux/, pure (no libuv, no libssh2: built without their include
 * paths and unit-tested from tests/unit/test_knownhosts.c).
 *
 * OpenSSH's known_hosts format, as sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"
 * describes it: one entry per line,
 *
 *     [@revoked|@cert-authority] hostpatterns keytype base64-key [comment]
 *
 * hostpatterns is either a comma-separated list of patterns ('*', '?',
 * "!pattern" negates, "[host]:port" for ports other than 22) or one hashed
 * name "|1|base64(salt)|base64(HMAC-SHA1(salt, name))". The HMAC comes from
 * the caller (hostkey.c uses libcrypto), so this file needs no crypto.
 */
#ifndef MUX_KNOWNHOSTS_H
#define MUX_KNOWNHOSTS_H

#include <stdbool.h>
#include <stddef.h>

enum mux_kh_marker { MUX_KH_PLAIN, MUX_KH_REVOKED, MUX_KH_CA };

/* One parsed line; the pointers point into the caller's line. */
typedef struct mux_kh_entry {
	enum mux_kh_marker marker;
	const char *hosts;
	size_t hosts_len;
	const char *type;   /* "ssh-ed25519", "ecdsa-sha2-nistp256", ... */
	size_t type_len;
	const char *key;    /* base64 of the wire-format public key */
	size_t key_len;
} mux_kh_entry;

enum {
	MUX_KH_ENTRY = 0, /* e filled */
	MUX_KH_SKIP = 1,  /* blank line or comment */
	MUX_KH_EBAD = -1, /* not an entry (unknown marker, missing field, old SSH-1 form) */
};

/* Parse one line, with or without its "\n" / "\r\n". */
int mux_kh_parse(const char *line, size_t len, mux_kh_entry *e);

/* HMAC-SHA1 of msg under key into out[20]; 0, or -1 on failure. */
typedef int (*mux_kh_hmac_fn)(const unsigned char *key, size_t klen, const unsigned char *msg,
			      size_t mlen, unsigned char out[20]);

/* Whether the hosts field names NAME: 1 yes, 0 no (a matching "!pattern"
 * is a no whatever else matches), -1 a hashed field that cannot be checked
 * (malformed, or hmac failed). Plain patterns compare without case. */
int mux_kh_match(const char *hosts, size_t len, const char *name, mux_kh_hmac_fn hmac);

/* The name OpenSSH looks a host up under: ALIAS (HostKeyAlias) when given,
 * else "host" for port 22 and "[host]:port" otherwise, the host in lower
 * case. Returns the length, or -1 if it does not fit. */
int mux_kh_lookup_name(const char *host, unsigned port, const char *alias, char *out, size_t cap);

/* "|1|salt|hash" (ssh-keygen -H's form) for NAME under a 20-byte salt.
 * Returns the length, or -1. */
int mux_kh_hash_name(const char *name, const unsigned char salt[20], mux_kh_hmac_fn hmac,
		     char *out, size_t cap);

/* Standard base64 with '=' padding. decode: bytes written or -1 (bad
 * character, bad length, no room); encode: characters written (NUL added)
 * or -1. */
int mux_kh_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap);
int mux_kh_b64_encode(const unsigned char *in, size_t len, char *out, size_t cap);

/* The key type a wire-format public key names (its first string) into out,
 * NUL-terminated. Returns its length or -1. */
int mux_kh_blob_type(const unsigned char *blob, size_t len, char *out, size_t cap);

/* The known_hosts key type a host-key algorithm checks: "rsa-sha2-512" and
 * "rsa-sha2-256" verify an "ssh-rsa" key, other plain algorithms their own
 * name. NULL for certificate algorithms ("...-cert-v01@openssh.com"),
 * which need a @cert-authority line instead. */
const char *mux_kh_alg_keytype(const char *alg, size_t len, size_t *typelen);

#endif
