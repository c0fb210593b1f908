-- The runbook engine through the real binary: resume after SIGKILL and
-- SIGINT, failures, parameters, config errors, dry run, confirmation,
-- --from/--to/--only, customisation, redaction.
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

T.test("a failing step exits 1 with its name and message, no traceback; rerun resumes there", function()
  local d = workdir()
  local code, _, err = run(d, { "crash=fail", "--yes" })
  T.eq(code, 1)
  T.match(err, "step 'second' failed: the second step failed on purpose %(attempt 1%)")
  T.nomatch(err, "stack traceback", "a step failure is a message, not a traceback")
  T.match(err, "resume with: pgtide run")
  local st = state(d)
  T.eq(st.steps.second.status, "failed")
  T.match(st.steps.second.error, "on purpose")
  local code2 = run(d, { "crash=fail", "--yes" })
  T.eq(code2, 0)
  T.eq(count(d, "first"), 1)
  T.eq(count(d, "second"), 2)
end)

T.test("an internal error shows one traceback naming the file; --debug shows it for any failure", function()
  local d = workdir()
  local code, _, err = run(d, { "crash=bug", "--yes" })
  T.eq(code, 1)
  T.match(err, "step 'second' failed: .*attempt to index a nil value")
  T.match(err, "steps%.lua:%d+:", "traceback names the runbook file and line")
  local _, tbs = err:gsub("stack traceback", "")
  T.eq(tbs, 1, "exactly one traceback")
  d = workdir()
  code, _, err = T.run { "--debug", "all", "run", fixtures .. "steps.lua", "dir=" .. d .. "/traces",
                         "--state", d .. "/state", "crash=fail", "--yes" }
  T.eq(code, 1)
  _, tbs = err:gsub("stack traceback", "")
  T.ok(tbs >= 1, "--debug shows the traceback")
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

T.test("a second run on a busy state directory is refused with the holder's pid, lock file or not", function()
  local d = workdir()
  local cmd = string.format("%s run %s dir=%s/traces crash=sleep --yes --state %s/state",
    T.q(T.pgtide), T.q(fixtures .. "steps.lua"), d, d)
  local h = io.popen(string.format("sh -c 'echo $$ > %s/pid; exec %s' 2>%s/err", d, cmd, d))
  for _ = 1, 200 do
    if sys.exists(d .. "/traces/sleeping") then break end
    sys.sleep(0.05)
  end
  local pid = tonumber(sys.readfile(d .. "/pid"))
  local before = sys.readfile(d .. "/state/state.json")
  local code, _, err = run(d, { "crash=fail", "--yes" })
  T.eq(code, 2, "second run: " .. err)
  T.match(err, "state directory .* is in use %(locked by another process, pid " .. pid .. "%)")
  -- the lock does not live in a file that can be deleted
  os.remove(d .. "/state/lock")
  code, _, err = run(d, { "crash=fail", "--yes" })
  T.eq(code, 2, "second run without the lock file: " .. err)
  T.match(err, "is in use %(locked by another process%): another pgtide run is still going")
  T.eq(sys.readfile(d .. "/state/state.json"), before, "the second runs wrote nothing")
  sys.kill(pid, "INT")
  h:close()
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
  -- every unknown key at once, each with its suggestion
  assert(sys.write_atomic(cfg, 'return { name = "x", sourse = "host=a", targte = "host=b", jbos = 2, '
    .. 'dir = "' .. d .. '/traces" }'))
  code, _, err = T.run({ "run", fixtures .. "steps.lua", "-c", cfg, "--state", d .. "/state" })
  T.eq(code, 2)
  T.match(err, "3 unknown keys: 'jbos'[^\n]*, 'sourse' %(did you mean 'source'%?%), 'targte' %(did you mean 'target'%?%)")
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

T.test("a destructive step needs --yes when there is no terminal: said before, exit 0 after work", function()
  local d = workdir()
  local code, _, err = run(d, {})
  -- the run did steps one and two: stopping before three is no usage error
  T.eq(code, 0, err)
  local warned = err:find("step 'third' %(destructive%) needs confirmation and there is no terminal", 1)
  local first = err:find("Step one ...", 1, true)
  T.ok(warned and first and warned < first, "said before the first step:\n%s", err)
  T.match(err, "stopped before step 'third' %(Step three%): it is destructive and needs confirmation")
  T.match(err, "go on with: pgtide run [^\n]*steps%.lua[^\n]* %-%-yes")
  T.eq(count(d, "third"), 0)
  T.eq(state(d).steps.first.status, "done")
  T.eq(state(d).finished, nil)
  -- nothing left but the step that needs confirmation: that is a usage matter
  code, _, err = run(d, {})
  T.eq(code, 2, err)
  T.eq(run(d, { "--yes" }), 0)
  T.eq(count(d, "third"), 1)
  T.eq(count(d, "first"), 1)
end)

-- The "resume with" line of stderr.
local function hint(err)
  return err:match("[Rr]esume with: ([^\n]+)")
end

T.test("resume hints keep --only, turn --from into the failed step, and run as printed", function()
  local d = workdir()
  T.eq(run(d, { "--to", "first", "--yes" }), 0)
  -- --only: the hint is --only again
  local code, _, err = run(d, { "--only", "second", "crash=fail", "--yes" })
  T.eq(code, 1)
  local h = hint(err)
  T.match(h, "%-%-only second")
  T.nomatch(h, "--from")
  -- the hint runs as printed
  code, _, err = T.sh(h:gsub("^pgtide", T.q(T.pgtide)) .. " </dev/null")
  T.eq(code, 0, "the hint:\n" .. h .. "\n" .. err)
  T.eq(count(d, "second"), 2, "the hint ran step two again")
  T.eq(count(d, "third"), 0, "and only step two")
  -- --from first, failing at second: the hint goes on from second
  local d2 = workdir()
  code, _, err = run(d2, { "--from", "first", "crash=fail", "--yes" })
  T.eq(code, 1)
  h = hint(err)
  T.match(h, "%-%-from second")
  code, _, err = T.sh(h:gsub("^pgtide", T.q(T.pgtide)) .. " </dev/null")
  T.eq(code, 0, "the hint:\n" .. h .. "\n" .. err)
  T.eq(count(d2, "first"), 1, "step one not rerun")
  T.eq(count(d2, "third"), 1)
end)

T.test("--from past a failed step says it skips it", function()
  local d = workdir()
  T.eq(run(d, { "crash=fail", "--yes" }), 1)
  local code, _, err = run(d, { "--from", "third", "--yes" })
  T.eq(code, 0, err)
  T.match(err, "WARN  %-%-from third: step%(s%) before it are not done and are skipped in this run: second %(failed%)")
end)

T.test("a password given on the command line stays out of the resume hint, which still runs", function()
  local d = workdir()
  local pw = T.secret("pg_password")
  local conninfo = "host=db.example user=app password=" .. pw .. " dbname=app"
  local code, _, err = run(d, { "secret_conninfo=" .. conninfo, "crash=fail", "--yes" })
  T.eq(code, 1)
  local h = hint(err)
  T.nomatch(h, "***", "no masked password in the hint")
  T.nomatch(err, pw)
  T.match(h, "'secret_conninfo=host=db%.example user=app dbname=app'")
  T.match(err, "the password given on the command line is left out: set PGPASSWORD or use ~/%.pgpass")
  code, _, err = T.sh(h:gsub("^pgtide", T.q(T.pgtide)) .. " </dev/null")
  T.eq(code, 0, "the hint:\n" .. h .. "\n" .. err)
  -- a URI's password too
  local d2 = workdir()
  code, _, err = run(d2, { "secret_conninfo=postgresql://app:" .. pw .. "@db.example:5432/app?sslmode=require",
                           "crash=fail", "--yes" })
  T.eq(code, 1)
  T.match(hint(err), "secret_conninfo=postgresql://app@db%.example:5432/app%?sslmode=require")
end)

T.test("SIGHUP (the terminal closed) stops the run as interrupted, exit 3", function()
  local d = workdir()
  local cmd = string.format("%s run %s dir=%s/traces crash=sleep --yes --state %s/state",
    T.q(T.pgtide), T.q(fixtures .. "steps.lua"), d, d)
  local h = io.popen(string.format("sh -c 'echo $$ > %s/pid; exec %s' 2>%s/err", d, cmd, d))
  for _ = 1, 200 do
    if sys.exists(d .. "/traces/sleeping") then break end
    sys.sleep(0.05)
  end
  T.ok(sys.kill(tonumber(sys.readfile(d .. "/pid")), "HUP"))
  local _, _, code = h:close()
  local err = sys.readfile(d .. "/err")
  T.eq(code, 3, "exit code after SIGHUP: " .. err)
  T.match(err, "interrupted during step 'second'")
  T.eq(state(d).steps.second.status, "interrupted")
  -- under nohup the signal stays ignored
  local d2 = workdir()
  h = io.popen(string.format("sh -c 'echo $$ > %s/pid; exec nohup %s run %s dir=%s/traces crash=sleep --yes "
    .. "--state %s/state' 2>%s/err", d2, T.q(T.pgtide), T.q(fixtures .. "steps.lua"), d2, d2, d2))
  for _ = 1, 200 do
    if sys.exists(d2 .. "/traces/sleeping") then break end
    sys.sleep(0.05)
  end
  T.ok(sys.kill(tonumber(sys.readfile(d2 .. "/pid")), "HUP"))
  _, _, code = h:close()
  T.eq(code, 0, "nohup: the run goes on: " .. (sys.readfile(d2 .. "/err") or ""))
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

T.test("--to stops after a step; the next run goes on from there", function()
  local d = workdir()
  local code, _, err = run(d, { "--to", "second", "--yes" })
  T.eq(code, 0, err)
  T.eq(count(d, "first"), 1)
  T.eq(count(d, "second"), 1)
  T.eq(count(d, "third"), 0)
  T.match(err, "stopped after step second %(%-%-to%)")
  T.eq(state(d).finished, nil, "a run stopped by --to is not finished")
  T.eq(run(d, { "--yes" }), 0)
  T.eq(count(d, "first"), 1)
  T.eq(count(d, "second"), 1)
  T.eq(count(d, "third"), 1)
  T.ok(state(d).finished, "finished after the rest ran")
  code, _, err = run(d, { "--from", "third", "--to", "first" })
  T.eq(code, 2)
  T.match(err, "%-%-to first comes before %-%-from third")
  code, _, err = run(d, { "--only", "first", "--to", "first" })
  T.eq(code, 2)
  T.match(err, "%-%-to and %-%-only cannot be combined")
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

T.test("steps lists titles and status, finding the state from --state or the config", function()
  local d = workdir()
  T.eq(run(d, { "--yes" }), 0)
  local code, out = T.run({ "steps", fixtures .. "steps.lua", "--state", d .. "/state" })
  T.eq(code, 0)
  T.match(out, "2%. second%s+Step two  %(done%)")
  -- the config's state_dir, as `pgtide run -c` uses it
  local cfg = d .. "/cfg.lua"
  assert(sys.write_atomic(cfg, 'return { dir = "' .. d .. '/traces", state_dir = "' .. d .. '/state" }'))
  code, out = T.run({ "steps", fixtures .. "steps.lua", "-c", cfg })
  T.eq(code, 0, out)
  T.match(out, "2%. second%s+Step two  %(done%)")
  -- ... and its name, under .pgtide/ of the current directory
  local wd = workdir()
  assert(sys.write_atomic(cfg, 'return { name = "named", dir = "' .. d .. '/traces" }'))
  T.eq(T.sh(string.format("cd %s && %s run %s -c %s --yes </dev/null", T.q(wd), T.q(T.pgtide),
    T.q(fixtures .. "steps.lua"), T.q(cfg))), 0)
  code, out = T.sh(string.format("cd %s && %s steps %s -c %s", T.q(wd), T.q(T.pgtide), T.q(fixtures .. "steps.lua"), T.q(cfg)))
  T.eq(code, 0, out)
  T.match(out, "3%. third%s+Step three %[destructive%]  %(done%)")
end)

T.test("a bare `pgtide status` skips attempts that never got past their first step", function()
  local wd = workdir()
  local rbfile = wd .. "/pf.lua"
  assert(sys.write_atomic(rbfile, [[
local runbook = require "pgtide.runbook"
local rb = runbook.new { name = "pf", params = { fail = { type = "boolean", default = false } } }
rb:step { name = "preflight", title = "Check", run = function(ctx)
  if ctx.params.fail then runbook.fail("a check failed") end end }
rb:step { name = "work", title = "Work", run = function() end }
return rb]]))
  local function pg(args)
    return T.sh(string.format("cd %s && %s %s </dev/null", T.q(wd), T.q(T.pgtide), args))
  end
  T.eq(pg("run pf.lua name=good --to preflight"), 0)
  T.eq(pg("run pf.lua name=try1 fail=true"), 1)
  T.eq(pg("run pf.lua name=try2 fail=true"), 1)
  local code, out, err = pg("status --no-source")
  T.eq(code, 0, err)
  T.match(out, "^migration good %(runbook pf%)")
  -- two that got somewhere: the choice is the user's, each shown with where it is
  T.eq(pg("run pf.lua name=other --to preflight"), 0)
  code, _, err = pg("status --no-source")
  T.eq(code, 2)
  T.match(err, "several migrations under %.pgtide/: %.pgtide/good %(work pending%), %.pgtide/other %(work pending%)")
end)

T.test("an integer parameter below its minimum is refused (jobs=-3)", function()
  local code, _, err = T.run({ "run", "local", "source=host=nowhere.invalid", "target=host=nowhere.invalid",
    "jobs=-3", "--state", T.tmp .. "/jobs-neg" })
  T.eq(code, 2)
  T.match(err, "parameter 'jobs' of runbook 'local' must be an integer >= 0, got \"%-3\"")
  T.eq(sys.exists(T.tmp .. "/jobs-neg/state.json"), false)
end)

T.test("status lines fit an 80-column terminal, and follow a resize (SIGWINCH)", function()
  if os.execute("command -v script >/dev/null 2>&1") ~= true then
    T.skip("status width", "util-linux 'script' is not installed")
    return
  end
  local d = workdir()
  local prog = d .. "/status.lua"
  assert(sys.write_atomic(prog, [[
local log, sys = require "log", require "sys"
local long = "full load: " .. string.rep("public.a_table_with_a_long_name 42%, ", 6) .. "é end"
log.status(long)
log.info("a log line above the status line")
os.execute("stty cols 40 </dev/tty")   -- the terminal shrinks: the kernel sends SIGWINCH
sys.sleep(0.2)
log.status(long)
log.status(nil)
]]))
  local code, out = T.sh(string.format("script -qfec %s /dev/null </dev/null",
    T.q("stty cols 80 rows 24; " .. T.q(T.pgtide) .. " script " .. T.q(prog))))
  T.eq(code, 0, out)
  -- each drawing of the status line ends where it is erased (CR, ESC [K)
  local widths = {}
  for seg in out:gmatch("full load:[^\r\n\27]*") do
    local _, n = seg:gsub("[^\128-\191]", "")
    widths[#widths + 1] = n
  end
  T.ok(#widths >= 2, "status drawings seen: %d\n%s", #widths, out)
  T.eq(widths[1], 79, "cut to 79 columns on an 80-column terminal")
  T.eq(widths[#widths], 39, "cut to 39 columns after the resize")
  T.match(out, "a log line above the status line")
end)

T.done()
