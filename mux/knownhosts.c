/*
 * known_hosts lines (see knownhosts.h): a parser that only slices the
 * caller's line into fields, a host matcher for plain patterns and hashed
 * names, and the small codecs around them. Nothing is allocated and nothing
 * is read from disk here: hostkey.c owns the files and the policy.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mux/knownhosts.h"
#include "mux/namelist.h"

#define SHA1_LEN 20
#define HASH_MAGIC "|1|"

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* Next whitespace-separated field of line[*pos..len). */
static bool next_field(const char *line, size_t len, size_t *pos, const char **f, size_t *flen)
{
	size_t i = *pos;
	while (i < len && is_space(line[i]))
		i++;
	if (i >= len)
		return false;
	size_t start = i;
	while (i < len && !is_space(line[i]))
		i++;
	*f = line + start;
	*flen = i - start;
	*pos = i;
	return true;
}

int mux_kh_parse(const char *line, size_t len, mux_kh_entry *e)
{
	size_t pos = 0, flen;
	const char *f;
	memset(e, 0, sizeof(*e));
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (memchr(line, '\0', len))
		return MUX_KH_EBAD;
	if (!next_field(line, len, &pos, &f, &flen) || f[0] == '#')
		return MUX_KH_SKIP;
	if (f[0] == '@') {
		if (flen == 8 && memcmp(f, "@revoked", 8) == 0)
			e->marker = MUX_KH_REVOKED;
		else if (flen == 15 && memcmp(f, "@cert-authority", 15) == 0)
			e->marker = MUX_KH_CA;
		else
			return MUX_KH_EBAD;
		if (!next_field(line, len, &pos, &f, &flen))
			return MUX_KH_EBAD;
	}
	e->hosts = f;
	e->hosts_len = flen;
	if (!next_field(line, len, &pos, &e->type, &e->type_len) ||
	    !next_field(line, len, &pos, &e->key, &e->key_len))
		return MUX_KH_EBAD;
	/* SSH-1 lines ("host bits exponent modulus") start the key with a
	 * digit; no SSH-2 key type does. */
	if (e->type[0] >= '0' && e->type[0] <= '9')
		return MUX_KH_EBAD;
	return MUX_KH_ENTRY;
}

static int hashed_match(const char *hosts, size_t len, const char *name, mux_kh_hmac_fn hmac)
{
	unsigned char salt[SHA1_LEN + 4], want[SHA1_LEN + 4], got[SHA1_LEN];
	const char *s = hosts + 3, *end = hosts + len;
	const char *bar = memchr(s, '|', (size_t)(end - s));
	if (!bar || !hmac)
		return -1;
	if (mux_kh_b64_decode(s, (size_t)(bar - s), salt, sizeof(salt)) != SHA1_LEN ||
	    mux_kh_b64_decode(bar + 1, (size_t)(end - bar - 1), want, sizeof(want)) != SHA1_LEN)
		return -1;
	if (hmac(salt, SHA1_LEN, (const unsigned char *)name, strlen(name), got) != 0)
		return -1;
	return memcmp(got, want, SHA1_LEN) == 0 ? 1 : 0;
}

int mux_kh_match(const char *hosts, size_t len, const char *name, mux_kh_hmac_fn hmac)
{
	if (len >= 3 && memcmp(hosts, HASH_MAGIC, 3) == 0)
		return hashed_match(hosts, len, name, hmac);
	size_t nlen = strlen(name);
	bool positive = false;
	const char *p = hosts, *end = hosts + len;
	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		size_t plen = comma ? (size_t)(comma - p) : (size_t)(end - p);
		bool neg = plen > 0 && p[0] == '!';
		const char *pat = neg ? p + 1 : p;
		size_t patlen = neg ? plen - 1 : plen;
		if (patlen > 0 && mux_nl_wildmatch(name, nlen, pat, patlen, true)) {
			if (neg)
				return 0;
			positive = true;
		}
		p += plen + 1;
	}
	return positive ? 1 : 0;
}

int mux_kh_lookup_name(const char *host, unsigned port, const char *alias, char *out, size_t cap)
{
	int n;
	if (alias && *alias)
		n = snprintf(out, cap, "%s", alias);
	else if (port == 22)
		n = snprintf(out, cap, "%s", host);
	else
		n = snprintf(out, cap, "[%s]:%u", host, port);
	if (n < 0 || (size_t)n >= cap)
		return -1;
	if (!(alias && *alias))
		for (char *c = out; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
	return n;
}

int mux_kh_hash_name(const char *name, const unsigned char salt[20], mux_kh_hmac_fn hmac,
		     char *out, size_t cap)
{
	unsigned char mac[SHA1_LEN];
	char s64[40], h64[40];
	if (!hmac || hmac(salt, SHA1_LEN, (const unsigned char *)name, strlen(name), mac) != 0)
		return -1;
	if (mux_kh_b64_encode(salt, SHA1_LEN, s64, sizeof(s64)) < 0 ||
	    mux_kh_b64_encode(mac, SHA1_LEN, h64, sizeof(h64)) < 0)
		return -1;
	int n = snprintf(out, cap, HASH_MAGIC "%s|%s", s64, h64);
	return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(char c)
{
	const char *p = c ? strchr(b64tab, c) : NULL;
	return p ? (int)(p - b64tab) : -1;
}

int mux_kh_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	size_t o = 0;
	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad || (v[k] = b64val(in[i + k])) < 0) {
				return -1; /* data after padding, or not base64 */
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		unsigned char b[3] = {(unsigned char)(w >> 16), (unsigned char)(w >> 8),
				      (unsigned char)w};
		size_t n = 3 - (size_t)pad;
		if (o + n > cap)
			return -1;
		memcpy(out + o, b, n);
		o += n;
	}
	return o > (size_t)INT32_MAX ? -1 : (int)o;
}

int mux_kh_b64_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
	size_t need = (len + 2) / 3 * 4 + 1, o = 0;
	if (need > cap || need > (size_t)INT32_MAX)
		return -1;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t w = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			w |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			w |= in[i + 2];
		out[o++] = b64tab[(w >> 18) & 63];
		out[o++] = b64tab[(w >> 12) & 63];
		out[o++] = i + 1 < len ? b64tab[(w >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64tab[w & 63] : '=';
	}
	out[o] = '\0';
	return (int)o;
}

int mux_kh_blob_type(const unsigned char *blob, size_t len, char *out, size_t cap)
{
	if (!blob || len < 4 || cap == 0)
		return -1;
	uint32_t n = (uint32_t)blob[0] << 24 | (uint32_t)blob[1] << 16 | (uint32_t)blob[2] << 8 |
		     blob[3];
	if (n == 0 || n > len - 4 || n >= cap)
		return -1;
	for (uint32_t i = 0; i < n; i++)
		if (blob[4 + i] <= ' ' || blob[4 + i] > '~')
			return -1;
	memcpy(out, blob + 4, n);
	out[n] = '\0';
	return (int)n;
}

const char *mux_kh_alg_keytype(const char *alg, size_t len, size_t *typelen)
{
	static const char cert[] = "-cert-v01@openssh.com";
	size_t cl = sizeof(cert) - 1;
	if (len >= cl && memcmp(alg + len - cl, cert, cl) == 0)
		return NULL;
	if ((len == 12 && memcmp(alg, "rsa-sha2-256", 12) == 0) ||
	    (len == 12 && memcmp(alg, "rsa-sha2-512", 12) == 0)) {
		*typelen = 7;
		return "ssh-rsa";
	}
	*typelen = len;
	return alg;
}
