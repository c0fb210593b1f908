-- pgtide.params: declared runbook parameters, their types and validation.
--
-- A declaration is { type = "...", required = bool, default = v,
-- values = {...} (enum), min = n, max = n (integer, number), doc = "..." }.  Types: string, conninfo,
-- integer, number, boolean, enum, list.  Values given on the command line
-- arrive as strings and are converted here; values from a config file
-- may already have the right Lua type.
local errors = require "pgtide.errors"
local util = require "pgtide.util"

local M = {}

local converters = {}

function converters.string(v) if type(v) == "string" then return v end end
converters.conninfo = converters.string

function converters.integer(v)
  if math.type(v) == "integer" then return v end
  if type(v) == "string" and v:match("^%s*[-+]?%d+%s*$") then return math.tointeger(tonumber(v)) end
  if type(v) == "number" and v == math.floor(v) then return math.tointeger(v) end
end

function converters.number(v)
  if type(v) == "number" then return v end
  if type(v) == "string" then return tonumber(v) end
end

function converters.boolean(v)
  if type(v) == "boolean" then return v end
  if type(v) == "string" then
    local l = v:lower()
    if l == "true" or l == "yes" or l == "on" or l == "1" then return true end
    if l == "false" or l == "no" or l == "off" or l == "0" then return false end
  end
end

function converters.list(v)
  if type(v) == "table" then return v end
  if type(v) == "string" then return util.split(v, ",") end
end

function converters.enum(v, decl)
  v = tostring(v)
  for _, allowed in ipairs(decl.values or {}) do
    if v == allowed then return v end
  end
end

local function describe(decl)
  if decl.type == "enum" then return "one of " .. table.concat(decl.values or {}, ", ") end
  if (decl.type == "integer" or decl.type == "number") and (decl.min or decl.max) then
    local what = decl.type == "integer" and "an integer" or "a number"
    if decl.min and decl.max then return string.format("%s from %s to %s", what, decl.min, decl.max) end
    if decl.min then return string.format("%s >= %s", what, decl.min) end
    return string.format("%s <= %s", what, decl.max)
  end
  return decl.type == "integer" and "an integer" or decl.type == "boolean" and "true or false"
    or decl.type == "list" and "a comma-separated list" or "a " .. decl.type
end

-- Normalise declarations: a bare type name means required.
function M.normalise(decls)
  local out = {}
  for name, d in pairs(decls or {}) do
    if type(d) == "string" then d = { type = d, required = true } end
    if type(d) ~= "table" or not converters[d.type or ""] then
      error(string.format("parameter '%s': unknown type %s", name, tostring(d and d.type)), 3)
    end
    out[name] = d
  end
  return out
end

--[[
Validate 'given' (name -> raw value) against 'decls' for runbook 'rbname'.
Returns the complete parameter table (defaults filled in).  Raises a
usage error naming the parameter and the runbook when a required value
is missing, a value has the wrong type, or a name is unknown (with the
closest valid name as a suggestion).
]]
function M.validate(decls, given, rbname)
  local out, names = {}, util.sorted_keys(decls)
  for name, raw in pairs(given) do
    local d = decls[name]
    if not d then
      local hint = util.closest(name, names)
      errors.usage("runbook '%s' has no parameter '%s'%s", rbname, name,
        hint and string.format(" (did you mean '%s'?)", hint) or
        string.format(" (parameters: %s)", table.concat(names, ", ")))
    end
    local v = converters[d.type](raw, d)
    if v ~= nil and type(v) == "number" and ((d.min and v < d.min) or (d.max and v > d.max)) then v = nil end
    if v == nil then
      errors.usage("parameter '%s' of runbook '%s' must be %s, got %q", name, rbname,
        describe(d), tostring(raw))
    end
    out[name] = v
  end
  for _, name in ipairs(names) do
    local d = decls[name]
    if out[name] == nil then
      if d.default ~= nil then
        out[name] = util.copy(d.default)
      elseif d.required then
        errors.usage("runbook '%s' needs parameter '%s' (%s%s): set it in the config file or as %s=...",
          rbname, name, describe(d), d.doc and ("; " .. d.doc) or "", name)
      end
    end
  end
  return out
end

return M
