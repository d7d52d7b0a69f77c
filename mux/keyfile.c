/*
 * Key files as ssh reads them, before libssh2 sees them: the public half
 * of a key (KEY.pub, the unencrypted header of an OpenSSH private key, or
 * a certificate file), whether the private half needs a passphrase, and
 * which certificate certifies which key. Knowing these up front is what
 * lets ftpssh offer a key before asking for its passphrase (as ssh does),
 * match agent keys against the configured files (IdentitiesOnly), and say
 * precisely why a key was not used.
 *
 * Everything here is parsing of bounded buffers; nothing is trusted: every
 * length is checked against what is left.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mux/internal.h"

/* Private keys are a few KiB (RSA 16384 in PEM: ~13 KiB). */
#define KEYFILE_MAX (64 * 1024)

void mux__wipe_free(void *p, size_t n)
{
	if (!p)
		return;
	volatile unsigned char *v = p;
	while (n--)
		*v++ = 0;
	free(p);
}

int mux__key_read_file(const char *path, char **data, size_t *len)
{
	*data = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		int e = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		close(fd);
		return e;
	}
	char *buf = malloc(KEYFILE_MAX + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	size_t n = 0;
	while (n < KEYFILE_MAX) {
		ssize_t r = read(fd, buf + n, KEYFILE_MAX - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = -errno;
			close(fd);
			mux__wipe_free(buf, KEYFILE_MAX + 1);
			return e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (n == KEYFILE_MAX) {
		mux__wipe_free(buf, KEYFILE_MAX + 1);
		return -EFBIG;
	}
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return 0;
}

/* ---- base64 --------------------------------------------------------------- */

static int b64_val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Decode base64 from s[0..n), skipping whitespace (PEM bodies are wrapped),
 * stopping at '='. Returns a malloc'd buffer or NULL. */
static unsigned char *b64_decode(const char *s, size_t n, size_t *out_len)
{
	unsigned char *out = malloc(n / 4 * 3 + 3);
	if (!out)
		return NULL;
	size_t o = 0;
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '=')
			break;
		if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
			continue;
		int v = b64_val(ch);
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	*out_len = o;
	return out;
}

static char *b64_encode(const unsigned char *p, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc((n + 2) / 3 * 4 + 1);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

/* ---- SSH wire strings ------------------------------------------------------ */

/* Take one uint32-length-prefixed string from *p (len *n left). */
static int take_string(const unsigned char **p, size_t *n, const unsigned char **s, size_t *sl)
{
	if (*n < 4)
		return -1;
	size_t l = ((size_t)(*p)[0] << 24) | ((size_t)(*p)[1] << 16) | ((size_t)(*p)[2] << 8) |
		   (*p)[3];
	if (l > *n - 4)
		return -1;
	*s = *p + 4;
	*sl = l;
	*p += 4 + l;
	*n -= 4 + l;
	return 0;
}

bool mux__key_blob_type(const unsigned char *blob, size_t len, char *type, size_t cap)
{
	const unsigned char *s;
	size_t sl;
	if (!blob || take_string(&blob, &len, &s, &sl) != 0 || sl == 0 || sl >= cap)
		return false;
	for (size_t i = 0; i < sl; i++)
		if (s[i] <= ' ' || s[i] >= 0x7f)
			return false;
	memcpy(type, s, sl);
	type[sl] = '\0';
	return true;
}

bool mux__key_is_cert_type(const char *type)
{
	size_t l = strlen(type), sl = strlen("-cert-v01@openssh.com");
	return l > sl && strcmp(type + l - sl, "-cert-v01@openssh.com") == 0;
}

/* A certificate blob is: string cert-type, string nonce, then the key's
 * own fields (ed25519: pk; ecdsa: curve, Q; rsa: e, n), then the cert's.
 * A plain key blob is: string type, then the same fields. So CERT
 * certifies KEY when KEY's fields are a prefix of CERT's after the nonce
 * and the types agree (ssh-ed25519 <-> ssh-ed25519-cert-v01@openssh.com). */
bool mux__cert_certifies(const unsigned char *cert, size_t cert_len, const unsigned char *key,
			 size_t key_len)
{
	char ctype[80], ktype[64];
	const unsigned char *s;
	size_t sl;
	if (!mux__key_blob_type(cert, cert_len, ctype, sizeof(ctype)) ||
	    !mux__key_blob_type(key, key_len, ktype, sizeof(ktype)) || !mux__key_is_cert_type(ctype))
		return false;
	size_t kl = strlen(ktype);
	if (strncmp(ctype, ktype, kl) != 0 || ctype[kl] != '-')
		return false;
	if (take_string(&cert, &cert_len, &s, &sl) != 0 || take_string(&cert, &cert_len, &s, &sl) != 0 ||
	    take_string(&key, &key_len, &s, &sl) != 0)
		return false;
	return key_len > 0 && key_len <= cert_len && memcmp(cert, key, key_len) == 0;
}

/* ---- public key lines and private key files ------------------------------- */

int mux__key_parse_pub(const char *text, size_t len, unsigned char **blob, size_t *blob_len)
{
	*blob = NULL;
	/* "type base64 [comment]": skip leading blank and comment lines */
	const char *p = text, *end = text + len;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '#')) {
		if (*p == '#')
			while (p < end && *p != '\n')
				p++;
		else
			p++;
	}
	const char *type = p;
	while (p < end && *p != ' ' && *p != '\t' && *p != '\n')
		p++;
	size_t tl = (size_t)(p - type);
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	const char *b = p;
	while (p < end && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
		p++;
	if (tl == 0 || p == b)
		return -1;
	unsigned char *d = b64_decode(b, (size_t)(p - b), blob_len);
	char t[80];
	if (!d || !mux__key_blob_type(d, *blob_len, t, sizeof(t)) || strlen(t) != tl ||
	    memcmp(t, type, tl) != 0) {
		free(d);
		return -1;
	}
	*blob = d;
	return 0;
}

char *mux__key_publine(const unsigned char *blob, size_t blob_len)
{
	char type[80];
	if (!mux__key_blob_type(blob, blob_len, type, sizeof(type)))
		return NULL;
	char *b = b64_encode(blob, blob_len);
	if (!b)
		return NULL;
	size_t n = strlen(type) + 1 + strlen(b) + 2;
	char *line = malloc(n);
	if (line)
		snprintf(line, n, "%s %s\n", type, b);
	free(b);
	return line;
}

#define OPENSSH_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----"
#define OPENSSH_END "-----END OPENSSH PRIVATE KEY-----"
#define OPENSSH_MAGIC "openssh-key-v1"

int mux__key_parse_private(const char *data, size_t len, bool *encrypted, unsigned char **blob,
			   size_t *blob_len)
{
	*encrypted = false;
	*blob = NULL;
	*blob_len = 0;
	const char *begin = memmem(data, len, OPENSSH_BEGIN, strlen(OPENSSH_BEGIN));
	if (!begin) {
		/* PEM (PKCS#1, SEC1, PKCS#8): the public half is not readable
		 * without decrypting; only whether a passphrase is needed is. */
		if (!memmem(data, len, "-----BEGIN ", 11) || !memmem(data, len, "PRIVATE KEY-----", 16))
			return -1;
		*encrypted = memmem(data, len, "Proc-Type: 4,ENCRYPTED", 22) != NULL ||
			     memmem(data, len, "BEGIN ENCRYPTED PRIVATE KEY", 27) != NULL;
		return 0;
	}
	const char *b = begin + strlen(OPENSSH_BEGIN);
	const char *e = memmem(b, len - (size_t)(b - data), OPENSSH_END, strlen(OPENSSH_END));
	if (!e)
		return -1;
	size_t n;
	unsigned char *raw = b64_decode(b, (size_t)(e - b), &n);
	if (!raw)
		return -1;
	/* "openssh-key-v1\0", string cipher, string kdf, string kdfopts,
	 * uint32 nkeys, string pubkey[0], ... (private part, maybe encrypted) */
	int rc = -1;
	const unsigned char *p = raw, *cipher, *s;
	size_t left = n, cl, sl;
	size_t ml = strlen(OPENSSH_MAGIC) + 1;
	if (left < ml || memcmp(p, OPENSSH_MAGIC, ml) != 0)
		goto out;
	p += ml;
	left -= ml;
	if (take_string(&p, &left, &cipher, &cl) != 0 || take_string(&p, &left, &s, &sl) != 0 ||
	    take_string(&p, &left, &s, &sl) != 0 || left < 4)
		goto out;
	if (p[0] || p[1] || p[2] || p[3] != 1) /* one key per file, as ssh-keygen writes */
		goto out;
	p += 4;
	left -= 4;
	if (take_string(&p, &left, &s, &sl) != 0 || sl == 0)
		goto out;
	*encrypted = !(cl == 4 && memcmp(cipher, "none", 4) == 0);
	*blob = malloc(sl);
	if (!*blob)
		goto out;
	memcpy(*blob, s, sl);
	*blob_len = sl;
	rc = 0;
out:
	mux__wipe_free(raw, n);
	return rc;
}
