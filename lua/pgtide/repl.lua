--[[
pgtide.repl: the environment of `pgtide repl`.

Every module is preloaded as a global (pg, aws, core, json, sys, log,
runbook); with a config file, 'src' and 'dst' connect lazily to the
source and target on first use.  help() lists the helpers; other modules
add theirs with repl.add_helper(name, doc, fn).
]]
local pretty = require "pgtide.pretty"

local M = {}

M.helpers = {}
local order = {}

-- Register a global helper function shown by help().
function M.add_helper(name, doc, fn)
  if not M.helpers[name] then order[#order + 1] = name end
  M.helpers[name] = { doc = doc, fn = fn }
end

local function show(...)
  local n = select("#", ...)
  for i = 1, n do print(pretty.format((select(i, ...)))) end
end

-- Values a helper already printed: the REPL does not echo them again.
local shown = setmetatable({}, { __mode = "k" })

-- repl.shown(v) -> v, marked as already printed (tables only).
function M.shown(v)
  if type(v) == "table" then shown[v] = true end
  return v
end

M.add_helper("help", "help(): this list", function()
  print("pgtide REPL: Lua 5.4 with pgtide's modules.  Helpers:")
  for _, name in ipairs(order) do print(string.format("  %-16s %s", name, M.helpers[name].doc)) end
  print("Modules: pg, aws, core, json, sys, log, runbook (require others by name).")
  print("With -c CONFIG: src and dst are connections to the source and target (opened on first use).")
end)
M.add_helper("show", "show(v, ...): pretty-print values (tables, query results)", show)
M.add_helper("sql", "sql(conn, query, ...): run a query and print its rows", function(conn, q, ...)
  M.print_results(conn:query(q, ...))
end)

local function try_require(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  return nil
end

--[[
M.env(cfg) -> the table used as _ENV by REPL chunks.  Globals assigned in
the REPL live there; reads fall back to helpers, lazy connections,
modules and _G.
]]
function M.env(cfg)
  cfg = cfg or {}
  local conns = {}
  local modules = { pg = "pg", aws = "aws", core = "core", json = "json", sys = "sys", log = "log",
                    runbook = "pgtide.runbook" }
  return setmetatable({ config = cfg }, {
    __index = function(t, k)
      if M.helpers[k] then return M.helpers[k].fn end
      if k == "src" or k == "dst" then
        local key = k == "src" and "source" or "target"
        if not cfg[key] then
          error(string.format("'%s' needs a config with '%s' (pgtide repl -c CONFIG)", k, key), 2)
        end
        if not conns[k] then conns[k] = require("pg").connect(cfg[key], { label = key }) end
        return conns[k]
      end
      if modules[k] then
        local m = try_require(modules[k])
        if m then rawset(t, k, m); return m end
      end
      return _G[k]
    end,
  })
end

-- Is v the column list conn:query returns next to its rows?
local function is_columns(v)
  return type(v) == "table" and #v > 0 and type(v[1]) == "table" and
    v[1].name ~= nil and v[1].type_oid ~= nil
end

-- Is v one row (string keys only) rather than a list of rows?
local function is_row(v)
  if type(v) ~= "table" or v[1] ~= nil then return false end
  return next(v) ~= nil
end

--[[ Print a chunk's results.  rows, columns (what conn:query returns)
  print as one table in the query's column order; row, columns (what
  conn:query_one returns) as a table of that one row; nil, columns (no
  row) as "(no row)".  Values a helper printed itself (repl.shown) are not
  printed again. ]]
function M.print_results(...)
  local n, i = select("#", ...), 1
  while i <= n do
    local v, nextv = (select(i, ...)), (i < n and select(i + 1, ...) or nil)
    if is_columns(nextv) and (v == nil or type(v) == "table") then
      local names = {}
      for k, c in ipairs(nextv) do names[k] = c.name end
      if v == nil then
        print("(no row)")
      else
        print(pretty.rows(is_row(v) and { v } or v, names))
      end
      i = i + 2
    elseif type(v) == "table" and shown[v] then
      i = i + 1
    else
      print(pretty.format(v))
      i = i + 1
    end
  end
end

return M
