#!/usr/bin/env bash
# tests/run.sh: run every test group and print one summary line.
#
# Each test program prints lines "ok - NAME", "not ok - NAME" or
# "skip - NAME: REASON" on stdout; everything else it writes goes to
# build/.../test-logs/<file>.log.  A program that exits non-zero without
# reporting a failure counts as one failure.  Arguments select tests by
# substring of their path (e.g. tests/run.sh runbook repl).
#
# Environment: PGTIDE (the binary under test), BUILD (build directory).
set -u
cd "$(dirname "$0")/.."
root=$(pwd)
: "${BUILD:=build/release}"
: "${PGTIDE:=$root/$BUILD/pgtide}"
export PGTIDE BUILD
export PGTIDE_TEST_ROOT="$root"
export TEST_TMP="${TEST_TMP:-$(mktemp -d /tmp/pgtide-test.XXXXXX)}"
chmod 755 "$TEST_TMP"
export PGPASSFILE="$TEST_TMP/pgpass"
export LUA_PATH="$root/tests/lib/?.lua;;"
logdir="$root/$BUILD/test-logs"
mkdir -p "$logdir"  # per-file logs are overwritten; concurrent runs keep each other's
per_file_timeout="${TEST_TIMEOUT:-900}"

pass=0; fail=0; skip=0
failed_files=()

selected() {
  [ ${#FILTERS[@]} -eq 0 ] && return 0
  local f=$1
  for pat in "${FILTERS[@]}"; do
    case "$f" in *"$pat"*) return 0 ;; esac
  done
  return 1
}
FILTERS=("$@")

# run_one LABEL LOG CMD...: run a test program, count its result lines.
run_one() {
  local label=$1 log=$2; shift 2
  local out rc np nf ns start end
  start=$(date +%s)
  out=$(timeout --kill-after=10 "$per_file_timeout" "$@" 2>"$log"); rc=$?
  end=$(date +%s)
  printf '%s\n' "$out" >> "$log"
  np=$(grep -c '^ok - ' <<<"$out"); nf=$(grep -c '^not ok - ' <<<"$out"); ns=$(grep -c '^skip - ' <<<"$out")
  grep -E '^(not ok|skip) - ' <<<"$out" | sed 's/^/    /'
  if [ $rc -ne 0 ] && [ "$nf" -eq 0 ]; then
    nf=1
    [ $rc -eq 124 ] && echo "    not ok - $label: timed out after ${per_file_timeout}s" \
                    || echo "    not ok - $label: exited with status $rc"
  fi
  pass=$((pass + np)); fail=$((fail + nf)); skip=$((skip + ns))
  if [ "$nf" -gt 0 ]; then
    failed_files+=("$label")
    printf 'FAIL %-50s %3d ok %3d failed (%ds)  log: %s\n' "$label" "$np" "$nf" $((end - start)) "${log#$root/}"
    tail -n 25 "$log" | sed 's/^/    | /'
  else
    printf 'ok   %-50s %3d ok %3d skipped (%ds)\n' "$label" "$np" "$ns" $((end - start))
  fi
}

echo "== unit tests (C)"
for bin in "$BUILD"/tests/test_*; do
  [ -x "$bin" ] || continue
  [ -f "tests/unit/$(basename "$bin").c" ] || continue   # a stale binary of a moved test
  name="unit/$(basename "$bin")"
  selected "$name" || continue
  run_one "$name" "$logdir/$(basename "$bin").log" "$bin"
done

echo "== integration tests (C, with PostgreSQL clusters)"
for bin in "$BUILD"/tests/cintegration/test_*; do
  [ -x "$bin" ] || continue
  name="cintegration/$(basename "$bin")"
  selected "$name" || continue
  run_one "$name" "$logdir/$(basename "$bin").log" "$bin"
done

echo "== fuzz corpus replay"
for bin in "$BUILD"/tests/replay_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); name=${name#replay_}
  selected "fuzz/$name" || continue
  run_one "fuzz/$name" "$logdir/replay_$name.log" "$bin" "tests/fuzz/corpus/$name"
done

echo "== Lua tests"
for f in tests/lua/test_*.lua; do
  [ -f "$f" ] || continue
  selected "$f" || continue
  run_one "$f" "$logdir/$(basename "$f").log" "$PGTIDE" script "$f"
done

echo "== REPL transcripts"
for f in tests/repl/*.in; do
  [ -f "$f" ] || continue
  selected "$f" || continue
  run_one "$f" "$logdir/$(basename "$f").log" tests/repl/check.sh "$f"
done

echo "== integration tests"
for f in tests/integration/test_*; do
  [ -f "$f" ] || continue
  selected "$f" || continue
  case "$f" in
    *.lua) run_one "$f" "$logdir/$(basename "$f").log" "$PGTIDE" script "$f" ;;
    *.sh)  run_one "$f" "$logdir/$(basename "$f").log" bash "$f" ;;
  esac
done

# Last: no secret used by any test may appear in anything the suite wrote.
if selected "secrets"; then
  echo "== secret scan"
  run_one "secret-scan" "$logdir/secret-scan.log" tests/lib/secret_scan.sh "$TEST_TMP" "$logdir"
fi

# stop any cluster a crashed or timed-out test left behind
tests/lib/pgcluster.sh stop-all "$TEST_TMP"
[ "${KEEP_TEST_TMP:-0}" = 1 ] || rm -rf "$TEST_TMP" 2>/dev/null
echo
if [ ${#failed_files[@]} -gt 0 ]; then
  echo "failed: ${failed_files[*]}"
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
