#!/usr/bin/env bash
# make bench: run every benchmark in bench/ (fullload.sh, cdc.sh, validate.sh,
# in that order when present) and collect their markdown output in
# build/bench/results.md.  Benchmarks compare, in one run and as ratios,
# pgtide against the limit and the peers named in the issues; numbers go to
# docs/benchmarks.md with the command that produced them.  BENCH=name runs one.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/bench
out=build/bench/results.md
{
  echo "# Benchmark run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r);" \
       "PostgreSQL $(pg_config --version | awk '{print $2}'); pgtide $("${PGTIDE:-./pgtide}" version | head -1)"
  echo
} > "$out"
status=0
for name in fullload cdc validate; do
  script=bench/$name.sh
  [ -x "$script" ] || continue
  [ -n "${BENCH:-}" ] && [ "$BENCH" != "$name" ] && continue
  echo "== bench/$name.sh"
  if ! "$script" | tee -a "$out"; then
    echo "bench/$name.sh failed" | tee -a "$out"
    status=1
  fi
  echo >> "$out"
done
echo "results: $out"
exit $status
