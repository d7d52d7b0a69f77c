/* delay_relay: a long link in user space, a TCP relay that delays each
 * direction (the kernel's netem is not available on the test bed).
 *
 *     delay_relay --target-port T --delay-ms MS [--listen-port P]
 *                 [--listen-host 127.0.0.1] [--target-host 127.0.0.1]
 *                 [--max-queue BYTES]
 *
 * Listens on LISTEN-HOST:P (0 = the kernel's choice) and relays every
 * accepted connection to TARGET-HOST:T; every byte reaches the other side
 * MS milliseconds after it arrived, so --delay-ms 25 is a 50 ms round
 * trip. At most --max-queue bytes (default 64 MiB, far above any SSH
 * window in play, so it never limits throughput) wait per direction
 * before the relay stops reading that direction's source. Half-closes are
 * relayed in order. The first line on stdout is "listening on PORT";
 * SIGTERM or SIGINT stops the relay (exit status 0).
 *
 * The model: one process, one thread, one epoll set, nonblocking sockets.
 * This file is the loop (CLI, listener, signals, epoll_pwait with the
 * earliest due time as timeout); delay_link.c owns the connections and
 * the delayed bytes.
 */

#include "delay_link.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#define ACCEPTS_PER_WAKE 64
#define EVENTS_PER_WAIT 256
/* After EMFILE/ENFILE, accepting pauses this long instead of spinning on a
 * listener that stays readable. */
#define ACCEPT_PAUSE_NS (100 * 1000000LL)

struct options {
	const char *listen_host, *target_host;
	long listen_port, target_port, max_queue;
	double delay_ms;
};

static struct {
	int ep;
	int listen_fd;
	bool listening;        /* listen_fd is in the epoll set */
	int64_t accept_resume; /* ns; 0 = accepts not paused */
} g;

static volatile sig_atomic_t stop_requested;

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	link_vlog(fmt, ap);
	va_end(ap);
	exit(2);
}

/* --- the listener ---------------------------------------------------------- */

static void listener_update(int64_t now)
{
	bool want = g.accept_resume == 0 || now >= g.accept_resume;
	if (want == g.listening)
		return;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(g.ep, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, g.listen_fd, &ev) != 0)
		fatal("epoll_ctl(listener): %s", strerror(errno));
	g.listening = want;
	if (want)
		g.accept_resume = 0;
}

static void accept_ready(void)
{
	for (int i = 0; i < ACCEPTS_PER_WAKE; i++) {
		int cfd = accept4(g.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd >= 0) {
			link_accept(cfd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			link_log("accept: %s: pausing accepts for 100 ms", strerror(errno));
			g.accept_resume = link_now() + ACCEPT_PAUSE_NS;
			listener_update(link_now());
		} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
			link_log("accept: %s", strerror(errno));
		}
		return;
	}
}

/* --- setup ------------------------------------------------------------------ */

static void resolve(const char *host, long port, bool passive, struct sockaddr_storage *ss,
		    socklen_t *len)
{
	char service[24];
	snprintf(service, sizeof service, "%ld", port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	if (passive)
		hints.ai_flags = AI_PASSIVE;
	int rc = getaddrinfo(host, service, &hints, &res);
	if (rc != 0)
		fatal("%s port %ld: %s", host, port, gai_strerror(rc));
	if (res->ai_addrlen > sizeof *ss)
		fatal("%s: address too long", host);
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
}

static long parse_num(const char *opt, const char *s, long min, long max)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		fatal("%s: bad value %s", opt, s);
	return v;
}

static void usage(FILE *f)
{
	fputs("usage: delay_relay --target-port T --delay-ms MS [--listen-port P]\n"
	      "                   [--listen-host H] [--target-host H] [--max-queue BYTES]\n"
	      "A TCP relay that delays each direction by MS (one way).\n",
	      f);
}

/* The same options as the Python relay it replaces (argparse accepted
 * "--opt value" and "--opt=value"; so does getopt_long). */
static void options_parse(int argc, char **argv, struct options *o)
{
	enum { O_LHOST = 1, O_LPORT, O_THOST, O_TPORT, O_DELAY, O_MAXQ, O_HELP };
	static const struct option opts[] = {
		{"listen-host", required_argument, NULL, O_LHOST},
		{"listen-port", required_argument, NULL, O_LPORT},
		{"target-host", required_argument, NULL, O_THOST},
		{"target-port", required_argument, NULL, O_TPORT},
		{"delay-ms", required_argument, NULL, O_DELAY},
		{"max-queue", required_argument, NULL, O_MAXQ},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	*o = (struct options){.listen_host = "127.0.0.1", .target_host = "127.0.0.1",
			      .target_port = -1, .max_queue = 64L << 20, .delay_ms = -1};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_LHOST: o->listen_host = optarg; break;
		case O_LPORT: o->listen_port = parse_num("--listen-port", optarg, 0, 65535); break;
		case O_THOST: o->target_host = optarg; break;
		case O_TPORT: o->target_port = parse_num("--target-port", optarg, 1, 65535); break;
		case O_DELAY: {
			char *end;
			o->delay_ms = strtod(optarg, &end);
			if (end == optarg || *end || !isfinite(o->delay_ms) || o->delay_ms < 0 ||
			    o->delay_ms > 3600e3)
				fatal("--delay-ms: bad value %s", optarg);
			break;
		}
		case O_MAXQ: o->max_queue = parse_num("--max-queue", optarg, 1, LONG_MAX); break;
		case 'h':
		case O_HELP: usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind != argc || o->target_port < 0 || o->delay_ms < 0) {
		usage(stderr);
		exit(2);
	}
}

/* Returns the port the kernel gave (--listen-port 0) or the one asked. */
static int listener_open(const struct options *o)
{
	struct sockaddr_storage la;
	socklen_t lalen;
	resolve(o->listen_host, o->listen_port, true, &la, &lalen);
	g.listen_fd = socket(la.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (g.listen_fd < 0)
		fatal("socket: %s", strerror(errno));
	int one = 1;
	(void)setsockopt(g.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(g.listen_fd, (struct sockaddr *)&la, lalen) != 0)
		fatal("bind %s port %ld: %s", o->listen_host, o->listen_port, strerror(errno));
	/* Bench row 8 connects 500 clients at once: none may wait for a
	 * slot in the backlog (the kernel caps it at somaxconn). */
	if (listen(g.listen_fd, 4096) != 0)
		fatal("listen: %s", strerror(errno));
	lalen = sizeof la;
	if (getsockname(g.listen_fd, (struct sockaddr *)&la, &lalen) != 0)
		fatal("getsockname: %s", strerror(errno));
	return la.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&la)->sin6_port)
					: ntohs(((struct sockaddr_in *)&la)->sin_port);
}

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* SIGTERM/SIGINT stay blocked except inside epoll_pwait, so a stop request
 * cannot slip in between the check of the flag and the wait. Returns the
 * mask for the wait. */
static sigset_t signals_setup(void)
{
	signal(SIGPIPE, SIG_IGN); /* writes use MSG_NOSIGNAL; this is a net */
	struct sigaction sa = {.sa_handler = on_stop};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigset_t block, waitmask;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &waitmask);
	sigdelset(&waitmask, SIGTERM);
	sigdelset(&waitmask, SIGINT);
	return waitmask;
}

static int wait_timeout(int64_t now)
{
	int64_t next = link_next_due();
	if (g.accept_resume && (next < 0 || g.accept_resume < next))
		next = g.accept_resume;
	if (next < 0)
		return -1;
	/* Rounded up: waking before the due time would only spin. */
	int64_t ms = next > now ? (next - now + 999999) / 1000000 : 0;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

int main(int argc, char **argv)
{
	struct options o;
	options_parse(argc, argv, &o);

	/* Two fds per relayed connection: raise the soft limit to the hard
	 * one for the many connections of bench row 8. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			link_log("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
	}

	static char target_name[300];
	snprintf(target_name, sizeof target_name, "%s:%ld", o.target_host, o.target_port);
	struct link_config lc = {
		.delay_ns = (int64_t)llround(o.delay_ms * 1e6),
		.max_queue = (size_t)o.max_queue,
		.target_name = target_name,
	};
	resolve(o.target_host, o.target_port, false, &lc.target, &lc.target_len);
	int port = listener_open(&o);
	g.ep = epoll_create1(EPOLL_CLOEXEC);
	if (g.ep < 0)
		fatal("epoll_create1: %s", strerror(errno));
	lc.ep = g.ep;
	link_init(&lc);
	listener_update(link_now());
	sigset_t waitmask = signals_setup();

	printf("listening on %d\n", port);
	fflush(stdout);

	struct epoll_event evs[EVENTS_PER_WAIT];
	while (!stop_requested) {
		int n = epoll_pwait(g.ep, evs, EVENTS_PER_WAIT, wait_timeout(link_now()), &waitmask);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fatal("epoll_pwait: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL)
				accept_ready();
			else
				link_event(evs[i].data.ptr, evs[i].events);
		}
		int64_t now = link_now();
		link_run_timers(now);
		if (g.accept_resume)
			listener_update(now);
		link_reap();
	}
	link_shutdown();
	close(g.listen_fd);
	close(g.ep);
	return 0;
}
