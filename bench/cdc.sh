#!/usr/bin/env bash
# bench/cdc.sh: the CDC benchmarks of issues 4 and 14, in one run on one machine.
#
#   catch-up  a backlog of BENCH_TXNS pgbench (TPC-B-like) transactions,
#             4 row changes each (>= 300,000 changes by default), made
#             while nothing applies, then applied by
#               pgtide   core.cdc worker (pgtide script), its own slot
#               native   CREATE SUBSCRIPTION on a fresh target database,
#                        its own slot created at the same point
#               pgcopydb `pgcopydb follow` (local only; Debian's 0.10
#                        decodes with wal2json), its slot and origin from
#                        `pgcopydb stream setup` at the same point
#             for each round trip in BENCH_RTTS (milliseconds; default
#             "0 10 50").  At 0 every tool reaches both servers over Unix
#             sockets.  Otherwise tests/lib/latency_proxy.py delays every
#             chunk by half the round trip, and:
#               pgtide-src  pgtide beside the source: its connections to
#                           the target go through the proxy
#               pgtide-dst  pgtide beside the target: its connections to
#                           the source (replication stream included) go
#                           through the proxy
#               native      the subscriber (inside the target) reaches the
#                           source through the proxy
#             Every run starts from an identical copy of the data (a
#             database made from a template just before); the time is
#             from start (process start for pgtide, ALTER SUBSCRIPTION
#             ENABLE for the subscriber) until a marker row written after
#             the backlog is visible on the target.  BENCH_REPEAT (default
#             3) rounds, tools in rotating order, medians reported.  Every
#             target is compared with the source table by table.
#   lag       pgbench throttled (-R) to half the source's measured
#             capacity for BENCH_LAG_SECONDS while pgtide streams, at each
#             round trip and placement; the worker samples its lag every
#             0.25 s.
#   big txn   one transaction of about BENCH_BIG_MB MB of changes
#             (INSERT ... SELECT generate_series) applied by pgtide with
#             memory_cap 64MB; peak RSS of the applying process.
#
# Prints markdown (numbers and ratios against the targets: >= 1.5x the
# native subscriber's rows/s locally and with pgtide beside the source,
# >= 2x beside the target; lag < 1 s plus one round trip; RSS < 256 MB),
# with the load average during each measurement; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
pgtide=${PGTIDE:-$root/pgtide}
scale=${BENCH_SCALE:-10}
txns=${BENCH_TXNS:-80000}
clients=${BENCH_CLIENTS:-4}
lag_secs=${BENCH_LAG_SECONDS:-20}
repeat=${BENCH_REPEAT:-3}
big_mb=${BENCH_BIG_MB:-1024}
rtts=${BENCH_RTTS:-0 10 50}
work=$(mktemp -d /tmp/pgtide-cdcbench.XXXXXX)
chmod 755 "$work"
export PGPASSFILE=$work/pgpass
proxy_pids=()

cleanup() {
  [ -n "${drv_pid:-}" ] && kill "$drv_pid" 2>/dev/null || true
  for p in "${proxy_pids[@]+"${proxy_pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
  tests/lib/pgcluster.sh stop "$work/src" >/dev/null 2>&1 || true
  tests/lib/pgcluster.sh stop "$work/dst" >/dev/null 2>&1 || true
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "  $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
load1() { awk '{ print $1 }' /proc/loadavg; }
[ -x "$pgtide" ] || { echo "no pgtide binary at $pgtide: run make" >&2; exit 2; }

conf=(--conf "max_wal_size = 8GB" --conf "checkpoint_timeout = 30min" --conf "shared_buffers = 256MB"
      --conf "max_logical_replication_workers = 8" --conf "wal_sender_timeout = 120s"
      --conf "max_replication_slots = 64" --conf "max_wal_senders = 64")
src=$(tests/lib/pgcluster.sh start "$work/src" "${conf[@]}")
dst=$(tests/lib/pgcluster.sh start "$work/dst" "${conf[@]}")
src_port=$(cat "$work/src/port")
dst_port=$(cat "$work/dst/port")
psql "$src" -X -q -c "CREATE DATABASE bench"
S="$src dbname=bench"
q() { psql "$1" -X -A -t -q -c "$2"; }
# Unix-socket conninfos (local trust), and the proxies' TCP ones: a
# proxy forwards to the server's socket, so the server sees a local client
SU="host=$work/src port=$src_port user=postgres dbname=bench"
tdb() { echo "$dst dbname=$1"; }
tdbu() { echo "host=$work/dst port=$dst_port user=postgres dbname=$1"; }
declare -A psrc pdst
for r in $rtts; do
  [ "$r" = 0 ] && continue
  half=$(awk -v r="$r" 'BEGIN { print r / 2 }')
  for side in src dst; do
    port_var=$work/proxy-$side-$r.port
    python3 tests/lib/latency_proxy.py --delay-ms "$half" --port-file "$port_var" \
      --target "$work/$side/.s.PGSQL.$(cat "$work/$side/port")" >/dev/null 2>"$work/proxy-$side-$r.log" &
    proxy_pids+=($!)
    for _ in $(seq 1 100); do [ -s "$port_var" ] && break; sleep 0.05; done
    [ -s "$port_var" ] || { echo "latency proxy did not start" >&2; cat "$work/proxy-$side-$r.log" >&2; exit 1; }
  done
  psrc[$r]=$(cat "$work/proxy-src-$r.port")
  pdst[$r]=$(cat "$work/proxy-dst-$r.port")
done
# conninfos per placement: source and target of the applier
src_for() {
  if [ "$2" != 0 ] && { [ "$1" = pgtide-dst ] || [ "$1" = native ]; }; then
    echo "host=127.0.0.1 port=${psrc[$2]} user=postgres dbname=bench"
  else echo "$SU"; fi
}
dst_for() {
  if [ "$1" = pgtide-src ]; then echo "host=127.0.0.1 port=${pdst[$2]} user=postgres dbname=$3"
  else tdbu "$3"; fi
}
modes_for() { if [ "$1" = 0 ]; then echo "pgtide native${with_pgcopydb_tool:-}"; else echo "pgtide-src pgtide-dst native"; fi; }

log "pgbench scale $scale on the source ..."
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
if command -v pgcopydb >/dev/null && [ -f /usr/lib/postgresql/15/lib/wal2json.so ]; then
  with_pgcopydb=1; with_pgcopydb_tool=" pgcopydb"
fi
log "slots for $repeat rounds at round trips: $rtts ms ..."
for r in $rtts; do
  for i in $(seq 1 "$repeat"); do
    for m in $(modes_for "$r"); do
      name=${m//-/_}_${r}_$i
      if [ "$m" = pgcopydb ]; then
        q "$dst" "CREATE DATABASE t_$name TEMPLATE t_base" >/dev/null
        pgcopydb stream setup --source "$SURI" --target "$(turi "t_$name")" --dir "$work/pgcopydb_$i" \
          --slot-name "s_$name" --origin "pgcopydb_$i" > "$work/pgcopydb_setup_$i.log" 2>&1 \
          || { tail -20 "$work/pgcopydb_setup_$i.log" >&2; exit 1; }
      else
        q "$S" "SELECT pg_create_logical_replication_slot('s_$name', 'pgoutput')" >/dev/null
      fi
    done
  done
done

log "backlog: $txns pgbench transactions with $clients clients ..."
pgbench -n -c "$clients" -j 2 -t $((txns / clients)) "$S" >/dev/null 2>&1
q "$S" "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) VALUES (0, 0, 0, 0, now(), 'END-1')"
changes=$(( (txns / clients) * clients * 4 + 1 ))
backlog_bytes=$(q "$S" "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots
  WHERE slot_name = 's_native_$(set -- $rtts; echo "$1")_1'")
sum_sql="SELECT count(*) || ':' || md5(string_agg(x::text, '|' ORDER BY x::text)) FROM %s x"
declare -A src_sum
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
  src_sum[$t]=$(q "$S" "$(printf "$sum_sql" "$t")")
done
same=yes
check_same() {   # target database
  local t
  for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
    [ "$(q "$(tdb "$1")" "$(printf "$sum_sql" "$t")")" = "${src_sum[$t]}" ] || same="NO ($t differs on $1)"
  done
}

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
start_driver() {   # slot source target stopfile
  rm -f "$4" "$4.sample"
  "$pgtide" script "$work/driver.lua" "$2" "$3" "$1" "$work/state" "$4" > "$work/driver.out" 2> "$work/driver.log" &
  drv_pid=$!
}
stop_driver() {   # stopfile; the stats line is then in $work/driver.out
  touch "$1"
  wait "$drv_pid" || { cat "$work/driver.log" >&2; return 1; }
  drv_pid=
}

run_pgcopydb() {   # name db; sets run_s or pgcopydb_failed
  local name=$1 db=$2 endpos end pcd_pid t0 t1 i=${1##*_}
  endpos=$(q "$S" "SELECT pg_current_wal_lsn()")
  q "$S" "UPDATE pgcopydb.sentinel SET apply = true, endpos = '$endpos'" >/dev/null
  t0=$(now)
  pgcopydb follow --source "$SURI" --target "$(turi "$db")" --dir "$work/pgcopydb_$i" \
    --slot-name "s_$name" --origin "pgcopydb_$i" --resume --not-consistent --endpos "$endpos" \
    > "$work/pgcopydb_follow_$i.log" 2>&1 &
  pcd_pid=$!
  # wait for the marker, unless pgcopydb reports that it cannot go on
  # (0.10's transform worker dies on some backlogs and follow then waits forever)
  end=$(( $(date +%s) + 1800 ))
  until [ "$(q "$(tdb "$db")" "SELECT count(*) FROM pgbench_history WHERE filler = 'END-1'")" = 1 ]; do
    if grep -q "ERROR BUG\|Worker [0-9]* exited with code" "$work/pgcopydb_follow_$i.log"; then
      pgcopydb_failed=$(grep -m1 "ERROR" "$work/pgcopydb_follow_$i.log" | sed 's/^[0-9:]* [0-9]* ERROR *//' | cut -c1-160)
      break
    fi
    [ "$(date +%s)" -lt "$end" ] || { pgcopydb_failed="no END-1 marker after 1800 s"; break; }
    sleep 0.05
  done
  t1=$(now)
  # pgcopydb follow and its workers (children of the process this script
  # started): TERM, then KILL what is left after 5 s
  pkill -TERM -P "$pcd_pid" 2>/dev/null || true
  kill "$pcd_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pcd_pid" 2>/dev/null || break; sleep 0.1; done
  pkill -KILL -P "$pcd_pid" 2>/dev/null || true
  kill -KILL "$pcd_pid" 2>/dev/null || true
  wait "$pcd_pid" 2>/dev/null || true
  run_s=$(elapsed "$t0" "$t1")
}

# CPU seconds (user + system) the latency proxies have used so far: the
# proxy shares the 2 cores with the servers and the applier, and costs
# most per byte on a stream of small writes (a walsender's)
proxy_cpu() {
  local p total=0 tck
  tck=$(getconf CLK_TCK)
  for p in "${proxy_pids[@]+"${proxy_pids[@]}"}"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$(( total + $(awk '{ print $14 + $15 }' "/proc/$p/stat") ))
  done
  awk -v t="$total" -v h="$tck" 'BEGIN { printf "%.2f", t / h }'
}

declare -A times loads stats pcpu
for i in $(seq 1 "$repeat"); do
  for r in $rtts; do
    read -r -a modes <<< "$(modes_for "$r")"
    n=${#modes[@]}
    for k in $(seq 0 $((n - 1))); do
      m=${modes[$(( (k + i - 1) % n ))]}
      name=${m//-/_}_${r}_$i
      db=t_$name
      [ "$m" = pgcopydb ] && [ "$with_pgcopydb" != 1 ] && continue
      [ "$m" = pgcopydb ] || q "$dst" "CREATE DATABASE $db TEMPLATE t_base" >/dev/null
      q "$dst" "CHECKPOINT" >/dev/null
      l0=$(load1)
      c0=$(proxy_cpu)
      log "catch-up round $i, rtt ${r} ms: $m (load $l0) ..."
      case "$m" in
        pgtide*)
          t0=$(now)
          start_driver "s_$name" "$(src_for "$m" "$r")" "$(dst_for "$m" "$r" "$db")" "$work/stop1"
          wait_marker "$(tdb "$db")" END-1 1800
          t1=$(now)
          stop_driver "$work/stop1"
          stats[$m,$r]=$(cat "$work/driver.out")
          run_s=$(elapsed "$t0" "$t1") ;;
        native)
          q "$(tdb "$db")" "CREATE SUBSCRIPTION sub_$name CONNECTION '$(src_for native "$r")'
             PUBLICATION bench_pub WITH (create_slot = false, slot_name = 's_$name', copy_data = false,
             enabled = false)" >/dev/null
          t0=$(now)
          q "$(tdb "$db")" "ALTER SUBSCRIPTION sub_$name ENABLE" >/dev/null
          wait_marker "$(tdb "$db")" END-1 1800
          t1=$(now)
          q "$(tdb "$db")" "ALTER SUBSCRIPTION sub_$name DISABLE" >/dev/null
          q "$(tdb "$db")" "ALTER SUBSCRIPTION sub_$name SET (slot_name = NONE)" >/dev/null
          q "$(tdb "$db")" "DROP SUBSCRIPTION sub_$name" >/dev/null
          run_s=$(elapsed "$t0" "$t1") ;;
        pgcopydb)
          pgcopydb_failed=
          run_pgcopydb "$name" "$db"
          if [ -n "$pgcopydb_failed" ]; then
            log "pgcopydb follow failed: $pgcopydb_failed; not run again"
            with_pgcopydb=failed
            q "$dst" "DROP DATABASE $db" >/dev/null 2>&1 || true
            continue
          fi ;;
      esac
      times[$m,$r]="${times[$m,$r]:-} $run_s"
      pcpu[$m,$r]="${pcpu[$m,$r]:-} $(awk -v a="$c0" -v b="$(proxy_cpu)" 'BEGIN { printf "%.2f", b - a }')"
      loads[$m,$r]="${loads[$m,$r]:-} $l0"
      log "  $run_s s"
      check_same "$db"
      q "$dst" "DROP DATABASE $db" >/dev/null
      q "$S" "SELECT pg_drop_replication_slot('s_$name') WHERE '$m' <> 'pgcopydb'" >/dev/null
    done
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }
rps() { awk -v c="$changes" -v s="$1" 'BEGIN { printf "%.0f", c / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "met" : "NOT met" }'; }

log "lag: measuring the source's capacity ..."
cap=$(pgbench -n -c "$clients" -j 2 -T 10 "$S" 2>/dev/null | awk '/^tps/ {print int($3); exit}')
rate=$(( cap / 2 ))
declare -A lag lagload
for r in $rtts; do
  for m in $(modes_for "$r"); do
    case "$m" in pgtide*) ;; *) continue ;; esac
    name=lag_${m//-/_}_$r
    q "$dst" "CREATE DATABASE t_$name TEMPLATE t_base" >/dev/null
    # catch up from a fresh slot, then measure
    q "$S" "SELECT pg_create_logical_replication_slot('s_$name', 'pgoutput')" >/dev/null
    log "lag, rtt $r ms, $m: pgbench -R $rate (half of $cap tps) for ${lag_secs}s ..."
    start_driver "s_$name" "$(src_for "$m" "$r")" "$(dst_for "$m" "$r" "t_$name")" "$work/stop2"
    sleep 3
    l0=$(load1)
    touch "$work/stop2.sample"
    pgbench -n -c "$clients" -j 2 -R "$rate" -T "$lag_secs" "$S" >/dev/null 2>&1
    stop_driver "$work/stop2"
    lag[$m,$r]=$(cat "$work/driver.out")
    lagload[$m,$r]="$l0 -> $(load1)"
    q "$dst" "DROP DATABASE t_$name" >/dev/null
    q "$S" "SELECT pg_drop_replication_slot('s_$name')" >/dev/null
  done
done

log "big transaction: about $big_mb MB in one transaction ..."
q "$dst" "CREATE DATABASE t_big TEMPLATE t_base" >/dev/null
q "$S" "SELECT pg_create_logical_replication_slot('s_big', 'pgoutput')" >/dev/null
q "$S" "CREATE TABLE big (id bigint PRIMARY KEY, v text); ALTER PUBLICATION bench_pub ADD TABLE big" >/dev/null
q "$(tdb t_big)" "CREATE TABLE big (id bigint PRIMARY KEY, v text)" >/dev/null
rows=$(( big_mb * 1024 * 1024 / 110 ))
start_driver s_big "$SU" "$(tdbu t_big)" "$work/stop3"
big_load=$(load1)
t0=$(now)
q "$S" "BEGIN; INSERT INTO big SELECT g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, $rows) g;
        INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) VALUES (0, 0, 0, 0, now(), 'END-3'); COMMIT"
wait_marker "$(tdb t_big)" END-3 3600
t1=$(now)
stop_driver "$work/stop3"
big_stats=$(cat "$work/driver.out")
big_s=$(elapsed "$t0" "$t1")
big_rows_t=$(q "$(tdb t_big)" "SELECT count(*) FROM big")
rss_mb=$(awk -v k="$(field "$big_stats" rss_kb)" 'BEGIN { printf "%.0f", k / 1024 }')

cat <<EOF
## CDC (bench/cdc.sh)

Backlog: $txns pgbench transactions (scale $scale, $clients clients), $changes row changes,
$(awk -v b="$backlog_bytes" 'BEGIN { printf "%.0f", b / 1048576 }') MB of WAL; every run starts from an identical copy. Round trips other than 0
go through tests/lib/latency_proxy.py (half the round trip each way); at 0 every applier reaches both
servers over Unix sockets. Median of $repeat rounds, tools in rotating order; "load" is the 1-minute
load average when each run started.

| round trip | applier | seconds (median) | rows/s | vs native | runs (s) | load at start |
|---:|---|---:|---:|---:|---|---|
EOF
for r in $rtts; do
  nat=$(median ${times[native,$r]})
  for m in $(modes_for "$r"); do
    [ -n "${times[$m,$r]:-}" ] || continue
    s=$(median ${times[$m,$r]})
    echo "| $r ms | $m | $s | $(rps "$s") | $(ratio "$s" "$nat")x | ${times[$m,$r]# } | ${loads[$m,$r]# } |"
  done
done
cat <<EOF

| target | result |
|---|---|
EOF
for r in $rtts; do
  nat=$(median ${times[native,$r]})
  if [ "$r" = 0 ]; then
    x=$(ratio "$(median ${times[pgtide,$r]})" "$nat")
    echo "| local: pgtide >= 1.5x the native subscriber | **${x}x**: $(verdict "$x" 1.5) |"
  else
    x=$(ratio "$(median ${times[pgtide-src,$r]})" "$nat")
    echo "| $r ms: pgtide beside the source >= 1.5x the native subscriber | **${x}x**: $(verdict "$x" 1.5) |"
    x=$(ratio "$(median ${times[pgtide-dst,$r]})" "$nat")
    echo "| $r ms: pgtide beside the target >= 2x the native subscriber | **${x}x**: $(verdict "$x" 2) |"
  fi
done
for r in $rtts; do
  for m in $(modes_for "$r"); do
    [ -n "${lag[$m,$r]:-}" ] || continue
    ml=$(field "${lag[$m,$r]}" maxlag)
    lim=$(awk -v r="$r" 'BEGIN { print 1 + r / 1000 }')
    echo "| lag, $r ms, $m, pgbench at $rate of $cap tps for ${lag_secs}s: max < ${lim} s | max **${ml} s**, p95 $(field "${lag[$m,$r]}" p95lag) s, mean $(field "${lag[$m,$r]}" avglag) s (load ${lagload[$m,$r]}): $(awk -v a="$ml" -v b="$lim" 'BEGIN { print (a < b) ? "met" : "NOT met" }') |"
  done
done
echo "| RSS < 256 MB while a $big_mb MB transaction passes | $rows rows ($big_rows_t on the target) in $big_s s, peak RSS **${rss_mb} MB** (load $big_load) |"
echo
echo "- targets equal to the source after every catch-up: $same"
printf -- '- pgtide counters (first round):'
for r in $rtts; do
  for m in $(modes_for "$r"); do
    [ -n "${stats[$m,$r]:-}" ] || continue
    printf ' %s at %s ms: %s txns in %s commits, %s set-based segments, applier idle %s s;' "$m" "$r" \
      "$(field "${stats[$m,$r]}" txns)" "$(field "${stats[$m,$r]}" commits)" \
      "$(field "${stats[$m,$r]}" set_segments)" "$(field "${stats[$m,$r]}" apply_idle)"
  done
done
echo
if [ -n "${proxy_pids[*]:-}" ]; then
  printf -- '- latency proxy CPU per catch-up (median seconds; it runs on the same 2 cores):'
  for r in $rtts; do
    [ "$r" = 0 ] && continue
    for m in $(modes_for "$r"); do
      [ -n "${pcpu[$m,$r]:-}" ] && printf ' %s at %s ms %s;' "$m" "$r" "$(median ${pcpu[$m,$r]})"
    done
  done
  echo
fi
[ "$with_pgcopydb" = failed ] && echo "- pgcopydb follow $(pgcopydb --version 2>/dev/null | awk '/version/ {print $3; exit}') failed on this backlog: \"$pgcopydb_failed\" (its apply then waits forever)"
[ "$with_pgcopydb" = 0 ] && echo "- pgcopydb follow: not run (needs pgcopydb and postgresql-15-wal2json; make deps installs both)"
echo
echo "Command: \`BENCH=cdc bench/run.sh\` (BENCH_RTTS, BENCH_REPEAT, BENCH_TXNS, BENCH_LAG_SECONDS, BENCH_BIG_MB)."
