--[[
pgtide.dms.monitor: what the seed's Step 9 asks to watch ("Full load
progress", "CDC lag", "Error count", "Throughput"), read from the DMS
and CloudWatch APIs and shown as a live display.

  monitor.table_stats(dms, arn)              -> DescribeTableStatistics, every page
  monitor.cdc_latency(ctx, instance_id, task) -> { source, target, total, at } or nil
  monitor.snapshot(ctx, arn, prev)           -> { task, tables, latency, rows, rate, errors }
  monitor.lines(snap)                        -> display lines
  monitor.until_loaded(ctx, arn, opts)       -> snapshot once the full load is complete
                                               and CDC is running (bounded)

CloudWatch task metrics use the dimensions ReplicationInstanceIdentifier
and ReplicationTaskIdentifier; which value the latter holds (the task's
name or the id at the end of its ARN) is not documented consistently, so
ListMetrics is asked first and whichever matches is used.
]]
local awsx = require "pgtide.dms.awsx"
local task = require "pgtide.dms.task"
local log = require "log"
local sys = require "sys"
local util = require "pgtide.util"
local runbook = require "pgtide.runbook"

local M = {}

function M.table_stats(dms, arn)
  local ok, res = pcall(awsx.all, dms, "DescribeTableStatistics",
    { ReplicationTaskArn = arn, MaxRecords = 500 }, "TableStatistics")
  if ok then return res end
  if awsx.not_found(res) or awsx.code(res) == "InvalidResourceStateFault" then return {} end
  error(res, 0)
end

local dim_cache = {}

-- The ReplicationTaskIdentifier dimension value CloudWatch uses for this task.
local function task_dimension(ctx, instance_id, t)
  local key = t.ReplicationTaskArn
  if dim_cache[key] then return dim_cache[key] end
  local suffix = t.ReplicationTaskArn:match(":task:(.+)$") or t.ReplicationTaskIdentifier
  local cw = awsx.client(ctx, "cloudwatch")
  local ok, metrics = pcall(awsx.all, cw, "ListMetrics", {
    Namespace = "AWS/DMS", MetricName = "CDCLatencySource",
    Dimensions = { { Name = "ReplicationInstanceIdentifier", Value = instance_id } },
  }, "Metrics")
  if ok then
    for _, m in ipairs(metrics) do
      for _, d in ipairs(m.Dimensions or {}) do
        if d.Name == "ReplicationTaskIdentifier" and (d.Value == suffix or d.Value == t.ReplicationTaskIdentifier) then
          dim_cache[key] = d.Value
          return d.Value
        end
      end
    end
    log.debug("CloudWatch has no CDC metric for task %s on instance %s yet (%d metric(s) listed)",
      t.ReplicationTaskIdentifier, instance_id, #metrics)
  else
    log.debug("ListMetrics failed: %s", tostring(metrics))
  end
  return nil
end

--[[
monitor.cdc_latency(ctx, instance_id, t) -> { source, target, total, at }
or nil when CloudWatch has no datapoint yet (metrics appear about a
minute after CDC starts).  Values are the latest 1-minute maxima within
the last 10 minutes, in seconds.
]]
function M.cdc_latency(ctx, instance_id, t)
  local dim = task_dimension(ctx, instance_id, t)
  if not dim then return nil end
  local cw = awsx.client(ctx, "cloudwatch")
  local function q(id, metric)
    return { Id = id, ReturnData = true, MetricStat = {
      Metric = { Namespace = "AWS/DMS", MetricName = metric, Dimensions = {
        { Name = "ReplicationInstanceIdentifier", Value = instance_id },
        { Name = "ReplicationTaskIdentifier", Value = dim } } },
      Period = 60, Stat = "Maximum" } }
  end
  local now = os.time()
  local ok, res = pcall(cw.GetMetricData, cw, {
    MetricDataQueries = { q("src", "CDCLatencySource"), q("tgt", "CDCLatencyTarget") },
    StartTime = now - 600, EndTime = now + 60, ScanBy = "TimestampDescending",
  })
  if not ok then
    log.debug("GetMetricData failed: %s", tostring(res))
    return nil
  end
  res = awsx.unwrap(res, "GetMetricData")
  local out = {}
  for _, r in ipairs(res.MetricDataResults or {}) do
    local values, stamps = r.Values or {}, r.Timestamps or {}
    -- newest first (ScanBy TimestampDescending), but do not rely on it
    local best
    for i, v in ipairs(values) do
      local ts = tonumber(stamps[i]) or 0
      if not best or ts > best.at then best = { v = tonumber(v), at = ts } end
    end
    if best then
      if r.Id == "src" then out.source, out.at_src = best.v, best.at end
      if r.Id == "tgt" then out.target, out.at_tgt = best.v, best.at end
    end
  end
  if not out.source and not out.target then return nil end
  out.total = (out.source or 0) + (out.target or 0)
  out.at = math.min(out.at_src or out.at_tgt, out.at_tgt or out.at_src)
  return out
end

local function sum_rows(tables)
  local n = 0
  for _, s in ipairs(tables) do
    n = n + (tonumber(s.FullLoadRows) or 0) + (tonumber(s.Inserts) or 0) + (tonumber(s.Updates) or 0)
      + (tonumber(s.Deletes) or 0)
  end
  return n
end

--[[
monitor.snapshot(ctx, arn, prev) -> snapshot.  'prev' (an earlier
snapshot) gives the throughput (rows per second between the two).
]]
function M.snapshot(ctx, arn, prev, instance_id)
  local dms = awsx.client(ctx, "dms")
  local t = task.get(dms, arn)
  runbook.require(t, "replication task %s not found", arn)
  local tables = M.table_stats(dms, arn)
  local snap = { task = t, tables = tables, at = sys.monotonic(), rows = sum_rows(tables), errors = {} }
  if prev and snap.at > prev.at then
    snap.rate = math.max(0, (snap.rows - prev.rows) / (snap.at - prev.at))
  end
  if t.LastFailureMessage and t.LastFailureMessage ~= "" then
    snap.errors[#snap.errors + 1] = "task: " .. t.LastFailureMessage
  end
  for _, s in ipairs(tables) do
    if s.TableState == "Table error" or s.ValidationState == "Mismatched records"
        or s.ValidationState == "Error" or s.ValidationState == "Table error"
        or (tonumber(s.ValidationFailedRecords) or 0) > 0 then
      snap.errors[#snap.errors + 1] = string.format("%s.%s: %s, validation %s%s", s.SchemaName, s.TableName,
        tostring(s.TableState), tostring(s.ValidationState),
        (s.ValidationStateDetails and s.ValidationStateDetails ~= "") and (" (" .. s.ValidationStateDetails .. ")") or "")
    end
  end
  if instance_id and t.Status == "running" then
    snap.latency = M.cdc_latency(ctx, instance_id, t)
  end
  -- the task's status history, table statistics and latency samples for the report
  require("pgtide.monitor").dms(ctx, snap)
  return snap
end

-- The display, as lines.
function M.lines(snap)
  local t = snap.task
  local s = t.ReplicationTaskStats or {}
  local out = {}
  out[#out + 1] = string.format("task %s: %s%s", t.ReplicationTaskIdentifier, task.status_line(t),
    s.ElapsedTimeMillis and (", elapsed " .. util.format_duration(s.ElapsedTimeMillis / 1000)) or "")
  if #snap.tables > 0 then
    out[#out + 1] = string.format("  %-34s %-16s %12s %18s  %s", "table", "state", "full-load rows",
      "cdc ins/upd/del", "validation")
    for _, r in ipairs(snap.tables) do
      out[#out + 1] = string.format("  %-34s %-16s %12s %18s  %s", r.SchemaName .. "." .. r.TableName,
        tostring(r.TableState), tostring(r.FullLoadRows or 0),
        string.format("%s/%s/%s", r.Inserts or 0, r.Updates or 0, r.Deletes or 0),
        tostring(r.ValidationState or "-") ..
          (((tonumber(r.ValidationPendingRecords) or 0) > 0) and (" (" .. r.ValidationPendingRecords .. " pending)") or ""))
    end
  end
  local lat = snap.latency
  out[#out + 1] = string.format("CDC latency: %s; throughput: %s; errors: %s",
    lat and string.format("source %s s + target %s s = %s s", tostring(lat.source or 0),
      tostring(lat.target or 0), tostring(lat.total)) or "no CloudWatch data yet",
    snap.rate and string.format("%.0f rows/s", snap.rate) or "-",
    #snap.errors > 0 and table.concat(snap.errors, "; ") or "none")
  return out
end

-- Full load complete and CDC running ("Load complete, replication
-- ongoing" in the console): status running, 100%, every table completed.
function M.loaded(snap)
  local t = snap.task
  local s = t.ReplicationTaskStats or {}
  if t.Status ~= "running" or (s.FullLoadProgressPercent or 0) < 100 then return false end
  if (s.TablesLoading or 0) > 0 or (s.TablesQueued or 0) > 0 then return false end
  for _, r in ipairs(snap.tables) do
    if r.TableState ~= "Table completed" and r.TableState ~= "Replicating" then return false end
  end
  return true
end

--[[
monitor.until_loaded(ctx, arn, opts) -> snapshot.  Polls every
poll_interval, logging the display when anything changes (and on a
terminal keeping the summary on the status line), until the full load
is complete and CDC is running.  Raises when the task fails or stops,
when a table errors, or after opts.timeout seconds (with the last
status).  opts.instance_id enables CloudWatch latency.
opts.migration_type: "full-load" ends when the task stopped with
FULL_LOAD_ONLY_FINISHED (DMS stops a full-load task when it is done);
"cdc" as soon as the task replicates (there is no full load).
]]
function M.until_loaded(ctx, arn, opts)
  local prev, last_text, snap
  awsx.wait {
    what = "full load", timeout = opts.timeout, interval = ctx.params.poll_interval,
    poll = function()
      snap = M.snapshot(ctx, arn, prev, opts.instance_id)
      prev = snap
      local lines = M.lines(snap)
      local text = table.concat(lines, "\n")
      if text:gsub("throughput: [^;]*", "") ~= (last_text or ""):gsub("throughput: [^;]*", "") then
        for _, l in ipairs(lines) do log.info("%s", l) end
        last_text = text
      end
      local t = snap.task
      if t.Status == "failed" then
        return false, task.status_line(t), "the task failed: " .. task.failure_text(t)
      end
      if opts.migration_type == "full-load" and t.Status == "stopped"
          and tostring(t.StopReason or ""):find("FULL_LOAD_ONLY_FINISHED", 1, true) then
        return true, "Load complete (the full-load task stopped: FULL_LOAD_ONLY_FINISHED)"
      end
      if opts.migration_type == "cdc" and t.Status == "running" and ((t.ReplicationTaskStats or {}).TablesErrored or 0) == 0 then
        return true, "replication ongoing (CDC only)"
      end
      if t.Status == "stopped" then
        return false, task.status_line(t), "the task stopped: " .. task.failure_text(t)
      end
      local s = t.ReplicationTaskStats or {}
      if (s.TablesErrored or 0) > 0 and t.Status == "running" then
        return false, task.status_line(t), string.format("%d table(s) failed to load: %s", s.TablesErrored,
          table.concat(snap.errors, "; "))
      end
      if opts.migration_type ~= "full-load" and M.loaded(snap) then return true, "Load complete, replication ongoing" end
      return false, task.status_line(t)
    end,
  }
  return snap
end

return M
