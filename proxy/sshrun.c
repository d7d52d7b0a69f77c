/*
 * Running OpenSSH for its answer: `ssh -G` (the user's flags, then a
 * baseline with -F none) read into a key -> value set and handed to the
 * option table in sshconfig.c; then the proxy child's argv: ProxyCommand
 * as `$SHELL -c "exec ..."`, ProxyJump as OpenSSH builds it (`ssh -W`).
 * Everything here runs once, before the loop, and waits for its child
 * with a deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proxy/internal.h"

#define SSH_G_TIMEOUT_MS 10000
#define SSH_G_OUT_CAP (128 * 1024)
#define MAX_KV 256

/* not inlined: gcc would then warn about every caller's possible truncation */
__attribute__((noinline)) static int fail(char *why, size_t cap, const char *fmt, const char *arg)
{
	snprintf(why, cap, fmt, arg);
	return -1;
}

static int keep_str(const char **dst, const char *v, char *why, size_t cap)
{
	const char *k = px_cli_keep(v);
	if (!k)
		return fail(why, cap, "%s: out of room for settings", v);
	*dst = k;
	return 0;
}

/* ---- running ssh -G ------------------------------------------------------------ */

/* The ssh to run: $FTPSSH_SSH (tests), else "ssh" from PATH. */
static bool find_ssh(char *path, size_t cap)
{
	const char *env = getenv("FTPSSH_SSH");
	if (env) {
		snprintf(path, cap, "%s", env);
		return *env && access(env, X_OK) == 0;
	}
	const char *p = getenv("PATH");
	if (!p || !*p)
		p = "/usr/local/bin:/usr/bin:/bin";
	while (*p) {
		const char *colon = strchr(p, ':');
		size_t l = colon ? (size_t)(colon - p) : strlen(p);
		if (l > 0 && l + 5 < cap) {
			memcpy(path, p, l);
			strcpy(path + l, "/ssh");
			if (access(path, X_OK) == 0)
				return true;
		}
		p += l + (colon ? 1 : 0);
	}
	return false;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run argv with stdin /dev/null and stdout captured into out (NUL
 * terminated); stderr stays the user's. Returns the exit status, or -1
 * (timeout, or cannot run; said on err). */
static int run_capture(const char *const *argv, char *out, size_t cap, FILE *err)
{
	int fds[2];
	size_t len = 0;
	int status = -1;
	if (pipe2(fds, O_CLOEXEC) != 0) {
		fprintf(err, "ftpssh: pipe: %s\n", strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(err, "ftpssh: fork: %s\n", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);
		if (nul < 0 || dup2(nul, 0) < 0 || dup2(fds[1], 1) < 0)
			_exit(127);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	long long deadline = now_ms() + SSH_G_TIMEOUT_MS;
	bool timed_out = false;
	for (;;) {
		long long left = deadline - now_ms();
		if (left <= 0) {
			timed_out = true;
			break;
		}
		struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
		int n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			continue;
		ssize_t r = read(fds[0], out + len, cap - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len == cap - 1)
			break; /* more than any real -G output: stop reading */
	}
	out[len] = '\0';
	close(fds[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (timed_out) {
		fprintf(err, "ftpssh: %s -G gave no answer within %d s\n", argv[0],
			SSH_G_TIMEOUT_MS / 1000);
		return -1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ssh -G's output as key -> value, lines of one key joined by '\n'. */
struct kv {
	char *key, *val;
};
struct kvset {
	struct kv kv[MAX_KV];
	size_t n;
};

static void kv_free(struct kvset *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->kv[i].key);
		free(s->kv[i].val);
	}
	s->n = 0;
}

static const char *kv_get(const struct kvset *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcasecmp(s->kv[i].key, key) == 0)
			return s->kv[i].val;
	return NULL;
}

static int kv_parse(struct kvset *s, char *text)
{
	s->n = 0;
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(line, ' ');
		const char *val = sp ? sp + 1 : "";
		if (sp)
			*sp = '\0';
		size_t i;
		for (i = 0; i < s->n; i++)
			if (strcasecmp(s->kv[i].key, line) == 0)
				break;
		if (i < s->n) {
			size_t ol = strlen(s->kv[i].val), nl = strlen(val);
			char *j = realloc(s->kv[i].val, ol + nl + 2);
			if (!j)
				return -1;
			j[ol] = '\n';
			memcpy(j + ol + 1, val, nl + 1);
			s->kv[i].val = j;
			continue;
		}
		if (s->n >= MAX_KV)
			return -1;
		s->kv[s->n].key = strdup(line);
		s->kv[s->n].val = strdup(val);
		if (!s->kv[s->n].key || !s->kv[s->n].val)
			return -1;
		s->n++;
	}
	return 0;
}

/* ssh -G [-q] -T ARGS... DEST TAIL...; the baseline adds -F none. */
static int ssh_g(const char *ssh, const px_config *cfg, bool baseline, struct kvset *kv,
		 FILE *err)
{
	const char *argv[2 * PX_MAX_SSH_ARGS + 16];
	size_t n = 0;
	char portopt[32], dest[512];
	char *out = malloc(SSH_G_OUT_CAP);
	if (!out)
		return -1;
	argv[n++] = ssh;
	argv[n++] = "-G";
	argv[n++] = "-T";
	if (baseline) {
		argv[n++] = "-F";
		argv[n++] = "none";
	} else {
		if (cfg->verbosity < 0)
			argv[n++] = "-q";
		for (size_t i = 0; i < cfg->nssh_args; i++)
			argv[n++] = cfg->ssh_args[i];
	}
	/* no "--": ssh reads options after the destination (the tail) only
	 * without it; cli.c refuses a destination that starts with '-' */
	if (!baseline && cfg->dest_port) {
		snprintf(portopt, sizeof(portopt), "Port=%u", cfg->dest_port);
		argv[n++] = "-o";
		argv[n++] = portopt;
	}
	if (!baseline && cfg->dest_user[0]) {
		snprintf(dest, sizeof(dest), "%s@%s", cfg->dest_user, cfg->destination);
		argv[n++] = dest;
	} else {
		argv[n++] = cfg->destination;
	}
	if (!baseline)
		for (size_t i = 0; i < cfg->nssh_tail; i++)
			argv[n++] = cfg->ssh_tail[i];
	argv[n] = NULL;
	int rc = run_capture(argv, out, SSH_G_OUT_CAP, err);
	if (rc != 0) {
		if (rc == 127)
			fprintf(err, "ftpssh: cannot run %s\n", ssh);
		else if (rc > 0 && !baseline) {
			fprintf(err, "ftpssh: OpenSSH refused these ssh settings (its message above):\n ");
			for (size_t i = 0; argv[i]; i++)
				fprintf(err, " %s", argv[i]);
			fprintf(err, "\n");
		}
		free(out);
		return -1;
	}
	rc = kv_parse(kv, out);
	free(out);
	if (rc != 0)
		fprintf(err, "ftpssh: cannot read the output of %s -G\n", ssh);
	return rc;
}

/* ---- the proxy child: ProxyCommand, or ssh -W for ProxyJump ------------------ */

static int push_arg(px_config *c, size_t *n, const char *a, char *why, size_t cap)
{
	if (*n >= PX_MAX_PROXY_ARGS)
		return fail(why, cap, "%s: too many arguments", "ProxyJump");
	return keep_str(&c->proxy_argv[(*n)++], a, why, cap);
}

/* As OpenSSH's ssh.c builds it: the last hop is the host ssh connects to,
 * the hops before it go along as -J, and only -F and -v are passed on:
 *   ssh [-l user] [-p port] [-J hops,...] [-F file] [-v] -W '[%h]:%p' host */
static int build_jump(px_config *c, const char *ssh, char *why, size_t cap)
{
	char spec[1024], hop[1024], target[512], port[1024] = "", user[1024] = "";
	size_t n = 0;
	if (strlen(c->proxy_jump) >= sizeof(spec))
		return fail(why, cap, "ProxyJump %s: too long", c->proxy_jump);
	strcpy(spec, c->proxy_jump);
	char *last = strrchr(spec, ',');
	const char *extra = NULL;
	if (last) {
		*last++ = '\0';
		extra = spec;
	} else {
		last = spec;
	}
	/* [ssh://][user@]host[:port], host possibly [v6] */
	if (strncmp(last, "ssh://", 6) == 0)
		last += 6;
	char *at = strrchr(last, '@');
	if (at) {
		*at = '\0';
		snprintf(user, sizeof(user), "%s", last);
		last = at + 1;
	}
	char *colon = strrchr(last, ':');
	if (last[0] == '[') {
		char *rb = strchr(last, ']');
		if (!rb)
			return fail(why, cap, "ProxyJump %s: bad host", c->proxy_jump);
		*rb = '\0';
		colon = rb[1] == ':' ? rb + 1 : NULL;
		last++;
	} else if (colon && strchr(last, ':') != colon) {
		colon = NULL; /* a bare IPv6 address */
	}
	if (colon) {
		*colon = '\0';
		snprintf(port, sizeof(port), "%s", colon + 1);
	}
	snprintf(hop, sizeof(hop), "%s", last);
	/* never let a host or user name be read as an option of ssh */
	if (!hop[0] || hop[0] == '-' || user[0] == '-' || port[0] == '-')
		return fail(why, cap, "ProxyJump %s: bad host", c->proxy_jump);
	snprintf(target, sizeof(target), "[%s]:%u", c->gateway, c->ssh_port);
	if (push_arg(c, &n, ssh, why, cap) != 0)
		return -1;
	if (user[0] && (push_arg(c, &n, "-l", why, cap) || push_arg(c, &n, user, why, cap)))
		return -1;
	if (port[0] && (push_arg(c, &n, "-p", why, cap) || push_arg(c, &n, port, why, cap)))
		return -1;
	if (extra && (push_arg(c, &n, "-J", why, cap) || push_arg(c, &n, extra, why, cap)))
		return -1;
	if (c->ssh_config &&
	    (push_arg(c, &n, "-F", why, cap) || push_arg(c, &n, c->ssh_config, why, cap)))
		return -1;
	if (c->verbosity >= 2 && push_arg(c, &n, "-v", why, cap))
		return -1;
	if (push_arg(c, &n, "-W", why, cap) || push_arg(c, &n, target, why, cap) ||
	    push_arg(c, &n, hop, why, cap))
		return -1;
	c->proxy_argv[n] = NULL;
	return 0;
}

/* ProxyCommand runs as ssh runs it: $SHELL -c "exec COMMAND". */
static int build_command(px_config *c, char *why, size_t cap)
{
	char cmd[4096];
	size_t n = 0;
	memcpy(cmd, "exec ", 5);
	if (px__ssh_expand(c, c->proxy_command, cmd + 5, sizeof(cmd) - 5, why, cap) != 0)
		return -1;
	const char *shell = getenv("SHELL");
	if (!shell || !*shell)
		shell = "/bin/sh";
	if (push_arg(c, &n, shell, why, cap) || push_arg(c, &n, "-c", why, cap) ||
	    push_arg(c, &n, cmd, why, cap))
		return -1;
	c->proxy_argv[n] = NULL;
	return 0;
}

/* ---- resolve ----------------------------------------------------------------- */

/* Without ssh: the command line's ssh flags through the same table. The
 * config files' lines were applied while they were read; the
 * destination's user and port come next, then the command line (which
 * therefore wins). */
static int resolve_without_ssh(px_config *cfg, FILE *err)
{
	char why[4096]; /* room for the list of what the build supports */
	bool known;
	if (cfg->dest_user[0] && px_sshconfig_set(cfg, "User", cfg->dest_user, &known, why, sizeof(why)) != 0)
		goto fail;
	if (cfg->dest_port)
		cfg->ssh_port = cfg->dest_port;
	if (px_sshconfig_set(cfg, "Hostname", cfg->destination, &known, why, sizeof(why)) != 0)
		goto fail;
	for (size_t i = 0; i < cfg->nssh_args; i++) {
		const char *a = cfg->ssh_args[i];
		const char *v = i + 1 < cfg->nssh_args ? cfg->ssh_args[i + 1] : "";
		int rc = 0;
		if (strcmp(a, "-4") == 0 || strcmp(a, "-6") == 0) {
			cfg->address_family = a[1] == '4' ? AF_INET : AF_INET6;
			continue;
		}
		if (strcmp(a, "-C") == 0) {
			cfg->compression = true;
			continue;
		}
		i++;
		if (strcmp(a, "-p") == 0)
			rc = px_sshconfig_set(cfg, "Port", v, &known, why, sizeof(why));
		else if (strcmp(a, "-l") == 0)
			rc = px_sshconfig_set(cfg, "User", v, &known, why, sizeof(why));
		else if (strcmp(a, "-i") == 0)
			rc = px_sshconfig_set(cfg, "IdentityFile", v, &known, why, sizeof(why));
		else if (strcmp(a, "-c") == 0)
			rc = px_sshconfig_set(cfg, "Ciphers", v, &known, why, sizeof(why));
		else if (strcmp(a, "-m") == 0)
			rc = px_sshconfig_set(cfg, "MACs", v, &known, why, sizeof(why));
		else if (strcmp(a, "-J") == 0)
			rc = px_sshconfig_set(cfg, "ProxyJump", v, &known, why, sizeof(why));
		else if (strcmp(a, "-F") == 0)
			rc = fail(why, sizeof(why), "-F %s: reading an ssh config needs OpenSSH's ssh", v);
		else if (strcmp(a, "-o") == 0) {
			char key[64];
			size_t kl = strcspn(v, "= \t");
			const char *val = v + kl;
			while (*val == '=' || *val == ' ' || *val == '\t')
				val++;
			if (kl == 0 || kl >= sizeof(key)) {
				rc = fail(why, sizeof(why), "-o %s: expected Key=Value", v);
			} else {
				memcpy(key, v, kl);
				key[kl] = '\0';
				rc = px_sshconfig_set(cfg, key, val, &known, why, sizeof(why));
			}
		}
		if (rc != 0)
			goto fail;
	}
	if (px__sshconfig_resolve_algs(cfg, why, sizeof(why)) != 0)
		goto fail;
	return 0;
fail:
	fprintf(err, "ftpssh: %s\n", why);
	return -1;
}

static const char *const first_pass[] = {"Hostname", "Port", "User", "HostKeyAlias",
					 "ProxyJump"};

static bool in_first_pass(const char *name)
{
	for (size_t i = 0; i < sizeof(first_pass) / sizeof(first_pass[0]); i++)
		if (strcasecmp(first_pass[i], name) == 0)
			return true;
	return false;
}

int px_sshconfig_resolve(px_config *cfg, FILE *err)
{
	char ssh[4096], why[4096]; /* why: room for the algorithms the build supports */
	struct kvset *user = calloc(1, sizeof(*user)), *base = calloc(1, sizeof(*base));
	int rc = -1;
	bool have_ssh = find_ssh(ssh, sizeof(ssh));

	if (!user || !base)
		goto out;
	if (!have_ssh) {
		px_log(2, "no OpenSSH ssh %s%s: ~/.ssh/config is not read; the command line "
			  "alone says where to connect",
		       getenv("FTPSSH_SSH") ? "at " : "in PATH",
		       getenv("FTPSSH_SSH") ? getenv("FTPSSH_SSH") : "");
		if (resolve_without_ssh(cfg, err) != 0)
			goto out;
	} else {
		if (ssh_g(ssh, cfg, false, user, err) != 0 || ssh_g(ssh, cfg, true, base, err) != 0)
			goto out;
		/* what ssh -G prints only when set */
		cfg->hostkey_alias = NULL;
		cfg->preferred_auth = NULL;
		cfg->proxy_jump = NULL;
		cfg->proxy_command = NULL;
		cfg->ncertificates = 0;
		/* config files' algorithm lines were kept as written; ssh -G's
		 * values replace them (apply_algs) */
		cfg->ciphers = cfg->macs = cfg->kex = cfg->hostkey_algs = NULL;
		cfg->hostkey_algs_keep_order = false;
		for (int pass = 0; pass < 2; pass++)
			for (size_t i = 0; i < px__sshopt_count(); i++) {
				const char *name = px__sshopt_name(i);
				const char *uv = kv_get(user, name);
				if (!uv || in_first_pass(name) != (pass == 0))
					continue;
				if (px__sshopt_apply(cfg, i, uv, kv_get(base, name), why,
						     sizeof(why)) != 0) {
					fprintf(err, "ftpssh: %s\n", why);
					goto out;
				}
			}
		/* names this ftpssh does not know (a newer ssh): set means warned */
		for (size_t i = 0; i < user->n; i++) {
			const char *bv = kv_get(base, user->kv[i].key);
			if (!px_sshconfig_known(user->kv[i].key) &&
			    (!bv || strcmp(bv, user->kv[i].val) != 0))
				px__ssh_note_unhonoured(user->kv[i].key);
		}
		px_log(2, "ssh -G: %s@%s port %u%s%s", cfg->user, cfg->gateway, cfg->ssh_port,
		       cfg->proxy_jump ? " via ProxyJump " : "",
		       cfg->proxy_jump ? cfg->proxy_jump : "");
	}
	if (px__ssh_unhonoured()[0])
		px_log(1, "warning: ssh options ftpssh does not honour (ignored): %s",
		       px__ssh_unhonoured());
	cfg->proxy_argv[0] = NULL;
	if (cfg->proxy_command) {
		if (build_command(cfg, why, sizeof(why)) != 0)
			goto fail;
	} else if (cfg->proxy_jump) {
		if (!have_ssh) {
			snprintf(why, sizeof(why), "ProxyJump %s needs OpenSSH's ssh, found none",
				 cfg->proxy_jump);
			goto fail;
		}
		if (build_jump(cfg, ssh, why, sizeof(why)) != 0)
			goto fail;
	}
	rc = 0;
	goto out;
fail:
	fprintf(err, "ftpssh: %s\n", why);
out:
	if (user)
		kv_free(user);
	if (base)
		kv_free(base);
	free(user);
	free(base);
	return rc;
}
