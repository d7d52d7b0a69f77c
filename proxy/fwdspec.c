/*
 * The syntax of -L forwards and ssh destinations, as ssh spells them:
 * [bind:]port:host:hostport (brackets around IPv6 addresses),
 * [bind:]port:sftp[:/dir] for the SFTP front end. Pure string handling.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

int px_port_parse(const char *s, bool allow_zero, uint16_t *out)
{
	char *end;
	if (!s || !*s)
		return -1;
	for (const char *p = s; *p; p++)
		if (!isdigit((unsigned char)*p))
			return -1;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535 || (!allow_zero && v == 0))
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* Split "a:b:[c:d]:e" on ':' outside brackets, dropping the brackets.
 * Returns the field count, or -1 when a field does not fit. */
int px_split_colons(const char *s, char fields[][256], int max)
{
	int n = 0;
	size_t len = 0;
	bool br = false;
	if (max < 1)
		return -1;
	fields[0][0] = '\0';
	for (const char *p = s;; p++) {
		if (*p == '[' && len == 0 && !br) {
			br = true;
			continue;
		}
		if (*p == ']' && br) {
			br = false;
			continue;
		}
		if (*p == '\0' || (*p == ':' && !br)) {
			fields[n][len] = '\0';
			n++;
			if (*p == '\0')
				break;
			if (n >= max)
				return -1;
			len = 0;
			continue;
		}
		if (len + 1 >= 256)
			return -1;
		fields[n][len++] = *p;
	}
	return br ? -1 : n;
}

/* -L [bind:]port:sftp[:/start/dir]: ftpssh answers FTP itself from the
 * gateway's SFTP. "sftp" names this kind only when it is the last field or
 * is followed by an absolute path, so a host called sftp stays reachable
 * as port:sftp:21. */
static int parse_forward_sftp(char fl[][256], int n, px_forward *f)
{
	int k = fl[n - 1][0] == '/' ? n - 2 : n - 1; /* the "sftp" field */
	if (k < 1 || k > 2 || strcmp(fl[k], "sftp") != 0)
		return 1;
	if (k + 1 < n && strlen(fl[k + 1]) >= sizeof(f->start_dir))
		return -1;
	if (k + 1 < n)
		strcpy(f->start_dir, fl[k + 1]);
	f->sftp = true;
	strcpy(f->host, "sftp");
	if (k == 2) {
		const char *b = fl[0];
		if (!*b || strcmp(b, "localhost") == 0) {
			b = "127.0.0.1";
			f->also_v6 = true;
		} else if (strcmp(b, "*") == 0) {
			b = "0.0.0.0";
		}
		if (strlen(b) >= sizeof(f->bind_addr))
			return -1;
		strcpy(f->bind_addr, b);
	} else {
		strcpy(f->bind_addr, "127.0.0.1");
		f->also_v6 = true;
	}
	return px_port_parse(fl[k - 1], true, &f->bind_port) != 0 ? -1 : 0;
}

int px_forward_parse(const char *spec, px_forward *f)
{
	char fl[4][256];
	int n = px_split_colons(spec, fl, 4);
	int i = 0;
	memset(f, 0, sizeof(*f));
	if (n >= 2) {
		int rc = parse_forward_sftp(fl, n, f);
		if (rc <= 0)
			return rc;
		memset(f, 0, sizeof(*f));
	}
	if (n == 4) {
		const char *b = fl[0];
		if (!*b || strcmp(b, "localhost") == 0) {
			b = "127.0.0.1";
			f->also_v6 = true;
		}
		else if (strcmp(b, "*") == 0)
			b = "0.0.0.0";
		if (strlen(b) >= sizeof(f->bind_addr))
			return -1;
		strcpy(f->bind_addr, b);
		i = 1;
	} else if (n == 3) {
		strcpy(f->bind_addr, "127.0.0.1");
		f->also_v6 = true;
	} else {
		return -1;
	}
	if (px_port_parse(fl[i], true, &f->bind_port) != 0)
		return -1;
	if (!fl[i + 1][0] || strlen(fl[i + 1]) >= sizeof(f->host))
		return -1;
	strcpy(f->host, fl[i + 1]);
	if (px_port_parse(fl[i + 2], false, &f->port) != 0)
		return -1;
	return 0;
}
