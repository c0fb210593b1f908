--[[
pgtide.runbook: runbook definitions and the engine that runs them.

A runbook is an ordered list of steps plus declared parameters:

  local runbook = require "pgtide.runbook"
  local rb = runbook.new { name = "local", title = "...", params = { ... } }
  rb:step { name = "schema", title = "Pre-Migration Schema Setup",
            check = fn, run = fn, verify = fn, plan = "text or fn",
            destructive = bool, switches_traffic = bool,
            read_only = bool }   -- changes nothing: --dry-run runs it (preflight)
  return rb

Customisation: a user runbook requires a stock one and edits a copy:

  local rb = require("runbooks.local"):clone("my-local")
  rb:insert_after("schema", { name = "notify", title = "...", run = fn })
  rb:replace("count-check", { ... }); rb:remove("vacuum")
  return rb

The engine (Runbook:execute) persists progress in the state directory
(pgtide.state) so a rerun after a failure, kill -9 or Ctrl-C resumes at
the first unfinished step.  See docs/runbooks.md.
]]
local errors = require "pgtide.errors"
local params = require "pgtide.params"
local state_mod = require "pgtide.state"
local util = require "pgtide.util"
local log = require "log"
local sys = require "sys"

local M = {}

local Runbook = {}
Runbook.__index = Runbook
Runbook.__name = "pgtide.runbook"

-- Exit codes (documented in docs/runbooks.md and `pgtide help`).
M.EXIT_OK, M.EXIT_STEP_FAILED, M.EXIT_USAGE, M.EXIT_INTERRUPTED = 0, 1, 2, 3

--{====================================================================
-- Definition
--=====================================================================

-- runbook.new{name=, title=, description=, params=} -> runbook
function M.new(def)
  assert(type(def) == "table" and type(def.name) == "string", "runbook.new needs a name")
  local rb = setmetatable({
    name = def.name,
    title = def.title or def.name,
    description = def.description,
    params = params.normalise(def.params or {}),
    steps = {},
  }, Runbook)
  return rb
end

local step_fields = {
  name = "string", title = "string", run = "function", check = "function",
  verify = "function", plan = "any", destructive = "boolean",
  switches_traffic = "boolean", doc = "string", read_only = "boolean",
}

local function check_step(step, level)
  if type(step) ~= "table" then error("a step must be a table", level) end
  for k, v in pairs(step) do
    local want = step_fields[k]
    if not want then
      local hint = util.closest(k, util.sorted_keys(step_fields))
      error(string.format("step '%s': unknown field '%s'%s", tostring(step.name), k,
        hint and (" (did you mean '" .. hint .. "'?)") or ""), level)
    end
    if want ~= "any" and type(v) ~= want then
      error(string.format("step '%s': field '%s' must be a %s", tostring(step.name), k, want), level)
    end
  end
  if not step.name or not step.run then
    error(string.format("step '%s' needs a name and a run function", tostring(step.name)), level)
  end
  step.title = step.title or step.name
  return step
end

function Runbook:index(name)
  for i, s in ipairs(self.steps) do
    if s.name == name then return i end
  end
  return nil
end

local function need_index(self, name, level)
  local i = self:index(name)
  if not i then
    local names = {}
    for _, s in ipairs(self.steps) do names[#names + 1] = s.name end
    local hint = util.closest(name, names)
    error(string.format("runbook '%s' has no step '%s'%s", self.name, tostring(name),
      hint and (" (did you mean '" .. hint .. "'?)") or ""), level)
  end
  return i
end

-- rb:step{...} appends a step; names must be unique.
function Runbook:step(step)
  check_step(step, 3)
  if self:index(step.name) then
    error(string.format("runbook '%s' already has a step '%s'", self.name, step.name), 2)
  end
  self.steps[#self.steps + 1] = step
  return step
end

function Runbook:find(name)
  local i = self:index(name)
  return i and self.steps[i] or nil
end

-- rb:replace(name, step): the new step takes the old one's place (and
-- its name unless it gives one).
function Runbook:replace(name, step)
  local i = need_index(self, name, 3)
  step.name = step.name or name
  self.steps[i] = check_step(step, 3)
end

function Runbook:insert_before(name, step)
  local i = need_index(self, name, 3)
  check_step(step, 3)
  table.insert(self.steps, i, step)
end

function Runbook:insert_after(name, step)
  local i = need_index(self, name, 3)
  check_step(step, 3)
  table.insert(self.steps, i + 1, step)
end

function Runbook:remove(name)
  table.remove(self.steps, need_index(self, name, 3))
end

-- rb:clone(newname) -> an independent copy to customise.
function Runbook:clone(newname)
  local c = setmetatable({}, Runbook)
  for k, v in pairs(self) do c[k] = v end
  c.name = newname or self.name
  c.params = util.copy(self.params)
  c.steps = {}
  for i, s in ipairs(self.steps) do
    local copy = {}
    for k, v in pairs(s) do copy[k] = v end
    c.steps[i] = copy
  end
  return c
end

-- rb:param(name, decl) adds or changes a parameter declaration.
function Runbook:param(name, decl)
  self.params[name] = params.normalise({ [name] = decl })[name]
end

-- runbook.crash_point(name): a test hook.  When the environment variable
-- PGTIDE_CRASH_AT equals 'name', the process kills itself with SIGKILL
-- right here, as a power cut would: the fault tests stop a run just
-- after each action that must survive a crash (docs/testing.md).
function M.crash_point(name)
  if os.getenv("PGTIDE_CRASH_AT") == name then
    io.stderr:write("pgtide: PGTIDE_CRASH_AT=" .. name .. ": killing this process\n")
    io.stderr:flush()
    sys.kill(sys.getpid(), "KILL")
    sys.sleep(10)
  end
end

--}====================================================================

--{====================================================================
-- Errors raised inside steps
--=====================================================================

local StepFailure = {}
StepFailure.__index = StepFailure
StepFailure.__name = "pgtide.failure"
StepFailure.__tostring = function(e) return e.message end

-- runbook.fail(fmt, ...) raises an error with a formatted message.
function M.fail(fmt, ...)
  error(setmetatable({ message = string.format(fmt, ...) }, StepFailure), 2)
end

-- runbook.require(cond, fmt, ...) raises unless cond holds.
function M.require(cond, fmt, ...)
  if not cond then
    error(setmetatable({ message = string.format(fmt, ...) }, StepFailure), 2)
  end
  return cond
end

--}====================================================================

--{====================================================================
-- Engine
--=====================================================================

-- The context handed to check/run/verify.
local Context = {}

local function lazy_conn(ctx, key, param)
  local conninfo = ctx.params[param]
  if not conninfo then
    M.fail("this step needs the '%s' parameter (a connection string)", param)
  end
  local pg = require "pg"
  local c = pg.connect(conninfo, { label = param })
  ctx._conns[#ctx._conns + 1] = c
  -- a dry run only reads: every transaction of its sessions is read-only
  if ctx.dry_run then c:exec("SET default_transaction_read_only = on") end
  rawset(ctx, key, c)
  return c
end

Context.__index = function(ctx, key)
  if key == "src" then return lazy_conn(ctx, "src", "source") end
  if key == "dst" then return lazy_conn(ctx, "dst", "target") end
  return Context[key]
end

-- ctx:save(): persist this step's outputs now (long steps call it as
-- they make progress, e.g. after each finished unit).
function Context:save()
  if self._state then self._state:save() end
end

--[[
ctx:confirm(question) -> true to proceed.  --yes answers yes; on a TTY the
user is asked; otherwise the answer is no.
]]
function Context:confirm(question)
  if self._opts.yes then return true end
  if not sys.isatty("stdin") then return false end
  io.stderr:write(question, " [y/N] ")
  io.stderr:flush()
  local answer = io.read("l")
  return answer ~= nil and answer:match("^%s*[yY]") ~= nil
end

--[[ runbook.revive(ctx): the context's connections live as long as the
  run; a streaming phase can last days.  Before steps that use them after
  a long wait, drop a connection that no longer answers (a terminated
  backend, a restarted server, a proxy's idle timeout) so it reopens on
  next use.  Does not raise. ]]
function M.revive(ctx)
  for _, key in ipairs { "src", "dst" } do
    local c = rawget(ctx, key)
    if c and not pcall(c.query_one, c, "SELECT 1 AS ok") then
      log.warn("the %s connection was lost; reconnecting", key == "src" and "source" or "target")
      pcall(c.close, c)
      rawset(ctx, key, nil)
    end
  end
end

function Context:close()
  for _, c in ipairs(self._conns) do pcall(c.close, c) end
  self._conns = {}
  rawset(self, "src", nil)
  rawset(self, "dst", nil)
end

local function new_context(rb, opts, st)
  local ctx = setmetatable({
    runbook = rb,
    params = opts.params,
    config = opts.config or {},
    name = opts.name,
    state_dir = st and st.dir,
    dry_run = opts.dry_run or false,
    outputs = {},
    log = log,
    _opts = opts,
    _state = st,
    _conns = {},
  }, Context)
  if st then
    for name, rec in pairs(st.data.steps) do ctx.outputs[name] = rec.outputs end
  end
  return ctx
end

--[[ runbook.context(rb, opts, st): a context as the steps get it
  (lazy src/dst connections, params, outputs from the state), for
  commands that act on a migration outside a run (pgtide abandon).
  Close it with ctx:close(). ]]
M.context = new_context

-- Wrap any error raised in a step hook with one traceback from where it
-- happened.  Interrupts pass through untouched.
local function step_handler(err)
  if errors.is_interrupt(err) then return err end
  return { cause = err, traceback = debug.traceback(errors.message(err), 2) }
end

local function call_hook(fn, ctx)
  return xpcall(fn, step_handler, ctx)
end

local function plan_text(step, ctx)
  if type(step.plan) == "function" then
    local ok, text = pcall(step.plan, ctx)
    return ok and tostring(text) or ("(cannot describe: " .. errors.message(text) .. ")")
  end
  return step.plan or step.doc or step.title
end

--[[
Print what each step would do, then run the steps marked read_only (the
preflight) on read-only sessions, so that a dry run also answers "would
this work?".  Writes no state.  Returns EXIT_OK, or EXIT_STEP_FAILED when
a read-only step fails (its message says what to fix).
]]
function Runbook:dry_run(opts)
  local ctx = new_context(self, opts, nil)
  print(string.format("runbook %s: %s (dry run, nothing is changed)", self.name, self.title))
  local checks = {}
  for i, step in ipairs(self.steps) do
    local flags = {}
    if step.destructive then flags[#flags + 1] = "destructive" end
    if step.switches_traffic then flags[#flags + 1] = "switches traffic" end
    if step.read_only then checks[#checks + 1] = step end
    print(string.format("%2d. %s: %s%s", i, step.name, step.title,
      #flags > 0 and (" [" .. table.concat(flags, ", ") .. "]") or ""))
    for line in (plan_text(step, ctx) .. "\n"):gmatch("(.-)\n") do
      print("      " .. line)
    end
  end
  io.stdout:flush()
  local code = M.EXIT_OK
  for _, step in ipairs(checks) do
    log.info("dry run: running %s (read-only sessions)", step.name)
    log.set_context(step.name)
    ctx.out, ctx.step = {}, step
    ctx.outputs[step.name] = ctx.out
    local ok, err = call_hook(step.run, ctx)
    log.set_context(nil)
    if not ok then
      if errors.is_interrupt(err) or (type(err) == "table" and errors.is_interrupt(err.cause)) then
        ctx:close()
        error(errors.new { message = "interrupted", interrupted = true }, 0)
      end
      local cause = type(err) == "table" and err.cause or err
      io.stderr:write(sys.redact(string.format("pgtide: dry run: step '%s' failed: %s\n", step.name,
        errors.message(cause))))
      code = M.EXIT_STEP_FAILED
      break
    end
  end
  ctx:close()
  if #checks > 0 and code == M.EXIT_OK then
    log.info("dry run: %s passed; nothing was changed", table.concat((function()
      local names = {}
      for _, s in ipairs(checks) do names[#names + 1] = s.name end
      return names
    end)(), ", "))
  end
  return code
end

-- Choose the steps to run: --only, or --from (default: the first) up to
-- --to (default: the last).
local function select_steps(self, opts)
  for _, name in ipairs({ opts.only, opts.from, opts.to }) do
    if not self:index(name) then
      local names = {}
      for _, s in ipairs(self.steps) do names[#names + 1] = s.name end
      local hint = util.closest(name, names)
      errors.usage("runbook '%s' has no step '%s'%s", self.name, name,
        hint and (" (did you mean '" .. hint .. "'?)") or (" (steps: " .. table.concat(names, ", ") .. ")"))
    end
  end
  if opts.only then
    return { self.steps[self:index(opts.only)] }, true
  end
  local first, last = 1, #self.steps
  if opts.from then first = self:index(opts.from) end
  if opts.to then last = self:index(opts.to) end
  if last < first then
    errors.usage("--to %s comes before --from %s in runbook '%s'", opts.to, opts.from, self.name)
  end
  local list = {}
  for i = first, last do list[#list + 1] = self.steps[i] end
  return list, opts.from ~= nil
end

--[[
The command that goes on from step 'at' (the one that failed or stopped),
as a runnable command line.  opts.resume_command is the command as given
without --from/--to/--only/--dry-run (pgtide.cmd.run: a password given in
a connection string is left out of it, with opts.resume_note saying
where to put it); the run's selection is kept: --only STEP again, --from
becomes the failed step (the steps before it were done or deliberately
skipped), --to stays.  extra: words to add (--yes).
]]
local function resume_hint(opts, at, extra)
  local words = { opts.resume_command or ("pgtide run " .. (opts.runbook_arg or "RUNBOOK")) }
  if opts.only then
    words[#words + 1] = "--only " .. util.shell_quote(opts.only)
  elseif opts.from then
    words[#words + 1] = "--from " .. util.shell_quote(at or opts.from)
  end
  if opts.to then words[#words + 1] = "--to " .. util.shell_quote(opts.to) end
  if extra and not (opts.yes and extra == "--yes") then words[#words + 1] = extra end
  local text = sys.redact(table.concat(words, " "))
  if opts.resume_note then text = text .. "\n(" .. opts.resume_note .. ")" end
  return text
end
M.resume_hint = resume_hint

-- Write report.html and report.json; a failure is logged, never raised.
local function write_report(dir)
  local ok, err = pcall(function() require("pgtide.report").write(dir) end)
  if not ok then log.warn("could not write the migration report in %s: %s", dir, errors.message(err)) end
end

--[[
rb:execute(opts) -> exit code.  opts: params (validated), name (migration
name), state_dir, from, to, only, yes, dry_run, metrics ("ADDR:PORT"),
runbook_arg, resume_command and resume_note (for messages).
]]
function Runbook:execute(opts)
  if opts.dry_run then return self:dry_run(opts) end
  local steps, forced = select_steps(self, opts)
  local st = state_mod.open(opts.state_dir, { lock = true })
  if st.data.abandoned then
    errors.usage("migration '%s' was abandoned at %s (pgtide abandon): it cannot be resumed. To start "
      .. "over, remove %s (and empty the target database)", tostring(st.data.name or opts.name),
      tostring(st.data.abandoned.at), opts.state_dir)
  end
  local ok_log, log_err = log.open(opts.state_dir .. "/pgtide.log")
  if not ok_log then log.warn("%s", log_err) end
  st.data.runbook = self.name
  st.data.title = self.title
  st.data.name = opts.name
  st.data.params = opts.params
  st.data.order, st.data.titles = {}, {}
  for i, s in ipairs(self.steps) do
    st.data.order[i] = s.name
    st.data.titles[s.name] = s.title
  end
  local ctx = new_context(self, opts, st)
  if forced then
    for _, s in ipairs(steps) do st:step(s.name).status = "pending" end
  end
  st:save()
  local monitor = require "pgtide.monitor"
  local addr = monitor.start(ctx, st, { metrics = opts.metrics })
  if addr then require("pgtide.status_file").publish(ctx, { metrics = "http://" .. addr .. "/metrics" }) end
  log.info("runbook %s, migration '%s', state in %s", self.name, opts.name, opts.state_dir)
  if opts.from then
    -- --from starts there whatever came before: say what that leaves undone
    local skipped = {}
    for i = 1, self:index(opts.from) - 1 do
      local s = self.steps[i]
      if st:status(s.name) ~= "done" then skipped[#skipped + 1] = s.name .. " (" .. st:status(s.name) .. ")" end
    end
    if #skipped > 0 then
      log.warn("--from %s: step(s) before it are not done and are skipped in this run: %s",
        opts.from, table.concat(skipped, ", "))
    end
  end
  if not opts.yes and not sys.isatty("stdin") then
    -- say before the work starts, not after the cutover, that the run will stop at these
    for _, s in ipairs(steps) do
      if (s.destructive or s.switches_traffic) and st:status(s.name) ~= "done" then
        log.warn("step '%s' (%s) needs confirmation and there is no terminal to ask on: this run stops "
          .. "before it; add --yes to let it run too", s.name, s.destructive and "destructive" or "switches traffic")
      end
    end
  end
  local code, ran = M.EXIT_OK, 0
  for _, step in ipairs(steps) do
    local was_done = st:status(step.name) == "done"
    code = self:run_step(step, ctx, st, opts)
    if code ~= M.EXIT_OK then break end
    if not was_done then ran = ran + 1 end
  end
  log.set_context(nil)
  ctx:close()
  if code == M.EXIT_OK and opts.to and self:index(opts.to) < #self.steps then
    log.info("runbook %s stopped after step %s (--to); run it again without --to to go on",
      self.name, opts.to)
  elseif code == M.EXIT_OK then
    st.data.finished = util.now_iso()
    st:save()
    log.info("runbook %s finished", self.name)
  elseif code == M.EXIT_CONFIRM then
    -- like --to: the steps before it are done; without any, nothing happened (a usage matter)
    code = ran > 0 and M.EXIT_OK or M.EXIT_USAGE
  end
  write_report(opts.state_dir)
  monitor.stop()
  return code
end

-- Internal: run_step stopped before a step that needs confirmation.
M.EXIT_CONFIRM = -1

function Runbook:run_step(step, ctx, st, opts)
  local monitor = require "pgtide.monitor"
  local rec = st:step(step.name)
  log.set_context(step.name)
  ctx.out = rec.outputs
  ctx.outputs[step.name] = rec.outputs
  ctx.step = step
  if rec.status == "done" then
    log.info("%s: already done, skipped", step.title)
    return M.EXIT_OK
  end
  if step.check then
    local ok, done = call_hook(step.check, ctx)
    if not ok then return self:step_failed(step, rec, st, done, opts, "check") end
    if done then
      rec.status, rec.skipped, rec.finished = "done", "check: already done", util.now_iso()
      st:save()
      monitor.step_event(ctx, step, "skipped")
      log.info("%s: already done (check passed), skipped", step.title)
      return M.EXIT_OK
    end
  end
  if step.destructive or step.switches_traffic then
    local what = step.destructive and "is destructive" or "switches traffic"
    if not ctx:confirm(string.format("Step '%s' (%s) %s. Proceed?", step.name, step.title, what)) then
      rec.status = "pending"
      st:save()
      monitor.step_event(ctx, step, "waiting")
      log.set_context(nil)
      io.stderr:write(string.format(
        "pgtide: stopped before step '%s' (%s): it %s and needs confirmation: answer on a terminal, or "
        .. "go on with: %s\n", step.name, step.title, what, resume_hint(opts, step.name, "--yes")))
      return M.EXIT_CONFIRM
    end
  end
  rec.status = "running"
  rec.started = util.now_iso()
  rec.attempts = (rec.attempts or 0) + 1
  rec.error = nil
  st:save()
  monitor.step_event(ctx, step, "start", { attempt = rec.attempts })
  log.info("%s ...", step.title)
  local t0 = sys.monotonic()
  local ok, err = call_hook(step.run, ctx)
  if ok and step.verify then
    ok, err = call_hook(step.verify, ctx)
    if not ok then return self:step_failed(step, rec, st, err, opts, "verify") end
  end
  if not ok then return self:step_failed(step, rec, st, err, opts, "run") end
  rec.status = "done"
  rec.finished = util.now_iso()
  rec.seconds = math.floor((sys.monotonic() - t0) * 1000 + 0.5) / 1000
  st:save()
  monitor.step_event(ctx, step, "done", { seconds = rec.seconds })
  log.info("%s: done in %s", step.title, util.format_duration(rec.seconds))
  write_report(st.dir)
  return M.EXIT_OK
end

function Runbook:step_failed(step, rec, st, err, opts, phase)
  local monitor = require "pgtide.monitor"
  local ctx = { state_dir = st.dir }
  if errors.is_interrupt(err) or (type(err) == "table" and errors.is_interrupt(err.cause)) then
    rec.status = "interrupted"
    rec.error = "interrupted"
    st:save()
    monitor.step_event(ctx, step, "interrupted")
    log.warn("interrupted during step '%s'", step.name)
    io.stderr:write(string.format(
      "pgtide: interrupted during step '%s'; progress is saved in %s.\nResume with: %s\n",
      step.name, st.dir, resume_hint(opts, step.name)))
    return M.EXIT_INTERRUPTED
  end
  local cause = type(err) == "table" and err.cause or err
  local msg = errors.message(cause)
  rec.status = "failed"
  rec.error = msg
  rec.failed_in = phase
  rec.finished = util.now_iso()
  st:save()
  monitor.step_event(ctx, step, "failed", { error = msg, phase = phase })
  log.error("step '%s' failed: %s", step.name, msg)
  -- an error object (a step failure, a database or AWS error) says what failed and what to do;
  -- a plain string is a bug in pgtide or a runbook: show where, as --debug always does
  local tb = ""
  if type(cause) ~= "table" or log.level() == "DEBUG" or log.level() == "TRACE" then
    tb = (type(err) == "table" and err.traceback or ""):gsub("^[^\n]*\n", "") .. "\n"
  end
  io.stderr:write(sys.redact(string.format("pgtide: step '%s' failed%s: %s\n%s",
    step.name, phase ~= "run" and (" in " .. phase) or "", msg, tb)))
  io.stderr:write(string.format("Fix the cause, then resume with: %s\n", resume_hint(opts, step.name)))
  write_report(st.dir)
  return M.EXIT_STEP_FAILED
end

--}====================================================================

return M
