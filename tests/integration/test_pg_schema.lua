-- pgtide.schema end to end between two PostgreSQL 15 clusters: pg_dump
-- extraction and split, pre-data apply, a data copy, post-data apply
-- (indexes and keys via USING INDEX, foreign keys NOT VALID then
-- VALIDATE, triggers, materialized view refresh), verification with zero
-- differences, a deliberately missing index reported, a rerun that
-- resumes, the schema-first mode, the pg_dump version check, TLS and
-- password handling.
local T = require "t"
package.path = T.root .. "/tests/lua/?.lua;" .. package.path
local pg = require "pg"
local sys = require "sys"
local schema = require "pgtide.schema"
local catalog = require "pgtide.catalog"
local F = require "pg_fixture"

local srcc = T.cluster()
local dstc = T.cluster()
local src = pg.connect(srcc.conninfo, { label = "source" })
src:exec(F.sql)
src:exec(F.data)
local dst = pg.connect(dstc.conninfo, { label = "target" })
local work = string.format("%s/schema-%d", T.tmp, sys.getpid())

-- every file under dir, concatenated (to look for leaked secrets)
local function all_files(dir)
  local p = io.popen("find " .. T.q(dir) .. " -type f")
  local text, files = {}, {}
  for f in p:lines() do
    files[#files + 1] = f
    text[#text + 1] = sys.readfile(f) or ""
  end
  p:close()
  return table.concat(text), files
end

-- Copy the fixture's data with COPY (generated columns left out).
local function copy_data(from, to)
  for _, qname in ipairs(F.data_tables) do
    local sname, tname = qname:match("^(.-)%.(.*)$")
    local cols = {}
    for _, col in ipairs(catalog.columns(from, { schemas = { sname } })) do
      if col.table == tname and not col.generated then cols[#cols + 1] = col.name end
    end
    local list = table.concat(cols, ", ")
    local data = from:copy_out(string.format("COPY (SELECT %s FROM %s) TO STDOUT", list, qname))
    to:copy_in(string.format("COPY %s (%s) FROM STDIN", qname, list), data)
  end
end

local parts
T.test("extract: pg_dump with the password kept off command lines and files", function ()
  -- the password must travel through pgtide's private pgpass file: the
  -- user's PGPASSFILE is hidden from pg_dump for this run
  local saved = os.getenv("PGPASSFILE")
  sys.setenv("PGPASSFILE", "/nonexistent")
  local ok, res = pcall(schema.extract, src, {
    conninfo = srcc.conninfo .. " password=" .. T.secret("pg_password"), dir = work })
  sys.setenv("PGPASSFILE", saved)
  T.ok(ok, "extract failed: %s", tostring(res))
  parts = res
  local text, files = all_files(work)
  T.nomatch(text, T.secret("pg_password"), "work files")
  for _, f in ipairs(files) do T.nomatch(f, ".pgpass", "temporary pgpass left behind") end
  T.eq(parts.mode, "post-data")
  T.eq(parts.pg_dump_version, 15)
  T.eq(parts.counts.foreign_keys, 2)
  T.eq(parts.counts.triggers, 1)
  T.eq(parts.counts.refresh, 1)
  T.eq(parts.counts.attach, 4)
  T.eq(parts.counts.indexes, 15)
end)

T.test("split: keys via USING INDEX, foreign keys NOT VALID, nothing post-data in pre-data", function ()
  local units = {}
  for _, u in ipairs(schema.index_units(parts)) do units[u.name] = u end
  local pk = units["app.orders orders_pkey"]
  T.eq(pk.kind, "primary key")
  T.eq(pk.using_index, true)
  T.match(pk.sql, "CREATE UNIQUE INDEX orders_pkey ON app%.orders USING btree %(id%);")
  T.match(pk.sql, "ADD CONSTRAINT orders_pkey PRIMARY KEY USING INDEX orders_pkey;")
  T.eq(units["app.customers customers_email_key"].using_index, true)
  -- a partitioned table's key keeps pg_dump's form (USING INDEX is not supported there)
  T.eq(units["app.events events_pkey"].using_index, nil)
  T.match(units["app.events events_pkey"].sql, "PRIMARY KEY %(id, at%);")
  T.eq(units["app.orders_recent_idx"].kind, "index")
  local fks = {}
  for _, fk in ipairs(parts.foreign_keys) do fks[fk.name] = fk end
  local ofk = fks["app.orders orders_customer_id_fkey"]
  T.match(ofk.add, "ON DELETE CASCADE NOT VALID;")
  T.eq(ofk.validate, "ALTER TABLE app.orders VALIDATE CONSTRAINT orders_customer_id_fkey;")
  -- a foreign key on a partitioned table cannot be NOT VALID: added as is
  T.eq(fks["app.events events_customer_id_fkey"].validate, nil)
  T.nomatch(parts.pre_data, "CREATE INDEX")
  T.nomatch(parts.pre_data, "FOREIGN KEY")
  T.nomatch(parts.pre_data, "CREATE TRIGGER")
  T.nomatch(parts.pre_data, "\\restrict")
  T.match(parts.pre_data, "CREATE TABLE app%.orders")
  T.match(parts.session_sql, "set_config%('search_path', '', false%)")
  T.match(parts.refresh[1].sql, "REFRESH MATERIALIZED VIEW app%.order_totals;")
  -- plain data, reloadable
  schema.save(parts, work .. "/parts.json")
  T.ok(T.deep_eq(schema.load(work .. "/parts.json"), parts), "save/load changed parts")
end)

T.test("apply pre-data, copy data, apply post-data: verify reports zero differences", function ()
  dst:exec("set search_path = public")
  schema.apply_pre_data(dst, parts)
  T.eq(dst:query_one("show search_path").search_path, "public", "session restored")
  local r = schema.verify(src, dst, { phase = "pre-data" })
  T.eq(r.differences, {})
  T.eq(r.ok, true)
  copy_data(src, dst)
  local seen = 0
  schema.apply_post_data(dst, parts, { on_unit = function () seen = seen + 1 end })
  T.eq(seen, #parts.indexes)
  r = schema.verify(src, dst)
  T.eq(r.differences, {})
  T.eq(r.ok, true)
  T.eq(r.counts.source, r.counts.target)
  T.eq(r.counts.target[1], { schema = "app", tables = 9, sequences = 3, indexes = 14 })
  -- the foreign key was validated and the materialized view refreshed
  T.eq(dst:query_one([[select convalidated from pg_constraint
                       where conname = 'orders_customer_id_fkey']]).convalidated, true)
  T.eq(dst:query_one("select count(*) as n from app.order_totals").n, 50)
  T.eq(dst:query_one("select count(*) as n from app.events").n, 300)
end)

T.test("a rerun of post-data resumes without errors", function ()
  schema.apply_post_data(dst, parts)
  T.eq(schema.verify(src, dst).ok, true)
end)

T.test("verify reports a deliberately missing index", function ()
  dst:exec("drop index app.orders_recent_idx")
  local r = schema.verify(src, dst)
  T.eq(r.ok, false)
  T.eq(r.differences, {
    { kind = "indexes", name = "app.orders_recent_idx", problem = "missing" },
    { kind = "counts", name = "app", problem = "different", field = "indexes", source = 14, target = 13 },
  })
  -- only that unit runs again
  schema.apply_indexes(dst, parts)
  T.eq(schema.verify(src, dst).ok, true)
end)

T.test("a failing statement names the dump entry", function ()
  dstc:sql("create database broken")
  local b = pg.connect(dstc.conninfo .. " dbname=broken")
  b:exec("create table public.plain (x int)")
  local e = T.raises(function () schema.apply_pre_data(b, parts) end, "42P07")
  T.match(e.message, '^pre%-data %(TABLE public%.plain%): relation "plain" already exists')
  -- all or nothing: the schema created before the failure was rolled back
  T.eq(b:query_one("select count(*) as n from pg_type where typname = 'mood'").n, 0)
  b:close()
end)

T.test("schema-first mode: the whole schema but foreign keys before the data", function ()
  dstc:sql("create database sf")
  local sf = pg.connect(dstc.conninfo .. " dbname=sf")
  local p = schema.extract(src, { conninfo = srcc.conninfo, dir = work .. "/sf", mode = "schema-first" })
  T.eq(p.mode, "schema-first")
  T.eq(#p.indexes + #p.attach + #p.post_data + #p.triggers, 0)
  T.eq(#p.foreign_keys, 2)
  T.match(p.pre_data, "CREATE INDEX orders_recent_idx")
  T.match(p.pre_data, "CREATE TRIGGER orders_touch")
  schema.apply_pre_data(sf, p)
  local r = schema.verify(src, sf, { phase = "schema-first" })
  T.eq(r.differences, {})
  T.eq(sf:query_one("select count(*) as n from pg_constraint where contype = 'f'").n, 0)
  copy_data(src, sf)
  schema.apply_foreign_keys(sf, p)
  schema.apply_refresh(sf, p)
  T.eq(schema.verify(src, sf).ok, true)
  sf:close()
end)

T.test("pg_dump older than the source stops with the version needed", function ()
  local fake = work .. "/old_pg_dump"
  assert(sys.write_atomic(fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.11'\n", 493))
  local e = T.raises(function () schema.find_tools(150004, fake) end, "pg_dump 15 or newer")
  T.match(tostring(e), "PostgreSQL 15%.4")
  T.match(tostring(e), "is version 14")
  T.match(tostring(e), "postgresql%-client%-15")
  e = T.raises(function () schema.find_tools(170002) end, "pg_dump 17 or newer")
  T.match(tostring(e), "pg_dump is version 15")
  local tools = schema.find_tools(150004)
  T.eq(tools.major >= 15, true)
  T.raises(function () schema.extract(src, { conninfo = srcc.conninfo, dir = work .. "/old", pg_dump = fake }) end,
           "pg_dump 15 or newer")
  T.eq(src:status(), "idle")
end)

T.test("pg_dump errors are reported without the password", function ()
  local e = T.raises(function ()
    schema.extract(src, { conninfo = srcc.conninfo .. " password=" .. T.secret("pg_wrong_password"),
                          dir = work .. "/bad" })
  end, "pg_dump failed")
  T.match(tostring(e), "password authentication failed")
  T.nomatch(tostring(e), T.secret("pg_wrong_password"))
  T.eq(src:status(), "idle")
end)

T.test("extract from a TLS source with verify-full", function ()
  local tls = T.cluster { tls = true }
  local t = pg.connect(tls.conninfo)
  t:exec("create table public.secure_t (id int primary key, v text)")
  local p = schema.extract(t, { conninfo = tls.conninfo, dir = work .. "/tls" })
  T.match(p.pre_data, "CREATE TABLE public%.secure_t")
  T.eq(#p.indexes, 1)
  t:close()
  tls:stop()
end)

src:close()
dst:close()
os.execute("rm -rf " .. T.q(work))
T.done()
