-- pgtide.util: small helpers shared by the engine, commands and runbooks.
local json = require "json"

local M = {}

-- Levenshtein distance between two strings (for "did you mean" hints).
function M.distance(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = (ca == b:byte(j)) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end

-- The candidate closest to 'name', or nil when none is reasonably close.
function M.closest(name, candidates)
  local best, bestd
  for _, c in ipairs(candidates) do
    local d = M.distance(name:lower(), c:lower())
    if not bestd or d < bestd then best, bestd = c, d end
  end
  if best and bestd <= math.max(2, #name // 3) then return best end
  return nil
end

-- { "a", "b" } -> { a = true, b = true }; nil stays nil.
function M.set(list)
  if list == nil then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

function M.split(s, sep)
  local out = {}
  sep = sep or ","
  for part in (s .. sep):gmatch("(.-)" .. sep:gsub("%p", "%%%0")) do
    part = part:match("^%s*(.-)%s*$")
    if part ~= "" then out[#out + 1] = part end
  end
  return out
end

function M.trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- Deep equality of plain values (tables compared key by key; metatables
-- ignored).
function M.deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not M.deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- A value from json.decode as plain Lua data: json.null becomes nil and
-- tables lose json's array mark (a new table at every level).
function M.plain(v)
  if v == json.null then return nil end
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = M.plain(x) end
  return t
end

function M.copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = M.copy(v) end
  return setmetatable(c, getmetatable(t))
end

-- Quote a word for a POSIX shell.
function M.shell_quote(s)
  s = tostring(s)
  if s:match("^[%w%-%._/:=@,+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.format_bytes(n)
  n = tonumber(n) or 0
  local units = { "B", "kB", "MB", "GB", "TB" }
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  if i == 1 then return string.format("%d B", n) end
  return string.format("%.1f %s", n, units[i])
end

function M.format_duration(s)
  s = tonumber(s) or 0
  if s < 1 then return string.format("%d ms", math.floor(s * 1000 + 0.5)) end
  if s < 60 then return string.format("%.1f s", s) end
  if s < 3600 then return string.format("%dm%02ds", s // 60, math.floor(s % 60)) end
  return string.format("%dh%02dm", s // 3600, math.floor(s % 3600) // 60)
end

-- FNV-1a 32-bit hash of s, as 8 hex digits (short stable names, not security).
function M.fnv32(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return string.format("%08x", h)
end

-- 8 random hex digits from /dev/urandom (request ids, sentinel tokens).
function M.random_hex()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(4)
  if f then f:close() end
  if not b then b = tostring(os.clock()):sub(-4) .. tostring(os.time()):sub(-4) end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end)):sub(1, 8)
end

-- ISO-8601 UTC timestamp for state files and reports.
function M.now_iso(t)
  t = t or os.time()
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

return M
