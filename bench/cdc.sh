#!/usr/bin/env bash
# bench/cdc.sh: the CDC benchmark of issue 4, in one run on one machine.
#
#   catch-up  a backlog of BENCH_TXNS pgbench (TPC-B-like) transactions,
#             4 row changes each (>= 300,000 changes by default), made
#             while nothing applies, then applied by
#               pgtide   core.cdc worker (pgtide script), its own slot
#               native   CREATE SUBSCRIPTION on a second target database,
#                        its own slot created at the same point
#               pgcopydb `pgcopydb follow` (Debian's 0.10 decodes with
#                        wal2json: package postgresql-15-wal2json), its
#                        slot and origin from `pgcopydb stream setup`
#                        at the same point, apply switched on through its
#                        sentinel with endpos at the marker
#             Both start from identical copies; the time is from start
#             (process start for pgtide, ALTER SUBSCRIPTION ENABLE for
#             the subscriber) until a marker row written after the
#             backlog is visible on the target.  BENCH_REPEAT (default
#             3) slots and target copies per tool are made before the
#             backlog, runs alternate, medians are reported.  Every
#             target is then compared with the source table by table.
#   lag       pgbench throttled (-R) to half the source's measured
#             capacity for BENCH_LAG_SECONDS while pgtide streams; the
#             worker samples its lag every 0.25 s.
#   big txn   one transaction of about BENCH_BIG_MB MB of changes
#             (INSERT ... SELECT generate_series) applied by pgtide with
#             memory_cap 64MB; peak RSS of the applying process.
#
# Prints markdown (numbers and ratios against the targets: >= 1.5x the
# native subscriber's rows/s, lag < 1 s, RSS < 256 MB); progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
pgtide=${PGTIDE:-$root/pgtide}
scale=${BENCH_SCALE:-10}
txns=${BENCH_TXNS:-80000}
clients=${BENCH_CLIENTS:-4}
lag_secs=${BENCH_LAG_SECONDS:-30}
repeat=${BENCH_REPEAT:-3}
big_mb=${BENCH_BIG_MB:-1024}
work=$(mktemp -d /tmp/pgtide-cdcbench.XXXXXX)
chmod 755 "$work"
export PGPASSFILE=$work/pgpass

cleanup() {
  [ -n "${drv_pid:-}" ] && kill "$drv_pid" 2>/dev/null || true
  tests/lib/pgcluster.sh stop "$work/src" >/dev/null 2>&1 || true
  tests/lib/pgcluster.sh stop "$work/dst" >/dev/null 2>&1 || true
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "  $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
[ -x "$pgtide" ] || { echo "no pgtide binary at $pgtide: run make" >&2; exit 2; }

conf=(--conf "max_wal_size = 8GB" --conf "checkpoint_timeout = 30min" --conf "shared_buffers = 256MB"
      --conf "max_logical_replication_workers = 8" --conf "wal_sender_timeout = 120s")
src=$(tests/lib/pgcluster.sh start "$work/src" "${conf[@]}")
dst=$(tests/lib/pgcluster.sh start "$work/dst" "${conf[@]}")
src_port=$(cat "$work/src/port")
psql "$src" -X -q -c "CREATE DATABASE bench"
S="$src dbname=bench"
q() { psql "$1" -X -A -t -q -c "$2"; }
# pgtide talks to both servers over their Unix sockets, like the native
# subscriber (which runs inside the target and reaches the source's
# socket): the same transport for both, no password needed (local trust)
dst_port=$(cat "$work/dst/port")
SU="host=$work/src port=$src_port user=postgres dbname=bench"
tdb() { echo "$dst dbname=$1"; }
tdbu() { echo "host=$work/dst port=$dst_port user=postgres dbname=$1"; }

log "pgbench scale $scale on the source, $repeat copies per tool on the target ..."
pgbench -i -q -s "$scale" "$S" >/dev/null 2>&1
pg_dump "$S" > "$work/dump.sql"
psql "$dst" -X -q -c "CREATE DATABASE t_base"
psql "$(tdb t_base)" -X -q -v ON_ERROR_STOP=1 -f "$work/dump.sql" >/dev/null
# the tables only: pgcopydb keeps its sentinel table on the source
q "$S" "CREATE PUBLICATION bench_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers,
        pgbench_history" >/dev/null
SURI="postgresql://postgres@127.0.0.1:$src_port/bench"
turi() { echo "postgresql://postgres@127.0.0.1:$dst_port/$1"; }
with_pgcopydb=0
if command -v pgcopydb >/dev/null && [ -f /usr/lib/postgresql/15/lib/wal2json.so ]; then with_pgcopydb=1; fi
for i in $(seq 1 "$repeat"); do
  q "$dst" "CREATE DATABASE t_pgtide_$i TEMPLATE t_base" >/dev/null
  q "$dst" "CREATE DATABASE t_native_$i TEMPLATE t_base" >/dev/null
  q "$S" "SELECT pg_create_logical_replication_slot('s_pgtide_$i', 'pgoutput')" >/dev/null
  q "$S" "SELECT pg_create_logical_replication_slot('s_native_$i', 'pgoutput')" >/dev/null
  q "$(tdb t_native_$i)" "CREATE SUBSCRIPTION sub_$i CONNECTION 'host=$work/src port=$src_port user=postgres dbname=bench'
           PUBLICATION bench_pub WITH (create_slot = false, slot_name = 's_native_$i', copy_data = false,
           enabled = false)" >/dev/null
  if [ $with_pgcopydb = 1 ]; then
    q "$dst" "CREATE DATABASE t_pgcopydb_$i TEMPLATE t_base" >/dev/null
    pgcopydb stream setup --source "$SURI" --target "$(turi t_pgcopydb_$i)" --dir "$work/pgcopydb_$i" \
      --slot-name "s_pgcopydb_$i" --origin "pgcopydb_$i" > "$work/pgcopydb_setup_$i.log" 2>&1 \
      || { tail -20 "$work/pgcopydb_setup_$i.log" >&2; exit 1; }
  fi
done

log "backlog: $txns pgbench transactions with $clients clients ..."
pgbench -n -c "$clients" -j 2 -t $((txns / clients)) "$S" >/dev/null 2>&1
q "$S" "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) VALUES (0, 0, 0, 0, now(), 'END-1')"
changes=$(( (txns / clients) * clients * 4 + 1 ))
backlog_bytes=$(q "$S" "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots WHERE slot_name = 's_pgtide_1'")

wait_marker() {   # conninfo marker timeout
  local end=$(( $(date +%s) + $3 ))
  until [ "$(q "$1" "SELECT count(*) FROM pgbench_history WHERE filler = '$2'")" = 1 ]; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out waiting for $2" >&2; return 1; }
    sleep 0.05
  done
}

# The pgtide driver: applies until told to stop (a file), samples lag,
# reports stats and peak RSS as one line of key=value.
cat > "$work/driver.lua" <<'LUA'
local cdc = require "core.cdc"
local sys = require "sys"
local source, target, slot, state, stopfile = arg[1], arg[2], arg[3], arg[4], arg[5]
local w = cdc.start { source = source, target = target, slot = slot, publication = "bench_pub",
  state_dir = state, memory_cap = "64MB", group = tonumber(os.getenv("BENCH_GROUP") or "") }
local maxlag, n, sum, samples = 0, 0, 0, {}
while not sys.exists(stopfile) do
  local st = w:run_for(0.25)
  local l = st.seconds
  if sys.exists(stopfile .. ".sample") then
    n = n + 1; sum = sum + l; samples[#samples + 1] = l
    if l > maxlag then maxlag = l end
  end
end
table.sort(samples)
local st = w:stop()
io.write(string.format("txns=%d commits=%d set_segments=%d fallbacks=%d apply_idle=%.2f receiver_wait=%.2f maxlag=%.3f avglag=%.3f p95lag=%.3f rss_kb=%d\n",
  st.txns, st.commits, st.set_segments, st.fallbacks, st.apply_idle_seconds or 0, st.receiver_wait_seconds or 0,
  maxlag, n > 0 and sum / n or 0,
  #samples > 0 and samples[math.max(1, math.ceil(#samples * 0.95))] or 0, sys.peak_rss_kb()))
LUA
mkdir -p "$work/state"
start_driver() {   # slot target stopfile
  rm -f "$3" "$3.sample"
  "$pgtide" script "$work/driver.lua" "$SU" "$2" "$1" "$work/state" "$3" > "$work/driver.out" 2> "$work/driver.log" &
  drv_pid=$!
}
stop_driver() {   # stopfile; the stats line is then in $work/driver.out
  touch "$1"
  wait "$drv_pid" || { cat "$work/driver.log" >&2; return 1; }
  drv_pid=
}

pgtide_times=(); native_times=(); pgcopydb_times=()
for i in $(seq 1 "$repeat"); do
  log "catch-up $i/$repeat: pgtide ..."
  t0=$(now)
  start_driver "s_pgtide_$i" "$(tdbu t_pgtide_$i)" "$work/stop1"
  wait_marker "$(tdb t_pgtide_$i)" END-1 1800
  t1=$(now)
  stop_driver "$work/stop1"
  [ "$i" = 1 ] && pgtide_stats=$(cat "$work/driver.out")
  pgtide_times+=("$(elapsed "$t0" "$t1")")

  log "catch-up $i/$repeat: native subscription ..."
  t0=$(now)
  q "$(tdb t_native_$i)" "ALTER SUBSCRIPTION sub_$i ENABLE" >/dev/null
  wait_marker "$(tdb t_native_$i)" END-1 1800
  t1=$(now)
  native_times+=("$(elapsed "$t0" "$t1")")
  q "$(tdb t_native_$i)" "ALTER SUBSCRIPTION sub_$i DISABLE" >/dev/null

  if [ $with_pgcopydb = 1 ]; then
    log "catch-up $i/$repeat: pgcopydb follow ..."
    endpos=$(q "$S" "SELECT pg_current_wal_lsn()")
    q "$S" "UPDATE pgcopydb.sentinel SET apply = true, endpos = '$endpos'" >/dev/null
    t0=$(now)
    pgcopydb follow --source "$SURI" --target "$(turi t_pgcopydb_$i)" --dir "$work/pgcopydb_$i" \
      --slot-name "s_pgcopydb_$i" --origin "pgcopydb_$i" --resume --not-consistent --endpos "$endpos" \
      > "$work/pgcopydb_follow_$i.log" 2>&1 &
    pcd_pid=$!
    # wait for the marker, unless pgcopydb reports that it cannot go on
    # (0.10's transform worker dies on some backlogs and follow then waits forever)
    end=$(( $(date +%s) + 1800 ))
    until [ "$(q "$(tdb t_pgcopydb_$i)" "SELECT count(*) FROM pgbench_history WHERE filler = 'END-1'")" = 1 ]; do
      if grep -q "ERROR BUG\|Worker [0-9]* exited with code" "$work/pgcopydb_follow_$i.log"; then
        pgcopydb_failed=$(grep -m1 "ERROR" "$work/pgcopydb_follow_$i.log" | sed 's/^[0-9:]* [0-9]* ERROR *//' | cut -c1-160)
        break
      fi
      [ "$(date +%s)" -lt "$end" ] || { pgcopydb_failed="no END-1 marker after 1800 s"; break; }
      sleep 0.05
    done
    t1=$(now)
    # pgcopydb follow and its workers: TERM, then KILL what is left after 5 s
    pkill -TERM -P "$pcd_pid" 2>/dev/null || true
    kill "$pcd_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pcd_pid" 2>/dev/null || break; sleep 0.1; done
    pkill -KILL -P "$pcd_pid" 2>/dev/null || true
    kill -KILL "$pcd_pid" 2>/dev/null || true
    wait "$pcd_pid" 2>/dev/null || true
    if [ -n "${pgcopydb_failed:-}" ]; then
      log "pgcopydb follow failed: $pgcopydb_failed (log: pgcopydb_follow_$i.log); not run again"
      with_pgcopydb=failed
    else
      pgcopydb_times+=("$(elapsed "$t0" "$t1")")
    fi
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
pgtide_s=$(median "${pgtide_times[@]}")
native_s=$(median "${native_times[@]}")

if [ $with_pgcopydb = 1 ]; then
  pgcopydb_s=$(median "${pgcopydb_times[@]}")
  pgcopydb_rps=$(awk -v c="$changes" -v s="$pgcopydb_s" 'BEGIN { printf "%.0f", c / s }')
  pgcopydb_row="| pgcopydb follow $(pgcopydb --version 2>/dev/null | awk '/version/ {print $3; exit}') (wal2json) | $pgcopydb_s | $pgcopydb_rps | runs: ${pgcopydb_times[*]} s |"
  tools="pgtide native pgcopydb"
elif [ "$with_pgcopydb" = failed ]; then
  pgcopydb_row="| pgcopydb follow $(pgcopydb --version 2>/dev/null | awk '/version/ {print $3; exit}') (wal2json) | - | - | **failed** on this backlog: \"$pgcopydb_failed\" (its apply then waits forever) |"
  tools="pgtide native"
else
  pgcopydb_row="| pgcopydb follow | - | - | not run: needs pgcopydb and postgresql-15-wal2json (make deps installs both) |"
  tools="pgtide native"
fi

same=yes
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
  sum_sql="SELECT count(*) || ':' || md5(string_agg(x::text, '|' ORDER BY x::text)) FROM $t x"
  a=$(q "$S" "$sum_sql")
  for i in $(seq 1 "$repeat"); do
    for tool in $tools; do
      b=$(q "$(tdb t_${tool}_$i)" "$sum_sql")
      [ "$a" = "$b" ] || same="NO ($t differs on t_${tool}_$i)"
    done
  done
done

log "lag: measuring the source's capacity ..."
cap=$(pgbench -n -c "$clients" -j 2 -T 10 "$S" 2>/dev/null | awk '/^tps/ {print int($3); exit}')
rate=$(( cap / 2 ))
log "lag: pgbench -R $rate (half of $cap tps) for ${lag_secs}s while pgtide streams ..."
start_driver s_pgtide_1 "$(tdbu t_pgtide_1)" "$work/stop2"
sleep 3
touch "$work/stop2.sample"
pgbench -n -c "$clients" -j 2 -R "$rate" -T "$lag_secs" "$S" >/dev/null 2>&1
stop_driver "$work/stop2"
lag_stats=$(cat "$work/driver.out")

log "big transaction: about $big_mb MB in one transaction ..."
q "$S" "CREATE TABLE big (id bigint PRIMARY KEY, v text); ALTER PUBLICATION bench_pub ADD TABLE big" >/dev/null
q "$(tdb t_pgtide_1)" "CREATE TABLE big (id bigint PRIMARY KEY, v text)" >/dev/null
rows=$(( big_mb * 1024 * 1024 / 110 ))
start_driver s_pgtide_1 "$(tdbu t_pgtide_1)" "$work/stop3"
t0=$(now)
q "$S" "BEGIN; INSERT INTO big SELECT g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, $rows) g;
        INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) VALUES (0, 0, 0, 0, now(), 'END-3'); COMMIT"
wait_marker "$(tdb t_pgtide_1)" END-3 3600
t1=$(now)
stop_driver "$work/stop3"
big_stats=$(cat "$work/driver.out")
big_s=$(elapsed "$t0" "$t1")
big_rows_t=$(q "$(tdb t_pgtide_1)" "SELECT count(*) FROM big")

field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }
pgtide_rps=$(awk -v c="$changes" -v s="$pgtide_s" 'BEGIN { printf "%.0f", c / s }')
native_rps=$(awk -v c="$changes" -v s="$native_s" 'BEGIN { printf "%.0f", c / s }')
ratio=$(awk -v a="$pgtide_rps" -v b="$native_rps" 'BEGIN { printf "%.2f", a / b }')
rss_mb=$(awk -v k="$(field "$big_stats" rss_kb)" 'BEGIN { printf "%.0f", k / 1024 }')
maxlag=$(field "$lag_stats" maxlag)

cat <<EOF
## CDC (bench/cdc.sh)

Backlog: $txns pgbench transactions (scale $scale, $clients clients), $changes row changes,
$(awk -v b="$backlog_bytes" 'BEGIN { printf "%.0f", b / 1048576 }') MB of WAL; targets start as identical copies. Both appliers reach the
servers over Unix sockets (the subscriber is inside the target; pgtide runs beside it).

| apply (median of $repeat) | seconds | rows/s | |
|---|---:|---:|---|
| pgtide (core.cdc, memory_cap 64MB) | $pgtide_s | $pgtide_rps | runs: ${pgtide_times[*]} s; $(field "$pgtide_stats" txns) source txns in $(field "$pgtide_stats" commits) target commits, $(field "$pgtide_stats" set_segments) set-based segments; the applier waited $(field "$pgtide_stats" apply_idle) s for the stream |
| native CREATE SUBSCRIPTION | $native_s | $native_rps | runs: ${native_times[*]} s |
$pgcopydb_row

- pgtide / native rows per second: **${ratio}x** (target >= 1.5x)$([ $with_pgcopydb = 1 ] && awk -v a="$pgtide_s" -v b="$pgcopydb_s" 'BEGIN { printf "; pgtide / pgcopydb follow: **%.2fx**", b / a }')
- targets equal to the source after catch-up: $same
- lag while pgbench runs at half the source's capacity ($rate of $cap tps, ${lag_secs}s):
  max **${maxlag} s**, p95 $(field "$lag_stats" p95lag) s, mean $(field "$lag_stats" avglag) s (target < 1 s)
- one transaction of about $big_mb MB ($rows rows): applied in $big_s s ($big_rows_t rows on the target),
  peak RSS of the applying pgtide process **${rss_mb} MB** (target < 256 MB)
EOF
