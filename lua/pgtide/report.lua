--[[
pgtide.report: the migration report, report.json and report.html in the
state directory.  The engine rewrites both at the end of every step and
of the run; `pgtide report` rebuilds them at any time.

  local report = require "pgtide.report"
  local data = report.build(dir)       -- everything the report shows, as plain data
  local html = report.html(data)       -- one self-contained page
  report.write(dir)                    --> json_path, html_path (atomic writes)

Sources, all in the state directory: state.json (steps, outputs, params),
samples.jsonl and events.jsonl (pgtide.monitor: figures over time, step
attempts, finished units, phases), validation-<step>.json (the steps'
validations), status.json (a live run), schema/parts.json (foreign keys),
dms-tables.json (DMS table statistics).

The page draws its charts itself as inline SVG: no script, no network
(a Content-Security-Policy forbids every fetch), so it opens the same
from a laptop, a bastion host or an e-mail attachment.  Every text goes
through the secret redactor; connection strings appear without password.
]]
local json = require "json"
local sys = require "sys"
local util = require "pgtide.util"
local monitor = require "pgtide.monitor"

local M = {}

M.JSON, M.HTML = "report.json", "report.html"

local MB = 1024 * 1024

local read_json = require("pgtide.status_file").read_json   -- a JSON object, or nil

-- "2024-05-01T10:00:00Z" -> Unix time (UTC), or nil.
local function iso_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  local t = os.time { year = y, month = mo, day = d, hour = h, min = mi, sec = se, isdst = false }
  -- os.time reads the fields as local time: correct by the offset at that instant
  local utc = os.time(os.date("!*t", t))
  return t + (t - utc)
end
M.iso_time = iso_time

local function safe_conninfo(v)
  if type(v) ~= "string" then return v end
  local ok, pg = pcall(require, "pg")
  if ok then
    local ok2, s = pcall(pg.safe_conninfo, v)
    if ok2 then return s end
  end
  return sys.redact(v)
end

-- {==================================================================
-- Gathering
-- ===================================================================

-- Is 'pid' another process that is alive?
local function monitor_alive(pid)
  return type(pid) == "number" and sys.kill(math.tointeger(pid) or 0, "ZERO") == true
    and pid ~= sys.getpid()
end

--[[ The attempts of each step, as intervals: from the engine's step
  events, else (a state written before them) from the state's times. ]]
local function attempts(order, steps, events, now)
  local out, open = {}, {}
  local last_t = {}
  for _, e in ipairs(events) do
    if e.kind == "step" then
      if e.event == "start" then
        local prev = open[e.step]
        if prev then
          -- started again without an end: the process before died without a word (kill -9)
          prev.finish, prev.result = math.max(last_t[prev.pid] or prev.start, prev.start), "killed"
          out[#out + 1] = prev
        end
        open[e.step] = { step = e.step, start = e.t, pid = e.pid, attempt = e.attempt }
      elseif open[e.step] and (e.event == "done" or e.event == "failed" or e.event == "interrupted") then
        local a = open[e.step]
        a.finish, a.result, a.error = e.t, e.event, e.error
        out[#out + 1] = a
        open[e.step] = nil
      elseif e.event == "skipped" then
        out[#out + 1] = { step = e.step, start = e.t, finish = e.t, result = "skipped" }
      end
    end
    if e.pid then last_t[e.pid] = e.t end
  end
  for name, a in pairs(open) do
    local s = steps[name] or {}
    if s.status == "running" and a.pid and monitor_alive(a.pid) then
      a.finish, a.result = now, "running"
    else
      -- the process died without a word (kill -9, power cut): it ended after its last event
      a.finish, a.result = math.max(last_t[a.pid] or a.start, a.start), "killed"
    end
    out[#out + 1] = a
  end
  if #out == 0 then
    for _, name in ipairs(order) do
      local s = steps[name] or {}
      local t0, t1 = iso_time(s.started), iso_time(s.finished)
      if t0 then
        out[#out + 1] = { step = name, start = t0, finish = t1 or (s.seconds and t0 + s.seconds) or now,
                          result = s.status == "done" and "done" or s.status }
      end
    end
  end
  table.sort(out, function(a, b) return a.start < b.start end)
  return out
end

-- Per table: planned size, rows and bytes copied, copy time, index time, validation.
local function tables_of(fl, events, validation)
  local by, order = {}, {}
  local function get(name)
    local t = by[name]
    if not t then
      t = { name = name, est_bytes = 0, units = 0 }
      by[name] = t
      order[#order + 1] = t
    end
    return t
  end
  for _, u in ipairs(fl.units or {}) do
    local t = get(u.schema .. "." .. u.table)
    t.units = t.units + 1
    t.est_bytes = t.est_bytes + (u.bytes or 0)
  end
  -- finished units, the last copy of each (a unit redone after a crash counts once)
  local units = {}
  for _, e in ipairs(events) do
    if e.kind == "unit" and e.unit then units[e.unit] = e end
  end
  local spans = {}
  for _, e in pairs(units) do
    local t = get(e.table)
    t.rows = (t.rows or 0) + (e.rows or 0)
    t.bytes = (t.bytes or 0) + (e.bytes or 0)
    local sp = spans[e.table] or {}
    spans[e.table] = sp
    local start = e.t - (e.seconds or 0)
    sp.first = math.min(sp.first or start, start)
    sp.last = math.max(sp.last or e.t, e.t)
  end
  for name, sp in pairs(spans) do
    local t = by[name]
    t.copy_seconds = sp.last - sp.first
    if t.copy_seconds > 0 and t.bytes then t.mb_per_s = t.bytes / MB / t.copy_seconds end
  end
  for _, s in ipairs((fl.summary or {}).tables or {}) do
    local t = get(s.name)
    t.rows = t.rows or s.rows
    t.bytes = t.bytes or s.bytes
    t.index_seconds = s.index_seconds
  end
  -- the last validation of the run names each table's result
  for _, v in ipairs(validation or {}) do
    for _, vt in ipairs(((v.report or {}).data or {}).tables or {}) do
      local key = (vt.schema and (vt.schema .. ".") or "") .. tostring(vt.name)
      local t = by[key] or by[tostring(vt.name)]
      if t then
        t.validation = vt.status
        t.differences = (vt.missing or 0) + (vt.extra or 0) + (vt.changed or 0)
        t.validated_by = v.step
      end
    end
  end
  table.sort(order, function(a, b)
    local x, y = a.bytes or a.est_bytes or 0, b.bytes or b.est_bytes or 0
    if x ~= y then return x > y end
    return a.name < b.name
  end)
  return order
end

-- The validations of the run's steps (validation-<step>.json), in step order.
local function validations(dir, order)
  local out = {}
  for _, name in ipairs(order) do
    local r = read_json(dir .. "/validation-" .. name .. ".json")
    if r then out[#out + 1] = { step = name, report = r } end
  end
  if #out == 0 then
    local r = read_json(dir .. "/validation.json")
    if r then out[1] = { step = "validation", report = r } end
  end
  return out
end

-- Schema differences and differing rows of a validation, as display lines.
local function validation_summary(v)
  local r = v.report
  local s = { step = v.step, result = r.result, mode = r.mode, seconds = r.seconds,
              finished_at = r.finished_at, schema_error = r.schema_error, data_error = r.data_error,
              schema_differences = {}, tables = {} }
  if r.schema then
    local ok, diff = pcall(require, "pgtide.schema_diff")
    for _, d in ipairs(r.schema.differences or {}) do
      local text = ok and select(2, pcall(diff.format, d)) or nil
      s.schema_differences[#s.schema_differences + 1] = type(text) == "string" and text or json.encode(d)
    end
    s.schema_objects = r.schema.objects or r.schema.compared
  end
  local d = r.data or {}
  s.lsn, s.tables_equal, s.tables_different, s.tables_failed = d.lsn, d.tables_equal, d.tables_different,
    d.tables_failed
  s.missing, s.extra, s.changed = d.missing, d.extra, d.changed
  for _, t in ipairs(d.tables or {}) do
    local entry = { name = (t.schema and (t.schema .. ".") or "") .. tostring(t.name), status = t.status,
                    source_rows = t.source_rows, target_rows = t.target_rows, missing = t.missing,
                    extra = t.extra, changed = t.changed, error = t.error, rows = {} }
    for i, row in ipairs(t.rows or {}) do
      if i > 50 then break end
      local key = {}
      for _, k in ipairs(type(row.key) == "table" and row.key or { row.key }) do key[#key + 1] = tostring(k) end
      local cols = {}
      for _, c in ipairs(row.columns or {}) do
        cols[#cols + 1] = c.hidden and c.name or string.format("%s: %s -> %s", tostring(c.name),
          c.source_null and "NULL" or tostring(c.source), c.target_null and "NULL" or tostring(c.target))
      end
      entry.rows[#entry.rows + 1] = { kind = row.kind, key = table.concat(key, ", "),
                                      columns = table.concat(cols, "; ") }
    end
    s.tables[#s.tables + 1] = entry
  end
  return s
end

-- The run's phases (events) between t0 and t1, with their durations.
local function phases(events, t0, t1, prefix)
  local out = {}
  for _, e in ipairs(events) do
    if e.kind == "phase" and e.t >= t0 - 1 and e.t <= t1 + 1 and (not prefix or e.phase:find(prefix, 1, true) == 1) then
      if out[#out] then out[#out].seconds = e.t - out[#out].t end
      out[#out + 1] = { phase = e.phase, t = e.t }
    end
  end
  if out[#out] then out[#out].seconds = math.max(0, t1 - out[#out].t) end
  return out
end

--[[
build(dir) -> the report's data (report.json).  Raises a message when
the directory holds no migration state.
]]
function M.build(dir)
  local st = read_json(dir .. "/state.json")
  if not st then error("no migration state in " .. dir, 0) end
  local now = sys.time()
  local steps = st.steps or {}
  local order = st.order or util.sorted_keys(steps)
  local titles = st.titles or {}
  if not st.titles and st.runbook then
    local ok, rb = pcall(function() return require("pgtide.runbooks").load(st.runbook) end)
    if ok and rb then for _, s in ipairs(rb.steps) do titles[s.name] = s.title end end
  end
  local events = monitor.events(dir)
  local samples = monitor.samples(dir)
  local live = read_json(dir .. "/status.json") or {}
  local data = { version = 1, generated_at = util.now_iso(now), pgtide_version = sys.version() }
  -- the migration
  local running = live.pid and monitor_alive(live.pid)
  local status = "stopped"
  local failed
  for _, name in ipairs(order) do
    local s = steps[name] or {}
    if s.status == "failed" then failed = failed or name end
  end
  if st.abandoned then status = "abandoned"
  elseif st.finished then status = "done"
  elseif running then status = "running"
  elseif failed then status = "failed"
  else
    for _, name in ipairs(order) do
      if (steps[name] or {}).status == "interrupted" then status = "interrupted" end
    end
  end
  local params = {}
  for k, v in pairs(st.params or {}) do
    if type(v) == "table" then v = table.concat(v, ",") end
    params[#params + 1] = { name = k, value = (k == "source" or k == "target") and safe_conninfo(v) or v }
  end
  table.sort(params, function(a, b) return a.name < b.name end)
  data.migration = { name = st.name, runbook = st.runbook, title = st.title, state_dir = dir, status = status,
                     created = st.created, finished = st.finished, abandoned = st.abandoned,
                     failed_step = failed, running_pid = running and live.pid or nil, params = params,
                     metrics = running and live.metrics or nil }
  -- the steps and their attempts
  data.steps = {}
  for i, name in ipairs(order) do
    local s = steps[name] or {}
    data.steps[i] = { name = name, title = titles[name] or name, status = s.status or "pending",
                      started = s.started, finished = s.finished, seconds = s.seconds,
                      attempts = s.attempts, error = s.error, skipped = s.skipped }
  end
  data.attempts = attempts(order, steps, events, now)
  local first = data.attempts[1] and data.attempts[1].start or iso_time(st.created)
  local last = first
  for _, a in ipairs(data.attempts) do last = math.max(last or a.finish, a.finish or a.start) end
  data.migration.started_unix, data.migration.ended_unix = first, last
  -- figures over time
  data.series = { copy_mb_s = {}, apply_per_s = {}, lag_bytes = {}, lag_seconds = {}, wal_bytes = {},
                  dms_latency_source = {}, dms_latency_target = {} }
  for _, s in ipairs(samples) do
    for k, list in pairs(data.series) do
      if type(s[k]) == "number" then list[#list + 1] = { s.t, s[k] } end
    end
  end
  -- tables
  local fl = (steps["full-load"] or {}).outputs or {}
  local vals = validations(dir, order)
  data.tables = tables_of(fl, events, vals)
  if fl.summary then
    data.full_load = { rows = fl.summary.rows, bytes = fl.summary.bytes, seconds = fl.summary.seconds,
                       copy_seconds = fl.summary.copy_seconds, mb_per_s = fl.summary.mb_per_s,
                       units = fl.summary.units }
  end
  -- preflight
  local pf = ((steps.preflight or {}).outputs or {}).preflight
  if pf then data.preflight = { counts = pf.counts, results = pf.results } end
  -- validation
  data.validations = {}
  for _, v in ipairs(vals) do data.validations[#data.validations + 1] = validation_summary(v) end
  -- sequences and foreign keys
  local seq = (steps.sequences or {}).outputs
  local cut = (steps.cutover or {}).outputs or {}
  if seq and seq.synced then
    data.sequences = { synced = seq.synced, unchanged = seq.unchanged, missing = seq.missing,
                       at_cutover = cut.sequences }
  end
  local schema_out = (steps.schema or {}).outputs or {}
  local parts = schema_out.parts_file and read_json(schema_out.parts_file)
  local fks = {}
  for _, fk in ipairs(parts and parts.foreign_keys or {}) do fks[#fks + 1] = fk.name end
  local post = (steps["post-data"] or {}).outputs or {}
  if #fks > 0 or post.foreign_keys or cut.foreign_keys_applied then
    data.foreign_keys = { names = fks, validated = post.foreign_keys or cut.foreign_keys_applied,
                          when = post.foreign_keys and "post-data" or cut.foreign_keys_applied and "cutover"
                            or (post.foreign_keys_deferred and "deferred to the cutover") or nil }
  end
  -- cutover
  local so = (steps.stream or {}).outputs or {}
  if steps.cutover and (steps.cutover.status ~= "pending" or so.cutover_request) then
    local req = so.cutover_request or {}
    local t_req = iso_time(req.requested_at)
    local t_acc = iso_time(req.accepted_at)
    local t_start = iso_time(steps.cutover.started)
    local t_end = iso_time(cut.finished_at) or iso_time(steps.cutover.finished)
    local fence_t = cut.fence and (cut.fence.at_unix or iso_time(cut.fence.at))
    data.cutover = { requested_at = req.requested_at, by = req.by, lsn = cut.cutover_lsn,
                     applied_lsn = cut.applied_lsn, status = steps.cutover.status,
                     fenced = cut.fence ~= nil, fence_database = cut.fence and cut.fence.database,
                     sessions_ended = cut.fence and cut.fence.terminated,
                     request_to_done = t_req and t_end and (t_end - t_req) or nil,
                     step_seconds = steps.cutover.seconds,
                     fence_to_switch = fence_t and t_end and (t_end - fence_t) or nil,
                     accepted_after = t_req and t_acc and (t_acc - t_req) or nil,
                     validation = (cut.validation or {}).result, stream = cut.stream,
                     phases = t_start and phases(events, t_start, t_end or now, "cutover") or {} }
  end
  -- DMS: task status history and table statistics (pgtide.monitor.dms)
  local hist = {}
  for _, e in ipairs(events) do
    if e.kind == "dms_status" then hist[#hist + 1] = { t = e.t, status = e.status, percent = e.percent } end
  end
  local dms_tables = read_json(dir .. "/dms-tables.json")
  if #hist > 0 or dms_tables or #data.series.dms_latency_source > 0 then
    data.dms = { history = hist, tables = dms_tables or {} }
  end
  return data
end

-- }==================================================================

-- {==================================================================
-- The page
-- ===================================================================

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                          ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function clock(t) return t and os.date("!%H:%M:%S", math.floor(t)) or "" end
local function stamp(t) return t and os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(t)) or "" end

local function count(n)
  if n == nil then return "" end
  local s = tostring(math.floor(tonumber(n) or 0))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^(-?),", "%1"))
end

local function dur(s) return s and util.format_duration(s) or "" end
local function bytes(n) return n and util.format_bytes(n) or "" end

-- A value with the unit of a series, for axes and labels.
local formats = {
  bytes = function(v) return util.format_bytes(v) end,
  seconds = function(v)
    if v == 0 then return "0 s" end
    if v < 1 then return string.format("%.0f ms", v * 1000) end
    return v < 10 and string.format("%.1f s", v) or util.format_duration(v)
  end,
  rate = function(v) return v >= 1000 and string.format("%.1fk/s", v / 1000) or string.format("%.0f/s", v) end,
  mbs = function(v) return string.format("%.1f MB/s", v) end,
}

-- A round step for about 'n' ticks over 'range' (1, 2 or 5 times a power of ten;
-- powers of two for bytes).
local function nice_step(range, n, unit)
  if range <= 0 then return 1 end
  local raw = range / n
  if unit == "bytes" then
    local p = 1
    while p * 2 <= raw do p = p * 2 end
    return p * 2 <= raw * 1.5 and p * 2 or p
  end
  local mag = 10 ^ math.floor(math.log(raw, 10))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if raw <= m * mag then return m * mag end
  end
  return 10 * mag
end

local COLORS = { "#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed" }

--[[
An SVG line chart.  c: { id, title, unit (key of formats), series =
{ { name, points = { {t, v}, ... } } }, t0, t1 (time range), bands =
{ {t0, t1, label} } (steps shaded behind) }.  Each series is one
<polyline data-series=NAME data-points=N> per run of samples (a gap of
more than GAP seconds starts a new one); every sample is one point.
]]
local GAP = 60
local function line_chart(c)
  local W, H, L, R, T, B = 560, 220, 70, 14, 40, 34
  local pw, ph = W - L - R, H - T - B
  local t0, t1 = c.t0, c.t1
  local vmax = 0
  local npoints = 0
  for _, s in ipairs(c.series) do
    for _, p in ipairs(s.points) do
      vmax = math.max(vmax, p[2])
      t0 = math.min(t0 or p[1], p[1])
      t1 = math.max(t1 or p[1], p[1])
      npoints = npoints + 1
    end
  end
  t0, t1 = t0 or 0, t1 or 1
  if t1 - t0 < 1 then t1 = t0 + 1 end
  local step = nice_step(vmax > 0 and vmax or 1, 4, c.unit)
  local top = math.max(step, math.ceil(vmax / step) * step)
  local function x(t) return L + (t - t0) / (t1 - t0) * pw end
  local function y(v) return T + ph - v / top * ph end
  local o = {}
  o[#o + 1] = string.format('<figure class="chart" id="%s"><svg viewBox="0 0 %d %d" width="%d" height="%d" '
    .. 'role="img" aria-label="%s" data-chart="%s" data-points="%d">', c.id, W, H, W, H, esc(c.title), c.id, npoints)
  o[#o + 1] = string.format('<text x="%d" y="18" class="ct">%s</text>', L, esc(c.title))
  for _, b in ipairs(c.bands or {}) do
    local a, e = math.max(t0, b[1]), math.min(t1, b[2])
    if e > a then
      o[#o + 1] = string.format('<rect x="%.1f" y="%d" width="%.1f" height="%d" class="band"><title>%s</title></rect>',
        x(a), T, math.max(0.5, x(e) - x(a)), ph, esc(b[3]))
      if x(e) - x(a) > 40 then
        o[#o + 1] = string.format('<text x="%.1f" y="%d" class="bl">%s</text>', x(a) + 3, T + 11, esc(b[3]))
      end
    end
  end
  local fmt = formats[c.unit] or tostring
  local v = 0
  while v <= top + step / 2 do
    o[#o + 1] = string.format('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/>'
      .. '<text x="%d" y="%.1f" class="yl">%s</text>', L, W - R, y(v), y(v), L - 6, y(v) + 4, esc(fmt(v)))
    v = v + step
  end
  local tstep = nice_step(t1 - t0, 5)
  for _, s in ipairs { 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400 } do
    if (t1 - t0) / s <= 6 then tstep = s; break end
  end
  local tt = math.ceil(t0 / tstep) * tstep
  while tt <= t1 do
    o[#o + 1] = string.format('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" class="tick"/><text x="%.1f" y="%d" '
      .. 'class="xl">%s</text>', x(tt), x(tt), T + ph, T + ph + 4, x(tt), H - 14, clock(tt))
    tt = tt + tstep
  end
  o[#o + 1] = string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" class="axis"/>', L, W - R, T + ph, T + ph)
  for i, s in ipairs(c.series) do
    local color = s.color or COLORS[i]
    local runs, cur, prev = {}, nil, nil
    for _, p in ipairs(s.points) do
      if not cur or (prev and p[1] - prev > GAP) then
        cur = {}
        runs[#runs + 1] = cur
      end
      cur[#cur + 1] = string.format("%.1f,%.1f", x(p[1]), y(p[2]))
      prev = p[1]
    end
    for _, r in ipairs(runs) do
      o[#o + 1] = string.format('<polyline data-series="%s" data-points="%d" points="%s" fill="none" stroke="%s" '
        .. 'stroke-width="1.8" stroke-linejoin="round"/>', esc(s.name), #r, table.concat(r, " "), color)
      if #r == 1 then
        local px, py = r[1]:match("([^,]+),(.+)")
        o[#o + 1] = string.format('<circle cx="%s" cy="%s" r="2.5" fill="%s"/>', px, py, color)
      end
    end
    if #c.series > 1 then
      o[#o + 1] = string.format('<rect x="%d" y="26" width="10" height="3" fill="%s"/><text x="%d" y="31" class="lg">%s</text>',
        L + (i - 1) * 90, color, L + 14 + (i - 1) * 90, esc(s.label or s.name))
    end
  end
  if npoints == 0 then
    o[#o + 1] = string.format('<text x="%d" y="%d" class="empty">no samples</text>', L + pw / 2 - 30, T + ph / 2)
  else
    local last = c.series[1].points[#c.series[1].points]
    if last then
      o[#o + 1] = string.format('<text x="%d" y="18" class="cv">last %s · peak %s</text>', W - R,
        esc(fmt(last[2])), esc(fmt(vmax)))
    end
  end
  o[#o + 1] = "</svg></figure>"
  return table.concat(o)
end

-- The steps as a Gantt chart: one row per step, one bar per attempt.
local function timeline(data)
  local rows = data.steps
  local t0, t1 = data.migration.started_unix, data.migration.ended_unix
  if not t0 or #data.attempts == 0 then return '<p class="muted">No step has run yet.</p>' end
  if t1 - t0 < 1 then t1 = t0 + 1 end
  local W, L, R, RH = 1160, 330, 20, 22
  local H = 30 + #rows * RH + 24
  local pw = W - L - R
  local function x(t) return L + (t - t0) / (t1 - t0) * pw end
  local o = { string.format('<svg viewBox="0 0 %d %d" width="%d" height="%d" class="gantt" id="timeline" '
    .. 'data-attempts="%d">', W, H, W, H, #data.attempts) }
  local index = {}
  for i, s in ipairs(rows) do
    index[s.name] = i
    local yy = 30 + (i - 1) * RH
    if i % 2 == 0 then
      o[#o + 1] = string.format('<rect x="0" y="%d" width="%d" height="%d" class="stripe"/>', yy - 4, W, RH)
    end
    o[#o + 1] = string.format('<text x="8" y="%d" class="sl"><tspan class="sn">%s</tspan> %s</text>', yy + 11,
      esc(s.name), esc(#s.title > 42 and (s.title:sub(1, 41) .. "…") or s.title))
  end
  local tstep = 60
  for _, s in ipairs { 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400 } do
    if (t1 - t0) / s <= 10 then tstep = s; break end
  end
  local tt = math.ceil(t0 / tstep) * tstep
  while tt <= t1 do
    o[#o + 1] = string.format('<line x1="%.1f" x2="%.1f" y1="24" y2="%d" class="grid"/><text x="%.1f" y="%d" '
      .. 'class="xl">%s</text>', x(tt), x(tt), H - 20, x(tt), H - 6, clock(tt))
    tt = tt + tstep
  end
  for _, a in ipairs(data.attempts) do
    local i = index[a.step]
    if i then
      local yy = 30 + (i - 1) * RH
      local w = math.max(2, x(a.finish or a.start) - x(a.start))
      o[#o + 1] = string.format('<rect x="%.1f" y="%d" width="%.1f" height="14" rx="2" class="bar %s" '
        .. 'data-step="%s"><title>%s: %s, %s (%s - %s)%s</title></rect>', x(a.start), yy, w, esc(a.result or "?"),
        esc(a.step), esc(a.step), esc(a.result or "?"), dur((a.finish or a.start) - a.start), clock(a.start),
        clock(a.finish), a.error and (": " .. esc(a.error)) or "")
    end
  end
  o[#o + 1] = "</svg>"
  return table.concat(o)
end

local function badge(status)
  return string.format('<span class="badge %s">%s</span>', esc((tostring(status):gsub("[^%w]", ""))), esc(status))
end

local function table_html(headers, rows, cls)
  local o = { '<table' .. (cls and (' class="' .. cls .. '"') or "") .. '><thead><tr>' }
  for _, h in ipairs(headers) do
    o[#o + 1] = '<th' .. (h:sub(1, 1) == "#" and ' class="n"' or "") .. '>' .. esc((h:gsub("^#", ""))) .. '</th>'
  end
  o[#o + 1] = '</tr></thead><tbody>'
  for _, r in ipairs(rows) do
    o[#o + 1] = "<tr>"
    for i, cell in ipairs(r) do
      local num = headers[i]:sub(1, 1) == "#"
      o[#o + 1] = (num and '<td class="n">' or "<td>") .. tostring(cell) .. "</td>"
    end
    o[#o + 1] = "</tr>"
  end
  o[#o + 1] = "</tbody></table>"
  return table.concat(o)
end

local CSS = [[
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
 background:var(--bg);margin:0;padding:24px 32px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--line);
 padding-bottom:4px}h3{font-size:14px;margin:16px 0 6px}
.muted{color:var(--muted)}.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:150px}
.card .k{font-size:12px;color:var(--muted)}.card .v{font-size:19px;font-weight:600}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);margin:4px 0 8px;font-size:13px}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f1f5f9;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#e5e7eb}
.badge.done,.badge.pass,.badge.equal,.badge.ok{background:#d1fae5;color:#065f46}
.badge.failed,.badge.fail,.badge.different,.badge.error,.badge.killed{background:#fee2e2;color:#991b1b}
.badge.warn,.badge.interrupted,.badge.waiting,.badge.abandoned{background:#fef3c7;color:#92400e}
.badge.running{background:#dbeafe;color:#1e40af}.badge.skip,.badge.skipped,.badge.pending{background:#f1f5f9;color:#475569}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(570px,1fr));gap:12px}
figure.chart{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:4px}
svg text{font-family:system-ui,"DejaVu Sans",sans-serif}
.ct{font-size:13px;font-weight:600;fill:#111827}.cv{font-size:11px;fill:#4b5563;text-anchor:end}.lg{font-size:11px;fill:#374151}
.yl{font-size:10.5px;fill:#6b7280;text-anchor:end}.xl{font-size:10.5px;fill:#6b7280;text-anchor:middle}
.grid{stroke:#eef0f3}.axis{stroke:#9ca3af}.tick{stroke:#9ca3af}.band{fill:#f4f6f9}.bl{font-size:10px;fill:#9ca3af}.empty{font-size:12px;fill:#9ca3af}
svg.gantt{background:#fff;border:1px solid var(--line);border-radius:8px;max-width:100%;height:auto}
.stripe{fill:#f8fafc}.sl{font-size:12px;fill:#374151}.sn{font-weight:600}
.bar.done{fill:#10b981}.bar.failed,.bar.killed{fill:#ef4444}.bar.interrupted{fill:#f59e0b}
.bar.running{fill:#3b82f6}.bar.skipped{fill:#cbd5e1}
.diff{font-family:"DejaVu Sans Mono",Menlo,monospace;font-size:12px;white-space:pre-wrap;margin:2px 0}
details{margin:4px 0}summary{cursor:pointer}
footer{margin-top:32px;font-size:12px;color:var(--muted)}
]]

local SERIES = {
  { id = "chart-copy", title = "Full-load copy throughput", unit = "mbs", keys = { { "copy_mb_s", "MB/s" } } },
  { id = "chart-apply", title = "CDC apply rate (changes/s)", unit = "rate", keys = { { "apply_per_s", "changes/s" } } },
  { id = "chart-lag-bytes", title = "Replication lag (bytes)", unit = "bytes", keys = { { "lag_bytes", "lag" } } },
  { id = "chart-lag-seconds", title = "Replication lag (seconds)", unit = "seconds",
    keys = { { "lag_seconds", "lag" } } },
  { id = "chart-wal", title = "WAL retained by the slot on the source", unit = "bytes",
    keys = { { "wal_bytes", "retained" } } },
}
M.SERIES = SERIES

--[[ html(data) -> the page.  Self-contained: inline CSS and SVG, no
  script, and a Content-Security-Policy that forbids every fetch. ]]
function M.html(data)
  local m = data.migration
  local o = {}
  local function w(...) for i = 1, select("#", ...) do o[#o + 1] = select(i, ...) end end
  w('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; img-src data:">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<title>pgtide report: ', esc(m.name or "?"), '</title><style>', CSS, '</style></head><body>')
  w('<h1>Migration ', esc(m.name or "?"), ' ', badge(m.status), '</h1>')
  w('<div class="muted">runbook <b>', esc(m.runbook or "?"), '</b>', m.title and (": " .. esc(m.title)) or "",
    ' · state in <span class="mono">', esc(m.state_dir), '</span> · times in UTC</div>')
  -- headline figures
  local total = m.started_unix and m.ended_unix and (m.ended_unix - m.started_unix)
  local cards = {
    { "Started", m.started_unix and stamp(m.started_unix) or "" },
    { m.status == "done" and "Took" or "Elapsed", dur(total) },
    { "Steps done", string.format("%d of %d", (function()
      local n = 0
      for _, s in ipairs(data.steps) do if s.status == "done" then n = n + 1 end end
      return n
    end)(), #data.steps) },
  }
  if data.full_load then
    cards[#cards + 1] = { "Copied", string.format("%s rows, %s", count(data.full_load.rows), bytes(data.full_load.bytes)) }
    cards[#cards + 1] = { "Copy throughput", string.format("%.1f MB/s", data.full_load.mb_per_s or 0) }
  end
  local lag = data.series.lag_seconds[#data.series.lag_seconds]
  if lag then cards[#cards + 1] = { "Last lag", string.format("%.1f s", lag[2]) } end
  if data.cutover and data.cutover.fence_to_switch then
    cards[#cards + 1] = { "Write fence to switch", dur(data.cutover.fence_to_switch) }
  elseif data.cutover and data.cutover.step_seconds then
    cards[#cards + 1] = { "Cutover took", dur(data.cutover.step_seconds) }
  end
  if m.failed_step then cards[#cards + 1] = { "Failed step", m.failed_step } end
  w('<div class="cards">')
  for _, c in ipairs(cards) do w('<div class="card"><div class="k">', esc(c[1]), '</div><div class="v">', esc(c[2]), '</div></div>') end
  w('</div>')
  if m.abandoned then
    w('<p>Abandoned at ', esc(m.abandoned.at or "?"), ': ', esc(table.concat(m.abandoned.dropped or {}, ", ")), '</p>')
  end
  if m.metrics then w('<p class="muted">Metrics: <span class="mono">', esc(m.metrics), '</span></p>') end
  -- timeline
  w('<h2>Steps</h2>', timeline(data))
  local rows = {}
  for i, s in ipairs(data.steps) do
    rows[#rows + 1] = { tostring(i), '<b>' .. esc(s.name) .. '</b>', esc(s.title), badge(s.status),
      esc(s.started and s.started:gsub("T", " "):gsub("Z", "") or ""), esc(dur(s.seconds)),
      esc(s.attempts or ""), esc(s.error or s.skipped or "") }
  end
  w(table_html({ "#", "Step", "Title", "Result", "Started", "#Duration", "#Attempts", "Note" }, rows, "steps"))
  -- over time
  w('<h2>Over time</h2><div class="charts">')
  local bands = {}
  for _, a in ipairs(data.attempts) do
    if a.step == "full-load" or a.step == "stream" or a.step == "cutover" then
      bands[#bands + 1] = { a.start, a.finish or a.start, a.step }
    end
  end
  for _, c in ipairs(SERIES) do
    local series = {}
    for _, k in ipairs(c.keys) do series[#series + 1] = { name = k[1], label = k[2], points = data.series[k[1]] } end
    w(line_chart { id = c.id, title = c.title, unit = c.unit, series = series, bands = bands,
                   t0 = m.started_unix, t1 = m.ended_unix })
  end
  if data.dms then
    w(line_chart { id = "chart-dms-latency", title = "DMS CDC latency (CloudWatch)", unit = "seconds", bands = bands,
      series = { { name = "dms_latency_source", label = "source", points = data.series.dms_latency_source },
                 { name = "dms_latency_target", label = "target", points = data.series.dms_latency_target } } })
  end
  w('</div>')
  -- tables
  if #data.tables > 0 then
    w('<h2>Tables</h2>')
    local trs = {}
    for _, t in ipairs(data.tables) do
      trs[#trs + 1] = { esc(t.name), count(t.rows), bytes(t.bytes), esc(dur(t.copy_seconds)),
        t.mb_per_s and string.format("%.1f MB/s", t.mb_per_s) or "", esc(dur(t.index_seconds)),
        t.validation and (badge(t.validation) .. (t.differences and t.differences > 0 and
          (" " .. count(t.differences) .. " rows") or "")) or '<span class="muted">not validated</span>' }
    end
    w(table_html({ "Table", "#Rows", "#Bytes", "#Copy time", "#Throughput", "#Index build", "Validation" }, trs, "tables"))
  end
  -- preflight
  if data.preflight then
    local c = data.preflight.counts or {}
    w('<h2>Preflight</h2><p>', count(c.pass or 0), ' passed, ', count(c.warn or 0), ' warnings, ',
      count(c.fail or 0), ' failed', (c.skip or 0) > 0 and (", " .. count(c.skip) .. " skipped") or "", '</p>')
    local prs = {}
    for _, r in ipairs(data.preflight.results or {}) do
      prs[#prs + 1] = { badge(r.status), esc(r.title or r.id or ""), esc(r.message or "") }
    end
    w(table_html({ "Result", "Check", "Finding" }, prs, "preflight"))
  end
  -- validation
  if #data.validations > 0 then
    w('<h2>Validation</h2>')
    for _, v in ipairs(data.validations) do
      w('<h3>', esc(v.step), ': ', badge(v.result or "?"), ' <span class="muted">', esc(v.mode or ""),
        v.lsn and (" at source LSN " .. esc(v.lsn)) or "", v.seconds and (", " .. esc(dur(v.seconds))) or "", '</span></h3>')
      if v.schema_error then w('<p>Schema comparison failed: ', esc(v.schema_error), '</p>') end
      if v.data_error then w('<p>Data comparison failed: ', esc(v.data_error), '</p>') end
      w('<p>Schema: ', #v.schema_differences == 0 and "no difference" or (#v.schema_differences .. " difference(s)"),
        '. Data: ', count(v.tables_equal or 0), ' table(s) equal, ', count(v.tables_different or 0), ' different',
        (v.tables_failed or 0) > 0 and (", " .. count(v.tables_failed) .. " not compared") or "",
        ((v.missing or 0) + (v.extra or 0) + (v.changed or 0)) > 0 and string.format(" (%s missing, %s extra, %s changed rows)",
          count(v.missing), count(v.extra), count(v.changed)) or "", '.</p>')
      for _, d in ipairs(v.schema_differences) do w('<div class="diff">', esc(d), '</div>') end
      local vrs = {}
      for _, t in ipairs(v.tables) do
        vrs[#vrs + 1] = { esc(t.name), badge(t.status or "?"), count(t.source_rows), count(t.target_rows),
          count(t.missing), count(t.extra), count(t.changed), esc(t.error or "") }
      end
      if #vrs > 0 then
        w('<details', (v.tables_different or 0) > 0 and " open" or "", '><summary>', #vrs, ' table(s)</summary>')
        w(table_html({ "Table", "Result", "#Source rows", "#Target rows", "#Missing", "#Extra", "#Changed", "Error" }, vrs))
        w('</details>')
      end
      for _, t in ipairs(v.tables) do
        if #t.rows > 0 then
          local rr = {}
          for _, r in ipairs(t.rows) do rr[#rr + 1] = { esc(r.kind), '<span class="mono">' .. esc(r.key) .. '</span>',
            '<span class="mono">' .. esc(r.columns) .. '</span>' } end
          w('<h3>Rows that differ in ', esc(t.name), '</h3>', table_html({ "Kind", "Key", "Columns (source -> target)" }, rr))
        end
      end
    end
  end
  -- sequences, foreign keys
  if data.sequences or data.foreign_keys then
    w('<h2>Sequences and foreign keys</h2>')
    if data.sequences then
      local s = data.sequences
      w('<p>Sequences set on the target: ', count(s.synced), ' (', count(s.unchanged), ' already ahead, ',
        count(s.missing), ' missing)', s.at_cutover and string.format("; at the cutover: %s set, %s already ahead",
          count(s.at_cutover.synced), count(s.at_cutover.unchanged)) or "", '.</p>')
    end
    if data.foreign_keys then
      local f = data.foreign_keys
      w('<p>Foreign keys: ', count(#f.names), ' in the schema', f.validated and (", " .. count(f.validated)
        .. " added and validated") or "", f.when and (" (" .. esc(f.when) .. ")") or "", '.</p>')
      if #f.names > 0 then
        w('<details><summary>names</summary><div class="diff">', esc(table.concat(f.names, "\n")), '</div></details>')
      end
    end
  end
  -- cutover
  if data.cutover then
    local c = data.cutover
    w('<h2>Cutover</h2>')
    local crs = {
      { "Requested", esc((c.requested_at or ""):gsub("T", " "):gsub("Z", "")) .. (c.by and (" by " .. esc(c.by)) or "") },
      { "Status", badge(c.status) },
      { "Source position applied", '<span class="mono">' .. esc(c.lsn or "") .. '</span>' },
      { "Write fence", c.fenced and string.format("database %s made read-only, %s session(s) ended",
        esc(c.fence_database or "?"), count(c.sessions_ended)) or "none (write_fence=false)" },
      { "Write fence to switch", esc(dur(c.fence_to_switch)) },
      { "Request to switch", esc(dur(c.request_to_done)) },
      { "Final validation", c.validation and badge(c.validation) or "" },
    }
    w(table_html({ "", "" }, crs, "kv"))
    if #c.phases > 0 then
      local prs = {}
      for _, p in ipairs(c.phases) do prs[#prs + 1] = { esc(clock(p.t)), esc(p.phase), esc(dur(p.seconds)) } end
      w('<h3>Cutover phases</h3>', table_html({ "At", "Phase", "#Took" }, prs))
    end
  end
  -- DMS
  if data.dms then
    w('<h2>AWS DMS task</h2>')
    local hrs = {}
    for _, h in ipairs(data.dms.history) do
      hrs[#hrs + 1] = { esc(stamp(h.t)), badge(h.status), h.percent and (tostring(h.percent) .. " %") or "" }
    end
    if #hrs > 0 then w('<h3>Status history</h3>', table_html({ "At", "Status", "#Full load" }, hrs)) end
    local trs = {}
    for _, t in ipairs(data.dms.tables) do
      trs[#trs + 1] = { esc(t.name), esc(t.state or ""), count(t.full_load_rows), count(t.inserts), count(t.updates),
        count(t.deletes), esc(t.validation or "") }
    end
    if #trs > 0 then
      w('<h3>Table statistics</h3>', table_html({ "Table", "State", "#Full load rows", "#Inserts", "#Updates",
        "#Deletes", "Validation" }, trs))
    end
  end
  -- parameters
  w('<h2>Parameters</h2>')
  local prs = {}
  for _, p in ipairs(m.params) do prs[#prs + 1] = { esc(p.name), '<span class="mono">' .. esc(tostring(p.value)) .. '</span>' } end
  w(table_html({ "Parameter", "Value" }, prs, "params"))
  w('<footer>Generated ', esc(data.generated_at), ' by pgtide ', esc(data.pgtide_version),
    ' · report.json beside this file holds the same data.</footer></body></html>\n')
  return sys.redact(table.concat(o))
end

-- }==================================================================

--[[
write(dir) -> json_path, html_path.  Builds the report of the migration
in 'dir' and writes both files atomically.  Raises on a missing state or
a failed write.
]]
function M.write(dir)
  local data = M.build(dir)
  local copy = util.copy(data)
  -- empty lists stay lists in the JSON
  local function arrays(t)
    for k, v in pairs(t) do
      if type(v) == "table" then
        if next(v) == nil and (k == "points" or k == "results" or k == "tables" or k == "history" or k == "names"
            or k == "steps" or k == "attempts" or k == "validations" or k == "schema_differences" or k == "rows"
            or k == "phases" or k == "params" or copy.series[k] == v) then
          t[k] = json.array({})
        else
          arrays(v)
        end
      end
    end
  end
  arrays(copy)
  local jpath, hpath = dir .. "/" .. M.JSON, dir .. "/" .. M.HTML
  local ok, err = sys.write_atomic(jpath, sys.redact(json.encode(copy, { pretty = true })) .. "\n", 0644)
  if not ok then error(err, 0) end
  ok, err = sys.write_atomic(hpath, M.html(data), 0644)
  if not ok then error(err, 0) end
  return jpath, hpath
end

return M
