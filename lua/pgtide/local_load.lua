--[[
pgtide.local_load: the full load of a `local` migration and the work
around it: the units planned once and recorded as they finish, each
table's indexes and VACUUM run as soon as it is loaded, progress for
`pgtide status`, the tables verified row by row during the load, then
the count check of the rest and the VACUUM of what the load did not
vacuum.  The crash-resume part (slot, snapshots, sync positions) is
pgtide.local_resume.

  local_load.run(ctx, verify)     -- the full-load step (verify: compare tables during the load)
  local_load.count_check(ctx)     -- the count-check step: every table the load did not verify
  local_load.vacuum(ctx)          -- the vacuum step
  local_load.parallel(ctx, what, statements [, setup])   -- on the target, in parallel

Each raises a step failure (runbook.fail) or the engine's error.
]]
local runbook = require "pgtide.runbook"
local util = require "pgtide.util"
local validate = require "pgtide.validate"
local stream = require "pgtide.stream"
local status_file = require "pgtide.status_file"
local monitor = require "pgtide.monitor"
local scope = require "pgtide.local_scope"
local resume = require "pgtide.local_resume"
local load = require "core.load"
local log = require "log"
local sys = require "sys"

local M = {}

-- Run statements on the target in parallel; raise listing the failures.
function M.parallel(ctx, what, statements, setup)
  if #statements == 0 then return { ok = 0, failed = {} } end
  log.info("%s: %d statements on %d connections", what, #statements, math.min(scope.jobs(ctx), #statements))
  local r = load.run_parallel { target = ctx.params.target, jobs = scope.jobs(ctx), statements = statements,
                                setup = setup, what = what,
                                settings = { maintenance_work_mem = ctx.params.maintenance_work_mem } }
  if #r.failed > 0 then
    local lines = {}
    for i, f in ipairs(r.failed) do
      if i > 10 then lines[#lines + 1] = string.format("... and %d more", #r.failed - 10); break end
      lines[#lines + 1] = string.format("%s (statement: %s)", f.message, (f.sql:gsub("%s+", " "):sub(1, 160)))
    end
    runbook.fail("%s: %d of %d statements failed:\n  %s", what, #r.failed, #statements,
      table.concat(lines, "\n  "))
  end
  log.info("%s: %d statements in %s", what, r.ok, util.format_duration(r.seconds))
  return r
end

--[[ The statements to run as soon as a table is loaded, while other
  tables are still being copied (as pgcopydb does): the table's index and
  key units from the schema split, then VACUUM ANALYZE.  Returns the
  'after' list for load.full_load and the session setup they need.  The
  post-data and vacuum steps skip what was done here. ]]
local function post_load_statements(ctx)
  local parts = scope.parts_of(ctx)
  local units = ctx.outputs["full-load"].units
  local schemas, tables, seen = {}, {}, {}
  for _, u in ipairs(units) do
    local k = u.schema .. "\0" .. u.table
    if not seen[k] then
      seen[k] = true
      schemas[#schemas + 1], tables[#tables + 1] = u.schema, u.table
    end
  end
  if #tables == 0 then return nil, nil end
  -- the quoted name pg_dump's units use for each table (format %I.%I)
  local by_qname = {}
  for _, r in ipairs(ctx.src:query([[SELECT s, t, format('%I.%I', s, t) AS q
                                       FROM unnest($1::text[], $2::text[]) AS x (s, t)]], schemas, tables)) do
    by_qname[r.q] = { schema = r.s, table = r.t, statements = {}, checks = {}, groups = {} }
  end
  -- keys of a table one after the other (two ADD CONSTRAINT ... USING
  -- INDEX at once would deadlock), each other index in parallel
  for _, ix in ipairs(parts.indexes or {}) do
    local e = ix.table and by_qname[ix.table]
    if e then
      e.statements[#e.statements + 1] = ix.sql
      e.checks[#e.checks + 1] = ix.check or ""
      e.groups[#e.groups + 1] = ix.kind == "index" and #e.statements + 1 or 1
    end
  end
  local after = {}
  for q, e in pairs(by_qname) do
    if ctx.params.vacuum then e.final = "VACUUM (ANALYZE) " .. q end
    if #e.statements > 0 or e.final then after[#after + 1] = e end
  end
  local setup = (parts.session_sql or "") .. string.format("\nSELECT pg_catalog.set_config("
    .. "'maintenance_work_mem', %s, false);", ctx.dst:quote_literal(ctx.params.maintenance_work_mem))
  return after, setup
end

--[[ The full-load step: plans the units once (recorded in ctx.out.units),
  copies every unit not yet done (with CDC under the slot's snapshot,
  pgtide.local_resume), builds each table's indexes and vacuums it once
  loaded, verifies it when 'verify' (see runbooks/local.lua), and records
  the summary and the verified tables in ctx.out. ]]
function M.run(ctx, verify)
  local out = ctx.out
  if not out.units then
    local only, skip = scope.table_scope(ctx)
    out.units = load.plan { source = ctx.params.source, tables = only, exclude = skip,
                            split_threshold_bytes = ctx.params.split_threshold_mb * 1024 * 1024,
                            max_parts = ctx.params.max_parts, format = ctx.params.format,
                            jobs = scope.jobs(ctx), target_version = ctx.dst:server_version() }
    out.done = {}
    out.started_at = ctx.dst:query_one("SELECT now()::text AS t").t
    ctx:save()
  end
  out.done = out.done or {}
  -- with CDC this creates the slot and may reset out.done (see load_snapshot)
  local snapshot = resume.load_snapshot(ctx)
  local after, after_setup = post_load_statements(ctx)
  -- each table verified under this load's snapshot once loaded and indexed, while
  -- others copy (before any stream applies to it); the count check does the rest
  local checks = verify and scope.validation_groups(ctx, ctx.params.cdc) or nil
  local last_save, last_pub = sys.monotonic(), 0
  local ok, summary = pcall(load.full_load, {
    source = ctx.params.source, target = ctx.params.target, jobs = scope.jobs(ctx),
    snapshot = snapshot, units = out.units, done_units = out.done, progress = true,
    after = after, after_setup = after_setup, checks = checks,
    on_unit_done = function(u)
      out.done[#out.done + 1] = u.id
      monitor.unit_done(ctx, u)   -- rows, bytes and time per table, for the report
      resume.unit_done(out, u)
      -- a unit finished but not yet saved is redone on resume (safely)
      if sys.monotonic() - last_save >= 1 then
        ctx:save()
        last_save = sys.monotonic()
      end
    end,
    on_progress = function(p)
      -- readable by another process (pgtide status) from the state file
      out.progress = { percent = p.percent, rows = p.rows, bytes = p.bytes, mb_per_s = p.mb_per_s,
                       eta = p.eta, units = p.units, units_done = p.units_done, line = p.line }
      if sys.monotonic() - last_save >= 5 then
        ctx:save()
        last_save = sys.monotonic()
      end
      if sys.monotonic() - last_pub >= status_file.PUBLISH_INTERVAL then
        last_pub = sys.monotonic()
        local tables = {}
        for _, t in ipairs(p.tables or {}) do
          tables[#tables + 1] = { name = t.schema .. "." .. t.table, rows = t.rows, bytes = t.bytes,
            units = t.units, units_done = t.units_done, est_bytes = t.est_bytes,
            percent = t.units_done == t.units and 100 or (t.est_bytes or 0) > 0
              and math.min(99, math.floor(100 * t.bytes / t.est_bytes)) or 0 }
        end
        local progress = util.copy(out.progress)
        progress.tables = tables
        status_file.publish(ctx, { phase = "full-load", full_load = progress })
      end
    end,
    progress_interval = 2,
  })
  resume.release_snapshot(ctx)
  if not ok then error(summary, 0) end
  out.summary = { units = summary.units, loaded = summary.loaded, skipped = summary.units_skipped,
                  rows = summary.rows, bytes = summary.bytes, seconds = summary.seconds,
                  copy_seconds = summary.copy_seconds, mb_per_s = summary.mb_per_s, tables = {} }
  for _, t in ipairs(summary.tables or {}) do
    local rows = out.summary.tables
    rows[#rows + 1] = { name = t.schema .. "." .. t.table, rows = t.rows, bytes = t.bytes,
                        index_seconds = t.index_seconds }
  end
  -- the tables verified during the load (the count check skips those found equal)
  out.verified = nil
  local equal = 0
  for _, c in ipairs(summary.checks or {}) do
    if c.status ~= "not_run" then
      out.verified = out.verified or {}
      out.verified[c.name] = { status = c.status, rows = c.source_rows, error = c.error }
      if c.status == "equal" then equal = equal + 1 end
    end
  end
  if checks then
    log.info("full load: %d of %d tables verified row by row during the load (equal under its snapshot)",
      equal, #checks)
  end
  resume.sync_positions(ctx)
  out.progress = nil
  out.complete = true
  log.info("full load: %d rows, %s copied in %s (%.1f MB/s), %d units (%d loaded before); "
    .. "with the indexes built meanwhile: %s", summary.rows, util.format_bytes(summary.bytes),
    util.format_duration(summary.copy_seconds), summary.mb_per_s, summary.units,
    summary.units_skipped, util.format_duration(summary.seconds))
end

--[[ The step's validation record (validation-count-check.json, read by
  the migration report) names every table it vouches for: the tables the
  full load found equal under its snapshot, then those this step
  compared ('report', nil when there were none). ]]
local function record_verified(ctx, list, verified, report)
  local r = report and util.copy(report) or {
    started_at = util.now_iso(), finished_at = util.now_iso(), seconds = 0, mode = "offline",
    result = "equal", data = { tables = {}, tables_equal = 0, tables_different = 0, tables_failed = 0,
                               missing = 0, extra = 0, changed = 0 } }
  r.data = r.data or { tables = {} }
  r.data.tables = r.data.tables or {}
  local n = 0
  for _, name in ipairs(list) do
    local v = verified[name]
    if v and v.status == "equal" then
      n = n + 1
      table.insert(r.data.tables, n, { name = name, status = "equal", source_rows = v.rows,
                                       target_rows = v.rows, missing = 0, extra = 0, changed = 0,
                                       during_load = true })
    end
  end
  r.data.tables_equal = (r.data.tables_equal or 0) + n
  r.verified_during_load = n
  validate.write(r, ctx.state_dir .. "/validation-" .. (ctx.step and ctx.step.name or "count-check") .. ".json")
end

--[[ The count-check step: compares every loaded table the full load did
  not find equal under its snapshot (with CDC at a consistent point of
  the live stream, after catching up); records counts in ctx.out. ]]
function M.count_check(ctx)
  -- with CDC the unlogged tables are compared at cutover, once copied again
  local list = scope.validation_names(ctx, ctx.params.cdc)
  local verified = (ctx.outputs["full-load"] or {}).verified or {}
  local rest, rows, during = {}, 0, 0
  for _, name in ipairs(list) do
    local v = verified[name]
    if v and v.status == "equal" then
      during, rows = during + 1, rows + (v.rows or 0)
    else
      rest[#rest + 1] = name
    end
  end
  local report
  if #rest > 0 then
    local opts = { schema = false, tables = rest, jobs = scope.jobs(ctx) }
    if ctx.params.cdc then
      local r = stream.ensure(ctx)
      stream.catch_up(ctx, r, ctx.params.catchup_timeout, "count check")
      opts.mode, opts.cdc, opts.pause_timeout = "consistent", r, ctx.params.catchup_timeout
    end
    report = validate.verify(ctx, opts)
    for _, t in ipairs(report.data and report.data.tables or {}) do rows = rows + (t.source_rows or 0) end
  else
    ctx.out.validation = { result = "equal", tables_different = 0, missing = 0, extra = 0, changed = 0 }
  end
  ctx.out.tables, ctx.out.rows, ctx.out.differences = #list, rows, 0
  ctx.out.verified_during_load = during
  if during > 0 then record_verified(ctx, list, verified, report) end
  log.info("count check: %d tables, %d rows, all equal (every row compared%s%s)", #list, rows,
    during > 0 and string.format("; %d during the full load under its snapshot", during) or "",
    report and report.data and report.data.lsn and (", the others consistent at source LSN "
      .. report.data.lsn) or "")
end

-- The vacuum step: VACUUM (ANALYZE) of every table the full load did not
-- vacuum, in parallel, largest first.
function M.vacuum(ctx)
  if not ctx.params.vacuum then
    log.info("vacuum: skipped (vacuum=false)")
    return
  end
  local f = scope.filter(ctx)
  -- tables vacuumed as part of the full load (after their indexes) are done
  local fl = ctx.outputs["full-load"] or {}
  local rows = ctx.dst:query([[
    SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, c.relkind::text AS kind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
     WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
       AND ($1::text[] IS NULL OR n.nspname = ANY ($1::text[]))
       AND ($2::text[] IS NULL OR NOT n.nspname = ANY ($2::text[]))
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                         AND d.objid = c.oid AND d.deptype = 'e')
       AND NOT ($3::timestamptz IS NOT NULL AND s.last_vacuum >= $3::timestamptz
                AND s.last_analyze >= $3::timestamptz)
     ORDER BY pg_table_size(c.oid) DESC, 1]], f.schemas, f.exclude_schemas, fl.started_at)
  local statements = {}
  for _, r in ipairs(rows) do
    statements[#statements + 1] = (r.kind == "p" and "ANALYZE " or "VACUUM (ANALYZE) ") .. r.name
  end
  if #statements == 0 then log.info("vacuum: every table was vacuumed during the full load") end
  M.parallel(ctx, "vacuum", statements)
  ctx.out.tables = #statements
end

return M
