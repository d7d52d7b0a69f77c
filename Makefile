# ftpssh: one GNU Makefile. `make V=1` shows the commands.
#
# Targets: all check check-valgrind fuzz fuzz-regress bench soak-rekey demo install
#          uninstall clean distclean
# LIBSSH2=system|bundled: which libssh2 to link (see below)
# Builds: build/       release (-O2 -g)
#         build/asan/  the same sources under ASan+UBSan, used by `make check`

VERSION := 0.1.0
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR  ?= $(PREFIX)/share/doc/ftpssh
DESTDIR ?=
DOCS    := docs/ftpssh.env.example docs/USAGE.md docs/TROUBLESHOOTING.md docs/ARCHITECTURE.md

CC      ?= cc
PKG_CONFIG ?= pkg-config
# Run Debian's own python for tests: it is the one python3-pytest and
# python3-pyftpdlib install into, whatever python3 is first on PATH.
PYTHON  ?= /usr/bin/python3

ifeq ($(V),1)
Q :=
else
Q := @
endif

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla
STD     := -std=c11 -D_GNU_SOURCE
OPT     ?= -O2 -g
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# libssh2 >= 1.11 (rsa-sha2, certificates, etm MACs, GCM, ChaCha20, strict
# kex). LIBSSH2=bundled (the default, on every system) builds Debian 13's
# libssh2 source package plus scripts/libssh2/patches/ into build/libssh2
# with scripts/libssh2/build and links it statically: the patches are
# where the speed is (bulk crypt, concurrent channel opens, windows sized
# by the measured round trip). LIBSSH2=system links pkg-config's libssh2
# (1.11 or newer, for packagers): it works, slower, and ftpssh -v says so.
LIBSSH2 ?= bundled
SSH2_DIR := build/libssh2
ifeq ($(LIBSSH2),bundled)
SSH2_STAMP  := $(SSH2_DIR)/.stamp
SSH2_CFLAGS := -I$(SSH2_DIR)/include
SSH2_LIBS    = $(SSH2_DIR)/lib/libssh2.a $(shell $(PKG_CONFIG) --libs libcrypto zlib)
else ifeq ($(LIBSSH2),system)
SSH2_STAMP  :=
SSH2_CFLAGS  = $(shell $(PKG_CONFIG) --cflags libssh2)
SSH2_LIBS    = $(shell $(PKG_CONFIG) --libs libssh2)
else
$(error LIBSSH2=$(LIBSSH2): use LIBSSH2=system or LIBSSH2=bundled)
endif

# ftpparse is compiled WITHOUT the libuv/libssh2 include paths: the build
# proves it stays pure.
PURE_CFLAGS := $(STD) $(WARN) -DFTPSSH_VERSION='"$(VERSION)"'
# libcrypto (OpenSSL, which libssh2 links anyway): HMAC-SHA1 for hashed
# known_hosts names and their salts (mux/hostkey.c).
DEP_CFLAGS   = $(SSH2_CFLAGS) $(shell $(PKG_CONFIG) --cflags libuv libcrypto) -DFTPSSH_LIBSSH2_BUILD='"$(LIBSSH2)"'
DEP_LIBS     = $(SSH2_LIBS) $(shell $(PKG_CONFIG) --libs libuv libcrypto)
CRYPTO_LIBS  = $(shell $(PKG_CONFIG) --libs libcrypto)

FP_SRC  := $(wildcard ftpparse/*.c)
MUX_SRC := $(wildcard mux/*.c)
PX_SRC  := $(wildcard proxy/*.c)
# The pure part of mux (known_hosts lines, SSH name-lists): built like
# ftpparse, without libuv/libssh2 include paths, and unit-tested.
MUX_PURE := mux/knownhosts.c mux/namelist.c mux/sftp_wire.c
MUX_PURE_H := mux/knownhosts.h mux/namelist.h mux/sftp_wire.h

define objs
$(patsubst %.c,$(1)/%.o,$(2))
endef

REL := build
ASN := build/asan

.PHONY: all asan check check-valgrind system-build unit fuzz fuzz-regress bench demo soak-rekey \
	install uninstall clean distclean deps deps-test deps-fuzz deps-valgrind

all: $(REL)/ftpssh

asan: $(ASN)/ftpssh

# --- object rules -------------------------------------------------------
$(REL)/ftpparse/%.o: ftpparse/%.c $(wildcard ftpparse/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(PURE_CFLAGS) $(OPT) $(CFLAGS) -c $< -o $@

$(ASN)/ftpparse/%.o: ftpparse/%.c $(wildcard ftpparse/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(PURE_CFLAGS) -O1 -g $(SAN) $(CFLAGS) -c $< -o $@

# The bundled libssh2: scripts/libssh2/build does nothing when the installed
# copy matches the script and patches. A file named after the choice makes
# objects rebuild when LIBSSH2 changes. build/libssh2-patches.list holds the
# list of patch names, rewritten only when it changes, so that removing or
# renaming a patch rebuilds too.
SSH2_PATCHES := $(sort $(wildcard scripts/libssh2/patches/*.patch))
SSH2_PLIST   := build/libssh2-patches.list
$(shell mkdir -p build && echo '$(notdir $(SSH2_PATCHES))' | cmp -s - $(SSH2_PLIST) || \
	echo '$(notdir $(SSH2_PATCHES))' > $(SSH2_PLIST))
$(SSH2_DIR)/.stamp: scripts/libssh2/build $(SSH2_PLIST) $(SSH2_PATCHES)
	@$(if $(Q),echo "  LIBSSH2 $(SSH2_DIR) (Debian 13 source package)")
	$(Q)scripts/libssh2/build $(SSH2_DIR) && touch $@

$(REL)/.libssh2-$(LIBSSH2): $(SSH2_STAMP)
	@mkdir -p $(REL)
	$(Q)rm -f $(REL)/.libssh2-*; touch $@

SSH2_SEL := $(REL)/.libssh2-$(LIBSSH2)

$(patsubst %.c,$(REL)/%.o,$(MUX_PURE)): $(REL)/%.o: %.c $(MUX_PURE_H)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(PURE_CFLAGS) -I. $(OPT) $(CFLAGS) -c $< -o $@

$(patsubst %.c,$(ASN)/%.o,$(MUX_PURE)): $(ASN)/%.o: %.c $(MUX_PURE_H)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(PURE_CFLAGS) -I. -O1 -g $(SAN) $(CFLAGS) -c $< -o $@

$(REL)/%.o: %.c $(wildcard */*.h) $(SSH2_SEL)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(PURE_CFLAGS) $(DEP_CFLAGS) -I. $(OPT) $(CFLAGS) -c $< -o $@

$(ASN)/%.o: %.c $(wildcard */*.h) $(SSH2_SEL)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(PURE_CFLAGS) $(DEP_CFLAGS) -I. -O1 -g $(SAN) -DFTPSSH_DEBUG_LOOP_CLOSE $(CFLAGS) -c $< -o $@

# --- binaries -----------------------------------------------------------
$(REL)/ftpssh: $(call objs,$(REL),$(FP_SRC) $(MUX_SRC) $(PX_SRC))
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(OPT) $(LDFLAGS) -o $@ $^ $(DEP_LIBS)

$(ASN)/ftpssh: $(call objs,$(ASN),$(FP_SRC) $(MUX_SRC) $(PX_SRC))
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(DEP_LIBS)

# Unit tests: cmocka, pure modules only (ftpparse and the pure mux files:
# known_hosts, name lists, the SFTP packet codec).
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_REL := $(patsubst tests/unit/%.c,$(REL)/tests/%,$(UNIT_SRC))
UNIT_ASN := $(patsubst tests/unit/%.c,$(ASN)/tests/%,$(UNIT_SRC))

# libcrypto: the known_hosts tests check hashed names with a real HMAC.
$(REL)/tests/test_%: tests/unit/test_%.c $(call objs,$(REL),$(FP_SRC) $(MUX_PURE))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(PURE_CFLAGS) -I. $(OPT) $(CFLAGS) -o $@ $^ -lcmocka $(CRYPTO_LIBS)

$(ASN)/tests/test_%: tests/unit/test_%.c $(call objs,$(ASN),$(FP_SRC) $(MUX_PURE))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(PURE_CFLAGS) -I. -O1 -g $(SAN) $(CFLAGS) -o $@ $^ -lcmocka $(CRYPTO_LIBS)

unit: $(UNIT_REL) $(UNIT_ASN)
	$(Q)for t in $^; do echo "== $$t"; $$t || exit 1; done

# --- fuzzing (clang + libFuzzer) ----------------------------------------
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FP_SRC) $(MUX_PURE) $(wildcard ftpparse/*.h $(MUX_PURE_H) tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ-LD $@")
	$(Q)$(FUZZ_CC) $(STD) -g -O1 -I. -fsanitize=fuzzer,address,undefined -o $@ $< $(FP_SRC) $(MUX_PURE)

fuzz: deps-fuzz $(FUZZ_TARGETS)
	$(Q)for t in $(FUZZ_TARGETS); do n=$$(basename $$t); mkdir -p build/fuzz/corpus-$$n; \
	  echo "== $$n for $(FUZZ_SECONDS)s"; \
	  $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus-$$n tests/corpus/$$n || exit 1; done

# Regression: run the stored corpus through each target once.
fuzz-regress: $(FUZZ_TARGETS)
	$(Q)for t in $(FUZZ_TARGETS); do n=$$(basename $$t); echo "== $$n corpus"; \
	  $$t -runs=0 tests/corpus/$$n || exit 1; done

# --- tests ---------------------------------------------------------------
deps:
	$(Q)scripts/install-deps build

deps-test:
	$(Q)scripts/install-deps test

deps-fuzz:
	$(Q)scripts/install-deps fuzz

deps-valgrind:
	$(Q)scripts/install-deps valgrind

check: deps-test deps-fuzz
	$(Q)$(MAKE) --no-print-directory all asan $(UNIT_REL) $(UNIT_ASN) $(FUZZ_TARGETS) $(RELAY_BIN)
	$(Q)$(MAKE) --no-print-directory system-build
	$(Q)PYTHON=$(PYTHON) tests/run-all

# The packagers' variant (LIBSSH2=system: Debian 12's libssh2 1.10, none
# of our patches) in a build directory of its own, so that `make check`
# catches code that no longer compiles without the patches' macros;
# tests/integration/test_system_build.py runs it.
system-build:
	$(Q)$(MAKE) --no-print-directory LIBSSH2=system REL=build/system build/system/ftpssh

# 64 MiB transfers take ~25 s each under memcheck: the size matrix is cut.
check-valgrind: deps-test deps-valgrind all $(UNIT_REL)
	$(Q)PYTHON=$(PYTHON) FTPSSH_TEST_SIZES=$${FTPSSH_TEST_SIZES:-0,1,1M} FTPSSH_WRAP="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite -q" \
	  FTPSSH_BIN=$(REL)/ftpssh tests/run-all

# Benchmark helper: libssh2's own one-channel ceiling (bench/README.md).
$(REL)/bench/ssh_reader: bench/ssh_reader.c $(SSH2_SEL)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(PURE_CFLAGS) $(SSH2_CFLAGS) $(OPT) $(CFLAGS) $(LDFLAGS) -o $@ $< \
	  $(SSH2_LIBS)

# The long link of test_window, test_delay_relay and bench row 1: a TCP
# relay that delays each direction (tests/harness/relay.py starts it).
# Plain POSIX, no libuv/libssh2: built like ftpparse.
RELAY_BIN := $(REL)/tests/delay_relay
$(RELAY_BIN): tests/harness/delay_relay.c tests/harness/delay_link.c tests/harness/delay_link.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(PURE_CFLAGS) $(OPT) $(CFLAGS) $(LDFLAGS) -o $@ $(filter %.c,$^) -lm

# Re-key soak (issue 12): the time-RekeyLimit test ten times, 20 s each.
soak-rekey: deps-test all asan
	$(Q)FTPSSH_SOAK=1 FTPSSH_REKEY_SECONDS=$${FTPSSH_REKEY_SECONDS:-20} \
	  $(PYTHON) -m pytest tests/integration/test_rekey.py -q -s -p no:cacheprovider -k soak

bench: deps-test all $(REL)/bench/ssh_reader $(RELAY_BIN)
	$(Q)PYTHON=$(PYTHON) bench/run

demo: deps-test all
	$(Q)PYTHON=$(PYTHON) scripts/demo

# --- install -------------------------------------------------------------
# The binary, ftpssh(1), the example systemd unit (its ExecStart pointed at
# $(BINDIR)) and, as documentation, the unit's example env file and the
# guides. Nothing is enabled or started: see docs/USAGE.md.
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) \
	  $(DESTDIR)$(DOCDIR)
	install -m 755 $(REL)/ftpssh $(DESTDIR)$(BINDIR)/ftpssh
	install -m 644 docs/ftpssh.1 $(DESTDIR)$(MANDIR)/man1/ftpssh.1
	sed 's|/usr/local/bin/ftpssh|$(BINDIR)/ftpssh|' docs/ftpssh@.service \
	  > $(DESTDIR)$(UNITDIR)/ftpssh@.service
	chmod 644 $(DESTDIR)$(UNITDIR)/ftpssh@.service
	install -m 644 $(DOCS) $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ftpssh $(DESTDIR)$(MANDIR)/man1/ftpssh.1 \
	  $(DESTDIR)$(UNITDIR)/ftpssh@.service $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOCS)))
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true

# clean keeps the downloaded libssh2 source package (build/libssh2-dl), so
# building again needs no network; distclean removes it too.
clean:
	find build -mindepth 1 -maxdepth 1 ! -name libssh2-dl -exec rm -rf {} + 2>/dev/null || true

distclean:
	rm -rf build
