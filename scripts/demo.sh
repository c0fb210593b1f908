#!/usr/bin/env bash
# make demo: a real migration between two throwaway local PostgreSQL
# clusters with pgtide's own engine.
#
#   1. starts a source and a target cluster (tests/lib/pgcluster.sh)
#   2. creates a sample shop database on the source (scripts/demo_data.sql:
#      partitioned tables, enums, domains, composites, arrays, jsonb, bytea,
#      tsvector, generated columns, views, a materialized view, functions,
#      triggers, foreign keys, sequences; about 300 MB generated server-side)
#   3. migrates it: ./pgtide run local source=... target=... (progress shown)
#   4. verifies: every table's rows compared exactly (md5 of the ordered
#      rows on both sides), sequences ahead, views answering the same
#   5. stops both clusters, also on failure or Ctrl-C
#
# Environment: DEMO_SCALE (default 1), DEMO_JOBS (default: cores),
# PGTIDE (binary, default ./pgtide), KEEP=1 keeps the clusters running.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
pgtide=${PGTIDE:-$root/pgtide}
scale=${DEMO_SCALE:-1}
jobs=${DEMO_JOBS:-0}
work=$(mktemp -d /tmp/pgtide-demo.XXXXXX)
chmod 755 "$work"
export PGPASSFILE=$work/pgpass
t0=$(date +%s)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  local rc=$?
  if [ "${KEEP:-0}" = 1 ] && [ $rc -eq 0 ]; then
    echo "clusters kept running in $work (stop with: tests/lib/pgcluster.sh stop-all $work)"
    return
  fi
  tests/lib/pgcluster.sh stop "$work/source" >/dev/null 2>&1 || true
  tests/lib/pgcluster.sh stop "$work/target" >/dev/null 2>&1 || true
  rm -rf "$work"
  if [ $rc -ne 0 ]; then echo "demo failed (exit $rc); clusters stopped" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$pgtide" ] || { echo "no pgtide binary at $pgtide: run make" >&2; exit 2; }

say "starting two throwaway PostgreSQL clusters"
src=$(tests/lib/pgcluster.sh start "$work/source" --conf "max_wal_size = 2GB")
dst=$(tests/lib/pgcluster.sh start "$work/target" --conf "max_wal_size = 2GB")
echo "source: $src"
echo "target: $dst"
psql "$src" -X -q -c "CREATE DATABASE shop"
psql "$dst" -X -q -c "CREATE DATABASE shop"
src="$src dbname=shop"
dst="$dst dbname=shop"

say "creating the sample database (scale $scale) on the source"
s=$(date +%s)
psql "$src" -X -q -o /dev/null -v scale="$scale" -f scripts/demo_data.sql
psql "$src" -X -A -t -c "SELECT 'source: ' || pg_size_pretty(pg_database_size('shop')) || ', '
  || (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = 'shop' AND c.relkind IN ('r', 'p')) || ' tables, '
  || (SELECT sum(n_live_tup) FROM pg_stat_user_tables) || ' rows'"
echo "generated in $(( $(date +%s) - s )) s"

say "migrating: pgtide run local"
s=$(date +%s)
"$pgtide" run local source="$src" target="$dst" jobs="$jobs" split_threshold_mb=48 \
  --state "$work/state"
echo "migrated in $(( $(date +%s) - s )) s"

say "verifying the target row by row"
tables=$(psql "$src" -X -A -t -c "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'shop' AND c.relkind = 'r' ORDER BY 1")
digest_sql() {
  echo "SELECT count(*) || ' ' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY t::text)), '-') FROM $1 t"
}
bad=0
for t in $tables; do
  psql "$src" -X -A -t -c "$(digest_sql "$t")" > "$work/digest" &   # both sides at once
  b=$(psql "$dst" -X -A -t -c "$(digest_sql "$t")")
  wait $!
  a=$(cat "$work/digest")
  if [ "$a" = "$b" ]; then
    printf '  %-28s %s\n' "$t" "equal (${a%% *} rows)"
  else
    printf '  %-28s DIFFERENT: source %s, target %s\n' "$t" "$a" "$b"
    bad=1
  fi
done
for q in "SELECT count(*) || ' customers, ' || sum(spent) FROM shop.customer_order_totals" \
         "SELECT count(*) || ' days, ' || sum(revenue) FROM shop.daily_sales" \
         "SELECT shop.order_total(42)::text" \
         "SELECT count(*)::text FROM shop.products WHERE name ILIKE '%t 123%'"; do
  a=$(psql "$src" -X -A -t -c "$q"); b=$(psql "$dst" -X -A -t -c "$q")
  if [ "$a" = "$b" ]; then printf '  %-28s %s\n' "query" "same answer: $a"
  else printf '  query DIFFERENT: %s: source %s, target %s\n' "$q" "$a" "$b"; bad=1; fi
done
seq=$(psql "$dst" -X -A -t -c "SELECT nextval('shop.orders_id_seq') - (SELECT max(id) FROM shop.orders)")
echo "  sequences: the next order id is $seq above the largest copied one"
[ "$seq" -gt 0 ] || bad=1
[ $bad -eq 0 ] || { echo "verification FAILED" >&2; exit 1; }

say "demo done in $(( $(date +%s) - t0 )) s: the target equals the source"
