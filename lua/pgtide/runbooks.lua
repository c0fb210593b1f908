--[[
pgtide.runbooks: find and load a runbook by shipped name (local,
dms-manual, aurora-cfn) or by path to a .lua file.

User runbook files run in a strict environment: reading an undeclared
global or assigning a global raises an error naming it, which catches
typos before they touch a database.  A syntax error is reported as
file:line.  Loading problems are usage errors (exit code 2).
]]
local errors = require "pgtide.errors"
local util = require "pgtide.util"
local sys = require "sys"

local M = {}

M.shipped = { "local", "dms-manual", "aurora-cfn" }

local function strict_env()
  return setmetatable({}, {
    __index = function(_, k)
      local v = _G[k]
      if v == nil then error("undeclared global '" .. tostring(k) .. "'", 2) end
      return v
    end,
    __newindex = function(_, k)
      error("assignment to global '" .. tostring(k) .. "' (use 'local')", 2)
    end,
    __metatable = false,
  })
end

local function is_runbook(v)
  local mt = getmetatable(v)
  return type(v) == "table" and mt ~= nil and mt.__name == "pgtide.runbook"
end

local function traceback_handler(e)
  if type(e) == "table" then return e end
  return debug.traceback(tostring(e), 2)
end

-- M.load(arg) -> runbook.  'arg' is a shipped name or a path.
function M.load(arg)
  local rb, origin
  if arg:match("%.lua$") or arg:find("/", 1, true) then
    if not sys.exists(arg) then errors.usage("runbook file %s not found", arg) end
    local chunk, err = loadfile(arg, "t", strict_env())
    if not chunk then errors.usage("cannot load runbook %s", err) end
    local ok, v = xpcall(chunk, traceback_handler)
    if not ok then errors.usage("runbook %s failed to load: %s", arg, errors.message(v)) end
    rb, origin = v, arg
  else
    local modname = "runbooks." .. arg:gsub("%-", "_")
    if not sys.resource("runbooks/" .. arg:gsub("%-", "_") .. ".lua") and
       not sys.resource("runbooks/" .. arg .. ".lua") then
      local hint = util.closest(arg, M.shipped)
      errors.usage("unknown runbook '%s'%s", arg,
        hint and string.format(" (did you mean '%s'?)", hint) or
        string.format(" (shipped runbooks: %s; or give a path to a .lua file)",
          table.concat(M.shipped, ", ")))
    end
    if sys.resource("runbooks/" .. arg .. ".lua") then modname = "runbooks." .. arg end
    local ok, v = xpcall(require, traceback_handler, modname)
    if not ok then errors.usage("runbook '%s' failed to load: %s", arg, errors.message(v)) end
    rb, origin = v, arg
  end
  if not is_runbook(rb) then
    errors.usage("%s does not return a runbook (got %s): end the file with 'return rb'",
      origin, type(rb))
  end
  return rb
end

return M
