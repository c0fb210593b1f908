--[[
pgtide.local_schema: the source's schema on the target in a `local`
migration, around pgtide.schema (which extracts, splits and applies
pg_dump's output): whether a run already applied the pre-data, the
post-data built in parallel (indexes and keys largest table first,
foreign keys NOT VALID then validated), and the target's user triggers
kept from firing for copied or replicated rows when the target cannot
use session_replication_role (pgtide.apply_plan).

  local_schema.pre_data_present(ctx)       -- true / false / step failure
  local_schema.post_data(ctx)              -- the post-data step
  local_schema.apply_foreign_keys(ctx, parts)
  local_schema.disable_triggers(ctx)       -- records them in ctx.out.triggers_disabled
  local_schema.disabled_triggers(ctx)      -- every trigger the run disabled

Each raises a step failure (runbook.fail) or the pg error.
]]
local runbook = require "pgtide.runbook"
local schema = require "pgtide.schema"
local catalog = require "pgtide.catalog"
local apply_plan = require "pgtide.apply_plan"
local triggers = require "pgtide.triggers"
local scope = require "pgtide.local_scope"
local local_load = require "pgtide.local_load"
local log = require "log"

local M = {}

--[[ Is the source's pre-data already on the target?  true when it all
  is (a run applied it and stopped before recording it); false when none
  of the source's tables exists there; otherwise raises a step failure
  saying what is there and how to start over. ]]
function M.pre_data_present(ctx)
  local names = {}
  for _, t in ipairs(catalog.tables(ctx.src, scope.filter(ctx))) do names[#names + 1] = t.qname end
  if #names == 0 then return false end
  local there = ctx.dst:query([[SELECT n FROM unnest($1::text[]) n WHERE to_regclass(n) IS NOT NULL]], names)
  if #there == 0 then return false end
  local r = schema.verify(ctx.src, ctx.dst, { schemas = ctx.params.schemas,
    exclude_schemas = ctx.params.exclude_schemas, phase = "pre-data", quiet = true,
    deferred_views = ctx.out.parts_file and schema.deferred_views(schema.load(ctx.out.parts_file)) or nil })
  if r.ok then return true end
  local shown = {}
  for i, t in ipairs(there) do if i <= 5 then shown[#shown + 1] = t.n end end
  runbook.fail("the target already holds %d of the source's %d tables (%s%s) but not the source's "
    .. "pre-data schema as a whole (%d difference(s), e.g. %s): it was not made by this migration. "
    .. "Migrate into an empty database: drop those objects or create a new database, then run again "
    .. "(docs/troubleshooting.md, \"Starting over\")", #there, #names, table.concat(shown, ", "),
    #there > 5 and ", ..." or "", #r.differences, catalog.format_difference(r.differences[1]))
end

--[[ Without session_replication_role, keep the target's user triggers
  from firing for replicated rows: disable them on the migrated tables
  (pgtide.triggers) and record the list in this step's outputs, once. ]]
function M.disable_triggers(ctx)
  if ctx.out.triggers then return end
  local plan = apply_plan.for_run(ctx)
  if plan.triggers == "replica_role" then
    ctx.out.triggers = "replica_role"
  else
    -- the list first: a rerun after a crash disables (and the cutover enables) the same ones
    if not ctx.out.triggers_disabled then
      ctx.out.triggers_disabled = triggers.find(ctx.dst, scope.target_tables(ctx))
      ctx:save()
    end
    triggers.disable(ctx.dst, ctx.out.triggers_disabled)
    runbook.crash_point(ctx.step.name .. ":triggers")
    ctx.out.triggers = "disabled"
    log.info("%s: %d user trigger(s) on the migrated tables disabled until %s (%s)", ctx.step.name,
      #ctx.out.triggers_disabled, ctx.params.cdc and "cutover" or "the load is done", plan.triggers_why)
  end
  ctx:save()
end

-- Total size of each table named in 'names' (qualified, quoted) on the
-- target, to start the longest index builds first.
local function sizes(conn, names)
  local out = {}
  local list = {}
  for n in pairs(names) do list[#list + 1] = n end
  if #list == 0 then return out end
  for _, r in ipairs(conn:query([[
      SELECT n AS name, coalesce(pg_table_size(to_regclass(n)), 0)::int8 AS bytes
        FROM unnest($1::text[]) n]], list)) do
    out[r.name] = r.bytes
  end
  return out
end

--[[ Foreign keys referencing a partitioned table cannot take the NOT VALID
  route on PostgreSQL 15: VALIDATE CONSTRAINT marks the parent key valid
  but leaves the per-partition clones NOT VALID.  Those keys are added
  validated instead (and one left half-valid by an earlier run is
  dropped and added again).  Returns a copy of parts with the change. ]]
local function fix_partitioned_fks(ctx, parts)
  local rows = ctx.dst:query([[
    SELECT quote_ident(n.nspname) || '.' || quote_ident(t.relname) || ' ' || c.conname AS name,
           quote_ident(n.nspname) || '.' || quote_ident(t.relname) AS qtable,
           quote_ident(c.conname) AS qname,
           EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conparentid = c.oid
                     AND NOT k.convalidated) AS half_valid
      FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
      JOIN pg_namespace n ON n.oid = t.relnamespace
      JOIN pg_class r ON r.oid = c.confrelid
     WHERE c.contype = 'f' AND r.relkind = 'p' AND c.conparentid = 0]])
  local on_target = {}
  for _, r in ipairs(rows) do on_target[r.name] = r end
  local refs_partitioned = {}
  for _, r in ipairs(ctx.src:query([[
      SELECT quote_ident(n.nspname) || '.' || quote_ident(t.relname) || ' ' || c.conname AS name
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_class r ON r.oid = c.confrelid
       WHERE c.contype = 'f' AND r.relkind = 'p' AND c.conparentid = 0]])) do
    refs_partitioned[r.name] = true
  end
  local copy = {}
  for k, v in pairs(parts) do copy[k] = v end
  copy.foreign_keys = {}
  for _, fk in ipairs(parts.foreign_keys or {}) do
    local name = fk.name
    if refs_partitioned[name] and fk.validate then
      local t = on_target[name]
      if t and t.half_valid then
        log.info("post-data: re-adding %s validated (it references a partitioned table)", name)
        ctx.dst:exec(string.format("ALTER TABLE %s DROP CONSTRAINT %s", t.qtable, t.qname))
      end
      local s, e = fk.add:find(" NOT VALID;", 1, true)
      fk = { name = fk.name, table = fk.table, check = fk.check,
             add = s and (fk.add:sub(1, s - 1) .. ";" .. fk.add:sub(e + 1)) or fk.add }
    end
    copy.foreign_keys[#copy.foreign_keys + 1] = fk
  end
  return copy
end

-- Foreign keys: added NOT VALID (cheap), then validated in parallel.
function M.apply_foreign_keys(ctx, parts)
  parts = fix_partitioned_fks(ctx, parts)
  schema.apply_foreign_keys(ctx.dst, parts, { validate = false })
  local validate = {}
  for _, fk in ipairs(parts.foreign_keys) do
    if fk.validate then validate[#validate + 1] = fk.validate end
  end
  local_load.parallel(ctx, "validate foreign keys", validate, parts.session_sql)
end

--[[ The post-data step: indexes and keys an earlier run did not build, in
  parallel, largest table first; the rest of post-data; foreign keys
  (deferred to the cutover with CDC); triggers (disabled again with CDC
  when the plan says so, enabled after a schema-first load without);
  materialized views refreshed. ]]
function M.post_data(ctx)
  local parts = scope.parts_of(ctx)
  -- indexes and keys: skip the ones an earlier run built
  local todo, tables = {}, {}
  for _, u in ipairs(parts.indexes or {}) do
    if not (u.check and ctx.dst:query_one(u.check)) then
      todo[#todo + 1] = u
      if u.table then tables[u.table] = true end
    end
  end
  local size = sizes(ctx.dst, tables)
  table.sort(todo, function(a, b)
    local x, y = size[a.table] or 0, size[b.table] or 0
    if x ~= y then return x > y end
    return a.name < b.name
  end)
  local statements = {}
  for i, u in ipairs(todo) do statements[i] = u.sql end
  local_load.parallel(ctx, "indexes and keys", statements, parts.session_sql)
  runbook.crash_point("post-data:indexes")
  schema.apply_attach(ctx.dst, parts)
  schema.apply_rest(ctx.dst, parts)
  if not ctx.params.cdc then
    M.apply_foreign_keys(ctx, parts)
    ctx.out.foreign_keys = #parts.foreign_keys
  else
    ctx.out.foreign_keys_deferred = #parts.foreign_keys
    log.info("post-data: %d foreign keys deferred to the cutover", #parts.foreign_keys)
  end
  schema.apply_triggers(ctx.dst, parts)
  if ctx.params.cdc then
    M.disable_triggers(ctx)
  else
    -- schema-first: the schema step disabled them for the load; the load is done
    triggers.enable(ctx.dst, (ctx.outputs.schema or {}).triggers_disabled)
  end
  schema.apply_refresh(ctx.dst, parts)
end

-- The triggers pgtide disabled on the target (schema-first: in the
-- schema step; otherwise after post-data).
function M.disabled_triggers(ctx)
  local out = {}
  for _, name in ipairs { "schema", "post-data" } do
    for _, t in ipairs((ctx.outputs[name] or {}).triggers_disabled or {}) do out[#out + 1] = t end
  end
  for _, a in ipairs((ctx.outputs.stream or {}).added or {}) do
    for _, t in ipairs(a.triggers_disabled or {}) do out[#out + 1] = t end
  end
  return out
end

return M
