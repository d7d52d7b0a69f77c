/*
 * The one log: stderr, one line per event, prefixed "ftpssh: ". Callers
 * put the session id ("[#12]", "[#12.3]") first in their text and make peer
 * text printable (fp_printable) before it gets here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "proxy/proxy.h"

static int verbosity;

void px_log_init(int v)
{
	verbosity = v;
}

bool px_log_enabled(int level)
{
	return level == 0 || level <= verbosity + 1;
}

static void vlog(int level, const char *fmt, va_list ap)
{
	char buf[2048];
	if (!px_log_enabled(level))
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	/* one event, one write: lines from one process never interleave */
	fprintf(stderr, "ftpssh: %s\n", buf);
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
