--[[
pgtide.schema_align: make the source's description comparable with the
target's when the two servers print the same definition differently.

  local a, b = catalog.describe(src, f), catalog.describe(dst, f)
  local info = schema_align.align(src, dst, a, b)   -- changes a in place
  -- then catalog.compare(a, b) or schema_diff.compare(a, b)

PostgreSQL keeps views, column defaults, generated columns, check
constraints, index expressions and predicates, policies, trigger WHEN
clauses and SQL-standard function bodies as parse trees, and prints them
back with its own deparser.  That deparser changes between major versions
(PostgreSQL 16 stopped qualifying the columns of a one-table query:
"SELECT kinds.md ... GROUP BY kinds.md" became "SELECT md ... GROUP BY
md"), and it does not always print a reparsed expression as it printed
the original ("(a AND b) AND c" comes back from a dump as "a AND b AND
c").  Comparing the two servers' texts reports differences that are not
there.

align() looks at every definition the source and the target both have.
Equal texts are left alone (no work at all when nothing differs).  When
they differ, the source's definition is recreated on the target as a
temporary object, read back with the target's deparser, and that text
replaces the source's in 'a': the comparison is then target against
target.  The temporary objects:
  views, materialized views   CREATE TEMP VIEW pgtide_deparse AS <query>
  functions, procedures       the definition as pg_temp.pgtide_deparse
  defaults, generated columns, check and exclusion constraints, indexes,
  policies, triggers          added to a temporary table made LIKE the
                              target's table
  domain defaults and checks  CREATE DOMAIN pg_temp.pgtide_deparse
Each is made inside a transaction (a savepoint when the connection is
already in one) that is rolled back at once, so nothing is ever left on
the target and only the TEMP privilege on its database is needed.  When
an object cannot be made (it uses something the target lacks, TEMP is not
granted, ...), the source's text stays, and the reason goes to
o.align_notes[field] (c.align_notes for columns), which the comparison
shows next to the difference.

Extension versions: pg_dump writes CREATE EXTENSION without a version, so
the target gets its server's default.  When the target has that default
and it is not older than the source's version, the source's version is
aligned and a note says so (the difference comes from the restore, not
from the schema).

Returns { deparsed = n (definitions recreated on the target), failed = n,
notes = { "extension hstore: ...", ... } }.  Raises only when a
connection fails.
]]
local pg = require "pg"
local sys = require "sys"
local errors = require "pgtide.errors"
local catalog = require "pgtide.catalog"

local M = {}

local TMP = "pgtide_deparse"          -- every temporary object's name
local UNDO = setmetatable({}, { __tostring = function() return "undo" end })

-- {==================================================================
-- Helpers
-- ===================================================================

local function reason(e)
  if pg.is_error(e) then return e.message end
  return errors.message(e)
end

--[[ scratch(conn, fn) -> ok, result | false, reason.  Runs fn() in a
  transaction (a savepoint when one is open) that is always rolled back,
  with search_path pg_catalog (definitions print schema-qualified, as the
  catalog reads them), no function body checks, and lock and statement
  timeouts.  Raises when the connection broke or on an interrupt
  (Ctrl-C). ]]
local function scratch(conn, fn)
  local ok, res
  local _, err = pcall(conn.transaction, conn, function()
    conn:exec([[SELECT pg_catalog.set_config('search_path', 'pg_catalog', true),
                       pg_catalog.set_config('check_function_bodies', 'off', true),
                       pg_catalog.set_config('lock_timeout', '5s', true),
                       pg_catalog.set_config('statement_timeout', '60s', true)]])
    ok, res = pcall(fn)
    error(UNDO, 0)
  end)
  local failure = (ok == false and res) or (ok == nil and err) or nil   -- nil: fn succeeded
  local st = conn:status()
  if st == "broken" or st == "closed" then
    error(failure or "the connection to the target was lost while rolling back", 0)
  end
  if failure and (sys.interrupted() or errors.is_interrupt(failure)) then error(failure, 0) end
  if failure then return false, reason(failure) end
  return true, res
end

-- The names as the server quotes them (its keyword list).
local quoted = require("pgtide.quote").idents

local function note(o, field, why)
  o.align_notes = o.align_notes or {}
  o.align_notes[field] = "could not be recreated on the target to compare it: " .. why
end

local function k2(a, b) return a .. "." .. b end
local function k3(a, b, c) return a .. "." .. b .. "." .. c end

local function index(list, key)
  local t = {}
  for _, o in ipairs(list or {}) do t[key(o)] = o end
  return t
end

-- Dotted version comparison: -1, 0 or 1 ("1.10" > "1.9"); nil when a
-- part is not a number.
local function vcmp(x, y)
  local function parts(v)
    local out = {}
    for n in tostring(v):gmatch("[^.]+") do
      local num = tonumber(n)
      if not num then return nil end
      out[#out + 1] = num
    end
    return out
  end
  local a, b = parts(x), parts(y)
  if not a or not b then return nil end
  for i = 1, math.max(#a, #b) do
    local p, q = a[i] or 0, b[i] or 0
    if p ~= q then return p < q and -1 or 1 end
  end
  return 0
end

-- }==================================================================


-- {==================================================================
-- One definition, recreated on the target
-- ===================================================================

local function view_text(tgt, def)
  tgt:exec("CREATE TEMP VIEW " .. TMP .. " AS\n" .. def:gsub("%s*;%s*$", ""))
  return tgt:query_one("SELECT pg_catalog.pg_get_viewdef('pg_temp." .. TMP
    .. "'::pg_catalog.regclass, true) AS d").d
end

--[[ A function's definition hash as the target prints it.  'src' is the
  source text from catalog.function_sources: "CREATE OR REPLACE FUNCTION
  app.f(...)...", made pg_temp.pgtide_deparse(...), read back, renamed to
  the target's spelling of the original name, hashed there. ]]
local function function_hash(tgt, f, source)
  local what = f.kind == "procedure" and "PROCEDURE" or "FUNCTION"
  local head = "CREATE OR REPLACE " .. what .. " " .. source.qname .. "("
  if source.definition:sub(1, #head) ~= head then
    error("its definition does not start with " .. head, 0)
  end
  tgt:exec("CREATE " .. what .. " pg_temp." .. TMP .. "(" .. source.definition:sub(#head + 1))
  local r = tgt:query_one([[SELECT pg_catalog.pg_get_functiondef(p.oid) AS d FROM pg_catalog.pg_proc p
                             WHERE p.pronamespace = pg_catalog.pg_my_temp_schema() AND p.proname = $1]], TMP)
  local prefix = r.d:match("^CREATE OR REPLACE " .. what .. " pg_temp[_%d]*%." .. TMP .. "%(")
  if not prefix then error("unexpected definition on the target: " .. r.d:sub(1, 80), 0) end
  local qs, qn = quoted(tgt, f.schema, f.name)
  local text = "CREATE OR REPLACE " .. what .. " " .. qs .. "." .. qn .. "(" .. r.d:sub(#prefix + 1)
  return tgt:query_one("SELECT pg_catalog.md5($1) AS h", text).h
end

-- The relation the temporary table's additions are read from.
local TMPREL = "'pg_temp." .. TMP .. "'::pg_catalog.regclass"

local function column_expr(tgt, c, field)
  local col = TMP .. "_c"
  if field == "generated" then
    tgt:exec(string.format("ALTER TABLE pg_temp.%s ADD COLUMN %s %s GENERATED ALWAYS AS (%s) STORED",
      TMP, col, c.type, c.generated))
  else
    tgt:exec(string.format("ALTER TABLE pg_temp.%s ADD COLUMN %s %s DEFAULT %s", TMP, col, c.type,
      c.default))
  end
  return tgt:query_one([[SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS e
      FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_attribute a
        ON a.attrelid = d.adrelid AND a.attnum = d.adnum
     WHERE d.adrelid = ]] .. TMPREL .. " AND a.attname = $1", col).e
end

local function constraint_text(tgt, def)
  tgt:exec(string.format("ALTER TABLE pg_temp.%s ADD CONSTRAINT %s_k %s", TMP, TMP, def))
  return tgt:query_one([[SELECT pg_catalog.pg_get_constraintdef(oid) AS d FROM pg_catalog.pg_constraint
                          WHERE conrelid = ]] .. TMPREL .. " AND conname = $1", TMP .. "_k").d
end

--[[ An index definition: "CREATE [UNIQUE] INDEX name ON [ONLY] t USING
  ..." with everything from USING on rebuilt on the temporary table,
  under the target's spelling of the names. ]]
local function index_text(src, tgt, ix)
  local function head(conn)
    local qi, qs, qt = quoted(conn, ix.name, ix.schema, ix.table)
    return string.format("CREATE %sINDEX %s ON %s%s.%s USING ", ix.unique and "UNIQUE " or "", qi,
      ix.partitioned and "ONLY " or "", qs, qt)
  end
  local h = head(src)
  if ix.definition:sub(1, #h) ~= h then error("its definition does not start with " .. h, 0) end
  tgt:exec(string.format("CREATE %sINDEX %s_i ON pg_temp.%s USING %s", ix.unique and "UNIQUE " or "",
    TMP, TMP, ix.definition:sub(#h + 1)))
  local d = tgt:query_one("SELECT pg_catalog.pg_get_indexdef(($1 || '_i')::pg_catalog.regclass) AS d",
    "pg_temp." .. TMP).d
  local tail = d:match("^CREATE [UNIQUE ]*INDEX " .. TMP .. "_i ON pg_temp[_%d]*%." .. TMP .. " USING (.*)$")
  if not tail then error("unexpected definition on the target: " .. d:sub(1, 80), 0) end
  return head(tgt) .. tail
end

local function policy_texts(tgt, p)
  local s = string.format("CREATE POLICY %s ON pg_temp.%s", TMP, TMP)
  if p.using then s = s .. " USING (" .. p.using .. ")" end
  if p.with_check then s = s .. " WITH CHECK (" .. p.with_check .. ")" end
  tgt:exec(s)
  local r = tgt:query_one([[SELECT pg_catalog.pg_get_expr(polqual, polrelid) AS u,
                                   pg_catalog.pg_get_expr(polwithcheck, polrelid) AS w
                              FROM pg_catalog.pg_policy WHERE polrelid = ]] .. TMPREL
                              .. " AND polname = $1", TMP)
  return { using = r.u, with_check = r.w }
end

--[[ A trigger definition: "CREATE [CONSTRAINT] TRIGGER name <when and
  events> ON table <the rest>", made on the temporary table, read back,
  and given the target's spelling of the original names. ]]
local function trigger_text(src, tgt, t)
  local cons = t.constraint_trigger and "CONSTRAINT " or ""
  local qn, qs, qt = quoted(src, t.name, t.schema, t.table)
  local h = "CREATE " .. cons .. "TRIGGER " .. qn .. " "
  local on = " ON " .. qs .. "." .. qt .. " "
  local p = t.definition:sub(1, #h) == h and t.definition:find(on, #h, true)
  if not p then error("its definition does not have the form " .. h .. "... " .. on .. "...", 0) end
  tgt:exec(string.format("CREATE %sTRIGGER %s %s ON pg_temp.%s %s", cons, TMP,
    t.definition:sub(#h + 1, p - 1), TMP, t.definition:sub(p + #on)))
  local d = tgt:query_one([[SELECT pg_catalog.pg_get_triggerdef(oid) AS d FROM pg_catalog.pg_trigger
                             WHERE tgrelid = ]] .. TMPREL .. " AND tgname = $1", TMP).d
  local events, rest = d:match("^CREATE " .. cons .. "TRIGGER " .. TMP .. " (.-) ON [pg_temp_%d.]*"
    .. TMP .. " (.*)$")
  if not events then error("unexpected definition on the target: " .. d:sub(1, 80), 0) end
  qn, qs, qt = quoted(tgt, t.name, t.schema, t.table)
  return "CREATE " .. cons .. "TRIGGER " .. qn .. " " .. events .. " ON " .. qs .. "." .. qt .. " " .. rest
end

-- }==================================================================


-- {==================================================================
-- Alignment
-- ===================================================================

--[[ The per-table work: every definition tied to a table ('jobs', each
  { run = fn() -> text, done = fn(ok, text_or_reason) }) is recreated on
  one temporary table made LIKE the target's table, each in its own
  savepoint. ]]
local function run_table(tgt, schema, name, jobs, stats)
  local qs, qt = quoted(tgt, schema, name)
  local ok, why = scratch(tgt, function()
    tgt:exec(string.format("CREATE TEMP TABLE %s (LIKE %s.%s)", TMP, qs, qt))
    for _, j in ipairs(jobs) do
      j.finished = true
      j.done(scratch(tgt, j.run))
    end
  end)
  if not ok then
    for _, j in ipairs(jobs) do
      if not j.finished then j.done(false, why) end
    end
  end
  for _, j in ipairs(jobs) do
    stats.deparsed = stats.deparsed + 1
    if j.failed then stats.failed = stats.failed + 1 end
  end
end

-- A job that replaces obj[field] with the recreated text (or notes why not).
local function job(obj, field, run)
  local j = { run = run }
  j.done = function(ok, res)
    if ok and res ~= nil then obj[field] = res
    else j.failed = true; note(obj, field, ok and "the target printed nothing" or res) end
  end
  return j
end

local function align_extensions(tgt, a, b, info)
  local theirs = index(b.extensions, function(o) return o.name end)
  local differ = {}
  for _, e in ipairs(a.extensions or {}) do
    local t = theirs[e.name]
    if t and t.version ~= e.version then differ[#differ + 1] = e end
  end
  if #differ == 0 then return end
  local names = {}
  for i, e in ipairs(differ) do names[i] = e.name end
  local default = {}
  for _, r in ipairs(tgt:query([[SELECT name, default_version FROM pg_catalog.pg_available_extensions
                                  WHERE name = ANY ($1::text[])]], names)) do
    default[r.name] = r.default_version
  end
  for _, e in ipairs(differ) do
    local t = theirs[e.name]
    local c = vcmp(t.version, e.version)
    if t.version == default[e.name] and c and c > 0 then
      info.notes[#info.notes + 1] = string.format("extension %s: version %s on the source, %s on the "
        .. "target (its server's default, which a restore installs; ALTER EXTENSION %s UPDATE on the "
        .. "source gives the same)", e.name, e.version, t.version, e.name)
      e.version = t.version
    end
  end
end

local function align_views(tgt, a, b, info)
  local theirs = index(b.views, function(o) return k2(o.schema, o.name) end)
  for _, v in ipairs(a.views or {}) do
    local t = theirs[k2(v.schema, v.name)]
    if t and t.definition ~= v.definition and v.definition then
      local ok, res = scratch(tgt, function() return view_text(tgt, v.definition) end)
      info.deparsed = info.deparsed + 1
      if ok then v.definition = res else info.failed = info.failed + 1; note(v, "definition", res) end
    end
  end
end

local function align_functions(src, tgt, a, b, info)
  local theirs = index(b.functions, function(o) return o.signature end)
  local todo, oids = {}, {}
  for _, f in ipairs(a.functions or {}) do
    local t = theirs[f.signature]
    if t and f.kind ~= "aggregate" and t.definition_hash ~= f.definition_hash and f.oid then
      todo[#todo + 1] = f
      oids[#oids + 1] = f.oid
    end
  end
  if #todo == 0 then return end
  local sources = catalog.function_sources(src, nil, oids)
  for _, f in ipairs(todo) do
    info.deparsed = info.deparsed + 1
    local ok, res = false, "it no longer exists on the source"
    if sources[f.oid] then
      ok, res = scratch(tgt, function() return function_hash(tgt, f, sources[f.oid]) end)
    end
    if ok then f.definition_hash = res else info.failed = info.failed + 1; note(f, "definition_hash", res) end
  end
end

local function align_domains(tgt, a, b, info)
  local theirs = index(b.types, function(o) return k2(o.schema, o.name) end)
  for _, d in ipairs(a.types or {}) do
    local t = theirs[k2(d.schema, d.name)]
    if d.kind == "domain" and t and t.kind == "domain" then
      local tcons = index(t.constraints, function(c) return c.name end)
      local cons = {}
      for _, c in ipairs(d.constraints or {}) do
        local tc = tcons[c.name]
        if tc and tc.definition ~= c.definition then cons[#cons + 1] = c end
      end
      local redo_default = d.default and t.default and d.default ~= t.default
      if redo_default or #cons > 0 then
        local ok, why = scratch(tgt, function()
          tgt:exec(string.format("CREATE DOMAIN pg_temp.%s AS %s%s", TMP, d.base_type,
            redo_default and (" DEFAULT " .. d.default) or ""))
          if redo_default then
            d.default = tgt:query_one([[SELECT typdefault AS d FROM pg_catalog.pg_type
              WHERE typnamespace = pg_catalog.pg_my_temp_schema() AND typname = $1]], TMP).d
            info.deparsed = info.deparsed + 1
          end
          for _, c in ipairs(cons) do
            local okc, res = scratch(tgt, function()
              tgt:exec(string.format("ALTER DOMAIN pg_temp.%s ADD CONSTRAINT %s_k %s", TMP, TMP,
                c.definition))
              return tgt:query_one([[SELECT pg_catalog.pg_get_constraintdef(c.oid) AS d
                  FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_type t ON t.oid = c.contypid
                 WHERE t.typnamespace = pg_catalog.pg_my_temp_schema() AND t.typname = $1
                   AND c.conname = $2]], TMP, TMP .. "_k").d
            end)
            info.deparsed = info.deparsed + 1
            if okc then c.definition = res
            else info.failed = info.failed + 1; note(d, "constraints", "constraint " .. c.name .. ": " .. res) end
          end
        end)
        if not ok then   -- the domain itself could not be made
          local n = (redo_default and 1 or 0) + #cons
          info.deparsed, info.failed = info.deparsed + n, info.failed + n
          if redo_default then note(d, "default", why) end
          if #cons > 0 then note(d, "constraints", why) end
        end
      end
    end
  end
end

-- Column defaults and generated expressions, check and exclusion
-- constraints, indexes, policies and triggers, grouped by table.
local function align_tables(src, tgt, a, b, info)
  local work, order = {}, {}
  local function add(schema, name, j)
    local k = k2(schema, name)
    if not work[k] then
      work[k] = { schema = schema, name = name, jobs = {} }
      order[#order + 1] = work[k]
    end
    local list = work[k].jobs
    list[#list + 1] = j
  end
  local ttables = index(b.tables, function(o) return k2(o.schema, o.name) end)
  for _, t in ipairs(a.tables or {}) do
    local u = ttables[k2(t.schema, t.name)]
    if u then
      local ucols = index(u.columns, function(c) return c.name end)
      for _, c in ipairs(t.columns or {}) do
        local d = ucols[c.name]
        for _, field in ipairs { "default", "generated" } do
          if d and c[field] and d[field] and c[field] ~= d[field] then
            add(t.schema, t.name, job(c, field, function() return column_expr(tgt, c, field) end))
          end
        end
      end
    end
  end
  local tcons = index(b.constraints, function(o) return k3(o.schema, o.table, o.name) end)
  for _, c in ipairs(a.constraints or {}) do
    local d = tcons[k3(c.schema, c.table, c.name)]
    if d and (c.type == "check" or c.type == "exclusion") and c.definition ~= d.definition then
      add(c.schema, c.table, job(c, "definition", function() return constraint_text(tgt, c.definition) end))
    end
  end
  local tidx = index(b.indexes, function(o) return k2(o.schema, o.name) end)
  for _, ix in ipairs(a.indexes or {}) do
    local d = tidx[k2(ix.schema, ix.name)]
    if d and d.table == ix.table and ix.definition ~= d.definition then
      add(ix.schema, ix.table, job(ix, "definition", function() return index_text(src, tgt, ix) end))
    end
  end
  local tpol = index(b.policies, function(o) return k3(o.schema, o.table, o.name) end)
  for _, p in ipairs(a.policies or {}) do
    local d = tpol[k3(p.schema, p.table, p.name)]
    if d and (p.using ~= d.using or p.with_check ~= d.with_check) then
      local j = { run = function() return policy_texts(tgt, p) end }
      j.done = function(ok, res)
        if ok then p.using, p.with_check = res.using, res.with_check
        else
          j.failed = true
          if p.using ~= d.using then note(p, "using", res) end
          if p.with_check ~= d.with_check then note(p, "with_check", res) end
        end
      end
      add(p.schema, p.table, j)
    end
  end
  local ttrg = index(b.triggers, function(o) return k3(o.schema, o.table, o.name) end)
  for _, t in ipairs(a.triggers or {}) do
    local d = ttrg[k3(t.schema, t.table, t.name)]
    if d and t.definition ~= d.definition then
      add(t.schema, t.table, job(t, "definition", function() return trigger_text(src, tgt, t) end))
    end
  end
  for _, w in ipairs(order) do run_table(tgt, w.schema, w.name, w.jobs, info) end
end

--[[ align(src, tgt, a, b) -> { deparsed, failed, notes }: see the top of
  this file.  'a' and 'b' are catalog.describe() results of the source
  (read on 'src') and of the target (read on 'tgt'); 'a' is changed. ]]
function M.align(src, tgt, a, b)
  local info = { deparsed = 0, failed = 0, notes = {} }
  align_extensions(tgt, a, b, info)
  align_views(tgt, a, b, info)
  align_functions(src, tgt, a, b, info)
  align_domains(tgt, a, b, info)
  align_tables(src, tgt, a, b, info)
  return info
end

-- }==================================================================

return M
