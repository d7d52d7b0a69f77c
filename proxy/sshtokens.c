/*
 * What ssh does to some settings after `ssh -G` has printed them, and
 * ftpssh must therefore do itself: ~ and ~user, ${VAR}, and the % tokens
 * of ssh_config(5) in IdentityFile, CertificateFile and ProxyCommand.
 * Pure string work on a px_config; ~ and %d mean $HOME, as ftpssh has
 * always read it (ssh uses the password database; the two agree unless
 * HOME was changed).
 */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/internal.h"

/* not inlined: gcc would then warn about every caller's possible truncation */
__attribute__((noinline)) static int fail(char *why, size_t cap, const char *fmt, const char *arg)
{
	snprintf(why, cap, fmt, arg);
	return -1;
}

static const char *home_dir(void)
{
	/* ftpssh has always meant $HOME by ~ (ssh uses the password
	 * database; the two agree unless HOME was changed). */
	const char *h = getenv("HOME");
	if (h && *h)
		return h;
	struct passwd *pw = getpwuid(getuid());
	return pw ? pw->pw_dir : "/";
}

/* ---- token and ~ expansion (what ssh does after -G) -------------------------- */

/* Expand ~, ~user, ${VAR} and ssh's % tokens of IdentityFile,
 * CertificateFile and ProxyCommand. -1 when the result does not fit or a
 * token is one ftpssh cannot expand (named in why). */
int px__ssh_expand(const px_config *cfg, const char *in, char *out, size_t cap, char *why,
		   size_t wcap)
{
	size_t o = 0;
	char tmp[512];
	const char *p = in;
#define PUT(s)                                                            \
	do {                                                              \
		size_t l_ = strlen(s);                                    \
		if (o + l_ >= cap)                                        \
			return fail(why, wcap, "%s: too long", in);       \
		memcpy(out + o, s, l_);                                   \
		o += l_;                                                  \
	} while (0)
	if (p[0] == '~') {
		const char *slash = strchr(p, '/');
		size_t ul = slash ? (size_t)(slash - p - 1) : strlen(p + 1);
		if (ul == 0) {
			PUT(home_dir());
		} else {
			if (ul >= sizeof(tmp))
				return fail(why, wcap, "%s: bad ~user", in);
			memcpy(tmp, p + 1, ul);
			tmp[ul] = '\0';
			struct passwd *pw = getpwnam(tmp);
			if (!pw)
				return fail(why, wcap, "%s: no such user for ~", in);
			PUT(pw->pw_dir);
		}
		p += 1 + ul;
	}
	for (; *p; p++) {
		if (p[0] == '$' && p[1] == '{') {
			const char *end = strchr(p, '}');
			size_t l = end ? (size_t)(end - p - 2) : 0;
			if (!end || l == 0 || l >= sizeof(tmp))
				return fail(why, wcap, "%s: bad ${...}", in);
			memcpy(tmp, p + 2, l);
			tmp[l] = '\0';
			const char *v = getenv(tmp);
			if (!v)
				return fail(why, wcap, "%s: environment variable not set", in);
			PUT(v);
			p = end;
			continue;
		}
		if (*p != '%') {
			if (o + 1 >= cap)
				return fail(why, wcap, "%s: too long", in);
			out[o++] = *p;
			continue;
		}
		char c = *++p;
		struct passwd *pw;
		switch (c) {
		case '%':
			PUT("%");
			break;
		case 'h':
			PUT(cfg->gateway);
			break;
		case 'n':
			PUT(cfg->destination[0] ? cfg->destination : cfg->gateway);
			break;
		case 'k':
			PUT(cfg->hostkey_alias ? cfg->hostkey_alias
			    : cfg->destination[0] ? cfg->destination : cfg->gateway);
			break;
		case 'p':
			snprintf(tmp, sizeof(tmp), "%u", cfg->ssh_port);
			PUT(tmp);
			break;
		case 'r':
			PUT(cfg->user);
			break;
		case 'j':
			PUT(cfg->proxy_jump ? cfg->proxy_jump : "");
			break;
		case 'd':
			PUT(home_dir());
			break;
		case 'u':
			pw = getpwuid(getuid());
			PUT(pw ? pw->pw_name : "");
			break;
		case 'i':
			snprintf(tmp, sizeof(tmp), "%u", (unsigned)getuid());
			PUT(tmp);
			break;
		case 'l':
		case 'L':
			if (gethostname(tmp, sizeof(tmp)) != 0)
				tmp[0] = '\0';
			tmp[sizeof(tmp) - 1] = '\0';
			if (c == 'L' && strchr(tmp, '.'))
				*strchr(tmp, '.') = '\0';
			PUT(tmp);
			break;
		default:
			snprintf(tmp, sizeof(tmp), "%%%c", c ? c : ' ');
			snprintf(why, wcap, "%s: token %s is not supported by ftpssh", in, tmp);
			return -1;
		}
	}
	out[o] = '\0';
	return 0;
#undef PUT
}

