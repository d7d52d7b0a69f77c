/*
 * Internal to the SFTP front end's transfer code (ftpd_port.c,
 * ftpd_xfer.c, ftpd_list.c): the transfer object. See ftpd_xfer.c.
 */
#ifndef PROXY_FTPD_FX_H
#define PROXY_FTPD_FX_H

#include "proxy/ftpd.h"

/* Reads or writes in flight per transfer, each MUX_SFTP_CHUNK (64 KiB):
 * 3 MiB per transfer, the bound on what a transfer buffers. Measured at
 * 50 ms RTT against OpenSSH's sftp (64 x 32 KiB in flight), 128-256 MiB:
 * 16 slots RETR ~10 MB/s; 32 slots RETR 0.92x and STOR 0.79-0.92x of
 * sftp's; 48 slots RETR 1.43x, STOR 1.07x. */
#define FX_SLOTS 48

enum slot_state { SL_FREE, SL_WAIT, SL_READY, SL_WRITING, SL_EOF, SL_ERR };

struct fx_slot {
	px_fx *fx;
	enum slot_state st;
	bool dropped;          /* in flight, but its reply will be thrown away */
	uint64_t off;
	uint32_t want, got;
	uint32_t status;       /* SL_ERR */
	char msg[128];
	char *buf;             /* MUX_SFTP_CHUNK */
	char *wbuf;            /* TYPE A conversion of buf, while writing */
	uv_write_t wr;
};

struct px_fx {
	px_ftpd *s;
	px_fx *lnext;          /* s->fxs */
	unsigned xid;
	/* the data connection */
	bool active;
	struct sockaddr_storage addr; /* active: the client's port */
	uv_tcp_t listener;     /* passive */
	bool listener_open;
	uv_tcp_t *conn;        /* heap: accepted or connecting */
	uv_connect_t creq;
	bool connected;
	uv_timer_t timer;
	uv_shutdown_t shut;
	int handles;           /* uv handles not yet closed */
	bool handles_closing;
	/* the transfer */
	enum fx_kind kind;
	bool started;          /* a transfer command came */
	bool ready;            /* its handle is open and 150 was sent */
	bool begun;            /* bytes are moving */
	bool completing;       /* success: CLOSE and shutdown under way */
	bool close_done, shut_done;
	bool stopping;         /* failed or aborted: no new requests */
	bool finished;         /* the command has its final reply */
	bool killed;           /* the session's SFTP client is gone */
	bool ascii, pending_cr;
	bool eof;
	char path[FTPD_PATH_MAX];
	char label[128];
	char handle[SFW_HANDLE_MAX];
	size_t hlen;
	bool have_handle;
	unsigned inflight;     /* SFTP requests whose callback names this fx */
	uint64_t offset;       /* next read/write offset */
	uint64_t bytes;        /* data bytes to/from the client */
	uint64_t t0;
	int code;              /* an error decided before the end */
	char final_msg[FTPD_PATH_MAX + 100];
	/* RETR */
	struct fx_slot slots[FX_SLOTS];
	unsigned head, count, wpos;
	/* STOR */
	char *sbuf;
	size_t slen;
	bool reading;
	/* listings */
	char *lbuf;
	size_t lcap, llen;
	uv_write_t lwr;
	bool single;           /* LIST/NLST of one file */
	sfw_attrs single_attrs;
};

/* ftpd_xfer.c */
void fx_settle(px_fx *fx);
void fx_close_handles(px_fx *fx);
void fx_handle_closed_cb(uv_handle_t *h);
void fx_fail(px_fx *fx, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void fx_fail_sftp(px_fx *fx, const sfw_reply *r, int err, bool store);
void fx_complete(px_fx *fx);
void fx_begin(px_fx *fx);
/* ftpd_list.c */
void fx_list_begin(px_fx *fx);

#endif
