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
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/proxy.h"

#ifndef FTPSSH_VERSION
#define FTPSSH_VERSION "0"
#endif
/* "bundled" or "system": which libssh2 the Makefile linked */
#ifndef FTPSSH_LIBSSH2_BUILD
#define FTPSSH_LIBSSH2_BUILD "unknown"
#endif

static int bad(FILE *err, const char *fmt, const char *arg)
{
	fprintf(err, "ftpssh: ");
	fprintf(err, fmt, arg);
	fprintf(err, "\n%s", px_cli_usage);
	return -1;
}

static int set_copy(char *dst, size_t cap, const char *src)
{
	if (strlen(src) >= cap)
		return -1;
	strcpy(dst, src);
	return 0;
}

/* [user@]host[:port] or ssh://[user@]host[:port] into destination,
 * dest_user, dest_port; which of -l, user@ and the configs' User wins is
 * ssh's business (or resolve_without_ssh's). */
static int parse_target(const char *arg, px_config *cfg, FILE *err)
{
	const char *host = arg;
	bool uri = strncmp(arg, "ssh://", 6) == 0;
	if (uri)
		host = arg + 6;
	if (arg[0] == '-')
		return bad(err, "bad destination %s", arg);
	const char *at = strrchr(host, '@');
	if (at) {
		if (at == host || (size_t)(at - host) >= sizeof(cfg->dest_user))
			return bad(err, "bad user in %s", arg);
		memcpy(cfg->dest_user, host, (size_t)(at - host));
		cfg->dest_user[at - host] = '\0';
		host = at + 1;
	}
	char fl[2][256];
	int n;
	if (uri && host[strlen(host) - 1] == '/')
		return bad(err, "bad destination %s: no path after ssh://host", arg);
	if (host[0] == '[' || strchr(host, ':') == strrchr(host, ':'))
		n = px_split_colons(host, fl, 2); /* host, [v6], host:port, [v6]:port */
	else
		n = (strlen(host) < 256) ? (strcpy(fl[0], host), 1) : -1; /* bare IPv6 */
	if (n < 1 || !fl[0][0])
		return bad(err, "bad gateway %s", arg);
	if (n == 2 && px_port_parse(fl[1], false, &cfg->dest_port) != 0)
		return bad(err, "bad port in %s", arg);
	if (set_copy(cfg->destination, sizeof(cfg->destination), fl[0]) != 0 ||
	    set_copy(cfg->gateway, sizeof(cfg->gateway), fl[0]) != 0)
		return bad(err, "gateway name too long: %s", arg);
	return 0;
}

static void default_identities(px_config *cfg, const char *home)
{
	static char paths[3][4096];
	/* ssh's order (less the key types libssh2 cannot use) */
	static const char *names[] = {"id_rsa", "id_ecdsa", "id_ed25519"};
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
	OPT_CONFIG,
	OPT_MAX_SESSIONS,
	OPT_MAX_PER_USER,
	OPT_IDLE_TIMEOUT,
	OPT_ALLOW_USERS,
	OPT_ALLOW_GROUPS,
	OPT_SFTP_ALLOW_UID,
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
	{"config", required_argument, NULL, OPT_CONFIG},
	{"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
	{"max-sessions-per-user", required_argument, NULL, OPT_MAX_PER_USER},
	{"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
	{"allow-users", required_argument, NULL, OPT_ALLOW_USERS},
	{"allow-groups", required_argument, NULL, OPT_ALLOW_GROUPS},
	{"sftp-allow-uid", required_argument, NULL, OPT_SFTP_ALLOW_UID},
	{NULL, 0, NULL, 0},
};
static const char shortopts[] = ":F:L:p:i:l:o:J:c:m:Q:46CNTfnakxyqvVh";

/* What one source (a config file or the command line) set. The command
 * line wins: its -L and -i replace the config's instead of adding. */
struct src_state {
	bool cli;
	bool fwd_reset;
	bool identities; /* -i or -o IdentityFile seen */
};

/* Strings that must outlive parsing (config file values, settings from
 * ssh -G): copies freed by px_cli_free() at exit. */
static char *kept[512];
static size_t nkept;

const char *px_cli_keep(const char *s)
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

/* Config files' identities: used only when the command line names none. */
static const char *cfg_idents[PX_MAX_IDENTITIES];
static size_t ncfg_idents;

static int push(const char **list, size_t *n, const char *a, FILE *err)
{
	const char *k = px_cli_keep(a);
	if (*n >= PX_MAX_SSH_ARGS || !k)
		return bad(err, "%s", "too many ssh options");
	list[(*n)++] = k;
	return 0;
}

/* A flag for ssh -G, from the command line: kept in order. */
static int ssh_flag(px_config *cfg, const char *flag, const char *arg, FILE *err)
{
	if (push(cfg->ssh_args, &cfg->nssh_args, flag, err) != 0)
		return -1;
	return arg ? push(cfg->ssh_args, &cfg->nssh_args, arg, err) : 0;
}

static bool is_identity_o(const char *arg)
{
	return strncasecmp(arg, "IdentityFile", 12) == 0 &&
	       (arg[12] == '=' || arg[12] == ' ' || arg[12] == '\t');
}

/* "1001,alice,1002": uids or user names (looked up now) for the sftp
 * front end. */
static int parse_uid_list(const char *arg, px_config *cfg)
{
	char buf[1024];
	if (strlen(arg) >= sizeof(buf))
		return -1;
	strcpy(buf, arg);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		long uid;
		if (cfg->n_sftp_allow >= sizeof(cfg->sftp_allow_uids) / sizeof(cfg->sftp_allow_uids[0]))
			return -1;
		if (isdigit((unsigned char)t[0])) {
			char *end;
			errno = 0;
			unsigned long v = strtoul(t, &end, 10);
			if (errno || *end || v > 0x7fffffffUL)
				return -1;
			uid = (long)v;
		} else {
			struct passwd *pw = getpwnam(t);
			if (!pw)
				return -1;
			uid = (long)pw->pw_uid;
		}
		cfg->sftp_allow_uids[cfg->n_sftp_allow++] = uid;
	}
	return cfg->n_sftp_allow ? 0 : -1;
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
	if (!st->cli && arg && !(arg = (char *)px_cli_keep(arg)))
		return bad(err, "%s", "config file too long");
	switch (ch) {
	case 'F':
		cfg->ssh_config = px_cli_keep(arg);
		return ssh_flag(cfg, "-F", arg, err);
	case 'L':
		if (st->cli && !st->fwd_reset) {
			cfg->nfwd = 0;
			st->fwd_reset = true;
		}
		if (cfg->nfwd >= PX_MAX_FORWARDS)
			return bad(err, "too many -L (max %s)", "16");
		if (px_forward_parse(arg, &cfg->fwd[cfg->nfwd]) != 0)
			return bad(err, "bad -L %s: want [bind_address:]port:host:hostport or "
					"[bind_address:]port:sftp[:/dir]", arg);
		cfg->nfwd++;
		break;
	case 'p': {
		uint16_t port;
		if (px_port_parse(arg, false, &port) != 0)
			return bad(err, "bad port %s", arg);
		return ssh_flag(cfg, "-p", arg, err);
	}
	case 'i':
		st->identities = true;
		return ssh_flag(cfg, "-i", arg, err);
	case 'l':
	case 'J':
		c[0] = (char)ch;
		return ssh_flag(cfg, ch == 'l' ? "-l" : "-J", arg, err);
	case 'o':
		if (!strchr(arg, '=') && !strchr(arg, ' '))
			return bad(err, "-o %s: expected Key=Value", arg);
		if (is_identity_o(arg))
			st->identities = true;
		return ssh_flag(cfg, "-o", arg, err);
	case '4':
	case '6':
		cfg->address_family = ch == '4' ? AF_INET : AF_INET6;
		return ssh_flag(cfg, ch == '4' ? "-4" : "-6", NULL, err);
	case 'C':
		cfg->compression = true;
		return ssh_flag(cfg, "-C", NULL, err);
	case 'c':
	case 'm':
		return ssh_flag(cfg, ch == 'c' ? "-c" : "-m", arg, err);
	case 'N':
	case 'T':
	case 'n':
	case 'a':
	case 'k':
	case 'x':
		/* ftpssh never runs a remote command, asks for a tty, reads
		 * stdin, forwards the agent or X11, or delegates credentials */
		break;
	case 'y':
		cfg->syslog = true;
		break;
	case 'f':
		cfg->background = true;
		break;
	case 'Q':
		return query_algs(arg, out, err);
	case 'q':
		cfg->verbosity = -1;
		cfg->verbosity_given = st->cli;
		break;
	case 'v':
		if (cfg->verbosity < 0)
			cfg->verbosity = 0;
		cfg->verbosity++;
		cfg->verbosity_given = st->cli;
		break;
	case 'V':
		fprintf(out, "ftpssh %s (libssh2 %s %s, libuv %s)\n", FTPSSH_VERSION,
			mux_libssh2_version(), FTPSSH_LIBSSH2_BUILD, uv_version_string());
		return 1;
	case 'h':
		fprintf(out, "%s%s", px_cli_usage, px_cli_help);
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
		if (px_port_parse(arg, false, &v) != 0)
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
	case OPT_CONFIG:
		break; /* handled before parsing */
	case OPT_MAX_SESSIONS:
	case OPT_MAX_PER_USER:
	case OPT_IDLE_TIMEOUT: {
		char *end;
		errno = 0;
		unsigned long v = strtoul(arg, &end, 10);
		bool idle = ch == OPT_IDLE_TIMEOUT;
		if (errno || *end || !*arg || v > (idle ? 86400ul * 365 : 65536ul) || (!idle && v < 1))
			return bad(err, idle ? "--idle-timeout %s: seconds (0: never)"
					     : "--max-sessions%s: a number from 1 to 65536",
				   idle ? arg : ch == OPT_MAX_PER_USER ? "-per-user" : "");
		if (ch == OPT_MAX_SESSIONS)
			cfg->max_sessions = (unsigned)v;
		else if (ch == OPT_MAX_PER_USER)
			cfg->max_sessions_per_user = (unsigned)v;
		else
			cfg->idle_timeout_sec = (unsigned)v;
		break;
	}
	case OPT_ALLOW_USERS:
	case OPT_ALLOW_GROUPS: {
		bool users = ch == OPT_ALLOW_USERS;
		char *dst = users ? cfg->allow_users : cfg->allow_groups;
		size_t cap = users ? sizeof(cfg->allow_users) : sizeof(cfg->allow_groups);
		if (set_copy(dst, cap, arg) != 0)
			return bad(err, users ? "--allow-users %s: list too long"
					      : "--allow-groups %s: list too long",
				   arg);
		break;
	}
	case OPT_SFTP_ALLOW_UID:
		if (parse_uid_list(arg, cfg) != 0)
			return bad(err, "--sftp-allow-uid %s: user names or uids, comma separated "
					"(at most 16)", arg);
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

/* An ssh option from a config file: checked now (so that a bad line is
 * reported with its FILE:LINE), applied for the no-ssh case, and kept
 * for `ssh -G` after the destination, where the command line's own beat
 * it (ssh takes the first value). */
static int config_ssh_option(px_config *cfg, const char *key, const char *val, FILE *err)
{
	char why[512], opt[1100];
	bool known;
	if (!px_sshconfig_known(key) || !*val)
		return -1;
	if (px_sshconfig_set(cfg, key, val, &known, why, sizeof(why)) != 0) {
		fprintf(err, "ftpssh: %s\n", why);
		return -1;
	}
	snprintf(opt, sizeof(opt), "%s=%s", key, val);
	if (strcasecmp(key, "IdentityFile") == 0) {
		const char *k = px_cli_keep(opt);
		if (!k || ncfg_idents >= PX_MAX_IDENTITIES)
			return -1;
		cfg_idents[ncfg_idents++] = k;
		return 0;
	}
	if (push(cfg->ssh_tail, &cfg->nssh_tail, "-o", err) != 0 ||
	    push(cfg->ssh_tail, &cfg->nssh_tail, opt, err) != 0)
		return -1;
	return 0;
}

/* One "key value" line: the same keys as the long options (window-max,
 * data-host, ...), any ssh_config option, and forward/gateway/identity/
 * login/port/verbose/quiet for the short ones. */
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
	if (strcmp(key, "identity") == 0)
		return config_ssh_option(cfg, "IdentityFile", val, err);
	if (strcmp(key, "login") == 0)
		return config_ssh_option(cfg, "User", val, err);
	if (strcmp(key, "port") == 0)
		return config_ssh_option(cfg, "Port", val, err);
	if (strcmp(key, "forward") == 0) {
		av[1] = "-L";
		av[2] = val;
		ac = 3;
	} else if (strcmp(key, "verbose") == 0 || strcmp(key, "quiet") == 0) {
		av[1] = key[0] == 'v' ? "-v" : "-q";
	} else if (px_sshconfig_known(key)) {
		return config_ssh_option(cfg, key, val, err);
	} else {
		bool known = false;
		for (const struct option *o = longopts; o->name; o++)
			if (strcmp(o->name, key) == 0 && o->val != 'h' && o->val != 'V' &&
			    o->val != OPT_CONFIG)
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

int px_cli_parse(int argc, char **argv, px_config *cfg, FILE *out, FILE *err)
{
	struct src_state cli = {.cli = true};
	char gateway[256] = "";
	const char *config = NULL;
	int rc, first = 0;

	memset(cfg, 0, sizeof(*cfg));
	ncfg_idents = 0;
	cfg->ssh_port = 22;
	cfg->keepalive_sec = 30;
	cfg->keepalive_count = 3;
	cfg->hostkey_policy = MUX_HOSTKEY_STRICT;
	cfg->use_agent = true;
	/* ssh's GlobalKnownHostsFile default; ssh -G (or -o) replaces it */
	cfg->global_known_hosts[0] = "/etc/ssh/ssh_known_hosts";
	cfg->global_known_hosts[1] = "/etc/ssh/ssh_known_hosts2";
	cfg->nglobal_known_hosts = 2;
	cfg->window_max = 8u * 1024 * 1024; /* see mux/window.c: sshd's side of big windows */
	cfg->data_timeout_sec = 60;
	cfg->max_sessions = 256;
	cfg->max_sessions_per_user = 64;
	cfg->idle_timeout_sec = 900;

	const char *home = getenv("HOME");
	struct passwd *pw = getpwuid(getuid());
	if (!home || !*home)
		home = pw ? pw->pw_dir : "/";

	/* --config first: it decides which files are read before the
	 * command line */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			config = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			config = argv[i] + 9;
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

	rc = parse_args(cfg, argc, argv, &cli, out, err, &first);
	if (rc != 0)
		return rc;
	if (first < argc - 1)
		return bad(err, "%s", "too many arguments (ftpssh runs no remote command)");
	const char *target = first == argc - 1 ? argv[first] : gateway[0] ? gateway : NULL;
	if (!target)
		return bad(err, "%s", "missing gateway");
	if (parse_target(target, cfg, err) != 0)
		return -1;

	/* The command line's identities replace the config files' (-i, -o
	 * IdentityFile); ftpssh's defaults apply when neither names one. */
	if (cli.identities) {
		cfg->nidentities = 0;
		cfg->identities_given = true;
	} else {
		for (size_t i = 0; i < ncfg_idents; i++)
			if (push(cfg->ssh_tail, &cfg->nssh_tail, "-o", err) != 0 ||
			    push(cfg->ssh_tail, &cfg->nssh_tail, cfg_idents[i], err) != 0)
				return -1;
	}
	if (!cfg->user[0]) {
		const char *u = getenv("USER");
		if (!u || !*u)
			u = pw ? pw->pw_name : "root";
		if (set_copy(cfg->user, sizeof(cfg->user), u) != 0)
			return bad(err, "login too long: %s", u);
	}
	if (!cfg->known_hosts[0]) {
		static char kh[2][4096];
		snprintf(kh[0], sizeof(kh[0]), "%s/.ssh/known_hosts", home);
		snprintf(kh[1], sizeof(kh[1]), "%s/.ssh/known_hosts2", home);
		snprintf(cfg->known_hosts, sizeof(cfg->known_hosts), "%s", kh[0]);
		cfg->known_hosts_files[0] = kh[0];
		cfg->known_hosts_files[1] = kh[1];
		cfg->nknown_hosts_files = 2;
	}
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
