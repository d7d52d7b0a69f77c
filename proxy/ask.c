/*
 * Questions to the user on the terminal (/dev/tty, as ssh does): key
 * passphrases, passwords, keyboard-interactive prompts. Answers are kept in
 * memory, keyed by the prompt, so that reconnecting after a network blip
 * does not need the user: while reconnecting only remembered answers are
 * given and nothing is read (the event loop must not wait on a person).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "proxy/internal.h"

#define ASK_CACHE 8

static struct {
	char *prompt, *answer;
} cache[ASK_CACHE];

static void wipe(char *p)
{
	volatile char *v = p;
	while (*v)
		*v++ = 0;
}

static int cache_find(const char *prompt)
{
	for (int i = 0; i < ASK_CACHE; i++)
		if (cache[i].prompt && strcmp(cache[i].prompt, prompt) == 0)
			return i;
	return -1;
}

static void cache_put(const char *prompt, const char *answer)
{
	int i = cache_find(prompt);
	if (i < 0)
		for (i = 0; i < ASK_CACHE && cache[i].prompt; i++)
			;
	if (i >= ASK_CACHE)
		return;
	if (cache[i].answer) {
		wipe(cache[i].answer);
		free(cache[i].answer);
	}
	free(cache[i].prompt);
	cache[i].prompt = strdup(prompt);
	cache[i].answer = strdup(answer);
}

void px_ask_forget(void)
{
	for (int i = 0; i < ASK_CACHE; i++) {
		if (cache[i].answer)
			wipe(cache[i].answer);
		free(cache[i].answer);
		free(cache[i].prompt);
		cache[i].answer = cache[i].prompt = NULL;
	}
}

int px_ask(void *ctx, const char *prompt, bool echo, char *buf, size_t cap)
{
	const bool *reconnecting = ctx;
	if (cap == 0)
		return -1;
	if (reconnecting && *reconnecting) {
		int i = cache_find(prompt);
		if (i < 0 || strlen(cache[i].answer) >= cap)
			return -1;
		strcpy(buf, cache[i].answer);
		return 0;
	}
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct termios saved, t;
	bool restore = false;
	if (!echo && tcgetattr(fd, &saved) == 0) {
		t = saved;
		t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
		t.c_lflag |= ICANON;
		restore = tcsetattr(fd, TCSAFLUSH, &t) == 0;
	}
	ssize_t w = write(fd, prompt, strlen(prompt));
	(void)w;
	size_t n = 0;
	bool ok = false;
	for (;;) {
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (ch == '\n' || ch == '\r') {
			ok = true;
			break;
		}
		if (n + 1 < cap)
			buf[n++] = ch;
	}
	buf[n] = '\0';
	if (restore)
		tcsetattr(fd, TCSAFLUSH, &saved);
	if (!echo) {
		w = write(fd, "\n", 1);
		(void)w;
	}
	close(fd);
	if (!ok) {
		wipe(buf);
		return -1;
	}
	cache_put(prompt, buf);
	return 0;
}
