#!/usr/bin/env bash
# make demo: a zero-downtime migration between two throwaway local
# PostgreSQL clusters with pgtide's own engine, under a live write load.
#
#   1. starts a source and a target cluster (tests/lib/pgcluster.sh)
#   2. creates a sample shop database on the source (scripts/demo_data.sql:
#      partitioned tables, enums, domains, composites, arrays, jsonb, bytea,
#      tsvector, generated columns, views, a materialized view, functions,
#      triggers, foreign keys, sequences)
#   3. starts a live write load on the source: pgbench with a custom script
#      (new orders with their items, customer and product updates, reviews
#      written and deleted), rate-limited and bounded in time
#   4. migrates while the load runs: ./pgtide run local ... cdc=true
#      cutover=auto write_fence=true: slot and snapshot, parallel full load,
#      indexes, row-level check at a consistent point of the live stream,
#      streaming with lag shown, then the automatic cutover once lag stays
#      low (the fence makes the source read-only and ends the load's
#      sessions; sequences, foreign keys, a final validation of every row)
#   5. shows `pgtide status` from "another terminal" while it streams
#   6. verifies on its own: every table's rows compared (md5 of the ordered
#      rows on both sides), views answering the same, sequences ahead
#   7. stops the load, both clusters and every helper, also on failure or Ctrl-C
#
# Environment: DEMO_SCALE (default 1: about 450 MB), DEMO_JOBS (default:
# cores), DEMO_TPS (write load, default 50), PGTIDE (binary, default
# ./pgtide), KEEP=1 keeps the clusters running.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
pgtide=${PGTIDE:-$root/pgtide}
scale=${DEMO_SCALE:-1}
jobs=${DEMO_JOBS:-0}
tps=${DEMO_TPS:-50}
work=$(mktemp -d /tmp/pgtide-demo.XXXXXX)
chmod 755 "$work"
export PGPASSFILE=$work/pgpass
t0=$(date +%s)
helpers=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  local rc=$?
  for p in "${helpers[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${helpers[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ] && [ $rc -eq 0 ]; then
    echo "clusters kept running in $work (stop with: tests/lib/pgcluster.sh stop-all $work)"
    return
  fi
  tests/lib/pgcluster.sh stop "$work/source" >/dev/null 2>&1 || true
  tests/lib/pgcluster.sh stop "$work/target" >/dev/null 2>&1 || true
  rm -rf "$work"
  if [ $rc -ne 0 ]; then echo "demo failed (exit $rc); load stopped, clusters stopped" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$pgtide" ] || { echo "no pgtide binary at $pgtide: run make" >&2; exit 2; }
command -v pgbench >/dev/null || { echo "pgbench is missing (postgresql-client)" >&2; exit 2; }

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

say "starting a live write load on the source (pgbench, $tps transactions/s, at most 150 s)"
since=$(psql "$src" -X -A -t -c "SELECT now()")
new_orders() { psql "$src" -X -A -t -c "SELECT count(*) FROM shop.orders WHERE created_at >= '$since'"; }
ncust=$(psql "$src" -X -A -t -c "SELECT max(id) FROM shop.customers")
nprod=$(psql "$src" -X -A -t -c "SELECT max(id) FROM shop.products")
cat > "$work/load.sql" <<EOF
\set cid random(1, $ncust)
\set pid random(1, $nprod)
\set qty random(1, 4)
BEGIN;
WITH o AS (INSERT INTO shop.orders (created_at, customer_id, status, total)
           VALUES (now(), :cid, 'paid', 0) RETURNING id, created_at)
INSERT INTO shop.order_items (order_id, order_created_at, line_no, product_id, quantity, unit_price)
SELECT o.id, o.created_at, 1, :pid, :qty, 9.99 FROM o;
UPDATE shop.customers SET prefs = prefs || jsonb_build_object('last_order', now()::text) WHERE id = :cid;
UPDATE shop.products SET price = price + 0.01 WHERE id = :pid;
INSERT INTO shop.reviews (product_id, customer_id, rating, body) VALUES (:pid, :cid, 1 + :qty, 'live review');
DELETE FROM shop.reviews WHERE id = (SELECT min(id) FROM shop.reviews WHERE body = 'live review') AND random() < 0.3;
COMMIT;
EOF
pgbench "$src" -n -f "$work/load.sql" -c 2 -j 1 -R "$tps" -T 150 -P 30 > "$work/load.log" 2>&1 &
helpers+=($!)
loadpid=$!
sleep 2
echo "load running (pid $loadpid): $(new_orders) new orders so far"

# "another terminal": pgtide status once the migration streams
(
  for _ in $(seq 1 600); do
    grep -q '"phase":.*"streaming"' "$work/state/status.json" 2>/dev/null && break
    sleep 0.5
  done
  sleep 3
  printf '\n\033[1m-- meanwhile, in another terminal: pgtide status --state %s\033[0m\n' "$work/state" >&2
  "$pgtide" status --state "$work/state" --tables 5 >&2 || true
  printf '\033[1m--\033[0m\n' >&2
) &
helpers+=($!)

say "migrating while the load runs: pgtide run local (CDC, cutover=auto, write_fence=true)"
s=$(date +%s)
"$pgtide" run local source="$src" target="$dst" jobs="$jobs" split_threshold_mb=24 \
  cutover=auto cutover_window=8 write_fence=true --state "$work/state" --yes
echo "migrated and cut over in $(( $(date +%s) - s )) s"

say "the write load"
wait "$loadpid" 2>/dev/null || true   # the fence ended its sessions
grep -E "^(number of transactions actually processed|tps = )" "$work/load.log" || true
ended=$(grep -c "terminating connection due to administrator command" "$work/load.log" || true)
echo "${ended:-0} load session(s) ended by the write fence at cutover"
echo "orders written during the migration: $(new_orders) (each with an item, a review, two updates)"

say "verifying the target row by row (independently of pgtide)"
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
         "SELECT shop.order_total(42)::text" \
         "SELECT count(*)::text FROM shop.products WHERE name ILIKE '%t 123%'"; do
  a=$(psql "$src" -X -A -t -c "$q"); b=$(psql "$dst" -X -A -t -c "$q")
  if [ "$a" = "$b" ]; then printf '  %-28s %s\n' "query" "same answer: $a"
  else printf '  query DIFFERENT: %s: source %s, target %s\n' "$q" "$a" "$b"; bad=1; fi
done
seq=$(psql "$dst" -X -A -t -c "SELECT nextval('shop.orders_id_seq') - (SELECT max(id) FROM shop.orders)")
echo "  sequences: the next order id on the target is $seq above the largest replicated one"
[ "$seq" -gt 0 ] || bad=1
fks=$(psql "$dst" -X -A -t -c "SELECT count(*) FILTER (WHERE convalidated) || ' of ' || count(*)
  FROM pg_constraint WHERE contype = 'f' AND conparentid = 0")
echo "  foreign keys on the target (added at cutover): $fks validated"
ro=$(psql "$src" -X -A -t -c "SHOW default_transaction_read_only")
echo "  source read-only after the fence: $ro"
[ "$ro" = on ] || bad=1
[ $bad -eq 0 ] || { echo "verification FAILED" >&2; exit 1; }

say "demo done in $(( $(date +%s) - t0 )) s: the target equals the source, with writes until the cutover"
