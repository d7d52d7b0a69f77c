/*
 * Listing lines for ftpssh's own FTP server side (the SFTP front end):
 * `ls -l` lines for LIST, RFC 3659 facts for MLSD/MLST, and RFC 3659 times.
 *
 * Pure: the date is computed from the seconds with the civil-from-days
 * algorithm (proleptic Gregorian, UTC), not with gmtime, so the output does
 * not depend on the process's time zone or locale. Every line is checked
 * to fit before it is written; a name with CR or LF is refused, because it
 * would end the line early and let a file name forge listing entries.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ftpparse.h"

struct civil {
	int64_t year;
	unsigned mon, day, hour, min, sec;
};

static void civil_from_time(int64_t t, struct civil *c)
{
	int64_t days = t / 86400, rem = t % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	c->hour = (unsigned)(rem / 3600);
	c->min = (unsigned)(rem % 3600 / 60);
	c->sec = (unsigned)(rem % 60);
	/* H. Hinnant, "chrono-Compatible Low-Level Date Algorithms" */
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	c->day = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	c->mon = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	c->year = yoe + era * 400 + (c->mon <= 2);
}

static bool name_ok(const fp_fileinfo *fi)
{
	return fi->name_len > 0 && !memchr(fi->name, '\r', fi->name_len) &&
	       !memchr(fi->name, '\n', fi->name_len);
}

int fp_format_time(char *buf, size_t cap, int64_t t)
{
	struct civil c;
	civil_from_time(t, &c);
	if (c.year < 0 || c.year > 9999)
		return FP_E_RANGE;
	int n = snprintf(buf, cap, "%04u%02u%02u%02u%02u%02u", (unsigned)c.year, c.mon, c.day,
			 c.hour, c.min, c.sec);
	return n < 0 || (size_t)n >= cap ? FP_E_NOSPACE : n;
}

static char type_char(uint32_t mode)
{
	switch (mode & 0170000) {
	case 0040000: return 'd';
	case 0120000: return 'l';
	case 0020000: return 'c';
	case 0060000: return 'b';
	case 0010000: return 'p';
	case 0140000: return 's';
	default: return '-';
	}
}

static void mode_string(uint32_t m, char out[11])
{
	static const char rwx[] = "rwxrwxrwx";
	out[0] = type_char(m);
	for (int i = 0; i < 9; i++)
		out[1 + i] = (m & (0400u >> i)) ? rwx[i] : '-';
	if (m & 04000)
		out[3] = (m & 0100) ? 's' : 'S';
	if (m & 02000)
		out[6] = (m & 010) ? 's' : 'S';
	if (m & 01000)
		out[9] = (m & 01) ? 't' : 'T';
	out[10] = '\0';
}

/* Append the name and CR LF after n bytes already in buf. */
static int finish_line(char *buf, size_t cap, int n, const fp_fileinfo *fi)
{
	if (n < 0 || (size_t)n >= cap || cap - (size_t)n < fi->name_len + 2)
		return FP_E_NOSPACE;
	memcpy(buf + n, fi->name, fi->name_len);
	memcpy(buf + n + fi->name_len, "\r\n", 2);
	return n + (int)fi->name_len + 2;
}

int fp_format_ls(char *buf, size_t cap, const fp_fileinfo *fi, int64_t now)
{
	static const char *mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
				    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	char mode[11];
	char when[16];
	if (!name_ok(fi))
		return FP_E_CHARSET;
	mode_string(fi->has_perm ? fi->perm : 0100644, mode);
	int64_t t = fi->has_mtime ? fi->mtime : 0;
	struct civil c;
	civil_from_time(t, &c);
	/* ls: the year instead of the time beyond six months either way */
	int64_t half_year = 182 * 86400;
	if (t < now - half_year || t > now + half_year)
		snprintf(when, sizeof(when), "%s %2u %5" PRId64, mon[c.mon - 1], c.day, c.year);
	else
		snprintf(when, sizeof(when), "%s %2u %02u:%02u", mon[c.mon - 1], c.day, c.hour,
			 c.min);
	int n = snprintf(buf, cap, "%s 1 %-8" PRIu32 " %-8" PRIu32 " %12" PRIu64 " %s ", mode,
			 fi->has_ids ? fi->uid : 0, fi->has_ids ? fi->gid : 0,
			 fi->has_size ? fi->size : 0, when);
	return finish_line(buf, cap, n, fi);
}

int fp_format_facts(char *buf, size_t cap, const fp_fileinfo *fi, bool mlst)
{
	char t[24] = "";
	char size[32] = "";
	char ids[40] = "";
	char mode[24] = "";
	const char *type = "file", *perm = "adfrw";
	if (!name_ok(fi))
		return FP_E_CHARSET;
	if (fi->has_perm) {
		switch (fi->perm & 0170000) {
		case 0040000:
			type = "dir";
			perm = "flcdmpe";
			break;
		case 0120000:
			type = "OS.unix=symlink";
			break;
		case 0100000:
			break;
		default:
			type = "OS.unix=special";
			perm = "";
			break;
		}
		snprintf(mode, sizeof(mode), "UNIX.mode=0%03o;", (unsigned)(fi->perm & 07777));
	}
	if (fi->has_size && strcmp(type, "dir") != 0)
		snprintf(size, sizeof(size), "size=%" PRIu64 ";", fi->size);
	if (fi->has_mtime) {
		char v[16];
		if (fp_format_time(v, sizeof(v), fi->mtime) > 0)
			snprintf(t, sizeof(t), "modify=%s;", v);
	}
	if (fi->has_ids)
		snprintf(ids, sizeof(ids), "UNIX.uid=%" PRIu32 ";UNIX.gid=%" PRIu32 ";", fi->uid,
			 fi->gid);
	int n = snprintf(buf, cap, "%stype=%s;%s%sperm=%s;%s%s ", mlst ? " " : "", type, size, t,
			 perm, mode, ids);
	return finish_line(buf, cap, n, fi);
}
