--[[
pgtide.stream: the CDC half of the local runbook seen from Lua: names,
the running replication, the foreground streaming loop, cutover
requests, the write fence, and the status files `pgtide status` reads.

  local stream = require "pgtide.stream"
  stream.names(migration)            --> { slot =, publication = }
  stream.ensure(ctx)                 --> the running replication (core.replicate), started once
  stream.stop(ctx)                   --> final status (nil when none ran)
  stream.catch_up(ctx, r, timeout, what)     -- wait until the source's current LSN is applied
  stream.run_until_cutover(ctx)      --> the request that ended streaming
  stream.publish(ctx, fields)        -- state_dir/status.json for `pgtide status`
  stream.request_cutover(dir, by)    -- state_dir/cutover-request.json (`pgtide cutover`)
  stream.read_request(dir) / stream.clear_request(dir)
  stream.fence(ctx) / stream.fenced_sql(db)
  stream.collect(dir, opts)          --> everything `pgtide status` shows (also --json)

Files in the state directory (all written atomically):
  status.json          the running process: pid, phase, full-load and CDC
                       progress; rewritten every 2 s while a step waits
  cdc-status.json      written by the CDC worker itself once a second
  cutover-request.json a cutover request, until the stream step takes it
]]
local core = require "core"
local errors = require "pgtide.errors"
local runbook = require "pgtide.runbook"
local util = require "pgtide.util"
local json = require "json"
local log = require "log"
local sys = require "sys"

local M = {}

M.STATUS = "status.json"
M.CDC_STATUS = "cdc-status.json"
M.REQUEST = "cutover-request.json"
M.PUBLISH_INTERVAL = 2
M.LINE_INTERVAL = 10
M.STALE_AFTER = 10   -- seconds without a CDC status from a live process: its figures are stale

local MB = 1024 * 1024

-- {==================================================================
-- Names
-- ===================================================================

--[[
names(migration) -> { slot, publication }: "pgtide_<name>" in the
characters slot names allow (lower-case letters, digits, '_'), at most
63 bytes.  When the name had to be changed to fit, a hash of the
original is appended, so "a-b" and "a_b" never share a slot.
]]
function M.names(name)
  local clean = tostring(name):lower():gsub("[^a-z0-9_]", "_")
  local base = "pgtide_" .. clean
  if clean ~= name or #base > 63 then
    base = base:sub(1, 63 - 7) .. "_" .. util.fnv32(name):sub(1, 6)
  end
  return { slot = base, publication = base }
end

-- }==================================================================

-- {==================================================================
-- Files
-- ===================================================================

local function path(dir, file) return dir .. "/" .. file end

local function read_json(file)
  local text = sys.readfile(file)
  if not text then return nil end
  local ok, v = pcall(json.decode, text)
  if ok and type(v) == "table" then return util.plain(v) end
  return nil
end
M.read_json = read_json

local function write_json(file, t)
  local ok, err = sys.write_atomic(file, sys.redact(json.encode(t, { pretty = true })) .. "\n")
  if not ok then log.debug("cannot write %s: %s", file, tostring(err)) end
  return ok
end

local published = {}   -- state_dir -> the last status.json contents

--[[
publish(ctx, fields): merge 'fields' into this process's status.json
(pid, time, migration and runbook are added).  Cheap enough to call
every second; failures only log at debug level.
]]
function M.publish(ctx, fields)
  if not ctx.state_dir then return end
  local cur = published[ctx.state_dir]
  if not cur then
    cur = {}
    published[ctx.state_dir] = cur
  end
  for k, v in pairs(fields or {}) do cur[k] = v end
  cur.version = 1
  cur.pid = sys.getpid()
  cur.name = ctx.name
  cur.runbook = ctx.runbook and ctx.runbook.name
  cur.updated_at = sys.time()
  cur.updated = util.now_iso()
  write_json(path(ctx.state_dir, M.STATUS), cur)
  require("pgtide.monitor").observe(ctx, fields)   -- samples for the report, the metrics
end

-- Is process 'pid' alive?  (Signal 0; a pid of ours that ended is gone.)
function M.alive(pid)
  if type(pid) ~= "number" then return false end
  local ok = sys.kill(math.tointeger(pid) or 0, "ZERO")
  return ok == true
end

-- 8 random hex digits.
local function random_hex()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(4)
  if f then f:close() end
  if not b then b = tostring(sys.time()):sub(-4) end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--[[
request_cutover(dir, by) -> request.  Writes cutover-request.json
atomically; the stream step of the running migration polls for it.
]]
function M.request_cutover(dir, by)
  local req = { id = random_hex(), requested_at = util.now_iso(), requested_unix = sys.time(),
                by = by or "pgtide cutover", pid = sys.getpid() }
  local ok, err = sys.write_atomic(path(dir, M.REQUEST), json.encode(req) .. "\n")
  if not ok then errors.usage("cannot write the cutover request: %s", tostring(err)) end
  return req
end

function M.read_request(dir)
  return read_json(path(dir, M.REQUEST))
end

function M.clear_request(dir)
  os.remove(path(dir, M.REQUEST))
end

-- }==================================================================

-- {==================================================================
-- The running replication
-- ===================================================================

local workers = {}   -- state_dir -> replication object

local function source_missing_slot(ctx, n)
  local ok, info = pcall(core.slot_info, { source = ctx.params.source, slot = n.slot })
  return ok and not info.exists
end

--[[
ensure(ctx) -> replication.  Starts the CDC worker for this migration
once per process (from the position recorded on the target: the first
time, the slot's consistent point) and returns it while it runs.  A
worker that failed raises its error here (schema drift, a missing slot
and the like need a person).
]]
function M.ensure(ctx)
  local key = ctx.state_dir
  local r = workers[key]
  if r then
    if r:alive() then return r end
    workers[key] = nil
    local ok, err = pcall(r.poll, r)
    pcall(r.stop, r)
    if not ok then error(err, 0) end
  end
  local n = M.names(ctx.name)
  local p = ctx.params
  local fl = ctx.outputs["full-load"] or {}
  -- recorded when the slot was made (runbooks/local.lua): the publication, the progress
  -- record bound to this migration, and how it is kept (pgtide.apply_plan)
  local slot = fl.slot or {}
  local triggers = (ctx.outputs["post-data"] or {}).triggers
  local ok, res = pcall(core.replicate, {
    source = p.source, target = p.target, slot = n.slot, publication = slot.publication or n.publication,
    state_dir = ctx.state_dir, memory_cap = p.memory_cap,
    replica_role = triggers == nil or triggers == "replica_role",
    origin = slot.record, identity = slot.identity, progress = slot.progress,
    -- tables copied under a later snapshot than the slot's: by a resumed full load, and the
    -- tables created on the source while streaming (runbooks/local.lua, pgtide.new_tables)
    table_sync = M.table_sync(ctx),
  })
  if not ok then
    if source_missing_slot(ctx, n) then
      runbook.fail("the replication slot %s is gone from the source (dropped by hand, or "
        .. "invalidated by max_slot_wal_keep_size): the changes made since the full load cannot be "
        .. "streamed. Start the migration over: empty the target database, remove %s, and run "
        .. "again", n.slot, ctx.state_dir)
    end
    error(res, 0)
  end
  r = res
  workers[key] = r
  local st = r:status()
  -- 0/0: nothing applied yet, the stream starts at the slot's consistent point
  local from = (st.start_lsn == nil or st.start_lsn == "0/0")
    and ((slot.lsn and (slot.lsn .. ", ") or "") .. "the slot's consistent point") or st.start_lsn
  log.info("stream: applying changes from slot %s, starting at %s (protocol %d%s); progress: %s %s",
    n.slot, from, st.proto_version, st.streaming and ", streaming" or "",
    st.progress == "table" and "row in pgtide.cdc_progress" or "replication origin",
    slot.record or n.slot)
  return r
end

-- The sync positions of the tables copied after the slot's snapshot.
function M.table_sync(ctx)
  local out = {}
  for _, t in ipairs((ctx.outputs["full-load"] or {}).sync or {}) do out[#out + 1] = t end
  for _, t in ipairs((ctx.outputs.stream or {}).added or {}) do
    out[#out + 1] = { schema = t.schema, table = t.table, lsn = t.lsn }
  end
  return out
end

-- The running replication of this process, or nil.
function M.get(ctx)
  return workers[ctx.state_dir]
end

-- stop(ctx) -> final status, or nil when nothing ran in this process.
function M.stop(ctx, timeout)
  local r = workers[ctx.state_dir]
  if not r then return nil end
  workers[ctx.state_dir] = nil
  return r:stop(timeout)
end

-- "lag 1.2 MB, 0.4 s"
function M.lag_text(st)
  return string.format("lag %s, %.1f s", util.format_bytes(st.bytes or 0), st.seconds or 0)
end

-- The status fields published for a replication status.
local function cdc_fields(st, ctx)
  local warn_bytes = (ctx.params.wal_warn_mb or 1024) * MB
  return {
    state = st.state, lag_bytes = st.bytes, lag_seconds = st.seconds, applied_lsn = st.applied_lsn,
    source_lsn = st.source_lsn, received_lsn = st.received_lsn, retained_bytes = st.retained_bytes,
    wal_warn_bytes = warn_bytes,
    wal_warning = st.retained_bytes ~= nil and st.retained_bytes > warn_bytes or false,
    txns = st.txns, inserts = st.inserts, updates = st.updates, deletes = st.deletes,
    truncates = st.truncates, reconnects = st.reconnects, missing_rows = st.missing_rows,
    error = st.error,
  }
end

--[[
A display helper: one status line per second on a TTY, a plain log line
every LINE_INTERVAL seconds otherwise (and when the worker's state
changes), status.json every PUBLISH_INTERVAL seconds, and a warning
when the slot retains more WAL than wal_warn_mb (at most once a minute).
]]
local function new_display(ctx, phase)
  local d = { last_line = 0, last_pub = 0, last_warn = -1e9, state = nil }
  local tty = log.is_tty()
  function d.show(st, extra)
    local now = sys.monotonic()
    -- what matters first: a status line is cut to the terminal's width
    local text = string.format("%s: %s%s, %d txns%s%s, applied %s", phase,
      st.state ~= phase and (st.state .. ", ") or "", M.lag_text(st), st.txns or 0,
      st.retained_bytes and (", slot " .. util.format_bytes(st.retained_bytes)) or "",
      extra and (" " .. extra) or "", st.applied_lsn)
    if tty then
      log.status(text)
    elseif now - d.last_line >= M.LINE_INTERVAL or st.state ~= d.state then
      log.info("%s", text)
      d.last_line = now
    end
    d.state = st.state
    local warn_bytes = (ctx.params.wal_warn_mb or 1024) * MB
    if st.retained_bytes and st.retained_bytes > warn_bytes and now - d.last_warn >= 60 then
      d.last_warn = now
      if tty then log.status(nil) end
      log.warn("the replication slot retains %s of WAL on the source (warning threshold %s, "
        .. "wal_warn_mb): the source's disk fills while the target lags or the migration is "
        .. "stopped; cut over, or drop the slot with the cleanup step if you abandon the migration",
        util.format_bytes(st.retained_bytes), util.format_bytes(warn_bytes))
    end
    if now - d.last_pub >= M.PUBLISH_INTERVAL then
      d.last_pub = now
      M.publish(ctx, { phase = phase, cdc = cdc_fields(st, ctx) })
    end
  end
  function d.done()
    if tty then log.status(nil) end
  end
  return d
end

--[[
catch_up(ctx, r, timeout, what) -> lsn.  Reads the source's current WAL
position and waits (showing lag) until the target has applied it.
Raises a step failure naming the lag when 'timeout' seconds pass.
]]
function M.catch_up(ctx, r, timeout, what, lsn)
  lsn = lsn or ctx.src:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  local t0 = sys.monotonic()
  local d = new_display(ctx, what)
  log.info("%s: waiting until the target has applied the source's position %s (timeout %s)", what,
    lsn, util.format_duration(timeout))
  while true do
    local left = timeout - (sys.monotonic() - t0)
    local ok = r:wait_until(lsn, math.max(0, math.min(1, left)))
    local st = r:status()
    if ok then
      d.done()
      log.info("%s: target caught up to %s in %s", what, lsn, util.format_duration(sys.monotonic() - t0))
      return lsn
    end
    if left <= 0 then
      d.done()
      runbook.fail("%s: the target did not apply the source's changes up to %s within %s (%s, "
        .. "applied %s, state %s); rerun to keep waiting, or raise the timeout", what, lsn,
        util.format_duration(timeout), M.lag_text(st), st.applied_lsn, st.state)
    end
    d.show(st, string.format("(waiting for %s)", lsn))
  end
end

-- }==================================================================

-- {==================================================================
-- The foreground streaming loop
-- ===================================================================

-- The terminal menu after Ctrl-C: "cutover", "continue" or "quit".
local function menu(st)
  io.stderr:write(string.format("\nStreaming (%s). Cut over now? [y] yes, cut over  [n] no, keep "
    .. "streaming  [q] stop here (resume later): ", M.lag_text(st)))
  io.stderr:flush()
  local ok, answer = pcall(io.read, "l")
  if not ok or answer == nil then return "quit" end
  answer = answer:lower():match("^%s*(%a?)")
  if answer == "y" then return "cutover" end
  if answer == "q" then return "quit" end
  return "continue"
end

local function how_to_cutover(ctx)
  local p = ctx.params
  local ways = { string.format("`pgtide cutover --state %s` from another terminal", ctx.state_dir) }
  if log.is_tty() and sys.isatty("stdin") then ways[#ways + 1] = "Ctrl-C here for the cutover menu" end
  if p.cutover == "auto" then
    ways[#ways + 1] = string.format("automatically once lag stays under %s s for %s s", tostring(p.cutover_lag),
      tostring(p.cutover_window))
  end
  return table.concat(ways, ", or ")
end

--[[
run_until_cutover(ctx [, opts]) -> request.  Keeps the CDC worker
applying and shows the lag until a cutover is requested (opts.tick(ctx),
when given, runs every second and may stop and restart the stream;
opts.recover(ctx, err) may repair the cause of a worker failure and
return true to restart the stream instead of failing): a request file written by
`pgtide cutover`, the answer 'y' at the terminal menu (Ctrl-C), or with
cutover=auto the lag staying under cutover_lag seconds for
cutover_window seconds.  A request made before streaming started (say
during the full load) counts once the stream runs.  Raises on worker
failure or interrupt (the step can simply be run again).
]]
function M.run_until_cutover(ctx, opts)
  local p = ctx.params
  local tick = opts and opts.tick
  local r = M.ensure(ctx)
  local interactive = log.is_tty() and sys.isatty("stdin")
  local d = new_display(ctx, "streaming")
  local under_since
  log.info("streaming until cutover: %s", how_to_cutover(ctx))
  M.publish(ctx, { phase = "streaming", cutover = { mode = p.cutover, requested = false } })
  local request
  local function iteration()
    local st = r:run_for(1)
    if tick then
      tick(ctx)          -- may stop and restart the stream (pgtide.new_tables)
      r = M.ensure(ctx)
    end
    local extra
    local req = M.read_request(ctx.state_dir)
    if req then
      request = req
      return
    end
    if p.cutover == "auto" then
      local now = sys.monotonic()
      if st.state == "streaming" and (st.seconds or 0) <= p.cutover_lag then
        under_since = under_since or now
        if now - under_since >= p.cutover_window then
          request = { id = "auto", by = "cutover=auto", requested_at = util.now_iso(),
                      lag_seconds = st.seconds, lag_bytes = st.bytes }
          return
        end
        extra = string.format("(auto cutover in %.0f s)", p.cutover_window - (now - under_since))
      else
        under_since = nil
      end
    end
    d.show(st, extra or (interactive and "(Ctrl-C: cutover menu)" or nil))
  end
  while not request do
    -- Ctrl-C raises twice: from run_for, and from the host's interrupt hook at the next Lua
    -- instruction; the outer pcall takes the second so that the menu can follow
    local ok, err = pcall(function()
      local ok2, err2 = pcall(iteration)
      if not ok2 then error(err2, 0) end
    end)
    if not ok then
      if errors.is_interrupt(err) and interactive then
        sys.clear_interrupt()
        d.done()
        local choice = menu(r:status())
        if choice == "cutover" then
          request = { id = "terminal", by = "terminal", requested_at = util.now_iso() }
        elseif choice == "quit" then
          error(errors.new { message = "interrupted", interrupted = true }, 0)
        end
      elseif not errors.is_interrupt(err) and opts and opts.recover and opts.recover(ctx, err) then
        log.info("streaming: recovered from %s; the stream restarts", errors.message(err))
        M.stop(ctx)
        r = M.ensure(ctx)
      else
        d.done()
        error(err, 0)
      end
    end
  end
  d.done()
  local st = r:status()
  request.accepted_at = util.now_iso()
  log.info("cutover requested by %s (%s); streaming continues during the cutover", request.by or "?",
    M.lag_text(st))
  ctx.out.cutover_request = request
  ctx:save()
  M.clear_request(ctx.state_dir)
  M.publish(ctx, { phase = "cutover", cutover = { mode = p.cutover, requested = true,
                                                  requested_at = request.requested_at, by = request.by } })
  return request
end

-- }==================================================================

-- {==================================================================
-- Write fence
-- ===================================================================

-- The statement that lifts the fence on database 'db'.
function M.unfence_sql(conn, db)
  return string.format("ALTER DATABASE %s RESET default_transaction_read_only", conn:quote_ident(db))
end

--[[
fence(ctx) -> { database, terminated }.  Stops writes on the source
database for the cutover: new sessions become read-only (ALTER
DATABASE ... SET default_transaction_read_only = on), then every other
client session on that database is terminated, so applications
reconnect read-only; their open transactions roll back and were never
replicated.  This run's own session and walsenders are left alone.
Needs the database's owner (or superuser) and pg_signal_backend.
]]
function M.fence(ctx)
  local src = ctx.src
  local db = src:query_one("SELECT current_database() AS d").d
  -- a rerun after a crash here opens its session read-only: fencing again must still write
  src:exec("SET default_transaction_read_only = off")
  src:exec(string.format("ALTER DATABASE %s SET default_transaction_read_only = on", src:quote_ident(db)))
  -- every other client session, pgtide's included (the CDC worker's monitor session
  -- reconnects by itself; its replication connection is a walsender, left alone)
  local rows = src:query([[
    SELECT pid, usename, application_name, pg_terminate_backend(pid) AS terminated
      FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND backend_type = 'client backend']])
  local n = 0
  for _, r in ipairs(rows) do
    if r.terminated then n = n + 1 end
    log.info("fence: ended session pid %d (%s, %s)", r.pid, tostring(r.usename),
      tostring(r.application_name))
  end
  log.warn("fence: database %s on the source is read-only for new sessions; %d session(s) ended. "
    .. "Lift it with: %s", db, n, M.unfence_sql(src, db))
  return { database = db, terminated = n, at = util.now_iso(), at_unix = sys.time() }
end

-- }==================================================================

-- {==================================================================
-- Status of a migration (pgtide status)
-- ===================================================================

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
  local pub = read_json(path(dir, M.STATUS)) or {}
  local cs = read_json(path(dir, M.CDC_STATUS))
  local steps = st.steps or {}
  local params = st.params or {}
  local out = { name = st.name, runbook = st.runbook, state_dir = dir, finished = st.finished }
  out.pid = pub.pid
  out.running = M.alive(pub.pid) and pub.pid ~= sys.getpid()
  if not out.running and cs and M.alive(cs.pid) and cs.pid ~= sys.getpid() then
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
    if not (out.running and M.alive(cs.pid)) and out.cdc.state ~= "stopped" and out.cdc.state ~= "failed" then
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
  local n = M.names(st.name or "local")
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
  local pending = read_json(path(dir, M.REQUEST))
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

-- }==================================================================

return M
