-- Host modules: json, sys, log redaction, util, params, pretty, embedded files.
local T = require "t"
local json = require "json"
local sys = require "sys"
local util = require "pgtide.util"
local params = require "pgtide.params"
local pretty = require "pgtide.pretty"

T.test("json round-trips values, keeps arrays, sorts keys and is exact for integers", function()
  local v = json.decode('{"b":[1,2.5,"x",null,true,{"c":[]}],"a":9007199254740993}')
  T.eq(v.b[1], 1)
  T.eq(math.type(v.b[1]), "integer")
  T.eq(v.b[2], 2.5)
  T.eq(v.b[4], json.null)
  -- integers beyond 2^53 decode exactly (cJSON alone keeps doubles), with
  -- number-like text in keys and strings, escapes included, not in the way
  T.eq(v.a, 9007199254740993)
  T.eq(math.type(v.a), "integer")
  local w = json.decode('{"k\\"1": "2\\\\", "n": [-9223372036854775808, 9223372036854775807, 1e2, 3.0, '
    .. '18446744073709551616, 0.5], "m": {"12": 12345678901234567}}')
  T.eq(w['k"1'], "2\\")
  T.eq(w.n[1], math.mininteger)
  T.eq(w.n[2], math.maxinteger)
  T.eq(math.type(w.n[3]), "integer")
  T.eq(w.n[3], 100)
  T.eq(w.n[4], 3)
  T.eq(math.type(w.n[5]), "float", "beyond int64 stays a float")
  T.eq(w.n[6], 0.5)
  T.eq(w.m["12"], 12345678901234567)
  T.eq(json.decode(json.encode({ x = math.maxinteger - 1 })).x, math.maxinteger - 1)
  T.eq(json.encode(v.b[6]), '{"c":[]}', "empty decoded array stays an array")
  T.eq(json.encode({ z = 1, a = { 3, 2 }, m = json.array() }), '{"a":[3,2],"m":[],"z":1}')
  T.eq(json.encode({ n = math.maxinteger }), '{"n":9223372036854775807}')
  T.eq(json.encode({}), "{}")
  T.eq(json.encode("a\"b\n"), '"a\\"b\\n"')
  T.raises(function() json.decode('{"a":') end, "bad JSON at offset")
  T.raises(function() json.encode({ f = print }) end, "cannot encode a function")
  T.raises(function() json.encode({ [true] = 1 }) end, "boolean key")
  local cyc = {}; cyc.self = cyc
  T.raises(function() json.encode(cyc) end, "nested too deeply")
  local many, want = {}, {}
  for i = 40, 1, -1 do
    local k = string.format("k%02d", i)
    many[k] = i
  end
  for i = 1, 40 do want[#want + 1] = string.format('"k%02d":%d', i, i) end
  T.eq(json.encode(many), "{" .. table.concat(want, ",") .. "}", "more keys than the first batch")
end)

T.test("sys.write_atomic replaces files whole and mkdir_p creates parents", function()
  local d = T.tmp .. "/host-" .. sys.getpid() .. "/a/b"
  T.ok(sys.mkdir_p(d))
  T.ok(sys.isdir(d))
  T.ok(sys.write_atomic(d .. "/f", "one"))
  T.ok(sys.write_atomic(d .. "/f", "two"))
  T.eq(sys.readfile(d .. "/f"), "two")
  T.eq(sys.readdir(d), { "f" })
  local ok, err = sys.write_atomic("/proc/nope/x", "y")
  T.eq(ok, nil)
  T.match(err, "cannot create")
  T.eq(sys.readfile(d .. "/missing"), nil)
  local ok2, err2 = sys.mkdir_p(d .. "/f")       -- an existing file is not a directory
  T.eq(ok2, nil)
  T.match(err2, "Not a directory")
  local ok3, err3 = sys.readfile(d)              -- reading a directory fails, not ""
  T.eq(ok3, nil)
  T.match(err3, "cannot read")
end)

T.test("sys.redact masks registered secrets and secret-shaped values", function()
  local s = T.secret("aws_secret_key")
  T.eq(sys.redact("key " .. s), "key " .. s, "not registered yet")
  sys.register_secret(s)
  T.eq(sys.redact("key " .. s .. " end"), "key *** end")
  T.eq(sys.redact("host=a password='x y' dbname=b"), "host=a password='***' dbname=b")
  T.eq(sys.redact("Authorization: AWS4-HMAC-SHA256 Credential=AKID/x, Signature=abc"), "Authorization: ***")
  T.eq(sys.redact('{"Password":"hunter22","User":"u"}'), '{"Password":"***","User":"u"}')
  T.eq(sys.redact("<SecretAccessKey>abcd1234</SecretAccessKey>"), "<SecretAccessKey>***</SecretAccessKey>")
  T.eq(sys.redact("postgres://me:pw1234@host:5432/db"), "postgres://me:***@host:5432/db")
  T.eq(sys.redact("aws_session_token = FwoGZX"), "aws_session_token = ***")
  T.eq(sys.redact("NextToken=abc&Marker=1"), "NextToken=abc&Marker=1", "NextToken is not a secret")
  T.eq(sys.redact("http://host:8080/path"), "http://host:8080/path", "host:port is not user:password")
end)

T.test("util helpers: closest names, splitting, formatting", function()
  T.eq(util.closest("sourse", { "source", "target", "name" }), "source")
  T.eq(util.closest("zzzzzz", { "source", "target" }), nil)
  T.eq(util.split(" a, b,,c ", ","), { "a", "b", "c" })
  T.eq(util.format_bytes(1536), "1.5 kB")
  T.eq(util.format_duration(75), "1m15s")
  T.eq(util.shell_quote("it's"), "'it'\\''s'")
end)

T.test("util: deep_equal, plain, set", function()
  T.ok(util.deep_equal({ a = { 1, 2 }, b = "x" }, { b = "x", a = { 1, 2 } }))
  T.eq(util.deep_equal({ a = { 1, 2 } }, { a = { 1 } }), false)
  T.eq(util.deep_equal({}, { x = false }), false)
  local v = util.plain(json.decode('{"a":[1,null,{"b":null}],"c":[]}'))
  T.eq(v, { a = { 1, nil, {} }, c = {} })
  T.eq(getmetatable(v.c), nil, "the array mark is dropped")
  T.eq(util.set { "a", "b" }, { a = true, b = true })
  T.eq(util.set(nil), nil)
end)

T.test("the REPL reads piped lines of any length", function()
  local code, out = T.run({ "repl" }, { stdin = '#"' .. string.rep("x", 70000) .. '"\n' })
  T.eq(code, 0)
  T.eq(out, "70000\n")
end)

T.test("params convert command-line strings and reject bad ones", function()
  local decls = params.normalise {
    jobs = { type = "integer", default = 4 }, cdc = { type = "boolean", default = true },
    mode = { type = "enum", values = { "a", "b" }, default = "a" }, tables = { type = "list" },
    source = "conninfo",
  }
  local p = params.validate(decls, { jobs = "8", cdc = "off", tables = "x,y", source = "host=a" }, "rb")
  T.eq(p, { jobs = 8, cdc = false, mode = "a", tables = { "x", "y" }, source = "host=a" })
  T.raises(function() params.validate(decls, { jobs = "many", source = "x" }, "rb") end,
    "parameter 'jobs' of runbook 'rb' must be an integer")
  T.raises(function() params.validate(decls, {}, "rb") end, "runbook 'rb' needs parameter 'source'")
end)

T.test("pretty renders nested tables and query rows", function()
  T.eq(pretty.format({ b = 1, a = { 2 } }), "{\n  a = {\n    2\n  },\n  b = 1\n}")
  local rows = { { id = 1, n = "x" }, { id = 22, n = json.null } }
  T.eq(pretty.format(rows), "id | n\n---+-----\n1  | x\n22 | null\n(2 rows)")
end)

T.test("shipped Lua and runbooks are embedded in the binary", function()
  local list = sys.resources()
  local set = {}
  for _, p in ipairs(list) do set[p] = true end
  T.ok(set["lua/pgtide/runbook.lua"], "runbook engine embedded")
  T.ok(set["runbooks/examples/hello.lua"], "example runbook embedded")
  T.match(sys.resource("lua/pgtide/cli.lua"), "pgtide.cli")
end)

T.test("pgtide runs from any directory and --lua-path overrides embedded files", function()
  local d = T.tmp .. "/lp-" .. sys.getpid()
  T.ok(sys.mkdir_p(d .. "/lua/pgtide/cmd"))
  T.ok(sys.write_atomic(d .. "/lua/pgtide/cmd/hello.lua",
    'return { summary = "x", run = function () print("overridden") return 0 end }'))
  local code, out = T.sh("cd / && " .. T.q(T.pgtide) .. " --lua-path " .. T.q(d) .. " hello")
  T.eq(code, 0)
  T.eq(out, "overridden\n")
  code = T.sh("cd / && " .. T.q(T.pgtide) .. " hello")
  T.eq(code, 2, "without --lua-path the command does not exist")
  code, out = T.sh("cd / && " .. T.q(T.pgtide) .. " version")
  T.eq(code, 0)
  T.match(out, "^pgtide ")
end)

T.done()
