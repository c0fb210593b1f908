--[[
local: migrate a PostgreSQL database with pgtide's own engine, no AWS,
with zero downtime: the target is kept in sync by logical replication
until you cut over.

  pgtide run local source="host=... dbname=app" target="host=... dbname=app"
  pgtide status            # from another terminal: phase, progress, lag, retained WAL
  pgtide cutover           # ... and when you are ready (or cutover=auto)

Steps (each resumable: a rerun after a failure, Ctrl-C or kill -9
continues where it stopped):
  preflight    connectivity, versions, privileges, extensions, tables
               without a primary key, disk headroom; with cdc: wal_level,
               slots, senders, the REPLICATION role and a usable replica
               identity on every table: pass / warn / fail with the fix
  schema       pg_dump of the source schema, split; the pre-data part
               (types, tables, functions, views...) applied to the target
  full-load    with cdc: the publication and the replication slot first,
               then every table copied in parallel from the slot's
               exported snapshot (no gap, no overlap with the stream);
               units recorded as they finish
  post-data    indexes and keys in parallel (PRIMARY KEY / UNIQUE built
               as indexes then attached USING INDEX), the rest of
               post-data, foreign keys (deferred to the cutover with cdc),
               triggers, materialized views refreshed
  sequences    every sequence set to the source's value plus a margin
  vacuum       VACUUM ANALYZE of every table, in parallel
  count-check  every row of every table compared (the validation core):
               the full load compares each table it loaded whole under its
               own snapshot as soon as it and its indexes are done; the
               rest here, with cdc at a consistent point of the live stream
  stream       (cdc) applies changes in the foreground, showing lag, until
               cutover is requested: `pgtide cutover`, Ctrl-C then 'y' on a
               terminal, or cutover=auto once lag stays low
  cutover      (cdc) optional write fence, the source's LSN applied,
               sequences synced, foreign keys applied, final validation,
               switch-over instructions, stream stopped
  cleanup      (cdc, destructive) drops the slot, the publication and the
               progress record on the target

What a crash during the full load keeps and copies again: see
docs/runbooks.md, "A crash, at any point".
]]
local runbook = require "pgtide.runbook"
local preflight = require "pgtide.preflight"
local schema = require "pgtide.schema"
local sequences = require "pgtide.sequences"
local catalog = require "pgtide.catalog"
local util = require "pgtide.util"
local validate = require "pgtide.validate"
local stream = require "pgtide.stream"
local cutover_request = require "pgtide.cutover_request"
local fence = require "pgtide.fence"
local names_of = require("pgtide.names").of
local status_file = require "pgtide.status_file"
local cutover = require "pgtide.cutover"
local apply_plan = require "pgtide.apply_plan"
local new_tables = require "pgtide.new_tables"
local triggers = require "pgtide.triggers"
local monitor = require "pgtide.monitor"
local teardown = require "pgtide.teardown"
local load = require "core.load"
local cdc = require "core.cdc"
local log = require "log"
local sys = require "sys"

local rb = runbook.new {
  name = "local",
  title = "Migrate with pgtide's own engine",
  params = {
    source = { type = "conninfo", required = true, doc = "source database" },
    target = { type = "conninfo", required = true, doc = "target database (schema created here)" },
    jobs = { type = "integer", default = 0, min = 0, doc = "parallel connections (0: number of cores)" },
    cdc = { type = "boolean", default = true,
            doc = "keep the target in sync after the load (logical replication) until cutover; "
              .. "false: a one-shot clone" },
    cutover = { type = "enum", values = { "manual", "auto" }, default = "manual",
                doc = "manual: stream until `pgtide cutover` (or Ctrl-C, 'y' on a terminal); "
                  .. "auto: cut over once lag stays under cutover_lag for cutover_window" },
    cutover_lag = { type = "number", default = 2, min = 0, doc = "seconds of lag under which cutover=auto may start" },
    cutover_window = { type = "number", default = 10, min = 0,
                       doc = "seconds the lag must stay under cutover_lag before cutover=auto starts" },
    cutover_timeout = { type = "integer", default = 300, min = 1,
                        doc = "seconds the cutover waits for the target to apply the source's position" },
    catchup_timeout = { type = "integer", default = 3600, min = 1,
                        doc = "seconds the count check waits for the stream to catch up after the load" },
    write_fence = { type = "boolean", default = false,
                    doc = "at cutover make the source database read-only for new sessions and end the "
                      .. "other sessions on it (see docs/runbooks.md)" },
    cutover_validate = { type = "boolean", default = true,
                         doc = "validate schema and every row at cutover (consistent point, or offline "
                           .. "when fenced)" },
    wal_warn_mb = { type = "integer", default = 1024, min = 0,
                    doc = "warn when the replication slot retains more WAL than this on the source" },
    memory_cap = { type = "string", default = "64MB",
                   doc = "memory for changes in flight; larger transactions spill to the state directory" },
    replica_role = { type = "enum", values = { "auto", "true", "false" }, default = "auto",
                     doc = "how replicated rows avoid firing the target's triggers: auto uses "
                       .. "session_replication_role = replica where the target role may set it "
                       .. "(superuser, or SET granted on 15+), else disables the migrated tables' user "
                       .. "triggers until cutover; true requires the former, false forces the latter" },
    publication = { type = "string",
                    doc = "use this existing publication on the source (created by the tables' owner) "
                      .. "instead of creating one; it must publish every table in scope" },
    new_tables = { type = "enum", values = { "add", "warn" }, default = "add",
                   doc = "tables created on the source while streaming: add them (created on the target "
                     .. "and copied, then streamed) or only warn" },
    unlogged = { type = "enum", values = { "copy", "skip" }, default = "copy",
                 doc = "unlogged tables (their changes cannot stream): copy them in the full load and "
                   .. "again at cutover, or skip them" },
    mode = { type = "enum", values = { "post-data", "schema-first" }, default = "post-data",
             doc = "post-data: indexes and constraints after the data; schema-first: all but FKs before" },
    schemas = { type = "list", doc = "only these schemas (default: all)" },
    exclude_schemas = { type = "list", doc = "leave these schemas out" },
    split_threshold_mb = { type = "integer", default = 1024, min = 1,
                           doc = "tables larger than this are copied as parallel ranges (at least "
                             .. "'jobs' ranges; smaller tables keep TRUNCATE + COPY FREEZE)" },
    max_parts = { type = "integer", default = 16, min = 1, doc = "at most this many ranges per table" },
    format = { type = "enum", values = { "auto", "text" }, default = "auto",
               doc = "COPY format: binary where both servers and the column types allow it" },
    sequence_margin = { type = "integer", default = 1000, min = 0,
                        doc = "sequences set to the source's value plus this" },
    maintenance_work_mem = { type = "string", default = "256MB",
                             doc = "per connection, for index builds and validation" },
    no_owner = { type = "boolean", default = true, doc = "pg_dump --no-owner" },
    no_privileges = { type = "boolean", default = true, doc = "pg_dump --no-privileges" },
    pg_dump = { type = "string", doc = "path of pg_dump (default: the newest found)" },
    target_disk_gb = { type = "number", min = 0, doc = "target disk size, for the headroom check" },
    vacuum = { type = "boolean", default = true, doc = "VACUUM ANALYZE the target after the load" },
  },
}

--[[ The migration's name when none is given: the runbook's and both
  database names ("local_shop_shop"; a clone's own name first), so that two migrations from one
  source cluster, or into one target cluster, get their own slot,
  publication and state directory unless they are named alike on
  purpose. ]]
function rb.default_name(p, runbook_)
  local pg = require "pg"
  local function db(conninfo)
    return ((pg.conninfo_value(conninfo, "dbname") or "db"):gsub("[^%w_.-]", "_"))
  end
  return string.format("%s_%s_%s", (runbook_ or rb).name, db(p.source), db(p.target))
end

-- {==================================================================
-- Helpers
-- ===================================================================

local function jobs(ctx)
  local j = ctx.params.jobs
  return (j and j > 0) and j or load.ncpus()
end

-- The schema filter for catalog functions and pg_dump.
local function filter(ctx)
  return { schemas = ctx.params.schemas, exclude_schemas = ctx.params.exclude_schemas }
end

-- Unlogged tables on the source, as a set of "schema.table".
local function unlogged_set(ctx)
  local out = {}
  for _, r in ipairs(ctx.src:query([[SELECT n.nspname || '.' || c.relname AS k FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind = 'r']])) do
    out[r.k] = true
  end
  return out
end

-- Tables to load as "schema.table" lists (nil: all) for the planner;
-- unlogged=skip leaves the unlogged tables out.
local function table_scope(ctx)
  local f = filter(ctx)
  local skip_unlogged = {}
  if ctx.params.unlogged == "skip" then
    for k in pairs(unlogged_set(ctx)) do skip_unlogged[#skip_unlogged + 1] = k end
  end
  if not f.schemas and not f.exclude_schemas then
    return nil, #skip_unlogged > 0 and skip_unlogged or nil
  end
  local function names(list)
    local out = {}
    for _, r in ipairs(ctx.src:query([[
        SELECT n.nspname || '.' || c.relname AS name FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY ($1::text[])]], list)) do
      out[#out + 1] = r.name
    end
    return out
  end
  local skip = f.exclude_schemas and names(f.exclude_schemas) or nil
  if #skip_unlogged > 0 then
    skip = skip or {}
    for _, k in ipairs(skip_unlogged) do skip[#skip + 1] = k end
  end
  return f.schemas and names(f.schemas) or nil, skip
end

-- A function(schema, table) -> bool for modules taking a scope.
local function scope_fn(ctx)
  local only, skip = {}, {}
  for _, s in ipairs(ctx.params.schemas or {}) do only[s] = true end
  for _, s in ipairs(ctx.params.exclude_schemas or {}) do skip[s] = true end
  local any = next(only) ~= nil
  return function(schema_name)
    if skip[schema_name] then return false end
    return not any or only[schema_name] == true
  end
end

local function parts_of(ctx)
  local out = ctx.outputs.schema
  runbook.require(out and out.parts_file, "the schema step has not run: run it first (--from schema)")
  return schema.load(out.parts_file)
end

-- The loaded tables, once each, as { schema, table, qname, unlogged }
-- (qname quoted for SQL), sorted by name.
local function unit_tables(ctx)
  local fl = ctx.outputs["full-load"]
  runbook.require(fl and fl.units, "the full-load step has not run")
  local unlogged = unlogged_set(ctx)
  local seen, list = {}, {}
  for _, u in ipairs(fl.units) do
    local k = u.schema .. "." .. u.table
    if not seen[k] then
      seen[k] = true
      list[#list + 1] = { schema = u.schema, table = u.table, unlogged = unlogged[k] or nil,
                          qname = ctx.src:quote_ident(u.schema) .. "." .. ctx.src:quote_ident(u.table) }
    end
  end
  table.sort(list, function(a, b) return a.schema .. "." .. a.table < b.schema .. "." .. b.table end)
  return list
end

-- The loaded tables as validation compares them: partitions through their
-- root (a partitioned table is compared as a whole), as { name = quoted
-- "schema.table", tables = { { schema =, table = }, ... the loaded ones } },
-- sorted by name.  skip_unlogged: without the unlogged tables (their
-- changes do not stream; the cutover copies them again).
local function validation_groups(ctx, skip_unlogged)
  local schemas, tables = {}, {}
  for _, t in ipairs(unit_tables(ctx)) do
    if not (skip_unlogged and t.unlogged) then schemas[#schemas + 1], tables[#tables + 1] = t.schema, t.table end
  end
  local out, by = {}, {}
  for _, r in ipairs(ctx.src:query([[
      SELECT format('%I.%I', rn.nspname, r.relname) AS q, x.s, x.t
        FROM unnest($1::text[], $2::text[]) AS x (s, t)
        JOIN pg_namespace n ON n.nspname = x.s
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.t
        JOIN pg_class r ON r.oid = coalesce(pg_partition_root(c.oid), c.oid)
        JOIN pg_namespace rn ON rn.oid = r.relnamespace
       ORDER BY 1, 2, 3]], schemas, tables)) do
    local g = by[r.q]
    if not g then
      g = { name = r.q, tables = {} }
      by[r.q] = g
      out[#out + 1] = g
    end
    g.tables[#g.tables + 1] = { schema = r.s, table = r.t }
  end
  return out
end

-- The names alone (see validation_groups).
local function validation_names(ctx, skip_unlogged)
  local out = {}
  for _, g in ipairs(validation_groups(ctx, skip_unlogged)) do out[#out + 1] = g.name end
  return out
end

local count_check   -- the count-check step (defined below)

--[[ Whether the full load verifies each table as soon as it is loaded
  (FlCheck, src/core/fullload.h): when this run goes on to the stock
  count-check step, which then compares only what the load could not.  A
  run that stops before it (--to vacuum: an unverified clone), or a
  runbook whose count-check was replaced, copies without verifying. ]]
local function verify_in_load(ctx)
  local rb_ = ctx.runbook
  local cc = rb_ and rb_:find("count-check")
  if not cc or not count_check or cc.run ~= count_check.run then return false end
  local to = ctx._opts and ctx._opts.to
  return not (to and rb_:index(to) and rb_:index(to) < rb_:index("count-check"))
end

-- The table list for the final validation: nil (every table, and the
-- whole schema compared) unless the migration is limited to some schemas
-- or leaves the unlogged tables out (unlogged=skip: their data is not
-- copied).
local function validation_tables(ctx)
  local skip = ctx.params.unlogged == "skip" and next(unlogged_set(ctx)) ~= nil
  if not ctx.params.schemas and not ctx.params.exclude_schemas and not skip then return nil end
  return validation_names(ctx)
end

--[[ How the engine applies on this target (pgtide.apply_plan): decided
  from the roles' privileges; preflight keeps its result in its outputs.
  The steps record what they did with it (post-data: the triggers it
  disabled; full-load: the progress record), so a resumed run keeps the
  method it started with.  fresh: decide again. ]]
function rb.plan(ctx, fresh)
  local pf = ctx.outputs.preflight
  if not fresh and pf and pf.plan then return pf.plan end
  local plan = apply_plan.decide(ctx.dst, { replica_role = ctx.params.replica_role })
  if ctx.out and ctx.step and ctx.step.name == "preflight" then
    ctx.out.plan = { triggers = plan.triggers, triggers_why = plan.triggers_why,
                     progress = plan.progress, progress_why = plan.progress_why }
  end
  return plan
end

-- The migrated tables on the target, partitioned roots included, as
-- { schema, table } (the target held none of them before the migration).
local function target_tables(ctx)
  local f = filter(ctx)
  return ctx.dst:query([[
    SELECT n.nspname AS schema, c.relname AS table
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtide') AND n.nspname !~ '^pg_'
       AND ($1::text[] IS NULL OR n.nspname = ANY ($1::text[]))
       AND ($2::text[] IS NULL OR NOT n.nspname = ANY ($2::text[]))
     ORDER BY 1, 2]], f.schemas, f.exclude_schemas)
end

--[[ Without session_replication_role, keep the target's user triggers
  from firing for replicated rows: disable them on the migrated tables
  (pgtide.triggers) and record the list in this step's outputs, once. ]]
local function disable_triggers(ctx)
  if ctx.out.triggers then return end
  local plan = rb.plan(ctx)
  if plan.triggers == "replica_role" then
    ctx.out.triggers = "replica_role"
  else
    -- the list first: a rerun after a crash disables (and the cutover enables) the same ones
    if not ctx.out.triggers_disabled then
      ctx.out.triggers_disabled = triggers.find(ctx.dst, target_tables(ctx))
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

--[[ The publication: FOR TABLE the planned tables (partition leaves
  included), created before the slot so that pgoutput sees it from the
  slot's first change.  Listing the tables (rather than FOR ALL TABLES)
  needs only their ownership, and leaves out tables the migration does
  not copy (excluded schemas, tables created later), whose changes the
  target could not take. ]]
local function ensure_publication(ctx, name)
  if ctx.params.publication then return ctx.params.publication, false end
  if ctx.src:query_one("SELECT 1 AS x FROM pg_publication WHERE pubname = $1", name) then return name, true end
  local list = {}
  for _, t in ipairs(unit_tables(ctx)) do
    if not t.unlogged then list[#list + 1] = t.qname end
  end
  local sql = "CREATE PUBLICATION " .. ctx.src:quote_ident(name)
  if #list > 0 then sql = sql .. " FOR TABLE " .. table.concat(list, ", ") end
  ctx.src:exec(sql)
  log.info("full load: created publication %s (%d tables)", name, #list)
  return name, true
end

-- Did this migration create the slot named 'name'?  (Its state says so.)
local function slot_is_ours(ctx, name)
  local fl = ctx.outputs["full-load"] or {}
  return fl.slot_pending == name or (fl.slot ~= nil and fl.slot.name == name)
end

local function foreign_slot_message(ctx, name)
  return string.format("a replication slot named %s already exists on the source, and this migration's "
    .. "state (in %s) does not record creating it: either another migration named '%s' uses it, or "
    .. "this migration's state directory was lost or replaced. For another migration, give this one its "
    .. "own name (name=NAME, or 'name' in the config file). To start this one over, drop what the "
    .. "earlier attempt left: SELECT pg_drop_replication_slot('%s') on the source, its publication, and "
    .. "the target's tables (docs/troubleshooting.md, \"Starting over\")", name, ctx.state_dir, ctx.name, name)
end

local open_slots = setmetatable({}, { __mode = "k" })   -- ctx -> slot object holding the snapshot

local resume_snapshot

--[[ The snapshot the full load uses.  Without CDC: nil (the load exports
  a fresh one).  With CDC: the exported snapshot of this migration's
  replication slot, created here (after the publication) before any row
  is copied; the slot's position is where the stream will start.

  A snapshot lives only as long as the session that exported it, so a
  load interrupted by a crash cannot continue under it.  The slot itself
  survives, still at its first position (nothing consumed it), so the
  tables copied completely under the old snapshot are kept.  The others
  are copied again, every unit of them, under a new snapshot taken from
  a temporary slot; that slot's position is each such table's sync LSN,
  and the stream skips the table's changes in transactions that end at
  or before it (its copy holds them).  When the slot is gone, the old
  copies cannot be caught up and everything starts over.  When every
  unit was already recorded, no snapshot is needed. ]]
function rb.load_snapshot(ctx)
  if not ctx.params.cdc then return nil end
  local out = ctx.out
  local n = names_of(ctx.name)
  local info = cdc.slot_info { source = ctx.params.source, slot = n.slot }
  local done = {}
  for _, id in ipairs(out.done or {}) do done[id] = true end
  local all_done = out.units ~= nil and #out.units > 0
  for _, u in ipairs(out.units or {}) do
    if not done[u.id] then all_done = false; break end
  end
  if all_done and info.exists and out.slot and out.slot.name == n.slot then
    log.info("full load: every unit was copied under slot %s's snapshot; nothing left to copy", n.slot)
    return nil
  end
  if info.exists and not slot_is_ours(ctx, n.slot) then
    runbook.fail("%s", foreign_slot_message(ctx, n.slot))
  end
  out.unit_lsn = out.unit_lsn or {}
  if info.exists and out.slot and out.slot.name == n.slot then
    return resume_snapshot(ctx, n)
  end
  -- the progress record is bound to this migration (pgtide.apply_plan); one left by an
  -- earlier attempt would make the new slot's stream skip changes: reset it with the slot
  local plan = rb.plan(ctx)
  local identity = apply_plan.identity(ctx.src, n.slot)
  local record = apply_plan.record_name(n.slot, identity)
  cdc.drop { source = info.exists and ctx.params.source or nil, slot = info.exists and n.slot or nil,
             target = ctx.params.target, origin = record, progress = plan.progress, identity = identity }
  out.done, out.unit_lsn = {}, {}
  out.slot = nil
  out.slot_pending = n.slot   -- ours even if we die before recording it below
  ctx:save()
  local publication, created = ensure_publication(ctx, n.publication)
  runbook.crash_point("full-load:publication")
  local existing = ctx.dst:query_one([[SELECT to_regnamespace('pgtide') IS NOT NULL AS schema,
                                              to_regclass('pgtide.cdc_progress') IS NOT NULL AS tbl]])
  local slot = cdc.create_slot { source = ctx.params.source, slot = n.slot, publication = publication }
  open_slots[ctx] = slot
  runbook.crash_point("full-load:slot")
  out.slot = { name = n.slot, publication = publication, publication_created = created, lsn = slot.lsn,
               created_at = util.now_iso(), identity = identity, record = record, progress = plan.progress,
               -- what cleanup may drop: only what pgtide made
               progress_schema_existed = existing.schema, progress_table_existed = existing.tbl }
  out.pass_lsn = slot.lsn
  ctx:save()
  log.info("full load: slot %s created at %s; the copy uses its snapshot %s", n.slot, slot.lsn,
    slot.snapshot)
  return slot.snapshot
end

--[[ The resume half of load_snapshot: the slot exists at its first
  position.  Keeps each table whose units all finished under one
  snapshot; forgets the units of the others (copied again, whole); takes
  a new snapshot at a temporary slot's position for them. ]]
function resume_snapshot(ctx, n)
  local out = ctx.out
  local by_table, order = {}, {}
  for _, u in ipairs(out.units) do
    local k = u.schema .. "." .. u.table
    if not by_table[k] then by_table[k] = {}; order[#order + 1] = k end
    local t = by_table[k]
    t[#t + 1] = u.id
  end
  local done = {}
  for _, id in ipairs(out.done or {}) do done[id] = true end
  local keep, redo, kept_tables = {}, {}, 0
  for _, k in ipairs(order) do
    local lsn, whole = nil, true
    for _, id in ipairs(by_table[k]) do
      local l = out.unit_lsn[id] or out.slot.lsn   -- units of older states: the first pass
      if not done[id] or (lsn and l ~= lsn) then whole = false; break end
      lsn = l
    end
    if whole then
      kept_tables = kept_tables + 1
      for _, id in ipairs(by_table[k]) do keep[#keep + 1] = id end
    else
      redo[#redo + 1] = k
      for _, id in ipairs(by_table[k]) do out.unit_lsn[id] = nil end
    end
  end
  out.done = keep
  -- a name of its own per process: a killed run's temporary slot may linger a moment
  local suffix = "_r" .. sys.getpid()
  local tmp = cdc.create_slot { source = ctx.params.source, temporary = true,
                                slot = n.slot:sub(1, 63 - #suffix) .. suffix }
  open_slots[ctx] = tmp
  out.pass_lsn = tmp.lsn
  ctx:save()
  log.warn("full load: resuming after an interruption under slot %s (kept at %s): %d table(s) copied "
    .. "before are kept; %d are copied again under a new snapshot at %s, and the stream skips their "
    .. "changes up to there", n.slot, out.slot.lsn, kept_tables, #redo, tmp.lsn)
  return tmp.snapshot
end

-- End the session that exports the slot's snapshot (after the load).
function rb.release_snapshot(ctx)
  local slot = open_slots[ctx]
  if slot then
    open_slots[ctx] = nil
    slot:close()
  end
end

--[[ The runbook's connections live as long as the run; the streaming
  phase can last days.  Before the steps that use them after streaming,
  drop a connection that no longer answers (a terminated backend, a
  restarted server, a proxy's idle timeout) so it reopens on next use. ]]
local function revive(ctx)
  for _, key in ipairs { "src", "dst" } do
    local c = rawget(ctx, key)
    if c and not pcall(c.query_one, c, "SELECT 1 AS ok") then
      log.warn("the %s connection was lost; reconnecting", key == "src" and "source" or "target")
      pcall(c.close, c)
      rawset(ctx, key, nil)
    end
  end
end

-- Steps publish their phase for `pgtide status` as they start, on live
-- connections.
local function step(def)
  local run = def.run
  def.run = function(ctx)
    status_file.publish(ctx, { phase = def.name, step = def.name })
    revive(ctx)
    return run(ctx)
  end
  return rb:step(def)
end

-- Run statements on the target in parallel; raise listing the failures.
local function parallel(ctx, what, statements, setup)
  if #statements == 0 then return { ok = 0, failed = {} } end
  log.info("%s: %d statements on %d connections", what, #statements, math.min(jobs(ctx), #statements))
  local r = load.run_parallel { target = ctx.params.target, jobs = jobs(ctx), statements = statements,
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

--[[ The statements to run as soon as a table is loaded, while other
  tables are still being copied (as pgcopydb does): the table's index and
  key units from the schema split, then VACUUM ANALYZE.  Returns the
  'after' list for load.full_load and the session setup they need.  The
  post-data and vacuum steps skip what was done here. ]]
local function post_load_statements(ctx)
  local parts = parts_of(ctx)
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

-- }==================================================================

-- The preflight checks the local engine needs for these parameters (pgtide.preflight).
function rb.preflight_checks(p)
  local checks = { "source_version", "target_version", "target_privileges", "target_temp",
                   "select_privileges", "source_sequences", "extensions", "disk", "rls",
                   "long_transactions", "prepared_transactions", "engine_keys", "large_objects",
                   "pg_dump", "target_empty" }
  if p.cdc or p.mode == "schema-first" then checks[#checks + 1] = "target_triggers" end
  if p.cdc then
    for _, id in ipairs { "wal_level", "slots", "wal_senders", "replication_role", "slot_wal_keep",
                          "slot_name", "replica_identity", "publication", "target_progress",
                          "unlogged_tables" } do
      checks[#checks + 1] = id
    end
    if p.write_fence then checks[#checks + 1] = "write_fence" end
  end
  return checks
end

step {
  name = "preflight",
  title = "Check both databases before starting",
  read_only = true,   -- --dry-run runs it
  plan = function(ctx)
    return "connects to the source and the target; checks versions, privileges, extensions, "
      .. "tables without a primary key, large objects, pg_dump and disk headroom"
      .. (ctx.params.cdc and "; for CDC: wal_level, free slots and WAL senders, the REPLICATION "
        .. "role, WAL kept for slots, and a usable replica identity on every table" or "")
      .. "; changes nothing"
  end,
  run = function(ctx)
    local p = ctx.params
    local connected, first = preflight.connect(ctx)
    local report = preflight.report(first)
    if connected then
      local n = names_of(ctx.name)
      report = preflight.run {
        before = first, src = ctx.src, dst = ctx.dst, checks = rb.preflight_checks(p),
        scope = scope_fn(ctx), target_disk_gb = p.target_disk_gb, cdc = p.cdc, pg_dump = p.pg_dump,
        slot = n.slot, source = p.source, slot_ours = slot_is_ours(ctx, n.slot),
        slot_message = function(name) return foreign_slot_message(ctx, name) end,
        plan = rb.plan(ctx, true), publication = p.publication or n.publication,
        publication_given = p.publication ~= nil,
        publication_ours = (ctx.outputs["full-load"] or {}).slot ~= nil, unlogged = p.unlogged,
        -- the slot, and a temporary one per consistent point of validation
        slots_needed = p.cdc and 2 or 1, senders_needed = p.cdc and 2 or 1,
      }
    end
    preflight.print(report)
    ctx.out.preflight = preflight.summary(report)
    preflight.assert_ok(report)
  end,
}

--[[ Is the source's pre-data already on the target?  true when it all
  is (a run applied it and stopped before recording it); false when none
  of the source's tables exists there; otherwise raises a step failure
  saying what is there and how to start over. ]]
function rb.pre_data_present(ctx)
  local names = {}
  for _, t in ipairs(catalog.tables(ctx.src, filter(ctx))) do names[#names + 1] = t.qname end
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

step {
  name = "schema",
  title = "Pre-Migration Schema Setup",
  plan = function(ctx)
    return string.format("pg_dump --schema-only of the source (%s), split; applies %s to the target "
      .. "in one transaction; verifies it name by name",
      ctx.params.no_owner and "--no-owner --no-privileges" or "with owners",
      ctx.params.mode == "schema-first" and "the whole schema except foreign keys" or "the pre-data part")
  end,
  check = function(ctx)
    return ctx.out.applied == true
  end,
  run = function(ctx)
    local dir = ctx.state_dir .. "/schema"
    local parts = schema.extract(ctx.src, {
      conninfo = ctx.params.source, dir = dir, mode = ctx.params.mode,
      schemas = ctx.params.schemas, exclude_schemas = ctx.params.exclude_schemas,
      no_owner = ctx.params.no_owner, no_privileges = ctx.params.no_privileges,
      pg_dump = ctx.params.pg_dump, target_version = ctx.dst:server_version(),
    })
    ctx.out.parts_file = dir .. "/parts.json"
    schema.save(parts, ctx.out.parts_file)
    ctx.out.counts = parts.counts
    ctx:save()
    -- pre-data is applied in one transaction: after a crash it is all there or none of it
    if rb.pre_data_present(ctx) then
      log.warn("schema: the pre-data is already on the target (applied by a run that stopped before "
        .. "recording it); not applied again")
    else
      schema.apply_pre_data(ctx.dst, parts)
      runbook.crash_point("schema:pre-data")
    end
    ctx.out.applied = true
    -- schema-first creates the triggers now: they must not fire for the copied rows
    if ctx.params.mode == "schema-first" then disable_triggers(ctx) end
  end,
  verify = function(ctx)
    local r = schema.verify(ctx.src, ctx.dst, { schemas = ctx.params.schemas,
      exclude_schemas = ctx.params.exclude_schemas, triggers_disabled = ctx.out.triggers == "disabled",
      deferred_views = schema.deferred_views(parts_of(ctx)),
      phase = ctx.params.mode == "schema-first" and "schema-first" or "pre-data" })
    runbook.require(r.ok, "the schema on the target differs from the source in %d place(s) "
      .. "(listed above)", #r.differences)
  end,
}

step {
  name = "full-load",
  title = "Full load: copy every table in parallel",
  plan = function(ctx)
    return string.format("%scopies every table with %d parallel connections from one snapshot, "
      .. "largest first, tables over %d MB as parallel ranges; binary COPY where possible; each "
      .. "finished unit is recorded so a rerun continues%s",
      ctx.params.cdc and string.format("creates publication and replication slot %s (pgoutput), "
        .. "then ", names_of(ctx.name).slot) or "",
      jobs(ctx), ctx.params.split_threshold_mb,
      ctx.params.cdc and " (after a crash, tables not finished are copied again under a new "
        .. "snapshot, and the stream skips their changes up to it)" or "")
  end,
  check = function(ctx)
    return ctx.out.complete == true
  end,
  run = function(ctx)
    local out = ctx.out
    if not out.units then
      local only, skip = table_scope(ctx)
      out.units = load.plan { source = ctx.params.source, tables = only, exclude = skip,
                              split_threshold_bytes = ctx.params.split_threshold_mb * 1024 * 1024,
                              max_parts = ctx.params.max_parts, format = ctx.params.format,
                              jobs = jobs(ctx), target_version = ctx.dst:server_version() }
      out.done = {}
      out.started_at = ctx.dst:query_one("SELECT now()::text AS t").t
      ctx:save()
    end
    out.done = out.done or {}
    -- with CDC this creates the slot and may reset out.done (see load_snapshot)
    local snapshot = rb.load_snapshot(ctx)
    local after, after_setup = post_load_statements(ctx)
    -- each table verified under this load's snapshot once loaded and indexed, while
    -- others copy (before any stream applies to it); the count check does the rest
    local checks = verify_in_load(ctx) and validation_groups(ctx, ctx.params.cdc) or nil
    local last_save, last_pub = sys.monotonic(), 0
    local ok, summary = pcall(load.full_load, {
      source = ctx.params.source, target = ctx.params.target, jobs = jobs(ctx),
      snapshot = snapshot, units = out.units, done_units = out.done, progress = true,
      after = after, after_setup = after_setup, checks = checks,
      on_unit_done = function(u)
        out.done[#out.done + 1] = u.id
        monitor.unit_done(ctx, u)   -- rows, bytes and time per table, for the report
        if out.pass_lsn then out.unit_lsn[u.id] = out.pass_lsn end
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
    rb.release_snapshot(ctx)
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
    -- tables copied under a later snapshot than the slot's (a resumed
    -- load): the stream skips their changes up to that snapshot
    if ctx.params.cdc and out.slot then
      local sync, seen = {}, {}
      for _, u in ipairs(out.units) do
        local l, k = out.unit_lsn and out.unit_lsn[u.id], u.schema .. "." .. u.table
        if l and l ~= out.slot.lsn and not seen[k] then
          seen[k] = true
          sync[#sync + 1] = { schema = u.schema, table = u.table, lsn = l }
        end
      end
      out.sync = sync
    end
    out.progress = nil
    out.complete = true
    log.info("full load: %d rows, %s copied in %s (%.1f MB/s), %d units (%d loaded before); "
      .. "with the indexes built meanwhile: %s", summary.rows, util.format_bytes(summary.bytes),
      util.format_duration(summary.copy_seconds), summary.mb_per_s, summary.units,
      summary.units_skipped, util.format_duration(summary.seconds))
  end,
}

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
local function apply_foreign_keys(ctx, parts)
  parts = fix_partitioned_fks(ctx, parts)
  schema.apply_foreign_keys(ctx.dst, parts, { validate = false })
  local validate = {}
  for _, fk in ipairs(parts.foreign_keys) do
    if fk.validate then validate[#validate + 1] = fk.validate end
  end
  parallel(ctx, "validate foreign keys", validate, parts.session_sql)
end
rb.apply_foreign_keys = apply_foreign_keys

step {
  name = "post-data",
  title = "Indexes, constraints, foreign keys and triggers",
  plan = function(ctx)
    return "builds indexes, primary and unique keys (USING INDEX) in parallel; applies the rest of "
      .. "post-data; " .. (ctx.params.cdc and "defers foreign keys to the cutover; "
        or "adds foreign keys NOT VALID then validates them in parallel; ")
      .. "creates triggers; refreshes materialized views"
  end,
  run = function(ctx)
    local parts = parts_of(ctx)
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
    parallel(ctx, "indexes and keys", statements, parts.session_sql)
    runbook.crash_point("post-data:indexes")
    schema.apply_attach(ctx.dst, parts)
    schema.apply_rest(ctx.dst, parts)
    if not ctx.params.cdc then
      apply_foreign_keys(ctx, parts)
      ctx.out.foreign_keys = #parts.foreign_keys
    else
      ctx.out.foreign_keys_deferred = #parts.foreign_keys
      log.info("post-data: %d foreign keys deferred to the cutover", #parts.foreign_keys)
    end
    schema.apply_triggers(ctx.dst, parts)
    if ctx.params.cdc then
      disable_triggers(ctx)
    else
      -- schema-first: the schema step disabled them for the load; the load is done
      triggers.enable(ctx.dst, (ctx.outputs.schema or {}).triggers_disabled)
    end
    schema.apply_refresh(ctx.dst, parts)
  end,
  verify = function(ctx)
    local r = schema.verify(ctx.src, ctx.dst, { schemas = ctx.params.schemas,
      exclude_schemas = ctx.params.exclude_schemas, triggers_disabled = ctx.out.triggers == "disabled",
      phase = ctx.params.cdc and "schema-first" or "all" })
    runbook.require(r.ok, "the schema on the target differs from the source in %d place(s) "
      .. "(listed above)", #r.differences)
  end,
}

step {
  name = "sequences",
  title = "Post-Migration Sequence Synchronization",
  plan = function(ctx)
    return string.format("setval(seq, source value + %d) on the target for every sequence, never "
      .. "backwards, and past max() of the owning column", ctx.params.sequence_margin)
  end,
  run = function(ctx)
    -- with CDC, apply starts now (the target's indexes exist) and runs under the next steps
    if ctx.params.cdc then stream.ensure(ctx) end
    runbook.crash_point("sequences:stream")
    local r = sequences.sync { src = ctx.src, dst = ctx.dst, margin = ctx.params.sequence_margin,
                               scope = scope_fn(ctx) }
    for _, line in ipairs(sequences.lines(r)) do log.info("%s", line) end
    ctx.out.synced, ctx.out.unchanged, ctx.out.missing = #r.synced, #r.unchanged, #r.missing
  end,
  verify = function(ctx)
    -- with CDC the source keeps writing: the margin absorbs what it used since the sync, so
    -- check only that the target is still ahead (the cutover sets them again)
    sequences.verify { src = ctx.src, dst = ctx.dst, scope = scope_fn(ctx),
                       margin = ctx.params.cdc and 0 or ctx.params.sequence_margin }
  end,
}

step {
  name = "vacuum",
  title = "VACUUM ANALYZE the target",
  plan = "VACUUM (ANALYZE) of every loaded table (ANALYZE of partitioned parents), in parallel, "
    .. "largest first, so the planner has statistics from the first query",
  run = function(ctx)
    if not ctx.params.vacuum then
      log.info("vacuum: skipped (vacuum=false)")
      return
    end
    local f = filter(ctx)
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
    parallel(ctx, "vacuum", statements)
    ctx.out.tables = #statements
  end,
}

count_check = step {
  name = "count-check",
  title = "Verify Data Migration: row counts and every row",
  plan = function(ctx)
    return "compares every row of every loaded table on both servers (the validation core: "
      .. "chunk hashes, then the differing rows by key) and the exact row counts; the full load "
      .. "already compared each table it loaded whole, under its own snapshot, as soon as the "
      .. "table and its indexes were done; the others are compared here, "
      .. (ctx.params.cdc and "after the stream caught up, at a consistent point (apply paused at a "
        .. "source LSN while the target snapshot is taken)" or "offline: one snapshot per side")
  end,
  run = function(ctx)
    -- with CDC the unlogged tables are compared at cutover, once copied again
    local list = validation_names(ctx, ctx.params.cdc)
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
      local opts = { schema = false, tables = rest, jobs = jobs(ctx) }
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
    log.info("count check: %d tables, %d rows, all equal (every row compared%s%s)", #list, rows,
      during > 0 and string.format("; %d during the full load under its snapshot", during) or "",
      report and report.data and report.data.lsn and (", the others consistent at source LSN "
        .. report.data.lsn) or "")
  end,
}

rb.NEW_TABLES_EVERY = 10   -- seconds between looks for tables created on the source

-- The tables this migration streams, as a set of "schema.table".
local function known_tables(ctx)
  local known = {}
  for _, u in ipairs((ctx.outputs["full-load"] or {}).units or {}) do known[u.schema .. "." .. u.table] = true end
  for _, t in ipairs((ctx.outputs.stream or {}).added or {}) do known[t.schema .. "." .. t.table] = true end
  -- partitioned roots: their leaves are the units
  for _, r in ipairs(ctx.src:query([[
      SELECT DISTINCT rn.nspname || '.' || r.relname AS k
        FROM unnest($1::text[]) AS x (q) JOIN pg_class c ON c.oid = to_regclass(x.q)
        JOIN pg_class r ON r.oid = pg_partition_root(c.oid) JOIN pg_namespace rn ON rn.oid = r.relnamespace]],
      (function() local l = {} for k in pairs(known) do l[#l + 1] = k end return l end)())) do
    known[r.k] = true
  end
  return known
end

--[[ Tables created on the source while streaming (pgtide.new_tables):
  each is named at once in the log and `pgtide status`; with
  new_tables=add it is created on the target, copied and streamed from
  then on (the stream stops for the copy).  A table pgtide may not
  publish waits for its owner's ALTER PUBLICATION, which the warning
  spells out. ]]
function rb.watch_new_tables(ctx)
  local skip = {}
  if ctx.params.unlogged == "skip" then skip = unlogged_set(ctx) end
  local found = new_tables.find(ctx.src, known_tables(ctx), scope_fn(ctx))
  local names, waiting = {}, {}
  for _, t in ipairs(found) do
    if not skip[t.schema .. "." .. t.table] then names[#names + 1] = t end
  end
  if #names == 0 then
    if ctx.out.new_tables then ctx.out.new_tables = nil; status_file.publish(ctx, { new_tables = {} }) end
    return 0
  end
  local added = 0
  local slot = (ctx.outputs["full-load"] or {}).slot or {}
  for _, t in ipairs(names) do
    if ctx.params.new_tables ~= "add" or t.unlogged then
      waiting[#waiting + 1] = { name = t.qname, why = t.unlogged
        and "unlogged: its changes cannot stream; create and fill it on the target at cutover"
        or "new_tables=warn: create it on the target and copy it yourself, or rerun with new_tables=add" }
    else
      local ok, rec, why = pcall(new_tables.add, ctx, t, {
        publication = slot.publication or names_of(ctx.name).publication,
        may_alter = slot.publication_created ~= false and not ctx.params.publication,
        triggers = ((ctx.outputs["post-data"] or {}).triggers == "disabled") and "disabled" or "replica_role",
        stop = function() stream.stop(ctx) end, dir = ctx.state_dir .. "/new-tables",
        slot = names_of(ctx.name).slot, no_owner = ctx.params.no_owner,
        no_privileges = ctx.params.no_privileges, pg_dump = ctx.params.pg_dump })
      if ok and rec then
        ctx.out.added = ctx.out.added or {}
        ctx.out.added[#ctx.out.added + 1] = rec
        ctx:save()
        added = added + 1
      else
        waiting[#waiting + 1] = { name = t.qname, why = ok and why or ("adding it failed: "
          .. require("pgtide.errors").message(rec)) }
      end
    end
  end
  local key = {}
  for _, w in ipairs(waiting) do key[#key + 1] = w.name .. ": " .. w.why end
  local text = table.concat(key, "; ")
  if #waiting > 0 and text ~= ctx.out.new_tables_text then
    log.warn("new table(s) on the source that the stream does not carry: %s", text)
  end
  ctx.out.new_tables = #waiting > 0 and waiting or nil
  ctx.out.new_tables_text = #waiting > 0 and text or nil
  status_file.publish(ctx, { new_tables = waiting })
  return added
end

step {
  name = "stream",
  title = "Stream changes until cutover",
  plan = function(ctx)
    if not ctx.params.cdc then return "nothing (cdc=false)" end
    return string.format("applies the source's changes to the target in the foreground, showing lag "
      .. "(and WAL retained by the slot, warning past %d MB), until cutover is requested: `pgtide "
      .. "cutover` from another terminal, Ctrl-C then 'y' on a terminal%s", ctx.params.wal_warn_mb,
      ctx.params.cutover == "auto" and string.format(", or automatically once lag stays under %s s "
        .. "for %s s", tostring(ctx.params.cutover_lag), tostring(ctx.params.cutover_window)) or "")
  end,
  check = function(ctx)
    return not ctx.params.cdc
  end,
  run = function(ctx)
    local last = -1e9
    -- looking for new tables must not end the stream: a lost connection (a restarted
    -- server, a terminated session) is reopened and the look is tried again later
    local function watch()
      local ok, n = pcall(rb.watch_new_tables, ctx)
      if ok then return n end
      if require("pgtide.errors").is_interrupt(n) then error(n, 0) end
      revive(ctx)
      log.warn("looking for new tables on the source failed (tried again in %d s): %s", rb.NEW_TABLES_EVERY,
        require("pgtide.errors").message(n))
      return 0
    end
    stream.run_until_cutover(ctx, {
      tick = function()
        if sys.monotonic() - last >= rb.NEW_TABLES_EVERY then
          last = sys.monotonic()
          watch()
        end
      end,
      -- a publication that lists partitioned roots carries a new partition's first change
      -- before the target has the partition: add it, and the stream goes on past that change
      recover = function() return watch() > 0 end,
    })
  end,
}

-- Client sessions on the source holding a transaction id (writers), not pgtide's.
local function writers(src)
  return src:query([[
    SELECT pid, usename, application_name FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
       AND backend_type = 'client backend' AND coalesce(application_name, '') NOT LIKE 'pgtide%']])
end

-- The triggers pgtide disabled on the target (schema-first: in the
-- schema step; otherwise after post-data).
function rb.disabled_triggers(ctx)
  local out = {}
  for _, name in ipairs { "schema", "post-data" } do
    for _, t in ipairs((ctx.outputs[name] or {}).triggers_disabled or {}) do out[#out + 1] = t end
  end
  for _, a in ipairs((ctx.outputs.stream or {}).added or {}) do
    for _, t in ipairs(a.triggers_disabled or {}) do out[#out + 1] = t end
  end
  return out
end

--[[ Copy the unlogged tables again (their changes never stream): at
  cutover, after the writes stopped, each is emptied and copied from a
  fresh snapshot.  Records the tables in ctx.out.unlogged_copied. ]]
local function copy_unlogged(ctx)
  if ctx.params.unlogged ~= "copy" or ctx.out.unlogged_copied then return end
  local list = {}
  for _, t in ipairs(unit_tables(ctx)) do
    if t.unlogged then list[#list + 1] = t.schema .. "." .. t.table end
  end
  if #list > 0 then
    status_file.publish(ctx, { phase = "cutover: unlogged tables" })
    local units = load.plan { source = ctx.params.source, tables = list, jobs = jobs(ctx),
                              split_threshold_bytes = ctx.params.split_threshold_mb * 1024 * 1024,
                              max_parts = ctx.params.max_parts, format = ctx.params.format,
                              target_version = ctx.dst:server_version() }
    local r = load.full_load { source = ctx.params.source, target = ctx.params.target, jobs = jobs(ctx),
                               units = units, progress = false }
    log.info("cutover: %d unlogged table(s) copied again (%d rows): %s", #list, r.rows,
      table.concat(list, ", "))
    runbook.crash_point("cutover:unlogged")
  end
  ctx.out.unlogged_copied = list
  ctx:save()
end

--[[ The cutover up to the stream's stop: catch up (after the optional
  write fence), copy the unlogged tables again, sync sequences, add the
  foreign keys, validate at a consistent point (or offline when fenced),
  stop the stream.  Each part records itself in ctx.out, so a rerun goes
  on where it stopped. ]]
function rb.cutover_apply(ctx)
  local p, out = ctx.params, ctx.out
  local r = stream.ensure(ctx)
  if not out.fence then
    -- the backlog first, so that a fence holds writes back only briefly
    stream.catch_up(ctx, r, p.cutover_timeout, "cutover: catch-up")
  end
  if p.write_fence and not out.fence then
    local fenced = fence.apply(ctx)
    runbook.crash_point("cutover:fence")
    out.fence = fenced
    ctx:save()
  elseif not p.write_fence then
    for _, w in ipairs(writers(ctx.src)) do
      log.warn("cutover: source session pid %d (%s, %s) is in a write transaction: writes after the "
        .. "cutover point stay on the source (stop the application's writes, or use write_fence=true)",
        w.pid, tostring(w.usename), tostring(w.application_name))
    end
  end
  local lsn = ctx.src:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  out.cutover_lsn = lsn
  ctx:save()
  stream.catch_up(ctx, r, p.cutover_timeout, "cutover", lsn)
  -- a table the source has and the target lacks is named, before anything else is changed
  local missing = {}
  for _, t in ipairs(new_tables.find(ctx.src, known_tables(ctx), scope_fn(ctx))) do
    if not ctx.dst:query_one("SELECT to_regclass($1) IS NOT NULL AS x", t.qname).x then
      missing[#missing + 1] = t.qname
    end
  end
  runbook.require(#missing == 0, "cutover: table(s) created on the source during the migration are missing "
    .. "on the target: %s. Create and copy them on the target (pg_dump -t TABLE | psql, then check with "
    .. "pgtide validate), or run again with new_tables=add before cutting over", table.concat(missing, ", "))
  copy_unlogged(ctx)
  local seq = sequences.sync { src = ctx.src, dst = ctx.dst, margin = p.sequence_margin,
                               scope = scope_fn(ctx) }
  for _, line in ipairs(sequences.lines(seq)) do log.info("%s", line) end
  out.sequences = { synced = #seq.synced, unchanged = #seq.unchanged, missing = #seq.missing }
  -- unless writes are fenced, the source may use values while this runs: the target must be ahead
  sequences.verify { src = ctx.src, dst = ctx.dst, margin = out.fence and p.sequence_margin or 0,
                     scope = scope_fn(ctx) }
  if not out.foreign_keys_applied then
    local parts = parts_of(ctx)
    status_file.publish(ctx, { phase = "cutover: foreign keys" })
    apply_foreign_keys(ctx, parts)
    -- and those of the tables added while streaming
    for _, extra in ipairs(new_tables.parts((ctx.outputs.stream or {}).added)) do apply_foreign_keys(ctx, extra) end
    runbook.crash_point("cutover:foreign-keys")
    out.foreign_keys_applied = #parts.foreign_keys
    ctx:save()
  end
  if p.cutover_validate then
    status_file.publish(ctx, { phase = "cutover: validation" })
    local opts = { tables = validation_tables(ctx), jobs = jobs(ctx) }
    if out.fence then
      opts.mode = "offline"
    else
      opts.mode, opts.cdc, opts.pause_timeout = "consistent", r, p.cutover_timeout
    end
    -- the triggers pgtide keeps disabled while the stream runs are enabled after it stops
    if #rb.disabled_triggers(ctx) > 0 then opts.schema_ignore = { triggers = { enabled = true } } end
    log.info("cutover: final validation of the schema and every row (%s)", opts.mode == "offline"
      and "offline: writes are fenced" or "consistent point of the live stream")
    validate.verify(ctx, opts)
  end
  local final = stream.stop(ctx) or {}
  runbook.crash_point("cutover:stopped")
  out.applied_lsn = final.applied_lsn
  out.stream = { txns = final.txns, inserts = final.inserts, updates = final.updates,
                 deletes = final.deletes, truncates = final.truncates, reconnects = final.reconnects }
  out.stopped = true
  ctx:save()
end

step {
  name = "cutover",
  title = "Cutover: catch up, sequences, foreign keys, final checks",
  plan = function(ctx)
    if not ctx.params.cdc then return "nothing (cdc=false)" end
    return string.format("%sreads the source's current LSN and waits (up to %d s) until the target "
      .. "applied it; sets sequences to the source's value + %d; adds the deferred foreign keys "
      .. "(NOT VALID, then VALIDATE); %s; prints the switch-over instructions; stops the stream",
      ctx.params.write_fence and "fences writes (the source database becomes read-only for new "
        .. "sessions, other sessions are ended); " or "",
      ctx.params.cutover_timeout, ctx.params.sequence_margin,
      not ctx.params.cutover_validate and "no final validation (cutover_validate=false)"
        or ctx.params.write_fence and "validates schema and every row (offline: writes are fenced)"
        or "validates schema and every row at a consistent point of the live stream")
  end,
  check = function(ctx)
    return not ctx.params.cdc
  end,
  run = function(ctx)
    local p, out = ctx.params, ctx.out
    if not out.stopped then
      rb.cutover_apply(ctx)
    end
    -- the stream is stopped: nothing replicated fires a trigger any more
    local disabled = rb.disabled_triggers(ctx)
    if #disabled > 0 and not out.triggers_enabled then
      status_file.publish(ctx, { phase = "cutover: triggers" })
      triggers.enable(ctx.dst, disabled)
      runbook.crash_point("cutover:triggers")
      local d = require("pgtide.schema_diff").run(ctx.src, ctx.dst, { kinds = { "triggers" },
        tables = nil })
      runbook.require(d.ok, "cutover: after enabling %d trigger(s), the target's triggers still differ "
        .. "from the source's: %s", #disabled, d.differences[1] and
        require("pgtide.schema_diff").format(d.differences[1]) or "?")
      out.triggers_enabled = #disabled
      ctx:save()
      log.info("cutover: %d user trigger(s) enabled again on the target", #disabled)
    end
    local pg = require "pg"
    local lines = cutover.instructions {
      target_display = pg.safe_conninfo(p.target),
      next = "The cleanup step comes next: it drops the replication slot (which otherwise keeps WAL "
        .. "on the source) and the publication (it asks first; --yes without a terminal).",
    }
    if out.fence then
      lines[#lines + 1] = "  The source database is read-only (write fence). To undo: "
        .. fence.unfence_sql(ctx.src, out.fence.database)
    else
      lines[#lines + 1] = "  Writes made on the source from now on are NOT replicated: the "
        .. "application must write to the target only."
    end
    for _, l in ipairs(lines) do log.info("%s", l) end
    out.finished_at = util.now_iso()
    cutover_request.clear(ctx.state_dir)   -- a request made while this step ran is answered too
    status_file.publish(ctx, { phase = "cutover done", cdc = { state = "stopped", applied_lsn = out.applied_lsn } })
    log.info("cutover done: the target has every change up to %s; the stream is stopped", out.cutover_lsn)
  end,
}

step {
  name = "cleanup",
  title = "Cleanup: drop the replication slot and the publication",
  destructive = true,
  plan = function(ctx)
    if not ctx.params.cdc then return "nothing (cdc=false)" end
    local n = names_of(ctx.name)
    local slot = (ctx.outputs["full-load"] or {}).slot or {}
    return string.format("drops replication slot %s%s on the source, and the replication progress "
      .. "record on the target (with the schema pgtide when pgtide made it)", n.slot,
      ctx.params.publication and string.format(" (publication %s, yours, stays)", ctx.params.publication)
        or string.format(" and publication %s", slot.publication or n.publication))
  end,
  check = function(ctx)
    return not ctx.params.cdc
  end,
  run = function(ctx)
    local n = names_of(ctx.name)
    local slot = (ctx.outputs["full-load"] or {}).slot or {}
    stream.stop(ctx)
    -- the write fence makes new sessions read-only: this one needs to write
    ctx.src:exec("SET default_transaction_read_only = off")
    teardown.drop_slot(ctx.src, n.slot)
    runbook.crash_point("cleanup:slot")
    -- the publication only when this migration made it (publication= names the owner's)
    local pub = slot.publication or n.publication
    if slot.publication_created ~= false and not ctx.params.publication then
      teardown.drop_publication(ctx.src, pub)
    else
      local given = ctx.params.publication or pub
      local owner = ctx.src:query_one([[SELECT pg_get_userbyid(pubowner) AS o FROM pg_publication
                                         WHERE pubname = $1]], given)
      if owner then
        ctx.out.left = { publication = given, owner = owner.o }
        log.warn("cleanup: publication %s belongs to %s, who made it for this migration; when nothing "
          .. "else uses it, as %s run on the source: DROP PUBLICATION %s;", given, owner.o, owner.o,
          require("pgtide.quote").ident(ctx.src, given))
      end
      pub = nil
    end
    runbook.crash_point("cleanup:publication")
    teardown.drop_progress(ctx, slot)
    runbook.crash_point("cleanup:progress")
    ctx.out.dropped = { slot = n.slot, publication = pub, progress = slot.record }
    log.info("cleanup: dropped replication slot %s%s and the progress record %s on the target",
      n.slot, pub and (", publication " .. pub) or "", tostring(slot.record or n.slot))
  end,
  verify = function(ctx)
    local n = names_of(ctx.name)
    local info = cdc.slot_info { source = ctx.params.source, slot = n.slot }
    runbook.require(not info.exists, "replication slot %s still exists on the source", n.slot)
  end,
}

-- `pgtide abandon`: what this migration made, as its state records it (pgtide.teardown)
rb.abandon = { find = teardown.find, drop = teardown.drop }

return rb
