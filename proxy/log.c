/*
 * The one log: one line per event, "ftpssh: [#12] text" on stderr, or
 * syslog with --syslog. Callers put the session id ("[#12]", "[#12.3]")
 * first and make peer text printable (fp_printable) before it gets here.
 *
 * When stderr is a terminal a status line may sit at the bottom: every log
 * line first erases it and then draws it again, the way curl and rsync
 * keep their progress line under scrolling output.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "proxy/proxy.h"

static int verbosity;
static bool use_syslog;
static char status[256];

void px_log_init(int v)
{
	verbosity = v;
}

void px_log_use_syslog(void)
{
	use_syslog = true;
	openlog("ftpssh", LOG_PID, LOG_DAEMON);
}

bool px_log_enabled(int level)
{
	return level == 0 || level <= verbosity + 1;
}

void px_log_status(const char *line)
{
	if (use_syslog)
		return;
	snprintf(status, sizeof(status), "%s", line ? line : "");
	fprintf(stderr, "\r\033[K%s", status);
	fflush(stderr);
}

static void vlog(int level, const char *fmt, va_list ap)
{
	char buf[2048];
	if (!px_log_enabled(level))
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (use_syslog) {
		static const int prio[] = {LOG_ERR, LOG_INFO, LOG_INFO, LOG_DEBUG};
		syslog(prio[level < 0 ? 0 : level > 3 ? 3 : level], "%s", buf);
		return;
	}
	/* one event, one write: lines from one process never interleave */
	if (status[0])
		fprintf(stderr, "\r\033[Kftpssh: %s\n%s", buf, status);
	else
		fprintf(stderr, "ftpssh: %s\n", buf);
	fflush(stderr);
}

void px_log(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(level, fmt, ap);
	va_end(ap);
}

void px_log_mux(void *ctx, int level, const char *fmt, ...)
{
	va_list ap;
	(void)ctx;
	va_start(ap, fmt);
	vlog(level, fmt, ap);
	va_end(ap);
}
