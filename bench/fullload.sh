#!/usr/bin/env bash
# bench/fullload.sh: the full-load benchmark of issue 3, in one run on the
# same data and the same machine:
#
#   relay     per-table `psql -c "COPY t TO STDOUT (FORMAT binary)" |
#             psql -1 -c "TRUNCATE t" -c "COPY t FROM STDIN (FORMAT binary,
#             FREEZE)"`, JOBS tables at a time, into tables created
#             beforehand without indexes: the limit for moving the data
#   pgtide    `pgtide run local jobs=JOBS cdc=false --to vacuum` (preflight,
#             schema, full load, indexes and constraints, sequences, VACUUM
#             ANALYZE), then the rest of the run (the row-by-row count check)
#   pgcopydb  `pgcopydb clone --table-jobs JOBS --index-jobs JOBS`
#   floor     the largest table alone, as the relay copies it, then its
#             primary key and VACUUM ANALYZE: the critical path no clone
#             can beat, whatever it does with the other tables (one
#             table's COPY FREEZE runs in one target backend, and that
#             backend is CPU-bound; splitting a table across sessions
#             loses FREEZE and costs more than it gains, see docs/fullload.md)
#
# Each tool runs BENCH_REPEAT (default 5) times; medians are reported.
# Data: pgbench scale BENCH_SCALE (default 30) plus a wide table of
# BENCH_WIDE_ROWS (default 100000) rows of about 2 kB (jsonb + text).
# Prints a markdown table: data-phase throughput (source table bytes /
# seconds), whole-clone wall time, peak RSS, and the two ratios with
# their targets (data phase >= 0.95x the relay; clone <= 0.7x pgcopydb).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
pgtide=${PGTIDE:-$root/pgtide}
scale=${BENCH_SCALE:-30}
wide=${BENCH_WIDE_ROWS:-100000}
jobs=${BENCH_JOBS:-$(nproc)}
work=$(mktemp -d /tmp/pgtide-bench.XXXXXX)
chmod 755 "$work"
export PGPASSFILE=$work/pgpass

cleanup() {
  tests/lib/pgcluster.sh stop "$work/src" >/dev/null 2>&1 || true
  tests/lib/pgcluster.sh stop "$work/dst" >/dev/null 2>&1 || true
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "  $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# CPU ticks used so far by both clusters: each postmaster's own and its
# exited children's (backends), plus its live children's (checkpointer,
# walwriter, autovacuum, ...).  Linux /proc.
servers_cpu() {
  local t=0 pm c
  for d in "$work/src" "$work/dst"; do
    pm=$(head -1 "$d/data/postmaster.pid")
    t=$(( t + $(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat") ))
    for c in $(pgrep -P "$pm"); do
      t=$(( t + $(awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null || echo 0) ))
    done
  done
  echo "$t"
}
# core-seconds of servers (ticks c0..c1) plus the tool (its `time` file: rss user sys)
cpu_line() {
  awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" '{ printf "%.1f\n", (b - a) / hz + $2 + $3 }' "$3"
}

command -v pgcopydb >/dev/null || { echo "pgcopydb is not installed (apt-get install pgcopydb)" >&2; exit 2; }
[ -x "$pgtide" ] || { echo "no pgtide binary at $pgtide: run make" >&2; exit 2; }

conf=(--conf "max_wal_size = 8GB" --conf "checkpoint_timeout = 30min"
      --conf "shared_buffers = 256MB" --conf "maintenance_work_mem = 256MB")
src=$(tests/lib/pgcluster.sh start "$work/src" "${conf[@]}")
dst=$(tests/lib/pgcluster.sh start "$work/dst" "${conf[@]}")
psql "$src" -X -q -c "CREATE DATABASE bench"
S="$src dbname=bench"

log "generating pgbench scale $scale and $wide wide rows ..."
pgbench -i -q -s "$scale" "$S" >/dev/null 2>&1
psql "$S" -X -q <<SQL
CREATE TABLE wide (id bigint PRIMARY KEY, created timestamptz NOT NULL, doc jsonb NOT NULL, body text NOT NULL);
INSERT INTO wide
SELECT g, timestamptz '2024-01-01' + g * interval '1 minute',
       jsonb_build_object('id', g, 'tags', jsonb_build_array(md5(g::text), md5((g + 1)::text)),
                          'attrs', (SELECT jsonb_object_agg('k' || i, md5((g * 31 + i)::text))
                                      FROM generate_series(1, 16) i)),
       (SELECT string_agg(md5((g * 7 + i)::text), ' ') FROM generate_series(1, 28) i)
FROM generate_series(1, $wide) g;
CREATE INDEX wide_created ON wide (created);
VACUUM ANALYZE;
CHECKPOINT;
SQL
tables="pgbench_accounts wide pgbench_history pgbench_tellers pgbench_branches"
bytes=$(psql "$S" -X -A -t -c "SELECT sum(pg_table_size(c.oid)) FROM pg_class c
  WHERE c.relname IN ('pgbench_accounts', 'wide', 'pgbench_history', 'pgbench_tellers', 'pgbench_branches')")
rows=$(psql "$S" -X -A -t -c "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM wide)")
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.0f", b / 1048576 }')
log "source: $mb MB of table data, $rows rows; $jobs jobs"
# warm the source cache equally for everyone
for t in $tables; do psql "$S" -X -q -o /dev/null -c "SELECT count(*) FROM $t"; done

fresh_target() {
  psql "$dst" -X -q -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  psql "$dst" -X -q -c "CHECKPOINT"
}

check_rows() {
  local got
  got=$(psql "$dst dbname=$1" -X -A -t -c "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM wide)")
  [ "$got" = "$rows" ] || { echo "$2: target has $got rows, source $rows" >&2; exit 1; }
}

# Each tool runs BENCH_REPEAT times (default 5), in rotating order so
# that noise from other work on the machine spreads over all of them;
# the tables report the median of each measure.
run_relay() {
  fresh_target relay
  D="$dst dbname=relay"
  pg_dump --section=pre-data "$S" | psql "$D" -X -q -o /dev/null
  export S D
  local t0 t1
  t0=$(now)
  printf '%s\n' $tables | xargs -P "$jobs" -I{} bash -c \
    'psql "$S" -X -q -c "COPY {} TO STDOUT (FORMAT binary)" |
     psql "$D" -X -q -1 -c "TRUNCATE {}" -c "COPY {} FROM STDIN (FORMAT binary, FREEZE)"'
  t1=$(now)
  check_rows relay relay
  echo "$(elapsed "$t0" "$t1")" >> "$work/relay.data"
  log "relay: data $(tail -1 "$work/relay.data")s"
  psql "$dst" -X -q -c "DROP DATABASE relay"
}

run_floor() {
  fresh_target floor
  D="$dst dbname=floor"
  pg_dump --section=pre-data -t pgbench_accounts "$S" | psql "$D" -X -q -o /dev/null
  local t0 t1
  t0=$(now)
  psql "$S" -X -q -c "COPY pgbench_accounts TO STDOUT (FORMAT binary)" |
    psql "$D" -X -q -1 -c "TRUNCATE pgbench_accounts" -c "COPY pgbench_accounts FROM STDIN (FORMAT binary, FREEZE)"
  psql "$D" -X -q -c "SET maintenance_work_mem = '256MB'" -c "ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)" \
    -c "VACUUM (ANALYZE) pgbench_accounts"
  t1=$(now)
  echo "$(elapsed "$t0" "$t1")" >> "$work/floor.total"
  log "floor: $(tail -1 "$work/floor.total")s"
  psql "$dst" -X -q -c "DROP DATABASE floor"
}

run_pgtide() {
  fresh_target pgtide
  rm -rf "$work/pgtide-state"
  local t0 t1 t2 c0 c1 d args
  args=(run local source="$S" target="$dst dbname=pgtide" jobs="$jobs" cdc=false --state "$work/pgtide-state")
  # the clone (preflight .. vacuum), then pgtide's verification step on its own
  c0=$(servers_cpu)
  t0=$(now)
  /usr/bin/time -f "%M %U %S" -o "$work/pgtide.time" "$pgtide" "${args[@]}" --to vacuum > "$work/pgtide.log" 2>&1 \
    || { tail -30 "$work/pgtide.log" >&2; exit 1; }
  t1=$(now)
  c1=$(servers_cpu)
  "$pgtide" "${args[@]}" >> "$work/pgtide.log" 2>&1 || { tail -30 "$work/pgtide.log" >&2; exit 1; }
  t2=$(now)
  d=$(jq -r '.steps["full-load"].outputs.summary.copy_seconds' "$work/pgtide-state/state.json")
  awk -v s="$d" 'BEGIN { printf "%.1f\n", s }' >> "$work/pgtide.data"
  elapsed "$t0" "$t1" >> "$work/pgtide.core"; echo >> "$work/pgtide.core"
  elapsed "$t0" "$t2" >> "$work/pgtide.total"; echo >> "$work/pgtide.total"
  cpu_line "$c0" "$c1" "$work/pgtide.time" >> "$work/pgtide.cpu"
  awk '{ printf "%.0f\n", $1 / 1024 }' "$work/pgtide.time" >> "$work/pgtide.rss"
  check_rows pgtide pgtide
  log "pgtide: data $(tail -1 "$work/pgtide.data")s, clone $(tail -1 "$work/pgtide.core")s, cpu $(tail -1 "$work/pgtide.cpu") core-s"
  psql "$dst" -X -q -c "DROP DATABASE pgtide"
}

run_pgcopydb() {
  fresh_target pgcopydb
  rm -rf "$work/pgcopydb"
  local t0 t1
  t0=$(now)
  c0=$(servers_cpu)
  /usr/bin/time -f "%M %U %S" -o "$work/pgcopydb.time" pgcopydb clone --source "$S" --target "$dst dbname=pgcopydb" \
    --table-jobs "$jobs" --index-jobs "$jobs" --dir "$work/pgcopydb" > "$work/pgcopydb.log" 2>&1 \
    || { tail -30 "$work/pgcopydb.log" >&2; exit 1; }
  t1=$(now)
  c1=$(servers_cpu)
  elapsed "$t0" "$t1" >> "$work/pgcopydb.total"; echo >> "$work/pgcopydb.total"
  cpu_line "$c0" "$c1" "$work/pgcopydb.time" >> "$work/pgcopydb.cpu"
  awk '{ printf "%.0f\n", $1 / 1024 }' "$work/pgcopydb.time" >> "$work/pgcopydb.rss"
  check_rows pgcopydb pgcopydb
  log "pgcopydb: clone $(tail -1 "$work/pgcopydb.total")s, cpu $(tail -1 "$work/pgcopydb.cpu") core-s"
  psql "$dst" -X -q -c "DROP DATABASE pgcopydb"
}

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxof() { sort -n "$1" | tail -1; }

repeat=${BENCH_REPEAT:-5}
order=(relay pgtide pgcopydb floor)
for r in $(seq 1 "$repeat"); do
  log "round $r of $repeat"
  for k in 0 1 2 3; do
    tool=${order[$(( (k + r - 1) % 4 ))]}
    "run_$tool"
  done
done
relay_data=$(median "$work/relay.data")
pgtide_data=$(median "$work/pgtide.data")
pgtide_total=$(median "$work/pgtide.total")
pgtide_core=$(median "$work/pgtide.core")
pgtide_rss=$(maxof "$work/pgtide.rss")
pgcopydb_total=$(median "$work/pgcopydb.total")
pgcopydb_rss=$(maxof "$work/pgcopydb.rss")
floor_total=$(median "$work/floor.total")
pgtide_cpu=$(median "$work/pgtide.cpu")
pgcopydb_cpu=$(median "$work/pgcopydb.cpu")
pgcopydb_data=$(awk '/COPY \(cumulative\)/ { print $(NF - 1) }' "$work/pgcopydb.log" | head -1)

rate() { awk -v m="$mb" -v s="$1" 'BEGIN { printf "%.1f", m / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
data_ratio=$(ratio "$(rate "$pgtide_data")" "$(rate "$relay_data")")
clone_ratio=$(ratio "$pgtide_core" "$pgcopydb_total")
total_ratio=$(ratio "$pgtide_total" "$pgcopydb_total")
floor_ratio=$(ratio "$floor_total" "$pgcopydb_total")
floor_share=$(ratio "$floor_total" "$pgtide_core")
cpu_ratio=$(ratio "$pgtide_cpu" "$pgcopydb_cpu")
cpu_bound=$(awk -v w="$pgtide_cpu" -v n="$(nproc)" -v p="$pgcopydb_total" 'BEGIN { printf "%.2f", w / n / p }')
verdict() { awk -v r="$1" -v t="$2" -v d="$3" 'BEGIN { ok = (d == ">=") ? r >= t : r <= t; print ok ? "met" : "NOT met" }'; }

cat <<EOF
## Full load (issue 3)

Data: pgbench scale $scale + $wide rows of ~2 kB jsonb/text ($mb MB of table data, $rows rows in the two big tables); $jobs jobs; $(nproc) cores; both clusters on this machine. Median of $repeat rounds (tools in rotating order); peak RSS is the largest seen.

| tool | data phase (s) | data MB/s | whole clone (s) | CPU, servers + tool (core-s) | with verification (s) | peak RSS (MB) |
|---|---:|---:|---:|---:|---:|---:|
| psql COPY binary \| psql COPY FREEZE, per table (limit, data only) | $relay_data | $(rate "$relay_data") | - | - | - | - |
| pgtide run local cdc=false | $pgtide_data | $(rate "$pgtide_data") | $pgtide_core | $pgtide_cpu | $pgtide_total | $pgtide_rss |
| pgcopydb clone $(pgcopydb --version 2>/dev/null | awk '/version/ { print $3; exit }') | - | - | $pgcopydb_total | $pgcopydb_cpu | - | $pgcopydb_rss |
| floor: pgbench_accounts alone (relay COPY FREEZE + primary key + VACUUM ANALYZE) | - | - | $floor_total | - | - | - |

- data phase, pgtide vs the relay: **${data_ratio}x** the relay's throughput (target >= 0.95x: $(verdict "$data_ratio" 0.95 ">="))
- whole clone (schema, data, indexes, constraints, vacuum), pgtide vs pgcopydb: **${clone_ratio}x** pgcopydb's wall time (target <= 0.7x: $(verdict "$clone_ratio" 0.7 "<="))
- including pgtide's verification steps, which pgcopydb does not do: ${total_ratio}x
- CPU work of the whole clone (both servers and the tool): pgtide ${cpu_ratio}x pgcopydb's; spread perfectly over the $(nproc) cores it would take ${cpu_bound}x pgcopydb's wall time
- the floor (the largest table's own critical path, which every clone contains) is ${floor_ratio}x pgcopydb's wall time and ${floor_share}x pgtide's clone: a clone at 0.7x pgcopydb is possible on this machine only when the floor is well under 0.7x

Command: \`make bench\` (or \`BENCH=fullload bench/run.sh\`; BENCH_SCALE, BENCH_WIDE_ROWS, BENCH_JOBS).
pgtide's data phase runs from the start of its full-load step (planning included) until the last row is copied (index builds of finished tables overlap it); its clone is \`pgtide run local --to vacuum\` (preflight checks and schema verification included); its verification step (every row compared) runs afterwards and is counted only in the "with verification" column. pgcopydb's summary put its COPY phase at ${pgcopydb_data:-?} (cumulative over jobs, last round).
Per-round seconds: relay $(paste -sd' ' "$work/relay.data"); CPU core-s: pgtide $(paste -sd' ' "$work/pgtide.cpu"), pgcopydb $(paste -sd' ' "$work/pgcopydb.cpu"); floor $(paste -sd' ' "$work/floor.total"); pgtide data $(paste -sd' ' "$work/pgtide.data"), clone $(paste -sd' ' "$work/pgtide.core"), with verification $(paste -sd' ' "$work/pgtide.total"); pgcopydb clone $(paste -sd' ' "$work/pgcopydb.total").
EOF
