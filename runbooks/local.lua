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

This file is the procedure; the engine behind each step is in
lua/pgtide: local_scope (the tables in scope), local_resume (the slot's
snapshot and a resumed load), local_load (full load, count check,
vacuum), local_schema (pre-data, post-data, triggers), local_stream
(streaming, new tables), local_cutover, teardown (cleanup).
]]
local runbook = require "pgtide.runbook"
local preflight = require "pgtide.preflight"
local schema = require "pgtide.schema"
local sequences = require "pgtide.sequences"
local util = require "pgtide.util"
local stream = require "pgtide.stream"
local cutover_request = require "pgtide.cutover_request"
local fence = require "pgtide.fence"
local names_of = require("pgtide.names").of
local status_file = require "pgtide.status_file"
local cutover = require "pgtide.cutover"
local apply_plan = require "pgtide.apply_plan"
local teardown = require "pgtide.teardown"
local scope = require "pgtide.local_scope"
local resume = require "pgtide.local_resume"
local local_load = require "pgtide.local_load"
local local_schema = require "pgtide.local_schema"
local local_stream = require "pgtide.local_stream"
local local_cutover = require "pgtide.local_cutover"
local cdc = require "core.cdc"
local log = require "log"

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

-- Steps publish their phase for `pgtide status` as they start, on live
-- connections (runbook.revive).
local function step(def)
  local run = def.run
  def.run = function(ctx)
    status_file.publish(ctx, { phase = def.name, step = def.name })
    runbook.revive(ctx)
    return run(ctx)
  end
  return rb:step(def)
end

local count_check   -- the count-check step (defined below)

--[[ Whether the full load verifies each table as soon as it is loaded
  (FlCheck, src/load/fullload.h): when this run goes on to the stock
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
        scope = scope.scope_fn(ctx), target_disk_gb = p.target_disk_gb, cdc = p.cdc, pg_dump = p.pg_dump,
        slot = n.slot, source = p.source, slot_ours = resume.slot_is_ours(ctx, n.slot),
        slot_message = function(name) return resume.foreign_slot_message(ctx, name) end,
        plan = apply_plan.for_run(ctx, true), publication = p.publication or n.publication,
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
    if local_schema.pre_data_present(ctx) then
      log.warn("schema: the pre-data is already on the target (applied by a run that stopped before "
        .. "recording it); not applied again")
    else
      schema.apply_pre_data(ctx.dst, parts)
      runbook.crash_point("schema:pre-data")
    end
    ctx.out.applied = true
    -- schema-first creates the triggers now: they must not fire for the copied rows
    if ctx.params.mode == "schema-first" then local_schema.disable_triggers(ctx) end
  end,
  verify = function(ctx)
    local r = schema.verify(ctx.src, ctx.dst, { schemas = ctx.params.schemas,
      exclude_schemas = ctx.params.exclude_schemas, triggers_disabled = ctx.out.triggers == "disabled",
      deferred_views = schema.deferred_views(scope.parts_of(ctx)),
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
      scope.jobs(ctx), ctx.params.split_threshold_mb,
      ctx.params.cdc and " (after a crash, tables not finished are copied again under a new "
        .. "snapshot, and the stream skips their changes up to it)" or "")
  end,
  check = function(ctx)
    return ctx.out.complete == true
  end,
  run = function(ctx)
    -- with CDC under the replication slot's snapshot; after a crash, see pgtide.local_resume
    local_load.run(ctx, verify_in_load(ctx))
  end,
}

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
    local_schema.post_data(ctx)
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
                               scope = scope.scope_fn(ctx) }
    for _, line in ipairs(sequences.lines(r)) do log.info("%s", line) end
    ctx.out.synced, ctx.out.unchanged, ctx.out.missing = #r.synced, #r.unchanged, #r.missing
  end,
  verify = function(ctx)
    -- with CDC the source keeps writing: the margin absorbs what it used since the sync, so
    -- check only that the target is still ahead (the cutover sets them again)
    sequences.verify { src = ctx.src, dst = ctx.dst, scope = scope.scope_fn(ctx),
                       margin = ctx.params.cdc and 0 or ctx.params.sequence_margin }
  end,
}

step {
  name = "vacuum",
  title = "VACUUM ANALYZE the target",
  plan = "VACUUM (ANALYZE) of every loaded table (ANALYZE of partitioned parents), in parallel, "
    .. "largest first, so the planner has statistics from the first query",
  run = function(ctx)
    local_load.vacuum(ctx)
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
    local_load.count_check(ctx)
  end,
}

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
    local_stream.run(ctx)
  end,
}

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
      local_cutover.apply(ctx)
    end
    local_cutover.enable_triggers(ctx)
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
    teardown.cleanup(ctx)
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
