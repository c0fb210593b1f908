-- pgtide.args: the command-line words the commands share: -c CONFIG,
-- --state DIR, name=value assignments, and the flags each allows.
local errors = require "pgtide.errors"

local M = {}

--[[
parse(args, allow, usage) -> { config, state_dir, assignments = { name = value },
words = { ... }, and the flags 'allow' lets through: from, only, to,
dry_run, metrics, yes }.  Unknown options are usage errors (with 'usage'
appended).  Commands that only read a migration's state use it without
loading the run command.
]]
function M.parse(args, allow, usage)
  allow = allow or {}
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
    elseif a == "--metrics" and allow.metrics then o.metrics = value(a)
    elseif a:match("^%-%-metrics=") and allow.metrics then o.metrics = a:match("=(.*)"); i = i + 1
    elseif (a == "--yes" or a == "-y") and allow.yes then o.yes = true; i = i + 1
    elseif a:sub(1, 1) == "-" then errors.usage("unknown option %s%s", a, usage and ("\n\n" .. usage) or "")
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

return M
