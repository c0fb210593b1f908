-- `pgtide run local` end to end between two real PostgreSQL 15 clusters:
-- the sample shop database (scripts/demo_data.sql, small scale: every
-- object kind the issue lists) is migrated with cdc=false; the target
-- then has every object, equal by name and definition, the same rows
-- (md5 of ordered rows per table), validated foreign keys (partition
-- clones included), sequences ahead of the source; a rerun skips every
-- step; kill -9 in the middle of the full load, then a rerun, gives the
-- same exact result with no duplicates; a wrong password and an
-- unreachable target fail in preflight with clear messages.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local sys = require "sys"
local json = require "json"
local pg = require "pg"
local schema = require "pgtide.schema"

local src = T.cluster()
local dst = T.cluster()
local tmp = T.tmp .. "/local-" .. sys.getpid()
sys.mkdir_p(tmp)

local function sh_ok(cmd)
  local code, out, err = T.sh(cmd)
  if code ~= 0 then error(cmd .. " failed: " .. err .. out, 2) end
  return out
end

-- the sample database at a small scale, plus a second schema with a
-- policy, a rule, a comment and an unlogged table
src:sql("CREATE DATABASE shop")
local SRC = src.conninfo .. " dbname=shop"
sh_ok(string.format("psql %s -X -q -o /dev/null -v scale=0.05 -f %s/scripts/demo_data.sql",
  T.q(SRC), T.q(T.root)))
src:sql([[
CREATE SCHEMA crm;
CREATE TABLE crm.notes (id int PRIMARY KEY, owner text NOT NULL DEFAULT current_user, body text);
ALTER TABLE crm.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_notes ON crm.notes USING (owner = current_user);
COMMENT ON TABLE crm.notes IS 'free-form notes';
CREATE UNLOGGED TABLE crm.cache (k text PRIMARY KEY, v jsonb);
CREATE VIEW crm.recent AS SELECT * FROM crm.notes WHERE id > 10;
CREATE RULE recent_ins AS ON INSERT TO crm.recent DO INSTEAD INSERT INTO crm.notes VALUES (NEW.id, NEW.owner, NEW.body);
INSERT INTO crm.notes SELECT g, 'postgres', repeat('note ', g % 20) FROM generate_series(1, 500) g;
INSERT INTO crm.cache SELECT 'k' || g, jsonb_build_object('g', g) FROM generate_series(1, 100) g;
]], "shop")

local user_tables_sql = [[
  SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname IN ('shop', 'crm') AND c.relkind = 'r' ORDER BY 1]]

local function digest(c, db, tbl)
  return c:sql(string.format(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM %s t", tbl), db)
end

local function check_data_equal(db)
  local n = 0
  for tbl in src:sql(user_tables_sql, "shop"):gmatch("[^\n]+") do
    T.eq(digest(dst, db, tbl), digest(src, "shop", tbl), tbl)
    n = n + 1
  end
  T.ok(n >= 13, "tables compared: " .. n)
end

local function run_local(db, extra, opts)
  local args = { "run", "local", "source=" .. SRC, "target=" .. dst.conninfo .. " dbname=" .. db,
                 "jobs=2", "cdc=false", "split_threshold_mb=1", "--state", tmp .. "/state-" .. db }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return T.run(args, opts)
end

T.test("pgtide run local: every object kind present and equal, rows exact, FKs validated", function ()
  dst:sql("CREATE DATABASE t1")
  local code, out, err = run_local("t1")
  T.eq(code, 0, "exit code; stderr:\n" .. err)
  T.match(err, "full load: %d+ tables")
  T.match(err, "count check: %d+ tables, %d+ rows, all equal")
  -- the schema, name by name (schema.verify: catalog.compare + the seed's counts)
  local a <close> = pg.connect(SRC)
  local b <close> = pg.connect(dst.conninfo .. " dbname=t1")
  local r = schema.verify(a, b)
  T.eq(#r.differences, 0, "schema differences")
  check_data_equal("t1")
  -- every kind is really there on the target
  local kinds_sql = [[
    SELECT (SELECT count(*) FROM pg_type WHERE typtype = 'e' AND typnamespace = 'shop'::regnamespace) || ',' ||
           (SELECT count(*) FROM pg_type WHERE typtype = 'd' AND typnamespace = 'shop'::regnamespace) || ',' ||
           (SELECT count(*) FROM pg_type WHERE typtype = 'c' AND typnamespace = 'shop'::regnamespace
              AND typrelid IN (SELECT oid FROM pg_class WHERE relkind = 'c')) || ',' ||
           (SELECT count(*) FROM pg_class WHERE relkind = 'p' AND relnamespace = 'shop'::regnamespace) || ',' ||
           (SELECT count(*) FROM pg_class WHERE relkind = 'm') || ',' ||
           (SELECT count(*) FROM pg_class WHERE relkind = 'v' AND relnamespace IN ('shop'::regnamespace, 'crm'::regnamespace)) || ',' ||
           (SELECT count(*) FROM pg_class WHERE relkind = 'S' AND relnamespace = 'shop'::regnamespace) || ',' ||
           (SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relnamespace IN ('shop'::regnamespace, 'crm'::regnamespace)) || ',' ||
           (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgparentid = 0) || ',' ||
           (SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conparentid = 0) || ',' ||
           (SELECT count(*) FROM pg_attribute WHERE attgenerated = 's') || ',' ||
           (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE a.attidentity <> '' AND c.relnamespace = 'shop'::regnamespace) || ',' ||
           (SELECT count(*) FROM pg_policy) || ',' ||
           (SELECT count(*) FROM pg_rewrite WHERE rulename = 'recent_ins') || ',' ||
           (SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm') || ',' ||
           (SELECT count(*) FROM pg_proc WHERE pronamespace = 'shop'::regnamespace) || ',' ||
           (SELECT count(*) FROM pg_description d JOIN pg_class c ON c.oid = d.objoid WHERE c.relname = 'notes') || ',' ||
           (SELECT count(*) FROM pg_class WHERE relpersistence = 'u' AND relkind = 'r')]]
  local want = src:sql(kinds_sql, "shop")
  for n in want:gmatch("%d+") do T.ok(tonumber(n) > 0, "source kinds: " .. want) end
  T.eq(dst:sql(kinds_sql, "t1"), want, "enums,domains,composites,partitioned,matviews,views,sequences,"
    .. "indexes,triggers,fks,generated,identity,policies,rules,extensions,functions,comments,unlogged")
  T.eq(dst:sql("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated", "t1"), "0",
    "foreign keys left NOT VALID")
  T.eq(dst:sql("SELECT count(*) FROM pg_index WHERE NOT indisvalid", "t1"), "0", "invalid indexes")
  T.eq(dst:sql("SELECT count(*) > 0 FROM shop.daily_sales", "t1"), "t", "materialized view refreshed")
  -- sequences ahead of the source by the margin
  T.eq(dst:sql("SELECT last_value FROM shop.orders_id_seq", "t1"),
       tostring(tonumber(src:sql("SELECT last_value FROM shop.orders_id_seq", "shop")) + 1000))
  T.eq(dst:sql("SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL FROM pg_stat_user_tables"
    .. " WHERE relname = 'order_items'", "t1"), "t", "analyzed")
  -- triggers work on the target
  dst:sql("UPDATE shop.customers SET name = 'x' WHERE id = 1", "t1")
  T.eq(dst:sql("SELECT updated_at IS NOT NULL FROM shop.customers WHERE id = 1", "t1"), "t")
  -- a rerun skips every step
  code, out, err = run_local("t1")
  T.eq(code, 0, "rerun exit code")
  local _, skipped = err:gsub("already done", "")
  T.eq(skipped, 10, "steps skipped on the rerun (the CDC steps by their check):\n" .. err)
end)

T.test("kill -9 during the full load, rerun: exact equality, no duplicates", function ()
  dst:sql("CREATE DATABASE t2")
  local DST = dst.conninfo .. " dbname=t2"
  local code, _, err = run_local("t2", { "--only", "preflight" })
  T.eq(code, 0, err)
  code, _, err = run_local("t2", { "--only", "schema" })
  T.eq(code, 0, err)
  -- throttle the copy (ALWAYS triggers fire even with session_replication_role = replica)
  dst:sql([[
    CREATE FUNCTION public.throttle() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF random() < 0.01 THEN PERFORM pg_sleep(0.01); END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER throttle BEFORE INSERT ON shop.order_items FOR EACH ROW EXECUTE FUNCTION public.throttle();
    ALTER TABLE shop.order_items ENABLE ALWAYS TRIGGER throttle;
    CREATE TRIGGER throttle BEFORE INSERT ON shop.audit_log_0 FOR EACH ROW EXECUTE FUNCTION public.throttle();
    ALTER TABLE shop.audit_log_0 ENABLE ALWAYS TRIGGER throttle;
    CREATE TRIGGER throttle BEFORE INSERT ON shop.customers FOR EACH ROW EXECUTE FUNCTION public.throttle();
    ALTER TABLE shop.customers ENABLE ALWAYS TRIGGER throttle;]], "t2")
  local statefile = tmp .. "/state-t2/state.json"
  local cmd = { T.q(T.pgtide), "run", "local", T.q("source=" .. SRC), T.q("target=" .. DST), "jobs=2",
                "cdc=false", "split_threshold_mb=1", "--state", T.q(tmp .. "/state-t2") }
  local _, pidout = T.sh(table.concat(cmd, " ") .. " >" .. tmp .. "/kill.log 2>&1 & echo $!")
  local pid = tonumber(pidout:match("%d+"))
  local done, units, deadline = 0, 0, sys.monotonic() + 90
  repeat
    sys.sleep(0.05)
    local ok, st = pcall(json.decode, sys.readfile(statefile) or "")
    local fl = ok and type(st) == "table" and st.steps and st.steps["full-load"]
    if fl and fl.outputs and fl.outputs.units then
      done, units = #(fl.outputs.done or {}), #fl.outputs.units
    end
  until done >= 2 or sys.monotonic() > deadline or T.sh("kill -0 " .. pid .. " 2>/dev/null") ~= 0
  T.ok(done >= 2, "no unit recorded in time: " .. (sys.readfile(tmp .. "/kill.log") or ""))
  sys.kill(pid, "KILL")
  T.sh("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
  io.stderr:write(string.format("killed with %d of %d units recorded\n", done, units))
  T.ok(done < units, "the kill came after the last unit")
  local st = json.decode(sys.readfile(statefile))
  T.eq(st.steps["full-load"].status, "running")
  dst:sql([[DROP TRIGGER throttle ON shop.order_items; DROP TRIGGER throttle ON shop.audit_log_0;
            DROP TRIGGER throttle ON shop.customers; DROP FUNCTION public.throttle();]], "t2")
  local code2, _, err2 = run_local("t2")
  T.eq(code2, 0, "resume exit code:\n" .. err2)
  local before = tonumber(err2:match("(%d+) loaded before"))
  T.ok(before and before >= 2, "units kept from the killed run: " .. tostring(before))
  check_data_equal("t2")
  T.eq(dst:sql("SELECT count(*) - count(DISTINCT (order_id, line_no)) FROM shop.order_items", "t2"), "0")
end)

local wrong = "Wr0ng-" .. tostring(os.time())
local bad_out = ""

T.test("wrong password and unreachable target: preflight fails with the cause and the fix", function ()
  local code, out, err = T.run { "run", "local", "source=" .. SRC,
    "target=" .. dst.conninfo .. " dbname=postgres password=" .. wrong .. " passfile=/dev/null",
    "--state", tmp .. "/state-bad" }
  bad_out = out .. err
  T.eq(code, 1, "exit code")
  T.match(err, "%[FAIL%] Connect to the target: [^\n]*password authentication failed")
  T.match(err, "fix: check the target connection string")
  code, out, err = T.run { "run", "local", "source=" .. SRC,
    "target=host=127.0.0.1 port=9 dbname=x connect_timeout=3", "--state", tmp .. "/state-unreach" }
  T.eq(code, 1, "exit code")
  T.match(err, "%[FAIL%] Connect to the target: [^\n]*not reachable")
  T.match(err, "%[pass%] Connect to the source")
end)

T.test("a wrong password given in the target conninfo is never printed", function ()
  T.ok(bad_out ~= "", "the previous test did not run")
  T.nomatch(bad_out, wrong)
  T.nomatch(bad_out, T.secret("pg_password"))
end)

T.done()
