-- pgtide.errors: error objects used by the engine and commands.
--
-- An error object is a table with at least `message`, and a __tostring
-- that renders it.  Usage and configuration problems carry `usage = true`
-- (exit code 2); interrupts carry `interrupted = true` (exit code 3).
local M = {}

local Error = {}
Error.__index = Error
Error.__name = "pgtide.error"
Error.__tostring = function(e) return e.message end

-- M.new{message=..., ...} -> error object
function M.new(fields)
  return setmetatable(fields, Error)
end

-- Raise a usage or configuration error (exit code 2).
function M.usage(fmt, ...)
  error(M.new { message = string.format(fmt, ...), usage = true }, 0)
end

function M.is_usage(e)
  return type(e) == "table" and e.usage == true
end

function M.is_interrupt(e)
  return type(e) == "table" and e.interrupted == true
end

-- A readable one-line form of any error value.
function M.message(e)
  if type(e) == "table" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then return tostring(e) end
    if e.message then return tostring(e.message) end
  end
  return tostring(e)
end

return M
