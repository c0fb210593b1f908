-- Regression tests for pgtide.schema: a schema filter naming public applies
-- on a fresh database, and a foreign key that references a partitioned
-- table ends up validated on every partition.
local T = require "t"
local schema = require "pgtide.schema"
local pg = require "pg"
local sys = require "sys"

local c = T.cluster()
c:sql("create database a")
c:sql([[
  create table public.t (id int primary key);
  create schema s2;
  create table s2.u (id int primary key, t_id int references public.t(id));
  create table public.p (id int primary key) partition by range (id);
  create table public.p1 partition of public.p for values from (0) to (100);
  create table public.p2 partition of public.p for values from (100) to (200);
  create table public.child (id int primary key, p_id int references public.p(id));
  insert into public.p select g from generate_series(1, 150) g;
  insert into public.child select g, g from generate_series(1, 150) g;
]], "a")
local n = 0
local function fresh()
  n = n + 1
  local db = "b" .. n
  c:sql("create database " .. db)
  local dir = string.format("%s/schema-filters-%d-%d", T.tmp, sys.getpid(), n)
  assert(sys.mkdir_p(dir))
  return pg.connect(c.conninfo .. " dbname=a"), pg.connect(c.conninfo .. " dbname=" .. db), dir, db
end

T.test("a schema filter naming public applies on a fresh database", function()
  local src, dst, dir = fresh()
  local parts = schema.extract(src, { conninfo = c.conninfo .. " dbname=a", dir = dir,
                                      schemas = { "public", "s2" } })
  T.match(parts.pre_data, "CREATE SCHEMA IF NOT EXISTS public;")
  schema.apply_pre_data(dst, parts)
  T.eq(dst:query_one([[select count(*) as n from pg_tables
                        where schemaname in ('public', 's2')]]).n, 6)
end)

T.test("a foreign key referencing a partitioned table is validated everywhere", function()
  local src, dst, dir, db = fresh()
  local parts = schema.extract(src, { conninfo = c.conninfo .. " dbname=a", dir = dir })
  schema.apply_pre_data(dst, parts)
  c:sql("insert into public.p select g from generate_series(1, 150) g; " ..
        "insert into public.child select g, g from generate_series(1, 150) g", db)
  schema.apply_post_data(dst, parts)
  local r = dst:query_one([[select count(*) as total, count(*) filter (where not convalidated) as invalid
                             from pg_constraint where contype = 'f']])
  T.ok(r.total >= 3, "the key and its clones on the referenced partitions: %d", r.total)
  T.eq(r.invalid, 0)
  local s = src:query_one([[select count(*) as total from pg_constraint where contype = 'f']])
  T.eq(r.total, s.total)
end)

T.done()
