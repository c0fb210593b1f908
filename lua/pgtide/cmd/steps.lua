-- pgtide steps RUNBOOK [-c CONFIG] [--state DIR]: list the steps and, when
-- a state exists, each step's status.
local config = require "pgtide.config"
local run = require "pgtide.cmd.run"
local runbooks = require "pgtide.runbooks"
local state = require "pgtide.state"
local errors = require "pgtide.errors"
local sys = require "sys"

local M = {
  summary = "list a runbook's steps with their titles (and status, when a state exists)",
  usage = [[
pgtide steps RUNBOOK [-c CONFIG] [name=NAME] [--state DIR]

Lists the runbook's steps with their titles and flags; when the migration's
state exists (the state directory `pgtide run` would use with the same
arguments: --state, the config's state_dir or name, name=NAME), each step's
status too.]],
}

function M.run(args)
  local o = run.parse(args, {})
  local rbarg = o.words[1]
  if not rbarg then errors.usage("which runbook?\n\n%s", M.usage) end
  local rb = runbooks.load(rbarg)
  local cfg = o.config and config.load(o.config) or {}
  local st
  -- the state directory as `pgtide run` picks it: --state, the config's state_dir or name
  local dir = o.state_dir or cfg.state_dir or state.default_dir(o.assignments.name or cfg.name or rb.name)
  if sys.exists(dir .. "/state.json") then st = state.open(dir, { create = false }) end
  print(string.format("%s: %s", rb.name, rb.title))
  for i, step in ipairs(rb.steps) do
    local flags = {}
    if step.destructive then flags[#flags + 1] = "destructive" end
    if step.switches_traffic then flags[#flags + 1] = "switches traffic" end
    local status = st and st:status(step.name) or nil
    print(string.format("%2d. %-24s %s%s%s", i, step.name, step.title,
      #flags > 0 and (" [" .. table.concat(flags, ", ") .. "]") or "",
      status and ("  (" .. status .. ")") or ""))
  end
  return 0
end

return M
