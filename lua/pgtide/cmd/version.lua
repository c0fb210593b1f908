-- pgtide version
local sys = require "sys"

local M = { summary = "print version information", usage = "pgtide version" }

function M.run()
  local parts = { "pgtide " .. sys.version(), _VERSION }
  local ok, pg = pcall(require, "pg")
  if ok and pg.libpq_version then parts[#parts + 1] = "libpq " .. pg.libpq_version() end
  print(table.concat(parts, ", "))
  return 0
end

return M
