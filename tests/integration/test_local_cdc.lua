-- `pgtide run local` with CDC (the default) end to end between two real
-- PostgreSQL 15 clusters, under a random mixed write workload that runs
-- from before the slot exists, through the full load, until the cutover:
-- inserts, updates, deletes, truncates (one with CASCADE), TOASTed values
-- changed and left unchanged, primary-key updates cascading to a child
-- table, multi-table transactions, rollbacks, a keyless REPLICA IDENTITY
-- FULL table, and transactions bigger than memory_cap (1MB).
--
-- The pgtide run process is killed with SIGKILL at random points, at
-- least 10 times across the full load and the streaming phase, each
-- followed by a resume; pgtide's own connections are then terminated
-- with pg_terminate_backend while it streams (it must recover without
-- exiting); `pgtide status --json` is checked while running and after;
-- the cutover is requested by `pgtide cutover` from another process.
-- At the end the target equals the source row for row, the deferred
-- foreign keys are there and valid, sequences are ahead and the slot is
-- gone.  Also: a table without a usable replica identity is refused at
-- preflight with the fix.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local sys = require "sys"
local json = require "json"

local FULL_LOAD_KILLS = 4
local STREAM_KILLS = tonumber(os.getenv("CDC_STREAM_KILLS") or "7")

local src = T.cluster { conf = { "logical_decoding_work_mem = 64kB" } }
local dst = T.cluster()
local tmp = T.tmp .. "/local-cdc-" .. sys.getpid()
sys.mkdir_p(tmp)
local seed = os.time()
math.randomseed(seed)
io.stderr:write("seed ", seed, "\n")

local function sh_ok(cmd)
  local code, out, err = T.sh(cmd)
  if code ~= 0 then error(cmd .. " failed: " .. err .. out, 2) end
  return out
end

local function alive(pid)
  return T.sh("kill -0 " .. pid .. " 2>/dev/null") == 0
end

local function wait_gone(pid)
  T.sh("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
end

-- {==================================================================
-- Preflight refuses tables without a usable replica identity
-- ===================================================================

T.test("preflight refuses a table without a usable replica identity, naming the fix", function()
  src:sql("CREATE DATABASE noident")
  dst:sql("CREATE DATABASE noident")
  src:sql([[CREATE TABLE keyed (id int PRIMARY KEY, v text);
            CREATE TABLE loose (a int, b text);
            CREATE TABLE fullid (a int, b text);
            ALTER TABLE fullid REPLICA IDENTITY FULL;
            CREATE TABLE nothing (id int PRIMARY KEY);
            ALTER TABLE nothing REPLICA IDENTITY NOTHING;]], "noident")
  local code, _, err = T.run { "run", "local", "source=" .. src.conninfo .. " dbname=noident",
    "target=" .. dst.conninfo .. " dbname=noident", "--state", tmp .. "/noident" }
  T.eq(code, 1, "exit code:\n" .. err)
  T.match(err, "%[FAIL%] Replica identity for CDC: 2 table%(s%) have no usable replica identity[^\n]*"
    .. "public%.loose %(no primary key%)[^\n]*public%.nothing %(REPLICA IDENTITY NOTHING%)")
  T.match(err, "fix: add a primary key[^\n]*ALTER TABLE public%.loose REPLICA IDENTITY FULL;")
  T.nomatch(err, "public.fullid (", "FULL is usable")
  -- the same database is fine as a one-shot clone
  code, _, err = T.run { "run", "local", "source=" .. src.conninfo .. " dbname=noident",
    "target=" .. dst.conninfo .. " dbname=noident", "cdc=false", "--state", tmp .. "/noident-clone" }
  T.eq(code, 0, "cdc=false clone:\n" .. err)
  T.match(err, "%[WARN%] Tables without a primary key")
end)

-- }==================================================================

-- {==================================================================
-- The workload
-- ===================================================================

src:sql("CREATE DATABASE app")
dst:sql("CREATE DATABASE app")
local SRC = src.conninfo .. " dbname=app"
local DST = dst.conninfo .. " dbname=app"
src:sql([[
CREATE TABLE acc (id int PRIMARY KEY, bal bigint NOT NULL, note text, big text);
ALTER TABLE acc ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE orders (id bigserial PRIMARY KEY,
                     acc_id int NOT NULL REFERENCES acc (id) ON UPDATE CASCADE ON DELETE CASCADE,
                     amount int NOT NULL, memo text);
CREATE INDEX orders_acc ON orders (acc_id);
CREATE TABLE ledger (acc int, delta int, at int);
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, payload text);
CREATE TABLE tags (k text PRIMARY KEY, v jsonb);
CREATE TABLE tag_refs (id serial PRIMARY KEY, k text REFERENCES tags (k));
INSERT INTO acc SELECT g, g * 10, 'n' || g, CASE WHEN g % 10 = 0 THEN repeat(md5(g::text), 200) END
  FROM generate_series(1, 3000) g;
INSERT INTO orders (acc_id, amount, memo) SELECT 1 + g % 3000, g % 500, 'm' || g FROM generate_series(1, 20000) g;
INSERT INTO ledger SELECT g % 50, g % 7 - 3, g FROM generate_series(1, 5000) g;
INSERT INTO events (kind, payload) SELECT 'init', repeat('p', 100 + g % 3000) FROM generate_series(1, 2000) g;
INSERT INTO tags SELECT 't' || g, jsonb_build_object('g', g) FROM generate_series(1, 100) g;
INSERT INTO tag_refs (k) SELECT 't' || (1 + g % 100) FROM generate_series(1, 300) g;
]], "app")

-- The writer: random transactions until the stop file appears (or 240 s).
local writer = tmp .. "/writer.lua"
local f = assert(io.open(writer, "w"))
f:write([=[
local pg = require "pg"
local sys = require "sys"
local conninfo, stopfile, seed, countfile = arg[1], arg[2], tonumber(arg[3]), arg[4]
math.randomseed(seed)
local c = pg.connect(conninfo)
c:exec("SET lock_timeout = '5s'")
local n, committed, failed, step = 0, 0, 0, 0
local deadline = sys.monotonic() + 240
local function op()
  local k = math.random(100)
  local id = math.random(1, 4000)
  if k <= 12 then
    c:exec("INSERT INTO acc VALUES ($1, 0, 'i', CASE WHEN $1 % 4 = 0 THEN repeat(md5($1::text), 150) END) "
      .. "ON CONFLICT (id) DO UPDATE SET bal = acc.bal + 1", id)
  elseif k <= 30 then
    -- big (TOASTed) left unchanged
    c:exec("UPDATE acc SET bal = bal + $2, note = note || '.' WHERE id = $1", id, math.random(-9, 9))
  elseif k <= 34 then
    c:exec("UPDATE acc SET big = repeat(md5(random()::text), 150 + $2) WHERE id = $1", id, math.random(50))
  elseif k <= 38 then
    -- primary-key change, cascading to orders
    c:exec("UPDATE acc SET id = id + 100000 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM acc WHERE id = $1 + 100000)", id)
  elseif k <= 41 then
    c:exec("DELETE FROM acc WHERE id = $1", id)
  elseif k <= 55 then
    c:exec("INSERT INTO orders (acc_id, amount, memo) SELECT id, $2, 'w' FROM acc WHERE id >= $1 ORDER BY id LIMIT 1",
      id, math.random(1, 900))
  elseif k <= 63 then
    c:exec("UPDATE orders SET amount = amount + 1, memo = NULL WHERE id = (SELECT max(id) FROM orders) - $1", id % 50)
  elseif k <= 67 then
    c:exec("DELETE FROM orders WHERE id = (SELECT min(id) FROM orders) + $1", id % 20)
  elseif k <= 76 then
    c:exec("INSERT INTO ledger VALUES ($1, $2, $3)", id % 50, math.random(-5, 5), step)
  elseif k <= 80 then
    c:exec("DELETE FROM ledger WHERE ctid = (SELECT ctid FROM ledger WHERE acc = $1 LIMIT 1)", id % 50)
  elseif k <= 84 then
    c:exec("UPDATE ledger SET delta = delta + 1 WHERE ctid = (SELECT ctid FROM ledger WHERE acc = $1 LIMIT 1)", id % 50)
  elseif k <= 92 then
    c:exec("INSERT INTO events (kind, payload) VALUES ('w', repeat(md5(random()::text), $1))", math.random(1, 400))
  elseif k <= 95 then
    c:exec("UPDATE events SET kind = kind || '+' WHERE id = (SELECT max(id) FROM events) - $1", id % 30)
  elseif k <= 98 then
    c:exec("INSERT INTO tags VALUES ($1, jsonb_build_object('s', $2::int)) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
      "t" .. (id % 150), step)
    c:exec("INSERT INTO tag_refs (k) VALUES ($1)", "t" .. (id % 150))
  else
    c:exec("DELETE FROM tag_refs WHERE id = (SELECT min(id) FROM tag_refs)")
  end
end
while not sys.exists(stopfile) and sys.monotonic() < deadline do
  step = step + 1
  local ok, err = pcall(function()
    c:exec("BEGIN")
    local r = math.random(400)
    if r == 1 then
      -- bigger than memory_cap (1MB): about 3 MB in one transaction
      c:exec("INSERT INTO events (kind, payload) SELECT 'bulk', repeat(md5(g::text), 30) FROM generate_series(1, 3000) g")
      c:exec("UPDATE acc SET bal = bal + 1 WHERE id % 7 = 0")
    elseif r == 2 then
      c:exec("TRUNCATE ledger")
      c:exec("INSERT INTO ledger SELECT g % 50, 1, $1 FROM generate_series(1, 200) g", step)
    elseif r == 3 then
      c:exec("TRUNCATE tags CASCADE")
      c:exec("INSERT INTO tags SELECT 'r' || g, '{}' FROM generate_series(1, 20) g")
    else
      for _ = 1, math.random(1, 5) do op() end
    end
    if math.random(30) == 1 then c:exec("ROLLBACK") else c:exec("COMMIT"); committed = committed + 1 end
  end)
  if not ok then
    failed = failed + 1
    pcall(c.exec, c, "ROLLBACK")
    if not pcall(c.query_one, c, "SELECT 1 AS x") then break end
  end
  n = n + 1
  if n % 50 == 0 then sys.write_atomic(countfile, tostring(committed)) end
  sys.sleep(0.004)
end
sys.write_atomic(countfile, tostring(committed))
print(string.format("writer: %d transactions, %d committed, %d failed", n, committed, failed))
]=])
f:close()

local function start_writer(name, conninfo, wseed)
  local stop = tmp .. "/" .. name .. ".stop"
  os.remove(stop)
  local _, out = T.sh(string.format("%s script %s %s %s %d %s >%s/%s.log 2>&1 & echo $!", T.q(T.pgtide),
    T.q(writer), T.q(conninfo), T.q(stop), wseed, T.q(tmp .. "/" .. name .. ".count"), tmp, name))
  return { pid = tonumber(out:match("%d+")), stop = stop, log = tmp .. "/" .. name .. ".log",
           count = tmp .. "/" .. name .. ".count" }
end

local function stop_writer(w)
  local fh = io.open(w.stop, "w"); fh:close()
  local deadline = sys.monotonic() + 30
  while alive(w.pid) and sys.monotonic() < deadline do sys.sleep(0.05) end
  if alive(w.pid) then sys.kill(w.pid, "KILL") end
  return sys.readfile(w.log) or ""
end

-- }==================================================================

local TABLES = { "acc", "orders", "ledger", "events", "tags", "tag_refs" }

local function digest(c, tbl)
  return c:sql(string.format(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM %s t", tbl), "app")
end

local state_dir = tmp .. "/state"
local statefile = state_dir .. "/state.json"
local runlog = tmp .. "/run.log"

local function read_state()
  local ok, st = pcall(json.decode, sys.readfile(statefile) or "")
  return ok and type(st) == "table" and st or nil
end

-- The first step not done, and its status ("running" once a run is in it).
local function current_step()
  local st = read_state()
  if not st then return "none", "none" end
  for _, name in ipairs(st.order or {}) do
    local s = st.steps[name]
    if not s or s.status ~= "done" then return name, s and s.status or "pending" end
  end
  return "finished", "done"
end

local function spawn(extra)
  local args = { T.q(T.pgtide), "run", "local", T.q("source=" .. SRC), T.q("target=" .. DST), "jobs=2",
                 "memory_cap=1MB", "wal_warn_mb=0", "--state", T.q(state_dir), "--yes" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = T.q(a) end
  local _, out = T.sh(table.concat(args, " ") .. " >>" .. runlog .. " 2>&1 </dev/null & echo $!")
  return tonumber(out:match("%d+"))
end

local function status_json()
  local code, out, err = T.run { "status", "--state", state_dir, "--json" }
  T.eq(code, 0, "pgtide status: " .. err)
  return json.decode(out)
end

local function runlog_tail()
  return (sys.readfile(runlog) or ""):sub(-3000)
end

local kills_by_step = {}
local w

T.test(string.format("%d kill -9 during the full load and %d during streaming, each resumed, "
  .. "under a live workload", FULL_LOAD_KILLS, STREAM_KILLS), function()
  local code, _, err = T.run { "run", "local", "source=" .. SRC, "target=" .. DST, "--state", state_dir,
                               "--only", "preflight" }
  T.eq(code, 0, "preflight: " .. err)
  code, _, err = T.run { "run", "local", "source=" .. SRC, "target=" .. DST, "--state", state_dir,
                         "--only", "schema" }
  T.eq(code, 0, "schema: " .. err)
  -- slow the copy down on the target so that kills land inside it
  -- (ALWAYS triggers fire even under session_replication_role = replica)
  dst:sql([[
    CREATE FUNCTION public.throttle() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF random() < 0.02 THEN PERFORM pg_sleep(0.01); END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER throttle BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION public.throttle();
    ALTER TABLE orders ENABLE ALWAYS TRIGGER throttle;
    CREATE TRIGGER throttle BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION public.throttle();
    ALTER TABLE ledger ENABLE ALWAYS TRIGGER throttle;]], "app")
  -- the workload starts before the slot exists
  w = start_writer("w1", SRC, seed)
  sys.sleep(0.5)
  -- phase 1: kills inside the full load (each resume keeps the slot and the tables copied
  -- whole, and copies the others again under a new snapshot)
  local slots_seen = {}
  for i = 1, FULL_LOAD_KILLS do
    local pid = spawn { "--only", "full-load" }
    local deadline = sys.monotonic() + 60
    local target_wait = 0.4 + math.random() * 1.6
    local t_slot
    repeat
      sys.sleep(0.05)
      local st = read_state()
      local fl = st and st.steps["full-load"]
      if not t_slot and fl and fl.outputs and fl.outputs.slot then
        t_slot = sys.monotonic()
        slots_seen[fl.outputs.slot.lsn] = true
      end
    until (t_slot and sys.monotonic() - t_slot >= target_wait) or sys.monotonic() > deadline or not alive(pid)
    T.ok(alive(pid), "run %d ended before the kill:\n%s", i, runlog_tail())
    local st = read_state()
    T.eq(st.steps["full-load"].status, "running", "kill lands in the full load")
    sys.kill(pid, "KILL")
    wait_gone(pid)
    kills_by_step["full-load"] = (kills_by_step["full-load"] or 0) + 1
  end
  local n = 0
  for _ in pairs(slots_seen) do n = n + 1 end
  T.eq(n, 1, "the resumes kept the slot")
  -- let the load finish, then remove the throttle
  local pid = spawn { "--only", "full-load" }
  local deadline = sys.monotonic() + 120
  while alive(pid) and sys.monotonic() < deadline do sys.sleep(0.1) end
  T.ok(not alive(pid), "the full load did not finish in time")
  T.eq(read_state().steps["full-load"].status, "done", "full load done:\n" .. runlog_tail())
  local kept, resumes = 0, 0
  for k in sys.readfile(runlog):gmatch("resuming after an interruption under slot %S+ %(kept at %S+%): "
      .. "(%d+) table%(s%) copied before are kept") do
    resumes, kept = resumes + 1, kept + tonumber(k)
  end
  T.eq(resumes, FULL_LOAD_KILLS, "each kill in the load was resumed under the same slot")
  io.stderr:write(string.format("full-load resumes: %d, tables kept over them: %d\n", resumes, kept))
  local synced = read_state().steps["full-load"].outputs.sync
  T.ok(type(synced) == "table", "the full load recorded its tables' sync positions")
  dst:sql([[DROP TRIGGER throttle ON orders; DROP TRIGGER throttle ON ledger; DROP FUNCTION public.throttle();]], "app")
  -- phase 2: kills across post-data, sequences, vacuum, count check and streaming
  local streaming_kills = 0
  for i = 1, STREAM_KILLS do
    pid = spawn()
    local wait = 1.0 + math.random() * 3.0
    if i <= 2 then
      -- the first kills land in the steps between the load and streaming when they can
      local d2 = sys.monotonic() + 30
      local step, status
      repeat
        sys.sleep(0.01)
        step, status = current_step()
      until status == "running" or sys.monotonic() > d2
      wait = math.random() * (step == "stream" and 1.0 or 0.05)
    elseif i > STREAM_KILLS // 2 then
      -- make sure the later kills land while streaming
      local d2 = sys.monotonic() + 60
      repeat sys.sleep(0.1) until current_step() == "stream" or sys.monotonic() > d2 or not alive(pid)
      wait = 0.2 + math.random() * 2.0
    end
    sys.sleep(wait)
    T.ok(alive(pid), "run ended on its own before kill %d:\n%s", i, runlog_tail())
    local where = current_step()
    sys.kill(pid, "KILL")
    wait_gone(pid)
    kills_by_step[where] = (kills_by_step[where] or 0) + 1
    if where == "stream" then streaming_kills = streaming_kills + 1 end
  end
  local parts, total = {}, 0
  for k, v in pairs(kills_by_step) do parts[#parts + 1] = k .. "=" .. v; total = total + v end
  io.stderr:write("kills by step: " .. table.concat(parts, " ") .. "\n")
  T.ok(total >= 10, "at least 10 kills (%d)", total)
  T.ok(streaming_kills >= 2, "kills while streaming: %d", streaming_kills)
end)

local pid

T.test("streaming survives pg_terminate_backend of its connections; status --json while running", function()
  T.ok(w and alive(w.pid), "the workload is running")
  pid = spawn()
  local deadline = sys.monotonic() + 90
  repeat sys.sleep(0.2) until current_step() == "stream" or sys.monotonic() > deadline or not alive(pid)
  T.eq(current_step(), "stream", "streaming:\n" .. runlog_tail())
  sys.sleep(2.5)
  local s = status_json()
  T.eq(s.running, true, "running")
  T.eq(s.pid, pid, "pid")
  T.eq(s.phase, "streaming")
  T.eq(s.current_step, "stream")
  T.eq(s.full_load.percent, 100)
  T.eq(s.full_load.units, s.full_load.units_done)
  T.eq(#s.full_load.tables, #TABLES)
  T.ok(math.type(s.cdc.lag_bytes) == "integer" and s.cdc.lag_bytes >= 0, "lag_bytes %s", tostring(s.cdc.lag_bytes))
  T.ok(type(s.cdc.lag_seconds) == "number" and s.cdc.lag_seconds >= 0 and s.cdc.lag_seconds < 30,
    "lag_seconds %s", tostring(s.cdc.lag_seconds))
  T.eq(s.cdc.state, "streaming")
  T.ok(s.cdc.txns > 0, "transactions applied")
  T.eq(s.slot.exists, true)
  T.eq(s.slot.active, true)
  T.ok(s.retained_wal_bytes >= 0, "retained WAL")
  T.eq(s.wal_warn_bytes, 0)
  T.eq(s.cutover.status, "pending")
  T.eq(s.cutover.requested, false)
  for _, st in ipairs(s.steps) do
    if st.name == "count-check" then T.eq(st.status, "done") end
  end
  -- the human form too
  local code, out = T.run { "status", "--state", state_dir }
  T.eq(code, 0)
  T.match(out, "phase:%s+streaming")
  T.match(out, "CDC:%s+streaming, lag ")
  T.match(out, "slot pgtide_local_app_app: active, retains ")
  -- terminate every connection of pgtide's on both servers
  local before = s.cdc.reconnects
  -- (both lists first: losing one side makes pgtide drop the other side's connections too)
  local list_sql = "SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity "
    .. "WHERE application_name LIKE 'pgtide%' AND pid <> pg_backend_pid()"
  local pids_src, pids_dst = src:sql(list_sql), dst:sql(list_sql)
  local kill_sql = "SELECT count(*) FILTER (WHERE pg_terminate_backend(p)) FROM unnest('{%s}'::int[]) p"
  local killed_dst = tonumber(dst:sql(string.format(kill_sql, pids_dst)))
  local killed_src = tonumber(src:sql(string.format(kill_sql, pids_src)))
  T.ok(killed_src >= 2 and killed_dst >= 1, "terminated %d source and %d target backends", killed_src, killed_dst)
  -- it reconnects on its own and keeps applying the workload
  local applied
  deadline = sys.monotonic() + 60
  repeat
    sys.sleep(0.5)
    s = status_json()
    applied = s.cdc.reconnects > before and s.cdc.state == "streaming" and s.cdc.lag_seconds < 10
  until applied or sys.monotonic() > deadline or not alive(pid)
  T.ok(alive(pid), "the run exited after pg_terminate_backend:\n" .. runlog_tail())
  T.ok(applied, "recovered (reconnects %d, state %s)", s.cdc.reconnects, tostring(s.cdc.state))
  -- the WAL warning threshold is 0 here (wal_warn_mb=0): any retained WAL is reported
  T.eq(s.wal_warning, s.retained_wal_bytes > 0, "wal warning")
  T.match(sys.readfile(runlog), "the replication slot retains [%d.]+ [kMG]?B of WAL on the source %(warning threshold 0 B")
end)

T.test("pgtide cutover from another process: target equals source row for row", function()
  T.ok(pid and alive(pid), "the run is streaming")
  local wout = stop_writer(w)
  io.stderr:write(wout)
  local committed = tonumber(sys.readfile(w.count) or "0")
  T.ok(committed > 200, "the workload committed %d transactions", committed)
  local code, out, err = T.run { "cutover", "--state", state_dir, "--timeout", "180" }
  T.eq(code, 0, "pgtide cutover:\n" .. out .. err .. "\n" .. runlog_tail())
  T.match(out, "cutover requested for migration local")
  T.match(out, "cutover done: the target has every change up to %x+/%x+, validation equal")
  local deadline = sys.monotonic() + 60
  while alive(pid) and sys.monotonic() < deadline do sys.sleep(0.1) end
  T.ok(not alive(pid), "the run did not exit after the cutover")
  local log = sys.readfile(runlog)
  T.match(log, "cutover requested by pgtide cutover")
  T.match(log, "Update the application's connection strings to the target")
  T.match(log, "runbook local finished")
  for _, t in ipairs(TABLES) do
    T.eq(digest(dst, t), digest(src, t), "table " .. t)
  end
  T.ok(tonumber(src:sql("SELECT count(*) FROM events WHERE kind = 'bulk'", "app")) >= 0)
  -- foreign keys: added at the cutover, validated
  T.eq(dst:sql("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated", "app"), "2")
  -- sequences ahead of the source
  for _, seq in ipairs { "orders_id_seq", "events_id_seq", "tag_refs_id_seq" } do
    local a = tonumber(src:sql("SELECT last_value FROM " .. seq, "app"))
    local b = tonumber(dst:sql("SELECT last_value FROM " .. seq, "app"))
    T.ok(b >= a + 1000, "%s: source %d, target %d", seq, a, b)
  end
  -- cleanup dropped the slot, the publication and the origin
  T.eq(src:sql("SELECT count(*) FROM pg_replication_slots"), "0")
  T.eq(src:sql("SELECT count(*) FROM pg_publication", "app"), "0")
  T.eq(dst:sql("SELECT count(*) FROM pg_replication_origin"), "0")
  local s = status_json()
  T.eq(s.running, false)
  T.eq(s.phase, "done")
  T.eq(s.cutover.status, "done")
  T.eq(s.cutover.validation, "equal")
  T.match(s.cutover.lsn, "^%x+/%x+$")
  T.eq(s.slot.exists, false)
  T.eq(s.cdc.state, "stopped")
  -- a second request is answered without touching anything
  code, out = T.run { "cutover", "--state", state_dir }
  T.eq(code, 0)
  T.match(out, "already cut over")
end)

if w and alive(w.pid) then stop_writer(w) end
if pid and alive(pid) then sys.kill(pid, "KILL") end
T.done()
