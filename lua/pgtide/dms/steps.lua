--[[
pgtide.dms.steps: the steps the two DMS runbooks share (dms-manual and
aurora-cfn), built once and given to each runbook with its own title
and the way to find its DMS resources.

  steps.params(extra)          -> parameter declarations common to both (+ extra)
  steps.scope(ctx)             -> { schemas, mappings, filter, sentinel_schema, dump_schemas }
  steps.preflight(o)           -> step: the 7 DMS source checks + PlanetScale facts (+ o.aws_actions:
                                  the caller's permissions; o.extra_checks(ctx) -> results)
  steps.schema(o)              -> step: schema first (minus foreign keys), verified
  steps.verify_data(o)         -> step: validation core + DMS's own validation state
  steps.sequences(o)           -> step: source value + margin, verified
  steps.constraints(o)         -> step: deferred foreign keys, each checked for violations first
  steps.pre_cutover(o)         -> step: schema and data validation before cutover
  steps.cutover(o)             -> step: writes stopped, caught up, final validation, task stopped
  steps.database_cleanup(ctx, o) -> the source/target part of cleanup (called by cleanup steps)
  steps.keep_running(ctx, o)   -> restarts a task that failed or stopped in CDC (resume-processing)
  steps.truncate_scope(ctx)    -> empties the target tables in scope (before a reload)
  steps.restart_task(ctx, arn, o) -> task.start of a failed or stopped task, reloaded into
                                  emptied tables (truncate_scope) unless its full load had finished

'o' carries: name, title (the seed's words), and resources = function
(ctx) -> { task_arn, instance_id, ... } for steps that read DMS
statistics (each runbook passes its record of the DMS resources).
]]
local cutover = require "pgtide.cutover"
local preflight = require "pgtide.preflight"
local checks = require "pgtide.dms.checks"
local sequences = require "pgtide.sequences"
local troubleshoot = require "pgtide.troubleshoot"
local awsx = require "pgtide.dms.awsx"
local cleanup = require "pgtide.dms.cleanup"
local monitor = require "pgtide.dms.monitor"
local naming = require "pgtide.dms.naming"
local settings = require "pgtide.dms.settings"
local task = require "pgtide.dms.task"
local verify = require "pgtide.dms.verify"
local json = require "json"
local log = require "log"
local sys = require "sys"
local runbook = require "pgtide.runbook"

local M = {}

--[[
Parameters both runbooks take.  Timeouts are seconds; every wait in the
runbooks is bounded by one of them.
]]
function M.params(extra)
  local p = {
    source = { type = "conninfo", required = true, doc = "source database (as pgtide reaches it)" },
    target = { type = "conninfo", required = true, doc = "target (PlanetScale) database" },
    schemas = { type = "list", default = { "public" }, doc = "schemas whose tables are migrated (the seed's "
      .. "basic table mapping: all tables of each)" },
    table_mappings_file = { type = "string", default = "", doc = "JSON table mappings (selection and "
      .. "transformation rules) used instead of 'schemas'" },
    aws_region = { type = "string", default = "", doc = "AWS region (else the AWS environment/profile)" },
    aws_profile = { type = "string", default = "", doc = "AWS profile" },
    aws_endpoint_url = { type = "string", default = "", doc = "AWS endpoint override (testing)" },
    margin = { type = "integer", default = 1000, doc = "sequence safety margin (the seed's +1000)" },
    cdc_latency_threshold = { type = "number", default = 5, doc = "cutover waits until CDC latency is "
      .. "below this many seconds" },
    require_latency_metric = { type = "boolean", default = true, doc = "cutover needs a CloudWatch CDC "
      .. "latency figure (false: the sentinel row alone proves catch-up)" },
    target_disk_gb = { type = "integer", default = 0, doc = "PlanetScale disk size, checked against 150% of "
      .. "the source size (0: not checked)" },
    poll_interval = { type = "number", default = 15, doc = "seconds between status polls" },
    iam_propagation_timeout = { type = "integer", default = 600, doc = "how long the first DMS call that "
      .. "needs dms-vpc-role is retried while a new IAM role propagates (s)" },
    consistency_timeout = { type = "integer", default = 120, doc = "how long a resource just created may "
      .. "answer not-found (AWS APIs are eventually consistent) before pgtide concludes it is gone (s)" },
    connection_timeout = { type = "integer", default = 600, doc = "timeout for connection tests and task "
      .. "state changes (s)" },
    full_load_timeout = { type = "integer", default = 86400, doc = "timeout for the full load (s)" },
    cutover_timeout = { type = "integer", default = 1800, doc = "timeout for CDC to catch up at cutover (s)" },
    stop_timeout = { type = "integer", default = 900, doc = "timeout for stopping the task (s)" },
    delete_timeout = { type = "integer", default = 1800, doc = "timeout for each deletion at cleanup (s)" },
    validation_recheck = { type = "integer", default = 3, doc = "re-checks of mismatched rows while CDC runs" },
    validation_delay = { type = "number", default = 10, doc = "seconds between those re-checks" },
    engine_version = { type = "string", default = "", doc = "replication engine version (default: latest)" },
    dms_source_host = { type = "string", default = "", doc = "source host as DMS reaches it (default: as pgtide does)" },
    dms_source_port = { type = "integer", doc = "source port as DMS reaches it" },
    dms_target_host = { type = "string", default = "", doc = "target host as DMS reaches it" },
    dms_target_port = { type = "integer", doc = "target port as DMS reaches it" },
    pg_dump = { type = "string", doc = "path of pg_dump for the schema step (default: the newest found; it must "
      .. "be at least the source's major version)" },
    migration_type = { type = "enum", values = { "full-load-and-cdc", "full-load", "cdc" },
      default = "full-load-and-cdc", doc = "full-load-and-cdc (migrate existing data and replicate ongoing "
        .. "changes), full-load (a snapshot: stop the application's writes first), or cdc (replicate changes "
        .. "from cdc_slot onto data already copied to the target)" },
    cdc_slot = { type = "string", default = "", doc = "migration_type=cdc: the existing logical replication slot "
      .. "(test_decoding) created when the target's data was copied; DMS starts at its position" },
    heartbeat = { type = "boolean", default = true, doc = "DMS's WAL heartbeat on the source endpoint "
      .. "(heartbeatEnable): a quiet source database then does not keep WAL forever" },
    heartbeat_frequency = { type = "integer", default = 1, doc = "minutes between DMS's heartbeat "
      .. "transactions (heartbeatFrequency)" },
    heartbeat_schema = { type = "string", default = "public", doc = "schema of DMS's heartbeat table "
      .. "awsdms_heartbeat on the source (heartbeatSchema)" },
    retained_warn_mb = { type = "integer", default = 1024, doc = "preflight warns when a logical slot on the "
      .. "source keeps more WAL than this (MB)" },
  }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

--[[
steps.scope(ctx) -> { schemas, mappings (JSON text, as sent to DMS),
filter(schema, table), sentinel_schema, dump_schemas }.  The mappings
are the user's file or one selection rule per schema, plus an include
rule for pgtide's sentinel table when the user's rules leave it out.
]]
function M.scope(ctx)
  local p = ctx.params
  local base = settings.table_mappings { file = p.table_mappings_file, schemas = p.schemas }
  local schemas = settings.selected_schemas(base)
  local sentinel_schema = "public"
  for _, s in ipairs(schemas) do
    if not s:find("%", 1, true) then sentinel_schema = s; break end
  end
  local doc = json.decode(base)
  local filter = settings.table_filter(doc)
  -- DMS's own tables (awsdms_heartbeat on the source...) are never migrated
  local max_id = 0
  for _, r in ipairs(doc.rules) do max_id = math.max(max_id, tonumber(r["rule-id"]) or 0) end
  for _, s in ipairs(schemas) do
    max_id = max_id + 1
    table.insert(doc.rules, {
      ["rule-type"] = "selection", ["rule-id"] = tostring(max_id), ["rule-name"] = "pgtide-exclude-dms-tables-" .. max_id,
      ["object-locator"] = { ["schema-name"] = s, ["table-name"] = "awsdms%" },
      ["rule-action"] = "exclude", filters = json.array({}),
    })
  end
  if not filter(sentinel_schema, cutover.TABLE) then
    local max = 0
    for _, r in ipairs(doc.rules) do max = math.max(max, tonumber(r["rule-id"]) or 0) end
    table.insert(doc.rules, {
      ["rule-type"] = "selection", ["rule-id"] = tostring(max + 1), ["rule-name"] = "pgtide-cutover-sentinel",
      ["object-locator"] = { ["schema-name"] = sentinel_schema, ["table-name"] = cutover.TABLE },
      ["rule-action"] = "include", filters = json.array({}),
    })
    json.array(doc.rules)
  end
  local mappings = json.encode(doc)
  local dump = {}
  for _, s in ipairs(schemas) do dump[#dump + 1] = (s:gsub("%%", "*")) end
  return { schemas = schemas, mappings = mappings, filter = settings.table_filter(doc),
           sentinel_schema = sentinel_schema, dump_schemas = dump, user_mappings = base }
end

-- Schemas for catalog filters (wildcards dropped: the filter needs names).
local function plain_schemas(sc)
  local out = {}
  for _, s in ipairs(sc.schemas) do if not s:find("%", 1, true) then out[#out + 1] = s end end
  return #out > 0 and out or nil
end

--{====================================================================
-- Preflight
--=====================================================================

function M.preflight(o)
  return {
    name = o.name or "preflight", title = o.title,
    plan = "checks the source and target (read-only): the 7 checks DMS runs before a task starts "
      .. "(version, target privileges, free replication slots, wal_level/rds.logical_replication, "
      .. "wal_sender_timeout, max_wal_senders, SELECT on every table) and the PlanetScale facts "
      .. "(target version, extensions, disk >= 150%, primary keys, lossy types, RLS, long and prepared "
      .. "transactions); prints pass/warn/fail with the fix for each",
    run = function(ctx)
      local names = naming.for_ctx(ctx)
      local sc = M.scope(ctx)
      local report = preflight.run {
        src = ctx.src, dst = ctx.dst, checks = preflight.DMS_RUNBOOK, scope = sc.filter, slot = names.slot,
        target_disk_gb = ctx.params.target_disk_gb ~= 0 and ctx.params.target_disk_gb or nil,
        engine_version = ctx.params.engine_version,
      }
      local ok_ts, ts = pcall(settings.decoded, ctx.params.task_settings or "schema-first", ctx.params.task_settings_file)
      runbook.require(ok_ts, "%s", require("pgtide.errors").message(ts))
      checks.merge(report, checks.run {
        src = ctx.src, dst = ctx.dst, sentinel_schema = sc.sentinel_schema,
        heartbeat = ctx.params.heartbeat and ctx.params.migration_type ~= "full-load",
        heartbeat_schema = ctx.params.heartbeat_schema,
        control_schema = ts.ControlTablesSettings and ts.ControlTablesSettings.ControlSchema or "",
        pg_dump = ctx.params.pg_dump, slot = names.slot, retained_warn_mb = ctx.params.retained_warn_mb,
        migration_type = ctx.params.migration_type, cdc_slot = ctx.params.cdc_slot,
        task_settings = ts, task_settings_name = (ctx.params.task_settings_file or "") ~= ""
          and ctx.params.task_settings_file or ("the seed's " .. (ctx.params.task_settings or "schema-first")
          .. " settings"),
      })
      -- the AWS side, before anything is created there either
      local aws_results = {}
      if o.aws_actions then
        local res = { id = "aws_permissions", title = "AWS permissions of the caller" }
        local ok, st, msg, fix = pcall(require("pgtide.dms.permissions").check, ctx, o.aws_actions)
        if ok then
          res.status, res.message, res.fix = st, msg, fix
        else
          res.status, res.message = "fail", "cannot reach AWS: " .. require("pgtide.errors").message(st)
          res.fix = "check the AWS credentials, region and endpoint (aws_region, aws_profile)"
        end
        aws_results[#aws_results + 1] = res
      end
      for _, r in ipairs(o.extra_checks and o.extra_checks(ctx) or {}) do aws_results[#aws_results + 1] = r end
      checks.merge(report, aws_results)
      preflight.print(report)
      ctx.out.preflight = preflight.summary(report)
      preflight.assert_ok(report)
    end,
  }
end

--}====================================================================

--{====================================================================
-- Schema first
--=====================================================================

local function parts_path(ctx) return ctx.state_dir .. "/schema/parts.json" end

-- CREATE EXTENSION on the target for every extension of the source (a
-- schema-filtered pg_dump does not carry them).
local function ensure_extensions(src, dst)
  for _, e in ipairs(src:query([[select e.extname as name, n.nspname as schema from pg_extension e
                                   join pg_namespace n on n.oid = e.extnamespace where e.extname <> 'plpgsql']])) do
    local have = dst:query_one("select 1 as x from pg_extension where extname = $1", e.name)
    if not have then
      dst:exec(string.format("create schema if not exists %s", troubleshoot.ident(dst, e.schema)))
      dst:exec(string.format("create extension if not exists %s with schema %s", troubleshoot.ident(dst, e.name),
        troubleshoot.ident(dst, e.schema)))
      log.info("schema: created extension %s on the target", e.name)
    end
  end
end

-- The first 20 schema differences of a schema.verify report, as text.
local function differences(report, prefix)
  local catalog = require "pgtide.catalog"
  local out = {}
  for i, d in ipairs(report.differences) do
    if i <= 20 then out[#out + 1] = (prefix or "") .. catalog.format_difference(d) end
  end
  return out
end

local function log_counts(report)
  local tgt = {}
  for _, c in ipairs(report.counts.target or {}) do tgt[c.schema] = c end
  for _, c in ipairs(report.counts.source or {}) do
    local t = tgt[c.schema] or {}
    log.info("schema %s: tables %s/%s, sequences %s/%s, indexes %s/%s (source/target, the seed's counts query)",
      c.schema, tostring(c.tables), tostring(t.tables), tostring(c.sequences), tostring(t.sequences),
      tostring(c.indexes), tostring(t.indexes))
  end
end

function M.schema(o)
  return {
    name = o.name or "schema", title = o.title,
    plan = "creates pgtide's cutover sentinel table on the source; dumps the source schema (pg_dump "
      .. "--schema-only --no-owner --no-privileges) and applies all of it except foreign keys to the target "
      .. "(kept in the state directory's schema/constraints.sql for later); verifies with the seed's counts "
      .. "query and an object-by-object comparison",
    run = function(ctx)
      local schema = require "pgtide.schema"
      local sc = M.scope(ctx)
      if cutover.ensure_sentinel(ctx.src, sc.sentinel_schema) then ctx.out.sentinel_created = true end
      ctx.out.sentinel_schema = sc.sentinel_schema
      ctx:save()
      local dir = ctx.state_dir .. "/schema"
      -- the schemas out of scope are excluded rather than the others named
      -- (pg_dump -n would also emit CREATE SCHEMA public, which fails on a
      -- target that has it, as every PostgreSQL database does)
      local exclude = {}
      for _, r in ipairs(ctx.src:query([[select nspname from pg_namespace where nspname !~ '^pg_'
                                           and nspname <> 'information_schema' order by 1]])) do
        local keep = false
        for _, s in ipairs(sc.schemas) do
          if settings.table_filter({ rules = { { ["rule-type"] = "selection", ["rule-action"] = "include",
               ["object-locator"] = { ["schema-name"] = s, ["table-name"] = "%" } } } })(r.nspname, "x") then
            keep = true
          end
        end
        if not keep then exclude[#exclude + 1] = r.nspname end
      end
      local parts = schema.extract(ctx.src, { conninfo = ctx.params.source, dir = dir, mode = "schema-first",
                                              exclude_schemas = exclude, pg_dump = ctx.params.pg_dump })
      schema.save(parts, parts_path(ctx))
      local fk_sql = {}
      for _, fk in ipairs(parts.foreign_keys) do fk_sql[#fk_sql + 1] = fk.add end
      assert(sys.write_atomic(dir .. "/constraints.sql", table.concat(fk_sql, "\n")))
      ctx.out.foreign_keys = #parts.foreign_keys
      if ctx.params.migration_type == "cdc" then
        -- the data was copied with its schema from the slot's snapshot:
        -- only the sentinel is new (verify checks the rest)
        if cutover.ensure_sentinel(ctx.dst, sc.sentinel_schema) then
          log.info("schema: migration_type=cdc: the target has the copied schema; created the cutover sentinel table")
        end
      end
      local current = schema.verify(ctx.src, ctx.dst, { schemas = plain_schemas(sc), phase = "schema-first",
                                                   ignore_objects = settings.DMS_OBJECTS })
      if current.ok then
        log.info("schema: the target already has the whole schema (an earlier run applied it)")
      else
        local existing = task.scope_tables(ctx.dst, sc.mappings)
        if #existing > 0 then
          local names = {}
          for i, t in ipairs(existing) do if i <= 8 then names[#names + 1] = t.qname end end
          runbook.fail("the target already has %d of the tables to migrate (%s%s) but not the source's schema: "
            .. "DMS would load into them as they are. Empty the target first ('pgtide troubleshoot permissions' "
            .. "lists them with the DROP statements)", #existing, table.concat(names, ", "), #existing > 8 and ", ..." or "")
        end
        ensure_extensions(ctx.src, ctx.dst)
        schema.apply_pre_data(ctx.dst, parts)
        log.info("schema: applied to the target; %d foreign key(s) deferred to %s/constraints.sql",
          #parts.foreign_keys, dir)
      end
      ctx.out.applied = true
    end,
    verify = function(ctx)
      local schema = require "pgtide.schema"
      local sc = M.scope(ctx)
      local report = schema.verify(ctx.src, ctx.dst, { schemas = plain_schemas(sc), phase = "schema-first",
                                                   ignore_objects = settings.DMS_OBJECTS })
      log_counts(report)
      if not report.ok then
        runbook.fail("the target schema differs from the source in %d place(s): %s", #report.differences,
          table.concat(differences(report), "; "))
      end
    end,
  }
end

--}====================================================================

--{====================================================================
-- Data verification
--=====================================================================

--[[
keep_running(ctx, o): the steps after the full load need the task to
replicate.  A task that failed or stopped since (not by the cutover) is
restarted first, as its full load finished: resume-processing, CDC
going on from where it stopped (task.start); a full-load task that
finished is left alone.  Then waits (connection_timeout) until it runs.
]]
local function keep_running(ctx, o)
  local res = o.resources and o.resources(ctx) or {}
  if not res.task_arn or (ctx.params.migration_type or "") == "full-load" then return end
  local dms = awsx.client(ctx, "dms")
  local t = task.get(dms, res.task_arn)
  runbook.require(t, "the replication task %s no longer exists", tostring(res.task_arn))
  if t.Status ~= "failed" and t.Status ~= "stopped" then return end
  log.warn("the replication task is %s (%s): restarting it", t.Status, task.failure_text(t))
  M.restart_task(ctx, res.task_arn, { slot = res.slot })
  t = task.wait_status(ctx, dms, res.task_arn, { running = true }, "replication task to run again",
    ctx.params.connection_timeout, { failed = true, stopped = true })
  log.info("replication task %s", task.status_line(t))
end
M.keep_running = keep_running

-- Empty the target tables in scope (before reloading a failed load: with
-- DO_NOTHING, DMS would load on top of what the failed load left).
function M.truncate_scope(ctx)
  local q = {}
  for _, t in ipairs(task.scope_tables(ctx.dst, M.scope(ctx).mappings)) do q[#q + 1] = t.qname end
  if #q > 0 then
    log.warn("emptying %d target table(s) before reloading: %s", #q, table.concat(q, ", "))
    ctx.dst:exec("truncate " .. table.concat(q, ", "))
  end
end

--[[ restart_task(ctx, arn, o): start the task again (task.start): with
  resume-processing when its full load had finished (o.full_load_done or
  DMS's statistics), else reload-target after emptying the target tables
  in scope (truncate_scope); a CDC start position is the slot o.slot's
  (when the endpoint names one), read right before the start.  Raises
  step failures and AWS errors. ]]
function M.restart_task(ctx, arn, o)
  task.start(ctx, arn, {
    full_load_done = o.full_load_done,
    truncate = function() M.truncate_scope(ctx) end,
    start_position = o.slot and function() return task.slot_lsn(ctx.src, o.slot) end or nil,
  })
end

-- "schema.table" of every source table in scope.
local function table_names(ctx, sc)
  local out = {}
  for _, t in ipairs(task.scope_tables(ctx.src, sc.mappings)) do out[#out + 1] = t.schema .. "." .. t.name end
  return out
end

-- Row-by-row validation of the tables in scope while CDC runs: mismatched
-- rows are re-checked (validation_recheck times, validation_delay apart).
local function recheck_data(ctx, sc)
  return verify.data(ctx, { tables = table_names(ctx, sc), mode = "recheck",
                            recheck = ctx.params.validation_recheck, delay = ctx.params.validation_delay })
end

-- DMS's own view: validation states and the failures table.
local function dms_view(ctx, o)
  local res = o.resources and o.resources(ctx) or {}
  local problems, pending = {}, 0
  if res.task_arn then
    local stats = monitor.table_stats(awsx.client(ctx, "dms"), res.task_arn)
    problems, pending = verify.dms_states(stats)
    log.info("DMS validation: %d table(s), %d record(s) pending validation", #stats, pending)
  end
  local failures = verify.dms_failures(ctx.dst)
  if #failures > 0 then
    problems[#problems + 1] = string.format("%d row(s) in awsdms_validation_failures_v1 on the target",
      #failures)
    for i, f in ipairs(failures) do
      if i > 5 then break end
      log.error("DMS validation failure: %s.%s key %s: %s", tostring(f.TABLE_OWNER or f.table_owner),
        tostring(f.TABLE_NAME or f.table_name), tostring(f.KEY or f.key), tostring(f.FAILURE_TYPE or f.failure_type))
    end
  end
  return problems, pending
end

function M.verify_data(o)
  return {
    name = o.name or "verify-data", title = o.title,
    plan = "compares every table in scope row by row with pgtide's validation core (mismatches re-checked "
      .. "while CDC runs), and reads DMS's validation state and awsdms_validation_failures_v1",
    run = function(ctx)
      keep_running(ctx, o)
      local ok, summary = pcall(recheck_data, ctx, M.scope(ctx))
      if not ok then
        -- differences while the task is down are its failure's doing: say so
        local res = o.resources and o.resources(ctx) or {}
        local t = res.task_arn and task.get(awsx.client(ctx, "dms"), res.task_arn)
        if t and (t.Status == "failed" or t.Status == "stopped") then
          runbook.fail("the replication task %s during CDC (%s), so the data differs; fix the cause, then rerun: "
            .. "the task is restarted where it stopped", t.Status, task.failure_text(t))
        end
        error(summary, 0)
      end
      ctx.out.tables, ctx.out.engine = summary.tables, summary.engine
      local problems = dms_view(ctx, o)
      runbook.require(#problems == 0, "DMS reports validation problems: %s", table.concat(problems, "; "))
    end,
  }
end

--}====================================================================

--{====================================================================
-- Sequences
--=====================================================================

local function sync_sequences(ctx, sc)
  local res = sequences.sync { src = ctx.src, dst = ctx.dst, margin = ctx.params.margin, scope = sc.filter }
  for _, l in ipairs(sequences.lines(res)) do log.info("%s", l) end
  return res
end

function M.sequences(o)
  return {
    name = o.name or "sequences", title = o.title,
    plan = function(ctx)
      return string.format("sets every target sequence to the source's last value + %s (never backwards, "
        .. "past max(id) of its column), then verifies", tostring(ctx.params.margin or 1000))
    end,
    run = function(ctx)
      local sc = M.scope(ctx)
      local res = sync_sequences(ctx, sc)
      ctx.out.synced, ctx.out.missing = #res.synced, #res.missing
      runbook.require(#res.missing == 0, "%d sequence(s) missing on the target; run 'pgtide troubleshoot "
        .. "missing-sequences' for the SQL that creates them", #res.missing)
    end,
    verify = function(ctx)
      -- the source keeps writing while CDC runs: the target must be ahead
      -- of its current values (the margin is the headroom left for that)
      local sc = M.scope(ctx)
      sequences.verify { src = ctx.src, dst = ctx.dst, margin = 0, scope = sc.filter }
    end,
  }
end

--}====================================================================

--{====================================================================
-- Deferred foreign keys
--=====================================================================

-- The seed's listing query, per schema.
local function list_constraints(dst, schemas)
  for _, s in ipairs(schemas) do
    local rows = dst:query([[SELECT conname, contype, conrelid::regclass::text AS table_name, convalidated
                               FROM pg_constraint
                              WHERE connamespace = $1::regnamespace AND contype = 'f'
                              ORDER BY conrelid::regclass::text]], s)
    for _, r in ipairs(rows) do
      log.info("foreign key %s on %s%s", r.conname, r.table_name, r.convalidated and "" or " (NOT VALID)")
    end
  end
end

function M.constraints(o)
  return {
    name = o.name or "constraints", title = o.title,
    plan = "for each deferred foreign key: counts the target rows that would violate it (reporting them) "
      .. "and, when there are none, adds it NOT VALID then VALIDATEs it; then lists them as the seed does",
    run = function(ctx)
      local schema = require "pgtide.schema"
      local sc = M.scope(ctx)
      local parts = schema.load(parts_path(ctx))
      local info = {}
      for _, fk in ipairs(troubleshoot.foreign_keys(ctx.src, { schemas = plain_schemas(sc) })) do
        info[fk.qtable .. " " .. fk.name] = fk
      end
      local bad, added = {}, 0
      schema.with_session(ctx.dst, parts, function()
        for _, fk in ipairs(parts.foreign_keys) do
          local exists = ctx.dst:query_one(fk.check) ~= nil
          local meta = info[fk.name]
          local count, sample = 0, {}
          if not exists and meta then count, sample = troubleshoot.fk_check(ctx.dst, meta, 10) end
          if count > 0 then
            local rows = {}
            for _, r in ipairs(sample) do rows[#rows + 1] = troubleshoot.fk_row_text(r, meta) end
            bad[#bad + 1] = string.format("%s: %d row(s) without a matching %s row, e.g. %s", fk.name, count,
              meta.ref_qtable, table.concat(rows, ", "))
            log.error("foreign key %s: %d violating row(s): %s", fk.name, count, table.concat(rows, ", "))
          else
            if not exists then
              ctx.dst:exec(fk.add)
              added = added + 1
            end
            if fk.validate then ctx.dst:exec(fk.validate) end
          end
        end
      end)
      ctx.out.added = added
      list_constraints(ctx.dst, plain_schemas(sc) or { "public" })
      if #bad > 0 then
        ctx.out.violations = bad
        runbook.fail("%d foreign key(s) not applied because target rows violate them: %s. Fix the rows "
          .. "('pgtide troubleshoot fk-violations' prints the queries), then rerun", #bad, table.concat(bad, "; "))
      end
    end,
  }
end

--}====================================================================

--{====================================================================
-- Pre-cutover validation
--=====================================================================

function M.pre_cutover(o)
  return {
    name = o.name or "pre-cutover", title = o.title,
    plan = "validates ALL schema objects (object by object, foreign keys included) and the data (row by "
      .. "row), checks sequences, DMS's validation state and the CDC latency",
    run = function(ctx)
      local schema = require "pgtide.schema"
      local sc = M.scope(ctx)
      keep_running(ctx, o)
      local report = schema.verify(ctx.src, ctx.dst, { schemas = plain_schemas(sc), phase = "all",
                                                  ignore_objects = settings.DMS_OBJECTS })
      log_counts(report)
      local problems = differences(report, "schema: ")
      for _, p in ipairs(sequences.check { src = ctx.src, dst = ctx.dst, margin = 0, scope = sc.filter }) do
        problems[#problems + 1] = "sequence: " .. p
      end
      local dms_problems = dms_view(ctx, o)
      for _, p in ipairs(dms_problems) do problems[#problems + 1] = "DMS: " .. p end
      local res = o.resources and o.resources(ctx) or {}
      if res.task_arn and res.instance_id then
        local dms = awsx.client(ctx, "dms")
        local t = task.get(dms, res.task_arn)
        if t then
          if ctx.params.migration_type == "full-load" then
            -- a full-load task stops when it is done
            log.info("task %s", task.status_line(t))
            if not (t.Status == "stopped" and tostring(t.StopReason or ""):find("FULL_LOAD_ONLY_FINISHED", 1, true)) then
              problems[#problems + 1] = "DMS: the full-load task is " .. tostring(t.Status) .. " (" ..
                task.failure_text(t) .. ")"
            end
          else
            local lat = monitor.cdc_latency(ctx, res.instance_id, t)
            log.info("task %s; CDC latency %s", task.status_line(t),
              lat and string.format("%s s", tostring(lat.total)) or "not reported yet")
            if t.Status ~= "running" then problems[#problems + 1] = "DMS: the task is " .. tostring(t.Status) end
          end
        end
      end
      local ok, err = pcall(recheck_data, ctx, sc)
      if not ok then
        problems[#problems + 1] = "data: " .. require("pgtide.errors").message(err)
        -- rows that differ while a CDC change fails on the target: the task's failure is the cause
        if res.task_arn and ctx.params.migration_type ~= "full-load" then
          local t = task.get(awsx.client(ctx, "dms"), res.task_arn)
          if t and t.Status ~= "running" then
            table.insert(problems, 1, string.format("DMS: the task is %s (%s)", tostring(t.Status),
              task.failure_text(t)))
          end
        end
      end
      if #problems > 0 then
        for _, p in ipairs(problems) do log.error("pre-cutover: %s", p) end
        runbook.fail("%d problem(s) before cutover: %s", #problems, table.concat(problems, "; "))
      end
      log.info("pre-cutover validation passed: schema, sequences and data match")
    end,
  }
end

--}====================================================================

--{====================================================================
-- Cutover
--=====================================================================

function M.cutover(o)
  return {
    name = o.name or "cutover", title = o.title, switches_traffic = true,
    plan = function(ctx)
      return string.format("asks you to confirm application writes to the source have stopped; writes a "
        .. "sentinel row on the source and waits (at most %s s) until it is on the target and CDC latency is "
        .. "under %s s; final row-by-row validation; final sequence sync; prints the switch-over "
        .. "instructions; stops the DMS task", tostring(ctx.params.cutover_timeout),
        tostring(ctx.params.cdc_latency_threshold))
    end,
    run = function(ctx)
      local sc = M.scope(ctx)
      local res = o.resources(ctx)
      local dms = awsx.client(ctx, "dms")
      local full_load = ctx.params.migration_type == "full-load"
      if not ctx.out.replication_stopped then keep_running(ctx, o) end
      local t = task.get(dms, res.task_arn)
      runbook.require(t, "the replication task %s no longer exists", tostring(res.task_arn))
      if full_load then
        -- nothing replicates: the writes stopped before the load (task
        -- step), the task stopped when done; the final validation proves it
        runbook.require(t.Status == "stopped" and tostring(t.StopReason or ""):find("FULL_LOAD_ONLY_FINISHED", 1, true),
          "the full-load task is %s, not finished: %s", tostring(t.Status), task.failure_text(t))
      elseif not ctx.out.replication_stopped then
        runbook.require(t.Status == "running", "the replication task is %s, not running: %s", tostring(t.Status),
          task.failure_text(t))
      end
      local pg = require "pg"
      cutover.run(ctx, {
        catch_up = not full_load,
        src = ctx.src, dst = ctx.dst, schema = sc.sentinel_schema,
        threshold = ctx.params.cdc_latency_threshold, timeout = ctx.params.cutover_timeout,
        require_latency = ctx.params.require_latency_metric,
        interval = math.min(ctx.params.poll_interval, 2),
        latency = function()
          local cur = task.get(dms, res.task_arn)
          if not cur or cur.Status ~= "running" then
            runbook.fail("the replication task stopped during cutover: %s", cur and task.failure_text(cur) or "gone")
          end
          local lat = monitor.cdc_latency(ctx, res.instance_id, cur)
          if not lat then return nil, "no CloudWatch datapoint yet" end
          return lat.total
        end,
        validate = function()
          verify.data(ctx, { tables = table_names(ctx, sc), mode = "offline" })
        end,
        sequences = function()
          sync_sequences(ctx, sc)
          sequences.verify { src = ctx.src, dst = ctx.dst, margin = ctx.params.margin, scope = sc.filter }
        end,
        stop = not full_load and function() task.stop(ctx, res.task_arn) end or nil,
        target_display = pg.safe_conninfo(ctx.params.target),
        next = "run the cleanup step to delete the DMS resources (they cost money) and the source's "
          .. "replication slot (it keeps WAL until the disk fills)",
      })
    end,
  }
end

--}====================================================================

--[[
steps.database_cleanup(ctx, o): the database part of cleanup: the
slot and DMS artifacts on the source, DMS's control tables and the
sentinel on the target.  o.slots: slot names to drop.
]]
function M.database_cleanup(ctx, o)
  local sc = M.scope(ctx)
  if not (ctx.out.removed and ctx.out.removed.source_artifacts) then
    ctx.out.source_dropped = cleanup.source(ctx, ctx.src, { slots = o.slots, sentinel_schema = sc.sentinel_schema })
    ctx.out.removed = ctx.out.removed or {}
    ctx.out.removed.source_artifacts = true
    ctx:save()
  end
  if not ctx.out.removed.target_artifacts then
    ctx.out.target_dropped = cleanup.target(ctx, ctx.dst, { sentinel_schema = sc.sentinel_schema })
    ctx.out.removed.target_artifacts = true
    ctx:save()
  end
end

-- Monitoring line helper shared by both runbooks' monitor steps.
function M.log_lines(lines)
  for _, l in ipairs(lines) do log.info("%s", l) end
end

return M
