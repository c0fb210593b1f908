-- pgtide status [--state DIR | -c CONFIG | name=NAME | NAME] [--json] [--no-source] [--tables N]
-- The phase, per-table progress, CDC lag and WAL retained by the slot of
-- a running or stopped migration (pgtide.status.collect).
local config = require "pgtide.config"
local errors = require "pgtide.errors"
local cmd_args = require "pgtide.args"
local state = require "pgtide.state"
local status = require "pgtide.status"
local status_file = require "pgtide.status_file"
local util = require "pgtide.util"
local json = require "json"
local sys = require "sys"

local M = {
  summary = "show a migration's phase, progress, replication lag and retained WAL",
  usage = [[
pgtide status [--state DIR | -c CONFIG | name=NAME | NAME] [--json] [--no-source]
              [--tables N]

Shows the migration whose state is in DIR (default .pgtide/<name>; with no
name and a single migration under .pgtide/, that one): whether a pgtide run
is driving it now, the phase and every step's status, the full load's
progress per table, the change stream's lag in bytes and seconds, and the
WAL the replication slot retains on the source (with a warning past the
run's wal_warn_mb).  The running process publishes its status in the state
directory every few seconds; status also asks the source about the slot
(skip with --no-source; -c CONFIG gives the source when the state has none).

--json       print one JSON object (the fields are listed in docs/runbooks.md)
--tables N   list at most N tables (default 20; 0 for all)

Exit codes: 0 shown, 2 no such migration.]],
}

-- Take our own flags out of args; the rest is parsed like `pgtide run`.
local function own_flags(args, known)
  local o, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    local k = known[flag or a]
    if k == "flag" and not flag then
      o[(a:gsub("^%-%-", ""):gsub("-", "_"))] = true
      i = i + 1
    elseif k == "value" then
      local v = inline
      if not flag then
        v = args[i + 1]
        if v == nil then errors.usage("%s needs a value", a) end
        i = i + 1
      end
      o[((flag or a):gsub("^%-%-", ""):gsub("-", "_"))] = v
      i = i + 1
    else
      rest[#rest + 1] = a
      i = i + 1
    end
  end
  return o, rest
end
M.own_flags = own_flags

-- A few words on the migration in 'dir': running, its current step, done.
function M.brief(dir)
  local st = status_file.read_json(dir .. "/state.json") or {}
  if st.abandoned then return "abandoned" end
  if st.finished then return "done" end
  local pub = status_file.read_json(dir .. "/" .. status_file.STATUS) or {}
  if pub.pid and status_file.alive(pub.pid) and pub.pid ~= sys.getpid() then return "running" end
  for _, name in ipairs(st.order or {}) do
    local s = (st.steps or {})[name] or {}
    if s.status ~= "done" then return name .. " " .. (s.status or "pending") end
  end
  return "stopped"
end

--[[
narrow(dirs) -> the migrations worth showing when none was named: the
running ones if any; otherwise those that got anywhere (a step done), so
that attempts whose first step (the preflight) failed, which leave a state
directory behind, do not hide the one migration that matters.
]]
function M.narrow(dirs)
  local running, started = {}, {}
  for _, d in ipairs(dirs) do
    local b = M.brief(d)
    if b == "running" then running[#running + 1] = d end
    local st = status_file.read_json(d .. "/state.json") or {}
    for _, rec in pairs(st.steps or {}) do
      if rec.status == "done" then started[#started + 1] = d; break end
    end
  end
  if #running > 0 then return running end
  if #started > 0 then return started end
  return dirs
end

--[[
resolve(rest) -> dir, cfg.  The state directory named by --state, a
config file (its state_dir or name), name=NAME or a bare NAME; with
none of these, the only migration under .pgtide/.  Raises usage errors.
]]
function M.resolve(rest)
  local o = cmd_args.parse(rest, {})
  local cfg = o.config and config.load(o.config) or {}
  if #o.words > 1 then errors.usage("unexpected argument '%s'", o.words[2]) end
  local name = o.assignments.name or o.words[1] or cfg.name
  local dir = o.state_dir or cfg.state_dir or (name and state.default_dir(name))
  if not dir then
    local found = {}
    if sys.isdir(".pgtide") then
      for _, e in ipairs(sys.readdir(".pgtide") or {}) do
        if sys.exists(".pgtide/" .. e .. "/state.json") then found[#found + 1] = ".pgtide/" .. e end
      end
    end
    if #found > 1 then found = M.narrow(found) end
    if #found == 1 then
      dir = found[1]
    elseif #found == 0 then
      errors.usage("no migration found under .pgtide/: give --state DIR (or -c CONFIG, name=NAME)")
    else
      local list = {}
      for _, d in ipairs(found) do list[#list + 1] = d .. " (" .. M.brief(d) .. ")" end
      errors.usage("several migrations under .pgtide/: %s; choose one with --state DIR or name=NAME",
        table.concat(list, ", "))
    end
  end
  if not sys.exists(dir .. "/state.json") then
    errors.usage("no migration state in %s (is the --state directory right?)", dir)
  end
  return dir, cfg
end

local function count(n)
  local s = tostring(math.floor(tonumber(n) or 0))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

local function ago(s)
  if not s then return "unknown" end
  return util.format_duration(s) .. " ago"
end

-- The human form, as lines.
function M.lines(s, opts)
  local out = {}
  local function add(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  add("migration %s (runbook %s), state in %s", tostring(s.name), tostring(s.runbook), s.state_dir)
  if s.running then
    add("process:  running, pid %d (status updated %s)", s.pid, ago(s.age_seconds))
  else
    add("process:  not running%s", s.updated and (" (last status " .. s.updated .. ")") or "")
  end
  add("phase:    %s", s.phase)
  local parts = {}
  for _, st in ipairs(s.steps) do
    parts[#parts + 1] = st.name .. " " .. st.status .. (st.seconds and (" " .. util.format_duration(st.seconds)) or "")
  end
  add("steps:    %s", table.concat(parts, ", "))
  for _, st in ipairs(s.steps) do
    if st.status == "failed" and st.error then add("  %s failed: %s", st.name, st.error) end
  end
  local f = s.full_load
  if f then
    add("full load: %d%%, %d of %d units%s%s%s", math.floor(f.percent or 0), f.units_done or 0, f.units or 0,
      f.rows and (", " .. count(f.rows) .. " rows") or "", f.bytes and (", " .. util.format_bytes(f.bytes)) or "",
      f.mb_per_s and f.percent and f.percent < 100 and string.format(", %.1f MB/s", f.mb_per_s) or "")
    local limit = opts.tables or 20
    for i, t in ipairs(f.tables or {}) do
      if limit > 0 and i > limit then
        add("  ... %d more tables (--tables 0 lists all)", #f.tables - limit)
        break
      end
      add("  %-36s %3d%%  %d/%d units%s%s", t.name, math.floor(t.percent or 0), t.units_done or 0, t.units or 0,
        t.rows and ("  " .. count(t.rows) .. " rows") or "", t.bytes and ("  " .. util.format_bytes(t.bytes)) or "")
    end
  end
  local c = s.cdc
  if c then
    add("CDC:      %s, lag %s / %.1f s, applied %s, %s transactions (%s inserts, %s updates, %s deletes, "
      .. "%s truncates), %d reconnects", tostring(c.state), util.format_bytes(c.lag_bytes or 0), c.lag_seconds or 0,
      tostring(c.applied_lsn), count(c.txns), count(c.inserts), count(c.updates), count(c.deletes),
      count(c.truncates), c.reconnects or 0)
    if c.stale then
      add("  STALE: the run (pid %s) has not updated its status for %s: it may be stopped or stuck; the "
        .. "lag above is from the source's position now", tostring(s.pid), util.format_duration(c.updated_age_seconds))
    end
    if c.error then add("  last error: %s", c.error) end
  end
  if s.apply then add("apply:    %s", s.apply) end
  for _, t in ipairs(s.new_tables or {}) do
    add("NEW TABLE on the source, not streamed: %s (%s)", tostring(t.name), tostring(t.why))
  end
  local sl = s.slot
  if sl then
    if sl.error then
      add("slot %s: cannot ask the source: %s", sl.name, sl.error)
    elseif sl.exists == false then
      add("slot %s: does not exist on the source%s", sl.name,
        (s.steps[#s.steps] or {}).status == "done" and " (dropped by cleanup)" or "")
    elseif sl.exists then
      add("slot %s: %s, retains %s of WAL (warning above %s), confirmed %s, source at %s", sl.name,
        sl.active and "active" or "inactive", util.format_bytes(sl.retained_bytes or 0),
        util.format_bytes(s.wal_warn_bytes), tostring(sl.confirmed_lsn), tostring(sl.current_lsn))
    else
      add("slot %s: not asked (--no-source)%s", sl.name,
        s.retained_wal_bytes and (", last seen retaining " .. util.format_bytes(s.retained_wal_bytes)) or "")
    end
  end
  if s.wal_warning then
    add("WARNING: the slot retains %s of WAL on the source (threshold %s): the source's disk fills while "
      .. "the migration lags or is stopped. Resume or cut over; to give the migration up, `pgtide abandon "
      .. "--state %s` drops its slot (or SELECT pg_drop_replication_slot('%s')).",
      util.format_bytes(s.retained_wal_bytes), util.format_bytes(s.wal_warn_bytes), s.state_dir,
      s.slot and s.slot.name or "?")
  end
  local co = s.cutover
  if co and s.slot then
    if co.status == "done" then
      add("cutover: done at %s%s", tostring(co.lsn), co.validation and (", validation " .. co.validation) or "")
    elseif co.requested then
      add("cutover: requested by %s at %s%s (step %s)", tostring(co.by), tostring(co.requested_at),
        co.pending_request and ", not yet taken by the run" or "", co.status)
    else
      add("cutover: not requested (%s)", co.mode == "auto" and "cutover=auto: once lag stays low"
        or ("run `pgtide cutover --state " .. s.state_dir .. "`"))
    end
  end
  return out
end

function M.run(args)
  local o, rest = own_flags(args, { ["--json"] = "flag", ["--no-source"] = "flag", ["--tables"] = "value" })
  local dir, cfg = M.resolve(rest)
  local tables = o.tables and math.tointeger(tonumber(o.tables))
  if o.tables and (not tables or tables < 0) then errors.usage("--tables needs a number >= 0") end
  local s, err = status.collect(dir, { source = cfg.source, no_source = o.no_source })
  if not s then errors.usage("%s", err) end
  local data = status_file.read_json(dir .. "/state.json") or {}
  if data.abandoned then
    s.abandoned = data.abandoned
    s.phase = "abandoned at " .. tostring(data.abandoned.at)
  end
  if o.json then
    local copy = util.copy(s)
    if copy.full_load and copy.full_load.tables and #copy.full_load.tables == 0 then
      copy.full_load.tables = json.array({})
    end
    if #copy.steps == 0 then copy.steps = json.array({}) end
    print(sys.redact(json.encode(copy, { pretty = true })))
  else
    for _, l in ipairs(M.lines(s, { tables = tables })) do print(sys.redact(l)) end
  end
  return 0
end

return M
