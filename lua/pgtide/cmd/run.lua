-- pgtide run RUNBOOK [-c CONFIG] [name=value ...] [--from STEP] [--to STEP]
--                    [--only STEP] [--dry-run] [--yes] [--state DIR] [--metrics ADDR:PORT]
local cmd_args = require "pgtide.args"
local config = require "pgtide.config"
local errors = require "pgtide.errors"
local runbooks = require "pgtide.runbooks"
local params = require "pgtide.params"
local state = require "pgtide.state"
local util = require "pgtide.util"
local log = require "log"
local sys = require "sys"

local M = {
  summary = "run a runbook (a shipped name or a .lua file), resuming where it stopped",
  usage = [[
pgtide run RUNBOOK [-c CONFIG] [name=value ...] [--from STEP] [--to STEP]
                   [--only STEP] [--dry-run] [--yes] [--state DIR]
                   [--metrics ADDR:PORT]

RUNBOOK is a shipped runbook (local, dms-manual, aurora-cfn) or a path to a
.lua file.  Parameters come from the config file (-c) and name=value words;
the command line wins.  Progress is saved in the state directory (default
.pgtide/<name>/): rerunning the same command resumes at the first unfinished
step.  --from STEP reruns from STEP; --to STEP stops after STEP (rerun
without it to go on); --only STEP runs just that step.
--dry-run shows what each step would do, then runs the checks (preflight)
on read-only sessions: nothing is changed, and the exit code says whether
they pass.
--yes confirms destructive and traffic-switching steps without asking;
without it and without a terminal the run stops before them (exit 0 when
the steps before them were done in this run).
--metrics ADDR:PORT serves Prometheus/OpenMetrics text on
http://ADDR:PORT/metrics while the run lasts (e.g. 127.0.0.1:9187; port 0
picks a free one, shown in the log and in `pgtide status`).
The run writes report.html and report.json in the state directory (see
`pgtide report`).

Exit codes: 0 done, 1 a step failed, 2 usage or configuration error,
3 interrupted.]],
}

-- The words shared by run, steps, status, cutover, report and abandon (pgtide.args).
function M.parse(args, allow) return cmd_args.parse(args, allow, M.usage) end

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

--[[
The password in a connection string (key=value "password=..." or a URI's
"user:password@"), taken out: the rest still connects when the password
comes from PGPASSWORD or ~/.pgpass.
]]
function M.without_password(conninfo)
  local s = conninfo:gsub("%f[%w]password%s*=%s*'[^']*'%s*", ""):gsub("%f[%w]password%s*=%s*[^%s']*%s*", "")
  s = s:gsub("^(%a[%w+.-]*://[^:/@]+):[^@/]*@", "%1@")
  s = s:gsub("([?&])password=[^&]*&?", "%1"):gsub("[?&]$", "")
  return (s:gsub("%s+$", ""))
end

--[[
The command that resumes this run: its words without --from, --to, --only
and --dry-run (the engine puts back what fits the step it stopped at),
and without any password (a masked one would not connect).  Returns the
command and a note saying where the password must come from, or nil.
]]
function M.resume_command(args)
  local words, note = { "pgtide", "run" }, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--from" or a == "--only" or a == "--to" then
      i = i + 2
    elseif a == "--dry-run" or a:match("^%-%-from=") or a:match("^%-%-only=") or a:match("^%-%-to=") then
      i = i + 1
    else
      if sys.redact(a) ~= a then
        -- a secret on the command line: leave it out rather than print it masked
        local k, v = a:match("^([%w_]+)=(.*)$")
        local stripped = k and (k .. "=" .. M.without_password(v)) or a
        if sys.redact(stripped) == stripped then
          a = stripped
          note = "the password given on the command line is left out: set PGPASSWORD or use ~/.pgpass, "
            .. "or keep the connection strings in a config file (-c)"
        end
      end
      words[#words + 1] = util.shell_quote(a)
      i = i + 1
    end
  end
  return table.concat(words, " "), note
end

function M.run(args)
  local o = M.parse(args, { from = true, only = true, to = true, dry_run = true, yes = true, metrics = true })
  if o.from and o.only then errors.usage("--from and --only cannot be combined") end
  if o.to and o.only then errors.usage("--to and --only cannot be combined") end
  if o.metrics and o.dry_run then errors.usage("--metrics serves a running migration: not with --dry-run") end
  local rb, p, name, dir, cfg = M.prepare(o)
  local command, note = M.resume_command(args)
  return rb:execute {
    params = p, name = name, state_dir = dir, config = cfg,
    from = o.from, only = o.only, to = o.to, yes = o.yes, dry_run = o.dry_run, metrics = o.metrics,
    runbook_arg = o.words[1], resume_command = command, resume_note = note,
  }
end

return M
