-- End to end: `pgtide validate` between two real PostgreSQL 15 clusters.
-- Each kind of difference is injected on its own; the report must name
-- exactly it and nothing else, and (for schema differences) applying the
-- fix it proposes must make the databases equal again.
local T = require "t"
local json = require "json"
local pg = require "pg"

local src, dst = T.cluster(), T.cluster()

local SCHEMA = [[
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.posint AS int CONSTRAINT posint_check CHECK (VALUE > 0);
CREATE TABLE app.customers (id serial PRIMARY KEY, name text NOT NULL, m app.mood DEFAULT 'ok');
CREATE TABLE app.orders (id bigserial PRIMARY KEY,
  customer_id int CONSTRAINT orders_customer_fk REFERENCES app.customers (id),
  amount numeric(10,2), qty app.posint, note text, at timestamptz, js jsonb, raw bytea,
  flag boolean, tags text[]);
CREATE INDEX orders_customer_idx ON app.orders (customer_id);
CREATE VIEW app.big_orders AS SELECT id, amount FROM app.orders WHERE amount > 100;
CREATE MATERIALIZED VIEW app.totals AS SELECT customer_id, sum(amount) AS total FROM app.orders GROUP BY 1;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql
  AS $$BEGIN NEW.note := coalesce(NEW.note, 'new'); RETURN NEW; END$$;
CREATE TRIGGER orders_touch BEFORE INSERT ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_all ON app.orders USING (true);
CREATE TABLE app.events (at timestamptz, kind text);
CREATE SEQUENCE app.counter;
]]

local DATA = [[
INSERT INTO app.customers (name, m) SELECT 'c' || g, (ARRAY['sad','ok','happy'])[1 + g % 3]::app.mood
  FROM generate_series(1, 200) g;
INSERT INTO app.orders (customer_id, amount, qty, note, at, js, raw, flag, tags)
  SELECT 1 + g % 200, g * 0.25, 1 + g % 9, CASE WHEN g % 10 = 0 THEN NULL ELSE 'n' || g END,
         timestamptz '2024-03-01 12:00+00' + g * interval '1 min', jsonb_build_object('g', g),
         decode(md5(g::text), 'hex'), g % 2 = 0, ARRAY['t' || g % 5]
    FROM generate_series(1, 5000) g;
UPDATE app.orders SET note = NULL WHERE id % 10 = 0;  -- the insert trigger filled them in
INSERT INTO app.events SELECT timestamptz '2024-01-01' + (g % 50) * interval '1 h', 'k' || g % 7
  FROM generate_series(1, 600) g;
INSERT INTO app.events VALUES ('2024-02-02 00:00+00', 'twice'), ('2024-02-02 00:00+00', 'twice');
SELECT nextval('app.counter') FROM generate_series(1, 42);
REFRESH MATERIALIZED VIEW app.totals;
ANALYZE;
]]

src:sql(SCHEMA); src:sql(DATA)
dst:sql(SCHEMA); dst:sql(DATA)

local cfgfile = T.tmp .. "/validate-it.lua"
local statedir = T.tmp .. "/validate-it-state"
do
  local f = assert(io.open(cfgfile, "w"))
  f:write(string.format("return { name = 'vt', source = %q, target = %q, state_dir = %q, jobs = 2 }\n",
    src.conninfo, dst.conninfo, statedir))
  f:close()
end

-- Run `pgtide validate -c cfg ARGS...`; returns code, report, stdout, stderr.
local function validate(...)
  local jsonfile = T.tmp .. "/validate-it.json"
  os.remove(jsonfile)
  local args = { "validate", "-c", cfgfile, "--json", jsonfile, "--no-progress", ... }
  local code, out, err = T.run(args)
  local f = io.open(jsonfile)
  local report
  if f then
    report = json.decode(f:read("a"))
    f:close()
  end
  return code, report, out, err
end

local function data_table(report, name)
  for _, t in ipairs(report.data.tables) do
    if t.schema .. "." .. t.name == name then return t end
  end
  error("no table " .. name .. " in the report")
end

-- {==================================================================
-- Equal databases
-- ===================================================================

T.test("equal databases: exit 0, no difference, report in the state directory", function()
  local code, r, out = validate()
  T.eq(code, 0, "exit code")
  T.eq(r.result, "equal")
  T.eq(#r.schema.differences, 0)
  T.ok(r.schema.objects > 15, "schema objects compared: %s", tostring(r.schema.objects))
  T.eq(#r.data.tables, 3)
  T.eq(r.data.tables_equal, 3)
  T.eq(r.data.missing + r.data.extra + r.data.changed, 0)
  T.eq(data_table(r, "app.orders").source_rows, 5000)
  T.eq(data_table(r, "app.events").multiset, true)
  T.match(out, "Result: EQUAL")
  -- the command's own file: a run's validation.json (its steps' last report) is left alone
  local f = io.open(statedir .. "/validate.json")
  T.ok(f ~= nil, "validate.json in the state directory")
  if f then f:close() end
  T.eq(io.open(statedir .. "/validation.json"), nil, "the run's validation.json is not written")
  -- the report never shows the password
  T.nomatch(json.encode(r), T.secret("pg_password"))
end)

-- }==================================================================


-- {==================================================================
-- Schema differences, one at a time, then their fixes
-- ===================================================================

local CASES = {
  { name = "a sequence behind",
    on_target = "SELECT setval('app.orders_id_seq', 7)",
    want = { kind = "sequences", object = "app.orders_id_seq", problem = "different",
             field = "last_value" } },
  { name = "a dropped index",
    on_target = "DROP INDEX app.orders_customer_idx",
    want = { kind = "indexes", object = "app.orders_customer_idx", problem = "missing" } },
  { name = "a changed view",
    on_target = "CREATE OR REPLACE VIEW app.big_orders AS SELECT id, amount FROM app.orders WHERE amount > 200",
    want = { kind = "views", object = "app.big_orders", problem = "different", field = "definition" } },
  { name = "a foreign key left NOT VALID",
    on_target = [[ALTER TABLE app.orders DROP CONSTRAINT orders_customer_fk;
      ALTER TABLE app.orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id)
        REFERENCES app.customers (id) NOT VALID]],
    want = { kind = "constraints", object = "app.orders.orders_customer_fk", problem = "different",
             field = "validated" } },
  { name = "a missing trigger",
    on_target = "DROP TRIGGER orders_touch ON app.orders",
    want = { kind = "triggers", object = "app.orders.orders_touch", problem = "missing" } },
  { name = "a different column default",
    on_target = "ALTER TABLE app.customers ALTER COLUMN m SET DEFAULT 'sad'",
    want = { kind = "tables", object = "app.customers", problem = "different",
             field = "column m default" } },
  { name = "a changed function body",
    on_target = [[CREATE OR REPLACE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql
      AS $$BEGIN NEW.note := coalesce(NEW.note, 'other'); RETURN NEW; END$$]],
    want = { kind = "functions", object = "app.touch()", problem = "different",
             field = "definition_hash" } },
  { name = "a dropped policy",
    on_target = "DROP POLICY orders_all ON app.orders",
    want = { kind = "policies", object = "app.orders.orders_all", problem = "missing" } },
  { name = "a dropped domain constraint",
    on_target = "ALTER DOMAIN app.posint DROP CONSTRAINT posint_check",
    want = { kind = "types", object = "app.posint", problem = "different", field = "constraints" } },
  { name = "an extension missing on the target",
    on_source = "CREATE EXTENSION pg_trgm",
    want = { kind = "extensions", object = "pg_trgm", problem = "missing" } },
  { name = "an enum label missing on the target",
    on_source = "ALTER TYPE app.mood ADD VALUE 'angry'",
    want = { kind = "types", object = "app.mood", problem = "different", field = "labels" } },
  { name = "a table only on the target",
    on_target = "CREATE TABLE app.scratch (x int)",
    want = { kind = "tables", object = "app.scratch", problem = "extra" } },
}

for _, case in ipairs(CASES) do
  T.test("schema: " .. case.name .. " is named, and its fix works", function()
    if case.on_target then dst:sql(case.on_target) end
    if case.on_source then src:sql(case.on_source) end
    local code, r = validate("--schema-only")
    T.eq(code, 1, "exit code")
    T.eq(r.result, "different")
    local diffs = r.schema.differences
    T.eq(#diffs, 1, "differences: " .. json.encode(diffs))
    for k, v in pairs(case.want) do T.eq(diffs[1][k], v, k) end
    T.ok(diffs[1].fix, "a fix is proposed")
    dst:sql(diffs[1].fix)
    code, r = validate("--schema-only")
    T.eq(#r.schema.differences, 0, "after the fix: " .. json.encode(r.schema.differences))
    T.eq(code, 0, "exit code after the fix")
  end)
end

-- }==================================================================


-- {==================================================================
-- Data differences
-- ===================================================================

local function rows_by_key(t)
  local out = {}
  for _, row in ipairs(t.rows) do out[table.concat(row.key, ",")] = row end
  return out
end

local function changed_column(row)
  T.eq(row.kind, "changed")
  T.eq(#row.columns, 1, "one column differs")
  return row.columns[1]
end

T.test("data: each injected difference is named, and nothing else", function()
  dst:sql([[
    DELETE FROM app.orders WHERE id = 11;
    INSERT INTO app.orders (id, customer_id, amount, note) VALUES (90001, 1, 1, 'only here');
    UPDATE app.orders SET amount = amount + 0.01 WHERE id = 21;
    UPDATE app.orders SET note = 'edited' WHERE id = 22;
    UPDATE app.orders SET at = at + interval '1 second' WHERE id = 23;
    UPDATE app.orders SET js = js || '{"x": true}' WHERE id = 24;
    UPDATE app.orders SET raw = '\x00'::bytea WHERE id = 25;
    UPDATE app.orders SET flag = NOT flag WHERE id = 26;
    UPDATE app.orders SET tags = tags || 'more'::text WHERE id = 27;
    UPDATE app.orders SET note = '' WHERE id = 30;
    UPDATE app.customers SET m = 'happy' WHERE id = 3 AND m <> 'happy';
    DELETE FROM app.events WHERE ctid = (SELECT min(ctid) FROM app.events WHERE kind = 'twice');
  ]])
  local code, r, out = validate("--data-only")
  T.eq(code, 1, "exit code")
  local o = data_table(r, "app.orders")
  T.eq({ o.missing, o.extra, o.changed }, { 1, 1, 8 })
  local rows = rows_by_key(o)
  T.eq(#o.rows, 10)
  T.eq(rows["11"].kind, "missing")
  T.eq(rows["90001"].kind, "extra")
  T.eq(changed_column(rows["21"]).name, "amount")
  local c = changed_column(rows["22"])
  T.eq({ c.name, c.source, c.target }, { "note", "n22", "edited" })
  T.eq(changed_column(rows["23"]).name, "at")
  T.eq(changed_column(rows["24"]).name, "js")
  T.eq(changed_column(rows["25"]).name, "raw")
  T.eq(changed_column(rows["26"]).name, "flag")
  T.eq(changed_column(rows["27"]).name, "tags")
  c = changed_column(rows["30"])            -- NULL on the source, "" on the target
  T.eq({ c.name, c.source_null, c.target, c.target_null }, { "note", true, "", false })
  local cu = data_table(r, "app.customers")
  T.eq({ cu.missing, cu.extra, cu.changed }, { 0, 0, 1 })
  T.eq(changed_column(cu.rows[1]).name, "m")
  local ev = data_table(r, "app.events")    -- no key: multiplicity 2 versus 1
  T.eq({ ev.missing, ev.extra, ev.changed, #ev.rows }, { 1, 0, 0, 1 })
  T.eq({ ev.rows[1].source_count, ev.rows[1].target_count }, { 2, 1 })
  T.eq(ev.rows[1].values[2].value, "twice")
  T.match(out, "changed  id=30: note NULL %-> ''")
  T.match(out, "missing  row x2 on source, x1 on target: %('2024%-02%-02 00:00:00%+00', 'twice'%)")
end)

T.test("data: --redact hides values, --tables limits the tables", function()
  local code, r, out = validate("--data-only", "--redact", "--tables", "app.orders")
  T.eq(code, 1)
  T.eq(#r.data.tables, 1)
  local rows = rows_by_key(data_table(r, "app.orders"))
  local c = changed_column(rows["22"])
  T.eq({ c.hidden, c.source, c.target }, { true, nil, nil })
  T.nomatch(out, "edited")
  T.nomatch(json.encode(r), "edited")
end)

T.test("data: --mode recheck reports what still differs after re-checks", function()
  local code, r = validate("--data-only", "--mode", "recheck", "--recheck", "1",
                           "--recheck-delay", "0", "--tables", "app.customers")
  T.eq(code, 1)
  local cu = data_table(r, "app.customers")
  T.eq({ cu.changed, cu.rechecks }, { 1, 1 })
  T.eq(r.data.mode, "recheck")
end)

-- }==================================================================


-- {==================================================================
-- The consistent point through the Lua binding
-- ===================================================================

T.test("consistent mode: a hold, the point, the target snapshot, resume", function()
  local core = require "core.validate"
  src:sql("INSERT INTO app.customers (id, name) VALUES (5001, 'committed before the LSN')")
  local calls, target = {}, pg.connect(dst.conninfo)
  local r = core.run {
    source = src.conninfo, target = dst.conninfo, tables = { "app.customers" }, jobs = 2,
    progress = false, mode = "consistent",
    pause_at = function(lsn)
      calls[#calls + 1] = "pause_at " .. lsn
      -- a stand-in for change apply catching up to the consistent point
      if #calls == 2 then
        target:exec("INSERT INTO app.customers (id, name) VALUES (5001, 'committed before the LSN')")
      end
    end,
    resume = function()
      calls[#calls + 1] = "resume"
      -- applied after the target snapshot: must not be seen
      target:exec("INSERT INTO app.customers (id, name) VALUES (5002, 'after the snapshot')")
    end,
  }
  T.eq(#calls, 3)
  T.match(calls[1], "^pause_at %x+/%x+$")   -- the hold, at the source's position
  T.eq(calls[2], "pause_at " .. r.lsn)      -- the consistent point
  T.ok(require("core").lsn_int(calls[1]:match("%S+$")) < require("core").lsn_int(r.lsn), "hold before point")
  T.eq(calls[3], "resume")
  local cu = r.tables[1]
  T.eq({ cu.missing, cu.extra }, { 0, 0 })
  T.eq(cu.changed, 1)                       -- the earlier injected change only
  T.ok(r.point_ms > 0 and r.point_ms < 30000, "point %s ms", tostring(r.point_ms))
  T.eq(src:sql("SELECT count(*) FROM pg_replication_slots"), "0", "the temporary slot is gone")
  target:exec("DELETE FROM app.customers WHERE id IN (5001, 5002)")
  src:sql("DELETE FROM app.customers WHERE id = 5001")
  target:close()
end)

T.test("consistent mode: a failing pause stops the run and resume is not called", function()
  local core = require "core.validate"
  local resumed = false
  local ok, e = pcall(core.run, {
    source = src.conninfo, target = dst.conninfo, tables = { "app.customers" }, progress = false,
    mode = "consistent",
    pause_at = function() error("apply is stuck", 0) end,
    resume = function() resumed = true end,
  })
  T.eq(ok, false)
  T.match(tostring(e), "pausing change apply at %x+/%x+ failed: apply is stuck")
  T.eq(resumed, false)
  -- a failure at the point itself, after the hold: apply is resumed
  local n = 0
  ok, e = pcall(core.run, {
    source = src.conninfo, target = dst.conninfo, tables = { "app.customers" }, progress = false,
    mode = "consistent",
    pause_at = function() n = n + 1; if n == 2 then error("apply is stuck", 0) end end,
    resume = function() resumed = true end,
  })
  T.eq(ok, false)
  T.match(tostring(e), "pausing change apply at %x+/%x+ failed: apply is stuck")
  T.eq(resumed, true)
end)

-- }==================================================================


-- {==================================================================
-- Exit codes
-- ===================================================================

T.test("usage errors exit 2, an unreachable target exits 4", function()
  local code, _, err = T.run { "validate", "--bogus" }
  T.eq(code, 2)
  T.match(err, "unknown argument '%-%-bogus'")
  code = T.run { "validate", "-c", cfgfile, "--mode", "consistent" }
  T.eq(code, 2)
  code, _, err = T.run { "validate", "--source", src.conninfo,
                         "--target", "host=127.0.0.1 port=1 user=postgres connect_timeout=2",
                         "--state", T.tmp .. "/validate-it-bad", "--no-progress" }
  T.eq(code, 4)
  T.match(err .. "", "")
end)

-- }==================================================================

T.done()
