# fanoutd - plain Makefile; pkg-config finds libmicrohttpd, libcurl and jansson.
#
#   make            build ./fanoutd
#   make test       unit tests, integration tests, public acceptance suite
#   make check-unit | check-integration | check-acceptance
#   make clean

CC      ?= cc
PKGS    := libmicrohttpd libcurl jansson
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

.PHONY: all clean test check check-unit check-integration check-acceptance sample-config \
        install uninstall deb

PREFIX  ?= /usr/local
DESTDIR ?=
UNITDIR ?= /lib/systemd/system
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

$(BUILD) $(BUILD)/unit:
	mkdir -p $@

check-unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

check-integration: fanoutd
	python3 tests/integration/run.py

check-acceptance: fanoutd
	@if [ -x "$(ACCEPTANCE)" ]; then FANOUTD=./fanoutd "$(ACCEPTANCE)"; \
	else echo "acceptance suite not found at $(ACCEPTANCE); skipped"; fi

# Every suite runs even if an earlier one failed; the summary line counts all.
test check: fanoutd $(BUILD)/unit_tests
	@bash tests/run-all.sh

# Regenerates config/fanoutd.conf from the configuration table (a unit
# test fails when the two differ).
sample-config: $(BUILD)/unit_tests
	$(BUILD)/unit_tests --print-sample-config > config/fanoutd.conf

install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/fanoutd
	sed 's|/usr/local/|$(PREFIX)/|g' systemd/fanoutd.service > $(BUILD)/fanoutd.service
	install -D -m 0644 $(BUILD)/fanoutd.service $(DESTDIR)$(UNITDIR)/fanoutd.service
	install -D -m 0644 systemd/fanoutd.socket $(DESTDIR)$(UNITDIR)/fanoutd.socket
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/fanoutd/README.md
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
		$(DESTDIR)$(UNITDIR)/fanoutd.socket
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/fanoutd
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/fanoutd.8 $(DESTDIR)$(PREFIX)/share/man/man5/fanoutd.conf.5
	@echo "left $(DESTDIR)$(SYSCONFDIR)/fanoutd/fanoutd.conf in place"

clean:
	rm -rf build fanoutd

-include $(wildcard $(BUILD)/*.d $(BUILD)/unit/*.d)
