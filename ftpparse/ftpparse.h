/*
 * ftpparse: the FTP control-stream text, and nothing else.
 *
 * Pure code: no sockets, no libuv, no libssh2, no allocation. Every function
 * works on caller-owned memory, so the parser can be fed untrusted bytes one
 * at a time and unit-tested or fuzzed on its own. The proxy feeds bytes in,
 * takes complete lines out, asks what they mean, and formats rewritten
 * replies into its own buffers.
 *
 * Errors are negative FP_E_* codes from one table; fp_strerror() names them.
 */
#ifndef FTPPARSE_H
#define FTPPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest control line accepted, terminator included. RFC 959 sets no limit;
 * real servers stay far below this, and a peer that sends more without a
 * newline is broken or hostile. */
#define FP_LINE_MAX 8192

enum fp_err {
	FP_OK = 0,
	FP_E_AGAIN = -1,    /* no complete line yet: feed more bytes */
	FP_E_TOOLONG = -2,  /* line longer than FP_LINE_MAX: it was discarded */
	FP_E_SYNTAX = -3,   /* text does not have the required shape */
	FP_E_RANGE = -4,    /* a number is out of range (byte > 255, port 0) */
	FP_E_NOSPACE = -5,  /* output buffer too small */
	FP_E_CHARSET = -6,  /* byte not allowed here (NUL, non-ASCII in a number field) */
	FP_E_DELIM = -7,    /* RFC 2428 delimiters missing or not matching */
};

/* A short English name for an FP_E_* code. Never NULL. */
const char *fp_strerror(int err);

/* ---- Line framing ------------------------------------------------------
 *
 * A bounded buffer that turns a byte stream into lines. A line ends at LF;
 * a CR before the LF is part of the terminator (CRLF and bare LF both
 * work). Bytes are never altered: a line is handed back exactly as it came,
 * terminator included, so Telnet IAC sequences and odd bytes pass through.
 *
 * The framer owns no heap memory; embed it. Reading can go straight into
 * it: fp_framer_space() gives the free tail, fp_framer_commit() says how
 * much was written there (zero-copy with uv_read's alloc_cb). */
typedef struct fp_framer {
	char buf[FP_LINE_MAX];
	size_t start;      /* first byte not yet returned as a line */
	size_t len;        /* bytes in buf */
	size_t scanned;    /* bytes after start known to hold no LF */
	bool discarding;   /* dropping the rest of an over-long line */
} fp_framer;

/* A line as returned by fp_framer_next(); points into the framer and stays
 * valid until the next call that changes the framer. */
typedef struct fp_line {
	const char *p;
	size_t len;       /* bytes including the terminator */
	size_t text_len;  /* bytes without CR LF / LF */
} fp_line;

void fp_framer_init(fp_framer *f);
/* Free space at the tail (compacting first if needed); *avail may be 0 when
 * the buffer holds complete lines not yet taken, or one line that filled it
 * without an LF: call fp_framer_next() first (it returns FP_E_TOOLONG for
 * the latter). */
char *fp_framer_space(fp_framer *f, size_t *avail);
void fp_framer_commit(fp_framer *f, size_t n);
/* Copy bytes in; returns how many were taken (less than n when full). */
size_t fp_framer_feed(fp_framer *f, const char *p, size_t n);
/* Next complete line: FP_OK and *out filled; FP_E_AGAIN when none is
 * complete; FP_E_TOOLONG once for a line that overflowed the buffer (its
 * bytes are dropped up to and including its LF; framing then goes on). */
int fp_framer_next(fp_framer *f, fp_line *out);
/* Bytes held that are not yet part of a returned line. */
size_t fp_framer_pending(const fp_framer *f);

/* ---- Replies (server -> client) ----------------------------------------
 *
 * RFC 959 4.2: a reply is one line "NNN text", or several lines opened by
 * "NNN-text" and closed by a line starting "NNN " with the same code; lines
 * in between may say anything (including other digits). fp_reply tracks
 * where in a reply the stream is, one line at a time. */
typedef struct fp_reply {
	int code;       /* code of the reply in progress, 0 between replies */
	bool in_multi;  /* inside a multi-line reply */
} fp_reply;

typedef struct fp_reply_line {
	int code;       /* 100..599 */
	bool first;     /* first line of its reply */
	bool last;      /* last line of its reply */
} fp_reply_line;

void fp_reply_init(fp_reply *r);
/* Classify one line (text only, no terminator needed). FP_E_SYNTAX when a
 * line that must open or close a reply does not start with three digits
 * 1-5,0-5,0-9 followed by ' ' or '-' (or end of line); the tracker is then
 * reset to "between replies". */
int fp_reply_feed(fp_reply *r, const char *text, size_t len, fp_reply_line *out);

/* ---- Commands (client -> server) ---------------------------------------*/
enum fp_verb {
	FP_CMD_OTHER = 0,
	FP_CMD_USER, FP_CMD_PASS, FP_CMD_ACCT, FP_CMD_PASV, FP_CMD_EPSV,
	FP_CMD_PORT, FP_CMD_EPRT, FP_CMD_LPRT, FP_CMD_LPSV, FP_CMD_AUTH,
	FP_CMD_RETR, FP_CMD_STOR, FP_CMD_STOU, FP_CMD_APPE, FP_CMD_LIST,
	FP_CMD_NLST, FP_CMD_MLSD, FP_CMD_ABOR, FP_CMD_QUIT, FP_CMD_FEAT,
	FP_CMD_REIN, FP_CMD_PBSZ, FP_CMD_PROT, FP_CMD_CCC,
};

typedef struct fp_cmd {
	enum fp_verb verb;
	char name[5];        /* verb as sent, upper-cased, NUL-terminated ("" if none) */
	const char *arg;     /* argument text after one space, inside the line */
	size_t arg_len;      /* without terminator; 0 when none */
} fp_cmd;

/* Parse a command line (text, terminator optional). Leading Telnet IAC
 * sequences (IAC IP, IAC DM, IAC+SYNCH as sent before ABOR) are skipped when
 * looking for the verb. FP_E_SYNTAX for an empty line or a verb that is not
 * 3-4 letters. */
int fp_cmd_parse(const char *text, size_t len, fp_cmd *out);

/* ---- Passive replies and active commands -------------------------------*/
typedef struct fp_hostport {
	uint8_t ip[4];
	uint16_t port;
} fp_hostport;

/* 227 text (code included or not): RFC 1123 4.1.2.6 says scan for the first
 * digit after the code and read h1,h2,h3,h4,p1,p2 from there, whatever
 * surrounds them. Each field 0..255, port != 0. */
int fp_parse_227(const char *text, size_t len, fp_hostport *out);
/* 229 text: "(<d><d><d>port<d>)" with any delimiter 33..126 (RFC 2428),
 * all four delimiters equal, port 1..65535. */
int fp_parse_229(const char *text, size_t len, uint16_t *port);
/* PORT argument "h1,h2,h3,h4,p1,p2". */
int fp_parse_port(const char *arg, size_t len, fp_hostport *out);

/* EPRT argument "<d>proto<d>addr<d>port<d>" (RFC 2428). The address text
 * is copied, NUL-terminated, into addr (addr_cap bytes); *family is 1 (IPv4)
 * or 2 (IPv6). The address is not validated beyond its characters. */
int fp_parse_eprt(const char *arg, size_t len, int *family, char *addr,
		  size_t addr_cap, uint16_t *port);

/* Formatters write a complete reply line with CRLF into buf (cap bytes) and
 * return its length, or FP_E_NOSPACE. The result is not NUL-terminated. */
int fp_format_227(char *buf, size_t cap, const uint8_t ip[4], uint16_t port);
int fp_format_229(char *buf, size_t cap, uint16_t port);
/* "NNN text\r\n" for proxy-generated replies; text is used as given up to
 * its first CR/LF so a caller cannot inject a second line. FP_E_RANGE when
 * code is not 100..599; a NULL text counts as "". */
int fp_format_reply(char *buf, size_t cap, int code, const char *text);

/* Copy text into dst (cap bytes, NUL-terminated) with every byte outside
 * printable ASCII shown as \xNN, for logging peer text safely. Returns dst. */
char *fp_printable(char *dst, size_t cap, const char *src, size_t len);

/* ---- Directory listings (the FTP server side) --------------------------
 *
 * What an FTP server says about a file: the `ls -l` line of LIST (the shape
 * curl, lftp, wget and FileZilla parse), the RFC 3659 facts of MLSD/MLST,
 * and the RFC 3659 time value of MDTM and modify=. Times are UTC, computed
 * without the C library's time zone. A name holding CR or LF cannot be
 * sent on one line: FP_E_CHARSET (the caller skips the entry). */
typedef struct fp_fileinfo {
	const char *name;
	size_t name_len;
	bool has_size, has_perm, has_mtime, has_ids;
	uint64_t size;
	uint32_t perm;        /* st_mode: type and permission bits */
	int64_t mtime;        /* seconds since 1970 */
	uint32_t uid, gid;
} fp_fileinfo;

/* "drwxr-xr-x 1 uid gid size Mon DD HH:MM name\r\n"; a time more than
 * six months from now shows the year instead of the hour, as ls does. */
int fp_format_ls(char *buf, size_t cap, const fp_fileinfo *fi, int64_t now);
/* "type=file;size=N;modify=T;perm=..;UNIX.mode=0644; name\r\n"; with
 * mlst a leading space, as inside a 250- reply. */
int fp_format_facts(char *buf, size_t cap, const fp_fileinfo *fi, bool mlst);
/* "YYYYMMDDHHMMSS", NUL-terminated; returns its length. */
int fp_format_time(char *buf, size_t cap, int64_t t);

#endif
