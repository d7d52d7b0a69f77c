/*
 * Bounded output queue for control connections (see internal.h). Control
 * traffic is small and line-sized, so one write in flight is plenty; the
 * ring's fixed size is the bound, and the session stops reading whichever
 * side feeds a queue that has less than a line of room.
 */
#include <string.h>

#include "proxy/internal.h"

static void outq_kick(px_outq *q);

void px_outq_init(px_outq *q, px_outq_cb cb, void *data)
{
	q->head = q->len = q->inflight = 0;
	q->err = 0;
	q->stream = NULL;
	q->chan = NULL;
	q->cb = cb;
	q->data = data;
}

size_t px_outq_room(const px_outq *q)
{
	return q->err ? 0 : PX_OUTQ_CAP - q->len;
}

size_t px_outq_len(const px_outq *q)
{
	return q->len;
}

static void outq_done(px_outq *q, int status)
{
	if (status < 0) {
		if (!q->err)
			q->err = status;
		q->inflight = 0;
		q->len = 0;
	} else {
		q->head = (q->head + q->inflight) % PX_OUTQ_CAP;
		q->len -= q->inflight;
		q->inflight = 0;
		if (q->len == 0)
			q->head = 0;
		outq_kick(q);
	}
	if (q->cb)
		q->cb(q, status);
}

static void outq_uv_cb(uv_write_t *req, int status)
{
	outq_done(container_of(req, px_outq, req.uw), status);
}

static void outq_mux_cb(mux_write_req *req, int status)
{
	outq_done(container_of(req, px_outq, req.mw), status);
}

static void outq_kick(px_outq *q)
{
	if (q->inflight || q->len == 0 || q->err || (!q->stream && !q->chan))
		return;
	size_t contig = PX_OUTQ_CAP - q->head;
	size_t n = q->len < contig ? q->len : contig;
	int rc;
	if (q->stream) {
		uv_buf_t b = uv_buf_init(q->buf + q->head, (unsigned)n);
		rc = uv_write(&q->req.uw, q->stream, &b, 1, outq_uv_cb);
	} else {
		rc = mux_chan_write(&q->req.mw, q->chan, q->buf + q->head, n, outq_mux_cb);
	}
	if (rc < 0)
		q->err = rc;
	else
		q->inflight = n;
}

int px_outq_push(px_outq *q, const char *p, size_t n)
{
	if (q->err)
		return q->err;
	if (n > PX_OUTQ_CAP - q->len)
		return UV_ENOBUFS;
	while (n > 0) {
		size_t tail = (q->head + q->len) % PX_OUTQ_CAP;
		size_t room = PX_OUTQ_CAP - tail;
		size_t k = n < room ? n : room;
		memcpy(q->buf + tail, p, k);
		q->len += k;
		p += k;
		n -= k;
	}
	outq_kick(q);
	return 0;
}
