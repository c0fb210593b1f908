# pgtide: see README.md.  `make` builds ./pgtide; `make test` runs every test.
#
#   make            build ./pgtide (C11, -Wall -Wextra, zero warnings)
#   make deps       install missing Debian packages (vendor/deps.txt)
#   make test       deps + build + unit, Lua, REPL and integration tests
#   make asan       build with ASan+UBSan into build/asan (SANITIZE=1 does the same)
#   make asan-test  run the test suite against the sanitizer build
#   make demo       deps + build + a real migration between two local clusters
#   make test-faults  the fault suite at release strength (50 kills; docs/testing.md)
#   make bench      benchmarks (docs/benchmarks.md)
#   make fuzz       libFuzzer targets (clang); not part of `make test`
#   V=1             show full compile lines

PKGS     := lua5.4 libpq libcurl openssl libcjson expat libedit libmicrohttpd
SANITIZE ?=
ifeq ($(SANITIZE),1)
  BUILD  := build/asan
  SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  OPT    := -O1
else
  BUILD  := build/release
  SANFLAGS :=
  OPT    := -O2
endif

CC       ?= cc
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wno-format-nonliteral -Werror=implicit-function-declaration
CFLAGS   ?= $(OPT) -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -Isrc -I$(BUILD) $(WARN) $(CFLAGS) $(SANFLAGS) \
             -fstack-protector-strong $(PKG_CFLAGS) -MMD -MP
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -I$(shell pg_config --includedir 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS   := $(PKG_LIBS) -lpthread -lm -ldl
LDFLAGS  += $(SANFLAGS) -Wl,-E

VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# Every C file under src/ except main.c goes into one archive that the
# binary and the unit tests link against.
LIB_SRC  := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
EMBED    := $(shell find lua runbooks -type f \( -name '*.lua' -o -name '*.yaml' -o -name '*.json' -o -name '*.sql' \) | sort)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
CINT_SRC := $(sort $(wildcard tests/cintegration/test_*.c))
CINT_BIN := $(CINT_SRC:tests/cintegration/%.c=$(BUILD)/tests/cintegration/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
REPLAY_BIN := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=$(BUILD)/tests/replay_%)

ifeq ($(V),1)
  Q :=
else
  Q := @
endif

.PHONY: all deps test test-faults unit asan asan-test demo bench fuzz clean check-deps
ifeq ($(SANITIZE),1)
all: $(BUILD)/pgtide
else
all: pgtide
endif

deps:
	@./scripts/deps.sh

pgtide: $(BUILD)/pgtide
	@cp $< $@

$(BUILD)/pgtide: $(BUILD)/src/main.o $(BUILD)/libpgtide.a
	@echo "LD  $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libpgtide.a: $(LIB_OBJ) $(BUILD)/embedded.o
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/%.o: %.c | check-deps
	@mkdir -p $(dir $@)
	@echo "CC  $<"
	$(Q)$(CC) $(ALL_CFLAGS) -DPGTIDE_VERSION='"$(VERSION)"' -c -o $@ $<

$(BUILD)/embed: scripts/embed.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) -O1 -o $@ $<

$(BUILD)/embedded.c: $(BUILD)/embed $(EMBED)
	@echo "GEN $@"
	$(Q)$(BUILD)/embed $(EMBED) > $@.tmp && mv $@.tmp $@

$(BUILD)/embedded.o: $(BUILD)/embedded.c
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

# C tests that start PostgreSQL clusters (tests/cintegration/pgcluster.h)
$(BUILD)/tests/cintegration/%: tests/cintegration/%.c tests/unit/test.h $(wildcard tests/cintegration/*.h) \
    $(BUILD)/libpgtide.a
	@mkdir -p $(dir $@)
	@echo "CC  $<"
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/unit -Itests/cintegration -o $@ $< $(BUILD)/libpgtide.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/test.h $(BUILD)/libpgtide.a
	@mkdir -p $(dir $@)
	@echo "CC  $<"
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libpgtide.a $(LDFLAGS) $(LDLIBS)

# Each fuzz target is also built with a plain main() that replays its
# committed corpus (tests/fuzz/corpus/NAME) as part of `make test`.
$(BUILD)/tests/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(BUILD)/libpgtide.a
	@mkdir -p $(dir $@)
	@echo "CC  $<"
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< tests/fuzz/replay_main.c $(BUILD)/libpgtide.a $(LDFLAGS) $(LDLIBS)

unit: $(UNIT_BIN) $(CINT_BIN) $(REPLAY_BIN)

check-deps:
	@pkg-config --exists $(PKGS) || { echo "missing libraries: run 'make deps' (needs: $(PKGS))"; exit 2; }

test: deps
	@$(MAKE) --no-print-directory all unit
	@PGTIDE=$(CURDIR)/$(BUILD)/pgtide BUILD=$(BUILD) ./tests/run.sh $(TESTS)

test-faults: deps
	@$(MAKE) --no-print-directory all unit
	@FAULT_KILLS=$${FAULT_KILLS:-50} PGTIDE=$(CURDIR)/$(BUILD)/pgtide BUILD=$(BUILD) \
	  ./tests/run.sh test_faults test_crash_points test_managed_roles test_fullload

asan:
	@$(MAKE) --no-print-directory SANITIZE=1 all unit

asan-test: deps
	@$(MAKE) --no-print-directory SANITIZE=1 test

demo: deps
	@$(MAKE) --no-print-directory all
	@./scripts/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@./bench/run.sh

fuzz:
	@./tests/fuzz/run.sh $(FUZZ_SRC)

clean:
	rm -rf build pgtide

-include $(LIB_OBJ:.o=.d) $(BUILD)/src/main.d
