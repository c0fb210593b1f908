-- The runbook engine through the real binary: resume after SIGKILL and
-- SIGINT, failures, parameters, config errors, dry run, confirmation,
-- --from/--only, customisation, redaction.
local T = require "t"
local json = require "json"
local sys = require "sys"

local fixtures = T.root .. "/tests/fixtures/runbooks/"
local n = 0
local function workdir()
  n = n + 1
  local d = string.format("%s/rb-%d-%d", T.tmp, sys.getpid(), n)
  assert(sys.mkdir_p(d .. "/traces"))
  return d
end

local function count(d, name)
  return tonumber(sys.readfile(d .. "/traces/" .. name) or "0")
end

local function state(d)
  return json.decode(assert(sys.readfile(d .. "/state/state.json")))
end

local function run(d, extra, opts)
  local args = { "run", fixtures .. "steps.lua", "dir=" .. d .. "/traces", "--state", d .. "/state" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return T.run(args, opts)
end

T.test("a step that SIGKILLs its process is resumed without rerunning step one", function()
  local d = workdir()
  local code = run(d, { "crash=kill", "--yes" })
  T.eq(code, 137, "first run killed by SIGKILL (128+9)")
  local st = state(d)
  T.eq(st.steps.first.status, "done")
  T.eq(st.steps.second.status, "running")
  T.eq(count(d, "first"), 1)
  local code2, _, err2 = run(d, { "crash=kill", "--yes" })
  T.eq(code2, 0, "second run exit code: " .. err2)
  T.eq(count(d, "first"), 1, "step one ran again")
  T.eq(count(d, "second"), 2)
  T.eq(count(d, "third"), 1)
  st = state(d)
  T.eq(st.steps.second.status, "done")
  T.eq(st.steps.second.attempts, 2)
  T.eq(st.steps.second.outputs.saw_lsn, "0/16B3748", "outputs of step one survive the crash")
  T.eq(st.steps.first.outputs.count, 42)
  T.match(err2, "Step one: already done, skipped")
end)

T.test("a failing step exits 1 with its name, message and one traceback; rerun resumes there", function()
  local d = workdir()
  local code, _, err = run(d, { "crash=fail", "--yes" })
  T.eq(code, 1)
  T.match(err, "step 'second' failed: the second step failed on purpose %(attempt 1%)")
  T.match(err, "steps%.lua:%d+:", "traceback names the runbook file and line")
  local _, tbs = err:gsub("stack traceback", "")
  T.eq(tbs, 1, "exactly one traceback")
  T.match(err, "resume with: pgtide run")
  local st = state(d)
  T.eq(st.steps.second.status, "failed")
  T.match(st.steps.second.error, "on purpose")
  local code2 = run(d, { "crash=fail", "--yes" })
  T.eq(code2, 0)
  T.eq(count(d, "first"), 1)
  T.eq(count(d, "second"), 2)
end)

T.test("SIGINT stops cleanly with exit 3 and says how to resume", function()
  local d = workdir()
  local cmd = string.format("%s run %s dir=%s/traces crash=sleep --yes --state %s/state",
    T.q(T.pgtide), T.q(fixtures .. "steps.lua"), d, d)
  local pidfile = d .. "/pid"
  local h = io.popen(string.format("sh -c 'echo $$ > %s; exec %s' 2>%s/err", pidfile, cmd, d))
  for _ = 1, 200 do
    if sys.exists(d .. "/traces/sleeping") then break end
    sys.sleep(0.05)
  end
  local pid = tonumber(sys.readfile(pidfile))
  T.ok(sys.kill(pid, "INT"))
  local _, _, code = h:close()
  local err = sys.readfile(d .. "/err")
  T.eq(code, 3, "exit code after SIGINT: " .. err)
  T.match(err, "interrupted during step 'second'")
  T.match(err, "Resume with: pgtide run")
  T.eq(state(d).steps.second.status, "interrupted")
  T.eq(run(d, { "crash=sleep", "--yes" }), 0)
  T.eq(count(d, "first"), 1)
end)

T.test("a missing parameter names itself and the runbook (exit 2)", function()
  local code, _, err = T.run({ "run", fixtures .. "steps.lua", "--state", T.tmp .. "/nostate" })
  T.eq(code, 2)
  T.match(err, "runbook 'steps' needs parameter 'dir'")
end)

T.test("an unknown parameter and a badly typed one are usage errors", function()
  local code, _, err = T.run({ "run", fixtures .. "steps.lua", "dri=/tmp", "--state", T.tmp .. "/x" })
  T.eq(code, 2)
  T.match(err, "no parameter 'dri' %(did you mean 'dir'%?%)")
  code, _, err = T.run({ "run", fixtures .. "steps.lua", "dir=/tmp", "crash=maybe", "--state", T.tmp .. "/x" })
  T.eq(code, 2)
  T.match(err, "parameter 'crash' of runbook 'steps' must be one of none, kill, fail, sleep")
end)

T.test("a bad config key exits 2 and suggests the closest valid key", function()
  local d = workdir()
  local cfg = d .. "/cfg.lua"
  assert(sys.write_atomic(cfg, 'return { name = "x", sourse = "host=a", dir = "' .. d .. '/traces" }'))
  local code, _, err = T.run({ "run", fixtures .. "steps.lua", "-c", cfg, "--state", d .. "/state" })
  T.eq(code, 2)
  T.match(err, "unknown key 'sourse' %(did you mean 'source'%?%)")
  assert(sys.write_atomic(cfg, 'return { aws = { regoin = "us-east-1" }, dir = "/tmp" }'))
  code, _, err = T.run({ "run", fixtures .. "steps.lua", "-c", cfg, "--state", d .. "/state" })
  T.eq(code, 2)
  T.match(err, "unknown key 'aws.regoin' %(did you mean 'aws.region'%?%)")
  assert(sys.write_atomic(cfg, 'return { dir = "/tmp" '))
  code, _, err = T.run({ "run", fixtures .. "steps.lua", "-c", cfg, "--state", d .. "/state" })
  T.eq(code, 2)
  T.match(err, "cfg%.lua:1:", "syntax error names file:line")
end)

T.test("config values feed parameters and the command line wins", function()
  local d = workdir()
  local cfg = d .. "/cfg.lua"
  assert(sys.write_atomic(cfg, 'return { name = "from-config", dir = "' .. d .. '/traces", crash = "fail" }'))
  local code = T.run({ "run", fixtures .. "steps.lua", "-c", cfg, "crash=none", "--yes", "--state", d .. "/state" })
  T.eq(code, 0)
  local st = state(d)
  T.eq(st.name, "from-config")
  T.eq(st.params.crash, "none")
end)

T.test("a password in a log line is redacted in stderr, the log file and the state", function()
  local d = workdir()
  local pw = T.secret("pg_password")
  local conninfo = "host=db.example port=5432 user=app password=" .. pw .. " dbname=app"
  local code, out, err = run(d, { "secret_conninfo=" .. conninfo, "--yes" })
  T.eq(code, 0, err)
  T.match(err, "connecting with host=db.example port=5432 user=app password=%*%*%* dbname=app")
  T.nomatch(err .. out, pw)
  local logtext = assert(sys.readfile(d .. "/state/pgtide.log"))
  T.match(logtext, "password=%*%*%*")
  T.nomatch(logtext, pw)
  T.nomatch(assert(sys.readfile(d .. "/state/state.json")), pw)
  local uri = "postgresql://app:" .. pw .. "@db.example/app"
  local code2, _, err2 = run(d, { "secret_conninfo=" .. uri, "--from", "first", "--yes" })
  T.eq(code2, 0)
  T.match(err2, "postgresql://app:%*%*%*@db%.example/app")
  T.nomatch(err2, pw)
end)

T.test("--dry-run lists each step's plan and changes nothing", function()
  local d = workdir()
  local code, out = run(d, { "crash=kill", "--dry-run" })
  T.eq(code, 0)
  T.match(out, "1%. first: Step one")
  T.match(out, "writes the 'first' trace")
  T.match(out, "would crash with: kill")
  T.match(out, "3%. third: Step three %[destructive%]")
  T.eq(sys.exists(d .. "/state/state.json"), false)
  T.eq(count(d, "first"), 0)
end)

T.test("a destructive step needs --yes when there is no terminal", function()
  local d = workdir()
  local code, _, err = run(d, {})
  T.eq(code, 2)
  T.match(err, "step 'third' destructive and needs confirmation")
  T.eq(count(d, "third"), 0)
  T.eq(state(d).steps.first.status, "done")
  T.eq(run(d, { "--yes" }), 0)
  T.eq(count(d, "third"), 1)
  T.eq(count(d, "first"), 1)
end)

T.test("--only and --from rerun chosen steps", function()
  local d = workdir()
  T.eq(run(d, { "--yes" }), 0)
  T.eq(run(d, { "--only", "second", "--yes" }), 0)
  T.eq(count(d, "second"), 2)
  T.eq(count(d, "first"), 1)
  T.eq(run(d, { "--from", "second", "--yes" }), 0)
  T.eq(count(d, "second"), 3)
  T.eq(count(d, "third"), 2)
  local code, _, err = run(d, { "--only", "secnd" })
  T.eq(code, 2)
  T.match(err, "no step 'secnd' %(did you mean 'second'%?%)")
end)

T.test("a user runbook customises a stock one: insert, replace, remove", function()
  local d = workdir()
  local code, out = T.run({ "steps", fixtures .. "custom.lua" })
  T.eq(code, 0)
  T.match(out, "1%. zero%s+Step zero")
  T.match(out, "3%. second%s+Step two, replaced")
  T.match(out, "4%. last%s+Last step")
  T.nomatch(out, "third")
  code = T.run({ "run", fixtures .. "custom.lua", "dir=" .. d .. "/traces", "--state", d .. "/state" })
  T.eq(code, 0)
  T.ok(sys.exists(d .. "/traces/zero"))
  T.ok(sys.exists(d .. "/traces/replaced"))
  T.eq(count(d, "second"), 0)
end)

T.test("broken runbooks give file:line and exit 2", function()
  local code, _, err = T.run({ "run", fixtures .. "syntax_error.lua" })
  T.eq(code, 2)
  T.match(err, "syntax_error%.lua:%d+:")
  code, _, err = T.run({ "run", fixtures .. "undeclared.lua" })
  T.eq(code, 2)
  T.match(err, "undeclared%.lua:4: undeclared global 'functoin'")
  code, _, err = T.run({ "run", fixtures .. "assign_global.lua", "--state", T.tmp .. "/ag" })
  T.eq(code, 1)
  T.match(err, "assign_global%.lua:3: assignment to global 'counter'")
  code, _, err = T.run({ "run", T.tmp .. "/does-not-exist.lua" })
  T.eq(code, 2)
  T.match(err, "not found")
end)

T.test("two runs cannot share a state directory", function()
  local d = workdir()
  local h = io.popen(string.format("%s run %s dir=%s/traces crash=sleep --yes --state %s/state 2>/dev/null",
    T.q(T.pgtide), T.q(fixtures .. "steps.lua"), d, d))
  for _ = 1, 200 do
    if sys.exists(d .. "/traces/sleeping") then break end
    sys.sleep(0.05)
  end
  local code, _, err = run(d, { "--yes" })
  T.eq(code, 2)
  T.match(err, "is in use")
  h:close()
end)

T.test("steps lists titles and status", function()
  local d = workdir()
  T.eq(run(d, { "--yes" }), 0)
  local code, out = T.run({ "steps", fixtures .. "steps.lua", "--state", d .. "/state" })
  T.eq(code, 0)
  T.match(out, "2%. second%s+Step two  %(done%)")
end)

T.done()
