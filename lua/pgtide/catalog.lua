-- pgtide.catalog: what a database contains, read from pg_catalog.
--
-- Every function takes an open pg connection and an optional filter and
-- returns plain Lua tables (no metatables), in a deterministic order
-- (schema, then object name, byte order), so two servers holding the same
-- schema give equal descriptions apart from OIDs, owners and sizes (which
-- compare() ignores).  Names are never
-- quoted; SQL-ready qualified names are in the 'qname' fields.  System
-- schemas (pg_catalog, information_schema, pg_toast, pg_temp_*) and
-- objects that belong to an extension (hstore's functions, ...) are left
-- out: CREATE EXTENSION recreates those.
--
-- Filter (every function):  { schemas = {"app", ...}  -- only these
--                             exclude_schemas = {...} }  -- minus these
--
-- While a function runs, search_path is pg_catalog, so every type and
-- name in definitions is schema-qualified (stable across servers); the
-- caller's search_path is restored afterwards.
--
-- The field-by-field description of every result is in docs/lua-api-pg.md.
local json = require "json"
local util = require "pgtide.util"

local M = {}

-- {==================================================================
-- Helpers
-- ===================================================================

-- A JSON column (json_agg...) as plain tables, nil for SQL NULL.
local function decode(text)
  if text == nil then return nil end
  return util.plain(json.decode(text))
end

-- The schema filter as SQL over namespace alias 'n', parameters $1
-- (include list or NULL) and $2 (exclude list).  The schema pgtide holds
-- pgtide's own bookkeeping on a target (the CDC progress table, see
-- pgtide.apply_plan): never part of what is migrated or compared.
local SCHEMA_FILTER = [[
  n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' AND n.nspname <> 'pgtide'
  AND ($1::text[] IS NULL OR n.nspname = ANY ($1::text[]))
  AND NOT (n.nspname = ANY (coalesce($2::text[], '{}'::text[])))]]

-- SQL true when the object (catalog, oid expression) is a member of an
-- extension.
local function ext_member(catalog, oid)
  return string.format([[EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
    WHERE d.classid = 'pg_catalog.%s'::pg_catalog.regclass AND d.objid = %s AND d.deptype = 'e')]],
    catalog, oid)
end

local function filter_args(filter)
  filter = filter or {}
  local inc = filter.schemas
  if type(inc) == "string" then inc = { inc } end
  local exc = filter.exclude_schemas
  if type(exc) == "string" then exc = { exc } end
  return inc, exc or {}
end

-- Run fn() with search_path = pg_catalog, restoring the caller's value.
local function with_catalog_path(conn, fn)
  local old = conn:query_one("SELECT pg_catalog.current_setting('search_path') AS p").p
  conn:exec("SELECT pg_catalog.set_config('search_path', 'pg_catalog', false)")
  local ok, res = pcall(fn)
  pcall(conn.exec, conn, "SELECT pg_catalog.set_config('search_path', $1, false)", old)
  if not ok then error(res, 0) end
  return res
end

local function run(conn, filter, sql, ...)
  local inc, exc = filter_args(filter)
  return (conn:query(sql, inc, exc, ...))
end

-- Public wrapper: a catalog function runs under the catalog search_path
-- unless called from another catalog function (nesting is cheap: the
-- flag avoids resetting the path repeatedly).
local active = setmetatable({}, { __mode = "k" })
local function api(fn)
  return function(conn, filter, ...)
    if active[conn] then return fn(conn, filter, ...) end
    active[conn] = true
    local args = table.pack(...)
    local ok, res = pcall(with_catalog_path, conn, function()
      return fn(conn, filter, table.unpack(args, 1, args.n))
    end)
    active[conn] = nil
    if not ok then error(res, 0) end
    return res
  end
end

-- An identifier quoted when it needs it (pgtide.quote.name).
local quote_ident = require("pgtide.quote").name
M.quote_ident = quote_ident

-- "schema.name", each part quoted when it needs it.
local function qname(schema, name)
  return quote_ident(schema) .. "." .. quote_ident(name)
end
M.qname = qname

-- }==================================================================


-- {==================================================================
-- Schemas and extensions
-- ===================================================================

-- schemas -> { {name, owner, extension (set when an extension created it),
-- comment}, ... }
M.schemas = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS name, pg_get_userbyid(n.nspowner) AS owner,
           (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
             WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
               AND d.deptype = 'e' LIMIT 1) AS extension,
           obj_description(n.oid, 'pg_namespace') AS comment
      FROM pg_namespace n
     WHERE ]] .. SCHEMA_FILTER .. [[
     ORDER BY n.nspname]])
  return rows
end)

-- extensions -> { {name, version, schema, relocatable}, ... }: every
-- extension of the database (the schema filter does not apply).
M.extensions = api(function(conn)
  return (conn:query([[
    SELECT e.extname AS name, e.extversion AS version, n.nspname AS schema,
           e.extrelocatable AS relocatable
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     ORDER BY e.extname]]))
end)

-- large_objects -> number of large objects (pg_largeobject_metadata).
M.large_objects = api(function(conn)
  return conn:query_one("SELECT count(*) AS n FROM pg_largeobject_metadata").n
end)

-- }==================================================================


-- {==================================================================
-- Tables and columns
-- ===================================================================

local COLUMNS_SQL = [[
  SELECT n.nspname AS schema, c.relname AS table, a.attname AS name,
         format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
         CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END AS default,
         CASE WHEN a.attgenerated = 's' THEN pg_get_expr(ad.adbin, ad.adrelid) END AS generated,
         CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END AS identity,
         CASE WHEN a.attcollation <> t.typcollation THEN co.collname END AS collation,
         NOT a.attislocal AS inherited,
         col_description(c.oid, a.attnum) AS comment
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
   WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f')
     AND ]] .. SCHEMA_FILTER .. [[
     AND NOT ]] .. ext_member("pg_class", "c.oid") .. [[
   ORDER BY n.nspname, c.relname, a.attnum]]

local TABLES_SQL = [[
  SELECT n.nspname AS schema, c.relname AS name, c.oid::int8 AS oid,
         CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                        WHEN 'f' THEN 'foreign table' END AS kind,
         CASE c.relpersistence WHEN 'u' THEN 'unlogged' ELSE 'permanent' END AS persistence,
         c.relispartition AS is_partition,
         pn.nspname AS parent_schema, pc.relname AS parent_name,
         CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS partition_bound,
         CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
         (SELECT json_agg(json_build_object('schema', inn.nspname, 'name', ic.relname)
                          ORDER BY i.inhseqno)
            FROM pg_inherits i JOIN pg_class ic ON ic.oid = i.inhparent
            JOIN pg_namespace inn ON inn.oid = ic.relnamespace
           WHERE i.inhrelid = c.oid AND NOT c.relispartition)::text AS inherits,
         c.relpages::int8 AS relpages, c.reltuples::float8 AS reltuples,
         pg_total_relation_size(c.oid) AS total_bytes, pg_relation_size(c.oid) AS table_bytes,
         CASE c.relreplident WHEN 'd' THEN 'default' WHEN 'n' THEN 'nothing'
                             WHEN 'f' THEN 'full' WHEN 'i' THEN 'index' END AS replica_identity,
         (SELECT ri.relname FROM pg_index x JOIN pg_class ri ON ri.oid = x.indexrelid
           WHERE x.indrelid = c.oid AND x.indisreplident) AS replica_identity_index,
         c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced,
         am.amname AS access_method, array_to_json(c.reloptions)::text AS options,
         ts.spcname AS tablespace, obj_description(c.oid, 'pg_class') AS comment
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_inherits pi ON pi.inhrelid = c.oid AND c.relispartition
    LEFT JOIN pg_class pc ON pc.oid = pi.inhparent
    LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace
    LEFT JOIN pg_am am ON am.oid = c.relam
    LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
   WHERE c.relkind IN ('r', 'p', 'f')
     AND ]] .. SCHEMA_FILTER .. [[
     AND NOT ]] .. ext_member("pg_class", "c.oid") .. [[
   ORDER BY n.nspname, c.relname]]

local function key(...) return table.concat({ ... }, ".") end

-- columns -> { {schema, table, name, position, type, not_null, default,
-- generated, identity, collation, inherited, comment}, ... }
M.columns = api(function(conn, filter)
  local rows = run(conn, filter, COLUMNS_SQL)
  local pos, last = 0, nil
  for _, r in ipairs(rows) do
    local k = key(r.schema, r.table)
    pos = (k == last) and pos + 1 or 1
    last = k
    r.position = pos  -- ordinal among live columns (attnum counts dropped ones)
  end
  return rows
end)

-- tables -> list of tables, partitioned parents and leaves included (see
-- docs/lua-api-pg.md for every field).  Each table carries its columns,
-- primary_key, unique_keys, policies, partitions (children) and, for a
-- partitioned parent, leaves plus sizes summed over them.
M.tables = api(function(conn, filter)
  local rows = run(conn, filter, TABLES_SQL)
  local byname = {}
  for _, t in ipairs(rows) do
    t.qname = qname(t.schema, t.name)
    t.inherits = decode(t.inherits)
    t.options = decode(t.options)
    if t.reltuples and t.reltuples < 0 then t.reltuples = nil end  -- never analyzed
    t.rows_estimate = t.reltuples and math.floor(t.reltuples + 0.5) or nil
    t.columns, t.unique_keys, t.policies, t.partitions = {}, {}, {}, {}
    t.generated_columns, t.identity_columns = {}, {}
    if t.parent_schema then
      t.partition_of = { schema = t.parent_schema, name = t.parent_name }
    end
    t.parent_schema, t.parent_name = nil, nil
    byname[key(t.schema, t.name)] = t
  end
  for _, col in ipairs(M.columns(conn, filter)) do
    local t = byname[key(col.schema, col.table)]
    if t then
      t.columns[#t.columns + 1] = col
      if col.generated then t.generated_columns[#t.generated_columns + 1] = col.name end
      if col.identity then t.identity_columns[#t.identity_columns + 1] = col.name end
    end
  end
  for _, k in ipairs(M.keys(conn, filter)) do
    local t = byname[key(k.schema, k.table)]
    if t then
      local entry = { name = k.name, columns = k.columns, deferrable = k.deferrable }
      if k.type == "primary key" then t.primary_key = entry
      else t.unique_keys[#t.unique_keys + 1] = entry end
    end
  end
  for _, p in ipairs(M.policies(conn, filter)) do
    local t = byname[key(p.schema, p.table)]
    if t then t.policies[#t.policies + 1] = p end
  end
  for _, t in ipairs(rows) do
    local parent = t.partition_of and byname[key(t.partition_of.schema, t.partition_of.name)]
    if parent then parent.partitions[#parent.partitions + 1] = { schema = t.schema, name = t.name } end
  end
  -- leaves and summed sizes for partitioned parents (recursively)
  local function leaves(t, acc)
    for _, p in ipairs(t.partitions) do
      local child = byname[key(p.schema, p.name)]
      if child.kind == "partitioned table" then leaves(child, acc)
      else acc[#acc + 1] = child end
    end
    return acc
  end
  for _, t in ipairs(rows) do
    if t.kind == "partitioned table" then
      t.leaves = {}
      local bytes, est = 0, 0
      for _, leaf in ipairs(leaves(t, {})) do
        t.leaves[#t.leaves + 1] = { schema = leaf.schema, name = leaf.name }
        bytes = bytes + leaf.total_bytes
        est = est + (leaf.rows_estimate or 0)
      end
      t.leaves_total_bytes, t.leaves_rows_estimate = bytes, est
    end
    t.has_primary_key = t.primary_key ~= nil
  end
  return rows
end)

-- The entries of tables_without_pk for a list from M.tables.
local function without_pk(tables)
  local out = {}
  for _, t in ipairs(tables) do
    if not t.primary_key and t.kind == "table" then
      out[#out + 1] = { schema = t.schema, name = t.name, qname = t.qname, kind = t.kind,
                        replica_identity = t.replica_identity, unique_keys = t.unique_keys,
                        rows_estimate = t.rows_estimate, total_bytes = t.total_bytes }
    end
  end
  return out
end

-- tables_without_pk -> { {schema, name, qname, kind, replica_identity,
-- unique_keys, rows_estimate, total_bytes}, ... }: tables holding data
-- (not partitioned parents) that have no primary key; CDC needs a
-- replica identity for them.
M.tables_without_pk = api(function(conn, filter)
  return without_pk(M.tables(conn, filter))
end)

-- }==================================================================


-- {==================================================================
-- Constraints, keys, indexes
-- ===================================================================

local CONTYPES = {
  p = "primary key", u = "unique", f = "foreign key", c = "check", x = "exclusion", t = "trigger",
}
local FK_ACTIONS = { a = "no action", r = "restrict", c = "cascade", n = "set null", d = "set default" }

-- constraints -> { {schema, table, name, type, definition, validated,
-- deferrable, deferred, columns, index, references, on_update,
-- on_delete, inherited, partition_clone, no_inherit}, ... }: table
-- constraints (domain constraints are under types).  NOT NULL, which
-- PostgreSQL 18 also keeps as constraints, is the columns' not_null.
M.constraints = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS schema, c.relname AS table, con.conname AS name, con.contype,
           pg_get_constraintdef(con.oid) AS definition, con.convalidated AS validated,
           con.condeferrable AS deferrable, con.condeferred AS deferred,
           (SELECT json_agg(a.attname ORDER BY k.ord)
              FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum)::text AS columns,
           ic.relname AS index,
           fn.nspname AS ref_schema, fc.relname AS ref_table,
           (SELECT json_agg(a.attname ORDER BY k.ord)
              FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum)::text AS ref_columns,
           con.confupdtype, con.confdeltype,
           NOT con.conislocal AS inherited, con.conparentid <> 0 AS partition_clone,
           con.connoinherit AS no_inherit
      FROM pg_constraint con
      JOIN pg_class c ON c.oid = con.conrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_class ic ON ic.oid = con.conindid AND con.contype IN ('p', 'u', 'x')
      LEFT JOIN pg_class fc ON fc.oid = con.confrelid
      LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
     WHERE con.conrelid <> 0 AND con.contype <> 'n' AND ]] .. SCHEMA_FILTER .. [[
       AND NOT ]] .. ext_member("pg_class", "c.oid") .. [[
     ORDER BY n.nspname, c.relname, con.conname]])
  for _, r in ipairs(rows) do
    r.type = CONTYPES[r.contype] or r.contype
    r.columns = decode(r.columns) or {}
    if r.contype == "f" then
      r.references = { schema = r.ref_schema, table = r.ref_table, columns = decode(r.ref_columns) }
      r.on_update = FK_ACTIONS[r.confupdtype]
      r.on_delete = FK_ACTIONS[r.confdeltype]
    end
    r.contype, r.ref_schema, r.ref_table, r.ref_columns, r.confupdtype, r.confdeltype =
      nil, nil, nil, nil, nil, nil
    r.qtable = qname(r.schema, r.table)
  end
  return rows
end)

local function only(types, list)
  local out = {}
  for _, r in ipairs(list) do if types[r.type] then out[#out + 1] = r end end
  return out
end

-- keys -> primary key and unique constraints (same fields as constraints).
M.keys = api(function(conn, filter)
  return only({ ["primary key"] = true, unique = true }, M.constraints(conn, filter))
end)

-- foreign_keys -> foreign key constraints (same fields as constraints).
M.foreign_keys = api(function(conn, filter)
  return only({ ["foreign key"] = true }, M.constraints(conn, filter))
end)

-- indexes -> { {schema, table, name, qname, definition, method, unique,
-- primary, valid, constraint, partitioned, parent, predicate, columns,
-- bytes}, ... }: indexes of tables and materialized views.
M.indexes = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS schema, t.relname AS table, i.relname AS name,
           pg_get_indexdef(i.oid) AS definition, am.amname AS method,
           x.indisunique AS unique, x.indisprimary AS primary, x.indisvalid AS valid,
           con.conname AS constraint, i.relkind = 'I' AS partitioned,
           pi.relname AS parent, pg_get_expr(x.indpred, x.indrelid) AS predicate,
           (SELECT json_agg(pg_get_indexdef(i.oid, k, true) ORDER BY k)
              FROM generate_series(1, x.indnkeyatts) k)::text AS columns,
           pg_relation_size(i.oid) AS bytes
      FROM pg_index x
      JOIN pg_class i ON i.oid = x.indexrelid
      JOIN pg_class t ON t.oid = x.indrelid
      JOIN pg_namespace n ON n.oid = t.relnamespace
      JOIN pg_am am ON am.oid = i.relam
      LEFT JOIN pg_constraint con ON con.conindid = i.oid AND con.conrelid = t.oid
                                 AND con.contype IN ('p', 'u', 'x')
      LEFT JOIN pg_inherits ih ON ih.inhrelid = i.oid
      LEFT JOIN pg_class pi ON pi.oid = ih.inhparent
     WHERE t.relkind IN ('r', 'p', 'm') AND ]] .. SCHEMA_FILTER .. [[
       AND NOT ]] .. ext_member("pg_class", "t.oid") .. [[
     ORDER BY n.nspname, i.relname]])
  for _, r in ipairs(rows) do
    r.qname = qname(r.schema, r.name)
    r.columns = decode(r.columns) or {}
  end
  return rows
end)

-- }==================================================================


-- {==================================================================
-- Sequences, views, functions, triggers, policies, types
-- ===================================================================

-- sequences -> { {schema, name, qname, data_type, start, increment, min,
-- max, cache, cycle, last_value, owned_by = {schema, table, column},
-- identity}, ... }.  last_value is nil when the sequence was never used
-- (or is not readable).
M.sequences = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS schema, c.relname AS name, format_type(s.seqtypid, NULL) AS data_type,
           s.seqstart AS start, s.seqincrement AS increment, s.seqmin AS min, s.seqmax AS max,
           s.seqcache AS cache, s.seqcycle AS cycle,
           CASE WHEN has_sequence_privilege(c.oid, 'SELECT,USAGE')
                THEN pg_sequence_last_value(c.oid) END AS last_value,
           dn.nspname AS owned_schema, dc.relname AS owned_table, da.attname AS owned_column,
           d.deptype = 'i' AS identity
      FROM pg_sequence s
      JOIN pg_class c ON c.oid = s.seqrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
                           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
      LEFT JOIN pg_class dc ON dc.oid = d.refobjid
      LEFT JOIN pg_namespace dn ON dn.oid = dc.relnamespace
      LEFT JOIN pg_attribute da ON da.attrelid = d.refobjid AND da.attnum = d.refobjsubid
     WHERE ]] .. SCHEMA_FILTER .. [[
       AND NOT ]] .. ext_member("pg_class", "c.oid") .. [[
     ORDER BY n.nspname, c.relname]])
  for _, r in ipairs(rows) do
    r.qname = qname(r.schema, r.name)
    if r.owned_table then
      r.owned_by = { schema = r.owned_schema, table = r.owned_table, column = r.owned_column }
    end
    r.identity = r.identity or false
    r.owned_schema, r.owned_table, r.owned_column = nil, nil, nil
  end
  return rows
end)

-- views -> { {schema, name, qname, kind ("view" | "materialized view"),
-- definition, populated, options}, ... }
M.views = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS schema, c.relname AS name,
           CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END AS kind,
           pg_get_viewdef(c.oid, true) AS definition, c.relispopulated AS populated,
           array_to_json(c.reloptions)::text AS options
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('v', 'm') AND ]] .. SCHEMA_FILTER .. [[
       AND NOT ]] .. ext_member("pg_class", "c.oid") .. [[
     ORDER BY n.nspname, c.relname]])
  for _, r in ipairs(rows) do
    r.qname = qname(r.schema, r.name)
    r.options = decode(r.options)
  end
  return rows
end)

-- Split an argument list at its top-level commas (not inside double
-- quotes or parentheses).
local function split_args(list)
  local out, depth, quoted, start = {}, 0, false, 1
  for i = 1, #list do
    local ch = list:sub(i, i)
    if ch == '"' then quoted = not quoted
    elseif not quoted and ch == "(" then depth = depth + 1
    elseif not quoted and ch == ")" then depth = depth - 1
    elseif not quoted and depth == 0 and ch == "," then
      out[#out + 1] = list:sub(start, i - 1):gsub("^%s+", "")
      start = i + 1
    end
  end
  if list:find("%S") then out[#out + 1] = list:sub(start):gsub("^%s+", "") end
  return out
end

-- A procedure's identity arguments as PostgreSQL 14 and later print them
-- (every argument with its mode: "IN days integer"); 13 and earlier
-- leave IN out, which would make the same procedure two signatures.
local function in_modes(args)
  local out = {}
  for _, a in ipairs(split_args(args)) do
    if not (a:find("^IN ") or a:find("^OUT ") or a:find("^INOUT ") or a:find("^VARIADIC ")) then
      a = "IN " .. a
    end
    out[#out + 1] = a
  end
  return table.concat(out, ", ")
end
M.procedure_args = in_modes

-- functions -> { {schema, name, oid, identity_args, signature, kind
-- ("function" | "procedure" | "aggregate" | "window"), result, language,
-- volatility, security_definer, strict, definition_hash}, ... }.
-- definition_hash is the md5 of pg_get_functiondef (of the aggregate's
-- parts for aggregates): equal hashes mean equal definitions.  A
-- procedure's arguments carry their modes on every server version
-- ("app.archive(IN days integer)").
M.functions = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS schema, p.proname AS name, p.oid::int8 AS oid,
           pg_get_function_identity_arguments(p.oid) AS identity_args,
           CASE p.prokind WHEN 'f' THEN 'function' WHEN 'p' THEN 'procedure'
                          WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window' END AS kind,
           pg_get_function_result(p.oid) AS result, l.lanname AS language,
           CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable'
                              ELSE 'volatile' END AS volatility,
           p.prosecdef AS security_definer, p.proisstrict AS strict,
           md5(CASE WHEN p.prokind = 'a' THEN
                 concat_ws('|', ag.aggkind, ag.aggtransfn::regprocedure, ag.aggfinalfn::regprocedure,
                           ag.aggcombinefn::regprocedure, ag.aggtranstype::regtype, ag.agginitval,
                           ag.aggsortop::regoperator, pg_get_function_arguments(p.oid))
               ELSE pg_get_functiondef(p.oid) END) AS definition_hash
      FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace
      JOIN pg_language l ON l.oid = p.prolang
      LEFT JOIN pg_aggregate ag ON ag.aggfnoid = p.oid
     WHERE ]] .. SCHEMA_FILTER .. [[
       AND NOT ]] .. ext_member("pg_proc", "p.oid") .. [[
       AND NOT EXISTS (SELECT 1 FROM pg_depend d   -- range constructors come with their type
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'i')
     ORDER BY n.nspname, p.proname, pg_get_function_identity_arguments(p.oid) COLLATE "C"]])
  local old = conn:server_version() < 140000
  for _, r in ipairs(rows) do
    if old and r.kind == "procedure" then r.identity_args = in_modes(r.identity_args) end
    r.signature = qname(r.schema, r.name) .. "(" .. r.identity_args .. ")"
  end
  return rows
end)

-- function_sources(oids) -> { [oid] = { definition, qname } }: the
-- pg_get_functiondef text that definition_hash is the md5 of, and the
-- function's name as that text spells it (format %I.%I).  Functions
-- that no longer exist are left out.
M.function_sources = api(function(conn, _, oids)
  local out = {}
  for _, r in ipairs(conn:query([[
      SELECT p.oid::int8 AS oid, pg_get_functiondef(p.oid) AS definition,
             format('%I.%I', n.nspname, p.proname) AS qname
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE p.oid = ANY ($1::oid[]) AND p.prokind <> 'a']], oids)) do
    out[r.oid] = { definition = r.definition, qname = r.qname }
  end
  return out
end)

local ENABLED = { O = "origin", D = "disabled", R = "replica", A = "always" }

-- triggers -> { {schema, table, name, definition, enabled, function =
-- {schema, name}, inherited, constraint_trigger}, ... }: user triggers
-- (internal FK triggers are left out; before PostgreSQL 13, which has no
-- tgparentid, the clones on partitions are internal too).
M.triggers = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS schema, c.relname AS table, t.tgname AS name,
           pg_get_triggerdef(t.oid) AS definition, t.tgenabled::text AS enabled,
           pn.nspname AS function_schema, p.proname AS function_name,
           ]] .. (conn:server_version() >= 130000 and "t.tgparentid <> 0" or "false") .. [[ AS inherited,
           t.tgconstraint <> 0 AS constraint_trigger
      FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_proc p ON p.oid = t.tgfoid
      JOIN pg_namespace pn ON pn.oid = p.pronamespace
     WHERE NOT t.tgisinternal AND ]] .. SCHEMA_FILTER .. [[
       AND NOT ]] .. ext_member("pg_class", "c.oid") .. [[
     ORDER BY n.nspname, c.relname, t.tgname]])
  for _, r in ipairs(rows) do
    r.enabled = ENABLED[r.enabled] or r.enabled
    r["function"] = { schema = r.function_schema, name = r.function_name }
    r.function_schema, r.function_name = nil, nil
  end
  return rows
end)

-- policies -> { {schema, table, name, command, permissive, roles, using,
-- with_check}, ... }: row-level security policies.
M.policies = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS schema, c.relname AS table, p.polname AS name,
           CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                         WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
           p.polpermissive AS permissive,
           (SELECT json_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
                            ORDER BY 1)
              FROM unnest(p.polroles) r)::text AS roles,
           pg_get_expr(p.polqual, p.polrelid) AS using,
           pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
      FROM pg_policy p
      JOIN pg_class c ON c.oid = p.polrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE ]] .. SCHEMA_FILTER .. [[
     ORDER BY n.nspname, c.relname, p.polname]])
  for _, r in ipairs(rows) do r.roles = decode(r.roles) or {} end
  return rows
end)

local TYPTYPES = { e = "enum", d = "domain", c = "composite", r = "range", b = "base", m = "multirange" }

-- types -> { {schema, name, qname, kind ("enum" | "domain" | "composite"
-- | "range" | "base"), labels (enum), base_type, not_null, default,
-- constraints = {{name, definition, validated}} (domain), attributes =
-- {{name, type}} (composite), subtype, multirange (range)}, ... }.
-- Row types of tables, array types and the multirange types that ranges
-- create implicitly are left out.
M.types = api(function(conn, filter)
  local rows = run(conn, filter, [[
    SELECT n.nspname AS schema, t.typname AS name, t.typtype::text AS typtype,
           (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder)
              FROM pg_enum e WHERE e.enumtypid = t.oid)::text AS labels,
           CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS base_type,
           t.typnotnull AS not_null, t.typdefault AS default,
           (SELECT json_agg(json_build_object('name', dc.conname,
                                              'definition', pg_get_constraintdef(dc.oid),
                                              'validated', dc.convalidated) ORDER BY dc.conname)
              FROM pg_constraint dc WHERE dc.contypid = t.oid AND dc.contype = 'c')::text AS constraints,
           (SELECT json_agg(json_build_object('name', a.attname,
                                              'type', format_type(a.atttypid, a.atttypmod))
                            ORDER BY a.attnum)
              FROM pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)::text AS attributes,
           format_type(r.rngsubtype, NULL) AS subtype,
           ]] .. (conn:server_version() >= 140000 and "format_type(r.rngmultitypid, NULL)"
                  or "NULL::text") .. [[ AS multirange
      FROM pg_type t
      JOIN pg_namespace n ON n.oid = t.typnamespace
      LEFT JOIN pg_class tc ON tc.oid = t.typrelid
      LEFT JOIN pg_range r ON r.rngtypid = t.oid
     WHERE t.typtype IN ('e', 'd', 'c', 'r', 'b')
       AND (t.typtype <> 'c' OR tc.relkind = 'c')
       AND NOT EXISTS (SELECT 1 FROM pg_type el WHERE el.typarray = t.oid)
       AND ]] .. SCHEMA_FILTER .. [[
       AND NOT ]] .. ext_member("pg_type", "t.oid") .. [[
     ORDER BY n.nspname, t.typname]])
  for _, r in ipairs(rows) do
    r.kind = TYPTYPES[r.typtype] or r.typtype
    r.typtype = nil
    r.qname = qname(r.schema, r.name)
    r.labels = decode(r.labels)
    r.constraints = decode(r.constraints)
    r.attributes = decode(r.attributes)
    if r.kind ~= "domain" then r.not_null = nil end
  end
  return rows
end)

-- }==================================================================


-- {==================================================================
-- Everything at once, counts, comparison
-- ===================================================================

-- describe -> { server_version, database, schemas, extensions, tables,
-- indexes, constraints, sequences, views, functions, triggers, types,
-- policies, large_objects, tables_without_pk }: one consistent picture
-- when the connection is inside a REPEATABLE READ transaction.
M.describe = api(function(conn, filter)
  local info = conn:query_one([[SELECT current_setting('server_version_num')::int AS v,
                                       current_database() AS db]])
  local d = {
    server_version = info.v,
    database = info.db,
    schemas = M.schemas(conn, filter),
    extensions = M.extensions(conn, filter),
    tables = M.tables(conn, filter),
    indexes = M.indexes(conn, filter),
    constraints = M.constraints(conn, filter),
    sequences = M.sequences(conn, filter),
    views = M.views(conn, filter),
    functions = M.functions(conn, filter),
    triggers = M.triggers(conn, filter),
    types = M.types(conn, filter),
    policies = M.policies(conn, filter),
    large_objects = M.large_objects(conn, filter),
  }
  d.tables_without_pk = without_pk(d.tables)
  return d
end)

-- counts -> { {schema, tables, sequences, indexes}, ... }: the seed's
-- verification query (information_schema.tables counts views too), per
-- schema of the filter (default: every user schema).
M.counts = api(function(conn, filter)
  local out = {}
  for _, s in ipairs(M.schemas(conn, filter)) do
    local r = conn:query_one([[
      SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1) AS tables,
             (SELECT COUNT(*) FROM information_schema.sequences WHERE sequence_schema = $1) AS sequences,
             (SELECT COUNT(*) FROM pg_indexes WHERE schemaname = $1) AS indexes]], s.name)
    out[#out + 1] = { schema = s.name, tables = r.tables, sequences = r.sequences, indexes = r.indexes }
  end
  return out
end)

-- How objects of each kind are identified and which fields must match.
-- Sizes, row estimates, OIDs, owners and last values are never compared.
local KINDS = {
  { name = "schemas", key = function(o) return o.name end, fields = {} },
  { name = "extensions", key = function(o) return o.name end, fields = { "version", "schema" } },
  { name = "types", key = function(o) return key(o.schema, o.name) end,
    fields = { "kind", "labels", "base_type", "not_null", "default", "constraints", "attributes",
               "subtype" } },
  { name = "tables", key = function(o) return key(o.schema, o.name) end,
    fields = { "kind", "persistence", "partition_of", "partition_bound", "partition_key",
               "inherits", "replica_identity", "replica_identity_index", "rls_enabled",
               "rls_forced", "columns" } },
  { name = "sequences", key = function(o) return key(o.schema, o.name) end,
    fields = { "data_type", "start", "increment", "min", "max", "cache", "cycle", "owned_by",
               "identity" } },
  { name = "indexes", key = function(o) return key(o.schema, o.name) end,
    fields = { "table", "definition", "valid", "constraint" } },
  { name = "constraints", key = function(o) return key(o.schema, o.table, o.name) end,
    fields = { "type", "definition", "validated", "deferrable", "deferred" } },
  { name = "views", key = function(o) return key(o.schema, o.name) end,
    fields = { "kind", "definition" } },
  { name = "functions", key = function(o) return o.signature end,
    fields = { "kind", "result", "language", "volatility", "security_definer", "strict",
               "definition_hash" } },
  { name = "triggers", key = function(o) return key(o.schema, o.table, o.name) end,
    fields = { "definition", "enabled" } },
  { name = "policies", key = function(o) return key(o.schema, o.table, o.name) end,
    fields = { "command", "permissive", "roles", "using", "with_check" } },
}
M.KINDS = {}
for _, k in ipairs(KINDS) do M.KINDS[#M.KINDS + 1] = k.name end

local COLUMN_FIELDS = { "name", "position", "type", "not_null", "default", "generated",
                        "identity", "collation" }

local same = util.deep_equal

local function show(v)
  if type(v) ~= "table" then return v end
  return json.encode(v)
end

-- Column lists compare column by column, so a difference names the column.
local function columns_diff(kind, name, a, b, out)
  local function index(list)
    local t = {}
    for _, c in ipairs(list or {}) do t[c.name] = c end
    return t
  end
  local ia, ib = index(a), index(b)
  for _, c in ipairs(a or {}) do
    local d = ib[c.name]
    if not d then
      out[#out + 1] = { kind = kind, name = name, problem = "missing", field = "column " .. c.name }
    else
      for _, f in ipairs(COLUMN_FIELDS) do
        if not same(c[f], d[f]) then
          out[#out + 1] = { kind = kind, name = name, problem = "different",
                            field = "column " .. c.name .. " " .. f, source = show(c[f]),
                            target = show(d[f]), note = c.align_notes and c.align_notes[f] }
        end
      end
    end
  end
  for _, c in ipairs(b or {}) do
    if not ia[c.name] then
      out[#out + 1] = { kind = kind, name = name, problem = "extra", field = "column " .. c.name }
    end
  end
end

--[[ compare(source, target [, opts]) -> differences (a list, empty when
  equal).  'source' and 'target' are describe() results.  Each difference
  is { kind = "indexes", name = "app.orders_customer_idx", problem =
  "missing" (in the target) | "extra" (only in the target) | "different",
  field = ..., source = ..., target = ..., note = ... }; note says why a
  definition could not be compared as the target prints it (set by
  pgtide.schema_align on the source's objects, see schema.verify).
  opts.kinds limits the comparison to some kinds (list of names from
  catalog.KINDS);
  opts.names_only compares names only; opts.ignore = { kind = { field =
  true } } skips fields (e.g. { tables = { rls_enabled = true } }). ]]
function M.compare(a, b, opts)
  opts = opts or {}
  local wanted = util.set(opts.kinds)
  local out = {}
  for _, kind in ipairs(KINDS) do
    if not wanted or wanted[kind.name] then
      local ia, ib = {}, {}
      for _, o in ipairs(a[kind.name] or {}) do ia[kind.key(o)] = o end
      for _, o in ipairs(b[kind.name] or {}) do ib[kind.key(o)] = o end
      for _, o in ipairs(a[kind.name] or {}) do
        local name = kind.key(o)
        local p = ib[name]
        if not p then
          out[#out + 1] = { kind = kind.name, name = name, problem = "missing" }
        elseif not opts.names_only then
          local skip = opts.ignore and opts.ignore[kind.name] or {}
          for _, f in ipairs(kind.fields) do
            if not skip[f] then
              if f == "columns" then
                columns_diff(kind.name, name, o.columns, p.columns, out)
              elseif not same(o[f], p[f]) then
                out[#out + 1] = { kind = kind.name, name = name, problem = "different", field = f,
                                  source = show(o[f]), target = show(p[f]),
                                  note = o.align_notes and o.align_notes[f] }
              end
            end
          end
        end
      end
      for _, o in ipairs(b[kind.name] or {}) do
        if not ia[kind.key(o)] then
          out[#out + 1] = { kind = kind.name, name = kind.key(o), problem = "extra" }
        end
      end
    end
  end
  return out
end

-- One line per difference, for logs and reports.
function M.format_difference(d)
  local s = string.format("%s %s: %s", d.kind, d.name, d.problem)
  if d.field then s = s .. " (" .. d.field .. ")" end
  if d.problem == "different" then
    s = s .. string.format(": source %s, target %s", tostring(d.source), tostring(d.target))
  end
  if d.note then s = s .. " -- " .. d.note end
  return s
end

-- }==================================================================

return M
