-- The example runbooks in runbooks/examples/ work as documented: hello
-- copies a database; custom_local customises the shipped local runbook
-- (an inserted step, a replaced step, a changed parameter) and runs it.
local T = require "t"
local sys = require "sys"

local src, dst = T.cluster(), T.cluster()
for _, c in ipairs({ src, dst }) do c:sql("create database app") end
src:sql([[
  create table customers (id bigserial primary key, name text not null);
  create table orders (id bigserial primary key, customer_id bigint references customers(id), total numeric);
  insert into customers (name) select 'c' || g from generate_series(1, 500) g;
  insert into orders (customer_id, total) select 1 + g % 500, g / 3.0 from generate_series(1, 2000) g;
]], "app")
local work = T.tmp .. "/examples-" .. sys.getpid()
assert(sys.mkdir_p(work))

T.test("custom_local: steps show the inserted and replaced steps", function()
  local code, out = T.run({ "steps", T.root .. "/runbooks/examples/custom_local.lua" })
  T.eq(code, 0)
  T.match(out, "^custom%-local:")
  T.match(out, "3%. announce%s+Announce the start of the copy\n%s*4%. full%-load")
  T.match(out, "vacuum%s+ANALYZE the target %(autovacuum does the rest later%)")
end)

T.test("custom_local runs end to end (one-shot clone) with the new margin", function()
  local code, _, err = T.run({ "run", T.root .. "/runbooks/examples/custom_local.lua",
    "source=" .. src.conninfo .. " dbname=app", "target=" .. dst.conninfo .. " dbname=app",
    "cdc=false", "--state", work .. "/custom", "--yes" })
  T.eq(code, 0, err)
  T.match(err, "starting the full load")
  T.eq(dst:sql("select count(*) from orders", "app"), "2000")
  T.eq(tonumber(dst:sql("select last_value from customers_id_seq", "app")), 500 + 10000)
  local state = require("json").decode(assert(sys.readfile(work .. "/custom/state.json")))
  T.eq(state.steps["count-check"].outputs.validation.result, "equal")
end)

T.test("hello copies a database with pg_dump and psql", function()
  dst:sql("create database hello")
  local code, _, err = T.run({ "run", T.root .. "/runbooks/examples/hello.lua",
    "source=" .. src.conninfo .. " dbname=app", "target=" .. dst.conninfo .. " dbname=hello",
    "--state", work .. "/hello" })
  T.eq(code, 0, err)
  T.match(err, "row counts match: public%.customers=500 public%.orders=2000")
end)

T.done()
