-- The "core.cdc" module (src/cdc/cdc_lua.c) against two real clusters:
-- slot with exported snapshot, the worker's status/lag/wait_until,
-- pause_at/resume at a consistent point, stop/restart, error objects
-- (bad options, missing slot, schema drift raised by poll), slot_info,
-- drop, and the LSN helpers.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local cdc = require "core.cdc"
local pg = require "pg"
local sys = require "sys"

local src = T.cluster { conf = { "logical_decoding_work_mem = 64kB" } }
local dst = T.cluster()
local state = T.tmp .. "/cdc-lua-" .. sys.getpid()
sys.mkdir_p(state)

local schema = [[
CREATE TABLE acc (id int PRIMARY KEY, bal bigint NOT NULL, note text);
CREATE TABLE hist (id bigserial PRIMARY KEY, acc int, delta int, big text);
]]
src:sql(schema)
dst:sql(schema)
src:sql("INSERT INTO acc SELECT g, 0, 'n' || g FROM generate_series(1, 200) g")

local s = pg.connect(src.conninfo)
local d = pg.connect(dst.conninfo)

local function current_lsn()
  return s:query_one("SELECT pg_current_wal_lsn()::text AS l").l
end

local function checksum(conn, t)
  return conn:query_one(string.format(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') AS c FROM %s x", t)).c
end

local function same()
  for _, t in ipairs { "acc", "hist" } do
    T.eq(checksum(d, t), checksum(s, t), "table " .. t)
  end
end

local function workload(n)
  for i = 1, n do
    local id = math.random(1, 200)
    local delta = math.random(-50, 50)
    s:exec("BEGIN")
    s:exec("UPDATE acc SET bal = bal + $1 WHERE id = $2", delta, id)
    s:exec("INSERT INTO hist (acc, delta, big) VALUES ($1, $2, CASE WHEN $3 THEN repeat('x', 4000) END)",
      id, delta, i % 10 == 0)
    if i % 7 == 0 then s:exec("DELETE FROM hist WHERE id = (SELECT min(id) FROM hist)") end
    s:exec("COMMIT")
  end
end

local opts = {
  source = src.conninfo, target = dst.conninfo, slot = "lua_cdc", publication = "lua_pub",
  state_dir = state, memory_cap = "2MB", group = 50, set_threshold = 30,
}

T.test("create_slot exports a snapshot that stays open until close", function ()
  local slot = cdc.create_slot { source = src.conninfo, slot = "lua_cdc", publication = "lua_pub" }
  T.eq(slot.name, "lua_cdc")
  T.match(slot.lsn, "^%x+/%x+$")
  T.match(slot.snapshot, "%S")
  T.eq(slot.plugin, "pgoutput")
  T.eq(slot.open, true)
  -- a change after the slot: must come through CDC, not through the copy
  s:exec("UPDATE acc SET note = 'after slot' WHERE id = 1")
  local c <close> = pg.connect(src.conninfo)
  c:exec("BEGIN ISOLATION LEVEL REPEATABLE READ")
  c:exec("SET TRANSACTION SNAPSHOT '" .. slot.snapshot .. "'")
  T.eq(c:query_one("SELECT note FROM acc WHERE id = 1").note, "n1")
  local rows = c:query("SELECT id, bal, note FROM acc ORDER BY id")
  c:exec("COMMIT")
  for _, r in ipairs(rows) do
    d:exec("INSERT INTO acc VALUES ($1, $2, $3)", r.id, r.bal, r.note)
  end
  slot:close()
  slot:close()      -- idempotent
  T.eq(slot.open, false)
  T.match(tostring(slot), "closed")
  T.raises(function ()
    cdc.create_slot { source = src.conninfo, slot = "lua_cdc", publication = "lua_pub" }
  end, "already exists")
end)

T.test("slot_info reports the slot and its retained WAL", function ()
  local i = cdc.slot_info { source = src.conninfo, slot = "lua_cdc" }
  T.eq(i.exists, true)
  T.eq(i.active, false)
  T.ok(i.retained_bytes >= 0)
  T.match(i.confirmed_lsn, "/")
  T.eq(cdc.slot_info { source = src.conninfo, slot = "nope" }.exists, false)
end)

T.test("bad options and a missing slot raise error objects", function ()
  T.raises(function () cdc.start { source = src.conninfo } end, "option 'target' is required")
  T.raises(function () cdc.start(setmetatable({ memory_cap = "lots" }, { __index = opts })) end,
    "cannot read size")
  T.raises(function () cdc.start(setmetatable({ progress = "x" }, { __index = opts })) end, "progress")
  local ok, err = pcall(cdc.start, setmetatable({ slot = "missing" }, { __index = opts }))
  T.eq(ok, false)
  T.eq(getmetatable(err).__name, "core.cdc.error")
  T.eq(err.op, "cdc.start")
  T.eq(err.kind, "config")
  T.eq(err.retryable, false)
  T.match(tostring(err), "missing")
end)

T.test("worker applies, reports lag, waits for an LSN", function ()
  local w <close> = cdc.start(opts)
  T.match(tostring(w), "core.cdc worker")
  workload(300)
  local target = current_lsn()
  T.eq(w:wait_until(target, 60), true)
  same()
  local lag = w:lag()
  T.ok(cdc.lsn_diff(lag.applied_lsn, target) >= 0, "applied %s before %s", lag.applied_lsn, target)
  T.eq(math.type(lag.bytes), "integer")
  T.ok(lag.seconds >= 0 and lag.seconds < 30, "lag seconds %s", lag.seconds)
  local st = w:poll()
  T.eq(st.state, "streaming")
  T.ok(st.txns >= 300 and st.updates >= 300 and st.inserts >= 300, "counts")
  T.ok(st.commits < st.txns, "transactions grouped")
  T.eq(st.progress, "origin")
  T.eq(w:wait_until("0/1", 1), true)
  -- nothing will reach this LSN: a timeout is false, not an error
  T.eq(w:wait_until("FFFF/0", 0.3), false)
  -- the status file other processes read (pgtide status)
  local json = require "json"
  local sf = json.decode(assert(sys.readfile(state .. "/cdc-status.json")))
  T.eq(sf.slot, "lua_cdc")
  T.eq(sf.state, "streaming")
  T.match(sf.applied_lsn, "^%x+/%x+$")
  T.eq(sf.pid, sys.getpid())
  local final = w:stop()
  T.eq(final.state, "stopped")
  T.eq(w:stop().state, "stopped")   -- idempotent
  T.raises(function () w:pause_at("0/1") end, "stopped")
end)

T.test("pause_at holds the target at a consistent point", function ()
  local w <close> = cdc.start(opts)
  workload(50)
  local p = current_lsn()
  local at_p = { acc = checksum(s, "acc"), hist = checksum(s, "hist") }
  w:pause_at(p)
  workload(50)
  T.eq(w:wait_until(p, 30), true)
  w:run_for(0.5)
  T.eq(w:status().paused, true)
  T.eq(checksum(d, "acc"), at_p.acc)
  T.eq(checksum(d, "hist"), at_p.hist)
  w:resume()
  T.eq(w:wait_until(current_lsn(), 60), true)
  same()
end)

T.test("schema drift stops the worker; poll raises naming table and column", function ()
  local w <close> = cdc.start(opts)
  s:exec("ALTER TABLE acc ADD COLUMN extra int")
  s:exec("UPDATE acc SET extra = 1 WHERE id = 5")
  local err
  for _ = 1, 100 do
    local ok, e = pcall(w.poll, w)
    if not ok then err = e break end
    sys.sleep(0.1)
  end
  T.ok(err, "poll raised")
  T.eq(err.kind, "drift")
  T.eq(err.table, "public.acc")
  T.eq(err.column, "extra")
  T.raises(function () w:wait_until(current_lsn(), 1) end, "extra")
  w:stop()
  d:exec("ALTER TABLE acc ADD COLUMN extra int")
  local w2 <close> = cdc.start(opts)
  T.eq(w2:wait_until(current_lsn(), 60), true)
  same()
end)

T.test("table_sync: a table copied under a later snapshot skips the changes its copy holds", function ()
  s:exec("CREATE TABLE sync_t (id int PRIMARY KEY, v int NOT NULL)")
  d:exec("CREATE TABLE sync_t (id int PRIMARY KEY, v int NOT NULL)")
  local base = { source = src.conninfo, target = dst.conninfo, slot = "sync_slot", publication = "sync_pub",
                 origin = "sync_origin", state_dir = state }
  local slot = cdc.create_slot { source = src.conninfo, slot = "sync_slot", publication = "sync_pub",
                                 tables = { "public.sync_t" } }
  slot:close()
  -- changes after the slot, before the table's copy: inserts, an update, a delete, a truncate
  s:exec("INSERT INTO sync_t SELECT g, g FROM generate_series(1, 20) g")
  s:exec("UPDATE sync_t SET v = v + 100 WHERE id <= 5")
  s:exec("DELETE FROM sync_t WHERE id = 20")
  s:exec("TRUNCATE sync_t")
  s:exec("INSERT INTO sync_t SELECT g, g FROM generate_series(1, 30) g")
  -- the copy, under a temporary slot's snapshot: it holds all of the above
  local later = cdc.create_slot { source = src.conninfo, slot = "sync_tmp", temporary = true }
  local c <close> = pg.connect(src.conninfo)
  c:exec("BEGIN ISOLATION LEVEL REPEATABLE READ")
  c:exec("SET TRANSACTION SNAPSHOT '" .. later.snapshot .. "'")
  local rows = c:query("SELECT id, v FROM sync_t ORDER BY id")
  c:exec("COMMIT")
  later:close()
  T.eq(cdc.slot_info { source = src.conninfo, slot = "sync_tmp" }.exists, false, "temporary slot gone")
  for _, r in ipairs(rows) do d:exec("INSERT INTO sync_t VALUES ($1, $2)", r.id, r.v) end
  -- changes after the copy must all arrive
  s:exec("UPDATE sync_t SET v = -v WHERE id % 3 = 0")
  s:exec("INSERT INTO sync_t VALUES (31, 31)")
  s:exec("DELETE FROM sync_t WHERE id = 2")
  -- without the table's sync LSN the first insert collides with the copy
  local w0 <close> = cdc.start(base)
  local err
  for _ = 1, 100 do
    local ok, e = pcall(w0.poll, w0)
    if not ok then err = e break end
    sys.sleep(0.1)
  end
  T.ok(err, "without table_sync the apply fails")
  T.match(tostring(err), "duplicate key")
  w0:stop()
  local w <close> = cdc.start(setmetatable({ table_sync = { { schema = "public", table = "sync_t", lsn = later.lsn } } },
                                           { __index = base }))
  T.eq(w:wait_until(current_lsn(), 60), true)
  T.eq(checksum(d, "sync_t"), checksum(s, "sync_t"))
  local st = w:poll()
  T.eq(st.skipped_in_copy, 20 + 5 + 1 + 1 + 30, "the changes before the copy were skipped")
  w:stop()
  T.raises(function () cdc.start(setmetatable({ table_sync = { { schema = "public", table = "sync_t", lsn = "x" } } },
                                               { __index = base })) end, "bad LSN")
  cdc.drop { source = src.conninfo, slot = "sync_slot", publication = "sync_pub", target = dst.conninfo,
             origin = "sync_origin" }
end)

T.test("lsn helpers", function ()
  T.eq(cdc.lsn_diff("0/100", "0/80"), 128)
  T.eq(cdc.lsn_diff("1/0", "0/FFFFFFFF"), 1)
  T.eq(cdc.lsn_diff("0/80", "0/100"), -128)
  T.eq(cdc.lsn(cdc.lsn_int("16/B374D848")), "16/B374D848")
  T.eq(cdc.lsn_int("1/0"), 1 << 32)
  T.raises(function () cdc.lsn_diff("x", "0/0") end, "not an LSN")
end)

T.test("drop removes slot, publication and progress", function ()
  T.eq(cdc.drop { source = src.conninfo, slot = "lua_cdc", publication = "lua_pub", target = dst.conninfo }, true)
  T.eq(cdc.slot_info { source = src.conninfo, slot = "lua_cdc" }.exists, false)
  T.eq(s:query_one("SELECT count(*) AS n FROM pg_publication").n, 0)
  T.eq(d:query_one("SELECT count(*) AS n FROM pg_replication_origin").n, 0)
  T.eq(cdc.drop { source = src.conninfo, slot = "lua_cdc", publication = "lua_pub", target = dst.conninfo }, true)
end)

s:close()
d:close()
T.done()
