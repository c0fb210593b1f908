--[[
pgtide.dms.task: the replication task's lifecycle (the seed's Steps 6-8
and the task part of cutover and cleanup).

  task.find(dms, id)                      -> task or nil
  task.get(dms, arn)                      -> task or nil
  task.ensure(ctx, names, spec)           -> arn (created and ready)
  task.ensure_slot(ctx, conn, name, plugin) -> the slot's LSN
  task.slot_lsn(conn, name)               -> the slot's confirmed_flush_lsn (or nil)
  task.start(ctx, arn [, opts])           -> the start type used
  task.stop(ctx, arn)                     -> waits until stopped
  task.scope_tables(conn, mappings)       -> tables DMS migrates, on conn
  task.status_line(t)                     -> one line describing the task
]]
local awsx = require "pgtide.dms.awsx"
local infra = require "pgtide.dms.infra"
local naming = require "pgtide.dms.naming"
local settings = require "pgtide.dms.settings"
local log = require "log"
local runbook = require "pgtide.runbook"

local M = {}

function M.find(dms, id)
  return infra.describe_one(dms, "DescribeReplicationTasks", "replication-task-id", id, "ReplicationTasks")
end

function M.get(dms, arn)
  return infra.describe_one(dms, "DescribeReplicationTasks", "replication-task-arn", arn, "ReplicationTasks")
end

local function failure_text(t)
  local parts = {}
  if t.LastFailureMessage and t.LastFailureMessage ~= "" then parts[#parts + 1] = t.LastFailureMessage end
  if t.StopReason and t.StopReason ~= "" then parts[#parts + 1] = "stop reason: " .. t.StopReason end
  return #parts > 0 and table.concat(parts, "; ") or "DMS gave no reason"
end
M.failure_text = failure_text

-- One line: status, full-load percent and table counts.
function M.status_line(t)
  local s = t.ReplicationTaskStats or {}
  local line = string.format("%s", tostring(t.Status))
  if s.FullLoadProgressPercent then
    line = line .. string.format(", full load %d%% (%d loaded, %d loading, %d queued, %d errored)",
      s.FullLoadProgressPercent, s.TablesLoaded or 0, s.TablesLoading or 0, s.TablesQueued or 0,
      s.TablesErrored or 0)
  end
  return line
end

--[[
task.prepare_slot(ctx, conn, name, plugin) -> the slot the task reads, or
nil.  'name' is naming.slot()'s answer.  full-load (name false): no slot,
but the application's writes must have stopped, since a full load copies
a snapshot and nothing after it (confirmed by the user, recorded).  cdc:
the user's existing slot, which must be there with the plugin DMS
decodes; otherwise the migration's own, created now (task.ensure_slot).
Raises a failure naming what is missing.
]]
function M.prepare_slot(ctx, conn, name, plugin)
  local mt = ctx.params.migration_type
  if not name then
    runbook.require(mt == "full-load", "migration_type=cdc needs cdc_slot: the logical replication slot (%s) "
      .. "created when the target's data was copied (for instance with CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT "
      .. "and pg_dump --snapshot)", plugin)
    if not ctx.out.writes_stopped_confirmed then
      runbook.require(ctx:confirm("migration_type=full-load copies a snapshot: changes made after it are not "
        .. "migrated. Have application writes to the source stopped?"),
        "a full load needs the application's writes to the source stopped first (answer yes on a terminal, or "
        .. "--yes); or use migration_type=full-load-and-cdc")
      ctx.out.writes_stopped_confirmed = true
      ctx:save()
    end
    return nil
  end
  if mt == "cdc" then
    local row = conn:query_one([[select plugin, active, database = current_database() as here
                                   from pg_replication_slots where slot_name = $1]], name)
    runbook.require(row, "cdc_slot %s does not exist on the source: migration_type=cdc replicates from the slot "
      .. "created when the target's data was copied", name)
    runbook.require(row.plugin == plugin and row.here, "cdc_slot %s is a %s slot%s; DMS needs a %s slot of this "
      .. "database", name, tostring(row.plugin), row.here and "" or " of another database", plugin)
    ctx.out.slot = name
    ctx:save()
    log.info("CDC replicates from the existing slot %s (from %s)", name, tostring(M.slot_lsn(conn, name)))
    return name
  end
  M.ensure_slot(ctx, conn, name, plugin)
  return name
end

-- The position a named slot's consumer starts from (confirmed_flush_lsn),
-- or nil when the slot does not exist.
function M.slot_lsn(conn, name)
  local row = conn:query_one("select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = $1",
    name)
  return row and row.lsn
end

--[[
task.ensure_slot(ctx, conn, name, plugin) -> the slot's LSN.  The
logical replication slot the source endpoint names (slotName=...),
created on the source unless it exists.  DMS checks that a slot given by
name exists, and that the task starts at a valid CdcStartPosition (the
slot's LSN, see task.start); pgtide creates it right before the task
starts so it holds as little WAL as possible, and records it so cleanup
drops it.
]]
function M.ensure_slot(ctx, conn, name, plugin)
  local row = conn:query_one("select plugin, active from pg_replication_slots where slot_name = $1", name)
  if row then
    runbook.require(row.plugin == plugin, "replication slot %s exists with plugin %s, not %s: drop it "
      .. "(SELECT pg_drop_replication_slot('%s')) or choose another migration name", name, row.plugin,
      plugin, name)
  else
    conn:query_one("select pg_create_logical_replication_slot($1, $2)", name, plugin)
    log.info("created logical replication slot %s (%s) on the source", name, plugin)
  end
  ctx.out.slot = name
  ctx:save()
  return M.slot_lsn(conn, name)
end

--[[
task.ensure(ctx, names, spec) -> arn.  spec: source_arn, target_arn,
instance_arn, migration_type, mappings (JSON text), settings (JSON
text).  Creates the task unless it exists, then waits (bounded) until
it leaves 'creating'/'modifying'.
]]
function M.ensure(ctx, names, spec)
  local dms = awsx.client(ctx, "dms")
  local t = M.find(dms, names.task)
  local created, seen
  if not t then
    local res = dms:CreateReplicationTask {
      ReplicationTaskIdentifier = names.task,
      SourceEndpointArn = spec.source_arn, TargetEndpointArn = spec.target_arn,
      ReplicationInstanceArn = spec.instance_arn, MigrationType = spec.migration_type,
      TableMappings = spec.mappings, ReplicationTaskSettings = spec.settings,
      Tags = naming.tags(names),
    }
    t = res.ReplicationTask
    created = os.time()
    log.info("created replication task %s (%s)", names.task, spec.migration_type)
  end
  ctx.out.task_arn = t.ReplicationTaskArn
  ctx.out.task_id = names.task
  ctx:save()
  awsx.wait {
    what = "replication task " .. names.task,
    timeout = ctx.params.connection_timeout, interval = math.min(ctx.params.poll_interval, 5),
    poll = function()
      t = M.get(dms, ctx.out.task_arn)
      if not t and not seen and awsx.young(ctx, created) then return false, "not visible yet" end
      if not t then return false, "not found", "the task disappeared" end
      seen = true
      if t.Status == "creating" or t.Status == "modifying" then return false, t.Status end
      if t.Status == "failed" and not t.ReplicationTaskStartDate then
        return false, t.Status, "DMS could not create the task: " .. failure_text(t)
      end
      return true, t.Status
    end,
  }
  return ctx.out.task_arn
end

--[[
task.scope_tables(conn, mappings) -> list of { schema, name, qname } of
the tables on 'conn' that the table mappings select.
]]
function M.scope_tables(conn, mappings)
  local keep = settings.table_filter(mappings)
  local out = {}
  for _, r in ipairs(conn:query([[
      select n.nspname as schema, c.relname as name, format('%I.%I', n.nspname, c.relname) as qname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
         and n.nspname !~ '^pg_' and not c.relispartition
         and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')
       order by 1, 2]])) do
    if keep(r.schema, r.name) then out[#out + 1] = r end
  end
  return out
end

local function wait_status(ctx, dms, arn, want, what, timeout, failing)
  local t
  awsx.wait {
    what = what, timeout = timeout, interval = math.min(ctx.params.poll_interval, 5),
    poll = function()
      t = M.get(dms, arn)
      if not t then return false, "not found", "the task disappeared" end
      if want[t.Status] then return true, M.status_line(t) end
      if failing and failing[t.Status] then
        return false, M.status_line(t), t.Status .. ": " .. failure_text(t)
      end
      return false, M.status_line(t)
    end,
  }
  return t
end
M.wait_status = wait_status

-- Did the task's full load finish, by DMS's own statistics?  (A task
-- that failed or stopped during CDC keeps FullLoadProgressPercent 100
-- and its FullLoadFinishDate.)
function M.full_load_finished(t)
  local s = t and t.ReplicationTaskStats or {}
  return (s.FullLoadProgressPercent or 0) >= 100 and (s.TablesErrored or 0) == 0
end

--[[
task.start(ctx, arn [, opts]) -> start type or nil (already running).
A ready task (never run) gets start-replication.  A stopped or failed
task is restarted with the documented StartReplicationTaskType
(StartReplicationTask in the DMS API: "To load all the tables again,
and start capturing source changes, use reload-target. Otherwise use
resume-processing, to replicate the changes from the last stop
position"): resume-processing when its full load had finished (DMS's
statistics say so, or opts.full_load_done), otherwise reload-target,
after emptying the
target tables in scope (with DO_NOTHING, DMS would otherwise load rows
on top of what the failed load left).  opts.truncate(tables) does the
emptying (given by the runbook, which owns the target connection).
opts.start_position() -> LSN: when the source endpoint names a slot,
start-replication and reload-target must carry a valid CdcStartPosition
(PostgreSQLSettings.SlotName in the DMS API: "If the specified slot
doesn't exist or the task doesn't have a valid CdcStartPosition setting,
DMS raises an error"); it is read right before the start.
resume-processing continues from DMS's own checkpoint.
]]
function M.start(ctx, arn, opts)
  opts = opts or {}
  local dms = awsx.client(ctx, "dms")
  local t = M.get(dms, arn)
  runbook.require(t, "replication task %s not found", arn)
  if t.Status == "creating" or t.Status == "modifying" or t.Status == "testing" or t.Status == "stopping" then
    t = wait_status(ctx, dms, arn, { ready = true, stopped = true, failed = true, running = true },
      "replication task to settle", ctx.params.connection_timeout)
  end
  if t.Status == "running" or t.Status == "starting" then return nil end
  local kind
  if t.Status == "ready" and not t.ReplicationTaskStartDate then
    kind = "start-replication"
  elseif opts.full_load_done or M.full_load_finished(t) then
    kind = "resume-processing"
  else
    kind = "reload-target"
    if opts.truncate then opts.truncate() end
  end
  log.info("starting replication task %s (%s; it was %s%s)", t.ReplicationTaskIdentifier, kind, t.Status,
    t.Status == "failed" and (": " .. failure_text(t)) or "")
  local input = { ReplicationTaskArn = arn, StartReplicationTaskType = kind }
  if kind ~= "resume-processing" and opts.start_position then
    input.CdcStartPosition = opts.start_position()
    log.info("CDC starts at %s (CdcStartPosition: the slot's position)", tostring(input.CdcStartPosition))
  end
  dms:StartReplicationTask(input)
  ctx.out.start_type = kind
  ctx.out.started_at = os.time()
  ctx:save()
  return kind
end

--[[
task.stop(ctx, arn): StopReplicationTask unless already stopped or
failed, then wait (bounded by stop_timeout) until it is.
]]
function M.stop(ctx, arn)
  local dms = awsx.client(ctx, "dms")
  local t = M.get(dms, arn)
  if not t then return "not found" end
  if t.Status == "stopped" or t.Status == "failed" or t.Status == "ready" then return t.Status end
  if t.Status ~= "stopping" then
    local ok, err = pcall(dms.StopReplicationTask, dms, { ReplicationTaskArn = arn })
    if not ok and awsx.code(err) ~= "InvalidResourceStateFault" then error(err, 0) end
  end
  t = wait_status(ctx, dms, arn, { stopped = true, failed = true, ready = true },
    "replication task " .. t.ReplicationTaskIdentifier .. " to stop", ctx.params.stop_timeout)
  return t.Status
end

return M
