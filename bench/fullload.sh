#!/usr/bin/env bash
# bench/fullload.sh: the full-load benchmarks of issues 3 and 14, on the
# same machine, each shape in one run:
#
#   shapes (BENCH_SHAPES, default "pgbench30 tables2000 pgbench100 toast"):
#     pgbench30   pgbench scale BENCH_SCALE (30) plus BENCH_WIDE_ROWS (100000)
#                 rows of about 2 kB jsonb/text: the issue 3 data
#     tables2000  BENCH_TABLES (2000) small tables of BENCH_TABLE_ROWS (200)
#                 rows, each with a primary key, an index and a foreign key
#                 to one shared parent table
#     pgbench100  pgbench scale 100 (1.5 GB)
#     toast       BENCH_TOAST_ROWS (200000) rows whose 2.1 kB text is stored
#                 out of line (STORAGE EXTERNAL: every row TOASTed)
#   tools, each shape:
#     pgtide      `pgtide run local jobs=JOBS cdc=false --to vacuum`: the clone
#                 (preflight, schema, full load, indexes and constraints,
#                 sequences, VACUUM ANALYZE), no verification
#     verified    `pgtide run local jobs=JOBS cdc=false`, the whole runbook:
#                 the same clone with every row of every table compared (the
#                 full load verifies each table once it and its indexes are
#                 loaded, while others copy; the count check what is left)
#     pgcopydb    `pgcopydb clone --table-jobs JOBS --index-jobs JOBS` (verifies
#                 nothing)
#   pgbench30 only, as before:
#     relay       per-table `psql COPY (FORMAT binary) TO STDOUT | psql COPY
#                 FROM STDIN (FREEZE)`, JOBS tables at a time, into tables
#                 created beforehand without indexes: the limit for moving data
#     floor       the largest table alone, as the relay copies it, then its
#                 primary key and VACUUM ANALYZE: a critical path no clone
#                 can beat (one table's COPY FREEZE runs in one backend)
#
# Each tool runs BENCH_REPEAT times per shape (5 for pgbench30, else
# BENCH_REPEAT_SCALE, default 3), tools in rotating order; medians are
# reported, with the 1-minute load average when each run started (the
# machine may be shared) and the largest peak RSS.  Prints markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
pgtide=${PGTIDE:-$root/pgtide}
shapes=${BENCH_SHAPES:-pgbench30 tables2000 pgbench100 toast}
scale=${BENCH_SCALE:-30}
wide=${BENCH_WIDE_ROWS:-100000}
ntables=${BENCH_TABLES:-2000}
table_rows=${BENCH_TABLE_ROWS:-200}
toast_rows=${BENCH_TOAST_ROWS:-200000}
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
load1() { awk '{ print $1 }' /proc/loadavg; }
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

fresh_target() {
  psql "$dst" -X -q -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  psql "$dst" -X -q -c "CHECKPOINT"
}

# {======================= data per shape =======================

gen_pgbench30() {
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
SQL
  check_sql="SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM wide)"
  desc="pgbench scale $scale + $wide rows of ~2 kB jsonb/text"
}

gen_tables2000() {
  psql "$S" -X -q <<SQL
CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 1000) g;
DO \$\$
BEGIN
  FOR i IN 1..$ntables LOOP
    EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, '
                   'v text, at timestamptz NOT NULL DEFAULT now())', i);
    EXECUTE format('CREATE INDEX ON t%s (parent_id)', i);
    EXECUTE format('INSERT INTO t%s (id, parent_id, v) SELECT g, 1 + g %% 1000, md5(g::text) '
                   'FROM generate_series(1, $table_rows) g', i);
  END LOOP;
END
\$\$;
SQL
  check_sql=$(psql "$S" -X -A -t -c "SELECT 'SELECT ' || string_agg(format('(SELECT count(*) FROM %I)', relname), ' + ')
    FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
  desc="$ntables tables of $table_rows rows, each with a primary key, an index and a foreign key"
}

gen_pgbench100() {
  pgbench -i -q -s 100 "$S" >/dev/null 2>&1
  check_sql="SELECT count(*) FROM pgbench_accounts"
  desc="pgbench scale 100"
}

gen_toast() {
  psql "$S" -X -q <<SQL
CREATE TABLE docs (id bigint PRIMARY KEY, kind int NOT NULL, body text NOT NULL);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO docs SELECT g, g % 7, (SELECT string_agg(md5((g * 67 + i)::text), '') FROM generate_series(1, 66) i)
  FROM generate_series(1, $toast_rows) g;
CREATE INDEX docs_kind ON docs (kind);
SQL
  check_sql="SELECT count(*) FROM docs"
  desc="$toast_rows rows of 2.1 kB text stored out of line (TOAST)"
}

# }==============================================================

check_rows() {   # database label
  local got
  got=$(psql "$dst dbname=$1" -X -A -t -c "$check_sql")
  [ "$got" = "$rows" ] || { echo "$2: target has $got rows, source $rows" >&2; exit 1; }
}

# Each run appends to $work/<tool>.<measure>: seconds, load at start,
# cpu, rss.  The target database is dropped afterwards.
record() {   # tool t0 t1 load
  elapsed "$2" "$3" >> "$work/$1.total"; echo >> "$work/$1.total"
  echo "$4" >> "$work/$1.load"
}

run_relay() {
  fresh_target relay
  local D="$dst dbname=relay" t0 t1 l
  pg_dump --section=pre-data "$S" | psql "$D" -X -q -o /dev/null
  export S D
  l=$(load1)
  t0=$(now)
  printf '%s\n' $tables | xargs -P "$jobs" -I{} bash -c \
    'psql "$S" -X -q -c "COPY {} TO STDOUT (FORMAT binary)" |
     psql "$D" -X -q -1 -c "TRUNCATE {}" -c "COPY {} FROM STDIN (FORMAT binary, FREEZE)"'
  t1=$(now)
  record relay "$t0" "$t1" "$l"
  log "relay: data $(tail -1 "$work/relay.total")s (load $l)"
  psql "$dst" -X -q -c "DROP DATABASE relay"
}

run_floor() {
  fresh_target floor
  local D="$dst dbname=floor" t0 t1 l
  pg_dump --section=pre-data -t pgbench_accounts "$S" | psql "$D" -X -q -o /dev/null
  l=$(load1)
  t0=$(now)
  psql "$S" -X -q -c "COPY pgbench_accounts TO STDOUT (FORMAT binary)" |
    psql "$D" -X -q -1 -c "TRUNCATE pgbench_accounts" -c "COPY pgbench_accounts FROM STDIN (FORMAT binary, FREEZE)"
  psql "$D" -X -q -c "SET maintenance_work_mem = '256MB'" -c "ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)" \
    -c "VACUUM (ANALYZE) pgbench_accounts"
  t1=$(now)
  record floor "$t0" "$t1" "$l"
  log "floor: $(tail -1 "$work/floor.total")s (load $l)"
  psql "$dst" -X -q -c "DROP DATABASE floor"
}

# pgtide: the clone (--to vacuum) or, as "verified", the whole runbook.
run_pgtide_as() {   # tool
  local tool=$1 db t0 t1 c0 c1 l d
  db=$tool
  fresh_target "$db"
  rm -rf "$work/$tool-state"
  local args=(run local source="$S" target="$dst dbname=$db" jobs="$jobs" cdc=false --state "$work/$tool-state")
  [ "$tool" = pgtide ] && args+=(--to vacuum)
  l=$(load1)
  c0=$(servers_cpu)
  t0=$(now)
  /usr/bin/time -f "%M %U %S" -o "$work/$tool.time" "$pgtide" "${args[@]}" > "$work/$tool.log" 2>&1 \
    || { tail -30 "$work/$tool.log" >&2; exit 1; }
  t1=$(now)
  c1=$(servers_cpu)
  record "$tool" "$t0" "$t1" "$l"
  d=$(jq -r '.steps["full-load"].outputs.summary.copy_seconds' "$work/$tool-state/state.json")
  awk -v s="$d" 'BEGIN { printf "%.1f\n", s }' >> "$work/$tool.data"
  cpu_line "$c0" "$c1" "$work/$tool.time" >> "$work/$tool.cpu"
  awk '{ printf "%.0f\n", $1 / 1024 }' "$work/$tool.time" >> "$work/$tool.rss"
  check_rows "$db" "$tool"
  log "$tool: data $(tail -1 "$work/$tool.data")s, whole $(tail -1 "$work/$tool.total")s, cpu $(tail -1 "$work/$tool.cpu") core-s (load $l)"
  psql "$dst" -X -q -c "DROP DATABASE $db"
}
run_pgtide() { run_pgtide_as pgtide; }
run_verified() { run_pgtide_as verified; }

run_pgcopydb() {
  fresh_target pgcopydb
  rm -rf "$work/pgcopydb"
  local t0 t1 c0 c1 l
  l=$(load1)
  c0=$(servers_cpu)
  t0=$(now)
  /usr/bin/time -f "%M %U %S" -o "$work/pgcopydb.time" pgcopydb clone --source "$S" --target "$dst dbname=pgcopydb" \
    --table-jobs "$jobs" --index-jobs "$jobs" --dir "$work/pgcopydb" > "$work/pgcopydb.log" 2>&1 \
    || { tail -30 "$work/pgcopydb.log" >&2; exit 1; }
  t1=$(now)
  c1=$(servers_cpu)
  record pgcopydb "$t0" "$t1" "$l"
  cpu_line "$c0" "$c1" "$work/pgcopydb.time" >> "$work/pgcopydb.cpu"
  awk '{ printf "%.0f\n", $1 / 1024 }' "$work/pgcopydb.time" >> "$work/pgcopydb.rss"
  check_rows pgcopydb pgcopydb
  log "pgcopydb: clone $(tail -1 "$work/pgcopydb.total")s, cpu $(tail -1 "$work/pgcopydb.cpu") core-s (load $l)"
  psql "$dst" -X -q -c "DROP DATABASE pgcopydb"
}

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxof() { sort -n "$1" | tail -1; }
runs() { paste -sd' ' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v t="$2" -v d="$3" 'BEGIN { ok = (d == ">=") ? r >= t : r <= t; print ok ? "met" : "NOT met" }'; }

echo "## Full load (issues 3 and 14)"
echo
echo "$(nproc) cores; both clusters on this machine; $jobs jobs. Medians of the rounds (tools in rotating order); \"load\" lists the 1-minute load average as each run started; peak RSS is the largest seen."

for shape in $shapes; do
  log "shape $shape: generating ..."
  psql "$src" -X -q -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
  S="$src dbname=bench"
  rm -f "$work"/*.total "$work"/*.load "$work"/*.data "$work"/*.cpu "$work"/*.rss
  "gen_$shape"
  psql "$S" -X -q -c "VACUUM ANALYZE" -c "CHECKPOINT"
  rows=$(psql "$S" -X -A -t -c "$check_sql")
  bytes=$(psql "$S" -X -A -t -c "SELECT sum(pg_table_size(c.oid)) FROM pg_class c JOIN pg_namespace n
    ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public'")
  mb=$(awk -v b="$bytes" 'BEGIN { printf "%.0f", b / 1048576 }')
  tables=$(psql "$S" -X -A -t -c "SELECT string_agg(relname, ' ' ORDER BY pg_table_size(oid) DESC) FROM pg_class
    WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
  # warm the source cache equally for everyone (the biggest tables)
  for t in $(echo "$tables" | tr ' ' '\n' | head -10); do psql "$S" -X -q -o /dev/null -c "SELECT count(*) FROM $t"; done
  log "source: $mb MB of table data, $rows rows counted"
  if [ "$shape" = pgbench30 ]; then
    order=(relay pgtide verified pgcopydb floor); repeat=${BENCH_REPEAT:-5}
  else
    order=(pgtide verified pgcopydb); repeat=${BENCH_REPEAT_SCALE:-3}
  fi
  n=${#order[@]}
  for r in $(seq 1 "$repeat"); do
    log "$shape: round $r of $repeat"
    for k in $(seq 0 $((n - 1))); do
      "run_${order[$(( (k + r - 1) % n ))]}"
    done
  done

  pg=$(median "$work/pgtide.total"); ver=$(median "$work/verified.total"); pcd=$(median "$work/pgcopydb.total")
  echo
  echo "### $shape: $desc ($mb MB of table data)"
  echo
  echo "| tool | whole run (s) | data phase (s) | CPU, servers + tool (core-s) | peak RSS (MB) | runs (s) | load at start |"
  echo "|---|---:|---:|---:|---:|---|---|"
  if [ "$shape" = pgbench30 ]; then
    echo "| relay (psql COPY binary \| psql COPY FREEZE, data only: the limit) | - | $(median "$work/relay.total") | - | - | $(runs "$work/relay.total") | $(runs "$work/relay.load") |"
  fi
  echo "| pgtide clone (\`--to vacuum\`, no verification) | $pg | $(median "$work/pgtide.data") | $(median "$work/pgtide.cpu") | $(maxof "$work/pgtide.rss") | $(runs "$work/pgtide.total") | $(runs "$work/pgtide.load") |"
  echo "| pgtide verified clone (whole runbook, every row compared) | $ver | $(median "$work/verified.data") | $(median "$work/verified.cpu") | $(maxof "$work/verified.rss") | $(runs "$work/verified.total") | $(runs "$work/verified.load") |"
  echo "| pgcopydb clone $(pgcopydb --version 2>/dev/null | awk '/version/ { print $3; exit }') (verifies nothing) | $pcd | - | $(median "$work/pgcopydb.cpu") | $(maxof "$work/pgcopydb.rss") | $(runs "$work/pgcopydb.total") | $(runs "$work/pgcopydb.load") |"
  if [ "$shape" = pgbench30 ]; then
    echo "| floor: pgbench_accounts alone (COPY FREEZE, primary key, VACUUM ANALYZE) | $(median "$work/floor.total") | - | - | - | $(runs "$work/floor.total") | $(runs "$work/floor.load") |"
  fi
  echo
  case "$shape" in
    pgbench30)
      x=$(ratio "$ver" "$pg"); echo "- verified clone / pgtide's own clone: **${x}x** (target <= 1.15x: $(verdict "$x" 1.15 "<="))"
      x=$(ratio "$ver" "$pcd"); echo "- verified clone / pgcopydb clone: **${x}x** (target <= 0.9x: $(verdict "$x" 0.9 "<="))"
      x=$(ratio "$pg" "$pcd"); echo "- pgtide clone / pgcopydb clone: **${x}x** (issue 3's target <= 0.7x: $(verdict "$x" 0.7 "<="))"
      rel=$(median "$work/relay.total"); dat=$(median "$work/pgtide.data")
      x=$(awk -v a="$rel" -v b="$dat" 'BEGIN { printf "%.2f", a / b }')
      echo "- data phase, pgtide vs the relay: **${x}x** the relay's throughput (issue 3's target >= 0.95x: $(verdict "$x" 0.95 ">="))" ;;
    *)
      x=$(ratio "$ver" "$pcd"); echo "- verified clone / pgcopydb clone: **${x}x** (target <= 1.0x: $(verdict "$x" 1.0 "<="))"
      x=$(ratio "$pg" "$pcd"); echo "- pgtide clone / pgcopydb clone: ${x}x" ;;
  esac
done
echo
echo "Command: \`make bench\` (or \`BENCH=fullload bench/run.sh\`; BENCH_SHAPES, BENCH_REPEAT, BENCH_REPEAT_SCALE, BENCH_SCALE, BENCH_WIDE_ROWS, BENCH_TABLES, BENCH_TABLE_ROWS, BENCH_TOAST_ROWS, BENCH_JOBS)."
echo "pgtide's data phase runs from the start of its full-load step until the last row is copied (index builds and, in the verified run, verification of finished tables overlap it); the whole run includes preflight and the schema step's verification."
