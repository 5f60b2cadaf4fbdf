# tests/fuzz/fuzz.mk - libFuzzer targets (clang), included by the top Makefile.
#
#   make fuzz-build               build every target into build/fuzz/
#   make check-fuzz               fuzz each target FUZZ_SECONDS (30) on a scratch copy
#                                 of its corpus, then replay tests/fuzz/regressions/
#   make check-fuzz-regressions   only the replay (fast; for CI and unit runs)
#   make check-fuzz-pending       replay tests/fuzz/crashes-pending/ (known, unfixed)
#
# The library sources are compiled into build/fuzz/obj with the fuzzer's
# coverage instrumentation and ASan+UBSan, never into the normal build folder.
# Needs clang and its runtime, libclang-rt-NN-dev (NN: clang's major version; scripts/setup deps installs it).

FUZZ_CC      ?= clang
FUZZ_DIR     ?= build/fuzz
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := fuzz_batch_json fuzz_batch_plain fuzz_config fuzz_cidr fuzz_encode fuzz_merge \
                fuzz_jtree \
                fuzz_template fuzz_select
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)
FUZZ_LIB_OBJ := $(LIB_SRC:src/%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Iinclude
# Someone else's code must not stop the fuzz build over a clang-only warning.
FUZZ_LIB_WARN = $(filter-out -Werror,$(WARN))

.PHONY: fuzz-build check-fuzz check-fuzz-regressions check-fuzz-pending

fuzz-build: $(FUZZ_BINS)

$(FUZZ_DIR)/obj/%.o: src/%.c | $(FUZZ_DIR)/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_LIB_WARN) $(PKG_CFLAGS) -fsanitize=fuzzer-no-link \
		$(FUZZ_SAN) -MMD -MP -c -o $@ $<

$(FUZZ_BINS): $(FUZZ_DIR)/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(FUZZ_LIB_OBJ) \
		| $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(WARN) $(PKG_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) \
		-o $@ $< $(FUZZ_LIB_OBJ) $(PKG_LIBS) -lpthread -lm -ldl

$(FUZZ_DIR) $(FUZZ_DIR)/obj:
	mkdir -p $@

check-fuzz: fuzz-build
	@FUZZ_DIR=$(FUZZ_DIR) FUZZ_SECONDS=$(FUZZ_SECONDS) \
		bash tests/fuzz/run.sh fuzz $(FUZZ_TARGETS)

check-fuzz-regressions: fuzz-build
	@FUZZ_DIR=$(FUZZ_DIR) bash tests/fuzz/run.sh replay $(FUZZ_TARGETS)

check-fuzz-pending: fuzz-build
	@FUZZ_DIR=$(FUZZ_DIR) bash tests/fuzz/run.sh pending $(FUZZ_TARGETS)

-include $(wildcard $(FUZZ_DIR)/obj/*.d)
