--[[
dms_mover.lua: the data movement of a DMS replication task, for the
stand-in (tests/lib/dms_standin.py), by pgtide's own engine.

  pgtide script dms_mover.lua MODE SOURCE TARGET TABLES_JSON NAME STATE_DIR PARENT_PID [DMS_SLOT]

MODE:
  load      drops what an earlier run of the task left (slot, progress on
            the target), creates the pgoutput slot (the publication NAME
            for TABLES is made by the stand-in), full-loads them with
            core.load under the slot's exported snapshot, then streams
  resume    streams from the existing slot (resume-processing)
  cdconly   migration type cdc: the slot, no load; waits for the file
            STATE_DIR/go (the stand-in replays the changes before that
            point from DMS_SLOT), then streams
  loadonly  full load without a slot (migration type full-load)
  drop      drops the slot and the progress on the target

While streaming (core.cdc, spill files and cdc-status.json in STATE_DIR)
it writes one JSON line per half second on stdout: the worker's status
(lag, counters) and, per table, the rows inserted/updated/deleted on the
target since the stream started (pg_stat_user_tables).  It stops cleanly
(finishing the group in flight) when the file STATE_DIR/stop appears, on
SIGINT/SIGTERM, or when PARENT_PID is gone.  DMS_SLOT, the test_decoding
slot the endpoint names, is advanced as DMS would consume it: to the last
commit of its own database that has been applied (a quiet database keeps
its WAL; DMS's heartbeat is what moves it then).  Passwords come from
PGPASSFILE; none is ever written out.
]]
local json = require "json"
local sys = require "sys"
local cdc = require "core.cdc"
local load = require "core.load"
local pg = require "pg"

local mode, src, dst, list, name, state_dir, parent, dms_slot = ...
assert(mode and src and dst and list and name and state_dir, "usage: dms_mover.lua MODE SRC DST TABLES NAME DIR PPID")
parent = tonumber(parent)

local function emit(t)
  io.stdout:write(json.encode(t), "\n")
  io.stdout:flush()
end

-- The publication is the stand-in's (made by the test's administrator:
-- the endpoint's user need not own the tables); the mover keeps to the
-- slot and the progress on the target.  A replication origin is dropped
-- only when one exists (that needs a privilege the PlanetScale role lacks,
-- and apply falls back to the progress table without it); the progress
-- table and pgtide's schema go with their last row.
local function drop()
  cdc.drop { source = src, slot = name }
  local t <close> = pg.connect(dst)
  if t:query_one("select 1 as x from pg_replication_origin where roname = $1", name) then
    cdc.drop { target = dst, origin = name }
  end
  if t:query_one("select to_regclass('pgtide.cdc_progress') is not null as e").e then
    t:exec("delete from pgtide.cdc_progress where name = $1", name)
    if not t:query_one("select 1 as x from pgtide.cdc_progress limit 1") then
      t:exec("drop table pgtide.cdc_progress")
      if not t:query_one([[select 1 as x from pg_class c join pg_namespace n on n.oid = c.relnamespace
                            where n.nspname = 'pgtide' limit 1]]) then
        t:exec("drop schema if exists pgtide")
      end
    end
  end
end

if mode == "drop" then
  drop()
  emit { event = "dropped" }
  return
end

local tables = json.decode(list)
local stopfile = state_dir .. "/stop"

local function full_load(snapshot)
  local done = {}
  load.full_load { source = src, target = dst, jobs = 2, tables = tables, snapshot = snapshot, progress = false,
    on_unit_done = function (u)
      local k = u.schema .. "." .. u.table
      done[k] = (done[k] or 0) + (u.copied_rows or 0)
      if not u.parts or u.parts <= 1 or u.part == u.parts then emit { table = k, done = true, rows = done[k] } end
    end }
  for _, k in ipairs(tables) do emit { table = k, done = true, rows = done[k] or 0 } end
  emit { event = "loaded" }
end

if mode == "loadonly" then
  full_load(nil)
  return
end

if mode == "load" or mode == "cdconly" then
  drop()
  local slot <close> = cdc.create_slot { source = src, slot = name, publication = name, tables = tables }
  emit { event = "slot", lsn = slot.lsn }
  if mode == "load" then
    full_load(slot.snapshot)
  else
    -- CDC only: the stand-in first replays what the task's own slot holds
    -- up to this point, then says go (bounded)
    local go = state_dir .. "/go"
    local t0 = sys.monotonic()
    while not sys.exists(go) do
      if sys.monotonic() - t0 > 120 then error("the stand-in did not say go within 120 s") end
      sys.sleep(0.05)
    end
    os.remove(go)
    emit { event = "loaded" }   -- nothing to load
  end
  slot:close()
elseif mode ~= "resume" then
  error("unknown mode " .. mode)
end

-- per-table changes applied on the target since the stream started
local tconn = pg.connect(dst)
local super = tconn:query_one("select rolsuper from pg_roles where rolname = current_user").rolsuper
local STATS = [[select s.schemaname || '.' || s.relname as k, s.n_tup_ins as i, s.n_tup_upd as u, s.n_tup_del as d
                  from pg_stat_user_tables s where s.schemaname || '.' || s.relname = any ($1::text[])]]
local arr = "{" .. table.concat((function ()
  local q = {}
  for i, t in ipairs(tables) do q[i] = '"' .. t:gsub('[\\"]', "\\%0") .. '"' end
  return q
end)(), ",") .. "}"
local function table_counts()
  tconn:exec("select pg_stat_clear_snapshot()")
  local out = {}
  for _, r in ipairs(tconn:query(STATS, arr)) do
    out[r.k] = { tonumber(r.i) or 0, tonumber(r.u) or 0, tonumber(r.d) or 0 }
  end
  return out
end
local base = table_counts()

local sconn = dms_slot and dms_slot ~= "" and pg.connect(src) or nil

-- DMS confirms the transactions it receives from its slot, and test_decoding
-- sends it only those of the slot's database: the slot moves to the last
-- commit of this database that has been applied, never past it.  A quiet
-- database (no transaction of its own, e.g. without DMS's heartbeat) keeps
-- its slot, and with it every WAL segment written since, in any database.
local function advance_dms_slot(applied)
  pcall(function ()
    local row = sconn:query_one([[
      select max(lsn)::text as lsn from pg_logical_slot_peek_changes($1, $2::pg_lsn, null)
       where data like 'COMMIT%']], dms_slot, applied)
    if row and row.lsn then
      sconn:query_one([[select pg_replication_slot_advance($1, $2::pg_lsn) as x from pg_replication_slots
                         where slot_name = $1 and not active and confirmed_flush_lsn < $2::pg_lsn]], dms_slot, row.lsn)
    end
  end)
end
local w <close> = cdc.start { source = src, target = dst, slot = name, publication = name, state_dir = state_dir,
                              replica_role = super == true, status_interval = 1 }
emit { event = "streaming" }

local last_advance = 0
local ok, err = pcall(function ()
  while not sys.exists(stopfile) do
    if parent and not sys.kill(parent, 0) then break end
    local st = w:run_for(0.5)
    local now, per = table_counts(), {}
    for k, c in pairs(now) do
      local b = base[k] or { 0, 0, 0 }
      per[k] = { inserts = c[1] - b[1], updates = c[2] - b[2], deletes = c[3] - b[3] }
    end
    emit { event = "status", state = st.state, seconds = st.seconds, bytes = st.bytes,
           applied_lsn = st.applied_lsn, received_lsn = st.received_lsn, source_lsn = st.source_lsn,
           txns = st.txns, inserts = st.inserts, updates = st.updates, deletes = st.deletes,
           missing_rows = st.missing_rows, tables = per }
    if sconn and st.applied_lsn and sys.monotonic() - last_advance > 1 then
      last_advance = sys.monotonic()
      advance_dms_slot(st.applied_lsn)
    end
  end
end)
local final = w:stop(20)
emit { event = "stopped", state = final and final.state, applied_lsn = final and final.applied_lsn }
if not ok and not (type(err) == "table" and (err.interrupted or err.kind == "interrupted")) then
  error(err, 0)
end
