--[[
pgtide.runbook: runbook definitions and the engine that runs them.

A runbook is an ordered list of steps plus declared parameters:

  local runbook = require "pgtide.runbook"
  local rb = runbook.new { name = "local", title = "...", params = { ... } }
  rb:step { name = "schema", title = "Pre-Migration Schema Setup",
            check = fn, run = fn, verify = fn, plan = "text or fn",
            destructive = bool, switches_traffic = bool }
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
  switches_traffic = "boolean", doc = "string",
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
  self._state:save()
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

-- Print what each step would do; touches nothing.
function Runbook:dry_run(opts)
  local ctx = new_context(self, opts, nil)
  print(string.format("runbook %s: %s (dry run, nothing is changed)", self.name, self.title))
  for i, step in ipairs(self.steps) do
    local flags = {}
    if step.destructive then flags[#flags + 1] = "destructive" end
    if step.switches_traffic then flags[#flags + 1] = "switches traffic" end
    print(string.format("%2d. %s: %s%s", i, step.name, step.title,
      #flags > 0 and (" [" .. table.concat(flags, ", ") .. "]") or ""))
    for line in (plan_text(step, ctx) .. "\n"):gmatch("(.-)\n") do
      print("      " .. line)
    end
  end
  return M.EXIT_OK
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

-- The command that resumes this run, with any secret on it masked.
local function resume_hint(opts)
  return sys.redact(opts.resume_command or "pgtide run " .. (opts.runbook_arg or "RUNBOOK"))
end

--[[
rb:execute(opts) -> exit code.  opts: params (validated), name (migration
name), state_dir, from, to, only, yes, dry_run, runbook_arg and
resume_command (for messages).
]]
function Runbook:execute(opts)
  if opts.dry_run then return self:dry_run(opts) end
  local steps, forced = select_steps(self, opts)
  local st = state_mod.open(opts.state_dir, { lock = true })
  local ok_log, log_err = log.open(opts.state_dir .. "/pgtide.log")
  if not ok_log then log.warn("%s", log_err) end
  st.data.runbook = self.name
  st.data.name = opts.name
  st.data.params = opts.params
  st.data.order = {}
  for i, s in ipairs(self.steps) do st.data.order[i] = s.name end
  local ctx = new_context(self, opts, st)
  if forced then
    for _, s in ipairs(steps) do st:step(s.name).status = "pending" end
  end
  st:save()
  log.info("runbook %s, migration '%s', state in %s", self.name, opts.name, opts.state_dir)
  local code = M.EXIT_OK
  for _, step in ipairs(steps) do
    code = self:run_step(step, ctx, st, opts)
    if code ~= M.EXIT_OK then break end
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
  end
  return code
end

function Runbook:run_step(step, ctx, st, opts)
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
      log.info("%s: already done (check passed), skipped", step.title)
      return M.EXIT_OK
    end
  end
  if step.destructive or step.switches_traffic then
    local what = step.destructive and "destructive" or "switches traffic"
    if not ctx:confirm(string.format("Step '%s' (%s) %s. Proceed?", step.name, step.title, what)) then
      rec.status = "pending"
      st:save()
      io.stderr:write(string.format(
        "step '%s' %s and needs confirmation: answer on a terminal, or rerun with --yes\n",
        step.name, what))
      return M.EXIT_USAGE
    end
  end
  rec.status = "running"
  rec.started = util.now_iso()
  rec.attempts = (rec.attempts or 0) + 1
  rec.error = nil
  st:save()
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
  log.info("%s: done in %s", step.title, util.format_duration(rec.seconds))
  return M.EXIT_OK
end

function Runbook:step_failed(step, rec, st, err, opts, phase)
  if errors.is_interrupt(err) or (type(err) == "table" and errors.is_interrupt(err.cause)) then
    rec.status = "interrupted"
    rec.error = "interrupted"
    st:save()
    log.warn("interrupted during step '%s'", step.name)
    io.stderr:write(string.format(
      "pgtide: interrupted during step '%s'; progress is saved in %s.\nResume with: %s\n",
      step.name, st.dir, resume_hint(opts)))
    return M.EXIT_INTERRUPTED
  end
  local cause = type(err) == "table" and err.cause or err
  local msg = errors.message(cause)
  rec.status = "failed"
  rec.error = msg
  rec.failed_in = phase
  rec.finished = util.now_iso()
  st:save()
  log.error("step '%s' failed: %s", step.name, msg)
  -- an error object (a step failure, a database or AWS error) says what failed and what to do;
  -- a plain string is a bug in pgtide or a runbook: show where, as --debug always does
  local tb = ""
  if type(cause) ~= "table" or log.level() == "DEBUG" or log.level() == "TRACE" then
    tb = (type(err) == "table" and err.traceback or ""):gsub("^[^\n]*\n", "") .. "\n"
  end
  io.stderr:write(sys.redact(string.format("pgtide: step '%s' failed%s: %s\n%s",
    step.name, phase ~= "run" and (" in " .. phase) or "", msg, tb)))
  io.stderr:write(string.format("Fix the cause, then resume with: %s\n", resume_hint(opts)))
  return M.EXIT_STEP_FAILED
end

--}====================================================================

return M
