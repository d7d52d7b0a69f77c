/*
 * What ftpssh is doing, for people and scripts: the table printed on
 * SIGUSR1 and written to --status-file, and the one-line summary shown at
 * the bottom of a terminal. Read-only views of the server's lists.
 */
#include <stdio.h>

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
