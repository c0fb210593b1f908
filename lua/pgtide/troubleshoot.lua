--[[
pgtide.troubleshoot: the seeds' "Schema-Related Troubleshooting", as tools.

Each topic inspects the databases, says what it found, and gives the
SQL that fixes it (it never runs that SQL itself).  Topics:

  missing-sequences   "sequence does not exist" errors: sequences on the
                      source that the target lacks, and target column
                      defaults calling a sequence that does not exist
  sequences-behind    "Sequence values too low causing duplicate key
                      errors": target sequences behind max() of their
                      column, or behind the source
  missing-indexes     "Missing indexes causing performance issues":
                      indexes on the source absent (or invalid) on the target
  fk-violations       "Foreign key constraint violations": rows on the
                      target that would violate each source foreign key
  dependency-order    "Functions/views with dependency errors": the order
                      to create functions and views in (functions before
                      the views that use them), with their DDL
  permissions         "Permission errors during schema application"

  local f = troubleshoot.run("fk-violations", { src = conn, dst = conn, schemas = {"public"} })
  troubleshoot.print(f)     -- f.title, f.found (lines), f.sql (statements), f.count
In the REPL (after require "pgtide.troubleshoot"): missing_sequences(src, dst),
sequences_behind(src, dst), missing_indexes(src, dst), fk_violations(src, dst),
dependency_order(src, dst [, object]), permission_problems(src, dst).
]]
local catalog = require "pgtide.catalog"
local preflight = require "pgtide.preflight"
local quote = require "pgtide.quote"

local M = {}

M.TOPICS = { "missing-sequences", "sequences-behind", "missing-indexes", "fk-violations",
             "dependency-order", "permissions" }

local function filter_of(opts)
  return { schemas = opts.schemas, exclude_schemas = opts.exclude_schemas }
end

local function new(topic, title)
  return { topic = topic, title = title, found = {}, sql = {}, count = 0 }
end

local function found(f, fmt, ...) f.found[#f.found + 1] = string.format(fmt, ...) end
local function sql(f, fmt, ...) f.sql[#f.sql + 1] = string.format(fmt, ...) end

local lit = quote.literal

-- An identifier quoted only when needed (the server's quote_ident, so
-- keywords are quoted too), for readable SQL.
local ident = quote.ident
M.ident = ident

-- Run fn() with search_path = pg_catalog on conn, so definitions read
-- from the catalog are fully qualified; the old path is restored.
local function with_catalog_path(conn, fn, ...)
  local old = conn:query_one("select current_setting('search_path') as p").p
  conn:exec("select set_config('search_path', 'pg_catalog', false)")
  local res = table.pack(pcall(fn, ...))
  pcall(conn.exec, conn, "select set_config('search_path', $1, false)", old)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local function by(list, keyfn)
  local t = {}
  for _, o in ipairs(list) do t[keyfn(o)] = o end
  return t
end

-- {==================================================================
-- Sequences
-- ===================================================================

local function seq_ddl(s)
  local parts = { string.format("CREATE SEQUENCE IF NOT EXISTS %s", s.qname) }
  if s.data_type and s.data_type ~= "bigint" then parts[#parts + 1] = "AS " .. s.data_type end
  parts[#parts + 1] = string.format("INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s%s",
    tostring(s.increment), tostring(s.min), tostring(s.max), tostring(s.start), tostring(s.cache),
    s.cycle and " CYCLE" or "")
  return table.concat(parts, " ") .. ";"
end

function M.missing_sequences(opts)
  local f = new("missing-sequences", "sequences missing on the target (\"sequence does not exist\")")
  local flt = filter_of(opts)
  local have = by(catalog.sequences(opts.dst, flt), function(s) return s.schema .. "." .. s.name end)
  for _, s in ipairs(catalog.sequences(opts.src, flt)) do
    if not have[s.schema .. "." .. s.name] then
      f.count = f.count + 1
      local owner = s.owned_by and catalog.qname(s.owned_by.schema, s.owned_by.table)
      found(f, "%s is missing on the target%s (source last value %s)", s.qname,
        owner and (" (owned by " .. owner .. "." .. s.owned_by.column .. ")") or "",
        tostring(s.last_value or "unused"))
      if owner and not opts.dst:query_one("SELECT to_regclass($1) IS NOT NULL AS x", owner).x then
        -- the table is missing too (created on the source after the migration started?)
        found(f, "  its table %s is missing on the target as well: create the table first "
          .. "(pg_dump --schema-only -t %s on the source, applied to the target; the sequence comes "
          .. "with it), then copy its rows", owner, owner)
      else
        sql(f, "%s", seq_ddl(s))
        if s.owned_by and not s.identity then
          local col = ident(opts.dst, s.owned_by.column)
          sql(f, "ALTER SEQUENCE %s OWNED BY %s.%s;", s.qname, owner, col)
          sql(f, "ALTER TABLE %s ALTER COLUMN %s SET DEFAULT nextval(%s::regclass);", owner, col, lit(s.qname))
          sql(f, "SELECT setval(%s, (SELECT coalesce(max(%s), 1) FROM %s));", lit(s.qname), col, owner)
        elseif s.last_value then
          sql(f, "SELECT setval(%s, %s);  -- source value + 1000", lit(s.qname), tostring(s.last_value + 1000))
        end
      end
    end
  end
  -- defaults on the target that call a sequence that is not there
  local rows = opts.dst:query([[
    select format('%I.%I', n.nspname, c.relname) as qtable, a.attname as col,
           pg_get_expr(d.adbin, d.adrelid) as expr
      from pg_attrdef d join pg_class c on c.oid = d.adrelid
      join pg_namespace n on n.oid = c.relnamespace
      join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
     where pg_get_expr(d.adbin, d.adrelid) like 'nextval(%'
       and n.nspname not in ('pg_catalog', 'information_schema')
     order by 1, 2]])
  for _, r in ipairs(rows) do
    local seqname = r.expr:match("nextval%('([^']+)'")
    if seqname then
      local ok, exists = pcall(opts.dst.query_one, opts.dst, "select to_regclass($1) is not null as ok", seqname)
      if ok and exists and not exists.ok then
        f.count = f.count + 1
        found(f, "%s.%s defaults to %s, but that sequence does not exist", r.qtable, r.col, r.expr)
        sql(f, "CREATE SEQUENCE %s;", seqname)
        sql(f, "SELECT setval(%s, (SELECT coalesce(max(%s), 1) FROM %s));", lit(seqname), r.col, r.qtable)
      end
    end
  end
  return f
end

function M.sequences_behind(opts)
  local f = new("sequences-behind", "sequences behind the data (\"duplicate key\" errors on INSERT)")
  local flt = filter_of(opts)
  local src_seqs = opts.src and by(catalog.sequences(opts.src, flt), function(s) return s.schema .. "." .. s.name end) or {}
  for _, s in ipairs(catalog.sequences(opts.dst, flt)) do
    local up = (s.increment or 1) > 0
    local reasons = {}
    local target_value
    if s.owned_by and up then
      local owner = catalog.qname(s.owned_by.schema, s.owned_by.table)
      local col = ident(opts.dst, s.owned_by.column)
      local ok, row = pcall(opts.dst.query_one, opts.dst,
        string.format("select max(%s)::text as m from %s", col, owner))
      local m = ok and row and math.tointeger(tonumber(row.m)) or nil
      if m and (s.last_value == nil or s.last_value < m) then
        reasons[#reasons + 1] = string.format("max(%s.%s) is %d", owner, s.owned_by.column, m)
        target_value = m
      end
    end
    local so = src_seqs[s.schema .. "." .. s.name]
    if so and so.last_value and up and (s.last_value == nil or s.last_value < so.last_value) then
      reasons[#reasons + 1] = string.format("the source is at %d", so.last_value)
      target_value = math.max(target_value or 0, so.last_value + 1000)
    end
    if #reasons > 0 then
      f.count = f.count + 1
      found(f, "%s is %s on the target, but %s", s.qname, tostring(s.last_value or "unused"),
        table.concat(reasons, " and "))
      if s.owned_by and not (so and so.last_value and target_value == so.last_value + 1000) then
        sql(f, "SELECT setval(%s, (SELECT MAX(%s) FROM %s));", lit(s.qname),
          ident(opts.dst, s.owned_by.column), catalog.qname(s.owned_by.schema, s.owned_by.table))
      else
        sql(f, "SELECT setval(%s, %d);", lit(s.qname), target_value)
      end
    end
  end
  return f
end

-- }==================================================================


-- {==================================================================
-- Indexes
-- ===================================================================

function M.missing_indexes(opts)
  local f = new("missing-indexes", "indexes on the source that the target lacks")
  local flt = filter_of(opts)
  local tgt = by(catalog.indexes(opts.dst, flt), function(i) return i.schema .. "." .. i.name end)
  local cons = by(catalog.constraints(opts.src, flt), function(c) return c.schema .. "." .. c.table .. "." .. c.name end)
  for _, i in ipairs(catalog.indexes(opts.src, flt)) do
    local t = tgt[i.schema .. "." .. i.name]
    if not t and not i.parent then
      f.count = f.count + 1
      found(f, "%s on %s is missing on the target%s", i.qname, catalog.qname(i.schema, i.table),
        i.constraint and (" (it backs constraint " .. i.constraint .. ")") or "")
      local c = i.constraint and cons[i.schema .. "." .. i.table .. "." .. i.constraint]
      if c then
        sql(f, "ALTER TABLE %s ADD CONSTRAINT %s %s;", catalog.qname(i.schema, i.table),
          ident(opts.dst, c.name), c.definition)
      else
        sql(f, "%s;", i.definition)
      end
    elseif t and not t.valid and i.valid then
      f.count = f.count + 1
      found(f, "%s exists on the target but is INVALID (a failed CREATE INDEX CONCURRENTLY)", i.qname)
      sql(f, "REINDEX INDEX CONCURRENTLY %s;", i.qname)
    end
  end
  if f.count > 0 then
    sql(f, "-- then check a query that should use them: EXPLAIN (ANALYZE, BUFFERS) SELECT ...;")
  end
  return f
end

-- }==================================================================


-- {==================================================================
-- Foreign keys
-- ===================================================================

--[[
troubleshoot.foreign_keys(conn, filter) -> list of { qtable, name,
definition, columns, ref_qtable, ref_columns, validated, partitioned }:
the foreign keys of 'conn' (normally the source).  qtable is
format('%I.%I'), the form pgtide.schema uses in its names.
]]
function M.foreign_keys(conn, filter)
  filter = filter or {}
  local rows = with_catalog_path(conn, conn.query, conn, [[
    select format('%I.%I', n.nspname, c.relname) as qtable, n.nspname as schema, c.relname as table,
           con.conname as name, pg_get_constraintdef(con.oid) as definition,
           format('%I.%I', rn.nspname, rc.relname) as ref_qtable, con.convalidated as validated,
           c.relkind = 'p' as partitioned,
           (select json_agg(a.attname order by k.ord) from unnest(con.conkey) with ordinality k(attnum, ord)
              join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum)::text as columns,
           (select json_agg(a.attname order by k.ord) from unnest(con.confkey) with ordinality k(attnum, ord)
              join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum)::text as ref_columns
      from pg_constraint con
      join pg_class c on c.oid = con.conrelid join pg_namespace n on n.oid = c.relnamespace
      join pg_class rc on rc.oid = con.confrelid join pg_namespace rn on rn.oid = rc.relnamespace
     where con.contype = 'f' and con.conparentid = 0
       and n.nspname not in ('pg_catalog', 'information_schema')
       and ($1::text[] is null or n.nspname = any ($1::text[]))
     order by 1, 4]], filter.schemas)
  local json = require "json"
  for _, r in ipairs(rows) do
    r.columns = json.decode(r.columns)
    r.ref_columns = json.decode(r.ref_columns)
  end
  return rows
end

--[[
troubleshoot.fk_check(conn, fk [, limit]) -> count, sample_rows, query.
Counts the rows of fk.qtable on 'conn' whose non-null key has no match
in fk.ref_qtable (MATCH SIMPLE semantics), and returns up to 'limit'
(default 10) of them (the key columns, plus the primary key when the
table has one) and the SQL that lists them.
]]
function M.fk_check(conn, fk, limit)
  local cols, conds, joins = {}, {}, {}
  for i, col in ipairs(fk.columns) do
    local qc = ident(conn, col)
    cols[#cols + 1] = "c." .. qc
    conds[#conds + 1] = "c." .. qc .. " IS NOT NULL"
    joins[#joins + 1] = string.format("p.%s = c.%s", ident(conn, fk.ref_columns[i]), qc)
  end
  local where = string.format("%s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)",
    table.concat(conds, " AND "), fk.ref_qtable, table.concat(joins, " AND "))
  local count = conn:query_one(string.format("SELECT count(*) AS n FROM %s c WHERE %s", fk.qtable, where)).n
  local list_sql = string.format("SELECT %s FROM %s c WHERE %s", table.concat(cols, ", "), fk.qtable, where)
  local sample = {}
  if count > 0 then
    sample = conn:query(string.format("%s LIMIT %d", list_sql, limit or 10))
  end
  return count, sample, list_sql
end

local function row_text(row, fk)
  local parts = {}
  for _, col in ipairs(fk.columns) do parts[#parts + 1] = string.format("%s=%s", col, tostring(row[col])) end
  return "(" .. table.concat(parts, ", ") .. ")"
end
M.fk_row_text = row_text

function M.fk_violations(opts)
  local f = new("fk-violations", "rows on the target that violate the source's foreign keys")
  local fks = opts.foreign_keys or M.foreign_keys(opts.src, filter_of(opts))
  for _, fk in ipairs(fks) do
    local ok, count, sample, list_sql = pcall(M.fk_check, opts.dst, fk, 5)
    if not ok then
      f.count = f.count + 1
      found(f, "%s %s: cannot check on the target: %s", fk.qtable, fk.name, tostring(count))
    elseif count > 0 then
      f.count = f.count + 1
      local shown = {}
      for _, r in ipairs(sample) do shown[#shown + 1] = row_text(r, fk) end
      found(f, "%s %s: %d row(s) reference missing %s rows, e.g. %s", fk.qtable, fk.name, count,
        fk.ref_qtable, table.concat(shown, ", "))
      sql(f, "-- %s %s (%s)", fk.qtable, fk.name, fk.definition)
      sql(f, "%s;", list_sql)
      sql(f, "-- fix the data (copy the missing parents, or delete/repair the orphans), then:")
      sql(f, "ALTER TABLE %s ADD CONSTRAINT %s %s;", fk.qtable, ident(opts.dst, fk.name), fk.definition)
    end
  end
  if f.count == 0 then
    found(f, "no violation of the %d foreign key(s) checked", #fks)
  end
  return f
end

-- }==================================================================


-- {==================================================================
-- Dependency order of functions and views
-- ===================================================================

local OBJECTS_SQL = [[
  with objs as (
    select 'pg_class'::regclass::oid as classid, c.oid as objid,
           format('%I.%I', n.nspname, c.relname) as name,
           case c.relkind when 'v' then 'view' else 'materialized view' end as kind,
           case c.relkind when 'v' then format('CREATE OR REPLACE VIEW %I.%I AS%s', n.nspname, c.relname,
                                               E'\n' || pg_get_viewdef(c.oid))
                          else format('CREATE MATERIALIZED VIEW %I.%I AS%s WITH NO DATA', n.nspname,
                                      c.relname, E'\n' || rtrim(pg_get_viewdef(c.oid), ';')) end as ddl
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('v', 'm') and n.nspname not in ('pg_catalog', 'information_schema')
       and ($1::text[] is null or n.nspname = any ($1::text[]))
       and not exists (select 1 from pg_depend e where e.objid = c.oid and e.deptype = 'e')
    union all
    select 'pg_proc'::regclass::oid, p.oid,
           format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
           case p.prokind when 'p' then 'procedure' else 'function' end,
           pg_get_functiondef(p.oid)
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where p.prokind in ('f', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
       and ($1::text[] is null or n.nspname = any ($1::text[]))
       and not exists (select 1 from pg_depend e where e.objid = p.oid and e.deptype = 'e')
  )
  select o.name, o.kind, o.ddl,
         (select json_agg(distinct r.name) from pg_depend d
            join objs r on r.classid = d.refclassid and r.objid = d.refobjid
           where r.objid <> o.objid
             and ((d.classid = o.classid and d.objid = o.objid)
                  or (o.classid = 'pg_class'::regclass and d.classid = 'pg_rewrite'::regclass
                      and d.objid in (select w.oid from pg_rewrite w where w.ev_class = o.objid))))::text
           as depends_on
    from objs o order by o.name]]

--[[
troubleshoot.creation_order(conn, filter) -> list of { name, kind, ddl,
depends_on } in an order where everything comes after what it depends
on (functions before views at equal depth).  Cycles are broken by
name and flagged (cycle = true).
]]
function M.creation_order(conn, filter)
  local json = require "json"
  local rows = with_catalog_path(conn, conn.query, conn, OBJECTS_SQL, (filter or {}).schemas)
  local byname, pending = {}, {}
  for _, r in ipairs(rows) do
    r.depends_on = r.depends_on and json.decode(r.depends_on) or {}
    byname[r.name] = r
    pending[#pending + 1] = r
  end
  local done, order = {}, {}
  local rank = { ["function"] = 1, procedure = 1, view = 2, ["materialized view"] = 3 }
  while #pending > 0 do
    local ready, rest = {}, {}
    for _, r in ipairs(pending) do
      local ok = true
      for _, d in ipairs(r.depends_on) do
        if byname[d] and not done[d] then ok = false; break end
      end
      if ok then ready[#ready + 1] = r else rest[#rest + 1] = r end
    end
    if #ready == 0 then   -- a cycle: take the first by name
      table.sort(rest, function(a, b) return a.name < b.name end)
      rest[1].cycle = true
      ready = { table.remove(rest, 1) }
    end
    table.sort(ready, function(a, b)
      if rank[a.kind] ~= rank[b.kind] then return rank[a.kind] < rank[b.kind] end
      return a.name < b.name
    end)
    for _, r in ipairs(ready) do done[r.name] = true; order[#order + 1] = r end
    pending = rest
  end
  return order
end

function M.dependency_order(opts)
  local f = new("dependency-order", "the order to create functions and views in")
  local order = M.creation_order(opts.src, filter_of(opts))
  local on_target = {}
  if opts.dst then
    for _, r in ipairs(M.creation_order(opts.dst, filter_of(opts))) do on_target[r.name] = true end
  end
  local want = opts.object
  for i, r in ipairs(order) do
    local missing = opts.dst and not on_target[r.name]
    if not want or r.name:find(want, 1, true) then
      local deps = #r.depends_on > 0 and (" depends on " .. table.concat(r.depends_on, ", ")) or ""
      found(f, "%d. %s %s%s%s%s", i, r.kind, r.name, deps, missing and " [missing on the target]" or "",
        r.cycle and " [dependency cycle]" or "")
      if missing then
        f.count = f.count + 1
        sql(f, "%s;", (r.ddl:gsub("%s*;?%s*$", "")))
      end
    end
  end
  if #order == 0 then found(f, "no view or function in scope") end
  if opts.dst and f.count == 0 and #order > 0 then
    found(f, "every function and view above exists on the target")
  end
  return f
end

-- }==================================================================


-- {==================================================================
-- Permissions
-- ===================================================================

-- The preflight checks about privileges (lua/pgtide/preflight.lua).
M.PERMISSION_CHECKS = { "select_privileges", "source_sequences", "replication_role", "publication",
                        "write_fence", "target_triggers", "target_progress" }

function M.permissions(opts)
  local f = new("permissions", "permission problems for schema application and DMS")
  local dst = opts.dst
  local me = dst:query_one([[
    select current_user as name, rolsuper as super,
           has_database_privilege(current_database(), 'CREATE') as db_create,
           has_database_privilege(current_database(), 'CONNECT') as db_connect,
           current_database() as db
      from pg_roles where rolname = current_user]])
  if me.super then
    found(f, "target user %s is a superuser: no privilege problem possible on the target", me.name)
  else
    if not me.db_create then
      f.count = f.count + 1
      found(f, "target user %s cannot CREATE in database %s", me.name, me.db)
      sql(f, "GRANT CREATE ON DATABASE %s TO %s;", ident(dst, me.db), ident(dst, me.name))
    end
    local schemas = opts.schemas or { "public" }
    for _, s in ipairs(schemas) do
      local r = dst:query_one([[select n.nspname, pg_get_userbyid(n.nspowner) as owner,
                                       has_schema_privilege(n.oid, 'USAGE') as usage,
                                       has_schema_privilege(n.oid, 'CREATE') as create
                                  from pg_namespace n where n.nspname = $1]], s)
      if r and not (r.usage and r.create) then
        f.count = f.count + 1
        found(f, "target user %s lacks %s on schema %s (owner %s)", me.name,
          (not r.usage and not r.create) and "USAGE and CREATE" or (not r.usage and "USAGE" or "CREATE"), s, r.owner)
        sql(f, "GRANT USAGE, CREATE ON SCHEMA %s TO %s;", ident(dst, s), ident(dst, me.name))
      end
    end
    local others = dst:query([[
      select format('%I.%I', n.nspname, c.relname) as qname, pg_get_userbyid(c.relowner) as owner,
             case c.relkind when 'r' then 'TABLE' when 'p' then 'TABLE' when 'v' then 'VIEW'
                            when 'm' then 'MATERIALIZED VIEW' when 'S' then 'SEQUENCE' else 'TABLE' end as kind
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where c.relkind in ('r', 'p', 'v', 'm', 'S') and n.nspname = any ($1::text[])
         and not pg_has_role(c.relowner, 'USAGE')
       order by 1]], schemas)
    for _, o in ipairs(others) do
      f.count = f.count + 1
      found(f, "%s %s on the target is owned by %s: %s cannot alter or drop it", o.kind, o.qname, o.owner, me.name)
      sql(f, "ALTER %s %s OWNER TO %s;  -- as %s or a superuser", o.kind, o.qname, ident(dst, me.name), o.owner)
    end
  end
  -- objects that already exist where the schema is applied
  local existing = dst:query([[
    select format('%I.%I', n.nspname, c.relname) as qname
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p') and n.nspname = any ($1::text[]) order by 1]], opts.schemas or { "public" })
  if #existing > 0 and opts.report_existing ~= false then
    f.count = f.count + 1   -- every finding counts: a count of 0 means none
    local names = {}
    for i, e in ipairs(existing) do if i <= 10 then names[#names + 1] = e.qname end end
    found(f, "%d table(s) already exist on the target (%s%s): applying a schema dump again fails with "
      .. "\"already exists\"", #existing, table.concat(names, ", "), #existing > 10 and ", ..." or "")
    sql(f, "-- only if you mean to start over on the target (this deletes their data):")
    for _, e in ipairs(existing) do sql(f, "-- DROP TABLE IF EXISTS %s CASCADE;", e.qname) end
  end
  -- the same privilege checks as the local runbook's preflight (pgtide.privileges), both sides
  if opts.src then
    local rep = preflight.run { src = opts.src, dst = dst, checks = M.PERMISSION_CHECKS, scope = opts.scope,
                                publication = opts.publication or "pgtide_local",
                                publication_given = opts.publication_given,
                                replica_role = opts.replica_role }
    for _, r in ipairs(rep.results) do
      if r.status == "fail" then
        f.count = f.count + 1
        if r.id == "write_fence" then
          found(f, "write_fence=true is not possible: %s", r.message)
        else
          found(f, "%s: %s", r.title, r.message)
        end
        sql(f, "-- %s", r.fix)
      end
    end
  end
  if f.count == 0 then found(f, "no permission problem found") end
  return f
end

-- }==================================================================

local dispatch = {
  ["missing-sequences"] = M.missing_sequences,
  ["sequences-behind"] = M.sequences_behind,
  ["missing-indexes"] = M.missing_indexes,
  ["fk-violations"] = M.fk_violations,
  ["dependency-order"] = M.dependency_order,
  ["permissions"] = M.permissions,
}

--[[
troubleshoot.run(topic, opts) -> findings.  opts: src, dst (connections;
dependency-order needs only src, the others both), schemas (list),
object (dependency-order: one object to show).  Raises on an unknown
topic, naming the topics.
]]
function M.run(topic, opts)
  local fn = dispatch[topic]
  if not fn then
    error(string.format("unknown topic '%s' (topics: %s)", tostring(topic), table.concat(M.TOPICS, ", ")), 2)
  end
  return fn(opts)
end

-- Findings as printable lines: what was found, then the SQL.
function M.lines(f)
  local out = { "== " .. f.title }
  for _, l in ipairs(f.found) do out[#out + 1] = "  " .. l end
  if #f.sql > 0 then
    out[#out + 1] = "-- SQL to fix it (review before running):"
    for _, s in ipairs(f.sql) do out[#out + 1] = s end
  end
  return out
end

function M.print(f, write)
  write = write or print
  for _, l in ipairs(M.lines(f)) do write(l) end
  return f
end

-- REPL helpers: each prints its findings and returns them (marked as shown,
-- so that the REPL does not print them a second time; `f = helper(...)` keeps them).
local ok_repl, repl = pcall(require, "pgtide.repl")
if ok_repl and repl.add_helper then
  local function helper(name, topic, doc)
    repl.add_helper(name, doc, function(src, dst, extra)
      if not src then error(name .. " needs connections: " .. name .. "(src, dst)", 2) end
      local o = { src = src, dst = dst }
      if type(extra) == "table" then for k, v in pairs(extra) do o[k] = v end
      elseif type(extra) == "string" then o.object = extra end
      return repl.shown(M.print(M.run(topic, o)))
    end)
  end
  helper("missing_sequences", "missing-sequences", "missing_sequences(src, dst): sequences the target lacks")
  helper("sequences_behind", "sequences-behind", "sequences_behind(src, dst): sequences behind max(id)")
  helper("missing_indexes", "missing-indexes", "missing_indexes(src, dst): source indexes missing on the target")
  helper("fk_violations", "fk-violations", "fk_violations(src, dst): rows violating foreign keys")
  helper("dependency_order", "dependency-order",
    "dependency_order(src [, dst [, object]]): create order of functions and views")
  helper("permission_problems", "permissions", "permission_problems(src, dst): privilege problems")
end

return M
