--[[
pgtide.schema_diff: compare the source and target schemas object by object.

  local schema_diff = require "pgtide.schema_diff"
  local result = schema_diff.run(src_conn, tgt_conn, { tables = {...} })
  -- or, from two catalog.describe() pictures:
  local result = schema_diff.compare(src_desc, tgt_desc, opts)

result = {
  differences = { {kind, object, problem, field, source, target, fix, note}, ... },
  counts = { [kind] = { objects = N, missing = n, extra = n, different = n } },
  objects = N,          -- objects compared (source side)
  ok = true | false,    -- no differences
}

kind is one of KINDS below; object is the qualified name ("app.orders",
"app.orders.orders_pkey" for a table's constraint, a function signature);
problem is "missing" (on the target), "extra" (only on the target) or
"different" (field names what differs, with source and target values);
fix is the DDL that makes the target match the source, when it can be
derived from the catalogs (review it before running: fixes for extra
objects drop them).

What is compared (see docs/validation.md): schemas; extensions and
versions; types (enum labels, domain base/default/NOT NULL/constraints,
composite attributes, range subtype); tables (kind, persistence,
partitioning, inheritance, replica identity, RLS flags) and columns (type,
nullability, default, generated, identity, collation, position);
indexes (definitions, validity); constraints including foreign keys and
whether they are validated; sequences (parameters, and the target's value
at least the source's); views and materialized views (definitions,
populated); functions and procedures (definition hashes); triggers
(definitions, enabled state); row-level security policies.  Owners,
privileges, comments, sizes and OIDs are not compared.  Definitions
(views, functions, defaults, generated columns, checks, indexes,
policies, triggers, domains) are compared as the target's server prints
them when the texts differ: run() aligns the source's with
pgtide.schema_align first.
]]
local catalog = require "pgtide.catalog"
local schema_align = require "pgtide.schema_align"
local util = require "pgtide.util"

local M = {}

M.KINDS = { "schemas", "extensions", "types", "tables", "sequences", "indexes", "constraints",
            "views", "functions", "triggers", "policies" }

-- {==================================================================
-- Helpers
-- ===================================================================

-- Quote an identifier when it needs it (catalog's rule, as in qname).
local qi = catalog.quote_ident
M.quote_ident = qi

local ql = require("pgtide.quote").literal

local same = util.deep_equal

local function show(v)
  if v == nil then return nil end
  if type(v) ~= "table" then return v end
  local parts = {}
  if #v > 0 then
    for _, x in ipairs(v) do parts[#parts + 1] = type(x) == "table" and show(x) or tostring(x) end
    return table.concat(parts, ", ")
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(show(v[k])) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function join(...)
  local t = {}
  for _, s in ipairs({ ... }) do if s and s ~= "" then t[#t + 1] = s end end
  return table.concat(t, "\n")
end

-- pg_get_constraintdef appends " NOT VALID" to constraints that are not
-- validated: compare definitions without it (validated is its own field).
local function strip_not_valid(def)
  return def and (def:gsub(" NOT VALID$", "")) or def
end

-- }==================================================================


-- {==================================================================
-- DDL that recreates an object (from the source's description)
-- ===================================================================

local function column_ddl(c)
  local s = qi(c.name) .. " " .. c.type
  if c.collation then s = s .. " COLLATE " .. qi(c.collation) end
  if c.generated then
    s = s .. " GENERATED ALWAYS AS (" .. c.generated .. ") STORED"
  elseif c.identity then
    s = s .. " GENERATED " .. c.identity:upper() .. " AS IDENTITY"
  elseif c.default then
    s = s .. " DEFAULT " .. c.default
  end
  if c.not_null then s = s .. " NOT NULL" end
  return s
end
M.column_ddl = column_ddl

local function table_ddl(t)
  local head = "CREATE " .. (t.persistence == "unlogged" and "UNLOGGED " or "") .. "TABLE " .. t.qname
  if t.partition_of then
    return string.format("%s PARTITION OF %s %s%s;", head,
      catalog.qname(t.partition_of.schema, t.partition_of.name), t.partition_bound or "DEFAULT",
      t.partition_key and (" PARTITION BY " .. t.partition_key) or "")
  end
  local cols = {}
  for _, c in ipairs(t.columns or {}) do
    if not c.inherited then cols[#cols + 1] = "  " .. column_ddl(c) end
  end
  local s = head .. " (\n" .. table.concat(cols, ",\n") .. "\n)"
  if t.inherits and #t.inherits > 0 then
    local ps = {}
    for _, p in ipairs(t.inherits) do ps[#ps + 1] = catalog.qname(p.schema, p.name) end
    s = s .. " INHERITS (" .. table.concat(ps, ", ") .. ")"
  end
  if t.partition_key then s = s .. " PARTITION BY " .. t.partition_key end
  return s .. ";"
end
M.table_ddl = table_ddl

local function type_ddl(t)
  if t.kind == "enum" then
    local labels = {}
    for _, l in ipairs(t.labels or {}) do labels[#labels + 1] = ql(l) end
    return string.format("CREATE TYPE %s AS ENUM (%s);", t.qname, table.concat(labels, ", "))
  elseif t.kind == "domain" then
    local s = string.format("CREATE DOMAIN %s AS %s", t.qname, t.base_type)
    if t.default then s = s .. " DEFAULT " .. t.default end
    if t.not_null then s = s .. " NOT NULL" end
    for _, c in ipairs(t.constraints or {}) do
      s = s .. " CONSTRAINT " .. qi(c.name) .. " " .. c.definition
    end
    return s .. ";"
  elseif t.kind == "composite" then
    local attrs = {}
    for _, a in ipairs(t.attributes or {}) do attrs[#attrs + 1] = qi(a.name) .. " " .. a.type end
    return string.format("CREATE TYPE %s AS (%s);", t.qname, table.concat(attrs, ", "))
  elseif t.kind == "range" and t.subtype then
    return string.format("CREATE TYPE %s AS RANGE (SUBTYPE = %s);", t.qname, t.subtype)
  end
  return nil
end

local function sequence_ddl(s)
  return string.format("CREATE SEQUENCE %s AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s"
    .. " START WITH %s CACHE %s%s;", s.qname, s.data_type, tostring(s.increment), tostring(s.min),
    tostring(s.max), tostring(s.start), tostring(s.cache), s.cycle and " CYCLE" or "")
end

local function setval_ddl(s, value)
  return string.format("SELECT pg_catalog.setval(%s, %s, true);", ql(s.qname), tostring(value))
end

local function view_ddl(v, replace)
  if v.kind == "materialized view" then
    return string.format("CREATE MATERIALIZED VIEW %s AS\n%s\nWITH %sDATA;", v.qname,
      (v.definition:gsub(";%s*$", "")), v.populated == false and "NO " or "")
  end
  return string.format("CREATE %sVIEW %s AS\n%s", replace and "OR REPLACE " or "", v.qname,
    v.definition)
end

local function policy_ddl(p)
  local roles = {}
  for _, r in ipairs(p.roles or {}) do roles[#roles + 1] = r == "public" and "PUBLIC" or qi(r) end
  local s = string.format("CREATE POLICY %s ON %s AS %s FOR %s TO %s", qi(p.name),
    catalog.qname(p.schema, p.table), p.permissive and "PERMISSIVE" or "RESTRICTIVE", p.command,
    #roles > 0 and table.concat(roles, ", ") or "PUBLIC")
  if p.using then s = s .. " USING (" .. p.using .. ")" end
  if p.with_check then s = s .. " WITH CHECK (" .. p.with_check .. ")" end
  return s .. ";"
end

local TRIGGER_ENABLE = { origin = "ENABLE", disabled = "DISABLE", replica = "ENABLE REPLICA",
                         always = "ENABLE ALWAYS" }

-- }==================================================================


-- {==================================================================
-- Comparison
-- ===================================================================

local function k2(a, b) return a .. "." .. b end
local function k3(a, b, c) return a .. "." .. b .. "." .. c end

-- Per kind: how objects are named, which fields are compared, what is
-- skipped, and how fixes are derived.
local SPEC = {}

SPEC.schemas = {
  key = function(o) return o.name end,
  label = function(o) return qi(o.name) end,
  skip = function(o) return o.extension ~= nil end,      -- created by CREATE EXTENSION
  fields = {},
  create = function(o) return "CREATE SCHEMA " .. qi(o.name) .. ";" end,
  -- a schema the source lacks: everything in it is extra too (without CASCADE the drop
  -- fails as soon as it holds anything)
  drop = function(o) return "DROP SCHEMA " .. qi(o.name) .. " CASCADE;" end,
}

SPEC.extensions = {
  key = function(o) return o.name end,
  label = function(o) return o.name end,
  fields = { "version", "schema" },
  create = function(o)
    return string.format("CREATE EXTENSION IF NOT EXISTS %s WITH SCHEMA %s VERSION %s;", qi(o.name),
      qi(o.schema), ql(o.version))
  end,
  drop = function(o) return "DROP EXTENSION " .. qi(o.name) .. ";" end,
  alter = function(o, _, field)
    if field == "version" then
      return string.format("ALTER EXTENSION %s UPDATE TO %s;", qi(o.name), ql(o.version))
    elseif field == "schema" then
      return string.format("ALTER EXTENSION %s SET SCHEMA %s;", qi(o.name), qi(o.schema))
    end
  end,
}

-- Enum labels: when the target's labels are the source's minus some, in
-- the same order, ADD VALUE restores them; anything else needs a rebuild.
local function enum_fix(src, tgt)
  local have = {}
  for _, l in ipairs(tgt.labels or {}) do have[l] = true end
  local j, out = 1, {}
  for i, l in ipairs(src.labels or {}) do
    if tgt.labels[j] == l then
      j = j + 1
    elseif have[l] then
      return nil    -- reordered
    else
      local where = i > 1 and (" AFTER " .. ql(src.labels[i - 1])) or
                    (src.labels[i + 1] and (" BEFORE " .. ql(src.labels[i + 1])) or "")
      out[#out + 1] = string.format("ALTER TYPE %s ADD VALUE %s%s;", src.qname, ql(l), where)
    end
  end
  if j <= #(tgt.labels or {}) then return nil end   -- target has labels the source lacks
  return table.concat(out, "\n")
end

SPEC.types = {
  key = function(o) return k2(o.schema, o.name) end,
  label = function(o) return o.qname end,
  fields = { "kind", "labels", "base_type", "not_null", "default", "constraints", "attributes",
             "subtype" },
  create = type_ddl,
  drop = function(o)
    return (o.kind == "domain" and "DROP DOMAIN " or "DROP TYPE ") .. o.qname .. ";"
  end,
  alter = function(o, p, field)
    if field == "labels" then return enum_fix(o, p) end
    if o.kind ~= "domain" then return nil end
    if field == "not_null" then
      return string.format("ALTER DOMAIN %s %s NOT NULL;", o.qname, o.not_null and "SET" or "DROP")
    elseif field == "default" then
      return o.default and string.format("ALTER DOMAIN %s SET DEFAULT %s;", o.qname, o.default)
        or string.format("ALTER DOMAIN %s DROP DEFAULT;", o.qname)
    elseif field == "constraints" then
      local theirs, out = {}, {}
      for _, c in ipairs(p.constraints or {}) do theirs[c.name] = c end
      for _, c in ipairs(o.constraints or {}) do
        local t = theirs[c.name]
        if not t then
          out[#out + 1] = string.format("ALTER DOMAIN %s ADD CONSTRAINT %s %s;", o.qname, qi(c.name),
            c.definition)
        elseif t.definition ~= c.definition then
          out[#out + 1] = string.format("ALTER DOMAIN %s DROP CONSTRAINT %s;", o.qname, qi(c.name))
          out[#out + 1] = string.format("ALTER DOMAIN %s ADD CONSTRAINT %s %s;", o.qname, qi(c.name),
            c.definition)
        elseif c.validated and not t.validated then
          out[#out + 1] = string.format("ALTER DOMAIN %s VALIDATE CONSTRAINT %s;", o.qname, qi(c.name))
        end
      end
      return #out > 0 and table.concat(out, "\n") or nil
    end
  end,
}

local function table_alter(o, p, field)
  if field == "persistence" then
    return string.format("ALTER TABLE %s SET %s;", o.qname,
      o.persistence == "unlogged" and "UNLOGGED" or "LOGGED")
  elseif field == "replica_identity" or field == "replica_identity_index" then
    local ri = o.replica_identity or "default"
    if ri == "index" and o.replica_identity_index then
      return string.format("ALTER TABLE %s REPLICA IDENTITY USING INDEX %s;", o.qname,
        qi(o.replica_identity_index))
    end
    return string.format("ALTER TABLE %s REPLICA IDENTITY %s;", o.qname, ri:upper())
  elseif field == "rls_enabled" then
    return string.format("ALTER TABLE %s %s ROW LEVEL SECURITY;", o.qname,
      o.rls_enabled and "ENABLE" or "DISABLE")
  elseif field == "rls_forced" then
    return string.format("ALTER TABLE %s %sFORCE ROW LEVEL SECURITY;", o.qname,
      o.rls_forced and "" or "NO ")
  end
  return nil
end

SPEC.tables = {
  key = function(o) return k2(o.schema, o.name) end,
  label = function(o) return o.qname end,
  fields = { "kind", "persistence", "partition_of", "partition_bound", "partition_key",
             "inherits", "replica_identity", "replica_identity_index", "rls_enabled",
             "rls_forced" },
  create = table_ddl,
  drop = function(o) return "DROP TABLE " .. o.qname .. ";" end,
  alter = table_alter,
}

-- Column fields compared, and the ALTER that fixes each.
local COLUMN_FIELDS = { "type", "collation", "not_null", "default", "generated", "identity",
                        "position" }

local function column_alter(t, c, d, field)
  local col = string.format("ALTER TABLE %s ALTER COLUMN %s", t.qname, qi(c.name))
  if field == "type" or field == "collation" then
    return string.format("%s TYPE %s%s;", col, c.type,
      c.collation and (" COLLATE " .. qi(c.collation)) or "")
  elseif field == "not_null" then
    return string.format("%s %s NOT NULL;", col, c.not_null and "SET" or "DROP")
  elseif field == "default" then
    return c.default and string.format("%s SET DEFAULT %s;", col, c.default)
      or string.format("%s DROP DEFAULT;", col)
  elseif field == "identity" then
    if c.identity and not d.identity then
      return string.format("%s ADD GENERATED %s AS IDENTITY;", col, c.identity:upper())
    elseif c.identity then
      return string.format("%s SET GENERATED %s;", col, c.identity:upper())
    end
    return string.format("%s DROP IDENTITY;", col)
  end
  return nil   -- generated expressions and column order need a rebuild
end

SPEC.sequences = {
  key = function(o) return k2(o.schema, o.name) end,
  label = function(o) return o.qname end,
  skip = function(o) return o.identity end,     -- comes with its identity column
  fields = { "data_type", "start", "increment", "min", "max", "cache", "cycle", "owned_by" },
  create = function(o)
    local s = sequence_ddl(o)
    if o.last_value then s = s .. "\n" .. setval_ddl(o, o.last_value) end
    if o.owned_by then
      s = s .. string.format("\nALTER SEQUENCE %s OWNED BY %s.%s;", o.qname,
        catalog.qname(o.owned_by.schema, o.owned_by.table), qi(o.owned_by.column))
    end
    return s
  end,
  drop = function(o) return "DROP SEQUENCE " .. o.qname .. ";" end,
  alter = function(o, _, field)
    local map = { increment = "INCREMENT BY %s", min = "MINVALUE %s", max = "MAXVALUE %s",
                  start = "START WITH %s", cache = "CACHE %s", data_type = "AS %s" }
    if map[field] then
      return string.format("ALTER SEQUENCE %s " .. map[field] .. ";", o.qname, tostring(o[field]))
    elseif field == "cycle" then
      return string.format("ALTER SEQUENCE %s %sCYCLE;", o.qname, o.cycle and "" or "NO ")
    elseif field == "owned_by" then
      return string.format("ALTER SEQUENCE %s OWNED BY %s;", o.qname, o.owned_by and
        (catalog.qname(o.owned_by.schema, o.owned_by.table) .. "." .. qi(o.owned_by.column)) or "NONE")
    end
  end,
}

SPEC.indexes = {
  key = function(o) return k2(o.schema, o.name) end,
  label = function(o) return o.qname end,
  -- indexes behind constraints come with the constraint; partition
  -- indexes come with the parent's index
  skip = function(o) return o.constraint ~= nil or o.parent ~= nil end,
  fields = { "table", "definition", "valid" },
  create = function(o) return o.definition .. ";" end,
  drop = function(o) return "DROP INDEX " .. o.qname .. ";" end,
  alter = function(o, _, field)
    if field == "valid" then return "REINDEX INDEX " .. o.qname .. ";" end
    return "DROP INDEX " .. o.qname .. ";\n" .. o.definition .. ";"
  end,
}

SPEC.constraints = {
  key = function(o) return k3(o.schema, o.table, o.name) end,
  label = function(o) return o.qtable .. "." .. qi(o.name) end,
  -- clones on partitions and inherited copies come with the parent's
  skip = function(o) return o.partition_clone or o.inherited end,
  fields = { "type", "definition", "validated", "deferrable", "deferred" },
  normalize = { definition = strip_not_valid },
  create = function(o)
    return string.format("ALTER TABLE %s ADD CONSTRAINT %s %s;", o.qtable, qi(o.name), o.definition)
  end,
  drop = function(o)
    return string.format("ALTER TABLE %s DROP CONSTRAINT %s;", o.qtable, qi(o.name))
  end,
  alter = function(o, p, field)
    if field == "validated" and o.validated then
      return string.format("ALTER TABLE %s VALIDATE CONSTRAINT %s;", o.qtable, qi(o.name))
    elseif field == "validated" then
      return nil    -- the target is stricter than the source
    elseif (field == "deferrable" or field == "deferred") and o.type == "foreign key" then
      return string.format("ALTER TABLE %s ALTER CONSTRAINT %s %s INITIALLY %s;", o.qtable,
        qi(o.name), o.deferrable and "DEFERRABLE" or "NOT DEFERRABLE",
        o.deferred and "DEFERRED" or "IMMEDIATE")
    end
    return string.format("ALTER TABLE %s DROP CONSTRAINT %s;\nALTER TABLE %s ADD CONSTRAINT %s %s;",
      p.qtable, qi(p.name), o.qtable, qi(o.name), o.definition)
  end,
}

SPEC.views = {
  key = function(o) return k2(o.schema, o.name) end,
  label = function(o) return o.qname end,
  fields = { "kind", "definition", "populated" },
  create = function(o) return view_ddl(o, false) end,
  drop = function(o)
    return (o.kind == "materialized view" and "DROP MATERIALIZED VIEW " or "DROP VIEW ")
      .. o.qname .. ";"
  end,
  alter = function(o, _, field)
    if field == "populated" and o.kind == "materialized view" then
      return "REFRESH MATERIALIZED VIEW " .. o.qname .. ";"
    end
    if o.kind == "materialized view" then
      return "DROP MATERIALIZED VIEW " .. o.qname .. ";\n" .. view_ddl(o, false)
    end
    return view_ddl(o, true)
  end,
}

SPEC.functions = {
  key = function(o) return o.signature end,
  label = function(o) return o.signature end,
  fields = { "kind", "result", "language", "volatility", "security_definer", "strict",
             "definition_hash" },
  create = function(o) return o.definition_ddl end,    -- filled by run() for missing ones
  drop = function(o)
    local what = (o.kind == "procedure" and "PROCEDURE") or (o.kind == "aggregate" and "AGGREGATE")
      or "FUNCTION"
    return string.format("DROP %s %s;", what, o.signature)
  end,
  alter = function(o) return o.definition_ddl end,
}

SPEC.triggers = {
  key = function(o) return k3(o.schema, o.table, o.name) end,
  label = function(o) return catalog.qname(o.schema, o.table) .. "." .. qi(o.name) end,
  skip = function(o) return o.inherited end,    -- clones on partitions
  fields = { "definition", "enabled" },
  create = function(o)
    local s = o.definition .. ";"
    if o.enabled and o.enabled ~= "origin" then
      s = s .. string.format("\nALTER TABLE %s %s TRIGGER %s;", catalog.qname(o.schema, o.table),
        TRIGGER_ENABLE[o.enabled], qi(o.name))
    end
    return s
  end,
  drop = function(o)
    return string.format("DROP TRIGGER %s ON %s;", qi(o.name), catalog.qname(o.schema, o.table))
  end,
  alter = function(o, _, field)
    if field == "enabled" then
      return string.format("ALTER TABLE %s %s TRIGGER %s;", catalog.qname(o.schema, o.table),
        TRIGGER_ENABLE[o.enabled] or "ENABLE", qi(o.name))
    end
    return string.format("DROP TRIGGER %s ON %s;\n%s;", qi(o.name),
      catalog.qname(o.schema, o.table), o.definition)
  end,
}

SPEC.policies = {
  key = function(o) return k3(o.schema, o.table, o.name) end,
  label = function(o) return catalog.qname(o.schema, o.table) .. "." .. qi(o.name) end,
  fields = { "command", "permissive", "roles", "using", "with_check" },
  create = policy_ddl,
  drop = function(o)
    return string.format("DROP POLICY %s ON %s;", qi(o.name), catalog.qname(o.schema, o.table))
  end,
  alter = function(o)
    return string.format("DROP POLICY %s ON %s;\n%s", qi(o.name),
      catalog.qname(o.schema, o.table), policy_ddl(o))
  end,
}

-- Sequences: the target must not be behind the source, or the first
-- inserts after cutover collide with copied keys.
local function sequence_behind(o, p)
  if o.last_value == nil then return false end
  if p.last_value == nil then return true end
  local inc = tonumber(o.increment) or 1
  local a, b = tonumber(o.last_value), tonumber(p.last_value)
  if a == nil or b == nil then return false end
  if inc >= 0 then return b < a end
  return b > a
end

local function compare_columns(t, u, out)
  local theirs = {}
  for _, c in ipairs(u.columns or {}) do theirs[c.name] = c end
  local ours = {}
  for _, c in ipairs(t.columns or {}) do
    ours[c.name] = true
    local d = theirs[c.name]
    if not d then
      out[#out + 1] = { kind = "tables", object = t.qname, problem = "missing",
                        field = "column " .. c.name,
                        fix = string.format("ALTER TABLE %s ADD COLUMN %s;", t.qname, column_ddl(c)) }
    else
      for _, f in ipairs(COLUMN_FIELDS) do
        if not same(c[f], d[f]) then
          out[#out + 1] = { kind = "tables", object = t.qname, problem = "different",
                            field = "column " .. c.name .. " " .. f, source = show(c[f]),
                            target = show(d[f]), fix = column_alter(t, c, d, f),
                            note = f == "position" and "column order differs"
                              or (c.align_notes and c.align_notes[f]) or nil }
        end
      end
    end
  end
  for _, c in ipairs(u.columns or {}) do
    if not ours[c.name] then
      out[#out + 1] = { kind = "tables", object = t.qname, problem = "extra",
                        field = "column " .. c.name,
                        fix = string.format("ALTER TABLE %s DROP COLUMN %s;", t.qname, qi(c.name)) }
    end
  end
end

-- {==================================================================
-- Objects left out of the comparison (ignore_objects)
-- ===================================================================

-- A '*' glob -> an anchored Lua pattern.
local function glob(p)
  return "^" .. p:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", ".*") .. "$"
end

--[[
ignored(patterns) -> predicate(kind, o) -> true when the object is left
out.  For objects a replication tool creates for itself on either side
(AWS DMS: awsdms_apply_exceptions and awsdms_validation_failures_v1 on
the target, awsdms_heartbeat on the source): they belong to neither
database's schema.  A pattern is NAME or SCHEMA.NAME, '*' matching any
run of characters.  NAME matches an object's own name, the table a
constraint, index, trigger or policy belongs to, and a schema's name;
SCHEMA.NAME also needs the object's schema to match (a schema object
matches SCHEMA.*).  nil or an empty list ignores nothing.
]]
function M.ignored(patterns)
  if not patterns or #patterns == 0 then return function() return false end end
  local rules = {}
  for _, p in ipairs(patterns) do
    local schema, name = p:match("^([^.]+)%.(.+)$")
    rules[#rules + 1] = { schema = schema and glob(schema), name = glob(name or p) }
  end
  return function(kind, o)
    for _, r in ipairs(rules) do
      if kind == "schemas" then
        if r.schema then
          if o.name:find(r.schema) and ("*"):find(r.name) then return true end
        elseif o.name:find(r.name) then
          return true
        end
      elseif not r.schema or (o.schema and o.schema:find(r.schema)) then
        if (o.name and o.name:find(r.name)) or (o.table and o.table:find(r.name)) then return true end
      end
    end
    return false
  end
end

--[[
without(desc, patterns) -> a catalog.describe() picture without the
objects ignored(patterns) leaves out, and per schema the number of
tables (with views), sequences and indexes removed (the counts a
catalog.counts() comparison must discount).  'desc' is not changed.
]]
function M.without(desc, patterns)
  local skip = M.ignored(patterns)
  local out, removed = {}, {}
  local COUNTED = { tables = "tables", views = "tables", sequences = "sequences", indexes = "indexes" }
  for k, v in pairs(desc) do out[k] = v end
  for _, kind in ipairs(M.KINDS) do
    if desc[kind] then
      local kept = {}
      for _, o in ipairs(desc[kind]) do
        if skip(kind, o) then
          local c = COUNTED[kind]
          if c and o.schema then
            removed[o.schema] = removed[o.schema] or { tables = 0, sequences = 0, indexes = 0 }
            removed[o.schema][c] = removed[o.schema][c] + 1
          end
        else
          kept[#kept + 1] = o
        end
      end
      out[kind] = kept
    end
  end
  return out, removed
end

-- }==================================================================

local function bump(counts, kind, problem)
  counts[kind] = counts[kind] or { objects = 0, missing = 0, extra = 0, different = 0 }
  counts[kind][problem] = counts[kind][problem] + 1
end

--[[
compare(src, tgt [, opts]) -> result (see the top of this file).  src and
tgt are catalog.describe() results.  opts.kinds: compare only these kinds;
opts.tables: a set {["schema.table"] = true} limiting table-bound kinds
to those tables (other kinds are then skipped); opts.ignore = { kind = {
field = true } } skips fields; opts.ignore_objects = { patterns } leaves
the objects M.ignored(patterns) matches out on both sides.
]]
function M.compare(src, tgt, opts)
  opts = opts or {}
  if opts.ignore_objects and #opts.ignore_objects > 0 then
    src, tgt = M.without(src, opts.ignore_objects), M.without(tgt, opts.ignore_objects)
  end
  local wanted = util.set(opts.kinds)
  local TABLE_BOUND = { tables = true, indexes = true, constraints = true, triggers = true,
                        policies = true }
  local function in_scope(kind, o)
    if not opts.tables then return true end
    if not TABLE_BOUND[kind] then return false end
    return opts.tables[k2(o.schema, o.table or o.name)] == true
  end
  local out, counts, total = {}, {}, 0
  for _, kind in ipairs(M.KINDS) do
    local spec = SPEC[kind]
    if (not wanted or wanted[kind]) and (not opts.tables or TABLE_BOUND[kind]) then
      counts[kind] = { objects = 0, missing = 0, extra = 0, different = 0 }
      local mine, theirs = {}, {}
      for _, o in ipairs(src[kind] or {}) do
        if in_scope(kind, o) then mine[spec.key(o)] = o end
      end
      for _, o in ipairs(tgt[kind] or {}) do
        if in_scope(kind, o) then theirs[spec.key(o)] = o end
      end
      local skip = opts.ignore and opts.ignore[kind] or {}
      for _, o in ipairs(src[kind] or {}) do
        local key = spec.key(o)
        if mine[key] then
          local p = theirs[key]
          counts[kind].objects = counts[kind].objects + 1
          total = total + 1
          local before = #out
          if not p then
            if not (spec.skip and spec.skip(o)) then
              out[#out + 1] = { kind = kind, object = spec.label(o), problem = "missing",
                                fix = spec.create and spec.create(o) or nil }
            end
          else
            for _, f in ipairs(spec.fields) do
              local norm = spec.normalize and spec.normalize[f]
              local a, b = o[f], p[f]
              if norm then a, b = norm(a), norm(b) end
              if not skip[f] and not same(a, b) then
                out[#out + 1] = { kind = kind, object = spec.label(o), problem = "different",
                                  field = f, source = show(a), target = show(b),
                                  fix = spec.alter and spec.alter(o, p, f) or nil,
                                  note = o.align_notes and o.align_notes[f] or nil }
              end
            end
            if kind == "tables" and not skip.columns then compare_columns(o, p, out) end
            if kind == "sequences" and not skip.last_value and sequence_behind(o, p) then
              out[#out + 1] = { kind = kind, object = spec.label(o), problem = "different",
                                field = "last_value", source = show(o.last_value),
                                target = p.last_value == nil and "never used" or show(p.last_value),
                                note = "the target sequence is behind the source",
                                fix = setval_ddl(o, o.last_value) }
            end
          end
          for i = before + 1, #out do bump(counts, kind, out[i].problem) end
        end
      end
      for _, o in ipairs(tgt[kind] or {}) do
        local key = spec.key(o)
        if theirs[key] and not mine[key] and not (spec.skip and spec.skip(o)) then
          out[#out + 1] = { kind = kind, object = spec.label(o), problem = "extra",
                            fix = spec.drop and spec.drop(o) or nil }
          bump(counts, kind, "extra")
        end
      end
    end
  end
  return { differences = out, counts = counts, objects = total, ok = #out == 0 }
end

-- }==================================================================


-- {==================================================================
-- Against live servers
-- ===================================================================

-- Full definitions of the functions that need one for a fix (catalog
-- gives hashes only).  Aggregates have no pg_get_functiondef.
local function function_definitions(conn, list)
  for _, f in ipairs(list) do
    if f.kind ~= "aggregate" then
      local ok, row = pcall(conn.query_one, conn,
        "SELECT pg_catalog.pg_get_functiondef($1::pg_catalog.regprocedure) AS d", f.signature)
      if ok and row and row.d then f.definition_ddl = row.d:gsub("%s*$", "") .. ";" end
    end
  end
end

--[[
run(src_conn, tgt_conn [, opts]) -> result.  Describes both databases
(catalog.describe), recreates on the target the source definitions whose
text differs from the target's (pgtide.schema_align: definitions are
compared as the target's server prints them), and compares; opts as for
compare() (including ignore_objects), plus opts.filter (a catalog
filter: schemas / exclude_schemas).  result.aligned = { deparsed,
failed, notes }.  Raises the pg errors of the catalog queries.
]]
function M.run(src, tgt, opts)
  opts = opts or {}
  local a = catalog.describe(src, opts.filter)
  local b = catalog.describe(tgt, opts.filter)
  local aligned = schema_align.align(src, tgt, a, b)
  -- function definitions only for those that are missing or different
  local theirs = {}
  for _, f in ipairs(b.functions or {}) do theirs[f.signature] = f end
  local need = {}
  for _, f in ipairs(a.functions or {}) do
    local p = theirs[f.signature]
    if not p or p.definition_hash ~= f.definition_hash then need[#need + 1] = f end
  end
  if #need > 0 then function_definitions(src, need) end
  local result = M.compare(a, b, opts)
  result.source_version, result.target_version = a.server_version, b.server_version
  result.aligned = aligned
  return result
end

local SINGULAR = { schemas = "schema", extensions = "extension", types = "type", tables = "table",
                   sequences = "sequence", indexes = "index", constraints = "constraint",
                   views = "view", functions = "function", triggers = "trigger",
                   policies = "policy" }
M.SINGULAR = SINGULAR

-- A value for one summary line: whitespace collapsed, at most 'max' chars.
local function brief(v, max)
  v = tostring(v):gsub("%s+", " "):gsub("^ ", "")
  if #v > max then v = v:sub(1, max - 3) .. "..." end
  return v
end

-- One line per difference (fixes are shown by the caller).
function M.format(d)
  local s = string.format("%-9s %s %s", d.problem, SINGULAR[d.kind] or d.kind, d.object)
  if d.field then s = s .. " (" .. d.field .. ")" end
  if d.problem == "different" then
    s = s .. string.format(": source %s, target %s", brief(d.source, 60), brief(d.target, 60))
  end
  if d.note then s = s .. " -- " .. d.note end
  return s
end

-- }==================================================================

return M
