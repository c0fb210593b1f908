-- The REPL with a config: src and dst connect lazily, query results print
-- as aligned columns, database errors print and the session continues,
-- and the password never appears.
local T = require "t"
local sys = require "sys"

local c = T.cluster()
c:sql("create database app")
c:sql("create table items (id int primary key, name text, price numeric); " ..
      "insert into items values (1, 'bolt', 0.25), (2, 'nut', null), (10, 'washer', 1.5)", "app")
local dir = T.tmp .. "/repl-pg-" .. sys.getpid()
assert(sys.mkdir_p(dir))
local cfg = dir .. "/cfg.lua"
assert(sys.write_atomic(cfg, string.format("return { source = %q, target = %q }",
  c.conninfo .. " dbname=app", c.conninfo .. " dbname=postgres")))

local function repl(input, args)
  local a = { "repl" }
  for _, x in ipairs(args or { "-c", cfg }) do a[#a + 1] = x end
  return T.run(a, { stdin = input, env = { HOME = dir } })
end

T.test("src and dst connect on first use and results print as columns", function()
  local code, out, err = repl('src:query("select id, name, price from items order by id")\n' ..
    'dst:query_one("select current_database() as db").db\n')
  T.eq(code, 0, err)
  T.eq(out, table.concat({
    "id | name   | price",
    "---+--------+------",
    "1  | bolt   | 0.25",
    "2  | nut    |",
    "10 | washer | 1.5",
    "(3 rows)",
    '"postgres"',
    "" }, "\n"))
end)

T.test("a database error prints with its SQLSTATE and the session goes on", function()
  local code, out = repl('src:query("select * from nope")\n1 + 1\n')
  T.eq(code, 0)
  T.match(out, "42P01")
  T.match(out, 'relation "nope" does not exist')
  T.match(out, "\n2\n$")
end)

T.test("help() lists the helpers, sql() prints rows", function()
  local code, out = repl('help()\nsql(src, "select count(*) as n from items")\n')
  T.eq(code, 0)
  T.match(out, "show%(v, %.%.%.%)")
  T.match(out, "n\n%-+\n3\n%(1 row%)")
end)

T.test("query_one prints its row, sql() prints rows only, helpers print their findings once", function()
  local code, out, err = repl('src:query_one("select 7 as id, \'x\' as name")\n'
    .. 'src:query_one("select 1 as id where false")\n'
    .. 'sql(src, "select id from items where id < 3 order by id")\n'
    .. 'missing_indexes(src, dst)\n'
    .. 'f = permission_problems(src, src)\n'
    .. 'print("count", f.count, "findings", #f.found)\n')
  T.eq(code, 0, err)
  -- a row from query_one, as a one-row table (it used to print "(0 rows)")
  T.match(out, "^id | name\n%-%-%-%+%-%-%-%-%-\n7  | x\n%(1 row%)\n")
  T.match(out, "\n%(no row%)\n")
  -- sql(): the rows, not a second table of column metadata
  T.match(out, "\nid\n%-%-\n1\n2\n%(2 rows%)\n")
  T.nomatch(out, "type_oid", "column metadata printed")
  -- a helper's findings once, not again as a returned table
  local _, n = out:gsub("== missing indexes", "")
  local _, n2 = out:gsub("found = ", "")
  T.ok(n == 1 or out:find("== ", 1, true), "findings printed")
  T.eq(n2, 0, "the findings table was printed again:\n" .. out)
  -- the count counts the problem found (the source's own table exists "on the target"; it
  -- used to say 0 next to that finding), not the note that the role is a superuser
  local count, findings = out:match("count\t(%d+)\tfindings\t(%d+)")
  T.eq(tonumber(count), 1, "problems counted")
  T.eq(tonumber(findings), 2, "findings: the problem and the superuser note")
  T.match(out, "1 table%(s%) already exist on the target")
end)

T.test("without a config, src explains what it needs", function()
  local code, out = repl("src\n", {})
  T.eq(code, 0)
  T.match(out, "'src' needs a config with 'source' %(pgtide repl %-c CONFIG%)")
end)

T.test("a wrong password fails with a clear message and is never shown", function()
  local bad = dir .. "/bad.lua"
  local pw = T.secret("pg_wrong_password")
  assert(sys.write_atomic(bad, string.format("return { source = %q }",
    c.conninfo .. " dbname=app password=" .. pw)))
  local code, out, err = repl("src\n", { "-c", bad })
  os.remove(bad)   -- the config holds the password: the secret scan reads TEST_TMP
  T.eq(code, 0)
  T.match(out, "password authentication failed")
  T.nomatch(out .. err, pw)
end)

T.done()
