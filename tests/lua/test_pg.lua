-- The pg module against a real PostgreSQL 15: type fidelity through
-- parameters and results, error objects, connection failures (wrong
-- password, unreachable host, missing database, TLS with the wrong CA),
-- cancel and statement timeout, deterministic close, transactions,
-- notices and COPY.
local T = require "t"
local pg = require "pg"
local sys = require "sys"
local log = require "log"

local c = T.cluster()
local tls = T.cluster { tls = true }
local conn = pg.connect(c.conninfo, { label = "source" })

-- every byte value, and every ASCII escape character
local all_bytes = {}
for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char(i) end
all_bytes = table.concat(all_bytes)
local escapes = {}
for i = 1, 127 do escapes[#escapes + 1] = string.char(i) end
escapes = table.concat(escapes) .. "\\x41 \\\\ '' \"\" E'\\n' é ☃ 😀"

local function one(sql, ...)
  local row = conn:query_one(sql, ...)
  return row and row.v
end

T.test("integers: int2/int4/int8 extremes are exact integers", function ()
  T.eq(one("select $1::int8 as v", math.maxinteger), math.maxinteger)
  T.eq(one("select $1::int8 as v", math.mininteger), math.mininteger)
  T.eq(one("select '9223372036854775807'::int8 as v"), 9223372036854775807)
  T.eq(one("select '-9223372036854775808'::int8 as v"), math.mininteger)
  T.eq(math.type(one("select 32767::int2 as v")), "integer")
  T.eq(one("select (-2147483648)::int4 as v"), -2147483648)
  T.eq(one("select 4294967295::oid as v"), 4294967295)
  -- int8 arithmetic on the server agrees with Lua's
  T.eq(one("select $1::int8 - 1 as v", math.maxinteger), math.maxinteger - 1)
end)

T.test("numeric: NaN, infinities and huge values come back as exact strings", function ()
  local huge = "123456789012345678901234567890123456789012345678901234567890.000000000000000000001"
  for _, v in ipairs { "NaN", "Infinity", "-Infinity", huge, "-0.000000000000000000000000000001", "0" } do
    T.eq(one("select $1::numeric as v", v), v, v)
  end
  T.eq(one("select 1e400::numeric = $1::numeric as v", "1" .. string.rep("0", 400)), true)
  T.eq(one("select 0.1::numeric as v"), "0.1")
end)

T.test("floats round-trip exactly, NaN and infinities included", function ()
  for _, v in ipairs { 0.1, 1 / 3, -2.5e-300, 1.7976931348623157e308, math.huge, -math.huge } do
    T.eq(one("select $1::float8 as v", v), v, tostring(v))
  end
  local nan = one("select 'NaN'::float8 as v")
  T.ok(nan ~= nan, "NaN expected")
  T.eq(one("select $1::float4 as v", 1.5), 1.5)
  T.eq(one("select $1::int4 as v", 3.0), 3)  -- integral floats are sent as integers
end)

T.test("bytea: all 256 byte values both ways, raw bytes never reinterpreted", function ()
  T.eq(one("select $1::bytea as v", all_bytes), all_bytes)
  T.eq(one("select length($1::bytea) as v", all_bytes), 256)
  T.eq(one("select decode('00ff41', 'hex') as v"), "\0\255A")
  -- a string that looks like hex input is still raw bytes
  T.eq(one("select length($1::bytea) as v", "\\x41"), 4)
  T.eq(one("select $1::bytea as v", ""), "")
  T.eq(pg.bytea_hex("\0\255"), "\\x00ff")
  -- bytea[] elements travel hex-encoded
  T.eq(one("select encode(($1::bytea[])[2], 'hex') as v", { "a", "\0\1" }), "0001")
end)

T.test("text with every escape character, NULL versus empty string", function ()
  T.eq(one("select $1::text as v", escapes), escapes)
  T.eq(one("select length($1::text) as v", escapes), utf8.len(escapes))
  T.eq(one("select $1::text as v", ""), "")
  T.eq(one("select $1::text as v", nil), nil)
  T.eq(one("select $1::text as v", pg.null), nil)
  T.eq(one("select $1::text is null as v", ""), false)
  T.eq(one("select $1::text is null as v", nil), true)
  local row = conn:query_one("select null::text as a, ''::text as b, $1::int as c, $2::text as d", nil, "x")
  T.eq(row, { b = "", d = "x" })
  T.raises(function () conn:query("select $1::text", "a\0b") end, "NUL byte")
end)

T.test("booleans, arrays, jsonb, timestamps and intervals", function ()
  T.eq(one("select $1::bool as v", true), true)
  T.eq(one("select $1::bool as v", false), false)
  T.eq(one("select $1::int[] as v", { 1, 2, 3 }), "{1,2,3}")
  T.eq(one("select $1::int[] as v", {}), "{}")
  T.eq(one("select $1::int[] as v", { { 1, 2 }, { 3, 4 } }), "{{1,2},{3,4}}")
  local tricky = { "a,b", '"q"', "NULL", pg.null, "", "back\\slash", "{}" }
  T.eq(one("select array_length($1::text[], 1) as v", tricky), 7)
  for i, want in ipairs(tricky) do
    if want == pg.null then want = nil end
    T.eq(one("select ($1::text[])[" .. i .. "] as v", tricky), want, "element " .. i)
  end
  T.eq(one("select $1::text[] as v", tricky), '{"a,b","\\"q\\"","NULL",NULL,"","back\\\\slash","{}"}')
  T.eq(one("select $1::jsonb as v", '{"b": [1, 2.50, null], "a": "\\u00e9"}'),
       '{"a": "é", "b": [1, 2.50, null]}')
  T.eq(one("select $1::json as v", '{"b":1,  "a":2}'), '{"b":1,  "a":2}')
  T.eq(one("select $1::timestamptz as v", "infinity"), "infinity")
  T.eq(one("select $1::timestamp as v", "-infinity"), "-infinity")
  T.eq(one("select $1::date as v", "infinity"), "infinity")
  T.eq(one("select $1::interval as v", "1 year 2 mons -3 days +04:05:06.789"), "1 year 2 mons -3 days +04:05:06.789")
  T.eq(one("select '[1,5)'::int4range as v"), "[1,5)")
  T.raises(function () conn:query("set timezone = 'UTC'; select 1 as v") end, "multiple commands")
end)

T.test("values survive a table round trip (insert with parameters, select back)", function ()
  conn:exec([[create table fidelity (id int primary key, i8 int8, n numeric, b bytea, t text,
               a text[], j jsonb, ts timestamptz, f float8, ok bool)]])
  local rows = {
    { 1, math.maxinteger, "NaN", all_bytes, escapes, { "x", pg.null }, '{"k": [true]}', "-infinity", 1 / 3, true },
    { 2, math.mininteger, "-Infinity", "", "", {}, "[]", "infinity", -0.0, false },
    { 3, nil, nil, nil, nil, nil, nil, nil, nil, nil },
  }
  for _, r in ipairs(rows) do
    T.eq(conn:exec("insert into fidelity values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)", table.unpack(r, 1, 10)), 1)
  end
  local got, cols = conn:query("select * from fidelity order by id")
  T.eq(#got, 3)
  T.eq(got[1], { id = 1, i8 = math.maxinteger, n = "NaN", b = all_bytes, t = escapes, a = "{x,NULL}",
                 j = '{"k": [true]}', ts = "-infinity", f = 1 / 3, ok = true })
  T.eq(got[2].i8, math.mininteger)
  T.eq(got[2].b, "")
  T.eq(got[2].t, "")
  T.eq(got[3], { id = 3 })
  T.eq(#cols, 10)
  T.eq(cols[2].name, "i8")
  T.eq(cols[2].type, "int8")
  T.eq(cols[6].type, "text[]")
  T.eq(cols[7].type, "jsonb")
  T.ok(cols[1].table_oid > 0 and cols[1].table_column == 1, "column origin")
end)

T.test("exec returns the affected count and tag; scripts run as one string", function ()
  local n, tag = conn:exec("update fidelity set ok = not ok where id < $1", 3)
  T.eq(n, 2)
  T.eq(tag, "UPDATE 2")
  n, tag = conn:exec("create temp table s1 (x int); insert into s1 values (1), (2), (3)")
  T.eq(n, 3)
  T.eq(tag, "INSERT 0 3")
  T.eq(conn:query_one("select count(*) from s1").count, 3)
  T.raises(function () conn:query_one("select generate_series(1, 2)") end, "2 rows")
  -- duplicate column names: the first wins in rows, both are in the column list
  local rows, cols = conn:query("select 1 as a, 2 as a, 3 as b")
  T.eq(rows, { { a = 1, b = 3 } })
  T.eq({ cols[1].name, cols[2].name, cols[3].name }, { "a", "a", "b" })
  T.eq(conn:query_one("select 1 where false"), nil)
end)

T.test("errors are pg.error objects with sqlstate, message, detail, hint, position, context", function ()
  local e = T.raises(function () conn:query("select * from no_such_table") end, "42P01")
  T.ok(pg.is_error(e))
  T.eq(e.sqlstate, "42P01")
  T.eq(e.op, "query")
  T.eq(e.message, 'relation "no_such_table" does not exist')
  T.eq(e.position, 15)
  T.eq(e.severity, "ERROR")
  T.eq(tostring(e), 'pg.query failed [42P01]: relation "no_such_table" does not exist; position: 15')
  e = T.raises(function () conn:exec("insert into fidelity (id) values (1)") end, "23505")
  T.eq(e.constraint, "fidelity_pkey")
  T.eq(e.table, "fidelity")
  T.eq(e.schema, "public")
  T.eq(e.detail, "Key (id)=(1) already exists.")
  e = T.raises(function ()
    conn:exec([[DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', HINT = 'the hint',
                ERRCODE = 'P0001'; END $$]])
  end, "boom")
  T.eq(e.sqlstate, "P0001")
  T.eq(e.hint, "the hint")
  T.eq(e.detail, "the detail")
  T.match(e.context, "PL/pgSQL")
  T.match(tostring(e), "detail: the detail; hint: the hint")
  T.ok(not pg.is_error("x") and not pg.is_error({}), "is_error on other values")
  -- the connection is usable after errors
  T.eq(one("select 7 as v"), 7)
end)

T.test("connect: .pgpass and libpq settings are honoured, application_name is pgtide", function ()
  local info = conn:info()
  T.eq(info.application_name, "pgtide")
  T.eq(info.port, tostring(c.port))
  T.eq(info.user, "postgres")
  T.eq(info.ssl, false)
  T.ok(info.server_version >= 150000, "server version")
  T.eq(conn:server_version(), info.server_version)
  T.eq(conn:quote_ident('a"b'), '"a""b"')
  T.eq(conn:quote_literal("it's"), "'it''s'")
  -- a URI works too
  local u = pg.connect(string.format("postgresql://postgres@127.0.0.1:%d/postgres?application_name=custom", c.port))
  T.eq(u:info().application_name, "custom")
  u:close()
end)

T.test("connect: TCP keepalives are on by default (a vanished server ends waits), the conninfo wins", function ()
  local info = conn:info()
  T.eq(info.keepalives_idle, "30")
  T.eq(info.keepalives_interval, "10")
  T.eq(info.keepalives_count, "6")
  -- the kernel's view of this very socket: a keepalive timer of at most 30 s
  local port = conn:query_one("SELECT client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()").client_port
  local code, out = T.sh(string.format("ss -tnoH state established '( sport = :%d )'", port))
  if code ~= 0 then
    T.skip("the socket's keepalive timer", "ss (iproute2) is not available")
  else
    local secs = tonumber(out:match("timer:%(keepalive,(%d+)"))
    T.ok(secs and secs <= 30, "keepalive timer on the socket: " .. out)
  end
  local k <close> = pg.connect(c.conninfo .. " keepalives_idle=5")
  T.eq(k:info().keepalives_idle, "5")
end)

local function connect_error(ci)
  local ok, e = pcall(pg.connect, ci, { label = "target" })
  T.ok(not ok, "connection should fail")
  T.ok(pg.is_error(e), "pg.error expected")
  T.eq(e.op, "connect")
  local s = tostring(e)
  T.nomatch(s, T.secret("pg_password"), "password")
  T.nomatch(s, T.secret("pg_wrong_password"), "password")
  return e, s
end

T.test("connect: a wrong password gives a clear error without the password", function ()
  local e, s = connect_error(c.conninfo .. " password=" .. T.secret("pg_wrong_password"))
  T.eq(e.kind, "auth")
  T.match(s, "cannot connect to target")
  T.match(s, "password authentication failed")
  T.match(s, "hint: check the user name and password")
  e, s = connect_error(string.format("postgresql://postgres:%s@127.0.0.1:%d/postgres",
                                     T.secret("pg_wrong_password"), c.port))
  T.eq(e.kind, "auth")
end)

T.test("connect: unreachable host and missing database are explained", function ()
  local e, s = connect_error("host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=3")
  T.eq(e.kind, "unreachable")
  T.match(s, "Connection refused")
  T.match(s, "not reachable")
  e, s = connect_error(c.conninfo .. " dbname=no_such_db")
  T.eq(e.kind, "database")
  T.match(s, 'database "no_such_db" does not exist')
end)

T.test("connect: TLS verify-full works with the right CA and fails clearly with a wrong one", function ()
  local t = pg.connect(tls.conninfo)
  T.eq(t:info().ssl, true)
  T.eq(t:query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()").ssl, true)
  t:close()
  -- a CA that did not sign the server certificate
  local dir = T.tmp .. "/wrong-ca-" .. sys.getpid()
  assert(sys.mkdir_p(dir))
  local code = T.sh(string.format("openssl req -new -x509 -days 1 -nodes -subj '/CN=other CA' " ..
    "-keyout %s/ca.key -out %s/ca.crt >/dev/null 2>&1", dir, dir))
  T.eq(code, 0)
  local e, s = connect_error((tls.conninfo:gsub("sslrootcert=%S+", "sslrootcert=" .. dir .. "/ca.crt")))
  T.eq(e.kind, "tls")
  T.match(s, "certificate verify failed")
  T.match(s, "hint: TLS failed")
  -- the TLS-only server refuses a plain connection
  e = connect_error((tls.conninfo:gsub("sslmode=%S+", "sslmode=disable")))
  T.eq(e.kind, "hba")
  os.execute("rm -rf " .. T.q(dir))
end)

T.test("cancel stops a running statement; the connection stays usable", function ()
  local k = pg.connect(c.conninfo)
  k:send("select pg_sleep(30)")
  T.eq(select(2, k:wait(0.2)), "timeout")
  T.eq(k:busy(), true)
  T.raises(function () k:query("select 1") end, "pending")
  local t0 = sys.monotonic()
  T.eq(k:cancel(), true)
  local e = T.raises(function () k:wait(10) end, "57014")
  T.eq(e.sqlstate, "57014")
  T.ok(sys.monotonic() - t0 < 5, "cancel took too long")
  T.eq(k:query_one("select 1 as x").x, 1)
  -- send/wait with parameters
  k:send("select $1::int + 1 as v", 41)
  local rows = k:wait()
  T.eq(rows[1].v, 42)
  k:close()
end)

T.test("Ctrl-C (SIGINT) cancels the running statement", function ()
  local k = pg.connect(c.conninfo)
  os.execute(string.format("(sleep 0.5; kill -INT %d) >/dev/null 2>&1 &", sys.getpid()))
  local t0 = sys.monotonic()
  local qerr
  -- the host raises "interrupted" at the next Lua instruction: catch both
  pcall(function ()
    local _, e = pcall(k.query, k, "select pg_sleep(20)")
    qerr = e
  end)
  sys.clear_interrupt()
  T.ok(sys.monotonic() - t0 < 5, "the statement was not cancelled")
  if qerr ~= nil then T.eq(qerr.sqlstate, "57014") end
  T.eq(k:query_one("select count(*) as n from pg_stat_activity where query like 'select pg_sleep(20)%'").n, 0)
  T.eq(k:query_one("select 1 as x").x, 1)
  k:close()
end)

T.test("statement_timeout option stops long statements with 57014", function ()
  local k = pg.connect(c.conninfo, { statement_timeout = 300, settings = { search_path = "pg_catalog" } })
  T.eq(k:query_one("show statement_timeout").statement_timeout, "300ms")
  T.eq(k:query_one("show search_path").search_path, "pg_catalog")
  local t0 = sys.monotonic()
  local e = T.raises(function () k:query("select pg_sleep(5)") end, "57014")
  T.match(e.message, "statement timeout")
  T.ok(sys.monotonic() - t0 < 3, "timeout not applied")
  k:close()
  T.raises(function () pg.connect(c.conninfo, { settings = { no_such_setting = 1 } }) end, "no_such_setting")
end)

local function backend_alive(pid)
  for _ = 1, 50 do
    if conn:query_one("select count(*) as n from pg_stat_activity where pid = $1", pid).n == 0 then
      return false
    end
    sys.sleep(0.05)
  end
  return true
end

T.test("connections close deterministically: <close>, close() twice, __gc", function ()
  local pid, ref
  do
    local k <close> = pg.connect(c.conninfo)
    pid = k:backend_pid()
    ref = k
  end
  T.eq(tostring(ref), "pg.conn (closed)")
  T.eq(ref:status(), "closed")
  T.eq(backend_alive(pid), false)
  ref:close()  -- idempotent
  local e = T.raises(function () ref:query("select 1") end, "closed")
  T.eq(e.kind, "closed")
  -- an error inside the block still closes
  local k2
  pcall(function ()
    local k <close> = pg.connect(c.conninfo)
    k2 = k
    pid = k:backend_pid()
    error("boom")
  end)
  T.eq(k2:status(), "closed")
  T.eq(backend_alive(pid), false)
  -- garbage collection
  pid = pg.connect(c.conninfo):backend_pid()
  collectgarbage(); collectgarbage()
  T.eq(backend_alive(pid), false)
end)

T.test("transactions: begin/commit/rollback and transaction(fn) with nesting", function ()
  conn:exec("create table tx (x int)")
  conn:begin()
  T.eq(conn:status(), "transaction")
  conn:exec("insert into tx values (1)")
  conn:rollback()
  conn:begin()
  conn:exec("insert into tx values (2)")
  conn:commit()
  T.eq(conn:query_one("select array_agg(x) as v from tx").v, "{2}")
  local a, b = conn:transaction(function (k, extra)
    k:exec("insert into tx values ($1)", extra)
    -- nested: a savepoint, rolled back on error without losing the outer work
    local ok = pcall(k.transaction, k, function (k2)
      k2:exec("insert into tx values (99)")
      k2:exec("select 1/0")
    end)
    T.eq(ok, false)
    T.eq(k:status(), "transaction")
    return "r1", "r2"
  end, 3)
  T.eq({ a, b }, { "r1", "r2" })
  T.eq(conn:status(), "idle")
  T.eq(conn:query_one("select array_agg(x order by x) as v from tx").v, "{2,3}")
  local marker = {}
  local ok, err = pcall(conn.transaction, conn, function (k)
    k:exec("insert into tx values (4)")
    error(marker)
  end)
  T.eq(ok, false)
  T.ok(err == marker, "the original error object is re-raised")
  T.eq(conn:status(), "idle")
  T.eq(conn:query_one("select count(*) as n from tx where x = 4").n, 0)
  -- a failing COMMIT (deferred constraint) raises
  conn:exec([[create table dc (x int unique deferrable initially deferred)]])
  T.raises(function ()
    conn:transaction(function (k) k:exec("insert into dc values (1), (1)") end)
  end, "23505")
  T.eq(conn:status(), "idle")
end)

T.test("server notices go to the log: NOTICE at DEBUG, INFO at INFO, WARNING at WARN", function ()
  local file = T.tmp .. "/pg-notice-" .. sys.getpid() .. ".log"
  local sql = [[DO $$ BEGIN RAISE NOTICE 'hello from the server'; RAISE INFO 'asked for';
                RAISE WARNING 'careful'; END $$]]
  assert(log.open(file))
  conn:exec(sql)
  local prev = log.set_level("debug")
  conn:exec(sql)
  log.set_level(prev)
  log.close()
  local text = sys.readfile(file)
  os.remove(file)
  local _, notices = text:gsub("server: NOTICE:  hello from the server", "")
  T.eq(notices, 1, "a NOTICE is logged at debug level only:\n" .. text)
  T.match(text, "DEBUG.-server: NOTICE:  hello from the server")
  T.nomatch(text, "INFO  server: NOTICE")
  T.match(text, "INFO .-server: INFO:  asked for")
  T.match(text, "WARN .-server: WARNING:  careful")
end)

T.test("copy_in writer, one-shot copy_in, copy_out with and without a callback", function ()
  conn:exec("create table cp (id int, t text, b bytea)")
  do
    local w <close> = conn:copy_in("copy cp from stdin")
    w:write("1\thello\t\\\\x00ff\n", "2\t\\N\t\\N\n")
    T.eq(w:finish(), 2)
  end
  T.eq(conn:copy_in("copy cp (id) from stdin", "3\n4\n"), 2)
  T.eq(conn:query_one("select b from cp where id = 1").b, "\0\255")
  T.eq(conn:copy_out("copy (select id from cp order by id) to stdout"), "1\n2\n3\n4\n")
  local seen = {}
  T.eq(conn:copy_out("copy (select id, t from cp order by id) to stdout (format csv)",
    function (row) seen[#seen + 1] = row end), 4)
  T.eq(seen, { "1,hello\n", "2,\n", "3,\n", "4,\n" })
  -- stopping early and raising inside the callback leave the connection usable
  T.eq(conn:copy_out("copy (select generate_series(1, 100000)) to stdout", function () return false end), 1)
  T.raises(function ()
    conn:copy_out("copy (select generate_series(1, 100000)) to stdout", function () error("stop here") end)
  end, "stop here")
  T.eq(conn:query_one("select 5 as v").v, 5)
  -- a writer abandoned by an error is aborted: nothing committed
  pcall(function ()
    local w <close> = conn:copy_in("copy cp (id) from stdin")
    w:write("10\n")
    error("abandon")
  end)
  T.eq(conn:query_one("select count(*) as n from cp where id = 10").n, 0)
  -- bad COPY data raises with the server's message
  T.raises(function () conn:copy_in("copy cp (id) from stdin", "not a number\n") end, "22P02")
  -- the connection is busy while a writer is open; closing it invalidates the writer
  local k = pg.connect(c.conninfo)
  local w = k:copy_in("copy cp (id) from stdin")
  T.raises(function () k:query("select 1") end, "in COPY")
  k:close()
  T.raises(function () w:write("1\n") end, "closed during COPY")
  w:abort()
  T.raises(function () conn:copy_in("select 1") end, "not a COPY")
  T.raises(function () conn:exec("copy cp to stdout") end, "copy_out")
  conn:send("copy cp to stdout")
  T.raises(function () conn:wait() end, "copy_out")
  T.eq(conn:query_one("select 6 as v").v, 6)
end)

T.test("split_password keeps passwords out of tool command lines", function ()
  local rest, pw = pg.split_password("host=h password=" .. T.secret("pg_wrong_password") .. " dbname=d")
  T.eq(pw, T.secret("pg_wrong_password"))
  T.nomatch(rest, T.secret("pg_wrong_password"))
  T.match(rest, "host='h'")
  T.nomatch(pg.safe_conninfo("host=h password=" .. T.secret("pg_wrong_password")), T.secret("pg_wrong_password"))
end)

conn:close()
T.done()
