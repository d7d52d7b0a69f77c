/* delay_link: the relayed connections of delay_relay, and their delay.
 *
 * The contract between the relay's main loop (delay_relay.c: CLI,
 * listener, signals, epoll_pwait) and the connections it accepts. The
 * loop owns the epoll set and the listening socket; this module owns
 * every accepted socket, the socket it opens to the target, and the
 * delayed bytes between them. Each epoll event the loop did not make
 * itself (data.ptr != NULL) belongs to this module.
 */
#ifndef DELAY_LINK_H
#define DELAY_LINK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Everything the links share; set once, before the first accept. */
struct link_config {
	int ep;                     /* the loop's epoll set */
	int64_t delay_ns;           /* one-way delay */
	size_t max_queue;           /* bytes per direction before reading stops */
	struct sockaddr_storage target;
	socklen_t target_len;
	const char *target_name;    /* "host:port", for messages */
};

void link_init(const struct link_config *cfg);
/* Takes ownership of an accepted nonblocking socket: connects to the
 * target and relays. Failures are logged and close cfd. */
void link_accept(int cfd);
/* An epoll event whose data.ptr is one of this module's. */
void link_event(void *ptr, uint32_t events);
/* The earliest due time of any delayed byte, EOF or reset (ns,
 * CLOCK_MONOTONIC), or -1 when nothing waits for time. */
int64_t link_next_due(void);
/* Deliver whatever is due at `now`. */
void link_run_timers(int64_t now);
/* Free the connections closed since the last call: after a batch of
 * events, none of which can name them any more. */
void link_reap(void);
/* Close every connection and free everything (the relay is stopping). */
void link_shutdown(void);

int64_t link_now(void);
/* One line on stderr, "delay_relay: " first. */
void link_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void link_vlog(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

#endif
