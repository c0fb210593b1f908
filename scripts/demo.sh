#!/usr/bin/env bash
# make demo: start two throwaway PostgreSQL 15 clusters, create a sample
# database on the first and migrate it to the second with pgtide, then
# stop both clusters (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d /tmp/pgtide-demo.XXXXXX)
chmod 755 "$work"
export PGPASSFILE="$work/pgpass"
cleanup() {
  tests/lib/pgcluster.sh stop "$work/source" >/dev/null 2>&1 || true
  tests/lib/pgcluster.sh stop "$work/target" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "== starting source and target clusters (PostgreSQL 15)"
src=$(tests/lib/pgcluster.sh start "$work/source")
dst=$(tests/lib/pgcluster.sh start "$work/target")
echo "source: $src"
echo "target: $dst"
echo "== creating the sample database"
psql "$src" -X -q -v ON_ERROR_STOP=1 -c "create database demo"
psql "$dst" -X -q -v ON_ERROR_STOP=1 -c "create database demo"
psql "$src dbname=demo" -X -q -v ON_ERROR_STOP=1 <<'SQL'
create table customers (id bigserial primary key, name text not null, email text unique);
create table orders (id bigserial primary key, customer_id bigint references customers(id),
                     total numeric(12,2), created_at timestamptz default now());
insert into customers (name, email) select 'customer ' || g, 'c' || g || '@example.com'
  from generate_series(1, 20000) g;
insert into orders (customer_id, total) select 1 + g % 20000, (g % 997) / 7.0
  from generate_series(1, 100000) g;
SQL
echo "== migrating with pgtide"
./pgtide run runbooks/examples/hello.lua name=demo --state "$work/state" \
  source="$src dbname=demo" target="$dst dbname=demo"
echo "== demo finished: the target holds a verified copy of the source"
