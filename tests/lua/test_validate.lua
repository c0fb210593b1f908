-- Module-level tests of validation: core.validate's arguments and errors,
-- pgtide.schema_diff on catalog pictures built by hand, the summary and
-- exit codes of pgtide.validate.  (Against real servers:
-- tests/cintegration/test_validate.c and tests/integration/test_validate*.lua.)
local T = require "t"
local core = require "core.validate"
local schema_diff = require "pgtide.schema_diff"
local validate = require "pgtide.validate"

-- {==================================================================
-- core.validate
-- ===================================================================

T.test("core.validate checks its arguments", function()
  T.raises(function() core.run() end, "table expected")
  T.raises(function() core.run {} end, "'source' and 'target' are required")
  T.raises(function() core.run { source = "a", target = "b", mode = "live" } end,
    "offline, consistent or recheck")
  T.raises(function() core.run { source = "a", target = "b", mode = "consistent" } end,
    "pause_at")
  T.raises(function() core.run { source = "a", target = "b", jobs = 0 } end, "'jobs'")
  T.raises(function() core.run { source = "a", target = "b", tables = "t" } end, "list of table")
  T.raises(function() core.run { source = "a", target = "b", tables = { 1 } } end, "list of table")
  T.eq(core.modes, { "offline", "consistent", "recheck" })
end)

T.test("core.validate raises an error object when a server is unreachable", function()
  local ok, e = pcall(core.run, { source = "host=127.0.0.1 port=1 connect_timeout=2",
                                  target = "host=127.0.0.1 port=1 connect_timeout=2",
                                  progress = false })
  T.eq(ok, false)
  T.eq(type(e), "table")
  T.eq(e.op, "run")
  T.eq(e.interrupted, false)
  T.match(tostring(e), "^validate failed: cannot connect to source")
  T.match(tostring(e), "not reachable")
end)

-- }==================================================================


-- {==================================================================
-- schema_diff.compare on hand-made pictures
-- ===================================================================

local function picture()
  return {
    schemas = { { name = "app" } },
    extensions = { { name = "plpgsql", version = "1.0", schema = "pg_catalog" } },
    types = {
      { schema = "app", name = "mood", qname = "app.mood", kind = "enum",
        labels = { "sad", "ok", "happy" } },
      { schema = "app", name = "posint", qname = "app.posint", kind = "domain",
        base_type = "integer", not_null = false,
        constraints = { { name = "posint_check", definition = "CHECK (VALUE > 0)", validated = true } } },
    },
    tables = {
      { schema = "app", name = "orders", qname = "app.orders", kind = "table",
        persistence = "permanent", replica_identity = "default", rls_enabled = false,
        rls_forced = false,
        columns = {
          { name = "id", position = 1, type = "bigint", not_null = true,
            default = "nextval('app.orders_id_seq'::regclass)" },
          { name = "note", position = 2, type = "text", not_null = false },
        } },
    },
    sequences = {
      { schema = "app", name = "orders_id_seq", qname = "app.orders_id_seq", data_type = "bigint",
        start = 1, increment = 1, min = 1, max = 9223372036854775807, cache = 1, cycle = false,
        last_value = 500, owned_by = { schema = "app", table = "orders", column = "id" },
        identity = false },
      { schema = "app", name = "ident_seq", qname = "app.ident_seq", identity = true,
        data_type = "bigint", start = 1, increment = 1, min = 1, max = 10, cache = 1,
        cycle = false },
    },
    indexes = {
      { schema = "app", table = "orders", name = "orders_pkey", qname = "app.orders_pkey",
        definition = "CREATE UNIQUE INDEX orders_pkey ON app.orders USING btree (id)",
        valid = true, constraint = "orders_pkey" },
      { schema = "app", table = "orders", name = "orders_note_idx", qname = "app.orders_note_idx",
        definition = "CREATE INDEX orders_note_idx ON app.orders USING btree (note)", valid = true },
    },
    constraints = {
      { schema = "app", table = "orders", qtable = "app.orders", name = "orders_pkey",
        type = "primary key", definition = "PRIMARY KEY (id)", validated = true,
        deferrable = false, deferred = false },
      { schema = "app", table = "orders", qtable = "app.orders", name = "orders_cust_fk",
        type = "foreign key", definition = "FOREIGN KEY (id) REFERENCES app.c(id)",
        validated = true, deferrable = false, deferred = false },
    },
    views = {
      { schema = "app", name = "v", qname = "app.v", kind = "view",
        definition = " SELECT 1 AS one;", populated = true },
    },
    functions = {
      { schema = "app", name = "f", signature = "app.f()", kind = "function", result = "integer",
        language = "sql", volatility = "volatile", security_definer = false, strict = false,
        definition_hash = "aaa" },
    },
    triggers = {
      { schema = "app", table = "orders", name = "orders_touch", enabled = "origin",
        definition = "CREATE TRIGGER orders_touch BEFORE INSERT ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch()" },
    },
    policies = {
      { schema = "app", table = "orders", name = "p", command = "ALL", permissive = true,
        roles = { "public" }, using = "true" },
    },
  }
end

local function only_difference(res)
  T.eq(#res.differences, 1, "number of differences")
  return res.differences[1]
end

T.test("identical pictures have no differences", function()
  local res = schema_diff.compare(picture(), picture())
  T.eq(res.differences, {})
  T.eq(res.ok, true)
  T.ok(res.objects >= 14, "objects compared: %d", res.objects)
end)

T.test("a missing index is named with its CREATE INDEX", function()
  local b = picture()
  table.remove(b.indexes, 2)
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.kind, "indexes"); T.eq(d.problem, "missing"); T.eq(d.object, "app.orders_note_idx")
  T.eq(d.fix, "CREATE INDEX orders_note_idx ON app.orders USING btree (note);")
end)

T.test("an index behind a constraint is reported through the constraint", function()
  local b = picture()
  table.remove(b.indexes, 1)
  table.remove(b.constraints, 1)
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.kind, "constraints"); T.eq(d.problem, "missing")
  T.eq(d.fix, "ALTER TABLE app.orders ADD CONSTRAINT orders_pkey PRIMARY KEY (id);")
end)

T.test("a foreign key left NOT VALID differs only in 'validated'", function()
  local b = picture()
  b.constraints[2].validated = false
  b.constraints[2].definition = b.constraints[2].definition .. " NOT VALID"
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.field, "validated"); T.eq(d.source, true); T.eq(d.target, false)
  T.eq(d.fix, "ALTER TABLE app.orders VALIDATE CONSTRAINT orders_cust_fk;")
end)

T.test("a sequence behind the source, and one never used", function()
  local b = picture()
  b.sequences[1].last_value = 100
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.kind, "sequences"); T.eq(d.field, "last_value"); T.eq(d.source, 500); T.eq(d.target, 100)
  T.eq(d.fix, "SELECT pg_catalog.setval('app.orders_id_seq', 500, true);")
  b.sequences[1].last_value = nil
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.target, "never used")
  b.sequences[1].last_value = 900          -- ahead is fine
  T.eq(schema_diff.compare(picture(), b).differences, {})
end)

T.test("identity sequences come with their column", function()
  local b = picture()
  table.remove(b.sequences, 2)
  T.eq(schema_diff.compare(picture(), b).differences, {})
end)

T.test("a changed view gets CREATE OR REPLACE VIEW", function()
  local b = picture()
  b.views[1].definition = " SELECT 2 AS one;"
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.kind, "views"); T.eq(d.field, "definition")
  T.eq(d.fix, "CREATE OR REPLACE VIEW app.v AS\n SELECT 1 AS one;")
end)

T.test("a missing trigger, a disabled one", function()
  local b = picture()
  b.triggers = {}
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.kind, "triggers"); T.eq(d.problem, "missing"); T.eq(d.object, "app.orders.orders_touch")
  T.match(d.fix, "^CREATE TRIGGER orders_touch BEFORE INSERT ON app%.orders")
  b = picture()
  b.triggers[1].enabled = "disabled"
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.fix, "ALTER TABLE app.orders ENABLE TRIGGER orders_touch;")
end)

T.test("columns: missing, extra, different type, default, nullability", function()
  local b = picture()
  local cols = b.tables[1].columns
  cols[2] = { name = "memo", position = 2, type = "text", not_null = false }
  local res = schema_diff.compare(picture(), b)
  T.eq(#res.differences, 2)
  T.eq(res.differences[1].problem, "missing")
  T.eq(res.differences[1].fix, "ALTER TABLE app.orders ADD COLUMN note text;")
  T.eq(res.differences[2].problem, "extra")
  T.eq(res.differences[2].fix, "ALTER TABLE app.orders DROP COLUMN memo;")
  b = picture()
  b.tables[1].columns[2].type = "character varying(10)"
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.field, "column note type")
  T.eq(d.fix, "ALTER TABLE app.orders ALTER COLUMN note TYPE text;")
  b = picture()
  b.tables[1].columns[1].default = nil
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.fix, "ALTER TABLE app.orders ALTER COLUMN id SET DEFAULT nextval('app.orders_id_seq'::regclass);")
  b = picture()
  b.tables[1].columns[2].not_null = true
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.fix, "ALTER TABLE app.orders ALTER COLUMN note DROP NOT NULL;")
end)

T.test("types: enum labels, domain constraints", function()
  local b = picture()
  b.types[1].labels = { "sad", "happy" }
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.field, "labels")
  T.eq(d.fix, "ALTER TYPE app.mood ADD VALUE 'ok' AFTER 'sad';")
  b.types[1].labels = { "happy", "sad", "ok" }          -- reordered: no simple fix
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.fix, nil)
  b = picture()
  b.types[2].constraints = {}
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.fix, "ALTER DOMAIN app.posint ADD CONSTRAINT posint_check CHECK (VALUE > 0);")
  b = picture()
  b.types = {}
  local res = schema_diff.compare(picture(), b)
  T.eq(#res.differences, 2)
  T.eq(res.differences[1].fix, "CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');")
  T.eq(res.differences[2].fix, "CREATE DOMAIN app.posint AS integer CONSTRAINT posint_check CHECK (VALUE > 0);")
end)

T.test("extensions, functions, policies, RLS, extra objects", function()
  local b = picture()
  b.extensions[1].version = "0.9"
  local d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.fix, "ALTER EXTENSION plpgsql UPDATE TO '1.0';")
  b = picture()
  b.functions[1].definition_hash = "bbb"
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.kind, "functions"); T.eq(d.field, "definition_hash")
  b = picture()
  b.policies[1].using = "false"
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.fix, "DROP POLICY p ON app.orders;\nCREATE POLICY p ON app.orders AS PERMISSIVE FOR ALL TO PUBLIC USING (true);")
  b = picture()
  b.tables[1].rls_enabled = true
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.fix, "ALTER TABLE app.orders DISABLE ROW LEVEL SECURITY;")
  b = picture()
  b.schemas[2] = { name = "Extra Schema" }
  d = only_difference(schema_diff.compare(picture(), b))
  T.eq(d.problem, "extra"); T.eq(d.fix, 'DROP SCHEMA "Extra Schema" CASCADE;')
end)

T.test("a missing table gets its CREATE TABLE", function()
  local b = picture()
  b.tables = {}
  local res = schema_diff.compare(picture(), b, { kinds = { "tables" } })
  local d = only_difference(res)
  T.eq(d.fix, "CREATE TABLE app.orders (\n  id bigint DEFAULT nextval('app.orders_id_seq'::regclass) NOT NULL,\n  note text\n);")
  T.eq(schema_diff.table_ddl { qname = "app.p1", partition_of = { schema = "app", name = "p" },
                               partition_bound = "FOR VALUES IN (1)" },
       "CREATE TABLE app.p1 PARTITION OF app.p FOR VALUES IN (1);")
end)

T.test("a table filter limits the comparison to that table's objects", function()
  local b = picture()
  b.views = {}
  b.indexes[2] = nil
  local res = schema_diff.compare(picture(), b, { tables = { ["app.other"] = true } })
  T.eq(res.differences, {})
  res = schema_diff.compare(picture(), b, { tables = { ["app.orders"] = true } })
  local d = only_difference(res)
  T.eq(d.kind, "indexes")
end)

T.test("format shortens long values", function()
  local line = schema_diff.format { kind = "views", object = "app.v", problem = "different",
    field = "definition", source = string.rep("x ", 100), target = "SELECT\n   1" }
  T.match(line, "^different view app%.v %(definition%): source x x x")
  T.match(line, "%.%.%., target SELECT 1$")
end)

-- }==================================================================


-- {==================================================================
-- pgtide.validate: result, exit code, summary, hooks
-- ===================================================================

local function data_report()
  return {
    mode = "offline", seconds = 1.5, bytes_source = 1000, bytes_target = 1000,
    table_bytes = 1000000, tables_equal = 1, tables_different = 2, tables_failed = 0,
    missing = 1, extra = 1, changed = 2,
    tables = {
      { schema = "app", name = "ok", status = "equal", key = { "id" }, key_kind = "primary key",
        source_rows = 10, missing = 0, extra = 0, changed = 0, rows = {} },
      { schema = "app", name = "orders", status = "different", key = { "id" },
        key_kind = "primary key", source_rows = 100, missing = 1, extra = 0, changed = 2,
        rows = {
          { kind = "changed", key = { "7" }, columns = {
            { name = "note", source_null = true, target = "", target_null = false } } },
          { kind = "changed", key = { "8" }, columns = { { name = "secret", hidden = true } } },
          { kind = "missing", key = { "9" } },
        } },
      { schema = "app", name = "log", status = "different", key = {}, key_kind = "none",
        multiset = true, source_rows = 5, missing = 0, extra = 1, changed = 0,
        rows = { { kind = "extra", hash = "00ff", source_count = 1, target_count = 2,
                   values = { { name = "msg", value = "hi" }, { name = "n", null = true } } } } },
    },
  }
end

T.test("result and exit code", function()
  T.eq(validate.result { schema = { ok = true, differences = {} } }, "equal")
  T.eq(validate.exit_code { schema = { ok = true, differences = {} } }, 0)
  T.eq(validate.result { data = data_report() }, "different")
  T.eq(validate.exit_code { data = data_report() }, 1)
  T.eq(validate.result { data_error = "boom", schema = { ok = true } }, "failed")
  local d = data_report()
  d.tables_failed = 1
  T.eq(validate.exit_code { data = d }, 4)
end)

T.test("the summary names rows, columns, NULL versus empty, hidden values", function()
  local s = validate.summary { data = data_report(), files = { "/x/validation.json" } }
  T.match(s, "3 tables: 1 equal, 2 different, 0 failed")
  T.match(s, "app%.orders: 1 missing, 0 extra, 2 changed %(primary key id%)")
  T.match(s, "changed  id=7: note NULL %-> ''")
  T.match(s, "changed  id=8: secret %(hidden%) %-> %(hidden%)")
  T.match(s, "missing  id=9")
  T.match(s, "app%.log: 0 missing, 1 extra, 0 changed %(no key: compared as a multiset of rows%)")
  T.match(s, "extra    row x1 on source, x2 on target: %('hi', NULL%)")
  T.match(s, "Result: DIFFERENT %(report: /x/validation%.json%)")
end)

T.test("validate.run usage errors", function()
  T.raises(function() validate.run { source = "a" } end, "source and target")
  T.raises(function() validate.run { source = "a", target = "b", mode = "fast" } end,
    "unknown validation mode")
  T.raises(function() validate.run { source = "a", target = "b", mode = "consistent" } end,
    "needs the running CDC")
  T.raises(function() validate.run { source = "a", target = "b", tables = { 'a."b' } } end,
    "invalid table name")
end)

T.test("table names are split as the data half reads them", function()
  local function split(n) return { validate.split_name(n) } end
  T.eq(split("app.orders"), { "app", "orders" })
  T.eq(split("orders"), { "public", "orders" })
  T.eq(split('"We.ird"."T ""x"""'), { "We.ird", 'T "x"' })
  T.eq(split('"a".b'), { "a", "b" })
  for _, bad in ipairs { "", "a.", ".b", "a.b.c", '"a"b', '"a', 'a."b' } do
    T.eq(split(bad), {}, bad)
  end
end)

T.test("the CDC hook pauses, waits for the LSN and resumes", function()
  local calls = {}
  local cdc = {
    pause_at = function(_, lsn) calls[#calls + 1] = "pause " .. lsn end,
    wait_applied = function(_, lsn, timeout)
      calls[#calls + 1] = "wait " .. lsn .. " " .. timeout
      return lsn ~= "0/BAD"
    end,
    resume = function() calls[#calls + 1] = "resume" end,
  }
  local pause_at, resume = validate.cdc_hook(cdc, 30)
  pause_at("0/16B3748")
  resume()
  T.eq(calls, { "pause 0/16B3748", "wait 0/16B3748 30", "resume" })
  T.raises(function() pause_at("0/BAD") end, "did not reach 0/BAD within 30 s")
end)

-- }==================================================================

T.done()
