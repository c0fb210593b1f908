-- pgtide troubleshoot: each topic finds the injected problem, names it,
-- and gives SQL that fixes it (the SQL is run here to prove it does).
local T = require "t"
local pg = require "pg"
local ts = require "pgtide.troubleshoot"

local src = T.cluster()
local dst = T.cluster()
local schema = [[
  create table public.parents (id bigserial primary key, name text);
  create table public.children (id bigserial primary key, parent_id bigint references public.parents (id),
                                note text);
  create index children_note_idx on public.children (note);
  create function public.twice(x int) returns int language sql immutable as 'select x * 2';
  create view public.parent_names as select id, name, public.twice(id::int) as t from public.parents;
  create view public.summary as select count(*) as n from public.parent_names;
  create sequence public.standalone;
]]
src:sql(schema)
src:sql([[insert into public.parents (name) select 'p' || g from generate_series(1, 20) g;
          insert into public.children (parent_id, note) select g, 'n' from generate_series(1, 20) g;
          select nextval('public.standalone')]])
-- the target: tables only (like a DMS DROP_AND_CREATE load), with an orphan row
dst:sql([[
  create table public.parents (id bigserial primary key, name text);
  create table public.children (id bigint primary key, parent_id bigint, note text);
  insert into public.parents (id, name) select g, 'p' || g from generate_series(1, 19) g;
  insert into public.children (id, parent_id, note) select g, g, 'n' from generate_series(1, 20) g;
]])
local s = pg.connect(src.conninfo)
local d = pg.connect(dst.conninfo)
local function run(topic, extra)
  local o = { src = s, dst = d, schemas = { "public" } }
  for k, v in pairs(extra or {}) do o[k] = v end
  local f = ts.run(topic, o)
  return f, table.concat(ts.lines(f), "\n")
end
local function apply(f)
  for _, stmt in ipairs(f.sql) do
    if not stmt:match("^%-%-") then d:exec(stmt) end
  end
end

T.test("missing-sequences finds the sequences and the broken default", function()
  local f, text = run("missing-sequences")
  T.match(text, "public%.standalone is missing on the target")
  T.match(text, "public%.children_id_seq is missing on the target %(owned by public%.children%.id%)")
  T.ok(f.count >= 2, "count %d", f.count)
  apply(f)
  local f2 = run("missing-sequences")
  T.eq(f2.count, 0)
  T.eq(d:query_one("select nextval('public.children_id_seq') as v").v, 21)
end)

T.test("sequences-behind finds a sequence behind max(id) and the source", function()
  local f, text = run("sequences-behind")
  T.match(text, "public%.parents_id_seq is unused on the target, but max%(public%.parents%.id%) is 19")
  T.match(text, "SELECT setval")
  apply(f)
  T.eq(run("sequences-behind").count, 0)
end)

T.test("missing-indexes lists source indexes absent on the target", function()
  local f, text = run("missing-indexes")
  T.match(text, "public%.children_note_idx on public%.children is missing")
  T.match(text, "CREATE INDEX children_note_idx ON public%.children USING btree %(note%)")
  apply(f)
  T.eq(run("missing-indexes").count, 0)
end)

T.test("fk-violations names the orphan rows and the constraint to add", function()
  local f, text = run("fk-violations")
  T.eq(f.count, 1)
  T.match(text, "children_parent_id_fkey: 1 row%(s%) reference missing public%.parents rows, e%.g%. %(parent_id=20%)")
  T.match(text, "ALTER TABLE public%.children ADD CONSTRAINT children_parent_id_fkey FOREIGN KEY")
  -- fix the data as the message says, then the SQL applies
  d:exec("insert into public.parents (id, name) values (20, 'p20')")
  apply(f)
  local f2, text2 = run("fk-violations")
  T.eq(f2.count, 0)
  T.match(text2, "no violation of the 1 foreign key")
end)

T.test("dependency-order puts functions before the views that use them", function()
  local f, text = run("dependency-order")
  local pos = function(p) return assert(text:find(p, 1, true), p) end
  T.ok(pos("function public.twice(x integer)") < pos("view public.parent_names"))
  T.ok(pos("view public.parent_names depends on") < pos("view public.summary depends on"))
  T.match(text, "%[missing on the target%]")
  T.eq(f.count, 3)
  apply(f)   -- the DDL, in this order, creates all three
  T.eq(run("dependency-order").count, 0)
  T.eq(d:query_one("select n from public.summary").n, 20)
  local _, one = run("dependency-order", { object = "summary" })
  T.match(one, "public%.summary")
  T.nomatch(one, "public.twice(x integer) [")
end)

T.test("permissions: a user without CREATE gets GRANTs", function()
  d:exec("create role app login")
  d:exec("revoke create on schema public from public")
  local c = pg.connect(dst.conninfo)
  c:exec("set role app")
  local f = ts.run("permissions", { dst = c, schemas = { "public" } })
  local text = table.concat(ts.lines(f), "\n")
  T.match(text, "lacks CREATE on schema public")
  T.match(text, "GRANT USAGE, CREATE ON SCHEMA public TO app;")
  T.match(text, "TABLE public%.parents on the target is owned by postgres")
  T.match(text, "already exist on the target")
  c:close()
  local f2 = ts.run("permissions", { dst = d, schemas = { "public" }, report_existing = false })
  T.eq(f2.count, 0)
end)

T.test("pgtide troubleshoot command runs a topic and rejects a bad one", function()
  local code, out, err = T.run({ "troubleshoot", "fk-violations", "source=" .. src.conninfo,
                                 "target=" .. dst.conninfo, "--schemas", "public" },
                               { env = { PGTIDE_LUA_PATH = os.getenv("PGTIDE_LUA_PATH") } })
  T.eq(code, 0, err)
  T.match(out, "== rows on the target that violate")
  local ignored
  code, ignored, err = T.run({ "troubleshoot", "fk-violation", "source=x" })
  T.eq(code, 2)
  T.match(err, "did you mean 'fk%-violations'")
end)

T.test("REPL helpers are registered", function()
  local repl = require "pgtide.repl"
  for _, h in ipairs({ "missing_sequences", "sequences_behind", "missing_indexes", "fk_violations",
                       "dependency_order", "permission_problems" }) do
    T.ok(repl.helpers[h], "helper %s missing", h)
  end
end)

s:close(); d:close()
T.done()
