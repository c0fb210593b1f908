#!/usr/bin/env bash
# bench/validate.sh: data validation cost against the full load, on pgbench.
#
# Two throwaway clusters; pgbench -i -s $SCALE (default 30) on the source;
# the data is cloned with `pgtide run local cdc=false` (the full-load engine)
# and, when that fails, with `pg_dump | psql` as a stated stand-in; then
# `pgtide validate --data-only` compares every row of every table.
# Reported, in one run: validation time / full-load time (the copy step, and
# the whole clone), and bytes received from both servers / the tables' size,
# against the targets (<= 0.5x the full-load time, <= 2% of the table bytes
# when the tables match).  A second validation after changing a few rows on
# the target shows the cost of narrowing differences down.
#
# Output: markdown on stdout (collected by bench/run.sh into docs).
# Environment: SCALE (30), JOBS (number of cores), KEEP=1 keeps the clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
SCALE=${SCALE:-30}
JOBS=${JOBS:-$(nproc)}
pgtide=${PGTIDE:-$root/pgtide}
work=$(mktemp -d /tmp/pgtide-bench-validate.XXXXXX)
chmod 755 "$work"
export PGPASSFILE=$work/pgpass
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    tests/lib/pgcluster.sh stop "$work/src" >/dev/null 2>&1 || true
    tests/lib/pgcluster.sh stop "$work/dst" >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
# JSON field reader (pgtide's own json module): jget FILE key.key...
cat > "$work/jget.lua" <<'LUA'
local json = require "json"
local f = assert(io.open(arg[1]))
local v = json.decode(f:read("a"))
f:close()
for k in arg[2]:gmatch("[^.]+") do v = type(v) == "table" and v[k] or nil end
print(v == nil and "" or tostring(v))
LUA
jget() { "$pgtide" script "$work/jget.lua" "$1" "$2"; }

conf=(--conf "max_wal_size = 4GB" --conf "checkpoint_timeout = 30min" --conf "shared_buffers = 512MB"
      --conf "maintenance_work_mem = 256MB")
src=$(tests/lib/pgcluster.sh start "$work/src" "${conf[@]}")
dst=$(tests/lib/pgcluster.sh start "$work/dst" "${conf[@]}")

echo "pgbench -i -s $SCALE on the source..." >&2
pgbench -i -q -s "$SCALE" "$src" >"$work/pgbench.log" 2>&1
psql "$src" -qAtX -c "VACUUM ANALYZE" >/dev/null
table_bytes=$(psql "$src" -qAtX -c "SELECT sum(pg_table_size(c.oid)) FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public'")
rows=$(psql "$src" -qAtX -c "SELECT count(*) FROM pgbench_accounts")

# ---- full load -------------------------------------------------------------
loader="pgtide run local cdc=false jobs=$JOBS"
t0=$(now)
if "$pgtide" run local "source=$src" "target=$dst" cdc=false "jobs=$JOBS" --yes \
     --state "$work/state" >"$work/load.log" 2>&1; then
  t1=$(now)
  load_total=$(elapsed "$t0" "$t1")
  # the copy step alone, from the state file
  load_copy=$(jget "$work/state/state.json" steps.full-load.seconds)
  [ -n "$load_copy" ] || load_copy=$load_total
else
  echo "pgtide run local failed (see below); using pg_dump | psql as a stand-in" >&2
  tail -5 "$work/load.log" >&2
  loader="pg_dump | psql (stand-in: the full-load engine failed)"
  psql "$dst" -qAtX -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public" >/dev/null
  t0=$(now)
  pg_dump "$src" | psql -qX "$dst" >/dev/null
  t1=$(now)
  load_total=$(elapsed "$t0" "$t1")
  load_copy=$load_total
fi

# ---- validation of equal databases ------------------------------------------
t0=$(now)
set +e
"$pgtide" validate --source "$src" --target "$dst" --data-only --jobs "$JOBS" --no-progress \
  --state "$work/vstate" --json "$work/equal.json" >"$work/validate-equal.out" 2>"$work/validate-equal.err"
code=$?
set -e
t1=$(now)
val_total=$(elapsed "$t0" "$t1")
[ $code -eq 0 ] || { echo "validation of equal databases exited $code" >&2; cat "$work/validate-equal.out" >&2; }
bsrc=$(jget "$work/equal.json" data.bytes_source)
btgt=$(jget "$work/equal.json" data.bytes_target)
vsec=$(jget "$work/equal.json" data.seconds)
bytes=$((bsrc + btgt))

# ---- validation after a few changes -----------------------------------------
psql "$dst" -qAtX -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (17, 1500000, 2999999);
  DELETE FROM pgbench_accounts WHERE aid = 42;
  INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, now())" >/dev/null
t0=$(now)
set +e
"$pgtide" validate --source "$src" --target "$dst" --data-only --jobs "$JOBS" --no-progress \
  --state "$work/vstate" --json "$work/diff.json" >"$work/validate-diff.out" 2>"$work/validate-diff.err"
dcode=$?
set -e
t1=$(now)
diff_total=$(elapsed "$t0" "$t1")
dbytes=$(( $(jget "$work/diff.json" data.bytes_source) + $(jget "$work/diff.json" data.bytes_target) ))

pct=$(awk -v b="$bytes" -v t="$table_bytes" 'BEGIN { printf "%.3f", 100 * b / t }')
dpct=$(awk -v b="$dbytes" -v t="$table_bytes" 'BEGIN { printf "%.3f", 100 * b / t }')
r_copy=$(ratio "$val_total" "$load_copy")
r_total=$(ratio "$val_total" "$load_total")
ok_time=$(awk -v r="$r_copy" 'BEGIN { print (r != "n/a" && r <= 0.5) ? "met" : "MISSED" }')
ok_bytes=$(awk -v p="$pct" 'BEGIN { print (p <= 2) ? "met" : "MISSED" }')

cat <<EOF
## Validation (bench/validate.sh)

pgbench scale $SCALE ($rows rows in pgbench_accounts, tables $(numfmt --to=iec "$table_bytes")B),
$JOBS jobs, source and target clusters on this machine.  Full load by: $loader.

| measure | value |
|---|---|
| full load: copy step | ${load_copy} s |
| full load: whole clone (schema, data, indexes, constraints) | ${load_total} s |
| validate --data-only, equal databases (exit $code) | ${val_total} s (comparison itself $(printf '%.2f' "$vsec") s) |
| validation / full-load copy step | **${r_copy}x** (target <= 0.5x: $ok_time) |
| validation / whole clone | ${r_total}x |
| bytes received from both servers, equal databases | $(numfmt --to=iec "$bytes")B = **${pct}%** of table bytes (target <= 2%: $ok_bytes) |
| validate after 4 changed rows + 1 extra history row (exit $dcode) | ${diff_total} s, $(numfmt --to=iec "$dbytes")B received (${dpct}%) |

Differences found in the second run:

\`\`\`
$(grep -E "^(Data|  )" "$work/validate-diff.out" | head -12)
\`\`\`

Command: \`SCALE=$SCALE JOBS=$JOBS bench/validate.sh\` (or \`make bench\`).
EOF
