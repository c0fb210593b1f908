-- pgtide.catalog against a real PostgreSQL 15 holding every object kind
-- (tests/lua/pg_fixture.lua), checked field by field; filters, extension
-- members, determinism, counts and comparison.
local T = require "t"
local pg = require "pg"
local catalog = require "pgtide.catalog"
local F = require "pg_fixture"

local c = T.cluster()
local conn = pg.connect(c.conninfo)
conn:exec(F.sql)
conn:exec(F.data)

local function by(list, ...)
  local fields = { ... }
  local out = {}
  for _, o in ipairs(list) do
    local k = {}
    for i, f in ipairs(fields) do k[i] = o[f] end
    out[table.concat(k, ".")] = o
  end
  return out
end

local function names(list, field)
  local out = {}
  for _, o in ipairs(list) do out[#out + 1] = o[field or "name"] end
  return out
end

local d = catalog.describe(conn)

T.test("schemas and extensions; system schemas excluded", function ()
  T.eq(names(d.schemas), { "app", "public" })
  T.eq(d.schemas[1].comment, "the application")
  T.eq(d.schemas[1].owner, "postgres")
  T.eq(names(d.extensions), { "hstore", "pgcrypto", "plpgsql" })
  local ext = by(d.extensions, "name")
  T.eq(ext.hstore.schema, "public")
  T.eq(ext.hstore.version, conn:query_one("select extversion from pg_extension where extname = 'hstore'").extversion)
  T.eq(ext.plpgsql.schema, "pg_catalog")
  T.eq(d.server_version, conn:server_version())
  T.eq(d.database, "postgres")
end)

T.test("tables: kinds, partitions, unlogged, replica identity, RLS, sizes", function ()
  T.eq(names(d.tables), { "audit_log", "cache", "customers", "events", "events_2024", "events_2025",
                          "orders", "tickets", "plain" })
  local t = by(d.tables, "schema", "name")
  local cu = t["app.customers"]
  T.eq(cu.kind, "table")
  T.eq(cu.qname, "app.customers")
  T.eq(cu.persistence, "permanent")
  T.eq(cu.rls_enabled, true)
  T.eq(cu.rls_forced, false)
  T.eq(cu.comment, "people")
  T.eq(cu.primary_key, { name = "customers_pkey", columns = { "id" }, deferrable = false })
  T.eq(cu.unique_keys, { { name = "customers_email_key", columns = { "email" }, deferrable = false } })
  T.eq(cu.generated_columns, { "email_upper" })
  T.eq(cu.identity_columns, { "id" })
  T.eq(cu.rows_estimate, 50)
  T.ok(cu.total_bytes >= cu.table_bytes and cu.table_bytes > 0, "sizes")
  T.eq(cu.total_bytes, tonumber(c:sql("select pg_total_relation_size('app.customers')")))
  T.ok(cu.relpages >= 1, "relpages")
  T.eq(#cu.policies, 1)
  T.eq(cu.policies[1].name, "customers_self")
  T.eq(cu.access_method, "heap")
  T.eq(t["app.cache"].persistence, "unlogged")
  T.eq(t["app.audit_log"].replica_identity, "full")
  T.eq(t["app.audit_log"].has_primary_key, false)
  T.eq(t["app.orders"].replica_identity, "default")
  local ev = t["app.events"]
  T.eq(ev.kind, "partitioned table")
  T.eq(ev.partition_key, "RANGE (at)")
  T.eq(ev.partitions, { { schema = "app", name = "events_2024" }, { schema = "app", name = "events_2025" } })
  T.eq(ev.leaves, ev.partitions)
  T.eq(ev.leaves_rows_estimate, 300)
  T.eq(ev.leaves_total_bytes, t["app.events_2024"].total_bytes + t["app.events_2025"].total_bytes)
  T.eq(ev.total_bytes, 0)
  local leaf = t["app.events_2024"]
  T.eq(leaf.is_partition, true)
  T.eq(leaf.partition_of, { schema = "app", name = "events" })
  T.eq(leaf.partition_bound, "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
  T.eq(leaf.kind, "table")
  conn:exec("create table public.fresh (x int)")
  local fresh = by(catalog.tables(conn, { schemas = { "public" } }), "name").fresh
  T.eq(fresh.rows_estimate, nil, "never analyzed means unknown")
  T.eq(fresh.reltuples, nil)
  conn:exec("drop table public.fresh")
end)

T.test("columns: types, defaults, generated and identity columns, positions", function ()
  local cols = by(by(d.tables, "schema", "name")["app.customers"].columns, "name")
  T.eq(cols.id.identity, "always")
  T.eq(cols.id.type, "bigint")
  T.eq(cols.id.not_null, true)
  T.eq(cols.id.position, 1)
  T.eq(cols.email_upper.generated, "upper(email)")
  T.eq(cols.email_upper.default, nil)
  T.eq(cols.email_upper.position, 8)
  T.eq(cols.mood.default, "'ok'::app.mood")
  T.eq(cols.mood.type, "app.mood")
  T.eq(cols.score.type, "app.posint")
  T.eq(cols.tags.type, "text[]")
  T.eq(cols.attrs.type, "public.hstore")
  T.eq(cols.token.default, "public.gen_random_bytes(4)")
  local ocols = by(by(d.tables, "schema", "name")["app.orders"].columns, "name")
  T.eq(ocols.id.default, "nextval('app.orders_id_seq'::regclass)")
  T.eq(ocols.amount.type, "numeric(12,2)")
  T.eq(ocols.span.type, "app.floatrange")
  T.eq(ocols.extra.type, "app.pair")
  -- positions count live columns only
  conn:exec("alter table public.plain add column gone int, add column after_gone int")
  conn:exec("alter table public.plain drop column gone")
  local pc = by(catalog.columns(conn, { schemas = { "public" } }), "name")
  T.eq(pc.after_gone.position, 3)
  conn:exec("alter table public.plain drop column after_gone")
end)

T.test("tables without a primary key", function ()
  T.eq(names(d.tables_without_pk), { "audit_log", "tickets" })
  T.eq(d.tables_without_pk[1].replica_identity, "full")
  T.eq(d.tables_without_pk[2].unique_keys, { { name = "tickets_no_key", columns = { "no" }, deferrable = false } })
  T.eq(catalog.tables_without_pk(conn), d.tables_without_pk)
end)

T.test("constraints, keys and foreign keys", function ()
  local con = by(d.constraints, "table", "name")
  local fk = con["orders.orders_customer_id_fkey"]
  T.eq(fk.type, "foreign key")
  T.eq(fk.definition, "FOREIGN KEY (customer_id) REFERENCES app.customers(id) ON DELETE CASCADE")
  T.eq(fk.references, { schema = "app", table = "customers", columns = { "id" } })
  T.eq(fk.on_delete, "cascade")
  T.eq(fk.on_update, "no action")
  T.eq(fk.columns, { "customer_id" })
  T.eq(fk.validated, true)
  local nv = con["orders.orders_note_len"]
  T.eq(nv.type, "check")
  T.eq(nv.validated, false)
  T.eq(nv.definition, "CHECK ((length(note) < 100)) NOT VALID")
  T.eq(con["orders.orders_amount_check"].definition, "CHECK ((amount >= (0)::numeric))")
  T.eq(con["events.events_pkey"].columns, { "id", "at" })
  T.eq(con["events.events_pkey"].index, "events_pkey")
  local clone = con["events_2024.events_customer_id_fkey"]
  T.eq(clone.partition_clone, true)
  T.eq(clone.inherited, true)
  T.eq(con["events.events_customer_id_fkey"].partition_clone, false)
  local keys = catalog.keys(conn)
  for _, k in ipairs(keys) do T.ok(k.type == "primary key" or k.type == "unique", k.type) end
  T.eq(#keys, 9)  -- 6 primary keys of app (3 for events and its leaves), 2 unique, public.plain's
  T.eq(names(catalog.foreign_keys(conn)),
       { "events_customer_id_fkey", "events_customer_id_fkey", "events_customer_id_fkey",
         "orders_customer_id_fkey" })
end)

T.test("indexes: definitions, partitioned indexes and their leaves", function ()
  local ix = by(d.indexes, "name")
  T.eq(ix.orders_recent_idx.definition,
       "CREATE INDEX orders_recent_idx ON app.orders USING btree (placed_at DESC) WHERE (note IS NOT NULL)")
  T.eq(ix.orders_recent_idx.predicate, "(note IS NOT NULL)")
  T.eq(ix.orders_recent_idx.columns, { "placed_at" })
  T.eq(ix.orders_pkey.primary, true)
  T.eq(ix.orders_pkey.constraint, "orders_pkey")
  T.eq(ix.customers_email_key.unique, true)
  T.eq(ix.events_payload_idx.partitioned, true)
  T.eq(ix.events_payload_idx.method, "gin")
  T.eq(ix.events_2024_payload_idx.parent, "events_payload_idx")
  T.eq(ix.order_totals_customer.table, "order_totals")
  T.eq(ix.orders_customer_idx.valid, true)
  T.eq(#d.indexes, 15)  -- 14 in app, plain_pkey in public
end)

T.test("sequences with OWNED BY, identity and last values", function ()
  local s = by(d.sequences, "name")
  T.eq(names(d.sequences), { "customers_id_seq", "invoice_no", "orders_id_seq", "ticket_seq" })
  T.eq(s.invoice_no.data_type, "integer")
  T.eq(s.invoice_no.start, 100)
  T.eq(s.invoice_no.increment, 5)
  T.eq(s.invoice_no.last_value, 125)
  T.eq(s.invoice_no.max, 2147483647)
  T.eq(s.invoice_no.owned_by, nil)
  T.eq(s.orders_id_seq.owned_by, { schema = "app", table = "orders", column = "id" })
  T.eq(s.orders_id_seq.last_value, 200)
  T.eq(s.customers_id_seq.identity, true)
  T.eq(s.customers_id_seq.max, math.maxinteger)
  T.eq(s.ticket_seq.owned_by, { schema = "app", table = "tickets", column = "no" })
  T.eq(s.ticket_seq.last_value, 7)
  conn:exec("create sequence public.unused")
  T.eq(by(catalog.sequences(conn, { schemas = { "public" } }), "name").unused.last_value, nil)
  conn:exec("drop sequence public.unused")
end)

T.test("views, materialized views, functions, procedures, triggers, policies", function ()
  local v = by(d.views, "name")
  T.eq(v.big_orders.kind, "view")
  T.match(v.big_orders.definition, "WHERE orders%.amount > 100::numeric")
  T.eq(v.order_totals.kind, "materialized view")
  T.eq(v.order_totals.populated, true)
  local f = by(d.functions, "signature")
  T.eq(names(d.functions, "signature"),
       { "app.add(a integer, b integer)", "app.archive(IN days integer)", "app.total(integer)", "app.touch()" })
  T.eq(f["app.add(a integer, b integer)"].volatility, "immutable")
  T.eq(f["app.add(a integer, b integer)"].language, "sql")
  T.eq(f["app.add(a integer, b integer)"].result, "integer")
  T.eq(f["app.archive(IN days integer)"].kind, "procedure")
  T.eq(f["app.total(integer)"].kind, "aggregate")
  T.eq(f["app.touch()"].result, "trigger")
  T.match(f["app.touch()"].definition_hash, "^%x+$")
  T.eq(#f["app.touch()"].definition_hash, 32)
  -- the hash follows the definition
  local before = f["app.add(a integer, b integer)"].definition_hash
  conn:exec("create or replace function app.add(a integer, b integer default 1) returns integer language sql immutable as 'SELECT a + b + 0'")
  T.ok(by(catalog.functions(conn), "name").add.definition_hash ~= before, "hash unchanged")
  conn:exec("create or replace function app.add(a integer, b integer default 1) returns integer language sql immutable as 'SELECT a + b'")
  T.eq(by(catalog.functions(conn), "name").add.definition_hash, before)
  local tr = d.triggers
  T.eq(#tr, 1)
  T.eq(tr[1].name, "orders_touch")
  T.eq(tr[1].table, "orders")
  T.eq(tr[1].enabled, "origin")
  T.eq(tr[1]["function"], { schema = "app", name = "touch" })
  T.eq(tr[1].definition, "CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch()")
  T.eq(d.policies, { { schema = "app", table = "customers", name = "customers_self", command = "SELECT",
                       permissive = true, roles = { "public" }, using = "(email = CURRENT_USER)" } })
end)

T.test("types: enums, domains, composites, ranges; extension types excluded", function ()
  local ty = by(d.types, "name")
  T.eq(names(d.types), { "floatrange", "mood", "pair", "posint" })
  T.eq(ty.mood.kind, "enum")
  T.eq(ty.mood.labels, { "sad", "ok", "happy" })
  T.eq(ty.posint.kind, "domain")
  T.eq(ty.posint.base_type, "integer")
  T.eq(ty.posint.not_null, true)
  T.eq(ty.posint.default, "1")
  T.eq(ty.posint.constraints, { { name = "posint_check", definition = "CHECK ((VALUE > 0))", validated = true } })
  T.eq(ty.pair.kind, "composite")
  T.eq(ty.pair.attributes, { { name = "a", type = "integer" }, { name = "b", type = "text" } })
  T.eq(ty.floatrange.kind, "range")
  T.eq(ty.floatrange.subtype, "double precision")
  T.eq(ty.floatrange.multirange, "app.floatmultirange")
  T.eq(ty.hstore, nil)
end)

T.test("large objects are counted", function ()
  T.eq(d.large_objects, 0)
  conn:query("select lo_create(0)")
  conn:query("select lo_from_bytea(0, 'abc')")
  T.eq(catalog.large_objects(conn), 2)
end)

T.test("schema filter and extension members", function ()
  local only_public = catalog.tables(conn, { schemas = { "public" } })
  T.eq(names(only_public), { "plain" })
  T.eq(names(catalog.tables(conn, { exclude_schemas = { "app" } })), { "plain" })
  T.eq(names(catalog.tables(conn, { schemas = "app", exclude_schemas = "app" })), {})
  -- hstore and pgcrypto live in public but none of their objects show
  T.eq(catalog.functions(conn, { schemas = { "public" } }), {})
  T.eq(catalog.types(conn, { schemas = { "public" } }), {})
  T.eq(names(catalog.schemas(conn, { schemas = { "app" } })), { "app" })
end)

T.test("output is deterministic and the caller's search_path is kept", function ()
  conn:exec("set search_path = app, public")
  local again = catalog.describe(conn)
  again.large_objects = d.large_objects  -- changed by an earlier test
  T.ok(T.deep_eq(again, d), "two describes differ")
  T.eq(conn:query_one("show search_path").search_path, "app, public")
  for _, t in ipairs(again.tables) do
    T.eq(getmetatable(t.columns), nil)
  end
  -- errors inside a catalog function do not leave search_path changed
  conn:exec("begin")
  T.raises(function () catalog.describe(conn) ; conn:exec("select 1/0") end, "22012")
  conn:exec("rollback")
  T.eq(conn:query_one("show search_path").search_path, "app, public")
  conn:exec("reset search_path")
end)

T.test("counts: the seed's verification query per schema", function ()
  local counts = catalog.counts(conn)
  -- information_schema.tables counts the 8 tables and the view of app;
  -- information_schema.sequences leaves out identity sequences
  T.eq(counts, { { schema = "app", tables = 9, sequences = 3, indexes = 14 },
                 { schema = "public", tables = 1, sequences = 0, indexes = 1 } })
end)

T.test("compare: equal databases, then missing, extra and different objects", function ()
  conn:exec("create database copy")
  local other = pg.connect(c.conninfo .. " dbname=copy")
  other:exec(F.sql)
  local a, b = catalog.describe(conn), catalog.describe(other)
  T.eq(catalog.compare(a, b), {})
  other:exec("drop index app.orders_recent_idx")
  other:exec("alter table app.orders alter column note set default 'n/a'")
  other:exec("create table app.extra (x int)")
  other:exec("alter type app.mood add value 'angry'")
  other:exec("alter table app.orders drop constraint orders_customer_id_fkey")
  other:exec("alter table app.orders add constraint orders_customer_id_fkey foreign key (customer_id) references app.customers (id) not valid")
  b = catalog.describe(other)
  local diffs = catalog.compare(a, b)
  local got = {}
  for _, x in ipairs(diffs) do got[#got + 1] = catalog.format_difference(x) end
  T.eq(got, {
    'types app.mood: different (labels): source ["sad","ok","happy"], target ["sad","ok","happy","angry"]',
    "tables app.orders: different (column note default): source nil, target 'n/a'::text",
    "tables app.extra: extra",
    "indexes app.orders_recent_idx: missing",
    "constraints app.orders.orders_customer_id_fkey: different (definition): source FOREIGN KEY (customer_id) REFERENCES app.customers(id) ON DELETE CASCADE, target FOREIGN KEY (customer_id) REFERENCES app.customers(id) NOT VALID",
    "constraints app.orders.orders_customer_id_fkey: different (validated): source true, target false",
  })
  T.eq(catalog.compare(a, b, { kinds = { "indexes" } }),
       { { kind = "indexes", name = "app.orders_recent_idx", problem = "missing" } })
  T.eq(#catalog.compare(a, b, { names_only = true }), 2)
  other:close()
end)

T.test("procedure arguments carry their modes as PostgreSQL 14+ prints them", function ()
  -- what pg_get_function_identity_arguments gives for a procedure on 13
  T.eq(catalog.procedure_args("days integer"), "IN days integer")
  T.eq(catalog.procedure_args(""), "")
  T.eq(catalog.procedure_args("a numeric(10,2), INOUT b integer, VARIADIC c text[]"),
       "IN a numeric(10,2), INOUT b integer, VARIADIC c text[]")
  T.eq(catalog.procedure_args('"x, y" text, "IN" integer, integer'),
       'IN "x, y" text, IN "IN" integer, IN integer')
  T.eq(catalog.procedure_args("IN a integer, OUT b integer"), "IN a integer, OUT b integer")
end)

conn:close()
T.done()
