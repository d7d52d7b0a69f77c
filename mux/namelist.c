/*
 * SSH name-lists and ssh's +/-/^ forms (see namelist.h). Pure string work
 * on the caller's buffers: every list is walked item by item, results are
 * appended to a bounded output without duplicates, and anything that does
 * not fit is an error rather than a shorter list (a cut list would offer
 * different algorithms than asked for).
 */
#include <string.h>

#include "mux/namelist.h"

/* Walk comma-separated items: item and len get the next one; false
 * at the end. Empty items are returned as such (len 0). */
static bool nl_next(const char **cur, const char **item, size_t *len)
{
	const char *p = *cur;
	if (!p)
		return false;
	const char *comma = strchr(p, ',');
	*item = p;
	*len = comma ? (size_t)(comma - p) : strlen(p);
	*cur = comma ? comma + 1 : NULL;
	return true;
}

static char fold(char c, bool nocase)
{
	return (nocase && c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

bool mux_nl_wildmatch(const char *s, size_t slen, const char *pat, size_t plen, bool nocase)
{
	/* Iterative glob with one backtrack point: linear enough for the
	 * short names and host patterns it sees, and no recursion a hostile
	 * known_hosts line could make deep. */
	size_t si = 0, pi = 0, star_p = (size_t)-1, star_s = 0;
	while (si < slen) {
		if (pi < plen && pat[pi] == '*') {
			star_p = pi++;
			star_s = si;
		} else if (pi < plen && (pat[pi] == '?' || fold(pat[pi], nocase) == fold(s[si], nocase))) {
			pi++;
			si++;
		} else if (star_p != (size_t)-1) {
			pi = star_p + 1;
			si = ++star_s;
		} else {
			return false;
		}
	}
	while (pi < plen && pat[pi] == '*')
		pi++;
	return pi == plen;
}

bool mux_nl_contains(const char *list, const char *name, size_t len)
{
	const char *cur = list, *item;
	size_t n;
	if (!list || !*list)
		return false;
	while (nl_next(&cur, &item, &n))
		if (n == len && memcmp(item, name, len) == 0)
			return true;
	return false;
}

struct out {
	char *buf;
	size_t cap, used;
	bool overflow;
};

int mux_nl_append(char *out, size_t cap, size_t *used, const char *name, size_t len)
{
	if (*used + len + (*used ? 1 : 0) + 1 > cap)
		return -1;
	if (*used)
		out[(*used)++] = ',';
	memcpy(out + *used, name, len);
	*used += len;
	out[*used] = '\0';
	return 0;
}

static void out_add(struct out *o, const char *name, size_t len)
{
	if (len == 0 || mux_nl_contains(o->buf, name, len))
		return;
	if (mux_nl_append(o->buf, o->cap, &o->used, name, len) != 0)
		o->overflow = true;
}

static bool has_wild(const char *s, size_t len)
{
	return memchr(s, '*', len) || memchr(s, '?', len);
}

/* Add the supported names matching PAT (PAT itself when it has no
 * wildcard); the count of supported names it matched. */
static size_t out_add_matching(struct out *o, const char *pat, size_t plen, const char *supported)
{
	const char *cur = supported, *item;
	size_t n, hits = 0;
	if (!supported || !*supported)
		return 0;
	while (nl_next(&cur, &item, &n)) {
		if (!mux_nl_wildmatch(item, n, pat, plen, false))
			continue;
		hits++;
		if (o)
			out_add(o, has_wild(pat, plen) ? item : pat, has_wild(pat, plen) ? n : plen);
	}
	return hits;
}

static void set_bad(char *bad, size_t badcap, const char *s, size_t len)
{
	if (!bad || !badcap)
		return;
	if (len >= badcap)
		len = badcap - 1;
	memcpy(bad, s, len);
	bad[len] = '\0';
}

static void out_add_list(struct out *o, const char *list)
{
	const char *cur = list, *item;
	size_t n;
	if (!list || !*list)
		return;
	while (nl_next(&cur, &item, &n))
		out_add(o, item, n);
}

static int out_result(struct out *o)
{
	if (o->overflow)
		return MUX_NL_ETOOLONG;
	return o->used ? MUX_NL_OK : MUX_NL_EEMPTY;
}

int mux_nl_resolve(const char *spec, const char *defaults, const char *supported, char *out,
		   size_t cap, char *bad, size_t badcap)
{
	struct out o = {out, cap, 0, false};
	const char *cur, *item;
	size_t n;
	set_bad(bad, badcap, "", 0);
	if (!out || cap == 0)
		return MUX_NL_ETOOLONG;
	out[0] = '\0';
	if (!spec || !*spec) {
		out_add_list(&o, defaults);
		return out_result(&o);
	}
	char op = spec[0];
	const char *names = spec + 1;
	if (op != '+' && op != '-' && op != '^') {
		op = 0;
		names = spec;
	}
	if (op == '-') {
		cur = defaults && *defaults ? defaults : NULL;
		while (nl_next(&cur, &item, &n)) {
			const char *pc = names, *pat;
			size_t pn;
			bool drop = false;
			while (!drop && nl_next(&pc, &pat, &pn))
				drop = pn > 0 && mux_nl_wildmatch(item, n, pat, pn, false);
			if (!drop)
				out_add(&o, item, n);
		}
		return out_result(&o);
	}
	/* Every name must mean something to this build before anything is
	 * built: the user hears about the first one that does not. */
	cur = names;
	while (nl_next(&cur, &item, &n)) {
		if (n == 0 || memchr(item, '!', n) || out_add_matching(NULL, item, n, supported) == 0) {
			set_bad(bad, badcap, item, n);
			return MUX_NL_EBADNAME;
		}
	}
	if (op == '+')
		out_add_list(&o, defaults);
	cur = names;
	while (nl_next(&cur, &item, &n))
		out_add_matching(&o, item, n, supported);
	if (op == '^')
		out_add_list(&o, defaults);
	return out_result(&o);
}

int mux_nl_from_ssh(const char *ssh_list, const char *baseline, const char *supported,
		    char *out, size_t cap, char *bad, size_t badcap)
{
	struct out o = {out, cap, 0, false};
	const char *cur = ssh_list, *item;
	size_t n;
	set_bad(bad, badcap, "", 0);
	if (!out || cap == 0)
		return MUX_NL_ETOOLONG;
	out[0] = '\0';
	if (!ssh_list || !*ssh_list || (baseline && strcmp(ssh_list, baseline) == 0))
		return MUX_NL_SAME;
	while (nl_next(&cur, &item, &n)) {
		if (n == 0)
			continue;
		if (mux_nl_contains(supported, item, n))
			out_add(&o, item, n);
		else if (!mux_nl_contains(baseline, item, n)) {
			set_bad(bad, badcap, item, n);
			return MUX_NL_EBADNAME;
		}
	}
	return out_result(&o);
}
