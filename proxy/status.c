/*
 * What ftpssh is doing, for people and scripts: the table printed on
 * SIGUSR1 and written to --status-file, and the one-line summary shown at
 * the bottom of a terminal. Read-only views of the server's lists.
 */
#include <stdio.h>

#include "proxy/session.h"
#include "proxy/ftpd.h"

uint64_t px_server_bytes(px_server *srv)
{
	return srv->bytes_done + px_xfers_report(srv, NULL);
}

void px_server_report(px_server *srv, const char *ssh_state, FILE *out)
{
	char total[32];
	uint64_t live = px_xfers_report(srv, NULL);
	px_fmt_bytes(total, sizeof(total), (double)(srv->bytes_done + live));
	fprintf(out, "status: ssh %s, %u session(s), %u transfer(s) running, "
		     "%llu finished, %s moved\n",
		ssh_state, srv->nsessions + srv->nftpds, srv->nxfers,
		(unsigned long long)srv->xfers_done,
		total);
	px_sessions_report(srv, out);
	px_ftpd_report(srv, out);
	px_xfers_report(srv, out);
}

void px_server_summary(px_server *srv, const char *ssh_state, double rate, char *buf,
		       size_t cap)
{
	char total[32];
	px_fmt_bytes(total, sizeof(total), (double)px_server_bytes(srv));
	unsigned ns = srv->nsessions + srv->nftpds, nx = px_server_transfers(srv);
	snprintf(buf, cap, "ftpssh: ssh %s | %u session%s | %u transfer%s | %.1f MB/s | %s",
		 ssh_state, ns, ns == 1 ? "" : "s", nx, nx == 1 ? "" : "s", rate / 1e6, total);
}

void px_sessions_report(px_server *srv, FILE *out)
{
	uint64_t now = uv_now(srv->loop);
	fprintf(out, "%-7s %-16s %-24s %6s %8s  %s\n", "SESSION", "USER", "CLIENT", "UID", "AGE",
		"LAST COMMAND");
	for (px_session *s = srv->sessions; s; s = s->next) {
		char id[16], uid[24];
		if (s->refused)
			continue;
		snprintf(id, sizeof(id), "#%u", s->id);
		if (s->client_uid >= 0)
			snprintf(uid, sizeof(uid), "%ld", s->client_uid);
		else
			snprintf(uid, sizeof(uid), "-");
		fprintf(out, "%-7s %-16.16s %-24.24s %6s %7.0fs  %s\n", id,
			s->user[0] ? s->user : "-", s->peer, uid, (now - s->started_ms) / 1000.0,
			s->last_cmd[0] ? s->last_cmd : "-");
	}
}
