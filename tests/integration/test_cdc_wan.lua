-- CDC apply across a slow link, with many target transactions in flight.
-- pgtide reaches the target through tests/lib/latency_proxy.py (20 ms
-- round trip) with small groups, so dozens of COMMITs are on their way at
-- any moment, while the source keeps changing.  Two migrations run side by
-- side into two target databases, one recording progress as a replication
-- origin, the other as a row of pgtide.cdc_progress.  Faults: kill -9 of
-- the applying processes, every connection through the proxy reset at once
-- (a network path failing), the apply backends terminated on the target.
-- Checked:
--   * the source only hears of what the target committed: at every sample
--     no source transaction ends between the target's recorded progress
--     and the slot's confirmed position (a witness test_decoding slot lists
--     every transaction's end);
--   * afterwards each target equals the source row for row (a keyless
--     REPLICA IDENTITY FULL table shows a change applied twice or lost);
--   * a unique value swapped between rows (the set-based statement fails,
--     the group is replayed row by row) goes through the pipeline;
--   * pause_at through the proxy: the target holds exactly the source as of
--     the point, with groups in flight when it was asked for.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local latency = require "latency"
local sys = require "sys"
local pg = require "pg"
local cdc = require "core.cdc"

local ROUNDS = tonumber(os.getenv("CDC_WAN_ROUNDS") or "12")

local src = T.cluster { conf = { "logical_decoding_work_mem = 64kB" } }
local dst = T.cluster()
local proxy = latency.proxy(T, dst, 10)
local dir = T.tmp .. "/cdc-wan-" .. sys.getpid()
sys.mkdir_p(dir)
local seed = tonumber(os.getenv("CDC_WAN_SEED") or "") or os.time()
math.randomseed(seed)
io.stderr:write("seed ", seed, " (CDC_WAN_SEED to repeat)\n")

local schema = [[
CREATE TABLE acc (id int PRIMARY KEY, bal bigint NOT NULL, note text, big text);
ALTER TABLE acc ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE ledger (acc int, delta int, at int);
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE TABLE uq (id int PRIMARY KEY, email text NOT NULL UNIQUE, n int NOT NULL DEFAULT 0);
]]
src:sql(schema)
src:sql("INSERT INTO uq SELECT g, 'e' || g FROM generate_series(1, 60) g")
local migrations = {
  { name = "wan_origin", progress = "origin", db = "t_origin" },
  { name = "wan_table", progress = "table", db = "t_table" },
}
for _, m in ipairs(migrations) do
  dst:sql("CREATE DATABASE " .. m.db)
  dst:sql(schema, m.db)
  dst:sql("INSERT INTO uq SELECT g, 'e' || g FROM generate_series(1, 60) g", m.db)
  local slot = cdc.create_slot { source = src.conninfo, slot = m.name, publication = "wan_pub" }
  slot:close()
end
src:sql("SELECT pg_create_logical_replication_slot('wan_witness', 'test_decoding')")

-- The applying process: small groups and many in flight; with "catchup"
-- it waits until the source's current position is applied and prints
-- its counters.
local driver = dir .. "/driver.lua"
local f = assert(io.open(driver, "w"))
f:write([[
local cdc = require "core.cdc"
local pg = require "pg"
local source, target, slot, progress, mode = arg[1], arg[2], arg[3], arg[4], arg[5]
local w = cdc.start { source = source, target = target, slot = slot, publication = "wan_pub",
  progress = progress, memory_cap = "1MB", group = 4, inflight = 32, set_threshold = 20,
  status_interval = 1 }
if mode == "catchup" then
  local s = pg.connect(source)
  local lsn = s:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  assert(w:wait_until(lsn, 180), "not caught up in 180 s: " .. tostring(w:status().applied_lsn))
  local st = w:stop()
  print(string.format("caught up: txns=%d commits=%d fallbacks=%d reconnects=%d", st.txns, st.commits,
    st.fallbacks, st.reconnects))
  return 0
end
while true do w:run_for(1) end
]])
f:close()

local function spawn(m, mode)
  local cmd = string.format("%s script %s %s %s %s %s %s 2>>%s/%s.log", T.q(T.pgtide), T.q(driver),
    T.q(src.conninfo), T.q(proxy:conninfo("dbname=" .. m.db)), m.name, m.progress, mode or "run", dir, m.name)
  if mode == "catchup" then return T.sh(cmd) end
  local _, out = T.sh(cmd .. " >>" .. dir .. "/" .. m.name .. ".out & echo $!")
  return T.background(tonumber(out:match("%d+")))
end

local s = pg.connect(src.conninfo)
local step = 0

-- One random source transaction; every 15th swaps two unique values
-- among enough other changes for the set-based path.
local function txn()
  step = step + 1
  s:exec("BEGIN")
  if step % 15 == 0 then
    local a = math.random(1, 30)
    local b = a + 30
    local r = s:query_one("SELECT (SELECT email FROM uq WHERE id = $1) AS ea, "
      .. "(SELECT email FROM uq WHERE id = $2) AS eb", a, b)
    s:exec("UPDATE uq SET n = n + 1 WHERE id > 40")
    s:exec("UPDATE uq SET email = 'swapping' WHERE id = $1", a)
    s:exec("UPDATE uq SET email = $2 WHERE id = $1", b, r.ea)
    s:exec("UPDATE uq SET email = $2 WHERE id = $1", a, r.eb)
  else
    for _ = 1, math.random(1, 8) do
      local id, k = math.random(1, 300), math.random(10)
      if k <= 3 then
        s:exec("INSERT INTO acc VALUES ($1, 0, 'n', CASE WHEN $1 % 4 = 0 THEN repeat(md5($1::text), 60) END) "
          .. "ON CONFLICT (id) DO UPDATE SET bal = acc.bal + 1", id)
      elseif k <= 5 then
        s:exec("UPDATE acc SET bal = bal + 1, note = note || '.' WHERE id = $1", id)
      elseif k == 6 then
        s:exec("UPDATE acc SET id = id + 1000 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM acc WHERE id = $1 + 1000)", id)
      elseif k == 7 then
        s:exec("DELETE FROM acc WHERE id = $1 OR id = $1 + 1000", id)
      elseif k == 8 then
        s:exec("DELETE FROM ledger WHERE ctid = (SELECT ctid FROM ledger WHERE acc = $1 LIMIT 1)", id % 40)
      else
        s:exec("INSERT INTO ledger VALUES ($1, $2, $3)", id % 40, math.random(-5, 5), step)
      end
    end
  end
  if math.random(30) == 1 then s:exec("ROLLBACK") else s:exec("COMMIT") end
end

-- Progress as the target records it, and as the source was told.
local function lsn_int(l) return l and l ~= "" and cdc.lsn_int(l) or 0 end
local function confirmed(m)
  return lsn_int(src:sql(string.format(
    "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '%s'", m.name)))
end
-- nil until the applier has made its record (just after it starts)
local function recorded(m)
  local l
  if m.progress == "origin" then
    l = dst:sql(string.format("SELECT coalesce(pg_replication_origin_progress(roname, true)::text, '0/0') "
      .. "FROM pg_replication_origin WHERE roname = '%s'", m.name))
  else
    l = dst:sql(string.format("SELECT (SELECT coalesce(lsn::text, '0/0') FROM pgtide.cdc_progress WHERE name = '%s') "
      .. "WHERE to_regclass('pgtide.cdc_progress') IS NOT NULL", m.name), m.db)
  end
  return l ~= nil and l ~= "" and lsn_int(l) or nil
end
local samples = {}
local cur_round = 0
local function sample()
  for _, m in ipairs(migrations) do
    local c = confirmed(m)         -- first what the source was told,
    local p = recorded(m)          -- then what the target holds (it only grows)
    if p then samples[#samples + 1] = { m = m.name, confirmed = c, recorded = p, round = cur_round } end
  end
end

local function checksum(c, t, db)
  return c:sql(string.format(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM %s x", t), db)
end

T.test(string.format("%d rounds of faults with COMMITs in flight across a 20 ms link, then exact equality", ROUNDS),
  function ()
  local pids = {}
  local faults = { kill = 0, cut = 0, terminate = 0 }
  for round = 1, ROUNDS do
    cur_round = round
    for _, m in ipairs(migrations) do
      if not pids[m.name] then pids[m.name] = spawn(m) end
    end
    local stop_at = sys.monotonic() + 1 + math.random() * 2
    local next_sample = 0
    repeat
      txn()
      if sys.monotonic() >= next_sample then
        sample()
        next_sample = sys.monotonic() + 0.2
      end
    until sys.monotonic() >= stop_at
    local fault = ({ "kill", "cut", "terminate" })[round % 3 + 1]
    faults[fault] = faults[fault] + 1
    if fault == "kill" then
      for _, m in ipairs(migrations) do
        local pid = pids[m.name]
        T.ok(T.sh("kill -0 " .. pid .. " 2>/dev/null") == 0,
          m.name .. " died on its own: " .. (sys.readfile(dir .. "/" .. m.name .. ".log") or ""):sub(-2000)
          .. (sys.readfile(dir .. "/" .. m.name .. ".out") or ""):sub(-1000))
        sys.kill(pid, "KILL")
        T.sh("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
        pids[m.name] = nil
      end
    elseif fault == "cut" then
      proxy:cut()
    else
      dst:sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgtide' "
        .. "AND backend_type = 'client backend'")
    end
    sample()
  end
  for _, m in ipairs(migrations) do
    if pids[m.name] then
      sys.kill(pids[m.name], "KILL")
      T.sh("while kill -0 " .. pids[m.name] .. " 2>/dev/null; do sleep 0.05; done")
    end
  end
  -- a last swap the catch-up itself must replay row by row: alone in the
  -- last catch-up's backlog, so that it is one set-based segment (in a
  -- larger backlog a segment may end inside it, and then each half
  -- applies set-based without a conflict)
  local function catch_up(m)
    local code, out, err = spawn(m, "catchup")
    T.eq(code, 0, string.format("%s catch-up failed (exit %s, %s %s): %s", m.name, tostring(code), out, err,
      (sys.readfile(dir .. "/" .. m.name .. ".log") or ""):sub(-3000)))
    return out
  end
  for _ = 1, 14 - step % 15 do txn() end
  for _, m in ipairs(migrations) do catch_up(m) end
  txn()   -- the swap (every 15th)
  for _, m in ipairs(migrations) do
    local out = catch_up(m)
    local fb = tonumber(out:match("fallbacks=(%d+)"))
    T.ok(fb and fb >= 1, m.name .. ": the unique swap was not replayed row by row (fallbacks " .. tostring(fb) .. ")")
    for _, t in ipairs { "acc", "ledger", "uq" } do
      T.eq(checksum(dst, t, m.db), checksum(src, t), m.name .. ": table " .. t)
    end
  end
  sample()
  -- every transaction's end, from the witness slot
  local ends = {}
  -- (transactions without a change to a table, such as autovacuum's, are
  -- not streamed: the keepalive rule may confirm past them)
  local out = src:sql("SELECT lsn FROM pg_logical_slot_peek_changes('wan_witness', NULL, NULL, "
    .. "'skip-empty-xacts', '1') WHERE data LIKE 'COMMIT%'")
  for l in out:gmatch("[^\n]+") do ends[#ends + 1] = cdc.lsn_int(l) end
  T.ok(#ends > 100, "witness slot saw " .. #ends .. " transactions")
  local bad
  for _, x in ipairs(samples) do
    for _, e in ipairs(ends) do
      if e > x.recorded and e <= x.confirmed then
        bad = string.format("%s: the source was told %s, the target had only %s, and a transaction ends at %s "
          .. "(round %d)", x.m, cdc.lsn(x.confirmed), cdc.lsn(x.recorded), cdc.lsn(e), x.round)

        break
      end
    end
    if bad then break end
  end
  T.ok(bad == nil, bad)
  io.stderr:write(string.format("%d source transactions; faults: %d kills, %d cuts, %d terminations; %d samples\n",
    step, faults.kill, faults.cut, faults.terminate, #samples))
end)

T.test("pause_at across the link: exactly the transactions up to the point", function ()
  local m = migrations[1]
  local w <close> = cdc.start { source = src.conninfo, target = proxy:conninfo("dbname=" .. m.db), slot = m.name,
    publication = "wan_pub", memory_cap = "1MB", group = 4, inflight = 32, set_threshold = 20 }
  for _ = 1, 300 do txn() end
  local p = s:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  local before = {}
  for _, t in ipairs { "acc", "ledger", "uq" } do before[t] = checksum(src, t) end
  w:pause_at(p)
  for _ = 1, 300 do txn() end
  T.ok(w:wait_until(p, 60), "did not reach the pause point")
  sys.sleep(0.5)   -- later transactions must stay unapplied
  T.eq(w:status().state, "paused", "state")
  for _, t in ipairs { "acc", "ledger", "uq" } do
    T.eq(checksum(dst, t, m.db), before[t], "paused target, table " .. t)
  end
  w:resume()
  local now = s:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  T.ok(w:wait_until(now, 60), "did not catch up after resume")
  for _, t in ipairs { "acc", "ledger", "uq" } do
    T.eq(checksum(dst, t, m.db), checksum(src, t), "after resume, table " .. t)
  end
  w:stop()
end)

s:close()
for _, m in ipairs(migrations) do
  cdc.drop { source = src.conninfo, slot = m.name, publication = "wan_pub" }
end
src:sql("SELECT pg_drop_replication_slot('wan_witness')")
proxy:stop()
T.done()
