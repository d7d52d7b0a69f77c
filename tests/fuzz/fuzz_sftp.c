/*
 * libFuzzer target: SFTP replies as a hostile server could send them.
 *
 * Bytes are framed (sfw_frame, 64 KiB bound) and every packet decoded
 * (sfw_parse_reply); NAME replies are walked entry by entry and each entry
 * formatted as the FTP front end lists it (fp_format_ls, fp_format_facts).
 * Invariants: a frame is never longer than the input nor the bound, a
 * decoded string lies inside its packet, the name walk stops at the
 * announced count or the first error, and formatted lines end in CR LF.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ftpparse/ftpparse.h"
#include "mux/sftp_wire.h"

#define CHECK(c)                                                                              \
	do {                                                                                  \
		if (!(c))                                                                     \
			abort();                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const void *p, size_t n, const uint8_t *pkt, size_t len)
{
	const uint8_t *u = p;
	return n == 0 || (u >= pkt && u + n <= pkt + len);
}

static void walk_names(sfw_reply *r, const uint8_t *pkt, size_t len)
{
	char line[1024];
	for (uint32_t i = 0; i < r->count; i++) {
		sfw_name e;
		if (sfw_name_next(&r->names, &e) != SFW_OK)
			return;
		CHECK(inside(e.name, e.name_len, pkt, len));
		CHECK(inside(e.longname, e.longname_len, pkt, len));
		fp_fileinfo fi = {e.name, e.name_len, true, true, true, true, e.attrs.size,
				  e.attrs.perm, e.attrs.mtime, e.attrs.uid, e.attrs.gid};
		int n = fp_format_ls(line, sizeof(line), &fi, 1700000000);
		CHECK(n < 0 || (n >= 2 && (size_t)n <= sizeof(line) && line[n - 1] == '\n' &&
				line[n - 2] == '\r' && !memchr(line, '\n', (size_t)n - 1)));
		n = fp_format_facts(line, sizeof(line), &fi, i & 1);
		CHECK(n < 0 || (n >= 2 && (size_t)n <= sizeof(line) && line[n - 1] == '\n' &&
				!memchr(line, '\n', (size_t)n - 1)));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		long l = sfw_frame(data + off, size - off, 64 * 1024);
		if (l < 0)
			break;
		CHECK((size_t)l <= size - off && l <= 64 * 1024);
		/* an exactly-sized copy: any read past the packet is caught */
		uint8_t *pkt = malloc((size_t)l);
		CHECK(pkt);
		memcpy(pkt, data + off, (size_t)l);
		sfw_reply r;
		if (sfw_parse_reply(pkt, (size_t)l, &r) == SFW_OK) {
			CHECK(inside(r.msg, r.msg_len, pkt, (size_t)l));
			CHECK(inside(r.data, r.data_len, pkt, (size_t)l));
			if (r.type == SFW_NAME)
				walk_names(&r, pkt, (size_t)l);
			if (r.type == SFW_VERSION)
				(void)sfw_version_has(&r, "posix-rename@openssh.com");
		}
		free(pkt);
		off += (size_t)l;
	}
	return 0;
}
