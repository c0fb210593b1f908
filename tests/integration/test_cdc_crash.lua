-- kill -9 of the process applying CDC, at random points, while the
-- source keeps changing: at least 10 kills, each followed by a restart
-- that resumes from the progress recorded on the target.  At the end
-- the target equals the source row for row.  The "ledger" table has no
-- key and REPLICA IDENTITY FULL: a change applied twice would leave a
-- duplicate row, a lost one a missing row.  Some kills land while a
-- transaction far bigger than the memory cap is being received (spilled,
-- streamed in progress by the source) or applied.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local sys = require "sys"
local pg = require "pg"
local cdc = require "core.cdc"

local KILLS = tonumber(os.getenv("CDC_KILLS") or "12")

local src = T.cluster { conf = { "logical_decoding_work_mem = 64kB" } }
local dst = T.cluster()
local dir = T.tmp .. "/cdc-crash-" .. sys.getpid()
sys.mkdir_p(dir)

local schema = [[
CREATE TABLE acc (id int PRIMARY KEY, bal bigint NOT NULL, note text, big text);
ALTER TABLE acc ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE ledger (acc int, delta int, at int);
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE TABLE events (id bigserial PRIMARY KEY, kind text, payload text);
]]
src:sql(schema)
dst:sql(schema)
local seed = os.time()
math.randomseed(seed)
io.stderr:write("seed ", seed, "\n")

local slot = cdc.create_slot { source = src.conninfo, slot = "crash", publication = "crash_pub" }
slot:close()

-- The applying process: starts the worker and applies until killed;
-- with "catchup" it waits until the source's current LSN is applied.
local driver = dir .. "/driver.lua"
local f = assert(io.open(driver, "w"))
f:write([[
local cdc = require "core.cdc"
local pg = require "pg"
local source, target, state, mode = arg[1], arg[2], arg[3], arg[4]
local w = cdc.start { source = source, target = target, slot = "crash", publication = "crash_pub",
  state_dir = state, memory_cap = "1MB", group = 25, set_threshold = 40, status_interval = 1 }
print("started")
io.stdout:flush()
if mode == "catchup" then
  local ok, err = pcall(function ()
    local s = pg.connect(source)
    local lsn = s:query_one("SELECT pg_current_wal_lsn()::text AS l").l
    print("catching up to " .. lsn)
    io.stdout:flush()
    assert(w:wait_until(lsn, 300), "not caught up in 300 s: " .. tostring(w:status().applied_lsn))
    local st = w:stop()
    print(string.format("caught up: %d txns, %d reconnects", st.txns, st.reconnects))
  end)
  if not ok then
    io.stderr:write("catch-up failed: ", tostring(err), "\n")
    io.stderr:flush()
    return 1
  end
  return 0
end
while true do w:run_for(1) end
]])
f:close()

local function spawn(mode)
  local cmd = string.format("%s script %s %s %s %s %s >>%s/driver.log 2>&1", T.q(T.pgtide), T.q(driver),
    T.q(src.conninfo), T.q(dst.conninfo), T.q(dir), mode or "run", dir)
  if mode == "catchup" then return T.sh(cmd) end
  local _, out = T.sh(cmd .. " & echo $!")
  return tonumber(out:match("%d+"))
end

local s = pg.connect(src.conninfo)
local step = 0

-- One random source transaction.
local function txn()
  step = step + 1
  local r = math.random(100)
  s:exec("BEGIN")
  if r <= 1 then
    -- far bigger than the 1 MB memory cap
    s:exec("INSERT INTO ledger SELECT g % 50, 1, $1 FROM generate_series(1, 25000) g", step)
    s:exec("UPDATE acc SET bal = bal + 1")
  else
    for _ = 1, math.random(1, 6) do
      local id, k = math.random(1, 400), math.random(10)
      if k <= 3 then
        s:exec("INSERT INTO acc VALUES ($1, 0, 'n', CASE WHEN $1 % 3 = 0 THEN repeat(md5($1::text), 80) END) "
          .. "ON CONFLICT (id) DO UPDATE SET bal = acc.bal + 1", id)
      elseif k <= 5 then
        s:exec("UPDATE acc SET bal = bal + 1, note = note || '.' WHERE id = $1", id)
      elseif k == 6 then
        s:exec("UPDATE acc SET id = id + 1000 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM acc WHERE id = $1 + 1000)", id)
      elseif k == 7 then
        s:exec("DELETE FROM acc WHERE id = $1 OR id = $1 + 1000", id)
      elseif k == 8 then
        s:exec("DELETE FROM ledger WHERE ctid = (SELECT ctid FROM ledger WHERE acc = $1 LIMIT 1)", id % 50)
      else
        s:exec("INSERT INTO ledger VALUES ($1, $2, $3)", id % 50, math.random(-5, 5), step)
        s:exec("INSERT INTO events (kind, payload) VALUES ('e', repeat('p', $1))", math.random(1, 3000))
      end
    end
  end
  if math.random(40) == 1 then s:exec("ROLLBACK") else s:exec("COMMIT") end
end

local function checksum(c, t)
  return c:sql(string.format(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM %s x", t))
end

T.test(string.format("%d kill -9 of the applying process, resume, exact equality", KILLS), function ()
  local kills = 0
  for i = 1, KILLS do
    local pid = spawn()
    T.ok(pid, "driver did not start")
    -- keep the source busy for a random time, then kill mid-apply
    local stop_at = sys.monotonic() + 0.3 + math.random() * 1.5
    repeat txn() until sys.monotonic() >= stop_at
    if i % 4 == 0 then
      -- land the kill while a big transaction is in flight
      s:exec("INSERT INTO ledger SELECT g % 50, 2, $1 FROM generate_series(1, 25000) g", -i)
      sys.sleep(math.random() * 0.8)
    end
    local alive = T.sh("kill -0 " .. pid .. " 2>/dev/null") == 0
    T.ok(alive, "the driver died on its own: " .. (sys.readfile(dir .. "/driver.log") or ""):sub(-2000))
    sys.kill(pid, "KILL")
    T.sh("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
    kills = kills + 1
  end
  for _ = 1, 50 do txn() end
  local code, out, err = spawn("catchup")
  T.eq(code, 0, string.format("catch-up run failed (exit %s, %s %s): %s", tostring(code), out, err,
    (sys.readfile(dir .. "/driver.log") or ""):sub(-3000)))
  T.ok(kills >= 10, "kills")
  for _, t in ipairs { "acc", "ledger", "events" } do
    T.eq(checksum(dst, t), checksum(src, t), "table " .. t)
  end
  local applied = dst:sql("SELECT count(*) FROM ledger")
  io.stderr:write(string.format("%d kills, %d source transactions, %s ledger rows\n", kills, step, applied))
  -- nothing left behind in the state directory (spill files are unlinked)
  for _, name in ipairs(sys.readdir(dir)) do
    T.ok(not name:find("spill"), "leftover spill file " .. name)
  end
end)

s:close()
cdc.drop { source = src.conninfo, slot = "crash", publication = "crash_pub" }
T.done()
