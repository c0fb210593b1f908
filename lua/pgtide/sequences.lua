--[[
pgtide.sequences: sequence synchronisation (the seed's "Post-Migration
Sequence Synchronization").

DMS does not migrate sequence values.  The seed reads last_value on the
source and runs setval(seq, last_value + 1000) on the target.  This does
the same for every sequence in scope, and also:
  - handles sequences never used on the source (left at their start),
    descending sequences (the margin goes the other way), and sequences
    whose bounds the margin would cross (clamped, reported);
  - never moves a target sequence backwards;
  - makes sure a sequence owned by a column ends up past max(column) on
    the target (the troubleshooting section's "sequence values too low");
  - verifies the result: every target sequence at least source + margin
    (or past the data), and names any sequence missing on the target.

  local r = sequences.sync { src = conn, dst = conn, margin = 1000, scope = fn }
  -- r.synced, r.unchanged, r.missing: lists of { schema, name, source, target, ... }
  sequences.verify { src = conn, dst = conn, margin = 1000, scope = fn }  -- raises
  sequences.lines(r)  -> printable lines
]]
local runbook = require "pgtide.runbook"

local M = {}

-- Every sequence with its state and, when owned by a column, that column.
local SEQ_SQL = [[
  select s.schemaname as schema, s.sequencename as name,
         s.last_value::text as last_value, s.start_value::text as start_value,
         s.increment_by::text as increment, s.min_value::text as min_value,
         s.max_value::text as max_value,
         tn.nspname as owner_schema, tc.relname as owner_table, a.attname as owner_column
    from pg_sequences s
    join pg_namespace n on n.nspname = s.schemaname
    join pg_class c on c.relnamespace = n.oid and c.relname = s.sequencename
    left join pg_depend d on d.objid = c.oid and d.classid = 'pg_class'::regclass
                          and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
    left join pg_class tc on tc.oid = d.refobjid
    left join pg_namespace tn on tn.oid = tc.relnamespace
    left join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
   where s.schemaname not in ('pg_catalog', 'information_schema')
   order by 1, 2]]

-- Sequence values are int8: keep them as Lua integers (exact).
local function int(s) return s and math.tointeger(tonumber(s)) end

--[[
sequences.list(conn [, scope]) -> list of sequence records (schema, name,
last_value (nil when never used), start, increment, min, max, owner =
{schema, table, column} or nil).  'scope(schema, name)' filters by the
sequence's own name, or by its owning table when it has one.
]]
function M.list(conn, scope)
  local out = {}
  for _, r in ipairs(conn:query(SEQ_SQL)) do
    local owner = r.owner_table and { schema = r.owner_schema, table = r.owner_table,
                                      column = r.owner_column } or nil
    local keep = true
    if scope then
      if owner then keep = scope(owner.schema, owner.table) else keep = scope(r.schema, r.name) end
    end
    if keep then
      out[#out + 1] = {
        schema = r.schema, name = r.name, last_value = int(r.last_value),
        start = int(r.start_value), increment = int(r.increment), min = int(r.min_value),
        max = int(r.max_value), owner = owner,
      }
    end
  end
  return out
end

local function key(s) return s.schema .. "." .. s.name end

-- max(column) of an owning column on conn, as an integer (nil when empty
-- or not an integer column).
local function column_max(conn, owner)
  local sql = string.format("select max(%s)::text as m from %s.%s", conn:quote_ident(owner.column),
    conn:quote_ident(owner.schema), conn:quote_ident(owner.table))
  local ok, row = pcall(conn.query_one, conn, sql)
  if not ok or not row then return nil end
  return int(row.m)
end

--[[
The value the target sequence should have: the source's last value plus
the margin in the sequence's direction, at least past max(owner column)
on the target, never behind the target's current value, within bounds.
Returns value, note (a remark for the report, or nil).
]]
local function wanted(srcseq, dstseq, margin, data_max)
  local inc = srcseq.increment or 1
  local up = inc > 0
  local v, note
  if srcseq.last_value == nil then
    if data_max == nil then return nil, "never used on the source" end
    v = data_max
  else
    v = up and (srcseq.last_value + margin) or (srcseq.last_value - margin)
  end
  if data_max and up and v <= data_max then v = data_max; note = "raised past max() of the data" end
  if data_max and not up and v >= data_max then v = data_max; note = "lowered past min() of the data" end
  if dstseq.last_value then
    if up and dstseq.last_value > v then return nil, "target already ahead" end
    if not up and dstseq.last_value < v then return nil, "target already ahead" end
  end
  local max, min = dstseq.max or math.maxinteger, dstseq.min or math.mininteger
  if v > max then v = max; note = "clamped to the sequence's MAXVALUE" end
  if v < min then v = min; note = "clamped to the sequence's MINVALUE" end
  return v, note
end

--[[
sequences.sync(opts) -> result.  opts: src, dst (connections), margin
(default 1000), scope (function(schema, name) -> bool).  Runs setval on
the target for each sequence in scope.  Result lists: synced (with
source, before, after, note), unchanged (with reason), missing (on the
target).  Raises on database errors only.
]]
function M.sync(opts)
  local margin = opts.margin or 1000
  local src, dst = assert(opts.src), assert(opts.dst)
  local target = {}
  for _, s in ipairs(M.list(dst)) do target[key(s)] = s end
  local res = { synced = {}, unchanged = {}, missing = {}, margin = margin }
  for _, s in ipairs(M.list(src, opts.scope)) do
    local t = target[key(s)]
    if not t then
      res.missing[#res.missing + 1] = { schema = s.schema, name = s.name, source = s.last_value }
    else
      local data_max
      if t.owner then
        data_max = column_max(dst, t.owner)
        if data_max and (s.increment or 1) < 0 then
          local sql = string.format("select min(%s)::text as m from %s.%s", dst:quote_ident(t.owner.column),
            dst:quote_ident(t.owner.schema), dst:quote_ident(t.owner.table))
          local ok, row = pcall(dst.query_one, dst, sql)
          data_max = ok and row and int(row.m) or nil
        end
      end
      local v, note = wanted(s, t, margin, data_max)
      if v then
        dst:query_one("select setval($1::regclass, $2::bigint, true)",
          string.format("%s.%s", dst:quote_ident(s.schema), dst:quote_ident(s.name)), v)
        res.synced[#res.synced + 1] = { schema = s.schema, name = s.name, source = s.last_value,
                                        before = t.last_value, after = v, note = note }
      else
        res.unchanged[#res.unchanged + 1] = { schema = s.schema, name = s.name, source = s.last_value,
                                              target = t.last_value, reason = note }
      end
    end
  end
  return res
end

--[[
sequences.check(opts) -> problems (list of strings; empty when fine).
Each target sequence in scope must exist, be at least the source's
last value + margin (in its direction) unless the source never used it,
and be past max() of its owning column on the target.  Reads only.
]]
function M.check(opts)
  local margin = opts.margin or 1000
  local src, dst = assert(opts.src), assert(opts.dst)
  local target = {}
  for _, s in ipairs(M.list(dst)) do target[key(s)] = s end
  local problems = {}
  for _, s in ipairs(M.list(src, opts.scope)) do
    local t = target[key(s)]
    local up = (s.increment or 1) > 0
    if not t then
      problems[#problems + 1] = string.format("%s is missing on the target", key(s))
    else
      if s.last_value ~= nil then
        local need = up and s.last_value + margin or s.last_value - margin
        if need > (t.max or math.maxinteger) then need = t.max end
        if need < (t.min or math.mininteger) then need = t.min end
        local have = t.last_value
        if have == nil or (up and have < need) or (not up and have > need) then
          problems[#problems + 1] = string.format("%s is %s on the target, source is %d (needs %d with "
            .. "margin %d)", key(s), have and tostring(have) or "unused", s.last_value, need, margin)
        end
      end
      if t.owner and up then
        local m = column_max(dst, t.owner)
        if m and (t.last_value == nil or t.last_value < m) then
          problems[#problems + 1] = string.format("%s is %s on the target, behind max(%s.%s.%s) = %d",
            key(s), tostring(t.last_value or "unused"), t.owner.schema, t.owner.table, t.owner.column, m)
        end
      end
    end
  end
  return problems
end

-- sequences.verify(opts): sequences.check, raising with every problem.
function M.verify(opts)
  local problems = M.check(opts)
  runbook.require(#problems == 0, "%d sequence problem(s): %s", #problems, table.concat(problems, "; "))
end

-- Human-readable lines for a sync result.
function M.lines(res)
  local out = {}
  for _, s in ipairs(res.synced) do
    out[#out + 1] = string.format("%s.%s: source %s -> target %s%s", s.schema, s.name,
      s.source and tostring(s.source) or "unused", tostring(s.after), s.note and (" (" .. s.note .. ")") or "")
  end
  for _, s in ipairs(res.unchanged) do
    out[#out + 1] = string.format("%s.%s: unchanged (%s)", s.schema, s.name, s.reason or "")
  end
  for _, s in ipairs(res.missing) do
    out[#out + 1] = string.format("%s.%s: MISSING on the target (pgtide troubleshoot missing-sequences)",
      s.schema, s.name)
  end
  out[#out + 1] = string.format("sequences: %d set (margin %d), %d unchanged, %d missing", #res.synced,
    res.margin, #res.unchanged, #res.missing)
  return out
end

return M
