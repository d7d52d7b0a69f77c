/*
 * SFTP version 3 packets (draft-ietf-secsh-filexfer-02, what OpenSSH's
 * sftp-server speaks): encoding of requests, framing and decoding of
 * replies. Pure code: no libuv, no libssh2, no allocation; every length read
 * from the peer is checked against what is left of the packet, and a packet
 * longer than the caller's bound is an error, not a reason to buffer more.
 *
 * Internal to mux/ (the request layer, sftp.c, is its only user); the unit
 * tests link it alone.
 */
#ifndef MUX_SFTP_WIRE_H
#define MUX_SFTP_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sfw_type {
	SFW_INIT = 1, SFW_VERSION = 2, SFW_OPEN = 3, SFW_CLOSE = 4, SFW_READ = 5,
	SFW_WRITE = 6, SFW_LSTAT = 7, SFW_FSTAT = 8, SFW_SETSTAT = 9, SFW_FSETSTAT = 10,
	SFW_OPENDIR = 11, SFW_READDIR = 12, SFW_REMOVE = 13, SFW_MKDIR = 14, SFW_RMDIR = 15,
	SFW_REALPATH = 16, SFW_STAT = 17, SFW_RENAME = 18, SFW_READLINK = 19,
	SFW_STATUS = 101, SFW_HANDLE = 102, SFW_DATA = 103, SFW_NAME = 104, SFW_ATTRS = 105,
	SFW_EXTENDED = 200, SFW_EXTENDED_REPLY = 201,
};

/* Attribute flags and the fields they announce. */
#define SFW_ATTR_SIZE 0x00000001u
#define SFW_ATTR_UIDGID 0x00000002u
#define SFW_ATTR_PERMISSIONS 0x00000004u
#define SFW_ATTR_ACMODTIME 0x00000008u
#define SFW_ATTR_EXTENDED 0x80000000u

/* Open flags (pflags). */
#define SFW_FXF_READ 0x01u
#define SFW_FXF_WRITE 0x02u
#define SFW_FXF_APPEND 0x04u
#define SFW_FXF_CREAT 0x08u
#define SFW_FXF_TRUNC 0x10u
#define SFW_FXF_EXCL 0x20u

/* Longest handle the protocol allows (draft: 256 bytes). */
#define SFW_HANDLE_MAX 256

typedef struct sfw_attrs {
	uint32_t flags;
	uint64_t size;
	uint32_t uid, gid;
	uint32_t perm;
	uint32_t atime, mtime;
} sfw_attrs;

/* Errors: negative, apart from the peer's own SSH_FX status codes. */
enum sfw_err {
	SFW_OK = 0,
	SFW_E_AGAIN = -1,   /* not a whole packet yet */
	SFW_E_NOSPACE = -2, /* output buffer too small */
	SFW_E_TOOBIG = -3,  /* packet length over the bound */
	SFW_E_SHORT = -4,   /* a field runs past the end of the packet */
	SFW_E_TYPE = -5,    /* unexpected packet type */
};

/* ---- encoding ----------------------------------------------------------- */
typedef struct sfw_out {
	unsigned char *p;
	size_t cap, len;
	bool overflow;
} sfw_out;

void sfw_out_init(sfw_out *o, void *buf, size_t cap);
/* uint32 length (patched by sfw_end), byte type, and uint32 id unless type
 * is SFW_INIT. */
void sfw_begin(sfw_out *o, int type, uint32_t id);
void sfw_put_u32(sfw_out *o, uint32_t v);
void sfw_put_u64(sfw_out *o, uint64_t v);
void sfw_put_str(sfw_out *o, const void *s, size_t n);
void sfw_put_cstr(sfw_out *o, const char *s);
void sfw_put_attrs(sfw_out *o, const sfw_attrs *a);
/* Patch the length; the packet's total size, or SFW_E_NOSPACE. */
long sfw_end(sfw_out *o);

/* ---- framing and decoding ----------------------------------------------- */
/* Bytes in p[0..len) that start with a packet: its total size (length
 * field included) once it is complete, SFW_E_AGAIN before, SFW_E_TOOBIG
 * when it announces more than max bytes or less than one (the type). */
long sfw_frame(const void *p, size_t len, size_t max);

typedef struct sfw_in {
	const unsigned char *p;
	size_t len, off;
	bool err;
} sfw_in;

void sfw_in_init(sfw_in *in, const void *p, size_t len);
uint8_t sfw_get_u8(sfw_in *in);
uint32_t sfw_get_u32(sfw_in *in);
uint64_t sfw_get_u64(sfw_in *in);
/* A string: pointer into the packet and its length (not NUL-terminated). */
const char *sfw_get_str(sfw_in *in, size_t *n);
void sfw_get_attrs(sfw_in *in, sfw_attrs *a);

/* One decoded reply. Pointers point into the packet. */
typedef struct sfw_reply {
	int type;
	uint32_t id;               /* not for SFW_VERSION */
	uint32_t status;           /* SFW_STATUS: SSH_FX_* code */
	const char *msg;           /* SFW_STATUS: message (may be empty) */
	size_t msg_len;
	const char *data;          /* SFW_HANDLE: handle; SFW_DATA: data;
				    * SFW_VERSION / SFW_EXTENDED_REPLY: the rest */
	size_t data_len;
	uint32_t count;            /* SFW_NAME: entries that follow in names */
	sfw_in names;              /* SFW_NAME: reader positioned at the first entry */
	sfw_attrs attrs;           /* SFW_ATTRS */
	uint32_t version;          /* SFW_VERSION */
} sfw_reply;

/* Decode one whole packet (as framed by sfw_frame). SFW_E_SHORT for a
 * field that runs past the end, SFW_E_TYPE for a type no server sends. */
int sfw_parse_reply(const void *pkt, size_t len, sfw_reply *out);

typedef struct sfw_name {
	const char *name;
	size_t name_len;
	const char *longname;
	size_t longname_len;
	sfw_attrs attrs;
} sfw_name;

/* Next entry of an SFW_NAME reply: 0, or SFW_E_SHORT when the packet ends
 * early (the reader is then spent). */
int sfw_name_next(sfw_in *names, sfw_name *out);

/* VERSION extensions: true when the pair (name, any data) is present. */
bool sfw_version_has(const sfw_reply *v, const char *name);

#endif
