--[[
pgtide.status: everything `pgtide status` shows about a migration, read
from its state directory (state.json, status.json, cdc-status.json, a
pending cutover request) and, unless told not to, from the source (the
slot and the source's current position).  Needs no running process.

  local s = status.collect(dir, opts)   --> the status table (the --json form), or nil, why
]]
local core = require "core"
local cutover_request = require "pgtide.cutover_request"
local errors = require "pgtide.errors"
local names = require "pgtide.names"
local status_file = require "pgtide.status_file"
local util = require "pgtide.util"
local sys = require "sys"

local M = {}

M.STALE_AFTER = 10   -- seconds without a CDC status from a live process: its figures are stale

local MB = 1024 * 1024
local read_json = status_file.read_json
local function path(dir, file) return dir .. "/" .. file end

--[[
collect(dir, opts) -> status table (the --json form).  Reads state.json,
status.json and cdc-status.json; with opts.source (a conninfo) or the
state's own source parameter, and unless opts.no_source, also asks the
source about the slot.  Fields:
  name, runbook, state_dir, running, pid, phase, updated, age_seconds,
  apply (how changes are applied on the target: triggers and progress record),
  new_tables = [ {name, why} ] (tables created on the source the stream does not carry),
  steps = [ {name, status, seconds, error} ], current_step,
  full_load = { percent, units, units_done, rows, bytes, mb_per_s, eta,
                tables = [ {name, rows, bytes, units, units_done, percent} ] },
  cdc = { state, lag_bytes, lag_seconds, applied_lsn, source_lsn,
          retained_bytes, txns, inserts, updates, deletes, truncates,
          reconnects, updated_age_seconds, stale, error }; lag_bytes is
          the source's current position minus the applied one when the
          source could be asked,
  slot = { name, publication, exists, active, retained_bytes,
           confirmed_lsn, restart_lsn, current_lsn, wal_status, error },
  retained_wal_bytes, wal_warn_bytes, wal_warning,
  cutover = { mode, requested, pending_request, requested_at, by, status,
              lsn, validation, fenced }
]]
function M.collect(dir, opts)
  opts = opts or {}
  local st = read_json(path(dir, "state.json"))
  if not st then return nil, "no migration state in " .. dir end
  local pub = read_json(path(dir, status_file.STATUS)) or {}
  local cs = read_json(path(dir, status_file.CDC_STATUS))
  local steps = st.steps or {}
  local params = st.params or {}
  local out = { name = st.name, runbook = st.runbook, state_dir = dir, finished = st.finished }
  out.pid = pub.pid
  out.running = status_file.alive(pub.pid) and pub.pid ~= sys.getpid()
  if not out.running and cs and status_file.alive(cs.pid) and cs.pid ~= sys.getpid() then
    out.running, out.pid = true, cs.pid
  end
  out.updated = pub.updated
  if pub.updated_at then out.age_seconds = math.max(0, sys.time() - pub.updated_at) end
  -- steps in the runbook's order
  out.steps = {}
  local current
  for _, name in ipairs(st.order or util.sorted_keys(steps)) do
    local s = steps[name] or { status = "pending" }
    out.steps[#out.steps + 1] = { name = name, status = s.status or "pending", seconds = s.seconds,
                                  error = s.error }
    if not current and s.status ~= "done" then current = { name = name, status = s.status or "pending" } end
  end
  out.current_step = current and current.name or nil
  if not current then
    out.phase = "done"
  elseif out.running then
    out.phase = pub.phase or current.name
    if current.name == "stream" and out.phase ~= "cutover" then out.phase = "streaming" end
  else
    out.phase = current.status == "pending" and ("stopped before " .. current.name)
      or (current.name .. " (" .. current.status .. ")")
  end
  -- full load
  local fl = (steps["full-load"] or {}).outputs or {}
  if fl.units then
    local f = { units = #fl.units, units_done = #(fl.done or {}) }
    if fl.complete then
      local s = fl.summary or {}
      f.percent, f.rows, f.bytes, f.mb_per_s, f.units_done = 100, s.rows, s.bytes, s.mb_per_s, #fl.units
    else
      local pr = (out.running and pub.full_load) or fl.progress or {}
      f.percent, f.rows, f.bytes, f.mb_per_s, f.eta = pr.percent or 0, pr.rows, pr.bytes, pr.mb_per_s, pr.eta
      if pr.units_done then f.units_done = pr.units_done end
    end
    -- per table: the live progress when the load runs, else the plan and what is done
    local live = out.running and pub.full_load and pub.full_load.tables
    if live and not fl.complete then
      f.tables = live
    else
      local by, order, done = {}, {}, {}
      for _, id in ipairs(fl.done or {}) do done[id] = true end
      for _, u in ipairs(fl.units) do
        local k = u.schema .. "." .. u.table
        local t = by[k]
        if not t then
          t = { name = k, units = 0, units_done = 0, est_bytes = 0 }
          by[k] = t
          order[#order + 1] = t
        end
        t.units = t.units + 1
        t.est_bytes = t.est_bytes + (u.bytes or 0)
        if fl.complete or done[u.id] then t.units_done = t.units_done + 1 end
      end
      for _, t in ipairs(order) do t.percent = t.units > 0 and math.floor(100 * t.units_done / t.units) or 0 end
      -- rows and bytes copied per table, once the load finished
      for _, t in ipairs(fl.complete and fl.summary and fl.summary.tables or {}) do
        if by[t.name] then by[t.name].rows, by[t.name].bytes = t.rows, t.bytes end
      end
      f.tables = order
    end
    out.full_load = f
  end
  -- CDC: the worker's own file is the freshest
  if cs then
    out.cdc = {
      state = cs.state, lag_bytes = cs.lag_bytes, lag_seconds = cs.lag_seconds,
      applied_lsn = cs.applied_lsn, source_lsn = cs.source_lsn, received_lsn = cs.received_lsn,
      retained_bytes = (cs.retained_bytes or -1) >= 0 and cs.retained_bytes or nil,
      txns = cs.txns, inserts = cs.inserts, updates = cs.updates, deletes = cs.deletes,
      truncates = cs.truncates, reconnects = cs.reconnects,
      error = (cs.error ~= "" and cs.error) or nil,
      updated_age_seconds = cs.updated_at and math.max(0, sys.time() - cs.updated_at) or nil,
    }
    if not (out.running and status_file.alive(cs.pid)) and out.cdc.state ~= "stopped" and out.cdc.state ~= "failed" then
      out.cdc.state = "not running (last: " .. tostring(cs.state) .. ")"
    end
  end
  -- how changes are applied on the target: what the steps recorded, else preflight's plan
  local plan = ((steps.preflight or {}).outputs or {}).plan
  if plan and params.cdc ~= false then
    local p2 = util.copy(plan)
    local done = ((steps["post-data"] or {}).outputs or {}).triggers
    if done then p2.triggers = done == "disabled" and "disable" or "replica_role" end
    if fl.slot and fl.slot.progress then p2.progress = fl.slot.progress end
    out.apply = require("pgtide.apply_plan").describe(p2, fl.slot and fl.slot.record)
  end
  -- the slot, asked of the source
  local n = names.of(st.name or "local")
  local fl_slot = fl.slot or {}
  out.slot = { name = fl_slot.name or n.slot, publication = fl_slot.publication or n.publication }
  local warn_mb = tonumber(params.wal_warn_mb) or 1024
  out.wal_warn_bytes = warn_mb * MB
  local source = opts.source or params.source
  if params.cdc == false then
    out.slot = nil
  elseif not opts.no_source then
    if type(source) ~= "string" then
      out.slot.error = "no source connection string in the state: pass -c CONFIG"
    elseif source:find("***", 1, true) then
      out.slot.error = "the state keeps the source connection string with its password masked: pass -c "
        .. "CONFIG (or use a .pgpass file)"
    else
      local ok, info = pcall(core.slot_info, { source = source, slot = out.slot.name })
      if ok then
        for k, v in pairs(info) do out.slot[k] = v end
      else
        out.slot.error = errors.message(info)
      end
    end
  end
  out.retained_wal_bytes = (out.slot and out.slot.retained_bytes) or (out.cdc and out.cdc.retained_bytes)
  if out.cdc and out.slot and out.slot.exists and out.slot.current_lsn and out.cdc.applied_lsn then
    -- the lag is what the source wrote since the target's position, asked of the source now
    -- (the worker's own figure is only as fresh as its last status)
    local ok, lag = pcall(core.lsn_diff, out.slot.current_lsn, out.cdc.applied_lsn)
    if ok and lag >= 0 then out.cdc.lag_bytes = lag end
  end
  if out.cdc and out.running and (out.cdc.updated_age_seconds or 0) > M.STALE_AFTER then
    -- alive but silent: frozen (SIGSTOP), or blocked; say so rather than show old figures as now
    out.cdc.stale = true
  end
  out.wal_warning = out.retained_wal_bytes ~= nil and out.retained_wal_bytes > out.wal_warn_bytes
  -- tables created on the source that the stream does not carry yet (runbooks/local.lua)
  local so = (steps.stream or {}).outputs or {}
  local nt = (out.running and pub.new_tables) or so.new_tables
  if nt and #nt > 0 then out.new_tables = nt end
  -- cutover
  local co = steps.cutover or {}
  local pending = cutover_request.read(dir)
  local req = so.cutover_request
  out.cutover = {
    mode = params.cutover, requested = req ~= nil or pending ~= nil, pending_request = pending ~= nil,
    requested_at = (req or pending or {}).requested_at, by = (req or pending or {}).by,
    status = co.status or "pending", lsn = (co.outputs or {}).cutover_lsn,
    fenced = (co.outputs or {}).fence ~= nil,
    validation = ((co.outputs or {}).validation or {}).result,
  }
  return out
end

return M
