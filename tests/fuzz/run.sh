#!/usr/bin/env bash
# make fuzz: build each tests/fuzz/fuzz_NAME.c with clang's libFuzzer and
# ASan/UBSan and run it for FUZZ_SECONDS (default 120) on its corpus in
# tests/fuzz/corpus/NAME/, which grows with what the fuzzer finds.
# Not part of `make test` (which replays the committed corpus instead).
# Needs clang and libclang-rt-14-dev (apt-get install clang libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-120}
command -v clang >/dev/null || { echo "make fuzz needs clang (apt-get install clang libclang-rt-14-dev)"; exit 2; }
pkgs="lua5.4 libpq libcurl openssl libcjson expat libedit"
lib_src=$(find src -name '*.c' ! -name main.c ! -name '*_lua.c' ! -path 'src/host/*' | sort)
mkdir -p build/fuzz
for target in "$@"; do
  name=$(basename "$target" .c); name=${name#fuzz_}
  echo "== fuzzing $name for ${seconds}s"
  clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Isrc \
    $(pkg-config --cflags $pkgs) -I"$(pg_config --includedir)" \
    "$target" $lib_src -o "build/fuzz/$name" $(pkg-config --libs $pkgs) -lpthread -lm
  mkdir -p "tests/fuzz/corpus/$name"
  (cd build/fuzz && ./"$name" -max_total_time="$seconds" -max_len=65536 \
     "../../tests/fuzz/corpus/$name")
  echo "== minimising the $name corpus"
  tmp=$(mktemp -d)
  (cd build/fuzz && ./"$name" -merge=1 -use_counters=0 -use_cmp=0 "$tmp" "../../tests/fuzz/corpus/$name" >/dev/null 2>&1)
  rm -rf "tests/fuzz/corpus/$name"; mv "$tmp" "tests/fuzz/corpus/$name"
  echo "corpus: $(ls "tests/fuzz/corpus/$name" | wc -l) files"
done
