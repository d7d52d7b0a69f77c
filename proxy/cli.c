/*
 * Command line: ssh's spelling wherever ssh has the option (-L, -p, -i, -l,
 * -o Key=Value, user@host), so that a user's `ssh -L` line carries over.
 * Pure string handling into a px_config; nothing is opened here.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "proxy/proxy.h"

#ifndef FTPSSH_VERSION
#define FTPSSH_VERSION "0"
#endif

static const char usage_text[] =
	"usage: ftpssh [-qvV] [-F config] [-L [bind_address:]port:ftphost:ftpport]... [-p sshport]\n"
	"              [-i identity_file]... [-l login] [-o option=value]...\n"
	"              [user@]gateway[:sshport]\n"
	"       ftpssh -Q cipher|mac|kex|key\n";

static const char help_text[] =
	"\n"
	"Carry FTP through one SSH connection. ftpssh listens on loopback; every FTP\n"
	"client that connects is relayed over a direct-tcpip channel to the FTP\n"
	"server, and each data connection gets a channel of its own: PASV/EPSV\n"
	"replies are rewritten to one-shot local ports, and PORT/EPRT (active mode)\n"
	"is answered by ftpssh while the server side stays passive inside SSH.\n"
	"AUTH TLS is refused: the SSH link already encrypts.\n"
	"\n"
	"  -L [bind_address:]port:ftphost:ftpport\n"
	"        listen on bind_address:port (default, and \"localhost\": 127.0.0.1 and\n"
	"        ::1; port 0 picks a free one) and relay FTP to ftphost:ftpport as the\n"
	"        gateway resolves it.\n"
	"        Repeat for several FTP servers over the same SSH connection.\n"
	"        Without -L: ftphost localhost, ftpport 21, listening on 127.0.0.1\n"
	"        port 21 when it may be bound, else 2121.\n"
	"  -p port           SSH port of the gateway (default 22)\n"
	"  -l login          SSH login name (default: the user@ part, else $USER)\n"
	"  -i file           private key to try (repeatable; default ~/.ssh/id_ed25519,\n"
	"                    id_ecdsa, id_rsa). ssh-agent keys are tried first.\n"
	"  -o UserKnownHostsFile=FILE...    host keys to trust (~/.ssh/known_hosts\n"
	"                                   ~/.ssh/known_hosts2; none: no file)\n"
	"  -o GlobalKnownHostsFile=FILE...  system-wide ones (/etc/ssh/ssh_known_hosts\n"
	"                                   /etc/ssh/ssh_known_hosts2)\n"
	"  -o HostKeyAlias=NAME             look the gateway up under NAME\n"
	"  -o StrictHostKeyChecking=yes|accept-new|no\n"
	"        yes (default): refuse unknown keys; accept-new: record unknown keys in\n"
	"        the first UserKnownHostsFile (hashed with -o HashKnownHosts=yes);\n"
	"        no: accept unknown keys unrecorded. A changed key, a key of another\n"
	"        type than the known ones, and a @revoked key always refuse.\n"
	"  -o ServerAliveInterval=SECONDS   SSH keepalive interval (default 30, 0 off)\n"
	"  -o ServerAliveCountMax=N         silent intervals before the connection is\n"
	"                                   declared dead and reopened (default 3)\n"
	"  -o Ciphers=LIST, MACs=LIST, KexAlgorithms=LIST, HostKeyAlgorithms=LIST\n"
	"        SSH algorithm preferences as in ssh: LIST, +LIST (append), -LIST\n"
	"        (remove, wildcards), ^LIST (first); -Q cipher|mac|kex|key lists\n"
	"        what this build supports\n"
	"  -o Port=N, -o User=NAME, -o IdentityFile=FILE  as -p, -l, -i\n"
	"  --window-max=BYTES  largest SSH receive window per data channel\n"
	"                    (default 33554432); larger fills long fat links\n"
	"  --data-timeout=SECONDS  how long a one-shot data port waits (default 60)\n"
	"  --data-host=control|reported\n"
	"        where data channels go: control (default) the FTP server's host as in\n"
	"        -L, which works behind NAT; reported: the address in the server's 227\n"
	"        (for servers that hand data to another host). EPSV always uses control.\n"
	"  --no-uid-check    take a data connection from any local user; by default\n"
	"                    only the user who owns the control connection may connect\n"
	"                    to its one-shot data port (Linux sock_diag)\n"
	"  -F file           config file (default /etc/ftpssh.conf, then\n"
	"                    ~/.config/ftpssh/config; -F none reads none): one \"key value\"\n"
	"                    per line, keys as the long options, ssh's -o keys, and\n"
	"                    forward, gateway, identity, login, port; the command line wins\n"
	"  --syslog          log to syslog (daemon facility) instead of stderr\n"
	"  --status-file=FILE  write the session/transfer table there every 2 s\n"
	"                    (kill -USR1 prints it to the log at any time)\n"
	"  -q                only errors;  -v verbose;  -vv trace the control stream\n"
	"  -h, --help        this text;   -V, --version  version\n"
	"\n"
	"RSA keys: libssh2 1.10 signs only with SHA-1, which OpenSSH 8.8 and later\n"
	"refuse; use an ed25519 or ECDSA key.\n"
	"\n"
	"Exit status: 0 ok, 1 runtime error, 2 usage, 3 cannot reach the SSH server,\n"
	"4 host key refused, 5 authentication failed, 6 cannot listen.\n";

static int bad(FILE *err, const char *fmt, const char *arg)
{
	fprintf(err, "ftpssh: ");
	fprintf(err, fmt, arg);
	fprintf(err, "\n%s", usage_text);
	return -1;
}

static int parse_port(const char *s, bool allow_zero, uint16_t *out)
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
static int split_colons(const char *s, char fields[][256], int max)
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

static int parse_forward(const char *spec, px_forward *f)
{
	char fl[4][256];
	int n = split_colons(spec, fl, 4);
	int i = 0;
	memset(f, 0, sizeof(*f));
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
	if (parse_port(fl[i], true, &f->bind_port) != 0)
		return -1;
	if (!fl[i + 1][0] || strlen(fl[i + 1]) >= sizeof(f->host))
		return -1;
	strcpy(f->host, fl[i + 1]);
	if (parse_port(fl[i + 2], false, &f->port) != 0)
		return -1;
	return 0;
}

static int set_copy(char *dst, size_t cap, const char *src)
{
	if (strlen(src) >= cap)
		return -1;
	strcpy(dst, src);
	return 0;
}

static int parse_o(const char *opt, px_config *cfg, FILE *err)
{
	char key[64];
	const char *eq = strchr(opt, '=');
	const char *val;
	size_t kl;
	if (!eq) {
		/* ssh also takes "Key Value" */
		eq = strchr(opt, ' ');
	}
	if (!eq)
		return bad(err, "-o %s: expected Key=Value", opt);
	kl = (size_t)(eq - opt);
	if (kl >= sizeof(key))
		return bad(err, "-o %s: unknown option", opt);
	memcpy(key, opt, kl);
	key[kl] = '\0';
	val = eq + 1;
	while (*val == ' ')
		val++;
	if (strcasecmp(key, "UserKnownHostsFile") == 0) {
		if (set_copy(cfg->known_hosts, sizeof(cfg->known_hosts), val) != 0)
			return bad(err, "-o %s: path too long", opt);
	} else if (strcasecmp(key, "StrictHostKeyChecking") == 0) {
		if (strcasecmp(val, "yes") == 0 || strcasecmp(val, "ask") == 0)
			cfg->hostkey_policy = MUX_HOSTKEY_STRICT;
		else if (strcasecmp(val, "accept-new") == 0)
			cfg->hostkey_policy = MUX_HOSTKEY_ACCEPT_NEW;
		else if (strcasecmp(val, "no") == 0 || strcasecmp(val, "off") == 0)
			cfg->hostkey_policy = MUX_HOSTKEY_OFF;
		else
			return bad(err, "-o %s: use yes, accept-new or no", opt);
	} else if (strcasecmp(key, "ServerAliveInterval") == 0) {
		uint16_t v;
		if (parse_port(val, true, &v) != 0)
			return bad(err, "-o %s: expected seconds", opt);
		cfg->keepalive_sec = v;
	} else if (strcasecmp(key, "ServerAliveCountMax") == 0) {
		uint16_t v;
		if (parse_port(val, false, &v) != 0)
			return bad(err, "-o %s: expected a count", opt);
		cfg->keepalive_count = v;
	} else if (strcasecmp(key, "GlobalKnownHostsFile") == 0) {
		if (set_copy(cfg->global_known_hosts, sizeof(cfg->global_known_hosts), val) != 0)
			return bad(err, "-o %s: path too long", opt);
	} else if (strcasecmp(key, "HostKeyAlias") == 0) {
		if (!*val || set_copy(cfg->hostkey_alias, sizeof(cfg->hostkey_alias), val) != 0)
			return bad(err, "-o %s: expected a name (at most 255 bytes)", opt);
	} else if (strcasecmp(key, "HashKnownHosts") == 0) {
		if (strcasecmp(val, "yes") == 0)
			cfg->hash_known_hosts = true;
		else if (strcasecmp(val, "no") == 0)
			cfg->hash_known_hosts = false;
		else
			return bad(err, "-o %s: use yes or no", opt);
	} else if (strcasecmp(key, "Ciphers") == 0 || strcasecmp(key, "MACs") == 0 ||
		   strcasecmp(key, "KexAlgorithms") == 0 ||
		   strcasecmp(key, "HostKeyAlgorithms") == 0) {
		/* kept as given; resolved against the build once parsing is done */
		char *dst = tolower((unsigned char)key[0]) == 'c'   ? cfg->ciphers
			    : tolower((unsigned char)key[0]) == 'm' ? cfg->macs
			    : tolower((unsigned char)key[0]) == 'k' ? cfg->kex
								    : cfg->hostkey_algs;
		if (!*val || set_copy(dst, PX_ALG_LIST_MAX, val) != 0)
			return bad(err, "-o %s: expected a list of at most 1023 bytes", opt);
	} else if (strcasecmp(key, "Port") == 0) {
		if (parse_port(val, false, &cfg->ssh_port) != 0)
			return bad(err, "-o %s: bad port", opt);
	} else if (strcasecmp(key, "User") == 0) {
		if (set_copy(cfg->user, sizeof(cfg->user), val) != 0)
			return bad(err, "-o %s: too long", opt);
	} else if (strcasecmp(key, "IdentityFile") == 0) {
		if (cfg->nidentities >= PX_MAX_IDENTITIES)
			return bad(err, "-o %s: too many identities", opt);
		cfg->identities[cfg->nidentities++] = val;
		cfg->identities_given = true;
	} else {
		return bad(err, "-o %s: unsupported option", opt);
	}
	return 0;
}

/* [user@]host[:port]. The user part is taken unless -l was given on the
 * command line (ssh: -l, then user@host, then the config's User); a port
 * here goes to *port (0 when none). */
static int parse_target(const char *arg, px_config *cfg, bool login_given, uint16_t *port,
			FILE *err)
{
	const char *at = strrchr(arg, '@');
	const char *host = arg;
	if (at) {
		if (at == arg || (size_t)(at - arg) >= sizeof(cfg->user))
			return bad(err, "bad user in %s", arg);
		if (!login_given) {
			memcpy(cfg->user, arg, (size_t)(at - arg));
			cfg->user[at - arg] = '\0';
		}
		host = at + 1;
	}
	char fl[2][256];
	int n;
	if (host[0] == '[' || strchr(host, ':') == strrchr(host, ':'))
		n = split_colons(host, fl, 2); /* host, [v6], host:port, [v6]:port */
	else
		n = (strlen(host) < 256) ? (strcpy(fl[0], host), 1) : -1; /* bare IPv6 */
	if (n < 1 || !fl[0][0])
		return bad(err, "bad gateway %s", arg);
	*port = 0;
	if (n == 2 && parse_port(fl[1], false, port) != 0)
		return bad(err, "bad port in %s", arg);
	if (set_copy(cfg->gateway, sizeof(cfg->gateway), fl[0]) != 0)
		return bad(err, "gateway name too long: %s", arg);
	return 0;
}

static void default_identities(px_config *cfg, const char *home)
{
	static char paths[3][4096];
	static const char *names[] = {"id_ed25519", "id_ecdsa", "id_rsa"};
	for (size_t i = 0; i < 3 && cfg->nidentities < PX_MAX_IDENTITIES; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/.ssh/%s", home, names[i]);
		if (access(paths[i], R_OK) == 0)
			cfg->identities[cfg->nidentities++] = paths[i];
	}
}

enum {
	OPT_WINDOW = 256,
	OPT_DATA_TIMEOUT,
	OPT_DATA_HOST,
	OPT_NO_UID_CHECK,
	OPT_SYSLOG,
	OPT_STATUS_FILE,
};

static const struct option longopts[] = {
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{"window-max", required_argument, NULL, OPT_WINDOW},
	{"data-timeout", required_argument, NULL, OPT_DATA_TIMEOUT},
	{"data-host", required_argument, NULL, OPT_DATA_HOST},
	{"no-uid-check", no_argument, NULL, OPT_NO_UID_CHECK},
	{"syslog", no_argument, NULL, OPT_SYSLOG},
	{"status-file", required_argument, NULL, OPT_STATUS_FILE},
	{NULL, 0, NULL, 0},
};
static const char shortopts[] = ":F:L:p:i:l:o:Q:qvVh";

/* What one source (a config file or the command line) set. The command
 * line wins: its -L and -i replace the config's instead of adding. */
struct src_state {
	bool cli;
	bool port_given;
	uint16_t port;
	bool login_given;
	bool fwd_reset, id_reset;
};

/* Strings from config files must outlive parsing: keep copies, freed by
 * px_cli_free() at exit. */
static char *kept[64];
static size_t nkept;

static char *keep(const char *s)
{
	char *d = nkept < sizeof(kept) / sizeof(kept[0]) ? strdup(s) : NULL;
	if (!d)
		return NULL;
	kept[nkept++] = d;
	return d;
}

void px_cli_free(px_config *cfg)
{
	(void)cfg;
	for (size_t i = 0; i < nkept; i++)
		free(kept[i]);
	nkept = 0;
}

/* -Q, as ssh -Q: what this build supports, one name a line. */
static int query_algs(const char *q, FILE *out, FILE *err)
{
	char list[4096];
	if (strcmp(q, "help") == 0) {
		fprintf(out, "cipher\nmac\nkex\nkey\n");
		return 1;
	}
	int kind = mux_alg_kind_from_query(q);
	if (kind < 0)
		return bad(err, "-Q %s: unsupported query (cipher, mac, kex, key, help)", q);
	if (mux_algs_supported(kind, list, sizeof(list)) < 0) {
		fprintf(err, "ftpssh: cannot list the algorithms of libssh2 %s\n",
			mux_libssh2_version());
		return -1;
	}
	for (char *p = list, *comma; p; p = comma ? comma + 1 : NULL) {
		comma = strchr(p, ',');
		fprintf(out, "%.*s\n", comma ? (int)(comma - p) : (int)strlen(p), p);
	}
	return 1;
}

/* Apply one option. 0: go on; 1: --help/--version handled; -1: error. */
static int apply_opt(px_config *cfg, int ch, char *arg, struct src_state *st, FILE *out,
		     FILE *err)
{
	char c[2] = {(char)optopt, 0};
	if (!st->cli && arg && !(arg = keep(arg)))
		return bad(err, "%s", "config file too long");
	switch (ch) {
	case 'F':
		break; /* handled before parsing */
	case 'L':
		if (st->cli && !st->fwd_reset) {
			cfg->nfwd = 0;
			st->fwd_reset = true;
		}
		if (cfg->nfwd >= PX_MAX_FORWARDS)
			return bad(err, "too many -L (max %s)", "16");
		if (parse_forward(arg, &cfg->fwd[cfg->nfwd]) != 0)
			return bad(err, "bad -L %s: want [bind_address:]port:host:hostport", arg);
		cfg->nfwd++;
		break;
	case 'p':
		if (parse_port(arg, false, &st->port) != 0)
			return bad(err, "bad port %s", arg);
		cfg->ssh_port = st->port;
		st->port_given = true;
		break;
	case 'i':
		if (st->cli && !st->id_reset) {
			cfg->nidentities = 0;
			st->id_reset = true;
		}
		if (cfg->nidentities >= PX_MAX_IDENTITIES)
			return bad(err, "too many -i (max %s)", "16");
		cfg->identities[cfg->nidentities++] = arg;
		cfg->identities_given = true;
		break;
	case 'l':
		if (set_copy(cfg->user, sizeof(cfg->user), arg) != 0)
			return bad(err, "login too long: %s", arg);
		st->login_given = true;
		break;
	case 'o':
		if (parse_o(arg, cfg, err) != 0)
			return -1;
		break;
	case 'Q':
		return query_algs(arg, out, err);
	case 'q':
		cfg->verbosity = -1;
		break;
	case 'v':
		if (cfg->verbosity < 0)
			cfg->verbosity = 0;
		cfg->verbosity++;
		break;
	case 'V':
		fprintf(out, "ftpssh %s (libssh2 %s, libuv %s)\n", FTPSSH_VERSION,
			mux_libssh2_version(), uv_version_string());
		return 1;
	case 'h':
		fprintf(out, "%s%s", usage_text, help_text);
		return 1;
	case OPT_WINDOW: {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(arg, &end, 10);
		if (errno || *end || v < 65536 || v > (1ull << 30))
			return bad(err, "--window-max %s: bytes from 65536 to 1073741824", arg);
		cfg->window_max = (uint32_t)v;
		break;
	}
	case OPT_DATA_TIMEOUT: {
		uint16_t v;
		if (parse_port(arg, false, &v) != 0)
			return bad(err, "--data-timeout %s: seconds", arg);
		cfg->data_timeout_sec = v;
		break;
	}
	case OPT_DATA_HOST:
		if (strcmp(arg, "control") == 0)
			cfg->data_host_reported = false;
		else if (strcmp(arg, "reported") == 0)
			cfg->data_host_reported = true;
		else
			return bad(err, "--data-host %s: use control or reported", arg);
		break;
	case OPT_NO_UID_CHECK:
		cfg->no_uid_check = true;
		break;
	case OPT_SYSLOG:
		cfg->syslog = true;
		break;
	case OPT_STATUS_FILE:
		if (set_copy(cfg->status_file, sizeof(cfg->status_file), arg) != 0)
			return bad(err, "--status-file %s: path too long", arg);
		break;
	case ':':
		return bad(err, "option -%s needs an argument", c);
	default:
		if (optopt)
			return bad(err, "unknown option -%s", c);
		return bad(err, "unknown option%s", "");
	}
	return 0;
}

/* Run getopt over one argument vector. Returns 0/1/-1 as apply_opt; the
 * index of the first operand goes to *first. */
static int parse_args(px_config *cfg, int argc, char **argv, struct src_state *st, FILE *out,
		      FILE *err, int *first)
{
	int ch;
	optind = 0; /* glibc: full reset between vectors */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		int rc = apply_opt(cfg, ch, optarg, st, out, err);
		if (rc != 0)
			return rc;
	}
	*first = optind;
	return 0;
}

/* ssh_config-style keys in a config file become -o options. */
static bool is_ssh_key(const char *k)
{
	static const char *keys[] = {"UserKnownHostsFile", "StrictHostKeyChecking",
				     "ServerAliveInterval", "ServerAliveCountMax", "Ciphers", "MACs",
				     "Port", "User", "IdentityFile", "GlobalKnownHostsFile",
				     "HostKeyAlias", "HashKnownHosts", "KexAlgorithms",
				     "HostKeyAlgorithms"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcasecmp(k, keys[i]) == 0)
			return true;
	return false;
}

/* One "key value" line: the same keys as the long options (window-max,
 * data-host, ...), ssh's -o keys, and forward/gateway/identity/login/port/
 * verbose/quiet for the short ones. */
static int config_line(px_config *cfg, char *key, char *val, char *gateway, size_t gwcap,
		       struct src_state *st, FILE *out, FILE *err)
{
	char opt[1100];
	char *av[4] = {"ftpssh", NULL, NULL, NULL};
	int ac = 2, first;
	if (strcmp(key, "gateway") == 0) {
		if (!*val || set_copy(gateway, gwcap, val) != 0)
			return -1;
		return 0;
	}
	if (strcmp(key, "forward") == 0 || strcmp(key, "identity") == 0 ||
	    strcmp(key, "login") == 0 || strcmp(key, "port") == 0) {
		av[1] = key[0] == 'f' ? "-L" : key[0] == 'i' ? "-i" : key[0] == 'l' ? "-l" : "-p";
		av[2] = val;
		ac = 3;
	} else if (strcmp(key, "verbose") == 0 || strcmp(key, "quiet") == 0) {
		av[1] = key[0] == 'v' ? "-v" : "-q";
	} else if (is_ssh_key(key)) {
		snprintf(opt, sizeof(opt), "%s=%s", key, val);
		av[1] = "-o";
		av[2] = opt;
		ac = 3;
	} else {
		bool known = false;
		for (const struct option *o = longopts; o->name; o++)
			if (strcmp(o->name, key) == 0 && o->val != 'h' && o->val != 'V')
				known = true;
		if (!known)
			return -1;
		if (*val)
			snprintf(opt, sizeof(opt), "--%s=%s", key, val);
		else
			snprintf(opt, sizeof(opt), "--%s", key);
		av[1] = opt;
	}
	int rc = parse_args(cfg, ac, av, st, out, err, &first);
	if (rc != 0 || first != ac)
		return -1;
	return 0;
}

/* Read one config file. A missing optional file is fine; a malformed line
 * is an error naming the file and the line. */
static int config_file(px_config *cfg, const char *path, bool must_exist, char *gateway,
		       size_t gwcap, FILE *out, FILE *err)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	unsigned no = 0;
	struct src_state st = {0};
	if (!f) {
		if (!must_exist && errno == ENOENT)
			return 0;
		fprintf(err, "ftpssh: cannot read config %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		no++;
		char *p = line, *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		char *end = p + strlen(p);
		while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' ||
				   end[-1] == '\t'))
			*--end = '\0';
		if (!*p)
			continue;
		char *key = p;
		while (*p && *p != ' ' && *p != '\t' && *p != '=')
			p++;
		if (*p)
			*p++ = '\0';
		while (*p == ' ' || *p == '\t' || *p == '=')
			p++;
		FILE *quiet = fopen("/dev/null", "w");
		int rc = config_line(cfg, key, p, gateway, gwcap, &st, out, quiet ? quiet : err);
		if (quiet)
			fclose(quiet);
		if (rc != 0) {
			fprintf(err, "ftpssh: %s:%u: bad line: %s %s\n", path, no, key, p);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

/* One known-hosts list ("f1 f2", ssh's form) into paths: "none" is no
 * file, "~" and "~/..." are home's, "~user/..." that user's. */
static int split_files(const char *list, const char *home, char *buf, size_t cap,
		       const char **v, size_t *n, FILE *err)
{
	size_t used = 0;
	*n = 0;
	if (strcmp(list, "none") == 0)
		return 0;
	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		size_t len = strcspn(p, " \t");
		char word[4096], path[4096];
		if (len >= sizeof(word))
			goto toolong;
		memcpy(word, p, len);
		word[len] = '\0';
		p += len;
		const char *rest = word, *base = "";
		if (word[0] == '~') {
			size_t ul = strcspn(word + 1, "/");
			if (ul == 0) {
				base = home;
			} else {
				char user[256];
				struct passwd *upw = NULL;
				if (ul < sizeof(user)) {
					memcpy(user, word + 1, ul);
					user[ul] = '\0';
					upw = getpwnam(user);
				}
				if (!upw) {
					fprintf(err, "ftpssh: %s: no such user for ~\n", word);
					return -1;
				}
				base = upw->pw_dir;
			}
			rest = word + 1 + ul;
		}
		int w = snprintf(path, sizeof(path), "%s%s", base, rest);
		if (w < 0 || (size_t)w >= sizeof(path) || used + (size_t)w + 1 > cap ||
		    *n >= PX_MAX_KNOWN_HOSTS_FILES)
			goto toolong;
		memcpy(buf + used, path, (size_t)w + 1);
		v[(*n)++] = buf + used;
		used += (size_t)w + 1;
	}
	return 0;
toolong:
	fprintf(err, "ftpssh: known hosts list too long (at most %d files): %s\n",
		PX_MAX_KNOWN_HOSTS_FILES, list);
	return -1;
}

/* UserKnownHostsFile and GlobalKnownHostsFile with ssh's defaults. */
static int known_hosts_lists(px_config *cfg, const char *home, FILE *err)
{
	const char *user = cfg->known_hosts[0] ? cfg->known_hosts
						: "~/.ssh/known_hosts ~/.ssh/known_hosts2";
	const char *global = cfg->global_known_hosts[0]
				     ? cfg->global_known_hosts
				     : "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2";
	if (split_files(user, home, cfg->kh_paths[0], sizeof(cfg->kh_paths[0]), cfg->kh_files,
			&cfg->n_kh_files, err) != 0 ||
	    split_files(global, home, cfg->kh_paths[1], sizeof(cfg->kh_paths[1]), cfg->gkh_files,
			&cfg->n_gkh_files, err) != 0)
		return -1;
	return 0;
}

/* Ciphers, MACs, KexAlgorithms, HostKeyAlgorithms: ssh's forms resolved
 * against this build; a name it cannot use is a usage error. */
static int resolve_algs(px_config *cfg, FILE *err)
{
	char *lists[MUX_ALG_KINDS] = {cfg->ciphers, cfg->macs, cfg->kex, cfg->hostkey_algs};
	if (cfg->algs_resolved)
		return 0;
	cfg->algs_resolved = true;
	cfg->hostkey_algs_keep_order = cfg->hostkey_algs[0] && cfg->hostkey_algs[0] != '+' &&
				       cfg->hostkey_algs[0] != '-';
	for (int k = 0; k < MUX_ALG_KINDS; k++) {
		char out[PX_ALG_LIST_MAX], msg[4096];
		if (!lists[k][0])
			continue;
		if (mux_algs_resolve(k, lists[k], out, sizeof(out), msg, sizeof(msg)) != 0) {
			fprintf(err, "ftpssh: %s\n", msg);
			return -1;
		}
		strcpy(lists[k], out);
	}
	return 0;
}

int px_cli_parse(int argc, char **argv, px_config *cfg, FILE *out, FILE *err)
{
	struct src_state cli = {.cli = true};
	char gateway[256] = "";
	const char *config = NULL;
	int rc, first = 0;

	memset(cfg, 0, sizeof(*cfg));
	cfg->ssh_port = 22;
	cfg->keepalive_sec = 30;
	cfg->keepalive_count = 3;
	cfg->hostkey_policy = MUX_HOSTKEY_STRICT;
	cfg->window_max = 32u * 1024 * 1024;
	cfg->data_timeout_sec = 60;

	const char *home = getenv("HOME");
	struct passwd *pw = getpwuid(getuid());
	if (!home || !*home)
		home = pw ? pw->pw_dir : "/";

	/* -F first: it decides which files are read before the command line */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-F") == 0 && i + 1 < argc)
			config = argv[i + 1];
		else if (strncmp(argv[i], "-F", 2) == 0 && argv[i][2])
			config = argv[i] + 2;
	}
	if (config) {
		if (strcmp(config, "none") != 0 &&
		    config_file(cfg, config, true, gateway, sizeof(gateway), out, err) != 0)
			return -1;
	} else {
		char user_cfg[4096];
		snprintf(user_cfg, sizeof(user_cfg), "%s/.config/ftpssh/config", home);
		if (config_file(cfg, "/etc/ftpssh.conf", false, gateway, sizeof(gateway), out,
				err) != 0 ||
		    config_file(cfg, user_cfg, false, gateway, sizeof(gateway), out, err) != 0)
			return -1;
	}
	/* the port: command line (-p, -o Port), then gateway:port, then the
	 * config's, then 22 */
	uint16_t cfg_port = cfg->ssh_port, target_port = 0;
	cfg->ssh_port = 0;

	rc = parse_args(cfg, argc, argv, &cli, out, err, &first);
	if (rc != 0)
		return rc;
	if (first < argc - 1)
		return bad(err, "%s", "too many arguments");
	const char *target = first == argc - 1 ? argv[first] : gateway[0] ? gateway : NULL;
	if (!target)
		return bad(err, "%s", "missing gateway");
	uint16_t cli_port = cfg->ssh_port;
	if (parse_target(target, cfg, cli.login_given, &target_port, err) != 0)
		return -1;
	cfg->ssh_port = cli_port ? cli_port : target_port ? target_port : cfg_port;

	if (!cfg->user[0]) {
		const char *u = getenv("USER");
		if (!u || !*u)
			u = pw ? pw->pw_name : "root";
		if (set_copy(cfg->user, sizeof(cfg->user), u) != 0)
			return bad(err, "login too long: %s", u);
	}
	if (known_hosts_lists(cfg, home, err) != 0 || resolve_algs(cfg, err) != 0)
		return -1;
	if (!cfg->identities_given)
		default_identities(cfg, home);
	if (cfg->nfwd == 0) {
		px_forward *f = &cfg->fwd[cfg->nfwd++];
		strcpy(f->bind_addr, "127.0.0.1");
		f->bind_port = 21;
		f->default_port = true;
		f->also_v6 = true;
		strcpy(f->host, "localhost");
		f->port = 21;
	}
	return 0;
}
