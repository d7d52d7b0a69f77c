/*
 * Internal to mux/, pure (no libuv, no libssh2: built without their include
 * paths and unit-tested from tests/unit/test_namelist.c).
 *
 * SSH name-lists, as ssh's Ciphers, MACs, KexAlgorithms and
 * HostKeyAlgorithms take them: comma-separated names, optionally with one
 * leading '+' (append to the defaults), '-' (remove from the defaults,
 * wildcards allowed) or '^' (put first, then the defaults). algos.c feeds
 * the lists libssh2 reports at run time, so nothing here knows a version.
 */
#ifndef MUX_NAMELIST_H
#define MUX_NAMELIST_H

#include <stdbool.h>
#include <stddef.h>

/* Results of mux_nl_resolve and mux_nl_from_ssh. */
enum {
	MUX_NL_OK = 0,
	MUX_NL_SAME = 1,        /* from_ssh: ssh printed its baseline: use ours */
	MUX_NL_EBADNAME = -1,   /* a name matches nothing supported (in *bad) */
	MUX_NL_EEMPTY = -2,     /* the result would offer nothing */
	MUX_NL_ETOOLONG = -3,   /* does not fit the output buffer */
};

/* '*' any run, '?' one character; nocase folds ASCII letters. */
bool mux_nl_wildmatch(const char *s, size_t slen, const char *pat, size_t plen, bool nocase);

/* Whether LIST holds the name NAME[0..len) exactly. */
bool mux_nl_contains(const char *list, const char *name, size_t len);

/* Append NAME[0..len) to the comma-separated list OUT (*used bytes so
 * far, cap the buffer), NUL-terminated; -1 (OUT unchanged) when it does
 * not fit. */
int mux_nl_append(char *out, size_t cap, size_t *used, const char *name, size_t len);

/* Resolve SPEC the way ssh does against DEFAULTS (each a supported name),
 * checking every name against SUPPORTED:
 *   NULL or ""  DEFAULTS
 *   "a,b"       exactly a,b
 *   "+a,b"      DEFAULTS, then a,b
 *   "-a*,b"     DEFAULTS without the names matching any pattern
 *   "^a,b"      a,b, then DEFAULTS
 * Names in plain, + and ^ lists may be patterns, expanded against
 * SUPPORTED in its order; a name or pattern matching nothing supported is
 * MUX_NL_EBADNAME, with it copied to BAD. Duplicates are dropped. OUT gets
 * the plain list. */
int mux_nl_resolve(const char *spec, const char *defaults, const char *supported, char *out,
		   size_t cap, char *bad, size_t badcap);

/* What ssh -G printed (SSH_LIST, already resolved by ssh) against ssh's own
 * baseline for the option (BASELINE, what ssh -G prints when nothing sets
 * it). SSH_LIST equal to BASELINE: MUX_NL_SAME, OUT "" (use ftpssh's
 * defaults). Otherwise OUT is SSH_LIST's names this build SUPPORTS, in
 * ssh's order; a name missing from both BASELINE and SUPPORTED was asked
 * for by the user and is MUX_NL_EBADNAME (in BAD); baseline names the
 * build lacks are dropped quietly. */
int mux_nl_from_ssh(const char *ssh_list, const char *baseline, const char *supported,
		    char *out, size_t cap, char *bad, size_t badcap);

#endif
