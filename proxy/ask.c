/*
 * Questions to the user on the terminal (/dev/tty, as ssh does): key
 * passphrases, passwords, keyboard-interactive prompts. Answers are kept in
 * memory so that reconnecting after a network blip does not need the user:
 * while reconnecting only remembered answers are given and nothing is read
 * (the event loop must not wait on a person).
 *
 * An answer is remembered under the question's key, which the server
 * cannot steer ("passphrase:FILE", "password:USER@HOST",
 * "keyboard-interactive:USER@HOST:N"), together with the exact text that
 * was shown. It is given again only to the same key with the same text: a
 * server that changes its prompt on reconnect ("Password:" became "Enter
 * the code sent to your phone:") gets no remembered answer, because the
 * user never saw that question. Prompts reach the terminal already made
 * printable by mux (server text sanitised as OpenSSH does).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "proxy/internal.h"

#define ASK_CACHE 16

static struct {
	char *key, *prompt, *answer;
} cache[ASK_CACHE];

static void wipe_free(char *p)
{
	if (!p)
		return;
	volatile char *v = p;
	while (*v)
		*v++ = 0;
	free(p);
}

static int cache_find(const char *key)
{
	for (int i = 0; i < ASK_CACHE; i++)
		if (cache[i].key && strcmp(cache[i].key, key) == 0)
			return i;
	return -1;
}

static void cache_drop(int i)
{
	wipe_free(cache[i].answer);
	free(cache[i].key);
	free(cache[i].prompt);
	cache[i].answer = cache[i].key = cache[i].prompt = NULL;
}

static void cache_put(const char *key, const char *prompt, const char *answer)
{
	int i = cache_find(key);
	if (i < 0)
		for (i = 0; i < ASK_CACHE && cache[i].key; i++)
			;
	if (i >= ASK_CACHE)
		return; /* full: this answer is simply not remembered */
	if (cache[i].key)
		cache_drop(i);
	cache[i].key = strdup(key);
	cache[i].prompt = strdup(prompt);
	cache[i].answer = strdup(answer);
	if (!cache[i].key || !cache[i].prompt || !cache[i].answer)
		cache_drop(i);
}

void px_ask_forget(void)
{
	for (int i = 0; i < ASK_CACHE; i++)
		cache_drop(i);
}

static int replay(const char *key, const char *prompt, char *buf, size_t cap)
{
	int i = cache_find(key);
	if (i < 0)
		return -1;
	if (strcmp(cache[i].prompt, prompt) != 0) {
		px_log(1, "the server's question for %s changed since it was answered; not "
			  "answering it with the remembered answer", key);
		return -1;
	}
	if (strlen(cache[i].answer) >= cap)
		return -1;
	strcpy(buf, cache[i].answer);
	return 0;
}

int px_ask(void *ctx, const char *key, const char *prompt, bool echo, char *buf, size_t cap)
{
	const bool *reconnecting = ctx;
	if (cap == 0)
		return -1;
	if (reconnecting && *reconnecting)
		return replay(key, prompt, buf, cap);
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
		volatile char *v = buf;
		while (*v)
			*v++ = 0;
		return -1;
	}
	cache_put(key, prompt, buf);
	return 0;
}
