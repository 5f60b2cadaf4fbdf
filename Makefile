# fanoutd - plain Makefile; pkg-config finds libmicrohttpd, libcurl, jansson, libidn2 and zlib.
#
#   make            build ./fanoutd
#   make test       unit tests, integration tests, public acceptance suite
#   make check-unit | check-integration | check-acceptance
#   make clean

CC      ?= cc
PKGS    := libmicrohttpd libcurl jansson libidn2 zlib
# Evaluated when used, so `make clean` works without the libraries.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wformat=2 -Wno-format-nonliteral
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Iinclude $(PKG_CFLAGS) -MMD -MP
LDLIBS  = $(PKG_LIBS) -lpthread -lm

BUILD   ?= build
BIN     ?= fanoutd
LIB_SRC := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_OBJ := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%.o)

ACCEPTANCE ?= ../shared/acceptance/run.sh

PHONY_SAN := check-asan check-tsan check-valgrind
.PHONY: all clean test check $(PHONY_SAN) check-unit check-integration check-acceptance sample-config \
        install uninstall deb

PREFIX  ?= /usr/local
DESTDIR ?=
# systemd's unit directory: /lib/systemd/system on Debian 12, /usr/lib/... on 13.
UNITDIR ?= $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
SYSCONFDIR ?= /etc

all: $(BIN)

$(BIN): $(BUILD)/main.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/unit/%.o: tests/unit/%.c | $(BUILD)/unit
	$(CC) $(ALL_CFLAGS) -Itests/unit -c -o $@ $<

$(BUILD)/unit_tests: $(UNIT_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD) $(BUILD)/unit $(BUILD)/alloc:
	mkdir -p $@

# Allocation failure injection: our objects linked with a failing allocator.
WRAP_ALLOC := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
$(BUILD)/alloc/%.o: tests/alloc/%.c | $(BUILD)/alloc
	$(CC) $(ALL_CFLAGS) -Itests/alloc -c -o $@ $<

$(BUILD)/alloc_tests: $(BUILD)/alloc/test_alloc.o $(BUILD)/alloc/alloc_shim.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(WRAP_ALLOC) $(LDLIBS)

# The daemon with the failing allocator (FO_FAIL_EVERY, FO_FAIL_AFTER_MS).
$(BUILD)/fanoutd-failmalloc: $(BUILD)/main.o $(BUILD)/alloc/alloc_shim.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(WRAP_ALLOC) $(LDLIBS)

check-unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

check-integration: fanoutd
	python3 tests/integration/run.py

check-acceptance: fanoutd
	@if [ -x "$(ACCEPTANCE)" ]; then FANOUTD=./fanoutd "$(ACCEPTANCE)"; \
	else echo "acceptance suite not found at $(ACCEPTANCE); skipped"; fi

# Every suite runs even if an earlier one failed; the summary line counts all.
test check: fanoutd $(BUILD)/unit_tests $(BUILD)/alloc_tests $(BUILD)/fanoutd-failmalloc
	@bash tests/run-all.sh

# The whole suite against sanitizer builds (each in its own build folder).
# The service suite is left out: it builds and installs the normal binary.
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=undefined
TSAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
SAN_ENV    := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86 \
              LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0 \
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
              TSAN_OPTIONS=halt_on_error=0:exitcode=86:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/sanitizers/tsan.supp

check-asan:
	$(MAKE) -s BUILD=build/asan BIN=build/asan/fanoutd CFLAGS="$(ASAN_FLAGS)" \
		LDFLAGS="-fsanitize=address,undefined" build/asan/fanoutd build/asan/unit_tests \
		build/asan/alloc_tests build/asan/fanoutd-failmalloc
	@$(SAN_ENV) FANOUTD=build/asan/fanoutd UNIT_TESTS=build/asan/unit_tests \
		ALLOC_TESTS=build/asan/alloc_tests FAILMALLOC=build/asan/fanoutd-failmalloc \
		SKIP="clang service fuzz" SANITIZER=asan bash tests/run-all.sh

# Integration and robustness tests with every daemon under valgrind memcheck.
check-valgrind: fanoutd
	@bash tests/valgrind.sh

check-tsan:
	$(MAKE) -s BUILD=build/tsan BIN=build/tsan/fanoutd CFLAGS="$(TSAN_FLAGS)" \
		LDFLAGS="-fsanitize=thread" build/tsan/fanoutd build/tsan/unit_tests
	@$(SAN_ENV) FANOUTD=build/tsan/fanoutd UNIT_TESTS=build/tsan/unit_tests SKIP_ALLOC=1 \
		SKIP="clang service fuzz" SANITIZER=tsan bash tests/run-all.sh

# Regenerates config/fanoutd.conf from the configuration table (a unit
# test fails when the two differ).
sample-config: $(BUILD)/unit_tests
	$(BUILD)/unit_tests --print-sample-config > config/fanoutd.conf

# The style in .clang-format (clang-format 14, as Debian ships it).
# format-check fails on any difference and prints where; format rewrites.
CLANG_FORMAT ?= clang-format
FORMAT_SRC = $(wildcard src/*.c include/*.h tests/unit/*.c)
.PHONY: format format-check
format-check:
	$(CLANG_FORMAT) --style=file --dry-run --Werror $(FORMAT_SRC)

format:
	$(CLANG_FORMAT) --style=file -i $(FORMAT_SRC)

install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/fanoutd
	sed 's|/usr/local/|$(PREFIX)/|g' systemd/fanoutd.service > $(BUILD)/fanoutd.service
	install -D -m 0644 $(BUILD)/fanoutd.service $(DESTDIR)$(UNITDIR)/fanoutd.service
	install -D -m 0644 systemd/fanoutd.socket $(DESTDIR)$(UNITDIR)/fanoutd.socket
	install -D -m 0644 systemd/fanoutd-unix.socket $(DESTDIR)$(UNITDIR)/fanoutd-unix.socket
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/fanoutd/README.md
	install -D -m 0644 docs/API.md $(DESTDIR)$(PREFIX)/share/doc/fanoutd/API.md
	install -D -m 0644 docs/INTERNALS.md $(DESTDIR)$(PREFIX)/share/doc/fanoutd/INTERNALS.md
	install -D -m 0644 docs/PERFORMANCE.md $(DESTDIR)$(PREFIX)/share/doc/fanoutd/PERFORMANCE.md
	install -D -m 0644 man/fanoutd.8 $(DESTDIR)$(PREFIX)/share/man/man8/fanoutd.8
	install -D -m 0644 man/fanoutd.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/fanoutd.conf.5
	@# An existing configuration is never overwritten.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/fanoutd/fanoutd.conf ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/fanoutd/fanoutd.conf"; \
	else install -D -m 0644 config/fanoutd.conf $(DESTDIR)$(SYSCONFDIR)/fanoutd/fanoutd.conf; fi

# A Debian package built with dpkg-deb (see scripts/mkdeb).
deb: $(BIN)
	scripts/mkdeb $(BUILD) .

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/fanoutd $(DESTDIR)$(UNITDIR)/fanoutd.service \
		$(DESTDIR)$(UNITDIR)/fanoutd.socket $(DESTDIR)$(UNITDIR)/fanoutd-unix.socket
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/fanoutd
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/fanoutd.8 $(DESTDIR)$(PREFIX)/share/man/man5/fanoutd.conf.5
	@echo "left $(DESTDIR)$(SYSCONFDIR)/fanoutd/fanoutd.conf in place"

clean:
	rm -rf build fanoutd

-include $(wildcard $(BUILD)/*.d $(BUILD)/unit/*.d $(BUILD)/alloc/*.d)

# Benchmarks against the peers in ../shared/bench (not part of make test).
bench:
	bash bench/run.sh

bench-scaling: fanoutd
	python3 bench/scaling.py

bench-v2: fanoutd
	python3 bench/v2.py

# Ten minutes of mixed good and faulty batches at ~70% of capacity; RSS,
# descriptors and threads must stay flat (SOAK_SECONDS to change).
soak: fanoutd
	python3 tests/soak.py

.PHONY: bench bench-scaling bench-v2 soak

# Fuzzing (libFuzzer, clang): see tests/fuzz/fuzz.mk.
-include tests/fuzz/fuzz.mk
