--[[
pgtide.pretty: render Lua values for people (REPL, reports).

pretty.format(v) renders nested tables with sorted keys and indentation,
marking cycles; a list of rows (tables with the same string keys, e.g. a
query result) is rendered as aligned columns, in the order given by its
'columns' field when it has one.
]]
local M = {}

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local json_null = require("json").null

local function scalar(v)
  if type(v) == "string" then return (string.format("%q", v):gsub("\\\n", "\\n")) end
  if v == json_null then return "null" end
  if type(v) == "userdata" then
    local ok, s = pcall(tostring, v)
    return ok and s or type(v)
  end
  return tostring(v)
end

-- Is v a non-empty list of flat records sharing string keys?
local function rows_of(v)
  if type(v) ~= "table" or #v == 0 then return nil end
  local cols = v.columns
  if type(cols) == "table" and #cols > 0 then
    local names = {}
    for i, c in ipairs(cols) do names[i] = type(c) == "table" and c.name or tostring(c) end
    return names
  end
  local keys, seen = {}, {}
  for _, row in ipairs(v) do
    if type(row) ~= "table" or getmetatable(row) and getmetatable(row).__tostring then return nil end
    for k, x in pairs(row) do
      if type(k) ~= "string" or type(x) == "table" then return nil end
      if not seen[k] then seen[k] = true; keys[#keys + 1] = k end
    end
  end
  table.sort(keys)
  return #keys > 0 and keys or nil
end

local function cell(x)
  if x == nil then return "" end
  local s = type(x) == "string" and x or scalar(x)
  s = s:gsub("\n", "\\n")
  if #s > 60 then s = s:sub(1, 57) .. "..." end
  return s
end

function M.rows(v, cols)
  local widths, lines = {}, {}
  for i, c in ipairs(cols) do widths[i] = #c end
  for _, row in ipairs(v) do
    for i, c in ipairs(cols) do widths[i] = math.max(widths[i], #cell(row[c])) end
  end
  local function line(vals)
    local parts = {}
    for i, s in ipairs(vals) do parts[i] = s .. string.rep(" ", widths[i] - #s) end
    return (table.concat(parts, " | "):gsub("%s+$", ""))
  end
  lines[1] = line(cols)
  local sep = {}
  for i = 1, #cols do sep[i] = string.rep("-", widths[i]) end
  lines[2] = table.concat(sep, "-+-")
  for _, row in ipairs(v) do
    local vals = {}
    for i, c in ipairs(cols) do vals[i] = cell(row[c]) end
    lines[#lines + 1] = line(vals)
  end
  lines[#lines + 1] = string.format("(%d row%s)", #v, #v == 1 and "" or "s")
  return table.concat(lines, "\n")
end

local function format(v, indent, seen)
  if type(v) ~= "table" then return scalar(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring and not mt.__jsontype then return tostring(v) end
  if seen[v] then return "<cycle>" end
  local cols = rows_of(v)
  if cols then return M.rows(v, cols) end
  seen[v] = true
  local n, keys = #v, {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  if n == 0 and #keys == 0 then seen[v] = nil; return "{}" end
  local pad = string.rep("  ", indent + 1)
  local parts = {}
  for i = 1, n do parts[#parts + 1] = pad .. format(v[i], indent + 1, seen) end
  for _, k in ipairs(keys) do
    local key = is_identifier(k) and k or ("[" .. scalar(k) .. "]")
    parts[#parts + 1] = pad .. key .. " = " .. format(v[k], indent + 1, seen)
  end
  seen[v] = nil
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. string.rep("  ", indent) .. "}"
end

function M.format(v)
  return format(v, 0, {})
end

return M
