-- The `core` Lua module (lua/core.lua) against two real clusters: a full
-- load from a slot object's snapshot with changes made after the slot
-- (they must come through the stream, not the copy), core.replicate with
-- wait_applied, pause (at the source's position) and resume, and
-- core.validate in consistent mode on the live replication.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local core = require "core"
local pg = require "pg"
local sys = require "sys"

local src = T.cluster()
local dst = T.cluster()
local state = T.tmp .. "/core-" .. sys.getpid()
sys.mkdir_p(state)
local SCHEMA = [[
CREATE TABLE t (id int PRIMARY KEY, v text, big text);
CREATE TABLE log (at int, what text);
ALTER TABLE log REPLICA IDENTITY FULL;
]]
src:sql(SCHEMA)
dst:sql(SCHEMA)
src:sql([[INSERT INTO t SELECT g, 'v' || g, CASE WHEN g % 50 = 0 THEN repeat('x', 9000) END FROM generate_series(1, 5000) g;
          INSERT INTO log SELECT g, 'init' FROM generate_series(1, 1000) g;]])
local s = pg.connect(src.conninfo)

local function write(n, tag)
  for i = 1, n do
    local id = math.random(1, 6000)
    s:exec("BEGIN")
    s:exec("INSERT INTO t VALUES ($1, $2, NULL) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v", id, tag)
    s:exec("INSERT INTO log VALUES ($1, $2)", i, tag)
    if i % 9 == 0 then s:exec("DELETE FROM t WHERE id = $1", id + 1) end
    s:exec("COMMIT")
  end
end

local function digest(c, tbl)
  return c:sql(string.format(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM %s x", tbl))
end

local r

T.test("core.full_load from a slot object's snapshot, then core.replicate: no gap, no overlap", function()
  local slot <close> = core.create_slot { source = src.conninfo, slot = "core_t", publication = "core_t" }
  T.match(slot.lsn, "^%x+/%x+$")
  write(200, "after-slot")          -- not in the snapshot: must come through the stream
  local summary = core.full_load { source = src.conninfo, target = dst.conninfo, jobs = 2, snapshot = slot,
                                   progress = false }
  T.eq(summary.units, 2)
  slot:close()
  T.eq(dst:sql("SELECT count(*) FROM log WHERE what = 'after-slot'"), "0", "the copy used the slot's snapshot")
  r = core.replicate { source = src.conninfo, target = dst.conninfo, slot = "core_t", publication = "core_t",
                       state_dir = state }
  write(100, "streamed")
  local lsn = s:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  local ok, why = r:wait_applied(lsn, 60)
  T.ok(ok, "not applied: %s", tostring(why))
  T.eq(digest(dst, "t"), digest(src, "t"), "t")
  T.eq(digest(dst, "log"), digest(src, "log"), "log")
end)

T.test("pause at the source's position holds later changes until resume", function()
  write(30, "before-pause")
  local lsn = r:pause(30)
  T.match(lsn, "^%x+/%x+$")
  local at_pause = digest(src, "log")
  write(30, "during-pause")
  sys.sleep(1.5)
  T.eq(digest(dst, "log"), at_pause, "changes after the pause point were held")
  r:resume()
  local now = s:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  T.ok(r:wait_applied(now, 60), "applied after resume")
  T.eq(digest(dst, "log"), digest(src, "log"))
  -- a wait that cannot succeed reports why
  local far = core.lsn(core.lsn_int(now) + 1 << 40)
  local ok, why = r:wait_applied(far, 0.3)
  T.eq(ok, false)
  T.match(why, "applied %x+/%x+, state streaming")
end)

T.test("core.validate in consistent mode on the live replication", function()
  write(50, "pre-validate")
  local rep = core.validate { source = src.conninfo, target = dst.conninfo, cdc = r, tables = { "public.t", "public.log" },
                              progress = false }
  T.eq(rep.mode, "consistent")
  T.eq(rep.tables_equal, 2)
  T.eq(rep.tables_different, 0)
  T.match(rep.lsn, "^%x+/%x+$")
  T.eq(r:status().state, "streaming", "resumed after the consistent point")
  local final = r:stop()
  T.eq(final.state, "stopped")
  T.eq(r:alive(), false)
  T.eq(r:stop().state, "stopped", "stop is idempotent")
  core.drop_slot { source = src.conninfo, slot = "core_t", publication = "core_t", target = dst.conninfo }
  T.eq(src:sql("SELECT count(*) FROM pg_replication_slots"), "0")
end)

s:close()
T.done()
