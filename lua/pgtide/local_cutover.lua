--[[
pgtide.local_cutover: the cutover of a `local` migration up to the
switch-over: catch up (after the optional write fence), copy the
unlogged tables again, sync sequences, add the foreign keys, validate at
a consistent point (or offline when fenced), stop the stream, enable the
triggers pgtide disabled.  Each part records itself in the cutover
step's outputs, so a rerun goes on where it stopped.

  local_cutover.apply(ctx)             -- everything up to the stream's stop
  local_cutover.enable_triggers(ctx)   -- after it: the disabled user triggers on again

Each raises a step failure (runbook.fail / require) or the engine's error.
]]
local runbook = require "pgtide.runbook"
local sequences = require "pgtide.sequences"
local validate = require "pgtide.validate"
local stream = require "pgtide.stream"
local fence = require "pgtide.fence"
local status_file = require "pgtide.status_file"
local new_tables = require "pgtide.new_tables"
local triggers = require "pgtide.triggers"
local scope = require "pgtide.local_scope"
local local_schema = require "pgtide.local_schema"
local load = require "core.load"
local log = require "log"

local M = {}

-- Client sessions on the source holding a transaction id (writers), not pgtide's.
local function writers(src)
  return src:query([[
    SELECT pid, usename, application_name FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
       AND backend_type = 'client backend' AND coalesce(application_name, '') NOT LIKE 'pgtide%']])
end

--[[ Copy the unlogged tables again (their changes never stream): at
  cutover, after the writes stopped, each is emptied and copied from a
  fresh snapshot.  Records the tables in ctx.out.unlogged_copied. ]]
local function copy_unlogged(ctx)
  if ctx.params.unlogged ~= "copy" or ctx.out.unlogged_copied then return end
  local list = {}
  for _, t in ipairs(scope.unit_tables(ctx)) do
    if t.unlogged then list[#list + 1] = t.schema .. "." .. t.table end
  end
  if #list > 0 then
    status_file.publish(ctx, { phase = "cutover: unlogged tables" })
    local units = load.plan { source = ctx.params.source, tables = list, jobs = scope.jobs(ctx),
                              split_threshold_bytes = ctx.params.split_threshold_mb * 1024 * 1024,
                              max_parts = ctx.params.max_parts, format = ctx.params.format,
                              target_version = ctx.dst:server_version() }
    local r = load.full_load { source = ctx.params.source, target = ctx.params.target, jobs = scope.jobs(ctx),
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
function M.apply(ctx)
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
  for _, t in ipairs(new_tables.find(ctx.src, scope.known_tables(ctx), scope.scope_fn(ctx))) do
    if not ctx.dst:query_one("SELECT to_regclass($1) IS NOT NULL AS x", t.qname).x then
      missing[#missing + 1] = t.qname
    end
  end
  runbook.require(#missing == 0, "cutover: table(s) created on the source during the migration are missing "
    .. "on the target: %s. Create and copy them on the target (pg_dump -t TABLE | psql, then check with "
    .. "pgtide validate), or run again with new_tables=add before cutting over", table.concat(missing, ", "))
  copy_unlogged(ctx)
  local seq = sequences.sync { src = ctx.src, dst = ctx.dst, margin = p.sequence_margin,
                               scope = scope.scope_fn(ctx) }
  for _, line in ipairs(sequences.lines(seq)) do log.info("%s", line) end
  out.sequences = { synced = #seq.synced, unchanged = #seq.unchanged, missing = #seq.missing }
  -- unless writes are fenced, the source may use values while this runs: the target must be ahead
  sequences.verify { src = ctx.src, dst = ctx.dst, margin = out.fence and p.sequence_margin or 0,
                     scope = scope.scope_fn(ctx) }
  if not out.foreign_keys_applied then
    local parts = scope.parts_of(ctx)
    status_file.publish(ctx, { phase = "cutover: foreign keys" })
    local_schema.apply_foreign_keys(ctx, parts)
    -- and those of the tables added while streaming
    for _, extra in ipairs(new_tables.parts((ctx.outputs.stream or {}).added)) do local_schema.apply_foreign_keys(ctx, extra) end
    runbook.crash_point("cutover:foreign-keys")
    out.foreign_keys_applied = #parts.foreign_keys
    ctx:save()
  end
  if p.cutover_validate then
    status_file.publish(ctx, { phase = "cutover: validation" })
    local opts = { tables = scope.validation_tables(ctx), jobs = scope.jobs(ctx) }
    if out.fence then
      opts.mode = "offline"
    else
      opts.mode, opts.cdc, opts.pause_timeout = "consistent", r, p.cutover_timeout
    end
    -- the triggers pgtide keeps disabled while the stream runs are enabled after it stops
    if #local_schema.disabled_triggers(ctx) > 0 then opts.schema_ignore = { triggers = { enabled = true } } end
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

--[[ After the stream stopped (nothing replicated fires a trigger any
  more): enable the user triggers pgtide disabled, check that the
  target's triggers match the source's again, record it. ]]
function M.enable_triggers(ctx)
  -- the stream is stopped: nothing replicated fires a trigger any more
  local disabled = local_schema.disabled_triggers(ctx)
  local out = ctx.out
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
end

return M
