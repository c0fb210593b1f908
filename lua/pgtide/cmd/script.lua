-- pgtide script FILE [args...]: run a Lua file with every module available.
-- The script sees its arguments in the global 'arg' (arg[0] is FILE) and
-- as '...'; its directory and LUA_PATH are on package.path.  An integer
-- returned by the script is the exit code.
local errors = require "pgtide.errors"

local M = {
  summary = "run a Lua file with all pgtide modules (pg, aws, core, json, ...)",
  usage = "pgtide script FILE [args...]",
}

function M.run(args)
  local file = args[1]
  if not file then errors.usage("which file?\n\n%s", M.usage) end
  local dir = file:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  local chunk, err = loadfile(file, "t")
  if not chunk then errors.usage("%s", err) end
  arg = { [0] = file }
  for i = 2, #args do arg[i - 1] = args[i] end
  local ok, result = xpcall(chunk, function(e)
    if type(e) == "table" then return e end
    return debug.traceback(tostring(e), 2)
  end, table.unpack(arg))
  if not ok then
    if errors.is_interrupt(result) then error(result, 0) end
    io.stderr:write("pgtide: ", require("sys").redact(errors.message(result)), "\n")
    if type(result) == "table" and result.traceback then io.stderr:write(result.traceback, "\n") end
    return 1
  end
  return math.type(result) == "integer" and result or 0
end

return M
