/*
 * Which local user owns a loopback TCP socket.
 *
 * Any local process may race to connect to a data port ftpssh announced;
 * on a shared workstation that would hand one user's download to another.
 * The kernel knows who owns the connecting socket: ask it with one exact
 * sock_diag (NETLINK_INET_DIAG) lookup of that socket's 4-tuple, and fall
 * back to /proc/net/tcp{,6} where netlink is not allowed. The same lookup
 * with a zero remote end finds the socket listening on an address, which
 * is how an active-mode target's owner is checked.
 *
 * The netlink socket is opened once, when the server starts, and reused:
 * a lookup made under fd pressure must not need a new descriptor, since a
 * check that cannot be made is a refusal. Its owner is the px_server,
 * which closes it (px_peeruid_close) when it is freed.
 */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/internal.h"

#define DIAG_MAX_STALE 8 /* replies of earlier timed-out requests skipped */

static uint32_t diag_seq;

static uint16_t sa_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
					       : ((const struct sockaddr_in *)ss)->sin_port);
}

static void sa_addr(const struct sockaddr_storage *ss, __be32 out[4])
{
	memset(out, 0, 16);
	if (ss->ss_family == AF_INET6)
		memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	else if (ss->ss_family == AF_INET)
		memcpy(out, &((const struct sockaddr_in *)ss)->sin_addr, 4);
}

int px_peeruid_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	struct timeval tv = {.tv_sec = 1};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

void px_peeruid_close(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* One exact lookup. remote NULL: the listening socket on local. */
static int diag_lookup(int fd, const struct sockaddr_storage *local,
		       const struct sockaddr_storage *remote, uid_t *uid)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req;
	union {
		struct nlmsghdr nlh;
		char buf[8192];
	} resp;
	int rc = -ENOENT;

	if (fd < 0)
		return -EBADF;
	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nlh.nlmsg_flags = NLM_F_REQUEST;
	req.nlh.nlmsg_seq = ++diag_seq;
	req.r.sdiag_family = (uint8_t)local->ss_family;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = remote ? ~0u : 1u << TCP_LISTEN;
	req.r.id.idiag_sport = htons(sa_port(local));
	sa_addr(local, req.r.id.idiag_src);
	if (remote) {
		req.r.id.idiag_dport = htons(sa_port(remote));
		sa_addr(remote, req.r.id.idiag_dst);
	}
	req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

	struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
	if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&nl, sizeof(nl)) < 0)
		return -errno;
	for (int tries = 0; tries < DIAG_MAX_STALE; tries++) {
		ssize_t n = recv(fd, &resp, sizeof(resp), 0);
		if (n < 0)
			return -errno;
		if (n < (ssize_t)sizeof(struct nlmsghdr) || resp.nlh.nlmsg_seq != diag_seq)
			continue; /* the late answer to an earlier request */
		for (struct nlmsghdr *h = &resp.nlh; NLMSG_OK(h, (unsigned)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				return e->error ? e->error : -ENOENT;
			}
			if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY &&
			    h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
				const struct inet_diag_msg *m = NLMSG_DATA(h);
				if (!remote && m->idiag_state != TCP_LISTEN)
					return -ENOENT;
				*uid = m->idiag_uid;
				return 0;
			}
		}
		return rc;
	}
	return -EAGAIN;
}

/* /proc/net/tcp: "sl local rem st tx:rx tr:when retr uid ..." with
 * addresses as hex in host byte order words. remote NULL: a listener on
 * local's port bound to local's address or to the wildcard. */
static int proc_lookup(const struct sockaddr_storage *local, const struct sockaddr_storage *remote,
		       uid_t *uid)
{
	bool v6 = local->ss_family == AF_INET6;
	FILE *f = fopen(v6 ? "/proc/net/tcp6" : "/proc/net/tcp", "r");
	char want_l[80], want_r[80], any_l[80], line[512];
	__be32 la[4], ra[4];
	int rc = -ENOENT;

	if (!f)
		return -errno;
	sa_addr(local, la);
	if (remote)
		sa_addr(remote, ra);
	else
		memset(ra, 0, sizeof(ra));
	uint16_t rport = remote ? sa_port(remote) : 0;
	if (v6) {
		snprintf(want_l, sizeof(want_l), "%08X%08X%08X%08X:%04X", la[0], la[1], la[2],
			 la[3], sa_port(local));
		snprintf(want_r, sizeof(want_r), "%08X%08X%08X%08X:%04X", ra[0], ra[1], ra[2],
			 ra[3], rport);
		snprintf(any_l, sizeof(any_l), "%032X:%04X", 0, sa_port(local));
	} else {
		snprintf(want_l, sizeof(want_l), "%08X:%04X", la[0], sa_port(local));
		snprintf(want_r, sizeof(want_r), "%08X:%04X", ra[0], rport);
		snprintf(any_l, sizeof(any_l), "%08X:%04X", 0, sa_port(local));
	}
	while (fgets(line, sizeof(line), f)) {
		char l[80], r[80];
		unsigned st, u;
		if (sscanf(line, " %*s %79s %79s %x %*s %*s %*s %u", l, r, &st, &u) != 4)
			continue;
		if (remote ? strcmp(l, want_l) == 0 && strcmp(r, want_r) == 0
			   : st == TCP_LISTEN && (strcmp(l, want_l) == 0 || strcmp(l, any_l) == 0)) {
			*uid = u;
			rc = 0;
			break;
		}
	}
	fclose(f);
	return rc;
}

int px_peer_uid(int diag_fd, const struct sockaddr_storage *ours,
		const struct sockaddr_storage *peer, uid_t *uid)
{
	/* the peer's socket: local = peer, remote = ours */
	int rc = diag_lookup(diag_fd, peer, ours, uid);
	if (rc == 0)
		return 0;
	return proc_lookup(peer, ours, uid);
}

int px_listener_uid(int diag_fd, const struct sockaddr_storage *addr, uid_t *uid)
{
	int rc = diag_lookup(diag_fd, addr, NULL, uid);
	if (rc == 0)
		return 0;
	return proc_lookup(addr, NULL, uid);
}
