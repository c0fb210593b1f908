--[[
pgtide.dms.verify: data verification for the DMS runbooks.

The seed's Step 10 compares pg_stat_user_tables estimates and an md5 of
one column by hand.  pgtide runs its validation core on every table in
scope instead (row by row, naming the rows that differ) and adds what
DMS itself reports: the tables' ValidationState and the rows of
awsdms_control.awsdms_validation_failures_v1 on the target.

  verify.data(ctx, { tables = {"schema.table"...}, mode = "recheck"|"offline" }) -> summary (raises on differences)
  verify.dms_failures(dst)       -> rows of the DMS validation failures table (or {})
  verify.dms_states(stats)       -> problems from DescribeTableStatistics

The validation core is used through pgtide.validate when available,
else core.validate directly.  Without either (a build that lacks them),
an exact count and an ordered md5 per table are compared instead, and
the summary says so.
]]
local log = require "log"
local runbook = require "pgtide.runbook"

local M = {}

local function try_require(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  return nil
end

-- Fallback comparison: exact count and md5 of the rows in key order.
local function fallback_table(src, dst, qname)
  local keycols = src:query_one([[
    select string_agg(quote_ident(a.attname), ', ' order by array_position(i.indkey::int2[], a.attnum)) as k
      from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey)
     where i.indrelid = $1::regclass and i.indisprimary]], qname)
  local order = keycols and keycols.k or nil
  local sql = order and string.format(
    "select count(*) as n, md5(coalesce(string_agg(md5(t::text), '' order by %s), '')) as h from %s t", order, qname)
    or string.format("select count(*) as n, md5(coalesce(string_agg(md5(t::text), '' order by md5(t::text)), '')) as h from %s t", qname)
  local a, b = src:query_one(sql), dst:query_one(sql)
  if a.n ~= b.n then return string.format("%s: %d rows on the source, %d on the target", qname, a.n, b.n) end
  if a.h ~= b.h then return string.format("%s: same row count (%d) but different contents", qname, a.n) end
  return nil
end

--[[
verify.data(ctx, opts) -> summary { tables, differences (lines), engine }.
opts.tables: "schema.table" names (unquoted); opts.mode: "recheck" while replication
runs (mismatches are re-checked after a delay, DMS may still be applying
them), "offline" once writes are stopped; opts.recheck / opts.delay.
Raises a failure listing the differences when any remain.
]]
function M.data(ctx, opts)
  local tables = opts.tables
  local diffs = {}
  local engine
  local pv = try_require("pgtide.validate")
  local cv = not pv and try_require("core.validate") or nil
  if pv and pv.run then
    engine = "pgtide.validate"
    local report = pv.run { source = ctx.params.source, target = ctx.params.target, tables = tables,
                            ignore_objects = require("pgtide.dms.settings").DMS_OBJECTS,
                            schema = false, data = true, mode = opts.mode, recheck = opts.recheck,
                            recheck_delay = opts.delay, state_dir = ctx.state_dir, progress = false }
    if report.result ~= "equal" then
      if report.data_error then diffs[#diffs + 1] = "could not compare: " .. report.data_error end
      for _, t in ipairs(report.data and report.data.tables or {}) do
        local name = tostring(t.schema) .. "." .. tostring(t.name)
        if t.status == "different" then
          diffs[#diffs + 1] = string.format("%s: %d missing, %d extra, %d changed row(s)", name,
            t.missing or 0, t.extra or 0, t.changed or 0)
        elseif t.status and t.status ~= "equal" then
          diffs[#diffs + 1] = string.format("%s: %s%s", name, t.status, t.error and (" (" .. tostring(t.error) .. ")") or "")
        end
      end
      if #diffs == 0 then diffs[1] = "validation result: " .. tostring(report.result) end
      for line in pv.summary(report):gmatch("[^\n]+") do log.error("%s", line) end
    end
  elseif cv and cv.run then
    engine = "core.validate"
    local report = cv.run { source = ctx.params.source, target = ctx.params.target, tables = tables,
                            mode = opts.mode, recheck = opts.recheck or 3, recheck_delay = opts.delay or 10,
                            progress = false }
    for _, t in ipairs(report.tables or {}) do
      if t.status and t.status ~= "ok" and t.status ~= "equal" and t.status ~= "match" then
        local n = (t.missing or 0) + (t.extra or 0) + (t.different or 0)
        diffs[#diffs + 1] = string.format("%s: %s (%d row difference(s))", tostring(t.name or t.table),
          tostring(t.status), n)
      end
    end
  else
    engine = "count+md5 (validation core not in this build)"
    log.warn("the validation core is not available: comparing exact counts and ordered checksums")
    for attempt = 1, (opts.mode == "recheck" and (opts.recheck or 3) or 1) do
      diffs = {}
      for _, q in ipairs(tables) do
        local sch, nm = q:match("^([^.]+)%.(.+)$")
        local qn = ctx.src:query_one("select format('%I.%I', $1::text, $2::text) as q", sch, nm).q
        local d = fallback_table(ctx.src, ctx.dst, qn)
        if d then diffs[#diffs + 1] = d end
      end
      if #diffs == 0 or attempt == (opts.recheck or 3) or opts.mode ~= "recheck" then break end
      log.info("%d table(s) differ; rechecking in %d s (replication may still be applying)", #diffs, opts.delay or 10)
      require("sys").sleep(opts.delay or 10)
    end
  end
  local summary = { tables = #tables, differences = diffs, engine = engine }
  if #diffs > 0 then
    for _, d in ipairs(diffs) do log.error("data difference: %s", d) end
    runbook.fail("%d table(s) differ between source and target (%s): %s", #diffs, engine,
      table.concat(diffs, "; "))
  end
  log.info("data verified: %d table(s) equal on source and target (%s)", #tables, engine)
  return summary
end

-- Rows of DMS's validation failures table on the target (the seed's
-- "SELECT * FROM awsdms_validation_failures_v1"), if the table exists.
function M.dms_failures(dst)
  local where = dst:query_one([[
    select format('%I.%I', n.nspname, c.relname) as q from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relname = 'awsdms_validation_failures_v1' order by (n.nspname = 'awsdms_control') desc limit 1]])
  if not where then return {} end
  return dst:query(string.format("select * from %s limit 100", where.q))
end

-- Problems DMS reports in its table statistics.
function M.dms_states(stats)
  local problems, pending = {}, 0
  for _, s in ipairs(stats) do
    local name = s.SchemaName .. "." .. s.TableName
    if s.TableState == "Table error" then
      problems[#problems + 1] = name .. ": table error"
    end
    if s.ValidationState == "Mismatched records" or (tonumber(s.ValidationFailedRecords) or 0) > 0 then
      problems[#problems + 1] = string.format("%s: DMS validation found %s mismatched record(s)", name,
        tostring(s.ValidationFailedRecords or "some"))
    elseif s.ValidationState == "Error" or s.ValidationState == "Table error" then
      problems[#problems + 1] = string.format("%s: DMS validation %s%s", name, s.ValidationState,
        s.ValidationStateDetails and (" (" .. s.ValidationStateDetails .. ")") or "")
    end
    pending = pending + (tonumber(s.ValidationPendingRecords) or 0)
  end
  return problems, pending
end

return M
