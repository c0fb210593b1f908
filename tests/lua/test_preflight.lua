-- Preflight checks (pgtide.preflight) against real PostgreSQL 15 clusters:
-- each check passes on a well-configured pair and fails, with its fix,
-- when the condition it guards is broken.
local T = require "t"
local pg = require "pg"
local preflight = require "pgtide.preflight"

local src = T.cluster { conf = { "max_prepared_transactions = 5" } }
local dst = T.cluster()

src:sql([[
  create table public.users (id bigserial primary key, email text not null);
  create table public.events (id bigint, payload jsonb, addr inet);
  create type public.mood as enum ('ok', 'sad');
  create table public.moods (id int primary key, m public.mood, n numeric);
  create schema other;
  create table other.hidden (id int primary key);
  create extension if not exists pg_trgm;
  insert into public.users (email) select 'u' || g || '@x' from generate_series(1, 50) g;
]])

local function by_id(report)
  local t = {}
  for _, r in ipairs(report.results) do t[r.id] = r end
  return t
end

local function scope_public(schema) return schema == "public" end

local s = pg.connect(src.conninfo, { label = "source" })
local d = pg.connect(dst.conninfo, { label = "target" })

T.test("a well-configured pair passes the 7 DMS checks", function()
  local rep = preflight.run { src = s, dst = d, checks = preflight.DMS_SEVEN, scope = scope_public }
  for _, r in ipairs(rep.results) do
    T.eq(r.status, "pass", r.title .. ": " .. tostring(r.message))
  end
  T.eq(rep.counts.pass, 7)
  T.eq(#preflight.lines(rep), 8)
end)

T.test("PlanetScale facts: missing PK, lossy types, extensions, disk", function()
  local rep = by_id(preflight.run { src = s, dst = d, checks = preflight.PLANETSCALE, scope = scope_public })
  T.eq(rep.primary_keys.status, "warn")
  T.match(rep.primary_keys.message, "public%.events")
  T.eq(rep.lossy_types.status, "warn")
  T.match(rep.lossy_types.message, "events%.addr %(inet%)")
  T.match(rep.lossy_types.message, "moods%.m %(enum%)")
  T.match(rep.lossy_types.message, "moods%.n %(numeric without precision%)")
  -- pg_trgm is in contrib, installed on the target machine too
  T.eq(rep.extensions.status, "pass")
  T.eq(rep.disk.status, "warn")
  T.match(rep.disk.fix, "target_disk_gb")
  T.eq(rep.target_version.status, "warn")   -- 15, not PlanetScale's 17/18
  T.eq(rep.prepared_transactions.status, "pass")
  T.eq(rep.rls.status, "pass")
  T.eq(rep.replication_role.status, "pass")
end)

T.test("disk check with a size given", function()
  local ok = by_id(preflight.run { src = s, checks = { "disk" }, target_disk_gb = 1 })
  T.eq(ok.disk.status, "pass")
end)

T.test("an extension missing on the target fails with the fix", function()
  -- an extension available on the source machine but hidden from the target:
  -- emulate by checking against a target where the name is not available
  s:exec("create extension if not exists pgcrypto")
  local rep = by_id(preflight.run { src = s, dst = d, checks = { "extensions" } })
  T.eq(rep.extensions.status, "pass")
  local fake = setmetatable({}, { __index = function(_, k)
    if k == "query" then
      return function(_, sql, ...)
        if sql:find("pg_available_extensions", 1, true) then return { { name = "plpgsql" } } end
        return d:query(sql, ...)
      end
    end
    return function(_, ...) return d[k](d, ...) end
  end })
  rep = by_id(preflight.run { src = s, dst = fake, checks = { "extensions" } })
  T.eq(rep.extensions.status, "fail")
  T.match(rep.extensions.message, "pg_trgm")
  T.match(rep.extensions.message, "pgcrypto")
  T.match(rep.extensions.fix, "Extensions")
end)

T.test("wal_sender_timeout below 10 s fails; 0 passes", function()
  s:exec("alter system set wal_sender_timeout = '5s'")
  s:exec("select pg_reload_conf()")
  local c = pg.connect(src.conninfo)
  local rep = by_id(preflight.run { src = c, checks = { "wal_sender_timeout" } })
  T.eq(rep.wal_sender_timeout.status, "fail")
  T.match(rep.wal_sender_timeout.message, "5000 ms")
  T.match(rep.wal_sender_timeout.fix, "10000")
  c:close()
  s:exec("alter system set wal_sender_timeout = 0")
  s:exec("select pg_reload_conf()")
  c = pg.connect(src.conninfo)
  rep = by_id(preflight.run { src = c, checks = { "wal_sender_timeout" } })
  T.eq(rep.wal_sender_timeout.status, "pass")
  c:close()
  s:exec("alter system reset wal_sender_timeout")
  s:exec("select pg_reload_conf()")
end)

T.test("a user without SELECT or REPLICATION fails with GRANT fixes", function()
  s:exec("create role reader login password 'x'")
  s:exec("grant select on public.users to reader")
  local c = pg.connect(src.conninfo, { label = "source" })
  c:exec("set role reader")
  local rep = by_id(preflight.run { src = c, checks = { "select_privileges", "replication_role" },
                                    scope = scope_public })
  T.eq(rep.select_privileges.status, "fail")
  T.match(rep.select_privileges.message, "2 of 3 tables cannot be read")
  T.match(rep.select_privileges.fix, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
  T.eq(rep.replication_role.status, "fail")
  T.match(rep.replication_role.fix, "ALTER ROLE reader REPLICATION")
  c:close()
end)

T.test("row-level security without BYPASSRLS fails", function()
  s:exec("alter table public.users enable row level security")
  s:exec("grant select on all tables in schema public to reader")
  local c = pg.connect(src.conninfo)
  c:exec("set role reader")
  local rep = by_id(preflight.run { src = c, checks = { "rls" }, scope = scope_public })
  T.eq(rep.rls.status, "fail")
  T.match(rep.rls.fix, "BYPASSRLS")
  c:close()
  s:exec("alter table public.users disable row level security")
end)

T.test("a prepared transaction fails; slots in use fail", function()
  local c = pg.connect(src.conninfo)
  c:exec("begin")
  c:exec("insert into public.users (email) values ('p@x')")
  c:exec("prepare transaction 'pgtide_test_gid'")
  local rep = by_id(preflight.run { src = s, checks = { "prepared_transactions" } })
  T.eq(rep.prepared_transactions.status, "fail")
  T.match(rep.prepared_transactions.message, "pgtide_test_gid")
  c:exec("rollback prepared 'pgtide_test_gid'")
  c:close()
  rep = by_id(preflight.run { src = s, checks = { "prepared_transactions" } })
  T.eq(rep.prepared_transactions.status, "pass")
end)

T.test("wal_level other than logical fails with the restart fix", function()
  local c = T.cluster { conf = { "wal_level = replica", "max_replication_slots = 0" } }
  local conn = pg.connect(c.conninfo)
  local rep = by_id(preflight.run { src = conn, checks = { "wal_level", "slots" } })
  T.eq(rep.wal_level.status, "fail")
  T.match(rep.wal_level.fix, "wal_level = logical")
  T.eq(rep.slots.status, "fail")
  T.match(rep.slots.fix, "max_replication_slots")
  T.raises(function() preflight.assert_ok(preflight.run { src = conn, checks = { "wal_level" } }) end,
    "WAL Level Configuration")
  conn:close()
  c:stop()
end)

T.test("an unknown check id is an error", function()
  T.raises(function() preflight.run { src = s, checks = { "nope" } } end, "unknown preflight check")
end)

s:close(); d:close()
T.done()
