-- Two ways out of a migration that are not the full run, between real
-- PostgreSQL 15 clusters (the RDS-like owner on the source, PlanetScale's
-- default role on the target):
--   * `pgtide run local --dry-run` connects read-only and runs the
--     preflight: it answers "would this work" (exit 0, or 1 with the
--     fix) and creates nothing anywhere; a read-only step that writes
--     fails there;
--   * `pgtide abandon` after a run stopped mid-way: lists the slot, the
--     publication and the progress record the migration created (and what
--     it leaves alone), asks (no terminal: refuses without --yes), drops
--     exactly those, marks the state abandoned; a run then refuses to
--     resume it, status says so, and a second abandon has nothing to do.
local T = require "t"
local roles = require "roles"
local sys = require "sys"
local json = require "json"

local tmp = T.tmp .. "/abandon-" .. sys.getpid()
sys.mkdir_p(tmp)
local src = T.cluster()
local dst = T.cluster()
local S = roles.rds(src, "shop")
local D = roles.planetscale(dst, "shop")
src:sql([[
CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE notes (id int PRIMARY KEY, item_id bigint REFERENCES items (id), body text);
INSERT INTO items (name) SELECT 'i' || g FROM generate_series(1, 5000) g;
INSERT INTO notes SELECT g, 1 + g % 5000, 'n' FROM generate_series(1, 2000) g;
ALTER TABLE items OWNER TO app;
ALTER TABLE notes OWNER TO app;
]], "shop")
S.grant()
local SRC, DST = "source=" .. S.owner, "target=" .. D.conninfo

local function slots() return src:sql("SELECT count(*) FROM pg_replication_slots") end
local function pubs() return src:sql("SELECT count(*) FROM pg_publication", "shop") end
local function target_tables()
  return dst:sql("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    .. "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')", "shop")
end

T.test("--dry-run runs the preflight on read-only sessions and creates nothing", function()
  local state = tmp .. "/dry"
  local code, out, err = T.run { "run", "local", SRC, DST, "name=shop", "--dry-run", "--state", state }
  T.eq(code, 0, err)
  T.match(out, " 1%. preflight: Check both databases before starting")
  T.match(out, "10%. cleanup: ")
  T.match(err, "%[pass%] Replication privilege of the source user")
  T.match(err, "dry run: preflight passed; nothing was changed")
  T.eq(sys.exists(state .. "/state.json"), false, "no state")
  T.eq(slots(), "0")
  T.eq(pubs(), "0")
  T.eq(target_tables(), "0")
  -- and when it would not work, it says why, with the fix (exit 1)
  src:sql("CREATE TABLE loose (a int, b text); ALTER TABLE loose OWNER TO app", "shop")
  S.grant()
  code, _, err = T.run { "run", "local", SRC, DST, "name=shop", "--dry-run", "--state", state }
  src:sql("DROP TABLE loose", "shop")
  T.eq(code, 1, err)
  T.match(err, "%[FAIL%] Replica identity for CDC: 1 table%(s%) have no usable replica identity")
  T.match(err, "ALTER TABLE public%.loose REPLICA IDENTITY FULL;")
  T.match(err, "dry run: step 'preflight' failed")
  T.eq(sys.exists(state .. "/state.json"), false, "no state")
end)

T.test("a read-only step that writes fails in a dry run", function()
  local rb = tmp .. "/writes.lua"
  assert(sys.write_atomic(rb, [[
local runbook = require "pgtide.runbook"
local rb = runbook.new { name = "writes", params = { target = { type = "conninfo", required = true } } }
rb:step { name = "check", title = "A check that writes", read_only = true,
          run = function(ctx) ctx.dst:exec("CREATE TABLE written_by_a_check (x int)") end }
return rb]]))
  local code, _, err = T.run { "run", rb, DST, "--dry-run", "--state", tmp .. "/writes" }
  T.eq(code, 1, err)
  T.match(err, "dry run: step 'check' failed: .*read%-only transaction")
  T.eq(dst:sql("SELECT to_regclass('public.written_by_a_check') IS NULL", "shop"), "t")
end)

T.test("abandon lists what the migration made, refuses without --yes, then drops exactly that", function()
  local state = tmp .. "/state"
  -- a run stopped after the count check: slot, publication and progress record exist
  local code, _, err = T.run { "run", "local", SRC, DST, "name=shop", "jobs=2", "--to", "full-load",
    "--state", state }
  T.eq(code, 0, err)
  -- changes after the slot: the stream applies them (and records its progress) before the count check
  src:sql("INSERT INTO items (name) SELECT 'later' FROM generate_series(1, 10)", "shop")
  code, _, err = T.run { "run", "local", SRC, DST, "name=shop", "jobs=2", "--to", "count-check",
    "--state", state }
  T.eq(code, 0, err)
  T.eq(src:sql("SELECT slot_name FROM pg_replication_slots"), "pgtide_shop", err)
  T.eq(src:sql("SELECT pubname FROM pg_publication", "shop"), "pgtide_shop")
  -- PlanetScale's role may not use replication origins: the progress is a row in pgtide.cdc_progress
  T.eq(dst:sql("SELECT count(*) FROM pgtide.cdc_progress", "shop"), "1")
  -- an unrelated slot and publication of the source's owner stay
  src:sql("CREATE PUBLICATION theirs FOR TABLE items", "shop")
  src:sql("SELECT pg_create_logical_replication_slot('theirs', 'pgoutput')", "shop")
  -- no terminal, no --yes: the list, and nothing dropped
  local out
  code, out, err = T.run { "abandon", "--state", state }
  T.eq(code, 2, err)
  T.match(out, "to drop:\n  slot +pgtide_shop +on the source: retains ")
  T.match(out, "\n  publication +pgtide_shop +on the source")
  T.match(out, "\n  progress +pgtide_shop_%x+ +on the target: row in pgtide%.cdc_progress")
  T.match(out, "left as they are:\n[^\n]*migrated tables")
  T.match(err, "nothing dropped: confirm on a terminal, or rerun with %-%-yes")
  T.eq(slots(), "2")
  -- --yes: dropped, and the state says so
  code, out, err = T.run { "abandon", "--state", state, "--yes" }
  T.eq(code, 0, err)
  T.match(out, "abandoned: slot pgtide_shop, publication pgtide_shop, progress pgtide_shop_%x+")
  T.eq(src:sql("SELECT string_agg(slot_name, ',') FROM pg_replication_slots"), "theirs")
  T.eq(src:sql("SELECT string_agg(pubname, ',') FROM pg_publication", "shop"), "theirs")
  T.eq(dst:sql("SELECT to_regnamespace('pgtide') IS NULL", "shop"), "t", "the schema pgtide made is gone")
  T.eq(target_tables(), "2", "the migrated tables stay")
  local st = json.decode(sys.readfile(state .. "/state.json"))
  T.ok(st.abandoned and st.abandoned.at, "abandoned in the state")
  T.eq(#st.abandoned.dropped, 3)
  -- a run refuses to resume it; status and the report say it
  code, _, err = T.run { "run", "local", SRC, DST, "name=shop", "--state", state, "--yes" }
  T.eq(code, 2)
  T.match(err, "migration 'shop' was abandoned at .*: it cannot be resumed%. To start over, remove ")
  code, out = T.run { "status", "--state", state, "--no-source" }
  T.eq(code, 0)
  T.match(out, "phase: +abandoned at ")
  T.eq(json.decode(sys.readfile(state .. "/report.json")).migration.status, "abandoned")
  code, out = T.run { "abandon", "--state", state, "--yes" }
  T.eq(code, 0)
  T.match(out, "already abandoned")
  src:sql("SELECT pg_drop_replication_slot('theirs'); DROP PUBLICATION theirs", "shop")
end)

T.done()
