--[[
pgtide.local_scope: the tables a `local` migration covers, as its
parameters (schemas, exclude_schemas, unlogged) and its state (the full
load's units, the tables added while streaming) define them.  Shared by
the local runbook's steps and the engine modules behind them
(pgtide.local_load, local_resume, local_schema, local_stream,
local_cutover).  ctx is the runbook context; functions reading the state
raise a step failure (runbook.require) when the step that records it has
not run.

  scope.jobs(ctx)               -- parallel connections (jobs=0: the cores)
  scope.filter(ctx)             -- { schemas, exclude_schemas } for catalog and pg_dump
  scope.scope_fn(ctx)           -- function(schema) -> in scope?
  scope.unlogged_set(ctx)       -- set of the source's unlogged "schema.table"
  scope.table_scope(ctx)        -- only, skip: "schema.table" lists for the planner
  scope.parts_of(ctx)           -- the schema step's split pg_dump (pgtide.schema)
  scope.unit_tables(ctx)        -- the loaded tables { schema, table, qname, unlogged }
  scope.validation_groups(ctx, skip_unlogged) / validation_names / validation_tables(ctx)
  scope.target_tables(ctx)      -- the migrated tables on the target
  scope.known_tables(ctx)       -- set of the tables this migration streams
]]
local runbook = require "pgtide.runbook"
local schema = require "pgtide.schema"
local load = require "core.load"

local M = {}

-- The number of parallel connections: jobs, or the number of cores.
local function jobs(ctx)
  local j = ctx.params.jobs
  return (j and j > 0) and j or load.ncpus()
end

-- The schema filter for catalog functions and pg_dump.
local function filter(ctx)
  return { schemas = ctx.params.schemas, exclude_schemas = ctx.params.exclude_schemas }
end

-- Unlogged tables on the source, as a set of "schema.table".
local function unlogged_set(ctx)
  local out = {}
  for _, r in ipairs(ctx.src:query([[SELECT n.nspname || '.' || c.relname AS k FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind = 'r']])) do
    out[r.k] = true
  end
  return out
end

-- Tables to load as "schema.table" lists (nil: all) for the planner;
-- unlogged=skip leaves the unlogged tables out.
local function table_scope(ctx)
  local f = filter(ctx)
  local skip_unlogged = {}
  if ctx.params.unlogged == "skip" then
    for k in pairs(unlogged_set(ctx)) do skip_unlogged[#skip_unlogged + 1] = k end
  end
  if not f.schemas and not f.exclude_schemas then
    return nil, #skip_unlogged > 0 and skip_unlogged or nil
  end
  local function names(list)
    local out = {}
    for _, r in ipairs(ctx.src:query([[
        SELECT n.nspname || '.' || c.relname AS name FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY ($1::text[])]], list)) do
      out[#out + 1] = r.name
    end
    return out
  end
  local skip = f.exclude_schemas and names(f.exclude_schemas) or nil
  if #skip_unlogged > 0 then
    skip = skip or {}
    for _, k in ipairs(skip_unlogged) do skip[#skip + 1] = k end
  end
  return f.schemas and names(f.schemas) or nil, skip
end

-- A function(schema, table) -> bool for modules taking a scope.
local function scope_fn(ctx)
  local only, skip = {}, {}
  for _, s in ipairs(ctx.params.schemas or {}) do only[s] = true end
  for _, s in ipairs(ctx.params.exclude_schemas or {}) do skip[s] = true end
  local any = next(only) ~= nil
  return function(schema_name)
    if skip[schema_name] then return false end
    return not any or only[schema_name] == true
  end
end

-- The schema step's split pg_dump (pgtide.schema).
local function parts_of(ctx)
  local out = ctx.outputs.schema
  runbook.require(out and out.parts_file, "the schema step has not run: run it first (--from schema)")
  return schema.load(out.parts_file)
end

-- The loaded tables, once each, as { schema, table, qname, unlogged }
-- (qname quoted for SQL), sorted by name.
local function unit_tables(ctx)
  local fl = ctx.outputs["full-load"]
  runbook.require(fl and fl.units, "the full-load step has not run")
  local unlogged = unlogged_set(ctx)
  local seen, list = {}, {}
  for _, u in ipairs(fl.units) do
    local k = u.schema .. "." .. u.table
    if not seen[k] then
      seen[k] = true
      list[#list + 1] = { schema = u.schema, table = u.table, unlogged = unlogged[k] or nil,
                          qname = ctx.src:quote_ident(u.schema) .. "." .. ctx.src:quote_ident(u.table) }
    end
  end
  table.sort(list, function(a, b) return a.schema .. "." .. a.table < b.schema .. "." .. b.table end)
  return list
end

-- The loaded tables as validation compares them: partitions through their
-- root (a partitioned table is compared as a whole), as { name = quoted
-- "schema.table", tables = { { schema =, table = }, ... the loaded ones } },
-- sorted by name.  skip_unlogged: without the unlogged tables (their
-- changes do not stream; the cutover copies them again).
local function validation_groups(ctx, skip_unlogged)
  local schemas, tables = {}, {}
  for _, t in ipairs(unit_tables(ctx)) do
    if not (skip_unlogged and t.unlogged) then schemas[#schemas + 1], tables[#tables + 1] = t.schema, t.table end
  end
  local out, by = {}, {}
  for _, r in ipairs(ctx.src:query([[
      SELECT format('%I.%I', rn.nspname, r.relname) AS q, x.s, x.t
        FROM unnest($1::text[], $2::text[]) AS x (s, t)
        JOIN pg_namespace n ON n.nspname = x.s
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.t
        JOIN pg_class r ON r.oid = coalesce(pg_partition_root(c.oid), c.oid)
        JOIN pg_namespace rn ON rn.oid = r.relnamespace
       ORDER BY 1, 2, 3]], schemas, tables)) do
    local g = by[r.q]
    if not g then
      g = { name = r.q, tables = {} }
      by[r.q] = g
      out[#out + 1] = g
    end
    g.tables[#g.tables + 1] = { schema = r.s, table = r.t }
  end
  return out
end

-- The names alone (see validation_groups).
local function validation_names(ctx, skip_unlogged)
  local out = {}
  for _, g in ipairs(validation_groups(ctx, skip_unlogged)) do out[#out + 1] = g.name end
  return out
end

-- The table list for the final validation: nil (every table, and the
-- whole schema compared) unless the migration is limited to some schemas
-- or leaves the unlogged tables out (unlogged=skip: their data is not
-- copied).
local function validation_tables(ctx)
  local skip = ctx.params.unlogged == "skip" and next(unlogged_set(ctx)) ~= nil
  if not ctx.params.schemas and not ctx.params.exclude_schemas and not skip then return nil end
  return validation_names(ctx)
end

-- The migrated tables on the target, partitioned roots included, as
-- { schema, table } (the target held none of them before the migration).
local function target_tables(ctx)
  local f = filter(ctx)
  return ctx.dst:query([[
    SELECT n.nspname AS schema, c.relname AS table
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtide') AND n.nspname !~ '^pg_'
       AND ($1::text[] IS NULL OR n.nspname = ANY ($1::text[]))
       AND ($2::text[] IS NULL OR NOT n.nspname = ANY ($2::text[]))
     ORDER BY 1, 2]], f.schemas, f.exclude_schemas)
end

-- The tables this migration streams, as a set of "schema.table".
local function known_tables(ctx)
  local known = {}
  for _, u in ipairs((ctx.outputs["full-load"] or {}).units or {}) do known[u.schema .. "." .. u.table] = true end
  for _, t in ipairs((ctx.outputs.stream or {}).added or {}) do known[t.schema .. "." .. t.table] = true end
  -- partitioned roots: their leaves are the units
  for _, r in ipairs(ctx.src:query([[
      SELECT DISTINCT rn.nspname || '.' || r.relname AS k
        FROM unnest($1::text[]) AS x (q) JOIN pg_class c ON c.oid = to_regclass(x.q)
        JOIN pg_class r ON r.oid = pg_partition_root(c.oid) JOIN pg_namespace rn ON rn.oid = r.relnamespace]],
      (function() local l = {} for k in pairs(known) do l[#l + 1] = k end return l end)())) do
    known[r.k] = true
  end
  return known
end

M.jobs = jobs
M.filter = filter
M.unlogged_set = unlogged_set
M.table_scope = table_scope
M.scope_fn = scope_fn
M.parts_of = parts_of
M.unit_tables = unit_tables
M.validation_groups = validation_groups
M.validation_names = validation_names
M.validation_tables = validation_tables
M.target_tables = target_tables
M.known_tables = known_tables

return M
