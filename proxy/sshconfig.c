/*
 * ssh configuration: the destination's effective settings, asked of
 * OpenSSH itself.
 *
 * `ssh -G` prints, one lowercase "key value" line each, every setting ssh
 * would use for the destination after ~/.ssh/config (from the password
 * database's home), /etc/ssh/ssh_config, Include, Match, tokens,
 * canonicalisation and the user's flags. So ftpssh has no ssh_config
 * parser: it runs `ssh -G` once at start-up (stdin /dev/null, bounded in
 * time) and maps the output through one table, opts[] below, of ssh option
 * name -> what ftpssh does with it. A second run, `ssh -G -F none`, gives
 * OpenSSH's own defaults: a value equal to that baseline was not set by
 * the user, so ftpssh's defaults apply (algorithm lists, key files in
 * $HOME, the keepalive interval), and options ftpssh cannot honour are
 * only warned about when the user changed them. The algorithm lists are
 * checked against this libssh2 (mux_algs_from_ssh, apply_algs below).
 *
 * Without an ssh binary the same table reads the command line's -o, -p,
 * -l, -i, -J, -4, -6 and -C: nothing of ~/.ssh/config then, and -v says so.
 * Running ssh and building the proxy child's argv is sshrun.c's job, ~ and
 * token expansion sshtokens.c's.
 */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/internal.h"


/* ---- small helpers ---------------------------------------------------------- */

static bool is_yes(const char *v)
{
	return strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0;
}

static bool is_no(const char *v)
{
	return strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0;
}

/* not inlined: gcc would then warn about every caller's possible truncation */
__attribute__((noinline)) static int fail(char *why, size_t cap, const char *fmt, const char *arg)
{
	snprintf(why, cap, fmt, arg);
	return -1;
}

static int parse_uint(const char *v, unsigned max, unsigned *out)
{
	char *end;
	if (!*v || !isdigit((unsigned char)*v))
		return -1;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (errno || *end || n > max)
		return -1;
	*out = (unsigned)n;
	return 0;
}

/* ---- the table: ssh option name -> what ftpssh does with it ------------------ */

enum opt_class {
	OC_HONOUR,   /* mapped into px_config (setter) */
	OC_BY_SSH,   /* ssh -G itself applies it (Host, Match, Include, ...) */
	OC_NOEFFECT, /* means nothing without a remote session; logged at -v */
	OC_WARN,     /* ftpssh cannot do it: warned once, by name, when set */
	OC_REFUSE,   /* set to other than ssh's default: exit 2 */
};

/* Flags. F_DEFAULT: a value equal to OpenSSH's own default (the -F none
 * baseline) leaves ftpssh's default in place. F_LIST: several lines
 * accumulate (IdentityFile). */
#define F_DEFAULT 1
#define F_LIST 2

typedef int (*opt_setter)(px_config *cfg, const char *val, char *why, size_t cap);

struct sshopt {
	const char *name;
	enum opt_class cls;
	unsigned flags;
	opt_setter set;
};

static int keep_str(const char **dst, const char *v, char *why, size_t cap)
{
	const char *k = px_cli_keep(v);
	if (!k)
		return fail(why, cap, "%s: out of room for settings", v);
	*dst = k;
	return 0;
}

static int set_hostname(px_config *c, const char *v, char *why, size_t cap)
{
	if (!*v || strlen(v) >= sizeof(c->gateway))
		return fail(why, cap, "bad host name %s", v);
	/* ssh -G keeps the brackets of "user@[::1]"; a connect wants none */
	size_t l = strlen(v);
	if (v[0] == '[' && v[l - 1] == ']' && l > 2) {
		memcpy(c->gateway, v + 1, l - 2);
		c->gateway[l - 2] = '\0';
	} else {
		strcpy(c->gateway, v);
	}
	return 0;
}

static int set_port(px_config *c, const char *v, char *why, size_t cap)
{
	unsigned n;
	if (parse_uint(v, 65535, &n) != 0 || n == 0)
		return fail(why, cap, "bad port %s", v);
	c->ssh_port = (uint16_t)n;
	return 0;
}

static int set_user(px_config *c, const char *v, char *why, size_t cap)
{
	if (!*v || strlen(v) >= sizeof(c->user))
		return fail(why, cap, "bad user name %s", v);
	strcpy(c->user, v);
	return 0;
}

static int add_file(const char **list, size_t *n, size_t max, px_config *c, const char *v,
		    bool must_exist, char *why, size_t cap)
{
	char path[4096];
	if (px__ssh_expand(c, v, path, sizeof(path), why, cap) != 0)
		return -1;
	if (must_exist && access(path, R_OK) != 0) {
		/* ssh skips key files it cannot read without a word */
		px_log(2, "ssh: skipping %s: %s", path, strerror(errno));
		return 0;
	}
	if (*n >= max)
		return fail(why, cap, "%s: too many files", v);
	return keep_str(&list[(*n)++], path, why, cap);
}

static int set_identityfile(px_config *c, const char *v, char *why, size_t cap)
{
	c->identities_given = true;
	return add_file(c->identities, &c->nidentities, PX_MAX_IDENTITIES, c, v, true, why, cap);
}

static int set_certificatefile(px_config *c, const char *v, char *why, size_t cap)
{
	return add_file(c->certificates, &c->ncertificates, PX_MAX_FILES, c, v, true, why, cap);
}

/* A space-separated list of files (ssh prints them that way). */
static int set_file_list(const char **list, size_t *n, px_config *c, const char *v, char *why,
			 size_t cap)
{
	char buf[4096];
	if (strlen(v) >= sizeof(buf))
		return fail(why, cap, "%s: too long", v);
	strcpy(buf, v);
	*n = 0;
	for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t;
	     t = strtok_r(NULL, " \t", &save)) {
		if (strcasecmp(t, "none") == 0)
			continue;
		if (add_file(list, n, PX_MAX_FILES, c, t, false, why, cap) != 0)
			return -1;
	}
	return 0;
}

static int set_userknownhostsfile(px_config *c, const char *v, char *why, size_t cap)
{
	if (set_file_list(c->known_hosts_files, &c->nknown_hosts_files, c, v, why, cap) != 0)
		return -1;
	snprintf(c->known_hosts, sizeof(c->known_hosts), "%s",
		 c->nknown_hosts_files ? c->known_hosts_files[0] : "/dev/null");
	return 0;
}

static int set_globalknownhostsfile(px_config *c, const char *v, char *why, size_t cap)
{
	return set_file_list(c->global_known_hosts, &c->nglobal_known_hosts, c, v, why, cap);
}

static int set_stricthostkeychecking(px_config *c, const char *v, char *why, size_t cap)
{
	if (is_yes(v) || strcasecmp(v, "ask") == 0)
		c->hostkey_policy = MUX_HOSTKEY_STRICT; /* nobody to ask: as yes */
	else if (strcasecmp(v, "accept-new") == 0)
		c->hostkey_policy = MUX_HOSTKEY_ACCEPT_NEW;
	else if (is_no(v) || strcasecmp(v, "off") == 0)
		c->hostkey_policy = MUX_HOSTKEY_OFF;
	else
		return fail(why, cap, "StrictHostKeyChecking %s: use yes, accept-new or no", v);
	return 0;
}

static int set_bool(bool *dst, bool invert, const char *name, const char *v, char *why,
		    size_t cap)
{
	if (is_yes(v))
		*dst = !invert;
	else if (is_no(v))
		*dst = invert;
	else {
		snprintf(why, cap, "%s %s: use yes or no", name, v);
		return -1;
	}
	return 0;
}

#define BOOL_SETTER(fn, field, invert, name)                                    \
	static int fn(px_config *c, const char *v, char *why, size_t cap)      \
	{                                                                       \
		return set_bool(&c->field, invert, name, v, why, cap);          \
	}
BOOL_SETTER(set_identitiesonly, identities_only, false, "IdentitiesOnly")
BOOL_SETTER(set_batchmode, batch_mode, false, "BatchMode")
BOOL_SETTER(set_hashknownhosts, hash_known_hosts, false, "HashKnownHosts")
BOOL_SETTER(set_compression, compression, false, "Compression")
BOOL_SETTER(set_pubkeyauthentication, no_pubkey_auth, true, "PubkeyAuthentication")
BOOL_SETTER(set_passwordauthentication, no_password_auth, true, "PasswordAuthentication")
BOOL_SETTER(set_kbdinteractiveauthentication, no_kbdint_auth, true,
	    "KbdInteractiveAuthentication")

/* -f is not given to ssh -G, which then says "no": only "yes" counts */
static int set_forkafterauthentication(px_config *c, const char *v, char *why, size_t cap)
{
	bool b;
	if (set_bool(&b, false, "ForkAfterAuthentication", v, why, cap) != 0)
		return -1;
	c->background = c->background || b;
	return 0;
}

static int set_exitonforwardfailure(px_config *c, const char *v, char *why, size_t cap)
{
	bool b;
	(void)c; /* ftpssh always exits when a listener cannot be bound */
	return set_bool(&b, false, "ExitOnForwardFailure", v, why, cap);
}

static int set_preferredauthentications(px_config *c, const char *v, char *why, size_t cap)
{
	return keep_str(&c->preferred_auth, v, why, cap);
}

static int set_hostkeyalias(px_config *c, const char *v, char *why, size_t cap)
{
	if (strcasecmp(v, "none") == 0) {
		c->hostkey_alias = NULL;
		return 0;
	}
	return keep_str(&c->hostkey_alias, v, why, cap);
}

/* The four algorithm lists. Here (no ssh, config files' lines) they are
 * kept as written, +/-/^ forms included: px__sshconfig_resolve_algs
 * resolves them against this build once everything is read. The ssh -G
 * path does not come through these setters: ssh has applied the forms
 * already, and apply_algs keeps what the build supports. */
static int set_algs(const char **dst, const char *v, char *why, size_t cap)
{
	return keep_str(dst, v, why, cap);
}

static int set_ciphers(px_config *c, const char *v, char *why, size_t cap)
{
	return set_algs(&c->ciphers, v, why, cap);
}

static int set_macs(px_config *c, const char *v, char *why, size_t cap)
{
	return set_algs(&c->macs, v, why, cap);
}

static int set_kexalgorithms(px_config *c, const char *v, char *why, size_t cap)
{
	return set_algs(&c->kex, v, why, cap);
}

static int set_hostkeyalgorithms(px_config *c, const char *v, char *why, size_t cap)
{
	return set_algs(&c->hostkey_algs, v, why, cap);
}

static int set_connecttimeout(px_config *c, const char *v, char *why, size_t cap)
{
	if (strcasecmp(v, "none") == 0) {
		c->connect_timeout_sec = 0;
		return 0;
	}
	if (parse_uint(v, 86400, &c->connect_timeout_sec) != 0)
		return fail(why, cap, "ConnectTimeout %s: seconds", v);
	return 0;
}

static int set_serveraliveinterval(px_config *c, const char *v, char *why, size_t cap)
{
	if (parse_uint(v, 86400, &c->keepalive_sec) != 0)
		return fail(why, cap, "ServerAliveInterval %s: seconds", v);
	return 0;
}

static int set_serveralivecountmax(px_config *c, const char *v, char *why, size_t cap)
{
	if (parse_uint(v, 1000, &c->keepalive_count) != 0 || c->keepalive_count == 0)
		return fail(why, cap, "ServerAliveCountMax %s: a count from 1", v);
	return 0;
}

static int set_addressfamily(px_config *c, const char *v, char *why, size_t cap)
{
	if (strcasecmp(v, "any") == 0)
		c->address_family = AF_UNSPEC;
	else if (strcasecmp(v, "inet") == 0)
		c->address_family = AF_INET;
	else if (strcasecmp(v, "inet6") == 0)
		c->address_family = AF_INET6;
	else
		return fail(why, cap, "AddressFamily %s: use any, inet or inet6", v);
	return 0;
}

static int set_proxyjump(px_config *c, const char *v, char *why, size_t cap)
{
	if (strcasecmp(v, "none") == 0) {
		c->proxy_jump = NULL;
		return 0;
	}
	return keep_str(&c->proxy_jump, v, why, cap);
}

static int set_proxycommand(px_config *c, const char *v, char *why, size_t cap)
{
	if (strcasecmp(v, "none") == 0) {
		c->proxy_command = NULL;
		return 0;
	}
	/* kept raw: its tokens are expanded once hostname, port and user
	 * are all known */
	return keep_str(&c->proxy_command, v, why, cap);
}

static int set_loglevel(px_config *c, const char *v, char *why, size_t cap)
{
	static const struct {
		const char *name;
		int verbosity;
	} lv[] = {{"QUIET", -1}, {"SILENT", -1}, {"FATAL", -1}, {"ERROR", -1}, {"INFO", 0},
		  {"VERBOSE", 1}, {"DEBUG", 1},  {"DEBUG1", 1}, {"DEBUG2", 2}, {"DEBUG3", 2}};
	for (size_t i = 0; i < sizeof(lv) / sizeof(lv[0]); i++)
		if (strcasecmp(v, lv[i].name) == 0) {
			if (!c->verbosity_given) /* -q/-v on the command line win */
				c->verbosity = lv[i].verbosity;
			return 0;
		}
	(void)why;
	(void)cap;
	px_log(2, "LogLevel %s: not a level ftpssh knows; ignored", v);
	return 0;
}

static void note_unhonoured(const char *name);

static int set_identityagent(px_config *c, const char *v, char *why, size_t cap)
{
	(void)why;
	(void)cap;
	/* "none" turns the agent off; SSH_AUTH_SOCK is what libssh2 uses
	 * anyway; another socket is not supported */
	c->use_agent = strcasecmp(v, "none") != 0;
	if (c->use_agent && strcmp(v, "SSH_AUTH_SOCK") != 0 && strcmp(v, "$SSH_AUTH_SOCK") != 0)
		note_unhonoured("IdentityAgent");
	return 0;
}

static int set_proxyusefdpass(px_config *c, const char *v, char *why, size_t cap)
{
	bool b;
	(void)c;
	if (set_bool(&b, false, "ProxyUseFdpass", v, why, cap) != 0)
		return -1;
	if (b)
		return fail(why, cap, "ProxyUseFdpass %s: ftpssh cannot take a socket from the "
				      "ProxyCommand; leave it off", v);
	return 0;
}

/* Every option ssh_config(5) of OpenSSH 9.2 names. */
static const struct sshopt opts[] = {
	{"AddKeysToAgent", OC_WARN, 0, NULL},
	{"AddressFamily", OC_HONOUR, 0, set_addressfamily},
	{"BatchMode", OC_HONOUR, 0, set_batchmode},
	{"BindAddress", OC_WARN, 0, NULL},
	{"BindInterface", OC_WARN, 0, NULL},
	{"CanonicalDomains", OC_BY_SSH, 0, NULL},
	{"CanonicalizeFallbackLocal", OC_BY_SSH, 0, NULL},
	{"CanonicalizeHostname", OC_BY_SSH, 0, NULL},
	{"CanonicalizeMaxDots", OC_BY_SSH, 0, NULL},
	{"CanonicalizePermittedCNAMEs", OC_BY_SSH, 0, NULL},
	{"CASignatureAlgorithms", OC_WARN, 0, NULL},
	{"CertificateFile", OC_HONOUR, F_LIST, set_certificatefile},
	{"CheckHostIP", OC_WARN, 0, NULL},
	{"Ciphers", OC_HONOUR, F_DEFAULT, set_ciphers},
	{"ClearAllForwardings", OC_NOEFFECT, 0, NULL},
	{"Compression", OC_HONOUR, 0, set_compression},
	{"ConnectionAttempts", OC_WARN, 0, NULL},
	{"ConnectTimeout", OC_HONOUR, 0, set_connecttimeout},
	{"ControlMaster", OC_WARN, 0, NULL},
	{"ControlPath", OC_WARN, 0, NULL},
	{"ControlPersist", OC_WARN, 0, NULL},
	{"DynamicForward", OC_WARN, 0, NULL},
	{"EnableEscapeCommandline", OC_NOEFFECT, 0, NULL},
	{"EnableSSHKeysign", OC_WARN, 0, NULL},
	{"EscapeChar", OC_NOEFFECT, 0, NULL},
	{"ExitOnForwardFailure", OC_HONOUR, 0, set_exitonforwardfailure},
	{"FingerprintHash", OC_WARN, 0, NULL},
	{"ForkAfterAuthentication", OC_HONOUR, 0, set_forkafterauthentication},
	{"ForwardAgent", OC_NOEFFECT, 0, NULL},
	{"ForwardX11", OC_NOEFFECT, 0, NULL},
	{"ForwardX11Timeout", OC_NOEFFECT, 0, NULL},
	{"ForwardX11Trusted", OC_NOEFFECT, 0, NULL},
	{"GatewayPorts", OC_NOEFFECT, 0, NULL},
	{"GlobalKnownHostsFile", OC_HONOUR, 0, set_globalknownhostsfile},
	/* Debian's /etc/ssh/ssh_config turns GSSAPI on for everyone; ftpssh
	 * skips it as ssh does without a Kerberos ticket (logged at -v). */
	{"GSSAPIAuthentication", OC_NOEFFECT, 0, NULL},
	{"GSSAPIClientIdentity", OC_WARN, 0, NULL},
	{"GSSAPIDelegateCredentials", OC_NOEFFECT, 0, NULL},
	{"GSSAPIKexAlgorithms", OC_NOEFFECT, 0, NULL},
	{"GSSAPIKeyExchange", OC_WARN, 0, NULL},
	{"GSSAPIRenewalForcesRekey", OC_NOEFFECT, 0, NULL},
	{"GSSAPIServerIdentity", OC_WARN, 0, NULL},
	{"GSSAPITrustDns", OC_NOEFFECT, 0, NULL},
	{"HashKnownHosts", OC_HONOUR, 0, set_hashknownhosts},
	{"Host", OC_BY_SSH, 0, NULL},
	{"HostbasedAcceptedAlgorithms", OC_NOEFFECT, 0, NULL},
	{"HostbasedAuthentication", OC_WARN, 0, NULL},
	{"HostKeyAlgorithms", OC_HONOUR, F_DEFAULT, set_hostkeyalgorithms},
	{"HostKeyAlias", OC_HONOUR, 0, set_hostkeyalias},
	{"Hostname", OC_HONOUR, 0, set_hostname},
	{"IdentitiesOnly", OC_HONOUR, 0, set_identitiesonly},
	{"IdentityAgent", OC_HONOUR, 0, set_identityagent},
	{"IdentityFile", OC_HONOUR, F_DEFAULT | F_LIST, set_identityfile},
	{"IgnoreUnknown", OC_BY_SSH, 0, NULL},
	{"Include", OC_BY_SSH, 0, NULL},
	{"IPQoS", OC_WARN, 0, NULL},
	{"KbdInteractiveAuthentication", OC_HONOUR, 0, set_kbdinteractiveauthentication},
	{"KbdInteractiveDevices", OC_WARN, 0, NULL},
	{"KexAlgorithms", OC_HONOUR, F_DEFAULT, set_kexalgorithms},
	{"KnownHostsCommand", OC_WARN, 0, NULL},
	{"LocalCommand", OC_NOEFFECT, 0, NULL},
	{"LocalForward", OC_WARN, 0, NULL},
	{"LogLevel", OC_HONOUR, F_DEFAULT, set_loglevel},
	{"LogVerbose", OC_NOEFFECT, 0, NULL},
	{"MACs", OC_HONOUR, F_DEFAULT, set_macs},
	{"Match", OC_BY_SSH, 0, NULL},
	{"NoHostAuthenticationForLocalhost", OC_WARN, 0, NULL},
	{"NumberOfPasswordPrompts", OC_WARN, 0, NULL},
	{"PasswordAuthentication", OC_HONOUR, 0, set_passwordauthentication},
	{"PermitLocalCommand", OC_NOEFFECT, 0, NULL},
	{"PermitRemoteOpen", OC_NOEFFECT, 0, NULL},
	{"PKCS11Provider", OC_WARN, 0, NULL},
	{"Port", OC_HONOUR, 0, set_port},
	{"PreferredAuthentications", OC_HONOUR, 0, set_preferredauthentications},
	{"ProxyCommand", OC_HONOUR, 0, set_proxycommand},
	{"ProxyJump", OC_HONOUR, 0, set_proxyjump},
	{"ProxyUseFdpass", OC_REFUSE, 0, set_proxyusefdpass},
	{"PubkeyAcceptedAlgorithms", OC_WARN, 0, NULL},
	{"PubkeyAuthentication", OC_HONOUR, 0, set_pubkeyauthentication},
	{"RekeyLimit", OC_WARN, 0, NULL},
	{"RemoteCommand", OC_NOEFFECT, 0, NULL},
	{"RemoteForward", OC_WARN, 0, NULL},
	{"RequestTTY", OC_NOEFFECT, 0, NULL},
	{"RequiredRSASize", OC_WARN, 0, NULL},
	{"RevokedHostKeys", OC_WARN, 0, NULL},
	{"SecurityKeyProvider", OC_WARN, 0, NULL},
	{"SendEnv", OC_NOEFFECT, 0, NULL},
	{"ServerAliveCountMax", OC_HONOUR, 0, set_serveralivecountmax},
	{"ServerAliveInterval", OC_HONOUR, F_DEFAULT, set_serveraliveinterval},
	{"SessionType", OC_NOEFFECT, 0, NULL},
	{"SetEnv", OC_NOEFFECT, 0, NULL},
	{"StdinNull", OC_NOEFFECT, 0, NULL},
	{"StreamLocalBindMask", OC_NOEFFECT, 0, NULL},
	{"StreamLocalBindUnlink", OC_NOEFFECT, 0, NULL},
	{"StrictHostKeyChecking", OC_HONOUR, 0, set_stricthostkeychecking},
	{"SyslogFacility", OC_NOEFFECT, 0, NULL},
	{"TCPKeepAlive", OC_NOEFFECT, 0, NULL},
	{"Tunnel", OC_WARN, 0, NULL},
	{"TunnelDevice", OC_NOEFFECT, 0, NULL},
	{"UpdateHostKeys", OC_NOEFFECT, 0, NULL}, /* ftpssh learns no keys from the server */
	{"User", OC_HONOUR, 0, set_user},
	{"UserKnownHostsFile", OC_HONOUR, F_DEFAULT, set_userknownhostsfile},
	{"VerifyHostKeyDNS", OC_WARN, 0, NULL},
	{"VisualHostKey", OC_NOEFFECT, 0, NULL},
	{"XAuthLocation", OC_NOEFFECT, 0, NULL},
};

static const struct sshopt *opt_find(const char *name)
{
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (strcasecmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

bool px_sshconfig_known(const char *key)
{
	return opt_find(key) != NULL;
}

/* Names set by the user that ftpssh cannot honour, warned about once. */
static char warn_names[1024];

static void note_unhonoured(const char *name)
{
	size_t l = strlen(warn_names);
	if (strstr(warn_names, name))
		return;
	snprintf(warn_names + l, sizeof(warn_names) - l, "%s%s", l ? ", " : "", name);
}

int px_sshconfig_set(px_config *cfg, const char *key, const char *val, bool *known, char *why,
		     size_t cap)
{
	const struct sshopt *o = opt_find(key);
	*known = o != NULL;
	if (!o)
		return fail(why, cap, "%s: unknown ssh option", key);
	switch (o->cls) {
	case OC_HONOUR:
	case OC_REFUSE:
		return o->set(cfg, val, why, cap);
	case OC_BY_SSH:
		return fail(why, cap, "%s: only OpenSSH's ssh can apply this option", key);
	case OC_NOEFFECT:
		px_log(2, "ssh option %s has no effect in ftpssh", o->name);
		return 0;
	case OC_WARN:
		note_unhonoured(o->name);
		return 0;
	}
	return 0;
}


/* ---- for sshrun.c ---------------------------------------------------------------- */

size_t px__sshopt_count(void)
{
	return sizeof(opts) / sizeof(opts[0]);
}

const char *px__sshopt_name(size_t i)
{
	return opts[i].name;
}

void px__ssh_note_unhonoured(const char *name)
{
	note_unhonoured(name);
}

const char *px__ssh_unhonoured(void)
{
	return warn_names;
}

static const char **alg_field(px_config *cfg, enum mux_alg_kind kind)
{
	switch (kind) {
	case MUX_ALG_CIPHER:
		return &cfg->ciphers;
	case MUX_ALG_MAC:
		return &cfg->macs;
	case MUX_ALG_KEX:
		return &cfg->kex;
	default:
		return &cfg->hostkey_algs;
	}
}

/* An algorithm list as ssh -G printed it (+/-/^ applied against ssh's own
 * defaults) against ssh's baseline: equal leaves ftpssh's defaults (NULL);
 * otherwise the names this build supports, in ssh's order. A name the
 * user asked for that the build lacks is an error naming it. ssh -G does
 * not say which form was written, so host-key algorithms are reordered by
 * the known key types as for OpenSSH's defaults. */
static int apply_algs(px_config *cfg, enum mux_alg_kind kind, const char *uv, const char *bv,
		      char *why, size_t cap)
{
	char out[2048];
	const char **dst = alg_field(cfg, kind);
	int rc = mux_algs_from_ssh(kind, uv, bv ? bv : "", out, sizeof(out), why, cap);
	if (rc < 0)
		return -1;
	*dst = NULL;
	if (kind == MUX_ALG_HOSTKEY)
		cfg->hostkey_algs_keep_order = false;
	return rc == 1 ? 0 : keep_str(dst, out, why, cap);
}

int px__sshconfig_resolve_algs(px_config *cfg, char *why, size_t cap)
{
	cfg->hostkey_algs_keep_order = cfg->hostkey_algs && cfg->hostkey_algs[0] != '+' &&
				       cfg->hostkey_algs[0] != '-';
	for (int k = 0; k < MUX_ALG_KINDS; k++) {
		char out[2048];
		const char **dst = alg_field(cfg, (enum mux_alg_kind)k);
		if (!*dst || !**dst) {
			*dst = NULL;
			continue;
		}
		if (mux_algs_resolve((enum mux_alg_kind)k, *dst, out, sizeof(out), why, cap) != 0 ||
		    keep_str(dst, out, why, cap) != 0)
			return -1;
	}
	return 0;
}

int px__sshopt_apply(px_config *cfg, size_t i, const char *uv, const char *bv, char *why,
		     size_t cap)
{
	const struct sshopt *o = &opts[i];
	bool differs = !bv || strcmp(uv, bv) != 0;
	char buf[8192];
	int kind;
	switch (o->cls) {
	case OC_HONOUR:
	case OC_REFUSE:
		if ((kind = mux_alg_kind_from_query(o->name)) >= 0)
			return apply_algs(cfg, (enum mux_alg_kind)kind, uv, bv, why, cap);
		if ((o->flags & F_DEFAULT) && !differs)
			return 0; /* OpenSSH's default: ftpssh's own applies */
		if (!(o->flags & F_LIST))
			return o->set(cfg, uv, why, cap);
		if (strlen(uv) >= sizeof(buf))
			return fail(why, cap, "%s: too long", o->name);
		strcpy(buf, uv);
		if (o->set == set_identityfile)
			cfg->nidentities = 0;
		if (o->set == set_certificatefile)
			cfg->ncertificates = 0;
		for (char *save = NULL, *t = strtok_r(buf, "\n", &save); t;
		     t = strtok_r(NULL, "\n", &save))
			if (o->set(cfg, t, why, cap) != 0)
				return -1;
		return 0;
	case OC_NOEFFECT:
		if (differs)
			px_log(2, "ssh option %s has no effect in ftpssh", o->name);
		return 0;
	case OC_WARN:
		if (differs)
			note_unhonoured(o->name);
		return 0;
	case OC_BY_SSH:
		return 0;
	}
	return 0;
}

