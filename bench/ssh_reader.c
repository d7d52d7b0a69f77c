/*
 * ssh_reader: libssh2's own ceiling for one direct-tcpip channel.
 *
 * The model: a parent that is nothing but a libssh2 client, and a forked
 * child that is nothing but a byte source. The child listens on a loopback
 * port and writes N bytes to whoever connects (sshd, on our behalf); the
 * parent logs in to sshd with a key, opens one direct-tcpip channel to that
 * port and reads until EOF with non-blocking libssh2 and poll(), exactly
 * the way an event loop would, then prints wall time, throughput and its
 * own CPU time (getrusage(RUSAGE_SELF) excludes the child).
 *
 * Handshake, authentication and the channel open run in blocking mode:
 * they are not what is measured. The host key is not checked: this is a
 * benchmark helper for a loopback test bed, never a client for real hosts.
 *
 * -w sets the channel's initial receive window. libssh2 tops the window up
 * to that figure after every read, so -w 2097152 is libssh2's default and
 * -w 35651584 is "the window kept 32 MiB larger" of issue #6.
 *
 * Output, one line on stdout (bytes/s in 10^6 units):
 *   bytes=N seconds=S mbps=M cpu_user=U cpu_sys=S cpu_per_gib=C
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libssh2.h>

#define READ_BUF_MAX (1024 * 1024)
#define SOURCE_CHUNK (1024 * 1024)

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "ssh_reader: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void die_ssh(LIBSSH2_SESSION *s, const char *what)
{
	char *msg = NULL;
	libssh2_session_last_error(s, &msg, NULL, 0);
	fprintf(stderr, "ssh_reader: %s: %s\n", what, msg ? msg : "?");
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_sec(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* The byte source: accept one connection, write `total` bytes, close. A
 * timeout (alarm) bounds it if nobody ever connects or reads. */
static void source_run(int lfd, uint64_t total, unsigned timeout_s)
{
	static char buf[SOURCE_CHUNK];
	alarm(timeout_s);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 2654435761u >> 13);
	int fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		_exit(2);
	close(lfd);
	while (total > 0) {
		size_t n = total < sizeof(buf) ? (size_t)total : sizeof(buf);
		ssize_t w = write(fd, buf, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			_exit(3);
		}
		total -= (uint64_t)w;
	}
	close(fd);
	_exit(0);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: ssh_reader -p SSHPORT -u USER -i KEY -n BYTES [-H SSHHOST] [-w WINDOW]\n"
		"                  [-b READ_BYTES] [-c CIPHER] [-m MAC] [-t TIMEOUT_S]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *user = NULL, *key = NULL;
	const char *cipher = "aes128-ctr", *mac = "hmac-sha2-256";
	unsigned port = 0, timeout_s = 300;
	unsigned long window = LIBSSH2_CHANNEL_WINDOW_DEFAULT;
	size_t bufsize = 64 * 1024;
	uint64_t total = 0;
	int opt;

	while ((opt = getopt(argc, argv, "H:p:u:i:n:w:b:c:m:t:")) != -1) {
		switch (opt) {
		case 'H': host = optarg; break;
		case 'p': port = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'u': user = optarg; break;
		case 'i': key = optarg; break;
		case 'n': total = strtoull(optarg, NULL, 10); break;
		case 'w': window = strtoul(optarg, NULL, 10); break;
		case 'b': bufsize = strtoul(optarg, NULL, 10); break;
		case 'c': cipher = optarg; break;
		case 'm': mac = optarg; break;
		case 't': timeout_s = (unsigned)strtoul(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (!port || !user || !key || !total || window < 32768 || !bufsize ||
	    bufsize > READ_BUF_MAX)
		usage();

	/* The byte source, in a child so that its CPU is not ours. */
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
		die("byte source: %s", strerror(errno));
	unsigned src_port = ntohs(sa.sin_port);
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0)
		source_run(lfd, total, timeout_s);
	close(lfd);

	/* The SSH connection. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in ssa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (fd < 0 || inet_pton(AF_INET, host, &ssa.sin_addr) != 1)
		die("bad ssh host %s", host);
	if (connect(fd, (struct sockaddr *)&ssa, sizeof(ssa)) < 0)
		die("connect: %s", strerror(errno));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	if (libssh2_init(0) != 0)
		die("libssh2_init failed");
	LIBSSH2_SESSION *s = libssh2_session_init();
	if (!s)
		die("libssh2_session_init failed");
	libssh2_session_method_pref(s, LIBSSH2_METHOD_CRYPT_CS, cipher);
	libssh2_session_method_pref(s, LIBSSH2_METHOD_CRYPT_SC, cipher);
	libssh2_session_method_pref(s, LIBSSH2_METHOD_MAC_CS, mac);
	libssh2_session_method_pref(s, LIBSSH2_METHOD_MAC_SC, mac);
	libssh2_session_set_blocking(s, 1);
	libssh2_session_set_timeout(s, (long)timeout_s * 1000);
	if (libssh2_session_handshake(s, fd) != 0)
		die_ssh(s, "handshake");
	char pub[4096];
	snprintf(pub, sizeof(pub), "%s.pub", key);
	if (libssh2_userauth_publickey_fromfile(s, user, pub, key, "") != 0)
		die_ssh(s, "publickey auth");
	LIBSSH2_CHANNEL *ch = NULL;
	{
		/* libssh2_channel_direct_tcpip_ex has no window argument: build
		 * the direct-tcpip request ourselves, as ftpssh does. */
		char msg[64];
		unsigned char *p = (unsigned char *)msg;
		const char *th = "127.0.0.1";
		uint32_t l = (uint32_t)strlen(th);
#define PUT32(v)                                                                          \
	do {                                                                              \
		uint32_t v_ = (v);                                                        \
		*p++ = (unsigned char)(v_ >> 24), *p++ = (unsigned char)(v_ >> 16);       \
		*p++ = (unsigned char)(v_ >> 8), *p++ = (unsigned char)v_;                \
	} while (0)
		PUT32(l);
		memcpy(p, th, l), p += l;
		PUT32(src_port);
		PUT32(l);
		memcpy(p, th, l), p += l;
		PUT32(0);
		ch = libssh2_channel_open_ex(s, "direct-tcpip", sizeof("direct-tcpip") - 1,
					     (unsigned)window, LIBSSH2_CHANNEL_PACKET_DEFAULT, msg,
					     (unsigned)((char *)p - msg));
	}
	if (!ch)
		die_ssh(s, "direct-tcpip open");

	/* The measured part: non-blocking reads driven by poll(). */
	libssh2_session_set_blocking(s, 0);
	static char buf[READ_BUF_MAX];
	uint64_t got = 0;
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	double t0 = now(), deadline = t0 + timeout_s;
	for (;;) {
		ssize_t n = libssh2_channel_read(ch, buf, bufsize);
		if (n > 0) {
			got += (uint64_t)n;
			continue;
		}
		if (n == 0 && libssh2_channel_eof(ch))
			break;
		/* 0 without EOF: libssh2 moved other traffic; wait like EAGAIN. */
		if (n < 0 && n != LIBSSH2_ERROR_EAGAIN)
			die_ssh(s, "channel read");
		if (now() > deadline)
			die("timed out");
		int dirs = libssh2_session_block_directions(s);
		struct pollfd pfd = {.fd = fd, .events = 0};
		if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND)
			pfd.events |= POLLIN;
		if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
			pfd.events |= POLLOUT;
		if (!pfd.events)
			pfd.events = POLLIN;
		if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
	}
	double t1 = now();
	getrusage(RUSAGE_SELF, &r1);

	double user_s = tv_sec(r1.ru_utime) - tv_sec(r0.ru_utime);
	double sys_s = tv_sec(r1.ru_stime) - tv_sec(r0.ru_stime);
	double secs = t1 - t0;
	int status = 0;
	waitpid(child, &status, 0);
	libssh2_session_set_blocking(s, 1);
	libssh2_channel_free(ch);
	libssh2_session_disconnect(s, "done");
	libssh2_session_free(s);
	close(fd);
	libssh2_exit();
	if (got != total) {
		fprintf(stderr, "ssh_reader: read %llu of %llu bytes\n", (unsigned long long)got,
			(unsigned long long)total);
		return 1;
	}
	printf("bytes=%llu seconds=%.4f mbps=%.1f cpu_user=%.3f cpu_sys=%.3f cpu_per_gib=%.3f\n",
	       (unsigned long long)got, secs, (double)got / secs / 1e6, user_s, sys_s,
	       (user_s + sys_s) * (double)(1u << 30) / (double)got);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
