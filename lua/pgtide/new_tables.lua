--[[
pgtide.new_tables: tables created on the source while changes stream.

DDL is not replicated, and a publication made FOR TABLE lists its tables,
so a table created after the full load would silently stay behind.  The
local runbook looks for such tables while it streams (find), says so at
once in the log and in `pgtide status`, and adds them (add):

  1. its schema (pg_dump -t: the table, its sequences, indexes, keys and
     triggers; foreign keys are kept for the cutover) is created on the
     target, its user triggers disabled when the target cannot use
     session_replication_role;
  2. the stream stops; the table joins the publication (when pgtide made
     the publication and may alter it; otherwise the table's owner is
     asked to, with the exact statement, and the table is added once it
     is published);
  3. a temporary slot's snapshot gives a position S, and the table is
     copied under that snapshot;
  4. the stream restarts with a sync position for the table: its changes
     in transactions ending at or before S are in the copy and skipped,
     later ones are applied: exactly once, as for a table a resumed full
     load copied again.

  local list = new_tables.find(src, known, scope)   -- { {schema, table, qname, unlogged, owned} }
  local rec = new_tables.add(ctx, t, opts)          -- see add() below; raises step failures
]]
local cdc = require "core.cdc"
local load = require "core.load"
local log = require "log"
local quote = require "pgtide.quote"
local runbook = require "pgtide.runbook"
local schema = require "pgtide.schema"
local sys = require "sys"
local triggers = require "pgtide.triggers"

local M = {}

--[[ find(src, known, scope) -> the tables in scope (plain and partitioned,
  partitions included) that 'known' (a set of "schema.table") lacks, in
  name order.  scope(schema) -> bool. ]]
function M.find(src, known, scope)
  local out = {}
  for _, r in ipairs(src:query([[
      SELECT n.nspname AS schema, c.relname AS table, format('%I.%I', n.nspname, c.relname) AS qname,
             c.relpersistence = 'u' AS unlogged, pg_has_role(c.relowner, 'USAGE') AS owned,
             c.relispartition AS partition
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
         AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtide') AND n.nspname !~ '^pg_'
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                           AND d.objid = c.oid AND d.deptype = 'e')
       ORDER BY 1, 2]])) do
    if not known[r.schema .. "." .. r.table] and (not scope or scope(r.schema)) then out[#out + 1] = r end
  end
  return out
end

-- Is table t published by 'publication' (itself or through an ancestor)?
local function published(src, publication, t)
  return src:query_one([[
    SELECT EXISTS (
      SELECT 1
        FROM (SELECT $2::regclass AS relid UNION ALL SELECT relid FROM pg_partition_ancestors($2::regclass)) a
        JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_publication_tables pt ON pt.schemaname = n.nspname AND pt.tablename = c.relname
       WHERE pt.pubname = $1) AS x]], publication, t.qname).x
end

--[[ add(ctx, t, opts) -> record | nil, why.  opts: publication (name),
  may_alter (pgtide made the publication), triggers ("replica_role" |
  "disabled"), stop() and start() (the stream), dir (for the schema
  files), schema options (no_owner, no_privileges, pg_dump).  Returns nil
  and the reason (with the statement for the owner) when the table is not
  published and pgtide may not publish it; the record otherwise:
  { schema, table, lsn, parts_file, triggers_disabled }. ]]
function M.add(ctx, t, opts)
  local src, dst = ctx.src, ctx.dst
  local is_published = published(src, opts.publication, t)
  if not is_published and not (opts.may_alter and t.owned) then
    return nil, string.format("as the owner of %s, run on the source: ALTER PUBLICATION %s ADD TABLE %s; "
      .. "pgtide copies it once it is published", t.qname, quote.ident(src, opts.publication), t.qname)
  end
  -- 1. the table on the target (unless a previous attempt made it)
  local dir = string.format("%s/%s.%s", opts.dir, t.schema, t.table)
  local parts_file = dir .. "/parts.json"
  local parts = sys.exists(parts_file) and schema.load(parts_file) or nil
  if not parts then
    parts = schema.extract(src, { conninfo = ctx.params.source, dir = dir, extra_args = { "-t", t.qname },
                                  no_owner = opts.no_owner, no_privileges = opts.no_privileges,
                                  pg_dump = opts.pg_dump, target_version = dst:server_version() })
    schema.save(parts, parts_file)
  end
  if not dst:query_one("SELECT to_regclass($1) IS NOT NULL AS x", t.qname).x then
    schema.apply_pre_data(dst, parts)
  end
  schema.apply_indexes(dst, parts)
  schema.apply_rest(dst, parts)
  schema.apply_triggers(dst, parts)
  local disabled = {}
  if opts.triggers == "disabled" then
    disabled = triggers.find(dst, { { schema = t.schema, table = t.table } })
    triggers.disable(dst, disabled)
  end
  -- 2. the stream stops while the table joins the publication and is copied
  opts.stop()
  if not is_published then
    src:exec(string.format("ALTER PUBLICATION %s ADD TABLE %s", quote.ident(src, opts.publication), t.qname))
  end
  -- 3. a position and a snapshot after it; the copy under that snapshot
  local suffix = "_n" .. sys.getpid()
  local slot = cdc.create_slot { source = ctx.params.source, temporary = true,
                                 slot = opts.slot:sub(1, 63 - #suffix) .. suffix }
  local ok, res = pcall(function()
    local units = load.plan { source = ctx.params.source, tables = { t.schema .. "." .. t.table },
                              target_version = dst:server_version() }
    return load.full_load { source = ctx.params.source, target = ctx.params.target, units = units,
                            snapshot = slot.snapshot, jobs = 1, progress = false }
  end)
  local lsn = slot.lsn
  slot:close()
  if not ok then error(res, 0) end
  log.info("new table %s: created on the target and copied (%d rows) at %s; its changes after that "
    .. "stream", t.qname, res.rows, lsn)
  -- 4. the caller records the sync position and restarts the stream
  return { schema = t.schema, table = t.table, lsn = lsn, parts_file = parts_file, triggers_disabled = disabled }
end

-- Foreign keys of the added tables (their schema parts), for the cutover.
function M.parts(records)
  local out = {}
  for _, r in ipairs(records or {}) do out[#out + 1] = schema.load(r.parts_file) end
  return out
end

return M
