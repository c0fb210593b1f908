-- Sequence synchronisation (pgtide.sequences) between two real clusters.
local T = require "t"
local pg = require "pg"
local sequences = require "pgtide.sequences"

local src = T.cluster()
local dst = T.cluster()
local schema = [[
  create table public.users (id bigserial primary key, name text);
  create table public.orders (id serial primary key, user_id bigint);
  create sequence public.free_counter start 100;
  create sequence public.down_seq increment by -1 start -1 minvalue -1000000 maxvalue -1;
  create sequence public.small_seq maxvalue 1500;
  create sequence public.unused_seq;
  create schema other;
  create sequence other.ignored_seq;
]]
src:sql(schema)
dst:sql(schema)
src:sql([[
  insert into public.users (name) select 'u' || g from generate_series(1, 250) g;
  insert into public.orders (user_id) select 1 from generate_series(1, 40) g;
  select nextval('public.free_counter') from generate_series(1, 5);
  select nextval('public.down_seq') from generate_series(1, 7);
  select setval('public.small_seq', 900);
  select setval('other.ignored_seq', 77);
]])
-- the target got the rows (as DMS would copy them) but not the sequence values
dst:sql([[
  insert into public.users (id, name) select g, 'u' || g from generate_series(1, 250) g;
  insert into public.orders (id, user_id) select g, 1 from generate_series(1, 40) g;
]])

local s = pg.connect(src.conninfo)
local d = pg.connect(dst.conninfo)
local function public(schema) return schema == "public" end

local function last(conn, name)
  return conn:query_one("select last_value from pg_sequences where schemaname||'.'||sequencename = $1",
    name).last_value
end

T.test("before sync, verify names every sequence that is behind", function()
  local problems = sequences.check { src = s, dst = d, scope = public }
  local text = table.concat(problems, "\n")
  T.match(text, "public%.users_id_seq is unused on the target, source is 250")
  T.match(text, "behind max%(public%.users%.id%) = 250")
  T.match(text, "public%.free_counter")
  T.nomatch(text, "other.ignored_seq")
  T.nomatch(text, "unused_seq")
  T.raises(function() sequences.verify { src = s, dst = d, scope = public } end, "sequence problem")
end)

T.test("sync sets source + margin (default 1000), in each sequence's direction", function()
  local r = sequences.sync { src = s, dst = d, scope = public }
  T.eq(r.margin, 1000)
  T.eq(last(d, "public.users_id_seq"), 1250)
  T.eq(last(d, "public.orders_id_seq"), 1040)
  T.eq(last(d, "public.free_counter"), 1104)
  T.eq(last(d, "public.down_seq"), -1007)
  T.eq(last(d, "public.small_seq"), 1500)           -- clamped to MAXVALUE
  T.eq(last(d, "public.unused_seq"), nil)           -- never used: left alone
  T.eq(last(d, "other.ignored_seq"), nil)           -- out of scope
  local text = table.concat(sequences.lines(r), "\n")
  T.match(text, "public%.small_seq: source 900 %-> target 1500 %(clamped to the sequence's MAXVALUE%)")
  T.match(text, "public%.unused_seq: unchanged %(never used on the source%)")
  T.match(text, "sequences: 5 set %(margin 1000%), 1 unchanged, 0 missing")
  sequences.verify { src = s, dst = d, scope = public }
  -- an insert on the target now gets a fresh id
  T.eq(d:query_one("insert into public.users (name) values ('new') returning id").id, 1251)
end)

T.test("sync never moves a target sequence backwards and is idempotent", function()
  d:query_one("select setval('public.orders_id_seq', 50000)")
  local r = sequences.sync { src = s, dst = d, scope = public, margin = 10 }
  T.eq(last(d, "public.orders_id_seq"), 50000)
  local reasons = {}
  for _, u in ipairs(r.unchanged) do reasons[u.name] = u.reason end
  T.eq(reasons.orders_id_seq, "target already ahead")
end)

T.test("a custom margin, and data beyond the source value", function()
  -- rows on the target beyond what the sequence says (e.g. inserted with explicit ids)
  d:exec("insert into public.users (id, name) values (99999, 'far')")
  src:sql("select nextval('public.users_id_seq') from generate_series(1, 1000)")
  local r = sequences.sync { src = s, dst = d, scope = public, margin = 5 }
  T.eq(last(d, "public.users_id_seq"), 99999)
  local found
  for _, x in ipairs(r.synced) do if x.name == "users_id_seq" then found = x end end
  T.eq(found.note, "raised past max() of the data")
  sequences.verify { src = s, dst = d, scope = public, margin = 5 }
end)

T.test("a sequence missing on the target is reported", function()
  src:sql("create sequence public.only_on_source; select nextval('public.only_on_source')")
  local r = sequences.sync { src = s, dst = d, scope = public }
  T.eq(#r.missing, 1)
  T.eq(r.missing[1].name, "only_on_source")
  T.match(table.concat(sequences.lines(r), "\n"), "MISSING on the target")
  T.raises(function() sequences.verify { src = s, dst = d, scope = public } end,
    "public.only_on_source is missing on the target")
end)

s:close(); d:close()
T.done()
