/*
 * Internal to the SFTP client (sftp.c builds requests, sftp_chan.c
 * carries them, sftp_pool.c picks the channel): the shared channels
 * behind mux_sftp.
 *
 * A mux_sftp is one user's view of an "sftp" subsystem channel that
 * several views may share. sshd counts subsystem channels against
 * MaxSessions (10 by default, 1 or 2 on hardened servers), and an FTP
 * session per channel hit that wall at the 11th session. So a
 * connection keeps at most SFTP_CHANNELS_MAX channels, fewer once the
 * server refuses one (the limit learned then holds for the connection),
 * and a new view takes a channel of its own while there is room, else
 * joins the ready channel with the fewest views.
 *
 * What sharing must not change for a view: its requests and their
 * callbacks are its own (ids are per channel, each slot names its view);
 * closing a view runs none of its callbacks again, and CLOSEs the file
 * handles it still holds, which the channel's end used to do for it.
 */
#ifndef MUX_SFTP_CHAN_H
#define MUX_SFTP_CHAN_H

#include "mux/internal.h"
#include "mux/sftp.h"

#define SFTP_CHANNELS_MAX 8
/* On a server that has refused a channel, a channel outlives its last
 * client this long, for the next one: with MaxSessions 1, a script's
 * session per file had its new channel refused while the last one was
 * still closing. */
#define SFTP_LINGER_MS 15000

/* An id is (generation << SLOT_BITS) | slot. */
#define SLOT_BITS 15
#define SLOTS_MAX (1u << SLOT_BITS)

struct slot {
	mux_sftp *v;    /* NULL: nobody waits (its view closed, or ours) */
	mux_sftp_cb cb;
	void *data;
	uint64_t sent_ms;
	uint32_t id;
	int type;
	bool used;
};

/* A file or directory handle a view holds open. */
struct held {
	struct held *next;
	size_t len;
	char h[];
};

struct sftp_chan {
	struct sftp_chan *next; /* conn->sftp_chans, until closing */
	mux_conn *conn;
	mux_chan *mch;
	bool ready, failed, closing, closed;
	int error;
	bool posix_rename;
	mux_sftp *views;        /* every view naming this channel */
	unsigned nviews;        /* ... of which nactive are not closing */
	unsigned nactive;
	uint32_t gen;
	struct slot *slots;
	unsigned cap, used;
	unsigned char *in;
	size_t in_len;
	uv_timer_t linger;      /* idle: closes it SFTP_LINGER_MS after its last client;
				 * refused: its reopen (retry_cb) or deadline */
	bool linger_closed;
	uint64_t last_reply_ms; /* uv_now() of the last reply: the server is moving */
	bool retry_wait;        /* refused; opens again when one of ours has closed */
	unsigned retries;
	bool opened;            /* the server opened it: it counts against MaxSessions */
};

struct mux_sftp {
	struct sftp_chan *ch;
	mux_sftp *vnext;
	mux_sftp_event_cb cb;
	void *data;
	bool told_ready, failed, closing, finishing;
	int error;
	unsigned npending;
	struct held *held;
	uv_timer_t timer;       /* the deferred ready event; its close frees us */
	void (*closed_cb)(void *);
	void *closed_data;
};

static inline bool sftp__chan_live(const struct sftp_chan *ch)
{
	return !ch->failed && !ch->closing;
}

/* sftp_chan.c: a channel opening, in the pool (conn->sftp_chans); NULL
 * when it cannot be had. */
struct sftp_chan *sftp__chan_new(mux_conn *c);
/* sftp_chan.c: how long the server has been sitting on requests of v
 * (NULL: of anyone) on ch: since the later of the oldest one's sending
 * and the channel's last reply (a server answering in order that still
 * replies is moving, however long a queue of uploads waits); 0 with
 * none pending. Pending requests imply a live channel: closing or
 * failing one drops them all. */
uint64_t sftp__quiet_ms(const struct sftp_chan *ch, const mux_sftp *v);
/* sftp_pool.c: ch's last client has left: keep it for the next
 * (SFTP_LINGER_MS) rather than close it? Only on a server that refused
 * a channel, only a ready channel that is not stuck, and only if no
 * other such idle one is there. */
bool sftp__pool_keep_idle(const struct sftp_chan *ch);
/* sftp_pool.c: v becomes a client of ch (its ready event comes later,
 * by its timer, if ch is ready already). */
void sftp__view_link(mux_sftp *v, struct sftp_chan *ch);
/* sftp_pool.c: a channel open failed with err while others (live
 * channels of ours) and c->sftp_closing were held: a refusal then sets
 * the limit to what the server holds, if lower, and says so. */
void sftp__learn_limit(mux_conn *c, int err, unsigned others);
/* sftp_pool.c: ch failed before it was ready: true when its clients
 * were moved to other channels (the caller then closes it quietly). */
bool sftp__rehome(struct sftp_chan *ch);

/* A packet on its way to the channel. */
struct sftp_pkt {
	mux_write_req wr;
	struct sftp_chan *ch;
	size_t len;
	unsigned char buf[];
};

/* A request being built: its packet, the encoder on it, its slot and id. */
struct sftp_reqb {
	sfw_out o;
	struct sftp_pkt *p;
	unsigned slot;
	uint32_t id;
	int type;
};

/* Checks the view, takes a slot and a packet for a request of type with
 * up to extra bytes of fields, and writes its header. 0 or an error
 * (nothing taken). */
int sftp__begin(mux_sftp *v, int type, size_t extra, struct sftp_reqb *b);
/* Sends it; cb gets the reply. 0, or an error (nothing sent, no cb). */
int sftp__send(mux_sftp *v, struct sftp_reqb *b, mux_sftp_cb cb, void *data);
/* Does the view hold handle h? Sessions on one channel share the
 * server's handle numbers (sftp-server reuses them): a request on a
 * handle the view did not open, or has closed, could reach another
 * session's file, so the handle calls refuse it. */
bool sftp__holds(const mux_sftp *v, const char *h, size_t hlen);
/* The view no longer holds handle h (a CLOSE for it is being sent). */
void sftp__forget_handle(mux_sftp *v, const char *h, size_t hlen);
bool sftp__posix_rename(const mux_sftp *v);

#endif
