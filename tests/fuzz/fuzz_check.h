/*
 * Shared by the libFuzzer targets: CHECK aborts (which libFuzzer reports
 * with the input) when a property of the code under test does not hold.
 */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(x)                                                               \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #x);                                 \
			abort();                                               \
		}                                                              \
	} while (0)

#endif
