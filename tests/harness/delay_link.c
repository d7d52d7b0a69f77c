/* delay_link: relayed connections that deliver every byte DELAY later.
 *
 * A pair owns its two sides (client, server) and two directions (up:
 * client -> server, down: server -> client). A direction owns a FIFO of
 * chunks, each stamped with its arrival time (CLOCK_MONOTONIC) plus the
 * delay; it writes the chunks whose due time has passed, in order, and
 * when the destination says EAGAIN it waits for EPOLLOUT. The relay reads
 * eagerly, so the kernel's socket buffers add no delay of their own: what
 * is in flight lives in these queues. The directions that wait for a due
 * time sit in one list sorted by that time; its head sets the loop's
 * epoll timeout.
 *
 * Memory is bounded: while a direction holds more than max_queue bytes
 * not yet taken by the kernel, its source is not read (EPOLLIN dropped);
 * reading resumes below half of that.
 *
 * Endings travel in order, like data: an EOF read from a source becomes
 * shutdown(SHUT_WR) on the destination after the last delayed byte. A
 * reset or error on a socket ends that socket at once; what its peer sent
 * before (and a FIN it sent before) is still delivered, and then the other
 * socket is aborted (SO_LINGER 0: its peer sees a reset, as it would
 * through a real link).
 * When both directions are finished the pair closes both sockets (a
 * clean end closes them normally); pair_close is the one close path.
 */

#include "delay_link.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/* A read takes at most this much: large enough that a fast loopback
 * source needs few syscalls, small enough that the bound overshoots by
 * little. */
#define CHUNK_CAP (256u * 1024u)
/* Reads shorter than this are copied into a right-sized chunk, so that
 * many small reads (an echo, a greeting) do not pin 256 KiB each. */
#define CHUNK_COPY_BELOW (CHUNK_CAP / 2u)
/* Per wake-up caps, so that one busy connection cannot starve the others. */
#define READS_PER_WAKE 8
#define IOV_PER_WRITE 64
/* Reads of a failing socket's last bytes: 16 MiB, above any kernel
 * receive buffer here. */
#define SALVAGE_READS 64

struct chunk {
	struct chunk *next;
	int64_t due; /* ns, CLOCK_MONOTONIC: arrival + delay */
	size_t len;  /* bytes in data[] */
	size_t off;  /* bytes of data[] already taken by the kernel */
	unsigned char data[];
};

enum dir_state {
	DIR_OPEN, /* reading the source */
	DIR_EOF,  /* source said EOF; shutdown(dst) due at end_due, after the data */
	DIR_RST,  /* source failed; abort the pair at end_due, after the data */
	DIR_DONE, /* finished: EOF relayed, or nothing more can be delivered */
};

struct side;
struct pair;

struct dir {
	struct pair *pair;
	struct side *src, *dst;
	struct chunk *head, *tail;
	size_t queued; /* bytes in the FIFO not yet taken by the kernel */
	enum dir_state state;
	int64_t end_due; /* when the EOF/reset is due (DIR_EOF, DIR_RST) */
	bool paused;     /* reading src stopped by the queue bound */
	bool blocked;    /* dst said EAGAIN: waiting for EPOLLOUT */
	/* the sorted list of directions waiting for a due time */
	bool timed;
	int64_t tdue;
	struct dir *tprev, *tnext;
};

struct side {
	struct pair *pair;
	int fd;
	uint32_t events; /* what epoll watches now (0: not registered) */
	bool connecting; /* server side, nonblocking connect in progress */
	bool dead;       /* reset or error: no more reads or writes */
	struct dir *out; /* data read here goes there */
	struct dir *in;  /* that direction writes here */
};

struct pair {
	struct side client, server;
	struct dir up, down;
	bool reset; /* end with an abort, not a clean close */
	bool closed;
	struct pair *prev, *next; /* the live pairs, for link_shutdown */
	struct pair *next_dead;   /* freed after the current batch of events */
};
static struct link_config cfg;
static struct {
	size_t high, low; /* the queue bound and where reading resumes */
	struct dir *timers_head, *timers_tail;
	struct pair *live;   /* open pairs */
	struct pair *dead;   /* closed pairs, freed by link_reap */
	struct chunk *spare; /* one CHUNK_CAP buffer kept for the next read */
} g;

void link_vlog(const char *fmt, va_list ap)
{
	fputs("delay_relay: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void link_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	link_vlog(fmt, ap);
	va_end(ap);
}

int64_t link_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void link_init(const struct link_config *c)
{
	cfg = *c;
	g.high = cfg.max_queue;
	g.low = cfg.max_queue / 2;
}

/* --- the due-time list ---------------------------------------------------
 * Sorted by tdue. Every stamp is arrival + the same delay, so a new entry
 * nearly always belongs at the tail: insertion scans from there. */

static void timer_remove(struct dir *d)
{
	if (!d->timed)
		return;
	if (d->tprev)
		d->tprev->tnext = d->tnext;
	else
		g.timers_head = d->tnext;
	if (d->tnext)
		d->tnext->tprev = d->tprev;
	else
		g.timers_tail = d->tprev;
	d->tprev = d->tnext = NULL;
	d->timed = false;
}

static void timer_set(struct dir *d, int64_t due)
{
	if (d->timed && d->tdue == due)
		return;
	timer_remove(d);
	struct dir *after = g.timers_tail;
	while (after && after->tdue > due)
		after = after->tprev;
	d->tdue = due;
	d->tprev = after;
	d->tnext = after ? after->tnext : g.timers_head;
	if (d->tnext)
		d->tnext->tprev = d;
	else
		g.timers_tail = d;
	if (after)
		after->tnext = d;
	else
		g.timers_head = d;
	d->timed = true;
}

/* A direction waits for time when it has something to deliver, may write
 * now, and is not waiting for EPOLLOUT instead. */
static void dir_schedule(struct dir *d)
{
	bool waits = d->state != DIR_DONE && !d->blocked && !d->dst->connecting &&
		     (d->head || d->state == DIR_EOF || d->state == DIR_RST);
	if (!waits)
		timer_remove(d);
	else
		timer_set(d, d->head ? d->head->due : d->end_due);
}

/* --- epoll interest ------------------------------------------------------ */

static uint32_t side_want(const struct side *s)
{
	if (s->dead || s->fd < 0)
		return 0;
	if (s->connecting)
		return EPOLLOUT;
	uint32_t ev = 0;
	if (s->out->state == DIR_OPEN && !s->out->paused)
		ev |= EPOLLIN;
	if (s->in->blocked)
		ev |= EPOLLOUT;
	return ev;
}

static void side_fail(struct side *s);
static ssize_t side_take(struct side *s);

/* A socket that wants nothing is taken out of the set: level-triggered
 * EPOLLHUP is reported whatever the mask, and would spin the loop while a
 * finished side waits for its pair's other direction. */
static void side_update(struct side *s)
{
	uint32_t want = side_want(s);
	if (want == s->events)
		return;
	struct epoll_event ev = {.events = want, .data.ptr = s};
	int op = want == 0 ? EPOLL_CTL_DEL : s->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(cfg.ep, op, s->fd, &ev) != 0) {
		/* ADD/MOD out of kernel memory: leave the set for sure, and
		 * end this socket rather than leave it half-watched. A failed
		 * DEL left nothing registered. */
		s->events = 0;
		if (op != EPOLL_CTL_DEL) {
			(void)epoll_ctl(cfg.ep, EPOLL_CTL_DEL, s->fd, NULL);
			if (!s->dead)
				side_fail(s);
		}
		return;
	}
	s->events = want;
}

/* --- pairs --------------------------------------------------------------- */

static void chunks_free(struct dir *d)
{
	struct chunk *c = d->head;
	while (c) {
		struct chunk *n = c->next;
		free(c);
		c = n;
	}
	d->head = d->tail = NULL;
	d->queued = 0;
}

/* The one close of a pair, idempotent. Memory is freed after the current
 * batch of events, which may still name this pair's sides. */
static void pair_close(struct pair *p)
{
	if (p->closed)
		return;
	p->closed = true;
	struct side *sides[2] = {&p->client, &p->server};
	for (int i = 0; i < 2; i++) {
		struct side *s = sides[i];
		if (s->fd < 0)
			continue;
		if (p->reset && !s->dead) {
			/* The peer must see a reset, as the far end's reset would
			 * have reached it over a real link. */
			struct linger lg = {.l_onoff = 1, .l_linger = 0};
			(void)setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		}
		close(s->fd); /* also leaves the epoll set */
		s->fd = -1;
		s->events = 0;
	}
	struct dir *dirs[2] = {&p->up, &p->down};
	for (int i = 0; i < 2; i++) {
		timer_remove(dirs[i]);
		chunks_free(dirs[i]);
	}
	if (p->prev)
		p->prev->next = p->next;
	else
		g.live = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->next_dead = g.dead;
	g.dead = p;
}

static void pair_check_end(struct pair *p)
{
	if (!p->closed && p->up.state == DIR_DONE && p->down.state == DIR_DONE) {
		if (p->client.dead || p->server.dead)
			p->reset = true;
		pair_close(p);
	}
}

/* A socket reset or failed: it neither reads nor writes again. What the
 * pair still holds towards it is dropped; what it sent before is still
 * delivered to the other side, and then that side is aborted. A socket
 * that sent its FIN before it failed (a peer that closed, then reset when
 * late data reached it) ended cleanly first: the FIN is relayed after the
 * data, and the abort comes after that, as over a real link. */
static void side_fail(struct side *s)
{
	struct pair *p = s->pair;
	if (s->dead || p->closed)
		return;
	/* What the peer sent before it failed is still in the socket's
	 * receive queue (a write that met its reset can come before the read
	 * of its last bytes and FIN): over a real link those bytes were
	 * already on their way, so they are taken and delivered. Bounded by
	 * the kernel's receive buffer, and by SALVAGE_READS. */
	for (int i = 0; i < SALVAGE_READS && s->out->state == DIR_OPEN && !s->connecting; i++) {
		ssize_t n = side_take(s);
		if (n < 0 && n != -EINTR)
			break;
	}
	s->dead = true;
	if (s->events) {
		(void)epoll_ctl(cfg.ep, EPOLL_CTL_DEL, s->fd, NULL);
		s->events = 0;
	}
	struct dir *in = s->in, *out = s->out;
	chunks_free(in);
	in->state = DIR_DONE;
	in->blocked = false;
	in->paused = false;
	dir_schedule(in);
	if (out->state == DIR_OPEN) {
		out->state = DIR_RST;
		out->end_due = link_now() + cfg.delay_ns;
		out->paused = false;
	}
	dir_schedule(out);
	side_update(out->dst);
	pair_check_end(p);
}

/* --- moving bytes -------------------------------------------------------- */

/* Write every chunk that is due, in order; then relay a due EOF or reset. */
static void dir_pump(struct dir *d, int64_t now)
{
	struct pair *p = d->pair;
	if (p->closed || d->state == DIR_DONE)
		return;
	if (!d->dst->connecting) {
		while (!d->blocked && d->head && d->head->due <= now) {
			struct iovec iov[IOV_PER_WRITE];
			int n = 0;
			for (struct chunk *c = d->head; c && c->due <= now && n < IOV_PER_WRITE; c = c->next) {
				iov[n].iov_base = c->data + c->off;
				iov[n].iov_len = c->len - c->off;
				n++;
			}
			struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
			size_t asked = 0;
			for (int i = 0; i < n; i++)
				asked += iov[i].iov_len;
			ssize_t w = sendmsg(d->dst->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					d->blocked = true;
					break;
				}
				side_fail(d->dst);
				return;
			}
			size_t left = (size_t)w;
			d->queued -= left;
			while (left > 0) {
				struct chunk *c = d->head;
				size_t rest = c->len - c->off;
				if (left < rest) {
					c->off += left;
					break;
				}
				left -= rest;
				d->head = c->next;
				if (!d->head)
					d->tail = NULL;
				free(c);
			}
			/* A short write means the kernel's buffer is full: wait for
			 * EPOLLOUT rather than pay for an EAGAIN. */
			if ((size_t)w < asked)
				d->blocked = true;
		}
		if (!d->head && (d->state == DIR_EOF || d->state == DIR_RST) && d->end_due <= now) {
			if (d->state == DIR_EOF) {
				if (shutdown(d->dst->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
					side_fail(d->dst);
					return;
				}
			} else {
				p->reset = true;
			}
			d->state = DIR_DONE;
		}
	}
	if (d->paused && d->queued < g.low)
		d->paused = false;
	dir_schedule(d);
	side_update(d->src);
	side_update(d->dst);
	pair_check_end(p);
}

static struct chunk *chunk_big(void)
{
	struct chunk *c = g.spare;
	if (c) {
		g.spare = NULL;
		return c;
	}
	return malloc(sizeof *c + CHUNK_CAP);
}

/* One read from s, stamped and queued on its direction. Returns the bytes
 * read, 0 at EOF (the direction is then DIR_EOF), or -errno. */
static ssize_t side_take(struct side *s)
{
	struct dir *d = s->out;
	struct chunk *c = chunk_big();
	if (!c)
		return -ENOMEM;
	ssize_t n = recv(s->fd, c->data, CHUNK_CAP, MSG_DONTWAIT);
	int err = errno;
	int64_t now = link_now();
	if (n <= 0) {
		g.spare = c;
		if (n < 0)
			return -err;
		d->state = DIR_EOF;
		d->end_due = now + cfg.delay_ns;
		return 0;
	}
	if ((size_t)n < CHUNK_COPY_BELOW) {
		struct chunk *small = malloc(sizeof *small + (size_t)n);
		g.spare = c;
		if (!small)
			return -ENOMEM; /* those bytes are lost: the pair ends */
		memcpy(small->data, c->data, (size_t)n);
		c = small;
	} else if ((size_t)n < CHUNK_CAP) {
		/* Give the unused tail back (in place, no copy), so that the
		 * queue bound is a bound on memory too. */
		struct chunk *fit = realloc(c, sizeof *c + (size_t)n);
		if (fit)
			c = fit;
	}
	c->next = NULL;
	c->due = now + cfg.delay_ns;
	c->len = (size_t)n;
	c->off = 0;
	if (d->tail)
		d->tail->next = c;
	else
		d->head = c;
	d->tail = c;
	d->queued += (size_t)n;
	if (d->queued > g.high)
		d->paused = true;
	return n;
}

/* Read what the source has (a few reads at most). */
static void side_read(struct side *s)
{
	struct dir *d = s->out;
	for (int i = 0; i < READS_PER_WAKE && d->state == DIR_OPEN && !d->paused; i++) {
		ssize_t n = side_take(s);
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN || n == -EWOULDBLOCK)
			break;
		if (n < 0) {
			if (n == -ENOMEM)
				link_log("out of memory for a chunk: ending a connection");
			side_fail(s);
			return;
		}
	}
	dir_schedule(d);
	side_update(s);
}

/* --- connections ----------------------------------------------------------- */

static void side_init(struct side *s, struct pair *p, int fd, struct dir *out, struct dir *in)
{
	s->pair = p;
	s->fd = fd;
	s->out = out;
	s->in = in;
}

static void dir_init(struct dir *d, struct pair *p, struct side *src, struct side *dst)
{
	d->pair = p;
	d->src = src;
	d->dst = dst;
	d->state = DIR_OPEN;
}

static void set_nodelay(int fd)
{
	int one = 1;
	/* Small writes (an echo, a keepalive) must leave at once: the delay
	 * is the relay's job, not Nagle's. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void server_connected(struct side *s)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	struct pair *p = s->pair;
	if (err != 0) {
		link_log("cannot reach %s: %s", cfg.target_name, strerror(err));
		/* The client's connection simply closes: its peer sees EOF (a
		 * reset if it had sent data), as a refused link would show. */
		pair_close(p);
		return;
	}
	s->connecting = false;
	side_update(s);
	dir_pump(s->in, link_now());
	if (!p->closed)
		side_update(&p->client);
}

void link_accept(int cfd)
{
	struct pair *p = calloc(1, sizeof *p);
	if (!p) {
		link_log("out of memory for a connection");
		close(cfd);
		return;
	}
	int sfd = socket(cfg.target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (sfd < 0) {
		link_log("socket: %s", strerror(errno));
		close(cfd);
		free(p);
		return;
	}
	p->next = g.live;
	if (g.live)
		g.live->prev = p;
	g.live = p;
	side_init(&p->client, p, cfd, &p->up, &p->down);
	side_init(&p->server, p, sfd, &p->down, &p->up);
	dir_init(&p->up, p, &p->client, &p->server);
	dir_init(&p->down, p, &p->server, &p->client);
	set_nodelay(cfd);
	set_nodelay(sfd);
	p->server.connecting = true;
	if (connect(sfd, (struct sockaddr *)&cfg.target, cfg.target_len) != 0 && errno != EINPROGRESS) {
		link_log("cannot reach %s: %s", cfg.target_name, strerror(errno));
		pair_close(p);
		return;
	}
	/* The client is read from now on (its data waits, stamped, for the
	 * connect); the server once the connect has finished. */
	side_update(&p->server);
	if (!p->closed)
		side_update(&p->client);
}

static void side_event(struct side *s, uint32_t ev)
{
	struct pair *p = s->pair;
	if (p->closed || s->dead)
		return;
	if (s->connecting) {
		server_connected(s);
		return;
	}
	if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && s->in->blocked) {
		s->in->blocked = false;
		dir_pump(s->in, link_now());
	}
	if (p->closed || s->dead)
		return;
	if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (s->events & EPOLLIN))
		side_read(s);
}

void link_event(void *ptr, uint32_t events)
{
	side_event(ptr, events);
}

int64_t link_next_due(void)
{
	return g.timers_head ? g.timers_head->tdue : -1;
}

void link_run_timers(int64_t now)
{
	/* A pumped direction is due later, blocked or finished afterwards,
	 * so this ends. */
	while (g.timers_head && g.timers_head->tdue <= now) {
		struct dir *d = g.timers_head;
		timer_remove(d);
		dir_pump(d, now);
	}
}

void link_reap(void)
{
	while (g.dead) {
		struct pair *p = g.dead;
		g.dead = p->next_dead;
		free(p);
	}
}

void link_shutdown(void)
{
	/* Normal closes, as an exiting process's would be: a stopped link
	 * loses what it held. */
	while (g.live)
		pair_close(g.live);
	link_reap();
	free(g.spare);
	g.spare = NULL;
}
