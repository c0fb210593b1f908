-- pgtide run RUNBOOK [-c CONFIG] [name=value ...] [--from STEP] [--to STEP]
--                    [--only STEP] [--dry-run] [--yes] [--state DIR]
local config = require "pgtide.config"
local errors = require "pgtide.errors"
local runbooks = require "pgtide.runbooks"
local params = require "pgtide.params"
local state = require "pgtide.state"
local util = require "pgtide.util"
local log = require "log"

local M = {
  summary = "run a runbook (a shipped name or a .lua file), resuming where it stopped",
  usage = [[
pgtide run RUNBOOK [-c CONFIG] [name=value ...] [--from STEP] [--to STEP]
                   [--only STEP] [--dry-run] [--yes] [--state DIR]

RUNBOOK is a shipped runbook (local, dms-manual, aurora-cfn) or a path to a
.lua file.  Parameters come from the config file (-c) and name=value words;
the command line wins.  Progress is saved in the state directory (default
.pgtide/<name>/): rerunning the same command resumes at the first unfinished
step.  --from STEP reruns from STEP; --to STEP stops after STEP (rerun
without it to go on); --only STEP runs just that step;
--dry-run shows what each step would do; --yes confirms destructive and
traffic-switching steps without asking.

Exit codes: 0 done, 1 a step failed, 2 usage or configuration error,
3 interrupted.]],
}

-- Parse the words shared by run and steps.  Returns an options table.
function M.parse(args, allow)
  local o = { assignments = {}, words = {} }
  local i = 1
  local function value(flag)
    local v = args[i + 1]
    if not v then errors.usage("%s needs a value", flag) end
    i = i + 2
    return v
  end
  while i <= #args do
    local a = args[i]
    if a == "-c" or a == "--config" then o.config = value(a)
    elseif a:match("^%-%-config=") then o.config = a:match("=(.*)"); i = i + 1
    elseif a == "--from" and allow.from then o.from = value(a)
    elseif a == "--only" and allow.only then o.only = value(a)
    elseif a == "--to" and allow.to then o.to = value(a)
    elseif a == "--state" then o.state_dir = value(a)
    elseif a:match("^%-%-state=") then o.state_dir = a:match("=(.*)"); i = i + 1
    elseif a == "--dry-run" and allow.dry_run then o.dry_run = true; i = i + 1
    elseif (a == "--yes" or a == "-y") and allow.yes then o.yes = true; i = i + 1
    elseif a:sub(1, 1) == "-" then errors.usage("unknown option %s\n\n%s", a, M.usage)
    elseif a:find("=", 1, true) and not a:find("/", 1, true) or a:match("^[%w_]+=") then
      local k, v = a:match("^([%w_]+)=(.*)$")
      if not k then errors.usage("bad parameter assignment '%s' (expected name=value)", a) end
      o.assignments[k] = v
      i = i + 1
    else
      o.words[#o.words + 1] = a
      i = i + 1
    end
  end
  return o
end

--[[
Resolve everything a run needs: the runbook, its validated parameters,
the migration name and the state directory.  Raises usage errors.
]]
function M.prepare(o)
  local rbarg = o.words[1]
  if not rbarg then errors.usage("which runbook?\n\n%s", M.usage) end
  if #o.words > 1 then errors.usage("unexpected argument '%s'", o.words[2]) end
  local rb = runbooks.load(rbarg)
  local cfg = {}
  if o.config then
    cfg = config.load(o.config)
    config.check(cfg, rb, o.config)
  end
  if cfg.log_level then log.set_level(cfg.log_level) end
  local given = {}
  for k, v in pairs(cfg) do
    if rb.params[k] then given[k] = v end
  end
  local name = o.assignments.name or cfg.name
  for k, v in pairs(o.assignments) do
    if k ~= "name" then given[k] = v end
  end
  -- source/target are common keys: pass them when the runbook declares them
  for _, k in ipairs({ "source", "target" }) do
    if cfg[k] ~= nil and rb.params[k] and given[k] == nil then given[k] = cfg[k] end
  end
  if cfg.aws and rb.params.aws_region and given.aws_region == nil then given.aws_region = cfg.aws.region end
  local p = params.validate(rb.params, given, rb.name)
  -- a runbook may derive a default from its parameters (local: from the database names)
  name = name or (rb.default_name and rb.default_name(p, rb)) or rb.name
  if not tostring(name):match("^[%w][%w_.-]*$") then
    errors.usage("migration name '%s' may only contain letters, digits, '_', '.' and '-'", name)
  end
  local dir = o.state_dir or cfg.state_dir or state.default_dir(name)
  return rb, p, name, dir, cfg
end

function M.run(args)
  local o = M.parse(args, { from = true, only = true, to = true, dry_run = true, yes = true })
  if o.from and o.only then errors.usage("--from and --only cannot be combined") end
  if o.to and o.only then errors.usage("--to and --only cannot be combined") end
  local rb, p, name, dir, cfg = M.prepare(o)
  local plain = {}
  for _, a in ipairs(args) do plain[#plain + 1] = a end
  for i = #plain, 1, -1 do
    if (plain[i] == "--from" or plain[i] == "--only" or plain[i] == "--to") then
      table.remove(plain, i + 1); table.remove(plain, i)
    elseif plain[i] == "--dry-run" then
      table.remove(plain, i)
    end
  end
  local words = { "pgtide", "run" }
  for _, a in ipairs(plain) do words[#words + 1] = util.shell_quote(a) end
  return rb:execute {
    params = p, name = name, state_dir = dir, config = cfg,
    from = o.from, only = o.only, to = o.to, yes = o.yes, dry_run = o.dry_run,
    runbook_arg = o.words[1], resume_command = table.concat(words, " "),
  }
end

return M
