--[[
pgtide.names: the names a migration gives what it makes on the source.

  local names = require "pgtide.names"
  names.of("orders")   --> { slot = "pgtide_orders", publication = "pgtide_orders" }

The progress record on the target carries the source's identity as well
(pgtide.apply_plan.record_name).
]]
local util = require "pgtide.util"

local M = {}

--[[
of(migration) -> { slot, publication }: "pgtide_<name>" in the
characters slot names allow (lower-case letters, digits, '_'), at most
63 bytes.  When the name had to be changed to fit, a hash of the
original is appended, so "a-b" and "a_b" never share a slot.
]]
function M.of(name)
  local clean = tostring(name):lower():gsub("[^a-z0-9_]", "_")
  local base = "pgtide_" .. clean
  if clean ~= name or #base > 63 then
    base = base:sub(1, 63 - 7) .. "_" .. util.fnv32(name):sub(1, 6)
  end
  return { slot = base, publication = base }
end

return M
