-- A kill in every step's commit window, repeatable: the local runbook
-- carries named crash points (runbook.crash_point) right after each
-- action that must survive a crash and before its result is recorded.
-- For each point, a migration (CDC, PlanetScale's role on the target, the
-- RDS-like owner on the source, a live writer) is run with
-- PGTIDE_CRASH_AT=<point>, which kills the process there with SIGKILL;
-- a plain rerun must then finish the migration: the target equals the
-- source and nothing of pgtide is left.  Before the schema step's fix, a
-- kill after pre-data committed made every rerun fail with "relation ...
-- already exists".
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local roles = require "roles"
local sys = require "sys"
local json = require "json"

local POINTS = os.getenv("POINTS") and { os.getenv("POINTS") } or {
  "schema:pre-data", "full-load:publication", "full-load:slot", "post-data:indexes",
  "post-data:triggers", "sequences:stream", "cutover:fence", "cutover:unlogged",
  "cutover:foreign-keys", "cutover:stopped", "cutover:triggers", "cleanup:slot",
  "cleanup:publication", "cleanup:progress",
}

local tmp = T.tmp .. "/crash-" .. sys.getpid()
sys.mkdir_p(tmp)

local SCHEMA = [[
CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL);
CREATE TABLE moves (id bigserial PRIMARY KEY, acct int NOT NULL REFERENCES acct (id), amount int);
CREATE INDEX moves_acct ON moves (acct);
CREATE TABLE audit (id bigserial PRIMARY KEY, what text);
CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO audit (what) VALUES (TG_OP || ' ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER moves_audit AFTER INSERT ON moves FOR EACH ROW EXECUTE FUNCTION audit_fn();
CREATE UNLOGGED TABLE cache (k int PRIMARY KEY, v text);
INSERT INTO acct SELECT g, 100 FROM generate_series(1, 100) g;
INSERT INTO moves (acct, amount) SELECT 1 + g % 100, 1 FROM generate_series(1, 2000) g;
INSERT INTO cache SELECT g, 'c' FROM generate_series(1, 10) g;
]]

local WRITER = [=[
local pg = require "pg"
local sys = require "sys"
local c = pg.connect(arg[1])
local stop = arg[2]
while not sys.exists(stop) do
  local ok = pcall(function()
    c:exec("BEGIN")
    local a = math.random(1, 100)
    c:exec("UPDATE acct SET bal = bal - 1 WHERE id = $1", a)
    c:exec("INSERT INTO moves (acct, amount) VALUES ($1, -1)", a)
    c:exec("COMMIT")
  end)
  if not ok then
    pcall(c.exec, c, "ROLLBACK")
    if not pcall(c.query_one, c, "SELECT 1 AS x") then
      local okc, c2 = pcall(pg.connect, arg[1])
      if okc then c = c2 else sys.sleep(0.2) end
    end
  end
  sys.sleep(0.01)
end
]=]
local writer_file = tmp .. "/writer.lua"
do
  local f = assert(io.open(writer_file, "w"))
  f:write(WRITER)
  f:close()
end

local src_cluster = T.cluster()
local dst_cluster = T.cluster { tls = true }
local owner_made = false

local function digest(c, db, tbl)
  return c:sql(string.format("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') "
    .. "FROM %s t", tbl), db)
end

for i, point in ipairs(POINTS) do
  T.test("a kill at " .. point .. " is resumed by a plain rerun", function()
    local db = "crash" .. i
    -- the managed roles, once; a database per point
    local src, dst
    if not owner_made then
      src = roles.rds(src_cluster, db)
      dst = roles.planetscale(dst_cluster, db)
      owner_made = true
    else
      src_cluster:sql(string.format("CREATE DATABASE %s OWNER app", db))
      dst_cluster:sql(string.format("CREATE DATABASE %s OWNER pscale_admin", db))
      src = { owner = roles.conninfo(src_cluster, "app", db) }
      dst = { conninfo = roles.conninfo(dst_cluster, "pscale_admin", db) }
    end
    T.psql(src.owner, SCHEMA)
    local dir = tmp .. "/" .. db
    local log = dir .. ".log"
    local stop = dir .. ".stop"
    T.sh(string.format("%s script %s %s %s >/dev/null 2>&1 &", T.q(T.pgtide), T.q(writer_file), T.q(src.owner),
      T.q(stop)))
    local fence = point == "cutover:fence" and " write_fence=true" or ""
    local function spawn(env)
      local _, out = T.sh(string.format("%s %s run local %s %s name=m%d%s --state %s --yes >>%s 2>&1 "
        .. "</dev/null & echo $!", env, T.q(T.pgtide), T.q("source=" .. src.owner),
        T.q("target=" .. dst.conninfo), i, fence, T.q(dir), T.q(log)))
      return T.background(tonumber(out:match("%d+")))
    end
    -- drive one run: request the cutover once it streams; return when it ends
    local function drive(pid, crashing)
      local requested = false
      T.wait_for("the run to end", 240, function()
        if not requested and T.step_status(dir, "stream") == "running" then
          local fh = io.open(stop, "w"); fh:close()   -- the application stops writing
          sys.sleep(0.3)
          -- pgtide cutover waits for the cutover: it fails when the run dies in it
          local code, _, err = T.run { "cutover", "--state", dir }
          if not crashing then T.eq(code, 0, "pgtide cutover: " .. err) end
          requested = true
        end
        return not T.alive(pid)
      end)
    end
    drive(spawn("env PGTIDE_CRASH_AT=" .. point), true)
    local text = sys.readfile(log) or ""
    T.match(text, "PGTIDE_CRASH_AT=" .. point:gsub("%p", "%%%0") .. ": killing this process",
      "the run reached the crash point")
    drive(spawn("env -u PGTIDE_CRASH_AT"))
    text = sys.readfile(log) or ""
    T.eq(T.step_status(dir, "cleanup"), "done", "the rerun finished:\n" .. text:sub(-3000))
    local fh = io.open(stop, "w"); fh:close()
    for _, t in ipairs { "acct", "moves", "audit", "cache" } do
      T.eq(digest(dst_cluster, db, t), digest(src_cluster, db, t), "table " .. t)
    end
    T.eq(src_cluster:sql(string.format("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgtide_m%d%%'",
      i)), "0", "slots left")
    T.eq(src_cluster:sql("SELECT count(*) FROM pg_publication", db), "0", "publications left")
    T.eq(dst_cluster:sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgtide'", db), "0", "schema pgtide left")
    T.eq(dst_cluster:sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'moves_audit' AND tgenabled = 'O'", db), "1",
      "trigger enabled")
    if fence ~= "" then
      -- lift the fence for the next points' writer (as the owner, who set nothing else)
      src_cluster:sql(string.format("ALTER DATABASE %s RESET default_transaction_read_only", db))
    end
  end)
end

T.done()
