--[[
pgtide.monitor: what a run records over time for its report, and what it
serves to monitoring systems while it lasts.

  monitor.start(ctx, st, opts)    -- the engine, as a run starts: opts.metrics = "ADDR:PORT"
  monitor.stop()                  -- ... and as it ends
  monitor.observe(ctx, fields)    -- every status published (pgtide.status_file.publish)
  monitor.step_event(ctx, step, event, extra)   -- the engine: a step started/ended
  monitor.unit_done(ctx, unit)    -- the full load: one unit copied
  monitor.dms(ctx, snap)          -- the DMS runbooks: one monitoring snapshot
  monitor.samples(dir), monitor.events(dir)     -- read back (pgtide.report)
  monitor.metrics_text(data, live)              -- the exposition (also for tests)

Files in the state directory (append-only JSON lines, so that the report
survives a resume and a kill -9 loses at most the line being written):
  samples.jsonl  one line per published status that carries figures, at
                 most one per SAMPLE_INTERVAL seconds: { t, phase,
                 copy_mb_s, copied_bytes, copied_rows, apply_per_s, changes,
                 lag_bytes, lag_seconds, wal_bytes, pid }; past MAX_SAMPLES
                 lines the file is rewritten with every other line, so a run
                 of days keeps a bounded, evenly thinned history.
  events.jsonl   phases, step starts and ends, finished units, DMS task
                 status changes: { t, kind, ... }.
Nothing here may fail a run: every write logs at debug level and goes on.
]]
local json = require "json"
local log = require "log"
local sys = require "sys"
local util = require "pgtide.util"

local M = {}

M.SAMPLES = "samples.jsonl"
M.EVENTS = "events.jsonl"
M.SAMPLE_INTERVAL = 2
M.MAX_SAMPLES = 2000

local MB = 1024 * 1024

-- Per state directory: the last sample (for rates), the line count, the
-- last phase, and the merged live status for the metrics.
local dirs = {}

local function dir_state(dir)
  local d = dirs[dir]
  if not d then
    d = { live = {} }
    dirs[dir] = d
  end
  return d
end

local function append(path, t)
  local f, err = io.open(path, "a")
  if not f then
    log.debug("cannot append to %s: %s", path, tostring(err))
    return false
  end
  f:write(sys.redact(json.encode(t)), "\n")
  f:close()
  return true
end

-- The lines of a JSON-lines file as tables (a torn last line is skipped).
local function read_lines(path)
  local out = {}
  local text = sys.readfile(path)
  if not text then return out end
  for line in text:gmatch("[^\n]+") do
    local ok, v = pcall(json.decode, line)
    if ok and type(v) == "table" then out[#out + 1] = util.plain(v) end
  end
  return out
end

function M.samples(dir) return read_lines(dir .. "/" .. M.SAMPLES) end
function M.events(dir) return read_lines(dir .. "/" .. M.EVENTS) end

--[[ Keep samples.jsonl under MAX_SAMPLES lines: every other line goes
  (the first and the last stay), written atomically. ]]
local function thin(dir, d)
  local path = dir .. "/" .. M.SAMPLES
  local all = read_lines(path)
  local keep = {}
  for i, s in ipairs(all) do
    if i % 2 == 1 or i == #all then keep[#keep + 1] = sys.redact(json.encode(s)) end
  end
  local ok, err = sys.write_atomic(path, table.concat(keep, "\n") .. "\n")
  if not ok then log.debug("cannot thin %s: %s", path, tostring(err)) end
  d.count = #keep
end

--[[
observe(ctx, fields): called with each status pgtide.status_file publishes.
A sample is appended when the fields carry full-load or CDC figures
(at most one per SAMPLE_INTERVAL); a new phase is an event; the
metrics document is rebuilt.
]]
function M.observe(ctx, fields)
  local dir = ctx and ctx.state_dir
  if not dir or type(fields) ~= "table" then return end
  local d = dir_state(dir)
  for k, v in pairs(fields) do d.live[k] = v end
  local now = sys.time()
  if fields.phase and fields.phase ~= d.phase then
    d.phase = fields.phase
    append(dir .. "/" .. M.EVENTS, { t = now, kind = "phase", phase = fields.phase, pid = sys.getpid() })
  end
  local fl, c = fields.full_load, fields.cdc
  if (fl or (c and c.lag_bytes)) and (not d.last or now - d.last.t >= M.SAMPLE_INTERVAL - 0.1) then
    local s = { t = now, phase = d.phase, pid = sys.getpid() }
    local prev = d.last
    if fl then
      s.copied_bytes, s.copied_rows = fl.bytes, fl.rows
      if prev and prev.copied_bytes and fl.bytes and fl.bytes >= prev.copied_bytes then
        s.copy_mb_s = (fl.bytes - prev.copied_bytes) / MB / (now - prev.t)
      else
        s.copy_mb_s = fl.mb_per_s
      end
    end
    if c then
      s.lag_bytes, s.lag_seconds = c.lag_bytes, c.lag_seconds
      if c.retained_bytes and c.retained_bytes >= 0 then s.wal_bytes = c.retained_bytes end
      s.changes = (c.inserts or 0) + (c.updates or 0) + (c.deletes or 0) + (c.truncates or 0)
      if prev and prev.changes and s.changes >= prev.changes then
        s.apply_per_s = (s.changes - prev.changes) / (now - prev.t)
      end
    end
    d.last = s
    if not d.count then
      local text = sys.readfile(dir .. "/" .. M.SAMPLES) or ""
      d.count = select(2, text:gsub("\n", ""))
    end
    if append(dir .. "/" .. M.SAMPLES, s) then
      d.count = d.count + 1
      if d.count > M.MAX_SAMPLES then thin(dir, d) end
    end
  end
  M.refresh()
end

--[[ unit_done(ctx, u): a unit of the full load finished (the unit table
  of core.load: id, schema, table, copied_rows, copied_bytes, seconds). ]]
function M.unit_done(ctx, u)
  if not (ctx and ctx.state_dir) then return end
  append(ctx.state_dir .. "/" .. M.EVENTS, { t = sys.time(), kind = "unit", unit = u.id, pid = sys.getpid(),
    table = u.schema .. "." .. u.table, rows = u.copied_rows, bytes = u.copied_bytes, seconds = u.seconds })
end

--[[ dms(ctx, snap): one monitoring snapshot of a DMS task
  (pgtide.dms.monitor.snapshot): the task status (an event when it
  changes), CloudWatch latency and table statistics (a sample). ]]
function M.dms(ctx, snap)
  if not (ctx and ctx.state_dir) or type(snap) ~= "table" then return end
  local d = dir_state(ctx.state_dir)
  local task = snap.task or {}
  local status = task.Status or task.status
  if status and status ~= d.dms_status then
    d.dms_status = status
    append(ctx.state_dir .. "/" .. M.EVENTS, { t = sys.time(), kind = "dms_status", status = status,
      percent = (task.ReplicationTaskStats or {}).FullLoadProgressPercent })
  end
  local lat = snap.latency or {}
  append(ctx.state_dir .. "/" .. M.SAMPLES, { t = sys.time(), pid = sys.getpid(), phase = d.phase,
    dms_latency_source = lat.source, dms_latency_target = lat.target, dms_rows = snap.rows,
    dms_rate = snap.rate })
  local tables = {}
  for _, t in ipairs(snap.tables or {}) do
    tables[#tables + 1] = { name = tostring(t.SchemaName) .. "." .. tostring(t.TableName), state = t.TableState,
      full_load_rows = t.FullLoadRows, inserts = t.Inserts, updates = t.Updates, deletes = t.Deletes,
      ddls = t.Ddls, validation = t.ValidationState }
  end
  if #tables > 0 then
    sys.write_atomic(ctx.state_dir .. "/dms-tables.json", sys.redact(json.encode(tables)) .. "\n")
  end
end

-- {==================================================================
-- The run: metrics server and step events
-- ===================================================================

local current   -- { ctx, st, server, failures } of the run in this process

--[[
start(ctx, st, opts): the engine calls this as a run starts (state
open and locked).  With opts.metrics ("ADDR:PORT") the endpoint is
started; a bad address raises a usage error before any step runs.
]]
function M.start(ctx, st, opts)
  current = { ctx = ctx, st = st, failures = 0 }
  if opts and opts.metrics then
    local metrics = require "metrics"
    local ok, srv = pcall(metrics.serve, opts.metrics)
    if not ok then
      require("pgtide.errors").usage("--metrics %s: %s", opts.metrics, tostring(srv):gsub("^.-:%d+: ", ""))
    end
    current.server = srv
    log.info("metrics: serving OpenMetrics/Prometheus text on http://%s/metrics", srv:address())
    M.refresh()
    return srv:address()
  end
end

function M.stop()
  if current and current.server then
    M.refresh()
    current.server:close()
  end
  current = nil
end

-- The address the metrics are served on, or nil.
function M.address()
  return current and current.server and current.server:address() or nil
end

--[[ step_event(ctx, step, event, extra): "start", "done", "failed",
  "interrupted", "skipped", "waiting" (for a confirmation). ]]
function M.step_event(ctx, step, event, extra)
  if not (ctx and ctx.state_dir) then return end
  local e = { t = sys.time(), kind = "step", step = step.name, event = event, pid = sys.getpid() }
  for k, v in pairs(extra or {}) do e[k] = v end
  append(ctx.state_dir .. "/" .. M.EVENTS, e)
  if event == "failed" and current then current.failures = current.failures + 1 end
  M.refresh()
end

-- }==================================================================

-- {==================================================================
-- The exposition
-- ===================================================================

local function esc(v)
  return (tostring(v):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end

local function num(v)
  if v == nil then return nil end
  v = tonumber(v)
  if not v then return nil end
  if v ~= v then return "NaN" end
  if math.type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%d", v) end
  return string.format("%.6g", v)
end

--[[
metrics_text(data, live, extra) -> the exposition (Prometheus text format
0.0.4).  data: the state (state.json's table); live: the merged status
published by the run (phase, full_load, cdc, cutover); extra: { errors,
warnings, step_failures, apply_per_s }.
]]
function M.metrics_text(data, live, extra)
  live, extra = live or {}, extra or {}
  local out, families = {}, {}
  local function family(name, kind, help)
    if families[name] then return end
    families[name] = true
    out[#out + 1] = "# HELP " .. name .. " " .. help
    out[#out + 1] = "# TYPE " .. name .. " " .. kind
  end
  local function sample(name, labels, value)
    local v = num(value)
    if not v then return end
    local l = {}
    for _, kv in ipairs(labels or {}) do l[#l + 1] = kv[1] .. '="' .. esc(kv[2]) .. '"' end
    out[#out + 1] = name .. (#l > 0 and ("{" .. table.concat(l, ",") .. "}") or "") .. " " .. v
  end
  family("pgtide_info", "gauge", "The migration this pgtide process runs (always 1).")
  sample("pgtide_info", { { "migration", data.name or "?" }, { "runbook", data.runbook or "?" },
                          { "version", sys.version() } }, 1)
  family("pgtide_last_update_timestamp_seconds", "gauge", "When this document was last rebuilt (Unix time).")
  sample("pgtide_last_update_timestamp_seconds", nil, sys.time())
  -- steps
  family("pgtide_step_status", "gauge", "Each step of the runbook, labelled with its status (always 1).")
  local steps = data.steps or {}
  local current_step
  for i, name in ipairs(data.order or {}) do
    local s = steps[name] or {}
    sample("pgtide_step_status", { { "step", name }, { "index", i }, { "status", s.status or "pending" } }, 1)
    if not current_step and s.status ~= "done" then current_step = name end
  end
  family("pgtide_step_seconds", "gauge", "How long each finished step took.")
  for _, name in ipairs(data.order or {}) do
    local s = steps[name] or {}
    if s.seconds then sample("pgtide_step_seconds", { { "step", name } }, s.seconds) end
  end
  family("pgtide_current_step", "gauge", "The first step not done (always 1).")
  sample("pgtide_current_step", { { "step", current_step or "(finished)" } }, 1)
  family("pgtide_phase", "gauge", "The phase the run published last (always 1).")
  sample("pgtide_phase", { { "phase", live.phase or current_step or "starting" } }, 1)
  -- full load
  local fl = live.full_load
  local flout = ((steps["full-load"] or {}).outputs or {})
  local tables = {}
  if fl and fl.tables then
    for _, t in ipairs(fl.tables) do tables[#tables + 1] = t end
  elseif flout.summary and flout.summary.tables then
    for _, t in ipairs(flout.summary.tables) do tables[#tables + 1] = t end
  end
  local s = flout.complete and flout.summary or fl
  if s then
    family("pgtide_full_load_percent", "gauge", "Progress of the full load (0 to 100).")
    sample("pgtide_full_load_percent", nil, flout.complete and 100 or s.percent)
    family("pgtide_full_load_rows", "gauge", "Rows copied by the full load (in this run).")
    sample("pgtide_full_load_rows", nil, s.rows)
    family("pgtide_full_load_bytes", "gauge", "Bytes copied by the full load (in this run).")
    sample("pgtide_full_load_bytes", nil, s.bytes)
    family("pgtide_full_load_throughput_bytes_per_second", "gauge", "Average copy throughput of the full load.")
    sample("pgtide_full_load_throughput_bytes_per_second", nil, s.mb_per_s and s.mb_per_s * MB)
  end
  if #tables > 0 then
    family("pgtide_table_rows_copied", "gauge", "Rows copied per table by the full load.")
    for _, t in ipairs(tables) do sample("pgtide_table_rows_copied", { { "table", t.name } }, t.rows) end
    family("pgtide_table_bytes_copied", "gauge", "Bytes copied per table by the full load.")
    for _, t in ipairs(tables) do sample("pgtide_table_bytes_copied", { { "table", t.name } }, t.bytes) end
  end
  -- change stream
  local c = live.cdc
  if c then
    family("pgtide_cdc_state", "gauge", "The state of the change stream (always 1).")
    sample("pgtide_cdc_state", { { "state", c.state or "?" } }, 1)
    family("pgtide_cdc_lag_bytes", "gauge", "Source WAL written since the position the target applied.")
    sample("pgtide_cdc_lag_bytes", nil, c.lag_bytes)
    family("pgtide_cdc_lag_seconds", "gauge", "Age of the oldest change not yet applied on the target.")
    sample("pgtide_cdc_lag_seconds", nil, c.lag_seconds)
    family("pgtide_cdc_apply_rate", "gauge", "Changes applied per second (rows inserted, updated, deleted).")
    sample("pgtide_cdc_apply_rate", nil, extra.apply_per_s or 0)
    family("pgtide_cdc_changes_total", "counter", "Changes applied by this process, by kind.")
    for _, k in ipairs { "insert", "update", "delete", "truncate" } do
      sample("pgtide_cdc_changes_total", { { "kind", k } }, c[k .. "s"])
    end
    family("pgtide_cdc_transactions_total", "counter", "Source transactions applied by this process.")
    sample("pgtide_cdc_transactions_total", nil, c.txns)
    family("pgtide_cdc_reconnects_total", "counter", "Reconnections of the change stream in this process.")
    sample("pgtide_cdc_reconnects_total", nil, c.reconnects)
    if c.retained_bytes and c.retained_bytes >= 0 then
      family("pgtide_slot_retained_wal_bytes", "gauge", "WAL the replication slot keeps on the source.")
      sample("pgtide_slot_retained_wal_bytes", nil, c.retained_bytes)
      family("pgtide_slot_wal_warning", "gauge", "1 when the slot keeps more WAL than wal_warn_mb.")
      sample("pgtide_slot_wal_warning", nil, c.wal_warning and 1 or 0)
    end
  end
  -- errors
  family("pgtide_errors_total", "counter", "Messages logged at ERROR by this process.")
  sample("pgtide_errors_total", nil, extra.errors or 0)
  family("pgtide_warnings_total", "counter", "Messages logged at WARN by this process.")
  sample("pgtide_warnings_total", nil, extra.warnings or 0)
  family("pgtide_step_failures_total", "counter", "Steps that failed in this process.")
  sample("pgtide_step_failures_total", nil, extra.step_failures or 0)
  -- cutover
  local co = live.cutover or {}
  local cut = steps.cutover
  if cut or live.cutover then
    family("pgtide_cutover_requested", "gauge", "1 once a cutover was requested.")
    sample("pgtide_cutover_requested", nil, (co.requested or (steps.stream or {}).status == "done") and 1 or 0)
    local phase = live.phase and live.phase:match("^cutover") and live.phase
      or (cut and cut.status == "done" and "cutover done") or (cut and cut.status) or "not started"
    family("pgtide_cutover_phase", "gauge", "The last cutover phase reached (always 1).")
    sample("pgtide_cutover_phase", { { "phase", phase } }, 1)
  end
  return table.concat(out, "\n") .. "\n"
end

-- Rebuild the metrics document of the running server (cheap; no I/O).
function M.refresh()
  if not (current and current.server) then return end
  local ok, text = pcall(function()
    local d = dir_state(current.ctx.state_dir)
    local counts = log.counts()
    return M.metrics_text(current.st.data, d.live, { errors = counts.error, warnings = counts.warn,
      step_failures = current.failures, apply_per_s = d.last and d.last.apply_per_s })
  end)
  if ok then
    current.server:set(text)
  else
    log.debug("metrics: %s", tostring(text))
  end
end

-- }==================================================================

return M
